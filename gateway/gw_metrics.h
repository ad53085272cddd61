/*
 * gw_metrics: the gateway's Prometheus metrics (prefix sluice_gateway_), over cm_metrics.
 * Updates are thread-safe (cm_metrics); series lookups take cm_metrics' lock briefly, so hot
 * paths keep the series pointers they use often.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include "cm_buf.h"
#include "cm_err.h"
#include "cm_metrics.h"

typedef struct gw_pool gw_pool;

typedef struct gw_metrics {
    cm_metrics *reg;
    cm_metric *requests;          /* counter {route, model, status} */
    cm_metric *ttfb;              /* histogram {route} seconds */
    cm_metric *duration;          /* histogram {route} seconds */
    cm_metric *ratelimited;       /* counter {tenant, limit} */
    cm_metric *worker_up;         /* gauge {model, address} */
    cm_metric *worker_inflight;   /* gauge {model, address} */
    cm_metric *worker_waiting;    /* gauge {model, address} */
    cm_metric *worker_running;    /* gauge {model, address} */
    cm_metric *pending;           /* gauge {model}: admitted, not yet answered */
    cm_metric *routed;            /* counter {model, served_model, status} */
    cm_series *inflight;          /* gauge */
    cm_series *redis_errors;      /* counter */
    cm_series *retries;           /* counter */
    cm_series *cancels;           /* counter: client disconnects cancelled at the worker */
    cm_series *tokens_prompt;     /* counter */
    cm_series *tokens_completion; /* counter */
} gw_metrics;

cm_err gw_metrics_init(gw_metrics *m);
void gw_metrics_fini(gw_metrics *m);

/* gw_metrics_request counts one finished request. model may be NULL ("" label). */
void gw_metrics_request(gw_metrics *m, const char *route, const char *model, int status,
                        double ttfb_s, double duration_s);
/* gw_metrics_routed counts one finished request that reached a worker, by the name asked for
 * (an alias or a served name) and the served name it was routed to. */
void gw_metrics_routed(gw_metrics *m, const char *model, const char *served_model, int status);
void gw_metrics_ratelimited(gw_metrics *m, const char *tenant, const char *limit);

/* gw_metrics_render refreshes per-worker gauges from pool and renders everything. */
cm_err gw_metrics_render(gw_metrics *m, gw_pool *pool, cm_buf *out);

#endif /* GW_METRICS_H */
