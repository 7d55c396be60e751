/* balancer.c: tests for core/balancer*.c: every algorithm, ring stability, weights, retries. */
#include "../../core/balancer.h"

#include <stdio.h>

#include "test.h"

#define MAX_PEERS 8

static sl_target_t targets[MAX_PEERS];
static sl_peer_t peers[MAX_PEERS];
static char hosts[MAX_PEERS][32];
static sl_upstream_t conf;
static sl_upstream_state_t ups = {&conf, peers, 3, NULL};

/* Sets up n targets 10.0.0.1.. with the given weights, for algorithm a. */
static void setup_n(int a, size_t n, const int *w)
{
    conf.algorithm = a;
    conf.slots = 10000;
    for (size_t i = 0; i < n; i++) {
        snprintf(hosts[i], sizeof(hosts[i]), "10.0.0.%zu", i + 1);
        targets[i].host = hosts[i];
        targets[i].port = 80;
        targets[i].weight = w[i];
        peers[i].conf = &targets[i];
    }
    ups.npeers = n;
}

static void setup(int w0, int w1, int w2)
{
    int w[3] = {w0, w1, w2};
    setup_n(SL_LB_ROUND_ROBIN, 3, w);
}

/* Selects and releases at once, n times; writes the picks as letters. */
static void sequence(sl_balancer_t *b, char *seq, int n)
{
    for (int i = 0; i < n; i++) {
        sl_balancer_ctx_t ctx = {0};
        int p = b->ops->select(b, &ctx);
        seq[i] = (char)('a' + p);
        b->ops->release(b, p, 1.0, SL_BALANCER_OK);
    }
    seq[n] = '\0';
}

static uint64_t key_hash(int k)
{
    char key[32];
    int n = snprintf(key, sizeof(key), "user-%d", k);
    return sl_hash_mix(sl_hash_update(SL_HASH_INIT, key, (size_t)n));
}

static int pick_key(sl_balancer_t *b, int k)
{
    sl_balancer_ctx_t ctx = {0};
    ctx.hash = key_hash(k);
    ctx.has_hash = 1;
    return b->ops->select(b, &ctx);
}

/* --- round-robin ---------------------------------------------------------- */

TEST(round_robin_weights_5_1_1_interleave)
{
    setup(5, 1, 1);
    sl_balancer_t *b = sl_balancer_round_robin.create(&ups);
    char seq[15];
    sequence(b, seq, 14);
    /* The smooth sequence, twice: never five a's in a row. */
    ASSERT_STREQ(seq, "aabacaaaabacaa");
    b->ops->destroy(b);
}

TEST(round_robin_skips_tried_and_zero_weight)
{
    setup(1, 0, 1);
    sl_balancer_t *b = sl_balancer_round_robin.create(&ups);
    sl_balancer_ctx_t ctx = {0};
    int first = b->ops->select(b, &ctx);
    ASSERT(first == 0 || first == 2);
    ctx.tried |= (uint64_t)1 << first;
    int second = b->ops->select(b, &ctx);
    ASSERT_EQ(second, first == 0 ? 2 : 0);
    ctx.tried |= (uint64_t)1 << second;
    ASSERT_EQ(b->ops->select(b, &ctx), -1);
    b->ops->destroy(b);
}

TEST(round_robin_all_disabled)
{
    setup(0, 0, 0);
    sl_balancer_t *b = sl_balancer_round_robin.create(&ups);
    sl_balancer_ctx_t ctx = {0};
    ASSERT_EQ(b->ops->select(b, &ctx), -1);
    b->ops->destroy(b);
}

/* --- every algorithm ------------------------------------------------------- */

static const sl_balancer_ops_t *const all[] = {
    &sl_balancer_round_robin,
    &sl_balancer_least_conn,
    &sl_balancer_hash,
    &sl_balancer_latency,
};

TEST(dispatch_by_kong_name)
{
    ASSERT_EQ(sl_balancer_find("round-robin"), SL_LB_ROUND_ROBIN);
    ASSERT_EQ(sl_balancer_find("least-connections"), SL_LB_LEAST_CONN);
    ASSERT_EQ(sl_balancer_find("consistent-hashing"), SL_LB_CONSISTENT_HASH);
    ASSERT_EQ(sl_balancer_find("latency"), SL_LB_LATENCY);
    ASSERT_EQ(sl_balancer_find("random"), -1);
    for (int a = SL_LB_ROUND_ROBIN; a <= SL_LB_LATENCY; a++) {
        int w[3] = {1, 1, 1};
        setup_n(a, 3, w);
        sl_balancer_t *b = sl_balancer_create(&ups);
        ASSERT(b != NULL);
        ASSERT(b->ops == all[a]);
        ASSERT_STREQ(sl_balancer_name(a), all[a]->name);
        b->ops->destroy(b);
    }
}

TEST(every_algorithm_never_picks_weight_0)
{
    for (size_t a = 0; a < SL_NELEMS(all); a++) {
        int w[4] = {3, 0, 2, 1};
        setup_n((int)a, 4, w);
        sl_balancer_t *b = all[a]->create(&ups);
        int count[4] = {0};
        for (int i = 0; i < 2000; i++) {
            sl_balancer_ctx_t ctx = {0};
            if (a == SL_LB_CONSISTENT_HASH) {
                ctx.hash = key_hash(i);
                ctx.has_hash = i % 2; /* with and without a key */
            }
            int p = b->ops->select(b, &ctx);
            ASSERT(p >= 0 && p < 4);
            count[p]++;
            b->ops->release(b, p, 1.0 + p, SL_BALANCER_OK);
        }
        ASSERT_EQ(count[1], 0);
        ASSERT(count[0] > 0 && count[2] > 0 && count[3] > 0);
        b->ops->destroy(b);

        int none[2] = {0, 0};
        setup_n((int)a, 2, none);
        b = all[a]->create(&ups);
        sl_balancer_ctx_t ctx = {0};
        ASSERT_EQ(b->ops->select(b, &ctx), -1);
        b->ops->destroy(b);
    }
}

TEST(every_algorithm_honours_the_tried_set)
{
    for (size_t a = 0; a < SL_NELEMS(all); a++) {
        int w[4] = {1, 5, 1, 1};
        setup_n((int)a, 4, w);
        sl_balancer_t *b = all[a]->create(&ups);
        for (int i = 0; i < 200; i++) {
            sl_balancer_ctx_t ctx = {0};
            ctx.hash = key_hash(i);
            ctx.has_hash = 1;
            /* Four tries of one request: four different targets, then none. */
            int seen = 0;
            for (int t = 0; t < 4; t++) {
                int p = b->ops->select(b, &ctx);
                ASSERT(p >= 0 && p < 4);
                ASSERT(!(ctx.tried & ((uint64_t)1 << p)));
                ctx.tried |= (uint64_t)1 << p;
                seen |= 1 << p;
                b->ops->release(b, p, 5.0, SL_BALANCER_FAILED);
            }
            ASSERT_EQ(seen, 0xf);
            ASSERT_EQ(b->ops->select(b, &ctx), -1);
        }
        b->ops->destroy(b);
    }
}

/* --- least-connections ----------------------------------------------------- */

TEST(least_conn_picks_the_least_loaded)
{
    int w[3] = {1, 1, 1};
    setup_n(SL_LB_LEAST_CONN, 3, w);
    sl_balancer_t *b = sl_balancer_least_conn.create(&ups);
    sl_balancer_ctx_t ctx = {0};
    /* Three requests in flight, one each; b finishes; the next goes to b. */
    ASSERT_EQ(b->ops->select(b, &ctx), 0);
    ASSERT_EQ(b->ops->select(b, &ctx), 1);
    ASSERT_EQ(b->ops->select(b, &ctx), 2);
    b->ops->release(b, 1, 3.0, SL_BALANCER_OK);
    ASSERT_EQ(b->ops->select(b, &ctx), 1);
    /* Now 1 each; a and c finish, b stays busy: a and c share the next ones. */
    b->ops->release(b, 0, 3.0, SL_BALANCER_OK);
    b->ops->release(b, 2, 3.0, SL_BALANCER_OK);
    int x = b->ops->select(b, &ctx), y = b->ops->select(b, &ctx);
    ASSERT((x == 0 && y == 2) || (x == 2 && y == 0));
    /* A failed try counts as finished too. */
    b->ops->release(b, x, 3.0, SL_BALANCER_FAILED);
    ASSERT_EQ(b->ops->select(b, &ctx), x);
    b->ops->destroy(b);
}

TEST(least_conn_breaks_ties_round_robin)
{
    int w[3] = {1, 1, 1};
    setup_n(SL_LB_LEAST_CONN, 3, w);
    sl_balancer_t *b = sl_balancer_least_conn.create(&ups);
    char seq[10];
    sequence(b, seq, 9);
    ASSERT_STREQ(seq, "abcabcabc");
    b->ops->destroy(b);

    /* Unloaded, ties follow the weights, interleaved like round-robin. */
    int w2[3] = {5, 1, 1};
    setup_n(SL_LB_LEAST_CONN, 3, w2);
    b = sl_balancer_least_conn.create(&ups);
    char seq2[15];
    sequence(b, seq2, 14);
    ASSERT_STREQ(seq2, "aabacaaaabacaa");
    b->ops->destroy(b);
}

TEST(least_conn_weighs_active_by_weight)
{
    int w[2] = {2, 1};
    setup_n(SL_LB_LEAST_CONN, 2, w);
    sl_balancer_t *b = sl_balancer_least_conn.create(&ups);
    sl_balancer_ctx_t ctx = {0};
    /* Held open: a takes two for each of b's. */
    int count[2] = {0, 0};
    for (int i = 0; i < 30; i++)
        count[b->ops->select(b, &ctx)]++;
    ASSERT_EQ(count[0], 20);
    ASSERT_EQ(count[1], 10);
    b->ops->destroy(b);
}

/* --- consistent-hashing ---------------------------------------------------- */

TEST(hash_same_key_same_target)
{
    int w[4] = {1, 1, 1, 1};
    setup_n(SL_LB_CONSISTENT_HASH, 4, w);
    sl_balancer_t *b1 = sl_balancer_hash.create(&ups);
    sl_balancer_t *b2 = sl_balancer_hash.create(&ups); /* another worker */
    int count[4] = {0};
    for (int k = 0; k < 1000; k++) {
        int p = pick_key(b1, k);
        ASSERT_EQ(pick_key(b1, k), p);
        ASSERT_EQ(pick_key(b2, k), p);
        count[p]++;
    }
    for (int i = 0; i < 4; i++)
        ASSERT(count[i] > 180 && count[i] < 320);
    b1->ops->destroy(b1);
    b2->ops->destroy(b2);
}

TEST(hash_weights_set_the_share)
{
    int w[3] = {100, 200, 100};
    setup_n(SL_LB_CONSISTENT_HASH, 3, w);
    sl_balancer_t *b = sl_balancer_hash.create(&ups);
    int count[3] = {0};
    for (int k = 0; k < 10000; k++)
        count[pick_key(b, k)]++;
    /* 25% / 50% / 25%, within two points. */
    ASSERT(count[0] > 2300 && count[0] < 2700);
    ASSERT(count[1] > 4800 && count[1] < 5200);
    ASSERT(count[2] > 2300 && count[2] < 2700);
    b->ops->destroy(b);
}

TEST(hash_adding_a_target_moves_only_its_share)
{
    int w[5] = {100, 100, 100, 100, 100};
    int before[10000];
    setup_n(SL_LB_CONSISTENT_HASH, 4, w);
    sl_balancer_t *b = sl_balancer_hash.create(&ups);
    for (int k = 0; k < 10000; k++)
        before[k] = pick_key(b, k);
    b->ops->destroy(b);

    setup_n(SL_LB_CONSISTENT_HASH, 5, w);
    b = sl_balancer_hash.create(&ups);
    int moved = 0;
    for (int k = 0; k < 10000; k++) {
        int p = pick_key(b, k);
        if (p != before[k]) {
            moved++;
            ASSERT_EQ(p, 4); /* keys move to the new target only */
        }
    }
    /* Ideally 1/5 of the keys; allow a little for the ring's randomness. */
    printf("    4 -> 5 targets: %d of 10000 keys moved\n", moved);
    ASSERT(moved > 1700 && moved < 2300);
    b->ops->destroy(b);

    /* And back: removing it moves only its own keys, home again. */
    setup_n(SL_LB_CONSISTENT_HASH, 4, w);
    b = sl_balancer_hash.create(&ups);
    for (int k = 0; k < 10000; k++)
        ASSERT_EQ(pick_key(b, k), before[k]);
    b->ops->destroy(b);
}

TEST(hash_disabling_a_target_moves_only_its_keys)
{
    int w[4] = {100, 100, 100, 100};
    int before[10000];
    setup_n(SL_LB_CONSISTENT_HASH, 4, w);
    sl_balancer_t *b = sl_balancer_hash.create(&ups);
    for (int k = 0; k < 10000; k++)
        before[k] = pick_key(b, k);
    b->ops->destroy(b);

    targets[2].weight = 0;
    b = sl_balancer_hash.create(&ups);
    for (int k = 0; k < 10000; k++) {
        int p = pick_key(b, k);
        ASSERT(p != 2);
        if (before[k] != 2)
            ASSERT_EQ(p, before[k]);
    }
    b->ops->destroy(b);
}

TEST(hash_retry_walks_the_ring)
{
    int w[4] = {1, 1, 1, 1};
    setup_n(SL_LB_CONSISTENT_HASH, 4, w);
    sl_balancer_t *b = sl_balancer_hash.create(&ups);
    for (int k = 0; k < 100; k++) {
        sl_balancer_ctx_t ctx = {0};
        ctx.hash = key_hash(k);
        ctx.has_hash = 1;
        int first = b->ops->select(b, &ctx);
        ctx.tried |= (uint64_t)1 << first;
        int second = b->ops->select(b, &ctx);
        ASSERT(second != first);
        /* The same key retries onto the same next target every time. */
        ASSERT_EQ(b->ops->select(b, &ctx), second);
    }
    b->ops->destroy(b);
}

TEST(hash_without_a_key_spreads_by_weight)
{
    int w[2] = {300, 100};
    setup_n(SL_LB_CONSISTENT_HASH, 2, w);
    sl_balancer_t *b = sl_balancer_hash.create(&ups);
    int count[2] = {0};
    for (int i = 0; i < 10000; i++) {
        sl_balancer_ctx_t ctx = {0};
        count[b->ops->select(b, &ctx)]++;
    }
    /* A full turn of the ring: exactly the points each owns, about 3:1. */
    ASSERT(count[0] > 7200 && count[0] < 7800);
    b->ops->destroy(b);
}

/* --- latency --------------------------------------------------------------- */

static double fake_now;
static double fake_clock(void)
{
    return fake_now;
}

/* Runs n requests one after the other; peer p answers in ms[p]. */
static void run_latency(sl_balancer_t *b, int n, const double *ms, int *count)
{
    for (int i = 0; i < n; i++) {
        sl_balancer_ctx_t ctx = {0};
        int p = b->ops->select(b, &ctx);
        count[p]++;
        fake_now += 0.001;
        b->ops->release(b, p, ms[p], SL_BALANCER_OK);
    }
}

TEST(latency_moves_away_from_a_slow_target)
{
    double (*saved)(void) = sl_balancer_clock;
    sl_balancer_clock = fake_clock;
    fake_now = 1000;
    int w[3] = {1, 1, 1};
    setup_n(SL_LB_LATENCY, 3, w);
    sl_balancer_t *b = sl_balancer_latency.create(&ups);

    double fast[3] = {1.0, 1.0, 1.0};
    int count[3] = {0};
    run_latency(b, 3000, fast, count);
    for (int i = 0; i < 3; i++)
        ASSERT(count[i] > 800); /* all alike: about a third each */

    /* c turns slow (50 ms): its first slow answer raises its cost at once. */
    double slow[3] = {1.0, 1.0, 50.0};
    int after[3] = {0};
    run_latency(b, 3000, slow, after);
    ASSERT(after[2] < 30);
    ASSERT(after[0] > 1300 && after[1] > 1300);

    /* c recovers; after it has been left alone long enough for its cost to
     * decay, it is tried again, answers fast, and gets its share back. */
    fake_now += 60;
    int back[3] = {0};
    run_latency(b, 3000, fast, back);
    ASSERT(back[2] > 600);

    b->ops->destroy(b);
    sl_balancer_clock = saved;
}

TEST(latency_follows_weights_under_load)
{
    double (*saved)(void) = sl_balancer_clock;
    sl_balancer_clock = fake_clock;
    fake_now = 1000;
    int w[2] = {300, 100};
    setup_n(SL_LB_LATENCY, 2, w);
    sl_balancer_t *b = sl_balancer_latency.create(&ups);
    /* Eight requests in flight at all times, every answer in 2 ms. */
    int inflight[8], count[2] = {0};
    for (int i = 0; i < 8; i++) {
        sl_balancer_ctx_t ctx = {0};
        inflight[i] = b->ops->select(b, &ctx);
    }
    for (int i = 0; i < 4000; i++) {
        fake_now += 0.00025;
        b->ops->release(b, inflight[i % 8], 2.0, SL_BALANCER_OK);
        sl_balancer_ctx_t ctx = {0};
        inflight[i % 8] = b->ops->select(b, &ctx);
        count[inflight[i % 8]]++;
    }
    /* Same latency, weight 3:1: load follows the weights (the +1 of the
     * pending count tilts it a little further towards the heavier one). */
    ASSERT(count[0] > 2 * count[1]);
    ASSERT(count[1] > 400);
    for (int i = 0; i < 8; i++)
        b->ops->release(b, inflight[i], 2.0, SL_BALANCER_ABORTED);
    b->ops->destroy(b);
    sl_balancer_clock = saved;
}

TEST(latency_failures_count_as_slow)
{
    double (*saved)(void) = sl_balancer_clock;
    sl_balancer_clock = fake_clock;
    fake_now = 1000;
    int w[2] = {1, 1};
    setup_n(SL_LB_LATENCY, 2, w);
    sl_balancer_t *b = sl_balancer_latency.create(&ups);
    double ms[2] = {3.0, 3.0};
    int count[2] = {0};
    run_latency(b, 100, ms, count);
    /* a refuses at once (1 ms): that must not make it look fast. */
    sl_balancer_ctx_t ctx = {0};
    ctx.tried = 2; /* force a */
    ASSERT_EQ(b->ops->select(b, &ctx), 0);
    b->ops->release(b, 0, 1.0, SL_BALANCER_FAILED);
    int after[2] = {0};
    run_latency(b, 500, ms, after);
    ASSERT(after[0] < 10);
    b->ops->destroy(b);
    sl_balancer_clock = saved;
}
