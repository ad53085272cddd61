/*
 * wk_service: see service.h. Two halves: the transport callbacks (nng threads: decode, push,
 * answer what needs no engine) and the engine thread (everything else).
 */
#include "service.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_clock.h"
#include "cm_err.h"
#include "cm_trace.h"
#include "cm_log.h"
#include "constraint.h"
#include "inbox.h"
#include "prep.h"
#include "prompt.h"
#include "tool_parse.h"
#include "transport.h"
#include "wire.h"

#define STATS_INTERVAL_MS 250
#define IDLE_WAIT_MS 100
#define GRAMMAR_CACHE_ENTRIES 256

/* One request the engine knows about. Engine thread only. */
typedef struct req {
    struct req *prev, *next;
    uint64_t engine_id;
    uint32_t conn_id;
    /* From Submit.traceparent; "-" when none came. */
    char trace_id[CM_TRACE_ID_HEX + 1];
    uint64_t request_id; /* the gateway's id, unique per connection */
    int64_t received_ns;
    int64_t last_token_ns; /* 0 until the first token */
    bool silent;           /* connection gone or already told: send nothing more */
    bool congested;        /* send queue overflowed: cancel pending */
    char log_id[64];       /* gateway_request_id for logs */
    wk_tool_parser *tools; /* tools active: the output is parsed for tool calls; else NULL */
    wk_prepared *prep;     /* non-NULL while the pool prepares it (the pool owns it then) */
} req;

/* Per-connection state on the engine thread. */
typedef struct conn_state {
    struct conn_state *next;
    uint32_t id;
    bool refused; /* incompatible protocol version */
} conn_state;

struct wk_service {
    wk_service_deps d;
    wk_transport *transport;
    wk_inbox *inbox;
    wk_wire_limits limits;
    wk_prompt_ctx prompt;
    wk_grammar_cache *grammars; /* compiled constraints by text */
    wk_prep_ctx prep_ctx;       /* read by the pool threads */
    wk_prep *prep;

    pthread_t thread;
    bool thread_started;
    atomic_bool draining;
    atomic_bool abort_requested;
    atomic_bool stop_thread;
    int64_t drain_deadline_ms; /* set by the engine thread when it sees draining */

    /* engine thread only */
    req *reqs;
    uint32_t n_reqs;
    uint32_t n_preparing; /* reqs with prep != NULL */
    conn_state *conns;
    uint64_t next_engine_id;
    uint64_t rng;
    bool have_congested;
    wk_wire_enc enc; /* events are built here and packed into the connection's buffer */
    int64_t last_stats_ms;
    wk_engine_stats last_es;

    /* status snapshot */
    pthread_mutex_t status_mtx;
    pthread_cond_t status_cond;
    wk_service_status status;
};

/* ---- helpers ---- */

static uint64_t next_rand(wk_service *s) {
    /* xorshift64*: seeds for requests that did not ask for one. */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void send_error(wk_service *s, uint32_t conn_id, uint64_t request_id, cm_err code,
                       const char *msg) {
    /* Any thread: an encoder of its own on the stack (an Error needs no scratch). */
    wk_wire_enc enc;
    wk_wire_enc_init(&enc);
    if (wk_wire_enc_error(&enc, request_id, code, msg) == CM_OK) {
        wk_transport_payload p = {
            .len = wk_wire_enc_len(&enc), .write = wk_wire_enc_write, .arg = &enc};
        wk_transport_send_payload(s->transport, conn_id, &p, WK_SEND_FINAL);
    }
    wk_wire_enc_fini(&enc);
}

static conn_state *find_conn(const wk_service *s, uint32_t id) {
    for (conn_state *c = s->conns; c != NULL; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

static req *find_req(wk_service *s, uint32_t conn_id, uint64_t request_id) {
    for (req *r = s->reqs; r != NULL; r = r->next)
        if (r->conn_id == conn_id && r->request_id == request_id)
            return r;
    return NULL;
}

/*
 * A request's lifecycle on the engine thread:
 *   handle_submit: linked, prep != NULL (the preparation pool holds it; counted in
 *     n_preparing) -> handle_prepared: prep = NULL, then start_prepared hands it to the engine
 *     (or refuses it: unlinked) -> the engine's events through on_event; its last event
 *     (Finished or Error) unlinks it.
 *   A request still preparing is unlinked at once when its connection closes or the worker
 *   shuts down (the pool frees the item), or ends through on_event when cancelled.
 *   silent: nothing more is sent (connection gone, or already answered by cancel_all); the
 *   engine's last event still comes and unlinks it. congested: the gateway did not read fast
 *   enough; cancel_congested cancels it after the step.
 * check_req asserts the legal states of r at every transition (linked, prepared, each event);
 * O(1), so it runs on the token path too. That a live request's connection exists (a walk
 * over the connections) is checked once, when it leaves preparation (handle_prepared).
 */
static void check_req(const wk_service *s, const req *r) {
    CM_ASSERT(r->engine_id != 0 && r->engine_id <= s->next_engine_id);
    CM_ASSERT(r->prev != NULL ? r->prev->next == r : s->reqs == r);
    CM_ASSERT(r->next == NULL || r->next->prev == r);
    CM_ASSERT(s->n_reqs > 0 && s->n_preparing <= s->n_reqs);
    /* Not at the engine yet: no event came, no tool parser, nothing silenced it. */
    CM_ASSERT(r->prep == NULL ||
              (!r->silent && !r->congested && r->last_token_ns == 0 && r->tools == NULL));
}

static void unlink_req(wk_service *s, req *r) {
    if (r->prep != NULL) {
        /* The pool still holds the item: it is freed when it comes back (no req then). */
        wk_prepared_cancel(r->prep);
        s->n_preparing--;
    }
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        s->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    s->n_reqs--;
    if (r->tools != NULL) {
        wk_tool_parser_fini(r->tools);
        free(r->tools);
    }
    free(r);
}

static void link_req(wk_service *s, req *r) {
    r->prev = NULL;
    r->next = s->reqs;
    if (s->reqs != NULL)
        s->reqs->prev = r;
    s->reqs = r;
    s->n_reqs++;
}

/* ---- preparation pool (its threads) ---- */

static void on_prep_ready(void *arg) {
    wk_service *s = arg;
    wk_inbox_wake(s->inbox); /* handle_commands takes the finished items */
}

/* ---- transport callbacks (nng threads) ---- */

/* A Tokenize goes straight to the preparation pool (nothing of it needs the engine thread's
 * bookkeeping: no Cancel, no engine); the engine thread sends the answer (handle_prepared).
 * Takes in->env. */
static void push_tokenize(wk_service *s, uint32_t conn_id, wk_wire_in *in) {
    wk_prepared *p = wk_prepared_new();
    if (p != NULL) {
        p->conn_id = conn_id;
        p->request_id = in->request_id;
        p->env = in->env;
        if (wk_prep_push(s->prep, p) == CM_OK) {
            in->env = NULL;
            return;
        }
        p->env = NULL; /* still in's */
        wk_prepared_free(p);
    }
    send_error(s, conn_id, in->request_id, CM_ERR_OVERLOADED,
               "worker preparation queue is full; retry later or on another worker");
    cm_series_inc(s->d.metrics->rejected_total);
    wk_wire_in_free(in);
}

static void on_open(void *arg, uint32_t conn_id) {
    wk_service *s = arg;
    wk_cmd c = {.kind = WK_CMD_OPEN, .conn_id = conn_id, .received_ns = cm_clock_mono_ns()};
    if (wk_inbox_push(s->inbox, &c) != CM_OK)
        wk_transport_close_conn(s->transport, conn_id);
}

static void on_close(void *arg, uint32_t conn_id) {
    wk_service *s = arg;
    wk_cmd c = {.kind = WK_CMD_CLOSE, .conn_id = conn_id, .received_ns = cm_clock_mono_ns()};
    /* The control cap is far above anything the connection cap allows; a failure here
     * would leak the connection's requests until they finish, so it is logged. */
    if (wk_inbox_push(s->inbox, &c) != CM_OK)
        cm_logf(CM_LOG_ERROR, NULL, "inbox full: lost the close of connection %u", conn_id);
}

static void on_message(void *arg, uint32_t conn_id, const uint8_t *data, size_t len) {
    wk_service *s = arg;
    wk_wire_in in;
    char err[256];
    cm_err rv = wk_wire_decode(data, len, &s->limits, &in, err, sizeof err);
    if (rv != CM_OK) {
        if (in.has_request_id) {
            send_error(s, conn_id, in.request_id, rv == CM_ERR_FORMAT ? CM_ERR_INVALID : rv, err);
            cm_series_inc(s->d.metrics->rejected_total);
        } else {
            cm_series_inc(s->d.metrics->dropped_messages_total);
            cm_logf(CM_LOG_DEBUG, NULL, "connection %u: dropped message: %s", conn_id, err);
        }
        return;
    }
    wk_cmd c = {.conn_id = conn_id, .received_ns = cm_clock_mono_ns()};
    switch (in.kind) {
    case WK_WIRE_HELLO:
        c.kind = WK_CMD_HELLO;
        c.env = in.env;
        break;
    case WK_WIRE_SUBMIT:
        c.kind = WK_CMD_SUBMIT;
        c.env = in.env;
        c.request_id = in.request_id;
        break;
    case WK_WIRE_CANCEL:
        c.kind = WK_CMD_CANCEL;
        c.request_id = in.request_id;
        wk_wire_in_free(&in);
        break;
    case WK_WIRE_TOKENIZE:
        push_tokenize(s, conn_id, &in);
        return;
    default:
        wk_wire_in_free(&in);
        return;
    }
    rv = wk_inbox_push(s->inbox, &c);
    if (rv != CM_OK) {
        if (c.kind == WK_CMD_SUBMIT) {
            send_error(s, conn_id, c.request_id, CM_ERR_OVERLOADED,
                       "worker inbox is full; retry later or on another worker");
            cm_series_inc(s->d.metrics->rejected_total);
        } else {
            cm_series_inc(s->d.metrics->dropped_messages_total);
        }
        if (c.env != NULL)
            sluice__envelope__free_unpacked(c.env, NULL);
    }
}

/* ---- engine events (engine thread, inside wk_engine_step) ---- */

/* Queues the event built last in s->enc for conn_id (engine thread). */
static cm_err send_enc(wk_service *s, uint32_t conn_id, wk_send_class cls) {
    wk_transport_payload p = {
        .len = wk_wire_enc_len(&s->enc), .write = wk_wire_enc_write, .arg = &s->enc};
    return wk_transport_send_payload(s->transport, conn_id, &p, cls);
}

/* A Tokens event of a request with tools: text goes through the tool-call parser, the wire
 * event carries the plain content left and the tool-call deltas (built in s->enc). */
static cm_err encode_parsed(wk_service *s, req *r, const wk_event *ev) {
    cm_err rv = wk_tool_parser_feed(r->tools, ev->text != NULL ? ev->text : "", ev->text_len);
    if (rv != CM_OK)
        cm_logf(CM_LOG_WARN, r->log_id[0] ? r->log_id : NULL, "tool-call parser: %s",
                cm_strerror(rv));
    wk_event pe = *ev;
    pe.text = cm_buf_cstr(&r->tools->content);
    pe.text_len = r->tools->content.len;
    return wk_wire_enc_event(&s->enc, &pe, r->request_id, s->d.tok, r->tools->deltas,
                             r->tools->n_deltas, false);
}

/* The last events of a request with tools: what the final text and the parser still hold go
 * out as a Tokens event, then Finished (TOOL_CALLS when calls were made and nothing cut them). */
static void finish_parsed(wk_service *s, req *r, const wk_event *ev) {
    wk_event te = {.kind = WK_EVENT_TOKENS, .request_id = ev->request_id, .user = ev->user};
    for (int pass = 0; pass < 2; pass++) {
        cm_err rv = pass == 0 ? wk_tool_parser_feed(r->tools, ev->text ? ev->text : "",
                                                    ev->text != NULL ? ev->text_len : 0)
                              : wk_tool_parser_finish(r->tools);
        if (rv != CM_OK || (r->tools->content.len == 0 && r->tools->n_deltas == 0))
            continue;
        te.text = cm_buf_cstr(&r->tools->content);
        te.text_len = r->tools->content.len;
        if (wk_wire_enc_event(&s->enc, &te, r->request_id, s->d.tok, r->tools->deltas,
                              r->tools->n_deltas, false) == CM_OK)
            send_enc(s, r->conn_id, WK_SEND_NORMAL);
    }
    wk_event fe = *ev;
    fe.text = NULL;
    fe.text_len = 0;
    bool calls = wk_tool_parser_n_calls(r->tools) > 0 && ev->finish_reason == WK_FINISH_STOP;
    if (wk_wire_enc_event(&s->enc, &fe, r->request_id, s->d.tok, NULL, 0, calls) == CM_OK)
        send_enc(s, r->conn_id, WK_SEND_FINAL);
}

static void on_event(const wk_event *ev, void *cb_arg) {
    wk_service *s = cb_arg;
    req *r = ev->user;
    wk_svc_metrics *m = s->d.metrics;
    int64_t now = cm_clock_mono_ns();
    check_req(s, r);
    if (ev->kind == WK_EVENT_TOKENS) {
        CM_ASSERT(r->prep == NULL); /* only the engine sends tokens */
        if (r->last_token_ns == 0)
            cm_series_observe(m->ttft, (double)(now - r->received_ns) / 1e9);
        else
            cm_series_observe(m->itl, (double)(now - r->last_token_ns) / 1e9);
        r->last_token_ns = now;
        if (r->silent || r->congested)
            return;
        cm_err rv = r->tools != NULL
                        ? encode_parsed(s, r, ev)
                        : wk_wire_enc_event(&s->enc, ev, r->request_id, s->d.tok, NULL, 0, false);
        if (rv != CM_OK)
            return;
        rv = send_enc(s, r->conn_id, WK_SEND_NORMAL);
        if (rv == CM_ERR_OVERLOADED) {
            /* The gateway does not read fast enough; cancelling is the only bounded answer.
             * The cancel itself must wait until the step returns (no engine calls here). */
            r->congested = true;
            s->have_congested = true;
        } else if (rv == CM_ERR_NOT_FOUND) {
            r->silent = true; /* the CLOSE command will cancel it */
        }
        return;
    }
    /* FINISHED or ERROR: the request's last event. */
    cm_series_observe(m->e2e, (double)(now - r->received_ns) / 1e9);
    if (ev->kind == WK_EVENT_FINISHED) {
        cm_series_observe(m->queue_time, ev->timing.queue_ms / 1000.0);
        switch (ev->finish_reason) {
        case WK_FINISH_STOP:
            cm_series_inc(m->finished_stop);
            break;
        case WK_FINISH_LENGTH:
            cm_series_inc(m->finished_length);
            break;
        case WK_FINISH_CANCELLED:
            cm_series_inc(m->finished_cancelled);
            break;
        default:
            cm_series_inc(m->finished_error);
            break;
        }
    } else {
        cm_series_inc(m->finished_error);
    }
    if (!r->silent) {
        if (r->congested) {
            send_error(s, r->conn_id, r->request_id, CM_ERR_OVERLOADED,
                       "gateway too slow to read events: send queue full, request cancelled");
        } else if (r->tools != NULL && ev->kind == WK_EVENT_FINISHED) {
            finish_parsed(s, r, ev);
        } else {
            if (wk_wire_enc_event(&s->enc, ev, r->request_id, s->d.tok, NULL, 0, false) == CM_OK)
                send_enc(s, r->conn_id, WK_SEND_FINAL);
        }
    }
    {
        char idbuf[24], connbuf[16];
        snprintf(idbuf, sizeof idbuf, "%llu", (unsigned long long)r->request_id);
        snprintf(connbuf, sizeof connbuf, "%u", r->conn_id);
        cm_log(CM_LOG_INFO, r->log_id[0] ? r->log_id : NULL, "request done", "trace_id",
               r->trace_id, "request", idbuf, "connection", connbuf, "outcome",
               ev->kind == WK_EVENT_ERROR ? (ev->message ? ev->message : "error") : "finished",
               NULL);
    }
    unlink_req(s, r);
}

/* ---- commands (engine thread) ---- */

static void handle_hello(wk_service *s, const wk_cmd *c) {
    const Sluice__Hello *h = c->env->hello;
    conn_state *cs = find_conn(s, c->conn_id);
    if (cs == NULL)
        return;
    if (h->protocol_version != WK_WIRE_PROTOCOL_VERSION) {
        cs->refused = true;
        cm_logf(CM_LOG_WARN, NULL,
                "connection %u: peer speaks protocol version %u, this worker speaks %u: "
                "refusing its requests",
                c->conn_id, h->protocol_version, WK_WIRE_PROTOCOL_VERSION);
    }
}

static void send_hello(wk_service *s, uint32_t conn_id) {
    wk_wire_hello_info hi = {
        .model = s->d.cfg->model_name,
        .backend = s->d.backend_name,
        .instance_id = s->d.instance_id,
        .max_context_tokens = s->prompt.max_context,
        .max_batch_tokens = s->d.cfg->max_batch_tokens,
        .max_waiting = s->d.cfg->max_waiting,
        .draining = atomic_load(&s->draining),
    };
    wk_wire_buf b;
    if (wk_wire_encode_hello(&hi, &b) != CM_OK)
        return;
    wk_transport_send(s->transport, conn_id, b.data, b.len, WK_SEND_FINAL);
    wk_wire_buf_free(&b);
}

static void handle_close(wk_service *s, uint32_t conn_id) {
    conn_state **pp = &s->conns;
    while (*pp != NULL) {
        if ((*pp)->id == conn_id) {
            conn_state *dead = *pp;
            *pp = dead->next;
            free(dead);
            break;
        }
        pp = &(*pp)->next;
    }
    uint32_t n = 0;
    req *next;
    for (req *r = s->reqs; r != NULL; r = next) {
        next = r->next;
        if (r->conn_id != conn_id)
            continue;
        n++;
        if (r->prep != NULL) {
            unlink_req(s, r); /* never reached the engine: nothing to free there */
            continue;
        }
        r->silent = true;
        /* KV blocks are freed now; the CANCELLED event of the next step unlinks r. */
        wk_engine_cancel(s->d.engine, r->engine_id);
    }
    if (n > 0) {
        cm_series_add(s->d.metrics->connections_lost_requests_total, n);
        cm_logf(CM_LOG_INFO, NULL, "connection %u closed: cancelled %u request(s)", conn_id, n);
    }
}

/* trace_id_of writes the trace id of traceparent (may be NULL) into out (CM_TRACE_ID_HEX + 1
 * bytes): only a well-formed traceparent is trusted for logs; anything else logs "-". */
static void trace_id_of(const char *traceparent, char *out) {
    cm_trace tr = {0};
    snprintf(out, CM_TRACE_ID_HEX + 1, "-");
    if (traceparent != NULL &&
        cm_trace_parse_parent(traceparent, strlen(traceparent), &tr) == CM_OK)
        memcpy(out, tr.trace_id, CM_TRACE_ID_HEX + 1);
}

/* reject_id answers a Submit with an Error and logs it at info level with the request's ids,
 * like "request done" for the requests that ran (trace_id may be "-", log_id NULL). */
static void reject_id(wk_service *s, uint32_t conn_id, uint64_t request_id, cm_err code,
                      const char *msg, const char *trace_id, const char *log_id) {
    char idbuf[24], connbuf[16];
    cm_series_inc(s->d.metrics->rejected_total);
    send_error(s, conn_id, request_id, code, msg);
    snprintf(idbuf, sizeof idbuf, "%llu", (unsigned long long)request_id);
    snprintf(connbuf, sizeof connbuf, "%u", conn_id);
    cm_log(CM_LOG_INFO, log_id != NULL && log_id[0] ? log_id : NULL, "request refused", "trace_id",
           trace_id, "request", idbuf, "connection", connbuf, "code", cm_strerror(code), "reason",
           msg, NULL);
}

static void reject_req(wk_service *s, const req *r, cm_err code, const char *msg) {
    reject_id(s, r->conn_id, r->request_id, code, msg, r->trace_id, r->log_id);
}

static void reject(wk_service *s, const wk_cmd *c, cm_err code, const char *msg) {
    const Sluice__Submit *sub = c->env != NULL ? c->env->submit : NULL;
    char trace_id[CM_TRACE_ID_HEX + 1];
    trace_id_of(sub != NULL ? sub->traceparent : NULL, trace_id);
    reject_id(s, c->conn_id, c->request_id, code, msg, trace_id,
              sub != NULL ? sub->gateway_request_id : NULL);
}

/* Checks what needs no prompt, then hands the request to the preparation pool. Takes c->env
 * when it does (c->env is NULL then). */
static void handle_submit(wk_service *s, wk_cmd *c) {
    const Sluice__Submit *sub = c->env->submit;
    char err[512];
    conn_state *cs = find_conn(s, c->conn_id);
    if (cs == NULL)
        return; /* closed meanwhile: nobody to answer */
    if (cs->refused) {
        snprintf(err, sizeof err, "incompatible protocol version (this worker speaks %u)",
                 WK_WIRE_PROTOCOL_VERSION);
        reject(s, c, CM_ERR_PROTOCOL, err);
        return;
    }
    if (atomic_load(&s->draining)) {
        reject(s, c, CM_ERR_CLOSED, "worker is draining; retry on another worker");
        return;
    }
    if (sub->model != NULL && sub->model[0] != '\0' &&
        strcmp(sub->model, s->d.cfg->model_name) != 0) {
        snprintf(err, sizeof err,
                 "The model '%.200s' does not exist on this worker (it serves '%.200s')",
                 sub->model, s->d.cfg->model_name);
        reject(s, c, CM_ERR_NOT_FOUND, err);
        return;
    }
    if (find_req(s, c->conn_id, sub->request_id) != NULL) {
        snprintf(err, sizeof err, "request id %llu is already in flight on this connection",
                 (unsigned long long)sub->request_id);
        reject(s, c, CM_ERR_EXISTS, err);
        return;
    }
    /* Everything that reads the prompt happens in the preparation pool, never here: the
     * request is tracked from now on (duplicate ids, Cancel and close see it) and reaches
     * the engine in start_prepared once its ids are ready. */
    wk_prepared *p = wk_prepared_new();
    req *r = calloc(1, sizeof *r);
    if (p == NULL || r == NULL) {
        free(p);
        free(r);
        reject(s, c, CM_ERR_NOMEM, "out of memory");
        return;
    }
    r->engine_id = ++s->next_engine_id;
    r->conn_id = c->conn_id;
    r->request_id = sub->request_id;
    trace_id_of(sub->traceparent, r->trace_id);
    r->received_ns = c->received_ns;
    if (sub->gateway_request_id != NULL)
        snprintf(r->log_id, sizeof r->log_id, "%s", sub->gateway_request_id);
    p->engine_id = r->engine_id;
    p->conn_id = c->conn_id;
    p->request_id = sub->request_id;
    p->random_seed = next_rand(s);
    p->env = c->env;
    cm_err rv = wk_prep_push(s->prep, p);
    if (rv != CM_OK) {
        p->env = NULL; /* still the command's */
        wk_prepared_free(p);
        free(r);
        reject(s, c, CM_ERR_OVERLOADED,
               "worker preparation queue is full; retry later or on another worker");
        return;
    }
    c->env = NULL; /* the pool's now */
    r->prep = p;
    s->n_preparing++;
    link_req(s, r);
    check_req(s, r);
}

/* A prepared request goes to the engine (engine thread). Takes p. */
static void start_prepared(wk_service *s, req *r, wk_prepared *p) {
    const Sluice__Submit *sub = p->env->submit;
    char err[512];
    wk_request rq;
    memset(&rq, 0, sizeof rq);
    rq.sampling = p->sampling;
    rq.id = r->engine_id;
    if (sub->tenant != NULL)
        snprintf(rq.tenant, sizeof rq.tenant, "%s", sub->tenant);
    rq.priority = sub->has_priority && sub->priority == SLUICE__PRIORITY__PRIORITY_BATCH
                      ? WK_PRIORITY_BATCH
                      : WK_PRIORITY_INTERACTIVE;
    if (sub->has_deadline_unix_ms && sub->deadline_unix_ms > 0) {
        /* Wire deadlines are wall clock; the engine wants monotonic. A deadline already
         * past becomes "now", so the engine fails it with TIMEOUT at its first look. */
        int64_t left = (int64_t)sub->deadline_unix_ms - cm_clock_unix_ms();
        rq.deadline_ms = cm_clock_mono_ms() + (left > 0 ? left : 0);
        if (rq.deadline_ms == 0)
            rq.deadline_ms = 1;
    }
    rq.prompt = p->ids;
    rq.n_prompt = p->n_ids;
    rq.max_tokens = sub->has_max_tokens ? sub->max_tokens : 0;
    rq.ignore_eos = sub->has_ignore_eos && sub->ignore_eos;
    rq.min_tokens = sub->has_min_tokens ? sub->min_tokens : 0;
    rq.stop = (const char *const *)sub->stop;
    rq.n_stop = (uint32_t)sub->n_stop;
    rq.cb = on_event;
    rq.cb_arg = s;
    rq.user = r;
    rq.grammar = p->grammar; /* the engine takes its own reference */
    if (wk_constraint_tools_active(sub)) {
        r->tools = malloc(sizeof *r->tools);
        if (r->tools == NULL) {
            reject_req(s, r, CM_ERR_NOMEM, "out of memory");
            unlink_req(s, r);
            wk_prepared_free(p);
            return;
        }
        wk_tool_parser_init(r->tools, p->random_seed ^ 0x7F4A7C159E3779B9ULL);
    }
    err[0] = '\0';
    /* The engine copies the prompt and stop strings: p can go once it returns. */
    cm_err rv = wk_engine_submit(s->d.engine, &rq, err, sizeof err);
    if (rv != CM_OK) {
        if (rv == CM_ERR_CONTEXT_LENGTH && err[0] == '\0')
            wk_prompt_context_message(s->prompt.max_context, p->n_ids, rq.max_tokens, err,
                                      sizeof err);
        reject_req(s, r, rv, err[0] ? err : cm_strerror(rv));
        unlink_req(s, r);
    }
    wk_prepared_free(p);
}

static req *find_req_by_engine_id(wk_service *s, uint64_t engine_id) {
    for (req *r = s->reqs; r != NULL; r = r->next)
        if (r->engine_id == engine_id)
            return r;
    return NULL;
}

/* Sends a Tokenize's answer (or its error) on its connection, unless that closed, and logs
 * it like "request done" (with the trace id of a well-formed traceparent, else "-"). Takes p. */
static void answer_tokenize(wk_service *s, wk_prepared *p) {
    const Sluice__Tokenize *t = p->env->tokenize;
    conn_state *cs = find_conn(s, p->conn_id);
    char trace_id[CM_TRACE_ID_HEX + 1], idbuf[24], ms[24], err[128];
    const char *outcome = p->rv == CM_OK ? "answered" : p->err;
    if (cs == NULL) {
        outcome = "connection closed"; /* nobody to answer */
    } else if (cs->refused) {
        snprintf(err, sizeof err, "incompatible protocol version (this worker speaks %u)",
                 WK_WIRE_PROTOCOL_VERSION);
        send_error(s, p->conn_id, p->request_id, CM_ERR_PROTOCOL, err);
        outcome = err;
    } else if (p->rv != CM_OK) {
        send_error(s, p->conn_id, p->request_id, p->rv, p->err);
    } else {
        wk_transport_send(s->transport, p->conn_id, p->reply.data, p->reply.len, WK_SEND_FINAL);
    }
    if (cs != NULL && (p->rv != CM_OK || cs->refused))
        cm_series_inc(s->d.metrics->rejected_total);
    trace_id_of(t->traceparent, trace_id);
    snprintf(idbuf, sizeof idbuf, "%llu", (unsigned long long)p->request_id);
    snprintf(ms, sizeof ms, "%.2f", (double)p->prep_ns / 1e6);
    cm_log(CM_LOG_INFO, t->gateway_request_id,
           t->n_token_ids > 0 ? "detokenize done" : "tokenize done", "trace_id", trace_id,
           "request", idbuf, "outcome", outcome, "prep_ms", ms, NULL);
    wk_prepared_free(p);
}

/* Takes what the pool finished: starts the ready ones, answers the refused ones and the
 * Tokenize ones, and frees those whose request was cancelled or whose connection closed
 * meanwhile. */
static void handle_prepared(wk_service *s) {
    wk_prepared *list = wk_prep_pop_done(s->prep);
    while (list != NULL) {
        wk_prepared *p = list;
        list = p->next;
        p->next = NULL;
        if (p->env->msg_case == SLUICE__ENVELOPE__MSG_TOKENIZE) {
            answer_tokenize(s, p);
            continue;
        }
        req *r = find_req_by_engine_id(s, p->engine_id);
        if (r == NULL || r->prep != p) {
            wk_prepared_free(p); /* cancelled, closed or shut down: already answered */
            continue;
        }
        r->prep = NULL;
        s->n_preparing--;
        if (p->rv != CM_OK) {
            cm_logf(CM_LOG_DEBUG, r->log_id[0] ? r->log_id : NULL,
                    "request %llu refused in preparation (%.1f ms): %s",
                    (unsigned long long)r->request_id, (double)p->prep_ns / 1e6, p->err);
            reject_req(s, r, p->rv, p->err);
            unlink_req(s, r);
            wk_prepared_free(p);
            continue;
        }
        check_req(s, r);
        /* A closed connection's requests are silenced or unlinked in handle_close. */
        CM_ASSERT(r->silent || find_conn(s, r->conn_id) != NULL);
        start_prepared(s, r, p);
    }
}

/* Ends a request still in preparation as the engine ends a cancelled one: Finished
 * {cancelled} with no tokens, through on_event (metrics, final event, unlink). */
static void finish_preparing_cancelled(wk_service *s, req *r) {
    wk_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = WK_EVENT_FINISHED;
    ev.request_id = r->engine_id;
    ev.user = r;
    ev.finish_reason = WK_FINISH_CANCELLED;
    on_event(&ev, s);
}

static void handle_cancel(wk_service *s, const wk_cmd *c) {
    req *r = find_req(s, c->conn_id, c->request_id);
    if (r == NULL)
        return; /* finished already: the gateway has (or will get) its last event */
    if (r->prep != NULL) {
        finish_preparing_cancelled(s, r); /* it never starts */
        return;
    }
    wk_engine_cancel(s->d.engine, r->engine_id);
}

static void handle_commands(wk_service *s) {
    wk_cmd *list = wk_inbox_pop_all(s->inbox);
    while (list != NULL) {
        wk_cmd *c = list;
        list = c->next;
        switch (c->kind) {
        case WK_CMD_OPEN: {
            conn_state *cs = calloc(1, sizeof *cs);
            if (cs == NULL) {
                wk_transport_close_conn(s->transport, c->conn_id);
                break;
            }
            cs->id = c->conn_id;
            cs->next = s->conns;
            s->conns = cs;
            send_hello(s, c->conn_id);
            break;
        }
        case WK_CMD_CLOSE:
            handle_close(s, c->conn_id);
            break;
        case WK_CMD_HELLO:
            handle_hello(s, c);
            break;
        case WK_CMD_SUBMIT:
            handle_submit(s, c);
            break;
        case WK_CMD_CANCEL:
            handle_cancel(s, c);
            break;
        }
        wk_cmd_free(c);
    }
    handle_prepared(s);
}

/* Cancels requests whose gateway could not keep up (flagged inside on_event). */
static void cancel_congested(wk_service *s) {
    if (!s->have_congested)
        return;
    s->have_congested = false;
    for (req *r = s->reqs; r != NULL; r = r->next) {
        if (r->congested && !r->silent) {
            cm_series_inc(s->d.metrics->send_queue_overflows_total);
            cm_logf(CM_LOG_WARN, r->log_id[0] ? r->log_id : NULL,
                    "connection %u: send queue full, cancelling request %llu (trace_id %s)",
                    r->conn_id, (unsigned long long)r->request_id, r->trace_id);
            wk_engine_cancel(s->d.engine, r->engine_id);
        }
    }
}

/* Cancels every live request with Error{CLOSED} (drain timeout or second SIGTERM). */
static void cancel_all(wk_service *s, const char *why) {
    req *next;
    for (req *r = s->reqs; r != NULL; r = next) {
        next = r->next;
        if (!r->silent) {
            send_error(s, r->conn_id, r->request_id, CM_ERR_CLOSED, why);
            r->silent = true;
        }
        if (r->prep != NULL)
            unlink_req(s, r); /* never reached the engine */
        else
            wk_engine_cancel(s->d.engine, r->engine_id);
    }
}

static void publish(wk_service *s, int64_t now_ms) {
    wk_engine_stats es;
    wk_engine_get_stats(s->d.engine, &es);
    wk_svc_metrics *m = s->d.metrics;
    cm_series_set(m->requests_waiting, es.waiting);
    cm_series_set(m->requests_running, es.running);
    cm_series_set(m->kv_cache_blocks_total, es.kv_blocks_total);
    cm_series_set(m->kv_cache_blocks_used, es.kv_blocks_used);
    cm_series_set(m->kv_cache_usage_ratio,
                  es.kv_blocks_total ? (double)es.kv_blocks_used / es.kv_blocks_total : 0.0);
    cm_series_set(m->prefix_cache_hit_ratio,
                  es.prefix_queries ? (double)es.prefix_hits / (double)es.prefix_queries : 0.0);
    /* Engine counters are cumulative; metrics counters take increments. */
    if (es.preemptions >= s->last_es.preemptions)
        cm_series_add(m->preemptions_total, (double)(es.preemptions - s->last_es.preemptions));
    if (es.prompt_tokens >= s->last_es.prompt_tokens)
        cm_series_add(m->prompt_tokens_total,
                      (double)(es.prompt_tokens - s->last_es.prompt_tokens));
    if (es.generated_tokens >= s->last_es.generated_tokens)
        cm_series_add(m->generation_tokens_total,
                      (double)(es.generated_tokens - s->last_es.generated_tokens));
    s->last_es = es;

    wk_transport_stats ts;
    wk_transport_get_stats(s->transport, &ts);
    cm_series_set(m->connections, ts.connections);

    pthread_mutex_lock(&s->status_mtx);
    s->status.heartbeat_ms = now_ms;
    s->status.has_work = wk_engine_has_work(s->d.engine);
    s->status.waiting = es.waiting;
    s->status.running = es.running;
    s->status.kv_blocks_total = es.kv_blocks_total;
    s->status.kv_blocks_used = es.kv_blocks_used;
    s->status.tokens_per_s = es.tokens_per_s;
    s->status.connections = ts.connections;
    s->status.live_requests = s->n_reqs;
    s->status.preparing = s->n_preparing;
    s->status.draining = atomic_load(&s->draining);
    pthread_mutex_unlock(&s->status_mtx);

    if (now_ms - s->last_stats_ms >= STATS_INTERVAL_MS) {
        s->last_stats_ms = now_ms;
        wk_wire_stats st = {
            .waiting = es.waiting,
            .running = es.running,
            .kv_blocks_free =
                es.kv_blocks_total > es.kv_blocks_used ? es.kv_blocks_total - es.kv_blocks_used : 0,
            .kv_blocks_total = es.kv_blocks_total,
            .tokens_per_s = es.tokens_per_s,
            .draining = atomic_load(&s->draining),
            .prefix_hits = es.prefix_hits,
            .preemptions = es.preemptions,
        };
        wk_wire_buf b;
        if (wk_wire_encode_stats(&st, &b) == CM_OK) {
            wk_transport_broadcast(s->transport, b.data, b.len, WK_SEND_DROPPABLE);
            wk_wire_buf_free(&b);
        }
    }
}

static void *engine_main(void *arg) {
    wk_service *s = arg;
    bool drain_seen = false;
    bool cancelled_all = false;
    for (;;) {
        int64_t now = cm_clock_mono_ms();
        handle_commands(s);
        if (atomic_load(&s->draining) && !drain_seen) {
            drain_seen = true;
            s->drain_deadline_ms = now + s->d.cfg->drain_timeout_ms;
            cm_logf(CM_LOG_INFO, NULL, "draining: %u request(s) in flight, timeout %u ms",
                    s->n_reqs, s->d.cfg->drain_timeout_ms);
        }
        if (drain_seen && !cancelled_all &&
            (atomic_load(&s->abort_requested) || now >= s->drain_deadline_ms)) {
            cancelled_all = true;
            if (s->n_reqs > 0)
                cm_logf(CM_LOG_WARN, NULL, "drain %s: cancelling %u request(s)",
                        atomic_load(&s->abort_requested) ? "aborted" : "timed out", s->n_reqs);
            cancel_all(s, "worker shut down before the request finished");
        }
        bool did_work = false;
        if (wk_engine_has_work(s->d.engine)) {
            cm_err rv = wk_engine_step(s->d.engine, &did_work);
            if (rv != CM_OK && rv != CM_ERR_BACKEND)
                cm_logf(CM_LOG_ERROR, NULL, "engine step failed: %s", cm_strerror(rv));
            else if (rv == CM_ERR_BACKEND)
                cm_logf(CM_LOG_ERROR, NULL, "backend failure: the step's requests failed");
            cancel_congested(s);
        }
        publish(s, cm_clock_mono_ms());
        if (drain_seen && s->n_reqs == 0 && !wk_engine_has_work(s->d.engine))
            break;
        if (atomic_load(&s->stop_thread))
            break;
        if (!did_work)
            wk_inbox_wait(s->inbox, drain_seen ? 20 : IDLE_WAIT_MS);
    }
    pthread_mutex_lock(&s->status_mtx);
    s->status.stopped = true;
    pthread_cond_broadcast(&s->status_cond);
    pthread_mutex_unlock(&s->status_mtx);
    cm_logf(CM_LOG_INFO, NULL, "engine loop ended");
    return NULL;
}

/* ---- lifecycle ---- */

cm_err wk_service_create(const wk_service_deps *deps, wk_service **out, char *err, size_t errlen) {
    *out = NULL;
    wk_service *s = calloc(1, sizeof *s);
    if (s == NULL)
        return CM_ERR_NOMEM;
    wk_wire_enc_init(&s->enc);
    s->d = *deps;
    const wk_worker_config *cfg = deps->cfg;
    pthread_mutex_init(&s->status_mtx, NULL);
    pthread_cond_init(&s->status_cond, NULL);
    atomic_init(&s->draining, false);
    atomic_init(&s->abort_requested, false);
    atomic_init(&s->stop_thread, false);
    s->rng =
        (uint64_t)cm_clock_mono_ns() ^ ((uint64_t)cm_clock_unix_ms() << 20) ^ 0x9E3779B97F4A7C15ULL;
    if (s->rng == 0)
        s->rng = 1;
    wk_wire_limits_init(&s->limits);
    s->limits.max_message_bytes = cfg->max_message_bytes;
    s->limits.max_prompt_bytes = cfg->max_prompt_bytes;
    s->prompt.tok = deps->tok;
    s->prompt.tmpl = deps->tmpl;
    s->prompt.max_context = wk_engine_max_context(deps->engine);
    s->prompt.max_prompt_bytes = cfg->max_prompt_bytes;
    s->limits.max_prompt_ids = s->prompt.max_context;
    s->prep_ctx.prompt = s->prompt;
    s->status.heartbeat_ms = cm_clock_mono_ms();

    uint32_t inbox_cap = cfg->max_waiting ? cfg->max_waiting : 1024;
    cm_err rv = wk_inbox_create(inbox_cap, &s->inbox);
    if (rv != CM_OK)
        goto fail;
    rv = wk_grammar_cache_create(GRAMMAR_CACHE_ENTRIES, &s->grammars);
    if (rv != CM_OK)
        goto fail;
    s->prep_ctx.grammars = s->grammars;
    /* The pool holds at most as many requests as the inbox queues. */
    rv = wk_prep_create(&s->prep_ctx, cfg->prep_threads ? cfg->prep_threads : 2, inbox_cap,
                        on_prep_ready, s, &s->prep);
    if (rv != CM_OK) {
        snprintf(err, errlen, "cannot start the preparation pool: %s", cm_strerror(rv));
        goto fail;
    }
    wk_transport_config tc;
    wk_transport_config_defaults(&tc);
    tc.max_connections = cfg->max_connections;
    tc.max_message_bytes = cfg->max_message_bytes;
    tc.send_queue_messages = cfg->send_queue_messages;
    tc.handshake_timeout_ms = (int)cfg->handshake_timeout_ms;
    tc.send_stall_timeout_ms = (int)cfg->send_stall_timeout_ms;
    tc.frame_timeout_ms = (int)cfg->frame_timeout_ms;
    tc.max_partial_frame_bytes = cfg->max_partial_frame_bytes;
    wk_transport_callbacks cb = {
        .on_open = on_open, .on_message = on_message, .on_close = on_close};
    rv = wk_transport_create(cfg->listen, &tc, &cb, s, &s->transport, err, errlen);
    if (rv != CM_OK)
        goto fail;
    *out = s;
    return CM_OK;
fail:
    wk_service_destroy(s);
    return rv;
}

cm_err wk_service_start(wk_service *s) {
    if (s->thread_started)
        return CM_ERR_STATE;
    s->last_stats_ms = 0;
    wk_engine_get_stats(s->d.engine, &s->last_es);
    if (pthread_create(&s->thread, NULL, engine_main, s) != 0)
        return CM_ERR_NOMEM;
    s->thread_started = true;
    pthread_mutex_lock(&s->status_mtx);
    s->status.started = true;
    pthread_mutex_unlock(&s->status_mtx);
    return CM_OK;
}

void wk_service_drain(wk_service *s) {
    if (atomic_exchange(&s->draining, true))
        return;
    pthread_mutex_lock(&s->status_mtx);
    s->status.draining = true;
    pthread_mutex_unlock(&s->status_mtx);
    cm_series_set(s->d.metrics->draining, 1);
    cm_series_set(s->d.metrics->ready, 0);
    wk_wire_buf b;
    if (wk_wire_encode_drain(s->d.cfg->drain_timeout_ms, &b) == CM_OK) {
        wk_transport_broadcast(s->transport, b.data, b.len, WK_SEND_FINAL);
        wk_wire_buf_free(&b);
    }
    wk_inbox_wake(s->inbox);
}

void wk_service_abort(wk_service *s) {
    wk_service_drain(s);
    atomic_store(&s->abort_requested, true);
    wk_inbox_wake(s->inbox);
}

bool wk_service_wait(wk_service *s, int timeout_ms) {
    if (!s->thread_started)
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->status_mtx);
    while (!s->status.stopped) {
        if (pthread_cond_timedwait(&s->status_cond, &s->status_mtx, &ts) != 0)
            break;
    }
    bool stopped = s->status.stopped;
    pthread_mutex_unlock(&s->status_mtx);
    return stopped;
}

void wk_service_get_status(wk_service *s, wk_service_status *out) {
    pthread_mutex_lock(&s->status_mtx);
    *out = s->status;
    pthread_mutex_unlock(&s->status_mtx);
}

int wk_service_listen_port(const wk_service *s) {
    return s->transport != NULL ? wk_transport_bound_port(s->transport) : 0;
}

void wk_service_destroy(wk_service *s) {
    if (s == NULL)
        return;
    if (s->thread_started) {
        atomic_store(&s->stop_thread, true);
        wk_inbox_wake(s->inbox);
        pthread_join(s->thread, NULL);
    }
    if (s->transport != NULL) {
        /* Give the last events (Finished, Error, Drain) a moment to reach the gateways. */
        wk_transport_flush(s->transport, 2000);
        wk_transport_destroy(s->transport);
    }
    /* After the transport (no more commands) and the engine thread (no more pushes); before
     * the inbox, which on_prep_ready wakes. */
    wk_prep_destroy(s->prep);
    wk_inbox_destroy(s->inbox);
    while (s->reqs != NULL) {
        req *r = s->reqs;
        s->reqs = r->next;
        if (r->tools != NULL) {
            wk_tool_parser_fini(r->tools);
            free(r->tools);
        }
        free(r);
    }
    if (s->grammars != NULL)
        wk_grammar_cache_destroy(s->grammars);
    while (s->conns != NULL) {
        conn_state *c = s->conns;
        s->conns = c->next;
        free(c);
    }
    wk_wire_enc_fini(&s->enc);
    pthread_cond_destroy(&s->status_cond);
    pthread_mutex_destroy(&s->status_mtx);
    free(s);
}
