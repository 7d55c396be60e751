/* health.c: target health in shared memory: the state machine, passive reports and active probes.
 *
 * Layout of the shared region (one anonymous MAP_SHARED mapping, made by the
 * master before fork, inherited by every worker and every respawned one):
 *
 *   sl_health_upstream_t ups[cf->nupstreams]      totals per upstream
 *   sl_health_target_t   targets[sum of targets]  upstream u's targets start
 *                                                 at u->health_base
 *
 * Only upstreams with checks get target slots. Every field is an atomic,
 * updated with single atomic operations: no lock, so a worker killed at any
 * instruction leaves a consistent state (at worst one count lost). A
 * transition is the atomic change of a bit of `down`; the process whose
 * fetch_or / fetch_and changed it logs it and adjusts the upstream's totals,
 * so each transition is logged once however many workers see it.
 *
 * Active probes: each target has one prober, elected through a lease in its
 * slot (prober = pid, prober_seen = the prober's last tick). A worker claims
 * the targets that hash to its id when they have no live prober; any worker
 * claims a target whose prober has not ticked for LEASE_ORPHAN_MS (its worker
 * died and was not respawned in time). Each worker's 100 ms tick probes its
 * targets that are due, at most `concurrency` at once per upstream, and ends
 * the ejections of its targets that are over. */
#include "health.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "balancer.h"
#include "log.h"
#include "sl_ffi.h"
#include "targets.h"
#include "worker.h"

#define TICK_SECONDS     0.1
#define LEASE_MS         1000 /* the preferred worker takes over a lease this stale */
#define LEASE_ORPHAN_MS  3000 /* any worker takes over a lease this stale */
#define PROBE_HEAD_MAX   4096
#define PROBE_STATUS_MAX 64 /* bytes read for the status line */

static const sl_config_t *health_cf; /* for the PDK; set by sl_health_create */
static void *shm;
static size_t shm_size;
static sl_health_upstream_t *shm_ups;
static sl_health_target_t *shm_targets;

int64_t sl_health_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sl_health_create(sl_config_t *cf)
{
    size_t ntargets = 0;
    for (size_t i = 0; i < cf->nupstreams; i++) {
        sl_upstream_t *u = cf->upstreams[i];
        u->health_base = ntargets;
        u->health.total_weight = 0;
        for (size_t j = 0; j < u->ntargets; j++)
            u->health.total_weight += u->targets[j].weight;
        if (u->health.enabled)
            ntargets += u->ntargets;
    }
    sl_health_destroy();
    health_cf = cf;
    if (ntargets == 0)
        return SL_OK;
    size_t size =
        cf->nupstreams * sizeof(sl_health_upstream_t) + ntargets * sizeof(sl_health_target_t);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        sl_log(SL_LOG_ERR, "cannot map %zu bytes for health checks: %s", size, strerror(errno));
        return SL_ERROR;
    }
    /* Fresh anonymous pages are zero: every target starts healthy, with no
     * prober. A lease seen now leaves each target to its preferred worker
     * for LEASE_ORPHAN_MS before any worker may take it. */
    shm = p;
    shm_size = size;
    shm_ups = p;
    shm_targets = (sl_health_target_t *)(shm_ups + cf->nupstreams);
    int64_t now = sl_health_now();
    for (size_t i = 0; i < ntargets; i++)
        atomic_store(&shm_targets[i].prober_seen, now);
    /* A name's slots without an address start absent. */
    for (size_t i = 0; i < cf->nupstreams; i++) {
        sl_upstream_t *u = cf->upstreams[i];
        for (size_t j = 0; u->health.enabled && j < u->ntargets; j++)
            if (u->targets[j].dns_slot != 0 && u->targets[j].addrlen == 0)
                sl_health_set_present(u, j, 0);
    }
    return SL_OK;
}

void sl_health_destroy(void)
{
    if (shm != NULL)
        munmap(shm, shm_size);
    shm = NULL;
    shm_ups = NULL;
    shm_targets = NULL;
    health_cf = NULL;
}

sl_health_target_t *sl_health_target(const sl_upstream_t *u, size_t i)
{
    if (shm == NULL || !u->health.enabled || i >= u->ntargets)
        return NULL;
    return &shm_targets[u->health_base + i];
}

sl_health_upstream_t *sl_health_upstream(const sl_upstream_t *u)
{
    if (shm == NULL || !u->health.enabled)
        return NULL;
    return &shm_ups[u->index];
}

int sl_health_upstream_ok(const sl_upstream_t *u)
{
    sl_health_upstream_t *hu = sl_health_upstream(u);
    if (hu == NULL || u->health.threshold <= 0)
        return 1;
    int total =
        u->health.total_weight - atomic_load_explicit(&hu->absent_weight, memory_order_relaxed);
    if (total <= 0)
        return 1; /* every weight 0: the balancer answers for it */
    int down = atomic_load_explicit(&hu->down_weight, memory_order_relaxed) -
               atomic_load_explicit(&hu->absent_weight, memory_order_relaxed);
    return (double)(total - down) * 100.0 >= u->health.threshold * (double)total;
}

const char *sl_health_name(const sl_upstream_t *u, size_t i)
{
    sl_health_target_t *h = sl_health_target(u, i);
    if (h == NULL)
        return "HEALTHCHECKS_OFF";
    uint32_t down = atomic_load(&h->down);
    if (down & SL_HEALTH_EJECTED)
        return "EJECTED";
    if (down & SL_HEALTH_UNHEALTHY)
        return "UNHEALTHY";
    return "HEALTHY";
}

/* --- the state machine ---------------------------------------------------- */

/* "host:port", and for a name's slot the address it stands for now. */
static void target_text(const sl_upstream_t *u, size_t i, char *buf, size_t len)
{
    const sl_target_t *t = &u->targets[i];
    int n =
        snprintf(buf, len, strchr(t->host, ':') != NULL ? "[%s]:%u" : "%s:%u", t->host, t->port);
    struct sockaddr_storage ss;
    socklen_t sslen;
    char ip[INET6_ADDRSTRLEN];
    if (t->dns_slot == 0 || n < 0 || (size_t)n >= len || !sl_targets_addr(u, i, &ss, &sslen))
        return;
    const void *a = ss.ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)&ss)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)&ss)->sin_addr;
    if (inet_ntop(ss.ss_family, a, ip, sizeof(ip)) != NULL)
        snprintf(buf + n, len - (size_t)n, " (%s)", ip);
}

/* Sets or clears one `down` bit; returns 1 when this call changed it. The
 * caller that changed it logs the transition; the upstream's down_weight
 * follows the target's usable/unusable edge. */
static int set_down(const sl_upstream_t *u, size_t i, uint32_t bit, int on)
{
    sl_health_target_t *h = sl_health_target(u, i);
    sl_health_upstream_t *hu = sl_health_upstream(u);
    uint32_t old = on ? atomic_fetch_or(&h->down, bit) : atomic_fetch_and(&h->down, ~bit);
    if (on == !!(old & bit))
        return 0;
    uint32_t now = on ? old | bit : old & ~bit;
    if ((old == 0) != (now == 0))
        atomic_fetch_add(&hu->down_weight, now ? u->targets[i].weight : -u->targets[i].weight);
    if (bit == SL_HEALTH_EJECTED)
        atomic_fetch_add(&hu->nejected, on ? 1u : (uint32_t)-1);
    return 1;
}

static void reset_counters(sl_health_target_t *h)
{
    atomic_store(&h->successes, 0);
    atomic_store(&h->http_failures, 0);
    atomic_store(&h->tcp_failures, 0);
    atomic_store(&h->timeouts, 0);
}

/* Ejects target i when max_ejection_percent leaves room (always room for
 * one, as in Envoy). The n-th ejection in a row lasts n x base_ejection_time,
 * capped at max_ejection_time; a target that stayed in for max_ejection_time
 * since its last ejection starts again from base. */
static void eject(const sl_upstream_t *u, size_t i, const char *why, int64_t now)
{
    const sl_healthchecks_t *hc = &u->health;
    sl_health_target_t *h = sl_health_target(u, i);
    sl_health_upstream_t *hu = sl_health_upstream(u);
    if (atomic_load(&h->down) & SL_HEALTH_EJECTED)
        return;
    size_t present = u->ntargets - atomic_load(&hu->nabsent);
    size_t allowed = present * (size_t)hc->max_ejection_percent / 100;
    if (allowed < 1)
        allowed = 1;
    if (atomic_load(&hu->nejected) >= allowed) {
        SL_LOG(SL_LOG_INFO, "upstream %s: not ejecting a target (%s): max_ejection_percent %d%%",
               u->name, why, hc->max_ejection_percent);
        return;
    }
    if (now - atomic_load(&h->last_ejection_end) > hc->max_ejection_time)
        atomic_store(&h->ejections, 0);
    uint32_t n = atomic_fetch_add(&h->ejections, 1) + 1;
    int64_t ms = (int64_t)hc->base_ejection_time * n;
    int64_t cap = hc->max_ejection_time > hc->base_ejection_time ? hc->max_ejection_time
                                                                 : hc->base_ejection_time;
    if (ms > cap)
        ms = cap;
    atomic_store(&h->ejected_until, now + ms);
    const char *from = atomic_load(&h->down) & SL_HEALTH_UNHEALTHY ? "unhealthy" : "healthy";
    if (set_down(u, i, SL_HEALTH_EJECTED, 1)) {
        char t[128];
        target_text(u, i, t, sizeof(t));
        sl_log(SL_LOG_WARN, "upstream %s target %s: %s -> ejected for %.1fs (%s, ejection %u)",
               u->name, t, from, (double)ms / 1000, why, n);
    }
}

int sl_health_expire(const sl_upstream_t *u, int64_t now)
{
    int ended = 0;
    for (size_t i = 0; i < u->ntargets; i++) {
        sl_health_target_t *h = sl_health_target(u, i);
        if (h == NULL)
            return 0;
        if (!(atomic_load_explicit(&h->down, memory_order_relaxed) & SL_HEALTH_EJECTED) ||
            atomic_load(&h->ejected_until) > now)
            continue;
        atomic_store(&h->last_ejection_end, now);
        atomic_store(&h->consecutive_5xx, 0);
        atomic_store(&h->consecutive_gateway, 0);
        if (set_down(u, i, SL_HEALTH_EJECTED, 0)) {
            char t[128];
            target_text(u, i, t, sizeof(t));
            sl_log(SL_LOG_NOTICE, "upstream %s target %s: ejected -> %s (ejection time over)",
                   u->name, t, atomic_load(&h->down) ? "unhealthy" : "healthy");
            ended++;
        }
    }
    return ended;
}

/* Outlier detection counts real traffic only: consecutive 5xx (connect
 * errors and timeouts count as 5xx, as Envoy's do) and consecutive gateway
 * failures (502, 503, 504, connect errors and timeouts). */
static void count_outlier(const sl_upstream_t *u, size_t i, int what, int status, int64_t now)
{
    const sl_healthchecks_t *hc = &u->health;
    sl_health_target_t *h = sl_health_target(u, i);
    int error = what != SL_HEALTH_STATUS;
    char why[64];
    if (hc->consecutive_5xx > 0) {
        if (error || status >= 500) {
            uint32_t n = atomic_fetch_add(&h->consecutive_5xx, 1) + 1;
            if (n >= (uint32_t)hc->consecutive_5xx) {
                atomic_store(&h->consecutive_5xx, 0);
                snprintf(why, sizeof(why), "%u consecutive 5xx", n);
                eject(u, i, why, now);
            }
        } else if (atomic_load_explicit(&h->consecutive_5xx, memory_order_relaxed) != 0) {
            atomic_store(&h->consecutive_5xx, 0);
        }
    }
    if (hc->consecutive_gateway_failure > 0) {
        if (error || status == 502 || status == 503 || status == 504) {
            uint32_t n = atomic_fetch_add(&h->consecutive_gateway, 1) + 1;
            if (n >= (uint32_t)hc->consecutive_gateway_failure) {
                atomic_store(&h->consecutive_gateway, 0);
                snprintf(why, sizeof(why), "%u consecutive gateway failures", n);
                eject(u, i, why, now);
            }
        } else if (atomic_load_explicit(&h->consecutive_gateway, memory_order_relaxed) != 0) {
            atomic_store(&h->consecutive_gateway, 0);
        }
    }
}

/* Counts one failure in counter c against limit (0: this kind never makes a
 * target unhealthy). */
static void count_failure(const sl_upstream_t *u, size_t i, _Atomic uint32_t *c, int limit,
                          const char *what)
{
    sl_health_target_t *h = sl_health_target(u, i);
    if (atomic_load_explicit(&h->successes, memory_order_relaxed) != 0)
        atomic_store(&h->successes, 0);
    if (limit <= 0 || (atomic_load(&h->down) & SL_HEALTH_UNHEALTHY))
        return;
    uint32_t n = atomic_fetch_add(c, 1) + 1;
    if (n < (uint32_t)limit)
        return;
    if (set_down(u, i, SL_HEALTH_UNHEALTHY, 1)) {
        reset_counters(h);
        char t[128];
        target_text(u, i, t, sizeof(t));
        sl_log(SL_LOG_WARN, "upstream %s target %s: healthy -> unhealthy (%u %s)", u->name, t, n,
               what);
    }
}

void sl_health_report(const sl_upstream_t *u, size_t i, int source, int what, int status,
                      int64_t now)
{
    const sl_healthchecks_t *hc = &u->health;
    sl_health_target_t *h = sl_health_target(u, i);
    if (h == NULL || (atomic_load_explicit(&h->down, memory_order_relaxed) & SL_HEALTH_ABSENT))
        return; /* a try that started before its slot lost its address */
    const sl_health_rules_t *r = source == SL_HEALTH_ACTIVE ? &hc->active : &hc->passive;
    int type = source == SL_HEALTH_ACTIVE ? hc->active_type : hc->passive_type;

    if (source == SL_HEALTH_PASSIVE)
        count_outlier(u, i, what, status, now);

    if (what == SL_HEALTH_TCP_ERROR) {
        count_failure(u, i, &h->tcp_failures, r->tcp_failures, "tcp failures");
        return;
    }
    if (what == SL_HEALTH_TIMEOUT) {
        count_failure(u, i, &h->timeouts, r->timeouts, "timeouts");
        return;
    }
    /* A status: a tcp check only knows that the connection worked. */
    int good = type == SL_CHECK_TCP || sl_statuses_has(&r->healthy_statuses, status);
    int bad = type != SL_CHECK_TCP && sl_statuses_has(&r->unhealthy_statuses, status);
    if (bad) {
        count_failure(u, i, &h->http_failures, r->http_failures, "http failures");
        return;
    }
    if (!good)
        return;
    if (atomic_load_explicit(&h->http_failures, memory_order_relaxed) != 0 ||
        atomic_load_explicit(&h->tcp_failures, memory_order_relaxed) != 0 ||
        atomic_load_explicit(&h->timeouts, memory_order_relaxed) != 0) {
        atomic_store(&h->http_failures, 0);
        atomic_store(&h->tcp_failures, 0);
        atomic_store(&h->timeouts, 0);
    }
    if (!(atomic_load_explicit(&h->down, memory_order_relaxed) & SL_HEALTH_UNHEALTHY) ||
        r->successes <= 0)
        return;
    uint32_t n = atomic_fetch_add(&h->successes, 1) + 1;
    if (n < (uint32_t)r->successes)
        return;
    if (set_down(u, i, SL_HEALTH_UNHEALTHY, 0)) {
        reset_counters(h);
        char t[128];
        target_text(u, i, t, sizeof(t));
        sl_log(SL_LOG_NOTICE, "upstream %s target %s: unhealthy -> %s (%u successes)", u->name, t,
               atomic_load(&h->down) ? "ejected" : "healthy", n);
    }
}

void sl_health_set_present(const sl_upstream_t *u, size_t i, int present)
{
    sl_health_target_t *h = sl_health_target(u, i);
    sl_health_upstream_t *hu = sl_health_upstream(u);
    if (h == NULL)
        return;
    int weight = u->targets[i].weight;
    /* Absent before the other bits clear and present only after, so that
     * an absent slot's usable edge (and down_weight) moves once, with the
     * ABSENT bit. A present slot whose address is replaced at once simply
     * becomes healthy. */
    if (!present && set_down(u, i, SL_HEALTH_ABSENT, 1)) {
        atomic_fetch_add(&hu->absent_weight, weight);
        atomic_fetch_add(&hu->nabsent, 1);
    }
    set_down(u, i, SL_HEALTH_UNHEALTHY, 0);
    set_down(u, i, SL_HEALTH_EJECTED, 0);
    reset_counters(h);
    atomic_store(&h->consecutive_5xx, 0);
    atomic_store(&h->consecutive_gateway, 0);
    atomic_store(&h->ejections, 0);
    atomic_store(&h->ejected_until, 0);
    atomic_store(&h->last_ejection_end, 0);
    if (present && set_down(u, i, SL_HEALTH_ABSENT, 0)) {
        atomic_fetch_sub(&hu->absent_weight, weight);
        atomic_fetch_sub(&hu->nabsent, 1);
    }
}

/* --- active probes ----------------------------------------------------------- */

typedef struct probe_s probe_t;

/* A worker's view of one upstream it may probe. */
typedef struct {
    const sl_upstream_t *u;
    int64_t *next; /* per target: when its next probe is due (ms) */
    int inflight;
} prober_ups_t;

struct probe_s {
    ev_io io;
    ev_timer timer;
    prober_ups_t *pu;
    size_t target;
    int fd;
    size_t sent, len; /* request bytes sent, total */
    size_t got;       /* response bytes read into buf */
    char buf[PROBE_HEAD_MAX];
    probe_t *next; /* in the worker's list of probes in flight */
};

typedef struct {
    ev_timer tick;
    sl_worker_t *w;
    prober_ups_t *ups;
    size_t nups;
    probe_t *probes;
    pid_t pid;
} prober_t;

static prober_t *prober;

static void probe_end(probe_t *p, int what, int status)
{
    struct ev_loop *loop = prober->w->loop;
    ev_io_stop(loop, &p->io);
    ev_timer_stop(loop, &p->timer);
    close(p->fd);
    for (probe_t **pp = &prober->probes; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    p->pu->inflight--;
    sl_health_report(p->pu->u, p->target, SL_HEALTH_ACTIVE, what, status, sl_health_now());
    free(p);
}

/* Returns the status of a complete "HTTP/1.x NNN" line in buf, 0 when more is
 * needed, -1 when it is not HTTP. */
static int parse_status(const char *buf, size_t len)
{
    if (len < 12)
        return memchr(buf, '\n', len) != NULL ? -1 : 0;
    if (memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return -1;
    int status = 0;
    for (int k = 9; k < 12; k++) {
        if (buf[k] < '0' || buf[k] > '9')
            return -1;
        status = status * 10 + (buf[k] - '0');
    }
    return status;
}

static void probe_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    SL_UNUSED(revents);
    probe_t *p = io->data;
    const sl_healthchecks_t *hc = &p->pu->u->health;
    if (p->len == 0 || p->sent < p->len) {
        int err = 0;
        socklen_t elen = sizeof(err);
        if (p->sent == 0 && p->len == 0) {
            getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
            if (err != 0) {
                probe_end(p, SL_HEALTH_TCP_ERROR, 0);
                return;
            }
            if (hc->active_type == SL_CHECK_TCP) {
                probe_end(p, SL_HEALTH_STATUS, 0);
                return;
            }
            /* Host as Kong's checker sends it: the upstream's host_header,
             * else the target's host, without the port. */
            const sl_upstream_t *u = p->pu->u;
            const char *host = u->host_header != NULL ? u->host_header : u->targets[p->target].host;
            int v6 = u->host_header == NULL && strchr(host, ':') != NULL;
            int n = snprintf(p->buf, sizeof(p->buf),
                             "GET %s HTTP/1.0\r\nHost: %s%s%s\r\nUser-Agent: sluice/%s "
                             "(health check)\r\nConnection: close\r\n%s\r\n",
                             hc->http_path, v6 ? "[" : "", host, v6 ? "]" : "", SL_VERSION,
                             hc->headers != NULL ? hc->headers : "");
            p->len = n > 0 && (size_t)n < sizeof(p->buf) ? (size_t)n : 0;
            if (p->len == 0) {
                probe_end(p, SL_HEALTH_TCP_ERROR, 0);
                return;
            }
        }
        ssize_t n = send(p->fd, p->buf + p->sent, p->len - p->sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < 0) {
            probe_end(p, SL_HEALTH_TCP_ERROR, 0);
            return;
        }
        p->sent += (size_t)n;
        if (p->sent < p->len)
            return;
        ev_io_stop(loop, &p->io);
        ev_io_set(&p->io, p->fd, EV_READ);
        ev_io_start(loop, &p->io);
        return;
    }
    ssize_t n = recv(p->fd, p->buf + p->got, PROBE_STATUS_MAX - p->got, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        probe_end(p, SL_HEALTH_TCP_ERROR, 0);
        return;
    }
    p->got += (size_t)n;
    int status = parse_status(p->buf, p->got);
    if (status == 0 && p->got < PROBE_STATUS_MAX)
        return;
    probe_end(p, status > 0 ? SL_HEALTH_STATUS : SL_HEALTH_TCP_ERROR, status > 0 ? status : 0);
}

static void probe_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    probe_end(t->data, SL_HEALTH_TIMEOUT, 0);
}

/* Starts one probe of target i; a socket that cannot even be created counts
 * as a tcp failure, as a refused connect does. */
static void probe_start(prober_ups_t *pu, size_t i)
{
    /* The address this worker uses now: a name's slot follows the master's
     * table (upstream.c: sl_upstreams_refresh). */
    const sl_upstream_state_t *us = &prober->w->ups[pu->u->index];
    const sl_target_t *t = us->targets != NULL ? &us->targets[i] : &pu->u->targets[i];
    if (t->addrlen == 0)
        return; /* this worker has not adopted the slot's new address yet */
    sl_health_target_t *h = sl_health_target(pu->u, i);
    atomic_fetch_add(&h->probes, 1);
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sl_health_report(pu->u, i, SL_HEALTH_ACTIVE, SL_HEALTH_TCP_ERROR, 0, sl_health_now());
        return;
    }
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addrlen) != 0 && errno != EINPROGRESS) {
        close(fd);
        sl_health_report(pu->u, i, SL_HEALTH_ACTIVE, SL_HEALTH_TCP_ERROR, 0, sl_health_now());
        return;
    }
    probe_t *p = malloc(sizeof(*p));
    if (p == NULL) {
        close(fd);
        return; /* out of memory is no news about the target */
    }
    p->pu = pu;
    p->target = i;
    p->fd = fd;
    p->sent = p->len = p->got = 0;
    ev_io_init(&p->io, probe_io_cb, fd, EV_WRITE);
    p->io.data = p;
    ev_timer_init(&p->timer, probe_timeout_cb, pu->u->health.timeout / 1000.0, 0);
    p->timer.data = p;
    ev_io_start(prober->w->loop, &p->io);
    ev_timer_start(prober->w->loop, &p->timer);
    p->next = prober->probes;
    prober->probes = p;
    pu->inflight++;
}

/* Returns whether this worker probes target i now, renewing or taking the
 * lease (see the file comment). */
static int hold_lease(prober_ups_t *pu, size_t i, int64_t now)
{
    sl_health_target_t *h = sl_health_target(pu->u, i);
    int32_t holder = atomic_load(&h->prober);
    int nworkers = prober->w->cf->server.workers;
    if (holder == prober->pid) {
        atomic_store(&h->prober_seen, now);
        return 1;
    }
    uint64_t key = sl_hash_update(SL_HASH_INIT, pu->u->name, strlen(pu->u->name));
    key = sl_hash_mix(sl_hash_update(key, &i, sizeof(i)));
    int preferred = nworkers > 0 && (int)(key % (uint64_t)nworkers) == prober->w->id;
    int64_t stale = now - atomic_load(&h->prober_seen);
    if (preferred) {
        /* kill(pid, 0) only here: one syscall per tick for the targets this
         * worker should hold and does not. */
        int dead = holder == 0 || (kill(holder, 0) != 0 && errno == ESRCH);
        if (!dead && stale <= LEASE_MS)
            return 0;
    } else if (stale <= LEASE_ORPHAN_MS) {
        return 0;
    }
    if (!atomic_compare_exchange_strong(&h->prober, &holder, prober->pid))
        return 0;
    atomic_store(&h->prober_seen, now);
    if (holder != 0)
        sl_log(SL_LOG_INFO, "upstream %s: worker %d took over the probes of target %zu from pid %d",
               pu->u->name, prober->w->id, i, (int)holder);
    return 1;
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(t);
    SL_UNUSED(revents);
    int64_t now = sl_health_now();
    for (size_t k = 0; k < prober->nups; k++) {
        prober_ups_t *pu = &prober->ups[k];
        const sl_healthchecks_t *hc = &pu->u->health;
        int held = 0;
        for (size_t i = 0; i < pu->u->ntargets; i++) {
            if (!hold_lease(pu, i, now))
                continue;
            held = 1;
            sl_health_target_t *h = sl_health_target(pu->u, i);
            uint32_t down = atomic_load(&h->down);
            if (down & SL_HEALTH_ABSENT)
                continue;
            int interval =
                down & SL_HEALTH_UNHEALTHY ? hc->unhealthy_interval : hc->healthy_interval;
            if (interval <= 0 || now < pu->next[i] || pu->inflight >= hc->concurrency)
                continue;
            pu->next[i] = now + interval;
            probe_start(pu, i);
        }
        if (held)
            sl_health_expire(pu->u, now);
    }
}

int sl_health_start(sl_worker_t *w)
{
    const sl_config_t *cf = w->cf;
    size_t n = 0;
    for (size_t i = 0; i < cf->nupstreams; i++)
        n += sl_health_upstream(cf->upstreams[i]) != NULL;
    if (n == 0)
        return SL_OK;
    prober = calloc(1, sizeof(*prober));
    if (prober == NULL || (prober->ups = calloc(n, sizeof(*prober->ups))) == NULL)
        goto failed;
    prober->w = w;
    prober->pid = getpid();
    for (size_t i = 0; i < cf->nupstreams; i++) {
        const sl_upstream_t *u = cf->upstreams[i];
        if (sl_health_upstream(u) == NULL)
            continue;
        prober_ups_t *pu = &prober->ups[prober->nups++];
        pu->u = u;
        pu->next = calloc(u->ntargets ? u->ntargets : 1, sizeof(int64_t));
        if (pu->next == NULL)
            goto failed;
    }
    ev_timer_init(&prober->tick, tick_cb, TICK_SECONDS, TICK_SECONDS);
    ev_timer_start(w->loop, &prober->tick);
    ev_unref(w->loop); /* the tick alone does not keep a stopping worker alive */
    return SL_OK;
failed:
    sl_health_stop(w);
    return SL_ERROR;
}

void sl_health_stop(sl_worker_t *w)
{
    if (prober == NULL)
        return;
    if (ev_is_active(&prober->tick)) {
        ev_ref(w->loop);
        ev_timer_stop(w->loop, &prober->tick);
    }
    while (prober->probes != NULL) {
        probe_t *p = prober->probes;
        prober->probes = p->next;
        ev_io_stop(w->loop, &p->io);
        ev_timer_stop(w->loop, &p->timer);
        close(p->fd);
        free(p);
    }
    for (size_t k = 0; prober->ups != NULL && k < prober->nups; k++) {
        /* Hand the leases back: the preferred worker of each target takes it
         * at its next tick. */
        const sl_upstream_t *u = prober->ups[k].u;
        for (size_t i = 0; i < u->ntargets; i++) {
            int32_t me = prober->pid;
            atomic_compare_exchange_strong(&sl_health_target(u, i)->prober, &me, 0);
        }
        free(prober->ups[k].next);
    }
    free(prober->ups);
    free(prober);
    prober = NULL;
}

/* --- the PDK ----------------------------------------------------------------- */

SL_EXPORT int sl_ffi_upstream_health(int index, int i, sl_ffi_target_health_t *out, int *healthy)
{
    if (health_cf == NULL || index < 0 || (size_t)index >= health_cf->nupstreams)
        return SL_DECLINED;
    const sl_upstream_t *u = health_cf->upstreams[index];
    *healthy = sl_health_upstream_ok(u);
    /* Only the slots that have an address now are listed: the i-th of
     * them. O(targets) per call, which the PDK makes once per target. */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int present = 0;
    size_t slot = u->ntargets;
    for (size_t j = 0; j < u->ntargets; j++) {
        if (!sl_targets_addr(u, j, &addr, &addrlen))
            continue;
        if (present++ == i)
            slot = j;
    }
    if (slot == u->ntargets)
        return present;
    sl_targets_addr(u, slot, &addr, &addrlen);
    const sl_target_t *t = &u->targets[slot];
    memset(out, 0, sizeof(*out));
    out->host = t->host;
    out->port = t->port;
    out->weight = t->weight;
    out->health = sl_health_name(u, slot);
    char ip[INET6_ADDRSTRLEN] = "?";
    if (addr.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&addr)->sin6_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&addr)->sin_addr, ip, sizeof(ip));
    snprintf(out->address, sizeof(out->address), addr.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
             ip, t->port);
    sl_health_target_t *h = sl_health_target(u, slot);
    if (h == NULL)
        return present;
    out->successes = atomic_load(&h->successes);
    out->http_failures = atomic_load(&h->http_failures);
    out->tcp_failures = atomic_load(&h->tcp_failures);
    out->timeouts = atomic_load(&h->timeouts);
    out->consecutive_5xx = atomic_load(&h->consecutive_5xx);
    out->consecutive_gateway_failure = atomic_load(&h->consecutive_gateway);
    out->ejections = atomic_load(&h->ejections);
    out->probes = (double)atomic_load(&h->probes);
    if (atomic_load(&h->down) & SL_HEALTH_EJECTED) {
        int64_t left = atomic_load(&h->ejected_until) - sl_health_now();
        out->ejected_for = left > 0 ? (double)left / 1000 : 0;
    }
    return present;
}
