/* health.c: tests for the target health state machine in core/health.c (no sockets). */
#include "../../core/balancer.h"
#include "../../core/health.h"

#include "test.h"

typedef struct {
    sl_config_t cf;
    sl_upstream_t u;
    sl_upstream_t *list[1];
    sl_target_t targets[4];
} health_fixture_t;

static void statuses(sl_statuses_t *s, const int *list, size_t n)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < n; i++)
        s->bits[list[i] >> 6] |= (uint64_t)1 << (list[i] & 63);
}

/* Four targets of weight 100; passive: 2 http failures (500, 503), 2 tcp
 * failures, 1 timeout; 2 successes bring a target back. Outlier off. */
static int fixture_init(health_fixture_t *f)
{
    static const int good[] = {200, 302}, bad[] = {500, 503};
    memset(f, 0, sizeof(*f));
    f->u.name = "ups";
    f->u.targets = f->targets;
    f->u.ntargets = 4;
    for (size_t i = 0; i < 4; i++) {
        f->targets[i].host = "127.0.0.1";
        f->targets[i].port = (uint16_t)(8000 + i);
        f->targets[i].weight = 100;
    }
    sl_healthchecks_t *hc = &f->u.health;
    hc->enabled = 1;
    for (int k = 0; k < 2; k++) {
        sl_health_rules_t *r = k ? &hc->passive : &hc->active;
        statuses(&r->healthy_statuses, good, 2);
        statuses(&r->unhealthy_statuses, bad, 2);
        r->successes = 2;
        r->http_failures = 2;
        r->tcp_failures = 2;
        r->timeouts = 1;
    }
    hc->base_ejection_time = 1000;
    hc->max_ejection_time = 2500;
    hc->max_ejection_percent = 50;
    f->list[0] = &f->u;
    f->cf.upstreams = f->list;
    f->cf.nupstreams = 1;
    return sl_health_create(&f->cf);
}

static void report(health_fixture_t *f, size_t i, int what, int status, int64_t now)
{
    sl_health_report(&f->u, i, SL_HEALTH_PASSIVE, what, status, now);
}

TEST(health_counts_failures_to_unhealthy_and_successes_back)
{
    health_fixture_t f;
    ASSERT_OK(fixture_init(&f));
    sl_health_target_t *h = sl_health_target(&f.u, 1);
    ASSERT(h != NULL);
    report(&f, 1, SL_HEALTH_STATUS, 500, 0);
    ASSERT(sl_health_usable(h));
    report(&f, 1, SL_HEALTH_STATUS, 404, 0); /* in neither list: counts for nothing */
    report(&f, 1, SL_HEALTH_STATUS, 503, 0);
    ASSERT(!sl_health_usable(h));
    ASSERT_STREQ(sl_health_name(&f.u, 1), "UNHEALTHY");
    ASSERT_EQ(atomic_load(&sl_health_upstream(&f.u)->down_weight), 100);
    ASSERT(sl_health_usable(sl_health_target(&f.u, 0)));

    report(&f, 1, SL_HEALTH_STATUS, 200, 0);
    ASSERT(!sl_health_usable(h));
    report(&f, 1, SL_HEALTH_STATUS, 200, 0);
    ASSERT(sl_health_usable(h));
    ASSERT_STREQ(sl_health_name(&f.u, 1), "HEALTHY");
    ASSERT_EQ(atomic_load(&sl_health_upstream(&f.u)->down_weight), 0);
    sl_health_destroy();
}

TEST(health_success_clears_the_failure_counts)
{
    health_fixture_t f;
    ASSERT_OK(fixture_init(&f));
    sl_health_target_t *h = sl_health_target(&f.u, 0);
    report(&f, 0, SL_HEALTH_TCP_ERROR, 0, 0);
    report(&f, 0, SL_HEALTH_STATUS, 200, 0);
    report(&f, 0, SL_HEALTH_TCP_ERROR, 0, 0);
    ASSERT(sl_health_usable(h)); /* never two in a row */
    report(&f, 0, SL_HEALTH_TCP_ERROR, 0, 0);
    ASSERT(!sl_health_usable(h));
    sl_health_destroy();
}

TEST(health_one_timeout_is_enough_when_timeouts_is_1)
{
    health_fixture_t f;
    ASSERT_OK(fixture_init(&f));
    report(&f, 2, SL_HEALTH_TIMEOUT, 0, 0);
    ASSERT(!sl_health_usable(sl_health_target(&f.u, 2)));
    sl_health_destroy();
}

TEST(health_threshold_compares_the_healthy_weight)
{
    health_fixture_t f;
    ASSERT_OK(fixture_init(&f));
    f.u.health.threshold = 50;
    ASSERT(sl_health_upstream_ok(&f.u));
    report(&f, 0, SL_HEALTH_TIMEOUT, 0, 0);
    report(&f, 1, SL_HEALTH_TIMEOUT, 0, 0);
    ASSERT(sl_health_upstream_ok(&f.u)); /* 50% healthy is not below 50% */
    report(&f, 2, SL_HEALTH_TIMEOUT, 0, 0);
    ASSERT(!sl_health_upstream_ok(&f.u));
    sl_health_destroy();
}

TEST(health_ejection_grows_and_is_capped)
{
    health_fixture_t f;
    ASSERT_OK(fixture_init(&f));
    f.u.health.consecutive_5xx = 3;
    f.u.health.passive.http_failures = 0; /* only the outlier rule acts */
    sl_health_target_t *h = sl_health_target(&f.u, 0);
    int64_t now = 100000;
    report(&f, 0, SL_HEALTH_STATUS, 500, now);
    report(&f, 0, SL_HEALTH_STATUS, 200, now); /* not consecutive: starts over */
    report(&f, 0, SL_HEALTH_STATUS, 502, now);
    report(&f, 0, SL_HEALTH_STATUS, 500, now);
    ASSERT(sl_health_usable(h));
    report(&f, 0, SL_HEALTH_TCP_ERROR, 0, now);
    ASSERT(!sl_health_usable(h));
    ASSERT_STREQ(sl_health_name(&f.u, 0), "EJECTED");
    ASSERT_EQ(atomic_load(&h->ejected_until), now + 1000);

    ASSERT_EQ(sl_health_expire(&f.u, now + 999), 0);
    ASSERT_EQ(sl_health_expire(&f.u, now + 1000), 1);
    ASSERT(sl_health_usable(h));

    /* Ejected again soon after: twice the time, then capped at 2.5 s. */
    now += 1500;
    for (int k = 0; k < 3; k++)
        report(&f, 0, SL_HEALTH_STATUS, 503, now);
    ASSERT_EQ(atomic_load(&h->ejected_until), now + 2000);
    ASSERT_EQ(sl_health_expire(&f.u, now + 2000), 1);
    now += 2500;
    for (int k = 0; k < 3; k++)
        report(&f, 0, SL_HEALTH_STATUS, 503, now);
    ASSERT_EQ(atomic_load(&h->ejected_until), now + 2500);
    ASSERT_EQ(sl_health_expire(&f.u, now + 2500), 1);

    /* A target that stayed in for max_ejection_time starts again from base. */
    now += 2500 + 2600;
    for (int k = 0; k < 3; k++)
        report(&f, 0, SL_HEALTH_STATUS, 503, now);
    ASSERT_EQ(atomic_load(&h->ejected_until), now + 1000);
    sl_health_destroy();
}

TEST(health_max_ejection_percent_limits_ejections)
{
    health_fixture_t f;
    ASSERT_OK(fixture_init(&f));
    f.u.health.consecutive_gateway_failure = 1;
    f.u.health.passive.http_failures = 0;
    for (size_t i = 0; i < 4; i++)
        report(&f, i, SL_HEALTH_STATUS, 504, 0);
    int ejected = 0;
    for (size_t i = 0; i < 4; i++)
        ejected += !sl_health_usable(sl_health_target(&f.u, i));
    ASSERT_EQ(ejected, 2); /* 50% of 4 */
    ASSERT_EQ(atomic_load(&sl_health_upstream(&f.u)->nejected), 2);
    sl_health_destroy();
}

TEST(health_off_costs_nothing_and_reads_usable)
{
    health_fixture_t f;
    ASSERT_OK(fixture_init(&f));
    sl_health_destroy();
    f.u.health.enabled = 0;
    ASSERT_OK(sl_health_create(&f.cf));
    ASSERT(sl_health_target(&f.u, 0) == NULL);
    ASSERT(sl_health_usable(NULL));
    ASSERT_STREQ(sl_health_name(&f.u, 0), "HEALTHCHECKS_OFF");
    ASSERT(sl_health_upstream_ok(&f.u));
    sl_health_destroy();
}

/* Every algorithm skips targets that are out, and finds none when all are. */
TEST(health_every_balancer_skips_targets_that_are_out)
{
    health_fixture_t f;
    ASSERT_OK(fixture_init(&f));
    f.u.slots = 1000;
    sl_peer_t peers[4];
    memset(peers, 0, sizeof(peers));
    sl_upstream_state_t ups = {&f.u, peers, 4, NULL, sl_health_upstream(&f.u)};
    for (size_t i = 0; i < 4; i++) {
        peers[i].conf = &f.targets[i];
        peers[i].health = sl_health_target(&f.u, i);
    }
    report(&f, 1, SL_HEALTH_TIMEOUT, 0, 0);
    f.u.health.consecutive_gateway_failure = 1;
    report(&f, 3, SL_HEALTH_STATUS, 502, 0); /* ejected */
    ASSERT_STREQ(sl_health_name(&f.u, 3), "EJECTED");
    for (int a = SL_LB_ROUND_ROBIN; a <= SL_LB_LATENCY; a++) {
        f.u.algorithm = a;
        sl_balancer_t *b = sl_balancer_create(&ups);
        ASSERT(b != NULL);
        int seen[4] = {0};
        for (int k = 0; k < 400; k++) {
            sl_balancer_ctx_t ctx = {0};
            ctx.hash = sl_hash_mix((uint64_t)k);
            ctx.has_hash = k & 1;
            int i = b->ops->select(b, &ctx);
            ASSERT(i >= 0 && i < 4);
            seen[i]++;
            b->ops->release(b, i, 1.0, SL_BALANCER_OK);
        }
        ASSERT_EQ(seen[1], 0);
        ASSERT_EQ(seen[3], 0);
        ASSERT(seen[0] > 0 && seen[2] > 0);
        /* Retries past the healthy ones find nothing. */
        sl_balancer_ctx_t ctx = {0};
        ctx.tried = 1 | 4;
        ASSERT_EQ(b->ops->select(b, &ctx), -1);
        b->ops->destroy(b);
    }
    sl_health_destroy();
}
