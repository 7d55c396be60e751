/* balancer_bench.c: what one pick (select + release) costs per algorithm, over 4 targets. */
#include <stdio.h>
#include <time.h>

#include "../core/balancer.h"

/*
 * Each algorithm picks and releases in a loop over 4 targets of weight 100,
 * with a handful of requests in flight (so least-connections and latency see
 * load) and response times that vary, as sluice's worker would call them.
 * `hash` includes hashing a 24-byte key per request, as balancer_key.c does
 * for a header. Columns: ns per pick, and that as a share of one proxied
 * request at 40,000 requests per CPU-second (25 us, sluice on the bench VM).
 * Each algorithm runs twice: without health checks (the peers' health
 * pointers NULL) and with them (every candidate reads its shared state word,
 * all targets healthy), which is the whole hot-path cost of health checks in
 * the balancer.
 */

enum { NTARGETS = 4, INFLIGHT = 8, KEYS = 1024 };

static const double SECONDS_PER_CASE = 0.3;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
    static sl_target_t targets[NTARGETS];
    static sl_peer_t peers[NTARGETS];
    static char hosts[NTARGETS][32];
    static char keys[KEYS][24];
    static sl_health_target_t health[NTARGETS]; /* zeroed: every target healthy */
    sl_upstream_t conf = {0};
    sl_upstream_state_t ups = {&conf, peers, NTARGETS, NULL, NULL};

    conf.slots = 10000;
    for (int i = 0; i < NTARGETS; i++) {
        snprintf(hosts[i], sizeof(hosts[i]), "10.0.0.%d", i + 1);
        targets[i].host = hosts[i];
        targets[i].port = 8080;
        targets[i].weight = 100;
        peers[i].conf = &targets[i];
    }
    for (int k = 0; k < KEYS; k++)
        snprintf(keys[k], sizeof(keys[k]), "user-%018d", k * 7919);

    printf("| algorithm | ns per pick | share of a 25 us request |\n");
    printf("| --- | ---: | ---: |\n");
    for (int run = 0; run < 2 * (SL_LB_LATENCY + 1); run++) {
        int a = run / 2, checked = run % 2;
        for (int i = 0; i < NTARGETS; i++)
            peers[i].health = checked ? &health[i] : NULL;
        conf.algorithm = a;
        sl_balancer_t *b = sl_balancer_create(&ups);
        if (b == NULL) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        int inflight[INFLIGHT];
        for (int i = 0; i < INFLIGHT; i++) {
            sl_balancer_ctx_t ctx = {0};
            inflight[i] = b->ops->select(b, &ctx);
        }
        unsigned long picks = 0;
        volatile int sink = 0;
        double start = now(), end;
        do {
            for (int i = 0; i < 4096; i++) {
                int slot = i % INFLIGHT;
                b->ops->release(b, inflight[slot], 0.5 + (i & 7) * 0.1, SL_BALANCER_OK);
                sl_balancer_ctx_t ctx = {0};
                if (a == SL_LB_CONSISTENT_HASH) {
                    const char *key = keys[i % KEYS];
                    ctx.hash = sl_hash_mix(sl_hash_update(SL_HASH_INIT, key, 24));
                    ctx.has_hash = 1;
                }
                inflight[slot] = b->ops->select(b, &ctx);
                sink += inflight[slot];
            }
            picks += 4096;
            end = now();
        } while (end - start < SECONDS_PER_CASE);
        double ns = (end - start) * 1e9 / (double)picks;
        printf("| %s%s | %.1f | %.2f%% |\n", b->ops->name, checked ? " (health checks)" : "", ns,
               ns / 25000.0 * 100.0);
        for (int i = 0; i < INFLIGHT; i++)
            b->ops->release(b, inflight[i], 1.0, SL_BALANCER_ABORTED);
        b->ops->destroy(b);
    }
    return 0;
}
