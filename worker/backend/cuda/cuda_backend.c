/*
 * The CUDA backend: wk_backend_ops on one NVIDIA GPU (see worker/backend.h for the contract,
 * cuda_backend.h for the extensions and representation, docs/cuda.md for the design).
 *
 * One forward = metadata upload (one pinned H2D copy) -> per layer: add+RMSNorm -> QKV GEMM ->
 * bias/RoPE/KV store -> attention -> O GEMM -> add+RMSNorm -> gate|up GEMM -> SwiGLU -> down
 * GEMM -> final add+RMSNorm of the rows that want logits -> output GEMM -> logits D2H. Decode
 * steps (every sequence 1 token) are padded to a bucket size and replayed as a CUDA graph.
 *
 * Every CUDA/cuBLAS call is checked; a failure fails the forward with CM_ERR_BACKEND (logged,
 * also in wk_cuda_last_error) and, if the device context is broken afterwards (sticky error),
 * healthy() turns false for good.
 */
#include "cuda_backend.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "cm_log.h"
#include "model.h"
#include "quant.h"
#include "cuda_ops.h"
#include "cuda_qweight.h"

#define ALIGN_BYTES 256
#define STAGE_ELEMS ((size_t)8 << 20) /* f32 elements per upload chunk (32 MiB) */
#define CUBLAS_WS_BYTES ((size_t)32 << 20)
#define MAX_BUCKETS 40
#define ERR_LEN 512
#define ATTN_SPLITS 16 /* split-K chunks of the context for decode steps of <= 8 rows */
/* f16 elements of the tile a quantized matrix is dequantized into for cuBLAS (128 MiB): a band
 * of rows at a time, so the 8B shape's output head (1 GiB as f16) takes 8 bands */
#define DEQ_TILE_ELEMS ((size_t)64 << 20)
#define MAX_PARTS 3
#define SAMPLE_SLOTS 64 /* device sampling: blocks (and sort-space slots) at most per step */

/* A run of rows of a weight matrix held in one representation. */
typedef struct wpart {
    int kind;       /* wk_cuda_qkind; WK_CUDA_QK_NONE: f16 */
    int row0;       /* first row of the part within the matrix */
    int rows;       /* rows in the part */
    uint16_t *f16;  /* NONE: (rows, cols) f16 */
    wk_cuda_qmat q; /* otherwise: the device layout of cuda_qweight.h */
} wpart;

/* A weight matrix (rows, cols), fused from up to 3 GGUF tensors (Q|K|V, gate|up): one part when
 * every row has the same representation (always with `weights f16`), otherwise one part per
 * run of tensors of the same kind (Q4_K_M files keep V in Q6_K, for instance). */
typedef struct wmat {
    int rows, cols;
    int n_parts; /* 1..MAX_PARTS */
    wpart part[MAX_PARTS];
    size_t bytes; /* device bytes of all parts (what one forward reads) */
} wmat;

typedef struct layer_dev {
    float *attn_norm; /* (n_embd) */
    wmat wqkv;        /* (n_head*hd + 2*n_kv*hd rows, n_embd) */
    float *bqkv;      /* (qkv_dim) or NULL */
    wmat wo;          /* (n_embd rows, n_head*hd) */
    float *ffn_norm;  /* (n_embd) */
    wmat wgu;         /* (2*n_ff rows, n_embd): gate rows then up rows */
    wmat wdown;       /* (n_embd rows, n_ff) */
} layer_dev;

typedef struct graph_slot {
    uint32_t bucket;      /* padded batch size */
    cudaGraphExec_t exec; /* NULL until captured */
    int failed;           /* capture failed once: never retry this bucket */
} graph_slot;

struct wk_backend {
    const wk_model *model;
    wk_backend_config cfg;
    wk_cuda_options opt;
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *cublas_ws;

    /* dims */
    int n_embd, n_head, n_kv, hd, n_ff, n_vocab, n_layer, qkv_dim, q_dim;
    float eps;

    /* weights: one device arena */
    void *warena;
    size_t warena_bytes;
    size_t weight_read_bytes;
    size_t weight_q_bytes;  /* of which quantized parts */
    size_t max_qpart_elems; /* largest quantized part (rows x cols), sizes the dequant tile */
    int native;             /* weights kept quantized (opt.weights == NATIVE) */
    int all_f16;            /* every layer matrix one f16 part (the fused GEMVs need that) */
    layer_dev *layers;      /* (n_layer) host array of device pointers */
    uint16_t *tok_embd;     /* (n_vocab, n_embd) f16 */
    float *out_norm;        /* (n_embd) */
    wmat output;            /* (n_vocab, n_embd); one f16 part aliasing tok_embd when tied */
    float *inv_freq;        /* (n_rot/2) */
    int n_rot, neox;

    /* paged KV: kv[layer][0=K,1=V] each (n_blocks + 1, n_kv, bt, hd) f16; block n_blocks is
     * the scratch block padded graph rows write to. */
    uint16_t *kv;
    size_t kv_bytes;
    size_t kv_half_elems; /* elements of one layer's K (or V) */
    int32_t scratch_block;

    /* scratch, rows_cap rows each */
    uint32_t rows_cap; /* max(max_batch_tokens, largest bucket) */
    uint32_t seqs_cap; /* block-table rows: max(max_seqs, largest bucket) */
    float *x;          /* (rows, n_embd) residual stream */
    uint16_t *xn;      /* (rows, max(n_embd, q_dim)) normed rows / attention output */
    float *qkv;        /* (rows, qkv_dim) */
    float *q;          /* (rows, q_dim) */
    uint16_t *attn;    /* (rows, q_dim) */
    float *tmp;        /* (rows, n_embd) O / down projection output */
    uint16_t *gu;      /* (rows, 2 n_ff) */
    uint16_t *act;     /* (rows, n_ff) */
    float *logits;     /* (seqs_cap, n_vocab) */
    float *attn_part;  /* (GEMV_MAX_TOK, n_head, ATTN_SPLITS, hd + 2) split-K partials */
    uint16_t *wdeq;    /* (wdeq_elems) f16 tile for quantized matrices in cuBLAS GEMMs, or NULL */
    size_t wdeq_elems;
    int attn_splits; /* 1..ATTN_SPLITS; 1 = no split (env SLUICE_CUDA_ATTN_SPLITS) */
    void *scratch_arena;
    size_t scratch_bytes;

    /* device sampling (cuda_forward_sample): descriptors staged in pinned memory and copied
     * as one prefix per step; out comes back the same way. Layout of h_samp/d_samp:
     * seqs (seqs_cap) | bias (seqs_cap * WK_MAX_LOGIT_BIAS) | pen (seqs_cap *
     * WK_DEV_SAMPLE_MAX_PENALTY) | out (seqs_cap) */
    uint8_t *h_samp;
    uint8_t *d_samp;
    size_t samp_bias_off, samp_pen_off, samp_out_off, samp_bytes;
    void *samp_work; /* (samp_slots, wk_cuda_sample_work_bytes(n_vocab)) */
    size_t samp_work_bytes;
    int samp_slots;

    /* metadata: same layout on host (pinned) and device, copied as one prefix per step */
    int32_t *h_meta;
    int32_t *d_meta;
    size_t meta_fixed_ints; /* tok, pos, seq, out_rows, tiles: 6 * rows_cap */

    graph_slot graphs[MAX_BUCKETS];
    uint32_t n_buckets;

    int cc_major; /* compute capability of the device */

    /* profiling (wk_cuda_set_profile): an event after every op of an eager forward */
    int prof_on;
    int capturing;        /* set while a graph is being captured: no events then */
    cudaEvent_t *prof_ev; /* (prof_cap) */
    int *prof_cat;        /* (prof_cap) category of the op ending at event i */
    int prof_cap, prof_n;
    double prof_ms[WK_CUDA_PROF_N];
    int prof_ops;
    int healthy;
    char last_err[ERR_LEN];
};

/* meta offsets (int32 elements) */
#define META_TOK(be) 0
#define META_POS(be) ((size_t)(be)->rows_cap)
#define META_SEQ(be) ((size_t)(be)->rows_cap * 2)
#define META_OUT(be) ((size_t)(be)->rows_cap * 3)
#define META_TILES(be) ((size_t)(be)->rows_cap * 4) /* 2 ints per tile, <= rows_cap tiles */
#define META_BT(be) ((size_t)(be)->rows_cap * 6)

/* Records a forward failure: message into be->last_err and the log. */
static void be_fail(wk_backend *be, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void be_fail(wk_backend *be, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->last_err, sizeof(be->last_err), fmt, ap);
    va_end(ap);
    cm_logf(CM_LOG_ERROR, NULL, "cuda backend: %s", be->last_err);
}

static const char *cublas_str(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS:
        return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "alloc failed";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return "arch mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR:
        return "mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR:
        return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "not supported";
    default:
        return "unknown cublas status";
    }
}

/* Checks inside create: message into err, rv = code, goto fail. */
#define CK_CREATE(call, code)                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            rv = cm_errf((code), err, errlen, "cuda: %s failed: %s", #call,                        \
                         cudaGetErrorString(e_));                                                  \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Checks inside forward paths: message via be_fail, rv = CM_ERR_BACKEND, goto fail. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            be_fail(be, "%s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__,          \
                    __LINE__);                                                                     \
            rv = CM_ERR_BACKEND;                                                                   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#define CKB(call)                                                                                  \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            be_fail(be, "%s failed: cublas %s (%s:%d)", #call, cublas_str(s_), __FILE__,           \
                    __LINE__);                                                                     \
            rv = CM_ERR_BACKEND;                                                                   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Records the end of an op of category cat when profiling an eager forward. */
static void prof_mark(wk_backend *be, int cat) {
    if (!be->prof_on || be->capturing || be->prof_n >= be->prof_cap) {
        return;
    }
    if (cudaEventRecord(be->prof_ev[be->prof_n], be->stream) == cudaSuccess) {
        be->prof_cat[be->prof_n++] = cat;
    } else {
        (void)cudaGetLastError();
    }
}

/* After a synchronised eager forward: per-category sums of the intervals between events. */
static void prof_collect(wk_backend *be) {
    if (!be->prof_on || be->prof_n < 2) {
        return;
    }
    memset(be->prof_ms, 0, sizeof(be->prof_ms));
    for (int i = 1; i < be->prof_n; i++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, be->prof_ev[i - 1], be->prof_ev[i]) == cudaSuccess) {
            be->prof_ms[be->prof_cat[i]] += ms;
        } else {
            (void)cudaGetLastError();
        }
    }
    be->prof_ops = be->prof_n - 1;
}

void wk_cuda_options_default(wk_cuda_options *o) {
    memset(o, 0, sizeof(*o));
    o->synthetic_device = 0;
    o->synthetic_seed = 0x5eed;
    o->use_graphs = 1;
    o->gemv_mode = WK_CUDA_GEMV_AUTO;
    o->use_flash = 1;
    o->fuse_decode = 0;
    o->gemv_max_rows = 4;
    o->use_pdl = 1; /* H200 run 2: correct (model test) and 0.25 ms/step faster at batch 1 */
    o->weights = WK_CUDA_WEIGHTS_NATIVE;
    o->qgemv_max_rows = WK_CUDA_GEMV_MAX_TOK;
}

/* ---- device discovery ------------------------------------------------------------------- */

static cm_err pick_device(int device, char *err, size_t errlen) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cm_errf(CM_ERR_NO_DEVICE, err, errlen, "no CUDA device: %s", cudaGetErrorString(e));
    }
    if (count <= 0) {
        return cm_errf(CM_ERR_NO_DEVICE, err, errlen, "no CUDA device: driver reports 0 devices");
    }
    if (device < 0 || device >= count) {
        return cm_errf(CM_ERR_NO_DEVICE, err, errlen,
                       "no CUDA device: ordinal %d out of range (%d present)", device, count);
    }
    e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        return cm_errf(CM_ERR_NO_DEVICE, err, errlen, "no CUDA device: cudaSetDevice(%d): %s",
                       device, cudaGetErrorString(e));
    }
    return CM_OK;
}

static cm_err cuda_free_memory(int device, size_t *free_bytes) {
    char err[256];
    if (free_bytes == NULL) {
        return CM_ERR_INVALID;
    }
    *free_bytes = 0;
    cm_err rv = pick_device(device, err, sizeof(err));
    if (rv != CM_OK) {
        cm_logf(CM_LOG_WARN, NULL, "cuda backend: %s", err);
        return rv;
    }
    size_t free_b = 0;
    size_t total_b = 0;
    cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess) {
        cm_logf(CM_LOG_ERROR, NULL, "cuda backend: cudaMemGetInfo: %s", cudaGetErrorString(e));
        return CM_ERR_BACKEND;
    }
    *free_bytes = free_b;
    return CM_OK;
}

/* ---- validation ------------------------------------------------------------------------- */

static int is_matrix_type(wk_dtype t) {
    const wk_dtype_traits *tr = wk_dtype_traits_of(t);
    return tr != NULL && tr->cuda;
}

static cm_err check_tensor(const wk_tensor *t, const char *name, int layer, int64_t cols,
                           int64_t rows, int optional, int synthetic, char *err, size_t errlen) {
    if (t->data == NULL && !synthetic) {
        if (optional) {
            return CM_OK;
        }
        return cm_errf(CM_ERR_INVALID, err, errlen, "tensor %s (layer %d) has no data", name,
                       layer);
    }
    if (t->data == NULL && optional && t->ne[0] == 0) {
        return CM_OK; /* absent optional tensor in a synthetic model */
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        return cm_errf(
            CM_ERR_INVALID, err, errlen,
            "tensor %s (layer %d) has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
            layer, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
            (long long)t->ne[3], (long long)cols, (long long)rows);
    }
    if (!is_matrix_type(t->type)) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "tensor %s (layer %d) has unsupported type %s", name, layer,
                       wk_dtype_name(t->type));
    }
    if (t->data == NULL && t->type != WK_DTYPE_F16 && t->type != WK_DTYPE_F32) {
        return cm_errf(CM_ERR_INVALID, err, errlen,
                       "synthetic tensor %s (layer %d) must be F16 or F32", name, layer);
    }
    if (t->data != NULL && wk_dtype_row_bytes(t->type, cols) == 0) {
        return cm_errf(CM_ERR_INVALID, err, errlen,
                       "tensor %s (layer %d): row of %lld elements does not fit type %s", name,
                       layer, (long long)cols, wk_dtype_name(t->type));
    }
    return CM_OK;
}

static cm_err check_model(const wk_model *m, const wk_backend_config *cfg, int synthetic, char *err,
                          size_t errlen) {
    const wk_hparams *hp = &m->hp;
    if (hp->n_layer == 0 || hp->n_embd == 0 || hp->n_head == 0 || hp->n_head_kv == 0 ||
        hp->n_vocab == 0 || hp->n_ff == 0 || m->layers == NULL) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "model has a zero dimension or no layers");
    }
    if (hp->n_head % hp->n_head_kv != 0) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "n_head %u is not a multiple of n_head_kv %u",
                       hp->n_head, hp->n_head_kv);
    }
    if (!wk_cuda_head_dim_supported((int)hp->head_dim)) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "head_dim %u not supported by the CUDA backend (64, 128, 256)",
                       hp->head_dim);
    }
    if (hp->n_rot != hp->head_dim) {
        /* like the CPU reference: every dimension of a head is rotated */
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "n_rot %u != head_dim %u is not supported",
                       hp->n_rot, hp->head_dim);
    }
    const char *extra = wk_model_extra_feature(m); /* qwen3/gemma graph parts */
    if (extra != NULL) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "%s not supported by the CUDA backend (use the cpu backend)", extra);
    }
    if (hp->n_embd % 8 != 0 || hp->n_ff % 8 != 0 || hp->n_embd > (1u << 16) ||
        hp->n_ff > (1u << 18) || hp->n_layer > 1024 || hp->n_vocab > (1u << 22) ||
        (uint64_t)hp->n_head * hp->head_dim > (1u << 16)) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "model dimensions out of the CUDA backend's range");
    }
    if (cfg->block_tokens == 0 || cfg->block_tokens > 4096 || cfg->n_blocks == 0 ||
        cfg->n_blocks >= (1u << 30) || cfg->max_batch_tokens == 0 ||
        cfg->max_batch_tokens > (1u << 20) || cfg->max_seqs == 0 || cfg->max_seqs > 65536 ||
        cfg->max_blocks_per_seq == 0 || cfg->max_blocks_per_seq > (1u << 20)) {
        return cm_errf(
            CM_ERR_INVALID, err, errlen,
            "backend config out of range (block_tokens %u, n_blocks %u, max_batch_tokens %u, "
            "max_seqs %u, max_blocks_per_seq %u)",
            cfg->block_tokens, cfg->n_blocks, cfg->max_batch_tokens, cfg->max_seqs,
            cfg->max_blocks_per_seq);
    }
    const int64_t e = hp->n_embd;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim;
    const int64_t kd = (int64_t)hp->n_head_kv * hp->head_dim;
    cm_err rv;
    if ((rv = check_tensor(&m->tok_embd, "token_embd", -1, e, hp->n_vocab, 0, synthetic, err,
                           errlen)) != CM_OK ||
        (rv = check_tensor(&m->output_norm, "output_norm", -1, e, 1, 0, synthetic, err, errlen)) !=
            CM_OK ||
        (rv = check_tensor(&m->output, "output", -1, e, hp->n_vocab, 0, synthetic, err, errlen)) !=
            CM_OK) {
        return rv;
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const wk_layer *L = &m->layers[l];
        int li = (int)l;
        if ((rv = check_tensor(&L->attn_norm, "attn_norm", li, e, 1, 0, synthetic, err, errlen)) !=
                CM_OK ||
            (rv = check_tensor(&L->wq, "attn_q", li, e, qd, 0, synthetic, err, errlen)) != CM_OK ||
            (rv = check_tensor(&L->wk, "attn_k", li, e, kd, 0, synthetic, err, errlen)) != CM_OK ||
            (rv = check_tensor(&L->wv, "attn_v", li, e, kd, 0, synthetic, err, errlen)) != CM_OK ||
            (rv = check_tensor(&L->wo, "attn_output", li, qd, e, 0, synthetic, err, errlen)) !=
                CM_OK ||
            (rv = check_tensor(&L->ffn_norm, "ffn_norm", li, e, 1, 0, synthetic, err, errlen)) !=
                CM_OK ||
            (rv = check_tensor(&L->w_gate, "ffn_gate", li, e, hp->n_ff, 0, synthetic, err,
                               errlen)) != CM_OK ||
            (rv = check_tensor(&L->w_up, "ffn_up", li, e, hp->n_ff, 0, synthetic, err, errlen)) !=
                CM_OK ||
            (rv = check_tensor(&L->w_down, "ffn_down", li, hp->n_ff, e, 0, synthetic, err,
                               errlen)) != CM_OK) {
            return rv;
        }
        /* Biases come as a set (qwen2) or not at all. */
        const int nb = (L->bq.data != NULL) + (L->bk.data != NULL) + (L->bv.data != NULL);
        if (nb != 0 && nb != 3) {
            return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                           "layer %d has only some of the q/k/v biases", li);
        }
        if (nb == 3 &&
            ((rv = check_tensor(&L->bq, "attn_q.bias", li, qd, 1, 0, 0, err, errlen)) != CM_OK ||
             (rv = check_tensor(&L->bk, "attn_k.bias", li, kd, 1, 0, 0, err, errlen)) != CM_OK ||
             (rv = check_tensor(&L->bv, "attn_v.bias", li, kd, 1, 0, 0, err, errlen)) != CM_OK)) {
            return rv;
        }
    }
    return CM_OK;
}

/* ---- weight upload ---------------------------------------------------------------------- */

typedef struct uploader {
    float *h_stage; /* pinned, STAGE_ELEMS */
    float *d_stage; /* device, STAGE_ELEMS */
    cudaStream_t stream;
    uint64_t seed;
    int synthetic;
} uploader;

static size_t align_up(size_t n) {
    return (n + ALIGN_BYTES - 1) / ALIGN_BYTES * ALIGN_BYTES;
}

/* Uploads t (rows x cols, any supported type) as f16 into dst. */
static cm_err upload_matrix(uploader *up, const wk_tensor *t, int64_t rows, int64_t cols,
                            uint16_t *dst, char *err, size_t errlen) {
    cm_err rv = CM_OK;
    const int64_t n = rows * cols;
    if (t->data == NULL) {
        /* synthetic on device (validated by check_model) */
        float amp = 1.0f / sqrtf((float)cols);
        up->seed = up->seed * 6364136223846793005ULL + 1442695040888963407ULL;
        CK_CREATE(wk_cuda_fill_random_f16(dst, n, amp, up->seed, up->stream), CM_ERR_BACKEND);
        return CM_OK;
    }
    switch (t->type) {
    case WK_DTYPE_F16:
        CK_CREATE(cudaMemcpyAsync(dst, t->data, (size_t)n * 2, cudaMemcpyHostToDevice, up->stream),
                  CM_ERR_BACKEND);
        CK_CREATE(cudaStreamSynchronize(up->stream), CM_ERR_BACKEND);
        return CM_OK;
    case WK_DTYPE_BF16: {
        /* raw bf16 bits into the device stage (as uint16), converted there */
        const size_t chunk = STAGE_ELEMS * 2; /* uint16 elements that fit the stage */
        const uint16_t *src = t->data;
        for (int64_t off = 0; off < n; off += (int64_t)chunk) {
            int64_t cnt = n - off < (int64_t)chunk ? n - off : (int64_t)chunk;
            CK_CREATE(cudaMemcpyAsync(up->d_stage, src + off, (size_t)cnt * 2,
                                      cudaMemcpyHostToDevice, up->stream),
                      CM_ERR_BACKEND);
            CK_CREATE(
                wk_cuda_bf16_to_f16((const uint16_t *)up->d_stage, dst + off, cnt, up->stream),
                CM_ERR_BACKEND);
            CK_CREATE(cudaStreamSynchronize(up->stream), CM_ERR_BACKEND);
        }
        return CM_OK;
    }
    default: {
        /* F32 and quantized: rows to f32 on the host (pinned stage), convert on the device */
        if (cols > (int64_t)STAGE_ELEMS) {
            return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                           "row of %lld elements exceeds the upload stage", (long long)cols);
        }
        const size_t row_bytes = wk_dtype_row_bytes(t->type, cols);
        const int64_t rows_per_chunk = (int64_t)STAGE_ELEMS / cols;
        const uint8_t *src = t->data;
        for (int64_t r0 = 0; r0 < rows; r0 += rows_per_chunk) {
            int64_t nr = rows - r0 < rows_per_chunk ? rows - r0 : rows_per_chunk;
            /* the previous chunk's copy must be done before the stage is rewritten */
            CK_CREATE(cudaStreamSynchronize(up->stream), CM_ERR_BACKEND);
            for (int64_t r = 0; r < nr; r++) {
                wk_dequantize_row(t->type, src + (size_t)(r0 + r) * row_bytes,
                                  up->h_stage + r * cols, cols);
            }
            CK_CREATE(cudaMemcpyAsync(up->d_stage, up->h_stage, (size_t)(nr * cols) * 4,
                                      cudaMemcpyHostToDevice, up->stream),
                      CM_ERR_BACKEND);
            CK_CREATE(wk_cuda_f32_to_f16(up->d_stage, dst + r0 * cols, nr * cols, up->stream),
                      CM_ERR_BACKEND);
        }
        CK_CREATE(cudaStreamSynchronize(up->stream), CM_ERR_BACKEND);
        return CM_OK;
    }
    }
fail:
    return rv;
}

/* Uploads the rows of t (rows x cols of a type with a device kind) repacked into quantized
 * part p, starting at row r_in_part of the part: rows are repacked on the host into the pinned
 * stage (qs, sc, sup regions of a chunk of rows), then copied into the part's three arrays. */
static cm_err upload_quant(uploader *up, const wk_tensor *t, int64_t rows, int64_t cols,
                           const wpart *p, int64_t r_in_part, char *err, size_t errlen) {
    cm_err rv = CM_OK;
    const wk_cuda_qkind k = (wk_cuda_qkind)p->kind;
    const size_t qsb = wk_cuda_q_qs_row_bytes(k, cols);
    const size_t scb = wk_cuda_q_sc_row_bytes(k, cols);
    const size_t supb = wk_cuda_q_sup_row_bytes(k, cols);
    const size_t src_row = wk_dtype_row_bytes(t->type, cols);
    const int64_t rows_per_chunk = (int64_t)(STAGE_ELEMS * 4 / (qsb + scb + supb));
    if (rows_per_chunk < 1 || src_row == 0) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "row of %lld elements cannot be repacked as %s", (long long)cols,
                       wk_cuda_qkind_name(k));
    }
    uint8_t *h = (uint8_t *)up->h_stage;
    const uint8_t *src = t->data;
    for (int64_t r0 = 0; r0 < rows; r0 += rows_per_chunk) {
        const int64_t nr = rows - r0 < rows_per_chunk ? rows - r0 : rows_per_chunk;
        uint8_t *hq = h;
        uint8_t *hs = h + (size_t)nr * qsb;
        uint8_t *hp = hs + (size_t)nr * scb;
        /* the previous chunk's copies must be done before the stage is rewritten */
        CK_CREATE(cudaStreamSynchronize(up->stream), CM_ERR_BACKEND);
        for (int64_t r = 0; r < nr; r++) {
            if (wk_cuda_q_repack_row(t->type, src + (size_t)(r0 + r) * src_row, cols,
                                     hq + (size_t)r * qsb, hs + (size_t)r * scb,
                                     supb ? hp + (size_t)r * supb : NULL) != 0) {
                return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "cannot repack a %s row as %s",
                               wk_dtype_name(t->type), wk_cuda_qkind_name(k));
            }
        }
        const size_t at = (size_t)(r_in_part + r0);
        CK_CREATE(cudaMemcpyAsync((uint8_t *)p->q.qs + at * qsb, hq, (size_t)nr * qsb,
                                  cudaMemcpyHostToDevice, up->stream),
                  CM_ERR_BACKEND);
        CK_CREATE(cudaMemcpyAsync((uint8_t *)p->q.sc + at * scb, hs, (size_t)nr * scb,
                                  cudaMemcpyHostToDevice, up->stream),
                  CM_ERR_BACKEND);
        if (supb) {
            CK_CREATE(cudaMemcpyAsync((uint8_t *)p->q.sup + at * supb, hp, (size_t)nr * supb,
                                      cudaMemcpyHostToDevice, up->stream),
                      CM_ERR_BACKEND);
        }
    }
    CK_CREATE(cudaStreamSynchronize(up->stream), CM_ERR_BACKEND);
    return CM_OK;
fail:
    return rv;
}

/* Uploads tensor t, rows [row_off, row_off + rows) of matrix m, into the part that holds them
 * (a tensor never straddles parts: plan_matrix makes parts of whole tensors). */
static cm_err upload_into(uploader *up, const wk_tensor *t, const wmat *m, int row_off, int rows,
                          char *err, size_t errlen) {
    const wpart *p = &m->part[0];
    for (int i = 1; i < m->n_parts && m->part[i].row0 <= row_off; i++) {
        p = &m->part[i];
    }
    const int64_t r = row_off - p->row0;
    if (p->kind == WK_CUDA_QK_NONE) {
        return upload_matrix(up, t, rows, m->cols, p->f16 + r * m->cols, err, errlen);
    }
    return upload_quant(up, t, rows, m->cols, p, r, err, errlen);
}

/* Uploads a vector (norm or bias) as f32; synthetic: norms are 1. */
static cm_err upload_vector(uploader *up, const wk_tensor *t, int64_t n, float *dst, char *err,
                            size_t errlen) {
    cm_err rv = CM_OK;
    if (t->data == NULL) {
        CK_CREATE(wk_cuda_fill_f32(dst, n, 1.0f, up->stream), CM_ERR_BACKEND);
        return CM_OK;
    }
    if (n > (int64_t)STAGE_ELEMS || wk_dtype_row_bytes(t->type, n) == 0) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "vector of %lld elements cannot be uploaded", (long long)n);
    }
    CK_CREATE(cudaStreamSynchronize(up->stream), CM_ERR_BACKEND);
    wk_dequantize_row(t->type, t->data, up->h_stage, n);
    CK_CREATE(cudaMemcpyAsync(dst, up->h_stage, (size_t)n * 4, cudaMemcpyHostToDevice, up->stream),
              CM_ERR_BACKEND);
    CK_CREATE(cudaStreamSynchronize(up->stream), CM_ERR_BACKEND);
    return CM_OK;
fail:
    return rv;
}

/* Carves the weight arena; with dst == NULL only counts bytes. */
static size_t carve(uint8_t *base, size_t *off, size_t bytes) {
    size_t at = *off;
    *off += align_up(bytes);
    return base ? (size_t)(base + at) : at;
}

/* The representation of tensor t (cols columns) on the device: its quantized kind in native
 * mode when it has one and the row fits it, else f16. Synthetic tensors are f16. */
static int tensor_kind(const wk_backend *be, const wk_tensor *t, int cols) {
    if (!be->native || t->data == NULL) {
        return WK_CUDA_QK_NONE;
    }
    wk_cuda_qkind k = wk_cuda_qkind_of(t->type);
    return wk_cuda_q_qs_row_bytes(k, cols) != 0 ? (int)k : WK_CUDA_QK_NONE;
}

/* Plans matrix m fused from n tensors (src[i] has rows[i] rows of cols columns) and carves its
 * parts; with base NULL only counts. Adds the matrix's bytes to the backend's totals. */
static void plan_matrix(wk_backend *be, uint8_t *base, size_t *off, wmat *m,
                        const wk_tensor *const *src, const int *rows, int n, int cols) {
    memset(m, 0, sizeof(*m));
    m->cols = cols;
    for (int i = 0; i < n; i++) {
        int kind = tensor_kind(be, src[i], cols);
        if (m->n_parts == 0 || m->part[m->n_parts - 1].kind != kind) {
            wpart *p = &m->part[m->n_parts++];
            p->kind = kind;
            p->row0 = m->rows;
        }
        m->part[m->n_parts - 1].rows += rows[i];
        m->rows += rows[i];
    }
    for (int i = 0; i < m->n_parts; i++) {
        wpart *p = &m->part[i];
        const size_t r = (size_t)p->rows;
        size_t bytes;
        if (p->kind == WK_CUDA_QK_NONE) {
            bytes = r * (size_t)cols * 2;
            p->f16 = (uint16_t *)carve(base, off, bytes);
        } else {
            const wk_cuda_qkind k = (wk_cuda_qkind)p->kind;
            const size_t qsb = r * wk_cuda_q_qs_row_bytes(k, cols);
            const size_t scb = r * wk_cuda_q_sc_row_bytes(k, cols);
            const size_t supb = r * wk_cuda_q_sup_row_bytes(k, cols);
            p->q.kind = p->kind;
            p->q.qs = (const uint8_t *)carve(base, off, qsb);
            p->q.sc = (const uint8_t *)carve(base, off, scb);
            p->q.sup = supb ? (const uint8_t *)carve(base, off, supb) : NULL;
            bytes = qsb + scb + supb;
            be->weight_q_bytes += bytes;
            size_t elems = r * (size_t)cols;
            be->max_qpart_elems = elems > be->max_qpart_elems ? elems : be->max_qpart_elems;
        }
        m->bytes += bytes;
    }
    be->weight_read_bytes += m->bytes;
}

static int wmat_is_f16(const wmat *m) {
    return m->n_parts == 1 && m->part[0].kind == WK_CUDA_QK_NONE;
}

static cm_err layout_weights(wk_backend *be, uint8_t *base, size_t *total, int has_bias) {
    const wk_model *md = be->model;
    const size_t e = (size_t)be->n_embd;
    const int ne = be->n_embd;
    const int kd = be->n_kv * be->hd;
    size_t off = 0;
    const int tied = md->output.data == md->tok_embd.data && md->output.data != NULL;
    be->weight_read_bytes = 0;
    be->weight_q_bytes = 0;
    be->max_qpart_elems = 0;
    be->tok_embd = (uint16_t *)carve(base, &off, (size_t)be->n_vocab * e * 2);
    be->out_norm = (float *)carve(base, &off, e * 4);
    if (tied || md->hp.tied_embeddings) {
        memset(&be->output, 0, sizeof(be->output));
        be->output.rows = be->n_vocab;
        be->output.cols = ne;
        be->output.n_parts = 1;
        be->output.part[0].rows = be->n_vocab;
        be->output.part[0].f16 = be->tok_embd;
        be->output.bytes = (size_t)be->n_vocab * e * 2;
        be->weight_read_bytes += be->output.bytes;
    } else {
        const wk_tensor *t[1] = {&md->output};
        const int r[1] = {be->n_vocab};
        plan_matrix(be, base, &off, &be->output, t, r, 1, ne);
    }
    be->inv_freq = (float *)carve(base, &off, (size_t)be->hd / 2 * 4);
    be->all_f16 = 1;
    for (int l = 0; l < be->n_layer; l++) {
        layer_dev *L = &be->layers[l];
        const wk_layer *S = &md->layers[l];
        L->attn_norm = (float *)carve(base, &off, e * 4);
        const wk_tensor *qkv[3] = {&S->wq, &S->wk, &S->wv};
        const int qkv_rows[3] = {be->q_dim, kd, kd};
        plan_matrix(be, base, &off, &L->wqkv, qkv, qkv_rows, 3, ne);
        L->bqkv = has_bias ? (float *)carve(base, &off, (size_t)be->qkv_dim * 4) : NULL;
        const wk_tensor *o[1] = {&S->wo};
        const int o_rows[1] = {ne};
        plan_matrix(be, base, &off, &L->wo, o, o_rows, 1, be->q_dim);
        L->ffn_norm = (float *)carve(base, &off, e * 4);
        const wk_tensor *gu[2] = {&S->w_gate, &S->w_up};
        const int gu_rows[2] = {be->n_ff, be->n_ff};
        plan_matrix(be, base, &off, &L->wgu, gu, gu_rows, 2, ne);
        const wk_tensor *dn[1] = {&S->w_down};
        plan_matrix(be, base, &off, &L->wdown, dn, o_rows, 1, be->n_ff);
        be->all_f16 &= wmat_is_f16(&L->wqkv) && wmat_is_f16(&L->wo) && wmat_is_f16(&L->wgu) &&
                       wmat_is_f16(&L->wdown);
    }
    *total = off;
    return CM_OK;
}

static cm_err upload_weights(wk_backend *be, char *err, size_t errlen) {
    cm_err rv = CM_OK;
    const wk_model *m = be->model;
    const int64_t e = be->n_embd;
    const int64_t qd = be->q_dim;
    const int64_t kd = (int64_t)be->n_kv * be->hd;
    uploader up = {0};
    up.stream = be->stream;
    up.seed = be->opt.synthetic_seed;
    up.synthetic = be->opt.synthetic_device;

    CK_CREATE(cudaMallocHost((void **)&up.h_stage, STAGE_ELEMS * 4), CM_ERR_NOMEM);
    CK_CREATE(cudaMalloc((void **)&up.d_stage, STAGE_ELEMS * 4), CM_ERR_NOMEM);

    if (m->tok_embd.data == NULL) {
        /* synthetic embeddings: amplitude 1 so the residual stream starts O(1) */
        up.seed = up.seed * 6364136223846793005ULL + 1;
        CK_CREATE(wk_cuda_fill_random_f16(be->tok_embd, (int64_t)be->n_vocab * e, 1.0f, up.seed,
                                          be->stream),
                  CM_ERR_BACKEND);
    } else if ((rv = upload_matrix(&up, &m->tok_embd, be->n_vocab, e, be->tok_embd, err, errlen)) !=
               CM_OK) {
        goto fail;
    }
    if ((rv = upload_vector(&up, &m->output_norm, e, be->out_norm, err, errlen)) != CM_OK) {
        goto fail;
    }
    if (be->output.part[0].f16 != be->tok_embd &&
        (rv = upload_into(&up, &m->output, &be->output, 0, be->n_vocab, err, errlen)) != CM_OK) {
        goto fail;
    }
    {
        /* the CPU reference's own frequencies, so both backends rotate identically */
        float freq[1024];
        wk_rope_inv_freq(&m->hp, be->hd, freq);
        CK_CREATE(cudaMemcpyAsync(be->inv_freq, freq, (size_t)be->n_rot / 2 * 4,
                                  cudaMemcpyHostToDevice, be->stream),
                  CM_ERR_BACKEND);
        CK_CREATE(cudaStreamSynchronize(be->stream), CM_ERR_BACKEND);
    }
    for (int l = 0; l < be->n_layer; l++) {
        const wk_layer *L = &m->layers[l];
        layer_dev *D = &be->layers[l];
        const int iqd = (int)qd;
        const int ikd = (int)kd;
        if ((rv = upload_vector(&up, &L->attn_norm, e, D->attn_norm, err, errlen)) != CM_OK ||
            (rv = upload_into(&up, &L->wq, &D->wqkv, 0, iqd, err, errlen)) != CM_OK ||
            (rv = upload_into(&up, &L->wk, &D->wqkv, iqd, ikd, err, errlen)) != CM_OK ||
            (rv = upload_into(&up, &L->wv, &D->wqkv, iqd + ikd, ikd, err, errlen)) != CM_OK ||
            (rv = upload_into(&up, &L->wo, &D->wo, 0, (int)e, err, errlen)) != CM_OK ||
            (rv = upload_vector(&up, &L->ffn_norm, e, D->ffn_norm, err, errlen)) != CM_OK ||
            (rv = upload_into(&up, &L->w_gate, &D->wgu, 0, be->n_ff, err, errlen)) != CM_OK ||
            (rv = upload_into(&up, &L->w_up, &D->wgu, be->n_ff, be->n_ff, err, errlen)) != CM_OK ||
            (rv = upload_into(&up, &L->w_down, &D->wdown, 0, (int)e, err, errlen)) != CM_OK) {
            goto fail;
        }
        if (D->bqkv != NULL &&
            ((rv = upload_vector(&up, &L->bq, qd, D->bqkv, err, errlen)) != CM_OK ||
             (rv = upload_vector(&up, &L->bk, kd, D->bqkv + qd, err, errlen)) != CM_OK ||
             (rv = upload_vector(&up, &L->bv, kd, D->bqkv + qd + kd, err, errlen)) != CM_OK)) {
            goto fail;
        }
    }
    CK_CREATE(cudaStreamSynchronize(be->stream), CM_ERR_BACKEND);
    rv = CM_OK;
fail:
    if (up.d_stage) {
        (void)cudaFree(up.d_stage);
    }
    if (up.h_stage) {
        (void)cudaFreeHost(up.h_stage);
    }
    return rv;
}

/* ---- create / destroy ------------------------------------------------------------------- */

static void destroy_graphs(wk_backend *be) {
    for (uint32_t i = 0; i < be->n_buckets; i++) {
        if (be->graphs[i].exec) {
            (void)cudaGraphExecDestroy(be->graphs[i].exec);
            be->graphs[i].exec = NULL;
        }
        be->graphs[i].failed = 0;
    }
}

static void cuda_destroy(wk_backend *be) {
    if (be == NULL) {
        return;
    }
    if (be->stream) {
        (void)cudaStreamSynchronize(be->stream);
    }
    destroy_graphs(be);
    if (be->cublas) {
        (void)cublasDestroy(be->cublas);
    }
    if (be->cublas_ws) {
        (void)cudaFree(be->cublas_ws);
    }
    if (be->warena) {
        (void)cudaFree(be->warena);
    }
    if (be->kv) {
        (void)cudaFree(be->kv);
    }
    if (be->scratch_arena) {
        (void)cudaFree(be->scratch_arena);
    }
    if (be->d_meta) {
        (void)cudaFree(be->d_meta);
    }
    if (be->h_meta) {
        (void)cudaFreeHost(be->h_meta);
    }
    if (be->d_samp) {
        (void)cudaFree(be->d_samp);
    }
    if (be->h_samp) {
        (void)cudaFreeHost(be->h_samp);
    }
    if (be->samp_work) {
        (void)cudaFree(be->samp_work);
    }
    if (be->stream) {
        (void)cudaStreamDestroy(be->stream);
    }
    for (int i = 0; i < be->prof_cap; i++) {
        (void)cudaEventDestroy(be->prof_ev[i]);
    }
    free(be->prof_ev);
    free(be->prof_cat);
    free(be->layers);
    free(be);
}

/* Bucket sizes 1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to the first >= max_seqs. */
static void make_buckets(wk_backend *be) {
    uint32_t n = 0;
    uint32_t p = 1;
    uint32_t target = be->cfg.max_seqs;
    while (n + 2 < MAX_BUCKETS) {
        be->graphs[n++].bucket = p;
        if (p >= target) {
            break;
        }
        uint32_t mid = p + p / 2;
        if (p >= 2 && mid < 2 * p) {
            be->graphs[n++].bucket = mid;
            if (mid >= target) {
                break;
            }
        }
        p *= 2;
    }
    be->n_buckets = n;
}

cm_err wk_cuda_create_ex(const wk_model *model, const wk_backend_config *cfg,
                         const wk_cuda_options *opt, wk_backend **out, char *err, size_t errlen) {
    cm_err rv = CM_OK;
    wk_backend *be = NULL;
    if (out == NULL) {
        return CM_ERR_INVALID;
    }
    *out = NULL;
    if (model == NULL || cfg == NULL) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "cuda backend: model and config are required");
    }
    wk_cuda_options defaults;
    wk_cuda_options_default(&defaults);
    if (opt == NULL) {
        opt = &defaults;
    }
    if ((rv = pick_device(cfg->device, err, errlen)) != CM_OK) {
        return rv;
    }
    if ((rv = check_model(model, cfg, opt->synthetic_device, err, errlen)) != CM_OK) {
        return rv;
    }

    be = calloc(1, sizeof(*be));
    if (be == NULL) {
        return cm_errf(CM_ERR_NOMEM, err, errlen, "cuda backend: out of host memory");
    }
    be->model = model;
    be->cfg = *cfg;
    be->opt = *opt;
    be->device = cfg->device;
    be->healthy = 1;
    const char *env = getenv("SLUICE_CUDA_GRAPHS");
    if (env != NULL && strcmp(env, "0") == 0) {
        be->opt.use_graphs = 0;
    }
    env = getenv("SLUICE_CUDA_GEMV_MAX_ROWS");
    if (env != NULL) {
        be->opt.gemv_max_rows = atoi(env);
    }
    if (be->opt.gemv_max_rows < 0 || be->opt.gemv_max_rows > WK_CUDA_GEMV_MAX_TOK) {
        be->opt.gemv_max_rows = be->opt.gemv_max_rows < 0 ? 0 : WK_CUDA_GEMV_MAX_TOK;
    }
    be->attn_splits = ATTN_SPLITS;
    env = getenv("SLUICE_CUDA_ATTN_SPLITS");
    if (env != NULL) {
        int v = atoi(env);
        be->attn_splits = v < 1 ? 1 : v > ATTN_SPLITS ? ATTN_SPLITS : v;
    }
    env = getenv("SLUICE_CUDA_PDL");
    if (env != NULL) {
        be->opt.use_pdl = strcmp(env, "0") != 0;
    }
    env = getenv("SLUICE_CUDA_FUSE");
    if (env != NULL) {
        be->opt.fuse_decode = strcmp(env, "0") != 0;
    }
    env = getenv("SLUICE_CUDA_WEIGHTS");
    if (env != NULL && strcmp(env, "f16") == 0) {
        be->opt.weights = WK_CUDA_WEIGHTS_F16;
    } else if (env != NULL && strcmp(env, "native") == 0) {
        be->opt.weights = WK_CUDA_WEIGHTS_NATIVE;
    } else if (env != NULL) {
        rv = cm_errf(CM_ERR_INVALID, err, errlen,
                     "SLUICE_CUDA_WEIGHTS must be f16 or native, not '%.32s'", env);
        goto fail;
    }
    be->native = be->opt.weights == WK_CUDA_WEIGHTS_NATIVE;
    env = getenv("SLUICE_CUDA_QGEMV_MAX_ROWS");
    if (env != NULL) {
        be->opt.qgemv_max_rows = atoi(env);
    }
    if (be->opt.qgemv_max_rows < 0 || be->opt.qgemv_max_rows > WK_CUDA_GEMV_MAX_TOK) {
        be->opt.qgemv_max_rows = be->opt.qgemv_max_rows < 0 ? 0 : WK_CUDA_GEMV_MAX_TOK;
    }
    if (cfg->kv_dtype != WK_DTYPE_F16) {
        cm_logf(CM_LOG_INFO, NULL, "cuda backend: kv dtype %s requested; the CUDA KV cache is F16",
                wk_dtype_name(cfg->kv_dtype));
    }

    const wk_hparams *hp = &model->hp;
    be->n_embd = (int)hp->n_embd;
    be->n_head = (int)hp->n_head;
    be->n_kv = (int)hp->n_head_kv;
    be->hd = (int)hp->head_dim;
    be->n_ff = (int)hp->n_ff;
    be->n_vocab = (int)hp->n_vocab;
    be->n_layer = (int)hp->n_layer;
    be->q_dim = be->n_head * be->hd;
    be->qkv_dim = (be->n_head + 2 * be->n_kv) * be->hd;
    be->eps = hp->rms_eps > 0.0f ? hp->rms_eps : 1e-5f;
    be->n_rot = (int)hp->n_rot;
    be->neox = hp->rope_style == WK_ROPE_NEOX;

    struct cudaDeviceProp prop;
    CK_CREATE(cudaGetDeviceProperties(&prop, be->device), CM_ERR_NO_DEVICE);
    if (prop.major < 8) {
        rv = cm_errf(CM_ERR_NO_DEVICE, err, errlen,
                     "no CUDA device: %s has compute capability %d.%d, need >= 8.0", prop.name,
                     prop.major, prop.minor);
        goto fail;
    }
    be->cc_major = prop.major;
    wk_cuda_ops_set_pdl(be->opt.use_pdl && prop.major >= 9);
    CK_CREATE(cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking), CM_ERR_BACKEND);
    {
        cublasStatus_t s = cublasCreate(&be->cublas);
        if (s != CUBLAS_STATUS_SUCCESS) {
            be->cublas = NULL;
            rv = cm_errf(CM_ERR_BACKEND, err, errlen, "cublasCreate: %s", cublas_str(s));
            goto fail;
        }
        CK_CREATE(cudaMalloc(&be->cublas_ws, CUBLAS_WS_BYTES), CM_ERR_NOMEM);
        if ((s = cublasSetStream(be->cublas, be->stream)) != CUBLAS_STATUS_SUCCESS ||
            (s = cublasSetWorkspace(be->cublas, be->cublas_ws, CUBLAS_WS_BYTES)) !=
                CUBLAS_STATUS_SUCCESS) {
            rv = cm_errf(CM_ERR_BACKEND, err, errlen, "cublas setup: %s", cublas_str(s));
            goto fail;
        }
    }

    /* weights */
    be->layers = calloc((size_t)be->n_layer, sizeof(*be->layers));
    if (be->layers == NULL) {
        rv = cm_errf(CM_ERR_NOMEM, err, errlen, "cuda backend: out of host memory");
        goto fail;
    }
    {
        const int has_bias = model->layers[0].bq.data != NULL;
        size_t total = 0;
        layout_weights(be, NULL, &total, has_bias);
        cudaError_t e = cudaMalloc(&be->warena, total);
        if (e != cudaSuccess) {
            be->warena = NULL;
            (void)cudaGetLastError();
            rv =
                cm_errf(CM_ERR_NOMEM, err, errlen, "cuda: cannot allocate %.2f GiB for weights: %s",
                        (double)total / (1 << 30), cudaGetErrorString(e));
            goto fail;
        }
        be->warena_bytes = total;
        layout_weights(be, be->warena, &total, has_bias);
        if ((rv = upload_weights(be, err, errlen)) != CM_OK) {
            goto fail;
        }
        /* weight_read_bytes (what one forward reads: every matrix once, the tied output once,
         * norms negligible) was summed by layout_weights */
    }

    /* KV cache (+1 scratch block for padded graph rows) */
    {
        be->scratch_block = (int32_t)cfg->n_blocks;
        be->kv_half_elems =
            ((size_t)cfg->n_blocks + 1) * (size_t)be->n_kv * cfg->block_tokens * (size_t)be->hd;
        be->kv_bytes = be->kv_half_elems * 2 * 2 * (size_t)be->n_layer;
        cudaError_t e = cudaMalloc((void **)&be->kv, be->kv_bytes);
        if (e != cudaSuccess) {
            be->kv = NULL;
            (void)cudaGetLastError();
            rv = cm_errf(CM_ERR_NOMEM, err, errlen,
                         "cuda: cannot allocate %.2f GiB for the KV cache (%u blocks): %s",
                         (double)be->kv_bytes / (1 << 30), cfg->n_blocks, cudaGetErrorString(e));
            goto fail;
        }
        CK_CREATE(cudaMemsetAsync(be->kv, 0, be->kv_bytes, be->stream), CM_ERR_BACKEND);
    }

    /* scratch */
    make_buckets(be);
    {
        uint32_t maxb = be->graphs[be->n_buckets - 1].bucket;
        be->rows_cap = cfg->max_batch_tokens > maxb ? cfg->max_batch_tokens : maxb;
        be->seqs_cap = cfg->max_seqs > maxb ? cfg->max_seqs : maxb;
        const size_t R = be->rows_cap;
        const size_t e = (size_t)be->n_embd;
        const size_t xn_cols = e > (size_t)be->q_dim ? e : (size_t)be->q_dim;
        size_t off = 0;
        size_t o_x = carve(NULL, &off, R * e * 4);
        size_t o_xn = carve(NULL, &off, R * xn_cols * 2);
        size_t o_qkv = carve(NULL, &off, R * (size_t)be->qkv_dim * 4);
        size_t o_q = carve(NULL, &off, R * (size_t)be->q_dim * 4);
        size_t o_attn = carve(NULL, &off, R * (size_t)be->q_dim * 2);
        size_t o_tmp = carve(NULL, &off, R * e * 4);
        size_t o_gu = carve(NULL, &off, R * 2 * (size_t)be->n_ff * 2);
        size_t o_act = carve(NULL, &off, R * (size_t)be->n_ff * 2);
        size_t o_logits = carve(NULL, &off, (size_t)be->seqs_cap * (size_t)be->n_vocab * 4);
        size_t o_part = carve(NULL, &off,
                              (size_t)WK_CUDA_GEMV_MAX_TOK * (size_t)be->n_head * ATTN_SPLITS *
                                  ((size_t)be->hd + 2) * 4);
        /* the dequantization tile: the largest quantized part, at most DEQ_TILE_ELEMS, at
         * least one row of the widest matrix */
        be->wdeq_elems =
            be->max_qpart_elems < DEQ_TILE_ELEMS ? be->max_qpart_elems : DEQ_TILE_ELEMS;
        size_t o_deq = be->wdeq_elems > 0 ? carve(NULL, &off, be->wdeq_elems * 2) : 0;
        cudaError_t ce = cudaMalloc(&be->scratch_arena, off);
        if (ce != cudaSuccess) {
            be->scratch_arena = NULL;
            (void)cudaGetLastError();
            rv = cm_errf(CM_ERR_NOMEM, err, errlen, "cuda: cannot allocate %.2f GiB of scratch: %s",
                         (double)off / (1 << 30), cudaGetErrorString(ce));
            goto fail;
        }
        be->scratch_bytes = off;
        uint8_t *b = be->scratch_arena;
        be->x = (float *)(b + o_x);
        be->xn = (uint16_t *)(b + o_xn);
        be->qkv = (float *)(b + o_qkv);
        be->q = (float *)(b + o_q);
        be->attn = (uint16_t *)(b + o_attn);
        be->tmp = (float *)(b + o_tmp);
        be->gu = (uint16_t *)(b + o_gu);
        be->act = (uint16_t *)(b + o_act);
        be->logits = (float *)(b + o_logits);
        be->attn_part = (float *)(b + o_part);
        be->wdeq = be->wdeq_elems > 0 ? (uint16_t *)(b + o_deq) : NULL;

        be->meta_fixed_ints = META_BT(be);
        size_t meta_ints = be->meta_fixed_ints + (size_t)be->seqs_cap * cfg->max_blocks_per_seq;
        CK_CREATE(cudaMallocHost((void **)&be->h_meta, meta_ints * 4), CM_ERR_NOMEM);
        CK_CREATE(cudaMalloc((void **)&be->d_meta, meta_ints * 4), CM_ERR_NOMEM);
        memset(be->h_meta, 0, meta_ints * 4);
        CK_CREATE(cudaMemsetAsync(be->d_meta, 0, meta_ints * 4, be->stream), CM_ERR_BACKEND);

        /* device sampling: descriptors, results and one work slot per concurrent block (the
         * edge bucket's sort space; SAMPLE_SLOTS blocks cover a step of any size) */
        const size_t sc = be->seqs_cap;
        be->samp_bias_off = sc * sizeof(wk_cuda_sample_seq);
        be->samp_pen_off = be->samp_bias_off + sc * WK_MAX_LOGIT_BIAS * sizeof(wk_cuda_sample_bias);
        be->samp_out_off =
            be->samp_pen_off + sc * WK_DEV_SAMPLE_MAX_PENALTY * sizeof(wk_cuda_sample_pen);
        be->samp_bytes = be->samp_out_off + sc * sizeof(wk_cuda_sample_out);
        be->samp_slots = sc < SAMPLE_SLOTS ? (int)sc : SAMPLE_SLOTS;
        CK_CREATE(cudaMallocHost((void **)&be->h_samp, be->samp_bytes), CM_ERR_NOMEM);
        CK_CREATE(cudaMalloc((void **)&be->d_samp, be->samp_bytes), CM_ERR_NOMEM);
        be->samp_work_bytes = (size_t)be->samp_slots * wk_cuda_sample_work_bytes(be->n_vocab);
        CK_CREATE(cudaMalloc(&be->samp_work, be->samp_work_bytes), CM_ERR_NOMEM);
    }
    CK_CREATE(cudaStreamSynchronize(be->stream), CM_ERR_BACKEND);
    cm_logf(CM_LOG_INFO, NULL,
            "cuda backend: %s (sm_%d%d, %d SMs): weights %s %.2f GiB (%.2f GiB read per step, "
            "%.2f GiB of it quantized), KV %.2f GiB (%u blocks x %u tokens), workspace %.2f GiB "
            "(activations, logits, %.2f GiB dequant tile, %.0f MiB cuBLAS) + %.0f MiB device "
            "sampling, graphs %s",
            prop.name, prop.major, prop.minor, prop.multiProcessorCount,
            be->native ? "native" : "f16", (double)be->warena_bytes / (1 << 30),
            (double)be->weight_read_bytes / (1 << 30), (double)be->weight_q_bytes / (1 << 30),
            (double)be->kv_bytes / (1 << 30), cfg->n_blocks, cfg->block_tokens,
            (double)be->scratch_bytes / (1 << 30), (double)be->wdeq_elems * 2 / (1 << 30),
            (double)CUBLAS_WS_BYTES / (1 << 20),
            (double)(be->samp_bytes + be->samp_work_bytes) / (1 << 20),
            be->opt.use_graphs ? "on" : "off");
    *out = be;
    return CM_OK;
fail:
    (void)cudaGetLastError();
    cuda_destroy(be);
    return rv;
}

static cm_err cuda_create(const wk_model *model, const wk_backend_config *cfg, wk_backend **out,
                          char *err, size_t errlen) {
    return wk_cuda_create_ex(model, cfg, NULL, out, err, errlen);
}

/* ---- forward ---------------------------------------------------------------------------- */

/* cuBLAS: y (n, ldy) columns [0, n_out) = x (n, n_in) . W^T with W (n_out, n_in) f16. */
static cm_err cublas_wt(wk_backend *be, const uint16_t *w, const uint16_t *x, int n, int n_in,
                        int n_out, void *y, int ldy, int y_f16) {
    cm_err rv = CM_OK;
    /* Column-major view: C (n_out x n) = op(A) (n_out x n_in) * B (n_in x n) with A = W stored
     * as (n_in x n_out) column-major, hence OP_T; ldc = ldy lets a part fill its columns. */
    const float alpha = 1.0f;
    const float beta = 0.0f;
    CKB(cublasGemmEx(be->cublas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n, n_in, &alpha, w, CUDA_R_16F,
                     n_in, x, CUDA_R_16F, n_in, &beta, y, y_f16 ? CUDA_R_16F : CUDA_R_32F, ldy,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return CM_OK;
fail:
    return rv;
}

/* Rows of W at or below which a GEMV replaces cuBLAS for part p. */
static int gemv_rows_for(const wk_backend *be, const wpart *p) {
    if (be->opt.gemv_mode == WK_CUDA_GEMV_CUBLAS) {
        return 0;
    }
    return p->kind == WK_CUDA_QK_NONE ? be->opt.gemv_max_rows : be->opt.qgemv_max_rows;
}

/* y (n, W rows) = x (n, W cols) . W^T, part by part; x f16; y f32 or f16. f16 parts: the GEMV
 * (a single-part matrix) or cuBLAS; quantized parts: the quantized GEMV for small n, else
 * bands of rows dequantized into the f16 tile and multiplied by cuBLAS. */
static cm_err gemm(wk_backend *be, const wmat *w, const uint16_t *x, int n, void *y, int y_f16) {
    cm_err rv = CM_OK;
    const int n_in = w->cols;
    const int ldy = w->rows;
    const size_t esz = y_f16 ? 2 : 4;
    for (int i = 0; i < w->n_parts; i++) {
        const wpart *p = &w->part[i];
        void *yp = (uint8_t *)y + (size_t)p->row0 * esz;
        const int small = n <= gemv_rows_for(be, p);
        if (p->kind == WK_CUDA_QK_NONE) {
            if (small && w->n_parts == 1) {
                CK(wk_cuda_gemv(p->f16, x, n, n_in, p->rows, yp, y_f16, be->stream));
            } else if ((rv = cublas_wt(be, p->f16, x, n, n_in, p->rows, yp, ldy, y_f16)) != CM_OK) {
                goto fail;
            }
            continue;
        }
        if (small) {
            CK(wk_cuda_qgemv(&p->q, x, n, n_in, p->rows, yp, ldy, y_f16, be->stream));
            continue;
        }
        const int band = (int)(be->wdeq_elems / (size_t)n_in);
        for (int r0 = 0; r0 < p->rows; r0 += band) {
            const int nr = p->rows - r0 < band ? p->rows - r0 : band;
            CK(wk_cuda_qdequant_f16(&p->q, r0, nr, n_in, be->wdeq, be->stream));
            if ((rv = cublas_wt(be, be->wdeq, x, n, n_in, nr, (uint8_t *)yp + (size_t)r0 * esz, ldy,
                                y_f16)) != CM_OK) {
                goto fail;
            }
        }
    }
    return CM_OK;
fail:
    return rv;
}

/* Decode attention: split over the context (flash-decoding) for steps of <= 8 rows, where one
 * block per (token, head) leaves most SMs idle (H200: ~26 us/layer at 512 keys). */
static cudaError_t attention(wk_backend *be, const int32_t *d_pos, const int32_t *d_seq,
                             const int32_t *d_bt, const uint16_t *k_cache, const uint16_t *v_cache,
                             const wk_cuda_attn_args *aa, int n) {
    if (n <= WK_CUDA_GEMV_MAX_TOK && be->attn_splits > 1) {
        return wk_cuda_attention_split(be->q, d_pos, d_seq, d_bt, k_cache, v_cache, aa, n,
                                       be->attn_splits, be->attn_part, be->attn, be->stream);
    }
    return wk_cuda_attention(be->q, d_pos, d_seq, d_bt, k_cache, v_cache, aa, n, be->attn,
                             be->stream);
}

/* The layers and the output head for 1..8 rows with fused GEMVs: the residual stream x is
 * updated in place by the O and down GEMVs, the norms are folded into the QKV and gate|up
 * GEMVs, SwiGLU into the down GEMV. Embedding already done. */
static cm_err enqueue_fused_layers(wk_backend *be, int n, int n_out, int flash_tiles) {
    cm_err rv = CM_OK;
    const int32_t *d_pos = be->d_meta + META_POS(be);
    const int32_t *d_seq = be->d_meta + META_SEQ(be);
    const int32_t *d_out = be->d_meta + META_OUT(be);
    const int32_t *d_tiles = be->d_meta + META_TILES(be);
    const int32_t *d_bt = be->d_meta + META_BT(be);
    const int mb = (int)be->cfg.max_blocks_per_seq;
    const int bt = (int)be->cfg.block_tokens;
    wk_cuda_rope_args ra = {be->n_head, be->n_kv, be->hd, be->n_rot, be->neox, be->inv_freq};
    wk_cuda_attn_args aa = {be->n_head, be->n_kv, be->hd, bt, mb, 1.0f / sqrtf((float)be->hd)};
    for (int l = 0; l < be->n_layer; l++) {
        const layer_dev *L = &be->layers[l];
        uint16_t *k_cache = be->kv + (size_t)l * 2 * be->kv_half_elems;
        uint16_t *v_cache = k_cache + be->kv_half_elems;
        CK(wk_cuda_gemv_fused(L->wqkv.part[0].f16, be->x, WK_CUDA_X_RMSNORM, L->attn_norm, be->eps,
                              n, be->n_embd, be->qkv_dim, be->qkv, WK_CUDA_Y_F32, be->stream));
        prof_mark(be, WK_CUDA_PROF_GEMM);
        CK(wk_cuda_rope_store(be->qkv, L->bqkv, d_pos, d_seq, d_bt, mb, bt, &ra, n, be->q, k_cache,
                              v_cache, be->stream));
        prof_mark(be, WK_CUDA_PROF_ROPE);
        if (flash_tiles > 0) {
            CK(wk_cuda_flash_prefill(be->q, d_pos, d_seq, d_bt, k_cache, v_cache, &aa, d_tiles,
                                     flash_tiles, be->attn, be->stream));
        } else {
            CK(attention(be, d_pos, d_seq, d_bt, k_cache, v_cache, &aa, n));
        }
        prof_mark(be, WK_CUDA_PROF_ATTN);
        CK(wk_cuda_gemv_fused(L->wo.part[0].f16, be->attn, WK_CUDA_X_F16, NULL, 0.0f, n, be->q_dim,
                              be->n_embd, be->x, WK_CUDA_Y_ADD_F32, be->stream));
        prof_mark(be, WK_CUDA_PROF_GEMM);
        CK(wk_cuda_gemv_fused(L->wgu.part[0].f16, be->x, WK_CUDA_X_RMSNORM, L->ffn_norm, be->eps, n,
                              be->n_embd, 2 * be->n_ff, be->gu, WK_CUDA_Y_F16, be->stream));
        prof_mark(be, WK_CUDA_PROF_GEMM);
        CK(wk_cuda_gemv_fused(L->wdown.part[0].f16, be->gu, WK_CUDA_X_SWIGLU, NULL, 0.0f, n,
                              be->n_ff, be->n_embd, be->x, WK_CUDA_Y_ADD_F32, be->stream));
        prof_mark(be, WK_CUDA_PROF_GEMM);
    }
    if (n_out > 0) {
        /* x already holds every residual add */
        CK(wk_cuda_add_rmsnorm(be->x, NULL, be->out_norm, d_out, n_out, be->n_embd, be->eps, be->xn,
                               be->stream));
        prof_mark(be, WK_CUDA_PROF_NORM);
        if ((rv = gemm(be, &be->output, be->xn, n_out, be->logits, 0)) != CM_OK) {
            goto fail;
        }
        prof_mark(be, WK_CUDA_PROF_GEMM);
    }
    return CM_OK;
fail:
    return rv;
}

/* Enqueues the whole model for n rows (metadata already on the device) and the output head for
 * n_out rows listed in META_OUT. flash_tiles > 0 selects the flash prefill attention. */
static cm_err enqueue_forward(wk_backend *be, int n, int n_out, int flash_tiles) {
    cm_err rv = CM_OK;
    const int32_t *d_tok = be->d_meta + META_TOK(be);
    const int32_t *d_pos = be->d_meta + META_POS(be);
    const int32_t *d_seq = be->d_meta + META_SEQ(be);
    const int32_t *d_out = be->d_meta + META_OUT(be);
    const int32_t *d_tiles = be->d_meta + META_TILES(be);
    const int32_t *d_bt = be->d_meta + META_BT(be);
    const int mb = (int)be->cfg.max_blocks_per_seq;
    const int bt = (int)be->cfg.block_tokens;
    wk_cuda_rope_args ra = {be->n_head, be->n_kv, be->hd, be->n_rot, be->neox, be->inv_freq};
    wk_cuda_attn_args aa = {be->n_head, be->n_kv, be->hd, bt, mb, 1.0f / sqrtf((float)be->hd)};

    /* PDL only where it was measured to help: the small GEMV-path steps. Larger steps run
     * cuBLAS GEMMs, and early-resident waiting blocks would only take SM slots from them (H200
     * run 3 slowed b32/b128 with PDL everywhere). Graphs keep the mode they were captured with,
     * and a bucket's size decides it, so replays stay consistent. */
    const int gemv_rows = be->native ? be->opt.qgemv_max_rows : be->opt.gemv_max_rows;
    wk_cuda_ops_set_pdl(be->opt.use_pdl && be->cc_major >= 9 && n <= gemv_rows);
    be->prof_n = 0;
    prof_mark(be, WK_CUDA_PROF_OTHER); /* start */
    CK(wk_cuda_embed(be->tok_embd, d_tok, n, be->n_embd, be->x, be->stream));
    prof_mark(be, WK_CUDA_PROF_OTHER);
    if (n <= be->opt.gemv_max_rows && be->opt.fuse_decode && be->all_f16 &&
        be->opt.gemv_mode != WK_CUDA_GEMV_CUBLAS) {
        return enqueue_fused_layers(be, n, n_out, flash_tiles);
    }
    for (int l = 0; l < be->n_layer; l++) {
        const layer_dev *L = &be->layers[l];
        uint16_t *k_cache = be->kv + (size_t)l * 2 * be->kv_half_elems;
        uint16_t *v_cache = k_cache + be->kv_half_elems;
        /* the previous layer's down projection is added here, fused with the norm */
        CK(wk_cuda_add_rmsnorm(be->x, l == 0 ? NULL : be->tmp, L->attn_norm, NULL, n, be->n_embd,
                               be->eps, be->xn, be->stream));
        prof_mark(be, WK_CUDA_PROF_NORM);
        if ((rv = gemm(be, &L->wqkv, be->xn, n, be->qkv, 0)) != CM_OK) {
            goto fail;
        }
        prof_mark(be, WK_CUDA_PROF_GEMM);
        CK(wk_cuda_rope_store(be->qkv, L->bqkv, d_pos, d_seq, d_bt, mb, bt, &ra, n, be->q, k_cache,
                              v_cache, be->stream));
        prof_mark(be, WK_CUDA_PROF_ROPE);
        if (flash_tiles > 0) {
            CK(wk_cuda_flash_prefill(be->q, d_pos, d_seq, d_bt, k_cache, v_cache, &aa, d_tiles,
                                     flash_tiles, be->attn, be->stream));
        } else {
            CK(attention(be, d_pos, d_seq, d_bt, k_cache, v_cache, &aa, n));
        }
        prof_mark(be, WK_CUDA_PROF_ATTN);
        if ((rv = gemm(be, &L->wo, be->attn, n, be->tmp, 0)) != CM_OK) {
            goto fail;
        }
        prof_mark(be, WK_CUDA_PROF_GEMM);
        CK(wk_cuda_add_rmsnorm(be->x, be->tmp, L->ffn_norm, NULL, n, be->n_embd, be->eps, be->xn,
                               be->stream));
        prof_mark(be, WK_CUDA_PROF_NORM);
        if ((rv = gemm(be, &L->wgu, be->xn, n, be->gu, 1)) != CM_OK) {
            goto fail;
        }
        prof_mark(be, WK_CUDA_PROF_GEMM);
        CK(wk_cuda_swiglu(be->gu, n, be->n_ff, be->act, be->stream));
        prof_mark(be, WK_CUDA_PROF_SWIGLU);
        if ((rv = gemm(be, &L->wdown, be->act, n, be->tmp, 0)) != CM_OK) {
            goto fail;
        }
        prof_mark(be, WK_CUDA_PROF_GEMM);
    }
    if (n_out > 0) {
        CK(wk_cuda_add_rmsnorm(be->x, be->tmp, be->out_norm, d_out, n_out, be->n_embd, be->eps,
                               be->xn, be->stream));
        prof_mark(be, WK_CUDA_PROF_NORM);
        if ((rv = gemm(be, &be->output, be->xn, n_out, be->logits, 0)) != CM_OK) {
            goto fail;
        }
        prof_mark(be, WK_CUDA_PROF_GEMM);
    }
    return CM_OK;
fail:
    return rv;
}

/* Validates the batch against the config and the model (all of it comes from the engine, but
 * a bad id here would be an out-of-bounds device access). */
static cm_err check_batch(wk_backend *be, const wk_batch *b) {
    if (b == NULL || b->tokens == NULL || b->positions == NULL || b->seq_start == NULL ||
        b->block_table == NULL) {
        be_fail(be, "batch is missing arrays");
        return CM_ERR_INVALID;
    }
    if (b->n_seqs == 0 || b->n_seqs > be->cfg.max_seqs || b->n_tokens == 0 ||
        b->n_tokens > be->cfg.max_batch_tokens) {
        be_fail(be, "batch of %u tokens / %u sequences exceeds the limits (%u / %u)", b->n_tokens,
                b->n_seqs, be->cfg.max_batch_tokens, be->cfg.max_seqs);
        return CM_ERR_LIMIT;
    }
    if (b->seq_start[0] != 0 || b->seq_start[b->n_seqs] != b->n_tokens) {
        be_fail(be, "batch seq_start does not cover the tokens");
        return CM_ERR_INVALID;
    }
    const uint32_t mb = be->cfg.max_blocks_per_seq;
    const uint32_t btok = be->cfg.block_tokens;
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        uint32_t t0 = b->seq_start[s];
        uint32_t t1 = b->seq_start[s + 1];
        if (t1 <= t0 || t1 > b->n_tokens) {
            be_fail(be, "sequence %u has an empty or bad token range", s);
            return CM_ERR_INVALID;
        }
        for (uint32_t t = t0; t < t1; t++) {
            if (b->tokens[t] < 0 || (uint32_t)b->tokens[t] >= (uint32_t)be->n_vocab) {
                be_fail(be, "token id %d out of range", b->tokens[t]);
                return CM_ERR_INVALID;
            }
            if ((int64_t)b->positions[t] != (int64_t)b->positions[t0] + (int64_t)(t - t0) ||
                b->positions[t] < 0) {
                be_fail(be, "positions of sequence %u are not consecutive", s);
                return CM_ERR_INVALID;
            }
        }
        uint64_t last = (uint64_t)b->positions[t1 - 1];
        if (last / btok >= mb) {
            be_fail(be, "position %llu beyond the block table (%u blocks of %u)",
                    (unsigned long long)last, mb, btok);
            return CM_ERR_LIMIT;
        }
        const int32_t *row = b->block_table + (size_t)s * mb;
        for (uint64_t k = 0; k <= last / btok; k++) {
            if (row[k] < 0 || (uint32_t)row[k] >= be->cfg.n_blocks) {
                be_fail(be, "sequence %u block %llu has invalid id %d", s, (unsigned long long)k,
                        row[k]);
                return CM_ERR_INVALID;
            }
        }
    }
    return CM_OK;
}

static graph_slot *bucket_for(wk_backend *be, uint32_t n_seqs) {
    for (uint32_t i = 0; i < be->n_buckets; i++) {
        if (be->graphs[i].bucket >= n_seqs) {
            return &be->graphs[i];
        }
    }
    return NULL;
}

/* Captures (records, does not run) the decode forward for slot->bucket rows. On failure the
 * slot is marked failed and later steps of that size run eagerly. */
static void capture_graph(wk_backend *be, graph_slot *slot) {
    cudaGraph_t graph = NULL;
    int n = (int)slot->bucket;
    cudaError_t e = cudaStreamBeginCapture(be->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cm_logf(CM_LOG_WARN, NULL, "cuda backend: graph capture not started: %s",
                cudaGetErrorString(e));
        (void)cudaGetLastError();
        slot->failed = 1;
        return;
    }
    be->capturing = 1;
    cm_err rv = enqueue_forward(be, n, n, 0);
    be->capturing = 0;
    e = cudaStreamEndCapture(be->stream, &graph);
    if (rv != CM_OK || e != cudaSuccess || graph == NULL) {
        cm_logf(CM_LOG_WARN, NULL,
                "cuda backend: graph capture for bucket %d failed (%s); "
                "decode at this size runs without a graph",
                n, e != cudaSuccess ? cudaGetErrorString(e) : be->last_err);
        be->last_err[0] = '\0';
        goto fail;
    }
    e = cudaGraphInstantiate(&slot->exec, graph, 0);
    if (e != cudaSuccess) {
        cm_logf(CM_LOG_WARN, NULL, "cuda backend: graph instantiate for bucket %d failed: %s", n,
                cudaGetErrorString(e));
        slot->exec = NULL;
        goto fail;
    }
    (void)cudaGraphDestroy(graph);
    return;
fail:
    if (graph) {
        (void)cudaGraphDestroy(graph);
    }
    (void)cudaGetLastError();
    slot->failed = 1;
}

/* After a failed step: clear what can be cleared, decide whether the context is usable. */
static void after_failure(wk_backend *be) {
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(be->stream, &cs) == cudaSuccess &&
        cs != cudaStreamCaptureStatusNone) {
        cudaGraph_t g = NULL;
        (void)cudaStreamEndCapture(be->stream, &g);
        if (g) {
            (void)cudaGraphDestroy(g);
        }
    }
    (void)cudaGetLastError();
    cudaError_t e = cudaStreamSynchronize(be->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        e = cudaDeviceSynchronize();
    }
    if (e != cudaSuccess) {
        /* sticky: the context is gone until the process restarts */
        be->healthy = 0;
        cm_logf(CM_LOG_ERROR, NULL, "cuda backend: device unusable after error: %s",
                cudaGetErrorString(e));
    }
}

/* begin_step: what every step checks first (the device's health, the batch). */
static cm_err begin_step(wk_backend *be, const wk_batch *batch) {
    be->last_err[0] = '\0';
    if (!be->healthy) {
        be_fail(be, "device unhealthy after an earlier error");
        return CM_ERR_BACKEND;
    }
    return check_batch(be, batch);
}

/* step_slot: the graph bucket a step replays or captures (decode steps with graphs on, and a
 * bucket whose capture never failed), NULL for an eager, unpadded step. */
static graph_slot *step_slot(wk_backend *be, const wk_batch *batch) {
    if (batch->n_tokens != batch->n_seqs || !be->opt.use_graphs) {
        return NULL;
    }
    graph_slot *slot = bucket_for(be, batch->n_seqs);
    return slot != NULL && !slot->failed ? slot : NULL;
}

/*
 * enqueue_step runs a step's common part on a checked batch (begin_step): uploads its metadata
 * and enqueues the forward (a replay of slot's graph, or eager) up to the logits in
 * be->logits. slot is step_slot's; *capture_after whether its graph is to be captured once the
 * step is done (finish_step). Logits row of the j-th logits-wanting sequence s: s with a slot
 * (every padded row has logits), else j. Device errors: CM_ERR_BACKEND after after_failure.
 */
static cm_err enqueue_step(wk_backend *be, const wk_batch *batch, graph_slot *slot,
                           int *capture_after_out) {
    cm_err rv = CM_OK;
    *capture_after_out = 0;
    const uint32_t n_seqs = batch->n_seqs;
    const uint32_t n_tok = batch->n_tokens;
    const uint32_t mb = be->cfg.max_blocks_per_seq;
    const int decode = n_tok == n_seqs;
    int32_t *h = be->h_meta;
    int n_rows = (int)n_tok;
    int n_out = 0;
    int n_tiles = 0;
    uint32_t bt_rows = n_seqs;
    uint32_t bt_cols = 1; /* block-table columns used by the longest sequence */

    CK(cudaSetDevice(be->device));

    for (uint32_t s = 0; s < n_seqs; s++) {
        for (uint32_t t = batch->seq_start[s]; t < batch->seq_start[s + 1]; t++) {
            h[META_TOK(be) + t] = batch->tokens[t];
            h[META_POS(be) + t] = batch->positions[t];
            h[META_SEQ(be) + t] = (int32_t)s;
        }
        /* only the columns this step reads: blocks of positions [0, last] */
        uint32_t cols =
            (uint32_t)batch->positions[batch->seq_start[s + 1] - 1] / be->cfg.block_tokens + 1;
        memcpy(h + META_BT(be) + (size_t)s * mb, batch->block_table + (size_t)s * mb,
               (size_t)cols * 4);
        bt_cols = cols > bt_cols ? cols : bt_cols;
    }
    if (slot != NULL) {
        /* padded rows: token 0 at position 0 of a private sequence whose only block is the
         * scratch block, so they never touch real cache entries */
        n_rows = (int)slot->bucket;
        bt_rows = slot->bucket;
        for (uint32_t s = n_seqs; s < slot->bucket; s++) {
            h[META_TOK(be) + s] = 0;
            h[META_POS(be) + s] = 0;
            h[META_SEQ(be) + s] = (int32_t)s;
            h[META_BT(be) + (size_t)s * mb] = be->scratch_block;
        }
        for (int r = 0; r < n_rows; r++) {
            h[META_OUT(be) + r] = r;
        }
        n_out = n_rows;
    } else {
        for (uint32_t s = 0; s < n_seqs; s++) {
            if (batch->want_logits != NULL && batch->want_logits[s]) {
                h[META_OUT(be) + n_out++] = (int32_t)batch->seq_start[s + 1] - 1;
            }
        }
        if (!decode && be->opt.use_flash && wk_cuda_flash_supported(be->hd)) {
            for (uint32_t s = 0; s < n_seqs; s++) {
                for (uint32_t t = batch->seq_start[s]; t < batch->seq_start[s + 1];
                     t += WK_CUDA_FLASH_TILE) {
                    uint32_t cnt = batch->seq_start[s + 1] - t;
                    h[META_TILES(be) + 2 * n_tiles] = (int32_t)t;
                    h[META_TILES(be) + 2 * n_tiles + 1] =
                        (int32_t)(cnt < WK_CUDA_FLASH_TILE ? cnt : WK_CUDA_FLASH_TILE);
                    n_tiles++;
                }
            }
        }
    }
    /* per-token arrays in one copy; block-table rows as a pitched copy of the used columns
     * (rows are max_blocks_per_seq long, which can be thousands for long contexts) */
    CK(cudaMemcpyAsync(be->d_meta, be->h_meta, be->meta_fixed_ints * 4, cudaMemcpyHostToDevice,
                       be->stream));
    CK(cudaMemcpy2DAsync(be->d_meta + META_BT(be), (size_t)mb * 4, be->h_meta + META_BT(be),
                         (size_t)mb * 4, (size_t)bt_cols * 4, bt_rows, cudaMemcpyHostToDevice,
                         be->stream));

    /* A bucket's first step runs eagerly (which also initialises every kernel and cuBLAS
     * path it uses, so nothing lazy happens during capture); the graph is captured after it,
     * and later steps of that bucket replay it. */
    int capture_after = 0;
    if (slot != NULL && slot->exec != NULL) {
        CK(cudaGraphLaunch(slot->exec, be->stream));
    } else {
        capture_after = slot != NULL;
        if ((rv = enqueue_forward(be, n_rows, n_out, n_tiles)) != CM_OK) {
            goto fail;
        }
    }
    *capture_after_out = capture_after;
    return CM_OK;
fail:
    after_failure(be);
    return rv;
}

/* finish_step waits for the step and does what follows it: profile collection, capture. */
static cm_err finish_step(wk_backend *be, graph_slot *slot, int capture_after) {
    cm_err rv = CM_OK;
    CK(cudaStreamSynchronize(be->stream));
    if (slot == NULL || slot->exec == NULL) {
        prof_collect(be);
    }
    if (capture_after) {
        capture_graph(be, slot); /* a failed capture only means no graph for this bucket */
    }
    return CM_OK;
fail:
    after_failure(be);
    return rv;
}

static cm_err cuda_forward(wk_backend *be, const wk_batch *batch, float *logits) {
    if (be == NULL) {
        return CM_ERR_INVALID;
    }
    cm_err rv = begin_step(be, batch);
    if (rv != CM_OK) {
        return rv;
    }
    graph_slot *slot = step_slot(be, batch);
    int capture_after = 0;
    if ((rv = enqueue_step(be, batch, slot, &capture_after)) != CM_OK) {
        return rv;
    }
    const uint32_t n_seqs = batch->n_seqs;

    /* logits: row j of the device buffer is the j-th entry of META_OUT; copy runs of rows
     * that are contiguous on both sides in one call */
    if (logits != NULL && batch->want_logits != NULL) {
        const size_t row_bytes = (size_t)be->n_vocab * 4;
        int j = 0;
        uint32_t s = 0;
        while (s < n_seqs) {
            if (!batch->want_logits[s]) {
                s++;
                continue;
            }
            uint32_t run = 1;
            while (s + run < n_seqs && batch->want_logits[s + run]) {
                run++;
            }
            CK(cudaMemcpyAsync(logits + (size_t)s * be->n_vocab,
                               be->logits + (size_t)(slot != NULL ? (int)s : j) * be->n_vocab,
                               row_bytes * run, cudaMemcpyDeviceToHost, be->stream));
            j += (int)run;
            s += run;
        }
    }
    return finish_step(be, slot, capture_after);
fail:
    after_failure(be);
    return rv;
}

/* Packs in into the pinned staging, checking every bound; *n_bias and *n_pen get the totals. */
static cm_err pack_samples(wk_backend *be, const wk_batch *batch, const wk_dev_sample_in *in,
                           int slotted, uint32_t *n_bias, uint32_t *n_pen) {
    wk_cuda_sample_seq *sq = (wk_cuda_sample_seq *)be->h_samp;
    wk_cuda_sample_bias *sb = (wk_cuda_sample_bias *)(be->h_samp + be->samp_bias_off);
    wk_cuda_sample_pen *sp = (wk_cuda_sample_pen *)(be->h_samp + be->samp_pen_off);
    uint32_t j = 0, nb = 0, np = 0;
    if (be->n_vocab > WK_CUDA_SAMPLE_MAX_VOCAB) {
        be_fail(be, "forward_sample: vocabulary of %d tokens (device sampling takes up to %d)",
                be->n_vocab, WK_CUDA_SAMPLE_MAX_VOCAB);
        return CM_ERR_INVALID;
    }
    for (uint32_t s = 0; s < batch->n_seqs; s++) {
        if (batch->want_logits == NULL || !batch->want_logits[s]) {
            continue;
        }
        if (j >= in->n) {
            be_fail(be, "forward_sample: %u sampling entries for more logits rows", in->n);
            return CM_ERR_INVALID;
        }
        const wk_dev_sample_seq *d = &in->seqs[j];
        const wk_sampling_params *p = d->params;
        if (p == NULL || p->n_logit_bias > WK_MAX_LOGIT_BIAS ||
            p->top_logprobs > WK_CUDA_SAMPLE_MAX_TOP || d->n_pen > WK_DEV_SAMPLE_MAX_PENALTY ||
            (d->pen == NULL && d->n_pen > 0) ||
            (p->top_k > WK_CUDA_SAMPLE_MAX_TOP_K && p->top_k < be->n_vocab) ||
            !(d->u >= 0.0 && d->u < 1.0)) {
            be_fail(be, "forward_sample: sequence %u is outside the device sampler's bounds", s);
            return CM_ERR_INVALID;
        }
        wk_cuda_sample_seq *o = &sq[j];
        o->row = (int32_t)(slotted ? s : j);
        o->top_k = p->top_k;
        o->temperature = p->temperature;
        o->top_p = p->top_p;
        o->min_p = p->min_p;
        o->repetition_penalty = p->repetition_penalty;
        o->presence_penalty = p->presence_penalty;
        o->frequency_penalty = p->frequency_penalty;
        o->bias_off = nb;
        o->n_bias = p->n_logit_bias;
        o->pen_off = np;
        o->n_pen = d->n_pen;
        o->n_top = p->top_logprobs;
        o->want_logprob = p->logprobs ? 1u : 0u;
        o->u = d->u;
        for (uint32_t i = 0; i < p->n_logit_bias; i++, nb++) {
            const wk_logit_bias *b = &p->logit_bias[i];
            if (b->token_id < 0 || b->token_id >= be->n_vocab) {
                be_fail(be, "forward_sample: logit_bias token %d outside the vocabulary",
                        b->token_id);
                return CM_ERR_INVALID;
            }
            sb[nb].token_id = b->token_id;
            sb[nb].bias = b->bias;
        }
        for (uint32_t i = 0; i < d->n_pen; i++, np++) {
            const wk_penalty_entry *e = &d->pen[i];
            if (e->token_id < 0 || e->token_id >= be->n_vocab) {
                be_fail(be, "forward_sample: penalty token %d outside the vocabulary", e->token_id);
                return CM_ERR_INVALID;
            }
            sp[np].token_id = e->token_id;
            sp[np].n_generated = e->n_generated;
            sp[np].in_prompt = e->in_prompt ? 1u : 0u;
        }
        j++;
    }
    if (j != in->n || j == 0) {
        be_fail(be, "forward_sample: %u sampling entries for %u logits rows", in->n, j);
        return CM_ERR_INVALID;
    }
    *n_bias = nb;
    *n_pen = np;
    return CM_OK;
}

/*
 * cuda_forward_sample: the forward, then the sampling kernel on the logits rows (after the
 * graph replay, outside the graph: padded bucket rows have logits but no descriptor, so they
 * are never sampled), then only the results cross to the host. The descriptors are validated
 * and packed before anything is enqueued, so a bad input runs nothing.
 */
static cm_err cuda_forward_sample(wk_backend *be, const wk_batch *batch, const wk_dev_sample_in *in,
                                  wk_sample_result *out) {
    if (be == NULL || batch == NULL || in == NULL || out == NULL || in->seqs == NULL) {
        return CM_ERR_INVALID;
    }
    cm_err rv = begin_step(be, batch);
    if (rv != CM_OK) {
        return rv;
    }
    /* the logits rows are s with a slot (padded buckets), else j */
    graph_slot *slot = step_slot(be, batch);
    uint32_t n_bias = 0, n_pen = 0;
    if ((rv = pack_samples(be, batch, in, slot != NULL, &n_bias, &n_pen)) != CM_OK) {
        return rv;
    }
    int capture_after = 0;
    if ((rv = enqueue_step(be, batch, slot, &capture_after)) != CM_OK) {
        return rv;
    }
    const uint32_t n = in->n;
    /* only the used parts of the three descriptor arrays */
    CK(cudaMemcpyAsync(be->d_samp, be->h_samp, (size_t)n * sizeof(wk_cuda_sample_seq),
                       cudaMemcpyHostToDevice, be->stream));
    if (n_bias > 0) {
        CK(cudaMemcpyAsync(be->d_samp + be->samp_bias_off, be->h_samp + be->samp_bias_off,
                           (size_t)n_bias * sizeof(wk_cuda_sample_bias), cudaMemcpyHostToDevice,
                           be->stream));
    }
    if (n_pen > 0) {
        CK(cudaMemcpyAsync(be->d_samp + be->samp_pen_off, be->h_samp + be->samp_pen_off,
                           (size_t)n_pen * sizeof(wk_cuda_sample_pen), cudaMemcpyHostToDevice,
                           be->stream));
    }
    CK(wk_cuda_sample(be->logits, be->n_vocab, (const wk_cuda_sample_seq *)be->d_samp, (int)n,
                      (const wk_cuda_sample_bias *)(be->d_samp + be->samp_bias_off),
                      (const wk_cuda_sample_pen *)(be->d_samp + be->samp_pen_off), be->samp_work,
                      be->samp_slots, (wk_cuda_sample_out *)(be->d_samp + be->samp_out_off),
                      be->stream));
    CK(cudaMemcpyAsync(be->h_samp + be->samp_out_off, be->d_samp + be->samp_out_off,
                       (size_t)n * sizeof(wk_cuda_sample_out), cudaMemcpyDeviceToHost, be->stream));
    if ((rv = finish_step(be, slot, capture_after)) != CM_OK) {
        return rv;
    }
    const wk_cuda_sample_out *res = (const wk_cuda_sample_out *)(be->h_samp + be->samp_out_off);
    for (uint32_t j = 0; j < n; j++) {
        memset(&out[j], 0, sizeof(out[j]));
        out[j].token_id = res[j].token_id;
        out[j].logprob = res[j].logprob;
        out[j].n_top = res[j].n_top <= WK_MAX_TOP_LOGPROBS ? res[j].n_top : 0;
        for (uint32_t k = 0; k < out[j].n_top; k++) {
            out[j].top[k].token_id = res[j].top_id[k];
            out[j].top[k].logprob = res[j].top_logprob[k];
        }
    }
    return CM_OK;
fail:
    after_failure(be);
    return rv;
}

/* ---- extensions ------------------------------------------------------------------------- */

static int cuda_healthy(const wk_backend *be) {
    return be != NULL && be->healthy;
}

void wk_cuda_set_gemv_mode(wk_backend *be, wk_cuda_gemv_mode mode) {
    if (be == NULL || be->opt.gemv_mode == mode) {
        return;
    }
    be->opt.gemv_mode = mode;
    destroy_graphs(be); /* captured graphs hold the old kernels */
}

void wk_cuda_set_graphs(wk_backend *be, int on) {
    if (be == NULL) {
        return;
    }
    be->opt.use_graphs = on != 0;
    if (!on) {
        destroy_graphs(be);
    }
}

void wk_cuda_set_fuse(wk_backend *be, int on) {
    if (be == NULL || be->opt.fuse_decode == (on != 0)) {
        return;
    }
    be->opt.fuse_decode = on != 0;
    destroy_graphs(be); /* captured graphs hold the other kernel sequence */
}

void wk_cuda_set_gemv_max_rows(wk_backend *be, int rows) {
    if (be == NULL) {
        return;
    }
    rows = rows < 0 ? 0 : rows > WK_CUDA_GEMV_MAX_TOK ? WK_CUDA_GEMV_MAX_TOK : rows;
    if (rows != be->opt.gemv_max_rows) {
        be->opt.gemv_max_rows = rows;
        destroy_graphs(be);
    }
}

void wk_cuda_set_pdl(wk_backend *be, int on) {
    if (be == NULL || be->opt.use_pdl == (on != 0)) {
        return;
    }
    be->opt.use_pdl = on != 0;
    destroy_graphs(be); /* captured launches keep the mode they were recorded with */
}

cm_err wk_cuda_set_profile(wk_backend *be, int on) {
    if (be == NULL) {
        return CM_ERR_INVALID;
    }
    if (on && be->prof_ev == NULL) {
        int cap = 16 * be->n_layer + 16;
        be->prof_ev = calloc((size_t)cap, sizeof(*be->prof_ev));
        be->prof_cat = calloc((size_t)cap, sizeof(*be->prof_cat));
        if (be->prof_ev == NULL || be->prof_cat == NULL) {
            return CM_ERR_NOMEM;
        }
        for (int i = 0; i < cap; i++) {
            if (cudaEventCreate(&be->prof_ev[i]) != cudaSuccess) {
                (void)cudaGetLastError();
                be->prof_cap = i; /* the ones created are freed at destroy */
                return CM_ERR_BACKEND;
            }
        }
        be->prof_cap = cap;
    }
    be->prof_on = on != 0;
    be->prof_ops = 0;
    return CM_OK;
}

int wk_cuda_get_profile(const wk_backend *be, double *ms) {
    if (be == NULL || ms == NULL) {
        return 0;
    }
    for (int i = 0; i < WK_CUDA_PROF_N; i++) {
        ms[i] = be->prof_ops > 0 ? be->prof_ms[i] : 0.0;
    }
    return be->prof_ops;
}

void wk_cuda_set_flash(wk_backend *be, int on) {
    if (be != NULL) {
        be->opt.use_flash = on != 0;
    }
}

cm_err wk_cuda_get_info(const wk_backend *be, wk_cuda_info *info) {
    if (be == NULL || info == NULL) {
        return CM_ERR_INVALID;
    }
    memset(info, 0, sizeof(*info));
    struct cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, be->device);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return CM_ERR_BACKEND;
    }
    snprintf(info->device_name, sizeof(info->device_name), "%s", prop.name);
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    info->sm_count = prop.multiProcessorCount;
    info->weight_bytes_device = be->weight_read_bytes;
    info->kv_bytes_device = be->kv_bytes;
    info->scratch_bytes_device = be->scratch_bytes;
    for (uint32_t i = 0; i < be->n_buckets; i++) {
        if (be->graphs[i].exec != NULL) {
            info->graph_buckets++;
        }
    }
    info->graph_max_bucket = be->opt.use_graphs ? be->graphs[be->n_buckets - 1].bucket : 0;
    info->fuse_decode = be->opt.fuse_decode;
    info->use_pdl = be->opt.use_pdl;
    info->gemv_max_rows = be->opt.gemv_max_rows;
    info->weights_native = be->native;
    info->weight_arena_bytes = be->warena_bytes;
    info->weight_quant_bytes = be->weight_q_bytes;
    info->dequant_tile_bytes = be->wdeq_elems * 2;
    info->qgemv_max_rows = be->opt.qgemv_max_rows;
    return CM_OK;
}

const char *wk_cuda_last_error(const wk_backend *be) {
    return be ? be->last_err : "";
}

const wk_backend_ops wk_backend_cuda = {
    .name = "cuda",
    .create = cuda_create,
    .destroy = cuda_destroy,
    .forward = cuda_forward,
    .forward_sample = cuda_forward_sample,
    .free_memory = cuda_free_memory,
    .healthy = cuda_healthy,
};
