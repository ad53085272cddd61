/* Hash chains and prefix matching over the block pool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kv_cache.h"
#include "prefix_cache.h"

#define BT 4

static void test_hash_chain(void **state) {
    (void)state;
    int32_t a[BT] = {1, 2, 3, 4}, b[BT] = {1, 2, 3, 5}, c[BT] = {2, 1, 3, 4};
    uint64_t ha = wk_prefix_hash(WK_PREFIX_ROOT, a, BT);
    assert_true(ha == wk_prefix_hash(WK_PREFIX_ROOT, a, BT)); /* pure */
    assert_true(ha != wk_prefix_hash(WK_PREFIX_ROOT, b, BT)); /* last token counts */
    assert_true(ha != wk_prefix_hash(WK_PREFIX_ROOT, c, BT)); /* order counts */
    /* The same block under a different parent is a different prefix. */
    assert_true(wk_prefix_hash(ha, a, BT) != wk_prefix_hash(WK_PREFIX_ROOT, a, BT));
    assert_true(wk_prefix_hash(ha, a, BT) !=
                wk_prefix_hash(wk_prefix_hash(WK_PREFIX_ROOT, b, BT), a, BT));
}

/* publish_seq allocates and publishes the full blocks of tokens, as the scheduler would. */
static uint32_t publish_seq(wk_kv_cache *kv, const int32_t *tokens, uint32_t n, int32_t *blocks) {
    uint64_t parent = WK_PREFIX_ROOT;
    uint32_t k = 0;
    for (; (k + 1) * BT <= n; k++) {
        assert_int_equal(wk_kv_cache_alloc(kv, &blocks[k]), CM_OK);
        uint64_t h = wk_prefix_hash(parent, tokens + k * BT, BT);
        assert_true(wk_kv_cache_publish(kv, blocks[k], h, parent, tokens + k * BT));
        parent = h;
    }
    return k;
}

static void test_match(void **state) {
    (void)state;
    wk_kv_cache *kv = NULL;
    assert_int_equal(wk_kv_cache_create(16, BT, &kv), CM_OK);
    int32_t p1[14], p2[14];
    for (int i = 0; i < 14; i++)
        p1[i] = p2[i] = 1000 + i;
    p2[9] = 7; /* differs inside the third block */
    int32_t held[4];
    uint32_t n1 = publish_seq(kv, p1, 14, held);
    assert_int_equal(n1, 3);

    int32_t got[4];
    uint64_t hashes[4];
    /* Identical prompt: all three full blocks, same ids, refs taken. */
    uint32_t m = wk_prefix_match(kv, p1, 14, 4, got, hashes);
    assert_int_equal(m, 3);
    for (uint32_t i = 0; i < m; i++) {
        assert_int_equal(got[i], held[i]);
        assert_int_equal(wk_kv_cache_ref_count(kv, got[i]), 2);
    }
    assert_true(hashes[1] == wk_prefix_hash(hashes[0], p1 + BT, BT));
    for (uint32_t i = m; i > 0; i--)
        wk_kv_cache_release(kv, got[i - 1]);

    /* Diverging prompt: the first two blocks only. */
    assert_int_equal(wk_prefix_match(kv, p2, 14, 4, got, hashes), 2);
    wk_kv_cache_release(kv, got[1]);
    wk_kv_cache_release(kv, got[0]);
    /* max_blocks caps the match; a short prompt matches only its full blocks. */
    assert_int_equal(wk_prefix_match(kv, p1, 14, 1, got, hashes), 1);
    wk_kv_cache_release(kv, got[0]);
    assert_int_equal(wk_prefix_match(kv, p1, 7, 4, got, hashes), 1);
    wk_kv_cache_release(kv, got[0]);
    /* Same tokens shifted by one: nothing (the chain starts at the root). */
    assert_int_equal(wk_prefix_match(kv, p1 + 1, 13, 4, got, hashes), 0);

    /* After the owner releases, blocks are cached and still match. */
    for (uint32_t i = n1; i > 0; i--)
        wk_kv_cache_release(kv, held[i - 1]);
    assert_int_equal(wk_kv_cache_n_cached(kv), 3);
    assert_int_equal(wk_prefix_match(kv, p1, 14, 4, got, hashes), 3);
    for (uint32_t i = 3; i > 0; i--)
        wk_kv_cache_release(kv, got[i - 1]);
    assert_int_equal(wk_kv_cache_n_used(kv), 0);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);
    wk_kv_cache_destroy(kv);
}

/* Releasing last-to-first makes eviction take a prefix's tail first, so the head still hits. */
static void test_tail_evicted_first(void **state) {
    (void)state;
    wk_kv_cache *kv = NULL;
    assert_int_equal(wk_kv_cache_create(3, BT, &kv), CM_OK);
    int32_t p[12];
    for (int i = 0; i < 12; i++)
        p[i] = i * 3 + 1;
    int32_t held[3];
    assert_int_equal(publish_seq(kv, p, 12, held), 3);
    for (int i = 3; i > 0; i--)
        wk_kv_cache_release(kv, held[i - 1]);
    int32_t b;
    assert_int_equal(wk_kv_cache_alloc(kv, &b), CM_OK); /* evicts the tail block */
    assert_int_equal(b, held[2]);
    int32_t got[3];
    uint64_t hashes[3];
    assert_int_equal(wk_prefix_match(kv, p, 12, 3, got, hashes), 2);
    wk_kv_cache_release(kv, got[1]);
    wk_kv_cache_release(kv, got[0]);
    wk_kv_cache_release(kv, b);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);
    wk_kv_cache_destroy(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_chain),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_tail_evicted_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
