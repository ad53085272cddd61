/*
 * wk_prompt: see prompt.h.
 */
#include "prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "constraint.h"

/* The context-length text; at_least when only a lower bound of the prompt is known. */
static void context_message(uint32_t max_context, uint64_t prompt_tokens,
                            uint32_t completion_tokens, bool at_least, char *err, size_t errlen) {
    const char *al = at_least ? "at least " : "";
    snprintf(err, errlen,
             "This model's maximum context length is %u tokens. However, you requested %s%llu "
             "tokens (%s%llu in the messages, %u in the completion). Please reduce the length "
             "of the messages or completion.",
             max_context, al, (unsigned long long)(prompt_tokens + completion_tokens), al,
             (unsigned long long)prompt_tokens, completion_tokens);
}

void wk_prompt_context_message(uint32_t max_context, uint32_t prompt_tokens,
                               uint32_t completion_tokens, char *err, size_t errlen) {
    context_message(max_context, prompt_tokens, completion_tokens, false, err, errlen);
}

void wk_prompt_context_message_at_least(uint32_t max_context, uint64_t prompt_tokens_min,
                                        uint32_t completion_tokens, char *err, size_t errlen) {
    context_message(max_context, prompt_tokens_min, completion_tokens, true, err, errlen);
}

/* Tokens the completion needs after the prompt: max_tokens, or at least one. */
static uint32_t completion_reserve(const Sluice__Submit *s) {
    uint32_t completion = s->has_max_tokens ? s->max_tokens : 0;
    return completion > 0 ? completion : 1;
}

/*
 * Tokenizes text, refusing what cannot fit as early as it can be proved: first from the
 * bytes alone (wk_tokenizer_min_tokens, no tokenizing), then by stopping the encoder once the
 * prompt alone has more tokens than the context. Below that the buffer holds the full count,
 * so the usual message carries exact numbers.
 */
static cm_err encode(const wk_prompt_ctx *ctx, const Sluice__Submit *s, const char *text,
                     size_t len, bool add_bos, bool parse_special, int32_t **ids_out,
                     uint32_t *n_out, char *err, size_t errlen) {
    uint32_t completion = s->has_max_tokens ? s->max_tokens : 0;
    uint64_t lower = wk_tokenizer_min_tokens(ctx->tok, text, len); /* BOS not counted */
    if (lower + completion_reserve(s) > ctx->max_context) {
        wk_prompt_context_message_at_least(ctx->max_context, lower, completion, err, errlen);
        return CM_ERR_CONTEXT_LENGTH;
    }
    /* The token count can never exceed bytes + 2 (BOS, and one token per byte at worst). */
    size_t cap = len + 2;
    bool capped = (uint64_t)ctx->max_context + 1 < cap;
    if (capped)
        cap = (size_t)ctx->max_context + 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (ids == NULL)
        return CM_ERR_NOMEM;
    size_t n = 0;
    cm_err rv = wk_tokenizer_encode(ctx->tok, text, len, add_bos, parse_special, ids, cap, &n);
    if (rv == CM_ERR_LIMIT && capped && n == cap) {
        free(ids);
        wk_prompt_context_message_at_least(ctx->max_context, n, completion, err, errlen);
        return CM_ERR_CONTEXT_LENGTH;
    }
    if (rv != CM_OK) {
        free(ids);
        if (rv == CM_ERR_UTF8)
            return cm_errf(rv, err, errlen, "prompt is not valid UTF-8");
        return cm_errf(rv, err, errlen, "cannot tokenize the prompt: %s", cm_strerror(rv));
    }
    *ids_out = ids;
    *n_out = (uint32_t)n;
    return CM_OK;
}

static cm_err build_chat(const wk_prompt_ctx *ctx, const Sluice__Submit *s, const wk_prompt_opts *o,
                         int32_t **ids_out, uint32_t *n_out, char *err, size_t errlen) {
    if (ctx->tmpl == NULL)
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "this worker has no chat template; send a raw prompt");
    size_t n_calls = 0;
    for (size_t i = 0; i < s->n_messages; i++)
        n_calls += s->messages[i]->n_tool_calls;
    size_t n_tools = wk_constraint_tools_active(s) ? s->n_tools : 0;
    wk_chat_message *msgs = calloc(s->n_messages, sizeof *msgs);
    wk_chat_tool_call *calls = calloc(n_calls + 1, sizeof *calls);
    wk_chat_tool *tools = calloc(n_tools + 1, sizeof *tools);
    size_t text_bytes = 0;
    cm_err rv = CM_OK;
    if (msgs == NULL || calls == NULL || tools == NULL) {
        rv = CM_ERR_NOMEM;
        goto done;
    }
    n_calls = 0;
    for (size_t i = 0; i < s->n_messages; i++) {
        const Sluice__ChatMessage *m = s->messages[i];
        size_t n = strlen(m->content);
        if (!wk_utf8_valid(m->content, n) || !wk_utf8_valid(m->role, strlen(m->role))) {
            rv = cm_errf(CM_ERR_UTF8, err, errlen, "messages[%zu] is not valid UTF-8", i);
            goto done;
        }
        text_bytes += n;
        msgs[i].role = m->role;
        msgs[i].content = m->content;
        msgs[i].tool_calls = &calls[n_calls];
        msgs[i].n_tool_calls = m->n_tool_calls;
        for (size_t k = 0; k < m->n_tool_calls; k++, n_calls++) {
            const Sluice__ToolCall *c = m->tool_calls[k];
            size_t an = strlen(c->arguments_json);
            if (!wk_utf8_valid(c->arguments_json, an) || !wk_utf8_valid(c->name, strlen(c->name))) {
                rv = cm_errf(CM_ERR_UTF8, err, errlen,
                             "messages[%zu].tool_calls[%zu] is not valid "
                             "UTF-8",
                             i, k);
                goto done;
            }
            calls[n_calls].name = c->name;
            calls[n_calls].arguments = c->arguments_json;
            text_bytes += an + strlen(c->name) + 64;
        }
    }
    for (size_t i = 0; i < n_tools; i++) {
        const Sluice__Tool *t = s->tools[i];
        const char *d = t->description, *p = t->parameters_json;
        if (!wk_utf8_valid(t->name, strlen(t->name)) ||
            (d != NULL && !wk_utf8_valid(d, strlen(d))) ||
            (p != NULL && !wk_utf8_valid(p, strlen(p)))) {
            rv = cm_errf(CM_ERR_UTF8, err, errlen, "tools[%zu] is not valid UTF-8", i);
            goto done;
        }
        tools[i].name = t->name;
        tools[i].description = d;
        tools[i].parameters = p;
        /* Descriptions are JSON-escaped in the prompt: up to 6 bytes per control byte. */
        text_bytes += strlen(t->name) + (d ? 6 * strlen(d) : 0) + (p ? strlen(p) : 2) + 128;
    }
    if (n_tools > 0)
        text_bytes += 1024; /* the tools section's own text */
    if (text_bytes > ctx->max_prompt_bytes) {
        rv = cm_errf(CM_ERR_LIMIT, err, errlen, "messages are longer than %zu bytes",
                     ctx->max_prompt_bytes);
        goto done;
    }
    /* Room for the text plus per-message markers and the template's default system prompt. */
    size_t cap = text_bytes + 128 * s->n_messages + sizeof ctx->tmpl->default_system + 1024;
    char *rendered = malloc(cap);
    if (rendered == NULL) {
        rv = CM_ERR_NOMEM;
        goto done;
    }
    size_t len = 0;
    char rerr[256] = "";
    rv = wk_chat_render_tools(ctx->tmpl, msgs, s->n_messages, tools, n_tools,
                              o->add_generation_prompt, rendered, cap, &len, rerr, sizeof rerr);
    if (rv != CM_OK) {
        cm_errf(rv, err, errlen, "%s", rerr[0] ? rerr : "cannot render the chat template");
        free(rendered);
        goto done;
    }
    /* The template may write BOS itself ("<|begin_of_text|>"); do not add a second one. */
    bool add_bos = wk_tokenizer_add_bos(ctx->tok);
    size_t bl = strlen(ctx->tmpl->bos_text);
    if (bl > 0 && len >= bl && memcmp(rendered, ctx->tmpl->bos_text, bl) == 0)
        add_bos = false;
    rv = encode(ctx, s, rendered, len, add_bos, true, ids_out, n_out, err, errlen);
    free(rendered);
done:
    free(msgs);
    free(calls);
    free(tools);
    return rv;
}

cm_err wk_prompt_build(const wk_prompt_ctx *ctx, const Sluice__Submit *s, int32_t **ids_out,
                       uint32_t *n_out, char *err, size_t errlen) {
    const wk_prompt_opts o = {.add_generation_prompt = true, .no_bos = false};
    return wk_prompt_build_opts(ctx, s, &o, ids_out, n_out, err, errlen);
}

cm_err wk_prompt_build_opts(const wk_prompt_ctx *ctx, const Sluice__Submit *s,
                            const wk_prompt_opts *o, int32_t **ids_out, uint32_t *n_out, char *err,
                            size_t errlen) {
    *ids_out = NULL;
    *n_out = 0;
    cm_err rv;
    if (s->n_messages > 0) {
        rv = build_chat(ctx, s, o, ids_out, n_out, err, errlen);
    } else if (s->prompt != NULL) {
        size_t len = strlen(s->prompt);
        if (len > ctx->max_prompt_bytes)
            return cm_errf(CM_ERR_LIMIT, err, errlen, "prompt is longer than %zu bytes",
                           ctx->max_prompt_bytes);
        if (!wk_utf8_valid(s->prompt, len))
            return cm_errf(CM_ERR_UTF8, err, errlen, "prompt is not valid UTF-8");
        rv = encode(ctx, s, s->prompt, len, wk_tokenizer_add_bos(ctx->tok) && !o->no_bos, false,
                    ids_out, n_out, err, errlen);
    } else {
        uint32_t n_vocab = wk_tokenizer_n_vocab(ctx->tok);
        for (size_t i = 0; i < s->n_prompt_token_ids; i++) {
            int32_t id = s->prompt_token_ids[i];
            if (id < 0 || (uint32_t)id >= n_vocab)
                return cm_errf(CM_ERR_INVALID, err, errlen,
                               "prompt_token_ids[%zu] = %d is not in the vocabulary (0..%u)", i, id,
                               n_vocab - 1);
        }
        size_t n = s->n_prompt_token_ids;
        int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
        if (ids == NULL)
            return CM_ERR_NOMEM;
        if (n > 0)
            memcpy(ids, s->prompt_token_ids, n * sizeof *ids);
        *ids_out = ids;
        *n_out = (uint32_t)n;
        rv = CM_OK;
    }
    if (rv != CM_OK)
        return rv;
    if (*n_out == 0) {
        free(*ids_out);
        *ids_out = NULL;
        return cm_errf(CM_ERR_INVALID, err, errlen, "the prompt is empty");
    }
    uint32_t completion = s->has_max_tokens ? s->max_tokens : 0;
    /* At least one token must fit after the prompt. */
    uint64_t need = (uint64_t)*n_out + completion_reserve(s);
    if (need > ctx->max_context) {
        wk_prompt_context_message(ctx->max_context, *n_out, completion, err, errlen);
        free(*ids_out);
        *ids_out = NULL;
        *n_out = 0;
        return CM_ERR_CONTEXT_LENGTH;
    }
    return CM_OK;
}
