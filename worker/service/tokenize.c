/*
 * wk_tokenize: see tokenize.h. A Tokenize is viewed as the Submit it stands for, so the
 * checks (wk_wire_check_submit) and the prompt (wk_prompt_build_opts) are the Submit's own.
 */
#include "tokenize.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cm_buf.h"
#include "tokenizer.h"

/* The Submit that t stands for (pointers borrowed from t). */
static void submit_view(const Sluice__Tokenize *t, Sluice__Submit *s) {
    sluice__submit__init(s);
    s->request_id = t->request_id;
    s->model = t->model;
    s->n_messages = t->n_messages;
    s->messages = t->messages;
    s->prompt = t->prompt;
    s->n_prompt_token_ids = t->n_token_ids;
    s->prompt_token_ids = t->token_ids;
    s->n_tools = t->n_tools;
    s->tools = t->tools;
    s->gateway_request_id = t->gateway_request_id;
    s->traceparent = t->traceparent;
}

cm_err wk_tokenize_check(const Sluice__Tokenize *t, const wk_wire_limits *lim, char *err,
                         size_t errlen) {
    Sluice__Submit s;
    submit_view(t, &s);
    if (t->n_tools > 0 && t->n_messages == 0)
        return cm_errf(CM_ERR_INVALID, err, errlen, "tools are only taken with messages");
    return wk_wire_check_submit(&s, lim, err, errlen);
}

static cm_err pack(uint64_t request_id, Sluice__Tokenized *tk, wk_wire_buf *out, char *err,
                   size_t errlen) {
    cm_err rv = wk_wire_encode_tokenized(request_id, tk, WK_TOKENIZE_MAX_REPLY_BYTES, out);
    if (rv == CM_ERR_LIMIT) {
        rv = cm_errf(rv, err, errlen,
                     "the answer would be %zu bytes; the limit is %u: send fewer "
                     "tokens",
                     out->len, WK_TOKENIZE_MAX_REPLY_BYTES);
        out->len = 0;
    }
    return rv;
}

static cm_err detokenize(const wk_prompt_ctx *ctx, const Sluice__Tokenize *t, wk_wire_buf *out,
                         char *err, size_t errlen) {
    uint32_t n_vocab = wk_tokenizer_n_vocab(ctx->tok);
    Sluice__Tokenized tk = SLUICE__TOKENIZED__INIT;
    wk_detok d;
    cm_buf text;
    char piece[1024];
    size_t n;
    cm_err rv = CM_OK;
    for (size_t i = 0; i < t->n_token_ids; i++) {
        int32_t id = t->token_ids[i];
        if (id < 0 || (uint32_t)id >= n_vocab)
            return cm_errf(CM_ERR_INVALID, err, errlen,
                           "tokens[%zu] = %d is not in the vocabulary (0..%u)", i, id, n_vocab - 1);
    }
    cm_buf_init(&text, WK_TOKENIZE_MAX_REPLY_BYTES);
    wk_detok_init(&d, ctx->tok);
    for (size_t i = 0; i < t->n_token_ids && rv == CM_OK; i++) {
        rv = wk_detok_push(&d, t->token_ids[i], true, piece, sizeof piece, &n);
        if (rv == CM_OK)
            rv = cm_buf_append(&text, piece, n);
    }
    if (rv == CM_OK) {
        n = wk_detok_flush(&d, piece, sizeof piece);
        rv = cm_buf_append(&text, piece, n);
    }
    if (rv == CM_ERR_LIMIT) {
        cm_errf(rv, err, errlen, "the text is longer than %u bytes: send fewer tokens",
                WK_TOKENIZE_MAX_REPLY_BYTES);
        goto done;
    }
    if (rv != CM_OK)
        goto done;
    tk.text = (char *)cm_buf_cstr(&text);
    tk.has_max_model_len = 1;
    tk.max_model_len = ctx->max_context;
    rv = pack(t->request_id, &tk, out, err, errlen);
done:
    cm_buf_fini(&text);
    return rv;
}

cm_err wk_tokenize_run(const wk_prompt_ctx *ctx, const Sluice__Tokenize *t, wk_wire_buf *out,
                       char *err, size_t errlen) {
    Sluice__Submit s;
    Sluice__Tokenized tk = SLUICE__TOKENIZED__INIT;
    bool chat = t->n_messages > 0;
    /* vLLM's default: special tokens (BOS) for a prompt. Messages always get the chat
     * request's own ids: the template path adds BOS exactly once, as the model wants. */
    bool add_special = t->has_add_special_tokens ? t->add_special_tokens : !chat;
    wk_prompt_opts o = {
        .add_generation_prompt = t->has_add_generation_prompt ? t->add_generation_prompt : true,
        .no_bos = !chat && !add_special,
    };
    int32_t *ids = NULL;
    uint32_t n = 0;
    ProtobufCBinaryData *strs = NULL;
    cm_err rv;
    memset(out, 0, sizeof *out);
    if (t->n_token_ids > 0)
        return detokenize(ctx, t, out, err, errlen);
    submit_view(t, &s);
    rv = wk_prompt_build_opts(ctx, &s, &o, &ids, &n, err, errlen);
    if (rv != CM_OK)
        return rv;
    tk.n_tokens = n;
    tk.tokens = ids;
    tk.has_max_model_len = 1;
    tk.max_model_len = ctx->max_context;
    if (t->has_return_token_strs && t->return_token_strs) {
        strs = calloc(n, sizeof *strs);
        if (strs == NULL) {
            rv = CM_ERR_NOMEM;
            goto done;
        }
        for (uint32_t i = 0; i < n; i++) {
            size_t len = 0;
            const char *p = wk_tokenizer_piece(ctx->tok, ids[i], true, &len);
            strs[i].data = (uint8_t *)p;
            strs[i].len = len;
        }
        tk.n_token_strs = n;
        tk.token_strs = strs;
    }
    rv = pack(t->request_id, &tk, out, err, errlen);
done:
    free(strs);
    free(ids);
    return rv;
}
