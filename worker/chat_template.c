/*
 * wk_chat_template: native renderers for the chat formats Sluice recognizes.
 *
 * Each family follows the reference Jinja template of its models (whitespace included), so
 * the prompt matches what the model saw in training. Families whose templates write the BOS
 * text themselves (Llama 3, Llama 2/Mistral, Gemma; see wk_chat_template.bos_text) get it at
 * the start of the rendering, like the Jinja original: tokenize the result with parse_special
 * and without adding another BOS.
 */
#include "chat_template.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *wk_chat_family_name(wk_chat_family f) {
    switch (f) {
    case WK_CHAT_CHATML:
        return "chatml";
    case WK_CHAT_LLAMA3:
        return "llama3";
    case WK_CHAT_LLAMA2:
        return "llama2";
    case WK_CHAT_GEMMA:
        return "gemma";
    case WK_CHAT_PHI3:
        return "phi3";
    default:
        return "unknown";
    }
}

static wk_chat_family family_from_name(const char *name) {
    static const struct {
        const char *name;
        wk_chat_family f;
    } names[] = {
        {"chatml", WK_CHAT_CHATML},  {"llama3", WK_CHAT_LLAMA3}, {"llama2", WK_CHAT_LLAMA2},
        {"mistral", WK_CHAT_LLAMA2}, {"gemma", WK_CHAT_GEMMA},   {"phi3", WK_CHAT_PHI3},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(names[i].name, name) == 0) {
            return names[i].f;
        }
    }
    return WK_CHAT_UNKNOWN;
}

/*
 * ChatML templates that insert a default system prompt carry it as a string literal:
 * '<|im_start|>system\n<the prompt><|im_end|>\n'. Take the first such literal whose body is
 * plain text (not an expression like '<|im_start|>system\n' + message['content']).
 */
static void extract_chatml_system(const char *tpl, char *out, size_t cap) {
    static const char open[] = "<|im_start|>system";
    out[0] = '\0';
    const char *p = tpl;
    while ((p = strstr(p, open)) != NULL) {
        char quote = p > tpl ? p[-1] : '\0';
        const char *s = p + strlen(open);
        p = s;
        if (quote != '\'' && quote != '"') {
            continue;
        }
        if (s[0] == '\n') {
            s += 1;
        } else if (s[0] == '\\' && s[1] == 'n') {
            s += 2;
        } else {
            continue;
        }
        const char *e = strstr(s, "<|im_end|>");
        if (e == NULL || e == s) {
            continue;
        }
        /* The body must stay inside the one literal. */
        if (memchr(s, quote, (size_t)(e - s)) != NULL || memchr(s, '{', (size_t)(e - s))) {
            continue;
        }
        size_t o = 0;
        for (const char *c = s; c < e && o + 1 < cap; c++) {
            if (c[0] == '\\' && c + 1 < e && c[1] == 'n') {
                out[o++] = '\n';
                c++;
            } else {
                out[o++] = *c;
            }
        }
        out[o] = '\0';
        return;
    }
}

cm_err wk_chat_template_detect(const char *template_text, const char *override,
                               wk_chat_template *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    wk_chat_family f = WK_CHAT_UNKNOWN;
    if (override != NULL && override[0] != '\0') {
        f = family_from_name(override);
        if (f == WK_CHAT_UNKNOWN) {
            return cm_errf(CM_ERR_CONFIG, err, errlen,
                           "unknown chat template override \"%.40s\" (use chatml, llama3, llama2, "
                           "mistral, gemma or phi3)",
                           override);
        }
    } else if (template_text != NULL) {
        /* Most specific markers first: Llama 3 templates may also mention other tokens. */
        if (strstr(template_text, "<|start_header_id|>") != NULL) {
            f = WK_CHAT_LLAMA3;
        } else if (strstr(template_text, "<|im_start|>") != NULL) {
            f = WK_CHAT_CHATML;
        } else if (strstr(template_text, "<start_of_turn>") != NULL) {
            f = WK_CHAT_GEMMA;
        } else if (strstr(template_text, "[INST]") != NULL) {
            f = WK_CHAT_LLAMA2;
        } else if (strstr(template_text, "<|assistant|>") != NULL &&
                   strstr(template_text, "<|end|>") != NULL) {
            f = WK_CHAT_PHI3;
        }
    }
    if (f == WK_CHAT_UNKNOWN) {
        if (template_text == NULL) {
            return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                           "the model has no chat template (tokenizer.chat_template); configure "
                           "one of chatml, llama3, llama2, mistral, gemma, phi3");
        } else {
            char quoted[64];
            size_t n = 0;
            for (const char *c = template_text; *c != '\0' && n < 60; c++) {
                quoted[n++] = (*c == '\n' || *c == '"') ? ' ' : *c;
            }
            quoted[n] = '\0';
            return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                           "chat template not recognized: \"%s%s\"; configure one of chatml, "
                           "llama3, llama2, mistral, gemma, phi3",
                           quoted, strlen(template_text) > 60 ? "..." : "");
        }
    }
    out->family = f;
    switch (f) {
    case WK_CHAT_CHATML:
        if (template_text != NULL) {
            extract_chatml_system(template_text, out->default_system, sizeof out->default_system);
        }
        break;
    case WK_CHAT_LLAMA3:
        snprintf(out->bos_text, sizeof out->bos_text, "<|begin_of_text|>");
        break;
    case WK_CHAT_LLAMA2:
    case WK_CHAT_GEMMA:
        snprintf(out->bos_text, sizeof out->bos_text, f == WK_CHAT_GEMMA ? "<bos>" : "<s>");
        break;
    default:
        break;
    }
    return CM_OK;
}

/* A bounded writer: the first overflow sticks and the render returns CM_ERR_LIMIT. */
typedef struct writer {
    char *buf;
    size_t cap, n;
    bool overflow;
} writer;

static void put_n(writer *w, const char *s, size_t len) {
    if (w->overflow || len >= w->cap - w->n) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->n, s, len);
    w->n += len;
    w->buf[w->n] = '\0';
}

static void put(writer *w, const char *s) {
    put_n(w, s, strlen(s));
}

static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Jinja's trim / Python's strip() on ASCII whitespace. */
static void put_trimmed(writer *w, const char *s) {
    size_t len = strlen(s);
    size_t a = 0;
    while (a < len && is_ws(s[a])) {
        a++;
    }
    while (len > a && is_ws(s[len - 1])) {
        len--;
    }
    put_n(w, s + a, len - a);
}

typedef enum role {
    ROLE_SYSTEM,
    ROLE_USER,
    ROLE_ASSISTANT,
    ROLE_TOOL,
    ROLE_BAD,
} role;

static role parse_role(const char *r) {
    if (r == NULL) {
        return ROLE_BAD;
    }
    if (strcmp(r, "system") == 0) {
        return ROLE_SYSTEM;
    }
    if (strcmp(r, "user") == 0) {
        return ROLE_USER;
    }
    if (strcmp(r, "assistant") == 0) {
        return ROLE_ASSISTANT;
    }
    if (strcmp(r, "tool") == 0) {
        return ROLE_TOOL;
    }
    return ROLE_BAD;
}

static const char *role_text(role r) {
    static const char *const names[] = {"system", "user", "assistant", "tool"};
    return names[r];
}

static void render_chatml(const wk_chat_template *t, const wk_chat_message *msgs, size_t n,
                          const role *roles, int add_generation_prompt, writer *w) {
    if (t->default_system[0] != '\0' && (n == 0 || roles[0] != ROLE_SYSTEM)) {
        put(w, "<|im_start|>system\n");
        put(w, t->default_system);
        put(w, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        put(w, "<|im_start|>");
        put(w, role_text(roles[i]));
        put(w, "\n");
        put(w, msgs[i].content);
        put(w, "<|im_end|>\n");
    }
    if (add_generation_prompt) {
        put(w, "<|im_start|>assistant\n");
    }
}

static void render_llama3(const wk_chat_message *msgs, size_t n, const role *roles,
                          int add_generation_prompt, writer *w) {
    for (size_t i = 0; i < n; i++) {
        put(w, "<|start_header_id|>");
        /* Llama 3.1 names tool results "ipython". */
        put(w, roles[i] == ROLE_TOOL ? "ipython" : role_text(roles[i]));
        put(w, "<|end_header_id|>\n\n");
        put_trimmed(w, msgs[i].content);
        put(w, "<|eot_id|>");
    }
    if (add_generation_prompt) {
        put(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
}

/* Llama 2 / Mistral and Gemma: only user/assistant turns, alternating and starting with the
 * user; an optional leading system message is folded into the first user turn. */
static cm_err check_alternating(const wk_chat_template *t, const role *roles, size_t n,
                                size_t first, char *err, size_t errlen) {
    const char *name = wk_chat_family_name(t->family);
    for (size_t i = 0; i < n; i++) {
        if (roles[i] == ROLE_TOOL) {
            return cm_errf(CM_ERR_INVALID, err, errlen,
                           "role \"tool\" is not supported by the %s chat template", name);
        }
        if (roles[i] == ROLE_SYSTEM && i != 0) {
            return cm_errf(
                CM_ERR_INVALID, err, errlen,
                "the %s chat template accepts a system message only as the first message", name);
        }
        if (i >= first) {
            role want = ((i - first) % 2 == 0) ? ROLE_USER : ROLE_ASSISTANT;
            if (roles[i] != want) {
                return cm_errf(CM_ERR_INVALID, err, errlen,
                               "the %s chat template needs alternating user/assistant messages "
                               "starting with user (message %zu is \"%s\")",
                               name, i, role_text(roles[i]));
            }
        }
    }
    return CM_OK;
}

static void render_llama2(const wk_chat_template *t, const wk_chat_message *msgs, size_t n,
                          size_t first, writer *w) {
    for (size_t i = first; i < n; i++) {
        if ((i - first) % 2 == 0) {
            if (i != first) {
                put(w, t->bos_text);
            }
            put(w, "[INST] ");
            if (i == first && first == 1) {
                /* The template strips the user content but not the system text. */
                put(w, "<<SYS>>\n");
                put(w, msgs[0].content);
                put(w, "\n<</SYS>>\n\n");
            }
            put_trimmed(w, msgs[i].content);
            put(w, " [/INST]");
        } else {
            put(w, " ");
            put_trimmed(w, msgs[i].content);
            put(w, " </s>");
        }
    }
}

static void render_gemma(const wk_chat_message *msgs, size_t n, size_t first,
                         int add_generation_prompt, writer *w) {
    for (size_t i = first; i < n; i++) {
        bool user = (i - first) % 2 == 0;
        put(w, user ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
        if (i == first && first == 1) {
            put_trimmed(w, msgs[0].content);
            put(w, "\n\n");
        }
        put_trimmed(w, msgs[i].content);
        put(w, "<end_of_turn>\n");
    }
    if (add_generation_prompt) {
        put(w, "<start_of_turn>model\n");
    }
}

/* Phi-3: every message is <|role|>\n content <|end|>\n (system included), the generation
 * prompt <|assistant|>\n. Tool results reach it as user turns (wk_chat_render_tools). */
static cm_err render_phi3(const wk_chat_message *msgs, size_t n, const role *roles,
                          int add_generation_prompt, writer *w, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++) {
        if (roles[i] == ROLE_TOOL) {
            return cm_errf(CM_ERR_INVALID, err, errlen,
                           "role \"tool\" is not supported by the phi3 chat template");
        }
        put(w, "<|");
        put(w, role_text(roles[i]));
        put(w, "|>\n");
        put(w, msgs[i].content);
        put(w, "<|end|>\n");
    }
    if (add_generation_prompt) {
        put(w, "<|assistant|>\n");
    }
    return CM_OK;
}

#define MAX_RENDER_MESSAGES 4096

cm_err wk_chat_render(const wk_chat_template *t, const wk_chat_message *msgs, size_t n,
                      int add_generation_prompt, char *out, size_t cap, size_t *n_written,
                      char *err, size_t errlen) {
    *n_written = 0;
    if (cap == 0) {
        return CM_ERR_LIMIT;
    }
    out[0] = '\0';
    if (n > MAX_RENDER_MESSAGES) {
        return cm_errf(CM_ERR_LIMIT, err, errlen, "too many messages (%zu, limit %d)", n,
                       MAX_RENDER_MESSAGES);
    }
    /* Roles of short conversations live on the stack; long ones get one allocation. */
    role small[64] = {ROLE_BAD};
    role *r = small;
    role *heap_roles = NULL;
    if (n > sizeof small / sizeof small[0]) {
        heap_roles = malloc(sizeof(role) * n);
        if (heap_roles == NULL) {
            return CM_ERR_NOMEM;
        }
        r = heap_roles;
    }
    cm_err rv = CM_OK;
    for (size_t i = 0; i < n; i++) {
        r[i] = parse_role(msgs[i].role);
        if (r[i] == ROLE_BAD) {
            rv = cm_errf(CM_ERR_INVALID, err, errlen, "message %zu has unknown role \"%.32s\"", i,
                         msgs[i].role != NULL ? msgs[i].role : "(null)");
            goto done;
        }
        if (msgs[i].content == NULL) {
            rv = cm_errf(CM_ERR_INVALID, err, errlen, "message %zu has no content", i);
            goto done;
        }
    }
    writer w = {out, cap, 0, false};
    put(&w, t->bos_text);
    size_t first = (n > 0 && r[0] == ROLE_SYSTEM) ? 1 : 0;
    switch (t->family) {
    case WK_CHAT_CHATML:
        render_chatml(t, msgs, n, r, add_generation_prompt, &w);
        break;
    case WK_CHAT_LLAMA3:
        render_llama3(msgs, n, r, add_generation_prompt, &w);
        break;
    case WK_CHAT_LLAMA2:
        rv = check_alternating(t, r, n, first, err, errlen);
        if (rv == CM_OK) {
            render_llama2(t, msgs, n, first, &w);
        }
        break;
    case WK_CHAT_GEMMA:
        rv = check_alternating(t, r, n, first, err, errlen);
        if (rv == CM_OK) {
            render_gemma(msgs, n, first, add_generation_prompt, &w);
        }
        break;
    case WK_CHAT_PHI3:
        rv = render_phi3(msgs, n, r, add_generation_prompt, &w, err, errlen);
        break;
    default:
        rv = cm_errf(CM_ERR_STATE, err, errlen, "no chat template family set");
        break;
    }
    if (rv != CM_OK) {
        out[0] = '\0';
        goto done;
    }
    if (w.overflow) {
        rv = cm_errf(CM_ERR_LIMIT, err, errlen, "rendered prompt exceeds %zu bytes", cap - 1);
        out[0] = '\0';
        goto done;
    }
    *n_written = w.n;
done:
    free(heap_roles);
    return rv;
}

/* ---- tools (generic format, see chat_template.h) ---- */

static void put_json_str(writer *w, const char *s) {
    static const char hex[] = "0123456789abcdef";
    put(w, "\"");
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put_n(w, e, 2);
        } else if (c == '\n') {
            put(w, "\\n");
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put_n(w, e, 6);
        } else {
            put_n(w, (const char *)&c, 1);
        }
    }
    put(w, "\"");
}

static void put_tools_section(writer *w, const wk_chat_tool *tools, size_t n_tools) {
    put(w, "# Tools\n\nYou may call one or more functions to answer the user. The functions "
           "available, one JSON object per line:\n<tools>\n");
    for (size_t i = 0; i < n_tools; i++) {
        put(w, "{\"type\": \"function\", \"function\": {\"name\": ");
        put_json_str(w, tools[i].name);
        if (tools[i].description != NULL) {
            put(w, ", \"description\": ");
            put_json_str(w, tools[i].description);
        }
        put(w, ", \"parameters\": ");
        put(w, tools[i].parameters != NULL ? tools[i].parameters : "{}");
        put(w, "}}\n");
    }
    put(w, "</tools>\n\nTo call a function, answer with one block per call, each a JSON object "
           "with the function's name and its arguments:\n" WK_TOOL_CALL_OPEN
           "{\"name\": \"<function name>\", \"arguments\": <arguments as a JSON object>}\n"
           "</tool_call>");
}

static void put_tool_call(writer *w, const wk_chat_tool_call *c) {
    put(w, WK_TOOL_CALL_OPEN WK_TOOL_CALL_NAME_PREFIX);
    put(w, c->name);
    put(w, WK_TOOL_CALL_ARGS_PREFIX);
    put(w, c->arguments);
    put(w, WK_TOOL_CALL_CLOSE);
}

static void end_of(writer *w) {
    put_n(w, "", 1); /* the NUL ends this content; the next one starts after it */
}

cm_err wk_chat_render_tools(const wk_chat_template *t, const wk_chat_message *msgs, size_t n,
                            const wk_chat_tool *tools, size_t n_tools, int add_generation_prompt,
                            char *out, size_t cap, size_t *n_written, char *err, size_t errlen) {
    bool plain = n_tools == 0;
    for (size_t i = 0; i < n && plain; i++)
        plain = msgs[i].n_tool_calls == 0 &&
                (msgs[i].role == NULL || strcmp(msgs[i].role, "tool") != 0 ||
                 t->family == WK_CHAT_LLAMA3);
    if (plain)
        return wk_chat_render(t, msgs, n, add_generation_prompt, out, cap, n_written, err, errlen);
    if (n > MAX_RENDER_MESSAGES) {
        return cm_errf(CM_ERR_LIMIT, err, errlen, "too many messages (%zu, limit %d)", n,
                       MAX_RENDER_MESSAGES);
    }
    /* The rewritten contents live in one scratch block; its size bounds the worst case
     * (escaping at most doubles descriptions, \u00XX at most sextuples control bytes). */
    size_t scratch_cap = sizeof t->default_system + 1024;
    for (size_t i = 0; i < n; i++) {
        scratch_cap += (msgs[i].content != NULL ? strlen(msgs[i].content) : 0) + 64;
        for (size_t k = 0; k < msgs[i].n_tool_calls; k++)
            scratch_cap +=
                strlen(msgs[i].tool_calls[k].name) + strlen(msgs[i].tool_calls[k].arguments) + 64;
    }
    for (size_t i = 0; i < n_tools; i++)
        scratch_cap += 6 * strlen(tools[i].name) +
                       (tools[i].description ? 6 * strlen(tools[i].description) : 0) +
                       (tools[i].parameters ? strlen(tools[i].parameters) : 2) + 128;
    char *scratch = malloc(scratch_cap);
    wk_chat_message *aug = calloc(n + 1, sizeof *aug);
    cm_err rv = CM_OK;
    if (scratch == NULL || aug == NULL) {
        rv = CM_ERR_NOMEM;
        goto done;
    }
    writer w = {scratch, scratch_cap, 0, false};
    size_t m = 0, i = 0;
    if (n_tools > 0) {
        const char *start = w.buf + w.n;
        const char *sys = t->default_system;
        if (n > 0 && msgs[0].role != NULL && strcmp(msgs[0].role, "system") == 0) {
            sys = msgs[0].content != NULL ? msgs[0].content : "";
            i = 1;
        }
        if (sys[0] != '\0') {
            put(&w, sys);
            put(&w, "\n\n");
        }
        put_tools_section(&w, tools, n_tools);
        aug[m].role = "system";
        aug[m].content = start;
        end_of(&w);
        m++;
    }
    for (; i < n; i++, m++) {
        aug[m] = msgs[i];
        aug[m].tool_calls = NULL;
        aug[m].n_tool_calls = 0;
        if (msgs[i].content == NULL)
            continue; /* wk_chat_render reports it */
        if (msgs[i].n_tool_calls > 0) {
            const char *start = w.buf + w.n;
            put(&w, msgs[i].content);
            for (size_t k = 0; k < msgs[i].n_tool_calls; k++) {
                if (k > 0 || msgs[i].content[0] != '\0')
                    put(&w, "\n");
                put_tool_call(&w, &msgs[i].tool_calls[k]);
            }
            aug[m].content = start;
            end_of(&w);
        } else if (msgs[i].role != NULL && strcmp(msgs[i].role, "tool") == 0 &&
                   t->family != WK_CHAT_LLAMA3) {
            const char *start = w.buf + w.n;
            put(&w, "<tool_response>\n");
            put(&w, msgs[i].content);
            put(&w, "\n</tool_response>");
            aug[m].role = "user";
            aug[m].content = start;
            end_of(&w);
        }
    }
    if (w.overflow) {
        rv = cm_errf(CM_ERR_LIMIT, err, errlen, "tool definitions too large to render");
        goto done;
    }
    rv = wk_chat_render(t, aug, m, add_generation_prompt, out, cap, n_written, err, errlen);
done:
    free(aug);
    free(scratch);
    return rv;
}
