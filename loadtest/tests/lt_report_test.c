/* lt_report: histogram bins, and the table/JSON/CSV/plot outputs carry the numbers given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lt_report.h"

static void test_histogram(void **state) {
    (void)state;
    double v[] = {-5, 0, 0.5, 1.0, 2.5, 9.99, 10, 50};
    size_t counts[5];
    lt_report_histogram(v, 8, 0, 10, 5, counts);
    /* bins of width 2: [0,2) [2,4) [4,6) [6,8) [8,10]; out-of-range values clamp */
    assert_int_equal(counts[0], 4);
    assert_int_equal(counts[1], 1);
    assert_int_equal(counts[2], 0);
    assert_int_equal(counts[3], 0);
    assert_int_equal(counts[4], 3);
    lt_report_histogram(v, 8, 3, 3, 2, counts); /* empty range: all in the first bin */
    assert_int_equal(counts[0], 8);
    assert_int_equal(counts[1], 0);
}

static lt_args args(void) {
    lt_args a;
    memset(&a, 0, sizeof(a));
    a.model = "m";
    a.stream = 1;
    a.input_min = a.input_max = 128;
    a.output_min = a.output_max = 32;
    snprintf(a.endpoint_url, sizeof(a.endpoint_url), "http://x/v1/chat/completions");
    a.slo.ttft_ms = 100;
    return a;
}

static lt_summary summary(int conc, double ttft_p50) {
    lt_summary s;
    memset(&s, 0, sizeof(s));
    s.concurrency = conc;
    s.completed = 90;
    s.failed = 10;
    s.duration_s = 10;
    s.request_throughput = 9;
    s.output_throughput = 288;
    s.output_tokens = 2880;
    s.slo_set = 1;
    s.good = 80;
    s.goodput = 8;
    s.ttft_ms.n = 90;
    s.ttft_ms.p50 = ttft_p50;
    s.ttft_ms.p95 = ttft_p50 * 2;
    s.ttft_ms.p99 = ttft_p50 * 3;
    s.tpot_ms.p50 = 12.5;
    s.e2e_ms.p50 = 500;
    s.n_error_kinds = 1;
    s.errors[0].http_status = 503;
    s.errors[0].count = 10;
    snprintf(s.errors[0].example, sizeof(s.errors[0].example), "overloaded");
    s.ttft_values = malloc(3 * sizeof(double));
    s.ttft_values[0] = ttft_p50 / 2;
    s.ttft_values[1] = ttft_p50;
    s.ttft_values[2] = ttft_p50 * 3;
    s.n_ttft_values = 3;
    return s;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_text_outputs(void **state) {
    (void)state;
    lt_args a = args();
    lt_summary runs[2] = {summary(1, 40), summary(10, 80)};
    char path[] = "/tmp/lt_report_test_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    lt_report_run(f, &a, &runs[0]);
    lt_report_table(f, &a, runs, 2);
    fclose(f);
    char *text = slurp(path);
    assert_non_null(strstr(text, "concurrency 1"));
    assert_non_null(strstr(text, "90 / 10"));
    assert_non_null(strstr(text, "goodput (req/s)"));
    assert_non_null(strstr(text, "errors 503"));
    assert_non_null(strstr(text, "\"overloaded\""));
    assert_non_null(strstr(text, "    10     90    10     9.00     288.0      80.0     160.0"));
    char err[256];
    assert_int_equal(lt_report_csv(path, &a, runs, 2, err, sizeof(err)), CM_OK);
    text = slurp(path);
    assert_true(strncmp(text, "concurrency,rate_rps,completed,failed", 37) == 0);
    assert_non_null(strstr(text, "\n10,0,90,10,10.000000,"));
    assert_int_equal(lt_report_json(path, &a, runs, 2, NULL, err, sizeof(err)), CM_OK);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    assert_non_null(o);
    json_t *r1 = json_array_get(json_object_get(o, "runs"), 1);
    assert_int_equal(json_integer_value(json_object_get(r1, "concurrency")), 10);
    assert_float_equal(json_real_value(json_object_get(json_object_get(r1, "ttft_ms"), "p95")), 160,
                       1e-9);
    assert_float_equal(json_real_value(json_object_get(r1, "goodput")), 8, 1e-9);
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(r1, "errors"), 0), "http_status")),
                     503);
    json_decref(o);
    unlink(path);
    assert_int_equal(lt_report_csv("/nonexistent/dir/x.csv", &a, runs, 2, err, sizeof(err)),
                     CM_ERR_IO);
    lt_summary_fini(&runs[0]);
    lt_summary_fini(&runs[1]);
}

static void test_plot(void **state) {
    (void)state;
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        skip();
    }
    lt_args a = args();
    lt_summary runs[3] = {summary(1, 40), summary(10, 80), summary(50, 400)};
    char path[] = "/tmp/lt_report_test_plot_XXXXXX.png";
    int fd = mkstemps(path, 4);
    close(fd);
    unlink(path);
    char err[256];
    assert_int_equal(lt_report_plot(path, &a, runs, 3, err, sizeof(err)), CM_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size > 1000);
    FILE *f = fopen(path, "rb");
    unsigned char magic[4];
    assert_int_equal(fread(magic, 1, 4, f), 4);
    fclose(f);
    assert_memory_equal(magic, "\x89PNG", 4);
    unlink(path);
    assert_int_equal(lt_report_plot("/tmp/it's.png", &a, runs, 3, err, sizeof(err)),
                     CM_ERR_INVALID);
    for (int i = 0; i < 3; i++) {
        lt_summary_fini(&runs[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_text_outputs),
        cmocka_unit_test(test_plot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
