/* balancer_hash.c: consistent hashing over a ring of `slots` points shared out by weight. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

#define NO_PEER UINT32_MAX

/* The ring is Kong's "wheel": `slots` points, each owned by one target, a
 * target owning a share of the points proportional to its weight. A key
 * hashes to a point; its target is that point's owner. A retry walks on to
 * the next points until it meets a target the request has not tried.
 *
 * Each point goes to the target with the highest weighted rendezvous score
 * (Schindelhauer and Schomaker's -w / ln(u), u a per-target, per-point hash
 * in (0, 1)). Scores do not depend on the other targets, so adding a target
 * moves only the points it wins (about w_new / W_total of them, every one to
 * the new target), and removing one moves only its own points. The order of
 * targets in the file does not matter. Building costs O(slots * targets)
 * log() calls per worker at start-up: 10,000 slots and 10 targets take about
 * a millisecond; 65,536 slots and 1,000 targets would take about a second. */
typedef struct {
    sl_balancer_t base;
    uint32_t *ring; /* slots entries: the owning peer's index, NO_PEER if none */
    uint64_t *ids;  /* per peer: peer_id of its target */
    uint32_t slots;
    uint32_t next; /* round-robin position, for requests without a key */
    int empty;     /* no peer has weight > 0 */
} hash_t;

/* A target's identity on the ring: its configured name and port and the
 * address it resolved to, so that a name with several addresses gets one
 * identity per address and two names of one address do not collide. An
 * address that stays in the DNS answer of a name keeps its identity, and so
 * its points, whichever slot it is in. */
static uint64_t peer_id(const sl_target_t *t)
{
    uint64_t h = SL_HASH_INIT;
    if (t->host != NULL)
        h = sl_hash_update(h, t->host, strlen(t->host));
    h = sl_hash_byte(h, ':');
    h = sl_hash_update(h, &t->port, sizeof(t->port));
    if (t->addr.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&t->addr;
        h = sl_hash_update(h, &sin->sin_addr, sizeof(sin->sin_addr));
    } else if (t->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&t->addr;
        h = sl_hash_update(h, &sin6->sin6_addr, sizeof(sin6->sin6_addr));
    }
    return sl_hash_mix(h);
}

/* Gives every point to its best-scoring peer. Peers of weight 0 (and a
 * name's slots without an address) own none and cost one test each. */
static void build_ring(hash_t *hb)
{
    sl_upstream_state_t *ups = hb->base.ups;
    hb->empty = 1;
    for (size_t p = 0; p < ups->npeers; p++)
        if (ups->peers[p].conf->weight > 0)
            hb->empty = 0;
    for (uint32_t s = 0; s < hb->slots; s++) {
        uint64_t point = sl_hash_mix((uint64_t)s + 1);
        uint32_t owner = NO_PEER;
        double best = 0;
        for (size_t p = 0; p < ups->npeers; p++) {
            int weight = ups->peers[p].conf->weight;
            if (weight <= 0)
                continue;
            uint64_t h = sl_hash_mix(hb->ids[p] ^ point);
            double u = ((double)(h >> 11) + 0.5) * 0x1.0p-53; /* in (0, 1) */
            double score = -log(u) / weight;                  /* the smallest wins */
            if (owner == NO_PEER || score < best) {
                owner = (uint32_t)p;
                best = score;
            }
        }
        hb->ring[s] = owner;
    }
}

static sl_balancer_t *hash_create(sl_upstream_state_t *ups)
{
    uint32_t slots = ups->conf != NULL && ups->conf->slots > 0 ? (uint32_t)ups->conf->slots : 10000;
    hash_t *hb = calloc(1, sizeof(*hb));
    if (hb == NULL)
        return NULL;
    hb->ids = calloc(ups->npeers ? ups->npeers : 1, sizeof(uint64_t));
    hb->ring = malloc(slots * sizeof(uint32_t));
    if (hb->ids == NULL || hb->ring == NULL) {
        free(hb->ids);
        free(hb->ring);
        free(hb);
        return NULL;
    }
    hb->base.ops = &sl_balancer_hash;
    hb->base.ups = ups;
    hb->slots = slots;
    for (size_t p = 0; p < ups->npeers; p++)
        hb->ids[p] = peer_id(ups->peers[p].conf);
    build_ring(hb);
    return &hb->base;
}

/* Rebuilt in place: the same cost as at start-up, once per change of a
 * name's addresses in each worker. Points owned by addresses that stayed
 * stay theirs unless a new address beats them (rendezvous hashing), so only
 * the keys of the addresses that came or went move. */
static void hash_update(sl_balancer_t *b, const uint8_t *changed)
{
    hash_t *hb = (hash_t *)b;
    for (size_t p = 0; p < b->ups->npeers; p++)
        if (changed[p])
            hb->ids[p] = peer_id(b->ups->peers[p].conf);
    build_ring(hb);
}

/* O(1) for a first try; a retry walks the ring past tried targets, which is
 * a few points unless the untried targets own very few of them. */
static int hash_select(sl_balancer_t *b, sl_balancer_ctx_t *ctx)
{
    hash_t *hb = (hash_t *)b;
    if (hb->empty)
        return -1;
    uint32_t start = ctx->has_hash ? (uint32_t)(ctx->hash % hb->slots) : hb->next++ % hb->slots;
    for (uint32_t k = 0; k < hb->slots; k++) {
        uint32_t s = start + k < hb->slots ? start + k : start + k - hb->slots;
        uint32_t p = hb->ring[s];
        if (p == NO_PEER)
            continue;
        if ((p >= SL_BALANCER_MAX_TRIED || !(ctx->tried & ((uint64_t)1 << p))) &&
            sl_health_usable(b->ups->peers[p].health))
            return (int)p;
    }
    return -1;
}

static void hash_release(sl_balancer_t *b, int i, double ms, int outcome)
{
    SL_UNUSED(b);
    SL_UNUSED(i);
    SL_UNUSED(ms);
    SL_UNUSED(outcome);
}

static void hash_destroy(sl_balancer_t *b)
{
    hash_t *hb = (hash_t *)b;
    free(hb->ring);
    free(hb->ids);
    free(hb);
}

const sl_balancer_ops_t sl_balancer_hash = {
    "consistent-hashing", hash_create, hash_select, hash_release, hash_destroy, hash_update,
};
