/*
 * cpu_kernels: scalar and AVX2 inner loops (see cpu_kernels.h).
 *
 * The AVX2 functions carry their own target attribute so the rest of the project is compiled
 * for the baseline ISA; they are only called after __builtin_cpu_supports says yes.
 */
#include "cpu_kernels.h"
#include "cpu_ops.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_simd_impl.h"

#if HAVE_X86
#include <cpuid.h>
#endif

typedef float (*dot_fn)(const void *w, const wk_cpu_q8 *x, int64_t n);

/* Dispatch table, written once by wk_cpu_kernels_init (tests switch it with
 * wk_cpu_kernels_use while no backend runs). */
static struct {
    dot_fn dot_q4_0, dot_q4_1, dot_q8_0;
    /* packed-activation tile kernels (NULL: none at this level) */
    void (*multi_q4_1p)(const void *w, const void *xp, size_t xs, int n_tok, float *out, size_t os,
                        int64_t n);
    void (*multi_q8_0p)(const void *w, const void *xp, size_t xs, int n_tok, float *out, size_t os,
                        int64_t n);
    void (*quantize)(const float *x, wk_cpu_q8 *y, int64_t n);
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    float (*dot_f32_f16)(const float *a, const uint16_t *b, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int64_t n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, int64_t n);
    void (*silu_mul)(float *out, const float *gate, const float *up, int64_t n);
    void (*gelu_mul)(float *out, const float *gate, const float *up, int64_t n);
    void (*softcap)(float *x, int64_t n, float cap);
    void (*softmax)(float *x, int64_t n);
    wk_cpu_isa isa;
} K;

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* ---- scalar ------------------------------------------------------------------------------ */

static void quantize_scalar(const float *x, wk_cpu_q8 *y, int64_t n) {
    for (int64_t b = 0; b < n / WK_CPU_QK; b++) {
        const float *xb = x + b * WK_CPU_QK;
        float amax = 0.0f;
        for (int i = 0; i < WK_CPU_QK; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < WK_CPU_QK; i++) {
            int q = (int)nearbyintf(xb[i] * id);
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            y[b].qs[i] = (int8_t)q;
            sum += q;
        }
        y[b].d = d;
        y[b].s = d * (float)sum;
    }
}

static float dot_q4_0_scalar(const void *w, const wk_cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / WK_CPU_QK; b++, p += 18) {
        float d = wk_f16_to_f32(rd16(p));
        int sum = 0;
        for (int j = 0; j < 16; j++) {
            sum += ((p[2 + j] & 0xF) - 8) * x[b].qs[j] + ((p[2 + j] >> 4) - 8) * x[b].qs[j + 16];
        }
        acc += d * x[b].d * (float)sum;
    }
    return acc;
}

static float dot_q4_1_scalar(const void *w, const wk_cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / WK_CPU_QK; b++, p += 20) {
        float d = wk_f16_to_f32(rd16(p));
        float m = wk_f16_to_f32(rd16(p + 2));
        int sum = 0;
        for (int j = 0; j < 16; j++) {
            sum += (p[4 + j] & 0xF) * x[b].qs[j] + (p[4 + j] >> 4) * x[b].qs[j + 16];
        }
        acc += d * x[b].d * (float)sum + m * x[b].s;
    }
    return acc;
}

static float dot_q8_0_scalar(const void *w, const wk_cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / WK_CPU_QK; b++, p += 34) {
        float d = wk_f16_to_f32(rd16(p));
        const int8_t *q = (const int8_t *)(p + 2);
        int sum = 0;
        for (int j = 0; j < WK_CPU_QK; j++) {
            sum += q[j] * x[b].qs[j];
        }
        acc += d * x[b].d * (float)sum;
    }
    return acc;
}

static float dot_f32_scalar(const float *a, const float *b, int64_t n) {
    float acc[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        for (int k = 0; k < 4; k++) {
            acc[k] += a[i + k] * b[i + k];
        }
    }
    for (; i < n; i++) {
        acc[0] += a[i] * b[i];
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static float dot_f32_f16_scalar(const float *a, const uint16_t *b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        acc += a[i] * wk_f16_to_f32(b[i]);
    }
    return acc;
}

static void f16_to_f32_scalar(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        dst[i] = wk_f16_to_f32(src[i]);
    }
}

static void axpy_f32_scalar(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] += a * x[i];
    }
}

static void axpy_f16_scalar(float *y, float a, const uint16_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] += a * wk_f16_to_f32(x[i]);
    }
}

static void f32_to_f16_scalar(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        dst[i] = wk_f32_to_f16(src[i]);
    }
}

static void silu_mul_scalar(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void gelu_mul_scalar(float *out, const float *gate, const float *up, int64_t n) {
    wk_cpu_gelu_tanh_mul(out, gate, up, n);
}

static void softcap_scalar(float *x, int64_t n, float cap) {
    wk_cpu_softcap(x, n, cap);
}

static void softmax_scalar(float *x, int64_t n) {
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) {
        mx = x[i] > mx ? x[i] : mx;
    }
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++) {
        x[i] *= inv;
    }
}

/* ---- AVX2 / FMA / F16C ------------------------------------------------------------------- */
#if HAVE_X86

/* a macro: the rounding mode must be a compile-time constant for clang */
#define RND_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

AVX2 static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

AVX2 static inline float h2f(const uint8_t *p) {
    return _cvtsh_ss(rd16(p));
}

/* sum over 32 lanes of u8 a * s8 b as 8 int32 lanes, as floats */
AVX2 static inline __m256 mul_sum_u8_s8(__m256i a, __m256i b) {
    __m256i p16 = _mm256_maddubs_epi16(a, b);
    __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    return _mm256_cvtepi32_ps(p32);
}

/*
 * Fused dot kernels: four accumulator chains (block index mod 4); the order of operations is
 * fixed by the source. With AVX-512 VNNI the backend uses the packed tile kernels below
 * instead (Q4_1, Q8_0): a tile of tokens over the blocks' original layout (weight pairs
 * unpacked per token) measured no faster on Zen 4; what pays is repacking the activations
 * so that a token costs a handful of operations per group of four blocks.
 */

/* 16 packed nibble bytes -> 32 unsigned bytes in element order: both 128-bit halves get the
 * bytes, the upper half shifted right by 4 (three operations). */
AVX2 static inline __m256i unpack_nibbles_bcast(const uint8_t *p) {
    __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 0, 4, 4)),
                            _mm256_set1_epi8(0x0F));
}

/* (d_x, s_x) of an activation block as the two low lanes of a vector (they are adjacent). */
AVX2 static inline __m128 act_ds(const wk_cpu_q8 *xb) {
    return _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&xb->d));
}

/* Q4_0 block: d, 16 nibble bytes. (q - 8) * y summed = q * y - 8 * sum(y): lane 0 of
 * (d, d) * (d_x, s_x) is the block's scale, lane 1 accumulates d * s_x in corr. */
#define Q4_0_BLOCK(p, xb, acc, corr)                                                               \
    do {                                                                                           \
        __m128 d_ = _mm_cvtph_ps(_mm_set1_epi16((short)((p)[0] | ((p)[1] << 8))));                 \
        __m128 prod_ = _mm_mul_ps(d_, act_ds(xb));                                                 \
        __m256 s_ = mul_sum_u8_s8(unpack_nibbles_bcast((p) + 2),                                   \
                                  _mm256_loadu_si256((const __m256i *)(xb)->qs));                  \
        (acc) = _mm256_fmadd_ps(s_, _mm256_broadcastss_ps(prod_), (acc));                          \
        (corr) = _mm_add_ps((corr), prod_);                                                        \
    } while (0)

AVX2 static float dot_q4_0_avx2(const void *w, const wk_cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    __m128 c0 = _mm_setzero_ps(), c1 = _mm_setzero_ps();
    __m128 c2 = _mm_setzero_ps(), c3 = _mm_setzero_ps();
    int64_t nb = n / WK_CPU_QK, b = 0;
    for (; b + 4 <= nb; b += 4, p += 72) {
        Q4_0_BLOCK(p, &x[b], acc0, c0);
        Q4_0_BLOCK(p + 18, &x[b + 1], acc1, c1);
        Q4_0_BLOCK(p + 36, &x[b + 2], acc2, c2);
        Q4_0_BLOCK(p + 54, &x[b + 3], acc3, c3);
    }
    for (; b < nb; b++, p += 18) {
        Q4_0_BLOCK(p, &x[b], acc0, c0);
    }
    __m256 acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
    __m128 c = _mm_add_ps(_mm_add_ps(c0, c1), _mm_add_ps(c2, c3));
    return hsum256(acc) - 8.0f * _mm_cvtss_f32(_mm_shuffle_ps(c, c, 1));
}

/* Q4_1 block: d, m, 16 nibble bytes. q * d + m: the m part is m * s of the activations.
 * (d, m) convert together and multiply (d_x, s_x) in one go: lane 0 is the block's scale,
 * lane 1 accumulates m * s_x in msum. */
#define Q4_1_BLOCK(p, xb, acc, msum)                                                               \
    do {                                                                                           \
        uint32_t dm_;                                                                              \
        memcpy(&dm_, (p), 4);                                                                      \
        __m128 prod_ = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)dm_)), act_ds(xb));          \
        __m256 s_ = mul_sum_u8_s8(unpack_nibbles_bcast((p) + 4),                                   \
                                  _mm256_loadu_si256((const __m256i *)(xb)->qs));                  \
        (acc) = _mm256_fmadd_ps(s_, _mm256_broadcastss_ps(prod_), (acc));                          \
        (msum) = _mm_add_ps((msum), prod_);                                                        \
    } while (0)

/* Four independent accumulator chains (blocks b % 4): with one chain the kernel waits on
 * the add latency of every block instead of on memory. */
AVX2 static float dot_q4_1_avx2(const void *w, const wk_cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    __m128 ms0 = _mm_setzero_ps(), ms1 = _mm_setzero_ps();
    __m128 ms2 = _mm_setzero_ps(), ms3 = _mm_setzero_ps();
    int64_t nb = n / WK_CPU_QK, b = 0;
    for (; b + 4 <= nb; b += 4, p += 80) {
        Q4_1_BLOCK(p, &x[b], acc0, ms0);
        Q4_1_BLOCK(p + 20, &x[b + 1], acc1, ms1);
        Q4_1_BLOCK(p + 40, &x[b + 2], acc2, ms2);
        Q4_1_BLOCK(p + 60, &x[b + 3], acc3, ms3);
    }
    for (; b < nb; b++, p += 20) {
        Q4_1_BLOCK(p, &x[b], acc0, ms0);
    }
    __m256 acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
    __m128 ms = _mm_add_ps(_mm_add_ps(ms0, ms1), _mm_add_ps(ms2, ms3));
    return hsum256(acc) + _mm_cvtss_f32(_mm_shuffle_ps(ms, ms, 1));
}

/* Q8_0 block: d, 32 signed bytes; maddubs needs one unsigned operand: move q's sign onto y. */
#define Q8_0_BLOCK(p, xb, acc, unused)                                                             \
    do {                                                                                           \
        __m256i q_ = _mm256_loadu_si256((const __m256i *)((p) + 2));                               \
        __m256i y_ = _mm256_loadu_si256((const __m256i *)(xb)->qs);                                \
        __m256 s_ = mul_sum_u8_s8(_mm256_sign_epi8(q_, q_), _mm256_sign_epi8(y_, q_));             \
        (acc) = _mm256_fmadd_ps(s_, _mm256_set1_ps(h2f(p) * (xb)->d), (acc));                      \
        (void)(unused);                                                                            \
    } while (0)

AVX2 static float dot_q8_0_avx2(const void *w, const wk_cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    int64_t nb = n / WK_CPU_QK, b = 0;
    for (; b + 4 <= nb; b += 4, p += 136) {
        Q8_0_BLOCK(p, &x[b], acc0, 0);
        Q8_0_BLOCK(p + 34, &x[b + 1], acc1, 0);
        Q8_0_BLOCK(p + 68, &x[b + 2], acc2, 0);
        Q8_0_BLOCK(p + 102, &x[b + 3], acc3, 0);
    }
    for (; b < nb; b++, p += 34) {
        Q8_0_BLOCK(p, &x[b], acc0, 0);
    }
    return hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

AVX2 static void quantize_avx2(const float *x, wk_cpu_q8 *y, int64_t n) {
    const __m256 signbit = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / WK_CPU_QK; b++) {
        const float *xb = x + b * WK_CPU_QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(signbit, v0), _mm256_andnot_ps(signbit, v1)),
            _mm256_max_ps(_mm256_andnot_ps(signbit, v2), _mm256_andnot_ps(signbit, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f;
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        __m256 mul = _mm256_set1_ps(id);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), RND_NEAREST));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), RND_NEAREST));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), RND_NEAREST));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), RND_NEAREST));
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        /* pack 32-bit -> 16-bit -> 8-bit; packs work per 128-bit lane, fix order after */
        __m256i p01 = _mm256_packs_epi32(i0, i1);
        __m256i p23 = _mm256_packs_epi32(i2, i3);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
        y[b].d = d;
        y[b].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}

AVX2 static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    }
    float acc = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) {
        acc += a[i] * b[i];
    }
    return acc;
}

AVX2 static float dot_f32_f16_avx2(const float *a, const uint16_t *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));
        __m256 b1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i + 8)));
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), b0, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), b1, s1);
    }
    float acc = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) {
        acc += a[i] * _cvtsh_ss(b[i]);
    }
    return acc;
}

AVX2 static void f16_to_f32_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    }
    for (; i < n; i++) {
        dst[i] = _cvtsh_ss(src[i]);
    }
}

AVX2 static void axpy_f32_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) {
        y[i] += a * x[i];
    }
}

AVX2 static void axpy_f16_avx2(float *y, float a, const uint16_t *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, xv, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) {
        y[i] += a * _cvtsh_ss(x[i]);
    }
}
AVX2 static void f32_to_f16_avx2(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), 0));
    }
    for (; i < n; i++) {
        dst[i] = wk_f32_to_f16(src[i]);
    }
}

/* e^x for 8 floats: x = k ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial for e^r (relative
 * error ~1e-7), times 2^k built in the exponent field. Inputs are clamped to the range where
 * 2^k is a normal float, so the result saturates instead of overflowing. */
AVX2 static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)), RND_NEAREST);
    /* ln2 split in two parts so that k * ln2 is subtracted exactly enough */
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* Both gated activations are g times a logistic, g / (1 + e^z): SiLU with z = -g, GELU (tanh
 * form) with z = -2u, u = sqrt(2 / pi) (g + 0.044715 g^3), since 0.5 (1 + tanh(u)) = 1 / (1 +
 * e^(-2u)): one exp8 instead of a libm tanhf per element (which took 7% of a Gemma 3 270M
 * decode token). */
AVX2 static inline __m256 gated8(__m256 g, bool gelu) {
    __m256 z;
    if (gelu) {
        __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                 _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), g3, g));
        z = _mm256_mul_ps(_mm256_set1_ps(-2.0f), u);
    } else {
        z = _mm256_sub_ps(_mm256_setzero_ps(), g);
    }
    return _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(z)));
}

/* out = act(gate) * up; the tail uses the same vector code on a padded copy, so every element
 * of every row gets the same arithmetic whatever n is. */
AVX2 static inline void gated_mul_avx2(float *out, const float *gate, const float *up, int64_t n,
                                       bool gelu) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = gated8(_mm256_loadu_ps(gate + i), gelu);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(a, _mm256_loadu_ps(up + i)));
    }
    if (i < n) {
        float g[8] = {0}, u[8] = {0}, o[8];
        memcpy(g, gate + i, (size_t)(n - i) * sizeof(float));
        memcpy(u, up + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(o, _mm256_mul_ps(gated8(_mm256_loadu_ps(g), gelu), _mm256_loadu_ps(u)));
        memcpy(out + i, o, (size_t)(n - i) * sizeof(float));
    }
}

AVX2 static void silu_mul_avx2(float *out, const float *gate, const float *up, int64_t n) {
    gated_mul_avx2(out, gate, up, n, false);
}

AVX2 static void gelu_mul_avx2(float *out, const float *gate, const float *up, int64_t n) {
    gated_mul_avx2(out, gate, up, n, true);
}

/* cap tanh(x / cap) = cap (1 - 2 / (1 + e^(2x / cap))); exp8 saturates, so +-inf and large
 * inputs give +-cap. */
AVX2 static inline __m256 softcap8(__m256 x, __m256 two_inv, __m256 cap) {
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 e = exp8(_mm256_mul_ps(x, two_inv));
    __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(one, e)));
    return _mm256_mul_ps(cap, t);
}

AVX2 static void softcap_avx2(float *x, int64_t n, float cap) {
    __m256 two_inv = _mm256_set1_ps(2.0f / cap), c = _mm256_set1_ps(cap);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(x + i, softcap8(_mm256_loadu_ps(x + i), two_inv, c));
    }
    if (i < n) {
        float v[8] = {0};
        memcpy(v, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(v, softcap8(_mm256_loadu_ps(v), two_inv, c));
        memcpy(x + i, v, (size_t)(n - i) * sizeof(float));
    }
}

/* Softmax over (n): vector max, exp8 and sum; the tail goes through the same vector code
 * on a padded copy (padding lanes are left out of the sum), so every element gets the same
 * arithmetic whatever n is. */
AVX2 static void softmax_avx2(float *x, int64_t n) {
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + i));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (int64_t j = i; j < n; j++) {
        mx = x[j] > mx ? x[j] : mx;
    }
    __m256 vm = _mm256_set1_ps(mx), sum8 = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        sum8 = _mm256_add_ps(sum8, e);
    }
    if (i < n) {
        int left = (int)(n - i);
        float t[8] = {0};
        memcpy(t, x + i, (size_t)left * sizeof(float));
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(t), vm));
        __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane));
        e = _mm256_and_ps(e, keep);
        _mm256_storeu_ps(t, e);
        memcpy(x + i, t, (size_t)left * sizeof(float));
        sum8 = _mm256_add_ps(sum8, e);
    }
    __m256 inv = _mm256_set1_ps(1.0f / hsum256(sum8));
    for (i = 0; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    }
    for (; i < n; i++) {
        x[i] *= _mm256_cvtss_f32(inv);
    }
}

/* AVX-512 (F, BW, VL, VNNI): two Q4_1 blocks per 512-bit vector. The weight nibbles of
 * blocks A and B go to lanes (A, A>>4, B, B>>4), the activations of A and B fill the two
 * halves, one dpbusd gives both blocks' integer dot products, and the four scales
 * (d_A d_xA, m_A s_xA, d_B d_xB, m_B s_xB) come from one conversion and one multiply. */

AVX512 static inline void q4_1_pair_512(const uint8_t *p, const wk_cpu_q8 *xa, __m512 *acc,
                                        __m128 *msum) {
    const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    __m512i q = _mm512_inserti64x4(
        _mm512_castsi256_si512(
            _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + 4)))),
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + 24))), 1);
    q = _mm512_and_si512(_mm512_srlv_epi64(q, shift), _mm512_set1_epi8(0x0F));
    __m512i y =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xa[0].qs)),
                           _mm256_loadu_si256((const __m256i *)xa[1].qs), 1);
    __m512 s = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y));
    uint32_t dm_a, dm_b;
    memcpy(&dm_a, p, 4);
    memcpy(&dm_b, p + 20, 4);
    __m128 dm = _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128((int)dm_a), (int)dm_b, 1));
    __m128 xs =
        _mm_castpd_ps(_mm_loadh_pd(_mm_castps_pd(act_ds(&xa[0])), (const double *)&xa[1].d));
    __m128 prod = _mm_mul_ps(dm, xs); /* (dA dxA, mA sxA, dB dxB, mB sxB) */
    *acc = _mm512_fmadd_ps(s, _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(prod)), *acc);
    *msum = _mm_add_ps(*msum, prod);
}

AVX512 static float dot_q4_1_avx512(const void *w, const wk_cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m128 ms0 = _mm_setzero_ps(), ms1 = _mm_setzero_ps();
    int64_t nb = n / WK_CPU_QK, b = 0;
    for (; b + 4 <= nb; b += 4, p += 80) {
        q4_1_pair_512(p, &x[b], &acc0, &ms0);
        q4_1_pair_512(p + 40, &x[b + 2], &acc1, &ms1);
    }
    if (b + 2 <= nb) {
        q4_1_pair_512(p, &x[b], &acc0, &ms0);
        b += 2;
        p += 40;
    }
    __m256 acc = _mm256_setzero_ps();
    __m128 ms = _mm_setzero_ps();
    if (b < nb) { /* odd block count */
        Q4_1_BLOCK(p, &x[b], acc, ms);
    }
    __m512 a = _mm512_add_ps(acc0, acc1);
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    /* lanes 1 and 3 of the pair sums hold the m * s terms of the A and B blocks; lane 1 of
     * ms that of the odd block */
    __m128 m = _mm_add_ps(ms0, ms1);
    float msum = _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1)) + _mm_cvtss_f32(_mm_shuffle_ps(m, m, 3)) +
                 _mm_cvtss_f32(_mm_shuffle_ps(ms, ms, 1));
    return hsum256(_mm256_add_ps(a8, acc)) + msum;
}
/* Two Q8_0 blocks per 512-bit vector; dpbusd wants u8 x s8, so |q| times y with q's sign. */
AVX512 static inline void q8_0_pair_512(const uint8_t *p, const wk_cpu_q8 *xa, __m512 *acc) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __m512i q =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))),
                           _mm256_loadu_si256((const __m256i *)(p + 36)), 1);
    __m512i y =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xa[0].qs)),
                           _mm256_loadu_si256((const __m256i *)xa[1].qs), 1);
    __mmask64 neg = _mm512_movepi8_mask(q);
    y = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
    __m512 s =
        _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(q), y));
    __m128 d = _mm_cvtph_ps(
        _mm_insert_epi16(_mm_cvtsi32_si128(p[0] | (p[1] << 8)), p[34] | (p[35] << 8), 1));
    __m128 dx = _mm_setr_ps(xa[0].d, xa[1].d, 0.0f, 0.0f);
    __m512 sc = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_mul_ps(d, dx)));
    *acc = _mm512_fmadd_ps(s, sc, *acc);
}

AVX512 static float dot_q8_0_avx512(const void *w, const wk_cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t nb = n / WK_CPU_QK, b = 0;
    for (; b + 4 <= nb; b += 4, p += 136) {
        q8_0_pair_512(p, &x[b], &acc0);
        q8_0_pair_512(p + 68, &x[b + 2], &acc1);
    }
    if (b + 2 <= nb) {
        q8_0_pair_512(p, &x[b], &acc0);
        b += 2;
        p += 68;
    }
    __m256 acc = _mm256_setzero_ps();
    if (b < nb) {
        Q8_0_BLOCK(p, &x[b], acc, 0);
    }
    __m512 a = _mm512_add_ps(acc0, acc1);
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    return hsum256(_mm256_add_ps(a8, acc));
}
#endif /* HAVE_X86 */

/* ---- packed activations: Q4_1 register tiles over tokens (AVX-512 VNNI) ---------------- */

/* One token's packed activations: groups of four blocks, GROUP_BYTES each (see the header),
 * then the block sums sx[4] per group. */
#define GROUP_BLOCKS 4
#define GROUP_BYTES 256

static inline int64_t n_groups(int64_t n) {
    return (n / WK_CPU_QK + GROUP_BLOCKS - 1) / GROUP_BLOCKS;
}

size_t wk_cpu_q8_packed_bytes(int64_t n) {
    size_t b = (size_t)n_groups(n) * (GROUP_BYTES + GROUP_BLOCKS * sizeof(float));
    return (b + 63) & ~(size_t)63;
}

void wk_cpu_pack_q8(const wk_cpu_q8 *x, int64_t n, void *dst) {
    int64_t nb = n / WK_CPU_QK, ng = n_groups(n);
    uint8_t *d = dst;
    float *sx = (float *)(d + (size_t)ng * GROUP_BYTES);
    for (int64_t g = 0; g < ng; g++) {
        uint8_t *gp = d + (size_t)g * GROUP_BYTES;
        float dx[16];
        for (int l = 0; l < GROUP_BLOCKS; l++) {
            int64_t b = GROUP_BLOCKS * g + l;
            bool real = b < nb;
            if (real) {
                memcpy(gp + 16 * l, x[b].qs, 16);
                memcpy(gp + 64 + 16 * l, x[b].qs + 16, 16);
            } else {
                memset(gp + 16 * l, 0, 16);
                memset(gp + 64 + 16 * l, 0, 16);
            }
            for (int j = 0; j < 4; j++) {
                dx[4 * l + j] = real ? x[b].d : 0.0f;
            }
            sx[GROUP_BLOCKS * g + l] = real ? x[b].s : 0.0f;
        }
        memcpy(gp + 128, dx, sizeof(dx));
        /* 128 * (sum of the activation bytes each dot lane sees): undoes the +128 that turns
         * signed Q8_0 weights into the unsigned operand of dpbusd */
        int32_t corr[16];
        for (int l = 0; l < GROUP_BLOCKS; l++) {
            for (int j = 0; j < 4; j++) {
                int sum = 0;
                for (int e = 0; e < 4; e++) {
                    sum += (int8_t)gp[16 * l + 4 * j + e] + (int8_t)gp[64 + 16 * l + 4 * j + e];
                }
                corr[4 * l + j] = 128 * sum;
            }
        }
        memcpy(gp + 192, corr, sizeof(corr));
    }
}

#if HAVE_X86
/* Weight side of a Q4_1 group (nblk of the four blocks at p, p + 20, ...; missing ones are
 * zeros): low nibbles (elements 0..15) and high nibbles (16..31) of block l in 128-bit lane
 * l, d of block l over lanes 4l..4l+3, and the four m. */
AVX512 static inline void q4_1_wgroup(const uint8_t *p, int nblk, __m512i *qlo, __m512i *qhi,
                                      __m512 *dw, __m128 *mw) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
    __m128i b0 = _mm_loadu_si128((const __m128i *)(p + 4));
    __m128i b1 = nblk > 1 ? _mm_loadu_si128((const __m128i *)(p + 24)) : _mm_setzero_si128();
    __m128i b2 = nblk > 2 ? _mm_loadu_si128((const __m128i *)(p + 44)) : _mm_setzero_si128();
    __m128i b3 = nblk > 3 ? _mm_loadu_si128((const __m128i *)(p + 64)) : _mm_setzero_si128();
    __m512i v = _mm512_inserti32x4(
        _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(b0), b1, 1), b2, 2), b3, 3);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    *qlo = _mm512_and_si512(v, low4);
    *qhi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
    /* the four (d, m) f16 pairs as one vector, built in registers (storing them to memory
     * and reloading them as a vector stalls on store forwarding) */
    uint32_t d0, d1 = 0, d2 = 0, d3 = 0;
    memcpy(&d0, p, 4);
    if (nblk > 1) {
        memcpy(&d1, p + 20, 4);
    }
    if (nblk > 2) {
        memcpy(&d2, p + 40, 4);
    }
    if (nblk > 3) {
        memcpy(&d3, p + 60, 4);
    }
    __m128i dm = _mm_insert_epi32(
        _mm_insert_epi32(_mm_insert_epi32(_mm_cvtsi32_si128((int)d0), (int)d1, 1), (int)d2, 2),
        (int)d3, 3);
    __m256 f = _mm256_cvtph_ps(dm); /* (d0, m0, .., d3, m3) */
    *dw = _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(f));
    *mw = _mm256_castps256_ps128(
        _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7)));
}

/* Token side of a group: both halves' integer dots accumulate in the same lanes (lane 4l+j
 * holds 8 products of block l), times the token's block scales, times the weight scales
 * into acc; m * s of the four blocks into ms. */
AVX512 static inline void q4_1_xgroup(__m512i qlo, __m512i qhi, __m512 dw, __m128 mw,
                                      const uint8_t *x, const float *sx, __m512 *acc, __m128 *ms) {
    __m512i i =
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), qlo, _mm512_load_si512((const void *)x));
    i = _mm512_dpbusd_epi32(i, qhi, _mm512_load_si512((const void *)(x + 64)));
    __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(i), _mm512_load_ps((const float *)(x + 128)));
    *acc = _mm512_fmadd_ps(t, dw, *acc);
    *ms = _mm_fmadd_ps(mw, _mm_loadu_ps(sx), *ms);
}

/*
 * One Q4_1 row against nt packed tokens (token k at xp + k * xs). The operations applied to
 * one token, and their order, are the same for every nt and every place in the tile (nt = 1
 * is the decode case): one accumulator chain per token over the groups in order, the same
 * final reduction. (One chain suffices: a group takes longer than the FMA latency.)
 */
#define PTILE 8
AVX512 static inline __attribute__((always_inline)) void q4_1p_tile(const uint8_t *p,
                                                                    const uint8_t *xp, size_t xs,
                                                                    int nt, float *out, size_t os,
                                                                    int64_t n) {
    int64_t nb = n / WK_CPU_QK, ng = n_groups(n);
    const uint8_t *sxp = xp + (size_t)ng * GROUP_BYTES;
    __m512 acc[PTILE];
    __m128 ms[PTILE];
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm512_setzero_ps();
        ms[k] = _mm_setzero_ps();
    }
    int64_t nfull = nb / GROUP_BLOCKS;
    for (int64_t g = 0; g < ng; g++, p += 80) {
        __m512i la, ha;
        __m512 wa;
        __m128 ma;
        if (g < nfull) { /* constant count: no per-block tests in the common case */
            q4_1_wgroup(p, GROUP_BLOCKS, &la, &ha, &wa, &ma);
        } else {
            q4_1_wgroup(p, (int)(nb - GROUP_BLOCKS * g), &la, &ha, &wa, &ma);
        }
        for (int k = 0; k < nt; k++) {
            const uint8_t *x = xp + (size_t)k * xs + (size_t)g * GROUP_BYTES;
            const float *sx = (const float *)(sxp + (size_t)k * xs) + GROUP_BLOCKS * g;
            q4_1_xgroup(la, ha, wa, ma, x, sx, &acc[k], &ms[k]);
        }
    }
    for (int k = 0; k < nt; k++) {
        __m512 a = acc[k];
        __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        __m128 m = ms[k];
        m = _mm_add_ps(m, _mm_movehl_ps(m, m));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[(size_t)k * os] = hsum256(a8) + _mm_cvtss_f32(m);
    }
}

/* Full tiles of PTILE tokens, then one smaller tile: every count from 1 to PTILE - 1 has its
 * own instance with the same per-token arithmetic. */
#define TILE_DISPATCH(fn, w, x, xs, n_tok, out, os, n)                                             \
    do {                                                                                           \
        int k_ = 0;                                                                                \
        for (; k_ + PTILE <= (n_tok); k_ += PTILE) {                                               \
            fn((w), (x) + (size_t)k_ * (xs), (xs), PTILE, (out) + (size_t)k_ * (os), (os), (n));   \
        }                                                                                          \
        const uint8_t *xr_ = (x) + (size_t)k_ * (xs);                                              \
        float *or_ = (out) + (size_t)k_ * (os);                                                    \
        switch ((n_tok)-k_) {                                                                      \
        case 7:                                                                                    \
            fn((w), xr_, (xs), 7, or_, (os), (n));                                                 \
            break;                                                                                 \
        case 6:                                                                                    \
            fn((w), xr_, (xs), 6, or_, (os), (n));                                                 \
            break;                                                                                 \
        case 5:                                                                                    \
            fn((w), xr_, (xs), 5, or_, (os), (n));                                                 \
            break;                                                                                 \
        case 4:                                                                                    \
            fn((w), xr_, (xs), 4, or_, (os), (n));                                                 \
            break;                                                                                 \
        case 3:                                                                                    \
            fn((w), xr_, (xs), 3, or_, (os), (n));                                                 \
            break;                                                                                 \
        case 2:                                                                                    \
            fn((w), xr_, (xs), 2, or_, (os), (n));                                                 \
            break;                                                                                 \
        case 1:                                                                                    \
            fn((w), xr_, (xs), 1, or_, (os), (n));                                                 \
            break;                                                                                 \
        default:                                                                                   \
            break;                                                                                 \
        }                                                                                          \
    } while (0)

AVX512 static void multi_q4_1p_avx512(const void *w, const void *xp, size_t xs, int n_tok,
                                      float *out, size_t os, int64_t n) {
    TILE_DISPATCH(q4_1p_tile, (const uint8_t *)w, (const uint8_t *)xp, xs, n_tok, out, os, n);
}

/* Weight side of a Q8_0 group (nblk of the four blocks at p, p + 34, ...): bytes 0..15 and
 * 16..31 of block l in 128-bit lane l, plus 128 (unsigned for dpbusd), d over lanes 4l..4l+3. */
AVX512 static inline void q8_0_wgroup(const uint8_t *p, int nblk, __m512i *qlo, __m512i *qhi,
                                      __m512 *dw) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m128i z = _mm_setzero_si128();
    __m128i l0 = _mm_loadu_si128((const __m128i *)(p + 2));
    __m128i h0 = _mm_loadu_si128((const __m128i *)(p + 18));
    __m128i l1 = nblk > 1 ? _mm_loadu_si128((const __m128i *)(p + 36)) : z;
    __m128i h1 = nblk > 1 ? _mm_loadu_si128((const __m128i *)(p + 52)) : z;
    __m128i l2 = nblk > 2 ? _mm_loadu_si128((const __m128i *)(p + 70)) : z;
    __m128i h2 = nblk > 2 ? _mm_loadu_si128((const __m128i *)(p + 86)) : z;
    __m128i l3 = nblk > 3 ? _mm_loadu_si128((const __m128i *)(p + 104)) : z;
    __m128i h3 = nblk > 3 ? _mm_loadu_si128((const __m128i *)(p + 120)) : z;
    __m512i lo = _mm512_inserti32x4(
        _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(l0), l1, 1), l2, 2), l3, 3);
    __m512i hi = _mm512_inserti32x4(
        _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(h0), h1, 1), h2, 2), h3, 3);
    *qlo = _mm512_xor_si512(lo, bias);
    *qhi = _mm512_xor_si512(hi, bias);
    int d0 = p[0] | (p[1] << 8), d1 = 0, d2 = 0, d3 = 0;
    if (nblk > 1) {
        d1 = p[34] | (p[35] << 8);
    }
    if (nblk > 2) {
        d2 = p[68] | (p[69] << 8);
    }
    if (nblk > 3) {
        d3 = p[102] | (p[103] << 8);
    }
    __m128i dh = _mm_insert_epi16(
        _mm_insert_epi16(_mm_insert_epi16(_mm_cvtsi32_si128(d0), d1, 1), d2, 2), d3, 3);
    *dw = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_cvtph_ps(dh)));
}

/* Token side of a Q8_0 group: the dots of (w + 128) with x, minus 128 * sum(x) per lane. */
AVX512 static inline void q8_0_xgroup(__m512i qlo, __m512i qhi, __m512 dw, const uint8_t *x,
                                      __m512 *acc) {
    __m512i i =
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), qlo, _mm512_load_si512((const void *)x));
    i = _mm512_dpbusd_epi32(i, qhi, _mm512_load_si512((const void *)(x + 64)));
    i = _mm512_sub_epi32(i, _mm512_load_si512((const void *)(x + 192)));
    __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(i), _mm512_load_ps((const float *)(x + 128)));
    *acc = _mm512_fmadd_ps(t, dw, *acc);
}

/* One Q8_0 row against nt packed tokens; per-token arithmetic as in q4_1p_tile. */
AVX512 static inline __attribute__((always_inline)) void q8_0p_tile(const uint8_t *p,
                                                                    const uint8_t *xp, size_t xs,
                                                                    int nt, float *out, size_t os,
                                                                    int64_t n) {
    int64_t nb = n / WK_CPU_QK, ng = n_groups(n);
    __m512 acc[PTILE];
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm512_setzero_ps();
    }
    int64_t nfull = nb / GROUP_BLOCKS;
    for (int64_t g = 0; g < ng; g++, p += 136) {
        __m512i la, ha;
        __m512 wa;
        if (g < nfull) {
            q8_0_wgroup(p, GROUP_BLOCKS, &la, &ha, &wa);
        } else {
            q8_0_wgroup(p, (int)(nb - GROUP_BLOCKS * g), &la, &ha, &wa);
        }
        for (int k = 0; k < nt; k++) {
            q8_0_xgroup(la, ha, wa, xp + (size_t)k * xs + (size_t)g * GROUP_BYTES, &acc[k]);
        }
    }
    for (int k = 0; k < nt; k++) {
        __m512 a = acc[k];
        __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        out[(size_t)k * os] = hsum256(a8);
    }
}

AVX512 static void multi_q8_0p_avx512(const void *w, const void *xp, size_t xs, int n_tok,
                                      float *out, size_t os, int64_t n) {
    TILE_DISPATCH(q8_0p_tile, (const uint8_t *)w, (const uint8_t *)xp, xs, n_tok, out, os, n);
}
#endif /* HAVE_X86 */

/* ---- dispatch ------------------------------------------------------------------------------ */

/* Installs the implementations of level (clamped to what the CPU supports); returns the
 * level in effect. */
static wk_cpu_isa set_table(wk_cpu_isa level) {
    K.dot_q4_0 = dot_q4_0_scalar;
    K.dot_q4_1 = dot_q4_1_scalar;
    K.dot_q8_0 = dot_q8_0_scalar;
    K.multi_q4_1p = NULL;
    K.multi_q8_0p = NULL;
    K.quantize = quantize_scalar;
    K.dot_f32 = dot_f32_scalar;
    K.dot_f32_f16 = dot_f32_f16_scalar;
    K.f16_to_f32 = f16_to_f32_scalar;
    K.axpy_f32 = axpy_f32_scalar;
    K.axpy_f16 = axpy_f16_scalar;
    K.f32_to_f16 = f32_to_f16_scalar;
    K.silu_mul = silu_mul_scalar;
    K.gelu_mul = gelu_mul_scalar;
    K.softcap = softcap_scalar;
    K.softmax = softmax_scalar;
    K.isa = WK_CPU_ISA_SCALAR;
#if HAVE_X86
    __builtin_cpu_init();
    /* F16C via cpuid leaf 1 (ECX bit 29): not every compiler's __builtin_cpu_supports
     * knows it; AVX2 implies the OS saves YMM state, which __builtin_cpu_supports checks. */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
    if (level >= WK_CPU_ISA_AVX2 && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma") && f16c) {
        K.dot_q4_0 = dot_q4_0_avx2;
        K.dot_q4_1 = dot_q4_1_avx2;
        K.dot_q8_0 = dot_q8_0_avx2;
        K.quantize = quantize_avx2;
        K.dot_f32 = dot_f32_avx2;
        K.dot_f32_f16 = dot_f32_f16_avx2;
        K.f16_to_f32 = f16_to_f32_avx2;
        K.axpy_f32 = axpy_f32_avx2;
        K.axpy_f16 = axpy_f16_avx2;
        K.f32_to_f16 = f32_to_f16_avx2;
        K.silu_mul = silu_mul_avx2;
        K.gelu_mul = gelu_mul_avx2;
        K.softcap = softcap_avx2;
        K.softmax = softmax_avx2;
        K.isa = WK_CPU_ISA_AVX2;
        if (level >= WK_CPU_ISA_AVX512 && __builtin_cpu_supports("avx512f") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512vnni")) {
            K.dot_q4_1 = dot_q4_1_avx512;
            K.multi_q4_1p = multi_q4_1p_avx512;
            K.multi_q8_0p = multi_q8_0p_avx512;
            K.dot_q8_0 = dot_q8_0_avx512;
            K.isa = WK_CPU_ISA_AVX512;
        }
    }
#else
    (void)level;
#endif
    return K.isa;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The default level: the best the CPU has, or SLUICE_CPU_KERNELS=scalar|avx2|avx512 to cap
 * it (to compare paths, or to rule one out on a misbehaving machine). */
static void init_default(void) {
    const char *env = getenv("SLUICE_CPU_KERNELS");
    wk_cpu_isa level = WK_CPU_ISA_AVX512;
    if (env != NULL && strcmp(env, "scalar") == 0) {
        level = WK_CPU_ISA_SCALAR;
    } else if (env != NULL && strcmp(env, "avx2") == 0) {
        level = WK_CPU_ISA_AVX2;
    }
    set_table(level);
}

void wk_cpu_kernels_init(void) {
    pthread_once(&once, init_default);
}

wk_cpu_isa wk_cpu_kernels_use(wk_cpu_isa level) {
    pthread_once(&once, init_default);
    return set_table(level);
}

wk_cpu_isa wk_cpu_kernels_isa(void) {
    pthread_once(&once, init_default);
    return K.isa;
}

bool wk_cpu_fused_type(wk_dtype t) {
    return t == WK_DTYPE_Q4_0 || t == WK_DTYPE_Q4_1 || t == WK_DTYPE_Q8_0;
}

void wk_cpu_quantize_q8(const float *x, wk_cpu_q8 *y, int64_t n) {
    K.quantize(x, y, n);
}

static dot_fn pick(wk_dtype t) {
    switch (t) {
    case WK_DTYPE_Q4_0:
        return K.dot_q4_0;
    case WK_DTYPE_Q4_1:
        return K.dot_q4_1;
    case WK_DTYPE_Q8_0:
        return K.dot_q8_0;
    default:
        return NULL;
    }
}

wk_cpu_dot_q8_fn wk_cpu_dot_q8_kernel(wk_dtype t) {
    return pick(t);
}

float wk_cpu_dot_q8(wk_dtype t, const void *wrow, const wk_cpu_q8 *x, int64_t n) {
    dot_fn f = pick(t);
    return f != NULL ? f(wrow, x, n) : 0.0f;
}

void wk_cpu_dot_q8_multi(wk_dtype t, const void *wrow, const wk_cpu_q8 *x, size_t x_stride_blocks,
                         int n_tok, float *out, size_t out_stride, int64_t n) {
    dot_fn f = pick(t);
    if (f == NULL) {
        return;
    }
    for (int k = 0; k < n_tok; k++) {
        out[(size_t)k * out_stride] = f(wrow, x + (size_t)k * x_stride_blocks, n);
    }
}

bool wk_cpu_packed_type(wk_dtype t) {
    return (t == WK_DTYPE_Q4_1 && K.multi_q4_1p != NULL) ||
           (t == WK_DTYPE_Q8_0 && K.multi_q8_0p != NULL);
}

wk_cpu_dot_q8p_fn wk_cpu_dot_q8p_kernel(wk_dtype t) {
    if (t == WK_DTYPE_Q4_1) {
        return K.multi_q4_1p;
    }
    if (t == WK_DTYPE_Q8_0) {
        return K.multi_q8_0p;
    }
    return NULL;
}

void wk_cpu_dot_q8p_multi(wk_dtype t, const void *wrow, const void *xp, size_t xp_stride_bytes,
                          int n_tok, float *out, size_t out_stride, int64_t n) {
    if (t == WK_DTYPE_Q4_1 && K.multi_q4_1p != NULL) {
        K.multi_q4_1p(wrow, xp, xp_stride_bytes, n_tok, out, out_stride, n);
    } else if (t == WK_DTYPE_Q8_0 && K.multi_q8_0p != NULL) {
        K.multi_q8_0p(wrow, xp, xp_stride_bytes, n_tok, out, out_stride, n);
    }
}

void wk_cpu_softmax_fast(float *x, int64_t n) {
    K.softmax(x, n);
}

float wk_cpu_dot_f32(const float *a, const float *b, int64_t n) {
    return K.dot_f32(a, b, n);
}

void wk_cpu_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n) {
    K.f16_to_f32(src, dst, n);
}

void wk_cpu_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n) {
    K.f32_to_f16(src, dst, n);
}

void wk_cpu_silu_mul(float *out, const float *gate, const float *up, int64_t n) {
    K.silu_mul(out, gate, up, n);
}

void wk_cpu_gelu_mul(float *out, const float *gate, const float *up, int64_t n) {
    K.gelu_mul(out, gate, up, n);
}

void wk_cpu_softcap_fast(float *x, int64_t n, float cap) {
    K.softcap(x, n, cap);
}

void wk_cpu_axpy_f32(float *y, float a, const float *x, int64_t n) {
    K.axpy_f32(y, a, x, n);
}

void wk_cpu_axpy_f16(float *y, float a, const uint16_t *x, int64_t n) {
    K.axpy_f16(y, a, x, n);
}

float wk_cpu_dot_f32_f16(const float *a, const uint16_t *b, int64_t n) {
    return K.dot_f32_f16(a, b, n);
}

#if HAVE_X86
/* 32-byte loads into four independent sums: the loop is bound by the loads only. */
AVX2 static uint64_t read_avx2(const uint8_t *p, size_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    uint64_t o[4];
    _mm256_storeu_si256((__m256i *)o,
                        _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
    uint64_t sum = o[0] ^ o[1] ^ o[2] ^ o[3];
    for (; i < n; i++) {
        sum += p[i];
    }
    return sum;
}
#endif

uint64_t wk_cpu_read_bytes(const void *p, size_t n) {
#if HAVE_X86
    if (wk_cpu_kernels_isa() >= WK_CPU_ISA_AVX2) {
        return read_avx2(p, n);
    }
#endif
    const uint8_t *b = p;
    uint64_t a[8] = {0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        for (int k = 0; k < 8; k++) {
            uint64_t v;
            memcpy(&v, b + i + 8 * k, 8);
            a[k] += v;
        }
    }
    for (; i < n; i++) {
        a[0] += b[i];
    }
    return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}
