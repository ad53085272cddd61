/*
 * cpu_panel: 16-row weight panels and their AVX-512 VNNI kernels (see cpu_panel.h).
 *
 * The kernels carry their own target attribute; the rest of the project is compiled for the
 * baseline ISA and only calls them when wk_cpu_panel_type says the level allows it.
 */
#include "cpu_panel.h"

#include <string.h>

#include "cpu_simd_impl.h"

#define Q4P_BYTES 320   /* 16 rows x 16 nibble bytes + 16 d + 16 m (f16) */
#define Q8P_BYTES 544   /* 16 rows x 32 bytes + 16 d (f16) */
#define F16P_BYTES 1024 /* 32 inputs x 16 rows (f16) */
#define F32P_BYTES 2048 /* 32 inputs x 16 rows (f32) */
#define IQ4P_BYTES 288  /* 16 rows x 16 nibble bytes + 16 d (f16) */
/* Tokens whose accumulators a kernel keeps in registers at once. */
#define PANEL_TILE 8

/* The traits row of t when weights of type t go into panels, else NULL. */
static const wk_dtype_traits *panel_source(wk_dtype t) {
    const wk_dtype_traits *tr = wk_dtype_traits_of(t);
    return tr != NULL && tr->panel_from != WK_PANEL_FROM_NONE ? tr : NULL;
}

wk_dtype wk_cpu_panel_kind(wk_dtype t) {
    const wk_dtype_traits *tr = panel_source(t);
    return tr != NULL ? tr->panel_kind : WK_DTYPE_Q4_1;
}

bool wk_cpu_panel_needs_corr(wk_dtype t) {
    wk_dtype kind = wk_cpu_panel_kind(t);
    return kind == WK_DTYPE_Q8_0 || kind == WK_DTYPE_IQ4_NL;
}

static size_t block_bytes(wk_dtype t) {
    wk_dtype kind = wk_cpu_panel_kind(t);
    switch (kind) {
    case WK_DTYPE_F16:
        return F16P_BYTES;
    case WK_DTYPE_F32:
        return F32P_BYTES;
    case WK_DTYPE_Q8_0:
        return Q8P_BYTES;
    case WK_DTYPE_IQ4_NL:
        return IQ4P_BYTES;
    default:
        return Q4P_BYTES;
    }
}

bool wk_cpu_panel_type(wk_dtype t) {
    wk_cpu_isa isa = wk_cpu_kernels_isa();
    return panel_source(t) != NULL && HAVE_X86 && isa >= WK_CPU_ISA_AVX2;
}

bool wk_cpu_panel_packable(wk_dtype t, int64_t rows, int64_t n) {
    return panel_source(t) != NULL && rows > 0 && n > 0 && n % WK_CPU_QK == 0 &&
           wk_dtype_row_bytes(t, n) > 0;
}

size_t wk_cpu_panel_bytes(wk_dtype t, int64_t rows, int64_t n) {
    size_t panels = (size_t)((rows + WK_CPU_PANEL_ROWS - 1) / WK_CPU_PANEL_ROWS);
    return panels * (size_t)(n / WK_CPU_QK) * block_bytes(t);
}

/* Row r of panel-block o from one 32-input block s in GGUF form of type st (F16, F32, Q4_0,
 * Q4_1, Q8_0 or IQ4_NL). */
static void put_row(wk_dtype st, const uint8_t *s, uint8_t *o, int r) {
    if (st == WK_DTYPE_F16 || st == WK_DTYPE_F32) { /* input i of row r at (16 i + r) */
        size_t el = st == WK_DTYPE_F16 ? 2 : 4;
        for (int i = 0; i < WK_CPU_QK; i++) {
            memcpy(o + el * (size_t)(WK_CPU_PANEL_ROWS * i + r), s + el * (size_t)i, el);
        }
        return;
    }
    if (st == WK_DTYPE_Q8_0) { /* d, qs[32] */
        for (int j = 0; j < 8; j++) {
            for (int e = 0; e < 4; e++) {
                o[64 * j + 4 * r + e] = (uint8_t)(s[2 + 4 * j + e] ^ 0x80);
            }
        }
        memcpy(o + 512 + 2 * r, s, 2);
        return;
    }
    /* Q4_1: d, m, qs[16]; Q4_0 and IQ4_NL: d, qs[16] (IQ4 panels have no m) */
    const uint8_t *qs = s + (st == WK_DTYPE_Q4_1 ? 4 : 2);
    for (int j = 0; j < 4; j++) {
        memcpy(o + 64 * j + 4 * r, qs + 4 * j, 4);
    }
    memcpy(o + 256 + 2 * r, s, 2);
    if (st == WK_DTYPE_IQ4_NL) {
        return;
    }
    if (st == WK_DTYPE_Q4_1) {
        memcpy(o + 288 + 2 * r, s + 2, 2);
    } else { /* (q - 8) d = q d + m with m = -8 d (exact in f16 short of overflow) */
        uint16_t d;
        memcpy(&d, s, 2);
        uint16_t m = wk_f32_to_f16(-8.0f * wk_f16_to_f32(d));
        memcpy(o + 288 + 2 * r, &m, 2);
    }
}

/* Row r of panel-block o as zeros (kind: the panel layout). */
static void zero_row(wk_dtype kind, uint8_t *o, int r) {
    if (kind == WK_DTYPE_F16 || kind == WK_DTYPE_F32) {
        size_t el = kind == WK_DTYPE_F16 ? 2 : 4;
        for (int i = 0; i < WK_CPU_QK; i++) {
            memset(o + el * (size_t)(WK_CPU_PANEL_ROWS * i + r), 0, el);
        }
        return;
    }
    int vectors = kind == WK_DTYPE_Q8_0 ? 8 : 4;
    for (int j = 0; j < vectors; j++) {
        memset(o + 64 * j + 4 * r, 0, 4);
    }
    memset(o + 64 * vectors + 2 * r, 0, 2); /* d */
    if (kind == WK_DTYPE_Q4_1) {
        memset(o + 288 + 2 * r, 0, 2); /* m */
    }
}

/* A block of type t (up to 256 inputs) -> Q8_0 blocks (34 bytes per 32 inputs) of its values
 * requantized (absmax / 127 per 32, as the activations are): the kernels' only lossy step on
 * weights. */
static void requant_q8_0(wk_dtype t, const uint8_t *src, uint8_t *dst) {
    float f[256];
    wk_cpu_q8 q[8];
    int64_t n = wk_dtype_block_elems(t);
    wk_dequantize_row(t, src, f, n);
    wk_cpu_quantize_q8(f, q, n);
    for (int64_t i = 0; i < n / WK_CPU_QK; i++) {
        uint16_t d = wk_f32_to_f16(q[i].d);
        memcpy(dst + 34 * i, &d, 2);
        memcpy(dst + 34 * i + 2, q[i].qs, 32);
    }
}

void wk_cpu_panel_pack(wk_dtype t, const void *w, int64_t rows, int64_t n, int64_t p0, int64_t p1,
                       void *dst) {
    const wk_dtype_traits *tr = panel_source(t);
    int64_t nb = n / WK_CPU_QK;
    size_t rb = wk_dtype_row_bytes(t, n), bb = block_bytes(t);
    /* 32-input blocks per source block (float types: 32 elements taken as one block) */
    bool elems = tr->block_elems == 1;
    int64_t sub = elems ? 1 : tr->block_elems / WK_CPU_QK;
    size_t src_bb = elems ? WK_CPU_QK * tr->block_bytes : tr->block_bytes;
    /* one source block converted to panel_kind blocks (bytes per 32 inputs) */
    size_t conv_bb = wk_dtype_block_bytes(tr->panel_kind);
    uint8_t conv[8 * 34];
    for (int64_t p = p0; p < p1; p++) {
        for (int64_t sb = 0; sb < nb / sub; sb++) {
            for (int r = 0; r < WK_CPU_PANEL_ROWS; r++) {
                if (p * WK_CPU_PANEL_ROWS + r >= rows) {
                    /* padding of a last partial panel: d = m = 0 makes every product 0 */
                    for (int64_t i = 0; i < sub; i++) {
                        uint8_t *o =
                            (uint8_t *)dst + ((size_t)p * (size_t)nb + (size_t)(sb * sub + i)) * bb;
                        zero_row(tr->panel_kind, o, r);
                    }
                    continue;
                }
                const uint8_t *s = (const uint8_t *)w + (size_t)(p * WK_CPU_PANEL_ROWS + r) * rb +
                                   (size_t)sb * src_bb;
                wk_dtype st = t;
                size_t step = 0;
                if (tr->panel_from == WK_PANEL_FROM_CONVERT) {
                    tr->to_panel(s, conv);
                    s = conv, st = tr->panel_kind, step = conv_bb;
                } else if (tr->panel_from == WK_PANEL_FROM_REQUANT) {
                    requant_q8_0(t, s, conv);
                    s = conv, st = WK_DTYPE_Q8_0, step = conv_bb;
                }
                for (int64_t i = 0; i < sub; i++) {
                    uint8_t *o =
                        (uint8_t *)dst + ((size_t)p * (size_t)nb + (size_t)(sb * sub + i)) * bb;
                    put_row(st, s + (size_t)i * step, o, r);
                }
            }
        }
    }
}

void wk_cpu_q8_corr(const wk_cpu_q8 *x, int32_t *c, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        int32_t sum = 0;
        for (int i = 0; i < WK_CPU_QK; i++) {
            sum += x[b].qs[i];
        }
        c[b] = -128 * sum;
    }
}

#if HAVE_X86

/* Activation bytes 4j .. 4j + 3 of a block as one 32-bit value (broadcast by the callers;
 * the compiler folds the load into the dot instruction). */
static INLINE int32_t act4(const wk_cpu_q8 *xb, int j) {
    int32_t v;
    memcpy(&v, xb->qs + 4 * j, 4);
    return v;
}

/*
 * A decode matmul streams each panel once. The kernels compute between their loads, so the
 * loads in flight (out-of-order window plus the hardware prefetchers) cover less of the memory
 * latency than a plain read's do, and the one-token kernels ask for the lines ahead of each
 * block themselves: FAR_AHEAD bytes on into L2 at both levels, and at AVX2 (32-byte loads:
 * twice the instructions per byte of AVX-512's) NEAR_AHEAD bytes on into L1 as well. On the
 * 2-vCPU EPYC, decode tokens alternating with and without in one process: AVX2 4-7% faster
 * for L1 hints from 2 to 6 KiB ahead and 2-5% more for L2 hints 12 to 24 KiB ahead; AVX-512
 * 2% faster for the L2 hints and 1% slower for L1 hints (4 KiB into L2: 4% slower). Q8_0
 * panels (Q8_0, and the types converted into them: Q5_0, Q3_K, Q5_K, Q6_K, ...) go without
 * the L2 hints: less arithmetic per byte, and the hardware prefetchers keep up alone. The
 * bundled model's Q8_0 output head ran 5-6% faster without them at both levels; whole tokens
 * 1% (Q4_1 file), 1.4% / 3.8% (Q8_0, AVX2 / AVX-512), 4.4% / 0.9% (Q4_K_M), 1% (Q5_0). Past the
 * end of the weights a hint fetches bytes nobody reads, or nothing (hints never fault).
 */
#define NEAR_AHEAD 3072
#define FAR_AHEAD 16384

/* The hints for the lines of the block_bytes block at p: into L2 when far, into L1 when near. */
static INLINE void stream_ahead(const uint8_t *p, size_t block_bytes, bool far, bool near) {
    for (size_t o = 0; o < block_bytes; o += 64) {
        if (far) {
            _mm_prefetch((const char *)p + FAR_AHEAD + o, _MM_HINT_T2);
        }
        if (near) {
            _mm_prefetch((const char *)p + NEAR_AHEAD + o, _MM_HINT_T0);
        }
    }
}

/* out[k] = (out[k] if accumulating) + acc[k] (+ bias), 16 rows per token. */
AVX512 static INLINE void store_tile(const __m512 *acc, int nt, const wk_cpu_panel_out *o) {
#pragma GCC unroll 8
    for (int k = 0; k < nt; k++) {
        __m512 v = acc[k];
        if (o->accumulate) {
            v = _mm512_add_ps(_mm512_loadu_ps(o->out[k]), v);
        }
        if (o->bias != NULL) {
            v = _mm512_add_ps(v, _mm512_loadu_ps(o->bias));
        }
        _mm512_storeu_ps(o->out[k], v);
    }
}

/*
 * Q4 panel against nt tokens. Per token and block: the integer dot of 16 rows (8 steps of 4
 * inputs), times d_w * d_x, plus m_w * s_x (s_x = d_x * sum of the block's activation
 * bytes). One accumulator per token over the blocks in order: the operations applied to a
 * token are the same for every nt.
 */
AVX512 static INLINE void q4p_tile(const uint8_t *p, const wk_cpu_q8 *x, size_t xs, int nt,
                                   const wk_cpu_panel_out *o, int64_t nb) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    __m512 acc[PANEL_TILE];
#pragma GCC unroll 8
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, p += Q4P_BYTES) {
        if (nt == 1) {
            stream_ahead(p, Q4P_BYTES, true, false);
        }
        __m512i w[8];
#pragma GCC unroll 8
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_load_si512((const void *)(p + 64 * j));
            w[j] = _mm512_and_si512(v, low4);
            w[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(p + 256)));
        __m512 mw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(p + 288)));
#pragma GCC unroll 8
        for (int k = 0; k < nt; k++) {
            const wk_cpu_q8 *xb = x + (size_t)k * xs + b;
            __m512i i =
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(act4(xb, 0)));
#pragma GCC unroll 8
            for (int j = 1; j < 8; j++) {
                i = _mm512_dpbusd_epi32(i, w[j], _mm512_set1_epi32(act4(xb, j)));
            }
            __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xb->d));
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), scale, acc[k]);
            acc[k] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xb->s), acc[k]);
        }
    }
    store_tile(acc, nt, o);
}

/* One block of a panel with 8-bit weights plus 128 (w: 8 vectors of 4 inputs x 16 rows, dw:
 * the 16 row scales) against nt tokens, into acc: the dot of (w + 128) with x starts from the
 * token's correction -128 * sum(x), so the integer sum is exactly the dot of w with x. */
AVX512 static INLINE void q8_block_tokens(const __m512i *w, __m512 dw, const wk_cpu_q8 *x,
                                          const int32_t *corr, size_t xs, int64_t b, int nt,
                                          __m512 *acc) {
#pragma GCC unroll 8
    for (int k = 0; k < nt; k++) {
        const wk_cpu_q8 *xb = x + (size_t)k * xs + b;
        __m512i i = _mm512_set1_epi32(corr[(size_t)k * xs + (size_t)b]);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            i = _mm512_dpbusd_epi32(i, w[j], _mm512_set1_epi32(act4(xb, j)));
        }
        __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xb->d));
        acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), scale, acc[k]);
    }
}

/* Q8_0 panel against nt tokens (q8_block_tokens per block). */
AVX512 static INLINE void q8p_tile(const uint8_t *p, const wk_cpu_q8 *x, const int32_t *corr,
                                   size_t xs, int nt, const wk_cpu_panel_out *o, int64_t nb) {
    __m512 acc[PANEL_TILE];
#pragma GCC unroll 8
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, p += Q8P_BYTES) {
        __m512i w[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            w[j] = _mm512_loadu_si512((const void *)(p + 64 * j));
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 512)));
        q8_block_tokens(w, dw, x, corr, xs, b, nt, acc);
    }
    store_tile(acc, nt, o);
}

/* IQ4 panel against nt tokens: the nibbles are grid indices; one byte shuffle per vector turns
 * them into the grid values plus 128 (unsigned, as vpdpbusd wants), then as q8p_tile (the
 * Q8_0 correction removes the 128). */
AVX512 static INLINE void iq4p_tile(const uint8_t *p, const wk_cpu_q8 *x, const int32_t *corr,
                                    size_t xs, int nt, const wk_cpu_panel_out *o, int64_t nb) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i grid =
        _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)wk_iq4_grid)),
                         _mm512_set1_epi8((char)0x80));
    __m512 acc[PANEL_TILE];
#pragma GCC unroll 8
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, p += IQ4P_BYTES) {
        if (nt == 1) {
            stream_ahead(p, IQ4P_BYTES, true, false);
        }
        __m512i w[8];
#pragma GCC unroll 8
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_loadu_si512((const void *)(p + 64 * j));
            w[j] = _mm512_shuffle_epi8(grid, _mm512_and_si512(v, low4));
            w[j + 4] = _mm512_shuffle_epi8(grid, _mm512_and_si512(_mm512_srli_epi16(v, 4), low4));
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 256)));
        q8_block_tokens(w, dw, x, corr, xs, b, nt, acc);
    }
    store_tile(acc, nt, o);
}

/* F16 panel against nt tokens of f32 activations (x + k * xs): per input, the 16 rows
 * converted once and one multiply-add per token, in four chains per token (inputs i mod 4;
 * one token alone is otherwise bound by the multiply-add latency), the same for every nt. */
#define F16_TILE 4

/* Input c of 4 of a float panel's step as the 16 rows' f32 weights (f32: F32 panels, else
 * F16). */
AVX512 static INLINE __m512 fw16(const uint8_t *p, int c, bool f32) {
    return f32 ? _mm512_loadu_ps((const float *)(p + 64 * c))
               : _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(p + 32 * c)));
}

AVX512 static INLINE void fp_tile(const uint8_t *p, const float *x, size_t xs, int nt,
                                  const wk_cpu_panel_out *o, int64_t n, bool f32) {
    __m512 a[F16_TILE][4];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            a[k][c] = _mm512_setzero_ps();
        }
    }
    for (int64_t i = 0; i < n; i += 4, p += f32 ? 256 : 128) {
        __m512 w[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            w[c] = fw16(p, c, f32);
        }
#pragma GCC unroll 4
        for (int k = 0; k < nt; k++) {
            const float *xk = x + (size_t)k * xs + (size_t)i;
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                a[k][c] = _mm512_fmadd_ps(w[c], _mm512_set1_ps(xk[c]), a[k][c]);
            }
        }
    }
    __m512 acc[F16_TILE];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm512_add_ps(_mm512_add_ps(a[k][0], a[k][1]), _mm512_add_ps(a[k][2], a[k][3]));
    }
    store_tile(acc, nt, o);
}

/* The part of o for tokens k0 .. */
static INLINE wk_cpu_panel_out out_from(const wk_cpu_panel_out *o, int k0) {
    wk_cpu_panel_out r = *o;
    r.out = o->out + k0;
    return r;
}

/*
 * AVX2: the 16 rows as two halves of 8 (the 32-byte halves of each 64-byte
 * vector), one half over all blocks, then the other, for 2 to PANEL_TILE_AVX2 tokens (16
 * registers); one token takes the *_one_avx2 kernels below (both halves per block). vpmaddubsw
 * products of 4-bit weights and 8-bit activations (at most 3,810 per 16-bit lane) summed over the
 * block's 8 steps stay below 32,767, so a block costs 8 multiplies, 7 16-bit adds and one widening
 * vpmaddwd per token and half.
 */
#define PANEL_TILE_AVX2 4

/* Rows 8h .. 8h + 7 of out[k] = (out[k] if accumulating) + acc[k] (+ bias). */
AVX2 static INLINE void store_half_avx2(const __m256 *acc, int nt, const wk_cpu_panel_out *o,
                                        int h) {
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        float *out = o->out[k] + 8 * h;
        __m256 v = acc[k];
        if (o->accumulate) {
            v = _mm256_add_ps(_mm256_loadu_ps(out), v);
        }
        if (o->bias != NULL) {
            v = _mm256_add_ps(v, _mm256_loadu_ps(o->bias + 8 * h));
        }
        _mm256_storeu_ps(out, v);
    }
}

/* Half h (rows 8h .. 8h + 7) of a Q8_0 panel-block as signed weights: w[j] holds inputs
 * 4j .. 4j + 3 of the 8 rows (the stored bytes carry +128). */
AVX2 static INLINE void q8_weights_avx2(const uint8_t *p, int h, __m256i w[8]) {
    const __m256i bias = _mm256_set1_epi8((char)0x80);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        w[j] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + 64 * j + 32 * h)), bias);
    }
}

/* Half h of an IQ4 panel-block as signed weights (the grid values of its 4-bit indices): w[j]
 * as q8_weights_avx2's. */
AVX2 static INLINE void iq4_weights_avx2(const uint8_t *p, int h, __m256i grid, __m256i w[8]) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + 64 * j + 32 * h));
        w[j] = _mm256_shuffle_epi8(grid, _mm256_and_si256(v, low4));
        w[j + 4] = _mm256_shuffle_epi8(grid, _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
    }
}

AVX2 static INLINE void q4p_half_avx2(const uint8_t *p, const wk_cpu_q8 *x, size_t xs, int nt,
                                      const wk_cpu_panel_out *o, int64_t nb, int h) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[PANEL_TILE_AVX2];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, p += Q4P_BYTES) {
        __m256i w[8];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_load_si256((const __m256i *)(p + 64 * j + 32 * h));
            w[j] = _mm256_and_si256(v, low4);
            w[j + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        }
        __m256 dw = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(p + 256 + 16 * h)));
        __m256 mw = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(p + 288 + 16 * h)));
#pragma GCC unroll 4
        for (int k = 0; k < nt; k++) {
            const wk_cpu_q8 *xb = x + (size_t)k * xs + b;
            __m256i s16 = _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(act4(xb, 0)));
#pragma GCC unroll 8
            for (int j = 1; j < 8; j++) {
                s16 = _mm256_add_epi16(s16,
                                       _mm256_maddubs_epi16(w[j], _mm256_set1_epi32(act4(xb, j))));
            }
            __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
            __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xb->d));
            acc[k] = _mm256_fmadd_ps(f, scale, acc[k]);
            acc[k] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xb->s), acc[k]);
        }
    }
    store_half_avx2(acc, nt, o, h);
}

/*
 * Decode (one token) at AVX2: both halves of each block in one pass, so the panel streams in
 * once, in order, and the token's activation broadcasts serve both halves. Per lane this is
 * the arithmetic of the half kernels for a tile of one token (the integer sums are exact in
 * any order; the scale work is the same operations in the same order), so a token's result
 * does not depend on which of them runs it.
 */

/* A token's 16 rows (acc[h]: rows 8h .. 8h + 7) as store_half_avx2 stores them. */
AVX2 static INLINE void store_one_avx2(const __m256 *acc, const wk_cpu_panel_out *o) {
    store_half_avx2(&acc[0], 1, o, 0);
    store_half_avx2(&acc[1], 1, o, 1);
}

/* Half h of a Q4 panel-block for one token (xb: its block): acc plus the block's part, as
 * q4p_half_avx2 computes it. */
AVX2 static INLINE __m256 q4_half_one_avx2(const uint8_t *p, const wk_cpu_q8 *xb, int h,
                                           __m256 acc) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256i s16 = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m256i v = _mm256_load_si256((const __m256i *)(p + 64 * j + 32 * h));
        __m256i a = _mm256_maddubs_epi16(_mm256_and_si256(v, low4), _mm256_set1_epi32(act4(xb, j)));
        __m256i c = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4),
                                         _mm256_set1_epi32(act4(xb, j + 4)));
        s16 = _mm256_add_epi16(s16, _mm256_add_epi16(a, c));
    }
    __m256 dw = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(p + 256 + 16 * h)));
    __m256 mw = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(p + 288 + 16 * h)));
    __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
    __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xb->d));
    acc = _mm256_fmadd_ps(f, scale, acc);
    return _mm256_fmadd_ps(mw, _mm256_set1_ps(xb->s), acc);
}

AVX2 static INLINE void q4p_one_avx2(const uint8_t *p, const wk_cpu_q8 *x,
                                     const wk_cpu_panel_out *o, int64_t nb) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, p += Q4P_BYTES) {
        stream_ahead(p, Q4P_BYTES, true, true);
        acc0 = q4_half_one_avx2(p, x + b, 0, acc0);
        acc1 = q4_half_one_avx2(p, x + b, 1, acc1);
    }
    __m256 acc[2] = {acc0, acc1};
    store_one_avx2(acc, o);
}

/* One step j of a block's half for one token with signed 8-bit weights w: the exact integer
 * dot of w's 4 inputs per row with the token's broadcast 4 activations a, widened to 32 bits
 * (the sign trick of q8p_half_avx2). */
AVX2 static INLINE __m256i q8_step_avx2(__m256i w, __m256i a) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* One token against a block of signed weights: w[h][j] is step j of half h (the steps of
 * q8_block_tokens_avx2), into acc[h]. */
AVX2 static INLINE void q8_block_one_avx2(__m256i w[2][8], const uint8_t *dp, const wk_cpu_q8 *xb,
                                          __m256 *acc) {
    __m256i i[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        __m256i a = _mm256_set1_epi32(act4(xb, j));
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            i[h] = _mm256_add_epi32(i[h], q8_step_avx2(w[h][j], a));
        }
    }
    __m256 d = _mm256_set1_ps(xb->d);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dp + 16 * h)));
        __m256 scale = _mm256_mul_ps(dw, d);
        acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i[h]), scale, acc[h]);
    }
}

AVX2 static INLINE void q8p_one_avx2(const uint8_t *p, const wk_cpu_q8 *x,
                                     const wk_cpu_panel_out *o, int64_t nb) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++, p += Q8P_BYTES) {
        stream_ahead(p, Q8P_BYTES, false, true);
        __m256i w[2][8];
        q8_weights_avx2(p, 0, w[0]);
        q8_weights_avx2(p, 1, w[1]);
        q8_block_one_avx2(w, p + 512, x + b, acc);
    }
    store_one_avx2(acc, o);
}

AVX2 static INLINE void iq4p_one_avx2(const uint8_t *p, const wk_cpu_q8 *x,
                                      const wk_cpu_panel_out *o, int64_t nb) {
    const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)wk_iq4_grid));
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++, p += IQ4P_BYTES) {
        stream_ahead(p, IQ4P_BYTES, true, true);
        __m256i w[2][8];
        iq4_weights_avx2(p, 0, grid, w[0]);
        iq4_weights_avx2(p, 1, grid, w[1]);
        q8_block_one_avx2(w, p + 256, x + b, acc);
    }
    store_one_avx2(acc, o);
}

/* One block's half (8 rows) of a panel with signed 8-bit weights ws (wa = |ws|, dw: the 8 row
 * scales) against nt tokens, into acc (see q8p_half_avx2). */
AVX2 static INLINE void q8_block_tokens_avx2(const __m256i *ws, const __m256i *wa, __m256 dw,
                                             const wk_cpu_q8 *x, size_t xs, int64_t b, int nt,
                                             __m256 *acc) {
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        const wk_cpu_q8 *xb = x + (size_t)k * xs + b;
        __m256i i = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m256i sx = _mm256_sign_epi8(_mm256_set1_epi32(act4(xb, j)), ws[j]);
            i = _mm256_add_epi32(i, _mm256_madd_epi16(_mm256_maddubs_epi16(wa[j], sx), ones));
        }
        __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xb->d));
        acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), scale, acc[k]);
    }
}

/*
 * AVX2 Q8_0 panels: vpmaddubsw needs one unsigned operand, and 8-bit weights times 8-bit
 * activations would saturate its 16-bit sums, so each step multiplies |w| by x carrying w's
 * sign (vpsignb) and widens at once (vpmaddwd). The integer sum is exactly the AVX-512 one
 * (the dot of w with x), so the Q8_0 correction is not needed here.
 */
AVX2 static INLINE void q8p_half_avx2(const uint8_t *p, const wk_cpu_q8 *x, size_t xs, int nt,
                                      const wk_cpu_panel_out *o, int64_t nb, int h) {
    __m256 acc[PANEL_TILE_AVX2];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, p += Q8P_BYTES) {
        __m256i ws[8], wa[8]; /* signed weights and their magnitudes */
        q8_weights_avx2(p, h, ws);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            wa[j] = _mm256_abs_epi8(ws[j]);
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 512 + 16 * h)));
        q8_block_tokens_avx2(ws, wa, dw, x, xs, b, nt, acc);
    }
    store_half_avx2(acc, nt, o, h);
}

/* AVX2 IQ4 panels: the grid values by one byte shuffle per vector, then as q8p_half_avx2 (the
 * same integer sums as the AVX-512 kernel). */
AVX2 static INLINE void iq4p_half_avx2(const uint8_t *p, const wk_cpu_q8 *x, size_t xs, int nt,
                                       const wk_cpu_panel_out *o, int64_t nb, int h) {
    const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)wk_iq4_grid));
    __m256 acc[PANEL_TILE_AVX2];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++, p += IQ4P_BYTES) {
        __m256i ws[8], wa[8]; /* signed weights and their magnitudes */
        iq4_weights_avx2(p, h, grid, ws);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            wa[j] = _mm256_abs_epi8(ws[j]);
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 256 + 16 * h)));
        q8_block_tokens_avx2(ws, wa, dw, x, xs, b, nt, acc);
    }
    store_half_avx2(acc, nt, o, h);
}

/* AVX2 F16 panels, rows 8h .. 8h + 7; arithmetic per token as in fp_tile. */
#define F16_TILE_AVX2 2

AVX2 static INLINE void f16p_half_avx2(const uint8_t *p, const float *x, size_t xs, int nt,
                                       const wk_cpu_panel_out *o, int64_t n, int h) {
    __m256 a[F16_TILE_AVX2][4];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            a[k][c] = _mm256_setzero_ps();
        }
    }
    for (int64_t i = 0; i < n; i += 4, p += 128) {
        __m256 w[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            w[c] = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(p + 32 * c + 16 * h)));
        }
#pragma GCC unroll 4
        for (int k = 0; k < nt; k++) {
            const float *xk = x + (size_t)k * xs + (size_t)i;
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                a[k][c] = _mm256_fmadd_ps(w[c], _mm256_set1_ps(xk[c]), a[k][c]);
            }
        }
    }
    __m256 acc[F16_TILE_AVX2];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        acc[k] = _mm256_add_ps(_mm256_add_ps(a[k][0], a[k][1]), _mm256_add_ps(a[k][2], a[k][3]));
    }
    store_half_avx2(acc, nt, o, h);
}

/*
 * AVX2 F32 panels: both halves of the 16 rows at once for a tile of up to 4 tokens, one
 * accumulator per token and half over the inputs in order (8 independent multiply-add chains
 * keep both FMA ports busy; F16's four per token would leave room for 2 tokens only, and the
 * weights, twice F16's bytes, come from L2 once per tile).
 */
#define F32_TILE_AVX2 4

AVX2 static INLINE void f32p_tile_avx2(const uint8_t *p, const float *x, size_t xs, int nt,
                                       const wk_cpu_panel_out *o, int64_t n) {
    __m256 a0[F32_TILE_AVX2], a1[F32_TILE_AVX2];
#pragma GCC unroll 4
    for (int k = 0; k < nt; k++) {
        a0[k] = _mm256_setzero_ps();
        a1[k] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < n; i++, p += 64) {
        __m256 w0 = _mm256_loadu_ps((const float *)p);
        __m256 w1 = _mm256_loadu_ps((const float *)(p + 32));
#pragma GCC unroll 4
        for (int k = 0; k < nt; k++) {
            __m256 xk = _mm256_set1_ps(x[(size_t)k * xs + (size_t)i]);
            a0[k] = _mm256_fmadd_ps(w0, xk, a0[k]);
            a1[k] = _mm256_fmadd_ps(w1, xk, a1[k]);
        }
    }
    store_half_avx2(a0, nt, o, 0);
    store_half_avx2(a1, nt, o, 1);
}

/* Token k0's part of in (the pointers a kernel does not use stay NULL). */
static INLINE wk_cpu_panel_in in_from(const wk_cpu_panel_in *in, int k0) {
    wk_cpu_panel_in r = *in;
    if (in->xq != NULL) {
        r.xq = in->xq + (size_t)k0 * in->xq_stride;
    }
    if (in->corr != NULL) {
        r.corr = in->corr + (size_t)k0 * in->xq_stride;
    }
    if (in->xf != NULL) {
        r.xf = in->xf + (size_t)k0 * in->xf_stride;
    }
    return r;
}

/* A kernel entry point (wk_cpu_panel_fn): the tokens in tiles of TILE, each tile run by the
 * instance of TILE_CALL for its size (CASES turns the count into a constant). */
#define PANEL_ENTRY(name, attr, TILE, CASES, TILE_CALL)                                            \
    attr static void name(const void *panel, const wk_cpu_panel_in *in, int n_tok,                 \
                          const wk_cpu_panel_out *o, int64_t n) {                                  \
        const uint8_t *p = panel;                                                                  \
        for (int k0 = 0; k0 < n_tok; k0 += (TILE)) {                                               \
            int nt = n_tok - k0 < (TILE) ? n_tok - k0 : (TILE);                                    \
            wk_cpu_panel_in ik = in_from(in, k0);                                                  \
            wk_cpu_panel_out ok = out_from(o, k0);                                                 \
            CASES(nt, TILE_CALL)                                                                   \
        }                                                                                          \
    }

#define Q4_TILE(c) q4p_tile(p, ik.xq, ik.xq_stride, c, &ok, n / WK_CPU_QK)
#define Q8_TILE(c) q8p_tile(p, ik.xq, ik.corr, ik.xq_stride, c, &ok, n / WK_CPU_QK)
#define IQ4_TILE(c) iq4p_tile(p, ik.xq, ik.corr, ik.xq_stride, c, &ok, n / WK_CPU_QK)
#define F16_TILE_CALL(c) fp_tile(p, ik.xf, ik.xf_stride, c, &ok, n, false)
#define F32_TILE_CALL(c) fp_tile(p, ik.xf, ik.xf_stride, c, &ok, n, true)
/* AVX2: both 8-row halves of the tile */
#define Q4_HALVES(c)                                                                               \
    q4p_half_avx2(p, ik.xq, ik.xq_stride, c, &ok, n / WK_CPU_QK, 0);                               \
    q4p_half_avx2(p, ik.xq, ik.xq_stride, c, &ok, n / WK_CPU_QK, 1)
#define Q8_HALVES(c)                                                                               \
    q8p_half_avx2(p, ik.xq, ik.xq_stride, c, &ok, n / WK_CPU_QK, 0);                               \
    q8p_half_avx2(p, ik.xq, ik.xq_stride, c, &ok, n / WK_CPU_QK, 1)
#define IQ4_HALVES(c)                                                                              \
    iq4p_half_avx2(p, ik.xq, ik.xq_stride, c, &ok, n / WK_CPU_QK, 0);                              \
    iq4p_half_avx2(p, ik.xq, ik.xq_stride, c, &ok, n / WK_CPU_QK, 1)
/* AVX2: a tile of one token in one pass (the *_one_avx2 kernels), larger tiles by halves */
#define ONE_OR_HALVES(one, HALVES, c)                                                              \
    if ((c) == 1) {                                                                                \
        one(p, ik.xq, &ok, n / WK_CPU_QK);                                                         \
    } else {                                                                                       \
        HALVES(c);                                                                                 \
    }
#define Q4_AVX2(c) ONE_OR_HALVES(q4p_one_avx2, Q4_HALVES, c)
#define Q8_AVX2(c) ONE_OR_HALVES(q8p_one_avx2, Q8_HALVES, c)
#define IQ4_AVX2(c) ONE_OR_HALVES(iq4p_one_avx2, IQ4_HALVES, c)
#define F16_HALVES(c)                                                                              \
    f16p_half_avx2(p, ik.xf, ik.xf_stride, c, &ok, n, 0);                                          \
    f16p_half_avx2(p, ik.xf, ik.xf_stride, c, &ok, n, 1)
#define F32_AVX2_CALL(c) f32p_tile_avx2(p, ik.xf, ik.xf_stride, c, &ok, n)

PANEL_ENTRY(q4_avx512, AVX512, PANEL_TILE, WK_CPU_CASES_8, Q4_TILE)
PANEL_ENTRY(q8_avx512, AVX512, PANEL_TILE, WK_CPU_CASES_8, Q8_TILE)
PANEL_ENTRY(iq4_avx512, AVX512, PANEL_TILE, WK_CPU_CASES_8, IQ4_TILE)
PANEL_ENTRY(f16_avx512, AVX512, F16_TILE, WK_CPU_CASES_4, F16_TILE_CALL)
PANEL_ENTRY(f32_avx512, AVX512, F16_TILE, WK_CPU_CASES_4, F32_TILE_CALL)
PANEL_ENTRY(q4_avx2, AVX2, PANEL_TILE_AVX2, WK_CPU_CASES_4, Q4_AVX2)
PANEL_ENTRY(q8_avx2, AVX2, PANEL_TILE_AVX2, WK_CPU_CASES_4, Q8_AVX2)
PANEL_ENTRY(iq4_avx2, AVX2, PANEL_TILE_AVX2, WK_CPU_CASES_4, IQ4_AVX2)
PANEL_ENTRY(f16_avx2, AVX2, F16_TILE_AVX2, WK_CPU_CASES_2, F16_HALVES)
PANEL_ENTRY(f32_avx2, AVX2, F32_TILE_AVX2, WK_CPU_CASES_4, F32_AVX2_CALL)
#endif /* HAVE_X86 */

wk_cpu_panel_fn wk_cpu_panel_kernel(wk_dtype t) {
#if HAVE_X86
    if (!wk_cpu_panel_type(t)) {
        return NULL;
    }
    bool avx512 = wk_cpu_kernels_isa() == WK_CPU_ISA_AVX512;
    switch (wk_cpu_panel_kind(t)) {
    case WK_DTYPE_F16:
        return avx512 ? f16_avx512 : f16_avx2;
    case WK_DTYPE_F32:
        return avx512 ? f32_avx512 : f32_avx2;
    case WK_DTYPE_Q8_0:
        return avx512 ? q8_avx512 : q8_avx2;
    case WK_DTYPE_IQ4_NL:
        return avx512 ? iq4_avx512 : iq4_avx2;
    default:
        return avx512 ? q4_avx512 : q4_avx2;
    }
#else
    (void)t;
    return NULL;
#endif
}

void wk_cpu_panel_mul(wk_dtype t, const void *panel, const wk_cpu_panel_in *in, int n_tok,
                      const wk_cpu_panel_out *out, int64_t n) {
    wk_cpu_panel_kernel(t)(panel, in, n_tok, out, n);
}
