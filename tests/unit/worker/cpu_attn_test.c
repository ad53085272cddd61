/*
 * cpu_attn_test: the attention block kernels at every kernel level against double-precision
 * sums, f16 and f32 blocks, several head counts, head sizes and block fill levels; a head's
 * bits do not depend on how many heads run with it; nothing is written past the valid keys.
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

#include "backend/cpu/cpu_attn.h"
#include "backend/cpu/cpu_kernels.h"
#include "quant.h"

enum { MAX_NH = 7, MAX_HD = 128, MAX_BT = 32 };

static float val(int i, float f) {
    return sinf((float)i * f) * (1.0f + (float)(i % 5) * 0.25f);
}

/* One configuration at the level in effect. */
static void check(bool f16, int nh, int hd, int bt, int n) {
    float q[MAX_NH * MAX_HD], kf[MAX_HD * MAX_BT], vf[MAX_BT * MAX_HD];
    uint16_t kh[MAX_HD * MAX_BT], vh[MAX_BT * MAX_HD];
    for (int i = 0; i < nh * hd; i++) {
        q[i] = val(i, 0.31f);
    }
    for (int i = 0; i < hd * bt; i++) {
        kh[i] = wk_f32_to_f16(val(i, 0.17f));
        kf[i] = wk_f16_to_f32(kh[i]); /* the same values in both types */
        vh[i] = wk_f32_to_f16(val(i, 0.23f));
        vf[i] = wk_f16_to_f32(vh[i]);
    }
    const void *k = f16 ? (const void *)kh : (const void *)kf;
    const void *v = f16 ? (const void *)vh : (const void *)vf;
    enum { SS = MAX_BT + 8 };
    float s[MAX_NH * SS], s1[MAX_NH * SS];
    for (int i = 0; i < MAX_NH * SS; i++) {
        s[i] = -7.0f;
    }
    float scale = 0.125f;
    wk_cpu_attn_scores(f16, q, nh, hd, k, bt, n, scale, s, SS);
    for (int h = 0; h < nh; h++) {
        for (int j = 0; j < SS; j++) {
            if (j >= n) {
                assert_true(s[h * SS + j] == -7.0f); /* untouched past the valid keys */
                continue;
            }
            double want = 0, mag = 0;
            for (int d = 0; d < hd; d++) {
                want += (double)q[h * hd + d] * kf[d * bt + j];
                mag += fabs((double)q[h * hd + d] * kf[d * bt + j]);
            }
            want *= scale;
            if (!(fabs(s[h * SS + j] - want) <= 1e-5 * mag * scale + 1e-7)) {
                fail_msg("scores f16 %d nh %d hd %d bt %d n %d: head %d key %d got %g want %g", f16,
                         nh, hd, bt, n, h, j, (double)s[h * SS + j], want);
            }
        }
        /* the head alone gives the same bits */
        wk_cpu_attn_scores(f16, q + h * hd, 1, hd, k, bt, n, scale, s1, SS);
        assert_memory_equal(s1, s + h * SS, (size_t)n * sizeof(float));
    }
    /* values: probabilities from the scores, accumulated onto a non-zero start */
    float o[MAX_NH * MAX_HD], o1[MAX_HD];
    for (int i = 0; i < nh * hd; i++) {
        o[i] = 0.5f;
    }
    wk_cpu_attn_values(f16, s, SS, nh, hd, v, n, o);
    for (int h = 0; h < nh; h++) {
        for (int d = 0; d < hd; d++) {
            double want = 0.5, mag = 0.5;
            for (int j = 0; j < n; j++) {
                want += (double)s[h * SS + j] * vf[j * hd + d];
                mag += fabs((double)s[h * SS + j] * vf[j * hd + d]);
            }
            if (!(fabs(o[h * hd + d] - want) <= 1e-5 * mag)) {
                fail_msg("values f16 %d nh %d hd %d n %d: head %d dim %d got %g want %g", f16, nh,
                         hd, n, h, d, (double)o[h * hd + d], want);
            }
        }
        for (int d = 0; d < hd; d++) {
            o1[d] = 0.5f;
        }
        wk_cpu_attn_values(f16, s + h * SS, SS, 1, hd, v, n, o1);
        assert_memory_equal(o1, o + h * hd, (size_t)hd * sizeof(float));
    }
}

static void test_levels(void **state) {
    (void)state;
    const int nhs[] = {1, 3, 4, 7}, hds[] = {2, 8, 48, 64, 128}, bts[] = {5, 8, 16, 32};
    int levels = 0;
    for (int level = 0; level < 3; level++) {
        if (wk_cpu_kernels_use((wk_cpu_isa)level) != (wk_cpu_isa)level) {
            continue;
        }
        levels++;
        for (int f16 = 0; f16 < 2; f16++) {
            for (size_t a = 0; a < 4; a++) {
                for (size_t b = 0; b < 5; b++) {
                    for (size_t c = 0; c < 4; c++) {
                        int bt = bts[c];
                        for (int n = 1; n <= bt; n += bt > 8 ? 5 : 1) {
                            check(f16 != 0, nhs[a], hds[b], bt, n);
                        }
                        check(f16 != 0, nhs[a], hds[b], bt, bt);
                    }
                }
            }
        }
    }
    assert_true(levels >= 1);
    wk_cpu_kernels_use(WK_CPU_ISA_AVX512);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
