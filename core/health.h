/* health.h: target health shared by every worker: active probes, passive checks, outlier ejection.
 *
 * The master maps one shared region before forking (sl_health_create); every
 * worker reads and writes it with atomic operations only, so there is no lock
 * a SIGKILLed worker could leave held. A balancer asks one question per
 * candidate, sl_health_usable: one relaxed atomic load. */
#ifndef SL_HEALTH_H
#define SL_HEALTH_H

#include <stdatomic.h>

#include "config.h"

typedef struct sl_worker_s sl_worker_t;

/* Why a target is out (bits of sl_health_target_t.down). */
enum {
    SL_HEALTH_UNHEALTHY = 1, /* active or passive checks failed */
    SL_HEALTH_EJECTED = 2,   /* outlier ejection, until ejected_until */
    SL_HEALTH_ABSENT = 4,    /* a name's slot with no address now (targets.c) */
};

/* What one check or one proxied try found. */
enum {
    SL_HEALTH_STATUS = 0, /* a response with `status` */
    SL_HEALTH_TCP_ERROR,  /* connect refused, reset, bad response */
    SL_HEALTH_TIMEOUT,    /* connect, write or read timed out */
};

/* Who saw it: active probes and real traffic follow different rules. */
enum { SL_HEALTH_ACTIVE = 0, SL_HEALTH_PASSIVE };

/* One target's state, in shared memory. Counters are Kong's: a success
 * clears the failure counters, a failure clears the successes. */
typedef struct {
    _Atomic uint32_t down; /* SL_HEALTH_* bits; 0: usable */
    _Atomic uint32_t successes;
    _Atomic uint32_t http_failures;
    _Atomic uint32_t tcp_failures;
    _Atomic uint32_t timeouts;
    _Atomic uint32_t consecutive_5xx;
    _Atomic uint32_t consecutive_gateway;
    _Atomic uint32_t ejections;        /* ejections in a row (the time multiplier) */
    _Atomic int64_t ejected_until;     /* ms on the monotonic clock */
    _Atomic int64_t last_ejection_end; /* ms; ejections resets after max_ejection_time */
    _Atomic uint64_t probes;           /* active probes sent, ever */
    _Atomic int32_t prober;            /* pid of the worker probing it now; 0: none */
    _Atomic int64_t prober_seen;       /* ms of that worker's last tick */
} sl_health_target_t;

/* One upstream's shared totals. */
typedef struct {
    _Atomic int32_t down_weight;   /* summed weight of the targets that are out (absent included) */
    _Atomic uint32_t nejected;     /* targets ejected now */
    _Atomic int32_t absent_weight; /* summed weight of the slots without an address */
    _Atomic uint32_t nabsent;      /* slots without an address */
} sl_health_upstream_t;

/* Maps the shared state for every upstream of cf with checks, setting each
 * one's health_base. Called by the master before forking (and by tests).
 * Returns SL_OK, or SL_ERROR (logged) when the mapping fails. A config with no
 * checks maps nothing. */
int sl_health_create(sl_config_t *cf);

/* Unmaps it (master exit, tests). */
void sl_health_destroy(void);

/* Returns target i of u's shared state, or NULL when u has no checks. */
sl_health_target_t *sl_health_target(const sl_upstream_t *u, size_t i);

/* Returns u's shared totals, or NULL when u has no checks. */
sl_health_upstream_t *sl_health_upstream(const sl_upstream_t *u);

/* Returns whether the balancer may pick a target: h is NULL (no checks) or
 * the target is neither unhealthy nor ejected. */
static inline int sl_health_usable(const sl_health_target_t *h)
{
    return h == NULL || atomic_load_explicit(&h->down, memory_order_relaxed) == 0;
}

/* Returns 0 when the healthy share of u's weight is below its threshold
 * (the upstream as a whole is unhealthy), else 1. */
int sl_health_upstream_ok(const sl_upstream_t *u);

/* Counts what a check or a try found on target i of u (what is SL_HEALTH_*,
 * status the response's for SL_HEALTH_STATUS) and moves the target between
 * healthy, unhealthy and ejected as the rules of source (SL_HEALTH_ACTIVE or
 * SL_HEALTH_PASSIVE) say, logging each transition. now is ms on the
 * monotonic clock. Never fails. */
void sl_health_report(const sl_upstream_t *u, size_t i, int source, int what, int status,
                      int64_t now);

/* Marks target i of u present (a new address took the slot: it starts
 * healthy, its counters cleared) or absent (the slot has no address now: it
 * is never picked, probed or counted). The master calls it when it publishes
 * a name's new addresses (targets.c); a no-op for upstreams without checks. */
void sl_health_set_present(const sl_upstream_t *u, size_t i, int present);

/* Ends the ejections of u that are over at now; returns how many ended. */
int sl_health_expire(const sl_upstream_t *u, int64_t now);

/* Returns the monotonic clock in ms (shared by every process). */
int64_t sl_health_now(void);

/* Starts this worker's share of the active probes and ejection expiry: a
 * repeating timer on its loop, when some upstream has checks. Returns SL_OK,
 * or SL_ERROR when out of memory. */
int sl_health_start(sl_worker_t *w);

/* Stops the timer and closes probes in flight (worker exit). */
void sl_health_stop(sl_worker_t *w);

/* Returns the name get_health shows for target i of u: "HEALTHY",
 * "UNHEALTHY", "EJECTED" or "HEALTHCHECKS_OFF". */
const char *sl_health_name(const sl_upstream_t *u, size_t i);

#endif
