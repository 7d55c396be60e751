/* http_client.c: outgoing HTTP/1.1 calls made by plugins (sluice.http), without blocking. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_parser.h"
#include "log.h"
#include "proxy.h"
#include "resolver.h"
#include "sl_ffi.h"
#include "sl_lua.h"

#define MAX_RESPONSE_HEADERS 100
#define FIRST_READ           16384

enum { HC_RESOLVING, HC_CONNECTING, HC_SENDING, HC_READING, HC_DONE };

/* Idle keep-alive connections of sluice.http, per worker: reused by the next
 * call to the same address, dropped when the server closes them (watched for
 * reads) or after IDLE_SECONDS. Bounded in number. */
#define POOL_MAX     64
#define IDLE_SECONDS 30.

typedef struct idle_s {
    ev_io io;
    ev_timer timer;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int fd;
    sl_queue_t link;
} idle_t;

static sl_queue_t idle_pool = {&idle_pool, &idle_pool};
static int nidle;

static void idle_drop(idle_t *i)
{
    struct ev_loop *loop = ev_default_loop(0);
    ev_io_stop(loop, &i->io);
    ev_timer_stop(loop, &i->timer);
    close(i->fd);
    sl_queue_remove(&i->link);
    nidle--;
    free(i);
}

static void idle_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    /* Readable while idle: closed by the server (or junk): not reusable. */
    idle_drop((idle_t *)io);
}

static void idle_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    idle_drop((idle_t *)((char *)t - offsetof(idle_t, timer)));
}

/* Keeps fd for reuse; closes it when the pool is full or out of memory. */
static void idle_put(int fd, const struct sockaddr_storage *addr, socklen_t addrlen)
{
    idle_t *i = nidle < POOL_MAX ? malloc(sizeof(*i)) : NULL;
    if (i == NULL) {
        close(fd);
        return;
    }
    i->fd = fd;
    i->addr = *addr;
    i->addrlen = addrlen;
    struct ev_loop *loop = ev_default_loop(0);
    ev_io_init(&i->io, idle_io_cb, fd, EV_READ);
    ev_io_start(loop, &i->io);
    ev_timer_init(&i->timer, idle_timer_cb, IDLE_SECONDS, 0.);
    ev_timer_start(loop, &i->timer);
    sl_queue_insert_head(&idle_pool, &i->link);
    nidle++;
}

/* Takes an idle connection to addr, or returns -1. */
static int idle_take(const struct sockaddr_storage *addr, socklen_t addrlen)
{
    for (sl_queue_t *q = idle_pool.next; q != &idle_pool; q = q->next) {
        idle_t *i = sl_queue_data(q, idle_t, link);
        if (i->addrlen == addrlen && memcmp(&i->addr, addr, addrlen) == 0) {
            int fd = i->fd;
            struct ev_loop *loop = ev_default_loop(0);
            ev_io_stop(loop, &i->io);
            ev_timer_stop(loop, &i->timer);
            sl_queue_remove(&i->link);
            nidle--;
            free(i);
            return fd;
        }
    }
    return -1;
}

/* One call. The request bytes come from Lua (it builds the head); the
 * response is read whole, up to max_size, then handed back by index. */
typedef struct {
    sl_wait_t wait;
    ev_io io;
    ev_timer timer;
    int fd;
    int state;
    int status; /* SL_OK or SL_ERROR once done */
    const char *error;
    char *out;
    size_t out_len, out_sent;
    char *in;
    size_t in_len, in_cap, max_size;
    int head_len;
    int method_id;
    sl_http_response_t r;
    sl_http_header_t headers[MAX_RESPONSE_HEADERS];
    sl_http_chunked_t chunked;
    char *body; /* decoded body: inside `in` */
    size_t body_len;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    size_t resp_end; /* where the response ends in `in` */
    int reused;      /* the connection came from the pool */
    int keepalive;   /* the finished exchange leaves it reusable */
    int port;
    sl_resolve_t *resolve; /* the host name's lookup, while HC_RESOLVING */
    char host[256];        /* the name looked up, for the error message */
    char errbuf[320];
} hclient_t;

static void hc_close_fd(hclient_t *hc)
{
    struct ev_loop *loop = ev_default_loop(0);
    if (hc->resolve != NULL) {
        sl_resolve_cancel(hc->resolve);
        hc->resolve = NULL;
    }
    ev_io_stop(loop, &hc->io);
    ev_timer_stop(loop, &hc->timer);
    if (hc->fd >= 0) {
        if (hc->keepalive)
            idle_put(hc->fd, &hc->addr, hc->addrlen);
        else
            close(hc->fd);
    }
    hc->fd = -1;
}

static void hc_free(hclient_t *hc)
{
    hc_close_fd(hc);
    free(hc->out);
    free(hc->in);
    free(hc);
}

static void hc_cancel(sl_wait_t *w)
{
    hc_free((hclient_t *)w);
}

/* Ends the call: the request's Lua side fetches the result, then frees it. */
static void hc_finish(hclient_t *hc, int status, const char *error)
{
    hc_close_fd(hc);
    hc->state = HC_DONE;
    hc->status = status;
    hc->error = error;
    /* Stays on the task's wait list until fetched, so it is freed even if
     * the task ends first; the id tells Lua which call ended. */
    sl_lua_wake(hc->wait.task, hc->wait.id);
}

/* Is the response complete in hc->in? Decodes a chunked body in place. */
static int hc_complete(hclient_t *hc, int eof)
{
    if (hc->head_len == 0) {
        int n = sl_http_parse_response(hc->in, hc->in_len, &hc->r, hc->headers,
                                       MAX_RESPONSE_HEADERS, hc->method_id);
        if (n == SL_AGAIN)
            return eof ? SL_ERROR : SL_AGAIN;
        if (n < 0)
            return SL_ERROR;
        if (hc->r.status < 200) {
            /* Interim responses are skipped. */
            memmove(hc->in, hc->in + n, hc->in_len - (size_t)n);
            hc->in_len -= (size_t)n;
            return hc_complete(hc, eof);
        }
        hc->head_len = n;
        hc->body = hc->in + n;
    }
    size_t avail = hc->in_len - (size_t)hc->head_len;
    switch (hc->r.body) {
    case SL_HTTP_BODY_NONE:
        hc->body_len = 0;
        hc->resp_end = (size_t)hc->head_len;
        return SL_OK;
    case SL_HTTP_BODY_LENGTH:
        if (avail < (uint64_t)hc->r.content_length)
            return eof ? SL_ERROR : SL_AGAIN;
        hc->body_len = (size_t)hc->r.content_length;
        hc->resp_end = (size_t)hc->head_len + hc->body_len;
        return SL_OK;
    case SL_HTTP_BODY_CLOSE:
        hc->body_len = avail;
        return eof ? SL_OK : SL_AGAIN;
    default:
        break;
    }
    /* Chunked: first find where it ends, parsing from the start over what
     * arrived (O(n) per read: fine for the API-sized bodies this is for). */
    memset(&hc->chunked, 0, sizeof(hc->chunked));
    const char *p = hc->in + hc->head_len, *end = hc->in + hc->in_len;
    while (p < end && hc->chunked.state != SL_CHUNKED_DONE) {
        const char *data;
        size_t dlen;
        int n = sl_http_chunked_parse(&hc->chunked, p, (size_t)(end - p), &data, &dlen);
        if (n < 0)
            return SL_ERROR;
        if (n == 0)
            break;
        p += n;
    }
    if (hc->chunked.state != SL_CHUNKED_DONE)
        return eof ? SL_ERROR : SL_AGAIN;
    hc->resp_end = (size_t)(p - hc->in);
    /* Second pass: compact the payload runs in place. */
    memset(&hc->chunked, 0, sizeof(hc->chunked));
    p = hc->in + hc->head_len;
    char *w = hc->body;
    while (p < end && hc->chunked.state != SL_CHUNKED_DONE) {
        const char *data;
        size_t dlen;
        int n = sl_http_chunked_parse(&hc->chunked, p, (size_t)(end - p), &data, &dlen);
        if (n <= 0)
            break;
        if (dlen > 0) {
            memmove(w, data, dlen);
            w += dlen;
        }
        p += n;
    }
    hc->body_len = (size_t)(w - hc->body);
    return SL_OK;
}

static void hc_io_cb(struct ev_loop *loop, ev_io *io, int revents);

/* Opens a fresh connection for hc (non-blocking). */
static int hc_connect(hclient_t *hc)
{
    hc->reused = 0;
    hc->fd = socket(hc->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (hc->fd < 0)
        return SL_ERROR;
    int one = 1;
    setsockopt(hc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    hc->state = HC_CONNECTING;
    if (connect(hc->fd, (struct sockaddr *)&hc->addr, hc->addrlen) == 0) {
        hc->state = HC_SENDING;
    } else if (errno != EINPROGRESS) {
        close(hc->fd);
        hc->fd = -1;
        return SL_ERROR;
    }
    return SL_OK;
}

/* A pooled connection the server had closed: send the call again on a fresh
 * one (nothing of it was processed: not a byte came back). */
static int hc_retry(hclient_t *hc)
{
    struct ev_loop *loop = ev_default_loop(0);
    ev_io_stop(loop, &hc->io);
    close(hc->fd);
    hc->fd = -1;
    hc->out_sent = 0;
    if (hc_connect(hc) != SL_OK)
        return SL_ERROR;
    ev_io_init(&hc->io, hc_io_cb, hc->fd, EV_WRITE);
    ev_io_start(loop, &hc->io);
    return SL_OK;
}

static void hc_read(hclient_t *hc)
{
    for (;;) {
        if (hc->in_cap - hc->in_len < 4096) {
            if (hc->in_cap >= hc->max_size) {
                hc_finish(hc, SL_ERROR, "response too large");
                return;
            }
            size_t cap = SL_MIN(hc->in_cap * 2, hc->max_size);
            char *in = realloc(hc->in, cap);
            if (in == NULL) {
                hc_finish(hc, SL_ERROR, "out of memory");
                return;
            }
            hc->in = in;
            hc->in_cap = cap;
            if (hc->head_len > 0)
                hc->body = hc->in + hc->head_len;
        }
        ssize_t n = read(hc->fd, hc->in + hc->in_len, hc->in_cap - hc->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            if (hc->reused && hc->in_len == 0 && hc_retry(hc) == SL_OK)
                return;
            hc_finish(hc, SL_ERROR, "connection reset");
            return;
        }
        hc->in_len += (size_t)n;
        int rc = hc_complete(hc, n == 0);
        if (rc == SL_OK) {
            /* Reusable when the server keeps it and sent nothing extra. */
            hc->keepalive = n > 0 && (hc->r.flags & SL_HTTP_F_KEEPALIVE) &&
                            hc->r.body != SL_HTTP_BODY_CLOSE && hc->resp_end == hc->in_len;
            hc_finish(hc, SL_OK, NULL);
            return;
        }
        if (rc == SL_ERROR) {
            if (n == 0 && hc->reused && hc->in_len == 0 && hc_retry(hc) == SL_OK)
                return;
            hc_finish(hc, SL_ERROR,
                      n == 0 ? "connection closed before the response ended" : "invalid response");
            return;
        }
        if (n == 0)
            return;
    }
}

static void hc_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    SL_UNUSED(revents);
    hclient_t *hc = (hclient_t *)((char *)io - offsetof(hclient_t, io));
    if (hc->state == HC_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(hc->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            hc_finish(hc, SL_ERROR, "connection refused");
            return;
        }
        hc->state = HC_SENDING;
    }
    if (hc->state == HC_SENDING) {
        while (hc->out_sent < hc->out_len) {
            ssize_t n =
                send(hc->fd, hc->out + hc->out_sent, hc->out_len - hc->out_sent, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                return;
            if (n < 0) {
                if (hc->reused && hc_retry(hc) == SL_OK)
                    return;
                hc_finish(hc, SL_ERROR, "write failed");
                return;
            }
            hc->out_sent += (size_t)n;
        }
        hc->state = HC_READING;
        ev_io_stop(loop, &hc->io);
        ev_io_set(&hc->io, hc->fd, EV_READ);
        ev_io_start(loop, &hc->io);
        return;
    }
    hc_read(hc);
}

static void hc_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    hclient_t *hc = (hclient_t *)((char *)t - offsetof(hclient_t, timer));
    hc_finish(hc, SL_ERROR, "timeout");
}

/* The address is known: take a pooled connection to it or open one, and
 * watch it. SL_ERROR when the connect fails at once. */
static int hc_go(hclient_t *hc)
{
    if (hc->addr.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&hc->addr)->sin6_port = htons((uint16_t)hc->port);
    else
        ((struct sockaddr_in *)&hc->addr)->sin_port = htons((uint16_t)hc->port);
    hc->fd = idle_take(&hc->addr, hc->addrlen);
    if (hc->fd >= 0) {
        hc->reused = 1;
        hc->state = HC_SENDING;
    } else if (hc_connect(hc) != SL_OK) {
        return SL_ERROR;
    }
    ev_io_init(&hc->io, hc_io_cb, hc->fd, EV_WRITE);
    ev_io_start(ev_default_loop(0), &hc->io);
    return SL_OK;
}

static void hc_resolved(void *data, int status, const struct sockaddr_storage *addr,
                        socklen_t addrlen, const char *err)
{
    hclient_t *hc = data;
    hc->resolve = NULL;
    if (status != SL_OK) {
        snprintf(hc->errbuf, sizeof(hc->errbuf), "could not resolve '%s': %s", hc->host, err);
        hc_finish(hc, SL_ERROR, hc->errbuf);
        return;
    }
    hc->addr = *addr;
    hc->addrlen = addrlen;
    if (hc_go(hc) != SL_OK)
        hc_finish(hc, SL_ERROR, "connection refused");
}

SL_EXPORT int sl_ffi_http_start(sl_lua_task_t *t, int id, const char *host, size_t hostlen,
                                int port, const char *bytes, size_t len, int method_head,
                                double timeout, size_t max_size, const char **err)
{
    if (t->phase != SL_PHASE_REWRITE && t->phase != SL_PHASE_ACCESS && t->phase != SL_PHASE_TIMER) {
        *err = "not allowed in this phase";
        return SL_ERROR;
    }
    if (hostlen == 0) {
        *err = "invalid address";
        return SL_ERROR;
    }
    hclient_t *hc = calloc(1, sizeof(*hc));
    if (hc == NULL || (hc->out = malloc(len)) == NULL ||
        (hc->in = malloc(SL_MIN((size_t)FIRST_READ, max_size))) == NULL) {
        if (hc != NULL) {
            free(hc->out);
            free(hc);
        }
        *err = "out of memory";
        return SL_ERROR;
    }
    memcpy(hc->out, bytes, len);
    hc->out_len = len;
    hc->in_cap = SL_MIN((size_t)FIRST_READ, max_size);
    hc->max_size = max_size;
    hc->method_id = method_head ? SL_HTTP_HEAD : SL_HTTP_GET;
    hc->port = port;
    hc->fd = -1;

    /* An IP literal is used as it is; a name goes to the resolver. */
    int literal = sl_addr_literal(host, hostlen, port, &hc->addr, &hc->addrlen);
    int rc = SL_OK;
    if (!literal && hostlen < sizeof(hc->host)) {
        memcpy(hc->host, host, hostlen);
        hc->host[hostlen] = '\0';
    }
    if (!literal)
        rc = sl_resolve(host, hostlen, &hc->addr, &hc->addrlen, hc_resolved, hc, &hc->resolve, err);
    if (rc == SL_AGAIN) {
        hc->state = HC_RESOLVING;
    } else if (rc != SL_OK || hc_go(hc) != SL_OK) {
        if (rc == SL_OK)
            *err = "connection refused";
        else if (!literal && hostlen < sizeof(hc->host)) {
            /* A failure the DNS cache remembered: say which name. The text
             * must outlive hc: it goes to a static buffer, read at once. */
            static char msg[320];
            snprintf(msg, sizeof(msg), "could not resolve '%s': %s", hc->host, *err);
            *err = msg;
        }
        free(hc->out);
        free(hc->in);
        free(hc);
        return SL_ERROR;
    }
    sl_lua_wait_add(t, &hc->wait, id, hc_cancel);
    ev_timer_init(&hc->timer, hc_timer_cb, timeout > 0 ? timeout : 60., 0.);
    ev_timer_start(ev_default_loop(0), &hc->timer);
    return SL_OK;
}

/* Finds the finished call `id` of t. */
static hclient_t *hc_find(sl_lua_task_t *t, int id)
{
    return (hclient_t *)sl_lua_wait_find(t, id, hc_cancel);
}

SL_EXPORT int sl_ffi_http_result(sl_lua_task_t *t, int id, int *status, int *nheaders,
                                 const char **body, size_t *blen, const char **err)
{
    hclient_t *hc = hc_find(t, id);
    if (hc == NULL || hc->state != HC_DONE) {
        *err = "no such call";
        return SL_ERROR;
    }
    if (hc->status != SL_OK) {
        *err = hc->error;
        return SL_ERROR;
    }
    *status = hc->r.status;
    *nheaders = (int)hc->r.nheaders;
    *body = hc->body;
    *blen = hc->body_len;
    return SL_OK;
}

SL_EXPORT int sl_ffi_http_header_at(sl_lua_task_t *t, int id, int i, const char **name,
                                    size_t *nlen, const char **value, size_t *vlen)
{
    hclient_t *hc = hc_find(t, id);
    if (hc == NULL || hc->state != HC_DONE)
        return SL_DECLINED;
    return sl_http_header_at(hc->headers, hc->r.nheaders, i, name, nlen, value, vlen);
}

SL_EXPORT void sl_ffi_http_free(sl_lua_task_t *t, int id)
{
    hclient_t *hc = hc_find(t, id);
    if (hc != NULL) {
        sl_lua_wait_done(&hc->wait);
        hc_free(hc);
    }
}
