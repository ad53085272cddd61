/*
 * wk_quant: element types, block sizes and row dequantization (scalar, portable).
 *
 * Block layouts (little-endian, packed, as GGUF stores them):
 *   Q4_0 (32 elems, 18 B):  f16 d; u8 qs[16]          x = (nibble - 8) * d
 *   Q4_1 (32 elems, 20 B):  f16 d; f16 m; u8 qs[16]   x = nibble * d + m
 *   Q8_0 (32 elems, 34 B):  f16 d; i8 qs[32]          x = q * d
 *     (for the 4-bit types, byte j holds element j in its low nibble, element j+16 high)
 *   Q4_K (256 elems, 144 B): f16 d; f16 dmin; u8 scales[12]; u8 qs[128]
 *   Q5_K (256 elems, 176 B): f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
 *     (8 sub-blocks of 32; 6-bit scale and min per sub-block packed in scales[12];
 *      x = d * sc * q - dmin * mn)
 *   Q6_K (256 elems, 210 B): u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d
 *     (16 sub-blocks of 16; x = d * scale * (q6 - 32))
 *   Q5_0 (32 elems, 22 B):  f16 d; u32 qh; u8 qs[16]          x = (q5 - 16) * d
 *   Q5_1 (32 elems, 24 B):  f16 d; f16 m; u32 qh; u8 qs[16]   x = q5 * d + m
 *     (element j: low 4 bits as in Q4_0, bit 4 is bit j of qh)
 *   Q2_K (256 elems, 84 B): u8 scales[16]; u8 qs[64]; f16 d; f16 dmin
 *     (16 sub-blocks of 16; scale byte: low nibble sc, high nibble mn;
 *      x = d * sc * q2 - dmin * mn)
 *   Q3_K (256 elems, 110 B): u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d
 *     (16 sub-blocks of 16, 6-bit scales stored + 32; x = d * (sc - 32) * (q2 - (hbit ? 0 : 4)))
 *   IQ4_NL (32 elems, 18 B): f16 d; u8 qs[16]                 x = d * wk_iq4_grid[nibble]
 *   IQ4_XS (256 elems, 136 B): f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]
 *     (8 sub-blocks of 32 as IQ4_NL's; 6-bit scale ls, x = d * (ls - 32) * wk_iq4_grid[nibble])
 * In the 2- and 3-bit K-quants, each 128 elements take 32 bytes of qs, four 2-bit fields per
 * byte: element 128 h + 32 s + l is field s of byte 32 h + l.
 */
#include "quant.h"

#include <ctype.h>
#include <string.h>

#define QK 32
#define QK_K 256

float wk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            /* subnormal: normalize the mantissa */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while ((mant & 0x400) == 0);
            mant &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t wk_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t mant = x & 0x7fffff;
    if (exp == 0xff) { /* inf / nan (keep nan quiet and non-zero) */
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
    }
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) {
        return (uint16_t)(sign | 0x7c00);
    }
    if (e <= 0) {
        if (e < -10) {
            return sign;
        }
        /* subnormal half: shift the full mantissa (with implicit 1) and round to even */
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) {
            half++;
        }
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    /* round to nearest even; a carry into the exponent is the correct result (up to inf) */
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) {
        half++;
    }
    return (uint16_t)(sign | half);
}

float wk_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t wk_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) { /* nan: keep it a quiet nan */
        return (uint16_t)((x >> 16) | 0x40);
    }
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

void wk_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void deq_q4_0(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)((qs[j] & 0xF) - 8) * d;
        y[j + QK / 2] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void deq_q4_1(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    float m = wk_f16_to_f32(wk_le16(b + 2));
    const uint8_t *qs = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)(qs[j] & 0xF) * d + m;
        y[j + QK / 2] = (float)(qs[j] >> 4) * d + m;
    }
}

static void deq_q8_0(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < QK; j++) {
        y[j] = (float)qs[j] * d;
    }
}

static void deq_q4_k(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    float dmin = wk_f16_to_f32(wk_le16(b + 2));
    const uint8_t *scales = b + 4;
    const uint8_t *q = b + 16;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2) {
        uint8_t sc, mn;
        wk_k_scale_min(is, scales, &sc, &mn);
        float d1 = d * sc, m1 = dmin * mn;
        wk_k_scale_min(is + 1, scales, &sc, &mn);
        float d2 = d * sc, m2 = dmin * mn;
        for (int l = 0; l < 32; l++) {
            y[j + l] = d1 * (float)(q[l] & 0xF) - m1;
            y[j + 32 + l] = d2 * (float)(q[l] >> 4) - m2;
        }
        q += 32;
    }
}

void wk_q4_k_to_q4_1(const void *src, void *dst) {
    const uint8_t *b = src;
    uint8_t *o = dst;
    float d = wk_f16_to_f32(wk_le16(b));
    float dmin = wk_f16_to_f32(wk_le16(b + 2));
    const uint8_t *scales = b + 4;
    const uint8_t *q = b + 16;
    /* sub-blocks 2c and 2c + 1 are the low and high nibbles of q[32c .. 32c + 31] (as in
     * deq_q4_k); a Q4_1 block packs its elements i and i + 16 into byte i */
    for (int j = 0; j < QK_K / 32; j++, o += 20) {
        uint8_t sc, mn;
        wk_k_scale_min(j, scales, &sc, &mn);
        uint16_t dh = wk_f32_to_f16(d * (float)sc), mh = wk_f32_to_f16(-dmin * (float)mn);
        o[0] = (uint8_t)dh;
        o[1] = (uint8_t)(dh >> 8);
        o[2] = (uint8_t)mh;
        o[3] = (uint8_t)(mh >> 8);
        const uint8_t *qc = q + 32 * (j / 2);
        int shift = 4 * (j % 2);
        for (int i = 0; i < 16; i++) {
            int lo = (qc[i] >> shift) & 0xF, hi = (qc[i + 16] >> shift) & 0xF;
            o[4 + i] = (uint8_t)(lo | (hi << 4));
        }
    }
}

static void deq_q5_k(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    float dmin = wk_f16_to_f32(wk_le16(b + 2));
    const uint8_t *scales = b + 4;
    const uint8_t *qh = b + 16;
    const uint8_t *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2) {
        uint8_t sc, mn;
        wk_k_scale_min(is, scales, &sc, &mn);
        float d1 = d * sc, m1 = dmin * mn;
        wk_k_scale_min(is + 1, scales, &sc, &mn);
        float d2 = d * sc, m2 = dmin * mn;
        for (int l = 0; l < 32; l++) {
            y[j + l] = d1 * (float)((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
            y[j + 32 + l] = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        }
        ql += 32;
        u1 = (uint8_t)(u1 << 2);
        u2 = (uint8_t)(u2 << 2);
    }
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The 5-bit values of a Q5_0 / Q5_1 block from qh (32 high bits) and qs (16 bytes). */
static void q5_values(uint32_t qh, const uint8_t *qs, int q[QK]) {
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
        q[j + QK / 2] = (qs[j] >> 4) | (int)(((qh >> (j + QK / 2)) & 1) << 4);
    }
}

static void deq_q5_0(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    int q[QK];
    q5_values(rd32(b + 2), b + 6, q);
    for (int j = 0; j < QK; j++) {
        y[j] = (float)(q[j] - 16) * d;
    }
}

static void deq_q5_1(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    float m = wk_f16_to_f32(wk_le16(b + 2));
    int q[QK];
    q5_values(rd32(b + 4), b + 8, q);
    for (int j = 0; j < QK; j++) {
        y[j] = (float)q[j] * d + m;
    }
}

static void deq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *scales = b;
    const uint8_t *qs = b + 16;
    float d = wk_f16_to_f32(wk_le16(b + 80));
    float dmin = wk_f16_to_f32(wk_le16(b + 82));
    for (int i = 0; i < QK_K; i++) {
        int h = i / 128, s = (i / 32) % 4, l = i % 32;
        uint8_t sc = scales[i / 16];
        int q = (qs[32 * h + l] >> (2 * s)) & 3;
        /* two roundings as the format's reference: (d * sc) * q, then - dmin * mn */
        float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
        y[i] = dl * (float)q - ml;
    }
}

/* The 16 scales of a Q3_K block, minus 32 (-32 .. 31). */
static void q3_k_scales(const uint8_t *p, int sc[16]) {
    for (int j = 0; j < 16; j++) {
        int low = j < 8 ? p[j] & 0xF : p[j - 8] >> 4;
        int high = (p[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (low | (high << 4)) - 32;
    }
}

/* The signed 3-bit value (-4 .. 3) of element i of a Q3_K block. */
static int q3_k_value(const uint8_t *b, int i) {
    const uint8_t *hmask = b, *qs = b + 32;
    int h = i / 128, s = (i / 32) % 4, l = i % 32;
    int q = (qs[32 * h + l] >> (2 * s)) & 3;
    return (hmask[l] >> (4 * h + s)) & 1 ? q : q - 4;
}

static void deq_q3_k(const uint8_t *b, float *y) {
    int sc[16];
    q3_k_scales(b + 96, sc);
    float d = wk_f16_to_f32(wk_le16(b + 108));
    for (int i = 0; i < QK_K; i++) {
        float dl = d * (float)sc[i / 16];
        y[i] = dl * (float)q3_k_value(b, i);
    }
}

const int8_t wk_iq4_grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                1,    13,   25,  38,  53,  69,  89,  113};

static void deq_iq4_nl(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * (float)wk_iq4_grid[qs[j] & 0xF];
        y[j + QK / 2] = d * (float)wk_iq4_grid[qs[j] >> 4];
    }
}

/* The 6-bit scale of IQ4_XS sub-block j (0..7), minus 32. */
static int iq4_xs_scale(const uint8_t *b, int j) {
    uint16_t scales_h = wk_le16(b + 2);
    int low = (b[4 + j / 2] >> (4 * (j % 2))) & 0xF;
    return (low | (((scales_h >> (2 * j)) & 3) << 4)) - 32;
}

static void deq_iq4_xs(const uint8_t *b, float *y) {
    float d = wk_f16_to_f32(wk_le16(b));
    for (int j = 0; j < QK_K / QK; j++) {
        float dl = d * (float)iq4_xs_scale(b, j);
        const uint8_t *qs = b + 8 + 16 * j;
        for (int i = 0; i < QK / 2; i++) {
            y[QK * j + i] = dl * (float)wk_iq4_grid[qs[i] & 0xF];
            y[QK * j + i + QK / 2] = dl * (float)wk_iq4_grid[qs[i] >> 4];
        }
    }
}

/* ---- exact conversions into Q8_0 blocks (for the CPU panels) ------------------------------ */

static void put_q8_0(uint8_t *o, uint16_t d, const int *q) {
    o[0] = (uint8_t)d;
    o[1] = (uint8_t)(d >> 8);
    for (int i = 0; i < QK; i++) {
        o[2 + i] = (uint8_t)(int8_t)q[i];
    }
}

void wk_q5_0_to_q8_0(const void *src, void *dst) {
    const uint8_t *b = src;
    int q[QK];
    q5_values(rd32(b + 2), b + 6, q);
    for (int i = 0; i < QK; i++) {
        q[i] -= 16;
    }
    put_q8_0(dst, wk_le16(b), q);
}

void wk_iq4_xs_to_iq4_nl(const void *src, void *dst) {
    const uint8_t *b = src;
    uint8_t *o = dst;
    float d = wk_f16_to_f32(wk_le16(b));
    for (int j = 0; j < QK_K / QK; j++, o += 18) {
        uint16_t dl = wk_f32_to_f16(d * (float)iq4_xs_scale(b, j));
        o[0] = (uint8_t)dl;
        o[1] = (uint8_t)(dl >> 8);
        memcpy(o + 2, b + 8 + 16 * j, 16);
    }
}

void wk_q3_k_to_q8_0(const void *src, void *dst) {
    const uint8_t *b = src;
    uint16_t dh = wk_le16(b + 108);
    int sc[16];
    q3_k_scales(b + 96, sc);
    for (int j = 0; j < QK_K / QK; j++) {
        int q[QK], amax = 0;
        for (int i = 0; i < QK; i++) {
            q[i] = sc[(QK * j + i) / 16] * q3_k_value(b, QK * j + i);
            amax = q[i] > amax ? q[i] : -q[i] > amax ? -q[i] : amax;
        }
        uint16_t d = dh;
        if (amax > 127) {
            /* only (-32) * (-4) = 128 overflows int8: requantize this block to 8 bits over
             * its range, q' = round(q * 127 / 128), d' = d * 128 / 127 */
            float dq = wk_f16_to_f32(dh) * 128.0f / 127.0f;
            for (int i = 0; i < QK; i++) {
                float v = (float)q[i] * 127.0f / 128.0f;
                q[i] = (int)(v < 0 ? v - 0.5f : v + 0.5f);
            }
            d = wk_f32_to_f16(dq);
        }
        put_q8_0((uint8_t *)dst + 34 * j, d, q);
    }
}

static void deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b;
    const uint8_t *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = wk_f16_to_f32(wk_le16(b + 208));
    for (int n = 0; n < QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[n + l] = d * sc[is] * (float)q1;
            y[n + l + 32] = d * sc[is + 2] * (float)q2;
            y[n + l + 64] = d * sc[is + 4] * (float)q3;
            y[n + l + 96] = d * sc[is + 6] * (float)q4;
        }
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

/* ---- rows of each type to f32 --------------------------------------------------------- */

static void f32_row(const uint8_t *s, float *dst, int64_t n) {
    memcpy(dst, s, (size_t)n * sizeof(float));
}

static void f16_row(const uint8_t *s, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        dst[i] = wk_f16_to_f32(wk_le16(s + 2 * i));
    }
}

static void bf16_row(const uint8_t *s, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        dst[i] = wk_bf16_to_f32(wk_le16(s + 2 * i));
    }
}

/* name##_row: a row of whole blocks through the block function deq_##name */
#define BLOCK_ROW(name, elems, bytes)                                                              \
    static void name##_row(const uint8_t *s, float *dst, int64_t n) {                              \
        for (int64_t i = 0; i < n / (elems); i++) {                                                \
            deq_##name(s + (size_t)i * (bytes), dst + i * (elems));                                \
        }                                                                                          \
    }

BLOCK_ROW(q4_0, QK, 18)
BLOCK_ROW(q4_1, QK, 20)
BLOCK_ROW(q8_0, QK, 34)
BLOCK_ROW(q4_k, QK_K, 144)
BLOCK_ROW(q5_k, QK_K, 176)
BLOCK_ROW(q6_k, QK_K, 210)
BLOCK_ROW(q5_0, QK, 22)
BLOCK_ROW(q5_1, QK, 24)
BLOCK_ROW(q2_k, QK_K, 84)
BLOCK_ROW(q3_k, QK_K, 110)
BLOCK_ROW(iq4_nl, QK, 18)
BLOCK_ROW(iq4_xs, QK_K, 136)

/* ---- the table ----------------------------------------------------------------------------- */

static const wk_dtype_traits TRAITS[] = {
    [WK_DTYPE_F32] = {"F32", 1, 4, f32_row, WK_PANEL_FROM_BLOCKS, WK_DTYPE_F32, NULL, true},
    [WK_DTYPE_F16] = {"F16", 1, 2, f16_row, WK_PANEL_FROM_BLOCKS, WK_DTYPE_F16, NULL, true},
    /* BF16 has no panels: F32 panels would double its bytes (memory and decode reads) */
    [WK_DTYPE_BF16] = {"BF16", 1, 2, bf16_row, WK_PANEL_FROM_NONE, WK_DTYPE_F32, NULL, true},
    /* Q4_0's panels are Q4_1 panels with m = -8 d */
    [WK_DTYPE_Q4_0] = {"Q4_0", QK, 18, q4_0_row, WK_PANEL_FROM_BLOCKS, WK_DTYPE_Q4_1, NULL, true},
    [WK_DTYPE_Q4_1] = {"Q4_1", QK, 20, q4_1_row, WK_PANEL_FROM_BLOCKS, WK_DTYPE_Q4_1, NULL, true},
    [WK_DTYPE_Q8_0] = {"Q8_0", QK, 34, q8_0_row, WK_PANEL_FROM_BLOCKS, WK_DTYPE_Q8_0, NULL, true},
    [WK_DTYPE_Q4_K] = {"Q4_K", QK_K, 144, q4_k_row, WK_PANEL_FROM_CONVERT, WK_DTYPE_Q4_1,
                       wk_q4_k_to_q4_1, true},
    [WK_DTYPE_Q5_K] = {"Q5_K", QK_K, 176, q5_k_row, WK_PANEL_FROM_REQUANT, WK_DTYPE_Q8_0, NULL,
                       true},
    [WK_DTYPE_Q6_K] = {"Q6_K", QK_K, 210, q6_k_row, WK_PANEL_FROM_REQUANT, WK_DTYPE_Q8_0, NULL,
                       true},
    /* 5-bit values fit the Q8_0 panels exactly; Q5_1's offset m does not, so its values are
     * requantized */
    [WK_DTYPE_Q5_0] = {"Q5_0", QK, 22, q5_0_row, WK_PANEL_FROM_CONVERT, WK_DTYPE_Q8_0,
                       wk_q5_0_to_q8_0, true},
    [WK_DTYPE_Q5_1] = {"Q5_1", QK, 24, q5_1_row, WK_PANEL_FROM_REQUANT, WK_DTYPE_Q8_0, NULL, true},
    /* Q2_K has a min per 16 elements: requantized; Q3_K's scale * value products are 8-bit
     * integers */
    [WK_DTYPE_Q2_K] = {"Q2_K", QK_K, 84, q2_k_row, WK_PANEL_FROM_REQUANT, WK_DTYPE_Q8_0, NULL,
                       true},
    [WK_DTYPE_Q3_K] = {"Q3_K", QK_K, 110, q3_k_row, WK_PANEL_FROM_CONVERT, WK_DTYPE_Q8_0,
                       wk_q3_k_to_q8_0, true},
    /* IQ4 panels: the 4-bit indices, looked up in the grid by the kernels */
    [WK_DTYPE_IQ4_NL] = {"IQ4_NL", QK, 18, iq4_nl_row, WK_PANEL_FROM_BLOCKS, WK_DTYPE_IQ4_NL, NULL,
                         true},
    [WK_DTYPE_IQ4_XS] = {"IQ4_XS", QK_K, 136, iq4_xs_row, WK_PANEL_FROM_CONVERT, WK_DTYPE_IQ4_NL,
                         wk_iq4_xs_to_iq4_nl, true},
};

#define N_TRAITS (sizeof(TRAITS) / sizeof(TRAITS[0]))

const wk_dtype_traits *wk_dtype_traits_of(uint32_t t) {
    return t < N_TRAITS && TRAITS[t].name != NULL ? &TRAITS[t] : NULL;
}

bool wk_dtype_supported(uint32_t t) {
    return wk_dtype_traits_of(t) != NULL;
}

const char *wk_dtype_name(uint32_t t) {
    const wk_dtype_traits *tr = wk_dtype_traits_of(t);
    return tr != NULL ? tr->name : "unknown";
}

bool wk_dtype_from_name(const char *s, wk_dtype *out) {
    for (uint32_t t = 0; s != NULL && t < N_TRAITS; t++) {
        const char *name = TRAITS[t].name;
        if (name == NULL) {
            continue;
        }
        size_t i = 0;
        while (name[i] != '\0' && toupper((unsigned char)s[i]) == name[i]) {
            i++;
        }
        if (name[i] == '\0' && s[i] == '\0') {
            *out = (wk_dtype)t;
            return true;
        }
    }
    return false;
}

uint32_t wk_dtype_block_elems(wk_dtype t) {
    const wk_dtype_traits *tr = wk_dtype_traits_of(t);
    return tr != NULL ? tr->block_elems : 0;
}

uint32_t wk_dtype_block_bytes(wk_dtype t) {
    const wk_dtype_traits *tr = wk_dtype_traits_of(t);
    return tr != NULL ? tr->block_bytes : 0;
}

size_t wk_dtype_row_bytes(wk_dtype t, int64_t n) {
    const wk_dtype_traits *tr = wk_dtype_traits_of(t);
    if (tr == NULL || n < 0 || n % tr->block_elems != 0) {
        return 0;
    }
    return (size_t)(n / tr->block_elems) * tr->block_bytes;
}

void wk_dequantize_row(wk_dtype t, const void *src, float *dst, int64_t n) {
    const wk_dtype_traits *tr = wk_dtype_traits_of(t);
    if (tr != NULL) {
        tr->to_f32(src, dst, n);
    }
}
