/*
 * wk_svc_metrics: the worker's Prometheus metrics (names fixed in the protocol notes, prefix
 * sluice_worker_, every series labelled model="NAME"). A thin layer over cm_metrics that
 * looks every series up once at start, so the hot path is one atomic update.
 *
 * Threads: updates from any thread (atomics); render from any thread.
 */
#ifndef WK_SVC_METRICS_H
#define WK_SVC_METRICS_H

#include "cm_buf.h"
#include "cm_err.h"
#include "cm_metrics.h"

typedef struct wk_svc_metrics {
    cm_metrics *reg;
    /* gauges */
    cm_series *requests_waiting, *requests_running, *kv_cache_usage_ratio;
    cm_series *prefix_cache_hit_ratio, *kv_cache_blocks_total, *kv_cache_blocks_used;
    cm_series *model_load_seconds, *warmup_seconds, *connections, *ready, *draining;
    /* counters */
    cm_series *preemptions_total, *prompt_tokens_total, *generation_tokens_total;
    cm_series *finished_stop, *finished_length, *finished_cancelled, *finished_error;
    cm_series *rejected_total;                  /* Submits answered with an Error before running */
    cm_series *dropped_messages_total;          /* inbound messages with no readable request id */
    cm_series *send_queue_overflows_total;      /* requests cancelled: gateway too slow to read */
    cm_series *connections_lost_requests_total; /* requests cancelled by a lost connection */
    /* histograms (seconds) */
    cm_series *ttft, *itl, *e2e, *queue_time;
} wk_svc_metrics;

/* wk_svc_metrics_init registers everything for model (copied). Free with _fini. */
cm_err wk_svc_metrics_init(wk_svc_metrics *m, const char *model);
void wk_svc_metrics_fini(wk_svc_metrics *m);

/* wk_svc_metrics_render appends the exposition text to out. */
cm_err wk_svc_metrics_render(wk_svc_metrics *m, cm_buf *out);

#endif /* WK_SVC_METRICS_H */
