/* router.c: fuzzes path normalization and route matching against a brute-force reference. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <assert.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "router.h"

/*
 * Input: one control byte (bits 0-1 pick the port, bit 2 the protocol), then
 * newline-separated fields: host, raw path, method and up to two "name: value"
 * headers. The path is normalized, then matched by the router and by a
 * reference that tries every (route, host, path) of the table in turn and
 * ranks them by Kong's rules written out longhand; both must agree on the
 * route, matched_len and captures.
 */

typedef struct {
    const char *name;
    const char *values[3];
} hspec_t;

typedef struct {
    const char *hosts[3];
    const char *paths[3]; /* "~" starts a regex */
    unsigned methods;
    const char *other;
    hspec_t headers[2];
    unsigned protocols;
    int regex_priority;
} spec_t;

static const spec_t specs[] = {
    {.hosts = {"api.example.com"},
     .paths = {"/v1", "/v1/users"},
     .methods = SL_HTTP_GET | SL_HTTP_POST},
    {.hosts = {"*.example.com"}, .paths = {"~/v1/(?<id>\\d+)/(\\w*)"}},
    {.hosts = {"example.*"}, .paths = {"/"}},
    {.hosts = {"api.example.com:8000"}, .paths = {"/"}},
    {.paths = {"/h"}, .headers = {{"x-v", {"1", "~*^v\\d$"}}}},
    {.paths = {"/"}, .other = "PURGE"},
    {.paths = {"~/r/(a|b)?(c)", "~/r/(?<x>.)"}, .regex_priority = 5},
    {.paths = {"~/r/"}, .regex_priority = -3},
    {.methods = 0}, /* matches everything */
    {.paths = {"/s"}, .protocols = 1u << SL_PROTO_HTTPS},
    {.hosts = {"a.b"}},
    {.hosts = {"*.b", "b.*:8000"}, .paths = {"/a", "~/a"}},
    {.hosts = {"api.example.com"}, .paths = {"/v1"}, .methods = SL_HTTP_GET},
    {.paths = {"/v1/users/x"}, .headers = {{"x-v", {"2"}}, {"x-w", {"~.", "3"}}}},
    {.hosts = {"[::1]:8000", "api.example.com"}, .paths = {"/v1/"}, .methods = SL_HTTP_PUT},
    {.paths = {"/%2F", "/a/"}, .methods = SL_HTTP_DELETE},
};

#define NROUTES SL_NELEMS(specs)

static sl_route_t routes[NROUTES];
static sl_route_t *ptrs[NROUTES];
static char *hosts[NROUTES][3];
static sl_route_path_t paths[NROUTES][3];
static pcre2_code *path_re[NROUTES][3];
static char *others[NROUTES][1];
static sl_route_header_t headers[NROUTES][2];
static char *values[NROUTES][2][3];
static pcre2_code *value_re[NROUTES][2][3];
static sl_router_t *rt;
static pcre2_match_data *md;

static void setup(void)
{
    char err[256];

    for (size_t i = 0; i < NROUTES; i++) {
        const spec_t *s = &specs[i];
        sl_route_t *r = &routes[i];
        r->index = i;
        r->hosts = hosts[i];
        for (; r->nhosts < 3 && s->hosts[r->nhosts]; r->nhosts++)
            r->hosts[r->nhosts] = (char *)s->hosts[r->nhosts];
        r->paths = paths[i];
        for (; r->npaths < 3 && s->paths[r->npaths]; r->npaths++) {
            const char *p = s->paths[r->npaths];
            sl_route_path_t *d = &r->paths[r->npaths];
            d->kind = p[0] == '~' ? SL_PATH_REGEX : SL_PATH_PREFIX;
            d->value = (char *)p + (p[0] == '~');
            d->len = strlen(d->value);
            int code;
            PCRE2_SIZE off;
            if (d->kind == SL_PATH_REGEX)
                path_re[i][r->npaths] =
                    pcre2_compile((PCRE2_SPTR)d->value, d->len, PCRE2_ANCHORED, &code, &off, NULL);
        }
        r->methods = s->methods;
        r->other_methods = others[i];
        if (s->other != NULL) {
            r->other_methods[0] = (char *)s->other;
            r->nother_methods = 1;
        }
        r->headers = headers[i];
        for (; r->nheaders < 2 && s->headers[r->nheaders].name; r->nheaders++) {
            const hspec_t *hs = &s->headers[r->nheaders];
            sl_route_header_t *h = &r->headers[r->nheaders];
            h->name = (char *)hs->name;
            h->name_len = strlen(hs->name);
            h->values = values[i][r->nheaders];
            for (; h->nvalues < 3 && hs->values[h->nvalues]; h->nvalues++) {
                const char *v = hs->values[h->nvalues];
                h->values[h->nvalues] = (char *)v;
                size_t skip = v[0] == '~' ? (v[1] == '*' ? 2 : 1) : 0;
                int code;
                PCRE2_SIZE off;
                if (skip > 0)
                    value_re[i][r->nheaders][h->nvalues] =
                        pcre2_compile((PCRE2_SPTR)v + skip, PCRE2_ZERO_TERMINATED, PCRE2_CASELESS,
                                      &code, &off, NULL);
            }
        }
        r->protocols = s->protocols;
        r->regex_priority = s->regex_priority;
        ptrs[i] = r;
    }
    rt = sl_router_create(ptrs, NROUTES, err, sizeof(err));
    if (rt == NULL) {
        fprintf(stderr, "fuzz table does not compile: %s\n", err);
        abort();
    }
    md = pcre2_match_data_create(SL_ROUTER_MAX_CAPTURES, NULL);
}

/* -1: no match; 0: a wildcard matched; 1: the exact host matched. */
static int ref_host(const char *conf, const sl_router_req_t *q)
{
    size_t n = strlen(conf), hl = q->host_len;
    unsigned port = 0;
    const char *colon = strrchr(conf, ':');

    if (colon != NULL && (conf[0] != '[' || colon[-1] == ']')) {
        port = (unsigned)atoi(colon + 1);
        n = (size_t)(colon - conf);
    }
    if (port != 0 && port != q->port)
        return -1;
    if (q->host == NULL || hl == 0)
        return -1;
    if (conf[0] == '*') { /* "*.tail" */
        size_t t = n - 1;
        return hl > t && strncasecmp(q->host + hl - t, conf + 1, t) == 0 ? 0 : -1;
    }
    if (conf[n - 1] == '*') { /* "head.*" */
        size_t h = n - 1;
        return hl > h && strncasecmp(q->host, conf, h) == 0 ? 0 : -1;
    }
    return hl == n && strncasecmp(q->host, conf, n) == 0 ? 1 : -1;
}

static bool ref_others(size_t i, const sl_router_req_t *q)
{
    const sl_route_t *r = &routes[i];

    if (r->protocols != 0 && !(r->protocols & (1u << q->protocol)))
        return false;
    if (r->methods != 0 || r->nother_methods != 0) {
        bool ok = false;
        if (q->method_id != SL_HTTP_OTHER)
            ok = (r->methods & (unsigned)q->method_id) != 0;
        else if (r->nother_methods == 1)
            ok = q->method_len == strlen(r->other_methods[0]) &&
                 memcmp(q->method, r->other_methods[0], q->method_len) == 0;
        if (!ok)
            return false;
    }
    for (size_t j = 0; j < r->nheaders; j++) {
        const sl_route_header_t *h = &r->headers[j];
        bool found = false;
        for (size_t k = 0; k < q->nheaders && !found; k++) {
            const sl_http_header_t *x = &q->headers[k];
            if (x->name_len != h->name_len || strncasecmp(x->name, h->name, h->name_len) != 0)
                continue;
            for (size_t v = 0; v < h->nvalues && !found; v++) {
                pcre2_code *re = value_re[i][j][v];
                if (re != NULL)
                    found =
                        pcre2_match(re, (PCRE2_SPTR)x->value, x->value_len, 0, 0, md, NULL) >= 0;
                else
                    found = x->value_len == strlen(h->values[v]) &&
                            strncasecmp(x->value, h->values[v], x->value_len) == 0;
            }
        }
        if (!found)
            return false;
    }
    return true;
}

typedef struct {
    bool found;
    int weight, plain, nheaders, regex;
    long long prio;
    size_t index;
    size_t matched_len;
    int ncaptures;
    int captures[2 * SL_ROUTER_MAX_CAPTURES];
} cand_t;

/* Kong's order, one field at a time. */
static bool ref_better(const cand_t *a, const cand_t *b)
{
    if (!b->found)
        return true;
    if (a->weight != b->weight)
        return a->weight > b->weight;
    if (a->plain != b->plain)
        return a->plain > b->plain;
    if (a->nheaders != b->nheaders)
        return a->nheaders > b->nheaders;
    if (a->regex != b->regex)
        return a->regex > b->regex;
    if (a->prio != b->prio)
        return a->prio > b->prio;
    return a->index < b->index;
}

static cand_t reference(const sl_router_req_t *q)
{
    cand_t best = {0};

    for (size_t i = 0; i < NROUTES; i++) {
        const sl_route_t *r = &routes[i];
        if (!ref_others(i, q))
            continue;
        for (size_t h = 0; h < (r->nhosts ? r->nhosts : 1); h++) {
            int plain = 0;
            if (r->nhosts > 0 && (plain = ref_host(r->hosts[h], q)) < 0)
                continue;
            for (size_t p = 0; p < (r->npaths ? r->npaths : 1); p++) {
                cand_t c = {.found = true, .plain = plain, .index = r->index};
                c.weight = (r->nhosts > 0) + (r->npaths > 0) +
                           (r->methods != 0 || r->nother_methods != 0) + (r->nheaders > 0);
                c.nheaders = (int)r->nheaders;
                if (r->npaths > 0 && r->paths[p].kind == SL_PATH_PREFIX) {
                    const sl_route_path_t *rp = &r->paths[p];
                    if (rp->len > q->path_len || memcmp(rp->value, q->path, rp->len) != 0)
                        continue;
                    c.prio = (long long)rp->len;
                    c.matched_len = rp->len;
                } else if (r->npaths > 0) {
                    c.regex = 1;
                    c.prio = r->regex_priority;
                    int rc = pcre2_match(path_re[i][p], (PCRE2_SPTR)q->path, q->path_len, 0, 0, md,
                                         NULL);
                    if (rc < 0)
                        continue;
                    uint32_t groups;
                    pcre2_pattern_info(path_re[i][p], PCRE2_INFO_CAPTURECOUNT, &groups);
                    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                    c.ncaptures = (int)groups + 1;
                    for (int k = 0; k < 2 * c.ncaptures; k++)
                        c.captures[k] = ov[k] == PCRE2_UNSET ? -1 : (int)ov[k];
                    c.matched_len = ov[1];
                }
                if (ref_better(&c, &best))
                    best = c;
            }
        }
    }
    return best;
}

static int method_id(const char *m, size_t n)
{
    static const struct {
        const char *s;
        int id;
    } ids[] = {{"GET", SL_HTTP_GET},
               {"POST", SL_HTTP_POST},
               {"PUT", SL_HTTP_PUT},
               {"DELETE", SL_HTTP_DELETE}};

    for (size_t i = 0; i < SL_NELEMS(ids); i++) {
        if (n == strlen(ids[i].s) && memcmp(m, ids[i].s, n) == 0)
            return ids[i].id;
    }
    return SL_HTTP_OTHER;
}

static void check_normalize(const char *path, size_t len)
{
    char *a = malloc(len ? len : 1);
    memcpy(a, path, len);
    int n = sl_router_normalize_path(a, len, a);
    if (n >= 0) {
        assert((size_t)n <= len);
        /* Normalizing twice changes nothing. */
        char *b = malloc(n ? (size_t)n : 1);
        int m = sl_router_normalize_path(a, (size_t)n, b);
        assert(m == n && memcmp(a, b, (size_t)n) == 0);
        free(b);
    }
    free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t ports[] = {80, 8000, 443, 0};
    const char *field[5] = {0};
    size_t flen[5] = {0};
    sl_http_header_t hs[2];
    sl_router_req_t q = {0};

    if (rt == NULL)
        setup();
    if (size == 0)
        return 0;
    q.port = ports[data[0] & 3];
    q.protocol = (data[0] >> 2) & 1;

    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    for (int f = 0; f < 5 && p <= end; f++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        field[f] = p;
        flen[f] = (size_t)((nl ? nl : end) - p);
        p += flen[f] + 1;
    }

    /* The path gets a buffer of its own size, so ASan sees any overrun. */
    char *path = malloc(flen[1] ? flen[1] : 1);
    memcpy(path, field[1] ? field[1] : "", flen[1]);
    check_normalize(path, flen[1]);
    int n = sl_router_normalize_path(path, flen[1], path);
    if (n < 0) {
        free(path);
        return 0;
    }

    q.host = field[0];
    q.host_len = flen[0];
    q.method = field[2] ? field[2] : "";
    q.method_len = flen[2];
    q.method_id = method_id(q.method, q.method_len);
    q.path = path;
    q.path_len = (size_t)n;
    for (int f = 3; f < 5; f++) {
        const char *colon = field[f] ? memchr(field[f], ':', flen[f]) : NULL;
        if (colon == NULL)
            continue;
        sl_http_header_t *h = &hs[q.nheaders++];
        h->name = field[f];
        h->name_len = (uint32_t)(colon - field[f]);
        h->value = colon + 1;
        h->value_len = (uint32_t)(field[f] + flen[f] - colon - 1);
        while (h->value_len > 0 && h->value[0] == ' ') {
            h->value++;
            h->value_len--;
        }
    }
    q.headers = hs;

    sl_router_match_t m;
    int rc = sl_router_match(rt, &q, &m);
    cand_t want = reference(&q);
    assert(rc == SL_OK || rc == SL_DECLINED);
    assert((rc == SL_OK) == want.found);
    if (rc == SL_OK) {
        assert(m.route >= routes && m.route < routes + NROUTES);
        assert(m.route->index == want.index);
        assert(m.matched_len <= q.path_len);
        assert(m.matched_len == want.matched_len);
        assert(m.ncaptures >= 0 && m.ncaptures <= SL_ROUTER_MAX_CAPTURES);
        assert(m.ncaptures == want.ncaptures);
        for (int i = 0; i < m.ncaptures; i++) {
            int s = m.captures[2 * i], e = m.captures[2 * i + 1];
            assert((s == -1 && e == -1) || (0 <= s && s <= e && (size_t)e <= q.path_len));
            assert(s == want.captures[2 * i] && e == want.captures[2 * i + 1]);
        }
    }
    free(path);
    return 0;
}
