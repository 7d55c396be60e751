/* inproc.c: in-process requests for `sluice test`: a real request through the real code, no
 * sockets.
 *
 * t.plugin(name, conf):run{...} (lua/sluice/test/plugin.lua) lands here. A
 * small config (one service, one route, the plugin as a global instance) is
 * validated by config.lua and compiled by config.c as at startup; its plugin
 * chains are added to the runner of the spec's own VM. A run then builds a
 * real sl_request_t: the raw request head goes through the real HTTP parser,
 * the path through the real normalizer and router, the phases through the
 * real runner (the request is a Lua task like any other, so its plugins may
 * wait for I/O while the spec blocks in the event loop). What would go
 * upstream is rendered by proxy.c's own code and parsed back; the upstream's
 * answer is the response the spec described, parsed by the real response
 * parser and passed through header_filter and proxy.c's response head. The
 * client connection is a context without a socket: nothing is ever written.
 */
#include <arpa/inet.h>
#include <ev.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <time.h>

#include "inproc.h"

#include "config.h"
#include "log.h"
#include "proxy.h"
#include "sl_ffi.h"
#include "sl_lua.h"
#include "upstream.h"
#include "worker.h"

#define INPROC_MT "sluice.inproc"

/* A compiled test config and the worker-like context its requests run in. */
typedef struct {
    sl_config_t *cf;
    sl_worker_t w;
    sl_listener_t ls;
} inproc_conf_t;

/* Where a run is: the phase that ran last. */
enum { AT_START = 0, AT_REWRITE, AT_ACCESS };

/* One run. Heap-allocated: its waits may outlive a spec that raised. */
typedef struct {
    sl_conn_t c;
    sl_request_t *req;
    inproc_conf_t *ic;
    int at;
    int done;
    int timed_out;
    int oom;
    ev_timer watchdog;
    /* The upstream request head as proxy.c rendered it (NULL: not proxied). */
    char *up_head;
    size_t up_head_len;
    /* The upstream response the spec described, and where its body starts. */
    const char *resp_raw;
    size_t resp_len;
    size_t resp_body;
    /* The client's response body, once proxied (into resp_raw or the request). */
    int proxied;
    const char *body;
    size_t body_len;
} inproc_t;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The log phase ran (when the route has one): the run is over. */
static void finish(inproc_t *ip)
{
    sl_request_t *req = ip->req;
    if (req->route != NULL && sl_proxy_runs_phase(req, SL_PHASE_LOG)) {
        if (sl_lua_phase(req, SL_PHASE_LOG) == SL_AGAIN)
            SL_LOG(SL_LOG_ERR, "a plugin tried to yield in the log phase");
    }
    ip->done = 1;
}

static void answer_error(inproc_t *ip, int status, const char *message)
{
    if (sl_proxy_error_head(ip->req, status, message) != SL_OK)
        ip->oom = 1;
    finish(ip);
}

/* The plugins let the request through: render what goes upstream, then
 * take the spec's upstream response through header_filter. */
static void proxy(inproc_t *ip)
{
    sl_request_t *req = ip->req;
    int rc = sl_proxy_upstream_head(req);
    if (rc == SL_DECLINED) {
        answer_error(ip, 503, "failure to get a peer from the ring-balancer");
        return;
    }
    if (rc != SL_OK) {
        answer_error(ip, 431, "Request Header Fields Too Large");
        return;
    }
    ip->up_head_len = req->out->end;
    ip->up_head = malloc(ip->up_head_len);
    if (ip->up_head == NULL) {
        ip->oom = 1;
        ip->done = 1;
        return;
    }
    memcpy(ip->up_head, req->out->data, ip->up_head_len);
    req->upstream_start = now_seconds();

    const sl_server_conf_t *s = &ip->ic->cf->server;
    int n = sl_http_parse_response(ip->resp_raw, ip->resp_len, &req->r, req->resp_headers,
                                   SL_MAX(s->max_headers, 100), req->h.method_id);
    if (n < 0) {
        answer_error(ip, 502, "An invalid response was received from the upstream server");
        return;
    }
    ip->resp_body = (size_t)n;
    /* As upstream_read does once the head is parsed. */
    req->resp_head_parsed = 1;
    req->upstream_header = now_seconds();
    req->status = req->r.status;
    req->resp_left = req->r.content_length;
    req->upstream_ok = (req->r.flags & SL_HTTP_F_KEEPALIVE) != 0;
    req->resp_body = req->r.body;
    req->filter = req->buffering || sl_proxy_runs_phase(req, SL_PHASE_BODY_FILTER);
    const char *body = ip->resp_raw + ip->resp_body;
    size_t blen = req->r.body == SL_HTTP_BODY_NONE ? 0 : ip->resp_len - ip->resp_body;
    if (req->buffering) {
        /* enable_buffering: the whole body is read before header_filter. */
        if (blen > s->response_body_buffer_size || sl_bytes_set(&req->ubody, body, blen) != SL_OK)
            req->buffer_over = 1;
    }
    rc = sl_proxy_response_head(req);
    if (rc == SL_ERROR || rc == SL_DONE) {
        answer_error(ip, 500, "An unexpected error occurred");
        return;
    }
    if (rc != SL_OK) {
        answer_error(ip, 502, "An invalid response was received from the upstream server");
        return;
    }
    /* The body the client gets: as it came, or what body_filter made of it
     * (the buffered body went through it with header_filter; a streamed one
     * is one piece and the last here). */
    ip->body = body;
    ip->body_len = blen;
    if (req->filter && req->buffering && !req->buffer_over) {
        ip->body = req->odata != NULL ? req->odata : "";
        ip->body_len = req->odata_len;
    } else if (req->filter) {
        if (sl_proxy_filter_body(req, body, blen, 1, &ip->body, &ip->body_len) != SL_OK) {
            answer_error(ip, 500, "An unexpected error occurred");
            return;
        }
        if (req->r.body == SL_HTTP_BODY_NONE)
            ip->body_len = 0;
    }
    ip->proxied = 1;
    finish(ip);
}

/* Moves the run on from what its last phase returned (as proxy.c's
 * lua_result and lua_continue do for a proxied request). */
static void advance(inproc_t *ip, int rc)
{
    sl_request_t *req = ip->req;
    for (;;) {
        if (rc == SL_AGAIN)
            return;
        if (rc == SL_DONE) {
            if (sl_proxy_exit_head(req) != SL_OK)
                ip->oom = 1;
            finish(ip);
            return;
        }
        if (rc != SL_OK) {
            answer_error(ip, 500, "An unexpected error occurred");
            return;
        }
        switch (ip->at) {
        case AT_START:
            ip->at = AT_REWRITE;
            rc = SL_OK;
            if (ip->ic->cf->rewrite_plugins)
                rc = sl_lua_phase_chain(req, SL_PHASE_REWRITE, ip->ic->cf->routes[0]->chain);
            break;
        case AT_REWRITE:
            if (sl_proxy_route(req) != SL_OK) {
                answer_error(ip, 404, "no Route matched with those values");
                return;
            }
            ip->at = AT_ACCESS;
            rc = SL_OK;
            if (sl_proxy_runs_phase(req, SL_PHASE_ACCESS))
                rc = sl_lua_phase(req, SL_PHASE_ACCESS);
            break;
        default:
            /* As proxy.c's proxy_request: a body over the limit a plugin set. */
            if (req->max_body_plus_one != 0 && sl_proxy_body_over(req)) {
                answer_error(ip, 413, "Request size limit exceeded");
                return;
            }
            proxy(ip);
            return;
        }
    }
}

static void run_wake(sl_lua_task_t *t, int id)
{
    sl_request_t *req = t->req;
    inproc_t *ip = (inproc_t *)req->c;
    if (ip->done)
        return;
    advance(ip, sl_lua_resume(req, id));
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    inproc_t *ip = (inproc_t *)((char *)t - offsetof(inproc_t, watchdog));
    ip->timed_out = 1;
    ip->done = 1;
}

/* Pushes headers as Lua sees them everywhere in sluice: lower-case names,
 * a repeated header as a list of its values. */
static void push_headers(lua_State *L, const sl_http_header_t *hs, size_t n)
{
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        char name[256];
        size_t len = SL_MIN(hs[i].name_len, sizeof(name));
        for (size_t j = 0; j < len; j++)
            name[j] = sl_lower(hs[i].name[j]);
        lua_pushlstring(L, name, len);
        lua_rawget(L, -2);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, name, len);
            lua_pushlstring(L, hs[i].value, hs[i].value_len);
        } else {
            if (!lua_istable(L, -1)) {
                lua_createtable(L, 2, 0);
                lua_insert(L, -2);
                lua_rawseti(L, -2, 1);
            }
            lua_pushlstring(L, hs[i].value, hs[i].value_len);
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
            lua_pushlstring(L, name, len);
            lua_insert(L, -2);
        }
        lua_rawset(L, -3);
    }
}

/* Pushes { method, path, query, headers, body } of the upstream request,
 * parsed back from the head proxy.c rendered. */
static const char *push_upstream(lua_State *L, inproc_t *ip)
{
    sl_request_t *req = ip->req;
    const sl_server_conf_t *s = &ip->ic->cf->server;
    size_t max = SL_MAX(s->max_headers, 100) + SL_MAX_HEADER_OPS + 16;
    sl_http_header_t *hs = malloc(max * sizeof(*hs));
    if (hs == NULL)
        return "out of memory";
    sl_http_request_t h;
    /* Keeps every header: the upstream gets what proxy.c rendered. */
    sl_http_limits_t limits = {ip->up_head_len, ip->up_head_len, max, 1};
    int n = sl_http_parse_request(ip->up_head, ip->up_head_len, &h, hs, &limits);
    if (n < 0) {
        free(hs);
        return "the upstream request sluice rendered does not parse";
    }
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, h.method, h.method_len);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, h.path, h.path_len);
    lua_setfield(L, -2, "path");
    if (h.query != NULL)
        lua_pushlstring(L, h.query, h.query_len);
    else
        lua_pushliteral(L, "");
    lua_setfield(L, -2, "query");
    push_headers(L, h.headers, h.nheaders);
    lua_setfield(L, -2, "headers");
    free(hs);
    /* What upstream_send would send after the head: the client's body, or
     * what plugins read or made of it. */
    const char *pre, *rest;
    size_t plen, rlen;
    sl_proxy_upstream_body(req, &pre, &plen, &rest, &rlen);
    lua_pushlstring(L, pre, plen);
    lua_pushlstring(L, rest, rlen);
    lua_concat(L, 2);
    lua_setfield(L, -2, "body");
    return NULL;
}

/* Pushes { status, headers, body, upstream } for a finished run, or returns
 * what went wrong. */
static const char *push_result(lua_State *L, inproc_t *ip)
{
    sl_request_t *req = ip->req;
    const sl_server_conf_t *s = &ip->ic->cf->server;
    size_t max = SL_MAX(s->max_headers, 100) + SL_MAX_HEADER_OPS + 16;
    sl_http_header_t *hs = malloc(max * sizeof(*hs));
    if (hs == NULL)
        return "out of memory";
    sl_http_response_t r;
    int n = sl_http_parse_response(req->out->data, req->out->end, &r, hs, max, req->h.method_id);
    if (n < 0) {
        free(hs);
        return "the response sluice rendered does not parse";
    }
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, r.status);
    lua_setfield(L, -2, "status");
    push_headers(L, r.headers, r.nheaders);
    lua_setfield(L, -2, "headers");
    free(hs);
    if (ip->proxied) {
        lua_pushlstring(L, ip->body, ip->body_len);
    } else if (req->lbody != NULL) {
        lua_pushlstring(L, req->lbody, req->lbody_len);
    } else {
        lua_pushlstring(L, req->out->data + n, req->out->end - (size_t)n);
    }
    lua_setfield(L, -2, "body");
    if (ip->up_head != NULL) {
        const char *err = push_upstream(L, ip);
        if (err != NULL)
            return err;
        lua_setfield(L, -2, "upstream");
    }
    return NULL;
}

/* inproc.new(config, chains): compiles a config that config.lua validated
 * (config) whose chains runner.add built (chains: its info). */
static int inproc_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (sl_lua_load_runtime() != SL_OK)
        return luaL_error(L, "cannot load the plugin runtime (see the log)");
    char *err = NULL;
    sl_config_t *cf = sl_config_compile(L, 1, "t.plugin", &err);
    if (cf == NULL) {
        lua_pushstring(L, err != NULL ? err : "out of memory");
        free(err);
        return lua_error(L);
    }
    inproc_conf_t *ic = lua_newuserdata(L, sizeof(*ic));
    memset(ic, 0, sizeof(*ic));
    ic->cf = cf;
    luaL_getmetatable(L, INPROC_MT);
    lua_setmetatable(L, -2);

    lua_getfield(L, 2, "first");
    int first = (int)lua_tointeger(L, -1);
    lua_getfield(L, 2, "rewrite");
    cf->rewrite_plugins = lua_toboolean(L, -1);
    lua_getfield(L, 2, "routes");
    for (size_t i = 0; i < cf->nroutes; i++) {
        lua_rawgeti(L, -1, (int)i + 1);
        cf->routes[i]->plugins = (unsigned)lua_tointeger(L, -1);
        cf->routes[i]->chain = first + (int)i;
        lua_pop(L, 1);
    }
    lua_pop(L, 3);

    sl_worker_t *w = &ic->w;
    w->cf = cf;
    w->loop = ev_default_loop(0);
    sl_queue_init(&w->conns);
    w->buf_size = SL_MAX(cf->server.max_header_size + 1024, (size_t)16384);
    w->access_log.fd = -1;
    memcpy(w->id_prefix, "7e57000000000000", 17);
    w->nups = cf->nupstreams;
    w->ups = sl_upstreams_create(cf);
    if (w->ups == NULL)
        return luaL_error(L, "out of memory");
    ic->ls.fd = -1;
    ic->ls.w = w;
    ic->ls.port = 8000;
    if (cf->server.nlistens > 0) {
        const sl_listen_t *l = &cf->server.listens[0];
        ic->ls.conf = l;
        ic->ls.port =
            ntohs(l->addr.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&l->addr)->sin6_port
                                                : ((const struct sockaddr_in *)&l->addr)->sin_port);
    }
    return 1;
}

static int inproc_gc(lua_State *L)
{
    inproc_conf_t *ic = luaL_checkudata(L, 1, INPROC_MT);
    sl_worker_t *w = &ic->w;
    if (ic->cf == NULL)
        return 0;
    sl_upstreams_destroy(w->ups, w->nups);
    while (w->free_bufs != NULL) {
        sl_buf_t *b = w->free_bufs;
        w->free_bufs = b->next;
        free(b);
    }
    while (w->free_reqs != NULL) {
        sl_request_t *r = w->free_reqs;
        w->free_reqs = r->next_free;
        ev_timer_stop(w->loop, &r->timer.ev);
        sl_arena_destroy(r->arena);
        free(r);
    }
    sl_config_free(ic->cf);
    ic->cf = NULL;
    return 0;
}

/* Ends a run: releases the request (its Lua task with it) and frees the run. */
static void run_free(inproc_t *ip)
{
    ev_timer_stop(ip->ic->w.loop, &ip->watchdog);
    if (ip->req != NULL)
        sl_proxy_abort(ip->req);
    free(ip->c.in);
    free(ip->up_head);
    free(ip);
}

/* inproc.run(conf, seq, raw_request, client_ip, client_port, upstream_raw,
 * timeout): runs one request to its end, blocking the spec in the loop, and
 * returns { status, headers, body, upstream = { method, path, query,
 * headers, body } or nil }. seq numbers the request's Lua context (the
 * caller may have filled it). Raises on a request that does not parse, an
 * invalid client address, or a run that does not end within timeout. */
static int inproc_run(lua_State *L)
{
    inproc_conf_t *ic = luaL_checkudata(L, 1, INPROC_MT);
    double seq = luaL_checknumber(L, 2);
    size_t raw_len, ip_len, resp_len;
    const char *raw = luaL_checklstring(L, 3, &raw_len);
    const char *client_ip = luaL_checklstring(L, 4, &ip_len);
    int client_port = (int)luaL_checkinteger(L, 5);
    const char *resp_raw = luaL_checklstring(L, 6, &resp_len);
    double timeout = luaL_optnumber(L, 7, 10.);
    sl_worker_t *w = &ic->w;
    const sl_server_conf_t *s = &ic->cf->server;

    /* Checked before anything starts: a run must not be left half-done. */
    sl_lua_test_check(L, ":run");

    inproc_t *ip = calloc(1, sizeof(*ip));
    if (ip == NULL)
        return luaL_error(L, "out of memory");
    ip->ic = ic;
    ip->resp_raw = resp_raw;
    ip->resp_len = resp_len;
    sl_conn_t *c = &ip->c;
    c->w = w;
    c->ls = &ic->ls;
    c->sock.fd = -1;
    c->sock.ops = &sl_plain_io;
    c->state = SL_CONN_REQUEST;
    c->requests = 1;
    sl_queue_init(&c->link);

    char text[INET6_ADDRSTRLEN];
    struct in_addr v4;
    if (ip_len == 0 || ip_len >= sizeof(text))
        goto bad_ip;
    memcpy(text, client_ip, ip_len);
    text[ip_len] = '\0';
    if (inet_pton(AF_INET, text, &v4) == 1) {
        c->peer[10] = c->peer[11] = 0xff;
        memcpy(c->peer + 12, &v4, 4);
    } else if (inet_pton(AF_INET6, text, c->peer) != 1) {
        goto bad_ip;
    }
    memcpy(c->peer_text, text, ip_len + 1);
    c->peer_text_len = (uint8_t)ip_len;
    c->peer_port = (uint16_t)client_port;

    size_t size = SL_MAX(raw_len, w->buf_size);
    c->in = malloc(sizeof(sl_buf_t) + size);
    if (c->in == NULL) {
        run_free(ip);
        return luaL_error(L, "out of memory");
    }
    c->in->size = size;
    c->in->start = 0;
    c->in->end = raw_len;
    memcpy(c->in->data, raw, raw_len);

    sl_request_t *req = ip->req = sl_proxy_request_get(w);
    if (req == NULL) {
        run_free(ip);
        return luaL_error(L, "out of memory");
    }
    req->c = c;
    c->req = req;
    sl_http_limits_t limits = {s->max_request_line, s->max_header_size, s->max_headers,
                               s->underscores_in_headers};
    int n = sl_http_parse_request(c->in->data, c->in->end, &req->h, req->headers, &limits);
    if (n < 0 || n == SL_AGAIN) {
        const char *why = n == SL_AGAIN ? "incomplete head" : req->h.error;
        lua_pushfstring(L, "the request does not parse: %s", why != NULL ? why : "?");
        run_free(ip);
        return lua_error(L);
    }
    req->head_len = (size_t)n;
    req->start = now_seconds();
    ev_now_update(w->loop);
    ev_timer_init(&ip->watchdog, watchdog_cb, timeout > 0 ? timeout : 10., 0.);
    ev_timer_start(w->loop, &ip->watchdog);

    const char *message = NULL;
    int status = sl_proxy_prepare(req, &message);
    req->task.seq = seq;
    req->task.wake = run_wake;
    if (status != SL_OK)
        answer_error(ip, status, message);
    else
        advance(ip, SL_OK);
    while (!ip->done)
        ev_run(w->loop, EVRUN_ONCE);

    if (ip->timed_out) {
        run_free(ip);
        return luaL_error(L, "the request did not finish within %f seconds", timeout);
    }
    if (ip->oom) {
        run_free(ip);
        return luaL_error(L, "out of memory");
    }
    const char *err = push_result(L, ip);
    run_free(ip);
    if (err != NULL)
        return luaL_error(L, "%s", err);
    return 1;

bad_ip:
    run_free(ip);
    return luaL_error(L, "bad client_ip '%s' (an IPv4 or IPv6 address expected)", client_ip);
}

int luaopen_sluice_inproc(lua_State *L)
{
    static const luaL_Reg fns[] = {{"new", inproc_new}, {"run", inproc_run}, {NULL, NULL}};
    if (luaL_newmetatable(L, INPROC_MT)) {
        lua_pushcfunction(L, inproc_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    luaL_register(L, NULL, fns);
    return 1;
}
