/* lt_stats: percentiles against hand-computed numpy values, TPOT/goodput rules, bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "lt_stats.h"

static void test_percentile_interpolates_like_numpy(void **state) {
    (void)state;
    double v[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    /* numpy.percentile(range(1, 11), q): rank = q/100 * 9 */
    assert_float_equal(lt_percentile(v, 10, 50), 5.5, 1e-12);
    assert_float_equal(lt_percentile(v, 10, 90), 9.1, 1e-12);
    assert_float_equal(lt_percentile(v, 10, 95), 9.55, 1e-12);
    assert_float_equal(lt_percentile(v, 10, 99), 9.91, 1e-12);
    assert_float_equal(lt_percentile(v, 10, 0), 1, 1e-12);
    assert_float_equal(lt_percentile(v, 10, 100), 10, 1e-12);
    assert_float_equal(lt_percentile(v, 1, 99), 1, 1e-12);
    assert_float_equal(lt_percentile(v, 0, 50), 0, 1e-12);
}

static void test_dist_sorts_and_summarises(void **state) {
    (void)state;
    double v[] = {40, 10, 30, 20};
    lt_dist d;
    lt_dist_compute(v, 4, &d);
    assert_int_equal(d.n, 4);
    assert_float_equal(d.mean, 25, 1e-12);
    assert_float_equal(d.min, 10, 1e-12);
    assert_float_equal(d.max, 40, 1e-12);
    assert_float_equal(d.p50, 25, 1e-12);
    assert_float_equal(d.p90, 37, 1e-12);
    lt_dist_compute(v, 0, &d);
    assert_int_equal(d.n, 0);
    assert_float_equal(d.p99, 0, 1e-12);
}

static lt_sample ok_sample(double ttft, double e2e, uint32_t out) {
    lt_sample s;
    memset(&s, 0, sizeof(s));
    s.ok = 1;
    s.http_status = 200;
    s.ttft_ms = ttft;
    s.e2e_ms = e2e;
    s.output_tokens = out;
    s.prompt_tokens = 10;
    s.tpot_ms = out > 1 ? (e2e - ttft) / (out - 1) : -1;
    return s;
}

static void test_summary_and_goodput(void **state) {
    (void)state;
    lt_stats st;
    assert_int_equal(lt_stats_init(&st, 8, 4), CM_OK);
    lt_sample a = ok_sample(100, 1100, 11); /* tpot 100 */
    lt_sample b = ok_sample(300, 800, 6);   /* tpot 100, ttft too slow for the SLO */
    lt_sample c = ok_sample(50, 50, 1);     /* one token: no tpot, still good */
    lt_sample bad;
    memset(&bad, 0, sizeof(bad));
    bad.http_status = 503;
    bad.ttft_ms = -1;
    bad.tpot_ms = -1;
    assert_int_equal(lt_stats_add_sample(&st, &a), CM_OK);
    assert_int_equal(lt_stats_add_sample(&st, &b), CM_OK);
    assert_int_equal(lt_stats_add_sample(&st, &c), CM_OK);
    assert_int_equal(lt_stats_add_sample(&st, &bad), CM_OK);
    lt_stats_add_error(&st, 503, "overloaded");
    lt_stats_add_error(&st, 503, "overloaded again");
    lt_stats_add_error(&st, 0, "connection refused");
    for (int i = 0; i < 6; i++) {
        assert_int_equal(lt_stats_add_itl(&st, 10.0 * (i + 1)), CM_OK);
    }
    assert_int_equal(st.n_itl, 4);
    assert_true(st.itl_truncated);

    lt_slo slo = {.ttft_ms = 200, .tpot_ms = 150, .e2e_ms = 0};
    lt_summary s;
    assert_int_equal(lt_stats_summarize(&st, 2.0, &slo, &s), CM_OK);
    assert_int_equal(s.completed, 3);
    assert_int_equal(s.failed, 1);
    assert_int_equal(s.output_tokens, 18);
    assert_int_equal(s.prompt_tokens, 30);
    assert_float_equal(s.request_throughput, 1.5, 1e-12);
    assert_float_equal(s.output_throughput, 9.0, 1e-12);
    assert_true(s.slo_set);
    assert_int_equal(s.good, 2);
    assert_float_equal(s.goodput, 1.0, 1e-12);
    assert_int_equal(s.ttft_ms.n, 3);
    assert_float_equal(s.ttft_ms.p50, 100, 1e-12);
    assert_int_equal(s.tpot_ms.n, 2);
    assert_float_equal(s.tpot_ms.mean, 100, 1e-12);
    assert_float_equal(s.e2e_ms.max, 1100, 1e-12);
    assert_int_equal(s.itl_ms.n, 4);
    assert_float_equal(s.itl_ms.mean, 25, 1e-12);
    assert_int_equal(s.n_error_kinds, 2);
    assert_int_equal(s.errors[0].http_status, 503);
    assert_int_equal(s.errors[0].count, 2);
    assert_string_equal(s.errors[0].example, "overloaded");
    assert_int_equal(s.n_ttft_values, 3);
    lt_summary_fini(&s);

    /* a tighter TPOT objective rejects the two multi-token answers */
    slo.ttft_ms = 0;
    slo.tpot_ms = 99;
    assert_false(lt_slo_met(&slo, &a));
    assert_true(lt_slo_met(&slo, &c));
    assert_false(lt_slo_met(&slo, &bad));

    /* capacity is a bound, not a suggestion */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(lt_stats_add_sample(&st, &a), CM_OK);
    }
    assert_int_equal(lt_stats_add_sample(&st, &a), CM_ERR_LIMIT);
    lt_stats_clear(&st);
    assert_int_equal(st.n_samples, 0);
    assert_int_equal(lt_stats_add_sample(&st, &a), CM_OK);
    lt_stats_fini(&st);
}

static void test_error_kinds_are_bounded(void **state) {
    (void)state;
    lt_stats st;
    assert_int_equal(lt_stats_init(&st, 4, 4), CM_OK);
    for (int i = 0; i < LT_MAX_ERROR_KINDS + 5; i++) {
        lt_stats_add_error(&st, 400 + i, "x");
    }
    assert_int_equal(st.n_error_kinds, LT_MAX_ERROR_KINDS);
    assert_int_equal(st.errors_other, 5);
    lt_stats_fini(&st);
    assert_int_equal(lt_stats_init(&st, 0, 4), CM_ERR_INVALID);
}

static void test_empty_summary(void **state) {
    (void)state;
    lt_stats st;
    assert_int_equal(lt_stats_init(&st, 4, 4), CM_OK);
    lt_summary s;
    assert_int_equal(lt_stats_summarize(&st, 0, NULL, &s), CM_OK);
    assert_int_equal(s.completed, 0);
    assert_false(s.slo_set);
    assert_float_equal(s.request_throughput, 0, 1e-12);
    lt_summary_fini(&s);
    lt_stats_fini(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentile_interpolates_like_numpy),
        cmocka_unit_test(test_dist_sorts_and_summarises),
        cmocka_unit_test(test_summary_and_goodput),
        cmocka_unit_test(test_error_kinds_are_bounded),
        cmocka_unit_test(test_empty_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
