/* balancer.c: picks the algorithm an upstream asks for, by Kong's name for it. */
#include "balancer.h"

#include <string.h>
#include <time.h>

/* Indexed by SL_LB_*. */
static const sl_balancer_ops_t *const algorithms[] = {
    [SL_LB_ROUND_ROBIN] = &sl_balancer_round_robin,
    [SL_LB_LEAST_CONN] = &sl_balancer_least_conn,
    [SL_LB_CONSISTENT_HASH] = &sl_balancer_hash,
    [SL_LB_LATENCY] = &sl_balancer_latency,
};

int sl_balancer_find(const char *name)
{
    for (size_t i = 0; i < SL_NELEMS(algorithms); i++)
        if (strcmp(algorithms[i]->name, name) == 0)
            return (int)i;
    return -1;
}

const char *sl_balancer_name(int algorithm)
{
    if (algorithm < 0 || (size_t)algorithm >= SL_NELEMS(algorithms))
        return "?";
    return algorithms[algorithm]->name;
}

sl_balancer_t *sl_balancer_create(sl_upstream_state_t *ups)
{
    int a = ups->conf != NULL ? ups->conf->algorithm : SL_LB_ROUND_ROBIN;
    if (a < 0 || (size_t)a >= SL_NELEMS(algorithms))
        a = SL_LB_ROUND_ROBIN;
    return algorithms[a]->create(ups);
}

/* The coarse clock (a few ms of resolution, no more than a memory read):
 * plenty for a decay over seconds. */
static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double (*sl_balancer_clock)(void) = monotonic_seconds;
