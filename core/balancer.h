/* balancer.h: choosing a target of an upstream; one small vtable per algorithm. */
#ifndef SL_BALANCER_H
#define SL_BALANCER_H

#include "upstream.h"

/* Targets a request has already tried, so retries go elsewhere while other
 * targets remain. Upstreams have at most SL_BALANCER_MAX_TRIED tracked targets;
 * beyond that, retries may repeat a target. */
#define SL_BALANCER_MAX_TRIED 64

/* What one request carries from one try to the next. The proxy zeroes it per
 * request; only consistent hashing reads hash and has_hash, and only hashing
 * upstreams pay for computing them (sl_balancer_key). */
typedef struct {
    uint64_t tried; /* bit i: peers[i] tried (i < 64) */
    uint64_t hash;  /* the request's hashing key, hashed with sl_hash_* */
    int has_hash;   /* 0: no key (hash_on none, or the request had neither key) */
} sl_balancer_ctx_t;

/* How a try ended, for algorithms that learn from it. */
enum {
    SL_BALANCER_OK = 0, /* the response head arrived; ms is the time it took */
    SL_BALANCER_FAILED, /* connect error, timeout, reset or a bad response after ms */
    /* Ended without a response head through no fault of the target (the client
     * left, the request was refused, a pooled connection had gone stale); ms is
     * a lower bound of the response time. */
    SL_BALANCER_ABORTED,
};

typedef struct {
    const char *name; /* Kong's name for the algorithm: "round-robin", ... */
    /* Returns the balancer's state for ups, or NULL when out of memory. The
     * state is per worker and never shared. */
    sl_balancer_t *(*create)(sl_upstream_state_t *ups);
    /* Returns the index of the chosen peer, or -1 when no peer can be used:
     * every peer has weight 0 or is in ctx->tried. Never returns a peer of
     * weight 0 or one in ctx->tried. */
    int (*select)(sl_balancer_t *b, sl_balancer_ctx_t *ctx);
    /* Reports the end of a try on peer i: called exactly once for every
     * select that returned i, whatever happened to the request. ms is the
     * time from the start of the try to the response head (or to its end
     * when none came); outcome is SL_BALANCER_*. */
    void (*release)(sl_balancer_t *b, int i, double ms, int outcome);
    void (*destroy)(sl_balancer_t *b);
    /* The peers with changed[i] set got another address (or lost theirs:
     * weight 0) while tries may still be under way on them; their releases
     * still come. The balancer forgets what it learnt about them and
     * rebuilds what depends on the set (the hashing ring, in place).
     * Allocates nothing and never fails. */
    void (*update)(sl_balancer_t *b, const uint8_t *changed);
} sl_balancer_ops_t;

struct sl_balancer_s {
    const sl_balancer_ops_t *ops;
    sl_upstream_state_t *ups;
};

extern const sl_balancer_ops_t sl_balancer_round_robin;
extern const sl_balancer_ops_t sl_balancer_least_conn;
extern const sl_balancer_ops_t sl_balancer_hash;
extern const sl_balancer_ops_t sl_balancer_latency;

/* Returns whether peer i may be picked for ctx: weight above 0, not tried
 * yet, and neither unhealthy nor ejected (one relaxed atomic load, and none
 * at all for an upstream without health checks). Every algorithm filters its
 * candidates through this. */
static inline int sl_balancer_usable(const sl_upstream_state_t *ups, const sl_balancer_ctx_t *ctx,
                                     size_t i)
{
    const sl_peer_t *p = &ups->peers[i];
    if (p->conf->weight <= 0)
        return 0;
    if (i < SL_BALANCER_MAX_TRIED && (ctx->tried & ((uint64_t)1 << i)))
        return 0;
    return sl_health_usable(p->health);
}

/* Returns the SL_LB_* id of the algorithm Kong calls name, or -1. */
int sl_balancer_find(const char *name);

/* Returns the name of an SL_LB_* id. */
const char *sl_balancer_name(int algorithm);

/* Returns the balancer for the upstream's configured algorithm, or NULL when
 * out of memory. */
sl_balancer_t *sl_balancer_create(sl_upstream_state_t *ups);

/* The clock the latency balancer decays by, in seconds (monotonic). A
 * variable so that unit tests can move time; nothing else assigns it. */
extern double (*sl_balancer_clock)(void);

/* A stable 64-bit hash for balancing keys, fed in pieces: FNV-1a over the
 * bytes, finished with a strong mixer so that nearby keys land far apart on
 * the ring. The same key hashes the same in every worker and every run. */
#define SL_HASH_INIT 0xcbf29ce484222325ULL

static inline uint64_t sl_hash_byte(uint64_t h, unsigned char c)
{
    return (h ^ c) * 0x100000001b3ULL;
}

static inline uint64_t sl_hash_update(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = sl_hash_byte(h, s[i]);
    return h;
}

/* The 64-bit finalizer of MurmurHash3: every input bit flips about half of
 * the output bits. */
static inline uint64_t sl_hash_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

#endif
