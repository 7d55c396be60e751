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
#include "targets.h"
#include "worker.h"

/* The adopted address of one slot: the table's, or none. */
static void set_slot(sl_target_t *t, const sl_target_t *conf, const sl_taddr_t *a)
{
    sl_taddr_to(a, conf->port, &t->addr, &t->addrlen);
    t->weight = t->addrlen > 0 ? conf->weight : 0;
}

static void peer_close_idle(sl_peer_t *peer);

/* Adopts what changed in the table for upstream u; returns 1 when a slot did. */
static int refresh_one(sl_upstream_state_t *u)
{
    const sl_upstream_t *conf = u->conf;
    int any = 0;
    size_t k = 0;
    for (size_t j = 0; j < u->npeers; j++) {
        if (conf->targets[j].dns_slot != 1)
            continue;
        sl_taddr_t set[SL_DNS_SLOTS];
        if (k >= u->nnames || !sl_targets_read(conf->targets[j].dns_name, &u->seen[k++], set))
            continue;
        for (size_t s = 0; s < SL_DNS_SLOTS && j + s < u->npeers; s++) {
            sl_target_t *t = &u->targets[j + s];
            sl_target_t next = *t;
            set_slot(&next, &conf->targets[j + s], &set[s]);
            if (next.addrlen == t->addrlen && memcmp(&next.addr, &t->addr, t->addrlen) == 0)
                continue;
            *t = next;
            sl_peer_t *p = &u->peers[j + s];
            p->epoch++;
            peer_close_idle(p);
            u->changed[j + s] = 1;
            any = 1;
        }
    }
    if (any) {
        u->balancer->ops->update(u->balancer, u->changed);
        memset(u->changed, 0, u->npeers);
    }
    return any;
}

size_t sl_upstreams_refresh(sl_upstream_state_t *ups, size_t n)
{
    size_t changed = 0;
    for (size_t i = 0; i < n; i++)
        if (ups[i].nnames > 0)
            changed += (size_t)refresh_one(&ups[i]);
    return changed;
}

sl_upstream_state_t *sl_upstreams_create(const sl_config_t *cf)
{
    sl_upstream_state_t *ups = calloc(cf->nupstreams ? cf->nupstreams : 1, sizeof(*ups));
    if (ups == NULL)
        return NULL;
    for (size_t i = 0; i < cf->nupstreams; i++) {
        const sl_upstream_t *conf = cf->upstreams[i];
        size_t n = conf->ntargets ? conf->ntargets : 1;
        ups[i].conf = conf;
        ups[i].npeers = conf->ntargets;
        ups[i].peers = calloc(n, sizeof(sl_peer_t));
        ups[i].targets = malloc(n * sizeof(sl_target_t));
        ups[i].changed = calloc(n, 1);
        if (ups[i].peers == NULL || ups[i].targets == NULL || ups[i].changed == NULL)
            goto failed;
        for (size_t j = 0; j < conf->ntargets; j++) {
            ups[i].targets[j] = conf->targets[j];
            if (conf->targets[j].dns_slot != 0 && conf->targets[j].addrlen == 0)
                ups[i].targets[j].weight = 0; /* a name's slot without an address */
            ups[i].nnames += conf->targets[j].dns_slot == 1;
            ups[i].peers[j].conf = &ups[i].targets[j];
            ups[i].peers[j].health = sl_health_target(conf, j);
            sl_queue_init(&ups[i].peers[j].idle);
        }
        if (ups[i].nnames > 0 && (ups[i].seen = calloc(ups[i].nnames, sizeof(uint32_t))) == NULL)
            goto failed;
        ups[i].health = sl_health_upstream(conf);
        ups[i].retry_tokens = SL_RETRY_TOKENS_START;
        ups[i].balancer = sl_balancer_create(&ups[i]);
        if (ups[i].balancer == NULL)
            goto failed;
        /* A respawned worker starts from what the master published since load. */
        if (ups[i].nnames > 0)
            refresh_one(&ups[i]);
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
        free(ups[i].targets);
        free(ups[i].seen);
        free(ups[i].changed);
    }
    free(ups);
}

/* Workers adopt new address sets this often: a lag far below any TTL, for
 * one relaxed load per name per tick. */
#define REFRESH_SECONDS 0.1

static ev_timer refresh_timer;

static void refresh_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    sl_worker_t *w = t->data;
    sl_upstreams_refresh(w->ups, w->nups);
}

int sl_upstreams_watch(sl_worker_t *w)
{
    size_t names = 0;
    for (size_t i = 0; i < w->nups; i++)
        names += w->ups[i].nnames;
    if (names == 0 || ev_is_active(&refresh_timer))
        return SL_OK;
    ev_timer_init(&refresh_timer, refresh_cb, REFRESH_SECONDS, REFRESH_SECONDS);
    refresh_timer.data = w;
    ev_timer_start(w->loop, &refresh_timer);
    ev_unref(w->loop); /* it alone does not keep a stopping worker alive */
    return SL_OK;
}

void sl_upstreams_unwatch(sl_worker_t *w)
{
    if (!ev_is_active(&refresh_timer))
        return;
    ev_ref(w->loop);
    ev_timer_stop(w->loop, &refresh_timer);
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
    u->epoch = peer->epoch;
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
    if (!keepalive || w->shutting_down || u->epoch != peer->epoch ||
        peer->nidle >= s->upstream_keepalive_pool_size ||
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
