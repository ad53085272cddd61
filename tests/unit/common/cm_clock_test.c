/* cm_clock: monotonic clocks never go back and sleep sleeps at least as asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cm_clock.h"

static void test_monotonic(void **state) {
    (void)state;
    int64_t prev = cm_clock_mono_ns();
    for (int i = 0; i < 10000; i++) {
        int64_t now = cm_clock_mono_ns();
        assert_true(now >= prev);
        prev = now;
    }
}

static void test_sleep_and_units(void **state) {
    (void)state;
    int64_t ms0 = cm_clock_mono_ms();
    int64_t ns0 = cm_clock_mono_ns();
    cm_clock_sleep_ms(20);
    int64_t ms1 = cm_clock_mono_ms();
    int64_t ns1 = cm_clock_mono_ns();
    assert_true(ms1 - ms0 >= 19); /* ms truncation may lose up to 1 */
    assert_true(ns1 - ns0 >= 20 * 1000000LL);
    /* Same clock in two units: the ms reading agrees with ns / 1e6 within a few ms. */
    int64_t diff = cm_clock_mono_ms() - cm_clock_mono_ns() / 1000000;
    assert_true(diff >= -2 && diff <= 2);
}

static void test_unix_ms_plausible(void **state) {
    (void)state;
    int64_t now = cm_clock_unix_ms();
    /* After 2024-01-01 and before 2100-01-01. */
    assert_true(now > 1704067200000LL);
    assert_true(now < 4102444800000LL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monotonic),
        cmocka_unit_test(test_sleep_and_units),
        cmocka_unit_test(test_unix_ms_plausible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
