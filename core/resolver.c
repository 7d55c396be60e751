/* resolver.c: non-blocking DNS for a worker: c-ares on the libev loop, with a cache that
 * honours TTLs.
 *
 * One c-ares channel per worker; its sockets get libev watchers through
 * c-ares's socket-state callback, and its retransmissions a libev timer.
 * Answers are cached per name: A records when there are any, else AAAA; several
 * addresses take turns. Lookups of a name already being asked for wait for
 * the same query. An expired answer is still handed out for dns_stale_ttl
 * while a refresh runs in the background, and kept when that refresh fails
 * on a server error (a DNS hiccup does not fail traffic); a name that does
 * not exist is remembered for dns_not_found_ttl, other failures for
 * dns_error_ttl. Callbacks run from a zero-delay timer, never from inside
 * c-ares or sl_resolve, so a caller may start another lookup from one.
 */
#include "resolver.h"

#include <ares.h>
#include <errno.h>
#include <sys/select.h>
#include <arpa/inet.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "sl_ffi.h"
#include "sl_lua.h"

#define MAX_NAME    255
#define MAX_ADDRS   16
#define MAX_ENTRIES 1024
#define MAX_FDS     16
/* An answer with a TTL of 0 is still kept this long whatever dns_min_ttl
 * says: the callers waiting for it must get it, and a name asked for per
 * request must not cost a query per request. */
#define MIN_TTL 1.0

typedef struct entry_s entry_t;

struct sl_resolve_s {
    sl_queue_t link; /* in its entry's waiters, then in R.done */
    entry_t *entry;  /* NULL once the result is in */
    sl_resolve_done_t done;
    void *data;
    int status;
    const char *err;
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

struct entry_s {
    sl_queue_t link;    /* in R.cache, most recently used first */
    sl_queue_t waiters; /* sl_resolve_t waiting for the query */
    char name[MAX_NAME + 1];
    size_t len;
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t lens[MAX_ADDRS];
    int naddrs;
    int next;          /* the address handed out next */
    const char *error; /* the last answer was a failure (static string) */
    ev_tstamp expires; /* when the answer must be asked for again */
    unsigned querying : 1;
    unsigned answered : 1;
};

static struct {
    struct ev_loop *loop;
    ares_channel channel;
    int open;
    const sl_server_conf_t *conf;
    sl_queue_t cache;
    int nentries;
    ev_timer timer; /* c-ares's next timeout */
    ev_timer wake;  /* runs the callbacks of ended lookups */
    sl_queue_t done;
    struct {
        ev_io io;
        int fd;
    } fds[MAX_FDS];
} R;

static void arm_timer(void)
{
    struct timeval tv;
    ev_timer_stop(R.loop, &R.timer);
    if (ares_timeout(R.channel, NULL, &tv) != NULL) {
        ev_timer_set(&R.timer, (double)tv.tv_sec + (double)tv.tv_usec / 1e6, 0.);
        ev_timer_start(R.loop, &R.timer);
    }
}

double sl_resolver_ttl(const sl_server_conf_t *server, int ttl)
{
    double seconds = (double)ttl;
    if (server->dns_valid_ttl > 0)
        return SL_MAX(server->dns_valid_ttl / 1000., MIN_TTL);
    /* A bound of 0 is none: a conf that config.lua did not fill (sluice test's). */
    if (server->dns_max_ttl > 0)
        seconds = SL_MIN(seconds, server->dns_max_ttl / 1000.);
    return SL_MAX(seconds, SL_MAX(server->dns_min_ttl / 1000., MIN_TTL));
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    SL_UNUSED(loop);
    ares_process_fd(R.channel, (revents & EV_READ) ? io->fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? io->fd : ARES_SOCKET_BAD);
    arm_timer();
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(t);
    SL_UNUSED(revents);
    ares_process_fd(R.channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer();
}

/* c-ares says which of its sockets to watch, and for what. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    SL_UNUSED(data);
    int slot = -1, free_slot = -1;
    for (int i = 0; i < MAX_FDS; i++) {
        if (R.fds[i].fd == fd) {
            slot = i;
            break;
        }
        if (R.fds[i].fd < 0 && free_slot < 0)
            free_slot = i;
    }
    if (slot >= 0)
        ev_io_stop(R.loop, &R.fds[slot].io);
    if (!readable && !writable) {
        if (slot >= 0)
            R.fds[slot].fd = -1;
        return;
    }
    if (slot < 0) {
        if (free_slot < 0) {
            /* c-ares opens a socket per server and protocol: more than
             * MAX_FDS means a configuration far beyond what we expect. */
            sl_log(SL_LOG_ERR, "resolver: more than %d DNS sockets; lookups may time out", MAX_FDS);
            return;
        }
        slot = free_slot;
        R.fds[slot].fd = fd;
    }
    ev_io_set(&R.fds[slot].io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(R.loop, &R.fds[slot].io);
}

/* Fills q's result from e's answer; several addresses take turns. */
static void take_answer(entry_t *e, sl_resolve_t *q)
{
    if (e->error != NULL) {
        q->status = SL_ERROR;
        q->err = e->error;
        return;
    }
    q->status = SL_OK;
    q->addr = e->addrs[e->next];
    q->addrlen = e->lens[e->next];
    e->next = (e->next + 1) % e->naddrs;
}

static void wake_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(t);
    SL_UNUSED(revents);
    while (!sl_queue_empty(&R.done)) {
        sl_resolve_t *q = sl_queue_data(R.done.next, sl_resolve_t, link);
        sl_queue_remove(&q->link);
        q->done(q->data, q->status, q->status == SL_OK ? &q->addr : NULL, q->addrlen, q->err);
        free(q);
    }
}

/* Copies the addresses of one family from res into e; returns how many and
 * lowers *ttl to the smallest TTL among them. */
static int copy_family(entry_t *e, const struct ares_addrinfo *res, int family, int *ttl)
{
    int n = 0;
    for (const struct ares_addrinfo_node *a = res->nodes; a != NULL && n < MAX_ADDRS;
         a = a->ai_next) {
        if (a->ai_family != family || a->ai_addrlen > sizeof(e->addrs[0]))
            continue;
        memset(&e->addrs[n], 0, sizeof(e->addrs[n]));
        memcpy(&e->addrs[n], a->ai_addr, a->ai_addrlen);
        e->lens[n] = (socklen_t)a->ai_addrlen;
        *ttl = SL_MIN(*ttl, a->ai_ttl);
        n++;
    }
    return n;
}

static void addrinfo_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    SL_UNUSED(timeouts);
    if (status == ARES_EDESTRUCTION)
        return; /* sl_resolver_close frees the entries */
    entry_t *e = arg;
    const sl_server_conf_t *conf = R.conf;
    ev_tstamp now = ev_now(R.loop);
    e->querying = 0;

    if (status == ARES_SUCCESS) {
        entry_t fresh;
        int ttl = INT_MAX;
        int n = copy_family(&fresh, res, AF_INET, &ttl);
        if (n == 0)
            n = copy_family(&fresh, res, AF_INET6, &ttl);
        if (n > 0) {
            memcpy(e->addrs, fresh.addrs, sizeof(e->addrs[0]) * (size_t)n);
            memcpy(e->lens, fresh.lens, sizeof(e->lens[0]) * (size_t)n);
            e->naddrs = n;
            e->next = 0;
            e->error = NULL;
            e->expires = now + sl_resolver_ttl(conf, ttl);
        } else {
            status = ARES_ENODATA;
        }
    }
    if (res != NULL)
        ares_freeaddrinfo(res);

    if (status != ARES_SUCCESS) {
        int missing = status == ARES_ENOTFOUND || status == ARES_ENODATA;
        if (!missing && e->answered && e->error == NULL &&
            now < e->expires + conf->dns_stale_ttl / 1000.) {
            /* A server failure while refreshing: keep the stale answer until
             * its stale time ends, and ask again after dns_error_ttl. */
            sl_log(SL_LOG_WARN, "resolver: refreshing '%s' failed (%s); using the last answer",
                   e->name, ares_strerror(status));
            e->expires =
                SL_MIN(e->expires + conf->dns_stale_ttl / 1000., now + conf->dns_error_ttl / 1000.);
        } else {
            e->naddrs = 0;
            e->error = ares_strerror(status);
            e->expires = now + (missing ? conf->dns_not_found_ttl : conf->dns_error_ttl) / 1000.;
        }
    }
    e->answered = 1;

    while (!sl_queue_empty(&e->waiters)) {
        sl_resolve_t *q = sl_queue_data(e->waiters.next, sl_resolve_t, link);
        sl_queue_remove(&q->link);
        q->entry = NULL;
        take_answer(e, q);
        sl_queue_insert_tail(&R.done, &q->link);
    }
    if (!sl_queue_empty(&R.done) && !ev_is_active(&R.wake)) {
        ev_timer_set(&R.wake, 0., 0.);
        ev_timer_start(R.loop, &R.wake);
    }
}

static void query(entry_t *e)
{
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    /* ENVHOSTS: the hosts file is CARES_HOSTS (set from dns_hostsfile).
     * NOSORT: no RFC 6724 sorting, which would open a socket per address. */
    hints.ai_flags = ARES_AI_ENVHOSTS | ARES_AI_NOSORT;
    e->querying = 1;
    /* May call addrinfo_cb before it returns (a hosts-file answer). */
    ares_getaddrinfo(R.channel, e->name, NULL, &hints, addrinfo_cb, e);
    arm_timer();
}

/* The cached entry for name, moved to the front; NULL when there is none. */
static entry_t *find(const char *name, size_t len)
{
    for (sl_queue_t *l = R.cache.next; l != &R.cache; l = l->next) {
        entry_t *e = sl_queue_data(l, entry_t, link);
        if (e->len == len && strncasecmp(e->name, name, len) == 0) {
            sl_queue_remove(&e->link);
            sl_queue_insert_head(&R.cache, &e->link);
            return e;
        }
    }
    return NULL;
}

/* A new entry at the front of the cache; when it is full the least recently
 * used idle entry makes room. NULL when out of memory or all are busy. */
static entry_t *entry_new(const char *name, size_t len)
{
    entry_t *e = NULL;
    if (R.nentries >= MAX_ENTRIES) {
        for (sl_queue_t *l = R.cache.prev; l != &R.cache; l = l->prev) {
            entry_t *old = sl_queue_data(l, entry_t, link);
            if (!old->querying && sl_queue_empty(&old->waiters)) {
                sl_queue_remove(&old->link);
                e = old;
                break;
            }
        }
        if (e == NULL)
            return NULL;
    } else {
        if ((e = malloc(sizeof(*e))) == NULL)
            return NULL;
        R.nentries++;
    }
    memset(e, 0, sizeof(*e));
    for (size_t i = 0; i < len; i++)
        e->name[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] | 0x20 : name[i]);
    e->len = len;
    sl_queue_init(&e->waiters);
    sl_queue_insert_head(&R.cache, &e->link);
    return e;
}

int sl_resolve(const char *name, size_t len, struct sockaddr_storage *addr, socklen_t *addrlen,
               sl_resolve_done_t done, void *data, sl_resolve_t **handle, const char **err)
{
    if (!R.open) {
        *err = "no DNS resolver here (lookups run in a worker)";
        return SL_ERROR;
    }
    if (len == 0 || len > MAX_NAME || memchr(name, '\0', len) != NULL) {
        *err = "invalid host name";
        return SL_ERROR;
    }
    entry_t *e = find(name, len);
    if (e != NULL && e->answered) {
        ev_tstamp now = ev_now(R.loop);
        int fresh = now < e->expires;
        int stale_ok = e->error == NULL && now < e->expires + R.conf->dns_stale_ttl / 1000.;
        if (fresh || stale_ok) {
            if (!fresh && !e->querying)
                query(e); /* refresh in the background; this caller gets the stale answer */
            sl_resolve_t q;
            take_answer(e, &q);
            if (q.status != SL_OK) {
                *err = q.err;
                return SL_ERROR;
            }
            *addr = q.addr;
            *addrlen = q.addrlen;
            return SL_OK;
        }
    }
    if (e == NULL && (e = entry_new(name, len)) == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    sl_resolve_t *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    q->entry = e;
    q->done = done;
    q->data = data;
    sl_queue_insert_tail(&e->waiters, &q->link);
    *handle = q;
    if (!e->querying)
        query(e);
    return SL_AGAIN;
}

void sl_resolve_cancel(sl_resolve_t *q)
{
    if (!R.open)
        return; /* sl_resolver_close freed it */
    sl_queue_remove(&q->link);
    free(q);
}

/* A channel with server's dns_* settings; sock_cb NULL for a blocking one. */
static int channel_open(ares_channel *ch, const sl_server_conf_t *server,
                        ares_sock_state_cb sock_cb, const char **err)
{
    static char csv[4096];
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        *err = ares_strerror(rc);
        return SL_ERROR;
    }
    if (server->dns_hostsfile != NULL)
        setenv("CARES_HOSTS", server->dns_hostsfile, 1);

    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.timeout = 2000; /* ms per try */
    opts.tries = 2;
    opts.lookups = (char *)"fb"; /* the hosts file, then DNS */
    int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS;
    if (sock_cb != NULL) {
        opts.sock_state_cb = sock_cb;
        mask |= ARES_OPT_SOCK_STATE_CB;
    }
    if ((rc = ares_init_options(ch, &opts, mask)) != ARES_SUCCESS) {
        *err = ares_strerror(rc);
        return SL_ERROR;
    }
    if (server->ndns_resolver > 0) {
        size_t used = 0;
        for (size_t i = 0; i < server->ndns_resolver; i++) {
            int n = snprintf(csv + used, sizeof(csv) - used, "%s%s", i ? "," : "",
                             server->dns_resolver[i]);
            if (n < 0 || (size_t)n >= sizeof(csv) - used) {
                *err = "too many dns_resolver entries";
                ares_destroy(*ch);
                return SL_ERROR;
            }
            used += (size_t)n;
        }
        if ((rc = ares_set_servers_ports_csv(*ch, csv)) != ARES_SUCCESS) {
            *err = ares_strerror(rc);
            ares_destroy(*ch);
            return SL_ERROR;
        }
    }
    return SL_OK;
}

int sl_resolver_init(struct ev_loop *loop, const sl_server_conf_t *server, const char **err)
{
    if (R.open)
        return SL_OK;
    if (channel_open(&R.channel, server, sock_state_cb, err) != SL_OK)
        return SL_ERROR;
    R.loop = loop;
    R.conf = server;
    sl_queue_init(&R.cache);
    sl_queue_init(&R.done);
    R.nentries = 0;
    for (int i = 0; i < MAX_FDS; i++) {
        ev_init(&R.fds[i].io, io_cb);
        R.fds[i].fd = -1;
    }
    ev_init(&R.timer, timer_cb);
    ev_init(&R.wake, wake_cb);
    R.open = 1;
    return SL_OK;
}

int sl_addr_literal(const char *text, size_t len, int port, struct sockaddr_storage *ss,
                    socklen_t *sslen)
{
    char buf[INET6_ADDRSTRLEN];
    if (len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, text, len);
    buf[len] = '\0';
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *sslen = sizeof(*sin);
        return 1;
    }
    if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *sslen = sizeof(*sin6);
        return 1;
    }
    return 0;
}

/* --- blocking lookups, for the master at load ------------------------------------ */

typedef struct {
    int done;
    int status;
    struct sockaddr_storage *addrs;
    socklen_t *lens;
    size_t max, n;
    int ttl; /* the smallest TTL of the addresses taken */
} sync_query_t;

static void sync_add(sync_query_t *sq, const struct ares_addrinfo *res, int family)
{
    for (const struct ares_addrinfo_node *a = res->nodes; a != NULL && sq->n < sq->max;
         a = a->ai_next) {
        if (a->ai_family != family || a->ai_addrlen > sizeof(sq->addrs[0]))
            continue;
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, a->ai_addr, a->ai_addrlen);
        int seen = 0;
        for (size_t i = 0; i < sq->n && !seen; i++)
            seen = sq->lens[i] == a->ai_addrlen && memcmp(&sq->addrs[i], &ss, a->ai_addrlen) == 0;
        if (!seen) {
            sq->addrs[sq->n] = ss;
            sq->lens[sq->n++] = (socklen_t)a->ai_addrlen;
            sq->ttl = SL_MIN(sq->ttl, a->ai_ttl);
        }
    }
}

static void sync_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    SL_UNUSED(timeouts);
    sync_query_t *sq = arg;
    sq->done = 1;
    sq->status = status;
    if (status == ARES_SUCCESS) {
        /* IPv4 first, as getaddrinfo orders them. */
        sync_add(sq, res, AF_INET);
        sync_add(sq, res, AF_INET6);
    }
    if (res != NULL)
        ares_freeaddrinfo(res);
}

int sl_resolve_all(const sl_server_conf_t *server, const char *name, struct sockaddr_storage *addrs,
                   socklen_t *lens, size_t max, size_t *n, const char **err)
{
    ares_channel ch;
    if (channel_open(&ch, server, NULL, err) != SL_OK)
        return SL_ERROR;
    sync_query_t sq = {0, 0, addrs, lens, max, 0, INT_MAX};
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = ARES_AI_ENVHOSTS | ARES_AI_NOSORT;
    ares_getaddrinfo(ch, name, NULL, &hints, sync_cb, &sq);
    while (!sq.done) {
        fd_set rfds, wfds;
        FD_ZERO(&rfds);
        FD_ZERO(&wfds);
        int nfds = ares_fds(ch, &rfds, &wfds);
        struct timeval tv, *tvp = ares_timeout(ch, NULL, &tv);
        if (nfds == 0 && tvp == NULL)
            break;
        if (select(nfds, &rfds, &wfds, NULL, tvp) < 0 && errno != EINTR)
            break;
        ares_process(ch, &rfds, &wfds);
    }
    ares_destroy(ch);
    ares_library_cleanup();
    if (!sq.done || sq.status != ARES_SUCCESS) {
        *err = sq.done ? ares_strerror(sq.status) : "the lookup did not finish";
        return SL_ERROR;
    }
    if (sq.n == 0) {
        *err = ares_strerror(ARES_ENODATA);
        return SL_ERROR;
    }
    *n = sq.n;
    return SL_OK;
}

void sl_resolver_close(void)
{
    if (!R.open)
        return;
    R.open = 0;
    ev_timer_stop(R.loop, &R.timer);
    ev_timer_stop(R.loop, &R.wake);
    ares_destroy(R.channel); /* its callbacks see ARES_EDESTRUCTION */
    for (int i = 0; i < MAX_FDS; i++) {
        ev_io_stop(R.loop, &R.fds[i].io);
        R.fds[i].fd = -1;
    }
    while (!sl_queue_empty(&R.cache)) {
        entry_t *e = sl_queue_data(R.cache.next, entry_t, link);
        while (!sl_queue_empty(&e->waiters)) {
            sl_resolve_t *q = sl_queue_data(e->waiters.next, sl_resolve_t, link);
            sl_queue_remove(&q->link);
            free(q);
        }
        sl_queue_remove(&e->link);
        free(e);
    }
    while (!sl_queue_empty(&R.done)) {
        sl_resolve_t *q = sl_queue_data(R.done.next, sl_resolve_t, link);
        sl_queue_remove(&q->link);
        free(q);
    }
    R.nentries = 0;
    ares_library_cleanup();
}

/* --- every address of a name, on a channel the caller polls (the master) ---------- */

/* The master has no event loop: it polls c-ares's sockets itself next to its
 * signals (master.c), so a slow or silent DNS server never holds up the
 * supervision of the workers. */
static struct {
    ares_channel channel;
    int open;
    struct {
        int fd;
        short events;
    } fds[MAX_FDS];
} P;

typedef struct {
    sl_resolve_all_done_t done;
    void *data;
    size_t max;
} poll_query_t;

static void poll_sock_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    SL_UNUSED(data);
    int slot = -1, free_slot = -1;
    for (int i = 0; i < MAX_FDS; i++) {
        if (P.fds[i].fd == fd) {
            slot = i;
            break;
        }
        if (P.fds[i].fd < 0 && free_slot < 0)
            free_slot = i;
    }
    if (!readable && !writable) {
        if (slot >= 0)
            P.fds[slot].fd = -1;
        return;
    }
    if (slot < 0) {
        if (free_slot < 0) {
            sl_log(SL_LOG_ERR, "resolver: more than %d DNS sockets; lookups may time out", MAX_FDS);
            return;
        }
        slot = free_slot;
        P.fds[slot].fd = fd;
    }
    P.fds[slot].events = (short)((readable ? POLLIN : 0) | (writable ? POLLOUT : 0));
}

int sl_resolver_poll_open(const sl_server_conf_t *server, const char **err)
{
    if (P.open)
        return SL_OK;
    for (int i = 0; i < MAX_FDS; i++)
        P.fds[i].fd = -1;
    if (channel_open(&P.channel, server, poll_sock_cb, err) != SL_OK)
        return SL_ERROR;
    P.open = 1;
    return SL_OK;
}

void sl_resolver_poll_close(void)
{
    if (!P.open)
        return;
    P.open = 0;
    ares_destroy(P.channel); /* pending queries end with ARES_EDESTRUCTION */
    for (int i = 0; i < MAX_FDS; i++)
        P.fds[i].fd = -1;
    ares_library_cleanup();
}

static void poll_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    SL_UNUSED(timeouts);
    poll_query_t *pq = arg;
    struct sockaddr_storage addrs[64];
    socklen_t lens[64];
    sync_query_t sq = {1, status, addrs, lens, SL_MIN(pq->max, SL_NELEMS(addrs)), 0, INT_MAX};
    if (status == ARES_SUCCESS) {
        sync_add(&sq, res, AF_INET);
        sync_add(&sq, res, AF_INET6);
    }
    if (res != NULL)
        ares_freeaddrinfo(res);
    if (status == ARES_EDESTRUCTION) {
        free(pq); /* the channel is going away: nobody waits any more */
        return;
    }
    int rc = SL_OK;
    const char *err = NULL;
    if (status == ARES_SUCCESS && sq.n == 0)
        status = ARES_ENODATA;
    if (status != ARES_SUCCESS) {
        rc = status == ARES_ENOTFOUND || status == ARES_ENODATA ? SL_DECLINED : SL_ERROR;
        err = ares_strerror(status);
        sq.n = 0;
    }
    pq->done(pq->data, rc, addrs, lens, sq.n, sq.ttl, err);
    free(pq);
}

int sl_resolver_poll_start(const char *name, size_t max, sl_resolve_all_done_t done, void *data)
{
    if (!P.open)
        return SL_ERROR;
    poll_query_t *pq = malloc(sizeof(*pq));
    if (pq == NULL)
        return SL_ERROR;
    pq->done = done;
    pq->data = data;
    pq->max = max;
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = ARES_AI_ENVHOSTS | ARES_AI_NOSORT;
    ares_getaddrinfo(P.channel, name, NULL, &hints, poll_cb, pq);
    return SL_OK;
}

int sl_resolver_poll_fds(struct pollfd *fds, int max)
{
    int n = 0;
    for (int i = 0; P.open && i < MAX_FDS && n < max; i++) {
        if (P.fds[i].fd < 0)
            continue;
        fds[n].fd = P.fds[i].fd;
        fds[n].events = P.fds[i].events;
        fds[n].revents = 0;
        n++;
    }
    return n;
}

int sl_resolver_poll_timeout(void)
{
    struct timeval tv;
    if (!P.open || ares_timeout(P.channel, NULL, &tv) == NULL)
        return -1;
    return (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
}

void sl_resolver_poll_process(const struct pollfd *fds, int n)
{
    if (!P.open)
        return;
    for (int i = 0; i < n; i++) {
        if (fds[i].revents == 0)
            continue;
        int rd = (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
        int wr = (fds[i].revents & (POLLOUT | POLLERR)) != 0;
        ares_process_fd(P.channel, rd ? fds[i].fd : ARES_SOCKET_BAD,
                        wr ? fds[i].fd : ARES_SOCKET_BAD);
    }
    /* Retransmissions and timeouts. */
    ares_process_fd(P.channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

/* --- Lua's lookups (sluice.service.set_target, sluice.redis) ---------------------- */

/* A lookup a Lua task waits for; on the task's wait list until Lua takes
 * the answer (or the task ends). */
typedef struct {
    sl_wait_t wait;
    sl_resolve_t *q; /* while the query runs */
    int done;
    int status;
    const char *err;
    struct sockaddr_storage addr;
} dns_wait_t;

static void dns_cancel(sl_wait_t *w)
{
    dns_wait_t *d = (dns_wait_t *)w;
    if (d->q != NULL)
        sl_resolve_cancel(d->q);
    free(d);
}

static void dns_done(void *data, int status, const struct sockaddr_storage *addr, socklen_t addrlen,
                     const char *err)
{
    SL_UNUSED(addrlen);
    dns_wait_t *d = data;
    d->q = NULL;
    d->done = 1;
    d->status = status;
    d->err = err;
    if (status == SL_OK)
        d->addr = *addr;
    sl_lua_wake(d->wait.task, d->wait.id);
}

/* Writes addr's text form into buf. */
static int addr_text(const struct sockaddr_storage *addr, char *buf, size_t cap, const char **err)
{
    const void *a = addr->ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)addr)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)addr)->sin_addr;
    if (inet_ntop(addr->ss_family, a, buf, (socklen_t)cap) == NULL) {
        *err = "address does not fit";
        return SL_ERROR;
    }
    return SL_OK;
}

SL_EXPORT int sl_ffi_dns_resolve(sl_lua_task_t *t, int id, const char *name, size_t len, char *buf,
                                 size_t cap, const char **err)
{
    struct sockaddr_storage addr;
    socklen_t addrlen;
    dns_wait_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    int rc = sl_resolve(name, len, &addr, &addrlen, dns_done, d, &d->q, err);
    if (rc == SL_AGAIN) {
        sl_lua_wait_add(t, &d->wait, id, dns_cancel);
        return SL_AGAIN;
    }
    free(d);
    if (rc != SL_OK)
        return SL_ERROR;
    return addr_text(&addr, buf, cap, err);
}

SL_EXPORT int sl_ffi_dns_result(sl_lua_task_t *t, int id, char *buf, size_t cap, const char **err)
{
    for (sl_queue_t *q = t->waits.next; q != &t->waits; q = q->next) {
        sl_wait_t *w = sl_queue_data(q, sl_wait_t, link);
        if (w->id != id || w->cancel != dns_cancel)
            continue;
        dns_wait_t *d = (dns_wait_t *)w;
        if (!d->done)
            break;
        int rc = d->status == SL_OK ? addr_text(&d->addr, buf, cap, err) : SL_ERROR;
        if (d->status != SL_OK)
            *err = d->err;
        sl_lua_wait_done(w);
        free(d);
        return rc;
    }
    *err = "no such lookup";
    return SL_ERROR;
}
