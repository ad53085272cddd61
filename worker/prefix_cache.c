#include "prefix_cache.h"

/* splitmix64's finalizer: a cheap full-avalanche mix, so nearby token ids and parents land
 * far apart in the index. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

uint64_t wk_prefix_hash(uint64_t parent, const int32_t *tokens, uint32_t n) {
    uint64_t h = mix64(parent ^ UINT64_C(0x9e3779b97f4a7c15));
    for (uint32_t i = 0; i < n; i++)
        h = mix64(h ^ ((uint64_t)(uint32_t)tokens[i] + ((uint64_t)i << 32)));
    return mix64(h ^ n);
}

uint32_t wk_prefix_match(wk_kv_cache *kv, const int32_t *tokens, uint32_t n_tokens,
                         uint32_t max_blocks, int32_t *blocks, uint64_t *hashes) {
    uint32_t bt = wk_kv_cache_block_tokens(kv);
    uint64_t parent = WK_PREFIX_ROOT;
    uint32_t n = 0;
    while (n < max_blocks && (uint64_t)(n + 1) * bt <= n_tokens) {
        const int32_t *blk = tokens + (size_t)n * bt;
        uint64_t h = wk_prefix_hash(parent, blk, bt);
        int32_t b = wk_kv_cache_lookup(kv, h, parent, blk);
        if (b < 0)
            break;
        blocks[n] = b;
        hashes[n] = h;
        parent = h;
        n++;
    }
    return n;
}
