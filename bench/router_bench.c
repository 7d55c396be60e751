/* router_bench.c: measures sl_router_match's cost per request as the route table grows. */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

#include "../core/router.h"

/*
 * Two tables per size: "host+prefix" gives each of N/10 hosts ten prefix
 * routes ("svc17.example.com" + "/api/v1/r3"); "prefix only" has N routes
 * without hosts ("/api/svc1234"). Requests are drawn once, 90% aimed at a
 * route (with a tail after its prefix), 10% at nothing, and replayed in a
 * loop. Columns:
 *
 *   host+prefix   requests spread over all routes: at 10,000 routes the
 *                 table outgrows the L2 cache, so this includes cache misses;
 *   hot 64        the same table, requests for 64 of its routes: the cost of
 *                 the lookup itself;
 *   prefix only   the host-less table, requests spread over all routes;
 *   linear scan   what trying every route in turn costs on host+prefix, for
 *                 comparison.
 */

enum { NREQ = 4096, PER_HOST = 10, HOT = 64 };

static const double SECONDS_PER_CASE = 0.09;

typedef struct {
    sl_route_t *routes;
    sl_route_t **ptrs;
    char **hosts;
    sl_route_path_t *paths;
    char *strings;
} table_t;

typedef struct {
    char host[64];
    char path[96];
} req_text_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void build(table_t *t, size_t n, int with_hosts)
{
    t->routes = calloc(n, sizeof(*t->routes));
    t->ptrs = calloc(n, sizeof(*t->ptrs));
    t->hosts = calloc(n, sizeof(*t->hosts));
    t->paths = calloc(n, sizeof(*t->paths));
    t->strings = calloc(n, 96);
    if (!t->routes || !t->ptrs || !t->hosts || !t->paths || !t->strings) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        sl_route_t *r = &t->routes[i];
        char *host = t->strings + 96 * i, *path = host + 48;
        r->index = i;
        r->methods = SL_HTTP_GET | SL_HTTP_POST;
        r->paths = &t->paths[i];
        r->npaths = 1;
        if (with_hosts) {
            snprintf(host, 48, "svc%zu.example.com", i / PER_HOST);
            t->hosts[i] = host;
            r->hosts = &t->hosts[i];
            r->nhosts = 1;
            t->paths[i].len = (size_t)snprintf(path, 48, "/api/v1/r%zu", i % PER_HOST);
        } else {
            t->paths[i].len = (size_t)snprintf(path, 48, "/api/svc%zu", i);
        }
        t->paths[i].value = path;
        t->ptrs[i] = r;
    }
}

static void release(table_t *t)
{
    free(t->routes);
    free(t->ptrs);
    free(t->hosts);
    free(t->paths);
    free(t->strings);
}

/* The benchmark's stand-in for a router without an index: every route is
 * tried. On the host+prefix table all routes have the same weight, so Kong's
 * order reduces to the longest prefix, then the earliest route. */
static const sl_route_t *linear_match(const table_t *t, size_t n, const sl_router_req_t *q)
{
    const sl_route_t *best = NULL;

    for (size_t i = 0; i < n; i++) {
        const sl_route_t *r = &t->routes[i];
        const sl_route_path_t *p = &r->paths[0];
        size_t hl = strlen(r->hosts[0]);
        if (hl != q->host_len || strncasecmp(r->hosts[0], q->host, hl) != 0)
            continue;
        if (p->len > q->path_len || memcmp(p->value, q->path, p->len) != 0)
            continue;
        if (!(r->methods & (unsigned)q->method_id))
            continue;
        if (best == NULL || p->len > best->paths[0].len)
            best = r;
    }
    return best;
}

enum { MODE_ROUTER, MODE_HOT, MODE_LINEAR };

/* Returns nanoseconds per match over the request set, replayed for a while. */
static double run(size_t n, int with_hosts, int mode, size_t *hits)
{
    static req_text_t text[NREQ];
    static sl_router_req_t reqs[NREQ];
    char err[256];
    table_t t;

    build(&t, n, with_hosts);
    sl_router_t *rt = sl_router_create(t.ptrs, n, err, sizeof(err));
    if (rt == NULL) {
        fprintf(stderr, "router: %s\n", err);
        exit(1);
    }
    srand(42);
    for (size_t i = 0; i < NREQ; i++) {
        size_t k = (size_t)rand() % (mode == MODE_HOT ? SL_MIN(n, (size_t)HOT) : n);
        if (mode == MODE_HOT)
            k = k * (n / SL_MIN(n, (size_t)HOT)); /* spread over the hosts */
        int miss = rand() % 10 == 0;
        req_text_t *x = &text[i];
        sl_router_req_t *q = &reqs[i];
        if (with_hosts) {
            snprintf(x->host, sizeof(x->host), "svc%zu.example.com", miss ? n + k : k / PER_HOST);
            snprintf(x->path, sizeof(x->path), "/api/v1/r%zu/items/%d", k % PER_HOST, rand());
        } else {
            snprintf(x->host, sizeof(x->host), "www.example.com");
            snprintf(x->path, sizeof(x->path), "/api/%s%zu/items/%d", miss ? "x" : "svc", k,
                     rand());
        }
        *q = (sl_router_req_t){
            .method_id = SL_HTTP_GET,
            .method = "GET",
            .method_len = 3,
            .host = x->host,
            .host_len = strlen(x->host),
            .port = 80,
            .path = x->path,
            .path_len = strlen(x->path),
            .protocol = SL_PROTO_HTTP,
        };
    }

    /* The clock is read every 64 matches, so that the slow linear scan
     * stops in time too. */
    sl_router_match_t m;
    size_t matches = 0, found = 0;
    double start = now(), elapsed;
    do {
        for (size_t i = matches % NREQ, e = i + 64; i < e; i++) {
            if (mode == MODE_LINEAR)
                found += linear_match(&t, n, &reqs[i]) != NULL;
            else
                found += sl_router_match(rt, &reqs[i], &m) == SL_OK;
        }
        matches += 64;
        elapsed = now() - start;
    } while (elapsed < SECONDS_PER_CASE);

    *hits = found * 100 / matches;
    sl_router_free(rt);
    release(&t);
    return elapsed * 1e9 / (double)matches;
}

int main(void)
{
    static const size_t sizes[] = {10, 100, 1000, 10000};

    printf("sl_router_match, ns per match (%d requests replayed, ~90%% hits)\n", NREQ);
    printf("%8s  %12s  %8s  %12s  %12s\n", "routes", "host+prefix", "hot 64", "prefix only",
           "linear scan");
    for (size_t i = 0; i < SL_NELEMS(sizes); i++) {
        size_t hits[4];
        double h = run(sizes[i], 1, MODE_ROUTER, &hits[0]);
        double hot = run(sizes[i], 1, MODE_HOT, &hits[1]);
        double p = run(sizes[i], 0, MODE_ROUTER, &hits[2]);
        double lin = run(sizes[i], 1, MODE_LINEAR, &hits[3]);
        printf("%8zu  %12.1f  %8.1f  %12.1f  %12.1f\n", sizes[i], h, hot, p, lin);
        for (size_t k = 0; k < SL_NELEMS(hits); k++) {
            if (hits[k] < 80 || hits[k] > 95) {
                fprintf(stderr, "unexpected hit rate: %zu%%\n", hits[k]);
                return 1;
            }
        }
    }
    return 0;
}
