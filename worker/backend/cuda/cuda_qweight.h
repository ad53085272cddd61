/*
 * wk_cuda_qweight: the device layout of quantized weight matrices (host side, plain C, no CUDA).
 *
 * With `weights native` (the default, cuda_backend.h) a quantized GGUF matrix stays quantized
 * on the device: each row is repacked from GGUF blocks into three structure-of-arrays parts
 * whose per-row slices line up for 16-byte, warp-coalesced loads in the GEMV kernels
 * (cuda_qgemv.cu). Element i of a row belongs to 32-element group g = i / 32.
 *
 *   qs  (rows, cols / 2) u8 for 4-bit kinds: group g is bytes [16 g, 16 g + 16); byte j holds
 *       element 32 g + j in its low nibble and element 32 g + j + 16 in its high nibble;
 *       (rows, cols) u8 / i8 for 8-bit kinds: element i is byte i.
 *   sc  (rows, cols / 32) entries of 2 or 4 bytes, one per group (the group's own scales).
 *   sup (rows, cols / 256) entries of 4 bytes (the K-quants' per-256 super-block scales), or
 *       nothing.
 *
 * kind  from    qs            sc entry (per 32)            sup entry (per 256)   value
 * Q4_0  Q4_0    u4            f16 d                        -                     (q - 8) * d
 * Q4_1  Q4_1    u4            f16 d, f16 m                 -                     q * d + m
 * Q4_K  Q4_K    u4            u8 sc, u8 mn                 f16 d, f16 dmin       (d*sc) q - dmin*mn
 * Q8_0  Q8_0    i8            f16 d                        -                     q * d
 * Q5_K  Q5_K    u8 (0..31)    u8 sc, u8 mn                 f16 d, f16 dmin       (d*sc) q - dmin*mn
 * Q6_K  Q6_K    i8 (-32..31)  i8 s0 (elems 0..15), s1      f16 d, 0              (d*s) q
 *
 * The values are the reference dequantizer's (worker/quant.c) bit for bit: the integers and
 * the f16 scales are carried unchanged and the arithmetic is the reference's, in its order
 * (the kernels use round-to-nearest intrinsics so no FMA contraction changes it).
 * Q5_K and Q6_K take 8 bits per value (exact, 8.6 bits/weight instead of 5.5 / 6.6); every
 * other type stays f16 on the device (WK_CUDA_QK_NONE).
 */
#ifndef WK_CUDA_QWEIGHT_H
#define WK_CUDA_QWEIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum wk_cuda_qkind {
    WK_CUDA_QK_NONE = 0, /* not kept quantized: f16 on the device */
    WK_CUDA_QK_Q4_0 = 1,
    WK_CUDA_QK_Q4_1 = 2,
    WK_CUDA_QK_Q4_K = 3,
    WK_CUDA_QK_Q8_0 = 4,
    WK_CUDA_QK_Q5_K = 5,
    WK_CUDA_QK_Q6_K = 6,
    WK_CUDA_QK_N = 7
} wk_cuda_qkind;

#define WK_CUDA_QGROUP 32  /* elements per sc entry */
#define WK_CUDA_QSUPER 256 /* elements per sup entry */

/* wk_cuda_qkind_of: the device kind a matrix of GGUF type t is kept in; NONE for types kept as
 * f16 (F32, F16, BF16 and the quantized types without a device kind). */
wk_cuda_qkind wk_cuda_qkind_of(wk_dtype t);

/* wk_cuda_qkind_name: "Q4_K", ...; "F16" for NONE. */
const char *wk_cuda_qkind_name(wk_cuda_qkind k);

/* Bytes of one row of cols elements in each part; 0 when cols does not fit the kind (not a
 * multiple of 32, or of 256 for the K kinds) or k is NONE. sup is 0 for kinds without one. */
size_t wk_cuda_q_qs_row_bytes(wk_cuda_qkind k, int64_t cols);
size_t wk_cuda_q_sc_row_bytes(wk_cuda_qkind k, int64_t cols);
size_t wk_cuda_q_sup_row_bytes(wk_cuda_qkind k, int64_t cols);

/* wk_cuda_q_repack_row: one GGUF row of type t (wk_dtype_row_bytes(t, cols) bytes at src) into
 * its slices of the three parts (qs, sc, sup: the row's *_row_bytes each; sup may be NULL for
 * kinds without one). t must map to a kind (wk_cuda_qkind_of(t) != NONE) and cols fit it;
 * returns -1 (writing nothing) otherwise, 0 on success. Thread-safe, no allocation. */
int wk_cuda_q_repack_row(wk_dtype t, const void *src, int64_t cols, uint8_t *qs, uint8_t *sc,
                         uint8_t *sup);

/* wk_cuda_q_dequant_row: the values a kernel computes for one repacked row (the host twin of
 * the device code; the mock runtime uses it). dst: cols floats. Same preconditions as
 * repack. Returns -1 on a bad kind or cols, 0 otherwise. */
int wk_cuda_q_dequant_row(wk_cuda_qkind k, const uint8_t *qs, const uint8_t *sc, const uint8_t *sup,
                          int64_t cols, float *dst);

#ifdef __cplusplus
}
#endif

#endif /* WK_CUDA_QWEIGHT_H */
