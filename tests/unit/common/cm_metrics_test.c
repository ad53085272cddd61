/* cm_metrics: exact Prometheus text for counters, gauges and histograms with labels, escaping,
 * registration rules, the series cap, and concurrent updates adding up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cm_metrics.h"

static char *render(cm_metrics *m, cm_buf *b) {
    cm_buf_reset(b);
    assert_int_equal(cm_metrics_render(m, b), CM_OK);
    return b->data != NULL ? b->data : "";
}

static void test_counter_and_gauge_text(void **state) {
    (void)state;
    cm_metrics *m;
    cm_metric *req, *inflight;
    cm_series *ok, *bad, *g;
    cm_buf b;
    cm_buf_init(&b, 1 << 16);
    assert_int_equal(cm_metrics_create(16, &m), CM_OK);
    const char *labels[] = {"model", "status", NULL};
    assert_int_equal(
        cm_metrics_counter(m, "sluice_requests_total", "Requests finished.", labels, &req), CM_OK);
    assert_int_equal(cm_metrics_gauge(m, "sluice_inflight", "Requests in flight.", NULL, &inflight),
                     CM_OK);
    assert_int_equal(cm_metric_series(req, (const char *[]){"smollm2", "200"}, &ok), CM_OK);
    assert_int_equal(cm_metric_series(req, (const char *[]){"smollm2", "429"}, &bad), CM_OK);
    assert_int_equal(cm_metric_series(inflight, NULL, &g), CM_OK);
    cm_series_inc(ok);
    cm_series_inc(ok);
    cm_series_add(ok, 0.5);
    cm_series_inc(bad);
    cm_series_add(bad, -3); /* ignored: counters never go down */
    cm_series_set(g, 7);
    cm_series_add(g, -2);
    cm_series_set(ok, 100); /* ignored: set is for gauges */
    assert_true(cm_series_value(ok) == 2.5);
    assert_true(cm_series_value(g) == 5);
    const char *want = "# HELP sluice_requests_total Requests finished.\n"
                       "# TYPE sluice_requests_total counter\n"
                       "sluice_requests_total{model=\"smollm2\",status=\"200\"} 2.5\n"
                       "sluice_requests_total{model=\"smollm2\",status=\"429\"} 1\n"
                       "# HELP sluice_inflight Requests in flight.\n"
                       "# TYPE sluice_inflight gauge\n"
                       "sluice_inflight 5\n";
    assert_string_equal(render(m, &b), want);
    /* The same label set gives the same series. */
    cm_series *again;
    assert_int_equal(cm_metric_series(req, (const char *[]){"smollm2", "200"}, &again), CM_OK);
    assert_ptr_equal(again, ok);
    cm_buf_fini(&b);
    cm_metrics_destroy(m);
}

static void test_histogram_text(void **state) {
    (void)state;
    cm_metrics *m;
    cm_metric *h;
    cm_series *s;
    cm_buf b;
    cm_buf_init(&b, 1 << 16);
    assert_int_equal(cm_metrics_create(16, &m), CM_OK);
    const double bounds[] = {0.1, 0.5, 2.5};
    const char *labels[] = {"model", NULL};
    assert_int_equal(cm_metrics_histogram(m, "sluice_ttft_seconds", "Time to first token.", labels,
                                          bounds, 3, &h),
                     CM_OK);
    assert_int_equal(cm_metric_series(h, (const char *[]){"m1"}, &s), CM_OK);
    double obs[] = {0.05, 0.1, 0.3, 1, 3, 100};
    for (size_t i = 0; i < 6; i++) {
        cm_series_observe(s, obs[i]);
    }
    cm_series_observe(s, NAN); /* ignored */
    const char *want = "# HELP sluice_ttft_seconds Time to first token.\n"
                       "# TYPE sluice_ttft_seconds histogram\n"
                       "sluice_ttft_seconds_bucket{model=\"m1\",le=\"0.1\"} 2\n"
                       "sluice_ttft_seconds_bucket{model=\"m1\",le=\"0.5\"} 3\n"
                       "sluice_ttft_seconds_bucket{model=\"m1\",le=\"2.5\"} 4\n"
                       "sluice_ttft_seconds_bucket{model=\"m1\",le=\"+Inf\"} 6\n"
                       "sluice_ttft_seconds_sum{model=\"m1\"} 104.45\n"
                       "sluice_ttft_seconds_count{model=\"m1\"} 6\n";
    assert_string_equal(render(m, &b), want);
    assert_true(cm_series_value(s) == 6);
    cm_buf_fini(&b);
    cm_metrics_destroy(m);
}

static void test_histogram_without_labels(void **state) {
    (void)state;
    cm_metrics *m;
    cm_metric *h;
    cm_series *s;
    cm_buf b;
    cm_buf_init(&b, 1 << 16);
    double bounds[4];
    assert_int_equal(cm_metrics_exp_bounds(1, 2, 4, bounds), CM_OK);
    assert_true(bounds[0] == 1 && bounds[1] == 2 && bounds[2] == 4 && bounds[3] == 8);
    assert_int_equal(cm_metrics_histogram(m = NULL, "x", "y", NULL, bounds, 4, &h), CM_ERR_INVALID);
    assert_int_equal(cm_metrics_create(4, &m), CM_OK);
    assert_int_equal(cm_metrics_histogram(m, "batch_size", "Batch.", NULL, bounds, 4, &h), CM_OK);
    assert_int_equal(cm_metric_series(h, NULL, &s), CM_OK);
    cm_series_observe(s, 3);
    const char *want = "# HELP batch_size Batch.\n"
                       "# TYPE batch_size histogram\n"
                       "batch_size_bucket{le=\"1\"} 0\n"
                       "batch_size_bucket{le=\"2\"} 0\n"
                       "batch_size_bucket{le=\"4\"} 1\n"
                       "batch_size_bucket{le=\"8\"} 1\n"
                       "batch_size_bucket{le=\"+Inf\"} 1\n"
                       "batch_size_sum 3\n"
                       "batch_size_count 1\n";
    assert_string_equal(render(m, &b), want);
    cm_buf_fini(&b);
    cm_metrics_destroy(m);
}

static void test_escaping(void **state) {
    (void)state;
    cm_metrics *m;
    cm_metric *c;
    cm_series *s;
    cm_buf b;
    cm_buf_init(&b, 1 << 16);
    assert_int_equal(cm_metrics_create(4, &m), CM_OK);
    assert_int_equal(cm_metrics_counter(m, "esc_total", "Line one\nback\\slash \"q\"",
                                        (const char *[]){"v", NULL}, &c),
                     CM_OK);
    assert_int_equal(cm_metric_series(c, (const char *[]){"a\"b\\c\nd"}, &s), CM_OK);
    cm_series_inc(s);
    /* HELP escapes \ and newline only; label values also escape the double quote. */
    const char *want = "# HELP esc_total Line one\\nback\\\\slash \"q\"\n"
                       "# TYPE esc_total counter\n"
                       "esc_total{v=\"a\\\"b\\\\c\\nd\"} 1\n";
    assert_string_equal(render(m, &b), want);
    cm_buf_fini(&b);
    cm_metrics_destroy(m);
}

static void test_number_formats(void **state) {
    (void)state;
    cm_metrics *m;
    cm_metric *g;
    cm_series *s;
    cm_buf b;
    cm_buf_init(&b, 1 << 16);
    assert_int_equal(cm_metrics_create(8, &m), CM_OK);
    assert_int_equal(cm_metrics_gauge(m, "g", "G.", (const char *[]){"k", NULL}, &g), CM_OK);
    struct {
        const char *k;
        double v;
        const char *text;
    } cases[] = {{"a", 0.1, "0.1"},
                 {"b", 1e21, "1e+21"},
                 {"c", INFINITY, "+Inf"},
                 {"d", -INFINITY, "-Inf"},
                 {"e", NAN, "NaN"},
                 {"f", -2.5, "-2.5"},
                 {"h", 123456789, "123456789"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(cm_metric_series(g, (const char *[]){cases[i].k}, &s), CM_OK);
        cm_series_set(s, cases[i].v);
    }
    const char *out = render(m, &b);
    char line[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(line, sizeof line, "g{k=\"%s\"} %s\n", cases[i].k, cases[i].text);
        if (strstr(out, line) == NULL) {
            fail_msg("missing '%s' in:\n%s", line, out);
        }
    }
    cm_buf_fini(&b);
    cm_metrics_destroy(m);
}

static void test_registration_rules(void **state) {
    (void)state;
    cm_metrics *m;
    cm_metric *a, *b2;
    assert_int_equal(cm_metrics_create(0, &m), CM_ERR_INVALID);
    assert_int_equal(cm_metrics_create(2, &m), CM_OK);
    assert_int_equal(cm_metrics_counter(m, "bad name", "h", NULL, &a), CM_ERR_INVALID);
    assert_int_equal(cm_metrics_counter(m, "1abc", "h", NULL, &a), CM_ERR_INVALID);
    assert_int_equal(cm_metrics_counter(m, "ok", "h", (const char *[]){"__x", NULL}, &a),
                     CM_ERR_INVALID);
    assert_int_equal(cm_metrics_counter(m, "ok", "h", (const char *[]){"a", "a", NULL}, &a),
                     CM_ERR_INVALID);
    assert_int_equal(cm_metrics_counter(m, "ok", "h", (const char *[]){"a:b", NULL}, &a),
                     CM_ERR_INVALID);
    double bounds[] = {1, 1};
    assert_int_equal(cm_metrics_histogram(m, "h", "h", NULL, bounds, 2, &a), CM_ERR_INVALID);
    assert_int_equal(cm_metrics_histogram(m, "h", "h", (const char *[]){"le", NULL}, bounds, 1, &a),
                     CM_ERR_INVALID);
    assert_int_equal(cm_metrics_histogram(m, "h", "h", NULL, bounds, 0, &a), CM_ERR_INVALID);
    /* Same name + same shape: the existing family; different shape: EXISTS. */
    assert_int_equal(cm_metrics_counter(m, "ns:reqs_total", "h", (const char *[]){"x", NULL}, &a),
                     CM_OK);
    assert_int_equal(
        cm_metrics_counter(m, "ns:reqs_total", "other help", (const char *[]){"x", NULL}, &b2),
        CM_OK);
    assert_ptr_equal(a, b2);
    assert_int_equal(cm_metrics_gauge(m, "ns:reqs_total", "h", (const char *[]){"x", NULL}, &b2),
                     CM_ERR_EXISTS);
    assert_null(b2);
    assert_int_equal(cm_metrics_counter(m, "ns:reqs_total", "h", NULL, &b2), CM_ERR_EXISTS);
    /* Series cap (2 per family) and value limits. */
    cm_series *s;
    assert_int_equal(cm_metric_series(a, (const char *[]){"1"}, &s), CM_OK);
    assert_int_equal(cm_metric_series(a, (const char *[]){"2"}, &s), CM_OK);
    assert_int_equal(cm_metric_series(a, (const char *[]){"3"}, &s), CM_ERR_LIMIT);
    assert_null(s);
    assert_int_equal(cm_metric_series(a, (const char *[]){"1"}, &s), CM_OK); /* existing */
    assert_int_equal(cm_metric_series(a, NULL, &s), CM_ERR_INVALID);
    char big[CM_METRICS_MAX_VALUE + 2];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(cm_metric_series(a, (const char *[]){big}, &s), CM_ERR_LIMIT);
    cm_metrics_destroy(m);
}

static void test_render_cap(void **state) {
    (void)state;
    cm_metrics *m;
    cm_metric *c;
    cm_series *s;
    cm_buf b;
    cm_buf_init(&b, 40);
    assert_int_equal(cm_metrics_create(4, &m), CM_OK);
    assert_int_equal(
        cm_metrics_counter(m, "a_rather_long_metric_name_total", "Help text.", NULL, &c), CM_OK);
    assert_int_equal(cm_metric_series(c, NULL, &s), CM_OK);
    assert_int_equal(cm_metrics_render(m, &b), CM_ERR_LIMIT);
    assert_true(b.len <= 40);
    cm_buf_fini(&b);
    cm_metrics_destroy(m);
}

#define THREADS 4
#define ITERS 20000

typedef struct th_arg {
    cm_series *counter;
    cm_series *hist;
} th_arg;

static void *hammer(void *p) {
    th_arg *a = p;
    for (int i = 0; i < ITERS; i++) {
        cm_series_inc(a->counter);
        cm_series_observe(a->hist, (double)(i % 4));
    }
    return NULL;
}

static void test_concurrent_updates(void **state) {
    (void)state;
    cm_metrics *m;
    cm_metric *c, *h;
    th_arg arg;
    assert_int_equal(cm_metrics_create(4, &m), CM_OK);
    assert_int_equal(cm_metrics_counter(m, "c_total", "c", NULL, &c), CM_OK);
    const double bounds[] = {0.5, 1.5};
    assert_int_equal(cm_metrics_histogram(m, "h", "h", NULL, bounds, 2, &h), CM_OK);
    assert_int_equal(cm_metric_series(c, NULL, &arg.counter), CM_OK);
    assert_int_equal(cm_metric_series(h, NULL, &arg.hist), CM_OK);
    pthread_t th[THREADS];
    cm_buf b;
    cm_buf_init(&b, 1 << 16);
    for (int t = 0; t < THREADS; t++) {
        assert_int_equal(pthread_create(&th[t], NULL, hammer, &arg), 0);
    }
    /* Render while updates race: must not crash or fail. */
    for (int i = 0; i < 50; i++) {
        cm_buf_reset(&b);
        assert_int_equal(cm_metrics_render(m, &b), CM_OK);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    assert_true(cm_series_value(arg.counter) == THREADS * ITERS);
    assert_true(cm_series_value(arg.hist) == THREADS * ITERS);
    const char *out = render(m, &b);
    char line[128];
    /* Values 0,1,2,3 in equal shares: le=0.5 gets 1/4, le=1.5 gets 2/4; sum = 1.5 * n. */
    snprintf(line, sizeof line, "h_bucket{le=\"0.5\"} %d\n", THREADS * ITERS / 4);
    assert_non_null(strstr(out, line));
    snprintf(line, sizeof line, "h_bucket{le=\"1.5\"} %d\n", THREADS * ITERS / 2);
    assert_non_null(strstr(out, line));
    snprintf(line, sizeof line, "h_sum %d\n", THREADS * ITERS * 3 / 2);
    assert_non_null(strstr(out, line));
    cm_buf_fini(&b);
    cm_metrics_destroy(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge_text),
        cmocka_unit_test(test_histogram_text),
        cmocka_unit_test(test_histogram_without_labels),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_number_formats),
        cmocka_unit_test(test_registration_rules),
        cmocka_unit_test(test_render_cap),
        cmocka_unit_test(test_concurrent_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
