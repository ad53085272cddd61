/*
 * gw_call: one completion request from admission to the last byte: auth result, rate-limit
 * admission, routing, the Submits (one per choice), the worker's events, the response
 * (JSON or SSE), retry before the first token, deadline, client disconnect -> Cancel, and
 * the end-of-request bookkeeping (usage reconcile, lease release, metrics, one log line).
 *
 * Loop thread only. A call is freed when its HTTP request is gone AND nothing is pending
 * (no Submit in flight, no Redis reply awaited, timer closed).
 */
#ifndef GW_CALL_H
#define GW_CALL_H

#include <h2o.h>

#include "cm_trace.h"
#include "gw_auth.h"
#include "gw_request.h"
#include "gw_server.h"

/*
 * gw_call_start handles POST /v1/chat/completions or /v1/completions on thread t: it owns
 * req's response from here on. tenant may be NULL only when auth is disabled.
 */
void gw_call_start(gw_thread *t, h2o_req_t *req, gw_api api, const char *request_id,
                   const gw_tenant *tenant);

/* gw_call_admissible: the checks every worker-bound request passes before it is taken on
 * thread t: model served (else 404 model_not_found, CM_ERR_NOT_FOUND) and the thread under
 * its in-flight limit (else 503 overloaded, CM_ERR_OVERLOADED). On refusal fills *e and
 * counts the request under route. Also used by gw_tokenize. */
cm_err gw_call_admissible(gw_thread *t, const char *route, const char *model, gw_error *e);

/* gw_call_trace_begin takes the client's W3C traceparent/tracestate (or starts a trace when
 * absent or invalid), opens this gateway's span in *tr, writes its traceparent into tp (cap
 * bytes, >= CM_TRACEPARENT_LEN + 1; "" when no randomness) and returns it in the response's
 * traceparent header. Also used by gw_tokenize. */
void gw_call_trace_begin(h2o_req_t *req, cm_trace *tr, char *tp, size_t cap);

/* gw_call_on_event delivers one Event envelope (owned: freed here). */
void gw_call_on_event(gw_thread *t, gw_worker *w, Sluice__Envelope *env);
/* gw_call_on_lost fails or retries every call of t using w's pipe of epoch <= epoch. */
void gw_call_on_lost(gw_thread *t, gw_worker *w, uint32_t epoch);

/*
 * gw_call_probe_disconnects finds HTTP/1 clients of t that closed their connection while
 * their request waits for the worker (h2o 2.2 does not read an HTTP/1 socket while a request
 * is being handled, so it cannot notice) and cancels their requests at the worker. Called
 * periodically by the loop thread.
 */
void gw_call_probe_disconnects(gw_thread *t);

/*
 * gw_call_cold_tick retries routing for the calls of t waiting for a worker of a known model
 * to appear (cold_start_wait_ms > 0): routes those that now have one, answers 503 (with
 * Retry-After) to those whose wait ran out, drops those whose client left. Returns the number
 * still waiting (the caller stops its timer at 0). Loop thread only.
 */
size_t gw_call_cold_tick(gw_thread *t);

#endif /* GW_CALL_H */
