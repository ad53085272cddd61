/*
 * cpu_kernels: scalar and AVX2 inner loops (see cpu_kernels.h).
 *
 * The AVX2 functions carry their own target attribute so the rest of the project is compiled
 * for the baseline ISA; they are only called after __builtin_cpu_supports says yes.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

typedef float (*dot_fn)(const void *w, const wk_cpu_q8 *x, int64_t n);
/* one weight row against n_tok activation rows (x_stride_blocks apart) */
typedef void (*multi_fn)(const void *w, const wk_cpu_q8 *x, size_t x_stride_blocks, int n_tok,
                         float *out, size_t out_stride, int64_t n);

/* Dispatch table, written once by wk_cpu_kernels_init (tests switch it with
 * wk_cpu_kernels_use while no backend runs). */
static struct {
    dot_fn dot_q4_0, dot_q4_1, dot_q8_0;
    /* NULL: call the dot kernel per token */
    multi_fn multi_q4_0, multi_q4_1, multi_q8_0;
    void (*quantize)(const float *x, wk_cpu_q8 *y, int64_t n);
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    float (*dot_f32_f16)(const float *a, const uint16_t *b, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int64_t n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, int64_t n);
    void (*silu_mul)(float *out, const float *gate, const float *up, int64_t n);
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

/* ---- AVX2 / FMA / F16C ------------------------------------------------------------------- */
#if HAVE_X86

#define AVX2 __attribute__((target("avx2,fma,f16c")))
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
 * fixed by the source. (Measured
 * slower than this on Zen 4: a tile kernel unpacking each weight block once for four tokens,
 * a 4-row kernel, and gathering the scales of 8 blocks at once. Batches call these per
 * token, which also keeps results batch-invariant.)
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

AVX2 static void silu_mul_avx2(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    /* the tail uses the same vector code on a padded copy, so every element of every row
     * gets the same arithmetic whatever n is */
    if (i < n) {
        float g[8] = {0}, u[8] = {0}, o[8];
        memcpy(g, gate + i, (size_t)(n - i) * sizeof(float));
        memcpy(u, up + i, (size_t)(n - i) * sizeof(float));
        __m256 gv = _mm256_loadu_ps(g);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        _mm256_storeu_ps(
            o, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u)));
        memcpy(out + i, o, (size_t)(n - i) * sizeof(float));
    }
}
/* AVX-512 (F, BW, VL, VNNI): two Q4_1 blocks per 512-bit vector. The weight nibbles of
 * blocks A and B go to lanes (A, A>>4, B, B>>4), the activations of A and B fill the two
 * halves, one dpbusd gives both blocks' integer dot products, and the four scales
 * (d_A d_xA, m_A s_xA, d_B d_xB, m_B s_xB) come from one conversion and one multiply. */
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

/* The weight half of a Q4_1 pair: nibbles of blocks A (p) and B (p + 20) as 64 unsigned
 * bytes (A, A>>4, B, B>>4) and the scales (dA, mA, dB, mB). Done once per pair however many
 * tokens then use it. */
AVX512 static inline void q4_1_pair_w512(const uint8_t *p, __m512i *q, __m128 *dm) {
    const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    __m512i v = _mm512_inserti64x4(
        _mm512_castsi256_si512(
            _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + 4)))),
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + 24))), 1);
    *q = _mm512_and_si512(_mm512_srlv_epi64(v, shift), _mm512_set1_epi8(0x0F));
    uint32_t dm_a, dm_b;
    memcpy(&dm_a, p, 4);
    memcpy(&dm_b, p + 20, 4);
    *dm = _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128((int)dm_a), (int)dm_b, 1));
}

/* The activation half: one token's blocks xa[0], xa[1] against an unpacked pair. */
AVX512 static inline void q4_1_pair_x512(__m512i q, __m128 dm, const wk_cpu_q8 *xa, __m512 *acc,
                                         __m128 *msum) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    __m512i y =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xa[0].qs)),
                           _mm256_loadu_si256((const __m256i *)xa[1].qs), 1);
    __m512 s = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y));
    __m128 xs =
        _mm_castpd_ps(_mm_loadh_pd(_mm_castps_pd(act_ds(&xa[0])), (const double *)&xa[1].d));
    __m128 prod = _mm_mul_ps(dm, xs); /* (dA dxA, mA sxA, dB dxB, mB sxB) */
    *acc = _mm512_fmadd_ps(s, _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(prod)), *acc);
    *msum = _mm_add_ps(*msum, prod);
}

/*
 * Q4_1 row against nt tokens (x + k * xs_blocks, k < nt): each weight pair is unpacked once
 * and dotted with every token. Per token the operations and their order are exactly those
 * of the one-token case (nt = 1 is the decode kernel), so a token's result does not depend
 * on the tile it falls in: two accumulator chains per token (pairs alternate), an odd last
 * block through the 256-bit block code, the same final reduction.
 */
#define Q41_TILE 4
AVX512 static inline __attribute__((always_inline)) void
q4_1_tile_512(const uint8_t *p, const wk_cpu_q8 *x, size_t xs_blocks, int nt, float *out,
              size_t out_stride, int64_t n) {
    __m512 acc0[Q41_TILE], acc1[Q41_TILE];
    __m128 ms0[Q41_TILE], ms1[Q41_TILE];
    for (int k = 0; k < nt; k++) {
        acc0[k] = _mm512_setzero_ps();
        acc1[k] = _mm512_setzero_ps();
        ms0[k] = _mm_setzero_ps();
        ms1[k] = _mm_setzero_ps();
    }
    int64_t nb = n / WK_CPU_QK, b = 0;
    for (; b + 4 <= nb; b += 4, p += 80) {
        __m512i qa, qb;
        __m128 da, db;
        q4_1_pair_w512(p, &qa, &da);
        q4_1_pair_w512(p + 40, &qb, &db);
        for (int k = 0; k < nt; k++) {
            const wk_cpu_q8 *xk = x + (size_t)k * xs_blocks + b;
            q4_1_pair_x512(qa, da, xk, &acc0[k], &ms0[k]);
            q4_1_pair_x512(qb, db, xk + 2, &acc1[k], &ms1[k]);
        }
    }
    if (b + 2 <= nb) {
        __m512i qa;
        __m128 da;
        q4_1_pair_w512(p, &qa, &da);
        for (int k = 0; k < nt; k++) {
            q4_1_pair_x512(qa, da, x + (size_t)k * xs_blocks + b, &acc0[k], &ms0[k]);
        }
        b += 2;
        p += 40;
    }
    bool odd = b < nb;
    for (int k = 0; k < nt; k++) {
        __m256 acc = _mm256_setzero_ps();
        __m128 ms = _mm_setzero_ps();
        if (odd) {
            Q4_1_BLOCK(p, x + (size_t)k * xs_blocks + b, acc, ms);
        }
        __m512 a = _mm512_add_ps(acc0[k], acc1[k]);
        __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        /* lanes 1 and 3 of the pair sums hold the m * s terms of the A and B blocks; lane 1
         * of ms that of the odd block */
        __m128 m = _mm_add_ps(ms0[k], ms1[k]);
        float msum = _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1)) +
                     _mm_cvtss_f32(_mm_shuffle_ps(m, m, 3)) +
                     _mm_cvtss_f32(_mm_shuffle_ps(ms, ms, 1));
        out[(size_t)k * out_stride] = hsum256(_mm256_add_ps(a8, acc)) + msum;
    }
}

AVX512 static float dot_q4_1_avx512(const void *w, const wk_cpu_q8 *x, int64_t n) {
    float y;
    q4_1_tile_512(w, x, 0, 1, &y, 1, n);
    return y;
}

AVX512 static void multi_q4_1_avx512(const void *w, const wk_cpu_q8 *x, size_t xs_blocks,
                                     int n_tok, float *out, size_t out_stride, int64_t n) {
    int k = 0;
    for (; k + Q41_TILE <= n_tok; k += Q41_TILE) {
        q4_1_tile_512(w, x + (size_t)k * xs_blocks, xs_blocks, Q41_TILE,
                      out + (size_t)k * out_stride, out_stride, n);
    }
    /* the remaining tokens: same per-token arithmetic, fewer of them */
    switch (n_tok - k) {
    case 3:
        q4_1_tile_512(w, x + (size_t)k * xs_blocks, xs_blocks, 3, out + (size_t)k * out_stride,
                      out_stride, n);
        break;
    case 2:
        q4_1_tile_512(w, x + (size_t)k * xs_blocks, xs_blocks, 2, out + (size_t)k * out_stride,
                      out_stride, n);
        break;
    case 1:
        q4_1_tile_512(w, x + (size_t)k * xs_blocks, xs_blocks, 1, out + (size_t)k * out_stride,
                      out_stride, n);
        break;
    default:
        break;
    }
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

/* ---- dispatch ------------------------------------------------------------------------------ */

/* Installs the implementations of level (clamped to what the CPU supports); returns the
 * level in effect. */
static wk_cpu_isa set_table(wk_cpu_isa level) {
    K.dot_q4_0 = dot_q4_0_scalar;
    K.dot_q4_1 = dot_q4_1_scalar;
    K.dot_q8_0 = dot_q8_0_scalar;
    K.multi_q4_0 = NULL;
    K.multi_q4_1 = NULL;
    K.multi_q8_0 = NULL;
    K.quantize = quantize_scalar;
    K.dot_f32 = dot_f32_scalar;
    K.dot_f32_f16 = dot_f32_f16_scalar;
    K.f16_to_f32 = f16_to_f32_scalar;
    K.axpy_f32 = axpy_f32_scalar;
    K.axpy_f16 = axpy_f16_scalar;
    K.f32_to_f16 = f32_to_f16_scalar;
    K.silu_mul = silu_mul_scalar;
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
        K.isa = WK_CPU_ISA_AVX2;
        if (level >= WK_CPU_ISA_AVX512 && __builtin_cpu_supports("avx512f") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512vnni")) {
            K.dot_q4_1 = dot_q4_1_avx512;
            K.multi_q4_1 = multi_q4_1_avx512;
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
    multi_fn m = t == WK_DTYPE_Q4_0   ? K.multi_q4_0
                 : t == WK_DTYPE_Q4_1 ? K.multi_q4_1
                 : t == WK_DTYPE_Q8_0 ? K.multi_q8_0
                                      : NULL;
    if (m != NULL) {
        m(wrow, x, x_stride_blocks, n_tok, out, out_stride, n);
        return;
    }
    dot_fn f = pick(t);
    if (f == NULL) {
        return;
    }
    for (int k = 0; k < n_tok; k++) {
        out[(size_t)k * out_stride] = f(wrow, x + (size_t)k * x_stride_blocks, n);
    }
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

void wk_cpu_axpy_f32(float *y, float a, const float *x, int64_t n) {
    K.axpy_f32(y, a, x, n);
}

void wk_cpu_axpy_f16(float *y, float a, const uint16_t *x, int64_t n) {
    K.axpy_f16(y, a, x, n);
}

float wk_cpu_dot_f32_f16(const float *a, const uint16_t *b, int64_t n) {
    return K.dot_f32_f16(a, b, n);
}
