/* targets.c: target names re-resolved by the master, their addresses shared with every worker.
 *
 * The shared table is one anonymous MAP_SHARED mapping made by the master
 * before fork: a record per name (in config order: upstream by upstream,
 * target by target), each a seqlock around SL_DNS_SLOTS addresses:
 *
 *   seq        even: stable, odd: the master is writing; +2 per publication
 *   words[]    per slot: family | scope << 32, then the 16 address bytes
 *
 * Every word is an atomic accessed relaxed, ordered by the fences of the
 * seqlock, so a reader never sees a torn set and the master (the only
 * writer) never waits for a reader. A worker that reads while the master
 * writes gets nothing new and tries again at its next tick.
 *
 * The master looks a name up again when its answer's TTL (within
 * dns_min_ttl..dns_max_ttl, or dns_valid_ttl) runs out. A failed or empty
 * answer never replaces the addresses: the last good ones stay (stale is
 * better than nothing) and the name is asked again after dns_error_ttl
 * (server failure, timeout) or dns_not_found_ttl (NXDOMAIN, no address); the
 * first failure of a run is logged, and so is the recovery. */
#include "targets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "health.h"
#include "log.h"
#include "resolver.h"

#define WORDS 3 /* per slot */

typedef struct {
    _Atomic uint32_t seq;
    _Atomic uint64_t words[SL_DNS_SLOTS * WORDS];
} record_t;

/* The master's state of one name. */
typedef struct {
    sl_upstream_t *u;
    size_t first; /* its first slot in u->targets */
    sl_taddr_t slots[SL_DNS_SLOTS];
    uint64_t vacated[SL_DNS_SLOTS]; /* the publication that emptied each slot; 0: never used */
    double due;                     /* when to look it up again (monotonic seconds) */
    unsigned querying : 1;
    unsigned failing : 1;   /* the last lookup failed, and that was logged */
    unsigned truncated : 1; /* "more than SL_DNS_SLOTS addresses" was logged */
} name_t;

static struct {
    const sl_config_t *cf;
    name_t *names;
    size_t n;
    record_t *table;
    size_t size;
    uint64_t stamp; /* publications so far */
} T;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sl_taddr_from(sl_taddr_t *a, const struct sockaddr_storage *ss)
{
    memset(a, 0, sizeof(*a));
    if (ss->ss_family == AF_INET) {
        a->family = AF_INET;
        memcpy(a->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        return 1;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        a->family = AF_INET6;
        a->scope = sin6->sin6_scope_id;
        memcpy(a->addr, &sin6->sin6_addr, 16);
        return 1;
    }
    return 0;
}

void sl_taddr_to(const sl_taddr_t *a, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    *len = 0;
    if (a->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        memcpy(&sin->sin_addr, a->addr, 4);
        *len = sizeof(*sin);
    } else if (a->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        sin6->sin6_scope_id = a->scope;
        memcpy(&sin6->sin6_addr, a->addr, 16);
        *len = sizeof(*sin6);
    }
}

static int same(const sl_taddr_t *a, const sl_taddr_t *b)
{
    return a->family == b->family && a->scope == b->scope &&
           memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

static int contains(const sl_taddr_t *set, size_t n, const sl_taddr_t *a)
{
    for (size_t i = 0; i < n; i++)
        if (set[i].family != 0 && same(&set[i], a))
            return 1;
    return 0;
}

/* O(slots x addresses): both are at most a few dozen. */
size_t sl_targets_reconcile(sl_taddr_t *slots, uint64_t *vacated, size_t nslots,
                            const sl_taddr_t *fresh, size_t n, uint64_t stamp, uint8_t *changed,
                            size_t *dropped)
{
    size_t nchanged = 0;
    *dropped = 0;
    for (size_t s = 0; s < nslots; s++) {
        if (slots[s].family == 0 || contains(fresh, n, &slots[s]))
            continue;
        memset(&slots[s], 0, sizeof(slots[s]));
        vacated[s] = stamp;
        changed[s] = 1;
        nchanged++;
    }
    for (size_t f = 0; f < n; f++) {
        if (fresh[f].family == 0 || contains(slots, nslots, &fresh[f]))
            continue;
        size_t best = nslots;
        for (size_t s = 0; s < nslots; s++)
            if (slots[s].family == 0 && (best == nslots || vacated[s] < vacated[best]))
                best = s;
        if (best == nslots) {
            (*dropped)++;
            continue;
        }
        slots[best] = fresh[f];
        if (!changed[best])
            nchanged++;
        changed[best] = 1;
    }
    return nchanged;
}

/* --- the shared table ---------------------------------------------------------- */

static void encode(const sl_taddr_t *a, uint64_t w[WORDS])
{
    w[0] = (uint64_t)a->family | (uint64_t)a->scope << 32;
    memcpy(&w[1], a->addr, 8);
    memcpy(&w[2], a->addr + 8, 8);
}

static void decode(const uint64_t w[WORDS], sl_taddr_t *a)
{
    a->family = (uint16_t)(w[0] & 0xffff);
    a->scope = (uint32_t)(w[0] >> 32);
    memcpy(a->addr, &w[1], 8);
    memcpy(a->addr + 8, &w[2], 8);
}

/* The seqlock's writer side: the master only. */
static void record_write(record_t *r, const sl_taddr_t *slots)
{
    uint32_t seq = atomic_load_explicit(&r->seq, memory_order_relaxed);
    atomic_store_explicit(&r->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (size_t s = 0; s < SL_DNS_SLOTS; s++) {
        uint64_t w[WORDS];
        encode(&slots[s], w);
        for (size_t k = 0; k < WORDS; k++)
            atomic_store_explicit(&r->words[s * WORDS + k], w[k], memory_order_relaxed);
    }
    atomic_store_explicit(&r->seq, seq + 2, memory_order_release);
}

/* The reader side: returns the version read, or 0 when the master was
 * writing (odd, or changed while we read). */
static uint32_t record_read(record_t *r, sl_taddr_t *out)
{
    uint32_t seq = atomic_load_explicit(&r->seq, memory_order_acquire);
    if (seq & 1)
        return 0;
    for (size_t s = 0; s < SL_DNS_SLOTS; s++) {
        uint64_t w[WORDS];
        for (size_t k = 0; k < WORDS; k++)
            w[k] = atomic_load_explicit(&r->words[s * WORDS + k], memory_order_relaxed);
        decode(w, &out[s]);
    }
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&r->seq, memory_order_relaxed) == seq ? seq : 0;
}

int sl_targets_read(uint32_t k, uint32_t *seen, sl_taddr_t *out)
{
    if (T.table == NULL || k >= T.n)
        return 0;
    record_t *r = &T.table[k];
    if (atomic_load_explicit(&r->seq, memory_order_relaxed) == *seen)
        return 0;
    uint32_t seq = record_read(r, out);
    if (seq == 0)
        return 0;
    *seen = seq;
    return 1;
}

int sl_targets_addr(const sl_upstream_t *u, size_t i, struct sockaddr_storage *ss, socklen_t *len)
{
    const sl_target_t *t = &u->targets[i];
    *ss = t->addr;
    *len = t->addrlen;
    if (t->dns_slot == 0)
        return 1; /* an address literal */
    if (T.table == NULL || t->dns_name >= T.n)
        return t->addrlen > 0;
    sl_taddr_t set[SL_DNS_SLOTS];
    uint32_t seen = 0;
    /* A read that meets the master writing is retried: writes take
     * nanoseconds and come seconds apart. */
    for (int tries = 0; tries < 1000; tries++) {
        if (sl_targets_read(t->dns_name, &seen, set)) {
            sl_taddr_to(&set[t->dns_slot - 1], t->port, ss, len);
            return *len > 0;
        }
    }
    return t->addrlen > 0;
}

/* --- the master ----------------------------------------------------------------- */

static void format_taddr(const sl_taddr_t *a, char *buf, size_t len)
{
    if (inet_ntop(a->family == AF_INET6 ? AF_INET6 : AF_INET, a->addr, buf, (socklen_t)len) == NULL)
        snprintf(buf, len, "?");
}

/* Appends " +A" / " -A" for each address that came or went, within len. */
static void describe_change(const sl_taddr_t *before, const sl_taddr_t *after, char *buf,
                            size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        const sl_taddr_t *set = pass == 0 ? after : before;
        const sl_taddr_t *other = pass == 0 ? before : after;
        for (size_t s = 0; s < SL_DNS_SLOTS && used < len; s++) {
            if (set[s].family == 0 || contains(other, SL_DNS_SLOTS, &set[s]))
                continue;
            char a[INET6_ADDRSTRLEN];
            format_taddr(&set[s], a, sizeof(a));
            int w = snprintf(buf + used, len - used, " %c%s", pass == 0 ? '+' : '-', a);
            used = w < 0 ? len : used + (size_t)w;
        }
    }
}

size_t sl_targets_publish(uint32_t k, const sl_taddr_t *fresh, size_t n)
{
    if (k >= T.n || n == 0)
        return 0;
    name_t *nm = &T.names[k];
    const sl_target_t *t = &nm->u->targets[nm->first];
    sl_taddr_t before[SL_DNS_SLOTS];
    memcpy(before, nm->slots, sizeof(before));
    uint8_t changed[SL_DNS_SLOTS] = {0};
    size_t dropped;
    size_t nchanged = sl_targets_reconcile(nm->slots, nm->vacated, SL_DNS_SLOTS, fresh, n,
                                           ++T.stamp, changed, &dropped);
    if (dropped > 0 && !nm->truncated) {
        sl_log(SL_LOG_WARN,
               "upstream %s target %s:%u: more than %d addresses; %zu of them are not used",
               nm->u->name, t->host, t->port, SL_DNS_SLOTS, dropped);
        nm->truncated = 1;
    }
    if (nchanged == 0)
        return 0;
    /* Health first: a slot that lost its address is out at once, in every
     * worker, even before they adopt the new record. */
    for (size_t s = 0; s < SL_DNS_SLOTS; s++)
        if (changed[s])
            sl_health_set_present(nm->u, nm->first + s, nm->slots[s].family != 0);
    record_write(&T.table[k], nm->slots);

    size_t count = 0;
    for (size_t s = 0; s < SL_DNS_SLOTS; s++)
        count += nm->slots[s].family != 0;
    char what[512];
    describe_change(before, nm->slots, what, sizeof(what));
    sl_log(SL_LOG_NOTICE, "upstream %s target %s:%u: DNS answer changed:%s (%zu address%s)",
           nm->u->name, t->host, t->port, what, count, count == 1 ? "" : "es");
    return nchanged;
}

static void lookup_done(void *data, int status, const struct sockaddr_storage *addrs,
                        const socklen_t *lens, size_t n, int ttl, const char *err)
{
    SL_UNUSED(lens);
    name_t *nm = data;
    const sl_server_conf_t *s = &T.cf->server;
    const sl_target_t *t = &nm->u->targets[nm->first];
    double now = now_seconds();
    nm->querying = 0;
    if (status == SL_OK) {
        sl_taddr_t fresh[SL_DNS_SLOTS + 16];
        size_t m = 0;
        for (size_t i = 0; i < n && m < SL_NELEMS(fresh); i++)
            m += (size_t)sl_taddr_from(&fresh[m], &addrs[i]);
        if (nm->failing)
            sl_log(SL_LOG_NOTICE, "upstream %s target %s:%u: resolves again", nm->u->name, t->host,
                   t->port);
        nm->failing = 0;
        sl_targets_publish((uint32_t)(nm - T.names), fresh, m);
        nm->due = now + sl_resolver_ttl(s, ttl);
        return;
    }
    if (!nm->failing) {
        size_t count = 0;
        for (size_t i = 0; i < SL_DNS_SLOTS; i++)
            count += nm->slots[i].family != 0;
        sl_log(SL_LOG_WARN,
               "upstream %s target %s:%u: cannot resolve it again (%s); keeping its last %zu "
               "address%s",
               nm->u->name, t->host, t->port, err, count, count == 1 ? "" : "es");
        nm->failing = 1;
    }
    int ms = status == SL_DECLINED ? s->dns_not_found_ttl : s->dns_error_ttl;
    nm->due = now + SL_MAX(ms, s->dns_min_ttl) / 1000.;
}

int sl_targets_create(sl_config_t *cf)
{
    sl_targets_destroy();
    size_t n = 0;
    for (size_t i = 0; i < cf->nupstreams; i++) {
        const sl_upstream_t *u = cf->upstreams[i];
        for (size_t j = 0; j < u->ntargets; j++)
            n += u->targets[j].dns_slot == 1;
    }
    if (n == 0)
        return SL_OK;
    T.cf = cf;
    T.names = calloc(n, sizeof(*T.names));
    T.size = n * sizeof(record_t);
    void *p = mmap(NULL, T.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (T.names == NULL || p == MAP_FAILED) {
        sl_log(SL_LOG_ERR, "cannot map %zu bytes for the addresses of target names: %s", T.size,
               strerror(errno));
        free(T.names);
        T.names = NULL;
        return SL_ERROR;
    }
    T.table = p;
    T.n = n;
    double now = now_seconds();
    size_t k = 0;
    for (size_t i = 0; i < cf->nupstreams; i++) {
        sl_upstream_t *u = cf->upstreams[i];
        for (size_t j = 0; j < u->ntargets; j++) {
            sl_target_t *t = &u->targets[j];
            if (t->dns_slot == 0)
                continue;
            if (t->dns_slot == 1) {
                name_t *nm = &T.names[k++];
                nm->u = u;
                nm->first = j;
                nm->due = now;
            }
            name_t *nm = &T.names[k - 1];
            t->dns_name = (uint32_t)(k - 1);
            if (t->addrlen > 0)
                sl_taddr_from(&nm->slots[t->dns_slot - 1], &t->addr);
        }
    }
    for (size_t i = 0; i < T.n; i++)
        record_write(&T.table[i], T.names[i].slots);
    const char *err;
    if (sl_resolver_poll_open(&cf->server, &err) != SL_OK) {
        sl_log(SL_LOG_ERR, "cannot start the resolver for target names: %s", err);
        sl_targets_destroy();
        return SL_ERROR;
    }
    return SL_OK;
}

void sl_targets_forked(void)
{
    sl_resolver_poll_close();
}

void sl_targets_destroy(void)
{
    sl_resolver_poll_close();
    if (T.table != NULL)
        munmap(T.table, T.size);
    free(T.names);
    memset(&T, 0, sizeof(T));
}

int sl_targets_poll(struct pollfd *fds, int max, double *wait)
{
    if (T.n == 0)
        return 0;
    double now = now_seconds();
    for (size_t i = 0; i < T.n; i++) {
        name_t *nm = &T.names[i];
        if (!nm->querying && now >= nm->due) {
            nm->querying = 1;
            /* lookup_done may run inside (a hosts-file answer). */
            if (sl_resolver_poll_start(nm->u->targets[nm->first].host, SL_DNS_SLOTS + 16,
                                       lookup_done, nm) != SL_OK) {
                nm->querying = 0;
                nm->due = now + 1;
            }
        }
        if (!nm->querying && nm->due - now < *wait)
            *wait = SL_MAX(nm->due - now, 0);
    }
    int ms = sl_resolver_poll_timeout();
    if (ms >= 0 && ms / 1000. < *wait)
        *wait = ms / 1000.;
    return sl_resolver_poll_fds(fds, max);
}

void sl_targets_process(const struct pollfd *fds, int n)
{
    if (T.n > 0)
        sl_resolver_poll_process(fds, n);
}
