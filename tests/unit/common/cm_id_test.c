/* cm_id: format, uniqueness across threads, prefix validation, external id checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm_id.h"

#define THREADS 4
#define PER_THREAD 5000

static int cmp_str(const void *a, const void *b) {
    return strcmp((const char *)a, (const char *)b);
}

static void test_format(void **state) {
    (void)state;
    cm_id_gen g;
    char id[CM_ID_MAX];
    assert_int_equal(cm_id_gen_init(&g, "req"), CM_OK);
    assert_int_equal(cm_id_next(&g, id, sizeof id), CM_OK);
    /* req-<16 hex>-1 */
    assert_int_equal(strncmp(id, "req-", 4), 0);
    for (int i = 4; i < 20; i++) {
        assert_non_null(strchr("0123456789abcdef", id[i]));
    }
    assert_string_equal(id + 20, "-1");
    assert_int_equal(cm_id_next(&g, id, sizeof id), CM_OK);
    assert_string_equal(id + 20, "-2");
    assert_true(cm_id_valid(id));
}

static void test_two_generators_differ(void **state) {
    (void)state;
    cm_id_gen a, b;
    char ia[CM_ID_MAX], ib[CM_ID_MAX];
    assert_int_equal(cm_id_gen_init(&a, "req"), CM_OK);
    assert_int_equal(cm_id_gen_init(&b, "req"), CM_OK);
    assert_int_equal(cm_id_next(&a, ia, sizeof ia), CM_OK);
    assert_int_equal(cm_id_next(&b, ib, sizeof ib), CM_OK);
    /* Independent random seeds: equal only with probability 2^-64. */
    assert_string_not_equal(ia, ib);
}

static void test_small_buffer(void **state) {
    (void)state;
    cm_id_gen g;
    char id[10];
    assert_int_equal(cm_id_gen_init(&g, "chatcmpl"), CM_OK);
    assert_int_equal(cm_id_next(&g, id, sizeof id), CM_ERR_LIMIT);
    assert_string_equal(id, "");
}

static void test_prefix_validation(void **state) {
    (void)state;
    cm_id_gen g;
    assert_int_equal(cm_id_gen_init(&g, ""), CM_ERR_INVALID);
    assert_int_equal(cm_id_gen_init(&g, "Req"), CM_ERR_INVALID);
    assert_int_equal(cm_id_gen_init(&g, "a-b"), CM_ERR_INVALID);
    assert_int_equal(cm_id_gen_init(&g, "a_very_long_prefix_x"), CM_ERR_INVALID);
    assert_int_equal(cm_id_gen_init(&g, NULL), CM_ERR_INVALID);
    assert_int_equal(cm_id_gen_init(&g, "abcdefghijklmnop"), CM_OK); /* 16 = max */
    char id[CM_ID_MAX];
    assert_int_equal(cm_id_next(&g, id, sizeof id), CM_OK);
}

typedef struct worker_arg {
    cm_id_gen *gen;
    char (*ids)[CM_ID_MAX];
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    for (int i = 0; i < PER_THREAD; i++) {
        if (cm_id_next(a->gen, a->ids[i], CM_ID_MAX) != CM_OK) {
            a->ids[i][0] = '\0';
        }
    }
    return NULL;
}

static void test_unique_across_threads(void **state) {
    (void)state;
    cm_id_gen g;
    assert_int_equal(cm_id_gen_init(&g, "req"), CM_OK);
    char(*ids)[CM_ID_MAX] = calloc(THREADS * PER_THREAD, CM_ID_MAX);
    assert_non_null(ids);
    pthread_t th[THREADS];
    worker_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t].gen = &g;
        args[t].ids = ids + t * PER_THREAD;
        assert_int_equal(pthread_create(&th[t], NULL, worker, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    qsort(ids, THREADS * PER_THREAD, CM_ID_MAX, cmp_str);
    for (int i = 0; i < THREADS * PER_THREAD; i++) {
        assert_true(ids[i][0] != '\0');
        if (i > 0) {
            assert_string_not_equal(ids[i - 1], ids[i]);
        }
    }
    free(ids);
}

static void test_random_hex(void **state) {
    (void)state;
    char a[33], b[33];
    assert_int_equal(cm_id_random_hex(16, a, sizeof a), CM_OK);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_int_equal(cm_id_random_hex(16, b, sizeof b), CM_OK);
    assert_string_not_equal(a, b);
    assert_int_equal(cm_id_random_hex(16, a, 32), CM_ERR_LIMIT);
}

static void test_valid_external(void **state) {
    (void)state;
    assert_true(cm_id_valid("abc-123_x.y:z"));
    assert_false(cm_id_valid(""));
    assert_false(cm_id_valid(NULL));
    assert_false(cm_id_valid("has space"));
    assert_false(cm_id_valid("quote\""));
    assert_false(cm_id_valid("new\nline"));
    char s[CM_ID_EXTERNAL_MAX + 2];
    memset(s, 'a', sizeof s);
    s[CM_ID_EXTERNAL_MAX] = '\0';
    assert_true(cm_id_valid(s));
    s[CM_ID_EXTERNAL_MAX] = 'a';
    s[CM_ID_EXTERNAL_MAX + 1] = '\0';
    assert_false(cm_id_valid(s));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_two_generators_differ),
        cmocka_unit_test(test_small_buffer),
        cmocka_unit_test(test_prefix_validation),
        cmocka_unit_test(test_unique_across_threads),
        cmocka_unit_test(test_random_hex),
        cmocka_unit_test(test_valid_external),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
