/*
 * wk_health_http: three handlers on nng's HTTP server (see health_http.h).
 */
#include "health_http.h"

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_buf.h"
#include "cm_clock.h"

struct wk_health_http {
    nng_http_server *server;
    nng_url *url;
    uint32_t stall_timeout_ms;
    wk_svc_metrics *metrics;
    pthread_mutex_t mtx; /* guards svc and phase */
    wk_service *svc;
    wk_phase phase;
};

static void reply(nng_aio *aio, uint16_t status, const char *ctype, const char *body, size_t len) {
    nng_http_res *res = NULL;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_http_res_set_status(res, status);
    nng_http_res_set_header(res, "Content-Type", ctype);
    nng_http_res_set_header(res, "Cache-Control", "no-store");
    if (nng_http_res_copy_data(res, body, len) != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void reply_text(nng_aio *aio, uint16_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_text(nng_aio *aio, uint16_t status, const char *fmt, ...) {
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof body)
        n = sizeof body - 1;
    reply(aio, status, "text/plain; charset=utf-8", body, (size_t)n);
}

static wk_health_http *self(nng_aio *aio) {
    nng_http_handler *hh = nng_aio_get_input(aio, 1);
    return nng_http_handler_get_data(hh);
}

static void on_health(nng_aio *aio) {
    wk_health_http *h = self(aio);
    pthread_mutex_lock(&h->mtx);
    wk_service *svc = h->svc;
    wk_service_status st;
    memset(&st, 0, sizeof st);
    if (svc != NULL)
        wk_service_get_status(svc, &st);
    pthread_mutex_unlock(&h->mtx);
    if (svc == NULL || !st.started) {
        reply_text(aio, 200, "ok: starting\n");
        return;
    }
    int64_t idle = cm_clock_mono_ms() - st.heartbeat_ms;
    if (st.stopped && !st.draining) {
        reply_text(aio, 503, "engine loop ended\n");
        return;
    }
    if (!st.stopped && idle > (int64_t)h->stall_timeout_ms) {
        reply_text(aio, 503, "engine stalled: no progress for %lld ms (limit %u ms)\n",
                   (long long)idle, h->stall_timeout_ms);
        return;
    }
    reply_text(aio, 200, "ok\n");
}

static void on_ready(nng_aio *aio) {
    wk_health_http *h = self(aio);
    pthread_mutex_lock(&h->mtx);
    wk_service *svc = h->svc;
    wk_phase phase = h->phase;
    wk_service_status st;
    memset(&st, 0, sizeof st);
    if (svc != NULL)
        wk_service_get_status(svc, &st);
    pthread_mutex_unlock(&h->mtx);
    if (phase == WK_PHASE_LOADING)
        reply_text(aio, 503, "not ready: loading the model\n");
    else if (phase == WK_PHASE_WARMING || svc == NULL || !st.started)
        reply_text(aio, 503, "not ready: warming up\n");
    else if (st.draining)
        reply_text(aio, 503, "not ready: draining\n");
    else
        reply_text(aio, 200, "ready\n");
}

static void on_metrics(nng_aio *aio) {
    wk_health_http *h = self(aio);
    if (h->metrics == NULL || h->metrics->reg == NULL) {
        reply(aio, 200, CM_METRICS_CONTENT_TYPE, "", 0);
        return;
    }
    cm_buf b;
    cm_buf_init(&b, 8u << 20);
    if (wk_svc_metrics_render(h->metrics, &b) != CM_OK) {
        cm_buf_fini(&b);
        reply_text(aio, 500, "metrics render failed\n");
        return;
    }
    reply(aio, 200, CM_METRICS_CONTENT_TYPE, b.data != NULL ? b.data : "", b.len);
    cm_buf_fini(&b);
}

static cm_err add(wk_health_http *h, const char *path, void (*cb)(nng_aio *)) {
    nng_http_handler *hh = NULL;
    if (nng_http_handler_alloc(&hh, path, cb) != 0)
        return CM_ERR_NOMEM;
    nng_http_handler_set_method(hh, "GET");
    nng_http_handler_set_data(hh, h, NULL);
    if (nng_http_server_add_handler(h->server, hh) != 0) {
        nng_http_handler_free(hh);
        return CM_ERR_INTERNAL;
    }
    return CM_OK;
}

cm_err wk_health_http_start(const char *addr, uint32_t stall_timeout_ms, wk_svc_metrics *metrics,
                            wk_health_http **out, char *err, size_t errlen) {
    *out = NULL;
    wk_health_http *h = calloc(1, sizeof *h);
    if (h == NULL)
        return CM_ERR_NOMEM;
    pthread_mutex_init(&h->mtx, NULL);
    h->stall_timeout_ms = stall_timeout_ms;
    h->metrics = metrics;
    h->phase = WK_PHASE_LOADING;
    char url[300];
    snprintf(url, sizeof url, "http://%s", addr);
    cm_err rv = CM_OK;
    int nrv = nng_url_parse(&h->url, url);
    if (nrv != 0) {
        snprintf(err, errlen, "--http '%s': %s", addr, nng_strerror(nrv));
        rv = CM_ERR_CONFIG;
        goto fail;
    }
    nrv = nng_http_server_hold(&h->server, h->url);
    if (nrv != 0) {
        snprintf(err, errlen, "--http '%s': %s", addr, nng_strerror(nrv));
        rv = CM_ERR_CONFIG;
        goto fail;
    }
    if ((rv = add(h, "/health", on_health)) != CM_OK ||
        (rv = add(h, "/ready", on_ready)) != CM_OK ||
        (rv = add(h, "/metrics", on_metrics)) != CM_OK) {
        snprintf(err, errlen, "--http: cannot register handlers");
        goto fail;
    }
    nrv = nng_http_server_start(h->server);
    if (nrv != 0) {
        snprintf(err, errlen, "cannot serve HTTP on '%s': %s", addr, nng_strerror(nrv));
        rv = CM_ERR_IO;
        goto fail;
    }
    *out = h;
    return CM_OK;
fail:
    if (h->server != NULL)
        nng_http_server_release(h->server);
    if (h->url != NULL)
        nng_url_free(h->url);
    pthread_mutex_destroy(&h->mtx);
    free(h);
    return rv;
}

void wk_health_http_attach(wk_health_http *h, wk_service *svc) {
    pthread_mutex_lock(&h->mtx);
    h->svc = svc;
    pthread_mutex_unlock(&h->mtx);
}

void wk_health_http_set_phase(wk_health_http *h, wk_phase phase) {
    pthread_mutex_lock(&h->mtx);
    h->phase = phase;
    pthread_mutex_unlock(&h->mtx);
}

void wk_health_http_stop(wk_health_http *h) {
    if (h == NULL)
        return;
    nng_http_server_stop(h->server);
    nng_http_server_release(h->server);
    nng_url_free(h->url);
    pthread_mutex_destroy(&h->mtx);
    free(h);
}
