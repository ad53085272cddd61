/*
 * wk_engine: continuous batching over a paged KV cache, with prefix caching, chunked prefill,
 * preemption (by recompute), priority classes and per-tenant fairness.
 *
 * The engine owns a backend instance, its KV block pool, the sampler, and every admitted
 * request. It knows nothing of nng, protobuf or HTTP. Requests arrive as token ids; events go
 * out through the callback given at submit.
 *
 * Threads: the engine is NOT thread-safe. One thread (the engine thread) calls every function
 * here. A service feeding it from other threads queues work and applies it between steps
 * (wk_engine_submit / wk_engine_cancel from the engine thread). Callbacks run on the engine
 * thread inside wk_engine_step and must not block or call back into the engine.
 */
#ifndef WK_ENGINE_H
#define WK_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "cm_err.h"
#include "backend.h"
#include "model.h"
#include "priority.h"
#include "sampler.h"
#include "tokenizer.h"
#include "grammar.h"

typedef struct wk_engine wk_engine;

typedef struct wk_engine_config {
    const wk_backend_ops *backend; /* &wk_backend_cpu or the CUDA table */
    uint32_t block_tokens;         /* default 16 */
    uint64_t kv_cache_bytes;       /* budget; 0 = use kv_cache_fraction or a default */
    double kv_cache_fraction;      /* of free device memory, when the backend reports it */
    wk_dtype kv_dtype;             /* F16 default */
    uint32_t max_batch_tokens;     /* per-step token budget (decode + prefill chunks) */
    uint32_t max_running;          /* sequences decoding at once */
    uint32_t max_waiting;          /* waiting-queue bound; beyond it submit -> OVERLOADED */
    uint32_t max_context;          /* 0 = the model's n_ctx_train */
    bool prefix_cache;             /* default on */
    int n_threads;                 /* CPU backend threads, 0 = all cores */
    int device;                    /* CUDA device */
    /* Token bytes + trie for constrained decoding (grammar.h), built from the same tokenizer.
     * Borrowed, must outlive the engine. NULL = wk_engine_create builds its own from the
     * tokenizer (40-70 ms for a 49k vocabulary, once, never on the step path); pass one to
     * share it between engines. Without a tokenizer, requests with a grammar are rejected. */
    const wk_vocab_index *vocab;
} wk_engine_config;

/* wk_engine_config_defaults fills sensible defaults for a CPU worker. */
void wk_engine_config_defaults(wk_engine_config *c);

typedef enum wk_finish_reason {
    WK_FINISH_NONE = 0,
    WK_FINISH_STOP = 1,   /* EOS/EOG token or stop string */
    WK_FINISH_LENGTH = 2, /* max_tokens or context length */
    WK_FINISH_CANCELLED = 3,
    WK_FINISH_ERROR = 4,
} wk_finish_reason;

typedef enum wk_event_kind {
    WK_EVENT_TOKENS = 1,
    WK_EVENT_FINISHED = 2,
    WK_EVENT_ERROR = 3, /* request failed before or during generation; no FINISHED follows */
} wk_event_kind;

typedef struct wk_usage {
    uint32_t prompt_tokens;
    uint32_t cached_prompt_tokens;
    uint32_t completion_tokens;
} wk_usage;

typedef struct wk_timing {
    double queue_ms;   /* submit -> first scheduled */
    double prefill_ms; /* first scheduled -> first token */
    double decode_ms;  /* first token -> finish */
} wk_timing;

/* An event; every pointer is valid only during the callback. */
typedef struct wk_event {
    wk_event_kind kind;
    uint64_t request_id;
    void *user; /* the submit's user pointer */
    /* TOKENS */
    const int32_t *token_ids; /* (n_tokens) new tokens this step (usually 1) */
    uint32_t n_tokens;
    const char *text; /* complete UTF-8 only, stop strings removed; may be "" */
    size_t text_len;
    const wk_sample_result *logprobs; /* (n_tokens) or NULL when not requested */
    /* FINISHED (text may carry a final flush) */
    wk_finish_reason finish_reason;
    wk_usage usage;
    wk_timing timing;
    /* ERROR */
    cm_err err; /* OVERLOADED, TIMEOUT, CONTEXT_LENGTH, BACKEND, ... */
    const char *message;
} wk_event;

typedef void (*wk_event_cb)(const wk_event *ev, void *cb_arg);

typedef struct wk_request {
    uint64_t id;     /* unique among live requests of this engine */
    char tenant[64]; /* fairness key; "" = anonymous */
    wk_priority priority;
    int64_t deadline_ms;   /* cm_clock monotonic ms; 0 = none: fail if still waiting */
    const int32_t *prompt; /* (n_prompt) token ids; copied at submit */
    uint32_t n_prompt;
    uint32_t max_tokens; /* 0 = up to the context length */
    wk_sampling_params sampling;
    const char *const *stop; /* stop strings, copied at submit */
    uint32_t n_stop;
    bool ignore_eos;
    /* End-of-generation tokens do not stop the request before min_tokens tokens (0 = off). */
    uint32_t min_tokens;
    wk_event_cb cb; /* required */
    void *cb_arg;
    void *user; /* passed back in every event */
    /* Optional (NULL = off): (n_vocab) f32 that receives the model's logits at the last
     * prompt position, before sampling (reference checks, sluice-generate --dump-logits).
     * Borrowed; must stay valid until the request's first token event or its end. */
    float *prompt_logits_out;
    /* Optional constraint (NULL = unconstrained): the output must stay a prefix of the
     * grammar's language. The engine takes its own reference at submit (the caller keeps
     * its). Each step masks the logits before sampling (so logit_bias, penalties, top-k/p,
     * min-p and logprobs all see the constrained distribution: logprobs are renormalized over
     * the allowed tokens), EOG is allowed only when the output is complete, and the request
     * finishes with WK_FINISH_STOP as soon as the grammar is finished (nothing may follow). A
     * max_tokens cut gives WK_FINISH_LENGTH with the partial output as is. ignore_eos does
     * not apply to a complete grammar output. A runtime grammar bound (grammar.h) ends the
     * request with an ERROR event (CM_ERR_LIMIT). */
    wk_grammar *grammar;
} wk_request;

typedef struct wk_engine_stats {
    uint32_t waiting;
    uint32_t running;
    uint32_t kv_blocks_total;
    uint32_t kv_blocks_used;   /* referenced by live sequences */
    uint32_t kv_blocks_cached; /* unreferenced but holding reusable prefix blocks */
    uint64_t prefix_queries;   /* prompt blocks looked up */
    uint64_t prefix_hits;      /* prompt blocks found */
    uint64_t preemptions;
    uint64_t prompt_tokens; /* total prefilled (excluding cache hits) */
    uint64_t generated_tokens;
    uint64_t steps;
    uint64_t grammar_ns;  /* time spent masking and advancing grammar constraints */
    double tokens_per_s;  /* recent throughput (prefill + decode) */
    int64_t last_step_ms; /* monotonic ms of the last step (health: progress) */
} wk_engine_stats;

/* wk_engine_read_weights runs the backend's read_weights (backend.h); CM_ERR_UNSUPPORTED when
 * the backend has none. Engine thread only, between steps. */
cm_err wk_engine_read_weights(wk_engine *e, uint64_t *bytes, int64_t *ns);

/* wk_engine_compute_weights runs the backend's compute_weights (backend.h) on n_threads
 * threads (0 = all); CM_ERR_UNSUPPORTED when the backend has none. Engine thread only, between
 * steps. */
cm_err wk_engine_compute_weights(wk_engine *e, int n_threads, uint64_t *bytes, int64_t *ns);

/* wk_engine_profile runs the backend's profile (backend.h); CM_ERR_UNSUPPORTED when the backend
 * has none. Engine thread only, between steps. */
cm_err wk_engine_profile(wk_engine *e, int on, wk_phases *out);

/* wk_engine_create builds the backend for model with the config. tokenizer is borrowed (for
 * detokenizing and EOG detection). Both must outlive the engine. tok may be NULL (synthetic
 * models in benchmarks): events then carry no text, no token ends generation early, and
 * requests with stop strings are rejected. On failure err holds one
 * line. Free with wk_engine_destroy (which fails nothing: callers cancel first if they care). */
cm_err wk_engine_create(const wk_model *model, const wk_tokenizer *tok, const wk_engine_config *cfg,
                        wk_engine **out, char *err, size_t errlen);
void wk_engine_destroy(wk_engine *e);

/* wk_engine_submit validates and copies req. Returns CM_OK (events will follow), or
 * without queueing: CM_ERR_OVERLOADED (waiting queue full), CM_ERR_CONTEXT_LENGTH (prompt +
 * max_tokens cannot fit the context), CM_ERR_INVALID (bad sampling or token ids, message in
 * err), CM_ERR_EXISTS (duplicate id), CM_ERR_LIMIT (prompt larger than the whole KV cache). */
cm_err wk_engine_submit(wk_engine *e, const wk_request *req, char *err, size_t errlen);

/* wk_engine_cancel: the request finishes with WK_FINISH_CANCELLED in the next step, its KV
 * blocks freed now. CM_ERR_NOT_FOUND if unknown (already finished). */
cm_err wk_engine_cancel(wk_engine *e, uint64_t id);

/* wk_engine_step does one scheduling step + one backend forward + sampling, emitting events.
 * Returns CM_OK when it did work or had nothing to do (*did_work tells which). A backend
 * failure fails the step's requests with ERROR events and returns CM_ERR_BACKEND. */
cm_err wk_engine_step(wk_engine *e, bool *did_work);

/* wk_engine_has_work: anything waiting or running. */
bool wk_engine_has_work(const wk_engine *e);

void wk_engine_get_stats(const wk_engine *e, wk_engine_stats *out);

/* wk_engine_max_context: effective context length (tokens). */
uint32_t wk_engine_max_context(const wk_engine *e);

/* wk_engine_kv_bytes_per_token: KV bytes per token in this engine's cache (for benchmarks). */
size_t wk_engine_kv_bytes_per_token(const wk_engine *e);

#endif /* WK_ENGINE_H */
