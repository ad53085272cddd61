/*
 * Engine tests.
 *
 * Part 1 drives the engine with a mock backend whose "KV cache" stores (token, position) per
 * block slot and whose logits are a hash of everything it reads back through the block table.
 * Any paging mistake (wrong block, stale prefix, lost token after preemption) changes the
 * generated tokens, so equality with a single-sequence run is a strong check. It runs in
 * milliseconds, which lets it cover many schedules.
 *
 * Part 2 runs the same properties on the bundled model with the CPU backend
 * (SLUICE_TEST_MODEL; skipped when unset).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm_clock.h"
#include "backend.h"
#include "engine.h"
#include "grammar.h"
#ifdef SLUICE_HAVE_JANSSON
#include <jansson.h>
#include "json_schema.h"
#endif
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

/* ---- mock backend ----------------------------------------------------------------------- */

#define MOCK_VOCAB 97

struct wk_backend {
    uint32_t n_blocks, block_tokens, max_seqs, max_batch_tokens, max_blocks_per_seq;
    int32_t *kv_tok; /* (n_blocks, block_tokens) */
    int32_t *kv_pos; /* (n_blocks, block_tokens) */
    int fail_next;   /* forward fails this many more times */
    int broken;      /* a bad block id or position was seen */
    uint64_t forwards;
};

static struct wk_backend *g_mock; /* the live mock instance (tests only) */

static cm_err mock_create(const wk_model *m, const wk_backend_config *cfg, wk_backend **out,
                          char *err, size_t errlen) {
    (void)m;
    (void)err;
    (void)errlen;
    struct wk_backend *be = calloc(1, sizeof(*be));
    be->n_blocks = cfg->n_blocks;
    be->block_tokens = cfg->block_tokens;
    be->max_seqs = cfg->max_seqs;
    be->max_batch_tokens = cfg->max_batch_tokens;
    be->max_blocks_per_seq = cfg->max_blocks_per_seq;
    be->kv_tok = calloc((size_t)cfg->n_blocks * cfg->block_tokens, sizeof(int32_t));
    be->kv_pos = calloc((size_t)cfg->n_blocks * cfg->block_tokens, sizeof(int32_t));
    for (size_t i = 0; i < (size_t)cfg->n_blocks * cfg->block_tokens; i++)
        be->kv_pos[i] = -1;
    g_mock = be;
    *out = be;
    return CM_OK;
}

static void mock_destroy(wk_backend *be) {
    if (be == NULL)
        return;
    if (g_mock == be)
        g_mock = NULL;
    free(be->kv_tok);
    free(be->kv_pos);
    free(be);
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

static size_t slot_of(const wk_backend *be, const int32_t *table, int32_t pos) {
    uint32_t k = (uint32_t)pos / be->block_tokens;
    if (k >= be->max_blocks_per_seq) {
        return SIZE_MAX;
    }
    int32_t b = table[k];
    if (b < 0 || (uint32_t)b >= be->n_blocks)
        return SIZE_MAX;
    return (size_t)b * be->block_tokens + (uint32_t)pos % be->block_tokens;
}

static cm_err mock_forward(wk_backend *be, const wk_batch *batch, float *logits) {
    be->forwards++;
    if (be->fail_next > 0) {
        be->fail_next--;
        return CM_ERR_BACKEND;
    }
    if (batch->n_seqs > be->max_seqs || batch->n_tokens > be->max_batch_tokens ||
        batch->seq_start[batch->n_seqs] != batch->n_tokens)
        be->broken = 1;
    for (uint32_t s = 0; s < batch->n_seqs; s++) {
        const int32_t *table = &batch->block_table[(size_t)s * be->max_blocks_per_seq];
        uint32_t t0 = batch->seq_start[s], t1 = batch->seq_start[s + 1];
        if (t1 <= t0) {
            be->broken = 1;
            continue;
        }
        for (uint32_t t = t0; t < t1; t++) {
            if (t > t0 && batch->positions[t] != batch->positions[t - 1] + 1)
                be->broken = 1;
            size_t slot = slot_of(be, table, batch->positions[t]);
            if (slot == SIZE_MAX) {
                be->broken = 1;
                continue;
            }
            be->kv_tok[slot] = batch->tokens[t];
            be->kv_pos[slot] = batch->positions[t];
        }
        if (!batch->want_logits[s])
            continue;
        /* "Attention": read the whole history back through the block table. */
        int32_t last = batch->positions[t1 - 1];
        uint64_t h = 0x1234567ull;
        for (int32_t p = 0; p <= last; p++) {
            size_t slot = slot_of(be, table, p);
            if (slot == SIZE_MAX || be->kv_pos[slot] != p) {
                be->broken = 1;
                continue;
            }
            h = mix(h ^ (uint64_t)(uint32_t)be->kv_tok[slot] ^ ((uint64_t)p << 40));
        }
        float *row = &logits[(size_t)s * MOCK_VOCAB];
        for (uint32_t v = 0; v < MOCK_VOCAB; v++)
            row[v] = (float)(mix(h + v) >> 40) / (float)(1u << 24) * 8.0f;
    }
    return CM_OK;
}

static const wk_backend_ops mock_ops = {
    .name = "mock",
    .create = mock_create,
    .destroy = mock_destroy,
    .forward = mock_forward,
    .free_memory = NULL,
    .healthy = NULL,
};

static wk_model mock_model(void) {
    wk_model m;
    memset(&m, 0, sizeof(m));
    m.hp.n_vocab = MOCK_VOCAB;
    m.hp.n_ctx_train = 512;
    m.hp.n_embd = 8;
    m.hp.n_layer = 2;
    m.hp.n_head = 2;
    m.hp.n_head_kv = 1;
    m.hp.head_dim = 4;
    m.hp.n_ff = 16;
    snprintf(m.arch, sizeof(m.arch), "mock");
    return m;
}

/* ---- event collection ------------------------------------------------------------------- */

#define MAX_OUT 512

typedef struct result {
    int32_t toks[MAX_OUT];
    uint32_t n;
    char text[4096];
    size_t text_len;
    bool finished;
    bool errored;
    wk_finish_reason reason;
    cm_err err;
    wk_usage usage;
    wk_timing timing;
    uint32_t token_events;
    uint64_t first_token_step; /* engine step count when the first token came */
    float first_logprob;
    uint32_t n_top;
} result;

static uint64_t g_steps; /* steps taken by run_*: lets callbacks stamp progress */

static void on_event(const wk_event *ev, void *arg) {
    result *r = arg;
    assert_false(r->finished || r->errored); /* nothing after the last event */
    if (ev->kind == WK_EVENT_TOKENS) {
        if (r->token_events == 0)
            r->first_token_step = g_steps;
        r->token_events++;
        for (uint32_t i = 0; i < ev->n_tokens && r->n < MAX_OUT; i++)
            r->toks[r->n++] = ev->token_ids[i];
        if (ev->logprobs != NULL && r->token_events == 1) {
            r->first_logprob = ev->logprobs[0].logprob;
            r->n_top = ev->logprobs[0].n_top;
        }
    } else if (ev->kind == WK_EVENT_FINISHED) {
        r->finished = true;
        r->reason = ev->finish_reason;
        r->usage = ev->usage;
        r->timing = ev->timing;
    } else {
        r->errored = true;
        r->err = ev->err;
        assert_non_null(ev->message);
    }
    if (ev->text_len > 0) {
        assert_true(r->text_len + ev->text_len < sizeof(r->text));
        memcpy(r->text + r->text_len, ev->text, ev->text_len);
        r->text_len += ev->text_len;
        r->text[r->text_len] = '\0';
    }
}

typedef struct job {
    int32_t prompt[400];
    uint32_t n_prompt;
    uint32_t max_tokens;
    uint32_t join_step; /* submit when this many steps have run */
    float temperature;
    uint64_t seed;
    wk_priority priority;
    const char *tenant;
    wk_grammar *grammar; /* borrowed; NULL = unconstrained */
    bool stop_at_eos;    /* ignore_eos off */
} job;

static void make_prompt(job *j, uint32_t n, uint32_t salt, uint32_t n_vocab) {
    j->n_prompt = n;
    for (uint32_t i = 0; i < n; i++)
        j->prompt[i] = (int32_t)((i * 7u + salt * 13u + (i * i) % 5u) % (n_vocab - 4) + 3);
}

static cm_err submit_job(wk_engine *e, const job *j, uint64_t id, result *r) {
    wk_request req;
    memset(&req, 0, sizeof(req));
    req.id = id;
    snprintf(req.tenant, sizeof(req.tenant), "%s", j->tenant != NULL ? j->tenant : "");
    req.priority = j->priority;
    req.prompt = j->prompt;
    req.n_prompt = j->n_prompt;
    req.max_tokens = j->max_tokens;
    wk_sampling_defaults(&req.sampling);
    req.sampling.temperature = j->temperature;
    req.sampling.seed = j->seed;
    req.ignore_eos = !j->stop_at_eos;
    req.grammar = j->grammar;
    req.cb = on_event;
    req.cb_arg = r;
    char err[256];
    return wk_engine_submit(e, &req, err, sizeof(err));
}

static void run_until_idle(wk_engine *e, uint32_t max_steps) {
    uint32_t n = 0;
    while (wk_engine_has_work(e)) {
        bool did = false;
        assert_int_equal(wk_engine_step(e, &did), CM_OK);
        g_steps++;
        assert_true(++n <= max_steps);
    }
}

/* run_jobs submits job i at its join_step and steps until everything finished. */
static void run_jobs(wk_engine *e, const job *jobs, uint32_t n_jobs, result *res,
                     uint32_t max_steps) {
    memset(res, 0, sizeof(*res) * n_jobs);
    uint32_t submitted = 0, step = 0;
    while (submitted < n_jobs || wk_engine_has_work(e)) {
        for (uint32_t i = 0; i < n_jobs; i++) {
            if (jobs[i].join_step == step) {
                assert_int_equal(submit_job(e, &jobs[i], 1000 + i, &res[i]), CM_OK);
                submitted++;
            }
        }
        bool did = false;
        assert_int_equal(wk_engine_step(e, &did), CM_OK);
        g_steps++;
        step++;
        assert_true(step <= max_steps);
    }
    for (uint32_t i = 0; i < n_jobs; i++) {
        assert_true(res[i].finished);
        assert_false(res[i].errored);
    }
}

static void assert_all_free(const wk_engine *e) {
    wk_engine_stats st;
    wk_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.waiting, 0);
    assert_true(st.kv_blocks_cached <= st.kv_blocks_total);
}

static wk_engine *mock_engine(const wk_model *m, uint32_t n_blocks, uint32_t block_tokens,
                              uint32_t budget, uint32_t max_running, bool prefix) {
    wk_engine_config c;
    wk_engine_config_defaults(&c);
    c.backend = &mock_ops;
    c.block_tokens = block_tokens;
    c.kv_dtype = WK_DTYPE_F16;
    c.kv_cache_bytes =
        (uint64_t)n_blocks * block_tokens * wk_kv_bytes_per_token(&m->hp, c.kv_dtype);
    c.max_batch_tokens = budget;
    c.max_running = max_running;
    c.max_waiting = 64;
    c.prefix_cache = prefix;
    wk_engine *e = NULL;
    char err[256];
    assert_int_equal(wk_engine_create(m, NULL, &c, &e, err, sizeof(err)), CM_OK);
    wk_engine_stats st;
    wk_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_total, n_blocks);
    return e;
}

/* reference: each job alone, generous cache, no prefix cache. */
static void run_alone(const wk_model *m, const job *jobs, uint32_t n, result *out) {
    for (uint32_t i = 0; i < n; i++) {
        wk_engine *e = mock_engine(m, 256, 16, 512, 8, false);
        job j = jobs[i];
        j.join_step = 0;
        run_jobs(e, &j, 1, &out[i], 1000);
        assert_false(g_mock->broken);
        assert_all_free(e);
        wk_engine_destroy(e);
    }
}

static void assert_same_tokens(const result *a, const result *b, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        bool same = a[i].n == b[i].n && a[i].reason == b[i].reason &&
                    memcmp(a[i].toks, b[i].toks, a[i].n * sizeof(int32_t)) == 0;
        if (!same) {
            fprintf(stderr, "request %u differs:\n  expected", i);
            for (uint32_t k = 0; k < a[i].n; k++)
                fprintf(stderr, " %d", a[i].toks[k]);
            fprintf(stderr, "\n  got     ");
            for (uint32_t k = 0; k < b[i].n; k++)
                fprintf(stderr, " %d", b[i].toks[k]);
            fprintf(stderr, "\n");
        }
        assert_true(same);
    }
}

#define N_JOBS 6

static void standard_jobs(job *jobs, uint32_t n_vocab) {
    static const uint32_t lens[N_JOBS] = {3, 17, 40, 5, 33, 64};
    static const uint32_t gen[N_JOBS] = {20, 9, 15, 30, 12, 25};
    memset(jobs, 0, sizeof(job) * N_JOBS);
    for (uint32_t i = 0; i < N_JOBS; i++) {
        make_prompt(&jobs[i], lens[i], i, n_vocab);
        jobs[i].max_tokens = gen[i];
        jobs[i].join_step = i * 3;
    }
    /* two seeded samplers among the greedy ones */
    jobs[1].temperature = 0.8f;
    jobs[1].seed = 42;
    jobs[4].temperature = 1.2f;
    jobs[4].seed = 7;
}

static void test_mock_batched_equals_single(void **state) {
    (void)state;
    wk_model m = mock_model();
    job jobs[N_JOBS];
    standard_jobs(jobs, MOCK_VOCAB);
    result alone[N_JOBS], together[N_JOBS];
    run_alone(&m, jobs, N_JOBS, alone);
    for (uint32_t i = 0; i < N_JOBS; i++) {
        assert_int_equal(alone[i].n, jobs[i].max_tokens);
        assert_int_equal(alone[i].reason, WK_FINISH_LENGTH);
        assert_int_equal(alone[i].usage.prompt_tokens, jobs[i].n_prompt);
        assert_int_equal(alone[i].usage.completion_tokens, jobs[i].max_tokens);
        assert_true(alone[i].timing.queue_ms >= 0.0);
        assert_true(alone[i].timing.prefill_ms >= 0.0);
        assert_true(alone[i].timing.decode_ms >= 0.0);
    }
    /* Budget 24 forces chunked prefill of the longer prompts while others decode. */
    wk_engine *e = mock_engine(&m, 256, 16, 24, 8, false);
    run_jobs(e, jobs, N_JOBS, together, 2000);
    assert_false(g_mock->broken);
    assert_same_tokens(alone, together, N_JOBS);
    assert_all_free(e);
    wk_engine_stats st;
    wk_engine_get_stats(e, &st);
    uint64_t gen = 0;
    for (uint32_t i = 0; i < N_JOBS; i++)
        gen += jobs[i].max_tokens;
    assert_int_equal(st.generated_tokens, gen);
    assert_int_equal(st.preemptions, 0);
    wk_engine_destroy(e);
}

static void test_mock_prefix_hits_equal_cold(void **state) {
    (void)state;
    wk_model m = mock_model();
    job base[3];
    memset(base, 0, sizeof(base));
    /* Three prompts sharing a 48-token prefix, then different tails. */
    for (int i = 0; i < 3; i++) {
        make_prompt(&base[i], 48 + 5 * (uint32_t)i + 3, 99, MOCK_VOCAB);
        for (uint32_t k = 48; k < base[i].n_prompt; k++)
            base[i].prompt[k] = (int32_t)(5 + (uint32_t)i * 11 + k) % MOCK_VOCAB;
        base[i].max_tokens = 10;
        base[i].join_step = (uint32_t)i * 40; /* one after another: the cache is warm */
    }
    result cold[3], warm[3];
    run_alone(&m, base, 3, cold);
    wk_engine *e = mock_engine(&m, 128, 16, 512, 8, true);
    run_jobs(e, base, 3, warm, 500);
    assert_false(g_mock->broken);
    assert_same_tokens(cold, warm, 3);
    assert_int_equal(warm[0].usage.cached_prompt_tokens, 0);
    assert_int_equal(warm[1].usage.cached_prompt_tokens, 48);
    assert_int_equal(warm[2].usage.cached_prompt_tokens, 48);
    wk_engine_stats st;
    wk_engine_get_stats(e, &st);
    assert_true(st.prefix_hits >= 6);
    assert_true(st.prefix_queries >= st.prefix_hits);
    assert_true(st.kv_blocks_cached > 0); /* finished prompts stay reusable */
    assert_all_free(e);

    /* The very same prompt again: everything but the last block comes from the cache. */
    result again;
    job j = base[2];
    j.join_step = 0;
    run_jobs(e, &j, 1, &again, 100);
    assert_same_tokens(&cold[2], &again, 1);
    assert_int_equal(again.usage.cached_prompt_tokens, 48);
    assert_all_free(e);
    wk_engine_destroy(e);
}

static void test_mock_eviction_under_pressure(void **state) {
    (void)state;
    wk_model m = mock_model();
    enum { N = 12 };
    job jobs[N];
    memset(jobs, 0, sizeof(jobs));
    for (uint32_t i = 0; i < N; i++) {
        /* pairs share a prefix: i and i+1 for even i */
        make_prompt(&jobs[i], 30 + (i % 3) * 7, i / 2, MOCK_VOCAB);
        jobs[i].prompt[jobs[i].n_prompt - 1] = (int32_t)(i % MOCK_VOCAB);
        jobs[i].max_tokens = 6 + i % 4;
        jobs[i].join_step = i * 2;
    }
    result cold[N], hot[N];
    run_alone(&m, jobs, N, cold);
    /* 14 blocks of 8 tokens: a few sequences at a time; cached blocks must be evicted. */
    wk_engine *e = mock_engine(&m, 14, 8, 64, 4, true);
    run_jobs(e, jobs, N, hot, 3000);
    assert_false(g_mock->broken);
    assert_same_tokens(cold, hot, N);
    assert_all_free(e);
    wk_engine_destroy(e);
}

static void test_mock_preemption_equal(void **state) {
    (void)state;
    wk_model m = mock_model();
    job jobs[N_JOBS];
    standard_jobs(jobs, MOCK_VOCAB);
    for (uint32_t i = 0; i < N_JOBS; i++)
        jobs[i].join_step = i; /* all running at once */
    jobs[5].priority = WK_PRIORITY_BATCH;
    result alone[N_JOBS], tight[N_JOBS];
    run_alone(&m, jobs, N_JOBS, alone);
    for (int prefix = 0; prefix < 2; prefix++) {
        /* 24 blocks of 4 tokens = 96 tokens for 6 sequences that need up to 89 each. */
        wk_engine *e = mock_engine(&m, 24, 4, 64, 8, prefix != 0);
        run_jobs(e, jobs, N_JOBS, tight, 5000);
        assert_false(g_mock->broken);
        assert_same_tokens(alone, tight, N_JOBS);
        wk_engine_stats st;
        wk_engine_get_stats(e, &st);
        assert_true(st.preemptions > 0);
        assert_all_free(e);
        wk_engine_destroy(e);
    }
}

static void test_mock_cancel(void **state) {
    (void)state;
    wk_model m = mock_model();
    wk_engine *e = mock_engine(&m, 64, 16, 512, 8, true);
    job a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    make_prompt(&a, 40, 1, MOCK_VOCAB);
    make_prompt(&b, 20, 2, MOCK_VOCAB);
    a.max_tokens = b.max_tokens = 50;
    result ra, rb;
    memset(&ra, 0, sizeof(ra));
    memset(&rb, 0, sizeof(rb));
    assert_int_equal(submit_job(e, &a, 1, &ra), CM_OK);
    assert_int_equal(submit_job(e, &b, 2, &rb), CM_OK);
    bool did;
    for (int i = 0; i < 3; i++)
        assert_int_equal(wk_engine_step(e, &did), CM_OK);
    wk_engine_stats before, after;
    wk_engine_get_stats(e, &before);
    assert_int_equal(wk_engine_cancel(e, 1), CM_OK);
    wk_engine_get_stats(e, &after);
    /* Blocks freed at once: a's 3 blocks (its 2 full ones stay cached for reuse). */
    assert_int_equal(after.kv_blocks_used, before.kv_blocks_used - 3);
    assert_int_equal(after.kv_blocks_cached, before.kv_blocks_cached + 2);
    assert_false(ra.finished);
    assert_int_equal(wk_engine_cancel(e, 1), CM_ERR_NOT_FOUND);
    assert_int_equal(wk_engine_cancel(e, 777), CM_ERR_NOT_FOUND);
    assert_int_equal(wk_engine_step(e, &did), CM_OK);
    assert_true(ra.finished);
    assert_int_equal(ra.reason, WK_FINISH_CANCELLED);
    assert_int_equal(ra.usage.completion_tokens, 3);
    /* Cancelling a waiting request works too. */
    job c = b;
    result rc;
    memset(&rc, 0, sizeof(rc));
    assert_int_equal(submit_job(e, &c, 3, &rc), CM_OK);
    assert_int_equal(wk_engine_cancel(e, 3), CM_OK);
    assert_int_equal(wk_engine_step(e, &did), CM_OK);
    assert_true(rc.finished);
    assert_int_equal(rc.reason, WK_FINISH_CANCELLED);
    assert_int_equal(rc.n, 0);
    run_until_idle(e, 200);
    assert_true(rb.finished);
    assert_int_equal(rb.n, 50);
    assert_all_free(e);
    wk_engine_destroy(e);
}

static void test_mock_queue_full_and_deadline(void **state) {
    (void)state;
    wk_model m = mock_model();
    wk_engine_config c;
    wk_engine_config_defaults(&c);
    c.backend = &mock_ops;
    c.kv_cache_bytes = 64ull * 16 * wk_kv_bytes_per_token(&m.hp, WK_DTYPE_F16);
    c.max_running = 1;
    c.max_waiting = 2;
    wk_engine *e = NULL;
    assert_int_equal(wk_engine_create(&m, NULL, &c, &e, NULL, 0), CM_OK);
    job j;
    memset(&j, 0, sizeof(j));
    make_prompt(&j, 8, 3, MOCK_VOCAB);
    j.max_tokens = 5;
    result r[4];
    memset(r, 0, sizeof(r));
    assert_int_equal(submit_job(e, &j, 1, &r[0]), CM_OK);
    assert_int_equal(submit_job(e, &j, 2, &r[1]), CM_OK);
    assert_int_equal(submit_job(e, &j, 3, &r[2]), CM_ERR_OVERLOADED);
    bool did;
    assert_int_equal(wk_engine_step(e, &did), CM_OK); /* 1 runs, 2 waits */
    /* A request whose deadline has already passed fails with TIMEOUT at the next step. */
    wk_request req;
    memset(&req, 0, sizeof(req));
    req.id = 4;
    req.prompt = j.prompt;
    req.n_prompt = j.n_prompt;
    req.max_tokens = 5;
    wk_sampling_defaults(&req.sampling);
    req.sampling.temperature = 0;
    req.deadline_ms = cm_clock_mono_ms() - 1;
    req.cb = on_event;
    req.cb_arg = &r[3];
    assert_int_equal(wk_engine_submit(e, &req, NULL, 0), CM_OK);
    assert_int_equal(wk_engine_step(e, &did), CM_OK);
    assert_true(r[3].errored);
    assert_int_equal(r[3].err, CM_ERR_TIMEOUT);
    assert_int_equal(r[3].n, 0);
    run_until_idle(e, 100);
    assert_true(r[0].finished && r[1].finished);
    assert_false(r[2].finished || r[2].errored);
    assert_all_free(e);
    wk_engine_destroy(e);
}

static void test_mock_submit_validation(void **state) {
    (void)state;
    wk_model m = mock_model();
    wk_engine *e = mock_engine(&m, 16, 16, 512, 4, true); /* 256 tokens of KV */
    result r;
    memset(&r, 0, sizeof(r));
    int32_t prompt[300];
    for (int i = 0; i < 300; i++)
        prompt[i] = 5;
    wk_request req;
    memset(&req, 0, sizeof(req));
    req.id = 1;
    req.prompt = prompt;
    req.n_prompt = 10;
    req.max_tokens = 4;
    wk_sampling_defaults(&req.sampling);
    req.cb = on_event;
    req.cb_arg = &r;
    char err[256];

    wk_request bad = req;
    bad.cb = NULL;
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_INVALID);
    bad = req;
    bad.n_prompt = 0;
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_INVALID);
    /* A grammar needs a tokenizer (token bytes); this engine has none. */
    wk_grammar *g = NULL;
    assert_int_equal(wk_grammar_compile("root ::= \"a\"", 12, NULL, &g, NULL, 0), CM_OK);
    bad = req;
    bad.grammar = g;
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_INVALID);
    assert_non_null(strstr(err, "tokenizer"));
    wk_grammar_unref(g);
    prompt[3] = MOCK_VOCAB; /* out of vocabulary */
    assert_int_equal(wk_engine_submit(e, &req, err, sizeof(err)), CM_ERR_INVALID);
    assert_non_null(strstr(err, "vocabulary"));
    prompt[3] = -1;
    assert_int_equal(wk_engine_submit(e, &req, err, sizeof(err)), CM_ERR_INVALID);
    prompt[3] = 5;
    bad = req;
    bad.max_tokens = 510; /* 10 + 510 > 512 */
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_CONTEXT_LENGTH);
    bad = req;
    bad.n_prompt = 280; /* fits the context (512), not the 256-token cache */
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_LIMIT);
    bad = req;
    bad.sampling.top_p = 1.5f;
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_INVALID);
    const char *stops[1] = {"x"};
    bad = req;
    bad.stop = stops;
    bad.n_stop = 1; /* no tokenizer in this engine */
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_INVALID);
    bad = req;
    memset(bad.tenant, 'a', sizeof(bad.tenant)); /* not terminated */
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_INVALID);
    bad = req;
    bad.priority = (wk_priority)9;
    assert_int_equal(wk_engine_submit(e, &bad, err, sizeof(err)), CM_ERR_INVALID);

    assert_int_equal(wk_engine_submit(e, &req, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_engine_submit(e, &req, err, sizeof(err)), CM_ERR_EXISTS);
    /* max_tokens 0: up to the context length. */
    result r2;
    memset(&r2, 0, sizeof(r2));
    wk_request open = req;
    open.id = 2;
    open.max_tokens = 0;
    open.n_prompt = 200;
    open.cb_arg = &r2;
    assert_int_equal(wk_engine_submit(e, &open, err, sizeof(err)), CM_OK);
    run_until_idle(e, 2000);
    assert_true(r.finished);
    assert_int_equal(r.n, 4);
    /* 200 prompt tokens + generated must stop at the 256-token cache (alone, it cannot grow
     * further): a LENGTH finish, not a crash or a hang. */
    assert_true(r2.finished);
    assert_int_equal(r2.reason, WK_FINISH_LENGTH);
    assert_int_equal(r2.n, 57);
    assert_all_free(e);
    assert_int_equal(wk_engine_max_context(e), 512);
    assert_int_equal(wk_engine_kv_bytes_per_token(e), 2 * 2 * 1 * 4 * 2);
    wk_engine_destroy(e);
}

static void test_mock_backend_failure(void **state) {
    (void)state;
    wk_model m = mock_model();
    wk_engine *e = mock_engine(&m, 64, 16, 512, 8, true);
    job a;
    memset(&a, 0, sizeof(a));
    make_prompt(&a, 12, 4, MOCK_VOCAB);
    a.max_tokens = 5;
    result r1, r2;
    memset(&r1, 0, sizeof(r1));
    memset(&r2, 0, sizeof(r2));
    assert_int_equal(submit_job(e, &a, 1, &r1), CM_OK);
    g_mock->fail_next = 1;
    bool did;
    assert_int_equal(wk_engine_step(e, &did), CM_ERR_BACKEND);
    assert_true(did);
    assert_true(r1.errored);
    assert_int_equal(r1.err, CM_ERR_BACKEND);
    assert_all_free(e);
    /* The engine carries on with later requests. */
    assert_int_equal(submit_job(e, &a, 2, &r2), CM_OK);
    run_until_idle(e, 50);
    assert_true(r2.finished);
    assert_int_equal(r2.n, 5);
    wk_engine_destroy(e);
}

/* prompt_logits_out receives exactly the row the backend produced for the last prompt token
 * (recomputed here the way the mock does), even when most of the prompt came from the cache. */
static void test_mock_prompt_logits(void **state) {
    (void)state;
    wk_model m = mock_model();
    wk_engine *e = mock_engine(&m, 64, 16, 512, 4, true);
    job j;
    memset(&j, 0, sizeof(j));
    make_prompt(&j, 37, 8, MOCK_VOCAB);
    j.max_tokens = 3;
    uint64_t h = 0x1234567ull;
    for (uint32_t p = 0; p < j.n_prompt; p++)
        h = mix(h ^ (uint64_t)(uint32_t)j.prompt[p] ^ ((uint64_t)p << 40));
    float want[MOCK_VOCAB];
    for (uint32_t v = 0; v < MOCK_VOCAB; v++)
        want[v] = (float)(mix(h + v) >> 40) / (float)(1u << 24) * 8.0f;
    for (int pass = 0; pass < 2; pass++) { /* cold, then with 32 tokens from the cache */
        float got[MOCK_VOCAB];
        memset(got, 0, sizeof(got));
        result r;
        memset(&r, 0, sizeof(r));
        wk_request req;
        memset(&req, 0, sizeof(req));
        req.id = 5 + (uint64_t)pass;
        req.prompt = j.prompt;
        req.n_prompt = j.n_prompt;
        req.max_tokens = j.max_tokens;
        wk_sampling_defaults(&req.sampling);
        req.sampling.temperature = 0;
        req.cb = on_event;
        req.cb_arg = &r;
        req.prompt_logits_out = got;
        assert_int_equal(wk_engine_submit(e, &req, NULL, 0), CM_OK);
        run_until_idle(e, 50);
        assert_true(r.finished);
        assert_int_equal(r.usage.cached_prompt_tokens, pass == 0 ? 0 : 32);
        assert_memory_equal(got, want, sizeof(want));
    }
    assert_all_free(e);
    wk_engine_destroy(e);
}

static void test_mock_fairness_priority(void **state) {
    (void)state;
    wk_model m = mock_model();
    wk_engine_config c;
    wk_engine_config_defaults(&c);
    c.backend = &mock_ops;
    c.kv_cache_bytes = 256ull * 16 * wk_kv_bytes_per_token(&m.hp, WK_DTYPE_F16);
    c.max_running = 2;
    c.max_waiting = 100;
    wk_engine *e = NULL;
    assert_int_equal(wk_engine_create(&m, NULL, &c, &e, NULL, 0), CM_OK);
    static job flood;
    static result rf[50];
    result single, urgent;
    memset(&flood, 0, sizeof(flood));
    memset(rf, 0, sizeof(rf));
    memset(&single, 0, sizeof(single));
    memset(&urgent, 0, sizeof(urgent));
    make_prompt(&flood, 6, 5, MOCK_VOCAB);
    flood.max_tokens = 4;
    flood.tenant = "flood";
    flood.priority = WK_PRIORITY_BATCH;
    for (int i = 0; i < 50; i++)
        assert_int_equal(submit_job(e, &flood, 100 + (uint64_t)i, &rf[i]), CM_OK);
    bool did;
    assert_int_equal(wk_engine_step(e, &did), CM_OK);
    g_steps = 0;
    job one = flood;
    one.tenant = "alone";
    assert_int_equal(submit_job(e, &one, 1, &single), CM_OK);
    /* An interactive request jumps every batch request. */
    job hot = flood;
    hot.tenant = "flood";
    hot.priority = WK_PRIORITY_INTERACTIVE;
    assert_int_equal(submit_job(e, &hot, 2, &urgent), CM_OK);
    while (wk_engine_has_work(e) && !(single.finished && urgent.finished)) {
        assert_int_equal(wk_engine_step(e, &did), CM_OK);
        g_steps++;
        assert_true(g_steps < 200);
    }
    /* Both slots are busy with 4-token flood requests: a slot frees within 4 steps. */
    assert_true(urgent.first_token_step <= 5);
    assert_true(single.first_token_step <= 10);
    uint32_t flood_done_before = 0;
    for (int i = 0; i < 50; i++)
        flood_done_before += rf[i].finished;
    assert_true(flood_done_before <= 6); /* not queued behind 48 flood requests */
    run_until_idle(e, 1000);
    for (int i = 0; i < 50; i++)
        assert_true(rf[i].finished);
    assert_all_free(e);
    wk_engine_destroy(e);
}

/* Random workloads on a small pool: shared prefixes, both priorities, several tenants, random
 * join steps and cancels. Every request that was not cancelled must produce exactly what it
 * produces alone, and the pool must end all-free. */
static void test_mock_random_schedule(void **state) {
    (void)state;
    wk_model m = mock_model();
    enum { N = 24 };
    static job jobs[N];
    static result alone[N], mixed[N];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uint64_t preemptions = 0, hits = 0;
    uint32_t n_cancelled = 0;
    for (int round = 0; round < 4; round++) {
        memset(jobs, 0, sizeof(jobs));
        for (uint32_t i = 0; i < N; i++) {
            x = mix(x + i);
            uint32_t len = 1 + (uint32_t)(x % 70);
            make_prompt(&jobs[i], len, (uint32_t)(x >> 8) % 3, MOCK_VOCAB); /* 3 prefixes */
            if (len > 20)
                jobs[i].prompt[len - 1] = (int32_t)((x >> 16) % MOCK_VOCAB);
            jobs[i].max_tokens = 1 + (uint32_t)((x >> 24) % 30);
            jobs[i].join_step = (uint32_t)((x >> 32) % 40);
            jobs[i].priority = (x >> 40) % 3 == 0 ? WK_PRIORITY_BATCH : WK_PRIORITY_INTERACTIVE;
            jobs[i].tenant = (x >> 44) % 2 ? "a" : "b";
            if ((x >> 48) % 4 == 0) {
                jobs[i].temperature = 0.9f;
                jobs[i].seed = x;
            }
        }
        run_alone(&m, jobs, N, alone);
        /* 20 blocks of 8 tokens: a sequence needs up to 13; preemption and eviction happen. */
        wk_engine *e = mock_engine(&m, 20, 8, 40, 6, round % 2 == 0);
        memset(mixed, 0, sizeof(mixed));
        bool cancelled[N] = {false};
        uint32_t submitted = 0;
        for (uint32_t step = 0; submitted < N || wk_engine_has_work(e); step++) {
            for (uint32_t i = 0; i < N; i++) {
                if (jobs[i].join_step == step) {
                    assert_int_equal(submit_job(e, &jobs[i], i, &mixed[i]), CM_OK);
                    submitted++;
                }
            }
            x = mix(x);
            uint32_t victim = (uint32_t)(x % N);
            if (x % 16 == 0 && jobs[victim].join_step < step && !mixed[victim].finished &&
                !mixed[victim].errored && !cancelled[victim]) {
                assert_int_equal(wk_engine_cancel(e, victim), CM_OK);
                cancelled[victim] = true;
            }
            bool did = false;
            assert_int_equal(wk_engine_step(e, &did), CM_OK);
            assert_true(step < 5000);
        }
        assert_false(g_mock->broken);
        for (uint32_t i = 0; i < N; i++) {
            assert_true(mixed[i].finished);
            if (cancelled[i]) {
                assert_int_equal(mixed[i].reason, WK_FINISH_CANCELLED);
                assert_true(mixed[i].n <= alone[i].n);
                assert_memory_equal(mixed[i].toks, alone[i].toks, mixed[i].n * sizeof(int32_t));
            } else {
                assert_same_tokens(&alone[i], &mixed[i], 1);
            }
        }
        assert_all_free(e);
        wk_engine_stats st;
        wk_engine_get_stats(e, &st);
        preemptions += st.preemptions;
        hits += st.prefix_hits;
        for (uint32_t i = 0; i < N; i++)
            n_cancelled += cancelled[i];
        wk_engine_destroy(e);
    }
    /* The workload did exercise what it is meant to. */
    fprintf(stderr, "random schedule: %llu preemptions, %llu prefix hits, %u cancels\n",
            (unsigned long long)preemptions, (unsigned long long)hits, n_cancelled);
    assert_true(preemptions > 0);
    assert_true(hits > 0);
    assert_true(n_cancelled > 0);
}

/* ---- real model ------------------------------------------------------------------------- */

typedef struct real {
    wk_gguf *g;
    wk_model m;
    wk_tokenizer *tok;
    bool ok;
} real;

static real g_real;

static int real_setup(void **state) {
    (void)state;
    const char *path = getenv("SLUICE_TEST_MODEL");
    memset(&g_real, 0, sizeof(g_real));
    if (path == NULL || path[0] == '\0')
        return 0;
    char err[256];
    if (wk_gguf_open(path, &g_real.g, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, "engine_test: %s\n", err);
        return -1;
    }
    if (wk_model_load(g_real.g, &g_real.m, err, sizeof(err)) != CM_OK ||
        wk_tokenizer_load(g_real.g, &g_real.tok, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, "engine_test: %s\n", err);
        return -1;
    }
    g_real.ok = true;
    return 0;
}

static int real_teardown(void **state) {
    (void)state;
    wk_tokenizer_free(g_real.tok);
    wk_model_fini(&g_real.m);
    wk_gguf_close(g_real.g);
    memset(&g_real, 0, sizeof(g_real));
    return 0;
}

/*
 * Every real-model engine here runs steps of at most REAL_BUDGET tokens (small steps keep
 * the tests quick). The CPU backend computes every token with the same kernels whatever the
 * step, which is what "batched == single" and "preempted == unpreempted" need to compare
 * exactly. The mock backend above checks the engine's side of these properties with any step
 * size.
 */
#define REAL_BUDGET 32

static wk_engine *real_engine(uint32_t n_blocks, uint32_t block_tokens, uint32_t budget,
                              uint32_t max_running, bool prefix) {
    if (budget > REAL_BUDGET)
        budget = REAL_BUDGET;
    wk_engine_config c;
    wk_engine_config_defaults(&c);
    c.backend = &wk_backend_cpu;
    c.block_tokens = block_tokens;
    c.kv_cache_bytes =
        (uint64_t)n_blocks * block_tokens * wk_kv_bytes_per_token(&g_real.m.hp, c.kv_dtype);
    c.max_batch_tokens = budget;
    c.max_running = max_running;
    c.max_context = 512;
    c.prefix_cache = prefix;
    wk_engine *e = NULL;
    char err[256];
    cm_err rv = wk_engine_create(&g_real.m, g_real.tok, &c, &e, err, sizeof(err));
    if (rv != CM_OK)
        fprintf(stderr, "engine_test: %s\n", err);
    assert_int_equal(rv, CM_OK);
    return e;
}

static void real_prompt(job *j, const char *text, uint32_t max_tokens, uint32_t join) {
    memset(j, 0, sizeof(*j));
    size_t n = 0;
    assert_int_equal(wk_tokenizer_encode(g_real.tok, text, strlen(text), false, true, j->prompt,
                                         sizeof(j->prompt) / sizeof(j->prompt[0]), &n),
                     CM_OK);
    j->n_prompt = (uint32_t)n;
    j->max_tokens = max_tokens;
    j->join_step = join;
}

#define N_REAL 4

static void real_jobs(job *jobs) {
    real_prompt(&jobs[0],
                "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                "<|im_start|>assistant\n",
                8, 0);
    real_prompt(&jobs[1], "The quick brown fox", 6, 1);
    real_prompt(&jobs[2],
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                "Hugging Face<|im_end|>\n<|im_start|>user\nWrite a haiku about the sea."
                "<|im_end|>\n<|im_start|>assistant\n",
                8, 2);
    real_prompt(&jobs[3], "1, 2, 3, 4, 5,", 7, 4);
}

static void real_alone(const job *jobs, uint32_t n, result *out) {
    wk_engine *e = real_engine(64, 16, 512, 1, false);
    for (uint32_t i = 0; i < n; i++) {
        job j = jobs[i];
        j.join_step = 0;
        run_jobs(e, &j, 1, &out[i], 200);
    }
    assert_all_free(e);
    wk_engine_destroy(e);
}

static void test_model_batched_equals_single(void **state) {
    (void)state;
    if (!g_real.ok)
        skip();
    job jobs[N_REAL];
    real_jobs(jobs);
    result alone[N_REAL], together[N_REAL];
    real_alone(jobs, N_REAL, alone);
    /* Budget 32: the long system prompt is prefilled in chunks while others decode. */
    wk_engine *e = real_engine(64, 16, 32, 8, false);
    run_jobs(e, jobs, N_REAL, together, 500);
    assert_same_tokens(alone, together, N_REAL);
    for (uint32_t i = 0; i < N_REAL; i++)
        assert_string_equal(alone[i].text, together[i].text);
    assert_all_free(e);
    wk_engine_destroy(e);
    /* France -> Paris: a sanity check that the engine drives a working model. */
    assert_non_null(strstr(alone[0].text, "Paris"));
}

static void test_model_prefix_equal_cold(void **state) {
    (void)state;
    if (!g_real.ok)
        skip();
    job jobs[N_REAL];
    real_jobs(jobs);
    result alone[N_REAL], warm[N_REAL];
    real_alone(jobs, N_REAL, alone);
    /* Run the set twice in one engine; the second pass hits the prefix cache. */
    wk_engine *e = real_engine(64, 16, 512, 8, true);
    run_jobs(e, jobs, N_REAL, warm, 500);
    assert_same_tokens(alone, warm, N_REAL);
    run_jobs(e, jobs, N_REAL, warm, 500);
    assert_same_tokens(alone, warm, N_REAL);
    assert_true(warm[2].usage.cached_prompt_tokens >= 32);
    wk_engine_stats st;
    wk_engine_get_stats(e, &st);
    assert_true(st.prefix_hits > 0);
    assert_all_free(e);
    wk_engine_destroy(e);
}

static void test_model_preemption_equal(void **state) {
    (void)state;
    if (!g_real.ok)
        skip();
    job jobs[N_REAL];
    real_jobs(jobs);
    result alone[N_REAL], tight[N_REAL];
    real_alone(jobs, N_REAL, alone);
    /* Tiny KV: 10 blocks of 8 tokens for sequences of up to 57 tokens: preemption. */
    for (uint32_t i = 0; i < N_REAL; i++)
        jobs[i].join_step = 0;
    wk_engine *e = real_engine(10, 8, 64, 8, false);
    run_jobs(e, jobs, N_REAL, tight, 1000);
    assert_same_tokens(alone, tight, N_REAL);
    wk_engine_stats st;
    wk_engine_get_stats(e, &st);
    assert_true(st.preemptions > 0);
    assert_all_free(e);
    wk_engine_destroy(e);
}

static void test_model_stop_string_and_eos(void **state) {
    (void)state;
    if (!g_real.ok)
        skip();
    job j;
    real_prompt(&j,
                "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                "<|im_start|>assistant\n",
                40, 0);
    /* Blocks of 4 tokens so that this short prompt has full blocks to reuse. */
    wk_engine *e = real_engine(256, 4, 512, 4, true);
    /* Without ignore_eos the reply ends on its own with <|im_end|> (STOP). */
    result free_run;
    memset(&free_run, 0, sizeof(free_run));
    wk_request req;
    memset(&req, 0, sizeof(req));
    req.id = 1;
    req.prompt = j.prompt;
    req.n_prompt = j.n_prompt;
    req.max_tokens = 40;
    wk_sampling_defaults(&req.sampling);
    req.sampling.temperature = 0;
    req.sampling.logprobs = true;
    req.sampling.top_logprobs = 3;
    req.cb = on_event;
    req.cb_arg = &free_run;
    assert_int_equal(wk_engine_submit(e, &req, NULL, 0), CM_OK);
    run_until_idle(e, 100);
    assert_true(free_run.finished);
    assert_int_equal(free_run.reason, WK_FINISH_STOP);
    assert_true(free_run.usage.completion_tokens == free_run.n + 1); /* + the EOS itself */
    assert_null(strstr(free_run.text, "<|im_end|>"));
    assert_true(free_run.first_logprob <= 0.0f);
    assert_int_equal(free_run.n_top, 3);
    char *paris = strstr(free_run.text, "Paris");
    assert_non_null(paris);

    /* Stop string "Paris": text ends right before it; reason STOP. */
    result stopped;
    memset(&stopped, 0, sizeof(stopped));
    const char *stops[1] = {"Paris"};
    req.id = 2;
    req.stop = stops;
    req.n_stop = 1;
    req.sampling.logprobs = false;
    req.sampling.top_logprobs = 0;
    req.cb_arg = &stopped;
    assert_int_equal(wk_engine_submit(e, &req, NULL, 0), CM_OK);
    run_until_idle(e, 100);
    assert_true(stopped.finished);
    assert_int_equal(stopped.reason, WK_FINISH_STOP);
    size_t before = (size_t)(paris - free_run.text);
    assert_int_equal(stopped.text_len, before);
    assert_memory_equal(stopped.text, free_run.text, before);
    assert_true(stopped.usage.cached_prompt_tokens > 0);
    assert_all_free(e);
    wk_engine_destroy(e);
}

/* ---- constrained decoding on the bundled model ------------------------------------------ */

#ifdef SLUICE_HAVE_JANSSON

static wk_grammar *schema_grammar(const char *schema) {
    char *rules = NULL;
    char err[256];
    cm_err rv = wk_json_schema_to_grammar(schema, strlen(schema), "", &rules, err, sizeof(err));
    if (rv != CM_OK)
        fail_msg("schema: %s", err);
    wk_grammar *g = NULL;
    assert_int_equal(wk_grammar_compile(rules, strlen(rules), NULL, &g, err, sizeof(err)), CM_OK);
    free(rules);
    return g;
}

static const char *PERSON_SCHEMA =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",\"c\"]},\"maxItems\":3},"
    "\"nick\":{\"type\":[\"string\",\"null\"]},"
    "\"pet\":{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"cat\"},"
    "\"lives\":{\"type\":\"integer\"}},\"required\":[\"kind\",\"lives\"]},{\"type\":\"null\"}]}},"
    "\"required\":[\"name\",\"age\",\"tags\",\"nick\",\"pet\"],\"additionalProperties\":false}";

/* person_ok: a structural check of one PERSON_SCHEMA output with jansson. */
static void assert_person(const char *text) {
    json_error_t je;
    json_t *v = json_loads(text, JSON_ALLOW_NUL, &je);
    if (v == NULL)
        fail_msg("output does not parse (%s): %s", je.text, text);
    assert_true(json_is_object(v));
    assert_true(json_is_string(json_object_get(v, "name")));
    json_t *age = json_object_get(v, "age");
    assert_true(json_is_integer(age));
    assert_true(json_integer_value(age) >= 0 && json_integer_value(age) <= 150);
    json_t *email = json_object_get(v, "email");
    assert_true(email == NULL || (json_is_string(email) && strchr(json_string_value(email), '@')));
    json_t *tags = json_object_get(v, "tags");
    assert_true(json_is_array(tags) && json_array_size(tags) <= 3);
    for (size_t k = 0; k < json_array_size(tags); k++) {
        const char *t = json_string_value(json_array_get(tags, k));
        assert_true(t != NULL && strlen(t) == 1 && t[0] >= 'a' && t[0] <= 'c');
    }
    json_t *nick = json_object_get(v, "nick");
    assert_true(json_is_string(nick) || json_is_null(nick));
    json_t *pet = json_object_get(v, "pet");
    assert_true(json_is_null(pet) ||
                (json_is_object(pet) &&
                 strcmp(json_string_value(json_object_get(pet, "kind")), "cat") == 0 &&
                 json_is_integer(json_object_get(pet, "lives"))));
    assert_int_equal(json_object_size(v), 5 + (email != NULL));
    json_decref(v);
}

/* is_prefix: text is a valid prefix of g's language (what a length cut leaves). */
static bool is_prefix(wk_grammar *g, const char *text, size_t len) {
    wk_grammar_state *st = NULL;
    assert_int_equal(wk_grammar_state_create(g, NULL, &st), CM_OK);
    cm_err rv = wk_grammar_accept_bytes(st, (const uint8_t *)text, len);
    wk_grammar_state_free(st);
    return rv == CM_OK;
}

#define N_SCHEMA_JOBS 6

static void schema_jobs(job *jobs, wk_grammar *g, uint32_t max_tokens) {
    for (uint32_t i = 0; i < N_SCHEMA_JOBS; i++) {
        real_prompt(&jobs[i],
                    i % 2 == 0 ? "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n"
                                 "<|im_start|>assistant\n"
                               : "<|im_start|>user\nInvent a character for a story. Reply in "
                                 "JSON.<|im_end|>\n<|im_start|>assistant\n",
                    max_tokens, i);
        jobs[i].temperature = 1.0f;
        jobs[i].seed = 1000 + i;
        jobs[i].grammar = g;
        jobs[i].stop_at_eos = true;
    }
}

/* Seeded generations at temperature 1 under a schema: every finished output parses and
 * matches; batch invariance and preemption keep tokens identical. */
static void test_model_json_schema(void **state) {
    (void)state;
    if (!g_real.ok)
        skip();
    wk_grammar *g = schema_grammar(PERSON_SCHEMA);
    job jobs[N_SCHEMA_JOBS];
    schema_jobs(jobs, g, 160);
    result alone[N_SCHEMA_JOBS], together[N_SCHEMA_JOBS], tight[N_SCHEMA_JOBS];
    real_alone(jobs, N_SCHEMA_JOBS, alone);
    uint32_t stops = 0;
    for (uint32_t i = 0; i < N_SCHEMA_JOBS; i++) {
        if (alone[i].reason == WK_FINISH_STOP) {
            assert_person(alone[i].text);
            stops++;
        } else {
            assert_int_equal(alone[i].reason, WK_FINISH_LENGTH);
            assert_true(is_prefix(g, alone[i].text, alone[i].text_len));
        }
    }
    assert_true(stops >= N_SCHEMA_JOBS / 2);
    /* Batched with one another (and joining at different steps): same tokens. */
    wk_engine *e = real_engine(128, 16, 32, 8, false);
    run_jobs(e, jobs, N_SCHEMA_JOBS, together, 2000);
    assert_same_tokens(alone, together, N_SCHEMA_JOBS);
    assert_all_free(e);
    wk_engine_destroy(e);
    /* Preempted and recomputed (tiny KV): same tokens, so the grammar state survived. */
    for (uint32_t i = 0; i < N_SCHEMA_JOBS; i++)
        jobs[i].join_step = 0;
    e = real_engine(14, 8, 32, 8, false);
    run_jobs(e, jobs, N_SCHEMA_JOBS, tight, 4000);
    assert_same_tokens(alone, tight, N_SCHEMA_JOBS);
    wk_engine_stats st;
    wk_engine_get_stats(e, &st);
    assert_true(st.preemptions > 0);
    assert_all_free(e);
    wk_engine_destroy(e);
    wk_grammar_unref(g);
}

/* json_object, a recursive schema, a max_tokens cut, logprobs and other sampler settings. */
static void test_model_json_object_and_cut(void **state) {
    (void)state;
    if (!g_real.ok)
        skip();
    char *rules = NULL;
    assert_int_equal(wk_json_object_grammar("", &rules), CM_OK);
    wk_grammar *obj = NULL;
    assert_int_equal(wk_grammar_compile(rules, strlen(rules), NULL, &obj, NULL, 0), CM_OK);
    free(rules);
    wk_grammar *tree = schema_grammar(
        "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"label\":{\"type\":\"string\","
        "\"maxLength\":12},\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"},"
        "\"maxItems\":2}},\"required\":[\"label\",\"children\"]}},\"$ref\":\"#/$defs/n\"}");
    wk_engine *e = real_engine(256, 16, 32, 8, false);
    enum { N = 8 };
    job jobs[N];
    result res[N];
    for (uint32_t i = 0; i < N; i++) {
        real_prompt(&jobs[i],
                    "<|im_start|>user\nGive me a JSON object about the weather.<|im_end|>\n"
                    "<|im_start|>assistant\n",
                    120, i);
        jobs[i].temperature = 1.0f;
        jobs[i].seed = 77 + i;
        jobs[i].grammar = i < 4 ? obj : tree;
        jobs[i].stop_at_eos = true;
    }
    run_jobs(e, jobs, N, res, 3000);
    for (uint32_t i = 0; i < N; i++) {
        wk_grammar *g = i < 4 ? obj : tree;
        if (res[i].reason == WK_FINISH_STOP) {
            json_error_t je;
            json_t *v = json_loads(res[i].text, JSON_ALLOW_NUL, &je);
            if (v == NULL)
                fail_msg("job %u: output does not parse: %s", i, res[i].text);
            assert_true(json_is_object(v));
            if (i >= 4)
                assert_true(json_is_array(json_object_get(v, "children")));
            json_decref(v);
        }
        assert_true(is_prefix(g, res[i].text, res[i].text_len));
    }
    /* A max_tokens cut: LENGTH, the partial output as is (a valid prefix, no closing brace
     * made up). Top-k / top-p / min-p / penalties / bias / logprobs all run on the masked
     * logits. */
    result cut;
    memset(&cut, 0, sizeof(cut));
    wk_request req;
    memset(&req, 0, sizeof(req));
    req.id = 99;
    req.prompt = jobs[0].prompt;
    req.n_prompt = jobs[0].n_prompt;
    req.max_tokens = 5;
    wk_sampling_defaults(&req.sampling);
    req.sampling.temperature = 0.7f;
    req.sampling.top_k = 20;
    req.sampling.top_p = 0.9f;
    req.sampling.min_p = 0.05f;
    req.sampling.repetition_penalty = 1.3f;
    req.sampling.presence_penalty = 0.5f;
    req.sampling.n_logit_bias = 1;
    req.sampling.logit_bias[0].token_id = wk_tokenizer_eos(g_real.tok);
    req.sampling.logit_bias[0].bias = 100.0f; /* EOS is still masked: the output is open */
    req.sampling.logprobs = true;
    req.sampling.top_logprobs = 5;
    req.grammar = obj;
    req.cb = on_event;
    req.cb_arg = &cut;
    assert_int_equal(wk_engine_submit(e, &req, NULL, 0), CM_OK);
    run_until_idle(e, 100);
    assert_true(cut.finished);
    assert_int_equal(cut.reason, WK_FINISH_LENGTH);
    assert_int_equal(cut.usage.completion_tokens, 5);
    assert_true(cut.text_len > 0 && cut.text[0] == '{');
    assert_true(is_prefix(obj, cut.text, cut.text_len));
    /* logprobs are over the allowed tokens: the first token ("{"-something) is forced among
     * few candidates, so its probability is high, and every alternative is finite. */
    assert_true(cut.first_logprob <= 0.0f && cut.first_logprob > -20.0f);
    assert_true(cut.n_top >= 1);
    assert_all_free(e);
    wk_engine_destroy(e);
    /* A grammar that finishes: the request ends with STOP at once, without EOS. */
    wk_grammar *yes = NULL;
    const char *yes_no = "root ::= \"yes\" | \"no\"";
    assert_int_equal(wk_grammar_compile(yes_no, strlen(yes_no), NULL, &yes, NULL, 0), CM_OK);
    e = real_engine(64, 16, 32, 4, false);
    result fin;
    memset(&fin, 0, sizeof(fin));
    req.id = 100;
    req.max_tokens = 50;
    req.grammar = yes;
    req.sampling.n_logit_bias = 0;
    req.cb_arg = &fin;
    assert_int_equal(wk_engine_submit(e, &req, NULL, 0), CM_OK);
    run_until_idle(e, 100);
    assert_int_equal(fin.reason, WK_FINISH_STOP);
    assert_true(strcmp(fin.text, "yes") == 0 || strcmp(fin.text, "no") == 0);
    assert_true(fin.usage.completion_tokens <= 3);
    assert_all_free(e);
    wk_engine_destroy(e);
    wk_grammar_unref(yes);
    wk_grammar_unref(obj);
    wk_grammar_unref(tree);
}

#else
static void test_model_json_schema(void **state) {
    (void)state;
    skip();
}
static void test_model_json_object_and_cut(void **state) {
    (void)state;
    skip();
}
#endif

int main(void) {
    const struct CMUnitTest mock_tests[] = {
        cmocka_unit_test(test_mock_batched_equals_single),
        cmocka_unit_test(test_mock_prefix_hits_equal_cold),
        cmocka_unit_test(test_mock_eviction_under_pressure),
        cmocka_unit_test(test_mock_preemption_equal),
        cmocka_unit_test(test_mock_cancel),
        cmocka_unit_test(test_mock_queue_full_and_deadline),
        cmocka_unit_test(test_mock_submit_validation),
        cmocka_unit_test(test_mock_backend_failure),
        cmocka_unit_test(test_mock_prompt_logits),
        cmocka_unit_test(test_mock_random_schedule),
        cmocka_unit_test(test_mock_fairness_priority),
    };
    const struct CMUnitTest model_tests[] = {
        cmocka_unit_test(test_model_batched_equals_single),
        cmocka_unit_test(test_model_prefix_equal_cold),
        cmocka_unit_test(test_model_preemption_equal),
        cmocka_unit_test(test_model_stop_string_and_eos),
        cmocka_unit_test(test_model_json_schema),
        cmocka_unit_test(test_model_json_object_and_cut),
    };
    int failed = cmocka_run_group_tests_name("engine_mock", mock_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("engine_model", model_tests, real_setup, real_teardown);
    return failed;
}
