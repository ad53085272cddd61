#include "gw_request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keys each API accepts. Anything else is refused (unsupported_keys first, for a clearer
 * message). */
static const char *const chat_keys[] = {"model",
                                        "messages",
                                        "max_tokens",
                                        "max_completion_tokens",
                                        "temperature",
                                        "top_p",
                                        "n",
                                        "stop",
                                        "seed",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "logit_bias",
                                        "logprobs",
                                        "top_logprobs",
                                        "user",
                                        "stream",
                                        "stream_options",
                                        "top_k",
                                        "min_p",
                                        "repetition_penalty",
                                        "ignore_eos",
                                        "min_tokens",
                                        "priority",
                                        "response_format",
                                        "tools",
                                        "tool_choice",
                                        "parallel_tool_calls",
                                        NULL};
static const char *const completion_keys[] = {"model",
                                              "prompt",
                                              "max_tokens",
                                              "temperature",
                                              "top_p",
                                              "n",
                                              "stop",
                                              "seed",
                                              "presence_penalty",
                                              "frequency_penalty",
                                              "logit_bias",
                                              "logprobs",
                                              "user",
                                              "stream",
                                              "stream_options",
                                              "top_k",
                                              "min_p",
                                              "repetition_penalty",
                                              "ignore_eos",
                                              "min_tokens",
                                              "priority",
                                              "echo",
                                              "best_of",
                                              "suffix",
                                              NULL};
/* vLLM's /tokenize (both forms) and /detokenize. */
static const char *const tokenize_keys[] = {"model",
                                            "prompt",
                                            "messages",
                                            "add_generation_prompt",
                                            "add_special_tokens",
                                            "return_token_strs",
                                            "tools",
                                            NULL};
static const char *const detokenize_keys[] = {"model", "tokens", NULL};
static const char *const unsupported_keys[] = {
    "functions",          "function_call", "audio",         "modalities",     "prediction",
    "web_search_options", "store",         "metadata",      "service_tier",   "reasoning_effort",
    "guided_json",        "guided_regex",  "guided_choice", "guided_grammar", NULL};

static int in_list(const char *const *list, const char *key) {
    for (size_t i = 0; list[i] != NULL; i++)
        if (strcmp(list[i], key) == 0)
            return 1;
    return 0;
}

static cm_err bad(gw_error *err, const char *param, const char *fmt, const char *detail) {
    return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", param, fmt, param, detail);
}

static cm_err wrong_type(gw_error *err, const char *param, const char *want) {
    return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_type", param, "'%s' must be %s", param,
                        want);
}

/* get_number: *present = 0 when absent or null; else *v. */
static cm_err get_number(json_t *root, const char *key, double lo, double hi, double *v,
                         int *present, gw_error *err) {
    json_t *j = json_object_get(root, key);
    *present = 0;
    if (j == NULL || json_is_null(j))
        return CM_OK;
    if (!json_is_number(j))
        return wrong_type(err, key, "a number");
    *v = json_number_value(j);
    if (!isfinite(*v) || *v < lo || *v > hi)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", key,
                            "'%s' must be between %g and %g, got %g", key, lo, hi, *v);
    *present = 1;
    return CM_OK;
}

/* get_int: like get_number but integral values only (5.0 accepted). */
static cm_err get_int(json_t *root, const char *key, double lo, double hi, int64_t *v, int *present,
                      gw_error *err) {
    json_t *j = json_object_get(root, key);
    double d;
    *present = 0;
    if (j == NULL || json_is_null(j))
        return CM_OK;
    if (json_is_integer(j)) {
        json_int_t iv = json_integer_value(j);
        if ((double)iv < lo || (double)iv > hi)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", key,
                                "'%s' must be between %.0f and %.0f, got %lld", key, lo, hi,
                                (long long)iv);
        *v = iv;
        *present = 1;
        return CM_OK;
    }
    if (!json_is_real(j))
        return wrong_type(err, key, "an integer");
    d = json_real_value(j);
    if (!isfinite(d) || floor(d) != d)
        return wrong_type(err, key, "an integer");
    if (d < lo || d > hi)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", key,
                            "'%s' must be between %.0f and %.0f, got %g", key, lo, hi, d);
    *v = (int64_t)d;
    *present = 1;
    return CM_OK;
}

static cm_err get_bool(json_t *root, const char *key, int *v, gw_error *err) {
    json_t *j = json_object_get(root, key);
    if (j == NULL || json_is_null(j))
        return CM_OK;
    if (!json_is_boolean(j))
        return wrong_type(err, key, "a boolean");
    *v = json_is_true(j);
    return CM_OK;
}

/* parse_eos_options: vLLM's `ignore_eos` and `min_tokens` (after max_tokens is known). */
static cm_err parse_eos_options(json_t *root, const gw_limits *lim, gw_request *r, gw_error *err) {
    int ignore = 0, present;
    int64_t iv;
    cm_err rv = get_bool(root, "ignore_eos", &ignore, err);
    if (rv != CM_OK)
        return rv;
    r->submit.has_ignore_eos = ignore != 0;
    r->submit.ignore_eos = ignore != 0;
    rv = get_int(root, "min_tokens", 0, lim->max_tokens, &iv, &present, err);
    if (rv != CM_OK)
        return rv;
    if (present && iv > 0) {
        if (r->max_tokens > 0 && (uint32_t)iv > r->max_tokens)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", "min_tokens",
                                "'min_tokens' (%lld) must not exceed max_tokens (%u)",
                                (long long)iv, r->max_tokens);
        r->submit.has_min_tokens = 1;
        r->submit.min_tokens = (uint32_t)iv;
    }
    return CM_OK;
}

/* Joins a content value (string or array of text parts) into *text; *owned is set when the
 * string was allocated. */
static cm_err content_text(json_t *c, const char *param, const char **text, char **owned,
                           gw_error *err) {
    size_t total = 0, i;
    json_t *part;
    char *buf;
    *owned = NULL;
    if (json_is_string(c)) {
        *text = json_string_value(c);
        return CM_OK;
    }
    if (!json_is_array(c))
        return wrong_type(err, param, "a string or an array of text parts");
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type");
        json_t *t = json_object_get(part, "text");
        char p[160];
        snprintf(p, sizeof p, "%s[%zu]", param, i);
        if (!json_is_object(part) || !json_is_string(type))
            return wrong_type(err, p, "an object with a 'type'");
        if (strcmp(json_string_value(type), "text") != 0)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_content_type", p,
                                "content part type '%s' is not supported (only 'text')",
                                json_string_value(type));
        if (!json_is_string(t))
            return wrong_type(err, p, "a text part with a string 'text'");
        total += json_string_length(t);
    }
    buf = malloc(total + 1);
    if (buf == NULL)
        return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"), CM_ERR_NOMEM;
    total = 0;
    json_array_foreach(c, i, part) {
        json_t *t = json_object_get(part, "text");
        memcpy(buf + total, json_string_value(t), json_string_length(t));
        total += json_string_length(t);
    }
    buf[total] = '\0';
    *owned = buf;
    *text = buf;
    return CM_OK;
}

/* Keys of a chat message; the null-only ones are what SDKs write back when replaying a
 * response message (message.model_dump()). */
static const char *const message_keys[] = {"role",         "content",    "name",
                                           "tool_call_id", "tool_calls", NULL};
static const char *const message_null_keys[] = {"refusal", "function_call", "audio", "annotations",
                                                NULL};

/* ^[a-zA-Z0-9_-]{1,64}$, OpenAI's rule for function names. */
static int valid_tool_name(json_t *v) {
    const char *s;
    size_t n;
    if (!json_is_string(v))
        return 0;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0 || n > GW_MAX_TOOL_NAME_BYTES || strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static cm_err bad_name(gw_error *err, const char *param) {
    return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", param,
                        "'%s' must match ^[a-zA-Z0-9_-]{1,64}$", param);
}

/* A history message's tool_calls (assistant only) and tool_call_id (tool only, required). */
static cm_err parse_message_tools(json_t *m, size_t i, const char *role, gw_request *r,
                                  gw_error *err) {
    char p[160];
    json_t *calls = json_object_get(m, "tool_calls"), *c;
    Sluice__ChatMessage *cm = &r->msg_store[i];
    size_t k;
    if (strcmp(role, "tool") == 0) {
        json_t *id = json_object_get(m, "tool_call_id");
        if (id == NULL || json_is_null(id)) {
            snprintf(p, sizeof p, "messages[%zu].tool_call_id", i);
            return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter", p,
                                "'%s' is required for messages with role 'tool'", p);
        }
    }
    if (calls == NULL || json_is_null(calls))
        return CM_OK;
    snprintf(p, sizeof p, "messages[%zu].tool_calls", i);
    if (strcmp(role, "assistant") != 0)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", p,
                            "'%s' is only allowed on assistant messages", p);
    if (!json_is_array(calls))
        return wrong_type(err, p, "an array");
    if (json_array_size(calls) > GW_MAX_TOOL_CALLS)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", p,
                            "'%s' has %zu entries; the limit is %d", p, json_array_size(calls),
                            GW_MAX_TOOL_CALLS);
    cm->tool_calls = &r->call_ptrs[r->n_calls];
    json_array_foreach(calls, k, c) {
        json_t *type = json_object_get(c, "type"), *id = json_object_get(c, "id");
        json_t *fn = json_object_get(c, "function"), *name, *args;
        Sluice__ToolCall *tc = &r->call_store[r->n_calls];
        snprintf(p, sizeof p, "messages[%zu].tool_calls[%zu]", i, k);
        if (!json_is_object(c))
            return wrong_type(err, p, "an object");
        if (type != NULL &&
            !(json_is_string(type) && strcmp(json_string_value(type), "function") == 0))
            return bad(err, p, "'%s.type' must be 'function'%s", "");
        if (id != NULL && !json_is_null(id) &&
            (!json_is_string(id) || json_string_length(id) > 256 ||
             strlen(json_string_value(id)) != json_string_length(id)))
            return wrong_type(err, p, "an object whose 'id' is a string of at most 256 bytes");
        if (!json_is_object(fn))
            return wrong_type(err, p, "an object with a 'function' object");
        name = json_object_get(fn, "name");
        args = json_object_get(fn, "arguments");
        snprintf(p, sizeof p, "messages[%zu].tool_calls[%zu].function.name", i, k);
        if (!valid_tool_name(name))
            return bad_name(err, p);
        snprintf(p, sizeof p, "messages[%zu].tool_calls[%zu].function.arguments", i, k);
        if (!json_is_string(args))
            return wrong_type(err, p, "a string (the arguments as JSON)");
        if (json_string_length(args) > GW_MAX_TOOL_ARGUMENTS_BYTES ||
            strlen(json_string_value(args)) != json_string_length(args))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", p,
                                "'%s' must be at most %u bytes without NUL", p,
                                GW_MAX_TOOL_ARGUMENTS_BYTES);
        sluice__tool_call__init(tc);
        tc->id = json_is_string(id) ? (char *)json_string_value(id) : NULL;
        tc->name = (char *)json_string_value(name);
        tc->arguments_json = (char *)json_string_value(args);
        r->call_ptrs[r->n_calls++] = tc;
        cm->n_tool_calls++;
        r->prompt_chars += json_string_length(args) + json_string_length(name) + 32;
    }
    return CM_OK;
}

static cm_err parse_messages(json_t *root, const gw_limits *lim, gw_request *r, gw_error *err) {
    json_t *msgs = json_object_get(root, "messages");
    size_t n, i;
    json_t *m;
    if (msgs == NULL || json_is_null(msgs))
        return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter", "messages",
                            "'messages' is a required property");
    if (!json_is_array(msgs))
        return wrong_type(err, "messages", "an array");
    n = json_array_size(msgs);
    if (n == 0)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", "messages",
                            "'messages' must contain at least one message");
    if (n > lim->max_messages)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "too_many_messages", "messages",
                            "'messages' has %zu entries; the limit is %u", n, lim->max_messages);
    r->msg_store = calloc(n, sizeof *r->msg_store);
    r->msg_ptrs = calloc(n, sizeof *r->msg_ptrs);
    r->joined = calloc(n, sizeof *r->joined);
    if (r->msg_store == NULL || r->msg_ptrs == NULL || r->joined == NULL)
        return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"), CM_ERR_NOMEM;
    {
        /* One store for the tool calls of every history message, sized by a first pass. */
        size_t calls = 0;
        json_array_foreach(msgs, i, m) {
            json_t *tc = json_is_object(m) ? json_object_get(m, "tool_calls") : NULL;
            if (json_is_array(tc))
                calls += json_array_size(tc);
        }
        if (calls > 0) {
            r->call_store = calloc(calls, sizeof *r->call_store);
            r->call_ptrs = calloc(calls, sizeof *r->call_ptrs);
            if (r->call_store == NULL || r->call_ptrs == NULL)
                return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"),
                       CM_ERR_NOMEM;
        }
    }
    r->n_joined = n;
    json_array_foreach(msgs, i, m) {
        char p[96];
        const char *role, *key;
        json_t *v, *content;
        const char *text = "";
        Sluice__ChatMessage *cm = &r->msg_store[i];
        sluice__chat_message__init(cm);
        r->msg_ptrs[i] = cm;
        snprintf(p, sizeof p, "messages[%zu]", i);
        if (!json_is_object(m))
            return wrong_type(err, p, "an object");
        json_object_foreach(m, key, v) {
            if (!in_list(message_keys, key) &&
                !(in_list(message_null_keys, key) && json_is_null(v))) {
                snprintf(p, sizeof p, "messages[%zu].%s", i, key);
                return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_parameter", p,
                                    "'%s' is not supported", p);
            }
        }
        v = json_object_get(m, "role");
        snprintf(p, sizeof p, "messages[%zu].role", i);
        if (!json_is_string(v))
            return wrong_type(err, p, "a string");
        role = json_string_value(v);
        if (strcmp(role, "developer") == 0)
            role = "system";
        if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 &&
            strcmp(role, "assistant") != 0 && strcmp(role, "tool") != 0)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", p,
                                "'%s' must be one of system, developer, user, assistant, tool", p);
        cm->role = (char *)role;
        {
            cm_err rv = parse_message_tools(m, i, role, r, err);
            if (rv != CM_OK)
                return rv;
        }
        content = json_object_get(m, "content");
        snprintf(p, sizeof p, "messages[%zu].content", i);
        if (content == NULL || json_is_null(content)) {
            if (strcmp(role, "assistant") != 0)
                return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter", p,
                                    "'%s' is required", p);
        } else {
            cm_err rv = content_text(content, p, &text, &r->joined[i], err);
            if (rv != CM_OK)
                return rv;
        }
        if (strlen(text) != (content != NULL && json_is_string(content)
                                 ? json_string_length(content)
                                 : strlen(text)))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", p,
                                "'%s' must not contain NUL characters", p);
        cm->content = (char *)text;
        r->prompt_chars += strlen(text);
        if (r->prompt_chars > lim->max_prompt_chars)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "prompt_too_long", "messages",
                                "the messages hold more than %zu bytes of text",
                                lim->max_prompt_chars);
        v = json_object_get(m, "name");
        if (v != NULL && !json_is_null(v)) {
            snprintf(p, sizeof p, "messages[%zu].name", i);
            if (!json_is_string(v) || json_string_length(v) > 256)
                return wrong_type(err, p, "a string of at most 256 bytes");
            cm->name = (char *)json_string_value(v);
        }
        v = json_object_get(m, "tool_call_id");
        if (v != NULL && !json_is_null(v)) {
            snprintf(p, sizeof p, "messages[%zu].tool_call_id", i);
            if (!json_is_string(v) || json_string_length(v) > 256)
                return wrong_type(err, p, "a string of at most 256 bytes");
            cm->tool_call_id = (char *)json_string_value(v);
        }
    }
    r->submit.n_messages = n;
    r->submit.messages = r->msg_ptrs;
    return CM_OK;
}

static cm_err parse_prompt(json_t *root, const gw_limits *lim, gw_request *r, gw_error *err) {
    json_t *p = json_object_get(root, "prompt");
    if (p == NULL || json_is_null(p))
        return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter", "prompt",
                            "'prompt' is a required property");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        if (strlen(json_string_value(p)) != json_string_length(p))
            return bad(err, "prompt", "'%s' must not contain NUL characters%s", "");
        r->prompt_chars = json_string_length(p);
        if (r->prompt_chars > lim->max_prompt_chars)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "prompt_too_long", "prompt",
                                "'prompt' is longer than %zu bytes", lim->max_prompt_chars);
        r->submit.prompt = (char *)json_string_value(p);
        return CM_OK;
    }
    if (json_is_array(p)) {
        size_t n = json_array_size(p), i;
        json_t *t;
        if (n == 0)
            return bad(err, "prompt", "'%s' must not be empty%s", "");
        if (!json_is_integer(json_array_get(p, 0)))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_value", "prompt",
                                "a list of several prompts is not supported; send one request "
                                "per prompt");
        if (n > lim->max_prompt_token_ids)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "prompt_too_long", "prompt",
                                "'prompt' has %zu token ids; the limit is %u", n,
                                lim->max_prompt_token_ids);
        r->prompt_ids = calloc(n, sizeof *r->prompt_ids);
        if (r->prompt_ids == NULL)
            return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"),
                   CM_ERR_NOMEM;
        json_array_foreach(p, i, t) {
            if (!json_is_integer(t) || json_integer_value(t) < 0 ||
                json_integer_value(t) > INT32_MAX)
                return wrong_type(err, "prompt", "a string or an array of token ids");
            r->prompt_ids[i] = (int32_t)json_integer_value(t);
        }
        r->submit.n_prompt_token_ids = n;
        r->submit.prompt_token_ids = r->prompt_ids;
        r->prompt_chars = n * 4;
        return CM_OK;
    }
    return wrong_type(err, "prompt", "a string or an array of token ids");
}

static cm_err parse_stop(json_t *root, const gw_limits *lim, gw_request *r, gw_error *err) {
    json_t *s = json_object_get(root, "stop");
    size_t n, i;
    json_t *v;
    if (s == NULL || json_is_null(s))
        return CM_OK;
    if (json_is_string(s)) {
        n = 1;
    } else if (json_is_array(s)) {
        n = json_array_size(s);
    } else {
        return wrong_type(err, "stop", "a string or an array of strings");
    }
    if (n > lim->max_stop)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", "stop",
                            "'stop' has %zu strings; the limit is %u", n, lim->max_stop);
    if (n == 0)
        return CM_OK;
    r->stop_ptrs = calloc(n, sizeof *r->stop_ptrs);
    if (r->stop_ptrs == NULL)
        return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"), CM_ERR_NOMEM;
    for (i = 0; i < n; i++) {
        char p[32];
        v = json_is_string(s) ? s : json_array_get(s, i);
        snprintf(p, sizeof p, json_is_string(s) ? "stop" : "stop[%zu]", i);
        if (!json_is_string(v))
            return wrong_type(err, p, "a string");
        if (json_string_length(v) == 0 || json_string_length(v) > lim->max_stop_chars ||
            strlen(json_string_value(v)) != json_string_length(v))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", p,
                                "'%s' must be 1 to %u bytes without NUL", p, lim->max_stop_chars);
        r->stop_ptrs[i] = (char *)json_string_value(v);
    }
    r->submit.n_stop = n;
    r->submit.stop = r->stop_ptrs;
    return CM_OK;
}

static cm_err parse_logit_bias(json_t *root, const gw_limits *lim, gw_request *r, gw_error *err) {
    json_t *b = json_object_get(root, "logit_bias");
    const char *key;
    json_t *v;
    size_t n, i = 0;
    if (b == NULL || json_is_null(b))
        return CM_OK;
    if (!json_is_object(b))
        return wrong_type(err, "logit_bias", "an object of token id -> bias");
    n = json_object_size(b);
    if (n > lim->max_logit_bias)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", "logit_bias",
                            "'logit_bias' has %zu entries; the limit is %u", n,
                            lim->max_logit_bias);
    if (n == 0)
        return CM_OK;
    r->bias_store = calloc(n, sizeof *r->bias_store);
    r->bias_ptrs = calloc(n, sizeof *r->bias_ptrs);
    if (r->bias_store == NULL || r->bias_ptrs == NULL)
        return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"), CM_ERR_NOMEM;
    json_object_foreach(b, key, v) {
        char *end = NULL;
        long id;
        double bias;
        if (key[0] < '0' || key[0] > '9')
            return bad(err, "logit_bias", "'%s' keys must be token ids%s", "");
        id = strtol(key, &end, 10);
        if (*end != '\0' || id < 0 || id > INT32_MAX)
            return bad(err, "logit_bias", "'%s' keys must be token ids%s", "");
        if (!json_is_number(v))
            return wrong_type(err, "logit_bias", "an object whose values are numbers");
        bias = json_number_value(v);
        if (!isfinite(bias))
            return bad(err, "logit_bias", "'%s' values must be finite%s", "");
        /* OpenAI documents -100..100; the wire contract says the gateway clamps. */
        bias = bias < -100 ? -100 : bias > 100 ? 100 : bias;
        sluice__logit_bias__init(&r->bias_store[i]);
        r->bias_store[i].token_id = (int32_t)id;
        r->bias_store[i].bias = (float)bias;
        r->bias_ptrs[i] = &r->bias_store[i];
        i++;
    }
    r->sampling.n_logit_bias = i;
    r->sampling.logit_bias = r->bias_ptrs;
    return CM_OK;
}

static cm_err parse_sampling(json_t *root, gw_request *r, gw_error *err) {
    double d;
    int64_t iv;
    int present;
    cm_err rv;
    Sluice__SamplingParams *s = &r->sampling;
#define NUM(key, lo, hi, field)                                                                    \
    do {                                                                                           \
        rv = get_number(root, key, lo, hi, &d, &present, err);                                     \
        if (rv != CM_OK)                                                                           \
            return rv;                                                                             \
        if (present) {                                                                             \
            s->has_##field = 1;                                                                    \
            s->field = (float)d;                                                                   \
        }                                                                                          \
    } while (0)
    NUM("temperature", 0, 2, temperature);
    NUM("presence_penalty", -2, 2, presence_penalty);
    NUM("frequency_penalty", -2, 2, frequency_penalty);
    NUM("min_p", 0, 1, min_p);
    NUM("repetition_penalty", 0, 10, repetition_penalty);
#undef NUM
    rv = get_number(root, "top_p", 0, 1, &d, &present, err);
    if (rv != CM_OK)
        return rv;
    if (present) {
        if (d <= 0)
            return bad(err, "top_p", "'%s' must be greater than 0 and at most 1%s", "");
        s->has_top_p = 1;
        s->top_p = (float)d;
    }
    if (s->has_repetition_penalty && s->repetition_penalty <= 0)
        return bad(err, "repetition_penalty", "'%s' must be greater than 0%s", "");
    rv = get_int(root, "top_k", -1, 1e6, &iv, &present, err);
    if (rv != CM_OK)
        return rv;
    if (present) {
        s->has_top_k = 1;
        s->top_k = (int32_t)iv;
    }
    rv = get_int(root, "seed", -9.2e18, 9.2e18, &iv, &present, err);
    if (rv != CM_OK)
        return rv;
    if (present) {
        r->has_seed = 1;
        r->seed = (uint64_t)iv;
    }
    return CM_OK;
}

static cm_err parse_logprobs(json_t *root, gw_request *r, gw_error *err) {
    int64_t iv;
    int present;
    cm_err rv;
    if (r->api == GW_API_CHAT) {
        int lp = 0;
        rv = get_bool(root, "logprobs", &lp, err);
        if (rv != CM_OK)
            return rv;
        rv = get_int(root, "top_logprobs", 0, 20, &iv, &present, err);
        if (rv != CM_OK)
            return rv;
        if (present && !lp)
            return bad(err, "top_logprobs", "'%s' requires 'logprobs' to be true%s", "");
        r->logprobs = lp;
        r->top_logprobs = present ? (uint32_t)iv : 0;
    } else {
        rv = get_int(root, "logprobs", 0, 5, &iv, &present, err);
        if (rv != CM_OK)
            return rv;
        r->logprobs = present;
        r->top_logprobs = present ? (uint32_t)iv : 0;
    }
    if (r->logprobs) {
        r->sampling.has_logprobs = 1;
        r->sampling.logprobs = r->top_logprobs + 1;
    }
    return CM_OK;
}

static cm_err parse_misc(json_t *root, const gw_limits *lim, gw_request *r, gw_error *err) {
    int64_t iv;
    int present;
    cm_err rv;
    json_t *j;
    const char *max_key = "max_tokens";

    rv = get_bool(root, "stream", &r->stream, err);
    if (rv != CM_OK)
        return rv;
    j = json_object_get(root, "stream_options");
    if (j != NULL && !json_is_null(j)) {
        const char *key;
        json_t *v;
        if (!r->stream)
            return bad(err, "stream_options", "'%s' is only allowed when 'stream' is true%s", "");
        if (!json_is_object(j))
            return wrong_type(err, "stream_options", "an object");
        json_object_foreach(j, key, v) {
            if (strcmp(key, "include_usage") != 0)
                return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_parameter",
                                    "stream_options", "'stream_options.%s' is not supported", key);
        }
        rv = get_bool(j, "include_usage", &r->include_usage, err);
        if (rv != CM_OK)
            return rv;
    }
    rv = get_int(root, "n", 1, lim->max_n, &iv, &present, err);
    if (rv != CM_OK)
        return rv;
    r->n = present ? (uint32_t)iv : 1;

    r->max_tokens = r->api == GW_API_CHAT ? lim->default_max_tokens : 16;
    if (r->max_tokens > lim->max_tokens)
        r->max_tokens = lim->max_tokens;
    if (r->api == GW_API_CHAT && json_object_get(root, "max_completion_tokens") != NULL &&
        !json_is_null(json_object_get(root, "max_completion_tokens")))
        max_key = "max_completion_tokens";
    rv = get_int(root, max_key, 1, lim->max_tokens, &iv, &present, err);
    if (rv != CM_OK)
        return rv;
    if (present)
        r->max_tokens = (uint32_t)iv;
    /* 0 (chat without max_tokens and no default_max_tokens): absent on the wire, so the worker
     * generates up to the remaining context, as OpenAI does. */
    r->submit.has_max_tokens = r->max_tokens > 0;
    r->submit.max_tokens = r->max_tokens;
    rv = parse_eos_options(root, lim, r, err);
    if (rv != CM_OK)
        return rv;

    j = json_object_get(root, "user");
    if (j != NULL && !json_is_null(j)) {
        if (!json_is_string(j) || json_string_length(j) > 256)
            return wrong_type(err, "user", "a string of at most 256 bytes");
        r->user = json_string_value(j);
    }
    j = json_object_get(root, "priority");
    if (j != NULL && !json_is_null(j)) {
        if (json_is_string(j)) {
            if (strcmp(json_string_value(j), "batch") == 0)
                r->priority_batch = 1;
            else if (strcmp(json_string_value(j), "interactive") != 0)
                return bad(err, "priority", "'%s' must be an integer or 'interactive' or 'batch'%s",
                           "");
        } else {
            rv = get_int(root, "priority", -1e6, 1e6, &iv, &present, err);
            if (rv != CM_OK)
                return rv;
            r->priority_batch = iv > 0;
        }
    }
    r->submit.has_priority = 1;
    r->submit.priority = r->priority_batch ? SLUICE__PRIORITY__PRIORITY_BATCH
                                           : SLUICE__PRIORITY__PRIORITY_INTERACTIVE;

    if (r->api == GW_API_COMPLETIONS) {
        int echo = 0;
        rv = get_bool(root, "echo", &echo, err);
        if (rv != CM_OK)
            return rv;
        if (echo)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_parameter", "echo",
                                "'echo' is not supported");
        j = json_object_get(root, "suffix");
        if (j != NULL && !json_is_null(j))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_parameter", "suffix",
                                "'suffix' is not supported");
        rv = get_int(root, "best_of", 1, lim->max_n, &iv, &present, err);
        if (rv != CM_OK)
            return rv;
        if (present && (uint32_t)iv != r->n)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_parameter", "best_of",
                                "'best_of' different from 'n' is not supported");
    }
    return CM_OK;
}

/* Keeps a copy of schema serialized (compact, key order kept) in r->dumped; *out points to it. */
static cm_err dump_schema(gw_request *r, json_t *schema, const char *param, char **out,
                          gw_error *err) {
    char *text;
    size_t n;
    char **grown;
    if (!json_is_object(schema))
        return wrong_type(err, param, "a JSON Schema object");
    text = json_dumps(schema, JSON_COMPACT);
    if (text == NULL)
        return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"), CM_ERR_NOMEM;
    n = strlen(text);
    if (n > GW_MAX_SCHEMA_BYTES) {
        free(text);
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", param,
                            "'%s' is %zu bytes as JSON; the limit is %u", param, n,
                            GW_MAX_SCHEMA_BYTES);
    }
    grown = realloc(r->dumped, (r->n_dumped + 1) * sizeof *grown);
    if (grown == NULL) {
        free(text);
        return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"), CM_ERR_NOMEM;
    }
    r->dumped = grown;
    r->dumped[r->n_dumped++] = text;
    r->prompt_chars += n;
    *out = text;
    return CM_OK;
}

/* Refuses keys of obj outside allowed, naming "<param>.<key>". */
static cm_err only_keys(json_t *obj, const char *param, const char *const *allowed, gw_error *err) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!in_list(allowed, key)) {
            char p[160];
            snprintf(p, sizeof p, "%s.%s", param, key);
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unrecognized_parameter", p,
                                "Unrecognized argument supplied: %s", p);
        }
    }
    return CM_OK;
}

static cm_err parse_response_format(json_t *root, gw_request *r, gw_error *err) {
    static const char *const rf_keys[] = {"type", "json_schema", NULL};
    static const char *const js_keys[] = {"name", "description", "schema", "strict", NULL};
    json_t *j = json_object_get(root, "response_format"), *t, *js, *v;
    Sluice__ResponseFormat *f = &r->rformat;
    const char *type;
    cm_err rv;
    if (j == NULL || json_is_null(j))
        return CM_OK;
    t = json_object_get(j, "type");
    if (!json_is_object(j) || !json_is_string(t))
        return wrong_type(err, "response_format", "an object with a 'type'");
    if ((rv = only_keys(j, "response_format", rf_keys, err)) != CM_OK)
        return rv;
    sluice__response_format__init(f);
    type = json_string_value(t);
    js = json_object_get(j, "json_schema");
    if (strcmp(type, "json_schema") != 0 && js != NULL && !json_is_null(js))
        return bad(err, "response_format.json_schema",
                   "'%s' is only allowed with type 'json_schema'%s", "");
    if (strcmp(type, "text") == 0)
        return CM_OK; /* the default: no response_format on the wire */
    if (strcmp(type, "json_object") == 0) {
        f->has_type = 1;
        f->type = SLUICE__RESPONSE_FORMAT__TYPE__TYPE_JSON_OBJECT;
    } else if (strcmp(type, "json_schema") == 0) {
        f->has_type = 1;
        f->type = SLUICE__RESPONSE_FORMAT__TYPE__TYPE_JSON_SCHEMA;
        if (js == NULL || json_is_null(js))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter",
                                "response_format.json_schema",
                                "'response_format.json_schema' is required when type is "
                                "'json_schema'");
        if (!json_is_object(js))
            return wrong_type(err, "response_format.json_schema", "an object");
        if ((rv = only_keys(js, "response_format.json_schema", js_keys, err)) != CM_OK)
            return rv;
        v = json_object_get(js, "name");
        if (v == NULL || json_is_null(v))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter",
                                "response_format.json_schema.name",
                                "'response_format.json_schema.name' is required");
        if (!valid_tool_name(v))
            return bad_name(err, "response_format.json_schema.name");
        f->name = (char *)json_string_value(v);
        v = json_object_get(js, "description");
        if (v != NULL && !json_is_null(v) && !json_is_string(v))
            return wrong_type(err, "response_format.json_schema.description", "a string");
        v = json_object_get(js, "strict");
        if (v != NULL && !json_is_null(v)) {
            if (!json_is_boolean(v))
                return wrong_type(err, "response_format.json_schema.strict", "a boolean");
            f->has_strict = 1;
            f->strict = json_is_true(v);
        }
        v = json_object_get(js, "schema");
        if (v == NULL || json_is_null(v))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter",
                                "response_format.json_schema.schema",
                                "'response_format.json_schema.schema' is required");
        if ((rv = dump_schema(r, v, "response_format.json_schema.schema", &f->schema_json, err)) !=
            CM_OK)
            return rv;
    } else {
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", "response_format.type",
                            "'response_format.type' must be one of 'text', 'json_object', "
                            "'json_schema', got '%.64s'",
                            type);
    }
    r->submit.response_format = f;
    return CM_OK;
}

static cm_err parse_one_tool(json_t *t, size_t i, gw_request *r, gw_error *err) {
    static const char *const tool_keys[] = {"type", "function", NULL};
    static const char *const fn_keys[] = {"name", "description", "parameters", "strict", NULL};
    char p[96], q[128];
    json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function"), *v;
    Sluice__Tool *tool = &r->tool_store[i];
    cm_err rv;
    snprintf(p, sizeof p, "tools[%zu]", i);
    if (!json_is_object(t))
        return wrong_type(err, p, "an object");
    if ((rv = only_keys(t, p, tool_keys, err)) != CM_OK)
        return rv;
    snprintf(q, sizeof q, "%s.type", p);
    if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0)
        return bad(err, q, "'%s' must be 'function'%s", "");
    snprintf(q, sizeof q, "%s.function", p);
    if (!json_is_object(fn))
        return wrong_type(err, q, "an object");
    if ((rv = only_keys(fn, q, fn_keys, err)) != CM_OK)
        return rv;
    sluice__tool__init(tool);
    snprintf(q, sizeof q, "%s.function.name", p);
    v = json_object_get(fn, "name");
    if (v == NULL || json_is_null(v))
        return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter", q,
                            "'%s' is required", q);
    if (!valid_tool_name(v))
        return bad_name(err, q);
    tool->name = (char *)json_string_value(v);
    for (size_t k = 0; k < i; k++)
        if (strcmp(r->tool_store[k].name, tool->name) == 0)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", q,
                                "'%s': the function name '%s' is defined twice", q, tool->name);
    snprintf(q, sizeof q, "%s.function.description", p);
    v = json_object_get(fn, "description");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) > GW_MAX_TOOL_DESCRIPTION_BYTES ||
            strlen(json_string_value(v)) != json_string_length(v))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", q,
                                "'%s' must be a string of at most %d bytes without NUL", q,
                                GW_MAX_TOOL_DESCRIPTION_BYTES);
        tool->description = (char *)json_string_value(v);
        r->prompt_chars += json_string_length(v);
    }
    snprintf(q, sizeof q, "%s.function.strict", p);
    v = json_object_get(fn, "strict");
    if (v != NULL && !json_is_null(v) && !json_is_boolean(v))
        return wrong_type(err, q, "a boolean");
    snprintf(q, sizeof q, "%s.function.parameters", p);
    v = json_object_get(fn, "parameters");
    if (v != NULL && !json_is_null(v)) {
        json_t *pt = json_object_get(v, "type");
        if (!json_is_object(v))
            return wrong_type(err, q, "a JSON Schema object");
        /* OpenAI: the arguments are always a JSON object. */
        if (pt != NULL && !(json_is_string(pt) && strcmp(json_string_value(pt), "object") == 0))
            return bad(err, q, "'%s' must describe an object (\"type\": \"object\")%s", "");
        if ((rv = dump_schema(r, v, q, &tool->parameters_json, err)) != CM_OK)
            return rv;
    }
    r->prompt_chars += json_string_length(json_object_get(fn, "name")) + 64;
    return CM_OK;
}

static cm_err parse_tools(json_t *root, const gw_limits *lim, gw_request *r, gw_error *err) {
    json_t *tools = json_object_get(root, "tools"), *t, *tc = json_object_get(root, "tool_choice");
    size_t n = 0, i;
    cm_err rv;
    int parallel = 1;
    if ((rv = get_bool(root, "parallel_tool_calls", &parallel, err)) != CM_OK)
        return rv;
    if (tools != NULL && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return wrong_type(err, "tools", "an array");
        n = json_array_size(tools);
        if (n > GW_MAX_TOOLS)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", "tools",
                                "'tools' has %zu entries; the limit is %d", n, GW_MAX_TOOLS);
        if (n == 0)
            return bad(err, "tools", "'%s' must contain at least one tool (or be omitted)%s", "");
        r->tool_store = calloc(n, sizeof *r->tool_store);
        r->tool_ptrs = calloc(n, sizeof *r->tool_ptrs);
        if (r->tool_store == NULL || r->tool_ptrs == NULL)
            return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"),
                   CM_ERR_NOMEM;
        json_array_foreach(tools, i, t) {
            if ((rv = parse_one_tool(t, i, r, err)) != CM_OK)
                return rv;
            r->tool_ptrs[i] = &r->tool_store[i];
        }
        if (r->prompt_chars > lim->max_prompt_chars)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "prompt_too_long", "tools",
                                "the messages and tools hold more than %zu bytes of text",
                                lim->max_prompt_chars);
    }
    sluice__tool_choice__init(&r->tool_choice);
    if (tc != NULL && !json_is_null(tc)) {
        if (json_is_string(tc)) {
            const char *m = json_string_value(tc);
            r->tool_choice.has_mode = 1;
            if (strcmp(m, "none") == 0)
                r->tool_choice.mode = SLUICE__TOOL_CHOICE__MODE__MODE_NONE;
            else if (strcmp(m, "auto") == 0)
                r->tool_choice.mode = SLUICE__TOOL_CHOICE__MODE__MODE_AUTO;
            else if (strcmp(m, "required") == 0)
                r->tool_choice.mode = SLUICE__TOOL_CHOICE__MODE__MODE_REQUIRED;
            else
                return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value", "tool_choice",
                                    "'tool_choice' must be 'none', 'auto', 'required' or "
                                    "{\"type\": \"function\", \"function\": {\"name\": ...}}, "
                                    "got '%.64s'",
                                    m);
        } else if (json_is_object(tc)) {
            json_t *type = json_object_get(tc, "type"), *fn = json_object_get(tc, "function");
            json_t *name = json_is_object(fn) ? json_object_get(fn, "name") : NULL;
            if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0)
                return bad(err, "tool_choice.type", "'%s' must be 'function'%s", "");
            if (!json_is_object(fn) || !json_is_string(name))
                return wrong_type(err, "tool_choice.function", "an object with a string 'name'");
            r->tool_choice.has_mode = 1;
            r->tool_choice.mode = SLUICE__TOOL_CHOICE__MODE__MODE_FUNCTION;
            r->tool_choice.name = (char *)json_string_value(name);
            for (i = 0; i < n; i++)
                if (strcmp(r->tool_store[i].name, r->tool_choice.name) == 0)
                    break;
            if (i == n)
                return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value",
                                    "tool_choice.function.name",
                                    "'tool_choice' names the function '%.64s', which is not in "
                                    "'tools'",
                                    r->tool_choice.name);
        } else {
            return wrong_type(err, "tool_choice", "a string or an object");
        }
        if (n == 0 && r->tool_choice.mode != SLUICE__TOOL_CHOICE__MODE__MODE_NONE)
            return bad(err, "tool_choice", "'%s' is only allowed when 'tools' are specified%s", "");
    }
    if (n == 0)
        return CM_OK;
    r->submit.n_tools = n;
    r->submit.tools = r->tool_ptrs;
    r->submit.tool_choice = &r->tool_choice;
    r->submit.has_parallel_tool_calls = 1;
    r->submit.parallel_tool_calls = parallel;
    r->has_tools = r->tool_choice.mode != SLUICE__TOOL_CHOICE__MODE__MODE_NONE;
    return CM_OK;
}

/* parse_head: the part every body shares: size bound, JSON object, keys among allowed (the
 * unsupported ones named as such), and a model name. r->root owns the parsed body. */
static cm_err parse_head(const char *body, size_t len, const char *const *allowed,
                         const gw_limits *lim, gw_request *r, gw_error *err) {
    json_error_t jerr;
    const char *key;
    json_t *v;
    if (len > lim->max_body_bytes) {
        gw_error_set(err, 413, GW_ERRT_INVALID, "request_too_large", NULL,
                     "request body is %zu bytes; the limit is %zu", len, lim->max_body_bytes);
        return CM_ERR_LIMIT;
    }
    /* Depth and size are bounded by max_body_bytes; jansson parses iteratively enough for
     * 1 MiB bodies (its nesting limit is 2048). */
    r->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (r->root == NULL)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_json", NULL,
                            "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                            jerr.line, jerr.column);
    if (!json_is_object(r->root))
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_json", NULL,
                            "request body must be a JSON object");
    json_object_foreach(r->root, key, v) {
        if (in_list(unsupported_keys, key) && !json_is_null(v))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_parameter", key,
                                "'%s' is not supported by this server", key);
        if (!in_list(allowed, key) && !in_list(unsupported_keys, key))
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unrecognized_parameter", key,
                                "Unrecognized request argument supplied: %s", key);
    }
    v = json_object_get(r->root, "model");
    if (v == NULL || json_is_null(v))
        return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter", "model",
                            "'model' is a required property");
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 256)
        return wrong_type(err, "model", "a non-empty string of at most 256 bytes");
    r->model = json_string_value(v);
    r->submit.model = (char *)r->model;
    return CM_OK;
}

cm_err gw_request_parse(const char *body, size_t len, gw_api api, const gw_limits *lim,
                        gw_request *r, gw_error *err) {
    cm_err rv;
    const char *const *allowed = api == GW_API_CHAT ? chat_keys : completion_keys;

    memset(r, 0, sizeof *r);
    r->api = api;
    sluice__submit__init(&r->submit);
    sluice__sampling_params__init(&r->sampling);
    if ((rv = parse_head(body, len, allowed, lim, r, err)) != CM_OK)
        goto fail;

    rv = api == GW_API_CHAT ? parse_messages(r->root, lim, r, err)
                            : parse_prompt(r->root, lim, r, err);
    if (rv != CM_OK)
        goto fail;
    if ((rv = parse_misc(r->root, lim, r, err)) != CM_OK)
        goto fail;
    if ((rv = parse_sampling(r->root, r, err)) != CM_OK)
        goto fail;
    if ((rv = parse_stop(r->root, lim, r, err)) != CM_OK)
        goto fail;
    if ((rv = parse_logit_bias(r->root, lim, r, err)) != CM_OK)
        goto fail;
    if ((rv = parse_logprobs(r->root, r, err)) != CM_OK)
        goto fail;
    if (api == GW_API_CHAT) {
        if ((rv = parse_response_format(r->root, r, err)) != CM_OK)
            goto fail;
        if ((rv = parse_tools(r->root, lim, r, err)) != CM_OK)
            goto fail;
    }
    r->submit.sampling = &r->sampling;
    /* ~4 bytes per token for English BPE text, plus chat template overhead per message. */
    r->prompt_token_estimate = (uint32_t)(r->prompt_chars / 4 + 8 * r->submit.n_messages + 1);
    return CM_OK;
fail:
    gw_request_fini(r);
    return rv == CM_OK ? CM_ERR_INVALID : rv;
}

void gw_request_fini(gw_request *r) {
    if (r->joined != NULL)
        for (size_t i = 0; i < r->n_joined; i++)
            free(r->joined[i]);
    free(r->joined);
    free(r->msg_store);
    free(r->msg_ptrs);
    free(r->stop_ptrs);
    free(r->bias_store);
    free(r->bias_ptrs);
    free(r->prompt_ids);
    free(r->tool_store);
    free(r->tool_ptrs);
    free(r->call_store);
    free(r->call_ptrs);
    for (size_t i = 0; i < r->n_dumped; i++)
        free(r->dumped[i]);
    free(r->dumped);
    if (r->root != NULL)
        json_decref(r->root);
    memset(r, 0, sizeof *r);
}

void gw_request_envelope(gw_request *r, const gw_submit_ids *ids, Sluice__Envelope *env) {
    sluice__envelope__init(env);
    r->submit.request_id = ids->request_id;
    r->submit.tenant = (char *)ids->tenant;
    r->submit.gateway_request_id = (char *)ids->gateway_id;
    r->submit.has_deadline_unix_ms = ids->deadline_unix_ms != 0;
    r->submit.deadline_unix_ms = ids->deadline_unix_ms;
    r->sampling.has_seed = r->has_seed;
    r->sampling.seed = r->seed + ids->choice;
    r->submit.sampling = &r->sampling;
    env->msg_case = SLUICE__ENVELOPE__MSG_SUBMIT;
    env->submit = &r->submit;
}

/* The ids of a /detokenize body: 1..max_prompt_token_ids integers in 0..INT32_MAX. */
static cm_err parse_token_ids(json_t *root, const gw_limits *lim, gw_tokenize_request *t,
                              gw_error *err) {
    json_t *a = json_object_get(root, "tokens"), *v;
    size_t n, i;
    if (a == NULL || json_is_null(a))
        return gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter", "tokens",
                            "'tokens' is a required property");
    if (!json_is_array(a))
        return wrong_type(err, "tokens", "an array of token ids");
    n = json_array_size(a);
    if (n == 0)
        return bad(err, "tokens", "'%s' must not be empty%s", "");
    if (n > lim->max_prompt_token_ids)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "too_many_tokens", "tokens",
                            "'tokens' has %zu token ids; the limit is %u", n,
                            lim->max_prompt_token_ids);
    t->token_ids = calloc(n, sizeof *t->token_ids);
    if (t->token_ids == NULL)
        return gw_error_set(err, 500, GW_ERRT_SERVER, NULL, NULL, "out of memory"), CM_ERR_NOMEM;
    json_array_foreach(a, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            char param[32];
            snprintf(param, sizeof param, "tokens[%zu]", i);
            return wrong_type(err, param, "a token id (an integer from 0 to 2147483647)");
        }
        t->token_ids[i] = (int32_t)json_integer_value(v);
    }
    t->msg.n_token_ids = n;
    t->msg.token_ids = t->token_ids;
    return CM_OK;
}

/* A /tokenize body: one of prompt (a string) or messages (+ tools), and the three flags. */
static cm_err parse_tokenize(json_t *root, const gw_limits *lim, gw_tokenize_request *t,
                             gw_error *err) {
    gw_request *r = &t->rq;
    json_t *p = json_object_get(root, "prompt"), *m = json_object_get(root, "messages");
    int has_p = p != NULL && !json_is_null(p), has_m = m != NULL && !json_is_null(m);
    int gen = 1, special = 0, strs = 0, special_set = 0;
    cm_err rv;
    if (has_p == has_m)
        return gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_value",
                            has_p ? "prompt" : "messages",
                            "exactly one of 'prompt' or 'messages' must be given");
    if (has_p && !json_is_string(p))
        return wrong_type(err, "prompt", "a string");
    if (json_object_get(root, "add_generation_prompt") != NULL && has_p)
        return bad(err, "add_generation_prompt", "'%s' is only taken with 'messages'%s", "");
    if (json_object_get(root, "tools") != NULL && has_p)
        return bad(err, "tools", "'%s' is only taken with 'messages'%s", "");
    if ((rv = get_bool(root, "add_generation_prompt", &gen, err)) != CM_OK ||
        (rv = get_bool(root, "return_token_strs", &strs, err)) != CM_OK ||
        (rv = get_bool(root, "add_special_tokens", &special, err)) != CM_OK)
        return rv;
    special_set = json_is_boolean(json_object_get(root, "add_special_tokens"));
    r->api = has_m ? GW_API_CHAT : GW_API_COMPLETIONS;
    rv = has_m ? parse_messages(root, lim, r, err) : parse_prompt(root, lim, r, err);
    if (rv == CM_OK && has_m)
        rv = parse_tools(root, lim, r, err);
    if (rv != CM_OK)
        return rv;
    t->msg.n_messages = r->submit.n_messages;
    t->msg.messages = r->submit.messages;
    t->msg.prompt = r->submit.prompt;
    t->msg.n_tools = r->submit.n_tools;
    t->msg.tools = r->submit.tools;
    t->msg.has_add_generation_prompt = has_m;
    t->msg.add_generation_prompt = gen;
    t->msg.has_add_special_tokens = special_set;
    t->msg.add_special_tokens = special;
    t->msg.has_return_token_strs = strs;
    t->msg.return_token_strs = strs;
    return CM_OK;
}

cm_err gw_tokenize_parse(const char *body, size_t len, gw_api api, const gw_limits *lim,
                         gw_tokenize_request *t, gw_error *err) {
    cm_err rv;
    memset(t, 0, sizeof *t);
    t->api = api;
    t->rq.api = api;
    sluice__submit__init(&t->rq.submit);
    sluice__sampling_params__init(&t->rq.sampling);
    sluice__tokenize__init(&t->msg);
    rv = parse_head(body, len, api == GW_API_DETOKENIZE ? detokenize_keys : tokenize_keys, lim,
                    &t->rq, err);
    if (rv == CM_OK)
        rv = api == GW_API_DETOKENIZE ? parse_token_ids(t->rq.root, lim, t, err)
                                      : parse_tokenize(t->rq.root, lim, t, err);
    if (rv != CM_OK) {
        gw_tokenize_request_fini(t);
        return rv;
    }
    t->model = t->rq.model;
    t->msg.model = (char *)t->model;
    return CM_OK;
}

void gw_tokenize_request_fini(gw_tokenize_request *t) {
    gw_request_fini(&t->rq);
    free(t->token_ids);
    memset(t, 0, sizeof *t);
}
