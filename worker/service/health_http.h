/*
 * wk_health_http: the worker's HTTP side port (--http, default 127.0.0.1:9100), served by
 * nng's HTTP server on its own threads.
 *
 *   GET /health   200 while the process lives and the engine loop turns; 503 when the loop
 *                 has not turned for stall_timeout_ms (a stuck step, a dead engine thread).
 *                 During model load and warm-up it is 200 (loading is progress).
 *   GET /ready    200 once the model is loaded and the warm-up generation is done, 503 before
 *                 and while draining.
 *   GET /metrics  Prometheus text (wk_svc_metrics).
 *
 * It starts before the model loads so orchestrators can probe a loading worker; the service
 * is attached later (wk_health_http_attach). Threads: attach/set_phase from any thread.
 */
#ifndef WK_HEALTH_HTTP_H
#define WK_HEALTH_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "service.h"
#include "svc_metrics.h"

typedef enum wk_phase {
    WK_PHASE_LOADING = 0,
    WK_PHASE_WARMING = 1,
    WK_PHASE_READY = 2,
} wk_phase;

typedef struct wk_health_http wk_health_http;

/* wk_health_http_start serves on addr (HOST:PORT). metrics is borrowed (may be NULL until
 * the model name is known: /metrics is then empty). */
cm_err wk_health_http_start(const char *addr, uint32_t stall_timeout_ms, wk_svc_metrics *metrics,
                            wk_health_http **out, char *err, size_t errlen);

/* wk_health_http_attach hands over the running service (NULL to detach before destroying
 * the service). */
void wk_health_http_attach(wk_health_http *h, wk_service *svc);

void wk_health_http_set_phase(wk_health_http *h, wk_phase phase);

/* wk_health_http_stop stops serving and frees; h may be NULL. */
void wk_health_http_stop(wk_health_http *h);

#endif /* WK_HEALTH_HTTP_H */
