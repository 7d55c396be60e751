/* redis.c: hiredis's async client on the worker's libev loop, for sluice.redis. */
#include <ev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>

#include <hiredis/adapters/libev.h>

#include "log.h"
#include "proxy.h"
#include "sl_ffi.h"
#include "sl_lua.h"

/* Idle connections kept per worker (all servers together): enough for the
 * few Redis servers a gateway talks to, bounded so a leak cannot grow. */
#define POOL_MAX 64

typedef struct redis_op_s redis_op_t;

/* A connection. While a task uses it, it sits on that task's wait list
 * (never woken) so a task that ends without set_keepalive closes it. */
typedef struct redis_conn_s {
    sl_wait_t owner;
    redisAsyncContext *ac;
    redis_op_t *op; /* the operation in flight, if any */
    sl_queue_t pool_link;
    char key[80]; /* "ip:port" */
    int connected;
    int dead;
    int handle;
} redis_conn_t;

/* An operation a task waits for: the connect, or a batch of commands. */
struct redis_op_s {
    sl_wait_t wait;
    ev_timer timer;
    redis_conn_t *conn;
    int expected, received;
    int done;
    const char *err;
    char *buf; /* the replies, serialized for Lua (see lua/sluice/redis.lua) */
    size_t len, cap;
};

static sl_queue_t pool = {&pool, &pool};
static int npooled;

/* Handles given to Lua: small integers, so Lua never holds a C pointer. */
#define MAX_CONNS 4096
static redis_conn_t *conns[MAX_CONNS];

static int handle_new(redis_conn_t *c)
{
    for (int i = 1; i < MAX_CONNS; i++) {
        if (conns[i] == NULL) {
            conns[i] = c;
            c->handle = i;
            return i;
        }
    }
    return 0;
}

static redis_conn_t *handle_get(int h)
{
    return h > 0 && h < MAX_CONNS ? conns[h] : NULL;
}

static void wake_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    redis_op_t *op = (redis_op_t *)((char *)t - offsetof(redis_op_t, timer));
    /* Stays on the task's list until Lua fetches it (sl_ffi_redis_result). */
    sl_lua_wake(op->wait.task, op->wait.id);
}

/* Ends an operation. The task is woken on the next loop iteration, never
 * from inside a hiredis callback: Lua may close or free the connection, and
 * hiredis still uses it when the callback returns. */
static void op_finish(redis_op_t *op, const char *err)
{
    if (op->done)
        return;
    op->done = 1;
    op->err = err;
    if (op->conn != NULL)
        op->conn->op = NULL;
    op->conn = NULL;
    struct ev_loop *loop = ev_default_loop(0);
    ev_timer_stop(loop, &op->timer);
    ev_set_cb(&op->timer, wake_cb);
    ev_timer_set(&op->timer, 0., 0.);
    ev_timer_start(loop, &op->timer);
}

static void op_free(redis_op_t *op)
{
    ev_timer_stop(ev_default_loop(0), &op->timer);
    if (op->conn != NULL && op->conn->op == op)
        op->conn->op = NULL;
    op->conn = NULL;
    free(op->buf);
    free(op);
}

/* Drops a connection: the disconnect callback frees it. */
static void conn_kill(redis_conn_t *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (c->ac != NULL)
        redisAsyncDisconnect(c->ac);
}

static void conn_free(redis_conn_t *c)
{
    if (c->handle > 0)
        conns[c->handle] = NULL;
    free(c);
}

static void op_cancel(sl_wait_t *w)
{
    redis_op_t *op = (redis_op_t *)w;
    /* Replies still due would belong to nobody: the connection goes too. */
    if (!op->done && op->conn != NULL) {
        op->conn->op = NULL;
        conn_kill(op->conn);
    }
    op_free(op);
}

static void owner_cancel(sl_wait_t *w)
{
    redis_conn_t *c = (redis_conn_t *)w;
    c->owner.task = NULL;
    conn_kill(c);
}

static int put(redis_op_t *op, const char *s, size_t n)
{
    if (op->cap - op->len < n) {
        size_t cap = op->cap ? op->cap * 2 : 256;
        while (cap - op->len < n)
            cap *= 2;
        char *b = realloc(op->buf, cap);
        if (b == NULL)
            return SL_ERROR;
        op->buf = b;
        op->cap = cap;
    }
    memcpy(op->buf + op->len, s, n);
    op->len += n;
    return SL_OK;
}

/* Serializes a reply: "_" nil, ":N\n" integer, "$LEN:bytes" string,
 * "+LEN:bytes" status, "-LEN:bytes" error, "*COUNT:" then the elements. */
static int serialize(redis_op_t *op, const redisReply *r)
{
    char head[48];
    int n;
    switch (r->type) {
    case REDIS_REPLY_NIL:
        return put(op, "_", 1);
    case REDIS_REPLY_INTEGER:
        n = snprintf(head, sizeof(head), ":%lld\n", r->integer);
        return put(op, head, (size_t)n);
    case REDIS_REPLY_ARRAY:
        n = snprintf(head, sizeof(head), "*%zu:", r->elements);
        if (put(op, head, (size_t)n) != SL_OK)
            return SL_ERROR;
        for (size_t i = 0; i < r->elements; i++)
            if (serialize(op, r->element[i]) != SL_OK)
                return SL_ERROR;
        return SL_OK;
    default: {
        char t = r->type == REDIS_REPLY_STATUS ? '+' : r->type == REDIS_REPLY_ERROR ? '-' : '$';
        n = snprintf(head, sizeof(head), "%c%zu:", t, r->len);
        if (put(op, head, (size_t)n) != SL_OK)
            return SL_ERROR;
        return put(op, r->str, r->len);
    }
    }
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_conn_t *c = ac->data;
    redis_op_t *op = privdata;
    /* A reply for an operation that was cancelled: op was freed with its
     * request, and the connection is being dropped. */
    if (c == NULL || c->op != op || op == NULL)
        return;
    if (reply == NULL) {
        op_finish(op, "connection closed");
        return;
    }
    if (serialize(op, reply) != SL_OK) {
        op_finish(op, "out of memory");
        return;
    }
    if (++op->received == op->expected)
        op_finish(op, NULL);
}

static void connect_cb(const redisAsyncContext *ac, int status)
{
    redis_conn_t *c = ac->data;
    if (c == NULL)
        return;
    redis_op_t *op = c->op;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this and calls no disconnect
         * callback for a connection that never came up: free ours here. */
        c->dead = 1;
        c->ac = NULL;
        if (op != NULL)
            op_finish(op, "connection refused");
        if (c->owner.task != NULL)
            sl_lua_wait_done(&c->owner);
        conn_free(c);
        return;
    }
    c->connected = 1;
    if (op != NULL)
        op_finish(op, NULL);
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
    SL_UNUSED(status);
    redis_conn_t *c = ac->data;
    if (c == NULL)
        return;
    c->dead = 1;
    c->ac = NULL;
    if (c->op != NULL)
        op_finish(c->op, "connection closed");
    if (c->pool_link.next != &c->pool_link) {
        sl_queue_remove(&c->pool_link);
        npooled--;
    }
    if (c->owner.task != NULL)
        sl_lua_wait_done(&c->owner);
    conn_free(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(revents);
    redis_op_t *op = (redis_op_t *)((char *)t - offsetof(redis_op_t, timer));
    redis_conn_t *c = op->conn;
    op_finish(op, "timeout");
    if (c != NULL)
        conn_kill(c);
}

static redis_op_t *op_new(sl_lua_task_t *t, int id, redis_conn_t *c, double timeout)
{
    redis_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->conn = c;
    c->op = op;
    sl_lua_wait_add(t, &op->wait, id, op_cancel);
    ev_timer_init(&op->timer, timer_cb, timeout > 0 ? timeout : 1., 0.);
    ev_timer_start(ev_default_loop(0), &op->timer);
    return op;
}

SL_EXPORT int sl_ffi_redis_connect(sl_lua_task_t *t, int id, const char *ip, int port,
                                   double timeout, int *handle, int *fresh, const char **err)
{
    char key[80];
    snprintf(key, sizeof(key), "%s:%d", ip, port);
    *fresh = 0;
    for (sl_queue_t *q = pool.next; q != &pool; q = q->next) {
        redis_conn_t *c = sl_queue_data(q, redis_conn_t, pool_link);
        if (!c->dead && strcmp(c->key, key) == 0) {
            sl_queue_remove(&c->pool_link);
            npooled--;
            sl_lua_wait_add(t, &c->owner, 0, owner_cancel);
            *handle = c->handle;
            return SL_OK;
        }
    }
    redis_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL || handle_new(c) == 0) {
        free(c);
        *err = c == NULL ? "out of memory" : "too many redis connections";
        return SL_ERROR;
    }
    sl_queue_init(&c->pool_link);
    snprintf(c->key, sizeof(c->key), "%s", key);
    c->ac = redisAsyncConnect(ip, port);
    if (c->ac == NULL || c->ac->err) {
        *err = "cannot connect";
        if (c->ac != NULL)
            redisAsyncFree(c->ac);
        conn_free(c);
        return SL_ERROR;
    }
    c->ac->data = c;
    redisLibevAttach(ev_default_loop(0), c->ac);
    redisAsyncSetConnectCallback(c->ac, connect_cb);
    redisAsyncSetDisconnectCallback(c->ac, disconnect_cb);
    sl_lua_wait_add(t, &c->owner, 0, owner_cancel);
    if (op_new(t, id, c, timeout) == NULL) {
        *err = "out of memory";
        conn_kill(c);
        return SL_ERROR;
    }
    *handle = c->handle;
    *fresh = 1;
    return SL_AGAIN;
}

SL_EXPORT int sl_ffi_redis_send(sl_lua_task_t *t, int id, int handle, int ncommands,
                                const int *argcs, const char **argv, const size_t *argvlen,
                                double timeout, const char **err)
{
    redis_conn_t *c = handle_get(handle);
    if (c == NULL || c->dead || c->ac == NULL) {
        *err = "closed";
        return SL_ERROR;
    }
    if (c->op != NULL) {
        *err = "a command is already running on this connection";
        return SL_ERROR;
    }
    redis_op_t *op = op_new(t, id, c, timeout);
    if (op == NULL) {
        *err = "out of memory";
        return SL_ERROR;
    }
    op->expected = ncommands;
    for (int i = 0, at = 0; i < ncommands; at += argcs[i], i++) {
        if (redisAsyncCommandArgv(c->ac, reply_cb, op, argcs[i], argv + at, argvlen + at) !=
            REDIS_OK) {
            op_finish(op, "cannot send the command");
            conn_kill(c);
            return SL_OK; /* the result says why */
        }
    }
    return SL_OK;
}

static redis_op_t *op_find(sl_lua_task_t *t, int id)
{
    return (redis_op_t *)sl_lua_wait_find(t, id, op_cancel);
}

SL_EXPORT int sl_ffi_redis_result(sl_lua_task_t *t, int id, const char **buf, size_t *len,
                                  const char **err)
{
    redis_op_t *op = op_find(t, id);
    if (op == NULL || !op->done) {
        *err = "no such operation";
        return SL_ERROR;
    }
    if (op->err != NULL) {
        *err = op->err;
        return SL_ERROR;
    }
    *buf = op->buf != NULL ? op->buf : "";
    *len = op->len;
    return SL_OK;
}

SL_EXPORT void sl_ffi_redis_op_free(sl_lua_task_t *t, int id)
{
    redis_op_t *op = op_find(t, id);
    if (op != NULL) {
        sl_lua_wait_done(&op->wait);
        op_free(op);
    }
}

SL_EXPORT int sl_ffi_redis_keepalive(int handle)
{
    redis_conn_t *c = handle_get(handle);
    if (c == NULL || c->dead || c->op != NULL)
        return SL_DECLINED;
    if (c->owner.task != NULL) {
        sl_lua_wait_done(&c->owner);
        c->owner.task = NULL;
    }
    if (npooled >= POOL_MAX) {
        conn_kill(c);
        return SL_OK;
    }
    sl_queue_insert_head(&pool, &c->pool_link);
    npooled++;
    return SL_OK;
}

SL_EXPORT int sl_ffi_redis_close(int handle)
{
    redis_conn_t *c = handle_get(handle);
    if (c == NULL)
        return SL_DECLINED;
    if (c->owner.task != NULL) {
        sl_lua_wait_done(&c->owner);
        c->owner.task = NULL;
    }
    conn_kill(c);
    return SL_OK;
}
