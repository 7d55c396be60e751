/* worker.c: the worker process: its loop, accepting, timers, graceful shutdown. */
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "health.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "resolver.h"
#include "sl_lua.h"

/* Connections accepted per readiness event: bounded so one busy listener
 * cannot starve the connections this worker already serves. */
#define ACCEPT_BATCH 64

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    sl_listener_t *ls = io->data;
    sl_worker_t *w = ls->w;

    for (int i = 0; i < ACCEPT_BATCH && !w->shutting_down; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        int fd = accept4(ls->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                sl_log(SL_LOG_ERR, "accept on %s: %s (raise the fd limit)", ls->conf->text,
                       strerror(errno));
            return;
        }
        sl_metrics_accepted(sl_conn_create(w, ls, fd, (struct sockaddr *)&sa, salen) != NULL);
    }
}

static void flush_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    sl_worker_t *w = t->data;
    if (w->access_log.len > 0)
        sl_access_log_flush(&w->access_log);
}

static void stop_listening(sl_worker_t *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].fd >= 0) {
            ev_io_stop(w->loop, &w->listeners[i].io);
            close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
    }
}

/* The worker being stopped, for the Lua runtime's hook (one per process). */
static sl_worker_t *stopping;

void sl_worker_conn_closed(sl_worker_t *w)
{
    if (w->shutting_down && w->nconns == 0 && sl_lua_timer_runs() == 0)
        ev_break(w->loop, EVBREAK_ALL);
}

/* The last timer run ended during a graceful stop. */
static void timer_runs_ended(void)
{
    if (stopping != NULL)
        sl_worker_conn_closed(stopping);
}

static void shutdown_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(revents);
    sl_worker_t *w = t->data;
    sl_log(SL_LOG_NOTICE,
           "shutdown timeout: closing %zu connections still open, dropping %d timer runs",
           w->nconns, sl_lua_timer_runs());
    ev_break(loop, EVBREAK_ALL);
}

/* Graceful stop: no new connections; idle ones close now, busy ones after
 * their current response; pending timers run once and the runs that wait for
 * I/O may finish (or everything ends when shutdown_timeout runs out). */
static void graceful_stop(sl_worker_t *w)
{
    if (w->shutting_down)
        return;
    w->shutting_down = 1;
    stop_listening(w);
    sl_health_stop(w);
    sl_upstreams_close_idle(w->ups, w->nups);
    sl_adhoc_peers_close_idle(w);
    if (w->cf->L != NULL) {
        stopping = w;
        sl_lua_shutdown(timer_runs_ended);
    }

    sl_queue_t *q = w->conns.next;
    while (q != &w->conns) {
        sl_conn_t *c = sl_queue_data(q, sl_conn_t, link);
        q = q->next;
        c->closing = 1;
        if (c->state == SL_CONN_IDLE || (c->state == SL_CONN_HEAD && c->in == NULL))
            sl_conn_close(c);
    }
    if (w->nconns == 0 && sl_lua_timer_runs() == 0) {
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    ev_timer_init(&w->shutdown_timer, shutdown_timer_cb, w->cf->server.shutdown_timeout / 1000.0,
                  0.);
    w->shutdown_timer.data = w;
    ev_timer_start(w->loop, &w->shutdown_timer);
}

static void signal_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
    SL_UNUSED(revents);
    sl_worker_t *w = s->data;
    if (s->signum == SIGQUIT) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (s->signum == SIGHUP)
        return; /* the master handles reloads */
    graceful_stop(w);
}

/* SIGUSR1 (the master forwards its own): log rotation. The error and access
 * logs are opened anew, and sl_log_generation tells Lua's log plugins
 * (file-log) to reopen their files at their next write. One per process. */
static ev_signal sigusr1;

static void reopen_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    sl_worker_t *w = s->data;
    sl_log_open(&w->cf->server);
    sl_access_log_reopen(&w->access_log, &w->cf->server);
    sl_log_generation++;
    SL_LOG(SL_LOG_INFO, "SIGUSR1: log files reopened");
}

static void make_id_prefix(sl_worker_t *w)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t seed = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &seed, sizeof(seed)) != (ssize_t)sizeof(seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)getpid();
    }
    if (fd >= 0)
        close(fd);
    for (int i = 0; i < 16; i++) {
        w->id_prefix[i] = hex[seed & 15];
        seed >>= 4;
    }
    w->id_prefix[16] = '\0';
}

int sl_worker_run(const sl_config_t *cf, int id, const int *fds)
{
    sl_worker_t wk;
    sl_worker_t *w = &wk;
    int rc = 1;

    memset(w, 0, sizeof(*w));
    w->cf = cf;
    w->id = id;
    sl_log_set_worker(id);
    sl_queue_init(&w->conns);
    w->buf_size = SL_MAX(cf->server.max_header_size + 1024, (size_t)16384);
    make_id_prefix(w);

    w->loop = ev_default_loop(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (w->loop == NULL) {
        sl_log(SL_LOG_ERR, "cannot create the event loop");
        return 1;
    }
    if (sl_access_log_open(&w->access_log, &cf->server) != SL_OK)
        goto done;

    const char *err;
    if (sl_resolver_init(w->loop, &cf->server, &err) != SL_OK) {
        sl_log(SL_LOG_ERR, "cannot start the DNS resolver: %s", err);
        goto done;
    }

    if (cf->L != NULL && sl_lua_worker_init(cf->L, id, cf->server.workers) != SL_OK)
        goto done;

    w->nups = cf->nupstreams;
    w->ups = sl_upstreams_create(cf);
    if (w->ups == NULL) {
        sl_log(SL_LOG_ERR, "out of memory creating upstream state");
        goto done;
    }

    w->nlisteners = cf->server.nlistens;
    w->listeners = calloc(w->nlisteners ? w->nlisteners : 1, sizeof(sl_listener_t));
    if (w->listeners == NULL)
        goto done;
    for (size_t i = 0; i < w->nlisteners; i++) {
        sl_listener_t *ls = &w->listeners[i];
        const sl_listen_t *l = &cf->server.listens[i];
        ls->fd = fds[i];
        ls->conf = l;
        ls->w = w;
        ls->port =
            ntohs(l->addr.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&l->addr)->sin6_port
                                                : ((const struct sockaddr_in *)&l->addr)->sin_port);
        ev_io_init(&ls->io, accept_cb, ls->fd, EV_READ);
        ls->io.data = ls;
        ev_io_start(w->loop, &ls->io);
    }

    ev_timer_init(&w->flush_timer, flush_cb, 1., 1.);
    w->flush_timer.data = w;
    ev_timer_start(w->loop, &w->flush_timer);
    ev_unref(w->loop);

    ev_signal *sigs[] = {&w->sigterm, &w->sigint, &w->sigquit, &w->sighup};
    int signums[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP};
    for (size_t i = 0; i < SL_NELEMS(sigs); i++) {
        ev_signal_init(sigs[i], signal_cb, signums[i]);
        sigs[i]->data = w;
        ev_signal_start(w->loop, sigs[i]);
        ev_unref(w->loop);
    }
    /* The master forks workers with SIGUSR1 blocked, so that one sent before
     * this point waits here rather than killing the worker. */
    ev_signal_init(&sigusr1, reopen_cb, SIGUSR1);
    sigusr1.data = w;
    ev_signal_start(w->loop, &sigusr1);
    ev_unref(w->loop);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    if (sl_health_start(w) != SL_OK) {
        sl_log(SL_LOG_ERR, "out of memory starting the health checks");
        goto done;
    }
    sl_upstreams_watch(w); /* adopt the addresses the master re-resolves */
    sl_metrics_start(w);   /* this worker's slot of the prometheus counters */

    SL_LOG(SL_LOG_INFO, "worker %d started", id);
    ev_run(w->loop, 0);

    /* Whatever is still open when the loop ends is cut. */
    while (!sl_queue_empty(&w->conns))
        sl_conn_close(sl_queue_data(w->conns.next, sl_conn_t, link));
    rc = 0;
done:
    stop_listening(w);
    sl_health_stop(w);
    sl_upstreams_unwatch(w);
    sl_resolver_close();
    sl_upstreams_destroy(w->ups, w->nups);
    sl_adhoc_peers_destroy(w);
    free(w->listeners);
    sl_access_log_close(&w->access_log);
    while (w->free_bufs != NULL) {
        sl_buf_t *b = w->free_bufs;
        w->free_bufs = b->next;
        free(b);
    }
    while (w->free_reqs != NULL) {
        sl_request_t *r = w->free_reqs;
        w->free_reqs = r->next_free;
        ev_timer_stop(w->loop, &r->timer.ev);
        sl_arena_destroy(r->arena);
        free(r);
    }
    return rc;
}
