/* http_parser.c: libFuzzer target for sl_http_parse_request: memory safety and result invariants.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/http_parser.h"

#define MAX_HEADERS 16

static int inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p != NULL && p >= buf && n <= len && p - buf <= (ptrdiff_t)(len - n);
}

static int parse(const char *buf, size_t len, const sl_http_limits_t *limits, sl_http_request_t *r)
{
    static sl_http_header_t headers[MAX_HEADERS];
    return sl_http_parse_request(buf, len, r, headers, limits);
}

/* Aborts unless the outcome of parsing buf[0..len) is self-consistent. */
static void check(const char *buf, size_t len, const sl_http_limits_t *limits)
{
    sl_http_request_t r;
    int rc = parse(buf, len, limits, &r);

    if (rc == SL_AGAIN)
        return;
    if (rc == SL_ERROR) {
        switch (r.error_status) {
        case 400:
        case 405:
        case 414:
        case 417:
        case 431:
        case 505:
            break;
        default:
            abort();
        }
        if (r.error == NULL)
            abort();
        return;
    }
    if (rc <= 0 || (size_t)rc > len || (size_t)rc > limits->max_header_size)
        abort();

    size_t n = (size_t)rc;
    if (r.method_len == 0 || !inside(r.method, r.method_len, buf, n))
        abort();
    if (r.method_id != sl_http_method_id(r.method, r.method_len))
        abort();
    if (!inside(r.target, r.target_len, buf, n) || r.target_len == 0)
        abort();
    if (r.method_len + r.target_len + 10 > limits->max_request_line)
        abort();
    if (!inside(r.path, r.path_len, buf, n) || r.path_len == 0)
        abort();
    if (r.path[0] != '/' && !(r.path_len == 1 && r.path[0] == '*'))
        abort();
    if (r.query != NULL && !inside(r.query, r.query_len, buf, n))
        abort();
    if (r.query == NULL && r.query_len != 0)
        abort();
    if (r.host != NULL && !inside(r.host, r.host_len, buf, n))
        abort();
    if (r.version == 11 && r.host == NULL)
        abort();
    if (r.version != 10 && r.version != 11)
        abort();
    if (r.nheaders > limits->max_headers)
        abort();
    for (size_t i = 0; i < r.nheaders; i++) {
        const sl_http_header_t *h = &r.headers[i];
        if (h->name_len == 0 || !inside(h->name, h->name_len, buf, n))
            abort();
        if (!inside(h->value, h->value_len, buf, n))
            abort();
        if (h->value_len > 0 &&
            (h->value[0] == ' ' || h->value[0] == '\t' || h->value[h->value_len - 1] == ' ' ||
             h->value[h->value_len - 1] == '\t'))
            abort();
        for (size_t j = 0; j < h->value_len; j++) {
            if (h->value[j] == '\r' || h->value[j] == '\n' || h->value[j] == '\0')
                abort();
        }
        if (!limits->underscores_in_headers && memchr(h->name, '_', h->name_len) != NULL)
            abort();
    }
    switch (r.body) {
    case SL_HTTP_BODY_NONE:
        if (r.content_length > 0)
            abort();
        break;
    case SL_HTTP_BODY_LENGTH:
        if (r.content_length <= 0)
            abort();
        break;
    case SL_HTTP_BODY_CHUNKED:
        if (r.content_length != -1 || r.version != 11)
            abort();
        break;
    default:
        abort();
    }
    if (r.error != NULL || r.error_status != 0)
        abort();

    /* The head delimits itself: its exact bytes parse the same, and every prefix (each in an
     * exact-size copy, for ASan) is incomplete. */
    for (size_t i = n; i + 1 > 0; i--) {
        char *exact = malloc(i ? i : 1);
        memcpy(exact, buf, i);
        if (parse(exact, i, limits, &r) != (i == n ? rc : SL_AGAIN))
            abort();
        free(exact);
        if (n > 256 && i < n - 1)
            break;
    }
}

/* Aborts unless dropping the headers named with '_' changes nothing but
 * which headers are kept and SL_HTTP_F_UNDERSCORES: the same outcome, the
 * same framing, the same other headers in the same order. */
static void check_drop(const char *buf, size_t len)
{
    static const sl_http_limits_t keep = {8192, 65536, MAX_HEADERS, 1};
    static const sl_http_limits_t drop = {8192, 65536, MAX_HEADERS, 0};
    static sl_http_header_t all[MAX_HEADERS], some[MAX_HEADERS];
    sl_http_request_t a, b;
    int ra = sl_http_parse_request(buf, len, &a, all, &keep);
    int rb = sl_http_parse_request(buf, len, &b, some, &drop);

    if (ra != rb)
        abort();
    if (ra == SL_ERROR && (a.error_status != b.error_status || strcmp(a.error, b.error) != 0))
        abort();
    if (ra < 0)
        return;

    size_t kept = 0;
    int dropped = 0;
    for (size_t i = 0; i < a.nheaders; i++) {
        if (memchr(all[i].name, '_', all[i].name_len) != NULL) {
            dropped = 1;
            continue;
        }
        if (kept == b.nheaders || some[kept].name != all[i].name ||
            some[kept].name_len != all[i].name_len || some[kept].value != all[i].value ||
            some[kept].value_len != all[i].value_len)
            abort();
        kept++;
    }
    if (kept != b.nheaders || (a.flags & SL_HTTP_F_UNDERSCORES))
        abort();
    if (b.flags != (a.flags | (dropped ? (unsigned)SL_HTTP_F_UNDERSCORES : 0u)))
        abort();
    if (a.body != b.body || a.content_length != b.content_length || a.host != b.host ||
        a.host_len != b.host_len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const sl_http_limits_t roomy = {8192, 65536, MAX_HEADERS, 1};
    static const sl_http_limits_t tight = {48, 160, 4, 0};
    char *buf = malloc(size ? size : 1);

    memcpy(buf, data, size);
    check(buf, size, &roomy);
    check(buf, size, &tight);
    check_drop(buf, size);
    free(buf);
    return 0;
}
