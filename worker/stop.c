/*
 * wk_stop_matcher (declared in sampler.h): stop strings over a stream of text deltas.
 *
 * Invariant between calls: held[0..n_held) is the longest suffix of the text seen so far that
 * is a proper prefix of some stop string (plus, when a caller passed raw bytes, an incomplete
 * UTF-8 character). Everything before it was already released. A stop match therefore always
 * lies inside held + the new delta, so each push only searches that window.
 */
#include "sampler.h"
#include "tokenizer.h"

#include <string.h>

/* Stops are at most this long so a held prefix plus an incomplete UTF-8 tail fit in held. */
#define STOP_MAX_LEN (WK_MAX_STOP_BYTES - 4)

cm_err wk_stop_init(wk_stop_matcher *m, const char *const *stops, uint32_t n) {
    memset(m, 0, sizeof *m);
    if (n > WK_MAX_STOP_STRINGS) {
        return CM_ERR_LIMIT;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (stops[i] == NULL) {
            return CM_ERR_INVALID;
        }
        size_t len = strlen(stops[i]);
        if (len == 0) {
            memset(m, 0, sizeof *m);
            return CM_ERR_INVALID;
        }
        if (len > STOP_MAX_LEN) {
            memset(m, 0, sizeof *m);
            return CM_ERR_LIMIT;
        }
        if (!wk_utf8_valid(stops[i], len)) {
            memset(m, 0, sizeof *m);
            return CM_ERR_UTF8;
        }
        memcpy(m->stops[i], stops[i], len + 1);
        m->stop_len[i] = (uint32_t)len;
    }
    m->n_stops = n;
    return CM_OK;
}

/* Start of an incomplete UTF-8 character at the end of s[0..len), or len if none. */
static size_t incomplete_tail(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char b = p[len - back];
        if ((b & 0xC0) == 0x80) {
            continue; /* continuation byte: look further back for the lead */
        }
        size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        return need > back ? len - back : len;
    }
    return len;
}

/* True when s[0..len) is a proper prefix of some stop string. */
static bool is_stop_prefix(const wk_stop_matcher *m, const char *s, size_t len) {
    for (uint32_t i = 0; i < m->n_stops; i++) {
        if (len < m->stop_len[i] && memcmp(m->stops[i], s, len) == 0) {
            return true;
        }
    }
    return false;
}

void wk_stop_push(wk_stop_matcher *m, const char *delta, size_t len, char *out, size_t *n_out,
                  bool *stopped) {
    *stopped = false;
    /* Work on held + delta in place in out (capacity >= len + WK_MAX_STOP_BYTES). */
    size_t tl = m->n_held + len;
    memcpy(out, m->held, m->n_held);
    if (len > 0) {
        memcpy(out + m->n_held, delta, len);
    }
    m->n_held = 0;

    /* The earliest complete stop wins; it and everything after it are dropped. */
    size_t first = tl;
    for (uint32_t i = 0; i < m->n_stops; i++) {
        const char *hit = memmem(out, tl, m->stops[i], m->stop_len[i]);
        if (hit != NULL && (size_t)(hit - out) < first) {
            first = (size_t)(hit - out);
        }
    }
    if (first < tl) {
        *n_out = first;
        *stopped = true;
        return;
    }

    /* Hold the longest suffix that could still become a stop. */
    size_t keep_from = tl;
    size_t max_prefix = 0;
    for (uint32_t i = 0; i < m->n_stops; i++) {
        if (m->stop_len[i] - 1 > max_prefix) {
            max_prefix = m->stop_len[i] - 1;
        }
    }
    for (size_t p = tl > max_prefix ? tl - max_prefix : 0; p < tl; p++) {
        if (is_stop_prefix(m, out + p, tl - p)) {
            keep_from = p;
            break;
        }
    }
    /* Never release part of a character: hold an incomplete one at the end too. */
    size_t tail = incomplete_tail(out, tl);
    if (tail < keep_from) {
        keep_from = tail;
    }
    m->n_held = (uint32_t)(tl - keep_from);
    memcpy(m->held, out + keep_from, m->n_held);
    *n_out = keep_from;
}

size_t wk_stop_flush(wk_stop_matcher *m, char *out) {
    size_t n = m->n_held;
    memcpy(out, m->held, n);
    m->n_held = 0;
    return n;
}
