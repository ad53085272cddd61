/*
 * Kernels over quantized weights in the device layout of cuda_qweight.h (contracts in
 * cuda_ops.h): the decode GEMV that reads each weight byte once per step for all the step's
 * tokens, and the dequantization of a band of rows into an f16 tile that cuBLAS multiplies for
 * prefill and large batches.
 *
 * Both compute a group's 32 values exactly as the reference dequantizer (worker/quant.c) and
 * its host twin wk_cuda_q_dequant_row do: the same operations in the same order, with
 * round-to-nearest intrinsics so that nvcc does not contract them into FMAs.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "cuda_ops.h"
#include "cuda_pdl.cuh"
#include "cuda_qweight.h"

namespace {

constexpr int kWarp = 32;
constexpr int kGroup = WK_CUDA_QGROUP;
constexpr int kSuperGroups = WK_CUDA_QSUPER / WK_CUDA_QGROUP;

__device__ __forceinline__ float h2f(uint16_t h) {
    return __half2float(__ushort_as_half(h));
}

/* Saturating f32 -> f16, as the f16 weight path converts (cuda_ops.cu). */
__device__ __forceinline__ uint16_t f2h_sat(float f) {
    f = fminf(fmaxf(f, -65504.0f), 65504.0f);
    return __half_as_ushort(__float2half_rn(f));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

template <int K> struct kind_traits {
    static constexpr bool four_bit =
        K == WK_CUDA_QK_Q4_0 || K == WK_CUDA_QK_Q4_1 || K == WK_CUDA_QK_Q4_K;
    static constexpr bool has_sup =
        K == WK_CUDA_QK_Q4_K || K == WK_CUDA_QK_Q5_K || K == WK_CUDA_QK_Q6_K;
    static constexpr int qs_group_bytes = four_bit ? 16 : 32;
    static constexpr int sc_group_bytes = K == WK_CUDA_QK_Q4_1 ? 4 : 2;
};

/* The raw bytes of one group: its quants (16 or 32 bytes), its sc entry and its super-block's
 * sup entry. Loaded first so that a lane can have several groups in flight. */
template <int K> struct group_raw {
    uint4 q[kind_traits<K>::four_bit ? 1 : 2];
    uint32_t sc;
    uint32_t sup;
};

/* Row slices of the three parts (base pointers of row r). */
struct row_ptrs {
    const uint8_t *qs;
    const uint8_t *sc;
    const uint8_t *sup;
};

template <int K>
__device__ __forceinline__ row_ptrs row_of(const uint8_t *qs, const uint8_t *sc, const uint8_t *sup,
                                           int64_t row, int n_in) {
    using T = kind_traits<K>;
    const int n_groups = n_in / kGroup;
    row_ptrs p;
    p.qs = qs + row * (int64_t)n_groups * T::qs_group_bytes;
    p.sc = sc + row * (int64_t)n_groups * T::sc_group_bytes;
    p.sup = T::has_sup ? sup + row * (int64_t)(n_groups / kSuperGroups) * 4 : nullptr;
    return p;
}

template <int K> __device__ __forceinline__ group_raw<K> load_group(const row_ptrs &p, int g) {
    using T = kind_traits<K>;
    group_raw<K> r;
    const uint4 *q = reinterpret_cast<const uint4 *>(p.qs) + (int64_t)g * (T::four_bit ? 1 : 2);
    r.q[0] = __ldcs(q);
    if constexpr (!T::four_bit) {
        r.q[1] = __ldcs(q + 1);
    }
    if constexpr (T::sc_group_bytes == 4) {
        r.sc = __ldg(reinterpret_cast<const uint32_t *>(p.sc) + g);
    } else {
        r.sc = __ldg(reinterpret_cast<const uint16_t *>(p.sc) + g);
    }
    if constexpr (T::has_sup) {
        r.sup = __ldg(reinterpret_cast<const uint32_t *>(p.sup) + g / kSuperGroups);
    } else {
        r.sup = 0;
    }
    return r;
}

/* The group's 32 values (element j of the group in v[j]); the reference's arithmetic. */
template <int K> __device__ __forceinline__ void group_values(const group_raw<K> &r, float v[32]) {
    using T = kind_traits<K>;
    if constexpr (T::four_bit) {
        const uint8_t *b = reinterpret_cast<const uint8_t *>(&r.q[0]);
        if constexpr (K == WK_CUDA_QK_Q4_0) {
            const float d = h2f((uint16_t)r.sc);
#pragma unroll
            for (int j = 0; j < 16; j++) {
                v[j] = __fmul_rn((float)((b[j] & 0xF) - 8), d);
                v[j + 16] = __fmul_rn((float)((b[j] >> 4) - 8), d);
            }
        } else if constexpr (K == WK_CUDA_QK_Q4_1) {
            const float d = h2f((uint16_t)(r.sc & 0xFFFF));
            const float m = h2f((uint16_t)(r.sc >> 16));
#pragma unroll
            for (int j = 0; j < 16; j++) {
                v[j] = __fadd_rn(__fmul_rn((float)(b[j] & 0xF), d), m);
                v[j + 16] = __fadd_rn(__fmul_rn((float)(b[j] >> 4), d), m);
            }
        } else { /* Q4_K */
            const float d1 = __fmul_rn(h2f((uint16_t)(r.sup & 0xFFFF)), (float)(r.sc & 0xFF));
            const float m1 = __fmul_rn(h2f((uint16_t)(r.sup >> 16)), (float)(r.sc >> 8));
#pragma unroll
            for (int j = 0; j < 16; j++) {
                v[j] = __fsub_rn(__fmul_rn(d1, (float)(b[j] & 0xF)), m1);
                v[j + 16] = __fsub_rn(__fmul_rn(d1, (float)(b[j] >> 4)), m1);
            }
        }
    } else {
        const uint8_t *b = reinterpret_cast<const uint8_t *>(&r.q[0]);
        if constexpr (K == WK_CUDA_QK_Q8_0) {
            const float d = h2f((uint16_t)r.sc);
#pragma unroll
            for (int j = 0; j < 32; j++) {
                v[j] = __fmul_rn((float)(int8_t)b[j], d);
            }
        } else if constexpr (K == WK_CUDA_QK_Q5_K) {
            const float d1 = __fmul_rn(h2f((uint16_t)(r.sup & 0xFFFF)), (float)(r.sc & 0xFF));
            const float m1 = __fmul_rn(h2f((uint16_t)(r.sup >> 16)), (float)(r.sc >> 8));
#pragma unroll
            for (int j = 0; j < 32; j++) {
                v[j] = __fsub_rn(__fmul_rn(d1, (float)b[j]), m1);
            }
        } else { /* Q6_K: i8 scales of elements 0..15 and 16..31 */
            const float d = h2f((uint16_t)(r.sup & 0xFFFF));
            const float s0 = __fmul_rn(d, (float)(int8_t)(r.sc & 0xFF));
            const float s1 = __fmul_rn(d, (float)(int8_t)(r.sc >> 8));
#pragma unroll
            for (int j = 0; j < 32; j++) {
                v[j] = __fmul_rn(j < 16 ? s0 : s1, (float)(int8_t)b[j]);
            }
        }
    }
}

/* acc[t] += v . x[t][32 g .. 32 g + 31] for the NT token rows of x (f16, L1/L2-resident). */
template <int NT>
__device__ __forceinline__ void group_dot(const float v[32], const uint16_t *__restrict__ x,
                                          int n_in, int g, float acc[NT]) {
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const uint4 *xr = reinterpret_cast<const uint4 *>(x + (int64_t)t * n_in + (int64_t)g * 32);
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const uint4 xv = __ldg(xr + c);
            const __half2 *h = reinterpret_cast<const __half2 *>(&xv);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float2 f = __half22float2(h[k]);
                s = fmaf(v[8 * c + 2 * k], f.x, s);
                s = fmaf(v[8 * c + 2 * k + 1], f.y, s);
            }
        }
        acc[t] += s;
    }
}

/*
 * One warp per output row; lane l takes groups l, l + 32, ... of the row, several in flight.
 * The quants are streamed once (__ldcs: not kept in L1) for all NT tokens.
 */
template <int K, int NT>
__global__ void __launch_bounds__(256)
    qgemv_kernel(const uint8_t *__restrict__ qs, const uint8_t *__restrict__ sc,
                 const uint8_t *__restrict__ sup, const uint16_t *__restrict__ x, int n_in,
                 int n_out, void *__restrict__ y, int ldy, int y_f16) {
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    const int row = blockIdx.x * (blockDim.x / kWarp) + warp;
    pdl_trigger();
    if (row >= n_out) {
        pdl_wait();
        return;
    }
    const row_ptrs p = row_of<K>(qs, sc, sup, row, n_in);
    const int n_groups = n_in / kGroup;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        acc[t] = 0.0f;
    }
    /* D groups in flight per lane (64 bytes of quants, like the f16 GEMV's four 16-byte loads):
     * slot d holds group g + d * 32 and is refilled with the group D * 32 further on as soon as
     * it is consumed. The weights do not depend on earlier kernels: the first loads go out
     * before the PDL wait. */
    constexpr int D = kind_traits<K>::four_bit ? 4 : 2;
    group_raw<K> r[D];
#pragma unroll
    for (int d = 0; d < D; d++) {
        r[d] = group_raw<K>{};
        if (lane + d * kWarp < n_groups) {
            r[d] = load_group<K>(p, lane + d * kWarp);
        }
    }
    pdl_wait();
    for (int g = lane; g < n_groups; g += D * kWarp) {
#pragma unroll
        for (int d = 0; d < D; d++) {
            const int gd = g + d * kWarp;
            if (gd < n_groups) {
                float v[32];
                group_values<K>(r[d], v);
                if (gd + D * kWarp < n_groups) {
                    r[d] = load_group<K>(p, gd + D * kWarp);
                }
                group_dot<NT>(v, x, n_in, gd, acc);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) {
            if (y_f16) {
                static_cast<uint16_t *>(y)[(int64_t)t * ldy + row] = f2h_sat(s);
            } else {
                static_cast<float *>(y)[(int64_t)t * ldy + row] = s;
            }
        }
    }
}

/* One thread per group of the band of rows [row0, row0 + n_rows): 32 f16 values into dst
 * (n_rows, n_in). */
template <int K>
__global__ void qdequant_kernel(const uint8_t *__restrict__ qs, const uint8_t *__restrict__ sc,
                                const uint8_t *__restrict__ sup, int row0, int n_rows, int n_in,
                                uint16_t *__restrict__ dst) {
    const int n_groups = n_in / kGroup;
    const int64_t total = (int64_t)n_rows * n_groups;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / n_groups;
        const int g = (int)(i % n_groups);
        const row_ptrs p = row_of<K>(qs, sc, sup, row0 + r, n_in);
        float v[32];
        group_values<K>(load_group<K>(p, g), v);
        uint4 *o = reinterpret_cast<uint4 *>(dst + r * n_in + (int64_t)g * 32);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            uint4 w;
            uint16_t *h = reinterpret_cast<uint16_t *>(&w);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                h[k] = f2h_sat(v[8 * c + k]);
            }
            o[c] = w;
        }
    }
}

template <int K, int NT>
cudaError_t launch_qgemv(const wk_cuda_qmat *w, const uint16_t *x, int n_in, int n_out, void *y,
                         int ldy, int y_f16, cudaStream_t stream) {
    const int rows_per_block = 256 / kWarp;
    const int blocks = (n_out + rows_per_block - 1) / rows_per_block;
    return launch_maybe_pdl(qgemv_kernel<K, NT>, dim3(blocks), dim3(256), 0, stream, w->qs, w->sc,
                            w->sup, x, n_in, n_out, y, ldy, y_f16);
}

/* launch_qgemv<K, n_tok> for n_tok in 1..WK_CUDA_GEMV_MAX_TOK (one instantiation each) */
template <int K, int NT = 1>
cudaError_t qgemv_tokens(const wk_cuda_qmat *w, const uint16_t *x, int n_tok, int n_in, int n_out,
                         void *y, int ldy, int y_f16, cudaStream_t stream) {
    if constexpr (NT < WK_CUDA_GEMV_MAX_TOK) {
        if (n_tok > NT) {
            return qgemv_tokens<K, NT + 1>(w, x, n_tok, n_in, n_out, y, ldy, y_f16, stream);
        }
    }
    return launch_qgemv<K, NT>(w, x, n_in, n_out, y, ldy, y_f16, stream);
}

template <int K>
cudaError_t launch_qdequant(const wk_cuda_qmat *w, int row0, int n_rows, int n_in, uint16_t *dst,
                            cudaStream_t stream) {
    const int64_t groups = (int64_t)n_rows * (n_in / kGroup);
    int64_t blocks = (groups + 255) / 256;
    blocks = blocks > 65535LL * 16 ? 65535LL * 16 : blocks; /* grid-stride loop covers the rest */
    qdequant_kernel<K>
        <<<(unsigned)blocks, 256, 0, stream>>>(w->qs, w->sc, w->sup, row0, n_rows, n_in, dst);
    return cudaGetLastError();
}

bool qmat_ok(const wk_cuda_qmat *w, int n_in) {
    if (w == nullptr || w->qs == nullptr || w->sc == nullptr ||
        wk_cuda_q_qs_row_bytes((wk_cuda_qkind)w->kind, n_in) == 0) {
        return false;
    }
    return wk_cuda_q_sup_row_bytes((wk_cuda_qkind)w->kind, n_in) == 0 || w->sup != nullptr;
}

/* Calls fn(std::integral_constant<int, K>) for the kind K = kind (checked by qmat_ok). */
template <typename Fn> cudaError_t by_kind(int kind, Fn &&fn) {
    switch (kind) {
    case WK_CUDA_QK_Q4_0:
        return fn(std::integral_constant<int, WK_CUDA_QK_Q4_0>{});
    case WK_CUDA_QK_Q4_1:
        return fn(std::integral_constant<int, WK_CUDA_QK_Q4_1>{});
    case WK_CUDA_QK_Q4_K:
        return fn(std::integral_constant<int, WK_CUDA_QK_Q4_K>{});
    case WK_CUDA_QK_Q8_0:
        return fn(std::integral_constant<int, WK_CUDA_QK_Q8_0>{});
    case WK_CUDA_QK_Q5_K:
        return fn(std::integral_constant<int, WK_CUDA_QK_Q5_K>{});
    default:
        return fn(std::integral_constant<int, WK_CUDA_QK_Q6_K>{});
    }
}

} // namespace

extern "C" {

cudaError_t wk_cuda_qgemv(const wk_cuda_qmat *w, const uint16_t *x, int n_tok, int n_in, int n_out,
                          void *y, int ldy, int y_f16, cudaStream_t stream) {
    if (!qmat_ok(w, n_in) || n_tok < 1 || n_tok > WK_CUDA_GEMV_MAX_TOK || n_out <= 0 ||
        ldy < n_out) {
        return cudaErrorInvalidValue;
    }
    return by_kind(w->kind, [&](auto k) {
        return qgemv_tokens<decltype(k)::value>(w, x, n_tok, n_in, n_out, y, ldy, y_f16, stream);
    });
}

cudaError_t wk_cuda_qdequant_f16(const wk_cuda_qmat *w, int row0, int n_rows, int n_in,
                                 uint16_t *dst, cudaStream_t stream) {
    if (!qmat_ok(w, n_in) || row0 < 0 || n_rows <= 0) {
        return cudaErrorInvalidValue;
    }
    return by_kind(w->kind, [&](auto k) {
        return launch_qdequant<decltype(k)::value>(w, row0, n_rows, n_in, dst, stream);
    });
}

} /* extern "C" */
