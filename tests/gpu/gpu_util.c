/* gpu_util: see gpu_util.h. */
#include "gpu_util.h"

#include <math.h>
#include <time.h>

#include "quant.h"

int gu_device_ok(void) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count <= 0) {
        printf("no CUDA device: %s\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "driver reports 0 devices");
        (void)cudaGetLastError();
        return 0;
    }
    struct cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, 0);
    if (e != cudaSuccess) {
        printf("no CUDA device: cudaGetDeviceProperties: %s\n", cudaGetErrorString(e));
        return 0;
    }
    printf("device 0: %s, sm_%d%d, %d SMs, %.1f GiB\n", p.name, p.major, p.minor,
           p.multiProcessorCount, (double)p.totalGlobalMem / (1 << 30));
    if (p.major < 8) {
        printf("no CUDA device: compute capability %d.%d < 8.0\n", p.major, p.minor);
        return 0;
    }
    return 1;
}

double gu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t gu_next(gu_rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

float gu_uniform(gu_rng *r, float lo, float hi) {
    float u = (float)(gu_next(r) >> 40) * (1.0f / 16777216.0f);
    return lo + (hi - lo) * u;
}

float gu_normal(gu_rng *r) {
    float u1 = gu_uniform(r, 1e-7f, 1.0f);
    float u2 = gu_uniform(r, 0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

gu_err gu_compare(const float *got, const float *ref, size_t n) {
    gu_err e = {0};
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)ref[i]);
        if (r > e.max_abs_ref) {
            e.max_abs_ref = r;
        }
        if (!isfinite(got[i])) {
            e.n_bad++;
            continue;
        }
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > e.max_abs_diff) {
            e.max_abs_diff = d;
            e.worst = i;
        }
    }
    e.rel = e.max_abs_diff / (e.max_abs_ref > 1e-30 ? e.max_abs_ref : 1e-30);
    return e;
}

void gu_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        dst[i] = wk_f16_to_f32(src[i]);
    }
}

void gu_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        dst[i] = wk_f32_to_f16(src[i]);
    }
}

void *gu_xmalloc(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (p == NULL) {
        fprintf(stderr, "FATAL: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}
