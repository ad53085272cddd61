/*
 * gw_tokenize: POST /tokenize and /detokenize (also under /v1), vLLM's shapes, on a loop
 * thread: validation (gw_tokenize_parse), rate-limit admission, routing to any usable worker
 * of the model, one Tokenize on the wire and the worker's one answer (Event{Tokenized} or
 * Event{Error}) rendered as
 *   /tokenize   {"count", "max_model_len", "tokens": [...]} (+ "token_strs" when asked)
 *   /detokenize {"prompt": "..."}
 *
 * Rate limits: each call counts as one request against the tenant's requests-per-minute and
 * concurrency limits (it costs worker CPU: tokenizing a 1 MiB prompt); no tokens are
 * reserved or charged, since nothing is generated. vLLM itself has no rate limits.
 *
 * The wait for the answer is bounded by the request deadline (deadline_ms, or
 * x-sluice-timeout-ms): a worker older than the Tokenize message drops it, and the client
 * then gets 504 rather than a hang. A lost worker connection answers 503; a client that leaves
 * is forgotten (the worker's late answer finds no slot and is dropped).
 *
 * Loop thread only. An op is freed when its HTTP request is gone and no Redis reply is awaited.
 */
#ifndef GW_TOKENIZE_H
#define GW_TOKENIZE_H

#include <h2o.h>

#include "gw_route.h"
#include "gw_server.h"

/* gw_tokenize_start is the route handler of /tokenize and /detokenize (route->api says
 * which): it owns req's response from here on. */
void gw_tokenize_start(gw_thread *t, h2o_req_t *req, const gw_route *route, const char *rid,
                       const gw_tenant *tenant);

/* gw_tokenize_on_event delivers the Event for a slot whose `tok` is set (env owned: freed
 * here). */
void gw_tokenize_on_event(gw_thread *t, gw_worker *w, Sluice__Envelope *env);

/* gw_tokenize_on_lost answers 503 to every op of t waiting on w's pipe of epoch <= epoch. */
void gw_tokenize_on_lost(gw_thread *t, gw_worker *w, uint32_t epoch);

#endif /* GW_TOKENIZE_H */
