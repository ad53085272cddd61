/*
 * Encoding: text -> token ids (wk_tokenizer_encode, wk_tokenizer_pretokenize).
 *
 * Special tokens split the text into fragments first (only when parse_special). Byte-level
 * BPE then pre-tokenizes each fragment with the family's split rules (hand-written
 * equivalents of its regex) and merges each word's bytes by rank; SentencePiece-style merges
 * the whole fragment's characters by score and falls back to <0xNN> byte tokens. Both merge
 * loops use a binary heap of candidate pairs over a linked list of symbols, so a word of n
 * bytes costs O(n log n) (a hostile 1 MB "word" is fine). A long text's short BPE words are
 * merged once each and then repeated from a bounded per-call cache. Everything is linear in
 * the input up to those log factors (worker_tokenizer_test checks 4x the text < 6x the time).
 */
#include "tokenizer.h"
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* Pre-tokenizers: hand-written equivalents of each family's split regex. They work on code
 * points in [i, n) and return where the match starting at i ends (always > i). */

static bool is_other(uint32_t c) {
    return !wk_ucp_is_space(c) && !wk_ucp_is_letter(c) && !wk_ucp_is_number(c);
}

static uint32_t lower_ascii(uint32_t c) {
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive; returns the length or 0. */
static size_t match_contraction(const uint32_t *cp, size_t i, size_t n, bool ci) {
    if (cp[i] != '\'' || i + 1 >= n) {
        return 0;
    }
    uint32_t a = ci ? lower_ascii(cp[i + 1]) : cp[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return 2;
    }
    if (i + 2 < n) {
        uint32_t b = ci ? lower_ascii(cp[i + 2]) : cp[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
            return 3;
        }
    }
    return 0;
}

/* \s+(?!\S)|\s+ at i (cp[i] is whitespace): a run followed by non-space gives up its last
 * character, so the next word keeps its leading space. */
static size_t match_space_run(const uint32_t *cp, size_t i, size_t n) {
    size_t k = i;
    while (k < n && wk_ucp_is_space(cp[k])) {
        k++;
    }
    if (k < n && k - i > 1) {
        return k - 1;
    }
    return k;
}

static size_t split_gpt2(const uint32_t *cp, size_t i, size_t n) {
    size_t m = match_contraction(cp, i, n, false);
    if (m > 0) {
        return i + m;
    }
    size_t j = i;
    /* ' ?\p{L}+' */
    if (cp[j] == ' ' && j + 1 < n && wk_ucp_is_letter(cp[j + 1])) {
        j++;
    }
    if (wk_ucp_is_letter(cp[j])) {
        while (j < n && wk_ucp_is_letter(cp[j])) {
            j++;
        }
        return j;
    }
    j = i;
    /* ' ?\p{N}+' */
    if (cp[j] == ' ' && j + 1 < n && wk_ucp_is_number(cp[j + 1])) {
        j++;
    }
    if (wk_ucp_is_number(cp[j])) {
        while (j < n && wk_ucp_is_number(cp[j])) {
            j++;
        }
        return j;
    }
    j = i;
    /* ' ?[^\s\p{L}\p{N}]+' */
    if (cp[j] == ' ' && j + 1 < n && is_other(cp[j + 1])) {
        j++;
    }
    if (is_other(cp[j])) {
        while (j < n && is_other(cp[j])) {
            j++;
        }
        return j;
    }
    return match_space_run(cp, i, n);
}

static bool is_crlf(uint32_t c) {
    return c == '\r' || c == '\n';
}

/* Llama 3 / Qwen2: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 * ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t split_llama3(const uint32_t *cp, size_t i, size_t n, size_t max_digits) {
    size_t m = match_contraction(cp, i, n, true);
    if (m > 0) {
        return i + m;
    }
    size_t j = i;
    if (!is_crlf(cp[j]) && !wk_ucp_is_letter(cp[j]) && !wk_ucp_is_number(cp[j]) && j + 1 < n &&
        wk_ucp_is_letter(cp[j + 1])) {
        j++;
    }
    if (wk_ucp_is_letter(cp[j])) {
        while (j < n && wk_ucp_is_letter(cp[j])) {
            j++;
        }
        return j;
    }
    if (wk_ucp_is_number(cp[i])) {
        j = i;
        while (j < n && j - i < max_digits && wk_ucp_is_number(cp[j])) {
            j++;
        }
        return j;
    }
    j = i;
    if (cp[j] == ' ' && j + 1 < n && is_other(cp[j + 1])) {
        j++;
    }
    if (is_other(cp[j])) {
        while (j < n && is_other(cp[j])) {
            j++;
        }
        while (j < n && is_crlf(cp[j])) {
            j++;
        }
        return j;
    }
    /* cp[i] is whitespace here. \s*[\r\n]+: up to the last newline inside the run. */
    size_t k = i;
    size_t last_nl = SIZE_MAX;
    while (k < n && wk_ucp_is_space(cp[k])) {
        if (is_crlf(cp[k])) {
            last_nl = k;
        }
        k++;
    }
    if (last_nl != SIZE_MAX) {
        return last_nl + 1;
    }
    return match_space_run(cp, i, n);
}

/* Splits cp[0..n) into pieces; writes piece end indices (code points) into ends. Returns the
 * number of pieces (<= n). Linear in n: every split function scans only the piece it returns
 * (plus one look-ahead character), and the SmolLM branch finds the next digit once per
 * stretch between digits, not once per piece. */
static size_t pretokenize_cps(wk_tok_pre pre, const uint32_t *cp, size_t n, uint32_t *ends) {
    size_t np = 0;
    size_t i = 0;
    size_t seg_end = 0; /* SmolLM: the first digit at or after i (or n), valid while i < it */
    while (i < n) {
        size_t e;
        if (pre == WK_TOK_PRE_SMOLLM) {
            /* Digits first split every \p{N} out on its own; the GPT-2 regex then runs
             * inside each stretch between them, which therefore ends at the next digit. */
            if (wk_ucp_is_number(cp[i])) {
                e = i + 1;
            } else {
                if (seg_end <= i) {
                    /* Pieces inside a stretch never cross its end, so this search runs once
                     * per stretch: every code point is looked at once in total. */
                    seg_end = i;
                    while (seg_end < n && !wk_ucp_is_number(cp[seg_end])) {
                        seg_end++;
                    }
                }
                e = split_gpt2(cp, i, seg_end);
            }
        } else if (pre == WK_TOK_PRE_LLAMA3) {
            e = split_llama3(cp, i, n, 3);
        } else if (pre == WK_TOK_PRE_QWEN2) {
            e = split_llama3(cp, i, n, 1);
        } else {
            e = split_gpt2(cp, i, n);
        }
        ends[np++] = (uint32_t)e;
        i = e;
    }
    return np;
}

/* Decodes valid UTF-8 into code points and their byte offsets (offs has n + 1 entries). */
static cm_err decode_cps(const char *text, size_t len, uint32_t *cps, uint32_t *offs,
                         size_t *n_cps) {
    const uint8_t *p = (const uint8_t *)text;
    size_t n = 0, i = 0;
    while (i < len) {
        uint32_t c;
        size_t l = wk_utf8_decode(p + i, len - i, &c);
        if (l == 0) {
            return CM_ERR_UTF8;
        }
        cps[n] = c;
        offs[n] = (uint32_t)i;
        n++;
        i += l;
    }
    offs[n] = (uint32_t)len;
    *n_cps = n;
    return CM_OK;
}

cm_err wk_tokenizer_pretokenize(wk_tok_pre pre, const char *text, size_t len, uint32_t *piece_lens,
                                size_t cap, size_t *n_pieces) {
    *n_pieces = 0;
    if (len > UINT32_MAX / 2) {
        return CM_ERR_LIMIT;
    }
    uint32_t *cps = malloc(sizeof(uint32_t) * (len + 1));
    uint32_t *offs = malloc(sizeof(uint32_t) * (len + 1));
    uint32_t *ends = malloc(sizeof(uint32_t) * (len + 1));
    cm_err rv = CM_ERR_NOMEM;
    if (cps == NULL || offs == NULL || ends == NULL) {
        goto done;
    }
    size_t n;
    rv = decode_cps(text, len, cps, offs, &n);
    if (rv != CM_OK) {
        goto done;
    }
    size_t np = pretokenize_cps(pre, cps, n, ends);
    if (np > cap) {
        rv = CM_ERR_LIMIT;
        goto done;
    }
    size_t start = 0;
    for (size_t k = 0; k < np; k++) {
        piece_lens[k] = offs[ends[k]] - offs[start];
        start = ends[k];
    }
    *n_pieces = np;
done:
    free(cps);
    free(offs);
    free(ends);
    return rv;
}

/* ---------------------------------------------------------------------------------------- */
/* Merging                                                                                   */

/* A symbol of the word being merged: doubly linked list over the initial characters. */
typedef struct sym {
    int32_t id;   /* BPE: token id; SPM: unused */
    uint32_t off; /* SPM: byte offset in the escaped text */
    uint32_t len; /* byte length; 0 = merged away */
    int32_t prev, next;
} sym;

/*
 * A merge candidate (left, right = left's neighbour when pushed): lower (prio, left) pops
 * first. It is stale when either side died or the right side grew since; the left side cannot
 * have changed while both are alive and adjacent (it only grows by absorbing its right
 * neighbour), so the right side's length is all that needs recording.
 */
typedef struct cand {
    uint32_t prio; /* BPE: merge rank; SPM: score order (higher score -> lower prio) */
    int32_t left, right;
    uint32_t right_len;
} cand;

/*
 * BPE words already merged in this call. Natural text repeats its words, so a long prompt
 * merges each distinct word once. Bounded: short words only, a fixed slot table filled to
 * half, fixed arenas; once full, later words are merged as usual. Only for long texts, where
 * it pays for its tables.
 */
#define WC_MIN_TEXT_BYTES 4096u
#define WC_SLOTS 8192u /* power of two */
#define WC_MAX_WORD_BYTES 48u
#define WC_ARENA_BYTES (1u << 18)
#define WC_ARENA_IDS (1u << 16)

typedef struct wc_slot {
    uint32_t hash;
    uint32_t word_off; /* in bytes */
    uint32_t ids_off;  /* in ids */
    uint16_t word_len; /* 0 = empty */
    uint16_t n_ids;
} wc_slot;

typedef struct word_cache {
    wc_slot *slots; /* (WC_SLOTS) or NULL: no caching */
    char *bytes;    /* (WC_ARENA_BYTES) */
    int32_t *ids;   /* (WC_ARENA_IDS) */
    uint32_t n_bytes, n_ids, used;
} word_cache;

/* Per-call scratch, grown on demand: words are usually short, so the symbol and heap arrays
 * stay small unless the input really has a long word. */
typedef struct scratch {
    uint32_t *cps;  /* (len + 1) code points of the fragment (BPE) */
    uint32_t *offs; /* (len + 1) their byte offsets */
    uint32_t *ends; /* (len + 1) pre-tokenized piece ends, in code points */
    char *buf;      /* BPE: mapped word for whole-word lookup; SPM: escaped text */
    sym *syms;
    size_t sym_cap;
    cand *heap; /* binary heap, capacity 2 * sym_cap: n - 1 initial pairs plus at most one net
                   push per merge */
    size_t heap_n;
    word_cache cache; /* BPE, long texts only */
} scratch;

typedef struct emitter {
    int32_t *out;
    size_t cap;
    size_t n;
} emitter;

static cm_err emit(emitter *e, int32_t id) {
    if (e->n >= e->cap) {
        return CM_ERR_LIMIT;
    }
    e->out[e->n++] = id;
    return CM_OK;
}

static cm_err reserve_syms(scratch *sc, size_t n) {
    if (n <= sc->sym_cap) {
        return CM_OK;
    }
    size_t cap = sc->sym_cap < 64 ? 64 : sc->sym_cap;
    while (cap < n) {
        cap *= 2;
    }
    sym *s = realloc(sc->syms, sizeof(sym) * cap);
    if (s == NULL) {
        return CM_ERR_NOMEM;
    }
    sc->syms = s;
    cand *h = realloc(sc->heap, sizeof(cand) * 2 * cap);
    if (h == NULL) {
        return CM_ERR_NOMEM;
    }
    sc->heap = h;
    sc->sym_cap = cap;
    return CM_OK;
}

static bool cand_less(const cand *a, const cand *b) {
    if (a->prio != b->prio) {
        return a->prio < b->prio;
    }
    return a->left < b->left;
}

static void heap_push(scratch *sc, uint32_t prio, int32_t left, int32_t right) {
    cand *h = sc->heap;
    if (sc->heap_n >= 2 * sc->sym_cap) {
        return; /* cannot happen: the bound is proved in struct scratch */
    }
    size_t i = sc->heap_n++;
    h[i] = (cand){prio, left, right, sc->syms[right].len};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&h[i], &h[p])) {
            break;
        }
        cand tmp = h[i];
        h[i] = h[p];
        h[p] = tmp;
        i = p;
    }
}

static cand heap_pop(scratch *sc) {
    cand *h = sc->heap;
    cand top = h[0];
    h[0] = h[--sc->heap_n];
    size_t i = 0, n = sc->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_less(&h[l], &h[m])) {
            m = l;
        }
        if (r < n && cand_less(&h[r], &h[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        cand tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
    return top;
}

/* Links syms[0..n) into a list. */
static void link_syms(sym *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
}

/* Pops candidates until the heap is empty; returns the popped live ones one by one. */
static bool next_live(scratch *sc, cand *out) {
    while (sc->heap_n > 0) {
        cand c = heap_pop(sc);
        const sym *l = &sc->syms[c.left], *r = &sc->syms[c.right];
        if (l->len != 0 && r->len == c.right_len && l->next == c.right) {
            *out = c;
            return true;
        }
    }
    return false;
}

/* Joins c.right into c.left. */
static void absorb(sym *s, const cand *c) {
    sym *l = &s[c->left], *r = &s[c->right];
    l->len += r->len;
    l->next = r->next;
    if (r->next >= 0) {
        s[r->next].prev = c->left;
    }
    r->len = 0;
}

static void bpe_try_push(const wk_tokenizer *t, scratch *sc, int32_t left) {
    if (left < 0 || sc->syms[left].next < 0) {
        return;
    }
    int32_t right = sc->syms[left].next;
    uint32_t rank;
    int32_t result;
    if (wk_tok_merge_lookup(t, sc->syms[left].id, sc->syms[right].id, &rank, &result)) {
        heap_push(sc, rank, left, right);
    }
}

/* Byte-level BPE on one pre-tokenized word. */
static cm_err bpe_word(const wk_tokenizer *t, const uint8_t *w, size_t wl, scratch *sc,
                       emitter *e) {
    if (t->pre == WK_TOK_PRE_LLAMA3) {
        /* Llama 3 sets ignore_merges: a word that is a token is taken whole. */
        size_t ml = 0;
        for (size_t i = 0; i < wl; i++) {
            ml += wk_utf8_encode(t->byte_cp[w[i]], sc->buf + ml);
        }
        int32_t id = wk_tok_lookup(t, sc->buf, ml);
        if (id >= 0) {
            return emit(e, id);
        }
    }
    cm_err rv = reserve_syms(sc, wl);
    if (rv != CM_OK) {
        return rv;
    }
    sym *s = sc->syms;
    size_t ns = 0;
    for (size_t i = 0; i < wl; i++) {
        int32_t id = t->byte_tok[w[i]];
        if (id < 0) {
            continue; /* a byte the vocabulary lacks: dropped, as HF tokenizers do */
        }
        s[ns].id = id;
        s[ns].len = 1;
        ns++;
    }
    if (ns == 0) {
        return CM_OK;
    }
    link_syms(s, ns);
    sc->heap_n = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        bpe_try_push(t, sc, (int32_t)i);
    }
    cand c;
    while (next_live(sc, &c)) {
        uint32_t rank;
        int32_t result;
        if (!wk_tok_merge_lookup(t, s[c.left].id, s[c.right].id, &rank, &result)) {
            continue; /* cannot happen: the pair was a merge when pushed and is unchanged */
        }
        absorb(s, &c);
        s[c.left].id = result;
        bpe_try_push(t, sc, s[c.left].prev);
        bpe_try_push(t, sc, c.left);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        rv = emit(e, s[i].id);
        if (rv != CM_OK) {
            return rv;
        }
    }
    return CM_OK;
}

static uint32_t word_hash(const uint8_t *w, size_t wl) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < wl; i++) {
        h = (h ^ w[i]) * 16777619u;
    }
    return h;
}

/* The slot holding word w, or the empty slot where it would go. */
static wc_slot *cache_find(const word_cache *c, const uint8_t *w, size_t wl, uint32_t h) {
    for (uint32_t i = h & (WC_SLOTS - 1);; i = (i + 1) & (WC_SLOTS - 1)) {
        wc_slot *sl = &c->slots[i];
        if (sl->word_len == 0 ||
            (sl->hash == h && sl->word_len == wl && memcmp(c->bytes + sl->word_off, w, wl) == 0)) {
            return sl; /* terminates: the table is never more than half full */
        }
    }
}

/* Emits w's cached ids; false when w is not cached (nothing emitted then). */
static bool cache_emit(const word_cache *c, const uint8_t *w, size_t wl, emitter *e, cm_err *rv) {
    if (c->slots == NULL || wl == 0 || wl > WC_MAX_WORD_BYTES) {
        return false;
    }
    const wc_slot *sl = cache_find(c, w, wl, word_hash(w, wl));
    if (sl->word_len == 0) {
        return false;
    }
    *rv = CM_OK;
    for (uint32_t k = 0; k < sl->n_ids && *rv == CM_OK; k++) {
        *rv = emit(e, c->ids[sl->ids_off + k]);
    }
    return true;
}

/* Remembers that w merges to ids[0..n), while there is room. */
static void cache_put(word_cache *c, const uint8_t *w, size_t wl, const int32_t *ids, size_t n) {
    if (c->slots == NULL || wl == 0 || wl > WC_MAX_WORD_BYTES || c->used >= WC_SLOTS / 2 ||
        c->n_bytes + wl > WC_ARENA_BYTES || c->n_ids + n > WC_ARENA_IDS) {
        return;
    }
    uint32_t h = word_hash(w, wl);
    wc_slot *sl = cache_find(c, w, wl, h);
    if (sl->word_len != 0) {
        return;
    }
    memcpy(c->bytes + c->n_bytes, w, wl);
    memcpy(c->ids + c->n_ids, ids, n * sizeof *ids);
    *sl = (wc_slot){h, c->n_bytes, c->n_ids, (uint16_t)wl, (uint16_t)n};
    c->n_bytes += (uint32_t)wl;
    c->n_ids += (uint32_t)n;
    c->used++;
}

static cm_err bpe_fragment(const wk_tokenizer *t, const char *text, size_t len, scratch *sc,
                           emitter *e) {
    size_t n;
    cm_err rv = decode_cps(text, len, sc->cps, sc->offs, &n);
    if (rv != CM_OK) {
        return rv; /* cannot happen: the caller validated the text */
    }
    size_t np = pretokenize_cps(t->pre, sc->cps, n, sc->ends);
    size_t start = 0;
    for (size_t k = 0; k < np; k++) {
        uint32_t b0 = sc->offs[start], b1 = sc->offs[sc->ends[k]];
        const uint8_t *w = (const uint8_t *)text + b0;
        start = sc->ends[k];
        if (cache_emit(&sc->cache, w, b1 - b0, e, &rv)) {
            if (rv != CM_OK) {
                return rv;
            }
            continue;
        }
        size_t first = e->n;
        rv = bpe_word(t, w, b1 - b0, sc, e);
        if (rv != CM_OK) {
            return rv;
        }
        cache_put(&sc->cache, w, b1 - b0, e->out + first, e->n - first);
    }
    return CM_OK;
}

/* SPM priority: the merged token's score, highest first, as an order-preserving integer. */
static uint32_t score_prio(float score) {
    uint32_t bits;
    memcpy(&bits, &score, sizeof bits);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return UINT32_MAX - bits;
}

static void spm_try_push(const wk_tokenizer *t, scratch *sc, int32_t left) {
    if (left < 0 || sc->syms[left].next < 0) {
        return;
    }
    int32_t right = sc->syms[left].next;
    const sym *l = &sc->syms[left];
    int32_t id = wk_tok_lookup(t, sc->buf + l->off, l->len + sc->syms[right].len);
    if (id >= 0) {
        heap_push(sc, score_prio(t->score[id]), left, right);
    }
}

/* SentencePiece-style: merge adjacent characters into the highest-scoring token until none
 * applies; leftovers that are not tokens fall back to <0xNN> byte tokens (or unk). */
static cm_err spm_fragment(const wk_tokenizer *t, const char *text, size_t len, bool space_prefix,
                           scratch *sc, emitter *e) {
    char *buf = sc->buf;
    size_t bl = 0;
    size_t n_chars = 0;
    if (space_prefix) {
        memcpy(buf, "\xE2\x96\x81", 3);
        bl = 3;
        n_chars++;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + bl, "\xE2\x96\x81", 3);
            bl += 3;
        } else {
            buf[bl++] = text[i];
        }
        n_chars += ((uint8_t)text[i] & 0xC0) != 0x80;
    }
    cm_err rv = reserve_syms(sc, n_chars);
    if (rv != CM_OK) {
        return rv;
    }
    sym *s = sc->syms;
    size_t ns = 0;
    for (size_t i = 0; i < bl && ns < n_chars;) {
        uint32_t c;
        size_t l = wk_utf8_decode((const uint8_t *)buf + i, bl - i, &c);
        if (l == 0) {
            l = 1; /* cannot happen: the text was validated */
        }
        s[ns].id = -1;
        s[ns].off = (uint32_t)i;
        s[ns].len = (uint32_t)l;
        ns++;
        i += l;
    }
    if (ns == 0) {
        return CM_OK;
    }
    link_syms(s, ns);
    sc->heap_n = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        spm_try_push(t, sc, (int32_t)i);
    }
    cand c;
    while (next_live(sc, &c)) {
        absorb(s, &c);
        spm_try_push(t, sc, s[c.left].prev);
        spm_try_push(t, sc, c.left);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        int32_t id = wk_tok_lookup(t, buf + s[i].off, s[i].len);
        if (id >= 0) {
            rv = emit(e, id);
            if (rv != CM_OK) {
                return rv;
            }
            continue;
        }
        for (uint32_t k = 0; k < s[i].len; k++) {
            int32_t b = t->byte_tok[(uint8_t)buf[s[i].off + k]];
            if (b < 0) {
                b = t->unk;
            }
            if (b >= 0) {
                rv = emit(e, b);
                if (rv != CM_OK) {
                    return rv;
                }
            }
        }
    }
    return CM_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Lower bound                                                                               */

size_t wk_tokenizer_min_tokens(const wk_tokenizer *t, const char *text, size_t len) {
    /* Each token covers a run of the text's bytes (dropped bytes belong to none), and every
     * byte b it covers has byte_weight[b] <= 65536 / (the token's length): so a token's bytes
     * weigh at most 65536 in all, and the total weight / 65536 cannot exceed the token count.
     * The weights are floors, which only lowers the bound. */
    uint64_t w = 0;
    for (size_t i = 0; i < len; i++) {
        w += t->byte_weight[(uint8_t)text[i]];
    }
    return (size_t)(w >> 16);
}

/* ---------------------------------------------------------------------------------------- */
/* Entry point                                                                               */

/* Longest special token whose text starts at text[pos], or -1. */
static int32_t match_special(const wk_tokenizer *t, const char *text, size_t len, size_t pos) {
    if (!t->special_first[(uint8_t)text[pos]]) {
        return -1;
    }
    for (uint32_t k = 0; k < t->n_special_lens; k++) {
        size_t sl = t->special_lens[k];
        if (sl > len - pos) {
            continue;
        }
        int32_t id = wk_tok_lookup(t, text + pos, sl);
        if (id >= 0 && wk_tok_is_special(t, id)) {
            return id;
        }
    }
    return -1;
}

cm_err wk_tokenizer_encode(const wk_tokenizer *t, const char *text, size_t len, bool add_bos,
                           bool parse_special, int32_t *out, size_t cap, size_t *n_out) {
    *n_out = 0;
    if (text == NULL && len > 0) {
        return CM_ERR_INVALID;
    }
    if (!wk_utf8_valid(text, len)) {
        return CM_ERR_UTF8;
    }
    if (len > (UINT32_MAX - 16) / 4) {
        return CM_ERR_LIMIT; /* offsets are 32-bit; prompts are bounded far below this */
    }
    emitter e = {out, cap, 0};
    cm_err rv = CM_OK;
    scratch sc;
    memset(&sc, 0, sizeof sc);
    if (t->model == WK_TOK_MODEL_BPE) {
        sc.cps = malloc(sizeof(uint32_t) * (len + 1));
        sc.offs = malloc(sizeof(uint32_t) * (len + 1));
        sc.ends = malloc(sizeof(uint32_t) * (len + 1));
        sc.buf = malloc(2 * len + 8); /* a byte maps to at most a 2-byte character */
        if (len >= WC_MIN_TEXT_BYTES) {
            /* Optional: without it (allocation failed) every word is merged. */
            sc.cache.slots = calloc(WC_SLOTS, sizeof(wc_slot));
            sc.cache.bytes = malloc(WC_ARENA_BYTES);
            sc.cache.ids = malloc(sizeof(int32_t) * WC_ARENA_IDS);
            if (sc.cache.slots == NULL || sc.cache.bytes == NULL || sc.cache.ids == NULL) {
                free(sc.cache.slots);
                sc.cache.slots = NULL;
            }
        }
    } else {
        sc.buf = malloc(3 * len + 8); /* ' ' becomes the 3-byte U+2581 */
    }
    if (sc.buf == NULL ||
        (t->model == WK_TOK_MODEL_BPE && (sc.cps == NULL || sc.offs == NULL || sc.ends == NULL))) {
        rv = CM_ERR_NOMEM;
        goto done;
    }
    if (add_bos && t->add_bos && t->bos >= 0) {
        rv = emit(&e, t->bos);
        if (rv != CM_OK) {
            goto done;
        }
    }
    bool prev_special = true; /* SPM: a space prefix starts the text and follows specials */
    size_t pos = 0;
    while (pos < len) {
        size_t frag_end = len;
        int32_t special = -1;
        if (parse_special && t->n_special > 0) {
            for (size_t q = pos; q < len; q++) {
                special = match_special(t, text, len, q);
                if (special >= 0) {
                    frag_end = q;
                    break;
                }
            }
        }
        if (frag_end > pos) {
            if (t->model == WK_TOK_MODEL_BPE) {
                rv = bpe_fragment(t, text + pos, frag_end - pos, &sc, &e);
            } else {
                rv = spm_fragment(t, text + pos, frag_end - pos,
                                  t->add_space_prefix && prev_special, &sc, &e);
            }
            if (rv != CM_OK) {
                goto done;
            }
            prev_special = false;
        }
        if (special >= 0) {
            rv = emit(&e, special);
            if (rv != CM_OK) {
                goto done;
            }
            size_t sl;
            wk_tok_text(t, special, &sl);
            pos = frag_end + sl;
            prev_special = true;
        } else {
            pos = frag_end;
        }
    }
done:
    free(sc.cps);
    free(sc.offs);
    free(sc.ends);
    free(sc.buf);
    free(sc.syms);
    free(sc.heap);
    free(sc.cache.slots);
    free(sc.cache.bytes);
    free(sc.cache.ids);
    *n_out = e.n;
    return rv;
}
