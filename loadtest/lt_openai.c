#include "lt_openai.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cm_err lt_openai_request_body(const lt_args *a, const lt_prompt *p, char **body_out) {
    *body_out = NULL;
    cm_err rv = CM_ERR_NOMEM;
    json_t *req = json_object();
    if (req == NULL) {
        return CM_ERR_NOMEM;
    }
    int bad = 0;
    bad |= json_object_set_new(req, "model", json_string(a->model));
    if (a->api == LT_API_CHAT) {
        json_t *msgs = NULL;
        if (p->messages != NULL) {
            msgs = json_incref(p->messages);
        } else {
            msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", p->text ? p->text : "");
        }
        bad |= json_object_set_new(req, "messages", msgs);
    } else {
        bad |= json_object_set_new(req, "prompt", json_string(p->text ? p->text : ""));
    }
    /* max_tokens, not max_completion_tokens: every compatible server knows this one. */
    bad |= json_object_set_new(req, "max_tokens", json_integer(p->max_tokens));
    if (a->stream) {
        bad |= json_object_set_new(req, "stream", json_true());
        bad |= json_object_set_new(req, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    if (a->temperature >= 0) {
        bad |= json_object_set_new(req, "temperature", json_real(a->temperature));
    }
    if (a->ignore_eos) {
        bad |= json_object_set_new(req, "ignore_eos", json_true());
    }
    if (bad) {
        /* json_string fails on invalid UTF-8 in the prompt or model name */
        rv = CM_ERR_UTF8;
        goto fail;
    }
    *body_out = json_dumps(req, JSON_COMPACT);
    if (*body_out == NULL) {
        goto fail;
    }
    json_decref(req);
    return CM_OK;
fail:
    json_decref(req);
    return rv;
}

static int nonempty_string(json_t *v) {
    return json_is_string(v) && json_string_length(v) > 0;
}

static uint32_t u32_field(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > (json_int_t)UINT32_MAX) {
        return 0;
    }
    return (uint32_t)json_integer_value(v);
}

static void copy_message(json_t *err_obj, char *msg, size_t msg_len) {
    json_t *m = json_is_object(err_obj) ? json_object_get(err_obj, "message") : err_obj;
    snprintf(msg, msg_len, "%s", json_is_string(m) ? json_string_value(m) : "error");
}

cm_err lt_openai_parse_chunk(const char *data, size_t len, lt_openai_chunk *out) {
    memset(out, 0, sizeof(*out));
    while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\n' || data[len - 1] == '\r')) {
        len--;
    }
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        out->done = 1;
        return CM_OK;
    }
    json_error_t jerr;
    json_t *obj = json_loadb(data, len, 0, &jerr);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return CM_ERR_FORMAT;
    }
    json_t *err = json_object_get(obj, "error");
    if (err != NULL && !json_is_null(err)) {
        out->is_error = 1;
        copy_message(err, out->message, sizeof(out->message));
    }
    json_t *choices = json_object_get(obj, "choices");
    size_t i;
    json_t *c;
    json_array_foreach(choices, i, c) {
        json_t *delta = json_object_get(c, "delta");
        if (delta == NULL) {
            delta = json_object_get(c, "message");
        }
        if (nonempty_string(json_object_get(c, "text")) ||
            nonempty_string(json_object_get(delta, "content")) ||
            nonempty_string(json_object_get(delta, "reasoning_content")) ||
            json_array_size(json_object_get(delta, "tool_calls")) > 0) {
            out->has_content = 1;
        }
        json_t *fr = json_object_get(c, "finish_reason");
        if (fr != NULL && !json_is_null(fr)) {
            out->has_finish_reason = 1;
        }
    }
    json_t *usage = json_object_get(obj, "usage");
    if (json_is_object(usage)) {
        out->has_usage = 1;
        out->prompt_tokens = u32_field(usage, "prompt_tokens");
        out->completion_tokens = u32_field(usage, "completion_tokens");
    }
    json_decref(obj);
    return CM_OK;
}

void lt_openai_error_message(const char *body, size_t len, char *msg, size_t msg_len) {
    if (msg_len == 0) {
        return;
    }
    msg[0] = '\0';
    json_error_t jerr;
    json_t *obj = body != NULL && len > 0 ? json_loadb(body, len, 0, &jerr) : NULL;
    json_t *err = json_is_object(obj) ? json_object_get(obj, "error") : NULL;
    if (err != NULL) {
        copy_message(err, msg, msg_len);
    } else if (body != NULL && len > 0) {
        /* not the OpenAI error shape: keep the start of the body, one line */
        size_t n = len < msg_len - 1 ? len : msg_len - 1;
        for (size_t i = 0; i < n; i++) {
            char ch = body[i];
            msg[i] = (ch == '\n' || ch == '\r' || ch == '\t') ? ' ' : ch;
        }
        msg[n] = '\0';
    }
    json_decref(obj);
}
