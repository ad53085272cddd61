/*
 * gpu_util: small helpers shared by the GPU test and benchmark programs (tests/gpu): device
 * discovery with a clean skip, a seeded PRNG, error metrics, checked CUDA calls, timing.
 * Single-threaded test programs only.
 */
#ifndef GPU_UTIL_H
#define GPU_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exit code meaning "skipped" (ctest SKIP_RETURN_CODE, scripts/gpu-check). */
#define GU_SKIP 77

/* GU_CUDA(call): on failure prints file:line, the call and the CUDA error, then exits 1 (test
 * programs only: a broken device makes every later result meaningless). */
#define GU_CUDA(call)                                                                              \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "FATAL %s:%d: %s: %s\n", __FILE__, __LINE__, #call,                    \
                    cudaGetErrorString(e_));                                                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* gu_device_ok prints the device (or why there is none) and returns 1 when device 0 is usable. */
int gu_device_ok(void);

/* Seconds on a monotonic clock. */
double gu_now(void);

/* xorshift64* PRNG; state must be nonzero. */
typedef struct gu_rng {
    uint64_t s;
} gu_rng;
uint64_t gu_next(gu_rng *r);
float gu_uniform(gu_rng *r, float lo, float hi); /* [lo, hi) */
float gu_normal(gu_rng *r);                      /* N(0, 1), Box-Muller */

/* Error of got against ref (n values): max |got - ref| / max(max |ref|, 1e-30), and whether
 * got has a NaN/Inf (a poisoned output that was never written shows up as NaN). */
typedef struct gu_err {
    double max_abs_ref;
    double max_abs_diff;
    double rel;   /* max_abs_diff / max_abs_ref */
    size_t n_bad; /* NaN or Inf in got */
    size_t worst; /* index of the largest difference */
} gu_err;
gu_err gu_compare(const float *got, const float *ref, size_t n);

/* f16 helpers (host) built on worker/quant.h's conversions. */
void gu_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void gu_f32_to_f16(const float *src, uint16_t *dst, size_t n);

/* Allocation that exits on failure (host) */
void *gu_xmalloc(size_t bytes);

#ifdef __cplusplus
}
#endif

#endif /* GPU_UTIL_H */
