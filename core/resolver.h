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

#endif
