/* balancer.h: choosing a target of an upstream; one small vtable per algorithm. */
#ifndef SL_BALANCER_H
#define SL_BALANCER_H

#include "upstream.h"

/* Targets a request has already tried, so retries go elsewhere while other
 * targets remain. Upstreams have at most SL_BALANCER_MAX_TRIED tracked targets;
 * beyond that, retries may repeat a target. */
#define SL_BALANCER_MAX_TRIED 64

typedef struct {
    uint64_t tried; /* bit i: peers[i] tried (i < 64) */
} sl_balancer_ctx_t;

typedef struct {
    const char *name;
    /* Returns the balancer's state for ups, or NULL when out of memory. */
    sl_balancer_t *(*create)(sl_upstream_state_t *ups);
    /* Returns the index of the chosen peer, or -1 when no peer can be used. */
    int (*select)(sl_balancer_t *b, sl_balancer_ctx_t *ctx);
    /* Reports the end of a request on peer i (for algorithms that count). */
    void (*release)(sl_balancer_t *b, int i);
    void (*destroy)(sl_balancer_t *b);
} sl_balancer_ops_t;

struct sl_balancer_s {
    const sl_balancer_ops_t *ops;
    sl_upstream_state_t *ups;
};

extern const sl_balancer_ops_t sl_balancer_round_robin;

/* Returns the balancer for the upstream's configured algorithm. */
sl_balancer_t *sl_balancer_create(sl_upstream_state_t *ups);

#endif
