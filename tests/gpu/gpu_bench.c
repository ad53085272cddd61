/*
 * gpu_bench: the CUDA backend at Llama-3-8B shape with synthetic f16 weights filled on the
 * device (wk_cuda_options.synthetic_device; no 16 GB host model).
 *
 * Measures, in one run: device copy bandwidth (cudaMemcpy D2D, reported as read+write bytes
 * per second, and a read-only kernel), the cuBLAS f16 GEMM rate at a prefill-like shape,
 * decode tokens/s at batch 1/8/32/128 with 512 tokens of context already in the cache, and
 * prefill tokens/s for a 2,048-token prompt. Prints decode step time against the bandwidth
 * floor (weight bytes / bandwidth) and prefill against the GEMM rate, and the device sampler
 * at batch 1/64/256 against the host path (logits copy + host sampler).
 *
 * The KV cache content of the 512-token context is whatever the cache holds (zeros at create);
 * attention reads all of it, so the timing is that of a real 512-token context.
 *
 * Usage: gpu_bench [--kv FILE] [--quick] [--model FILE.gguf [--decode-only]]
 * (--kv writes "key value" lines for scripts/gpu-check; --quick: a 4-layer model and fewer
 * steps, for a smoke run; --model: a GGUF file instead of the synthetic f16 model, with the
 * backend's defaults (quantized weights stay quantized; SLUICE_CUDA_WEIGHTS=f16 expands them),
 * the floor from the bytes its step reads; --decode-only: stop after the decode batches).
 * Exit 77 without a device.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>

#include "backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_ops.h"
#include "gguf.h"
#include "gpu_util.h"
#include "model.h"
#include "sampler.h"

#define CTX 512
#define PREFILL_TOKENS 2048
#define BT 16

static FILE *g_kv;

static void kv(const char *key, double v) {
    if (g_kv) {
        fprintf(g_kv, "%s %.6g\n", key, v);
        fflush(g_kv);
    }
}

static double event_ms(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    GU_CUDA(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

/* D2D copy rate (read+write bytes/s) and read-only kernel rate, GB/s. */
static void measure_bandwidth(double *rw_gbs, double *read_gbs) {
    const size_t bytes = (size_t)2 << 30;
    void *src = NULL, *dst = NULL;
    float *sink = NULL;
    GU_CUDA(cudaMalloc(&src, bytes));
    GU_CUDA(cudaMalloc(&dst, bytes));
    GU_CUDA(cudaMalloc((void **)&sink, 4096 * 4));
    GU_CUDA(cudaMemset(src, 1, bytes));
    cudaEvent_t e0, e1;
    GU_CUDA(cudaEventCreate(&e0));
    GU_CUDA(cudaEventCreate(&e1));
    GU_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
    const int reps = 10;
    GU_CUDA(cudaEventRecord(e0, NULL));
    for (int i = 0; i < reps; i++) {
        GU_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, NULL));
    }
    GU_CUDA(cudaEventRecord(e1, NULL));
    GU_CUDA(cudaEventSynchronize(e1));
    double ms = event_ms(e0, e1);
    *rw_gbs = 2.0 * (double)bytes * reps / (ms * 1e-3) / 1e9;
    GU_CUDA(wk_cuda_read_probe(src, (int64_t)(bytes / 16), sink, NULL));
    GU_CUDA(cudaEventRecord(e0, NULL));
    for (int i = 0; i < reps; i++) {
        GU_CUDA(wk_cuda_read_probe(src, (int64_t)(bytes / 16), sink, NULL));
    }
    GU_CUDA(cudaEventRecord(e1, NULL));
    GU_CUDA(cudaEventSynchronize(e1));
    ms = event_ms(e0, e1);
    *read_gbs = (double)bytes * reps / (ms * 1e-3) / 1e9;
    GU_CUDA(cudaEventDestroy(e0));
    GU_CUDA(cudaEventDestroy(e1));
    GU_CUDA(cudaFree(src));
    GU_CUDA(cudaFree(dst));
    GU_CUDA(cudaFree(sink));
}

/* cuBLAS f16 GEMM (f32 accumulate, f16 out) at the prefill gate/up shape: TFLOP/s. */
static double measure_gemm(int m, int n, int k) {
    uint16_t *a = NULL, *b = NULL, *c = NULL;
    void *ws = NULL;
    GU_CUDA(cudaMalloc((void **)&a, (size_t)m * k * 2));
    GU_CUDA(cudaMalloc((void **)&b, (size_t)k * n * 2));
    GU_CUDA(cudaMalloc((void **)&c, (size_t)m * n * 2));
    GU_CUDA(cudaMalloc(&ws, (size_t)32 << 20));
    GU_CUDA(wk_cuda_fill_random_f16(a, (int64_t)m * k, 0.05f, 1, NULL));
    GU_CUDA(wk_cuda_fill_random_f16(b, (int64_t)k * n, 1.0f, 2, NULL));
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasCreate failed\n");
        exit(1);
    }
    cublasSetWorkspace(h, ws, (size_t)32 << 20);
    const float alpha = 1.0f, beta = 0.0f;
    cudaEvent_t e0, e1;
    GU_CUDA(cudaEventCreate(&e0));
    GU_CUDA(cudaEventCreate(&e1));
    const int reps = 20;
    double ms = 0;
    for (int pass = 0; pass < 2; pass++) { /* pass 0 warms up */
        GU_CUDA(cudaEventRecord(e0, NULL));
        for (int i = 0; i < (pass ? reps : 3); i++) {
            cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a,
                                            CUDA_R_16F, k, b, CUDA_R_16F, k, &beta, c, CUDA_R_16F,
                                            m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
            if (s != CUBLAS_STATUS_SUCCESS) {
                fprintf(stderr, "cublasGemmEx failed: %d\n", (int)s);
                exit(1);
            }
        }
        GU_CUDA(cudaEventRecord(e1, NULL));
        GU_CUDA(cudaEventSynchronize(e1));
        ms = event_ms(e0, e1);
    }
    cublasDestroy(h);
    GU_CUDA(cudaEventDestroy(e0));
    GU_CUDA(cudaEventDestroy(e1));
    GU_CUDA(cudaFree(a));
    GU_CUDA(cudaFree(b));
    GU_CUDA(cudaFree(c));
    GU_CUDA(cudaFree(ws));
    return 2.0 * m * n * (double)k * reps / (ms * 1e-3) / 1e12;
}

/*
 * The GEMVs of one Llama-3-8B layer (QKV 6144x4096, O 4096x4096, gate|up 28672x4096, down
 * 4096x14336) for n_tok rows, repeated over 8 layers' worth of distinct weights so that nothing
 * is served from L2: custom GEMV vs cuBLAS, as weight GB/s. Tells how much of a decode step is
 * GEMV efficiency and how much is everything else.
 */
static void measure_gemv(int n_tok, double *custom_gbs, double *cublas_gbs) {
    static const int shapes[4][2] = {{6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}};
    const int n_layers = 8;
    size_t layer_elems = 0;
    for (int i = 0; i < 4; i++) {
        layer_elems += (size_t)shapes[i][0] * shapes[i][1];
    }
    uint16_t *w = NULL, *x = NULL;
    float *y = NULL;
    void *ws = NULL;
    GU_CUDA(cudaMalloc((void **)&w, layer_elems * n_layers * 2));
    GU_CUDA(cudaMalloc((void **)&x, (size_t)8 * 14336 * 2));
    GU_CUDA(cudaMalloc((void **)&y, (size_t)8 * 28672 * 4));
    GU_CUDA(cudaMalloc(&ws, (size_t)32 << 20));
    GU_CUDA(wk_cuda_fill_random_f16(w, (int64_t)(layer_elems * n_layers), 0.02f, 3, NULL));
    GU_CUDA(wk_cuda_fill_random_f16(x, (int64_t)8 * 14336, 1.0f, 4, NULL));
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasCreate failed\n");
        exit(1);
    }
    cublasSetWorkspace(h, ws, (size_t)32 << 20);
    const float alpha = 1.0f, beta = 0.0f;
    cudaEvent_t e0, e1;
    GU_CUDA(cudaEventCreate(&e0));
    GU_CUDA(cudaEventCreate(&e1));
    for (int mode = 0; mode < 2; mode++) {
        double ms = 0;
        for (int pass = 0; pass < 2; pass++) { /* pass 0 warms up */
            GU_CUDA(cudaEventRecord(e0, NULL));
            const uint16_t *wl = w;
            for (int l = 0; l < n_layers; l++) {
                for (int i = 0; i < 4; i++) {
                    int n_out = shapes[i][0], n_in = shapes[i][1];
                    if (mode == 0) {
                        GU_CUDA(wk_cuda_gemv(wl, x, n_tok, n_in, n_out, y, 0, NULL));
                    } else {
                        cublasStatus_t st = cublasGemmEx(
                            h, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n_tok, n_in, &alpha, wl, CUDA_R_16F,
                            n_in, x, CUDA_R_16F, n_in, &beta, y, CUDA_R_32F, n_out,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                        if (st != CUBLAS_STATUS_SUCCESS) {
                            fprintf(stderr, "cublasGemmEx failed: %d\n", (int)st);
                            exit(1);
                        }
                    }
                    wl += (size_t)n_out * n_in;
                }
            }
            GU_CUDA(cudaEventRecord(e1, NULL));
            GU_CUDA(cudaEventSynchronize(e1));
            ms = event_ms(e0, e1);
        }
        double gbs = (double)layer_elems * n_layers * 2 / (ms * 1e-3) / 1e9;
        if (mode == 0) {
            *custom_gbs = gbs;
        } else {
            *cublas_gbs = gbs;
        }
    }
    cublasDestroy(h);
    GU_CUDA(cudaEventDestroy(e0));
    GU_CUDA(cudaEventDestroy(e1));
    GU_CUDA(cudaFree(w));
    GU_CUDA(cudaFree(x));
    GU_CUDA(cudaFree(y));
    GU_CUDA(cudaFree(ws));
}

/*
 * Device sampling (wk_cuda_sample) for B rows of a Llama-3 vocabulary against what the host
 * path pays for the same rows: the D2H copy of the logits (pinned) plus wk_sampler_sample on
 * the host per row (this machine's CPU, one thread). Three settings: greedy with logprobs,
 * temperature 0.7 with top-p 0.9 (no top-k: the whole-vocabulary bucket path), and top-k 50
 * with top-p 0.95. Logits are N(0, 2.5) with a few boosted tokens, as real rows have.
 */
#define BENCH_SAMPLE_SLOTS 64 /* as the backend's SAMPLE_SLOTS */
static void measure_sampling(int n_vocab) {
    static const int batches[3] = {1, 64, 256};
    const int max_b = 256;
    gu_rng r = {0x5a3b1e};
    float *h = NULL;
    GU_CUDA(cudaMallocHost((void **)&h, (size_t)max_b * n_vocab * 4));
    for (int b = 0; b < max_b; b++) {
        float *row = h + (size_t)b * n_vocab;
        for (int i = 0; i < n_vocab; i++) {
            row[i] = gu_normal(&r) * 2.5f;
        }
        for (int k = 0; k < 8; k++) {
            row[gu_next(&r) % (uint64_t)n_vocab] += 8.0f + (float)k;
        }
    }
    float *d_logits = NULL;
    wk_cuda_sample_seq *d_seqs = NULL;
    wk_cuda_sample_out *d_out = NULL;
    void *d_work = NULL;
    GU_CUDA(cudaMalloc((void **)&d_logits, (size_t)max_b * n_vocab * 4));
    GU_CUDA(cudaMalloc((void **)&d_seqs, sizeof(wk_cuda_sample_seq) * max_b));
    GU_CUDA(cudaMalloc((void **)&d_out, sizeof(wk_cuda_sample_out) * max_b));
    GU_CUDA(cudaMalloc(&d_work, wk_cuda_sample_work_bytes(n_vocab) * BENCH_SAMPLE_SLOTS));
    GU_CUDA(cudaMemcpy(d_logits, h, (size_t)max_b * n_vocab * 4, cudaMemcpyHostToDevice));
    wk_cuda_sample_seq *seqs = gu_xmalloc(sizeof(*seqs) * max_b);
    wk_sampler *smp = NULL;
    if (wk_sampler_create((uint32_t)n_vocab, &smp) != CM_OK) {
        fprintf(stderr, "wk_sampler_create failed\n");
        exit(1);
    }
    float *row = gu_xmalloc((size_t)n_vocab * 4);
    cudaEvent_t e0, e1;
    GU_CUDA(cudaEventCreate(&e0));
    GU_CUDA(cudaEventCreate(&e1));
    static const char *names[3] = {"greedy+logprobs", "T0.7 top-p 0.9", "top-k 50 top-p 0.95"};
    static const char *keys[3] = {"greedy", "topp", "topk_topp"};
    for (int kind = 0; kind < 3; kind++) {
        wk_sampling_params p;
        wk_sampling_defaults(&p);
        p.temperature = kind == 0 ? 0.0f : 0.7f;
        p.logprobs = kind == 0;
        p.top_p = kind == 0 ? 1.0f : kind == 1 ? 0.9f : 0.95f;
        p.top_k = kind == 2 ? 50 : 0;
        for (int b = 0; b < max_b; b++) {
            wk_cuda_sample_seq *q = &seqs[b];
            memset(q, 0, sizeof(*q));
            q->row = b;
            q->temperature = p.temperature;
            q->top_k = p.top_k;
            q->top_p = p.top_p;
            q->min_p = p.min_p;
            q->repetition_penalty = 1.0f;
            q->want_logprob = p.logprobs;
            q->u = (double)gu_uniform(&r, 0.0f, 1.0f);
        }
        GU_CUDA(cudaMemcpy(d_seqs, seqs, sizeof(*seqs) * max_b, cudaMemcpyHostToDevice));
        /* host: one row, a few times */
        wk_rng rng;
        wk_rng_seed(&rng, 1);
        wk_sample_result res;
        const int host_reps = 10;
        double t0 = gu_now();
        for (int i = 0; i < host_reps; i++) {
            memcpy(row, h + (size_t)(i % max_b) * n_vocab, (size_t)n_vocab * 4);
            (void)wk_sampler_sample(smp, &p, row, NULL, 0, 0, &rng, &res);
        }
        const double host_ms_row = (gu_now() - t0) * 1e3 / host_reps;
        for (int bi = 0; bi < 3; bi++) {
            const int B = batches[bi];
            const int reps = 20;
            double dev_ms = 0, copy_ms = 0;
            for (int pass = 0; pass < 2; pass++) { /* pass 0 warms up */
                GU_CUDA(cudaEventRecord(e0, NULL));
                for (int i = 0; i < reps; i++) {
                    GU_CUDA(wk_cuda_sample(d_logits, n_vocab, d_seqs, B, NULL, NULL, d_work,
                                           BENCH_SAMPLE_SLOTS, d_out, NULL));
                }
                GU_CUDA(cudaEventRecord(e1, NULL));
                GU_CUDA(cudaEventSynchronize(e1));
                dev_ms = event_ms(e0, e1) / reps;
                GU_CUDA(cudaEventRecord(e0, NULL));
                for (int i = 0; i < reps; i++) {
                    GU_CUDA(cudaMemcpyAsync(h, d_logits, (size_t)B * n_vocab * 4,
                                            cudaMemcpyDeviceToHost, NULL));
                }
                GU_CUDA(cudaEventRecord(e1, NULL));
                GU_CUDA(cudaEventSynchronize(e1));
                copy_ms = event_ms(e0, e1) / reps;
            }
            printf("sampling, vocab %d, batch %3d, %-20s: device %.3f ms; host path: copy %.3f ms "
                   "+ host sampler %.3f ms (%.3f ms/row, 1 thread)\n",
                   n_vocab, B, names[kind], dev_ms, copy_ms, host_ms_row * B, host_ms_row);
            char key[64];
            snprintf(key, sizeof(key), "sample_%s_b%d_dev_ms", keys[kind], B);
            kv(key, dev_ms);
            snprintf(key, sizeof(key), "sample_%s_b%d_host_ms", keys[kind], B);
            kv(key, copy_ms + host_ms_row * B);
        }
    }
    GU_CUDA(cudaEventDestroy(e0));
    GU_CUDA(cudaEventDestroy(e1));
    wk_sampler_destroy(smp);
    free(row);
    free(seqs);
    GU_CUDA(cudaFree(d_logits));
    GU_CUDA(cudaFree(d_seqs));
    GU_CUDA(cudaFree(d_out));
    GU_CUDA(cudaFree(d_work));
    GU_CUDA(cudaFreeHost(h));
}

/* A model of the given shape whose tensors have no data (filled on the device). */
static int make_shape_model(wk_model *m, const wk_hparams *hp) {
    memset(m, 0, sizeof(*m));
    m->hp = *hp;
    snprintf(m->arch, sizeof(m->arch), "llama");
    snprintf(m->name, sizeof(m->name), "synthetic-device-f16");
    m->layers = calloc(hp->n_layer, sizeof(wk_layer));
    if (m->layers == NULL) {
        return -1;
    }
    const int64_t e = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim,
                  kd = (int64_t)hp->n_head_kv * hp->head_dim;
#define T(t, ty, c, r)                                                                             \
    do {                                                                                           \
        (t).data = NULL;                                                                           \
        (t).type = (ty);                                                                           \
        (t).ne[0] = (c);                                                                           \
        (t).ne[1] = (r);                                                                           \
        (t).ne[2] = 1;                                                                             \
        (t).ne[3] = 1;                                                                             \
        (t).nbytes = (size_t)(c) * (size_t)(r) * ((ty) == WK_DTYPE_F32 ? 4 : 2);                   \
    } while (0)
    T(m->tok_embd, WK_DTYPE_F16, e, hp->n_vocab);
    T(m->output_norm, WK_DTYPE_F32, e, 1);
    T(m->output, WK_DTYPE_F16, e, hp->n_vocab);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        wk_layer *L = &m->layers[l];
        T(L->attn_norm, WK_DTYPE_F32, e, 1);
        T(L->wq, WK_DTYPE_F16, e, qd);
        T(L->wk, WK_DTYPE_F16, e, kd);
        T(L->wv, WK_DTYPE_F16, e, kd);
        T(L->wo, WK_DTYPE_F16, qd, e);
        T(L->ffn_norm, WK_DTYPE_F32, e, 1);
        T(L->w_gate, WK_DTYPE_F16, e, hp->n_ff);
        T(L->w_up, WK_DTYPE_F16, e, hp->n_ff);
        T(L->w_down, WK_DTYPE_F16, hp->n_ff, e);
    }
#undef T
    return 0;
}

typedef struct bench_ctx {
    wk_backend *be;
    int n_vocab;
    int blocks_per_seq; /* block table row length */
    float *logits;      /* (128, n_vocab) host */
    int32_t *tokens, *positions, *bt;
    uint32_t *seq_start;
    uint8_t *want;
} bench_ctx;

/* One decode step for B sequences at context ctx (positions ctx). Returns 0 on success. */
static int decode_step(bench_ctx *c, int B, int ctx, int step) {
    for (int s = 0; s < B; s++) {
        c->tokens[s] = (int32_t)((s * 7919 + step * 104729) % c->n_vocab);
        c->positions[s] = ctx + step;
        c->seq_start[s] = (uint32_t)s;
        c->want[s] = 1;
        for (int k = 0; k < c->blocks_per_seq; k++) {
            c->bt[(size_t)s * c->blocks_per_seq + k] = s * 36 + (k < 36 ? k : 35);
        }
    }
    c->seq_start[B] = (uint32_t)B;
    wk_batch b = {(uint32_t)B, (uint32_t)B, c->tokens, c->positions, c->seq_start, c->bt, c->want};
    cm_err rv = wk_backend_cuda.forward(c->be, &b, c->logits);
    if (rv != CM_OK) {
        printf("decode step failed: %s: %s\n", cm_strerror(rv), wk_cuda_last_error(c->be));
        return -1;
    }
    return 0;
}

/* ms per decode step at batch B (after warm-up, which also captures the graph). */
static double time_decode(bench_ctx *c, int B, int steps) {
    for (int i = 0; i < 3; i++) {
        if (decode_step(c, B, CTX, i) != 0) {
            return -1;
        }
    }
    double t0 = gu_now();
    for (int i = 0; i < steps; i++) {
        if (decode_step(c, B, CTX, 3 + i) != 0) {
            return -1;
        }
    }
    return (gu_now() - t0) * 1e3 / steps;
}

static double time_prefill(bench_ctx *c, int n_tok, int reps) {
    for (int i = 0; i < n_tok; i++) {
        c->tokens[i] = (int32_t)((i * 31337) % c->n_vocab);
        c->positions[i] = i;
    }
    for (int k = 0; k < c->blocks_per_seq; k++) {
        c->bt[k] = k;
    }
    c->seq_start[0] = 0;
    c->seq_start[1] = (uint32_t)n_tok;
    c->want[0] = 1;
    wk_batch b = {1, (uint32_t)n_tok, c->tokens, c->positions, c->seq_start, c->bt, c->want};
    double best = 1e30;
    for (int i = 0; i < reps + 1; i++) {
        double t0 = gu_now();
        cm_err rv = wk_backend_cuda.forward(c->be, &b, c->logits);
        double ms = (gu_now() - t0) * 1e3;
        if (rv != CM_OK) {
            printf("prefill failed: %s: %s\n", cm_strerror(rv), wk_cuda_last_error(c->be));
            return -1;
        }
        if (i > 0 && ms < best) {
            best = ms; /* i == 0 warms up */
        }
    }
    return best;
}

int main(int argc, char **argv) {
    const char *kv_path = NULL;
    const char *model_path = NULL;
    int quick = 0;
    int decode_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--kv") == 0 && i + 1 < argc) {
            kv_path = argv[++i];
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            model_path = argv[++i];
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else if (strcmp(argv[i], "--decode-only") == 0) {
            decode_only = 1;
        } else {
            fprintf(stderr, "usage: %s [--kv FILE] [--quick] [--model FILE.gguf [--decode-only]]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!gu_device_ok()) {
        return GU_SKIP;
    }
    if (kv_path) {
        g_kv = fopen(kv_path, "w");
        if (g_kv == NULL) {
            perror(kv_path);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    double rw = 0, rd = 0;
    measure_bandwidth(&rw, &rd);
    double bw = rw > rd ? rw : rd;
    printf("bandwidth: D2D copy %.0f GB/s (read+write bytes), read-only kernel %.0f GB/s; floor "
           "uses %.0f GB/s\n",
           rw, rd, bw);
    kv("bw_copy_rw_gbs", rw);
    kv("bw_read_gbs", rd);
    kv("bw_floor_gbs", bw);

    double gemm_tflops = measure_gemm(14336, PREFILL_TOKENS, 4096);
    printf("cuBLAS f16 GEMM 14336x2048x4096 (f32 accumulate): %.1f TFLOP/s\n", gemm_tflops);
    kv("gemm_tflops", gemm_tflops);

    for (int nt = 1; nt <= 8; nt *= 8) {
        double g_custom = 0, g_cublas = 0;
        measure_gemv(nt, &g_custom, &g_cublas);
        printf("layer GEMVs, %d row(s): custom %.0f GB/s (%.1f%% of %.0f), cuBLAS %.0f GB/s "
               "(%.1f%%)\n",
               nt, g_custom, 100.0 * g_custom / bw, bw, g_cublas, 100.0 * g_cublas / bw);
        char key[64];
        snprintf(key, sizeof(key), "gemv_n%d_custom_gbs", nt);
        kv(key, g_custom);
        snprintf(key, sizeof(key), "gemv_n%d_cublas_gbs", nt);
        kv(key, g_cublas);
    }

    if (model_path == NULL) { /* once per gpu-check, in the synthetic run */
        measure_sampling(128256);
    }

    wk_hparams hp;
    memset(&hp, 0, sizeof(hp));
    hp.n_vocab = 128256;
    hp.n_ctx_train = 8192;
    hp.n_embd = 4096;
    hp.n_layer = quick ? 4 : 32;
    hp.n_head = 32;
    hp.n_head_kv = 8;
    hp.head_dim = 128;
    hp.n_rot = 128;
    hp.n_ff = 14336;
    hp.rms_eps = 1e-5f;
    hp.rope_freq_base = 500000.0f;
    hp.rope_style = WK_ROPE_NORM;
    hp.rope_scaling = WK_ROPE_SCALING_NONE;
    hp.rope_scaling_factor = 1.0f;
    wk_model m;
    wk_gguf *gguf = NULL;
    if (model_path != NULL) {
        char lerr[256] = "";
        if (wk_gguf_open(model_path, &gguf, lerr, sizeof(lerr)) != CM_OK ||
            wk_model_load(gguf, &m, lerr, sizeof(lerr)) != CM_OK) {
            fprintf(stderr, "%s: %s\n", model_path, lerr);
            return 1;
        }
        hp = m.hp;
    } else if (make_shape_model(&m, &hp) != 0) {
        fprintf(stderr, "out of host memory\n");
        return 1;
    }
    const int max_b = 128;
    wk_backend_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.block_tokens = BT;
    cfg.max_seqs = max_b;
    cfg.max_batch_tokens = PREFILL_TOKENS;
    cfg.max_blocks_per_seq = PREFILL_TOKENS / BT + 8;
    cfg.n_blocks = max_b * 36 + 8; /* 36 blocks = 576 tokens per decode sequence */
    cfg.kv_dtype = WK_DTYPE_F16;
    wk_cuda_options opt;
    wk_cuda_options_default(&opt);
    opt.synthetic_device = model_path == NULL;
    wk_backend *be = NULL;
    char err[256] = "";
    double t0 = gu_now();
    cm_err rv = wk_cuda_create_ex(&m, &cfg, &opt, &be, err, sizeof(err));
    if (rv != CM_OK) {
        printf("create failed: %s: %s\n", cm_strerror(rv), err);
        return 1;
    }
    wk_cuda_info info;
    wk_cuda_get_info(be, &info);
    printf("model: %s%s, %.2f GB weights read per step (%s, %.2f GB quantized), create %.1f s, "
           "KV %.2f GB\n",
           model_path ? model_path : "llama3-8b shape", quick ? " (quick: 4 layers)" : "",
           (double)info.weight_bytes_device / 1e9, info.weights_native ? "native" : "f16",
           (double)info.weight_quant_bytes / 1e9, gu_now() - t0,
           (double)info.kv_bytes_device / 1e9);
    kv("weight_gb", (double)info.weight_bytes_device / 1e9);
    printf("options in effect: fuse_decode %d, pdl %d, gemv_max_rows %d\n", info.fuse_decode,
           info.use_pdl, info.gemv_max_rows);
    const double floor_ms = (double)info.weight_bytes_device / (bw * 1e9) * 1e3;
    printf("decode floor (weights / %.0f GB/s): %.3f ms per step\n", bw, floor_ms);
    kv("floor_ms", floor_ms);

    bench_ctx c;
    memset(&c, 0, sizeof(c));
    c.be = be;
    c.n_vocab = (int)hp.n_vocab;
    c.blocks_per_seq = (int)cfg.max_blocks_per_seq;
    /* pinned, as a serving loop should hand the backend: (128, 128256) f32 logits are 66 MB
     * per step at batch 128, and a pageable D2H copy of that costs several ms */
    GU_CUDA(cudaMallocHost((void **)&c.logits, (size_t)max_b * hp.n_vocab * 4));
    c.tokens = gu_xmalloc(PREFILL_TOKENS * 4);
    c.positions = gu_xmalloc(PREFILL_TOKENS * 4);
    c.bt = gu_xmalloc((size_t)max_b * cfg.max_blocks_per_seq * 4);
    c.seq_start = gu_xmalloc((max_b + 1) * 4);
    c.want = gu_xmalloc(max_b);

    static const int batches[4] = {1, 8, 32, 128};
    double tps[4] = {0};
    int failed = 0;
    for (int i = 0; i < 4; i++) {
        int B = batches[i];
        int steps = quick ? 5 : (B == 1 ? 40 : B <= 32 ? 20 : 10);
        double ms = time_decode(&c, B, steps);
        if (ms <= 0) {
            failed = 1;
            break;
        }
        tps[i] = B * 1e3 / ms;
        printf("decode batch %3d: %8.3f ms/step  %9.1f tok/s  floor/step %.1f%%\n", B, ms, tps[i],
               100.0 * floor_ms / ms);
        char key[64];
        snprintf(key, sizeof(key), "decode_b%d_ms", B);
        kv(key, ms);
        snprintf(key, sizeof(key), "decode_b%d_tok_s", B);
        kv(key, tps[i]);
    }
    if (!failed) {
        kv("decode_b1_floor_frac", floor_ms / (1e3 / tps[0]));
        kv("decode_b32_over_b1", tps[2] / tps[0]);
        printf("batch-32 / batch-1 tokens/s: %.2fx\n", tps[2] / tps[0]);
    }
    if (!failed && decode_only) {
        if (g_kv) {
            fclose(g_kv);
        }
        wk_backend_cuda.destroy(be);
        wk_model_fini(&m);
        wk_gguf_close(gguf);
        return 0;
    }
    if (!failed) {
        /* the same batch-1 step through other paths, for the record */
        wk_cuda_set_gemv_mode(be, WK_CUDA_GEMV_CUBLAS);
        double ms_cublas = time_decode(&c, 1, quick ? 5 : 20);
        wk_cuda_set_gemv_mode(be, WK_CUDA_GEMV_AUTO);
        wk_cuda_set_graphs(be, 0);
        double ms_nograph = time_decode(&c, 1, quick ? 5 : 20);
        wk_cuda_set_graphs(be, 1);
        printf("decode batch 1 variants: cuBLAS GEMV %.3f ms, no graphs %.3f ms (default %.3f)\n",
               ms_cublas, ms_nograph, 1e3 / tps[0]);
        kv("decode_b1_cublas_ms", ms_cublas);
        kv("decode_b1_nograph_ms", ms_nograph);
        /* fused decode GEMVs (off by default until measured): batch 1 and 8 */
        const int fuse0 = info.fuse_decode, pdl0 = info.use_pdl;
        wk_cuda_set_fuse(be, 1);
        double ms_f1 = time_decode(&c, 1, quick ? 5 : 40);
        wk_cuda_set_gemv_max_rows(be, 8);
        double ms_f8 = time_decode(&c, 8, quick ? 5 : 20);
        wk_cuda_set_fuse(be, 0);
        double ms_g8 = time_decode(&c, 8, quick ? 5 : 20);
        wk_cuda_set_gemv_max_rows(be, info.gemv_max_rows);
        printf("decode batch 8 with the unfused custom GEMV: %.3f ms (default path %.3f ms)\n",
               ms_g8, 8e3 / tps[1]);
        kv("decode_b8_gemv_ms", ms_g8);
        /* programmatic dependent launch (sm_90+), alone and with the fused GEMVs */
        wk_cuda_set_pdl(be, 0);
        double ms_np1 = time_decode(&c, 1, quick ? 5 : 40);
        printf("decode batch 1 without PDL: %.3f ms (floor/step %.1f%%)\n", ms_np1,
               100.0 * floor_ms / ms_np1);
        kv("decode_b1_nopdl_ms", ms_np1);
        wk_cuda_set_pdl(be, 1);
        double ms_p1 = time_decode(&c, 1, quick ? 5 : 40);
        wk_cuda_set_fuse(be, 1);
        double ms_pf1 = time_decode(&c, 1, quick ? 5 : 40);
        wk_cuda_set_fuse(be, fuse0);
        wk_cuda_set_pdl(be, pdl0);
        printf("decode batch 1 with PDL: %.3f ms (floor/step %.1f%%); PDL + fused GEMVs: %.3f ms "
               "(floor/step %.1f%%)\n",
               ms_p1, 100.0 * floor_ms / ms_p1, ms_pf1, 100.0 * floor_ms / ms_pf1);
        kv("decode_b1_pdl_ms", ms_p1);
        kv("decode_b1_pdl_floor_frac", floor_ms / ms_p1);
        kv("decode_b1_pdl_fused_ms", ms_pf1);
        kv("decode_b1_pdl_fused_floor_frac", floor_ms / ms_pf1);
        printf("decode fused GEMVs: batch 1 %.3f ms (%.1f tok/s, floor/step %.1f%%), batch 8 %.3f "
               "ms (%.1f tok/s)\n",
               ms_f1, 1e3 / ms_f1, 100.0 * floor_ms / ms_f1, ms_f8, 8e3 / ms_f8);
        kv("decode_b1_fused_ms", ms_f1);
        kv("decode_b1_fused_floor_frac", floor_ms / ms_f1);
        kv("decode_b8_fused_ms", ms_f8);
    }

    double pf_ms = failed ? -1 : time_prefill(&c, PREFILL_TOKENS, quick ? 1 : 3);
    if (pf_ms > 0) {
        double layer_params = ((double)(hp.n_head + 2 * hp.n_head_kv) * hp.head_dim +
                               (double)hp.n_head * hp.head_dim + 3.0 * hp.n_ff) *
                              hp.n_embd * hp.n_layer;
        double flops = 2.0 * layer_params * PREFILL_TOKENS + 2.0 * hp.n_vocab * hp.n_embd;
        double achieved = flops / (pf_ms * 1e-3) / 1e12;
        double pf_tps = PREFILL_TOKENS * 1e3 / pf_ms;
        printf("prefill %d tokens: %.1f ms, %.0f tok/s, weight GEMMs %.1f TFLOP/s = %.1f%% of the "
               "GEMM rate\n",
               PREFILL_TOKENS, pf_ms, pf_tps, achieved, 100.0 * achieved / gemm_tflops);
        kv("prefill_ms", pf_ms);
        kv("prefill_tok_s", pf_tps);
        kv("prefill_gemm_frac", achieved / gemm_tflops);
        wk_cuda_set_flash(be, 0);
        double pf_plain = time_prefill(&c, PREFILL_TOKENS, 1);
        wk_cuda_set_flash(be, 1);
        printf("prefill with plain (non-flash) attention: %.1f ms\n", pf_plain);
        kv("prefill_plain_attn_ms", pf_plain);
    } else {
        failed = 1;
    }
    /* where the time goes: per-category device time of one eager prefill and one eager
     * batch-1 decode step (events between ops, so slightly pessimistic) */
    if (!failed && wk_cuda_set_profile(be, 1) == CM_OK) {
        static const char *cat[WK_CUDA_PROF_N] = {"gemm/gemv", "attention", "norm",
                                                  "rope+kv",   "swiglu",    "other"};
        static const char *key[WK_CUDA_PROF_N] = {"gemm", "attn",   "norm",
                                                  "rope", "swiglu", "other"};
        for (int pass = 0; pass < 2; pass++) {
            double ms[WK_CUDA_PROF_N];
            if (pass == 0) {
                time_prefill(&c, PREFILL_TOKENS, 0);
            } else {
                wk_cuda_set_graphs(be, 0);
                decode_step(&c, 1, CTX, 0);
                wk_cuda_set_graphs(be, 1);
            }
            int ops = wk_cuda_get_profile(be, ms);
            double total = 0;
            for (int k = 0; k < WK_CUDA_PROF_N; k++) {
                total += ms[k];
            }
            printf("profile %s (%d ops, %.3f ms):", pass == 0 ? "prefill 2048" : "decode b1 eager",
                   ops, total);
            for (int k = 0; k < WK_CUDA_PROF_N; k++) {
                char kk[64];
                printf(" %s %.3f", cat[k], ms[k]);
                snprintf(kk, sizeof(kk), "prof_%s_%s_ms", pass == 0 ? "prefill" : "decode1",
                         key[k]);
                kv(kk, ms[k]);
            }
            printf("\n");
        }
        wk_cuda_set_profile(be, 0);
    }
    wk_cuda_get_info(be, &info);
    printf("graphs captured: %u\n", info.graph_buckets);
    wk_backend_cuda.destroy(be);
    if (gguf != NULL) {
        wk_model_fini(&m);
        wk_gguf_close(gguf);
    } else {
        free(m.layers);
    }
    GU_CUDA(cudaFreeHost(c.logits));
    free(c.tokens);
    free(c.positions);
    free(c.bt);
    free(c.seq_start);
    free(c.want);
    if (g_kv) {
        fclose(g_kv);
    }
    return failed ? 1 : 0;
}
