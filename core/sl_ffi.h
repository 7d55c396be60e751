/* sl_ffi.h: every C function the Lua PDK calls through LuaJIT's FFI, in one place.
 *
 * Rules for everything declared here (a test compares this file with the Lua
 * ffi.cdef in lua/sluice/ffi.lua, so the two can never drift apart):
 * - names are sl_ffi_<area>_<verb> and carry SL_EXPORT so ffi.C can see them;
 * - they return int (SL_OK or a negative SL_* code) and report failures
 *   through `const char **err`, pointing at a static string;
 * - they never allocate for the caller and never longjmp;
 * - only plain C types cross the boundary (no libev, no Lua types).
 * Each area keeps its declarations between its own BEGIN/END markers. */
#ifndef SL_FFI_H
#define SL_FFI_H

#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

/* BEGIN request */
typedef struct sl_request_s sl_request_t;

/* What a wait wakes: a proxied request's phases, a timer run, an in-process
 * test request (see core/sl_lua.h). Waiting PDK calls take the current one. */
typedef struct sl_lua_task_s sl_lua_task_t;

/* Phases, in the order a request goes through them. */
enum {
    SL_PHASE_NONE = 0,
    SL_PHASE_INIT_WORKER = 1,
    SL_PHASE_REWRITE = 2,
    SL_PHASE_ACCESS = 3,
    SL_PHASE_HEADER_FILTER = 4,
    SL_PHASE_BODY_FILTER = 5,
    SL_PHASE_LOG = 6,   /* always the last phase of a request */
    SL_PHASE_TIMER = 7, /* a timer's function, outside any request */
};

/* The request whose Lua code runs now; C sets it before every resume, so a
 * PDK call made after a yield still finds its own request. task is the
 * coroutine's task (NULL on the main Lua state); r is NULL in a timer. Lua
 * sets has_ctx when it makes the task's context (a table it must drop at the
 * end); a request whose plugins never need one costs no Lua call when it
 * ends. */
typedef struct {
    sl_request_t *r;
    sl_lua_task_t *task;
    int phase;
    int has_ctx;
    double id; /* the per-worker request number: the key of its Lua context */
} sl_ffi_current_t;

SL_EXPORT extern sl_ffi_current_t sl_ffi_current;

/* The request line: method, raw path (before '?') and raw query. has_query
 * says whether a '?' was present. */
SL_EXPORT int sl_ffi_req_get_line(sl_request_t *r, const char **method, size_t *mlen,
                                  const char **path, size_t *plen, const char **query, size_t *qlen,
                                  int *has_query);

/* The Host the request named (without the port) and the port it arrived on. */
SL_EXPORT int sl_ffi_req_get_host(sl_request_t *r, const char **host, size_t *hlen, int *port);

/* The normalized path the router matched, and the route's regex captures:
 * capture i spans [caps[2i], caps[2i+1]) of it (-1 when unset). */
SL_EXPORT int sl_ffi_req_get_match(sl_request_t *r, const char **path, size_t *plen,
                                   const int **caps, int *ncaps, const char *const **names);

/* Request headers, in order: count, then each by index (0-based). */
SL_EXPORT int sl_ffi_req_header_count(sl_request_t *r);
SL_EXPORT int sl_ffi_req_header_at(sl_request_t *r, int i, const char **name, size_t *nlen,
                                   const char **value, size_t *vlen);

/* The whole request body for Lua (rewrite, access). SL_OK: *body, *len is
 * the body as it goes upstream (chunked framing decoded, or what
 * sl_ffi_req_set_body made it), valid until the body changes or the request
 * ends. SL_DECLINED: the request has no body. SL_AGAIN: the rest is still
 * arriving; the caller yields until wait `id` is woken, then calls again.
 * SL_ERROR with *err: the body is larger than server.client_body_buffer_size
 * (it then streams upstream as the client sent it), another thread already
 * waits for it, or the phase is wrong. */
SL_EXPORT int sl_ffi_req_read_body(sl_request_t *r, int id, const char **body, size_t *len,
                                   const char **err);

/* Makes body[0, len) (copied) the request body sent upstream, framed with a
 * Content-Length (rewrite, access). SL_OK when done. SL_AGAIN when the
 * client's own body must first be read to its end and dropped, so that the
 * connection stays usable: the caller yields until wait `id` is woken (the
 * replacement is in place by then). SL_ERROR with *err. */
SL_EXPORT int sl_ffi_req_set_body(sl_request_t *r, int id, const char *body, size_t len,
                                  const char **err);

/* Seconds since the epoch when the request head was complete. */
SL_EXPORT double sl_ffi_req_start_time(sl_request_t *r);

/* The request's HTTP version: 10 or 11. */
SL_EXPORT int sl_ffi_req_http_version(sl_request_t *r);

/* The client's address and port. */
SL_EXPORT int sl_ffi_req_client(sl_request_t *r, const char **ip, size_t *len, int *port);

/* The client's connection: the local address it reached (text in
 * addr[0, cap), at least 46 bytes; the listener's when the request has no
 * socket), the listener's port, the connection's serial number in this
 * worker (from 1) and how many requests it carried so far, this one
 * included. */
SL_EXPORT int sl_ffi_req_conn(sl_request_t *r, char *addr, size_t cap, size_t *alen, int *port,
                              double *serial, int *requests);

/* Lowers the request body's limit to `bytes` for this request (rewrite,
 * access): the body may have at most that many bytes and at most
 * server.max_body_size. A Content-Length above it, or a chunked body that
 * grows past it, gets 413 as server.max_body_size does (core/proxy.c).
 * SL_OK; SL_DECLINED when the body is already known to be over (its
 * Content-Length, or what arrived); SL_ERROR with *err. */
SL_EXPORT int sl_ffi_req_set_max_body_size(sl_request_t *r, uint64_t bytes, const char **err);

/* The fields plugins add to the request's access log line
 * (sluice.log.set_serialize_value): json[0, len) is `,"key":value...`,
 * copied into the request's arena and replacing the previous set; len 0
 * drops them. SL_ERROR with *err when out of memory. */
SL_EXPORT int sl_ffi_log_set_fields(sl_request_t *r, const char *json, size_t len,
                                    const char **err);

/* The response (header_filter, log): the status the client gets, and the
 * upstream's headers by index. sl_ffi_upstream_status is the upstream's own
 * status, 0 when none answered. */
SL_EXPORT int sl_ffi_resp_status(sl_request_t *r);
SL_EXPORT int sl_ffi_upstream_status(sl_request_t *r);
SL_EXPORT int sl_ffi_resp_header_count(sl_request_t *r);
SL_EXPORT int sl_ffi_resp_header_at(sl_request_t *r, int i, const char **name, size_t *nlen,
                                    const char **value, size_t *vlen);

/* The first value of header `name` (case-insensitive; '_' matches '-'):
 * target 0 the client's request, 1 the upstream's response. SL_DECLINED when
 * there is none (or no response yet). */
SL_EXPORT int sl_ffi_header_get(sl_request_t *r, int target, const char *name, size_t nlen,
                                const char **value, size_t *vlen);

/* Header edits, applied when the head they target is written: target 0 is
 * the request sent upstream, 1 the response sent to the client; op 0 sets
 * (replacing every header of that name), 1 adds, 2 clears. Returns SL_OK,
 * SL_ERROR with *err, or N > 0 when argument N is invalid: 1 the name is not
 * a token, 2 the value holds CR, LF or NUL. */
SL_EXPORT int sl_ffi_header_op(sl_request_t *r, int target, int op, const char *name, size_t nlen,
                               const char *value, size_t vlen, const char **err);

/* JSON scanning for lua/sluice/json_edit.lua (core/json.h), on Lua string
 * indices: returns the index just past what starts at index p of s[1..len]:
 * what 0 blanks, 1 a string, 2 a value (len + 1 when the text ends first). */
SL_EXPORT int sl_ffi_json_skip(int what, const char *s, int len, int p);

/* Whether s[0, len) is exactly one valid JSON value (core/json.h). */
SL_EXPORT int sl_ffi_json_valid(const char *s, int len);

/* Checks one header line a plugin's exit sends: returns 0, 1 when the name
 * is not a token, 2 when the value holds CR, LF or NUL. Never fails. */
SL_EXPORT int sl_ffi_header_check(const char *name, size_t nlen, const char *value, size_t vlen);

/* Replaces what goes upstream: what 0 = method, 1 = path, 2 = raw query. */
SL_EXPORT int sl_ffi_upstream_set(sl_request_t *r, int what, const char *value, size_t len,
                                  const char **err);

/* Also runs the Lua phases in mask (bit 1 << SL_PHASE_*) for this request,
 * on top of its route's: the runner asks for them when an authenticated
 * consumer brings plugins of its own. Replaces an earlier mask. */
SL_EXPORT int sl_ffi_req_set_phases(sl_request_t *r, unsigned mask);

/* Who authenticated the request, for upstreams with hash_on: consumer: the
 * consumer's id, else the credential's (Kong's order); len 0 forgets it.
 * Copies the id into the request's arena. SL_ERROR with *err when out of
 * memory. */
SL_EXPORT int sl_ffi_req_set_consumer(sl_request_t *r, const char *id, size_t len,
                                      const char **err);

/* sluice.service: where this request goes, decided by a plugin (rewrite,
 * access; set_upstream access only). Each overrides the service's setting
 * for this request only and allocates nothing but the Host text of a target.
 * set_upstream sends it to the configured upstream `index` (0-based, in the
 * config's order) and forgets a set_target; set_target sends it to one
 * address, bypassing the balancer: host itself (an IPv4 or IPv6 literal, or
 * "localhost") when ip is NULL, else ip (what host resolved to; host is then
 * only the Host header's name); SL_DECLINED when host needs DNS and no ip
 * came with it. Timeouts are milliseconds (1 to 2147483646), retries 0 to
 * 32767. */
SL_EXPORT int sl_ffi_service_set_upstream(sl_request_t *r, int index, const char **err);
SL_EXPORT int sl_ffi_service_set_target(sl_request_t *r, const char *host, size_t len,
                                        const char *ip, size_t iplen, int port, const char **err);
SL_EXPORT int sl_ffi_service_set_timeouts(sl_request_t *r, int connect_timeout, int write_timeout,
                                          int read_timeout, const char **err);
SL_EXPORT int sl_ffi_service_set_retries(sl_request_t *r, int retries, const char **err);

/* Sets the status of the response sent to the client (header_filter). */
SL_EXPORT int sl_ffi_resp_set_status(sl_request_t *r, int status, const char **err);

/* Response bodies. body_filter runs once per piece of the upstream body that
 * sluice reads (decoded from its framing) and a last time with *eof 1.
 * get_chunk gives the piece of the current call as C has it and the
 * response_body_buffer_size limit; set_chunk replaces what the client gets
 * for this call with data[0, len) (copied). */
SL_EXPORT int sl_ffi_resp_get_chunk(sl_request_t *r, const char **data, size_t *len, int *eof,
                                    size_t *limit);
SL_EXPORT int sl_ffi_resp_set_chunk(sl_request_t *r, const char *data, size_t len,
                                    const char **err);

/* access: read the whole upstream response body (up to
 * server.response_body_buffer_size) before header_filter runs. */
SL_EXPORT int sl_ffi_resp_enable_buffering(sl_request_t *r, const char **err);

/* The upstream body read with buffering on (header_filter, body_filter):
 * SL_OK with *body, *len; SL_DECLINED when buffering is off; SL_ERROR with
 * *err when it did not fit in the buffer (it streams instead). */
SL_EXPORT int sl_ffi_upstream_body(sl_request_t *r, const char **body, size_t *len,
                                   const char **err);

/* With buffering on, in header_filter: replaces the whole body the client
 * gets with body[0, len) (copied); its Content-Length follows. */
SL_EXPORT int sl_ffi_resp_set_body(sl_request_t *r, const char *body, size_t len, const char **err);

/* Starts wait `id` of task t: a timer of `seconds`. The caller yields (or,
 * on the main task, blocks in sluice.loop.wait); t is woken with id when it
 * fires. */
SL_EXPORT int sl_ffi_sleep(sl_lua_task_t *t, double seconds, int id, const char **err);

/* In `sluice test`, outside any task: the task a spec's own waits belong to
 * (they block in sluice.loop.wait). NULL anywhere else. */
SL_EXPORT sl_lua_task_t *sl_ffi_main_task(void);

/* This worker's number (0-based) and the number of workers. */
SL_EXPORT int sl_ffi_worker_id(int *count);

/* This process's id (sluice.worker.pid). */
SL_EXPORT int sl_ffi_worker_pid(void);

/* 1 once the worker is stopping (sluice.worker.exiting), else 0. */
SL_EXPORT int sl_ffi_worker_exiting(void);

/* The wall-clock time in seconds (sluice.now): CLOCK_REALTIME, the clock of
 * sl_ffi_req_start_time, read at each call (a vDSO call, no syscall). */
SL_EXPORT double sl_ffi_now(void);

/* Writes one error-log line at level (0 error .. 4 debug) if enabled. */
SL_EXPORT void sl_ffi_log(int level, const char *msg, size_t len);

/* Arms timer `id` (the Lua side keeps its function) to fire after delay
 * seconds and then, when interval > 0, every interval seconds. Fails outside
 * a worker, or with too many timers pending. */
SL_EXPORT int sl_ffi_timer_start(double delay, double interval, int id, const char **err);

/* Cancels a repeating timer. */
SL_EXPORT int sl_ffi_timer_cancel(int id);

/* sluice.http: starts call `id` of task t: resolves host (an IP literal,
 * or a name through the worker's DNS cache), connects to its port, sends the
 * request bytes Lua built, reads the whole response (at most max_size bytes)
 * within timeout seconds, then wakes t with id. */
SL_EXPORT int sl_ffi_http_start(sl_lua_task_t *t, int id, const char *host, size_t hostlen,
                                int port, const char *bytes, size_t len, int method_head,
                                double timeout, size_t max_size, const char **err);

/* The outcome of a finished call: status, header count and body, or
 * SL_ERROR with what went wrong. Valid until sl_ffi_http_free. */
SL_EXPORT int sl_ffi_http_result(sl_lua_task_t *t, int id, int *status, int *nheaders,
                                 const char **body, size_t *blen, const char **err);
SL_EXPORT int sl_ffi_http_header_at(sl_lua_task_t *t, int id, int i, const char **name,
                                    size_t *nlen, const char **value, size_t *vlen);
SL_EXPORT void sl_ffi_http_free(sl_lua_task_t *t, int id);

/* sluice.redis over hiredis's async client. Connections are small integer
 * handles. connect reuses an idle pooled connection (SL_OK, *fresh 0) or
 * starts one (SL_AGAIN: wait for id). send queues ncommands commands
 * (argcs[i] arguments each, flattened in argv) and wakes id when every
 * reply arrived. result gives the replies serialized for lua/sluice/redis.lua;
 * op_free releases them. keepalive returns a connection to the pool. */
SL_EXPORT int sl_ffi_redis_connect(sl_lua_task_t *t, int id, const char *ip, int port,
                                   double timeout, int *handle, int *fresh, const char **err);
SL_EXPORT int sl_ffi_redis_send(sl_lua_task_t *t, int id, int handle, int ncommands,
                                const int *argcs, const char **argv, const size_t *argvlen,
                                double timeout, const char **err);
SL_EXPORT int sl_ffi_redis_result(sl_lua_task_t *t, int id, const char **buf, size_t *len,
                                  const char **err);
SL_EXPORT void sl_ffi_redis_op_free(sl_lua_task_t *t, int id);
SL_EXPORT int sl_ffi_redis_keepalive(int handle);
SL_EXPORT int sl_ffi_redis_close(int handle);

/* DNS for Lua (set_target, redis): looks name up through the worker's
 * resolver. SL_OK with the address as text in buf (a cached answer);
 * SL_AGAIN when a query started: the caller yields, task t wakes with id,
 * then sl_ffi_dns_result gives the answer (SL_OK, or SL_ERROR with *err) and
 * forgets it; SL_ERROR with *err. buf holds at least 46 bytes. */
SL_EXPORT int sl_ffi_dns_resolve(sl_lua_task_t *t, int id, const char *name, size_t len, char *buf,
                                 size_t cap, const char **err);
SL_EXPORT int sl_ffi_dns_result(sl_lua_task_t *t, int id, char *buf, size_t cap, const char **err);

/* Is the address (text, IPv4 or IPv6) in server.trusted_ips? 1 yes, 0 no,
 * SL_ERROR when it is not an address. */
SL_EXPORT int sl_ffi_ip_trusted(const char *ip, size_t len);
/* END request */

/* BEGIN log */
/* What the log phase knows of a request besides its head, for
 * sluice.log.serialize and the tracing plugins (core/proxy.c; Lua:
 * lua/sluice/pdk.lua). Times are seconds since the epoch (the clock of
 * sl_ffi_now); 0 when that moment did not come. */
typedef struct {
    double start;  /* when the try asked for a connection */
    double header; /* when its response head arrived */
    double finish; /* when it failed; for the last try, when this was filled in log */
    int status;    /* the upstream's status in that head; 0: none */
    int failure;   /* 0: it did not fail; else 1 connect, 2 connect timeout, 3 write,
                    * 4 reset, 5 write timeout, 6 read timeout, 7 invalid response,
                    * 8 a retry_on status */
    int port;
    char ip[48]; /* the target's address as text ("10.0.0.7", "::1"); "" if unknown */
} sl_ffi_try_t;

typedef struct {
    double start;           /* the request head was complete */
    double upstream_start;  /* the first try asked for a connection */
    double upstream_header; /* the response head the client gets arrived from the upstream */
    double now;             /* when this was filled */
    double request_size;    /* bytes read from the client: head and body */
    double bytes_sent;      /* bytes sent to the client so far */
    int status;             /* the status the client gets */
    int upstream_status;    /* the upstream's, 0 when none answered */
    int tries;              /* every try, also those beyond attempts[] */
    int nattempts;          /* the entries of attempts[]: the first 8 tries */
    sl_ffi_try_t attempts[8];
} sl_ffi_log_info_t;

/* Fills *out for the request (header_filter, body_filter, log), and writes
 * the path it was (or will be) sent upstream with, without the query, into
 * path[0, cap) with its length in *plen (cut at cap). Allocates nothing.
 * SL_ERROR with *err outside those phases. */
SL_EXPORT int sl_ffi_log_info(sl_request_t *r, sl_ffi_log_info_t *out, char *path, size_t cap,
                              size_t *plen, const char **err);

/* How many times this worker was told to reopen its log files (SIGUSR1),
 * from 0: a plugin that keeps log files open reopens them when it grew. */
SL_EXPORT int sl_ffi_log_generation(void);
/* END log */

/* BEGIN health */
/* Target health (core/health.c; Lua: sluice.upstream.get_health in
 * lua/sluice/pdk.lua). Reads the shared state every worker sees. */
typedef struct {
    const char *host;   /* as configured; lives as long as the config */
    const char *health; /* "HEALTHY", "UNHEALTHY", "EJECTED" or "HEALTHCHECKS_OFF" */
    int port;
    int weight;
    uint32_t successes; /* Kong's counters, shared by active and passive checks */
    uint32_t http_failures;
    uint32_t tcp_failures;
    uint32_t timeouts;
    uint32_t consecutive_5xx; /* outlier counters (real traffic only) */
    uint32_t consecutive_gateway_failure;
    uint32_t ejections; /* ejections in a row: the next lasts one more base_ejection_time */
    double ejected_for; /* seconds of ejection left; 0 when not ejected */
    double probes;      /* active probes sent to it so far */
    char address[64];   /* the resolved address: "127.0.0.1:8080", "[::1]:8080" */
} sl_ffi_target_health_t;

/* Fills *out with target i (0-based) of the upstream at index (0-based, in
 * the config's order). Returns the upstream's number of targets, or
 * SL_DECLINED when index names no upstream; *healthy is 0 when the upstream
 * as a whole is below its healthchecks.threshold, else 1. */
SL_EXPORT int sl_ffi_upstream_health(int index, int i, sl_ffi_target_health_t *out, int *healthy);
/* END health */

/* BEGIN shdict */
/* Shared dicts (core/shdict.c; Lua: lua/sluice/shared.lua). Keys are 1 to
 * 65535 bytes of anything; a key outside that fails with "empty key" or "key
 * too long". Expired entries are invisible except to a stale get. Every call
 * takes the dict's process-shared lock for its duration and never blocks on
 * anything else. */
typedef struct sl_shdict_s sl_shdict_t;

/* Value types. Booleans travel as num 0 or 1. */
enum { SL_SHDICT_NIL = 0, SL_SHDICT_BOOLEAN = 1, SL_SHDICT_NUMBER = 3, SL_SHDICT_STRING = 4 };

/* Store operations; SL_SHDICT_SAFE may be or-ed into any of them. */
enum { SL_SHDICT_SET = 0, SL_SHDICT_ADD = 1, SL_SHDICT_REPLACE = 2, SL_SHDICT_SAFE = 4 };

/* The dict configured as name[0..len): SL_OK with *dict, or SL_DECLINED. */
SL_EXPORT int sl_ffi_shdict_find(const char *name, size_t len, sl_shdict_t **dict);

/* Like find, but creates and registers a dict of `size` bytes when none has
 * that name (for specs: a dict created after the fork is private to the
 * process that created it). SL_OK, or SL_ERROR with *err. */
SL_EXPORT int sl_ffi_shdict_open(const char *name, size_t len, size_t size, sl_shdict_t **dict,
                                 const char **err);

/* Copies key's value into buf[0..cap): SL_OK with *type, *vlen (strings),
 * *num (numbers, booleans), *flags and *is_stale; SL_DECLINED when there is no
 * such key (or it expired and stale is 0); SL_AGAIN when a string value needs
 * more than cap bytes, with the size in *vlen (call again with a bigger buf);
 * SL_ERROR with *err. A fresh hit counts as a use for the LRU order. */
SL_EXPORT int sl_ffi_shdict_get(sl_shdict_t *dict, const char *key, size_t klen, int stale,
                                char *buf, size_t cap, int *type, size_t *vlen, double *num,
                                uint32_t *flags, int *is_stale, const char **err);

/* set, add or replace key (op, see above) with a value of `type` (str/slen
 * for strings, num otherwise), expiring after exptime seconds (0: never) and
 * carrying user flags. A NIL value deletes key (op SET only). SL_OK; or
 * SL_DECLINED with "exists" (ADD) or "not found" (REPLACE); or SL_ERROR with
 * "no memory" (SAFE, or a value bigger than the dict) or an argument error.
 * *forcible is 1 when unexpired entries were evicted to make room. */
SL_EXPORT int sl_ffi_shdict_store(sl_shdict_t *dict, int op, const char *key, size_t klen, int type,
                                  const char *str, size_t slen, double num, double exptime,
                                  uint32_t flags, int *forcible, const char **err);

/* Adds value to key's number, atomically, leaving its expiry and flags as
 * they are: SL_OK with *result. A missing or expired key fails with
 * SL_DECLINED "not found", unless has_init: then key is created as
 * init + value, expiring after init_ttl seconds (0: never). A key holding
 * another type fails with SL_DECLINED "not a number". */
SL_EXPORT int sl_ffi_shdict_incr(sl_shdict_t *dict, const char *key, size_t klen, double value,
                                 int has_init, double init, double init_ttl, double *result,
                                 int *forcible, const char **err);

/* Seconds until key expires (0: never) in *ttl, or SL_DECLINED "not found". */
SL_EXPORT int sl_ffi_shdict_ttl(sl_shdict_t *dict, const char *key, size_t klen, double *ttl,
                                const char **err);

/* Makes key expire exptime seconds from now (0: never), or SL_DECLINED "not found". */
SL_EXPORT int sl_ffi_shdict_expire(sl_shdict_t *dict, const char *key, size_t klen, double exptime,
                                   const char **err);

/* Writes up to max_count (0: all) unexpired keys, most recently used first,
 * into buf[0..cap) as a 2-byte little-endian length followed by the key's
 * bytes: SL_OK with *count keys in *len bytes, or SL_AGAIN with the bytes
 * needed in *len (call again with a bigger buf). Walks the whole dict under
 * its lock. */
SL_EXPORT int sl_ffi_shdict_get_keys(sl_shdict_t *dict, int max_count, char *buf, size_t cap,
                                     size_t *len, int *count, const char **err);

/* Frees up to max_count (0: all) expired entries, oldest first; *count says
 * how many. Walks the whole dict under its lock. */
SL_EXPORT int sl_ffi_shdict_flush_expired(sl_shdict_t *dict, int max_count, int *count,
                                          const char **err);

/* Marks every entry expired; flush_expired or later writes free their memory. */
SL_EXPORT int sl_ffi_shdict_flush_all(sl_shdict_t *dict, const char **err);

/* The dict's size in bytes and the bytes not held by entries. */
SL_EXPORT int sl_ffi_shdict_space(sl_shdict_t *dict, size_t *capacity, size_t *free_space,
                                  const char **err);
/* END shdict */

/* BEGIN metrics */
/* The prometheus plugin's metrics (core/metrics.c; Lua:
 * plugins/prometheus/handler.lua), summed over every worker and written in
 * the Prometheus text format 0.0.4 into buf[0..cap): SL_OK with the text's
 * length in *len; SL_AGAIN with the length needed in *len when cap is too
 * small (call again with a bigger buf; counters may grow meanwhile);
 * SL_DECLINED when no prometheus instance is enabled in the config or this
 * process has no counters (in-process specs); SL_ERROR when out of memory. */
SL_EXPORT int sl_ffi_metrics_render(char *buf, size_t cap, size_t *len);
/* END metrics */

#endif
