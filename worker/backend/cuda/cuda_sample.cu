/*
 * Sampling on the device (contract in cuda_ops.h, reference in worker/sampler.c): one block of
 * kThreads per sequence row.
 *
 * The host sampler's draw walks its candidates in the order its selection leaves them, so the
 * kernel reproduces that order rather than sorting:
 *   - no top-k: candidates are the finite logits in id order. Without top-p the pick is an
 *     ordered prefix-sum walk over the row; with top-p the scores go into the host's 1024
 *     buckets (shared-memory masses), whole buckets above the edge keep id order, and only the
 *     edge bucket is gathered and bitonic-sorted (in the work slot; it is small unless the
 *     logits are flat) before the same walk.
 *   - top-k (k <= 1024): the host's size-k heap is replayed exactly. Chunks of kThreads logits
 *     are filtered in parallel against the heap root (only tokens that beat it can change the
 *     heap, and the root only improves), the survivors are compacted in id order and one thread
 *     applies the heap operations; top-p, min-p and the draw then run on the <= k candidates in
 *     one thread exactly as on the host.
 * Every float step that the host rounds separately is written with _rn intrinsics so nvcc does
 * not fuse it.
 */
#ifndef WK_CUDA_SAMPLE_EMU /* tests/gpu/sample_emu_test.cc runs the kernel on the CPU */
#include <cuda_runtime.h>
#endif

#include <climits>
#include <cmath>
#include <cstdint>

#include "cuda_ops.h"

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBuckets = 1024; /* TOP_P_BUCKETS of sampler.c */
constexpr int kMaxK = WK_CUDA_SAMPLE_MAX_TOP_K;
constexpr int kMaxChunks = WK_CUDA_SAMPLE_MAX_VOCAB / kThreads;
constexpr int kPerThread = 4; /* top-k filter: logits per thread per chunk once the heap is full */

struct Shared {
    float rf[kWarps];
    int ri[kWarps];
    double rd[kWarps];
    float cs[kMaxK]; /* candidates (top-k path): score, later weight */
    int ci[kMaxK];   /* candidates: token id */
    unsigned short bucket[kMaxK];
    double mass[kBuckets];
    float list_s[kThreads]; /* top-k fill: one chunk's finite logits */
    int list_i[kThreads];
    double chunk[kMaxChunks]; /* ordered_pick: weight per chunk of kThreads items */
    int have;                 /* heap size */
    int count;                /* edge-bucket gather counter */
    int edge;                 /* top-p edge bucket */
    int chosen;               /* result of a one-thread step */
    double cum;               /* top-p: mass of the whole buckets above the edge */
    double dval;              /* a one-thread step's double result */
    int next;                 /* top-k fill: first index not yet offered */
    int hit_chunk; /* ordered_pick: chunk where the running sum crosses the target, or -1 */
    double run;    /* ordered_pick: running sum before that chunk */
    double target; /* ordered_pick: u times the total */
};

__device__ __forceinline__ float sanitize(float x) {
    return isnan(x) ? -INFINITY : x;
}

/* The host's cand_before: higher score first, lower id among equals. */
__device__ __forceinline__ bool before(float a, int ia, float b, int ib) {
    if (a != b) {
        return a > b;
    }
    return ia < ib;
}

__device__ __forceinline__ void warp_best(float &k, int &i) {
    for (int o = 16; o > 0; o >>= 1) {
        float ok = __shfl_xor_sync(0xffffffffu, k, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (before(ok, oi, k, i)) {
            k = ok;
            i = oi;
        }
    }
}

/* The best (score, id) of the block under before(), returned to every thread. */
__device__ void block_best(Shared &sh, float &k, int &i) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    warp_best(k, i);
    if (lane == 0) {
        sh.rf[w] = k;
        sh.ri[w] = i;
    }
    __syncthreads();
    if (w == 0) {
        k = sh.rf[lane];
        i = sh.ri[lane];
        warp_best(k, i);
        if (lane == 0) {
            sh.rf[0] = k;
            sh.ri[0] = i;
        }
    }
    __syncthreads();
    k = sh.rf[0];
    i = sh.ri[0];
    __syncthreads();
}

/* op-reduction of v over the block through slots (kWarps entries of shared memory), returned
 * to every thread */
template <class T, class Op> __device__ T block_reduce(T *slots, T v, Op op) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    if (lane == 0) {
        slots[w] = v;
    }
    __syncthreads();
    if (w == 0) {
        v = slots[lane];
        for (int o = 16; o > 0; o >>= 1) {
            v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
        }
        if (lane == 0) {
            slots[0] = v;
        }
    }
    __syncthreads();
    v = slots[0];
    __syncthreads();
    return v;
}

__device__ double block_sum_d(Shared &sh, double v) {
    return block_reduce(sh.rd, v, [](double a, double b) { return a + b; });
}

__device__ float block_min_f(Shared &sh, float v) {
    return block_reduce(sh.rf, v, [](float a, float b) { return fminf(a, b); });
}

__device__ int block_min_i(Shared &sh, int v) {
    return block_reduce(sh.ri, v, [](int a, int b) { return min(a, b); });
}

__device__ int block_max_i(Shared &sh, int v) {
    return block_reduce(sh.ri, v, [](int a, int b) { return max(a, b); });
}

/* Inclusive prefix sum of v over the block in thread order through slots (kWarps entries of
 * shared memory); *total gets the block's sum. */
template <class T> __device__ T block_scan(T *slots, T v, T *total) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        T y = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) {
            v += y;
        }
    }
    if (lane == 31) {
        slots[w] = v;
    }
    __syncthreads();
    if (w == 0) {
        T t = slots[lane];
        for (int o = 1; o < 32; o <<= 1) {
            T y = __shfl_up_sync(0xffffffffu, t, o);
            if (lane >= o) {
                t += y;
            }
        }
        slots[lane] = t;
    }
    __syncthreads();
    const T r = v + (w > 0 ? slots[w - 1] : T(0));
    *total = slots[kWarps - 1];
    __syncthreads();
    return r;
}

/* Position of a flagged thread among the flagged ones, in thread order; *total = their count. */
__device__ int block_compact(Shared &sh, bool flag, int *total) {
    return block_scan(sh.ri, flag ? 1 : 0, total) - (flag ? 1 : 0);
}

/*
 * The inverse-CDF pick over the items 0..n-1 in index order: item(i, &w) says whether i is a
 * candidate and its weight. target = u01 * (the items' total + extra). Returns the first
 * candidate whose running sum exceeds target, else -1 with *cum the items' total; *target_out
 * and *last (the highest candidate index, -1: none) always. One pass sums each chunk of
 * kThreads items (a warp per chunk), one thread finds the chunk where the sum crosses, and a
 * block scan finds the item inside it (or in a later chunk, should rounding say so).
 */
template <class Item>
__device__ int ordered_pick(Shared &sh, int n, Item item, double u01, double extra,
                            double *target_out, double *cum, int *last) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int n_chunks = (n + kThreads - 1) / kThreads;
    int last_i = -1;
    for (int c = w; c < n_chunks; c += kWarps) {
        double sum = 0.0;
        for (int k = lane; k < kThreads; k += 32) {
            const int i = c * kThreads + k;
            double wt = 0.0;
            if (i < n && item(i, &wt)) {
                sum += wt;
                last_i = i > last_i ? i : last_i;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
        }
        if (lane == 0) {
            sh.chunk[c] = sum;
        }
    }
    *last = block_max_i(sh, last_i); /* its barriers publish the chunk sums */
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int c = 0; c < n_chunks; c++) {
            total += sh.chunk[c];
        }
        const double target = u01 * (total + extra);
        double run = 0.0;
        int hit = -1;
        for (int c = 0; c < n_chunks; c++) {
            if (run + sh.chunk[c] > target) {
                hit = c;
                break;
            }
            run += sh.chunk[c];
        }
        sh.target = target;
        sh.run = run;
        sh.hit_chunk = hit;
    }
    __syncthreads();
    const double target = sh.target;
    double run = sh.run;
    const int hit_chunk = sh.hit_chunk;
    __syncthreads();
    *target_out = target;
    for (int c = hit_chunk; c >= 0 && c < n_chunks; c++) {
        const int i = c * kThreads + (int)threadIdx.x;
        double wt = 0.0;
        const bool in = i < n && item(i, &wt);
        double chunk_total = 0.0;
        const double incl = block_scan(sh.rd, in ? wt : 0.0, &chunk_total);
        const int hit = block_min_i(sh, in && run + incl > target ? i : INT_MAX);
        if (hit != INT_MAX) {
            *cum = run;
            return hit;
        }
        run += chunk_total;
    }
    *cum = run;
    return -1;
}

/* ---- the host sampler's one-thread steps, on the candidates in shared memory ------------ */

__device__ void cand_swap(Shared &sh, int a, int b) {
    float ts = sh.cs[a];
    int ti = sh.ci[a];
    sh.cs[a] = sh.cs[b];
    sh.ci[a] = sh.ci[b];
    sh.cs[b] = ts;
    sh.ci[b] = ti;
}

__device__ void heap_offer(Shared &sh, int k, float x, int id) {
    float *hs = sh.cs;
    int *hi = sh.ci;
    if (sh.have < k) {
        int j = sh.have++;
        hs[j] = x;
        hi[j] = id;
        while (j > 0 && before(hs[(j - 1) / 2], hi[(j - 1) / 2], hs[j], hi[j])) {
            cand_swap(sh, j, (j - 1) / 2);
            j = (j - 1) / 2;
        }
    } else if (before(x, id, hs[0], hi[0])) {
        hs[0] = x;
        hi[0] = id;
        const int n = sh.have;
        int i = 0;
        for (;;) {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < n && before(hs[m], hi[m], hs[l], hi[l])) {
                m = l;
            }
            if (r < n && before(hs[m], hi[m], hs[r], hi[r])) {
                m = r;
            }
            if (m == i) {
                break;
            }
            cand_swap(sh, i, m);
            i = m;
        }
    }
}

/* sampler.c's top_p_cut on the n shared candidates: leaves weights, returns the kept count */
__device__ int top_p_cut_seq(Shared &sh, int n, float top_p) {
    float lo = 0.0f;
    for (int i = 0; i < n; i++) {
        lo = sh.cs[i] < lo ? sh.cs[i] : lo;
    }
    const float per_unit = lo < 0.0f ? __fdiv_rn((float)kBuckets, -lo) : 0.0f;
    for (int b = 0; b < kBuckets; b++) {
        sh.mass[b] = 0.0;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float f = __fmul_rn(-sh.cs[i], per_unit);
        const int b = f >= (float)(kBuckets - 1) ? kBuckets - 1 : (int)f;
        sh.bucket[i] = (unsigned short)b;
        sh.cs[i] = expf(sh.cs[i]);
        sh.mass[b] += (double)sh.cs[i];
        total += (double)sh.cs[i];
    }
    const double target = (double)top_p * total;
    double cum = 0.0;
    int edge = 0;
    while (edge < kBuckets - 1 && cum + sh.mass[edge] < target) {
        cum += sh.mass[edge];
        edge++;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (sh.bucket[i] < edge) {
            cand_swap(sh, k, i);
            unsigned short tb = sh.bucket[k];
            sh.bucket[k] = sh.bucket[i];
            sh.bucket[i] = tb;
            k++;
        }
    }
    int e = k;
    for (int i = k; i < n; i++) {
        if (sh.bucket[i] == edge) {
            cand_swap(sh, e, i);
            sh.bucket[i] = sh.bucket[e];
            e++;
        }
    }
    /* the edge bucket by weight (a total order: any sort gives the host's qsort result) */
    for (int i = k + 1; i < e; i++) {
        for (int j = i; j > k && before(sh.cs[j], sh.ci[j], sh.cs[j - 1], sh.ci[j - 1]); j--) {
            cand_swap(sh, j, j - 1);
        }
    }
    int keep = k;
    while (keep < e) {
        cum += (double)sh.cs[keep];
        keep++;
        if (cum >= target) {
            break;
        }
    }
    return keep > 0 ? keep : 1;
}

__device__ int keep_at_least_seq(Shared &sh, int n, float floor) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (sh.cs[i] >= floor) {
            sh.cs[k] = sh.cs[i];
            sh.ci[k] = sh.ci[i];
            k++;
        }
    }
    return k;
}

/* the rest of wk_sampler_sample after top-k, on the nc shared candidates (scores) */
__device__ int pick_seq(Shared &sh, int nc, const wk_cuda_sample_seq &q) {
    if (q.top_p < 1.0f) {
        nc = top_p_cut_seq(sh, nc, q.top_p);
        if (q.min_p > 0.0f) {
            nc = keep_at_least_seq(sh, nc, q.min_p);
        }
    } else {
        if (q.min_p > 0.0f) {
            nc = keep_at_least_seq(sh, nc, logf(q.min_p));
        }
        for (int i = 0; i < nc; i++) {
            sh.cs[i] = expf(sh.cs[i]);
        }
    }
    double total = 0.0;
    for (int i = 0; i < nc; i++) {
        total += (double)sh.cs[i];
    }
    const double u = q.u * total;
    int chosen = nc > 0 ? sh.ci[nc - 1] : -1;
    double cum = 0.0;
    for (int i = 0; i < nc; i++) {
        cum += (double)sh.cs[i];
        if (u < cum) {
            chosen = sh.ci[i];
            break;
        }
    }
    return chosen;
}

/* ---- the three sampling paths ----------------------------------------------------------- */

__device__ int sample_top_k(Shared &sh, const float *l, int n_vocab, const wk_cuda_sample_seq &q,
                            float max, float inv_t, float *list_s, int *list_i) {
    const int k = q.top_k;
    const int tid = (int)threadIdx.x;
    if (tid == 0) {
        sh.have = 0;
        sh.next = 0;
    }
    __syncthreads();
    /* Fill: the first k finite logits enter in id order (one thread, as the host heap does);
     * a chunk's rest is left for the filter below. */
    int base = 0;
    while (sh.have < k && base < n_vocab) {
        const int i = base + tid;
        const float x = i < n_vocab ? sanitize(l[i]) : -INFINITY;
        const bool flag = x != -INFINITY;
        int cnt = 0;
        const int pos = block_compact(sh, flag, &cnt);
        if (flag) {
            sh.list_s[pos] = x;
            sh.list_i[pos] = i;
        }
        __syncthreads();
        if (tid == 0) {
            int j = 0;
            for (; j < cnt && sh.have < k; j++) {
                heap_offer(sh, k, sh.list_s[j], sh.list_i[j]);
            }
            sh.next = j < cnt ? sh.list_i[j] : base + kThreads;
        }
        __syncthreads();
        base = sh.next;
        __syncthreads();
    }
    /* Filter: once the heap is full only a token that beats the root can change it, and the
     * root only improves within a chunk, so the survivors against the chunk's first root are
     * a superset of what the host heap takes; one thread offers them in id order. */
    for (; base < n_vocab; base += kThreads * kPerThread) {
        const float root_s = sh.cs[0];
        const int root_i = sh.ci[0];
        const int i0 = base + tid * kPerThread;
        float xs[kPerThread];
        int n_mine = 0;
        unsigned mine = 0;
        for (int e = 0; e < kPerThread; e++) {
            const int i = i0 + e;
            xs[e] = i < n_vocab ? sanitize(l[i]) : -INFINITY;
            if (xs[e] != -INFINITY && before(xs[e], i, root_s, root_i)) {
                mine |= 1u << e;
                n_mine++;
            }
        }
        int total = 0;
        int pos = block_scan(sh.ri, n_mine, &total) - n_mine;
        if (total == 0) {
            continue;
        }
        for (int e = 0; e < kPerThread; e++) {
            if (mine & (1u << e)) {
                list_s[pos] = xs[e];
                list_i[pos] = i0 + e;
                pos++;
            }
        }
        __syncthreads();
        if (tid == 0) {
            for (int j = 0; j < total; j++) {
                heap_offer(sh, k, list_s[j], list_i[j]);
            }
        }
        __syncthreads();
    }
    const int nc = sh.have;
    for (int i = (int)threadIdx.x; i < nc; i += kThreads) {
        sh.cs[i] = __fmul_rn(__fsub_rn(sh.cs[i], max), inv_t);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        sh.chosen = pick_seq(sh, nc, q);
    }
    __syncthreads();
    return sh.chosen;
}

/* no top-k, no top-p: candidates in id order, min-p as a score floor */
__device__ int sample_plain(Shared &sh, const float *l, int n_vocab, const wk_cuda_sample_seq &q,
                            float max, float inv_t) {
    const float floor = q.min_p > 0.0f ? logf(q.min_p) : -INFINITY;
    const bool use_floor = q.min_p > 0.0f;
    auto item = [&](int i, double *w) {
        const float x = sanitize(l[i]);
        if (x == -INFINITY) {
            return false;
        }
        const float s = __fmul_rn(__fsub_rn(x, max), inv_t);
        if (use_floor && !(s >= floor)) {
            return false;
        }
        *w = (double)expf(s);
        return true;
    };
    double target = 0.0, cum = 0.0;
    int last = -1;
    const int hit = ordered_pick(sh, n_vocab, item, q.u, 0.0, &target, &cum, &last);
    return hit >= 0 ? hit : last;
}

/* Bitonic sort of (key, id)[0, n2) by before(), n2 a power of two, in global memory. */
__device__ void block_sort(float *key, int *id, int n2) {
    for (int size = 2; size <= n2; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = (int)threadIdx.x; i < n2; i += kThreads) {
                const int j = i ^ stride;
                if (j > i) {
                    const bool up = (i & size) == 0;
                    const float ki = key[i], kj = key[j];
                    const int ii = id[i], ij = id[j];
                    if (up ? before(kj, ij, ki, ii) : before(ki, ii, kj, ij)) {
                        key[i] = kj;
                        key[j] = ki;
                        id[i] = ij;
                        id[j] = ii;
                    }
                }
            }
            __syncthreads();
        }
    }
}

/* no top-k, top-p < 1: the host's buckets over the whole row, only the edge bucket sorted */
__device__ int sample_top_p(Shared &sh, const float *l, int n_vocab, const wk_cuda_sample_seq &q,
                            float max, float inv_t, float *wkey, int *wid) {
    float lo = 0.0f;
    for (int i = (int)threadIdx.x; i < n_vocab; i += kThreads) {
        const float x = sanitize(l[i]);
        if (x != -INFINITY) {
            const float s = __fmul_rn(__fsub_rn(x, max), inv_t);
            lo = s < lo ? s : lo;
        }
    }
    lo = block_min_f(sh, lo);
    const float per_unit = lo < 0.0f ? __fdiv_rn((float)kBuckets, -lo) : 0.0f;
    for (int b = (int)threadIdx.x; b < kBuckets; b += kThreads) {
        sh.mass[b] = 0.0;
    }
    if (threadIdx.x == 0) {
        sh.count = 0;
    }
    __syncthreads();
    /* candidate i: finite; bucket and weight exactly as top_p_cut computes them */
    auto cand = [&](int i, int *b, float *w) {
        const float x = sanitize(l[i]);
        if (x == -INFINITY) {
            return false;
        }
        const float s = __fmul_rn(__fsub_rn(x, max), inv_t);
        const float f = __fmul_rn(-s, per_unit);
        *b = f >= (float)(kBuckets - 1) ? kBuckets - 1 : (int)f;
        *w = expf(s);
        return true;
    };
    double part = 0.0;
    for (int i = (int)threadIdx.x; i < n_vocab; i += kThreads) {
        int b = 0;
        float w = 0.0f;
        if (cand(i, &b, &w)) {
            atomicAdd(&sh.mass[b], (double)w);
            part += (double)w;
        }
    }
    const double total = block_sum_d(sh, part); /* also orders the mass updates before use */
    const double target = (double)q.top_p * total;
    if (threadIdx.x == 0) {
        double cum = 0.0;
        int edge = 0;
        while (edge < kBuckets - 1 && cum + sh.mass[edge] < target) {
            cum += sh.mass[edge];
            edge++;
        }
        sh.edge = edge;
        sh.cum = cum;
    }
    __syncthreads();
    const int edge = sh.edge;
    /* gather the edge bucket (any order: the sort below is total) */
    for (int i = (int)threadIdx.x; i < n_vocab; i += kThreads) {
        int b = 0;
        float w = 0.0f;
        if (cand(i, &b, &w) && b == edge) {
            const int at = atomicAdd(&sh.count, 1);
            wkey[at] = w;
            wid[at] = i;
        }
    }
    __syncthreads();
    const int m = sh.count;
    int n2 = 1;
    while (n2 < m) {
        n2 <<= 1;
    }
    for (int i = m + (int)threadIdx.x; i < n2; i += kThreads) {
        wkey[i] = -1.0f; /* below every weight */
        wid[i] = INT_MAX;
    }
    __syncthreads();
    block_sort(wkey, wid, n2);
    /* how much of the sorted edge bucket top-p keeps, then min-p over the edge part */
    const bool use_min_p = q.min_p > 0.0f;
    if (threadIdx.x == 0) {
        double cum = sh.cum;
        int keep = 0;
        while (keep < m) {
            cum += (double)wkey[keep];
            keep++;
            if (cum >= target) {
                break;
            }
        }
        int kept = 0;
        double edge_sum = 0.0;
        for (int j = 0; j < keep; j++) {
            if (!use_min_p || wkey[j] >= q.min_p) {
                wkey[kept] = wkey[j];
                wid[kept] = wid[j];
                edge_sum += (double)wkey[j];
                kept++;
            }
        }
        sh.count = kept;
        sh.dval = edge_sum;
    }
    __syncthreads();
    const int n_edge = sh.count;
    const double edge_sum = sh.dval;
    /* whole buckets above the edge, in id order, min-p as a weight floor */
    auto above = [&](int i, double *wd) {
        int b = 0;
        float w = 0.0f;
        if (!cand(i, &b, &w) || b >= edge || (use_min_p && !(w >= q.min_p))) {
            return false;
        }
        *wd = (double)w;
        return true;
    };
    double u = 0.0, cum = 0.0;
    int last = -1;
    const int hit = ordered_pick(sh, n_vocab, above, q.u, edge_sum, &u, &cum, &last);
    if (hit >= 0) {
        return hit;
    }
    if (threadIdx.x == 0) {
        int chosen = n_edge > 0 ? wid[n_edge - 1] : last;
        for (int j = 0; j < n_edge; j++) {
            cum += (double)wkey[j];
            if (u < cum) {
                chosen = wid[j];
                break;
            }
        }
        sh.chosen = chosen;
    }
    __syncthreads();
    return sh.chosen;
}

__device__ void sample_one(Shared &sh, float *l, int n_vocab, const wk_cuda_sample_seq &q,
                           const wk_cuda_sample_bias *bias, const wk_cuda_sample_pen *pen,
                           float *wkey, int *wid, wk_cuda_sample_out *o) {
    const int tid = (int)threadIdx.x;
    if (tid == 0) {
        for (uint32_t i = 0; i < q.n_bias; i++) {
            const wk_cuda_sample_bias b = bias[q.bias_off + i];
            l[b.token_id] = __fadd_rn(l[b.token_id], b.bias);
        }
    }
    __syncthreads();
    /* the list holds each token once, so its entries are independent */
    const bool rep = q.repetition_penalty != 1.0f;
    const bool presfreq = q.presence_penalty != 0.0f || q.frequency_penalty != 0.0f;
    for (uint32_t i = (uint32_t)tid; i < q.n_pen; i += kThreads) {
        const wk_cuda_sample_pen p = pen[q.pen_off + i];
        float x = l[p.token_id];
        if (rep && (p.in_prompt || p.n_generated > 0)) {
            x = x > 0.0f ? __fdiv_rn(x, q.repetition_penalty) : __fmul_rn(x, q.repetition_penalty);
        }
        if (presfreq && p.n_generated > 0) {
            x = __fsub_rn(x, __fadd_rn(q.presence_penalty,
                                       __fmul_rn(q.frequency_penalty, (float)p.n_generated)));
        }
        l[p.token_id] = x;
    }
    __syncthreads();

    float max = -INFINITY;
    int best = INT_MAX;
    for (int i = tid; i < n_vocab; i += kThreads) {
        const float x = sanitize(l[i]);
        if (before(x, i, max, best)) {
            max = x;
            best = i;
        }
    }
    block_best(sh, max, best);
    if (max == -INFINITY) {
        if (tid == 0) {
            o->token_id = -1;
            o->logprob = 0.0f;
            o->n_top = 0;
        }
        return;
    }

    const bool want_lp = q.want_logprob || q.n_top > 0;
    double lse = 0.0;
    if (want_lp) {
        double part = 0.0;
        for (int i = tid; i < n_vocab; i += kThreads) {
            const float x = sanitize(l[i]);
            if (x != -INFINITY) {
                part += exp((double)__fsub_rn(x, max));
            }
        }
        lse = (double)max + log(block_sum_d(sh, part));
    }
    /* top n: each round the best entry strictly after the previous one in before() order */
    const int n_top = (int)q.n_top < n_vocab ? (int)q.n_top : n_vocab;
    float pk = INFINITY;
    int pi = -1;
    for (int r = 0; r < n_top; r++) {
        float bk = -INFINITY;
        int bi = INT_MAX;
        for (int i = tid; i < n_vocab; i += kThreads) {
            const float x = sanitize(l[i]);
            if (before(pk, pi, x, i) && before(x, i, bk, bi)) {
                bk = x;
                bi = i;
            }
        }
        block_best(sh, bk, bi);
        if (tid == 0) {
            o->top_id[r] = bi;
            o->top_logprob[r] = (float)((double)bk - lse);
        }
        pk = bk;
        pi = bi;
    }

    int chosen = best;
    if (q.temperature > 0.0f) {
        const float inv_t = __fdiv_rn(1.0f, q.temperature);
        if (q.top_k > 0 && q.top_k < n_vocab) {
            chosen = sample_top_k(sh, l, n_vocab, q, max, inv_t, wkey, wid);
        } else if (q.top_p < 1.0f) {
            chosen = sample_top_p(sh, l, n_vocab, q, max, inv_t, wkey, wid);
        } else {
            chosen = sample_plain(sh, l, n_vocab, q, max, inv_t);
        }
    }
    /* Cannot happen (the maximum is always a candidate); a wrong id must never index memory. */
    chosen = chosen >= 0 && chosen < n_vocab ? chosen : best;
    if (tid == 0) {
        o->token_id = chosen;
        o->logprob = want_lp ? (float)((double)sanitize(l[chosen]) - lse) : 0.0f;
        o->n_top = q.n_top > 0 ? (uint32_t)n_top : 0u;
    }
}

size_t pow2_at_least(int n) {
    size_t p = 1;
    while (p < (size_t)n) {
        p <<= 1;
    }
    return p;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(float *logits, int n_vocab, const wk_cuda_sample_seq *seqs, int n_seqs,
                  const wk_cuda_sample_bias *bias, const wk_cuda_sample_pen *pen, uint8_t *work,
                  size_t slot_elems, wk_cuda_sample_out *out) {
    __shared__ Shared sh;
    float *wkey = (float *)(work + (size_t)blockIdx.x * slot_elems * 8);
    int *wid = (int *)(wkey + slot_elems);
    for (int s = (int)blockIdx.x; s < n_seqs; s += (int)gridDim.x) {
        const wk_cuda_sample_seq q = seqs[s];
        sample_one(sh, logits + (int64_t)q.row * n_vocab, n_vocab, q, bias, pen, wkey, wid,
                   out + s);
        __syncthreads();
    }
}

} // namespace

#ifndef WK_CUDA_SAMPLE_EMU
extern "C" size_t wk_cuda_sample_work_bytes(int n_vocab) {
    return pow2_at_least(n_vocab < 1 ? 1 : n_vocab) * 8;
}

extern "C" cudaError_t wk_cuda_sample(float *logits, int n_vocab, const wk_cuda_sample_seq *seqs,
                                      int n_seqs, const wk_cuda_sample_bias *bias,
                                      const wk_cuda_sample_pen *pen, void *work, int n_work,
                                      wk_cuda_sample_out *out, cudaStream_t stream) {
    if (n_seqs < 1 || n_work < 1 || n_vocab < 1 || n_vocab > WK_CUDA_SAMPLE_MAX_VOCAB) {
        return cudaErrorInvalidValue;
    }
    const int grid = n_seqs < n_work ? n_seqs : n_work;
    sample_kernel<<<grid, kThreads, 0, stream>>>(logits, n_vocab, seqs, n_seqs, bias, pen,
                                                 (uint8_t *)work, pow2_at_least(n_vocab), out);
    return cudaGetLastError();
}
#endif /* WK_CUDA_SAMPLE_EMU */
