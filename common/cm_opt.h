/*
 * cm_opt: one descriptor table per service for every setting it takes, from which the command
 * line (getopt_long), the YAML schema (generated for cm_config), the bounds, the --help text and
 * the options table in docs/ all come, so a setting is one row and the five cannot drift.
 *
 * Order of application: the rows' defaults, then the YAML file (--config FILE; only the keys
 * present in it: an explicit 0 applies), then the flags (a flag beats the file, in any order
 * on the command line). Flags and YAML share the bounds and the checks; a value out of range
 * is refused with a message naming the option, the value and the range:
 *
 *   '--max-running' must be at most 65536, got 1000000
 *   w.yaml:3:1: 'max_running' must be at most 65536, got 1000000
 *
 * Example:
 *
 *   typedef struct my_cfg { char listen[64]; uint32_t threads; bool log_json; } my_cfg;
 *   #define MY(m) offsetof(my_cfg, m), sizeof(((my_cfg *)0)->m)
 *   static const cm_opt rows[] = {
 *       {"listen", "listen", CM_OPT_STR, MY(listen), 1, 63, .def = "127.0.0.1:80",
 *        .arg = "HOST:PORT", .help = "where to listen"},
 *       {"threads", "threads", CM_OPT_U32, MY(threads), 0, 64, .def = "0", .arg = "N",
 *        .help = "loop threads (0 = all cores)"},
 *   };
 *   static const cm_opt_table table = {"my-prog", "[options]", rows, 2};
 *   cm_opt_parse(&table, argc, argv, &cfg, &res, err, sizeof err);
 *
 * Settings with structure (lists, KEY=VALUE flags) are CM_OPT_CUSTOM rows: the flag goes to a
 * callback per occurrence, the YAML value (any libcyaml schema) is handed to a callback.
 *
 * Thread contract: the tables are constant; cm_opt_parse uses getopt's globals (optind,
 * opterr) and must run on one thread at a time (at start-up).
 */
#ifndef CM_OPT_H
#define CM_OPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cyaml/cyaml.h>

#include "cm_config.h"
#include "cm_err.h"

typedef enum cm_opt_type {
    CM_OPT_STR,    /* char[size] in the struct; length in min..max */
    CM_OPT_STRP,   /* char * in the struct, malloc'd (freed by cm_opt_free); length in min..max */
    CM_OPT_U32,    /* uint32_t in min..max */
    CM_OPT_U64,    /* uint64_t in min..max */
    CM_OPT_INT,    /* int in min..max (non-negative) */
    CM_OPT_BOOL,   /* bool: true|false (the flag also takes 1|0) */
    CM_OPT_CUSTOM, /* flag_fn / yaml_fn below */
} cm_opt_type;

typedef struct cm_opt cm_opt;

/*
 * cm_opt_flag_fn takes one occurrence of a CM_OPT_CUSTOM flag (repeatable flags append).
 * name is "--flag" for messages. On failure it writes one line into err and returns non-OK;
 * cfg stays freeable by its owner either way.
 */
typedef cm_err (*cm_opt_flag_fn)(void *cfg, const cm_opt *o, const char *name, const char *value,
                                 char *err, size_t errlen);

/*
 * cm_opt_yaml_fn takes the value libcyaml loaded for a CM_OPT_CUSTOM key (through o->yaml):
 * *value points at it (for a sequence, the array, with count entries). It may take ownership
 * by setting *value = NULL (it was allocated with malloc, in the shapes libcyaml frees);
 * whatever is left is freed after the call. Refuse with cm_config_reject(chk, o->key, ...).
 */
typedef cm_err (*cm_opt_yaml_fn)(void *cfg, const cm_opt *o, void **value, unsigned count,
                                 cm_config_check *chk);

struct cm_opt {
    const char *flag; /* "max-running" for --max-running; NULL: YAML only */
    const char *key;  /* YAML key "max_running"; one level of nesting: "limits.max_n";
                         NULL: command line only */
    cm_opt_type type;
    size_t offset;          /* of the field in the config struct */
    size_t size;            /* of the field (capacity for CM_OPT_STR) */
    uint64_t min, max;      /* numbers: the value; strings: the length (bytes), inclusive */
    const char *def;        /* default as the flag would give it; NULL: none (0, false, "") */
    const char *set_to;     /* non-NULL: the flag takes no argument and means this value */
    const char *arg;        /* argument name in help, e.g. "N", "PATH" */
    const char *help;       /* one sentence for --help and docs */
    const char *choices;    /* strings: the accepted values, "cpu|cuda"; NULL: any */
    const char *def_doc;    /* default shown in help/docs when it is not a plain value */
    cm_opt_flag_fn flag_fn; /* CM_OPT_CUSTOM with a flag */
    cm_opt_yaml_fn yaml_fn; /* CM_OPT_CUSTOM with a key */
    const cyaml_schema_value_t *yaml; /* CM_OPT_CUSTOM with a key: its value's schema (a
                                         CYAML_FLAG_POINTER value: sequence, mapping...) */
};

typedef struct cm_opt_table {
    const char *program;  /* "sluice-worker" */
    const char *synopsis; /* after the program name in the usage line: "--model PATH [options]" */
    const cm_opt *opts;
    size_t count;
} cm_opt_table;

typedef struct cm_opt_result {
    bool help;               /* --help was given: nothing else was done */
    const char *config_path; /* --config FILE (points into argv) or NULL */
} cm_opt_result;

/*
 * cm_opt_parse fills cfg (a zeroed struct of the table's type) from the defaults, the YAML
 * file named by --config and then the other flags. --help sets res->help and stops (CM_OK).
 * On failure err holds one line (file:line:col for the file) and cfg may hold part of the
 * values (free it with the owner's free). Never exits or prints.
 * Returns CM_ERR_CONFIG for a wrong value, unknown flag or key; CM_ERR_IO etc. from cm_config
 * for an unreadable file; CM_ERR_NOMEM.
 */
cm_err cm_opt_parse(const cm_opt_table *t, int argc, char **argv, void *cfg, cm_opt_result *res,
                    char *err, size_t errlen);

/* cm_opt_defaults applies every row's def to cfg (a zeroed struct); called by cm_opt_parse. */
cm_err cm_opt_defaults(const cm_opt_table *t, void *cfg, char *err, size_t errlen);

/*
 * cm_opt_set sets the row o from text as a flag would (bounds, choices), name being what the
 * messages call it ("--max-running"). Not for CM_OPT_CUSTOM rows without flag_fn.
 */
cm_err cm_opt_set(const cm_opt *o, void *cfg, const char *name, const char *text, char *err,
                  size_t errlen);

/* cm_opt_free frees the CM_OPT_STRP fields of cfg and sets them to NULL (custom rows' data
 * belong to the owner). cfg may be NULL. */
void cm_opt_free(const cm_opt_table *t, void *cfg);

/* cm_opt_print_help writes the usage line and one entry per flag (also --config, --help). */
void cm_opt_print_help(const cm_opt_table *t, FILE *f);

/*
 * cm_opt_print_markdown writes the options table for docs/: one row per descriptor (flag, YAML
 * key, default, range, meaning), between the lines CM_OPT_DOC_BEGIN and CM_OPT_DOC_END.
 */
/* CM_OPT_DEF(MACRO) is a row's .def string from a macro holding a plain literal, so a default
 * that code also uses is written once. */
#define CM_OPT_DEF(v) CM_OPT_DEF_(v)
#define CM_OPT_DEF_(v) #v

#define CM_OPT_DOC_BEGIN                                                                           \
    "<!-- options table: generated from the option descriptors; do not edit -->"
#define CM_OPT_DOC_END "<!-- end of options table -->"
void cm_opt_print_markdown(const cm_opt_table *t, FILE *f);

/*
 * cm_opt_check_docs compares the section between CM_OPT_DOC_BEGIN and CM_OPT_DOC_END in the
 * file at path with cm_opt_print_markdown's. CM_OK when equal; CM_ERR_CONFIG with the first
 * differing line in err otherwise (CM_ERR_IO: unreadable, CM_ERR_FORMAT: no markers). With
 * rewrite set, a differing section is replaced in the file (to regenerate the docs).
 */
cm_err cm_opt_check_docs(const cm_opt_table *t, const char *path, bool rewrite, char *err,
                         size_t errlen);

#endif /* CM_OPT_H */
