/* test.h: the tiny harness behind the C unit tests: TEST() registers, ASSERT_* checks. */
#ifndef SL_TEST_H
#define SL_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef void (*sl_test_fn)(void);

void sl_test_register(const char *file, const char *name, sl_test_fn fn);
void sl_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Defines a test and registers it before main runs. */
#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void register_##name(void)                                 \
    {                                                                                              \
        sl_test_register(__FILE__, #name, test_##name);                                            \
    }                                                                                              \
    static void test_##name(void)

/* Each assertion returns from the test on failure, so later ones see sane state. */
#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            sl_test_fail(__FILE__, __LINE__, "%s", #cond);                                         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        intmax_t a_ = (intmax_t)(a), b_ = (intmax_t)(b);                                           \
        if (a_ != b_) {                                                                            \
            sl_test_fail(__FILE__, __LINE__, "%s == %s (%jd != %jd)", #a, #b, a_, b_);             \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define ASSERT_OK(x) ASSERT_EQ((x), 0)

#define ASSERT_STREQ(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            sl_test_fail(__FILE__, __LINE__, "%s == %s (\"%s\" != \"%s\")", #a, #b,                \
                         a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                  \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Compares a (pointer, length) view with a C string. */
#define ASSERT_MEMEQ(p, n, s)                                                                      \
    do {                                                                                           \
        const char *p_ = (const char *)(p), *s_ = (s);                                             \
        size_t n_ = (size_t)(n);                                                                   \
        if (p_ == NULL || n_ != strlen(s_) || memcmp(p_, s_, n_) != 0) {                           \
            sl_test_fail(__FILE__, __LINE__, "%s == \"%s\" (got \"%.*s\")", #p, s_, (int)n_,       \
                         p_ ? p_ : "");                                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#endif
