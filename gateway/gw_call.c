#include "gw_call.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "cm_clock.h"
#include "cm_err.h"
#include "cm_id.h"
#include "cm_log.h"
#include "cm_trace.h"
#include "gw_format.h"
#include "gw_http.h"
#include "gw_ratelimit.h"
#include "gw_route.h"

#define TEXT_MAX_BYTES (16u << 20)   /* per choice, non-streaming */
#define STREAM_MAX_BYTES (16u << 20) /* pending SSE bytes while the client is slow */

/* One tool call of a non-streaming choice, assembled from ToolCallDelta events. */
typedef struct tool_call_acc {
    char id[64];
    char name[GW_MAX_TOOL_NAME_BYTES + 1];
    cm_buf args;
} tool_call_acc;

typedef struct choice {
    uint64_t id;   /* wire id while a Submit is in flight, else 0 */
    int started;   /* a token arrived */
    int done;      /* Finished arrived */
    int role_sent; /* stream: first chunk (with the role) sent */
    cm_buf text;   /* non-streaming text */
    gw_logprobs_acc lp;
    tool_call_acc *calls; /* (GW_MAX_TOOL_CALLS) at the first tool-call delta; non-streaming */
    uint32_t n_calls;
    const char *finish;
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
} choice;

struct gw_call {
    gw_thread *t;
    h2o_req_t *req; /* NULL once h2o disposed the request */
    int stopped;    /* client went away (stream stop) */
    gw_api api;
    gw_request rq;
    gw_tenant tenant;
    int has_tenant;
    char rid[CM_ID_EXTERNAL_MAX + 1];
    cm_trace trace;                           /* the client's trace (or ours) and our span */
    char traceparent[CM_TRACEPARENT_LEN + 1]; /* ours, sent to the worker and the client */
    int64_t t_admitted_ns;                    /* rate limiter answered (spans); 0 = no check */
    char resp_id[64];
    char served[GW_NAME_MAX]; /* the served name put in the Submit (the worker's Hello) */
    int64_t t_route_ns;       /* last routing began (spans) */
    int64_t t_routed_ns;      /* its Submits were sent; 0 = never routed */
    int64_t t_fin_ns;         /* choice 0's Finished arrived; 0 = not yet */
    double queue_ms, prefill_ms, decode_ms; /* choice 0's Finished.timing, when t_fin_ns */
    int has_timing;
    gw_worker *worker;
    uint32_t epoch;
    int retried;
    int64_t created_s, t0_ns, t_first_ns;
    uint64_t deadline_unix_ms;
    int status;         /* final HTTP status, for logs and metrics */
    int finished;       /* bookkeeping done */
    int n_active;       /* Submits in flight */
    int rl_pending;     /* waiting for the rate limiter */
    gw_rl_lease *lease; /* admission sent to Redis, released in call_finish */
    gw_rl_verdict verdict;
    int have_verdict;
    uv_timer_t timer;
    int closing;
    /* streaming */
    h2o_generator_t gen; /* first member used by h2o callbacks via container */
    int stream_started;
    int send_inflight;
    int final_queued;
    int final_sent;
    cm_buf pending, sending;
    uint32_t n_done;
    cm_series *pending_gauge; /* sluice_gateway_pending_requests{model}; NULL once answered */
    h2o_linklist_t cold;      /* in t->cold_waiters while waiting for a worker to appear */
    int64_t cold_until_ms;    /* end of that wait (mono ms); 0 = not waited yet */
    choice ch[];
};

static void call_fail(gw_call *c, const gw_error *e);
static void name_constraint_param(gw_error *e);
static void route_and_submit(gw_call *c, const gw_worker *exclude);

static const char *route_name(gw_api api) {
    return gw_route_label(api);
}

static void dec_inflight(gw_worker *w) {
    int v = atomic_fetch_sub(&w->inflight, 1);
    if (v <= 0)
        atomic_store(&w->inflight, 0);
}

/* Drops every Submit still in flight; send_cancel tells the worker (not when its pipe died). */
static void drop_submits(gw_call *c, int send_cancel) {
    for (uint32_t i = 0; i < c->rq.n; i++) {
        choice *ch = &c->ch[i];
        if (ch->id == 0)
            continue;
        if (send_cancel && c->worker != NULL) {
            gw_worker_cancel(c->worker, ch->id);
            cm_series_inc(c->t->srv->metrics.cancels);
        }
        if (c->worker != NULL)
            dec_inflight(c->worker);
        gw_thread_slot_free(c->t, ch->id);
        ch->id = 0;
        c->n_active--;
    }
}

/*
 * The lifecycle of a call. Three holds keep it alive:
 *   - the HTTP request: req != NULL until h2o disposes it (response sent, or client gone);
 *   - the worker: n_active Submits in flight (ch[i].id != 0), each ended by its Finished or
 *     Error event, by drop_submits, or by the loss of the worker's pipe;
 *   - Redis: rl_pending until the rate limiter answers (once; have_verdict from then on);
 * and one milestone, finished: call_finish chose the status and did the end-of-request
 * bookkeeping (exactly once), after which no Submit is sent and nothing is answered again.
 *
 *   admitting (rl_pending) -> routing: cold-waiting (in t->cold_waiters) or submitted
 *   (n_active > 0; retried at most once) -> finished -> closing (all three holds gone:
 *   uv_close of the timer) -> freed in on_timer_closed.
 *
 * call_check asserts the legal states after every transition (event, callback, timer).
 * Streaming adds: stopped (h2o's stop: the client left) only after stream_started; at most
 * one h2o_send in flight; the final send only once queued, and only after finished.
 */
static void call_check(gw_call *c) {
    int n_ids = 0;
    for (uint32_t i = 0; i < c->rq.n; i++)
        n_ids += c->ch[i].id != 0;
    CM_ASSERT(c->n_active == n_ids);
    CM_ASSERT(c->n_done <= c->rq.n);
    CM_ASSERT(!c->rl_pending || !c->have_verdict);
    /* h2o disposes the request only through on_req_dispose, which finishes the call. */
    CM_ASSERT(c->req != NULL || c->finished);
    CM_ASSERT(!c->finished ||
              (c->n_active == 0 && c->pending_gauge == NULL && !h2o_linklist_is_linked(&c->cold)));
    /* The lease goes back in call_finish, or in on_admitted when Redis answers after it. */
    CM_ASSERT(!c->finished || c->rl_pending || c->lease == NULL);
    CM_ASSERT(!h2o_linklist_is_linked(&c->cold) || c->n_active == 0);
    CM_ASSERT(!c->stopped || (c->stream_started && c->finished));
    CM_ASSERT(!c->send_inflight || c->stream_started);
    CM_ASSERT(!c->final_sent || c->final_queued);
    CM_ASSERT(!c->final_queued || c->finished);
    CM_ASSERT(!c->closing || (c->req == NULL && c->n_active == 0 && !c->rl_pending));
}

static void on_timer_closed(uv_handle_t *h) {
    gw_call *c = h->data;
    CM_ASSERT(c->closing);
    for (uint32_t i = 0; i < c->rq.n; i++) {
        cm_buf_fini(&c->ch[i].text);
        gw_logprobs_fini(&c->ch[i].lp);
        /* Streams count calls without keeping them (calls stays NULL). */
        for (uint32_t k = 0; c->ch[i].calls != NULL && k < c->ch[i].n_calls; k++)
            cm_buf_fini(&c->ch[i].calls[k].args);
        free(c->ch[i].calls);
    }
    cm_buf_fini(&c->pending);
    cm_buf_fini(&c->sending);
    gw_request_fini(&c->rq);
    free(c);
}

static void maybe_free(gw_call *c) {
    call_check(c);
    if (c->req != NULL || c->n_active > 0 || c->rl_pending || c->closing)
        return;
    if (h2o_linklist_is_linked(&c->cold))
        h2o_linklist_unlink(&c->cold);
    c->closing = 1;
    c->t->calls--;
    cm_series_add(c->t->srv->metrics.inflight, -1);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* emit_child sends sp (a child of the server span) with a fresh span id over [start, end]. */
static void emit_child(gw_otlp *x, gw_span *sp, int64_t start_unix_ns, int64_t end_unix_ns) {
    if (cm_id_random_hex(CM_TRACE_SPAN_HEX / 2, sp->span_id, sizeof sp->span_id) != CM_OK)
        return;
    sp->start_unix_ns = start_unix_ns;
    sp->end_unix_ns = end_unix_ns > start_unix_ns ? end_unix_ns : start_unix_ns;
    gw_otlp_emit(x, sp);
}

/* export_worker_spans rebuilds the worker's queue, prefill and decode spans of choice 0 from
 * the durations in its Finished.timing (measured on the worker's clock), laid end to end and
 * ending when the Finished arrived here. Only durations cross the wire, never clock readings,
 * so no clock skew between hosts shows; each span is clamped to start no earlier than the
 * Submit was sent (the network time is then inside the queue span). */
static void export_worker_spans(gw_call *c, gw_otlp *x, gw_span *sp, int64_t mono_to_unix) {
    static const char *const names[3] = {"worker.queue", "worker.prefill", "worker.decode"};
    double ms[3] = {c->queue_ms, c->prefill_ms, c->decode_ms};
    int64_t end = c->t_fin_ns, bounds[4];
    bounds[3] = end;
    for (int i = 2; i >= 0; i--) {
        double d = ms[i] > 0 && ms[i] < 1e9 ? ms[i] * 1e6 : 0;
        end -= (int64_t)d;
        bounds[i] = end > c->t_routed_ns ? end : c->t_routed_ns;
    }
    for (int i = 0; i < 3; i++) {
        snprintf(sp->name, sizeof sp->name, "%s", names[i]);
        emit_child(x, sp, bounds[i] + mono_to_unix, bounds[i + 1] + mono_to_unix);
    }
}

/* export_spans hands the request's spans to the OTLP exporter: the gateway's server span (the
 * parent the worker was given) and as its children the rate-limit check (when it ran), the
 * routing (worker choice up to the Submits sent) and the worker's queue/prefill/decode. */
static void export_spans(gw_call *c, int status, int64_t now_mono_ns) {
    gw_otlp *x = c->t->srv->otlp;
    struct timespec ts;
    int64_t unix_now, mono_to_unix;
    gw_span sp;
    if (x == NULL || c->trace.trace_id[0] == '\0')
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    unix_now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    mono_to_unix = unix_now - now_mono_ns;
    memset(&sp, 0, sizeof sp);
    memcpy(sp.trace_id, c->trace.trace_id, sizeof sp.trace_id);
    memcpy(sp.span_id, c->trace.span_id, sizeof sp.span_id);
    memcpy(sp.parent_id, c->trace.parent_id, sizeof sp.parent_id);
    snprintf(sp.name, sizeof sp.name, "POST %s", route_name(c->api));
    sp.kind = GW_SPAN_SERVER;
    sp.start_unix_ns = c->t0_ns + mono_to_unix;
    sp.end_unix_ns = unix_now;
    sp.http_status = status;
    snprintf(sp.route, sizeof sp.route, "%s", route_name(c->api));
    snprintf(sp.model, sizeof sp.model, "%s", c->rq.model != NULL ? c->rq.model : "");
    snprintf(sp.request_id, sizeof sp.request_id, "%s", c->rid);
    gw_otlp_emit(x, &sp);
    memcpy(sp.parent_id, c->trace.span_id, sizeof sp.parent_id);
    sp.kind = GW_SPAN_INTERNAL;
    sp.http_status = 0;
    if (c->t_admitted_ns != 0) {
        snprintf(sp.name, sizeof sp.name, "ratelimit");
        emit_child(x, &sp, c->t0_ns + mono_to_unix, c->t_admitted_ns + mono_to_unix);
    }
    if (c->t_routed_ns == 0)
        return;
    snprintf(sp.served_model, sizeof sp.served_model, "%.63s", c->served);
    snprintf(sp.worker, sizeof sp.worker, "%.95s", c->worker != NULL ? c->worker->address : "");
    snprintf(sp.name, sizeof sp.name, "route");
    emit_child(x, &sp, c->t_route_ns + mono_to_unix, c->t_routed_ns + mono_to_unix);
    if (c->t_fin_ns != 0 && c->has_timing)
        export_worker_spans(c, x, &sp, mono_to_unix);
}

/* End-of-request bookkeeping, exactly once: lease + usage reconcile, metrics, log line. */
static void call_finish(gw_call *c, int status) {
    gw_server *s = c->t->srv;
    uint32_t prompt = 0, completion = 0;
    int64_t now = cm_clock_mono_ns();
    double ttfb = c->t_first_ns ? (c->t_first_ns - c->t0_ns) / 1e9 : -1;
    char st[12], pt[12], ctok[12], ttfb_ms[24], dur_ms[24];
    if (c->finished)
        return;
    c->finished = 1;
    c->status = status;
    uv_timer_stop(&c->timer);
    if (h2o_linklist_is_linked(&c->cold))
        h2o_linklist_unlink(&c->cold);
    if (c->pending_gauge != NULL) {
        cm_series_add(c->pending_gauge, -1);
        c->pending_gauge = NULL;
    }
    for (uint32_t i = 0; i < c->rq.n; i++) {
        if (i == 0)
            prompt = c->ch[i].prompt_tokens;
        completion += c->ch[i].completion_tokens;
    }
    if (c->lease != NULL && !c->rl_pending) {
        /* Released whatever the verdict (a timed-out admission may still run in Redis); a
         * 503 is a refusal: not counted against the tenant's requests. */
        int64_t reserved =
            (int64_t)c->rq.prompt_token_estimate + (int64_t)c->rq.n * c->rq.max_tokens;
        gw_ratelimit_release(c->t->rl, c->lease, (int64_t)prompt + (int64_t)completion - reserved,
                             status == 503);
        c->lease = NULL;
    }
    cm_series_add(s->metrics.tokens_prompt, prompt);
    cm_series_add(s->metrics.tokens_completion, completion);
    gw_metrics_request(&s->metrics, route_name(c->api), c->rq.model, status, ttfb,
                       (now - c->t0_ns) / 1e9);
    if (c->worker != NULL)
        gw_metrics_routed(&s->metrics, c->rq.model, c->served, status);
    snprintf(st, sizeof st, "%d", status);
    snprintf(pt, sizeof pt, "%u", prompt);
    snprintf(ctok, sizeof ctok, "%u", completion);
    snprintf(ttfb_ms, sizeof ttfb_ms, "%.2f", ttfb >= 0 ? ttfb * 1e3 : -1.0);
    snprintf(dur_ms, sizeof dur_ms, "%.2f", (now - c->t0_ns) / 1e6);
    export_spans(c, status, now);
    if (s->cfg->log_prompts) {
        /* Explicitly enabled only (log_prompts: true): the first 256 bytes of the prompt. */
        char prompt[257];
        const char *p = c->rq.submit.n_messages > 0
                            ? c->rq.submit.messages[c->rq.submit.n_messages - 1]->content
                            : c->rq.submit.prompt;
        snprintf(prompt, sizeof prompt, "%s", p != NULL ? p : "");
        cm_log(CM_LOG_INFO, c->rid, "request", "trace_id", cm_trace_log_id(&c->trace), "route",
               route_name(c->api), "tenant", c->has_tenant ? c->tenant.name : "-", "model",
               c->rq.model ? c->rq.model : "-", "status", st, "stream",
               c->rq.stream ? "true" : "false", "prompt_tokens", pt, "completion_tokens", ctok,
               "ttfb_ms", ttfb_ms, "duration_ms", dur_ms, "worker",
               c->worker ? c->worker->address : "-", "served_model", c->worker ? c->served : "-",
               "prompt", prompt, NULL);
        return;
    }
    cm_log(CM_LOG_INFO, c->rid, "request", "trace_id", cm_trace_log_id(&c->trace), "route",
           route_name(c->api), "tenant", c->has_tenant ? c->tenant.name : "-", "model",
           c->rq.model ? c->rq.model : "-", "status", st, "stream", c->rq.stream ? "true" : "false",
           "prompt_tokens", pt, "completion_tokens", ctok, "ttfb_ms", ttfb_ms, "duration_ms",
           dur_ms, "worker", c->worker ? c->worker->address : "-", "served_model",
           c->worker ? c->served : "-", NULL);
}

/* The h2o request is being freed (response done or client gone). */
static void on_req_dispose(void *p) {
    gw_call *c = *(gw_call **)p;
    c->req = NULL;
    if (!c->finished) {
        drop_submits(c, 1);
        call_finish(c, 499);
    }
    maybe_free(c);
}

/* add_call_headers adds the served name routed to (it differs from the requested `model`
 * behind an alias) and the rate-limit headers to the response. */
static void add_call_headers(gw_call *c) {
    char v[32];
    if (c->req != NULL && c->worker != NULL && c->served[0] != '\0')
        gw_http_add_header(c->req, "x-sluice-served-model", c->served);
    if (!c->have_verdict || c->req == NULL)
        return;
    if (c->verdict.limit_requests >= 0) {
        snprintf(v, sizeof v, "%" PRId64, c->verdict.limit_requests);
        gw_http_add_header(c->req, "x-ratelimit-limit-requests", v);
        snprintf(v, sizeof v, "%" PRId64, c->verdict.remaining_requests);
        gw_http_add_header(c->req, "x-ratelimit-remaining-requests", v);
        if (c->verdict.reset_requests_ms >= 0) {
            gw_format_duration(c->verdict.reset_requests_ms, v, sizeof v);
            gw_http_add_header(c->req, "x-ratelimit-reset-requests", v);
        }
    }
    if (c->verdict.limit_tokens >= 0) {
        snprintf(v, sizeof v, "%" PRId64, c->verdict.limit_tokens);
        gw_http_add_header(c->req, "x-ratelimit-limit-tokens", v);
        snprintf(v, sizeof v, "%" PRId64,
                 c->verdict.remaining_tokens < 0 ? (int64_t)0 : c->verdict.remaining_tokens);
        gw_http_add_header(c->req, "x-ratelimit-remaining-tokens", v);
        if (c->verdict.reset_tokens_ms >= 0) {
            gw_format_duration(c->verdict.reset_tokens_ms, v, sizeof v);
            gw_http_add_header(c->req, "x-ratelimit-reset-tokens", v);
        }
    }
}

/* ---- streaming ---- */

static void stream_flush(gw_call *c) {
    h2o_iovec_t buf;
    cm_buf tmp;
    if (c->req == NULL || c->stopped || c->send_inflight || c->final_sent)
        return;
    if (c->pending.len == 0 && !c->final_queued)
        return;
    /* Swap: `sending` must stay untouched until proceed (h2o keeps a pointer to it). */
    tmp = c->sending;
    c->sending = c->pending;
    c->pending = tmp;
    cm_buf_reset(&c->pending);
    buf = h2o_iovec_init(c->sending.len ? c->sending.data : "", c->sending.len);
    c->send_inflight = 1;
    if (c->final_queued)
        c->final_sent = 1;
    h2o_send(c->req, &buf, 1, c->final_sent ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req) {
    gw_call *c = (gw_call *)((char *)gen - offsetof(gw_call, gen));
    (void)req;
    c->send_inflight = 0;
    cm_buf_reset(&c->sending);
    stream_flush(c);
    call_check(c);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req) {
    gw_call *c = (gw_call *)((char *)gen - offsetof(gw_call, gen));
    (void)req;
    c->stopped = 1;
    if (!c->finished) {
        drop_submits(c, 1);
        call_finish(c, 499);
    }
    call_check(c);
}

static void stream_start(gw_call *c) {
    if (c->stream_started || c->req == NULL)
        return;
    c->stream_started = 1;
    c->t_first_ns = cm_clock_mono_ns();
    c->req->res.status = 200;
    c->req->res.reason = "OK";
    h2o_add_header(&c->req->pool, &c->req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream"));
    h2o_add_header(&c->req->pool, &c->req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache"));
    gw_http_add_header(c->req, "x-request-id", c->rid);
    add_call_headers(c);
    c->gen.proceed = on_proceed;
    c->gen.stop = on_stop;
    h2o_start_response(c->req, &c->gen);
}

static void stream_append_error(gw_call *c, const gw_error *e) {
    gw_format_error_event(&c->pending, e);
    c->final_queued = 1;
    stream_flush(c);
}

/* ---- completion ---- */

static void usage_of(gw_call *c, gw_usage_out *u) {
    memset(u, 0, sizeof *u);
    for (uint32_t i = 0; i < c->rq.n; i++) {
        if (i == 0) {
            u->prompt_tokens = c->ch[i].prompt_tokens;
            u->cached_tokens = c->ch[i].cached_tokens;
        }
        u->completion_tokens += c->ch[i].completion_tokens;
    }
}

static void call_complete(gw_call *c) {
    gw_usage_out u;
    usage_of(c, &u);
    if (c->req == NULL || c->stopped) {
        call_finish(c, 499);
        return;
    }
    if (c->rq.stream) {
        stream_start(c);
        if (c->rq.include_usage)
            gw_format_usage_chunk(&c->pending, c->api, c->resp_id, c->created_s, c->rq.model, &u);
        cm_buf_append_str(&c->pending, "data: [DONE]\n\n");
        c->final_queued = 1;
        call_finish(c, 200);
        stream_flush(c);
        return;
    } else {
        gw_choice_out outs[64];
        gw_tool_call_out *tcs = NULL;
        uint32_t n_tcs = 0;
        cm_buf body;
        cm_err rv;
        uint32_t n = c->rq.n < 64 ? c->rq.n : 64;
        for (uint32_t i = 0; i < n; i++)
            n_tcs += c->ch[i].n_calls;
        if (n_tcs > 0 && (tcs = calloc(n_tcs, sizeof *tcs)) == NULL)
            n = 0; /* formats an empty body below; out of memory is reported there */
        n_tcs = 0;
        for (uint32_t i = 0; i < n; i++) {
            memset(&outs[i], 0, sizeof outs[i]);
            outs[i].text = c->ch[i].text.len ? c->ch[i].text.data : "";
            outs[i].text_len = c->ch[i].text.len;
            outs[i].tool_calls = tcs != NULL ? &tcs[n_tcs] : NULL;
            outs[i].n_tool_calls = c->ch[i].n_calls;
            for (uint32_t k = 0; k < c->ch[i].n_calls; k++, n_tcs++) {
                tool_call_acc *a = &c->ch[i].calls[k];
                tcs[n_tcs].id = a->id;
                tcs[n_tcs].name = a->name;
                tcs[n_tcs].arguments = a->args.len ? a->args.data : "";
                tcs[n_tcs].arguments_len = a->args.len;
            }
            outs[i].finish_reason = c->ch[i].finish;
            outs[i].logprobs = c->rq.logprobs ? &c->ch[i].lp : NULL;
        }
        cm_buf_init(&body, 64u << 20);
        rv = n == 0 && c->rq.n > 0 ? CM_ERR_NOMEM
                                   : gw_format_response(&body, c->api, c->resp_id, c->created_s,
                                                        c->rq.model, outs, n, &u);
        free(tcs);
        if (rv != CM_OK) {
            gw_error e;
            cm_buf_fini(&body);
            gw_error_set(&e, 500, GW_ERRT_SERVER, "internal_error", NULL,
                         "could not format the response: %s", cm_strerror(rv));
            call_fail(c, &e);
            return;
        }
        c->t_first_ns = cm_clock_mono_ns();
        add_call_headers(c);
        call_finish(c, 200);
        gw_http_send_json(c->req, 200, c->rid, body.data, body.len);
        cm_buf_fini(&body);
    }
}

static void call_fail(gw_call *c, const gw_error *e) {
    drop_submits(c, 1);
    if (c->finished)
        return;
    call_finish(c, e->status);
    if (c->req == NULL || c->stopped)
        return;
    if (c->stream_started) {
        stream_append_error(c, e);
    } else {
        add_call_headers(c);
        gw_http_send_error(c->req, c->rid, e);
    }
}

static void on_deadline(uv_timer_t *timer) {
    gw_call *c = timer->data;
    gw_error e;
    gw_error_set(&e, 504, GW_ERRT_TIMEOUT, "deadline_exceeded", NULL,
                 "the request did not finish within its deadline");
    call_fail(c, &e);
    maybe_free(c);
}

static uint64_t affinity_of(const gw_request *rq) {
    const char *s = rq->submit.prompt;
    uint64_t h = 1469598103934665603ULL;
    size_t n;
    if (rq->submit.n_messages > 0)
        s = rq->submit.messages[0]->content;
    if (s == NULL)
        return 0;
    /* The leading bytes stand for the shared prefix (system prompt, few-shot header). */
    n = strnlen(s, 256);
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static void route_and_submit(gw_call *c, const gw_worker *exclude) {
    gw_error e;
    gw_worker *w = NULL;
    gw_pool *pool = &c->t->srv->pool;
    uint32_t cold_ms = c->t->srv->cfg->cold_start_wait_ms;
    cm_err rv;
    c->t_route_ns = cm_clock_mono_ns();
    rv = gw_pool_route(pool, c->rq.model, affinity_of(&c->rq), exclude, &w, c->served, NULL);
    if (rv == CM_ERR_NOT_FOUND && !gw_pool_has_model(pool, c->rq.model)) {
        gw_error_set(&e, 404, GW_ERRT_INVALID, "model_not_found", "model",
                     "The model '%s' does not exist or has no worker", c->rq.model);
        call_fail(c, &e);
        return;
    }
    if (rv == CM_ERR_OVERLOADED) {
        /* Workers exist and answer, but are full: not the same as "no worker". */
        gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "overloaded", NULL,
                     "every worker of model '%s' is busy; retry later", c->rq.model);
        e.retry_after_s = 1;
        call_fail(c, &e);
        return;
    }
    if (rv != CM_OK) {
        /* A known model with no usable worker: wait for one (scale from zero) on the first
         * routing only, up to cold_start_wait_ms; the deadline timer still bounds it. */
        if (exclude == NULL && cold_ms > 0 && !atomic_load(&c->t->srv->stopping)) {
            int64_t now = cm_clock_mono_ms();
            if (c->cold_until_ms == 0)
                c->cold_until_ms = now + cold_ms;
            if (now < c->cold_until_ms) {
                if (!h2o_linklist_is_linked(&c->cold))
                    h2o_linklist_insert(&c->t->cold_waiters, &c->cold);
                gw_thread_cold_wake(c->t);
                return;
            }
        }
        gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "no_capacity", NULL,
                     c->cold_until_ms != 0
                         ? "no worker of model '%s' became available in time; retry later"
                         : "no worker of model '%s' is available; retry later",
                     c->rq.model);
        e.retry_after_s = 1;
        call_fail(c, &e);
        return;
    }
    c->worker = w;
    c->epoch = atomic_load(&w->epoch);
    c->rq.submit.model = c->served;
    for (uint32_t i = 0; i < c->rq.n; i++) {
        gw_submit_ids ids = {0};
        Sluice__Envelope env;
        uint64_t id;
        if (gw_thread_slot_alloc(c->t, c, i, &id) != 0) {
            gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "overloaded", NULL,
                         "the gateway is at capacity; retry later");
            e.retry_after_s = 1;
            call_fail(c, &e);
            return;
        }
        ids.request_id = id;
        ids.choice = i;
        ids.tenant = c->has_tenant ? c->tenant.name : NULL;
        ids.gateway_id = c->rid;
        ids.deadline_unix_ms = c->deadline_unix_ms;
        gw_request_envelope(&c->rq, &ids, &env);
        rv = gw_worker_send(w, &env);
        if (rv == CM_ERR_NOMEM) {
            gw_thread_slot_free(c->t, id);
            gw_error_set(&e, 500, GW_ERRT_SERVER, "internal_error", NULL, "out of memory");
            call_fail(c, &e);
            return;
        }
        if (rv != CM_OK) {
            gw_thread_slot_free(c->t, id);
            if (!c->retried && i == 0) {
                c->retried = 1;
                cm_series_inc(c->t->srv->metrics.retries);
                route_and_submit(c, w);
                return;
            }
            gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "overloaded", NULL,
                         "the worker is not accepting requests; retry later");
            e.retry_after_s = 1;
            call_fail(c, &e);
            return;
        }
        c->ch[i].id = id;
        c->n_active++;
        atomic_fetch_add(&w->inflight, 1);
    }
    c->t_routed_ns = cm_clock_mono_ns();
}

static void on_admitted(void *arg, const gw_rl_verdict *v) {
    gw_call *c = arg;
    c->rl_pending = 0;
    if (c->t->rl != NULL && c->has_tenant &&
        (c->tenant.rpm || c->tenant.tpm || c->tenant.max_concurrency))
        c->t_admitted_ns = cm_clock_mono_ns(); /* the check ran (ends its span) */
    c->verdict = *v;
    c->have_verdict = 1;
    if (c->req == NULL || c->finished) {
        /* Client left while we waited: give everything back. */
        if (c->lease != NULL)
            gw_ratelimit_release(
                c->t->rl, c->lease,
                -(int64_t)(c->rq.prompt_token_estimate + (uint64_t)c->rq.n * c->rq.max_tokens), 1);
        c->lease = NULL;
        maybe_free(c);
        return;
    }
    if (!v->allowed) {
        gw_error e;
        gw_ratelimit_refusal(v, c->tenant.name, &e);
        if (!v->redis_failed)
            gw_metrics_ratelimited(&c->t->srv->metrics, c->tenant.name, v->limit);
        call_fail(c, &e);
        maybe_free(c);
        return;
    }
    route_and_submit(c, NULL);
    maybe_free(c);
}

static uint32_t parse_timeout_header(h2o_req_t *req, uint32_t def, uint32_t max) {
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-sluice-timeout-ms"), -1);
    char tmp[16];
    unsigned long v;
    char *end;
    if (i < 0)
        return def;
    if (req->headers.entries[i].value.len == 0 || req->headers.entries[i].value.len >= sizeof tmp)
        return def;
    memcpy(tmp, req->headers.entries[i].value.base, req->headers.entries[i].value.len);
    tmp[req->headers.entries[i].value.len] = '\0';
    v = strtoul(tmp, &end, 10);
    if (*end != '\0' || v == 0)
        return def;
    return v > max ? max : (uint32_t)v;
}

void gw_call_trace_begin(h2o_req_t *req, cm_trace *tr, char *tp, size_t cap) {
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("traceparent"), -1);
    memset(tr, 0, sizeof *tr);
    tp[0] = '\0';
    if (i >= 0 && cm_trace_parse_parent(req->headers.entries[i].value.base,
                                        req->headers.entries[i].value.len, tr) == CM_OK) {
        /* tracestate only travels with a valid traceparent (the spec's rule). */
        i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("tracestate"), -1);
        if (i >= 0)
            cm_trace_accept_state(req->headers.entries[i].value.base,
                                  req->headers.entries[i].value.len, tr);
    }
    if (cm_trace_begin(tr) != CM_OK || cm_trace_format(tr, tp, cap) != CM_OK) {
        tr->trace_id[0] = '\0'; /* no randomness: no trace, the request still runs */
        tp[0] = '\0';
        return;
    }
    gw_http_add_header(req, "traceparent", tp);
}

cm_err gw_call_admissible(gw_thread *t, const char *route, const char *model, gw_error *e) {
    gw_server *s = t->srv;
    if (!gw_pool_has_model(&s->pool, model)) {
        gw_error_set(e, 404, GW_ERRT_INVALID, "model_not_found", "model",
                     "The model '%s' does not exist or has no worker", model);
        gw_metrics_request(&s->metrics, route, NULL, 404, -1, 0);
        return CM_ERR_NOT_FOUND;
    }
    if (t->calls >= t->max_calls) {
        gw_error_set(e, 503, GW_ERRT_UNAVAILABLE, "overloaded", NULL,
                     "the gateway is at its in-flight limit; retry later");
        e->retry_after_s = 1;
        gw_metrics_request(&s->metrics, route, model, 503, -1, 0);
        return CM_ERR_OVERLOADED;
    }
    return CM_OK;
}

void gw_call_start(gw_thread *t, h2o_req_t *req, gw_api api, const char *request_id,
                   const gw_tenant *tenant) {
    gw_server *s = t->srv;
    const gw_config *cfg = s->cfg;
    gw_request rq;
    gw_error e;
    gw_call *c;
    gw_call **ref;
    uint32_t timeout_ms;
    cm_err rv;
    int64_t t0 = cm_clock_mono_ns();
    cm_trace tr;
    char tp[CM_TRACEPARENT_LEN + 1];

    gw_call_trace_begin(req, &tr, tp, sizeof tp);
    rv = gw_request_parse(req->entity.base, req->entity.len, api, &cfg->limits, &rq, &e);
    if (rv != CM_OK) {
        gw_metrics_request(&s->metrics, route_name(api), NULL, e.status, -1,
                           (cm_clock_mono_ns() - t0) / 1e9);
        cm_log(CM_LOG_INFO, request_id, "request refused", "trace_id", cm_trace_log_id(&tr),
               "route", route_name(api), "status", e.status == 413 ? "413" : "400", "param",
               e.param, "reason", e.message, NULL);
        gw_http_send_error(req, request_id, &e);
        return;
    }
    if (gw_call_admissible(t, route_name(api), rq.model, &e) != CM_OK) {
        gw_http_send_error(req, request_id, &e);
        gw_request_fini(&rq);
        return;
    }
    c = calloc(1, sizeof *c + rq.n * sizeof(choice));
    ref = c != NULL ? h2o_mem_alloc_shared(&req->pool, sizeof *ref, on_req_dispose) : NULL;
    if (ref == NULL) {
        free(c);
        gw_error_set(&e, 500, GW_ERRT_SERVER, "internal_error", NULL, "out of memory");
        gw_http_send_error(req, request_id, &e);
        gw_request_fini(&rq);
        return;
    }
    *ref = c;
    c->t = t;
    c->req = req;
    c->api = api;
    c->rq = rq;
    c->t0_ns = t0;
    c->created_s = cm_clock_unix_ms() / 1000;
    snprintf(c->rid, sizeof c->rid, "%s", request_id);
    c->trace = tr;
    memcpy(c->traceparent, tp, sizeof tp);
    /* Carried to the worker in every Submit of this call (pointers into c, which outlives
     * them). */
    c->rq.submit.traceparent = c->traceparent[0] ? c->traceparent : NULL;
    c->rq.submit.tracestate = c->trace.tracestate[0] ? c->trace.tracestate : NULL;
    snprintf(c->resp_id, sizeof c->resp_id, "%s-%s", api == GW_API_CHAT ? "chatcmpl" : "cmpl",
             request_id);
    if (tenant != NULL) {
        c->tenant = *tenant;
        c->has_tenant = 1;
    }
    for (uint32_t i = 0; i < rq.n; i++) {
        cm_buf_init(&c->ch[i].text, TEXT_MAX_BYTES);
        gw_logprobs_init(&c->ch[i].lp, TEXT_MAX_BYTES);
    }
    cm_buf_init(&c->pending, STREAM_MAX_BYTES);
    cm_buf_init(&c->sending, STREAM_MAX_BYTES);
    uv_timer_init(&t->loop, &c->timer);
    c->timer.data = c;
    t->calls++;
    cm_series_add(s->metrics.inflight, 1);
    if (cm_metric_series(s->metrics.pending, (const char *const[]){c->rq.model},
                         &c->pending_gauge) == CM_OK)
        cm_series_add(c->pending_gauge, 1);
    else
        c->pending_gauge = NULL;
    timeout_ms = parse_timeout_header(req, cfg->deadline_ms, cfg->max_deadline_ms);
    c->deadline_unix_ms = (uint64_t)cm_clock_unix_ms() + timeout_ms;
    uv_timer_start(&c->timer, on_deadline, timeout_ms, 0);

    if (t->rl != NULL && c->has_tenant &&
        (c->tenant.rpm || c->tenant.tpm || c->tenant.max_concurrency)) {
        c->rl_pending = 1;
        gw_ratelimit_admit(t->rl, &c->tenant,
                           c->rq.prompt_token_estimate + c->rq.n * c->rq.max_tokens, c->rid,
                           on_admitted, c, &c->lease);
    } else {
        gw_rl_verdict v = {.allowed = 1,
                           .limit_requests = -1,
                           .remaining_requests = -1,
                           .limit_tokens = -1,
                           .remaining_tokens = -1,
                           .reset_requests_ms = -1,
                           .reset_tokens_ms = -1};
        c->rl_pending = 1;
        on_admitted(c, &v);
    }
}

static const char *finish_name(Sluice__FinishReason r) {
    switch (r) {
    case SLUICE__FINISH_REASON__FINISH_REASON_LENGTH:
        return "length";
    case SLUICE__FINISH_REASON__FINISH_REASON_TOOL_CALLS:
        return "tool_calls";
    default:
        return "stop";
    }
}

static void on_text(gw_call *c, uint32_t idx, const char *text, size_t len,
                    const Sluice__Tokens *tok, const char *finish) {
    choice *ch = &c->ch[idx];
    if (c->rq.stream) {
        if (len == 0 && finish == NULL && (tok == NULL || tok->n_logprobs == 0))
            return;
        stream_start(c);
        gw_format_chunk(&c->pending, c->api, c->resp_id, c->created_s, c->rq.model, idx,
                        c->api == GW_API_CHAT && !ch->role_sent, text, len, finish, tok,
                        c->rq.include_usage);
        ch->role_sent = 1;
        stream_flush(c);
    } else {
        if (len > 0 && cm_buf_append(&ch->text, text, len) != CM_OK) {
            gw_error e;
            gw_error_set(&e, 500, GW_ERRT_SERVER, "internal_error", NULL,
                         "the completion is larger than the gateway's response limit");
            call_fail(c, &e);
            return;
        }
        if (tok != NULL && c->rq.logprobs)
            gw_logprobs_add(&ch->lp, c->api, tok);
    }
}

/* Tool-call deltas of one Tokens event: streamed as OpenAI's tool_calls chunks, or assembled
 * per call for the non-streaming body. Indexes must arrive in order (0, 1, ...), each new
 * call with its name; anything else is a worker bug answered with a 502. */
static cm_err on_tool_deltas(gw_call *c, uint32_t idx, const Sluice__Tokens *tok) {
    choice *ch = &c->ch[idx];
    for (size_t i = 0; i < tok->n_tool_calls; i++) {
        const Sluice__ToolCallDelta *d = tok->tool_calls[i];
        const char *args = d->arguments != NULL ? d->arguments : "";
        int is_new = d->index == ch->n_calls;
        if (d->index >= GW_MAX_TOOL_CALLS || d->index > ch->n_calls ||
            (d->index + 1 < ch->n_calls) || (is_new && (d->name == NULL || d->id == NULL)))
            return CM_ERR_PROTOCOL;
        if (c->rq.stream) {
            stream_start(c);
            gw_format_tool_chunk(&c->pending, c->resp_id, c->created_s, c->rq.model, idx,
                                 !ch->role_sent, d, c->rq.include_usage);
            ch->role_sent = 1;
            if (is_new)
                ch->n_calls++;
            continue;
        }
        if (ch->calls == NULL) {
            ch->calls = calloc(GW_MAX_TOOL_CALLS, sizeof *ch->calls);
            if (ch->calls == NULL)
                return CM_ERR_NOMEM;
        }
        if (is_new) {
            tool_call_acc *a = &ch->calls[ch->n_calls++];
            snprintf(a->id, sizeof a->id, "%s", d->id);
            snprintf(a->name, sizeof a->name, "%s", d->name);
            cm_buf_init(&a->args, GW_MAX_TOOL_ARGUMENTS_BYTES);
        }
        if (cm_buf_append(&ch->calls[d->index].args, args, strlen(args)) != CM_OK)
            return CM_ERR_LIMIT;
    }
    if (c->rq.stream)
        stream_flush(c);
    return CM_OK;
}

void gw_call_on_event(gw_thread *t, gw_worker *w, Sluice__Envelope *env) {
    Sluice__Event *ev = env->event;
    gw_slot *slot = gw_thread_slot_find(t, ev->request_id);
    gw_call *c;
    choice *ch;
    uint32_t idx;
    if (slot == NULL || slot->call->worker != w)
        goto done; /* late event of a cancelled or retried request */
    c = slot->call;
    idx = slot->choice;
    ch = &c->ch[idx];
    switch (ev->kind_case) {
    case SLUICE__EVENT__KIND_TOKENS:
        if (ev->tokens == NULL)
            break;
        ch->started = 1;
        on_text(c, idx, ev->tokens->text ? ev->tokens->text : "",
                ev->tokens->text ? strlen(ev->tokens->text) : 0, ev->tokens, NULL);
        if (ev->tokens->n_tool_calls > 0 && !c->finished) {
            cm_err rv = on_tool_deltas(c, idx, ev->tokens);
            if (rv != CM_OK) {
                gw_error e;
                gw_error_set(&e, 502, GW_ERRT_SERVER, "worker_error", NULL,
                             "the worker sent malformed tool calls (%s)", cm_strerror(rv));
                call_fail(c, &e);
            }
        }
        break;
    case SLUICE__EVENT__KIND_FINISHED: {
        Sluice__Finished *f = ev->finished;
        if (f == NULL)
            break;
        gw_thread_slot_free(t, ch->id);
        ch->id = 0;
        c->n_active--;
        dec_inflight(w);
        if (f->reason == SLUICE__FINISH_REASON__FINISH_REASON_CANCELLED ||
            f->reason == SLUICE__FINISH_REASON__FINISH_REASON_ERROR) {
            gw_error e;
            gw_error_set(&e, 500, GW_ERRT_SERVER, "worker_error", NULL,
                         "the worker ended the generation (%s)",
                         f->reason == SLUICE__FINISH_REASON__FINISH_REASON_CANCELLED ? "cancelled"
                                                                                     : "error");
            call_fail(c, &e);
            break;
        }
        ch->done = 1;
        ch->finish = finish_name(f->reason);
        if (idx == 0) {
            c->t_fin_ns = cm_clock_mono_ns();
            c->has_timing = f->timing != NULL;
            if (f->timing != NULL) {
                c->queue_ms = f->timing->has_queue_ms ? f->timing->queue_ms : 0;
                c->prefill_ms = f->timing->has_prefill_ms ? f->timing->prefill_ms : 0;
                c->decode_ms = f->timing->has_decode_ms ? f->timing->decode_ms : 0;
            }
        }
        if (f->usage != NULL) {
            ch->prompt_tokens = f->usage->prompt_tokens;
            ch->completion_tokens = f->usage->completion_tokens;
            ch->cached_tokens =
                f->usage->has_cached_prompt_tokens ? f->usage->cached_prompt_tokens : 0;
        }
        if (!c->finished) {
            const char *tail = f->text ? f->text : "";
            on_text(c, idx, tail, strlen(tail), NULL, ch->finish);
        }
        c->n_done++;
        if (c->n_done == c->rq.n && !c->finished)
            call_complete(c);
        break;
    }
    case SLUICE__EVENT__KIND_ERROR: {
        gw_error e;
        int any_started = 0;
        unsigned code = ev->error ? ev->error->code : CM_ERR_INTERNAL;
        gw_thread_slot_free(t, ch->id);
        ch->id = 0;
        c->n_active--;
        dec_inflight(w);
        for (uint32_t i = 0; i < c->rq.n; i++)
            any_started |= c->ch[i].started;
        if (!any_started && !c->retried && !c->finished &&
            (code == CM_ERR_CLOSED || code == CM_ERR_OVERLOADED)) {
            /* Draining or full before the first token: one retry elsewhere. */
            drop_submits(c, 1);
            c->retried = 1;
            cm_series_inc(t->srv->metrics.retries);
            for (uint32_t i = 0; i < c->rq.n; i++)
                c->ch[i].done = 0;
            c->n_done = 0;
            route_and_submit(c, w);
            break;
        }
        gw_error_from_worker(&e, code, ev->error ? ev->error->message : NULL);
        if (code == CM_ERR_UNSUPPORTED || code == CM_ERR_INVALID || code == CM_ERR_LIMIT)
            name_constraint_param(&e);
        call_fail(c, &e);
        break;
    }
    default:
        break;
    }
    maybe_free(c);
done:
    sluice__envelope__free_unpacked(env, NULL);
}

/* The worker reports schema and tool problems (compiled before any generation) as
 * "<param>: <detail>", e.g. "tools[0].function.parameters: unsupported JSON Schema keyword
 * 'patternProperties' at /properties/a": the prefix becomes the error's param. */
static void name_constraint_param(gw_error *e) {
    const char *sep = strstr(e->message, ": ");
    size_t n = sep != NULL ? (size_t)(sep - e->message) : 0;
    if (n == 0 || n >= sizeof e->param)
        return;
    if (strncmp(e->message, "response_format", 15) != 0 && strncmp(e->message, "tools[", 6) != 0)
        return;
    memcpy(e->param, e->message, n);
    e->param[n] = '\0';
    snprintf(e->code, sizeof e->code, "%s",
             strstr(e->message, "unsupported") != NULL ? "unsupported_schema" : "invalid_schema");
}

static void call_worker_lost(gw_call *c) {
    int any_started = 0;
    gw_worker *w = c->worker;
    gw_error e;
    drop_submits(c, 0);
    if (c->finished)
        return;
    for (uint32_t i = 0; i < c->rq.n; i++)
        any_started |= c->ch[i].started;
    if (!any_started && !c->retried) {
        c->retried = 1;
        cm_series_inc(c->t->srv->metrics.retries);
        for (uint32_t i = 0; i < c->rq.n; i++)
            c->ch[i].done = 0;
        c->n_done = 0;
        cm_log(CM_LOG_WARN, c->rid, "worker lost before the first token; retrying", "trace_id",
               cm_trace_log_id(&c->trace), "worker", w->address, NULL);
        route_and_submit(c, w);
        return;
    }
    gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "worker_lost", NULL,
                 "the worker serving this request went away");
    e.retry_after_s = 1;
    call_fail(c, &e);
}

void gw_call_on_lost(gw_thread *t, gw_worker *w, uint32_t epoch) {
    for (uint32_t i = 0; i < t->n_slots; i++) {
        gw_slot *s = &t->slots[i];
        gw_call *c;
        if (s->id == 0 || s->call == NULL || s->call->worker != w || s->call->epoch > epoch)
            continue;
        c = s->call;
        call_worker_lost(c);
        maybe_free(c);
    }
}

/* 1 when the peer of an HTTP/1 request has closed its side (EOF or error on a peek). */
static int http1_peer_gone(h2o_req_t *req) {
    h2o_socket_t *sock;
    char b;
    ssize_t n;
    int fd;
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
        return 0; /* HTTP/2: h2o reads the connection and disposes the streams itself */
    sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL || (fd = h2o_socket_get_fd(sock)) < 0)
        return 0;
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return 1;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

void gw_call_probe_disconnects(gw_thread *t) {
    for (uint32_t i = 0; i < t->n_slots; i++) {
        gw_slot *s = &t->slots[i];
        gw_call *c;
        gw_error e;
        if (s->id == 0 || s->call == NULL) /* free, or a gw_tokenize op's */
            continue;
        c = s->call;
        if (c->req == NULL || c->finished || c->stream_started || !http1_peer_gone(c->req))
            continue;
        /* Cancel at the worker at once; the 499 answer only lets h2o free the request (its
         * write fails on the closed socket). */
        drop_submits(c, 1);
        call_finish(c, 499);
        gw_error_set(&e, 499, GW_ERRT_INVALID, "client_closed_request", NULL,
                     "the client closed the connection");
        gw_http_send_error(c->req, c->rid, &e);
        maybe_free(c);
    }
}

size_t gw_call_cold_tick(gw_thread *t) {
    h2o_linklist_t list;
    size_t left = 0;
    h2o_linklist_init_anchor(&list);
    h2o_linklist_insert_list(&list, &t->cold_waiters);
    while (!h2o_linklist_is_empty(&list)) {
        gw_call *c = H2O_STRUCT_FROM_MEMBER(gw_call, cold, list.next);
        h2o_linklist_unlink(&c->cold);
        if (c->req != NULL && !c->finished && http1_peer_gone(c->req)) {
            gw_error e;
            call_finish(c, 499);
            gw_error_set(&e, 499, GW_ERRT_INVALID, "client_closed_request", NULL,
                         "the client closed the connection");
            gw_http_send_error(c->req, c->rid, &e);
        } else if (c->req != NULL && !c->finished) {
            route_and_submit(c, NULL); /* relinks c while it still has to wait */
        }
        maybe_free(c);
    }
    for (h2o_linklist_t *l = t->cold_waiters.next; l != &t->cold_waiters; l = l->next)
        left++;
    return left;
}
