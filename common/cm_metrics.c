#include "cm_metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cm_series {
    cm_metric *family;
    char **values; /* n_labels strings, owned */
    /* Counter/gauge value, or histogram sum, as the bits of a double (C11 has no atomic
     * double add; we CAS on the bits). */
    _Atomic uint64_t value_bits;
    /* Histogram only: n_bounds + 1 per-bucket (non-cumulative) counts, last one is +Inf. */
    _Atomic uint64_t *buckets;
    cm_series *next;
};

struct cm_metric {
    cm_metrics *registry;
    char *name;
    char *help;
    cm_metric_type type;
    size_t n_labels;
    char *labels[CM_METRICS_MAX_LABELS];
    double *bounds; /* histogram: n_bounds upper bounds, strictly increasing */
    size_t n_bounds;
    cm_series *series_first;
    cm_series *series_last;
    size_t n_series;
    cm_metric *next;
};

struct cm_metrics {
    pthread_mutex_t mu; /* guards the family list and each family's series list */
    size_t max_series;
    cm_metric *first;
    cm_metric *last;
};

static uint64_t dbl_bits(double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static double bits_dbl(uint64_t u) {
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static char *dup_bounded(const char *s, size_t max) {
    size_t n = strnlen(s, max + 1);
    if (n > max) {
        return NULL;
    }
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n + 1);
    }
    return p;
}

static int valid_name(const char *s, int allow_colon) {
    size_t n = strnlen(s, CM_METRICS_MAX_NAME + 1);
    if (n == 0 || n > CM_METRICS_MAX_NAME) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

cm_err cm_metrics_create(size_t max_series, cm_metrics **out) {
    if (out == NULL || max_series == 0) {
        return CM_ERR_INVALID;
    }
    *out = NULL;
    cm_metrics *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return CM_ERR_NOMEM;
    }
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return CM_ERR_NOMEM;
    }
    m->max_series = max_series;
    *out = m;
    return CM_OK;
}

static void series_free(cm_series *s, size_t n_labels) {
    if (s == NULL) {
        return;
    }
    if (s->values != NULL) {
        for (size_t i = 0; i < n_labels; i++) {
            free(s->values[i]);
        }
        free(s->values);
    }
    free(s->buckets);
    free(s);
}

static void family_free(cm_metric *f) {
    if (f == NULL) {
        return;
    }
    cm_series *s = f->series_first;
    while (s != NULL) {
        cm_series *next = s->next;
        series_free(s, f->n_labels);
        s = next;
    }
    for (size_t i = 0; i < f->n_labels; i++) {
        free(f->labels[i]);
    }
    free(f->bounds);
    free(f->help);
    free(f->name);
    free(f);
}

void cm_metrics_destroy(cm_metrics *m) {
    if (m == NULL) {
        return;
    }
    cm_metric *f = m->first;
    while (f != NULL) {
        cm_metric *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* same_shape reports whether an existing family matches a new registration exactly. */
static int same_shape(const cm_metric *f, cm_metric_type type, const char *const *labels,
                      size_t n_labels, const double *bounds, size_t n_bounds) {
    if (f->type != type || f->n_labels != n_labels || f->n_bounds != n_bounds) {
        return 0;
    }
    for (size_t i = 0; i < n_labels; i++) {
        if (strcmp(f->labels[i], labels[i]) != 0) {
            return 0;
        }
    }
    for (size_t i = 0; i < n_bounds; i++) {
        if (f->bounds[i] != bounds[i]) {
            return 0;
        }
    }
    return 1;
}

static cm_err do_register(cm_metrics *m, cm_metric_type type, const char *name, const char *help,
                          const char *const *label_names, const double *bounds, size_t n_bounds,
                          cm_metric **out) {
    if (out != NULL) {
        *out = NULL;
    }
    if (m == NULL || name == NULL || help == NULL || out == NULL || !valid_name(name, 1)) {
        return CM_ERR_INVALID;
    }
    size_t n_labels = 0;
    if (label_names != NULL) {
        while (label_names[n_labels] != NULL) {
            if (n_labels == CM_METRICS_MAX_LABELS) {
                return CM_ERR_LIMIT;
            }
            const char *l = label_names[n_labels];
            if (!valid_name(l, 0) || strncmp(l, "__", 2) == 0 ||
                (type == CM_METRIC_HISTOGRAM && strcmp(l, "le") == 0)) {
                return CM_ERR_INVALID;
            }
            for (size_t j = 0; j < n_labels; j++) {
                if (strcmp(label_names[j], l) == 0) {
                    return CM_ERR_INVALID;
                }
            }
            n_labels++;
        }
    }
    if (type == CM_METRIC_HISTOGRAM) {
        if (bounds == NULL || n_bounds == 0 || n_bounds > CM_METRICS_MAX_BUCKETS) {
            return CM_ERR_INVALID;
        }
        for (size_t i = 0; i < n_bounds; i++) {
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
                return CM_ERR_INVALID;
            }
        }
    }

    cm_err rv = CM_ERR_NOMEM;
    cm_metric *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return CM_ERR_NOMEM;
    }
    f->registry = m;
    f->type = type;
    f->name = dup_bounded(name, CM_METRICS_MAX_NAME);
    f->help = dup_bounded(help, CM_METRICS_MAX_HELP);
    if (f->help == NULL && strnlen(help, CM_METRICS_MAX_HELP + 1) > CM_METRICS_MAX_HELP) {
        rv = CM_ERR_LIMIT;
        goto fail;
    }
    if (f->name == NULL || f->help == NULL) {
        goto fail;
    }
    for (size_t i = 0; i < n_labels; i++) {
        f->labels[i] = dup_bounded(label_names[i], CM_METRICS_MAX_NAME);
        if (f->labels[i] == NULL) {
            goto fail;
        }
        f->n_labels = i + 1;
    }
    if (type == CM_METRIC_HISTOGRAM) {
        f->bounds = malloc(n_bounds * sizeof *f->bounds);
        if (f->bounds == NULL) {
            goto fail;
        }
        memcpy(f->bounds, bounds, n_bounds * sizeof *f->bounds);
        f->n_bounds = n_bounds;
    }

    pthread_mutex_lock(&m->mu);
    for (cm_metric *g = m->first; g != NULL; g = g->next) {
        if (strcmp(g->name, name) == 0) {
            int same = same_shape(g, type, label_names, n_labels, bounds,
                                  type == CM_METRIC_HISTOGRAM ? n_bounds : 0);
            pthread_mutex_unlock(&m->mu);
            family_free(f);
            if (!same) {
                return CM_ERR_EXISTS;
            }
            *out = g;
            return CM_OK;
        }
    }
    if (m->last != NULL) {
        m->last->next = f;
    } else {
        m->first = f;
    }
    m->last = f;
    pthread_mutex_unlock(&m->mu);
    *out = f;
    return CM_OK;

fail:
    family_free(f);
    return rv;
}

cm_err cm_metrics_counter(cm_metrics *m, const char *name, const char *help,
                          const char *const *label_names, cm_metric **out) {
    return do_register(m, CM_METRIC_COUNTER, name, help, label_names, NULL, 0, out);
}

cm_err cm_metrics_gauge(cm_metrics *m, const char *name, const char *help,
                        const char *const *label_names, cm_metric **out) {
    return do_register(m, CM_METRIC_GAUGE, name, help, label_names, NULL, 0, out);
}

cm_err cm_metrics_histogram(cm_metrics *m, const char *name, const char *help,
                            const char *const *label_names, const double *bounds, size_t n_bounds,
                            cm_metric **out) {
    return do_register(m, CM_METRIC_HISTOGRAM, name, help, label_names, bounds, n_bounds, out);
}

cm_err cm_metrics_exp_bounds(double start, double factor, size_t n, double *out) {
    if (out == NULL || !(start > 0) || !(factor > 1) || !isfinite(start) || !isfinite(factor) ||
        n == 0 || n > CM_METRICS_MAX_BUCKETS) {
        return CM_ERR_INVALID;
    }
    double v = start;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v)) {
            return CM_ERR_INVALID;
        }
        out[i] = v;
        v *= factor;
    }
    return CM_OK;
}

static int series_matches(const cm_series *s, size_t n_labels, const char *const *values) {
    for (size_t i = 0; i < n_labels; i++) {
        if (strcmp(s->values[i], values[i]) != 0) {
            return 0;
        }
    }
    return 1;
}

cm_err cm_metric_series(cm_metric *f, const char *const *label_values, cm_series **out) {
    if (out != NULL) {
        *out = NULL;
    }
    if (f == NULL || out == NULL || (f->n_labels > 0 && label_values == NULL)) {
        return CM_ERR_INVALID;
    }
    for (size_t i = 0; i < f->n_labels; i++) {
        if (label_values[i] == NULL) {
            return CM_ERR_INVALID;
        }
        if (strnlen(label_values[i], CM_METRICS_MAX_VALUE + 1) > CM_METRICS_MAX_VALUE) {
            return CM_ERR_LIMIT;
        }
    }
    cm_metrics *m = f->registry;
    cm_err rv = CM_OK;
    pthread_mutex_lock(&m->mu);
    for (cm_series *s = f->series_first; s != NULL; s = s->next) {
        if (series_matches(s, f->n_labels, label_values)) {
            *out = s;
            goto done;
        }
    }
    if (f->n_series >= m->max_series) {
        rv = CM_ERR_LIMIT;
        goto done;
    }
    /* Allocate under the lock: series creation is rare (callers cache the pointer) and this
     * keeps two racing creators of the same label set from making two series. */
    rv = CM_ERR_NOMEM;
    cm_series *s = calloc(1, sizeof *s);
    if (s == NULL) {
        goto done;
    }
    s->family = f;
    atomic_init(&s->value_bits, dbl_bits(0.0));
    if (f->n_labels > 0) {
        s->values = calloc(f->n_labels, sizeof *s->values);
        if (s->values == NULL) {
            goto fail_series;
        }
        for (size_t i = 0; i < f->n_labels; i++) {
            s->values[i] = dup_bounded(label_values[i], CM_METRICS_MAX_VALUE);
            if (s->values[i] == NULL) {
                goto fail_series;
            }
        }
    }
    if (f->type == CM_METRIC_HISTOGRAM) {
        s->buckets = calloc(f->n_bounds + 1, sizeof *s->buckets);
        if (s->buckets == NULL) {
            goto fail_series;
        }
        for (size_t i = 0; i <= f->n_bounds; i++) {
            atomic_init(&s->buckets[i], 0);
        }
    }
    if (f->series_last != NULL) {
        f->series_last->next = s;
    } else {
        f->series_first = s;
    }
    f->series_last = s;
    f->n_series++;
    *out = s;
    rv = CM_OK;
    goto done;

fail_series:
    series_free(s, f->n_labels);
done:
    pthread_mutex_unlock(&m->mu);
    return rv;
}

static void atomic_add_double(_Atomic uint64_t *bits, double v) {
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    for (;;) {
        uint64_t new_bits = dbl_bits(bits_dbl(old) + v);
        if (atomic_compare_exchange_weak_explicit(bits, &old, new_bits, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            return;
        }
    }
}

void cm_series_inc(cm_series *s) {
    cm_series_add(s, 1.0);
}

void cm_series_add(cm_series *s, double v) {
    if (s == NULL || isnan(v)) {
        return;
    }
    switch (s->family->type) {
    case CM_METRIC_COUNTER:
        if (v < 0) {
            return; /* a counter never goes down */
        }
        atomic_add_double(&s->value_bits, v);
        return;
    case CM_METRIC_GAUGE:
        atomic_add_double(&s->value_bits, v);
        return;
    case CM_METRIC_HISTOGRAM:
        return;
    }
}

void cm_series_set(cm_series *s, double v) {
    if (s == NULL || s->family->type != CM_METRIC_GAUGE) {
        return;
    }
    atomic_store_explicit(&s->value_bits, dbl_bits(v), memory_order_relaxed);
}

void cm_series_observe(cm_series *s, double v) {
    if (s == NULL || s->family->type != CM_METRIC_HISTOGRAM || isnan(v)) {
        return;
    }
    const cm_metric *f = s->family;
    size_t i = 0;
    while (i < f->n_bounds && v > f->bounds[i]) {
        i++;
    }
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    atomic_add_double(&s->value_bits, v);
}

double cm_series_value(const cm_series *s) {
    if (s == NULL) {
        return 0;
    }
    if (s->family->type == CM_METRIC_HISTOGRAM) {
        uint64_t total = 0;
        for (size_t i = 0; i <= s->family->n_bounds; i++) {
            total += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        }
        return (double)total;
    }
    return bits_dbl(atomic_load_explicit(&s->value_bits, memory_order_relaxed));
}

/* format_double writes v as Prometheus expects: NaN, +Inf, -Inf, or the shortest of %.15g /
 * %.17g that reads back as exactly v. */
static void format_double(double v, char out[40]) {
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(out, 40, "%.15g", v);
        if (strtod(out, NULL) != v) {
            snprintf(out, 40, "%.17g", v);
        }
    }
}

/* Text after "# HELP name ": backslash and newline escaped. */
static cm_err put_help(cm_buf *out, const char *s) {
    cm_err rv = CM_OK;
    for (; *s && rv == CM_OK; s++) {
        if (*s == '\\') {
            rv = cm_buf_append(out, "\\\\", 2);
        } else if (*s == '\n') {
            rv = cm_buf_append(out, "\\n", 2);
        } else {
            rv = cm_buf_append_byte(out, *s);
        }
    }
    return rv;
}

/* A label value: backslash, double quote and newline escaped. */
static cm_err put_label_value(cm_buf *out, const char *s) {
    cm_err rv = CM_OK;
    for (; *s && rv == CM_OK; s++) {
        if (*s == '\\') {
            rv = cm_buf_append(out, "\\\\", 2);
        } else if (*s == '"') {
            rv = cm_buf_append(out, "\\\"", 2);
        } else if (*s == '\n') {
            rv = cm_buf_append(out, "\\n", 2);
        } else {
            rv = cm_buf_append_byte(out, *s);
        }
    }
    return rv;
}

/* Writes `{a="x",b="y"}` (with an extra le="..." when le != NULL); nothing when both empty. */
static cm_err put_labels(cm_buf *out, const cm_metric *f, const cm_series *s, const char *le) {
    if (f->n_labels == 0 && le == NULL) {
        return CM_OK;
    }
    cm_err rv = cm_buf_append_byte(out, '{');
    for (size_t i = 0; i < f->n_labels && rv == CM_OK; i++) {
        rv = cm_buf_printf(out, "%s%s=\"", i > 0 ? "," : "", f->labels[i]);
        if (rv == CM_OK) {
            rv = put_label_value(out, s->values[i]);
        }
        if (rv == CM_OK) {
            rv = cm_buf_append_byte(out, '"');
        }
    }
    if (rv == CM_OK && le != NULL) {
        rv = cm_buf_printf(out, "%sle=\"%s\"", f->n_labels > 0 ? "," : "", le);
    }
    if (rv == CM_OK) {
        rv = cm_buf_append_byte(out, '}');
    }
    return rv;
}

static cm_err render_series(cm_buf *out, const cm_metric *f, const cm_series *s) {
    char num[40];
    cm_err rv;
    if (f->type != CM_METRIC_HISTOGRAM) {
        format_double(bits_dbl(atomic_load_explicit(&s->value_bits, memory_order_relaxed)), num);
        rv = cm_buf_append_str(out, f->name);
        if (rv == CM_OK) {
            rv = put_labels(out, f, s, NULL);
        }
        if (rv == CM_OK) {
            rv = cm_buf_printf(out, " %s\n", num);
        }
        return rv;
    }
    /* Buckets are stored per bucket and made cumulative here; _count is the running total,
     * so it always equals the +Inf bucket even while observes race with the render. */
    uint64_t cumulative = 0;
    char le[40];
    for (size_t i = 0; i <= f->n_bounds; i++) {
        cumulative += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        if (i < f->n_bounds) {
            format_double(f->bounds[i], le);
        } else {
            strcpy(le, "+Inf");
        }
        rv = cm_buf_printf(out, "%s_bucket", f->name);
        if (rv == CM_OK) {
            rv = put_labels(out, f, s, le);
        }
        if (rv == CM_OK) {
            rv = cm_buf_printf(out, " %llu\n", (unsigned long long)cumulative);
        }
        if (rv != CM_OK) {
            return rv;
        }
    }
    format_double(bits_dbl(atomic_load_explicit(&s->value_bits, memory_order_relaxed)), num);
    rv = cm_buf_printf(out, "%s_sum", f->name);
    if (rv == CM_OK) {
        rv = put_labels(out, f, s, NULL);
    }
    if (rv == CM_OK) {
        rv = cm_buf_printf(out, " %s\n%s_count", num, f->name);
    }
    if (rv == CM_OK) {
        rv = put_labels(out, f, s, NULL);
    }
    if (rv == CM_OK) {
        rv = cm_buf_printf(out, " %llu\n", (unsigned long long)cumulative);
    }
    return rv;
}

cm_err cm_metrics_render(cm_metrics *m, cm_buf *out) {
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    if (m == NULL || out == NULL) {
        return CM_ERR_INVALID;
    }
    cm_err rv = CM_OK;
    pthread_mutex_lock(&m->mu);
    for (const cm_metric *f = m->first; f != NULL && rv == CM_OK; f = f->next) {
        rv = cm_buf_printf(out, "# HELP %s ", f->name);
        if (rv == CM_OK) {
            rv = put_help(out, f->help);
        }
        if (rv == CM_OK) {
            rv = cm_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        }
        for (const cm_series *s = f->series_first; s != NULL && rv == CM_OK; s = s->next) {
            rv = render_series(out, f, s);
        }
    }
    pthread_mutex_unlock(&m->mu);
    return rv;
}
