/*
 * wk_wire: see wire.h. protobuf-c does the byte-level parsing; everything a hostile sender can
 * choose (counts, lengths, which oneof member) is checked here before anyone else reads it.
 */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenize.h"

void wk_wire_limits_init(wk_wire_limits *lim) {
    lim->max_message_bytes = 4u << 20;
    lim->max_prompt_bytes = 1u << 20;
    lim->max_messages = 1024;
    lim->max_prompt_ids = 131072;
    lim->max_string_bytes = 256;
    lim->max_tools = 128;
    lim->max_schema_bytes = 64u << 10;
    lim->max_tool_calls = 64;
}

static void fill_limits(const wk_wire_limits *in, wk_wire_limits *out) {
    wk_wire_limits_init(out);
    if (in == NULL)
        return;
    if (in->max_message_bytes)
        out->max_message_bytes = in->max_message_bytes;
    if (in->max_prompt_bytes)
        out->max_prompt_bytes = in->max_prompt_bytes;
    if (in->max_messages)
        out->max_messages = in->max_messages;
    if (in->max_prompt_ids)
        out->max_prompt_ids = in->max_prompt_ids;
    if (in->max_string_bytes)
        out->max_string_bytes = in->max_string_bytes;
    if (in->max_tools)
        out->max_tools = in->max_tools;
    if (in->max_schema_bytes)
        out->max_schema_bytes = in->max_schema_bytes;
    if (in->max_tool_calls)
        out->max_tool_calls = in->max_tool_calls;
}

/* Optional strings are NULL when absent; a present one must fit max bytes. */
static bool str_fits(const char *s, size_t max) {
    return s == NULL || strnlen(s, max + 1) <= max;
}

static cm_err check_sampling(const Sluice__SamplingParams *sp, char *err, size_t errlen) {
    if (sp == NULL)
        return CM_OK;
    if (sp->n_logit_bias > WK_MAX_LOGIT_BIAS)
        return cm_errf(CM_ERR_LIMIT, err, errlen, "too many logit_bias entries: %zu (at most %d)",
                       sp->n_logit_bias, WK_MAX_LOGIT_BIAS);
    if (sp->has_logprobs && sp->logprobs > WK_MAX_TOP_LOGPROBS + 1)
        return cm_errf(CM_ERR_LIMIT, err, errlen, "logprobs must be at most %d",
                       WK_MAX_TOP_LOGPROBS);
    return CM_OK;
}

/* Tools, tool_choice, response_format and history tool calls: sizes only (meaning is checked
 * by wk_constraint). Names are bounded by 64 bytes like OpenAI's. */
static cm_err check_tools(const Sluice__Submit *s, const wk_wire_limits *lim, char *err,
                          size_t errlen) {
    if (s->n_tools > lim->max_tools)
        return cm_errf(CM_ERR_LIMIT, err, errlen, "too many tools: %zu (at most %u)", s->n_tools,
                       lim->max_tools);
    for (size_t i = 0; i < s->n_tools; i++) {
        const Sluice__Tool *t = s->tools[i];
        if (!str_fits(t->name, 64) || t->name[0] == '\0')
            return cm_errf(CM_ERR_LIMIT, err, errlen,
                           "tools[%zu].function.name must be 1 to 64 bytes", i);
        if (!str_fits(t->description, lim->max_schema_bytes) ||
            !str_fits(t->parameters_json, lim->max_schema_bytes))
            return cm_errf(CM_ERR_LIMIT, err, errlen,
                           "tools[%zu]: description or parameters longer than %zu bytes", i,
                           lim->max_schema_bytes);
    }
    if (s->tool_choice != NULL && !str_fits(s->tool_choice->name, 64))
        return cm_errf(CM_ERR_LIMIT, err, errlen, "tool_choice name longer than 64 bytes");
    if (s->response_format != NULL &&
        (!str_fits(s->response_format->schema_json, lim->max_schema_bytes) ||
         !str_fits(s->response_format->name, 64)))
        return cm_errf(CM_ERR_LIMIT, err, errlen,
                       "response_format schema longer than %zu bytes or name longer than 64",
                       lim->max_schema_bytes);
    for (size_t i = 0; i < s->n_messages; i++) {
        const Sluice__ChatMessage *m = s->messages[i];
        if (m->n_tool_calls > lim->max_tool_calls)
            return cm_errf(CM_ERR_LIMIT, err, errlen,
                           "messages[%zu]: too many tool_calls (at most %u)", i,
                           lim->max_tool_calls);
        if (!str_fits(m->tool_call_id, lim->max_string_bytes))
            return cm_errf(CM_ERR_LIMIT, err, errlen, "messages[%zu].tool_call_id too long", i);
        for (size_t k = 0; k < m->n_tool_calls; k++) {
            const Sluice__ToolCall *c = m->tool_calls[k];
            if (!str_fits(c->id, lim->max_string_bytes) || !str_fits(c->name, 64) ||
                !str_fits(c->arguments_json, lim->max_schema_bytes))
                return cm_errf(CM_ERR_LIMIT, err, errlen,
                               "messages[%zu].tool_calls[%zu]: id, name or arguments too long", i,
                               k);
        }
    }
    return CM_OK;
}

cm_err wk_wire_check_submit(const Sluice__Submit *s, const wk_wire_limits *lim, char *err,
                            size_t errlen) {
    int forms = (s->n_messages > 0) + (s->prompt != NULL) + (s->n_prompt_token_ids > 0);
    if (forms != 1)
        return cm_errf(CM_ERR_INVALID, err, errlen,
                       "exactly one of messages, prompt or prompt_token_ids must be given (got %d)",
                       forms);
    if (!str_fits(s->model, lim->max_string_bytes) || !str_fits(s->tenant, 63) ||
        !str_fits(s->gateway_request_id, lim->max_string_bytes))
        return cm_errf(CM_ERR_LIMIT, err, errlen, "model, tenant or gateway_request_id too long");
    if (s->n_messages > lim->max_messages)
        return cm_errf(CM_ERR_LIMIT, err, errlen, "too many messages: %zu (at most %u)",
                       s->n_messages, lim->max_messages);
    size_t total = 0;
    for (size_t i = 0; i < s->n_messages; i++) {
        const Sluice__ChatMessage *m = s->messages[i];
        if (!str_fits(m->role, lim->max_string_bytes) || !str_fits(m->name, lim->max_string_bytes))
            return cm_errf(CM_ERR_LIMIT, err, errlen, "messages[%zu]: role or name too long", i);
        size_t n = strnlen(m->content, lim->max_prompt_bytes + 1);
        total += n;
        if (total > lim->max_prompt_bytes)
            return cm_errf(CM_ERR_LIMIT, err, errlen, "messages are longer than %zu bytes",
                           lim->max_prompt_bytes);
    }
    if (s->prompt != NULL && strnlen(s->prompt, lim->max_prompt_bytes + 1) > lim->max_prompt_bytes)
        return cm_errf(CM_ERR_LIMIT, err, errlen, "prompt is longer than %zu bytes",
                       lim->max_prompt_bytes);
    if (s->n_prompt_token_ids > lim->max_prompt_ids)
        return cm_errf(CM_ERR_LIMIT, err, errlen, "too many prompt_token_ids: %zu (at most %u)",
                       s->n_prompt_token_ids, lim->max_prompt_ids);
    if (s->n_stop > WK_MAX_STOP_STRINGS)
        return cm_errf(CM_ERR_LIMIT, err, errlen, "too many stop strings: %zu (at most %d)",
                       s->n_stop, WK_MAX_STOP_STRINGS);
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t n = strnlen(s->stop[i], WK_MAX_STOP_BYTES);
        if (n == 0)
            return cm_errf(CM_ERR_INVALID, err, errlen, "stop[%zu] is empty", i);
        if (n >= WK_MAX_STOP_BYTES)
            return cm_errf(CM_ERR_LIMIT, err, errlen, "stop[%zu] is longer than %d bytes", i,
                           WK_MAX_STOP_BYTES - 1);
    }
    if (s->has_priority && s->priority != SLUICE__PRIORITY__PRIORITY_INTERACTIVE &&
        s->priority != SLUICE__PRIORITY__PRIORITY_BATCH)
        return cm_errf(CM_ERR_INVALID, err, errlen, "unknown priority %d", (int)s->priority);
    cm_err rv = check_tools(s, lim, err, errlen);
    if (rv != CM_OK)
        return rv;
    return check_sampling(s->sampling, err, errlen);
}

cm_err wk_wire_decode(const void *data, size_t len, const wk_wire_limits *limits, wk_wire_in *out,
                      char *err, size_t errlen) {
    wk_wire_limits lim;
    fill_limits(limits, &lim);
    memset(out, 0, sizeof *out);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (len > lim.max_message_bytes)
        return cm_errf(CM_ERR_LIMIT, err, errlen, "message of %zu bytes exceeds %zu", len,
                       lim.max_message_bytes);
    /* An empty buffer unpacks to an empty Envelope; the oneof check below rejects it. */
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, len, data);
    if (env == NULL)
        return cm_errf(CM_ERR_FORMAT, err, errlen, "not a sluice.Envelope");
    cm_err rv = CM_OK;
    switch (env->msg_case) {
    case SLUICE__ENVELOPE__MSG_HELLO:
        if (env->hello == NULL)
            goto bad_oneof;
        if (!str_fits(env->hello->role, lim.max_string_bytes) ||
            !str_fits(env->hello->model, lim.max_string_bytes) ||
            !str_fits(env->hello->backend, lim.max_string_bytes) ||
            !str_fits(env->hello->instance_id, lim.max_string_bytes)) {
            rv = cm_errf(CM_ERR_LIMIT, err, errlen, "hello: a string field is too long");
            goto fail;
        }
        out->kind = WK_WIRE_HELLO;
        break;
    case SLUICE__ENVELOPE__MSG_SUBMIT:
        if (env->submit == NULL)
            goto bad_oneof;
        out->has_request_id = true;
        out->request_id = env->submit->request_id;
        rv = wk_wire_check_submit(env->submit, &lim, err, errlen);
        if (rv != CM_OK)
            goto fail;
        out->kind = WK_WIRE_SUBMIT;
        break;
    case SLUICE__ENVELOPE__MSG_CANCEL:
        if (env->cancel == NULL)
            goto bad_oneof;
        out->has_request_id = true;
        out->request_id = env->cancel->request_id;
        out->kind = WK_WIRE_CANCEL;
        break;
    case SLUICE__ENVELOPE__MSG_TOKENIZE:
        if (env->tokenize == NULL)
            goto bad_oneof;
        out->has_request_id = true;
        out->request_id = env->tokenize->request_id;
        rv = wk_tokenize_check(env->tokenize, &lim, err, errlen);
        if (rv != CM_OK)
            goto fail;
        out->kind = WK_WIRE_TOKENIZE;
        break;
    case SLUICE__ENVELOPE__MSG_EVENT:
    case SLUICE__ENVELOPE__MSG_STATS:
    case SLUICE__ENVELOPE__MSG_DRAIN:
        out->kind = WK_WIRE_IGNORED;
        break;
    default:
        goto bad_oneof;
    }
    out->env = env;
    return CM_OK;

bad_oneof:
    rv = cm_errf(CM_ERR_FORMAT, err, errlen, "envelope carries no known message (case %d)",
                 (int)env->msg_case);
fail:
    sluice__envelope__free_unpacked(env, NULL);
    out->kind = WK_WIRE_NONE;
    return rv;
}

void wk_wire_in_free(wk_wire_in *in) {
    if (in->env != NULL)
        sluice__envelope__free_unpacked(in->env, NULL);
    memset(in, 0, sizeof *in);
}

cm_err wk_wire_sampling(const Sluice__SamplingParams *sp, uint64_t random_seed,
                        wk_sampling_params *out, char *err, size_t errlen) {
    wk_sampling_defaults(out);
    out->seed = random_seed;
    if (sp == NULL)
        return CM_OK;
    cm_err rv = check_sampling(sp, err, errlen);
    if (rv != CM_OK)
        return rv;
    if (sp->has_temperature)
        out->temperature = sp->temperature;
    if (sp->has_top_p)
        out->top_p = sp->top_p;
    if (sp->has_top_k)
        out->top_k = sp->top_k;
    if (sp->has_min_p)
        out->min_p = sp->min_p;
    if (sp->has_seed)
        out->seed = sp->seed;
    if (sp->has_presence_penalty)
        out->presence_penalty = sp->presence_penalty;
    if (sp->has_frequency_penalty)
        out->frequency_penalty = sp->frequency_penalty;
    if (sp->has_repetition_penalty)
        out->repetition_penalty = sp->repetition_penalty;
    out->n_logit_bias = (uint32_t)sp->n_logit_bias;
    for (size_t i = 0; i < sp->n_logit_bias; i++) {
        out->logit_bias[i].token_id = sp->logit_bias[i]->token_id;
        out->logit_bias[i].bias = sp->logit_bias[i]->bias;
    }
    /* Wire: 0 = off, else (top alternatives wanted) + 1. */
    if (sp->has_logprobs && sp->logprobs > 0) {
        out->logprobs = true;
        out->top_logprobs = sp->logprobs - 1;
    }
    return CM_OK;
}

void wk_wire_buf_free(wk_wire_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

static cm_err pack_envelope(const Sluice__Envelope *env, wk_wire_buf *out) {
    size_t n = sluice__envelope__get_packed_size(env);
    /* +1 so an empty envelope still gets a non-NULL buffer. */
    out->data = malloc(n + 1);
    if (out->data == NULL) {
        out->len = 0;
        return CM_ERR_NOMEM;
    }
    out->len = sluice__envelope__pack(env, out->data);
    return CM_OK;
}

cm_err wk_wire_encode_hello(const wk_wire_hello_info *h, wk_wire_buf *out) {
    Sluice__Hello hello = SLUICE__HELLO__INIT;
    hello.protocol_version = WK_WIRE_PROTOCOL_VERSION;
    hello.role = (char *)"worker";
    hello.model = (char *)h->model;
    hello.backend = (char *)h->backend;
    hello.instance_id = (char *)h->instance_id;
    hello.has_max_context_tokens = true;
    hello.max_context_tokens = h->max_context_tokens;
    hello.has_max_batch_tokens = true;
    hello.max_batch_tokens = h->max_batch_tokens;
    hello.has_max_waiting = true;
    hello.max_waiting = h->max_waiting;
    hello.has_draining = true;
    hello.draining = h->draining;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_HELLO;
    env.hello = &hello;
    return pack_envelope(&env, out);
}

cm_err wk_wire_encode_stats(const wk_wire_stats *s, wk_wire_buf *out) {
    Sluice__Stats st = SLUICE__STATS__INIT;
    st.has_waiting = st.has_running = st.has_kv_blocks_free = st.has_kv_blocks_total = true;
    st.has_tokens_per_s = st.has_draining = st.has_prefix_hits = st.has_preemptions = true;
    st.waiting = s->waiting;
    st.running = s->running;
    st.kv_blocks_free = s->kv_blocks_free;
    st.kv_blocks_total = s->kv_blocks_total;
    st.tokens_per_s = s->tokens_per_s;
    st.draining = s->draining;
    st.prefix_hits = s->prefix_hits;
    st.preemptions = s->preemptions;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_STATS;
    env.stats = &st;
    return pack_envelope(&env, out);
}

cm_err wk_wire_encode_drain(uint32_t timeout_ms, wk_wire_buf *out) {
    Sluice__Drain d = SLUICE__DRAIN__INIT;
    d.has_timeout_ms = true;
    d.timeout_ms = timeout_ms;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_DRAIN;
    env.drain = &d;
    return pack_envelope(&env, out);
}

cm_err wk_wire_encode_tokenized(uint64_t request_id, Sluice__Tokenized *tk, size_t max_bytes,
                                wk_wire_buf *out) {
    Sluice__Event ev = SLUICE__EVENT__INIT;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    ev.request_id = request_id;
    ev.kind_case = SLUICE__EVENT__KIND_TOKENIZED;
    ev.tokenized = tk;
    env.msg_case = SLUICE__ENVELOPE__MSG_EVENT;
    env.event = &ev;
    out->data = NULL;
    out->len = sluice__envelope__get_packed_size(&env);
    if (out->len > max_bytes)
        return CM_ERR_LIMIT;
    return pack_envelope(&env, out);
}

static Sluice__FinishReason map_reason(wk_finish_reason r) {
    switch (r) {
    case WK_FINISH_STOP:
        return SLUICE__FINISH_REASON__FINISH_REASON_STOP;
    case WK_FINISH_LENGTH:
        return SLUICE__FINISH_REASON__FINISH_REASON_LENGTH;
    case WK_FINISH_CANCELLED:
        return SLUICE__FINISH_REASON__FINISH_REASON_CANCELLED;
    case WK_FINISH_ERROR:
        return SLUICE__FINISH_REASON__FINISH_REASON_ERROR;
    default:
        return SLUICE__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
    }
}

static void set_piece(const wk_tokenizer *tok, int32_t id, protobuf_c_boolean *has,
                      ProtobufCBinaryData *text) {
    if (tok == NULL || id < 0 || (uint32_t)id >= wk_tokenizer_n_vocab(tok))
        return;
    size_t n = 0;
    const char *p = wk_tokenizer_piece(tok, id, false, &n);
    if (p == NULL)
        return;
    *has = true;
    text->data = (uint8_t *)p;
    text->len = n;
}

void wk_wire_enc_init(wk_wire_enc *enc) {
    memset(enc, 0, sizeof *enc);
}

void wk_wire_enc_fini(wk_wire_enc *enc) {
    free(enc->scratch);
    memset(enc, 0, sizeof *enc);
}

/* Scratch layout of a Tokens event, each part aligned: text, deltas, delta pointers,
 * argument strings, logprobs, logprob pointers, alternatives, alternative pointers. */
#define SCRATCH_ALIGN 16u

static size_t align_up(size_t n) {
    return (n + SCRATCH_ALIGN - 1) & ~(size_t)(SCRATCH_ALIGN - 1);
}

/* Takes n bytes of the scratch (sized beforehand by need_scratch). */
static void *take(wk_wire_enc *enc, size_t *used, size_t n) {
    void *p = enc->scratch + *used;
    *used += align_up(n);
    return p;
}

/* Makes the scratch hold at least n bytes. Grows only (to the largest event seen), so in a
 * steady stream of events it allocates nothing. */
static cm_err need_scratch(wk_wire_enc *enc, size_t n) {
    if (n <= enc->scratch_cap)
        return CM_OK;
    size_t cap = enc->scratch_cap > 0 ? enc->scratch_cap : 1024;
    while (cap < n)
        cap *= 2;
    /* Nothing in the scratch is in use between events: no realloc copy needed. */
    uint8_t *p = malloc(cap);
    if (p == NULL)
        return CM_ERR_NOMEM;
    free(enc->scratch);
    enc->scratch = p;
    enc->scratch_cap = cap;
    return CM_OK;
}

/* The generated struct wants NUL-terminated strings; engine text is a (pointer, length). */
static char *copy_str(wk_wire_enc *enc, size_t *used, const char *s, size_t len) {
    char *p = take(enc, used, len + 1);
    if (len > 0)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* Points the envelope at enc->event and measures it. */
static void seal(wk_wire_enc *enc) {
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_EVENT;
    env.event = &enc->event;
    enc->env = env;
    enc->len = sluice__envelope__get_packed_size(&enc->env);
}

/* Tokens: text, tool-call deltas and logprobs (one TokenLogprob per token, each with its
 * alternatives), every sub-message and string copy in the scratch. */
static cm_err build_tokens(wk_wire_enc *enc, const wk_event *ev, const wk_tokenizer *tok,
                           const wk_wire_tool_delta *deltas, size_t n_deltas) {
    size_t n_lp = ev->logprobs != NULL ? ev->n_tokens : 0;
    size_t need = align_up(ev->text_len + 1);
    if (n_deltas > 0) {
        need += align_up(n_deltas * sizeof(Sluice__ToolCallDelta)) +
                align_up(n_deltas * sizeof(Sluice__ToolCallDelta *));
        for (size_t i = 0; i < n_deltas; i++)
            need += align_up(deltas[i].arguments_len + 1);
    }
    if (n_lp > 0)
        need += align_up(n_lp * sizeof(Sluice__TokenLogprob)) +
                align_up(n_lp * sizeof(Sluice__TokenLogprob *)) +
                align_up(n_lp * WK_MAX_TOP_LOGPROBS * sizeof(Sluice__TopLogprob)) +
                align_up(n_lp * WK_MAX_TOP_LOGPROBS * sizeof(Sluice__TopLogprob *));
    cm_err rv = need_scratch(enc, need);
    if (rv != CM_OK)
        return rv;
    size_t used = 0;
    Sluice__Tokens t = SLUICE__TOKENS__INIT;
    t.n_token_ids = ev->n_tokens;
    t.token_ids = (int32_t *)ev->token_ids;
    t.text = copy_str(enc, &used, ev->text, ev->text_len);
    if (n_deltas > 0) {
        Sluice__ToolCallDelta *tds = take(enc, &used, n_deltas * sizeof *tds);
        Sluice__ToolCallDelta **td_ptrs = take(enc, &used, n_deltas * sizeof *td_ptrs);
        for (size_t i = 0; i < n_deltas; i++) {
            Sluice__ToolCallDelta init = SLUICE__TOOL_CALL_DELTA__INIT;
            tds[i] = init;
            tds[i].index = deltas[i].index;
            tds[i].id = (char *)deltas[i].id;
            tds[i].name = (char *)deltas[i].name;
            tds[i].arguments = copy_str(enc, &used, deltas[i].arguments, deltas[i].arguments_len);
            td_ptrs[i] = &tds[i];
        }
        t.n_tool_calls = n_deltas;
        t.tool_calls = td_ptrs;
    }
    if (n_lp > 0) {
        Sluice__TokenLogprob *lps = take(enc, &used, n_lp * sizeof *lps);
        Sluice__TokenLogprob **lp_ptrs = take(enc, &used, n_lp * sizeof *lp_ptrs);
        Sluice__TopLogprob *tops = take(enc, &used, n_lp * WK_MAX_TOP_LOGPROBS * sizeof *tops);
        Sluice__TopLogprob **top_ptrs =
            take(enc, &used, n_lp * WK_MAX_TOP_LOGPROBS * sizeof *top_ptrs);
        for (size_t i = 0; i < n_lp; i++) {
            const wk_sample_result *r = &ev->logprobs[i];
            Sluice__TokenLogprob init = SLUICE__TOKEN_LOGPROB__INIT;
            lps[i] = init;
            lps[i].token_id = r->token_id;
            lps[i].logprob = r->logprob;
            set_piece(tok, r->token_id, &lps[i].has_text, &lps[i].text);
            uint32_t n_top = r->n_top < WK_MAX_TOP_LOGPROBS ? r->n_top : WK_MAX_TOP_LOGPROBS;
            Sluice__TopLogprob **row = &top_ptrs[i * WK_MAX_TOP_LOGPROBS];
            for (uint32_t k = 0; k < n_top; k++) {
                Sluice__TopLogprob *tp = &tops[i * WK_MAX_TOP_LOGPROBS + k];
                Sluice__TopLogprob tinit = SLUICE__TOP_LOGPROB__INIT;
                *tp = tinit;
                tp->token_id = r->top[k].token_id;
                tp->logprob = r->top[k].logprob;
                set_piece(tok, r->top[k].token_id, &tp->has_text, &tp->text);
                row[k] = tp;
            }
            lps[i].n_top = n_top;
            lps[i].top = row;
            lp_ptrs[i] = &lps[i];
        }
        t.n_logprobs = n_lp;
        t.logprobs = lp_ptrs;
    }
    enc->tokens = t;
    enc->event.kind_case = SLUICE__EVENT__KIND_TOKENS;
    enc->event.tokens = &enc->tokens;
    return CM_OK;
}

static cm_err build_finished(wk_wire_enc *enc, const wk_event *ev, bool tool_calls_finish) {
    Sluice__Usage u = SLUICE__USAGE__INIT;
    u.prompt_tokens = ev->usage.prompt_tokens;
    u.completion_tokens = ev->usage.completion_tokens;
    u.has_cached_prompt_tokens = true;
    u.cached_prompt_tokens = ev->usage.cached_prompt_tokens;
    enc->usage = u;
    Sluice__Timing tm = SLUICE__TIMING__INIT;
    tm.has_queue_ms = tm.has_prefill_ms = tm.has_decode_ms = true;
    tm.queue_ms = ev->timing.queue_ms;
    tm.prefill_ms = ev->timing.prefill_ms;
    tm.decode_ms = ev->timing.decode_ms;
    enc->timing = tm;
    Sluice__Finished f = SLUICE__FINISHED__INIT;
    f.reason = tool_calls_finish ? SLUICE__FINISH_REASON__FINISH_REASON_TOOL_CALLS
                                 : map_reason(ev->finish_reason);
    f.usage = &enc->usage;
    f.timing = &enc->timing;
    if (ev->text != NULL && ev->text_len > 0) {
        cm_err rv = need_scratch(enc, align_up(ev->text_len + 1));
        if (rv != CM_OK)
            return rv;
        size_t used = 0;
        f.text = copy_str(enc, &used, ev->text, ev->text_len);
    }
    enc->finished = f;
    enc->event.kind_case = SLUICE__EVENT__KIND_FINISHED;
    enc->event.finished = &enc->finished;
    return CM_OK;
}

static void build_error(wk_wire_enc *enc, cm_err code, const char *message) {
    Sluice__Error e = SLUICE__ERROR__INIT;
    e.code = (uint32_t)code;
    e.message = (char *)(message != NULL ? message : cm_strerror(code));
    enc->error = e;
    enc->event.kind_case = SLUICE__EVENT__KIND_ERROR;
    enc->event.error = &enc->error;
}

cm_err wk_wire_enc_event(wk_wire_enc *enc, const wk_event *ev, uint64_t request_id,
                         const wk_tokenizer *tok, const wk_wire_tool_delta *deltas, size_t n_deltas,
                         bool tool_calls_finish) {
    Sluice__Event e = SLUICE__EVENT__INIT;
    e.request_id = request_id;
    enc->event = e;
    enc->len = 0;
    cm_err rv = CM_OK;
    switch (ev->kind) {
    case WK_EVENT_TOKENS:
        rv = build_tokens(enc, ev, tok, deltas, n_deltas);
        break;
    case WK_EVENT_FINISHED:
        rv = build_finished(enc, ev, tool_calls_finish);
        break;
    case WK_EVENT_ERROR:
    default:
        build_error(enc, ev->err != CM_OK ? ev->err : CM_ERR_INTERNAL, ev->message);
        break;
    }
    if (rv != CM_OK)
        return rv;
    seal(enc);
    return CM_OK;
}

cm_err wk_wire_enc_error(wk_wire_enc *enc, uint64_t request_id, cm_err code, const char *message) {
    Sluice__Event e = SLUICE__EVENT__INIT;
    e.request_id = request_id;
    enc->event = e;
    build_error(enc, code, message);
    seal(enc);
    return CM_OK;
}

size_t wk_wire_enc_len(const wk_wire_enc *enc) {
    return enc->len;
}

void wk_wire_enc_write(const void *enc, uint8_t *dst) {
    const wk_wire_enc *e = enc;
    /* Packs exactly e->len bytes: get_packed_size measured this very tree. */
    (void)sluice__envelope__pack(&e->env, dst);
}

/* The one-shot encoders: an encoder on the stack, its bytes in a malloc'd buffer. */
static cm_err enc_to_buf(const wk_wire_enc *enc, wk_wire_buf *out) {
    return pack_envelope(&enc->env, out);
}

cm_err wk_wire_encode_error(uint64_t request_id, cm_err code, const char *message,
                            wk_wire_buf *out) {
    wk_wire_enc enc;
    wk_wire_enc_init(&enc);
    cm_err rv = wk_wire_enc_error(&enc, request_id, code, message);
    if (rv == CM_OK)
        rv = enc_to_buf(&enc, out);
    wk_wire_enc_fini(&enc);
    return rv;
}

cm_err wk_wire_encode_event(const wk_event *ev, uint64_t request_id, const wk_tokenizer *tok,
                            wk_wire_buf *out) {
    return wk_wire_encode_event_tools(ev, request_id, tok, NULL, 0, false, out);
}

cm_err wk_wire_encode_event_tools(const wk_event *ev, uint64_t request_id, const wk_tokenizer *tok,
                                  const wk_wire_tool_delta *deltas, size_t n_deltas,
                                  bool tool_calls_finish, wk_wire_buf *out) {
    out->data = NULL;
    out->len = 0;
    wk_wire_enc enc;
    wk_wire_enc_init(&enc);
    cm_err rv = wk_wire_enc_event(&enc, ev, request_id, tok, deltas, n_deltas, tool_calls_finish);
    if (rv == CM_OK)
        rv = enc_to_buf(&enc, out);
    wk_wire_enc_fini(&enc);
    return rv;
}
