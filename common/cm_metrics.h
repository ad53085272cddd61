/*
 * cm_metrics: a registry of counters, gauges and histograms with label sets, rendered in the
 * Prometheus text exposition format 0.0.4 (for GET /metrics).
 *
 *   cm_metrics *m;            cm_metrics_create(256, &m);
 *   const char *labels[] = {"model", "status", NULL};
 *   cm_metric *req;           cm_metrics_counter(m, "sluice_requests_total",
 *                                                "Requests finished.", labels, &req);
 *   cm_series *ok;            cm_metric_series(req, (const char *[]){"smollm2", "200"}, &ok);
 *   cm_series_inc(ok);        // hot path: lock-free
 *   ...
 *   cm_buf out; cm_buf_init(&out, 1 << 20); cm_metrics_render(m, &out);
 *
 * A family (cm_metric) has a name, help text, a type and fixed label names; a series
 * (cm_series) is one combination of label values. Look series up once and keep the pointer:
 * series live until cm_metrics_destroy. The number of series per family is capped at
 * creation (label values may come from outside, e.g. model names) - past it, lookups of new
 * label sets fail with CM_ERR_LIMIT.
 *
 * Thread contract: registration, lookup and rendering take the registry's mutex; updates
 * (cm_series_*) are lock-free atomics and may run on any thread, also during a render.
 * A histogram's buckets, sum and count are each atomic but not updated as one unit; a render
 * racing an observe may show the new bucket before the new sum. _count always equals the
 * +Inf bucket.
 */
#ifndef CM_METRICS_H
#define CM_METRICS_H

#include <stddef.h>

#include "cm_buf.h"
#include "cm_err.h"

#define CM_METRICS_MAX_LABELS 8   /* label names per family */
#define CM_METRICS_MAX_BUCKETS 64 /* histogram bounds, +Inf not counted */
#define CM_METRICS_MAX_NAME 128   /* bytes in a metric or label name */
#define CM_METRICS_MAX_VALUE 256  /* bytes in a label value */
#define CM_METRICS_MAX_HELP 1024  /* bytes in a help text */

typedef struct cm_metrics cm_metrics;
typedef struct cm_metric cm_metric;
typedef struct cm_series cm_series;

typedef enum cm_metric_type {
    CM_METRIC_COUNTER = 0,
    CM_METRIC_GAUGE = 1,
    CM_METRIC_HISTOGRAM = 2,
} cm_metric_type;

/* cm_metrics_create makes an empty registry; max_series (>= 1) caps the series of each
 * family. Free with cm_metrics_destroy. */
cm_err cm_metrics_create(size_t max_series, cm_metrics **out);
/* cm_metrics_destroy frees the registry, its families and series; m may be NULL. No thread
 * may be using any of its series. */
void cm_metrics_destroy(cm_metrics *m);

/*
 * Register a family. name: [a-zA-Z_:][a-zA-Z0-9_:]*; help: any text (escaped on output);
 * label_names: NULL-terminated array (or NULL for none) of [a-zA-Z_][a-zA-Z0-9_]* not
 * starting with "__" ("le" is reserved in histograms). Everything is copied.
 * Registering the same name again with the same type and labels (and buckets) returns the
 * existing family; a different one gives CM_ERR_EXISTS. *out belongs to the registry.
 */
cm_err cm_metrics_counter(cm_metrics *m, const char *name, const char *help,
                          const char *const *label_names, cm_metric **out);
cm_err cm_metrics_gauge(cm_metrics *m, const char *name, const char *help,
                        const char *const *label_names, cm_metric **out);
/* bounds: n_bounds (1..CM_METRICS_MAX_BUCKETS) finite, strictly increasing upper bounds;
 * the +Inf bucket is added. */
cm_err cm_metrics_histogram(cm_metrics *m, const char *name, const char *help,
                            const char *const *label_names, const double *bounds, size_t n_bounds,
                            cm_metric **out);

/* cm_metrics_exp_bounds fills out[0..n) with start, start*factor, ... (start > 0,
 * factor > 1, n <= CM_METRICS_MAX_BUCKETS); CM_ERR_INVALID otherwise. */
cm_err cm_metrics_exp_bounds(double start, double factor, size_t n, double *out);

/*
 * cm_metric_series finds or creates the series for label_values (an array with exactly one
 * value per label name, in order; NULL when the family has no labels). Values are any
 * UTF-8 up to CM_METRICS_MAX_VALUE bytes (escaped on output). CM_ERR_LIMIT when the family
 * already has max_series series and this is a new one. *out lives until cm_metrics_destroy.
 */
cm_err cm_metric_series(cm_metric *f, const char *const *label_values, cm_series **out);

/* Updates; lock-free, any thread. Calls that do not fit the series' type are ignored (e.g.
 * set on a counter), as are negative or NaN increments of a counter. */
void cm_series_inc(cm_series *s);               /* counter, gauge: += 1 */
void cm_series_add(cm_series *s, double v);     /* counter (v >= 0), gauge: += v */
void cm_series_set(cm_series *s, double v);     /* gauge: = v */
void cm_series_observe(cm_series *s, double v); /* histogram: count one value */
/* cm_series_value reads a counter/gauge value, or a histogram's count. */
double cm_series_value(const cm_series *s);

/*
 * cm_metrics_render appends every family (in registration order) to out: "# HELP", "# TYPE",
 * then one line per series (in creation order); histograms as name_bucket{...,le="..."}
 * (cumulative), name_sum, name_count. Families with no series yet print only HELP/TYPE.
 * CM_ERR_LIMIT if out's cap is reached (out then holds a truncated render; reset it).
 */
cm_err cm_metrics_render(cm_metrics *m, cm_buf *out);

/* Content-Type for the rendered text. */
#define CM_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif /* CM_METRICS_H */
