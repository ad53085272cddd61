/*
 * cpu_ops: plain, single-threaded reference implementations of the forward pass's ops.
 *
 * They define what every backend must compute: the CUDA backend's kernels are checked
 * against them on random inputs, and the CPU backend's fast paths are checked against them
 * in tests. Correctness over speed; no allocation except where noted; thread-safe (no state).
 */
#ifndef WK_CPU_OPS_H
#define WK_CPU_OPS_H

#include <stdint.h>

#include "model.h"

/* out = x / sqrt(mean(x^2) + eps) * w. x, w, out: (n). out may alias x. */
void wk_cpu_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* Rotary embedding in place on x: (n_heads, head_dim), token at absolute position pos, with
 * hp's rope style (NORM: pairs (2i, 2i+1); NEOX: pairs (i, i + head_dim/2)), base and
 * scaling (linear: pos / factor; llama3: frequency-dependent), at the frequencies of
 * wk_rope_inv_freq (worker/model.h). */
void wk_cpu_rope(float *x, int n_heads, int head_dim, int32_t pos, const wk_hparams *hp);

/* out = silu(gate) * up, silu(g) = g / (1 + exp(-g)). All (n); out may alias either input. */
void wk_cpu_swiglu(float *out, const float *gate, const float *up, int64_t n);

/* out = gelu_tanh(gate) * up, gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
 * (the "approximate" GELU of Gemma). All (n); out may alias either input. */
void wk_cpu_gelu_tanh_mul(float *out, const float *gate, const float *up, int64_t n);

/* Soft-capping in place: x = cap * tanh(x / cap) over x: (n); cap > 0. */
void wk_cpu_softcap(float *x, int64_t n, float cap);

/* Numerically stable softmax in place over x: (n), n >= 1. */
void wk_cpu_softmax(float *x, int64_t n);

/* y = x W^T for each token: x: (n_tok, w->ne[0]) f32, y: (n_tok, w->ne[1]) f32. Dequantizes
 * one row at a time (allocates one row buffer; on allocation failure y is zero-filled), f32
 * accumulation in double for a stable reference. */
void wk_cpu_matmul_ref(const wk_tensor *w, const float *x, float *y, int n_tok);

/* out: (n, n_embd): row i = dequantized row ids[i] of tok_embd (n_vocab, n_embd). ids must be
 * < tok_embd->ne[1] (the caller checks). */
void wk_cpu_embed(const wk_tensor *tok_embd, const int32_t *ids, int n, float *out);

#endif /* WK_CPU_OPS_H */
