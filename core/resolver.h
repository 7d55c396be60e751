/* resolver.h: non-blocking DNS for a worker: c-ares on the libev loop, with a cache that
 * honours TTLs. */
#ifndef SL_RESOLVER_H
#define SL_RESOLVER_H

#include <ev.h>
#include <sys/socket.h>

#include "config.h"

typedef struct sl_resolve_s sl_resolve_t;

/* Called when a lookup that returned SL_AGAIN ends, from the event loop (never
 * from inside sl_resolve): status SL_OK with the address (port 0), or
 * SL_ERROR with err, a static string. The handle is freed after the call. */
typedef void (*sl_resolve_done_t)(void *data, int status, const struct sockaddr_storage *addr,
                                  socklen_t addrlen, const char *err);

/* Starts the worker's resolver on loop with server's dns_* settings. Returns
 * SL_OK, or SL_ERROR with *err (c-ares could not start: bad servers, no
 * memory). Without it every lookup fails with "no resolver". */
int sl_resolver_init(struct ev_loop *loop, const sl_server_conf_t *server, const char **err);

/* Cancels every lookup (their callbacks are not called) and frees the cache. */
void sl_resolver_close(void);

/* Looks name[0..len) up (A, then AAAA; the hosts file first). Returns SL_OK
 * with *addr when the cache answers: several addresses take turns; SL_AGAIN
 * when a query started: done(data, ...) follows, *handle cancels it; SL_ERROR
 * with *err when the cache holds a failure or no query could start. */
int sl_resolve(const char *name, size_t len, struct sockaddr_storage *addr, socklen_t *addrlen,
               sl_resolve_done_t done, void *data, sl_resolve_t **handle, const char **err);

/* Forgets a pending lookup: done is never called for it. */
void sl_resolve_cancel(sl_resolve_t *q);

/* Parses an IPv4 or IPv6 literal (text[0..len), no brackets) into ss with
 * port. Returns 1, or 0 when text is not an address literal (a name). */
int sl_addr_literal(const char *text, size_t len, int port, struct sockaddr_storage *ss,
                    socklen_t *sslen);

/* Resolves name the same way, but blocking, with its own channel: for the
 * master at config load (never on a worker's loop). Fills addrs/lens with
 * every distinct IPv4 and IPv6 address (at most max, port 0) and sets *n.
 * Returns SL_OK, or SL_ERROR with *err (c-ares's reason, a static string). */
int sl_resolve_all(const sl_server_conf_t *server, const char *name, struct sockaddr_storage *addrs,
                   socklen_t *lens, size_t max, size_t *n, const char **err);

/* How long an answer with the given TTL (seconds) is kept under server's
 * settings: dns_valid_ttl when set, else the TTL within dns_min_ttl ..
 * dns_max_ttl (a bound of 0 is none); never less than a second. */
double sl_resolver_ttl(const sl_server_conf_t *server, int ttl);

/* Every address of a name, without blocking, on a channel the caller drives
 * with poll(2): the master re-resolves target names this way (targets.c),
 * next to its signals. */

/* Called when a lookup ends: status SL_OK with n >= 1 distinct addresses
 * (IPv4 first, port 0) and the smallest TTL among them; SL_DECLINED when the
 * name has no address (NXDOMAIN, or no A/AAAA record); SL_ERROR on any other
 * failure (server failure, timeout). err is a static string when status is
 * not SL_OK. The arrays are only valid during the call. */
typedef void (*sl_resolve_all_done_t)(void *data, int status, const struct sockaddr_storage *addrs,
                                      const socklen_t *lens, size_t n, int ttl, const char *err);

struct pollfd;

/* Opens the polled channel with server's dns_* settings. Returns SL_OK, or
 * SL_ERROR with *err. */
int sl_resolver_poll_open(const sl_server_conf_t *server, const char **err);

/* Closes it: pending lookups end without their callbacks (also in a forked
 * child, which must not share the parent's DNS sockets). */
void sl_resolver_poll_close(void);

/* Starts looking up every address of name (at most max). done may run before
 * this returns (a hosts-file answer), else from sl_resolver_poll_process.
 * Returns SL_OK, or SL_ERROR when the channel is closed or memory ran out
 * (done is then never called). */
int sl_resolver_poll_start(const char *name, size_t max, sl_resolve_all_done_t done, void *data);

/* Fills fds (up to max) with the channel's sockets and the events to wait
 * for; returns how many. */
int sl_resolver_poll_fds(struct pollfd *fds, int max);

/* Milliseconds until the channel needs sl_resolver_poll_process even without
 * events (a retransmission, a timeout); -1 when nothing is pending. */
int sl_resolver_poll_timeout(void);

/* Handles what poll(2) reported in fds[0..n) (as sl_resolver_poll_fds filled
 * them) and the channel's timeouts; lookups that end call their done. */
void sl_resolver_poll_process(const struct pollfd *fds, int n);

#endif
