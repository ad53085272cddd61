/*
 * wk_json_schema: JSON Schema -> grammar rule text (see json_schema.h for the subset and the
 * output format). Regex patterns are translated in json_schema_regex.c.
 *
 * One recursive pass over the schema (jansson) writes rules into a bounded text buffer. Each
 * schema node becomes a grammar expression; objects and arrays get rules of their own named
 * <prefix>sN, $ref targets get one rule each (memoized by JSON pointer, which is what makes
 * recursive schemas finite). Shared primitives (string, number, any value, ...) are written
 * once at the end.
 */
#include "json_schema.h"
#include "json_schema_impl.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INT_DIGITS_MAX 16
#define INT_ABS_MAX 9999999999999999LL /* 16 digits: the integer rule's bound */
#define MAX_ITEMS 1000

/* ---- text buffers ----------------------------------------------------------------------- */

void js_buf_add(js_buf *b, const char *s, size_t n) {
    if (b->failed)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1)
            nc *= 2;
        if (nc > JS_TEXT_MAX) {
            b->failed = true;
            b->limit = true;
            return;
        }
        char *p = realloc(b->p, nc);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void js_buf_str(js_buf *b, const char *s) {
    js_buf_add(b, s, strlen(s));
}

void js_buf_fmt(js_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->failed = true;
        return;
    }
    js_buf_add(b, tmp, (size_t)n);
}

/* js_buf_literal writes bytes as a grammar literal "..." (escaping what the grammar needs). */
void js_buf_literal(js_buf *b, const char *s, size_t n) {
    js_buf_add(b, "\"", 1);
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            js_buf_add(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            js_buf_fmt(b, "\\x%02X", c);
        } else {
            js_buf_add(b, (const char *)&c, 1);
        }
    }
    js_buf_add(b, "\"", 1);
}

/* ---- errors ----------------------------------------------------------------------------- */

void js_fail(js_gen *g, cm_err rv, const char *fmt, ...) {
    if (g->rv != CM_OK)
        return;
    g->rv = rv;
    if (g->err == NULL || g->errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, g->errlen, fmt, ap);
    va_end(ap);
}

static const char *ptr_or_root(const char *ptr) {
    return ptr[0] != '\0' ? ptr : "/";
}

/* child_ptr builds ptr + "/" + escaped key into out (cap bytes); false when too long. */
static bool child_ptr(const char *ptr, const char *key, char *out, size_t cap) {
    size_t n = strlen(ptr);
    if (n + 2 >= cap)
        return false;
    memcpy(out, ptr, n);
    out[n++] = '/';
    for (const char *k = key; *k != '\0'; k++) {
        if (n + 3 >= cap)
            return false;
        if (*k == '~') {
            out[n++] = '~';
            out[n++] = '0';
        } else if (*k == '/') {
            out[n++] = '~';
            out[n++] = '1';
        } else {
            out[n++] = *k;
        }
    }
    out[n] = '\0';
    return true;
}

/* ---- JSON values as literal text -------------------------------------------------------- */

/* The shortest %g form of x that reads back as x. */
static void real_text(double x, char *out, size_t cap) {
    for (int p = 1; p <= 17; p++) {
        snprintf(out, cap, "%.*g", p, x);
        if (strtod(out, NULL) == x)
            return;
    }
}

/* value_text writes v as compact JSON (object keys in their order) into b. */
static void value_text(js_buf *b, const json_t *v) {
    char tmp[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        bool first = true;
        js_buf_add(b, "{", 1);
        json_object_foreach((json_t *)v, key, val) {
            if (!first)
                js_buf_add(b, ",", 1);
            first = false;
            json_t *ks = json_string(key);
            char *kt = ks != NULL ? json_dumps(ks, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
            if (kt == NULL)
                b->failed = true;
            else
                js_buf_str(b, kt);
            free(kt);
            json_decref(ks);
            js_buf_add(b, ":", 1);
            value_text(b, val);
        }
        js_buf_add(b, "}", 1);
        return;
    }
    case JSON_ARRAY:
        js_buf_add(b, "[", 1);
        for (size_t k = 0; k < json_array_size(v); k++) {
            if (k > 0)
                js_buf_add(b, ",", 1);
            value_text(b, json_array_get(v, k));
        }
        js_buf_add(b, "]", 1);
        return;
    case JSON_REAL:
        real_text(json_real_value(v), tmp, sizeof(tmp));
        js_buf_str(b, tmp);
        return;
    case JSON_INTEGER:
        snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        js_buf_str(b, tmp);
        return;
    default: {
        char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (t == NULL) {
            b->failed = true;
            return;
        }
        js_buf_str(b, t);
        free(t);
        return;
    }
    }
}

/* literal_of_value appends the grammar literal matching v's compact JSON text. */
static void literal_of_value(js_gen *g, js_buf *expr, const json_t *v) {
    js_buf t = {0};
    value_text(&t, v);
    if (t.failed) {
        js_fail(g, t.limit ? CM_ERR_LIMIT : CM_ERR_NOMEM, "JSON Schema: value too large");
    } else {
        js_buf_literal(expr, t.p, t.n);
    }
    free(t.p);
}

/* ---- rules ------------------------------------------------------------------------------ */

/* new_rule_name writes "<prefix>s<N>" into name. */
static bool new_rule_name(js_gen *g, char *name, size_t cap) {
    if (g->n_rules >= WK_JSON_SCHEMA_MAX_RULES) {
        js_fail(g, CM_ERR_LIMIT, "JSON Schema: more than %u generated rules",
                WK_JSON_SCHEMA_MAX_RULES);
        return false;
    }
    snprintf(name, cap, "%ss%u", g->prefix, g->n_rules++);
    return true;
}

static void add_rule(js_gen *g, const char *name, const js_buf *body) {
    js_buf_str(&g->out, name);
    js_buf_str(&g->out, " ::= ");
    js_buf_add(&g->out, body->p != NULL ? body->p : "", body->n);
    js_buf_str(&g->out, "\n");
}

static void gen(js_gen *g, const json_t *s, const char *ptr, js_buf *expr);

static const char *const annotations[] = {
    "description", "title",      "default",  "examples",  "$schema", "$id",
    "$comment",    "deprecated", "readOnly", "writeOnly", "$defs",   "definitions",
};

static bool is_annotation(const char *key) {
    for (size_t k = 0; k < sizeof(annotations) / sizeof(annotations[0]); k++)
        if (strcmp(key, annotations[k]) == 0)
            return true;
    return false;
}

static const char *const supported[] = {
    "type",    "properties",       "required",         "additionalProperties",
    "items",   "minItems",         "maxItems",         "enum",
    "const",   "pattern",          "format",           "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf",
    "$ref",    "minLength",        "maxLength",
};

static bool is_supported(const char *key) {
    if (is_annotation(key))
        return true;
    for (size_t k = 0; k < sizeof(supported) / sizeof(supported[0]); k++)
        if (strcmp(key, supported[k]) == 0)
            return true;
    return false;
}

/* get_count reads a non-negative integer keyword (absent: def); false after an error. */
static bool get_count(js_gen *g, const json_t *s, const char *key, const char *ptr, json_int_t def,
                      json_int_t *out) {
    const json_t *v = json_object_get(s, key);
    *out = def;
    if (v == NULL)
        return true;
    double d = json_is_integer(v) ? (double)json_integer_value(v)
               : json_is_real(v)  ? json_real_value(v)
                                  : -1;
    if (d < 0 || d != floor(d)) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: %s must be a non-negative integer at %s", key,
                ptr_or_root(ptr));
        return false;
    }
    if (d > MAX_ITEMS) {
        js_fail(g, CM_ERR_LIMIT, "JSON Schema: %s above %d at %s", key, MAX_ITEMS,
                ptr_or_root(ptr));
        return false;
    }
    *out = (json_int_t)d;
    return true;
}

/* gen_ref: a rule per $ref target, memoized by pointer. */
static void gen_ref(js_gen *g, const char *ref, const char *ptr, js_buf *expr) {
    if (ref[0] != '#') {
        js_fail(g, CM_ERR_UNSUPPORTED,
                "unsupported JSON Schema $ref '%.200s' at %s (only local references '#...')", ref,
                ptr_or_root(ptr));
        return;
    }
    for (uint32_t k = 0; k < g->n_refs; k++) {
        if (strcmp(g->refs[k].ref, ref) == 0) {
            js_buf_str(expr, g->refs[k].rule);
            return;
        }
    }
    /* Resolve the JSON pointer after '#'. */
    const json_t *target = g->root;
    const char *p = ref + 1;
    char tok[256];
    while (*p != '\0' && target != NULL) {
        if (*p != '/') {
            target = NULL;
            break;
        }
        p++;
        size_t n = 0;
        while (*p != '\0' && *p != '/' && n + 1 < sizeof(tok)) {
            if (p[0] == '~' && p[1] == '1') {
                tok[n++] = '/';
                p += 2;
            } else if (p[0] == '~' && p[1] == '0') {
                tok[n++] = '~';
                p += 2;
            } else {
                tok[n++] = *p++;
            }
        }
        tok[n] = '\0';
        if (json_is_object(target)) {
            target = json_object_get(target, tok);
        } else if (json_is_array(target)) {
            char *end;
            long idx = strtol(tok, &end, 10);
            target =
                (*end == '\0' && n > 0 && idx >= 0) ? json_array_get(target, (size_t)idx) : NULL;
        } else {
            target = NULL;
        }
    }
    if (target == NULL) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: $ref '%.200s' at %s does not resolve", ref,
                ptr_or_root(ptr));
        return;
    }
    if (g->n_refs >= JS_MAX_REFS) {
        js_fail(g, CM_ERR_LIMIT, "JSON Schema: more than %d distinct $ref targets", JS_MAX_REFS);
        return;
    }
    js_ref *r = &g->refs[g->n_refs];
    r->ref = strdup(ref);
    if (r->ref == NULL || !new_rule_name(g, r->rule, sizeof(r->rule))) {
        free(r->ref);
        js_fail(g, CM_ERR_NOMEM, "out of memory");
        return;
    }
    g->n_refs++;
    js_buf_str(expr, r->rule);
    /* The target's JSON pointer for messages is the ref itself without '#'. */
    char rule[sizeof(r->rule)];
    memcpy(rule, r->rule, sizeof(rule));
    js_buf body = {0};
    gen(g, target, ref + 1, &body);
    if (body.failed)
        js_fail(g, body.limit ? CM_ERR_LIMIT : CM_ERR_NOMEM, "JSON Schema: grammar too large");
    add_rule(g, rule, &body);
    free(body.p);
}

/* gen_object: properties in order; required ones must appear, the others may be left out. */
static void gen_object(js_gen *g, const json_t *s, const char *ptr, js_buf *expr) {
    const json_t *props = json_object_get(s, "properties");
    const json_t *req = json_object_get(s, "required");
    const json_t *addl = json_object_get(s, "additionalProperties");
    if (props != NULL && !json_is_object(props)) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: properties must be an object at %s",
                ptr_or_root(ptr));
        return;
    }
    if (req != NULL && !json_is_array(req)) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: required must be an array at %s",
                ptr_or_root(ptr));
        return;
    }
    if (addl != NULL && !json_is_boolean(addl) && !json_is_object(addl)) {
        js_fail(g, CM_ERR_INVALID,
                "JSON Schema: additionalProperties must be a boolean or a schema at %s",
                ptr_or_root(ptr));
        return;
    }
    size_t n = props != NULL ? json_object_size(props) : 0;
    for (size_t k = 0; req != NULL && k < json_array_size(req); k++) {
        const json_t *r = json_array_get(req, k);
        if (!json_is_string(r) || props == NULL ||
            json_object_get(props, json_string_value(r)) == NULL) {
            js_fail(g, CM_ERR_INVALID,
                    "JSON Schema: required names '%.100s', which is not in properties at %s",
                    json_is_string(r) ? json_string_value(r) : "?", ptr_or_root(ptr));
            return;
        }
    }
    if (n == 0) {
        /* No declared properties: any object, unless extra ones are forbidden. */
        if (json_is_false(addl))
            js_buf_str(expr, "\"{}\"");
        else
            js_buf_fmt(expr, "%sobject", g->prefix);
        return;
    }
    /* Member expressions kv_i = "\"name\"" ":" ws value_i, and which are required. */
    js_buf *kv = calloc(n, sizeof(js_buf));
    bool *required = calloc(n, sizeof(bool));
    if (kv == NULL || required == NULL) {
        free(kv);
        free(required);
        js_fail(g, CM_ERR_NOMEM, "out of memory");
        return;
    }
    const char *key;
    json_t *val;
    size_t i = 0;
    bool all_required = true;
    json_object_foreach((json_t *)props, key, val) {
        for (size_t k = 0; req != NULL && k < json_array_size(req); k++)
            if (strcmp(json_string_value(json_array_get(req, k)), key) == 0)
                required[i] = true;
        all_required = all_required && required[i];
        json_t *ks = json_string(key);
        char *kt = ks != NULL ? json_dumps(ks, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(ks);
        if (kt == NULL) {
            js_fail(g, CM_ERR_NOMEM, "out of memory");
            break;
        }
        js_buf_literal(&kv[i], kt, strlen(kt));
        free(kt);
        js_buf_fmt(&kv[i], " \":\" %sws ", g->prefix);
        char cp[JS_PTR_MAX], cp2[JS_PTR_MAX];
        if (!child_ptr(ptr, "properties", cp, sizeof(cp)) ||
            !child_ptr(cp, key, cp2, sizeof(cp2))) {
            js_fail(g, CM_ERR_LIMIT, "JSON Schema: nesting too deep");
            break;
        }
        gen(g, val, cp2, &kv[i]);
        i++;
    }
    char name[JS_NAME_MAX];
    if (g->rv == CM_OK && new_rule_name(g, name, sizeof(name))) {
        js_buf body = {0};
        if (all_required) {
            js_buf_str(&body, "\"{\" ");
            for (size_t k = 0; k < n; k++) {
                if (k > 0)
                    js_buf_fmt(&body, " \",\" %sws ", g->prefix);
                js_buf_add(&body, kv[k].p, kv[k].n);
            }
            js_buf_str(&body, " \"}\"");
            add_rule(g, name, &body);
        } else {
            /* name-fK: members from K on, none written yet; name-rK: from K on, after one. */
            js_buf_fmt(&body, "\"{\" %s-f0 \"}\"", name);
            add_rule(g, name, &body);
            for (size_t k = 0; k <= n; k++) {
                char fn[JS_NAME_MAX + 16], rn[JS_NAME_MAX + 16];
                snprintf(fn, sizeof(fn), "%s-f%zu", name, k);
                snprintf(rn, sizeof(rn), "%s-r%zu", name, k);
                js_buf f = {0}, r = {0};
                if (k == n) {
                    js_buf_str(&f, "\"\"");
                    js_buf_str(&r, "\"\"");
                } else {
                    js_buf_add(&f, kv[k].p, kv[k].n);
                    js_buf_fmt(&f, " %s-r%zu", name, k + 1);
                    js_buf_fmt(&r, "\",\" %sws ", g->prefix);
                    js_buf_add(&r, kv[k].p, kv[k].n);
                    js_buf_fmt(&r, " %s-r%zu", name, k + 1);
                    if (!required[k]) {
                        js_buf_fmt(&f, " | %s-f%zu", name, k + 1);
                        js_buf_fmt(&r, " | %s-r%zu", name, k + 1);
                    }
                }
                /* f_n is only reachable when every property is optional ({} is valid). */
                add_rule(g, fn, &f);
                add_rule(g, rn, &r);
                if (f.failed || r.failed)
                    body.failed = true;
                free(f.p);
                free(r.p);
                if (g->n_rules + 2 > WK_JSON_SCHEMA_MAX_RULES) {
                    js_fail(g, CM_ERR_LIMIT, "JSON Schema: more than %u generated rules",
                            WK_JSON_SCHEMA_MAX_RULES);
                    break;
                }
                g->n_rules += 2;
            }
        }
        if (body.failed)
            js_fail(g, CM_ERR_NOMEM, "JSON Schema: grammar too large");
        free(body.p);
        js_buf_str(expr, name);
    }
    for (size_t k = 0; k < n; k++)
        free(kv[k].p);
    free(kv);
    free(required);
}

static void gen_array(js_gen *g, const json_t *s, const char *ptr, js_buf *expr) {
    json_int_t min, max;
    if (!get_count(g, s, "minItems", ptr, 0, &min) || !get_count(g, s, "maxItems", ptr, -1, &max))
        return;
    if (max >= 0 && max < min) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: maxItems < minItems at %s", ptr_or_root(ptr));
        return;
    }
    const json_t *items = json_object_get(s, "items");
    js_buf item = {0};
    if (items == NULL) {
        js_buf_fmt(&item, "%svalue", g->prefix);
    } else if (json_is_object(items) || json_is_boolean(items)) {
        char cp[JS_PTR_MAX];
        if (!child_ptr(ptr, "items", cp, sizeof(cp))) {
            js_fail(g, CM_ERR_LIMIT, "JSON Schema: nesting too deep");
            free(item.p);
            return;
        }
        gen(g, items, cp, &item);
    } else {
        js_fail(g, CM_ERR_UNSUPPORTED,
                "unsupported JSON Schema keyword 'items' as an array (tuple) at %s",
                ptr_or_root(ptr));
        free(item.p);
        return;
    }
    char name[JS_NAME_MAX];
    if (g->rv == CM_OK && new_rule_name(g, name, sizeof(name))) {
        js_buf body = {0};
        if (max == 0) {
            js_buf_str(&body, "\"[]\"");
        } else {
            js_buf_str(&body, "\"[\" ");
            if (min == 0)
                js_buf_str(&body, "( ");
            js_buf_add(&body, item.p, item.n);
            js_buf_fmt(&body, " ( \",\" %sws ", g->prefix);
            js_buf_add(&body, item.p, item.n);
            json_int_t lo = min > 0 ? min - 1 : 0;
            if (max < 0)
                js_buf_fmt(&body, " ){%" JSON_INTEGER_FORMAT ",}", lo);
            else
                js_buf_fmt(&body, " ){%" JSON_INTEGER_FORMAT ",%" JSON_INTEGER_FORMAT "}", lo,
                           max - 1);
            if (min == 0)
                js_buf_str(&body, " )?");
            js_buf_str(&body, " \"]\"");
        }
        add_rule(g, name, &body);
        free(body.p);
        js_buf_str(expr, name);
    }
    free(item.p);
}

/* ---- numbers ---------------------------------------------------------------------------- */

/* bound reads minimum/maximum/exclusive* as a double; *has false when absent. */
static bool read_bound(js_gen *g, const json_t *s, const char *key, const char *ptr, bool *has,
                       double *out) {
    const json_t *v = json_object_get(s, key);
    *has = false;
    if (v == NULL)
        return true;
    if (json_is_boolean(v)) {
        js_fail(g, CM_ERR_UNSUPPORTED,
                "unsupported JSON Schema keyword '%s' as a boolean (draft 4) at %s", key,
                ptr_or_root(ptr));
        return false;
    }
    if (!json_is_number(v)) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: %s must be a number at %s", key, ptr_or_root(ptr));
        return false;
    }
    *has = true;
    *out = json_number_value(v);
    return true;
}

/* The four numeric bounds of a schema. */
typedef struct bounds {
    bool h1, h2, h3, h4; /* minimum, maximum, exclusiveMinimum, exclusiveMaximum present */
    double mn, mx, emn, emx;
} bounds;

static bool read_bounds(js_gen *g, const json_t *s, const char *ptr, bounds *b) {
    return read_bound(g, s, "minimum", ptr, &b->h1, &b->mn) &&
           read_bound(g, s, "maximum", ptr, &b->h2, &b->mx) &&
           read_bound(g, s, "exclusiveMinimum", ptr, &b->h3, &b->emn) &&
           read_bound(g, s, "exclusiveMaximum", ptr, &b->h4, &b->emx);
}

static void gen_integer(js_gen *g, const json_t *s, const char *ptr, js_buf *expr) {
    bounds b;
    if (!read_bounds(g, s, ptr, &b))
        return;
    bool h1 = b.h1, h2 = b.h2, h3 = b.h3, h4 = b.h4;
    double mn = b.mn, mx = b.mx, emn = b.emn, emx = b.emx;
    if (!h1 && !h2 && !h3 && !h4) {
        js_buf_fmt(expr, "%sinteger", g->prefix);
        return;
    }
    double lo = -(double)INT_ABS_MAX, hi = (double)INT_ABS_MAX;
    if (h1)
        lo = fmax(lo, ceil(mn));
    if (h3)
        lo = fmax(lo, floor(emn) + 1);
    if (h2)
        hi = fmin(hi, floor(mx));
    if (h4)
        hi = fmin(hi, ceil(emx) - 1);
    if (lo > hi) {
        js_fail(g, CM_ERR_INVALID,
                "JSON Schema: no integer within the bounds at %s (integers are limited to %d "
                "digits)",
                ptr_or_root(ptr), INT_DIGITS_MAX);
        return;
    }
    js_integer_range(g, (long long)lo, (long long)hi, expr);
}

static void gen_number(js_gen *g, const json_t *s, const char *ptr, js_buf *expr) {
    bounds b;
    if (!read_bounds(g, s, ptr, &b))
        return;
    if (!b.h1 && !b.h2 && !b.h3 && !b.h4) {
        js_buf_fmt(expr, "%snumber", g->prefix);
        return;
    }
    /* The tighter of inclusive and exclusive bounds; a non-integer bound is rounded inward to
     * an integer (inclusive): the output then stays within the schema's range, a sliver of
     * it may be unreachable. Beyond 16 digits a bound is no constraint on what we write. */
    js_bound lo = {false, false, 0}, hi = {false, false, 0};
    const double lim = (double)INT_ABS_MAX;
    if (b.h1 && b.mn > -lim) {
        lo.has = true;
        lo.v = (long long)ceil(b.mn);
    }
    if (b.h3 && b.emn > -lim && (!lo.has || b.emn >= (double)lo.v)) {
        lo.has = true;
        lo.exclusive = b.emn == floor(b.emn);
        lo.v = (long long)ceil(b.emn);
    }
    if (b.h2 && b.mx < lim) {
        hi.has = true;
        hi.v = (long long)floor(b.mx);
    }
    if (b.h4 && b.emx < lim && (!hi.has || b.emx <= (double)hi.v)) {
        hi.has = true;
        hi.exclusive = b.emx == floor(b.emx);
        hi.v = (long long)floor(b.emx);
    }
    if ((lo.has && lo.v > INT_ABS_MAX) || (hi.has && hi.v < -INT_ABS_MAX) ||
        (lo.has && hi.has && (lo.v > hi.v || (lo.v == hi.v && (lo.exclusive || hi.exclusive))))) {
        js_fail(g, CM_ERR_INVALID,
                "JSON Schema: no number within the bounds at %s (integer bounds are rounded "
                "inward; numbers are limited to 16 integer digits)",
                ptr_or_root(ptr));
        return;
    }
    js_number_range(lo, hi, expr);
}

/* ---- strings ---------------------------------------------------------------------------- */

static void gen_string(js_gen *g, const json_t *s, const char *ptr, js_buf *expr) {
    const json_t *pattern = json_object_get(s, "pattern");
    const json_t *format = json_object_get(s, "format");
    json_int_t minl, maxl;
    if (!get_count(g, s, "minLength", ptr, 0, &minl) ||
        !get_count(g, s, "maxLength", ptr, -1, &maxl))
        return;
    int n_constraints = (pattern != NULL) + (format != NULL) + (minl > 0 || maxl >= 0);
    if (n_constraints > 1) {
        js_fail(g, CM_ERR_UNSUPPORTED,
                "unsupported JSON Schema combination of pattern, format and length at %s",
                ptr_or_root(ptr));
        return;
    }
    if (pattern != NULL) {
        if (!json_is_string(pattern)) {
            js_fail(g, CM_ERR_INVALID, "JSON Schema: pattern must be a string at %s",
                    ptr_or_root(ptr));
            return;
        }
        js_buf_str(expr, "( \"\\\"\" ");
        js_regex_to_grammar(g, json_string_value(pattern), ptr, expr);
        js_buf_str(expr, " \"\\\"\" )");
        return;
    }
    if (format != NULL) {
        static const char *const formats[] = {"date", "time", "date-time", "uuid", "email", "ipv4"};
        const char *f = json_string_value(format);
        for (size_t k = 0; f != NULL && k < sizeof(formats) / sizeof(formats[0]); k++) {
            if (strcmp(f, formats[k]) == 0) {
                js_buf_fmt(expr, "( \"\\\"\" %sfmt-%s \"\\\"\" )", g->prefix, f);
                return;
            }
        }
        js_fail(g, CM_ERR_UNSUPPORTED, "unsupported JSON Schema format '%.64s' at %s",
                f != NULL ? f : "?", ptr_or_root(ptr));
        return;
    }
    if (minl > 0 || maxl >= 0) {
        if (maxl >= 0 && maxl < minl) {
            js_fail(g, CM_ERR_INVALID, "JSON Schema: maxLength < minLength at %s",
                    ptr_or_root(ptr));
            return;
        }
        if (maxl >= 0)
            js_buf_fmt(expr,
                       "( \"\\\"\" %schar{%" JSON_INTEGER_FORMAT ",%" JSON_INTEGER_FORMAT
                       "} \"\\\"\" )",
                       g->prefix, minl, maxl);
        else
            js_buf_fmt(expr, "( \"\\\"\" %schar{%" JSON_INTEGER_FORMAT ",} \"\\\"\" )", g->prefix,
                       minl);
        return;
    }
    js_buf_fmt(expr, "%sstring", g->prefix);
}

/* gen_type writes the expression for one type name. */
static void gen_type(js_gen *g, const json_t *s, const char *type, const char *ptr, js_buf *expr) {
    if (strcmp(type, "object") == 0)
        gen_object(g, s, ptr, expr);
    else if (strcmp(type, "array") == 0)
        gen_array(g, s, ptr, expr);
    else if (strcmp(type, "string") == 0)
        gen_string(g, s, ptr, expr);
    else if (strcmp(type, "integer") == 0)
        gen_integer(g, s, ptr, expr);
    else if (strcmp(type, "number") == 0)
        gen_number(g, s, ptr, expr);
    else if (strcmp(type, "boolean") == 0)
        js_buf_str(expr, "( \"true\" | \"false\" )");
    else if (strcmp(type, "null") == 0)
        js_buf_str(expr, "\"null\"");
    else
        js_fail(g, CM_ERR_INVALID, "JSON Schema: unknown type '%.64s' at %s", type,
                ptr_or_root(ptr));
}

static void gen(js_gen *g, const json_t *s, const char *ptr, js_buf *expr) {
    if (g->rv != CM_OK)
        return;
    if (g->depth >= WK_JSON_SCHEMA_MAX_DEPTH) {
        js_fail(g, CM_ERR_LIMIT, "JSON Schema: nested deeper than %u at %s",
                WK_JSON_SCHEMA_MAX_DEPTH, ptr_or_root(ptr));
        return;
    }
    if (json_is_true(s)) {
        js_buf_fmt(expr, "%svalue", g->prefix);
        return;
    }
    if (!json_is_object(s)) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: a schema must be an object at %s",
                ptr_or_root(ptr));
        return;
    }
    const char *key;
    json_t *val;
    bool has_constraint = false;
    json_object_foreach((json_t *)s, key, val) {
        if (!is_supported(key)) {
            js_fail(g, CM_ERR_UNSUPPORTED, "unsupported JSON Schema keyword '%.64s' at %s", key,
                    ptr_or_root(ptr));
            return;
        }
        if (!is_annotation(key))
            has_constraint = true;
    }
    g->depth++;
    const json_t *ref = json_object_get(s, "$ref");
    const json_t *any_of = json_object_get(s, "anyOf");
    const json_t *en = json_object_get(s, "enum");
    const json_t *cn = json_object_get(s, "const");
    const json_t *type = json_object_get(s, "type");
    int n_special = (ref != NULL) + (any_of != NULL) + (en != NULL) + (cn != NULL);
    if (n_special > 1) {
        js_fail(g, CM_ERR_UNSUPPORTED,
                "unsupported JSON Schema combination of $ref, anyOf, enum and const at %s",
                ptr_or_root(ptr));
    } else if (ref != NULL) {
        if (!json_is_string(ref))
            js_fail(g, CM_ERR_INVALID, "JSON Schema: $ref must be a string at %s",
                    ptr_or_root(ptr));
        else
            gen_ref(g, json_string_value(ref), ptr, expr);
    } else if (any_of != NULL) {
        if (!json_is_array(any_of) || json_array_size(any_of) == 0) {
            js_fail(g, CM_ERR_INVALID, "JSON Schema: anyOf must be a non-empty array at %s",
                    ptr_or_root(ptr));
        } else {
            js_buf_str(expr, "( ");
            for (size_t k = 0; k < json_array_size(any_of); k++) {
                char cp[JS_PTR_MAX], cp2[JS_PTR_MAX], idx[24];
                snprintf(idx, sizeof(idx), "%zu", k);
                if (!child_ptr(ptr, "anyOf", cp, sizeof(cp)) ||
                    !child_ptr(cp, idx, cp2, sizeof(cp2))) {
                    js_fail(g, CM_ERR_LIMIT, "JSON Schema: nesting too deep");
                    break;
                }
                if (k > 0)
                    js_buf_str(expr, " | ");
                gen(g, json_array_get(any_of, k), cp2, expr);
            }
            js_buf_str(expr, " )");
        }
    } else if (en != NULL) {
        if (!json_is_array(en) || json_array_size(en) == 0) {
            js_fail(g, CM_ERR_INVALID, "JSON Schema: enum must be a non-empty array at %s",
                    ptr_or_root(ptr));
        } else {
            js_buf_str(expr, "( ");
            for (size_t k = 0; k < json_array_size(en); k++) {
                if (k > 0)
                    js_buf_str(expr, " | ");
                literal_of_value(g, expr, json_array_get(en, k));
            }
            js_buf_str(expr, " )");
        }
    } else if (cn != NULL) {
        literal_of_value(g, expr, cn);
    } else if (type != NULL) {
        if (json_is_string(type)) {
            gen_type(g, s, json_string_value(type), ptr, expr);
        } else if (json_is_array(type) && json_array_size(type) > 0) {
            js_buf_str(expr, "( ");
            for (size_t k = 0; k < json_array_size(type); k++) {
                const json_t *t = json_array_get(type, k);
                if (!json_is_string(t)) {
                    js_fail(g, CM_ERR_INVALID, "JSON Schema: type names must be strings at %s",
                            ptr_or_root(ptr));
                    break;
                }
                if (k > 0)
                    js_buf_str(expr, " | ");
                gen_type(g, s, json_string_value(t), ptr, expr);
            }
            js_buf_str(expr, " )");
        } else {
            js_fail(g, CM_ERR_INVALID, "JSON Schema: type must be a name or a non-empty list at %s",
                    ptr_or_root(ptr));
        }
    } else if (json_object_get(s, "properties") != NULL) {
        gen_object(g, s, ptr, expr);
    } else if (json_object_get(s, "items") != NULL) {
        gen_array(g, s, ptr, expr);
    } else if (!has_constraint) {
        js_buf_fmt(expr, "%svalue", g->prefix);
    } else {
        js_fail(g, CM_ERR_UNSUPPORTED,
                "unsupported JSON Schema: constraints without a type at %s (give \"type\")",
                ptr_or_root(ptr));
    }
    g->depth--;
}

/* ---- primitives ------------------------------------------------------------------------- */

static void primitives(js_buf *b, const char *p) {
    js_buf_fmt(b, "%sws ::= \" \"?\n", p);
    js_buf_fmt(b,
               "%svalue ::= %sobject | %sarray | %sstring | %snumber | \"true\" | \"false\" | "
               "\"null\"\n",
               p, p, p, p, p);
    js_buf_fmt(b, "%sobject ::= \"{\" ( %smember ( \",\" %sws %smember )* )? \"}\"\n", p, p, p, p);
    js_buf_fmt(b, "%smember ::= %sstring \":\" %sws %svalue\n", p, p, p, p);
    js_buf_fmt(b, "%sarray ::= \"[\" ( %svalue ( \",\" %sws %svalue )* )? \"]\"\n", p, p, p, p);
    js_buf_fmt(b, "%sstring ::= \"\\\"\" %schar* \"\\\"\"\n", p, p);
    js_buf_fmt(b, "%schar ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" %su4 )\n", p,
               p);
    /* \u escapes: any non-surrogate, or a high surrogate followed by \u and a low one. */
    js_buf_fmt(b,
               "%su4 ::= [0-9a-cA-CefEF] %shex{3} | [dD] [0-7] %shex{2} | [dD] [89abAB] %shex{2} "
               "\"\\\\u\" [dD] [c-fC-F] %shex{2}\n",
               p, p, p, p, p);
    js_buf_fmt(b, "%shex ::= [0-9a-fA-F]\n", p);
    js_buf_fmt(b, "%sinteger ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,15} )\n", p);
    js_buf_fmt(b, "%snumber ::= \"-\"? %snumber-abs\n", p, p);
    js_buf_fmt(b,
               "%snumber-abs ::= ( \"0\" | [1-9] [0-9]{0,15} ) ( \".\" [0-9]{1,16} )? "
               "( [eE] [-+]? [0-9]{1,3} )?\n",
               p);
    js_buf_fmt(b,
               "%sfmt-date ::= [0-9]{4} \"-\" ( \"0\" [1-9] | \"1\" [0-2] ) \"-\" ( \"0\" [1-9] | "
               "[12] [0-9] | \"3\" [01] )\n",
               p);
    js_buf_fmt(b,
               "%sfmt-time ::= ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] "
               "( \".\" [0-9]{1,9} )? ( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] "
               "[0-9] )\n",
               p);
    js_buf_fmt(b, "%sfmt-date-time ::= %sfmt-date \"T\" %sfmt-time\n", p, p, p);
    js_buf_fmt(b,
               "%sfmt-uuid ::= %shex{8} \"-\" %shex{4} \"-\" %shex{4} \"-\" %shex{4} \"-\" "
               "%shex{12}\n",
               p, p, p, p, p, p);
    js_buf_fmt(b,
               "%sfmt-email ::= [a-zA-Z0-9._%%+-]{1,64} \"@\" [a-zA-Z0-9] [a-zA-Z0-9-]{0,62} "
               "( \".\" [a-zA-Z0-9] [a-zA-Z0-9-]{0,62} ){1,8}\n",
               p);
    js_buf_fmt(b, "%sfmt-ipv4 ::= %soctet \".\" %soctet \".\" %soctet \".\" %soctet\n", p, p, p, p,
               p);
    js_buf_fmt(b,
               "%soctet ::= \"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9] [0-9] | "
               "[0-9]\n",
               p);
}

static bool prefix_ok(const char *prefix) {
    size_t n = strlen(prefix);
    if (n > WK_JSON_SCHEMA_MAX_PREFIX)
        return false;
    for (size_t k = 0; k < n; k++) {
        char c = prefix[k];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

cm_err wk_json_schema_to_grammar(const char *schema_json, size_t len, const char *prefix,
                                 char **rules_out, char *err, size_t errlen) {
    *rules_out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    js_gen *g = calloc(1, sizeof(*g)); /* ~100 KB: not on the stack */
    if (g == NULL)
        return CM_ERR_NOMEM;
    g->err = err;
    g->errlen = errlen;
    if (prefix == NULL)
        prefix = "";
    if (!prefix_ok(prefix)) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: bad rule prefix");
        goto out;
    }
    g->prefix = prefix;
    if (schema_json == NULL || len > WK_JSON_SCHEMA_MAX_BYTES) {
        js_fail(g, schema_json == NULL ? CM_ERR_INVALID : CM_ERR_LIMIT,
                "JSON Schema: %zu bytes (limit %u)", len, WK_JSON_SCHEMA_MAX_BYTES);
        goto out;
    }
    json_error_t jerr;
    json_t *root = json_loadb(schema_json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        js_fail(g, CM_ERR_INVALID, "JSON Schema: not valid JSON: %s (line %d col %d)", jerr.text,
                jerr.line, jerr.column);
        goto out;
    }
    g->root = root;
    js_buf expr = {0};
    gen(g, root, "", &expr);
    if (g->rv == CM_OK && expr.failed)
        js_fail(g, expr.limit ? CM_ERR_LIMIT : CM_ERR_NOMEM, "JSON Schema: grammar too large");
    if (g->rv == CM_OK) {
        js_buf_fmt(&g->out, "%sroot ::= ", prefix);
        js_buf_add(&g->out, expr.p, expr.n);
        js_buf_str(&g->out, "\n");
        primitives(&g->out, prefix);
        if (g->out.failed)
            js_fail(g, g->out.limit ? CM_ERR_LIMIT : CM_ERR_NOMEM,
                    "JSON Schema: grammar too large");
    }
    free(expr.p);
    for (uint32_t k = 0; k < g->n_refs; k++)
        free(g->refs[k].ref);
    json_decref(root);
out:;
    cm_err rv = g->rv;
    if (rv != CM_OK)
        free(g->out.p);
    else
        *rules_out = g->out.p;
    free(g);
    return rv;
}

cm_err wk_json_object_grammar(const char *prefix, char **rules_out) {
    *rules_out = NULL;
    if (prefix == NULL)
        prefix = "";
    if (!prefix_ok(prefix))
        return CM_ERR_INVALID;
    js_buf b = {0};
    js_buf_fmt(&b, "%sroot ::= %sobject\n", prefix, prefix);
    primitives(&b, prefix);
    if (b.failed) {
        free(b.p);
        return CM_ERR_NOMEM;
    }
    *rules_out = b.p;
    return CM_OK;
}
