/* http_parser.c: tests for core/http_parser.c. */
#include <stdlib.h>

#include "../../core/http_parser.h"

#include "test.h"

static const sl_http_limits_t limits = {
    .max_request_line = 64,
    .max_header_size = 512,
    .max_headers = 8,
};

static sl_http_header_t hdrs[8];

/* The parsers see an exact-size heap copy, so ASan flags any read past it.
 * The copy lives until the next call, for the views in the result. */
static char *copy(const char *s, size_t n)
{
    static char *last;

    free(last);
    last = malloc(n ? n : 1);
    memcpy(last, s, n);
    return last;
}

static int req_n(const char *s, size_t n, sl_http_request_t *r)
{
    return sl_http_parse_request(copy(s, n), n, r, hdrs, &limits);
}

static int req(const char *s, sl_http_request_t *r)
{
    return req_n(s, strlen(s), r);
}

/* Returns the error status of a request that must fail, or 0 if it parsed. */
static int req_status(const char *s)
{
    sl_http_request_t r;
    int rc = req(s, &r);

    if (rc == SL_ERROR)
        return r.error_status;
    return rc >= 0 ? 0 : -1;
}

static int resp(const char *s, sl_http_response_t *r, int method)
{
    size_t n = strlen(s);
    return sl_http_parse_response(copy(s, n), n, r, hdrs, SL_NELEMS(hdrs), method);
}

#define GET_HOST "GET / HTTP/1.1\r\nHost: a\r\n"

TEST(http_request_simple_get_fills_every_field)
{
    const char *s = "GET /users/7?x=1&y HTTP/1.1\r\n"
                    "Host: api.example.com:8080\r\n"
                    "Accept:  */* \t\r\n"
                    "\r\n";
    sl_http_request_t r;

    ASSERT_EQ(req(s, &r), strlen(s));
    ASSERT_MEMEQ(r.method, r.method_len, "GET");
    ASSERT_EQ(r.method_id, SL_HTTP_GET);
    ASSERT_MEMEQ(r.target, r.target_len, "/users/7?x=1&y");
    ASSERT_MEMEQ(r.path, r.path_len, "/users/7");
    ASSERT_MEMEQ(r.query, r.query_len, "x=1&y");
    ASSERT_MEMEQ(r.host, r.host_len, "api.example.com:8080");
    ASSERT_EQ(r.version, 11);
    ASSERT_EQ(r.nheaders, 2);
    ASSERT(r.headers == hdrs);
    ASSERT_MEMEQ(hdrs[0].name, hdrs[0].name_len, "Host");
    ASSERT_MEMEQ(hdrs[1].name, hdrs[1].name_len, "Accept");
    ASSERT_MEMEQ(hdrs[1].value, hdrs[1].value_len, "*/*");
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT_EQ(r.content_length, -1);
    ASSERT_EQ(r.flags, SL_HTTP_F_KEEPALIVE);
    ASSERT_EQ(r.error_status, 0);
    ASSERT(r.error == NULL);
}

TEST(http_request_pipelined_returns_first_head_length)
{
    const char *first = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
    char buf[256];
    sl_http_request_t r;

    snprintf(buf, sizeof(buf), "%sabcGET /b HTTP/1.1\r\nHost: a\r\n\r\n", first);
    ASSERT_EQ(req(buf, &r), strlen(first));
    ASSERT_EQ(r.body, SL_HTTP_BODY_LENGTH);
    ASSERT_EQ(r.content_length, 3);
    ASSERT_EQ(req(buf + strlen(first) + 3, &r), strlen(buf) - strlen(first) - 3);
    ASSERT_MEMEQ(r.path, r.path_len, "/b");
}

TEST(http_request_every_prefix_is_again)
{
    const char *s = "PUT /x?q HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nX-A: b c\r\n\r\n";
    size_t n = strlen(s);
    sl_http_request_t r;

    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(req_n(s, i, &r), SL_AGAIN);
    ASSERT_EQ(req_n(s, n, &r), n);
    ASSERT_EQ(r.content_length, 10);
}

TEST(http_request_lf_only_line_endings_are_accepted)
{
    const char *s = "GET / HTTP/1.1\nHost: a\nX: y\r\n\n";
    sl_http_request_t r;

    ASSERT_EQ(req(s, &r), strlen(s));
    ASSERT_EQ(r.nheaders, 2);
    ASSERT_MEMEQ(hdrs[1].value, hdrs[1].value_len, "y");
}

TEST(http_request_leading_empty_lines_are_skipped)
{
    const char *s = "\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    sl_http_request_t r;

    ASSERT_EQ(req(s, &r), strlen(s));
    ASSERT_MEMEQ(r.method, r.method_len, "GET");
    ASSERT_EQ(req_status("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
}

TEST(http_request_bare_cr_is_rejected_everywhere)
{
    ASSERT_EQ(req_status("GET / HTTP/1.1\rHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: a\r\nX: ab\r\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: a\r\n\rX"), 400);
}

TEST(http_request_invalid_method_fails_before_head_is_complete)
{
    sl_http_request_t r;

    ASSERT_EQ(req("G(T", &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 400);
    ASSERT_STREQ(r.error, "invalid method");
    ASSERT_EQ(req_status(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
}

TEST(http_request_methods_are_case_sensitive_tokens)
{
    sl_http_request_t r;

    ASSERT(req("get / HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.method_id, SL_HTTP_OTHER);
    ASSERT_MEMEQ(r.method, r.method_len, "get");
    ASSERT(req("M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.method_id, SL_HTTP_OTHER);
    ASSERT(req("DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.method_id, SL_HTTP_DELETE);
}

TEST(http_request_connect_is_405)
{
    sl_http_request_t r;

    ASSERT_EQ(req("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 405);
    ASSERT_STREQ(r.error, "CONNECT is not supported");
}

TEST(http_request_target_must_be_visible_ascii)
{
    ASSERT_EQ(req_status("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET a HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET /a\"<>{}|^`\\ HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
}

TEST(http_request_query_splits_at_first_question_mark)
{
    sl_http_request_t r;

    ASSERT(req("GET /p HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0);
    ASSERT_MEMEQ(r.path, r.path_len, "/p");
    ASSERT(r.query == NULL);
    ASSERT_EQ(r.query_len, 0);

    ASSERT(req("GET /p? HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0);
    ASSERT_MEMEQ(r.path, r.path_len, "/p");
    ASSERT(r.query != NULL);
    ASSERT_EQ(r.query_len, 0);

    ASSERT(req("GET /p?a=?b HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0);
    ASSERT_MEMEQ(r.path, r.path_len, "/p");
    ASSERT_MEMEQ(r.query, r.query_len, "a=?b");
}

TEST(http_request_absolute_form_authority_wins_over_host)
{
    sl_http_request_t r;

    ASSERT(req("GET HTTP://Up.Example:81/v1/x?k=v HTTP/1.1\r\nHost: other\r\n\r\n", &r) > 0);
    ASSERT_MEMEQ(r.host, r.host_len, "Up.Example:81");
    ASSERT_MEMEQ(r.path, r.path_len, "/v1/x");
    ASSERT_MEMEQ(r.query, r.query_len, "k=v");
    ASSERT_MEMEQ(r.target, r.target_len, "HTTP://Up.Example:81/v1/x?k=v");

    ASSERT(req("GET https://[::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n", &r) > 0);
    ASSERT_MEMEQ(r.host, r.host_len, "[::1]:8443");
    ASSERT_MEMEQ(r.path, r.path_len, "/");
    ASSERT(r.query == NULL);

    ASSERT(req("GET http://h?q HTTP/1.0\r\n\r\n", &r) > 0);
    ASSERT_MEMEQ(r.host, r.host_len, "h");
    ASSERT_MEMEQ(r.path, r.path_len, "/");
    ASSERT_MEMEQ(r.query, r.query_len, "q");
}

TEST(http_request_absolute_form_rejects_bad_authorities_and_schemes)
{
    ASSERT_EQ(req_status("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET http://user@h/x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET http://h:8x/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET ftp://h/x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET http:/h/x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    /* Host is still required, and must still be valid (RFC 9112 §3.2). */
    ASSERT_EQ(req_status("GET http://h/x HTTP/1.1\r\n\r\n"), 400);
}

TEST(http_request_asterisk_form_only_for_options)
{
    sl_http_request_t r;

    ASSERT(req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0);
    ASSERT_MEMEQ(r.path, r.path_len, "*");
    ASSERT(r.query == NULL);
    ASSERT_EQ(req_status("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
}

TEST(http_request_versions_other_than_1x_are_505_and_garbage_400)
{
    sl_http_request_t r;

    ASSERT(req("GET / HTTP/1.0\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.version, 10);
    ASSERT_EQ(req_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    ASSERT_EQ(req_status("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
    ASSERT_EQ(req_status("GET / HTTP/0.9\r\n\r\n"), 505);
    ASSERT_EQ(req_status("GET / http/1.1\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/11\r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET /\r\nHost: a\r\n\r\n"), 400);
    /* Garbage is seen before the line ends. */
    ASSERT_EQ(req_status("GET / HTTX"), 400);
}

TEST(http_request_line_over_limit_is_414)
{
    char buf[256], target[128];
    sl_http_request_t r;

    /* "GET " + target + " HTTP/1.1" is exactly the 64-byte limit. */
    memset(target, 'a', sizeof(target));
    target[0] = '/';
    snprintf(buf, sizeof(buf), "GET %.*s HTTP/1.1\r\nHost: a\r\n\r\n", 64 - 13, target);
    ASSERT_EQ(req(buf, &r), strlen(buf));

    snprintf(buf, sizeof(buf), "GET %.*s HTTP/1.1\r\nHost: a\r\n\r\n", 64 - 12, target);
    ASSERT_EQ(req(buf, &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 414);
    snprintf(buf, sizeof(buf), "GET %.*s HTTP/1.1\nHost: a\r\n\r\n", 64 - 12, target);
    ASSERT_EQ(req_status(buf), 414);

    /* Incomplete: 414 as soon as the limit is passed, not before. */
    snprintf(buf, sizeof(buf), "GET %.*s", 64 - 4, target);
    ASSERT_EQ(req(buf, &r), SL_AGAIN);
    snprintf(buf, sizeof(buf), "GET %.*s HTTP/1.1\r", 64 - 13, target);
    ASSERT_EQ(req(buf, &r), SL_AGAIN);
    snprintf(buf, sizeof(buf), "GET %.*s", 64 - 3, target);
    ASSERT_EQ(req(buf, &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 414);
    ASSERT_STREQ(r.error, "request line too long");
}

TEST(http_request_head_over_limit_is_431)
{
    char buf[1024];
    size_t n;
    sl_http_request_t r;

    n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(buf + n, 'v', sizeof(buf) - n);
    ASSERT_EQ(req_n(buf, 511, &r), SL_AGAIN);
    ASSERT_EQ(req_n(buf, 512, &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 431);
    ASSERT_EQ(req_n(buf, sizeof(buf), &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 431);

    /* A head of exactly 512 bytes fits. */
    memcpy(buf + 508, "\r\n\r\n", 4);
    ASSERT_EQ(req_n(buf, 512, &r), 512);
    ASSERT_EQ(req_n(buf, sizeof(buf), &r), 512);
    buf[508] = 'v';
    memcpy(buf + 509, "\r\n\r\n", 4);
    ASSERT_EQ(req_n(buf, sizeof(buf), &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 431);
}

TEST(http_request_too_many_headers_is_431)
{
    const char *eight = GET_HOST "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\n\r\n";
    sl_http_request_t r;

    ASSERT_EQ(req(eight, &r), strlen(eight));
    ASSERT_EQ(r.nheaders, 8);
    ASSERT_EQ(req(GET_HOST "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\n", &r),
              SL_ERROR);
    ASSERT_EQ(r.error_status, 431);
    ASSERT_STREQ(r.error, "too many headers");
}

TEST(http_request_host_is_required_once_in_11)
{
    sl_http_request_t r;

    ASSERT_EQ(req("GET / HTTP/1.1\r\n\r\n", &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 400);
    ASSERT_STREQ(r.error, "missing Host header");
    ASSERT_EQ(req_status(GET_HOST "host: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);

    ASSERT(req("GET / HTTP/1.0\r\n\r\n", &r) > 0);
    ASSERT(r.host == NULL);
    /* An empty Host is allowed when the target has no authority. */
    ASSERT(req("GET / HTTP/1.1\r\nHost:\r\n\r\n", &r) > 0);
    ASSERT(r.host != NULL);
    ASSERT_EQ(r.host_len, 0);
}

TEST(http_request_invalid_host_values_are_400)
{
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: []\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: a\xff\r\n\r\n"), 400);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]:80\r\n\r\n"), 0);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost: xn--bcher-kva.example.:443\r\n\r\n"), 0);
}

TEST(http_request_content_length_with_transfer_encoding_is_400)
{
    sl_http_request_t r;

    ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n",
                  &r),
              SL_ERROR);
    ASSERT_EQ(r.error_status, 400);
    ASSERT_STREQ(r.error, "Content-Length with Transfer-Encoding");
    ASSERT_EQ(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                         "Content-Length: 0\r\n\r\n"),
              400);
}

TEST(http_request_differing_content_lengths_are_400)
{
    sl_http_request_t r;

    ASSERT_EQ(
        req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", &r),
        SL_ERROR);
    ASSERT_EQ(r.error_status, 400);
    ASSERT_STREQ(r.error, "conflicting Content-Length values");
    ASSERT_EQ(req_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"), 400);
}

TEST(http_request_identical_content_lengths_are_one)
{
    sl_http_request_t r;

    ASSERT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 , 5\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.content_length, 5);
    ASSERT_EQ(r.body, SL_HTTP_BODY_LENGTH);
    ASSERT(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n", &r) >
           0);
    ASSERT_EQ(r.content_length, 7);
}

TEST(http_request_malformed_content_length_is_400)
{
    ASSERT_EQ(req_status(GET_HOST "Content-Length: +5\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "Content-Length: -1\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "Content-Length:\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "Content-Length: 5a\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "Content-Length: 0x5\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "Content-Length: 5,\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "Content-Length: 5 5\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "Content-Length: 9223372036854775808\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "Content-Length: 99999999999999999999999\r\n\r\n"), 400);
}

TEST(http_request_content_length_limits_and_zero)
{
    sl_http_request_t r;

    ASSERT(req(GET_HOST "Content-Length: 9223372036854775807\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.content_length, INT64_MAX);
    ASSERT(req(GET_HOST "Content-Length: 000\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.content_length, 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
}

TEST(http_request_transfer_encoding_chunked_is_accepted)
{
    sl_http_request_t r;

    ASSERT(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_CHUNKED);
    ASSERT_EQ(r.content_length, -1);
    /* Empty list elements and empty lines do not count (RFC 9110 §5.6.1). */
    ASSERT(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n"
               "Transfer-Encoding: , chunked ,\r\n\r\n",
               &r) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_CHUNKED);
}

TEST(http_request_transfer_codings_other_than_chunked_are_400)
{
    static const char *const bad[] = {
        "gzip",          "identity",         "gzip, chunked",
        "chunked, gzip", "chunked, chunked", "chunked;x=1",
        "chunkedx",      "\"chunked\"",      "",
    };
    char buf[256];

    for (size_t i = 0; i < SL_NELEMS(bad); i++) {
        snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n",
                 bad[i]);
        ASSERT_EQ(req_status(buf), 400);
    }
    /* The same list split across lines. */
    ASSERT_EQ(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"),
              400);
    ASSERT_EQ(req_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"),
              400);
}

TEST(http_request_transfer_encoding_in_10_is_400)
{
    sl_http_request_t r;

    ASSERT_EQ(req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 400);
    ASSERT_STREQ(r.error, "Transfer-Encoding in an HTTP/1.0 request");
}

TEST(http_request_obs_fold_is_400)
{
    sl_http_request_t r;

    ASSERT_EQ(req(GET_HOST "X: a\r\n b\r\n\r\n", &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 400);
    ASSERT_STREQ(r.error, "obsolete line folding");
    ASSERT_EQ(req_status(GET_HOST "X: a\r\n\tb\r\n\r\n"), 400);
    /* Whitespace between the request line and the first field, too. */
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400);
}

TEST(http_request_whitespace_before_colon_is_400)
{
    sl_http_request_t r;

    ASSERT_EQ(req("GET / HTTP/1.1\r\nHost : a\r\n\r\n", &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 400);
    ASSERT_STREQ(r.error, "whitespace before colon in header");
    ASSERT_EQ(req_status(GET_HOST "Transfer-Encoding\t: chunked\r\n\r\n"), 400);
}

TEST(http_request_ctl_in_value_is_400)
{
    static const char ctls[] = {'\0', '\x01', '\x0b', '\x1f', '\x7f'};
    char buf[64];
    sl_http_request_t r;

    for (size_t i = 0; i < sizeof(ctls); i++) {
        int n = snprintf(buf, sizeof(buf), GET_HOST "X: a?b\r\n\r\n");
        *strchr(buf, '?') = ctls[i];
        ASSERT_EQ(req_n(buf, (size_t)n, &r), SL_ERROR);
        ASSERT_EQ(r.error_status, 400);
        ASSERT_STREQ(r.error, "invalid character in header value");
    }
}

TEST(http_request_invalid_header_names_are_400)
{
    sl_http_request_t r;

    ASSERT_EQ(req_status(GET_HOST "X(y): a\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "X\xc3\xa9: a\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "X\r\n\r\n"), 400);
    ASSERT_EQ(req(GET_HOST ": a\r\n\r\n", &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 400);
    ASSERT_STREQ(r.error, "empty header name");
}

TEST(http_request_values_are_trimmed_and_keep_obs_text)
{
    sl_http_request_t r;

    ASSERT(req(GET_HOST "X: \t a \x80\xff b \t \r\nEmpty:\r\nSpaces:   \r\n\r\n", &r) > 0);
    ASSERT_EQ(r.nheaders, 4);
    ASSERT_MEMEQ(hdrs[1].value, hdrs[1].value_len, "a \x80\xff b");
    ASSERT_EQ(hdrs[2].value_len, 0);
    ASSERT(hdrs[2].value != NULL);
    ASSERT_EQ(hdrs[3].value_len, 0);
}

TEST(http_request_keepalive_in_11_is_default_until_close)
{
    sl_http_request_t r;

    ASSERT(req(GET_HOST "\r\n", &r) > 0);
    ASSERT(r.flags & SL_HTTP_F_KEEPALIVE);
    ASSERT(req(GET_HOST "Connection: keep-alive, CLOSE\r\n\r\n", &r) > 0);
    ASSERT(!(r.flags & SL_HTTP_F_KEEPALIVE));
    ASSERT(!(r.flags & SL_HTTP_F_CONN_HDRS));
}

TEST(http_request_keepalive_in_10_needs_keep_alive)
{
    sl_http_request_t r;

    ASSERT(req("GET / HTTP/1.0\r\n\r\n", &r) > 0);
    ASSERT(!(r.flags & SL_HTTP_F_KEEPALIVE));
    ASSERT(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r) > 0);
    ASSERT(r.flags & SL_HTTP_F_KEEPALIVE);
    ASSERT(req("GET / HTTP/1.0\r\nConnection: x-trace, keep-alive\r\n\r\n", &r) > 0);
    ASSERT(r.flags & SL_HTTP_F_KEEPALIVE);
    ASSERT(r.flags & SL_HTTP_F_CONN_HDRS);
    ASSERT(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", &r) > 0);
    ASSERT(!(r.flags & SL_HTTP_F_KEEPALIVE));
}

TEST(http_request_connection_naming_other_headers_is_flagged)
{
    sl_http_request_t r;

    ASSERT(req(GET_HOST "Connection: ,upgrade\r\nUpgrade: websocket\r\n\r\n", &r) > 0);
    ASSERT(r.flags & SL_HTTP_F_CONN_HDRS);
    ASSERT(r.flags & SL_HTTP_F_UPGRADE);
    ASSERT(r.flags & SL_HTTP_F_KEEPALIVE);
    /* Upgrade means nothing in HTTP/1.0 (RFC 9110 §7.8). */
    ASSERT(req("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n", &r) > 0);
    ASSERT(!(r.flags & SL_HTTP_F_UPGRADE));
}

TEST(http_request_expect_100_continue_and_417)
{
    sl_http_request_t r;

    ASSERT(req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n",
               &r) > 0);
    ASSERT(r.flags & SL_HTTP_F_EXPECT_100);
    ASSERT(req("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n", &r) > 0);
    ASSERT(!(r.flags & SL_HTTP_F_EXPECT_100));
    ASSERT_EQ(req(GET_HOST "Expect: 200-ok\r\n\r\n", &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 417);
    ASSERT_STREQ(r.error, "unsupported Expect");
    ASSERT_EQ(req_status(GET_HOST "Expect: 100-continue, x\r\n\r\n"), 417);
    /* Framing errors win over expectations. */
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nExpect: x\r\n\r\n"), 400);
}

TEST(http_find_header_is_case_insensitive_first_match)
{
    sl_http_request_t r;
    const sl_http_header_t *h;

    ASSERT(req(GET_HOST "X-Id: 1\r\nx-id: 2\r\n\r\n", &r) > 0);
    h = sl_http_find_header(r.headers, r.nheaders, "x-id", 4);
    ASSERT(h == &hdrs[1]);
    ASSERT_MEMEQ(h->value, h->value_len, "1");
    ASSERT(sl_http_find_header(r.headers, r.nheaders, "x-i", 3) == NULL);
    ASSERT(sl_http_find_header(r.headers, 0, "host", 4) == NULL);
}

/* As req(), with the limits' underscores_in_headers set to keep. */
static int req_keep(const char *s, sl_http_request_t *r)
{
    sl_http_limits_t keep = limits;
    size_t n = strlen(s);

    keep.underscores_in_headers = 1;
    return sl_http_parse_request(copy(s, n), n, r, hdrs, &keep);
}

TEST(http_request_underscore_names_are_dropped_unless_kept)
{
    const char *s = GET_HOST "X_Consumer_ID: admin\r\nX-Consumer-ID: real\r\n_: a\r\nB_: b\r\n\r\n";
    sl_http_request_t r;

    ASSERT_EQ(req(s, &r), strlen(s));
    ASSERT_EQ(r.nheaders, 2);
    ASSERT_MEMEQ(hdrs[0].name, hdrs[0].name_len, "Host");
    ASSERT_MEMEQ(hdrs[1].name, hdrs[1].name_len, "X-Consumer-ID");
    ASSERT_MEMEQ(hdrs[1].value, hdrs[1].value_len, "real");
    ASSERT_EQ(r.flags, SL_HTTP_F_KEEPALIVE | SL_HTTP_F_UNDERSCORES);
    ASSERT(sl_http_find_header(r.headers, r.nheaders, "x_consumer_id", 13) == NULL);

    ASSERT_EQ(req_keep(s, &r), strlen(s));
    ASSERT_EQ(r.nheaders, 5);
    ASSERT_MEMEQ(hdrs[1].name, hdrs[1].name_len, "X_Consumer_ID");
    ASSERT_MEMEQ(hdrs[1].value, hdrs[1].value_len, "admin");
    ASSERT_MEMEQ(hdrs[3].name, hdrs[3].name_len, "_");
    ASSERT_EQ(r.flags, SL_HTTP_F_KEEPALIVE);

    /* Without such a header nothing is flagged. */
    ASSERT(req(GET_HOST "X-A: 1\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.flags, SL_HTTP_F_KEEPALIVE);
}

TEST(http_request_dropped_lines_count_toward_limits)
{
    /* Host and 7 dropped lines fill max_headers (8); an 8th is one too many,
     * as it would be if the lines were kept. */
    const char *eight =
        GET_HOST "A_: 1\r\nB_: 2\r\nC_: 3\r\nD_: 4\r\nE_: 5\r\nF_: 6\r\nG_: 7\r\n\r\n";
    sl_http_request_t r;

    ASSERT_EQ(req(eight, &r), strlen(eight));
    ASSERT_EQ(r.nheaders, 1);
    ASSERT_EQ(req(GET_HOST
                  "A_: 1\r\nB_: 2\r\nC_: 3\r\nD_: 4\r\nE_: 5\r\nF_: 6\r\nG_: 7\r\nH_: 8\r\n"
                  "\r\n",
                  &r),
              SL_ERROR);
    ASSERT_EQ(r.error_status, 431);
    ASSERT_STREQ(r.error, "too many headers");

    /* Their bytes count toward max_header_size (512). */
    char buf[600];
    int n = snprintf(buf, sizeof(buf), GET_HOST "X_Pad: %0500d\r\n\r\n", 0);
    ASSERT(n > 512);
    ASSERT_EQ(req_n(buf, (size_t)n, &r), SL_ERROR);
    ASSERT_EQ(r.error_status, 431);
}

TEST(http_request_dropped_lines_are_validated_and_frame_nothing)
{
    sl_http_request_t r;

    /* Dropping is no leniency: a bad line is rejected as when it is kept. */
    ASSERT_EQ(req_status(GET_HOST "X_A : 1\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "X_A: \x01\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST "X_(: 1\r\n\r\n"), 400);
    ASSERT_EQ(req_status(GET_HOST " X_A: 1\r\n\r\n"), 400);

    /* Names near the framing ones are not framing, kept or dropped. */
    ASSERT(req(GET_HOST "Content_Length: 5\r\nTransfer_Encoding: chunked\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT_EQ(r.content_length, -1);
    ASSERT(req_keep(GET_HOST "Content_Length: 5\r\nTransfer_Encoding: chunked\r\n\r\n", &r) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT_EQ(req_status("GET / HTTP/1.1\r\nHost_: a\r\n\r\n"), 400);
}

TEST(http_response_keeps_underscore_names)
{
    sl_http_response_t r;

    ASSERT(resp("HTTP/1.1 204 No Content\r\nX_Up: 1\r\n\r\n", &r, SL_HTTP_GET) > 0);
    ASSERT_EQ(r.nheaders, 1);
    ASSERT_MEMEQ(hdrs[0].name, hdrs[0].name_len, "X_Up");
}

TEST(http_name_eq_ignores_case_and_folds_underscore)
{
    ASSERT(sl_http_name_eq("X_Consumer_ID", "x-consumer-id", 13));
    ASSERT(sl_http_name_eq("x-consumer-id", "X_CONSUMER_ID", 13));
    ASSERT(sl_http_name_eq("_", "-", 1));
    ASSERT(sl_http_name_eq("", "", 0));
    ASSERT(!sl_http_name_eq("X-A", "X-B", 3));
    ASSERT(!sl_http_name_eq("X.A", "X-A", 3));
    ASSERT(!sl_http_name_eq("X_A", "X.A", 3));
    /* Only ASCII letters fold: 0xc1 is not 0xe1. */
    ASSERT(!sl_http_name_eq("\xc1", "\xe1", 1));
}

TEST(http_method_ids_and_reasons)
{
    static const struct {
        const char *m;
        int id;
    } methods[] = {
        {"GET", SL_HTTP_GET},         {"HEAD", SL_HTTP_HEAD},       {"POST", SL_HTTP_POST},
        {"PUT", SL_HTTP_PUT},         {"DELETE", SL_HTTP_DELETE},   {"PATCH", SL_HTTP_PATCH},
        {"OPTIONS", SL_HTTP_OPTIONS}, {"CONNECT", SL_HTTP_CONNECT}, {"TRACE", SL_HTTP_TRACE},
        {"Get", SL_HTTP_OTHER},       {"GETS", SL_HTTP_OTHER},      {"PROPFIND", SL_HTTP_OTHER},
    };

    for (size_t i = 0; i < SL_NELEMS(methods); i++)
        ASSERT_EQ(sl_http_method_id(methods[i].m, strlen(methods[i].m)), methods[i].id);
    ASSERT_STREQ(sl_http_reason(200), "OK");
    ASSERT_STREQ(sl_http_reason(308), "Permanent Redirect");
    ASSERT_STREQ(sl_http_reason(431), "Request Header Fields Too Large");
    ASSERT_STREQ(sl_http_reason(505), "HTTP Version Not Supported");
    ASSERT_STREQ(sl_http_reason(299), "Unknown");
}

TEST(http_response_simple_with_length)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\nhello world!";
    sl_http_response_t r;

    ASSERT_EQ(resp(s, &r, SL_HTTP_GET), strlen(s) - 12);
    ASSERT_EQ(r.version, 11);
    ASSERT_EQ(r.status, 200);
    ASSERT_MEMEQ(r.reason, r.reason_len, "OK");
    ASSERT_EQ(r.nheaders, 2);
    ASSERT_EQ(r.body, SL_HTTP_BODY_LENGTH);
    ASSERT_EQ(r.content_length, 12);
    ASSERT_EQ(r.flags, SL_HTTP_F_KEEPALIVE);
}

TEST(http_response_status_without_reason)
{
    sl_http_response_t r;

    ASSERT(resp("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", &r, SL_HTTP_GET) > 0);
    ASSERT_EQ(r.status, 404);
    ASSERT_EQ(r.reason_len, 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT(resp("HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n", &r, SL_HTTP_GET) > 0);
    ASSERT_EQ(r.reason_len, 0);
    ASSERT(resp("HTTP/1.1 200 Very\tfine \xe2\x9c\x93\n\n", &r, SL_HTTP_GET) > 0);
    ASSERT_MEMEQ(r.reason, r.reason_len, "Very\tfine \xe2\x9c\x93");
}

TEST(http_response_head_1xx_204_304_have_no_body)
{
    sl_http_response_t r;

    ASSERT(resp("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", &r, SL_HTTP_HEAD) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT_EQ(r.content_length, 100);
    ASSERT(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &r, SL_HTTP_HEAD) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT(resp("HTTP/1.1 100 Continue\r\n\r\n", &r, SL_HTTP_POST) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT(resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: upgrade\r\n\r\n",
                &r, SL_HTTP_GET) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT(r.flags & SL_HTTP_F_UPGRADE);
    ASSERT(resp("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", &r, SL_HTTP_GET) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT(resp("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", &r,
                SL_HTTP_GET) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_NONE);
    ASSERT(r.flags & SL_HTTP_F_KEEPALIVE);
}

TEST(http_response_without_framing_is_close_delimited)
{
    sl_http_response_t r;

    ASSERT(resp("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", &r, SL_HTTP_GET) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_CLOSE);
    ASSERT_EQ(r.content_length, -1);
    ASSERT(!(r.flags & SL_HTTP_F_KEEPALIVE));
}

TEST(http_response_chunked_and_te_framing)
{
    sl_http_response_t r;

    ASSERT(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", &r, SL_HTTP_GET) >
           0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_CHUNKED);
    ASSERT(r.flags & SL_HTTP_F_KEEPALIVE);
    ASSERT(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", &r, SL_HTTP_GET) >
           0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_CLOSE);
    ASSERT(!(r.flags & SL_HTTP_F_KEEPALIVE));
    /* TE wins over CL, but the connection is not reused. */
    ASSERT(resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", &r,
                SL_HTTP_GET) > 0);
    ASSERT_EQ(r.body, SL_HTTP_BODY_CHUNKED);
    ASSERT(!(r.flags & SL_HTTP_F_KEEPALIVE));
    ASSERT_EQ(
        resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", &r, SL_HTTP_GET),
        SL_ERROR);
    ASSERT_EQ(resp("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &r, SL_HTTP_GET),
              SL_ERROR);
}

TEST(http_response_differing_content_lengths_fail)
{
    sl_http_response_t r;

    ASSERT_EQ(
        resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &r, SL_HTTP_GET),
        SL_ERROR);
    ASSERT_STREQ(r.error, "conflicting Content-Length values");
    ASSERT_EQ(resp("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &r, SL_HTTP_GET), SL_ERROR);
    ASSERT(resp("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n", &r, SL_HTTP_GET) > 0);
    ASSERT_EQ(r.content_length, 2);
}

TEST(http_response_keepalive_in_10_needs_keep_alive)
{
    sl_http_response_t r;

    ASSERT(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &r, SL_HTTP_GET) > 0);
    ASSERT_EQ(r.version, 10);
    ASSERT(!(r.flags & SL_HTTP_F_KEEPALIVE));
    ASSERT(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", &r,
                SL_HTTP_GET) > 0);
    ASSERT(r.flags & SL_HTTP_F_KEEPALIVE);
    ASSERT(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", &r,
                SL_HTTP_GET) > 0);
    ASSERT(!(r.flags & SL_HTTP_F_KEEPALIVE));
}

TEST(http_response_malformed_status_lines_fail)
{
    static const char *const bad[] = {
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 x\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "http/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 O\rK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    };
    sl_http_response_t r;

    for (size_t i = 0; i < SL_NELEMS(bad); i++) {
        if (resp(bad[i], &r, SL_HTTP_GET) != SL_ERROR) {
            sl_test_fail(__FILE__, __LINE__, "accepted \"%s\"", bad[i]);
            return;
        }
        ASSERT(r.error != NULL);
    }
}

TEST(http_response_every_prefix_is_again)
{
    const char *s = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/2\r\n"
                    "Content-Length: 2\r\n\r\n";
    size_t n = strlen(s);
    sl_http_response_t r;

    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ(sl_http_parse_response(copy(s, i), i, &r, hdrs, SL_NELEMS(hdrs), SL_HTTP_GET),
                  SL_AGAIN);
    }
    ASSERT_EQ(resp(s, &r, SL_HTTP_GET), n);
    ASSERT_EQ(sl_http_parse_response(copy(s, n), n, &r, hdrs, 1, SL_HTTP_GET), SL_ERROR);
    ASSERT_STREQ(r.error, "too many headers");
}

/* Decodes buf[0..n) with pieces of at most `step` bytes (0: all at once),
 * appending payload to out. Returns the final state, or SL_ERROR. */
static int decode(sl_http_chunked_t *c, const char *buf, size_t n, size_t step, char *out,
                  size_t *out_len, size_t *consumed)
{
    size_t off = 0;

    *out_len = 0;
    while (off < n && c->state != SL_CHUNKED_DONE) {
        size_t piece = step && n - off > step ? step : n - off;
        char *copy_ = malloc(piece);
        const char *data;
        size_t data_len;
        int rc;

        memcpy(copy_, buf + off, piece);
        rc = sl_http_chunked_parse(c, copy_, piece, &data, &data_len);
        if (rc >= 0 && data_len > 0) {
            if (data < copy_ || data + data_len != copy_ + rc)
                rc = -100;
            else
                memcpy(out + *out_len, data, data_len);
            *out_len += data_len;
        }
        free(copy_);
        if (rc < 0)
            return rc;
        if (rc == 0 && c->state != SL_CHUNKED_DONE)
            return -101;
        off += (size_t)rc;
    }
    *consumed = off;
    return c->state;
}

static int dechunk(const char *s, char *out, size_t *out_len)
{
    sl_http_chunked_t c = {0};
    size_t consumed;

    return decode(&c, s, strlen(s), 0, out, out_len, &consumed);
}

static const char chunked_msg[] = "5\r\nhello\r\n"
                                  "1;name=value;q=\"a \\\"b\\\" c\" ; flag\r\n,\r\n"
                                  "0000000000000000006\r\n world\r\n"
                                  "0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n";

TEST(http_chunked_split_at_every_boundary)
{
    size_t n = sizeof(chunked_msg) - 1, out_len, consumed;
    char out[64];
    sl_http_chunked_t c = {0};

    ASSERT_EQ(decode(&c, chunked_msg, n, 0, out, &out_len, &consumed), SL_CHUNKED_DONE);
    ASSERT_MEMEQ(out, out_len, "hello, world");
    ASSERT_EQ(consumed, n);
    ASSERT_EQ(c.total, 12);

    memset(&c, 0, sizeof(c));
    ASSERT_EQ(decode(&c, chunked_msg, n, 1, out, &out_len, &consumed), SL_CHUNKED_DONE);
    ASSERT_MEMEQ(out, out_len, "hello, world");
    ASSERT_EQ(consumed, n);

    for (size_t i = 1; i < n; i++) {
        size_t a_len, b_len, a_consumed, b_consumed;
        int rc;

        memset(&c, 0, sizeof(c));
        rc = decode(&c, chunked_msg, i, 0, out, &a_len, &a_consumed);
        ASSERT(rc >= 0 && rc != SL_CHUNKED_DONE);
        ASSERT_EQ(a_consumed, i);
        rc = decode(&c, chunked_msg + i, n - i, 0, out + a_len, &b_len, &b_consumed);
        ASSERT_EQ(rc, SL_CHUNKED_DONE);
        ASSERT_EQ(b_consumed, n - i);
        ASSERT_MEMEQ(out, a_len + b_len, "hello, world");
        ASSERT_EQ(c.total, 12);
    }
}

TEST(http_chunked_returns_one_payload_run_per_call)
{
    const char *s = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    sl_http_chunked_t c = {0};
    const char *data;
    size_t data_len;

    ASSERT_EQ(sl_http_chunked_parse(&c, s, strlen(s), &data, &data_len), 6);
    ASSERT_MEMEQ(data, data_len, "abc");
    ASSERT_EQ(sl_http_chunked_parse(&c, s + 6, strlen(s) - 6, &data, &data_len), 7);
    ASSERT_MEMEQ(data, data_len, "de");
    ASSERT_EQ(sl_http_chunked_parse(&c, s + 13, strlen(s) - 13, &data, &data_len), 7);
    ASSERT_EQ(data_len, 0);
    ASSERT_EQ(c.state, SL_CHUNKED_DONE);
    ASSERT_EQ(sl_http_chunked_parse(&c, "x", 1, &data, &data_len), 0);
}

TEST(http_chunked_leaves_bytes_after_the_body)
{
    const char *s = "0\r\n\r\nGET / HTTP/1.1\r\n";
    sl_http_chunked_t c = {0};
    const char *data;
    size_t data_len;

    ASSERT_EQ(sl_http_chunked_parse(&c, s, strlen(s), &data, &data_len), 5);
    ASSERT_EQ(c.state, SL_CHUNKED_DONE);
    ASSERT_EQ(c.total, 0);
}

TEST(http_chunked_extensions_follow_the_grammar)
{
    static const char *const good[] = {
        "1;a\r\nx\r\n0\r\n\r\n",
        "1 ;a = b\r\nx\r\n0\r\n\r\n",
        "1;a=\"\"\r\nx\r\n0\r\n\r\n",
        "1;a=\"\\\"\";b\r\nx\r\n0;last=1\r\n\r\n",
        "1;a=\"\x80\tz\"\r\nx\r\n0\r\n\r\n",
    };
    static const char *const bad[] = {
        "1;\r\nx\r\n0\r\n\r\n",           "1 \r\nx\r\n0\r\n\r\n",      "1;a \r\nx\r\n0\r\n\r\n",
        "1;a=\r\nx\r\n0\r\n\r\n",         "1;a=\"b\r\nx\r\n0\r\n\r\n", "1;a=b c\r\nx\r\n0\r\n\r\n",
        "1;a=\"\x01\"\r\nx\r\n0\r\n\r\n", "1;a\nx\r\n0\r\n\r\n",       "1;@\r\nx\r\n0\r\n\r\n",
        "1;a=\"b\"c\r\nx\r\n0\r\n\r\n",
    };
    char out[8];
    size_t out_len;

    for (size_t i = 0; i < SL_NELEMS(good); i++) {
        ASSERT_EQ(dechunk(good[i], out, &out_len), SL_CHUNKED_DONE);
        ASSERT_MEMEQ(out, out_len, "x");
    }
    for (size_t i = 0; i < SL_NELEMS(bad); i++) {
        if (dechunk(bad[i], out, &out_len) != SL_ERROR) {
            sl_test_fail(__FILE__, __LINE__, "accepted extension #%zu", i);
            return;
        }
    }
}

TEST(http_chunked_bad_framing_fails)
{
    static const char *const bad[] = {
        "\r\nx\r\n0\r\n\r\n",    /* no size */
        "g\r\nx\r\n0\r\n\r\n",   /* not hex */
        "0x1\r\nx\r\n0\r\n\r\n", /* no prefix */
        "-1\r\nx\r\n0\r\n\r\n",
        "+1\r\nx\r\n0\r\n\r\n",
        "1\nx\r\n0\r\n\r\n",    /* LF-only size line */
        "1\r\nxy\r\n0\r\n\r\n", /* data longer than the size */
        "1\r\nx\n0\r\n\r\n",    /* LF-only after data */
        "1\r\nx0\r\n\r\n",      /* no CRLF after data */
        "1\r\nx\r\r\n0\r\n\r\n",
        "0\r\n\n",
        "0\r\n\r\r",
        "1\rx\r\n0\r\n\r\n",
        " 1\r\nx\r\n0\r\n\r\n",
    };
    char out[8];
    size_t out_len;

    for (size_t i = 0; i < SL_NELEMS(bad); i++) {
        if (dechunk(bad[i], out, &out_len) != SL_ERROR) {
            sl_test_fail(__FILE__, __LINE__, "accepted framing #%zu", i);
            return;
        }
    }
}

TEST(http_chunked_trailers_are_validated)
{
    static const char *const bad[] = {
        "0\r\nX : y\r\n\r\n",   "0\r\n: y\r\n\r\n", "0\r\nX: a\r\n b\r\n\r\n",
        "0\r\nX: a\rb\r\n\r\n", "0\r\nX y\r\n\r\n", "0\r\nX: y\n\r\n",
    };
    char out[8];
    size_t out_len, data_len;
    sl_http_chunked_t c = {0};
    const char *data;

    ASSERT_EQ(dechunk("0\r\nA: 1\r\nB:\t2 \r\n\r\n", out, &out_len), SL_CHUNKED_DONE);
    ASSERT_EQ(out_len, 0);
    for (size_t i = 0; i < SL_NELEMS(bad); i++) {
        if (dechunk(bad[i], out, &out_len) != SL_ERROR) {
            sl_test_fail(__FILE__, __LINE__, "accepted trailer #%zu", i);
            return;
        }
    }
    /* A NUL cannot go through strlen. */
    ASSERT_EQ(sl_http_chunked_parse(&c, "0\r\nX: a\0\r\n\r\n", 12, &data, &data_len), SL_ERROR);
}

TEST(http_chunked_size_overflow_fails)
{
    char out[8];
    size_t out_len;
    sl_http_chunked_t c = {0};
    const char *data;
    size_t data_len;

    ASSERT_EQ(dechunk("10000000000000000\r\n", out, &out_len), SL_ERROR);
    ASSERT_EQ(dechunk("8000000000000000\r\n", out, &out_len), SL_ERROR);
    ASSERT_EQ(dechunk("fffffffffffffffff\r\n", out, &out_len), SL_ERROR);
    ASSERT_EQ(sl_http_chunked_parse(&c, "7fffffffffffffff\r\nab", 20, &data, &data_len), 20);
    ASSERT_EQ(c.remaining, (uint64_t)INT64_MAX - 2);
    ASSERT_MEMEQ(data, data_len, "ab");
}

TEST(http_chunked_line_and_trailer_limits)
{
    static char buf[20000];
    sl_http_chunked_t c = {0};
    const char *data;
    size_t data_len, n;

    /* A size line of 4096 bytes with its CRLF is the most allowed. */
    memset(buf, '0', 4093);
    memcpy(buf + 4093, "1\r\n", 3);
    ASSERT_EQ(sl_http_chunked_parse(&c, buf, 4096, &data, &data_len), 4096);
    memset(&c, 0, sizeof(c));
    memcpy(buf + 4094, "1\r\n", 3);
    ASSERT_EQ(sl_http_chunked_parse(&c, buf, 4097, &data, &data_len), SL_ERROR);

    /* Trailers up to 16 KiB, final CRLF included. */
    memset(&c, 0, sizeof(c));
    memcpy(buf, "0\r\nX: ", 6);
    memset(buf + 6, 'v', 16384 - 4);
    memcpy(buf + 16384 - 1, "\r\n\r\n", 4);
    n = 16384 + 3;
    ASSERT_EQ(sl_http_chunked_parse(&c, buf, n, &data, &data_len), (int)n);
    ASSERT_EQ(c.state, SL_CHUNKED_DONE);
    memset(&c, 0, sizeof(c));
    memcpy(buf + 16384, "\r\n\r\n", 4);
    buf[16384 - 1] = 'v';
    ASSERT_EQ(sl_http_chunked_parse(&c, buf, n + 1, &data, &data_len), SL_ERROR);
}

TEST(http_chunked_errors_are_sticky)
{
    sl_http_chunked_t c = {0};
    const char *data;
    size_t data_len;

    ASSERT_EQ(sl_http_chunked_parse(&c, "z", 1, &data, &data_len), SL_ERROR);
    ASSERT_EQ(sl_http_chunked_parse(&c, "0\r\n\r\n", 5, &data, &data_len), SL_ERROR);
    ASSERT_EQ(sl_http_chunked_parse(&c, "", 0, &data, &data_len), SL_ERROR);
}
