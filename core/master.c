/* master.c: the master process: listeners, the pid file, forking and supervising workers. */
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "health.h"
#include "log.h"
#include "metrics.h"
#include "shdict.h"
#include "targets.h"
#include "worker.h"

/* A worker that dies sooner than this after starting is restarted only after
 * a pause, so a worker that crashes at once does not spin the CPU. */
#define RESPAWN_FAST_SECONDS  1.0
#define RESPAWN_DELAY_SECONDS 1.0

typedef struct {
    pid_t pid;
    double started;
    double respawn_at; /* 0: no respawn pending */
} slot_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Opens one listening socket for l. */
static int open_listener(const sl_listen_t *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sl_log(SL_LOG_ERR, "socket() for %s: %s", l->text, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (l->reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (l->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) != 0) {
        sl_log(SL_LOG_ERR, "cannot listen on %s: %s", l->text, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, l->backlog) != 0) {
        sl_log(SL_LOG_ERR, "listen() on %s: %s", l->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Refuses to start over a running sluice; writes our pid. */
static int write_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        long pid = 0;
        int got = fscanf(f, "%ld", &pid);
        fclose(f);
        if (got == 1 && pid > 1 && kill((pid_t)pid, 0) == 0 && pid != getpid()) {
            sl_log(SL_LOG_ERR, "sluice is already running with pid %ld (pid file %s)", pid, path);
            return SL_ERROR;
        }
    }
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 ||
        rename(tmp, path) != 0) {
        sl_log(SL_LOG_ERR, "cannot write pid file %s: %s", path, strerror(errno));
        return SL_ERROR;
    }
    return SL_OK;
}

static int daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return SL_ERROR;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return SL_ERROR;
    pid = fork();
    if (pid < 0)
        return SL_ERROR;
    if (pid > 0)
        _exit(0);
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        if (fd > 2)
            close(fd);
    }
    return SL_OK;
}

static void close_listeners(int **fds, int nsets, size_t nl)
{
    for (int i = 0; i < nsets; i++) {
        for (size_t j = 0; fds[i] != NULL && j < nl; j++) {
            if (fds[i][j] >= 0)
                close(fds[i][j]);
            fds[i][j] = -1;
        }
    }
}

/* DNS sockets the master polls at once, besides its signals. */
#define MAX_POLL 17

static pid_t spawn(const sl_config_t *cf, int id, int **fds, size_t nfds_per_worker, int shared,
                   int sigfd)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;

    close(sigfd);
    sl_targets_forked(); /* the master's DNS sockets stay the master's */

    /* Everything but SIGUSR1, which the worker unblocks once it handles it
     * (log rotation must never kill a worker that is still starting). */
    sigset_t none;
    sigemptyset(&none);
    sigaddset(&none, SIGUSR1);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int nworkers = cf->server.workers;
    /* Keep only this worker's listeners. */
    for (int i = 0; i < nworkers && !shared; i++) {
        if (i == id)
            continue;
        for (size_t j = 0; j < nfds_per_worker; j++)
            close(fds[i][j]);
    }
    _exit(sl_worker_run(cf, id, fds[shared ? 0 : id]));
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
}

int sl_master_run(sl_config_t *cf, const char *conf_path, int daemon)
{
    const sl_server_conf_t *s = &cf->server;
    int nworkers = s->workers;
    int rc = 1, pid_written = 0, sigfd = -1;
    size_t nl = s->nlistens;
    int all_reuseport = 1;
    for (size_t j = 0; j < nl; j++)
        all_reuseport &= s->listens[j].reuseport;
    /* With SO_REUSEPORT every worker gets its own socket per listener and the
     * kernel spreads connections; otherwise all share one. */
    int shared = !all_reuseport;
    int nsets = shared ? 1 : nworkers;
    int **fds = calloc((size_t)nsets, sizeof(int *));
    slot_t *slots = calloc((size_t)nworkers, sizeof(slot_t));
    if (fds == NULL || slots == NULL)
        goto done;

    if (sl_log_open(s) != SL_OK)
        goto done;
    /* Shared dicts exist before the workers, which inherit the mappings. */
    for (size_t i = 0; i < s->nshared_dicts; i++) {
        sl_shdict_t *d = sl_shdict_create(s->shared_dicts[i].name, s->shared_dicts[i].size);
        if (d == NULL || sl_shdict_register(d) != SL_OK) {
            if (d != NULL)
                sl_shdict_destroy(d);
            sl_log(SL_LOG_ERR, "cannot create shared dict \"%s\"", s->shared_dicts[i].name);
            goto done;
        }
    }
    /* So is the health state, so that every worker sees the same targets down,
     * and the addresses of target names, which the master re-resolves. */
    if (sl_health_create(cf) != SL_OK || sl_targets_create(cf) != SL_OK)
        goto done;
    /* And the prometheus plugin's counters, one slot per worker. */
    if (sl_metrics_create(cf) != SL_OK)
        goto done;
    for (int i = 0; i < nsets; i++) {
        fds[i] = malloc((nl ? nl : 1) * sizeof(int));
        if (fds[i] == NULL)
            goto done;
        for (size_t j = 0; j < nl; j++)
            fds[i][j] = -1;
        for (size_t j = 0; j < nl; j++) {
            fds[i][j] = open_listener(&s->listens[j]);
            if (fds[i][j] < 0)
                goto done;
        }
    }

    if (daemon && daemonize() != SL_OK) {
        sl_log(SL_LOG_ERR, "cannot daemonize: %s", strerror(errno));
        goto done;
    }
    if (write_pid_file(s->pid_file) != SL_OK)
        goto done;
    pid_written = 1;

    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < SL_NELEMS(sigs); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Signals arrive on a descriptor, so that one poll waits for them and for
     * the DNS answers of target names alike. */
    sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd < 0) {
        sl_log(SL_LOG_ERR, "signalfd: %s", strerror(errno));
        goto done;
    }

    for (int i = 0; i < nworkers; i++) {
        slots[i].pid = spawn(cf, i, fds, nl, shared, sigfd);
        slots[i].started = now();
        if (slots[i].pid < 0) {
            sl_log(SL_LOG_ERR, "fork: %s", strerror(errno));
            goto stop;
        }
    }
    sl_log(SL_LOG_NOTICE, "sluice %s started: %d workers, config %s, listening on %s%s", SL_VERSION,
           nworkers, conf_path, nl ? s->listens[0].text : "nothing", nl > 1 ? " and more" : "");

    int stopping = 0, fast = 0;
    double deadline = 0;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < nworkers; i++)
            alive += slots[i].pid > 0;
        if (stopping && alive == 0)
            break;

        /* Sleep until a signal, a pending respawn, the drain deadline, a DNS
         * answer or the next lookup of a target name. */
        double t = now(), wake = t + 5;
        for (int i = 0; i < nworkers && !stopping; i++)
            if (slots[i].respawn_at > 0 && slots[i].respawn_at < wake)
                wake = slots[i].respawn_at;
        if (stopping && deadline < wake)
            wake = deadline;
        double wait = wake - t > 0 ? wake - t : 0;
        struct pollfd pfd[1 + MAX_POLL];
        pfd[0].fd = sigfd;
        pfd[0].events = POLLIN;
        pfd[0].revents = 0;
        int ndns = stopping ? 0 : sl_targets_poll(pfd + 1, MAX_POLL, &wait);
        if (poll(pfd, (nfds_t)(1 + ndns), (int)(wait * 1000) + 1) < 0)
            for (int i = 0; i < 1 + ndns; i++)
                pfd[i].revents = 0;
        if (!stopping)
            sl_targets_process(pfd + 1, ndns); /* answers, and c-ares's own timeouts */
        int sig = 0;
        struct signalfd_siginfo info;
        if (read(sigfd, &info, sizeof(info)) == (ssize_t)sizeof(info))
            sig = (int)info.ssi_signo;
        t = now();

        if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
            if (!stopping || (sig == SIGQUIT && !fast)) {
                fast = sig == SIGQUIT;
                stopping = 1;
                deadline = t + (fast ? 0 : s->shutdown_timeout / 1000.0) + 2;
                sl_log(SL_LOG_NOTICE, "%s: stopping workers%s", strsignal(sig),
                       fast ? " now" : " gracefully");
                for (int i = 0; i < nworkers; i++)
                    if (slots[i].pid > 0)
                        kill(slots[i].pid, fast ? SIGQUIT : SIGTERM);
                /* Once the workers close theirs too, new connections are refused
                 * rather than left waiting in a backlog nobody accepts from. */
                close_listeners(fds, nsets, nl);
            }
        } else if (sig == SIGUSR1 && !stopping) {
            /* Log rotation, as nginx's: the master's error log, then each
             * worker's logs (core/worker.c). */
            sl_log_open(s);
            sl_log(SL_LOG_NOTICE, "SIGUSR1: reopening log files");
            for (int i = 0; i < nworkers; i++)
                if (slots[i].pid > 0)
                    kill(slots[i].pid, SIGUSR1);
        } else if (sig == SIGHUP) {
            sl_log(SL_LOG_NOTICE, "SIGHUP: hot reload is not available in this version; "
                                  "restart sluice to apply a new config");
        }

        /* Reap and schedule respawns. */
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int i = 0; i < nworkers; i++) {
                if (slots[i].pid != pid)
                    continue;
                slots[i].pid = 0;
                if (stopping)
                    break;
                char why[128];
                describe_exit(status, why, sizeof(why));
                int quick = t - slots[i].started < RESPAWN_FAST_SECONDS;
                sl_log(SL_LOG_ERR, "worker %d (pid %d) %s; respawning%s", i, (int)pid, why,
                       quick ? " after a pause" : "");
                slots[i].respawn_at = quick ? t + RESPAWN_DELAY_SECONDS : t;
            }
        }
        if (stopping && t >= deadline) {
            for (int i = 0; i < nworkers; i++) {
                if (slots[i].pid > 0) {
                    sl_log(SL_LOG_WARN, "worker %d (pid %d) did not stop in time; killing it", i,
                           (int)slots[i].pid);
                    kill(slots[i].pid, SIGKILL);
                }
            }
            deadline = t + 5;
        }
        for (int i = 0; i < nworkers && !stopping; i++) {
            if (slots[i].respawn_at > 0 && slots[i].respawn_at <= t) {
                slots[i].respawn_at = 0;
                slots[i].pid = spawn(cf, i, fds, nl, shared, sigfd);
                slots[i].started = t;
                if (slots[i].pid < 0) {
                    sl_log(SL_LOG_ERR, "fork: %s", strerror(errno));
                    slots[i].pid = 0;
                    slots[i].respawn_at = t + RESPAWN_DELAY_SECONDS;
                }
            }
        }
    }
    sl_log(SL_LOG_NOTICE, "sluice stopped");
    rc = 0;
    goto done;
stop:
    for (int i = 0; i < nworkers; i++)
        if (slots[i].pid > 0)
            kill(slots[i].pid, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0)
        ;
done:
    if (pid_written)
        unlink(s->pid_file);
    if (fds != NULL) {
        close_listeners(fds, nsets, nl);
        for (int i = 0; i < nsets; i++)
            free(fds[i]);
    }
    free(fds);
    free(slots);
    if (sigfd >= 0)
        close(sigfd);
    sl_shdict_destroy_all();
    sl_targets_destroy();
    sl_health_destroy();
    sl_metrics_destroy();
    sl_config_free(cf);
    return rc;
}
