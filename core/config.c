/* config.c: loads the YAML config through lua/sluice/config.lua and compiles it into sl_config_t.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "arena.h"
#include "balancer.h"
#include "http_parser.h"
#include "log.h"
#include "metrics.h"
#include "resolver.h"
#include "router.h"
#include "sl_lua.h"

#define ARENA_BLOCK         16384
#define SUMMARY_MAX_ROWS    20 /* entries listed per section of the summary */
#define SUMMARY_MAX_TARGETS 6  /* targets listed per upstream */
#define SUMMARY_NAME_WIDTH  24 /* names longer than this break the alignment */

/* Error text collected while loading: one "...\n" line per error. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int oom;
} errbuf_t;

typedef struct {
    lua_State *L;
    sl_config_t *cf;
    sl_arena_t *a;
    errbuf_t err;
    size_t upstreams_cap; /* room in cf->upstreams, implicit upstreams included */
} loader_t;

__attribute__((format(printf, 2, 3))) static void add_error(loader_t *ld, const char *fmt, ...)
{
    errbuf_t *b = &ld->err;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->oom)
        return;
    size_t need = b->len + (size_t)n + 2;
    if (need > b->cap) {
        size_t cap = SL_MAX(need, b->cap * 2);
        char *p = realloc(b->data, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    if (b->len == 0 || b->data[b->len - 1] != '\n')
        b->data[b->len++] = '\n';
    b->data[b->len] = '\0';
}

/* Compilation runs inside lua_pcall: running out of memory raises, and the
 * loader's single exit frees what was built. */
static void *alloc(loader_t *ld, size_t size)
{
    void *p = sl_arena_calloc(ld->a, size == 0 ? 1 : size);
    if (p == NULL)
        luaL_error(ld->L, "out of memory");
    return p;
}

static char *copy(loader_t *ld, const char *s, size_t len)
{
    char *p = sl_arena_strndup(ld->a, s, len);
    if (p == NULL)
        luaL_error(ld->L, "out of memory");
    return p;
}

/* Field readers for the table at absolute index t. The Lua side guarantees
 * the shape; a missing field reads as the default given. */

static char *get_str(loader_t *ld, int t, const char *k, size_t *len)
{
    size_t n = 0;
    char *s = NULL;
    lua_getfield(ld->L, t, k);
    if (lua_type(ld->L, -1) == LUA_TSTRING) {
        const char *v = lua_tolstring(ld->L, -1, &n);
        s = copy(ld, v, n);
    }
    lua_pop(ld->L, 1);
    if (len != NULL)
        *len = n;
    return s;
}

static double get_num(loader_t *ld, int t, const char *k, double dflt)
{
    lua_getfield(ld->L, t, k);
    double v = lua_type(ld->L, -1) == LUA_TNUMBER ? lua_tonumber(ld->L, -1) : dflt;
    lua_pop(ld->L, 1);
    return v;
}

static bool get_bool(loader_t *ld, int t, const char *k, bool dflt)
{
    lua_getfield(ld->L, t, k);
    bool v = lua_type(ld->L, -1) == LUA_TBOOLEAN ? lua_toboolean(ld->L, -1) : dflt;
    lua_pop(ld->L, 1);
    return v;
}

/* Pushes field k of the table at t (an empty table when absent) and returns
 * its length and absolute index through *n and *idx. */
static void push_list(loader_t *ld, int t, const char *k, size_t *n, int *idx)
{
    lua_getfield(ld->L, t, k);
    if (!lua_istable(ld->L, -1)) {
        lua_pop(ld->L, 1);
        lua_newtable(ld->L);
    }
    *n = lua_objlen(ld->L, -1);
    *idx = lua_gettop(ld->L);
}

/* Copies a list of strings (field k of t) into the arena. */
static char **get_str_list(loader_t *ld, int t, const char *k, size_t *count)
{
    size_t n;
    int l;
    push_list(ld, t, k, &n, &l);
    char **out = alloc(ld, n * sizeof(*out));
    size_t m = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        size_t len;
        const char *s = lua_tolstring(ld->L, -1, &len);
        if (s != NULL)
            out[m++] = copy(ld, s, len);
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);
    *count = m;
    return out;
}

/* Makes a path absolute against the current directory, so that the pid file
 * and logs stay put whatever directory the process moves to later. */
static char *absolute_path(loader_t *ld, char *path)
{
    if (path == NULL || path[0] == '/')
        return path;
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return path;
    size_t clen = strlen(cwd), plen = strlen(path);
    char *p = alloc(ld, clen + plen + 2);
    memcpy(p, cwd, clen);
    p[clen] = '/';
    memcpy(p + clen + 1, path, plen + 1);
    return p;
}

static bool is_special_log(const char *s)
{
    return strcmp(s, "stdout") == 0 || strcmp(s, "stderr") == 0 || strcmp(s, "off") == 0;
}

/* Fills addr with a literal address and a port; returns SL_OK or SL_ERROR. */
static int make_sockaddr(const char *host, uint16_t port, struct sockaddr_storage *ss,
                         socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *len = sizeof(*sin);
        return SL_OK;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof(*sin6);
        return SL_OK;
    }
    return SL_ERROR;
}

static void compile_server(loader_t *ld, int t)
{
    sl_server_conf_t *s = &ld->cf->server;
    size_t n;
    int l;

    push_list(ld, t, "listen", &n, &l);
    s->listens = alloc(ld, n * sizeof(*s->listens));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int e = lua_gettop(ld->L);
        sl_listen_t *li = &s->listens[s->nlistens];
        char *addr = get_str(ld, e, "addr", NULL);
        char *where = get_str(ld, e, "where", NULL);
        li->text = get_str(ld, e, "text", NULL);
        li->backlog = (int)get_num(ld, e, "backlog", 511);
        li->reuseport = get_bool(ld, e, "reuseport", true);
        uint16_t port = (uint16_t)get_num(ld, e, "port", 0);
        if (addr == NULL || make_sockaddr(addr, port, &li->addr, &li->addrlen) != SL_OK)
            add_error(ld, "%s: invalid listen address", where != NULL ? where : ld->cf->file);
        else
            s->nlistens++;
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);

    lua_getfield(ld->L, t, "workers");
    if (lua_type(ld->L, -1) == LUA_TNUMBER) {
        s->workers = (int)lua_tonumber(ld->L, -1);
    } else {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        s->workers = cpus > 0 ? (int)cpus : 1;
    }
    lua_pop(ld->L, 1);

    s->pid_file = absolute_path(ld, get_str(ld, t, "pid_file", NULL));
    s->error_log = get_str(ld, t, "error_log", NULL);
    if (s->error_log != NULL && !is_special_log(s->error_log))
        s->error_log = absolute_path(ld, s->error_log);
    s->access_log = get_str(ld, t, "access_log", NULL);
    if (s->access_log != NULL && strcmp(s->access_log, "off") == 0)
        s->access_log = NULL;
    else if (s->access_log != NULL && !is_special_log(s->access_log))
        s->access_log = absolute_path(ld, s->access_log);

    static const char *const levels[] = {"err", "warn", "notice", "info", "debug"};
    char *level = get_str(ld, t, "log_level", NULL);
    s->log_level = SL_LOG_NOTICE;
    for (size_t i = 0; level != NULL && i < SL_NELEMS(levels); i++)
        if (strcmp(level, levels[i]) == 0)
            s->log_level = (int)i;

    s->access_log_buffer = (size_t)get_num(ld, t, "access_log_buffer", 65536);
    s->max_request_line = (size_t)get_num(ld, t, "max_request_line", 8192);
    s->max_header_size = (size_t)get_num(ld, t, "max_header_size", 32768);
    s->max_headers = (size_t)get_num(ld, t, "max_headers", 100);
    s->underscores_in_headers = get_bool(ld, t, "underscores_in_headers", false);
    s->max_body_size = (uint64_t)get_num(ld, t, "max_body_size", 0);
    s->client_body_buffer_size = (size_t)get_num(ld, t, "client_body_buffer_size", 1048576);
    s->response_body_buffer_size = (size_t)get_num(ld, t, "response_body_buffer_size", 1048576);
    s->client_header_timeout = (int)get_num(ld, t, "client_header_timeout", 60000);
    s->client_body_timeout = (int)get_num(ld, t, "client_body_timeout", 60000);
    s->keepalive_timeout = (int)get_num(ld, t, "keepalive_timeout", 75000);
    s->keepalive_requests = (int)get_num(ld, t, "keepalive_requests", 1000);
    s->send_timeout = (int)get_num(ld, t, "send_timeout", 60000);
    s->shutdown_timeout = (int)get_num(ld, t, "shutdown_timeout", 10000);
    s->upstream_keepalive_pool_size = (int)get_num(ld, t, "upstream_keepalive_pool_size", 512);
    s->upstream_keepalive_max_requests =
        (int)get_num(ld, t, "upstream_keepalive_max_requests", 10000);
    s->upstream_keepalive_idle_timeout =
        (int)get_num(ld, t, "upstream_keepalive_idle_timeout", 60000);

    push_list(ld, t, "trusted_ips", &n, &l);
    s->trusted_ips = alloc(ld, n * sizeof(*s->trusted_ips));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int e = lua_gettop(ld->L);
        char *addr = get_str(ld, e, "addr", NULL);
        char *where = get_str(ld, e, "where", NULL);
        int prefix = (int)get_num(ld, e, "prefix", 128);
        sl_cidr_t *c = &s->trusted_ips[s->ntrusted_ips];
        struct in_addr v4;
        if (addr != NULL && inet_pton(AF_INET, addr, &v4) == 1) {
            /* IPv4 as IPv4-mapped IPv6: ::ffff:a.b.c.d. */
            memset(c->addr, 0, 10);
            c->addr[10] = 0xff;
            c->addr[11] = 0xff;
            memcpy(c->addr + 12, &v4, 4);
            prefix += 96;
        } else if (addr == NULL || inet_pton(AF_INET6, addr, c->addr) != 1) {
            add_error(ld, "%s: invalid address", where != NULL ? where : ld->cf->file);
            lua_pop(ld->L, 1);
            continue;
        }
        c->prefix = (uint8_t)SL_MIN(prefix, 128);
        /* Clear the host bits so that matching compares whole bytes. */
        for (int bit = c->prefix; bit < 128; bit++)
            c->addr[bit / 8] &= (uint8_t) ~(0x80 >> (bit % 8));
        s->ntrusted_ips++;
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);

    s->dns_resolver = get_str_list(ld, t, "dns_resolver", &s->ndns_resolver);
    s->dns_hostsfile = get_str(ld, t, "dns_hostsfile", NULL);
    if (s->dns_hostsfile != NULL)
        s->dns_hostsfile = absolute_path(ld, s->dns_hostsfile);
    s->dns_valid_ttl = (int)get_num(ld, t, "dns_valid_ttl", 0);
    s->dns_min_ttl = (int)get_num(ld, t, "dns_min_ttl", 1000);
    s->dns_max_ttl = (int)get_num(ld, t, "dns_max_ttl", 3600000);
    s->dns_stale_ttl = (int)get_num(ld, t, "dns_stale_ttl", 4000);
    s->dns_not_found_ttl = (int)get_num(ld, t, "dns_not_found_ttl", 30000);
    s->dns_error_ttl = (int)get_num(ld, t, "dns_error_ttl", 1000);

    push_list(ld, t, "shared_dicts", &n, &l);
    s->shared_dicts = alloc(ld, n * sizeof(*s->shared_dicts));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int e = lua_gettop(ld->L);
        s->shared_dicts[i - 1].name = get_str(ld, e, "name", NULL);
        s->shared_dicts[i - 1].size = (size_t)get_num(ld, e, "size", 0);
        s->nshared_dicts++;
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);
}

/* Appends host's targets to u, growing u->targets (whose capacity is *cap)
 * in the arena: one for an address literal; SL_DNS_SLOTS for a name, the
 * first ones holding its addresses and the rest empty (addrlen 0), so that
 * the master can re-resolve it later without moving any index
 * (core/targets.c). Resolution failure adds an error that starts with where.
 * The lookup blocks (the config is loaded by the master, never on a worker's
 * loop) and uses the dns_* server settings, as the workers' resolver does:
 * dns_hostsfile, then the dns_resolver servers. */
static void add_targets(loader_t *ld, sl_upstream_t *u, size_t *cap, const char *host,
                        uint16_t port, int weight, const char *where)
{
    struct sockaddr_storage addrs[SL_DNS_SLOTS + 1];
    socklen_t lens[SL_DNS_SLOTS + 1];
    size_t naddrs = 0, nslots = 1;
    int name = !sl_addr_literal(host, strlen(host), port, &addrs[0], &lens[0]);
    if (name) {
        const char *err;
        if (sl_resolve_all(&ld->cf->server, host, addrs, lens, SL_NELEMS(addrs), &naddrs, &err) !=
            SL_OK) {
            add_error(ld, "%s: cannot resolve \"%s\": %s", where, host, err);
            return;
        }
        if (naddrs > SL_DNS_SLOTS) {
            sl_log(SL_LOG_WARN, "%s: \"%s\" has more than %d addresses; the first %d are used",
                   where, host, SL_DNS_SLOTS, SL_DNS_SLOTS);
            naddrs = SL_DNS_SLOTS;
        }
        nslots = SL_DNS_SLOTS;
        for (size_t i = 0; i < naddrs; i++) {
            if (addrs[i].ss_family == AF_INET)
                ((struct sockaddr_in *)&addrs[i])->sin_port = htons(port);
            else
                ((struct sockaddr_in6 *)&addrs[i])->sin6_port = htons(port);
        }
    } else {
        naddrs = 1;
    }

    if (u->ntargets + nslots > *cap) {
        size_t ncap = SL_MAX(u->ntargets + nslots, *cap * 2);
        sl_target_t *t = alloc(ld, ncap * sizeof(*t));
        if (u->ntargets > 0)
            memcpy(t, u->targets, u->ntargets * sizeof(*t));
        u->targets = t;
        *cap = ncap;
    }
    char *h = copy(ld, host, strlen(host));
    for (size_t i = 0; i < nslots; i++) {
        sl_target_t *t = &u->targets[u->ntargets++];
        memset(t, 0, sizeof(*t));
        t->host = h;
        t->port = port;
        t->weight = weight;
        t->dns_slot = name ? (uint8_t)(i + 1) : 0;
        if (i < naddrs) {
            t->addr = addrs[i];
            t->addrlen = lens[i];
        }
    }
}

static void add_upstream(loader_t *ld, sl_upstream_t *u)
{
    sl_config_t *cf = ld->cf;
    if (cf->nupstreams == ld->upstreams_cap) {
        size_t ncap = SL_MAX(8, ld->upstreams_cap * 2);
        sl_upstream_t **p = alloc(ld, ncap * sizeof(*p));
        if (cf->nupstreams > 0)
            memcpy(p, cf->upstreams, cf->nupstreams * sizeof(*p));
        cf->upstreams = p;
        ld->upstreams_cap = ncap;
    }
    u->index = cf->nupstreams;
    cf->upstreams[cf->nupstreams++] = u;
}

/* Kong's names for the SL_KEY_* sources. */
static const char *const hash_sources[] = {
    [SL_KEY_NONE] = "none",           [SL_KEY_CONSUMER] = "consumer",       [SL_KEY_IP] = "ip",
    [SL_KEY_HEADER] = "header",       [SL_KEY_COOKIE] = "cookie",           [SL_KEY_PATH] = "path",
    [SL_KEY_QUERY_ARG] = "query_arg", [SL_KEY_URI_CAPTURE] = "uri_capture",
};

/* Reads one of Kong's hash_on / hash_fallback settings: `from_field` names
 * the source, `name_field` what to read there (a header, cookie, query
 * argument or capture name). config.lua checked that the name is present
 * when the source needs one. */
static void get_hash_key(loader_t *ld, int e, const char *from_field, const char *name_field,
                         sl_hash_key_t *k)
{
    char *from = get_str(ld, e, from_field, NULL);
    k->from = SL_KEY_NONE;
    for (size_t i = 0; from != NULL && i < SL_NELEMS(hash_sources); i++)
        if (strcmp(from, hash_sources[i]) == 0)
            k->from = (int)i;
    if (k->from == SL_KEY_HEADER || k->from == SL_KEY_COOKIE || k->from == SL_KEY_QUERY_ARG ||
        k->from == SL_KEY_URI_CAPTURE)
        k->name = get_str(ld, e, name_field, &k->name_len);
    if (k->from != SL_KEY_NONE && k->from != SL_KEY_CONSUMER && k->from != SL_KEY_IP &&
        k->from != SL_KEY_PATH && k->name == NULL)
        k->from = SL_KEY_NONE; /* unreachable after config.lua's checks */
}

/* Reads the status list k of the table at t into a bit set. */
static void get_statuses(loader_t *ld, int t, const char *k, sl_statuses_t *out)
{
    size_t n;
    int l;
    memset(out, 0, sizeof(*out));
    push_list(ld, t, k, &n, &l);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int status = (int)lua_tointeger(ld->L, -1);
        if (status > 0 && status < 1024)
            out->bits[status >> 6] |= (uint64_t)1 << (status & 63);
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);
}

/* Reads a `healthy` + `unhealthy` pair of Kong's rules under the table at t. */
static void get_health_rules(loader_t *ld, int t, sl_health_rules_t *r, int *healthy_interval,
                             int *unhealthy_interval)
{
    size_t n;
    int h, u;
    push_list(ld, t, "healthy", &n, &h);
    get_statuses(ld, h, "http_statuses", &r->healthy_statuses);
    r->successes = (int)get_num(ld, h, "successes", 0);
    if (healthy_interval != NULL)
        *healthy_interval = (int)(get_num(ld, h, "interval", 0) * 1000);
    push_list(ld, t, "unhealthy", &n, &u);
    get_statuses(ld, u, "http_statuses", &r->unhealthy_statuses);
    r->http_failures = (int)get_num(ld, u, "http_failures", 0);
    r->tcp_failures = (int)get_num(ld, u, "tcp_failures", 0);
    r->timeouts = (int)get_num(ld, u, "timeouts", 0);
    if (unhealthy_interval != NULL)
        *unhealthy_interval = (int)(get_num(ld, u, "interval", 0) * 1000);
    lua_pop(ld->L, 2);
}

/* Joins the probe headers (a map of name to list of values) into
 * "Name: value\r\n" lines in the arena; NULL when there are none. Two passes:
 * the length, then the text. */
static char *get_probe_headers(loader_t *ld, int t)
{
    lua_State *L = ld->L;
    char *out = NULL, *o = NULL;
    lua_getfield(L, t, "headers");
    int m = lua_gettop(L);
    for (int pass = 0; pass < 2 && lua_istable(L, m); pass++) {
        size_t total = 0;
        lua_pushnil(L);
        while (lua_next(L, m) != 0) {
            size_t nlen, vlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            size_t nv = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
            for (size_t i = 1; i <= nv && name != NULL; i++) {
                lua_rawgeti(L, -1, (int)i);
                const char *v = lua_tolstring(L, -1, &vlen);
                if (v != NULL && o != NULL) {
                    memcpy(o, name, nlen);
                    o += nlen;
                    memcpy(o, ": ", 2);
                    memcpy(o + 2, v, vlen);
                    memcpy(o + 2 + vlen, "\r\n", 2);
                    o += vlen + 4;
                }
                total += v != NULL ? nlen + vlen + 4 : 0;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        if (pass == 0) {
            if (total == 0)
                break;
            out = o = alloc(ld, total + 1);
        } else {
            *o = '\0';
        }
    }
    lua_settop(L, m - 1);
    return out;
}

/* Reads an upstream's healthchecks block (config.lua filled in Kong's
 * defaults and checked the ranges). */
static void get_healthchecks(loader_t *ld, int e, sl_healthchecks_t *hc)
{
    size_t n;
    int t, a, p, o;
    push_list(ld, e, "healthchecks", &n, &t);
    push_list(ld, t, "active", &n, &a);
    char *type = get_str(ld, a, "type", NULL);
    hc->active_type = type != NULL && strcmp(type, "tcp") == 0 ? SL_CHECK_TCP : SL_CHECK_HTTP;
    hc->http_path = get_str(ld, a, "http_path", NULL);
    if (hc->http_path == NULL)
        hc->http_path = copy(ld, "/", 1);
    hc->headers = get_probe_headers(ld, a);
    hc->timeout = (int)(get_num(ld, a, "timeout", 1) * 1000);
    hc->concurrency = (int)get_num(ld, a, "concurrency", 10);
    get_health_rules(ld, a, &hc->active, &hc->healthy_interval, &hc->unhealthy_interval);
    push_list(ld, t, "passive", &n, &p);
    type = get_str(ld, p, "type", NULL);
    hc->passive_type = type != NULL && strcmp(type, "tcp") == 0 ? SL_CHECK_TCP : SL_CHECK_HTTP;
    get_health_rules(ld, p, &hc->passive, NULL, NULL);
    push_list(ld, t, "outlier", &n, &o);
    hc->consecutive_5xx = (int)get_num(ld, o, "consecutive_5xx", 0);
    hc->consecutive_gateway_failure = (int)get_num(ld, o, "consecutive_gateway_failure", 0);
    hc->base_ejection_time = (int)(get_num(ld, o, "base_ejection_time", 30) * 1000);
    hc->max_ejection_time = (int)(get_num(ld, o, "max_ejection_time", 300) * 1000);
    hc->max_ejection_percent = (int)get_num(ld, o, "max_ejection_percent", 10);
    hc->threshold = get_num(ld, t, "threshold", 0);
    lua_pop(ld->L, 4);

    int active = hc->healthy_interval > 0 || hc->unhealthy_interval > 0;
    int passive =
        hc->passive.http_failures > 0 || hc->passive.tcp_failures > 0 || hc->passive.timeouts > 0;
    int outlier = hc->consecutive_5xx > 0 || hc->consecutive_gateway_failure > 0;
    hc->enabled = active || passive || outlier;
}

static void compile_upstreams(loader_t *ld, int t)
{
    size_t n, nt;
    int l, tl;
    push_list(ld, t, "upstreams", &n, &l);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int e = lua_gettop(ld->L);
        sl_upstream_t *u = alloc(ld, sizeof(*u));
        u->name = get_str(ld, e, "name", NULL);
        char *algorithm = get_str(ld, e, "algorithm", NULL);
        u->algorithm = algorithm != NULL ? sl_balancer_find(algorithm) : SL_LB_ROUND_ROBIN;
        if (u->algorithm < 0)
            u->algorithm = SL_LB_ROUND_ROBIN; /* unreachable: config.lua checked it */
        u->host_header = get_str(ld, e, "host_header", NULL);
        u->slots = (int)get_num(ld, e, "slots", 10000);
        get_hash_key(ld, e, "hash_on", "hash_on_name", &u->hash_on);
        get_hash_key(ld, e, "hash_fallback", "hash_fallback_name", &u->hash_fallback);
        u->hash_cookie_path = get_str(ld, e, "hash_on_cookie_path", NULL);
        get_healthchecks(ld, e, &u->health);
        size_t cap = 0;
        push_list(ld, e, "targets", &nt, &tl);
        for (size_t j = 1; j <= nt; j++) {
            lua_rawgeti(ld->L, tl, (int)j);
            int te = lua_gettop(ld->L);
            char *host = get_str(ld, te, "host", NULL);
            char *where = get_str(ld, te, "where", NULL);
            uint16_t port = (uint16_t)get_num(ld, te, "port", 8000);
            int weight = (int)get_num(ld, te, "weight", 100);
            if (host != NULL)
                add_targets(ld, u, &cap, host, port, weight, where != NULL ? where : "?");
            lua_pop(ld->L, 1);
        }
        lua_pop(ld->L, 1);
        add_upstream(ld, u);
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);
}

/* Writes "host:port" into the arena, or just "host" when port is 80 and
 * with_80 is false; IPv6 literals go in brackets. */
static char *host_port(loader_t *ld, const char *host, uint16_t port, bool with_80, size_t *len)
{
    char buf[300];
    int v6 = strchr(host, ':') != NULL;
    int n =
        snprintf(buf, sizeof(buf), "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
    if (n < 0 || (size_t)n >= sizeof(buf))
        luaL_error(ld->L, "host name too long: %s", host); /* the Lua side caps it at 253 */
    if (port == 80 && !with_80)
        n = (int)(strrchr(buf, ':') - buf);
    *len = (size_t)n;
    return copy(ld, buf, (size_t)n);
}

/* Returns the implicit upstream for host:port (named so), creating and
 * resolving it on first use. O(n) per service over the implicit upstreams
 * made so far; if configs with thousands of distinct hosts show up, index
 * them by name. */
static sl_upstream_t *implicit_upstream(loader_t *ld, size_t first_implicit, const char *host,
                                        uint16_t port, const char *where)
{
    sl_config_t *cf = ld->cf;
    size_t len;
    char *name = host_port(ld, host, port, true, &len);
    for (size_t i = first_implicit; i < cf->nupstreams; i++)
        if (strcmp(cf->upstreams[i]->name, name) == 0)
            return cf->upstreams[i];
    sl_upstream_t *u = alloc(ld, sizeof(*u));
    u->name = name;
    u->algorithm = SL_LB_ROUND_ROBIN;
    u->slots = 10000;
    size_t cap = 0;
    add_targets(ld, u, &cap, host, port, 100, where);
    add_upstream(ld, u);
    return u;
}

static void compile_services(loader_t *ld, int t)
{
    sl_config_t *cf = ld->cf;
    size_t n, first_implicit = cf->nupstreams;
    int l;
    push_list(ld, t, "services", &n, &l);
    cf->services = alloc(ld, n * sizeof(*cf->services));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int e = lua_gettop(ld->L);
        sl_service_t *s = alloc(ld, sizeof(*s));
        s->name = get_str(ld, e, "name", NULL);
        char *protocol = get_str(ld, e, "protocol", NULL);
        s->protocol =
            protocol != NULL && strcmp(protocol, "https") == 0 ? SL_PROTO_HTTPS : SL_PROTO_HTTP;
        s->host = get_str(ld, e, "host", NULL);
        s->port = (uint16_t)get_num(ld, e, "port", 80);
        s->path = get_str(ld, e, "path", &s->path_len);
        s->connect_timeout = (int)get_num(ld, e, "connect_timeout", 60000);
        s->write_timeout = (int)get_num(ld, e, "write_timeout", 60000);
        s->read_timeout = (int)get_num(ld, e, "read_timeout", 60000);
        s->retries = (int)get_num(ld, e, "retries", 5);
        s->retry_budget = get_num(ld, e, "retry_budget", 20);
        size_t nr;
        int rl;
        push_list(ld, e, "retry_on", &nr, &rl);
        for (size_t k = 1; k <= nr; k++) {
            lua_rawgeti(ld->L, rl, (int)k);
            if (lua_type(ld->L, -1) == LUA_TNUMBER) {
                int st = (int)lua_tonumber(ld->L, -1);
                if (st >= 400 && st <= 599) {
                    s->retry_status[(st - 400) / 64] |= (uint64_t)1 << ((st - 400) % 64);
                    s->retry_on_any = true;
                }
            } else if (lua_type(ld->L, -1) == LUA_TSTRING &&
                       strcmp(lua_tostring(ld->L, -1), "timeout") == 0) {
                s->retry_on_timeout = true;
                s->retry_on_any = true;
            }
            lua_pop(ld->L, 1);
        }
        lua_pop(ld->L, 1);
        s->index = cf->nservices;
        char *where = get_str(ld, e, "where", NULL);
        int upstream = (int)get_num(ld, e, "upstream", 0);
        if (upstream >= 1 && (size_t)upstream <= first_implicit) {
            s->upstream = cf->upstreams[upstream - 1];
            s->host_header = s->upstream->host_header;
            s->host_header_len = s->host_header != NULL ? strlen(s->host_header) : 0;
        } else if (s->host != NULL) {
            s->upstream = implicit_upstream(ld, first_implicit, s->host, s->port,
                                            where != NULL ? where : cf->file);
            s->host_header = host_port(ld, s->host, s->port, false, &s->host_header_len);
        }
        cf->services[cf->nservices++] = s;
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);
}

/* Checks a regex path with PCRE2 so that a bad one is reported at its line;
 * the router compiles it again with its own options. */
static void check_regex(loader_t *ld, const sl_route_path_t *p, const char *where)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)p->value, p->len, 0, &code, &offset, NULL);
    if (re != NULL) {
        pcre2_code_free(re);
        return;
    }
    PCRE2_UCHAR msg[256];
    if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
        strcpy((char *)msg, "invalid pattern");
    add_error(ld, "%s: invalid regex \"%s\": %s at offset %zu", where, p->value, (char *)msg,
              (size_t)offset);
}

static void compile_route_paths(loader_t *ld, sl_route_t *r, int e)
{
    size_t n;
    int l;
    push_list(ld, e, "paths", &n, &l);
    r->paths = alloc(ld, n * sizeof(*r->paths));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int pe = lua_gettop(ld->L);
        sl_route_path_t *p = &r->paths[r->npaths];
        p->value = get_str(ld, pe, "value", &p->len);
        p->kind = get_bool(ld, pe, "regex", false) ? SL_PATH_REGEX : SL_PATH_PREFIX;
        if (p->value != NULL) {
            r->npaths++;
            if (p->kind == SL_PATH_REGEX) {
                char *where = get_str(ld, pe, "where", NULL);
                check_regex(ld, p, where != NULL ? where : ld->cf->file);
            }
        }
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);
}

static void compile_route_methods(loader_t *ld, sl_route_t *r, int e)
{
    size_t n;
    char **methods = get_str_list(ld, e, "methods", &n);
    r->other_methods = alloc(ld, n * sizeof(*r->other_methods));
    for (size_t i = 0; i < n; i++) {
        int id = sl_http_method_id(methods[i], strlen(methods[i]));
        if (id == SL_HTTP_OTHER)
            r->other_methods[r->nother_methods++] = methods[i];
        else
            r->methods |= (unsigned)id;
    }
}

static void compile_route_headers(loader_t *ld, sl_route_t *r, int e)
{
    size_t n;
    int l;
    push_list(ld, e, "headers", &n, &l);
    r->headers = alloc(ld, n * sizeof(*r->headers));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int he = lua_gettop(ld->L);
        sl_route_header_t *h = &r->headers[r->nheaders];
        h->name = get_str(ld, he, "name", &h->name_len);
        h->values = get_str_list(ld, he, "values", &h->nvalues);
        if (h->name != NULL)
            r->nheaders++;
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);
}

static void compile_routes(loader_t *ld, int t)
{
    sl_config_t *cf = ld->cf;
    size_t n;
    int l;
    push_list(ld, t, "routes", &n, &l);
    cf->routes = alloc(ld, n * sizeof(*cf->routes));
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(ld->L, l, (int)i);
        int e = lua_gettop(ld->L);
        sl_route_t *r = alloc(ld, sizeof(*r));
        r->name = get_str(ld, e, "name", NULL);
        r->hosts = get_str_list(ld, e, "hosts", &r->nhosts);
        compile_route_paths(ld, r, e);
        compile_route_methods(ld, r, e);
        compile_route_headers(ld, r, e);

        size_t np;
        char **protocols = get_str_list(ld, e, "protocols", &np);
        for (size_t j = 0; j < np; j++)
            r->protocols |=
                1u << (strcmp(protocols[j], "https") == 0 ? SL_PROTO_HTTPS : SL_PROTO_HTTP);
        r->regex_priority = (int)get_num(ld, e, "regex_priority", 0);
        r->strip_path = get_bool(ld, e, "strip_path", true);
        r->preserve_host = get_bool(ld, e, "preserve_host", false);
        r->retry_non_idempotent = get_bool(ld, e, "retry_non_idempotent", false);
        char *handling = get_str(ld, e, "path_handling", NULL);
        r->path_handling = handling != NULL && strcmp(handling, "v1") == 0;
        r->https_redirect_status_code = (int)get_num(ld, e, "https_redirect_status_code", 426);
        int service = (int)get_num(ld, e, "service", 0);
        if (service < 1 || (size_t)service > cf->nservices)
            luaL_error(ld->L, "route %d has no service", (int)i);
        r->service = cf->services[service - 1];
        r->index = cf->nroutes;
        cf->routes[cf->nroutes++] = r;
        lua_pop(ld->L, 1);
    }
    lua_pop(ld->L, 1);
}

/* lua_CFunction: (loader, normalized config) -> nothing; adds errors to the
 * loader for what only C can check. */
static int compile(lua_State *L)
{
    loader_t *ld = lua_touserdata(L, 1);
    const int t = 2;

    lua_getfield(L, t, "server");
    if (lua_istable(L, -1))
        compile_server(ld, lua_gettop(L));
    lua_pop(L, 1);
    compile_upstreams(ld, t);
    compile_services(ld, t);
    compile_routes(ld, t);
    sl_metrics_configure(ld->cf, L, t);
    return 0;
}

int sl_config_trusts(const sl_server_conf_t *s, const uint8_t addr[16])
{
    for (size_t i = 0; i < s->ntrusted_ips; i++) {
        const sl_cidr_t *r = &s->trusted_ips[i];
        unsigned bits = r->prefix, full = bits / 8, rest = bits % 8;
        if (memcmp(r->addr, addr, full) != 0)
            continue;
        if (rest && ((r->addr[full] ^ addr[full]) & (0xff << (8 - rest))) != 0)
            continue;
        return 1;
    }
    return 0;
}

/* Has the runner (lua/sluice/runner.lua) build every route's plugin chain
 * and marks the routes that run Lua. */
static int build_chains(loader_t *ld, int normalized)
{
    lua_State *L = ld->L;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sluice.runner");
    if (sl_lua_pcall(L, 1, 1) != SL_OK) {
        add_error(ld, "sluice: cannot load the plugin runner: %s", lua_tostring(L, -1));
        return SL_ERROR;
    }
    lua_getfield(L, -1, "init");
    lua_pushvalue(L, normalized);
    if (sl_lua_pcall(L, 1, 2) != SL_OK || !lua_istable(L, -2)) {
        const char *msg = lua_tostring(L, -1);
        add_error(ld, "%s", msg != NULL ? msg : "sluice: cannot build the plugin chains");
        return SL_ERROR;
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "routes");
    for (size_t i = 0; i < ld->cf->nroutes; i++) {
        lua_rawgeti(L, -1, (int)i + 1);
        ld->cf->routes[i]->plugins = (unsigned)lua_tointeger(L, -1);
        ld->cf->routes[i]->chain = (int)i + 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "rewrite");
    ld->cf->rewrite_plugins = lua_toboolean(L, -1);
    lua_pop(L, 3);
    return SL_OK;
}

void sl_config_free(sl_config_t *cf)
{
    if (cf == NULL)
        return;
    if (cf->L != NULL)
        lua_close(cf->L);
    if (cf->router != NULL)
        sl_router_free(cf->router);
    /* cf itself lives in the arena. */
    sl_arena_destroy(cf->arena);
}

/* Compiles the normalized config at index `normalized` of ld->L into a new
 * sl_config_t (routes, services, upstreams, the router). Returns SL_OK, or
 * SL_ERROR with the errors in ld->err. */
static int compile_config(loader_t *ld, int normalized, const char *name)
{
    char rerr[512] = "";
    ld->a = sl_arena_create(ARENA_BLOCK);
    if (ld->a == NULL || (ld->cf = sl_arena_calloc(ld->a, sizeof(*ld->cf))) == NULL) {
        add_error(ld, "sluice: out of memory");
        return SL_ERROR;
    }
    ld->cf->arena = ld->a;
    ld->cf->file = sl_arena_strdup(ld->a, name);
    if (ld->cf->file == NULL) {
        add_error(ld, "sluice: out of memory");
        return SL_ERROR;
    }
    lua_pushcfunction(ld->L, compile);
    lua_pushlightuserdata(ld->L, ld);
    lua_pushvalue(ld->L, normalized);
    if (lua_pcall(ld->L, 2, 0, 0) != 0) {
        add_error(ld, "%s: %s", name, lua_tostring(ld->L, -1));
        lua_pop(ld->L, 1);
        return SL_ERROR;
    }
    if (ld->err.len > 0 || ld->err.oom)
        return SL_ERROR;
    ld->cf->router = sl_router_create(ld->cf->routes, ld->cf->nroutes, rerr, sizeof(rerr));
    if (ld->cf->router == NULL) {
        add_error(ld, "%s: %s", name, rerr[0] != '\0' ? rerr : "cannot build the router");
        return SL_ERROR;
    }
    return SL_OK;
}

/* Frees what a failed load holds and turns its errors into *err. */
static void load_failed(loader_t *ld, char **err)
{
    if (ld->cf != NULL)
        sl_config_free(ld->cf);
    else
        sl_arena_destroy(ld->a);
    if (ld->err.oom || ld->err.data == NULL) {
        free(ld->err.data);
        *err = strdup("sluice: out of memory while loading the config\n");
    } else {
        *err = ld->err.data;
    }
}

sl_config_t *sl_config_compile(lua_State *L, int idx, const char *name, char **err)
{
    loader_t ld;
    memset(&ld, 0, sizeof(ld));
    *err = NULL;
    ld.L = L;
    int top = lua_gettop(L);
    if (idx < 0)
        idx = top + idx + 1;
    if (compile_config(&ld, idx, name) != SL_OK) {
        lua_settop(L, top);
        load_failed(&ld, err);
        return NULL;
    }
    lua_settop(L, top);
    return ld.cf;
}

sl_config_t *sl_config_load(const char *path, char **err)
{
    loader_t ld;
    int normalized;
    memset(&ld, 0, sizeof(ld));
    *err = NULL;

    ld.L = sl_lua_new();
    if (ld.L == NULL) {
        add_error(&ld, "sluice: out of memory");
        goto failed;
    }
    lua_getglobal(ld.L, "require");
    lua_pushliteral(ld.L, "sluice.config");
    if (sl_lua_pcall(ld.L, 1, 1) != SL_OK) {
        add_error(&ld, "sluice: cannot load the config module: %s", lua_tostring(ld.L, -1));
        goto failed;
    }
    lua_getfield(ld.L, -1, "load");
    lua_pushstring(ld.L, path);
    if (sl_lua_pcall(ld.L, 1, 2) != SL_OK) {
        add_error(&ld, "%s: internal error while validating: %s", path, lua_tostring(ld.L, -1));
        goto failed;
    }
    if (!lua_istable(ld.L, -2)) {
        const char *text = lua_tostring(ld.L, -1);
        add_error(&ld, "%s", text != NULL ? text : "sluice: the config is invalid");
        goto failed;
    }
    normalized = lua_gettop(ld.L) - 1;
    if (compile_config(&ld, normalized, path) != SL_OK)
        goto failed;
    if (build_chains(&ld, normalized) != SL_OK)
        goto failed;
    /* The VM now holds the loaded plugins and their chains: workers inherit it. */
    ld.cf->L = ld.L;
    return ld.cf;

failed:
    if (ld.L != NULL)
        lua_close(ld.L);
    load_failed(&ld, err);
    return NULL;
}

/* Summary ---------------------------------------------------------------- */

static const char *format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        port = ntohs(sin->sin_port);
        snprintf(buf, len, "%s:%u", ip, port);
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        port = ntohs(sin6->sin6_port);
        snprintf(buf, len, "[%s]:%u", ip, port);
    }
    return buf;
}

/* Width of the name column: the longest name shown, unnamed ones counting
 * as "(unnamed #N)". */
static int name_width(const char *const *names, size_t n)
{
    size_t w = 4;
    for (size_t i = 0; i < n && i < SUMMARY_MAX_ROWS; i++)
        w = SL_MAX(w, names[i] != NULL ? strlen(names[i]) : 13);
    return (int)SL_MIN(w, SUMMARY_NAME_WIDTH);
}

static void print_size(FILE *out, const char *label, uint64_t n)
{
    if (n != 0 && n % (1024 * 1024) == 0)
        fprintf(out, "%s %llum", label, (unsigned long long)(n / (1024 * 1024)));
    else if (n != 0 && n % 1024 == 0)
        fprintf(out, "%s %lluk", label, (unsigned long long)(n / 1024));
    else
        fprintf(out, "%s %llu", label, (unsigned long long)n);
}

static void print_list(FILE *out, const char *label, char *const *items, size_t n)
{
    if (n == 0)
        return;
    fprintf(out, "  %s ", label);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s%s", i > 0 ? "," : "", items[i]);
}

static void print_more(FILE *out, size_t n)
{
    if (n > SUMMARY_MAX_ROWS)
        fprintf(out, "  ... and %zu more\n", n - SUMMARY_MAX_ROWS);
}

static void summary_server(const sl_config_t *cf, FILE *out)
{
    const sl_server_conf_t *s = &cf->server;
    fprintf(out, "sluice %s: %s\n", SL_VERSION, cf->file);
    fprintf(out, "  %-11s", "listen");
    for (size_t i = 0; i < s->nlistens; i++)
        fprintf(out, "%s%s%s", i > 0 ? ", " : "", s->listens[i].text,
                s->listens[i].reuseport ? "" : " (no_reuseport)");
    fprintf(out, "\n  %-11s%d\n", "workers", s->workers);
    fprintf(out, "  %-11s%s\n", "pid file", s->pid_file);
    fprintf(out, "  %-11serror %s (%s), access %s\n", "logs", s->error_log,
            (const char *[]){"err", "warn", "notice", "info", "debug"}[s->log_level],
            s->access_log != NULL ? s->access_log : "off");
    fprintf(out, "  %-11s", "limits");
    print_size(out, "request line", s->max_request_line);
    print_size(out, ", head", s->max_header_size);
    fprintf(out, " (%zu headers%s)", s->max_headers,
            s->underscores_in_headers ? ", '_' in names kept" : "");
    if (s->max_body_size == 0)
        fprintf(out, ", body unlimited");
    else
        print_size(out, ", body", s->max_body_size);
    print_size(out, ", body buffers: request", s->client_body_buffer_size);
    print_size(out, ", response", s->response_body_buffer_size);
    fputc('\n', out);
    if (s->nshared_dicts > 0) {
        fprintf(out, "  %-11s", "shared");
        for (size_t i = 0; i < s->nshared_dicts; i++) {
            fprintf(out, "%s%s", i > 0 ? ", " : "", s->shared_dicts[i].name);
            print_size(out, "", s->shared_dicts[i].size);
        }
        fputc('\n', out);
    }
}

static void summary_services(const sl_config_t *cf, FILE *out)
{
    const char *names[SUMMARY_MAX_ROWS];
    for (size_t i = 0; i < cf->nservices && i < SUMMARY_MAX_ROWS; i++)
        names[i] = cf->services[i]->name;
    int w = name_width(names, SL_MIN(cf->nservices, SUMMARY_MAX_ROWS));

    fprintf(out, "services (%zu)\n", cf->nservices);
    for (size_t i = 0; i < cf->nservices && i < SUMMARY_MAX_ROWS; i++) {
        const sl_service_t *s = cf->services[i];
        char unnamed[32];
        snprintf(unnamed, sizeof(unnamed), "(unnamed #%zu)", i);
        int v6 = strchr(s->host, ':') != NULL;
        fprintf(out, "  %-*s  %s://%s%s%s:%u%s  -> upstream %s\n", w,
                s->name != NULL ? s->name : unnamed,
                s->protocol == SL_PROTO_HTTPS ? "https" : "http", v6 ? "[" : "", s->host,
                v6 ? "]" : "", (unsigned)s->port, s->path != NULL ? s->path : "",
                s->upstream->name);
    }
    print_more(out, cf->nservices);
}

static void summary_routes(const sl_config_t *cf, FILE *out)
{
    static const char *const methods[] = {"GET",   "HEAD",    "POST",    "PUT",  "DELETE",
                                          "PATCH", "OPTIONS", "CONNECT", "TRACE"};
    const char *names[SUMMARY_MAX_ROWS];
    for (size_t i = 0; i < cf->nroutes && i < SUMMARY_MAX_ROWS; i++)
        names[i] = cf->routes[i]->name;
    int w = name_width(names, SL_MIN(cf->nroutes, SUMMARY_MAX_ROWS));

    fprintf(out, "routes (%zu)\n", cf->nroutes);
    for (size_t i = 0; i < cf->nroutes && i < SUMMARY_MAX_ROWS; i++) {
        const sl_route_t *r = cf->routes[i];
        char unnamed[32];
        snprintf(unnamed, sizeof(unnamed), "(unnamed #%zu)", i);
        fprintf(out, "  %-*s", w, r->name != NULL ? r->name : unnamed);
        print_list(out, "hosts", r->hosts, r->nhosts);
        if (r->npaths > 0) {
            fprintf(out, "  paths ");
            for (size_t j = 0; j < r->npaths; j++)
                fprintf(out, "%s%s%s", j > 0 ? "," : "",
                        r->paths[j].kind == SL_PATH_REGEX ? "~" : "", r->paths[j].value);
        }
        if (r->methods != 0 || r->nother_methods > 0) {
            fprintf(out, "  methods ");
            int first = 1;
            for (size_t j = 0; j < SL_NELEMS(methods); j++)
                if (r->methods & (1u << j)) {
                    fprintf(out, "%s%s", first ? "" : ",", methods[j]);
                    first = 0;
                }
            for (size_t j = 0; j < r->nother_methods; j++) {
                fprintf(out, "%s%s", first ? "" : ",", r->other_methods[j]);
                first = 0;
            }
        }
        for (size_t j = 0; j < r->nheaders; j++)
            fprintf(out, "  %s: %s%s", r->headers[j].name,
                    r->headers[j].nvalues > 0 ? r->headers[j].values[0] : "",
                    r->headers[j].nvalues > 1 ? ",..." : "");
        const sl_service_t *s = r->service;
        if (s->name != NULL)
            fprintf(out, "  -> %s\n", s->name);
        else
            fprintf(out, "  -> (unnamed #%zu)\n", s->index);
    }
    print_more(out, cf->nroutes);
}

/* "on header X-User, else ip " for a hashing upstream. */
static void summary_hash(const sl_upstream_t *u, FILE *out)
{
    const sl_hash_key_t *k[2] = {&u->hash_on, &u->hash_fallback};
    for (int i = 0; i < 2 && k[i]->from != SL_KEY_NONE; i++)
        fprintf(out, "%s %s%s%s ", i == 0 ? "on" : "else", hash_sources[k[i]->from],
                k[i]->name != NULL ? " " : "", k[i]->name != NULL ? k[i]->name : "");
}

/* "; checks: active http /health every 5s (1s when down), passive, outlier, threshold 30%" */
static void summary_health(const sl_upstream_t *u, FILE *out)
{
    const sl_healthchecks_t *hc = &u->health;
    const sl_health_rules_t *p = &hc->passive;
    if (!hc->enabled)
        return;
    const char *sep = " ";
    fprintf(out, "; checks:");
    if (hc->healthy_interval > 0 || hc->unhealthy_interval > 0) {
        fprintf(out, " active %s%s%s every %gs (%gs when down)",
                hc->active_type == SL_CHECK_TCP ? "tcp" : "http",
                hc->active_type == SL_CHECK_TCP ? "" : " ",
                hc->active_type == SL_CHECK_TCP ? "" : hc->http_path, hc->healthy_interval / 1000.0,
                hc->unhealthy_interval / 1000.0);
        sep = ", ";
    }
    if (p->http_failures > 0 || p->tcp_failures > 0 || p->timeouts > 0) {
        fprintf(out, "%spassive", sep);
        sep = ", ";
    }
    if (hc->consecutive_5xx > 0 || hc->consecutive_gateway_failure > 0) {
        fprintf(out, "%soutlier", sep);
        sep = ", ";
    }
    if (hc->threshold > 0)
        fprintf(out, "%sthreshold %g%%", sep, hc->threshold);
}

static void summary_upstreams(const sl_config_t *cf, FILE *out)
{
    const char *names[SUMMARY_MAX_ROWS];
    for (size_t i = 0; i < cf->nupstreams && i < SUMMARY_MAX_ROWS; i++)
        names[i] = cf->upstreams[i]->name;
    int w = name_width(names, SL_MIN(cf->nupstreams, SUMMARY_MAX_ROWS));

    fprintf(out, "upstreams (%zu)\n", cf->nupstreams);
    for (size_t i = 0; i < cf->nupstreams && i < SUMMARY_MAX_ROWS; i++) {
        const sl_upstream_t *u = cf->upstreams[i];
        fprintf(out, "  %-*s  %s ", w, u->name, sl_balancer_name(u->algorithm));
        if (u->algorithm == SL_LB_CONSISTENT_HASH)
            summary_hash(u, out);
        size_t shown = 0, present = 0;
        for (size_t j = 0; j < u->ntargets; j++) {
            const sl_target_t *t = &u->targets[j];
            if (t->addrlen == 0)
                continue; /* a name's empty slot */
            if (present++ >= SUMMARY_MAX_TARGETS)
                continue;
            char addr[INET6_ADDRSTRLEN + 16];
            format_addr(&t->addr, addr, sizeof(addr));
            fprintf(out, "%s %s", shown++ > 0 ? "," : "", addr);
            if (strncmp(addr + (addr[0] == '['), t->host, strlen(t->host)) != 0)
                fprintf(out, " (%s)", t->host);
            fprintf(out, " w%d", t->weight);
        }
        if (present == 0)
            fprintf(out, " (no targets)");
        if (present > SUMMARY_MAX_TARGETS)
            fprintf(out, ", ... %zu in all", present);
        summary_health(u, out);
        fputc('\n', out);
    }
    print_more(out, cf->nupstreams);
}

/* The chains of the consumers whose own instances change route i's, one
 * line each, with the runner module on top of L. */
static void summary_consumer_chains(lua_State *L, size_t i, FILE *out)
{
    lua_getfield(L, -1, "describe_consumers");
    lua_pushinteger(L, (lua_Integer)i + 1);
    if (sl_lua_pcall(L, 1, 1) != SL_OK || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    size_t n = lua_objlen(L, -1);
    for (size_t k = 1; k <= n; k++) {
        lua_rawgeti(L, -1, (int)k);
        lua_getfield(L, -1, "consumer");
        fprintf(out, "    consumer %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        lua_getfield(L, -1, "chain");
        size_t m = lua_objlen(L, -1);
        for (size_t j = 1; j <= m; j++) {
            lua_rawgeti(L, -1, (int)j);
            fprintf(out, "%s%s", j == 1 ? "  " : " -> ", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        fputc('\n', out);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

/* Every route's plugin chain, in running order, as the runner built it, and
 * under it what changes for consumers with instances of their own. */
static void summary_chains(const sl_config_t *cf, FILE *out)
{
    lua_State *L = cf->L;
    fprintf(out, "plugin chains\n");
    for (size_t i = 0; i < cf->nroutes; i++) {
        const sl_route_t *r = cf->routes[i];
        fprintf(out, "  %s", r->name != NULL ? r->name : "(unnamed)");
        if (r->name == NULL)
            fprintf(out, " #%zu", i);
        lua_getglobal(L, "require");
        lua_pushliteral(L, "sluice.runner");
        if (sl_lua_pcall(L, 1, 1) != SL_OK) {
            fprintf(out, "  (runner unavailable: %s)\n", lua_tostring(L, -1));
            lua_pop(L, 1);
            continue;
        }
        lua_getfield(L, -1, "describe");
        lua_pushinteger(L, (lua_Integer)i + 1);
        if (sl_lua_pcall(L, 1, 1) != SL_OK || !lua_istable(L, -1)) {
            fprintf(out, "  (cannot describe)\n");
            lua_pop(L, 2);
            continue;
        }
        size_t n = lua_objlen(L, -1);
        if (n == 0)
            fprintf(out, "  (no plugins: never enters Lua)");
        for (size_t j = 1; j <= n; j++) {
            lua_rawgeti(L, -1, (int)j);
            fprintf(out, "%s%s", j == 1 ? "  " : " -> ", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        fputc('\n', out);
        lua_pop(L, 1);
        summary_consumer_chains(L, i, out);
        lua_pop(L, 1);
    }
}

void sl_config_summary(const sl_config_t *cf, FILE *out, int chains)
{
    summary_server(cf, out);
    summary_services(cf, out);
    summary_routes(cf, out);
    summary_upstreams(cf, out);
    if (chains && cf->L != NULL)
        summary_chains(cf, out);
    fprintf(out, "configuration OK\n");
}
