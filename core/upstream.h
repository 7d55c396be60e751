/* upstream.h: connections to upstream targets and the per-worker keep-alive pool. */
#ifndef SL_UPSTREAM_H
#define SL_UPSTREAM_H

#include <ev.h>

#include "config.h"
#include "conn.h"
#include "health.h"

typedef struct sl_balancer_s sl_balancer_t;
typedef struct sl_upconn_s sl_upconn_t;

/* Per-worker state of one target. */
typedef struct {
    const sl_target_t *conf;
    sl_queue_t idle; /* pooled connections, most recently used first */
    int nidle;
    int active;                 /* connections serving a request now */
    sl_health_target_t *health; /* shared health state; NULL when the upstream has no checks */
    uint32_t epoch; /* bumped when the address changes: older connections are not pooled */
} sl_peer_t;

/* Retries a worker may make by retry_on before any request paid for them. */
#define SL_RETRY_TOKENS_START 10.0
/* At most this many unspent retries are saved up. */
#define SL_RETRY_TOKENS_MAX 100.0

/* Per-worker state of one upstream. */
typedef struct {
    const sl_upstream_t *conf;
    sl_peer_t *peers; /* one per target, same order */
    size_t npeers;
    sl_balancer_t *balancer;
    sl_health_upstream_t *health; /* shared totals; NULL when the upstream has no checks */
    double retry_tokens;          /* the retry_on budget: see proxy.c retry_budget_take */
    /* This worker's copy of conf->targets, which the peers point to: a
     * name's slots hold the addresses adopted from the master's table, and
     * a slot without an address has weight 0, so no balancer picks it. */
    sl_target_t *targets;
    uint32_t *seen; /* per name of the upstream: the table version adopted */
    size_t nnames;
    uint8_t *changed; /* per peer: scratch for sl_upstreams_refresh */
} sl_upstream_state_t;

struct sl_upconn_s {
    ev_io io;
    sl_timer_t timer; /* idle timeout while pooled */
    sl_queue_t link;  /* in peer->idle while pooled */
    sl_worker_t *w;
    sl_peer_t *peer;
    sl_request_t *req; /* the request using it; NULL while pooled */
    sl_io_t sock;
    unsigned events;
    uint32_t requests; /* requests sent over this connection */
    uint32_t epoch;    /* peer->epoch when it connected */
    unsigned connected : 1;
    unsigned reused : 1; /* taken from the pool for the current request */
};

/* A target a plugin chose for one request (sluice.service.set_target), with
 * a keep-alive pool of its own. Each worker keeps SL_ADHOC_PEERS of them,
 * allocated on the first set_target; when all are taken, the least recently
 * used one that serves no request is reused (its pooled connections closed). */
#define SL_ADHOC_PEERS    64
#define SL_ADHOC_HOST_MAX 64 /* "[v6 literal]" fits */

typedef struct {
    sl_target_t conf;
    sl_peer_t peer;
    double last_used; /* 0: slot free */
    char host[SL_ADHOC_HOST_MAX];
} sl_adhoc_peer_t;

/* Returns the worker's peer for addr (whose Host text is host), creating it
 * on first use. Returns NULL with errno ENOMEM, or EBUSY when every slot
 * serves a request right now. */
sl_peer_t *sl_adhoc_peer_get(sl_worker_t *w, const struct sockaddr_storage *addr, socklen_t addrlen,
                             const char *host, size_t hlen, uint16_t port);

/* Closes the pooled connections of every ad-hoc peer (shutdown); destroy
 * also frees the table. */
void sl_adhoc_peers_close_idle(sl_worker_t *w);
void sl_adhoc_peers_destroy(sl_worker_t *w);

/* Builds the per-worker state of every upstream in cf. Returns NULL when out of memory. */
sl_upstream_state_t *sl_upstreams_create(const sl_config_t *cf);
void sl_upstreams_destroy(sl_upstream_state_t *ups, size_t n);

/* Adopts the address sets the master published for the names of every
 * upstream since the last call (targets.c): a slot whose address changed
 * gets the new one (or weight 0 when it has none), its pooled connections
 * are closed and connections still serving requests are not pooled again;
 * slots that kept their address keep everything. The upstream's balancer is
 * told which slots changed (consistent hashing rebuilds its ring). Costs one
 * relaxed atomic load per name when nothing changed. Returns how many
 * upstreams changed. */
size_t sl_upstreams_refresh(sl_upstream_state_t *ups, size_t n);

/* Starts a repeating timer on w's loop that calls sl_upstreams_refresh, when
 * some upstream has names; unwatch stops it. Returns SL_OK or SL_ERROR. */
int sl_upstreams_watch(sl_worker_t *w);
void sl_upstreams_unwatch(sl_worker_t *w);

/* Returns a pooled connection to peer, or starts a new non-blocking connect.
 * *reused says which. Returns NULL with errno set when the socket cannot be
 * created or connect fails at once. The connection belongs to req. */
sl_upconn_t *sl_upconn_get(sl_worker_t *w, sl_peer_t *peer, sl_request_t *req);

/* Returns u to its peer's pool if it may be reused (keepalive, under
 * max_requests, pool not full), else closes it. */
void sl_upconn_release(sl_upconn_t *u, int keepalive);

/* Closes u for good. */
void sl_upconn_close(sl_upconn_t *u);

void sl_upconn_watch(sl_upconn_t *u, unsigned events);

/* Closes every pooled connection of the worker (shutdown). */
void sl_upstreams_close_idle(sl_upstream_state_t *ups, size_t n);

#endif
