/* lt_rng: reproducible by seed, ranges inclusive, exponential gaps have mean 1/rate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lt_rng.h"

static void test_seeded_and_bounded(void **state) {
    (void)state;
    lt_rng a, b, c;
    lt_rng_seed(&a, 42);
    lt_rng_seed(&b, 42);
    lt_rng_seed(&c, 43);
    int differs = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = lt_rng_next(&a);
        assert_int_equal(x, lt_rng_next(&b));
        differs |= x != lt_rng_next(&c);
    }
    assert_true(differs);
    int seen_lo = 0, seen_hi = 0;
    for (int i = 0; i < 10000; i++) {
        uint32_t v = lt_rng_range(&a, 3, 6);
        assert_true(v >= 3 && v <= 6);
        seen_lo |= v == 3;
        seen_hi |= v == 6;
        double u = lt_rng_uniform(&a);
        assert_true(u >= 0 && u < 1);
    }
    assert_true(seen_lo && seen_hi);
    assert_int_equal(lt_rng_range(&a, 9, 9), 9);
    assert_int_equal(lt_rng_range(&a, 9, 2), 9);
}

static void test_exponential_mean(void **state) {
    (void)state;
    lt_rng r;
    lt_rng_seed(&r, 7);
    double sum = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double g = lt_rng_exponential(&r, 4.0);
        assert_true(g >= 0);
        sum += g;
    }
    /* mean 0.25 s; the standard error at n = 200000 is 0.25/447, so 2% is > 8 sigma */
    assert_float_equal(sum / n, 0.25, 0.005);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seeded_and_bounded),
        cmocka_unit_test(test_exponential_mean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
