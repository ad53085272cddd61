/*
 * wk_constraint: what a Submit asks of its output (response_format, tools, tool_choice,
 * parallel_tool_calls), turned into the grammar the engine constrains decoding with.
 *
 * The grammar (see docs/structured-outputs.md):
 *   response_format json_object  -> any JSON object (wk_json_object_grammar)
 *   response_format json_schema  -> the schema's language (wk_json_schema_to_grammar)
 *   tools, tool_choice required  -> one tool call, or several separated by "\n" when
 *                                   parallel_tool_calls; each call is
 *                                   <tool_call>\n{"name": "NAME", "arguments": ARGS}\n</tool_call>
 *                                   with ARGS in that tool's parameters schema
 *   tool_choice {function: NAME} -> the same with NAME only
 *   tool_choice auto (default)   -> tool calls | text, where text is the response_format's
 *                                   language, or else any text that does not start with '<'
 *                                   (so the first character decides: '<' opens a tool call)
 *   tool_choice none             -> tools ignored (neither rendered nor parsed)
 * Rule names of each schema are prefixed ("rf-", "t0-", "t1-", ...) so they share one grammar.
 *
 * Errors name the request parameter first ("tools[1].function.parameters: unsupported JSON
 * Schema keyword 'patternProperties' at /properties/a"), which the gateway turns into the 400's
 * param; they come before any generation.
 *
 * Threads: any thread (the preparation of a request, never the engine step); the cache is
 * thread-safe.
 */
#ifndef WK_CONSTRAINT_H
#define WK_CONSTRAINT_H

#include <stdbool.h>
#include <stddef.h>

#include "cm_err.h"
#include "grammar.h"
#include "sluice.pb-c.h"

typedef struct wk_constraint {
    wk_grammar *grammar; /* NULL = unconstrained; one reference, dropped by wk_constraint_fini */
    bool tool_calls;     /* tools are active: parse the output for tool calls (wk_tool_parser) */
    bool calls_only;     /* tool_choice required or named: the output is nothing but calls */
} wk_constraint;

/* wk_constraint_tools_active: the Submit has tools and tool_choice is not none. */
bool wk_constraint_tools_active(const Sluice__Submit *s);

/*
 * wk_constraint_grammar_text writes the grammar text for s into *text_out (malloc'd, caller
 * frees; NULL when s asks for no constraint). Errors: CM_ERR_UNSUPPORTED / CM_ERR_INVALID /
 * CM_ERR_LIMIT with err naming the parameter, CM_ERR_NOMEM.
 */
cm_err wk_constraint_grammar_text(const Sluice__Submit *s, char **text_out, char *err,
                                  size_t errlen);

/*
 * wk_constraint_build fills *out for s, compiling through cache (a repeated schema costs a
 * lookup). On failure *out is zeroed and err holds the client-safe line (errors as above).
 */
cm_err wk_constraint_build(wk_grammar_cache *cache, const Sluice__Submit *s, wk_constraint *out,
                           char *err, size_t errlen);

/* wk_constraint_fini drops the grammar reference and zeroes c (safe on a zeroed one). */
void wk_constraint_fini(wk_constraint *c);

#endif /* WK_CONSTRAINT_H */
