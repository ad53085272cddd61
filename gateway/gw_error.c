#include "gw_error.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void copy_str(char *dst, size_t cap, const char *src) {
    if (src == NULL) {
        dst[0] = '\0';
        return;
    }
    snprintf(dst, cap, "%s", src);
}

cm_err gw_error_set(gw_error *e, int status, const char *type, const char *code, const char *param,
                    const char *fmt, ...) {
    va_list ap;
    e->status = status;
    e->type = type;
    e->retry_after_s = 0;
    copy_str(e->code, sizeof e->code, code);
    copy_str(e->param, sizeof e->param, param);
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    if (status == 503)
        return CM_ERR_OVERLOADED;
    if (status == 504)
        return CM_ERR_TIMEOUT;
    if (status >= 500)
        return CM_ERR_INTERNAL;
    return CM_ERR_INVALID;
}

void gw_error_from_worker(gw_error *e, unsigned code, const char *message) {
    const char *msg = message != NULL && message[0] != '\0' ? message : cm_strerror(code);
    switch (code) {
    case CM_ERR_OVERLOADED: /* its queue is full: busy, retry soon */
        gw_error_set(e, 503, GW_ERRT_UNAVAILABLE, "overloaded", NULL, "%s", msg);
        e->retry_after_s = 1;
        break;
    case CM_ERR_CLOSED: /* draining: this worker will not serve it at all */
        gw_error_set(e, 503, GW_ERRT_UNAVAILABLE, "no_capacity", NULL, "%s", msg);
        e->retry_after_s = 1;
        break;
    case CM_ERR_TIMEOUT:
        gw_error_set(e, 504, GW_ERRT_TIMEOUT, "deadline_exceeded", NULL, "%s", msg);
        break;
    case CM_ERR_CONTEXT_LENGTH:
        gw_error_set(e, 400, GW_ERRT_INVALID, "context_length_exceeded", "messages", "%s", msg);
        break;
    case CM_ERR_INVALID:
    case CM_ERR_LIMIT:
    case CM_ERR_UTF8:
    case CM_ERR_UNSUPPORTED:
    case CM_ERR_FORMAT:
        gw_error_set(e, 400, GW_ERRT_INVALID, "invalid_value", NULL, "%s", msg);
        break;
    case CM_ERR_NOT_FOUND:
        gw_error_set(e, 404, GW_ERRT_INVALID, "model_not_found", "model", "%s", msg);
        break;
    default:
        gw_error_set(e, 500, GW_ERRT_SERVER, "internal_error", NULL, "%s", msg);
        break;
    }
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2;
        cp = s[0] & 0x1F;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        cp = s[0] & 0x0F;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int gw_json_escape(const char *str, size_t len, char *out, size_t cap, size_t *pos) {
    const unsigned char *s = (const unsigned char *)str;
    size_t p = *pos;
    size_t i = 0;
    while (i < len) {
        char tmp[8];
        const char *piece = tmp;
        size_t plen;
        size_t adv = 1;
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            plen = 2;
        } else if (c == '\n') {
            piece = "\\n";
            plen = 2;
        } else if (c == '\r') {
            piece = "\\r";
            plen = 2;
        } else if (c == '\t') {
            piece = "\\t";
            plen = 2;
        } else if (c < 0x20 || c == 0x7F) {
            plen = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", c);
        } else if (c < 0x80) {
            tmp[0] = (char)c;
            plen = 1;
        } else {
            adv = utf8_seq(s + i, len - i);
            if (adv == 0) {
                piece = "\\ufffd";
                plen = 6;
                adv = 1;
            } else {
                piece = (const char *)s + i;
                plen = adv;
            }
        }
        if (p + plen + 1 > cap) {
            *pos = p;
            if (cap > 0)
                out[p] = '\0';
            return -1;
        }
        memcpy(out + p, piece, plen);
        p += plen;
        i += adv;
    }
    if (p < cap)
        out[p] = '\0';
    *pos = p;
    return 0;
}

size_t gw_error_json(const gw_error *e, char *out, size_t cap) {
    size_t pos = 0;
    int n;
    if (cap == 0)
        return 0;
#define PUT(lit)                                                                                   \
    do {                                                                                           \
        size_t l_ = strlen(lit);                                                                   \
        if (pos + l_ + 1 > cap)                                                                    \
            goto done;                                                                             \
        memcpy(out + pos, lit, l_);                                                                \
        pos += l_;                                                                                 \
    } while (0)
    PUT("{\"error\":{\"message\":\"");
    if (gw_json_escape(e->message, strlen(e->message), out, cap, &pos) != 0)
        goto done;
    n = snprintf(out + pos, cap - pos, "\",\"type\":\"%s\",\"param\":", e->type);
    if (n < 0 || (size_t)n >= cap - pos)
        goto done;
    pos += (size_t)n;
    if (e->param[0] != '\0') {
        PUT("\"");
        if (gw_json_escape(e->param, strlen(e->param), out, cap, &pos) != 0)
            goto done;
        PUT("\"");
    } else {
        PUT("null");
    }
    PUT(",\"code\":");
    if (e->code[0] != '\0') {
        PUT("\"");
        if (gw_json_escape(e->code, strlen(e->code), out, cap, &pos) != 0)
            goto done;
        PUT("\"");
    } else {
        PUT("null");
    }
    PUT("}}");
#undef PUT
done:
    out[pos < cap ? pos : cap - 1] = '\0';
    return pos;
}
