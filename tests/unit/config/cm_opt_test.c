/*
 * cm_opt on a small table of every kind of row: defaults, YAML (an explicit 0 applies, bounds
 * located at the key, unknown keys), flags over YAML in any order, custom rows, --help and the
 * generated docs table.
 */
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

#include "cm_opt.h"

typedef struct t_cfg {
    char name[16];
    char *addr;
    uint32_t workers;
    uint64_t bytes;
    int threads;
    bool json;
    bool open;
    uint32_t lim_a, lim_b;
    char level[8];
    char **tags; /* custom: --tag X (repeatable) and tags: [..] */
    unsigned tags_count;
} t_cfg;

static cm_err tag_flag(void *cfg, const cm_opt *o, const char *name, const char *value, char *err,
                       size_t errlen) {
    t_cfg *c = cfg;
    (void)o;
    if (value[0] == '\0')
        return cm_errf(CM_ERR_CONFIG, err, errlen, "'%s' must not be empty", name);
    char **n = realloc(c->tags, (c->tags_count + 1) * sizeof *n);
    if (n == NULL)
        return CM_ERR_NOMEM;
    c->tags = n;
    if ((c->tags[c->tags_count] = strdup(value)) == NULL)
        return CM_ERR_NOMEM;
    c->tags_count++;
    return CM_OK;
}

static cm_err tag_yaml(void *cfg, const cm_opt *o, void **value, unsigned count,
                       cm_config_check *chk) {
    t_cfg *c = cfg;
    char **tags = *value;
    for (unsigned i = 0; i < count; i++)
        if (strcmp(tags[i], "forbidden") == 0)
            return cm_config_reject(chk, o->key, "must not hold 'forbidden'");
    c->tags = tags;
    c->tags_count = count;
    *value = NULL; /* taken */
    return CM_OK;
}

static const cyaml_schema_value_t tag_entry = {CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, 31)};
static const cyaml_schema_value_t tags_value = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, char *, &tag_entry, 0, 8)};

#define T(m) offsetof(t_cfg, m), sizeof(((t_cfg *)0)->m)
static const cm_opt rows[] = {
    {"name", "name", CM_OPT_STR, T(name), 1, 0, .def = "anon", .arg = "NAME", .help = "a name"},
    {"addr", "addr", CM_OPT_STRP, T(addr), 1, 64, .arg = "ADDR", .help = "an address"},
    {"workers", "workers", CM_OPT_U32, T(workers), 0, 64, .def = "4", .arg = "N",
     .help = "worker count"},
    {"bytes", "bytes", CM_OPT_U64, T(bytes), 1024, UINT64_MAX, .def = "4096", .arg = "N",
     .help = "a budget"},
    {"threads", "threads", CM_OPT_INT, T(threads), 1, 16, .def = "2", .arg = "N",
     .help = "threads"},
    {"json", "json", CM_OPT_BOOL, T(json), 0, 1, .def = "false", .arg = "BOOL",
     .help = "JSON logs"},
    {"open", "open", CM_OPT_BOOL, T(open), 0, 1, .set_to = "true", .help = "admit when down"},
    {"closed", NULL, CM_OPT_BOOL, T(open), 0, 1, .set_to = "false", .help = "refuse when down"},
    {NULL, "limits.a", CM_OPT_U32, T(lim_a), 1, 100, .def = "10", .help = "limit a"},
    {NULL, "limits.b", CM_OPT_U32, T(lim_b), 0, 100, .def = "20", .help = "limit b"},
    {"level", "level", CM_OPT_STR, T(level), 1, 0, .def = "info", .arg = "L", .help = "level",
     .choices = "debug|info"},
    {"tag", "tags", CM_OPT_CUSTOM, 0, 0, 0, 0, .arg = "TAG", .help = "tags (repeatable)",
     .flag_fn = tag_flag, .yaml_fn = tag_yaml, .yaml = &tags_value},
};
static const cm_opt_table table = {"t-prog", "[options]", rows, sizeof rows / sizeof rows[0]};

static char g_yaml[128];
static char g_err[512];

static void t_free(t_cfg *c) {
    for (unsigned i = 0; i < c->tags_count; i++)
        free(c->tags[i]);
    free(c->tags);
    cm_opt_free(&table, c);
    memset(c, 0, sizeof *c);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Parses argv (NULL-terminated, without argv[0]) into c, after writing yaml (if any). */
static cm_err run(t_cfg *c, const char *yaml, const char *const *args) {
    char *argv[32] = {"t-prog"};
    int argc = 1;
    cm_opt_result res;
    memset(c, 0, sizeof *c);
    if (yaml != NULL) {
        write_file(g_yaml, yaml);
        argv[argc++] = "--config";
        argv[argc++] = g_yaml;
    }
    for (; args != NULL && *args != NULL; args++)
        argv[argc++] = (char *)*args;
    g_err[0] = '\0';
    return cm_opt_parse(&table, argc, argv, c, &res, g_err, sizeof g_err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static int setup(void **state) {
    (void)state;
    snprintf(g_yaml, sizeof g_yaml, "/tmp/cm-opt-test-%d.yaml", (int)getpid());
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(g_yaml);
    return 0;
}

static void test_defaults(void **state) {
    t_cfg c;
    (void)state;
    assert_int_equal(run(&c, NULL, NULL), CM_OK);
    assert_string_equal(c.name, "anon");
    assert_null(c.addr);
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.bytes, 4096);
    assert_int_equal(c.threads, 2);
    assert_false(c.json);
    assert_int_equal(c.lim_a, 10);
    assert_int_equal(c.lim_b, 20);
    assert_string_equal(c.level, "info");
    t_free(&c);
}

/* The bug this table fixed: a 0 in the file read as "not given". */
static void test_yaml_zero_applies(void **state) {
    t_cfg c;
    (void)state;
    assert_int_equal(run(&c, "workers: 0\njson: false\nlimits:\n  b: 0\n", NULL), CM_OK);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.lim_b, 0);
    assert_int_equal(c.lim_a, 10); /* absent: the default stays */
    assert_int_equal(c.bytes, 4096);
    t_free(&c);
}

/* The same bounds for the file and the flags; the message names option, value and range. */
static void test_bounds_yaml_and_flags(void **state) {
    t_cfg c;
    (void)state;
    assert_int_equal(run(&c, "name: x\nworkers: 1000000\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, ":2:"));
    assert_non_null(strstr(g_err, "'workers' must be at most 64, got 1000000"));
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("--workers", "1000000")), CM_ERR_CONFIG);
    assert_string_equal(g_err, "'--workers' must be at most 64, got 1000000");
    t_free(&c);
    assert_int_equal(run(&c, "threads: 0\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "'threads' must be between 1 and 16, got 0"));
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("--threads", "17")), CM_ERR_CONFIG);
    assert_string_equal(g_err, "'--threads' must be between 1 and 16, got 17");
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("--bytes", "1023")), CM_ERR_CONFIG);
    assert_string_equal(g_err, "'--bytes' must be at least 1024, got 1023");
    t_free(&c);
    assert_int_equal(run(&c, "limits:\n  a: 101\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, ":2:"));
    assert_non_null(strstr(g_err, "'limits.a' must be between 1 and 100, got 101"));
    t_free(&c);
    /* Out of 64 bits, negative, signed, spaces, hex: never wrapped into range. */
    const char *bad[] = {"99999999999999999999999", "-1", "+5", " 5", "0x10", "", "5x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(run(&c, NULL, ARGS("--workers", bad[i])), CM_ERR_CONFIG);
        assert_non_null(strstr(g_err, "'--workers'"));
        t_free(&c);
    }
    assert_int_equal(run(&c, "workers: -1\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "workers"));
    t_free(&c);
    /* Strings: length and choices, flags and file alike. */
    assert_int_equal(run(&c, NULL, ARGS("--name", "0123456789abcdef")), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "'--name' must be 1 to 15 bytes long"));
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("--level", "trace")), CM_ERR_CONFIG);
    assert_string_equal(g_err, "'--level' must be one of debug|info, got 'trace'");
    t_free(&c);
    assert_int_equal(run(&c, "level: trace\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, ":1:"));
    assert_non_null(strstr(g_err, "'level' must be one of debug|info, got 'trace'"));
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("--json", "maybe")), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "true or false"));
    t_free(&c);
}

static void test_flag_beats_yaml(void **state) {
    t_cfg c;
    (void)state;
    const char *yaml = "name: file\nworkers: 8\nbytes: 2048\nopen: true\naddr: a-file\n";
    /* Flags before and after --config: the flag wins either way. */
    write_file(g_yaml, yaml);
    {
        char *argv[] = {"t-prog", "--workers", "9",      "--config", g_yaml,
                        "--open", "--closed",  "--addr", "a-flag",   NULL};
        cm_opt_result res;
        memset(&c, 0, sizeof c);
        assert_int_equal(cm_opt_parse(&table, 9, argv, &c, &res, g_err, sizeof g_err), CM_OK);
        assert_string_equal(res.config_path, g_yaml);
        assert_false(res.help);
    }
    assert_int_equal(c.workers, 9);
    assert_string_equal(c.name, "file");
    assert_int_equal(c.bytes, 2048);
    assert_false(c.open); /* --closed came last */
    assert_string_equal(c.addr, "a-flag");
    t_free(&c);
    assert_int_equal(run(&c, yaml, ARGS("--workers", "0", "--json", "true")), CM_OK);
    assert_int_equal(c.workers, 0); /* a flag's 0 applies too */
    assert_true(c.json);
    assert_true(c.open);
    t_free(&c);
}

static void test_unknown_and_malformed(void **state) {
    t_cfg c;
    (void)state;
    assert_int_equal(run(&c, "name: x\nworkerz: 3\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, ":2:"));
    assert_non_null(strstr(g_err, "unknown key 'workerz'"));
    assert_non_null(strstr(g_err, "did you mean 'workers'"));
    t_free(&c);
    assert_int_equal(run(&c, "limits:\n  c: 3\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "unknown key 'c' in 'limits'"));
    t_free(&c);
    /* A command-line-only row has no key. */
    assert_int_equal(run(&c, "closed: true\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "unknown key 'closed'"));
    t_free(&c);
    assert_int_equal(run(&c, "workers: 1\nworkers: 2\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "duplicate key"));
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("--bogus", "1")), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "--bogus"));
    t_free(&c);
    /* A YAML-only row has no flag. */
    assert_int_equal(run(&c, NULL, ARGS("--limits.a", "1")), CM_ERR_CONFIG);
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("--workers")), CM_ERR_CONFIG);
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("stray")), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "stray"));
    t_free(&c);
    assert_int_not_equal(run(&c, NULL, ARGS("--config", "/nonexistent/x.yaml")), CM_OK);
    assert_non_null(strstr(g_err, "/nonexistent/x.yaml"));
    t_free(&c);
}

static void test_custom_rows(void **state) {
    t_cfg c;
    (void)state;
    assert_int_equal(run(&c, "tags: [a, b]\n", ARGS("--tag", "c")), CM_OK);
    assert_int_equal(c.tags_count, 3); /* the file's, then the flag's appended */
    assert_string_equal(c.tags[0], "a");
    assert_string_equal(c.tags[2], "c");
    t_free(&c);
    assert_int_equal(run(&c, "tags: [a, forbidden]\n", NULL), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "'tags' must not hold 'forbidden'"));
    t_free(&c);
    assert_int_equal(run(&c, NULL, ARGS("--tag", "")), CM_ERR_CONFIG);
    assert_string_equal(g_err, "'--tag' must not be empty");
    t_free(&c);
}

static void test_help_lists_every_flag(void **state) {
    char *text = NULL;
    size_t len = 0;
    t_cfg c;
    char *argv[] = {"t-prog", "--workers", "1000", "--help", NULL};
    cm_opt_result res;
    (void)state;
    memset(&c, 0, sizeof c);
    /* --help stops before anything is checked. */
    assert_int_equal(cm_opt_parse(&table, 4, argv, &c, &res, g_err, sizeof g_err), CM_OK);
    assert_true(res.help);
    t_free(&c);
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cm_opt_print_help(&table, f);
    fclose(f);
    for (size_t i = 0; i < table.count; i++) {
        char want[64];
        if (rows[i].flag == NULL)
            continue;
        snprintf(want, sizeof want, "  --%s ", rows[i].flag);
        if (strstr(text, want) == NULL)
            fail_msg("--help lacks %s:\n%s", want, text);
    }
    assert_non_null(strstr(text, "  --config FILE"));
    assert_non_null(strstr(text, "(0..64; default 4)"));
    assert_non_null(strstr(text, "(debug|info; default info)"));
    assert_null(strstr(text, "limits")); /* YAML-only rows have no flag */
    free(text);
}

static void test_markdown_and_docs_check(void **state) {
    char *text = NULL;
    size_t len = 0;
    char path[128];
    (void)state;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cm_opt_print_markdown(&table, f);
    fclose(f);
    assert_non_null(strstr(text, "| `--workers N` | `workers` | `4` | `0..64` | worker count |"));
    assert_non_null(strstr(text, "| | `limits.a` | `10` | `1..100` | limit a |"));
    assert_non_null(strstr(text, "| `--level L` | `level` | `info` | `debug\\|info` | level |"));
    assert_non_null(strstr(text, "| `--closed` | | | | refuse when down |"));

    snprintf(path, sizeof path, "/tmp/cm-opt-doc-%d.md", (int)getpid());
    write_file(path, "# t\n\n" CM_OPT_DOC_BEGIN "\n| old |\n" CM_OPT_DOC_END "\n\nafter\n");
    assert_int_equal(cm_opt_check_docs(&table, path, false, g_err, sizeof g_err), CM_ERR_CONFIG);
    assert_non_null(strstr(g_err, "expected line: | flag | YAML key"));
    assert_int_equal(cm_opt_check_docs(&table, path, true, g_err, sizeof g_err), CM_OK);
    assert_int_equal(cm_opt_check_docs(&table, path, false, g_err, sizeof g_err), CM_OK);
    {
        char doc[8192];
        FILE *d = fopen(path, "r");
        assert_non_null(d);
        size_t n = fread(doc, 1, sizeof doc - 1, d);
        fclose(d);
        doc[n] = '\0';
        const char *head = "# t\n\n" CM_OPT_DOC_BEGIN "\n| flag |";
        assert_true(strncmp(doc, head, strlen(head)) == 0);
        assert_non_null(strstr(doc, text));
        assert_non_null(strstr(doc, CM_OPT_DOC_END "\n\nafter\n"));
    }
    write_file(path, "# no markers\n");
    assert_int_equal(cm_opt_check_docs(&table, path, false, g_err, sizeof g_err), CM_ERR_FORMAT);
    unlink(path);
    free(text);
}

/* A row whose type does not fit its field is a table mistake, caught before any value. */
static void test_row_shape_checked(void **state) {
    static const cm_opt bad_rows[] = {
        {"workers", "workers", CM_OPT_U64, T(workers), 0, 64, .def = "4", .help = "u32 as u64"},
    };
    static const cm_opt_table bad = {"t-prog", "", bad_rows, 1};
    t_cfg c;
    (void)state;
    memset(&c, 0, sizeof c);
    assert_int_equal(cm_opt_defaults(&bad, &c, g_err, sizeof g_err), CM_ERR_INTERNAL);
    assert_non_null(strstr(g_err, "'workers'"));
    assert_int_equal(c.workers, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_zero_applies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_yaml_and_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_beats_yaml, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_custom_rows, setup, teardown),
        cmocka_unit_test(test_help_lists_every_flag),
        cmocka_unit_test(test_markdown_and_docs_check),
        cmocka_unit_test(test_row_shape_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
