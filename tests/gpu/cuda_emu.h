/*
 * cuda_emu: just enough of CUDA's device language to run a block-synchronous kernel on the CPU,
 * so that a kernel's logic (not its speed) is checked on machines without a GPU. Each block's
 * threads are fibers (ucontext) on the calling thread, run round-robin; __syncthreads and the
 * warp shuffles are barriers (block-wide, or over the 32 threads of one warp) at which a fiber
 * yields. A barrier that some threads never reach (divergence: undefined on a GPU) is reported
 * as a deadlock. Shared memory is a function-local static (blocks run one after another).
 *
 * Covered: threadIdx/blockIdx/blockDim/gridDim (.x), __syncthreads, __shfl_xor_sync,
 * __shfl_up_sync (full mask), atomicAdd (int, double), the _rn arithmetic intrinsics, the
 * qualifiers as no-ops. Test code only: process-wide state, one kernel at a time.
 */
#ifndef CUDA_EMU_H
#define CUDA_EMU_H

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

/* The toolkit's headers (when present) define these for a host compiler: include them before
 * this file; these definitions replace theirs. */
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)

struct emu_dim {
    unsigned x;
};

namespace emu {

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 * 1024;

enum state { RUNNABLE, WAIT_BLOCK, WAIT_WARP, DONE };

struct ctx {
    ucontext_t sched;
    std::vector<ucontext_t> fib;
    std::vector<char> stacks;
    std::vector<int> st;
    int n_threads = 0;
    int cur = 0;
    unsigned block = 0, grid = 0;
    int block_arrived = 0;
    int warp_arrived[kMaxThreads / 32] = {};
    uint64_t slot[kMaxThreads]; /* shuffle exchange, one value per thread */
    std::function<void()> body;
};

inline ctx &g() {
    static ctx c;
    return c;
}

inline void yield() {
    ctx &c = g();
    swapcontext(&c.fib[c.cur], &c.sched);
}

inline void sync_block() {
    ctx &c = g();
    c.st[c.cur] = WAIT_BLOCK;
    if (++c.block_arrived == c.n_threads) {
        for (int t = 0; t < c.n_threads; t++) {
            c.st[t] = RUNNABLE;
        }
        c.block_arrived = 0;
    }
    yield();
}

inline void sync_warp() {
    ctx &c = g();
    const int w = c.cur / 32;
    c.st[c.cur] = WAIT_WARP;
    if (++c.warp_arrived[w] == 32) {
        for (int t = w * 32; t < w * 32 + 32; t++) {
            c.st[t] = RUNNABLE;
        }
        c.warp_arrived[w] = 0;
    }
    yield();
}

inline void trampoline() {
    ctx &c = g();
    c.body();
    c.st[c.cur] = DONE;
    swapcontext(&c.fib[c.cur], &c.sched);
}

/* Runs body as grid blocks of n_threads (a multiple of 32); false on a barrier deadlock. */
inline bool launch(unsigned grid, int n_threads, std::function<void()> body) {
    ctx &c = g();
    c.n_threads = n_threads;
    c.grid = grid;
    c.body = std::move(body);
    c.fib.assign((size_t)n_threads, ucontext_t{});
    c.stacks.assign((size_t)n_threads * kStackBytes, 0);
    c.st.assign((size_t)n_threads, RUNNABLE);
    for (c.block = 0; c.block < grid; c.block++) {
        c.block_arrived = 0;
        memset(c.warp_arrived, 0, sizeof(c.warp_arrived));
        for (int t = 0; t < n_threads; t++) {
            getcontext(&c.fib[t]);
            c.fib[t].uc_stack.ss_sp = &c.stacks[(size_t)t * kStackBytes];
            c.fib[t].uc_stack.ss_size = kStackBytes;
            c.fib[t].uc_link = &c.sched;
            makecontext(&c.fib[t], trampoline, 0);
            c.st[t] = RUNNABLE;
        }
        int done = 0;
        while (done < n_threads) {
            int ran = 0;
            done = 0;
            for (int t = 0; t < n_threads; t++) {
                if (c.st[t] == RUNNABLE) {
                    c.cur = t;
                    swapcontext(&c.sched, &c.fib[t]);
                    ran++;
                }
                done += c.st[t] == DONE;
            }
            if (ran == 0 && done < n_threads) {
                fprintf(stderr, "cuda_emu: block %u: barrier deadlock (%d of %d threads done)\n",
                        c.block, done, n_threads);
                return false;
            }
        }
    }
    return true;
}

template <class T> inline T shfl(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    ctx &c = g();
    const int base = c.cur & ~31;
    memcpy(&c.slot[c.cur], &v, sizeof(T));
    sync_warp();
    T r;
    memcpy(&r, &c.slot[base + src_lane], sizeof(T));
    sync_warp();
    return r;
}

} // namespace emu

inline emu_dim emu_thread_idx() {
    return emu_dim{(unsigned)emu::g().cur};
}
inline emu_dim emu_block_idx() {
    return emu_dim{emu::g().block};
}
inline emu_dim emu_grid_dim() {
    return emu_dim{emu::g().grid};
}
inline emu_dim emu_block_dim() {
    return emu_dim{(unsigned)emu::g().n_threads};
}
#define threadIdx (emu_thread_idx())
#define blockIdx (emu_block_idx())
#define gridDim (emu_grid_dim())
#define blockDim (emu_block_dim())

inline void __syncthreads() {
    emu::sync_block();
}

template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int o) {
    (void)mask;
    return emu::shfl(v, (emu::g().cur & 31) ^ o);
}

template <class T> inline T __shfl_up_sync(unsigned mask, T v, int o) {
    (void)mask;
    const int lane = emu::g().cur & 31;
    T r = emu::shfl(v, lane >= o ? lane - o : lane);
    return r;
}

/* fibers never interleave inside a call: a plain read-modify-write is atomic */
template <class T> inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}

/* separate roundings (the host has no FMA contraction here either) */
inline float __fadd_rn(float a, float b) {
    volatile float r = a + b;
    return r;
}
inline float __fsub_rn(float a, float b) {
    volatile float r = a - b;
    return r;
}
inline float __fmul_rn(float a, float b) {
    volatile float r = a * b;
    return r;
}
inline float __fdiv_rn(float a, float b) {
    volatile float r = a / b;
    return r;
}

using std::isnan;
using std::max;
using std::min;

#endif /* CUDA_EMU_H */
