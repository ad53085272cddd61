/*
 * quant_test: element types, half/bfloat conversions and row dequantization.
 *
 * Three kinds of checks: hand-built blocks packed from known logical values (scales, mins,
 * quants) following the GGUF block layouts; vectors dequantized by the `gguf` Python package
 * (tests/unit/worker/data/quant_vectors.bin, made by gen_quant_vectors.py); and rows of the
 * bundled model dequantized by the same package.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gguf.h"
#include "quant.h"

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void assert_close(float got, float want, float tol) {
    if (!(fabsf(got - want) <= tol * (1.0f + fabsf(want)))) {
        fail_msg("got %.9g want %.9g", (double)got, (double)want);
    }
}

static void test_type_table(void **state) {
    (void)state;
    assert_true(wk_dtype_supported(WK_DTYPE_Q4_1));
    assert_true(wk_dtype_supported(WK_DTYPE_BF16));
    assert_true(wk_dtype_supported(WK_DTYPE_Q5_0));
    assert_false(wk_dtype_supported(16)); /* IQ2_XXS: valid GGUF, not supported here */
    assert_false(wk_dtype_supported(99)); /* not a type */
    assert_string_equal(wk_dtype_name(WK_DTYPE_Q6_K), "Q6_K");
    assert_string_equal(wk_dtype_name(77), "unknown");
    assert_int_equal(wk_dtype_block_elems(WK_DTYPE_Q8_0), 32);
    assert_int_equal(wk_dtype_block_elems(WK_DTYPE_Q4_K), 256);
    assert_int_equal(wk_dtype_block_elems(WK_DTYPE_F16), 1);
    assert_int_equal(wk_dtype_block_elems((wk_dtype)16), 0);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q5_0), 22);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q5_1), 24);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q2_K), 84);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q3_K), 110);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_IQ4_NL), 18);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_IQ4_XS), 136);
    assert_int_equal(wk_dtype_block_elems(WK_DTYPE_IQ4_XS), 256);
    assert_string_equal(wk_dtype_name(WK_DTYPE_IQ4_NL), "IQ4_NL");
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q4_0), 18);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q4_1), 20);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q8_0), 34);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q4_K), 144);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q5_K), 176);
    assert_int_equal(wk_dtype_block_bytes(WK_DTYPE_Q6_K), 210);
    assert_int_equal(wk_dtype_row_bytes(WK_DTYPE_Q4_1, 576), 18 * 20);
    assert_int_equal(wk_dtype_row_bytes(WK_DTYPE_Q4_1, 33), 0);
    assert_int_equal(wk_dtype_row_bytes(WK_DTYPE_Q6_K, 512), 420);
    assert_int_equal(wk_dtype_row_bytes(WK_DTYPE_F32, 3), 12);
    assert_int_equal(wk_dtype_row_bytes(WK_DTYPE_F32, -1), 0);
}

/* Every traits row is self-consistent: names round-trip, rows have a converter, panel rows
 * name a layout the CPU panels have and CONVERT rows a converter. */
static void test_traits_rows(void **state) {
    (void)state;
    int rows = 0;
    for (uint32_t t = 0; t < 64; t++) {
        const wk_dtype_traits *tr = wk_dtype_traits_of(t);
        assert_true((tr != NULL) == wk_dtype_supported(t));
        if (tr == NULL) {
            continue;
        }
        rows++;
        wk_dtype back;
        assert_true(wk_dtype_from_name(tr->name, &back));
        assert_int_equal(back, t);
        assert_non_null(tr->to_f32);
        assert_true(tr->block_elems == 1 || tr->block_elems % 32 == 0);
        assert_true(tr->block_bytes > 0);
        if (tr->panel_from != WK_PANEL_FROM_NONE) {
            assert_true(tr->panel_kind == WK_DTYPE_Q4_1 || tr->panel_kind == WK_DTYPE_Q8_0 ||
                        tr->panel_kind == WK_DTYPE_F16 || tr->panel_kind == WK_DTYPE_F32 ||
                        tr->panel_kind == WK_DTYPE_IQ4_NL);
        }
        assert_true((tr->panel_from == WK_PANEL_FROM_CONVERT) == (tr->to_panel != NULL));
        if (tr->panel_from == WK_PANEL_FROM_REQUANT) {
            assert_int_equal(tr->panel_kind, WK_DTYPE_Q8_0);
        }
    }
    assert_true(rows >= 9);
    wk_dtype t;
    assert_true(wk_dtype_from_name("q4_k", &t));
    assert_int_equal(t, WK_DTYPE_Q4_K);
    assert_false(wk_dtype_from_name("q4", &t));
    assert_false(wk_dtype_from_name("q4_k_m", &t));
    assert_false(wk_dtype_from_name(NULL, &t));
    assert_null(wk_dtype_traits_of(99));
}

static void test_f16(void **state) {
    (void)state;
    assert_int_equal(wk_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(wk_f32_to_f16(-2.0f), 0xC000);
    assert_int_equal(wk_f32_to_f16(65504.0f), 0x7BFF);
    assert_int_equal(wk_f32_to_f16(65520.0f), 0x7C00); /* rounds up to inf */
    assert_int_equal(wk_f32_to_f16(1e10f), 0x7C00);
    assert_int_equal(wk_f32_to_f16(ldexpf(1.0f, -24)), 0x0001); /* smallest subnormal */
    assert_int_equal(wk_f32_to_f16(ldexpf(1.0f, -26)), 0x0000);
    assert_int_equal(wk_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3C00);     /* tie -> even */
    assert_int_equal(wk_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3C02); /* tie -> even */
    assert_true(isnan(wk_f16_to_f32(wk_f32_to_f16(NAN))));
    assert_true(isinf(wk_f16_to_f32(0x7C00)));
    assert_true(wk_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(wk_f16_to_f32(0x3555) > 0.333f && wk_f16_to_f32(0x3555) < 0.3334f);
    /* every finite half survives a round trip through f32 exactly */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0) {
            continue; /* NaN payloads need not survive */
        }
        if (wk_f32_to_f16(wk_f16_to_f32((uint16_t)h)) != h) {
            fail_msg("half 0x%04x does not round-trip", h);
        }
    }
}

static void test_bf16(void **state) {
    (void)state;
    assert_int_equal(wk_f32_to_bf16(1.0f), 0x3F80);
    assert_true(wk_bf16_to_f32(0x3F80) == 1.0f);
    assert_int_equal(wk_f32_to_bf16(-3.0f), 0xC040);
    /* 1 + 2^-8 is a tie between 0x3F80 and 0x3F81: round to even */
    assert_int_equal(wk_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3F80);
    assert_int_equal(wk_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3F82);
    assert_true(isnan(wk_bf16_to_f32(wk_f32_to_bf16(NAN))));
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0) {
            continue;
        }
        assert_int_equal(wk_f32_to_bf16(wk_bf16_to_f32((uint16_t)h)), h);
    }
}

static void test_q4_0_q4_1_q8_0_hand(void **state) {
    (void)state;
    uint8_t b[34];
    float y[32];
    /* Q4_0: d = 0.5, element j has quant j % 16 -> (q - 8) * 0.5 */
    memset(b, 0, sizeof(b));
    put16(b, wk_f32_to_f16(0.5f));
    for (int j = 0; j < 16; j++) {
        int lo = j % 16, hi = (j + 16) % 16;
        b[2 + j] = (uint8_t)(lo | (hi << 4));
    }
    wk_dequantize_row(WK_DTYPE_Q4_0, b, y, 32);
    for (int j = 0; j < 32; j++) {
        assert_true(y[j] == (float)((j % 16) - 8) * 0.5f);
    }
    /* Q4_1: d = 0.25, m = -1, element j quant 15 - j % 16 */
    memset(b, 0, sizeof(b));
    put16(b, wk_f32_to_f16(0.25f));
    put16(b + 2, wk_f32_to_f16(-1.0f));
    for (int j = 0; j < 16; j++) {
        b[4 + j] = (uint8_t)((15 - j) | ((15 - j) << 4));
    }
    wk_dequantize_row(WK_DTYPE_Q4_1, b, y, 32);
    for (int j = 0; j < 32; j++) {
        assert_true(y[j] == (float)(15 - j % 16) * 0.25f - 1.0f);
    }
    /* Q8_0: d = 2, quants -128, -127 ... */
    put16(b, wk_f32_to_f16(2.0f));
    for (int j = 0; j < 32; j++) {
        b[2 + j] = (uint8_t)(int8_t)(j * 8 - 128);
    }
    wk_dequantize_row(WK_DTYPE_Q8_0, b, y, 32);
    for (int j = 0; j < 32; j++) {
        assert_true(y[j] == (float)(j * 8 - 128) * 2.0f);
    }
}

/* Packs the eight 6-bit (scale, min) pairs of a K-quant super-block into 12 bytes. */
static void pack_k_scales(const uint8_t sc[8], const uint8_t mn[8], uint8_t out[12]) {
    for (int j = 0; j < 4; j++) {
        out[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        out[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        out[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
    }
}

static void test_q4_k_q5_k_hand(void **state) {
    (void)state;
    uint8_t sc[8] = {1, 2, 17, 63, 5, 33, 48, 63};
    uint8_t mn[8] = {0, 3, 9, 1, 40, 16, 63, 7};
    float d = 0.125f, dmin = 0.0625f;
    uint8_t q[256];
    for (int i = 0; i < 256; i++) {
        q[i] = (uint8_t)((i * 7 + 3) % 32); /* 5-bit; Q4_K uses the low 4 bits */
    }
    float y[256];

    uint8_t b4[144];
    memset(b4, 0, sizeof(b4));
    put16(b4, wk_f32_to_f16(d));
    put16(b4 + 2, wk_f32_to_f16(dmin));
    pack_k_scales(sc, mn, b4 + 4);
    /* 4 chunks of 64 elements: byte l of chunk c holds element 64c+l (low) and 64c+32+l */
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            b4[16 + 32 * c + l] =
                (uint8_t)((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4));
        }
    }
    wk_dequantize_row(WK_DTYPE_Q4_K, b4, y, 256);
    for (int i = 0; i < 256; i++) {
        int j = i / 32;
        float want = d * sc[j] * (float)(q[i] & 0xF) - dmin * mn[j];
        assert_close(y[i], want, 1e-6f);
    }

    uint8_t b5[176];
    memset(b5, 0, sizeof(b5));
    put16(b5, wk_f32_to_f16(d));
    put16(b5 + 2, wk_f32_to_f16(dmin));
    pack_k_scales(sc, mn, b5 + 4);
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            b5[48 + 32 * c + l] =
                (uint8_t)((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4));
            b5[16 + l] |= (uint8_t)(((q[64 * c + l] >> 4) & 1) << (2 * c));
            b5[16 + l] |= (uint8_t)(((q[64 * c + 32 + l] >> 4) & 1) << (2 * c + 1));
        }
    }
    wk_dequantize_row(WK_DTYPE_Q5_K, b5, y, 256);
    for (int i = 0; i < 256; i++) {
        int j = i / 32;
        float want = d * sc[j] * (float)q[i] - dmin * mn[j];
        assert_close(y[i], want, 1e-6f);
    }
}

static void test_q6_k_hand(void **state) {
    (void)state;
    uint8_t b[210];
    int8_t sc[16];
    uint8_t q[256];
    float d = 0.03125f;
    memset(b, 0, sizeof(b));
    for (int i = 0; i < 16; i++) {
        sc[i] = (int8_t)(i * 9 - 70);
        b[192 + i] = (uint8_t)sc[i];
    }
    for (int i = 0; i < 256; i++) {
        q[i] = (uint8_t)((i * 13 + 5) % 64);
    }
    put16(b + 208, wk_f32_to_f16(d));
    /* two halves of 128: ql low nibbles hold elements +0..63, high nibbles +64..127; qh holds
     * the top two bits of elements +l, +32+l, +64+l, +96+l in bit pairs 0..3 */
    for (int n = 0; n < 2; n++) {
        uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
        const uint8_t *qq = q + 128 * n;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((qq[l] & 0xF) | ((qq[64 + l] & 0xF) << 4));
            ql[32 + l] = (uint8_t)((qq[32 + l] & 0xF) | ((qq[96 + l] & 0xF) << 4));
            qh[l] = (uint8_t)((qq[l] >> 4) | ((qq[32 + l] >> 4) << 2) | ((qq[64 + l] >> 4) << 4) |
                              ((qq[96 + l] >> 4) << 6));
        }
    }
    float y[256];
    wk_dequantize_row(WK_DTYPE_Q6_K, b, y, 256);
    for (int i = 0; i < 256; i++) {
        float want = d * sc[i / 16] * (float)(q[i] - 32);
        assert_close(y[i], want, 1e-6f);
    }
}

/* Q4_K -> 8 x Q4_1 keeps every 4-bit value; only the scales and mins round to f16. */
static void test_q4_k_to_q4_1(void **state) {
    (void)state;
    uint32_t rng = 7;
    for (int it = 0; it < 200; it++) {
        uint8_t k[144], q1[160];
        for (int i = 0; i < 144; i++) {
            rng = rng * 1664525u + 1013904223u;
            k[i] = (uint8_t)(rng >> 24);
        }
        put16(k, wk_f32_to_f16(0.0001f * (float)(it % 13 + 1)));
        put16(k + 2, wk_f32_to_f16(0.00037f * (float)(it % 7)));
        wk_q4_k_to_q4_1(k, q1);
        float want[256], got[256];
        wk_dequantize_row(WK_DTYPE_Q4_K, k, want, 256);
        wk_dequantize_row(WK_DTYPE_Q4_1, q1, got, 256);
        float d = wk_f16_to_f32((uint16_t)(k[0] | k[1] << 8));
        float dmin = wk_f16_to_f32((uint16_t)(k[2] | k[3] << 8));
        for (int i = 0; i < 256; i++) {
            /* |d sc q| <= d 63 15, |dmin m| <= dmin 63: each rounded by at most 2^-11 */
            float tol = (d * 63.0f * 15.0f + dmin * 63.0f) / 2048.0f + 1e-9f;
            if (!(fabsf(got[i] - want[i]) <= tol)) {
                fail_msg("block %d element %d: got %.9g want %.9g", it, i, (double)got[i],
                         (double)want[i]);
            }
        }
    }
}

static void put16le(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Known values of the 5-bit types, worked out by hand from the layouts in quant.c. */
static void test_q5_hand(void **state) {
    (void)state;
    uint8_t b[24] = {0};
    float y[32];
    /* Q5_0: d = 0.5; qh bits 0 and 31; element 0 low nibble 1, 16 -> 2, 31 -> 15 */
    put16le(b, 0x3800);
    b[2] = 0x01, b[5] = 0x80;
    b[6] = 0x21, b[6 + 15] = 0xF0;
    wk_dequantize_row(WK_DTYPE_Q5_0, b, y, 32);
    assert_true(y[0] == 0.5f);   /* (1 + 16 - 16) * 0.5 */
    assert_true(y[1] == -8.0f);  /* (0 - 16) * 0.5 */
    assert_true(y[16] == -7.0f); /* (2 - 16) * 0.5 */
    assert_true(y[31] == 7.5f);  /* (15 + 16 - 16) * 0.5 */
    /* Q5_1: d = 0.5, m = 1; the same values at offset 4 */
    memset(b, 0, sizeof(b));
    put16le(b, 0x3800);
    put16le(b + 2, 0x3C00);
    b[4] = 0x01, b[7] = 0x80;
    b[8] = 0x21, b[8 + 15] = 0xF0;
    wk_dequantize_row(WK_DTYPE_Q5_1, b, y, 32);
    assert_true(y[0] == 9.5f); /* 17 * 0.5 + 1 */
    assert_true(y[1] == 1.0f);
    assert_true(y[16] == 2.0f);
    assert_true(y[31] == 16.5f);
}

static void test_q2_k_q3_k_hand(void **state) {
    (void)state;
    uint8_t b[110] = {0};
    float y[256];
    /* Q2_K: d = 1, dmin = 0.5; sub-block 0: sc 1 mn 2, 1: sc 3 mn 0, 2: sc 2 mn 1 */
    b[0] = 0x21, b[1] = 0x03, b[2] = 0x12;
    b[16 + 0] = 0xE4;  /* byte 0: fields 0, 1, 2, 3 -> elements 0, 32, 64, 96 */
    b[16 + 16] = 0x03; /* element 16: 3 */
    put16le(b + 80, 0x3C00);
    put16le(b + 82, 0x3800);
    wk_dequantize_row(WK_DTYPE_Q2_K, b, y, 256);
    assert_true(y[0] == -1.0f); /* 1 * 0 - 0.5 * 2 */
    assert_true(y[1] == -1.0f);
    assert_true(y[16] == 9.0f);  /* 3 * 3 - 0 */
    assert_true(y[32] == 1.5f);  /* sub-block 2: 2 * 1 - 0.5 * 1 */
    assert_true(y[96] == 0.0f);  /* sub-block 6: scale 0, min 0 */
    assert_true(y[255] == 0.0f); /* sub-block 15 */
    /* Q3_K: d = 1; every scale 32 (0) but scale 0 = 33 (1) and scale 8 = 47 (15) */
    memset(b, 0, sizeof(b));
    b[96 + 0] = 0xF1;
    memset(b + 96 + 8, 0xAA, 4);
    put16le(b + 108, 0x3C00);
    b[32 + 0] = 0x03;  /* element 0: 3 */
    b[0] = 0x01;       /* hmask bit 0 of byte 0: element 0 keeps 3 (no -4) */
    b[32 + 32] = 0x02; /* element 128: 2, hmask bit 4 clear: 2 - 4 */
    wk_dequantize_row(WK_DTYPE_Q3_K, b, y, 256);
    assert_true(y[0] == 3.0f);
    assert_true(y[1] == -4.0f);    /* 1 * (0 - 4) */
    assert_true(y[128] == -30.0f); /* 15 * (2 - 4) */
    assert_true(y[16] == 0.0f);    /* scale 1 is 0 */
}

static void test_iq4_hand(void **state) {
    (void)state;
    uint8_t b[136] = {0};
    float y[256];
    put16le(b, 0x3800); /* IQ4_NL: d = 0.5 */
    b[2] = 0xF0;
    wk_dequantize_row(WK_DTYPE_IQ4_NL, b, y, 32);
    assert_true(y[0] == -63.5f); /* -127 * 0.5 */
    assert_true(y[16] == 56.5f); /* 113 * 0.5 */
    assert_true(y[1] == -63.5f);
    memset(b, 0, sizeof(b)); /* IQ4_XS: d = 1; sub-block 0 scale 33 (1), 1: 2 (-30) */
    put16le(b, 0x3C00);
    put16le(b + 2, 0x0002);
    b[4] = 0x21;
    b[8] = 0x98;
    wk_dequantize_row(WK_DTYPE_IQ4_XS, b, y, 256);
    assert_true(y[0] == 1.0f);     /* grid[8] = 1 */
    assert_true(y[16] == 13.0f);   /* grid[9] = 13 */
    assert_true(y[32] == 3810.0f); /* -30 * -127 */
    assert_true(y[64] == 4064.0f); /* sub-block 2: scale 0 - 32 = -32, times -127 */
}

/* The panels' conversions keep every value (Q5_0, Q3_K into Q8_0; IQ4_XS into IQ4_NL within
 * its f16 scale);
 * Q3_K's one overflowing product (-32 * -4) is requantized within 8-bit precision. */
static void test_to_q8_0(void **state) {
    (void)state;
    uint32_t rng = 7;
    static const struct {
        wk_dtype t;
        void (*conv)(const void *, void *);
        int d_off;
        float tol; /* relative to the block's largest value */
    } cases[] = {{WK_DTYPE_Q5_0, wk_q5_0_to_q8_0, 0, 0.0f},
                 {WK_DTYPE_Q3_K, wk_q3_k_to_q8_0, 108, 0.0f},
                 {WK_DTYPE_IQ4_XS, wk_iq4_xs_to_iq4_nl, 0, 1.0f / 2048.0f}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        wk_dtype t = cases[c].t;
        uint32_t be = wk_dtype_block_elems(t), bb = wk_dtype_block_bytes(t);
        for (int iter = 0; iter < 200; iter++) {
            uint8_t b[256], q8[8 * 34];
            for (uint32_t i = 0; i < bb; i++) {
                rng = rng * 1664525u + 1013904223u;
                b[i] = (uint8_t)(rng >> 24);
            }
            put16le(b + cases[c].d_off, wk_f32_to_f16(0.01f * (float)(iter % 13 + 1)));
            if (t == WK_DTYPE_Q3_K) {
                /* no scale stored as 0 (-32): the products stay within int8 */
                for (int j = 0; j < 8; j++) {
                    b[96 + j] |= 0x11;
                }
            }
            float want[256], got[256];
            wk_dequantize_row(t, b, want, be);
            cases[c].conv(b, q8);
            wk_dequantize_row(t == WK_DTYPE_IQ4_XS ? WK_DTYPE_IQ4_NL : WK_DTYPE_Q8_0, q8, got, be);
            for (uint32_t i = 0; i < be; i++) {
                float amax = 0;
                for (uint32_t k = i / 32 * 32; k < i / 32 * 32 + 32; k++) {
                    amax = fabsf(want[k]) > amax ? fabsf(want[k]) : amax;
                }
                if (!(fabsf(got[i] - want[i]) <= cases[c].tol * amax)) {
                    fail_msg("%s element %u: got %.9g want %.9g", wk_dtype_name(t), i,
                             (double)got[i], (double)want[i]);
                }
            }
        }
    }
    /* Q3_K with scale 0 stored as 0 (-32) and a value -4: 128 does not fit int8 */
    uint8_t b[110] = {0}, q8[8 * 34];
    memset(b + 96 + 8, 0xAA, 4);
    b[96] = 0xF0; /* scale 0: 0 | 2 << 4 = 32 -> 0; set its high bits to 0: -32 */
    b[104] = 0xA8;
    put16le(b + 108, 0x3C00);
    float want[256], got[256];
    wk_dequantize_row(WK_DTYPE_Q3_K, b, want, 256);
    assert_true(want[0] == 128.0f); /* -32 * (0 - 4) */
    wk_q3_k_to_q8_0(b, q8);
    wk_dequantize_row(WK_DTYPE_Q8_0, q8, got, 256);
    for (int i = 0; i < 256; i++) {
        assert_true(fabsf(got[i] - want[i]) <= 128.0f / 254.0f + 128.0f / 2048.0f);
    }
}

static void test_float_rows(void **state) {
    (void)state;
    float src[5] = {1.5f, -2.25f, 0.0f, 1e-3f, 3e4f}, y[5];
    uint16_t h[5], bf[5];
    for (int i = 0; i < 5; i++) {
        h[i] = wk_f32_to_f16(src[i]);
        bf[i] = wk_f32_to_bf16(src[i]);
    }
    wk_dequantize_row(WK_DTYPE_F32, src, y, 5);
    assert_memory_equal(y, src, sizeof(src));
    wk_dequantize_row(WK_DTYPE_F16, h, y, 5);
    for (int i = 0; i < 5; i++) {
        assert_close(y[i], src[i], 1e-3f);
    }
    wk_dequantize_row(WK_DTYPE_BF16, bf, y, 5);
    for (int i = 0; i < 5; i++) {
        assert_close(y[i], src[i], 1e-2f);
    }
}

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(sz > 0 ? (size_t)sz : 1);
    if (buf != NULL && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return buf;
}

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Vectors dequantized by the gguf Python package: every supported type, plus model rows. */
static void test_python_vectors(void **state) {
    (void)state;
    const char *src = getenv("SLUICE_SOURCE_DIR");
    /* tests/reference/test_quant_types.py passes fresh random blocks in a file of its own */
    const char *own = getenv("SLUICE_QUANT_VECTORS");
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/unit/worker/data/quant_vectors.bin",
             src != NULL ? src : ".");
    if (own != NULL) {
        snprintf(path, sizeof(path), "%s", own);
    }
    size_t n = 0;
    uint8_t *buf = read_file(path, &n);
    assert_non_null(buf);
    const char *model = getenv("SLUICE_TEST_MODEL");
    wk_gguf *g = NULL;
    char err[256];
    if (model != NULL) {
        assert_int_equal(wk_gguf_open(model, &g, err, sizeof(err)), CM_OK);
    }
    int types_seen = 0, rows_seen = 0;
    size_t off = 0;
    while (off < n) {
        uint32_t kind = rd32(buf + off);
        off += 4;
        if (kind == 0) {
            wk_dtype t = (wk_dtype)rd32(buf + off);
            uint32_t ne = rd32(buf + off + 4);
            off += 8;
            size_t rb = wk_dtype_row_bytes(t, ne);
            assert_true(rb > 0);
            float *y = malloc(ne * sizeof(float));
            wk_dequantize_row(t, buf + off, y, ne);
            for (uint32_t i = 0; i < ne; i++) {
                /* bit-exact: the same f32 operations in the same order as the format's
                 * reference */
                float want;
                memcpy(&want, buf + off + rb + 4 * i, 4);
                if (memcmp(&y[i], &want, 4) != 0 && !(y[i] == 0.0f && want == 0.0f)) {
                    fail_msg("%s element %u: got %.9g want %.9g", wk_dtype_name(t), i, (double)y[i],
                             (double)want);
                }
            }
            free(y);
            off += rb + 4 * (size_t)ne;
            types_seen++;
        } else {
            uint32_t nl = rd32(buf + off);
            char name[128];
            assert_true(nl < sizeof(name));
            memcpy(name, buf + off + 4, nl);
            name[nl] = '\0';
            off += 4 + nl;
            uint32_t row = rd32(buf + off), type = rd32(buf + off + 4), ne = rd32(buf + off + 8);
            off += 12;
            if (g != NULL) {
                const wk_gguf_tensor *t = wk_gguf_find_tensor(g, name);
                assert_non_null(t);
                assert_int_equal(t->type, type);
                assert_int_equal(t->ne[0], ne);
                float *y = malloc(ne * sizeof(float));
                size_t rb = wk_dtype_row_bytes(t->type, ne);
                wk_dequantize_row(t->type, (const uint8_t *)t->data + rb * row, y, ne);
                for (uint32_t i = 0; i < ne; i++) {
                    float want;
                    memcpy(&want, buf + off + 4 * i, 4);
                    if (!(fabsf(y[i] - want) <= 1e-6f * (1.0f + fabsf(want)))) {
                        fail_msg("%s row %u element %u: got %g want %g", name, row, i, (double)y[i],
                                 (double)want);
                    }
                }
                free(y);
                rows_seen++;
            }
            off += 4 * (size_t)ne;
        }
    }
    assert_int_equal(types_seen, 15); /* every type of the traits table */
    if (g != NULL) {
        assert_true(rows_seen >= 10);
    }
    wk_gguf_close(g);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_traits_rows),
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_q4_0_q4_1_q8_0_hand),
        cmocka_unit_test(test_q4_k_q5_k_hand),
        cmocka_unit_test(test_q6_k_hand),
        cmocka_unit_test(test_float_rows),
        cmocka_unit_test(test_python_vectors),
        cmocka_unit_test(test_q4_k_to_q4_1),
        cmocka_unit_test(test_q5_hand),
        cmocka_unit_test(test_q2_k_q3_k_hand),
        cmocka_unit_test(test_iq4_hand),
        cmocka_unit_test(test_to_q8_0),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
