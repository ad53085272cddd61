/*
 * wk_tool_parser: splits a generated output into plain content and tool calls in the generic
 * format of chat_template.h (<tool_call>\n{"name": "NAME", "arguments": {...}}\n</tool_call>),
 * incrementally, as OpenAI streams them: a call's first delta carries its index, a fresh id
 * ("call_" + 24 random alphanumerics) and its name with empty arguments; later deltas carry
 * argument fragments as the model writes them (each valid UTF-8).
 *
 * An output that starts with "<tool_call>" is tool calls; anything else is content (text that
 * could still become "<tool_call>" is held back until it cannot, or until the end). The
 * arguments end where their JSON value closes (strings and escapes tracked), so no fragment is
 * held back. A call cut short (max_tokens) keeps what was written: partial arguments, or the
 * raw text as content when it was cut before its name.
 *
 * Threads: one parser per request, on one thread at a time. Bounded: at most
 * WK_TOOL_PARSER_MAX_CALLS calls (later ones become content), fixed-size head buffers.
 */
#ifndef WK_TOOL_PARSE_H
#define WK_TOOL_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_buf.h"
#include "cm_err.h"
#include "wire.h"

#define WK_TOOL_PARSER_MAX_CALLS 64
#define WK_TOOL_PARSER_MAX_DELTAS 8 /* per feed: a new call gives 2, a feed spans few calls */

typedef struct wk_tool_call_info {
    char id[32];   /* "call_" + 24 alphanumerics */
    char name[65]; /* function name */
} wk_tool_call_info;

typedef struct wk_tool_parser {
    int state;
    uint64_t rng;
    char hold[16]; /* possible start of "<tool_call>" */
    size_t n_hold;
    char head[512]; /* after "<tool_call>": up to the start of the arguments value */
    size_t n_head;
    char tail[32]; /* after the arguments: up to "</tool_call>" */
    size_t n_tail;
    uint32_t depth;
    bool in_string, escape;
    uint32_t n_calls;
    wk_tool_call_info calls[WK_TOOL_PARSER_MAX_CALLS];
    /* Results of the last feed/finish: valid until the next call. */
    cm_buf content;
    cm_buf args;
    wk_wire_tool_delta deltas[WK_TOOL_PARSER_MAX_DELTAS];
    size_t n_deltas;
    size_t delta_off[WK_TOOL_PARSER_MAX_DELTAS]; /* into args, resolved at the end of a feed */
} wk_tool_parser;

/* wk_tool_parser_init starts an empty output; seed picks the call ids. */
void wk_tool_parser_init(wk_tool_parser *p, uint64_t seed);
void wk_tool_parser_fini(wk_tool_parser *p);

/*
 * wk_tool_parser_feed consumes len bytes of output (complete UTF-8 characters). Afterwards
 * p->content holds the plain content to pass on and p->deltas[0..n_deltas) the tool-call
 * deltas (pointers valid until the next feed/finish). CM_ERR_NOMEM/CM_ERR_LIMIT when a buffer
 * cap is hit (64 KiB per feed).
 */
cm_err wk_tool_parser_feed(wk_tool_parser *p, const char *text, size_t len);

/* wk_tool_parser_finish flushes held-back text into p->content (no deltas). */
cm_err wk_tool_parser_finish(wk_tool_parser *p);

/* wk_tool_parser_n_calls: calls started so far (> 0: the choice finishes with tool_calls). */
uint32_t wk_tool_parser_n_calls(const wk_tool_parser *p);

#endif /* WK_TOOL_PARSE_H */
