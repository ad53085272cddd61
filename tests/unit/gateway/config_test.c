/* gw_config: the example YAML loads with every key, flags override it, errors are one line. */
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

static char example[4096];

static int setup(void **state) {
    const char *src = getenv("SLUICE_SOURCE_DIR");
    (void)state;
    snprintf(example, sizeof example, "%s/gateway/sluice-gateway.example.yaml", src ? src : ".");
    return 0;
}

static void test_example_and_overrides(void **state) {
    char *argv[] = {"gw",       "--config",    example,     "--listen", "0.0.0.0:9",
                    "--worker", "a=tcp://h:1", "--api-key", "k1",       "--threads",
                    "3",        "--fail-open", NULL};
    gw_config *c = NULL;
    char err[512];
    (void)state;
    assert_int_equal(gw_config_load(12, argv, &c, err, sizeof err), CM_OK);
    assert_string_equal(c->listen, "0.0.0.0:9");
    assert_int_equal(c->threads, 3);
    assert_true(c->ratelimit_fail_open);
    assert_int_equal(c->tenants_count, 1);
    assert_string_equal(c->tenants[0].name, "example");
    assert_int_equal(c->tenants[0].rpm, 600);
    assert_int_equal(c->workers_count, 2); /* one from YAML, one from the flag */
    assert_string_equal(c->workers[1].model, "a");
    assert_string_equal(c->workers[1].address, "tcp://h:1");
    assert_int_equal(c->limits.max_n, 8);
    assert_int_equal(c->limits.max_body_bytes, 1048576);
    assert_int_equal(c->cli_keys_count, 1);
    assert_int_equal(c->models_count, 0);
    assert_int_equal(c->cold_start_wait_ms, 0);
    assert_int_equal(c->model_memory_ms, 600000);
    assert_int_equal(c->lease_ttl_ms, 15000);
    assert_int_equal(c->max_header_bytes, 32768);
    gw_config_free(c);
}

/* Loads yaml (with a worker and --no-auth); returns the result, err filled on failure. */
static cm_err load_yaml(const char *yaml, gw_config **c, char *err, size_t errlen) {
    char path[] = "/tmp/gw-config-bounds-XXXXXX";
    char *argv[] = {"gw", "--config", path, "--worker", "m=tcp://h:1", "--no-auth", NULL};
    int fd = mkstemp(path);
    cm_err rv;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    rv = gw_config_load(6, argv, c, err, errlen);
    unlink(path);
    return rv;
}

static void test_lease_and_header_bounds(void **state) {
    gw_config *c = NULL;
    char err[512];
    (void)state;
    assert_int_equal(load_yaml("lease_ttl_ms: 3000\nmax_header_bytes: 1024\n", &c, err, sizeof err),
                     CM_OK);
    assert_int_equal(c->lease_ttl_ms, 3000);
    assert_int_equal(c->max_header_bytes, 1024);
    gw_config_free(c);
    c = NULL;
    /* Renewed every third: shorter would renew faster than Redis may answer. */
    assert_int_not_equal(load_yaml("lease_ttl_ms: 2999\n", &c, err, sizeof err), CM_OK);
    assert_non_null(strstr(err, "lease_ttl_ms"));
    assert_int_not_equal(load_yaml("max_header_bytes: 1023\n", &c, err, sizeof err), CM_OK);
    assert_non_null(strstr(err, "max_header_bytes"));
    assert_int_not_equal(load_yaml("max_header_bytes: 262145\n", &c, err, sizeof err), CM_OK);
    assert_non_null(strstr(err, "max_header_bytes"));
}

static void test_scale_from_zero_keys(void **state) {
    char path[] = "/tmp/gw-config-models-XXXXXX";
    char *argv[] = {"gw",   "--config",  path, "--model", "flag-model", "--cold-start-wait-ms",
                    "2500", "--no-auth", NULL};
    char *bad_wait[] = {"gw", "--worker", "m=a", "--no-auth", "--cold-start-wait-ms", "x", NULL};
    char *empty_model[] = {"gw", "--worker", "m=a", "--no-auth", "--model", "", NULL};
    const char yaml[] = "workers:\n  - model: w\n    address: \"tcp://h:1\"\n"
                        "models:\n  - a\n  - b\nmodel_memory_ms: 1000\n"
                        "cold_start_wait_ms: 10\n";
    gw_config *c = NULL;
    char err[512];
    int fd = mkstemp(path);
    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, sizeof yaml - 1), (ssize_t)(sizeof yaml - 1));
    close(fd);
    assert_int_equal(gw_config_load(8, argv, &c, err, sizeof err), CM_OK);
    assert_int_equal(c->models_count, 3); /* two from YAML, one from the flag */
    assert_string_equal(c->models[0], "a");
    assert_string_equal(c->models[1], "b");
    assert_string_equal(c->models[2], "flag-model");
    assert_int_equal(c->cold_start_wait_ms, 2500); /* the flag wins */
    assert_int_equal(c->model_memory_ms, 1000);
    gw_config_free(c);
    assert_int_equal(gw_config_load(6, bad_wait, &c, err, sizeof err), CM_ERR_CONFIG);
    assert_null(c);
    assert_int_equal(gw_config_load(6, empty_model, &c, err, sizeof err), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "--model"));
    unlink(path);
}

static void test_flags_only_and_errors(void **state) {
    char *ok[] = {"gw", "--worker", "m=tcp://x:1", "--no-auth", NULL};
    char *no_keys[] = {"gw", "--worker", "m=tcp://x:1", NULL};
    char *no_workers[] = {"gw", "--api-key", "k", NULL};
    char *bad_worker[] = {"gw", "--worker", "justaddress", "--api-key", "k", NULL};
    char *bad_threads[] = {"gw", "--worker", "m=a", "--api-key", "k", "--threads", "x", NULL};
    char path[] = "/tmp/gw-config-test-XXXXXX";
    char *bad_yaml[] = {"gw", "--config", path, NULL};
    gw_config *c = NULL;
    char err[512];
    int fd;
    (void)state;
    assert_int_equal(gw_config_load(4, ok, &c, err, sizeof err), CM_OK);
    assert_string_equal(c->listen, "127.0.0.1:8000");
    assert_true(c->no_auth);
    assert_int_equal(c->limits.max_tokens, 4096);
    gw_config_free(c);
    assert_int_equal(gw_config_load(3, no_keys, &c, err, sizeof err), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "API keys"));
    assert_int_equal(gw_config_load(3, no_workers, &c, err, sizeof err), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "workers"));
    assert_int_equal(gw_config_load(5, bad_worker, &c, err, sizeof err), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "MODEL=NNG_ADDR"));
    assert_int_equal(gw_config_load(7, bad_threads, &c, err, sizeof err), CM_ERR_CONFIG);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    {
        const char *yaml = "listen: x\nlimits:\n  max_tokenz: 5\n";
        assert_true(write(fd, yaml, strlen(yaml)) == (ssize_t)strlen(yaml));
    }
    close(fd);
    assert_int_not_equal(gw_config_load(3, bad_yaml, &c, err, sizeof err), CM_OK);
    assert_null(c);
    if (strstr(err, "max_tokenz") == NULL || strstr(err, ":3:") == NULL)
        fail_msg("unexpected message: %s", err);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale_from_zero_keys),
        cmocka_unit_test_setup(test_example_and_overrides, setup),
        cmocka_unit_test_setup(test_flags_only_and_errors, setup),
        cmocka_unit_test(test_lease_and_header_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
