/* conn.c: downstream connections: creation, I/O through sl_io_ops_t, buffers, lazy timers. */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "proxy.h"
#include "worker.h"

/* Free buffers a worker keeps for reuse; more are freed. 512 x 32 KiB = 16 MiB. */
#define MAX_FREE_BUFS 512

sl_buf_t *sl_buf_get(sl_worker_t *w)
{
    sl_buf_t *b = w->free_bufs;
    if (b != NULL) {
        w->free_bufs = b->next;
        w->nfree_bufs--;
    } else {
        b = malloc(sizeof(*b) + w->buf_size);
        if (b == NULL)
            return NULL;
        b->size = w->buf_size;
    }
    b->next = NULL;
    b->start = 0;
    b->end = 0;
    return b;
}

void sl_buf_put(sl_worker_t *w, sl_buf_t *b)
{
    if (b == NULL)
        return;
    if (w->nfree_bufs >= MAX_FREE_BUFS) {
        free(b);
        return;
    }
    b->next = w->free_bufs;
    w->free_bufs = b;
    w->nfree_bufs++;
}

static ssize_t plain_read(sl_io_t *io, char *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(io->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? SL_AGAIN : SL_ERROR;
    }
}

static ssize_t plain_writev(sl_io_t *io, const struct iovec *iov, int iovcnt)
{
    for (;;) {
        ssize_t n = iovcnt == 1 ? send(io->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                                : writev(io->fd, iov, iovcnt);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? SL_AGAIN : SL_ERROR;
    }
}

static void plain_shutdown(sl_io_t *io)
{
    shutdown(io->fd, SHUT_WR);
}

const sl_io_ops_t sl_plain_io = {plain_read, plain_writev, plain_shutdown};

void sl_timer_init(sl_timer_t *t, void (*cb)(struct ev_loop *, ev_timer *, int), void *data)
{
    ev_init(&t->ev, cb);
    t->ev.data = data;
    t->deadline = 0;
}

void sl_timer_set(struct ev_loop *loop, sl_timer_t *t, int ms)
{
    ev_tstamp after = ms / 1000.0;
    t->deadline = ev_now(loop) + after;
    if (ev_is_active(&t->ev)) {
        /* Firing early is fine (the callback re-arms); firing late is not. */
        if (ev_timer_remaining(loop, &t->ev) <= after + 0.001)
            return;
        ev_timer_stop(loop, &t->ev);
    }
    ev_timer_set(&t->ev, after, 0.);
    ev_timer_start(loop, &t->ev);
}

void sl_timer_stop(struct ev_loop *loop, sl_timer_t *t)
{
    /* Leave the libev timer armed: when it fires with no deadline it just
     * ends, which is cheaper than a heap removal per request. */
    SL_UNUSED(loop);
    t->deadline = 0;
}

int sl_timer_expired(struct ev_loop *loop, sl_timer_t *t)
{
    if (t->deadline == 0)
        return 0;
    ev_tstamp left = t->deadline - ev_now(loop);
    if (left <= 0.0005)
        return 1;
    ev_timer_set(&t->ev, left, 0.);
    ev_timer_start(loop, &t->ev);
    return 0;
}

int sl_iov_advance(struct iovec **iovp, int iovcnt, size_t count)
{
    struct iovec *iov = *iovp;
    while (iovcnt > 0 && count >= iov->iov_len) {
        count -= iov->iov_len;
        iov++;
        iovcnt--;
    }
    if (iovcnt > 0) {
        iov->iov_base = (char *)iov->iov_base + count;
        iov->iov_len -= count;
    }
    *iovp = iov;
    return iovcnt;
}

int sl_io_writev_all(sl_io_t *io, struct iovec *iov, int iovcnt, size_t *written)
{
    *written = 0;
    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        ssize_t n = io->ops->writev(io, iov, iovcnt);
        if (n == SL_AGAIN)
            return SL_AGAIN;
        if (n < 0)
            return SL_ERROR;
        *written += (size_t)n;
        iovcnt = sl_iov_advance(&iov, iovcnt, (size_t)n);
    }
    return SL_OK;
}

static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    sl_conn_t *c = io->data;
    SL_UNUSED(loop);
    if ((revents & EV_WRITE) && sl_proxy_client_write(c) == SL_DONE)
        return;
    if (revents & EV_READ)
        sl_proxy_client_read(c);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sl_conn_t *c = t->data;
    SL_UNUSED(revents);
    if (sl_timer_expired(loop, &c->timer))
        sl_proxy_client_timeout(c);
}

void sl_conn_watch(sl_conn_t *c, unsigned events)
{
    if (c->events == events)
        return;
    struct ev_loop *loop = c->w->loop;
    ev_io_stop(loop, &c->io);
    c->events = events;
    if (events != 0) {
        ev_io_set(&c->io, c->sock.fd, (int)events);
        ev_io_start(loop, &c->io);
    }
}

sl_conn_t *sl_conn_create(sl_worker_t *w, const sl_listener_t *ls, int fd,
                          const struct sockaddr *sa, socklen_t salen)
{
    sl_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        sl_log(SL_LOG_ERR, "out of memory accepting a connection");
        close(fd);
        return NULL;
    }
    static uint64_t serial; /* per process, so per worker */
    c->w = w;
    c->ls = ls;
    c->serial = ++serial;
    c->sock.fd = fd;
    c->sock.ops = &sl_plain_io;
    c->state = SL_CONN_IDLE;

    if (sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memset(c->peer, 0, 10);
        c->peer[10] = c->peer[11] = 0xff;
        memcpy(c->peer + 12, &in->sin_addr, 4);
        c->peer_port = ntohs(in->sin_port);
        inet_ntop(AF_INET, &in->sin_addr, c->peer_text, sizeof(c->peer_text));
    } else if (sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(c->peer, &in6->sin6_addr, 16);
        c->peer_port = ntohs(in6->sin6_port);
        inet_ntop(AF_INET6, &in6->sin6_addr, c->peer_text, sizeof(c->peer_text));
    } else {
        strcpy(c->peer_text, "unix");
    }
    c->peer_text_len = (uint8_t)strlen(c->peer_text);

    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
    c->io.data = c;
    c->events = EV_READ;
    ev_io_start(w->loop, &c->io);
    sl_timer_init(&c->timer, conn_timer_cb, c);
    sl_timer_set(w->loop, &c->timer, w->cf->server.client_header_timeout);

    sl_queue_insert_tail(&w->conns, &c->link);
    w->nconns++;
    return c;
}

void sl_conn_close(sl_conn_t *c)
{
    sl_worker_t *w = c->w;
    if (c->req != NULL)
        sl_proxy_abort(c->req);
    ev_io_stop(w->loop, &c->io);
    ev_timer_stop(w->loop, &c->timer.ev);
    close(c->sock.fd);
    sl_buf_put(w, c->in);
    sl_queue_remove(&c->link);
    w->nconns--;
    free(c);
    sl_worker_conn_closed(w);
}
