/*
 * wk_cuda_backend: CUDA-specific extensions of the CUDA backend table (wk_backend_cuda, see
 * worker/backend.h for the generic contract). The engine only needs the table; the GPU tests
 * and the benchmark use the extras below.
 *
 * Representation: Q4_0/Q4_1/Q4_K (4-bit) and Q8_0/Q5_K/Q6_K (8-bit) matrices stay quantized
 * on the device in the layout of cuda_qweight.h (weights "native", the default); every other
 * matrix, and every matrix with weights "f16", is f16 (quantized types dequantized at load,
 * BF16 converted). Q/K/V are fused into one (q+k+v rows, n_embd) matrix and gate/up into one
 * (2 n_ff, n_embd) matrix (in parts where their types differ); the token embedding table is
 * f16; norms and biases f32; activations f32 in the residual stream and f16 at GEMM inputs;
 * paged KV cache f16. Details and reasons: docs/cuda.md.
 */
#ifndef WK_CUDA_BACKEND_H
#define WK_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const wk_backend_ops wk_backend_cuda;

typedef enum wk_cuda_gemv_mode {
    WK_CUDA_GEMV_AUTO = 0,   /* custom GEMV up to gemv_max_rows rows, cuBLAS above */
    WK_CUDA_GEMV_CUBLAS = 1, /* always cuBLAS */
    WK_CUDA_GEMV_CUSTOM = 2, /* same as AUTO (custom where it applies) */
} wk_cuda_gemv_mode;

typedef enum wk_cuda_weights {
    WK_CUDA_WEIGHTS_NATIVE = 0, /* quantized types with a device kind stay quantized */
    WK_CUDA_WEIGHTS_F16 = 1,    /* every matrix expanded to f16 at load (the earlier path) */
} wk_cuda_weights;

typedef struct wk_cuda_options {
    /* Synthetic-on-device weights (benchmarks at big shapes): tensors of the model whose
     * data is NULL are filled on the device with pseudo-random f16 values (matrices,
     * amplitude 1/sqrt(in_features); the embedding table amplitude 1) or ones (norms),
     * seeded by synthetic_seed. Their type must be F16 (or F32 for norms). With 0, a NULL
     * tensor that is required fails create with CM_ERR_INVALID. */
    int synthetic_device;
    uint64_t synthetic_seed;
    /* CUDA graphs for decode steps: 1 = on (default), 0 = off. Env SLUICE_CUDA_GRAPHS=0 also
     * turns them off. */
    int use_graphs;
    wk_cuda_gemv_mode gemv_mode;
    /* Most rows that take the custom GEMV (1..8); above it cuBLAS. Default 4: on the first H200
     * run the GEMV at 8 rows (12.6 ms/step) was slower than cuBLAS at 32 (8.3 ms). Env
     * SLUICE_CUDA_GEMV_MAX_ROWS overrides. */
    int gemv_max_rows;
    /* Flash prefill attention (tensor cores) when the head_dim allows: 1 = on (default). */
    int use_flash;
    /* Fused decode GEMVs (wk_cuda_gemv_fused: RMSNorm into QKV and gate|up, SwiGLU into down,
     * residual adds into O and down; 6 instead of 9 kernels per layer) for steps of 1..8 rows
     * when the GEMV path is used: 1 = on. Default off until measured on a GPU; env
     * SLUICE_CUDA_FUSE=1 turns it on. Applies only when every layer matrix is f16 (weights f16
     * or an f16 model). */
    int fuse_decode;
    /* Programmatic dependent launch for the decode-path kernels (wk_cuda_ops_set_pdl; sm_90+
     * only, ignored below): 1 = on (default: measured faster and checked equal on an H200);
     * env SLUICE_CUDA_PDL=0 turns it off. Process-wide: the last created instance's choice
     * applies. */
    int use_pdl;
    /* Weight representation (default NATIVE); env SLUICE_CUDA_WEIGHTS=f16|native overrides
     * (anything else fails create with CM_ERR_INVALID), so scripts/gpu-check compares both
     * through the same worker binary. */
    wk_cuda_weights weights;
    /* Most rows that take the quantized GEMV (0..8, default 8: it reads the quantized bytes
     * once, while the cuBLAS path first writes and reads an f16 copy of the weights); above
     * it a dequantized tile and cuBLAS. Env SLUICE_CUDA_QGEMV_MAX_ROWS overrides. */
    int qgemv_max_rows;
} wk_cuda_options;

/* wk_cuda_options_default: synthetic off, graphs on, gemv auto (4 rows), flash on, fused
 * decode off, PDL on (sm_90+), weights native, quantized GEMV up to 8 rows. */
void wk_cuda_options_default(wk_cuda_options *o);

/* wk_cuda_create_ex is the table's create with options (create == create_ex with defaults).
 * Same ownership and error contract as wk_backend_ops.create. */
cm_err wk_cuda_create_ex(const wk_model *model, const wk_backend_config *cfg,
                         const wk_cuda_options *opt, wk_backend **out, char *err, size_t errlen);

/* wk_cuda_set_gemv_mode / wk_cuda_set_graphs change the options of a live instance (the
 * benchmark compares paths in one run). Graphs already captured are kept or dropped
 * accordingly. Engine thread only. */
void wk_cuda_set_gemv_mode(wk_backend *be, wk_cuda_gemv_mode mode);
void wk_cuda_set_graphs(wk_backend *be, int on);
void wk_cuda_set_flash(wk_backend *be, int on);
void wk_cuda_set_fuse(wk_backend *be, int on);
void wk_cuda_set_pdl(wk_backend *be, int on);             /* no-op below sm_90 */
void wk_cuda_set_gemv_max_rows(wk_backend *be, int rows); /* clamped to 0..8 */

/* Facts about a live instance, for logs and benchmarks. */
typedef struct wk_cuda_info {
    char device_name[256];
    int cc_major;
    int cc_minor;
    int sm_count;
    size_t weight_bytes_device; /* bytes of weights read by one full forward (every matrix in
                                   its device representation, tied output counted once) */
    size_t weight_arena_bytes;  /* all weights on the device (embedding table included) */
    size_t weight_quant_bytes;  /* of which matrices kept quantized */
    size_t dequant_tile_bytes;  /* f16 tile of the quantized cuBLAS path (0: none) */
    int weights_native;         /* 1 = WK_CUDA_WEIGHTS_NATIVE */
    int qgemv_max_rows;
    size_t kv_bytes_device;
    size_t scratch_bytes_device;
    uint32_t graph_buckets;    /* number of decode graphs captured so far */
    uint32_t graph_max_bucket; /* largest decode bucket (0 = graphs off) */
    int fuse_decode;           /* options in effect (after env overrides) */
    int use_pdl;
    int gemv_max_rows;
} wk_cuda_info;

cm_err wk_cuda_get_info(const wk_backend *be, wk_cuda_info *info);

/* Per-category device time of the last eager forward (CUDA events around every op; graph
 * replays are not profiled). For benchmarks: profiling serialises nothing but adds events. */
typedef enum wk_cuda_prof_cat {
    WK_CUDA_PROF_GEMM = 0, /* cuBLAS GEMMs and GEMVs (fused GEMVs included) */
    WK_CUDA_PROF_ATTN = 1, /* decode / flash attention */
    WK_CUDA_PROF_NORM = 2, /* add + RMSNorm */
    WK_CUDA_PROF_ROPE = 3, /* bias + RoPE + KV store */
    WK_CUDA_PROF_SWIGLU = 4,
    WK_CUDA_PROF_OTHER = 5, /* embedding */
    WK_CUDA_PROF_N = 6
} wk_cuda_prof_cat;

/* wk_cuda_set_profile turns per-op events on/off (allocates them on first use; CM_ERR_BACKEND
 * if that fails). wk_cuda_get_profile fills ms[WK_CUDA_PROF_N] for the last profiled forward
 * and returns the number of ops timed (0 if none). Engine thread only. */
cm_err wk_cuda_set_profile(wk_backend *be, int on);
int wk_cuda_get_profile(const wk_backend *be, double *ms);

/* wk_cuda_last_error: the message of the last failed forward ("" if none); valid until the
 * next forward. */
const char *wk_cuda_last_error(const wk_backend *be);

#ifdef __cplusplus
}
#endif

#endif /* WK_CUDA_BACKEND_H */
