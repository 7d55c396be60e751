/* upstream.c: tests for the per-worker keep-alive pool in core/upstream.c, over real sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../core/upstream.h"
#include "../../core/worker.h"

#include "test.h"

typedef struct {
    sl_worker_t w;
    sl_config_t cf;
    sl_target_t target;
    sl_peer_t peer;
    int lfd;
} pool_fixture_t;

static int fixture_init(pool_fixture_t *f, int pool_size, int max_requests)
{
    memset(f, 0, sizeof(*f));
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(f->lfd, 16) != 0)
        return -1;
    socklen_t len = sizeof(sa);
    getsockname(f->lfd, (struct sockaddr *)&sa, &len);
    memcpy(&f->target.addr, &sa, sizeof(sa));
    f->target.addrlen = sizeof(sa);
    f->target.host = "127.0.0.1";
    f->target.port = ntohs(sa.sin_port);
    f->target.weight = 100;
    f->peer.conf = &f->target;
    sl_queue_init(&f->peer.idle);
    f->cf.server.upstream_keepalive_pool_size = pool_size;
    f->cf.server.upstream_keepalive_max_requests = max_requests;
    f->cf.server.upstream_keepalive_idle_timeout = 60000;
    f->w.cf = &f->cf;
    f->w.loop = ev_loop_new(EVFLAG_AUTO);
    return 0;
}

static void fixture_done(pool_fixture_t *f)
{
    while (!sl_queue_empty(&f->peer.idle))
        sl_upconn_close(sl_queue_data(f->peer.idle.next, sl_upconn_t, link));
    ev_loop_destroy(f->w.loop);
    close(f->lfd);
}

/* A request pointer the pool only stores. */
static sl_request_t *const REQ = (sl_request_t *)&REQ;

TEST(pool_reuses_a_released_connection)
{
    pool_fixture_t f;
    ASSERT_OK(fixture_init(&f, 8, 100));
    sl_upconn_t *u = sl_upconn_get(&f.w, &f.peer, REQ);
    ASSERT(u != NULL);
    ASSERT_EQ(u->reused, 0);
    int s = accept(f.lfd, NULL, NULL);
    ASSERT(s >= 0);
    u->requests = 1;
    sl_upconn_release(u, 1);
    ASSERT_EQ(f.peer.nidle, 1);
    ASSERT_EQ(f.peer.active, 0);

    sl_upconn_t *again = sl_upconn_get(&f.w, &f.peer, REQ);
    ASSERT(again == u);
    ASSERT_EQ(again->reused, 1);
    ASSERT_EQ(f.peer.nidle, 0);
    ASSERT_EQ(f.peer.active, 1);
    sl_upconn_close(again);
    ASSERT_EQ(f.peer.active, 0);
    close(s);
    fixture_done(&f);
}

TEST(pool_closes_after_max_requests_and_when_not_keepalive)
{
    pool_fixture_t f;
    ASSERT_OK(fixture_init(&f, 8, 3));
    sl_upconn_t *u = sl_upconn_get(&f.w, &f.peer, REQ);
    ASSERT(u != NULL);
    u->requests = 3;
    sl_upconn_release(u, 1);
    ASSERT_EQ(f.peer.nidle, 0);

    u = sl_upconn_get(&f.w, &f.peer, REQ);
    ASSERT(u != NULL);
    u->requests = 1;
    sl_upconn_release(u, 0);
    ASSERT_EQ(f.peer.nidle, 0);
    ASSERT_EQ(f.peer.active, 0);
    fixture_done(&f);
}

TEST(pool_is_bounded_by_pool_size)
{
    pool_fixture_t f;
    ASSERT_OK(fixture_init(&f, 1, 100));
    sl_upconn_t *a = sl_upconn_get(&f.w, &f.peer, REQ);
    sl_upconn_t *b = sl_upconn_get(&f.w, &f.peer, REQ);
    ASSERT(a != NULL && b != NULL && a != b);
    ASSERT_EQ(f.peer.active, 2);
    sl_upconn_release(a, 1);
    sl_upconn_release(b, 1);
    ASSERT_EQ(f.peer.nidle, 1);
    ASSERT_EQ(f.peer.active, 0);
    fixture_done(&f);
}

TEST(pool_drops_a_connection_the_upstream_closed)
{
    pool_fixture_t f;
    ASSERT_OK(fixture_init(&f, 8, 100));
    sl_upconn_t *u = sl_upconn_get(&f.w, &f.peer, REQ);
    ASSERT(u != NULL);
    int s = accept(f.lfd, NULL, NULL);
    ASSERT(s >= 0);
    /* Let the non-blocking connect finish before pooling. */
    for (int i = 0; i < 10 && !u->connected; i++) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(u->sock.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
            u->connected = 1;
    }
    u->requests = 1;
    sl_upconn_release(u, 1);
    ASSERT_EQ(f.peer.nidle, 1);
    close(s);
    for (int i = 0; i < 50 && f.peer.nidle > 0; i++) {
        ev_run(f.w.loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    ASSERT_EQ(f.peer.nidle, 0);
    fixture_done(&f);
}

static struct sockaddr_storage loopback(uint16_t port, socklen_t *len)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin->sin_port = htons(port);
    *len = sizeof(*sin);
    return ss;
}

TEST(adhoc_peers_are_one_per_address_and_host_and_reuse_idle_slots)
{
    pool_fixture_t f;
    ASSERT_OK(fixture_init(&f, 8, 100));
    socklen_t len;
    struct sockaddr_storage a = loopback(f.target.port, &len);
    sl_peer_t *p1 = sl_adhoc_peer_get(&f.w, &a, len, "127.0.0.1", 9, f.target.port);
    ASSERT(p1 != NULL);
    ASSERT(sl_adhoc_peer_get(&f.w, &a, len, "127.0.0.1", 9, f.target.port) == p1);
    /* The same address under another Host text is another peer. */
    sl_peer_t *p2 = sl_adhoc_peer_get(&f.w, &a, len, "localhost", 9, f.target.port);
    ASSERT(p2 != NULL && p2 != p1);
    ASSERT(strcmp(p2->conf->host, "localhost") == 0);

    /* A pooled connection stays with its peer. */
    sl_upconn_t *u = sl_upconn_get(&f.w, p1, REQ);
    ASSERT(u != NULL);
    sl_upconn_release(u, 1);
    ASSERT_EQ(p1->nidle, 1);

    /* Busy peers are never taken; when every slot is busy, EBUSY. */
    for (int i = 0; i < SL_ADHOC_PEERS; i++) {
        struct sockaddr_storage b = loopback((uint16_t)(20000 + i), &len);
        sl_peer_t *p = sl_adhoc_peer_get(&f.w, &b, len, "127.0.0.1", 9, (uint16_t)(20000 + i));
        ASSERT(p != NULL);
        p->active = 1;
    }
    struct sockaddr_storage c = loopback(30000, &len);
    errno = 0;
    ASSERT(sl_adhoc_peer_get(&f.w, &c, len, "127.0.0.1", 9, 30000) == NULL);
    ASSERT_EQ(errno, EBUSY);
    /* An idle slot is reused: its pooled connections are closed first. */
    for (int i = 0; i < SL_ADHOC_PEERS; i++)
        f.w.adhoc[i].peer.active = 0;
    ASSERT(sl_adhoc_peer_get(&f.w, &c, len, "127.0.0.1", 9, 30000) != NULL);

    sl_adhoc_peers_destroy(&f.w);
    ASSERT(f.w.adhoc == NULL);
    fixture_done(&f);
}
