/*
 * cpu_kernels: scalar and AVX2 inner loops (see cpu_kernels.h).
 *
 * The AVX2 functions carry their own target attribute so the rest of the project is compiled
 * for the baseline ISA; they are only called after __builtin_cpu_supports says yes.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

typedef float (*dot_fn)(const void *w, const cpu_q8 *x, int64_t n);
/* One weight row against 4 activation rows (x_stride blocks apart): out[0..3]. */
typedef void (*dot4t_fn)(const void *w, const cpu_q8 *x, size_t x_stride, int64_t n, float *out);

/* Dispatch table, written once by cpu_kernels_init (tests may re-init with force_scalar from
 * a single thread before any backend runs). */
static struct {
    dot_fn dot_q4_0, dot_q4_1, dot_q8_0;
    dot4t_fn dot4t_q4_0, dot4t_q4_1, dot4t_q8_0; /* NULL: 4 single calls */
    void (*quantize)(const float *x, cpu_q8 *y, int64_t n);
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    float (*dot_f32_f16)(const float *a, const uint16_t *b, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int64_t n);
    bool avx2;
} K;

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* ---- scalar ------------------------------------------------------------------------------ */

static void quantize_scalar(const float *x, cpu_q8 *y, int64_t n) {
    for (int64_t b = 0; b < n / CPU_QK; b++) {
        const float *xb = x + b * CPU_QK;
        float amax = 0.0f;
        for (int i = 0; i < CPU_QK; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < CPU_QK; i++) {
            int q = (int)nearbyintf(xb[i] * id);
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            y[b].qs[i] = (int8_t)q;
            sum += q;
        }
        y[b].d = d;
        y[b].s = d * (float)sum;
    }
}

static float dot_q4_0_scalar(const void *w, const cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / CPU_QK; b++, p += 18) {
        float d = wk_f16_to_f32(rd16(p));
        int sum = 0;
        for (int j = 0; j < 16; j++) {
            sum += ((p[2 + j] & 0xF) - 8) * x[b].qs[j] + ((p[2 + j] >> 4) - 8) * x[b].qs[j + 16];
        }
        acc += d * x[b].d * (float)sum;
    }
    return acc;
}

static float dot_q4_1_scalar(const void *w, const cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / CPU_QK; b++, p += 20) {
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

static float dot_q8_0_scalar(const void *w, const cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / CPU_QK; b++, p += 34) {
        float d = wk_f16_to_f32(rd16(p));
        const int8_t *q = (const int8_t *)(p + 2);
        int sum = 0;
        for (int j = 0; j < CPU_QK; j++) {
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

/* 16 packed nibble bytes -> 32 unsigned bytes in element order (low nibbles, then high). */
AVX2 static inline __m256i unpack_nibbles(const uint8_t *p) {
    __m128i q = _mm_loadu_si128((const __m128i *)p);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

/* sum over 32 lanes of u8 a * s8 b as 8 int32 lanes, as floats */
AVX2 static inline __m256 mul_sum_u8_s8(__m256i a, __m256i b) {
    __m256i p16 = _mm256_maddubs_epi16(a, b);
    __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    return _mm256_cvtepi32_ps(p32);
}

/*
 * Fused dot kernels. Batch invariance: the single-token kernels and the 4-token tile kernels
 * perform exactly the same floating-point operations in the same order for each token (two
 * accumulators by block parity, explicit fmaf for the scalar terms so the compiler cannot
 * contract differently), so a token's result does not depend on how many other tokens share
 * its batch.
 */

/* Q4_0 block: d, 16 nibble bytes. (q - 8) * y summed = q * y - 8 * sum(y). */
#define Q4_0_BLOCK(p, xb, acc, corr)                                                               \
    do {                                                                                           \
        float d_ = h2f(p);                                                                         \
        __m256 s_ =                                                                                \
            mul_sum_u8_s8(unpack_nibbles((p) + 2), _mm256_loadu_si256((const __m256i *)(xb)->qs)); \
        (acc) = _mm256_fmadd_ps(s_, _mm256_set1_ps(d_ * (xb)->d), (acc));                          \
        (corr) = fmaf(d_, (xb)->s, (corr));                                                        \
    } while (0)

AVX2 static float dot_q4_0_avx2(const void *w, const cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float corr = 0.0f;
    int64_t nb = n / CPU_QK, b = 0;
    for (; b + 2 <= nb; b += 2, p += 36) {
        Q4_0_BLOCK(p, &x[b], acc0, corr);
        Q4_0_BLOCK(p + 18, &x[b + 1], acc1, corr);
    }
    for (; b < nb; b++, p += 18) {
        Q4_0_BLOCK(p, &x[b], acc0, corr);
    }
    return hsum256(_mm256_add_ps(acc0, acc1)) - 8.0f * corr;
}

/* Q4_1 block: d, m, 16 nibble bytes. q * d + m: the m part is m * s of the activations. */
#define Q4_1_BLOCK(p, xb, acc, summ)                                                               \
    do {                                                                                           \
        float d_ = h2f(p), m_ = h2f((p) + 2);                                                      \
        __m256 s_ =                                                                                \
            mul_sum_u8_s8(unpack_nibbles((p) + 4), _mm256_loadu_si256((const __m256i *)(xb)->qs)); \
        (acc) = _mm256_fmadd_ps(s_, _mm256_set1_ps(d_ * (xb)->d), (acc));                          \
        (summ) = fmaf(m_, (xb)->s, (summ));                                                        \
    } while (0)

AVX2 static float dot_q4_1_avx2(const void *w, const cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float summ = 0.0f;
    int64_t nb = n / CPU_QK, b = 0;
    for (; b + 2 <= nb; b += 2, p += 40) {
        Q4_1_BLOCK(p, &x[b], acc0, summ);
        Q4_1_BLOCK(p + 20, &x[b + 1], acc1, summ);
    }
    for (; b < nb; b++, p += 20) {
        Q4_1_BLOCK(p, &x[b], acc0, summ);
    }
    return hsum256(_mm256_add_ps(acc0, acc1)) + summ;
}

/* Q8_0 block: d, 32 signed bytes; maddubs needs one unsigned operand: move q's sign onto y. */
#define Q8_0_BLOCK(p, xb, acc)                                                                     \
    do {                                                                                           \
        __m256i q_ = _mm256_loadu_si256((const __m256i *)((p) + 2));                               \
        __m256i y_ = _mm256_loadu_si256((const __m256i *)(xb)->qs);                                \
        __m256 s_ = mul_sum_u8_s8(_mm256_sign_epi8(q_, q_), _mm256_sign_epi8(y_, q_));             \
        (acc) = _mm256_fmadd_ps(s_, _mm256_set1_ps(h2f(p) * (xb)->d), (acc));                      \
    } while (0)

AVX2 static float dot_q8_0_avx2(const void *w, const cpu_q8 *x, int64_t n) {
    const uint8_t *p = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t nb = n / CPU_QK, b = 0;
    for (; b + 2 <= nb; b += 2, p += 68) {
        Q8_0_BLOCK(p, &x[b], acc0);
        Q8_0_BLOCK(p + 34, &x[b + 1], acc1);
    }
    for (; b < nb; b++, p += 34) {
        Q8_0_BLOCK(p, &x[b], acc0);
    }
    return hsum256(_mm256_add_ps(acc0, acc1));
}

/* One weight row against four tokens (xs blocks apart). The weight blocks come from L1 after
 * the first token; per token the operations are exactly those of the single kernels. */
#define TILE4(BLOCK, bbytes, extra_init, finish)                                                   \
    const uint8_t *p = w;                                                                          \
    __m256 acc0[4], acc1[4];                                                                       \
    float sc[4];                                                                                   \
    for (int k = 0; k < 4; k++) {                                                                  \
        acc0[k] = _mm256_setzero_ps();                                                             \
        acc1[k] = _mm256_setzero_ps();                                                             \
        sc[k] = 0.0f;                                                                              \
    }                                                                                              \
    (void)sc;                                                                                      \
    int64_t nb = n / CPU_QK, b = 0;                                                                \
    for (; b + 2 <= nb; b += 2, p += 2 * (bbytes)) {                                               \
        for (int k = 0; k < 4; k++) {                                                              \
            const cpu_q8 *xk = x + (size_t)k * xs;                                                 \
            BLOCK(p, &xk[b], acc0[k] extra_init);                                                  \
            BLOCK(p + (bbytes), &xk[b + 1], acc1[k] extra_init);                                   \
        }                                                                                          \
    }                                                                                              \
    for (; b < nb; b++, p += (bbytes)) {                                                           \
        for (int k = 0; k < 4; k++) {                                                              \
            const cpu_q8 *xk = x + (size_t)k * xs;                                                 \
            BLOCK(p, &xk[b], acc0[k] extra_init);                                                  \
        }                                                                                          \
    }                                                                                              \
    for (int k = 0; k < 4; k++) {                                                                  \
        out[k] = finish;                                                                           \
    }

#define SC_ARG , sc[k]

AVX2 static void dot4t_q4_0_avx2(const void *w, const cpu_q8 *x, size_t xs, int64_t n, float *out){
    TILE4(Q4_0_BLOCK, 18, SC_ARG, hsum256(_mm256_add_ps(acc0[k], acc1[k])) - 8.0f * sc[k])}

AVX2 static void dot4t_q4_1_avx2(const void *w, const cpu_q8 *x, size_t xs, int64_t n, float *out){
    TILE4(Q4_1_BLOCK, 20, SC_ARG, hsum256(_mm256_add_ps(acc0[k], acc1[k])) + sc[k])}

AVX2 static void dot4t_q8_0_avx2(const void *w, const cpu_q8 *x, size_t xs, int64_t n, float *out){
    TILE4(Q8_0_BLOCK, 34, , hsum256(_mm256_add_ps(acc0[k], acc1[k])))}

AVX2 static void quantize_avx2(const float *x, cpu_q8 *y, int64_t n) {
    const __m256 signbit = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / CPU_QK; b++) {
        const float *xb = x + b * CPU_QK;
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
#endif /* HAVE_X86 */

/* ---- dispatch ------------------------------------------------------------------------------ */

static void set_table(bool force_scalar) {
    K.dot_q4_0 = dot_q4_0_scalar;
    K.dot_q4_1 = dot_q4_1_scalar;
    K.dot_q8_0 = dot_q8_0_scalar;
    K.quantize = quantize_scalar;
    K.dot_f32 = dot_f32_scalar;
    K.dot_f32_f16 = dot_f32_f16_scalar;
    K.f16_to_f32 = f16_to_f32_scalar;
    K.axpy_f32 = axpy_f32_scalar;
    K.axpy_f16 = axpy_f16_scalar;
    K.dot4t_q4_0 = NULL;
    K.dot4t_q4_1 = NULL;
    K.dot4t_q8_0 = NULL;
    K.avx2 = false;
#if HAVE_X86
    __builtin_cpu_init();
    /* F16C via cpuid leaf 1 (ECX bit 29): not every compiler's __builtin_cpu_supports
     * knows it; AVX2 implies the OS saves YMM state, which __builtin_cpu_supports checks. */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
    if (!force_scalar && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
        K.dot_q4_0 = dot_q4_0_avx2;
        K.dot_q4_1 = dot_q4_1_avx2;
        K.dot_q8_0 = dot_q8_0_avx2;
        K.dot4t_q4_0 = dot4t_q4_0_avx2;
        K.dot4t_q4_1 = dot4t_q4_1_avx2;
        K.dot4t_q8_0 = dot4t_q8_0_avx2;
        K.quantize = quantize_avx2;
        K.dot_f32 = dot_f32_avx2;
        K.dot_f32_f16 = dot_f32_f16_avx2;
        K.f16_to_f32 = f16_to_f32_avx2;
        K.axpy_f32 = axpy_f32_avx2;
        K.axpy_f16 = axpy_f16_avx2;
        K.avx2 = true;
    }
#else
    (void)force_scalar;
#endif
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_default(void) {
    set_table(false);
}

void cpu_kernels_init(bool force_scalar) {
    pthread_once(&once, init_default);
    if (force_scalar || !K.avx2) {
        set_table(force_scalar);
    }
}

bool cpu_kernels_have_avx2(void) {
    return K.avx2;
}

bool cpu_fused_type(wk_dtype t) {
    return t == WK_DTYPE_Q4_0 || t == WK_DTYPE_Q4_1 || t == WK_DTYPE_Q8_0;
}

void cpu_quantize_q8(const float *x, cpu_q8 *y, int64_t n) {
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

float cpu_dot_q8(wk_dtype t, const void *wrow, const cpu_q8 *x, int64_t n) {
    dot_fn f = pick(t);
    return f != NULL ? f(wrow, x, n) : 0.0f;
}

void cpu_dot_q8_multi(wk_dtype t, const void *wrow, const cpu_q8 *x, size_t x_stride_blocks,
                      int n_tok, float *out, size_t out_stride, int64_t n) {
    dot_fn f = pick(t);
    dot4t_fn f4 = t == WK_DTYPE_Q4_0   ? K.dot4t_q4_0
                  : t == WK_DTYPE_Q4_1 ? K.dot4t_q4_1
                  : t == WK_DTYPE_Q8_0 ? K.dot4t_q8_0
                                       : NULL;
    if (f == NULL) {
        return;
    }
    int k = 0;
    if (f4 != NULL) {
        float o4[4];
        for (; k + 4 <= n_tok; k += 4) {
            f4(wrow, x + (size_t)k * x_stride_blocks, x_stride_blocks, n, o4);
            for (int i = 0; i < 4; i++) {
                out[(size_t)(k + i) * out_stride] = o4[i];
            }
        }
    }
    for (; k < n_tok; k++) {
        out[(size_t)k * out_stride] = f(wrow, x + (size_t)k * x_stride_blocks, n);
    }
}

float cpu_dot_f32(const float *a, const float *b, int64_t n) {
    return K.dot_f32(a, b, n);
}

void cpu_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n) {
    K.f16_to_f32(src, dst, n);
}

void cpu_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        dst[i] = wk_f32_to_f16(src[i]);
    }
}

void cpu_axpy_f32(float *y, float a, const float *x, int64_t n) {
    K.axpy_f32(y, a, x, n);
}

void cpu_axpy_f16(float *y, float a, const uint16_t *x, int64_t n) {
    K.axpy_f16(y, a, x, n);
}

float cpu_dot_f32_f16(const float *a, const uint16_t *b, int64_t n) {
    return K.dot_f32_f16(a, b, n);
}
