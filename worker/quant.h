/*
 * wk_quant: tensor element types as GGUF numbers them, their block layouts, and conversion
 * of rows to f32. Shared by the GGUF loader, the CPU backend (which also has fused
 * dot-product kernels in backend/cpu) and the CUDA backend (which dequantizes at load).
 *
 * A "row" is ne[0] consecutive elements of a tensor. Quantized types pack elements in blocks
 * (32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL, 256 for the K-quants and IQ4_XS); a row length must
 * be a multiple of the block.
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
    WK_DTYPE_Q5_0 = 6,
    WK_DTYPE_Q5_1 = 7,
    WK_DTYPE_Q8_0 = 8,
    WK_DTYPE_Q2_K = 10,
    WK_DTYPE_Q3_K = 11,
    WK_DTYPE_Q4_K = 12,
    WK_DTYPE_Q5_K = 13,
    WK_DTYPE_Q6_K = 14,
    WK_DTYPE_IQ4_NL = 20,
    WK_DTYPE_IQ4_XS = 23,
    WK_DTYPE_BF16 = 30,
} wk_dtype;

/* How the CPU backend repacks weights of a type into its 16-row panels (cpu_panel.h). */
typedef enum wk_panel_from {
    WK_PANEL_FROM_NONE = 0, /* no panels: row kernels or rows dequantized to f32 */
    WK_PANEL_FROM_BLOCKS,   /* the type's own blocks (F32, F16, Q4_0, Q4_1, Q8_0, IQ4_NL) */
    WK_PANEL_FROM_CONVERT,  /* to_panel rewrites each block as panel_kind blocks holding the same
                             * values (at most a scale rounded to f16) */
    WK_PANEL_FROM_REQUANT,  /* values dequantized and requantized to 8 bits per 32 inputs, as the
                             * activations are (panel_kind Q8_0) */
} wk_panel_from;

/*
 * One row per supported type, the only place that lists them: layout, conversion to f32 and
 * how each backend takes weights of the type. Adding a type is a row here plus its kernels.
 */
typedef struct wk_dtype_traits {
    const char *name;     /* "Q4_1" */
    uint32_t block_elems; /* elements per block (1 for float types) */
    uint32_t block_bytes; /* bytes per block */
    /* n elements (whole blocks) at src to f32 at dst; thread-safe, no allocation */
    void (*to_f32)(const uint8_t *src, float *dst, int64_t n);
    wk_panel_from panel_from;
    wk_dtype panel_kind; /* the panel layout (Q4_1, Q8_0, IQ4_NL, F16 or F32) unless panel_from
                          * is NONE */
    /* CONVERT only: one block at src as block_elems / 32 blocks of panel_kind at dst */
    void (*to_panel)(const void *src, void *dst);
    bool cuda; /* the CUDA backend takes matrices of the type (dequantized to f16 at load) */
} wk_dtype_traits;

/* wk_dtype_traits_of returns the row of GGUF type id t; NULL for a type not supported here
 * (the loader rejects those with the number in its message). The rows are static. */
const wk_dtype_traits *wk_dtype_traits_of(uint32_t t);

/* wk_dtype_supported tells whether t has a traits row. */
bool wk_dtype_supported(uint32_t t);

/* wk_dtype_name returns "F32", "Q4_1", ...; "unknown" for unsupported values. */
const char *wk_dtype_name(uint32_t t);

/* wk_dtype_from_name: the type whose name is s, case-insensitive ("q4_k" or "Q4_K"); false
 * when none is. */
bool wk_dtype_from_name(const char *s, wk_dtype *out);

/* wk_dtype_block_elems: elements per block (1 for float types). 0 for unsupported types. */
uint32_t wk_dtype_block_elems(wk_dtype t);

/* wk_dtype_block_bytes: bytes per block. 0 for unsupported types. */
uint32_t wk_dtype_block_bytes(wk_dtype t);

/* wk_dtype_row_bytes: bytes of a row of n elements; 0 when n is not a multiple of the block
 * size or the type is unsupported. */
size_t wk_dtype_row_bytes(wk_dtype t, int64_t n);

/* wk_dequantize_row converts n elements (a multiple of the block size) from src of type t to
 * f32 in dst. src must hold wk_dtype_row_bytes(t, n) bytes. Thread-safe, no allocation. Does
 * nothing for an unsupported type. */
void wk_dequantize_row(wk_dtype t, const void *src, float *dst, int64_t n);

/* wk_q4_k_to_q4_1 rewrites one Q4_K block (256 elements, 144 bytes at src) as 8 Q4_1 blocks
 * (32 elements, 20 bytes each, 160 bytes at dst) holding the same 4-bit values: sub-block j's
 * scale d * sc_j and min -dmin * m_j become the Q4_1 block's d and m, rounded to f16 (the only
 * change: relative error <= 2^-11 on each). */
void wk_q4_k_to_q4_1(const void *src, void *dst);

/* The conversions the CPU panels use (traits to_panel), each from one block at src into dst:
 *   wk_q5_0_to_q8_0:   into 1 Q8_0 block (34 bytes: f16 d, int8 q[32]); the same d, q - 16
 *                      (exact)
 *   wk_q3_k_to_q8_0:   into 8 Q8_0 blocks; d, scale * q per element (exact; a 32-element
 *                      block where one product is 128 is requantized to 8 bits instead)
 *   wk_iq4_xs_to_iq4_nl: into 8 IQ4_NL blocks (18 bytes: f16 d, u8 qs[16]); the same grid
 *                      indices, d * sub-block scale rounded to f16 (relative error <= 2^-11) */
void wk_q5_0_to_q8_0(const void *src, void *dst);
void wk_q3_k_to_q8_0(const void *src, void *dst);
void wk_iq4_xs_to_iq4_nl(const void *src, void *dst);

/* The non-linear grid of IQ4_NL and IQ4_XS: a 4-bit index i stands for wk_iq4_grid[i] times
 * the block's scale. */
extern const int8_t wk_iq4_grid[16];

/* wk_k_scale_min: the 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block's
 * 12-byte scale field q (the GGUF packing: j < 4 in the low 6 bits of bytes j and j + 4, j >= 4
 * split over the nibbles of byte j + 4 and the top bits of bytes j - 4 and j). */
void wk_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn);

/* wk_le16: the little-endian 16-bit word at p (GGUF block scales). */
static inline uint16_t wk_le16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* Scalar half/bfloat conversions (IEEE binary16 round-to-nearest-even; bf16 by truncation
 * with rounding). Exact inverses on representable values. */
float wk_f16_to_f32(uint16_t h);
uint16_t wk_f32_to_f16(float f);
float wk_bf16_to_f32(uint16_t h);
uint16_t wk_f32_to_bf16(float f);

#endif /* WK_QUANT_H */
