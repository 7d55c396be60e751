/* balancer.c: tests for core/balancer_rr.c. */
#include "../../core/balancer.h"

#include "test.h"

static sl_target_t targets[3];
static sl_peer_t peers[3];
static sl_upstream_state_t ups = {NULL, peers, 3, NULL};

static void setup(int w0, int w1, int w2)
{
    int w[3] = {w0, w1, w2};
    for (int i = 0; i < 3; i++) {
        targets[i].weight = w[i];
        peers[i].conf = &targets[i];
    }
}

TEST(round_robin_weights_5_1_1_interleave)
{
    setup(5, 1, 1);
    sl_balancer_t *b = sl_balancer_round_robin.create(&ups);
    char seq[15];
    for (int i = 0; i < 14; i++) {
        sl_balancer_ctx_t ctx = {0};
        seq[i] = (char)('a' + b->ops->select(b, &ctx));
    }
    seq[14] = '\0';
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
