/* metrics.h: the prometheus plugin's counters and histograms, kept per worker in shared memory.
 *
 * The master maps one region before forking (sl_metrics_create), sized from
 * the config: one slot per worker, and in it one record per route plus one
 * for requests that matched no route. A worker is the only writer of its
 * slot, so counting is a relaxed load and a relaxed store per counter: no
 * lock and no atomic read-modify-write on the request path. A scrape sums the
 * slots of every worker (sl_ffi_metrics_render). Labels are bounded by the
 * config: routes and services are known at load, and statuses map into a
 * fixed set (sl_metrics_code_index). */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "config.h"

typedef struct sl_worker_s sl_worker_t;
typedef struct sl_request_s sl_request_t;
struct lua_State;

/* The families the enabled prometheus instances collect (sl_metrics_conf_t.families). */
enum {
    SL_METRICS_STATUS = 1,    /* status_code_metrics: sluice_http_requests_total */
    SL_METRICS_LATENCY = 2,   /* latency_metrics: the three latency histograms */
    SL_METRICS_BANDWIDTH = 4, /* bandwidth_metrics: sluice_bandwidth_bytes */
    SL_METRICS_HEALTH = 8,    /* upstream_health_metrics: sluice_upstream_target_health */
};

/* Where a response came from: the `source` label. */
enum { SL_METRICS_SERVICE = 0, SL_METRICS_EXIT, SL_METRICS_ERROR, SL_METRICS_NSOURCES };

/* Statuses are counted exactly for the registered codes and in one "Nxx"
 * bucket per hundred for any other. */
#define SL_METRICS_NCODES 71

/* Kong's bucket boundaries (ms): sluice_latency_ms takes the first set,
 * sluice_upstream_latency_ms and sluice_request_latency_ms the second. */
#define SL_METRICS_SLUICE_BUCKETS   15
#define SL_METRICS_UPSTREAM_BUCKETS 13

/* One histogram: observations per bucket (not cumulative; the last one is
 * +Inf) and their sum in microseconds. */
#define SL_METRICS_HIST(n)                                                                         \
    struct {                                                                                       \
        _Atomic uint64_t buckets[(n) + 1];                                                         \
        _Atomic uint64_t sum_us;                                                                   \
    }

/* What one worker counted for one route. */
typedef struct {
    _Atomic uint64_t requests[SL_METRICS_NSOURCES][SL_METRICS_NCODES];
    _Atomic uint64_t ingress; /* request bytes: head and body */
    _Atomic uint64_t egress;  /* response bytes sent to the client */
    SL_METRICS_HIST(SL_METRICS_UPSTREAM_BUCKETS) request;
    SL_METRICS_HIST(SL_METRICS_UPSTREAM_BUCKETS) upstream;
    SL_METRICS_HIST(SL_METRICS_SLUICE_BUCKETS) sluice;
} sl_metrics_route_t;

/* One worker's connection counters and gauges (the gauges are refreshed
 * every second and before each scrape the worker answers). */
typedef struct {
    _Atomic uint64_t accepted;
    _Atomic uint64_t handled;
    _Atomic uint64_t active;
    _Atomic uint64_t reading;
    _Atomic uint64_t writing;
    _Atomic uint64_t waiting;
    _Atomic uint64_t lua_bytes;         /* the worker's Lua VM */
    _Atomic int64_t pid;                /* 0: the worker never started */
    _Atomic uint64_t consumer_overflow; /* requests counted without their consumer label */
} sl_metrics_worker_t;

/* With per_consumer, a worker's series that carry a consumer label live in a
 * fixed open-addressing table after its route records: key 0 is empty, else
 * SL_METRICS_KEY(route, consumer, kind) with kind a requests[source][code]
 * position or SL_METRICS_KIND_INGRESS / _EGRESS. Keys are never removed;
 * a reader may see a new key while its value is still 0. */
typedef struct {
    _Atomic uint64_t key;
    _Atomic uint64_t value;
} sl_metrics_entry_t;

#define SL_METRICS_KIND_INGRESS (SL_METRICS_NSOURCES * SL_METRICS_NCODES)
#define SL_METRICS_KIND_EGRESS  (SL_METRICS_KIND_INGRESS + 1)
#define SL_METRICS_KEY(route, consumer, kind)                                                      \
    ((1ull << 63) | ((uint64_t)(route) << 32) | ((uint64_t)(consumer) << 8) | (uint64_t)(kind))
/* Routes and consumers the key has room for. */
#define SL_METRICS_MAX_ROUTES    (1u << 24)
#define SL_METRICS_MAX_CONSUMERS (1u << 24)

/* A consumer id the config declares, for the lookup by id. */
typedef struct {
    const char *id;
    size_t len;
    uint32_t index; /* into sl_metrics_conf_t.consumer_labels */
} sl_metrics_consumer_t;

/* What the enabled prometheus instances ask for, read from the normalized
 * config at load (sl_metrics_configure); lives in the config's arena. */
typedef struct sl_metrics_conf_s {
    unsigned families;         /* SL_METRICS_* bits: any instance's flags */
    size_t nnamed_upstreams;   /* cf->upstreams[0..n) are the config's own upstreams */
    const char **route_labels; /* per route: its name, else its id, else "#<index>" */
    /* per_consumer: the config's consumers, labelled by username (else
     * custom_id, else id), found by id in by_id (sorted by length, then
     * bytes); table_size entries per worker, a power of 2 (0: off). */
    size_t nconsumers;
    const char **consumer_labels;
    sl_metrics_consumer_t *by_id;
    size_t table_size;
} sl_metrics_conf_t;

/* Reads the prometheus instances of the normalized config (table t of L)
 * into cf->metrics (NULL when none is enabled). Runs inside the config's
 * lua_pcall: raises on out of memory. */
void sl_metrics_configure(sl_config_t *cf, struct lua_State *L, int t);

/* Maps the shared counters for cf (a no-op when cf->metrics is NULL). The
 * master calls it before forking. Returns SL_OK, or SL_ERROR (logged) when
 * the mapping fails. */
int sl_metrics_create(const sl_config_t *cf);

/* Unmaps them (master exit, tests). */
void sl_metrics_destroy(void);

/* Makes this process worker `id`'s writer and, with a loop, starts the
 * timer that refreshes its connection gauges. Returns SL_OK; a no-op when
 * nothing is mapped. */
int sl_metrics_start(sl_worker_t *w);

/* Counts an accepted connection (handled: sluice took it on). */
void sl_metrics_accepted(int handled);

/* Counts a request that ended (its response went out, or its client left):
 * its status, source, bytes and latencies, in this worker's slot. Costs a
 * few loads and stores; a no-op when nothing is mapped. */
void sl_metrics_request(const sl_request_t *req);

/* Counts one request directly (for sl_metrics_request and tests): route is
 * an index into the config's routes, or its nroutes for "no route";
 * consumer an index into the config's consumers, or -1; latencies in ms,
 * upstream < 0 when no upstream answered. */
void sl_metrics_count(int route, int consumer, int status, int source, uint64_t ingress,
                      uint64_t egress, double request_ms, double upstream_ms);

/* The index of the consumer whose id is id[0..len), or -1 (none, or not
 * counted per consumer). O(log consumers). */
int sl_metrics_consumer(const char *id, size_t len);

/* The index of status in the fixed code set, and that index's label. */
int sl_metrics_code_index(int status);
const char *sl_metrics_code_label(int index);

/* The sum over every worker's slot of route's record (for tests and the renderer). */
void sl_metrics_sum(int route, sl_metrics_route_t *out);

#endif
