/*
 * wk_cuda_ops: the CUDA kernels of the CUDA backend, behind plain C launchers so that the
 * backend (cuda_backend.c, C) and the GPU op tests (tests/gpu, C) can call them.
 *
 * Conventions for every launcher:
 *   - all tensor pointers are DEVICE pointers; "f16" buffers are IEEE binary16 stored as
 *     uint16_t (the C side never does arithmetic on them);
 *   - shapes are given as (rows, cols) row-major, cols contiguous;
 *   - the launch goes to `stream` (NULL = the legacy default stream) and is asynchronous;
 *   - the return value is the cudaError_t of the launch (cudaSuccess = 0); asynchronous
 *     execution errors surface at the next synchronisation, as with any CUDA call.
 * Launchers never allocate and are safe to call while a stream is being captured into a CUDA
 * graph (decode steps are captured).
 *
 * Paged KV cache layout (f16), per layer and for K and V separately:
 *   cache[block][kv_head][slot][dim]   i.e. (n_blocks, n_head_kv, block_tokens, head_dim)
 * A token at position p of a sequence whose block-table row is bt_row lives in block
 * bt_row[p / block_tokens], slot p % block_tokens.
 *
 * Per-token metadata (device int32 arrays of length n_tokens):
 *   tok_pos[t] : absolute position of token t
 *   tok_seq[t] : index of t's sequence, i.e. its row in block_table (n_seqs, max_blocks)
 */
#ifndef WK_CUDA_OPS_H
#define WK_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Programmatic dependent launch (sm_90+). When on, the decode-path kernels (embedding, norms,
 * RoPE/KV store, attention, SwiGLU, GEMVs) are launched so that each may be scheduled while
 * its predecessor drains: every kernel waits (griddepcontrol.wait) before reading what earlier
 * kernels wrote, and the GEMVs stream their first weight chunks before that wait, hiding the
 * kernel-boundary bubble that dominates small decode steps. Process-wide switch (a hardware
 * feature flag, not per-instance state): set it while no launch is in flight; default off.
 * Launches recorded into a CUDA graph keep the mode they were captured with.
 */
void wk_cuda_ops_set_pdl(int on);
int wk_cuda_ops_pdl(void);

/* Head dimensions the attention kernels are compiled for. */
int wk_cuda_head_dim_supported(int head_dim);

/* out (n, n_embd) f32 = table[ids[i]] (table: (n_vocab, n_embd) f16). ids must be < n_vocab
 * (checked by the caller on the host). */
cudaError_t wk_cuda_embed(const uint16_t *table, const int32_t *ids, int n, int n_embd, float *out,
                          cudaStream_t stream);

/*
 * Fused residual add + RMSNorm. For each output row r (0 <= r < n_out), with
 * src = rows ? rows[r] : r:
 *   if add: x[src] += add[src]          (x and add are (*, n) f32; x is updated in place)
 *   out[r] = f16( x[src] / sqrt(mean(x[src]^2) + eps) * w )      (out: (n_out, n) f16)
 * Rows of x not selected by `rows` are left untouched (their add is skipped too).
 */
cudaError_t wk_cuda_add_rmsnorm(float *x, const float *add, const float *w, const int32_t *rows,
                                int n_out, int n, float eps, uint16_t *out, cudaStream_t stream);

/* RoPE / KV-store parameters shared by the fused kernel below. */
typedef struct wk_cuda_rope_args {
    int n_head;    /* query heads */
    int n_head_kv; /* key/value heads */
    int head_dim;
    int n_rot;             /* rotated dims per head (even, <= head_dim) */
    int neox;              /* 0 = NORM (adjacent pairs), 1 = NEOX (halves) */
    const float *inv_freq; /* (n_rot / 2) device: frequency of pair i, scaling folded in */
} wk_cuda_rope_args;

/*
 * After the fused QKV projection: add the optional bias, rotate q and k, write q to q_out and
 * k, v into the paged cache.
 *   qkv      (n_tok, (n_head + 2 n_head_kv) head_dim) f32: [q heads | k heads | v heads]
 *   bias     ((n_head + 2 n_head_kv) head_dim) f32 or NULL
 *   q_out    (n_tok, n_head head_dim) f32
 *   k_cache, v_cache: this layer's caches (layout above)
 */
cudaError_t wk_cuda_rope_store(const float *qkv, const float *bias, const int32_t *tok_pos,
                               const int32_t *tok_seq, const int32_t *block_table, int max_blocks,
                               int block_tokens, const wk_cuda_rope_args *ra, int n_tok,
                               float *q_out, uint16_t *k_cache, uint16_t *v_cache,
                               cudaStream_t stream);

/*
 * Causal attention over the paged cache, one query row per token (works for decode and for
 * prefill; each token t attends keys at positions [0, tok_pos[t]] of its sequence, which must
 * all be in the cache already, including t's own K/V). GQA: query head h reads kv head
 * h / (n_head / n_head_kv).
 *   q   (n_tok, n_head head_dim) f32 (already rotated)
 *   out (n_tok, n_head head_dim) f16
 * scale is usually 1/sqrt(head_dim).
 */
typedef struct wk_cuda_attn_args {
    int n_head;
    int n_head_kv;
    int head_dim;
    int block_tokens;
    int max_blocks; /* block_table row length */
    float scale;
} wk_cuda_attn_args;

cudaError_t wk_cuda_attention(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                              const int32_t *block_table, const uint16_t *k_cache,
                              const uint16_t *v_cache, const wk_cuda_attn_args *aa, int n_tok,
                              uint16_t *out, cudaStream_t stream);

/*
 * The same attention split over the context (flash-decoding) for small decode batches: block
 * (t, h, z) takes the z-th of `splits` chunks of t's keys and writes an unnormalised partial
 * (m, l, acc[head_dim]) to part, then a combine kernel writes out. part: (n_tok, n_head,
 * splits, head_dim + 2) f32 scratch. 1 <= splits <= WK_CUDA_ATTN_MAX_SPLITS.
 */
#define WK_CUDA_ATTN_MAX_SPLITS 64
cudaError_t wk_cuda_attention_split(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                                    const int32_t *block_table, const uint16_t *k_cache,
                                    const uint16_t *v_cache, const wk_cuda_attn_args *aa, int n_tok,
                                    int splits, float *part, uint16_t *out, cudaStream_t stream);

/*
 * Prefill attention, flash-style: query tiles of WK_CUDA_FLASH_TILE tokens of one sequence
 * against key tiles of the paged cache, online softmax, tensor cores (sm_80+). Same contract
 * as wk_cuda_attention, plus a tile list built by the caller:
 *   tiles (n_tiles, 2) int32: (first token index t0 of the tile, number of tokens in it
 *   (1..WK_CUDA_FLASH_TILE)); all tokens of a tile belong to one sequence and have
 *   consecutive positions tok_pos[t0], tok_pos[t0] + 1, ...
 * Supports head_dim 64 and 128 (wk_cuda_flash_supported); others use wk_cuda_attention.
 */
#define WK_CUDA_FLASH_TILE 64
int wk_cuda_flash_supported(int head_dim);
cudaError_t wk_cuda_flash_prefill(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                                  const int32_t *block_table, const uint16_t *k_cache,
                                  const uint16_t *v_cache, const wk_cuda_attn_args *aa,
                                  const int32_t *tiles, int n_tiles, uint16_t *out,
                                  cudaStream_t stream);

/* out (n, n_ff) f16 = silu(gu[:, :n_ff]) * gu[:, n_ff:]   (gu: (n, 2 n_ff) f16) */
cudaError_t wk_cuda_swiglu(const uint16_t *gu, int n, int n_ff, uint16_t *out, cudaStream_t stream);

/* Element conversions (n elements): f32 -> f16 (round to nearest, saturating to +-65504),
 * bf16 -> f16 (same), f16 -> f32. */
cudaError_t wk_cuda_f32_to_f16(const float *src, uint16_t *dst, int64_t n, cudaStream_t stream);
cudaError_t wk_cuda_bf16_to_f16(const uint16_t *src, uint16_t *dst, int64_t n, cudaStream_t stream);
cudaError_t wk_cuda_f16_to_f32(const uint16_t *src, float *dst, int64_t n, cudaStream_t stream);

/* Synthetic weights on the device: dst[i] = f16(uniform(-amp, amp)) from a hash of (seed, i);
 * wk_cuda_fill_f32 sets n floats to value. */
cudaError_t wk_cuda_fill_random_f16(uint16_t *dst, int64_t n, float amp, uint64_t seed,
                                    cudaStream_t stream);
cudaError_t wk_cuda_fill_f32(float *dst, int64_t n, float value, cudaStream_t stream);

/* Read-bandwidth probe: reads n 16-byte words and writes one partial sum per block into sink
 * (at least 1024 floats); used by the benchmark only. */
cudaError_t wk_cuda_read_probe(const void *src, int64_t n16, float *sink, cudaStream_t stream);

/*
 * Skinny matrix product for decode: y (n_tok, n_out) = x (n_tok, n_in) . W^T with W
 * (n_out, n_in) f16 row-major, x f16, y f32 or f16 (y_f16 = 1). For 1 <= n_tok <= 8; n_in a
 * multiple of 8. Bandwidth-oriented (each warp streams weight rows once for all tokens).
 */
#define WK_CUDA_GEMV_MAX_TOK 8
cudaError_t wk_cuda_gemv(const uint16_t *w, const uint16_t *x, int n_tok, int n_in, int n_out,
                         void *y, int y_f16, cudaStream_t stream);

/*
 * Fused skinny GEMV for decode steps (cuda_gemv_fused.cu): y = op_x(x) . W^T with the input
 * transform and the output mode folded into the GEMV, saving the separate norm / SwiGLU /
 * residual-add kernels (3 launches per layer):
 *   x_mode WK_CUDA_X_F16:     x (n_tok, n_in) f16, used as is
 *   x_mode WK_CUDA_X_RMSNORM: x (n_tok, n_in) f32, input = x / sqrt(mean(x^2) + eps) * norm_w
 *                             (norm_w: (n_in) f32; each block recomputes the row norms)
 *   x_mode WK_CUDA_X_SWIGLU:  x (n_tok, 2 n_in) f16 [gate | up], input = silu(gate) * up
 *   y_mode WK_CUDA_Y_F32 / WK_CUDA_Y_F16: y (n_tok, n_out) written
 *   y_mode WK_CUDA_Y_ADD_F32: y (n_tok, n_out) f32, y += result (residual add; every element is
 *                             owned by exactly one warp, so no atomics)
 * Compiled combinations (x_mode, y_mode): (RMSNORM, F32), (RMSNORM, F16), (F16, ADD_F32),
 * (SWIGLU, ADD_F32); any other returns cudaErrorInvalidValue. 1 <= n_tok <=
 * WK_CUDA_GEMV_MAX_TOK, n_in a multiple of 8, x/y/norm_w 16-byte aligned.
 */
enum { WK_CUDA_X_F16 = 0, WK_CUDA_X_RMSNORM = 1, WK_CUDA_X_SWIGLU = 2 };
enum { WK_CUDA_Y_F32 = 0, WK_CUDA_Y_F16 = 1, WK_CUDA_Y_ADD_F32 = 2 };
cudaError_t wk_cuda_gemv_fused(const uint16_t *w, const void *x, int x_mode, const float *norm_w,
                               float eps, int n_tok, int n_in, int n_out, void *y, int y_mode,
                               cudaStream_t stream);

/*
 * Quantized weights kept in the device layout of cuda_qweight.h (cuda_qgemv.cu). A matrix of
 * n_out rows and n_in columns is three device arrays; kind is a wk_cuda_qkind other than NONE.
 */
typedef struct wk_cuda_qmat {
    int kind;           /* wk_cuda_qkind */
    const uint8_t *qs;  /* (n_out, qs row bytes), 16-byte aligned */
    const uint8_t *sc;  /* (n_out, sc row bytes), 4-byte aligned */
    const uint8_t *sup; /* (n_out, sup row bytes), 4-byte aligned; NULL for kinds without */
} wk_cuda_qmat;

/*
 * Decode GEMV over a quantized matrix: y[t * ldy + r] = sum_i W[r][i] x[t][i] for the n_tok
 * (1..WK_CUDA_GEMV_MAX_TOK) token rows of x ((n_tok, n_in) f16, 16-byte aligned), y f32 or f16
 * (y_f16 = 1); ldy >= n_out lets a part of a fused matrix write its columns of a wider output.
 * Each weight byte is read once for all tokens; W's values are the reference dequantizer's.
 * cudaErrorInvalidValue for a bad kind, n_in that does not fit it, or bad sizes.
 */
cudaError_t wk_cuda_qgemv(const wk_cuda_qmat *w, const uint16_t *x, int n_tok, int n_in, int n_out,
                          void *y, int ldy, int y_f16, cudaStream_t stream);

/*
 * Rows [row0, row0 + n_rows) of a quantized matrix as f16 (saturating to +-65504, like the f16
 * weight path) into dst ((n_rows, n_in) f16, 16-byte aligned): the tile that cuBLAS
 * multiplies for prefill and large batches. Same errors as wk_cuda_qgemv.
 */
cudaError_t wk_cuda_qdequant_f16(const wk_cuda_qmat *w, int row0, int n_rows, int n_in,
                                 uint16_t *dst, cudaStream_t stream);

/*
 * Sampling on the device (cuda_sample.cu): per sequence, the steps of the host reference
 * wk_sampler_sample_sparse (worker/sampler.h) on one logits row, in place: logit_bias (in list
 * order), repetition then presence/frequency penalties over a sparse list of distinct tokens,
 * the maximum (NaN counts as -inf; ties to the lowest id), logprobs and the top n over the
 * biased and penalised row, then greedy (temperature 0) or temperature, top-k, top-p, min-p and
 * the inverse-CDF pick with u over the candidates in the host sampler's order (top-k: the order
 * its size-k heap leaves them; top-p: the whole buckets above the edge in input order, then the
 * edge bucket by weight, descending). Float steps round as on the host (no fused multiply-add);
 * sums are in double but in another order, and expf/logf differ from the host's by an ulp or
 * two, so a token can differ from the host's only where u falls within rounding of a boundary.
 * One block per sequence (a grid-stride loop over sequences when there are more than work
 * slots); each block uses one work slot of wk_cuda_sample_work_bytes.
 */
#define WK_CUDA_SAMPLE_MAX_TOP 20     /* top logprobs (WK_MAX_TOP_LOGPROBS) */
#define WK_CUDA_SAMPLE_MAX_TOP_K 1024 /* top_k in (0, n_vocab) beyond this: not supported */
#define WK_CUDA_SAMPLE_MAX_VOCAB 524288

typedef struct wk_cuda_sample_seq {
    int32_t row;       /* row of the logits buffer ((rows, n_vocab) f32) */
    int32_t top_k;     /* <= 0 or >= n_vocab: off; else <= WK_CUDA_SAMPLE_MAX_TOP_K */
    float temperature; /* 0 = greedy */
    float top_p;       /* (0, 1]; 1 = off */
    float min_p;       /* [0, 1]; 0 = off */
    float repetition_penalty, presence_penalty, frequency_penalty;
    uint32_t bias_off; /* first entry of this sequence's logit_bias list */
    uint32_t n_bias;
    uint32_t pen_off;      /* first entry of this sequence's penalty list */
    uint32_t n_pen;        /* distinct tokens (each at most once) */
    uint32_t n_top;        /* top logprobs wanted, <= WK_CUDA_SAMPLE_MAX_TOP */
    uint32_t want_logprob; /* 1: logprob of the chosen token */
    double u;              /* [0, 1), the sequence's uniform (temperature > 0) */
} wk_cuda_sample_seq;

typedef struct wk_cuda_sample_bias {
    int32_t token_id; /* < n_vocab (checked on the host) */
    float bias;
} wk_cuda_sample_bias;

typedef struct wk_cuda_sample_pen {
    int32_t token_id;     /* < n_vocab (checked on the host) */
    uint32_t n_generated; /* occurrences among the generated tokens */
    uint32_t in_prompt;   /* 1: occurs in the prompt */
} wk_cuda_sample_pen;

typedef struct wk_cuda_sample_out {
    int32_t token_id; /* -1: no token possible (every logit -inf or NaN) */
    float logprob;    /* when want_logprob or n_top */
    uint32_t n_top;
    int32_t top_id[WK_CUDA_SAMPLE_MAX_TOP]; /* by logprob descending, ties by id */
    float top_logprob[WK_CUDA_SAMPLE_MAX_TOP];
} wk_cuda_sample_out;

/* Bytes of one work slot for n_vocab (the edge bucket's sort space). */
size_t wk_cuda_sample_work_bytes(int n_vocab);

/*
 * Samples n_seqs sequences: seqs, bias, pen and out are device arrays; logits rows are modified
 * in place. work holds n_work slots of wk_cuda_sample_work_bytes(n_vocab) bytes (at most n_work
 * blocks run). cudaErrorInvalidValue for n_seqs < 1, n_work < 1 or n_vocab outside
 * [1, WK_CUDA_SAMPLE_MAX_VOCAB]. Bounds inside the descriptors are the caller's to check.
 */
cudaError_t wk_cuda_sample(float *logits, int n_vocab, const wk_cuda_sample_seq *seqs, int n_seqs,
                           const wk_cuda_sample_bias *bias, const wk_cuda_sample_pen *pen,
                           void *work, int n_work, wk_cuda_sample_out *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* WK_CUDA_OPS_H */
