/* sluice.h: status codes, string views and small helpers shared by every core file. */
#ifndef SL_SLUICE_H
#define SL_SLUICE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define SL_VERSION "0.1.0"

/* Status codes. Functions return SL_OK or a negative code; parsers return the
 * number of bytes they consumed, or one of these. */
#define SL_OK       0
#define SL_ERROR    (-1)
#define SL_AGAIN    (-2)
#define SL_DECLINED (-3)
#define SL_DONE     (-4)

/* Symbols the LuaJIT FFI must see carry this; everything else is hidden. */
#define SL_EXPORT __attribute__((visibility("default")))

#define SL_UNUSED(x)   ((void)(x))
#define SL_NELEMS(a)   (sizeof(a) / sizeof((a)[0]))
#define SL_MIN(a, b)   ((a) < (b) ? (a) : (b))
#define SL_MAX(a, b)   ((a) > (b) ? (a) : (b))
#define SL_LIKELY(x)   __builtin_expect(!!(x), 1)
#define SL_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A view into bytes owned by someone else; never NUL-terminated by contract. */
typedef struct {
    const char *data;
    size_t len;
} sl_str_t;

#define SL_STR(s)   ((sl_str_t){(s), sizeof(s) - 1})
#define SL_NULL_STR ((sl_str_t){NULL, 0})

static inline int sl_str_eq(sl_str_t a, const char *b, size_t blen)
{
    return a.len == blen && memcmp(a.data, b, blen) == 0;
}

/* ASCII case-insensitive comparison of a view with a lower-case literal. */
static inline int sl_str_ieq(const char *a, size_t alen, const char *lower, size_t llen)
{
    if (alen != llen)
        return 0;
    for (size_t i = 0; i < alen; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z')
            c |= 0x20;
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

#define SL_IEQ(p, n, lit) sl_str_ieq((p), (n), lit, sizeof(lit) - 1)

static inline char sl_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
}

/* An intrusive doubly-linked list: embed sl_queue_t in the element; the head
 * is a sentinel whose prev/next point at itself when empty. */
typedef struct sl_queue_s {
    struct sl_queue_s *prev;
    struct sl_queue_s *next;
} sl_queue_t;

#define sl_queue_data(q, type, field) ((type *)((char *)(q)-offsetof(type, field)))

static inline void sl_queue_init(sl_queue_t *h)
{
    h->prev = h;
    h->next = h;
}

static inline int sl_queue_empty(const sl_queue_t *h)
{
    return h->next == h;
}

static inline void sl_queue_insert_head(sl_queue_t *h, sl_queue_t *x)
{
    x->next = h->next;
    x->next->prev = x;
    x->prev = h;
    h->next = x;
}

static inline void sl_queue_insert_tail(sl_queue_t *h, sl_queue_t *x)
{
    x->prev = h->prev;
    x->prev->next = x;
    x->next = h;
    h->prev = x;
}

static inline void sl_queue_remove(sl_queue_t *x)
{
    x->next->prev = x->prev;
    x->prev->next = x->next;
    x->prev = x;
    x->next = x;
}

#endif
