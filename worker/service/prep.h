/*
 * wk_prep: the preparation pool. A few threads (--prep-threads, default 2) turn accepted
 * Submits into what the engine runs (chat template, tokenization, the context-length check,
 * sampling parameters), so no prompt, however long, runs on the engine thread: the engine
 * loop keeps stepping the running streams while a 250,000-character prompt is tokenized or
 * refused beside it.
 *
 * Life of a request: the engine thread, which owns all request bookkeeping (duplicate ids,
 * Cancel, connection close, drain), fills a wk_prepared (ids of the request, its Submit
 * envelope, a seed) and hands it over with wk_prep_push. A pool thread runs wk_prep_run on
 * it and moves it to the done list, then calls on_ready (which wakes the engine thread). The
 * engine thread takes finished items with wk_prep_pop_done and submits them to the engine, or
 * sends their error. A request cancelled or closed meanwhile is forgotten by the engine
 * thread at once and its item is simply freed when it comes back (wk_prepared_cancel lets the
 * pool skip work not started yet). The pool never talks to gateways nor to the engine.
 *
 * Order: the pool takes items first in, first out, but a short prompt may finish before a
 * long one pushed earlier; that is intended (nothing waits behind a long prompt). What must
 * stay ordered per request (Submit before its Cancel, a reused id after its end) is ordered by
 * the engine thread's request table, not by the pool.
 *
 * Priority: pool threads run at nice 10, below the engine's compute threads: preparing is
 * background work next to decoding the running streams.
 *
 * Bounds: at most queue_cap items are in the pool (queued, running or done and not yet
 * popped); beyond, wk_prep_push answers CM_ERR_OVERLOADED at once.
 *
 * Threads: wk_prep_push, wk_prep_pop_done, wk_prepared_cancel and wk_prep_pending from any
 * thread (the service calls them from the engine thread); on_ready runs on a pool thread and
 * must not block. wk_prep_run is reentrant (the context is read-only).
 */
#ifndef WK_PREP_H
#define WK_PREP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cm_err.h"
#include "prompt.h"
#include "sampler.h"
#include "sluice.pb-c.h"
#include "wire.h"

struct wk_grammar;
struct wk_grammar_cache;

/* What preparing needs; read-only, shared by every pool thread, must outlive the pool. */
typedef struct wk_prep_ctx {
    wk_prompt_ctx prompt;              /* tokenizer, chat template, context and byte bounds */
    struct wk_grammar_cache *grammars; /* structured outputs' compile cache (thread-safe,
                                          borrowed); NULL = constraints refused */
} wk_prep_ctx;

/* One request on its way to the engine. The engine thread fills the identity part before
 * wk_prep_push; wk_prep_run fills the result part. */
typedef struct wk_prepared {
    struct wk_prepared *next; /* the pool's queue link; owner only */
    /* identity (set before wk_prep_push) */
    uint64_t engine_id; /* the service's key for the request */
    uint32_t conn_id;
    uint64_t request_id;
    uint64_t random_seed;  /* used when the Submit carries no seed */
    Sluice__Envelope *env; /* owned; env->submit is the request, or env->tokenize (an answer
                              only: /tokenize, /detokenize; engine_id 0, never the engine's) */
    atomic_bool cancelled; /* set by wk_prepared_cancel: skip the work */
    /* result (set by wk_prep_run) */
    cm_err rv; /* CM_OK: ready for the engine; else the error for the gateway */
    char err[512];
    int32_t *ids; /* (n_ids) prompt tokens; owned */
    uint32_t n_ids;
    wk_sampling_params sampling;
    /* Structured outputs: the compiled constraint, owned (wk_grammar_unref in
     * wk_prepared_free), NULL when the request has none. Compiled in wk_prep_run right after
     * the prompt is built (see there); the engine takes its own reference at submit. */
    struct wk_grammar *grammar;
    int64_t prep_ns;   /* time wk_prep_run took */
    wk_wire_buf reply; /* env->tokenize: the packed answer (CM_OK); owned */
} wk_prepared;

typedef struct wk_prep wk_prep;

/* Called on a pool thread after an item joined the done list; must not block. */
typedef void (*wk_prep_ready_fn)(void *arg);

/* wk_prepared_new: a zeroed item (cancelled false, rv CM_OK); NULL when out of memory. */
wk_prepared *wk_prepared_new(void);

/* wk_prepared_free frees p with its envelope, ids and constraint. p may be NULL. */
void wk_prepared_free(wk_prepared *p);

/* wk_prepared_cancel marks p so a pool thread that has not started on it skips it (rv
 * becomes CM_ERR_CANCELLED). The caller must still own p or have pushed it and not yet freed
 * it (the engine thread frees it only after popping it). */
void wk_prepared_cancel(wk_prepared *p);

/*
 * wk_prep_run prepares one request (pool threads; also callable directly, e.g. in tests);
 * for a Tokenize it builds the answer instead (wk_tokenize_run into p->reply) and stops:
 * builds the prompt ids (template, tokenization, context check: a prompt that cannot fit is
 * refused from its bytes before tokenizing, see prompt.h) and the sampling parameters. All
 * per-request preparation lives here, in this order; a step added later (the structured-
 * output compile) goes right after the prompt is built and before sampling. Returns p->rv;
 * on failure p->err holds the client's message and p owns nothing new.
 */
cm_err wk_prep_run(const wk_prep_ctx *ctx, wk_prepared *p);

/* wk_prep_create starts n_threads (1..64) pool threads. ctx is borrowed (must outlive the
 * pool). queue_cap >= 1. */
cm_err wk_prep_create(const wk_prep_ctx *ctx, uint32_t n_threads, uint32_t queue_cap,
                      wk_prep_ready_fn on_ready, void *arg, wk_prep **out);

/* wk_prep_destroy stops the threads (a thread finishes the item it is on), then frees every
 * item still queued or done. p may be NULL. Not from a pool thread nor on_ready. */
void wk_prep_destroy(wk_prep *p);

/* wk_prep_push hands item to the pool (ownership passes on CM_OK only). CM_ERR_OVERLOADED
 * when queue_cap items are in the pool, CM_ERR_CLOSED after wk_prep_destroy began. */
cm_err wk_prep_push(wk_prep *p, wk_prepared *item);

/* wk_prep_pop_done returns the finished items in finishing order (linked by next; NULL if
 * none); the caller owns them. */
wk_prepared *wk_prep_pop_done(wk_prep *p);

/* wk_prep_pending: items in the pool now (queued, being prepared, or done and not popped). */
uint32_t wk_prep_pending(wk_prep *p);

#endif /* WK_PREP_H */
