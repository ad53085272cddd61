/*
 * wk_chat_template: renders chat messages into the prompt text a model was trained on.
 *
 * Sluice does not run Jinja. It recognizes the template families in GGUF
 * tokenizer.chat_template by their distinctive markers and renders them natively: ChatML
 * (<|im_start|>: SmolLM2, Qwen), Llama 3 (<|start_header_id|>), Llama 2 / Mistral ([INST]),
 * Gemma (<start_of_turn>), Phi-3 (<|user|> ... <|end|>). A template it does not recognize is an
 * error that quotes the start of the template, unless the operator configured a family by name
 * (override).
 */
#ifndef WK_CHAT_TEMPLATE_H
#define WK_CHAT_TEMPLATE_H

#include <stddef.h>
#include "cm_err.h"

typedef enum wk_chat_family {
    WK_CHAT_UNKNOWN = 0,
    WK_CHAT_CHATML,
    WK_CHAT_LLAMA3,
    WK_CHAT_LLAMA2, /* also Mistral [INST] */
    WK_CHAT_GEMMA,
    WK_CHAT_PHI3, /* <|user|>\n...<|end|>\n<|assistant|>\n */
} wk_chat_family;

/*
 * Tool calling. No supported family has tool syntax of its own that Sluice renders, so tools
 * use one documented generic format (Hermes/Qwen style, docs/structured-outputs.md):
 * the function list goes into the system message as JSON lines inside <tools></tools>, each
 * call the model makes (and each call of a history assistant turn) is
 *     <tool_call>\n{"name": "NAME", "arguments": ARGUMENTS-JSON}\n</tool_call>
 * and a tool result (role "tool") is a user turn holding <tool_response>\n...\n</tool_response>
 * (Llama 3 keeps its own "ipython" turn). The constraint grammar and the output parser of the
 * worker service use the same markers.
 */
#define WK_TOOL_CALL_OPEN "<tool_call>\n"
#define WK_TOOL_CALL_NAME_PREFIX "{\"name\": \""
#define WK_TOOL_CALL_ARGS_PREFIX "\", \"arguments\": "
#define WK_TOOL_CALL_CLOSE "}\n</tool_call>"

/* One call of an assistant turn in the history. */
typedef struct wk_chat_tool_call {
    const char *name;      /* function name */
    const char *arguments; /* JSON text, written as is */
} wk_chat_tool_call;

/* A function the model may call. */
typedef struct wk_chat_tool {
    const char *name;
    const char *description; /* NULL = none */
    const char *parameters;  /* JSON Schema text; NULL = {} */
} wk_chat_tool;

typedef struct wk_chat_message {
    const char *role;                    /* "system", "user", "assistant", "tool" */
    const char *content;                 /* NUL-terminated UTF-8 */
    const wk_chat_tool_call *tool_calls; /* (n_tool_calls) assistant turns only; may be NULL */
    size_t n_tool_calls;
} wk_chat_message;

typedef struct wk_chat_template {
    wk_chat_family family;
    char default_system[512]; /* system prompt the template inserts when none is given, e.g.
                                 SmolLM2's "You are a helpful AI assistant named SmolLM..." */
    char bos_text[32];        /* BOS text a template writes itself ("<s>", "<|begin_of_text|>") */
} wk_chat_template;

/* wk_chat_template_detect recognizes template_text (may be NULL when the file has none).
 * override: NULL, or a family name ("chatml", "llama3", "llama2", "mistral", "gemma", "phi3") that
 * wins over detection. Unknown: CM_ERR_UNSUPPORTED with err quoting the template's first
 * ~60 characters and saying how to override. */
cm_err wk_chat_template_detect(const char *template_text, const char *override,
                               wk_chat_template *out, char *err, size_t errlen);

/* wk_chat_family_name: "chatml", "llama3", ... */
const char *wk_chat_family_name(wk_chat_family f);

/* wk_chat_render writes the prompt (NUL-terminated) for n messages into out (capacity cap),
 * ending with the assistant turn opener when add_generation_prompt. Unknown role or a role
 * the family cannot express: CM_ERR_INVALID naming it. Too long: CM_ERR_LIMIT.
 * *n_written excludes the NUL. */
cm_err wk_chat_render(const wk_chat_template *t, const wk_chat_message *msgs, size_t n,
                      int add_generation_prompt, char *out, size_t cap, size_t *n_written,
                      char *err, size_t errlen);

/*
 * wk_chat_render_tools is wk_chat_render with tools (n_tools may be 0) and history tool calls
 * rendered in the generic format above: the tools section is appended to the system message
 * (or to the template's default system prompt, or becomes the system message). Same errors as
 * wk_chat_render; CM_ERR_NOMEM for its scratch memory (freed before it returns).
 */
cm_err wk_chat_render_tools(const wk_chat_template *t, const wk_chat_message *msgs, size_t n,
                            const wk_chat_tool *tools, size_t n_tools, int add_generation_prompt,
                            char *out, size_t cap, size_t *n_written, char *err, size_t errlen);

#endif /* WK_CHAT_TEMPLATE_H */
