/* proxy.c: request lifecycle: head, routing, upstream request, streaming both ways, keep-alive. */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "balancer_key.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "sl_ffi.h"
#include "sl_lua.h"
#include "worker.h"

/* Request states. */
enum {
    RQ_CONNECTING = 0, /* waiting for the upstream connect */
    RQ_SENDING,        /* writing the head and body upstream */
    RQ_WAITING,        /* request sent (or being sent); waiting for the response */
    RQ_RESPONDING,     /* response head parsed; streaming the body to the client */
    RQ_LOCAL,          /* sending a response sluice made itself */
    RQ_LUA,            /* plugins wait for I/O (a sleep, a socket) */
};

/* Why an upstream exchange failed; decides retries and the status sent. */
enum {
    UF_CONNECT = 0,     /* connect refused or unreachable */
    UF_CONNECT_TIMEOUT, /* connect_timeout */
    UF_WRITE,           /* writing the request failed */
    UF_RESET,           /* reset or closed before a complete response head */
    UF_WRITE_TIMEOUT,
    UF_READ_TIMEOUT,
    UF_BAD_RESPONSE, /* not HTTP, or over the limits */
    UF_STATUS,       /* answered a status the service's retry_on lists */
};

/* What plugins did with the request body (req->rbody_state). */
enum {
    RB_NONE = 0, /* untouched: the body streams upstream from c->in */
    RB_READING,  /* a plugin waits for the whole body, gathered in rbody */
    RB_DRAINING, /* rbody was replaced; the client's own body is read and dropped */
    RB_FULL,     /* rbody is the whole body sent upstream */
    RB_OVER,     /* past client_body_buffer_size: rbody is a raw prefix, the rest streams */
};

/* Convention: functions in this file return SL_DONE when the request is over,
 * finished or its connection closed; the caller must then touch neither the
 * request nor the connection. SL_OK means "in progress, waiting for I/O". */

#define MAX_REQUESTS_FREE 256
#define IOV_MAX_PROXY     64
#define LINGER_MS         2000

static const char *const fail_text[] = {
    "An invalid response was received from the upstream server",
    "The upstream server is timing out",
    "An invalid response was received from the upstream server",
    "An invalid response was received from the upstream server",
    "The upstream server is timing out",
    "The upstream server is timing out",
    "An invalid response was received from the upstream server",
    "An invalid response was received from the upstream server",
};

static void upstream_io_cb(struct ev_loop *loop, ev_io *io, int revents);
static void request_timer_cb(struct ev_loop *loop, ev_timer *t, int revents);
static int request_finish(sl_request_t *req);
static int client_send(sl_request_t *req);
static int upstream_send(sl_request_t *req);
static int upstream_read(sl_request_t *req);
static int connect_upstream(sl_request_t *req);
static int process_input(sl_conn_t *c);
static int route_request(sl_request_t *req);
static int proxy_request(sl_request_t *req);
static int lua_result(sl_request_t *req, int rc);
static int lua_continue(sl_request_t *req, int id);
static int respond_exit(sl_request_t *req);
static int run_body_filter(sl_request_t *req, const char *data, size_t len, int eof,
                           const char **out, size_t *olen);
static int scan_body(sl_request_t *req);
static void request_timer_set(sl_request_t *req, int ms);
static void request_wake(sl_lua_task_t *t, int id);

/* Does the request have plugins to run in phase p (its route's, or an
 * authenticated consumer's)? */
#define HAS_PHASE(req, p) ((req)->route != NULL && sl_proxy_runs_phase((req), (p)))

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Ends the balancer's try on req->peer_index, telling it how the try went
 * and how long the response head took (or how long the try lasted when none
 * came). Every select is matched by exactly one call: the request's end,
 * a failed try and an aborted request all come through here, and the index
 * is cleared so that no path can release twice. */
static void release_peer(sl_request_t *req, int outcome)
{
    if (req->ups == NULL || req->peer_index < 0)
        return;
    int head = req->upstream_header >= req->try_start && req->upstream_header > 0;
    double end = head ? req->upstream_header : now_seconds();
    if (outcome == SL_BALANCER_OK && !head)
        outcome = SL_BALANCER_ABORTED;
    req->ups->balancer->ops->release(req->ups->balancer, req->peer_index,
                                     (end - req->try_start) * 1000.0, outcome);
    req->peer_index = -1;
}

/* The try that starts now (req->tries was just counted): recorded for the
 * log phase when it is among the first SL_TRY_LOG. A free retry on a fresh
 * connection takes the slot of the try it replaces. */
static void try_begin(sl_request_t *req)
{
    if (req->tries < 1 || req->tries > SL_TRY_LOG)
        return;
    sl_try_t *t = &req->trylog[req->tries - 1];
    t->peer = req->peer;
    t->start = req->try_start > 0 ? req->try_start : now_seconds();
    t->header = t->end = 0;
    t->status = t->failure = 0;
}

/* The current try failed for `why` (UF_*). */
static void try_failed(sl_request_t *req, int why)
{
    if (req->tries < 1 || req->tries > SL_TRY_LOG)
        return;
    sl_try_t *t = &req->trylog[req->tries - 1];
    t->end = now_seconds();
    t->failure = why + 1;
    t->header = req->resp_head_parsed ? req->upstream_header : 0;
    t->status = req->resp_head_parsed ? req->r.status : 0;
}

/* --- request objects ---------------------------------------------------- */

sl_request_t *sl_proxy_request_get(sl_worker_t *w)
{
    sl_request_t *req = w->free_reqs;
    const sl_server_conf_t *s = &w->cf->server;
    size_t nheaders = SL_MAX(s->max_headers, 100);

    if (req != NULL) {
        w->free_reqs = req->next_free;
        w->nfree_reqs--;
    } else {
        size_t size = sizeof(*req) + s->max_request_line + 16;
        size = (size + 15) & ~(size_t)15;
        req = malloc(size + 2 * nheaders * sizeof(sl_http_header_t));
        if (req == NULL)
            return NULL;
        req->headers = (sl_http_header_t *)((char *)req + size);
        req->resp_headers = req->headers + nheaders;
        req->arena = NULL;
        sl_timer_init(&req->timer, request_timer_cb, req);
    }
    /* The timer survives reuse, so a lazily stopped libev timer never points
     * at freed memory; the arena keeps its first block. */
    sl_timer_t timer = req->timer;
    sl_arena_t *arena = req->arena;
    memset(req, 0, offsetof(sl_request_t, ops));
    req->timer = timer;
    req->timer.ev.data = req;
    req->arena = arena;
    if (arena != NULL)
        sl_arena_reset(arena);
    req->peer_index = -1;
    sl_lua_task_init(&req->task, req, request_wake);
    return req;
}

void sl_proxy_request_put(sl_worker_t *w, sl_request_t *req)
{
    sl_timer_stop(w->loop, &req->timer);
    sl_buf_put(w, req->out);
    sl_buf_put(w, req->resp);
    req->out = req->resp = NULL;
    if (SL_UNLIKELY(req->rbody.data != NULL || req->ubody.data != NULL || req->fbuf.data != NULL)) {
        /* Only requests whose plugins read or replaced a body hold these. */
        sl_bytes_free(&req->rbody);
        sl_bytes_free(&req->ubody);
        sl_bytes_free(&req->fbuf);
    }
    if (req->task.co != NULL || !sl_queue_empty(&req->task.waits))
        sl_lua_release(req);
    if (w->nfree_reqs >= MAX_REQUESTS_FREE) {
        ev_timer_stop(w->loop, &req->timer.ev);
        sl_arena_destroy(req->arena);
        free(req);
        return;
    }
    req->next_free = w->free_reqs;
    w->free_reqs = req;
    w->nfree_reqs++;
}

/* --- small writers -------------------------------------------------------- */

typedef struct {
    char *p;
    char *end;
    int overflow;
} writer_t;

static void put(writer_t *o, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (SL_UNLIKELY((size_t)(o->end - o->p) < n)) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

#define PUT_LIT(o, lit) put((o), lit, sizeof(lit) - 1)

static void put_u64(writer_t *o, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(o, tmp + i, sizeof(tmp) - (size_t)i);
}

static void put_header(writer_t *o, const char *name, size_t nlen, const char *value, size_t vlen)
{
    put(o, name, nlen);
    PUT_LIT(o, ": ");
    put(o, value, vlen);
    PUT_LIT(o, "\r\n");
}

/* --- local responses ------------------------------------------------------- */

/* The IMF-fixdate of now, recomputed once a second. */
static const char *http_date(void)
{
    static char buf[32];
    static time_t cached;
    time_t now = time(NULL);
    if (now != cached) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    return buf;
}

/* Sends a JSON error of sluice's own and ends the request (or the connection,
 * when close is set or the request body cannot be skipped). Returns SL_DONE
 * when the connection was closed. */
/* Writes the client ops of a plugin (set/add; clears only drop) as header lines. */
static void put_client_ops(writer_t *o, const sl_request_t *req)
{
    for (int i = 0; i < req->nops; i++) {
        const sl_header_op_t *op = &req->ops[i];
        if (op->target == 1 && op->op != 2)
            put_header(o, op->name, op->name_len, op->value, op->value_len);
    }
}

/* Is a header named name (any case, '_' for '-': sl_http_name_eq) cleared
 * or set by a plugin for target? */
static int op_replaces(const sl_request_t *req, int target, const char *name, size_t len)
{
    for (int i = 0; i < req->nops; i++) {
        const sl_header_op_t *op = &req->ops[i];
        if (op->target == target && op->op != 1 && op->name_len == len &&
            sl_http_name_eq(op->name, name, len))
            return 1;
    }
    return 0;
}

/* Writes the headers of a plugin's exit (the table at index 3 of the
 * coroutine): string values, or arrays of them for repeated headers. */
static void put_lua_headers(writer_t *o, lua_State *co, const sl_request_t *req)
{
    if (co == NULL || !lua_istable(co, 3))
        return;
    lua_pushnil(co);
    while (lua_next(co, 3) != 0) {
        size_t nlen, vlen;
        const char *name = lua_type(co, -2) == LUA_TSTRING ? lua_tolstring(co, -2, &nlen) : NULL;
        /* sluice frames the body itself; a header_filter edit replaces the
         * exit's own value. */
        if (name != NULL &&
            (SL_IEQ(name, nlen, "content-length") || SL_IEQ(name, nlen, "transfer-encoding") ||
             SL_IEQ(name, nlen, "connection") || op_replaces(req, 1, name, nlen)))
            name = NULL;
        if (name != NULL && lua_type(co, -1) == LUA_TTABLE) {
            for (int i = 1;; i++) {
                lua_rawgeti(co, -1, i);
                const char *v = lua_tolstring(co, -1, &vlen);
                if (v != NULL)
                    put_header(o, name, nlen, v, vlen);
                lua_pop(co, 1);
                if (v == NULL)
                    break;
            }
        } else if (name != NULL) {
            const char *v = lua_tolstring(co, -1, &vlen);
            if (v != NULL)
                put_header(o, name, nlen, v, vlen);
        }
        lua_pop(co, 1);
    }
}

/* Writes a response sluice makes itself (an error, or a plugin's exit) into
 * req->out: the head, and the body after it when it fits, else in the
 * request's arena (req->lbody). ctype NULL: no Content-Type of sluice's own;
 * co: a coroutine holding an exit's headers table. close: the connection
 * closes after it. ops: the plugins' edits of the client's response headers
 * go in too (always with co). A head that does not fit becomes a 500.
 * Returns SL_OK, or SL_ERROR when out of memory. */
static int render_local_ops(sl_request_t *req, int status, const char *ctype, const char *body,
                            size_t blen, int close, lua_State *co, int ops)
{
    sl_conn_t *c = req->c;
    sl_worker_t *w = c->w;
    sl_buf_t *out = req->out;
    if (out == NULL) {
        out = req->out = sl_buf_get(w);
        if (out == NULL)
            return SL_ERROR;
    }
    req->status = status;
    req->keepalive = !close && !c->closing && (req->h.flags & SL_HTTP_F_KEEPALIVE);
    writer_t o = {out->data, out->data + out->size, 0};
    char line[64];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, sl_http_reason(status));
    put(&o, line, (size_t)n);
    if (ctype != NULL && !(ops && co == NULL && op_replaces(req, 1, "Content-Type", 12)))
        put_header(&o, "Content-Type", 12, ctype, strlen(ctype));
    PUT_LIT(&o, "Server: sluice/" SL_VERSION "\r\nDate: ");
    put(&o, http_date(), 29);
    PUT_LIT(&o, "\r\n");
    if (co != NULL)
        put_lua_headers(&o, co, req);
    if (ops)
        put_client_ops(&o, req);
    PUT_LIT(&o, "Content-Length: ");
    put_u64(&o, blen);
    PUT_LIT(&o, "\r\n");
    if (!req->keepalive)
        PUT_LIT(&o, "Connection: close\r\n");
    else if (req->h.version == 10)
        PUT_LIT(&o, "Connection: keep-alive\r\n");
    PUT_LIT(&o, "\r\n");
    if (o.overflow)
        return render_local_ops(req, 500, "application/json; charset=utf-8",
                                "{\"message\":\"An unexpected error occurred\"}\n", 43, 1, NULL, 0);
    req->lbody = NULL;
    req->lbody_len = 0;
    if (req->h.method_id == SL_HTTP_HEAD || blen == 0) {
        /* nothing */
    } else if ((size_t)(o.end - o.p) >= blen) {
        put(&o, body, blen);
    } else {
        /* A large body stays out of the head buffer, in the request's arena. */
        if (req->arena == NULL)
            req->arena = sl_arena_create(16384);
        char *copy = req->arena != NULL ? sl_arena_alloc(req->arena, blen) : NULL;
        if (copy == NULL)
            return SL_ERROR;
        memcpy(copy, body, blen);
        req->lbody = copy;
        req->lbody_len = blen;
    }
    out->start = 0;
    out->end = (size_t)(o.p - out->data);
    return SL_OK;
}

static int render_local(sl_request_t *req, int status, const char *ctype, const char *body,
                        size_t blen, int close, lua_State *co)
{
    return render_local_ops(req, status, ctype, body, blen, close, co, co != NULL);
}

/* Sends a response sluice makes itself (see render_local) and ends the
 * request, or the connection when close is set or the request body cannot be
 * skipped. Returns SL_DONE when the request is over. */
static int respond(sl_conn_t *c, sl_request_t *req, int status, const char *ctype, const char *body,
                   size_t blen, int close, lua_State *co)
{
    sl_worker_t *w = c->w;

    if (req == NULL) {
        /* Errors found before a request object exists (bad head). */
        req = sl_proxy_request_get(w);
        if (req == NULL) {
            sl_conn_close(c);
            return SL_DONE;
        }
        req->c = c;
        c->req = req;
        req->start = now_seconds();
        close = 1;
    }
    if (!req->body_done)
        close = 1;
    if (render_local(req, status, ctype, body, blen, close, co) != SL_OK) {
        sl_conn_close(c);
        return SL_DONE;
    }
    req->out_sent = 0;
    req->resp_done = 1;
    req->state = RQ_LOCAL;
    req->filter = 0;
    /* Upstream bytes are no longer sent (the head stays for the log phase). */
    req->resp_sent = req->resp_scan = 0;
    if (req->up != NULL) {
        sl_upconn_close(req->up);
        req->up = NULL;
    }
    sl_timer_stop(w->loop, &req->timer);
    return client_send(req);
}

/* The JSON body of sluice's own errors: {"message":"..."}. */
static size_t error_body(char *body, size_t cap, const char *message)
{
    size_t blen = (size_t)snprintf(body, cap, "{\"message\":\"");
    blen += sl_json_escape(body + blen, cap - blen - 3, message, strlen(message));
    memcpy(body + blen, "\"}\n", 3);
    return blen + 3;
}

static int respond_error(sl_conn_t *c, sl_request_t *req, int status, const char *message,
                         int close)
{
    char body[512];
    size_t blen = error_body(body, sizeof(body), message);
    return respond(c, req, status, "application/json; charset=utf-8", body, blen, close, NULL);
}

int sl_proxy_error_head(sl_request_t *req, int status, const char *message)
{
    char body[512];
    size_t blen = error_body(body, sizeof(body), message);
    return render_local(req, status, "application/json; charset=utf-8", body, blen, !req->body_done,
                        NULL);
}

/* A response sluice makes after the route's access phase: a plugin's exit
 * (exit = 1: status, body and headers are on its coroutine), or an upstream
 * failure's error. The route's header_filter and body_filter plugins see it
 * first, as Kong runs them on exits and on its error pages, then it is
 * rendered. Returns SL_OK, SL_ERROR when out of memory, or SL_DECLINED when
 * a filter failed (the caller answers 500). */
static int render_filtered(sl_request_t *req, int status, const char *ctype, const char *body,
                           size_t blen, int exit)
{
    req->status = status;
    int hf = HAS_PHASE(req, SL_PHASE_HEADER_FILTER), bf = HAS_PHASE(req, SL_PHASE_BODY_FILTER);
    if (hf || bf) {
        /* The body and an exit's headers are kept aside while the filters
         * run; body_filter gets the whole body in one last call. */
        char *copy = NULL;
        if (blen > 0) {
            if (req->arena == NULL)
                req->arena = sl_arena_create(16384);
            copy = req->arena != NULL ? sl_arena_alloc(req->arena, blen) : NULL;
            if (copy == NULL)
                return SL_ERROR;
            memcpy(copy, body, blen);
        }
        body = copy;
        int href = exit ? sl_lua_exit_keep_headers(req) : LUA_NOREF;
        int rc = hf ? sl_lua_phase(req, SL_PHASE_HEADER_FILTER) : SL_OK;
        if (rc == SL_OK && req->client_status)
            status = req->status = req->client_status;
        if (rc == SL_OK && bf)
            rc = run_body_filter(req, body != NULL ? body : "", blen, 1, &body, &blen);
        if (exit)
            sl_lua_exit_restore_headers(req, href);
        if (rc != SL_OK) {
            SL_LOG(SL_LOG_ERR, "%s failed on a %s response",
                   req->task.phase == SL_PHASE_BODY_FILTER ? "body_filter" : "header_filter",
                   exit ? "plugin's" : "sluice error");
            return SL_DECLINED;
        }
    }
    return render_local_ops(req, status, ctype, body, blen, !req->body_done,
                            exit ? req->task.co : NULL, 1);
}

static int render_exit(sl_request_t *req)
{
    req->exited = 1;
    const char *body;
    size_t blen = 0;
    int status = sl_lua_exit(req, &body, &blen);
    return render_filtered(req, status, NULL, body, blen, 1);
}

int sl_proxy_exit_head(sl_request_t *req)
{
    int rc = render_exit(req);
    if (rc == SL_DECLINED)
        rc = sl_proxy_error_head(req, 500, "An unexpected error occurred");
    return rc;
}

/* Sends what render_filtered made (rc is its result). */
static int send_filtered(sl_request_t *req, int rc)
{
    sl_conn_t *c = req->c;
    if (rc == SL_DECLINED)
        return respond_error(c, req, 500, "An unexpected error occurred", !req->body_done);
    if (rc != SL_OK) {
        sl_conn_close(c);
        return SL_DONE;
    }
    req->out_sent = 0;
    req->resp_done = 1;
    req->state = RQ_LOCAL;
    req->filter = 0;
    req->resp_sent = req->resp_scan = 0;
    if (req->up != NULL) {
        sl_upconn_close(req->up);
        req->up = NULL;
    }
    sl_timer_stop(c->w->loop, &req->timer);
    return client_send(req);
}

/* Sends a plugin's exit (see render_filtered). */
static int respond_exit(sl_request_t *req)
{
    return send_filtered(req, render_exit(req));
}

/* Sends the 502, 503 or 504 of an upstream that failed (see render_filtered). */
static int respond_upstream_error(sl_request_t *req, int status, const char *message)
{
    char body[512];
    size_t blen = error_body(body, sizeof(body), message);
    return send_filtered(
        req, render_filtered(req, status, "application/json; charset=utf-8", body, blen, 0));
}

/* --- access log ------------------------------------------------------------ */

static void access_log(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    sl_access_log_t *al = &c->w->access_log;
    if (al->fd < 0)
        return;
    size_t plen = req->h.path_len > 2048 ? 2048 : req->h.path_len;
    size_t need = 512 + plen * 6 + req->log_fields_len;
    char *p = sl_access_log_reserve(al, need);
    if (p == NULL)
        return;
    char *start = p, *end = p + need;
    double now = now_seconds();
    time_t secs = (time_t)req->start;
    struct tm tm;
    gmtime_r(&secs, &tm);
    p += snprintf(p, (size_t)(end - p),
                  "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"request_id\":\"%s\","
                  "\"client_ip\":\"%s\",\"method\":\"",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  (int)((req->start - (double)secs) * 1000), req->id, c->peer_text);
    p += sl_json_escape(p, (size_t)(end - p), req->h.method, SL_MIN(req->h.method_len, 32));
    /* The path only: query strings carry API keys and tokens. */
    p += snprintf(p, (size_t)(end - p), "\",\"path\":\"");
    p += sl_json_escape(p, (size_t)(end - p), req->h.path, plen);
    p += snprintf(p, (size_t)(end - p),
                  "\",\"status\":%d,\"bytes_sent\":%llu,\"request_bytes\":%llu,"
                  "\"latency_ms\":%.3f,\"upstream_latency_ms\":",
                  req->status, (unsigned long long)req->bytes_sent,
                  (unsigned long long)(req->head_len + req->body_bytes),
                  (now - req->start) * 1000.0);
    if (req->upstream_header > 0)
        p += snprintf(p, (size_t)(end - p), "%.3f",
                      (req->upstream_header - req->upstream_start) * 1000.0);
    else
        p += snprintf(p, (size_t)(end - p), "null");
    p += snprintf(p, (size_t)(end - p), ",\"route\":");
    if (req->route != NULL && req->route->name != NULL)
        p += snprintf(p, (size_t)(end - p), "\"%s\"", req->route->name);
    else
        p += snprintf(p, (size_t)(end - p), "null");
    p += snprintf(p, (size_t)(end - p), ",\"service\":");
    if (req->service != NULL && req->service->name != NULL)
        p += snprintf(p, (size_t)(end - p), "\"%s\"", req->service->name);
    else
        p += snprintf(p, (size_t)(end - p), "null");
    p += snprintf(p, (size_t)(end - p), ",\"upstream\":");
    if (req->peer != NULL)
        p += snprintf(p, (size_t)(end - p), "\"%s:%u\"", req->peer->conf->host,
                      req->peer->conf->port);
    else
        p += snprintf(p, (size_t)(end - p), "null");
    if (req->log_fields_len > 0 && req->log_fields_len < (size_t)(end - p)) {
        /* Plugins' fields (sluice.log.set_serialize_value), JSON already. */
        memcpy(p, req->log_fields, req->log_fields_len);
        p += req->log_fields_len;
    }
    p += snprintf(p, (size_t)(end - p), "}\n");
    if (p >= end)
        return;
    sl_access_log_commit(al, (size_t)(p - start));
}

/* --- request head ------------------------------------------------------------ */

static int is_hop_by_hop(const sl_http_header_t *h)
{
    const char *n = h->name;
    size_t l = h->name_len;
    switch (l) {
    case 2:
        return SL_IEQ(n, l, "te");
    case 6:
        return SL_IEQ(n, l, "expect");
    case 7:
        return SL_IEQ(n, l, "trailer") || SL_IEQ(n, l, "upgrade");
    case 10:
        return SL_IEQ(n, l, "connection") || SL_IEQ(n, l, "keep-alive");
    case 14:
        return SL_IEQ(n, l, "content-length");
    case 16:
        return SL_IEQ(n, l, "proxy-connection");
    case 17:
        return SL_IEQ(n, l, "transfer-encoding");
    }
    return 0;
}

/* Is `name` listed in a Connection header (which makes it hop-by-hop)? */
static int listed_in_connection(const sl_http_header_t *hs, size_t n, const sl_http_header_t *h)
{
    for (size_t i = 0; i < n; i++) {
        if (!SL_IEQ(hs[i].name, hs[i].name_len, "connection"))
            continue;
        const char *p = hs[i].value, *end = p + hs[i].value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *t = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - t) == h->name_len && strncasecmp(t, h->name, h->name_len) == 0)
                return 1;
        }
    }
    return 0;
}

static int client_trusted(const sl_conn_t *c)
{
    return sl_config_trusts(&c->w->cf->server, c->peer);
}

/* The upstream path, as Kong builds it from the service path, the route's
 * strip_path and path_handling (see docs/proxying.md). */
static void put_upstream_path(writer_t *o, sl_request_t *req)
{
    const sl_route_t *rt = req->route;
    const sl_service_t *svc = req->service;
    const char *base = svc->path != NULL ? svc->path : "/";
    size_t blen = svc->path != NULL ? svc->path_len : 1;
    const char *uri = req->path;
    size_t ulen = req->path_len;
    int strip = rt->strip_path && rt->npaths > 0;
    const char *post = uri + req->m.matched_len;
    size_t plen = ulen - req->m.matched_len;

    if (strip) {
        /* Kong sanitizes what is left after the strip: "." and ".." vanish. */
        if ((plen == 1 && post[0] == '.') || (plen == 2 && post[0] == '.' && post[1] == '.')) {
            plen = 0;
        } else if (plen >= 2 && post[0] == '.' && post[1] == '/') {
            post += 2, plen -= 2;
        } else if (plen >= 3 && post[0] == '.' && post[1] == '.' && post[2] == '/') {
            post += 3, plen -= 3;
        }
    }

    if (rt->path_handling == 1) {
        const char *part = strip ? post : uri;
        size_t len = strip ? plen : ulen;
        if (blen == 1) {
            if (len == 0 || part[0] != '/')
                PUT_LIT(o, "/");
            put(o, part, len);
        } else {
            put(o, base, blen);
            if (len > 0 && part[0] == '/')
                put(o, part + 1, len - 1);
            else
                put(o, part, len);
        }
        return;
    }

    if (base[blen - 1] == '/') {
        if (strip) {
            if (plen == 0) {
                if (blen == 1)
                    PUT_LIT(o, "/");
                else if (uri[ulen - 1] == '/')
                    put(o, base, blen);
                else
                    put(o, base, blen - 1);
            } else if (post[0] == '/') {
                put(o, base, blen - 1);
                put(o, post, plen);
            } else {
                put(o, base, blen);
                put(o, post, plen);
            }
        } else {
            put(o, base, blen);
            put(o, uri + 1, ulen - 1);
        }
    } else if (strip) {
        put(o, base, blen);
        if (plen == 0) {
            if (ulen > 1 && uri[ulen - 1] == '/')
                PUT_LIT(o, "/");
        } else {
            if (post[0] != '/')
                PUT_LIT(o, "/");
            put(o, post, plen);
        }
    } else {
        put(o, base, blen);
        if (!(ulen == 1 && uri[0] == '/'))
            put(o, uri, ulen);
    }
}

/* Writes the request head sluice sends upstream into req->out. */
static int build_upstream_head(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    const sl_http_request_t *h = &req->h;
    writer_t o = {req->out->data, req->out->data + req->out->size, 0};
    int trusted = client_trusted(c);
    const sl_http_header_t *xff = NULL, *xfproto = NULL, *xfhost = NULL, *xfport = NULL,
                           *xfpath = NULL, *xrealip = NULL, *host = NULL;

    if (req->up_method.data != NULL)
        put(&o, req->up_method.data, req->up_method.len);
    else
        put(&o, h->method, h->method_len);
    PUT_LIT(&o, " ");
    if (req->up_path.data != NULL)
        put(&o, req->up_path.data, req->up_path.len);
    else
        put_upstream_path(&o, req);
    if (req->up_query.data != NULL) {
        if (req->up_query.len > 0) {
            PUT_LIT(&o, "?");
            put(&o, req->up_query.data, req->up_query.len);
        }
    } else if (h->query != NULL && h->query_len > 0) {
        PUT_LIT(&o, "?");
        put(&o, h->query, h->query_len);
    }
    PUT_LIT(&o, " HTTP/1.1\r\n");

    int conn_hdrs = (h->flags & SL_HTTP_F_CONN_HDRS) != 0;
    for (size_t i = 0; i < h->nheaders; i++) {
        const sl_http_header_t *hd = &h->headers[i];
        const char *n = hd->name;
        size_t l = hd->name_len;
        if (is_hop_by_hop(hd))
            continue;
        if (l == 4 && SL_IEQ(n, l, "host")) {
            host = hd;
            continue;
        }
        if (l >= 9 && (n[0] == 'x' || n[0] == 'X')) {
            if (SL_IEQ(n, l, "x-forwarded-for")) {
                xff = xff ? xff : hd;
                continue;
            }
            if (SL_IEQ(n, l, "x-forwarded-proto")) {
                xfproto = hd;
                continue;
            }
            if (SL_IEQ(n, l, "x-forwarded-host")) {
                xfhost = hd;
                continue;
            }
            if (SL_IEQ(n, l, "x-forwarded-port")) {
                xfport = hd;
                continue;
            }
            if (SL_IEQ(n, l, "x-forwarded-path")) {
                xfpath = hd;
                continue;
            }
            if (SL_IEQ(n, l, "x-real-ip")) {
                xrealip = hd;
                continue;
            }
        }
        if (conn_hdrs && listed_in_connection(h->headers, h->nheaders, hd))
            continue;
        if (req->nops > 0 && op_replaces(req, 0, n, l))
            continue;
        put(&o, n, l);
        PUT_LIT(&o, ": ");
        put(&o, hd->value, hd->value_len);
        PUT_LIT(&o, "\r\n");
    }
    for (int i = 0; i < req->nops; i++) {
        const sl_header_op_t *op = &req->ops[i];
        if (op->target == 0 && op->op != 2)
            put_header(&o, op->name, op->name_len, op->value, op->value_len);
    }

    if (req->nops > 0 && op_replaces(req, 0, "host", 4)) {
        /* A plugin chose the Host itself (written with its other headers). */
    } else if (req->route->preserve_host && host != NULL) {
        PUT_LIT(&o, "Host: ");
        put(&o, host->value, host->value_len);
        PUT_LIT(&o, "\r\n");
    } else if (req->target_host == NULL && !req->ups_set && req->service->host_header != NULL) {
        PUT_LIT(&o, "Host: ");
        put(&o, req->service->host_header, req->service->host_header_len);
        PUT_LIT(&o, "\r\n");
    } else if (req->target_host == NULL && req->ups_set && req->ups->conf->host_header != NULL) {
        /* sluice.service.set_upstream: that upstream's Host, as Kong sends it. */
        PUT_LIT(&o, "Host: ");
        put(&o, req->ups->conf->host_header, strlen(req->ups->conf->host_header));
        PUT_LIT(&o, "\r\n");
    } else {
        const sl_target_t *t = req->peer->conf;
        PUT_LIT(&o, "Host: ");
        put(&o, t->host, strlen(t->host));
        if (t->port != 80) {
            PUT_LIT(&o, ":");
            put_u64(&o, t->port);
        }
        PUT_LIT(&o, "\r\n");
    }

    /* X-Forwarded-*: from a trusted proxy, what it says is kept (and the
     * client appended to X-Forwarded-For); from anyone else, sluice's own view. */
    PUT_LIT(&o, "X-Real-IP: ");
    if (trusted && xrealip != NULL)
        put(&o, xrealip->value, xrealip->value_len);
    else
        put(&o, c->peer_text, c->peer_text_len);
    PUT_LIT(&o, "\r\nX-Forwarded-For: ");
    if (xff != NULL) {
        /* Every X-Forwarded-For line, in order, then the client. */
        for (size_t i = 0; i < h->nheaders; i++) {
            const sl_http_header_t *hd = &h->headers[i];
            if (SL_IEQ(hd->name, hd->name_len, "x-forwarded-for")) {
                put(&o, hd->value, hd->value_len);
                PUT_LIT(&o, ", ");
            }
        }
    }
    put(&o, c->peer_text, c->peer_text_len);
    PUT_LIT(&o, "\r\nX-Forwarded-Proto: ");
    if (trusted && xfproto != NULL)
        put(&o, xfproto->value, xfproto->value_len);
    else
        PUT_LIT(&o, "http");
    PUT_LIT(&o, "\r\n");
    if (trusted && xfhost != NULL) {
        put_header(&o, "X-Forwarded-Host", 16, xfhost->value, xfhost->value_len);
    } else if (h->host_len > 0) {
        const char *hv = h->host;
        size_t hl = h->host_len;
        /* Without the port, as Kong sends it. */
        if (hl > 0 && hv[0] == '[') {
            const char *rb = memchr(hv, ']', hl);
            if (rb != NULL)
                hl = (size_t)(rb - hv) + 1;
        } else {
            const char *colon = memchr(hv, ':', hl);
            if (colon != NULL)
                hl = (size_t)(colon - hv);
        }
        put_header(&o, "X-Forwarded-Host", 16, hv, hl);
    }
    PUT_LIT(&o, "X-Forwarded-Port: ");
    if (trusted && xfport != NULL)
        put(&o, xfport->value, xfport->value_len);
    else
        put_u64(&o, c->ls->port);
    PUT_LIT(&o, "\r\nX-Forwarded-Path: ");
    if (trusted && xfpath != NULL)
        put(&o, xfpath->value, xfpath->value_len);
    else
        put(&o, h->path, h->path_len);
    PUT_LIT(&o, "\r\n");

    if (req->rbody_state == RB_FULL) {
        /* A body plugins read or replaced is sent whole, whatever its framing was. */
        PUT_LIT(&o, "Content-Length: ");
        put_u64(&o, req->rbody.len);
        PUT_LIT(&o, "\r\n");
    } else if (h->body == SL_HTTP_BODY_LENGTH) {
        PUT_LIT(&o, "Content-Length: ");
        put_u64(&o, (uint64_t)h->content_length);
        PUT_LIT(&o, "\r\n");
    } else if (h->body == SL_HTTP_BODY_CHUNKED) {
        PUT_LIT(&o, "Transfer-Encoding: chunked\r\n");
    } else if (h->content_length == 0) {
        PUT_LIT(&o, "Content-Length: 0\r\n");
    }
    PUT_LIT(&o, "\r\n");
    if (o.overflow)
        return SL_ERROR;
    req->out->start = 0;
    req->out->end = (size_t)(o.p - req->out->data);
    return SL_OK;
}

static void make_request_id(sl_worker_t *w, sl_request_t *req)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t seq = ++w->request_seq;
    memcpy(req->id, w->id_prefix, 16);
    for (int i = 31; i >= 16; i--) {
        req->id[i] = hex[seq & 15];
        seq >>= 4;
    }
    req->id[32] = '\0';
}

/* Splits "host[:port]" / "[v6]:port" into the routing host and port. */
static void split_host(const sl_http_request_t *h, uint16_t default_port, const char **host,
                       size_t *host_len, uint16_t *port)
{
    const char *p = h->host;
    size_t n = h->host_len;
    *port = default_port;
    const char *colon = NULL;
    if (n > 0 && p[0] == '[') {
        const char *rb = memchr(p, ']', n);
        if (rb != NULL && (size_t)(rb - p) + 1 < n && rb[1] == ':')
            colon = rb + 1;
    } else if (n > 0) {
        colon = memchr(p, ':', n);
    }
    if (colon != NULL) {
        unsigned v = 0;
        const char *q = colon + 1;
        for (; q < p + n && *q >= '0' && *q <= '9' && v < 65536; q++)
            v = v * 10 + (unsigned)(*q - '0');
        if (q == p + n && q > colon + 1 && v < 65536)
            *port = (uint16_t)v;
        n = (size_t)(colon - p);
    }
    *host = p;
    *host_len = n;
}

int sl_proxy_prepare(sl_request_t *req, const char **message)
{
    sl_conn_t *c = req->c;
    sl_worker_t *w = c->w;
    const sl_server_conf_t *s = &w->cf->server;
    sl_http_request_t *h = &req->h;

    make_request_id(w, req);
    req->body_sent = req->body_scan = req->head_len;
    req->task.seq = (double)w->request_seq;

    switch (h->body) {
    case SL_HTTP_BODY_LENGTH:
        req->body_left = h->content_length;
        if (s->max_body_size > 0 && (uint64_t)h->content_length > s->max_body_size) {
            *message = "Request size limit exceeded";
            return 413;
        }
        break;
    case SL_HTTP_BODY_CHUNKED:
        break;
    default:
        req->body_done = 1;
    }
    if (!req->body_done) {
        /* Body bytes that came with the head: plugins may read them. */
        int rc = scan_body(req);
        if (rc == SL_DECLINED) {
            *message = "Request size limit exceeded";
            return 413;
        }
        if (rc != SL_OK) {
            *message = "Bad request: invalid chunked body";
            return 400;
        }
    }

    if (h->path_len > s->max_request_line) {
        *message = "Request-URI Too Long";
        return 414;
    }
    int n = sl_router_normalize_path(h->path, h->path_len, req->path_buf);
    if (n < 0) {
        *message = "Bad request: malformed percent-encoding in path";
        return 400;
    }
    req->path = req->path_buf;
    req->path_len = (size_t)n;
    return SL_OK;
}

/* A complete head is in c->in[0, head_len): route it and start proxying. */
static int start_request(sl_conn_t *c, sl_request_t *req)
{
    sl_worker_t *w = c->w;
    const char *message = NULL;

    c->state = SL_CONN_REQUEST;
    c->requests++;
    int status = sl_proxy_prepare(req, &message);
    if (status != SL_OK)
        return respond_error(c, req, status, message, 1);
    if (w->cf->rewrite_plugins) {
        int rc = lua_result(req, sl_lua_phase(req, SL_PHASE_REWRITE));
        if (rc != SL_OK)
            return rc == SL_AGAIN ? SL_OK : rc;
    }
    return route_request(req);
}

int sl_proxy_route(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    sl_worker_t *w = c->w;
    sl_http_request_t *h = &req->h;
    sl_router_req_t rr;
    rr.method_id = h->method_id;
    rr.method = h->method;
    rr.method_len = h->method_len;
    split_host(h, c->ls->port, &rr.host, &rr.host_len, &rr.port);
    rr.path = req->path;
    rr.path_len = req->path_len;
    rr.headers = h->headers;
    rr.nheaders = h->nheaders;
    rr.protocol = SL_PROTO_HTTP;
    if (sl_router_match(w->cf->router, &rr, &req->m) != SL_OK)
        return SL_DECLINED;
    req->route = req->m.route;
    req->service = req->route->service;
    req->ups = &w->ups[req->service->upstream->index];
    return SL_OK;
}

/* Global rewrite plugins are done: find the route and run its access plugins. */
static int route_request(sl_request_t *req)
{
    if (sl_proxy_route(req) != SL_OK)
        return respond_error(req->c, req, 404, "no Route matched with those values", 0);
    if (sl_proxy_runs_phase(req, SL_PHASE_ACCESS)) {
        int rc = lua_result(req, sl_lua_phase(req, SL_PHASE_ACCESS));
        if (rc != SL_OK)
            return rc == SL_AGAIN ? SL_OK : rc;
    }
    return proxy_request(req);
}

/* Answers "Expect: 100-continue" when the body is about to be read and the
 * client has sent none of it. Returns SL_ERROR when the client is gone. */
static int send_continue(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    if (!(req->h.flags & SL_HTTP_F_EXPECT_100) || req->continue_sent || req->body_done ||
        c->in->end != req->head_len)
        return SL_OK;
    /* A fresh connection's socket buffer always takes these few bytes. */
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct iovec iov = {(void *)cont, sizeof(cont) - 1};
    size_t written;
    req->continue_sent = 1;
    return sl_io_writev_all(&c->sock, &iov, 1, &written) == SL_OK ? SL_OK : SL_ERROR;
}

/* The access plugins let the request through: send it upstream. */
static int proxy_request(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    sl_worker_t *w = c->w;

    /* A plugin lowered the limit (set_max_body_size) below a Content-Length,
     * or below what already arrived of a chunked body: nothing goes upstream. */
    if (SL_UNLIKELY(req->max_body_plus_one != 0) && sl_proxy_body_over(req))
        return respond_error(c, req, 413, "Request size limit exceeded", 1);
    req->out = sl_buf_get(w);
    if (req->out == NULL)
        return respond_error(c, req, 500, "An unexpected error occurred", 1);
    if (send_continue(req) != SL_OK) {
        sl_conn_close(c);
        return SL_DONE;
    }
    req->upstream_start = req->try_start = now_seconds();
    if (req->ups->conf->algorithm == SL_LB_CONSISTENT_HASH && req->target_host == NULL)
        sl_balancer_key(req, &req->bctx);
    return connect_upstream(req);
}

/* Turns what a Lua phase returned into what the request does next: SL_OK to
 * go on, SL_AGAIN when the plugins wait for I/O (state RQ_LUA), or the result
 * of answering the client (a plugin's exit, or a 500 on a runtime error). */
static int lua_result(sl_request_t *req, int rc)
{
    switch (rc) {
    case SL_OK:
        return SL_OK;
    case SL_AGAIN:
        req->state = RQ_LUA;
        return SL_AGAIN;
    case SL_DONE:
        return respond_exit(req);
    default:
        return respond_error(req->c, req, 500, "An unexpected error occurred", !req->body_done);
    }
}

/* The request's coroutine can go on (its timer fired, its I/O is done). */
static int lua_continue(sl_request_t *req, int id)
{
    int rc = lua_result(req, sl_lua_resume(req, id));
    if (rc != SL_OK)
        return rc == SL_AGAIN ? SL_OK : rc;
    req->state = RQ_CONNECTING;
    switch (req->task.phase) {
    case SL_PHASE_REWRITE:
        return route_request(req);
    case SL_PHASE_ACCESS:
        return proxy_request(req);
    default:
        return SL_OK;
    }
}

/* A wait of the request's plugins completed. */
static void request_wake(sl_lua_task_t *t, int id)
{
    sl_request_t *req = t->req;
    if (req->state != RQ_LUA)
        return;
    lua_continue(req, id);
}

/* --- upstream side ------------------------------------------------------------ */

static void request_timer_set(sl_request_t *req, int ms)
{
    sl_timer_set(req->c->w->loop, &req->timer, ms);
}

/* The service's settings, unless a plugin changed them for this request
 * (sluice.service.set_timeouts, set_retries). */
static int connect_timeout(const sl_request_t *req)
{
    return req->connect_timeout ? req->connect_timeout : req->service->connect_timeout;
}

static int write_timeout(const sl_request_t *req)
{
    return req->write_timeout ? req->write_timeout : req->service->write_timeout;
}

static int read_timeout(const sl_request_t *req)
{
    return req->read_timeout ? req->read_timeout : req->service->read_timeout;
}

static int retries(const sl_request_t *req)
{
    return req->retries_plus_one ? req->retries_plus_one - 1 : req->service->retries;
}

/* Ends the upstream exchange with a failure: retries elsewhere when the
 * request allows it, else answers 502/504 (or drops the client connection
 * when the response had already started). */
static const char *fail_reason(int why)
{
    switch (why) {
    case UF_CONNECT:
        return "connect failed";
    case UF_CONNECT_TIMEOUT:
        return "connect timed out";
    case UF_WRITE:
        return "write failed";
    case UF_RESET:
        return "connection closed before the response";
    case UF_WRITE_TIMEOUT:
        return "write timed out";
    case UF_READ_TIMEOUT:
        return "read timed out";
    case UF_STATUS:
        return "answered a status in retry_on";
    default:
        return "invalid response";
    }
}

/* Tells the passive checks how a try on a balanced target ended; upstreams
 * without checks (peer->health NULL) pay one test. */
static void report_health(sl_request_t *req, int why)
{
    if (req->peer_index < 0 || req->peer == NULL || req->peer->health == NULL)
        return;
    int timeout = why == UF_CONNECT_TIMEOUT || why == UF_READ_TIMEOUT || why == UF_WRITE_TIMEOUT;
    sl_health_report(req->ups->conf, (size_t)req->peer_index, SL_HEALTH_PASSIVE,
                     timeout ? SL_HEALTH_TIMEOUT : SL_HEALTH_TCP_ERROR, 0, sl_health_now());
}

/* Methods that may run twice (RFC 9110 §9.2.2): a retry may repeat them. */
static int is_idempotent(const sl_request_t *req)
{
    return (req->h.method_id & (SL_HTTP_GET | SL_HTTP_HEAD | SL_HTTP_PUT | SL_HTTP_DELETE |
                                SL_HTTP_OPTIONS | SL_HTTP_TRACE)) != 0;
}

/* Can the request be sent again: its whole body is still in the buffer. */
static int is_replayable(const sl_request_t *req)
{
    return !req->body_trimmed && (req->body_done || req->h.body == SL_HTTP_BODY_NONE);
}

/* May this request be tried again by the service's retry_on? Idempotent
 * methods (others when the route says so), a body that can be sent again,
 * tries left, and the budget: every request first sent to the upstream
 * deposits retry_budget / 100 of a retry, each such retry spends one (per
 * worker and upstream), so a brown-out cannot multiply the load. Takes the
 * token when it answers 1. */
static int retry_on_allowed(sl_request_t *req)
{
    const sl_service_t *svc = req->service;
    if (!svc->retry_on_any || svc->retry_budget <= 0 || !is_replayable(req) ||
        req->tries > retries(req) || req->ups == NULL)
        return 0;
    if (!is_idempotent(req) && !(req->route != NULL && req->route->retry_non_idempotent))
        return 0;
    if (req->ups->retry_tokens < 1.0)
        return 0;
    req->ups->retry_tokens -= 1.0;
    return 1;
}

/* The response head says a retry_on status: try another target? */
static int retry_on_status(sl_request_t *req)
{
    int st = req->r.status;
    if (st < 400 || st > 599)
        return 0;
    const uint64_t *bits = req->service->retry_status;
    if (!(bits[(st - 400) / 64] & ((uint64_t)1 << ((st - 400) % 64))))
        return 0;
    return req->state != RQ_RESPONDING && retry_on_allowed(req);
}

static int upstream_fail(sl_request_t *req, int why, int err)
{
    sl_conn_t *c = req->c;
    sl_upconn_t *u = req->up;
    int reused = u != NULL && u->reused;
    int replayable = is_replayable(req), idempotent = is_idempotent(req);
    int retry = 0, free_retry = 0;

    try_failed(req, why);

    if (req->state != RQ_RESPONDING && !req->resp_bytes_seen && replayable) {
        if (why == UF_CONNECT || why == UF_CONNECT_TIMEOUT) {
            /* Nothing reached the upstream: any method can go elsewhere. */
            retry = req->tries <= retries(req);
        } else if (reused && (why == UF_RESET || why == UF_WRITE) &&
                   (idempotent || why == UF_WRITE)) {
            /* A pooled connection the upstream had closed: one free retry on a
             * fresh connection, as the request was never processed. */
            retry = free_retry = 1;
        } else if (idempotent && (why == UF_RESET || why == UF_WRITE)) {
            /* The target went away mid-request (killed, restarted) before any
             * of its answer: an idempotent request may run again elsewhere,
             * as nginx's proxy_next_upstream error (Kong's) does. */
            retry = req->tries <= retries(req);
        } else if (why == UF_READ_TIMEOUT && req->service->retry_on_timeout) {
            retry = retry_on_allowed(req);
        }
    }
    if (why == UF_STATUS)
        retry = 1; /* the caller checked retry_on_status */
    /* A try that is retried is worth an info line; a failure the client sees,
     * a warning. */
    SL_LOG(retry ? SL_LOG_INFO : SL_LOG_WARN, "upstream %s:%u failed (%s%s%s) for %.*s %.*s%s",
           req->peer ? req->peer->conf->host : "?", req->peer ? req->peer->conf->port : 0,
           fail_reason(why), err ? ": " : "", err ? strerror(err) : "", (int)req->h.method_len,
           req->h.method, (int)req->h.path_len, req->h.path, retry ? "; retrying" : "");

    if (u != NULL) {
        sl_upconn_close(u);
        req->up = NULL;
    }
    if (!free_retry && why != UF_STATUS)
        report_health(req, why); /* a status was reported when the head came */
    release_peer(req, free_retry ? SL_BALANCER_ABORTED : SL_BALANCER_FAILED);
    if (req->state == RQ_RESPONDING) {
        /* Part of the response is out: the client can only see a cut connection. */
        req->status = req->status ? req->status : 502;
        sl_conn_close(c);
        return SL_DONE;
    }
    if (free_retry && req->target_host != NULL) {
        req->tries--;
    } else if (free_retry) {
        size_t i = (size_t)(req->peer - req->ups->peers);
        req->tries--;
        if (i < SL_BALANCER_MAX_TRIED)
            req->bctx.tried &= ~((uint64_t)1 << i);
    }
    if (retry) {
        req->try_start = now_seconds();
        req->resp_head_parsed = 0; /* a retry_on status's response is dropped */
        req->resp_bytes_seen = 0;
        req->resp_done = 0;
        req->status = 0;
        req->out_sent = 0;
        req->body_sent = req->head_len;
        req->rbody_sent = 0;
        if (req->resp != NULL)
            req->resp->start = req->resp->end = 0;
        return connect_upstream(req);
    }
    int timeout = why == UF_CONNECT_TIMEOUT || why == UF_READ_TIMEOUT || why == UF_WRITE_TIMEOUT;
    return respond_upstream_error(req, timeout ? 504 : 502, fail_text[why]);
}

static int connect_upstream(sl_request_t *req)
{
    sl_worker_t *w = req->c->w;
    sl_upstream_state_t *ups = req->ups;

    if (req->tries == 0 && ups != NULL && req->service->retry_on_any)
        ups->retry_tokens =
            SL_MIN(ups->retry_tokens + req->service->retry_budget / 100., SL_RETRY_TOKENS_MAX);

    for (;;) {
        if (req->target_host != NULL) {
            /* A plugin chose the target (sluice.service.set_target): no
             * balancer, and retries go to it again, as in Kong. */
            req->peer = sl_adhoc_peer_get(w, &req->target_addr, req->target_addrlen,
                                          req->target_host, req->target_host_len, req->target_port);
            if (req->peer == NULL) {
                SL_LOG(SL_LOG_ERR, "no peer for the target %.*s:%u a plugin set: %s",
                       (int)req->target_host_len, req->target_host, req->target_port,
                       strerror(errno));
                return respond_upstream_error(req, 503,
                                              "failure to get a peer from the ring-balancer");
            }
            req->tries++;
        } else {
            if (req->tries == 0 && ups->health != NULL && !sl_health_upstream_ok(ups->conf)) {
                /* Below healthchecks.threshold the upstream as a whole is down. */
                SL_LOG(SL_LOG_WARN, "upstream %s is unhealthy (below its threshold of %g%%)",
                       ups->conf->name, ups->conf->health.threshold);
                return respond_error(req->c, req, 503,
                                     "failure to get a peer from the ring-balancer",
                                     !req->body_done);
            }
            int i = ups->balancer->ops->select(ups->balancer, &req->bctx);
            if (i < 0 && req->bctx.tried != 0 && req->tries <= retries(req)) {
                /* Every target was tried: start over rather than give up early. */
                req->bctx.tried = 0;
                i = ups->balancer->ops->select(ups->balancer, &req->bctx);
            }
            if (i < 0) {
                if (req->tries > 0)
                    return respond_upstream_error(req, 502, fail_text[UF_CONNECT]);
                return respond_upstream_error(req, 503,
                                              "failure to get a peer from the ring-balancer");
            }
            req->tries++;
            req->peer_index = i;
            req->peer = &ups->peers[i];
            if (i < SL_BALANCER_MAX_TRIED)
                req->bctx.tried |= (uint64_t)1 << i;
        }
        try_begin(req);
        /* Rebuilt per try: the Host header can differ between targets. */
        if (build_upstream_head(req) != SL_OK)
            return respond_error(req->c, req, 431, "Request Header Fields Too Large", 1);

        sl_upconn_t *u = sl_upconn_get(w, req->peer, req);
        if (u == NULL) {
            int err = errno;
            req->up = NULL;
            if (upstream_fail(req, UF_CONNECT, err) == SL_DONE)
                return SL_DONE;
            /* upstream_fail either retried (recursing into here) or answered. */
            return SL_OK;
        }
        req->up = u;
        u->requests++;
        ev_set_cb(&u->io, upstream_io_cb);
        u->io.data = u;
        if (!u->connected) {
            req->state = RQ_CONNECTING;
            sl_upconn_watch(u, EV_WRITE);
            request_timer_set(req, connect_timeout(req));
            return SL_OK;
        }
        req->state = RQ_SENDING;
        return upstream_send(req);
    }
}

uint64_t sl_proxy_body_limit(const sl_request_t *req)
{
    uint64_t max = req->c->w->cf->server.max_body_size;
    uint64_t limit = max > 0 ? max : UINT64_MAX;
    if (req->max_body_plus_one != 0 && req->max_body_plus_one - 1 < limit)
        limit = req->max_body_plus_one - 1;
    return limit;
}

int sl_proxy_body_over(const sl_request_t *req)
{
    uint64_t limit = sl_proxy_body_limit(req);
    if (req->h.body == SL_HTTP_BODY_LENGTH)
        return (uint64_t)req->h.content_length > limit;
    if (req->h.body == SL_HTTP_BODY_CHUNKED)
        return req->chunked.total > limit;
    return 0;
}

/* Moves newly arrived request-body bytes in c->in into the "ready to send"
 * range, finding the end of the body. */
static int scan_body(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    sl_buf_t *in = c->in;
    if (req->body_done)
        return SL_OK;
    if (req->h.body == SL_HTTP_BODY_LENGTH) {
        size_t avail = in->end - req->body_scan;
        size_t take = (uint64_t)req->body_left < avail ? (size_t)req->body_left : avail;
        req->body_scan += take;
        req->body_left -= (int64_t)take;
        req->body_bytes += take;
        if (req->body_left == 0)
            req->body_done = 1;
        return SL_OK;
    }
    while (req->body_scan < in->end) {
        const char *data;
        size_t dlen;
        int n = sl_http_chunked_parse(&req->chunked, in->data + req->body_scan,
                                      in->end - req->body_scan, &data, &dlen);
        if (n < 0)
            return SL_ERROR;
        req->body_scan += (size_t)n;
        if (req->chunked.state == SL_CHUNKED_DONE) {
            req->body_done = 1;
            break;
        }
        if (n == 0)
            break;
    }
    req->body_bytes = req->chunked.total;
    if (req->chunked.total > sl_proxy_body_limit(req))
        return SL_DECLINED;
    return SL_OK;
}

/* --- request bodies in Lua ------------------------------------------------------ */

/* Decodes the chunked body gathered raw in b, in place (the payload only moves
 * left). The framing was checked as it arrived. */
static void dechunk_in_place(sl_bytes_t *b)
{
    sl_http_chunked_t ch;
    memset(&ch, 0, sizeof(ch));
    size_t r = 0, w = 0;
    while (r < b->len && ch.state != SL_CHUNKED_DONE) {
        const char *data;
        size_t dlen;
        int n = sl_http_chunked_parse(&ch, b->data + r, b->len - r, &data, &dlen);
        if (n <= 0)
            break;
        if (dlen > 0)
            memmove(b->data + w, data, dlen);
        w += dlen;
        r += (size_t)n;
    }
    b->len = w;
}

/* Moves the body bytes scan_body found in c->in into rbody (RB_READING) or
 * drops them (RB_DRAINING), leaving c->in with the head and whatever follows
 * a complete body. Raw bytes are gathered (chunked framing included) so that
 * a body found too large can still go upstream exactly as it came. Returns 1
 * when the waiting plugin can go on (the body is complete, or too large),
 * else 0. */
static int absorb_body(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    sl_buf_t *in = c->in;
    size_t n = req->body_scan - req->head_len;

    if (req->rbody_state == RB_READING) {
        size_t limit = c->w->cf->server.client_body_buffer_size;
        uint64_t decoded =
            req->h.body == SL_HTTP_BODY_CHUNKED ? req->chunked.total : req->rbody.len + n;
        /* Framing counts too, but tiny chunks must not make it unbounded. */
        if (decoded > limit || req->rbody.len + n > 2 * (uint64_t)limit + 65536 ||
            sl_bytes_append(&req->rbody, in->data + req->head_len, n) != SL_OK) {
            /* What is gathered goes first, the rest streams from c->in. */
            req->rbody_state = RB_OVER;
            return 1;
        }
    }
    if (n > 0) {
        memmove(in->data + req->head_len, in->data + req->body_scan, in->end - req->body_scan);
        in->end -= n;
        req->body_scan = req->body_sent = req->head_len;
    }
    if (!req->body_done) {
        sl_timer_set(c->w->loop, &c->timer, c->w->cf->server.client_body_timeout);
        if (!(c->events & EV_READ) && in->end < in->size)
            sl_conn_watch(c, c->events | EV_READ);
        return 0;
    }
    if (req->rbody_state == RB_READING && req->h.body == SL_HTTP_BODY_CHUNKED)
        dechunk_in_place(&req->rbody);
    req->rbody_state = RB_FULL;
    return 1;
}

static void rbody_wait_cancel(sl_wait_t *w)
{
    w->id = 0;
}

/* Registers the plugin thread `id` as the one waiting for the body. Returns
 * SL_OK, or SL_ERROR when the client is gone. */
static int rbody_wait(sl_request_t *req, int id)
{
    sl_conn_t *c = req->c;
    if (send_continue(req) != SL_OK)
        return SL_ERROR;
    sl_lua_wait_add(&req->task, &req->rbody_wait, id, rbody_wait_cancel);
    sl_timer_set(c->w->loop, &c->timer, c->w->cf->server.client_body_timeout);
    if (!(c->events & EV_READ) && c->in->end < c->in->size)
        sl_conn_watch(c, c->events | EV_READ);
    return SL_OK;
}

/* The body the plugin waits for is in (or too large): resume it. */
static int rbody_wake(sl_request_t *req)
{
    int id = req->rbody_wait.id;
    if (id == 0)
        return SL_OK;
    sl_lua_wait_done(&req->rbody_wait);
    req->rbody_wait.id = 0;
    if (req->state != RQ_LUA)
        return SL_OK;
    return lua_continue(req, id);
}

static const char *const ERR_BODY_BUSY = "another thread waits for the request body";
static const char *const ERR_BODY_PHASE = "not allowed in this phase";

int sl_proxy_read_body(sl_request_t *req, int id, const char **body, size_t *len, const char **err)
{
    if (req->task.phase != SL_PHASE_REWRITE && req->task.phase != SL_PHASE_ACCESS) {
        *err = ERR_BODY_PHASE;
        return SL_ERROR;
    }
    if (req->rbody_wait.id != 0) {
        *err = ERR_BODY_BUSY;
        return SL_ERROR;
    }
    if (req->rbody_state == RB_NONE) {
        const sl_server_conf_t *s = &req->c->w->cf->server;
        if (req->h.body == SL_HTTP_BODY_NONE)
            return SL_DECLINED;
        if (req->h.body == SL_HTTP_BODY_LENGTH &&
            (uint64_t)req->h.content_length > s->client_body_buffer_size) {
            req->rbody_state = RB_OVER;
        } else {
            req->rbody_state = RB_READING;
            if (!absorb_body(req)) {
                if (rbody_wait(req, id) != SL_OK) {
                    *err = "the client closed the connection";
                    return SL_ERROR;
                }
                return SL_AGAIN;
            }
        }
    }
    if (req->rbody_state == RB_OVER) {
        *err = "request body did not fit into client body buffer, consider raising "
               "'client_body_buffer_size'";
        return SL_ERROR;
    }
    *body = req->rbody.data != NULL ? req->rbody.data : "";
    *len = req->rbody.len;
    return SL_OK;
}

int sl_proxy_set_body(sl_request_t *req, int id, const char *body, size_t len, const char **err)
{
    if (req->task.phase != SL_PHASE_REWRITE && req->task.phase != SL_PHASE_ACCESS) {
        *err = ERR_BODY_PHASE;
        return SL_ERROR;
    }
    if (req->rbody_wait.id != 0) {
        *err = ERR_BODY_BUSY;
        return SL_ERROR;
    }
    if (sl_bytes_set(&req->rbody, body, len) != SL_OK) {
        *err = "out of memory";
        return SL_ERROR;
    }
    /* The client's own body is read to its end and dropped, so that the
     * connection can carry the next request. */
    req->rbody_state = RB_DRAINING;
    if (absorb_body(req))
        return SL_OK;
    if (rbody_wait(req, id) != SL_OK) {
        *err = "the client closed the connection";
        return SL_ERROR;
    }
    return SL_AGAIN;
}

/* Writes the head and whatever body is ready to the upstream: the head, then
 * the body plugins read or set (rbody), then body bytes streaming from c->in. */
static int upstream_send(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    sl_upconn_t *u = req->up;
    struct iovec iov[3];
    int n = 0;
    int has_rbody = req->rbody_state == RB_FULL || req->rbody_state == RB_OVER;

    if (req->out_sent < req->out->end) {
        iov[n].iov_base = req->out->data + req->out_sent;
        iov[n++].iov_len = req->out->end - req->out_sent;
    }
    if (has_rbody && req->rbody_sent < req->rbody.len) {
        iov[n].iov_base = req->rbody.data + req->rbody_sent;
        iov[n++].iov_len = req->rbody.len - req->rbody_sent;
    }
    if (req->body_sent < req->body_scan) {
        iov[n].iov_base = c->in->data + req->body_sent;
        iov[n++].iov_len = req->body_scan - req->body_sent;
    }
    if (n > 0) {
        size_t done = 0;
        int rc = sl_io_writev_all(&u->sock, iov, n, &done);
        size_t head_left = req->out->end - req->out_sent;
        size_t from_head = done < head_left ? done : head_left;
        req->out_sent += from_head;
        done -= from_head;
        if (has_rbody) {
            size_t rleft = req->rbody.len - req->rbody_sent;
            size_t from_rbody = done < rleft ? done : rleft;
            req->rbody_sent += from_rbody;
            done -= from_rbody;
        }
        req->body_sent += done;
        if (rc == SL_AGAIN) {
            req->state = RQ_SENDING;
            sl_upconn_watch(u, EV_READ | EV_WRITE);
            request_timer_set(req, write_timeout(req));
            return SL_OK;
        }
        if (rc != SL_OK)
            return upstream_fail(req, UF_WRITE, errno);
    }
    sl_upconn_watch(u, EV_READ);
    if (req->state == RQ_SENDING)
        req->state = RQ_WAITING;

    if (!req->body_done) {
        /* Everything read so far went out: reuse the buffer past the head. */
        sl_buf_t *in = c->in;
        if (req->body_sent == in->end && in->end > req->head_len) {
            in->end = req->body_scan = req->body_sent = req->head_len;
            req->body_trimmed = 1;
        }
        if (!(c->events & EV_READ))
            sl_conn_watch(c, c->events | EV_READ);
        sl_timer_set(c->w->loop, &c->timer, c->w->cf->server.client_body_timeout);
    } else {
        sl_timer_stop(c->w->loop, &c->timer);
    }
    if (!req->resp_head_parsed)
        request_timer_set(req, read_timeout(req));
    return SL_OK;
}

/* Builds the client's response head from the upstream's into req->out. In
 * filter mode the body's framing is sluice's own: a Content-Length when the
 * whole body is known (buffered; its bytes are the pending output), else
 * chunked for HTTP/1.1 clients and close-delimited for HTTP/1.0 ones, as
 * nginx does once a body filter may change the body. */
static int build_response_head(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    const sl_http_response_t *r = &req->r;
    const sl_server_conf_t *s = &c->w->cf->server;
    writer_t o = {req->out->data, req->out->data + req->out->size, 0};
    char line[32];
    int has_body = r->body != SL_HTTP_BODY_NONE;
    int whole = req->filter && req->buffering && !req->buffer_over && has_body;
    int close_delimited;

    req->resp_body = r->body;
    if (req->filter) {
        req->dechunk = r->body == SL_HTTP_BODY_CHUNKED;
        req->chunked_out = has_body && !whole && req->h.version == 11;
        close_delimited = has_body && !whole && req->h.version == 10;
    } else {
        req->dechunk = r->body == SL_HTTP_BODY_CHUNKED && req->h.version == 10;
        close_delimited = r->body == SL_HTTP_BODY_CLOSE || req->dechunk;
    }
    req->keepalive = (req->h.flags & SL_HTTP_F_KEEPALIVE) && !c->closing && !c->w->shutting_down &&
                     !close_delimited &&
                     (s->keepalive_requests <= 0 || c->requests < (uint32_t)s->keepalive_requests);

    int status = req->client_status ? req->client_status : r->status;
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %03d ", status);
    put(&o, line, (size_t)n);
    if (r->reason_len > 0 && status == r->status)
        put(&o, r->reason, r->reason_len);
    else {
        const char *reason = sl_http_reason(status);
        put(&o, reason, strlen(reason));
    }
    PUT_LIT(&o, "\r\n");
    int conn_hdrs = (r->flags & SL_HTTP_F_CONN_HDRS) != 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const sl_http_header_t *hd = &r->headers[i];
        if (is_hop_by_hop(hd) &&
            (!SL_IEQ(hd->name, hd->name_len, "content-length") || (req->filter && has_body)))
            continue;
        if (conn_hdrs && listed_in_connection(r->headers, r->nheaders, hd))
            continue;
        if (req->nops > 0 && op_replaces(req, 1, hd->name, hd->name_len))
            continue;
        put_header(&o, hd->name, hd->name_len, hd->value, hd->value_len);
    }
    put_client_ops(&o, req);
    if (whole) {
        PUT_LIT(&o, "Content-Length: ");
        put_u64(&o, req->odata_len);
        PUT_LIT(&o, "\r\n");
    } else if (req->chunked_out ||
               (!req->filter && r->body == SL_HTTP_BODY_CHUNKED && !req->dechunk)) {
        PUT_LIT(&o, "Transfer-Encoding: chunked\r\n");
    }
    if (!req->keepalive)
        PUT_LIT(&o, "Connection: close\r\n");
    else if (req->h.version == 10)
        PUT_LIT(&o, "Connection: keep-alive\r\n");
    PUT_LIT(&o, "\r\n");
    if (o.overflow)
        return SL_ERROR;
    req->out->start = 0;
    req->out->end = (size_t)(o.p - req->out->data);
    req->out_sent = 0;
    return SL_OK;
}

/* Marks response bytes in resp[resp_scan, end) as ready for the client,
 * finding where the body ends. */
static int scan_response(sl_request_t *req)
{
    sl_buf_t *b = req->resp;
    switch (req->resp_body) {
    case SL_HTTP_BODY_NONE:
        req->resp_done = 1;
        return SL_OK;
    case SL_HTTP_BODY_LENGTH: {
        size_t avail = b->end - req->resp_scan;
        size_t take = (uint64_t)req->resp_left < avail ? (size_t)req->resp_left : avail;
        req->resp_scan += take;
        req->resp_left -= (int64_t)take;
        if (req->resp_left == 0)
            req->resp_done = 1;
        return SL_OK;
    }
    case SL_HTTP_BODY_CLOSE:
        req->resp_scan = b->end;
        return SL_OK;
    }
    if (req->dechunk) {
        /* HTTP/1.0 client: compact the payload runs in place, dropping the framing. */
        size_t w = req->resp_scan, r = req->resp_scan;
        while (r < b->end && req->resp_chunked.state != SL_CHUNKED_DONE) {
            const char *data;
            size_t dlen;
            int n =
                sl_http_chunked_parse(&req->resp_chunked, b->data + r, b->end - r, &data, &dlen);
            if (n < 0)
                return SL_ERROR;
            if (n == 0)
                break;
            if (dlen > 0) {
                memmove(b->data + w, data, dlen);
                w += dlen;
            }
            r += (size_t)n;
        }
        /* Bytes after r are unparsed framing: keep them after the payload. */
        if (r < b->end && w < r)
            memmove(b->data + w, b->data + r, b->end - r);
        b->end -= r - w;
        req->resp_scan = w;
    } else {
        while (req->resp_scan < b->end) {
            const char *data;
            size_t dlen;
            int n = sl_http_chunked_parse(&req->resp_chunked, b->data + req->resp_scan,
                                          b->end - req->resp_scan, &data, &dlen);
            if (n < 0)
                return SL_ERROR;
            req->resp_scan += (size_t)n;
            if (n == 0 || req->resp_chunked.state == SL_CHUNKED_DONE)
                break;
        }
    }
    if (req->resp_chunked.state == SL_CHUNKED_DONE)
        req->resp_done = 1;
    return SL_OK;
}

/* Runs the route's body_filter chain on data[0, len); eof says it is the last
 * call. *out, *olen get what the plugins made of it: data itself, or a copy
 * in req->fbuf. Returns SL_OK, or SL_ERROR when a plugin failed (the runner
 * logged it with the plugin's name and a traceback). */
static int run_body_filter(sl_request_t *req, const char *data, size_t len, int eof,
                           const char **out, size_t *olen)
{
    *out = data;
    *olen = len;
    if (!HAS_PHASE(req, SL_PHASE_BODY_FILTER))
        return SL_OK;
    req->chunk = data;
    req->chunk_len = len;
    req->chunk_eof = eof;
    req->chunk_set = 0;
    int rc = sl_lua_phase(req, SL_PHASE_BODY_FILTER);
    req->chunk = NULL;
    if (rc == SL_AGAIN)
        SL_LOG(SL_LOG_ERR, "a plugin tried to yield in body_filter");
    if (rc != SL_OK)
        return SL_ERROR;
    if (req->chunk_set) {
        *out = req->fbuf.data != NULL ? req->fbuf.data : "";
        *olen = req->fbuf.len;
    }
    return SL_OK;
}

/* Filter mode: runs body_filter on the next piece of the body and makes what
 * it returns the pending output, framed for the client. */
static int filter_piece(sl_request_t *req, const char *data, size_t len, int eof)
{
    const char *out;
    size_t olen;
    if (run_body_filter(req, data, len, eof, &out, &olen) != SL_OK)
        return SL_ERROR;
    if (eof)
        req->filter_eof = 1;
    if (req->resp_body == SL_HTTP_BODY_NONE)
        olen = 0; /* HEAD, 204, 304: the eof call runs, nothing is sent */
    req->ohead_len = req->otail_len = 0;
    if (req->chunked_out) {
        if (olen > 0) {
            req->ohead_len = (uint8_t)snprintf(req->ohead, sizeof(req->ohead), "%zx\r\n", olen);
            memcpy(req->otail, "\r\n", 2);
            req->otail_len = 2;
        }
        if (eof) {
            memcpy(req->otail + req->otail_len, "0\r\n\r\n", 5);
            req->otail_len += 5;
        }
    }
    req->odata = out;
    req->odata_len = olen;
    req->osent = 0;
    return SL_OK;
}

/* A body_filter plugin failed: a 500 when nothing went to the client yet,
 * else the connection is cut (the client sees a truncated body). */
static int filter_failed(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    req->upstream_ok = 0;
    if (req->bytes_sent == 0)
        return respond_error(c, req, 500, "An unexpected error occurred", 1);
    SL_LOG(SL_LOG_INFO, "closing the connection of %s: body_filter failed mid-response",
           c->peer_text);
    sl_conn_close(c);
    return SL_DONE;
}

int sl_proxy_response_head(sl_request_t *req)
{
    if (HAS_PHASE(req, SL_PHASE_HEADER_FILTER)) {
        /* header_filter cannot wait for I/O: the response is on its way. */
        int rc = sl_lua_phase(req, SL_PHASE_HEADER_FILTER);
        if (rc == SL_AGAIN || rc == SL_DONE) {
            SL_LOG(SL_LOG_ERR, "a plugin tried to %s in header_filter",
                   rc == SL_AGAIN ? "yield" : "exit");
            rc = SL_ERROR;
        }
        if (rc == SL_ERROR) {
            req->upstream_ok = 0;
            return SL_ERROR;
        }
        if (req->client_status)
            req->status = req->client_status;
    }
    if (req->buffering && !req->buffer_over) {
        /* The whole body is known: body_filter sees it in one last call and
         * the client gets it with a Content-Length. body_filter's result may
         * go to fbuf too: C writes it there only after the last plugin, and
         * Lua reads the piece before. */
        const sl_bytes_t *body = req->body_set ? &req->fbuf : &req->ubody;
        const char *data = body->data != NULL ? body->data : "";
        if (filter_piece(req, data, body->len, 1) != SL_OK)
            return SL_DONE;
    }
    return build_response_head(req) == SL_OK ? SL_OK : SL_DECLINED;
}

/* The response head (and, with buffering, the whole body) is in: runs
 * header_filter, builds the client's head and starts sending. */
static int start_response(sl_request_t *req)
{
    sl_worker_t *w = req->c->w;
    int rc = sl_proxy_response_head(req);
    if (rc == SL_ERROR)
        return respond_error(req->c, req, 500, "An unexpected error occurred", !req->body_done);
    if (rc == SL_DONE)
        return filter_failed(req);
    if (rc != SL_OK)
        return upstream_fail(req, UF_BAD_RESPONSE, 0);
    req->state = RQ_RESPONDING;
    if (req->buffering && req->buffer_over && req->ubody.len > 0) {
        /* What was buffered before the limit goes first. */
        if (filter_piece(req, req->ubody.data, req->ubody.len, 0) != SL_OK)
            return filter_failed(req);
    }
    sl_timer_stop(w->loop, &req->timer);
    return SL_OK;
}

int sl_proxy_filter_body(sl_request_t *req, const char *data, size_t len, int eof, const char **out,
                         size_t *olen)
{
    return run_body_filter(req, data, len, eof, out, olen);
}

void sl_proxy_upstream_body(const sl_request_t *req, const char **pre, size_t *plen,
                            const char **rest, size_t *rlen)
{
    int has_rbody = req->rbody_state == RB_FULL || req->rbody_state == RB_OVER;
    *pre = has_rbody && req->rbody.data != NULL ? req->rbody.data : "";
    *plen = has_rbody ? req->rbody.len : 0;
    *rest = "";
    *rlen = 0;
    if (req->rbody_state != RB_FULL && req->body_scan > req->body_sent) {
        *rest = req->c->in->data + req->body_sent;
        *rlen = req->body_scan - req->body_sent;
    }
}

int sl_proxy_upstream_head(sl_request_t *req)
{
    sl_upstream_state_t *ups = req->ups;
    int i = ups->balancer->ops->select(ups->balancer, &req->bctx);
    if (i < 0)
        return SL_DECLINED;
    req->tries++;
    req->peer_index = i;
    req->peer = &ups->peers[i];
    try_begin(req);
    if (req->out == NULL && (req->out = sl_buf_get(req->c->w)) == NULL)
        return SL_ERROR;
    return build_upstream_head(req);
}

/* Buffering: moves the decoded body bytes scanned in resp into ubody, keeping
 * the head where it is (header_filter has not read it yet). */
static void buffer_body(sl_request_t *req)
{
    sl_buf_t *b = req->resp;
    size_t n = req->resp_scan - req->resp_sent;
    size_t limit = req->c->w->cf->server.response_body_buffer_size;
    if (req->buffer_over)
        return;
    if (req->ubody.len + n > limit ||
        sl_bytes_append(&req->ubody, b->data + req->resp_sent, n) != SL_OK) {
        req->buffer_over = 1;
        return;
    }
    memmove(b->data + req->resp_body_start, b->data + req->resp_scan, b->end - req->resp_scan);
    b->end -= req->resp_scan - req->resp_body_start;
    req->resp_sent = req->resp_scan = req->resp_body_start;
}

static int upstream_read(sl_request_t *req)
{
    sl_upconn_t *u = req->up;
    sl_worker_t *w = req->c->w;

    if (req->resp == NULL) {
        req->resp = sl_buf_get(w);
        if (req->resp == NULL)
            return respond_error(req->c, req, 500, "An unexpected error occurred", 1);
    }
    sl_buf_t *b = req->resp;

    for (;;) {
        if (b->end == b->size) {
            if (!req->resp_head_parsed)
                return upstream_fail(req, UF_BAD_RESPONSE, 0);
            /* The client is behind: stop reading until client_send drains. */
            sl_upconn_watch(u, 0);
            break;
        }
        ssize_t n = u->sock.ops->read(&u->sock, b->data + b->end, b->size - b->end);
        if (n == SL_AGAIN)
            break;
        if (n < 0)
            return upstream_fail(req, UF_RESET, errno);
        if (n == 0) {
            if (!req->resp_head_parsed)
                return upstream_fail(req, UF_RESET, 0);
            if (req->resp_body == SL_HTTP_BODY_CLOSE) {
                req->resp_done = 1;
                req->upstream_ok = 0;
                break;
            }
            if (!req->resp_done)
                return upstream_fail(req, UF_RESET, 0);
            break;
        }
        req->resp_bytes_seen = 1;
        b->end += (size_t)n;

        if (!req->resp_head_parsed) {
            int hn;
            for (;;) {
                hn = sl_http_parse_response(
                    b->data + b->start, b->end - b->start, &req->r, req->resp_headers,
                    SL_MAX(w->cf->server.max_headers, 100), req->h.method_id);
                if (hn < 0 || req->r.status >= 200 || req->r.status == 101)
                    break;
                /* 1xx interim responses are dropped: sluice handled Expect itself. */
                b->start += (size_t)hn;
            }
            if (hn == SL_AGAIN) {
                if (b->start > 0 && b->start == b->end)
                    b->start = b->end = 0;
                continue;
            }
            if (hn < 0 || req->r.status == 101)
                return upstream_fail(req, UF_BAD_RESPONSE, 0);
            req->resp_head_parsed = 1;
            req->upstream_header = now_seconds();
            req->status = req->r.status;
            if (req->peer_index >= 0 && req->peer->health != NULL)
                sl_health_report(req->ups->conf, (size_t)req->peer_index, SL_HEALTH_PASSIVE,
                                 SL_HEALTH_STATUS, req->r.status, sl_health_now());
            if (req->service->retry_on_any && retry_on_status(req))
                return upstream_fail(req, UF_STATUS, 0);
            req->resp_left = req->r.content_length;
            req->upstream_ok = (req->r.flags & SL_HTTP_F_KEEPALIVE) != 0;
            req->resp_body = req->r.body;
            req->resp_sent = req->resp_scan = req->resp_body_start = b->start + (size_t)hn;
            req->filter = req->buffering || HAS_PHASE(req, SL_PHASE_BODY_FILTER);
            req->dechunk = req->filter && req->r.body == SL_HTTP_BODY_CHUNKED;
            if (!req->buffering) {
                int rc = start_response(req);
                if (rc != SL_OK || req->state != RQ_RESPONDING)
                    return rc;
            }
        }
        if (scan_response(req) != SL_OK)
            return upstream_fail(req, UF_BAD_RESPONSE, 0);
        if (req->state != RQ_RESPONDING) {
            /* Buffering: the body goes to ubody until it ends or overflows. */
            buffer_body(req);
            if (!req->buffer_over && b->end == b->size)
                req->buffer_over = 1; /* a head that leaves no room to read into */
            if (req->buffer_over || req->resp_done) {
                int rc = start_response(req);
                if (rc != SL_OK || req->state != RQ_RESPONDING)
                    return rc;
            }
        }
        if (req->resp_done)
            break;
    }
    if (!req->resp_head_parsed)
        return SL_OK;
    if (req->state != RQ_RESPONDING) {
        request_timer_set(req, read_timeout(req)); /* still buffering */
        return SL_OK;
    }
    if (req->resp_done && req->resp_scan < b->end)
        req->upstream_ok = 0; /* bytes past the response: the connection is not clean */
    /* read_timeout runs while sluice waits for the upstream, not while the
     * upstream waits for a slow client. */
    if (!req->resp_done && (u->events & EV_READ))
        request_timer_set(req, read_timeout(req));
    else
        sl_timer_stop(w->loop, &req->timer);
    return client_send(req);
}

static void upstream_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    SL_UNUSED(loop);
    sl_upconn_t *u = io->data;
    sl_request_t *req = u->req;

    if (req->state == RQ_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(u->sock.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            upstream_fail(req, UF_CONNECT, err);
            return;
        }
        u->connected = 1;
        req->state = RQ_SENDING;
        upstream_send(req);
        return;
    }
    if ((revents & EV_WRITE) && req->state == RQ_SENDING) {
        if (upstream_send(req) == SL_DONE)
            return;
        if (req->up != u)
            return;
    }
    if (revents & EV_READ) {
        if (req->state == RQ_SENDING || req->state == RQ_WAITING || req->state == RQ_RESPONDING)
            upstream_read(req);
    }
}

static void request_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(revents);
    sl_request_t *req = t->data;
    if (!sl_timer_expired(loop, &req->timer))
        return;
    switch (req->state) {
    case RQ_CONNECTING:
        upstream_fail(req, UF_CONNECT_TIMEOUT, 0);
        break;
    case RQ_SENDING:
        upstream_fail(req, UF_WRITE_TIMEOUT, 0);
        break;
    case RQ_WAITING:
    case RQ_RESPONDING:
        upstream_fail(req, UF_READ_TIMEOUT, 0);
        break;
    default:
        break;
    }
}

/* --- client side ------------------------------------------------------------------ */

/* Writes iov[0..n) to the client: the head left in req->out first, then body
 * bytes, counted in *body_sent. Returns SL_OK when all went out, SL_AGAIN when
 * the socket is full (the connection then waits to be writable, under
 * send_timeout), or SL_DONE when the client is gone (the connection is
 * closed: touch neither it nor the request). */
static int client_writev(sl_request_t *req, struct iovec *iov, int n, size_t *body_sent)
{
    sl_conn_t *c = req->c;
    size_t written = 0;
    int rc = n > 0 ? sl_io_writev_all(&c->sock, iov, n, &written) : SL_OK;
    size_t head_left = req->out->end - req->out_sent;
    size_t from_head = written < head_left ? written : head_left;
    req->out_sent += from_head;
    *body_sent += written - from_head;
    req->bytes_sent += written;
    if (rc == SL_ERROR) {
        req->status = req->status ? req->status : 499;
        sl_conn_close(c);
        return SL_DONE;
    }
    if (rc == SL_AGAIN) {
        sl_conn_watch(c, c->events | EV_WRITE);
        sl_timer_set(c->w->loop, &c->timer, c->w->cf->server.send_timeout);
    }
    return rc;
}

/* Filter mode: sends the head and the pending output, running body_filter on
 * the next piece of the body whenever the last one is out. Only then is the
 * response buffer reused, so a slow client stops upstream reads exactly as in
 * plain streaming. */
static int client_send_filtered(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    sl_buf_t *b = req->resp;

    for (;;) {
        size_t total = (size_t)req->ohead_len + req->odata_len + req->otail_len;
        if (req->osent == total && !req->filter_eof && b != NULL) {
            if (req->resp_sent == req->resp_scan && req->resp_sent > 0) {
                /* Reuse the buffer past the head: body_filter may still read
                 * the response headers (unless the head leaves no room). */
                size_t base = b->size - req->resp_body_start >= 1024 ? req->resp_body_start : 0;
                if (req->resp_sent > base) {
                    memmove(b->data + base, b->data + req->resp_sent, b->end - req->resp_sent);
                    b->end -= req->resp_sent - base;
                    req->resp_sent = req->resp_scan = base;
                }
            }
            if (req->resp_sent < req->resp_scan || req->resp_done) {
                const char *data = b->data + req->resp_sent;
                size_t len = req->resp_scan - req->resp_sent;
                req->resp_sent = req->resp_scan;
                if (filter_piece(req, data, len, req->resp_done) != SL_OK)
                    return filter_failed(req);
                total = (size_t)req->ohead_len + req->odata_len + req->otail_len;
            }
        }

        struct iovec iov[4];
        int n = 0;
        if (req->out_sent < req->out->end) {
            iov[n].iov_base = req->out->data + req->out_sent;
            iov[n++].iov_len = req->out->end - req->out_sent;
        }
        size_t at = req->osent;
        const struct {
            const char *p;
            size_t len;
        } seg[3] = {{req->ohead, req->ohead_len},
                    {req->odata, req->odata_len},
                    {req->otail, req->otail_len}};
        for (int i = 0; i < 3; i++) {
            if (at < seg[i].len) {
                iov[n].iov_base = (char *)seg[i].p + at;
                iov[n++].iov_len = seg[i].len - at;
                at = 0;
            } else {
                at -= seg[i].len;
            }
        }
        if (n == 0)
            break;
        int rc = client_writev(req, iov, n, &req->osent);
        if (rc != SL_OK)
            return rc == SL_AGAIN ? SL_OK : rc;
        if (req->filter_eof || (req->resp_sent == req->resp_scan && !req->resp_done))
            break;
    }
    if (c->events & EV_WRITE)
        sl_conn_watch(c, c->events & ~(unsigned)EV_WRITE);
    if (req->filter_eof)
        return request_finish(req);
    if (req->up != NULL && !(req->up->events & EV_READ)) {
        sl_upconn_watch(req->up, EV_READ);
        request_timer_set(req, read_timeout(req));
    }
    return SL_OK;
}

/* Sends the response head and ready body bytes to the client. */
static int client_send(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    if (req->filter && req->state == RQ_RESPONDING)
        return client_send_filtered(req);
    struct iovec iov[2];
    int n = 0;

    if (req->out_sent < req->out->end) {
        iov[n].iov_base = req->out->data + req->out_sent;
        iov[n++].iov_len = req->out->end - req->out_sent;
    }
    if (req->resp != NULL && req->resp_sent < req->resp_scan) {
        iov[n].iov_base = req->resp->data + req->resp_sent;
        iov[n++].iov_len = req->resp_scan - req->resp_sent;
    } else if (req->lbody != NULL && req->resp_sent < req->lbody_len) {
        /* A plugin's large exit body: resp_sent counts its bytes. */
        iov[n].iov_base = (char *)req->lbody + req->resp_sent;
        iov[n++].iov_len = req->lbody_len - req->resp_sent;
    }
    int rc = client_writev(req, iov, n, &req->resp_sent);
    if (rc != SL_OK)
        return rc == SL_AGAIN ? SL_OK : rc;
    if (c->events & EV_WRITE)
        sl_conn_watch(c, c->events & ~(unsigned)EV_WRITE);

    if (req->resp_done)
        return request_finish(req);

    /* Everything ready went out: recycle the buffer, keeping any partial
     * chunk framing not parsed yet, and read more. */
    sl_buf_t *b = req->resp;
    if (b != NULL && req->resp_sent == req->resp_scan && req->resp_sent > 0) {
        memmove(b->data, b->data + req->resp_sent, b->end - req->resp_sent);
        b->end -= req->resp_sent;
        b->start = 0;
        req->resp_sent = req->resp_scan = 0;
    }
    if (req->up != NULL && !(req->up->events & EV_READ)) {
        sl_upconn_watch(req->up, EV_READ);
        request_timer_set(req, read_timeout(req));
    }
    return SL_OK;
}

int sl_proxy_client_write(sl_conn_t *c)
{
    sl_request_t *req = c->req;
    if (req == NULL || req->out == NULL) {
        sl_conn_watch(c, c->events & ~(unsigned)EV_WRITE);
        return SL_OK;
    }
    int rc = client_send(req);
    if (rc == SL_DONE)
        return SL_DONE;
    /* The socket drained: if the upstream was paused because our buffer was
     * full, pick up what it sent meanwhile. */
    if (c->req == req && req->up != NULL && req->state == RQ_RESPONDING &&
        req->resp_sent == req->resp_scan)
        return upstream_read(req);
    return SL_OK;
}

/* Closes after sending, reading (and dropping) what the client still sends for
 * a moment, so a response is not destroyed by a reset. */
static int linger(sl_conn_t *c)
{
    c->sock.ops->shutdown(&c->sock);
    c->state = SL_CONN_LINGER;
    if (c->in != NULL)
        c->in->start = c->in->end = 0;
    sl_conn_watch(c, EV_READ);
    sl_timer_set(c->w->loop, &c->timer, LINGER_MS);
    return SL_OK;
}

/* The response is out: log, pool the upstream connection, and either wait
 * for the next request or close. Always returns SL_DONE: the request is gone. */
static int request_finish(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    sl_worker_t *w = c->w;

    access_log(req);
    sl_metrics_request(req);
    if (req->route != NULL && sl_proxy_runs_phase(req, SL_PHASE_LOG)) {
        /* log runs after the response went out; it cannot wait for I/O. */
        if (sl_lua_phase(req, SL_PHASE_LOG) == SL_AGAIN)
            SL_LOG(SL_LOG_ERR, "a plugin tried to yield in the log phase");
    }
    if (req->up != NULL) {
        int keep = req->upstream_ok && req->resp_done && req->body_done &&
                   req->body_sent == req->body_scan && req->rbody_sent == req->rbody.len;
        sl_upconn_release(req->up, keep);
        req->up = NULL;
    }
    release_peer(req, SL_BALANCER_OK);

    int keepalive = req->keepalive && req->body_done && !c->eof;
    size_t next = req->body_done ? req->body_scan : 0;
    int unread = !req->body_done || (c->in != NULL && c->in->end > next);
    c->req = NULL;
    sl_proxy_request_put(w, req);

    if (!keepalive) {
        if (unread && !c->eof) {
            linger(c);
            return SL_DONE;
        }
        sl_conn_close(c);
        return SL_DONE;
    }

    sl_buf_t *in = c->in;
    if (in != NULL && next < in->end) {
        /* A pipelined request follows: move it to the front and go on. */
        memmove(in->data, in->data + next, in->end - next);
        in->end -= next;
        in->start = 0;
        c->state = SL_CONN_HEAD;
        if (!(c->events & EV_READ))
            sl_conn_watch(c, c->events | EV_READ);
        process_input(c);
        return SL_DONE;
    }
    sl_buf_put(w, in);
    c->in = NULL;
    c->state = SL_CONN_IDLE;
    if (!(c->events & EV_READ))
        sl_conn_watch(c, c->events | EV_READ);
    sl_timer_set(w->loop, &c->timer, w->cf->server.keepalive_timeout);
    return SL_DONE;
}

/* A body that was streaming grew over its limit (sl_proxy_body_limit).
 * While sluice sends a response of its own (a plugin's exit, an error) that
 * response goes on: it closes the connection after it, as the body did not
 * end. Otherwise the upstream connection, if any, is closed (it got part of
 * a body that will never end), and the client gets 413 when nothing of the
 * upstream's response went to it yet, then the connection is closed; once
 * that response started, the connection is closed at once and the client
 * sees a cut response. */
static int body_too_large(sl_conn_t *c, sl_request_t *req)
{
    if (req->state == RQ_LOCAL)
        return SL_OK;
    if (req->bytes_sent > 0) {
        SL_LOG(SL_LOG_INFO,
               "closing the connection of %s: the request body passed its limit after the "
               "response started",
               c->peer_text);
        sl_conn_close(c);
        return SL_DONE;
    }
    return respond_error(c, req, 413, "Request size limit exceeded", 1);
}

/* Parses and starts requests from c->in. */
static int process_input(sl_conn_t *c)
{
    sl_worker_t *w = c->w;
    const sl_server_conf_t *s = &w->cf->server;

    if (c->state == SL_CONN_REQUEST) {
        sl_request_t *req = c->req;
        if (req->body_done) {
            /* A pipelined request is arriving: keep it for later, but stop
             * reading when there is no room. */
            if (c->in->end == c->in->size)
                sl_conn_watch(c, c->events & ~(unsigned)EV_READ);
            return SL_OK;
        }
        int rc = scan_body(req);
        if (rc == SL_DECLINED)
            return body_too_large(c, req);
        if (rc != SL_OK)
            return respond_error(c, req, 400, "Bad request: invalid chunked body", 1);
        if (req->rbody_state == RB_READING || req->rbody_state == RB_DRAINING)
            return absorb_body(req) ? rbody_wake(req) : SL_OK;
        if (req->up != NULL && (req->state == RQ_SENDING || req->state == RQ_WAITING)) {
            if (!(req->up->events & EV_WRITE))
                return upstream_send(req);
        }
        if (c->in->end == c->in->size)
            sl_conn_watch(c, c->events & ~(unsigned)EV_READ);
        return SL_OK;
    }

    sl_buf_t *in = c->in;
    sl_http_limits_t limits = {s->max_request_line, s->max_header_size, s->max_headers,
                               s->underscores_in_headers};
    sl_request_t *req = sl_proxy_request_get(w);
    if (req == NULL) {
        sl_conn_close(c);
        return SL_DONE;
    }
    int n = sl_http_parse_request(in->data, in->end, &req->h, req->headers, &limits);
    if (n == SL_AGAIN) {
        sl_proxy_request_put(w, req);
        if (c->state == SL_CONN_IDLE) {
            c->state = SL_CONN_HEAD;
            sl_timer_set(w->loop, &c->timer, s->client_header_timeout);
        }
        if (c->eof) {
            sl_conn_close(c);
            return SL_DONE;
        }
        return SL_OK;
    }
    req->c = c;
    c->req = req;
    req->start = now_seconds();
    if (n < 0) {
        int status = req->h.error_status ? req->h.error_status : 400;
        const char *msg = req->h.error ? req->h.error : "Bad request";
        SL_LOG(SL_LOG_INFO, "client %s sent an invalid request: %s", c->peer_text, msg);
        req->h.flags = 0;
        return respond_error(c, req, status, msg, 1);
    }
    if (req->h.flags & SL_HTTP_F_UNDERSCORES)
        SL_LOG(SL_LOG_INFO, "client %s sent a header with '_' in its name; dropped it",
               c->peer_text);
    req->head_len = (size_t)n;
    if (c->eof && req->h.body != SL_HTTP_BODY_NONE && in->end == (size_t)n) {
        sl_conn_close(c);
        return SL_DONE;
    }
    int rc = start_request(c, req);
    if (rc == SL_DONE)
        return rc;
    /* Body bytes that came with the head. */
    if (!req->body_done || in->end > req->head_len) {
        int brc = scan_body(req);
        if (brc == SL_DECLINED)
            return body_too_large(c, req);
        if (brc != SL_OK)
            return respond_error(c, req, 400, "Bad request: invalid chunked body", 1);
        if (req->up != NULL && req->state != RQ_CONNECTING && !(req->up->events & EV_WRITE) &&
            req->body_sent < req->body_scan)
            return upstream_send(req);
    }
    return SL_OK;
}

int sl_proxy_client_read(sl_conn_t *c)
{
    sl_worker_t *w = c->w;

    if (c->state == SL_CONN_LINGER) {
        char scratch[4096];
        ssize_t n = c->sock.ops->read(&c->sock, scratch, sizeof(scratch));
        if (n == 0 || n == SL_ERROR) {
            sl_conn_close(c);
            return SL_DONE;
        }
        return SL_OK;
    }
    if (c->in == NULL) {
        c->in = sl_buf_get(w);
        if (c->in == NULL) {
            sl_conn_close(c);
            return SL_DONE;
        }
    }
    sl_buf_t *in = c->in;
    if (in->end == in->size) {
        sl_conn_watch(c, c->events & ~(unsigned)EV_READ);
        return SL_OK;
    }
    ssize_t n = c->sock.ops->read(&c->sock, in->data + in->end, in->size - in->end);
    if (n == SL_AGAIN) {
        if (c->state == SL_CONN_IDLE && in->end == 0) {
            sl_buf_put(w, in);
            c->in = NULL;
        }
        return SL_OK;
    }
    if (n <= 0) {
        /* EOF or error. Idle or mid-head: just close. Mid-request: the client
         * gave up, so the upstream exchange is dropped too. */
        if (c->state != SL_CONN_REQUEST || n < 0 || !c->req->body_done) {
            if (c->req != NULL && c->req->status == 0)
                c->req->status = 499;
            sl_conn_close(c);
            return SL_DONE;
        }
        c->eof = 1;
        sl_conn_watch(c, c->events & ~(unsigned)EV_READ);
        return SL_OK;
    }
    in->end += (size_t)n;
    return process_input(c);
}

void sl_proxy_client_timeout(sl_conn_t *c)
{
    sl_request_t *req = c->req;
    switch (c->state) {
    case SL_CONN_HEAD:
        if (c->in != NULL && c->in->end > 0) {
            respond_error(c, NULL, 408, "Request timeout", 1);
            return;
        }
        sl_conn_close(c);
        return;
    case SL_CONN_REQUEST:
        if (req != NULL && !req->body_done && req->state != RQ_RESPONDING &&
            req->state != RQ_LOCAL && (req->out == NULL || req->out_sent == req->out->end)) {
            respond_error(c, req, 408, "Request timeout", 1);
            return;
        }
        if (req != NULL && req->body_done && !(c->events & EV_WRITE))
            return; /* waiting on the upstream: its own timer decides */
        SL_LOG(SL_LOG_INFO, "client %s timed out", c->peer_text);
        sl_conn_close(c);
        return;
    default:
        sl_conn_close(c);
    }
}

void sl_proxy_abort(sl_request_t *req)
{
    sl_conn_t *c = req->c;
    if (req->status == 0)
        req->status = 499;
    access_log(req);
    sl_metrics_request(req);
    if (req->up != NULL) {
        sl_upconn_close(req->up);
        req->up = NULL;
    }
    release_peer(req, SL_BALANCER_OK);
    c->req = NULL;
    sl_proxy_request_put(c->w, req);
}

/* --- what the log phase reads ---------------------------------------------- */

/* The address of a target as text, "" when it has none. */
static void peer_ip(const sl_peer_t *p, char *out, size_t cap)
{
    out[0] = '\0';
    if (p == NULL || p->conf->addrlen == 0)
        return;
    const struct sockaddr_storage *a = &p->conf->addr;
    if (a->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, out, (socklen_t)cap);
    else if (a->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, out, (socklen_t)cap);
}

SL_EXPORT int sl_ffi_log_info(sl_request_t *r, sl_ffi_log_info_t *out, char *path, size_t cap,
                              size_t *plen, const char **err)
{
    if (r->task.phase < SL_PHASE_REWRITE || r->task.phase > SL_PHASE_LOG) {
        *err = "not allowed in this phase";
        return SL_ERROR;
    }
    double now = now_seconds();
    out->start = r->start;
    out->upstream_start = r->upstream_start;
    out->upstream_header = r->upstream_header;
    out->now = now;
    out->request_size = (double)(r->head_len + r->body_bytes);
    out->bytes_sent = (double)r->bytes_sent;
    out->status = r->client_status ? r->client_status : r->status;
    out->upstream_status = r->resp_head_parsed ? r->r.status : 0;
    out->tries = r->tries;
    out->nattempts = SL_MIN(r->tries, SL_TRY_LOG);
    for (int i = 0; i < out->nattempts; i++) {
        const sl_try_t *t = &r->trylog[i];
        sl_ffi_try_t *o = &out->attempts[i];
        o->start = t->start;
        o->header = t->header;
        o->finish = t->end;
        o->status = t->status;
        o->failure = t->failure;
        o->port = t->peer != NULL ? t->peer->conf->port : 0;
        peer_ip(t->peer, o->ip, sizeof(o->ip));
        if (i == r->tries - 1 && t->failure == 0) {
            /* The last try, still going or done: its head is the request's. */
            if (r->upstream_header >= t->start)
                o->header = r->upstream_header;
            o->status = out->upstream_status;
            o->finish = r->task.phase == SL_PHASE_LOG ? now : 0;
        }
    }
    *plen = 0;
    if (cap > 0 && r->route != NULL && r->service != NULL) {
        writer_t o = {path, path + cap, 0};
        if (r->up_path.data != NULL)
            put(&o, r->up_path.data, r->up_path.len);
        else
            put_upstream_path(&o, r);
        *plen = (size_t)(o.p - path);
    }
    return SL_OK;
}
