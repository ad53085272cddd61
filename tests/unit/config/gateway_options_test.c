/*
 * sluice-gateway's option table: docs/gateway.md lists exactly its rows with the same defaults
 * and ranges, --help names every flag, the limits' defaults are gw_limits_default's, and YAML
 * and flags share the bounds (an explicit 0 is applied or refused, never silently replaced).
 * SLUICE_DOCS_UPDATE=1 rewrites the docs section.
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

#include "gw_config.h"
#include "options_test_util.h"

static char g_err[512];

/* Loads yaml with a static worker and --no-auth, then the extra flag pair (if any). */
static cm_err load(const char *yaml, const char *flag, const char *value, gw_config **c) {
    write_yaml(yaml);
    char *argv[] = {"gw",        "--config",   g_yaml,        "--worker", "m=tcp://h:1",
                    "--no-auth", (char *)flag, (char *)value, NULL};
    *c = NULL;
    return gw_config_load(flag != NULL ? 8 : 6, argv, c, g_err, sizeof g_err);
}

static void test_docs_match_table(void **state) {
    (void)state;
    check_docs_section(gw_config_table(), "docs/gateway.md");
}

static void test_help_lists_every_flag(void **state) {
    const cm_opt_table *t = gw_config_table();
    char *text = NULL;
    size_t len = 0;
    (void)state;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cm_opt_print_help(t, f);
    fclose(f);
    size_t flags = check_help_lists_flags(t, text);
    assert_true(flags >= 19);
    free(text);
}

/* The defaults come from the table; the request limits must agree with gw_limits_default. */
static void test_defaults(void **state) {
    gw_config *c = NULL;
    gw_limits want;
    (void)state;
    assert_int_equal(gw_config_defaults(&c), CM_OK);
    memset(&want, 0, sizeof want); /* the padding too, for the byte comparison */
    gw_limits_default(&want);
    assert_memory_equal(&c->limits, &want, sizeof want);
    assert_string_equal(c->listen, "127.0.0.1:8000");
    assert_int_equal(c->max_inflight, 4096);
    assert_int_equal(c->lease_ttl_ms, 15000);
    assert_false(c->ratelimit_fail_open);
    gw_config_free(c);
}

static void test_yaml_bounds_and_zero(void **state) {
    gw_config *c = NULL;
    (void)state;
    /* The flag and the file refuse the same values with the same range. */
    assert_int_equal(load("threads: 65\n", NULL, NULL, &c), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, ":1:"));
    assert_non_null(strstr(g_err, "'threads' must be at most 64, got 65"));
    assert_int_equal(load("threads: 1\n", "--threads", "65", &c), CM_ERR_CONFIG);
    assert_string_equal(g_err, "'--threads' must be at most 64, got 65");
    assert_int_equal(load("threads: 1\n", "--cold-start-wait-ms", "600001", &c), CM_ERR_CONFIG);
    assert_string_equal(g_err, "'--cold-start-wait-ms' must be at most 600000, got 600001");
    /* A 0 that used to be replaced by the default now says why it cannot be. */
    assert_int_equal(load("max_inflight: 0\n", NULL, NULL, &c), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "'max_inflight' must be at least 1, got 0"));
    assert_int_equal(load("limits:\n  max_tokens: 0\n", NULL, NULL, &c), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, ":2:"));
    assert_non_null(strstr(g_err, "'limits.max_tokens' must be at least 1, got 0"));
    assert_int_equal(load("lease_ttl_ms: 0\n", NULL, NULL, &c), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "'lease_ttl_ms' must be between 3000"));
    /* A 0 that is a value applies. */
    assert_int_equal(load("threads: 0\nlimits:\n  default_max_tokens: 0\n", NULL, NULL, &c), CM_OK);
    assert_int_equal(c->threads, 0);
    gw_config_free(c);
    assert_int_equal(load("log_level: loud\n", NULL, NULL, &c), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "'log_level' must be one of debug|info|warn|error"));
}

static void test_flag_beats_yaml(void **state) {
    gw_config *c = NULL;
    (void)state;
    assert_int_equal(
        load("threads: 3\nmax_inflight: 7\nratelimit_fail_open: true\n", "--threads", "0", &c),
        CM_OK);
    assert_int_equal(c->threads, 0);
    assert_int_equal(c->max_inflight, 7);
    assert_true(c->ratelimit_fail_open);
    gw_config_free(c);
    /* --fail-closed takes no argument: over the file's true. */
    {
        char *argv[] = {"gw",          "--config",  g_yaml,          "--worker",
                        "m=tcp://h:1", "--no-auth", "--fail-closed", NULL};
        assert_int_equal(gw_config_load(7, argv, &c, g_err, sizeof g_err), CM_OK);
        assert_false(c->ratelimit_fail_open);
        gw_config_free(c);
    }
}

static void test_unknown_key(void **state) {
    gw_config *c = NULL;
    (void)state;
    assert_int_equal(load("listen: x\nmax_inflght: 3\n", NULL, NULL, &c), CM_ERR_CONFIG);
    assert_null(c);
    assert_non_null(strstr(g_err, ":2:"));
    assert_non_null(strstr(g_err, "unknown key 'max_inflght'"));
    assert_non_null(strstr(g_err, "did you mean 'max_inflight'"));
    /* Command-line-only rows are no keys. */
    assert_int_equal(load("api_key: k\n", NULL, NULL, &c), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "unknown key 'api_key'"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_match_table),
        cmocka_unit_test(test_help_lists_every_flag),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_setup_teardown(test_yaml_bounds_and_zero, yaml_setup, yaml_teardown),
        cmocka_unit_test_setup_teardown(test_flag_beats_yaml, yaml_setup, yaml_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key, yaml_setup, yaml_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
