#include "gw_request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_limits_default(gw_limits *l) {
    l->max_body_bytes = 1u << 20;
    l->max_messages = 256;
    l->max_prompt_chars = 256 * 1024;
    l->max_tokens = 4096;
    l->default_max_tokens = 0; /* as OpenAI: up to the remaining context */
    l->max_n = 8;
    l->max_stop = 4;
    l->max_stop_chars = 256;
    l->max_logit_bias = 300;
    l->max_prompt_token_ids = 32768;
}

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
static const char *const unsupported_keys[] = {"tools",
                                               "tool_choice",
                                               "functions",
                                               "function_call",
                                               "parallel_tool_calls",
                                               "audio",
                                               "modalities",
                                               "prediction",
                                               "web_search_options",
                                               "store",
                                               "metadata",
                                               "service_tier",
                                               "reasoning_effort",
                                               "guided_json",
                                               "guided_regex",
                                               "guided_choice",
                                               "guided_grammar",
                                               NULL};

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
            if (strcmp(key, "role") != 0 && strcmp(key, "content") != 0 &&
                strcmp(key, "name") != 0 && strcmp(key, "tool_call_id") != 0) {
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

    j = json_object_get(root, "response_format");
    if (j != NULL && !json_is_null(j)) {
        json_t *t = json_object_get(j, "type");
        if (!json_is_object(j) || !json_is_string(t))
            return wrong_type(err, "response_format", "an object with a 'type'");
        if (strcmp(json_string_value(t), "text") != 0)
            return gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_parameter",
                                "response_format",
                                "'response_format' of type '%s' is not supported (only 'text')",
                                json_string_value(t));
    }
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

cm_err gw_request_parse(const char *body, size_t len, gw_api api, const gw_limits *lim,
                        gw_request *r, gw_error *err) {
    json_error_t jerr;
    const char *key;
    json_t *v;
    cm_err rv;
    const char *const *allowed = api == GW_API_CHAT ? chat_keys : completion_keys;

    memset(r, 0, sizeof *r);
    r->api = api;
    sluice__submit__init(&r->submit);
    sluice__sampling_params__init(&r->sampling);
    if (len > lim->max_body_bytes) {
        gw_error_set(err, 413, GW_ERRT_INVALID, "request_too_large", NULL,
                     "request body is %zu bytes; the limit is %zu", len, lim->max_body_bytes);
        return CM_ERR_LIMIT;
    }
    /* Depth and size are bounded by max_body_bytes; jansson parses iteratively enough for
     * 1 MiB bodies (its nesting limit is 2048). */
    r->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (r->root == NULL) {
        rv = gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_json", NULL,
                          "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                          jerr.line, jerr.column);
        goto fail;
    }
    if (!json_is_object(r->root)) {
        rv = gw_error_set(err, 400, GW_ERRT_INVALID, "invalid_json", NULL,
                          "request body must be a JSON object");
        goto fail;
    }
    json_object_foreach(r->root, key, v) {
        if (in_list(unsupported_keys, key) && !json_is_null(v)) {
            rv = gw_error_set(err, 400, GW_ERRT_INVALID, "unsupported_parameter", key,
                              "'%s' is not supported by this server", key);
            goto fail;
        }
        if (!in_list(allowed, key) && !in_list(unsupported_keys, key)) {
            rv = gw_error_set(err, 400, GW_ERRT_INVALID, "unrecognized_parameter", key,
                              "Unrecognized request argument supplied: %s", key);
            goto fail;
        }
    }
    v = json_object_get(r->root, "model");
    if (v == NULL || json_is_null(v)) {
        rv = gw_error_set(err, 400, GW_ERRT_INVALID, "missing_required_parameter", "model",
                          "'model' is a required property");
        goto fail;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 256) {
        rv = wrong_type(err, "model", "a non-empty string of at most 256 bytes");
        goto fail;
    }
    r->model = json_string_value(v);
    r->submit.model = (char *)r->model;

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
    if (r->root != NULL)
        json_decref(r->root);
    memset(r, 0, sizeof *r);
}

static void set_ids(gw_request *r, const gw_submit_ids *ids, Sluice__Envelope *env) {
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

size_t gw_request_packed_size(gw_request *r, const gw_submit_ids *ids) {
    Sluice__Envelope env;
    set_ids(r, ids, &env);
    return sluice__envelope__get_packed_size(&env);
}

size_t gw_request_pack(gw_request *r, const gw_submit_ids *ids, uint8_t *out) {
    Sluice__Envelope env;
    set_ids(r, ids, &env);
    return sluice__envelope__pack(&env, out);
}
