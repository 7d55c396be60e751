/* targets.c: tests for core/targets.c: slot reconciliation, the shared table, and how a worker
 * adopts a new address set (upstream.c: sl_upstreams_refresh) with its health, pool and ring. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../core/balancer.h"
#include "../../core/health.h"
#include "../../core/targets.h"
#include "../../core/upstream.h"
#include "../../core/worker.h"

#include "test.h"

static sl_taddr_t v4(int last)
{
    sl_taddr_t a;
    memset(&a, 0, sizeof(a));
    a.family = AF_INET;
    a.addr[0] = 10;
    a.addr[3] = (uint8_t)last;
    return a;
}

/* The last byte of slot s's IPv4 address, 0 when it is empty. */
static int last_byte(const sl_taddr_t *slots, size_t s)
{
    return slots[s].family == 0 ? 0 : slots[s].addr[3];
}

TEST(targets_reconcile_keeps_addresses_that_stay)
{
    sl_taddr_t slots[4] = {v4(1), v4(2)};
    uint64_t vacated[4] = {0};
    uint8_t changed[4] = {0};
    sl_taddr_t fresh[] = {v4(3), v4(2)};
    size_t dropped;
    ASSERT_EQ(sl_targets_reconcile(slots, vacated, 4, fresh, 2, 7, changed, &dropped), 2);
    ASSERT_EQ(dropped, 0);
    ASSERT_EQ(last_byte(slots, 0), 0); /* 10.0.0.1 left */
    ASSERT_EQ(last_byte(slots, 1), 2); /* 10.0.0.2 stayed where it was */
    /* 10.0.0.3 takes a slot never used rather than the one just emptied. */
    ASSERT_EQ(last_byte(slots, 2), 3);
    ASSERT_EQ(vacated[0], 7);
    ASSERT(changed[0] && !changed[1] && changed[2] && !changed[3]);

    uint8_t none[4] = {0};
    ASSERT_EQ(sl_targets_reconcile(slots, vacated, 4, fresh, 2, 8, none, &dropped), 0);
    ASSERT(!none[0] && !none[1] && !none[2] && !none[3]);
}

TEST(targets_reconcile_reuses_the_slot_emptied_longest_ago)
{
    sl_taddr_t slots[3] = {v4(1), v4(2), v4(3)};
    uint64_t vacated[3] = {0};
    uint8_t changed[3] = {0};
    size_t dropped;
    sl_taddr_t two[] = {v4(2), v4(3)}, one[] = {v4(3)}, next[] = {v4(3), v4(4), v4(5)};
    sl_targets_reconcile(slots, vacated, 3, two, 2, 1, changed, &dropped); /* slot 0 emptied at 1 */
    sl_targets_reconcile(slots, vacated, 3, one, 1, 2, changed, &dropped); /* slot 1 emptied at 2 */
    memset(changed, 0, sizeof(changed));
    ASSERT_EQ(sl_targets_reconcile(slots, vacated, 3, next, 3, 3, changed, &dropped), 2);
    ASSERT_EQ(last_byte(slots, 0), 4);
    ASSERT_EQ(last_byte(slots, 1), 5);
    ASSERT_EQ(last_byte(slots, 2), 3);
}

TEST(targets_reconcile_leaves_out_what_does_not_fit)
{
    sl_taddr_t slots[2] = {v4(1)};
    uint64_t vacated[2] = {0};
    uint8_t changed[2] = {0};
    sl_taddr_t fresh[] = {v4(1), v4(2), v4(3)};
    size_t dropped;
    ASSERT_EQ(sl_targets_reconcile(slots, vacated, 2, fresh, 3, 1, changed, &dropped), 1);
    ASSERT_EQ(dropped, 1);
    ASSERT_EQ(last_byte(slots, 0), 1);
    ASSERT_EQ(last_byte(slots, 1), 2);

    /* Every address replaced at once: the emptied slots are all there is. */
    sl_taddr_t other[] = {v4(8), v4(9)};
    memset(changed, 0, sizeof(changed));
    ASSERT_EQ(sl_targets_reconcile(slots, vacated, 2, other, 2, 2, changed, &dropped), 2);
    ASSERT_EQ(dropped, 0);
    ASSERT(last_byte(slots, 0) + last_byte(slots, 1) == 17);
}

/* One upstream whose only target is a name with SL_DNS_SLOTS slots, the
 * first holding 127.0.0.1:port; with health checks (passive) when checks. */
typedef struct {
    sl_worker_t w;
    sl_config_t cf;
    sl_upstream_t u;
    sl_upstream_t *list[1];
    sl_target_t targets[SL_DNS_SLOTS];
    int lfd;
    uint16_t port;
} names_fixture_t;

static int names_init(names_fixture_t *f, int algorithm, int checks)
{
    memset(f, 0, sizeof(*f));
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(f->lfd, 16) != 0 ||
        getsockname(f->lfd, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    f->port = ntohs(sa.sin_port);
    for (size_t i = 0; i < SL_DNS_SLOTS; i++) {
        f->targets[i].host = "svc.test";
        f->targets[i].port = f->port;
        f->targets[i].weight = 100;
        f->targets[i].dns_slot = (uint8_t)(i + 1);
    }
    memcpy(&f->targets[0].addr, &sa, sizeof(sa));
    f->targets[0].addrlen = sizeof(sa);
    f->u.name = "pool";
    f->u.algorithm = algorithm;
    f->u.slots = 1000;
    f->u.targets = f->targets;
    f->u.ntargets = SL_DNS_SLOTS;
    if (checks) {
        f->u.health.enabled = 1;
        f->u.health.passive.tcp_failures = 1;
        f->u.health.max_ejection_percent = 50;
    }
    f->list[0] = &f->u;
    f->cf.upstreams = f->list;
    f->cf.nupstreams = 1;
    f->cf.server.upstream_keepalive_pool_size = 8;
    f->cf.server.upstream_keepalive_idle_timeout = 60000;
    f->cf.server.dns_min_ttl = 1000;
    f->cf.server.dns_max_ttl = 3600000;
    if (sl_health_create(&f->cf) != SL_OK || sl_targets_create(&f->cf) != SL_OK)
        return -1;
    f->w.cf = &f->cf;
    f->w.loop = ev_loop_new(EVFLAG_AUTO);
    f->w.nups = 1;
    f->w.ups = sl_upstreams_create(&f->cf);
    return f->w.ups != NULL ? 0 : -1;
}

static void names_done(names_fixture_t *f)
{
    sl_upstreams_destroy(f->w.ups, f->w.nups);
    ev_loop_destroy(f->w.loop);
    sl_targets_destroy();
    sl_health_destroy();
    close(f->lfd);
}

static sl_taddr_t loopback(int last)
{
    sl_taddr_t a;
    memset(&a, 0, sizeof(a));
    a.family = AF_INET;
    a.addr[0] = 127;
    a.addr[3] = (uint8_t)last;
    return a;
}

static const sl_request_t *const REQ = (const sl_request_t *)&REQ;

TEST(targets_a_worker_adopts_a_new_address_set)
{
    names_fixture_t f;
    ASSERT_OK(names_init(&f, SL_LB_ROUND_ROBIN, 1));
    sl_upstream_state_t *ups = &f.w.ups[0];
    ASSERT_EQ(ups->nnames, 1);
    ASSERT_EQ(ups->targets[0].weight, 100);
    ASSERT_EQ(ups->targets[1].weight, 0); /* no address: never picked */
    ASSERT(!sl_health_usable(ups->peers[1].health));
    ASSERT(sl_health_upstream_ok(&f.u));
    ASSERT_EQ(sl_upstreams_refresh(f.w.ups, 1), 0);

    /* A connection serving a request, and one in the pool, both to 127.0.0.1. */
    sl_upconn_t *busy = sl_upconn_get(&f.w, &ups->peers[0], (sl_request_t *)REQ);
    sl_upconn_t *idle = sl_upconn_get(&f.w, &ups->peers[0], (sl_request_t *)REQ);
    ASSERT(busy != NULL && idle != NULL);
    sl_upconn_release(idle, 1);
    ASSERT_EQ(ups->peers[0].nidle, 1);

    sl_taddr_t next[] = {loopback(2)};
    ASSERT_EQ(sl_targets_publish(0, next, 1), 2);
    /* The master's health update is seen at once, before the worker adopts. */
    ASSERT(!sl_health_usable(ups->peers[0].health));
    ASSERT(sl_health_usable(ups->peers[1].health));
    struct sockaddr_storage ss;
    socklen_t len;
    ASSERT_EQ(sl_targets_addr(&f.u, 0, &ss, &len), 0);
    ASSERT_EQ(sl_targets_addr(&f.u, 1, &ss, &len), 1);
    ASSERT_EQ(((struct sockaddr_in *)&ss)->sin_addr.s_addr, htonl(0x7f000002));
    ASSERT_EQ(ntohs(((struct sockaddr_in *)&ss)->sin_port), f.port);

    ASSERT_EQ(sl_upstreams_refresh(f.w.ups, 1), 1);
    ASSERT_EQ(ups->targets[0].weight, 0);
    ASSERT_EQ(ups->targets[0].addrlen, 0);
    ASSERT_EQ(ups->targets[1].weight, 100);
    ASSERT_EQ(((struct sockaddr_in *)&ups->targets[1].addr)->sin_addr.s_addr, htonl(0x7f000002));
    ASSERT_EQ(ups->peers[0].nidle, 0); /* the pool of the address that left is closed */
    sl_upconn_release(busy, 1);        /* and its busy connection is not pooled again */
    ASSERT_EQ(ups->peers[0].nidle, 0);
    ASSERT_EQ(ups->peers[0].active, 0);
    for (int k = 0; k < 4; k++) {
        sl_balancer_ctx_t ctx = {0};
        ASSERT_EQ(ups->balancer->ops->select(ups->balancer, &ctx), 1);
    }
    ASSERT_EQ(sl_upstreams_refresh(f.w.ups, 1), 0); /* nothing new */

    /* A worker created later (a respawn) starts from the table, not the load. */
    sl_upstream_state_t *later = sl_upstreams_create(&f.cf);
    ASSERT(later != NULL);
    ASSERT_EQ(later[0].targets[0].weight, 0);
    ASSERT_EQ(later[0].targets[1].weight, 100);
    sl_upstreams_destroy(later, 1);
    names_done(&f);
}

TEST(targets_threshold_and_ejections_count_present_slots_only)
{
    names_fixture_t f;
    ASSERT_OK(names_init(&f, SL_LB_ROUND_ROBIN, 1));
    f.u.health.threshold = 50;
    sl_health_upstream_t *hu = sl_health_upstream(&f.u);
    ASSERT_EQ(atomic_load(&hu->nabsent), SL_DNS_SLOTS - 1);
    /* One address of one: fully healthy, though 15 slots are empty. */
    ASSERT(sl_health_upstream_ok(&f.u));
    sl_taddr_t two[] = {loopback(1), loopback(2)};
    sl_targets_publish(0, two, 2);
    ASSERT_EQ(atomic_load(&hu->nabsent), SL_DNS_SLOTS - 2);
    sl_health_report(&f.u, 1, SL_HEALTH_PASSIVE, SL_HEALTH_TCP_ERROR, 0, 0);
    ASSERT(!sl_health_usable(sl_health_target(&f.u, 1)));
    ASSERT(sl_health_upstream_ok(&f.u)); /* 50% of the present weight is up */
    sl_health_report(&f.u, 0, SL_HEALTH_PASSIVE, SL_HEALTH_TCP_ERROR, 0, 0);
    ASSERT(!sl_health_upstream_ok(&f.u));

    /* The unhealthy address leaves: its weight leaves the sums with it, and a
     * report that comes late for its slot counts for nothing. */
    sl_taddr_t one[] = {loopback(1)};
    sl_targets_publish(0, one, 1);
    ASSERT_EQ(atomic_load(&hu->down_weight), 100 * SL_DNS_SLOTS);
    sl_health_report(&f.u, 1, SL_HEALTH_PASSIVE, SL_HEALTH_STATUS, 200, 0);
    ASSERT(!sl_health_usable(sl_health_target(&f.u, 1)));
    /* A new address in a slot starts healthy. */
    sl_taddr_t back[] = {loopback(1), loopback(3)};
    sl_targets_publish(0, back, 2);
    ASSERT(sl_health_usable(sl_health_target(&f.u, 2)));
    ASSERT_EQ(atomic_load(&hu->down_weight), 100 * (SL_DNS_SLOTS - 1));
    names_done(&f);
}

TEST(targets_the_hashing_ring_follows_the_addresses)
{
    names_fixture_t f;
    ASSERT_OK(names_init(&f, SL_LB_CONSISTENT_HASH, 0));
    sl_upstream_state_t *ups = &f.w.ups[0];
    sl_balancer_t *b = ups->balancer;
    int owner[200];
    sl_taddr_t two[] = {loopback(1), loopback(2)};
    sl_targets_publish(0, two, 2);
    sl_upstreams_refresh(f.w.ups, 1);
    int counts[SL_DNS_SLOTS] = {0};
    for (int k = 0; k < 200; k++) {
        sl_balancer_ctx_t ctx = {0};
        ctx.hash = sl_hash_mix((uint64_t)k * 7919);
        ctx.has_hash = 1;
        owner[k] = b->ops->select(b, &ctx);
        ASSERT(owner[k] == 0 || owner[k] == 1);
        counts[owner[k]]++;
    }
    ASSERT(counts[0] > 50 && counts[1] > 50);

    /* 127.0.0.1 leaves and 127.0.0.3 comes: a key of 127.0.0.2 stays there
     * unless the newcomer outbids it (a third of them, with rendezvous
     * hashing); none goes to the slot that is empty now. */
    sl_taddr_t next[] = {loopback(2), loopback(3)};
    sl_targets_publish(0, next, 2);
    sl_upstreams_refresh(f.w.ups, 1);
    int stayed = 0;
    for (int k = 0; k < 200; k++) {
        sl_balancer_ctx_t ctx = {0};
        ctx.hash = sl_hash_mix((uint64_t)k * 7919);
        ctx.has_hash = 1;
        int now = b->ops->select(b, &ctx);
        ASSERT(now == 1 || now == 2);
        stayed += owner[k] == 1 && now == 1;
    }
    ASSERT(stayed * 2 > counts[1]);
    names_done(&f);
}
