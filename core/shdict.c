/* shdict.c: shared dicts: hash index, boundary-tag heap and LRU list in one mmap region per dict.
 *
 * Layout of a dict's region, all of it shared by every process:
 *
 *   shm_t header (magic, robust process-shared mutex, list heads, counters)
 *   bucket array: nbuckets uint32 offsets, heads of the hash chains
 *   heap: blocks from heap_start to heap_end, each starting with a blk_t
 *
 * Everything links by offsets in 16-byte units from the region's start (0 is
 * the header, so it doubles as "none"), never by pointers: the region is at
 * the same address in every process today, but nothing depends on it.
 *
 * The heap is a sequence of blocks that tile it exactly; each block knows its
 * size and its predecessor's (boundary tags), so freeing coalesces with both
 * neighbours in O(1). Free blocks sit in segregated free lists: exact classes
 * below 32 units, then four classes per power of two, with a bitmap of the
 * non-empty ones. An entry is one block: entry_t, the key, the string value.
 *
 * Crash safety. A worker may die (SIGKILL, a crash elsewhere) while holding
 * the lock; the mutex is robust, so the next locker gets EOWNERDEAD. Writers
 * set `dirty` for the length of the critical section, so the next locker
 * knows whether anything was half-changed. The heap is the ground truth and
 * every change to it is ordered so that a walk from heap_start always sees a
 * well-formed tiling (a split writes the remainder's header before shrinking
 * the block; a merge is one store of the grown size), and an entry becomes
 * one (state BLK_ENTRY) only after it is fully written. Everything else (free
 * lists, hash chains, LRU, counters) is derived, and recovery rebuilds it from
 * a walk of the heap. When a set replaces a key, the new entry is committed
 * before the old one is freed, so a walk can find both: the higher `seq`
 * (stamped on every write and use) wins. A walk that finds a torn tiling,
 * which ordering rules out, empties the dict as a last resort. Stores are
 * ordered with compiler barriers: a killed process's executed stores all
 * reach memory, so only program order matters. */
#include "shdict.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sl_ffi.h"

#define SHM_MAGIC     UINT64_C(0x5443494448534c53) /* "SLSHDICT" */
#define UNIT          16                           /* bytes per offset unit */
#define MIN_BLOCK     2                            /* units: a free block's header and links */
#define EXACT_CLASSES 32
#define NCLASSES      (EXACT_CLASSES + 27 * 4)
#define BITMAP_WORDS  ((NCLASSES + 63) / 64)
#define MAX_KEY       65535
/* Each write frees up to this many expired entries from the LRU tail, so
 * expired memory comes back without anyone calling flush_expired. */
#define TAIL_RECLAIM 2
/* When an allocation fails and some entries have an expiry, this many entries
 * from the LRU tail are checked for expired ones before any live entry is
 * evicted: a few for set, which may evict anyway, more for safe_set, which
 * fails otherwise. Bounded, as each costs a cache miss: a full dict of live
 * entries must not cost a walk of the whole list per write. */
#define EXPIRED_SCAN      16
#define EXPIRED_SCAN_SAFE 1024
/* flush_all stores this as every entry's expiry: long past for the monotonic clock. */
#define FLUSHED    1
#define MAX_TTL_MS (INT64_C(100) * 366 * 24 * 3600 * 1000)

/* Block states, distinctive so that recovery can tell a header from garbage. */
#define BLK_FREE  UINT32_C(0x65657266) /* on a free list */
#define BLK_ALLOC UINT32_C(0x636f6c61) /* taken, entry not yet committed */
#define BLK_ENTRY UINT32_C(0x72746e65) /* a committed entry */

/* Orders stores within this process: what a killed process executed is what
 * memory holds, so program order is all that crash consistency needs. */
#define STORE_ORDER() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* Test hook: SIGKILL at the n-th crash point (see sl_shdict_test_crash_after). */
static int crash_countdown;
#define CRASH_POINT()                                                                              \
    do {                                                                                           \
        if (SL_UNLIKELY(crash_countdown > 0) && --crash_countdown == 0)                            \
            raise(SIGKILL);                                                                        \
    } while (0)

typedef struct {
    uint32_t size;  /* units, this header included */
    uint32_t prev;  /* the preceding block's size in units; 0 for the first block */
    uint32_t state; /* BLK_* */
    uint32_t hash;  /* entries: the key's hash */
} blk_t;

typedef struct {
    blk_t b;
    uint32_t next; /* neighbours on the free list of this block's size class */
    uint32_t prev;
} fblk_t;

typedef struct {
    blk_t b;
    uint32_t hnext; /* next entry on the hash chain */
    uint32_t lprev; /* LRU neighbours: lprev is more recently used */
    uint32_t lnext;
    uint32_t vlen;   /* bytes of a string value */
    uint64_t seq;    /* stamp of the last write or use: LRU order and "newest wins" */
    int64_t expires; /* monotonic ms; 0: never */
    double num;      /* number and boolean values */
    uint32_t flags;  /* the user's flags */
    uint16_t klen;
    uint8_t type; /* SL_SHDICT_* */
    uint8_t pad;
    char data[]; /* the key, then a string value */
} entry_t;

typedef struct {
    uint64_t magic;
    uint64_t size; /* bytes mapped */
    pthread_mutex_t mutex;
    uint32_t dirty;      /* a writer holds the lock and may be mid-change */
    uint32_t nbuckets;   /* a power of two */
    uint32_t heap_start; /* units */
    uint32_t heap_end;
    uint32_t lru_head; /* the most recently used entry */
    uint32_t lru_tail;
    uint32_t count; /* entries, expired ones included */
    uint32_t nttl;  /* entries with an expiry */
    uint64_t seq;
    uint64_t free_units;  /* in free blocks, headers included */
    uint64_t hash_key[2]; /* SipHash key, random per dict */
    uint64_t bitmap[BITMAP_WORDS];
    uint32_t free_head[NCLASSES];
    uint32_t buckets[];
} shm_t;

_Static_assert(sizeof(blk_t) == UNIT, "a block header is one unit");
_Static_assert(sizeof(fblk_t) <= MIN_BLOCK * UNIT, "a free block fits the minimum block");
_Static_assert(sizeof(entry_t) % UNIT == 0, "entry data starts on a unit");

struct sl_shdict_s {
    sl_shdict_t *next; /* in the registry */
    shm_t *shm;
    int registered;
    char name[];
};

/* The values one store writes, gathered so helpers take one argument. */
typedef struct {
    uint32_t hash;
    int type;
    const char *key;
    size_t klen;
    const char *str;
    size_t slen;
    double num;
    int64_t expires;
    uint32_t flags;
} item_t;

static sl_shdict_t *registry;
static int64_t (*test_clock)(void);

static int64_t clock_ms(void)
{
    if (test_clock != NULL)
        return test_clock();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads the clock once per operation, and only if something needs it. */
static int64_t now_ms(int64_t *now)
{
    if (*now < 0)
        *now = clock_ms();
    return *now;
}

static int expired(const entry_t *e, int64_t *now)
{
    return e->expires != 0 && e->expires <= now_ms(now);
}

static void *at(shm_t *h, uint32_t off)
{
    return (char *)h + (size_t)off * UNIT;
}

static blk_t *blk(shm_t *h, uint32_t off)
{
    return at(h, off);
}

static fblk_t *fblk(shm_t *h, uint32_t off)
{
    return at(h, off);
}

static entry_t *ent(shm_t *h, uint32_t off)
{
    return at(h, off);
}

static uint32_t off_of(shm_t *h, const void *p)
{
    return (uint32_t)(((const char *)p - (const char *)h) / UNIT);
}

/* SipHash-1-3: keys often come from clients (addresses, API keys), so the
 * index must not be floodable with chosen collisions. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint32_t hash_key(const shm_t *h, const char *key, size_t len)
{
    const unsigned char *p = (const unsigned char *)key;
    uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ h->hash_key[0];
    uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ h->hash_key[1];
    uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ h->hash_key[0];
    uint64_t v3 = UINT64_C(0x7465646279746573) ^ h->hash_key[1];
    uint64_t m, b = (uint64_t)len << 56;
    size_t i, whole = len & ~(size_t)7;

    for (i = 0; i < whole; i += 8) {
        memcpy(&m, p + i, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return (uint32_t)(v0 ^ v1 ^ v2 ^ v3);
}

/* Free lists. */

static unsigned size_class(uint32_t units)
{
    if (units < EXACT_CLASSES)
        return units;
    unsigned fl = 31 - (unsigned)__builtin_clz(units); /* >= 5 */
    unsigned sl = (units >> (fl - 2)) & 3;
    return EXACT_CLASSES + (fl - 5) * 4 + sl;
}

/* The first non-empty class above c, or -1. */
static int class_above(const shm_t *h, unsigned c)
{
    for (unsigned w = (c + 1) / 64; w < BITMAP_WORDS; w++) {
        uint64_t m = h->bitmap[w];
        if (w == (c + 1) / 64)
            m &= ~UINT64_C(0) << ((c + 1) % 64);
        if (m != 0)
            return (int)(w * 64 + (unsigned)__builtin_ctzll(m));
    }
    return -1;
}

static void free_insert(shm_t *h, uint32_t off)
{
    fblk_t *f = fblk(h, off);
    unsigned c = size_class(f->b.size);
    f->prev = 0;
    f->next = h->free_head[c];
    if (f->next != 0)
        fblk(h, f->next)->prev = off;
    h->free_head[c] = off;
    h->bitmap[c / 64] |= UINT64_C(1) << (c % 64);
    h->free_units += f->b.size;
}

/* Takes a free block off its list; its size must be the one it was listed with. */
static void free_remove(shm_t *h, uint32_t off)
{
    fblk_t *f = fblk(h, off);
    unsigned c = size_class(f->b.size);
    if (f->prev != 0)
        fblk(h, f->prev)->next = f->next;
    else
        h->free_head[c] = f->next;
    if (f->next != 0)
        fblk(h, f->next)->prev = f->prev;
    if (h->free_head[c] == 0)
        h->bitmap[c / 64] &= ~(UINT64_C(1) << (c % 64));
    h->free_units -= f->b.size;
}

/* The heap. */

/* Returns the offset of a block of at least n units in state BLK_ALLOC, or 0
 * when no free block is that big. Good fit: first fit within n's own class,
 * else the head of the first bigger class, where every block fits. */
static uint32_t heap_alloc(shm_t *h, uint32_t n)
{
    unsigned c = size_class(n);
    uint32_t off = h->free_head[c];
    while (off != 0 && fblk(h, off)->b.size < n)
        off = fblk(h, off)->next;
    if (off == 0) {
        int k = class_above(h, c);
        if (k < 0)
            return 0;
        off = h->free_head[k];
    }
    free_remove(h, off);

    blk_t *b = blk(h, off);
    uint32_t size = b->size;
    if (size - n >= MIN_BLOCK) {
        /* The remainder's header is written while the block still covers it,
         * so a walk of the heap sees one block or two, never a torn one. */
        uint32_t rest = off + n;
        blk_t *r = blk(h, rest);
        r->size = size - n;
        r->prev = n;
        r->state = BLK_FREE;
        r->hash = 0;
        if (off + size < h->heap_end)
            blk(h, off + size)->prev = size - n;
        STORE_ORDER();
        CRASH_POINT();
        b->size = n;
        STORE_ORDER();
        free_insert(h, rest);
    }
    b->state = BLK_ALLOC;
    STORE_ORDER();
    CRASH_POINT();
    return off;
}

/* Frees the block at off, merging it with free neighbours. */
static void heap_free(shm_t *h, uint32_t off)
{
    blk_t *b = blk(h, off);
    b->state = BLK_FREE;
    STORE_ORDER();
    CRASH_POINT();

    uint32_t next = off + b->size;
    if (next < h->heap_end && blk(h, next)->state == BLK_FREE) {
        free_remove(h, next);
        b->size += blk(h, next)->size;
        STORE_ORDER();
        CRASH_POINT();
    }
    if (b->prev != 0 && blk(h, off - b->prev)->state == BLK_FREE) {
        uint32_t p = off - b->prev;
        free_remove(h, p);
        blk(h, p)->size += b->size;
        STORE_ORDER();
        CRASH_POINT();
        off = p;
        b = blk(h, p);
    }
    next = off + b->size;
    if (next < h->heap_end)
        blk(h, next)->prev = b->size;
    free_insert(h, off);
}

/* Units the block at off would span once freed and merged with its free neighbours. */
static uint32_t room_after_free(shm_t *h, uint32_t off)
{
    blk_t *b = blk(h, off);
    uint32_t units = b->size;
    if (off + b->size < h->heap_end && blk(h, off + b->size)->state == BLK_FREE)
        units += blk(h, off + b->size)->size;
    if (b->prev != 0 && blk(h, off - b->prev)->state == BLK_FREE)
        units += b->prev;
    return units;
}

/* Makes the heap one free block and every list empty. */
static void shm_reset(shm_t *h)
{
    memset(h->buckets, 0, (size_t)h->nbuckets * sizeof(uint32_t));
    memset(h->free_head, 0, sizeof(h->free_head));
    memset(h->bitmap, 0, sizeof(h->bitmap));
    h->lru_head = h->lru_tail = 0;
    h->count = 0;
    h->nttl = 0;
    h->free_units = 0;
    blk_t *b = blk(h, h->heap_start);
    b->size = h->heap_end - h->heap_start;
    b->prev = 0;
    b->state = BLK_FREE;
    b->hash = 0;
    free_insert(h, h->heap_start);
}

/* The index and the LRU list. */

static uint32_t *bucket(shm_t *h, uint32_t hash)
{
    return &h->buckets[hash & (h->nbuckets - 1)];
}

static entry_t *lookup(shm_t *h, uint32_t hash, const char *key, size_t klen)
{
    for (uint32_t off = *bucket(h, hash); off != 0;) {
        entry_t *e = ent(h, off);
        if (e->b.hash == hash && e->klen == klen && memcmp(e->data, key, klen) == 0)
            return e;
        off = e->hnext;
    }
    return NULL;
}

static void index_insert(shm_t *h, entry_t *e)
{
    uint32_t *head = bucket(h, e->b.hash);
    e->hnext = *head;
    *head = off_of(h, e);
}

static void index_remove(shm_t *h, entry_t *e)
{
    uint32_t off = off_of(h, e);
    uint32_t *link = bucket(h, e->b.hash);
    while (*link != 0 && *link != off)
        link = &ent(h, *link)->hnext;
    if (*link == off)
        *link = e->hnext;
}

static void lru_remove(shm_t *h, entry_t *e)
{
    if (e->lprev != 0)
        ent(h, e->lprev)->lnext = e->lnext;
    else
        h->lru_head = e->lnext;
    if (e->lnext != 0)
        ent(h, e->lnext)->lprev = e->lprev;
    else
        h->lru_tail = e->lprev;
}

static void lru_push(shm_t *h, entry_t *e)
{
    uint32_t off = off_of(h, e);
    e->lprev = 0;
    e->lnext = h->lru_head;
    if (h->lru_head != 0)
        ent(h, h->lru_head)->lprev = off;
    else
        h->lru_tail = off;
    h->lru_head = off;
}

/* Records a use: the entry becomes the most recently used. */
static void touch(shm_t *h, entry_t *e)
{
    e->seq = ++h->seq;
    if (h->lru_head != off_of(h, e)) {
        lru_remove(h, e);
        lru_push(h, e);
    }
}

/* Entries. */

static void entry_remove(shm_t *h, entry_t *e)
{
    index_remove(h, e);
    lru_remove(h, e);
    h->count--;
    h->nttl -= e->expires != 0;
    STORE_ORDER();
    CRASH_POINT();
    heap_free(h, off_of(h, e));
}

static uint64_t entry_bytes(size_t klen, size_t vlen)
{
    return (uint64_t)sizeof(entry_t) + klen + vlen;
}

/* Frees up to TAIL_RECLAIM expired entries from the LRU tail. */
static void reclaim_tail(shm_t *h, int64_t *now)
{
    for (int i = 0; i < TAIL_RECLAIM && h->lru_tail != 0; i++) {
        entry_t *e = ent(h, h->lru_tail);
        if (!expired(e, now))
            break;
        entry_remove(h, e);
    }
}

/* Returns a block of n units, or 0. Frees, in this order, until one fits:
 * *old (the entry being replaced, which goes anyway) when its space alone
 * suffices; expired entries near the LRU tail; then, unless safe, live
 * entries from the tail, setting *forcible. *old becomes NULL if freed. */
static uint32_t make_room(shm_t *h, uint32_t n, int safe, int *forcible, entry_t **old,
                          int64_t *now)
{
    uint32_t off = heap_alloc(h, n);
    if (off != 0)
        return off;

    if (*old != NULL && room_after_free(h, off_of(h, *old)) >= n) {
        entry_remove(h, *old);
        *old = NULL;
        return heap_alloc(h, n);
    }

    int scan = safe ? EXPIRED_SCAN_SAFE : EXPIRED_SCAN;
    uint32_t v = h->lru_tail;
    for (int i = 0; v != 0 && h->nttl != 0 && i < scan; i++) {
        entry_t *e = ent(h, v);
        v = e->lprev;
        if (!expired(e, now))
            continue;
        if (e == *old)
            *old = NULL;
        entry_remove(h, e);
        if ((off = heap_alloc(h, n)) != 0)
            return off;
    }
    if (safe)
        return 0;

    /* Evicting everything leaves one free block as big as the heap, and the
     * caller checked that n fits in it, so this loop ends with a block. */
    while (h->lru_tail != 0) {
        entry_t *e = ent(h, h->lru_tail);
        if (e == *old)
            *old = NULL;
        else if (!expired(e, now))
            *forcible = 1;
        entry_remove(h, e);
        if ((off = heap_alloc(h, n)) != 0)
            return off;
    }
    return 0;
}

/* Stores it as a new entry that replaces old (the caller's lookup result for
 * the same key, or NULL). Returns SL_OK, or SL_ERROR when it does not fit,
 * leaving old in place. */
static int insert(shm_t *h, const item_t *it, entry_t *old, int safe, int *forcible, int64_t *now)
{
    size_t vlen = it->type == SL_SHDICT_STRING ? it->slen : 0;
    uint64_t bytes = entry_bytes(it->klen, vlen);
    if (bytes > (uint64_t)(h->heap_end - h->heap_start) * UNIT)
        return SL_ERROR;
    uint32_t n = (uint32_t)((bytes + UNIT - 1) / UNIT);

    uint32_t off = make_room(h, n, safe, forcible, &old, now);
    if (off == 0)
        return SL_ERROR;

    entry_t *e = ent(h, off);
    e->b.hash = it->hash;
    e->hnext = 0;
    e->lprev = 0;
    e->lnext = 0;
    e->vlen = (uint32_t)vlen;
    e->seq = ++h->seq;
    e->expires = it->expires;
    e->num = it->num;
    e->flags = it->flags;
    e->klen = (uint16_t)it->klen;
    e->type = (uint8_t)it->type;
    e->pad = 0;
    memcpy(e->data, it->key, it->klen);
    if (vlen != 0)
        memcpy(e->data + it->klen, it->str, vlen);
    STORE_ORDER();
    CRASH_POINT();
    e->b.state = BLK_ENTRY;
    STORE_ORDER();
    CRASH_POINT();

    if (old != NULL)
        entry_remove(h, old);
    index_insert(h, e);
    lru_push(h, e);
    h->count++;
    h->nttl += e->expires != 0;
    return SL_OK;
}

/* Recovery. */

static int entry_valid(shm_t *h, const entry_t *e)
{
    if (e->klen == 0)
        return 0;
    if (e->type != SL_SHDICT_BOOLEAN && e->type != SL_SHDICT_NUMBER && e->type != SL_SHDICT_STRING)
        return 0;
    size_t vlen = e->type == SL_SHDICT_STRING ? e->vlen : 0;
    return entry_bytes(e->klen, vlen) <= (uint64_t)e->b.size * UNIT;
}

typedef struct {
    uint64_t seq;
    uint32_t off;
} lru_slot_t;

static int by_seq(const void *a, const void *b)
{
    const lru_slot_t *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Rebuilds free lists, index, LRU list and counters from a walk of the heap.
 * Returns SL_ERROR, changing nothing, when the blocks do not tile the heap. */
static int rebuild(shm_t *h, uint32_t *kept, uint32_t *dropped)
{
    for (uint32_t off = h->heap_start; off != h->heap_end;) {
        const blk_t *b = blk(h, off);
        if (b->size < MIN_BLOCK || b->size > h->heap_end - off)
            return SL_ERROR;
        if (b->state != BLK_FREE && b->state != BLK_ALLOC && b->state != BLK_ENTRY)
            return SL_ERROR;
        off += b->size;
    }

    memset(h->buckets, 0, (size_t)h->nbuckets * sizeof(uint32_t));
    memset(h->free_head, 0, sizeof(h->free_head));
    memset(h->bitmap, 0, sizeof(h->bitmap));
    h->lru_head = h->lru_tail = 0;
    h->free_units = 0;
    *kept = *dropped = 0;

    /* Index the entries; of two with the same key, the newer one wins. A
     * block taken but never committed is free. */
    for (uint32_t off = h->heap_start; off != h->heap_end; off += blk(h, off)->size) {
        blk_t *b = blk(h, off);
        if (b->state != BLK_ENTRY) {
            b->state = BLK_FREE;
            continue;
        }
        entry_t *e = ent(h, off);
        if (!entry_valid(h, e)) {
            b->state = BLK_FREE;
            (*dropped)++;
            continue;
        }
        b->hash = hash_key(h, e->data, e->klen);
        entry_t *dup = lookup(h, b->hash, e->data, e->klen);
        if (dup != NULL) {
            (*dropped)++;
            if (dup->seq > e->seq) {
                b->state = BLK_FREE;
                continue;
            }
            index_remove(h, dup);
            dup->b.state = BLK_FREE;
            (*kept)--;
        }
        index_insert(h, e);
        if (e->seq > h->seq)
            h->seq = e->seq;
        (*kept)++;
    }
    CRASH_POINT();

    /* Merge runs of free blocks, restore the boundary tags, list the free blocks. */
    uint32_t prev = 0;
    for (uint32_t off = h->heap_start; off != h->heap_end; off += blk(h, off)->size) {
        blk_t *b = blk(h, off);
        if (b->state == BLK_FREE) {
            while (off + b->size != h->heap_end && blk(h, off + b->size)->state == BLK_FREE) {
                b->size += blk(h, off + b->size)->size;
                STORE_ORDER();
                CRASH_POINT();
            }
            free_insert(h, off);
        }
        b->prev = prev;
        prev = b->size;
    }

    /* The LRU list, in the order of the entries' last use. */
    lru_slot_t *slots = malloc(((size_t)*kept + 1) * sizeof(*slots));
    size_t n = 0;
    for (uint32_t off = h->heap_start; off != h->heap_end; off += blk(h, off)->size) {
        if (blk(h, off)->state != BLK_ENTRY)
            continue;
        if (slots == NULL)
            lru_push(h, ent(h, off)); /* out of memory: heap order will do */
        else
            slots[n++] = (lru_slot_t){ent(h, off)->seq, off};
    }
    if (slots != NULL) {
        qsort(slots, n, sizeof(*slots), by_seq);
        for (size_t i = 0; i < n; i++)
            lru_push(h, ent(h, slots[i].off));
        free(slots);
    }
    h->count = *kept;
    h->nttl = 0;
    for (uint32_t off = h->lru_head; off != 0; off = ent(h, off)->lnext)
        h->nttl += ent(h, off)->expires != 0;
    return SL_OK;
}

/* Called with the lock just taken from a process that died holding it. */
static void recover(sl_shdict_t *d)
{
    shm_t *h = d->shm;
    uint32_t kept, dropped;

    if (!h->dirty) {
        SL_LOG(SL_LOG_WARN,
               "shared dict \"%s\": a process died holding its lock; no change was "
               "in progress",
               d->name);
        return;
    }
    if (rebuild(h, &kept, &dropped) == SL_OK) {
        SL_LOG(SL_LOG_WARN,
               "shared dict \"%s\": a process died while changing it; rebuilt its index "
               "(%u entries kept, %u dropped)",
               d->name, kept, dropped);
    } else {
        shm_reset(h);
        SL_LOG(SL_LOG_ERR,
               "shared dict \"%s\": a process died while changing it and its heap was "
               "inconsistent; all entries dropped",
               d->name);
    }
    STORE_ORDER();
    h->dirty = 0;
}

/* Locks d. A writer marks the dict dirty until unlock. Returns SL_OK, or
 * SL_ERROR with *err when the lock cannot be had (which a robust mutex that
 * is always made consistent does not do). */
static int lock(sl_shdict_t *d, int write, const char **err)
{
    shm_t *h = d->shm;
    int rc = pthread_mutex_lock(&h->mutex);
    if (SL_UNLIKELY(rc != 0)) {
        if (rc != EOWNERDEAD) {
            *err = "cannot lock the shared dict";
            return SL_ERROR;
        }
        recover(d);
        pthread_mutex_consistent(&h->mutex);
    }
    if (write) {
        h->dirty = 1;
        STORE_ORDER();
    }
    return SL_OK;
}

static void unlock(sl_shdict_t *d)
{
    STORE_ORDER();
    d->shm->dirty = 0;
    pthread_mutex_unlock(&d->shm->mutex);
}

/* Argument checks shared by the FFI functions. */

static int check_key(size_t klen, const char **err)
{
    if (klen == 0) {
        *err = "empty key";
        return SL_ERROR;
    }
    if (klen > MAX_KEY) {
        *err = "key too long";
        return SL_ERROR;
    }
    return SL_OK;
}

/* Converts exptime (seconds, 0: never) to milliseconds; a positive exptime is
 * at least 1 ms. */
static int ttl_ms(double exptime, int64_t *ms, const char **err)
{
    if (!(exptime >= 0)) {
        *err = "bad exptime";
        return SL_ERROR;
    }
    double v = ceil(exptime * 1000);
    *ms = v > (double)MAX_TTL_MS ? MAX_TTL_MS : (int64_t)v;
    return SL_OK;
}

/* The C API. */

sl_shdict_t *sl_shdict_create(const char *name, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t nlen = strlen(name);
    pthread_mutexattr_t attr;

    if (size < SL_SHDICT_MIN_SIZE || size > SL_SHDICT_MAX_SIZE) {
        SL_LOG(SL_LOG_ERR, "shared dict \"%s\": size %zu is outside %zu..%zu bytes", name, size,
               SL_SHDICT_MIN_SIZE, SL_SHDICT_MAX_SIZE);
        return NULL;
    }
    size = (size + page - 1) / page * page;

    sl_shdict_t *d = malloc(sizeof(*d) + nlen + 1);
    if (d == NULL) {
        SL_LOG(SL_LOG_ERR, "shared dict \"%s\": out of memory", name);
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        SL_LOG(SL_LOG_ERR, "shared dict \"%s\": cannot map %zu bytes: %s", name, size,
               strerror(errno));
        free(d);
        return NULL;
    }

    shm_t *h = p; /* zero-filled */
    h->magic = SHM_MAGIC;
    h->size = size;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&h->mutex, &attr);
    pthread_mutexattr_destroy(&attr);

    /* One bucket per 256 bytes: entries of a few dozen bytes of key and value
     * (80 bytes of overhead included) make chains of about two. */
    uint32_t nbuckets = 64;
    while ((size_t)nbuckets * 2 <= size / 256)
        nbuckets *= 2;
    h->nbuckets = nbuckets;
    size_t start = offsetof(shm_t, buckets) + (size_t)nbuckets * sizeof(uint32_t);
    h->heap_start = (uint32_t)((start + UNIT - 1) / UNIT);
    h->heap_end = (uint32_t)(size / UNIT);
    if (getrandom(h->hash_key, sizeof(h->hash_key), 0) != (ssize_t)sizeof(h->hash_key)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        h->hash_key[0] = (uint64_t)ts.tv_nsec * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)getpid();
        h->hash_key[1] = (uint64_t)ts.tv_sec * UINT64_C(0xbf58476d1ce4e5b9) ^ (uintptr_t)p;
    }
    shm_reset(h);

    d->next = NULL;
    d->shm = h;
    d->registered = 0;
    memcpy(d->name, name, nlen + 1);
    return d;
}

void sl_shdict_destroy(sl_shdict_t *d)
{
    if (d == NULL)
        return;
    if (d->registered) {
        sl_shdict_t **link = &registry;
        while (*link != d)
            link = &(*link)->next;
        *link = d->next;
    }
    munmap(d->shm, d->shm->size);
    free(d);
}

int sl_shdict_register(sl_shdict_t *d)
{
    if (sl_shdict_find(d->name, strlen(d->name)) != NULL)
        return SL_DECLINED;
    d->next = registry;
    d->registered = 1;
    registry = d;
    return SL_OK;
}

sl_shdict_t *sl_shdict_find(const char *name, size_t len)
{
    for (sl_shdict_t *d = registry; d != NULL; d = d->next) {
        if (strlen(d->name) == len && memcmp(d->name, name, len) == 0)
            return d;
    }
    return NULL;
}

void sl_shdict_destroy_all(void)
{
    while (registry != NULL)
        sl_shdict_destroy(registry);
}

const char *sl_shdict_name(const sl_shdict_t *d)
{
    return d->name;
}

/* The FFI functions (contracts in sl_ffi.h). */

int sl_ffi_shdict_find(const char *name, size_t len, sl_shdict_t **dict)
{
    *dict = sl_shdict_find(name, len);
    return *dict != NULL ? SL_OK : SL_DECLINED;
}

int sl_ffi_shdict_open(const char *name, size_t len, size_t size, sl_shdict_t **dict,
                       const char **err)
{
    char buf[256];

    if ((*dict = sl_shdict_find(name, len)) != NULL)
        return SL_OK;
    if (len == 0 || len >= sizeof(buf) || memchr(name, '\0', len) != NULL) {
        *err = "bad name";
        return SL_ERROR;
    }
    if (size < SL_SHDICT_MIN_SIZE || size > SL_SHDICT_MAX_SIZE) {
        *err = "bad size";
        return SL_ERROR;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    sl_shdict_t *d = sl_shdict_create(buf, size);
    if (d == NULL) {
        *err = "no memory";
        return SL_ERROR;
    }
    sl_shdict_register(d);
    *dict = d;
    return SL_OK;
}

int sl_ffi_shdict_get(sl_shdict_t *d, const char *key, size_t klen, int stale, char *buf,
                      size_t cap, int *type, size_t *vlen, double *num, uint32_t *flags,
                      int *is_stale, const char **err)
{
    if (check_key(klen, err) != SL_OK)
        return SL_ERROR;
    shm_t *h = d->shm;
    uint32_t hash = hash_key(h, key, klen);
    int64_t now = -1;
    int rc = SL_OK;

    if (lock(d, 1, err) != SL_OK)
        return SL_ERROR;
    entry_t *e = lookup(h, hash, key, klen);
    int old = e != NULL && expired(e, &now);
    if (e == NULL || (old && !stale)) {
        rc = SL_DECLINED;
        goto done;
    }
    *vlen = e->vlen;
    if (e->type == SL_SHDICT_STRING && e->vlen > cap) {
        rc = SL_AGAIN;
        goto done;
    }
    if (e->vlen != 0)
        memcpy(buf, e->data + e->klen, e->vlen);
    *type = e->type;
    *num = e->num;
    *flags = e->flags;
    *is_stale = old;
    if (!old)
        touch(h, e);
done:
    unlock(d);
    return rc;
}

int sl_ffi_shdict_store(sl_shdict_t *d, int op, const char *key, size_t klen, int type,
                        const char *str, size_t slen, double num, double exptime, uint32_t flags,
                        int *forcible, const char **err)
{
    int mode = op & ~SL_SHDICT_SAFE;
    int64_t ttl, now = -1;
    int rc = SL_OK;

    *forcible = 0;
    if (check_key(klen, err) != SL_OK || ttl_ms(exptime, &ttl, err) != SL_OK)
        return SL_ERROR;
    if (mode != SL_SHDICT_SET && mode != SL_SHDICT_ADD && mode != SL_SHDICT_REPLACE) {
        *err = "bad operation";
        return SL_ERROR;
    }
    if (type != SL_SHDICT_NIL && type != SL_SHDICT_BOOLEAN && type != SL_SHDICT_NUMBER &&
        type != SL_SHDICT_STRING) {
        *err = "bad value type";
        return SL_ERROR;
    }
    if (type == SL_SHDICT_NIL && mode != SL_SHDICT_SET) {
        *err = "attempt to add or replace nil values";
        return SL_ERROR;
    }

    shm_t *h = d->shm;
    item_t it = {.hash = hash_key(h, key, klen),
                 .type = type,
                 .key = key,
                 .klen = klen,
                 .str = str,
                 .slen = slen,
                 .num = type == SL_SHDICT_BOOLEAN ? (num != 0) : num,
                 .flags = flags};

    if (lock(d, 1, err) != SL_OK)
        return SL_ERROR;
    reclaim_tail(h, &now);
    entry_t *e = lookup(h, it.hash, key, klen);
    int live = e != NULL && !expired(e, &now);
    if (mode == SL_SHDICT_ADD && live) {
        *err = "exists";
        rc = SL_DECLINED;
    } else if (mode == SL_SHDICT_REPLACE && !live) {
        *err = "not found";
        rc = SL_DECLINED;
    } else if (type == SL_SHDICT_NIL) {
        if (e != NULL)
            entry_remove(h, e);
    } else {
        it.expires = ttl != 0 ? now_ms(&now) + ttl : 0;
        if (insert(h, &it, e, op & SL_SHDICT_SAFE, forcible, &now) != SL_OK) {
            *err = "no memory";
            rc = SL_ERROR;
        }
    }
    unlock(d);
    return rc;
}

int sl_ffi_shdict_incr(sl_shdict_t *d, const char *key, size_t klen, double value, int has_init,
                       double init, double init_ttl, double *result, int *forcible,
                       const char **err)
{
    int64_t ttl = 0, now = -1;
    int rc = SL_OK;

    *forcible = 0;
    if (check_key(klen, err) != SL_OK)
        return SL_ERROR;
    if (has_init && ttl_ms(init_ttl, &ttl, err) != SL_OK)
        return SL_ERROR;

    shm_t *h = d->shm;
    uint32_t hash = hash_key(h, key, klen);
    if (lock(d, 1, err) != SL_OK)
        return SL_ERROR;
    reclaim_tail(h, &now);
    entry_t *e = lookup(h, hash, key, klen);
    if (e != NULL && !expired(e, &now)) {
        if (e->type != SL_SHDICT_NUMBER) {
            *err = "not a number";
            rc = SL_DECLINED;
        } else {
            e->num += value; /* one store: a crash leaves the old or the new number */
            *result = e->num;
            touch(h, e);
        }
    } else if (!has_init) {
        *err = "not found";
        rc = SL_DECLINED;
    } else {
        item_t it = {.hash = hash,
                     .type = SL_SHDICT_NUMBER,
                     .key = key,
                     .klen = klen,
                     .num = init + value,
                     .expires = ttl != 0 ? now_ms(&now) + ttl : 0};
        if (insert(h, &it, e, 0, forcible, &now) != SL_OK) {
            *err = "no memory";
            rc = SL_ERROR;
        } else {
            *result = it.num;
        }
    }
    unlock(d);
    return rc;
}

int sl_ffi_shdict_ttl(sl_shdict_t *d, const char *key, size_t klen, double *ttl, const char **err)
{
    if (check_key(klen, err) != SL_OK)
        return SL_ERROR;
    shm_t *h = d->shm;
    uint32_t hash = hash_key(h, key, klen);
    int64_t now = -1;
    int rc = SL_OK;

    if (lock(d, 0, err) != SL_OK)
        return SL_ERROR;
    entry_t *e = lookup(h, hash, key, klen);
    if (e == NULL || expired(e, &now)) {
        *err = "not found";
        rc = SL_DECLINED;
    } else {
        *ttl = e->expires != 0 ? (double)(e->expires - now_ms(&now)) / 1000 : 0;
    }
    unlock(d);
    return rc;
}

int sl_ffi_shdict_expire(sl_shdict_t *d, const char *key, size_t klen, double exptime,
                         const char **err)
{
    int64_t ttl, now = -1;
    int rc = SL_OK;

    if (check_key(klen, err) != SL_OK || ttl_ms(exptime, &ttl, err) != SL_OK)
        return SL_ERROR;
    shm_t *h = d->shm;
    uint32_t hash = hash_key(h, key, klen);
    if (lock(d, 1, err) != SL_OK)
        return SL_ERROR;
    entry_t *e = lookup(h, hash, key, klen);
    if (e == NULL || expired(e, &now)) {
        *err = "not found";
        rc = SL_DECLINED;
    } else {
        h->nttl += (ttl != 0) - (e->expires != 0);
        e->expires = ttl != 0 ? now_ms(&now) + ttl : 0;
    }
    unlock(d);
    return rc;
}

int sl_ffi_shdict_get_keys(sl_shdict_t *d, int max_count, char *buf, size_t cap, size_t *len,
                           int *count, const char **err)
{
    shm_t *h = d->shm;
    int64_t now = -1;
    size_t need = 0;
    int n = 0;

    if (lock(d, 0, err) != SL_OK)
        return SL_ERROR;
    for (uint32_t off = h->lru_head; off != 0 && (max_count <= 0 || n < max_count);) {
        entry_t *e = ent(h, off);
        off = e->lnext;
        if (expired(e, &now))
            continue;
        if (need + 2 + e->klen <= cap) {
            buf[need] = (char)(e->klen & 0xff);
            buf[need + 1] = (char)(e->klen >> 8);
            memcpy(buf + need + 2, e->data, e->klen);
        }
        need += 2 + (size_t)e->klen;
        n++;
    }
    unlock(d);
    *len = need;
    *count = n;
    return need > cap ? SL_AGAIN : SL_OK;
}

int sl_ffi_shdict_flush_expired(sl_shdict_t *d, int max_count, int *count, const char **err)
{
    shm_t *h = d->shm;
    int64_t now = -1;
    int n = 0;

    if (lock(d, 1, err) != SL_OK)
        return SL_ERROR;
    for (uint32_t off = h->lru_tail; off != 0 && (max_count <= 0 || n < max_count);) {
        entry_t *e = ent(h, off);
        off = e->lprev;
        if (expired(e, &now)) {
            entry_remove(h, e);
            n++;
        }
    }
    unlock(d);
    *count = n;
    return SL_OK;
}

int sl_ffi_shdict_flush_all(sl_shdict_t *d, const char **err)
{
    shm_t *h = d->shm;
    if (lock(d, 1, err) != SL_OK)
        return SL_ERROR;
    for (uint32_t off = h->lru_head; off != 0; off = ent(h, off)->lnext)
        ent(h, off)->expires = FLUSHED;
    h->nttl = h->count;
    unlock(d);
    return SL_OK;
}

int sl_ffi_shdict_space(sl_shdict_t *d, size_t *capacity, size_t *free_space, const char **err)
{
    shm_t *h = d->shm;
    if (lock(d, 0, err) != SL_OK)
        return SL_ERROR;
    *capacity = (size_t)h->size;
    *free_space = (size_t)h->free_units * UNIT;
    unlock(d);
    return SL_OK;
}

/* Checking and test hooks. */

#define CHECK(cond, msg)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            *why = (msg);                                                                          \
            goto failed;                                                                           \
        }                                                                                          \
    } while (0)

int sl_shdict_check(sl_shdict_t *d, const char **why)
{
    shm_t *h = d->shm;
    uint64_t free_units = 0;
    uint32_t nfree = 0, nentries = 0, nttl = 0, prev = 0, prev_state = 0;

    if (lock(d, 0, why) != SL_OK)
        return SL_ERROR;
    CHECK(h->magic == SHM_MAGIC, "bad magic");
    for (uint32_t off = h->heap_start; off != h->heap_end;) {
        blk_t *b = blk(h, off);
        CHECK(b->size >= MIN_BLOCK && b->size <= h->heap_end - off, "block size out of the heap");
        CHECK(b->prev == prev, "boundary tag does not match the previous block");
        CHECK(b->state == BLK_FREE || b->state == BLK_ENTRY, "block neither free nor an entry");
        CHECK(!(b->state == BLK_FREE && prev_state == BLK_FREE), "two adjacent free blocks");
        if (b->state == BLK_FREE) {
            free_units += b->size;
            nfree++;
        } else {
            entry_t *e = ent(h, off);
            CHECK(entry_valid(h, e), "entry larger than its block");
            CHECK(e->b.hash == hash_key(h, e->data, e->klen), "stale hash");
            CHECK(lookup(h, e->b.hash, e->data, e->klen) == e, "entry not indexed");
            nentries++;
            nttl += e->expires != 0;
        }
        prev = b->size;
        prev_state = b->state;
        off += b->size;
    }
    CHECK(free_units == h->free_units, "free_units does not match the heap");
    CHECK(nentries == h->count, "count does not match the heap");
    CHECK(nttl == h->nttl, "nttl does not match the heap");

    uint32_t listed = 0;
    for (unsigned c = 0; c < NCLASSES; c++) {
        int bit = (h->bitmap[c / 64] >> (c % 64)) & 1;
        CHECK(bit == (h->free_head[c] != 0), "bitmap does not match the free lists");
        uint32_t back = 0;
        for (uint32_t off = h->free_head[c]; off != 0; off = fblk(h, off)->next) {
            fblk_t *f = fblk(h, off);
            CHECK(f->b.state == BLK_FREE, "an entry on a free list");
            CHECK(size_class(f->b.size) == c, "free block on the wrong list");
            CHECK(f->prev == back, "free list back link");
            CHECK(++listed <= nfree, "free list cycle");
            back = off;
        }
    }
    CHECK(listed == nfree, "free block missing from the free lists");

    uint32_t chained = 0;
    for (uint32_t i = 0; i < h->nbuckets; i++) {
        for (uint32_t off = h->buckets[i]; off != 0; off = ent(h, off)->hnext) {
            CHECK(blk(h, off)->state == BLK_ENTRY, "a free block on a hash chain");
            CHECK((ent(h, off)->b.hash & (h->nbuckets - 1)) == i, "entry in the wrong bucket");
            CHECK(++chained <= nentries, "hash chain cycle");
        }
    }
    CHECK(chained == nentries, "entry missing from the index");

    uint32_t lru = 0, back = 0;
    for (uint32_t off = h->lru_head; off != 0; off = ent(h, off)->lnext) {
        CHECK(blk(h, off)->state == BLK_ENTRY, "a free block on the LRU list");
        CHECK(ent(h, off)->lprev == back, "LRU back link");
        CHECK(++lru <= nentries, "LRU cycle");
        back = off;
    }
    CHECK(back == h->lru_tail, "LRU tail");
    CHECK(lru == nentries, "entry missing from the LRU list");

    unlock(d);
    return SL_OK;

failed:
    unlock(d);
    return SL_ERROR;
}

void sl_shdict_test_clock(int64_t (*now)(void))
{
    test_clock = now;
}

void sl_shdict_test_crash_after(int n)
{
    crash_countdown = n;
}

int sl_shdict_test_lock(sl_shdict_t *d)
{
    const char *err;
    return lock(d, 1, &err);
}

void sl_shdict_test_unlock(sl_shdict_t *d)
{
    unlock(d);
}
