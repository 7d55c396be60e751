/* balancer.c: picks the algorithm an upstream asks for. */
#include "balancer.h"

sl_balancer_t *sl_balancer_create(sl_upstream_state_t *ups)
{
    /* Only round-robin exists so far; config.lua refuses the others. */
    return sl_balancer_round_robin.create(ups);
}
