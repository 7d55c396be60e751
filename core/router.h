/* router.h: the compiled route table: host, path, method and header matching. */
#ifndef SL_ROUTER_H
#define SL_ROUTER_H

#include "config.h"
#include "http_parser.h"

/* What the router looks at in a request. */
typedef struct {
    int method_id;      /* SL_HTTP_* */
    const char *method; /* the token, for methods without an id */
    size_t method_len;
    const char *host; /* Host without the port, any case */
    size_t host_len;
    uint16_t port;    /* the port the request arrived on (Host's, else the listener's) */
    const char *path; /* normalized path (see sl_router_normalize_path) */
    size_t path_len;
    const sl_http_header_t *headers;
    size_t nheaders;
    int protocol; /* SL_PROTO_* of the listener */
} sl_router_req_t;

#define SL_ROUTER_MAX_CAPTURES 16

typedef struct {
    const sl_route_t *route;
    /* For strip_path: how many leading bytes of the path the route's path
     * matched (the prefix, or the whole regex match), 0 when it matched
     * without a path. */
    size_t matched_len;
    /* Regex captures as offsets into the request path: capture i spans
     * [captures[2i], captures[2i+1]); -1 when the group did not take part. */
    int ncaptures;
    int captures[2 * SL_ROUTER_MAX_CAPTURES];
    /* Names of the matched regex's groups: capture_names[i] names group i
     * (NULL for unnamed groups), ncaptures entries and then a NULL; owned by
     * the router. NULL when the regex has no named groups. */
    const char *const *capture_names;
} sl_router_match_t;

/* Compiles the routes of cf into a router. Regex paths are compiled with PCRE2
 * and JIT here. Returns NULL with a message in err (naming the route and the
 * offending value) when a regex does not compile. The router keeps pointers
 * to the routes; they must outlive it. */
sl_router_t *sl_router_create(sl_route_t **routes, size_t nroutes, char *err, size_t errlen);

void sl_router_free(sl_router_t *rt);

/* Finds the best route for req, by Kong's priority rules. Returns SL_OK and
 * fills m, or SL_DECLINED when no route matches. Does not allocate. */
int sl_router_match(const sl_router_t *rt, const sl_router_req_t *req, sl_router_match_t *m);

/* Normalizes a request path for matching as Kong does: percent-decodes
 * unreserved characters, upper-cases the hex of the other escapes and removes
 * dot segments. Writes at most len bytes to out (which may be path itself).
 * ".." above the root stays at the root. Returns the new length, or SL_ERROR
 * for a malformed escape (not followed by two hex digits). */
int sl_router_normalize_path(const char *path, size_t len, char *out);

#endif
