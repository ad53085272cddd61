/*
 * Block pool: per-block arrays indexed by block id. Lists are intrusive (int32 links, -1 ends):
 * the free list is a stack through next[], the LRU is a doubly linked list through
 * prev[]/next[] (a block is never on both), the prefix index is a chained hash table through
 * bucket_next[].
 */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

enum { BLOCK_FREE = 0, BLOCK_USED = 1, BLOCK_CACHED = 2 };

struct wk_kv_cache {
    uint32_t n_blocks;
    uint32_t block_tokens;
    uint32_t n_free;
    uint32_t n_cached;
    uint64_t evictions;

    uint8_t *state;    /* (n_blocks) BLOCK_* */
    int32_t *refs;     /* (n_blocks) */
    int32_t *next;     /* (n_blocks) free stack or LRU forward link */
    int32_t *prev;     /* (n_blocks) LRU backward link */
    int32_t free_head; /* top of the free stack */
    int32_t lru_head;  /* least recently used cached block */
    int32_t lru_tail;  /* most recently used cached block */

    /* prefix index */
    uint8_t *published;    /* (n_blocks) 1 when the block is in the index */
    uint64_t *hash;        /* (n_blocks) */
    uint64_t *parent_hash; /* (n_blocks) */
    int32_t *tokens;       /* (n_blocks, block_tokens) the block's token ids */
    int32_t *bucket_next;  /* (n_blocks) chain within a bucket */
    int32_t *buckets;      /* (n_buckets) chain heads */
    uint32_t bucket_mask;  /* n_buckets - 1 */
};

cm_err wk_kv_cache_create(uint32_t n_blocks, uint32_t block_tokens, wk_kv_cache **out) {
    if (n_blocks == 0 || n_blocks > WK_KV_MAX_BLOCKS || block_tokens == 0 ||
        block_tokens > WK_KV_MAX_BLOCK_TOKENS || out == NULL)
        return CM_ERR_INVALID;

    wk_kv_cache *kv = calloc(1, sizeof(*kv));
    if (kv == NULL)
        return CM_ERR_NOMEM;
    uint32_t n_buckets = 1;
    while (n_buckets < n_blocks * 2u)
        n_buckets <<= 1;

    kv->n_blocks = n_blocks;
    kv->block_tokens = block_tokens;
    kv->state = calloc(n_blocks, sizeof(*kv->state));
    kv->refs = calloc(n_blocks, sizeof(*kv->refs));
    kv->next = calloc(n_blocks, sizeof(*kv->next));
    kv->prev = calloc(n_blocks, sizeof(*kv->prev));
    kv->published = calloc(n_blocks, sizeof(*kv->published));
    kv->hash = calloc(n_blocks, sizeof(*kv->hash));
    kv->parent_hash = calloc(n_blocks, sizeof(*kv->parent_hash));
    kv->tokens = calloc((size_t)n_blocks * block_tokens, sizeof(*kv->tokens));
    kv->bucket_next = calloc(n_blocks, sizeof(*kv->bucket_next));
    kv->buckets = calloc(n_buckets, sizeof(*kv->buckets));
    if (kv->state == NULL || kv->refs == NULL || kv->next == NULL || kv->prev == NULL ||
        kv->published == NULL || kv->hash == NULL || kv->parent_hash == NULL ||
        kv->tokens == NULL || kv->bucket_next == NULL || kv->buckets == NULL) {
        wk_kv_cache_destroy(kv);
        return CM_ERR_NOMEM;
    }
    kv->bucket_mask = n_buckets - 1;
    for (uint32_t i = 0; i < n_buckets; i++)
        kv->buckets[i] = -1;
    /* Free stack in ascending order: block 0 is handed out first (easier to read in tests). */
    for (uint32_t i = 0; i < n_blocks; i++) {
        kv->next[i] = (i + 1 < n_blocks) ? (int32_t)(i + 1) : -1;
        kv->prev[i] = -1;
        kv->bucket_next[i] = -1;
    }
    kv->free_head = 0;
    kv->n_free = n_blocks;
    kv->lru_head = -1;
    kv->lru_tail = -1;
    *out = kv;
    return CM_OK;
}

void wk_kv_cache_destroy(wk_kv_cache *kv) {
    if (kv == NULL)
        return;
    free(kv->state);
    free(kv->refs);
    free(kv->next);
    free(kv->prev);
    free(kv->published);
    free(kv->hash);
    free(kv->parent_hash);
    free(kv->tokens);
    free(kv->bucket_next);
    free(kv->buckets);
    free(kv);
}

uint32_t wk_kv_cache_n_blocks(const wk_kv_cache *kv) {
    return kv->n_blocks;
}
uint32_t wk_kv_cache_block_tokens(const wk_kv_cache *kv) {
    return kv->block_tokens;
}
uint32_t wk_kv_cache_n_free(const wk_kv_cache *kv) {
    return kv->n_free;
}
uint32_t wk_kv_cache_n_cached(const wk_kv_cache *kv) {
    return kv->n_cached;
}
uint32_t wk_kv_cache_n_used(const wk_kv_cache *kv) {
    return kv->n_blocks - kv->n_free - kv->n_cached;
}
uint32_t wk_kv_cache_n_available(const wk_kv_cache *kv) {
    return kv->n_free + kv->n_cached;
}
uint64_t wk_kv_cache_evictions(const wk_kv_cache *kv) {
    return kv->evictions;
}

static uint32_t bucket_of(const wk_kv_cache *kv, uint64_t hash) {
    return (uint32_t)(hash ^ (hash >> 32)) & kv->bucket_mask;
}

static void lru_unlink(wk_kv_cache *kv, int32_t b) {
    int32_t p = kv->prev[b], n = kv->next[b];
    if (p >= 0)
        kv->next[p] = n;
    else
        kv->lru_head = n;
    if (n >= 0)
        kv->prev[n] = p;
    else
        kv->lru_tail = p;
    kv->prev[b] = -1;
    kv->next[b] = -1;
}

static void lru_push_tail(wk_kv_cache *kv, int32_t b) {
    kv->prev[b] = kv->lru_tail;
    kv->next[b] = -1;
    if (kv->lru_tail >= 0)
        kv->next[kv->lru_tail] = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
}

static void index_remove(wk_kv_cache *kv, int32_t b) {
    uint32_t bucket = bucket_of(kv, kv->hash[b]);
    int32_t *link = &kv->buckets[bucket];
    while (*link >= 0 && *link != b)
        link = &kv->bucket_next[*link];
    CM_ASSERT(*link == b);
    *link = kv->bucket_next[b];
    kv->bucket_next[b] = -1;
    kv->published[b] = 0;
}

static bool same_key(const wk_kv_cache *kv, int32_t b, uint64_t hash, uint64_t parent_hash,
                     const int32_t *tokens) {
    return kv->hash[b] == hash && kv->parent_hash[b] == parent_hash &&
           memcmp(&kv->tokens[(size_t)b * kv->block_tokens], tokens,
                  kv->block_tokens * sizeof(*tokens)) == 0;
}

static int32_t index_find(const wk_kv_cache *kv, uint64_t hash, uint64_t parent_hash,
                          const int32_t *tokens) {
    for (int32_t b = kv->buckets[bucket_of(kv, hash)]; b >= 0; b = kv->bucket_next[b])
        if (same_key(kv, b, hash, parent_hash, tokens))
            return b;
    return -1;
}

cm_err wk_kv_cache_alloc(wk_kv_cache *kv, int32_t *block) {
    int32_t b;
    if (kv->free_head >= 0) {
        b = kv->free_head;
        kv->free_head = kv->next[b];
        kv->next[b] = -1;
        kv->n_free--;
    } else if (kv->lru_head >= 0) {
        /* Evict the least recently used cached block: its prefix entry goes with it. */
        b = kv->lru_head;
        lru_unlink(kv, b);
        index_remove(kv, b);
        kv->n_cached--;
        kv->evictions++;
    } else {
        return CM_ERR_LIMIT;
    }
    CM_ASSERT(kv->refs[b] == 0 && !kv->published[b]);
    kv->state[b] = BLOCK_USED;
    kv->refs[b] = 1;
    *block = b;
    return CM_OK;
}

void wk_kv_cache_ref(wk_kv_cache *kv, int32_t block) {
    CM_ASSERT(block >= 0 && (uint32_t)block < kv->n_blocks);
    CM_ASSERT(kv->state[block] == BLOCK_USED && kv->refs[block] > 0);
    kv->refs[block]++;
}

void wk_kv_cache_release(wk_kv_cache *kv, int32_t block) {
    CM_ASSERT(block >= 0 && (uint32_t)block < kv->n_blocks);
    CM_ASSERT(kv->state[block] == BLOCK_USED && kv->refs[block] > 0);
    if (--kv->refs[block] > 0)
        return;
    if (kv->published[block]) {
        kv->state[block] = BLOCK_CACHED;
        lru_push_tail(kv, block);
        kv->n_cached++;
    } else {
        kv->state[block] = BLOCK_FREE;
        kv->next[block] = kv->free_head;
        kv->prev[block] = -1;
        kv->free_head = block;
        kv->n_free++;
    }
}

int32_t wk_kv_cache_lookup(wk_kv_cache *kv, uint64_t hash, uint64_t parent_hash,
                           const int32_t *tokens) {
    int32_t b = index_find(kv, hash, parent_hash, tokens);
    if (b < 0)
        return -1;
    if (kv->state[b] == BLOCK_CACHED) {
        lru_unlink(kv, b);
        kv->n_cached--;
        kv->state[b] = BLOCK_USED;
        kv->refs[b] = 1;
    } else {
        CM_ASSERT(kv->state[b] == BLOCK_USED);
        kv->refs[b]++;
    }
    return b;
}

bool wk_kv_cache_publish(wk_kv_cache *kv, int32_t block, uint64_t hash, uint64_t parent_hash,
                         const int32_t *tokens) {
    CM_ASSERT(block >= 0 && (uint32_t)block < kv->n_blocks);
    CM_ASSERT(kv->state[block] == BLOCK_USED);
    if (kv->published[block] || index_find(kv, hash, parent_hash, tokens) >= 0)
        return false;
    kv->hash[block] = hash;
    kv->parent_hash[block] = parent_hash;
    memcpy(&kv->tokens[(size_t)block * kv->block_tokens], tokens,
           kv->block_tokens * sizeof(*tokens));
    uint32_t bucket = bucket_of(kv, hash);
    kv->bucket_next[block] = kv->buckets[bucket];
    kv->buckets[bucket] = block;
    kv->published[block] = 1;
    return true;
}

int32_t wk_kv_cache_ref_count(const wk_kv_cache *kv, int32_t block) {
    if (block < 0 || (uint32_t)block >= kv->n_blocks)
        return -1;
    return kv->refs[block];
}

cm_err wk_kv_cache_check(const wk_kv_cache *kv) {
    uint32_t n_free = 0, n_cached = 0, n_indexed = 0;
    for (int32_t b = kv->free_head; b >= 0; b = kv->next[b]) {
        if (kv->state[b] != BLOCK_FREE || kv->refs[b] != 0 || kv->published[b] ||
            ++n_free > kv->n_blocks)
            return CM_ERR_INTERNAL;
    }
    int32_t prev = -1;
    for (int32_t b = kv->lru_head; b >= 0; b = kv->next[b]) {
        if (kv->state[b] != BLOCK_CACHED || kv->refs[b] != 0 || !kv->published[b] ||
            kv->prev[b] != prev || ++n_cached > kv->n_blocks)
            return CM_ERR_INTERNAL;
        prev = b;
    }
    if (prev != kv->lru_tail || n_free != kv->n_free || n_cached != kv->n_cached)
        return CM_ERR_INTERNAL;
    for (uint32_t i = 0; i <= kv->bucket_mask; i++) {
        for (int32_t b = kv->buckets[i]; b >= 0; b = kv->bucket_next[b]) {
            if (!kv->published[b] || bucket_of(kv, kv->hash[b]) != i || ++n_indexed > kv->n_blocks)
                return CM_ERR_INTERNAL;
        }
    }
    uint32_t n_used = 0, n_published = 0;
    for (uint32_t b = 0; b < kv->n_blocks; b++) {
        if (kv->state[b] == BLOCK_USED) {
            if (kv->refs[b] <= 0)
                return CM_ERR_INTERNAL;
            n_used++;
        }
        n_published += kv->published[b];
    }
    if (n_published != n_indexed || n_used + n_free + n_cached != kv->n_blocks)
        return CM_ERR_INTERNAL;
    return CM_OK;
}
