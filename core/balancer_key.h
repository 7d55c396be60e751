/* balancer_key.h: the per-request key that consistent hashing hashes on. */
#ifndef SL_BALANCER_KEY_H
#define SL_BALANCER_KEY_H

#include "balancer.h"

/* Computes the hashing key of req for its upstream (req->ups) into ctx:
 * the upstream's hash_on source, else its hash_fallback, else no key
 * (ctx->has_hash = 0: the ring is walked round-robin, as Kong does for
 * hash_on none). Call it once per request, before the first select, and only
 * for consistent-hashing upstreams. For a cookie key missing from the
 * request it generates a value, hashes on that and adds
 * `Set-Cookie: NAME=VALUE; Path=PATH` to the client response. Never fails:
 * a cookie that cannot be set is logged and the request still balances. */
void sl_balancer_key(sl_request_t *req, sl_balancer_ctx_t *ctx);

#endif
