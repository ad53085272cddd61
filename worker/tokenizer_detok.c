/*
 * UTF-8 helpers and the streaming detokenizer (wk_detok_*), see tokenizer.h.
 *
 * The detokenizer emits only complete characters: bytes of a character split across tokens
 * wait in wk_detok.pending; an ill-formed sequence becomes one U+FFFD per maximal subpart
 * (the Unicode-recommended substitution), so output is always valid UTF-8.
 */
#include "tokenizer.h"
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* UTF-8                                                                                     */

size_t wk_utf8_decode(const uint8_t *s, size_t len, uint32_t *cp) {
    if (len == 0) {
        return 0;
    }
    uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    size_t n;
    uint8_t lo = 0x80, hi = 0xBF;
    uint32_t c;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        n = 2;
        c = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        n = 3;
        c = b0 & 0x0F;
        /* Exclude overlongs (E0 80..9F) and surrogates (ED A0..BF). */
        if (b0 == 0xE0) {
            lo = 0xA0;
        } else if (b0 == 0xED) {
            hi = 0x9F;
        }
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        n = 4;
        c = b0 & 0x07;
        if (b0 == 0xF0) {
            lo = 0x90;
        } else if (b0 == 0xF4) {
            hi = 0x8F;
        }
    } else {
        return 0;
    }
    if (len < n) {
        return 0;
    }
    if (s[1] < lo || s[1] > hi) {
        return 0;
    }
    c = (c << 6) | (s[1] & 0x3F);
    for (size_t i = 2; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    return n;
}

bool wk_utf8_valid(const char *s, size_t len) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = wk_utf8_decode(p + i, len - i, &cp);
        if (n == 0) {
            return false;
        }
        i += n;
    }
    return true;
}

size_t wk_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---------------------------------------------------------------------------------------- */
/* Streaming detokenizer                                                                     */

void wk_detok_init(wk_detok *d, const wk_tokenizer *t) {
    d->tok = t;
    d->first = true;
    d->n_pending = 0;
}

/* Length of the longest prefix of s[0..len) that could still grow into one well-formed
 * character (1..3 bytes), or 0 when s[0] cannot start one / the bytes already fail. */
static size_t utf8_incomplete_prefix(const uint8_t *s, size_t len) {
    uint8_t b0 = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 3;
        lo = b0 == 0xE0 ? 0xA0 : 0x80;
        hi = b0 == 0xED ? 0x9F : 0xBF;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 4;
        lo = b0 == 0xF0 ? 0x90 : 0x80;
        hi = b0 == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (len >= need) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : ((b & 0xC0) != 0x80)) {
            return 0;
        }
    }
    return len;
}

/* Length of the maximal subpart of an ill-formed sequence at s (>= 1): the lead byte plus the
 * continuation bytes that were still valid (Unicode's recommended U+FFFD substitution). */
static size_t utf8_bad_len(const uint8_t *s, size_t len) {
    size_t k = 1;
    while (k < len && k < 4 && utf8_incomplete_prefix(s, k + 1) == k + 1) {
        k++;
    }
    return k;
}

/* Walks bytes: complete characters are copied, ill-formed ones become U+FFFD, an incomplete
 * tail is left for later (its length returned in *tail). out may be NULL to count only. */
static size_t utf8_sanitize(const uint8_t *s, size_t len, char *out, bool keep_tail, size_t *tail) {
    size_t i = 0, o = 0;
    *tail = 0;
    while (i < len) {
        uint32_t cp;
        size_t l = s[i] < 0x80 ? 1 : wk_utf8_decode(s + i, len - i, &cp);
        if (l > 0) {
            if (out != NULL) {
                memcpy(out + o, s + i, l);
            }
            o += l;
            i += l;
            continue;
        }
        if (keep_tail && utf8_incomplete_prefix(s + i, len - i) == len - i) {
            *tail = len - i;
            break;
        }
        if (out != NULL) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
        }
        o += 3;
        i += utf8_bad_len(s + i, len - i);
    }
    return o;
}

cm_err wk_detok_push(wk_detok *d, int32_t id, bool render_special, char *out, size_t cap,
                     size_t *n_written) {
    *n_written = 0;
    size_t pl;
    const char *p = wk_tokenizer_piece(d->tok, id, render_special, &pl);
    if (pl == 0) {
        return CM_OK;
    }
    if (d->first && d->tok->model == WK_TOK_MODEL_SPM && d->tok->add_space_prefix && p[0] == ' ') {
        p++;
        pl--;
    }
    d->first = false;
    /* Work on pending + piece; the pending tail is at most 3 bytes. */
    size_t total = d->n_pending + pl;
    uint8_t small[256];
    uint8_t *buf = small;
    if (total > sizeof small) {
        buf = malloc(total);
        if (buf == NULL) {
            return CM_ERR_NOMEM;
        }
    }
    memcpy(buf, d->pending, d->n_pending);
    memcpy(buf + d->n_pending, p, pl);
    size_t tail;
    size_t need = utf8_sanitize(buf, total, NULL, true, &tail);
    cm_err rv = CM_OK;
    if (need > cap || tail > sizeof d->pending) {
        rv = CM_ERR_LIMIT;
        goto done;
    }
    *n_written = utf8_sanitize(buf, total, out, true, &tail);
    memcpy(d->pending, buf + total - tail, tail);
    d->n_pending = (uint32_t)tail;
done:
    if (buf != small) {
        free(buf);
    }
    return rv;
}

size_t wk_detok_flush(wk_detok *d, char *out, size_t cap) {
    size_t tail;
    size_t need = utf8_sanitize(d->pending, d->n_pending, NULL, false, &tail);
    if (need > cap) {
        return 0;
    }
    size_t n = utf8_sanitize(d->pending, d->n_pending, out, false, &tail);
    d->n_pending = 0;
    return n;
}
