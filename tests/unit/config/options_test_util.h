/*
 * Helpers shared by the services' option-table tests (worker_options_test.c,
 * gateway_options_test.c): a per-process YAML file, the docs check and the --help check.
 * Include after <cmocka.h>.
 */
#ifndef OPTIONS_TEST_UTIL_H
#define OPTIONS_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_opt.h"

static char g_yaml[128];

static int yaml_setup(void **state) {
    (void)state;
    snprintf(g_yaml, sizeof g_yaml, "/tmp/sluice-options-test-%d.yaml", (int)getpid());
    return 0;
}

static int yaml_teardown(void **state) {
    (void)state;
    unlink(g_yaml);
    return 0;
}

static void write_yaml(const char *text) {
    FILE *f = fopen(g_yaml, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The generated section of docs_rel (under $SLUICE_SOURCE_DIR) equals the table's;
 * SLUICE_DOCS_UPDATE=1 rewrites it instead. */
static void check_docs_section(const cm_opt_table *t, const char *docs_rel) {
    const char *src = getenv("SLUICE_SOURCE_DIR");
    const char *update = getenv("SLUICE_DOCS_UPDATE");
    char path[1024];
    char err[512];
    snprintf(path, sizeof path, "%s/%s", src != NULL ? src : ".", docs_rel);
    cm_err rv =
        cm_opt_check_docs(t, path, update != NULL && strcmp(update, "1") == 0, err, sizeof err);
    if (rv != CM_OK)
        fail_msg("%s (SLUICE_DOCS_UPDATE=1 regenerates it)", err);
}

/* Every row with a flag has its entry in help; returns how many flags there are. */
static size_t check_help_lists_flags(const cm_opt_table *t, const char *help) {
    size_t flags = 0;
    for (size_t i = 0; i < t->count; i++) {
        char want[80];
        if (t->opts[i].flag == NULL)
            continue;
        flags++;
        snprintf(want, sizeof want, "  --%s ", t->opts[i].flag);
        if (strstr(help, want) == NULL)
            fail_msg("--help lacks '%s'", want);
    }
    assert_non_null(strstr(help, "  --config FILE"));
    return flags;
}

#endif /* OPTIONS_TEST_UTIL_H */
