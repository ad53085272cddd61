/*
 * sluice-worker: load a model, warm it up, serve it over nng with an HTTP side port and an
 * optional Redis registry entry; drain on SIGTERM and exit 0.
 *
 * Order: HTTP side port first (a loading worker answers /health 200 and /ready 503), then
 * model load (timed), warm-up generation (timed separately), listen, engine thread, ready,
 * registry. SIGTERM/SIGINT only bump an atomic counter in their handler (safe on whichever
 * thread, ours or a library's, the signal lands); the main thread polls the counter and
 * does the work: first signal drains, second aborts.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "chat_template.h"
#include "cm_clock.h"
#include "cm_log.h"
#include "engine.h"
#include "gguf.h"
#include "health_http.h"
#include "model.h"
#include "registry.h"
#include "service.h"
#include "svc_metrics.h"
#include "tokenizer.h"
#include "worker_config.h"

typedef struct warmup_state {
    bool done;
    bool failed;
    uint32_t tokens;
    char message[256];
} warmup_state;

static void warmup_cb(const wk_event *ev, void *arg) {
    warmup_state *w = arg;
    if (ev->kind == WK_EVENT_TOKENS) {
        w->tokens += ev->n_tokens;
    } else if (ev->kind == WK_EVENT_FINISHED) {
        w->done = true;
    } else {
        w->done = true;
        w->failed = true;
        snprintf(w->message, sizeof w->message, "%s", ev->message ? ev->message : "error");
    }
}

/* Runs a short greedy generation so the first real request does not pay for cold caches,
 * lazy allocations or kernel selection. Bounded by a 300 s wall clock. */
static cm_err warm_up(wk_engine *e, const wk_tokenizer *tok, uint32_t max_tokens, char *err,
                      size_t errlen) {
    int32_t ids[64];
    size_t n = 0;
    const char *text = "Hello! Tell me about yourself.";
    cm_err rv =
        wk_tokenizer_encode(tok, text, strlen(text), wk_tokenizer_add_bos(tok), false, ids, 64, &n);
    if (rv != CM_OK || n == 0) {
        snprintf(err, errlen, "warm-up: cannot tokenize: %s", cm_strerror(rv));
        return rv != CM_OK ? rv : CM_ERR_INTERNAL;
    }
    warmup_state w = {0};
    wk_request rq;
    memset(&rq, 0, sizeof rq);
    rq.id = UINT64_MAX; /* never used by the service, whose ids count up from 1 */
    rq.prompt = ids;
    rq.n_prompt = (uint32_t)n;
    rq.max_tokens = max_tokens;
    wk_sampling_defaults(&rq.sampling);
    rq.sampling.temperature = 0;
    rq.ignore_eos = true;
    rq.cb = warmup_cb;
    rq.cb_arg = &w;
    rv = wk_engine_submit(e, &rq, err, errlen);
    if (rv != CM_OK)
        return rv;
    int64_t deadline = cm_clock_mono_ms() + 300000;
    while (!w.done && cm_clock_mono_ms() < deadline) {
        bool did = false;
        rv = wk_engine_step(e, &did);
        if (rv != CM_OK) {
            snprintf(err, errlen, "warm-up step failed: %s", cm_strerror(rv));
            return rv;
        }
    }
    if (!w.done) {
        wk_engine_cancel(e, rq.id);
        bool did = false;
        wk_engine_step(e, &did);
        snprintf(err, errlen, "warm-up did not finish within 300 s");
        return CM_ERR_TIMEOUT;
    }
    if (w.failed) {
        snprintf(err, errlen, "warm-up failed: %s", w.message);
        return CM_ERR_BACKEND;
    }
    return CM_OK;
}

/* Signals received (process-wide by nature: the one global of the worker). Lock-free atomics
 * are async-signal-safe. */
static atomic_int g_signals;

static void on_signal(int sig) {
    (void)sig;
    atomic_fetch_add(&g_signals, 1);
}

/* True when SIGTERM/SIGINT arrived during start-up: a worker asked to stop while loading
 * stops instead of serving first. */
static bool stop_requested(void) {
    if (atomic_load(&g_signals) > 0) {
        cm_logf(CM_LOG_INFO, NULL, "stop signal during start-up: exiting before serving");
        return true;
    }
    return false;
}

static char *chat_template_text(const wk_gguf *g) {
    wk_gguf_str s;
    if (wk_gguf_get_str(g, "tokenizer.chat_template", &s) != CM_OK)
        return NULL;
    char *t = malloc(s.len + 1);
    if (t == NULL)
        return NULL;
    memcpy(t, s.ptr, s.len);
    t[s.len] = '\0';
    return t;
}

int main(int argc, char **argv) {
    /* First thing, so a SIGTERM during start-up stops the worker cleanly. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    wk_worker_config cfg;
    bool help = false;
    char err[1024] = "";
    if (wk_worker_config_parse(argc, argv, &cfg, &help, err, sizeof err) != CM_OK) {
        fprintf(stderr, "sluice-worker: %s\n", err);
        return 2;
    }
    if (help) {
        fputs(wk_worker_config_usage(), stdout);
        return 0;
    }
    cm_log_set_component("worker");
    cm_log_set_level((cm_log_level)cm_log_parse_level(cfg.log_level));
    cm_log_set_json(cfg.log_json);

    char host[128] = "localhost";
    gethostname(host, sizeof host - 1);
    char instance_id[256];
    snprintf(instance_id, sizeof instance_id, "%s:%d:%lld", host, (int)getpid(),
             (long long)cm_clock_unix_ms());

    int exit_code = 1;
    wk_svc_metrics metrics;
    memset(&metrics, 0, sizeof metrics);
    wk_health_http *http = NULL;
    wk_gguf *gguf = NULL;
    wk_model model;
    memset(&model, 0, sizeof model);
    bool model_loaded = false;
    wk_tokenizer *tok = NULL;
    char *tmpl_text = NULL;
    wk_chat_template tmpl;
    bool have_tmpl = false;
    wk_engine *engine = NULL;
    wk_service *svc = NULL;
    wk_registry *registry = NULL;

    if (wk_svc_metrics_init(&metrics, cfg.model_name) != CM_OK) {
        fprintf(stderr, "sluice-worker: cannot set up metrics\n");
        goto done;
    }
    if (wk_health_http_start(cfg.http, cfg.stall_timeout_ms, &metrics, &http, err, sizeof err) !=
        CM_OK) {
        cm_logf(CM_LOG_ERROR, NULL, "%s", err);
        goto done;
    }
    cm_log(CM_LOG_INFO, NULL, "starting", "model", cfg.model_path, "model_name", cfg.model_name,
           "http", cfg.http, "instance_id", instance_id, NULL);

    /* ---- load ---- */
    int64_t t0 = cm_clock_mono_ns();
    const wk_backend_ops *be =
        wk_backend_register_linked() == CM_OK ? wk_backend_find(cfg.backend) : NULL;
    if (be == NULL) {
        cm_logf(CM_LOG_ERROR, NULL, "backend '%s' is not built into this binary", cfg.backend);
        goto done;
    }
    if (wk_gguf_open(cfg.model_path, &gguf, err, sizeof err) != CM_OK) {
        cm_logf(CM_LOG_ERROR, NULL, "cannot open model %s: %s", cfg.model_path, err);
        goto done;
    }
    if (wk_model_load(gguf, &model, err, sizeof err) != CM_OK) {
        cm_logf(CM_LOG_ERROR, NULL, "cannot load model %s: %s", cfg.model_path, err);
        goto done;
    }
    model_loaded = true;
    if (wk_tokenizer_load(gguf, &tok, err, sizeof err) != CM_OK) {
        cm_logf(CM_LOG_ERROR, NULL, "cannot load tokenizer: %s", err);
        goto done;
    }
    tmpl_text = chat_template_text(gguf);
    if (wk_chat_template_detect(tmpl_text, cfg.chat_template[0] ? cfg.chat_template : NULL, &tmpl,
                                err, sizeof err) == CM_OK) {
        have_tmpl = true;
    } else {
        cm_logf(CM_LOG_ERROR, NULL,
                "chat template: %s; chat requests will be refused (raw prompts still work)", err);
    }
    wk_engine_config ec;
    wk_engine_config_defaults(&ec);
    ec.backend = be;
    if (cfg.kv_cache_bytes)
        ec.kv_cache_bytes = cfg.kv_cache_bytes;
    if (cfg.max_batch_tokens)
        ec.max_batch_tokens = cfg.max_batch_tokens;
    if (cfg.max_running)
        ec.max_running = cfg.max_running;
    if (cfg.max_waiting)
        ec.max_waiting = cfg.max_waiting;
    ec.n_threads = cfg.threads;
    if (wk_engine_create(&model, tok, &ec, &engine, err, sizeof err) != CM_OK) {
        cm_logf(CM_LOG_ERROR, NULL, "cannot create the engine: %s", err);
        goto done;
    }
    /* The effective values, for Hello and the registry. */
    cfg.max_batch_tokens = ec.max_batch_tokens;
    cfg.max_running = ec.max_running;
    cfg.max_waiting = ec.max_waiting;
    double load_s = (double)(cm_clock_mono_ns() - t0) / 1e9;
    cm_series_set(metrics.model_load_seconds, load_s);
    char buf[64];
    snprintf(buf, sizeof buf, "%.3f", load_s);
    char ctx_buf[32];
    snprintf(ctx_buf, sizeof ctx_buf, "%u", wk_engine_max_context(engine));
    cm_log(CM_LOG_INFO, NULL, "model loaded", "load_seconds", buf, "context", ctx_buf,
           "chat_template", have_tmpl ? wk_chat_family_name(tmpl.family) : "none", "backend",
           cfg.backend, NULL);

    if (stop_requested()) {
        exit_code = 0;
        goto done;
    }

    /* ---- warm-up ---- */
    wk_health_http_set_phase(http, WK_PHASE_WARMING);
    int64_t t1 = cm_clock_mono_ns();
    if (cfg.warmup_tokens > 0 &&
        warm_up(engine, tok, cfg.warmup_tokens, err, sizeof err) != CM_OK) {
        cm_logf(CM_LOG_ERROR, NULL, "%s", err);
        goto done;
    }
    double warm_s = (double)(cm_clock_mono_ns() - t1) / 1e9;
    cm_series_set(metrics.warmup_seconds, warm_s);
    snprintf(buf, sizeof buf, "%.3f", warm_s);
    cm_log(CM_LOG_INFO, NULL, "warm-up done", "warmup_seconds", buf, NULL);

    if (stop_requested()) {
        exit_code = 0;
        goto done;
    }

    /* ---- serve ---- */
    wk_service_deps deps = {
        .cfg = &cfg,
        .engine = engine,
        .tok = tok,
        .tmpl = have_tmpl ? &tmpl : NULL,
        .metrics = &metrics,
        .instance_id = instance_id,
        .backend_name = cfg.backend,
        .capacity = cfg.max_running,
    };
    if (wk_service_create(&deps, &svc, err, sizeof err) != CM_OK) {
        cm_logf(CM_LOG_ERROR, NULL, "%s", err);
        goto done;
    }
    if (wk_service_start(svc) != CM_OK) {
        cm_logf(CM_LOG_ERROR, NULL, "cannot start the engine thread");
        goto done;
    }
    wk_health_http_attach(http, svc);
    wk_health_http_set_phase(http, WK_PHASE_READY);
    cm_series_set(metrics.ready, 1);
    char port_buf[16];
    snprintf(port_buf, sizeof port_buf, "%d", wk_service_listen_port(svc));
    cm_log(CM_LOG_INFO, NULL, "ready", "listen", cfg.listen, "port", port_buf, "advertise",
           cfg.advertise, NULL);
    if (cfg.registry[0] != '\0') {
        wk_registry_info ri = {.url = cfg.registry,
                               .instance_id = instance_id,
                               .model = cfg.model_name,
                               .address = cfg.advertise,
                               .capacity = cfg.max_running};
        if (wk_registry_start(&ri, svc, &registry, err, sizeof err) != CM_OK) {
            cm_logf(CM_LOG_ERROR, NULL, "%s", err);
            goto done;
        }
    }

    /* ---- wait for signals; drain ---- */
    bool draining = false;
    bool aborted = false;
    for (;;) {
        int n = atomic_load(&g_signals);
        if (n >= 1 && !draining) {
            draining = true;
            cm_logf(CM_LOG_INFO, NULL, "stop signal: draining (timeout %u ms; again to abort)",
                    cfg.drain_timeout_ms);
            wk_service_drain(svc);
            wk_registry_withdraw(registry);
        }
        if (n >= 2 && !aborted) {
            aborted = true;
            cm_logf(CM_LOG_WARN, NULL, "second signal: cancelling what remains");
            wk_service_abort(svc);
        }
        if (wk_service_wait(svc, 100))
            break;
    }
    exit_code = draining ? 0 : 1;
    if (!draining)
        cm_logf(CM_LOG_ERROR, NULL, "engine loop ended unexpectedly");

done:
    if (http != NULL)
        wk_health_http_attach(http, NULL);
    wk_registry_stop(registry);
    wk_service_destroy(svc);
    wk_health_http_stop(http);
    wk_engine_destroy(engine);
    wk_tokenizer_free(tok);
    free(tmpl_text);
    if (model_loaded)
        wk_model_fini(&model);
    if (gguf != NULL)
        wk_gguf_close(gguf);
    wk_svc_metrics_fini(&metrics);
    cm_logf(CM_LOG_INFO, NULL, "exit %d", exit_code);
    return exit_code;
}
