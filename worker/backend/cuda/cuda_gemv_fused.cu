/*
 * Fused skinny GEMV for decode (contract in cuda_ops.h, wk_cuda_gemv_fused): the GEMV of
 * cuda_ops.cu (one warp per weight row, 16-byte streaming loads, every weight chunk converted
 * once for all token rows) with the RMSNorm, SwiGLU or residual add of its neighbours folded in.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda_ops.h"
#include "cuda_pdl.cuh"

namespace {

constexpr int kWarp = 32;
constexpr int kWarps = 8; /* per block */

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ uint16_t f2h(float f) {
    f = fminf(fmaxf(f, -65504.0f), 65504.0f);
    return __half_as_ushort(__float2half_rn(f));
}

__device__ __forceinline__ void halves8(const uint4 v, float *out) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&v);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 f = __half22float2(h[j]);
        out[2 * j] = f.x;
        out[2 * j + 1] = f.y;
    }
}

/* The 8 input values of token t for chunk c (elements [8c, 8c+8)). */
template <int XM>
__device__ __forceinline__ void x_chunk(const void *__restrict__ x, const float *__restrict__ nw,
                                        const float *inv, int n_in, int t, int c, float *xv) {
    if (XM == WK_CUDA_X_F16) {
        const uint16_t *xr = static_cast<const uint16_t *>(x) + (int64_t)t * n_in;
        halves8(*(reinterpret_cast<const uint4 *>(xr) + c), xv);
    } else if (XM == WK_CUDA_X_RMSNORM) {
        const float4 *xr =
            reinterpret_cast<const float4 *>(static_cast<const float *>(x) + (int64_t)t * n_in);
        const float4 *wr = reinterpret_cast<const float4 *>(nw);
        const float4 a = xr[2 * c], b = xr[2 * c + 1];
        const float4 wa = wr[2 * c], wb = wr[2 * c + 1];
        const float s = inv[t];
        xv[0] = a.x * s * wa.x;
        xv[1] = a.y * s * wa.y;
        xv[2] = a.z * s * wa.z;
        xv[3] = a.w * s * wa.w;
        xv[4] = b.x * s * wb.x;
        xv[5] = b.y * s * wb.y;
        xv[6] = b.z * s * wb.z;
        xv[7] = b.w * s * wb.w;
    } else {
        const uint16_t *gr = static_cast<const uint16_t *>(x) + (int64_t)t * 2 * n_in;
        float g[8], u[8];
        halves8(*(reinterpret_cast<const uint4 *>(gr) + c), g);
        halves8(*(reinterpret_cast<const uint4 *>(gr + n_in) + c), u);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            xv[j] = g[j] / (1.0f + __expf(-g[j])) * u[j];
        }
    }
}

template <int NT, int XM>
__device__ __forceinline__ void fused_chunk(const uint4 wv, const void *__restrict__ x,
                                            const float *__restrict__ nw, const float *inv,
                                            int n_in, int c, float *acc) {
    float wf[8];
    halves8(wv, wf);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float xv[8];
        x_chunk<XM>(x, nw, inv, n_in, t, c, xv);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            acc[t] = fmaf(wf[j], xv[j], acc[t]);
        }
    }
}

/* RPW rows per warp (sequentially), kWarps warps per block. */
template <int NT, int XM, int YM, int RPW>
__global__ void __launch_bounds__(kWarps *kWarp)
    gemv_fused_kernel(const uint16_t *__restrict__ w, const void *__restrict__ x,
                      const float *__restrict__ nw, float eps, int n_in, int n_out,
                      void *__restrict__ y) {
    __shared__ float s_part[kWarps][NT];
    __shared__ float s_inv[NT];
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    const int n_chunks = n_in / 8;
    constexpr int U = 4;
    /* weights do not depend on earlier kernels: start streaming the first row's first chunks
     * before the PDL wait (and before the norm prologue) */
    pdl_trigger();
    const int row_first = (blockIdx.x * kWarps + warp) * RPW;
    const bool have_pre = row_first < n_out && lane + (U - 1) * kWarp < n_chunks;
    uint4 pre[U];
    if (have_pre) {
        const uint4 *wr0 = reinterpret_cast<const uint4 *>(w + (int64_t)row_first * n_in);
#pragma unroll
        for (int u = 0; u < U; u++) {
            pre[u] = __ldcs(wr0 + lane + u * kWarp);
        }
    }
    pdl_wait();
    if (XM == WK_CUDA_X_RMSNORM) {
        /* every block recomputes the norms of the NT rows of x (L2-resident, n_in floats each) */
        const float *xf = static_cast<const float *>(x);
        float ss[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) {
            ss[t] = 0.0f;
        }
        for (int i = threadIdx.x; i < n_in; i += kWarps * kWarp) {
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const float v = xf[(int64_t)t * n_in + i];
                ss[t] += v * v;
            }
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            ss[t] = warp_sum(ss[t]);
            if (lane == 0) {
                s_part[warp][t] = ss[t];
            }
        }
        __syncthreads();
        if (threadIdx.x < NT) {
            float sum = 0.0f;
#pragma unroll
            for (int k = 0; k < kWarps; k++) {
                sum += s_part[k][threadIdx.x];
            }
            s_inv[threadIdx.x] = rsqrtf(sum / (float)n_in + eps);
        }
        __syncthreads();
    }
    for (int r = 0; r < RPW; r++) {
        const int row = (blockIdx.x * kWarps + warp) * RPW + r;
        if (row >= n_out) {
            break; /* warp-uniform; no barrier follows */
        }
        const uint4 *wr = reinterpret_cast<const uint4 *>(w + (int64_t)row * n_in);
        float acc[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) {
            acc[t] = 0.0f;
        }
        int c = lane;
        if (r == 0 && have_pre) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                fused_chunk<NT, XM>(pre[u], x, nw, s_inv, n_in, c + u * kWarp, acc);
            }
            c += U * kWarp;
        }
        for (; c + (U - 1) * kWarp < n_chunks; c += U * kWarp) {
            uint4 wv[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                wv[u] = __ldcs(wr + c + u * kWarp);
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                fused_chunk<NT, XM>(wv[u], x, nw, s_inv, n_in, c + u * kWarp, acc);
            }
        }
        for (; c < n_chunks; c += kWarp) {
            fused_chunk<NT, XM>(__ldcs(wr + c), x, nw, s_inv, n_in, c, acc);
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float s = warp_sum(acc[t]);
            if (lane == 0) {
                const int64_t o = (int64_t)t * n_out + row;
                if (YM == WK_CUDA_Y_F16) {
                    static_cast<uint16_t *>(y)[o] = f2h(s);
                } else if (YM == WK_CUDA_Y_ADD_F32) {
                    static_cast<float *>(y)[o] += s;
                } else {
                    static_cast<float *>(y)[o] = s;
                }
            }
        }
    }
}

template <int NT, int XM, int YM>
cudaError_t launch3(const uint16_t *w, const void *x, const float *nw, float eps, int n_in,
                    int n_out, void *y, cudaStream_t stream) {
    /* norm mode: 4 rows per warp so the per-block norm prologue is amortised */
    constexpr int RPW = XM == WK_CUDA_X_RMSNORM ? 4 : 1;
    const int rows_per_block = kWarps * RPW;
    const int blocks = (n_out + rows_per_block - 1) / rows_per_block;
    return launch_maybe_pdl(gemv_fused_kernel<NT, XM, YM, RPW>, dim3(blocks), dim3(kWarps * kWarp),
                            0, stream, w, x, nw, eps, n_in, n_out, y);
}

/* Only the combinations the decode step uses are compiled (see cuda_ops.h). */
template <int NT>
cudaError_t launch1(const uint16_t *w, const void *x, int x_mode, const float *nw, float eps,
                    int n_in, int n_out, void *y, int y_mode, cudaStream_t stream) {
    if (x_mode == WK_CUDA_X_RMSNORM && y_mode == WK_CUDA_Y_F32) {
        return launch3<NT, WK_CUDA_X_RMSNORM, WK_CUDA_Y_F32>(w, x, nw, eps, n_in, n_out, y, stream);
    }
    if (x_mode == WK_CUDA_X_RMSNORM && y_mode == WK_CUDA_Y_F16) {
        return launch3<NT, WK_CUDA_X_RMSNORM, WK_CUDA_Y_F16>(w, x, nw, eps, n_in, n_out, y, stream);
    }
    if (x_mode == WK_CUDA_X_F16 && y_mode == WK_CUDA_Y_ADD_F32) {
        return launch3<NT, WK_CUDA_X_F16, WK_CUDA_Y_ADD_F32>(w, x, nw, eps, n_in, n_out, y, stream);
    }
    if (x_mode == WK_CUDA_X_SWIGLU && y_mode == WK_CUDA_Y_ADD_F32) {
        return launch3<NT, WK_CUDA_X_SWIGLU, WK_CUDA_Y_ADD_F32>(w, x, nw, eps, n_in, n_out, y,
                                                                stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace

extern "C" cudaError_t wk_cuda_gemv_fused(const uint16_t *w, const void *x, int x_mode,
                                          const float *norm_w, float eps, int n_tok, int n_in,
                                          int n_out, void *y, int y_mode, cudaStream_t stream) {
    if (n_tok < 1 || n_tok > WK_CUDA_GEMV_MAX_TOK || n_in % 8 != 0 || n_out <= 0 ||
        (x_mode == WK_CUDA_X_RMSNORM && norm_w == NULL)) {
        return cudaErrorInvalidValue;
    }
    switch (n_tok) {
    case 1:
        return launch1<1>(w, x, x_mode, norm_w, eps, n_in, n_out, y, y_mode, stream);
    case 2:
        return launch1<2>(w, x, x_mode, norm_w, eps, n_in, n_out, y, y_mode, stream);
    case 3:
        return launch1<3>(w, x, x_mode, norm_w, eps, n_in, n_out, y, y_mode, stream);
    case 4:
        return launch1<4>(w, x, x_mode, norm_w, eps, n_in, n_out, y, y_mode, stream);
    case 5:
        return launch1<5>(w, x, x_mode, norm_w, eps, n_in, n_out, y, y_mode, stream);
    case 6:
        return launch1<6>(w, x, x_mode, norm_w, eps, n_in, n_out, y, y_mode, stream);
    case 7:
        return launch1<7>(w, x, x_mode, norm_w, eps, n_in, n_out, y, y_mode, stream);
    default:
        return launch1<8>(w, x, x_mode, norm_w, eps, n_in, n_out, y, y_mode, stream);
    }
}
