/* wk_backend: the registry starts with the CPU backend; programs add the others they link. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"

static void test_cpu_is_there(void **state) {
    (void)state;
    assert_ptr_equal(wk_backend_find("cpu"), &wk_backend_cpu);
    assert_null(wk_backend_find("fake0"));
    assert_null(wk_backend_find(NULL));
}

static void test_register_find_and_limits(void **state) {
    static char names[WK_BACKEND_MAX][16];
    static wk_backend_ops fakes[WK_BACKEND_MAX];
    const wk_backend_ops *cuda = wk_backend_find("cuda"); /* registered by nobody here */
    (void)state;
    assert_null(cuda);
    assert_int_equal(wk_backend_register(NULL), CM_ERR_INVALID);
    memset(&fakes[0], 0, sizeof fakes[0]);
    assert_int_equal(wk_backend_register(&fakes[0]), CM_ERR_INVALID); /* no name */
    /* The CPU backend is one of WK_BACKEND_MAX: WK_BACKEND_MAX - 1 more fit. */
    for (int i = 0; i < WK_BACKEND_MAX; i++) {
        snprintf(names[i], sizeof names[i], "fake%d", i);
        fakes[i].name = names[i];
    }
    for (int i = 0; i < WK_BACKEND_MAX - 1; i++) {
        assert_int_equal(wk_backend_register(&fakes[i]), CM_OK);
        assert_ptr_equal(wk_backend_find(names[i]), &fakes[i]);
    }
    assert_int_equal(wk_backend_register(&fakes[WK_BACKEND_MAX - 1]), CM_ERR_LIMIT);
    assert_null(wk_backend_find(names[WK_BACKEND_MAX - 1]));
    /* A name twice (also the CPU backend's) is refused; the first stays. */
    assert_int_equal(wk_backend_register(&fakes[0]), CM_ERR_EXISTS);
    assert_int_equal(wk_backend_register(&wk_backend_cpu), CM_ERR_EXISTS);
    assert_ptr_equal(wk_backend_find("cpu"), &wk_backend_cpu);
    assert_ptr_equal(wk_backend_find("fake0"), &fakes[0]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_is_there),
        cmocka_unit_test(test_register_find_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
