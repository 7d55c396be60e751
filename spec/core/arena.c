/* arena.c: tests for core/arena.c. */
#include "../../core/arena.h"

#include "test.h"

TEST(arena_alloc_is_aligned_and_reset_keeps_one_block)
{
    sl_arena_t *a = sl_arena_create(256);
    ASSERT(a != NULL);
    char *p = sl_arena_alloc(a, 3);
    char *q = sl_arena_alloc(a, 5);
    ASSERT_EQ((uintptr_t)p % 16, 0);
    ASSERT_EQ((uintptr_t)q % 16, 0);
    ASSERT(q != p);
    /* A request bigger than a block gets its own block. */
    char *big = sl_arena_alloc(a, 4096);
    ASSERT(big != NULL);
    memset(big, 'x', 4096);
    sl_arena_reset(a);
    char *r = sl_arena_alloc(a, 3);
    ASSERT(r == p);
    sl_arena_destroy(a);
}

TEST(arena_strndup_terminates)
{
    sl_arena_t *a = sl_arena_create(64);
    char *s = sl_arena_strndup(a, "hello world", 5);
    ASSERT_STREQ(s, "hello");
    sl_arena_destroy(a);
}
