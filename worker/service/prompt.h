/*
 * wk_prompt: a Submit's prompt (chat messages, raw text or token ids) -> the token ids the
 * engine runs, with the checks that need the model: UTF-8, roles the chat template can
 * express, vocabulary range, and the context length (with the OpenAI/vLLM-style message
 * "This model's maximum context length is N tokens. However, you requested M tokens (P in
 * the messages, C in the completion). ...").
 *
 * A prompt that cannot fit is refused as early as that can be proved: from its bytes before
 * tokenizing (wk_tokenizer_min_tokens), then by stopping the tokenizer as soon as the prompt
 * alone exceeds the context; both say "at least" in the message. Exact counts otherwise.
 *
 * Chat messages are rendered with wk_chat_render and tokenized with special tokens parsed
 * (the template's own markers, e.g. <|im_start|>); raw prompts are tokenized with special
 * tokens NOT parsed, so user text can never forge a control token. BOS follows the
 * tokenizer's add_bos_token unless the rendered template already wrote it.
 *
 * Threads: reentrant; the context is read-only.
 */
#ifndef WK_PROMPT_H
#define WK_PROMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "cm_err.h"
#include "sluice.pb-c.h"
#include "tokenizer.h"

typedef struct wk_prompt_ctx {
    const wk_tokenizer *tok;      /* borrowed */
    const wk_chat_template *tmpl; /* borrowed; NULL = chat messages unsupported */
    uint32_t max_context;         /* tokens */
    size_t max_prompt_bytes;      /* rendered/raw text bound */
} wk_prompt_ctx;

/*
 * wk_prompt_build fills *ids_out (malloc'd, caller frees, also NULL on failure) with
 * *n_out tokens for s. Errors (err holds a client-safe line): CM_ERR_UTF8, CM_ERR_INVALID
 * (bad role, token id out of range, empty prompt), CM_ERR_LIMIT (text too long),
 * CM_ERR_CONTEXT_LENGTH, CM_ERR_UNSUPPORTED (no chat template), CM_ERR_NOMEM.
 */
cm_err wk_prompt_build(const wk_prompt_ctx *ctx, const Sluice__Submit *s, int32_t **ids_out,
                       uint32_t *n_out, char *err, size_t errlen);

/* Options of wk_prompt_build_opts (wk_prompt_build: add_generation_prompt, BOS as the model
 * wants). */
typedef struct wk_prompt_opts {
    bool add_generation_prompt; /* chat: end with the assistant turn's opener */
    bool no_bos;                /* raw prompt: no BOS even when the model adds one */
} wk_prompt_opts;

/* wk_prompt_build_opts is wk_prompt_build with options (/tokenize's add_generation_prompt and
 * add_special_tokens); same errors and ownership. */
cm_err wk_prompt_build_opts(const wk_prompt_ctx *ctx, const Sluice__Submit *s,
                            const wk_prompt_opts *o, int32_t **ids_out, uint32_t *n_out, char *err,
                            size_t errlen);

/* wk_prompt_context_message writes the context-length error text. */
void wk_prompt_context_message(uint32_t max_context, uint32_t prompt_tokens,
                               uint32_t completion_tokens, char *err, size_t errlen);

/* wk_prompt_context_message_at_least: the same text when only a lower bound of the prompt's
 * tokens is known (refused before or while tokenizing): "...you requested at least M tokens
 * (at least P in the messages, C in the completion)...". */
void wk_prompt_context_message_at_least(uint32_t max_context, uint64_t prompt_tokens_min,
                                        uint32_t completion_tokens, char *err, size_t errlen);

#endif /* WK_PROMPT_H */
