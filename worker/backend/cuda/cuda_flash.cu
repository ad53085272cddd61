/*
 * Flash-style prefill attention over the paged KV cache (contract in cuda_ops.h).
 *
 * One block = one query tile (64 tokens of one sequence) x one query head, 4 warps of 16 query
 * rows each. Key/value tiles of 64 keys are gathered from the paged cache into shared memory;
 * S = Q K^T and O += P V run on tensor cores (WMMA 16x16x16, f16 in, f32 accumulate); the
 * online softmax keeps a running max m and sum l per row. Two lanes own one query row (32
 * score columns and head_dim/2 output columns each), so the rescaling of O by exp(m_old -
 * m_new) is done in registers with a known element -> row mapping (WMMA accumulator layouts
 * are opaque, so P V is staged through shared memory and added by the owning lanes).
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "cuda_ops.h"

namespace {

using namespace nvcuda;

constexpr int kTQ = WK_CUDA_FLASH_TILE; /* query rows per block */
constexpr int kTK = 64;                 /* keys per tile */
constexpr int kNW = 4;                  /* warps; each owns 16 query rows */

template <int HD> struct flash_layout {
    static constexpr int LDQ = HD + 8; /* halves; +8 keeps rows off the same banks */
    static constexpr int LDK = HD + 8;
    static constexpr int LDS = kTK + 4;               /* floats, scores */
    static constexpr int LDO = HD + 4;                /* floats, P V stage */
    static constexpr int SCR = LDS > LDO ? LDS : LDO; /* per-row floats of the warp scratch */
    static constexpr int LDP = kTK + 8;               /* halves, probabilities */
    static constexpr size_t q_bytes = (size_t)kTQ * LDQ * 2;
    static constexpr size_t k_bytes = (size_t)kTK * LDK * 2;
    static constexpr size_t s_bytes = (size_t)kNW * 16 * SCR * 4;
    static constexpr size_t p_bytes = (size_t)kNW * 16 * LDP * 2;
    static constexpr size_t total = q_bytes + 2 * k_bytes + s_bytes + p_bytes;
};

__device__ __forceinline__ uint16_t f2h_sat(float f) {
    f = fminf(fmaxf(f, -65504.0f), 65504.0f);
    return __half_as_ushort(__float2half_rn(f));
}

template <int HD>
__global__ void __launch_bounds__(kNW * 32)
    flash_prefill_kernel(const float *__restrict__ q, const int32_t *__restrict__ tok_pos,
                         const int32_t *__restrict__ tok_seq,
                         const int32_t *__restrict__ block_table,
                         const uint16_t *__restrict__ k_cache, const uint16_t *__restrict__ v_cache,
                         int n_head, int n_head_kv, int block_tokens, int max_blocks, float scale,
                         const int32_t *__restrict__ tiles, uint16_t *__restrict__ out) {
    using L = flash_layout<HD>;
    constexpr int HALF = HD / 2; /* output columns per lane */
    constexpr int CH = HD / 8;   /* 16-byte chunks per K/V row */
    extern __shared__ __align__(128) unsigned char smem[];
    half *sQ = reinterpret_cast<half *>(smem);
    half *sK = reinterpret_cast<half *>(smem + L::q_bytes);
    half *sV = reinterpret_cast<half *>(smem + L::q_bytes + L::k_bytes);
    float *sS = reinterpret_cast<float *>(smem + L::q_bytes + 2 * L::k_bytes);
    half *sP = reinterpret_cast<half *>(smem + L::q_bytes + 2 * L::k_bytes + L::s_bytes);

    const int tid = threadIdx.x;
    const int warp = tid / 32;
    const int lane = tid % 32;
    const int head = blockIdx.y;
    const int kvh = head / (n_head / n_head_kv);
    const int t0 = tiles[2 * blockIdx.x];
    const int cnt = tiles[2 * blockIdx.x + 1];
    const int p0 = tok_pos[t0];
    const int32_t *bt = block_table + (int64_t)tok_seq[t0] * max_blocks;
    const int n_keys = p0 + cnt;

    /* Q tile, scaled, as f16; rows past cnt are zero */
    for (int i = tid; i < kTQ * HD; i += kNW * 32) {
        const int r = i / HD;
        const int d = i % HD;
        float v = 0.0f;
        if (r < cnt) {
            v = q[((int64_t)(t0 + r) * n_head + head) * HD + d] * scale;
        }
        sQ[r * L::LDQ + d] = __float2half_rn(v);
    }

    const int r = lane >> 1; /* row within the warp's 16 */
    const int hf = lane & 1; /* which half of the columns */
    const int row = warp * 16 + r;
    const int qpos = p0 + (row < cnt ? row : cnt - 1);
    float m = -1e30f;
    float l = 0.0f;
    float o[HALF];
#pragma unroll
    for (int i = 0; i < HALF; i++) {
        o[i] = 0.0f;
    }
    float *S = sS + warp * 16 * L::SCR;
    half *P = sP + warp * 16 * L::LDP;
    /* keys beyond the warp's last query position are all masked for it */
    const int warp_last = p0 + min(warp * 16 + 15, cnt - 1);

    for (int k0 = 0; k0 < n_keys; k0 += kTK) {
        __syncthreads(); /* Q written / previous tile's K and V no longer read */
        for (int c = tid; c < kTK * CH; c += kNW * 32) {
            const int kk = c / CH;
            const int part = c % CH;
            const int key = k0 + kk;
            uint4 kv = make_uint4(0, 0, 0, 0);
            uint4 vv = make_uint4(0, 0, 0, 0);
            if (key < n_keys) {
                const int64_t blk = bt[key / block_tokens];
                const int64_t off =
                    ((blk * n_head_kv + kvh) * block_tokens + key % block_tokens) * HD + part * 8;
                kv = *reinterpret_cast<const uint4 *>(k_cache + off);
                vv = *reinterpret_cast<const uint4 *>(v_cache + off);
            }
            *reinterpret_cast<uint4 *>(sK + kk * L::LDK + part * 8) = kv;
            *reinterpret_cast<uint4 *>(sV + kk * L::LDK + part * 8) = vv;
        }
        __syncthreads();
        if (k0 > warp_last) {
            continue; /* fully masked for this warp; still joins the barriers above */
        }

        /* S (16 x kTK) = Q_w (16 x HD) K^T */
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc[kTK / 16];
#pragma unroll
        for (int j = 0; j < kTK / 16; j++) {
            wmma::fill_fragment(sacc[j], 0.0f);
        }
#pragma unroll
        for (int kd = 0; kd < HD; kd += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a;
            wmma::load_matrix_sync(a, sQ + warp * 16 * L::LDQ + kd, L::LDQ);
#pragma unroll
            for (int j = 0; j < kTK / 16; j++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> b;
                wmma::load_matrix_sync(b, sK + j * 16 * L::LDK + kd, L::LDK);
                wmma::mma_sync(sacc[j], a, b, sacc[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < kTK / 16; j++) {
            wmma::store_matrix_sync(S + j * 16, sacc[j], L::LDS, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax on row r, columns [hf*32, hf*32+32) */
        float sv[32];
        float mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < 32; c++) {
            const int col = hf * 32 + c;
            float s = S[r * L::LDS + col];
            if (k0 + col > qpos) {
                s = -INFINITY;
            }
            sv[c] = s;
            mx = fmaxf(mx, s);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m, mx);
        const float corr = __expf(m - m_new);
        float sum = 0.0f;
#pragma unroll
        for (int c = 0; c < 32; c++) {
            const float p = __expf(sv[c] - m_new);
            sum += p;
            P[r * L::LDP + hf * 32 + c] = __float2half_rn(p);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * corr + sum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < HALF; i++) {
            o[i] *= corr;
        }
        __syncwarp(); /* P complete; S no longer read */

        /* PV (16 x HD) = P (16 x kTK) V (kTK x HD), staged in S */
#pragma unroll
        for (int jd = 0; jd < HD / 16; jd++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < kTK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::row_major> b;
                wmma::load_matrix_sync(a, P + kk * 16, L::LDP);
                wmma::load_matrix_sync(b, sV + kk * 16 * L::LDK + jd * 16, L::LDK);
                wmma::mma_sync(acc, a, b, acc);
            }
            wmma::store_matrix_sync(S + jd * 16, acc, L::LDO, wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < HALF; i++) {
            o[i] += S[r * L::LDO + hf * HALF + i];
        }
        __syncwarp(); /* S free for the next tile */
    }

    if (row < cnt) {
        const float inv = 1.0f / l;
        uint16_t *dst = out + ((int64_t)(t0 + row) * n_head + head) * HD + hf * HALF;
#pragma unroll
        for (int i = 0; i < HALF; i++) {
            dst[i] = f2h_sat(o[i] * inv);
        }
    }
}

template <int HD>
cudaError_t launch_flash(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                         const int32_t *block_table, const uint16_t *k_cache,
                         const uint16_t *v_cache, const wk_cuda_attn_args *aa, const int32_t *tiles,
                         int n_tiles, uint16_t *out, cudaStream_t stream) {
    const size_t smem = flash_layout<HD>::total;
    cudaError_t e = cudaFuncSetAttribute(flash_prefill_kernel<HD>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) {
        return e;
    }
    dim3 grid((unsigned)n_tiles, (unsigned)aa->n_head);
    flash_prefill_kernel<HD><<<grid, kNW * 32, smem, stream>>>(
        q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa->n_head, aa->n_head_kv,
        aa->block_tokens, aa->max_blocks, aa->scale, tiles, out);
    return cudaGetLastError();
}

} // namespace

extern "C" {

int wk_cuda_flash_supported(int head_dim) {
    return head_dim == 64 || head_dim == 128;
}

cudaError_t wk_cuda_flash_prefill(const float *q, const int32_t *tok_pos, const int32_t *tok_seq,
                                  const int32_t *block_table, const uint16_t *k_cache,
                                  const uint16_t *v_cache, const wk_cuda_attn_args *aa,
                                  const int32_t *tiles, int n_tiles, uint16_t *out,
                                  cudaStream_t stream) {
    if (n_tiles <= 0) {
        return cudaSuccess;
    }
    if (aa->n_head_kv <= 0 || aa->n_head % aa->n_head_kv != 0) {
        return cudaErrorInvalidValue;
    }
    switch (aa->head_dim) {
    case 64:
        return launch_flash<64>(q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa, tiles,
                                n_tiles, out, stream);
    case 128:
        return launch_flash<128>(q, tok_pos, tok_seq, block_table, k_cache, v_cache, aa, tiles,
                                 n_tiles, out, stream);
    default:
        return cudaErrorInvalidValue;
    }
}

} /* extern "C" */
