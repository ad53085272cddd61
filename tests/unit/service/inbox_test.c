/*
 * wk_inbox: order, the separate submit/control caps, wake and bounded waits, and many
 * producer threads against one consumer.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "inbox.h"

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_order_and_caps(void **state) {
    (void)state;
    wk_inbox *in;
    assert_int_equal(wk_inbox_create(0, &in), CM_ERR_INVALID);
    assert_int_equal(wk_inbox_create(3, &in), CM_OK);
    for (uint64_t i = 0; i < 3; i++) {
        wk_cmd c = {.kind = WK_CMD_SUBMIT, .request_id = i};
        assert_int_equal(wk_inbox_push(in, &c), CM_OK);
    }
    wk_cmd over = {.kind = WK_CMD_SUBMIT, .request_id = 3};
    assert_int_equal(wk_inbox_push(in, &over), CM_ERR_OVERLOADED);
    assert_int_equal(wk_inbox_submits(in), 3);
    /* Control commands still fit while submits are full. */
    wk_cmd cancel = {.kind = WK_CMD_CANCEL, .request_id = 0};
    assert_int_equal(wk_inbox_push(in, &cancel), CM_OK);
    wk_cmd *list = wk_inbox_pop_all(in);
    uint64_t want = 0;
    int n = 0;
    for (wk_cmd *c = list; c != NULL;) {
        wk_cmd *next = c->next;
        if (n < 3) {
            assert_int_equal(c->kind, WK_CMD_SUBMIT);
            assert_int_equal(c->request_id, want++);
        } else {
            assert_int_equal(c->kind, WK_CMD_CANCEL);
        }
        n++;
        wk_cmd_free(c);
        c = next;
    }
    assert_int_equal(n, 4);
    assert_null(wk_inbox_pop_all(in));
    /* Room again after the drain. */
    assert_int_equal(wk_inbox_push(in, &over), CM_OK);
    /* The control cap: 4 * 3 + 1024. */
    int pushed = 0;
    while (wk_inbox_push(in, &cancel) == CM_OK)
        pushed++;
    assert_int_equal(pushed, 4 * 3 + 1024);
    wk_inbox_destroy(in); /* frees what is queued */
}

static void test_wait_and_wake(void **state) {
    (void)state;
    wk_inbox *in;
    assert_int_equal(wk_inbox_create(4, &in), CM_OK);
    int64_t t0 = now_ms();
    wk_inbox_wait(in, 100);
    int64_t waited = now_ms() - t0;
    assert_true(waited >= 90 && waited < 2000);
    wk_inbox_wake(in);
    t0 = now_ms();
    wk_inbox_wait(in, 5000);
    assert_true(now_ms() - t0 < 1000);
    wk_cmd c = {.kind = WK_CMD_OPEN, .conn_id = 1};
    assert_int_equal(wk_inbox_push(in, &c), CM_OK);
    t0 = now_ms();
    wk_inbox_wait(in, 5000);
    assert_true(now_ms() - t0 < 1000);
    wk_inbox_destroy(in);
}

typedef struct prod {
    wk_inbox *in;
    uint32_t conn;
    int n;
} prod;

static void *producer(void *arg) {
    prod *p = arg;
    for (int i = 0; i < p->n;) {
        wk_cmd c = {.kind = WK_CMD_SUBMIT, .conn_id = p->conn, .request_id = (uint64_t)i};
        if (wk_inbox_push(p->in, &c) == CM_OK)
            i++;
        else
            sched_yield();
    }
    return NULL;
}

static void test_many_producers(void **state) {
    (void)state;
    wk_inbox *in;
    assert_int_equal(wk_inbox_create(64, &in), CM_OK);
    enum { THREADS = 4, EACH = 5000 };
    pthread_t th[THREADS];
    prod ps[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ps[i] = (prod){.in = in, .conn = (uint32_t)i, .n = EACH};
        pthread_create(&th[i], NULL, producer, &ps[i]);
    }
    uint64_t next[THREADS] = {0};
    int total = 0;
    int64_t deadline = now_ms() + 60000;
    while (total < THREADS * EACH && now_ms() < deadline) {
        wk_inbox_wait(in, 50);
        for (wk_cmd *c = wk_inbox_pop_all(in); c != NULL;) {
            wk_cmd *nx = c->next;
            /* Per producer, arrival order is push order. */
            assert_int_equal(c->request_id, next[c->conn_id]);
            next[c->conn_id]++;
            total++;
            wk_cmd_free(c);
            c = nx;
        }
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(total, THREADS * EACH);
    wk_inbox_destroy(in);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_caps),
        cmocka_unit_test(test_wait_and_wake),
        cmocka_unit_test(test_many_producers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
