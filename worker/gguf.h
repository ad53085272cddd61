/*
 * wk_gguf: a validating reader of GGUF (v2 and v3) files, memory-mapped.
 *
 * Opening checks everything against the file size and sane bounds before anything is used:
 * counts, string lengths, array lengths, tensor dims, types, offsets and alignment. A
 * truncated, corrupt or hostile file gives CM_ERR_FORMAT (or CM_ERR_UNSUPPORTED for a valid
 * but unknown tensor type) with a one-line message naming the problem; it never reads out of
 * bounds. After a successful open every accessor is bounds-safe and the returned pointers
 * stay valid until wk_gguf_close.
 *
 * Not thread-safe to close while in use; all read accessors are safe from many threads.
 */
#ifndef WK_GGUF_H
#define WK_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "cm_err.h"
#include "quant.h"

typedef enum wk_gguf_type {
    WK_GGUF_UINT8 = 0,
    WK_GGUF_INT8 = 1,
    WK_GGUF_UINT16 = 2,
    WK_GGUF_INT16 = 3,
    WK_GGUF_UINT32 = 4,
    WK_GGUF_INT32 = 5,
    WK_GGUF_FLOAT32 = 6,
    WK_GGUF_BOOL = 7,
    WK_GGUF_STRING = 8,
    WK_GGUF_ARRAY = 9,
    WK_GGUF_UINT64 = 10,
    WK_GGUF_INT64 = 11,
    WK_GGUF_FLOAT64 = 12,
} wk_gguf_type;

/* A string inside the mapping: NOT NUL-terminated. */
typedef struct wk_gguf_str {
    const char *ptr;
    uint64_t len;
} wk_gguf_str;

/* An array value: n elements of elem_type. For numeric types data points to n packed
 * little-endian elements inside the mapping (possibly unaligned: read with memcpy). For
 * strings use wk_gguf_arr_str. Nested arrays are rejected at open. */
typedef struct wk_gguf_arr {
    wk_gguf_type elem_type;
    uint64_t n;
    const void *data;
    /* String arrays from wk_gguf_get_arr: byte offset of element i from data, so that
     * wk_gguf_arr_str is O(1). Owned by the wk_gguf. NULL means "walk" (O(i)). */
    const uint64_t *str_offsets;
} wk_gguf_arr;

#define WK_GGUF_MAX_DIMS 4

typedef struct wk_gguf_tensor {
    wk_gguf_str name;
    uint32_t n_dims;
    int64_t ne[WK_GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) length; unused dims = 1 */
    wk_dtype type;
    const void *data; /* inside the mapping, aligned as the file says */
    size_t nbytes;
} wk_gguf_tensor;

typedef struct wk_gguf wk_gguf;

/* wk_gguf_open maps and validates path. On success *out is owned by the caller (free with
 * wk_gguf_close). On failure *out is NULL and err (if non-NULL, errlen > 0) holds a one-line
 * message such as "tensor 'blk.0.attn_q.weight' data ends past end of file (offset ...)". */
cm_err wk_gguf_open(const char *path, wk_gguf **out, char *err, size_t errlen);

/* wk_gguf_open_memory validates an in-memory image (the fuzzer's entry point). The buffer
 * is borrowed and must outlive the returned object. Same messages as wk_gguf_open. */
cm_err wk_gguf_open_memory(const void *data, size_t size, wk_gguf **out, char *err, size_t errlen);

/* wk_gguf_close unmaps and frees; NULL is fine. */
void wk_gguf_close(wk_gguf *g);

/* wk_gguf_drop_pages tells the kernel that the whole pages inside [p, p + len), bytes of g's
 * file mapping, are not needed for now: they leave the process's memory and are read back
 * from the file if touched again. Contents never change. A no-op for in-memory GGUFs and for
 * ranges outside the mapping. For a backend that keeps its own copy of some weights. */
void wk_gguf_drop_pages(const wk_gguf *g, const void *p, size_t len);

uint32_t wk_gguf_version(const wk_gguf *g);
uint64_t wk_gguf_n_kv(const wk_gguf *g);
uint64_t wk_gguf_n_tensors(const wk_gguf *g);

/* Metadata lookups by key. Each returns CM_ERR_NOT_FOUND when the key is absent and
 * CM_ERR_FORMAT when it has an incompatible type (integers convert between widths when the
 * value fits; get_f32 accepts float32/float64). */
cm_err wk_gguf_get_u32(const wk_gguf *g, const char *key, uint32_t *out);
cm_err wk_gguf_get_i32(const wk_gguf *g, const char *key, int32_t *out);
cm_err wk_gguf_get_f32(const wk_gguf *g, const char *key, float *out);
cm_err wk_gguf_get_bool(const wk_gguf *g, const char *key, bool *out);
cm_err wk_gguf_get_str(const wk_gguf *g, const char *key, wk_gguf_str *out);
cm_err wk_gguf_get_arr(const wk_gguf *g, const char *key, wk_gguf_arr *out);

/* wk_gguf_arr_str returns element i of a string array (i < arr->n, checked: CM_ERR_INVALID). */
cm_err wk_gguf_arr_str(const wk_gguf_arr *arr, uint64_t i, wk_gguf_str *out);

/* wk_gguf_find_tensor returns the tensor named name or NULL. Pointer owned by g. */
const wk_gguf_tensor *wk_gguf_find_tensor(const wk_gguf *g, const char *name);

/* wk_gguf_tensor_at returns tensor i (< n_tensors) or NULL. */
const wk_gguf_tensor *wk_gguf_tensor_at(const wk_gguf *g, uint64_t i);

#endif /* WK_GGUF_H */
