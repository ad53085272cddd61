/*
 * cpu_pool_test: the CPU backend's fork-join pool: every task runs to completion exactly once
 * per claimed item, participation is limited by wk_cpu_pool_set_active, idle workers sleep and
 * wake, and destroy joins cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "backend/cpu/cpu_pool.h"

#define ITEMS 1000

typedef struct task {
    atomic_int next;
    atomic_int hits[ITEMS];
    atomic_int tid_mask; /* bit t set when thread t ran the task */
    atomic_int bad_tid;  /* set by a worker that saw an out-of-range tid (cmocka asserts
                          * must not run on worker threads) */
} task;

static void claim_items(void *ctx, int tid, int n_threads) {
    task *t = ctx;
    if (tid < 0 || tid >= n_threads) {
        atomic_store(&t->bad_tid, 1);
        return;
    }
    atomic_fetch_or(&t->tid_mask, 1 << tid);
    for (;;) {
        int i = atomic_fetch_add(&t->next, 1);
        if (i >= ITEMS) {
            return;
        }
        atomic_fetch_add(&t->hits[i], 1);
    }
}

static void reset(task *t) {
    atomic_store(&t->next, 0);
    atomic_store(&t->tid_mask, 0);
    atomic_store(&t->bad_tid, 0);
    for (int i = 0; i < ITEMS; i++) {
        atomic_store(&t->hits[i], 0);
    }
}

static void check_once(task *t) {
    assert_int_equal(atomic_load(&t->bad_tid), 0);
    for (int i = 0; i < ITEMS; i++) {
        assert_int_equal(atomic_load(&t->hits[i]), 1);
    }
}

static int popcount(int x) {
    int n = 0;
    for (; x != 0; x &= x - 1) {
        n++;
    }
    return n;
}

static void test_every_item_once(void **state) {
    (void)state;
    wk_cpu_pool *p = NULL;
    assert_int_equal(wk_cpu_pool_create(4, &p), CM_OK);
    assert_int_equal(wk_cpu_pool_size(p), 4);
    assert_int_equal(wk_cpu_pool_active(p), 4);
    static task t;
    int max_seen = 0;
    for (int r = 0; r < 2000; r++) {
        reset(&t);
        wk_cpu_pool_run(p, claim_items, &t);
        check_once(&t);
        assert_true(atomic_load(&t.tid_mask) & 1); /* the owner always runs */
        int n = popcount(atomic_load(&t.tid_mask));
        max_seen = n > max_seen ? n : max_seen;
    }
    assert_true(max_seen >= 1 && max_seen <= 4);
    assert_true(wk_cpu_pool_wait_ns(p) >= 0);
    wk_cpu_pool_destroy(p);
    wk_cpu_pool_destroy(NULL);
}

static void test_active_limit(void **state) {
    (void)state;
    wk_cpu_pool *p = NULL;
    assert_int_equal(wk_cpu_pool_create(4, &p), CM_OK);
    static task t;
    wk_cpu_pool_set_active(p, 1);
    assert_int_equal(wk_cpu_pool_active(p), 1);
    for (int r = 0; r < 200; r++) {
        reset(&t);
        wk_cpu_pool_run(p, claim_items, &t);
        check_once(&t);
        assert_int_equal(atomic_load(&t.tid_mask), 1); /* owner only */
    }
    wk_cpu_pool_set_active(p, 2);
    for (int r = 0; r < 500; r++) {
        reset(&t);
        wk_cpu_pool_run(p, claim_items, &t);
        check_once(&t);
        assert_true(popcount(atomic_load(&t.tid_mask)) <= 2);
    }
    wk_cpu_pool_set_active(p, 99); /* clamped */
    assert_int_equal(wk_cpu_pool_active(p), 4);
    wk_cpu_pool_set_active(p, 0);
    assert_int_equal(wk_cpu_pool_active(p), 1);
    wk_cpu_pool_destroy(p);
}

/* After a pause long enough for the workers to fall asleep, tasks still complete (they are
 * woken) and destroy joins sleeping workers. */
static void test_sleep_and_wake(void **state) {
    (void)state;
    wk_cpu_pool *p = NULL;
    assert_int_equal(wk_cpu_pool_create(3, &p), CM_OK);
    static task t;
    for (int r = 0; r < 3; r++) {
        struct timespec ts = {0, 30 * 1000 * 1000};
        nanosleep(&ts, NULL);
        reset(&t);
        wk_cpu_pool_run(p, claim_items, &t);
        check_once(&t);
    }
    wk_cpu_pool_destroy(p);

    wk_cpu_pool *one = NULL;
    assert_int_equal(wk_cpu_pool_create(1, &one), CM_OK);
    reset(&t);
    wk_cpu_pool_run(one, claim_items, &t);
    check_once(&t);
    assert_int_equal(atomic_load(&t.tid_mask), 1);
    wk_cpu_pool_destroy(one);
    assert_int_equal(wk_cpu_pool_create(0, &one), CM_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_item_once),
        cmocka_unit_test(test_active_limit),
        cmocka_unit_test(test_sleep_and_wake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
