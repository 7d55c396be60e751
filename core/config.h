/* config.h: the compiled configuration the core runs on, built from the YAML file. */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#include "sluice.h"

typedef struct sl_arena_s sl_arena_t;
typedef struct sl_router_s sl_router_t;
typedef struct sl_service_s sl_service_t;
typedef struct sl_upstream_s sl_upstream_t;

typedef struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *text; /* "127.0.0.1:8000", as written, for logs and `check` */
    int backlog;
    bool reuseport;
} sl_listen_t;

/* A CIDR block; IPv4 addresses are stored as IPv4-mapped IPv6. */
typedef struct {
    uint8_t addr[16];
    uint8_t prefix; /* 0..128 */
} sl_cidr_t;

/* A target whose host is a name owns SL_DNS_SLOTS consecutive entries of its
 * upstream's targets, one per address, so that indices (health slots, per-worker
 * peers) stay put while the master re-resolves the name (core/targets.c). A
 * slot without an address has addrlen 0; addresses beyond SL_DNS_SLOTS are
 * ignored with a warning. */
#define SL_DNS_SLOTS 16

typedef struct {
    char *host; /* as configured: a name or an address literal */
    uint16_t port;
    int weight; /* 0 disables the target */
    struct sockaddr_storage addr;
    socklen_t addrlen; /* 0: a name's slot that has no address now */
    uint8_t dns_slot;  /* 1..SL_DNS_SLOTS for the slots of a name; 0 for an address literal */
    uint32_t dns_name; /* a name's record in the shared address table (sl_targets_create) */
} sl_target_t;

enum { SL_LB_ROUND_ROBIN = 0, SL_LB_LEAST_CONN, SL_LB_CONSISTENT_HASH, SL_LB_LATENCY };

/* What consistent hashing takes its key from (Kong's hash_on values). */
enum {
    SL_KEY_NONE = 0,
    SL_KEY_CONSUMER,
    SL_KEY_IP,
    SL_KEY_HEADER,
    SL_KEY_COOKIE,
    SL_KEY_PATH,
    SL_KEY_QUERY_ARG,
    SL_KEY_URI_CAPTURE,
};

typedef struct {
    int from;   /* SL_KEY_* */
    char *name; /* the header, cookie, query argument or capture, as configured; else NULL */
    size_t name_len;
} sl_hash_key_t;

/* A set of HTTP statuses, one bit per status 100..999. */
typedef struct {
    uint64_t bits[16];
} sl_statuses_t;

static inline int sl_statuses_has(const sl_statuses_t *s, int status)
{
    return status >= 0 && status < 1024 && (s->bits[status >> 6] >> (status & 63)) & 1;
}

/* What makes a target unhealthy or healthy again; a count of 0 disables it. */
typedef struct {
    sl_statuses_t healthy_statuses;
    sl_statuses_t unhealthy_statuses;
    int successes;
    int http_failures;
    int tcp_failures;
    int timeouts;
} sl_health_rules_t;

enum { SL_CHECK_HTTP = 0, SL_CHECK_TCP };

/* Kong's healthchecks block plus Envoy's outlier ejection (docs/upstreams.md).
 * Times are in milliseconds. */
typedef struct {
    int enabled;     /* any active, passive or outlier check runs */
    int active_type; /* SL_CHECK_* */
    char *http_path;
    char *headers; /* "Name: value\r\n" lines, or NULL */
    int timeout;
    int concurrency;
    int healthy_interval;   /* 0: healthy targets are not probed */
    int unhealthy_interval; /* 0: unhealthy targets are not probed */
    sl_health_rules_t active;
    int passive_type; /* SL_CHECK_* */
    sl_health_rules_t passive;
    int consecutive_5xx;             /* 0: off */
    int consecutive_gateway_failure; /* 0: off */
    int base_ejection_time;
    int max_ejection_time;
    int max_ejection_percent;
    double threshold; /* % of the weight that must be healthy; 0: off */
    int total_weight; /* of the targets, set by sl_health_create */
} sl_healthchecks_t;

struct sl_upstream_s {
    char *name;
    int algorithm;     /* SL_LB_* */
    char *host_header; /* NULL: use the target's host */
    sl_target_t *targets;
    size_t ntargets;
    size_t index; /* position in sl_config_t.upstreams, for per-worker state */

    /* Consistent hashing (inert for the other algorithms). */
    int slots;                   /* points on the ring, 10..65536 */
    sl_hash_key_t hash_on;       /* the key; from SL_KEY_NONE: no hashing */
    sl_hash_key_t hash_fallback; /* when the request has no hash_on key */
    char *hash_cookie_path;      /* Path of the cookie sluice sets for SL_KEY_COOKIE */

    sl_healthchecks_t health;
    size_t health_base; /* first slot of its targets in the shared health state */
};

enum { SL_PROTO_HTTP = 0, SL_PROTO_HTTPS = 1 };

struct sl_service_s {
    char *name;
    int protocol; /* SL_PROTO_* */
    char *host;   /* a hostname, an address or an upstream's name */
    uint16_t port;
    char *path; /* NULL when the service has no path */
    size_t path_len;
    int connect_timeout; /* milliseconds */
    int write_timeout;
    int read_timeout;
    int retries;
    /* Beyond Kong: retry an idempotent request whose upstream answered one of
     * these statuses (bit status - 400, 400..599) or timed out reading, within
     * a budget of retry_budget retries per 100 requests (per worker and
     * upstream). */
    uint64_t retry_status[4];
    bool retry_on_timeout;
    bool retry_on_any;
    double retry_budget;
    sl_upstream_t *upstream; /* always set: a plain host gets an implicit one */
    char *host_header;       /* "host" or "host:port" sent when preserve_host is off */
    size_t host_header_len;
    size_t index;
};

enum { SL_PATH_PREFIX = 0, SL_PATH_REGEX = 1 };

typedef struct {
    char *value; /* without Kong's '~' for regexes */
    size_t len;
    int kind; /* SL_PATH_* */
} sl_route_path_t;

typedef struct {
    char *name; /* lower-case */
    size_t name_len;
    char **values; /* lower-cased for plain values; "~" prefix kept for regexes */
    size_t nvalues;
} sl_route_header_t;

typedef struct sl_route_s {
    char *name;   /* may be NULL */
    char **hosts; /* lower-case; "*.example.com", "example.*" or exact, optionally ":port" */
    size_t nhosts;
    sl_route_path_t *paths;
    size_t npaths;
    unsigned methods;     /* SL_HTTP_* bitmask, 0 = any */
    char **other_methods; /* methods without an SL_HTTP_* id, upper-case */
    size_t nother_methods;
    sl_route_header_t *headers;
    size_t nheaders;
    unsigned protocols; /* bit (1 << SL_PROTO_*) */
    int regex_priority;
    bool strip_path;
    bool preserve_host;
    bool retry_non_idempotent; /* the service's retry_on applies to every method */
    int path_handling;         /* 0 = "v0", 1 = "v1" */
    int https_redirect_status_code;
    sl_service_t *service;
    size_t index;     /* position in the file, the final tie-breaker */
    unsigned plugins; /* bit (1 << SL_PHASE_*) for each phase with plugins to run */
    int chain;        /* the runner's chain set for it (lua/sluice/runner.lua) */
} sl_route_t;

enum { SL_LOG_ERR = 0, SL_LOG_WARN, SL_LOG_NOTICE, SL_LOG_INFO, SL_LOG_DEBUG };

typedef struct {
    sl_listen_t *listens;
    size_t nlistens;
    int workers; /* resolved: never 0 */
    char *pid_file;
    char *error_log;  /* a path, or "stderr" */
    int log_level;    /* SL_LOG_* */
    char *access_log; /* a path, "stdout", "stderr" or NULL for off */
    size_t access_log_buffer;

    /* Downstream limits (bytes) and timeouts (milliseconds). */
    size_t max_request_line;
    size_t max_header_size;
    size_t max_headers;
    bool underscores_in_headers;      /* false: request headers named with '_' are dropped */
    uint64_t max_body_size;           /* 0 = unlimited */
    size_t client_body_buffer_size;   /* request body a plugin may read whole */
    size_t response_body_buffer_size; /* response body a plugin may buffer whole */
    int client_header_timeout;
    int client_body_timeout;
    int keepalive_timeout;
    int keepalive_requests;
    int send_timeout;
    int shutdown_timeout;

    /* Upstream keep-alive pool, per worker and target. */
    int upstream_keepalive_pool_size;
    int upstream_keepalive_max_requests;
    int upstream_keepalive_idle_timeout;

    sl_cidr_t *trusted_ips;
    size_t ntrusted_ips;

    /* DNS (resolver.c, targets.c): servers as "IP", "IP:PORT" or "[IPv6]:PORT"
     * (none: /etc/resolv.conf's), the hosts file, and how long answers are
     * kept (ms; dns_valid_ttl 0 = each record's own TTL, kept within
     * dns_min_ttl..dns_max_ttl). */
    char **dns_resolver;
    size_t ndns_resolver;
    char *dns_hostsfile;
    int dns_valid_ttl;
    int dns_min_ttl;
    int dns_max_ttl;
    int dns_stale_ttl;
    int dns_not_found_ttl;
    int dns_error_ttl;

    /* Shared dicts the master creates before forking. */
    struct {
        char *name;
        size_t size;
    } * shared_dicts;
    size_t nshared_dicts;
} sl_server_conf_t;

typedef struct sl_config_s {
    sl_arena_t *arena; /* owns every string and array below */
    char *file;
    sl_server_conf_t server;
    sl_service_t **services;
    size_t nservices;
    sl_route_t **routes;
    size_t nroutes;
    sl_upstream_t **upstreams; /* named upstreams first, then implicit ones */
    size_t nupstreams;
    sl_router_t *router;
    /* The VM the config was validated in, with every plugin loaded and the
     * chains built; workers inherit it across fork. */
    struct lua_State *L;
    bool rewrite_plugins; /* global plugins have a rewrite handler */
    /* What the prometheus plugin collects (core/metrics.h); NULL: no instance enabled. */
    struct sl_metrics_conf_s *metrics;
} sl_config_t;

/* Reads, validates and compiles the YAML file at `path`. Returns a config the
 * caller frees with sl_config_free, or NULL with a human-readable message (one
 * error per line, each naming the file, line, document path and what was
 * expected) in a malloc'd *err the caller frees. */
sl_config_t *sl_config_load(const char *path, char **err);

/* Compiles a config that config.lua already validated and normalized (the
 * table at index idx of L) without building plugin chains: for in-process
 * requests in `sluice test` (core/inproc.c). cf->L stays NULL: L is not the
 * config's. Returns the config or NULL with *err as sl_config_load. */
sl_config_t *sl_config_compile(struct lua_State *L, int idx, const char *name, char **err);

void sl_config_free(sl_config_t *cf);

/* Is addr (IPv6, or IPv4-mapped IPv6) in server.trusted_ips? O(entries):
 * trusted lists are a handful of proxies; a long one would want a trie. */
int sl_config_trusts(const sl_server_conf_t *s, const uint8_t addr[16]);

/* Writes the one-screen summary `sluice check` prints; with chains, each
 * route's plugins in running order too (`sluice check --routes`). */
void sl_config_summary(const sl_config_t *cf, FILE *out, int chains);

#endif
