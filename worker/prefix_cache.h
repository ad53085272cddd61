/*
 * wk_prefix_cache: prefix caching on top of the KV block pool (kv_cache.h).
 *
 * A full block of a sequence is identified by a hash chain: the hash of block i mixes the hash
 * of block i-1 (WK_PREFIX_ROOT for block 0) with the block's block_tokens token ids, so equal
 * hashes mean equal whole prefixes, not just equal blocks. The pool stores the tokens and the
 * parent hash too, so a collision is detected instead of trusted.
 *
 * Stateless helpers; the index and the ref counts live in the pool.
 */
#ifndef WK_PREFIX_CACHE_H
#define WK_PREFIX_CACHE_H

#include <stdint.h>

#include "kv_cache.h"

/* The parent hash of a sequence's first block. */
#define WK_PREFIX_ROOT UINT64_C(0x5bd1e9955bd1e995)

/* wk_prefix_hash: the chained hash of one block of n token ids under parent. Pure. */
uint64_t wk_prefix_hash(uint64_t parent, const int32_t *tokens, uint32_t n);

/*
 * wk_prefix_match looks up the leading full blocks of tokens (n_tokens ids) in kv, stopping at
 * the first miss or after max_blocks blocks. Each matched block is referenced (the caller
 * releases it like any other block it holds). Writes the matched block ids to blocks[] and
 * their chain hashes to hashes[] (both capacity max_blocks) and returns how many matched.
 */
uint32_t wk_prefix_match(wk_kv_cache *kv, const int32_t *tokens, uint32_t n_tokens,
                         uint32_t max_blocks, int32_t *blocks, uint64_t *hashes);

#endif /* WK_PREFIX_CACHE_H */
