/*
 * wk_quant: tensor element types as GGUF numbers them, their block layouts, and conversion
 * of rows to f32. Shared by the GGUF loader, the CPU backend (which also has fused
 * dot-product kernels in backend/cpu) and the CUDA backend (which dequantizes at load).
 *
 * A "row" is ne[0] consecutive elements of a tensor. Quantized types pack elements in blocks
 * (32 for Q4_0/Q4_1/Q8_0, 256 for the K-quants); a row length must be a multiple of the block.
 */
#ifndef WK_QUANT_H
#define WK_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef enum wk_dtype {
    WK_DTYPE_F32 = 0,
    WK_DTYPE_F16 = 1,
    WK_DTYPE_Q4_0 = 2,
    WK_DTYPE_Q4_1 = 3,
    WK_DTYPE_Q8_0 = 8,
    WK_DTYPE_Q4_K = 12,
    WK_DTYPE_Q5_K = 13,
    WK_DTYPE_Q6_K = 14,
    WK_DTYPE_BF16 = 30,
} wk_dtype;

/* wk_dtype_supported tells whether t is one of the values above (any other GGUF type id is
 * rejected by the loader with its number in the message). */
bool wk_dtype_supported(uint32_t t);

/* wk_dtype_name returns "F32", "Q4_1", ...; "unknown" for unsupported values. */
const char *wk_dtype_name(uint32_t t);

/* wk_dtype_block_elems: elements per block (1 for float types). 0 for unsupported types. */
uint32_t wk_dtype_block_elems(wk_dtype t);

/* wk_dtype_block_bytes: bytes per block. 0 for unsupported types. */
uint32_t wk_dtype_block_bytes(wk_dtype t);

/* wk_dtype_row_bytes: bytes of a row of n elements; 0 when n is not a multiple of the block
 * size or the type is unsupported. */
size_t wk_dtype_row_bytes(wk_dtype t, int64_t n);

/* wk_dequantize_row converts n elements (a multiple of the block size) from src of type t to
 * f32 in dst. src must hold wk_dtype_row_bytes(t, n) bytes. Thread-safe, no allocation. */
void wk_dequantize_row(wk_dtype t, const void *src, float *dst, int64_t n);

/* wk_q4_k_to_q4_1 rewrites one Q4_K block (256 elements, 144 bytes at src) as 8 Q4_1 blocks
 * (32 elements, 20 bytes each, 160 bytes at dst) holding the same 4-bit values: sub-block j's
 * scale d * sc_j and min -dmin * m_j become the Q4_1 block's d and m, rounded to f16 (the only
 * change: relative error <= 2^-11 on each). */
void wk_q4_k_to_q4_1(const void *src, void *dst);

/* Scalar half/bfloat conversions (IEEE binary16 round-to-nearest-even; bf16 by truncation
 * with rounding). Exact inverses on representable values. */
float wk_f16_to_f32(uint16_t h);
uint16_t wk_f32_to_f16(float f);
float wk_bf16_to_f32(uint16_t h);
uint16_t wk_f32_to_bf16(float f);

#endif /* WK_QUANT_H */
