/* upstream.c: upstream sockets, non-blocking connects and the per-worker keep-alive pool. */
#include "upstream.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer.h"
#include "log.h"
#include "worker.h"

sl_upstream_state_t *sl_upstreams_create(const sl_config_t *cf)
{
    sl_upstream_state_t *ups = calloc(cf->nupstreams ? cf->nupstreams : 1, sizeof(*ups));
    if (ups == NULL)
        return NULL;
    for (size_t i = 0; i < cf->nupstreams; i++) {
        const sl_upstream_t *conf = cf->upstreams[i];
        ups[i].conf = conf;
        ups[i].npeers = conf->ntargets;
        ups[i].peers = calloc(conf->ntargets ? conf->ntargets : 1, sizeof(sl_peer_t));
        if (ups[i].peers == NULL)
            goto failed;
        for (size_t j = 0; j < conf->ntargets; j++) {
            ups[i].peers[j].conf = &conf->targets[j];
            ups[i].peers[j].health = sl_health_target(conf, j);
            sl_queue_init(&ups[i].peers[j].idle);
        }
        ups[i].health = sl_health_upstream(conf);
        ups[i].retry_tokens = SL_RETRY_TOKENS_START;
        ups[i].balancer = sl_balancer_create(&ups[i]);
        if (ups[i].balancer == NULL)
            goto failed;
    }
    return ups;
failed:
    sl_upstreams_destroy(ups, cf->nupstreams);
    return NULL;
}

void sl_upstreams_destroy(sl_upstream_state_t *ups, size_t n)
{
    if (ups == NULL)
        return;
    sl_upstreams_close_idle(ups, n);
    for (size_t i = 0; i < n; i++) {
        if (ups[i].balancer != NULL)
            ups[i].balancer->ops->destroy(ups[i].balancer);
        free(ups[i].peers);
    }
    free(ups);
}

void sl_upstreams_close_idle(sl_upstream_state_t *ups, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < ups[i].npeers; j++) {
            sl_queue_t *idle = &ups[i].peers[j].idle;
            while (!sl_queue_empty(idle))
                sl_upconn_close(sl_queue_data(idle->next, sl_upconn_t, link));
        }
    }
}

void sl_upconn_watch(sl_upconn_t *u, unsigned events)
{
    if (u->events == events)
        return;
    struct ev_loop *loop = u->w->loop;
    ev_io_stop(loop, &u->io);
    u->events = events;
    if (events != 0) {
        ev_io_set(&u->io, u->sock.fd, (int)events);
        ev_io_start(loop, &u->io);
    }
}

/* A pooled connection became readable: the upstream closed it or sent bytes
 * nobody asked for. Either way it cannot be reused. */
static void idle_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    sl_upconn_t *u = io->data;
    SL_LOG(SL_LOG_DEBUG, "pooled upstream connection to %s:%u closed by the upstream",
           u->peer->conf->host, u->peer->conf->port);
    sl_upconn_close(u);
}

static void idle_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(revents);
    sl_upconn_t *u = t->data;
    if (u->req == NULL && sl_timer_expired(loop, &u->timer))
        sl_upconn_close(u);
}

static void upconn_free(sl_upconn_t *u)
{
    struct ev_loop *loop = u->w->loop;
    ev_io_stop(loop, &u->io);
    ev_timer_stop(loop, &u->timer.ev);
    close(u->sock.fd);
    free(u);
}

sl_upconn_t *sl_upconn_get(sl_worker_t *w, sl_peer_t *peer, sl_request_t *req)
{
    sl_upconn_t *u;
    if (!sl_queue_empty(&peer->idle)) {
        u = sl_queue_data(peer->idle.next, sl_upconn_t, link);
        sl_queue_remove(&u->link);
        peer->nidle--;
        sl_timer_stop(w->loop, &u->timer);
        u->req = req;
        u->reused = 1;
        peer->active++;
        return u;
    }

    int fd = socket(peer->conf->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int connected = 1;
    if (connect(fd, (const struct sockaddr *)&peer->conf->addr, peer->conf->addrlen) != 0) {
        if (errno != EINPROGRESS) {
            int saved = errno;
            close(fd);
            errno = saved;
            return NULL;
        }
        connected = 0;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    u->w = w;
    u->peer = peer;
    u->req = req;
    u->sock.fd = fd;
    u->sock.ops = &sl_plain_io;
    u->connected = (unsigned)connected;
    sl_queue_init(&u->link);
    ev_io_init(&u->io, idle_io_cb, fd, EV_READ);
    u->io.data = u;
    sl_timer_init(&u->timer, idle_timer_cb, u);
    peer->active++;
    return u;
}

void sl_upconn_release(sl_upconn_t *u, int keepalive)
{
    sl_worker_t *w = u->w;
    const sl_server_conf_t *s = &w->cf->server;
    sl_peer_t *peer = u->peer;

    peer->active--;
    u->req = NULL;
    u->reused = 0;
    if (!keepalive || w->shutting_down || peer->nidle >= s->upstream_keepalive_pool_size ||
        (s->upstream_keepalive_max_requests > 0 &&
         u->requests >= (uint32_t)s->upstream_keepalive_max_requests)) {
        upconn_free(u);
        return;
    }
    ev_set_cb(&u->io, idle_io_cb);
    sl_upconn_watch(u, EV_READ);
    sl_queue_insert_head(&peer->idle, &u->link);
    peer->nidle++;
    sl_timer_set(w->loop, &u->timer, s->upstream_keepalive_idle_timeout);
}

void sl_upconn_close(sl_upconn_t *u)
{
    if (u->req == NULL) {
        sl_queue_remove(&u->link);
        u->peer->nidle--;
    } else {
        u->peer->active--;
    }
    upconn_free(u);
}

/* Ad-hoc peers ------------------------------------------------------------ */

static void peer_close_idle(sl_peer_t *peer)
{
    while (!sl_queue_empty(&peer->idle))
        sl_upconn_close(sl_queue_data(peer->idle.next, sl_upconn_t, link));
}

/* O(SL_ADHOC_PEERS) per call: a plugin that spreads requests over more
 * distinct targets than that would want a hash, and a balancer anyway. */
sl_peer_t *sl_adhoc_peer_get(sl_worker_t *w, const struct sockaddr_storage *addr, socklen_t addrlen,
                             const char *host, size_t hlen, uint16_t port)
{
    if (hlen >= SL_ADHOC_HOST_MAX) {
        errno = EINVAL;
        return NULL;
    }
    if (w->adhoc == NULL && (w->adhoc = calloc(SL_ADHOC_PEERS, sizeof(*w->adhoc))) == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    double now = ev_now(w->loop);
    sl_adhoc_peer_t *slot = NULL;
    for (int i = 0; i < SL_ADHOC_PEERS; i++) {
        sl_adhoc_peer_t *a = &w->adhoc[i];
        if (a->last_used == 0) {
            if (slot == NULL || slot->last_used != 0)
                slot = a;
            continue;
        }
        if (a->conf.addrlen == addrlen && memcmp(&a->conf.addr, addr, addrlen) == 0 &&
            strlen(a->host) == hlen && memcmp(a->host, host, hlen) == 0) {
            a->last_used = now;
            return &a->peer;
        }
        if (a->peer.active == 0 &&
            (slot == NULL || (slot->last_used != 0 && a->last_used < slot->last_used)))
            slot = a;
    }
    if (slot == NULL) {
        errno = EBUSY;
        return NULL;
    }
    if (slot->last_used != 0)
        peer_close_idle(&slot->peer);
    memcpy(slot->host, host, hlen);
    slot->host[hlen] = '\0';
    memcpy(&slot->conf.addr, addr, addrlen);
    slot->conf.addrlen = addrlen;
    slot->conf.host = slot->host;
    slot->conf.port = port;
    slot->conf.weight = 1;
    memset(&slot->peer, 0, sizeof(slot->peer));
    slot->peer.conf = &slot->conf;
    sl_queue_init(&slot->peer.idle);
    slot->last_used = now;
    return &slot->peer;
}

void sl_adhoc_peers_close_idle(sl_worker_t *w)
{
    if (w->adhoc == NULL)
        return;
    for (int i = 0; i < SL_ADHOC_PEERS; i++)
        if (w->adhoc[i].last_used != 0)
            peer_close_idle(&w->adhoc[i].peer);
}

void sl_adhoc_peers_destroy(sl_worker_t *w)
{
    sl_adhoc_peers_close_idle(w);
    free(w->adhoc);
    w->adhoc = NULL;
}
