/*
 * cpu_panel_test: 16-row weight panels against dequantize-then-dot in double precision, for
 * every panel type (K-quants within their conversion's bound) and several widths; a token's
 * result bit-identical whatever the tile it runs in (a tile of one, decode, included); bias and
 * accumulation; the level switch (no panels below AVX2) and the packability rules.
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

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_panel.h"
#include "quant.h"

enum { ROWS = 32, NT = 19 }; /* two panels; more tokens than two tiles of 8 */

static uint32_t next(uint32_t *rng) {
    *rng = *rng * 1664525u + 1013904223u;
    return *rng >> 8;
}

/* A random (ROWS, n) weight of type t with finite, varied scales. */
static uint8_t *random_weight(wk_dtype t, int64_t n, uint32_t *rng) {
    size_t rb = wk_dtype_row_bytes(t, n), bsz = wk_dtype_block_bytes(t);
    uint8_t *w = malloc(rb * ROWS);
    assert_non_null(w);
    if (wk_dtype_block_elems(t) == 1) { /* float types: finite values */
        for (size_t i = 0; i < rb * ROWS / bsz; i++) {
            float f = 0.05f * ((float)(next(rng) % 2001) / 1000.0f - 1.0f);
            if (t == WK_DTYPE_F16) {
                uint16_t h = wk_f32_to_f16(f);
                memcpy(w + 2 * i, &h, 2);
            } else {
                memcpy(w + 4 * i, &f, 4);
            }
        }
        return w;
    }
    for (size_t i = 0; i < rb * ROWS; i++) {
        w[i] = (uint8_t)next(rng);
    }
    size_t nblk = rb * ROWS / bsz;
    for (size_t blk = 0; blk < nblk; blk++) {
        uint16_t d = wk_f32_to_f16(0.0005f * (float)(next(rng) % 17 + 1));
        uint16_t m = wk_f32_to_f16(-0.002f * (float)(next(rng) % 9) + 0.001f);
        uint8_t *b = w + bsz * blk;
        if (t == WK_DTYPE_Q6_K || t == WK_DTYPE_Q3_K) { /* d last */
            memcpy(b + bsz - 2, &d, 2);
            continue;
        }
        if (t == WK_DTYPE_Q2_K) { /* scales, qs, then d, dmin */
            memcpy(b + 80, &d, 2);
            memcpy(b + 82, &m, 2);
            continue;
        }
        memcpy(b, &d, 2);
        if (t == WK_DTYPE_Q4_1 || t == WK_DTYPE_Q4_K || t == WK_DTYPE_Q5_K ||
            t == WK_DTYPE_Q5_1) { /* m or dmin */
            memcpy(b + 2, &m, 2);
        }
    }
    return w;
}

static void *panels_of(wk_dtype t, const uint8_t *w, int64_t n) {
    size_t pb = wk_cpu_panel_bytes(t, ROWS, n);
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, 64, pb), 0);
    /* in two calls, as threads would */
    wk_cpu_panel_pack(t, w, ROWS, n, 0, 1, p);
    wk_cpu_panel_pack(t, w, ROWS, n, 1, ROWS / WK_CPU_PANEL_ROWS, p);
    return p;
}

/* Runs tokens [k0, k0 + nt) over both panels into y: (NT, ROWS); float panels read the f32
 * activations xf, the others xq (and corr). */
static void run(wk_dtype t, const uint8_t *pan, int64_t n, const float *xf, const wk_cpu_q8 *xq,
                const int32_t *corr, int k0, int nt, float *y, const float *bias, bool acc) {
    int64_t nb = n / 32;
    size_t pb = wk_cpu_panel_bytes(t, WK_CPU_PANEL_ROWS, n);
    for (int p = 0; p < ROWS / WK_CPU_PANEL_ROWS; p++) {
        float *out[NT];
        for (int k = 0; k < nt; k++) {
            out[k] = y + (size_t)(k0 + k) * ROWS + (size_t)p * WK_CPU_PANEL_ROWS;
        }
        wk_cpu_panel_out o = {.out = out,
                              .bias = bias != NULL ? bias + p * WK_CPU_PANEL_ROWS : NULL,
                              .accumulate = acc};
        wk_cpu_panel_in in = {.xq = xq + (size_t)k0 * (size_t)nb,
                              .corr = corr + (size_t)k0 * (size_t)nb,
                              .xq_stride = (size_t)nb,
                              .xf = xf + (size_t)k0 * (size_t)n,
                              .xf_stride = (size_t)n};
        wk_cpu_panel_mul(t, pan + (size_t)p * pb, &in, nt, &o, n);
    }
}

/* Every panel type the level in effect has. */
static void check_level(void) {
    const wk_dtype types[] = {WK_DTYPE_Q4_0,   WK_DTYPE_Q4_1, WK_DTYPE_Q8_0, WK_DTYPE_Q4_K,
                              WK_DTYPE_Q5_K,   WK_DTYPE_Q6_K, WK_DTYPE_F16,  WK_DTYPE_Q5_0,
                              WK_DTYPE_Q5_1,   WK_DTYPE_Q2_K, WK_DTYPE_Q3_K, WK_DTYPE_IQ4_NL,
                              WK_DTYPE_IQ4_XS, WK_DTYPE_F32};
    const int64_t widths[] = {32, 96, 576, 1536}, k_widths[] = {256, 768, 1536, 2048};
    uint32_t rng = 99;
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        wk_dtype t = types[ti];
        bool kq = wk_dtype_block_elems(t) == 256;
        /* requantized to 8 bits (Q5_K, Q6_K, Q5_1, Q2_K; Q3_K blocks with a product of
         * 128) or scales rounded to f16 (Q4_K, IQ4_XS); the other conversions are exact */
        const wk_dtype_traits *tr = wk_dtype_traits_of(t);
        bool requant = tr->panel_from == WK_PANEL_FROM_REQUANT || t == WK_DTYPE_Q3_K;
        bool f16_scales = t == WK_DTYPE_Q4_K || t == WK_DTYPE_IQ4_XS;
        if (!wk_cpu_panel_type(t)) {
            continue;
        }
        for (size_t wi = 0; wi < 4; wi++) {
            int64_t n = kq ? k_widths[wi] : widths[wi], nb = n / 32;
            uint8_t *w = random_weight(t, n, &rng);
            uint8_t *pan = panels_of(t, w, n);
            float *xf = malloc((size_t)(n * NT) * sizeof(float));
            wk_cpu_q8 *xq = malloc((size_t)(nb * NT) * sizeof(wk_cpu_q8));
            int32_t *corr = malloc((size_t)(nb * NT) * sizeof(int32_t));
            float *wf = malloc((size_t)n * sizeof(float));
            float *y = malloc(sizeof(float) * NT * ROWS), *y1 = malloc(sizeof(float) * NT * ROWS);
            for (int64_t i = 0; i < n * NT; i++) {
                /* outliers in some blocks, zeros in others */
                xf[i] =
                    (i / 32) % 5 == 3 ? 0.0f : sinf((float)i * 0.37f) * (1.0f + (float)(i % 29));
            }
            for (int k = 0; k < NT; k++) {
                wk_cpu_quantize_q8(xf + k * n, xq + k * nb, n);
                wk_cpu_q8_corr(xq + k * nb, corr + k * nb, nb);
            }
            /* each token alone: against the double-precision dot of the dequantized row with
             * the dequantized activations */
            for (int k = 0; k < NT; k++) {
                run(t, pan, n, xf, xq, corr, k, 1, y1, NULL, false);
            }
            for (int r = 0; r < ROWS; r++) {
                wk_dequantize_row(t, w + (size_t)r * wk_dtype_row_bytes(t, n), wf, n);
                for (int k = 0; k < NT; k++) {
                    /* conversion bound: per 32-input block, amax / 254 per weight (8-bit
                     * requantization, f16 scale included) or 2^-11 of each weight (Q4_K's
                     * f16 scales) times the activations' magnitudes */
                    double want = 0, mag = 0, conv = 0;
                    for (int64_t b0 = 0; b0 < n; b0 += 32) {
                        double amax = 0, xs = 0;
                        for (int64_t i = b0; i < b0 + 32; i++) {
                            const wk_cpu_q8 *b = &xq[k * nb + i / 32];
                            /* float panels multiply the f32 activations themselves */
                            double xd = wk_dtype_block_elems(t) == 1 ? (double)xf[k * n + i]
                                                                     : (double)b->d * b->qs[i % 32];
                            want += (double)wf[i] * xd;
                            mag += fabs((double)wf[i] * xd);
                            amax = fabs(wf[i]) > amax ? fabs(wf[i]) : amax;
                            xs += fabs(xd);
                        }
                        conv += requant ? amax * (1.0 / 254 + 1.0 / 1024) * xs : 0.0;
                    }
                    if (f16_scales) {
                        conv = mag / 1024;
                    }
                    double got = y1[k * ROWS + r];
                    if (!(fabs(got - want) <= 1e-5 * mag + conv + 1e-6)) {
                        fail_msg("%s n %lld row %d token %d: got %.9g want %.9g", wk_dtype_name(t),
                                 (long long)n, r, k, got, want);
                    }
                }
            }
            /* every tile size and place gives the same bits */
            for (int nt = 1; nt <= NT; nt++) {
                for (int k0 = 0; k0 + nt <= NT; k0 += nt) {
                    memset(y, 0xFF, sizeof(float) * NT * ROWS);
                    run(t, pan, n, xf, xq, corr, k0, nt, y, NULL, false);
                    if (memcmp(y + k0 * ROWS, y1 + k0 * ROWS, sizeof(float) * nt * ROWS) != 0) {
                        fail_msg("%s n %lld: tokens %d..%d in a tile of %d differ",
                                 wk_dtype_name(t), (long long)n, k0, k0 + nt - 1, nt);
                    }
                }
            }
            /* bias and accumulation: out = (out + dot) + bias */
            float bias[ROWS];
            for (int r = 0; r < ROWS; r++) {
                bias[r] = 0.25f * (float)r - 3.0f;
            }
            for (int i = 0; i < NT * ROWS; i++) {
                y[i] = (float)(i % 7) - 2.5f;
            }
            run(t, pan, n, xf, xq, corr, 0, NT, y, bias, true);
            for (int i = 0; i < NT * ROWS; i++) {
                float want = ((float)(i % 7) - 2.5f + y1[i]) + bias[i % ROWS];
                assert_memory_equal(&y[i], &want, sizeof(float));
            }
            /* the same for a token alone (decode: a kernel of its own at some levels) */
            for (int i = 0; i < ROWS; i++) {
                y[i] = (float)(i % 7) - 2.5f;
            }
            run(t, pan, n, xf, xq, corr, 0, 1, y, bias, true);
            for (int i = 0; i < ROWS; i++) {
                float want = ((float)(i % 7) - 2.5f + y1[i]) + bias[i % ROWS];
                assert_memory_equal(&y[i], &want, sizeof(float));
            }
            free(w);
            free(pan);
            free(xf);
            free(xq);
            free(corr);
            free(wf);
            free(y);
            free(y1);
        }
    }
}

static void test_panels_match_reference(void **state) {
    (void)state;
    int levels = 0;
    for (int level = WK_CPU_ISA_AVX2; level <= WK_CPU_ISA_AVX512; level++) {
        if (wk_cpu_kernels_use((wk_cpu_isa)level) != (wk_cpu_isa)level) {
            print_message("kernel level %d not on this CPU: its panels untested\n", level);
            continue;
        }
        assert_true(wk_cpu_panel_type(WK_DTYPE_Q4_1));
        check_level();
        levels++;
    }
    wk_cpu_kernels_use(WK_CPU_ISA_AVX512);
    if (levels == 0) {
        assert_false(wk_cpu_panel_type(WK_DTYPE_Q4_1));
    }
}

static void test_levels_and_shapes(void **state) {
    (void)state;
    assert_true(wk_cpu_panel_packable(WK_DTYPE_Q4_1, 16, 32));
    assert_true(wk_cpu_panel_packable(WK_DTYPE_Q8_0, 49152, 576));
    assert_true(wk_cpu_panel_packable(WK_DTYPE_Q4_1, 300, 256)); /* last panel padded */
    assert_int_equal(wk_cpu_panel_bytes(WK_DTYPE_Q4_1, 300, 256), 19 * 8 * 320);
    assert_false(wk_cpu_panel_packable(WK_DTYPE_Q4_1, 16, 48));
    assert_true(wk_cpu_panel_packable(WK_DTYPE_F16, 16, 32));
    assert_true(wk_cpu_panel_packable(WK_DTYPE_F32, 16, 32));
    assert_false(wk_cpu_panel_packable(WK_DTYPE_F32, 16, 48));
    assert_true(wk_cpu_panel_packable(WK_DTYPE_Q4_K, 16, 256));
    assert_false(wk_cpu_panel_packable(WK_DTYPE_Q6_K, 16, 288)); /* not whole K-quant blocks */
    assert_false(wk_cpu_panel_packable(WK_DTYPE_BF16, 16, 256)); /* would double its bytes */
    assert_int_equal(wk_cpu_panel_bytes(WK_DTYPE_F32, 32, 64), 32 * 64 * 4);
    /* panels take the GGUF bytes (Q4_0 also stores m) */
    assert_int_equal(wk_cpu_panel_bytes(WK_DTYPE_Q4_1, 32, 576),
                     wk_dtype_row_bytes(WK_DTYPE_Q4_1, 576) * 32);
    assert_int_equal(wk_cpu_panel_bytes(WK_DTYPE_Q8_0, 32, 576),
                     wk_dtype_row_bytes(WK_DTYPE_Q8_0, 576) * 32);
    if (wk_cpu_kernels_use(WK_CPU_ISA_AVX2) == WK_CPU_ISA_AVX2) {
        assert_true(wk_cpu_panel_type(WK_DTYPE_Q4_K));
        assert_true(wk_cpu_panel_type(WK_DTYPE_Q8_0));
        assert_true(wk_cpu_panel_type(WK_DTYPE_Q6_K));
    }
    wk_cpu_kernels_use(WK_CPU_ISA_SCALAR);
    assert_false(wk_cpu_panel_type(WK_DTYPE_Q4_1));
    assert_false(wk_cpu_panel_type(WK_DTYPE_F32));
    wk_cpu_kernels_use(WK_CPU_ISA_AVX512);
    assert_false(wk_cpu_panel_type(WK_DTYPE_BF16));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_panels_match_reference),
        cmocka_unit_test(test_levels_and_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
