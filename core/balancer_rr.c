/* balancer_rr.c: smooth weighted round-robin (the interleaved sequence nginx uses). */
#include <stdlib.h>

#include "balancer.h"

typedef struct {
    sl_balancer_t base;
    int *current; /* per peer: the running "current weight" */
} rr_t;

static sl_balancer_t *rr_create(sl_upstream_state_t *ups)
{
    rr_t *rr = calloc(1, sizeof(*rr));
    if (rr == NULL)
        return NULL;
    rr->current = calloc(ups->npeers ? ups->npeers : 1, sizeof(int));
    if (rr->current == NULL) {
        free(rr);
        return NULL;
    }
    rr->base.ops = &sl_balancer_round_robin;
    rr->base.ups = ups;
    return &rr->base;
}

/* Each pick adds every eligible peer's weight to its current weight, takes
 * the largest, and subtracts the total from the winner: weights 5/1/1 give
 * a a b a c a a rather than a a a a a b c. O(peers) per pick; upstreams with
 * thousands of targets would want a precomputed schedule instead. */
static int rr_select(sl_balancer_t *b, sl_balancer_ctx_t *ctx)
{
    rr_t *rr = (rr_t *)b;
    sl_upstream_state_t *ups = b->ups;
    int best = -1, total = 0;

    for (size_t i = 0; i < ups->npeers; i++) {
        if (!sl_balancer_usable(ups, ctx, i))
            continue;
        int weight = ups->peers[i].conf->weight;
        rr->current[i] += weight;
        total += weight;
        if (best < 0 || rr->current[i] > rr->current[best])
            best = (int)i;
    }
    if (best >= 0)
        rr->current[best] -= total;
    return best;
}

static void rr_release(sl_balancer_t *b, int i, double ms, int outcome)
{
    SL_UNUSED(b);
    SL_UNUSED(i);
    SL_UNUSED(ms);
    SL_UNUSED(outcome);
}

static void rr_destroy(sl_balancer_t *b)
{
    rr_t *rr = (rr_t *)b;
    free(rr->current);
    free(rr);
}

/* A changed peer restarts from 0, like a peer that was just added. */
static void rr_update(sl_balancer_t *b, const uint8_t *changed)
{
    rr_t *rr = (rr_t *)b;
    for (size_t i = 0; i < b->ups->npeers; i++)
        if (changed[i])
            rr->current[i] = 0;
}

const sl_balancer_ops_t sl_balancer_round_robin = {
    "round-robin", rr_create, rr_select, rr_release, rr_destroy, rr_update,
};
