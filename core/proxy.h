/* proxy.h: the life of a proxied request, from the parsed head to the last response byte. */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include "arena.h"
#include "balancer.h"
#include "bytes.h"
#include "conn.h"
#include "http_parser.h"
#include "router.h"
#include "sl_lua.h"
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

/* One try of the upstream exchange, kept for the log phase (sl_ffi_log_info):
 * the first SL_TRY_LOG tries of a request. The last try's response head and
 * end are read from the request itself, so only a failed try records them. */
#define SL_TRY_LOG 8

typedef struct {
    const sl_peer_t *peer;
    double start;  /* when it asked for a connection */
    double header; /* when its response head arrived (a failed try); 0: none */
    double end;    /* when it failed; 0: it did not */
    int status;    /* the status of a failed try's response head; 0: none */
    int failure;   /* 0, or why it failed: 1 + the UF_* reason of proxy.c */
} sl_try_t;

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
    double try_start; /* when the current try asked for a connection */
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
    unsigned body_trimmed : 1;  /* sent body bytes were dropped: no replay */
    unsigned continue_sent : 1; /* "100 Continue" went to the client */

    /* The request body as plugins read or replaced it (sl_proxy_read_body).
     * While a plugin reads it, body bytes move from c->in to rbody as they
     * arrive, so c->in keeps only the head (and a pipelined request after the
     * body). RB_FULL: rbody is the whole body sent upstream, with a
     * Content-Length. RB_OVER: rbody holds the first bytes exactly as the
     * client sent them; they go upstream first and the rest streams from
     * c->in. */
    int rbody_state; /* RB_* (proxy.c) */
    sl_bytes_t rbody;
    size_t rbody_sent;
    sl_wait_t rbody_wait; /* the plugin thread waiting for the body; id 0: none */

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
    /* Response bodies in Lua: in filter mode sluice decodes the upstream
     * body, runs body_filter on each piece and frames what the plugins
     * return itself (chunked, or close-delimited for HTTP/1.0; a Content-
     * Length when the whole body was buffered). */
    unsigned filter : 1;      /* sluice frames the body (body_filter or buffering) */
    unsigned buffering : 1;   /* enable_buffering: whole body before header_filter */
    unsigned buffer_over : 1; /* the buffered body passed response_body_buffer_size */
    unsigned chunked_out : 1; /* the client gets chunked framing */
    unsigned filter_eof : 1;  /* body_filter ran its last call */
    unsigned chunk_set : 1;   /* a plugin replaced the current chunk (in fbuf) */
    unsigned body_set : 1;    /* header_filter replaced the buffered body (in fbuf) */
    size_t resp_body_start;   /* where the body starts in resp (buffering keeps the head) */
    sl_bytes_t ubody;         /* the buffered upstream body */
    sl_bytes_t fbuf;          /* a chunk or body a plugin set */
    const char *chunk;        /* the piece the current body_filter call sees */
    size_t chunk_len;
    int chunk_eof;
    /* Filter-mode output waiting for the client: ohead, then odata, then
     * otail (the framing, in the arrays below); osent bytes of them went out. */
    const char *odata;
    size_t odata_len;
    size_t osent;
    uint8_t ohead_len;
    uint8_t otail_len;
    uint64_t bytes_sent;

    double start;           /* when the head was complete */
    double upstream_start;  /* when the first upstream connection was asked for */
    double upstream_header; /* when the response head arrived */
    char id[33];

    /* Lua: the task running this request's plugins (its coroutine, phase,
     * number in this worker and pending waits). */
    sl_lua_task_t task;
    sl_arena_t *arena; /* plugin-made strings; reset, not freed, between requests */
    int nops;
    sl_str_t up_method; /* overrides of what goes upstream; NULL data: unchanged */
    sl_str_t up_path;
    sl_str_t up_query;
    int client_status; /* set by a plugin in header_filter; 0: the upstream's */
    const char *lbody; /* the body of a response sluice makes, when not in out */
    size_t lbody_len;
    unsigned lua_phases; /* phases run beyond the route's (an authenticated consumer's) */
    unsigned exited : 1; /* a plugin's exit answered (the metrics' source label) */
    /* sluice.service overrides for this request; 0 or NULL: the service's. */
    int connect_timeout;
    int write_timeout;
    int read_timeout;
    int retries_plus_one;    /* set_retries(n) stores n + 1 */
    const char *target_host; /* set_target: the Host text, in the arena; the address is below */
    size_t target_host_len;
    unsigned ups_set : 1; /* set_upstream chose ups */
    sl_str_t consumer_id; /* sluice.client.authenticate's consumer (or credential) id */
    /* sluice.request.set_max_body_size(n) stores n + 1; 0: server.max_body_size alone. */
    uint64_t max_body_plus_one;
    /* sluice.log.set_serialize_value: `,"key":value` pairs (JSON, in the
     * arena) the access log line ends with; NULL: none. */
    const char *log_fields;
    size_t log_fields_len;
    /* Everything above is zeroed for each request; nothing below is. */
    sl_header_op_t ops[SL_MAX_HEADER_OPS];
    sl_try_t trylog[SL_TRY_LOG];         /* entries [0, min(tries, SL_TRY_LOG)) are set */
    struct sockaddr_storage target_addr; /* valid while target_host is set */
    socklen_t target_addrlen;
    uint16_t target_port;
    char ohead[20]; /* written before each use (ohead_len, otail_len say how much) */
    char otail[8];

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

/* PDK: reads the whole request body (see sl_ffi_req_read_body for the
 * contract). */
int sl_proxy_read_body(sl_request_t *req, int id, const char **body, size_t *len, const char **err);

/* PDK: replaces the request body sent upstream (see sl_ffi_req_set_body). */
int sl_proxy_set_body(sl_request_t *req, int id, const char *body, size_t len, const char **err);

/* The most bytes the request's body may have: server.max_body_size (0:
 * unlimited, UINT64_MAX here), lowered for this request by
 * sluice.request.set_max_body_size. A body over it gets 413 (see proxy.c). */
uint64_t sl_proxy_body_limit(const sl_request_t *req);

/* Is the request's body known to be over that limit already: a
 * Content-Length above it, or more chunked payload arrived than it allows? */
int sl_proxy_body_over(const sl_request_t *req);

/* Frees what a request holds when its connection goes away. */
void sl_proxy_abort(sl_request_t *req);

/* Does the request run Lua in phase: its route's plugins, or those an
 * authenticated consumer brought (req->lua_phases)? */
static inline int sl_proxy_runs_phase(const sl_request_t *req, int phase)
{
    return ((req->route->plugins | req->lua_phases) & (1u << phase)) != 0;
}

/* The steps of a request, for in-process requests (core/inproc.c) that run
 * the real code without a client socket or an upstream. */

/* A request object from w's free list (NULL: out of memory), zeroed, with
 * its Lua task set up; and its return (which releases its Lua task). */
sl_request_t *sl_proxy_request_get(sl_worker_t *w);
void sl_proxy_request_put(sl_worker_t *w, sl_request_t *req);

/* The head in req->c->in[0, req->head_len) was parsed into req->h: numbers
 * the request, accounts the body bytes read with it and normalizes the path.
 * Returns SL_OK, or the HTTP status to answer with and *message. */
int sl_proxy_prepare(sl_request_t *req, const char **message);

/* Matches the request against the router: SL_OK with req->route, service
 * and ups set, or SL_DECLINED (no route). */
int sl_proxy_route(sl_request_t *req);

/* Picks a target and writes the head sent upstream into req->out (taken
 * from the free list when NULL). SL_OK; SL_DECLINED: no target; SL_ERROR:
 * out of memory or the head does not fit. */
int sl_proxy_upstream_head(sl_request_t *req);

/* The request body that would follow that head, for a request whose body
 * arrived whole: pre (what plugins read or set) then rest (bytes still in
 * the client buffer). Both point into the request. */
void sl_proxy_upstream_body(const sl_request_t *req, const char **pre, size_t *plen,
                            const char **rest, size_t *rlen);

/* The upstream's response head is parsed into req->r and the request's
 * response fields are set as upstream_read sets them (resp_head_parsed,
 * resp_body, filter, ...; with buffering, the whole body in ubody): runs the
 * header_filter plugins, with buffering body_filter on the whole body (the
 * client body is then req->odata), and writes the client's head into
 * req->out. SL_OK; SL_ERROR: header_filter failed (answer 500); SL_DONE:
 * body_filter failed; SL_DECLINED: the head does not fit. */
int sl_proxy_response_head(sl_request_t *req);

/* Runs the body_filter plugins on one piece of the response body (eof: the
 * last call); *out, *olen get what they made of it (data itself, or a copy
 * in req->fbuf). SL_OK, or SL_ERROR when a plugin failed (logged). */
int sl_proxy_filter_body(sl_request_t *req, const char *data, size_t len, int eof, const char **out,
                         size_t *olen);

/* Writes into req->out (and req->lbody) a plugin's exit, after the route's
 * header_filter plugins ran on it, or one of sluice's JSON errors. SL_OK or
 * SL_ERROR (out of memory). */
int sl_proxy_exit_head(sl_request_t *req);
int sl_proxy_error_head(sl_request_t *req, int status, const char *message);

#endif
