/*
 * wk_service: the engine behind the wire. Owns the inbox, the transport and the engine
 * thread; turns Submit/Cancel/connection changes into engine calls and engine events into
 * Event messages on the connection each request came from.
 *
 * Threads:
 *  - nng threads (transport callbacks) decode messages and push commands into the inbox; a
 *    message that can be refused without the engine (garbage with a request id, inbox full)
 *    is answered from there.
 *  - the engine thread (wk_service_start) is the only one touching the engine: it drains the
 *    inbox between steps, steps while there is work, sleeps on the inbox otherwise, sends
 *    Stats to every connection about every 250 ms, and publishes a status snapshot.
 *    It never reads a prompt: an accepted Submit goes to the preparation pool (prep.h,
 *    --prep-threads), which templates, tokenizes and checks it; the engine thread submits
 *    the ready ids to the engine (or sends the pool's refusal) between steps. Requests in
 *    preparation are tracked like the others: Cancel ends one with Finished{cancelled} at
 *    once and it never starts; a closed connection or a drain timeout drops them.
 *  - any thread may call wk_service_get_status, wk_service_drain, wk_service_abort.
 *
 * Slow gateways: every connection has a bounded send queue (--send-queue-messages). When a
 * token event does not fit, that request is cancelled in the engine, the gateway gets
 * Error{OVERLOADED, "...too slow..."} for it (final messages may exceed the bound, see
 * wk_send_class), and sluice_worker_send_queue_overflows_total counts it. Other gateways are
 * not affected. Stats are skipped for a connection whose queue is half full.
 *
 * Drain (SIGTERM): wk_service_drain stops admission (Submits get Error{CLOSED}), sends Drain
 * to every gateway, and lets running requests finish. When the drain timeout passes or
 * wk_service_abort is called, what remains is cancelled with Error{CLOSED}. The engine thread
 * then ends; wk_service_wait reports it.
 */
#ifndef WK_SERVICE_H
#define WK_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "chat_template.h"
#include "cm_err.h"
#include "engine.h"
#include "svc_metrics.h"
#include "tokenizer.h"
#include "worker_config.h"

typedef struct wk_service wk_service;

/* Everything the service borrows; all must outlive it. */
typedef struct wk_service_deps {
    const wk_worker_config *cfg;
    wk_engine *engine; /* used only on the engine thread after wk_service_start */
    const wk_tokenizer *tok;
    const wk_chat_template *tmpl; /* NULL: chat messages are refused */
    wk_svc_metrics *metrics;
    const char *instance_id;
    const char *backend_name;
    uint32_t capacity; /* max running requests (for the registry) */
} wk_service_deps;

/* wk_service_create builds the inbox and starts listening (gateways may connect; their
 * Submits queue until wk_service_start). On failure err holds one line. */
cm_err wk_service_create(const wk_service_deps *deps, wk_service **out, char *err, size_t errlen);

/* wk_service_start starts the engine thread. Once: the caller must not touch the engine
 * afterwards. */
cm_err wk_service_start(wk_service *s);

/* wk_service_drain begins draining (idempotent). Not async-signal-safe: call it from a
 * normal thread (main waits for signals with sigwait). */
void wk_service_drain(wk_service *s);

/* wk_service_abort cancels every remaining request with an error and ends the engine thread
 * soon (second SIGTERM). Implies drain. */
void wk_service_abort(wk_service *s);

/* wk_service_wait waits up to timeout_ms for the engine thread to end (after a drain);
 * true if it ended. */
bool wk_service_wait(wk_service *s, int timeout_ms);

/* wk_service_destroy joins the engine thread (which must have ended or never started),
 * flushes send queues briefly, closes connections and frees. s may be NULL. */
void wk_service_destroy(wk_service *s);

typedef struct wk_service_status {
    bool started;
    bool draining;
    bool stopped;         /* engine thread ended */
    int64_t heartbeat_ms; /* cm_clock monotonic ms of the engine loop's last turn */
    bool has_work;
    uint32_t waiting;
    uint32_t running;
    uint32_t kv_blocks_total;
    uint32_t kv_blocks_used;
    double tokens_per_s;
    uint32_t connections;
    uint32_t live_requests; /* requests this service tracks (preparing + waiting + running) */
    uint32_t preparing;     /* of which in the preparation pool */
} wk_service_status;

/* wk_service_get_status: a consistent snapshot; any thread. */
void wk_service_get_status(wk_service *s, wk_service_status *out);

/* wk_service_listen_port: the bound TCP port (0 for ipc). */
int wk_service_listen_port(const wk_service *s);

#endif /* WK_SERVICE_H */
