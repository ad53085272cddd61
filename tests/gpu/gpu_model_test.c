/*
 * gpu_model_test: the CUDA backend against the CPU backend on small synthetic llama models
 * (wk_model_synthetic), both driven directly through wk_backend_ops with a contiguous block
 * assignment (sequence s owns blocks [s*MB, (s+1)*MB)).
 *
 * Lockstep greedy decoding: at every step both backends get the same tokens (the CPU's argmax
 * is fed to both, so later steps stay comparable); their logits are compared (max rel error)
 * and their argmax must agree, except where the CPU's top-2 gap is within twice the measured
 * logit difference (a numerical tie: counted, reported, at most a quarter of the steps; random
 * synthetic weights give flat logits, so ties do happen). Batch 1 and batch 8 (plus 5: a padded
 * graph bucket), chunked prefill, flash vs plain attention, graphs on vs off, want_logits
 * subsets and rejected batches are covered. Exit 0 pass, 1 fail, 77 no device.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend/cuda/cuda_backend.h"
#include "gpu_util.h"
#include "model.h"
#include "sample_cases.h"

#define N_PROMPTS 8
#define MB 16 /* blocks per sequence */
#define BT 16 /* tokens per block */
#define STEPS 12
#define THR_LOGITS 5e-2 /* CPU: q8 activations for quantized weights; GPU: f16 activations */

static int g_pass;
static int g_fail;

static void check(const char *name, int ok, const char *detail) {
    printf("%-58s %s  %s\n", name, detail, ok ? "PASS" : "FAIL");
    if (ok) {
        g_pass++;
    } else {
        g_fail++;
    }
}

typedef struct prompt {
    int32_t toks[256];
    int len;
} prompt;

typedef struct cmp_stats {
    double max_rel;  /* worst logits rel error over all compared rows */
    int steps;       /* argmax comparisons */
    int agree;       /* equal argmax */
    int ties;        /* disagreements explained by the measured difference */
    int unexplained; /* real disagreements */
} cmp_stats;

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[b]) {
            b = i;
        }
    }
    return b;
}

static void compare_rows(const float *cpu, const float *gpu, int n_vocab, cmp_stats *st) {
    gu_err e = gu_compare(gpu, cpu, (size_t)n_vocab);
    double rel = e.n_bad ? INFINITY : e.rel;
    if (rel > st->max_rel) {
        st->max_rel = rel;
    }
    int a = argmax(cpu, n_vocab);
    int b = argmax(gpu, n_vocab);
    st->steps++;
    if (a == b) {
        st->agree++;
    } else if (fabs((double)cpu[a] - (double)cpu[b]) <= 2.0 * e.max_abs_diff) {
        st->ties++;
    } else {
        st->unexplained++;
        printf("    argmax differs: cpu %d (%.5f) gpu %d (cpu logit %.5f), max diff %.5f\n", a,
               cpu[a], b, cpu[b], e.max_abs_diff);
    }
}

/* Builds and runs one forward on be for the given sequences: each sequence contributes
 * n_new[s] tokens starting at position pos0[s]. With in, the step samples on the device
 * (forward_sample into out) instead of writing logits. */
static cm_err run_step_ex(const wk_backend_ops *ops, wk_backend *be, int n_seqs, const int *seq_ids,
                          const int32_t *const *toks, const int *pos0, const int *n_new,
                          const uint8_t *want, float *logits, const wk_dev_sample_in *in,
                          wk_sample_result *out) {
    int32_t tokens[1024], positions[1024];
    uint32_t seq_start[N_PROMPTS + 1];
    int32_t bt[N_PROMPTS * MB];
    uint32_t n = 0;
    for (int s = 0; s < n_seqs; s++) {
        seq_start[s] = n;
        for (int i = 0; i < n_new[s]; i++, n++) {
            tokens[n] = toks[s][i];
            positions[n] = pos0[s] + i;
        }
        for (int k = 0; k < MB; k++) {
            bt[s * MB + k] = seq_ids[s] * MB + k;
        }
    }
    seq_start[n_seqs] = n;
    wk_batch b = {(uint32_t)n_seqs, n, tokens, positions, seq_start, bt, want};
    return in != NULL ? ops->forward_sample(be, &b, in, out) : ops->forward(be, &b, logits);
}

static cm_err run_step(const wk_backend_ops *ops, wk_backend *be, int n_seqs, const int *seq_ids,
                       const int32_t *const *toks, const int *pos0, const int *n_new,
                       const uint8_t *want, float *logits, int n_vocab) {
    (void)n_vocab;
    return run_step_ex(ops, be, n_seqs, seq_ids, toks, pos0, n_new, want, logits, NULL, NULL);
}

/*
 * Prefill (optionally in chunks of `chunk` tokens) then STEPS greedy decode steps for the
 * prompts listed in ids, all in one batch, on both backends in lockstep.
 */
static int lockstep(wk_backend *cpu, wk_backend *gpu, const prompt *prompts, const int *ids, int n,
                    int chunk, int n_vocab, cmp_stats *st) {
    float *lc = gu_xmalloc((size_t)n * n_vocab * 4);
    float *lg = gu_xmalloc((size_t)n * n_vocab * 4);
    int32_t gen[N_PROMPTS][STEPS + 1];
    const int32_t *tp[N_PROMPTS];
    int pos0[N_PROMPTS], nn[N_PROMPTS];
    uint8_t want[N_PROMPTS];
    int ok = 1;
    /* prefill in chunks: every sequence advances by up to `chunk` tokens per step */
    int done[N_PROMPTS] = {0};
    for (;;) {
        int active = 0;
        int seq_ids[N_PROMPTS];
        for (int s = 0; s < n; s++) {
            const prompt *p = &prompts[ids[s]];
            if (done[s] >= p->len) {
                continue;
            }
            int take = p->len - done[s];
            if (chunk > 0 && take > chunk) {
                take = chunk;
            }
            seq_ids[active] = ids[s];
            tp[active] = p->toks + done[s];
            pos0[active] = done[s];
            nn[active] = take;
            want[active] = done[s] + take == p->len;
            done[s] += take;
            active++;
        }
        if (active == 0) {
            break;
        }
        for (int i = 0; i < active * n_vocab; i++) {
            lc[i] = NAN;
            lg[i] = NAN;
        }
        cm_err e1 =
            run_step(&wk_backend_cpu, cpu, active, seq_ids, tp, pos0, nn, want, lc, n_vocab);
        cm_err e2 =
            run_step(&wk_backend_cuda, gpu, active, seq_ids, tp, pos0, nn, want, lg, n_vocab);
        if (e1 != CM_OK || e2 != CM_OK) {
            printf("    prefill failed: cpu %s, cuda %s (%s)\n", cm_strerror(e1), cm_strerror(e2),
                   wk_cuda_last_error(gpu));
            ok = 0;
            goto out;
        }
        /* rows of sequences that finished their prompt: compare, record the first token */
        for (int a = 0; a < active; a++) {
            if (!want[a]) {
                continue;
            }
            int s = 0;
            while (ids[s] != seq_ids[a]) {
                s++;
            }
            compare_rows(lc + (size_t)a * n_vocab, lg + (size_t)a * n_vocab, n_vocab, st);
            gen[s][0] = argmax(lc + (size_t)a * n_vocab, n_vocab);
        }
    }
    for (int step = 0; step < STEPS; step++) {
        int seq_ids[N_PROMPTS];
        for (int s = 0; s < n; s++) {
            seq_ids[s] = ids[s];
            tp[s] = &gen[s][step];
            pos0[s] = prompts[ids[s]].len + step;
            nn[s] = 1;
            want[s] = 1;
        }
        for (int i = 0; i < n * n_vocab; i++) {
            lc[i] = NAN;
            lg[i] = NAN;
        }
        cm_err e1 = run_step(&wk_backend_cpu, cpu, n, seq_ids, tp, pos0, nn, want, lc, n_vocab);
        cm_err e2 = run_step(&wk_backend_cuda, gpu, n, seq_ids, tp, pos0, nn, want, lg, n_vocab);
        if (e1 != CM_OK || e2 != CM_OK) {
            printf("    decode failed: cpu %s, cuda %s (%s)\n", cm_strerror(e1), cm_strerror(e2),
                   wk_cuda_last_error(gpu));
            ok = 0;
            goto out;
        }
        for (int s = 0; s < n; s++) {
            compare_rows(lc + (size_t)s * n_vocab, lg + (size_t)s * n_vocab, n_vocab, st);
            gen[s][step + 1] = argmax(lc + (size_t)s * n_vocab, n_vocab);
        }
    }
out:
    free(lc);
    free(lg);
    return ok;
}

static void report_lockstep(const char *label, int ok, const cmp_stats *st) {
    char detail[160];
    snprintf(detail, sizeof(detail), "logits rel %.2e (thr %.0e), argmax %d/%d, ties %d, bad %d",
             st->max_rel, THR_LOGITS, st->agree, st->steps, st->ties, st->unexplained);
    check(label,
          ok && st->unexplained == 0 && st->max_rel <= THR_LOGITS && st->steps > 0 &&
              st->ties * 4 <= st->steps,
          detail);
}

/* Logits of one prompt prefilled on the GPU alone (sequence slot 0). */
static cm_err gpu_prefill_logits(wk_backend *gpu, const prompt *p, int chunk, float *logits,
                                 int n_vocab, int seq_id) {
    int done = 0;
    while (done < p->len) {
        int take = p->len - done;
        if (chunk > 0 && take > chunk) {
            take = chunk;
        }
        const int32_t *tp = p->toks + done;
        uint8_t want = done + take == p->len;
        cm_err rv =
            run_step(&wk_backend_cuda, gpu, 1, &seq_id, &tp, &done, &take, &want, logits, n_vocab);
        if (rv != CM_OK) {
            return rv;
        }
        done += take;
    }
    return CM_OK;
}

static void test_gpu_only(wk_backend *gpu, const prompt *prompts, int n_vocab) {
    float *a = gu_xmalloc((size_t)N_PROMPTS * n_vocab * 4);
    float *b = gu_xmalloc((size_t)N_PROMPTS * n_vocab * 4);
    char detail[128];
    const prompt *p = &prompts[5]; /* 100 tokens */

    /* chunked prefill (64 + 36, the second chunk continuing the cache) == one prefill */
    cm_err r1 = gpu_prefill_logits(gpu, p, 0, a, n_vocab, 0);
    cm_err r2 = gpu_prefill_logits(gpu, p, 64, b, n_vocab, 0);
    gu_err e = gu_compare(b, a, (size_t)n_vocab);
    snprintf(detail, sizeof(detail), "rel %.2e", e.rel);
    check("cuda: chunked prefill 64+36 == single prefill",
          r1 == CM_OK && r2 == CM_OK && e.n_bad == 0 && e.rel < 1e-2, detail);

    /* flash prefill == plain attention prefill */
    wk_cuda_set_flash(gpu, 0);
    r2 = gpu_prefill_logits(gpu, p, 0, b, n_vocab, 0);
    wk_cuda_set_flash(gpu, 1);
    e = gu_compare(b, a, (size_t)n_vocab);
    snprintf(detail, sizeof(detail), "rel %.2e", e.rel);
    check("cuda: flash prefill == plain attention prefill",
          r1 == CM_OK && r2 == CM_OK && e.n_bad == 0 && e.rel < 1e-2, detail);

    /* decode with graphs on (padded bucket 6 for 5 sequences) == graphs off */
    {
        int seq_ids[5] = {0, 1, 2, 3, 4};
        int32_t tok[5] = {1, 2, 3, 4, 5};
        const int32_t *tp[5] = {&tok[0], &tok[1], &tok[2], &tok[3], &tok[4]};
        int pos0[5] = {3, 9, 40, 0, 77};
        int nn[5] = {1, 1, 1, 1, 1};
        uint8_t want[5] = {1, 1, 1, 1, 1};
        wk_cuda_set_graphs(gpu, 1);
        r1 = run_step(&wk_backend_cuda, gpu, 5, seq_ids, tp, pos0, nn, want, a, n_vocab);
        r1 = r1 == CM_OK
                 ? run_step(&wk_backend_cuda, gpu, 5, seq_ids, tp, pos0, nn, want, a, n_vocab)
                 : r1; /* second call replays the captured graph */
        wk_cuda_info info;
        wk_cuda_get_info(gpu, &info);
        wk_cuda_set_graphs(gpu, 0);
        r2 = run_step(&wk_backend_cuda, gpu, 5, seq_ids, tp, pos0, nn, want, b, n_vocab);
        wk_cuda_set_graphs(gpu, 1);
        e = gu_compare(a, b, (size_t)5 * n_vocab);
        snprintf(detail, sizeof(detail), "rel %.2e, graphs captured %u", e.rel, info.graph_buckets);
        check("cuda: decode graph (bucket 6, 5 seqs) == eager",
              r1 == CM_OK && r2 == CM_OK && e.n_bad == 0 && e.rel < 1e-3 && info.graph_buckets >= 1,
              detail);

        /* programmatic dependent launch (sm_90) == plain launches, decode (GEMV path) and
         * prefill */
        {
            int ids1[1] = {6}; /* sequences 6 and 7 are not used by the checks below */
            int32_t t1 = 7;
            const int32_t *tp1[1] = {&t1};
            int p1[1] = {41};
            int n1[1] = {1};
            uint8_t w1[1] = {1};
            float *ref1 = gu_xmalloc((size_t)2 * n_vocab * 4);
            float *got1 = gu_xmalloc((size_t)2 * n_vocab * 4);
            wk_cuda_set_pdl(gpu, 0);
            cm_err q1 = run_step(&wk_backend_cuda, gpu, 1, ids1, tp1, p1, n1, w1, ref1, n_vocab);
            cm_err q2 = gpu_prefill_logits(gpu, &prompts[4], 0, ref1 + n_vocab, n_vocab, 7);
            wk_cuda_set_pdl(gpu, 1);
            cm_err q3 = run_step(&wk_backend_cuda, gpu, 1, ids1, tp1, p1, n1, w1, got1, n_vocab);
            q3 = q3 == CM_OK
                     ? run_step(&wk_backend_cuda, gpu, 1, ids1, tp1, p1, n1, w1, got1, n_vocab)
                     : q3; /* graph replay with PDL edges */
            cm_err q4 = gpu_prefill_logits(gpu, &prompts[4], 0, got1 + n_vocab, n_vocab, 7);
            wk_cuda_set_pdl(gpu, 0);
            gu_err ep = gu_compare(got1, ref1, (size_t)2 * n_vocab);
            snprintf(detail, sizeof(detail), "rel %.2e", ep.rel);
            check("cuda: PDL launches == plain launches (decode + prefill)",
                  q1 == CM_OK && q2 == CM_OK && q3 == CM_OK && q4 == CM_OK && ep.n_bad == 0 &&
                      ep.rel < 1e-3,
                  detail);
            free(ref1);
            free(got1);
        }

        /* fused decode GEMVs (norm / SwiGLU / residual folded in) == the unfused step */
        wk_cuda_set_fuse(gpu, 1);
        wk_cuda_set_gemv_max_rows(gpu, 8); /* the 6-row bucket must take the GEMV paths */
        float *f = gu_xmalloc((size_t)5 * n_vocab * 4);
        cm_err rf = run_step(&wk_backend_cuda, gpu, 5, seq_ids, tp, pos0, nn, want, f, n_vocab);
        rf = rf == CM_OK
                 ? run_step(&wk_backend_cuda, gpu, 5, seq_ids, tp, pos0, nn, want, f, n_vocab)
                 : rf; /* second call replays the fused graph */
        wk_cuda_set_fuse(gpu, 0);
        /* the unfused custom GEMV at 6 rows, too */
        float *g6 = gu_xmalloc((size_t)5 * n_vocab * 4);
        cm_err rg = run_step(&wk_backend_cuda, gpu, 5, seq_ids, tp, pos0, nn, want, g6, n_vocab);
        wk_cuda_options dflt;
        wk_cuda_options_default(&dflt);
        wk_cuda_set_gemv_max_rows(gpu, dflt.gemv_max_rows);
        gu_err eg = gu_compare(g6, a, (size_t)5 * n_vocab);
        snprintf(detail, sizeof(detail), "rel %.2e", eg.rel);
        check("cuda: GEMV decode (6 rows) == cuBLAS decode",
              rg == CM_OK && eg.n_bad == 0 && eg.rel < 1e-2, detail);
        free(g6);
        e = gu_compare(f, a, (size_t)5 * n_vocab);
        snprintf(detail, sizeof(detail), "rel %.2e", e.rel);
        check("cuda: fused decode GEMVs == unfused", rf == CM_OK && e.n_bad == 0 && e.rel < 1e-2,
              detail);
        free(f);

        /* profiling: every op of an eager prefill is timed, GEMMs take time */
        {
            double ms[WK_CUDA_PROF_N];
            cm_err rp = wk_cuda_set_profile(gpu, 1);
            cm_err rq = gpu_prefill_logits(gpu, &prompts[2], 0, b, n_vocab, 7);
            int ops = wk_cuda_get_profile(gpu, ms);
            wk_cuda_set_profile(gpu, 0);
            int ok = rp == CM_OK && rq == CM_OK && ops > 8 && ms[WK_CUDA_PROF_GEMM] > 0.0;
            for (int k = 0; k < WK_CUDA_PROF_N; k++) {
                ok &= ms[k] >= 0.0;
            }
            snprintf(detail, sizeof(detail), "%d ops, gemm %.3f ms, attention %.3f ms", ops,
                     ms[WK_CUDA_PROF_GEMM], ms[WK_CUDA_PROF_ATTN]);
            check("cuda: per-op profile of an eager prefill", ok, detail);
        }

        /* want_logits subset: rows 1 and 3 must stay untouched */
        uint8_t want2[5] = {1, 0, 1, 0, 1};
        for (int i = 0; i < 5 * n_vocab; i++) {
            b[i] = -12345.0f;
        }
        r2 = run_step(&wk_backend_cuda, gpu, 5, seq_ids, tp, pos0, nn, want2, b, n_vocab);
        int untouched = 1;
        for (int i = 0; i < n_vocab; i++) {
            untouched &= b[1 * n_vocab + i] == -12345.0f && b[3 * n_vocab + i] == -12345.0f;
        }
        gu_err e0 = gu_compare(b, a, (size_t)n_vocab);
        gu_err e2 = gu_compare(b + 2 * n_vocab, a + 2 * n_vocab, (size_t)n_vocab);
        gu_err e4 = gu_compare(b + 4 * n_vocab, a + 4 * n_vocab, (size_t)n_vocab);
        snprintf(detail, sizeof(detail), "rel %.1e/%.1e/%.1e", e0.rel, e2.rel, e4.rel);
        check("cuda: want_logits subset writes only wanted rows",
              r2 == CM_OK && untouched && e0.rel < 1e-3 && e2.rel < 1e-3 && e4.rel < 1e-3, detail);

        /* rejected batches leave the backend healthy */
        int32_t bad_tok = n_vocab;
        const int32_t *btp[1] = {&bad_tok};
        cm_err rb1 = run_step(&wk_backend_cuda, gpu, 1, seq_ids, btp, pos0, nn, want, b, n_vocab);
        int big_pos[1] = {MB * BT}; /* beyond the block table */
        cm_err rb2 = run_step(&wk_backend_cuda, gpu, 1, seq_ids, tp, big_pos, nn, want, b, n_vocab);
        int far_seq[1] = {N_PROMPTS}; /* its blocks are beyond n_blocks */
        cm_err rb3 = run_step(&wk_backend_cuda, gpu, 1, far_seq, tp, pos0, nn, want, b, n_vocab);
        snprintf(detail, sizeof(detail), "bad token: %s, position past table: %s, block id: %s",
                 cm_strerror(rb1), cm_strerror(rb2), cm_strerror(rb3));
        check("cuda: invalid batches rejected, backend healthy",
              rb1 == CM_ERR_INVALID && rb2 == CM_ERR_LIMIT && rb3 == CM_ERR_INVALID &&
                  wk_backend_cuda.healthy(gpu),
              detail);
        /* and it still computes the same logits afterwards */
        r2 = run_step(&wk_backend_cuda, gpu, 5, seq_ids, tp, pos0, nn, want, b, n_vocab);
        e = gu_compare(b, a, (size_t)5 * n_vocab);
        snprintf(detail, sizeof(detail), "rel %.2e", e.rel);
        check("cuda: same logits after rejected batches", r2 == CM_OK && e.rel < 1e-3, detail);
    }
    free(a);
    free(b);
}

static void run_on_model(const char *label, const wk_hparams *hpp, wk_model *mp);

/* The test shape: 4 layers, n_embd 256 (a multiple of the K-quants' 256), GQA 4/2. */
static void test_hparams(wk_hparams *hp, wk_rope_style style, int tied) {
    memset(hp, 0, sizeof(*hp));
    hp->n_vocab = 1024;
    hp->n_ctx_train = 1024;
    hp->n_embd = 256;
    hp->n_layer = 4;
    hp->n_head = 4;
    hp->n_head_kv = 2;
    hp->head_dim = 64;
    hp->n_rot = 64;
    hp->n_ff = 512;
    hp->rms_eps = 1e-5f;
    hp->rope_freq_base = 10000.0f;
    hp->rope_style = style;
    hp->rope_scaling = WK_ROPE_SCALING_NONE;
    hp->rope_scaling_factor = 1.0f;
    hp->tied_embeddings = tied;
}

/* A model with every device kind and fused matrices split into parts: Q, K in Q4_K with V in
 * Q6_K (as Q4_K_M files), gate Q4_K with up Q5_K, O Q4_0, down Q4_1, output Q8_0. Tensors are
 * borrowed from synthetic models of each type (all kept alive until the run ends). */
static void run_mixed_model(void) {
    wk_hparams hp;
    test_hparams(&hp, WK_ROPE_NORM, 0);
    const wk_dtype types[6] = {WK_DTYPE_Q4_K, WK_DTYPE_Q6_K, WK_DTYPE_Q5_K,
                               WK_DTYPE_Q4_0, WK_DTYPE_Q4_1, WK_DTYPE_Q8_0};
    wk_model ms[6];
    memset(ms, 0, sizeof(ms));
    for (int i = 0; i < 6; i++) {
        if (wk_model_synthetic(&hp, types[i], 0xBEEF + (uint64_t)i, &ms[i]) != CM_OK) {
            check("mixed: wk_model_synthetic", 0, wk_dtype_name(types[i]));
            goto out;
        }
    }
    wk_model m = ms[0]; /* a view: ms[0] keeps ownership */
    wk_layer *layers = calloc(hp.n_layer, sizeof(*layers));
    if (layers == NULL) {
        goto out;
    }
    for (uint32_t l = 0; l < hp.n_layer; l++) {
        layers[l] = ms[0].layers[l];
        layers[l].wv = ms[1].layers[l].wv;
        layers[l].w_up = ms[2].layers[l].w_up;
        layers[l].wo = ms[3].layers[l].wo;
        layers[l].w_down = ms[4].layers[l].w_down;
    }
    m.layers = layers;
    m.output = ms[5].output;
    run_on_model("mixed q4_k/q6_k/q5_k/q4_0/q4_1/q8_0", &hp, &m);
    free(layers);
out:
    for (int i = 0; i < 6; i++) {
        wk_model_fini(&ms[i]);
    }
}

static void run_model(const char *label, wk_dtype wtype, wk_rope_style style, int tied) {
    wk_hparams hp;
    test_hparams(&hp, style, tied);
    wk_model m;
    memset(&m, 0, sizeof(m));
    cm_err rv = wk_model_synthetic(&hp, wtype, 0xC0FFEE ^ (uint64_t)wtype, &m);
    if (rv != CM_OK) {
        char name[128];
        snprintf(name, sizeof(name), "%s: wk_model_synthetic", label);
        check(name, 0, cm_strerror(rv));
        return;
    }
    run_on_model(label, &hp, &m);
    wk_model_fini(&m);
}

/* Native (quantized) weights against the f16 expansion of the same model: the same logits
 * within f16 rounding of the weights (the quantized values are exact, the f16 copy rounds
 * them), and fewer device bytes when the model is quantized. */
static void native_vs_f16(const char *label, const wk_model *m, const wk_backend_config *cfg,
                          wk_backend *native, const prompt *p, int n_vocab) {
    char name[160];
    char detail[300];
    char err[256] = "";
    wk_cuda_options o;
    wk_cuda_options_default(&o);
    o.weights = WK_CUDA_WEIGHTS_F16;
    wk_backend *f16 = NULL;
    cm_err rv = wk_cuda_create_ex(m, cfg, &o, &f16, err, sizeof(err));
    snprintf(name, sizeof(name), "%s: weights f16 create", label);
    check(name, rv == CM_OK, err);
    if (rv != CM_OK) {
        return;
    }
    wk_cuda_info in, if16;
    wk_cuda_get_info(native, &in);
    wk_cuda_get_info(f16, &if16);
    float *a = gu_xmalloc((size_t)n_vocab * 4);
    float *b = gu_xmalloc((size_t)n_vocab * 4);
    cm_err ra = gpu_prefill_logits(native, p, 0, a, n_vocab, 7);
    cm_err rb = gpu_prefill_logits(f16, p, 0, b, n_vocab, 7);
    gu_err e = gu_compare(a, b, (size_t)n_vocab);
    snprintf(detail, sizeof(detail), "rel %.2e, argmax %d/%d; bytes read per step %zu vs %zu",
             e.rel, argmax(a, n_vocab), argmax(b, n_vocab), in.weight_bytes_device,
             if16.weight_bytes_device);
    snprintf(name, sizeof(name), "%s: native weights == f16 expansion (prefill logits)", label);
    check(name, ra == CM_OK && rb == CM_OK && e.n_bad == 0 && e.rel < 1e-2, detail);
    if (in.weight_quant_bytes > 0) {
        snprintf(name, sizeof(name), "%s: native weights read fewer bytes", label);
        check(name, in.weights_native && in.weight_bytes_device < if16.weight_bytes_device * 7 / 10,
              detail);
    }
    free(a);
    free(b);
    wk_backend_cuda.destroy(f16);
}

/* ---- device sampling -------------------------------------------------------------------- */

typedef struct dev_cmp {
    int rows, drawn_diff, other_bad;
    double lp_worst;
} dev_cmp;

/* One step both ways: forward (logits to the host, sampled there with the reference) and
 * forward_sample (the same batch again: it rewrites the same KV); the device's tokens go on. */
static cm_err dev_step(wk_backend *gpu, wk_sampler *smp, int n, const int *seq_ids,
                       const int32_t *const *tp, const int *pos0, const int *nn,
                       const uint8_t *want, int32_t (*hist)[300], const int *n_hist,
                       const int *n_prompt, wk_rng *rngs, const wk_sampling_params *params,
                       float *lg, int n_vocab, dev_cmp *st, int32_t *next) {
    wk_dev_sample_seq ds[N_PROMPTS];
    wk_penalty_entry pen[N_PROMPTS][300];
    int row_of[N_PROMPTS];
    uint32_t j = 0;
    for (int s = 0; s < n; s++) {
        next[s] = -1;
        if (!want[s]) {
            continue;
        }
        size_t n_pen = 0;
        (void)wk_sampler_penalties(smp, hist[s], (size_t)n_hist[s], (size_t)n_prompt[s], pen[s],
                                   300, &n_pen);
        ds[j].params = &params[s];
        ds[j].pen = wk_sampling_has_penalties(&params[s]) ? pen[s] : NULL;
        ds[j].n_pen = wk_sampling_has_penalties(&params[s]) ? (uint32_t)n_pen : 0;
        ds[j].u = wk_sampling_draws(&params[s]) ? wk_rng_uniform(&rngs[s]) : 0.0;
        row_of[s] = (int)j;
        j++;
    }
    wk_dev_sample_in in = {j, ds};
    wk_sample_result out[N_PROMPTS];
    cm_err rv = run_step_ex(&wk_backend_cuda, gpu, n, seq_ids, tp, pos0, nn, want, lg, NULL, NULL);
    if (rv == CM_OK) {
        rv = run_step_ex(&wk_backend_cuda, gpu, n, seq_ids, tp, pos0, nn, want, NULL, &in, out);
    }
    if (rv != CM_OK) {
        return rv;
    }
    float *row = gu_xmalloc((size_t)n_vocab * 4);
    for (int s = 0; s < n; s++) {
        if (!want[s]) {
            continue;
        }
        const int k = row_of[s];
        memcpy(row, lg + (size_t)s * n_vocab, (size_t)n_vocab * 4);
        wk_sample_result ref;
        if (wk_sampler_sample_sparse(smp, &params[s], row, ds[k].pen, ds[k].n_pen, ds[k].u, &ref) !=
            CM_OK) {
            ref.token_id = -1;
        }
        const wk_sample_result *got = &out[k];
        st->rows++;
        next[s] = got->token_id;
        if (ref.token_id != got->token_id) {
            if (params[s].temperature > 0.0f && ref.token_id >= 0 && got->token_id >= 0) {
                st->drawn_diff++; /* rounding at a boundary of the draw: bounded below */
            } else {
                st->other_bad++;
            }
            continue;
        }
        double d = fabs((double)ref.logprob - (double)got->logprob);
        st->lp_worst = d > st->lp_worst ? d : st->lp_worst;
        int bad = !(d <= 1e-4) || ref.n_top != got->n_top;
        for (uint32_t t = 0; !bad && t < ref.n_top; t++) {
            d = fabs((double)ref.top[t].logprob - (double)got->top[t].logprob);
            st->lp_worst = d > st->lp_worst ? d : st->lp_worst;
            bad = ref.top[t].token_id != got->top[t].token_id || !(d <= 1e-4);
        }
        st->other_bad += bad;
    }
    free(row);
    return CM_OK;
}

/*
 * forward_sample against the same backend's logits sampled by the host reference, for the
 * sequences ids (n of them): a prefill step, then STEPS decode steps (graph buckets, padded
 * when n is not a bucket size) feeding the device's tokens, with unsampled rows in both.
 */
static void test_device_sampling(wk_backend *gpu, const prompt *prompts, const int *ids, int n,
                                 int n_vocab, const char *label) {
    wk_sampler *smp = NULL;
    if (wk_sampler_create((uint32_t)n_vocab, &smp) != CM_OK) {
        check("device sampling: host sampler", 0, "create failed");
        return;
    }
    float *lg = gu_xmalloc((size_t)N_PROMPTS * n_vocab * 4);
    static int32_t hist[N_PROMPTS][300];
    int n_hist[N_PROMPTS], n_prompt[N_PROMPTS], seq_ids[N_PROMPTS], pos0[N_PROMPTS], nn[N_PROMPTS];
    const int32_t *tp[N_PROMPTS];
    uint8_t want[N_PROMPTS];
    int32_t next[N_PROMPTS];
    wk_rng rngs[N_PROMPTS];
    wk_sampling_params params[N_PROMPTS];
    dev_cmp st = {0};
    cm_err rv = CM_OK;
    /* The second sequence holds back its last two prompt tokens: the first of them goes with
     * the others' first decode step as an unsampled row (a decode-shaped step, so a graph
     * bucket whose rows are batch positions, with a gap in the sampled ones), the last alone. */
    const int held = n > 1 ? 1 : -1;
    for (int s = 0; s < n; s++) {
        const prompt *p = &prompts[ids[s]];
        sc_case_params(s, &params[s]);
        params[s].seed = 77 + (uint64_t)s;
        wk_rng_seed(&rngs[s], params[s].seed);
        memcpy(hist[s], p->toks, (size_t)p->len * 4);
        n_hist[s] = n_prompt[s] = p->len;
        seq_ids[s] = ids[s];
        tp[s] = p->toks;
        pos0[s] = 0;
        nn[s] = s == held ? p->len - 2 : p->len;
        want[s] = s != held;
    }
    rv = dev_step(gpu, smp, n, seq_ids, tp, pos0, nn, want, hist, n_hist, n_prompt, rngs, params,
                  lg, n_vocab, &st, next);
    for (int step = 0; rv == CM_OK && step < STEPS; step++) {
        for (int s = 0; s < n; s++) {
            if (step == 0 && s == held) {
                tp[s] = &hist[s][n_hist[s] - 2];
                pos0[s] = n_hist[s] - 2;
                nn[s] = 1;
                want[s] = 0;
                continue;
            }
            if (next[s] < 0 || n_hist[s] >= 300) {
                rv = CM_ERR_INTERNAL;
                break;
            }
            hist[s][n_hist[s]++] = next[s];
            tp[s] = &hist[s][n_hist[s] - 1];
            pos0[s] = n_hist[s] - 1;
            nn[s] = 1;
            want[s] = 1;
        }
        if (rv == CM_OK) {
            rv = dev_step(gpu, smp, n, seq_ids, tp, pos0, nn, want, hist, n_hist, n_prompt, rngs,
                          params, lg, n_vocab, &st, next);
        }
        if (rv == CM_OK && step == 0 && held >= 0) {
            int one = 1, at = n_hist[held] - 1;
            const int32_t *last = &hist[held][at];
            uint8_t w1 = 1;
            int32_t nx = -1;
            rv = dev_step(gpu, smp, 1, &seq_ids[held], &last, &at, &one, &w1, &hist[held],
                          &n_hist[held], &n_prompt[held], &rngs[held], &params[held], lg, n_vocab,
                          &st, &nx);
            next[held] = nx;
        }
    }
    char name[128], detail[200];
    snprintf(name, sizeof(name), "%s: device sampling, batch %d", label, n);
    snprintf(detail, sizeof(detail), "%s: %d rows, drawn diff %d, bad %d, logprob worst %.1e %s",
             cm_strerror(rv), st.rows, st.drawn_diff, st.other_bad, st.lp_worst,
             rv == CM_OK ? "" : wk_cuda_last_error(gpu));
    check(name, rv == CM_OK && st.other_bad == 0 && st.drawn_diff <= 1 && st.rows >= n * STEPS,
          detail);
    free(lg);
    wk_sampler_destroy(smp);
}

/* Bad descriptors are refused before anything runs, and the backend stays usable. */
static void test_device_sampling_bounds(wk_backend *gpu, const prompt *prompts, int n_vocab) {
    const prompt *p = &prompts[0];
    int id = 0, pos = 0, len = p->len;
    const int32_t *tp = p->toks;
    uint8_t want = 1;
    wk_sampling_params sp;
    wk_sampling_defaults(&sp);
    wk_dev_sample_seq d = {&sp, NULL, 0, 0.5};
    wk_dev_sample_in in = {1, &d};
    wk_sample_result out[2];
    static wk_penalty_entry pen[WK_DEV_SAMPLE_MAX_PENALTY + 1];
    d.pen = pen;
    d.n_pen = WK_DEV_SAMPLE_MAX_PENALTY + 1; /* past the penalty bound */
    cm_err r1 = run_step_ex(&wk_backend_cuda, gpu, 1, &id, &tp, &pos, &len, &want, NULL, &in, out);
    d.pen = NULL;
    d.n_pen = 0;
    d.u = 1.0; /* outside [0, 1) */
    cm_err r2 = run_step_ex(&wk_backend_cuda, gpu, 1, &id, &tp, &pos, &len, &want, NULL, &in, out);
    d.u = 0.5;
    in.n = 2; /* more entries than logits rows */
    cm_err r3 = run_step_ex(&wk_backend_cuda, gpu, 1, &id, &tp, &pos, &len, &want, NULL, &in, out);
    in.n = 1;
    sp.n_logit_bias = 1;
    sp.logit_bias[0] = (wk_logit_bias){(int32_t)n_vocab, 1.0f};
    cm_err r4 = run_step_ex(&wk_backend_cuda, gpu, 1, &id, &tp, &pos, &len, &want, NULL, &in, out);
    sp.n_logit_bias = 0;
    cm_err r5 = run_step_ex(&wk_backend_cuda, gpu, 1, &id, &tp, &pos, &len, &want, NULL, &in, out);
    char detail[160];
    snprintf(detail, sizeof(detail), "%s %s %s %s, then %s (token %d)", cm_strerror(r1),
             cm_strerror(r2), cm_strerror(r3), cm_strerror(r4), cm_strerror(r5), out[0].token_id);
    check("cuda: forward_sample refuses bad descriptors, stays usable",
          r1 == CM_ERR_INVALID && r2 == CM_ERR_INVALID && r3 == CM_ERR_INVALID &&
              r4 == CM_ERR_INVALID && r5 == CM_OK && out[0].token_id >= 0 &&
              out[0].token_id < n_vocab && wk_backend_cuda.healthy(gpu),
          detail);
}

static void run_on_model(const char *label, const wk_hparams *hpp, wk_model *mp) {
    const wk_hparams hp = *hpp;
    wk_model m = *mp;
    cm_err rv;
    char name[128];
    wk_backend_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.block_tokens = BT;
    cfg.n_blocks = N_PROMPTS * MB;
    cfg.kv_dtype = WK_DTYPE_F16;
    cfg.max_batch_tokens = 1024;
    cfg.max_seqs = N_PROMPTS;
    cfg.max_blocks_per_seq = MB;
    cfg.n_threads = 0;
    cfg.device = 0;
    wk_backend *cpu = NULL, *gpu = NULL;
    char err[256] = "";
    rv = wk_backend_cpu.create(&m, &cfg, &cpu, err, sizeof(err));
    if (rv != CM_OK) {
        snprintf(name, sizeof(name), "%s: cpu create", label);
        check(name, 0, err);
        return;
    }
    double t0 = gu_now();
    rv = wk_backend_cuda.create(&m, &cfg, &gpu, err, sizeof(err));
    snprintf(name, sizeof(name), "%s: cuda create", label);
    char detail[300];
    snprintf(detail, sizeof(detail), "%s (%.2f s) %s", cm_strerror(rv), gu_now() - t0, err);
    check(name, rv == CM_OK, detail);
    if (rv != CM_OK) {
        wk_backend_cpu.destroy(cpu);
        return;
    }

    static const int lens[N_PROMPTS] = {5, 12, 33, 64, 65, 100, 7, 20};
    prompt prompts[N_PROMPTS];
    gu_rng r = {0xABCDEF12345ULL + (uint64_t)m.layers[0].wq.type};
    for (int p = 0; p < N_PROMPTS; p++) {
        prompts[p].len = lens[p];
        for (int i = 0; i < lens[p]; i++) {
            prompts[p].toks[i] = (int32_t)(gu_next(&r) % hp.n_vocab);
        }
    }
    /* batch 1: three prompts alone */
    for (int p = 0; p < 3; p++) {
        int id = p * 2 + 1;
        cmp_stats st = {0};
        int ok = lockstep(cpu, gpu, prompts, &id, 1, 0, (int)hp.n_vocab, &st);
        snprintf(name, sizeof(name), "%s: batch 1, prompt %d tokens", label, prompts[id].len);
        report_lockstep(name, ok, &st);
    }
    /* batch 8 and batch 5 (padded bucket), prefill chunked at 48 for batch 8 */
    {
        int ids[N_PROMPTS] = {0, 1, 2, 3, 4, 5, 6, 7};
        cmp_stats st = {0};
        int ok = lockstep(cpu, gpu, prompts, ids, 8, 48, (int)hp.n_vocab, &st);
        snprintf(name, sizeof(name), "%s: batch 8 (chunked prefill 48)", label);
        report_lockstep(name, ok, &st);
        int ids5[5] = {7, 2, 5, 0, 3};
        cmp_stats st5 = {0};
        ok = lockstep(cpu, gpu, prompts, ids5, 5, 0, (int)hp.n_vocab, &st5);
        snprintf(name, sizeof(name), "%s: batch 5 (graph bucket 6, padded)", label);
        report_lockstep(name, ok, &st5);
    }
    test_gpu_only(gpu, prompts, (int)hp.n_vocab);
    static int sampled_once; /* device sampling: one model is enough (it checks sampling) */
    if (!sampled_once) {
        sampled_once = 1;
        int ids8[N_PROMPTS] = {0, 1, 2, 3, 4, 5, 6, 7};
        int ids5[5] = {7, 2, 5, 0, 3};
        int id1 = 4;
        test_device_sampling(gpu, prompts, ids8, 8, (int)hp.n_vocab, label);
        test_device_sampling(gpu, prompts, ids5, 5, (int)hp.n_vocab, label);
        test_device_sampling(gpu, prompts, &id1, 1, (int)hp.n_vocab, label);
        test_device_sampling_bounds(gpu, prompts, (int)hp.n_vocab);
    }
    native_vs_f16(label, &m, &cfg, gpu, &prompts[5], (int)hp.n_vocab);
    wk_backend_cuda.destroy(gpu);
    wk_backend_cpu.destroy(cpu);
}

int main(void) {
    if (!gu_device_ok()) {
        /* the create path must still report the missing device cleanly */
        wk_hparams hp;
        memset(&hp, 0, sizeof(hp));
        hp.n_vocab = 64;
        hp.n_embd = 64;
        hp.n_layer = 1;
        hp.n_head = 1;
        hp.n_head_kv = 1;
        hp.head_dim = 64;
        hp.n_rot = 64;
        hp.n_ff = 64;
        wk_model m;
        memset(&m, 0, sizeof(m));
        if (wk_model_synthetic(&hp, WK_DTYPE_F16, 1, &m) == CM_OK) {
            wk_backend_config cfg;
            memset(&cfg, 0, sizeof(cfg));
            cfg.block_tokens = 16;
            cfg.n_blocks = 4;
            cfg.kv_dtype = WK_DTYPE_F16;
            cfg.max_batch_tokens = 16;
            cfg.max_seqs = 1;
            cfg.max_blocks_per_seq = 4;
            wk_backend *be = (wk_backend *)&m; /* must be reset to NULL */
            char err[256] = "";
            cm_err rv = wk_backend_cuda.create(&m, &cfg, &be, err, sizeof(err));
            printf("cuda create without a device: %s, \"%s\"\n", cm_strerror(rv), err);
            wk_model_fini(&m);
            if (rv != CM_ERR_NO_DEVICE || be != NULL || strncmp(err, "no CUDA device", 14) != 0) {
                printf("FAIL: expected CM_ERR_NO_DEVICE with a 'no CUDA device' message\n");
                return 1;
            }
        }
        return GU_SKIP;
    }
    run_model("f16 norm", WK_DTYPE_F16, WK_ROPE_NORM, 0);
    run_model("q8_0 neox", WK_DTYPE_Q8_0, WK_ROPE_NEOX, 0);
    run_model("q4_k norm tied", WK_DTYPE_Q4_K, WK_ROPE_NORM, 1);
    run_mixed_model();
    printf("model: %d passed, %d failed\n", g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
