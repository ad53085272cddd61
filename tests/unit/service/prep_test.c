/*
 * wk_prep on the bundled model's tokenizer: prompts that cannot fit are refused from their
 * bytes without tokenizing (or by stopping the tokenizer), a cancelled item is skipped, the
 * queue bound answers OVERLOADED, a short prompt is not held up behind a long one, and a pool
 * destroyed with work in it frees everything (run under ASan). The service-level semantics
 * (Cancel and close of requests in preparation, duplicates, drain) are in
 * worker_process_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm_clock.h"
#include "svc_model.h"
#include "prep.h"

static svc_model g_m;
static wk_prep_ctx g_ctx;

static int setup(void **state) {
    (void)state;
    if (svc_model_open(&g_m, "chatml") != 0)
        return -1;
    g_ctx.prompt = (wk_prompt_ctx){
        .tok = g_m.tok, .tmpl = &g_m.tmpl, .max_context = 8192, .max_prompt_bytes = 2u << 20};
    return 0;
}

static int teardown(void **state) {
    (void)state;
    svc_model_close(&g_m);
    return 0;
}

/* ---- helpers ---- */

/* text repeated to len bytes (malloc'd, NUL-terminated). */
static char *repeat(const char *pattern, size_t len) {
    char *s = malloc(len + 1);
    assert_non_null(s);
    size_t pl = strlen(pattern);
    for (size_t i = 0; i < len; i++)
        s[i] = pattern[i % pl];
    s[len] = '\0';
    return s;
}

/* A prepared item owning a real unpacked envelope (as the service hands over). chat: the
 * text is one user message, else a raw prompt. max_tokens 0 = absent. */
static wk_prepared *item(uint64_t id, const char *text, bool chat, uint32_t max_tokens) {
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    s.request_id = id;
    Sluice__ChatMessage m = SLUICE__CHAT_MESSAGE__INIT;
    Sluice__ChatMessage *mp = &m;
    if (chat) {
        m.role = (char *)"user";
        m.content = (char *)text;
        s.n_messages = 1;
        s.messages = &mp;
    } else {
        s.prompt = (char *)text;
    }
    s.has_max_tokens = max_tokens > 0;
    s.max_tokens = max_tokens;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_SUBMIT;
    env.submit = &s;
    size_t n = sluice__envelope__get_packed_size(&env);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    sluice__envelope__pack(&env, buf);
    wk_prepared *p = wk_prepared_new();
    assert_non_null(p);
    p->env = sluice__envelope__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(p->env);
    p->engine_id = id;
    p->request_id = id;
    p->random_seed = 42;
    return p;
}

static atomic_int g_ready_calls;

static void on_ready(void *arg) {
    (void)arg;
    atomic_fetch_add(&g_ready_calls, 1);
}

/* Pops finished items into out (in finishing order) until n arrived or 60 s passed. */
static size_t wait_done(wk_prep *pp, wk_prepared **out, size_t n) {
    size_t got = 0;
    int64_t deadline = cm_clock_mono_ms() + 60000;
    while (got < n && cm_clock_mono_ms() < deadline) {
        wk_prepared *l = wk_prep_pop_done(pp);
        if (l == NULL) {
            usleep(1000);
            continue;
        }
        while (l != NULL && got < n) {
            out[got++] = l;
            l = l->next;
        }
        assert_null(l);
    }
    return got;
}

static double encode_seconds(const char *text, size_t len) {
    size_t cap = len + 2, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    assert_non_null(ids);
    int64_t t0 = cm_clock_mono_ns();
    assert_int_equal(wk_tokenizer_encode(g_m.tok, text, len, false, true, ids, cap, &n), CM_OK);
    int64_t t1 = cm_clock_mono_ns();
    free(ids);
    return (double)(t1 - t0) / 1e9;
}

/* ---- tests ---- */

/* 250,000 characters cannot fit 8192 tokens: refused from the byte count, without
 * tokenizing. Deterministic evidence: the message carries the byte bound (over 20,000 here),
 * whereas the tokenizer, had it run, would have stopped at 8193 tokens and said so. */
static void test_overflow_refused_from_bytes(void **state) {
    (void)state;
    size_t len = 250000;
    char *text = repeat("Hello world, this is a long prompt with 12 numbers. ", len);
    size_t lower = wk_tokenizer_min_tokens(g_m.tok, text, len);
    assert_true(lower > 8193);
    for (int chat = 0; chat < 2; chat++) {
        wk_prepared *p = item(1, text, chat, 16);
        assert_int_equal(wk_prep_run(&g_ctx, p), CM_ERR_CONTEXT_LENGTH);
        assert_null(p->ids);
        assert_non_null(strstr(p->err, "maximum context length is 8192 tokens"));
        const char *al = strstr(p->err, "(at least ");
        assert_non_null(al);
        unsigned long long n = strtoull(al + strlen("(at least "), NULL, 10);
        if (chat)
            assert_true(n >= lower); /* the rendered text holds the message and markers */
        else
            assert_int_equal(n, lower);
        assert_non_null(strstr(al, " in the messages, 16 in the completion)"));
        printf("# refused in %.3f ms; tokenizing the text takes %.1f ms\n",
               (double)p->prep_ns / 1e6, encode_seconds(text, len) * 1e3);
        wk_prepared_free(p);
    }
    free(text);
}

/* Text whose bytes alone do not prove the overflow (long runs of spaces are single tokens of
 * up to ~100 bytes) is tokenized, but only until it passes the context. */
static void test_overflow_stops_tokenizing(void **state) {
    (void)state;
    wk_prep_ctx small = g_ctx;
    small.prompt.max_context = 64;
    char *text = repeat("hello ", 600);
    assert_true(wk_tokenizer_min_tokens(g_m.tok, text, 600) < 64);
    wk_prepared *p = item(2, text, false, 4);
    assert_int_equal(wk_prep_run(&small, p), CM_ERR_CONTEXT_LENGTH);
    assert_non_null(strstr(p->err, "(at least 65 in the messages, 4 in the completion)"));
    wk_prepared_free(p);
    /* Below the context the count is exact: 30 words of "hello " + 40 > 64. */
    p = item(3, text + 420, false, 40);
    assert_int_equal(wk_prep_run(&small, p), CM_ERR_CONTEXT_LENGTH);
    assert_null(strstr(p->err, "at least"));
    assert_non_null(strstr(p->err, "in the messages, 40 in the completion)"));
    wk_prepared_free(p);
    /* And a prompt that fits gets its ids and sampling parameters. */
    p = item(4, text + 540, false, 8);
    assert_int_equal(wk_prep_run(&small, p), CM_OK);
    assert_non_null(p->ids);
    int32_t want[64];
    size_t n_want = 0;
    assert_int_equal(wk_tokenizer_encode(g_m.tok, text + 540, 60, wk_tokenizer_add_bos(g_m.tok),
                                         false, want, 64, &n_want),
                     CM_OK);
    assert_int_equal(p->n_ids, n_want);
    assert_memory_equal(p->ids, want, n_want * sizeof want[0]);
    assert_int_equal(p->sampling.seed, 42);
    wk_prepared_free(p);
    free(text);
}

/* queue_cap counts items until the engine thread pops them: the next push is OVERLOADED at
 * once, and room comes back after the pop. */
static void test_queue_full(void **state) {
    (void)state;
    wk_prep *pp = NULL;
    atomic_store(&g_ready_calls, 0);
    assert_int_equal(wk_prep_create(&g_ctx, 1, 2, on_ready, NULL, &pp), CM_OK);
    wk_prepared *a = item(1, "one", false, 4), *b = item(2, "two", false, 4);
    wk_prepared *c = item(3, "three", false, 4);
    assert_int_equal(wk_prep_push(pp, a), CM_OK);
    assert_int_equal(wk_prep_push(pp, b), CM_OK);
    assert_int_equal(wk_prep_push(pp, c), CM_ERR_OVERLOADED);
    assert_int_equal(wk_prep_pending(pp), 2);
    wk_prepared *done[2];
    assert_int_equal(wait_done(pp, done, 2), 2);
    assert_int_equal(atomic_load(&g_ready_calls), 2);
    /* One thread, first in first out. */
    assert_ptr_equal(done[0], a);
    assert_ptr_equal(done[1], b);
    assert_int_equal(a->rv, CM_OK);
    assert_int_equal(b->rv, CM_OK);
    assert_int_equal(wk_prep_pending(pp), 0);
    assert_int_equal(wk_prep_push(pp, c), CM_OK);
    assert_int_equal(wait_done(pp, done, 1), 1);
    assert_ptr_equal(done[0], c);
    wk_prepared_free(a);
    wk_prepared_free(b);
    wk_prepared_free(c);
    wk_prep_destroy(pp);
}

/* A prompt that passes the byte bound but takes long to tokenize: 500,000 spaces are one
 * pre-token (n log n merging) and ~7,800 tokens; with max_tokens 1000 they overflow 8192
 * only once counted. */
static wk_prepared *slow_item(uint64_t id, char **text_out) {
    *text_out = repeat(" ", 500000);
    assert_true(wk_tokenizer_min_tokens(g_m.tok, *text_out, 500000) + 1000 <= 8192);
    return item(id, *text_out, false, 1000);
}

/* An item cancelled while it waits is skipped: it comes back CANCELLED with nothing built. */
static void test_cancel_while_queued(void **state) {
    (void)state;
    wk_prep *pp = NULL;
    assert_int_equal(wk_prep_create(&g_ctx, 1, 8, on_ready, NULL, &pp), CM_OK);
    char *text;
    wk_prepared *slow = slow_item(1, &text);
    wk_prepared *b = item(2, "Hello there", true, 8);
    assert_int_equal(wk_prep_push(pp, slow), CM_OK);
    assert_int_equal(wk_prep_push(pp, b), CM_OK);
    wk_prepared_cancel(b); /* the only thread is busy with slow for a while */
    wk_prepared *done[2];
    assert_int_equal(wait_done(pp, done, 2), 2);
    assert_ptr_equal(done[0], slow);
    assert_ptr_equal(done[1], b);
    assert_int_equal(slow->rv, CM_ERR_CONTEXT_LENGTH);
    assert_null(strstr(slow->err, "at least")); /* counted in full */
    assert_int_equal(b->rv, CM_ERR_CANCELLED);
    assert_null(b->ids);
    wk_prepared_free(slow);
    wk_prepared_free(b);
    wk_prep_destroy(pp);
    free(text);
}

/* With two threads a short prompt pushed after a long one is ready first. */
static void test_short_not_behind_long(void **state) {
    (void)state;
    wk_prep *pp = NULL;
    assert_int_equal(wk_prep_create(&g_ctx, 2, 8, on_ready, NULL, &pp), CM_OK);
    char *text;
    wk_prepared *slow = slow_item(1, &text);
    wk_prepared *b = item(2, "Hello there", true, 8);
    assert_int_equal(wk_prep_push(pp, slow), CM_OK);
    assert_int_equal(wk_prep_push(pp, b), CM_OK);
    wk_prepared *done[2];
    assert_int_equal(wait_done(pp, done, 2), 2);
    assert_ptr_equal(done[0], b);
    assert_int_equal(b->rv, CM_OK);
    assert_true(b->n_ids > 0);
    printf("# short prompt ready in %.2f ms beside a %.1f ms one\n", (double)b->prep_ns / 1e6,
           (double)slow->prep_ns / 1e6);
    wk_prepared_free(slow);
    wk_prepared_free(b);
    wk_prep_destroy(pp);
    free(text);
}

/* Destroying a pool with items queued, running and done frees them all (ASan checks). */
static void test_destroy_with_work(void **state) {
    (void)state;
    wk_prep *pp = NULL;
    assert_int_equal(wk_prep_create(&g_ctx, 2, 16, on_ready, NULL, &pp), CM_OK);
    char *text;
    assert_int_equal(wk_prep_push(pp, slow_item(1, &text)), CM_OK);
    free(text);
    for (uint64_t i = 2; i < 8; i++)
        assert_int_equal(wk_prep_push(pp, item(i, "short one", false, 4)), CM_OK);
    usleep(20 * 1000);
    wk_prep_destroy(pp);
    /* Bad arguments are refused. */
    assert_int_equal(wk_prep_create(&g_ctx, 0, 16, on_ready, NULL, &pp), CM_ERR_INVALID);
    assert_null(pp);
    assert_int_equal(wk_prep_create(&g_ctx, 2, 0, on_ready, NULL, &pp), CM_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overflow_refused_from_bytes),
        cmocka_unit_test(test_overflow_stops_tokenizing),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_cancel_while_queued),
        cmocka_unit_test(test_short_not_behind_long),
        cmocka_unit_test(test_destroy_with_work),
    };
    return cmocka_run_group_tests_name("prep", tests, setup, teardown);
}
