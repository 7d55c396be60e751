/* router.c: the compiled route table: hosts hashed to buckets, prefix paths in radix trees. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "router.h"

#include <limits.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * Layout. Each route is filed under one bucket per host it lists; a bucket is
 * keyed by (kind, name, port): kind says whether the name is exact, the tail
 * of a "*.example.com" wildcard (".example.com") or the head of an
 * "example.*" wildcard ("example."), and port is 0 when the route's host
 * carries none. All keyed buckets share one open-addressing hash table, so a
 * request costs one probe for its host plus, only when such wildcards exist,
 * a few per dot in its host, however many routes there are. Routes without
 * hosts share one more bucket, searched for every request.
 *
 * In a bucket, prefix paths live in a radix tree whose nodes list the (route,
 * path) candidates ending there, best first; a route without paths is a prefix
 * of length 0 and sits at the root. Regex paths form a list, best first.
 * Matching walks the tree along the request path, then the regex list, and
 * verifies protocol, methods and headers only for candidates that would beat
 * the best match found so far. Regexes are therefore tried in order, like in
 * Kong: their cost grows with the number of regex routes under one host.
 *
 * With thousands of routes the cost of a match is cache misses, not
 * comparisons. So once built, each bucket is frozen into one allocation (its
 * header, host, regex list and tree in depth-first order, labels inline), and
 * a candidate carries what most verifications need (methods, protocols) so
 * that the route itself is only read for headers and non-standard methods.
 */

/*
 * Kong's priority of a candidate as two words compared lexicographically, the
 * bigger winning. hi holds, from the most significant bits down: how many of
 * hosts, paths, methods and headers the route sets; whether the host that
 * matched is exact; how many headers the route sets (capped at 255, as Kong
 * does); whether the path is a regex; the regex_priority of a regex path or
 * the length of a prefix path. lo is the complement of the route's index, so
 * that the earlier route wins a tie.
 */
#define K_WEIGHT_SHIFT  42
#define K_PLAIN         (1ull << 41)
#define K_HEADERS_SHIFT 33
#define K_REGEX         (1ull << 32)
#define K_MAX_HEADERS   255

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

enum { HOST_EXACT = 1, HOST_SUFFIX = 2, HOST_PREFIX = 4 };

/* A compiled regex path. */
typedef struct {
    pcre2_code *re;
    int ncaptures;            /* groups + 1 */
    const char *const *names; /* ncaptures entries and a NULL, or NULL without named groups */
} rx_t;

/* One accepted value of a header condition: plain (lower-case) or a regex. */
typedef struct {
    const char *s;
    size_t len;
    pcre2_code *re;
} hval_t;

typedef struct {
    const char *name; /* lower-case */
    size_t name_len;
    hval_t *values;
    size_t nvalues;
} hdr_t;

/* What a route compiles to besides its candidates. */
typedef struct {
    const sl_route_t *route;
    hdr_t *headers;
    size_t nheaders;
    rx_t *paths;  /* one per route path; re is NULL for prefixes */
    uint64_t key; /* the weight and header-count fields of hi */
} croute_t;

enum { E_ANY_METHOD = 1, E_HEADERS = 2 };

/* A (route, path) candidate filed under a tree node or a bucket's regex list. */
typedef struct {
    uint64_t hi; /* without K_PLAIN, which depends on the bucket */
    uint64_t lo;
    const croute_t *r;
    const rx_t *rx;     /* NULL for a prefix path */
    unsigned methods;   /* the route's, copied to spare a cache miss */
    unsigned protocols; /* likewise */
    unsigned flags;     /* E_* */
} entry_t;

/* A radix tree node while the table is built. Its label points into a route's
 * path string, which the router does not own but which outlives it. */
typedef struct node_s node_t;

struct node_s {
    const char *label;
    size_t label_len;
    node_t **children;
    unsigned char *firsts; /* children[i]->label[0], to find a child with one scan */
    size_t nchildren;
    entry_t *entries;
    size_t nentries;
    size_t capentries;
};

/* The same node once frozen: children are an array, everything sits in the
 * bucket's allocation. */
typedef struct pnode_s pnode_t;

struct pnode_s {
    const char *label;
    const unsigned char *firsts;
    const pnode_t *children;
    const entry_t *entries;
    uint32_t label_len;
    uint32_t nchildren;
    uint32_t nentries;
};

typedef struct {
    uint64_t hash;
    const char *host; /* lower-case */
    size_t host_len;
    int kind; /* HOST_*, 0 for the no-host bucket */
    uint16_t port;
    uint64_t plain; /* K_PLAIN for exact hosts, else 0 */
    uint64_t top;   /* the highest hi of any candidate here, K_PLAIN included */
    pnode_t root;
    const entry_t *regexes;
    size_t nregexes;
    /* While building only; NULL once frozen. */
    node_t *tree;
    entry_t *rx;
    size_t nrx;
    size_t caprx;
} bucket_t;

typedef struct {
    uint64_t hash; /* compared before the bucket is touched */
    bucket_t *b;
} slot_t;

struct sl_router_s {
    croute_t *routes;
    size_t nroutes;
    slot_t *table; /* open addressing, at most half full */
    size_t mask;
    bucket_t *nohost;
    unsigned kinds;    /* HOST_* present in the table */
    bool ports;        /* some host carries a port */
    size_t max_suffix; /* the longest ".example.com" key */
    size_t max_prefix; /* the longest "example." key */
    /* Shared by every match: a router serves one thread at a time, which is
     * what a worker process is. Sized for the regex with the most groups. */
    pcre2_match_data *md;
};

static void route_error(char *err, size_t errlen, const sl_route_t *r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void route_error(char *err, size_t errlen, const sl_route_t *r, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return;
    if (r->name != NULL)
        n = snprintf(err, errlen, "route '%s': ", r->name);
    else
        n = snprintf(err, errlen, "route #%zu: ", r->index);
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Compiles a regex, or writes why it does not compile: `shown` is the value
 * as the user wrote it and `where` the field it came from. */
static pcre2_code *compile(const char *re, size_t len, uint32_t options, const sl_route_t *r,
                           const char *shown, const char *where, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, len, options, &code, &offset, NULL);

    if (c == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        route_error(err, errlen, r, "invalid regex '%s' in %s: %s at offset %zu", shown, where,
                    (const char *)msg, (size_t)offset);
        return NULL;
    }
    /* Without JIT (an unsupported CPU, no executable memory) pcre2_match
     * interprets the pattern: slower but the same answers. */
    pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
    return c;
}

/* Fills rx for a regex path: the code, its group count and group names. */
static int compile_path(rx_t *rx, const sl_route_path_t *p, const sl_route_t *r,
                        uint32_t *max_pairs, char *err, size_t errlen)
{
    char shown[1024];
    uint32_t groups, nnames, entry_size;
    PCRE2_SPTR table;

    snprintf(shown, sizeof(shown), "~%.*s", (int)SL_MIN(p->len, 1000), p->value);
    /* Kong anchors path regexes at the start of the path with "^";
     * PCRE2_ANCHORED does the same without changing what "a|b" means. */
    rx->re = compile(p->value, p->len, PCRE2_ANCHORED, r, shown, "paths", err, errlen);
    if (rx->re == NULL)
        return SL_ERROR;
    pcre2_pattern_info(rx->re, PCRE2_INFO_CAPTURECOUNT, &groups);
    if (groups + 1 > SL_ROUTER_MAX_CAPTURES) {
        route_error(err, errlen, r,
                    "regex '%s' in paths has %u capture groups, at most %d are supported "
                    "(use (?:...) for groups that need no capture)",
                    shown, groups, SL_ROUTER_MAX_CAPTURES - 1);
        return SL_ERROR;
    }
    rx->ncaptures = (int)groups + 1;
    *max_pairs = SL_MAX(*max_pairs, groups + 1);

    pcre2_pattern_info(rx->re, PCRE2_INFO_NAMECOUNT, &nnames);
    if (nnames == 0)
        return SL_OK;
    pcre2_pattern_info(rx->re, PCRE2_INFO_NAMEENTRYSIZE, &entry_size);
    pcre2_pattern_info(rx->re, PCRE2_INFO_NAMETABLE, &table);
    /* Each name table entry is a big-endian group number and the
     * NUL-terminated name; the names stay valid as long as the code. */
    const char **names = calloc((size_t)rx->ncaptures + 1, sizeof(*names));
    if (names == NULL) {
        route_error(err, errlen, r, "out of memory");
        return SL_ERROR;
    }
    for (uint32_t i = 0; i < nnames; i++) {
        PCRE2_SPTR e = table + (size_t)i * entry_size;
        unsigned g = (unsigned)e[0] << 8 | e[1];
        if (g < (unsigned)rx->ncaptures)
            names[g] = (const char *)e + 2;
    }
    rx->names = names;
    return SL_OK;
}

static int compile_headers(croute_t *c, char *err, size_t errlen)
{
    const sl_route_t *r = c->route;

    c->headers = calloc(r->nheaders, sizeof(*c->headers));
    if (c->headers == NULL)
        goto nomem;
    c->nheaders = r->nheaders;
    for (size_t i = 0; i < r->nheaders; i++) {
        const sl_route_header_t *h = &r->headers[i];
        hdr_t *d = &c->headers[i];
        d->name = h->name;
        d->name_len = h->name_len;
        /* A header without values never matches; calloc(0) may be NULL. */
        d->values = calloc(h->nvalues ? h->nvalues : 1, sizeof(*d->values));
        if (d->values == NULL)
            goto nomem;
        d->nvalues = h->nvalues;
        for (size_t j = 0; j < h->nvalues; j++) {
            const char *v = h->values[j];
            size_t len = strlen(v);
            if (v[0] != '~') {
                d->values[j].s = v;
                d->values[j].len = len;
                continue;
            }
            /* Kong 3 writes header regexes "~*..." and matches them against
             * the lower-cased value; a caseless regex does the same. A lone
             * "~" is accepted as well. */
            size_t skip = v[1] == '*' ? 2 : 1;
            char where[300];
            snprintf(where, sizeof(where), "headers.%.*s", (int)SL_MIN(h->name_len, 256), h->name);
            d->values[j].re =
                compile(v + skip, len - skip, PCRE2_CASELESS, r, v, where, err, errlen);
            if (d->values[j].re == NULL)
                return SL_ERROR;
        }
    }
    return SL_OK;

nomem:
    route_error(err, errlen, r, "out of memory");
    return SL_ERROR;
}

/* Splits a configured host into its name, port (0 when none) and kind, or
 * returns SL_ERROR for a bad port or a wildcard that is not a whole first or
 * last label. "[::1]:8000" and "example.com:8000" carry a port; "::1" does not. */
static int parse_host(const char *h, const char **name, size_t *len, uint16_t *port, int *kind)
{
    size_t n = strlen(h);
    const char *colon = NULL;

    if (h[0] == '[') {
        const char *close = memchr(h, ']', n);
        if (close == NULL)
            return SL_ERROR;
        if (close + 1 < h + n) {
            if (close[1] != ':')
                return SL_ERROR;
            colon = close + 1;
        }
    } else {
        colon = memchr(h, ':', n);
        if (colon != NULL && memchr(colon + 1, ':', (size_t)(h + n - colon - 1)) != NULL)
            colon = NULL;
    }
    *port = 0;
    if (colon != NULL) {
        unsigned long p = 0;
        size_t digits = (size_t)(h + n - colon - 1);
        if (digits == 0 || digits > 5)
            return SL_ERROR;
        for (size_t i = 1; i <= digits; i++) {
            if (colon[i] < '0' || colon[i] > '9')
                return SL_ERROR;
            p = p * 10 + (unsigned long)(colon[i] - '0');
        }
        if (p == 0 || p > 65535)
            return SL_ERROR;
        *port = (uint16_t)p;
        n = (size_t)(colon - h);
    }
    if (n == 0)
        return SL_ERROR;

    const char *star = memchr(h, '*', n);
    *name = h;
    *len = n;
    *kind = HOST_EXACT;
    if (star == NULL)
        return SL_OK;
    if (n < 3 || memchr(star + 1, '*', (size_t)(h + n - star - 1)) != NULL)
        return SL_ERROR;
    if (star == h && h[1] == '.') {
        *name = h + 1; /* ".example.com" */
        *len = n - 1;
        *kind = HOST_SUFFIX;
        return SL_OK;
    }
    if (star == h + n - 1 && h[n - 2] == '.') {
        *len = n - 1; /* "example." */
        *kind = HOST_PREFIX;
        return SL_OK;
    }
    return SL_ERROR;
}

/* Lower-cases the ASCII letters among 8 bytes at once. */
static inline uint64_t lower8(uint64_t x)
{
    uint64_t low7 = x & 0x7f7f7f7f7f7f7f7full;
    uint64_t ge_a = low7 + 0x3f3f3f3f3f3f3f3full; /* top bit set from 'A' up */
    uint64_t gt_z = low7 + 0x2525252525252525ull; /* top bit set above 'Z' */
    uint64_t upper = ge_a & ~gt_z & ~x & 0x8080808080808080ull;
    return x | upper >> 2;
}

static inline uint64_t load8(const char *s, size_t len)
{
    uint64_t w = 0;
    memcpy(&w, s, len < 8 ? len : 8);
    return w;
}

/* Case-insensitive, 8 bytes at a step; only consistency within the process
 * matters, so the byte order of the loads does not. */
static uint64_t hash_host(int kind, const char *s, size_t len, uint16_t port)
{
    uint64_t h = (uint64_t)kind << 48 ^ (uint64_t)port << 32 ^ len;

    for (size_t i = 0; i < len; i += 8) {
        h ^= lower8(load8(s + i, len - i));
        h *= 0x9e3779b97f4a7c15ull;
        h ^= h >> 32;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

/* Compares a lower-case key with s in any case. */
static bool host_eq(const char *key, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i += 8) {
        if (load8(key + i, len - i) != lower8(load8(s + i, len - i)))
            return false;
    }
    return true;
}

/* ASCII case-insensitive equality of two views in any case. */
static bool ieq(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (sl_lower(a[i]) != sl_lower(b[i]))
            return false;
    }
    return true;
}

/* Returns the slot holding the bucket for the key, or the empty slot where it
 * belongs. The table is at most half full, so the probe ends. */
static slot_t *probe(const sl_router_t *rt, int kind, const char *s, size_t len, uint16_t port,
                     uint64_t hash)
{
    for (size_t i = hash & rt->mask;; i = (i + 1) & rt->mask) {
        slot_t *t = &rt->table[i];
        const bucket_t *b = t->b;
        if (b == NULL || (t->hash == hash && b->kind == kind && b->port == port &&
                          b->host_len == len && host_eq(b->host, s, len)))
            return t;
    }
}

static const bucket_t *find_bucket(const sl_router_t *rt, int kind, const char *s, size_t len,
                                   uint16_t port)
{
    return probe(rt, kind, s, len, port, hash_host(kind, s, len, port))->b;
}

static int push_entry(entry_t **a, size_t *n, size_t *cap, const entry_t *e)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 2;
        entry_t *p = realloc(*a, c * sizeof(*p));
        if (p == NULL)
            return SL_ERROR;
        *a = p;
        *cap = c;
    }
    (*a)[(*n)++] = *e;
    return SL_OK;
}

/* Returns the slot of n's child whose label starts with c, or NULL. */
static node_t **find_child(const node_t *n, char c)
{
    const unsigned char *f;

    if (n->nchildren == 0)
        return NULL;
    f = memchr(n->firsts, (unsigned char)c, n->nchildren);
    return f != NULL ? &n->children[f - n->firsts] : NULL;
}

static node_t *new_child(node_t *parent, const char *label, size_t len)
{
    node_t *c = calloc(1, sizeof(*c));
    node_t **children = realloc(parent->children, (parent->nchildren + 1) * sizeof(*children));
    unsigned char *firsts = NULL;

    if (children != NULL) {
        parent->children = children;
        firsts = realloc(parent->firsts, parent->nchildren + 1);
    }
    if (c == NULL || firsts == NULL) {
        free(c);
        return NULL;
    }
    parent->firsts = firsts;
    c->label = label;
    c->label_len = len;
    parent->children[parent->nchildren] = c;
    parent->firsts[parent->nchildren++] = (unsigned char)label[0];
    return c;
}

/* Files e under the node for path[0..len), splitting an edge when the path
 * ends or diverges inside it. */
static int insert_prefix(node_t *root, const char *path, size_t len, const entry_t *e)
{
    node_t *n = root;
    size_t i = 0;

    while (i < len) {
        node_t **slot = find_child(n, path[i]);
        if (slot == NULL) {
            n = new_child(n, path + i, len - i);
            if (n == NULL)
                return SL_ERROR;
            break;
        }
        node_t *c = *slot;
        size_t common = 0;
        while (common < c->label_len && i + common < len && c->label[common] == path[i + common])
            common++;
        if (common < c->label_len) {
            node_t *mid = calloc(1, sizeof(*mid));
            if (mid == NULL)
                return SL_ERROR;
            mid->children = malloc(sizeof(*mid->children));
            mid->firsts = malloc(1);
            if (mid->children == NULL || mid->firsts == NULL) {
                free(mid->children);
                free(mid->firsts);
                free(mid);
                return SL_ERROR;
            }
            mid->label = c->label;
            mid->label_len = common;
            c->label += common;
            c->label_len -= common;
            mid->children[0] = c;
            mid->firsts[0] = (unsigned char)c->label[0];
            mid->nchildren = 1;
            *slot = mid;
            c = mid;
        }
        n = c;
        i += common;
    }
    return push_entry(&n->entries, &n->nentries, &n->capentries, e);
}

static void free_node(node_t *n)
{
    for (size_t i = 0; i < n->nchildren; i++) {
        free_node(n->children[i]);
        free(n->children[i]);
    }
    free(n->children);
    free(n->firsts);
    free(n->entries);
}

/* Frees a bucket, frozen or not: a frozen one is a single allocation. */
static void free_bucket(bucket_t *b)
{
    if (b == NULL)
        return;
    if (b->tree != NULL) {
        free_node(b->tree);
        free(b->tree);
    }
    free(b->rx);
    free(b);
}

/* Returns a bucket to build, holding a lower-case copy of its host. */
static bucket_t *new_bucket(int kind, const char *host, size_t len, uint16_t port, uint64_t hash)
{
    bucket_t *b = calloc(1, sizeof(*b) + len);
    char *copy;

    if (b == NULL || (b->tree = calloc(1, sizeof(*b->tree))) == NULL) {
        free(b);
        return NULL;
    }
    copy = (char *)(b + 1);
    for (size_t i = 0; i < len; i++)
        copy[i] = sl_lower(host[i]);
    b->kind = kind;
    b->host = copy;
    b->host_len = len;
    b->port = port;
    b->hash = hash;
    b->plain = kind == HOST_EXACT ? K_PLAIN : 0;
    return b;
}

static int bucket_add(bucket_t *b, const croute_t *c)
{
    const sl_route_t *r = c->route;
    entry_t e = {
        .lo = ~(uint64_t)r->index,
        .r = c,
        .methods = r->methods,
        .protocols = r->protocols,
        .flags = (r->methods == 0 && r->nother_methods == 0 ? E_ANY_METHOD : 0) |
                 (c->nheaders > 0 ? E_HEADERS : 0),
    };

    if (r->npaths == 0) {
        e.hi = c->key;
        b->top = SL_MAX(b->top, e.hi | b->plain);
        return insert_prefix(b->tree, "", 0, &e);
    }
    for (size_t i = 0; i < r->npaths; i++) {
        const sl_route_path_t *p = &r->paths[i];
        int rc;
        if (p->kind == SL_PATH_REGEX) {
            /* Flipping the sign bit orders signed priorities as unsigned. */
            e.hi = c->key | K_REGEX | ((uint32_t)r->regex_priority ^ 0x80000000u);
            e.rx = &c->paths[i];
            rc = push_entry(&b->rx, &b->nrx, &b->caprx, &e);
        } else {
            e.hi = c->key | (uint64_t)SL_MIN(p->len, (size_t)UINT32_MAX);
            e.rx = NULL;
            rc = insert_prefix(b->tree, p->value, p->len, &e);
        }
        if (rc != SL_OK)
            return rc;
        b->top = SL_MAX(b->top, e.hi | b->plain);
    }
    return SL_OK;
}

static int entry_cmp(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;

    if (x->hi != y->hi)
        return x->hi > y->hi ? -1 : 1;
    if (x->lo != y->lo)
        return x->lo > y->lo ? -1 : 1;
    return 0;
}

static void sort_entries(entry_t *e, size_t n)
{
    if (n > 1)
        qsort(e, n, sizeof(*e), entry_cmp);
}

static void sort_node(node_t *n)
{
    sort_entries(n->entries, n->nentries);
    for (size_t i = 0; i < n->nchildren; i++)
        sort_node(n->children[i]);
}

/* The bytes pack_node will use for n's arrays and subtree. */
static size_t node_size(const node_t *n)
{
    size_t s =
        n->nentries * sizeof(entry_t) + ALIGN8(n->nchildren) + n->nchildren * sizeof(pnode_t);

    for (size_t i = 0; i < n->nchildren; i++)
        s += ALIGN8(n->children[i]->label_len) + node_size(n->children[i]);
    return s;
}

/* Lays out n's entries, its children (with their labels) and then each
 * child's subtree at *cur, depth first, and points p at them. */
static void pack_node(const node_t *n, pnode_t *p, char **cur)
{
    entry_t *entries = (entry_t *)*cur;
    unsigned char *firsts = (unsigned char *)(entries + n->nentries);
    pnode_t *children = (pnode_t *)(firsts + ALIGN8(n->nchildren));
    char *labels = (char *)(children + n->nchildren);

    if (n->nentries > 0)
        memcpy(entries, n->entries, n->nentries * sizeof(*entries));
    if (n->nchildren > 0)
        memcpy(firsts, n->firsts, n->nchildren);
    for (size_t i = 0; i < n->nchildren; i++) {
        const node_t *c = n->children[i];
        memcpy(labels, c->label, c->label_len);
        children[i].label = labels;
        children[i].label_len = (uint32_t)c->label_len;
        labels += ALIGN8(c->label_len);
    }
    *cur = labels;
    for (size_t i = 0; i < n->nchildren; i++)
        pack_node(n->children[i], &children[i], cur);
    p->entries = entries;
    p->nentries = (uint32_t)n->nentries;
    p->firsts = firsts;
    p->children = children;
    p->nchildren = (uint32_t)n->nchildren;
}

/* Returns b frozen into one allocation, or NULL when out of memory; b itself
 * is left for the caller to free. */
static bucket_t *freeze(const bucket_t *b)
{
    size_t size =
        sizeof(bucket_t) + ALIGN8(b->host_len) + b->nrx * sizeof(entry_t) + node_size(b->tree);
    bucket_t *f = malloc(size);
    char *cur;

    if (f == NULL)
        return NULL;
    cur = (char *)(f + 1);
    *f = (bucket_t){.hash = b->hash,
                    .host_len = b->host_len,
                    .kind = b->kind,
                    .port = b->port,
                    .plain = b->plain,
                    .top = b->top,
                    .nregexes = b->nrx};
    if (b->host_len > 0)
        memcpy(cur, b->host, b->host_len);
    f->host = cur;
    cur += ALIGN8(b->host_len);
    if (b->nrx > 0)
        memcpy(cur, b->rx, b->nrx * sizeof(entry_t));
    f->regexes = (const entry_t *)cur;
    cur += b->nrx * sizeof(entry_t);
    f->root.label = "";
    pack_node(b->tree, &f->root, &cur);
    return f;
}

/* Sorts b's candidates and replaces *bp with its frozen copy. */
static int finish_bucket(bucket_t **bp)
{
    bucket_t *b = *bp, *f;

    sort_node(b->tree);
    sort_entries(b->rx, b->nrx);
    if ((f = freeze(b)) == NULL)
        return SL_ERROR;
    free_bucket(b);
    *bp = f;
    return SL_OK;
}

/* Moves the keyed buckets to a table sized for the buckets there are (the
 * first was sized for the hosts the routes list, usually far more, and a
 * small table stays in cache), then freezes each. */
static int finish_table(sl_router_t *rt)
{
    size_t n = 0, cap = 1;
    slot_t *table;

    for (size_t i = 0; i <= rt->mask; i++)
        n += rt->table[i].b != NULL;
    while (cap < 2 * n + 1)
        cap <<= 1;
    if ((table = calloc(cap, sizeof(*table))) == NULL)
        return SL_ERROR;
    for (size_t i = 0; i <= rt->mask; i++) {
        if (rt->table[i].b == NULL)
            continue;
        size_t j = rt->table[i].hash & (cap - 1);
        while (table[j].b != NULL)
            j = (j + 1) & (cap - 1);
        table[j] = rt->table[i];
    }
    free(rt->table);
    rt->table = table;
    rt->mask = cap - 1;
    for (size_t i = 0; i < cap; i++) {
        if (table[i].b != NULL && finish_bucket(&table[i].b) != SL_OK)
            return SL_ERROR;
    }
    return SL_OK;
}

/* Compiles one route's regexes and header conditions into c. */
static int compile_route(croute_t *c, const sl_route_t *r, uint32_t *max_pairs, char *err,
                         size_t errlen)
{
    unsigned weight = (r->nhosts > 0) + (r->npaths > 0) +
                      (r->methods != 0 || r->nother_methods > 0) + (r->nheaders > 0);

    c->route = r;
    c->key = (uint64_t)weight << K_WEIGHT_SHIFT |
             (uint64_t)SL_MIN(r->nheaders, (size_t)K_MAX_HEADERS) << K_HEADERS_SHIFT;
    if (r->npaths > 0) {
        c->paths = calloc(r->npaths, sizeof(*c->paths));
        if (c->paths == NULL) {
            route_error(err, errlen, r, "out of memory");
            return SL_ERROR;
        }
        for (size_t i = 0; i < r->npaths; i++) {
            if (r->paths[i].kind == SL_PATH_REGEX &&
                compile_path(&c->paths[i], &r->paths[i], r, max_pairs, err, errlen) != SL_OK)
                return SL_ERROR;
        }
    }
    if (r->nheaders > 0 && compile_headers(c, err, errlen) != SL_OK)
        return SL_ERROR;
    return SL_OK;
}

/* Files route c under the bucket of each of its hosts, or the no-host one. */
static int file_route(sl_router_t *rt, const croute_t *c, char *err, size_t errlen)
{
    const sl_route_t *r = c->route;

    if (r->nhosts == 0) {
        if (bucket_add(rt->nohost, c) != SL_OK)
            goto nomem;
        return SL_OK;
    }
    for (size_t j = 0; j < r->nhosts; j++) {
        const char *name;
        size_t len;
        uint16_t port;
        int kind;
        if (parse_host(r->hosts[j], &name, &len, &port, &kind) != SL_OK) {
            route_error(err, errlen, r,
                        "invalid host '%s' in hosts: a wildcard must be a whole first or last "
                        "label and a port 1-65535",
                        r->hosts[j]);
            return SL_ERROR;
        }
        uint64_t h = hash_host(kind, name, len, port);
        slot_t *t = probe(rt, kind, name, len, port, h);
        if (t->b == NULL) {
            if ((t->b = new_bucket(kind, name, len, port, h)) == NULL)
                goto nomem;
            t->hash = h;
        }
        rt->kinds |= (unsigned)kind;
        rt->ports |= port != 0;
        if (kind == HOST_SUFFIX)
            rt->max_suffix = SL_MAX(rt->max_suffix, len);
        if (kind == HOST_PREFIX)
            rt->max_prefix = SL_MAX(rt->max_prefix, len);
        if (bucket_add(t->b, c) != SL_OK)
            goto nomem;
    }
    return SL_OK;

nomem:
    route_error(err, errlen, r, "out of memory");
    return SL_ERROR;
}

sl_router_t *sl_router_create(sl_route_t **routes, size_t nroutes, char *err, size_t errlen)
{
    sl_router_t *rt = calloc(1, sizeof(*rt));
    size_t nhosts = 0, cap = 1;
    uint32_t max_pairs = 1;

    if (rt == NULL)
        goto nomem;
    for (size_t i = 0; i < nroutes; i++)
        nhosts += routes[i]->nhosts;
    while (cap < 2 * nhosts + 1)
        cap <<= 1;
    rt->table = calloc(cap, sizeof(*rt->table));
    rt->mask = cap - 1;
    rt->routes = calloc(nroutes ? nroutes : 1, sizeof(*rt->routes));
    rt->nohost = new_bucket(0, NULL, 0, 0, 0);
    if (rt->table == NULL || rt->routes == NULL || rt->nohost == NULL)
        goto nomem;

    for (size_t i = 0; i < nroutes; i++) {
        rt->nroutes = i + 1;
        if (compile_route(&rt->routes[i], routes[i], &max_pairs, err, errlen) != SL_OK ||
            file_route(rt, &rt->routes[i], err, errlen) != SL_OK)
            goto failed;
    }
    if (finish_bucket(&rt->nohost) != SL_OK || finish_table(rt) != SL_OK)
        goto nomem;
    rt->md = pcre2_match_data_create(max_pairs, NULL);
    if (rt->md == NULL)
        goto nomem;
    return rt;

nomem:
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "out of memory compiling the routes");
failed:
    sl_router_free(rt);
    return NULL;
}

void sl_router_free(sl_router_t *rt)
{
    if (rt == NULL)
        return;
    for (size_t i = 0; i < rt->nroutes; i++) {
        croute_t *c = &rt->routes[i];
        for (size_t j = 0; c->paths != NULL && j < c->route->npaths; j++) {
            pcre2_code_free(c->paths[j].re);
            free((void *)c->paths[j].names);
        }
        free(c->paths);
        for (size_t j = 0; j < c->nheaders; j++) {
            for (size_t k = 0; k < c->headers[j].nvalues; k++)
                pcre2_code_free(c->headers[j].values[k].re);
            free(c->headers[j].values);
        }
        free(c->headers);
    }
    free(rt->routes);
    for (size_t i = 0; rt->table != NULL && i <= rt->mask; i++)
        free_bucket(rt->table[i].b);
    free(rt->table);
    free_bucket(rt->nohost);
    pcre2_match_data_free(rt->md);
    free(rt);
}

static bool other_method_ok(const sl_route_t *r, const sl_router_req_t *req)
{
    for (size_t i = 0; i < r->nother_methods; i++) {
        const char *m = r->other_methods[i];
        if (strlen(m) == req->method_len && memcmp(m, req->method, req->method_len) == 0)
            return true;
    }
    return false;
}

static bool value_ok(const sl_router_t *rt, const hval_t *v, const sl_http_header_t *h)
{
    if (v->re == NULL)
        return v->len == h->value_len && ieq(v->s, h->value, v->len);
    /* A return of 0 is a match whose groups did not fit the match data. */
    return pcre2_match(v->re, (PCRE2_SPTR)(h->value ? h->value : ""), h->value_len, 0, 0, rt->md,
                       NULL) >= 0;
}

/* Does some request header named d->name carry one of d's values? */
static bool header_ok(const sl_router_t *rt, const hdr_t *d, const sl_router_req_t *req)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        const sl_http_header_t *h = &req->headers[i];
        if (h->name_len != d->name_len || !ieq(h->name, d->name, d->name_len))
            continue;
        for (size_t j = 0; j < d->nvalues; j++) {
            if (value_ok(rt, &d->values[j], h))
                return true;
        }
    }
    return false;
}

/* Checks everything but the host and the path. */
static bool verify(const sl_router_t *rt, const entry_t *e, const sl_router_req_t *req)
{
    if (e->protocols != 0 &&
        (req->protocol < 0 || req->protocol >= 32 || !(e->protocols & (1u << req->protocol))))
        return false;
    if (!(e->flags & E_ANY_METHOD)) {
        if (req->method_id != SL_HTTP_OTHER) {
            if (!(e->methods & (unsigned)req->method_id))
                return false;
        } else if (!other_method_ok(e->r->route, req)) {
            return false;
        }
    }
    if (e->flags & E_HEADERS) {
        for (size_t i = 0; i < e->r->nheaders; i++) {
            if (!header_ok(rt, &e->r->headers[i], req))
                return false;
        }
    }
    return true;
}

/* The best candidate so far; hi == 0 && lo == 0 means none, as every real
 * candidate has lo = ~index != 0. */
typedef struct {
    uint64_t hi, lo;
    const croute_t *r;
    const rx_t *rx;
    size_t matched_len;
    int captures[2 * SL_ROUTER_MAX_CAPTURES];
} best_t;

static bool beats(uint64_t hi, uint64_t lo, const best_t *best)
{
    return hi > best->hi || (hi == best->hi && lo > best->lo);
}

/* Offers the candidates of one tree node, whose prefix is len bytes long.
 * They share the prefix length, so they are sorted by their whole key and the
 * first that verifies is the node's best. */
static void offer_node(const sl_router_t *rt, const pnode_t *n, uint64_t plain, size_t len,
                       const sl_router_req_t *req, best_t *best)
{
    for (uint32_t k = 0; k < n->nentries; k++) {
        const entry_t *e = &n->entries[k];
        uint64_t hi = e->hi | plain;
        if (!beats(hi, e->lo, best))
            return;
        if (verify(rt, e, req)) {
            best->hi = hi;
            best->lo = e->lo;
            best->r = e->r;
            best->rx = NULL;
            best->matched_len = len;
            return;
        }
    }
}

/* Runs a regex path against the request path; on a match records it in
 * best, which it beats. */
static bool regex_match(const sl_router_t *rt, const entry_t *e, uint64_t hi,
                        const sl_router_req_t *req, best_t *best)
{
    const rx_t *rx = e->rx;
    const char *path = req->path ? req->path : "";
    int rc = pcre2_match(rx->re, (PCRE2_SPTR)path, req->path_len, 0, 0, rt->md, NULL);

    if (rc < 0)
        return false;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(rt->md);
    for (int i = 0; i < 2 * rx->ncaptures; i++)
        best->captures[i] = ov[i] == PCRE2_UNSET ? -1 : (int)ov[i];
    best->hi = hi;
    best->lo = e->lo;
    best->r = e->r;
    best->rx = rx;
    /* The match starts at 0 (it is anchored) unless the pattern moves the
     * start with \K; strip_path wants the end either way. */
    best->matched_len = ov[1];
    return true;
}

static const pnode_t *child(const pnode_t *n, char c)
{
    const unsigned char *f = n->firsts;

    /* Most nodes have a handful of children; a call to memchr costs more. */
    if (n->nchildren <= 8) {
        for (uint32_t i = 0; i < n->nchildren; i++) {
            if (f[i] == (unsigned char)c)
                return &n->children[i];
        }
        return NULL;
    }
    f = memchr(f, (unsigned char)c, n->nchildren);
    return f != NULL ? &n->children[f - n->firsts] : NULL;
}

#define SEARCH_DEPTH 32

static void search(const sl_router_t *rt, const bucket_t *b, const sl_router_req_t *req,
                   best_t *best)
{
    const char *p = req->path;
    size_t len = req->path_len, i = 0, depth = 0;
    const pnode_t *n = &b->root;
    struct {
        const pnode_t *n;
        size_t len;
    } seen[SEARCH_DEPTH];

    if (b->top < best->hi)
        return;
    /* Walk down first and offer the deepest nodes first: their prefixes are
     * longer, so in the common case of routes of equal weight the first that
     * verifies outranks the rest, which are then skipped without verifying.
     * Past SEARCH_DEPTH nodes are offered as they come; the order only
     * affects how much is skipped, never the answer. */
    for (;;) {
        if (n->nentries > 0) {
            if (depth < SEARCH_DEPTH) {
                seen[depth].n = n;
                seen[depth++].len = i;
            } else {
                offer_node(rt, n, b->plain, i, req, best);
            }
        }
        if (i == len)
            break;
        const pnode_t *c = child(n, p[i]);
        if (c == NULL || c->label_len > len - i || memcmp(c->label, p + i, c->label_len) != 0)
            break;
        i += c->label_len;
        n = c;
    }
    while (depth > 0) {
        depth--;
        offer_node(rt, seen[depth].n, b->plain, seen[depth].len, req, best);
    }

    /* Captures are offsets in an int. */
    if (len > INT_MAX)
        return;
    for (size_t k = 0; k < b->nregexes; k++) {
        const entry_t *e = &b->regexes[k];
        uint64_t hi = e->hi | b->plain;
        if (!beats(hi, e->lo, best))
            break;
        /* Headers first: their regexes reuse the match data that must hold
         * the path's captures afterwards. */
        if (verify(rt, e, req) && regex_match(rt, e, hi, req, best))
            break;
    }
}

int sl_router_match(const sl_router_t *rt, const sl_router_req_t *req, sl_router_match_t *m)
{
    best_t best;
    const char *h = req->host;
    size_t hlen = h != NULL ? req->host_len : 0;
    uint16_t port = rt->ports ? req->port : 0;

    best.hi = best.lo = 0;
    best.r = NULL;
    m->route = NULL;

    /* Exact hosts first: they rank above wildcards, so what they find prunes
     * the rest. */
    if (hlen > 0 && rt->kinds != 0) {
        const bucket_t *b;
        if ((b = find_bucket(rt, HOST_EXACT, h, hlen, 0)) != NULL)
            search(rt, b, req, &best);
        if (port != 0 && (b = find_bucket(rt, HOST_EXACT, h, hlen, port)) != NULL)
            search(rt, b, req, &best);
        /* Each dot with a label on both sides splits the host into a "*.tail"
         * and a "head.*" that may be configured. Only keys no longer than the
         * longest configured ones are hashed, so a host of many labels costs
         * a scan, not hashing the square of its length. */
        for (size_t i = 1; (rt->kinds & (HOST_SUFFIX | HOST_PREFIX)) && i + 1 < hlen; i++) {
            if (h[i] != '.')
                continue;
            bool suffix = hlen - i <= rt->max_suffix, prefix = i + 1 <= rt->max_prefix;
            for (int pass = 0; pass < (port != 0 ? 2 : 1); pass++) {
                uint16_t want = pass ? port : 0;
                if (suffix && (b = find_bucket(rt, HOST_SUFFIX, h + i, hlen - i, want)) != NULL)
                    search(rt, b, req, &best);
                if (prefix && (b = find_bucket(rt, HOST_PREFIX, h, i + 1, want)) != NULL)
                    search(rt, b, req, &best);
            }
        }
    }
    search(rt, rt->nohost, req, &best);

    if (best.r == NULL)
        return SL_DECLINED;
    m->route = best.r->route;
    m->matched_len = best.matched_len;
    if (best.rx != NULL) {
        m->ncaptures = best.rx->ncaptures;
        memcpy(m->captures, best.captures, 2 * (size_t)best.rx->ncaptures * sizeof(int));
        m->capture_names = best.rx->names;
    } else {
        m->ncaptures = 0;
        m->capture_names = NULL;
    }
    return SL_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = sl_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Drops the last segment of b[0..w) and the "/" before it; returns the new w. */
static size_t pop_segment(const char *b, size_t w)
{
    while (w > 0 && b[w - 1] != '/')
        w--;
    return w > 0 ? w - 1 : 0;
}

/* RFC 3986 §5.2.4 in place: the output never overtakes the input (w <= r),
 * so one buffer serves as both. */
static size_t remove_dot_segments(char *b, size_t n)
{
    size_t r = 0, w = 0;

    while (r < n) {
        const char *p = b + r;
        size_t left = n - r;
        if (left >= 3 && p[0] == '.' && p[1] == '.' && p[2] == '/') {
            r += 3; /* A: "../" */
        } else if (left >= 2 && p[0] == '.' && p[1] == '/') {
            r += 2; /* A: "./" */
        } else if (left >= 3 && p[0] == '/' && p[1] == '.' && p[2] == '/') {
            r += 2; /* B: "/./" becomes "/" */
        } else if (left == 2 && p[0] == '/' && p[1] == '.') {
            b[w++] = '/'; /* B: a final "/." becomes "/" */
            break;
        } else if (left >= 4 && p[0] == '/' && p[1] == '.' && p[2] == '.' && p[3] == '/') {
            r += 3; /* C: "/../" becomes "/" and drops a segment */
            w = pop_segment(b, w);
        } else if (left == 3 && p[0] == '/' && p[1] == '.' && p[2] == '.') {
            w = pop_segment(b, w); /* C: a final "/.." */
            b[w++] = '/';
            break;
        } else if ((left == 1 && p[0] == '.') || (left == 2 && p[0] == '.' && p[1] == '.')) {
            break; /* D */
        } else {
            do /* E: move "/segment" (or a leading "segment") to the output */
                b[w++] = b[r++];
            while (r < n && b[r] != '/');
        }
    }
    return w;
}

int sl_router_normalize_path(const char *path, size_t len, char *out)
{
    size_t w = 0;

    if (len > INT_MAX)
        return SL_ERROR;
    /* Decoding shrinks or keeps the length, so writing behind the reader is
     * safe when out == path. The escape's digits are read before writing. */
    for (size_t r = 0; r < len;) {
        if (path[r] != '%') {
            out[w++] = path[r++];
            continue;
        }
        if (len - r < 3)
            return SL_ERROR;
        char hc = path[r + 1], lc = path[r + 2];
        int hv = hexval(hc), lv = hexval(lc);
        if (hv < 0 || lv < 0)
            return SL_ERROR;
        unsigned char v = (unsigned char)(hv << 4 | lv);
        if (unreserved(v)) {
            out[w++] = (char)v;
        } else {
            out[w++] = '%';
            out[w++] = hc >= 'a' ? (char)(hc - 'a' + 'A') : hc;
            out[w++] = lc >= 'a' ? (char)(lc - 'a' + 'A') : lc;
        }
        r += 3;
    }
    return (int)remove_dot_segments(out, w);
}
