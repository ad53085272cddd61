/*
 * wk_backend: the compute backend table. The CPU backend (backend/cpu) is the reference and
 * the CI path; the CUDA backend (backend/cuda) is the production path. The engine drives a
 * backend only through this table, so both give the same tokens for the same batch.
 *
 * A backend instance owns: its copy/representation of the weights, the paged KV cache
 * (n_blocks blocks of block_tokens tokens, for every layer, K and V), and scratch sized at
 * create for max_batch_tokens tokens and max_seqs sequences. Nothing is allocated in forward.
 *
 * KV layout is the backend's business; the engine only hands out block ids. A sequence's
 * token at position p lives in block block_table[p / block_tokens], slot p % block_tokens.
 *
 * Threads: an instance is used by one thread at a time (the engine thread).
 */
#ifndef WK_BACKEND_H
#define WK_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "model.h"
#include "sampler.h"

typedef struct wk_backend wk_backend;

typedef struct wk_backend_config {
    uint32_t block_tokens;       /* tokens per KV block, e.g. 16 */
    uint32_t n_blocks;           /* KV blocks to allocate up front */
    wk_dtype kv_dtype;           /* WK_DTYPE_F16 (default) or WK_DTYPE_F32 */
    uint32_t max_batch_tokens;   /* most tokens in one forward */
    uint32_t max_seqs;           /* most sequences in one forward */
    uint32_t max_blocks_per_seq; /* block table row length (>= ceil(n_ctx / block_tokens)) */
    int n_threads;               /* CPU: worker threads (0 = all cores) */
    int device;                  /* CUDA: device ordinal */
} wk_backend_config;

/*
 * One forward step. Tokens are grouped by sequence: sequence s owns
 * tokens[seq_start[s] .. seq_start[s+1]) with consecutive positions starting at
 * positions[seq_start[s]]. Its KV for earlier positions is already in the cache; this step
 * writes KV for its new tokens, then attends causally over [0, last position].
 * A decode step is 1 token per sequence; a prefill chunk is many.
 */
typedef struct wk_batch {
    uint32_t n_seqs;
    uint32_t n_tokens;
    const int32_t *tokens;      /* (n_tokens) token ids, each < n_vocab (checked by engine) */
    const int32_t *positions;   /* (n_tokens) absolute positions */
    const uint32_t *seq_start;  /* (n_seqs + 1) offsets into tokens; seq_start[n_seqs] = n_tokens */
    const int32_t *block_table; /* (n_seqs, max_blocks_per_seq) physical block ids, row-major */
    const uint8_t *want_logits; /* (n_seqs) 1 = produce logits for this sequence's last token */
} wk_batch;

/*
 * Device sampling (the optional forward_sample op): the logits stay on the device and only the
 * sampled ids and the requested logprobs come back. The device applies exactly the steps of
 * wk_sampler_sample_sparse (sampler.h) in its order: logit_bias, penalties, greedy or
 * temperature / top-k / top-p / min-p and the inverse-CDF pick, walking the candidates in the
 * order the host sampler leaves them, so that the same u gives the same token; logprobs over
 * the biased and penalised logits. Sums run in a different order on a device, so a token can
 * differ from the host's only where u falls within rounding of a boundary between two
 * candidates, and logprobs agree to ~1e-5.
 *
 * Penalties go as a sparse list per sequence (distinct tokens with their counts; bounded),
 * built on the host every step. Why not a device-resident count table per slot: the list keeps
 * the backend stateless between steps, so preemption, recompute, prefix-cache hits and
 * cancellation need no device bookkeeping, and its cost is what the host sampler already pays
 * (one pass over the history); a sequence with more distinct tokens than the bound is sampled
 * on the host.
 *
 * For a later asynchronous step (the host prepares step N+1 while the device runs step N):
 * nothing in wk_dev_sample_in depends on the logits of step N except the penalty list, which
 * only gains the token sampled at step N; u for step N+1 is drawn from the RNG without knowing
 * that token (a sequence that finishes at N leaves its RNG unused). So an enqueue/wait split
 * of this op can take step N+1's input before step N's result is read, with the device
 * appending its own sampled token to the penalty list.
 */
#define WK_DEV_SAMPLE_MAX_PENALTY 1024 /* distinct history tokens per sequence (penalties on) */
#define WK_DEV_SAMPLE_MAX_TOP_K 1024   /* top_k beyond this (and < n_vocab) samples on the host */

typedef struct wk_dev_sample_seq {
    const wk_sampling_params *params; /* borrowed for the call; validated (wk_sampling_validate) */
    const wk_penalty_entry *pen;      /* (n_pen) distinct tokens; NULL when no penalty is on */
    uint32_t n_pen;                   /* <= WK_DEV_SAMPLE_MAX_PENALTY */
    double u;                         /* [0, 1): wk_rng_uniform of the sequence's RNG, drawn
                                         iff wk_sampling_draws(params); ignored otherwise */
} wk_dev_sample_seq;

typedef struct wk_dev_sample_in {
    uint32_t n;                    /* sequences of the batch with want_logits, in batch order */
    const wk_dev_sample_seq *seqs; /* (n) */
} wk_dev_sample_in;

/* Where a backend's decode steps (one token) spend their time, phase by phase (the profile
 * op). */
#define WK_PHASES_MAX 16
typedef struct wk_phases {
    uint32_t n;                      /* phases reported */
    const char *name[WK_PHASES_MAX]; /* static strings */
    int64_t ns[WK_PHASES_MAX];       /* time in each since the profile started */
    uint64_t steps;                  /* one-token steps timed */
} wk_phases;

typedef struct wk_backend_ops {
    const char *name; /* "cpu", "cuda" */

    /* create prepares weights and allocates the KV cache and scratch. The model must outlive
     * the backend. On failure *out is NULL, err holds one line; CM_ERR_NO_DEVICE when the
     * backend's hardware is absent, CM_ERR_NOMEM when the budget does not fit. */
    cm_err (*create)(const wk_model *model, const wk_backend_config *cfg, wk_backend **out,
                     char *err, size_t errlen);

    /* destroy frees everything the instance owns; NULL is fine. */
    void (*destroy)(wk_backend *be);

    /* forward runs one step. logits is (n_seqs, n_vocab) f32 in host memory; row s is
     * written iff want_logits[s]. Returns CM_ERR_BACKEND on a device failure (the instance
     * stays usable for later steps when the device recovers; see healthy()). */
    cm_err (*forward)(wk_backend *be, const wk_batch *batch, float *logits);

    /* Optional (NULL if absent): forward, then sampling on the device. out is (in->n): entry j
     * for the j-th sequence with want_logits; its token_id is -1 when no token was possible
     * (every logit -inf or NaN: wk_sampler_sample's CM_ERR_INVALID). Logits never reach the
     * host. CM_ERR_INVALID when in does not match the batch or exceeds a bound above (nothing
     * ran); CM_ERR_BACKEND as forward. in and out are borrowed for the call only. */
    cm_err (*forward_sample)(wk_backend *be, const wk_batch *batch, const wk_dev_sample_in *in,
                             wk_sample_result *out);

    /* Optional (NULL if absent): bytes of device memory free before create, so the engine can
     * size the KV cache as a fraction of it. */
    cm_err (*free_memory)(int device, size_t *free_bytes);

    /* Optional: false after an unrecoverable device error (the worker reports unhealthy). */
    int (*healthy)(const wk_backend *be);

    /* Optional (NULL if absent): reads once the weight bytes a decode step reads, with plain
     * loads on the backend's threads and no arithmetic, and reports them and the time taken:
     * the bandwidth floor of exactly the memory the weights live in (sluice-bench). Covers
     * the repacked weights only; *bytes is 0 when there are none. */
    cm_err (*read_weights)(wk_backend *be, uint64_t *bytes, int64_t *ns);

    /* Optional (NULL if absent): runs a one-token decode matmul over a slice of the weights
     * small enough to stay in the caches, over and over, on n_threads threads (0 = all of the
     * backend's), and reports the weight bytes it went through and the time taken: what the
     * decode's arithmetic reaches when memory costs nothing, the other ceiling beside the
     * bandwidth floor (sluice-bench). *bytes is 0 when no weight runs that way. */
    cm_err (*compute_weights)(wk_backend *be, int n_threads, uint64_t *bytes, int64_t *ns);

    /* Optional (NULL if absent): profile(be, 1, NULL) starts timing one-token steps phase by
     * phase, from zero; profile(be, 0, out) stops and fills out (out may be NULL). A clock
     * read per phase, so it is off unless asked for (sluice-bench). */
    cm_err (*profile)(wk_backend *be, int on, wk_phases *out);
} wk_backend_ops;

/* The CPU backend; always present. */
extern const wk_backend_ops wk_backend_cpu;

#define WK_BACKEND_MAX 8 /* backends in the registry, the CPU one included */

/*
 * wk_backend_register adds ops (borrowed: static storage) to the registry that wk_backend_find
 * searches; the CPU backend is in it from the start. Call at program start, before any other
 * thread uses the registry (not thread-safe). CM_ERR_INVALID for NULL ops or a NULL name,
 * CM_ERR_EXISTS when a backend of that name is there, CM_ERR_LIMIT past WK_BACKEND_MAX.
 */
cm_err wk_backend_register(const wk_backend_ops *ops);

/* wk_backend_find returns the registered table named name ("cpu", "cuda") or NULL. */
const wk_backend_ops *wk_backend_find(const char *name);

#ifdef SLUICE_HAVE_CUDA
extern const wk_backend_ops wk_backend_cuda; /* backend/cuda, in wk_cuda */
#endif

/*
 * wk_backend_register_linked registers the backends this program links besides the CPU one:
 * the CUDA backend where it links wk_cuda (which defines SLUICE_HAVE_CUDA for its users).
 * Inline, so that the reference is the program's and wk_core depends on no backend library.
 * Call once at program start (same limits as wk_backend_register).
 */
static inline cm_err wk_backend_register_linked(void) {
#ifdef SLUICE_HAVE_CUDA
    return wk_backend_register(&wk_backend_cuda);
#else
    return CM_OK;
#endif
}

#endif /* WK_BACKEND_H */
