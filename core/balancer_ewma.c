/* balancer_ewma.c: latency: peak-EWMA of response times, power of two choices by weight. */
#include <math.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#include "balancer.h"

/* Old samples fade with this time constant (seconds): after 10 s a sample
 * weighs 1/e of what it did, after 30 s 5%. Kong's latency balancer uses the
 * same. */
#define DECAY_SECONDS 10.0

/* A failed try counts as a response time of at least this much, so a target
 * that refuses or resets connections loses its traffic at once instead of
 * attracting it by failing fast. Health checks, not this, take a target out
 * for good. */
#define FAILURE_MS 1000.0

/* Per peer, this worker's view. */
typedef struct {
    double cost;  /* ms: the peak-EWMA of time to the response head */
    double stamp; /* when cost was last updated (sl_balancer_clock) */
    int pending;  /* tries selected and not yet released */
} peer_cost_t;

typedef struct {
    sl_balancer_t base;
    peer_cost_t *peers;
    uint64_t rng; /* xorshift64* state, seeded per worker */
} ewma_t;

static uint64_t next_random(ewma_t *e)
{
    uint64_t x = e->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    e->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static sl_balancer_t *ewma_create(sl_upstream_state_t *ups)
{
    ewma_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->peers = calloc(ups->npeers ? ups->npeers : 1, sizeof(peer_cost_t));
    if (e->peers == NULL) {
        free(e);
        return NULL;
    }
    if (getrandom(&e->rng, sizeof(e->rng), GRND_NONBLOCK) != (ssize_t)sizeof(e->rng))
        e->rng = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL;
    e->rng |= 1; /* xorshift must not start at 0 */
    e->base.ops = &sl_balancer_latency;
    e->base.ups = ups;
    return &e->base;
}

/* The cost as of now: it decays towards 0 while no sample arrives, so a
 * target that was slow once is tried again after a while instead of being
 * starved for good. */
static double decayed(const peer_cost_t *p, double now)
{
    double dt = now - p->stamp;
    return dt > 0 ? p->cost * exp(-dt / DECAY_SECONDS) : p->cost;
}

/* Picks a usable peer at random with probability proportional to weight,
 * leaving out `except`; -1 when there is none. O(peers). A target whose
 * health changed since `total` was summed can leave r unspent: the last
 * usable peer seen then takes the pick. */
static int pick(ewma_t *e, const sl_balancer_ctx_t *ctx, long total, int except)
{
    sl_upstream_state_t *ups = e->base.ups;
    if (except >= 0)
        total -= ups->peers[except].conf->weight;
    if (total <= 0)
        return -1;
    long r = (long)(next_random(e) % (uint64_t)total);
    int last = -1;
    for (size_t i = 0; i < ups->npeers; i++) {
        if ((int)i == except || !sl_balancer_usable(ups, ctx, i))
            continue;
        int weight = ups->peers[i].conf->weight;
        if (r < weight)
            return (int)i;
        r -= weight;
        last = (int)i;
    }
    return last;
}

/* Power of two choices: two distinct candidates drawn by weight, and the
 * one with the lower cost * (pending + 1) / weight wins (Finagle's
 * peak-EWMA load, scaled by weight as Kong's latency balancer does). Two
 * random candidates rather than the global best keep every worker from
 * stampeding onto the same target between samples. */
static int ewma_select(sl_balancer_t *b, sl_balancer_ctx_t *ctx)
{
    ewma_t *e = (ewma_t *)b;
    sl_upstream_state_t *ups = b->ups;
    long total = 0;

    for (size_t i = 0; i < ups->npeers; i++) {
        if (sl_balancer_usable(ups, ctx, i))
            total += ups->peers[i].conf->weight;
    }
    int a = pick(e, ctx, total, -1);
    if (a < 0)
        return -1;
    int c = pick(e, ctx, total, a);
    if (c >= 0) {
        double now = sl_balancer_clock();
        const peer_cost_t *pa = &e->peers[a], *pc = &e->peers[c];
        double la = decayed(pa, now) * (pa->pending + 1) / ups->peers[a].conf->weight;
        double lc = decayed(pc, now) * (pc->pending + 1) / ups->peers[c].conf->weight;
        if (lc < la || (lc == la && pc->pending < pa->pending))
            a = c;
    }
    e->peers[a].pending++;
    return a;
}

/* Peak-sensitive: a sample above the current cost replaces it at once, so a
 * target that turns slow loses traffic on its first slow response; one below
 * it is averaged in with a weight that grows with the time since the last
 * sample, so the cost comes down over about DECAY_SECONDS. */
static void observe(peer_cost_t *p, double ms, double now)
{
    double dt = now - p->stamp;
    double w = dt > 0 ? exp(-dt / DECAY_SECONDS) : 1.0;
    double cost = p->cost * w;
    p->cost = ms > cost ? ms : cost + ms * (1.0 - w);
    p->stamp = now;
}

static void ewma_release(sl_balancer_t *b, int i, double ms, int outcome)
{
    ewma_t *e = (ewma_t *)b;
    peer_cost_t *p = &e->peers[i];
    if (p->pending > 0)
        p->pending--;
    if (ms < 0)
        ms = 0;
    double now = sl_balancer_clock();
    switch (outcome) {
    case SL_BALANCER_OK:
        observe(p, ms, now);
        break;
    case SL_BALANCER_FAILED:
        observe(p, ms > FAILURE_MS ? ms : FAILURE_MS, now);
        break;
    default:
        /* Only a lower bound: it may raise the cost, never lower it. */
        if (ms > decayed(p, now))
            observe(p, ms, now);
    }
}

static void ewma_destroy(sl_balancer_t *b)
{
    ewma_t *e = (ewma_t *)b;
    free(e->peers);
    free(e);
}

/* A changed peer is a new target: no response time known yet. Its tries in
 * flight stay counted until they are released. */
static void ewma_update(sl_balancer_t *b, const uint8_t *changed)
{
    ewma_t *e = (ewma_t *)b;
    double now = sl_balancer_clock();
    for (size_t i = 0; i < b->ups->npeers; i++) {
        if (changed[i]) {
            e->peers[i].cost = 0;
            e->peers[i].stamp = now;
        }
    }
}

const sl_balancer_ops_t sl_balancer_latency = {
    "latency", ewma_create, ewma_select, ewma_release, ewma_destroy, ewma_update,
};
