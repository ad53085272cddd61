/*
 * cpu_attn: attention kernels over KV blocks (see cpu_attn.h).
 *
 * The vector kernels carry their own target attributes and are only called at the kernel
 * level that allows them (wk_cpu_kernels_isa).
 */
#include "cpu_attn.h"

#include "quant.h"
#include "cpu_kernels.h"
#include "cpu_simd_impl.h"

/* Heads whose accumulators a vector kernel keeps in registers at once. */
#define HEAD_TILE 4

static inline float elem(bool f16, const void *base, size_t i) {
    return f16 ? wk_f16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

static void scores_scalar(bool f16, const float *q, int nh, int hd, const void *k, int bt, int n,
                          float scale, float *s, size_t ss) {
    for (int h = 0; h < nh; h++) {
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int d = 0; d < hd; d++) {
                acc += q[(size_t)h * (size_t)hd + (size_t)d] *
                       elem(f16, k, (size_t)d * (size_t)bt + (size_t)j);
            }
            s[(size_t)h * ss + (size_t)j] = acc * scale;
        }
    }
}

static void values_scalar(bool f16, const float *p, size_t ps, int nh, int hd, const void *v, int n,
                          float *out) {
    for (int h = 0; h < nh; h++) {
        float *o = out + (size_t)h * (size_t)hd;
        for (int j = 0; j < n; j++) {
            float w = p[(size_t)h * ps + (size_t)j];
            for (int d = 0; d < hd; d++) {
                o[d] += w * elem(f16, v, (size_t)j * (size_t)hd + (size_t)d);
            }
        }
    }
}

#if HAVE_X86

/*
 * Scores of c heads for 16 keys (kc: key j0's column of the K block). Two accumulators per
 * head (even and odd d) halve the dependency chain; their sum is the dot. Lanes past the n
 * valid keys compute on whatever the block holds there and are not stored.
 */
AVX512 static INLINE void scores16(const float *q, int c, int hd, const uint16_t *kc, int bt,
                                   __mmask16 valid, float scale, float *s, size_t ss) {
    __m512 a0[HEAD_TILE], a1[HEAD_TILE];
#pragma GCC unroll 4
    for (int h = 0; h < c; h++) {
        a0[h] = _mm512_setzero_ps();
        a1[h] = _mm512_setzero_ps();
    }
    for (int d = 0; d < hd; d += 2) {
        __m512 k0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kc + (size_t)d * bt)));
        __m512 k1 =
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kc + (size_t)(d + 1) * bt)));
#pragma GCC unroll 4
        for (int h = 0; h < c; h++) {
            a0[h] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * hd + d]), k0, a0[h]);
            a1[h] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * hd + d + 1]), k1, a1[h]);
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < c; h++) {
        __m512 r = _mm512_mul_ps(_mm512_add_ps(a0[h], a1[h]), _mm512_set1_ps(scale));
        _mm512_mask_storeu_ps(s + (size_t)h * ss, valid, r);
    }
}

AVX512 static void scores_avx512(const float *q, int nh, int hd, const uint16_t *k, int bt, int n,
                                 float scale, float *s, size_t ss) {
    for (int j0 = 0; j0 < n; j0 += 16) {
        __mmask16 valid = n - j0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j0)) - 1);
        for (int h0 = 0; h0 < nh; h0 += HEAD_TILE) {
            int c = nh - h0 < HEAD_TILE ? nh - h0 : HEAD_TILE;
            const float *qh = q + (size_t)h0 * (size_t)hd;
            float *sh = s + (size_t)h0 * ss + (size_t)j0;
#define SC_CALL(C) scores16(qh, C, hd, k + j0, bt, valid, scale, sh, ss)
            WK_CPU_CASES_4(c, SC_CALL)
#undef SC_CALL
        }
    }
}

/* c heads' outputs over nv vectors of 16 dims (out at o, values at v + d0) from n values. */
AVX512 static INLINE void values16(const float *p, size_t ps, int c, int hd, const uint16_t *v,
                                   int n, int nv, float *o) {
    __m512 acc[HEAD_TILE][4];
#pragma GCC unroll 4
    for (int h = 0; h < c; h++) {
#pragma GCC unroll 4
        for (int i = 0; i < nv; i++) {
            acc[h][i] = _mm512_loadu_ps(o + (size_t)h * (size_t)hd + 16 * i);
        }
    }
    for (int j = 0; j < n; j++) {
        __m512 vv[4];
#pragma GCC unroll 4
        for (int i = 0; i < nv; i++) {
            vv[i] = _mm512_cvtph_ps(
                _mm256_loadu_si256((const __m256i *)(v + (size_t)j * (size_t)hd + 16 * i)));
        }
#pragma GCC unroll 4
        for (int h = 0; h < c; h++) {
            __m512 w = _mm512_set1_ps(p[(size_t)h * ps + (size_t)j]);
#pragma GCC unroll 4
            for (int i = 0; i < nv; i++) {
                acc[h][i] = _mm512_fmadd_ps(w, vv[i], acc[h][i]);
            }
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < c; h++) {
#pragma GCC unroll 4
        for (int i = 0; i < nv; i++) {
            _mm512_storeu_ps(o + (size_t)h * (size_t)hd + 16 * i, acc[h][i]);
        }
    }
}

AVX512 static void values_avx512(const float *p, size_t ps, int nh, int hd, const uint16_t *v,
                                 int n, float *out) {
    /* 64 dims at a time where hd allows (a head's sums are the same either way) */
    int step = hd % 64 == 0 ? 64 : 16;
    for (int d0 = 0; d0 < hd; d0 += step) {
        for (int h0 = 0; h0 < nh; h0 += HEAD_TILE) {
            int c = nh - h0 < HEAD_TILE ? nh - h0 : HEAD_TILE;
            const float *ph = p + (size_t)h0 * ps;
            float *oh = out + (size_t)h0 * (size_t)hd + d0;
            if (step == 64) {
#define V4_CALL(C) values16(ph, ps, C, hd, v + d0, n, 4, oh)
                WK_CPU_CASES_4(c, V4_CALL)
#undef V4_CALL
            } else {
#define V1_CALL(C) values16(ph, ps, C, hd, v + d0, n, 1, oh)
                WK_CPU_CASES_4(c, V1_CALL)
#undef V1_CALL
            }
        }
    }
}

/* AVX2: the same kernels over 8 lanes. */
AVX2 static INLINE void scores8(const float *q, int c, int hd, const uint16_t *kc, int bt, int nv,
                                float scale, float *s, size_t ss) {
    __m256 a0[HEAD_TILE], a1[HEAD_TILE];
#pragma GCC unroll 4
    for (int h = 0; h < c; h++) {
        a0[h] = _mm256_setzero_ps();
        a1[h] = _mm256_setzero_ps();
    }
    for (int d = 0; d < hd; d += 2) {
        __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kc + (size_t)d * bt)));
        __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kc + (size_t)(d + 1) * bt)));
#pragma GCC unroll 4
        for (int h = 0; h < c; h++) {
            a0[h] = _mm256_fmadd_ps(_mm256_set1_ps(q[h * hd + d]), k0, a0[h]);
            a1[h] = _mm256_fmadd_ps(_mm256_set1_ps(q[h * hd + d + 1]), k1, a1[h]);
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < c; h++) {
        float r[8];
        _mm256_storeu_ps(r, _mm256_mul_ps(_mm256_add_ps(a0[h], a1[h]), _mm256_set1_ps(scale)));
        for (int j = 0; j < nv; j++) {
            s[(size_t)h * ss + (size_t)j] = r[j];
        }
    }
}

/* One head (decode) against 16 keys: scores8's arithmetic for c = 1 on two vectors of 8 keys
 * at once (the same chains per key, so the same bits), which keeps four multiply-add chains in
 * flight instead of two: a lone head is otherwise bound by their latency. */
AVX2 static void scores8_pair(const float *q, int hd, const uint16_t *kc, int bt, int nv,
                              float scale, float *s) {
    __m256 a0[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 a1[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int d = 0; d < hd; d += 2) {
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) {
            const uint16_t *kv = kc + 8 * v;
            __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kv + (size_t)d * bt)));
            __m256 k1 =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kv + (size_t)(d + 1) * bt)));
            a0[v] = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), k0, a0[v]);
            a1[v] = _mm256_fmadd_ps(_mm256_set1_ps(q[d + 1]), k1, a1[v]);
        }
    }
    float r[16];
#pragma GCC unroll 2
    for (int v = 0; v < 2; v++) {
        _mm256_storeu_ps(r + 8 * v,
                         _mm256_mul_ps(_mm256_add_ps(a0[v], a1[v]), _mm256_set1_ps(scale)));
    }
    for (int j = 0; j < nv; j++) {
        s[j] = r[j];
    }
}

AVX2 static void scores_avx2(const float *q, int nh, int hd, const uint16_t *k, int bt, int n,
                             float scale, float *s, size_t ss) {
    for (int j0 = 0; j0 < n; j0 += 8) {
        int nv = n - j0 < 8 ? n - j0 : 8;
        if (nh == 1 && n - j0 > 8 && j0 + 16 <= bt) {
            scores8_pair(q, hd, k + j0, bt, n - j0 < 16 ? n - j0 : 16, scale, s + j0);
            j0 += 8;
            continue;
        }
        for (int h0 = 0; h0 < nh; h0 += HEAD_TILE) {
            int c = nh - h0 < HEAD_TILE ? nh - h0 : HEAD_TILE;
            const float *qh = q + (size_t)h0 * (size_t)hd;
            float *sh = s + (size_t)h0 * ss + (size_t)j0;
#define SC_CALL(C) scores8(qh, C, hd, k + j0, bt, nv, scale, sh, ss)
            WK_CPU_CASES_4(c, SC_CALL)
#undef SC_CALL
        }
    }
}

AVX2 static INLINE void values8(const float *p, size_t ps, int c, int hd, const uint16_t *v, int n,
                                int nv, float *o) {
    __m256 acc[HEAD_TILE][4];
#pragma GCC unroll 4
    for (int h = 0; h < c; h++) {
#pragma GCC unroll 4
        for (int i = 0; i < nv; i++) {
            acc[h][i] = _mm256_loadu_ps(o + (size_t)h * (size_t)hd + 8 * i);
        }
    }
    for (int j = 0; j < n; j++) {
        __m256 vv[4];
#pragma GCC unroll 4
        for (int i = 0; i < nv; i++) {
            vv[i] = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(v + (size_t)j * (size_t)hd + 8 * i)));
        }
#pragma GCC unroll 4
        for (int h = 0; h < c; h++) {
            __m256 w = _mm256_set1_ps(p[(size_t)h * ps + (size_t)j]);
#pragma GCC unroll 4
            for (int i = 0; i < nv; i++) {
                acc[h][i] = _mm256_fmadd_ps(w, vv[i], acc[h][i]);
            }
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < c; h++) {
#pragma GCC unroll 4
        for (int i = 0; i < nv; i++) {
            _mm256_storeu_ps(o + (size_t)h * (size_t)hd + 8 * i, acc[h][i]);
        }
    }
}

/* One head (decode) over 64 dimensions: values8's arithmetic for c = 1 (each dimension's
 * terms in order of j, so the same bits) with eight chains in flight instead of four. */
AVX2 static void values8_wide(const float *p, int hd, const uint16_t *v, int n, float *o) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        acc[i] = _mm256_loadu_ps(o + 8 * i);
    }
    for (int j = 0; j < n; j++) {
        __m256 w = _mm256_set1_ps(p[j]);
        const uint16_t *vj = v + (size_t)j * (size_t)hd;
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vj + 8 * i)));
            acc[i] = _mm256_fmadd_ps(w, vv, acc[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        _mm256_storeu_ps(o + 8 * i, acc[i]);
    }
}

AVX2 static void values_avx2(const float *p, size_t ps, int nh, int hd, const uint16_t *v, int n,
                             float *out) {
    if (nh == 1 && hd % 64 == 0) {
        for (int d0 = 0; d0 < hd; d0 += 64) {
            values8_wide(p, hd, v + d0, n, out + d0);
        }
        return;
    }
    int step = hd % 32 == 0 ? 32 : 8;
    for (int d0 = 0; d0 < hd; d0 += step) {
        for (int h0 = 0; h0 < nh; h0 += HEAD_TILE) {
            int c = nh - h0 < HEAD_TILE ? nh - h0 : HEAD_TILE;
            const float *ph = p + (size_t)h0 * ps;
            float *oh = out + (size_t)h0 * (size_t)hd + d0;
            if (step == 32) {
#define V4_CALL(C) values8(ph, ps, C, hd, v + d0, n, 4, oh)
                WK_CPU_CASES_4(c, V4_CALL)
#undef V4_CALL
            } else {
#define V1_CALL(C) values8(ph, ps, C, hd, v + d0, n, 1, oh)
                WK_CPU_CASES_4(c, V1_CALL)
#undef V1_CALL
            }
        }
    }
}
#endif /* HAVE_X86 */

void wk_cpu_attn_scores(bool f16, const float *q, int nh, int hd, const void *k, int bt, int n,
                        float scale, float *s, size_t s_stride) {
#if HAVE_X86
    wk_cpu_isa isa = wk_cpu_kernels_isa();
    if (f16 && isa == WK_CPU_ISA_AVX512 && bt % 16 == 0) {
        scores_avx512(q, nh, hd, k, bt, n, scale, s, s_stride);
        return;
    }
    if (f16 && isa >= WK_CPU_ISA_AVX2 && bt % 8 == 0) {
        scores_avx2(q, nh, hd, k, bt, n, scale, s, s_stride);
        return;
    }
#endif
    scores_scalar(f16, q, nh, hd, k, bt, n, scale, s, s_stride);
}

void wk_cpu_attn_values(bool f16, const float *p, size_t p_stride, int nh, int hd, const void *v,
                        int n, float *out) {
#if HAVE_X86
    wk_cpu_isa isa = wk_cpu_kernels_isa();
    if (f16 && isa == WK_CPU_ISA_AVX512 && hd % 16 == 0) {
        values_avx512(p, p_stride, nh, hd, v, n, out);
        return;
    }
    if (f16 && isa >= WK_CPU_ISA_AVX2 && hd % 8 == 0) {
        values_avx2(p, p_stride, nh, hd, v, n, out);
        return;
    }
#endif
    values_scalar(f16, p, p_stride, nh, hd, v, n, out);
}
