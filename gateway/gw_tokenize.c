/*
 * gw_tokenize: see gw_tokenize.h. One op per HTTP request: parse -> admit -> pick -> send ->
 * answer, with the deadline timer bounding everything after admission.
 */
#include "gw_tokenize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_buf.h"
#include "cm_clock.h"
#include "cm_log.h"
#include "gw_call.h"
#include "gw_format.h"
#include "gw_http.h"
#include "gw_ratelimit.h"

#define ANSWER_MAX_BYTES (32u << 20) /* JSON of the largest answer a worker may send (4 MiB) */

typedef struct gw_tok_op {
    gw_thread *t;
    h2o_req_t *req; /* NULL once h2o disposed the request */
    const gw_route *route;
    gw_tokenize_request tr;
    char rid[CM_ID_EXTERNAL_MAX + 1];
    cm_trace trace;                           /* the client's trace (or ours) and our span */
    char traceparent[CM_TRACEPARENT_LEN + 1]; /* ours, sent to the worker and the client */
    char served[GW_NAME_MAX];
    gw_tenant tenant;
    int has_tenant;
    gw_worker *worker;
    uint32_t epoch;
    uint64_t wire_id;    /* slot of the Tokenize in flight; 0 = none */
    h2o_linklist_t link; /* in t->tokenize_ops while wire_id != 0 */
    int rl_pending;      /* waiting for the rate limiter */
    gw_rl_lease *lease;  /* admission sent to Redis, released in finish */
    uint32_t timeout_ms;
    uv_timer_t timer;
    int finished, closing;
    int64_t t0_ns;
} tok_op;

static void on_timer_closed(uv_handle_t *h) {
    tok_op *op = h->data;
    gw_tokenize_request_fini(&op->tr);
    free(op);
}

static void maybe_free(tok_op *op) {
    if (op->req != NULL || op->rl_pending || op->closing)
        return;
    op->closing = 1;
    op->t->calls--;
    cm_series_add(op->t->srv->metrics.inflight, -1);
    uv_close((uv_handle_t *)&op->timer, on_timer_closed);
}

/* Forgets the Tokenize in flight (its late answer is dropped: no slot). */
static void drop_wire(tok_op *op) {
    if (op->wire_id == 0)
        return;
    gw_thread_slot_free(op->t, op->wire_id);
    op->wire_id = 0;
    h2o_linklist_unlink(&op->link);
}

/* End-of-request bookkeeping, once: lease, metrics, log line. */
static void finish(tok_op *op, int status) {
    gw_server *s = op->t->srv;
    int64_t now = cm_clock_mono_ns();
    char st[12], dur_ms[24];
    if (op->finished)
        return;
    op->finished = 1;
    uv_timer_stop(&op->timer);
    drop_wire(op);
    if (op->lease != NULL && !op->rl_pending) {
        /* No tokens were reserved; a 503 is our refusal, not counted against the tenant. */
        gw_ratelimit_release(op->t->rl, op->lease, 0, status == 503);
        op->lease = NULL;
    }
    gw_metrics_request(&s->metrics, op->route->path, op->tr.model, status, -1,
                       (now - op->t0_ns) / 1e9);
    snprintf(st, sizeof st, "%d", status);
    snprintf(dur_ms, sizeof dur_ms, "%.2f", (now - op->t0_ns) / 1e6);
    cm_log(CM_LOG_INFO, op->rid, "request", "trace_id", cm_trace_log_id(&op->trace), "route",
           op->route->path, "tenant", op->has_tenant ? op->tenant.name : "-", "model",
           op->tr.model ? op->tr.model : "-", "status", st, "duration_ms", dur_ms, "worker",
           op->worker ? op->worker->address : "-", NULL);
}

static void fail(tok_op *op, const gw_error *e) {
    if (op->finished)
        return;
    finish(op, e->status);
    if (op->req != NULL)
        gw_http_send_error(op->req, op->rid, e);
}

static void on_req_dispose(void *p) {
    tok_op *op = *(tok_op **)p;
    op->req = NULL;
    finish(op, 499);
    maybe_free(op);
}

static void on_deadline(uv_timer_t *timer) {
    tok_op *op = timer->data;
    gw_error e;
    gw_error_set(&e, 504, GW_ERRT_TIMEOUT, "deadline_exceeded", NULL,
                 "the worker did not answer within %u ms (a worker older than this gateway "
                 "does not serve %s)",
                 op->timeout_ms, op->route->path);
    fail(op, &e);
}

/* Picks a worker and sends the Tokenize; answers the failures. */
static void route_and_send(tok_op *op) {
    gw_pool *pool = &op->t->srv->pool;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    gw_worker *w = NULL;
    gw_error e;
    cm_err rv = gw_pool_pick(pool, op->tr.model, 0, NULL, &w, op->served);
    if (rv == CM_ERR_NOT_FOUND && !gw_pool_has_model(pool, op->tr.model)) {
        gw_error_set(&e, 404, GW_ERRT_INVALID, "model_not_found", "model",
                     "The model '%s' does not exist or has no worker", op->tr.model);
        fail(op, &e);
        return;
    }
    if (rv != CM_OK) {
        gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE,
                     rv == CM_ERR_OVERLOADED ? "overloaded" : "no_capacity", NULL,
                     "no worker of model '%s' is available; retry later", op->tr.model);
        e.retry_after_s = 1;
        fail(op, &e);
        return;
    }
    if (gw_thread_slot_alloc(op->t, NULL, 0, &op->wire_id) != 0) {
        op->wire_id = 0;
        gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "overloaded", NULL,
                     "the gateway is at capacity; retry later");
        e.retry_after_s = 1;
        fail(op, &e);
        return;
    }
    gw_thread_slot_find(op->t, op->wire_id)->tok = op;
    h2o_linklist_insert(&op->t->tokenize_ops, &op->link);
    op->worker = w;
    op->epoch = atomic_load(&w->epoch);
    op->tr.msg.request_id = op->wire_id;
    op->tr.msg.model = op->served;
    op->tr.msg.gateway_request_id = op->rid;
    op->tr.msg.traceparent = op->traceparent[0] ? op->traceparent : NULL;
    env.msg_case = SLUICE__ENVELOPE__MSG_TOKENIZE;
    env.tokenize = &op->tr.msg;
    rv = gw_worker_send(w, &env);
    if (rv == CM_ERR_NOMEM) {
        gw_error_set(&e, 500, GW_ERRT_SERVER, "internal_error", NULL, "out of memory");
        fail(op, &e);
        return;
    }
    if (rv != CM_OK) {
        gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "overloaded", NULL,
                     "the worker is not accepting requests; retry later");
        e.retry_after_s = 1;
        fail(op, &e);
    }
}

static void on_admitted(void *arg, const gw_rl_verdict *v) {
    tok_op *op = arg;
    op->rl_pending = 0;
    if (op->req == NULL || op->finished) {
        if (op->lease != NULL) /* client left while we waited: give the request back */
            gw_ratelimit_release(op->t->rl, op->lease, 0, 1);
        op->lease = NULL;
        maybe_free(op);
        return;
    }
    if (!v->allowed) {
        gw_error e;
        gw_ratelimit_refusal(v, op->tenant.name, &e);
        if (!v->redis_failed)
            gw_metrics_ratelimited(&op->t->srv->metrics, op->tenant.name, v->limit);
        fail(op, &e);
        maybe_free(op);
        return;
    }
    uv_timer_start(&op->timer, on_deadline, op->timeout_ms, 0);
    route_and_send(op);
    maybe_free(op);
}

void gw_tokenize_start(gw_thread *t, h2o_req_t *req, const gw_route *route, const char *rid,
                       const gw_tenant *tenant) {
    gw_server *s = t->srv;
    gw_tokenize_request tr;
    gw_error e;
    tok_op *op;
    tok_op **ref;
    int64_t t0 = cm_clock_mono_ns();
    if (gw_tokenize_parse(req->entity.base, req->entity.len, route->api, &s->cfg->limits, &tr,
                          &e) != CM_OK) {
        gw_metrics_request(&s->metrics, route->path, NULL, e.status, -1, 0);
        cm_log(CM_LOG_INFO, rid, "request refused", "route", route->path, "param", e.param,
               "reason", e.message, NULL);
        gw_http_send_error(req, rid, &e);
        return;
    }
    if (gw_call_admissible(t, route->path, tr.model, &e) != CM_OK) {
        gw_http_send_error(req, rid, &e);
        gw_tokenize_request_fini(&tr);
        return;
    }
    op = calloc(1, sizeof *op);
    ref = op != NULL ? h2o_mem_alloc_shared(&req->pool, sizeof *ref, on_req_dispose) : NULL;
    if (ref == NULL) {
        free(op);
        gw_error_set(&e, 500, GW_ERRT_SERVER, "internal_error", NULL, "out of memory");
        gw_http_send_error(req, rid, &e);
        gw_tokenize_request_fini(&tr);
        return;
    }
    *ref = op;
    op->t = t;
    op->req = req;
    op->route = route;
    op->tr = tr;
    op->t0_ns = t0;
    op->timeout_ms = s->cfg->deadline_ms;
    snprintf(op->rid, sizeof op->rid, "%s", rid);
    gw_call_trace_begin(req, &op->trace, op->traceparent, sizeof op->traceparent);
    if (tenant != NULL) {
        op->tenant = *tenant;
        op->has_tenant = 1;
    }
    uv_timer_init(&t->loop, &op->timer);
    op->timer.data = op;
    t->calls++;
    cm_series_add(s->metrics.inflight, 1);
    op->rl_pending = 1;
    if (t->rl != NULL && op->has_tenant && (op->tenant.rpm || op->tenant.max_concurrency)) {
        gw_ratelimit_admit(t->rl, &op->tenant, 0, op->rid, on_admitted, op, &op->lease);
    } else {
        gw_rl_verdict v = {.allowed = 1};
        on_admitted(op, &v);
    }
}

/* The answer in vLLM's shape. */
static cm_err render(const tok_op *op, const Sluice__Tokenized *tk, cm_buf *b) {
    cm_err rv = CM_OK;
    if (op->tr.api == GW_API_DETOKENIZE) {
        cm_buf_append_str(b, "{\"prompt\":");
        gw_buf_json_str(b, tk->text != NULL ? tk->text : "", tk->text ? strlen(tk->text) : 0);
        return cm_buf_append_str(b, "}");
    }
    cm_buf_printf(b, "{\"count\":%zu,\"max_model_len\":%u,\"tokens\":[", tk->n_tokens,
                  tk->max_model_len);
    for (size_t i = 0; i < tk->n_tokens; i++)
        cm_buf_printf(b, i ? ",%d" : "%d", tk->tokens[i]);
    cm_buf_append_str(b, "]");
    if (op->tr.msg.return_token_strs) {
        cm_buf_append_str(b, ",\"token_strs\":[");
        for (size_t i = 0; i < tk->n_token_strs; i++) {
            if (i > 0)
                cm_buf_append_str(b, ",");
            /* Invalid UTF-8 (a byte token) becomes U+FFFD. */
            gw_buf_json_str(b, (const char *)tk->token_strs[i].data, tk->token_strs[i].len);
        }
        cm_buf_append_str(b, "]");
    }
    rv = cm_buf_append_str(b, "}");
    return rv;
}

void gw_tokenize_on_event(gw_thread *t, gw_worker *w, Sluice__Envelope *env) {
    const Sluice__Event *ev = env->event;
    gw_slot *slot = gw_thread_slot_find(t, ev->request_id);
    tok_op *op = slot != NULL ? slot->tok : NULL;
    gw_error e;
    if (op == NULL || op->worker != w)
        goto done;
    drop_wire(op);
    if (ev->kind_case == SLUICE__EVENT__KIND_TOKENIZED && ev->tokenized != NULL) {
        cm_buf b;
        cm_buf_init(&b, ANSWER_MAX_BYTES);
        if (render(op, ev->tokenized, &b) != CM_OK) {
            gw_error_set(&e, 500, GW_ERRT_SERVER, "internal_error", NULL,
                         "could not format the answer");
            fail(op, &e);
        } else if (!op->finished) {
            finish(op, 200);
            if (op->req != NULL)
                gw_http_send_json(op->req, 200, op->rid, b.data, b.len);
        }
        cm_buf_fini(&b);
    } else if (ev->kind_case == SLUICE__EVENT__KIND_ERROR && ev->error != NULL) {
        gw_error_from_worker(&e, ev->error->code, ev->error->message);
        if (e.status == 400 && op->tr.api == GW_API_DETOKENIZE)
            snprintf(e.param, sizeof e.param, "tokens");
        else if (e.status == 400 && op->tr.msg.prompt != NULL)
            snprintf(e.param, sizeof e.param, "prompt");
        fail(op, &e);
    } else {
        gw_error_set(&e, 502, GW_ERRT_SERVER, "bad_worker_answer", NULL,
                     "the worker answered %s with an unexpected message", op->route->path);
        fail(op, &e);
    }
done:
    sluice__envelope__free_unpacked(env, NULL);
}

void gw_tokenize_on_lost(gw_thread *t, gw_worker *w, uint32_t epoch) {
    h2o_linklist_t *node = t->tokenize_ops.next;
    while (node != &t->tokenize_ops) {
        tok_op *op = H2O_STRUCT_FROM_MEMBER(tok_op, link, node);
        node = node->next; /* fail unlinks op */
        if (op->worker == w && op->epoch <= epoch) {
            gw_error e;
            gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "worker_lost", NULL,
                         "the connection to the worker was lost; retry");
            e.retry_after_s = 1;
            fail(op, &e);
        }
    }
}
