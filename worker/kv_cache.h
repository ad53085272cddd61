/*
 * wk_kv_cache: the engine's bookkeeping of the paged KV cache (the memory itself belongs to the
 * backend; this module only hands out block ids).
 *
 * A fixed number of blocks, set at create, each holding block_tokens token positions. Every
 * block is in exactly one of three states:
 *   - free:   on the free list, holds nothing of value;
 *   - used:   referenced by one or more live sequences (ref count > 0);
 *   - cached: unreferenced, but its contents are a published prefix block (see below) that a
 *             later prompt may reuse; kept on an LRU list and evicted only when a block is
 *             needed and the free list is empty.
 *
 * Prefix index: a full block whose KV has been computed can be published under the hash of its
 * tokens chained with the hash of the block before it (prefix_cache.h computes the chain). A
 * lookup by (hash, parent hash, tokens) finds it again and takes a reference. The tokens and
 * parent hash are stored and compared on lookup, so a 64-bit hash collision can never hand a
 * sequence the wrong KV.
 *
 * Nothing is allocated after create. Not thread-safe: the engine thread owns it.
 */
#ifndef WK_KV_CACHE_H
#define WK_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

typedef struct wk_kv_cache wk_kv_cache;

/* Bounds on create's arguments (the backend's memory budget decides the real count). */
#define WK_KV_MAX_BLOCKS (1u << 24)
#define WK_KV_MAX_BLOCK_TOKENS 1024u

/* wk_kv_cache_create makes a pool of n_blocks (1..WK_KV_MAX_BLOCKS) blocks of block_tokens
 * (1..WK_KV_MAX_BLOCK_TOKENS) tokens, all free. CM_ERR_INVALID for out-of-range arguments,
 * CM_ERR_NOMEM when allocation fails (*out untouched). Free with wk_kv_cache_destroy. */
cm_err wk_kv_cache_create(uint32_t n_blocks, uint32_t block_tokens, wk_kv_cache **out);

/* wk_kv_cache_destroy frees the pool; NULL is fine. Outstanding block ids become invalid. */
void wk_kv_cache_destroy(wk_kv_cache *kv);

uint32_t wk_kv_cache_n_blocks(const wk_kv_cache *kv);
uint32_t wk_kv_cache_block_tokens(const wk_kv_cache *kv);
uint32_t wk_kv_cache_n_free(const wk_kv_cache *kv);   /* on the free list */
uint32_t wk_kv_cache_n_cached(const wk_kv_cache *kv); /* unreferenced, published, evictable */
uint32_t wk_kv_cache_n_used(const wk_kv_cache *kv);   /* ref count > 0 */
/* wk_kv_cache_n_available: blocks an alloc could return now (free + cached). */
uint32_t wk_kv_cache_n_available(const wk_kv_cache *kv);
/* wk_kv_cache_evictions: cached blocks reclaimed by alloc since create. */
uint64_t wk_kv_cache_evictions(const wk_kv_cache *kv);

/* wk_kv_cache_alloc takes a block with ref count 1: from the free list, else by evicting the
 * least recently used cached block (its prefix entry is dropped). CM_ERR_LIMIT when every
 * block is in use (*block untouched). */
cm_err wk_kv_cache_alloc(wk_kv_cache *kv, int32_t *block);

/* wk_kv_cache_ref adds a reference to a used block. Asserts the block is valid and used. */
void wk_kv_cache_ref(wk_kv_cache *kv, int32_t block);

/* wk_kv_cache_release drops one reference. At zero a published block becomes cached (most
 * recently used end of the LRU), any other block goes back to the free list. Asserts the
 * block is valid and used. Release a sequence's blocks last-to-first so that, under pressure,
 * the tail of a prefix is evicted before its head (a head without its tail is still useful;
 * the reverse is not). */
void wk_kv_cache_release(wk_kv_cache *kv, int32_t block);

/* wk_kv_cache_lookup finds the published block for (hash, parent_hash, tokens[block_tokens])
 * and takes a reference to it (a cached block leaves the LRU). Returns the block id, or -1
 * when there is none. */
int32_t wk_kv_cache_lookup(wk_kv_cache *kv, uint64_t hash, uint64_t parent_hash,
                           const int32_t *tokens);

/* wk_kv_cache_publish registers a used, full, unpublished block under (hash, parent_hash,
 * tokens[block_tokens]) so later lookups can find it. Returns false (and changes nothing) when
 * that key is already published by another block or the block is already published: the
 * caller keeps using its block, which will simply be freed instead of cached. */
bool wk_kv_cache_publish(wk_kv_cache *kv, int32_t block, uint64_t hash, uint64_t parent_hash,
                         const int32_t *tokens);

/* wk_kv_cache_ref_count: references held on block (0 for free or cached); -1 if out of range. */
int32_t wk_kv_cache_ref_count(const wk_kv_cache *kv, int32_t block);

/* wk_kv_cache_check verifies every internal invariant (list membership, counts, index) and
 * returns CM_ERR_INTERNAL on the first violation. For tests; O(n_blocks). */
cm_err wk_kv_cache_check(const wk_kv_cache *kv);

#endif /* WK_KV_CACHE_H */
