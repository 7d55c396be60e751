/* idle_conns.c: opens N keep-alive connections, makes one request on each, then holds them idle.
 *
 * Used by bench/idle.sh to measure what an idle keep-alive connection costs a
 * proxy. It works in three phases, so the proxy's memory afterwards is what
 * N idle connections cost and not what N simultaneous requests cost:
 *
 *   1. connect all N sockets (at most -w connects in flight, so the listen
 *      backlog never overflows and no SYN waits a second for a retransmit);
 *   2. send "GET / HTTP/1.1" on them with at most -c requests in flight, and
 *      read each response in full (Content-Length or chunked);
 *   3. print "READY ..." on stdout and hold every connection open for -t
 *      seconds (or until SIGINT/SIGTERM), counting connections the peer closes.
 *
 * Usage: idle_conns -p PORT [-h 127.0.0.1] [-n 10000] [-c 16] [-w 128] [-t 30]
 * Exit status: 0 if every connection got a 2xx response, 1 otherwise.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_CONNECTED, ST_SENT, ST_IDLE, ST_DONE_BAD, ST_CLOSED };

/* Only connections with a response in flight own a buffer, so this program's
 * own footprint stays small at 10,000+ connections. */
typedef struct {
    int fd;
    int state;
    char *buf;
    size_t len;
} conn_t;

#define RESP_MAX 8192

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "idle_conns: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* Returns 1 when buf holds a complete response, 0 when more is needed, -1 on garbage. */
static int response_complete(const char *buf, size_t len, int *status)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len >= RESP_MAX ? -1 : 0;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(buf + 9);
    size_t head = (size_t)(end - buf) + 4;
    long clen = -1;
    int chunked = 0;
    for (const char *p = buf; p < end; p++) {
        if (*p != '\n')
            continue;
        if (strncasecmp(p + 1, "content-length:", 15) == 0)
            clen = strtol(p + 16, NULL, 10);
        else if (strncasecmp(p + 1, "transfer-encoding:", 18) == 0 &&
                 memmem(p + 19, (size_t)(end - p - 19), "chunked", 7) != NULL)
            chunked = 1;
    }
    if (chunked) /* the body is tiny here: done once the last chunk arrived */
        return len >= head + 5 && memcmp(buf + len - 5, "0\r\n\r\n", 5) == 0;
    if (clen < 0)
        return -1; /* a keep-alive response must be framed */
    return len >= head + (size_t)clen;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, n = 10000, conc = 16, win = 128;
    double hold = 30;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:n:c:w:t:")) != -1) {
        switch (opt) {
        case 'h':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'n':
            n = atoi(optarg);
            break;
        case 'c':
            conc = atoi(optarg);
            break;
        case 'w':
            win = atoi(optarg);
            break;
        case 't':
            hold = atof(optarg);
            break;
        default:
            fprintf(stderr,
                    "usage: idle_conns -p PORT [-h HOST] [-n N] [-c CONC] [-w WIN] [-t SEC]\n");
            return 2;
        }
    }
    if (port <= 0 || n <= 0 || conc <= 0 || win <= 0) {
        fprintf(stderr, "idle_conns: -p PORT is required; -n, -c, -w must be positive\n");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "idle_conns: bad IPv4 address %s\n", host);
        return 2;
    }
    conn_t *cs = calloc((size_t)n, sizeof(*cs));
    int ep = epoll_create1(0);
    if (cs == NULL || ep < 0)
        die("setup");
    struct epoll_event evs[256];
    double t0 = now();

    /* Phase 1: connect, at most `win` handshakes in flight. */
    int next = 0, pending = 0, connected = 0, failed = 0;
    while (connected + failed < n && !stop) {
        while (next < n && pending < win) {
            conn_t *c = &cs[next];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0)
                die("socket (raise ulimit -n?)");
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            c->state = ST_CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)next};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
                die("epoll_ctl");
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS)
                die("connect");
            next++;
            pending++;
        }
        int k = epoll_wait(ep, evs, 256, 5000);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        if (k == 0) {
            fprintf(stderr, "idle_conns: connects stalled (%d of %d done)\n", connected, n);
            return 1;
        }
        for (int i = 0; i < k; i++) {
            conn_t *c = &cs[evs[i].data.u32];
            if (c->state != ST_CONNECTING)
                continue; /* an error on a connected socket: seen in phase 2 */
            int err = 0;
            socklen_t el = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            pending--;
            if (err != 0) {
                c->state = ST_DONE_BAD;
                failed++;
                continue;
            }
            c->state = ST_CONNECTED;
            connected++;
            struct epoll_event ev = {.events = 0, .data.u32 = evs[i].data.u32};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev); /* quiet until its request goes */
        }
    }
    double t1 = now();

    /* Phase 2: one request per connection, at most `conc` in flight. */
    int sent = 0, done = 0, bad = 0, inflight = 0, statuses_other = 0, early_closed = 0;
    next = 0;
    while (done + bad < connected && !stop) {
        while (next < n && inflight < conc) {
            conn_t *c = &cs[next];
            if (c->state != ST_CONNECTED) {
                next++;
                continue;
            }
            /* The request is 29 bytes: one write always takes it whole. */
            if (write(c->fd, REQUEST, sizeof(REQUEST) - 1) != (ssize_t)(sizeof(REQUEST) - 1)) {
                c->state = ST_DONE_BAD;
                bad++;
                next++;
                continue;
            }
            c->buf = malloc(RESP_MAX);
            if (c->buf == NULL)
                die("malloc");
            c->state = ST_SENT;
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)next};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            next++;
            sent++;
            inflight++;
        }
        int k = epoll_wait(ep, evs, 256, 10000);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        if (k == 0) {
            fprintf(stderr, "idle_conns: responses stalled (%d of %d done, %d in flight)\n", done,
                    connected, inflight);
            return 1;
        }
        for (int i = 0; i < k; i++) {
            conn_t *c = &cs[evs[i].data.u32];
            if (c->state == ST_IDLE || c->state == ST_CONNECTED) { /* closed by the peer */
                if (c->state == ST_IDLE) {
                    c->state = ST_CLOSED;
                    early_closed++;
                } else {
                    c->state = ST_DONE_BAD;
                    bad++;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            if (c->state != ST_SENT)
                continue;
            ssize_t r = read(c->fd, c->buf + c->len, RESP_MAX - c->len);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            int status = 0, st = -1;
            if (r > 0) {
                c->len += (size_t)r;
                st = response_complete(c->buf, c->len, &status);
                if (st == 0)
                    continue;
            }
            free(c->buf);
            c->buf = NULL;
            inflight--;
            if (st == 1 && status >= 200 && status < 300) {
                c->state = ST_IDLE;
                done++;
                /* Watch only for the peer closing the idle connection. */
                struct epoll_event ev = {.events = EPOLLRDHUP, .data.u32 = evs[i].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            } else {
                if (st == 1)
                    statuses_other++;
                c->state = ST_DONE_BAD;
                bad++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    double t2 = now();
    printf("READY idle=%d connect_failed=%d request_failed=%d non_2xx=%d connect_s=%.2f "
           "requests_s=%.2f\n",
           done - early_closed, failed, bad, statuses_other, t1 - t0, t2 - t1);
    fflush(stdout);

    /* Phase 3: hold. Count idle connections the server closes meanwhile. */
    int closed = early_closed;
    double until = now() + hold;
    while (!stop && now() < until) {
        int ms = (int)((until - now()) * 1000) + 1;
        int k = epoll_wait(ep, evs, 256, ms > 1000 ? 1000 : ms);
        for (int i = 0; i < k; i++) {
            conn_t *c = &cs[evs[i].data.u32];
            if (c->state == ST_IDLE) {
                c->state = ST_CLOSED;
                closed++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    printf("DONE closed_by_peer=%d\n", closed);
    fflush(stdout);
    return (failed == 0 && bad == 0 && closed == 0) ? 0 : 1;
}
