/*
 * wk_tokenize: the worker's side of /tokenize and /detokenize (a Tokenize message, answered
 * with Event{Tokenized} or Event{Error}).
 *
 * A tokenize request is built exactly as a Submit's prompt (wk_prompt: the same chat
 * template, tools section, special-token rules, BOS handling and context check), so the
 * count it returns is the prompt_tokens that a chat or completion request with the same input
 * reports. Options: add_generation_prompt (messages; default true), add_special_tokens
 * (a prompt: absent or true adds BOS when the model wants one, false never; messages: always
 * the chat request's own ids, BOS exactly once as the model wants, whatever the flag).
 * Detokenizing renders special tokens as their text; bytes that are not UTF-8 become U+FFFD.
 *
 * Runs on the preparation pool's threads (never the engine thread). Reentrant; the context
 * is read-only.
 */
#ifndef WK_TOKENIZE_H
#define WK_TOKENIZE_H

#include <stddef.h>

#include "cm_err.h"
#include "prompt.h"
#include "sluice.pb-c.h"
#include "wire.h"

/* Largest answer packed (the gateway accepts envelopes up to 4 MiB). */
#define WK_TOKENIZE_MAX_REPLY_BYTES ((4u << 20) - 4096)

/*
 * wk_tokenize_check: the structural checks of a decoded Tokenize (exactly one form, sizes
 * under lim, as a Submit's). err holds a client-safe line on failure: CM_ERR_INVALID or
 * CM_ERR_LIMIT. Called by wk_wire_decode.
 */
cm_err wk_tokenize_check(const Sluice__Tokenize *t, const wk_wire_limits *lim, char *err,
                         size_t errlen);

/*
 * wk_tokenize_run answers t (checked by wk_tokenize_check): *out receives the packed
 * Envelope{Event{t->request_id, Tokenized}} (free with wk_wire_buf_free). On failure out is
 * zeroed and err holds the client's message: CM_ERR_INVALID (token id out of the vocabulary,
 * empty prompt), CM_ERR_UTF8, CM_ERR_LIMIT (answer over WK_TOKENIZE_MAX_REPLY_BYTES, text too
 * long), CM_ERR_CONTEXT_LENGTH, CM_ERR_UNSUPPORTED (no chat template), CM_ERR_NOMEM.
 */
cm_err wk_tokenize_run(const wk_prompt_ctx *ctx, const Sluice__Tokenize *t, wk_wire_buf *out,
                       char *err, size_t errlen);

#endif /* WK_TOKENIZE_H */
