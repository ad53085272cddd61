/* cm_buf: cap enforcement (no partial appends), growth, printf, detach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm_buf.h"

static void test_empty(void **state) {
    (void)state;
    cm_buf b;
    cm_buf_init(&b, 16);
    assert_int_equal(b.len, 0);
    assert_string_equal(cm_buf_cstr(&b), "");
    cm_buf_reset(&b);
    assert_string_equal(cm_buf_cstr(&b), "");
    cm_buf_fini(&b);
}

static void test_append_and_cap(void **state) {
    (void)state;
    cm_buf b;
    cm_buf_init(&b, 10);
    assert_int_equal(cm_buf_append_str(&b, "hello"), CM_OK);
    assert_int_equal(cm_buf_append(&b, " wor", 4), CM_OK);
    assert_string_equal(cm_buf_cstr(&b), "hello wor");
    /* 2 more bytes would make 11 > 10: refused, buffer unchanged. */
    assert_int_equal(cm_buf_append(&b, "ld", 2), CM_ERR_LIMIT);
    assert_int_equal(b.len, 9);
    assert_string_equal(cm_buf_cstr(&b), "hello wor");
    assert_int_equal(cm_buf_append_byte(&b, 'l'), CM_OK);
    assert_int_equal(b.len, 10);
    assert_int_equal(cm_buf_append_byte(&b, 'd'), CM_ERR_LIMIT);
    assert_int_equal(cm_buf_append(&b, "", 0), CM_OK);
    /* The allocation never runs far past the cap. */
    assert_true(b.alloc <= b.max_bytes + 1);
    cm_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(cm_buf_append_str(&b, "0123456789"), CM_OK);
    assert_int_equal(cm_buf_reserve(&b, SIZE_MAX), CM_ERR_LIMIT);
    cm_buf_fini(&b);
}

static void test_growth_keeps_content(void **state) {
    (void)state;
    cm_buf b;
    cm_buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(cm_buf_append_byte(&b, (char)('a' + i % 26)), CM_OK);
    }
    assert_int_equal(b.len, 10000);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(b.data[i], 'a' + i % 26);
    }
    assert_int_equal(b.data[b.len], '\0');
    cm_buf_fini(&b);
}

static void test_printf(void **state) {
    (void)state;
    cm_buf b;
    cm_buf_init(&b, 1000);
    assert_int_equal(cm_buf_printf(&b, "%d-%s", 42, "x"), CM_OK);
    assert_string_equal(cm_buf_cstr(&b), "42-x");
    /* Longer than the internal stack buffer. */
    char big[600];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(cm_buf_printf(&b, "[%s]", big), CM_OK);
    assert_int_equal(b.len, 4 + 601);
    assert_int_equal(b.data[4], '[');
    assert_int_equal(b.data[b.len - 1], ']');
    /* Would pass the cap: refused whole. */
    size_t before = b.len;
    assert_int_equal(cm_buf_printf(&b, "%s", big), CM_ERR_LIMIT);
    assert_int_equal(b.len, before);
    assert_int_equal(strlen(cm_buf_cstr(&b)), before);
    cm_buf_fini(&b);
}

static void test_unbounded_cap_does_not_wrap(void **state) {
    (void)state;
    cm_buf b;
    cm_buf_init(&b, SIZE_MAX);
    assert_int_equal(cm_buf_append_str(&b, "abc"), CM_OK);
    assert_int_equal(cm_buf_reserve(&b, SIZE_MAX - 3), CM_ERR_LIMIT);
    assert_int_equal(cm_buf_reserve(&b, SIZE_MAX), CM_ERR_LIMIT);
    assert_string_equal(cm_buf_cstr(&b), "abc");
    cm_buf_fini(&b);
}

static void test_detach(void **state) {
    (void)state;
    cm_buf b;
    cm_buf_init(&b, 64);
    size_t len = 99;
    char *p = cm_buf_detach(&b, &len);
    assert_non_null(p);
    assert_int_equal(len, 0);
    assert_string_equal(p, "");
    free(p);
    assert_int_equal(cm_buf_append_str(&b, "abc"), CM_OK);
    p = cm_buf_detach(&b, &len);
    assert_string_equal(p, "abc");
    assert_int_equal(len, 3);
    assert_int_equal(b.len, 0);
    assert_null(b.data);
    assert_int_equal(b.max_bytes, 64); /* same cap after detach */
    free(p);
    cm_buf_fini(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_append_and_cap),
        cmocka_unit_test(test_growth_keeps_content),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_unbounded_cap_does_not_wrap),
        cmocka_unit_test(test_detach),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
