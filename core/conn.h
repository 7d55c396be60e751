/* conn.h: downstream connections, their I/O interface, buffers and timeouts. */
#ifndef SL_CONN_H
#define SL_CONN_H

#include <ev.h>
#include <netinet/in.h>
#include <sys/uio.h>

#include "config.h"

typedef struct sl_worker_s sl_worker_t;
typedef struct sl_conn_s sl_conn_t;
typedef struct sl_request_s sl_request_t;

/* A fixed-size byte buffer from the worker's free list. Bytes live in
 * data[start, end). */
typedef struct sl_buf_s {
    struct sl_buf_s *next; /* free-list link */
    size_t size;
    size_t start;
    size_t end;
    char data[];
} sl_buf_t;

/* Returns a buffer of the worker's buffer size, from the free list when it
 * has one; NULL when out of memory. */
sl_buf_t *sl_buf_get(sl_worker_t *w);

/* Gives b back to the free list (or frees it past the list's bound). */
void sl_buf_put(sl_worker_t *w, sl_buf_t *b);

typedef struct sl_io_s sl_io_t;

/* How a socket is read and written: plain now, TLS later. Both downstream
 * connections and upstream connections go through it, so the proxy logic
 * never sees which. read and writev return bytes moved, 0 on EOF (read only),
 * SL_AGAIN when the socket is not ready, or SL_ERROR with errno set. */
typedef struct {
    ssize_t (*read)(sl_io_t *io, char *buf, size_t len);
    ssize_t (*writev)(sl_io_t *io, const struct iovec *iov, int iovcnt);
    void (*shutdown)(sl_io_t *io);
} sl_io_ops_t;

struct sl_io_s {
    int fd;
    const sl_io_ops_t *ops;
};

extern const sl_io_ops_t sl_plain_io;

/* Writes all of iov or returns SL_AGAIN with *written set to what went out;
 * SL_ERROR (errno set) on a dead socket. Adjusts iov in place. */
int sl_io_writev_all(sl_io_t *io, struct iovec *iov, int iovcnt, size_t *written);

/* A timer that is cheap to push back: touching it only moves the deadline;
 * the libev timer is re-armed when it fires early. Costs nothing per read. */
typedef struct {
    ev_timer ev;
    ev_tstamp deadline;
} sl_timer_t;

void sl_timer_init(sl_timer_t *t, void (*cb)(struct ev_loop *, ev_timer *, int), void *data);

/* Arms t to fire after ms milliseconds from now (replacing any deadline). */
void sl_timer_set(struct ev_loop *loop, sl_timer_t *t, int ms);

void sl_timer_stop(struct ev_loop *loop, sl_timer_t *t);

/* For the callback: returns 1 when the deadline has really passed, else
 * re-arms for the rest and returns 0. */
int sl_timer_expired(struct ev_loop *loop, sl_timer_t *t);

typedef struct {
    int fd;
    const sl_listen_t *conf;
    ev_io io;
    sl_worker_t *w;
    uint16_t port;
} sl_listener_t;

enum {
    SL_CONN_IDLE = 0, /* between requests: no buffer held */
    SL_CONN_HEAD,     /* reading a request head */
    SL_CONN_REQUEST,  /* a request is being proxied */
    SL_CONN_LINGER,   /* response sent, draining input before close */
};

struct sl_conn_s {
    ev_io io;
    sl_timer_t timer;
    sl_queue_t link; /* in the worker's list of open connections */
    sl_worker_t *w;
    sl_io_t sock;
    const sl_listener_t *ls;
    sl_buf_t *in; /* client bytes; NULL while idle */
    sl_request_t *req;
    int state;       /* SL_CONN_* */
    unsigned events; /* what io watches */
    uint32_t requests;
    uint64_t serial;      /* this worker's count of accepted connections, from 1 */
    unsigned eof : 1;     /* the client closed its side */
    unsigned closing : 1; /* close once the current response is sent */
    /* The peer, as an IPv4-mapped or IPv6 address, and its text form. */
    uint8_t peer[16];
    uint16_t peer_port;
    uint8_t peer_text_len;
    char peer_text[46];
};

/* Creates a connection for an accepted, non-blocking fd and starts reading.
 * Returns NULL (and closes fd) when out of memory. */
sl_conn_t *sl_conn_create(sl_worker_t *w, const sl_listener_t *ls, int fd,
                          const struct sockaddr *sa, socklen_t salen);

/* Closes the socket and frees c and what it holds. */
void sl_conn_close(sl_conn_t *c);

/* Changes which events the watcher asks for (EV_READ, EV_WRITE or both). */
void sl_conn_watch(sl_conn_t *c, unsigned events);

/* Drops count bytes from the front of iov, adjusting it in place; returns the
 * new iovcnt and advances *iovp. */
int sl_iov_advance(struct iovec **iovp, int iovcnt, size_t count);

#endif
