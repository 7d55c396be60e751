/* router.c: tests for core/router.c: matching, Kong's priorities and path normalization. */
#include <stdlib.h>

#include "../../core/router.h"

#include "test.h"

/* Routes are written as specs and copied into a static table; "~" starts a
 * regex path, as in Kong's declarative format. */
typedef struct {
    const char *name;
    const char *values[4];
} hspec_t;

typedef struct {
    const char *name;
    const char *hosts[4];
    const char *paths[4];
    unsigned methods;
    const char *other_methods[2];
    hspec_t headers[3];
    unsigned protocols;
    int regex_priority;
} spec_t;

#define MAX_ROUTES 16

static struct {
    sl_route_t routes[MAX_ROUTES];
    sl_route_t *ptrs[MAX_ROUTES];
    char *hosts[MAX_ROUTES][4];
    sl_route_path_t paths[MAX_ROUTES][4];
    char *other[MAX_ROUTES][2];
    sl_route_header_t headers[MAX_ROUTES][3];
    char *values[MAX_ROUTES][3][4];
    size_t n;
} T;

static char err[512];

static void reset(void)
{
    memset(&T, 0, sizeof(T));
    err[0] = '\0';
}

static sl_route_t *add(spec_t s)
{
    size_t i = T.n++;
    sl_route_t *r = &T.routes[i];

    r->name = (char *)s.name;
    r->index = i;
    r->hosts = T.hosts[i];
    while (r->nhosts < 4 && s.hosts[r->nhosts] != NULL) {
        r->hosts[r->nhosts] = (char *)s.hosts[r->nhosts];
        r->nhosts++;
    }
    r->paths = T.paths[i];
    while (r->npaths < 4 && s.paths[r->npaths] != NULL) {
        const char *p = s.paths[r->npaths];
        sl_route_path_t *d = &r->paths[r->npaths++];
        d->kind = p[0] == '~' ? SL_PATH_REGEX : SL_PATH_PREFIX;
        d->value = (char *)p + (p[0] == '~');
        d->len = strlen(d->value);
    }
    r->methods = s.methods;
    r->other_methods = T.other[i];
    while (r->nother_methods < 2 && s.other_methods[r->nother_methods] != NULL) {
        r->other_methods[r->nother_methods] = (char *)s.other_methods[r->nother_methods];
        r->nother_methods++;
    }
    r->headers = T.headers[i];
    while (r->nheaders < 3 && s.headers[r->nheaders].name != NULL) {
        sl_route_header_t *h = &r->headers[r->nheaders];
        h->name = (char *)s.headers[r->nheaders].name;
        h->name_len = strlen(h->name);
        h->values = T.values[i][r->nheaders];
        while (h->nvalues < 4 && s.headers[r->nheaders].values[h->nvalues] != NULL) {
            h->values[h->nvalues] = (char *)s.headers[r->nheaders].values[h->nvalues];
            h->nvalues++;
        }
        r->nheaders++;
    }
    r->protocols = s.protocols;
    r->regex_priority = s.regex_priority;
    T.ptrs[i] = r;
    return r;
}

#define ROUTE(...) add((spec_t){__VA_ARGS__})

static sl_router_t *build(void)
{
    return sl_router_create(T.ptrs, T.n, err, sizeof(err));
}

/* A request; headers are "name: value" lines. */
typedef struct {
    const char *method;
    const char *host;
    uint16_t port;
    const char *path;
    const char *headers[4];
    int protocol;
} rspec_t;

static sl_router_match_t M;
static const sl_route_t bogus;

static int method_id(const char *m)
{
    static const struct {
        const char *name;
        int id;
    } ids[] = {{"GET", SL_HTTP_GET},        {"HEAD", SL_HTTP_HEAD},     {"POST", SL_HTTP_POST},
               {"PUT", SL_HTTP_PUT},        {"DELETE", SL_HTTP_DELETE}, {"PATCH", SL_HTTP_PATCH},
               {"OPTIONS", SL_HTTP_OPTIONS}};

    for (size_t i = 0; i < SL_NELEMS(ids); i++) {
        if (strcmp(m, ids[i].name) == 0)
            return ids[i].id;
    }
    return SL_HTTP_OTHER;
}

/* Matches q and returns the route, or NULL when the router declines. */
static const sl_route_t *go(const sl_router_t *rt, rspec_t q)
{
    sl_http_header_t hs[4];
    sl_router_req_t req = {0};

    req.method = q.method ? q.method : "GET";
    req.method_len = strlen(req.method);
    req.method_id = method_id(req.method);
    req.host = q.host;
    req.host_len = q.host ? strlen(q.host) : 0;
    req.port = q.port ? q.port : 80;
    req.path = q.path ? q.path : "/";
    req.path_len = strlen(req.path);
    req.protocol = q.protocol;
    for (; req.nheaders < 4 && q.headers[req.nheaders] != NULL; req.nheaders++) {
        const char *line = q.headers[req.nheaders];
        const char *colon = strchr(line, ':');
        sl_http_header_t *h = &hs[req.nheaders];
        h->name = line;
        h->name_len = (uint32_t)(colon - line);
        h->value = colon + 2;
        h->value_len = (uint32_t)strlen(colon + 2);
    }
    req.headers = hs;
    memset(&M, 0xff, sizeof(M));
    int rc = sl_router_match(rt, &req, &M);
    if (rc == SL_DECLINED)
        return NULL;
    /* Any other code is a bug: return a route no test expects. */
    return rc == SL_OK ? M.route : &bogus;
}

#define GO(...) go(rt, (rspec_t){__VA_ARGS__})

TEST(router_prefix_is_a_plain_byte_prefix)
{
    reset();
    sl_route_t *foo = ROUTE(.paths = {"/foo"});
    sl_router_t *rt = build();
    ASSERT(rt != NULL);
    ASSERT(GO(.path = "/foo") == foo);
    ASSERT_EQ(M.matched_len, 4);
    ASSERT_EQ(M.ncaptures, 0);
    ASSERT(M.capture_names == NULL);
    ASSERT(GO(.path = "/foobar") == foo);
    ASSERT(GO(.path = "/foo/x") == foo);
    ASSERT(GO(.path = "/fo") == NULL);
    ASSERT(GO(.path = "/Foo") == NULL);
    ASSERT(GO(.path = "/") == NULL);
    sl_router_free(rt);
}

TEST(router_declines_when_nothing_matches)
{
    reset();
    ROUTE(.hosts = {"example.com"}, .paths = {"/a"});
    sl_router_t *rt = build();
    ASSERT(rt != NULL);
    ASSERT(GO(.host = "example.org", .path = "/a") == NULL);
    ASSERT(GO(.host = "example.com", .path = "/b") == NULL);
    ASSERT(GO(.path = "/a") == NULL);
    sl_router_free(rt);

    /* An empty table declines everything. */
    rt = sl_router_create(NULL, 0, err, sizeof(err));
    ASSERT(rt != NULL);
    ASSERT(GO(.host = "example.com") == NULL);
    sl_router_free(rt);
}

TEST(router_route_without_paths_matches_any_path_with_zero_length)
{
    reset();
    sl_route_t *any = ROUTE(.hosts = {"example.com"});
    sl_router_t *rt = build();
    ASSERT(GO(.host = "example.com", .path = "/anything/at/all") == any);
    ASSERT_EQ(M.matched_len, 0);
    ASSERT_EQ(M.ncaptures, 0);
    ASSERT(GO(.host = "other.com", .path = "/") == NULL);
    sl_router_free(rt);
}

TEST(router_exact_host_ignores_case_and_requests_without_host_skip_it)
{
    reset();
    sl_route_t *a = ROUTE(.hosts = {"api.example.com"});
    sl_route_t *catchall = ROUTE(.paths = {"/"});
    sl_router_t *rt = build();
    ASSERT(GO(.host = "API.Example.COM") == a);
    ASSERT(GO(.host = "api.example.co") == catchall);
    ASSERT(GO(.host = "xapi.example.com") == catchall);
    ASSERT(GO(.host = NULL) == catchall);
    sl_router_free(rt);
}

TEST(router_leading_wildcard_matches_one_or_more_labels)
{
    reset();
    sl_route_t *w = ROUTE(.hosts = {"*.example.com"});
    sl_router_t *rt = build();
    ASSERT(GO(.host = "a.example.com") == w);
    ASSERT(GO(.host = "a.b.example.com") == w);
    ASSERT(GO(.host = "A.EXAMPLE.com") == w);
    ASSERT(GO(.host = "example.com") == NULL);
    ASSERT(GO(.host = "aexample.com") == NULL);
    ASSERT(GO(.host = ".example.com") == NULL);
    ASSERT(GO(.host = "a.example.com.evil") == NULL);
    sl_router_free(rt);
}

TEST(router_trailing_wildcard_matches_any_tail)
{
    reset();
    sl_route_t *w = ROUTE(.hosts = {"example.*"});
    sl_router_t *rt = build();
    ASSERT(GO(.host = "example.com") == w);
    ASSERT(GO(.host = "example.org") == w);
    ASSERT(GO(.host = "example.co.uk") == w);
    ASSERT(GO(.host = "Example.Net") == w);
    ASSERT(GO(.host = "example") == NULL);
    ASSERT(GO(.host = "example.") == NULL);
    ASSERT(GO(.host = "www.example.com") == NULL);
    ASSERT(GO(.host = "examples.com") == NULL);
    sl_router_free(rt);
}

TEST(router_host_with_port_needs_that_port)
{
    reset();
    sl_route_t *p8000 = ROUTE(.hosts = {"example.com:8000"});
    sl_route_t *anyport = ROUTE(.hosts = {"other.com"});
    sl_route_t *wild = ROUTE(.hosts = {"*.example.com:8443"});
    sl_route_t *v6 = ROUTE(.hosts = {"[::1]:9000"});
    sl_router_t *rt = build();
    ASSERT(rt != NULL);
    ASSERT(GO(.host = "example.com", .port = 8000) == p8000);
    ASSERT(GO(.host = "example.com", .port = 9000) == NULL);
    ASSERT(GO(.host = "other.com", .port = 8000) == anyport);
    ASSERT(GO(.host = "other.com", .port = 1) == anyport);
    ASSERT(GO(.host = "a.example.com", .port = 8443) == wild);
    ASSERT(GO(.host = "a.example.com", .port = 8000) == NULL);
    ASSERT(GO(.host = "[::1]", .port = 9000) == v6);
    ASSERT(GO(.host = "[::1]", .port = 9001) == NULL);
    sl_router_free(rt);
}

TEST(router_methods_by_id_and_by_text)
{
    reset();
    sl_route_t *get = ROUTE(.paths = {"/a"}, .methods = SL_HTTP_GET | SL_HTTP_HEAD);
    sl_route_t *purge = ROUTE(.paths = {"/a"}, .other_methods = {"PURGE"});
    sl_route_t *any = ROUTE(.paths = {"/a"});
    sl_router_t *rt = build();
    ASSERT(GO(.method = "GET", .path = "/a") == get);
    ASSERT(GO(.method = "HEAD", .path = "/a") == get);
    ASSERT(GO(.method = "PURGE", .path = "/a") == purge);
    ASSERT(GO(.method = "PURGEX", .path = "/a") == any);
    ASSERT(GO(.method = "purge", .path = "/a") == any);
    ASSERT(GO(.method = "POST", .path = "/a") == any);
    sl_router_free(rt);
}

TEST(router_headers_plain_values_ignore_case_and_any_value_matches)
{
    reset();
    sl_route_t *v = ROUTE(.paths = {"/"}, .headers = {{"x-version", {"v1", "v2"}}});
    sl_route_t *base = ROUTE(.paths = {"/"});
    sl_router_t *rt = build();
    ASSERT(GO(.headers = {"X-Version: V1"}) == v);
    ASSERT(GO(.headers = {"x-version: v2"}) == v);
    ASSERT(GO(.headers = {"x-version: v3"}) == base);
    ASSERT(GO(.headers = {"x-version: v1x"}) == base);
    ASSERT(GO(.headers = {"x-other: v1"}) == base);
    ASSERT(GO() == base);
    /* A repeated header matches when any of its lines does. */
    ASSERT(GO(.headers = {"x-version: v9", "X-VERSION: v2"}) == v);
    sl_router_free(rt);
}

TEST(router_headers_regex_and_all_names_required)
{
    reset();
    sl_route_t *re = ROUTE(.paths = {"/"}, .headers = {{"x-version", {"~*^v[0-9]+$"}},
                                                       {"x-tenant", {"acme", "~^b.*z$"}}});
    sl_route_t *base = ROUTE(.paths = {"/"});
    sl_router_t *rt = build();
    ASSERT(rt != NULL);
    ASSERT(GO(.headers = {"x-version: v12", "x-tenant: acme"}) == re);
    /* Header regexes are caseless, like Kong's lower-cased comparison. */
    ASSERT(GO(.headers = {"x-version: V12", "x-tenant: BUZZ"}) == re);
    ASSERT(GO(.headers = {"x-version: v12x", "x-tenant: acme"}) == base);
    ASSERT(GO(.headers = {"x-version: v12"}) == base);
    ASSERT(GO(.headers = {"x-tenant: acme"}) == base);
    sl_router_free(rt);
}

TEST(router_protocols)
{
    reset();
    sl_route_t *tls = ROUTE(.paths = {"/"}, .protocols = 1u << SL_PROTO_HTTPS);
    sl_route_t *both =
        ROUTE(.paths = {"/"}, .protocols = 1u << SL_PROTO_HTTP | 1u << SL_PROTO_HTTPS);
    sl_router_t *rt = build();
    ASSERT(GO(.protocol = SL_PROTO_HTTPS) == tls);
    ASSERT(GO(.protocol = SL_PROTO_HTTP) == both);
    sl_router_free(rt);
}

/* Rule 1: more attribute kinds set wins over everything after it. */
TEST(router_priority_more_attribute_kinds_first)
{
    reset();
    sl_route_t *path_only = ROUTE(.paths = {"/a/very/long/prefix"});
    sl_route_t *path_method = ROUTE(.paths = {"/"}, .methods = SL_HTTP_GET);
    sl_route_t *host_path_method =
        ROUTE(.hosts = {"*.example.com"}, .paths = {"/"}, .methods = SL_HTTP_GET);
    sl_router_t *rt = build();
    ASSERT(GO(.host = "x.org", .method = "POST", .path = "/a/very/long/prefix") == path_only);
    ASSERT(GO(.host = "x.org", .method = "GET", .path = "/a/very/long/prefix") == path_method);
    ASSERT(GO(.host = "a.example.com", .method = "GET", .path = "/a/very/long/prefix") ==
           host_path_method);
    sl_router_free(rt);

    /* A route without hosts still beats a host route with fewer kinds. */
    reset();
    sl_route_t *host_path = ROUTE(.hosts = {"example.com"}, .paths = {"/"});
    sl_route_t *three = ROUTE(.paths = {"/"}, .methods = SL_HTTP_GET, .headers = {{"x-a", {"1"}}});
    rt = build();
    ASSERT(GO(.host = "example.com", .headers = {"x-a: 1"}) == three);
    ASSERT(GO(.host = "example.com") == host_path);
    sl_router_free(rt);
}

/* Rule 2: an exact host beats a wildcard one, even with a regex path. */
TEST(router_priority_plain_host_over_wildcard)
{
    reset();
    sl_route_t *wild = ROUTE(.hosts = {"*.example.com"}, .paths = {"~/api"});
    sl_route_t *wild2 = ROUTE(.hosts = {"api.*"}, .paths = {"/api/v1/users"});
    sl_route_t *plain = ROUTE(.hosts = {"api.example.com"}, .paths = {"/"});
    sl_router_t *rt = build();
    ASSERT(GO(.host = "api.example.com", .path = "/api/v1/users") == plain);
    ASSERT(GO(.host = "www.example.com", .path = "/api/v1/users") == wild);
    ASSERT(GO(.host = "api.example.org", .path = "/api/v1/users") == wild2);
    sl_router_free(rt);
}

/* Rule 3: more headers beat a regex path and a longer prefix. */
TEST(router_priority_more_headers_first)
{
    reset();
    sl_route_t *one = ROUTE(.paths = {"~/a/b"}, .headers = {{"x-a", {"1"}}}, .regex_priority = 9);
    sl_route_t *two = ROUTE(.paths = {"/"}, .headers = {{"x-a", {"1"}}, {"x-b", {"2"}}});
    sl_router_t *rt = build();
    ASSERT(GO(.path = "/a/b", .headers = {"x-a: 1", "x-b: 2"}) == two);
    ASSERT(GO(.path = "/a/b", .headers = {"x-a: 1"}) == one);
    sl_router_free(rt);
}

/* Rule 4: a regex path beats a prefix path, however long. */
TEST(router_priority_regex_over_prefix)
{
    reset();
    ROUTE(.paths = {"/users/123/profile"});
    sl_route_t *regex = ROUTE(.paths = {"~/users/\\d+"});
    sl_router_t *rt = build();
    ASSERT(GO(.path = "/users/123/profile") == regex);
    ASSERT_EQ(M.matched_len, 10);
    ASSERT(GO(.path = "/users/abc/profile") == NULL);
    sl_router_free(rt);

    /* Even the lowest regex_priority. */
    reset();
    ROUTE(.paths = {"/users/123/profile"});
    regex = ROUTE(.paths = {"~/users/\\d"}, .regex_priority = INT32_MIN);
    rt = build();
    ASSERT(GO(.path = "/users/123/profile") == regex);
    sl_router_free(rt);
}

/* Rule 5, regexes: the higher regex_priority wins, whatever the order. */
TEST(router_priority_regex_priority)
{
    reset();
    sl_route_t *low = ROUTE(.paths = {"~/a"}, .regex_priority = -5);
    sl_route_t *mid = ROUTE(.paths = {"~/a/b"});
    sl_route_t *high = ROUTE(.paths = {"~/a/b/c"}, .regex_priority = 10);
    sl_router_t *rt = build();
    ASSERT(GO(.path = "/a/b/c") == high);
    ASSERT(GO(.path = "/a/b/x") == mid);
    ASSERT(GO(.path = "/a/x") == low);
    sl_router_free(rt);
}

/* Rule 5, prefixes: the longer prefix wins, per path of a route. */
TEST(router_priority_longer_prefix)
{
    reset();
    sl_route_t *shortp = ROUTE(.paths = {"/a"});
    sl_route_t *mid = ROUTE(.paths = {"/a/b"});
    sl_route_t *multi = ROUTE(.paths = {"/x", "/a/b/c"});
    sl_router_t *rt = build();
    ASSERT(GO(.path = "/a/b/c/d") == multi);
    ASSERT_EQ(M.matched_len, 6);
    ASSERT(GO(.path = "/a/b/x") == mid);
    ASSERT_EQ(M.matched_len, 4);
    ASSERT(GO(.path = "/a/x") == shortp);
    ASSERT(GO(.path = "/x/y") == multi);
    ASSERT_EQ(M.matched_len, 2);
    sl_router_free(rt);
}

/* Rule 6: on a full tie the earlier route in the file wins. */
TEST(router_priority_earlier_route_breaks_ties)
{
    reset();
    sl_route_t *first = ROUTE(.hosts = {"example.com"}, .paths = {"/a"});
    ROUTE(.hosts = {"example.com"}, .paths = {"/a"});
    sl_route_t *rx1 = ROUTE(.paths = {"~/r"});
    ROUTE(.paths = {"~/r"});
    sl_router_t *rt = build();
    ASSERT(GO(.host = "example.com", .path = "/a") == first);
    ASSERT(GO(.path = "/r") == rx1);
    sl_router_free(rt);

    /* The order is the route's index, not its position in the array. */
    reset();
    sl_route_t *a = ROUTE(.paths = {"/a"});
    sl_route_t *b = ROUTE(.paths = {"/a"});
    a->index = 7;
    b->index = 3;
    rt = build();
    ASSERT(GO(.path = "/a") == b);
    sl_router_free(rt);

    /* Ties across buckets too: "a.com:8080" and "a.com" are searched apart. */
    reset();
    sl_route_t *ported = ROUTE(.hosts = {"a.com:8080"}, .paths = {"/"});
    sl_route_t *portless = ROUTE(.hosts = {"a.com"}, .paths = {"/"});
    rt = build();
    ASSERT(GO(.host = "a.com", .port = 8080) == ported);
    ASSERT(GO(.host = "a.com", .port = 8081) == portless);
    sl_router_free(rt);
}

TEST(router_regex_captures_and_names)
{
    reset();
    sl_route_t *u = ROUTE(.paths = {"~/users/(?<id>\\d+)(/(\\w+))?(?<rest>/.*)?"});
    sl_route_t *plain = ROUTE(.paths = {"~/plain/(\\d+)"});
    sl_router_t *rt = build();
    ASSERT(rt != NULL);

    ASSERT(GO(.path = "/users/42/posts") == u);
    ASSERT_EQ(M.ncaptures, 5);
    ASSERT_EQ(M.matched_len, 15);
    ASSERT_EQ(M.captures[0], 0);
    ASSERT_EQ(M.captures[1], 15);
    ASSERT_EQ(M.captures[2], 7); /* id */
    ASSERT_EQ(M.captures[3], 9);
    ASSERT_EQ(M.captures[4], 9);
    ASSERT_EQ(M.captures[5], 15);
    ASSERT_EQ(M.captures[6], 10);
    ASSERT_EQ(M.captures[7], 15);
    ASSERT_EQ(M.captures[8], -1); /* rest did not take part */
    ASSERT_EQ(M.captures[9], -1);
    ASSERT(M.capture_names != NULL);
    ASSERT(M.capture_names[0] == NULL);
    ASSERT_STREQ(M.capture_names[1], "id");
    ASSERT(M.capture_names[2] == NULL);
    ASSERT(M.capture_names[3] == NULL);
    ASSERT_STREQ(M.capture_names[4], "rest");
    ASSERT(M.capture_names[5] == NULL);

    /* The regex need not match the whole path: matched_len is where it ends. */
    ASSERT(GO(.path = "/plain/7abc") == plain);
    ASSERT_EQ(M.ncaptures, 2);
    ASSERT_EQ(M.matched_len, 8);
    ASSERT_EQ(M.captures[2], 7);
    ASSERT_EQ(M.captures[3], 8);
    ASSERT(M.capture_names == NULL);
    sl_router_free(rt);
}

TEST(router_regex_is_anchored_at_the_start)
{
    reset();
    sl_route_t *r = ROUTE(.paths = {"~/foo|/bar"});
    sl_router_t *rt = build();
    ASSERT(GO(.path = "/foo") == r);
    ASSERT(GO(.path = "/bar/x") == r);
    ASSERT(GO(.path = "/x/foo") == NULL);
    ASSERT(GO(.path = "/x/bar") == NULL);
    sl_router_free(rt);
}

TEST(router_a_worse_route_does_not_hide_a_better_one_in_another_bucket)
{
    reset();
    sl_route_t *exact = ROUTE(.hosts = {"a.example.com"}, .paths = {"/"});
    sl_route_t *wild = ROUTE(.hosts = {"*.example.com"}, .paths = {"/"}, .methods = SL_HTTP_POST);
    sl_route_t *port =
        ROUTE(.hosts = {"a.example.com:8080"}, .paths = {"/"}, .headers = {{"x-a", {"1"}}});
    sl_router_t *rt = build();
    ASSERT(GO(.host = "a.example.com", .method = "GET") == exact);
    ASSERT(GO(.host = "a.example.com", .method = "POST") == wild);
    ASSERT(GO(.host = "a.example.com", .port = 8080, .headers = {"x-a: 1"}) == port);
    ASSERT(GO(.host = "a.example.com", .port = 8080, .method = "POST", .headers = {"x-a: 1"}) ==
           port);
    sl_router_free(rt);
}

TEST(router_create_reports_bad_regexes_and_hosts)
{
    reset();
    ROUTE(.name = "ok", .paths = {"/"});
    ROUTE(.name = "bad", .paths = {"~/(foo"});
    ASSERT(build() == NULL);
    ASSERT_STREQ(err, "route 'bad': invalid regex '~/(foo' in paths: missing closing "
                      "parenthesis at offset 5");

    reset();
    ROUTE(.paths = {"/"}, .headers = {{"x-v", {"~*(v"}}});
    ASSERT(build() == NULL);
    ASSERT_STREQ(err, "route #0: invalid regex '~*(v' in headers.x-v: missing closing "
                      "parenthesis at offset 2");

    reset();
    ROUTE(.name = "h", .hosts = {"a.*.com"});
    ASSERT(build() == NULL);
    ASSERT(strstr(err, "route 'h': invalid host 'a.*.com'") == err);

    const char *bad_hosts[] = {"*",       "*example.com", "example*", "*.a.*", "a.com:0",
                               "a.com:x", "a.com:70000",  ":80",      "[::1"};
    for (size_t i = 0; i < SL_NELEMS(bad_hosts); i++) {
        reset();
        ROUTE(.hosts = {bad_hosts[i]});
        sl_router_t *rt = build();
        ASSERT(rt == NULL);
    }

    reset();
    ROUTE(.name = "groups", .paths = {"~/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)(m)(n)(o)(p)"});
    ASSERT(build() == NULL);
    ASSERT(strstr(err, "16 capture groups") != NULL);
}

static int normalize(const char *in, char *out)
{
    char buf[256];
    size_t len = strlen(in);

    memcpy(buf, in, len);
    int n = sl_router_normalize_path(buf, len, buf);
    if (n >= 0) {
        memcpy(out, buf, (size_t)n);
        out[n] = '\0';
    }
    return n;
}

TEST(router_normalize_path)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"/%41%62c", "/Abc"},
        {"/a%2fb", "/a%2Fb"},
        {"/%7e%2D%2e%5F", "/~-._"},
        {"/%c3%a9", "/%C3%A9"},
        {"/a/./b/../c", "/a/c"},
        {"/../x", "/x"},
        {"/../../x/..", "/"},
        {"/a/b/..", "/a/"},
        {"/a/.", "/a/"},
        {"/a/%2e%2E/b", "/b"},
        {"/a//b/../c", "/a//c"},
        {"/a/..b/.c", "/a/..b/.c"},
        {"/", "/"},
        {"", ""},
        {"a/../b", "/b"},
    };
    char out[256];

    for (size_t i = 0; i < SL_NELEMS(cases); i++) {
        int n = normalize(cases[i].in, out);
        ASSERT(n >= 0);
        ASSERT_STREQ(out, cases[i].out);
    }
    ASSERT_EQ(normalize("/a%zz", out), SL_ERROR);
    ASSERT_EQ(normalize("/a%4", out), SL_ERROR);
    ASSERT_EQ(normalize("/a%", out), SL_ERROR);

    /* Into a separate buffer, leaving the input alone. */
    const char *in = "/x/%61/../y";
    char dst[32];
    ASSERT_EQ(sl_router_normalize_path(in, strlen(in), dst), 4);
    ASSERT_MEMEQ(dst, 4, "/x/y");
}

/* 10,000 routes over 1,000 hosts: each host has ten nested prefixes, and a
 * no-host fallback and a wildcard sit beside them. */
TEST(router_ten_thousand_routes)
{
    enum { HOSTS = 1000, PER_HOST = 10, N = HOSTS * PER_HOST + 2 };
    sl_route_t *routes = calloc(N, sizeof(*routes));
    sl_route_t **ptrs = calloc(N, sizeof(*ptrs));
    char **hosts = calloc(N, sizeof(*hosts));
    sl_route_path_t *paths = calloc(N, sizeof(*paths));
    char *strings = calloc(N, 64);
    ASSERT(routes && ptrs && hosts && paths && strings);

    for (size_t i = 0; i < N; i++) {
        sl_route_t *r = &routes[i];
        char *s = strings + 64 * i;
        r->index = i;
        ptrs[i] = r;
        r->paths = &paths[i];
        r->npaths = 1;
        if (i < HOSTS * PER_HOST) {
            snprintf(s, 32, "h%zu.example.com", i / PER_HOST);
            hosts[i] = s;
            r->hosts = &hosts[i];
            r->nhosts = 1;
            /* "/v/1", "/v/1/2", ... so that each prefix nests in the previous. */
            char *p = s + 32, *e = p;
            for (size_t k = 0; k <= i % PER_HOST; k++)
                e += sprintf(e, "/%zu", k);
            paths[i].value = p;
            paths[i].len = (size_t)(e - p);
        } else if (i == HOSTS * PER_HOST) {
            hosts[i] = "*.example.com";
            r->hosts = &hosts[i];
            r->nhosts = 1;
            paths[i].value = "/";
            paths[i].len = 1;
        } else {
            paths[i].value = "/";
            paths[i].len = 1;
        }
    }
    sl_router_t *rt = sl_router_create(ptrs, N, err, sizeof(err));
    ASSERT(rt != NULL);

    for (size_t h = 0; h < HOSTS; h += 37) {
        char host[32];
        snprintf(host, sizeof(host), "H%zu.Example.com", h);
        ASSERT(GO(.host = host, .path = "/0/1/2/3/4/5/6/7/8/9/10") == &routes[h * PER_HOST + 9]);
        ASSERT_EQ(M.matched_len, 20);
        ASSERT(GO(.host = host, .path = "/0/1/2/x") == &routes[h * PER_HOST + 2]);
        ASSERT(GO(.host = host, .path = "/0") == &routes[h * PER_HOST]);
        ASSERT(GO(.host = host, .path = "/1") == &routes[HOSTS * PER_HOST]);
    }
    ASSERT(GO(.host = "h1000.example.com", .path = "/0") == &routes[HOSTS * PER_HOST]);
    ASSERT(GO(.host = "example.com", .path = "/0") == &routes[HOSTS * PER_HOST + 1]);
    ASSERT(GO(.path = "/0") == &routes[HOSTS * PER_HOST + 1]);

    sl_router_free(rt);
    free(strings);
    free(paths);
    free(hosts);
    free(ptrs);
    free(routes);
}

/* More nested prefixes than the search keeps on its stack: the nodes past it
 * are offered in another order, which must not change the answer. */
TEST(router_deeply_nested_prefixes)
{
    enum { N = 40 };
    static sl_route_t routes[N];
    static sl_route_t *ptrs[N];
    static sl_route_path_t paths[N];
    static sl_route_header_t header = {.name = "x-a", .name_len = 3, .nvalues = 1};
    static char *values[] = {"1"};
    static char deep[2 * N + 1];

    for (size_t i = 0; i < N; i++) {
        deep[2 * i] = '/';
        deep[2 * i + 1] = 'x';
    }
    header.values = values;
    memset(routes, 0, sizeof(routes));
    for (size_t i = 0; i < N; i++) {
        routes[i].index = i;
        routes[i].paths = &paths[i];
        routes[i].npaths = 1;
        paths[i].value = deep;
        paths[i].len = 2 * (i + 1);
        routes[i].methods = i % 2 ? SL_HTTP_POST : SL_HTTP_GET;
        ptrs[i] = &routes[i];
    }
    /* The shallowest route also wants a header: one more kind outranks depth. */
    routes[0].headers = &header;
    routes[0].nheaders = 1;
    sl_router_t *rt = sl_router_create(ptrs, N, err, sizeof(err));
    ASSERT(rt != NULL);
    ASSERT(GO(.method = "GET", .path = deep) == &routes[N - 2]);
    ASSERT_EQ(M.matched_len, 2 * (N - 1));
    ASSERT(GO(.method = "POST", .path = deep) == &routes[N - 1]);
    ASSERT(GO(.method = "GET", .path = "/x/x/x/x/x") == &routes[4]);
    ASSERT(GO(.method = "GET", .path = deep, .headers = {"x-a: 1"}) == &routes[0]);
    ASSERT_EQ(M.matched_len, 2);
    ASSERT(GO(.method = "PUT", .path = deep) == NULL);
    sl_router_free(rt);
}

/* Wildcards of different lengths on a long host: the lookups skipped for
 * keys longer than any configured one must not hide the others. */
TEST(router_wildcards_on_a_long_host)
{
    reset();
    sl_route_t *tail = ROUTE(.hosts = {"*.com"}, .paths = {"/t"});
    sl_route_t *head = ROUTE(.hosts = {"ab.*"}, .paths = {"/h"});
    sl_route_t *longer = ROUTE(.hosts = {"*.cdefghijklmnopqrstuvwxyz.com"}, .paths = {"/l"});
    sl_router_t *rt = build();
    char host[4096];
    size_t n = 0;

    n += (size_t)sprintf(host + n, "ab");
    while (n < sizeof(host) - 64)
        n += (size_t)sprintf(host + n, ".a");
    sprintf(host + n, ".cdefghijklmnopqrstuvwxyz.com");
    ASSERT(GO(.host = host, .path = "/t") == tail);
    ASSERT(GO(.host = host, .path = "/h") == head);
    ASSERT(GO(.host = host, .path = "/l") == longer);
    ASSERT(GO(.host = host, .path = "/x") == NULL);
    sl_router_free(rt);
}
