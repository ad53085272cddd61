/*
 * Device sampling (wk_backend_ops.forward_sample) against host sampling.
 *
 * Part 1: wk_sampler_sample_sparse (the reference the device kernels follow) gives the same
 * result, bit for bit, as wk_sampler_sample on the history the penalty list came from with the
 * uniform that call draws, over random logits and every sampling feature; and
 * wk_sampler_penalties lists distinct tokens with their counts and reports its bound.
 *
 * Part 2: the engine on a test backend whose forward_sample samples "on the device" with
 * wk_sampler_sample_sparse over logits it never hands out: device and host sampling
 * (SLUICE_DEVICE_SAMPLING=0) give the same tokens and logprobs for greedy, seeded
 * temperature with top-k / top-p / min-p, penalties, logit_bias and top logprobs, at batch 1
 * and 8; steps with prompt logits, a top_k past the device bound or a penalty list past its
 * bound fall back to the host path.
 *
 * Part 3 (the bundled model, SLUICE_TEST_MODEL): a request with a grammar in the batch sends its
 * steps to the host path, the other request's later steps to forward_sample, same tokens.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "engine.h"
#include "gguf.h"
#include "grammar.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

/* A pseudo-random 64-bit value for (key, index): the shared RNG seeded with the key. */
static uint64_t mix(uint64_t key) {
    wk_rng r;
    wk_rng_seed(&r, key);
    return cm_rng_next(&r);
}

/* uniform in [-1, 1) */
static float hash_unit(uint64_t key) {
    wk_rng r;
    wk_rng_seed(&r, key);
    return (float)(2.0 * wk_rng_uniform(&r) - 1.0);
}

/* ---- part 1: the sparse reference ------------------------------------------------------- */

#define P1_VOCAB 3000

static void random_params(wk_sampling_params *p, uint64_t k, uint32_t n_vocab) {
    wk_sampling_defaults(p);
    uint64_t h = mix(k);
    p->temperature = (h & 7) == 0 ? 0.0f : 0.3f + (float)((h >> 3) % 16) / 10.0f;
    p->top_k = (h >> 8) % 3 == 0 ? (int32_t)(1 + (h >> 10) % 80) : 0;
    p->top_p = (h >> 17) % 2 == 0 ? 0.5f + (float)((h >> 18) % 50) / 100.0f : 1.0f;
    p->min_p = (h >> 25) % 3 == 0 ? (float)((h >> 27) % 20) / 100.0f : 0.0f;
    p->repetition_penalty = (h >> 32) % 2 == 0 ? 1.0f + (float)((h >> 33) % 8) / 10.0f : 1.0f;
    p->presence_penalty = (h >> 36) % 2 == 0 ? (float)((h >> 37) % 9) / 4.0f - 1.0f : 0.0f;
    p->frequency_penalty = (h >> 41) % 2 == 0 ? (float)((h >> 42) % 9) / 4.0f - 1.0f : 0.0f;
    p->n_logit_bias = (uint32_t)((h >> 46) % 5);
    for (uint32_t i = 0; i < p->n_logit_bias; i++) {
        p->logit_bias[i].token_id = (int32_t)(mix(k + i + 1) % n_vocab);
        p->logit_bias[i].bias = (float)(mix(k * 3 + i) % 41) - 20.0f;
    }
    p->logprobs = (h >> 50) % 2 == 0;
    p->top_logprobs = (uint32_t)((h >> 51) % 6);
}

static void test_sparse_matches_history(void **state) {
    (void)state;
    wk_sampler *s = NULL;
    assert_int_equal(wk_sampler_create(P1_VOCAB, &s), CM_OK);
    static float base[P1_VOCAB], a[P1_VOCAB], b[P1_VOCAB];
    static int32_t hist[600];
    static wk_penalty_entry pen[600];
    wk_sampling_params p;
    for (uint64_t k = 0; k < 400; k++) {
        random_params(&p, k, P1_VOCAB);
        for (uint32_t v = 0; v < P1_VOCAB; v++)
            base[v] = 8.0f * hash_unit(k * 7919u + v);
        if (k % 9 == 0)
            base[k % P1_VOCAB] = NAN; /* a broken logit: impossible on both paths */
        if (k % 11 == 0)
            base[(k + 1) % P1_VOCAB] = base[(k + 2) % P1_VOCAB]; /* a tie */
        size_t n_hist = 1 + mix(k ^ 0x55) % 600;
        size_t n_prompt = mix(k ^ 0xaa) % (n_hist + 1);
        for (size_t i = 0; i < n_hist; i++)
            hist[i] = (int32_t)(mix(k * 31 + i) % 200); /* repeats */
        size_t n_pen = 0;
        assert_int_equal(wk_sampler_penalties(s, hist, n_hist, n_prompt, pen, 600, &n_pen), CM_OK);

        wk_rng r1, r2;
        wk_rng_seed(&r1, k);
        wk_rng_seed(&r2, k);
        double u = wk_sampling_draws(&p) ? wk_rng_uniform(&r2) : 0.5;
        memcpy(a, base, sizeof(a));
        memcpy(b, base, sizeof(b));
        wk_sample_result ra, rb;
        assert_int_equal(wk_sampler_sample(s, &p, a, hist, n_hist, n_prompt, &r1, &ra), CM_OK);
        assert_int_equal(wk_sampler_sample_sparse(s, &p, b, pen, n_pen, u, &rb), CM_OK);
        assert_int_equal(ra.token_id, rb.token_id);
        assert_memory_equal(&ra.logprob, &rb.logprob, sizeof(float));
        assert_int_equal(ra.n_top, rb.n_top);
        for (uint32_t i = 0; i < ra.n_top; i++) {
            assert_int_equal(ra.top[i].token_id, rb.top[i].token_id);
            assert_memory_equal(&ra.top[i].logprob, &rb.top[i].logprob, sizeof(float));
        }
        assert_memory_equal(a, b, sizeof(a));      /* the same biased and penalised logits */
        assert_memory_equal(&r1, &r2, sizeof(r1)); /* the rng advanced the same */
    }
    wk_sampler_destroy(s);
}

static void test_penalty_list(void **state) {
    (void)state;
    wk_sampler *s = NULL;
    assert_int_equal(wk_sampler_create(50, &s), CM_OK);
    const int32_t hist[] = {7, 3, 7, 9, 3, 3, 11, 7};
    wk_penalty_entry pen[8];
    size_t n = 0;
    /* prompt 7 3 7; generated 9 3 3 11 7 */
    assert_int_equal(wk_sampler_penalties(s, hist, 8, 3, pen, 8, &n), CM_OK);
    assert_int_equal(n, 4);
    const wk_penalty_entry want[] = {{7, 1, 1}, {3, 2, 1}, {9, 1, 0}, {11, 1, 0}};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(pen[i].token_id, want[i].token_id);
        assert_int_equal(pen[i].n_generated, want[i].n_generated);
        assert_int_equal(pen[i].in_prompt, want[i].in_prompt);
    }
    /* bounded: 4 distinct do not fit 3; the scratch is clean afterwards */
    assert_int_equal(wk_sampler_penalties(s, hist, 8, 3, pen, 3, &n), CM_ERR_LIMIT);
    assert_int_equal(n, 3);
    assert_int_equal(wk_sampler_penalties(s, hist, 8, 0, pen, 8, &n), CM_OK);
    assert_int_equal(pen[0].n_generated, 3);
    assert_int_equal(pen[0].in_prompt, 0);
    const int32_t bad[] = {1, 50};
    assert_int_equal(wk_sampler_penalties(s, bad, 2, 1, pen, 8, &n), CM_ERR_INVALID);
    assert_int_equal(wk_sampler_penalties(s, hist, 2, 3, pen, 8, &n), CM_ERR_INVALID);
    wk_sampler_destroy(s);
}

/* ---- part 2: the engine on a backend that samples "on the device" ----------------------- */

#define T_VOCAB 1500

struct wk_backend {
    uint32_t max_seqs;
    float *logits; /* (max_seqs, T_VOCAB) "device" logits */
    wk_sampler *sampler;
    uint64_t forwards;        /* forward calls (host sampling) */
    uint64_t sample_forwards; /* forward_sample calls */
    uint64_t sampled;         /* sequences sampled on the "device" */
};

static struct wk_backend *g_be;

static cm_err t_create(const wk_model *m, const wk_backend_config *cfg, wk_backend **out, char *err,
                       size_t errlen) {
    (void)m;
    (void)err;
    (void)errlen;
    struct wk_backend *be = calloc(1, sizeof(*be));
    assert_non_null(be);
    be->max_seqs = cfg->max_seqs;
    be->logits = malloc((size_t)cfg->max_seqs * T_VOCAB * sizeof(float));
    assert_non_null(be->logits);
    assert_int_equal(wk_sampler_create(T_VOCAB, &be->sampler), CM_OK);
    g_be = be;
    *out = be;
    return CM_OK;
}

static void t_destroy(wk_backend *be) {
    if (be == NULL)
        return;
    wk_sampler_destroy(be->sampler);
    free(be->logits);
    if (g_be == be)
        g_be = NULL;
    free(be);
}

/* Logits of a sequence's last token: a function of that token and its position only (the
 * sequence's earlier tokens reach it through the sampled token), spread over [-6, 6] so that
 * sampling has real choices. */
static void fill_row(float *row, int32_t tok, int32_t pos) {
    for (uint32_t v = 0; v < T_VOCAB; v++)
        row[v] = 6.0f * hash_unit(((uint64_t)(uint32_t)tok << 40) ^ ((uint64_t)pos << 20) ^ v);
}

static cm_err t_forward(wk_backend *be, const wk_batch *b, float *logits) {
    be->forwards++;
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        if (!b->want_logits[s])
            continue;
        uint32_t last = b->seq_start[s + 1] - 1;
        fill_row(&logits[(size_t)s * T_VOCAB], b->tokens[last], b->positions[last]);
    }
    return CM_OK;
}

static cm_err t_forward_sample(wk_backend *be, const wk_batch *b, const wk_dev_sample_in *in,
                               wk_sample_result *out) {
    be->sample_forwards++;
    uint32_t j = 0;
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        if (!b->want_logits[s])
            continue;
        assert_true(j < in->n);
        const wk_dev_sample_seq *d = &in->seqs[j];
        assert_true(d->n_pen <= WK_DEV_SAMPLE_MAX_PENALTY);
        assert_true(d->u >= 0.0 && d->u < 1.0);
        float *row = &be->logits[(size_t)j * T_VOCAB];
        uint32_t last = b->seq_start[s + 1] - 1;
        fill_row(row, b->tokens[last], b->positions[last]);
        if (wk_sampler_sample_sparse(be->sampler, d->params, row, d->pen, d->n_pen, d->u,
                                     &out[j]) != CM_OK)
            out[j].token_id = -1;
        be->sampled++;
        j++;
    }
    assert_int_equal(j, in->n);
    return CM_OK;
}

static const wk_backend_ops t_ops = {
    .name = "devsample-test",
    .create = t_create,
    .destroy = t_destroy,
    .forward = t_forward,
    .forward_sample = t_forward_sample,
};

#define MAX_GEN 40

typedef struct out_seq {
    int32_t toks[MAX_GEN];
    wk_sample_result lp[MAX_GEN];
    uint32_t n;
    bool finished, errored;
} out_seq;

static void on_event(const wk_event *ev, void *arg) {
    out_seq *o = arg;
    if (ev->kind == WK_EVENT_TOKENS) {
        for (uint32_t i = 0; i < ev->n_tokens && o->n < MAX_GEN; i++) {
            o->toks[o->n] = ev->token_ids[i];
            if (ev->logprobs != NULL)
                o->lp[o->n] = ev->logprobs[i];
            o->n++;
        }
    } else if (ev->kind == WK_EVENT_FINISHED) {
        o->finished = true;
    } else {
        o->errored = true;
    }
}

typedef struct tjob {
    wk_sampling_params p;
    int32_t prompt[1200];
    uint32_t n_prompt;
    bool want_prompt_logits;
} tjob;

/* The jobs: every sampling feature, each with its own seed. */
static void make_jobs(tjob *jobs, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        tjob *j = &jobs[i];
        memset(j, 0, sizeof(*j));
        wk_sampling_defaults(&j->p);
        j->p.seed = 100 + i;
        j->n_prompt = 5 + i % 7;
        for (uint32_t t = 0; t < j->n_prompt; t++)
            j->prompt[t] = (int32_t)(mix(i * 977u + t) % T_VOCAB);
        switch (i % 8) {
        case 0: /* greedy with top logprobs */
            j->p.temperature = 0.0f;
            j->p.logprobs = true;
            j->p.top_logprobs = 5;
            break;
        case 1: /* temperature + top-k */
            j->p.temperature = 0.8f;
            j->p.top_k = 40;
            j->p.logprobs = true;
            break;
        case 2: /* top-p */
            j->p.temperature = 1.1f;
            j->p.top_p = 0.9f;
            j->p.top_logprobs = 3;
            break;
        case 3: /* min-p */
            j->p.temperature = 1.0f;
            j->p.min_p = 0.05f;
            break;
        case 4: /* everything: top-k, top-p and min-p together, penalties */
            j->p.temperature = 0.7f;
            j->p.top_k = 100;
            j->p.top_p = 0.8f;
            j->p.min_p = 0.02f;
            j->p.repetition_penalty = 1.3f;
            j->p.presence_penalty = 0.5f;
            j->p.frequency_penalty = 0.4f;
            j->p.logprobs = true;
            break;
        case 5: /* penalties, plain temperature */
            j->p.temperature = 1.0f;
            j->p.repetition_penalty = 1.5f;
            j->p.frequency_penalty = 1.0f;
            break;
        case 6: /* logit_bias: a banned token and a favoured one */
            j->p.temperature = 0.9f;
            j->p.n_logit_bias = 2;
            j->p.logit_bias[0].token_id = 17;
            j->p.logit_bias[0].bias = 9.0f;
            j->p.logit_bias[1].token_id = 18;
            j->p.logit_bias[1].bias = -100.0f;
            j->p.top_logprobs = 2;
            break;
        default: /* top-p with min-p, and greedy ties broken by bias */
            j->p.temperature = 1.3f;
            j->p.top_p = 0.6f;
            j->p.min_p = 0.1f;
            break;
        }
    }
}

static wk_model g_model; /* the engines' model, made on first use */
static bool g_have_model;

static int free_model(void **state) {
    (void)state;
    if (g_have_model)
        wk_model_fini(&g_model);
    g_have_model = false;
    return 0;
}

static wk_engine *t_engine(uint32_t max_running, bool device) {
    if (device)
        unsetenv("SLUICE_DEVICE_SAMPLING");
    else
        setenv("SLUICE_DEVICE_SAMPLING", "0", 1);
    /* a tiny synthetic model: the test backend never reads its weights */
    if (!g_have_model) {
        wk_hparams hp;
        memset(&hp, 0, sizeof(hp));
        hp.n_vocab = T_VOCAB;
        hp.n_ctx_train = 2048;
        hp.n_embd = 8;
        hp.n_layer = 1;
        hp.n_head = 1;
        hp.n_head_kv = 1;
        hp.head_dim = 8;
        hp.n_rot = 8;
        hp.n_ff = 8;
        assert_int_equal(wk_model_synthetic(&hp, WK_DTYPE_F32, 1, &g_model), CM_OK);
        g_have_model = true;
    }
    const wk_model *m = &g_model;
    wk_engine_config c;
    wk_engine_config_defaults(&c);
    c.backend = &t_ops;
    c.block_tokens = 16;
    c.kv_dtype = WK_DTYPE_F16;
    c.kv_cache_bytes = (uint64_t)1024 * 16 * wk_kv_bytes_per_token(&m->hp, c.kv_dtype);
    c.max_batch_tokens = 2048;
    c.max_running = max_running;
    c.max_waiting = 64;
    c.prefix_cache = false;
    wk_engine *e = NULL;
    char err[256];
    assert_int_equal(wk_engine_create(m, NULL, &c, &e, err, sizeof(err)), CM_OK);
    unsetenv("SLUICE_DEVICE_SAMPLING");
    return e;
}

static void run(const tjob *jobs, uint32_t n, uint32_t max_running, bool device, out_seq *outs,
                uint64_t *sample_forwards, uint64_t *forwards) {
    wk_engine *e = t_engine(max_running, device);
    static float prompt_logits[T_VOCAB];
    memset(outs, 0, sizeof(*outs) * n);
    for (uint32_t i = 0; i < n; i++) {
        wk_request req;
        memset(&req, 0, sizeof(req));
        req.id = 1 + i;
        req.prompt = jobs[i].prompt;
        req.n_prompt = jobs[i].n_prompt;
        req.max_tokens = MAX_GEN;
        req.sampling = jobs[i].p;
        req.ignore_eos = true;
        req.prompt_logits_out = jobs[i].want_prompt_logits ? prompt_logits : NULL;
        req.cb = on_event;
        req.cb_arg = &outs[i];
        char err[256];
        assert_int_equal(wk_engine_submit(e, &req, err, sizeof(err)), CM_OK);
    }
    for (uint32_t steps = 0; wk_engine_has_work(e); steps++) {
        bool did = false;
        assert_int_equal(wk_engine_step(e, &did), CM_OK);
        assert_true(steps < 10000);
    }
    for (uint32_t i = 0; i < n; i++) {
        assert_true(outs[i].finished);
        assert_false(outs[i].errored);
        assert_int_equal(outs[i].n, MAX_GEN);
    }
    *sample_forwards = g_be->sample_forwards;
    *forwards = g_be->forwards;
    wk_engine_destroy(e);
}

static void assert_same(const out_seq *a, const out_seq *b, const tjob *j) {
    for (uint32_t t = 0; t < MAX_GEN; t++) {
        assert_int_equal(a->toks[t], b->toks[t]);
        if (!(j->p.logprobs || j->p.top_logprobs > 0))
            continue;
        assert_true(fabsf(a->lp[t].logprob - b->lp[t].logprob) <= 1e-4f);
        assert_int_equal(a->lp[t].n_top, b->lp[t].n_top);
        assert_int_equal(a->lp[t].n_top, j->p.top_logprobs);
        for (uint32_t k = 0; k < a->lp[t].n_top; k++) {
            assert_int_equal(a->lp[t].top[k].token_id, b->lp[t].top[k].token_id);
            assert_true(fabsf(a->lp[t].top[k].logprob - b->lp[t].top[k].logprob) <= 1e-4f);
        }
    }
}

#define N_JOBS 16

static void test_engine_device_equals_host(void **state) {
    (void)state;
    static tjob jobs[N_JOBS];
    static out_seq host[N_JOBS], dev8[N_JOBS], dev1[N_JOBS];
    make_jobs(jobs, N_JOBS);
    uint64_t sf = 0, f = 0;
    run(jobs, N_JOBS, 8, false, host, &sf, &f);
    assert_int_equal(sf, 0); /* switched off: every step on the host */
    assert_true(f > 0);
    run(jobs, N_JOBS, 8, true, dev8, &sf, &f);
    assert_true(sf > 0);
    assert_int_equal(f, 0); /* every step could sample on the device */
    for (uint32_t i = 0; i < N_JOBS; i++)
        assert_same(&host[i], &dev8[i], &jobs[i]);
    /* batch invariance: each job alone gives the same tokens */
    for (uint32_t i = 0; i < N_JOBS; i++) {
        run(&jobs[i], 1, 1, true, &dev1[i], &sf, &f);
        assert_same(&host[i], &dev1[i], &jobs[i]);
    }
    /* the features did something: the greedy and the sampled streams differ, the banned token
     * never came */
    assert_memory_not_equal(host[0].toks, host[1].toks, sizeof(host[0].toks));
    for (uint32_t i = 6; i < N_JOBS; i += 8)
        for (uint32_t t = 0; t < MAX_GEN; t++)
            assert_int_not_equal(host[i].toks[t], 18);
}

/* Steps that cannot sample on the device run the old path, with the same results. */
static void test_engine_fallbacks(void **state) {
    (void)state;
    static tjob jobs[4];
    static out_seq host[4], dev[4];
    make_jobs(jobs, 4);
    uint64_t sf = 0, f = 0;
    run(jobs, 4, 4, false, host, &sf, &f);

    /* prompt logits wanted: its first step (the prompt's) goes to the host, the rest not */
    jobs[0].want_prompt_logits = true;
    run(jobs, 1, 1, true, dev, &sf, &f);
    assert_int_equal(f, 1);
    assert_int_equal(sf, MAX_GEN - 1);
    assert_same(&host[0], &dev[0], &jobs[0]);
    jobs[0].want_prompt_logits = false;

    /* top_k past the device bound (and below the vocabulary): every step on the host */
    tjob big = jobs[1];
    big.p.top_k = WK_DEV_SAMPLE_MAX_TOP_K + 1;
    out_seq bh, bd;
    run(&big, 1, 1, false, &bh, &sf, &f);
    run(&big, 1, 1, true, &bd, &sf, &f);
    assert_int_equal(sf, 0);
    assert_same(&bh, &bd, &big);

    /* a penalty list past its bound: prompt of > WK_DEV_SAMPLE_MAX_PENALTY distinct tokens */
    tjob pen = jobs[1];
    pen.p.repetition_penalty = 1.2f;
    pen.n_prompt = WK_DEV_SAMPLE_MAX_PENALTY + 10;
    for (uint32_t t = 0; t < pen.n_prompt; t++)
        pen.prompt[t] = (int32_t)t;
    out_seq ph, pd;
    run(&pen, 1, 1, false, &ph, &sf, &f);
    run(&pen, 1, 1, true, &pd, &sf, &f);
    assert_int_equal(sf, 0);
    assert_same(&ph, &pd, &pen);

    /* with a host-only sequence in the batch, the whole step samples on the host, and the
     * others still get their tokens */
    jobs[2].want_prompt_logits = true;
    run(jobs, 4, 4, true, dev, &sf, &f);
    assert_true(f >= 1);
    for (uint32_t i = 0; i < 4; i++)
        assert_same(&host[i], &dev[i], &jobs[i]);
}

/* ---- part 3: the bundled model, a grammar in the batch ---------------------------------- */

/* The CPU backend with a forward_sample that samples its logits with the host reference. */
typedef struct wrap {
    wk_backend *inner;
    float *logits; /* (max_seqs, n_vocab) */
    wk_sampler *sampler;
    uint32_t n_vocab;
} wrap;

static wrap g_wrap; /* one wrapped instance at a time (tests only) */
static uint64_t g_wrap_forwards, g_wrap_sample_forwards;

static cm_err w_create(const wk_model *m, const wk_backend_config *cfg, wk_backend **out, char *err,
                       size_t errlen) {
    cm_err rv = wk_backend_cpu.create(m, cfg, &g_wrap.inner, err, errlen);
    if (rv != CM_OK)
        return rv;
    g_wrap.n_vocab = m->hp.n_vocab;
    g_wrap.logits = malloc((size_t)cfg->max_seqs * m->hp.n_vocab * sizeof(float));
    assert_non_null(g_wrap.logits);
    assert_int_equal(wk_sampler_create(m->hp.n_vocab, &g_wrap.sampler), CM_OK);
    *out = g_wrap.inner;
    return CM_OK;
}

static void w_destroy(wk_backend *be) {
    wk_backend_cpu.destroy(be);
    wk_sampler_destroy(g_wrap.sampler);
    free(g_wrap.logits);
    memset(&g_wrap, 0, sizeof(g_wrap));
}

static cm_err w_forward(wk_backend *be, const wk_batch *b, float *logits) {
    g_wrap_forwards++;
    return wk_backend_cpu.forward(be, b, logits);
}

static cm_err w_forward_sample(wk_backend *be, const wk_batch *b, const wk_dev_sample_in *in,
                               wk_sample_result *out) {
    g_wrap_sample_forwards++;
    cm_err rv = wk_backend_cpu.forward(be, b, g_wrap.logits);
    for (uint32_t s = 0, j = 0; rv == CM_OK && s < b->n_seqs; s++) {
        if (!b->want_logits[s])
            continue;
        const wk_dev_sample_seq *d = &in->seqs[j];
        if (wk_sampler_sample_sparse(g_wrap.sampler, d->params,
                                     &g_wrap.logits[(size_t)s * g_wrap.n_vocab], d->pen, d->n_pen,
                                     d->u, &out[j]) != CM_OK)
            out[j].token_id = -1;
        j++;
    }
    return rv;
}

static const wk_backend_ops w_ops = {
    .name = "cpu-devsample",
    .create = w_create,
    .destroy = w_destroy,
    .forward = w_forward,
    .forward_sample = w_forward_sample,
};

/* Two requests together, one constrained by a grammar: while it runs every step samples on
 * the host (the mask needs the logits); once it has finished the other samples on the
 * "device"; the tokens are those of host sampling throughout. */
static void test_model_grammar_falls_back(void **state) {
    (void)state;
    const char *path = getenv("SLUICE_TEST_MODEL");
    if (path == NULL || path[0] == '\0')
        skip();
    char err[256];
    wk_gguf *g = NULL;
    wk_model m;
    wk_tokenizer *tok = NULL;
    assert_int_equal(wk_gguf_open(path, &g, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_model_load(g, &m, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_tokenizer_load(g, &tok, err, sizeof(err)), CM_OK);
    wk_grammar *gr = NULL;
    const char *rules = "root ::= \"yes\" | \"no\" | \"maybe so\"";
    assert_int_equal(wk_grammar_compile(rules, strlen(rules), NULL, &gr, err, sizeof(err)), CM_OK);
    const char *texts[2] = {"Is the sky blue? Answer:", "Once upon a time"};
    int32_t prompts[2][64];
    size_t n_prompt[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(wk_tokenizer_encode(tok, texts[i], strlen(texts[i]), false, true,
                                             prompts[i], 64, &n_prompt[i]),
                         CM_OK);
    out_seq outs[2][2];
    uint64_t fwd[2], sfwd[2];
    for (int dev = 0; dev < 2; dev++) {
        if (dev)
            unsetenv("SLUICE_DEVICE_SAMPLING");
        else
            setenv("SLUICE_DEVICE_SAMPLING", "0", 1);
        wk_engine_config c;
        wk_engine_config_defaults(&c);
        c.backend = &w_ops;
        c.kv_cache_bytes = (uint64_t)64 * 16 * wk_kv_bytes_per_token(&m.hp, c.kv_dtype);
        c.max_batch_tokens = 64;
        c.max_running = 2;
        c.max_context = 256;
        wk_engine *e = NULL;
        assert_int_equal(wk_engine_create(&m, tok, &c, &e, err, sizeof(err)), CM_OK);
        unsetenv("SLUICE_DEVICE_SAMPLING");
        g_wrap_forwards = g_wrap_sample_forwards = 0;
        memset(outs[dev], 0, sizeof(outs[dev]));
        for (int i = 0; i < 2; i++) {
            wk_request req;
            memset(&req, 0, sizeof(req));
            req.id = 1 + (uint64_t)i;
            req.prompt = prompts[i];
            req.n_prompt = (uint32_t)n_prompt[i];
            req.max_tokens = i == 0 ? 8 : 24;
            wk_sampling_defaults(&req.sampling);
            req.sampling.temperature = 0.8f;
            req.sampling.top_p = 0.9f;
            req.sampling.seed = 5 + (uint64_t)i;
            req.sampling.logprobs = true;
            req.ignore_eos = true;
            req.grammar = i == 0 ? gr : NULL;
            req.cb = on_event;
            req.cb_arg = &outs[dev][i];
            assert_int_equal(wk_engine_submit(e, &req, err, sizeof(err)), CM_OK);
        }
        for (int steps = 0; wk_engine_has_work(e); steps++) {
            bool did = false;
            assert_int_equal(wk_engine_step(e, &did), CM_OK);
            assert_true(steps < 1000);
        }
        fwd[dev] = g_wrap_forwards;
        sfwd[dev] = g_wrap_sample_forwards;
        wk_engine_destroy(e);
    }
    assert_int_equal(sfwd[0], 0);
    assert_true(fwd[1] >= 1);  /* the grammar's steps */
    assert_true(sfwd[1] >= 1); /* the free request's steps after the grammar finished */
    for (int i = 0; i < 2; i++) {
        assert_true(outs[0][i].finished && outs[1][i].finished);
        assert_int_equal(outs[0][i].n, outs[1][i].n);
        for (uint32_t t = 0; t < outs[0][i].n; t++) {
            assert_int_equal(outs[0][i].toks[t], outs[1][i].toks[t]);
            assert_true(fabsf(outs[0][i].lp[t].logprob - outs[1][i].lp[t].logprob) <= 1e-4f);
        }
    }
    assert_true(outs[0][0].n < 8); /* the grammar ended it */
    wk_grammar_unref(gr);
    wk_tokenizer_free(tok);
    wk_model_fini(&m);
    wk_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sparse_matches_history),    cmocka_unit_test(test_penalty_list),
        cmocka_unit_test(test_engine_device_equals_host), cmocka_unit_test(test_engine_fallbacks),
        cmocka_unit_test(test_model_grammar_falls_back),
    };
    return cmocka_run_group_tests(tests, NULL, free_model);
}
