/* Scheduling decisions without a model: budget and chunking, priority, tenant fairness,
 * bounded queue, deadlines, preemption, prefix reuse, block accounting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kv_cache.h"
#include "scheduler.h"

#define BT 4
#define MAXB 64
#define CAP 256

typedef struct tseq {
    wk_seq s;
    int32_t tokens[CAP];
    int32_t table[MAXB];
    uint64_t hashes[MAXB];
} tseq;

typedef struct fixture {
    wk_kv_cache *kv;
    wk_sched *sched;
} fixture;

static void fx_init(fixture *f, uint32_t n_blocks, uint32_t budget, uint32_t max_running,
                    uint32_t max_waiting, bool prefix) {
    assert_int_equal(wk_kv_cache_create(n_blocks, BT, &f->kv), CM_OK);
    wk_sched_config c = {
        .block_tokens = BT,
        .max_blocks_per_seq = MAXB,
        .max_batch_tokens = budget,
        .max_running = max_running,
        .max_waiting = max_waiting,
        .prefix_cache = prefix,
        .watermark_blocks = 0,
    };
    assert_int_equal(wk_sched_create(&c, f->kv, &f->sched), CM_OK);
}

static void fx_fini(fixture *f) {
    /* Every test ends with all blocks unreferenced: nothing leaked. */
    assert_int_equal(wk_sched_n_running(f->sched), 0);
    assert_int_equal(wk_kv_cache_n_used(f->kv), 0);
    assert_int_equal(wk_kv_cache_check(f->kv), CM_OK);
    wk_sched_destroy(f->sched);
    wk_kv_cache_destroy(f->kv);
}

static void seq_init(tseq *t, uint64_t id, const char *tenant, wk_priority prio, uint32_t n_prompt,
                     int32_t base) {
    memset(t, 0, sizeof(*t));
    t->s.id = id;
    snprintf(t->s.tenant, sizeof(t->s.tenant), "%s", tenant);
    t->s.priority = prio;
    t->s.tokens = t->tokens;
    t->s.cap_tokens = CAP;
    t->s.block_table = t->table;
    t->s.block_hash = t->hashes;
    for (uint32_t i = 0; i < n_prompt; i++)
        t->tokens[i] = base + (int32_t)i;
    t->s.n_prompt = n_prompt;
    t->s.n_tokens = n_prompt;
}

/* step plans, commits, and appends token 7 to every sequence that got logits. */
static const wk_sched_plan *step(fixture *f, int64_t now) {
    const wk_sched_plan *p = wk_sched_plan_step(f->sched, now);
    uint32_t total = 0;
    for (uint32_t i = 0; i < p->n_entries; i++) {
        const wk_seq *s = p->entries[i].seq;
        assert_true(p->entries[i].n_new >= 1);
        assert_true(s->n_computed + p->entries[i].n_new <= s->n_tokens);
        /* blocks cover every position computed this step */
        assert_true(s->n_blocks * BT >= s->n_computed + p->entries[i].n_new);
        total += p->entries[i].n_new;
    }
    assert_int_equal(total, p->n_tokens);
    wk_sched_commit(f->sched);
    for (uint32_t i = 0; i < p->n_entries; i++) {
        wk_seq *s = p->entries[i].seq;
        if (p->entries[i].want_logits) {
            assert_int_equal(s->n_computed, s->n_tokens);
            s->tokens[s->n_tokens++] = 7;
        }
    }
    return p;
}

static bool in_plan(const wk_sched_plan *p, const tseq *t, uint32_t *n_new) {
    for (uint32_t i = 0; i < p->n_entries; i++) {
        if (p->entries[i].seq == &t->s) {
            if (n_new != NULL)
                *n_new = p->entries[i].n_new;
            return true;
        }
    }
    return false;
}

static void test_chunked_prefill_budget(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 64, 32, 8, 8, false);
    tseq a, b;
    seq_init(&a, 1, "t", WK_PRIORITY_INTERACTIVE, 5, 100);
    seq_init(&b, 2, "t", WK_PRIORITY_INTERACTIVE, 100, 200);
    assert_int_equal(wk_sched_add(f.sched, &a.s), CM_OK);
    const wk_sched_plan *p = step(&f, 0); /* a prefills */
    assert_true(in_plan(p, &a, NULL));
    assert_int_equal(wk_sched_add(f.sched, &b.s), CM_OK);
    /* From now on a decodes one token per step while b's prompt goes in chunks of 31. */
    uint32_t chunks = 0;
    while (b.s.n_tokens == 100) {
        p = step(&f, 0);
        uint32_t n = 0;
        assert_true(in_plan(p, &a, &n));
        assert_int_equal(n, 1);
        assert_true(p->n_tokens <= 32);
        if (in_plan(p, &b, &n)) {
            chunks++;
            assert_true(n <= 31);
        }
        assert_true(chunks <= 4);
    }
    assert_int_equal(chunks, 4); /* 31 + 31 + 31 + 7 */
    wk_sched_remove(f.sched, &a.s);
    wk_sched_remove(f.sched, &b.s);
    assert_int_equal(a.s.state, WK_SEQ_DONE);
    fx_fini(&f);
}

/* A long prompt ahead in the running order (higher priority) still leaves every decoder its
 * token in each step: decoders are planned before prefill chunks. */
static void test_decoders_before_prefill(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 64, 32, 8, 8, false);
    tseq dec, big;
    seq_init(&dec, 1, "t", WK_PRIORITY_BATCH, 3, 100);
    seq_init(&big, 2, "t", WK_PRIORITY_INTERACTIVE, 120, 200);
    assert_int_equal(wk_sched_add(f.sched, &dec.s), CM_OK);
    step(&f, 0);
    assert_int_equal(wk_sched_add(f.sched, &big.s), CM_OK);
    uint32_t steps = 0;
    while (big.s.n_tokens == 120) {
        const wk_sched_plan *p = step(&f, 0);
        uint32_t n = 0;
        assert_true(in_plan(p, &dec, &n));
        assert_int_equal(n, 1);
        assert_true(in_plan(p, &big, &n));
        assert_int_equal(n, p->n_tokens - 1);
        assert_true(++steps <= 5);
    }
    assert_int_equal(steps, 4); /* 120 = 31 * 3 + 27 */
    wk_sched_remove(f.sched, &dec.s);
    wk_sched_remove(f.sched, &big.s);
    fx_fini(&f);
}

/* A long prompt being prefilled leaves a quarter of the budget to new requests. */
static void test_admission_during_long_prefill(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 64, 32, 8, 8, false);
    tseq big, small;
    seq_init(&big, 1, "a", WK_PRIORITY_INTERACTIVE, 200, 100);
    seq_init(&small, 2, "b", WK_PRIORITY_INTERACTIVE, 6, 300);
    assert_int_equal(wk_sched_add(f.sched, &big.s), CM_OK);
    const wk_sched_plan *p = step(&f, 0);
    uint32_t n = 0;
    assert_true(in_plan(p, &big, &n));
    assert_int_equal(n, 32); /* nobody waiting: the whole budget */
    assert_int_equal(wk_sched_add(f.sched, &small.s), CM_OK);
    p = step(&f, 0);
    assert_true(in_plan(p, &big, &n));
    assert_int_equal(n, 24);
    assert_true(in_plan(p, &small, &n)); /* admitted at once, whole prompt */
    assert_int_equal(n, 6);
    p = step(&f, 0);
    assert_true(in_plan(p, &small, &n));
    assert_int_equal(n, 1);
    assert_true(in_plan(p, &big, &n));
    assert_int_equal(n, 31); /* queue empty again: no reserve */
    wk_sched_remove(f.sched, &big.s);
    wk_sched_remove(f.sched, &small.s);
    fx_fini(&f);
}

static void test_priority(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 64, 64, 1, 8, false);
    tseq batch[3], inter;
    for (int i = 0; i < 3; i++) {
        seq_init(&batch[i], 10 + (uint64_t)i, "bulk", WK_PRIORITY_BATCH, 4, 0);
        assert_int_equal(wk_sched_add(f.sched, &batch[i].s), CM_OK);
    }
    seq_init(&inter, 20, "web", WK_PRIORITY_INTERACTIVE, 4, 0);
    assert_int_equal(wk_sched_add(f.sched, &inter.s), CM_OK);
    const wk_sched_plan *p = step(&f, 0);
    assert_int_equal(p->n_entries, 1);
    assert_true(in_plan(p, &inter, NULL)); /* queued last, admitted first */
    wk_sched_remove(f.sched, &inter.s);
    p = step(&f, 0);
    assert_true(in_plan(p, &batch[0], NULL));
    wk_sched_remove(f.sched, &batch[0].s);
    wk_sched_remove(f.sched, &batch[1].s); /* removing a waiting sequence */
    assert_int_equal(wk_sched_n_waiting(f.sched), 1);
    p = step(&f, 0);
    assert_true(in_plan(p, &batch[2], NULL));
    wk_sched_remove(f.sched, &batch[2].s);
    fx_fini(&f);
}

static void test_tenant_fairness(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 256, 64, 2, 64, false);
    static tseq flood[50];
    tseq single;
    for (int i = 0; i < 50; i++) {
        seq_init(&flood[i], 100 + (uint64_t)i, "flood", WK_PRIORITY_INTERACTIVE, 3, 0);
        assert_int_equal(wk_sched_add(f.sched, &flood[i].s), CM_OK);
    }
    /* Two flood requests start and hold both slots. */
    const wk_sched_plan *p = step(&f, 0);
    assert_int_equal(p->n_admitted, 2);
    seq_init(&single, 1, "alone", WK_PRIORITY_INTERACTIVE, 3, 0);
    assert_int_equal(wk_sched_add(f.sched, &single.s), CM_OK);
    /* As soon as one slot frees, the single tenant goes before the 48 flood requests left. */
    wk_sched_remove(f.sched, &flood[0].s);
    p = step(&f, 0);
    assert_int_equal(p->n_admitted, 1);
    assert_true(in_plan(p, &single, NULL));
    /* And the flood goes on in order afterwards. */
    wk_sched_remove(f.sched, &single.s);
    p = step(&f, 0);
    assert_true(in_plan(p, &flood[2], NULL));
    for (int i = 1; i < 50; i++)
        wk_sched_remove(f.sched, &flood[i].s);
    assert_int_equal(wk_sched_n_waiting(f.sched), 0);
    fx_fini(&f);
}

static void test_round_robin_three_tenants(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 256, 256, 1, 64, false);
    tseq q[9];
    const char *names[3] = {"a", "b", "c"};
    /* a a a b b b c c c queued; one slot: admission order must alternate a b c a b c ... */
    for (int i = 0; i < 9; i++) {
        seq_init(&q[i], (uint64_t)i, names[i / 3], WK_PRIORITY_INTERACTIVE, 2, 0);
        assert_int_equal(wk_sched_add(f.sched, &q[i].s), CM_OK);
    }
    const int expect[9] = {0, 3, 6, 1, 4, 7, 2, 5, 8};
    for (int k = 0; k < 9; k++) {
        const wk_sched_plan *p = step(&f, 0);
        assert_int_equal(p->n_entries, 1);
        assert_ptr_equal(p->entries[0].seq, &q[expect[k]].s);
        wk_sched_remove(f.sched, &q[expect[k]].s);
    }
    fx_fini(&f);
}

static void test_bounded_queue_and_limits(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 8, 64, 1, 2, false);
    tseq a, b, c, big;
    seq_init(&a, 1, "", WK_PRIORITY_INTERACTIVE, 4, 0);
    seq_init(&b, 2, "", WK_PRIORITY_INTERACTIVE, 4, 0);
    seq_init(&c, 3, "", WK_PRIORITY_INTERACTIVE, 4, 0);
    assert_int_equal(wk_sched_add(f.sched, &a.s), CM_OK);
    assert_int_equal(wk_sched_add(f.sched, &b.s), CM_OK);
    assert_int_equal(wk_sched_add(f.sched, &c.s), CM_ERR_OVERLOADED);
    assert_int_equal(c.s.state, WK_SEQ_NEW);
    seq_init(&big, 4, "", WK_PRIORITY_INTERACTIVE, 33, 0); /* 9 blocks > 8 */
    assert_int_equal(wk_sched_add(f.sched, &big.s), CM_ERR_LIMIT);
    /* Admission makes room in the queue. */
    step(&f, 0);
    assert_int_equal(wk_sched_add(f.sched, &c.s), CM_OK);
    wk_sched_remove(f.sched, &a.s);
    wk_sched_remove(f.sched, &b.s);
    wk_sched_remove(f.sched, &c.s);
    fx_fini(&f);
}

static void test_deadline(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 64, 64, 1, 8, false);
    tseq run, late, patient;
    seq_init(&run, 1, "x", WK_PRIORITY_INTERACTIVE, 4, 0);
    seq_init(&late, 2, "y", WK_PRIORITY_INTERACTIVE, 4, 0);
    seq_init(&patient, 3, "y", WK_PRIORITY_INTERACTIVE, 4, 0);
    late.s.deadline_ms = 1000;
    patient.s.deadline_ms = 5000;
    assert_int_equal(wk_sched_add(f.sched, &run.s), CM_OK);
    assert_int_equal(wk_sched_add(f.sched, &late.s), CM_OK);
    assert_int_equal(wk_sched_add(f.sched, &patient.s), CM_OK);
    const wk_sched_plan *p = step(&f, 500);
    assert_int_equal(p->n_dropped, 0);
    p = step(&f, 1001); /* run holds the only slot; late expires */
    assert_int_equal(p->n_dropped, 1);
    assert_ptr_equal(p->dropped[0].seq, &late.s);
    assert_int_equal(p->dropped[0].reason, CM_ERR_TIMEOUT);
    assert_int_equal(late.s.state, WK_SEQ_DONE);
    assert_int_equal(wk_sched_n_waiting(f.sched), 1);
    /* A running sequence never times out: the deadline is about starting. */
    run.s.deadline_ms = 1;
    p = step(&f, 2000);
    assert_int_equal(p->n_dropped, 0);
    assert_true(in_plan(p, &run, NULL));
    wk_sched_remove(f.sched, &run.s);
    p = step(&f, 2000);
    assert_true(in_plan(p, &patient, NULL));
    wk_sched_remove(f.sched, &patient.s);
    fx_fini(&f);
}

static void test_preemption(void **state) {
    (void)state;
    fixture f;
    /* 6 blocks of 4 tokens. old: batch prio but older; young: interactive, newer;
     * mid: batch, newest -> victim order: batch-youngest first. */
    fx_init(&f, 6, 64, 4, 8, false);
    tseq old, young, mid;
    seq_init(&old, 1, "a", WK_PRIORITY_BATCH, 3, 10);
    seq_init(&young, 2, "b", WK_PRIORITY_INTERACTIVE, 3, 20);
    seq_init(&mid, 3, "c", WK_PRIORITY_BATCH, 3, 30);
    assert_int_equal(wk_sched_add(f.sched, &old.s), CM_OK);
    assert_int_equal(wk_sched_add(f.sched, &young.s), CM_OK);
    assert_int_equal(wk_sched_add(f.sched, &mid.s), CM_OK);
    const wk_sched_plan *p = step(&f, 0);
    assert_int_equal(p->n_admitted, 3);
    /* Each grows one block every 4 tokens; 6 blocks run out at the second boundary. */
    uint64_t preempted = 0;
    for (int i = 0; i < 20 && preempted == 0; i++) {
        p = step(&f, 0);
        preempted += p->n_preempted;
    }
    assert_int_equal(preempted, 1);
    assert_int_equal(mid.s.state, WK_SEQ_WAITING); /* lowest priority, youngest */
    assert_int_equal(mid.s.n_blocks, 0);
    assert_int_equal(mid.s.n_computed, 0);
    assert_true(mid.s.n_tokens > mid.s.n_prompt); /* generated tokens kept */
    uint32_t kept = mid.s.n_tokens;
    assert_int_equal(mid.s.tokens[0], 30);
    /* When the others finish, it resumes by recomputing every kept token. */
    wk_sched_remove(f.sched, &old.s);
    wk_sched_remove(f.sched, &young.s);
    p = step(&f, 0);
    uint32_t n = 0;
    assert_true(in_plan(p, &mid, &n));
    assert_int_equal(n, kept);
    assert_int_equal(mid.s.n_preempted, 1);
    wk_sched_stats st;
    wk_sched_get_stats(f.sched, &st);
    assert_int_equal(st.preemptions, 1);
    wk_sched_remove(f.sched, &mid.s);
    fx_fini(&f);
}

static void test_alone_too_long_dropped(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 2, 64, 2, 8, false);
    tseq a;
    seq_init(&a, 1, "", WK_PRIORITY_INTERACTIVE, 6, 0);
    assert_int_equal(wk_sched_add(f.sched, &a.s), CM_OK);
    const wk_sched_plan *p = NULL;
    bool dropped = false;
    for (int i = 0; i < 10 && !dropped; i++) {
        p = step(&f, 0);
        dropped = p->n_dropped > 0;
    }
    assert_true(dropped);
    assert_int_equal(p->dropped[0].reason, CM_ERR_LIMIT);
    assert_int_equal(a.s.state, WK_SEQ_DONE);
    assert_int_equal(a.s.n_tokens, 9); /* filled both blocks, then sampled one more */
    fx_fini(&f);
}

static void test_prefix_reuse(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 32, 64, 4, 8, true);
    tseq a, b, c;
    seq_init(&a, 1, "", WK_PRIORITY_INTERACTIVE, 14, 500);
    assert_int_equal(wk_sched_add(f.sched, &a.s), CM_OK);
    step(&f, 0);
    wk_sched_remove(f.sched, &a.s);
    assert_int_equal(wk_kv_cache_n_cached(f.kv), 3); /* 3 full prompt blocks published */

    /* Same 14-token prompt: 12 tokens reused, 2 computed. */
    seq_init(&b, 2, "", WK_PRIORITY_INTERACTIVE, 14, 500);
    assert_int_equal(wk_sched_add(f.sched, &b.s), CM_OK);
    const wk_sched_plan *p = step(&f, 0);
    uint32_t n = 0;
    assert_true(in_plan(p, &b, &n));
    assert_int_equal(n, 2);
    assert_int_equal(b.s.n_cached_prompt, 12);
    wk_sched_remove(f.sched, &b.s);

    /* Prompt of exactly 12 tokens: the last block is not reused, its last token is needed. */
    seq_init(&c, 3, "", WK_PRIORITY_INTERACTIVE, 12, 500);
    assert_int_equal(wk_sched_add(f.sched, &c.s), CM_OK);
    p = step(&f, 0);
    assert_true(in_plan(p, &c, &n));
    assert_int_equal(n, 4);
    assert_int_equal(c.s.n_cached_prompt, 8);
    wk_sched_remove(f.sched, &c.s);

    wk_sched_stats st;
    wk_sched_get_stats(f.sched, &st);
    assert_int_equal(st.prefix_queries, 3 + 3 + 2);
    assert_int_equal(st.prefix_hits, 0 + 3 + 2);
    fx_fini(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_prefill_budget),
        cmocka_unit_test(test_decoders_before_prefill),
        cmocka_unit_test(test_admission_during_long_prefill),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_tenant_fairness),
        cmocka_unit_test(test_round_robin_three_tenants),
        cmocka_unit_test(test_bounded_queue_and_limits),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_alone_too_long_dropped),
        cmocka_unit_test(test_prefix_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
