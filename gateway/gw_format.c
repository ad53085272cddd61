#include "gw_format.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

cm_err gw_buf_json_str(cm_buf *out, const char *s, size_t len) {
    size_t pos;
    cm_err rv;
    /* Worst case 6 bytes per input byte, plus quotes and NUL. */
    if ((rv = cm_buf_reserve(out, len * 6 + 3)) != CM_OK)
        return rv;
    out->data[out->len++] = '"';
    pos = out->len;
    gw_json_escape(s, len, out->data, out->alloc, &pos);
    out->len = pos;
    out->data[out->len++] = '"';
    out->data[out->len] = '\0';
    return CM_OK;
}

static const char *obj_name(gw_api api, int chunk) {
    if (api == GW_API_CHAT)
        return chunk ? "chat.completion.chunk" : "chat.completion";
    return "text_completion";
}

static cm_err put_lp(cm_buf *out, double lp) {
    /* -inf logprobs (masked tokens) are not JSON numbers: OpenAI clamps to -9999. */
    if (!isfinite(lp) || lp < -9999.0)
        lp = -9999.0;
    return cm_buf_printf(out, "%.6g", lp);
}

static cm_err put_bytes(cm_buf *out, const ProtobufCBinaryData *b) {
    cm_err rv = cm_buf_append_byte(out, '[');
    for (size_t i = 0; i < b->len && rv == CM_OK; i++)
        rv = cm_buf_printf(out, i ? ",%u" : "%u", b->data[i]);
    if (rv == CM_OK)
        rv = cm_buf_append_byte(out, ']');
    return rv;
}

/* One chat logprobs "content" item. */
static cm_err chat_lp_item(cm_buf *out, const Sluice__TokenLogprob *lp) {
    cm_err rv;
    const ProtobufCBinaryData empty = {0, NULL};
    const ProtobufCBinaryData *text = lp->has_text ? &lp->text : &empty;
    if ((rv = cm_buf_append_str(out, "{\"token\":")) != CM_OK ||
        (rv = gw_buf_json_str(out, (const char *)text->data, text->len)) != CM_OK ||
        (rv = cm_buf_append_str(out, ",\"logprob\":")) != CM_OK ||
        (rv = put_lp(out, lp->logprob)) != CM_OK ||
        (rv = cm_buf_append_str(out, ",\"bytes\":")) != CM_OK || (rv = put_bytes(out, text)) ||
        (rv = cm_buf_append_str(out, ",\"top_logprobs\":[")) != CM_OK)
        return rv;
    for (size_t i = 0; i < lp->n_top; i++) {
        const Sluice__TopLogprob *t = lp->top[i];
        const ProtobufCBinaryData *tt = t->has_text ? &t->text : &empty;
        if ((rv = cm_buf_append_str(out, i ? ",{\"token\":" : "{\"token\":")) != CM_OK ||
            (rv = gw_buf_json_str(out, (const char *)tt->data, tt->len)) != CM_OK ||
            (rv = cm_buf_append_str(out, ",\"logprob\":")) != CM_OK ||
            (rv = put_lp(out, t->logprob)) != CM_OK ||
            (rv = cm_buf_append_str(out, ",\"bytes\":")) != CM_OK ||
            (rv = put_bytes(out, tt)) != CM_OK || (rv = cm_buf_append_byte(out, '}')) != CM_OK)
            return rv;
    }
    return cm_buf_append_str(out, "]}");
}

void gw_logprobs_init(gw_logprobs_acc *l, size_t max_bytes) {
    memset(l, 0, sizeof *l);
    cm_buf_init(&l->a, max_bytes);
    cm_buf_init(&l->b, max_bytes);
    cm_buf_init(&l->c, max_bytes);
    cm_buf_init(&l->d, max_bytes);
}

void gw_logprobs_fini(gw_logprobs_acc *l) {
    cm_buf_fini(&l->a);
    cm_buf_fini(&l->b);
    cm_buf_fini(&l->c);
    cm_buf_fini(&l->d);
}

cm_err gw_logprobs_add(gw_logprobs_acc *l, gw_api api, const Sluice__Tokens *t) {
    cm_err rv = CM_OK;
    for (size_t i = 0; i < t->n_logprobs && rv == CM_OK; i++) {
        const Sluice__TokenLogprob *lp = t->logprobs[i];
        const char *sep = l->count ? "," : "";
        if (api == GW_API_CHAT) {
            if ((rv = cm_buf_append_str(&l->a, sep)) == CM_OK)
                rv = chat_lp_item(&l->a, lp);
        } else {
            size_t tl = lp->has_text ? lp->text.len : 0;
            if ((rv = cm_buf_append_str(&l->a, sep)) != CM_OK ||
                (rv = gw_buf_json_str(&l->a, tl ? (const char *)lp->text.data : "", tl)) ||
                (rv = cm_buf_append_str(&l->b, sep)) != CM_OK ||
                (rv = put_lp(&l->b, lp->logprob)) != CM_OK ||
                (rv = cm_buf_append_str(&l->c, sep)) != CM_OK ||
                (rv = cm_buf_append_byte(&l->c, '{')) != CM_OK)
                return rv;
            for (size_t k = 0; k < lp->n_top && rv == CM_OK; k++) {
                const Sluice__TopLogprob *tp = lp->top[k];
                size_t ttl = tp->has_text ? tp->text.len : 0;
                if (k > 0)
                    rv = cm_buf_append_byte(&l->c, ',');
                if (rv == CM_OK)
                    rv = gw_buf_json_str(&l->c, ttl ? (const char *)tp->text.data : "", ttl);
                if (rv == CM_OK)
                    rv = cm_buf_append_byte(&l->c, ':');
                if (rv == CM_OK)
                    rv = put_lp(&l->c, tp->logprob);
            }
            if (rv == CM_OK)
                rv = cm_buf_append_byte(&l->c, '}');
            if (rv == CM_OK)
                rv = cm_buf_printf(&l->d, "%s%zu", sep, l->text_offset);
            l->text_offset += tl;
        }
        l->count++;
    }
    return rv;
}

static const char *or_empty(const cm_buf *b) {
    return b->len ? b->data : "";
}

cm_err gw_logprobs_render(const gw_logprobs_acc *l, gw_api api, cm_buf *out) {
    if (api == GW_API_CHAT)
        return cm_buf_printf(out, "{\"content\":[%s],\"refusal\":null}", or_empty(&l->a));
    return cm_buf_printf(out,
                         "{\"tokens\":[%s],\"token_logprobs\":[%s],\"top_logprobs\":[%s],"
                         "\"text_offset\":[%s]}",
                         or_empty(&l->a), or_empty(&l->b), or_empty(&l->c), or_empty(&l->d));
}

static cm_err put_finish(cm_buf *out, const char *finish_reason) {
    if (finish_reason == NULL)
        return cm_buf_append_str(out, "null");
    return cm_buf_printf(out, "\"%s\"", finish_reason);
}

static cm_err put_usage(cm_buf *out, const gw_usage_out *u) {
    return cm_buf_printf(out,
                         "{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%u,"
                         "\"prompt_tokens_details\":{\"cached_tokens\":%u}}",
                         u->prompt_tokens, u->completion_tokens,
                         u->prompt_tokens + u->completion_tokens, u->cached_tokens);
}

static cm_err put_head(cm_buf *out, gw_api api, int chunk, const char *id, int64_t created,
                       const char *model) {
    cm_err rv = cm_buf_printf(
        out, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%" PRId64 ",\"model\":", id,
        obj_name(api, chunk), created);
    if (rv == CM_OK)
        rv = gw_buf_json_str(out, model, strlen(model));
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, ",\"system_fingerprint\":null,\"choices\":[");
    return rv;
}

static cm_err put_tool_calls(cm_buf *out, const gw_tool_call_out *calls, uint32_t n) {
    cm_err rv = cm_buf_append_str(out, ",\"tool_calls\":[");
    for (uint32_t i = 0; i < n && rv == CM_OK; i++) {
        const gw_tool_call_out *t = &calls[i];
        rv = cm_buf_append_str(out, i ? ",{\"id\":" : "{\"id\":");
        if (rv == CM_OK)
            rv = gw_buf_json_str(out, t->id, strlen(t->id));
        if (rv == CM_OK)
            rv = cm_buf_append_str(out, ",\"type\":\"function\",\"function\":{\"name\":");
        if (rv == CM_OK)
            rv = gw_buf_json_str(out, t->name, strlen(t->name));
        if (rv == CM_OK)
            rv = cm_buf_append_str(out, ",\"arguments\":");
        if (rv == CM_OK)
            rv = gw_buf_json_str(out, t->arguments, t->arguments_len);
        if (rv == CM_OK)
            rv = cm_buf_append_str(out, "}}");
    }
    if (rv == CM_OK)
        rv = cm_buf_append_byte(out, ']');
    return rv;
}

cm_err gw_format_response(cm_buf *out, gw_api api, const char *id, int64_t created,
                          const char *model, const gw_choice_out *choices, uint32_t n,
                          const gw_usage_out *usage) {
    cm_err rv = put_head(out, api, 0, id, created, model);
    for (uint32_t i = 0; i < n && rv == CM_OK; i++) {
        const gw_choice_out *c = &choices[i];
        rv = cm_buf_printf(out, "%s{\"index\":%u,", i ? "," : "", i);
        if (rv == CM_OK && api == GW_API_CHAT) {
            rv = cm_buf_append_str(out, "\"message\":{\"role\":\"assistant\",\"content\":");
            if (rv == CM_OK)
                rv = c->n_tool_calls > 0 && c->text_len == 0
                         ? cm_buf_append_str(out, "null")
                         : gw_buf_json_str(out, c->text, c->text_len);
            if (rv == CM_OK && c->n_tool_calls > 0)
                rv = put_tool_calls(out, c->tool_calls, c->n_tool_calls);
            if (rv == CM_OK)
                rv = cm_buf_append_str(out, ",\"refusal\":null}");
        } else if (rv == CM_OK) {
            rv = cm_buf_append_str(out, "\"text\":");
            if (rv == CM_OK)
                rv = gw_buf_json_str(out, c->text, c->text_len);
        }
        if (rv == CM_OK)
            rv = cm_buf_append_str(out, ",\"logprobs\":");
        if (rv == CM_OK)
            rv = c->logprobs != NULL ? gw_logprobs_render(c->logprobs, api, out)
                                     : cm_buf_append_str(out, "null");
        if (rv == CM_OK)
            rv = cm_buf_append_str(out, ",\"finish_reason\":");
        if (rv == CM_OK)
            rv = put_finish(out, c->finish_reason);
        if (rv == CM_OK)
            rv = cm_buf_append_byte(out, '}');
    }
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, "],\"usage\":");
    if (rv == CM_OK)
        rv = put_usage(out, usage);
    if (rv == CM_OK)
        rv = cm_buf_append_byte(out, '}');
    return rv;
}

cm_err gw_format_chunk(cm_buf *out, gw_api api, const char *id, int64_t created, const char *model,
                       uint32_t index, int first, const char *text, size_t text_len,
                       const char *finish_reason, const Sluice__Tokens *tok, int usage_null) {
    cm_err rv = cm_buf_append_str(out, "data: ");
    if (rv == CM_OK)
        rv = put_head(out, api, 1, id, created, model);
    if (rv == CM_OK)
        rv = cm_buf_printf(out, "{\"index\":%u,", index);
    if (rv == CM_OK && api == GW_API_CHAT) {
        if (finish_reason != NULL && text_len == 0 && !first) {
            /* OpenAI's last chunk of a choice carries an empty delta. */
            rv = cm_buf_append_str(out, "\"delta\":{}");
        } else {
            rv = cm_buf_append_str(out, first ? "\"delta\":{\"role\":\"assistant\",\"content\":"
                                              : "\"delta\":{\"content\":");
            if (rv == CM_OK)
                rv = gw_buf_json_str(out, text, text_len);
            if (rv == CM_OK)
                rv = cm_buf_append_byte(out, '}');
        }
    } else if (rv == CM_OK) {
        rv = cm_buf_append_str(out, "\"text\":");
        if (rv == CM_OK)
            rv = gw_buf_json_str(out, text, text_len);
    }
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, ",\"logprobs\":");
    if (rv == CM_OK) {
        if (tok != NULL && tok->n_logprobs > 0) {
            gw_logprobs_acc acc;
            gw_logprobs_init(&acc, out->max_bytes);
            rv = gw_logprobs_add(&acc, api, tok);
            if (rv == CM_OK)
                rv = gw_logprobs_render(&acc, api, out);
            gw_logprobs_fini(&acc);
        } else {
            rv = cm_buf_append_str(out, "null");
        }
    }
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, ",\"finish_reason\":");
    if (rv == CM_OK)
        rv = put_finish(out, finish_reason);
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, usage_null ? "}],\"usage\":null}\n\n" : "}]}\n\n");
    return rv;
}

cm_err gw_format_tool_chunk(cm_buf *out, const char *id, int64_t created, const char *model,
                            uint32_t index, int first, const Sluice__ToolCallDelta *d,
                            int usage_null) {
    const char *args = d->arguments != NULL ? d->arguments : "";
    cm_err rv = cm_buf_append_str(out, "data: ");
    if (rv == CM_OK)
        rv = put_head(out, GW_API_CHAT, 1, id, created, model);
    if (rv == CM_OK)
        rv = cm_buf_printf(out, "{\"index\":%u,\"delta\":{%s\"tool_calls\":[{\"index\":%u,", index,
                           first ? "\"role\":\"assistant\",\"content\":null," : "", d->index);
    if (rv == CM_OK && d->id != NULL) {
        rv = cm_buf_append_str(out, "\"id\":");
        if (rv == CM_OK)
            rv = gw_buf_json_str(out, d->id, strlen(d->id));
        if (rv == CM_OK)
            rv = cm_buf_append_str(out, ",\"type\":\"function\",\"function\":{\"name\":");
        if (rv == CM_OK)
            rv = gw_buf_json_str(out, d->name != NULL ? d->name : "",
                                 d->name != NULL ? strlen(d->name) : 0);
        if (rv == CM_OK)
            rv = cm_buf_append_str(out, ",\"arguments\":");
    } else if (rv == CM_OK) {
        rv = cm_buf_append_str(out, "\"function\":{\"arguments\":");
    }
    if (rv == CM_OK)
        rv = gw_buf_json_str(out, args, strlen(args));
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, usage_null
                                        ? "}}]},\"logprobs\":null,\"finish_reason\":null}],"
                                          "\"usage\":null}\n\n"
                                        : "}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    return rv;
}

cm_err gw_format_usage_chunk(cm_buf *out, gw_api api, const char *id, int64_t created,
                             const char *model, const gw_usage_out *usage) {
    cm_err rv = cm_buf_append_str(out, "data: ");
    if (rv == CM_OK)
        rv = put_head(out, api, 1, id, created, model);
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, "],\"usage\":");
    if (rv == CM_OK)
        rv = put_usage(out, usage);
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, "}\n\n");
    return rv;
}

cm_err gw_format_error_event(cm_buf *out, const gw_error *e) {
    char body[1024];
    size_t len = gw_error_json(e, body, sizeof body);
    cm_err rv = cm_buf_append_str(out, "data: ");
    if (rv == CM_OK)
        rv = cm_buf_append(out, body, len);
    if (rv == CM_OK)
        rv = cm_buf_append_str(out, "\n\n");
    return rv;
}

size_t gw_format_duration(int64_t ms, char *out, size_t cap) {
    char frac[8] = "";
    int64_t h, m, sec, rest;
    size_t len = 0;
    int n;
    if (cap == 0)
        return 0;
    if (ms < 0)
        ms = 0;
    if (ms > 0 && ms < 1000) {
        n = snprintf(out, cap, "%lldms", (long long)ms);
        return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
    }
    h = ms / 3600000;
    m = ms / 60000 % 60;
    sec = ms / 1000 % 60;
    rest = ms % 1000;
    if (rest > 0) {
        /* ".5", ".25", ".125": milliseconds without trailing zeros */
        snprintf(frac, sizeof frac, ".%03lld", (long long)rest);
        for (size_t k = strlen(frac); k > 1 && frac[k - 1] == '0'; k--)
            frac[k - 1] = '\0';
    }
    if (h > 0)
        n = snprintf(out, cap, "%lldh%lldm%lld%ss", (long long)h, (long long)m, (long long)sec,
                     frac);
    else if (m > 0)
        n = snprintf(out, cap, "%lldm%lld%ss", (long long)m, (long long)sec, frac);
    else
        n = snprintf(out, cap, "%lld%ss", (long long)sec, frac);
    if (n > 0)
        len = (size_t)n >= cap ? cap - 1 : (size_t)n;
    return len;
}
