/* http_parser.h: strict, zero-copy HTTP/1.1 request, response and chunked-body parsers. */
#ifndef SL_HTTP_PARSER_H
#define SL_HTTP_PARSER_H

#include "sluice.h"

/* Methods the core knows by number; anything else that is a valid token is
 * SL_HTTP_OTHER and keeps its text in `method`. */
enum {
    SL_HTTP_OTHER = 0,
    SL_HTTP_GET = 1 << 0,
    SL_HTTP_HEAD = 1 << 1,
    SL_HTTP_POST = 1 << 2,
    SL_HTTP_PUT = 1 << 3,
    SL_HTTP_DELETE = 1 << 4,
    SL_HTTP_PATCH = 1 << 5,
    SL_HTTP_OPTIONS = 1 << 6,
    SL_HTTP_CONNECT = 1 << 7,
    SL_HTTP_TRACE = 1 << 8,
};

/* One header line; both views point into the caller's buffer. The value has
 * leading and trailing whitespace removed. */
typedef struct {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
} sl_http_header_t;

/* Limits checked while parsing, before anything is trusted, and what the
 * parser keeps of a request's headers. */
typedef struct {
    size_t max_request_line; /* longer request line: 414 */
    size_t max_header_size;  /* whole head (line + headers) larger: 431 */
    size_t max_headers;      /* more header lines: 431; also the capacity of headers[] */
    /* 0 (nginx's underscores_in_headers off): a header line whose name holds
     * '_' is validated like any other and counts toward both limits, but is
     * left out of headers[] and plays no part in framing, so nothing
     * downstream of the parser can see it; SL_HTTP_F_UNDERSCORES says that
     * one was dropped. Nonzero: such lines are kept. */
    int underscores_in_headers;
} sl_http_limits_t;

/* Framing of a message body as the headers declare it. */
enum {
    SL_HTTP_BODY_NONE = 0,   /* no body */
    SL_HTTP_BODY_LENGTH = 1, /* exactly content_length bytes */
    SL_HTTP_BODY_CHUNKED = 2,
    SL_HTTP_BODY_CLOSE = 3, /* responses only: until the connection closes */
};

/* Flags set while parsing the head. */
enum {
    SL_HTTP_F_KEEPALIVE = 1 << 0,   /* the sender wants the connection kept open */
    SL_HTTP_F_EXPECT_100 = 1 << 1,  /* Expect: 100-continue */
    SL_HTTP_F_UPGRADE = 1 << 2,     /* an Upgrade header is present */
    SL_HTTP_F_CONN_HDRS = 1 << 3,   /* Connection names headers other than close/keep-alive */
    SL_HTTP_F_UNDERSCORES = 1 << 4, /* a header named with '_' was dropped (see the limits) */
};

typedef struct {
    /* Request line. */
    const char *method;
    const char *target; /* the raw request-target */
    const char *path;   /* origin-form path (or "*"), without the query */
    const char *query;  /* after '?', without it; NULL when there is no '?' */
    const char *host;   /* Host header value, or the authority of an absolute-form target */
    uint32_t method_len;
    uint32_t target_len;
    uint32_t path_len;
    uint32_t query_len;
    uint32_t host_len;
    int method_id; /* SL_HTTP_* */
    int version;   /* 10 or 11 */

    /* Headers, in order, in the array the caller passed. */
    sl_http_header_t *headers;
    size_t nheaders;

    /* Framing. */
    int body;               /* SL_HTTP_BODY_* */
    int64_t content_length; /* -1 when absent */
    unsigned flags;         /* SL_HTTP_F_* */

    /* When parsing fails: the status to answer with (400; 405 for CONNECT,
     * 414, 417 for an Expect other than 100-continue, 431, 505). */
    int error_status;
    const char *error; /* static text saying what was wrong */
} sl_http_request_t;

typedef struct {
    int version; /* 10 or 11 */
    int status;  /* 100..999 */
    const char *reason;
    uint32_t reason_len;

    sl_http_header_t *headers;
    size_t nheaders;

    int body; /* SL_HTTP_BODY_*, already accounting for HEAD, 1xx, 204 and 304 */
    int64_t content_length;
    unsigned flags;

    const char *error; /* static text saying what was wrong */
} sl_http_response_t;

/* Parses a request head from buf[0..len). `headers` must have room for
 * limits->max_headers entries. Returns the length of the head (request line,
 * headers and the empty line) when it is complete, SL_AGAIN when more bytes are
 * needed (call again with the same bytes and more), or SL_ERROR with
 * r->error_status and r->error set; r is meaningful only after a complete
 * head. Lines may end in CRLF or a lone LF; empty lines before the request
 * line are skipped and counted in the length. Never reads past buf + len and
 * never allocates; every pointer in r points into buf. */
int sl_http_parse_request(const char *buf, size_t len, sl_http_request_t *r,
                          sl_http_header_t *headers, const sl_http_limits_t *limits);

/* Parses a response head. `request_method` is the SL_HTTP_* id of the request
 * it answers (HEAD responses carry no body). Returns as sl_http_parse_request,
 * but an error sets only r->error (the caller answers 502). There is no size
 * limit beyond len: the caller bounds its buffer. */
int sl_http_parse_response(const char *buf, size_t len, sl_http_response_t *r,
                           sl_http_header_t *headers, size_t max_headers, int request_method);

/* Incremental chunked-body decoder state; zero it before the first call. */
typedef struct {
    int state;
    uint64_t remaining; /* payload bytes left in the current chunk */
    uint64_t total;     /* payload bytes seen so far */
    uint32_t line_len;  /* length of the current size or trailer line, for limits */
    uint32_t trailer_bytes;
} sl_http_chunked_t;

/* Consumes chunked framing and at most one run of payload from buf[0..len).
 * Returns the number of bytes consumed (possibly fewer than len: call again
 * with the rest). If the consumed range ends in payload, *data and *data_len
 * name that run (inside buf), else *data_len is 0. Once the last chunk and the
 * trailers are consumed, c->state is SL_CHUNKED_DONE and bytes after the body
 * are left unconsumed. Returns SL_ERROR on malformed framing (every framing
 * line must end in CRLF), a chunk size of 2^63 or more, a chunk-size line over
 * 4096 bytes or trailers over 16 KiB; the error is sticky. Never reads past
 * buf + len. */
int sl_http_chunked_parse(sl_http_chunked_t *c, const char *buf, size_t len, const char **data,
                          size_t *data_len);

#define SL_CHUNKED_DONE 100

/* Returns the first of h[0..n) whose name equals lname (lower-case, compared
 * case-insensitively), or NULL. */
const sl_http_header_t *sl_http_find_header(const sl_http_header_t *h, size_t n, const char *lname,
                                            size_t lname_len);

/* Do header names a[0..n) and b[0..n) name the same header for the PDK?
 * ASCII case is ignored and '_' matches '-', as Kong's (nginx's) lookups do:
 * get_header("x_api_key") finds X-Api-Key, and set_header("X-Consumer-ID")
 * replaces a client's X_Consumer_ID. */
static inline int sl_http_name_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x == y)
            continue;
        if (x == '_')
            x = '-';
        if (y == '_')
            y = '-';
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x | 0x20);
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y | 0x20);
        if (x != y)
            return 0;
    }
    return 1;
}

/* Copies header i of h[0..n) into the out-params (for the FFI accessors).
 * Returns SL_OK, or SL_DECLINED when i is out of range. */
int sl_http_header_at(const sl_http_header_t *h, size_t n, int i, const char **name, size_t *nlen,
                      const char **value, size_t *vlen);

/* Returns 1 when s[0..len) is all token characters (RFC 9110 §5.6.2: what a
 * method or header name may hold), else 0. */
int sl_http_is_token(const char *s, size_t len);

/* Maps a method token to its SL_HTTP_* id (SL_HTTP_OTHER for unknown tokens). */
int sl_http_method_id(const char *m, size_t len);

/* Canonical reason phrase for a status code ("Unknown" for others). */
const char *sl_http_reason(int status);

#endif
