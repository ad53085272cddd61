/*
 * mock_cuda: a host-memory stand-in for the CUDA runtime, cuBLAS and the CUDA backend's kernel
 * launchers (worker/backend/cuda/cuda_ops.h), so that the backend's host logic
 * (worker/backend/cuda/cuda_backend.c: weight layout and upload, metadata packing, padding to
 * graph buckets, graph capture/replay, flash tile lists, logits rows, sampling descriptors,
 * validation, error paths)
 * runs on a machine without a GPU and is checked against the CPU backend by gpu_model_test
 * (built as gpu_host_logic_test).
 *
 * "Device" pointers are host pointers. Kernels are plain C loops with the documented semantics
 * (f16 rounding where the real kernels round). Stream capture is emulated: while a stream is
 * capturing, launches and GEMMs are recorded instead of run, and cudaGraphLaunch replays them.
 * Test code only: process-wide state, single-threaded.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_ops.h"
#include "backend.h"
#include "backend/cuda/cuda_qweight.h"
#include "quant.h"
#include "sampler.h"

/* ---- recorded work (emulated stream capture) ------------------------------------------- */

typedef void (*op_fn)(const void *args);

typedef struct op_rec {
    op_fn fn;
    void *args;
} op_rec;

typedef struct mock_graph {
    op_rec *ops;
    size_t n, cap;
} mock_graph;

static int g_capturing;
static mock_graph *g_capture;
static cudaError_t g_last_error;

static void submit(op_fn fn, const void *args, size_t size) {
    if (!g_capturing) {
        fn(args);
        return;
    }
    mock_graph *g = g_capture;
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 64;
        g->ops = realloc(g->ops, g->cap * sizeof(*g->ops));
        if (g->ops == NULL) {
            abort();
        }
    }
    void *copy = malloc(size);
    if (copy == NULL) {
        abort();
    }
    memcpy(copy, args, size);
    g->ops[g->n].fn = fn;
    g->ops[g->n].args = copy;
    g->n++;
}

/* f16 -> f32 through a table: the mock's GEMMs are naive loops and this keeps the test fast */
static float g_h2f[65536];
static int g_h2f_ready;

static float h2f(uint16_t h) {
    if (!g_h2f_ready) {
        for (uint32_t i = 0; i < 65536; i++) {
            g_h2f[i] = wk_f16_to_f32((uint16_t)i);
        }
        g_h2f_ready = 1;
    }
    return g_h2f[h];
}

static uint16_t f2h(float f) {
    f = f > 65504.0f ? 65504.0f : f < -65504.0f ? -65504.0f : f;
    return wk_f32_to_f16(f);
}

/* ---- runtime ------------------------------------------------------------------------------ */

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    if (device != 0) {
        return cudaErrorInvalidDevice;
    }
    memset(prop, 0, sizeof(*prop));
    snprintf(prop->name, sizeof(prop->name), "mock (host memory)");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 1;
    prop->totalGlobalMem = (size_t)8 << 30;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

const char *cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error (mock)" : "mock error";
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}

cudaError_t cudaMalloc(void **p, size_t size) {
    *p = malloc(size ? size : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t size) {
    return cudaMalloc(p, size);
}

cudaError_t cudaFreeHost(void *p) {
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total) {
    *free_b = (size_t)4 << 30;
    *total = (size_t)8 << 30;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
    (void)kind;
    if (g_capturing) {
        return cudaErrorStreamCaptureUnsupported;
    }
    memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t s) {
    (void)s;
    return cudaMemcpy(dst, src, n, kind);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind kind,
                              cudaStream_t s) {
    (void)kind;
    (void)s;
    if (g_capturing) {
        return cudaErrorStreamCaptureUnsupported;
    }
    if (width > dpitch || width > spitch) {
        return cudaErrorInvalidPitchValue;
    }
    for (size_t r = 0; r < height; r++) {
        memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    }
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n) {
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    (void)s;
    if (g_capturing) {
        return cudaErrorStreamCaptureUnsupported;
    }
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    (void)flags;
    *s = (cudaStream_t)malloc(1);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    free(s);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    return g_capturing ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
    (void)s;
    (void)mode;
    if (g_capturing) {
        return cudaErrorIllegalState;
    }
    g_capture = calloc(1, sizeof(*g_capture));
    g_capturing = 1;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    (void)s;
    if (!g_capturing) {
        return cudaErrorIllegalState;
    }
    g_capturing = 0;
    *graph = (cudaGraph_t)g_capture;
    g_capture = NULL;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *st) {
    (void)s;
    *st = g_capturing ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

static void graph_free(mock_graph *g) {
    if (g == NULL) {
        return;
    }
    for (size_t i = 0; i < g->n; i++) {
        free(g->ops[i].args);
    }
    free(g->ops);
    free(g);
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags) {
    (void)flags;
    mock_graph *src = (mock_graph *)graph;
    mock_graph *g = calloc(1, sizeof(*g));
    g->ops = calloc(src->n ? src->n : 1, sizeof(*g->ops));
    for (size_t i = 0; i < src->n; i++) {
        g->ops[i].fn = src->ops[i].fn;
        g->ops[i].args = src->ops[i].args;
        src->ops[i].args = NULL; /* moved */
    }
    g->n = g->cap = src->n;
    *exec = (cudaGraphExec_t)g;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    graph_free((mock_graph *)graph);
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    graph_free((mock_graph *)exec);
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    (void)s;
    mock_graph *g = (mock_graph *)exec;
    for (size_t i = 0; i < g->n; i++) {
        g->ops[i].fn(g->ops[i].args);
    }
    return cudaSuccess;
}

/* events: host time at record (mock work runs at submit, so intervals are real host times) */
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t)calloc(1, sizeof(double));
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    free(e);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)s;
    if (g_capturing) {
        return cudaErrorStreamCaptureUnsupported;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *(double *)e = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)(*(double *)b - *(double *)a);
    return cudaSuccess;
}

/* ---- cuBLAS ------------------------------------------------------------------------------- */

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = (cublasHandle_t)malloc(1);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    (void)h;
    (void)s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t bytes) {
    (void)h;
    (void)ws;
    (void)bytes;
    return CUBLAS_STATUS_SUCCESS;
}

typedef struct gemm_args {
    int m, n, k, lda, ldb, ldc;
    const uint16_t *a, *b;
    void *c;
    int c_f16;
} gemm_args;

/* C (m x n, col-major) = A^T (A: k x m col-major) * B (k x n col-major), f32 accumulate */
static void gemm_run(const void *p) {
    const gemm_args *g = p;
    /* both operands to f32 once, then a plain f32 loop */
    float *af = malloc(sizeof(float) * (size_t)g->m * g->k);
    float *bf = malloc(sizeof(float) * (size_t)g->k);
    if (af == NULL || bf == NULL) {
        abort();
    }
    for (int i = 0; i < g->m; i++) {
        for (int l = 0; l < g->k; l++) {
            af[(size_t)i * g->k + l] = h2f(g->a[(size_t)i * g->lda + l]);
        }
    }
    for (int j = 0; j < g->n; j++) {
        for (int l = 0; l < g->k; l++) {
            bf[l] = h2f(g->b[(size_t)j * g->ldb + l]);
        }
        for (int i = 0; i < g->m; i++) {
            const float *ar = af + (size_t)i * g->k;
            float acc = 0.0f;
            for (int l = 0; l < g->k; l++) {
                acc += ar[l] * bf[l];
            }
            if (g->c_f16) {
                ((uint16_t *)g->c)[(size_t)j * g->ldc + i] = f2h(acc);
            } else {
                ((float *)g->c)[(size_t)j * g->ldc + i] = acc;
            }
        }
    }
    free(af);
    free(bf);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
    (void)handle;
    (void)algo;
    /* only what the backend uses: W^T x, f16 in, f32 compute, alpha 1, beta 0 */
    if (transa != CUBLAS_OP_T || transb != CUBLAS_OP_N || Atype != CUDA_R_16F ||
        Btype != CUDA_R_16F || (Ctype != CUDA_R_16F && Ctype != CUDA_R_32F) ||
        computeType != CUBLAS_COMPUTE_32F || *(const float *)alpha != 1.0f ||
        *(const float *)beta != 0.0f || lda < k || ldb < k || ldc < m) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    gemm_args g = {m, n, k, lda, ldb, ldc, A, B, C, Ctype == CUDA_R_16F};
    submit(gemm_run, &g, sizeof(g));
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- kernels ------------------------------------------------------------------------------ */

static int g_pdl;

void wk_cuda_ops_set_pdl(int on) {
    g_pdl = on != 0;
}

int wk_cuda_ops_pdl(void) {
    return g_pdl;
}

int wk_cuda_head_dim_supported(int head_dim) {
    return head_dim == 64 || head_dim == 128 || head_dim == 256;
}

int wk_cuda_flash_supported(int head_dim) {
    return head_dim == 64 || head_dim == 128;
}

typedef struct embed_args {
    const uint16_t *table;
    const int32_t *ids;
    int n, n_embd;
    float *out;
} embed_args;

static void embed_run(const void *p) {
    const embed_args *a = p;
    for (int r = 0; r < a->n; r++) {
        for (int i = 0; i < a->n_embd; i++) {
            a->out[(size_t)r * a->n_embd + i] = h2f(a->table[(size_t)a->ids[r] * a->n_embd + i]);
        }
    }
}

cudaError_t wk_cuda_embed(const uint16_t *table, const int32_t *ids, int n, int n_embd, float *out,
                          cudaStream_t stream) {
    (void)stream;
    embed_args a = {table, ids, n, n_embd, out};
    submit(embed_run, &a, sizeof(a));
    return cudaSuccess;
}

typedef struct norm_args {
    float *x;
    const float *add, *w;
    const int32_t *rows;
    int n_out, n;
    float eps;
    uint16_t *out;
} norm_args;

static void norm_run(const void *p) {
    const norm_args *a = p;
    for (int r = 0; r < a->n_out; r++) {
        size_t src = a->rows ? (size_t)a->rows[r] : (size_t)r;
        float *xr = a->x + src * a->n;
        double ss = 0;
        for (int i = 0; i < a->n; i++) {
            if (a->add) {
                xr[i] += a->add[src * a->n + i];
            }
            ss += (double)xr[i] * xr[i];
        }
        float inv = (float)(1.0 / sqrt(ss / a->n + a->eps));
        for (int i = 0; i < a->n; i++) {
            a->out[(size_t)r * a->n + i] = f2h(xr[i] * inv * a->w[i]);
        }
    }
}

cudaError_t wk_cuda_add_rmsnorm(float *x, const float *add, const float *w, const int32_t *rows,
                                int n_out, int n, float eps, uint16_t *out, cudaStream_t stream) {
    (void)stream;
    norm_args a = {x, add, w, rows, n_out, n, eps, out};
    submit(norm_run, &a, sizeof(a));
    return cudaSuccess;
}

typedef struct rope_args {
    const float *qkv, *bias;
    const int32_t *pos, *seq, *bt;
    int max_blocks, block_tokens;
    wk_cuda_rope_args ra;
    int n_tok;
    float *q_out;
    uint16_t *k_cache, *v_cache;
} rope_args;

static void rope_run(const void *p) {
    const rope_args *a = p;
    const wk_cuda_rope_args *ra = &a->ra;
    const int hd = ra->head_dim, nh = ra->n_head, nkv = ra->n_head_kv;
    const int row_len = (nh + 2 * nkv) * hd;
    for (int t = 0; t < a->n_tok; t++) {
        const float *in = a->qkv + (size_t)t * row_len;
        int pos = a->pos[t];
        int64_t blk = a->bt[(size_t)a->seq[t] * a->max_blocks + pos / a->block_tokens];
        int slot = pos % a->block_tokens;
        float row[4096 * 3];
        for (int i = 0; i < row_len; i++) {
            row[i] = in[i] + (a->bias ? a->bias[i] : 0.0f);
        }
        for (int h = 0; h < nh + nkv; h++) {
            float *v = row + (size_t)h * hd;
            for (int i = 0; i < ra->n_rot / 2; i++) {
                int d0 = ra->neox ? i : 2 * i;
                int d1 = ra->neox ? i + ra->n_rot / 2 : 2 * i + 1;
                double ang = (double)pos * ra->inv_freq[i];
                float c = (float)cos(ang), s = (float)sin(ang);
                float x0 = v[d0], x1 = v[d1];
                v[d0] = x0 * c - x1 * s;
                v[d1] = x0 * s + x1 * c;
            }
        }
        memcpy(a->q_out + (size_t)t * nh * hd, row, (size_t)nh * hd * 4);
        for (int h = 0; h < nkv; h++) {
            size_t off = (((size_t)blk * nkv + h) * a->block_tokens + slot) * hd;
            for (int d = 0; d < hd; d++) {
                a->k_cache[off + d] = f2h(row[(size_t)(nh + h) * hd + d]);
                a->v_cache[off + d] = f2h(row[(size_t)(nh + nkv + h) * hd + d]);
            }
        }
    }
}

cudaError_t wk_cuda_rope_store(const float *qkv, const float *bias, const int32_t *tok_pos,
                               const int32_t *tok_seq, const int32_t *block_table, int max_blocks,
                               int block_tokens, const wk_cuda_rope_args *ra, int n_tok,
                               float *q_out, uint16_t *k_cache, uint16_t *v_cache,
                               cudaStream_t stream) {
    (void)stream;
    if ((ra->n_head + 2 * ra->n_head_kv) * ra->head_dim > 4096 * 3) {
        return cudaErrorInvalidValue;
    }
    rope_args a = {qkv,          bias, tok_pos, tok_seq, block_table, max_blocks,
                   block_tokens, *ra,  n_tok,   q_out,   k_cache,     v_cache};
    submit(rope_run, &a, sizeof(a));
    return cudaSuccess;
}

typedef struct attn_args {
    const float *q;
    const int32_t *pos, *seq, *bt;
    const uint16_t *k, *v;
    wk_cuda_attn_args aa;
    int n_tok;
    const int32_t *tiles;
    int n_tiles;
    uint16_t *out;
} attn_args;

/* attention of token t (all heads) */
static void attn_token(const attn_args *a, int t) {
    const wk_cuda_attn_args *aa = &a->aa;
    const int hd = aa->head_dim;
    const int len = a->pos[t] + 1;
    double *s = malloc(sizeof(double) * (size_t)len);
    for (int h = 0; h < aa->n_head; h++) {
        int kvh = h / (aa->n_head / aa->n_head_kv);
        const float *qh = a->q + ((size_t)t * aa->n_head + h) * hd;
        double mx = -1e300;
        for (int k = 0; k < len; k++) {
            int64_t blk = a->bt[(size_t)a->seq[t] * aa->max_blocks + k / aa->block_tokens];
            const uint16_t *kr = a->k + (((size_t)blk * aa->n_head_kv + kvh) * aa->block_tokens +
                                         k % aa->block_tokens) *
                                            hd;
            double d = 0;
            for (int i = 0; i < hd; i++) {
                d += (double)qh[i] * h2f(kr[i]);
            }
            s[k] = d * aa->scale;
            mx = s[k] > mx ? s[k] : mx;
        }
        double sum = 0;
        for (int k = 0; k < len; k++) {
            s[k] = exp(s[k] - mx);
            sum += s[k];
        }
        for (int i = 0; i < hd; i++) {
            double acc = 0;
            for (int k = 0; k < len; k++) {
                int64_t blk = a->bt[(size_t)a->seq[t] * aa->max_blocks + k / aa->block_tokens];
                acc += s[k] * h2f(a->v[(((size_t)blk * aa->n_head_kv + kvh) * aa->block_tokens +
                                        k % aa->block_tokens) *
                                           hd +
                                       i]);
            }
            a->out[((size_t)t * aa->n_head + h) * hd + i] = f2h((float)(acc / sum));
        }
    }
    free(s);
}

static void attn_run(const void *p) {
    const attn_args *a = p;
    for (int t = 0; t < a->n_tok; t++) {
        attn_token(a, t);
    }
}

/* flash: exactly the tokens listed in the tiles (so a wrong tile list leaves rows unwritten,
 * i.e. holding the previous layer's values, and the comparison with the CPU fails) */
static void flash_run(const void *p) {
    const attn_args *a = p;
    for (int i = 0; i < a->n_tiles; i++) {
        int t0 = a->tiles[2 * i], cnt = a->tiles[2 * i + 1];
        if (cnt < 1 || cnt > WK_CUDA_FLASH_TILE) {
            fprintf(stderr, "mock flash: bad tile (%d, %d)\n", t0, cnt);
            abort();
        }
        for (int t = t0; t < t0 + cnt; t++) {
            if (a->seq[t] != a->seq[t0] || a->pos[t] != a->pos[t0] + (t - t0)) {
                fprintf(stderr, "mock flash: tile %d mixes sequences or positions\n", i);
                abort();
            }
            attn_token(a, t);
        }
    }
}

cudaError_t wk_cuda_attention(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                              const int32_t *block_table, const uint16_t *k_cache,
                              const uint16_t *v_cache, const wk_cuda_attn_args *aa, int n_tok,
                              uint16_t *out, cudaStream_t stream) {
    (void)stream;
    attn_args a = {q, tok_pos, tok_seq, block_table, k_cache, v_cache, *aa, n_tok, NULL, 0, out};
    submit(attn_run, &a, sizeof(a));
    return cudaSuccess;
}

cudaError_t wk_cuda_attention_split(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                                    const int32_t *block_table, const uint16_t *k_cache,
                                    const uint16_t *v_cache, const wk_cuda_attn_args *aa, int n_tok,
                                    int splits, float *part, uint16_t *out, cudaStream_t stream) {
    if (splits < 1 || splits > WK_CUDA_ATTN_MAX_SPLITS || (splits > 1 && part == NULL)) {
        return cudaErrorInvalidValue;
    }
    return wk_cuda_attention(q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa, n_tok, out,
                             stream);
}

cudaError_t wk_cuda_flash_prefill(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                                  const int32_t *block_table, const uint16_t *k_cache,
                                  const uint16_t *v_cache, const wk_cuda_attn_args *aa,
                                  const int32_t *tiles, int n_tiles, uint16_t *out,
                                  cudaStream_t stream) {
    (void)stream;
    attn_args a = {q, tok_pos, tok_seq, block_table, k_cache, v_cache, *aa, 0, tiles, n_tiles, out};
    submit(flash_run, &a, sizeof(a));
    return cudaSuccess;
}

typedef struct swiglu_args {
    const uint16_t *gu;
    int n, n_ff;
    uint16_t *out;
} swiglu_args;

static void swiglu_run(const void *p) {
    const swiglu_args *a = p;
    for (int r = 0; r < a->n; r++) {
        for (int c = 0; c < a->n_ff; c++) {
            float g = h2f(a->gu[(size_t)r * 2 * a->n_ff + c]);
            float u = h2f(a->gu[(size_t)r * 2 * a->n_ff + a->n_ff + c]);
            a->out[(size_t)r * a->n_ff + c] = f2h(g / (1.0f + expf(-g)) * u);
        }
    }
}

cudaError_t wk_cuda_swiglu(const uint16_t *gu, int n, int n_ff, uint16_t *out,
                           cudaStream_t stream) {
    (void)stream;
    swiglu_args a = {gu, n, n_ff, out};
    submit(swiglu_run, &a, sizeof(a));
    return cudaSuccess;
}

typedef struct gemv_args {
    const uint16_t *w, *x;
    int n_tok, n_in, n_out;
    void *y;
    int y_f16;
} gemv_args;

static void gemv_run(const void *p) {
    const gemv_args *a = p;
    for (int t = 0; t < a->n_tok; t++) {
        for (int r = 0; r < a->n_out; r++) {
            float acc = 0;
            for (int i = 0; i < a->n_in; i++) {
                acc += h2f(a->w[(size_t)r * a->n_in + i]) * h2f(a->x[(size_t)t * a->n_in + i]);
            }
            if (a->y_f16) {
                ((uint16_t *)a->y)[(size_t)t * a->n_out + r] = f2h(acc);
            } else {
                ((float *)a->y)[(size_t)t * a->n_out + r] = acc;
            }
        }
    }
}

cudaError_t wk_cuda_gemv(const uint16_t *w, const uint16_t *x, int n_tok, int n_in, int n_out,
                         void *y, int y_f16, cudaStream_t stream) {
    (void)stream;
    if (n_tok < 1 || n_tok > WK_CUDA_GEMV_MAX_TOK || n_in % 8 != 0 || n_out <= 0) {
        return cudaErrorInvalidValue;
    }
    gemv_args a = {w, x, n_tok, n_in, n_out, y, y_f16};
    submit(gemv_run, &a, sizeof(a));
    return cudaSuccess;
}

/* Quantized matrices: the layout's values through its host twin (wk_cuda_q_dequant_row), the
 * values the kernels compute. */
typedef struct qmat_args {
    wk_cuda_qmat w;
    const uint16_t *x;
    int n_tok, n_in, n_out, ldy, y_f16, row0;
    void *y; /* qgemv: (n_tok, ldy); dequant: (n_out, n_in) f16 */
} qmat_args;

static void qrow(const qmat_args *a, int r, float *dst) {
    const wk_cuda_qkind k = (wk_cuda_qkind)a->w.kind;
    const size_t qsb = wk_cuda_q_qs_row_bytes(k, a->n_in);
    const size_t scb = wk_cuda_q_sc_row_bytes(k, a->n_in);
    const size_t supb = wk_cuda_q_sup_row_bytes(k, a->n_in);
    if (wk_cuda_q_dequant_row(k, a->w.qs + (size_t)r * qsb, a->w.sc + (size_t)r * scb,
                              supb ? a->w.sup + (size_t)r * supb : NULL, a->n_in, dst) != 0) {
        abort(); /* the launcher checked the kind and the row length */
    }
}

static void qgemv_run(const void *p) {
    const qmat_args *a = p;
    float *wr = malloc(sizeof(float) * (size_t)a->n_in);
    if (wr == NULL) {
        abort();
    }
    for (int r = 0; r < a->n_out; r++) {
        qrow(a, r, wr);
        for (int t = 0; t < a->n_tok; t++) {
            float acc = 0;
            for (int i = 0; i < a->n_in; i++) {
                acc += wr[i] * h2f(a->x[(size_t)t * a->n_in + i]);
            }
            if (a->y_f16) {
                ((uint16_t *)a->y)[(size_t)t * a->ldy + r] = f2h(acc);
            } else {
                ((float *)a->y)[(size_t)t * a->ldy + r] = acc;
            }
        }
    }
    free(wr);
}

static void qdequant_run(const void *p) {
    const qmat_args *a = p;
    float *wr = malloc(sizeof(float) * (size_t)a->n_in);
    if (wr == NULL) {
        abort();
    }
    for (int r = 0; r < a->n_out; r++) {
        qrow(a, a->row0 + r, wr);
        for (int i = 0; i < a->n_in; i++) {
            ((uint16_t *)a->y)[(size_t)r * a->n_in + i] = f2h(wr[i]);
        }
    }
    free(wr);
}

static int qmat_ok(const wk_cuda_qmat *w, int n_in) {
    if (w == NULL || w->qs == NULL || w->sc == NULL ||
        wk_cuda_q_qs_row_bytes((wk_cuda_qkind)w->kind, n_in) == 0) {
        return 0;
    }
    return wk_cuda_q_sup_row_bytes((wk_cuda_qkind)w->kind, n_in) == 0 || w->sup != NULL;
}

cudaError_t wk_cuda_qgemv(const wk_cuda_qmat *w, const uint16_t *x, int n_tok, int n_in, int n_out,
                          void *y, int ldy, int y_f16, cudaStream_t stream) {
    (void)stream;
    if (!qmat_ok(w, n_in) || n_tok < 1 || n_tok > WK_CUDA_GEMV_MAX_TOK || n_out <= 0 ||
        ldy < n_out) {
        return cudaErrorInvalidValue;
    }
    qmat_args a = {*w, x, n_tok, n_in, n_out, ldy, y_f16, 0, y};
    submit(qgemv_run, &a, sizeof(a));
    return cudaSuccess;
}

cudaError_t wk_cuda_qdequant_f16(const wk_cuda_qmat *w, int row0, int n_rows, int n_in,
                                 uint16_t *dst, cudaStream_t stream) {
    (void)stream;
    if (!qmat_ok(w, n_in) || row0 < 0 || n_rows <= 0) {
        return cudaErrorInvalidValue;
    }
    qmat_args a = {*w, NULL, 0, n_in, n_rows, 0, 1, row0, dst};
    submit(qdequant_run, &a, sizeof(a));
    return cudaSuccess;
}

typedef struct gemv_fused_args {
    const uint16_t *w;
    const void *x;
    int x_mode;
    const float *nw;
    float eps;
    int n_tok, n_in, n_out;
    void *y;
    int y_mode;
} gemv_fused_args;

static void gemv_fused_run(const void *p) {
    const gemv_fused_args *a = p;
    float *xin = malloc(sizeof(float) * (size_t)a->n_in);
    if (xin == NULL) {
        abort();
    }
    for (int t = 0; t < a->n_tok; t++) {
        if (a->x_mode == WK_CUDA_X_RMSNORM) {
            const float *xr = (const float *)a->x + (size_t)t * a->n_in;
            double ss = 0;
            for (int i = 0; i < a->n_in; i++) {
                ss += (double)xr[i] * xr[i];
            }
            float inv = (float)(1.0 / sqrt(ss / a->n_in + a->eps));
            for (int i = 0; i < a->n_in; i++) {
                xin[i] = xr[i] * inv * a->nw[i];
            }
        } else if (a->x_mode == WK_CUDA_X_SWIGLU) {
            const uint16_t *gr = (const uint16_t *)a->x + (size_t)t * 2 * a->n_in;
            for (int i = 0; i < a->n_in; i++) {
                float g = h2f(gr[i]), u = h2f(gr[a->n_in + i]);
                xin[i] = g / (1.0f + expf(-g)) * u;
            }
        } else {
            for (int i = 0; i < a->n_in; i++) {
                xin[i] = h2f(((const uint16_t *)a->x)[(size_t)t * a->n_in + i]);
            }
        }
        for (int r = 0; r < a->n_out; r++) {
            float acc = 0;
            for (int i = 0; i < a->n_in; i++) {
                acc += h2f(a->w[(size_t)r * a->n_in + i]) * xin[i];
            }
            size_t o = (size_t)t * a->n_out + r;
            if (a->y_mode == WK_CUDA_Y_F16) {
                ((uint16_t *)a->y)[o] = f2h(acc);
            } else if (a->y_mode == WK_CUDA_Y_ADD_F32) {
                ((float *)a->y)[o] += acc;
            } else {
                ((float *)a->y)[o] = acc;
            }
        }
    }
    free(xin);
}

cudaError_t wk_cuda_gemv_fused(const uint16_t *w, const void *x, int x_mode, const float *norm_w,
                               float eps, int n_tok, int n_in, int n_out, void *y, int y_mode,
                               cudaStream_t stream) {
    (void)stream;
    int ok =
        (x_mode == WK_CUDA_X_RMSNORM && (y_mode == WK_CUDA_Y_F32 || y_mode == WK_CUDA_Y_F16)) ||
        (x_mode == WK_CUDA_X_F16 && y_mode == WK_CUDA_Y_ADD_F32) ||
        (x_mode == WK_CUDA_X_SWIGLU && y_mode == WK_CUDA_Y_ADD_F32);
    if (!ok || n_tok < 1 || n_tok > WK_CUDA_GEMV_MAX_TOK || n_in % 8 != 0 || n_out <= 0 ||
        (x_mode == WK_CUDA_X_RMSNORM && norm_w == NULL)) {
        return cudaErrorInvalidValue;
    }
    gemv_fused_args a = {w, x, x_mode, norm_w, eps, n_tok, n_in, n_out, y, y_mode};
    submit(gemv_fused_run, &a, sizeof(a));
    return cudaSuccess;
}

/* conversions and fills run at once (never captured by the backend) */
cudaError_t wk_cuda_f32_to_f16(const float *src, uint16_t *dst, int64_t n, cudaStream_t stream) {
    (void)stream;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = f2h(src[i]);
    }
    return cudaSuccess;
}

cudaError_t wk_cuda_bf16_to_f16(const uint16_t *src, uint16_t *dst, int64_t n,
                                cudaStream_t stream) {
    (void)stream;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = f2h(wk_bf16_to_f32(src[i]));
    }
    return cudaSuccess;
}

cudaError_t wk_cuda_f16_to_f32(const uint16_t *src, float *dst, int64_t n, cudaStream_t stream) {
    (void)stream;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = h2f(src[i]);
    }
    return cudaSuccess;
}

cudaError_t wk_cuda_fill_random_f16(uint16_t *dst, int64_t n, float amp, uint64_t seed,
                                    cudaStream_t stream) {
    (void)stream;
    uint64_t s = seed * 2 + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        dst[i] = f2h(((float)(s >> 40) / 16777216.0f * 2.0f - 1.0f) * amp);
    }
    return cudaSuccess;
}

cudaError_t wk_cuda_fill_f32(float *dst, int64_t n, float value, cudaStream_t stream) {
    (void)stream;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = value;
    }
    return cudaSuccess;
}

cudaError_t wk_cuda_read_probe(const void *src, int64_t n16, float *sink, cudaStream_t stream) {
    (void)src;
    (void)n16;
    (void)sink;
    (void)stream;
    return cudaSuccess;
}

/* ---- sampling: the host reference (wk_sampler_sample_sparse) per descriptor ------------- */

typedef struct sample_args {
    float *logits;
    int n_vocab;
    const wk_cuda_sample_seq *seqs;
    int n_seqs;
    const wk_cuda_sample_bias *bias;
    const wk_cuda_sample_pen *pen;
    wk_cuda_sample_out *out;
} sample_args;

static wk_sampler *g_sampler; /* for g_sampler_vocab; rebuilt when the vocabulary changes */
static uint32_t g_sampler_vocab;

static void sample_run(const void *p) {
    const sample_args *a = p;
    if (g_sampler == NULL || g_sampler_vocab != (uint32_t)a->n_vocab) {
        wk_sampler_destroy(g_sampler);
        g_sampler = NULL;
        if (wk_sampler_create((uint32_t)a->n_vocab, &g_sampler) != CM_OK) {
            abort();
        }
        g_sampler_vocab = (uint32_t)a->n_vocab;
    }
    static wk_sampling_params sp;
    static wk_penalty_entry pen[WK_DEV_SAMPLE_MAX_PENALTY];
    for (int s = 0; s < a->n_seqs; s++) {
        const wk_cuda_sample_seq *q = &a->seqs[s];
        wk_sampling_defaults(&sp);
        sp.temperature = q->temperature;
        sp.top_k = q->top_k;
        sp.top_p = q->top_p;
        sp.min_p = q->min_p;
        sp.repetition_penalty = q->repetition_penalty;
        sp.presence_penalty = q->presence_penalty;
        sp.frequency_penalty = q->frequency_penalty;
        sp.logprobs = q->want_logprob != 0;
        sp.top_logprobs = q->n_top;
        sp.n_logit_bias = q->n_bias;
        for (uint32_t i = 0; i < q->n_bias && i < WK_MAX_LOGIT_BIAS; i++) {
            sp.logit_bias[i].token_id = a->bias[q->bias_off + i].token_id;
            sp.logit_bias[i].bias = a->bias[q->bias_off + i].bias;
        }
        uint32_t n_pen = q->n_pen < WK_DEV_SAMPLE_MAX_PENALTY ? q->n_pen : 0;
        for (uint32_t i = 0; i < n_pen; i++) {
            pen[i].token_id = a->pen[q->pen_off + i].token_id;
            pen[i].n_generated = a->pen[q->pen_off + i].n_generated;
            pen[i].in_prompt = a->pen[q->pen_off + i].in_prompt;
        }
        wk_sample_result r;
        float *row = a->logits + (size_t)q->row * (size_t)a->n_vocab;
        wk_cuda_sample_out *o = &a->out[s];
        memset(o, 0, sizeof(*o));
        if (wk_sampler_sample_sparse(g_sampler, &sp, row, pen, n_pen, q->u, &r) != CM_OK) {
            o->token_id = -1;
            continue;
        }
        o->token_id = r.token_id;
        o->logprob = r.logprob;
        o->n_top = r.n_top;
        for (uint32_t i = 0; i < r.n_top; i++) {
            o->top_id[i] = r.top[i].token_id;
            o->top_logprob[i] = r.top[i].logprob;
        }
    }
}

size_t wk_cuda_sample_work_bytes(int n_vocab) {
    return (size_t)(n_vocab < 1 ? 1 : n_vocab) * 8;
}

cudaError_t wk_cuda_sample(float *logits, int n_vocab, const wk_cuda_sample_seq *seqs, int n_seqs,
                           const wk_cuda_sample_bias *bias, const wk_cuda_sample_pen *pen,
                           void *work, int n_work, wk_cuda_sample_out *out, cudaStream_t stream) {
    (void)work;
    (void)stream;
    if (n_seqs < 1 || n_work < 1 || n_vocab < 1 || n_vocab > WK_CUDA_SAMPLE_MAX_VOCAB) {
        return cudaErrorInvalidValue;
    }
    sample_args a = {logits, n_vocab, seqs, n_seqs, bias, pen, out};
    submit(sample_run, &a, sizeof(a));
    return cudaSuccess;
}
