/* worker.h: a worker process: one libev loop serving its listeners until told to stop. */
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include <ev.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "upstream.h"

struct sl_worker_s {
    struct ev_loop *loop;
    const sl_config_t *cf;
    int id;
    sl_listener_t *listeners;
    size_t nlisteners;
    sl_upstream_state_t *ups;
    size_t nups;
    sl_adhoc_peer_t *adhoc; /* SL_ADHOC_PEERS entries, or NULL before the first set_target */

    size_t buf_size; /* every sl_buf_t of this worker has this size */
    sl_buf_t *free_bufs;
    size_t nfree_bufs;
    sl_request_t *free_reqs;
    size_t nfree_reqs;

    sl_queue_t conns; /* every open downstream connection */
    size_t nconns;

    sl_access_log_t access_log;
    ev_timer flush_timer;
    ev_signal sigterm;
    ev_signal sigint;
    ev_signal sigquit;
    ev_signal sighup;
    ev_timer shutdown_timer;
    int shutting_down;

    uint64_t request_seq;
    char id_prefix[17]; /* hex: boot random ^ pid; request ids append a counter */
};

/* Runs worker `id` on the listener fds (one per cf->server.listens entry)
 * until shutdown, then returns the exit code. Never returns into the master's
 * loop: the caller exits with it. */
int sl_worker_run(const sl_config_t *cf, int id, const int *fds);

/* Called when a connection closes during shutdown: exits the loop once the
 * last one is gone. */
void sl_worker_conn_closed(sl_worker_t *w);

#endif
