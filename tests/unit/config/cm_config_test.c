/* cm_config: real YAML files in a temp dir, checked for the one-line error messages users
 * see (file:line:col and the key) and for the loaded values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm_config.h"

typedef struct t_model {
    char *name;
    char *path;
    uint32_t max_batch;
} t_model;

typedef struct t_limits {
    uint32_t max_tokens;
    bool stream;
    double temperature;
} t_limits;

enum t_level { T_DEBUG, T_INFO, T_WARN };

typedef struct t_cfg {
    char *model;
    uint16_t port;
    int32_t offset;
    enum t_level level;
    t_limits limits;
    t_model *models;
    unsigned models_count;
    uint32_t perms;
} t_cfg;

static const cyaml_strval_t level_strings[] = {
    {"debug", T_DEBUG}, {"info", T_INFO}, {"warn", T_WARN}};

static const cyaml_bitdef_t perm_bits[] = {{.name = "read", .offset = 0, .bits = 1},
                                           {.name = "write", .offset = 1, .bits = 1}};

static const cyaml_schema_field_t limits_fields[] = {
    CYAML_FIELD_UINT("max_tokens", CYAML_FLAG_OPTIONAL, t_limits, max_tokens),
    CYAML_FIELD_BOOL("stream", CYAML_FLAG_OPTIONAL, t_limits, stream),
    CYAML_FIELD_FLOAT("temperature", CYAML_FLAG_OPTIONAL, t_limits, temperature), CYAML_FIELD_END};

static const cyaml_schema_field_t model_fields[] = {
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_POINTER, t_model, name, 1, 64),
    CYAML_FIELD_STRING_PTR("path", CYAML_FLAG_POINTER, t_model, path, 1, 4096),
    CYAML_FIELD_UINT("max_batch", CYAML_FLAG_OPTIONAL, t_model, max_batch), CYAML_FIELD_END};

static const cyaml_schema_value_t model_entry = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, t_model, model_fields)};

static const cyaml_schema_field_t top_fields[] = {
    CYAML_FIELD_STRING_PTR("model", CYAML_FLAG_POINTER, t_cfg, model, 1, 256),
    CYAML_FIELD_UINT("port", CYAML_FLAG_DEFAULT, t_cfg, port),
    CYAML_FIELD_INT("offset", CYAML_FLAG_OPTIONAL, t_cfg, offset),
    CYAML_FIELD_ENUM("log_level", CYAML_FLAG_OPTIONAL | CYAML_FLAG_STRICT, t_cfg, level,
                     level_strings, CYAML_ARRAY_LEN(level_strings)),
    CYAML_FIELD_MAPPING("limits", CYAML_FLAG_OPTIONAL, t_cfg, limits, limits_fields),
    CYAML_FIELD_SEQUENCE("models", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, t_cfg, models,
                         &model_entry, 1, 4),
    CYAML_FIELD_BITFIELD("perms", CYAML_FLAG_OPTIONAL, t_cfg, perms, perm_bits,
                         CYAML_ARRAY_LEN(perm_bits)),
    CYAML_FIELD_END};

static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, t_cfg, top_fields)};

typedef struct fixture {
    char dir[64];
    char path[128];
    char err[512];
} fixture;

static int setup(void **state) {
    fixture *fx = calloc(1, sizeof *fx);
    if (fx == NULL) {
        return -1;
    }
    snprintf(fx->dir, sizeof fx->dir, "/tmp/cm_config_test.XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/config.yaml", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    unlink(fx->path);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void write_file(fixture *fx, const char *text) {
    FILE *f = fopen(fx->path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* load writes text, loads it and returns the result; *cfg is freed by the caller. */
static cm_err load(fixture *fx, const char *text, const cm_config_opts *opts, t_cfg **cfg) {
    write_file(fx, text);
    fx->err[0] = '\0';
    *cfg = (t_cfg *)(uintptr_t)0x1; /* must be reset to NULL on failure */
    cm_err rv = cm_config_load(fx->path, &top_schema, opts, (void **)cfg, fx->err, sizeof fx->err);
    if (rv != CM_OK) {
        assert_null(*cfg);
        assert_non_null(fx->err[0] != '\0' ? fx->err : NULL);
        assert_null(strchr(fx->err, '\n')); /* always one line */
    }
    return rv;
}

/* expect_msg checks err starts with "<path>:<line>:<col>: " and contains each fragment. */
static void expect_msg(const fixture *fx, int line, int col, const char *fragment) {
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s:%d:%d: ", fx->path, line, col);
    if (strncmp(fx->err, prefix, strlen(prefix)) != 0 || strstr(fx->err, fragment) == NULL) {
        fail_msg("got '%s', want prefix '%s' and '%s'", fx->err, prefix, fragment);
    }
}

static void test_valid_file_loads(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    const char *text = "# sluice test config\n"
                       "model: smollm2\n"
                       "port: 8080\n"
                       "offset: -12\n"
                       "log_level: warn\n"
                       "limits:\n"
                       "  max_tokens: 4096\n"
                       "  stream: true\n"
                       "  temperature: 0.25\n"
                       "models:\n"
                       "  - name: a\n"
                       "    path: /m/a.gguf\n"
                       "    max_batch: 8\n"
                       "  - name: b\n"
                       "    path: /m/b.gguf\n"
                       "perms: {read: 1, write: 0}\n";
    assert_int_equal(load(fx, text, NULL, &cfg), CM_OK);
    assert_string_equal(cfg->model, "smollm2");
    assert_int_equal(cfg->port, 8080);
    assert_int_equal(cfg->offset, -12);
    assert_int_equal(cfg->level, T_WARN);
    assert_int_equal(cfg->limits.max_tokens, 4096);
    assert_true(cfg->limits.stream);
    assert_true(cfg->limits.temperature == 0.25);
    assert_int_equal(cfg->models_count, 2);
    assert_string_equal(cfg->models[0].name, "a");
    assert_string_equal(cfg->models[1].path, "/m/b.gguf");
    assert_int_equal(cfg->models[0].max_batch, 8);
    assert_int_equal(cfg->models[1].max_batch, 0); /* optional, absent: zero */
    assert_int_equal(cfg->perms, 1);
    cm_config_free(&top_schema, cfg);
}

static void test_optional_absent_is_zero(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: 1\n", NULL, &cfg), CM_OK);
    assert_int_equal(cfg->limits.max_tokens, 0);
    assert_false(cfg->limits.stream);
    assert_null(cfg->models);
    assert_int_equal(cfg->models_count, 0);
    cm_config_free(&top_schema, cfg);
}

static void test_unknown_key_nested(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    const char *text = "model: m\n"
                       "port: 1\n"
                       "limits:\n"
                       "  stream: false\n"
                       "  max_tokenz: 12\n";
    assert_int_equal(load(fx, text, NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 5, 3, "unknown key 'max_tokenz' in 'limits'");
    assert_non_null(strstr(fx->err, "did you mean 'max_tokens'"));
}

static void test_unknown_key_top_level(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: 1\ncolour: blue\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 3, 1, "unknown key 'colour' at the top level");
    assert_null(strstr(fx->err, "did you mean")); /* nothing close */
}

static void test_wrong_type_integer(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: eighty\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 2, 7, "'port' must be a non-negative integer, got 'eighty'");
    assert_int_equal(load(fx, "model: m\nport: 1\noffset: 1.5\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 3, 9, "'offset' must be an integer, got '1.5'");
    assert_int_equal(load(fx, "model: m\nport: -1\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 2, 7, "'port' must be a non-negative integer");
}

static void test_integer_out_of_range(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: 70000\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 2, 7, "'port' must be at most 65535, got 70000");
    assert_int_equal(load(fx, "model: m\nport: 1\noffset: 3000000000\n", NULL, &cfg),
                     CM_ERR_CONFIG);
    expect_msg(fx, 3, 9, "'offset' must be between -2147483648 and 2147483647");
}

static void test_wrong_type_shape(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: [a, b]\nport: 1\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 1, 8, "'model' must be a single value, got a list");
    assert_int_equal(load(fx, "model: m\nport: 1\nlimits: 5\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 3, 9, "'limits' must be a mapping of keys, got a single value");
    assert_int_equal(load(fx, "model: m\nport: 1\nlimits:\n  temperature: warm\n", NULL, &cfg),
                     CM_ERR_CONFIG);
    expect_msg(fx, 4, 16, "'limits.temperature' must be a number, got 'warm'");
}

static void test_missing_required(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "\n# c\nport: 1\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 3, 1, "missing required key 'model'");
    /* Inside a sequence entry: the path names the entry. */
    assert_int_equal(load(fx, "model: m\nport: 1\nmodels:\n  - name: a\n", NULL, &cfg),
                     CM_ERR_CONFIG);
    expect_msg(fx, 4, 5, "missing required key 'path' in 'models.0'");
}

static void test_bad_boolean(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: 1\nlimits:\n  stream: maybe\n", NULL, &cfg),
                     CM_ERR_CONFIG);
    expect_msg(fx, 4, 11, "'limits.stream' must be true or false, got 'maybe'");
    assert_int_equal(load(fx, "model: m\nport: 1\nlimits:\n  stream: yes\n", NULL, &cfg),
                     CM_ERR_CONFIG);
    expect_msg(fx, 4, 11, "must be true or false, got 'yes'");
}

static void test_enum_and_sequence_bounds(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: 1\nlog_level: loud\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 3, 12, "'log_level' must be one of debug, info, warn; got 'loud'");
    assert_int_equal(load(fx, "model: m\nport: 1\nmodels: []\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 3, 9, "'models' must have at least 1 entries, got 0");
    const char *five = "model: m\nport: 1\nmodels:\n"
                       "  - {name: a, path: p}\n  - {name: b, path: p}\n  - {name: c, path: p}\n"
                       "  - {name: d, path: p}\n  - {name: e, path: p}\n";
    assert_int_equal(load(fx, five, NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 4, 3, "'models' must have at most 4 entries, got 5");
    assert_int_equal(load(fx, "model: m\nport: 1\nmodels:\n  - {name: '', path: p}\n", NULL, &cfg),
                     CM_ERR_CONFIG);
    expect_msg(fx, 4, 12, "'models.0.name' must not be empty");
}

static void test_duplicate_key(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: 1\nport: 2\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 3, 1, "duplicate key 'port'");
}

static void test_invalid_yaml(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: 1\n  bad: indent: here\n", NULL, &cfg),
                     CM_ERR_FORMAT);
    char prefix[200];
    snprintf(prefix, sizeof prefix, "%s:3:", fx->path);
    assert_non_null(strstr(fx->err, prefix));
    assert_non_null(strstr(fx->err, "invalid YAML"));
}

static void test_not_a_mapping_and_empty(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "- a\n- b\n", NULL, &cfg), CM_ERR_CONFIG);
    expect_msg(fx, 1, 1, "expected a mapping of keys at the top level, got a list");
    assert_int_equal(load(fx, "# nothing here\n", NULL, &cfg), CM_ERR_CONFIG);
    assert_non_null(strstr(fx->err, "file is empty"));
}

static void test_missing_file(void **state) {
    fixture *fx = *state;
    void *cfg = NULL;
    char path[160];
    snprintf(path, sizeof path, "%s/nope.yaml", fx->dir);
    assert_int_equal(cm_config_load(path, &top_schema, NULL, &cfg, fx->err, sizeof fx->err),
                     CM_ERR_IO);
    assert_null(cfg);
    assert_non_null(strstr(fx->err, path));
    assert_non_null(strstr(fx->err, "No such file"));
}

static void test_too_large(void **state) {
    fixture *fx = *state;
    size_t n = CM_CONFIG_MAX_BYTES + 10;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, '#', n);
    big[n] = '\0';
    t_cfg *cfg;
    assert_int_equal(load(fx, big, NULL, &cfg), CM_ERR_LIMIT);
    assert_non_null(strstr(fx->err, "larger than"));
    free(big);
}

/* A bit name libcyaml knows nothing about: the pre-walk leaves bitfields to libcyaml, so
 * this exercises the captured-log path. It must still be one line with a position. */
static void test_cyaml_error_is_one_line(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    assert_int_equal(load(fx, "model: m\nport: 1\nperms: {read: 1, exec: 1}\n", NULL, &cfg),
                     CM_ERR_CONFIG);
    char prefix[200];
    snprintf(prefix, sizeof prefix, "%s:3:", fx->path);
    if (strncmp(fx->err, prefix, strlen(prefix)) != 0) {
        fail_msg("got '%s'", fx->err);
    }
    assert_non_null(strstr(fx->err, "exec"));
    print_message("libcyaml message: %s\n", fx->err);
}

static cm_err check_limits(void *data, cm_config_check *chk, void *arg) {
    t_cfg *cfg = data;
    int *calls = arg;
    (*calls)++;
    if (cfg->limits.max_tokens > 1000) {
        return cm_config_reject(chk, "limits.max_tokens", "must be at most %d", 1000);
    }
    if (cfg->models_count > 1 && cfg->models[1].max_batch == 0) {
        return cm_config_reject(chk, "models.1.max_batch", "is required after the first model");
    }
    if (cfg->limits.max_tokens == 0) {
        cfg->limits.max_tokens = 256; /* defaults may be filled here */
    }
    return CM_OK;
}

static void test_validate_callback(void **state) {
    fixture *fx = *state;
    t_cfg *cfg;
    int calls = 0;
    cm_config_opts opts = {.validate = check_limits, .validate_arg = &calls};
    assert_int_equal(load(fx, "model: m\nport: 1\nlimits:\n  max_tokens: 5000\n", &opts, &cfg),
                     CM_ERR_CONFIG);
    expect_msg(fx, 4, 15, "'limits.max_tokens' must be at most 1000");
    assert_int_equal(calls, 1);
    /* An absent key is located at its closest enclosing node (models.1). */
    assert_int_equal(load(fx,
                          "model: m\nport: 1\nmodels:\n  - {name: a, path: p}\n"
                          "  - name: b\n    path: q\n",
                          &opts, &cfg),
                     CM_ERR_CONFIG);
    expect_msg(fx, 5, 5, "'models.1.max_batch' is required after the first model");
    assert_int_equal(load(fx, "model: m\nport: 1\n", &opts, &cfg), CM_OK);
    assert_int_equal(cfg->limits.max_tokens, 256);
    cm_config_free(&top_schema, cfg);
}

static void test_load_string_and_args(void **state) {
    (void)state;
    char err[256];
    void *cfg = NULL;
    const char *doc = "model: x\nport: 9\ntrailing garbage that is not used";
    /* Only the first len bytes count: the document need not be NUL-terminated. */
    assert_int_equal(
        cm_config_load_string("inline", doc, 17, &top_schema, NULL, &cfg, err, sizeof err), CM_OK);
    assert_int_equal(((t_cfg *)cfg)->port, 9);
    cm_config_free(&top_schema, cfg);
    assert_int_equal(
        cm_config_load_string("inline", "port: x\n", 8, &top_schema, NULL, &cfg, err, sizeof err),
        CM_ERR_CONFIG);
    assert_true(strncmp(err, "inline:1:7: ", 12) == 0);
    assert_int_equal(cm_config_load(NULL, &top_schema, NULL, &cfg, err, sizeof err),
                     CM_ERR_INVALID);
    /* A tiny error buffer is still NUL-terminated. */
    char tiny[8];
    assert_int_equal(
        cm_config_load_string("inline", "port: x\n", 8, &top_schema, NULL, &cfg, tiny, sizeof tiny),
        CM_ERR_CONFIG);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

/* Nested aliases ("billion laughs") must be cut off, not expanded without bound. */
typedef struct t_bomb {
    void *items;
    unsigned items_count;
} t_bomb;

static const cyaml_schema_value_t bomb_str = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED)};
static const cyaml_schema_value_t bomb_l1 = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, char *, &bomb_str, 0, CYAML_UNLIMITED)};
static const cyaml_schema_value_t bomb_l2 = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, char *, &bomb_l1, 0, CYAML_UNLIMITED)};
static const cyaml_schema_value_t bomb_l3 = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, char *, &bomb_l2, 0, CYAML_UNLIMITED)};
static const cyaml_schema_field_t bomb_fields[] = {
    CYAML_FIELD_SEQUENCE("items", CYAML_FLAG_POINTER, t_bomb, items, &bomb_l3, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END};
static const cyaml_schema_value_t bomb_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, t_bomb, bomb_fields)};

static void test_alias_expansion_is_bounded(void **state) {
    (void)state;
    char doc[4096];
    /* One *c is 10 * 10 * 10 strings (+ the lists): 200 of them pass 100000 values. */
    int n = snprintf(doc, sizeof doc,
                     "items:\n"
                     "  - &c\n"
                     "    - &b\n"
                     "      - &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 0; i < 9; i++) {
        n += snprintf(doc + n, sizeof doc - (size_t)n, "      - *a\n");
    }
    for (int i = 0; i < 9; i++) {
        n += snprintf(doc + n, sizeof doc - (size_t)n, "    - *b\n");
    }
    for (int i = 0; i < 200; i++) {
        n += snprintf(doc + n, sizeof doc - (size_t)n, "  - *c\n");
    }
    assert_true((size_t)n < sizeof doc);
    char err[512];
    void *cfg = NULL;
    assert_int_equal(cm_config_load_string("bomb.yaml", doc, (size_t)n, &bomb_schema, NULL, &cfg,
                                           err, sizeof err),
                     CM_ERR_CONFIG);
    assert_null(cfg);
    assert_non_null(strstr(err, "too many values"));
    assert_true(strncmp(err, "bomb.yaml:", 10) == 0);
}

static void test_parse_bool(void **state) {
    (void)state;
    int v = -1;
    assert_int_equal(cm_config_parse_bool("true", &v), CM_OK);
    assert_int_equal(v, 1);
    assert_int_equal(cm_config_parse_bool("false", &v), CM_OK);
    assert_int_equal(v, 0);
    const char *bad[] = {"maybe", "yes", "1", "TRUE", "", " true"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = -1;
        assert_int_equal(cm_config_parse_bool(bad[i], &v), CM_ERR_INVALID);
        assert_int_equal(v, -1);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_file_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_optional_absent_is_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_top_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_type_integer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_integer_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_type_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_boolean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enum_and_sequence_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_yaml, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_mapping_and_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cyaml_error_is_one_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validate_callback, setup, teardown),
        cmocka_unit_test(test_load_string_and_args),
        cmocka_unit_test(test_alias_expansion_is_bounded),
        cmocka_unit_test(test_parse_bool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
