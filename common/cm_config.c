/*
 * cm_config: YAML -> struct via libcyaml, with one-line errors.
 *
 * Loading happens in three steps over one in-memory copy of the file:
 *  1. libyaml builds a node tree (marks give line/column of every node);
 *  2. walk() checks the tree against the cyaml schema and stops at the first problem, with
 *     its position - this is where nearly all user mistakes are caught, because libcyaml's
 *     own checks are looser (any scalar but a few is "true") and its errors are a multi-line
 *     backtrace;
 *  3. libcyaml maps the (now known-good) document into the struct; if it still fails, the
 *     lines its log callback produced are folded into one.
 * The node tree is kept until the validate callback has run, so cm_config_reject can point
 * at the offending key.
 */
#include "cm_config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#define PATH_MAX_BYTES 256 /* dotted key path shown in messages; longer paths are cut */
#define CYAML_LOG_MAX 2048 /* captured libcyaml log text */
/* Values visited by the walk, counting each alias expansion again: a few aliased lists nested
 * inside each other ("billion laughs") would otherwise expand to far more than any config. */
#define WALK_MAX_VALUES 100000

struct cm_config_check {
    const char *name;
    yaml_document_t *doc;
    char *err;
    size_t errlen;
};

typedef struct walker {
    const char *name;
    yaml_document_t *doc;
    char *err;
    size_t errlen;
    size_t values_seen; /* bounded by WALK_MAX_VALUES */
} walker;

/* fail_at writes "name:line:col: message" (1-based) and returns CM_ERR_CONFIG. */
static cm_err fail_at(const walker *w, yaml_mark_t mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static cm_err fail_at(const walker *w, yaml_mark_t mark, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cm_errf(CM_ERR_CONFIG, w->err, w->errlen, "%s:%zu:%zu: %s", w->name, mark.line + 1,
                   mark.column + 1, msg);
}

/* Values are quoted back to the user; cut long ones and hide control bytes. */
static const char *shown(const char *s, char out[64]) {
    size_t i = 0;
    for (; s[i] != '\0' && i < 60; i++) {
        out[i] = iscntrl((unsigned char)s[i]) ? '?' : s[i];
    }
    if (s[i] != '\0') {
        out[i - 3] = out[i - 2] = out[i - 1] = '.';
    }
    out[i] = '\0';
    return out;
}

static void path_join(char out[PATH_MAX_BYTES], const char *base, const char *seg) {
    if (base[0] == '\0') {
        snprintf(out, PATH_MAX_BYTES, "%.*s", PATH_MAX_BYTES - 1, seg);
    } else {
        snprintf(out, PATH_MAX_BYTES, "%.*s.%.*s", PATH_MAX_BYTES / 2, base, PATH_MAX_BYTES / 2 - 2,
                 seg);
    }
}

static const char *node_kind(const yaml_node_t *n) {
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return "a single value";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

static const char *scalar(const yaml_node_t *n) {
    return (const char *)n->data.scalar.value;
}

/* YAML null: ~, null, Null, NULL or empty, unquoted. */
static int is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return 0;
    }
    const char *s = scalar(n);
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static int parse_i64(const char *s, int64_t *out) {
    char *end;
    if (s[0] == '\0' || isspace((unsigned char)s[0])) {
        return 0;
    }
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno != 0 || *end != '\0') {
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    /* strtoull accepts "-1" and wraps it; a negative number is never a valid unsigned. */
    if (s[0] == '\0' || s[0] == '-' || isspace((unsigned char)s[0])) {
        return 0;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0') {
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_double(const char *s, double *out) {
    char *end;
    if (s[0] == '\0' || isspace((unsigned char)s[0])) {
        return 0;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE || *end != '\0') {
        return 0;
    }
    *out = v;
    return 1;
}

/* Small edit distance for "did you mean" hints; keys are short, a 32x32 table is enough. */
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 31 || lb > 31) {
        return SIZE_MAX;
    }
    size_t d[32][32];
    for (size_t i = 0; i <= la; i++) {
        d[i][0] = i;
    }
    for (size_t j = 0; j <= lb; j++) {
        d[0][j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) {
                best = d[i - 1][j] + 1;
            }
            if (d[i][j - 1] + 1 < best) {
                best = d[i][j - 1] + 1;
            }
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

static cm_err walk_value(walker *w, const yaml_node_t *n, const cyaml_schema_value_t *sv,
                         const char *path);

static const char *where(const char *path) {
    return path[0] == '\0' ? "the top level" : path;
}

static int key_equal(const char *a, const char *b, int case_insensitive) {
    return case_insensitive ? strcasecmp(a, b) == 0 : strcmp(a, b) == 0;
}

static cm_err walk_mapping(walker *w, const yaml_node_t *n, const cyaml_schema_value_t *sv,
                           const char *path) {
    const cyaml_schema_field_t *fields = sv->mapping.fields;
    int ci = (sv->flags & CYAML_FLAG_CASE_INSENSITIVE) != 0;
    char sub[PATH_MAX_BYTES];
    char tmp[64];

    if (n->type != YAML_MAPPING_NODE) {
        if (path[0] == '\0') {
            return fail_at(w, n->start_mark, "expected a mapping of keys at the top level, got %s",
                           node_kind(n));
        }
        return fail_at(w, n->start_mark, "'%s' must be a mapping of keys, got %s", path,
                       node_kind(n));
    }
    for (const yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(w->doc, p->value);
        if (k == NULL || v == NULL) {
            return fail_at(w, n->start_mark, "malformed mapping in '%s'", where(path));
        }
        if (k->type != YAML_SCALAR_NODE) {
            return fail_at(w, k->start_mark, "keys in '%s' must be plain names, got %s",
                           where(path), node_kind(k));
        }
        const char *key = scalar(k);
        const cyaml_schema_field_t *f = fields;
        for (; f->key != NULL; f++) {
            if (key_equal(f->key, key, ci)) {
                break;
            }
        }
        if (f->key == NULL) {
            const char *hint = NULL;
            size_t best = 3; /* only suggest close misspellings */
            for (const cyaml_schema_field_t *g = fields; g->key != NULL; g++) {
                size_t d = edit_distance(key, g->key);
                if (d < best) {
                    best = d;
                    hint = g->key;
                }
            }
            if (path[0] == '\0') {
                return fail_at(w, k->start_mark, "unknown key '%s' at the top level%s%s%s",
                               shown(key, tmp), hint ? " (did you mean '" : "", hint ? hint : "",
                               hint ? "'?)" : "");
            }
            return fail_at(w, k->start_mark, "unknown key '%s' in '%s'%s%s%s", shown(key, tmp),
                           path, hint ? " (did you mean '" : "", hint ? hint : "",
                           hint ? "'?)" : "");
        }
        /* Duplicate keys: libyaml keeps both and libcyaml would silently take one. Checked after
         * the unknown-key test, so earlier keys are all known and distinct: this loop is bounded
         * by the schema's field count, not by the document. */
        for (const yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
            const yaml_node_t *k2 = yaml_document_get_node(w->doc, q->key);
            if (k2 != NULL && k2->type == YAML_SCALAR_NODE && key_equal(scalar(k2), key, ci)) {
                return fail_at(w, k->start_mark, "duplicate key '%s' in '%s'", shown(key, tmp),
                               where(path));
            }
        }
        if (f->value.type == CYAML_IGNORE) {
            continue;
        }
        path_join(sub, path, f->key);
        cm_err rv = walk_value(w, v, &f->value, sub);
        if (rv != CM_OK) {
            return rv;
        }
    }
    /* Required keys: every field not marked optional (ignored fields never required). */
    for (const cyaml_schema_field_t *f = fields; f->key != NULL; f++) {
        if ((f->value.flags & CYAML_FLAG_OPTIONAL) || f->value.type == CYAML_IGNORE) {
            continue;
        }
        int found = 0;
        for (const yaml_node_pair_t *p = n->data.mapping.pairs.start;
             p < n->data.mapping.pairs.top && !found; p++) {
            const yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
            found = k != NULL && k->type == YAML_SCALAR_NODE && key_equal(scalar(k), f->key, ci);
        }
        if (!found) {
            if (path[0] == '\0') {
                return fail_at(w, n->start_mark, "missing required key '%s'", f->key);
            }
            return fail_at(w, n->start_mark, "missing required key '%s' in '%s'", f->key, path);
        }
    }
    return CM_OK;
}

static cm_err walk_sequence(walker *w, const yaml_node_t *n, const cyaml_schema_value_t *sv,
                            const char *path) {
    char sub[PATH_MAX_BYTES];
    char idx[24];
    if (n->type != YAML_SEQUENCE_NODE) {
        return fail_at(w, n->start_mark, "'%s' must be a list, got %s", path, node_kind(n));
    }
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count < sv->sequence.min) {
        return fail_at(w, n->start_mark, "'%s' must have at least %" PRIu32 " entries, got %zu",
                       path, sv->sequence.min, count);
    }
    if (sv->sequence.max != CYAML_UNLIMITED && count > sv->sequence.max) {
        return fail_at(w, n->start_mark, "'%s' must have at most %" PRIu32 " entries, got %zu",
                       path, sv->sequence.max, count);
    }
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *e = yaml_document_get_node(w->doc, n->data.sequence.items.start[i]);
        if (e == NULL) {
            return fail_at(w, n->start_mark, "malformed list '%s'", path);
        }
        snprintf(idx, sizeof idx, "%zu", i);
        path_join(sub, path, idx);
        cm_err rv = walk_value(w, e, sv->sequence.entry, sub);
        if (rv != CM_OK) {
            return rv;
        }
    }
    return CM_OK;
}

/* enum_lookup finds s among an enum's strings; strict enums take no bare numbers. */
static int enum_ok(const cyaml_schema_value_t *sv, const char *s) {
    int ci = (sv->flags & CYAML_FLAG_CASE_INSENSITIVE) != 0;
    for (uint32_t i = 0; i < sv->enumeration.count; i++) {
        if (key_equal(sv->enumeration.strings[i].str, s, ci)) {
            return 1;
        }
    }
    int64_t v;
    return !(sv->flags & CYAML_FLAG_STRICT) && parse_i64(s, &v);
}

static void enum_list(const cyaml_schema_value_t *sv, char *out, size_t outlen) {
    size_t used = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < sv->enumeration.count && used + 1 < outlen; i++) {
        int k = snprintf(out + used, outlen - used, "%s%s", i > 0 ? ", " : "",
                         sv->enumeration.strings[i].str);
        if (k < 0) {
            break;
        }
        used += (size_t)k;
    }
}

static cm_err walk_scalar(walker *w, const yaml_node_t *n, const cyaml_schema_value_t *sv,
                          const char *path) {
    char tmp[64];
    char list[200];
    if (n->type != YAML_SCALAR_NODE) {
        return fail_at(w, n->start_mark, "'%s' must be a single value, got %s", path, node_kind(n));
    }
    const char *s = scalar(n);
    switch (sv->type) {
    case CYAML_INT: {
        int64_t v;
        if (!parse_i64(s, &v)) {
            return fail_at(w, n->start_mark, "'%s' must be an integer, got '%s'", path,
                           shown(s, tmp));
        }
        if (sv->data_size < 8) {
            int64_t max = (INT64_C(1) << (sv->data_size * 8 - 1)) - 1;
            if (v > max || v < -max - 1) {
                return fail_at(w, n->start_mark,
                               "'%s' must be between %" PRId64 " and %" PRId64 ", got %s", path,
                               -max - 1, max, shown(s, tmp));
            }
        }
        return CM_OK;
    }
    case CYAML_UINT: {
        uint64_t v;
        if (!parse_u64(s, &v)) {
            return fail_at(w, n->start_mark, "'%s' must be a non-negative integer, got '%s'", path,
                           shown(s, tmp));
        }
        if (sv->data_size < 8) {
            uint64_t max = (UINT64_C(1) << (sv->data_size * 8)) - 1;
            if (v > max) {
                return fail_at(w, n->start_mark, "'%s' must be at most %" PRIu64 ", got %s", path,
                               max, shown(s, tmp));
            }
        }
        return CM_OK;
    }
    case CYAML_BOOL:
        /* Strict on purpose: libcyaml reads anything but a few words as true ('maybe'). */
        if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0) {
            return fail_at(w, n->start_mark, "'%s' must be true or false, got '%s'", path,
                           shown(s, tmp));
        }
        return CM_OK;
    case CYAML_FLOAT: {
        double v;
        if (!parse_double(s, &v) || !isfinite(v)) {
            return fail_at(w, n->start_mark, "'%s' must be a number, got '%s'", path,
                           shown(s, tmp));
        }
        if (sv->data_size == sizeof(float) && fabs(v) > 3.4e38) {
            return fail_at(w, n->start_mark, "'%s' is out of range, got %s", path, shown(s, tmp));
        }
        return CM_OK;
    }
    case CYAML_STRING: {
        size_t len = n->data.scalar.length;
        if (len < sv->string.min) {
            if (sv->string.min == 1) {
                return fail_at(w, n->start_mark, "'%s' must not be empty", path);
            }
            return fail_at(w, n->start_mark, "'%s' must be at least %" PRIu32 " characters", path,
                           sv->string.min);
        }
        if (sv->string.max != CYAML_UNLIMITED && len > sv->string.max) {
            return fail_at(w, n->start_mark, "'%s' must be at most %" PRIu32 " characters", path,
                           sv->string.max);
        }
        if (strlen(s) != len) {
            return fail_at(w, n->start_mark, "'%s' must not contain NUL characters", path);
        }
        return CM_OK;
    }
    case CYAML_ENUM:
        if (!enum_ok(sv, s)) {
            enum_list(sv, list, sizeof list);
            return fail_at(w, n->start_mark, "'%s' must be one of %s; got '%s'", path, list,
                           shown(s, tmp));
        }
        return CM_OK;
    default:
        return CM_OK;
    }
}

static cm_err walk_value(walker *w, const yaml_node_t *n, const cyaml_schema_value_t *sv,
                         const char *path) {
    char tmp[64];
    char list[200];
    if (++w->values_seen > WALK_MAX_VALUES) {
        return fail_at(w, n->start_mark,
                       "too many values (more than %d, counting alias expansions); "
                       "a config should be far smaller",
                       WALK_MAX_VALUES);
    }
    if ((sv->flags & CYAML_FLAG_POINTER_NULL) == CYAML_FLAG_POINTER_NULL && is_null(n)) {
        return CM_OK;
    }
    switch (sv->type) {
    case CYAML_MAPPING:
        return walk_mapping(w, n, sv, path);
    case CYAML_SEQUENCE:
    case CYAML_SEQUENCE_FIXED:
        return walk_sequence(w, n, sv, path);
    case CYAML_FLAGS:
        if (n->type != YAML_SEQUENCE_NODE) {
            return fail_at(w, n->start_mark, "'%s' must be a list, got %s", path, node_kind(n));
        }
        for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top;
             i++) {
            const yaml_node_t *e = yaml_document_get_node(w->doc, *i);
            if (e == NULL || e->type != YAML_SCALAR_NODE || !enum_ok(sv, scalar(e))) {
                enum_list(sv, list, sizeof list);
                return fail_at(w, e ? e->start_mark : n->start_mark,
                               "entries of '%s' must be among %s; got '%s'", path, list,
                               e && e->type == YAML_SCALAR_NODE ? shown(scalar(e), tmp) : "?");
            }
        }
        return CM_OK;
    case CYAML_BITFIELD:
        if (n->type != YAML_MAPPING_NODE) {
            return fail_at(w, n->start_mark, "'%s' must be a mapping, got %s", path, node_kind(n));
        }
        return CM_OK; /* bit names and widths: libcyaml checks, its message is used */
    case CYAML_IGNORE:
        return CM_OK;
    default:
        return walk_scalar(w, n, sv, path);
    }
}

/* Collects libcyaml's log lines (an error message, then a backtrace) into one buffer. */
typedef struct cyaml_capture {
    char text[CYAML_LOG_MAX];
    size_t len;
} cyaml_capture;

static void capture_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args) {
    cyaml_capture *c = ctx;
    (void)level;
    if (c->len + 1 >= sizeof c->text) {
        return;
    }
    int n = vsnprintf(c->text + c->len, sizeof c->text - c->len, fmt, args);
    if (n > 0) {
        c->len += (size_t)n;
        if (c->len >= sizeof c->text) {
            c->len = sizeof c->text - 1;
        }
    }
}

/*
 * cyaml_message folds the captured log into "name:line:col: message": the first line is the
 * error ("Load: Invalid INT value: 'x'"), the backtrace lines carry "(line: N, column: M)" -
 * the innermost (first) position is the most precise.
 */
static void cyaml_message(const walker *w, const cyaml_capture *c, cyaml_err_t rc) {
    char first[512];
    const char *text = c->text;
    size_t n = strcspn(text, "\n");
    if (n >= sizeof first) {
        n = sizeof first - 1;
    }
    memcpy(first, text, n);
    first[n] = '\0';
    const char *msg = first;
    if (strncmp(msg, "Load: ", 6) == 0) {
        msg += 6;
    }
    if (msg[0] == '\0') {
        msg = cyaml_strerror(rc);
    }
    const char *pos = strstr(text, "(line: ");
    unsigned long line = 0, col = 0;
    if (pos != NULL && sscanf(pos, "(line: %lu, column: %lu)", &line, &col) == 2) {
        cm_errf(CM_ERR_CONFIG, w->err, w->errlen, "%s:%lu:%lu: %s", w->name, line, col, msg);
    } else {
        cm_errf(CM_ERR_CONFIG, w->err, w->errlen, "%s: %s", w->name, msg);
    }
}

static void *cyaml_mem_wrap(void *ctx, void *ptr, size_t size) {
    return cyaml_mem(ctx, ptr, size);
}

static const cyaml_config_t free_config = {
    .log_fn = NULL,
    .log_ctx = NULL,
    .mem_fn = cyaml_mem_wrap,
    .mem_ctx = NULL,
    .log_level = CYAML_LOG_ERROR,
    .flags = CYAML_CFG_DEFAULT,
};

void cm_config_free(const cyaml_schema_value_t *schema, void *data) {
    if (schema == NULL || data == NULL) {
        return;
    }
    cyaml_free(&free_config, schema, data, 0);
}

cm_err cm_config_load_string(const char *name, const char *yaml, size_t len,
                             const cyaml_schema_value_t *schema, const cm_config_opts *opts,
                             void **out, char *err, size_t errlen) {
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (out == NULL) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "cm_config_load: out is NULL");
    }
    *out = NULL;
    if (name == NULL) {
        name = "config";
    }
    if (yaml == NULL || schema == NULL) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "%s: no document or schema given", name);
    }
    if (schema->type != CYAML_MAPPING || !(schema->flags & CYAML_FLAG_POINTER)) {
        return cm_errf(CM_ERR_INVALID, err, errlen,
                       "%s: schema must be a top-level CYAML_MAPPING with CYAML_FLAG_POINTER",
                       name);
    }
    if (len > CM_CONFIG_MAX_BYTES) {
        return cm_errf(CM_ERR_LIMIT, err, errlen,
                       "%s: file is %zu bytes, more than the %u allowed for a config", name, len,
                       CM_CONFIG_MAX_BYTES);
    }

    walker w = {.name = name, .doc = NULL, .err = err, .errlen = errlen, .values_seen = 0};
    yaml_parser_t parser;
    yaml_document_t doc;
    int have_parser = 0, have_doc = 0;
    void *data = NULL;
    cm_err rv;

    if (!yaml_parser_initialize(&parser)) {
        return cm_errf(CM_ERR_NOMEM, err, errlen, "%s: out of memory", name);
    }
    have_parser = 1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        if (parser.error == YAML_MEMORY_ERROR) {
            rv = cm_errf(CM_ERR_NOMEM, err, errlen, "%s: out of memory", name);
        } else {
            yaml_mark_t mark = parser.problem_mark;
            if (parser.context != NULL) {
                rv = cm_errf(CM_ERR_FORMAT, err, errlen, "%s:%zu:%zu: invalid YAML: %s %s", name,
                             mark.line + 1, mark.column + 1,
                             parser.problem ? parser.problem : "syntax error", parser.context);
            } else {
                rv = cm_errf(CM_ERR_FORMAT, err, errlen, "%s:%zu:%zu: invalid YAML: %s", name,
                             mark.line + 1, mark.column + 1,
                             parser.problem ? parser.problem : "syntax error");
            }
        }
        goto fail;
    }
    have_doc = 1;
    w.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        rv = cm_errf(CM_ERR_CONFIG, err, errlen,
                     "%s: file is empty; expected a mapping of settings", name);
        goto fail;
    }
    rv = walk_value(&w, root, schema, "");
    if (rv != CM_OK) {
        goto fail;
    }

    cyaml_capture cap = {.len = 0};
    cap.text[0] = '\0';
    cyaml_config_t config = {
        .log_fn = capture_log,
        .log_ctx = &cap,
        .mem_fn = cyaml_mem_wrap,
        .mem_ctx = NULL,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT,
    };
    cyaml_err_t crc =
        cyaml_load_data((const uint8_t *)yaml, len, &config, schema, (cyaml_data_t **)&data, NULL);
    if (crc != CYAML_OK) {
        data = NULL;
        if (crc == CYAML_ERR_OOM) {
            rv = cm_errf(CM_ERR_NOMEM, err, errlen, "%s: out of memory", name);
        } else {
            cyaml_message(&w, &cap, crc);
            rv = CM_ERR_CONFIG;
        }
        goto fail;
    }

    if (opts != NULL && opts->validate != NULL) {
        cm_config_check chk = {.name = name, .doc = &doc, .err = err, .errlen = errlen};
        rv = opts->validate(data, &chk, opts->validate_arg);
        if (rv != CM_OK) {
            if (err != NULL && errlen > 0 && err[0] == '\0') {
                cm_errf(rv, err, errlen, "%s: %s", name, cm_strerror(rv));
            }
            goto fail;
        }
    }

    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    *out = data;
    return CM_OK;

fail:
    cm_config_free(schema, data);
    if (have_doc) {
        yaml_document_delete(&doc);
    }
    if (have_parser) {
        yaml_parser_delete(&parser);
    }
    return rv;
}

cm_err cm_config_load(const char *path, const cyaml_schema_value_t *schema,
                      const cm_config_opts *opts, void **out, char *err, size_t errlen) {
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (out != NULL) {
        *out = NULL;
    }
    if (path == NULL || out == NULL) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "cm_config_load: no path given");
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return cm_errf(CM_ERR_IO, err, errlen, "%s: cannot open config file: %s", path,
                       strerror(errno));
    }
    /* Read at most one byte past the limit, so an oversized file is detected without reading
     * all of it (and a FIFO or /dev/zero cannot make us read forever). */
    char *buf = malloc(CM_CONFIG_MAX_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        return cm_errf(CM_ERR_NOMEM, err, errlen, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, CM_CONFIG_MAX_BYTES + 1, f);
    int read_err = ferror(f);
    int saved_errno = errno;
    fclose(f);
    cm_err rv;
    if (read_err) {
        rv = cm_errf(CM_ERR_IO, err, errlen, "%s: cannot read config file: %s", path,
                     strerror(saved_errno));
    } else if (n > CM_CONFIG_MAX_BYTES) {
        rv = cm_errf(CM_ERR_LIMIT, err, errlen,
                     "%s: file is larger than the %u bytes allowed for a config", path,
                     CM_CONFIG_MAX_BYTES);
    } else {
        rv = cm_config_load_string(path, buf, n, schema, opts, out, err, errlen);
    }
    free(buf);
    return rv;
}

/* locate follows a dotted path from the root; *found_exact tells whether it got all the way.
 * Returns the deepest node reached (the root when nothing matched). */
static const yaml_node_t *locate(yaml_document_t *doc, const char *key_path, int *found_exact) {
    const yaml_node_t *n = yaml_document_get_root_node(doc);
    *found_exact = 0;
    if (n == NULL) {
        return NULL;
    }
    const char *p = key_path;
    while (*p != '\0') {
        size_t seg = strcspn(p, ".");
        const yaml_node_t *next = NULL;
        if (n->type == YAML_MAPPING_NODE) {
            for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < n->data.mapping.pairs.top;
                 q++) {
                yaml_node_t *k = yaml_document_get_node(doc, q->key);
                if (k != NULL && k->type == YAML_SCALAR_NODE && k->data.scalar.length == seg &&
                    memcmp(k->data.scalar.value, p, seg) == 0) {
                    next = yaml_document_get_node(doc, q->value);
                    break;
                }
            }
        } else if (n->type == YAML_SEQUENCE_NODE) {
            char idx[24];
            if (seg > 0 && seg < sizeof idx) {
                memcpy(idx, p, seg);
                idx[seg] = '\0';
                uint64_t i;
                size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
                if (parse_u64(idx, &i) && i < count) {
                    next = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
                }
            }
        }
        if (next == NULL) {
            return n;
        }
        n = next;
        p += seg;
        if (*p == '.') {
            p++;
        }
    }
    *found_exact = 1;
    return n;
}

cm_err cm_config_reject(cm_config_check *chk, const char *key_path, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (chk == NULL) {
        return CM_ERR_CONFIG;
    }
    if (key_path == NULL) {
        key_path = "";
    }
    int exact = 0;
    const yaml_node_t *n = locate(chk->doc, key_path, &exact);
    if (n == NULL) {
        return cm_errf(CM_ERR_CONFIG, chk->err, chk->errlen, "%s: '%s' %s", chk->name, key_path,
                       msg);
    }
    if (key_path[0] == '\0') {
        return cm_errf(CM_ERR_CONFIG, chk->err, chk->errlen, "%s:%zu:%zu: %s", chk->name,
                       n->start_mark.line + 1, n->start_mark.column + 1, msg);
    }
    return cm_errf(CM_ERR_CONFIG, chk->err, chk->errlen, "%s:%zu:%zu: '%s' %s", chk->name,
                   n->start_mark.line + 1, n->start_mark.column + 1, key_path, msg);
}

cm_err cm_config_parse_bool(const char *s, int *out) {
    if (s == NULL || out == NULL) {
        return CM_ERR_INVALID;
    }
    if (strcmp(s, "true") == 0) {
        *out = 1;
        return CM_OK;
    }
    if (strcmp(s, "false") == 0) {
        *out = 0;
        return CM_OK;
    }
    return CM_ERR_INVALID;
}
