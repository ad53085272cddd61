/*
 * sluice-worker's option table: docs/worker.md lists exactly its rows with the same defaults and
 * ranges, --help names every flag, and the YAML bugs the table fixed stay fixed (an explicit 0
 * applies; the file has the flags' bounds). SLUICE_DOCS_UPDATE=1 rewrites the docs section.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "options_test_util.h"
#include "worker_config.h"

static cm_err parse_yaml(const char *yaml, const char *flag, const char *value, wk_worker_config *c,
                         char *err, size_t errlen) {
    bool help;
    write_yaml(yaml);
    char *argv[] = {"sluice-worker", "--config", g_yaml, (char *)flag, (char *)value, NULL};
    return wk_worker_config_parse(flag != NULL ? 5 : 3, argv, c, &help, err, errlen);
}

static void test_docs_match_table(void **state) {
    (void)state;
    check_docs_section(wk_worker_config_table(), "docs/worker.md");
}

static void test_help_lists_every_flag(void **state) {
    const cm_opt_table *t = wk_worker_config_table();
    (void)state;
    /* every worker setting is a flag and a key */
    assert_int_equal(check_help_lists_flags(t, wk_worker_config_usage()), t->count);
    for (size_t i = 0; i < t->count; i++)
        assert_non_null(t->opts[i].key);
    assert_true(t->count >= 27);
}

/* Every row's default parses under its own bounds, and wk_worker_config_defaults gives them. */
static void test_defaults_in_range(void **state) {
    const cm_opt_table *t = wk_worker_config_table();
    wk_worker_config c;
    char err[256];
    (void)state;
    memset(&c, 0, sizeof c);
    assert_int_equal(cm_opt_defaults(t, &c, err, sizeof err), CM_OK);
    wk_worker_config d;
    wk_worker_config_defaults(&d);
    assert_memory_equal(&c, &d, sizeof c);
    assert_int_equal(d.warmup_tokens, 4);
    assert_string_equal(d.listen, "tcp://0.0.0.0:5555");
}

static void test_yaml_zero_applies(void **state) {
    wk_worker_config c;
    char err[512];
    (void)state;
    assert_int_equal(parse_yaml("model: m.gguf\nwarmup_tokens: 0\ndrain_timeout_ms: 0\n"
                                "stall_timeout_ms: 0\n",
                                NULL, NULL, &c, err, sizeof err),
                     CM_OK);
    assert_int_equal(c.warmup_tokens, 0);
    assert_int_equal(c.drain_timeout_ms, 0);
    assert_int_equal(c.stall_timeout_ms, 0);
    assert_int_equal(c.frame_timeout_ms, 30000); /* absent keeps its default */
}

static void test_yaml_has_flag_bounds(void **state) {
    wk_worker_config c;
    char err[512];
    (void)state;
    assert_int_equal(
        parse_yaml("model: m.gguf\nmax_running: 1000000\n", NULL, NULL, &c, err, sizeof err),
        CM_ERR_CONFIG);
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, "'max_running' must be at most 65536, got 1000000"));
    assert_int_equal(
        parse_yaml("model: m.gguf\nprep_threads: 0\n", NULL, NULL, &c, err, sizeof err),
        CM_ERR_CONFIG);
    assert_non_null(strstr(err, "'prep_threads' must be between 1 and 64, got 0"));
    assert_int_equal(
        parse_yaml("model: m.gguf\nthreads: 5000000000\n", NULL, NULL, &c, err, sizeof err),
        CM_ERR_CONFIG);
    assert_non_null(strstr(err, "'threads' must be at most 1024"));
    assert_int_equal(
        parse_yaml("model: m.gguf\nlog_level: loud\n", NULL, NULL, &c, err, sizeof err),
        CM_ERR_CONFIG);
    assert_non_null(strstr(err, "'log_level' must be one of debug|info|warn|error"));
}

static void test_flag_beats_yaml(void **state) {
    wk_worker_config c;
    char err[512];
    (void)state;
    assert_int_equal(parse_yaml("model: m.gguf\nwarmup_tokens: 9\n", "--warmup-tokens", "0", &c,
                                err, sizeof err),
                     CM_OK);
    assert_int_equal(c.warmup_tokens, 0);
    assert_int_equal(
        parse_yaml("model: m.gguf\nlog_json: true\n", "--log-json", "false", &c, err, sizeof err),
        CM_OK);
    assert_false(c.log_json);
    assert_int_equal(parse_yaml("model: m.gguf\nmax_running: 8\n", "--max-running", "70000", &c,
                                err, sizeof err),
                     CM_ERR_CONFIG);
    assert_string_equal(err, "'--max-running' must be at most 65536, got 70000");
}

static void test_unknown_key(void **state) {
    wk_worker_config c;
    char err[512];
    (void)state;
    assert_int_equal(
        parse_yaml("model: m.gguf\nwarmup_tokenz: 1\n", NULL, NULL, &c, err, sizeof err),
        CM_ERR_CONFIG);
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, "unknown key 'warmup_tokenz'"));
    assert_non_null(strstr(err, "did you mean 'warmup_tokens'"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_match_table),
        cmocka_unit_test(test_help_lists_every_flag),
        cmocka_unit_test(test_defaults_in_range),
        cmocka_unit_test_setup_teardown(test_yaml_zero_applies, yaml_setup, yaml_teardown),
        cmocka_unit_test_setup_teardown(test_yaml_has_flag_bounds, yaml_setup, yaml_teardown),
        cmocka_unit_test_setup_teardown(test_flag_beats_yaml, yaml_setup, yaml_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key, yaml_setup, yaml_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
