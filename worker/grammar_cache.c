/*
 * wk_grammar_cache: compiled grammars by SHA-256 of (root rule, text), a bounded LRU (see
 * grammar.h). A doubly linked list in recency order plus a linear-probe index would be the
 * textbook layout; entries are few (hundreds), so a flat array scanned under the mutex with a
 * use stamp per entry is simpler and fast enough (a compile costs milliseconds, a scan of
 * 1,000 digests microseconds).
 */
#include "grammar.h"
#include "grammar_impl.h"

#include "cm_sha256.h"

#include <stdlib.h>
#include <string.h>

typedef struct centry {
    uint8_t key[CM_SHA256_LEN];
    uint64_t used; /* stamp of the last hit; 0 = empty slot */
    wk_grammar *g;
} centry;

struct wk_grammar_cache {
    pthread_mutex_t mu;
    uint32_t cap;
    centry *e;
    uint64_t clock;
    uint64_t hits, misses;
};

cm_err wk_grammar_cache_create(uint32_t max_entries, wk_grammar_cache **out) {
    *out = NULL;
    if (max_entries == 0 || max_entries > 65536)
        return CM_ERR_INVALID;
    wk_grammar_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CM_ERR_NOMEM;
    c->e = calloc(max_entries, sizeof(centry));
    if (c->e == NULL) {
        free(c);
        return CM_ERR_NOMEM;
    }
    c->cap = max_entries;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return CM_OK;
}

void wk_grammar_cache_destroy(wk_grammar_cache *c) {
    if (c == NULL)
        return;
    for (uint32_t k = 0; k < c->cap; k++)
        wk_grammar_unref(c->e[k].g);
    pthread_mutex_destroy(&c->mu);
    free(c->e);
    free(c);
}

static void cache_key(const char *text, size_t len, const char *root, uint8_t key[CM_SHA256_LEN]) {
    cm_sha256_ctx ctx;
    cm_sha256_init(&ctx);
    /* The root name and a separator that cannot occur in a rule name first. */
    cm_sha256_update(&ctx, root, strlen(root));
    cm_sha256_update(&ctx, "\n::=\n", 5);
    cm_sha256_update(&ctx, text, len);
    cm_sha256_final(&ctx, key);
}

cm_err wk_grammar_cache_get(wk_grammar_cache *c, const char *text, size_t len,
                            const char *root_rule, wk_grammar **out, char *err, size_t errlen) {
    *out = NULL;
    if (root_rule == NULL)
        root_rule = "root";
    if (len > WK_GRAMMAR_MAX_TEXT_BYTES || (text == NULL && len > 0))
        return wk_grammar_compile(text, len, root_rule, out, err, errlen);
    uint8_t key[CM_SHA256_LEN];
    cache_key(text, len, root_rule, key);
    pthread_mutex_lock(&c->mu);
    for (uint32_t k = 0; k < c->cap; k++) {
        centry *e = &c->e[k];
        if (e->used != 0 && memcmp(e->key, key, sizeof(key)) == 0) {
            e->used = ++c->clock;
            c->hits++;
            *out = wk_grammar_ref(e->g);
            pthread_mutex_unlock(&c->mu);
            return CM_OK;
        }
    }
    c->misses++;
    pthread_mutex_unlock(&c->mu);

    /* Compile outside the lock: a slow compile must not block other lookups. */
    wk_grammar *g = NULL;
    cm_err rv = wk_grammar_compile(text, len, root_rule, &g, err, errlen);
    if (rv != CM_OK)
        return rv;

    pthread_mutex_lock(&c->mu);
    centry *slot = NULL;
    for (uint32_t k = 0; k < c->cap; k++) {
        centry *e = &c->e[k];
        if (e->used != 0 && memcmp(e->key, key, sizeof(key)) == 0) {
            /* Another thread compiled it meanwhile: keep theirs. */
            e->used = ++c->clock;
            *out = wk_grammar_ref(e->g);
            pthread_mutex_unlock(&c->mu);
            wk_grammar_unref(g);
            return CM_OK;
        }
        if (slot == NULL || e->used < slot->used)
            slot = e; /* empty (0) or least recently used */
    }
    wk_grammar *evicted = slot->g;
    memcpy(slot->key, key, sizeof(key));
    slot->g = wk_grammar_ref(g);
    slot->used = ++c->clock;
    pthread_mutex_unlock(&c->mu);
    wk_grammar_unref(evicted); /* outside the lock: freeing may take a while */
    *out = g;
    return CM_OK;
}

void wk_grammar_cache_get_stats(wk_grammar_cache *c, wk_grammar_cache_stats *out) {
    pthread_mutex_lock(&c->mu);
    out->hits = c->hits;
    out->misses = c->misses;
    out->entries = 0;
    for (uint32_t k = 0; k < c->cap; k++)
        out->entries += c->e[k].used != 0;
    pthread_mutex_unlock(&c->mu);
}
