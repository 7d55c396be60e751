/* balancer_lc.c: least-connections, weighted, with smooth round-robin between equals. */
#include <stdlib.h>

#include "balancer.h"

/* Counts are this worker's own, as with Kong and with nginx's least_conn
 * without a shared zone: with N workers each balances its own requests. */
typedef struct {
    sl_balancer_t base;
    int *active;  /* per peer: tries selected and not yet released */
    int *current; /* per peer: smooth round-robin state, for ties */
} lc_t;

static sl_balancer_t *lc_create(sl_upstream_state_t *ups)
{
    size_t n = ups->npeers ? ups->npeers : 1;
    lc_t *lc = calloc(1, sizeof(*lc));
    if (lc == NULL)
        return NULL;
    lc->active = calloc(n, sizeof(int));
    lc->current = calloc(n, sizeof(int));
    if (lc->active == NULL || lc->current == NULL) {
        free(lc->active);
        free(lc->current);
        free(lc);
        return NULL;
    }
    lc->base.ops = &sl_balancer_least_conn;
    lc->base.ups = ups;
    return &lc->base;
}

/* The peer with the fewest active requests per unit of weight wins
 * (active_a / weight_a < active_b / weight_b, compared without division).
 * Peers that tie share the pick by smooth weighted round-robin, as nginx's
 * least_conn does: with no load at all (requests one at a time) the split
 * then follows the weights instead of always taking the heaviest peer.
 * Two passes of O(peers). */
static int lc_select(sl_balancer_t *b, sl_balancer_ctx_t *ctx)
{
    lc_t *lc = (lc_t *)b;
    sl_upstream_state_t *ups = b->ups;
    int best = -1, ties = 0;

    for (size_t i = 0; i < ups->npeers; i++) {
        if (!sl_balancer_usable(ups, ctx, i))
            continue;
        if (best < 0) {
            best = (int)i;
            ties = 1;
            continue;
        }
        long lhs = (long)lc->active[i] * ups->peers[best].conf->weight;
        long rhs = (long)lc->active[best] * ups->peers[i].conf->weight;
        if (lhs < rhs) {
            best = (int)i;
            ties = 1;
        } else if (lhs == rhs) {
            ties++;
        }
    }
    if (best < 0)
        return -1;

    if (ties > 1) {
        int first = best, total = 0;
        best = -1;
        for (size_t i = (size_t)first; i < ups->npeers; i++) {
            if (!sl_balancer_usable(ups, ctx, i))
                continue;
            int weight = ups->peers[i].conf->weight;
            if ((long)lc->active[i] * ups->peers[first].conf->weight !=
                (long)lc->active[first] * weight)
                continue;
            lc->current[i] += weight;
            total += weight;
            if (best < 0 || lc->current[i] > lc->current[best])
                best = (int)i;
        }
        lc->current[best] -= total;
    }
    lc->active[best]++;
    return best;
}

static void lc_release(sl_balancer_t *b, int i, double ms, int outcome)
{
    lc_t *lc = (lc_t *)b;
    SL_UNUSED(ms);
    SL_UNUSED(outcome);
    if (lc->active[i] > 0)
        lc->active[i]--;
}

static void lc_destroy(sl_balancer_t *b)
{
    lc_t *lc = (lc_t *)b;
    free(lc->active);
    free(lc->current);
    free(lc);
}

/* The tie-breaking state of a changed peer restarts from 0; its count of
 * tries in flight stays, because their releases still come (and a new
 * address that starts with a few in flight only gets fewer new requests
 * until they end). */
static void lc_update(sl_balancer_t *b, const uint8_t *changed)
{
    lc_t *lc = (lc_t *)b;
    for (size_t i = 0; i < b->ups->npeers; i++)
        if (changed[i])
            lc->current[i] = 0;
}

const sl_balancer_ops_t sl_balancer_least_conn = {
    "least-connections", lc_create, lc_select, lc_release, lc_destroy, lc_update,
};
