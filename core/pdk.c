/* pdk.c: the sl_ffi_* functions the Lua PDK calls for the current request. */
#include <arpa/inet.h>
#include <ev.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "proxy.h"
#include "resolver.h"
#include "sl_ffi.h"
#include "sl_lua.h"
#include "worker.h"

static const char *const ERR_PHASE = "not allowed in this phase";

SL_EXPORT int sl_ffi_req_get_line(sl_request_t *r, const char **method, size_t *mlen,
                                  const char **path, size_t *plen, const char **query, size_t *qlen,
                                  int *has_query)
{
    *method = r->h.method;
    *mlen = r->h.method_len;
    *path = r->h.path;
    *plen = r->h.path_len;
    *query = r->h.query;
    *qlen = r->h.query_len;
    *has_query = r->h.query != NULL;
    return SL_OK;
}

SL_EXPORT int sl_ffi_req_get_host(sl_request_t *r, const char **host, size_t *hlen, int *port)
{
    const char *p = r->h.host;
    size_t n = r->h.host_len;
    /* The host without its port; an IPv6 literal keeps its brackets. */
    if (n > 0 && p[0] == '[') {
        const char *rb = memchr(p, ']', n);
        if (rb != NULL)
            n = (size_t)(rb - p) + 1;
    } else if (n > 0) {
        const char *colon = memchr(p, ':', n);
        if (colon != NULL)
            n = (size_t)(colon - p);
    }
    *host = p;
    *hlen = n;
    *port = r->c->ls->port;
    return SL_OK;
}

SL_EXPORT int sl_ffi_req_get_match(sl_request_t *r, const char **path, size_t *plen,
                                   const int **caps, int *ncaps, const char *const **names)
{
    *path = r->path;
    *plen = r->path_len;
    *caps = r->m.captures;
    *ncaps = r->route != NULL ? r->m.ncaptures : 0;
    *names = r->m.capture_names;
    return SL_OK;
}

SL_EXPORT int sl_ffi_req_header_count(sl_request_t *r)
{
    return (int)r->h.nheaders;
}

SL_EXPORT int sl_ffi_req_header_at(sl_request_t *r, int i, const char **name, size_t *nlen,
                                   const char **value, size_t *vlen)
{
    return sl_http_header_at(r->h.headers, r->h.nheaders, i, name, nlen, value, vlen);
}

SL_EXPORT int sl_ffi_header_get(sl_request_t *r, int target, const char *name, size_t nlen,
                                const char **value, size_t *vlen)
{
    const sl_http_header_t *h;
    size_t n;
    if (target == 0) {
        h = r->h.headers;
        n = r->h.nheaders;
    } else {
        if (!r->resp_head_parsed)
            return SL_DECLINED;
        h = r->r.headers;
        n = r->r.nheaders;
    }
    for (size_t i = 0; i < n; i++) {
        if (h[i].name_len == nlen && sl_http_name_eq(h[i].name, name, nlen)) {
            *value = h[i].value;
            *vlen = h[i].value_len;
            return SL_OK;
        }
    }
    return SL_DECLINED;
}

SL_EXPORT int sl_ffi_req_read_body(sl_request_t *r, int id, const char **body, size_t *len,
                                   const char **err)
{
    return sl_proxy_read_body(r, id, body, len, err);
}

SL_EXPORT int sl_ffi_req_set_body(sl_request_t *r, int id, const char *body, size_t len,
                                  const char **err)
{
    return sl_proxy_set_body(r, id, body, len, err);
}

SL_EXPORT int sl_ffi_req_http_version(sl_request_t *r)
{
    return r->h.version;
}

SL_EXPORT double sl_ffi_req_start_time(sl_request_t *r)
{
    return r->start;
}

SL_EXPORT int sl_ffi_req_client(sl_request_t *r, const char **ip, size_t *len, int *port)
{
    *ip = r->c->peer_text;
    *len = r->c->peer_text_len;
    *port = r->c->peer_port;
    return SL_OK;
}

SL_EXPORT int sl_ffi_req_conn(sl_request_t *r, char *addr, size_t cap, size_t *alen, int *port,
                              double *serial, int *requests)
{
    const sl_conn_t *c = r->c;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    /* An in-process test request has no socket: its listener's address. */
    if (getsockname(c->sock.fd, (struct sockaddr *)&ss, &sslen) != 0) {
        if (c->ls == NULL || c->ls->conf == NULL)
            sa = NULL;
        else
            sa = (const struct sockaddr *)&c->ls->conf->addr;
    }
    const char *text = NULL;
    if (sa != NULL && sa->sa_family == AF_INET)
        text =
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, (socklen_t)cap);
    else if (sa != NULL && sa->sa_family == AF_INET6)
        text = inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr,
                         (socklen_t)cap);
    if (text == NULL)
        snprintf(addr, cap, "0.0.0.0");
    *alen = strlen(addr);
    *port = c->ls != NULL ? c->ls->port : 0;
    *serial = (double)c->serial;
    *requests = (int)c->requests;
    return SL_OK;
}

SL_EXPORT int sl_ffi_req_set_max_body_size(sl_request_t *r, uint64_t bytes, const char **err)
{
    if (r->task.phase != SL_PHASE_REWRITE && r->task.phase != SL_PHASE_ACCESS) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (bytes >= UINT64_MAX) {
        *err = "the limit is too large";
        return SL_ERROR;
    }
    r->max_body_plus_one = bytes + 1;
    return sl_proxy_body_over(r) ? SL_DECLINED : SL_OK;
}

SL_EXPORT int sl_ffi_resp_status(sl_request_t *r)
{
    return r->client_status ? r->client_status : r->status;
}

SL_EXPORT int sl_ffi_upstream_status(sl_request_t *r)
{
    return r->resp_head_parsed ? r->r.status : 0;
}

SL_EXPORT int sl_ffi_resp_header_count(sl_request_t *r)
{
    return r->resp_head_parsed ? (int)r->r.nheaders : 0;
}

SL_EXPORT int sl_ffi_resp_header_at(sl_request_t *r, int i, const char **name, size_t *nlen,
                                    const char **value, size_t *vlen)
{
    if (!r->resp_head_parsed)
        return SL_DECLINED;
    return sl_http_header_at(r->r.headers, r->r.nheaders, i, name, nlen, value, vlen);
}

/* Copies s into the request's arena (created on first use). */
static const char *keep(sl_request_t *r, const char *s, size_t len)
{
    if (r->arena == NULL && (r->arena = sl_arena_create(16384)) == NULL)
        return NULL;
    return sl_arena_strndup(r->arena, s, len);
}

/* A header value may not hold CR, LF or NUL: they would split the head. */
static int value_ok(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
            return 0;
    return 1;
}

SL_EXPORT int sl_ffi_header_check(const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (nlen == 0 || !sl_http_is_token(name, nlen))
        return 1;
    return value_ok(value, vlen) ? 0 : 2;
}

SL_EXPORT int sl_ffi_header_op(sl_request_t *r, int target, int op, const char *name, size_t nlen,
                               const char *value, size_t vlen, const char **err)
{
    if (nlen == 0 || !sl_http_is_token(name, nlen))
        return 1;
    if (op != 2 && !value_ok(value, vlen))
        return 2;
    if ((target == 0 && r->task.phase > SL_PHASE_ACCESS) ||
        (target == 1 && r->task.phase > SL_PHASE_HEADER_FILTER)) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (op == 0 || op == 2) {
        /* A set or clear supersedes what earlier ops said about the name
         * (in any spelling: sl_http_name_eq). */
        int kept = 0;
        for (int i = 0; i < r->nops; i++) {
            sl_header_op_t *o = &r->ops[i];
            if (o->target == target && o->name_len == nlen && sl_http_name_eq(o->name, name, nlen))
                continue;
            r->ops[kept++] = *o;
        }
        r->nops = kept;
    }
    if (r->nops == SL_MAX_HEADER_OPS) {
        *err = "too many header changes in one request";
        return SL_ERROR;
    }
    sl_header_op_t *o = &r->ops[r->nops];
    o->name = keep(r, name, nlen);
    o->value = op == 2 ? "" : keep(r, value, vlen);
    if (o->name == NULL || o->value == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    o->target = (uint8_t)target;
    o->op = (uint8_t)op;
    o->name_len = (uint32_t)nlen;
    o->value_len = op == 2 ? 0 : (uint32_t)vlen;
    r->nops++;
    return SL_OK;
}

SL_EXPORT int sl_ffi_upstream_set(sl_request_t *r, int what, const char *value, size_t len,
                                  const char **err)
{
    if (r->task.phase > SL_PHASE_ACCESS) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    const char *copy = keep(r, value, len);
    if (copy == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    sl_str_t v = {copy, len};
    if (what == 0)
        r->up_method = v;
    else if (what == 1)
        r->up_path = v;
    else
        r->up_query = v;
    return SL_OK;
}

SL_EXPORT int sl_ffi_req_set_phases(sl_request_t *r, unsigned mask)
{
    r->lua_phases = mask;
    return SL_OK;
}

SL_EXPORT int sl_ffi_req_set_consumer(sl_request_t *r, const char *id, size_t len, const char **err)
{
    if (len == 0) {
        r->consumer_id = SL_NULL_STR;
        return SL_OK;
    }
    const char *copy = keep(r, id, len);
    if (copy == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    r->consumer_id = (sl_str_t){copy, len};
    return SL_OK;
}

SL_EXPORT int sl_ffi_log_set_fields(sl_request_t *r, const char *json, size_t len, const char **err)
{
    if (len == 0) {
        r->log_fields = NULL;
        r->log_fields_len = 0;
        return SL_OK;
    }
    const char *copy = keep(r, json, len);
    if (copy == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    r->log_fields = copy;
    r->log_fields_len = len;
    return SL_OK;
}

static int before_proxy(const sl_request_t *r)
{
    return r->task.phase == SL_PHASE_REWRITE || r->task.phase == SL_PHASE_ACCESS;
}

SL_EXPORT int sl_ffi_service_set_upstream(sl_request_t *r, int index, const char **err)
{
    sl_worker_t *w = r->c->w;
    if (r->task.phase != SL_PHASE_ACCESS) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (index < 0 || (size_t)index >= w->nups) {
        *err = "no such upstream";
        return SL_ERROR;
    }
    r->ups = &w->ups[index];
    r->ups_set = 1;
    r->target_host = NULL;
    return SL_OK;
}

SL_EXPORT int sl_ffi_service_set_target(sl_request_t *r, const char *host, size_t len,
                                        const char *ip, size_t iplen, int port, const char **err)
{
    char text[INET6_ADDRSTRLEN];
    char hostbuf[SL_ADHOC_HOST_MAX];
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    size_t hlen;

    if (!before_proxy(r)) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (port < 1 || port > 65535) {
        *err = "invalid port";
        return SL_ERROR;
    }
    /* "[::1]" and "::1" are the same address; the Host header needs brackets. */
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (ip != NULL) {
        /* A name Lua resolved: connect to ip, and name the host in Host. */
        if (len == 0 || len >= sizeof(hostbuf)) {
            *err = "host name too long (63 bytes at most)";
            return SL_ERROR;
        }
        if (!sl_addr_literal(ip, iplen, port, &ss, &sslen)) {
            *err = "invalid address";
            return SL_ERROR;
        }
        for (hlen = 0; hlen < len; hlen++) {
            char ch = host[hlen];
            hostbuf[hlen] = (char)((ch >= 'A' && ch <= 'Z') ? ch | 0x20 : ch);
        }
    } else {
        if (len == 0 || len >= sizeof(text))
            return SL_DECLINED;
        memcpy(text, host, len);
        text[len] = '\0';
        if (len == 9 && strncasecmp(text, "localhost", 9) == 0) {
            sl_addr_literal("127.0.0.1", 9, port, &ss, &sslen);
            hlen = (size_t)snprintf(hostbuf, sizeof(hostbuf), "localhost");
        } else if (!sl_addr_literal(text, strlen(text), port, &ss, &sslen)) {
            return SL_DECLINED;
        } else if (ss.ss_family == AF_INET6) {
            hlen = (size_t)snprintf(hostbuf, sizeof(hostbuf), "[%s]", text);
        } else {
            hlen = (size_t)snprintf(hostbuf, sizeof(hostbuf), "%s", text);
        }
    }
    const char *copy = keep(r, hostbuf, hlen);
    if (copy == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    r->target_host = copy;
    r->target_host_len = hlen;
    memcpy(&r->target_addr, &ss, sizeof(ss));
    r->target_addrlen = sslen;
    r->target_port = (uint16_t)port;
    return SL_OK;
}

SL_EXPORT int sl_ffi_service_set_timeouts(sl_request_t *r, int connect_timeout, int write_timeout,
                                          int read_timeout, const char **err)
{
    if (!before_proxy(r)) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (connect_timeout < 1 || write_timeout < 1 || read_timeout < 1) {
        *err = "timeouts are at least 1 ms";
        return SL_ERROR;
    }
    r->connect_timeout = connect_timeout;
    r->write_timeout = write_timeout;
    r->read_timeout = read_timeout;
    return SL_OK;
}

SL_EXPORT int sl_ffi_service_set_retries(sl_request_t *r, int retries, const char **err)
{
    if (!before_proxy(r)) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (retries < 0 || retries > 32767) {
        *err = "retries are 0 to 32767";
        return SL_ERROR;
    }
    r->retries_plus_one = retries + 1;
    return SL_OK;
}

SL_EXPORT int sl_ffi_resp_set_status(sl_request_t *r, int status, const char **err)
{
    if (r->task.phase != SL_PHASE_HEADER_FILTER) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    r->client_status = status;
    return SL_OK;
}

SL_EXPORT int sl_ffi_resp_get_chunk(sl_request_t *r, const char **data, size_t *len, int *eof,
                                    size_t *limit)
{
    *limit = r->c->w->cf->server.response_body_buffer_size;
    if (r->task.phase != SL_PHASE_BODY_FILTER) {
        *data = "";
        *len = 0;
        *eof = 0;
        return SL_DECLINED;
    }
    *data = r->chunk != NULL ? r->chunk : "";
    *len = r->chunk_len;
    *eof = r->chunk_eof;
    return SL_OK;
}

SL_EXPORT int sl_ffi_resp_set_chunk(sl_request_t *r, const char *data, size_t len, const char **err)
{
    if (r->task.phase != SL_PHASE_BODY_FILTER) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (sl_bytes_set(&r->fbuf, data, len) != SL_OK) {
        *err = "out of memory";
        return SL_ERROR;
    }
    r->chunk_set = 1;
    return SL_OK;
}

SL_EXPORT int sl_ffi_resp_enable_buffering(sl_request_t *r, const char **err)
{
    if (r->task.phase != SL_PHASE_REWRITE && r->task.phase != SL_PHASE_ACCESS) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    r->buffering = 1;
    return SL_OK;
}

SL_EXPORT int sl_ffi_upstream_body(sl_request_t *r, const char **body, size_t *len,
                                   const char **err)
{
    if (r->task.phase != SL_PHASE_HEADER_FILTER && r->task.phase != SL_PHASE_BODY_FILTER) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (!r->buffering || !r->resp_head_parsed)
        return SL_DECLINED;
    if (r->buffer_over) {
        *err = "response body did not fit into response body buffer, consider raising "
               "'response_body_buffer_size'";
        return SL_ERROR;
    }
    *body = r->ubody.data != NULL ? r->ubody.data : "";
    *len = r->ubody.len;
    return SL_OK;
}

SL_EXPORT int sl_ffi_resp_set_body(sl_request_t *r, const char *body, size_t len, const char **err)
{
    if (r->task.phase != SL_PHASE_HEADER_FILTER) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (!r->buffering || r->buffer_over || !r->resp_head_parsed) {
        *err = "the response body is not buffered (call "
               "sluice.service.request.enable_buffering in access)";
        return SL_ERROR;
    }
    if (sl_bytes_set(&r->fbuf, body, len) != SL_OK) {
        *err = "out of memory";
        return SL_ERROR;
    }
    r->body_set = 1;
    return SL_OK;
}

SL_EXPORT int sl_ffi_sleep(sl_lua_task_t *t, double seconds, int id, const char **err)
{
    if (t->phase != SL_PHASE_REWRITE && t->phase != SL_PHASE_ACCESS && t->phase != SL_PHASE_TIMER) {
        *err = ERR_PHASE;
        return SL_ERROR;
    }
    if (sl_lua_wait_timer(t, seconds, id) != SL_OK) {
        *err = "out of memory";
        return SL_ERROR;
    }
    return SL_OK;
}

SL_EXPORT void sl_ffi_log(int level, const char *msg, size_t len)
{
    if (level < SL_LOG_ERR)
        level = SL_LOG_ERR;
    if (level > SL_LOG_DEBUG)
        level = SL_LOG_DEBUG;
    if (sl_log_enabled(level))
        sl_log(level, "%.*s", (int)SL_MIN(len, (size_t)INT32_MAX), msg);
}

SL_EXPORT int sl_ffi_ip_trusted(const char *ip, size_t len)
{
    char text[INET6_ADDRSTRLEN];
    uint8_t addr[16];
    if (len == 0 || len >= sizeof(text) || sl_ffi_current.r == NULL)
        return SL_ERROR;
    memcpy(text, ip, len);
    text[len] = '\0';
    struct in_addr v4;
    if (inet_pton(AF_INET, text, &v4) == 1) {
        memset(addr, 0, 10);
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &v4, 4);
    } else if (inet_pton(AF_INET6, text, addr) != 1) {
        return SL_ERROR;
    }
    return sl_config_trusts(&sl_ffi_current.r->c->w->cf->server, addr);
}

SL_EXPORT int sl_ffi_worker_pid(void)
{
    return (int)getpid();
}

SL_EXPORT int sl_ffi_log_generation(void)
{
    return sl_log_generation;
}
