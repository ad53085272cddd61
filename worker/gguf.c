/*
 * wk_gguf: validating GGUF v2/v3 reader.
 *
 * The whole header (metadata and tensor infos) is parsed once at open through a bounded
 * cursor; every length is checked against the bytes that remain before it is used. Values
 * are kept as pointers into the image, so lookups after open are plain bounds-safe reads.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* qsort_r */
#endif
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Sane bounds: far above any real model, far below what would exhaust memory. */
#define MAX_TENSORS (1u << 20)
#define MAX_KV (1u << 20)
#define MAX_KEY_LEN 65535u
#define MAX_NAME_LEN 65535u
#define MAX_ALIGNMENT (1u << 20)
#define DEFAULT_ALIGNMENT 32u
#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */

typedef struct kv {
    wk_gguf_str key;
    wk_gguf_type type;
    const uint8_t *val; /* scalar value bytes, or string (len-prefixed) */
    wk_gguf_arr arr;    /* when type == ARRAY */
} kv;

struct wk_gguf {
    const uint8_t *base;
    size_t size;
    int mapped; /* 1 when base came from mmap (unmapped at close) */
    uint32_t version;
    uint64_t n_kv;
    uint64_t n_tensors;
    kv *kvs;
    wk_gguf_tensor *tensors;
    uint32_t *kv_sorted;     /* (n_kv) indices of kvs sorted by key, for binary search */
    uint32_t *tensor_sorted; /* (n_tensors) indices of tensors sorted by name */
    uint32_t alignment;
};

typedef struct cursor {
    const uint8_t *p;
    size_t left;
} cursor;

static int take(cursor *c, size_t n, const uint8_t **out) {
    if (n > c->left) {
        return -1;
    }
    *out = c->p;
    c->p += n;
    c->left -= n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v) {
    const uint8_t *p;
    if (take(c, 4, &p) != 0) {
        return -1;
    }
    memcpy(v, p, 4);
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v) {
    const uint8_t *p;
    if (take(c, 8, &p) != 0) {
        return -1;
    }
    memcpy(v, p, 8);
    return 0;
}

static int rd_str(cursor *c, uint64_t max_len, wk_gguf_str *s) {
    uint64_t n;
    const uint8_t *p;
    if (rd_u64(c, &n) != 0 || n > max_len || n > c->left || take(c, (size_t)n, &p) != 0) {
        return -1;
    }
    s->ptr = (const char *)p;
    s->len = n;
    return 0;
}

/* Byte size of one scalar of type t, 0 for string/array/unknown. */
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case WK_GGUF_UINT8:
    case WK_GGUF_INT8:
    case WK_GGUF_BOOL:
        return 1;
    case WK_GGUF_UINT16:
    case WK_GGUF_INT16:
        return 2;
    case WK_GGUF_UINT32:
    case WK_GGUF_INT32:
    case WK_GGUF_FLOAT32:
        return 4;
    case WK_GGUF_UINT64:
    case WK_GGUF_INT64:
    case WK_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

static void str_to_buf(wk_gguf_str s, char *buf, size_t n) {
    size_t len = s.len < n - 1 ? (size_t)s.len : n - 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        buf[i] = (ch >= 32 && ch < 127) ? (char)ch : '?';
    }
    buf[len] = '\0';
}

static int str_eq(wk_gguf_str s, const char *z) {
    size_t n = strlen(z);
    return s.len == n && memcmp(s.ptr, z, n) == 0;
}

static int str_cmp(wk_gguf_str a, wk_gguf_str b) {
    size_t n = a.len < b.len ? (size_t)a.len : (size_t)b.len;
    int c = memcmp(a.ptr, b.ptr, n);
    if (c != 0) {
        return c;
    }
    return (a.len > b.len) - (a.len < b.len);
}

static int cmp_str_idx_kv(const void *a, const void *b, void *ctx) {
    const kv *kvs = ctx;
    return str_cmp(kvs[*(const uint32_t *)a].key, kvs[*(const uint32_t *)b].key);
}

static int cmp_str_idx_t(const void *a, const void *b, void *ctx) {
    const wk_gguf_tensor *ts = ctx;
    return str_cmp(ts[*(const uint32_t *)a].name, ts[*(const uint32_t *)b].name);
}

/* Sorts indices 0..n-1 by name into *sorted (owned by the caller) and checks that no two
 * names repeat: O(n log n) even for hostile files. Returns 1 with *dup set on a duplicate, -1
 * when out of memory. */
static int find_duplicate(uint64_t n, int (*cmp)(const void *, const void *, void *), void *ctx,
                          uint64_t *dup, uint32_t **sorted) {
    uint32_t *idx = malloc((size_t)(n ? n : 1) * sizeof(*idx));
    if (idx == NULL) {
        return -1;
    }
    *sorted = idx;
    for (uint64_t i = 0; i < n; i++) {
        idx[i] = (uint32_t)i;
    }
    qsort_r(idx, (size_t)n, sizeof(*idx), cmp, ctx);
    int found = 0;
    for (uint64_t i = 1; i < n; i++) {
        if (cmp(&idx[i - 1], &idx[i], ctx) == 0) {
            *dup = idx[i];
            found = 1;
            break;
        }
    }
    return found;
}

static cm_err parse_value(cursor *c, kv *e, char *err, size_t errlen, const char *key) {
    size_t sz = scalar_size(e->type);
    if (sz > 0) {
        if (take(c, sz, &e->val) != 0) {
            return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s': value truncated", key);
        }
        if (e->type == WK_GGUF_BOOL && e->val[0] > 1) {
            return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s': bool value %u is not 0/1",
                           key, e->val[0]);
        }
        return CM_OK;
    }
    if (e->type == WK_GGUF_STRING) {
        wk_gguf_str s;
        e->val = c->p;
        if (rd_str(c, UINT64_MAX, &s) != 0) {
            return cm_errf(CM_ERR_FORMAT, err, errlen,
                           "metadata '%s': string length exceeds remaining bytes", key);
        }
        return CM_OK;
    }
    if (e->type == WK_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (rd_u32(c, &et) != 0 || rd_u64(c, &n) != 0) {
            return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s': array header truncated",
                           key);
        }
        if (et == WK_GGUF_ARRAY) {
            return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s': nested arrays not supported",
                           key);
        }
        e->arr.elem_type = (wk_gguf_type)et;
        e->arr.n = n;
        e->arr.data = c->p;
        size_t esz = scalar_size(et);
        if (esz > 0) {
            if (n > c->left / esz) {
                return cm_errf(
                    CM_ERR_FORMAT, err, errlen,
                    "metadata '%s': array of %" PRIu64 " elements exceeds remaining bytes", key, n);
            }
            const uint8_t *p;
            take(c, (size_t)n * esz, &p);
            return CM_OK;
        }
        if (et != WK_GGUF_STRING) {
            return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s': unknown array type %u", key,
                           et);
        }
        /* every string takes at least 8 bytes: a cheap bound before walking them */
        if (n > c->left / 8) {
            return cm_errf(CM_ERR_FORMAT, err, errlen,
                           "metadata '%s': string array of %" PRIu64
                           " elements exceeds remaining bytes",
                           key, n);
        }
        uint64_t *offs = malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
        if (offs == NULL) {
            return cm_errf(CM_ERR_NOMEM, err, errlen, "metadata '%s': out of memory", key);
        }
        e->arr.str_offsets = offs;
        for (uint64_t i = 0; i < n; i++) {
            wk_gguf_str s;
            offs[i] = (uint64_t)(c->p - (const uint8_t *)e->arr.data);
            if (rd_str(c, UINT64_MAX, &s) != 0) {
                return cm_errf(CM_ERR_FORMAT, err, errlen,
                               "metadata '%s': string %" PRIu64 " exceeds remaining bytes", key, i);
            }
        }
        return CM_OK;
    }
    return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s': unknown value type %u", key,
                   (unsigned)e->type);
}

static cm_err parse(wk_gguf *g, char *err, size_t errlen) {
    cursor c = {g->base, g->size};
    uint32_t magic;
    char name[96];
    if (rd_u32(&c, &magic) != 0 || magic != GGUF_MAGIC) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "not a GGUF file (bad magic)");
    }
    if (rd_u32(&c, &g->version) != 0) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "file truncated in header");
    }
    if (g->version != 2 && g->version != 3) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "unsupported GGUF version %u (need 2 or 3)",
                       g->version);
    }
    if (rd_u64(&c, &g->n_tensors) != 0 || rd_u64(&c, &g->n_kv) != 0) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "file truncated in header");
    }
    if (g->n_tensors > MAX_TENSORS) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "tensor count %" PRIu64 " exceeds limit %u",
                       g->n_tensors, MAX_TENSORS);
    }
    if (g->n_kv > MAX_KV) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata count %" PRIu64 " exceeds limit %u",
                       g->n_kv, MAX_KV);
    }
    /* Each kv needs >= 12 bytes and each tensor info >= 24: reject counts the file cannot hold
     * before allocating for them. */
    if (g->n_kv > c.left / 12 || g->n_tensors > c.left / 24) {
        return cm_errf(CM_ERR_FORMAT, err, errlen,
                       "counts (%" PRIu64 " metadata, %" PRIu64
                       " tensors) exceed what the file size allows",
                       g->n_kv, g->n_tensors);
    }
    g->kvs = calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof(kv));
    g->tensors = calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof(wk_gguf_tensor));
    if (g->kvs == NULL || g->tensors == NULL) {
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory for GGUF index");
    }

    g->alignment = DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        kv *e = &g->kvs[i];
        uint32_t t;
        if (rd_str(&c, MAX_KEY_LEN, &e->key) != 0) {
            return cm_errf(CM_ERR_FORMAT, err, errlen,
                           "metadata %" PRIu64 ": key truncated or longer than %u bytes", i,
                           MAX_KEY_LEN);
        }
        str_to_buf(e->key, name, sizeof(name));
        if (e->key.len == 0) {
            return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata %" PRIu64 ": empty key", i);
        }
        if (rd_u32(&c, &t) != 0) {
            return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s': type truncated", name);
        }
        e->type = (wk_gguf_type)t;
        cm_err rv = parse_value(&c, e, err, errlen, name);
        if (rv != CM_OK) {
            return rv;
        }
        if (str_eq(e->key, "general.alignment")) {
            uint32_t a;
            if (e->type != WK_GGUF_UINT32) {
                return cm_errf(CM_ERR_FORMAT, err, errlen, "general.alignment must be uint32");
            }
            memcpy(&a, e->val, 4);
            if (a == 0 || (a & (a - 1)) != 0 || a > MAX_ALIGNMENT) {
                return cm_errf(CM_ERR_FORMAT, err, errlen,
                               "general.alignment %u is not a power of two <= %u", a,
                               MAX_ALIGNMENT);
            }
            g->alignment = a;
        }
    }
    uint64_t dup;
    int d = find_duplicate(g->n_kv, cmp_str_idx_kv, g->kvs, &dup, &g->kv_sorted);
    if (d < 0) {
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory checking keys");
    }
    if (d > 0) {
        str_to_buf(g->kvs[dup].key, name, sizeof(name));
        return cm_errf(CM_ERR_FORMAT, err, errlen, "duplicate metadata key '%s'", name);
    }

    uint64_t offsets_end_max = 0;
    uint64_t *offs = calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof(uint64_t));
    if (offs == NULL) {
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory for tensor offsets");
    }
    cm_err rv = CM_OK;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        wk_gguf_tensor *t = &g->tensors[i];
        uint32_t nd, type;
        if (rd_str(&c, MAX_NAME_LEN, &t->name) != 0) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                         "tensor %" PRIu64 ": name truncated or longer than %u bytes", i,
                         MAX_NAME_LEN);
            goto out;
        }
        str_to_buf(t->name, name, sizeof(name));
        if (t->name.len == 0) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor %" PRIu64 ": empty name", i);
            goto out;
        }
        if (rd_u32(&c, &nd) != 0) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor '%s': info truncated", name);
            goto out;
        }
        if (nd == 0 || nd > WK_GGUF_MAX_DIMS) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor '%s': %u dims (need 1..%d)", name, nd,
                         WK_GGUF_MAX_DIMS);
            goto out;
        }
        t->n_dims = nd;
        uint64_t nel = 1;
        for (uint32_t k = 0; k < WK_GGUF_MAX_DIMS; k++) {
            t->ne[k] = 1;
        }
        for (uint32_t k = 0; k < nd; k++) {
            uint64_t v;
            if (rd_u64(&c, &v) != 0) {
                rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor '%s': info truncated", name);
                goto out;
            }
            if (v == 0 || v > (uint64_t)INT64_MAX) {
                rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor '%s': dim %u is %" PRIu64, name, k,
                             v);
                goto out;
            }
            if (nel > (uint64_t)INT64_MAX / v) {
                rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor '%s': element count overflows",
                             name);
                goto out;
            }
            nel *= v;
            t->ne[k] = (int64_t)v;
        }
        if (rd_u32(&c, &type) != 0 || rd_u64(&c, &offs[i]) != 0) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor '%s': info truncated", name);
            goto out;
        }
        if (!wk_dtype_supported(type)) {
            rv = cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "tensor '%s': unsupported type %u", name,
                         type);
            goto out;
        }
        t->type = (wk_dtype)type;
        size_t row = wk_dtype_row_bytes(t->type, t->ne[0]);
        if (row == 0) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                         "tensor '%s': row length %" PRId64 " not a multiple of %s block size %u",
                         name, t->ne[0], wk_dtype_name(type), wk_dtype_block_elems(t->type));
            goto out;
        }
        uint64_t rows = nel / (uint64_t)t->ne[0];
        if (rows > (uint64_t)SIZE_MAX / row) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor '%s': byte size overflows", name);
            goto out;
        }
        t->nbytes = (size_t)(rows * row);
        if (offs[i] % g->alignment != 0) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                         "tensor '%s': offset %" PRIu64 " not aligned to %u", name, offs[i],
                         g->alignment);
            goto out;
        }
        if (offs[i] > UINT64_MAX - t->nbytes) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tensor '%s': offset overflows", name);
            goto out;
        }
        if (offs[i] + t->nbytes > offsets_end_max) {
            offsets_end_max = offs[i] + t->nbytes;
        }
    }
    d = find_duplicate(g->n_tensors, cmp_str_idx_t, g->tensors, &dup, &g->tensor_sorted);
    if (d < 0) {
        rv = cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory checking tensor names");
        goto out;
    }
    if (d > 0) {
        str_to_buf(g->tensors[dup].name, name, sizeof(name));
        rv = cm_errf(CM_ERR_FORMAT, err, errlen, "duplicate tensor name '%s'", name);
        goto out;
    }

    /* Data section starts at the next multiple of the alignment after the header. */
    uint64_t hdr = (uint64_t)(c.p - g->base);
    uint64_t data_start = (hdr + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors > 0 && data_start > g->size) {
        rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                     "data section start %" PRIu64 " past end of file (%zu bytes)", data_start,
                     g->size);
        goto out;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        wk_gguf_tensor *t = &g->tensors[i];
        uint64_t avail = g->size - data_start;
        if (offs[i] > avail || t->nbytes > avail - offs[i]) {
            str_to_buf(t->name, name, sizeof(name));
            rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                         "tensor '%s' data ends past end of file (offset %" PRIu64
                         ", %zu bytes, %" PRIu64 " available)",
                         name, data_start + offs[i], t->nbytes, avail);
            goto out;
        }
        t->data = g->base + data_start + offs[i];
    }
    (void)offsets_end_max;
out:
    free(offs);
    return rv;
}

static cm_err open_image(const uint8_t *base, size_t size, int mapped, wk_gguf **out, char *err,
                         size_t errlen) {
    wk_gguf *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory");
    }
    g->base = base;
    g->size = size;
    g->mapped = mapped;
    cm_err rv = parse(g, err, errlen);
    if (rv != CM_OK) {
        g->mapped = 0; /* the caller unmaps on failure */
        wk_gguf_close(g);
        return rv;
    }
    *out = g;
    return CM_OK;
}

cm_err wk_gguf_open_memory(const void *data, size_t size, wk_gguf **out, char *err, size_t errlen) {
    if (out == NULL) {
        return CM_ERR_INVALID;
    }
    *out = NULL;
    if (data == NULL && size > 0) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "NULL buffer");
    }
    return open_image(data, size, 0, out, err, errlen);
}

cm_err wk_gguf_open(const char *path, wk_gguf **out, char *err, size_t errlen) {
    if (out == NULL || path == NULL) {
        return CM_ERR_INVALID;
    }
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return cm_errf(CM_ERR_IO, err, errlen, "cannot open '%s': %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return cm_errf(CM_ERR_IO, err, errlen, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cm_errf(CM_ERR_IO, err, errlen, "'%s' is not a regular file", path);
    }
    if (st.st_size < 24) {
        close(fd);
        return cm_errf(CM_ERR_FORMAT, err, errlen, "'%s' too small for a GGUF header (%lld bytes)",
                       path, (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    void *base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (base == MAP_FAILED) {
        return cm_errf(CM_ERR_IO, err, errlen, "cannot mmap '%s': %s", path, strerror(e));
    }
    cm_err rv = open_image(base, size, 1, out, err, errlen);
    if (rv != CM_OK) {
        munmap(base, size);
    }
    return rv;
}

void wk_gguf_drop_pages(const wk_gguf *g, const void *p, size_t len) {
    if (g == NULL || !g->mapped || p == NULL) {
        return;
    }
    uintptr_t lo = (uintptr_t)p, hi = lo + len, base = (uintptr_t)g->base;
    if (lo < base || hi < lo || hi > base + g->size) {
        return;
    }
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) {
        return;
    }
    uintptr_t a = (lo + (uintptr_t)page - 1) & ~((uintptr_t)page - 1),
              b = hi & ~((uintptr_t)page - 1);
    if (b > a) {
        /* The mapping is private and never written, so MADV_DONTNEED only drops clean pages,
         * which come back from the file if touched (glibc's posix_madvise ignores
         * POSIX_MADV_DONTNEED). */
        (void)madvise((void *)a, b - a, MADV_DONTNEED);
    }
}

void wk_gguf_close(wk_gguf *g) {
    if (g == NULL) {
        return;
    }
    if (g->mapped) {
        munmap((void *)g->base, g->size);
    }
    for (uint64_t i = 0; g->kvs != NULL && i < g->n_kv; i++) {
        free((void *)g->kvs[i].arr.str_offsets);
    }
    free(g->kvs);
    free(g->tensors);
    free(g->kv_sorted);
    free(g->tensor_sorted);
    free(g);
}

uint32_t wk_gguf_version(const wk_gguf *g) {
    return g->version;
}

uint64_t wk_gguf_n_kv(const wk_gguf *g) {
    return g->n_kv;
}

uint64_t wk_gguf_n_tensors(const wk_gguf *g) {
    return g->n_tensors;
}

/* Binary search over names[sorted[i]]: returns the matching index or -1. */
static int64_t bsearch_name(const uint32_t *sorted, uint64_t n, const char *key,
                            wk_gguf_str (*name_of)(const void *, uint32_t), const void *ctx) {
    wk_gguf_str k = {key, strlen(key)};
    uint64_t lo = 0, hi = n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(name_of(ctx, sorted[mid]), k);
        if (c == 0) {
            return sorted[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

static wk_gguf_str kv_name(const void *ctx, uint32_t i) {
    return ((const kv *)ctx)[i].key;
}

static wk_gguf_str tensor_name(const void *ctx, uint32_t i) {
    return ((const wk_gguf_tensor *)ctx)[i].name;
}

static const kv *find_kv(const wk_gguf *g, const char *key) {
    if (g == NULL || key == NULL) {
        return NULL;
    }
    int64_t i = bsearch_name(g->kv_sorted, g->n_kv, key, kv_name, g->kvs);
    return i < 0 ? NULL : &g->kvs[i];
}

/* Reads an integer-typed value widened to signed/unsigned 64-bit. Returns -1 if not an int. */
static int kv_int(const kv *e, int64_t *s, uint64_t *u, int *is_signed) {
    const uint8_t *p = e->val;
    switch (e->type) {
    case WK_GGUF_UINT8:
        *u = p[0];
        *is_signed = 0;
        return 0;
    case WK_GGUF_INT8: {
        int8_t v;
        memcpy(&v, p, 1);
        *s = v;
        *is_signed = 1;
        return 0;
    }
    case WK_GGUF_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *u = v;
        *is_signed = 0;
        return 0;
    }
    case WK_GGUF_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        *s = v;
        *is_signed = 1;
        return 0;
    }
    case WK_GGUF_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        *u = v;
        *is_signed = 0;
        return 0;
    }
    case WK_GGUF_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        *s = v;
        *is_signed = 1;
        return 0;
    }
    case WK_GGUF_UINT64:
        memcpy(u, p, 8);
        *is_signed = 0;
        return 0;
    case WK_GGUF_INT64:
        memcpy(s, p, 8);
        *is_signed = 1;
        return 0;
    default:
        return -1;
    }
}

cm_err wk_gguf_get_u32(const wk_gguf *g, const char *key, uint32_t *out) {
    const kv *e = find_kv(g, key);
    int64_t s = 0;
    uint64_t u = 0;
    int sg;
    if (e == NULL) {
        return CM_ERR_NOT_FOUND;
    }
    if (kv_int(e, &s, &u, &sg) != 0) {
        return CM_ERR_FORMAT;
    }
    if (sg) {
        if (s < 0 || s > (int64_t)UINT32_MAX) {
            return CM_ERR_FORMAT;
        }
        *out = (uint32_t)s;
    } else {
        if (u > UINT32_MAX) {
            return CM_ERR_FORMAT;
        }
        *out = (uint32_t)u;
    }
    return CM_OK;
}

cm_err wk_gguf_get_i32(const wk_gguf *g, const char *key, int32_t *out) {
    const kv *e = find_kv(g, key);
    int64_t s = 0;
    uint64_t u = 0;
    int sg;
    if (e == NULL) {
        return CM_ERR_NOT_FOUND;
    }
    if (kv_int(e, &s, &u, &sg) != 0) {
        return CM_ERR_FORMAT;
    }
    if (sg) {
        if (s < INT32_MIN || s > INT32_MAX) {
            return CM_ERR_FORMAT;
        }
        *out = (int32_t)s;
    } else {
        if (u > INT32_MAX) {
            return CM_ERR_FORMAT;
        }
        *out = (int32_t)u;
    }
    return CM_OK;
}

cm_err wk_gguf_get_f32(const wk_gguf *g, const char *key, float *out) {
    const kv *e = find_kv(g, key);
    if (e == NULL) {
        return CM_ERR_NOT_FOUND;
    }
    if (e->type == WK_GGUF_FLOAT32) {
        memcpy(out, e->val, 4);
        return CM_OK;
    }
    if (e->type == WK_GGUF_FLOAT64) {
        double d;
        memcpy(&d, e->val, 8);
        *out = (float)d;
        return CM_OK;
    }
    return CM_ERR_FORMAT;
}

cm_err wk_gguf_get_bool(const wk_gguf *g, const char *key, bool *out) {
    const kv *e = find_kv(g, key);
    if (e == NULL) {
        return CM_ERR_NOT_FOUND;
    }
    if (e->type != WK_GGUF_BOOL) {
        return CM_ERR_FORMAT;
    }
    *out = e->val[0] != 0;
    return CM_OK;
}

cm_err wk_gguf_get_str(const wk_gguf *g, const char *key, wk_gguf_str *out) {
    const kv *e = find_kv(g, key);
    if (e == NULL) {
        return CM_ERR_NOT_FOUND;
    }
    if (e->type != WK_GGUF_STRING) {
        return CM_ERR_FORMAT;
    }
    memcpy(&out->len, e->val, 8);
    out->ptr = (const char *)e->val + 8;
    return CM_OK;
}

cm_err wk_gguf_get_arr(const wk_gguf *g, const char *key, wk_gguf_arr *out) {
    const kv *e = find_kv(g, key);
    if (e == NULL) {
        return CM_ERR_NOT_FOUND;
    }
    if (e->type != WK_GGUF_ARRAY) {
        return CM_ERR_FORMAT;
    }
    *out = e->arr;
    return CM_OK;
}

cm_err wk_gguf_arr_str(const wk_gguf_arr *arr, uint64_t i, wk_gguf_str *out) {
    if (arr == NULL || arr->elem_type != WK_GGUF_STRING || i >= arr->n) {
        return CM_ERR_INVALID;
    }
    const uint8_t *p = arr->data;
    if (arr->str_offsets != NULL) {
        p += arr->str_offsets[i];
        memcpy(&out->len, p, 8);
        out->ptr = (const char *)p + 8;
        return CM_OK;
    }
    /* No index (an array not made by wk_gguf_get_arr): walk from the start; O(i). */
    for (uint64_t k = 0; k < i; k++) {
        uint64_t n;
        memcpy(&n, p, 8);
        p += 8 + n;
    }
    memcpy(&out->len, p, 8);
    out->ptr = (const char *)p + 8;
    return CM_OK;
}

const wk_gguf_tensor *wk_gguf_find_tensor(const wk_gguf *g, const char *name) {
    if (g == NULL || name == NULL) {
        return NULL;
    }
    int64_t i = bsearch_name(g->tensor_sorted, g->n_tensors, name, tensor_name, g->tensors);
    return i < 0 ? NULL : &g->tensors[i];
}

const wk_gguf_tensor *wk_gguf_tensor_at(const wk_gguf *g, uint64_t i) {
    if (g == NULL || i >= g->n_tensors) {
        return NULL;
    }
    return &g->tensors[i];
}
