/*
 * wk_vocab_index: every token's bytes as the grammar sees them, a byte trie over them and the
 * end-of-generation ids (see grammar.h). Built once per tokenizer; read-only afterwards except
 * for the pool of walk scratch buffers (grammar_walk.c), which has its own mutex.
 */
#include "grammar.h"
#include "grammar_impl.h"
#include "tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t next_serial = 1;

typedef struct tbuild {
    uint32_t *first_child; /* (cap) */
    uint32_t *next_sibling;
    uint8_t *byte;
    int32_t *token;
    uint32_t n, cap;
} tbuild;

static bool tb_grow(tbuild *t) {
    if (t->n < t->cap)
        return true;
    uint32_t nc = t->cap ? t->cap * 2 : 4096;
    uint32_t *fc = realloc(t->first_child, nc * sizeof(uint32_t));
    if (fc == NULL)
        return false;
    t->first_child = fc;
    uint32_t *ns = realloc(t->next_sibling, nc * sizeof(uint32_t));
    if (ns == NULL)
        return false;
    t->next_sibling = ns;
    uint8_t *by = realloc(t->byte, nc);
    if (by == NULL)
        return false;
    t->byte = by;
    int32_t *tk = realloc(t->token, nc * sizeof(int32_t));
    if (tk == NULL)
        return false;
    t->token = tk;
    t->cap = nc;
    return true;
}

static int64_t tb_new(tbuild *t, uint8_t byte) {
    if (!tb_grow(t))
        return -1;
    uint32_t k = t->n++;
    t->first_child[k] = UINT32_MAX;
    t->next_sibling[k] = UINT32_MAX;
    t->byte[k] = byte;
    t->token[k] = -1;
    return k;
}

/* tb_child finds or adds the child of node with byte (sibling lists kept sorted). */
static int64_t tb_child(tbuild *t, uint32_t node, uint8_t byte) {
    uint32_t prev = UINT32_MAX, c = t->first_child[node];
    while (c != UINT32_MAX && t->byte[c] < byte) {
        prev = c;
        c = t->next_sibling[c];
    }
    if (c != UINT32_MAX && t->byte[c] == byte)
        return c;
    int64_t k = tb_new(t, byte);
    if (k < 0)
        return -1;
    t->next_sibling[k] = c;
    if (prev == UINT32_MAX)
        t->first_child[node] = (uint32_t)k;
    else
        t->next_sibling[prev] = (uint32_t)k;
    return k;
}

static void tb_free(tbuild *t) {
    free(t->first_child);
    free(t->next_sibling);
    free(t->byte);
    free(t->token);
}

void wk_vocab_index_free(wk_vocab_index *v) {
    if (v == NULL)
        return;
    while (v->free_walkers != NULL) {
        gwalker *w = v->free_walkers;
        v->free_walkers = *(gwalker **)w; /* first member is the next pointer */
        gwalker_free(w);
    }
    pthread_mutex_destroy(&v->walkers_mu);
    free(v->bytes);
    free(v->off);
    free(v->eog);
    free(v->eog_ids);
    free(v->tok_next);
    free(v->nodes);
    free(v);
}

cm_err wk_vocab_index_create(const wk_tokenizer *tok, wk_vocab_index **out, char *err,
                             size_t errlen) {
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (tok == NULL) {
        if (err != NULL)
            snprintf(err, errlen, "vocab index: no tokenizer");
        return CM_ERR_INVALID;
    }
    uint32_t n = wk_tokenizer_n_vocab(tok);
    tbuild t = {0};
    cm_err rv = CM_ERR_NOMEM;
    wk_vocab_index *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return CM_ERR_NOMEM;
    pthread_mutex_init(&v->walkers_mu, NULL);
    v->serial = atomic_fetch_add(&next_serial, 1);
    v->n_vocab = n;
    v->words = (n + 63) / 64;
    v->off = malloc(((size_t)n + 1) * sizeof(uint32_t));
    v->eog = calloc(n ? n : 1, 1);
    v->tok_next = malloc((n ? n : 1) * sizeof(int32_t));
    if (v->off == NULL || v->eog == NULL || v->tok_next == NULL)
        goto fail;
    size_t total = 0;
    for (uint32_t id = 0; id < n; id++) {
        size_t len = 0;
        (void)wk_tokenizer_piece(tok, (int32_t)id, false, &len);
        if (len > WK_TOK_MAX_TOKEN_BYTES) {
            if (err != NULL)
                snprintf(err, errlen, "vocab index: token %u has %zu bytes", id, len);
            rv = CM_ERR_LIMIT;
            goto fail;
        }
        total += len;
    }
    v->bytes = malloc(total ? total : 1);
    if (v->bytes == NULL)
        goto fail;
    if (tb_new(&t, 0) < 0)
        goto fail;
    size_t at = 0;
    for (uint32_t id = 0; id < n; id++) {
        v->off[id] = (uint32_t)at;
        v->tok_next[id] = -1;
        if (wk_tokenizer_is_eog(tok, (int32_t)id)) {
            v->eog[id] = 1;
            v->n_eog++;
            continue;
        }
        if (wk_tok_is_special(tok, (int32_t)id))
            continue;
        size_t len = 0;
        const char *p = wk_tokenizer_piece(tok, (int32_t)id, false, &len);
        if (len == 0)
            continue;
        memcpy(v->bytes + at, p, len);
        at += len;
        uint32_t node = 0;
        for (size_t k = 0; k < len; k++) {
            int64_t c = tb_child(&t, node, (uint8_t)p[k]);
            if (c < 0)
                goto fail;
            node = (uint32_t)c;
        }
        /* Identical byte strings (possible in a vocabulary): chain them. */
        v->tok_next[id] = t.token[node];
        t.token[node] = (int32_t)id;
        if (len > v->max_len)
            v->max_len = (uint32_t)len;
    }
    v->off[n] = (uint32_t)at;
    v->eog_ids = malloc((v->n_eog ? v->n_eog : 1) * sizeof(int32_t));
    if (v->eog_ids == NULL)
        goto fail;
    for (uint32_t id = 0, k = 0; id < n; id++)
        if (v->eog[id])
            v->eog_ids[k++] = (int32_t)id;
    /* Flatten into preorder (iterative DFS; a node's end is known when its subtree is done). */
    v->n_nodes = t.n;
    v->nodes = malloc((size_t)t.n * sizeof(gtrie_node));
    uint32_t *path = malloc(((size_t)v->max_len + 2) * sizeof(uint32_t)); /* new ids */
    uint32_t *next = malloc(((size_t)v->max_len + 2) * sizeof(uint32_t)); /* old child ids */
    if (v->nodes == NULL || path == NULL || next == NULL) {
        free(path);
        free(next);
        goto fail;
    }
    uint32_t n_out = 0, sp = 0;
    v->nodes[0].byte = 0;
    v->nodes[0].token = t.token[0];
    path[0] = n_out++;
    next[0] = t.first_child[0];
    for (;;) {
        uint32_t c = next[sp];
        if (c == UINT32_MAX) {
            v->nodes[path[sp]].end = n_out;
            if (sp == 0)
                break;
            sp--;
            continue;
        }
        next[sp] = t.next_sibling[c];
        uint32_t id = n_out++;
        v->nodes[id].byte = t.byte[c];
        v->nodes[id].token = t.token[c];
        sp++;
        path[sp] = id;
        next[sp] = t.first_child[c];
    }
    free(path);
    free(next);
    tb_free(&t);
    *out = v;
    return CM_OK;
fail:
    tb_free(&t);
    wk_vocab_index_free(v);
    if (rv == CM_ERR_NOMEM && err != NULL && errlen > 0)
        snprintf(err, errlen, "vocab index: out of memory");
    return rv;
}

uint32_t wk_vocab_index_n_vocab(const wk_vocab_index *v) {
    return v->n_vocab;
}

const uint8_t *wk_vocab_index_bytes(const wk_vocab_index *v, int32_t id, uint32_t *len) {
    if (id < 0 || (uint32_t)id >= v->n_vocab) {
        *len = 0;
        return v->bytes;
    }
    *len = v->off[id + 1] - v->off[id];
    return v->bytes + v->off[id];
}

bool wk_vocab_index_is_eog(const wk_vocab_index *v, int32_t id) {
    return id >= 0 && (uint32_t)id < v->n_vocab && v->eog[id];
}
