/* metrics.c: tests for core/metrics.c: the code set, per-worker slots summed across processes,
 * histograms and the text exposition. */
#include "../../core/metrics.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../core/sl_ffi.h"
#include "../../core/worker.h"
#include "test.h"

/* A config of two workers and two routes of one service, with every family on. */
typedef struct {
    sl_config_t cf;
    sl_service_t service;
    sl_route_t routes[2];
    sl_route_t *route_ptrs[2];
    sl_metrics_conf_t m;
    const char *labels[3];
} fixture_t;

static void fixture(fixture_t *f, unsigned families)
{
    memset(f, 0, sizeof(*f));
    f->service.name = "orders";
    f->service.host = "127.0.0.1";
    f->routes[0].name = "list";
    f->routes[0].service = &f->service;
    f->routes[1].name = NULL;
    f->routes[1].index = 1;
    f->routes[1].service = &f->service;
    f->route_ptrs[0] = &f->routes[0];
    f->route_ptrs[1] = &f->routes[1];
    f->labels[0] = "list";
    f->labels[1] = "with \"quotes\"\\ and\nnewline";
    f->labels[2] = "";
    f->m.families = families;
    f->m.route_labels = f->labels;
    f->cf.routes = f->route_ptrs;
    f->cf.nroutes = 2;
    f->cf.server.workers = 2;
    f->cf.metrics = &f->m;
}

/* Makes this process worker id's writer. */
static void be_worker(fixture_t *f, sl_worker_t *w, int id)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->cf = &f->cf;
    sl_queue_init(&w->conns);
    sl_metrics_start(w);
}

TEST(metrics_code_set)
{
    ASSERT_STREQ(sl_metrics_code_label(sl_metrics_code_index(200)), "200");
    ASSERT_STREQ(sl_metrics_code_label(sl_metrics_code_index(404)), "404");
    ASSERT_STREQ(sl_metrics_code_label(sl_metrics_code_index(511)), "511");
    ASSERT_STREQ(sl_metrics_code_label(sl_metrics_code_index(299)), "2xx");
    ASSERT_STREQ(sl_metrics_code_label(sl_metrics_code_index(306)), "3xx");
    ASSERT_STREQ(sl_metrics_code_label(sl_metrics_code_index(599)), "5xx");
    ASSERT_STREQ(sl_metrics_code_label(sl_metrics_code_index(999)), "9xx");
    ASSERT(sl_metrics_code_label(SL_METRICS_NCODES) == NULL);
    /* Every code maps inside the set, and the exact labels are the codes. */
    for (int s = 0; s < 1200; s++) {
        int i = sl_metrics_code_index(s);
        ASSERT(i >= 0 && i < SL_METRICS_NCODES);
        const char *label = sl_metrics_code_label(i);
        if (label[1] != 'x' && s >= 100 && s <= 999)
            ASSERT_EQ(atoi(label), s);
    }
}

TEST(metrics_nothing_without_an_instance)
{
    fixture_t f;
    fixture(&f, SL_METRICS_STATUS);
    f.cf.metrics = NULL;
    ASSERT_OK(sl_metrics_create(&f.cf));
    sl_worker_t w;
    be_worker(&f, &w, 0);
    sl_metrics_count(0, -1, 200, SL_METRICS_SERVICE, 1, 1, 1, 1); /* a no-op, not a crash */
    size_t len = 1;
    ASSERT_EQ(sl_ffi_metrics_render(NULL, 0, &len), SL_DECLINED);
    ASSERT_EQ(len, 0);
    sl_metrics_destroy();
}

/* Two processes count into their own slots; the parent sees the sums. */
TEST(metrics_sums_every_worker)
{
    fixture_t f;
    fixture(&f, SL_METRICS_STATUS | SL_METRICS_LATENCY | SL_METRICS_BANDWIDTH);
    ASSERT_OK(sl_metrics_create(&f.cf));
    pid_t pids[2];
    for (int id = 0; id < 2; id++) {
        pids[id] = fork();
        ASSERT(pids[id] >= 0);
        if (pids[id] == 0) {
            sl_worker_t w;
            be_worker(&f, &w, id);
            for (int i = 0; i < 100 * (id + 1); i++)
                sl_metrics_count(0, -1, 200, SL_METRICS_SERVICE, 10, 100, 30.0, 20.0);
            sl_metrics_count(0, -1, 404, SL_METRICS_EXIT, 5, 50, 3.0, -1);
            sl_metrics_count(2, -1, 404, SL_METRICS_ERROR, 7, 70, 0.5, -1); /* no route */
            sl_metrics_count(1, -1, 299, SL_METRICS_SERVICE, 1, 1, 70000.0, 50000.0);
            sl_metrics_accepted(1);
            _exit(0);
        }
    }
    for (int id = 0; id < 2; id++) {
        int status;
        ASSERT_EQ(waitpid(pids[id], &status, 0), pids[id]);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }

    sl_metrics_route_t r;
    sl_metrics_sum(0, &r);
    ASSERT_EQ(r.requests[SL_METRICS_SERVICE][sl_metrics_code_index(200)], 300);
    ASSERT_EQ(r.requests[SL_METRICS_EXIT][sl_metrics_code_index(404)], 2);
    ASSERT_EQ(r.requests[SL_METRICS_SERVICE][sl_metrics_code_index(404)], 0);
    ASSERT_EQ(r.ingress, 300 * 10 + 2 * 5);
    ASSERT_EQ(r.egress, 300 * 100 + 2 * 50);
    /* 30 ms lands in the (25, 50] bucket of the request histogram, 20 ms
     * upstream in (0, 25], and the 10 ms sluice spent in (7, 10]. */
    ASSERT_EQ(r.request.buckets[1], 300);
    ASSERT_EQ(r.request.buckets[0], 2); /* the exits' 3 ms */
    ASSERT_EQ(r.upstream.buckets[0], 300);
    ASSERT_EQ(r.sluice.buckets[4], 300);
    ASSERT_EQ(r.sluice.buckets[2], 2); /* 3 ms: (2, 5] */
    ASSERT_EQ(r.request.sum_us, 300 * 30000 + 2 * 3000);
    ASSERT_EQ(r.upstream.sum_us, 300 * 20000);
    sl_metrics_sum(1, &r);
    ASSERT_EQ(r.requests[SL_METRICS_SERVICE][sl_metrics_code_index(299)], 2);
    ASSERT_EQ(r.request.buckets[SL_METRICS_UPSTREAM_BUCKETS], 2); /* over 60 s: +Inf */
    ASSERT_EQ(r.upstream.buckets[SL_METRICS_UPSTREAM_BUCKETS - 1], 2);
    sl_metrics_sum(2, &r);
    ASSERT_EQ(r.requests[SL_METRICS_ERROR][sl_metrics_code_index(404)], 2);
    ASSERT_EQ(r.upstream.buckets[0] + r.upstream.buckets[1], 0); /* no upstream answered */

    char *buf = malloc(65536);
    ASSERT(buf != NULL);
    size_t need = 0, len = 0;
    ASSERT_EQ(sl_ffi_metrics_render(buf, 10, &need), SL_AGAIN);
    ASSERT_OK(sl_ffi_metrics_render(buf, 65536, &len));
    ASSERT_EQ(len, need);
    buf[len] = '\0';
    ASSERT(strstr(buf, "# TYPE sluice_http_requests_total counter\n") != NULL);
    ASSERT(strstr(buf, "sluice_http_requests_total{service=\"orders\",route=\"list\",code=\"200\","
                       "source=\"service\"} 300\n") != NULL);
    ASSERT(strstr(buf, "sluice_http_requests_total{service=\"orders\",route=\"list\",code=\"404\","
                       "source=\"exit\"} 2\n") != NULL);
    ASSERT(strstr(buf, "sluice_http_requests_total{service=\"\",route=\"\",code=\"404\","
                       "source=\"error\"} 2\n") != NULL);
    /* Label values are escaped. */
    ASSERT(strstr(buf, "route=\"with \\\"quotes\\\"\\\\ and\\nnewline\",code=\"2xx\"") != NULL);
    ASSERT(strstr(buf, "sluice_request_latency_ms_bucket{service=\"orders\",route=\"list\","
                       "le=\"50\"} 302\n") != NULL);
    ASSERT(strstr(buf, "sluice_request_latency_ms_bucket{service=\"orders\",route=\"list\","
                       "le=\"+Inf\"} 302\n") != NULL);
    ASSERT(
        strstr(buf, "sluice_request_latency_ms_count{service=\"orders\",route=\"list\"} 302\n") !=
        NULL);
    ASSERT(strstr(buf,
                  "sluice_request_latency_ms_sum{service=\"orders\",route=\"list\"} 9006.000\n") !=
           NULL);
    ASSERT(strstr(buf,
                  "sluice_bandwidth_bytes{service=\"orders\",route=\"list\",direction=\"egress\"} "
                  "30100\n") != NULL);
    ASSERT(strstr(buf, "sluice_connections_accepted_total 2\n") != NULL);
    ASSERT(strstr(buf, "sluice_node_info{version=\"" SL_VERSION "\"} 1\n") != NULL);
    /* Health is off here: no family for it. */
    ASSERT(strstr(buf, "sluice_upstream_target_health") == NULL);
    free(buf);
    sl_metrics_destroy();
}

TEST(metrics_families_follow_the_flags)
{
    fixture_t f;
    fixture(&f, SL_METRICS_BANDWIDTH);
    ASSERT_OK(sl_metrics_create(&f.cf));
    sl_worker_t w;
    be_worker(&f, &w, 1);
    sl_metrics_count(0, -1, 200, SL_METRICS_SERVICE, 3, 4, 1.0, 1.0);
    sl_metrics_route_t r;
    sl_metrics_sum(0, &r);
    ASSERT_EQ(r.requests[SL_METRICS_SERVICE][sl_metrics_code_index(200)], 0);
    ASSERT_EQ(r.request.buckets[0], 0);
    ASSERT_EQ(r.ingress, 3);
    char buf[8192];
    size_t len;
    ASSERT_OK(sl_ffi_metrics_render(buf, sizeof(buf) - 1, &len));
    buf[len] = '\0';
    ASSERT(strstr(buf, "sluice_http_requests_total") == NULL);
    ASSERT(strstr(buf, "sluice_request_latency_ms") == NULL);
    ASSERT(strstr(buf, "direction=\"ingress\"} 3\n") != NULL);
    sl_metrics_destroy();
}

/* per_consumer: a consumer's counts carry its label, summed over workers;
 * a full table sends counts to the unlabelled record and says so. */
TEST(metrics_consumer_series)
{
    fixture_t f;
    fixture(&f, SL_METRICS_STATUS | SL_METRICS_BANDWIDTH);
    const char *labels[2] = {"alice", "bob"};
    /* Sorted by length, then bytes, as sl_metrics_configure leaves them. */
    sl_metrics_consumer_t by_id[2] = {{"id-b", 4, 1}, {"id-alice", 8, 0}};
    f.m.nconsumers = 2;
    f.m.consumer_labels = labels;
    f.m.by_id = by_id;
    f.m.table_size = 1024;
    ASSERT_OK(sl_metrics_create(&f.cf));
    ASSERT_EQ(sl_metrics_consumer("id-alice", 8), 0);
    ASSERT_EQ(sl_metrics_consumer("id-b", 4), 1);
    ASSERT_EQ(sl_metrics_consumer("id-c", 4), -1);
    ASSERT_EQ(sl_metrics_consumer(NULL, 0), -1);
    pid_t pids[2];
    for (int id = 0; id < 2; id++) {
        pids[id] = fork();
        ASSERT(pids[id] >= 0);
        if (pids[id] == 0) {
            sl_worker_t w;
            be_worker(&f, &w, id);
            for (int i = 0; i < 5; i++)
                sl_metrics_count(0, 0, 200, SL_METRICS_SERVICE, 10, 20, 1, 1);
            sl_metrics_count(1, 1, 403, SL_METRICS_EXIT, 1, 2, 1, -1);
            sl_metrics_count(0, -1, 200, SL_METRICS_SERVICE, 100, 200, 1, 1);
            _exit(0);
        }
    }
    for (int id = 0; id < 2; id++) {
        int status;
        ASSERT_EQ(waitpid(pids[id], &status, 0), pids[id]);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* The route records hold only the requests without a consumer. */
    sl_metrics_route_t r;
    sl_metrics_sum(0, &r);
    ASSERT_EQ(r.requests[SL_METRICS_SERVICE][sl_metrics_code_index(200)], 2);
    ASSERT_EQ(r.ingress, 200);
    char buf[16384];
    size_t len;
    ASSERT_OK(sl_ffi_metrics_render(buf, sizeof(buf) - 1, &len));
    buf[len] = '\0';
    ASSERT(strstr(buf, "sluice_http_requests_total{service=\"orders\",route=\"list\",code=\"200\","
                       "source=\"service\",consumer=\"alice\"} 10\n") != NULL);
    ASSERT(strstr(buf, "sluice_http_requests_total{service=\"orders\",route=\"list\",code=\"200\","
                       "source=\"service\",consumer=\"\"} 2\n") != NULL);
    ASSERT(strstr(buf, "code=\"403\",source=\"exit\",consumer=\"bob\"} 2\n") != NULL);
    ASSERT(strstr(buf, "sluice_bandwidth_bytes{service=\"orders\",route=\"list\","
                       "direction=\"ingress\",consumer=\"alice\"} 100\n") != NULL);
    ASSERT(strstr(buf, "sluice_bandwidth_bytes{service=\"orders\",route=\"list\","
                       "direction=\"egress\",consumer=\"alice\"} 200\n") != NULL);
    ASSERT(strstr(buf, "sluice_bandwidth_bytes{service=\"orders\",route=\"list\","
                       "direction=\"ingress\",consumer=\"\"} 200\n") != NULL);
    ASSERT(strstr(buf, "sluice_metrics_consumer_overflow_total 0\n") != NULL);
    sl_metrics_destroy();

    /* A table of 4 entries holds 4 series; the fifth goes unlabelled. */
    f.m.table_size = 4;
    f.m.families = SL_METRICS_STATUS;
    ASSERT_OK(sl_metrics_create(&f.cf));
    sl_worker_t w;
    be_worker(&f, &w, 0);
    for (int s = 200; s <= 204; s++)
        sl_metrics_count(0, 0, s, SL_METRICS_SERVICE, 0, 0, 1, 1);
    sl_metrics_sum(0, &r);
    uint64_t unlabelled = 0;
    for (int s = 200; s <= 204; s++)
        unlabelled += r.requests[SL_METRICS_SERVICE][sl_metrics_code_index(s)];
    ASSERT_EQ(unlabelled, 1);
    ASSERT_OK(sl_ffi_metrics_render(buf, sizeof(buf) - 1, &len));
    buf[len] = '\0';
    ASSERT(strstr(buf, "sluice_metrics_consumer_overflow_total 1\n") != NULL);
    ASSERT(strstr(buf, "code=\"203\",source=\"service\",consumer=\"alice\"} 1\n") != NULL);
    sl_metrics_destroy();
}
