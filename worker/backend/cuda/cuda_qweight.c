/*
 * wk_cuda_qweight: repacking GGUF rows into the device layout and the layout's values on the
 * host (see cuda_qweight.h for the layout). Block layouts: worker/quant.c.
 */
#include "cuda_qweight.h"

#include <string.h>

#define QG WK_CUDA_QGROUP
#define QS WK_CUDA_QSUPER

static float f16_at(const uint8_t *p) {
    return wk_f16_to_f32(wk_le16(p));
}

wk_cuda_qkind wk_cuda_qkind_of(wk_dtype t) {
    switch (t) {
    case WK_DTYPE_Q4_0:
        return WK_CUDA_QK_Q4_0;
    case WK_DTYPE_Q4_1:
        return WK_CUDA_QK_Q4_1;
    case WK_DTYPE_Q4_K:
        return WK_CUDA_QK_Q4_K;
    case WK_DTYPE_Q8_0:
        return WK_CUDA_QK_Q8_0;
    case WK_DTYPE_Q5_K:
        return WK_CUDA_QK_Q5_K;
    case WK_DTYPE_Q6_K:
        return WK_CUDA_QK_Q6_K;
    default:
        return WK_CUDA_QK_NONE;
    }
}

const char *wk_cuda_qkind_name(wk_cuda_qkind k) {
    static const char *const names[WK_CUDA_QK_N] = {"F16",  "Q4_0", "Q4_1", "Q4_K",
                                                    "Q8_0", "Q5_K", "Q6_K"};
    return (unsigned)k < WK_CUDA_QK_N ? names[k] : "unknown";
}

static int is_k_kind(wk_cuda_qkind k) {
    return k == WK_CUDA_QK_Q4_K || k == WK_CUDA_QK_Q5_K || k == WK_CUDA_QK_Q6_K;
}

static int fits(wk_cuda_qkind k, int64_t cols) {
    if (k <= WK_CUDA_QK_NONE || k >= WK_CUDA_QK_N || cols <= 0) {
        return 0;
    }
    return cols % (is_k_kind(k) ? QS : QG) == 0;
}

size_t wk_cuda_q_qs_row_bytes(wk_cuda_qkind k, int64_t cols) {
    if (!fits(k, cols)) {
        return 0;
    }
    int four_bit = k == WK_CUDA_QK_Q4_0 || k == WK_CUDA_QK_Q4_1 || k == WK_CUDA_QK_Q4_K;
    return four_bit ? (size_t)cols / 2 : (size_t)cols;
}

size_t wk_cuda_q_sc_row_bytes(wk_cuda_qkind k, int64_t cols) {
    if (!fits(k, cols)) {
        return 0;
    }
    return (size_t)cols / QG * (k == WK_CUDA_QK_Q4_1 ? 4 : 2);
}

size_t wk_cuda_q_sup_row_bytes(wk_cuda_qkind k, int64_t cols) {
    if (!fits(k, cols) || !is_k_kind(k)) {
        return 0;
    }
    return (size_t)cols / QS * 4;
}

/* One super-block (256 elements) of Q4_K (144 B) or Q5_K (176 B) at b. */
static void repack_k45(const uint8_t *b, int five, uint8_t *qs, uint8_t *sc, uint8_t *sup) {
    memcpy(sup, b, 4); /* f16 d, f16 dmin */
    const uint8_t *qh = b + 16;
    const uint8_t *ql = five ? b + 48 : b + 16;
    for (int s = 0; s < QS / QG; s++) {
        wk_k_scale_min(s, b + 4, &sc[2 * s], &sc[2 * s + 1]);
        /* element 32 s + l: nibble s % 2 of ql[32 (s / 2) + l], Q5_K's fifth bit is bit s of
         * qh[l] */
        const uint8_t *qc = ql + 32 * (s / 2);
        const int shift = 4 * (s % 2);
        if (five) {
            for (int l = 0; l < QG; l++) {
                qs[QG * s + l] = (uint8_t)(((qc[l] >> shift) & 0xF) | (((qh[l] >> s) & 1) << 4));
            }
            continue;
        }
        for (int l = 0; l < QG / 2; l++) { /* elements l and l + 16 share a byte */
            int lo = (qc[l] >> shift) & 0xF;
            int hi = (qc[l + QG / 2] >> shift) & 0xF;
            qs[16 * s + l] = (uint8_t)(lo | (hi << 4));
        }
    }
}

/* One Q6_K super-block (210 B) at b. */
static void repack_q6_k(const uint8_t *b, uint8_t *qs, uint8_t *sc, uint8_t *sup) {
    sup[0] = b[208];
    sup[1] = b[209];
    sup[2] = 0;
    sup[3] = 0;
    memcpy(sc, b + 192, 16); /* i8 scale of elements [16 j, 16 j + 16): two per group */
    /* per 128 elements: 64 bytes of ql and 32 of qh; quarter r of them takes the low / high
     * nibble of ql[l] / ql[l + 32] and bits 2r, 2r + 1 of qh[l] */
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b + 64 * n;
        const uint8_t *qh = b + 128 + 32 * n;
        for (int r = 0; r < 4; r++) {
            const uint8_t *qlr = ql + 32 * (r % 2);
            const int shift = 4 * (r / 2);
            uint8_t *o = qs + 128 * n + 32 * r;
            for (int l = 0; l < 32; l++) {
                int v = ((qlr[l] >> shift) & 0xF) | (((qh[l] >> (2 * r)) & 3) << 4);
                o[l] = (uint8_t)(int8_t)(v - 32);
            }
        }
    }
}

int wk_cuda_q_repack_row(wk_dtype t, const void *src, int64_t cols, uint8_t *qs, uint8_t *sc,
                         uint8_t *sup) {
    const wk_cuda_qkind k = wk_cuda_qkind_of(t);
    if (!fits(k, cols) || src == NULL || qs == NULL || sc == NULL || (is_k_kind(k) && !sup)) {
        return -1;
    }
    const uint8_t *b = src;
    const int64_t n_groups = cols / QG;
    switch (k) {
    case WK_CUDA_QK_Q4_0: /* f16 d; u8 qs[16]: the nibble order is already the layout's */
        for (int64_t g = 0; g < n_groups; g++, b += 18) {
            memcpy(sc + 2 * g, b, 2);
            memcpy(qs + 16 * g, b + 2, 16);
        }
        break;
    case WK_CUDA_QK_Q4_1: /* f16 d; f16 m; u8 qs[16] */
        for (int64_t g = 0; g < n_groups; g++, b += 20) {
            memcpy(sc + 4 * g, b, 4);
            memcpy(qs + 16 * g, b + 4, 16);
        }
        break;
    case WK_CUDA_QK_Q8_0: /* f16 d; i8 qs[32] */
        for (int64_t g = 0; g < n_groups; g++, b += 34) {
            memcpy(sc + 2 * g, b, 2);
            memcpy(qs + 32 * g, b + 2, 32);
        }
        break;
    case WK_CUDA_QK_Q4_K:
    case WK_CUDA_QK_Q5_K: {
        const int five = k == WK_CUDA_QK_Q5_K;
        const size_t blk = five ? 176 : 144;
        const size_t qs_blk = five ? QS : QS / 2;
        for (int64_t s = 0; s < cols / QS; s++) {
            repack_k45(b + (size_t)s * blk, five, qs + (size_t)s * qs_blk, sc + 16 * s,
                       sup + 4 * s);
        }
        break;
    }
    case WK_CUDA_QK_Q6_K:
        for (int64_t s = 0; s < cols / QS; s++) {
            repack_q6_k(b + (size_t)s * 210, qs + (size_t)s * QS, sc + 16 * s, sup + 4 * s);
        }
        break;
    default:
        return -1;
    }
    return 0;
}

/* The arithmetic below is worker/quant.c's, expression for expression (same operand order and
 * roundings), which is what makes the layout exact. */
int wk_cuda_q_dequant_row(wk_cuda_qkind k, const uint8_t *qs, const uint8_t *sc, const uint8_t *sup,
                          int64_t cols, float *dst) {
    if (!fits(k, cols) || qs == NULL || sc == NULL || dst == NULL || (is_k_kind(k) && !sup)) {
        return -1;
    }
    for (int64_t g = 0; g < cols / QG; g++) {
        float *y = dst + QG * g;
        const uint8_t *q4 = qs + 16 * g;
        const uint8_t *q8 = qs + QG * g;
        const uint8_t *sp = sup != NULL ? sup + 4 * (g / (QS / QG)) : NULL;
        switch (k) {
        case WK_CUDA_QK_Q4_0: {
            float d = f16_at(sc + 2 * g);
            for (int j = 0; j < QG / 2; j++) {
                y[j] = (float)((q4[j] & 0xF) - 8) * d;
                y[j + QG / 2] = (float)((q4[j] >> 4) - 8) * d;
            }
            break;
        }
        case WK_CUDA_QK_Q4_1: {
            float d = f16_at(sc + 4 * g);
            float m = f16_at(sc + 4 * g + 2);
            for (int j = 0; j < QG / 2; j++) {
                y[j] = (float)(q4[j] & 0xF) * d + m;
                y[j + QG / 2] = (float)(q4[j] >> 4) * d + m;
            }
            break;
        }
        case WK_CUDA_QK_Q4_K:
        case WK_CUDA_QK_Q5_K: {
            float d1 = f16_at(sp) * sc[2 * g];
            float m1 = f16_at(sp + 2) * sc[2 * g + 1];
            for (int j = 0; j < QG; j++) {
                int v = k == WK_CUDA_QK_Q5_K ? q8[j]
                        : j < QG / 2         ? (q4[j] & 0xF)
                                             : (q4[j - QG / 2] >> 4);
                y[j] = d1 * (float)v - m1;
            }
            break;
        }
        case WK_CUDA_QK_Q8_0: {
            float d = f16_at(sc + 2 * g);
            for (int j = 0; j < QG; j++) {
                y[j] = (float)(int8_t)q8[j] * d;
            }
            break;
        }
        case WK_CUDA_QK_Q6_K: {
            float d = f16_at(sp);
            for (int j = 0; j < QG; j++) {
                y[j] = d * (int8_t)sc[2 * g + j / 16] * (float)(int8_t)q8[j];
            }
            break;
        }
        default:
            return -1;
        }
    }
    return 0;
}
