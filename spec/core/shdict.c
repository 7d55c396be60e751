/* shdict.c: tests for core/shdict.c: operations, expiry, eviction, processes and crash recovery. */
#include "../../core/shdict.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../core/log.h"
#include "../../core/sl_ffi.h"
#include "test.h"

/* The injectable clock: tests move time by hand. It starts far from 0 so that
 * flush_all's "expired long ago" stamp is in its past. */
static int64_t fake_ms = 1000000;

static int64_t fake_clock(void)
{
    return fake_ms;
}

static sl_shdict_t *dict(size_t size)
{
    sl_shdict_test_clock(fake_clock);
    fake_ms = 1000000;
    return sl_shdict_create("test", size);
}

static void done(sl_shdict_t *d)
{
    sl_shdict_destroy(d);
    sl_shdict_test_clock(NULL);
}

static const char *err;
static int forcible;

static int put(sl_shdict_t *d, int op, const char *key, const char *value, double exptime)
{
    return sl_ffi_shdict_store(d, op, key, strlen(key), SL_SHDICT_STRING, value, strlen(value), 0,
                               exptime, 0, &forcible, &err);
}

static int put_num(sl_shdict_t *d, const char *key, double num, double exptime)
{
    return sl_ffi_shdict_store(d, SL_SHDICT_SET, key, strlen(key), SL_SHDICT_NUMBER, NULL, 0, num,
                               exptime, 0, &forcible, &err);
}

static int del(sl_shdict_t *d, const char *key)
{
    return sl_ffi_shdict_store(d, SL_SHDICT_SET, key, strlen(key), SL_SHDICT_NIL, NULL, 0, 0, 0, 0,
                               &forcible, &err);
}

/* What the last get returned. */
static char value[70000];
static size_t vlen;
static int vtype, vstale;
static double vnum;
static uint32_t vflags;

static int get(sl_shdict_t *d, const char *key, int stale)
{
    int rc = sl_ffi_shdict_get(d, key, strlen(key), stale, value, sizeof(value) - 1, &vtype, &vlen,
                               &vnum, &vflags, &vstale, &err);
    if (rc == SL_OK)
        value[vlen] = '\0';
    return rc;
}

static int incr(sl_shdict_t *d, const char *key, double by, int has_init, double init, double ttl,
                double *result)
{
    return sl_ffi_shdict_incr(d, key, strlen(key), by, has_init, init, ttl, result, &forcible,
                              &err);
}

static int ttl(sl_shdict_t *d, const char *key, double *secs)
{
    return sl_ffi_shdict_ttl(d, key, strlen(key), secs, &err);
}

static int consistent(sl_shdict_t *d)
{
    const char *why = NULL;
    if (sl_shdict_check(d, &why) != SL_OK) {
        fprintf(stderr, "    shared dict check: %s\n", why);
        return 0;
    }
    return 1;
}

TEST(shdict_create_checks_the_size)
{
    int level = sl_log_level;
    sl_log_level = -1;
    ASSERT(sl_shdict_create("small", SL_SHDICT_MIN_SIZE - 1) == NULL);
    sl_log_level = level;
    sl_shdict_t *d = sl_shdict_create("min", SL_SHDICT_MIN_SIZE);
    ASSERT(d != NULL);
    size_t cap, free_space;
    ASSERT_OK(sl_ffi_shdict_space(d, &cap, &free_space, &err));
    ASSERT_EQ(cap, SL_SHDICT_MIN_SIZE);
    ASSERT(free_space > cap - 2048 && free_space < cap);
    ASSERT(consistent(d));
    sl_shdict_destroy(d);
}

TEST(shdict_registry_finds_by_name)
{
    sl_shdict_t *a = sl_shdict_create("alpha", 64 * 1024);
    sl_shdict_t *a2 = sl_shdict_create("alpha", 64 * 1024);
    sl_shdict_t *found;
    ASSERT(a != NULL && a2 != NULL);
    ASSERT_OK(sl_shdict_register(a));
    ASSERT_EQ(sl_shdict_register(a2), SL_DECLINED);
    ASSERT(sl_shdict_find("alpha", 5) == a);
    ASSERT(sl_shdict_find("alph", 4) == NULL);
    ASSERT_OK(sl_ffi_shdict_find("alpha", 5, &found));
    ASSERT(found == a);
    ASSERT_STREQ(sl_shdict_name(a), "alpha");

    /* open finds what exists and creates what does not. */
    ASSERT_OK(sl_ffi_shdict_open("alpha", 5, 1 << 20, &found, &err));
    ASSERT(found == a);
    ASSERT_OK(sl_ffi_shdict_open("beta", 4, 1 << 20, &found, &err));
    ASSERT(sl_shdict_find("beta", 4) == found);
    ASSERT_EQ(sl_ffi_shdict_open("gamma", 5, 1024, &found, &err), SL_ERROR);
    ASSERT_STREQ(err, "bad size");
    ASSERT_EQ(sl_ffi_shdict_open("", 0, 1 << 20, &found, &err), SL_ERROR);

    sl_shdict_destroy(sl_shdict_find("beta", 4));
    sl_shdict_destroy(a);
    sl_shdict_destroy(a2);
    ASSERT(sl_shdict_find("alpha", 5) == NULL);
    ASSERT_EQ(sl_ffi_shdict_find("beta", 4, &found), SL_DECLINED);
}

TEST(shdict_set_get_value_types_and_flags)
{
    sl_shdict_t *d = dict(1 << 20);
    ASSERT_OK(put(d, SL_SHDICT_SET, "s", "hello", 0));
    ASSERT_EQ(forcible, 0);
    ASSERT_OK(get(d, "s", 0));
    ASSERT_EQ(vtype, SL_SHDICT_STRING);
    ASSERT_STREQ(value, "hello");
    ASSERT_EQ(vflags, 0);

    /* Binary keys and values, empty values. */
    ASSERT_OK(sl_ffi_shdict_store(d, SL_SHDICT_SET, "a\0b", 3, SL_SHDICT_STRING, "x\0y", 3, 0, 0, 7,
                                  &forcible, &err));
    ASSERT_OK(sl_ffi_shdict_get(d, "a\0b", 3, 0, value, sizeof(value), &vtype, &vlen, &vnum,
                                &vflags, &vstale, &err));
    ASSERT_EQ(vlen, 3);
    ASSERT(memcmp(value, "x\0y", 3) == 0);
    ASSERT_EQ(vflags, 7);
    ASSERT_EQ(get(d, "a", 0), SL_DECLINED);
    ASSERT_OK(put(d, SL_SHDICT_SET, "empty", "", 0));
    ASSERT_OK(get(d, "empty", 0));
    ASSERT_EQ(vtype, SL_SHDICT_STRING);
    ASSERT_EQ(vlen, 0);

    ASSERT_OK(put_num(d, "n", 3.5, 0));
    ASSERT_OK(get(d, "n", 0));
    ASSERT_EQ(vtype, SL_SHDICT_NUMBER);
    ASSERT(vnum == 3.5);

    ASSERT_OK(sl_ffi_shdict_store(d, SL_SHDICT_SET, "b", 1, SL_SHDICT_BOOLEAN, NULL, 0, 5, 0,
                                  0xffffffffu, &forcible, &err));
    ASSERT_OK(get(d, "b", 0));
    ASSERT_EQ(vtype, SL_SHDICT_BOOLEAN);
    ASSERT(vnum == 1);
    ASSERT_EQ(vflags, 0xffffffffu);

    /* Overwrite with another type and size, then delete. */
    ASSERT_OK(put(d, SL_SHDICT_SET, "n", "now a string of some length", 0));
    ASSERT_OK(get(d, "n", 0));
    ASSERT_STREQ(value, "now a string of some length");
    ASSERT_OK(del(d, "n"));
    ASSERT_EQ(get(d, "n", 0), SL_DECLINED);
    ASSERT_OK(del(d, "never-there"));
    ASSERT(consistent(d));
    done(d);
}

TEST(shdict_rejects_bad_arguments)
{
    sl_shdict_t *d = dict(1 << 20);
    char *long_key = malloc(65536);
    ASSERT(long_key != NULL);
    memset(long_key, 'k', 65536);

    ASSERT_EQ(put(d, SL_SHDICT_SET, "", "v", 0), SL_ERROR);
    ASSERT_STREQ(err, "empty key");
    ASSERT_EQ(sl_ffi_shdict_store(d, SL_SHDICT_SET, long_key, 65536, SL_SHDICT_STRING, "v", 1, 0, 0,
                                  0, &forcible, &err),
              SL_ERROR);
    ASSERT_STREQ(err, "key too long");
    ASSERT_OK(sl_ffi_shdict_store(d, SL_SHDICT_SET, long_key, 65535, SL_SHDICT_STRING, "v", 1, 0, 0,
                                  0, &forcible, &err));
    ASSERT_EQ(sl_ffi_shdict_get(d, long_key, 65536, 0, value, sizeof(value), &vtype, &vlen, &vnum,
                                &vflags, &vstale, &err),
              SL_ERROR);
    ASSERT_STREQ(err, "key too long");
    ASSERT_EQ(put(d, SL_SHDICT_SET, "k", "v", -1), SL_ERROR);
    ASSERT_STREQ(err, "bad exptime");
    ASSERT_EQ(put(d, SL_SHDICT_SET, "k", "v", 0.0 / 0.0), SL_ERROR);
    ASSERT_EQ(sl_ffi_shdict_store(d, SL_SHDICT_ADD, "k", 1, SL_SHDICT_NIL, NULL, 0, 0, 0, 0,
                                  &forcible, &err),
              SL_ERROR);
    ASSERT_STREQ(err, "attempt to add or replace nil values");
    ASSERT_EQ(sl_ffi_shdict_store(d, SL_SHDICT_SET, "k", 1, 9, NULL, 0, 0, 0, 0, &forcible, &err),
              SL_ERROR);
    ASSERT_STREQ(err, "bad value type");
    free(long_key);
    ASSERT(consistent(d));
    done(d);
}

TEST(shdict_add_and_replace)
{
    sl_shdict_t *d = dict(1 << 20);
    ASSERT_EQ(put(d, SL_SHDICT_REPLACE, "k", "v1", 0), SL_DECLINED);
    ASSERT_STREQ(err, "not found");
    ASSERT_OK(put(d, SL_SHDICT_ADD, "k", "v1", 1));
    ASSERT_EQ(put(d, SL_SHDICT_ADD, "k", "v2", 0), SL_DECLINED);
    ASSERT_STREQ(err, "exists");
    ASSERT_EQ(put(d, SL_SHDICT_ADD | SL_SHDICT_SAFE, "k", "v2", 0), SL_DECLINED);
    ASSERT_OK(put(d, SL_SHDICT_REPLACE, "k", "v3", 1));
    ASSERT_OK(get(d, "k", 0));
    ASSERT_STREQ(value, "v3");

    /* An expired entry counts as absent for both. */
    fake_ms += 1000;
    ASSERT_EQ(put(d, SL_SHDICT_REPLACE, "k", "v4", 0), SL_DECLINED);
    ASSERT_OK(put(d, SL_SHDICT_ADD, "k", "v5", 0));
    ASSERT_OK(get(d, "k", 0));
    ASSERT_STREQ(value, "v5");
    ASSERT(consistent(d));
    done(d);
}

TEST(shdict_incr)
{
    sl_shdict_t *d = dict(1 << 20);
    double r = 0, secs;
    ASSERT_EQ(incr(d, "n", 1, 0, 0, 0, &r), SL_DECLINED);
    ASSERT_STREQ(err, "not found");
    ASSERT_OK(incr(d, "n", 2, 1, 10, 0, &r));
    ASSERT(r == 12);
    ASSERT_OK(incr(d, "n", -0.5, 1, 100, 5, &r)); /* init and init_ttl ignored: it exists */
    ASSERT(r == 11.5);
    ASSERT_OK(ttl(d, "n", &secs));
    ASSERT(secs == 0);

    ASSERT_OK(put(d, SL_SHDICT_SET, "s", "12", 0));
    ASSERT_EQ(incr(d, "s", 1, 1, 0, 0, &r), SL_DECLINED);
    ASSERT_STREQ(err, "not a number");

    /* init_ttl applies to a created key; incr keeps an existing key's expiry and flags. */
    ASSERT_OK(incr(d, "t", 1, 1, 0, 2, &r));
    ASSERT(r == 1);
    ASSERT_OK(ttl(d, "t", &secs));
    ASSERT(secs == 2);
    fake_ms += 1500;
    ASSERT_OK(incr(d, "t", 1, 1, 0, 60, &r));
    ASSERT(r == 2);
    ASSERT_OK(ttl(d, "t", &secs));
    ASSERT(secs == 0.5);
    fake_ms += 500;
    ASSERT_EQ(incr(d, "t", 1, 0, 0, 0, &r), SL_DECLINED);
    ASSERT_OK(incr(d, "t", 1, 1, 40, 0, &r)); /* expired: created afresh from init */
    ASSERT(r == 41);

    ASSERT_OK(sl_ffi_shdict_store(d, SL_SHDICT_SET, "f", 1, SL_SHDICT_NUMBER, NULL, 0, 1, 0, 9,
                                  &forcible, &err));
    ASSERT_OK(incr(d, "f", 1, 0, 0, 0, &r));
    ASSERT_OK(get(d, "f", 0));
    ASSERT_EQ(vflags, 9);
    ASSERT(vnum == 2);
    ASSERT(consistent(d));
    done(d);
}

TEST(shdict_ttl_expire_and_stale_get)
{
    sl_shdict_t *d = dict(1 << 20);
    double secs;
    ASSERT_OK(put(d, SL_SHDICT_SET, "k", "v", 1.5));
    ASSERT_OK(ttl(d, "k", &secs));
    ASSERT(secs == 1.5);
    fake_ms += 1000;
    ASSERT_OK(ttl(d, "k", &secs));
    ASSERT(secs == 0.5);
    ASSERT_OK(get(d, "k", 0));

    fake_ms += 500; /* expires exactly now */
    ASSERT_EQ(get(d, "k", 0), SL_DECLINED);
    ASSERT_EQ(ttl(d, "k", &secs), SL_DECLINED);
    ASSERT_STREQ(err, "not found");
    ASSERT_EQ(sl_ffi_shdict_expire(d, "k", 1, 10, &err), SL_DECLINED);
    ASSERT_OK(get(d, "k", 1));
    ASSERT_STREQ(value, "v");
    ASSERT_EQ(vstale, 1);

    /* A sub-millisecond TTL still expires; expire() moves and clears it. */
    ASSERT_OK(put(d, SL_SHDICT_SET, "k", "v2", 0.0001));
    ASSERT_OK(get(d, "k", 1));
    ASSERT_EQ(vstale, 0);
    ASSERT_OK(sl_ffi_shdict_expire(d, "k", 1, 3, &err));
    ASSERT_OK(ttl(d, "k", &secs));
    ASSERT(secs == 3);
    ASSERT_OK(sl_ffi_shdict_expire(d, "k", 1, 0, &err));
    fake_ms += 1000000;
    ASSERT_OK(ttl(d, "k", &secs));
    ASSERT(secs == 0);
    ASSERT_EQ(ttl(d, "nope", &secs), SL_DECLINED);
    ASSERT(consistent(d));
    done(d);
}

TEST(shdict_get_asks_for_a_bigger_buffer)
{
    sl_shdict_t *d = dict(1 << 20);
    char small[4];
    ASSERT_OK(put(d, SL_SHDICT_SET, "k", "0123456789", 0));
    ASSERT_EQ(sl_ffi_shdict_get(d, "k", 1, 0, small, sizeof(small), &vtype, &vlen, &vnum, &vflags,
                                &vstale, &err),
              SL_AGAIN);
    ASSERT_EQ(vlen, 10);
    /* Numbers need no buffer at all. */
    ASSERT_OK(put_num(d, "n", 1, 0));
    ASSERT_OK(
        sl_ffi_shdict_get(d, "n", 1, 0, NULL, 0, &vtype, &vlen, &vnum, &vflags, &vstale, &err));
    ASSERT(vnum == 1);
    done(d);
}

/* Fills a 64 KiB dict with 1 KiB values: k0 is used again, so k1 is the least recently used. */
TEST(shdict_evicts_least_recently_used_first)
{
    sl_shdict_t *d = dict(64 * 1024);
    char key[32], big[1024];
    int i, first_forced = -1;
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';

    for (i = 0; i < 200 && first_forced < 0; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        ASSERT_OK(put(d, SL_SHDICT_SET, key, big, 0));
        if (forcible)
            first_forced = i;
        ASSERT_OK(get(d, "k0", 0));
    }
    ASSERT(first_forced > 40); /* about 60 fit */
    ASSERT_OK(get(d, "k0", 0));
    ASSERT_EQ(get(d, "k1", 0), SL_DECLINED);
    ASSERT_OK(get(d, "k2", 0));
    snprintf(key, sizeof(key), "k%d", first_forced);
    ASSERT_OK(get(d, key, 0));

    /* safe_set evicts nothing live; set of an existing key reuses its space. */
    ASSERT_EQ(put(d, SL_SHDICT_SET | SL_SHDICT_SAFE, "new", big, 0), SL_ERROR);
    ASSERT_STREQ(err, "no memory");
    ASSERT_OK(get(d, "k2", 0));
    big[0] = 'w';
    ASSERT_OK(put(d, SL_SHDICT_SET | SL_SHDICT_SAFE, "k2", big, 0));
    ASSERT_EQ(forcible, 0);
    ASSERT_OK(put(d, SL_SHDICT_SET, "k3", big, 0));
    ASSERT_EQ(forcible, 0);
    ASSERT_OK(get(d, "k3", 0));
    ASSERT_EQ(value[0], 'w');

    /* Expired entries go before live ones, and do not count as forced. */
    ASSERT_OK(put(d, SL_SHDICT_SET, "k4", big, 1));
    fake_ms += 2000;
    ASSERT_OK(put(d, SL_SHDICT_SET | SL_SHDICT_SAFE, "new", big, 0));
    ASSERT_EQ(forcible, 0);
    ASSERT_EQ(get(d, "k4", 1), SL_DECLINED);
    ASSERT(consistent(d));
    done(d);
}

TEST(shdict_big_values)
{
    sl_shdict_t *d = dict(256 * 1024);
    size_t cap, free_space;
    char *big = malloc(300 * 1024);
    ASSERT(big != NULL);
    memset(big, 'b', 300 * 1024);

    ASSERT_OK(put(d, SL_SHDICT_SET, "small", "s", 0));
    /* Bigger than the whole dict: refused without evicting anything. */
    ASSERT_EQ(sl_ffi_shdict_store(d, SL_SHDICT_SET, "huge", 4, SL_SHDICT_STRING, big, 300 * 1024, 0,
                                  0, 0, &forcible, &err),
              SL_ERROR);
    ASSERT_STREQ(err, "no memory");
    ASSERT_EQ(forcible, 0);
    ASSERT_OK(get(d, "small", 0));

    /* A value as big as the free space: the small entry goes to make room. */
    ASSERT_OK(sl_ffi_shdict_space(d, &cap, &free_space, &err));
    size_t n = free_space;
    ASSERT_OK(sl_ffi_shdict_store(d, SL_SHDICT_SET, "big", 3, SL_SHDICT_STRING, big, n, 0, 0, 0,
                                  &forcible, &err));
    ASSERT_EQ(forcible, 1);
    ASSERT_EQ(get(d, "small", 0), SL_DECLINED);
    char *out = malloc(n);
    ASSERT(out != NULL);
    ASSERT_OK(
        sl_ffi_shdict_get(d, "big", 3, 0, out, n, &vtype, &vlen, &vnum, &vflags, &vstale, &err));
    ASSERT_EQ(vlen, n);
    ASSERT(memcmp(out, big, n) == 0);
    ASSERT_OK(del(d, "big"));
    ASSERT_OK(sl_ffi_shdict_space(d, &cap, &free_space, &err));
    ASSERT(free_space > n);
    free(out);
    free(big);
    ASSERT(consistent(d));
    done(d);
}

/* Keys of varied sizes into a 1 MiB dict far past full: every key still
 * present holds the last value written to it, and the structure stays sound. */
TEST(shdict_many_keys_until_full)
{
    sl_shdict_t *d = dict(1 << 20);
    enum { N = 20000 };
    static int last[N];
    char key[32], val[600];
    int forced = 0, present = 0;
    unsigned seed = 42;

    memset(last, 0, sizeof(last));
    for (int round = 1; round <= 4; round++) {
        for (int i = 0; i < N; i++) {
            seed = seed * 1103515245 + 12345;
            int len = (int)(seed >> 16) % 500;
            snprintf(key, sizeof(key), "key:%d", i);
            int n = snprintf(val, sizeof(val), "%d:%d:", i, round);
            memset(val + n, 'x', (size_t)len);
            val[n + len] = '\0';
            ASSERT_OK(put(d, SL_SHDICT_SET, key, val, 0));
            forced |= forcible;
            last[i] = round;
            if (i % 7 == 0)
                ASSERT_OK(del(d, key));
        }
    }
    ASSERT(forced);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        if (get(d, key, 0) != SL_OK)
            continue;
        ASSERT(i % 7 != 0);
        char want[32];
        snprintf(want, sizeof(want), "%d:%d:", i, last[i]);
        ASSERT(strncmp(value, want, strlen(want)) == 0);
        present++;
    }
    ASSERT(present > 1000);
    ASSERT(consistent(d));
    done(d);
}

TEST(shdict_get_keys)
{
    sl_shdict_t *d = dict(1 << 20);
    char buf[256];
    size_t len;
    int count;

    ASSERT_OK(sl_ffi_shdict_get_keys(d, 0, buf, sizeof(buf), &len, &count, &err));
    ASSERT_EQ(count, 0);
    ASSERT_OK(put(d, SL_SHDICT_SET, "a", "1", 0));
    ASSERT_OK(put(d, SL_SHDICT_SET, "bb", "2", 1));
    ASSERT_OK(put(d, SL_SHDICT_SET, "ccc", "3", 0));
    ASSERT_OK(get(d, "a", 0)); /* most recently used: listed first */

    ASSERT_OK(sl_ffi_shdict_get_keys(d, 0, buf, sizeof(buf), &len, &count, &err));
    ASSERT_EQ(count, 3);
    ASSERT_EQ(len, 3 * 2 + 6);
    ASSERT(memcmp(buf, "\1\0a\3\0ccc\2\0bb", len) == 0);
    ASSERT_OK(sl_ffi_shdict_get_keys(d, 2, buf, sizeof(buf), &len, &count, &err));
    ASSERT_EQ(count, 2);
    ASSERT_EQ(sl_ffi_shdict_get_keys(d, 0, buf, 5, &len, &count, &err), SL_AGAIN);
    ASSERT_EQ(len, 12);

    fake_ms += 1000; /* "bb" expires */
    ASSERT_OK(sl_ffi_shdict_get_keys(d, 0, buf, sizeof(buf), &len, &count, &err));
    ASSERT_EQ(count, 2);
    ASSERT(memcmp(buf, "\1\0a\3\0ccc", len) == 0);
    done(d);
}

TEST(shdict_flush_expired_and_flush_all)
{
    sl_shdict_t *d = dict(1 << 20);
    size_t cap, before, after;
    int count;
    char key[16];

    ASSERT_OK(sl_ffi_shdict_space(d, &cap, &before, &err));
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        ASSERT_OK(put(d, SL_SHDICT_SET, key, "value", i < 6 ? 1 : 0));
    }
    fake_ms += 1000;
    ASSERT_OK(sl_ffi_shdict_flush_expired(d, 2, &count, &err));
    ASSERT_EQ(count, 2);
    ASSERT_OK(sl_ffi_shdict_flush_expired(d, 0, &count, &err));
    ASSERT_EQ(count, 4);
    ASSERT_OK(sl_ffi_shdict_flush_expired(d, 0, &count, &err));
    ASSERT_EQ(count, 0);
    ASSERT_OK(get(d, "k7", 0));

    /* flush_all expires everything; the memory comes back with flush_expired. */
    ASSERT_OK(sl_ffi_shdict_flush_all(d, &err));
    ASSERT_EQ(get(d, "k7", 0), SL_DECLINED);
    ASSERT_OK(get(d, "k7", 1));
    ASSERT_EQ(vstale, 1);
    ASSERT_OK(sl_ffi_shdict_flush_expired(d, 0, &count, &err));
    ASSERT_EQ(count, 4);
    ASSERT_OK(sl_ffi_shdict_space(d, &cap, &after, &err));
    ASSERT_EQ(after, before);
    ASSERT(consistent(d));
    done(d);
}

static int wait_child(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
    }
    return status;
}

TEST(shdict_incr_is_atomic_across_processes)
{
    sl_shdict_t *d = dict(1 << 20);
    pid_t pids[4];
    double r;
    sl_shdict_test_clock(NULL);

    for (int p = 0; p < 4; p++) {
        pids[p] = fork();
        ASSERT(pids[p] >= 0);
        if (pids[p] == 0) {
            int bad = 0;
            for (int i = 0; i < 10000; i++)
                bad |= incr(d, "hits", 1, 1, 0, 0, &r) != SL_OK;
            _exit(bad);
        }
    }
    for (int p = 0; p < 4; p++) {
        int status = wait_child(pids[p]);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ASSERT_OK(get(d, "hits", 0));
    ASSERT(vnum == 40000);
    ASSERT(consistent(d));
    done(d);
}

TEST(shdict_lock_held_by_a_killed_process_is_recovered)
{
    sl_shdict_t *d = dict(1 << 20);
    int fds[2];
    char c;
    int level = sl_log_level;

    ASSERT_OK(put(d, SL_SHDICT_SET, "k", "v", 0));
    ASSERT_OK(pipe(fds));
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        if (sl_shdict_test_lock(d) == SL_OK && write(fds[1], "L", 1) == 1)
            pause();
        _exit(1);
    }
    ASSERT_EQ(read(fds[0], &c, 1), 1);
    kill(pid, SIGKILL);
    int status = wait_child(pid);
    ASSERT(WIFSIGNALED(status));
    close(fds[0]);
    close(fds[1]);

    sl_log_level = -1;
    ASSERT_OK(get(d, "k", 0));
    sl_log_level = level;
    ASSERT_STREQ(value, "v");
    ASSERT_OK(put(d, SL_SHDICT_SET, "k2", "v2", 0));
    ASSERT(consistent(d));
    done(d);
}

/* The child's workload: replaces, adds, deletes and increments in a dict
 * small enough that many writes evict. Every value starts with its key. */
static void workload(sl_shdict_t *d)
{
    char key[16], val[2600];
    double r;
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "k%d", (i * 7) % 23);
        int n = snprintf(val, sizeof(val), "%s=%d:", key, i);
        int len = 500 + (i * 379) % 2000;
        memset(val + n, 'z', (size_t)len);
        val[n + len] = '\0';
        if (i % 5 == 4)
            del(d, key);
        else if (i % 5 == 3)
            put(d, SL_SHDICT_ADD, key, val, 0);
        else
            put(d, SL_SHDICT_SET, key, val, i % 3 == 0 ? 0.001 : 0);
        incr(d, "counter", 1, 1, 0, 0, &r);
        get(d, "k0", 0);
        fake_ms++; /* the 1 ms entries expire and get reclaimed */
    }
}

/* Every value left must be one the workload wrote for that key. */
static int values_belong_to_their_keys(sl_shdict_t *d)
{
    char key[16];
    for (int k = 0; k < 23; k++) {
        snprintf(key, sizeof(key), "k%d", k);
        int rc = get(d, key, 1);
        if (rc == SL_DECLINED)
            continue;
        if (rc != SL_OK || vtype != SL_SHDICT_STRING || strncmp(value, key, strlen(key)) != 0 ||
            value[strlen(key)] != '=')
            return 0;
    }
    return 1;
}

static pid_t crash_child(sl_shdict_t *d, int n, void (*work)(sl_shdict_t *))
{
    pid_t pid = fork();
    if (pid == 0) {
        sl_shdict_test_crash_after(n);
        work(d);
        _exit(0);
    }
    return pid;
}

static void touch_k0(sl_shdict_t *d)
{
    get(d, "k0", 0);
}

/* A child is killed at each crash point in turn, within every kind of
 * change; after each death the dict must recover whole. Then the same with a
 * second death inside the recovery itself. */
TEST(shdict_recovers_from_a_death_at_every_crash_point)
{
    sl_shdict_t *d = dict(32 * 1024);
    int level = sl_log_level, n, deaths = 0;
    char key[16], val[32];

    sl_log_level = -1;
    for (n = 1; n < 5000; n++) {
        for (int k = 0; k < 23; k++) {
            snprintf(key, sizeof(key), "k%d", k);
            snprintf(val, sizeof(val), "k%d=seed", k);
            put(d, SL_SHDICT_SET, key, val, 0);
        }
        int status = wait_child(crash_child(d, n, workload));
        if (WIFEXITED(status))
            break; /* the workload ran past every crash point */
        ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        deaths++;

        if (n % 3 == 0) {
            /* Die again while recovering, at each of its crash points. */
            for (int m = 1; m < 50; m++) {
                status = wait_child(crash_child(d, m, touch_k0));
                if (WIFEXITED(status))
                    break;
            }
        }
        if (!consistent(d) || !values_belong_to_their_keys(d)) {
            sl_log_level = level;
            ASSERT(!"inconsistent after a crash");
        }
    }
    sl_log_level = level;
    ASSERT(n < 5000);
    ASSERT(deaths > 100);
    done(d);
}
