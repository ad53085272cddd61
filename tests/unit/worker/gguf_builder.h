/*
 * gguf_builder: writes GGUF images in memory for tests (header-only, test code only).
 *
 * Usage: gb_begin, then exactly n_kv gb_kv_* calls, then n_tensors gb_tensor calls (offsets
 * relative to the data section), then gb_data_start (pads to the alignment) and the tensor
 * bytes via gb_bytes/gb_zeros. The buffer grows as needed; gb_free releases it. Allocation
 * failure aborts (tests only).
 */
#ifndef WK_TEST_GGUF_BUILDER_H
#define WK_TEST_GGUF_BUILDER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct gb {
    uint8_t *buf;
    size_t len, cap;
} gb;

static inline void gb_bytes(gb *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) {
            cap *= 2;
        }
        b->buf = realloc(b->buf, cap);
        if (b->buf == NULL) {
            abort();
        }
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->buf + b->len, p, n);
    }
    b->len += n;
}

static inline void gb_zeros(gb *b, size_t n) {
    uint8_t z[64] = {0};
    while (n > 0) {
        size_t k = n < sizeof(z) ? n : sizeof(z);
        gb_bytes(b, z, k);
        n -= k;
    }
}

static inline void gb_u32(gb *b, uint32_t v) {
    gb_bytes(b, &v, 4);
}

static inline void gb_u64(gb *b, uint64_t v) {
    gb_bytes(b, &v, 8);
}

static inline void gb_str(gb *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_bytes(b, s, strlen(s));
}

static inline void gb_begin(gb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    memset(b, 0, sizeof(*b));
    gb_bytes(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

static inline void gb_kv_u32(gb *b, const char *key, uint32_t v) {
    gb_str(b, key);
    gb_u32(b, 4);
    gb_u32(b, v);
}

static inline void gb_kv_i32(gb *b, const char *key, int32_t v) {
    gb_str(b, key);
    gb_u32(b, 5);
    gb_bytes(b, &v, 4);
}

static inline void gb_kv_f32(gb *b, const char *key, float v) {
    gb_str(b, key);
    gb_u32(b, 6);
    gb_bytes(b, &v, 4);
}

static inline void gb_kv_bool(gb *b, const char *key, int v) {
    uint8_t x = (uint8_t)v;
    gb_str(b, key);
    gb_u32(b, 7);
    gb_bytes(b, &x, 1);
}

static inline void gb_kv_str(gb *b, const char *key, const char *v) {
    gb_str(b, key);
    gb_u32(b, 8);
    gb_str(b, v);
}

static inline void gb_kv_arr_str(gb *b, const char *key, uint64_t n, const char *const *v) {
    gb_str(b, key);
    gb_u32(b, 9);
    gb_u32(b, 8);
    gb_u64(b, n);
    for (uint64_t i = 0; i < n; i++) {
        gb_str(b, v[i]);
    }
}

static inline void gb_kv_arr_i32(gb *b, const char *key, uint64_t n, const int32_t *v) {
    gb_str(b, key);
    gb_u32(b, 9);
    gb_u32(b, 5);
    gb_u64(b, n);
    gb_bytes(b, v, 4 * n);
}

static inline void gb_tensor(gb *b, const char *name, uint32_t n_dims, const int64_t *ne,
                             uint32_t type, uint64_t offset) {
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) {
        gb_u64(b, (uint64_t)ne[i]);
    }
    gb_u32(b, type);
    gb_u64(b, offset);
}

static inline void gb_data_start(gb *b, size_t alignment) {
    size_t pad = (alignment - b->len % alignment) % alignment;
    gb_zeros(b, pad);
}

static inline void gb_free(gb *b) {
    free(b->buf);
    memset(b, 0, sizeof(*b));
}

#endif /* WK_TEST_GGUF_BUILDER_H */
