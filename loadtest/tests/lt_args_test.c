/* lt_args: the documented command line parses; every bound and conflict is a clear error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "lt_args.h"

static cm_err parse(lt_args *a, int *help, char *err, size_t n, ...) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = "sluice-load";
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        argv[argc++] = va_arg(ap, char *);
    }
    va_end(ap);
    argv[argc] = NULL;
    return lt_args_parse(a, argc, argv, help, err, 256);
}

static void test_done_when_command_line(void **state) {
    (void)state;
    unsetenv("SLUICE_API_KEY");
    unsetenv("OPENAI_API_KEY");
    lt_args a;
    int help = 0;
    char err[256];
    assert_int_equal(parse(&a, &help, err, 14, "--url", "http://127.0.0.1:8000", "--api-key",
                           "sk-sluice-local", "--model", "smollm2-135m-instruct", "--concurrency",
                           "1,10,50", "--requests", "100", "--output-tokens", "32", "--plot",
                           "out.png"),
                     CM_OK);
    assert_false(help);
    assert_string_equal(a.endpoint_url, "http://127.0.0.1:8000/v1/chat/completions");
    assert_string_equal(a.api_key, "sk-sluice-local");
    assert_int_equal(a.mode, LT_MODE_CLOSED_LOOP);
    assert_int_equal(a.n_levels, 3);
    assert_int_equal(a.concurrency[0], 1);
    assert_int_equal(a.concurrency[1], 10);
    assert_int_equal(a.concurrency[2], 50);
    assert_int_equal(a.requests, 100);
    assert_int_equal(a.output_min, 32);
    assert_int_equal(a.output_max, 32);
    assert_int_equal(a.input_min, 128);
    assert_true(a.stream);
    assert_string_equal(a.plot_path, "out.png");
}

static void test_defaults_and_rate(void **state) {
    (void)state;
    setenv("SLUICE_API_KEY", "from-env", 1);
    lt_args a;
    int help = 0;
    char err[256];
    assert_int_equal(parse(&a, &help, err, 13, "--url", "http://h:1/v1", "--model", "m", "--rate",
                           "2.5", "--duration", "30", "--endpoint", "completions", "--no-stream",
                           "--slo", "ttft=200,tpot=50"),
                     CM_OK);
    assert_string_equal(a.api_key, "from-env");
    assert_string_equal(a.endpoint_url, "http://h:1/v1/completions");
    assert_int_equal(a.mode, LT_MODE_OPEN_LOOP);
    assert_int_equal(a.n_rates, 1);
    assert_float_equal(a.rates[0], 2.5, 1e-12);
    assert_int_equal(a.requests, 0); /* bounded by the duration */
    assert_float_equal(a.duration_s, 30, 1e-12);
    assert_false(a.stream);
    assert_float_equal(a.slo.ttft_ms, 200, 1e-12);
    assert_float_equal(a.slo.tpot_ms, 50, 1e-12);
    assert_float_equal(a.slo.e2e_ms, 0, 1e-12);
    unsetenv("SLUICE_API_KEY");
    /* nothing bounding the run: 100 requests by default */
    assert_int_equal(parse(&a, &help, err, 4, "--url", "https://x/", "--model", "m"), CM_OK);
    assert_int_equal(a.requests, 100);
    assert_int_equal(a.n_levels, 1);
    assert_int_equal(a.concurrency[0], 1);
    assert_string_equal(a.endpoint_url, "https://x/v1/chat/completions");
    assert_int_equal(parse(&a, &help, err, 1, "--help"), CM_OK);
    assert_true(help);
}

static void test_rejections(void **state) {
    (void)state;
    lt_args a;
    int help = 0;
    char err[256];
    assert_int_equal(parse(&a, &help, err, 2, "--model", "m"), CM_ERR_INVALID);
    assert_non_null(strstr(err, "--url"));
    assert_int_equal(parse(&a, &help, err, 4, "--url", "ftp://x", "--model", "m"), CM_ERR_INVALID);
    assert_int_equal(
        parse(&a, &help, err, 6, "--url", "http://x", "--model", "m", "--concurrency", "1,,2"),
        CM_ERR_INVALID);
    assert_int_equal(
        parse(&a, &help, err, 6, "--url", "http://x", "--model", "m", "--concurrency", "0"),
        CM_ERR_INVALID);
    assert_int_equal(
        parse(&a, &help, err, 6, "--url", "http://x", "--model", "m", "--concurrency", "5000"),
        CM_ERR_INVALID);
    assert_int_equal(parse(&a, &help, err, 8, "--url", "http://x", "--model", "m", "--concurrency",
                           "1", "--rate", "3"),
                     CM_ERR_INVALID);
    assert_non_null(strstr(err, "exclusive"));
    assert_int_equal(
        parse(&a, &help, err, 6, "--url", "http://x", "--model", "m", "--requests", "-1"),
        CM_ERR_INVALID);
    assert_int_equal(
        parse(&a, &help, err, 6, "--url", "http://x", "--model", "m", "--shared-prefix", "1.5"),
        CM_ERR_INVALID);
    assert_int_equal(
        parse(&a, &help, err, 6, "--url", "http://x", "--model", "m", "--slo", "ttft=0"),
        CM_ERR_INVALID);
    assert_int_equal(parse(&a, &help, err, 6, "--url", "http://x", "--model", "m", "--rate", "nan"),
                     CM_ERR_INVALID);
    assert_int_equal(parse(&a, &help, err, 5, "--url", "http://x", "--model", "m", "--bogus"),
                     CM_ERR_INVALID);
    assert_int_equal(parse(&a, &help, err, 5, "--url", "http://x", "--model", "m", "extra"),
                     CM_ERR_INVALID);
    /* a key goes into a header line: CR/LF and spaces are refused */
    assert_int_equal(parse(&a, &help, err, 6, "--url", "http://x", "--model", "m", "--api-key",
                           "sk-1\r\nX-Evil: 1"),
                     CM_ERR_INVALID);
    assert_non_null(strstr(err, "API key"));
}

static void test_helpers(void **state) {
    (void)state;
    uint32_t lo = 0, hi = 0;
    assert_int_equal(lt_args_parse_range("64", 1, 100, &lo, &hi), CM_OK);
    assert_int_equal(lo, 64);
    assert_int_equal(hi, 64);
    assert_int_equal(lt_args_parse_range("10:20", 1, 100, &lo, &hi), CM_OK);
    assert_int_equal(lo, 10);
    assert_int_equal(hi, 20);
    assert_int_equal(lt_args_parse_range("20:10", 1, 100, &lo, &hi), CM_ERR_INVALID);
    assert_int_equal(lt_args_parse_range("0", 1, 100, &lo, &hi), CM_ERR_INVALID);
    assert_int_equal(lt_args_parse_range("5:101", 1, 100, &lo, &hi), CM_ERR_INVALID);
    assert_int_equal(lt_args_parse_range("5x", 1, 100, &lo, &hi), CM_ERR_INVALID);
    int levels[LT_MAX_LEVELS];
    size_t n = 0;
    assert_int_equal(lt_args_parse_levels("1,2,3", levels, 2, &n), CM_ERR_INVALID);
    assert_int_equal(lt_args_parse_levels("7", levels, 2, &n), CM_OK);
    assert_int_equal(n, 1);
    assert_int_equal(lt_args_parse_levels("7,", levels, 2, &n), CM_ERR_INVALID);
    double rates[LT_MAX_LEVELS];
    assert_int_equal(lt_args_parse_rates("0.5,2,8", rates, LT_MAX_LEVELS, &n), CM_OK);
    assert_int_equal(n, 3);
    assert_float_equal(rates[0], 0.5, 1e-12);
    assert_float_equal(rates[2], 8, 1e-12);
    assert_int_equal(lt_args_parse_rates("1,0", rates, LT_MAX_LEVELS, &n), CM_ERR_INVALID);
    assert_int_equal(lt_args_parse_rates("1,,2", rates, LT_MAX_LEVELS, &n), CM_ERR_INVALID);
    assert_int_equal(lt_args_parse_rates("1e9", rates, LT_MAX_LEVELS, &n), CM_ERR_INVALID);
    lt_slo slo;
    assert_int_equal(lt_args_parse_slo("e2e=1000", &slo), CM_OK);
    assert_float_equal(slo.e2e_ms, 1000, 1e-12);
    assert_int_equal(lt_args_parse_slo("latency=5", &slo), CM_ERR_INVALID);
    assert_int_equal(lt_args_parse_slo("ttft", &slo), CM_ERR_INVALID);
    char url[64];
    assert_int_equal(
        lt_args_endpoint("http://a:1/v1/chat/completions", LT_API_COMPLETIONS, url, sizeof(url)),
        CM_OK);
    assert_string_equal(url, "http://a:1/v1/chat/completions"); /* an explicit path wins */
    assert_int_equal(lt_args_endpoint("http://a:1///", LT_API_CHAT, url, sizeof(url)), CM_OK);
    assert_string_equal(url, "http://a:1/v1/chat/completions");
    assert_int_equal(
        lt_args_endpoint("http://a-very-long-host-name.example:1", LT_API_CHAT, url, 24),
        CM_ERR_LIMIT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_done_when_command_line),
        cmocka_unit_test(test_defaults_and_rate),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
