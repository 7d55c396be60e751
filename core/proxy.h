/* proxy.h: the life of a proxied request, from the parsed head to the last response byte. */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include "arena.h"
#include "balancer.h"
#include "conn.h"
#include "http_parser.h"
#include "router.h"
#include "upstream.h"

/* A header edit made by a plugin, applied when the head it targets is written. */
typedef struct {
    uint8_t target; /* 0: the upstream request, 1: the client response */
    uint8_t op;     /* 0: set, 1: add, 2: clear */
    uint32_t name_len;
    uint32_t value_len;
    const char *name; /* copies in the request's arena */
    const char *value;
} sl_header_op_t;

#define SL_MAX_HEADER_OPS 64

struct sl_request_s {
    sl_conn_t *c;
    sl_upconn_t *up;
    sl_request_t *next_free;
    sl_timer_t timer; /* upstream connect/write/read timeouts */

    sl_http_request_t h;
    sl_router_match_t m;
    const sl_route_t *route;
    const sl_service_t *service;
    sl_upstream_state_t *ups;
    sl_peer_t *peer;
    int peer_index;
    sl_balancer_ctx_t bctx;
    int tries;
    int state;

    /* Request body: c->in[body_start, body_scan) is body seen so far, of
     * which [body_start, body_sent) went upstream. */
    size_t head_len;
    size_t body_sent;
    size_t body_scan;
    int64_t body_left; /* Content-Length bodies */
    sl_http_chunked_t chunked;
    uint64_t body_bytes;
    unsigned body_done : 1;
    unsigned body_trimmed : 1; /* sent body bytes were dropped: no replay */

    /* Response. */
    sl_buf_t *out; /* the upstream request head, later the client response head */
    size_t out_sent;
    sl_buf_t *resp; /* upstream bytes; resp[resp_sent, resp_scan) are ready for the client */
    size_t resp_sent;
    size_t resp_scan;
    sl_http_response_t r;
    int status;
    int resp_body;
    int64_t resp_left;
    sl_http_chunked_t resp_chunked;
    unsigned resp_head_parsed : 1;
    unsigned resp_done : 1;
    unsigned dechunk : 1;     /* HTTP/1.0 client: send chunked payload raw, close after */
    unsigned keepalive : 1;   /* keep the client connection after this response */
    unsigned upstream_ok : 1; /* the upstream connection may be pooled afterwards */
    unsigned resp_bytes_seen : 1;
    uint64_t bytes_sent;

    double start;           /* when the head was complete */
    double upstream_start;  /* when the first upstream connection was asked for */
    double upstream_header; /* when the response head arrived */
    char id[33];

    /* Lua: the coroutine running this request's plugins. */
    struct lua_State *co;
    int co_ref;
    int phase;         /* SL_PHASE_* running or last run */
    int has_ctx;       /* Lua made a context for it (see sl_ffi_current_t) */
    double seq;        /* the request's number in this worker (the key of its Lua context) */
    sl_queue_t waits;  /* pending Lua waits (sleeps), cancelled if the request ends */
    sl_arena_t *arena; /* plugin-made strings; reset, not freed, between requests */
    int nops;
    sl_str_t up_method; /* overrides of what goes upstream; NULL data: unchanged */
    sl_str_t up_path;
    sl_str_t up_query;
    int client_status; /* set by a plugin in header_filter; 0: the upstream's */
    const char *lbody; /* the body of a response sluice makes, when not in out */
    size_t lbody_len;
    unsigned lua_phases; /* phases run beyond the route's (an authenticated consumer's) */
    /* sluice.service overrides for this request; 0 or NULL: the service's. */
    int connect_timeout;
    int write_timeout;
    int read_timeout;
    int retries_plus_one;    /* set_retries(n) stores n + 1 */
    const char *target_host; /* set_target: the Host text, in the arena; the address is below */
    size_t target_host_len;
    unsigned ups_set : 1; /* set_upstream chose ups */
    /* Everything above is zeroed for each request; nothing below is. */
    sl_header_op_t ops[SL_MAX_HEADER_OPS];
    struct sockaddr_storage target_addr; /* valid while target_host is set */
    socklen_t target_addrlen;
    uint16_t target_port;

    char *path; /* the normalized path (path_buf) */
    size_t path_len;
    sl_http_header_t *headers;      /* max_headers entries for the request */
    sl_http_header_t *resp_headers; /* and as many for the upstream response */
    char path_buf[];
};

/* Reads from the client; the connection's watcher calls it. Returns SL_DONE
 * when the current request ended (finished or the connection closed): the
 * caller must not touch c afterwards. */
int sl_proxy_client_read(sl_conn_t *c);

/* Continues sending to the client when its socket drains. Returns as
 * sl_proxy_client_read. */
int sl_proxy_client_write(sl_conn_t *c);

/* Client timer fired (header, body, send or keep-alive timeout). */
void sl_proxy_client_timeout(sl_conn_t *c);

/* A wait of req's plugins completed: resumes its coroutine with wait id
 * `id` (the Lua scheduler hands it to the thread that waits for it). */
void sl_proxy_lua_wake(sl_request_t *req, int id);

/* Frees what a request holds when its connection goes away. */
void sl_proxy_abort(sl_request_t *req);

#endif
