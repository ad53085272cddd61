/*
 * fuzz_gguf: libFuzzer driver for the GGUF reader and the model loader.
 *
 * Any input must either be rejected with an error or yield an object whose every accessor is
 * safe: metadata values and string-array elements are read, every tensor's first row is
 * dequantized (bounded), and the llama-family loader runs over it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"
#include "quant.h"

/* Keep each input cheap: rows longer than this are not dequantized. */
#define MAX_ROW_ELEMS (1 << 16)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    wk_gguf *g = NULL;
    char err[256];
    if (wk_gguf_open_memory(data, size, &g, err, sizeof(err)) != CM_OK) {
        if (g != NULL || err[0] == '\0') {
            abort(); /* contract: NULL object and a message on failure */
        }
        return 0;
    }
    static const char *const keys[] = {"general.architecture",  "general.alignment",
                                       "llama.block_count",     "tokenizer.ggml.tokens",
                                       "tokenizer.ggml.merges", "general.name"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        uint32_t u;
        int32_t s;
        float f;
        bool b;
        wk_gguf_str str;
        wk_gguf_arr arr;
        (void)wk_gguf_get_u32(g, keys[i], &u);
        (void)wk_gguf_get_i32(g, keys[i], &s);
        (void)wk_gguf_get_f32(g, keys[i], &f);
        (void)wk_gguf_get_bool(g, keys[i], &b);
        if (wk_gguf_get_str(g, keys[i], &str) == CM_OK && str.len > 0) {
            volatile char c = str.ptr[str.len - 1];
            (void)c;
        }
        if (wk_gguf_get_arr(g, keys[i], &arr) == CM_OK && arr.elem_type == WK_GGUF_STRING) {
            for (uint64_t k = 0; k < arr.n; k++) {
                if (wk_gguf_arr_str(&arr, k, &str) != CM_OK) {
                    abort();
                }
                if (str.len > 0) {
                    volatile char c = str.ptr[str.len - 1];
                    (void)c;
                }
            }
        }
    }
    float *row = malloc(MAX_ROW_ELEMS * sizeof(float));
    for (uint64_t i = 0; row != NULL && i < wk_gguf_n_tensors(g); i++) {
        const wk_gguf_tensor *t = wk_gguf_tensor_at(g, i);
        if (t == NULL) {
            abort();
        }
        if (t->ne[0] <= MAX_ROW_ELEMS && wk_dtype_row_bytes(t->type, t->ne[0]) <= t->nbytes) {
            wk_dequantize_row(t->type, t->data, row, t->ne[0]);
        }
        /* the name must find this tensor again */
        char name[128];
        if (t->name.len < sizeof(name) && memchr(t->name.ptr, '\0', t->name.len) == NULL) {
            memcpy(name, t->name.ptr, t->name.len);
            name[t->name.len] = '\0';
            if (wk_gguf_find_tensor(g, name) != t) {
                abort();
            }
        }
    }
    free(row);
    wk_model m;
    if (wk_model_load(g, &m, err, sizeof(err)) == CM_OK) {
        wk_model_fini(&m);
    }
    wk_gguf_close(g);
    return 0;
}
