/*
 * wk_worker_config: flags, the YAML file, flags winning over it, derived defaults, and one
 * clear line for every kind of mistake.
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

#include "worker_config.h"

#define ARGV(...) ((char *[]){"sluice-worker", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"sluice-worker", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(cfg, help, err, ...)                                                                 \
    wk_worker_config_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), cfg, help, err, sizeof err)

static char g_yaml[256];

static void write_yaml(const char *text) {
    snprintf(g_yaml, sizeof g_yaml, "/tmp/sluice-worker-config-test-%d.yaml", (int)getpid());
    FILE *f = fopen(g_yaml, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_defaults_and_flags(void **state) {
    (void)state;
    wk_worker_config c;
    bool help;
    char err[512];
    unsetenv("POD_IP");
    assert_int_equal(PARSE(&c, &help, err, "--model", "/m/SmolLM2-135M.Q4_1.gguf"), CM_OK);
    assert_false(help);
    assert_string_equal(c.model_name, "SmolLM2-135M.Q4_1");
    assert_string_equal(c.listen, "tcp://0.0.0.0:5555");
    assert_string_equal(c.advertise, "tcp://127.0.0.1:5555");
    assert_string_equal(c.http, "127.0.0.1:9100");
    assert_string_equal(c.backend, "cpu");
    assert_int_equal(c.drain_timeout_ms, 30000);
    assert_int_equal(c.prep_threads, 2);
    assert_int_equal(c.registry[0], '\0');
    assert_int_equal(PARSE(&c, &help, err, "--model", "m.gguf", "--prep-threads", "4"), CM_OK);
    assert_int_equal(c.prep_threads, 4);

    assert_int_equal(PARSE(&c, &help, err, "--model", "m.gguf", "--model-name", "x", "--listen",
                           "tcp://0.0.0.0:7000", "--http", "0.0.0.0:9200", "--backend", "cuda",
                           "--kv-cache-bytes", "1000000", "--max-batch-tokens", "256", "--registry",
                           "redis://r:6379", "--threads", "3", "--drain-timeout-ms", "5000",
                           "--chat-template", "chatml"),
                     CM_OK);
    assert_string_equal(c.model_name, "x");
    assert_int_equal(c.kv_cache_bytes, 1000000);
    assert_int_equal(c.max_batch_tokens, 256);
    assert_int_equal(c.threads, 3);
    assert_int_equal(c.drain_timeout_ms, 5000);
    assert_string_equal(c.registry, "redis://r:6379");
    assert_string_equal(c.chat_template, "chatml");

    setenv("POD_IP", "10.1.2.3", 1);
    assert_int_equal(PARSE(&c, &help, err, "--model", "m.gguf", "--listen", "tcp://0.0.0.0:7000"),
                     CM_OK);
    assert_string_equal(c.advertise, "tcp://10.1.2.3:7000");
    unsetenv("POD_IP");

    assert_int_equal(PARSE(&c, &help, err, "--help"), CM_OK);
    assert_true(help);
    assert_non_null(strstr(wk_worker_config_usage(), "--registry"));
}

static void test_flag_errors(void **state) {
    (void)state;
    wk_worker_config c;
    bool help;
    char err[512];
    assert_int_equal(PARSE(&c, &help, err, "--listen", "tcp://x:1"), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "--model"));
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--threads", "many"), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "threads"));
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--max-batch-tokens", "-5"),
                     CM_ERR_CONFIG);
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--backend", "tpu"), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "tpu"));
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--listen", "http://x"), CM_ERR_CONFIG);
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--registry", "mysql://x"),
                     CM_ERR_CONFIG);
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--bogus", "1"), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "--bogus"));
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--max-running", "99999999999"),
                     CM_ERR_CONFIG);
    assert_non_null(strstr(err, "at most"));
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--prep-threads", "0"), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "--prep-threads"));
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--prep-threads", "65"), CM_ERR_CONFIG);
}

static void test_yaml_and_override(void **state) {
    (void)state;
    wk_worker_config c;
    bool help;
    char err[512];
    write_yaml("model: /models/a.gguf\n"
               "model_name: from-yaml\n"
               "listen: tcp://0.0.0.0:6000\n"
               "max_batch_tokens: 128\n"
               "drain_timeout_ms: 1234\n"
               "log_json: true\n");
    assert_int_equal(PARSE(&c, &help, err, "--config", g_yaml), CM_OK);
    assert_string_equal(c.model_path, "/models/a.gguf");
    assert_string_equal(c.model_name, "from-yaml");
    assert_string_equal(c.listen, "tcp://0.0.0.0:6000");
    assert_int_equal(c.max_batch_tokens, 128);
    assert_int_equal(c.drain_timeout_ms, 1234);
    assert_true(c.log_json);
    /* Flags win, in either order relative to --config. */
    assert_int_equal(PARSE(&c, &help, err, "--model-name", "from-flag", "--config", g_yaml,
                           "--max-batch-tokens", "64"),
                     CM_OK);
    assert_string_equal(c.model_name, "from-flag");
    assert_int_equal(c.max_batch_tokens, 64);
    assert_int_equal(c.drain_timeout_ms, 1234);
    unlink(g_yaml);
}

static void test_yaml_errors(void **state) {
    (void)state;
    wk_worker_config c;
    bool help;
    char err[512];
    write_yaml("model: a.gguf\nmax_batch_tokenz: 3\n");
    assert_int_not_equal(PARSE(&c, &help, err, "--config", g_yaml), CM_OK);
    assert_non_null(strstr(err, "max_batch_tokenz"));
    assert_non_null(strstr(err, ":2:")); /* file:line */
    write_yaml("model: a.gguf\nmax_batch_tokens: lots\n");
    assert_int_not_equal(PARSE(&c, &help, err, "--config", g_yaml), CM_OK);
    assert_non_null(strstr(err, "max_batch_tokens"));
    write_yaml("model: a.gguf\nlog_json: maybe\n");
    assert_int_not_equal(PARSE(&c, &help, err, "--config", g_yaml), CM_OK);
    assert_non_null(strstr(err, "log_json"));
    write_yaml("model: a.gguf\nbackend: tpu\n");
    assert_int_equal(PARSE(&c, &help, err, "--config", g_yaml), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "tpu"));
    unlink(g_yaml);
    assert_int_not_equal(PARSE(&c, &help, err, "--config", "/nonexistent/w.yaml"), CM_OK);
    assert_non_null(strstr(err, "/nonexistent/w.yaml"));
}

/* The example file shipped for operators parses and means what it says. */
static void test_example_file(void **state) {
    (void)state;
    const char *src = getenv("SLUICE_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/worker/service/sluice-worker.example.yaml",
             src != NULL ? src : ".");
    wk_worker_config c;
    bool help;
    char err[512];
    cm_err rv = PARSE(&c, &help, err, "--config", path);
    if (rv != CM_OK)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rv, CM_OK);
    assert_string_equal(c.model_name, "smollm2-135m-instruct");
    assert_string_equal(c.http, "0.0.0.0:9100");
    assert_int_equal(c.max_batch_tokens, 512);
    assert_int_equal(c.max_message_bytes, 4194304);
    assert_false(c.log_json);
}

/* The connection-hygiene bounds: defaults, flags, YAML, and the checks between them. */
static void test_connection_bounds(void **state) {
    (void)state;
    wk_worker_config c;
    bool help;
    char err[512];
    assert_int_equal(PARSE(&c, &help, err, "--model", "m.gguf"), CM_OK);
    assert_int_equal(c.handshake_timeout_ms, 10000);
    assert_int_equal(c.send_stall_timeout_ms, 60000);
    assert_int_equal(c.frame_timeout_ms, 30000);
    assert_int_equal(c.max_partial_frame_bytes, 32u << 20);
    assert_int_equal(PARSE(&c, &help, err, "--model", "m.gguf", "--handshake-timeout-ms", "1500",
                           "--send-stall-timeout-ms", "9000", "--frame-timeout-ms", "700",
                           "--max-partial-frame-bytes", "8388608"),
                     CM_OK);
    assert_int_equal(c.handshake_timeout_ms, 1500);
    assert_int_equal(c.send_stall_timeout_ms, 9000);
    assert_int_equal(c.frame_timeout_ms, 700);
    assert_int_equal(c.max_partial_frame_bytes, 8388608);
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--handshake-timeout-ms", "0"),
                     CM_ERR_CONFIG);
    assert_non_null(strstr(err, "--handshake-timeout-ms"));
    /* The budget must hold one largest message, or no big message could ever arrive. */
    assert_int_equal(PARSE(&c, &help, err, "--model", "m", "--max-partial-frame-bytes", "1048576"),
                     CM_ERR_CONFIG);
    assert_non_null(strstr(err, "--max-partial-frame-bytes"));
    write_yaml("model: /models/a.gguf\n"
               "handshake_timeout_ms: 2500\n"
               "max_partial_frame_bytes: 33554432\n");
    assert_int_equal(PARSE(&c, &help, err, "--config", g_yaml), CM_OK);
    assert_int_equal(c.handshake_timeout_ms, 2500);
    assert_int_equal(c.max_partial_frame_bytes, 33554432);
    assert_int_equal(c.frame_timeout_ms, 30000);
    unlink(g_yaml);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_bounds), cmocka_unit_test(test_defaults_and_flags),
        cmocka_unit_test(test_flag_errors),       cmocka_unit_test(test_yaml_and_override),
        cmocka_unit_test(test_yaml_errors),       cmocka_unit_test(test_example_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
