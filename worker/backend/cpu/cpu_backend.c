/*
 * cpu_backend: the reference and CI compute backend (wk_backend_cpu).
 *
 * Weights stay quantized. With AVX2 or AVX-512 VNNI, every weight matrix but BF16 ones
 * (quantized types, F16 and F32) is repacked at create into 16-row panels (cpu_panel; the mapped
 * originals are then dropped from memory) and every matmul runs the panel kernels over tiles of
 * tokens; otherwise weights stay where the model has them (the GGUF mapping). Each matmul quantizes
 * its input activations once to 8-bit blocks and runs integer dot kernels (cpu_panel, or
 * cpu_kernels' row kernels; float panels use the f32 input), split across a thread pool by output
 * rows; a batch of tokens reuses each weight block for every token while it is in registers or
 * cache. BF16 weights, and on the scalar level types without row kernels, are dequantized one row
 * at a time. Attention reads the paged KV cache a block at a time for a whole GQA group (cpu_attn).
 * Every op applies the same operations in the same order to a token whatever else shares its step
 * (tiles included), so a token's results are bit-identical whatever batch or chunk it runs in and
 * however many threads run it.
 *
 * KV cache layout, per layer, for K and for V separately, in kv_dtype (f16 or f32):
 *   K: (n_blocks, n_head_kv, head_dim, block_tokens): a head's keys in a block transposed,
 *   V: (n_blocks, n_head_kv, block_tokens, head_dim),
 * the layouts the attention kernels (cpu_attn) read a block at a time.
 */
#include "backend.h"
#include "gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/mman.h>
#include <unistd.h>

#include "cm_clock.h"
#include "cpu_attn.h"
#include "cpu_kernels.h"
#include "cpu_ops.h"
#include "cpu_panel.h"
#include "cpu_pool.h"

#define MAX_THREADS 256
/* Adaptive threads: forwards per window; waiting share that sheds a thread; windows at a
 * reduced count before trying one more thread again. */
#define ADAPT_WINDOW 32
#define ADAPT_SHED_RATIO 0.5
#define ADAPT_PROBE_WINDOWS 16
#define MM_PARTS 3
/* Buffers from this size up ask for transparent huge pages (alloc_stream). */
#define HUGE_BYTES ((size_t)2 << 20)
/* Granularity of matmul work items (rows); 16 f32 outputs fill a cache line. */
#define MM_CHUNK_ROWS 16
/* Chunks a one-token matmul's thread claims at once from its range: each claim costs a
 * compare-and-swap and a call per part, next to a 576-input panel's ~450 cycles of AVX2
 * arithmetic. Decode steps alternating with 1 and 4 in one process (2-vCPU Xeon, Emerald Rapids),
 * median of the pairs: Q4_1 3% / 5% faster (AVX2 / AVX-512), Q8_0 2% / 7%, Gemma 3 Q4_K_M 1% /
 * 4%; 8 and 16 no better than 4. Batched chunks are heavy enough alone. */
#define MM_RUN_CHUNKS 4
/* Tokens per tile in batched matmuls: keeps the quantized activations of a tile in L2. */
#define MM_TOKEN_TILE 32

/* What a matmul's quantized input needs besides xq (mm_prepare). */
#define NEED_PACK 1u /* be->xp: a part runs the packed tile kernels */
#define NEED_CORR 2u /* be->xc: a part runs Q8_0 or IQ4 panels */

/* A layer's weights repacked into panels (cpu_panel), NULL where not repacked. The expert
 * tensors' panels hold every expert's, expert e's at e * the tensor's expert stride. */
typedef struct layer_panels {
    const uint8_t *wq, *wk, *wv, *wo, *gate, *up, *down;
    const uint8_t *gate_exps, *up_exps, *down_exps;
    const uint8_t *gate_shexp, *up_shexp, *down_shexp;
} layer_panels;

typedef struct mm_range mm_range; /* a thread's share of a matmul's rows (mm_worker) */

/* The K/V blocks one thread's decode attention items will read, fetched a few lines after
 * each chunk of the qkv matmul before them (kv_fetch_step): kv heads g .. g_end - 1, keys
 * j .. n_keys - 1 of the K blocks (half 0), then of the V blocks (half 1). */
typedef struct kv_fetch {
    int g, g_end;
    int32_t j, n_keys;
    int half;
    int lines_per_chunk;
} kv_fetch;

/* The start of a worker's share of the next matmul's weights (fetch_ahead). */
typedef struct ahead_span {
    const uint8_t *p[MM_PARTS];
    size_t n[MM_PARTS];
} ahead_span;

/* The phases of a one-token forward the profile times, in their order in a layer. */
enum {
    PH_EMBED,     /* embedding and RoPE tables */
    PH_ATTN_NORM, /* attention norm, input quantized */
    PH_QKV,       /* q/k/v matmul */
    PH_ROPE_KV,   /* RoPE, K/V stored */
    PH_ATTN,      /* attention */
    PH_O_QUANT,   /* attention output quantized */
    PH_O,         /* output matmul (post-norm) */
    PH_FFN_NORM,  /* FFN norm, input quantized */
    PH_GATE_UP,   /* gate/up matmul (MoE: the routed FFN) */
    PH_ACT,       /* activation, quantized */
    PH_DOWN,      /* down matmul (post-norm) */
    PH_HEAD,      /* final norm, output head */
    PH_COUNT
};

_Static_assert(PH_COUNT <= WK_PHASES_MAX, "the profile reports every phase");

static const char *const phase_names[PH_COUNT] = {
    "embed",    "attn norm", "qkv matmul",     "rope + kv store", "attention",   "o quantize",
    "o matmul", "ffn norm",  "gate/up matmul", "activation",      "down matmul", "head",
};

struct wk_backend {
    const wk_model *model;
    wk_hparams hp;
    wk_backend_config cfg;
    wk_cpu_pool *pool;
    int n_threads;

    /* KV cache */
    bool kv_f16;
    size_t kv_elem;        /* bytes per element */
    size_t kv_block_elems; /* n_head_kv * block_tokens * head_dim */
    size_t kv_layer_bytes; /* n_blocks * kv_block_elems * kv_elem */
    uint8_t *k_cache;      /* (n_layer, n_blocks, n_head_kv, head_dim, block_tokens) */
    uint8_t *v_cache;      /* (n_layer, n_blocks, n_head_kv, block_tokens, head_dim) */
    int64_t max_ctx;       /* max_blocks_per_seq * block_tokens */

    /* scratch, sized at create for T = max_batch_tokens */
    int64_t max_in;    /* widest matmul input: max(n_embd, q_dim, n_ff) */
    float *x;          /* (T, n_embd) residual stream */
    float *xn;         /* (T, max_in) normed input / attention output / mlp hidden */
    float *q;          /* (T, q_dim) */
    float *k;          /* (T, kv_dim) */
    float *v;          /* (T, kv_dim) */
    float *gate;       /* (T, n_ff) */
    float *up;         /* (T, n_ff) */
    wk_cpu_q8 *xq;     /* (T, max_in / 32) */
    uint8_t *xp;       /* (T, wk_cpu_q8_packed_bytes(max_in)) xq packed for tile kernels */
    int32_t *xc;       /* (T, max_in / 32) wk_cpu_q8_corr of xq, for Q8_0/IQ4 panels */
    float *rope_cos;   /* (T, head_dim / 2) */
    float *rope_sin;   /* (T, head_dim / 2) */
    float *inv_freq;   /* (head_dim / 2) */
    int32_t *tok_seq;  /* (T) sequence of each token */
    float *final_x;    /* (max_seqs, n_embd) hidden of the tokens that want logits */
    uint32_t *out_row; /* (max_seqs) logits row of each of those */
    float *thr;        /* (n_threads, thr_floats) per-thread scratch */
    size_t thr_floats;
    mm_range *ranges;  /* (n_threads) the running matmul's work ranges */
    ahead_span *spans; /* (n_threads) what each worker fetches once its part is done */
    kv_fetch *kvf;     /* (n_threads) the K/V each thread fetches during a decode qkv matmul */

    /* family scratch, sized at create for T = max_batch_tokens; NULL where unused */
    float *rope_cos_swa; /* (T, head_dim / 2) sliding-window layers' RoPE when it differs */
    float *rope_sin_swa; /* (T, head_dim / 2)   from the global layers' (gemma3) */
    float *inv_freq_swa; /* (head_dim / 2) */
    float *tmp;          /* (T, n_embd) attention / FFN output before its post-norm (gemma),
                            an expert's output (MoE) */
    float *router;       /* (T, n_expert) router logits */
    int32_t *sel;        /* (T, n_expert_used) experts each token runs */
    float *sel_w;        /* (T, n_expert_used) their weights */
    int32_t *moe_tok;    /* (T) tokens routed to the expert being run */
    float *moe_w;        /* (T) their weights */
    float *moe_x;        /* (T, n_embd) normed inputs of those tokens, gathered */

    /* weights repacked at create for the panel kernels (one allocation) */
    uint8_t *pan_buf;
    size_t pan_bytes;
    layer_panels *lp;        /* (n_layer) */
    const uint8_t *pan_head; /* output head, or NULL */

    /* Adaptive thread count: when the owner keeps waiting for workers (cores shared with
     * other processes, workers descheduled mid-task), fewer threads are faster. Windows of
     * ADAPT_WINDOW forwards; results do not depend on the thread count. */
    bool adapt;
    int64_t win_fwd_ns, win_wait_ns;
    int win_n, probe_windows;

    /* the batch being run (valid during forward) */
    const wk_batch *batch;
    int cur_layer;

    /* decode profile (cpu_profile): time per phase of one-token forwards while prof is on */
    bool prof;
    bool prof_step; /* this forward is timed */
    int64_t prof_at;
    int64_t prof_ns[PH_COUNT];
    uint64_t prof_steps;
};

/* phase_end adds the time since the previous phase ended to phase ph of a timed forward. */
static inline void phase_end(wk_backend *be, int ph) {
    if (be->prof_step) {
        int64_t now = cm_clock_mono_ns();
        be->prof_ns[ph] += now - be->prof_at;
        be->prof_at = now;
    }
}

/* ---- matmul ------------------------------------------------------------------------------ */

static void for_tokens(wk_backend *be, int n_tok, void (*fn)(wk_backend *, int, void *), void *arg);
static void quantize_rows(wk_backend *be, int n_tok, int64_t n, unsigned need);

typedef struct mm_part {
    const wk_tensor *w; /* (rows = ne[1], in = ne[0]) */
    float *out;         /* token k's row at out + k * out_stride (or out_row mapping) */
    size_t out_stride;
    const float *bias;  /* optional (ne[1]) */
    const uint8_t *pan; /* w repacked into panels, or NULL */
    bool use_pan;       /* run the panel kernels (set by mm_prepare) */
    /* with use_pan, set by mm_prepare: the kernel and the bytes of one panel */
    wk_cpu_panel_fn pan_fn;
    size_t pan_bytes;
} mm_part;

/* A part of a matmul: y = W x into out (token k's row at out + k * out_stride), plus bias if
 * not NULL; pan: w in panels, or NULL (mm_prepare decides whether they run). */
static inline mm_part mm_part_of(const wk_tensor *w, float *out, size_t out_stride,
                                 const float *bias, const uint8_t *pan) {
    return (mm_part){.w = w, .out = out, .out_stride = out_stride, .bias = bias, .pan = pan};
}

typedef struct mm_task {
    wk_backend *be;
    int n_parts;
    mm_part parts[MM_PARTS];
    int64_t in;
    int n_tok;
    const float *x;      /* (n_tok, in) f32 input */
    const wk_cpu_q8 *xq; /* (n_tok, in / 32) quantized input (fused types) */
    const uint8_t *xp;   /* (n_tok, xp_stride) xq packed (set by matmul when needed) */
    size_t xp_stride;
    const int32_t *xc; /* (n_tok, in / 32) Q8_0 corrections of xq (set by matmul when needed) */
    /* What xq's preparation must add (NEED_*), set by mm_prepare; the caller quantizes x with
     * it (quant_pack) before matmul. */
    unsigned need;
    const uint32_t *out_row; /* optional: token k writes row out_row[k] of the output */
    bool accumulate;         /* out += W x instead of out = W x */
    int64_t total_rows;
    int n_ranges; /* threads given a share of the rows (matmul) */
    bool kv_side; /* each chunk is followed by a kv_fetch_step of its thread (decode qkv) */
    /* The next matmul's weights (mm_ahead), fetched once a thread's rows are done. */
    const uint8_t *ahead[MM_PARTS];
    size_t ahead_bytes[MM_PARTS];
} mm_task;

static inline float *out_ptr(const mm_task *t, const mm_part *p, int k) {
    size_t row = t->out_row != NULL ? t->out_row[k] : (size_t)k;
    return p->out + row * p->out_stride;
}

/* The last, partial panel of a part (rows r .. r1 - 1, fewer than 16): the kernel writes all
 * 16 rows to a buffer and only the real ones are applied, as a whole panel would be. */
static void panel_tail(const mm_task *t, const mm_part *p, wk_cpu_panel_fn kernel,
                       const uint8_t *pan, const wk_cpu_panel_in *in, int k0, int nk, int64_t r,
                       int64_t r1) {
    float y[WK_CPU_PANEL_ROWS * MM_TOKEN_TILE];
    float *op[MM_TOKEN_TILE];
    for (int k = 0; k < nk; k++) {
        op[k] = y + (size_t)k * WK_CPU_PANEL_ROWS;
    }
    wk_cpu_panel_out po = {.out = op, .bias = NULL, .accumulate = false};
    kernel(pan, in, nk, &po, t->in);
    for (int k = 0; k < nk; k++) {
        float *o = out_ptr(t, p, k0 + k);
        for (int64_t i = r; i < r1; i++) {
            float v = y[(size_t)k * WK_CPU_PANEL_ROWS + (size_t)(i - r)];
            v = t->accumulate ? o[i] + v : v;
            o[i] = p->bias != NULL ? v + p->bias[i] : v;
        }
    }
}

static void mm_rows(mm_task *t, const mm_part *p, int64_t r0, int64_t r1, float *scratch) {
    const wk_tensor *w = p->w;
    int64_t in = t->in;
    size_t xq_stride = (size_t)(in / WK_CPU_QK);
    if (p->use_pan) {
        /* 16-row panels against tiles of tokens; one token (decode) takes the same path */
        wk_cpu_panel_fn kernel = p->pan_fn;
        size_t pb = p->pan_bytes;
        float *op[MM_TOKEN_TILE];
        for (int k0 = 0; k0 < t->n_tok; k0 += MM_TOKEN_TILE) {
            int nk = t->n_tok - k0 < MM_TOKEN_TILE ? t->n_tok - k0 : MM_TOKEN_TILE;
            wk_cpu_panel_in pin = {
                .xq = t->xq + (size_t)k0 * xq_stride,
                .corr = t->xc != NULL ? t->xc + (size_t)k0 * xq_stride : NULL,
                .xq_stride = xq_stride,
                .xf = t->x + (size_t)k0 * (size_t)in, /* F16 panels */
                .xf_stride = (size_t)in,
            };
            for (int64_t r = r0; r < r1; r += WK_CPU_PANEL_ROWS) {
                const uint8_t *pan = p->pan + (size_t)(r / WK_CPU_PANEL_ROWS) * pb;
                if (r1 - r < WK_CPU_PANEL_ROWS) {
                    panel_tail(t, p, kernel, pan, &pin, k0, nk, r, r1);
                    continue;
                }
                for (int k = 0; k < nk; k++) {
                    op[k] = out_ptr(t, p, k0 + k) + r;
                }
                wk_cpu_panel_out po = {.out = op,
                                       .bias = p->bias != NULL ? p->bias + r : NULL,
                                       .accumulate = t->accumulate};
                kernel(pan, &pin, nk, &po, in);
            }
        }
        return;
    }
    size_t rb = wk_dtype_row_bytes(w->type, in);
    const uint8_t *wdata = w->data;
    bool fused = wk_cpu_fused_type(w->type);
    if (wk_cpu_packed_type(w->type)) {
        /* register tiles over tokens; one token (decode) takes the same path, so a token's
         * result never depends on the batch */
        wk_cpu_dot_q8p_fn dotp = wk_cpu_dot_q8p_kernel(w->type);
        if (t->n_tok == 1) { /* decode: a tight loop over rows */
            float *o = out_ptr(t, p, 0);
            for (int64_t r = r0; r < r1; r++) {
                float y;
                dotp(wdata + (size_t)r * rb, t->xp, t->xp_stride, 1, &y, 1, in);
                float b = p->bias != NULL ? p->bias[r] : 0.0f;
                o[r] = t->accumulate ? o[r] + y + b : y + b;
            }
            return;
        }
        float y[MM_TOKEN_TILE];
        for (int k0 = 0; k0 < t->n_tok; k0 += MM_TOKEN_TILE) {
            int nk = t->n_tok - k0 < MM_TOKEN_TILE ? t->n_tok - k0 : MM_TOKEN_TILE;
            const uint8_t *xk = t->xp + (size_t)k0 * t->xp_stride;
            for (int64_t r = r0; r < r1; r++) {
                dotp(wdata + (size_t)r * rb, xk, t->xp_stride, nk, y, 1, in);
                float b = p->bias != NULL ? p->bias[r] : 0.0f;
                for (int k = 0; k < nk; k++) {
                    float *o = out_ptr(t, p, k0 + k) + r;
                    *o = t->accumulate ? *o + y[k] + b : y[k] + b;
                }
            }
        }
        return;
    }
    if (fused && t->n_tok == 1) {
        /* decode: one token, a tight loop over rows with the kernel resolved once */
        wk_cpu_dot_q8_fn dot = wk_cpu_dot_q8_kernel(w->type);
        float *o = out_ptr(t, p, 0);
        for (int64_t r = r0; r < r1; r++) {
            float y = dot(wdata + (size_t)r * rb, t->xq, in);
            float b = p->bias != NULL ? p->bias[r] : 0.0f;
            o[r] = t->accumulate ? o[r] + y + b : y + b;
        }
        return;
    }
    float y[MM_TOKEN_TILE];
    for (int k0 = 0; k0 < t->n_tok; k0 += MM_TOKEN_TILE) {
        int nk = t->n_tok - k0 < MM_TOKEN_TILE ? t->n_tok - k0 : MM_TOKEN_TILE;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = wdata + (size_t)r * rb;
            if (fused) {
                /* the row stays in L1 while every token of the tile uses it */
                wk_cpu_dot_q8_multi(w->type, row, t->xq + (size_t)k0 * xq_stride, xq_stride, nk, y,
                                    1, in);
            } else {
                const float *rowf;
                if (w->type == WK_DTYPE_F32) {
                    rowf = (const float *)row;
                } else if (w->type == WK_DTYPE_F16) {
                    wk_cpu_f16_to_f32_row((const uint16_t *)row, scratch, in);
                    rowf = scratch;
                } else {
                    wk_dequantize_row(w->type, row, scratch, in);
                    rowf = scratch;
                }
                for (int k = 0; k < nk; k++) {
                    y[k] = wk_cpu_dot_f32(rowf, t->x + (size_t)(k0 + k) * (size_t)in, in);
                }
            }
            float b = p->bias != NULL ? p->bias[r] : 0.0f;
            for (int k = 0; k < nk; k++) {
                float *o = out_ptr(t, p, k0 + k) + r;
                *o = t->accumulate ? *o + y[k] + b : y[k] + b;
            }
        }
    }
}

/*
 * Work distribution of a matmul: its rows are cut into chunks of MM_CHUNK_ROWS and the chunks
 * into one contiguous range per thread. A thread walks its own range from the front, a few
 * chunks at a time (MM_RUN_CHUNKS), so its weights stream in as one sequential read that the
 * hardware prefetchers follow across the whole range (items scattered over the rows restart the
 * stream at every item: about 20% of a decode token at the same bandwidth). A thread whose range is
 * done takes the back half of what is left of the fullest range and walks that. A range is one word
 * (hi << 32 | lo, in chunks) changed only by compare-and-swap, so a chunk is claimed once whoever
 * claims it, and a thread that never joins the task leaves its range to the others.
 */
struct mm_range {
    _Alignas(64) _Atomic uint64_t v; /* a cache line each: the owner's claims stay local */
};

static inline uint32_t range_lo(uint64_t v) {
    return (uint32_t)v;
}

static inline uint32_t range_hi(uint64_t v) {
    return (uint32_t)(v >> 32);
}

static inline uint64_t range_of(uint32_t lo, uint32_t hi) {
    return (uint64_t)hi << 32 | lo;
}

/* Claims the front chunks of r, at most max of them: the first into *c, how many into *n;
 * false when r is empty. */
static bool range_take_front(mm_range *r, uint32_t max, uint32_t *c, uint32_t *n) {
    uint64_t v = atomic_load_explicit(&r->v, memory_order_relaxed);
    while (range_lo(v) < range_hi(v)) {
        uint32_t k = range_hi(v) - range_lo(v) < max ? range_hi(v) - range_lo(v) : max;
        if (atomic_compare_exchange_weak_explicit(&r->v, &v, range_of(range_lo(v) + k, range_hi(v)),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            *c = range_lo(v);
            *n = k;
            return true;
        }
    }
    return false;
}

/* Moves the back half of the fullest range other than own into own (empty); false when no
 * chunk is left anywhere. */
static bool range_steal(mm_range *ranges, int n_ranges, mm_range *own) {
    for (;;) {
        mm_range *victim = NULL;
        uint64_t vv = 0;
        uint32_t most = 0;
        for (int i = 0; i < n_ranges; i++) {
            uint64_t v = atomic_load_explicit(&ranges[i].v, memory_order_relaxed);
            uint32_t left = range_hi(v) > range_lo(v) ? range_hi(v) - range_lo(v) : 0;
            if (&ranges[i] != own && left > most) {
                victim = &ranges[i];
                vv = v;
                most = left;
            }
        }
        if (victim == NULL) {
            return false;
        }
        uint32_t mid = range_hi(vv) - (most + 1) / 2;
        if (atomic_compare_exchange_strong_explicit(&victim->v, &vv, range_of(range_lo(vv), mid),
                                                    memory_order_relaxed, memory_order_relaxed)) {
            atomic_store_explicit(&own->v, range_of(mid, range_hi(vv)), memory_order_relaxed);
            return true;
        }
    }
}

/* Weights a decode matmul's workers fetch when their rows are done: the start of each
 * worker's share of the next matmul's weights (the bytes cut as the rows are), so the memory
 * stream goes on through the serial work and attention between the two matmuls instead of
 * restarting from idle at the next one. A worker fetches after it has told the owner it is
 * done (the pool's after hook), so nobody waits for the hints; the owner fetches nothing, as
 * it goes straight on to the serial work, which waits on memory itself. Decode tokens
 * alternating in one process, 2-vCPU EPYC: the owner fetching 16-48 KiB too, no faster (1-3%
 * slower at 48 KiB before the worker fetched 256); workers fetching 256 KiB (about a whole
 * share of this model's matmuls) 2-3% faster than 48 KiB at both levels, 512 KiB 1.5%. */
#define AHEAD_BYTES ((size_t)256 << 10)

/* t's next matmul reads parts (w, pan) for i < n: where a part's panels are NULL it reads
 * the weight in GGUF layout. */
static void mm_ahead(mm_task *t, const wk_tensor *const *w, const uint8_t *const *pan, int n) {
    for (int i = 0; i < n && i < MM_PARTS; i++) {
        t->ahead[i] = pan[i] != NULL ? pan[i] : w[i]->data;
        t->ahead_bytes[i] = pan[i] != NULL
                                ? wk_cpu_panel_bytes(w[i]->type, w[i]->ne[1], w[i]->ne[0])
                                : w[i]->nbytes;
    }
}

/* Prefetch hints (never fault) for the lines of [p, p + n): to read from L1, to read from L2,
 * to read a while later (prefetcht2: measured better than L2's for lines wanted microseconds
 * on), or to be written (into L2). */
typedef enum prefetch_kind { PF_READ_L1, PF_READ_L2, PF_READ_FAR, PF_WRITE_L2 } prefetch_kind;

static inline void prefetch_range(const void *p, size_t n, prefetch_kind kind) {
    const char *c = p;
    for (size_t o = 0; o < n; o += 64) {
        if (kind == PF_READ_L1) {
            __builtin_prefetch(c + o, 0, 3);
        } else if (kind == PF_READ_L2) {
            __builtin_prefetch(c + o, 0, 2);
        } else if (kind == PF_READ_FAR) {
            __builtin_prefetch(c + o, 0, 1);
        } else {
            __builtin_prefetch(c + o, 1, 2);
        }
    }
}

/* Sets sp to worker tid's share of t's next matmul, AHEAD_BYTES of it. */
static void fetch_ahead(const mm_task *t, int tid, ahead_span *sp) {
    *sp = (ahead_span){0};
    if (tid >= t->n_ranges || t->ahead[0] == NULL) {
        return;
    }
    size_t total = 0;
    for (int i = 0; i < MM_PARTS && t->ahead[i] != NULL; i++) {
        total += t->ahead_bytes[i];
    }
    /* this thread's share starts at byte total * tid / n of the parts laid end to end */
    size_t at = total / (size_t)t->n_ranges * (size_t)tid, left = AHEAD_BYTES;
    for (int i = 0, k = 0; i < MM_PARTS && t->ahead[i] != NULL && left > 0; i++) {
        if (at >= t->ahead_bytes[i]) {
            at -= t->ahead_bytes[i];
            continue;
        }
        size_t n = t->ahead_bytes[i] - at < left ? t->ahead_bytes[i] - at : left;
        sp->p[k] = t->ahead[i] + at;
        sp->n[k++] = n;
        left -= n;
        at = 0;
    }
}

/* The pool's after hook: worker tid fetches the span its last matmul left (if any). */
static void after_task(void *ctx, int tid, int n_threads) {
    (void)n_threads;
    ahead_span *sp = &((wk_backend *)ctx)->spans[tid];
    for (int k = 0; k < MM_PARTS && sp->p[k] != NULL; k++) {
        prefetch_range(sp->p[k], sp->n[k], PF_READ_L2);
    }
    *sp = (ahead_span){0};
}

static void kv_fetch_step(const wk_backend *be, kv_fetch *f);

static void mm_worker(void *ctx, int tid, int n_threads) {
    mm_task *t = ctx;
    (void)n_threads;
    wk_backend *be = t->be;
    float *scratch = be->thr + (size_t)tid * be->thr_floats;
    mm_range *own = &be->ranges[tid];
    uint32_t run = t->n_tok == 1 ? MM_RUN_CHUNKS : 1, c, n;
    while (range_take_front(own, run, &c, &n) ||
           (range_steal(be->ranges, be->n_threads, own) && range_take_front(own, run, &c, &n))) {
        /* map the chunks' global rows onto the concatenated parts */
        int64_t g0 = (int64_t)c * MM_CHUNK_ROWS, g1 = g0 + (int64_t)n * MM_CHUNK_ROWS;
        g1 = g1 < t->total_rows ? g1 : t->total_rows;
        int64_t base = 0;
        for (int i = 0; i < t->n_parts && g0 < g1; i++) {
            int64_t rows = t->parts[i].w->ne[1];
            if (g0 < base + rows) {
                int64_t e = g1 < base + rows ? g1 : base + rows;
                mm_rows(t, &t->parts[i], g0 - base, e - base, scratch);
                g0 = e;
            }
            base += rows;
        }
        for (uint32_t i = 0; t->kv_side && i < n; i++) {
            kv_fetch_step(be, &be->kvf[tid]);
        }
    }
    if (tid > 0) {
        fetch_ahead(t, tid, &be->spans[tid]);
    }
}

/* Decides which parts run the panel kernels and returns what the quantized input needs
 * besides xq (NEED_*). A part's panels are used when the level has the kernels and the part
 * starts on a panel boundary of the task's rows (work items are multiples of 16 rows, so every
 * item of the part then starts on a panel; only the part's last panel may be partial). */
static unsigned mm_prepare(mm_task *t) {
    unsigned need = 0;
    int64_t base = 0;
    for (int i = 0; i < t->n_parts; i++) {
        mm_part *p = &t->parts[i];
        p->use_pan =
            p->pan != NULL && wk_cpu_panel_type(p->w->type) && base % WK_CPU_PANEL_ROWS == 0;
        if (p->use_pan) {
            p->pan_fn = wk_cpu_panel_kernel(p->w->type);
            p->pan_bytes = wk_cpu_panel_bytes(p->w->type, WK_CPU_PANEL_ROWS, p->w->ne[0]);
        }
        if (p->use_pan && wk_cpu_panel_needs_corr(p->w->type)) {
            need |= NEED_CORR;
        } else if (!p->use_pan && wk_cpu_packed_type(p->w->type)) {
            need |= NEED_PACK;
        }
        base += p->w->ne[1];
    }
    t->need = need;
    return need;
}

/* Thread i's contiguous share [*lo, *hi) of n items cut among active threads (empty for
 * i >= active). */
static void share_of(int64_t n, int i, int active, int64_t *lo, int64_t *hi) {
    *lo = i < active ? n * i / active : 0;
    *hi = i < active ? n * (i + 1) / active : 0;
}

/* Cuts n items into one contiguous range per thread expected to run a task (share_of; the
 * rest start by taking from these); returns how many got one. */
static int set_ranges(wk_backend *be, int64_t n) {
    int active = wk_cpu_pool_active(be->pool);
    for (int i = 0; i < be->n_threads; i++) {
        int64_t lo, hi;
        share_of(n, i, active, &lo, &hi);
        atomic_store_explicit(&be->ranges[i].v, range_of((uint32_t)lo, (uint32_t)hi),
                              memory_order_relaxed);
    }
    return active;
}

/* The rows of t's parts laid end to end. */
static int64_t task_rows(const mm_task *t) {
    int64_t rows = 0;
    for (int i = 0; i < t->n_parts; i++) {
        rows += t->parts[i].w->ne[1];
    }
    return rows;
}

/* Runs y_i = W_i x for up to MM_PARTS weights sharing the input x: (n_tok, in). mm_prepare
 * must have run on t, and xq must hold x quantized and prepared as it asked (quant_pack). */
static void matmul(wk_backend *be, mm_task *t) {
    t->be = be;
    t->total_rows = task_rows(t);
    unsigned need = t->need;
    bool packed = (need & NEED_PACK) != 0;
    t->xp = packed ? be->xp : NULL;
    t->xp_stride = wk_cpu_q8_packed_bytes(t->in);
    t->xc = (need & NEED_CORR) != 0 ? be->xc : NULL;
    t->n_ranges = set_ranges(be, (t->total_rows + MM_CHUNK_ROWS - 1) / MM_CHUNK_ROWS);
    wk_cpu_pool_run(be->pool, mm_worker, t);
}

/* ---- per-token helpers --------------------------------------------------------------------- */

typedef struct tok_task {
    wk_backend *be;
    void (*fn)(wk_backend *be, int tok, void *arg);
    void *arg;
    int n_tok;
    atomic_int next;
} tok_task;

static void tok_worker(void *ctx, int tid, int n_threads) {
    tok_task *t = ctx;
    (void)tid;
    (void)n_threads;
    for (;;) {
        int i = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (i >= t->n_tok) {
            return;
        }
        t->fn(t->be, i, t->arg);
    }
}

/* Runs fn for items 0 .. n - 1 on the pool's threads. */
static void for_items(wk_backend *be, int n, void (*fn)(wk_backend *, int, void *), void *arg) {
    tok_task t = {.be = be, .fn = fn, .arg = arg, .n_tok = n};
    atomic_init(&t.next, 0);
    wk_cpu_pool_run(be->pool, tok_worker, &t);
}

/* Runs fn for every token, in parallel when the batch is big enough to pay for it. */
static void for_tokens(wk_backend *be, int n_tok, void (*fn)(wk_backend *, int, void *),
                       void *arg) {
    if (n_tok < 4) {
        for (int i = 0; i < n_tok; i++) {
            fn(be, i, arg);
        }
        return;
    }
    for_items(be, n_tok, fn, arg);
}

/* Quantizes x: (n) as token t's row of be->xq and prepares it as the next matmul needs
 * (mm_prepare): packed into be->xp (NEED_PACK), Q8_0/IQ4 panel corrections into be->xc
 * (NEED_CORR); in the same parallel task, saving a fork-join. */
static void quant_pack(wk_backend *be, const float *x, int t, int64_t n, unsigned need) {
    wk_cpu_q8 *q = be->xq + (size_t)t * (size_t)(n / WK_CPU_QK);
    wk_cpu_quantize_q8(x, q, n);
    if ((need & NEED_PACK) != 0) {
        wk_cpu_pack_q8(q, n, be->xp + (size_t)t * wk_cpu_q8_packed_bytes(n));
    }
    if ((need & NEED_CORR) != 0) {
        wk_cpu_q8_corr(q, be->xc + (size_t)t * (size_t)(n / WK_CPU_QK), n / WK_CPU_QK);
    }
}

typedef struct norm_arg {
    const float *src; /* (n_tok, n) */
    float *dst;       /* (n_tok, n) */
    const float *w;   /* (n) */
    int64_t n;
    unsigned need; /* what the next matmul needs (mm_prepare) */
} norm_arg;

static void norm_tok(wk_backend *be, int t, void *arg) {
    norm_arg *a = arg;
    float *d = a->dst + (size_t)t * (size_t)a->n;
    wk_cpu_rmsnorm(d, a->src + (size_t)t * (size_t)a->n, a->w, a->n, be->hp.rms_eps);
    quant_pack(be, d, t, a->n, a->need);
}

typedef struct act_arg {
    int64_t n; /* FFN width: the row stride of be->gate and be->up */
    unsigned need;
} act_arg;

/* gate = act(gate) * up for token t's row, quantized for the down matmul. */
static void act_tok(wk_backend *be, int t, void *arg) {
    const act_arg *a = arg;
    float *g = be->gate + (size_t)t * (size_t)a->n;
    const float *u = be->up + (size_t)t * (size_t)a->n;
    if (be->hp.ffn_act == WK_FFN_GELU_TANH) {
        wk_cpu_gelu_mul(g, g, u, a->n);
    } else {
        wk_cpu_silu_mul(g, g, u, a->n);
    }
    quant_pack(be, g, t, a->n, a->need);
}

/* Post-norm (gemma): x += rmsnorm(tmp) * w for token t; arg is w: (n_embd). */
static void post_norm_add_tok(wk_backend *be, int t, void *arg) {
    int64_t n = be->hp.n_embd;
    float *o = be->tmp + (size_t)t * (size_t)n;
    float *x = be->x + (size_t)t * (size_t)n;
    wk_cpu_rmsnorm(o, o, arg, n, be->hp.rms_eps);
    for (int64_t i = 0; i < n; i++) {
        x[i] += o[i];
    }
}

typedef struct quant_arg {
    int64_t n;
    unsigned need;
} quant_arg;

static void quant_tok(wk_backend *be, int t, void *arg) {
    const quant_arg *a = arg;
    quant_pack(be, be->xn + (size_t)t * (size_t)a->n, t, a->n, a->need);
}

/* Sequence s's row of the running batch's block table. */
static inline const int32_t *seq_blocks(const wk_backend *be, int s) {
    return be->batch->block_table + (size_t)s * be->cfg.max_blocks_per_seq;
}

/* The (block_tokens x head_dim) elements of one head in one block of a layer's K or V. */
static inline uint8_t *kv_block_ptr(const wk_backend *be, uint8_t *cache, int layer, int32_t block,
                                    int head) {
    size_t hd = be->hp.head_dim, bt = be->cfg.block_tokens;
    size_t el = ((size_t)block * be->hp.n_head_kv + (size_t)head) * bt * hd;
    return cache + (size_t)layer * be->kv_layer_bytes + el * be->kv_elem;
}

static void rope_rows(wk_backend *be, float *x, int n_heads, int t) {
    int hd = (int)be->hp.head_dim, half = hd / 2;
    bool own = be->rope_cos_swa != NULL && wk_hparams_layer_swa(&be->hp, (uint32_t)be->cur_layer);
    const float *c = (own ? be->rope_cos_swa : be->rope_cos) + (size_t)t * (size_t)half;
    const float *s = (own ? be->rope_sin_swa : be->rope_sin) + (size_t)t * (size_t)half;
    bool neox = be->hp.rope_style == WK_ROPE_NEOX;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * (size_t)hd;
        for (int i = 0; i < half; i++) {
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * c[i] - x1 * s[i];
            v[b] = x0 * s[i] + x1 * c[i];
        }
    }
}

/* Fetches f's next lines_per_chunk lines (whole blocks of one head and half at a time). */
static void kv_fetch_step(const wk_backend *be, kv_fetch *f) {
    int32_t bt = (int32_t)be->cfg.block_tokens;
    const int32_t *tab = seq_blocks(be, be->tok_seq[0]);
    size_t key_bytes = be->hp.head_dim * be->kv_elem;
    int64_t left = f->lines_per_chunk;
    while (left > 0 && f->g < f->g_end) {
        if (f->j >= f->n_keys) {
            f->j = 0;
            f->g += f->half;
            f->half ^= 1;
            continue;
        }
        int32_t n = f->n_keys - f->j < bt ? f->n_keys - f->j : bt;
        uint8_t *cache = f->half == 0 ? be->k_cache : be->v_cache;
        prefetch_range(kv_block_ptr(be, cache, be->cur_layer, tab[f->j / bt], f->g),
                       (size_t)n * key_bytes, PF_READ_FAR);
        left -= ((int64_t)n * (int64_t)key_bytes + 63) / 64;
        f->j += bt;
    }
}

/*
 * Decode attention reads the sequence's K/V blocks of the layer, which the weights streamed
 * since the last token have evicted: waiting for them cost about half of its time. Each
 * thread's items are its contiguous share of them (attn_worker with ranges, as a matmul's
 * rows), so the thread knows their kv heads before the qkv matmul and fetches their blocks
 * (the keys before the token's own) a few lines after each chunk of its qkv rows, spread over
 * its share (2-vCPU EPYC, decode tokens alternating in one process: 2% faster at ~100 keys).
 * Sets kv_side on qkv.
 */
#define KV_FETCH_MAX ((size_t)256 << 10)

static void kv_fetch_plan(wk_backend *be, mm_task *qkv, int n_items, int per_item) {
    int active = wk_cpu_pool_active(be->pool);
    int group = (int)(be->hp.n_head / be->hp.n_head_kv);
    int64_t chunks = (task_rows(qkv) + MM_CHUNK_ROWS - 1) / MM_CHUNK_ROWS;
    int32_t n_keys = be->batch->positions[0];
    size_t key_bytes = be->hp.head_dim * be->kv_elem;
    for (int i = 0; i < be->n_threads; i++) {
        kv_fetch *f = &be->kvf[i];
        *f = (kv_fetch){0};
        int64_t lo, hi; /* the items set_ranges will give thread i */
        share_of(n_items, i, active, &lo, &hi);
        if (hi <= lo) {
            continue;
        }
        f->g = (int)(lo * per_item / group);
        f->g_end = (int)((hi * per_item - 1) / group + 1);
        /* the first keys only where all would not stay in L2 until the attention */
        size_t per_key = (size_t)(f->g_end - f->g) * 2 * key_bytes;
        f->n_keys =
            (size_t)n_keys * per_key <= KV_FETCH_MAX ? n_keys : (int32_t)(KV_FETCH_MAX / per_key);
        int64_t lines = (int64_t)f->n_keys * (int64_t)per_key / 64;
        f->lines_per_chunk = (int)(lines / (chunks / active + 1) + 1);
    }
    qkv->kv_side = true;
}

/* Decode (one token): asks for the K/V lines the token's store after the qkv matmul writes (its
 * K column touches every line of each K head's block), so the serial work between two matmuls,
 * which the other threads wait for, does not wait on memory (the next norm's weights are asked
 * for the same way). Called by the owner right before its share of the matmul. */
static void fetch_for_store(const wk_backend *be) {
    const wk_batch *b = be->batch;
    size_t hd = be->hp.head_dim, bt = be->cfg.block_tokens;
    int32_t pos = b->positions[0];
    int32_t block = seq_blocks(be, be->tok_seq[0])[(size_t)pos / bt];
    for (uint32_t h = 0; h < be->hp.n_head_kv; h++) {
        const uint8_t *k = kv_block_ptr(be, be->k_cache, be->cur_layer, block, (int)h);
        const uint8_t *v = kv_block_ptr(be, be->v_cache, be->cur_layer, block, (int)h) +
                           (size_t)(pos % (int32_t)bt) * hd * be->kv_elem;
        prefetch_range(k, hd * bt * be->kv_elem, PF_WRITE_L2);
        prefetch_range(v, hd * be->kv_elem, PF_WRITE_L2);
    }
}

/* RoPE on q and k of token t, then store k and v into the cache at the token's slot. */
static void rope_store_tok(wk_backend *be, int t, void *arg) {
    (void)arg;
    const wk_hparams *hp = &be->hp;
    size_t q_dim = (size_t)hp->n_head * hp->head_dim, kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    float *q = be->q + (size_t)t * q_dim;
    float *k = be->k + (size_t)t * kv_dim;
    const float *v = be->v + (size_t)t * kv_dim;
    if (hp->qk_norm) {
        /* per-head RMSNorm with one weight vector shared by the heads, before RoPE */
        const wk_layer *L = &be->model->layers[be->cur_layer];
        size_t hd = hp->head_dim;
        for (uint32_t h = 0; h < hp->n_head; h++) {
            wk_cpu_rmsnorm(q + h * hd, q + h * hd, L->q_norm.data, (int64_t)hd, hp->rms_eps);
        }
        for (uint32_t h = 0; h < hp->n_head_kv; h++) {
            wk_cpu_rmsnorm(k + h * hd, k + h * hd, L->k_norm.data, (int64_t)hd, hp->rms_eps);
        }
    }
    rope_rows(be, q, (int)hp->n_head, t);
    rope_rows(be, k, (int)hp->n_head_kv, t);
    const wk_batch *b = be->batch;
    int s = be->tok_seq[t];
    int32_t pos = b->positions[t];
    int32_t block = seq_blocks(be, s)[(size_t)pos / be->cfg.block_tokens];
    int slot = (int)((uint32_t)pos % be->cfg.block_tokens);
    size_t hd = hp->head_dim, bt = be->cfg.block_tokens;
    uint16_t kh[1024]; /* head_dim <= 1024 (cpu_create) */
    for (uint32_t h = 0; h < hp->n_head_kv; h++) {
        uint8_t *kd = kv_block_ptr(be, be->k_cache, be->cur_layer, block, (int)h);
        uint8_t *vd = kv_block_ptr(be, be->v_cache, be->cur_layer, block, (int)h) +
                      (size_t)slot * hd * be->kv_elem;
        const float *ks = k + (size_t)h * hd, *vs = v + (size_t)h * hd;
        /* K goes in column slot of the transposed block */
        if (be->kv_f16) {
            wk_cpu_f32_to_f16_row(ks, kh, (int64_t)hd);
            for (size_t d = 0; d < hd; d++) {
                ((uint16_t *)kd)[d * bt + (size_t)slot] = kh[d];
            }
            wk_cpu_f32_to_f16_row(vs, (uint16_t *)vd, (int64_t)hd);
        } else {
            for (size_t d = 0; d < hd; d++) {
                ((float *)kd)[d * bt + (size_t)slot] = ks[d];
            }
            memcpy(vd, vs, hd * sizeof(float));
        }
    }
}

/* ---- mixture of experts ---------------------------------------------------------------------- */

/* Top-k routing of token t: softmax over the router logits, the n_expert_used most probable
 * experts (ties to the lower index), their probabilities renormalized when expert_norm. */
static void route_tok(wk_backend *be, int t, void *arg) {
    (void)arg;
    const wk_hparams *hp = &be->hp;
    int ne = (int)hp->n_expert, k = (int)hp->n_expert_used;
    float *p = be->router + (size_t)t * (size_t)ne;
    wk_cpu_softmax(p, ne);
    int32_t *sel = be->sel + (size_t)t * (size_t)k;
    float *w = be->sel_w + (size_t)t * (size_t)k;
    float sum = 0.0f;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < ne; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++) {
                taken = taken || sel[i] == e;
            }
            if (!taken && (best < 0 || p[e] > p[best])) {
                best = e;
            }
        }
        sel[j] = best;
        w[j] = p[best];
        sum += p[best];
    }
    if (hp->expert_norm) {
        for (int j = 0; j < k; j++) {
            w[j] /= sum;
        }
    }
}

typedef struct gather_arg {
    int64_t n;
    unsigned need;
} gather_arg;

/* Row t of the expert's batch: the normed input of token moe_tok[t], copied and quantized. */
static void gather_tok(wk_backend *be, int t, void *arg) {
    const gather_arg *a = arg;
    float *dst = be->moe_x + (size_t)t * (size_t)a->n;
    memcpy(dst, be->xn + (size_t)be->moe_tok[t] * (size_t)a->n, (size_t)a->n * sizeof(float));
    quant_pack(be, dst, t, a->n, a->need);
}

/* One expert's three matrices (views into the expert tensors, or the shared expert's) and
 * their panels (NULL where not repacked). */
typedef struct expert_w {
    wk_tensor gate, up, down;
    const uint8_t *gate_pan, *up_pan, *down_pan;
} expert_w;

/* Bytes one expert's panels of the (ne[2] experts, ne[1] rows, ne[0] cols) weight t take, a
 * multiple of 64 (each expert's panels start aligned); 0 when t is not repacked. */
static size_t expert_panel_stride(const wk_tensor *t) {
    if (t->data == NULL || !wk_cpu_panel_type(t->type) ||
        !wk_cpu_panel_packable(t->type, t->ne[1], t->ne[0])) {
        return 0;
    }
    return (wk_cpu_panel_bytes(t->type, t->ne[1], t->ne[0]) + 63) & ~(size_t)63;
}

static const uint8_t *expert_panels(const uint8_t *pan, const wk_tensor *t, uint32_t e) {
    return pan != NULL ? pan + (size_t)e * expert_panel_stride(t) : NULL;
}

/* Expert e of layer L with its panels. */
static expert_w expert_of(const layer_panels *lp, const wk_layer *L, uint32_t e) {
    return (expert_w){
        .gate = wk_expert_view(&L->gate_exps, e),
        .up = wk_expert_view(&L->up_exps, e),
        .down = wk_expert_view(&L->down_exps, e),
        .gate_pan = expert_panels(lp->gate_exps, &L->gate_exps, e),
        .up_pan = expert_panels(lp->up_exps, &L->up_exps, e),
        .down_pan = expert_panels(lp->down_exps, &L->down_exps, e),
    };
}

/* FFN of one expert, y = down(act(gate x) * up x), over n rows into out (row stride n_embd):
 * the tokens listed in moe_tok (gathered), or every token of xn (the shared expert). Experts
 * run the panel kernels as dense weights do, one token or many, so a token's result does not
 * depend on how many others chose the same expert. */
static void expert_ffn(wk_backend *be, const expert_w *x, int n, bool gathered, float *out) {
    int64_t embd = be->hp.n_embd, ff = x->gate.ne[1];
    mm_task gu = {
        .n_parts = 2, .in = embd, .n_tok = n, .x = gathered ? be->moe_x : be->xn, .xq = be->xq};
    gu.parts[0] = mm_part_of(&x->gate, be->gate, (size_t)ff, NULL, x->gate_pan);
    gu.parts[1] = mm_part_of(&x->up, be->up, (size_t)ff, NULL, x->up_pan);
    gather_arg ga = {embd, mm_prepare(&gu)};
    if (gathered) {
        for_tokens(be, n, gather_tok, &ga);
    } else {
        quantize_rows(be, n, embd, ga.need);
    }
    matmul(be, &gu);
    mm_task dn = {.n_parts = 1, .in = ff, .n_tok = n, .x = be->gate, .xq = be->xq};
    dn.parts[0] = mm_part_of(&x->down, out, (size_t)embd, NULL, x->down_pan);
    act_arg aa = {ff, mm_prepare(&dn)};
    for_tokens(be, n, act_tok, &aa);
    matmul(be, &dn);
}

/* The MoE FFN of layer L on every token: xn holds the normed inputs; adds to x. Experts run
 * one after another over the tokens routed to them (gathered), so a token's result does not
 * depend on the other tokens of the batch. */
static void moe_ffn(wk_backend *be, const wk_layer *L, const layer_panels *lp, int n_tok) {
    const wk_hparams *hp = &be->hp;
    int64_t embd = hp->n_embd;
    int ne = (int)hp->n_expert, k = (int)hp->n_expert_used;
    mm_task rt = {.n_parts = 1, .in = embd, .n_tok = n_tok, .x = be->xn, .xq = be->xq};
    rt.parts[0] = mm_part_of(&L->gate_inp, be->router, (size_t)ne, NULL, NULL);
    quantize_rows(be, n_tok, embd, mm_prepare(&rt));
    matmul(be, &rt);
    for_tokens(be, n_tok, route_tok, NULL);

    for (int e = 0; e < ne; e++) {
        int n = 0;
        for (int t = 0; t < n_tok; t++) {
            for (int j = 0; j < k; j++) {
                if (be->sel[(size_t)t * (size_t)k + (size_t)j] == e) {
                    be->moe_tok[n] = t;
                    be->moe_w[n] = be->sel_w[(size_t)t * (size_t)k + (size_t)j];
                    n++;
                }
            }
        }
        if (n == 0) {
            continue;
        }
        expert_w xw = expert_of(lp, L, (uint32_t)e);
        expert_ffn(be, &xw, n, true, be->tmp);
        for (int i = 0; i < n; i++) {
            wk_cpu_axpy_f32(be->x + (size_t)be->moe_tok[i] * (size_t)embd, be->moe_w[i],
                            be->tmp + (size_t)i * (size_t)embd, embd);
        }
    }
    if (hp->n_ff_shexp > 0) {
        /* shared expert on every token, scaled by sigmoid(gate_inp_shexp . x) */
        expert_w sh = {L->gate_shexp,  L->up_shexp,  L->down_shexp,
                       lp->gate_shexp, lp->up_shexp, lp->down_shexp};
        expert_ffn(be, &sh, n_tok, false, be->tmp);
        for (int t = 0; t < n_tok; t++) {
            const float *xt = be->xn + (size_t)t * (size_t)embd;
            float z = wk_cpu_dot_f32(L->gate_inp_shexp.data, xt, embd);
            wk_cpu_axpy_f32(be->x + (size_t)t * (size_t)embd, 1.0f / (1.0f + expf(-z)),
                            be->tmp + (size_t)t * (size_t)embd, embd);
        }
    }
}

/* ---- attention ----------------------------------------------------------------------------- */

typedef struct attn_task {
    wk_backend *be;
    int n_items;  /* n_tok * n_head / per_item */
    int per_item; /* query heads per item: the whole GQA group, or 1 (small batches) */
    atomic_int next;
    bool ranged; /* items claimed from be->ranges (set_ranges) instead of next */
} attn_task;

/* One item: per_item query heads of one token (a whole GQA group, whose K/V stay in cache
 * from one head to the next, or a single head when there are too few items to keep every
 * thread busy) attend over positions [0, pos] of the token's sequence. Each head's arithmetic
 * is the same either way. Output goes to xn (T, q_dim). */
static void attn_item(wk_backend *be, int item, int per_item, float *scores) {
    const wk_hparams *hp = &be->hp;
    int hd = (int)hp->head_dim;
    int group = (int)(hp->n_head / hp->n_head_kv);
    int items_per_tok = (int)hp->n_head / per_item;
    int t = item / items_per_tok, h0 = (item % items_per_tok) * per_item;
    const wk_batch *b = be->batch;
    int s = be->tok_seq[t];
    int32_t pos = b->positions[t];
    int64_t n_ctx = (int64_t)pos + 1;
    const int32_t *bt = seq_blocks(be, s);
    uint32_t bsz = be->cfg.block_tokens;
    size_t q_dim = (size_t)hp->n_head * (size_t)hd;
    float scale = hp->attn_scale > 0.0f ? hp->attn_scale : 1.0f / sqrtf((float)hd);
    /* A sliding-window layer sees positions [lo, pos]; whole blocks before lo's are skipped
     * and the rest of lo's block gets zero weight. */
    int64_t lo = 0;
    if (wk_hparams_layer_swa(hp, (uint32_t)be->cur_layer) && n_ctx > (int64_t)hp->swa_window) {
        lo = n_ctx - (int64_t)hp->swa_window;
    }
    int64_t jb = lo / bsz * bsz;

    /* the item's heads share one KV head: each block is read once for all of them */
    int g = h0 / group;
    const float *q = be->q + (size_t)t * q_dim + (size_t)h0 * (size_t)hd;
    size_t ss = (size_t)be->max_ctx;
    size_t kv_bytes = (size_t)bsz * (size_t)hd * be->kv_elem; /* a head's K or V block */
    for (int64_t j0 = jb; j0 < n_ctx; j0 += bsz) {
        int32_t blk = bt[j0 / bsz];
        int n = n_ctx - j0 < bsz ? (int)(n_ctx - j0) : (int)bsz;
        const uint8_t *kb = kv_block_ptr(be, be->k_cache, be->cur_layer, blk, g);
        /* Blocks lie apart and the streamed weights evict them between tokens: ask for the
         * next K block and this V block (read after the softmax) while these scores run. */
        if (j0 + bsz < n_ctx) {
            prefetch_range(kv_block_ptr(be, be->k_cache, be->cur_layer, bt[j0 / bsz + 1], g),
                           kv_bytes, PF_READ_L1);
        }
        prefetch_range(kv_block_ptr(be, be->v_cache, be->cur_layer, blk, g), kv_bytes, PF_READ_L1);
        wk_cpu_attn_scores(be->kv_f16, q, per_item, hd, kb, (int)bsz, n, scale, scores + j0, ss);
    }
    for (int gh = 0; gh < per_item; gh++) {
        float *sc = scores + (size_t)gh * ss;
        if (hp->attn_softcap > 0.0f) {
            wk_cpu_softcap_fast(sc + lo, n_ctx - lo, hp->attn_softcap);
        }
        wk_cpu_softmax_fast(sc + lo, n_ctx - lo);
        for (int64_t j = jb; j < lo; j++) {
            sc[j] = 0.0f;
        }
    }
    float *out = be->xn + (size_t)t * q_dim + (size_t)h0 * (size_t)hd;
    memset(out, 0, (size_t)per_item * (size_t)hd * sizeof(float));
    for (int64_t j0 = jb; j0 < n_ctx; j0 += bsz) {
        int32_t blk = bt[j0 / bsz];
        int n = n_ctx - j0 < bsz ? (int)(n_ctx - j0) : (int)bsz;
        const uint8_t *vb = kv_block_ptr(be, be->v_cache, be->cur_layer, blk, g);
        wk_cpu_attn_values(be->kv_f16, scores + j0, ss, per_item, hd, vb, n, out);
    }
}

static void attn_worker(void *ctx, int tid, int n_threads) {
    attn_task *a = ctx;
    (void)n_threads;
    float *scores = a->be->thr + (size_t)tid * a->be->thr_floats;
    mm_range *own = &a->be->ranges[tid];
    for (;;) {
        int i;
        uint32_t c, n;
        if (!a->ranged) {
            i = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed);
        } else if (range_take_front(own, 1, &c, &n) ||
                   (range_steal(a->be->ranges, a->be->n_threads, own) &&
                    range_take_front(own, 1, &c, &n))) {
            i = (int)c;
        } else {
            return;
        }
        if (i >= a->n_items) {
            return;
        }
        attn_item(a->be, i, a->per_item, scores);
    }
}

/* ---- create / destroy ---------------------------------------------------------------------- */

static void cpu_destroy(wk_backend *be) {
    if (be == NULL) {
        return;
    }
    wk_cpu_pool_destroy(be->pool);
    free(be->k_cache);
    free(be->v_cache);
    free(be->x);
    free(be->xn);
    free(be->q);
    free(be->k);
    free(be->v);
    free(be->gate);
    free(be->up);
    free(be->xq);
    free(be->xp);
    free(be->xc);
    free(be->pan_buf);
    free(be->lp);
    free(be->rope_cos);
    free(be->rope_sin);
    free(be->inv_freq);
    free(be->rope_cos_swa);
    free(be->rope_sin_swa);
    free(be->inv_freq_swa);
    free(be->tmp);
    free(be->router);
    free(be->sel);
    free(be->sel_w);
    free(be->moe_tok);
    free(be->moe_w);
    free(be->moe_x);
    free(be->tok_seq);
    free(be->final_x);
    free(be->out_row);
    free(be->thr);
    free(be->ranges);
    free(be->spans);
    free(be->kvf);
    free(be);
}

/* n bytes (free()), 64-byte aligned; from HUGE_BYTES up on a huge-page boundary with
 * transparent huge pages asked for (Debian's default THP mode is madvise): the forward pass
 * streams the weight panels and the KV cache, and with 4 KiB pages it takes a TLB miss every
 * 4 KiB (decode ~10% slower at the same memory bandwidth). */
static void *alloc_stream(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, n >= HUGE_BYTES ? HUGE_BYTES : 64, n) != 0) {
        return NULL;
    }
#if defined(MADV_HUGEPAGE)
    if (n >= HUGE_BYTES) {
        (void)madvise(p, n, MADV_HUGEPAGE); /* a hint: without THP the pages stay small */
    }
#endif
    return p;
}

/* calloc of a*b*c elements of size el with overflow check. */
static void *alloc3(size_t a, size_t b, size_t c, size_t el) {
    if (a == 0 || b == 0 || c == 0) {
        return calloc(1, el);
    }
    if (b > SIZE_MAX / a || c > SIZE_MAX / (a * b) || el > SIZE_MAX / (a * b * c)) {
        return NULL;
    }
    size_t n = a * b * c * el;
    void *p = alloc_stream(n);
    if (p == NULL) {
        return NULL;
    }
    memset(p, 0, n);
    return p;
}

/* The weights the panel kernels can take at the level in effect: up to 13 per layer (the
 * dense ones, the three expert tensors, the shared expert's) and the output head, in a fixed
 * order (slot = 13 * layer + index, head last). Absent tensors have no data and no panels. */
#define PANEL_SLOTS_PER_LAYER 13

static const wk_tensor *panel_slot(const wk_model *m, size_t slot) {
    size_t l = slot / PANEL_SLOTS_PER_LAYER;
    if (l >= m->hp.n_layer) {
        return &m->output;
    }
    const wk_layer *L = &m->layers[l];
    const wk_tensor *ts[PANEL_SLOTS_PER_LAYER] = {
        &L->wq,         &L->wk,       &L->wv,        &L->wo,      &L->w_gate,
        &L->w_up,       &L->w_down,   &L->gate_exps, &L->up_exps, &L->down_exps,
        &L->gate_shexp, &L->up_shexp, &L->down_shexp};
    return ts[slot % PANEL_SLOTS_PER_LAYER];
}

/* Bytes t's panels take in the shared allocation (every expert's for an expert tensor), 0
 * when t is not repacked. */
static size_t panel_slot_bytes(const wk_tensor *t) {
    return expert_panel_stride(t) * (size_t)t->ne[2];
}

typedef struct repack_task {
    const wk_model *m;
    const uint8_t **dst; /* (n_slots) panels of each slot, NULL where not wanted */
    size_t n_slots;
    atomic_size_t next; /* next slot */
} repack_task;

static void repack_worker(void *ctx, int tid, int n_threads) {
    repack_task *r = ctx;
    (void)tid;
    (void)n_threads;
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);
        if (i >= r->n_slots) {
            return;
        }
        const wk_tensor *t = panel_slot(r->m, i);
        if (r->dst[i] != NULL) {
            int64_t panels = (t->ne[1] + WK_CPU_PANEL_ROWS - 1) / WK_CPU_PANEL_ROWS;
            for (uint32_t e = 0; e < (uint32_t)t->ne[2]; e++) { /* one pass for 2-D weights */
                wk_tensor v = wk_expert_view(t, e);
                wk_cpu_panel_pack(t->type, v.data, t->ne[1], t->ne[0], 0, panels,
                                  (void *)expert_panels(r->dst[i], t, e));
            }
        }
    }
}

/* Repacks every weight the panel kernels take into one allocation (be->pan_buf, be->lp,
 * be->pan_head), in parallel. The model's own tensors are left as they are. */
static cm_err repack_panels(wk_backend *be) {
    const wk_model *m = be->model;
    size_t n_slots = (size_t)m->hp.n_layer * PANEL_SLOTS_PER_LAYER + 1;
    const uint8_t **dst = calloc(n_slots, sizeof(*dst));
    be->lp = calloc(m->hp.n_layer > 0 ? m->hp.n_layer : 1, sizeof(*be->lp));
    if (dst == NULL || be->lp == NULL) {
        free(dst);
        return CM_ERR_NOMEM;
    }
    size_t total = 0;
    for (size_t i = 0; i < n_slots; i++) {
        total += panel_slot_bytes(panel_slot(m, i));
    }
    if (total == 0) {
        free(dst);
        return CM_OK;
    }
    void *buf = alloc_stream(total);
    if (buf == NULL) {
        free(dst);
        return CM_ERR_NOMEM;
    }
    be->pan_buf = buf;
    be->pan_bytes = total;
    size_t off = 0;
    for (size_t i = 0; i < n_slots; i++) {
        size_t bytes = panel_slot_bytes(panel_slot(m, i));
        dst[i] = bytes > 0 ? be->pan_buf + off : NULL;
        off += bytes;
    }
    repack_task r = {.m = m, .dst = dst, .n_slots = n_slots};
    atomic_init(&r.next, 0);
    wk_cpu_pool_run(be->pool, repack_worker, &r);
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        const uint8_t **d = dst + (size_t)l * PANEL_SLOTS_PER_LAYER;
        be->lp[l] = (layer_panels){d[0], d[1], d[2], d[3],  d[4],  d[5], d[6],
                                   d[7], d[8], d[9], d[10], d[11], d[12]};
    }
    be->pan_head = dst[n_slots - 1];
    /* The forward pass reads the panels only: let the mapped originals leave memory (the
     * embedding rows still read from a tied head come back a page at a time). */
    for (size_t i = 0; i < n_slots; i++) {
        if (dst[i] != NULL) {
            const wk_tensor *t = panel_slot(m, i);
            wk_gguf_drop_pages(m->gguf, t->data, t->nbytes);
        }
    }
    free(dst);
    return CM_OK;
}

static cm_err cpu_create(const wk_model *model, const wk_backend_config *cfg, wk_backend **out,
                         char *err, size_t errlen) {
    if (out == NULL) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "NULL out");
    }
    *out = NULL;
    if (model == NULL || cfg == NULL) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "NULL model or config");
    }
    const wk_hparams *hp = &model->hp;
    if (cfg->block_tokens == 0 || cfg->block_tokens > 4096 || cfg->n_blocks == 0 ||
        cfg->n_blocks > (1u << 24) || cfg->max_batch_tokens == 0 ||
        cfg->max_batch_tokens > (1u << 20) || cfg->max_seqs == 0 || cfg->max_seqs > (1u << 16) ||
        cfg->max_blocks_per_seq == 0 || cfg->max_blocks_per_seq > (1u << 24)) {
        return cm_errf(CM_ERR_INVALID, err, errlen,
                       "invalid backend config (block_tokens %u, n_blocks %u, max_batch_tokens %u, "
                       "max_seqs %u, max_blocks_per_seq %u)",
                       cfg->block_tokens, cfg->n_blocks, cfg->max_batch_tokens, cfg->max_seqs,
                       cfg->max_blocks_per_seq);
    }
    if (cfg->kv_dtype != WK_DTYPE_F16 && cfg->kv_dtype != WK_DTYPE_F32) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "KV cache type %s unsupported (F16, F32)",
                       wk_dtype_name(cfg->kv_dtype));
    }
    uint64_t max_ctx = (uint64_t)cfg->max_blocks_per_seq * cfg->block_tokens;
    if (max_ctx > (1u << 24)) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "max context %" PRIu64 " too large", max_ctx);
    }
    /* every matmul input width must be a multiple of the 8-bit activation block */
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    if (hp->n_embd % WK_CPU_QK != 0 || q_dim % WK_CPU_QK != 0 || hp->n_ff % WK_CPU_QK != 0 ||
        hp->n_ff_exp % WK_CPU_QK != 0 || hp->n_ff_shexp % WK_CPU_QK != 0 || hp->head_dim > 1024 ||
        hp->head_dim % 2 != 0 || hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "model shape unsupported by the CPU backend (n_embd %u, q_dim %" PRId64
                       ", n_ff %u, expert n_ff %u and %u must be multiples of 32)",
                       hp->n_embd, q_dim, hp->n_ff, hp->n_ff_exp, hp->n_ff_shexp);
    }

    /* The KV cache must fit in physical memory: refuse before trying to allocate it. */
    {
        size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
        double kv_bytes = 2.0 * hp->n_layer * (double)cfg->n_blocks * cfg->block_tokens *
                          (double)kv_dim * (cfg->kv_dtype == WK_DTYPE_F16 ? 2 : 4);
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        if (pages > 0 && psz > 0 && kv_bytes > (double)pages * (double)psz) {
            return cm_errf(CM_ERR_NOMEM, err, errlen,
                           "KV cache of %.0f bytes (%u blocks x %u tokens) exceeds physical memory",
                           kv_bytes, cfg->n_blocks, cfg->block_tokens);
        }
    }
    wk_cpu_kernels_init();
    wk_backend *be = calloc(1, sizeof(*be));
    if (be == NULL) {
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory");
    }
    be->model = model;
    be->hp = *hp;
    be->cfg = *cfg;
    be->max_ctx = (int64_t)max_ctx;
    int nth = cfg->n_threads;
    if (nth <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nth = n < 1 ? 1 : (int)n;
    }
    if (nth > MAX_THREADS) {
        nth = MAX_THREADS;
    }
    cm_err rv = wk_cpu_pool_create(nth, &be->pool);
    if (rv != CM_OK) {
        free(be);
        return cm_errf(rv, err, errlen, "cannot start %d threads", nth);
    }
    be->n_threads = wk_cpu_pool_size(be->pool);
    {
        const char *env = getenv("SLUICE_CPU_ADAPT_THREADS");
        be->adapt = be->n_threads > 1 && !(env != NULL && strcmp(env, "0") == 0);
    }

    size_t T = cfg->max_batch_tokens;
    size_t embd = hp->n_embd, kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    /* the widest FFN: dense, expert or shared expert */
    size_t ff = hp->n_ff > hp->n_ff_exp ? hp->n_ff : hp->n_ff_exp, hd = hp->head_dim;
    ff = ff > hp->n_ff_shexp ? ff : hp->n_ff_shexp;
    int64_t max_in = (int64_t)embd;
    max_in = q_dim > max_in ? q_dim : max_in;
    max_in = (int64_t)ff > max_in ? (int64_t)ff : max_in;
    be->max_in = max_in;

    be->kv_f16 = cfg->kv_dtype == WK_DTYPE_F16;
    be->kv_elem = be->kv_f16 ? 2 : 4;
    be->kv_block_elems = kv_dim * cfg->block_tokens;
    be->k_cache = alloc3((size_t)hp->n_layer * cfg->n_blocks, be->kv_block_elems, 1, be->kv_elem);
    be->v_cache = alloc3((size_t)hp->n_layer * cfg->n_blocks, be->kv_block_elems, 1, be->kv_elem);
    be->kv_layer_bytes = (size_t)cfg->n_blocks * be->kv_block_elems * be->kv_elem;

    size_t group = hp->n_head / hp->n_head_kv;
    size_t att_floats = group * (size_t)max_ctx;
    size_t mm_floats = (size_t)max_in;
    be->thr_floats = (att_floats > mm_floats ? att_floats : mm_floats) + 16;
    be->thr_floats = (be->thr_floats + 15) & ~(size_t)15; /* keep each slice 64-byte aligned */

    be->x = alloc3(T, embd, 1, sizeof(float));
    be->xn = alloc3(T, (size_t)max_in, 1, sizeof(float));
    be->q = alloc3(T, (size_t)q_dim, 1, sizeof(float));
    be->k = alloc3(T, kv_dim, 1, sizeof(float));
    be->v = alloc3(T, kv_dim, 1, sizeof(float));
    be->gate = alloc3(T, ff, 1, sizeof(float));
    be->up = alloc3(T, ff, 1, sizeof(float));
    be->xq = alloc3(T, (size_t)max_in / WK_CPU_QK, 1, sizeof(wk_cpu_q8));
    be->xp = alloc3(T, wk_cpu_q8_packed_bytes(max_in), 1, 1);
    be->xc = alloc3(T, (size_t)max_in / WK_CPU_QK, 1, sizeof(int32_t));
    be->rope_cos = alloc3(T, hd / 2, 1, sizeof(float));
    be->rope_sin = alloc3(T, hd / 2, 1, sizeof(float));
    be->inv_freq = alloc3(hd / 2, 1, 1, sizeof(float));
    bool moe = hp->n_expert > 0;
    be->tmp = alloc3(hp->post_norms || moe ? T : 1, embd, 1, sizeof(float));
    if (moe) {
        be->router = alloc3(T, hp->n_expert, 1, sizeof(float));
        be->sel = alloc3(T, hp->n_expert_used, 1, sizeof(int32_t));
        be->sel_w = alloc3(T, hp->n_expert_used, 1, sizeof(float));
        be->moe_tok = alloc3(T, 1, 1, sizeof(int32_t));
        be->moe_w = alloc3(T, 1, 1, sizeof(float));
        be->moe_x = alloc3(T, embd, 1, sizeof(float));
    }
    bool rope_swa =
        hp->swa_window > 0 && hp->rope_freq_base_swa > 0.0f &&
        (hp->rope_freq_base_swa != hp->rope_freq_base || hp->rope_scaling != WK_ROPE_SCALING_NONE);
    if (rope_swa) {
        be->rope_cos_swa = alloc3(T, hd / 2, 1, sizeof(float));
        be->rope_sin_swa = alloc3(T, hd / 2, 1, sizeof(float));
        be->inv_freq_swa = alloc3(hd / 2, 1, 1, sizeof(float));
    }
    be->tok_seq = alloc3(T, 1, 1, sizeof(int32_t));
    be->final_x = alloc3(cfg->max_seqs, embd, 1, sizeof(float));
    be->out_row = alloc3(cfg->max_seqs, 1, 1, sizeof(uint32_t));
    be->thr = alloc3((size_t)be->n_threads, be->thr_floats, 1, sizeof(float));
    be->ranges = alloc3((size_t)be->n_threads, 1, 1, sizeof(mm_range));
    be->spans = calloc((size_t)be->n_threads, sizeof(ahead_span));
    be->kvf = calloc((size_t)be->n_threads, sizeof(kv_fetch));
    if (be->k_cache == NULL || be->v_cache == NULL || be->x == NULL || be->xn == NULL ||
        be->q == NULL || be->k == NULL || be->v == NULL || be->gate == NULL || be->up == NULL ||
        be->xq == NULL || be->xp == NULL || be->xc == NULL || be->rope_cos == NULL ||
        be->rope_sin == NULL || be->inv_freq == NULL || be->tok_seq == NULL ||
        be->final_x == NULL || be->out_row == NULL || be->thr == NULL || be->ranges == NULL ||
        be->spans == NULL || be->kvf == NULL || be->tmp == NULL ||
        (moe && (be->router == NULL || be->sel == NULL || be->sel_w == NULL ||
                 be->moe_tok == NULL || be->moe_w == NULL || be->moe_x == NULL)) ||
        (rope_swa &&
         (be->rope_cos_swa == NULL || be->rope_sin_swa == NULL || be->inv_freq_swa == NULL))) {
        cpu_destroy(be);
        return cm_errf(CM_ERR_NOMEM, err, errlen,
                       "out of memory for KV cache (%u blocks x %u tokens, %zu bytes/token) or "
                       "scratch (%u tokens)",
                       cfg->n_blocks, cfg->block_tokens, wk_kv_bytes_per_token(hp, cfg->kv_dtype),
                       cfg->max_batch_tokens);
    }
    wk_cpu_pool_set_after(be->pool, after_task, be); /* before the pool's first task */
    if (repack_panels(be) != CM_OK) {
        cpu_destroy(be);
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory for the repacked weights");
    }
    wk_rope_inv_freq(hp, (int)hd, be->inv_freq);
    if (rope_swa) {
        /* local layers: their own base, no scaling */
        wk_hparams local = *hp;
        local.rope_freq_base = hp->rope_freq_base_swa;
        local.rope_scaling = WK_ROPE_SCALING_NONE;
        local.rope_scaling_factor = 1.0f;
        wk_rope_inv_freq(&local, (int)hd, be->inv_freq_swa);
    }
    *out = be;
    return CM_OK;
}

/* ---- forward ------------------------------------------------------------------------------- */

static cm_err check_batch(const wk_backend *be, const wk_batch *b) {
    const wk_backend_config *c = &be->cfg;
    if (b == NULL || b->tokens == NULL || b->positions == NULL || b->seq_start == NULL ||
        b->block_table == NULL || b->want_logits == NULL) {
        return CM_ERR_INVALID;
    }
    if (b->n_seqs == 0 || b->n_seqs > c->max_seqs || b->n_tokens == 0 ||
        b->n_tokens > c->max_batch_tokens || b->seq_start[0] != 0 ||
        b->seq_start[b->n_seqs] != b->n_tokens) {
        return CM_ERR_INVALID;
    }
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        uint32_t t0 = b->seq_start[s], t1 = b->seq_start[s + 1];
        if (t1 <= t0 || t1 > b->n_tokens) {
            return CM_ERR_INVALID;
        }
        int32_t p0 = b->positions[t0];
        if (p0 < 0 || (int64_t)p0 + (t1 - t0) > be->max_ctx) {
            return CM_ERR_INVALID;
        }
        for (uint32_t t = t0; t < t1; t++) {
            if (b->positions[t] != p0 + (int32_t)(t - t0) || b->tokens[t] < 0 ||
                (uint32_t)b->tokens[t] >= be->hp.n_vocab) {
                return CM_ERR_INVALID;
            }
        }
        uint32_t last = (uint32_t)b->positions[t1 - 1];
        const int32_t *bt = b->block_table + (size_t)s * c->max_blocks_per_seq;
        for (uint32_t i = 0; i <= last / c->block_tokens; i++) {
            if (bt[i] < 0 || (uint32_t)bt[i] >= c->n_blocks) {
                return CM_ERR_INVALID;
            }
        }
    }
    return CM_OK;
}

static void quantize_rows(wk_backend *be, int n_tok, int64_t n, unsigned need) {
    quant_arg a = {n, need};
    for_tokens(be, n_tok, quant_tok, &a);
}

/* Sheds a thread when the owner spent more than ADAPT_SHED_RATIO of a window waiting for
 * workers; after ADAPT_PROBE_WINDOWS windows at a reduced count, tries one more again. */
static void adapt_threads(wk_backend *be, int64_t fwd_ns, int64_t wait_ns) {
    be->win_fwd_ns += fwd_ns;
    be->win_wait_ns += wait_ns;
    if (++be->win_n < ADAPT_WINDOW) {
        return;
    }
    int active = wk_cpu_pool_active(be->pool);
    if (active > 1 && (double)be->win_wait_ns > ADAPT_SHED_RATIO * (double)be->win_fwd_ns) {
        wk_cpu_pool_set_active(be->pool, active - 1);
        be->probe_windows = 0;
    } else if (active < be->n_threads && ++be->probe_windows >= ADAPT_PROBE_WINDOWS) {
        wk_cpu_pool_set_active(be->pool, active + 1);
        be->probe_windows = 0;
    }
    if (getenv("SLUICE_CPU_ADAPT_DEBUG") != NULL) {
        fprintf(stderr, "cpu adapt: active %d wait %.1f%%\n", active,
                100.0 * (double)be->win_wait_ns / (double)be->win_fwd_ns);
    }
    be->win_fwd_ns = 0;
    be->win_wait_ns = 0;
    be->win_n = 0;
}

static cm_err cpu_forward(wk_backend *be, const wk_batch *b, float *logits) {
    if (be == NULL || logits == NULL) {
        return CM_ERR_INVALID;
    }
    cm_err rv = check_batch(be, b);
    if (rv != CM_OK) {
        return rv;
    }
    struct timespec f0;
    clock_gettime(CLOCK_MONOTONIC, &f0);
    int64_t wait0 = wk_cpu_pool_wait_ns(be->pool);
    const wk_model *m = be->model;
    const wk_hparams *hp = &be->hp;
    int n_tok = (int)b->n_tokens;
    int64_t embd = hp->n_embd, ff = hp->n_ff;
    int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    int half = (int)hp->head_dim / 2;
    be->batch = b;
    be->prof_step = be->prof && n_tok == 1;
    if (be->prof_step) {
        be->prof_at = cm_clock_mono_ns();
        be->prof_steps++;
    }

    for (uint32_t s = 0; s < b->n_seqs; s++) {
        for (uint32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            be->tok_seq[t] = (int32_t)s;
        }
    }
    for (int t = 0; t < n_tok; t++) {
        for (int i = 0; i < half; i++) {
            double ang = (double)b->positions[t] * be->inv_freq[i];
            be->rope_cos[(size_t)t * half + i] = (float)cos(ang);
            be->rope_sin[(size_t)t * half + i] = (float)sin(ang);
            if (be->rope_cos_swa != NULL) {
                double a = (double)b->positions[t] * be->inv_freq_swa[i];
                be->rope_cos_swa[(size_t)t * half + i] = (float)cos(a);
                be->rope_sin_swa[(size_t)t * half + i] = (float)sin(a);
            }
        }
    }
    wk_cpu_embed(&m->tok_embd, b->tokens, n_tok, be->x);
    if (hp->embd_scale != 0.0f) {
        for (size_t i = 0; i < (size_t)n_tok * (size_t)embd; i++) {
            be->x[i] *= hp->embd_scale;
        }
    }
    phase_end(be, PH_EMBED);

    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const wk_layer *L = &m->layers[l];
        be->cur_layer = (int)l;

        const layer_panels *lp = &be->lp[l];
        mm_task qkv = {.n_parts = 3, .in = embd, .n_tok = n_tok, .x = be->xn, .xq = be->xq};
        qkv.parts[0] = mm_part_of(&L->wq, be->q, (size_t)q_dim, L->bq.data, lp->wq);
        qkv.parts[1] = mm_part_of(&L->wk, be->k, (size_t)kv_dim, L->bk.data, lp->wk);
        qkv.parts[2] = mm_part_of(&L->wv, be->v, (size_t)kv_dim, L->bv.data, lp->wv);
        mm_ahead(&qkv, (const wk_tensor *[]){&L->wo}, (const uint8_t *[]){lp->wo}, 1);
        int group = (int)(hp->n_head / hp->n_head_kv);
        int per_item = n_tok * (int)hp->n_head_kv >= 2 * be->n_threads ? group : 1;
        attn_task at = {.be = be,
                        .n_items = n_tok * (int)hp->n_head / per_item,
                        .per_item = per_item,
                        .ranged = n_tok == 1};
        atomic_init(&at.next, 0);
        norm_arg na = {be->x, be->xn, L->attn_norm.data, embd, mm_prepare(&qkv)};
        for_tokens(be, n_tok, norm_tok, &na);
        if (n_tok == 1) {
            fetch_for_store(be);
            kv_fetch_plan(be, &qkv, at.n_items, per_item);
        }
        phase_end(be, PH_ATTN_NORM);
        matmul(be, &qkv);
        phase_end(be, PH_QKV);
        for_tokens(be, n_tok, rope_store_tok, NULL);
        phase_end(be, PH_ROPE_KV);
        if (at.ranged) {
            set_ranges(be, at.n_items);
        }
        wk_cpu_pool_run(be->pool, attn_worker, &at);
        phase_end(be, PH_ATTN);

        /* with post-norms the branch output goes to tmp, is normed and added there */
        bool post = hp->post_norms;
        mm_task o = {.n_parts = 1,
                     .in = q_dim,
                     .n_tok = n_tok,
                     .x = be->xn,
                     .xq = be->xq,
                     .accumulate = !post};
        o.parts[0] = mm_part_of(&L->wo, post ? be->tmp : be->x, (size_t)embd, NULL, lp->wo);
        if (hp->n_expert == 0) {
            mm_ahead(&o, (const wk_tensor *[]){&L->w_gate, &L->w_up},
                     (const uint8_t *[]){lp->gate, lp->up}, 2);
        }
        quantize_rows(be, n_tok, q_dim, mm_prepare(&o));
        if (n_tok == 1) {
            prefetch_range(L->ffn_norm.data, L->ffn_norm.nbytes, PF_READ_L2);
        }
        phase_end(be, PH_O_QUANT);
        matmul(be, &o);
        if (post) {
            for_tokens(be, n_tok, post_norm_add_tok, (void *)L->attn_post_norm.data);
        }
        phase_end(be, PH_O);

        if (hp->n_expert > 0) {
            norm_arg nm = {be->x, be->xn, L->ffn_norm.data, embd, 0};
            for_tokens(be, n_tok, norm_tok, &nm);
            phase_end(be, PH_FFN_NORM);
            moe_ffn(be, L, lp, n_tok);
            phase_end(be, PH_GATE_UP);
            continue;
        }
        mm_task gu = {.n_parts = 2, .in = embd, .n_tok = n_tok, .x = be->xn, .xq = be->xq};
        gu.parts[0] = mm_part_of(&L->w_gate, be->gate, (size_t)ff, NULL, lp->gate);
        gu.parts[1] = mm_part_of(&L->w_up, be->up, (size_t)ff, NULL, lp->up);
        mm_ahead(&gu, (const wk_tensor *[]){&L->w_down}, (const uint8_t *[]){lp->down}, 1);
        norm_arg nf = {be->x, be->xn, L->ffn_norm.data, embd, mm_prepare(&gu)};
        for_tokens(be, n_tok, norm_tok, &nf);
        phase_end(be, PH_FFN_NORM);
        matmul(be, &gu);
        phase_end(be, PH_GATE_UP);
        mm_task dn = {.n_parts = 1,
                      .in = ff,
                      .n_tok = n_tok,
                      .x = be->gate,
                      .xq = be->xq,
                      .accumulate = !post};
        dn.parts[0] = mm_part_of(&L->w_down, post ? be->tmp : be->x, (size_t)embd, NULL, lp->down);
        if (l + 1 < hp->n_layer) {
            const wk_layer *N = &m->layers[l + 1];
            const layer_panels *np = &be->lp[l + 1];
            mm_ahead(&dn, (const wk_tensor *[]){&N->wq, &N->wk, &N->wv},
                     (const uint8_t *[]){np->wq, np->wk, np->wv}, 3);
        } else {
            mm_ahead(&dn, (const wk_tensor *[]){&m->output}, (const uint8_t *[]){be->pan_head}, 1);
        }
        act_arg aa = {ff, mm_prepare(&dn)};
        for_tokens(be, n_tok, act_tok, &aa);
        if (n_tok == 1) {
            const wk_tensor *nn =
                l + 1 < hp->n_layer ? &m->layers[l + 1].attn_norm : &m->output_norm;
            prefetch_range(nn->data, nn->nbytes, PF_READ_L2);
        }
        phase_end(be, PH_ACT);
        matmul(be, &dn);
        if (post) {
            for_tokens(be, n_tok, post_norm_add_tok, (void *)L->ffn_post_norm.data);
        }
        phase_end(be, PH_DOWN);
    }

    /* Output head only for the last token of each sequence that wants logits. */
    int n_out = 0;
    mm_task head = {
        .n_parts = 1, .in = embd, .x = be->final_x, .xq = be->xq, .out_row = be->out_row};
    head.parts[0] = mm_part_of(&m->output, logits, hp->n_vocab, NULL, be->pan_head);
    unsigned need_head = mm_prepare(&head);
    for (uint32_t s = 0; s < b->n_seqs; s++) {
        if (b->want_logits[s]) {
            uint32_t last = b->seq_start[s + 1] - 1;
            wk_cpu_rmsnorm(be->final_x + (size_t)n_out * (size_t)embd,
                           be->x + (size_t)last * (size_t)embd, m->output_norm.data, embd,
                           hp->rms_eps);
            quant_pack(be, be->final_x + (size_t)n_out * (size_t)embd, n_out, embd, need_head);
            be->out_row[n_out] = s;
            n_out++;
        }
    }
    if (n_out > 0) {
        head.n_tok = n_out;
        matmul(be, &head);
        if (hp->final_softcap > 0.0f) {
            for (int k = 0; k < n_out; k++) {
                wk_cpu_softcap_fast(logits + (size_t)be->out_row[k] * hp->n_vocab, hp->n_vocab,
                                    hp->final_softcap);
            }
        }
    }
    be->batch = NULL;
    phase_end(be, PH_HEAD);
    be->prof_step = false;
    if (be->adapt) {
        struct timespec f1;
        clock_gettime(CLOCK_MONOTONIC, &f1);
        adapt_threads(be, (int64_t)(f1.tv_sec - f0.tv_sec) * 1000000000 + (f1.tv_nsec - f0.tv_nsec),
                      wk_cpu_pool_wait_ns(be->pool) - wait0);
    }
    return CM_OK;
}

/* read_weights: the panels in one contiguous part per thread, as a decode matmul's threads
 * read theirs. */
typedef struct read_arg {
    int parts;
    _Atomic uint64_t sink;
} read_arg;

static void read_part(wk_backend *be, int i, void *arg) {
    read_arg *r = arg;
    size_t n = be->pan_bytes, share = n / (size_t)r->parts;
    size_t lo = share * (size_t)i, hi = i + 1 == r->parts ? n : share * (size_t)(i + 1);
    atomic_fetch_xor_explicit(&r->sink, wk_cpu_read_bytes(be->pan_buf + lo, hi - lo),
                              memory_order_relaxed);
}

static cm_err cpu_read_weights(wk_backend *be, uint64_t *bytes, int64_t *ns) {
    if (be == NULL || bytes == NULL || ns == NULL) {
        return CM_ERR_INVALID;
    }
    read_arg r = {.parts = wk_cpu_pool_active(be->pool)};
    atomic_init(&r.sink, 0);
    int64_t t0 = cm_clock_mono_ns();
    if (be->pan_bytes > 0) {
        for_items(be, r.parts, read_part, &r);
    }
    *ns = cm_clock_mono_ns() - t0;
    *bytes = be->pan_bytes;
    return CM_OK;
}

/* compute_weights: the decode matmul (one token, the panel kernels) over the first panels of
 * layer 0's largest panel matrix that takes the layer's input, at most CACHED_BYTES of them
 * (they stay in L2 between runs), run until CACHED_NS have passed. Each run is a whole
 * matmul task, fork-join included, as in decode. */
#define CACHED_BYTES ((size_t)512 << 10)
#define CACHED_NS 100000000LL

static cm_err cpu_compute_weights(wk_backend *be, int n_threads, uint64_t *bytes, int64_t *ns) {
    if (be == NULL || bytes == NULL || ns == NULL || n_threads < 0) {
        return CM_ERR_INVALID;
    }
    *bytes = 0;
    *ns = 0;
    const wk_layer *L = &be->model->layers[0];
    const layer_panels *lp = &be->lp[0];
    const wk_tensor *ws[] = {&L->wq, &L->wk, &L->wv, &L->w_gate, &L->w_up};
    const uint8_t *ps[] = {lp->wq, lp->wk, lp->wv, lp->gate, lp->up};
    int best = -1;
    size_t best_bytes = 0;
    for (int i = 0; i < (int)(sizeof(ws) / sizeof(ws[0])); i++) {
        if (ps[i] == NULL || !wk_cpu_panel_type(ws[i]->type)) {
            continue;
        }
        size_t b = wk_cpu_panel_bytes(ws[i]->type, ws[i]->ne[1], ws[i]->ne[0]);
        if (b > best_bytes) {
            best = i;
            best_bytes = b;
        }
    }
    if (best < 0) {
        return CM_OK;
    }
    /* whole panels only, and no more rows than the output buffer (be->gate: n_ff) holds */
    wk_tensor w = *ws[best];
    size_t pb = wk_cpu_panel_bytes(w.type, WK_CPU_PANEL_ROWS, w.ne[0]);
    int64_t n_pan = w.ne[1] / WK_CPU_PANEL_ROWS;
    int64_t fit = (int64_t)(CACHED_BYTES / pb), out_pan = be->hp.n_ff / WK_CPU_PANEL_ROWS;
    n_pan = n_pan < fit ? n_pan : fit;
    n_pan = n_pan < out_pan ? n_pan : out_pan;
    if (n_pan <= 0) {
        return CM_OK;
    }
    w.ne[1] = n_pan * WK_CPU_PANEL_ROWS;
    for (int64_t i = 0; i < w.ne[0]; i++) {
        be->xn[i] = (float)(i % 7 - 3) * 0.25f;
    }
    mm_task t = {.n_parts = 1, .in = w.ne[0], .n_tok = 1, .x = be->xn, .xq = be->xq};
    t.parts[0] = mm_part_of(&w, be->gate, (size_t)w.ne[1], NULL, ps[best]);
    quant_pack(be, be->xn, 0, w.ne[0], mm_prepare(&t));

    int active = wk_cpu_pool_active(be->pool);
    wk_cpu_pool_set_active(be->pool, n_threads > 0 ? n_threads : wk_cpu_pool_size(be->pool));
    matmul(be, &t); /* brings the slice into the caches */
    uint64_t runs = 0;
    int64_t t0 = cm_clock_mono_ns(), el = 0;
    do {
        matmul(be, &t);
        runs++;
        el = cm_clock_mono_ns() - t0;
    } while (el < CACHED_NS);
    wk_cpu_pool_set_active(be->pool, active);
    *bytes = runs * (uint64_t)n_pan * pb;
    *ns = el;
    return CM_OK;
}

static cm_err cpu_profile(wk_backend *be, int on, wk_phases *out) {
    if (be == NULL) {
        return CM_ERR_INVALID;
    }
    if (on) {
        memset(be->prof_ns, 0, sizeof(be->prof_ns));
        be->prof_steps = 0;
        be->prof = true;
        return CM_OK;
    }
    be->prof = false;
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
        out->n = PH_COUNT;
        for (int i = 0; i < PH_COUNT; i++) {
            out->name[i] = phase_names[i];
            out->ns[i] = be->prof_ns[i];
        }
        out->steps = be->prof_steps;
    }
    return CM_OK;
}

static int cpu_healthy(const wk_backend *be) {
    (void)be;
    return 1;
}

const wk_backend_ops wk_backend_cpu = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .forward = cpu_forward,
    .free_memory = NULL,
    .healthy = cpu_healthy,
    .read_weights = cpu_read_weights,
    .compute_weights = cpu_compute_weights,
    .profile = cpu_profile,
};
