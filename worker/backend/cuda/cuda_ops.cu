/*
 * CUDA kernels of the CUDA backend (see cuda_ops.h for every contract and the cache layout).
 * Elementwise and row kernels, the paged attention used for decode (and as the prefill
 * fallback), the skinny GEMV used for small decode batches, and conversion/fill helpers.
 * The flash prefill kernel lives in cuda_flash.cu.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>

#include "cuda_ops.h"
#include "cuda_pdl.cuh"

namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float h2f(uint16_t h) {
    return __half2float(__ushort_as_half(h));
}

/* Saturating f32 -> f16: weights beyond the f16 range become +-65504, not inf. */
__device__ __forceinline__ uint16_t f2h(float f) {
    f = fminf(fmaxf(f, -65504.0f), 65504.0f);
    return __half_as_ushort(__float2half_rn(f));
}

int grid_for(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    if (blocks > 65535LL * 16) {
        blocks = 65535LL * 16; /* grid-stride loops cover the rest */
    }
    if (blocks < 1) {
        blocks = 1;
    }
    return (int)blocks;
}

/* ---------------------------------------------------------------------------------------- */

__global__ void embed_kernel(const uint16_t *__restrict__ table, const int32_t *__restrict__ ids,
                             int n_embd, float *__restrict__ out) {
    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.x;
    const uint16_t *src = table + (int64_t)ids[r] * n_embd;
    float *dst = out + (int64_t)r * n_embd;
    for (int i = threadIdx.x; i < n_embd; i += blockDim.x) {
        dst[i] = h2f(src[i]);
    }
}

/* Same contract as add_rmsnorm_kernel for n <= 8 * blockDim.x: every value is loaded once
 * (x, add and w in one round trip), kept in registers across the reduction and written from
 * there, instead of two passes over global memory. */
__global__ void add_rmsnorm_reg_kernel(float *__restrict__ x, const float *__restrict__ add,
                                       const float *__restrict__ w,
                                       const int32_t *__restrict__ rows, int n, float eps,
                                       uint16_t *__restrict__ out) {
    constexpr int VPT = 8;
    pdl_trigger();
    pdl_wait();
    __shared__ float partial[32];
    const int r = blockIdx.x;
    const int64_t src = rows ? rows[r] : r;
    float *xr = x + src * n;
    float v[VPT];
    float wv[VPT];
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        v[j] = 0.0f;
        wv[j] = 0.0f;
        if (i < n) {
            float a = xr[i];
            if (add) {
                a += add[src * n + i];
            }
            v[j] = a;
            wv[j] = w[i];
            ss += a * a;
        }
    }
    if (add) {
#pragma unroll
        for (int j = 0; j < VPT; j++) {
            const int i = threadIdx.x + j * blockDim.x;
            if (i < n) {
                xr[i] = v[j];
            }
        }
    }
    ss = warp_sum(ss);
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (lane == 0) {
        partial[warp] = ss;
    }
    __syncthreads();
    if (warp == 0) {
        const int nw = blockDim.x / kWarp;
        float t = lane < nw ? partial[lane] : 0.0f;
        t = warp_sum(t);
        if (lane == 0) {
            partial[0] = t;
        }
    }
    __syncthreads();
    const float inv = rsqrtf(partial[0] / (float)n + eps);
    uint16_t *o = out + (int64_t)r * n;
#pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i < n) {
            o[i] = f2h(v[j] * inv * wv[j]);
        }
    }
}

/* One block per output row; blockDim.x = 256. */
__global__ void add_rmsnorm_kernel(float *__restrict__ x, const float *__restrict__ add,
                                   const float *__restrict__ w, const int32_t *__restrict__ rows,
                                   int n, float eps, uint16_t *__restrict__ out) {
    pdl_trigger();
    pdl_wait();
    __shared__ float partial[32];
    const int r = blockIdx.x;
    const int64_t src = rows ? rows[r] : r;
    float *xr = x + src * n;
    float ss = 0.0f;
    if (add) {
        const float *ar = add + src * n;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float v = xr[i] + ar[i];
            xr[i] = v;
            ss += v * v;
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float v = xr[i];
            ss += v * v;
        }
    }
    ss = warp_sum(ss);
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (lane == 0) {
        partial[warp] = ss;
    }
    __syncthreads();
    if (warp == 0) {
        const int nw = blockDim.x / kWarp;
        float v = lane < nw ? partial[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) {
            partial[0] = v;
        }
    }
    __syncthreads();
    const float inv = rsqrtf(partial[0] / (float)n + eps);
    uint16_t *o = out + (int64_t)r * n;
    /* Each thread re-reads exactly the elements it wrote above, so no barrier is needed
     * between the in-place add and this read. */
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        o[i] = f2h(xr[i] * inv * w[i]);
    }
}

/*
 * One block per (token, q or k head), one thread per rotated pair: at decode batch 1 this is
 * 40-48 small blocks side by side instead of one block looping, so the kernel costs one
 * memory round trip. Blocks of k heads also store the matching v head.
 */
__global__ void rope_store_kernel(const float *__restrict__ qkv, const float *__restrict__ bias,
                                  const int32_t *__restrict__ tok_pos,
                                  const int32_t *__restrict__ tok_seq,
                                  const int32_t *__restrict__ block_table, int max_blocks,
                                  int block_tokens, int n_head, int n_head_kv, int head_dim,
                                  int n_rot, int neox, const float *__restrict__ inv_freq,
                                  float *__restrict__ q_out, uint16_t *__restrict__ k_cache,
                                  uint16_t *__restrict__ v_cache) {
    pdl_trigger();
    pdl_wait();
    const int t = blockIdx.x;
    const int head = blockIdx.y;
    const int i = threadIdx.x; /* pair index, < head_dim / 2 */
    const int row_len = (n_head + 2 * n_head_kv) * head_dim;
    const float *in = qkv + (int64_t)t * row_len;
    const int pos = tok_pos[t];
    const int half_rot = n_rot / 2;
    int d0;
    int d1;
    if (i < half_rot) {
        d0 = neox ? i : 2 * i;
        d1 = neox ? i + half_rot : 2 * i + 1;
    } else {
        d0 = 2 * i; /* unrotated tail [n_rot, head_dim) */
        d1 = 2 * i + 1;
    }
    const int c0 = head * head_dim + d0;
    const int c1 = head * head_dim + d1;
    float x0 = in[c0];
    float x1 = in[c1];
    if (bias) {
        x0 += bias[c0];
        x1 += bias[c1];
    }
    if (i < half_rot) {
        /* angle = pos * f carried as hi + lo (lo exact via fma), so large positions keep the
         * precision of the reference's double-precision angle */
        const float f = inv_freq[i];
        const float hi = (float)pos * f;
        const float lo = fmaf((float)pos, f, -hi);
        float s;
        float c;
        sincosf(hi, &s, &c);
        const float s2 = s + lo * c;
        const float c2 = c - lo * s;
        const float y0 = x0 * c2 - x1 * s2;
        const float y1 = x0 * s2 + x1 * c2;
        x0 = y0;
        x1 = y1;
    }
    if (head < n_head) {
        float *q = q_out + (int64_t)t * n_head * head_dim;
        q[c0] = x0;
        q[c1] = x1;
        return;
    }
    const int kh = head - n_head;
    const int64_t block = block_table[(int64_t)tok_seq[t] * max_blocks + pos / block_tokens];
    const int64_t base = ((block * n_head_kv + kh) * block_tokens + pos % block_tokens) * head_dim;
    k_cache[base + d0] = f2h(x0);
    k_cache[base + d1] = f2h(x1);
    const int v_off = (n_head + n_head_kv + kh) * head_dim;
    float v0 = in[v_off + 2 * i];
    float v1 = in[v_off + 2 * i + 1];
    if (bias) {
        v0 += bias[v_off + 2 * i];
        v1 += bias[v_off + 2 * i + 1];
    }
    v_cache[base + 2 * i] = f2h(v0);
    v_cache[base + 2 * i + 1] = f2h(v1);
}

/* Loads 2, 4 or 8 consecutive halves as floats (one overload per width, so every array stays
 * in registers). */
__device__ __forceinline__ void load_halves(const uint16_t *p, float (&out)[8]) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 f = __half22float2(h[j]);
        out[2 * j] = f.x;
        out[2 * j + 1] = f.y;
    }
}

__device__ __forceinline__ void load_halves(const uint16_t *p, float (&out)[4]) {
    const uint2 u = *reinterpret_cast<const uint2 *>(p);
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const float2 f = __half22float2(h[j]);
        out[2 * j] = f.x;
        out[2 * j + 1] = f.y;
    }
}

__device__ __forceinline__ void load_halves(const uint16_t *p, float (&out)[2]) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2 *>(p));
    out[0] = f.x;
    out[1] = f.y;
}

/*
 * Paged attention, one block per (query token, query head), NW warps. Each warp walks a
 * strided subset of the keys (UNR at a time) with its own online-softmax state (lane l holds
 * dims [l*D, l*D+D)); the warps' states are merged at the end. Finite -1e30 as the initial max
 * keeps exp() of empty states at 0 instead of NaN.
 */
template <int HD, int NW>
__global__ void __launch_bounds__(NW * 32, NW >= 16 ? 1 : 2)
    attention_kernel(const float *__restrict__ q, const int32_t *__restrict__ tok_pos,
                     const int32_t *__restrict__ tok_seq, const int32_t *__restrict__ block_table,
                     const uint16_t *__restrict__ k_cache, const uint16_t *__restrict__ v_cache,
                     int n_head, int n_head_kv, int block_tokens, int max_blocks, float scale,
                     uint16_t *__restrict__ out, int splits, float *__restrict__ part) {
    pdl_trigger();
    pdl_wait();
    constexpr int D = HD / kWarp;
    __shared__ float s_m[NW];
    __shared__ float s_l[NW];
    __shared__ float s_acc[NW][HD];

    const int t = blockIdx.x;
    const int h = blockIdx.y;
    const int kvh = h / (n_head / n_head_kv);
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    const int len = tok_pos[t] + 1;
    const int32_t *bt = block_table + (int64_t)tok_seq[t] * max_blocks;
    /* split-K (flash-decoding): block z of `splits` takes keys [k_begin, k_end) and writes an
     * unnormalised partial (m, l, acc) for wk_cuda_attention_split's combine kernel */
    const int chunk = (len + splits - 1) / splits;
    const int k_begin = min(len, (int)blockIdx.z * chunk);
    const int k_end = min(len, k_begin + chunk);

    float qr[D];
    const float *qp = q + ((int64_t)t * n_head + h) * HD + lane * D;
#pragma unroll
    for (int j = 0; j < D; j++) {
        qr[j] = qp[j] * scale;
    }
    float m = -1e30f;
    float l = 0.0f;
    float acc[D];
#pragma unroll
    for (int j = 0; j < D; j++) {
        acc[j] = 0.0f;
    }

    /* UNR keys per warp iteration, loads issued together: at batch 1 the loop is bound by
     * memory latency, not bandwidth, so independent loads in flight are what matters */
    constexpr int UNR = 4;
    for (int k0 = k_begin + warp; k0 < k_end; k0 += NW * UNR) {
        float kr[UNR][D];
        float vr[UNR][D];
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int k = k0 + u * NW;
            if (k < k_end) { /* warp-uniform */
                const int64_t blk = bt[k / block_tokens];
                const int64_t off =
                    ((blk * n_head_kv + kvh) * block_tokens + k % block_tokens) * HD + lane * D;
                load_halves(k_cache + off, kr[u]);
                load_halves(v_cache + off, vr[u]);
            } else {
#pragma unroll
                for (int j = 0; j < D; j++) {
                    kr[u][j] = 0.0f;
                    vr[u][j] = 0.0f;
                }
            }
        }
        float s[UNR];
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            float d = 0.0f;
#pragma unroll
            for (int j = 0; j < D; j++) {
                d += qr[j] * kr[u][j];
            }
            s[u] = warp_sum(d);
            if (k0 + u * NW >= k_end) {
                s[u] = -INFINITY; /* p = 0 below */
            }
        }
        float m_new = m;
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            m_new = fmaxf(m_new, s[u]);
        }
        const float corr = __expf(m - m_new);
        l *= corr;
#pragma unroll
        for (int j = 0; j < D; j++) {
            acc[j] *= corr;
        }
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const float p = __expf(s[u] - m_new);
            l += p;
#pragma unroll
            for (int j = 0; j < D; j++) {
                acc[j] = fmaf(p, vr[u][j], acc[j]);
            }
        }
        m = m_new;
    }

    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < D; j++) {
        s_acc[warp][lane * D + j] = acc[j];
    }
    __syncthreads();
    float mx = -1e30f;
#pragma unroll
    for (int w = 0; w < NW; w++) {
        mx = fmaxf(mx, s_m[w]);
    }
    float denom = 0.0f;
#pragma unroll
    for (int w = 0; w < NW; w++) {
        denom += s_l[w] * __expf(s_m[w] - mx);
    }
    if (part != NULL) {
        /* partial of this split: (m, l, unnormalised acc[HD]) */
        float *pp = part + (((int64_t)t * n_head + h) * splits + blockIdx.z) * (HD + 2);
        if (threadIdx.x == 0) {
            pp[0] = mx;
            pp[1] = denom;
        }
        for (int d = threadIdx.x; d < HD; d += NW * kWarp) {
            float v = 0.0f;
#pragma unroll
            for (int w = 0; w < NW; w++) {
                v += s_acc[w][d] * __expf(s_m[w] - mx);
            }
            pp[2 + d] = v;
        }
        return;
    }
    const float inv = 1.0f / denom;
    uint16_t *o = out + ((int64_t)t * n_head + h) * HD;
    for (int d = threadIdx.x; d < HD; d += NW * kWarp) {
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++) {
            v += s_acc[w][d] * __expf(s_m[w] - mx);
        }
        o[d] = f2h(v * inv);
    }
}

/* Combines the splits' partials of one (token, head): blockDim.x = HD. An empty split has
 * m = -1e30 and l = 0, so it weighs exp(-1e30 - M) = 0. */
template <int HD>
__global__ void attention_combine_kernel(const float *__restrict__ part, int n_head, int splits,
                                         uint16_t *__restrict__ out) {
    pdl_trigger();
    pdl_wait();
    const int t = blockIdx.x;
    const int h = blockIdx.y;
    const int d = threadIdx.x;
    const float *pp = part + ((int64_t)t * n_head + h) * splits * (HD + 2);
    float mx = -1e30f;
    for (int z = 0; z < splits; z++) {
        mx = fmaxf(mx, pp[z * (HD + 2)]);
    }
    float denom = 0.0f;
    float v = 0.0f;
    for (int z = 0; z < splits; z++) {
        const float wz = __expf(pp[z * (HD + 2)] - mx);
        denom += pp[z * (HD + 2) + 1] * wz;
        v += pp[z * (HD + 2) + 2 + d] * wz;
    }
    out[((int64_t)t * n_head + h) * HD + d] = f2h(v / denom);
}

__global__ void swiglu_kernel(const uint16_t *__restrict__ gu, int64_t n_total, int n_ff,
                              uint16_t *__restrict__ out) {
    pdl_trigger();
    pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / n_ff;
        const int64_t c = i % n_ff;
        const float g = h2f(gu[r * 2 * n_ff + c]);
        const float u = h2f(gu[r * 2 * n_ff + n_ff + c]);
        out[i] = f2h(g / (1.0f + __expf(-g)) * u);
    }
}

/* n_ff % 8 == 0: one thread per 8 outputs of a row (16-byte loads/stores), row = blockIdx.y. */
__global__ void swiglu_vec_kernel(const uint16_t *__restrict__ gu, int n_ff,
                                  uint16_t *__restrict__ out) {
    pdl_trigger();
    pdl_wait();
    const int64_t r = blockIdx.y;
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (c >= n_ff) {
        return;
    }
    const uint4 gv = *reinterpret_cast<const uint4 *>(gu + r * 2 * n_ff + c);
    const uint4 uv = *reinterpret_cast<const uint4 *>(gu + r * 2 * n_ff + n_ff + c);
    const __half2 *g2 = reinterpret_cast<const __half2 *>(&gv);
    const __half2 *u2 = reinterpret_cast<const __half2 *>(&uv);
    uint4 ov;
    uint16_t *o = reinterpret_cast<uint16_t *>(&ov);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 g = __half22float2(g2[j]);
        const float2 u = __half22float2(u2[j]);
        o[2 * j] = f2h(g.x / (1.0f + __expf(-g.x)) * u.x);
        o[2 * j + 1] = f2h(g.y / (1.0f + __expf(-g.y)) * u.y);
    }
    *reinterpret_cast<uint4 *>(out + r * n_ff + c) = ov;
}

__global__ void f32_to_f16_kernel(const float *__restrict__ src, uint16_t *__restrict__ dst,
                                  int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        dst[i] = f2h(src[i]);
    }
}

__global__ void bf16_to_f16_kernel(const uint16_t *__restrict__ src, uint16_t *__restrict__ dst,
                                   int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float f = __uint_as_float((uint32_t)src[i] << 16);
        dst[i] = f2h(f);
    }
}

__global__ void f16_to_f32_kernel(const uint16_t *__restrict__ src, float *__restrict__ dst,
                                  int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        dst[i] = h2f(src[i]);
    }
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__global__ void fill_random_f16_kernel(uint16_t *__restrict__ dst, int64_t n, float amp,
                                       uint64_t seed) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const uint64_t r = splitmix64(seed ^ ((uint64_t)i * 0xD1B54A32D192ED03ULL));
        const float u = (float)(r >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        dst[i] = f2h((2.0f * u - 1.0f) * amp);
    }
}

__global__ void fill_f32_kernel(float *__restrict__ dst, int64_t n, float value) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        dst[i] = value;
    }
}

__global__ void read_probe_kernel(const uint4 *__restrict__ src, int64_t n, float *sink) {
    uint32_t accu = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const uint4 v = __ldcs(src + i);
        accu ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    /* A data-dependent store keeps the loads alive; it almost never happens. */
    if (accu == 0x9E3779B9u) {
        sink[blockIdx.x % 1024] = (float)accu;
    }
}

/* acc[t] += dot(w chunk, x chunk of token t) for one 16-byte chunk (8 halves) */
template <int NT>
__device__ __forceinline__ void gemv_chunk(const uint4 wv, const uint16_t *__restrict__ x,
                                           int64_t n_in, int c, float *acc) {
    const __half2 *wh = reinterpret_cast<const __half2 *>(&wv);
    float wf[8];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 a = __half22float2(wh[j]);
        wf[2 * j] = a.x;
        wf[2 * j + 1] = a.y;
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const uint4 xv = *(reinterpret_cast<const uint4 *>(x + t * n_in) + c);
        const __half2 *xh = reinterpret_cast<const __half2 *>(&xv);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 b = __half22float2(xh[j]);
            acc[t] = fmaf(wf[2 * j], b.x, acc[t]);
            acc[t] = fmaf(wf[2 * j + 1], b.y, acc[t]);
        }
    }
}

/*
 * Skinny GEMV: one warp per weight row; each lane streams 16-byte chunks of the row (8
 * halves, U loads in flight) and multiplies them with the same chunk of each of the NT token
 * rows of x (L1-resident). The weight row is read exactly once for all tokens, so the kernel
 * is bound by weight bandwidth; each weight chunk is converted to f32 once for all tokens.
 */
template <int NT>
__global__ void __launch_bounds__(256)
    gemv_kernel(const uint16_t *__restrict__ w, const uint16_t *__restrict__ x, int n_in, int n_out,
                void *__restrict__ y, int y_f16) {
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    const int row = blockIdx.x * (blockDim.x / kWarp) + warp;
    if (row >= n_out) {
        return;
    }
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (int64_t)row * n_in);
    const int n_chunks = n_in / 8;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        acc[t] = 0.0f;
    }
    constexpr int U = 4; /* independent loads in flight per lane */
    int c = lane;
    /* weights do not depend on earlier kernels: start streaming them before the PDL wait */
    pdl_trigger();
    if (c + (U - 1) * kWarp < n_chunks) {
        uint4 wv[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            wv[u] = __ldcs(wr + c + u * kWarp);
        }
        pdl_wait();
#pragma unroll
        for (int u = 0; u < U; u++) {
            gemv_chunk<NT>(wv[u], x, n_in, c + u * kWarp, acc);
        }
        c += U * kWarp;
    } else {
        pdl_wait();
    }
    for (; c + (U - 1) * kWarp < n_chunks; c += U * kWarp) {
        uint4 wv[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            wv[u] = __ldcs(wr + c + u * kWarp);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            gemv_chunk<NT>(wv[u], x, n_in, c + u * kWarp, acc);
        }
    }
    for (; c < n_chunks; c += kWarp) {
        gemv_chunk<NT>(__ldcs(wr + c), x, n_in, c, acc);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) {
            if (y_f16) {
                static_cast<uint16_t *>(y)[(int64_t)t * n_out + row] = f2h(s);
            } else {
                static_cast<float *>(y)[(int64_t)t * n_out + row] = s;
            }
        }
    }
}

template <int HD>
cudaError_t launch_attention(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                             const int32_t *block_table, const uint16_t *k_cache,
                             const uint16_t *v_cache, const wk_cuda_attn_args *aa, int n_tok,
                             uint16_t *out, int splits, float *part, cudaStream_t stream) {
    if (splits > 1) {
        /* split-K: (token, head, split) blocks of 4 warps, then the combine */
        dim3 grid((unsigned)n_tok, (unsigned)aa->n_head, (unsigned)splits);
        cudaError_t e =
            launch_maybe_pdl(attention_kernel<HD, 4>, grid, dim3(4 * kWarp), 0, stream, q, tok_pos,
                             tok_seq, block_table, k_cache, v_cache, aa->n_head, aa->n_head_kv,
                             aa->block_tokens, aa->max_blocks, aa->scale, out, splits, part);
        if (e != cudaSuccess) {
            return e;
        }
        return launch_maybe_pdl(attention_combine_kernel<HD>,
                                dim3((unsigned)n_tok, (unsigned)aa->n_head), dim3(HD), 0, stream,
                                (const float *)part, aa->n_head, splits, out);
    }
    dim3 grid((unsigned)n_tok, (unsigned)aa->n_head);
    if (n_tok <= 16) {
        /* few (token, head) blocks: more warps per block so each walks fewer keys in sequence
         * (small decode batches are latency-bound here) */
        return launch_maybe_pdl(attention_kernel<HD, 16>, grid, dim3(16 * kWarp), 0, stream, q,
                                tok_pos, tok_seq, block_table, k_cache, v_cache, aa->n_head,
                                aa->n_head_kv, aa->block_tokens, aa->max_blocks, aa->scale, out, 1,
                                (float *)NULL);
    }
    return launch_maybe_pdl(attention_kernel<HD, 8>, grid, dim3(8 * kWarp), 0, stream, q, tok_pos,
                            tok_seq, block_table, k_cache, v_cache, aa->n_head, aa->n_head_kv,
                            aa->block_tokens, aa->max_blocks, aa->scale, out, 1, (float *)NULL);
}

/* The PDL switch (wk_cuda_ops_set_pdl, cuda_ops.h): file-local, read through wk_cuda_ops_pdl by
 * the other kernel files' launch helper (cuda_pdl.cuh). Process-wide because it selects how
 * kernels are launched, a property of the device and the step being enqueued, not of one
 * backend instance; the engine thread that enqueues is the only writer. */
std::atomic<int> pdl_on{0};

} // namespace

extern "C" {

void wk_cuda_ops_set_pdl(int on) {
    pdl_on.store(on != 0);
}

int wk_cuda_ops_pdl(void) {
    return pdl_on.load();
}

int wk_cuda_head_dim_supported(int head_dim) {
    return head_dim == 64 || head_dim == 128 || head_dim == 256;
}

cudaError_t wk_cuda_embed(const uint16_t *table, const int32_t *ids, int n, int n_embd, float *out,
                          cudaStream_t stream) {
    if (n <= 0) {
        return cudaSuccess;
    }
    return launch_maybe_pdl(embed_kernel, dim3(n), dim3(256), 0, stream, table, ids, n_embd, out);
}

cudaError_t wk_cuda_add_rmsnorm(float *x, const float *add, const float *w, const int32_t *rows,
                                int n_out, int n, float eps, uint16_t *out, cudaStream_t stream) {
    if (n_out <= 0) {
        return cudaSuccess;
    }
    if (n <= 8 * 1024) {
        /* 8 values per thread, whole warps */
        int threads = ((n + 7) / 8 + kWarp - 1) / kWarp * kWarp;
        return launch_maybe_pdl(add_rmsnorm_reg_kernel, dim3(n_out), dim3(threads), 0, stream, x,
                                add, w, rows, n, eps, out);
    }
    const int threads = n >= 2048 ? 512 : 256;
    return launch_maybe_pdl(add_rmsnorm_kernel, dim3(n_out), dim3(threads), 0, stream, x, add, w,
                            rows, n, eps, out);
}

cudaError_t wk_cuda_rope_store(const float *qkv, const float *bias, const int32_t *tok_pos,
                               const int32_t *tok_seq, const int32_t *block_table, int max_blocks,
                               int block_tokens, const wk_cuda_rope_args *ra, int n_tok,
                               float *q_out, uint16_t *k_cache, uint16_t *v_cache,
                               cudaStream_t stream) {
    if (n_tok <= 0) {
        return cudaSuccess;
    }
    if (ra->head_dim % 2 != 0 || ra->head_dim > 2048 || ra->n_rot % 2 != 0 ||
        ra->n_rot > ra->head_dim) {
        return cudaErrorInvalidValue;
    }
    dim3 grid((unsigned)n_tok, (unsigned)(ra->n_head + ra->n_head_kv));
    return launch_maybe_pdl(rope_store_kernel, grid, dim3(ra->head_dim / 2), 0, stream, qkv, bias,
                            tok_pos, tok_seq, block_table, max_blocks, block_tokens, ra->n_head,
                            ra->n_head_kv, ra->head_dim, ra->n_rot, ra->neox, ra->inv_freq, q_out,
                            k_cache, v_cache);
}

static cudaError_t attention_dispatch(const float *q, const int32_t *tok_pos,
                                      const int32_t *tok_seq, const int32_t *block_table,
                                      const uint16_t *k_cache, const uint16_t *v_cache,
                                      const wk_cuda_attn_args *aa, int n_tok, uint16_t *out,
                                      int splits, float *part, cudaStream_t stream) {
    if (n_tok <= 0) {
        return cudaSuccess;
    }
    if (aa->n_head_kv <= 0 || aa->n_head % aa->n_head_kv != 0 || splits < 1 ||
        splits > WK_CUDA_ATTN_MAX_SPLITS || (splits > 1 && part == NULL)) {
        return cudaErrorInvalidValue;
    }
    switch (aa->head_dim) {
    case 64:
        return launch_attention<64>(q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa, n_tok,
                                    out, splits, part, stream);
    case 128:
        return launch_attention<128>(q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa, n_tok,
                                     out, splits, part, stream);
    case 256:
        return launch_attention<256>(q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa, n_tok,
                                     out, splits, part, stream);
    default:
        return cudaErrorInvalidValue;
    }
}

cudaError_t wk_cuda_attention(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                              const int32_t *block_table, const uint16_t *k_cache,
                              const uint16_t *v_cache, const wk_cuda_attn_args *aa, int n_tok,
                              uint16_t *out, cudaStream_t stream) {
    return attention_dispatch(q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa, n_tok, out, 1,
                              NULL, stream);
}

cudaError_t wk_cuda_attention_split(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                                    const int32_t *block_table, const uint16_t *k_cache,
                                    const uint16_t *v_cache, const wk_cuda_attn_args *aa, int n_tok,
                                    int splits, float *part, uint16_t *out, cudaStream_t stream) {
    return attention_dispatch(q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa, n_tok, out,
                              splits, part, stream);
}

cudaError_t wk_cuda_swiglu(const uint16_t *gu, int n, int n_ff, uint16_t *out,
                           cudaStream_t stream) {
    const int64_t total = (int64_t)n * n_ff;
    if (total <= 0) {
        return cudaSuccess;
    }
    if (n_ff % 8 == 0 && n <= 65535) {
        const int per_block = 128 * 8;
        dim3 grid((unsigned)((n_ff + per_block - 1) / per_block), (unsigned)n);
        return launch_maybe_pdl(swiglu_vec_kernel, grid, dim3(128), 0, stream, gu, n_ff, out);
    }
    return launch_maybe_pdl(swiglu_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream, gu,
                            total, n_ff, out);
}

cudaError_t wk_cuda_f32_to_f16(const float *src, uint16_t *dst, int64_t n, cudaStream_t stream) {
    if (n <= 0) {
        return cudaSuccess;
    }
    f32_to_f16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(src, dst, n);
    return cudaGetLastError();
}

cudaError_t wk_cuda_bf16_to_f16(const uint16_t *src, uint16_t *dst, int64_t n,
                                cudaStream_t stream) {
    if (n <= 0) {
        return cudaSuccess;
    }
    bf16_to_f16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(src, dst, n);
    return cudaGetLastError();
}

cudaError_t wk_cuda_f16_to_f32(const uint16_t *src, float *dst, int64_t n, cudaStream_t stream) {
    if (n <= 0) {
        return cudaSuccess;
    }
    f16_to_f32_kernel<<<grid_for(n, 256), 256, 0, stream>>>(src, dst, n);
    return cudaGetLastError();
}

cudaError_t wk_cuda_fill_random_f16(uint16_t *dst, int64_t n, float amp, uint64_t seed,
                                    cudaStream_t stream) {
    if (n <= 0) {
        return cudaSuccess;
    }
    fill_random_f16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(dst, n, amp, seed);
    return cudaGetLastError();
}

cudaError_t wk_cuda_fill_f32(float *dst, int64_t n, float value, cudaStream_t stream) {
    if (n <= 0) {
        return cudaSuccess;
    }
    fill_f32_kernel<<<grid_for(n, 256), 256, 0, stream>>>(dst, n, value);
    return cudaGetLastError();
}

cudaError_t wk_cuda_read_probe(const void *src, int64_t n16, float *sink, cudaStream_t stream) {
    if (n16 <= 0) {
        return cudaSuccess;
    }
    int64_t blocks = (n16 + 255) / 256;
    if (blocks > 132 * 64) {
        blocks = 132 * 64;
    }
    read_probe_kernel<<<(int)blocks, 256, 0, stream>>>(static_cast<const uint4 *>(src), n16, sink);
    return cudaGetLastError();
}

cudaError_t wk_cuda_gemv(const uint16_t *w, const uint16_t *x, int n_tok, int n_in, int n_out,
                         void *y, int y_f16, cudaStream_t stream) {
    if (n_tok < 1 || n_tok > WK_CUDA_GEMV_MAX_TOK || n_in % 8 != 0 || n_out <= 0) {
        return cudaErrorInvalidValue;
    }
    const int rows_per_block = 256 / kWarp;
    const int blocks = (n_out + rows_per_block - 1) / rows_per_block;
    switch (n_tok) {
    case 1:
        return launch_maybe_pdl(gemv_kernel<1>, dim3(blocks), dim3(256), 0, stream, w, x, n_in,
                                n_out, y, y_f16);
    case 2:
        return launch_maybe_pdl(gemv_kernel<2>, dim3(blocks), dim3(256), 0, stream, w, x, n_in,
                                n_out, y, y_f16);
    case 3:
        return launch_maybe_pdl(gemv_kernel<3>, dim3(blocks), dim3(256), 0, stream, w, x, n_in,
                                n_out, y, y_f16);
    case 4:
        return launch_maybe_pdl(gemv_kernel<4>, dim3(blocks), dim3(256), 0, stream, w, x, n_in,
                                n_out, y, y_f16);
    case 5:
        return launch_maybe_pdl(gemv_kernel<5>, dim3(blocks), dim3(256), 0, stream, w, x, n_in,
                                n_out, y, y_f16);
    case 6:
        return launch_maybe_pdl(gemv_kernel<6>, dim3(blocks), dim3(256), 0, stream, w, x, n_in,
                                n_out, y, y_f16);
    case 7:
        return launch_maybe_pdl(gemv_kernel<7>, dim3(blocks), dim3(256), 0, stream, w, x, n_in,
                                n_out, y, y_f16);
    default:
        return launch_maybe_pdl(gemv_kernel<8>, dim3(blocks), dim3(256), 0, stream, w, x, n_in,
                                n_out, y, y_f16);
    }
}

} /* extern "C" */
