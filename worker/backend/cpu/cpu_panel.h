/*
 * cpu_panel: quantized weights repacked at load into panels of 16 rows, for matmul kernels
 * that multiply a whole panel with a tile of tokens (AVX-512 VNNI; AVX2).
 *
 * In the GGUF layout a row's blocks follow one another, so an integer dot instruction can only
 * combine inputs of one row and the tokens of a batch each redo the per-block scale work on a
 * horizontal layout. A panel puts, for every 32-input block, 4 consecutive inputs of 16 rows
 * side by side in one 64-byte vector: one vpdpbusd then multiplies them with 4 activation
 * bytes of a token broadcast to every lane, the 16 row sums stay in 16 lanes, and the block's
 * 16 row scales are one vector. Per token and block that is 8 dot instructions and 4 vector
 * operations for 512 products, while the weight vectors are unpacked once for a tile of up to
 * 8 tokens held in registers. A matmul of one token (decode) takes the same kernel at
 * AVX-512; at AVX2 a kernel of its own that streams the panel once and computes exactly what
 * the tiles compute for the token, so at both levels a token's result never depends on its
 * batch.
 *
 * Panel-block layouts (one per 16 rows x 32 inputs; a panel is the row's blocks in order):
 *   Q4_0, Q4_1 (320 bytes): uint8 q[4][16][4]: byte e of row r in vector j is the block's
 *     packed byte 4j + e (low nibble input 4j + e, high nibble input 16 + 4j + e);
 *     f16 d[16]; f16 m[16] (Q4_0: m = -8 d, so one kernel serves both)
 *   Q8_0 (544 bytes): uint8 q[8][16][4]: input 4j + e of row r, plus 128 (vpdpbusd wants
 *     unsigned weights; the activations' correction wk_cpu_q8_corr undoes it exactly);
 *     f16 d[16].
 *   IQ4_NL (288 bytes): the Q4 panels' uint8 q[4][16][4] of 4-bit grid indices; f16 d[16]
 *     (the kernels look the indices up in wk_iq4_grid with one byte shuffle per vector and
 *     then run as the Q8_0 kernels, correction included).
 * Panels take the bytes the rows take in GGUF (Q4_0: 320 vs 288).
 *
 *   F16 (1024 bytes): f16 w[32][16]: input i of row r at 16 i + r; these panels multiply
 *     f32 activations (wk_cpu_panel_in.xf), as the F16 row path does.
 *   F32 (2048 bytes): f32 w[32][16], the same order, also against f32 activations (BF16 has
 *     no panels: these would double its bytes). The AVX2 kernel keeps one
 *     accumulator per token and 8 rows over the inputs in order (tiles of 4 tokens), the
 *     AVX-512 one F16's four per token.
 * Which layout a type takes and how is its traits row in quant.c. Converted while packing:
 *   exactly, the same values: Q5_0 (q - 16) and Q3_K (scale * value, 8-bit integers per 16;
 *     a block holding -32 * -4 = 128 is requantized) into Q8_0 panels;
 *   scales rounded to f16 (relative error <= 2^-11 each), the same 4-bit values: Q4_K into
 *     Q4_1 panels (per 32-input sub-block scale and min), IQ4_XS into IQ4 panels (per 32);
 *   requantized to 8 bits per 32 inputs (as the activations are): Q5_K, Q6_K, Q5_1 (its
 *     offset has no place in Q8_0 panels), Q2_K (a min per 16) into Q8_0 panels.
 * Q8_0 panels take 8.5 bits per weight (5.5 for Q5_0, 2.6 for Q2_K, 3.4 for Q3_K in GGUF):
 * decode reads more bytes for these types than their files hold.
 */
#ifndef WK_CPU_PANEL_H
#define WK_CPU_PANEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant.h"
#include "cpu_kernels.h"

#define WK_CPU_PANEL_ROWS 16

/* wk_cpu_panel_type: true when the kernel level in effect has panel kernels for weights of
 * type t: the types whose traits row (quant.h) names a panel_from, at WK_CPU_ISA_AVX512
 * (vpdpbusd, 16 rows per instruction) and at WK_CPU_ISA_AVX2 (vpmaddubsw, two halves of 8
 * rows). */
bool wk_cpu_panel_type(wk_dtype t);

/* wk_cpu_panel_kind: the panel layout weights of type t are packed into (its traits row's
 * panel_kind): WK_DTYPE_Q8_0, WK_DTYPE_IQ4_NL, WK_DTYPE_F16 or WK_DTYPE_F32 (both with f32
 * activations) or
 * WK_DTYPE_Q4_1 (also for types without panels). */
wk_dtype wk_cpu_panel_kind(wk_dtype t);

/* wk_cpu_panel_needs_corr: true when the panels of type t read the activations' Q8_0
 * correction (wk_cpu_panel_in.corr, from wk_cpu_q8_corr): Q8_0 and IQ4 panels. */
bool wk_cpu_panel_needs_corr(wk_dtype t);

/* wk_cpu_panel_packable: true when a (rows, n) weight of type t can be repacked (t a panel
 * type at some level, n whole blocks of t and a multiple of 32). Independent of the level in
 * effect. A last partial panel (rows not a multiple of 16) is padded with zero rows. */
bool wk_cpu_panel_packable(wk_dtype t, int64_t rows, int64_t n);

/* Bytes of the panels of a packable (rows, n) weight of type t (ceil(rows / 16) panels). */
size_t wk_cpu_panel_bytes(wk_dtype t, int64_t rows, int64_t n);

/* Repacks panels [p0, p1) of the packable weight w: (rows, n) in GGUF layout into dst, which
 * holds all the weight's panels (wk_cpu_panel_bytes; 64-byte aligned is fastest). Disjoint
 * panel ranges may be packed from different threads. */
void wk_cpu_panel_pack(wk_dtype t, const void *w, int64_t rows, int64_t n, int64_t p0, int64_t p1,
                       void *dst);

/* The Q8_0 panels' activation correction: c[b] = -128 * sum(x[b].qs) for nb blocks. */
void wk_cpu_q8_corr(const wk_cpu_q8 *x, int32_t *c, int64_t nb);

/* Where a panel's results go: token k's 16 rows at out[k][0..15], as
 * out[k][i] = (out[k][i] if accumulate) + dot(row i, token k) (+ bias[i] when bias). */
typedef struct wk_cpu_panel_out {
    float *const *out;
    const float *bias; /* (16) or NULL */
    bool accumulate;
} wk_cpu_panel_out;

/* A panel's inputs: token k's quantized activations (n / 32 blocks) at xq + k * xq_stride and,
 * for Q8_0 panels, their corrections at corr + k * xq_stride; for F16 panels its f32
 * activations (n) at xf + k * xf_stride instead. What a kernel does not read may be NULL. */
typedef struct wk_cpu_panel_in {
    const wk_cpu_q8 *xq;
    const int32_t *corr;
    size_t xq_stride; /* blocks */
    const float *xf;
    size_t xf_stride; /* floats */
} wk_cpu_panel_in;

/*
 * A panel kernel: one panel (16 rows, n inputs) against n_tok tokens, results as out says.
 * The result for a token is bit-identical whatever n_tok and the token's place among them.
 */
typedef void (*wk_cpu_panel_fn)(const void *panel, const wk_cpu_panel_in *in, int n_tok,
                                const wk_cpu_panel_out *out, int64_t n);

/* The kernel for panels of weights of type t at the level in effect (NULL unless
 * wk_cpu_panel_type(t)), for loops that run many panels without the dispatch. */
wk_cpu_panel_fn wk_cpu_panel_kernel(wk_dtype t);

/* wk_cpu_panel_kernel(t)(panel, in, n_tok, out, n). Only for wk_cpu_panel_type(t). */
void wk_cpu_panel_mul(wk_dtype t, const void *panel, const wk_cpu_panel_in *in, int n_tok,
                      const wk_cpu_panel_out *out, int64_t n);

#endif /* WK_CPU_PANEL_H */
