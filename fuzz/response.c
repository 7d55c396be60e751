/* response.c: libFuzzer target for sl_http_parse_response: memory safety and result invariants. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/http_parser.h"

#define MAX_HEADERS 16

static int inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p != NULL && p >= buf && n <= len && p - buf <= (ptrdiff_t)(len - n);
}

/* Aborts unless the outcome of parsing buf[0..len) as the answer to `method` is self-consistent. */
static void check(const char *buf, size_t len, int method)
{
    static sl_http_header_t headers[MAX_HEADERS];
    sl_http_response_t r;
    int rc = sl_http_parse_response(buf, len, &r, headers, MAX_HEADERS, method);

    if (rc == SL_AGAIN)
        return;
    if (rc == SL_ERROR) {
        if (r.error == NULL)
            abort();
        return;
    }
    if (rc <= 0 || (size_t)rc > len)
        abort();

    size_t n = (size_t)rc;
    if (r.version != 10 && r.version != 11)
        abort();
    if (r.status < 100 || r.status > 999)
        abort();
    if (!inside(r.reason, r.reason_len, buf, n))
        abort();
    if (r.nheaders > MAX_HEADERS || r.error != NULL)
        abort();
    for (size_t i = 0; i < r.nheaders; i++) {
        const sl_http_header_t *h = &r.headers[i];
        if (h->name_len == 0 || !inside(h->name, h->name_len, buf, n) ||
            !inside(h->value, h->value_len, buf, n))
            abort();
    }
    int bodiless = method == SL_HTTP_HEAD || r.status < 200 || r.status == 204 || r.status == 304;
    switch (r.body) {
    case SL_HTTP_BODY_NONE:
        break;
    case SL_HTTP_BODY_LENGTH:
        if (r.content_length <= 0 || bodiless)
            abort();
        break;
    case SL_HTTP_BODY_CHUNKED:
        if (bodiless || r.version != 11)
            abort();
        break;
    case SL_HTTP_BODY_CLOSE:
        if (bodiless || (r.flags & SL_HTTP_F_KEEPALIVE))
            abort();
        break;
    default:
        abort();
    }
    if (r.content_length < -1)
        abort();

    /* The head delimits itself: its exact bytes parse the same, and every prefix (each in an
     * exact-size copy, for ASan) is incomplete. */
    for (size_t i = n; i + 1 > 0; i--) {
        char *exact = malloc(i ? i : 1);
        memcpy(exact, buf, i);
        if (sl_http_parse_response(exact, i, &r, headers, MAX_HEADERS, method) !=
            (i == n ? rc : SL_AGAIN))
            abort();
        free(exact);
        if (n > 256 && i < n - 1)
            break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);

    memcpy(buf, data, size);
    check(buf, size, SL_HTTP_GET);
    check(buf, size, SL_HTTP_HEAD);
    free(buf);
    return 0;
}
