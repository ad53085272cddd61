/*
 * wk_grammar_state: one sequence's parse (see grammar.h).
 *
 * The state is a set of heads, each a BYTES position plus an explicit stack of return
 * positions, advanced byte by byte (three fixed sets: the current one and two to ping-pong
 * through a token's bytes, so a rejected token leaves the state untouched).
 *
 * Masking ORs, for every head, the shared table of its context (its position and top stack
 * frames: tokens accepted whatever the stack below holds) and, for each trie node where a token
 * leaves the context with bytes still to go, an exact walk of that subtree against the head's
 * real stack. A head whose stack is so deep that a table's pushes could cross
 * WK_GRAMMAR_MAX_STACK is walked exactly from the root.
 */
#include "grammar.h"
#include "grammar_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rhead {
    uint32_t pos;
    uint32_t depth;
    uint64_t hash; /* of the stack, to compare heads quickly */
} rhead;

typedef struct rset {
    uint32_t n;
    bool accept;   /* the output so far is a sentence */
    bool overflow; /* more than WK_GRAMMAR_MAX_HEADS heads were needed */
    rhead h[WK_GRAMMAR_MAX_HEADS];
    uint32_t *stacks; /* (WK_GRAMMAR_MAX_HEADS, WK_GRAMMAR_MAX_STACK) */
} rset;

struct wk_grammar_state {
    wk_grammar *g;
    const wk_vocab_index *v;
    gtables *tables;
    rset sets[3];
    uint32_t cur;
    uint64_t *allowed; /* (v->words) */
    uint32_t tmp[WK_GRAMMAR_MAX_STACK];
    bool failed;
    char errmsg[160];
};

static uint64_t stack_hash(const uint32_t *s, uint32_t depth) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ depth;
    for (uint32_t k = 0; k < depth; k++) {
        h ^= s[k];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return h;
}

static void rset_add(rset *out, uint32_t pos, const uint32_t *stack, uint32_t depth) {
    uint64_t hash = stack_hash(stack, depth);
    for (uint32_t k = 0; k < out->n; k++) {
        const rhead *h = &out->h[k];
        if (h->pos == pos && h->depth == depth && h->hash == hash &&
            memcmp(out->stacks + (size_t)k * WK_GRAMMAR_MAX_STACK, stack,
                   depth * sizeof(uint32_t)) == 0)
            return;
    }
    if (out->n >= WK_GRAMMAR_MAX_HEADS) {
        out->overflow = true;
        return;
    }
    rhead *h = &out->h[out->n];
    h->pos = pos;
    h->depth = depth;
    h->hash = hash;
    memcpy(out->stacks + (size_t)out->n * WK_GRAMMAR_MAX_STACK, stack, depth * sizeof(uint32_t));
    out->n++;
}

/* closure expands pos with the stack st->tmp[0..depth) into out. tmp entries at depth and
 * above are scratch; entries below are restored before returning. */
static void closure(wk_grammar_state *st, rset *out, uint32_t pos, uint32_t depth) {
    const wk_grammar *g = st->g;
    const gel *e = &g->el[pos];
    if (e->kind == GEL_BYTES) {
        rset_add(out, pos, st->tmp, depth);
        return;
    }
    if (e->kind == GEL_CALL) {
        const uint32_t r = e->arg;
        uint32_t d = depth;
        uint32_t saved = 0;
        if (g->el[pos + 1].kind != GEL_END) {
            if (depth >= WK_GRAMMAR_MAX_STACK)
                return; /* cut: this path would need a deeper stack */
            saved = st->tmp[depth];
            st->tmp[depth] = pos + 1;
            d = depth + 1;
        }
        for (uint32_t a = g->alt_off[r]; a < g->alt_off[r + 1]; a++)
            closure(st, out, g->alt_first[a], d);
        if (d != depth)
            st->tmp[depth] = saved;
        return;
    }
    if (depth == 0) {
        out->accept = true;
        return;
    }
    uint32_t ret = st->tmp[depth - 1];
    closure(st, out, ret, depth - 1);
    st->tmp[depth - 1] = ret;
}

static void rset_clear(rset *s) {
    s->n = 0;
    s->accept = false;
    s->overflow = false;
}

static void start(wk_grammar_state *st) {
    st->cur = 0;
    st->failed = false;
    st->errmsg[0] = '\0';
    rset *s = &st->sets[0];
    rset_clear(s);
    const wk_grammar *g = st->g;
    for (uint32_t a = g->alt_off[g->root]; a < g->alt_off[g->root + 1]; a++)
        closure(st, s, g->alt_first[a], 0);
}

/* advance feeds one byte from in to out; false when no head survives. */
static bool advance(wk_grammar_state *st, const rset *in, rset *out, uint8_t byte) {
    const wk_grammar *g = st->g;
    rset_clear(out);
    for (uint32_t k = 0; k < in->n; k++) {
        const rhead *h = &in->h[k];
        if (!gbytes_has(&g->sets[g->el[h->pos].arg], byte))
            continue;
        memcpy(st->tmp, in->stacks + (size_t)k * WK_GRAMMAR_MAX_STACK, h->depth * sizeof(uint32_t));
        closure(st, out, h->pos + 1, h->depth);
    }
    return out->n > 0 || out->accept;
}

void wk_grammar_state_free(wk_grammar_state *st) {
    if (st == NULL)
        return;
    for (int k = 0; k < 3; k++)
        free(st->sets[k].stacks);
    free(st->allowed);
    wk_grammar_unref(st->g);
    free(st);
}

cm_err wk_grammar_state_create(wk_grammar *g, const wk_vocab_index *v, wk_grammar_state **out) {
    *out = NULL;
    if (g == NULL)
        return CM_ERR_INVALID;
    wk_grammar_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return CM_ERR_NOMEM;
    st->g = wk_grammar_ref(g);
    st->v = v;
    for (int k = 0; k < 3; k++) {
        st->sets[k].stacks =
            malloc((size_t)WK_GRAMMAR_MAX_HEADS * WK_GRAMMAR_MAX_STACK * sizeof(uint32_t));
        if (st->sets[k].stacks == NULL)
            goto nomem;
    }
    if (v != NULL) {
        st->allowed = malloc((size_t)(v->words ? v->words : 1) * sizeof(uint64_t));
        st->tables = gtables_get(g, v);
        if (st->allowed == NULL || st->tables == NULL)
            goto nomem;
    }
    start(st);
    if (st->sets[0].overflow) {
        /* The start alone needs more parallel stacks than allowed: report at first use. */
        st->failed = true;
        snprintf(st->errmsg, sizeof(st->errmsg),
                 "grammar: more than %u parallel parse stacks at the start", WK_GRAMMAR_MAX_HEADS);
    }
    *out = st;
    return CM_OK;
nomem:
    wk_grammar_state_free(st);
    return CM_ERR_NOMEM;
}

void wk_grammar_state_reset(wk_grammar_state *st) {
    start(st);
    if (st->sets[0].overflow) {
        st->failed = true;
        snprintf(st->errmsg, sizeof(st->errmsg),
                 "grammar: more than %u parallel parse stacks at the start", WK_GRAMMAR_MAX_HEADS);
    }
}

const char *wk_grammar_state_error(const wk_grammar_state *st) {
    return st->errmsg;
}

bool wk_grammar_complete(const wk_grammar_state *st) {
    return !st->failed && st->sets[st->cur].accept;
}

bool wk_grammar_finished(const wk_grammar_state *st) {
    const rset *s = &st->sets[st->cur];
    return !st->failed && s->accept && s->n == 0;
}

/* feed runs len bytes through scratch sets; returns the set index holding the result, or -1
 * (rejected) / -2 (overflow). The current set is not modified. */
static int feed(wk_grammar_state *st, const uint8_t *bytes, size_t len) {
    uint32_t in = st->cur;
    if (len == 0)
        return (int)in;
    for (size_t k = 0; k < len; k++) {
        uint32_t out = (in + 1) % 3;
        if (out == st->cur)
            out = (out + 1) % 3;
        bool alive = advance(st, &st->sets[in], &st->sets[out], bytes[k]);
        if (st->sets[out].overflow)
            return -2;
        if (!alive)
            return -1;
        in = out;
    }
    return (int)in;
}

cm_err wk_grammar_accept_bytes(wk_grammar_state *st, const uint8_t *bytes, size_t len) {
    if (st->failed)
        return CM_ERR_STATE;
    int r = feed(st, bytes, len);
    if (r == -1)
        return CM_ERR_INVALID;
    if (r == -2) {
        st->failed = true;
        snprintf(st->errmsg, sizeof(st->errmsg),
                 "grammar: more than %u parallel parse stacks (ambiguous grammar)",
                 WK_GRAMMAR_MAX_HEADS);
        return CM_ERR_LIMIT;
    }
    st->cur = (uint32_t)r;
    return CM_OK;
}

cm_err wk_grammar_accept(wk_grammar_state *st, int32_t token) {
    if (st->v == NULL || st->failed)
        return CM_ERR_STATE;
    if (token < 0 || (uint32_t)token >= st->v->n_vocab)
        return CM_ERR_INVALID;
    if (st->v->eog[token])
        return st->sets[st->cur].accept ? CM_OK : CM_ERR_INVALID;
    uint32_t len;
    const uint8_t *b = wk_vocab_index_bytes(st->v, token, &len);
    if (len == 0)
        return CM_ERR_INVALID; /* special, control, or empty: never part of the language */
    return wk_grammar_accept_bytes(st, b, len);
}

bool wk_grammar_allowed(wk_grammar_state *st, int32_t token) {
    if (st->v == NULL || st->failed || token < 0 || (uint32_t)token >= st->v->n_vocab)
        return false;
    if (st->v->eog[token])
        return st->sets[st->cur].accept;
    uint32_t len;
    const uint8_t *b = wk_vocab_index_bytes(st->v, token, &len);
    return len > 0 && feed(st, b, len) >= 0;
}

/* ---- mask -------------------------------------------------------------------------------- */

static void or_table(uint64_t *allowed, const gptab *t, uint32_t words) {
    if (t->dense != NULL) {
        for (uint32_t k = 0; k < words; k++)
            allowed[k] |= t->dense[k];
    } else {
        for (uint32_t k = 0; k < t->n_accepted; k++)
            allowed[t->sparse[k] >> 6] |= 1ull << (t->sparse[k] & 63);
    }
}

cm_err wk_grammar_mask(wk_grammar_state *st, float *logits, uint32_t n_logits) {
    if (st->v == NULL || st->failed)
        return CM_ERR_STATE;
    const wk_vocab_index *v = st->v;
    const rset *s = &st->sets[st->cur];
    uint64_t *allowed = st->allowed;
    memset(allowed, 0, (size_t)v->words * sizeof(uint64_t));
    gwalker *w = NULL;
    bool nomem = false;
    for (uint32_t k = 0; k < s->n && !nomem; k++) {
        const rhead *h = &s->h[k];
        const uint32_t *stack = s->stacks + (size_t)k * WK_GRAMMAR_MAX_STACK;
        gptab *t = gtables_find(st->g, st->tables, v, h->pos, stack, h->depth);
        if (t != NULL && h->depth + t->max_local_depth <= WK_GRAMMAR_MAX_STACK) {
            or_table(allowed, t, v->words);
            /* Exits left the context frames: go on popping the rest of the real stack. */
            for (uint32_t x = 0; x < t->n_exits; x++) {
                if (w == NULL && (w = gwalker_acquire(v)) == NULL) {
                    nomem = true;
                    break;
                }
                (void)gwalk_exact(st->g, v, w, h->pos, true, stack, h->depth - t->n_frames,
                                  t->exits[x], allowed);
            }
        } else {
            if (w == NULL && (w = gwalker_acquire(v)) == NULL) {
                nomem = true;
                break;
            }
            (void)gwalk_exact(st->g, v, w, h->pos, false, stack, h->depth, 0, allowed);
        }
    }
    gwalker_release(v, w);
    if (nomem) {
        snprintf(st->errmsg, sizeof(st->errmsg), "grammar: out of memory while masking");
        return CM_ERR_NOMEM;
    }
    bool any = false;
    if (s->accept) {
        for (uint32_t k = 0; k < v->n_eog; k++) {
            uint32_t id = (uint32_t)v->eog_ids[k];
            allowed[id >> 6] |= 1ull << (id & 63);
        }
    }
    /* Apply: a whole word at a time; most words are all-allowed or all-forbidden. */
    uint32_t n = n_logits < v->n_vocab ? n_logits : v->n_vocab;
    for (uint32_t base = 0; base < n; base += 64) {
        uint64_t m = allowed[base >> 6];
        uint32_t lim = n - base < 64 ? n - base : 64;
        if (lim == 64 && m == ~0ull) {
            any = true;
            continue;
        }
        any = any || m != 0;
        for (uint32_t j = 0; j < lim; j++)
            if (!((m >> j) & 1))
                logits[base + j] = -INFINITY;
    }
    for (uint32_t k = n; k < n_logits; k++)
        logits[k] = -INFINITY;
    if (!any) {
        snprintf(st->errmsg, sizeof(st->errmsg),
                 "grammar: no token can continue the output (a parser bound cut every path: "
                 "stack depth %u or %u parallel stacks)",
                 WK_GRAMMAR_MAX_STACK, WK_GRAMMAR_MAX_HEADS);
        return CM_ERR_LIMIT;
    }
    return CM_OK;
}
