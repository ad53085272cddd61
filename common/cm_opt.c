/*
 * cm_opt: the descriptor table drives getopt_long, a libcyaml schema generated at load time,
 * the shared bounds, --help and the docs table.
 *
 * The YAML side maps the file into an "image": one slot per row, each a pointer that libcyaml
 * leaves NULL when the key is absent. That is how an explicit 0 differs from "not given"
 * without a second set of fields. cm_config walks the document against the generated schema
 * first, so types, unknown keys and duplicates get its file:line:col messages; the rows'
 * bounds run in cm_config's validate callback, so they are located at the key too.
 */
#include "cm_opt.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define FLAG_VAL_BASE 1000 /* getopt values of the rows: FLAG_VAL_BASE + row index */
#define NAME_BYTES 80      /* "--flag" as messages name it */
#define MSG_BYTES 256      /* "must be ..." before the name is put in front */
#define DOC_MAX_BYTES (1u << 20)
#define HELP_COLUMN 30 /* where help text starts */
#define HELP_WIDTH 100 /* wrap help lines here */

typedef struct yaml_slot {
    void *value;    /* libcyaml's allocation; NULL: key absent */
    uint32_t count; /* sequences: entries */
} yaml_slot;

static uint64_t type_max(const cm_opt *o) {
    switch (o->type) {
    case CM_OPT_U32:
        return UINT32_MAX;
    case CM_OPT_INT:
        return INT_MAX;
    default:
        return UINT64_MAX;
    }
}

static uint64_t str_max(const cm_opt *o) {
    uint64_t cap = o->type == CM_OPT_STR ? o->size - 1 : 65535;
    return o->max != 0 && o->max < cap ? o->max : cap;
}

static bool is_number(const cm_opt *o) {
    return o->type == CM_OPT_U32 || o->type == CM_OPT_U64 || o->type == CM_OPT_INT;
}

static bool is_string(const cm_opt *o) {
    return o->type == CM_OPT_STR || o->type == CM_OPT_STRP;
}

/* number_ok: v within the row's range, else msg = "must be ..., got <shown>". */
static bool number_ok(const cm_opt *o, uint64_t v, const char *shown, char *msg, size_t n) {
    uint64_t max = o->max < type_max(o) ? o->max : type_max(o);
    if (v >= o->min && v <= max)
        return true;
    if (o->min == 0)
        snprintf(msg, n, "must be at most %" PRIu64 ", got %.40s", max, shown);
    else if (max == type_max(o))
        snprintf(msg, n, "must be at least %" PRIu64 ", got %.40s", o->min, shown);
    else
        snprintf(msg, n, "must be between %" PRIu64 " and %" PRIu64 ", got %.40s", o->min, max,
                 shown);
    return false;
}

static bool choice_ok(const char *choices, const char *s) {
    size_t len = strlen(s);
    for (const char *p = choices; *p != '\0';) {
        size_t n = strcspn(p, "|");
        if (n == len && strncmp(p, s, n) == 0)
            return true;
        p += n + (p[n] == '|');
    }
    return false;
}

static bool string_ok(const cm_opt *o, const char *s, char *msg, size_t n) {
    size_t len = strlen(s);
    if (o->choices != NULL && !choice_ok(o->choices, s)) {
        snprintf(msg, n, "must be one of %s, got '%.64s'", o->choices, s);
        return false;
    }
    if (len < o->min || len > str_max(o)) {
        if (o->min == 1 && len == 0)
            snprintf(msg, n, "must not be empty");
        else
            snprintf(msg, n, "must be %" PRIu64 " to %" PRIu64 " bytes long, got %zu", o->min,
                     str_max(o), len);
        return false;
    }
    return true;
}

static void store_number(const cm_opt *o, void *cfg, uint64_t v) {
    char *dst = (char *)cfg + o->offset;
    if (o->type == CM_OPT_U32)
        *(uint32_t *)dst = (uint32_t)v;
    else if (o->type == CM_OPT_U64)
        *(uint64_t *)dst = v;
    else
        *(int *)dst = (int)v;
}

static cm_err store_string(const cm_opt *o, void *cfg, const char *s) {
    char *dst = (char *)cfg + o->offset;
    size_t len = strlen(s);
    if (o->type == CM_OPT_STR) {
        memcpy(dst, s, len + 1); /* string_ok bounded len below o->size */
        return CM_OK;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return CM_ERR_NOMEM;
    memcpy(copy, s, len + 1);
    free(*(char **)dst);
    *(char **)dst = copy;
    return CM_OK;
}

cm_err cm_opt_set(const cm_opt *o, void *cfg, const char *name, const char *text, char *err,
                  size_t errlen) {
    char msg[MSG_BYTES];
    if (is_string(o)) {
        if (!string_ok(o, text, msg, sizeof msg))
            return cm_errf(CM_ERR_CONFIG, err, errlen, "'%s' %s", name, msg);
        cm_err rv = store_string(o, cfg, text);
        return rv == CM_OK ? rv : cm_errf(rv, err, errlen, "'%s': out of memory", name);
    }
    if (o->type == CM_OPT_BOOL) {
        bool v;
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
            v = true;
        else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
            v = false;
        else
            return cm_errf(CM_ERR_CONFIG, err, errlen, "'%s' must be true or false, got '%.64s'",
                           name, text);
        *(bool *)((char *)cfg + o->offset) = v;
        return CM_OK;
    }
    if (!is_number(o))
        return cm_errf(CM_ERR_INTERNAL, err, errlen, "'%s' has no text form", name);
    /* Digits only: strtoull alone would take "-5" (wrapped), " 5", "+5" and "0x5". */
    size_t digits = strspn(text, "0123456789");
    if (digits == 0 || text[digits] != '\0')
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "'%s' must be a non-negative integer, got '%.64s'", name, text);
    errno = 0;
    unsigned long long v = strtoull(text, NULL, 10);
    if (errno == ERANGE)
        v = ULLONG_MAX; /* reported as out of range below, with the text as given */
    if (!number_ok(o, (uint64_t)v, text, msg, sizeof msg))
        return cm_errf(CM_ERR_CONFIG, err, errlen, "'%s' %s", name, msg);
    store_number(o, cfg, (uint64_t)v);
    return CM_OK;
}

/* row_shape_ok: the row's type fits the field it names (a table mistake, not user input). */
static bool row_shape_ok(const cm_opt *o) {
    switch (o->type) {
    case CM_OPT_STR:
        return o->size > 1;
    case CM_OPT_STRP:
        return o->size == sizeof(char *);
    case CM_OPT_U32:
        return o->size == sizeof(uint32_t);
    case CM_OPT_U64:
        return o->size == sizeof(uint64_t);
    case CM_OPT_INT:
        return o->size == sizeof(int);
    case CM_OPT_BOOL:
        return o->size == sizeof(bool);
    case CM_OPT_CUSTOM:
        return (o->flag == NULL || o->flag_fn != NULL) &&
               (o->key == NULL || (o->yaml_fn != NULL && o->yaml != NULL));
    }
    return false;
}

cm_err cm_opt_defaults(const cm_opt_table *t, void *cfg, char *err, size_t errlen) {
    for (size_t i = 0; i < t->count; i++) {
        const cm_opt *o = &t->opts[i];
        if (!row_shape_ok(o))
            return cm_errf(CM_ERR_INTERNAL, err, errlen, "option row '%s' does not fit its field",
                           o->flag != NULL ? o->flag : o->key);
        if (o->def == NULL || o->type == CM_OPT_CUSTOM)
            continue;
        cm_err rv = cm_opt_set(o, cfg, o->flag != NULL ? o->flag : o->key, o->def, err, errlen);
        if (rv != CM_OK)
            return rv;
    }
    return CM_OK;
}

void cm_opt_free(const cm_opt_table *t, void *cfg) {
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < t->count; i++) {
        if (t->opts[i].type != CM_OPT_STRP)
            continue;
        char **p = (char **)((char *)cfg + t->opts[i].offset);
        free(*p);
        *p = NULL;
    }
}

/* ---- YAML: a schema generated from the rows ---- */

typedef struct yaml_schema {
    cyaml_schema_value_t top;
    cyaml_schema_field_t *fields;     /* top level, END-terminated */
    cyaml_schema_field_t *sub_fields; /* nested mappings' fields, each list END-terminated */
    char *group_names;                /* "limits\0..." for the nested mappings' keys */
} yaml_schema;

typedef struct yaml_apply {
    const cm_opt_table *t;
    void *cfg;
} yaml_apply;

static void row_field(const cm_opt *o, size_t i, const char *key, cyaml_schema_field_t *f) {
    memset(f, 0, sizeof *f);
    f->key = key;
    f->data_offset = (uint32_t)(i * sizeof(yaml_slot) + offsetof(yaml_slot, value));
    f->value.flags = (enum cyaml_flag)(CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL);
    switch (o->type) {
    case CM_OPT_STR:
    case CM_OPT_STRP:
        f->value.type = CYAML_STRING;
        f->value.data_size = sizeof(char *);
        f->value.string.min = (uint32_t)o->min;
        f->value.string.max = (uint32_t)str_max(o);
        break;
    case CM_OPT_BOOL:
        f->value.type = CYAML_BOOL;
        f->value.data_size = sizeof(bool);
        break;
    case CM_OPT_CUSTOM:
        f->value = *o->yaml;
        f->value.flags = (enum cyaml_flag)(f->value.flags | CYAML_FLAG_OPTIONAL);
        f->count_offset = (uint32_t)(i * sizeof(yaml_slot) + offsetof(yaml_slot, count));
        f->count_size = sizeof(uint32_t);
        break;
    default: /* numbers: read as 64 bits so the rows' bounds, not the C type, decide */
        f->value.type = CYAML_UINT;
        f->value.data_size = sizeof(uint64_t);
        break;
    }
}

static bool same_group(const char *a, const char *b) {
    const char *da = strchr(a, '.'), *db = strchr(b, '.');
    return da != NULL && db != NULL && da - a == db - b && strncmp(a, b, (size_t)(da - a)) == 0;
}

static void yaml_schema_fini(yaml_schema *s) {
    free(s->fields);
    free(s->sub_fields);
    free(s->group_names);
    memset(s, 0, sizeof *s);
}

/* yaml_schema_init builds the schema of the rows with a key; one level of nesting ("a.b"). */
static cm_err yaml_schema_init(yaml_schema *s, const cm_opt_table *t) {
    size_t names_bytes = 1, n_top = 0, n_sub = 0;
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < t->count; i++)
        if (t->opts[i].key != NULL)
            names_bytes += strlen(t->opts[i].key) + 1;
    s->fields = calloc(t->count + 1, sizeof *s->fields);
    s->sub_fields = calloc(2 * t->count + 1, sizeof *s->sub_fields);
    s->group_names = calloc(names_bytes, 1);
    if (s->fields == NULL || s->sub_fields == NULL || s->group_names == NULL) {
        yaml_schema_fini(s);
        return CM_ERR_NOMEM;
    }
    char *names = s->group_names;
    for (size_t i = 0; i < t->count; i++) {
        const char *key = t->opts[i].key;
        if (key == NULL)
            continue;
        const char *dot = strchr(key, '.');
        if (dot == NULL) {
            row_field(&t->opts[i], i, key, &s->fields[n_top++]);
            continue;
        }
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = t->opts[j].key != NULL && same_group(t->opts[j].key, key);
        if (seen)
            continue;
        /* A nested mapping over the same image: its fields use the rows' slot offsets. */
        cyaml_schema_field_t *group = &s->fields[n_top++];
        memcpy(names, key, (size_t)(dot - key));
        names[dot - key] = '\0';
        group->key = names;
        names += dot - key + 1;
        group->data_offset = 0;
        group->value.type = CYAML_MAPPING;
        group->value.flags = CYAML_FLAG_OPTIONAL;
        group->value.data_size = (uint32_t)(t->count * sizeof(yaml_slot));
        group->value.mapping.fields = &s->sub_fields[n_sub];
        for (size_t j = i; j < t->count; j++)
            if (t->opts[j].key != NULL && same_group(t->opts[j].key, key))
                row_field(&t->opts[j], j, strchr(t->opts[j].key, '.') + 1, &s->sub_fields[n_sub++]);
        n_sub++; /* the END entry (zeroed) */
    }
    s->top.type = CYAML_MAPPING;
    s->top.flags = CYAML_FLAG_POINTER;
    s->top.data_size = (uint32_t)(t->count * sizeof(yaml_slot));
    s->top.mapping.fields = s->fields;
    return CM_OK;
}

/* Runs inside cm_config_load, after the walk: bounds located at the key, then the values. */
static cm_err yaml_apply_rows(void *data, cm_config_check *chk, void *arg) {
    yaml_apply *a = arg;
    yaml_slot *img = data;
    char msg[MSG_BYTES];
    char shown[32];
    for (size_t i = 0; i < a->t->count; i++) {
        const cm_opt *o = &a->t->opts[i];
        if (o->key == NULL || img[i].value == NULL)
            continue;
        cm_err rv = CM_OK;
        if (is_string(o)) {
            if (!string_ok(o, img[i].value, msg, sizeof msg))
                return cm_config_reject(chk, o->key, "%s", msg);
            rv = store_string(o, a->cfg, img[i].value);
        } else if (o->type == CM_OPT_BOOL) {
            *(bool *)((char *)a->cfg + o->offset) = *(bool *)img[i].value;
        } else if (o->type == CM_OPT_CUSTOM) {
            rv = o->yaml_fn(a->cfg, o, &img[i].value, img[i].count, chk);
        } else {
            uint64_t v = *(uint64_t *)img[i].value;
            snprintf(shown, sizeof shown, "%" PRIu64, v);
            if (!number_ok(o, v, shown, msg, sizeof msg))
                return cm_config_reject(chk, o->key, "%s", msg);
            store_number(o, a->cfg, v);
        }
        if (rv == CM_ERR_NOMEM)
            return cm_config_reject(chk, o->key, "out of memory");
        if (rv != CM_OK)
            return rv;
    }
    return CM_OK;
}

static cm_err load_yaml(const cm_opt_table *t, const char *path, void *cfg, char *err,
                        size_t errlen) {
    yaml_schema s;
    cm_err rv = yaml_schema_init(&s, t);
    if (rv != CM_OK)
        return cm_errf(rv, err, errlen, "%s: out of memory", path);
    yaml_apply a = {t, cfg};
    cm_config_opts copts = {.validate = yaml_apply_rows, .validate_arg = &a};
    void *img = NULL;
    rv = cm_config_load(path, &s.top, &copts, &img, err, errlen);
    if (rv == CM_OK)
        cm_config_free(&s.top, img);
    yaml_schema_fini(&s);
    return rv;
}

/* ---- command line ---- */

cm_err cm_opt_parse(const cm_opt_table *t, int argc, char **argv, void *cfg, cm_opt_result *res,
                    char *err, size_t errlen) {
    cm_err rv = CM_OK;
    size_t k = 0;
    int ch;
    char name[NAME_BYTES];
    memset(res, 0, sizeof *res);
    struct option *lopts = calloc(t->count + 3, sizeof *lopts);
    if (lopts == NULL)
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory");
    for (size_t i = 0; i < t->count; i++)
        if (t->opts[i].flag != NULL)
            lopts[k++] = (struct option){
                t->opts[i].flag, t->opts[i].set_to != NULL ? no_argument : required_argument, NULL,
                (int)(FLAG_VAL_BASE + i)};
    lopts[k++] = (struct option){"config", required_argument, NULL, 'c'};
    lopts[k++] = (struct option){"help", no_argument, NULL, 'h'};

    rv = cm_opt_defaults(t, cfg, err, errlen);
    if (rv != CM_OK)
        goto done;
    /* Pass 1: --config and --help, and every unknown flag refused before anything is read.
     * optind = 0 makes glibc re-initialise getopt, as this may run more than once. */
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        if (ch == 'h') {
            res->help = true;
            goto done;
        }
        if (ch == '?' || ch == ':') {
            rv = cm_errf(CM_ERR_CONFIG, err, errlen,
                         "unknown or incomplete option '%.64s' (see --help)",
                         argv[optind - 1 < argc ? optind - 1 : argc - 1]);
            goto done;
        }
        if (ch == 'c')
            res->config_path = optarg;
    }
    if (optind < argc) {
        rv = cm_errf(CM_ERR_CONFIG, err, errlen, "unexpected argument '%.64s'", argv[optind]);
        goto done;
    }
    if (res->config_path != NULL) {
        rv = load_yaml(t, res->config_path, cfg, err, errlen);
        if (rv != CM_OK)
            goto done;
    }
    /* Pass 2: the flags, over the file's values. */
    optind = 0;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        if (ch < FLAG_VAL_BASE)
            continue;
        const cm_opt *o = &t->opts[ch - FLAG_VAL_BASE];
        snprintf(name, sizeof name, "--%s", o->flag);
        if (o->type == CM_OPT_CUSTOM)
            rv = o->flag_fn(cfg, o, name, optarg, err, errlen);
        else
            rv = cm_opt_set(o, cfg, name, o->set_to != NULL ? o->set_to : optarg, err, errlen);
        if (rv != CM_OK)
            goto done;
    }
done:
    optind = 0;
    free(lopts);
    return rv;
}

/* ---- help and docs ---- */

static const char *default_text(const cm_opt *o) {
    if (o->def_doc != NULL)
        return o->def_doc;
    if (o->def != NULL && o->def[0] != '\0')
        return o->def;
    return NULL;
}

static void range_text(const cm_opt *o, char *out, size_t n) {
    out[0] = '\0';
    if (is_number(o)) {
        uint64_t max = o->max < type_max(o) ? o->max : type_max(o);
        snprintf(out, n, "%" PRIu64 "..%" PRIu64, o->min, max);
    } else if (is_string(o) && o->choices != NULL) {
        snprintf(out, n, "%s", o->choices);
    } else if (o->type == CM_OPT_BOOL && o->set_to == NULL) {
        snprintf(out, n, "true|false");
    }
}

/* Writes text wrapped at HELP_WIDTH, continuation lines indented to HELP_COLUMN. */
static void wrap(FILE *f, const char *text, size_t col) {
    while (*text != '\0') {
        size_t room = HELP_WIDTH > col ? HELP_WIDTH - col : 20;
        size_t len = strlen(text);
        size_t cut = len;
        if (len > room) {
            cut = room;
            while (cut > 0 && text[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = strcspn(text, " ");
        }
        fprintf(f, "%.*s\n", (int)cut, text);
        text += cut;
        while (*text == ' ')
            text++;
        if (*text != '\0')
            fprintf(f, "%*s", HELP_COLUMN, "");
        col = HELP_COLUMN;
    }
}

static void help_entry(FILE *f, const char *flag, const char *arg, const char *text) {
    char head[128];
    snprintf(head, sizeof head, "  --%s%s%s", flag, arg != NULL ? " " : "", arg != NULL ? arg : "");
    size_t len = strlen(head);
    if (len + 1 >= HELP_COLUMN) {
        fprintf(f, "%s\n%*s", head, HELP_COLUMN, "");
    } else {
        fprintf(f, "%s%*s", head, (int)(HELP_COLUMN - len), "");
    }
    wrap(f, text, HELP_COLUMN);
}

void cm_opt_print_help(const cm_opt_table *t, FILE *f) {
    char range[128];
    char text[1024];
    fprintf(f, "usage: %s %s\n", t->program, t->synopsis);
    for (size_t i = 0; i < t->count; i++) {
        const cm_opt *o = &t->opts[i];
        if (o->flag == NULL)
            continue;
        const char *def = default_text(o);
        range_text(o, range, sizeof range);
        snprintf(text, sizeof text, "%s%s%s%s%s%s%s", o->help, range[0] || def ? " (" : "", range,
                 range[0] && def ? "; " : "", def ? "default " : "", def ? def : "",
                 range[0] || def ? ")" : "");
        help_entry(f, o->flag, o->set_to != NULL ? NULL : o->arg, text);
    }
    help_entry(f, "config", "FILE", "YAML file with the settings (keys in docs/); flags win");
    help_entry(f, "help", NULL, "this text");
}

/* One markdown table cell: '|' escaped (GitHub splits cells on it even inside `code`). */
static void cell(FILE *f, const char *s, bool code) {
    const char *tick = code ? "`" : "";
    if (s[0] == '\0') {
        fputs(" |", f);
        return;
    }
    fprintf(f, " %s", tick);
    for (; *s != '\0'; s++) {
        if (*s == '|')
            fputc('\\', f);
        fputc(*s, f);
    }
    fprintf(f, "%s |", tick);
}

/* def_is_value: the default is a value (shown as code), not a description. */
static void row_cells(FILE *f, const char *flag, const char *key, const char *def,
                      bool def_is_value, const char *range, const char *help) {
    fputs("|", f);
    cell(f, flag, true);
    cell(f, key, true);
    cell(f, def, def_is_value);
    cell(f, range, true);
    cell(f, help, false);
    fputs("\n", f);
}

void cm_opt_print_markdown(const cm_opt_table *t, FILE *f) {
    char flag[128];
    char range[128];
    fputs("| flag | YAML key | default | range | meaning |\n|---|---|---|---|---|\n", f);
    for (size_t i = 0; i < t->count; i++) {
        const cm_opt *o = &t->opts[i];
        flag[0] = '\0';
        if (o->flag != NULL)
            snprintf(flag, sizeof flag, "--%s%s%s", o->flag, o->set_to == NULL ? " " : "",
                     o->set_to == NULL ? o->arg : "");
        range_text(o, range, sizeof range);
        const char *def = default_text(o);
        row_cells(f, flag, o->key != NULL ? o->key : "", def != NULL ? def : "", o->def_doc == NULL,
                  range, o->help);
    }
    row_cells(f, "--config FILE", "", "", true, "",
              "YAML file with the keys above; flags win over it");
    row_cells(f, "--help", "", "", true, "", "print the flags and exit");
}

cm_err cm_opt_check_docs(const cm_opt_table *t, const char *path, bool rewrite, char *err,
                         size_t errlen) {
    cm_err rv = CM_OK;
    char *doc = NULL, *want = NULL;
    size_t doc_len = 0, want_len = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return cm_errf(CM_ERR_IO, err, errlen, "%s: cannot open", path);
    doc = malloc(DOC_MAX_BYTES + 1);
    if (doc == NULL) {
        fclose(f);
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory");
    }
    doc_len = fread(doc, 1, DOC_MAX_BYTES + 1, f);
    fclose(f);
    if (doc_len > DOC_MAX_BYTES) {
        rv = cm_errf(CM_ERR_LIMIT, err, errlen, "%s: larger than %u bytes", path, DOC_MAX_BYTES);
        goto done;
    }
    doc[doc_len] = '\0';
    char *begin = strstr(doc, CM_OPT_DOC_BEGIN "\n");
    char *end = begin != NULL ? strstr(begin, "\n" CM_OPT_DOC_END) : NULL;
    if (end == NULL) {
        rv = cm_errf(CM_ERR_FORMAT, err, errlen, "%s: no '%s' ... '%s' section", path,
                     CM_OPT_DOC_BEGIN, CM_OPT_DOC_END);
        goto done;
    }
    begin += strlen(CM_OPT_DOC_BEGIN "\n");
    end += 1; /* the section's last newline belongs to it */
    FILE *m = open_memstream(&want, &want_len);
    if (m == NULL) {
        rv = cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory");
        goto done;
    }
    cm_opt_print_markdown(t, m);
    fclose(m);
    if ((size_t)(end - begin) == want_len && memcmp(begin, want, want_len) == 0)
        goto done;
    if (rewrite) {
        f = fopen(path, "wb");
        if (f == NULL || fwrite(doc, 1, (size_t)(begin - doc), f) != (size_t)(begin - doc) ||
            fwrite(want, 1, want_len, f) != want_len ||
            fwrite(end, 1, doc_len - (size_t)(end - doc), f) != doc_len - (size_t)(end - doc)) {
            rv = cm_errf(CM_ERR_IO, err, errlen, "%s: cannot rewrite", path);
        }
        if (f != NULL && fclose(f) != 0 && rv == CM_OK)
            rv = cm_errf(CM_ERR_IO, err, errlen, "%s: cannot rewrite", path);
        goto done;
    }
    /* The first line that differs, so the message says what drifted. */
    size_t i = 0, line_start = 0;
    size_t have_len = (size_t)(end - begin);
    while (i < want_len && i < have_len && begin[i] == want[i]) {
        if (want[i] == '\n')
            line_start = i + 1;
        i++;
    }
    rv = cm_errf(CM_ERR_CONFIG, err, errlen,
                 "%s: the options table differs from the descriptors; expected line: %.*s", path,
                 (int)strcspn(want + line_start, "\n"), want + line_start);
done:
    free(want);
    free(doc);
    return rv;
}
