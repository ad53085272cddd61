/* Block pool: allocation, ref counts, publish/lookup, LRU eviction order, accounting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kv_cache.h"
#include "prefix_cache.h"

#define BT 4

static void fill(int32_t *t, int32_t base) {
    for (int i = 0; i < BT; i++)
        t[i] = base + i;
}

static void test_create_bounds(void **state) {
    (void)state;
    wk_kv_cache *kv = NULL;
    assert_int_equal(wk_kv_cache_create(0, BT, &kv), CM_ERR_INVALID);
    assert_int_equal(wk_kv_cache_create(8, 0, &kv), CM_ERR_INVALID);
    assert_int_equal(wk_kv_cache_create(8, WK_KV_MAX_BLOCK_TOKENS + 1, &kv), CM_ERR_INVALID);
    assert_int_equal(wk_kv_cache_create(WK_KV_MAX_BLOCKS + 1, BT, &kv), CM_ERR_INVALID);
    assert_null(kv);
    assert_int_equal(wk_kv_cache_create(8, BT, &kv), CM_OK);
    assert_int_equal(wk_kv_cache_n_blocks(kv), 8);
    assert_int_equal(wk_kv_cache_n_free(kv), 8);
    assert_int_equal(wk_kv_cache_n_used(kv), 0);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);
    wk_kv_cache_destroy(kv);
    wk_kv_cache_destroy(NULL);
}

static void test_alloc_release_all(void **state) {
    (void)state;
    wk_kv_cache *kv = NULL;
    assert_int_equal(wk_kv_cache_create(5, BT, &kv), CM_OK);
    int32_t b[5];
    uint8_t seen[5] = {0};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(wk_kv_cache_alloc(kv, &b[i]), CM_OK);
        assert_in_range(b[i], 0, 4);
        assert_int_equal(seen[b[i]], 0); /* never handed out twice */
        seen[b[i]] = 1;
        assert_int_equal(wk_kv_cache_ref_count(kv, b[i]), 1);
    }
    int32_t extra = -7;
    assert_int_equal(wk_kv_cache_alloc(kv, &extra), CM_ERR_LIMIT);
    assert_int_equal(extra, -7);
    assert_int_equal(wk_kv_cache_n_used(kv), 5);
    wk_kv_cache_ref(kv, b[2]);
    assert_int_equal(wk_kv_cache_ref_count(kv, b[2]), 2);
    wk_kv_cache_release(kv, b[2]);
    assert_int_equal(wk_kv_cache_n_used(kv), 5); /* still one reference */
    for (int i = 0; i < 5; i++)
        wk_kv_cache_release(kv, b[i]);
    assert_int_equal(wk_kv_cache_n_free(kv), 5);
    assert_int_equal(wk_kv_cache_n_cached(kv), 0);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);
    assert_int_equal(wk_kv_cache_ref_count(kv, 99), -1);
    wk_kv_cache_destroy(kv);
}

static void test_publish_lookup(void **state) {
    (void)state;
    wk_kv_cache *kv = NULL;
    assert_int_equal(wk_kv_cache_create(4, BT, &kv), CM_OK);
    int32_t toks[BT], other[BT];
    fill(toks, 100);
    fill(other, 200);
    int32_t b;
    assert_int_equal(wk_kv_cache_alloc(kv, &b), CM_OK);
    uint64_t h = wk_prefix_hash(WK_PREFIX_ROOT, toks, BT);
    assert_true(wk_kv_cache_publish(kv, b, h, WK_PREFIX_ROOT, toks));
    assert_false(wk_kv_cache_publish(kv, b, h, WK_PREFIX_ROOT, toks)); /* already */

    /* A second block with the same key is refused and stays private. */
    int32_t b2;
    assert_int_equal(wk_kv_cache_alloc(kv, &b2), CM_OK);
    assert_false(wk_kv_cache_publish(kv, b2, h, WK_PREFIX_ROOT, toks));

    /* Lookup while used: shares the block. */
    assert_int_equal(wk_kv_cache_lookup(kv, h, WK_PREFIX_ROOT, toks), b);
    assert_int_equal(wk_kv_cache_ref_count(kv, b), 2);
    /* Same hash, different tokens or parent: a collision is not trusted. */
    assert_int_equal(wk_kv_cache_lookup(kv, h, WK_PREFIX_ROOT, other), -1);
    assert_int_equal(wk_kv_cache_lookup(kv, h, 12345, toks), -1);

    wk_kv_cache_release(kv, b);
    wk_kv_cache_release(kv, b);
    wk_kv_cache_release(kv, b2);
    /* Published and unreferenced: cached, not free. The duplicate went to the free list. */
    assert_int_equal(wk_kv_cache_n_cached(kv), 1);
    assert_int_equal(wk_kv_cache_n_free(kv), 3);
    assert_int_equal(wk_kv_cache_n_available(kv), 4);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);

    /* Lookup revives the cached block. */
    assert_int_equal(wk_kv_cache_lookup(kv, h, WK_PREFIX_ROOT, toks), b);
    assert_int_equal(wk_kv_cache_n_cached(kv), 0);
    assert_int_equal(wk_kv_cache_n_used(kv), 1);
    wk_kv_cache_release(kv, b);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);
    wk_kv_cache_destroy(kv);
}

/* Cached blocks survive while free blocks remain, then go least recently released first. */
static void test_lru_eviction(void **state) {
    (void)state;
    wk_kv_cache *kv = NULL;
    assert_int_equal(wk_kv_cache_create(3, BT, &kv), CM_OK);
    int32_t toks[3][BT];
    uint64_t h[3];
    int32_t b[3];
    for (int i = 0; i < 3; i++) {
        fill(toks[i], 10 * (i + 1));
        h[i] = wk_prefix_hash(WK_PREFIX_ROOT, toks[i], BT);
        assert_int_equal(wk_kv_cache_alloc(kv, &b[i]), CM_OK);
        assert_true(wk_kv_cache_publish(kv, b[i], h[i], WK_PREFIX_ROOT, toks[i]));
    }
    /* Release order 1, 0, 2: LRU order is the same. */
    wk_kv_cache_release(kv, b[1]);
    wk_kv_cache_release(kv, b[0]);
    wk_kv_cache_release(kv, b[2]);
    assert_int_equal(wk_kv_cache_n_cached(kv), 3);
    assert_int_equal(wk_kv_cache_n_free(kv), 0);

    int32_t got;
    assert_int_equal(wk_kv_cache_alloc(kv, &got), CM_OK);
    assert_int_equal(got, b[1]);
    assert_int_equal(wk_kv_cache_evictions(kv), 1);
    assert_int_equal(wk_kv_cache_lookup(kv, h[1], WK_PREFIX_ROOT, toks[1]), -1);
    /* Touching block 0 (lookup + release) makes it most recent: block 2 goes next. */
    assert_int_equal(wk_kv_cache_lookup(kv, h[0], WK_PREFIX_ROOT, toks[0]), b[0]);
    wk_kv_cache_release(kv, b[0]);
    int32_t got2;
    assert_int_equal(wk_kv_cache_alloc(kv, &got2), CM_OK);
    assert_int_equal(got2, b[2]);
    assert_int_equal(wk_kv_cache_lookup(kv, h[0], WK_PREFIX_ROOT, toks[0]), b[0]);
    int32_t none;
    assert_int_equal(wk_kv_cache_alloc(kv, &none), CM_ERR_LIMIT);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);
    wk_kv_cache_release(kv, got);
    wk_kv_cache_release(kv, got2);
    wk_kv_cache_release(kv, b[0]);
    assert_int_equal(wk_kv_cache_n_used(kv), 0);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);
    wk_kv_cache_destroy(kv);
}

/* Random operations against a shadow model of ref counts; invariants after each. */
static void test_random_ops(void **state) {
    (void)state;
    enum { N = 32, OPS = 20000 };
    wk_kv_cache *kv = NULL;
    assert_int_equal(wk_kv_cache_create(N, BT, &kv), CM_OK);
    int32_t refs[N] = {0};
    uint64_t x = 88172645463325252ull;
    for (int op = 0; op < OPS; op++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int kind = (int)(x % 4);
        int32_t blk = (int32_t)((x >> 8) % N);
        int32_t toks[BT];
        fill(toks, (int32_t)((x >> 16) % 8)); /* few distinct keys: many lookups hit */
        uint64_t h = wk_prefix_hash(WK_PREFIX_ROOT, toks, BT);
        if (kind == 0) {
            int32_t b;
            if (wk_kv_cache_alloc(kv, &b) == CM_OK) {
                assert_int_equal(refs[b], 0);
                refs[b] = 1;
            }
        } else if (kind == 1 && refs[blk] > 0) {
            wk_kv_cache_release(kv, blk);
            refs[blk]--;
        } else if (kind == 2) {
            int32_t b = wk_kv_cache_lookup(kv, h, WK_PREFIX_ROOT, toks);
            if (b >= 0)
                refs[b]++;
        } else if (kind == 3 && refs[blk] > 0) {
            (void)wk_kv_cache_publish(kv, blk, h, WK_PREFIX_ROOT, toks);
        }
        if (op % 97 == 0)
            assert_int_equal(wk_kv_cache_check(kv), CM_OK);
        for (int i = 0; i < N; i++)
            assert_int_equal(wk_kv_cache_ref_count(kv, i), refs[i]);
    }
    for (int i = 0; i < N; i++)
        while (refs[i]-- > 0)
            wk_kv_cache_release(kv, i);
    assert_int_equal(wk_kv_cache_n_used(kv), 0);
    assert_int_equal(wk_kv_cache_n_available(kv), N);
    assert_int_equal(wk_kv_cache_check(kv), CM_OK);
    wk_kv_cache_destroy(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_bounds),  cmocka_unit_test(test_alloc_release_all),
        cmocka_unit_test(test_publish_lookup), cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_random_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
