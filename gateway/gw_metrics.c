#include "gw_metrics.h"

#include <stdio.h>
#include <string.h>

#include "gw_worker.h"

cm_err gw_metrics_init(gw_metrics *m) {
    static const char *const req_labels[] = {"route", "model", "status", NULL};
    static const char *const route_labels[] = {"route", NULL};
    static const char *const rl_labels[] = {"tenant", "limit", NULL};
    static const char *const w_labels[] = {"model", "address", NULL};
    double bounds[20];
    cm_metric *f;
    cm_err rv;
    memset(m, 0, sizeof *m);
    if ((rv = cm_metrics_create(4096, &m->reg)) != CM_OK)
        return rv;
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if ((rv = (x)) != CM_OK)                                                                   \
            goto fail;                                                                             \
    } while (0)
    CHECK(cm_metrics_counter(m->reg, "sluice_gateway_requests_total",
                             "Requests answered, by route, model and HTTP status.", req_labels,
                             &m->requests));
    CHECK(cm_metrics_exp_bounds(0.0005, 2.0, 18, bounds));
    CHECK(cm_metrics_histogram(m->reg, "sluice_gateway_time_to_first_byte_seconds",
                               "Time from request to the first response byte.", route_labels,
                               bounds, 18, &m->ttfb));
    CHECK(cm_metrics_histogram(m->reg, "sluice_gateway_request_duration_seconds",
                               "Time from request to the end of the response.", route_labels,
                               bounds, 18, &m->duration));
    CHECK(cm_metrics_counter(m->reg, "sluice_gateway_ratelimit_rejections_total",
                             "Requests refused with 429, by tenant and limit.", rl_labels,
                             &m->ratelimited));
    CHECK(cm_metrics_gauge(m->reg, "sluice_gateway_worker_up",
                           "1 when the worker is connected, greeted and not draining.", w_labels,
                           &m->worker_up));
    CHECK(cm_metrics_gauge(m->reg, "sluice_gateway_worker_inflight",
                           "Requests this gateway has in flight on the worker.", w_labels,
                           &m->worker_inflight));
    CHECK(cm_metrics_gauge(m->reg, "sluice_gateway_worker_waiting",
                           "Requests waiting on the worker (its last Stats).", w_labels,
                           &m->worker_waiting));
    CHECK(cm_metrics_gauge(m->reg, "sluice_gateway_worker_running",
                           "Requests running on the worker (its last Stats).", w_labels,
                           &m->worker_running));
    CHECK(cm_metrics_gauge(m->reg, "sluice_gateway_pending_requests",
                           "Requests for the model admitted and not yet answered, including "
                           "those waiting for a worker to appear (scale from zero).",
                           (const char *const[]){"model", NULL}, &m->pending));
    CHECK(cm_metrics_counter(m->reg, "sluice_gateway_routed_requests_total",
                             "Requests answered after reaching a worker, by the model asked for "
                             "(an alias or a served name) and the served name routed to.",
                             (const char *const[]){"model", "served_model", "status", NULL},
                             &m->routed));
    CHECK(cm_metrics_gauge(m->reg, "sluice_gateway_inflight", "Requests in flight.", NULL, &f));
    CHECK(cm_metric_series(f, NULL, &m->inflight));
    CHECK(cm_metrics_counter(m->reg, "sluice_gateway_redis_errors_total",
                             "Redis connection failures, timeouts and error replies.", NULL, &f));
    CHECK(cm_metric_series(f, NULL, &m->redis_errors));
    CHECK(cm_metrics_counter(m->reg, "sluice_gateway_retries_total",
                             "Requests retried on another worker before the first token.", NULL,
                             &f));
    CHECK(cm_metric_series(f, NULL, &m->retries));
    CHECK(cm_metrics_counter(m->reg, "sluice_gateway_cancels_total",
                             "Worker requests cancelled (client gone or deadline).", NULL, &f));
    CHECK(cm_metric_series(f, NULL, &m->cancels));
    CHECK(cm_metrics_counter(m->reg, "sluice_gateway_prompt_tokens_total",
                             "Prompt tokens reported by workers.", NULL, &f));
    CHECK(cm_metric_series(f, NULL, &m->tokens_prompt));
    CHECK(cm_metrics_counter(m->reg, "sluice_gateway_generation_tokens_total",
                             "Completion tokens reported by workers.", NULL, &f));
    CHECK(cm_metric_series(f, NULL, &m->tokens_completion));
#undef CHECK
    return CM_OK;
fail:
    cm_metrics_destroy(m->reg);
    memset(m, 0, sizeof *m);
    return rv;
}

void gw_metrics_fini(gw_metrics *m) {
    if (m->reg != NULL)
        cm_metrics_destroy(m->reg);
    memset(m, 0, sizeof *m);
}

void gw_metrics_request(gw_metrics *m, const char *route, const char *model, int status,
                        double ttfb_s, double duration_s) {
    char st[12];
    cm_series *s;
    const char *labels[3];
    snprintf(st, sizeof st, "%d", status);
    labels[0] = route;
    labels[1] = model != NULL ? model : "";
    labels[2] = st;
    if (cm_metric_series(m->requests, labels, &s) == CM_OK)
        cm_series_inc(s);
    if (ttfb_s >= 0 && cm_metric_series(m->ttfb, (const char *const[]){route}, &s) == CM_OK)
        cm_series_observe(s, ttfb_s);
    if (cm_metric_series(m->duration, (const char *const[]){route}, &s) == CM_OK)
        cm_series_observe(s, duration_s);
}

void gw_metrics_routed(gw_metrics *m, const char *model, const char *served_model, int status) {
    char st[12];
    cm_series *s;
    snprintf(st, sizeof st, "%d", status);
    if (cm_metric_series(m->routed, (const char *const[]){model, served_model, st}, &s) == CM_OK)
        cm_series_inc(s);
}

void gw_metrics_ratelimited(gw_metrics *m, const char *tenant, const char *limit) {
    cm_series *s;
    if (cm_metric_series(m->ratelimited, (const char *const[]){tenant, limit}, &s) == CM_OK)
        cm_series_inc(s);
}

cm_err gw_metrics_render(gw_metrics *m, gw_pool *pool, cm_buf *out) {
    int n = atomic_load(&pool->n_workers);
    /* pool->mu keeps the names stable while they are used as labels (lock order: pool, then
     * the metrics registry; nothing takes them the other way round). */
    pthread_mutex_lock(&pool->mu);
    for (int i = 0; i < n; i++) {
        gw_worker *w = pool->workers[i];
        const char *labels[2] = {w->model, w->address};
        cm_series *s;
        if (cm_metric_series(m->worker_up, labels, &s) == CM_OK)
            cm_series_set(s, gw_worker_usable(w));
        if (cm_metric_series(m->worker_inflight, labels, &s) == CM_OK)
            cm_series_set(s, atomic_load(&w->inflight));
        if (cm_metric_series(m->worker_waiting, labels, &s) == CM_OK)
            cm_series_set(s, atomic_load(&w->waiting));
        if (cm_metric_series(m->worker_running, labels, &s) == CM_OK)
            cm_series_set(s, atomic_load(&w->running));
    }
    pthread_mutex_unlock(&pool->mu);
    return cm_metrics_render(m->reg, out);
}
