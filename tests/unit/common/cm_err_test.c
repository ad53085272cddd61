/* cm_err: every value has its own message; out-of-range values are safe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cm_err.h"

static void test_all_values_have_distinct_messages(void **state) {
    (void)state;
    for (int i = 0; i < CM_ERR__COUNT; i++) {
        const char *m = cm_strerror((cm_err)i);
        assert_non_null(m);
        assert_string_not_equal(m, "unknown error");
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(m, cm_strerror((cm_err)j));
        }
    }
    assert_string_equal(cm_strerror(CM_OK), "ok");
}

static void test_out_of_range(void **state) {
    (void)state;
    assert_string_equal(cm_strerror(CM_ERR__COUNT), "unknown error");
    assert_string_equal(cm_strerror((cm_err)-1), "unknown error");
    assert_string_equal(cm_strerror((cm_err)100000), "unknown error");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_values_have_distinct_messages),
        cmocka_unit_test(test_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
