/* http_parser.c: strict, zero-copy HTTP/1.1 request, response and chunked-body parsers. */
#include <limits.h>

#include "http_parser.h"

/*
 * The head parsers are stateless: a caller with an incomplete head calls
 * again with a longer buffer and the head is parsed from the start. One pass
 * validates every byte and extracts the framing, so a complete head (the
 * common case: it arrives in one read) costs a single scan, and a malformed
 * one fails as soon as the offending byte arrives. Re-parsing a head that
 * trickles in is O(n^2) in the worst case, bounded by max_header_size.
 *
 * Strictness follows RFC 9112 and the request-smuggling lessons: no obs-fold,
 * no whitespace before a colon, no bare CR, no CTLs in values, one Host,
 * consistent Content-Length, and "chunked" as the only transfer coding of a
 * request. Head lines may end in a lone LF (RFC 9112 §2.2); the chunked
 * framing, where lenient line endings have been used to smuggle requests,
 * requires CRLF.
 */

/* Character classes, one bit each, indexed by byte. */
#define C_TCHAR  0x01 /* token (RFC 9110 §5.6.2) */
#define C_FIELD  0x02 /* field-value byte: HTAB, SP, VCHAR, obs-text */
#define C_TARGET 0x04 /* request-target byte: visible ASCII */
#define C_HOST   0x08 /* reg-name, IPv6 and port byte: unreserved, %, sub-delims, ':' */
#define C_HEX    0x10

static const uint8_t cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2,  15, 6,  7,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20 */
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 14, 14, 6,  14, 6,  6,  /* 0x30 */
    6,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  6,  6,  7,  15, /* 0x50 */
    7,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x90 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xa0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xb0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xc0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xd0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xe0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xf0 */
};

#define IS(c, m)    (cls[(unsigned char)(c)] & (m))
#define IS_WS(c)    ((c) == ' ' || (c) == '\t')
#define IS_DIGIT(c) ((unsigned)((c) - '0') < 10)

/* Limits of the chunked framing the caller cannot configure. */
#define CHUNK_LINE_MAX    4096
#define CHUNK_TRAILER_MAX 16384

/* Returns the first byte in [p, end) outside class m, or end. Unrolled because
 * header values and targets are the bulk of a head. */
static inline const char *scan(const char *p, const char *end, uint8_t m)
{
    while (end - p >= 8) {
        if (!IS(p[0], m))
            return p;
        if (!IS(p[1], m))
            return p + 1;
        if (!IS(p[2], m))
            return p + 2;
        if (!IS(p[3], m))
            return p + 3;
        if (!IS(p[4], m))
            return p + 4;
        if (!IS(p[5], m))
            return p + 5;
        if (!IS(p[6], m))
            return p + 6;
        if (!IS(p[7], m))
            return p + 7;
        p += 8;
    }
    while (p < end && IS(*p, m))
        p++;
    return p;
}

/* Why a head was rejected: the status to answer with and a static text. */
typedef struct {
    int status;
    const char *msg;
} failure_t;

static int fail(failure_t *f, int status, const char *msg)
{
    f->status = status;
    f->msg = msg;
    return SL_ERROR;
}

/* What the framing-relevant fields of a head said, accumulated per line. */
enum { CONN_CLOSE = 1, CONN_KEEPALIVE = 2, CONN_OTHER = 4 };
enum { EXPECT_NONE, EXPECT_CONTINUE, EXPECT_OTHER };

typedef struct {
    const char *host;
    uint32_t host_len;
    unsigned nhost;
    int64_t content_length; /* -1 when absent */
    unsigned te;            /* Transfer-Encoding lines seen */
    unsigned te_codings;    /* non-empty transfer-coding list elements */
    unsigned te_chunked;    /* how many of them are "chunked" */
    int te_chunked_last;
    unsigned conn; /* CONN_* */
    int expect;    /* EXPECT_* */
    int upgrade;
    int dropped; /* a line named with '_' was left out */
} fields_t;

/* Checks an HTTP-version at p. Returns 10 or 11; 0 when bytes are missing and
 * those present are a valid prefix; -400 for bad syntax; -505 for a
 * well-formed version other than 1.0 and 1.1. */
static int parse_version(const char *p, const char *end)
{
    static const char v[] = "HTTP/1.1";
    size_t n = SL_MIN((size_t)(end - p), sizeof(v) - 1);

    for (size_t i = 0; i < n; i++) {
        if (i == 5 || i == 7) {
            if (!IS_DIGIT(p[i]))
                return -400;
        } else if (p[i] != v[i]) {
            return -400;
        }
    }
    if (n < sizeof(v) - 1)
        return 0;
    if (p[5] == '1' && (p[7] == '0' || p[7] == '1'))
        return p[7] == '0' ? 10 : 11;
    return -505;
}

/* Validates uri-host [":" port] (RFC 3986): an IP-literal in brackets or a
 * reg-name, then digits. Userinfo, paths and whitespace are rejected so that
 * what routes a request is what the upstream will see. */
static int valid_host(const char *h, size_t n)
{
    size_t i = 0;

    if (n > 0 && h[0] == '[') {
        for (i = 1; i < n && h[i] != ']'; i++) {
            if (!IS(h[i], C_HOST))
                return 0;
        }
        if (i == n || i == 1)
            return 0;
        i++;
    } else {
        while (i < n && h[i] != ':' && IS(h[i], C_HOST))
            i++;
    }
    if (i == n)
        return 1;
    if (h[i] != ':')
        return 0;
    for (i++; i < n; i++) {
        if (!IS_DIGIT(h[i]))
            return 0;
    }
    return 1;
}

/* Steps through a comma-separated list: returns the next non-empty element,
 * trimmed of OWS, with its length in *n, and advances *p past it; NULL at the
 * end. Empty elements are skipped as RFC 9110 §5.6.1 requires. */
static const char *next_element(const char **p, const char *end, size_t *n)
{
    while (*p < end) {
        const char *e = *p, *q = memchr(e, ',', (size_t)(end - e));

        if (q == NULL)
            q = end;
        *p = q < end ? q + 1 : end;
        while (e < q && IS_WS(*e))
            e++;
        while (q > e && IS_WS(q[-1]))
            q--;
        if (q > e) {
            *n = (size_t)(q - e);
            return e;
        }
    }
    return NULL;
}

/* Content-Length = 1*DIGIT, but a list of identical values ("5, 5") is
 * accepted as RFC 9110 §8.6 allows; all values, across lines, must agree. */
static int content_length(fields_t *f, const char *v, size_t n, failure_t *err)
{
    const char *p = v, *end = v + n;

    if (n == 0)
        return fail(err, 400, "invalid Content-Length");
    while (p < end) {
        int64_t cl = 0;
        const char *start = p;

        for (; p < end && IS_DIGIT(*p); p++) {
            int d = *p - '0';
            if (cl > (INT64_MAX - d) / 10)
                return fail(err, 400, "Content-Length too large");
            cl = cl * 10 + d;
        }
        if (p == start)
            return fail(err, 400, "invalid Content-Length");
        if (f->content_length >= 0 && f->content_length != cl)
            return fail(err, 400, "conflicting Content-Length values");
        f->content_length = cl;
        while (p < end && IS_WS(*p))
            p++;
        if (p == end)
            break;
        if (*p != ',')
            return fail(err, 400, "invalid Content-Length");
        p++;
        while (p < end && IS_WS(*p))
            p++;
        if (p == end)
            return fail(err, 400, "invalid Content-Length");
    }
    return SL_OK;
}

/* Folds one header line into f. Names are matched by length first, so most
 * lines cost one switch. */
static int field(fields_t *f, const char *name, size_t nlen, const char *v, size_t vlen,
                 int request, failure_t *err)
{
    const char *e, *vend = v + vlen;
    size_t elen;

    switch (nlen) {
    case 4:
        if (request && SL_IEQ(name, nlen, "host")) {
            if (++f->nhost > 1)
                return fail(err, 400, "multiple Host headers");
            if (!valid_host(v, vlen))
                return fail(err, 400, "invalid Host header");
            f->host = v;
            f->host_len = (uint32_t)vlen;
        }
        break;
    case 6:
        if (request && SL_IEQ(name, nlen, "expect")) {
            if (f->expect != EXPECT_OTHER && SL_IEQ(v, vlen, "100-continue"))
                f->expect = EXPECT_CONTINUE;
            else
                f->expect = EXPECT_OTHER;
        }
        break;
    case 7:
        if (SL_IEQ(name, nlen, "upgrade"))
            f->upgrade = 1;
        break;
    case 10:
        if (SL_IEQ(name, nlen, "connection")) {
            while ((e = next_element(&v, vend, &elen)) != NULL) {
                if (SL_IEQ(e, elen, "close"))
                    f->conn |= CONN_CLOSE;
                else if (SL_IEQ(e, elen, "keep-alive"))
                    f->conn |= CONN_KEEPALIVE;
                else
                    f->conn |= CONN_OTHER;
            }
        }
        break;
    case 14:
        if (SL_IEQ(name, nlen, "content-length"))
            return content_length(f, v, vlen, err);
        break;
    case 17:
        if (SL_IEQ(name, nlen, "transfer-encoding")) {
            f->te++;
            while ((e = next_element(&v, vend, &elen)) != NULL) {
                f->te_codings++;
                f->te_chunked_last = SL_IEQ(e, elen, "chunked");
                f->te_chunked += (unsigned)f->te_chunked_last;
            }
        }
        break;
    }
    return SL_OK;
}

/* Parses header lines and the empty line ending the head from [start, end)
 * into headers[] and f. With drop_underscores, a line whose name holds '_'
 * counts toward max_headers but is neither stored nor folded into f, and
 * sets f->dropped. Returns the bytes consumed, SL_AGAIN when the head does
 * not end inside the buffer, or SL_ERROR with err set. */
static int parse_fields(const char *start, const char *end, sl_http_header_t *headers,
                        size_t max_headers, size_t *nheaders, fields_t *f, int request,
                        int drop_underscores, failure_t *err)
{
    const char *p = start;
    size_t n = 0, lines = 0;

    for (;;) {
        const char *name, *value, *vend;
        size_t nlen;

        if (p == end)
            return SL_AGAIN;
        if (*p == '\r') {
            if (p + 1 == end)
                return SL_AGAIN;
            if (p[1] != '\n')
                return fail(err, 400, "bare CR in header");
            p += 2;
            break;
        }
        if (*p == '\n') {
            p++;
            break;
        }

        name = p;
        p = scan(p, end, C_TCHAR);
        if (p == end)
            return SL_AGAIN;
        if (*p != ':') {
            if (p == name && IS_WS(*p))
                return fail(err, 400, "obsolete line folding");
            if (IS_WS(*p))
                return fail(err, 400, "whitespace before colon in header");
            return fail(err, 400, "invalid character in header name");
        }
        if (p == name)
            return fail(err, 400, "empty header name");
        nlen = (size_t)(p - name);

        p++;
        while (p < end && IS_WS(*p))
            p++;
        value = p;
        p = scan(p, end, C_FIELD);
        if (p == end)
            return SL_AGAIN;
        vend = p;
        if (*p == '\r') {
            if (p + 1 == end)
                return SL_AGAIN;
            if (p[1] != '\n')
                return fail(err, 400, "bare CR in header");
            p += 2;
        } else if (*p == '\n') {
            p++;
        } else {
            return fail(err, 400, "invalid character in header value");
        }
        while (vend > value && IS_WS(vend[-1]))
            vend--;

        if (lines++ == max_headers)
            return fail(err, 431, "too many headers");
        if (drop_underscores && memchr(name, '_', nlen) != NULL) {
            f->dropped = 1;
            continue;
        }
        headers[n].name = name;
        headers[n].name_len = (uint32_t)nlen;
        headers[n].value = value;
        headers[n].value_len = (uint32_t)(vend - value);
        n++;
        if (field(f, name, nlen, value, (size_t)(vend - value), request, err) != SL_OK)
            return SL_ERROR;
    }
    *nheaders = n;
    return (int)(p - start);
}

/* Splits path[0..n) at the first '?' into r->path and r->query. */
static void split_query(sl_http_request_t *r, const char *path, size_t n)
{
    const char *q = memchr(path, '?', n);

    r->path = path;
    if (q == NULL) {
        r->path_len = (uint32_t)n;
        return;
    }
    r->path_len = (uint32_t)(q - path);
    r->query = q + 1;
    r->query_len = (uint32_t)(n - r->path_len - 1);
}

/* Fills path, query and, for absolute-form, host from the request-target. */
static int parse_target(sl_http_request_t *r, failure_t *err)
{
    const char *t = r->target, *a, *end = t + r->target_len;
    size_t scheme;

    if (t[0] == '/') {
        split_query(r, t, r->target_len);
        return SL_OK;
    }
    if (r->target_len == 1 && t[0] == '*') {
        if (r->method_id != SL_HTTP_OPTIONS)
            return fail(err, 400, "asterisk-form target outside OPTIONS");
        r->path = t;
        r->path_len = 1;
        return SL_OK;
    }
    if (r->target_len >= 7 && SL_IEQ(t, 7, "http://"))
        scheme = 7;
    else if (r->target_len >= 8 && SL_IEQ(t, 8, "https://"))
        scheme = 8;
    else
        return fail(err, 400, "invalid request target");

    a = t = t + scheme;
    while (t < end && *t != '/' && *t != '?')
        t++;
    if (t == a || !valid_host(a, (size_t)(t - a)))
        return fail(err, 400, "invalid authority in request target");
    r->host = a;
    r->host_len = (uint32_t)(t - a);
    if (t < end && *t == '/') {
        split_query(r, t, (size_t)(end - t));
    } else {
        /* An empty path is "/" (RFC 9112 §3.2.2); the one ending the scheme
         * keeps the view inside the caller's buffer. */
        r->path = a - 1;
        r->path_len = 1;
        if (t < end) {
            r->query = t + 1;
            r->query_len = (uint32_t)(end - t - 1);
        }
    }
    return SL_OK;
}

/* Records why r is rejected; returns SL_ERROR. */
static int reject(sl_http_request_t *r, int status, const char *msg)
{
    r->error_status = status;
    r->error = msg;
    return SL_ERROR;
}

int sl_http_parse_request(const char *buf, size_t len, sl_http_request_t *r,
                          sl_http_header_t *headers, const sl_http_limits_t *limits)
{
    /* Lengths travel as int and uint32_t; a larger head limit is meaningless. */
    size_t hmax = SL_MIN(limits->max_header_size, (size_t)INT_MAX);
    size_t lmax = SL_MIN(limits->max_request_line, hmax);
    const char *p = buf, *end = buf + SL_MIN(len, hmax), *line, *lim, *eol;
    fields_t f = {.content_length = -1};
    failure_t err = {0, NULL};
    int v, n;

    memset(r, 0, sizeof(*r));
    r->headers = headers;
    r->content_length = -1;

    /* RFC 9112 §2.2: empty lines before the request line are ignored. */
    while (p < end && (*p == '\r' || *p == '\n')) {
        if (*p == '\r') {
            if (p + 1 == end)
                goto incomplete;
            if (p[1] != '\n')
                return reject(r, 400, "bare CR in request line");
            p++;
        }
        p++;
    }

    /* The request line is scanned within lmax + CRLF bytes: running out of
     * that window with more data available means 414. */
    line = p;
    lim = (size_t)(end - line) > lmax + 2 ? line + lmax + 2 : end;

    r->method = p;
    p = scan(p, lim, C_TCHAR);
    if (p == lim)
        goto line_incomplete;
    if (*p != ' ' || p == line)
        return reject(r, 400, "invalid method");
    r->method_len = (uint32_t)(p - line);
    r->method_id = sl_http_method_id(line, r->method_len);
    if (r->method_id == SL_HTTP_CONNECT)
        return reject(r, 405, "CONNECT is not supported");

    r->target = ++p;
    p = scan(p, lim, C_TARGET);
    if (p == lim)
        goto line_incomplete;
    if (*p != ' ' || p == r->target)
        return reject(r, 400, "invalid request target");
    r->target_len = (uint32_t)(p - r->target);

    p++;
    v = parse_version(p, lim);
    if (v == -400)
        return reject(r, 400, "invalid HTTP version");
    if (v == 0 || p + 8 == lim)
        goto line_incomplete;
    eol = p + 8;
    if (*eol == '\r') {
        if (eol + 1 == lim)
            goto line_incomplete;
        if (eol[1] != '\n')
            return reject(r, 400, "bare CR in request line");
        p = eol + 2;
    } else if (*eol == '\n') {
        p = eol + 1;
    } else {
        return reject(r, 400, "invalid HTTP version");
    }
    if ((size_t)(eol - line) > lmax)
        return reject(r, 414, "request line too long");
    if (v == -505)
        return reject(r, 505, "HTTP version not supported");
    r->version = v;
    if (parse_target(r, &err) != SL_OK)
        return reject(r, err.status, err.msg);

    n = parse_fields(p, end, headers, limits->max_headers, &r->nheaders, &f, 1,
                     !limits->underscores_in_headers, &err);
    if (n == SL_AGAIN)
        goto incomplete;
    if (n == SL_ERROR)
        return reject(r, err.status, err.msg);
    p += n;

    if (f.nhost == 0 && r->version == 11)
        return reject(r, 400, "missing Host header");
    if (f.te) {
        if (r->version == 10)
            return reject(r, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (f.content_length >= 0)
            return reject(r, 400, "Content-Length with Transfer-Encoding");
        if (f.te_codings != 1 || !f.te_chunked_last)
            return reject(r, 400, "unsupported Transfer-Encoding");
        r->body = SL_HTTP_BODY_CHUNKED;
    } else if (f.content_length > 0) {
        r->body = SL_HTTP_BODY_LENGTH;
    }
    r->content_length = f.content_length;
    if (r->host == NULL && f.nhost) {
        r->host = f.host;
        r->host_len = f.host_len;
    }

    if (r->version == 11 ? !(f.conn & CONN_CLOSE)
                         : (f.conn & (CONN_CLOSE | CONN_KEEPALIVE)) == CONN_KEEPALIVE)
        r->flags |= SL_HTTP_F_KEEPALIVE;
    if (f.conn & CONN_OTHER)
        r->flags |= SL_HTTP_F_CONN_HDRS;
    if (f.dropped)
        r->flags |= SL_HTTP_F_UNDERSCORES;
    /* RFC 9110 §7.8 and §10.1.1: HTTP/1.0 requests cannot upgrade or expect 100. */
    if (f.upgrade && r->version == 11)
        r->flags |= SL_HTTP_F_UPGRADE;
    if (f.expect == EXPECT_OTHER)
        return reject(r, 417, "unsupported Expect");
    if (f.expect == EXPECT_CONTINUE && r->version == 11)
        r->flags |= SL_HTTP_F_EXPECT_100;
    return (int)(p - buf);

line_incomplete:
    /* A CR ending the window may still be followed by its LF. */
    if ((size_t)(lim - line) - (lim > line && lim[-1] == '\r') > lmax)
        return reject(r, 414, "request line too long");
incomplete:
    if (len >= hmax)
        return reject(r, 431, "request header too large");
    return SL_AGAIN;
}

/* Records why r is rejected; returns SL_ERROR. */
static int reject_response(sl_http_response_t *r, const char *msg)
{
    r->error = msg;
    return SL_ERROR;
}

int sl_http_parse_response(const char *buf, size_t len, sl_http_response_t *r,
                           sl_http_header_t *headers, size_t max_headers, int request_method)
{
    const char *p = buf, *end = buf + SL_MIN(len, (size_t)INT_MAX);
    fields_t f = {.content_length = -1};
    failure_t err = {0, NULL};
    int v, n, keepalive;

    memset(r, 0, sizeof(*r));
    r->headers = headers;
    r->content_length = -1;

    v = parse_version(p, end);
    if (v < 0)
        return reject_response(r, v == -505 ? "unsupported HTTP version in status line"
                                            : "invalid status line");
    if (v == 0 || end - p < 13)
        return SL_AGAIN;
    if (p[8] != ' ' || !IS_DIGIT(p[9]) || !IS_DIGIT(p[10]) || !IS_DIGIT(p[11]) || p[9] == '0')
        return reject_response(r, "invalid status line");
    r->version = v;
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    p += 12;
    if (*p == ' ') {
        r->reason = ++p;
        p = scan(p, end, C_FIELD);
        if (p == end)
            return SL_AGAIN;
    } else {
        r->reason = p;
    }
    r->reason_len = (uint32_t)(p - r->reason);
    if (*p == '\r') {
        if (p + 1 == end)
            return SL_AGAIN;
        if (p[1] != '\n')
            return reject_response(r, "bare CR in status line");
        p += 2;
    } else if (*p == '\n') {
        p++;
    } else {
        return reject_response(r, "invalid status line");
    }

    n = parse_fields(p, end, headers, max_headers, &r->nheaders, &f, 0, 0, &err);
    if (n == SL_AGAIN)
        return SL_AGAIN;
    if (n == SL_ERROR)
        return reject_response(r, err.msg);
    p += n;

    keepalive = r->version == 11 ? !(f.conn & CONN_CLOSE)
                                 : (f.conn & (CONN_CLOSE | CONN_KEEPALIVE)) == CONN_KEEPALIVE;
    r->content_length = f.content_length;
    if (f.upgrade)
        r->flags |= SL_HTTP_F_UPGRADE;
    if (f.conn & CONN_OTHER)
        r->flags |= SL_HTTP_F_CONN_HDRS;

    /* RFC 9112 §6.3, in its order. */
    if (request_method == SL_HTTP_HEAD || r->status < 200 || r->status == 204 || r->status == 304 ||
        (request_method == SL_HTTP_CONNECT && r->status < 300)) {
        r->body = SL_HTTP_BODY_NONE;
    } else if (f.te) {
        /* TE in HTTP/1.0 is faulty framing (RFC 9112 §6.1). */
        if (r->version == 10)
            return reject_response(r, "Transfer-Encoding in an HTTP/1.0 response");
        if (f.te_chunked > 1)
            return reject_response(r, "chunked applied more than once");
        if (f.te_chunked_last) {
            r->body = SL_HTTP_BODY_CHUNKED;
        } else {
            r->body = SL_HTTP_BODY_CLOSE;
            keepalive = 0;
        }
        /* Both headers hint at smuggling or splitting: use TE, but never
         * reuse the connection. */
        if (f.content_length >= 0)
            keepalive = 0;
    } else if (f.content_length > 0) {
        r->body = SL_HTTP_BODY_LENGTH;
    } else if (f.content_length < 0) {
        r->body = SL_HTTP_BODY_CLOSE;
        keepalive = 0;
    }
    if (keepalive)
        r->flags |= SL_HTTP_F_KEEPALIVE;
    return (int)(p - buf);
}

/* Decoder states; the zeroed struct starts at CH_SIZE0. */
enum {
    CH_SIZE0 = 0,    /* first hex digit of a chunk-size */
    CH_SIZE,         /* more hex digits, or what follows them */
    CH_BWS,          /* whitespace that must lead to ';' */
    CH_EXT_PRE,      /* after ';', before an extension name */
    CH_EXT_NAME,     /* in an extension name */
    CH_EXT_NAME_BWS, /* whitespace after a name: '=' or ';' must follow */
    CH_EXT_VAL_PRE,  /* after '=' */
    CH_EXT_TOKEN,    /* in a token value */
    CH_EXT_QUOTED,   /* in a quoted-string value */
    CH_EXT_ESCAPE,   /* after a backslash in a quoted-string */
    CH_EXT_QEND,     /* after the closing quote */
    CH_SIZE_LF,      /* CR of the size line seen */
    CH_DATA,         /* in chunk payload */
    CH_DATA_CR,      /* payload done, CR due */
    CH_DATA_LF,      /* payload done, LF due */
    CH_TRAILER,      /* at the start of a trailer line or the final CRLF */
    CH_TRAILER_NAME, /* in a trailer field name */
    CH_TRAILER_VAL,  /* in a trailer field value */
    CH_TRAILER_LF,   /* CR of a trailer line seen */
    CH_LAST_LF,      /* CR of the final line seen */
    CH_ERROR = 99,   /* sticky: every later call fails too */
};

static int hex_value(char ch)
{
    if (IS_DIGIT(ch))
        return ch - '0';
    return (ch | 0x20) - 'a' + 10;
}

int sl_http_chunked_parse(sl_http_chunked_t *c, const char *buf, size_t len, const char **data,
                          size_t *data_len)
{
    const char *p = buf, *end = buf + SL_MIN(len, (size_t)INT_MAX);

    *data = NULL;
    *data_len = 0;

    while (p < end) {
        char ch = *p;

        if (c->state <= CH_SIZE_LF) {
            if (++c->line_len > CHUNK_LINE_MAX)
                goto failed;
        } else if (c->state >= CH_TRAILER && c->state <= CH_LAST_LF) {
            if (++c->trailer_bytes > CHUNK_TRAILER_MAX)
                goto failed;
        }

        switch (c->state) {
        case CH_SIZE0:
            if (!IS(ch, C_HEX))
                goto failed;
            c->remaining = (uint64_t)hex_value(ch);
            c->state = CH_SIZE;
            break;
        case CH_SIZE:
            if (IS(ch, C_HEX)) {
                /* The size must stay below 2^63 so it fits an int64_t. */
                if (c->remaining >> 59)
                    goto failed;
                c->remaining = c->remaining << 4 | (uint64_t)hex_value(ch);
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else if (ch == ';') {
                c->state = CH_EXT_PRE;
            } else if (IS_WS(ch)) {
                c->state = CH_BWS;
            } else {
                goto failed;
            }
            break;
        case CH_BWS:
            if (ch == ';')
                c->state = CH_EXT_PRE;
            else if (!IS_WS(ch))
                goto failed;
            break;
        case CH_EXT_PRE:
            if (IS(ch, C_TCHAR))
                c->state = CH_EXT_NAME;
            else if (!IS_WS(ch))
                goto failed;
            break;
        case CH_EXT_NAME:
            if (IS(ch, C_TCHAR))
                break;
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == ';')
                c->state = CH_EXT_PRE;
            else if (ch == '=')
                c->state = CH_EXT_VAL_PRE;
            else if (IS_WS(ch))
                c->state = CH_EXT_NAME_BWS;
            else
                goto failed;
            break;
        case CH_EXT_NAME_BWS:
            if (ch == '=')
                c->state = CH_EXT_VAL_PRE;
            else if (ch == ';')
                c->state = CH_EXT_PRE;
            else if (!IS_WS(ch))
                goto failed;
            break;
        case CH_EXT_VAL_PRE:
            if (ch == '"')
                c->state = CH_EXT_QUOTED;
            else if (IS(ch, C_TCHAR))
                c->state = CH_EXT_TOKEN;
            else if (!IS_WS(ch))
                goto failed;
            break;
        case CH_EXT_TOKEN:
            if (IS(ch, C_TCHAR))
                break;
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == ';')
                c->state = CH_EXT_PRE;
            else if (IS_WS(ch))
                c->state = CH_BWS;
            else
                goto failed;
            break;
        case CH_EXT_QUOTED:
            if (ch == '"')
                c->state = CH_EXT_QEND;
            else if (ch == '\\')
                c->state = CH_EXT_ESCAPE;
            else if (!IS(ch, C_FIELD))
                goto failed;
            break;
        case CH_EXT_ESCAPE:
            if (!IS(ch, C_FIELD))
                goto failed;
            c->state = CH_EXT_QUOTED;
            break;
        case CH_EXT_QEND:
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == ';')
                c->state = CH_EXT_PRE;
            else if (IS_WS(ch))
                c->state = CH_BWS;
            else
                goto failed;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                goto failed;
            c->state = c->remaining ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t n = (size_t)SL_MIN(c->remaining, (uint64_t)(end - p));
            *data = p;
            *data_len = n;
            c->remaining -= n;
            c->total += n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            p += n;
            return (int)(p - buf);
        }
        case CH_DATA_CR:
            if (ch != '\r')
                goto failed;
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                goto failed;
            c->state = CH_SIZE0;
            c->line_len = 0;
            break;
        case CH_TRAILER:
            if (ch == '\r')
                c->state = CH_LAST_LF;
            else if (IS(ch, C_TCHAR))
                c->state = CH_TRAILER_NAME;
            else
                goto failed;
            break;
        case CH_TRAILER_NAME:
            if (ch == ':')
                c->state = CH_TRAILER_VAL;
            else if (!IS(ch, C_TCHAR))
                goto failed;
            break;
        case CH_TRAILER_VAL:
            if (ch == '\r')
                c->state = CH_TRAILER_LF;
            else if (!IS(ch, C_FIELD))
                goto failed;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                goto failed;
            c->state = CH_TRAILER;
            break;
        case CH_LAST_LF:
            if (ch != '\n')
                goto failed;
            c->state = SL_CHUNKED_DONE;
            return (int)(p + 1 - buf);
        case SL_CHUNKED_DONE:
            return (int)(p - buf);
        default:
            goto failed;
        }
        p++;
    }
    if (c->state == CH_ERROR)
        return SL_ERROR;
    return (int)(p - buf);

failed:
    c->state = CH_ERROR;
    return SL_ERROR;
}

const sl_http_header_t *sl_http_find_header(const sl_http_header_t *h, size_t n, const char *lname,
                                            size_t lname_len)
{
    for (size_t i = 0; i < n; i++) {
        if (sl_str_ieq(h[i].name, h[i].name_len, lname, lname_len))
            return &h[i];
    }
    return NULL;
}

int sl_http_method_id(const char *m, size_t len)
{
    switch (len) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return SL_HTTP_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return SL_HTTP_PUT;
        break;
    case 4:
        if (memcmp(m, "POST", 4) == 0)
            return SL_HTTP_POST;
        if (memcmp(m, "HEAD", 4) == 0)
            return SL_HTTP_HEAD;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0)
            return SL_HTTP_PATCH;
        if (memcmp(m, "TRACE", 5) == 0)
            return SL_HTTP_TRACE;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return SL_HTTP_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return SL_HTTP_OPTIONS;
        if (memcmp(m, "CONNECT", 7) == 0)
            return SL_HTTP_CONNECT;
        break;
    }
    return SL_HTTP_OTHER;
}

const char *sl_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 305:
        return "Use Proxy";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

int sl_http_is_token(const char *s, size_t len)
{
    return scan(s, s + len, C_TCHAR) == s + len;
}

int sl_http_header_at(const sl_http_header_t *h, size_t n, int i, const char **name, size_t *nlen,
                      const char **value, size_t *vlen)
{
    if (i < 0 || (size_t)i >= n)
        return SL_DECLINED;
    *name = h[i].name;
    *nlen = h[i].name_len;
    *value = h[i].value;
    *vlen = h[i].value_len;
    return SL_OK;
}
