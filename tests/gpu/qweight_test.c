/*
 * Tests for worker/backend/cuda/cuda_qweight.c (plain C, no CUDA: built and run everywhere):
 * every GGUF type with a device kind, rows of random blocks (every byte random, so scales of
 * every sign, subnormals, NaN and Inf included), repacked into the device layout and
 * dequantized from it, equal bit for bit to wk_dequantize_row of the original row; the part
 * sizes; rejected types and row lengths.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_qweight.h"
#include "quant.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint8_t rnd_byte(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint8_t)((rng_state * 2685821657736338717ULL) >> 56);
}

/* Writes a "typical" f16 scale (small positive or negative normal) at p, so that some rows of
 * the test look like real weights, not only random bits. */
static void typical_f16(uint8_t *p, int negative) {
    float v = (float)(rnd_byte() + 1) / 65536.0f * (negative ? -1.0f : 1.0f);
    uint16_t h = wk_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Offsets of the f16 scales in one block of t (at most 2), for typical rows. */
static int scale_offsets(wk_dtype t, int off[2]) {
    switch (t) {
    case WK_DTYPE_Q4_0:
    case WK_DTYPE_Q8_0:
        off[0] = 0;
        return 1;
    case WK_DTYPE_Q4_1:
    case WK_DTYPE_Q4_K:
    case WK_DTYPE_Q5_K:
        off[0] = 0;
        off[1] = 2;
        return 2;
    case WK_DTYPE_Q6_K:
        off[0] = 208;
        return 1;
    default:
        return 0;
    }
}

/* One row of `cols` elements of type t: repack, dequantize both ways, compare bits. */
static void check_row(wk_dtype t, int64_t cols, int typical) {
    const wk_cuda_qkind k = wk_cuda_qkind_of(t);
    const size_t row_bytes = wk_dtype_row_bytes(t, cols);
    const size_t qs_b = wk_cuda_q_qs_row_bytes(k, cols);
    const size_t sc_b = wk_cuda_q_sc_row_bytes(k, cols);
    const size_t sup_b = wk_cuda_q_sup_row_bytes(k, cols);
    CHECK(row_bytes > 0 && qs_b > 0 && sc_b > 0, "%s: sizes for %lld columns", wk_dtype_name(t),
          (long long)cols);
    uint8_t *src = malloc(row_bytes);
    /* guard bytes after each part catch writes past a row's slice */
    uint8_t *qs = malloc(qs_b + 16);
    uint8_t *sc = malloc(sc_b + 16);
    uint8_t *sup = malloc(sup_b + 16);
    float *ref = malloc(sizeof(float) * (size_t)cols);
    float *got = malloc(sizeof(float) * (size_t)cols);
    if (!src || !qs || !sc || !sup || !ref || !got) {
        printf("FATAL: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < row_bytes; i++) {
        src[i] = rnd_byte();
    }
    if (typical) {
        const size_t blk = wk_dtype_block_bytes(t);
        int off[2];
        int n = scale_offsets(t, off);
        for (size_t b = 0; b < row_bytes / blk; b++) {
            for (int i = 0; i < n; i++) {
                typical_f16(src + b * blk + off[i], (int)(b + (size_t)i) % 3 == 0);
            }
        }
    }
    memset(qs, 0xA5, qs_b + 16);
    memset(sc, 0xA5, sc_b + 16);
    memset(sup, 0xA5, sup_b + 16);
    CHECK(wk_cuda_q_repack_row(t, src, cols, qs, sc, sup_b ? sup : NULL) == 0, "%s: repack",
          wk_dtype_name(t));
    for (int i = 0; i < 16; i++) {
        CHECK(qs[qs_b + (size_t)i] == 0xA5 && sc[sc_b + (size_t)i] == 0xA5 &&
                  sup[sup_b + (size_t)i] == 0xA5,
              "%s: repack wrote past a part's row slice", wk_dtype_name(t));
    }
    wk_dequantize_row(t, src, ref, cols);
    memset(got, 0xFF, sizeof(float) * (size_t)cols);
    CHECK(wk_cuda_q_dequant_row(k, qs, sc, sup_b ? sup : NULL, cols, got) == 0, "%s: dequant",
          wk_dtype_name(t));
    int64_t first_bad = -1;
    for (int64_t i = 0; i < cols && first_bad < 0; i++) {
        if (memcmp(&ref[i], &got[i], 4) != 0) {
            first_bad = i;
        }
    }
    CHECK(first_bad < 0, "%s (%s row of %lld): element %lld is %a, the reference %a",
          wk_dtype_name(t), typical ? "typical" : "random-bits", (long long)cols,
          (long long)first_bad, first_bad >= 0 ? (double)got[first_bad] : 0.0,
          first_bad >= 0 ? (double)ref[first_bad] : 0.0);
    free(src);
    free(qs);
    free(sc);
    free(sup);
    free(ref);
    free(got);
}

static void test_exact(void) {
    const wk_dtype types[] = {WK_DTYPE_Q4_0, WK_DTYPE_Q4_1, WK_DTYPE_Q4_K,
                              WK_DTYPE_Q8_0, WK_DTYPE_Q5_K, WK_DTYPE_Q6_K};
    const int64_t cols[] = {256, 768, 4096};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
            for (int rep = 0; rep < 8; rep++) {
                check_row(types[i], cols[c], rep % 2);
            }
        }
    }
    /* the 32-element types also take rows that are not a multiple of 256 */
    check_row(WK_DTYPE_Q4_0, 96, 1);
    check_row(WK_DTYPE_Q4_1, 32, 1);
    check_row(WK_DTYPE_Q8_0, 160, 0);
}

static void test_sizes(void) {
    /* bits per weight of each kind at 4096 columns, from the part sizes */
    const struct {
        wk_cuda_qkind k;
        size_t bytes;
    } want[] = {
        {WK_CUDA_QK_Q4_0, 2048 + 256},      /* 4.5 bits */
        {WK_CUDA_QK_Q4_1, 2048 + 512},      /* 5 */
        {WK_CUDA_QK_Q4_K, 2048 + 256 + 64}, /* 4.625 */
        {WK_CUDA_QK_Q8_0, 4096 + 256},      /* 8.5 */
        {WK_CUDA_QK_Q5_K, 4096 + 256 + 64}, /* 8.625 */
        {WK_CUDA_QK_Q6_K, 4096 + 256 + 64},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        size_t b = wk_cuda_q_qs_row_bytes(want[i].k, 4096) +
                   wk_cuda_q_sc_row_bytes(want[i].k, 4096) +
                   wk_cuda_q_sup_row_bytes(want[i].k, 4096);
        CHECK(b == want[i].bytes, "%s: %zu bytes per 4096-row, want %zu",
              wk_cuda_qkind_name(want[i].k), b, want[i].bytes);
        /* every row slice keeps the next row 16-byte aligned at the model's sizes */
        CHECK(wk_cuda_q_qs_row_bytes(want[i].k, 4096) % 16 == 0, "qs alignment");
    }
}

static void test_rejects(void) {
    uint8_t buf[512] = {0};
    float out[256];
    CHECK(wk_cuda_qkind_of(WK_DTYPE_F16) == WK_CUDA_QK_NONE, "F16 stays f16");
    CHECK(wk_cuda_qkind_of(WK_DTYPE_BF16) == WK_CUDA_QK_NONE, "BF16 stays f16");
    CHECK(wk_cuda_qkind_of(WK_DTYPE_Q5_0) == WK_CUDA_QK_NONE, "Q5_0 has no device kind");
    CHECK(wk_cuda_qkind_of(WK_DTYPE_Q4_K) == WK_CUDA_QK_Q4_K, "Q4_K");
    CHECK(wk_cuda_q_qs_row_bytes(WK_CUDA_QK_Q4_K, 128) == 0, "K kinds need 256-multiples");
    CHECK(wk_cuda_q_qs_row_bytes(WK_CUDA_QK_Q4_0, 48) == 0, "48 columns do not fit Q4_0");
    CHECK(wk_cuda_q_qs_row_bytes(WK_CUDA_QK_NONE, 256) == 0, "NONE has no parts");
    CHECK(wk_cuda_q_sup_row_bytes(WK_CUDA_QK_Q4_1, 256) == 0, "Q4_1 has no sup part");
    CHECK(wk_cuda_q_repack_row(WK_DTYPE_F16, buf, 32, buf, buf, buf) == -1, "repack F16");
    CHECK(wk_cuda_q_repack_row(WK_DTYPE_Q4_K, buf, 32, buf, buf, buf) == -1, "repack Q4_K/32");
    CHECK(wk_cuda_q_repack_row(WK_DTYPE_Q6_K, buf, 256, buf, buf, NULL) == -1, "Q6_K needs sup");
    CHECK(wk_cuda_q_dequant_row(WK_CUDA_QK_N, buf, buf, buf, 256, out) == -1, "bad kind");
    CHECK(wk_cuda_q_dequant_row(WK_CUDA_QK_Q8_0, buf, buf, NULL, 31, out) == -1, "bad cols");
    CHECK(strcmp(wk_cuda_qkind_name(WK_CUDA_QK_Q6_K), "Q6_K") == 0, "name");
}

int main(void) {
    test_exact();
    test_sizes();
    test_rejects();
    if (failures) {
        printf("qweight_test: %d failure(s)\n", failures);
        return 1;
    }
    printf("qweight_test: all passed\n");
    return 0;
}
