/* metrics.c: the prometheus plugin's counters in shared memory and their text exposition. */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "health.h"
#include "log.h"
#include "proxy.h"
#include "shdict.h"
#include "sl_ffi.h"
#include "targets.h"
#include "worker.h"

#define RELAXED memory_order_relaxed

/* The registered status codes (IANA), counted exactly; 1xx..9xx collect the rest. */
static const uint16_t registered[] = {
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301,
    302, 303, 304, 305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409,
    410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423, 424, 425, 426, 428,
    429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
};
#define NREGISTERED SL_NELEMS(registered)
_Static_assert(NREGISTERED + 9 == SL_METRICS_NCODES, "SL_METRICS_NCODES counts the codes");

static const char code_labels[SL_METRICS_NCODES][4] = {
    "100", "101", "102", "103", "200", "201", "202", "203", "204", "205", "206", "207",
    "208", "226", "300", "301", "302", "303", "304", "305", "307", "308", "400", "401",
    "402", "403", "404", "405", "406", "407", "408", "409", "410", "411", "412", "413",
    "414", "415", "416", "417", "418", "421", "422", "423", "424", "425", "426", "428",
    "429", "431", "451", "500", "501", "502", "503", "504", "505", "506", "507", "508",
    "510", "511", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx",
};

static const char *const source_labels[SL_METRICS_NSOURCES] = {"service", "exit", "error"};

static const double sluice_bounds[SL_METRICS_SLUICE_BUCKETS] = {1,  2,  5,   7,   10,  15,  20,  30,
                                                                50, 75, 100, 200, 500, 750, 1000};
static const double upstream_bounds[SL_METRICS_UPSTREAM_BUCKETS] = {
    25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000};

/* code -> index into the code set, for 0..999; built on first use. */
static uint8_t code_map[1000];
static int code_map_ready;

/* The mapping: nworkers slots, each a sl_metrics_worker_t, then nroutes + 1
 * records, then table_size consumer series. */
static const sl_config_t *metrics_cf;
static void *shm;
static size_t shm_size;
static size_t nrecords;                 /* routes + 1 ("no route") */
static size_t slot_size;                /* bytes per worker */
static int nslots;                      /* workers */
static sl_metrics_worker_t *mine;       /* this worker's slot, NULL in the master */
static sl_metrics_route_t *mine_routes; /* and its records */
static sl_metrics_entry_t *mine_table;  /* and its consumer series */
static size_t table_mask;               /* table_size - 1; 0: no consumer series */
static ev_timer gauge_timer;
static sl_worker_t *gauge_worker;

static void build_code_map(void)
{
    for (int s = 0; s < 1000; s++)
        code_map[s] = (uint8_t)(NREGISTERED + (s >= 100 ? s / 100 - 1 : 0));
    for (size_t i = 0; i < NREGISTERED; i++)
        code_map[registered[i]] = (uint8_t)i;
    code_map_ready = 1;
}

int sl_metrics_code_index(int status)
{
    if (SL_UNLIKELY(!code_map_ready))
        build_code_map();
    if (status < 100 || status > 999)
        return (int)NREGISTERED + (status > 999 ? 8 : 0);
    return code_map[status];
}

const char *sl_metrics_code_label(int index)
{
    return index >= 0 && index < SL_METRICS_NCODES ? code_labels[index] : NULL;
}

/* --- config ---------------------------------------------------------------- */

static void *conf_alloc(lua_State *L, sl_arena_t *a, size_t n)
{
    void *p = sl_arena_calloc(a, n);
    if (p == NULL)
        luaL_error(L, "out of memory");
    return p;
}

static int conf_flag(lua_State *L, int conf, const char *name)
{
    lua_getfield(L, conf, name);
    int on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return on;
}

static int by_id_cmp(const void *a, const void *b)
{
    const sl_metrics_consumer_t *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->id, y->id, x->len);
}

/* The consumers of the normalized config, for per_consumer, and the size of
 * each worker's table of consumer series: about 4 series per route and
 * consumer (a consumer sees few routes and fewer statuses), within
 * 1024..262144 entries (16 bytes each). */
static void configure_consumers(sl_config_t *cf, sl_metrics_conf_t *m, lua_State *L, int t)
{
    lua_getfield(L, t, "consumers");
    int cl = lua_gettop(L);
    size_t n = lua_istable(L, cl) ? lua_objlen(L, cl) : 0;
    if (n == 0 || n >= SL_METRICS_MAX_CONSUMERS || cf->nroutes + 1 >= SL_METRICS_MAX_ROUTES) {
        lua_settop(L, cl - 1);
        return;
    }
    m->consumer_labels = conf_alloc(L, cf->arena, n * sizeof(char *));
    m->by_id = conf_alloc(L, cf->arena, n * sizeof(*m->by_id));
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, cl, (int)i + 1);
        int c = lua_gettop(L);
        const char *label = NULL;
        static const char *const names[] = {"username", "custom_id", "id"};
        for (size_t k = 0; k < SL_NELEMS(names) && label == NULL; k++) {
            lua_getfield(L, c, names[k]);
            if (lua_type(L, -1) == LUA_TSTRING)
                label = sl_arena_strdup(cf->arena, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_getfield(L, c, "id");
        size_t len = 0;
        const char *id = lua_tolstring(L, -1, &len);
        char *copy = id != NULL ? sl_arena_strdup(cf->arena, id) : NULL;
        if (label == NULL || copy == NULL)
            luaL_error(L, "out of memory");
        m->consumer_labels[i] = label;
        m->by_id[i] = (sl_metrics_consumer_t){copy, len, (uint32_t)i};
        lua_settop(L, c - 1);
    }
    qsort(m->by_id, n, sizeof(*m->by_id), by_id_cmp);
    m->nconsumers = n;
    size_t want = (cf->nroutes + 1) * n * 4, size = 1024;
    while (size < want && size < 262144)
        size *= 2;
    m->table_size = size;
    lua_settop(L, cl - 1);
}

void sl_metrics_configure(sl_config_t *cf, lua_State *L, int t)
{
    static const struct {
        const char *field;
        unsigned bit;
    } flags[] = {
        {"status_code_metrics", SL_METRICS_STATUS},
        {"latency_metrics", SL_METRICS_LATENCY},
        {"bandwidth_metrics", SL_METRICS_BANDWIDTH},
        {"upstream_health_metrics", SL_METRICS_HEALTH},
    };
    int top = lua_gettop(L);
    int enabled = 0, per_consumer = 0;
    unsigned families = 0;
    lua_getfield(L, t, "plugins");
    int pl = lua_gettop(L);
    for (size_t i = 1; lua_istable(L, pl) && i <= lua_objlen(L, pl); i++) {
        lua_rawgeti(L, pl, (int)i);
        lua_getfield(L, -1, "name");
        const char *name = lua_tostring(L, -1);
        if (name != NULL && strcmp(name, "prometheus") == 0) {
            enabled = 1;
            lua_getfield(L, -2, "config");
            int conf = lua_gettop(L);
            for (size_t f = 0; lua_istable(L, conf) && f < SL_NELEMS(flags); f++)
                if (conf_flag(L, conf, flags[f].field))
                    families |= flags[f].bit;
            per_consumer |= lua_istable(L, conf) && conf_flag(L, conf, "per_consumer");
        }
        lua_settop(L, pl);
    }
    cf->metrics = NULL;
    if (!enabled) {
        lua_settop(L, top);
        return;
    }
    sl_metrics_conf_t *m = conf_alloc(L, cf->arena, sizeof(*m));
    m->families = families;
    lua_getfield(L, t, "upstreams");
    m->nnamed_upstreams = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    /* Kong labels a route by its name, else its id; sluice by its place in
     * the file when it has neither, so that every route's series stay apart. */
    m->route_labels = conf_alloc(L, cf->arena, (cf->nroutes + 1) * sizeof(char *));
    lua_getfield(L, t, "routes");
    int rl = lua_gettop(L);
    for (size_t i = 0; i < cf->nroutes; i++) {
        const char *label = cf->routes[i]->name;
        if (label == NULL && lua_istable(L, rl)) {
            lua_rawgeti(L, rl, (int)i + 1);
            lua_getfield(L, -1, "id");
            label = lua_tostring(L, -1);
            if (label != NULL)
                label = sl_arena_strdup(cf->arena, label);
            lua_pop(L, 2);
        }
        if (label == NULL) {
            char buf[32];
            snprintf(buf, sizeof(buf), "#%zu", i);
            label = sl_arena_strdup(cf->arena, buf);
        }
        if (label == NULL)
            luaL_error(L, "out of memory");
        m->route_labels[i] = label;
    }
    m->route_labels[cf->nroutes] = "";
    if (per_consumer && (families & (SL_METRICS_STATUS | SL_METRICS_BANDWIDTH)))
        configure_consumers(cf, m, L, t);
    cf->metrics = m;
    lua_settop(L, top);
}

/* --- the mapping ----------------------------------------------------------- */

static sl_metrics_worker_t *slot(int w)
{
    return (sl_metrics_worker_t *)((char *)shm + (size_t)w * slot_size);
}

static sl_metrics_route_t *records(int w)
{
    return (sl_metrics_route_t *)((char *)slot(w) + sizeof(sl_metrics_worker_t));
}

static sl_metrics_entry_t *table(int w)
{
    return (sl_metrics_entry_t *)(records(w) + nrecords);
}

int sl_metrics_create(const sl_config_t *cf)
{
    sl_metrics_destroy();
    metrics_cf = cf;
    if (cf->metrics == NULL)
        return SL_OK;
    nslots = cf->server.workers > 0 ? cf->server.workers : 1;
    nrecords = cf->nroutes + 1;
    slot_size = sizeof(sl_metrics_worker_t) + nrecords * sizeof(sl_metrics_route_t) +
                cf->metrics->table_size * sizeof(sl_metrics_entry_t);
    slot_size = (slot_size + 63) & ~(size_t)63; /* no two workers share a cache line */
    size_t size = slot_size * (size_t)nslots;
    /* Untouched pages of an anonymous shared mapping cost no memory: a route
     * that never sees a status pays nothing for its counter. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        sl_log(SL_LOG_ERR, "cannot map %zu bytes for the prometheus metrics: %s", size,
               strerror(errno));
        metrics_cf = NULL;
        return SL_ERROR;
    }
    shm = p;
    shm_size = size;
    if (!code_map_ready)
        build_code_map();
    return SL_OK;
}

void sl_metrics_destroy(void)
{
    if (shm != NULL)
        munmap(shm, shm_size);
    shm = NULL;
    shm_size = 0;
    mine = NULL;
    mine_routes = NULL;
    mine_table = NULL;
    table_mask = 0;
    gauge_worker = NULL;
    metrics_cf = NULL;
}

/* Plain single-writer increments: only this worker writes its slot. */
static inline void bump(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, RELAXED) + by, RELAXED);
}

static inline void set(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, RELAXED);
}

static inline uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, RELAXED);
}

/* Walks this worker's connections into its gauges. O(connections), once a
 * second and per scrape. */
static void refresh_gauges(void)
{
    sl_worker_t *w = gauge_worker;
    if (mine == NULL || w == NULL)
        return;
    uint64_t reading = 0, writing = 0, waiting = 0;
    for (sl_queue_t *q = w->conns.next; q != &w->conns; q = q->next) {
        const sl_conn_t *c = sl_queue_data(q, sl_conn_t, link);
        if (c->state == SL_CONN_IDLE)
            waiting++;
        else if (c->state == SL_CONN_HEAD)
            reading++;
        else
            writing++;
    }
    set(&mine->active, w->nconns);
    set(&mine->reading, reading);
    set(&mine->writing, writing);
    set(&mine->waiting, waiting);
    if (w->cf->L != NULL) {
        lua_State *L = w->cf->L;
        set(&mine->lua_bytes,
            (uint64_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (uint64_t)lua_gc(L, LUA_GCCOUNTB, 0));
    }
}

static void gauge_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    SL_UNUSED(loop);
    SL_UNUSED(t);
    SL_UNUSED(revents);
    refresh_gauges();
}

static int attach(int id)
{
    if (shm == NULL || id < 0 || id >= nslots)
        return SL_DECLINED;
    mine = slot(id);
    mine_routes = records(id);
    mine_table = table(id);
    table_mask = metrics_cf->metrics->table_size ? metrics_cf->metrics->table_size - 1 : 0;
    atomic_store_explicit(&mine->pid, (int64_t)getpid(), RELAXED);
    return SL_OK;
}

int sl_metrics_start(sl_worker_t *w)
{
    if (attach(w->id) != SL_OK)
        return SL_OK;
    gauge_worker = w;
    refresh_gauges();
    if (w->loop == NULL)
        return SL_OK;
    ev_timer_init(&gauge_timer, gauge_cb, 1., 1.);
    ev_timer_start(w->loop, &gauge_timer);
    ev_unref(w->loop); /* it never keeps a stopping worker alive */
    return SL_OK;
}

void sl_metrics_accepted(int handled)
{
    if (mine == NULL)
        return;
    bump(&mine->accepted, 1);
    if (handled)
        bump(&mine->handled, 1);
}

static inline int bucket(const double *bounds, int n, double ms)
{
    int i = 0;
    while (i < n && ms > bounds[i])
        i++;
    return i;
}

/* Bounded probing: a full neighbourhood sends the count to the route's
 * record, without its consumer label, and into consumer_overflow. */
#define MAX_PROBES 64

/* The value of this worker's consumer series key, made on first use; NULL
 * when the table has no room for it. */
static _Atomic uint64_t *series(uint64_t key)
{
    size_t i = (size_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & table_mask;
    for (int n = 0; n < MAX_PROBES; n++, i = (i + 1) & table_mask) {
        uint64_t k = atomic_load_explicit(&mine_table[i].key, RELAXED);
        if (k == key)
            return &mine_table[i].value;
        if (k == 0) {
            /* Only this worker writes here; a reader that sees the key
             * before its first count shows the series at 0. */
            atomic_store_explicit(&mine_table[i].key, key, memory_order_release);
            return &mine_table[i].value;
        }
    }
    bump(&mine->consumer_overflow, 1);
    return NULL;
}

int sl_metrics_consumer(const char *id, size_t len)
{
    const sl_metrics_conf_t *m = metrics_cf != NULL ? metrics_cf->metrics : NULL;
    if (m == NULL || m->nconsumers == 0 || id == NULL)
        return -1;
    sl_metrics_consumer_t k = {id, len, 0};
    const sl_metrics_consumer_t *c = bsearch(&k, m->by_id, m->nconsumers, sizeof(k), by_id_cmp);
    return c != NULL ? (int)c->index : -1;
}

void sl_metrics_count(int route, int consumer, int status, int source, uint64_t ingress,
                      uint64_t egress, double request_ms, double upstream_ms)
{
    if (mine == NULL || route < 0 || (size_t)route >= nrecords)
        return;
    sl_metrics_route_t *r = &mine_routes[route];
    unsigned families = metrics_cf->metrics->families;
    int code = sl_metrics_code_index(status);
    _Atomic uint64_t *by_code = NULL, *in = NULL, *out = NULL;
    if (consumer >= 0 && table_mask != 0 && (size_t)consumer < metrics_cf->metrics->nconsumers) {
        if (families & SL_METRICS_STATUS)
            by_code = series(SL_METRICS_KEY(route, consumer, source * SL_METRICS_NCODES + code));
        if (families & SL_METRICS_BANDWIDTH) {
            in = series(SL_METRICS_KEY(route, consumer, SL_METRICS_KIND_INGRESS));
            out = series(SL_METRICS_KEY(route, consumer, SL_METRICS_KIND_EGRESS));
        }
    }
    if (families & SL_METRICS_STATUS)
        bump(by_code != NULL ? by_code : &r->requests[source][code], 1);
    if (families & SL_METRICS_BANDWIDTH) {
        bump(in != NULL ? in : &r->ingress, ingress);
        bump(out != NULL ? out : &r->egress, egress);
    }
    if (families & SL_METRICS_LATENCY) {
        if (request_ms < 0)
            request_ms = 0;
        bump(&r->request.buckets[bucket(upstream_bounds, SL_METRICS_UPSTREAM_BUCKETS, request_ms)],
             1);
        bump(&r->request.sum_us, (uint64_t)(request_ms * 1000.0));
        double own = request_ms;
        if (upstream_ms >= 0) {
            bump(&r->upstream
                      .buckets[bucket(upstream_bounds, SL_METRICS_UPSTREAM_BUCKETS, upstream_ms)],
                 1);
            bump(&r->upstream.sum_us, (uint64_t)(upstream_ms * 1000.0));
            own = request_ms > upstream_ms ? request_ms - upstream_ms : 0;
        }
        bump(&r->sluice.buckets[bucket(sluice_bounds, SL_METRICS_SLUICE_BUCKETS, own)], 1);
        bump(&r->sluice.sum_us, (uint64_t)(own * 1000.0));
    }
}

void sl_metrics_request(const sl_request_t *req)
{
    if (mine == NULL)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    int source = req->resp_head_parsed ? SL_METRICS_SERVICE
                 : req->exited         ? SL_METRICS_EXIT
                                       : SL_METRICS_ERROR;
    double upstream_ms =
        req->upstream_header > 0 ? (req->upstream_header - req->upstream_start) * 1000.0 : -1.0;
    int consumer =
        table_mask != 0 ? sl_metrics_consumer(req->consumer_id.data, req->consumer_id.len) : -1;
    sl_metrics_count(req->route != NULL ? (int)req->route->index : (int)nrecords - 1, consumer,
                     req->status, source, req->head_len + req->body_bytes, req->bytes_sent,
                     (now - req->start) * 1000.0, upstream_ms);
}

void sl_metrics_sum(int route, sl_metrics_route_t *out)
{
    memset(out, 0, sizeof(*out));
    if (shm == NULL || route < 0 || (size_t)route >= nrecords)
        return;
    /* Every field is a uint64_t counter: sum them as an array. */
    _Atomic uint64_t *o = (_Atomic uint64_t *)out;
    size_t n = sizeof(*out) / sizeof(uint64_t);
    for (int w = 0; w < nslots; w++) {
        _Atomic uint64_t *in = (_Atomic uint64_t *)&records(w)[route];
        for (size_t i = 0; i < n; i++)
            set(&o[i], get(&o[i]) + get(&in[i]));
    }
}

/* --- rendering ------------------------------------------------------------- */

/* Writes while it fits and counts what it would need beyond. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len + n <= o->cap)
        memcpy(o->buf + o->len, s, n);
    o->len += n;
}

#define PUT(o, lit) put((o), lit, sizeof(lit) - 1)

static void puts_(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_u64(out_t *o, uint64_t v)
{
    char tmp[24];
    int i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(o, tmp + i, sizeof(tmp) - (size_t)i);
}

/* Microseconds as milliseconds with three decimals. */
static void put_ms(out_t *o, uint64_t us)
{
    char tmp[8];
    put_u64(o, us / 1000);
    snprintf(tmp, sizeof(tmp), ".%03u", (unsigned)(us % 1000));
    put(o, tmp, 4);
}

/* A label value, escaped as the text format wants: \\, \" and \n. */
static void put_label(out_t *o, const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\\')
            PUT(o, "\\\\");
        else if (*p == '"')
            PUT(o, "\\\"");
        else if (*p == '\n')
            PUT(o, "\\n");
        else
            put(o, p, 1);
    }
}

static void put_head(out_t *o, const char *name, const char *type, const char *help)
{
    PUT(o, "# HELP ");
    puts_(o, name);
    put(o, " ", 1);
    puts_(o, help);
    PUT(o, "\n# TYPE ");
    puts_(o, name);
    put(o, " ", 1);
    puts_(o, type);
    put(o, "\n", 1);
}

static const char *service_label(const sl_route_t *r)
{
    if (r == NULL)
        return "";
    return r->service->name != NULL ? r->service->name : r->service->host;
}

/* `service="...",route="..."` of record i. */
static void put_route(out_t *o, size_t i)
{
    const sl_config_t *cf = metrics_cf;
    PUT(o, "service=\"");
    put_label(o, service_label(i < cf->nroutes ? cf->routes[i] : NULL));
    PUT(o, "\",route=\"");
    put_label(o, cf->metrics->route_labels[i]);
    put(o, "\"", 1);
}

static void put_hist(out_t *o, const char *name, size_t i, const _Atomic uint64_t *buckets,
                     const _Atomic uint64_t *sum_us, const double *bounds, int n)
{
    uint64_t total = 0;
    for (int b = 0; b <= n; b++)
        total += atomic_load_explicit(&buckets[b], RELAXED);
    if (total == 0)
        return;
    uint64_t cum = 0;
    for (int b = 0; b <= n; b++) {
        cum += atomic_load_explicit(&buckets[b], RELAXED);
        puts_(o, name);
        PUT(o, "_bucket{");
        put_route(o, i);
        PUT(o, ",le=\"");
        if (b < n)
            put_u64(o, (uint64_t)bounds[b]);
        else
            PUT(o, "+Inf");
        PUT(o, "\"} ");
        put_u64(o, cum);
        put(o, "\n", 1);
    }
    puts_(o, name);
    PUT(o, "_sum{");
    put_route(o, i);
    PUT(o, "} ");
    put_ms(o, atomic_load_explicit(sum_us, RELAXED));
    put(o, "\n", 1);
    puts_(o, name);
    PUT(o, "_count{");
    put_route(o, i);
    PUT(o, "} ");
    put_u64(o, total);
    put(o, "\n", 1);
}

/* The consumer series of every worker, summed: sorted by key, one entry
 * per key. */
typedef struct {
    uint64_t key;
    uint64_t value;
} series_t;

static int series_cmp(const void *a, const void *b)
{
    uint64_t x = ((const series_t *)a)->key, y = ((const series_t *)b)->key;
    return x < y ? -1 : x > y;
}

/* Collects them into a malloc'd array (NULL with *n 0 when there are none);
 * returns SL_ERROR when out of memory. */
static int collect_series(series_t **out, size_t *n)
{
    size_t size = metrics_cf->metrics->table_size, count = 0;
    *out = NULL;
    *n = 0;
    for (int w = 0; w < nslots; w++)
        for (size_t i = 0; i < size; i++)
            count += atomic_load_explicit(&table(w)[i].key, RELAXED) != 0;
    if (count == 0)
        return SL_OK;
    series_t *all = malloc(count * sizeof(*all));
    if (all == NULL)
        return SL_ERROR;
    size_t k = 0;
    for (int w = 0; w < nslots; w++) {
        sl_metrics_entry_t *t = table(w);
        for (size_t i = 0; i < size && k < count; i++) {
            uint64_t key = atomic_load_explicit(&t[i].key, memory_order_acquire);
            if (key != 0)
                all[k++] = (series_t){key, atomic_load_explicit(&t[i].value, RELAXED)};
        }
    }
    qsort(all, k, sizeof(*all), series_cmp);
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (m > 0 && all[m - 1].key == all[i].key)
            all[m - 1].value += all[i].value;
        else
            all[m++] = all[i];
    }
    *out = all;
    *n = m;
    return SL_OK;
}

static void put_requests(out_t *o, size_t route, const char *consumer, int kind, uint64_t v)
{
    PUT(o, "sluice_http_requests_total{");
    put_route(o, route);
    PUT(o, ",code=\"");
    puts_(o, code_labels[kind % SL_METRICS_NCODES]);
    PUT(o, "\",source=\"");
    puts_(o, source_labels[kind / SL_METRICS_NCODES]);
    if (consumer != NULL) {
        PUT(o, "\",consumer=\"");
        put_label(o, consumer);
    }
    PUT(o, "\"} ");
    put_u64(o, v);
    put(o, "\n", 1);
}

static void put_bandwidth(out_t *o, size_t route, const char *consumer, int egress, uint64_t v)
{
    PUT(o, "sluice_bandwidth_bytes{");
    put_route(o, route);
    puts_(o, egress ? ",direction=\"egress" : ",direction=\"ingress");
    if (consumer != NULL) {
        PUT(o, "\",consumer=\"");
        put_label(o, consumer);
    }
    PUT(o, "\"} ");
    put_u64(o, v);
    put(o, "\n", 1);
}

static void render_requests(out_t *o, sl_metrics_route_t *sums, const series_t *cs, size_t ncs)
{
    const sl_metrics_conf_t *m = metrics_cf->metrics;
    unsigned families = m->families;
    /* With per_consumer every series has the label; "" for the requests
     * that named no consumer, as Kong's. */
    const char *none = m->table_size != 0 ? "" : NULL;
    if (families & SL_METRICS_STATUS) {
        put_head(o, "sluice_http_requests_total", "counter",
                 "HTTP status codes per service/route in sluice");
        for (size_t i = 0; i < nrecords; i++) {
            for (int k = 0; k < SL_METRICS_NSOURCES * SL_METRICS_NCODES; k++) {
                uint64_t v = get(&sums[i].requests[k / SL_METRICS_NCODES][k % SL_METRICS_NCODES]);
                if (v != 0)
                    put_requests(o, i, none, k, v);
            }
        }
        for (size_t i = 0; i < ncs; i++) {
            int kind = (int)(cs[i].key & 0xff);
            if (kind < SL_METRICS_KIND_INGRESS)
                put_requests(o, (size_t)(cs[i].key >> 32) & 0xffffff,
                             m->consumer_labels[(cs[i].key >> 8) & 0xffffff], kind, cs[i].value);
        }
    }
    if (families & SL_METRICS_LATENCY) {
        put_head(o, "sluice_request_latency_ms", "histogram",
                 "Total latency incurred during requests for each service/route in sluice");
        for (size_t i = 0; i < nrecords; i++)
            put_hist(o, "sluice_request_latency_ms", i, sums[i].request.buckets,
                     &sums[i].request.sum_us, upstream_bounds, SL_METRICS_UPSTREAM_BUCKETS);
        put_head(o, "sluice_upstream_latency_ms", "histogram",
                 "Latency added by upstream response for each service/route in sluice");
        for (size_t i = 0; i < nrecords; i++)
            put_hist(o, "sluice_upstream_latency_ms", i, sums[i].upstream.buckets,
                     &sums[i].upstream.sum_us, upstream_bounds, SL_METRICS_UPSTREAM_BUCKETS);
        put_head(o, "sluice_latency_ms", "histogram",
                 "Latency added by sluice and enabled plugins for each service/route in sluice");
        for (size_t i = 0; i < nrecords; i++)
            put_hist(o, "sluice_latency_ms", i, sums[i].sluice.buckets, &sums[i].sluice.sum_us,
                     sluice_bounds, SL_METRICS_SLUICE_BUCKETS);
    }
    if (families & SL_METRICS_BANDWIDTH) {
        put_head(o, "sluice_bandwidth_bytes", "counter",
                 "Total bandwidth (ingress/egress) throughput in bytes");
        for (size_t i = 0; i < nrecords; i++) {
            uint64_t v[2] = {get(&sums[i].ingress), get(&sums[i].egress)};
            for (int d = 0; d < 2; d++)
                if (v[d] != 0)
                    put_bandwidth(o, i, none, d, v[d]);
        }
        for (size_t i = 0; i < ncs; i++) {
            int kind = (int)(cs[i].key & 0xff);
            if (kind >= SL_METRICS_KIND_INGRESS)
                put_bandwidth(o, (size_t)(cs[i].key >> 32) & 0xffffff,
                              m->consumer_labels[(cs[i].key >> 8) & 0xffffff],
                              kind == SL_METRICS_KIND_EGRESS, cs[i].value);
        }
    }
    if (m->table_size != 0) {
        uint64_t overflow = 0;
        for (int w = 0; w < nslots; w++)
            overflow += get(&slot(w)->consumer_overflow);
        put_head(o, "sluice_metrics_consumer_overflow_total", "counter",
                 "Counts made without their consumer label: the per-consumer table was full");
        PUT(o, "sluice_metrics_consumer_overflow_total ");
        put_u64(o, overflow);
        put(o, "\n", 1);
    }
}

static void put_health(out_t *o, const char *upstream, const sl_target_t *t, const char *address,
                       const char *state)
{
    static const char *const states[] = {"healthchecks_off", "healthy", "unhealthy", "ejected",
                                         "dns_error"};
    char target[300];
    snprintf(target, sizeof(target), strchr(t->host, ':') != NULL ? "[%s]:%u" : "%s:%u", t->host,
             t->port);
    for (size_t s = 0; s < SL_NELEMS(states); s++) {
        PUT(o, "sluice_upstream_target_health{upstream=\"");
        put_label(o, upstream);
        PUT(o, "\",target=\"");
        put_label(o, target);
        PUT(o, "\",address=\"");
        put_label(o, address);
        PUT(o, "\",state=\"");
        puts_(o, states[s]);
        PUT(o, "\"} ");
        put(o, strcmp(states[s], state) == 0 ? "1\n" : "0\n", 2);
    }
}

static void render_health(out_t *o)
{
    const sl_config_t *cf = metrics_cf;
    put_head(o, "sluice_upstream_target_health", "gauge",
             "Health status of targets of upstream. States = "
             "healthchecks_off|healthy|unhealthy|ejected|dns_error, value is 1 when state is "
             "populated.");
    for (size_t i = 0; i < cf->metrics->nnamed_upstreams && i < cf->nupstreams; i++) {
        const sl_upstream_t *u = cf->upstreams[i];
        for (size_t j = 0; j < u->ntargets;) {
            /* A name owns a run of slots (dns_slot 1..n): one series per
             * address it has now, or one dns_error series when it has none. */
            size_t end = j + 1;
            if (u->targets[j].dns_slot != 0)
                while (end < u->ntargets && u->targets[end].dns_slot > u->targets[end - 1].dns_slot)
                    end++;
            int present = 0;
            for (size_t k = j; k < end; k++) {
                struct sockaddr_storage addr;
                socklen_t addrlen;
                if (!sl_targets_addr(u, k, &addr, &addrlen))
                    continue;
                char ip[INET6_ADDRSTRLEN] = "?", address[INET6_ADDRSTRLEN + 8];
                if (addr.ss_family == AF_INET6)
                    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&addr)->sin6_addr, ip,
                              sizeof(ip));
                else
                    inet_ntop(AF_INET, &((const struct sockaddr_in *)&addr)->sin_addr, ip,
                              sizeof(ip));
                snprintf(address, sizeof(address), addr.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
                         ip, u->targets[k].port);
                char state[32];
                const char *name = sl_health_name(u, k);
                size_t n = 0;
                for (; name[n] != '\0' && n < sizeof(state) - 1; n++)
                    state[n] = sl_lower(name[n]);
                state[n] = '\0';
                put_health(o, u->name, &u->targets[k], address, state);
                present = 1;
            }
            if (!present)
                put_health(o, u->name, &u->targets[j], "", "dns_error");
            j = end;
        }
    }
}

static void render_node(out_t *o)
{
    const sl_config_t *cf = metrics_cf;
    uint64_t conn[6] = {0};
    put_head(o, "sluice_connections", "gauge", "Number of client connections by state");
    for (int w = 0; w < nslots; w++) {
        sl_metrics_worker_t *s = slot(w);
        conn[0] += get(&s->active);
        conn[1] += get(&s->reading);
        conn[2] += get(&s->writing);
        conn[3] += get(&s->waiting);
        conn[4] += get(&s->accepted);
        conn[5] += get(&s->handled);
    }
    static const char *const states[4] = {"active", "reading", "writing", "waiting"};
    for (int i = 0; i < 4; i++) {
        PUT(o, "sluice_connections{state=\"");
        puts_(o, states[i]);
        PUT(o, "\"} ");
        put_u64(o, conn[i]);
        put(o, "\n", 1);
    }
    put_head(o, "sluice_connections_accepted_total", "counter",
             "Number of client connections accepted");
    PUT(o, "sluice_connections_accepted_total ");
    put_u64(o, conn[4]);
    put(o, "\n", 1);
    put_head(o, "sluice_connections_handled_total", "counter",
             "Number of client connections handled");
    PUT(o, "sluice_connections_handled_total ");
    put_u64(o, conn[5]);
    put(o, "\n", 1);

    put_head(o, "sluice_memory_workers_lua_vms_bytes", "gauge", "Allocated bytes in worker Lua VM");
    for (int w = 0; w < nslots; w++) {
        sl_metrics_worker_t *s = slot(w);
        int64_t pid = atomic_load_explicit(&s->pid, RELAXED);
        if (pid == 0)
            continue;
        PUT(o, "sluice_memory_workers_lua_vms_bytes{pid=\"");
        put_u64(o, (uint64_t)pid);
        PUT(o, "\"} ");
        put_u64(o, get(&s->lua_bytes));
        put(o, "\n", 1);
    }

    const sl_server_conf_t *sv = &cf->server;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            put_head(o, "sluice_memory_lua_shared_dict_bytes", "gauge",
                     "Allocated bytes in a shared dict");
        else
            put_head(o, "sluice_memory_lua_shared_dict_total_bytes", "gauge",
                     "Total capacity in bytes of a shared dict");
        for (size_t i = 0; i < sv->nshared_dicts; i++) {
            const char *name = sv->shared_dicts[i].name;
            sl_shdict_t *d = sl_shdict_find(name, strlen(name));
            size_t capacity = 0, free_space = 0;
            const char *err;
            if (d == NULL || sl_ffi_shdict_space(d, &capacity, &free_space, &err) != SL_OK)
                continue;
            puts_(o, pass == 0 ? "sluice_memory_lua_shared_dict_bytes{shared_dict=\""
                               : "sluice_memory_lua_shared_dict_total_bytes{shared_dict=\"");
            put_label(o, name);
            PUT(o, "\"} ");
            put_u64(o, pass == 0 ? capacity - free_space : capacity);
            put(o, "\n", 1);
        }
    }

    put_head(o, "sluice_node_info", "gauge", "sluice node metadata information");
    PUT(o, "sluice_node_info{version=\"" SL_VERSION "\"} 1\n");
}

SL_EXPORT int sl_ffi_metrics_render(char *buf, size_t cap, size_t *len)
{
    out_t o = {buf, cap, 0};
    if (metrics_cf == NULL || metrics_cf->metrics == NULL) {
        *len = 0;
        return SL_DECLINED;
    }
    refresh_gauges();
    /* The workers' records are summed per route first (one allocation per
     * scrape, 2 KB per route), then each family is written from the sums. */
    sl_metrics_route_t *sums = NULL;
    if (metrics_cf->metrics->families &
        (SL_METRICS_STATUS | SL_METRICS_LATENCY | SL_METRICS_BANDWIDTH)) {
        sums = calloc(nrecords, sizeof(*sums));
        if (sums == NULL) {
            *len = 0;
            return SL_ERROR;
        }
        for (size_t i = 0; i < nrecords; i++)
            sl_metrics_sum((int)i, &sums[i]);
        series_t *cs;
        size_t ncs;
        if (collect_series(&cs, &ncs) != SL_OK) {
            free(sums);
            *len = 0;
            return SL_ERROR;
        }
        render_requests(&o, sums, cs, ncs);
        free(cs);
        free(sums);
    }
    if (metrics_cf->metrics->families & SL_METRICS_HEALTH)
        render_health(&o);
    render_node(&o);
    *len = o.len;
    return o.len <= cap ? SL_OK : SL_AGAIN;
}
