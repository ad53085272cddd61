/*
 * wk_svc_metrics: registration of the worker's metric families (see svc_metrics.h).
 */
#include "svc_metrics.h"

#include <string.h>

static const char *const model_label[] = {"model", NULL};
static const char *const reason_labels[] = {"model", "finish_reason", NULL};

static cm_err gauge(wk_svc_metrics *m, const char *name, const char *help, const char *model,
                    cm_series **out) {
    cm_metric *f;
    cm_err rv = cm_metrics_gauge(m->reg, name, help, model_label, &f);
    if (rv == CM_OK)
        rv = cm_metric_series(f, (const char *const[]){model}, out);
    return rv;
}

static cm_err counter(wk_svc_metrics *m, const char *name, const char *help, const char *model,
                      cm_series **out) {
    cm_metric *f;
    cm_err rv = cm_metrics_counter(m->reg, name, help, model_label, &f);
    if (rv == CM_OK)
        rv = cm_metric_series(f, (const char *const[]){model}, out);
    return rv;
}

static cm_err histogram(wk_svc_metrics *m, const char *name, const char *help, const char *model,
                        double start, double factor, size_t n, cm_series **out) {
    double bounds[CM_METRICS_MAX_BUCKETS];
    cm_err rv = cm_metrics_exp_bounds(start, factor, n, bounds);
    cm_metric *f;
    if (rv == CM_OK)
        rv = cm_metrics_histogram(m->reg, name, help, model_label, bounds, n, &f);
    if (rv == CM_OK)
        rv = cm_metric_series(f, (const char *const[]){model}, out);
    return rv;
}

cm_err wk_svc_metrics_init(wk_svc_metrics *m, const char *model) {
    memset(m, 0, sizeof *m);
    cm_err rv = cm_metrics_create(16, &m->reg);
    if (rv != CM_OK)
        return rv;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        rv = (x);                                                                                  \
        if (rv != CM_OK)                                                                           \
            goto fail;                                                                             \
    } while (0)
    TRY(gauge(m, "sluice_worker_requests_waiting", "Requests admitted and waiting to run.", model,
              &m->requests_waiting));
    TRY(gauge(m, "sluice_worker_requests_running", "Requests running (prefill or decode).", model,
              &m->requests_running));
    TRY(gauge(m, "sluice_worker_kv_cache_usage_ratio",
              "KV-cache blocks held by live sequences / all blocks.", model,
              &m->kv_cache_usage_ratio));
    TRY(gauge(m, "sluice_worker_prefix_cache_hit_ratio",
              "Prompt blocks found in the prefix cache / prompt blocks looked up.", model,
              &m->prefix_cache_hit_ratio));
    TRY(gauge(m, "sluice_worker_kv_cache_blocks_total", "KV-cache blocks.", model,
              &m->kv_cache_blocks_total));
    TRY(gauge(m, "sluice_worker_kv_cache_blocks_used", "KV-cache blocks held by live sequences.",
              model, &m->kv_cache_blocks_used));
    TRY(gauge(m, "sluice_worker_model_load_seconds", "Time to load the model at start.", model,
              &m->model_load_seconds));
    TRY(gauge(m, "sluice_worker_warmup_seconds", "Time of the warm-up generation at start.", model,
              &m->warmup_seconds));
    TRY(gauge(m, "sluice_worker_connections", "Gateway connections open.", model, &m->connections));
    TRY(gauge(m, "sluice_worker_ready", "1 when the worker accepts new requests.", model,
              &m->ready));
    TRY(gauge(m, "sluice_worker_draining", "1 while draining after SIGTERM.", model, &m->draining));
    TRY(counter(m, "sluice_worker_preemptions_total", "Sequences preempted (recomputed later).",
                model, &m->preemptions_total));
    TRY(counter(m, "sluice_worker_prompt_tokens_total", "Prompt tokens prefilled.", model,
                &m->prompt_tokens_total));
    TRY(counter(m, "sluice_worker_generation_tokens_total", "Tokens generated.", model,
                &m->generation_tokens_total));
    TRY(counter(m, "sluice_worker_rejected_requests_total",
                "Submits answered with an error before running.", model, &m->rejected_total));
    TRY(counter(m, "sluice_worker_dropped_messages_total",
                "Inbound messages dropped: unreadable, or no request id to answer.", model,
                &m->dropped_messages_total));
    TRY(counter(m, "sluice_worker_send_queue_overflows_total",
                "Requests cancelled because their gateway's send queue was full.", model,
                &m->send_queue_overflows_total));
    TRY(counter(m, "sluice_worker_connection_lost_requests_total",
                "Requests cancelled because their gateway connection closed.", model,
                &m->connections_lost_requests_total));
    {
        cm_metric *f;
        TRY(cm_metrics_counter(m->reg, "sluice_worker_requests_total",
                               "Requests finished, by finish reason.", reason_labels, &f));
        TRY(cm_metric_series(f, (const char *const[]){model, "stop"}, &m->finished_stop));
        TRY(cm_metric_series(f, (const char *const[]){model, "length"}, &m->finished_length));
        TRY(cm_metric_series(f, (const char *const[]){model, "cancelled"}, &m->finished_cancelled));
        TRY(cm_metric_series(f, (const char *const[]){model, "error"}, &m->finished_error));
    }
    TRY(histogram(m, "sluice_worker_time_to_first_token_seconds",
                  "Submit received to first token sent.", model, 0.005, 2.0, 16, &m->ttft));
    TRY(histogram(m, "sluice_worker_inter_token_latency_seconds",
                  "Time between consecutive token events of a request.", model, 0.001, 2.0, 16,
                  &m->itl));
    TRY(histogram(m, "sluice_worker_e2e_request_latency_seconds", "Submit received to finish.",
                  model, 0.01, 2.0, 18, &m->e2e));
    TRY(histogram(m, "sluice_worker_queue_time_seconds", "Time waiting before first scheduled.",
                  model, 0.001, 2.0, 18, &m->queue_time));
#undef TRY
    return CM_OK;
fail:
    wk_svc_metrics_fini(m);
    return rv;
}

void wk_svc_metrics_fini(wk_svc_metrics *m) {
    cm_metrics_destroy(m->reg);
    memset(m, 0, sizeof *m);
}

cm_err wk_svc_metrics_render(wk_svc_metrics *m, cm_buf *out) {
    return cm_metrics_render(m->reg, out);
}
