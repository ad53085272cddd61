/*
 * gw_format: OpenAI response bodies (chat.completion, chat.completion.chunk, text_completion)
 * written straight into a cm_buf, without building a JSON tree: these run once per token on
 * streams. Text is escaped with gw_json_escape (invalid UTF-8 becomes U+FFFD).
 * Pure functions; any thread.
 */
#ifndef GW_FORMAT_H
#define GW_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "cm_buf.h"
#include "cm_err.h"
#include "gw_request.h"
#include "sluice.pb-c.h"

/* Accumulated logprobs of one choice (non-streaming), as JSON fragments without brackets. */
typedef struct gw_logprobs_acc {
    cm_buf a; /* chat: content items; completions: tokens */
    cm_buf b; /* completions: token_logprobs */
    cm_buf c; /* completions: top_logprobs */
    cm_buf d; /* completions: text_offset */
    uint32_t count;
    size_t text_offset;
} gw_logprobs_acc;

void gw_logprobs_init(gw_logprobs_acc *l, size_t max_bytes);
void gw_logprobs_fini(gw_logprobs_acc *l);
/* gw_logprobs_add appends the token logprobs of one Tokens event. */
cm_err gw_logprobs_add(gw_logprobs_acc *l, gw_api api, const Sluice__Tokens *t);
/* gw_logprobs_render writes the value of "logprobs" (an object) for the accumulated tokens. */
cm_err gw_logprobs_render(const gw_logprobs_acc *l, gw_api api, cm_buf *out);

/* One tool call of a finished chat choice. */
typedef struct gw_tool_call_out {
    const char *id;        /* "call_..." */
    const char *name;      /* function name */
    const char *arguments; /* JSON text (partial when cut by max_tokens) */
    size_t arguments_len;
} gw_tool_call_out;

typedef struct gw_choice_out {
    const char *text; /* with tool calls, an empty text renders as "content": null */
    size_t text_len;
    const char *finish_reason;          /* NULL = null */
    const gw_logprobs_acc *logprobs;    /* NULL = "logprobs": null */
    const gw_tool_call_out *tool_calls; /* (n_tool_calls); chat only */
    uint32_t n_tool_calls;
} gw_choice_out;

typedef struct gw_usage_out {
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
} gw_usage_out;

/* Non-streaming body: chat.completion or text_completion with n choices and usage. */
cm_err gw_format_response(cm_buf *out, gw_api api, const char *id, int64_t created,
                          const char *model, const gw_choice_out *choices, uint32_t n,
                          const gw_usage_out *usage);

/*
 * One SSE event "data: {chunk}\n\n" for choice `index`: text delta (may be empty), the role
 * on the first chunk of a chat choice (first != 0), finish_reason (NULL = null), and the
 * chunk's logprobs from tok (NULL = none). usage_null adds "usage":null (include_usage).
 */
cm_err gw_format_chunk(cm_buf *out, gw_api api, const char *id, int64_t created, const char *model,
                       uint32_t index, int first, const char *text, size_t text_len,
                       const char *finish_reason, const Sluice__Tokens *tok, int usage_null);

/*
 * One SSE event carrying a tool-call delta of chat choice `index`, shaped as OpenAI streams
 * it: the call's first delta (d->id set) carries index, id, type "function", function.name
 * and function.arguments (may be ""); later ones only index and function.arguments. first
 * adds the role (and "content": null) when the choice has not sent a chunk yet.
 */
cm_err gw_format_tool_chunk(cm_buf *out, const char *id, int64_t created, const char *model,
                            uint32_t index, int first, const Sluice__ToolCallDelta *d,
                            int usage_null);

/* The final usage chunk of stream_options.include_usage (choices: []). */
cm_err gw_format_usage_chunk(cm_buf *out, gw_api api, const char *id, int64_t created,
                             const char *model, const gw_usage_out *usage);

/* An SSE error event "data: {"error":{...}}\n\n". */
cm_err gw_format_error_event(cm_buf *out, const gw_error *e);

/* Appends s (len bytes) as a quoted JSON string. */
cm_err gw_buf_json_str(cm_buf *out, const char *s, size_t len);

/*
 * gw_format_duration writes ms as an OpenAI rate-limit reset duration (Go duration syntax):
 * "17ms", "1s", "1.5s", "6m0s", "1h0m0s". Negative is written as "0s". Returns the length
 * (truncated to cap - 1 like snprintf; 32 bytes always suffice).
 */
size_t gw_format_duration(int64_t ms, char *out, size_t cap);

#endif /* GW_FORMAT_H */
