/*
 * wk_engine: glue between the scheduler (what runs this step), the backend (the forward), the
 * sampler (next tokens) and the request callbacks (events). See engine.h for the contract and
 * scheduler.h for the scheduling policy.
 *
 * A step: plan -> emit drops and pending cancels -> gather the batch -> forward -> commit ->
 * sample every sequence whose chunk reached its last known token -> stop checks -> events.
 * All step buffers are sized at create; a request allocates once, at submit.
 *
 * Exactness: the engine feeds every token with the same ids, positions and KV whatever else
 * shares the step, whether its prefix came from the cache, and whether it was preempted and
 * recomputed (the RNG state and the generated tokens are kept). Outputs are therefore
 * bit-identical across those cases when the backend computes a token the same way whatever the
 * size of the batch, as the CPU backend does (every token takes its int8 kernels, whatever the
 * step size).
 */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_clock.h"
#include "kv_cache.h"
#include "scheduler.h"

#define ENGINE_DEFAULT_KV_BYTES (256ull << 20)
#define ENGINE_MIN_KV_BLOCKS 4u
#define ENGINE_MAX_RUNNING 4096u
#define ENGINE_MAX_WAITING (1u << 20)
#define ENGINE_MAX_BATCH_TOKENS (1u << 16)
/* Final flush: detok's pending bytes become at most 8 U+FFFD (3 bytes each), plus the stop
 * matcher's held text. */
#define ENGINE_FLUSH_BYTES (8 * 3 + WK_MAX_STOP_BYTES + 16)

typedef struct eng_seq {
    wk_seq super; /* first: the scheduler's view */
    struct eng_seq *live_next, *live_prev;
    struct eng_seq *pending_next; /* cancelled, FINISHED event due next step */

    wk_event_cb cb;
    void *cb_arg;
    void *user;
    uint32_t max_tokens; /* resolved: > 0 */
    bool ignore_eos;
    uint32_t min_tokens;
    bool ignore_eos_asked; /* the request's own (ignore_eos is held on for min_tokens) */
    bool want_logprobs;
    float *prompt_logits_out;
    wk_sampling_params sampling;
    bool has_stop;
    wk_stop_matcher stop;
    wk_detok detok;
    wk_rng rng;
    wk_grammar_state *grammar; /* NULL = unconstrained */

    uint32_t n_generated;
    int64_t t_submit_ns;
    int64_t t_scheduled_ns; /* 0 until first scheduled */
    int64_t t_first_token_ns;
} eng_seq;

struct wk_engine {
    const wk_model *model;
    const wk_tokenizer *tok;
    const wk_vocab_index *vocab; /* cfg.vocab, or own_vocab once a grammar came */
    wk_vocab_index *own_vocab;
    wk_engine_config cfg;
    wk_backend *be;
    wk_kv_cache *kv;
    wk_sched *sched;
    wk_sampler *sampler;

    uint32_t n_vocab;
    uint32_t max_context;
    uint32_t max_blocks_per_seq;
    size_t kv_bytes_per_token;

    /* step scratch, sized at create */
    int32_t *b_tokens;      /* (max_batch_tokens) */
    int32_t *b_positions;   /* (max_batch_tokens) */
    uint32_t *b_seq_start;  /* (max_running + 1) */
    int32_t *b_block_table; /* (max_running, max_blocks_per_seq) */
    uint8_t *b_want_logits; /* (max_running) */
    float *logits;          /* (max_running, n_vocab) */
    /* device sampling (backend forward_sample), NULL/false when off */
    bool dev_sampling;          /* the backend has it and SLUICE_DEVICE_SAMPLING is not 0 */
    wk_dev_sample_seq *ds_seqs; /* (max_running) */
    wk_penalty_entry *ds_pen;   /* (max_running, WK_DEV_SAMPLE_MAX_PENALTY) */
    wk_sample_result *ds_out;   /* (max_running) */
    char *text;                 /* (text_cap) detokenized delta */
    char *out;                  /* (out_cap) stop-filtered delta */
    size_t text_cap;
    size_t out_cap;

    eng_seq *live; /* every submitted request not yet freed */
    uint32_t n_live;
    eng_seq *pending_head, *pending_tail;

    uint64_t prompt_tokens;
    uint64_t generated_tokens;
    uint64_t steps;
    uint64_t grammar_ns;
    int64_t last_step_ms;
    int64_t window_start_ns;
    uint64_t window_tokens;
    double tokens_per_s;
};

void wk_engine_config_defaults(wk_engine_config *c) {
    memset(c, 0, sizeof(*c));
    c->backend = &wk_backend_cpu;
    c->block_tokens = 16;
    c->kv_cache_bytes = 0;
    c->kv_cache_fraction = 0.9;
    c->kv_dtype = WK_DTYPE_F16;
    c->max_batch_tokens = 512;
    c->max_running = 64;
    c->max_waiting = 1024;
    c->max_context = 0;
    c->prefix_cache = true;
    c->n_threads = 0;
    c->device = 0;
}

static double ns_to_ms(int64_t ns) {
    return (double)ns / 1e6;
}

/* ---- live requests ---------------------------------------------------------------------- */

static eng_seq *find_live(const wk_engine *e, uint64_t id) {
    for (eng_seq *q = e->live; q != NULL; q = q->live_next)
        if (q->super.id == id)
            return q;
    return NULL;
}

static void free_seq(wk_engine *e, eng_seq *q) {
    if (q->live_prev != NULL)
        q->live_prev->live_next = q->live_next;
    else
        e->live = q->live_next;
    if (q->live_next != NULL)
        q->live_next->live_prev = q->live_prev;
    e->n_live--;
    wk_grammar_state_free(q->grammar);
    free(q);
}

/* ---- events ----------------------------------------------------------------------------- */

static void emit_error(wk_engine *e, eng_seq *q, cm_err err, const char *message) {
    (void)e;
    wk_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = WK_EVENT_ERROR;
    ev.request_id = q->super.id;
    ev.user = q->user;
    ev.text = "";
    ev.err = err;
    ev.message = message;
    q->cb(&ev, q->cb_arg);
}

static void fill_timing(const eng_seq *q, int64_t now_ns, wk_timing *t) {
    int64_t sched = q->t_scheduled_ns != 0 ? q->t_scheduled_ns : now_ns;
    int64_t first = q->t_first_token_ns != 0 ? q->t_first_token_ns : now_ns;
    t->queue_ms = ns_to_ms(sched - q->t_submit_ns);
    t->prefill_ms = ns_to_ms(first - sched);
    t->decode_ms = ns_to_ms(now_ns - first);
}

static void emit_finished(wk_engine *e, eng_seq *q, wk_finish_reason reason, const char *text,
                          size_t text_len) {
    (void)e;
    wk_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = WK_EVENT_FINISHED;
    ev.request_id = q->super.id;
    ev.user = q->user;
    ev.text = text;
    ev.text_len = text_len;
    ev.finish_reason = reason;
    ev.usage.prompt_tokens = q->super.n_prompt;
    ev.usage.cached_prompt_tokens = q->super.n_cached_prompt;
    ev.usage.completion_tokens = q->n_generated;
    fill_timing(q, cm_clock_mono_ns(), &ev.timing);
    q->cb(&ev, q->cb_arg);
}

/* flush_text collects what a finishing sequence still holds: detokenizer tail, then the stop
 * matcher's held text (no stop matched, so it is released). Writes into e->out. */
static size_t flush_text(wk_engine *e, eng_seq *q) {
    if (e->tok == NULL)
        return 0;
    char tail[32];
    size_t n_tail = wk_detok_flush(&q->detok, tail, sizeof(tail));
    size_t n = 0;
    if (q->has_stop) {
        bool stopped = false;
        wk_stop_push(&q->stop, tail, n_tail, e->out, &n, &stopped);
        if (!stopped)
            n += wk_stop_flush(&q->stop, e->out + n);
    } else {
        memcpy(e->out, tail, n_tail);
        n = n_tail;
    }
    return n;
}

/* finish ends a sequence: FINISHED event (with final_text), out of the scheduler, freed. */
static void finish(wk_engine *e, eng_seq *q, wk_finish_reason reason, bool flush) {
    size_t n = flush ? flush_text(e, q) : 0;
    wk_sched_remove(e->sched, &q->super);
    emit_finished(e, q, reason, n > 0 ? e->out : "", n);
    free_seq(e, q);
}

/* ---- create / destroy ------------------------------------------------------------------- */

static size_t max_piece_len(const wk_tokenizer *tok) {
    size_t best = 0;
    uint32_t n = wk_tokenizer_n_vocab(tok);
    for (uint32_t id = 0; id < n; id++) {
        size_t len = 0;
        (void)wk_tokenizer_piece(tok, (int32_t)id, true, &len);
        if (len > best)
            best = len;
    }
    return best;
}

static cm_err resolve_config(const wk_model *model, const wk_engine_config *in, wk_engine_config *c,
                             char *err, size_t errlen) {
    *c = *in;
    if (c->backend == NULL) {
        snprintf(err, errlen, "engine: no backend given");
        return CM_ERR_CONFIG;
    }
    if (c->block_tokens == 0)
        c->block_tokens = 16;
    if (c->block_tokens > WK_KV_MAX_BLOCK_TOKENS) {
        snprintf(err, errlen, "engine: block_tokens %u exceeds %u", c->block_tokens,
                 WK_KV_MAX_BLOCK_TOKENS);
        return CM_ERR_CONFIG;
    }
    if (c->kv_dtype != WK_DTYPE_F16 && c->kv_dtype != WK_DTYPE_F32) {
        snprintf(err, errlen, "engine: kv dtype %s is not supported (F16 or F32)",
                 wk_dtype_name(c->kv_dtype));
        return CM_ERR_CONFIG;
    }
    if (c->max_batch_tokens == 0)
        c->max_batch_tokens = 512;
    if (c->max_running == 0)
        c->max_running = 64;
    if (c->max_waiting == 0)
        c->max_waiting = 1024;
    if (c->max_batch_tokens > ENGINE_MAX_BATCH_TOKENS || c->max_running > ENGINE_MAX_RUNNING ||
        c->max_waiting > ENGINE_MAX_WAITING) {
        snprintf(err, errlen,
                 "engine: limits too large (max_batch_tokens <= %u, max_running <= %u, "
                 "max_waiting <= %u)",
                 ENGINE_MAX_BATCH_TOKENS, ENGINE_MAX_RUNNING, ENGINE_MAX_WAITING);
        return CM_ERR_CONFIG;
    }
    if (c->max_batch_tokens < c->max_running) {
        /* Every running sequence must be able to decode a token in every step. */
        snprintf(err, errlen, "engine: max_batch_tokens (%u) must be at least max_running (%u)",
                 c->max_batch_tokens, c->max_running);
        return CM_ERR_CONFIG;
    }
    if (c->kv_cache_fraction < 0 || c->kv_cache_fraction > 1) {
        snprintf(err, errlen, "engine: kv_cache_fraction must be in [0, 1]");
        return CM_ERR_CONFIG;
    }
    uint32_t n_ctx = model->hp.n_ctx_train;
    if (c->max_context == 0 || (n_ctx > 0 && c->max_context > n_ctx))
        c->max_context = n_ctx;
    if (c->max_context < 2) {
        snprintf(err, errlen, "engine: context length %u is too small", c->max_context);
        return CM_ERR_CONFIG;
    }
    return CM_OK;
}

static uint64_t tensor_elems(const wk_tensor *t) {
    if (t->data == NULL)
        return 0;
    return (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
}

/* device_weight_bytes: what the weights may take on a device backend. The CUDA backend keeps
 * every matrix as f16 (it dequantizes at load), so a 4-bit file grows ~3.5x there; take the
 * larger of the file's bytes and the f16 footprint so the KV budget never crowds it out. */
static uint64_t device_weight_bytes(const wk_model *m) {
    uint64_t elems = tensor_elems(&m->tok_embd) + tensor_elems(&m->output_norm);
    if (!m->hp.tied_embeddings)
        elems += tensor_elems(&m->output);
    for (uint32_t l = 0; m->layers != NULL && l < m->hp.n_layer; l++) {
        const wk_layer *L = &m->layers[l];
        const wk_tensor *ts[] = {&L->attn_norm, &L->wq,     &L->wk,   &L->wv,
                                 &L->wo,        &L->bq,     &L->bk,   &L->bv,
                                 &L->ffn_norm,  &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
            elems += tensor_elems(ts[i]);
    }
    uint64_t f16 = elems * 2;
    return f16 > m->weight_bytes ? f16 : (uint64_t)m->weight_bytes;
}

/* kv_blocks decides the pool size from the budget: explicit bytes, else a fraction of the
 * device's free memory (measured before the backend loads anything) less the weights' device
 * footprint, else a default; never more than every running sequence at full context could
 * use. */
static cm_err kv_blocks(const wk_model *model, const wk_engine_config *c, size_t per_token,
                        uint32_t max_blocks_per_seq, uint32_t *out, char *err, size_t errlen) {
    uint64_t bytes = c->kv_cache_bytes;
    if (bytes == 0 && c->kv_cache_fraction > 0 && c->backend->free_memory != NULL) {
        size_t free_bytes = 0;
        if (c->backend->free_memory(c->device, &free_bytes) == CM_OK) {
            double usable =
                (double)free_bytes * c->kv_cache_fraction - (double)device_weight_bytes(model);
            if (usable > 0)
                bytes = (uint64_t)usable;
        }
    }
    if (bytes == 0)
        bytes = ENGINE_DEFAULT_KV_BYTES;
    uint64_t block_bytes = (uint64_t)per_token * c->block_tokens;
    uint64_t n = bytes / block_bytes;
    uint64_t most = (uint64_t)c->max_running * max_blocks_per_seq;
    if (n > most)
        n = most;
    if (n > WK_KV_MAX_BLOCKS)
        n = WK_KV_MAX_BLOCKS;
    if (n < ENGINE_MIN_KV_BLOCKS) {
        snprintf(err, errlen,
                 "engine: KV budget %llu bytes holds %llu blocks of %llu bytes; need >= %u",
                 (unsigned long long)bytes, (unsigned long long)n, (unsigned long long)block_bytes,
                 ENGINE_MIN_KV_BLOCKS);
        return CM_ERR_CONFIG;
    }
    *out = (uint32_t)n;
    return CM_OK;
}

cm_err wk_engine_create(const wk_model *model, const wk_tokenizer *tok, const wk_engine_config *cfg,
                        wk_engine **out, char *err, size_t errlen) {
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (model == NULL || cfg == NULL || out == NULL) {
        snprintf(err, errlen, "engine: missing model or config");
        return CM_ERR_INVALID;
    }
    if (model->hp.n_vocab == 0 || model->hp.n_layer == 0 || model->hp.n_head_kv == 0 ||
        model->hp.head_dim == 0) {
        snprintf(err, errlen, "engine: model has an empty shape");
        return CM_ERR_INVALID;
    }
    if (tok != NULL && wk_tokenizer_n_vocab(tok) > model->hp.n_vocab) {
        snprintf(err, errlen, "engine: tokenizer has %u tokens, model only %u",
                 wk_tokenizer_n_vocab(tok), model->hp.n_vocab);
        return CM_ERR_INVALID;
    }

    if (cfg->vocab != NULL &&
        (tok == NULL || wk_vocab_index_n_vocab(cfg->vocab) != wk_tokenizer_n_vocab(tok))) {
        snprintf(err, errlen, "engine: the vocabulary index does not match the tokenizer");
        return CM_ERR_CONFIG;
    }

    cm_err rv;
    wk_engine *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return CM_ERR_NOMEM;
    e->model = model;
    e->tok = tok;
    e->vocab = cfg->vocab;
    rv = resolve_config(model, cfg, &e->cfg, err, errlen);
    if (rv != CM_OK)
        goto fail;
    const wk_engine_config *c = &e->cfg;
    e->n_vocab = model->hp.n_vocab;
    e->max_context = c->max_context;
    e->max_blocks_per_seq = (c->max_context + c->block_tokens - 1) / c->block_tokens;
    e->kv_bytes_per_token = wk_kv_bytes_per_token(&model->hp, c->kv_dtype);

    uint32_t n_blocks = 0;
    rv = kv_blocks(model, c, e->kv_bytes_per_token, e->max_blocks_per_seq, &n_blocks, err, errlen);
    if (rv != CM_OK)
        goto fail;

    wk_backend_config bc;
    memset(&bc, 0, sizeof(bc));
    bc.block_tokens = c->block_tokens;
    bc.n_blocks = n_blocks;
    bc.kv_dtype = c->kv_dtype;
    bc.max_batch_tokens = c->max_batch_tokens;
    bc.max_seqs = c->max_running;
    bc.max_blocks_per_seq = e->max_blocks_per_seq;
    bc.n_threads = c->n_threads;
    bc.device = c->device;
    rv = c->backend->create(model, &bc, &e->be, err, errlen);
    if (rv != CM_OK)
        goto fail;

    rv = wk_kv_cache_create(n_blocks, c->block_tokens, &e->kv);
    if (rv != CM_OK) {
        snprintf(err, errlen, "engine: KV block pool: %s", cm_strerror(rv));
        goto fail;
    }
    wk_sched_config sc;
    memset(&sc, 0, sizeof(sc));
    sc.block_tokens = c->block_tokens;
    sc.max_blocks_per_seq = e->max_blocks_per_seq;
    sc.max_batch_tokens = c->max_batch_tokens;
    sc.max_running = c->max_running;
    sc.max_waiting = c->max_waiting;
    sc.prefix_cache = c->prefix_cache;
    sc.watermark_blocks = n_blocks / 100;
    rv = wk_sched_create(&sc, e->kv, &e->sched);
    if (rv != CM_OK) {
        snprintf(err, errlen, "engine: scheduler: %s", cm_strerror(rv));
        goto fail;
    }
    if (tok != NULL && e->vocab == NULL) {
        /* Constrained decoding needs token bytes and a trie: built here, off the step path. */
        rv = wk_vocab_index_create(tok, &e->own_vocab, err, errlen);
        if (rv != CM_OK)
            goto fail;
        e->vocab = e->own_vocab;
    }
    rv = wk_sampler_create(e->n_vocab, &e->sampler);
    if (rv != CM_OK) {
        snprintf(err, errlen, "engine: sampler: %s", cm_strerror(rv));
        goto fail;
    }

    e->text_cap = 64 + (tok != NULL ? max_piece_len(tok) : 0) + 64;
    e->out_cap = e->text_cap + WK_MAX_STOP_BYTES + ENGINE_FLUSH_BYTES;
    e->b_tokens = malloc((size_t)c->max_batch_tokens * sizeof(*e->b_tokens));
    e->b_positions = malloc((size_t)c->max_batch_tokens * sizeof(*e->b_positions));
    e->b_seq_start = malloc(((size_t)c->max_running + 1) * sizeof(*e->b_seq_start));
    e->b_block_table =
        malloc((size_t)c->max_running * e->max_blocks_per_seq * sizeof(*e->b_block_table));
    e->b_want_logits = malloc((size_t)c->max_running);
    e->logits = malloc((size_t)c->max_running * e->n_vocab * sizeof(*e->logits));
    e->text = malloc(e->text_cap);
    e->out = malloc(e->out_cap);
    /* Device sampling unless switched off (SLUICE_DEVICE_SAMPLING=0, for A/B runs). */
    const char *ds_env = getenv("SLUICE_DEVICE_SAMPLING");
    e->dev_sampling =
        c->backend->forward_sample != NULL && !(ds_env != NULL && !strcmp(ds_env, "0"));
    if (e->dev_sampling) {
        e->ds_seqs = calloc(c->max_running, sizeof(*e->ds_seqs));
        e->ds_pen = malloc((size_t)c->max_running * WK_DEV_SAMPLE_MAX_PENALTY * sizeof(*e->ds_pen));
        e->ds_out = calloc(c->max_running, sizeof(*e->ds_out));
        if (e->ds_seqs == NULL || e->ds_pen == NULL || e->ds_out == NULL) {
            snprintf(err, errlen, "engine: out of memory for device sampling buffers");
            rv = CM_ERR_NOMEM;
            goto fail;
        }
    }
    if (e->b_tokens == NULL || e->b_positions == NULL || e->b_seq_start == NULL ||
        e->b_block_table == NULL || e->b_want_logits == NULL || e->logits == NULL ||
        e->text == NULL || e->out == NULL) {
        snprintf(err, errlen, "engine: out of memory for step buffers");
        rv = CM_ERR_NOMEM;
        goto fail;
    }
    e->window_start_ns = cm_clock_mono_ns();
    e->last_step_ms = cm_clock_mono_ms();
    *out = e;
    return CM_OK;

fail:
    wk_engine_destroy(e);
    return rv;
}

void wk_engine_destroy(wk_engine *e) {
    if (e == NULL)
        return;
    while (e->live != NULL) {
        eng_seq *q = e->live;
        if (e->sched != NULL)
            wk_sched_remove(e->sched, &q->super);
        free_seq(e, q);
    }
    wk_sched_destroy(e->sched);
    wk_kv_cache_destroy(e->kv);
    if (e->be != NULL)
        e->cfg.backend->destroy(e->be);
    wk_sampler_destroy(e->sampler);
    wk_vocab_index_free(e->own_vocab);
    free(e->b_tokens);
    free(e->b_positions);
    free(e->b_seq_start);
    free(e->b_block_table);
    free(e->b_want_logits);
    free(e->logits);
    free(e->ds_seqs);
    free(e->ds_pen);
    free(e->ds_out);
    free(e->text);
    free(e->out);
    free(e);
}

/* ---- submit / cancel -------------------------------------------------------------------- */

cm_err wk_engine_submit(wk_engine *e, const wk_request *req, char *err, size_t errlen) {
    char dummy[8];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (req == NULL || req->cb == NULL) {
        snprintf(err, errlen, "request has no event callback");
        return CM_ERR_INVALID;
    }
    if (memchr(req->tenant, 0, sizeof(req->tenant)) == NULL) {
        snprintf(err, errlen, "tenant name is not terminated within %zu bytes",
                 sizeof(req->tenant));
        return CM_ERR_INVALID;
    }
    if (req->priority != WK_PRIORITY_INTERACTIVE && req->priority != WK_PRIORITY_BATCH) {
        snprintf(err, errlen, "unknown priority %d", (int)req->priority);
        return CM_ERR_INVALID;
    }
    if (req->n_prompt == 0 || req->prompt == NULL) {
        snprintf(err, errlen, "prompt is empty");
        return CM_ERR_INVALID;
    }
    if (req->n_prompt >= e->max_context) {
        snprintf(err, errlen, "prompt has %u tokens; the context holds %u", req->n_prompt,
                 e->max_context);
        return CM_ERR_CONTEXT_LENGTH;
    }
    uint32_t room = e->max_context - req->n_prompt;
    if (req->max_tokens > room) {
        snprintf(err, errlen,
                 "prompt (%u tokens) + max_tokens (%u) exceeds the context length (%u)",
                 req->n_prompt, req->max_tokens, e->max_context);
        return CM_ERR_CONTEXT_LENGTH;
    }
    for (uint32_t i = 0; i < req->n_prompt; i++) {
        if (req->prompt[i] < 0 || (uint32_t)req->prompt[i] >= e->n_vocab) {
            snprintf(err, errlen, "prompt token %d at index %u is not in the vocabulary (%u)",
                     req->prompt[i], i, e->n_vocab);
            return CM_ERR_INVALID;
        }
    }
    cm_err rv = wk_sampling_validate(&req->sampling, e->n_vocab, err, errlen);
    if (rv != CM_OK)
        return rv;
    if (req->n_stop > 0 && e->tok == NULL) {
        snprintf(err, errlen, "stop strings need a tokenizer");
        return CM_ERR_INVALID;
    }
    if (req->n_stop > 0 && req->stop == NULL) {
        snprintf(err, errlen, "stop strings missing");
        return CM_ERR_INVALID;
    }
    for (uint32_t i = 0; i < req->n_stop && i < WK_MAX_STOP_STRINGS; i++) {
        if (req->stop[i] == NULL) {
            snprintf(err, errlen, "stop string %u is missing", i);
            return CM_ERR_INVALID;
        }
    }
    if (req->grammar != NULL && e->tok == NULL) {
        snprintf(err, errlen, "a grammar constraint needs a tokenizer");
        return CM_ERR_INVALID;
    }
    if (find_live(e, req->id) != NULL) {
        snprintf(err, errlen, "request id %llu is already live", (unsigned long long)req->id);
        return CM_ERR_EXISTS;
    }
    uint32_t bt = e->cfg.block_tokens;
    if ((req->n_prompt + bt) / bt > wk_kv_cache_n_blocks(e->kv)) {
        snprintf(err, errlen, "prompt (%u tokens) is larger than the whole KV cache (%u tokens)",
                 req->n_prompt, wk_kv_cache_n_blocks(e->kv) * bt);
        return CM_ERR_LIMIT;
    }
    if (wk_sched_n_waiting(e->sched) >= e->cfg.max_waiting) {
        snprintf(err, errlen, "waiting queue full (%u requests)", e->cfg.max_waiting);
        return CM_ERR_OVERLOADED;
    }

    uint32_t max_tokens = req->max_tokens != 0 ? req->max_tokens : room;
    uint32_t cap_tokens = req->n_prompt + max_tokens;
    size_t tokens_off = sizeof(eng_seq);
    size_t table_off = tokens_off + (size_t)cap_tokens * sizeof(int32_t);
    table_off = (table_off + 7) & ~(size_t)7;
    size_t hash_off = table_off + (size_t)e->max_blocks_per_seq * sizeof(int32_t);
    hash_off = (hash_off + 7) & ~(size_t)7;
    size_t total = hash_off + (size_t)e->max_blocks_per_seq * sizeof(uint64_t);
    char *mem = calloc(1, total);
    if (mem == NULL) {
        snprintf(err, errlen, "out of memory");
        return CM_ERR_NOMEM;
    }
    eng_seq *q = (eng_seq *)mem;
    if (req->grammar != NULL) {
        rv = wk_grammar_state_create(req->grammar, e->vocab, &q->grammar);
        if (rv == CM_OK && wk_grammar_state_error(q->grammar)[0] != '\0') {
            snprintf(err, errlen, "%s", wk_grammar_state_error(q->grammar));
            rv = CM_ERR_LIMIT;
        }
        if (rv != CM_OK) {
            if (err[0] == '\0')
                snprintf(err, errlen, "grammar state: %s", cm_strerror(rv));
            wk_grammar_state_free(q->grammar);
            free(mem);
            return rv;
        }
    }
    if (req->n_stop > 0) {
        rv = wk_stop_init(&q->stop, req->stop, req->n_stop);
        if (rv != CM_OK) {
            snprintf(err, errlen, "stop strings: at most %d, each 1..%d bytes", WK_MAX_STOP_STRINGS,
                     WK_MAX_STOP_BYTES - 1);
            wk_grammar_state_free(q->grammar);
            free(mem);
            return rv;
        }
        q->has_stop = true;
    }
    q->super.id = req->id;
    memcpy(q->super.tenant, req->tenant, sizeof(q->super.tenant));
    q->super.priority = req->priority;
    q->super.deadline_ms = req->deadline_ms;
    q->super.tokens = (int32_t *)(mem + tokens_off);
    q->super.cap_tokens = cap_tokens;
    q->super.n_prompt = req->n_prompt;
    q->super.n_tokens = req->n_prompt;
    q->super.block_table = (int32_t *)(mem + table_off);
    q->super.block_hash = (uint64_t *)(mem + hash_off);
    memcpy(q->super.tokens, req->prompt, (size_t)req->n_prompt * sizeof(int32_t));
    q->cb = req->cb;
    q->cb_arg = req->cb_arg;
    q->user = req->user;
    q->max_tokens = max_tokens;
    q->ignore_eos = req->ignore_eos;
    q->min_tokens = req->min_tokens;
    q->ignore_eos_asked = req->ignore_eos;
    if (req->min_tokens > 0)
        q->ignore_eos = true; /* until min_tokens tokens exist (after_sample) */
    q->sampling = req->sampling;
    q->want_logprobs = req->sampling.logprobs || req->sampling.top_logprobs > 0;
    q->prompt_logits_out = req->prompt_logits_out;
    if (e->tok != NULL)
        wk_detok_init(&q->detok, e->tok);
    wk_rng_seed(&q->rng, req->sampling.seed);
    q->t_submit_ns = cm_clock_mono_ns();

    rv = wk_sched_add(e->sched, &q->super);
    if (rv != CM_OK) {
        snprintf(err, errlen, "%s",
                 rv == CM_ERR_OVERLOADED ? "waiting queue full"
                                         : "request does not fit the KV cache");
        wk_grammar_state_free(q->grammar);
        free(mem);
        return rv;
    }
    q->live_next = e->live;
    if (e->live != NULL)
        e->live->live_prev = q;
    e->live = q;
    e->n_live++;
    return CM_OK;
}

cm_err wk_engine_cancel(wk_engine *e, uint64_t id) {
    eng_seq *q = find_live(e, id);
    if (q == NULL || q->super.state == WK_SEQ_DONE)
        return CM_ERR_NOT_FOUND;
    /* Blocks go back now; the FINISHED event goes out at the start of the next step. */
    wk_sched_remove(e->sched, &q->super);
    q->pending_next = NULL;
    if (e->pending_tail != NULL)
        e->pending_tail->pending_next = q;
    else
        e->pending_head = q;
    e->pending_tail = q;
    return CM_OK;
}

/* ---- step ------------------------------------------------------------------------------- */

static bool emit_pending(wk_engine *e) {
    bool any = e->pending_head != NULL;
    while (e->pending_head != NULL) {
        eng_seq *q = e->pending_head;
        e->pending_head = q->pending_next;
        emit_finished(e, q, WK_FINISH_CANCELLED, "", 0);
        free_seq(e, q);
    }
    e->pending_tail = NULL;
    return any;
}

static void emit_drops(wk_engine *e, const wk_sched_plan *plan) {
    for (uint32_t i = 0; i < plan->n_dropped; i++) {
        eng_seq *q = (eng_seq *)plan->dropped[i].seq;
        if (plan->dropped[i].reason == CM_ERR_TIMEOUT) {
            emit_error(e, q, CM_ERR_TIMEOUT, "deadline passed while waiting to start");
        } else if (q->n_generated > 0) {
            /* It streamed tokens already and cannot grow further: end it as a length stop. */
            size_t n = flush_text(e, q);
            emit_finished(e, q, WK_FINISH_LENGTH, n > 0 ? e->out : "", n);
        } else {
            emit_error(e, q, CM_ERR_LIMIT, "request does not fit in the KV cache");
        }
        free_seq(e, q);
    }
}

/* gather turns the plan into the backend's batch (tokens grouped by sequence). */
static void gather(wk_engine *e, const wk_sched_plan *plan, wk_batch *b) {
    uint32_t pos = 0;
    size_t row = e->max_blocks_per_seq;
    for (uint32_t i = 0; i < plan->n_entries; i++) {
        const wk_sched_entry *en = &plan->entries[i];
        const wk_seq *s = en->seq;
        e->b_seq_start[i] = pos;
        for (uint32_t j = 0; j < en->n_new; j++) {
            e->b_tokens[pos] = s->tokens[s->n_computed + j];
            e->b_positions[pos] = (int32_t)(s->n_computed + j);
            pos++;
        }
        int32_t *dst = &e->b_block_table[i * row];
        memcpy(dst, s->block_table, (size_t)s->n_blocks * sizeof(*dst));
        for (size_t k = s->n_blocks; k < row; k++)
            dst[k] = -1;
        e->b_want_logits[i] = en->want_logits ? 1 : 0;
    }
    e->b_seq_start[plan->n_entries] = pos;
    b->n_seqs = plan->n_entries;
    b->n_tokens = pos;
    b->tokens = e->b_tokens;
    b->positions = e->b_positions;
    b->seq_start = e->b_seq_start;
    b->block_table = e->b_block_table;
    b->want_logits = e->b_want_logits;
}

/*
 * plan_device_sampling fills e->ds_seqs for the plan's logits-wanting sequences and returns
 * true when every one of them can be sampled on the device: no grammar mask (it needs the
 * logits on the host), no prompt logits to hand out, top_k within the device bound and at most
 * WK_DEV_SAMPLE_MAX_PENALTY distinct history tokens when a penalty is on. Otherwise the whole
 * step samples on the host (a step is all one way, so its logits copy is all or nothing).
 * Draws nothing from the RNGs.
 */
static bool plan_device_sampling(wk_engine *e, const wk_sched_plan *plan, wk_dev_sample_in *in) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < plan->n_entries; i++) {
        const wk_sched_entry *en = &plan->entries[i];
        eng_seq *q = (eng_seq *)en->seq;
        if (!en->want_logits)
            continue;
        const wk_sampling_params *p = &q->sampling;
        if (q->grammar != NULL || (q->prompt_logits_out != NULL && q->n_generated == 0))
            return false;
        if (p->top_k > WK_DEV_SAMPLE_MAX_TOP_K && (uint32_t)p->top_k < e->n_vocab)
            return false;
        wk_dev_sample_seq *d = &e->ds_seqs[n];
        d->params = p;
        d->pen = NULL;
        d->n_pen = 0;
        d->u = 0.0;
        if (wk_sampling_has_penalties(p)) {
            wk_penalty_entry *pen = &e->ds_pen[(size_t)n * WK_DEV_SAMPLE_MAX_PENALTY];
            size_t n_pen = 0;
            if (wk_sampler_penalties(e->sampler, q->super.tokens, q->super.n_tokens,
                                     q->super.n_prompt, pen, WK_DEV_SAMPLE_MAX_PENALTY,
                                     &n_pen) != CM_OK)
                return false; /* over the bound (or a bad id: the host path reports it) */
            d->pen = pen;
            d->n_pen = (uint32_t)n_pen;
        }
        n++;
    }
    in->n = n;
    in->seqs = e->ds_seqs;
    return n > 0;
}

/* after_sample appends tok to q, decides whether q stops, and emits its events. */
static void after_sample(wk_engine *e, eng_seq *q, const wk_sample_result *res, int64_t now_ns) {
    wk_seq *s = &q->super;
    int32_t tok = res->token_id;
    s->tokens[s->n_tokens++] = tok;
    q->n_generated++;
    /* min_tokens: an end-of-generation token stops only once min_tokens tokens were generated
     * before it (it is not part of the output); until then ignore_eos is held on. */
    if (q->min_tokens > 0 && q->n_generated > q->min_tokens)
        q->ignore_eos = q->ignore_eos_asked;
    e->generated_tokens++;
    if (q->t_first_token_ns == 0)
        q->t_first_token_ns = now_ns;

    wk_finish_reason reason = WK_FINISH_NONE;
    bool stop_string = false;
    size_t n_out = 0;
    /* Under a grammar EOG is only ever sampled at completion, and then it ends the output
     * (ignore_eos does not apply). */
    bool eog = e->tok != NULL && (!q->ignore_eos || q->grammar != NULL) &&
               wk_tokenizer_is_eog(e->tok, tok);
    if (eog) {
        reason = WK_FINISH_STOP;
    } else {
        if (e->tok != NULL) {
            size_t n_text = 0;
            if (wk_detok_push(&q->detok, tok, false, e->text, e->text_cap, &n_text) != CM_OK)
                n_text = 0; /* cannot happen: text_cap covers the longest piece */
            if (q->has_stop) {
                bool stopped = false;
                wk_stop_push(&q->stop, e->text, n_text, e->out, &n_out, &stopped);
                if (stopped) {
                    reason = WK_FINISH_STOP;
                    stop_string = true;
                }
            } else {
                memcpy(e->out, e->text, n_text);
                n_out = n_text;
            }
        }
        wk_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.kind = WK_EVENT_TOKENS;
        ev.request_id = s->id;
        ev.user = q->user;
        ev.token_ids = &s->tokens[s->n_tokens - 1];
        ev.n_tokens = 1;
        ev.text = n_out > 0 ? e->out : "";
        ev.text_len = n_out;
        ev.logprobs = q->want_logprobs ? res : NULL;
        q->cb(&ev, q->cb_arg);
    }
    if (reason == WK_FINISH_NONE && q->grammar != NULL && wk_grammar_finished(q->grammar))
        reason = WK_FINISH_STOP; /* nothing may follow: the output is complete */
    if (reason == WK_FINISH_NONE &&
        (q->n_generated >= q->max_tokens || s->n_tokens >= e->max_context))
        reason = WK_FINISH_LENGTH;
    if (reason != WK_FINISH_NONE)
        finish(e, q, reason, !stop_string); /* after a stop string, held text is dropped */
}

cm_err wk_engine_step(wk_engine *e, bool *did_work) {
    int64_t now_ns = cm_clock_mono_ns();
    bool worked = emit_pending(e);
    const wk_sched_plan *plan = wk_sched_plan_step(e->sched, now_ns / 1000000);
    if (plan->n_dropped > 0) {
        emit_drops(e, plan);
        worked = true;
    }
    if (plan->n_entries == 0) {
        if (did_work != NULL)
            *did_work = worked;
        return CM_OK;
    }

    wk_batch batch;
    gather(e, plan, &batch);
    for (uint32_t i = 0; i < plan->n_entries; i++) {
        eng_seq *q = (eng_seq *)plan->entries[i].seq;
        if (q->t_scheduled_ns == 0)
            q->t_scheduled_ns = now_ns;
    }
    /* Sampling on the device when every sequence allows it; the uniforms are drawn here, in
     * the order and number wk_sampler_sample would draw them, so both paths give one token
     * sequence per seed. */
    wk_dev_sample_in ds_in;
    bool dev = e->dev_sampling && plan_device_sampling(e, plan, &ds_in);
    cm_err rv;
    if (dev) {
        for (uint32_t i = 0, j = 0; i < plan->n_entries; i++) {
            eng_seq *q = (eng_seq *)plan->entries[i].seq;
            if (plan->entries[i].want_logits && wk_sampling_draws(&q->sampling))
                e->ds_seqs[j].u = wk_rng_uniform(&q->rng);
            j += plan->entries[i].want_logits ? 1 : 0;
        }
        rv = e->cfg.backend->forward_sample(e->be, &batch, &ds_in, e->ds_out);
    } else {
        rv = e->cfg.backend->forward(e->be, &batch, e->logits);
    }
    if (rv != CM_OK) {
        /* The step's sequences fail; everything else stays queued for later steps. */
        for (uint32_t i = 0; i < plan->n_entries; i++) {
            eng_seq *q = (eng_seq *)plan->entries[i].seq;
            wk_sched_remove(e->sched, &q->super);
            emit_error(e, q, CM_ERR_BACKEND, "backend forward failed");
            free_seq(e, q);
        }
        e->steps++;
        e->last_step_ms = cm_clock_mono_ms();
        if (did_work != NULL)
            *did_work = true;
        return CM_ERR_BACKEND;
    }
    wk_sched_commit(e->sched);

    int64_t done_ns = cm_clock_mono_ns();
    uint32_t n_dev = 0; /* device results used so far (they follow want_logits order) */
    for (uint32_t i = 0; i < plan->n_entries; i++) {
        const wk_sched_entry *en = &plan->entries[i];
        eng_seq *q = (eng_seq *)en->seq;
        if (q->n_generated == 0)
            e->prompt_tokens += en->n_new;
        if (!en->want_logits)
            continue;
        if (dev) {
            const wk_sample_result *dres = &e->ds_out[n_dev++];
            if (dres->token_id < 0) {
                wk_sched_remove(e->sched, &q->super);
                emit_error(e, q, CM_ERR_INVALID, "sampling failed");
                free_seq(e, q);
                continue;
            }
            after_sample(e, q, dres, done_ns);
            continue;
        }
        float *row = &e->logits[(size_t)i * e->n_vocab];
        if (q->prompt_logits_out != NULL && q->n_generated == 0) {
            memcpy(q->prompt_logits_out, row, (size_t)e->n_vocab * sizeof(*row));
            q->prompt_logits_out = NULL;
        }
        int64_t g0 = q->grammar != NULL ? cm_clock_mono_ns() : 0;
        if (q->grammar != NULL) {
            /* Constrained: forbidden tokens get -inf before bias, penalties and sampling. */
            rv = wk_grammar_mask(q->grammar, row, e->n_vocab);
            e->grammar_ns += (uint64_t)(cm_clock_mono_ns() - g0);
            if (rv != CM_OK) {
                wk_sched_remove(e->sched, &q->super);
                emit_error(e, q, rv, wk_grammar_state_error(q->grammar));
                free_seq(e, q);
                continue;
            }
        }
        wk_sample_result res;
        memset(&res, 0, sizeof(res));
        rv = wk_sampler_sample(e->sampler, &q->sampling, row, q->super.tokens, q->super.n_tokens,
                               q->super.n_prompt, &q->rng, &res);
        if (rv == CM_OK && q->grammar != NULL) {
            int64_t a0 = cm_clock_mono_ns();
            rv = wk_grammar_accept(q->grammar, res.token_id);
            e->grammar_ns += (uint64_t)(cm_clock_mono_ns() - a0);
            if (rv != CM_OK) {
                /* Cannot happen for a token the mask allowed; fail loudly if it does. */
                wk_sched_remove(e->sched, &q->super);
                emit_error(e, q, rv == CM_ERR_LIMIT ? rv : CM_ERR_INTERNAL,
                           rv == CM_ERR_LIMIT ? wk_grammar_state_error(q->grammar)
                                              : "grammar rejected the sampled token");
                free_seq(e, q);
                continue;
            }
        }
        if (rv != CM_OK) {
            wk_sched_remove(e->sched, &q->super);
            emit_error(e, q, rv, "sampling failed");
            free_seq(e, q);
            continue;
        }
        after_sample(e, q, &res, done_ns);
    }

    e->steps++;
    e->last_step_ms = done_ns / 1000000;
    e->window_tokens += plan->n_tokens;
    if (done_ns - e->window_start_ns >= 1000000000LL) {
        e->tokens_per_s = (double)e->window_tokens * 1e9 / (double)(done_ns - e->window_start_ns);
        e->window_tokens = 0;
        e->window_start_ns = done_ns;
    }
    if (did_work != NULL)
        *did_work = true;
    return CM_OK;
}

/* ---- queries ---------------------------------------------------------------------------- */

bool wk_engine_has_work(const wk_engine *e) {
    return e->pending_head != NULL || wk_sched_n_waiting(e->sched) > 0 ||
           wk_sched_n_running(e->sched) > 0;
}

void wk_engine_get_stats(const wk_engine *e, wk_engine_stats *out) {
    wk_sched_stats ss;
    wk_sched_get_stats(e->sched, &ss);
    memset(out, 0, sizeof(*out));
    out->waiting = ss.waiting;
    out->running = ss.running;
    out->kv_blocks_total = wk_kv_cache_n_blocks(e->kv);
    out->kv_blocks_used = wk_kv_cache_n_used(e->kv);
    out->kv_blocks_cached = wk_kv_cache_n_cached(e->kv);
    out->prefix_queries = ss.prefix_queries;
    out->prefix_hits = ss.prefix_hits;
    out->preemptions = ss.preemptions;
    out->prompt_tokens = e->prompt_tokens;
    out->generated_tokens = e->generated_tokens;
    out->steps = e->steps;
    out->grammar_ns = e->grammar_ns;
    /* The rate covers the last window of about a second; after two idle seconds it is 0, not
     * the last busy figure. */
    out->tokens_per_s = cm_clock_mono_ms() - e->last_step_ms > 2000 ? 0.0 : e->tokens_per_s;
    out->last_step_ms = e->last_step_ms;
}

cm_err wk_engine_read_weights(wk_engine *e, uint64_t *bytes, int64_t *ns) {
    if (e->cfg.backend->read_weights == NULL)
        return CM_ERR_UNSUPPORTED;
    return e->cfg.backend->read_weights(e->be, bytes, ns);
}

cm_err wk_engine_compute_weights(wk_engine *e, int n_threads, uint64_t *bytes, int64_t *ns) {
    if (e->cfg.backend->compute_weights == NULL)
        return CM_ERR_UNSUPPORTED;
    return e->cfg.backend->compute_weights(e->be, n_threads, bytes, ns);
}

cm_err wk_engine_profile(wk_engine *e, int on, wk_phases *out) {
    if (e->cfg.backend->profile == NULL)
        return CM_ERR_UNSUPPORTED;
    return e->cfg.backend->profile(e->be, on, out);
}

uint32_t wk_engine_max_context(const wk_engine *e) {
    return e->max_context;
}

size_t wk_engine_kv_bytes_per_token(const wk_engine *e) {
    return e->kv_bytes_per_token;
}
