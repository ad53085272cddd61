/*
 * cpu_kernels: the CPU backend's inner loops. Activations are quantized once per matmul to
 * 8-bit blocks (wk_cpu_q8 below) and dotted with quantized weight rows using integer products;
 * types without a fused kernel are dequantized to f32 first. Every kernel has a portable
 * scalar version and an AVX2/FMA/F16C version (AVX-512 VNNI for Q4_1/Q8_0 where present)
 * chosen at run time by wk_cpu_kernels_init; wk_cpu_kernels_use lets tests compare them.
 *
 * All functions are thread-safe (no state after init) and allocate nothing.
 */
#ifndef WK_CPU_KERNELS_H
#define WK_CPU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant.h"

#define WK_CPU_QK 32

/* One block of 32 activations: x[i] ~= d * qs[i]; s = d * sum(qs) (used by Q4_0/Q4_1). */
typedef struct wk_cpu_q8 {
    float d;
    float s;
    int8_t qs[WK_CPU_QK];
} wk_cpu_q8;

/* The kernels load (d, s) together as one 8-byte value. */
_Static_assert(offsetof(wk_cpu_q8, s) == offsetof(wk_cpu_q8, d) + sizeof(float),
               "wk_cpu_q8: s must follow d");

typedef enum wk_cpu_isa {
    WK_CPU_ISA_SCALAR = 0, /* portable C */
    WK_CPU_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    WK_CPU_ISA_AVX512 = 2, /* AVX2 set plus AVX-512 F/BW/VL/VNNI kernels for Q4_1 and Q8_0 */
} wk_cpu_isa;

/* wk_cpu_kernels_init picks the best implementations the CPU supports, capped by the
 * environment variable SLUICE_CPU_KERNELS=scalar|avx2|avx512 when set. Idempotent and
 * thread-safe; later calls change nothing. */
void wk_cpu_kernels_init(void);

/* wk_cpu_kernels_use switches to level (clamped to what the CPU supports) and returns the
 * level in effect. For tests and benchmarks: must not run while a backend computes. */
wk_cpu_isa wk_cpu_kernels_use(wk_cpu_isa level);

/* The level in effect. */
wk_cpu_isa wk_cpu_kernels_isa(void);

/* wk_cpu_fused_type: true when weights of type t dot directly with wk_cpu_q8 activations. */
bool wk_cpu_fused_type(wk_dtype t);

/* Quantizes x: (n) (n a multiple of 32) into n/32 blocks. */
void wk_cpu_quantize_q8(const float *x, wk_cpu_q8 *y, int64_t n);

/* Dot product of one weight row (type t, n elements) with quantized activations (n/32
 * blocks). Only for wk_cpu_fused_type(t). */
float wk_cpu_dot_q8(wk_dtype t, const void *wrow, const wk_cpu_q8 *x, int64_t n);

/* A fused dot kernel: one weight row of type t (n elements) with quantized activations. */
typedef float (*wk_cpu_dot_q8_fn)(const void *wrow, const wk_cpu_q8 *x, int64_t n);

/* wk_cpu_dot_q8_kernel returns the kernel wk_cpu_dot_q8 uses for t (NULL unless wk_cpu_fused_type),
 * for loops that call it per row without the dispatch. */
wk_cpu_dot_q8_fn wk_cpu_dot_q8_kernel(wk_dtype t);

/* Dot products of one weight row with n_tok activation rows at once (row reuse for batches):
 * out[k * out_stride] = dot(wrow, x + k * x_stride_blocks) for k < n_tok. */
void wk_cpu_dot_q8_multi(wk_dtype t, const void *wrow, const wk_cpu_q8 *x, size_t x_stride_blocks,
                         int n_tok, float *out, size_t out_stride, int64_t n);

/*
 * Packed activations for the register-tiled kernels (wk_cpu_packed_type). Per token, blocks
 * go in groups of four (a short last group is padded with zero blocks), 256 bytes each:
 *   int8 lo[4][16]   bytes 0..15 of blocks 4g .. 4g + 3
 *   int8 hi[4][16]   bytes 16..31
 *   float dx[16]     d of block 4g + l in lanes 4l .. 4l + 3
 *   int32 corr[16]   128 * the sum of the bytes that dot lane 4l + j sees (for Q8_0)
 * then float sx[4] per group (s of each block, for Q4_1). With this layout the two integer
 * halves of four blocks land in the same 16 lanes, so a token costs two dot instructions, one
 * conversion and two multiply-adds per four blocks, while the weight group is unpacked once
 * for every token of a tile.
 */

/* Bytes of one token's packed activations for n inputs (n a multiple of 32); a multiple of
 * 64. */
size_t wk_cpu_q8_packed_bytes(int64_t n);

/* wk_cpu_packed_type: true when the level in effect has a packed tile kernel for weights of
 * type t (then every matmul over t should use it, one token or many, so that results do not
 * depend on the batch). */
bool wk_cpu_packed_type(wk_dtype t);

/* Packs x: (n / 32 blocks) into dst (wk_cpu_q8_packed_bytes(n) bytes, 64-byte aligned). */
void wk_cpu_pack_q8(const wk_cpu_q8 *x, int64_t n, void *dst);

/* out[k * out_stride] = dot(wrow, token k) for k < n_tok, token k's packed activations at
 * xp + k * xp_stride_bytes. Only for wk_cpu_packed_type(t). The result for a token is
 * bit-identical whatever n_tok and the token's place in it. */
void wk_cpu_dot_q8p_multi(wk_dtype t, const void *wrow, const void *xp, size_t xp_stride_bytes,
                          int n_tok, float *out, size_t out_stride, int64_t n);

/* The kernel wk_cpu_dot_q8p_multi uses for t (NULL unless wk_cpu_packed_type), for loops
 * that call it per row without the dispatch. */
typedef void (*wk_cpu_dot_q8p_fn)(const void *wrow, const void *xp, size_t xp_stride_bytes,
                                  int n_tok, float *out, size_t out_stride, int64_t n);
wk_cpu_dot_q8p_fn wk_cpu_dot_q8p_kernel(wk_dtype t);

/* In-place softmax of x: (n), n >= 1, as wk_cpu_softmax but vectorized (exp as in
 * wk_cpu_silu_mul, float sums). The result for an element depends only on x and n. */
void wk_cpu_softmax_fast(float *x, int64_t n);

/* f32 dot of (n). */
float wk_cpu_dot_f32(const float *a, const float *b, int64_t n);

/* Converts n f16 values to f32 / f32 to f16. */
void wk_cpu_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n);
void wk_cpu_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n);

/* out = silu(gate) * up over (n), as wk_cpu_swiglu but with a vectorized exp (relative error
 * ~1e-7). out may alias gate or up. */
void wk_cpu_silu_mul(float *out, const float *gate, const float *up, int64_t n);

/* out = gelu_tanh(gate) * up over (n), as wk_cpu_gelu_tanh_mul but as g / (1 + e^(-2u)) with the
 * vectorized exp (within ~1e-6 of it; more exact where 1 + tanh(u) cancels). out may alias. */
void wk_cpu_gelu_mul(float *out, const float *gate, const float *up, int64_t n);

/* x = cap tanh(x / cap) over (n), as wk_cpu_softcap but with the vectorized exp (within ~1e-6
 * cap of it). */
void wk_cpu_softcap_fast(float *x, int64_t n, float cap);

/* y[i] += a * x[i] over (n); x f32 or f16. */
void wk_cpu_axpy_f32(float *y, float a, const float *x, int64_t n);
void wk_cpu_axpy_f16(float *y, float a, const uint16_t *x, int64_t n);

/* dot of f32 a with f16 b over (n). */
float wk_cpu_dot_f32_f16(const float *a, const uint16_t *b, int64_t n);

/* Reads the n bytes at p with plain loads only (32-byte ones from the AVX2 level up) and
 * returns a value depending on all of them: a memory bandwidth probe. */
uint64_t wk_cpu_read_bytes(const void *p, size_t n);

#endif /* WK_CPU_KERNELS_H */
