/*
 * gguf_test: the validating GGUF reader on hand-built images (valid, truncated, corrupt,
 * hostile) and on the bundled model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gguf.h"
#include "gguf_builder.h"

/* A valid v3 image: 9 metadata values of several types, two tensors (F32 [8, 2] and
 * Q8_0 [32, 3]), the last one ending exactly at the end of the file. */
static void build_valid(gb *b, uint32_t alignment) {
    static const char *const strs[] = {"a", "", "hello"};
    int32_t ints[4] = {-1, 2, -3, 4};
    gb_begin(b, 3, 2, alignment ? 9 : 8);
    gb_kv_str(b, "general.architecture", "llama");
    gb_kv_u32(b, "k.u32", 4000000000u);
    gb_kv_i32(b, "k.i32", -7);
    gb_kv_f32(b, "k.f32", 0.5f);
    gb_kv_bool(b, "k.bool", 1);
    gb_kv_arr_str(b, "k.strs", 3, strs);
    gb_kv_arr_i32(b, "k.ints", 4, ints);
    /* a u8 value, to test integer widening */
    gb_str(b, "k.u8");
    gb_u32(b, 0);
    uint8_t v8 = 200;
    gb_bytes(b, &v8, 1);
    if (alignment) {
        gb_kv_u32(b, "general.alignment", alignment);
    }
    uint32_t al = alignment ? alignment : 32;
    int64_t ne_a[2] = {8, 2}, ne_b[2] = {32, 3};
    size_t a_bytes = 8 * 2 * 4;
    size_t b_off = (a_bytes + al - 1) / al * al;
    gb_tensor(b, "a", 2, ne_a, 0, 0);
    gb_tensor(b, "b.weight", 2, ne_b, 8, b_off);
    gb_data_start(b, al);
    for (int i = 0; i < 16; i++) {
        float f = (float)i;
        gb_bytes(b, &f, 4);
    }
    gb_zeros(b, b_off - a_bytes);
    for (int r = 0; r < 3; r++) {
        uint8_t blk[34] = {0x00, 0x3C}; /* d = 1.0 */
        for (int j = 0; j < 32; j++) {
            blk[2 + j] = (uint8_t)(r * 32 + j);
        }
        gb_bytes(b, blk, sizeof(blk));
    }
}

static cm_err open_buf(const gb *b, wk_gguf **g, char *err, size_t errlen) {
    return wk_gguf_open_memory(b->buf, b->len, g, err, errlen);
}

static void test_valid(void **state) {
    (void)state;
    gb b;
    build_valid(&b, 0);
    wk_gguf *g = NULL;
    char err[256] = "";
    assert_int_equal(open_buf(&b, &g, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_gguf_version(g), 3);
    assert_int_equal(wk_gguf_n_kv(g), 8);
    assert_int_equal(wk_gguf_n_tensors(g), 2);

    uint32_t u;
    int32_t i;
    float f;
    bool bl;
    wk_gguf_str s;
    wk_gguf_arr a;
    assert_int_equal(wk_gguf_get_u32(g, "k.u32", &u), CM_OK);
    assert_int_equal(u, 4000000000u);
    assert_int_equal(wk_gguf_get_i32(g, "k.u32", &i), CM_ERR_FORMAT); /* does not fit */
    assert_int_equal(wk_gguf_get_i32(g, "k.i32", &i), CM_OK);
    assert_int_equal(i, -7);
    assert_int_equal(wk_gguf_get_u32(g, "k.i32", &u), CM_ERR_FORMAT); /* negative */
    assert_int_equal(wk_gguf_get_u32(g, "k.u8", &u), CM_OK);
    assert_int_equal(u, 200);
    assert_int_equal(wk_gguf_get_f32(g, "k.f32", &f), CM_OK);
    assert_true(f == 0.5f);
    assert_int_equal(wk_gguf_get_f32(g, "k.u32", &f), CM_ERR_FORMAT);
    assert_int_equal(wk_gguf_get_bool(g, "k.bool", &bl), CM_OK);
    assert_true(bl);
    assert_int_equal(wk_gguf_get_str(g, "general.architecture", &s), CM_OK);
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.ptr, "llama", 5);
    assert_int_equal(wk_gguf_get_str(g, "k.u32", &s), CM_ERR_FORMAT);
    assert_int_equal(wk_gguf_get_u32(g, "nope", &u), CM_ERR_NOT_FOUND);
    assert_int_equal(wk_gguf_get_arr(g, "k.strs", &a), CM_OK);
    assert_int_equal(a.n, 3);
    assert_int_equal(a.elem_type, WK_GGUF_STRING);
    assert_int_equal(wk_gguf_arr_str(&a, 2, &s), CM_OK);
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.ptr, "hello", 5);
    assert_int_equal(wk_gguf_arr_str(&a, 1, &s), CM_OK);
    assert_int_equal(s.len, 0);
    assert_int_equal(wk_gguf_arr_str(&a, 3, &s), CM_ERR_INVALID);
    /* without the offset index the walk gives the same answer */
    wk_gguf_arr walk = a;
    walk.str_offsets = NULL;
    assert_int_equal(wk_gguf_arr_str(&walk, 2, &s), CM_OK);
    assert_memory_equal(s.ptr, "hello", 5);
    assert_int_equal(wk_gguf_get_arr(g, "k.ints", &a), CM_OK);
    assert_int_equal(a.elem_type, WK_GGUF_INT32);
    int32_t third;
    memcpy(&third, (const uint8_t *)a.data + 8, 4);
    assert_int_equal(third, -3);
    assert_int_equal(wk_gguf_arr_str(&a, 0, &s), CM_ERR_INVALID); /* not a string array */

    const wk_gguf_tensor *t = wk_gguf_find_tensor(g, "b.weight");
    assert_non_null(t);
    assert_int_equal(t->type, WK_DTYPE_Q8_0);
    assert_int_equal(t->ne[0], 32);
    assert_int_equal(t->ne[1], 3);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->nbytes, 3 * 34);
    assert_int_equal(((const uint8_t *)t->data)[2 + 34], 32); /* row 1, quant 0 */
    assert_int_equal((uintptr_t)((const uint8_t *)t->data - b.buf) % 32, 0);
    assert_null(wk_gguf_find_tensor(g, "b"));
    assert_null(wk_gguf_find_tensor(g, "zzz"));
    const wk_gguf_tensor *t0 = wk_gguf_tensor_at(g, 0);
    assert_non_null(t0);
    assert_int_equal(t0->name.len, 1);
    assert_true(((const float *)t0->data)[5] == 5.0f);
    assert_null(wk_gguf_tensor_at(g, 2));
    wk_gguf_close(g);
    gb_free(&b);
}

static void test_alignment(void **state) {
    (void)state;
    gb b;
    build_valid(&b, 256);
    wk_gguf *g = NULL;
    char err[256] = "";
    assert_int_equal(open_buf(&b, &g, err, sizeof(err)), CM_OK);
    const wk_gguf_tensor *t = wk_gguf_find_tensor(g, "b.weight");
    assert_int_equal((size_t)((const uint8_t *)t->data - b.buf) % 256, 0);
    assert_int_equal(((const uint8_t *)t->data)[2], 0);
    wk_gguf_close(g);
    gb_free(&b);
}

/* Every strict prefix of a valid file is rejected cleanly. */
static void test_truncation(void **state) {
    (void)state;
    gb b;
    build_valid(&b, 0);
    for (size_t n = 0; n < b.len; n++) {
        wk_gguf *g = (wk_gguf *)0x1;
        char err[256] = "";
        /* copy so ASan sees reads past n */
        uint8_t *cp = malloc(n ? n : 1);
        memcpy(cp, b.buf, n);
        cm_err rv = wk_gguf_open_memory(cp, n, &g, err, sizeof(err));
        if (rv == CM_OK) {
            fail_msg("prefix of %zu/%zu bytes accepted", n, b.len);
        }
        assert_null(g);
        assert_true(strlen(err) > 0);
        free(cp);
    }
    gb_free(&b);
}

/* Opens the image, expects rv and an error message containing needle. */
static void expect_fail(gb *b, cm_err want, const char *needle) {
    wk_gguf *g = NULL;
    char err[256] = "";
    cm_err rv = open_buf(b, &g, err, sizeof(err));
    if (rv != want || strstr(err, needle) == NULL) {
        fail_msg("want %d '%s', got %d '%s'", want, needle, rv, err);
    }
    assert_null(g);
    gb_free(b);
}

static void one_tensor(gb *b, const char *name, uint32_t nd, const int64_t *ne, uint32_t type,
                       uint64_t off, size_t data_bytes) {
    gb_begin(b, 3, 1, 0);
    gb_tensor(b, name, nd, ne, type, off);
    gb_data_start(b, 32);
    gb_zeros(b, data_bytes);
}

static void test_header_errors(void **state) {
    (void)state;
    gb b;
    build_valid(&b, 0);
    b.buf[0] = 'X';
    expect_fail(&b, CM_ERR_FORMAT, "magic");

    build_valid(&b, 0);
    b.buf[4] = 1;
    expect_fail(&b, CM_ERR_UNSUPPORTED, "version 1");
    build_valid(&b, 0);
    b.buf[4] = 4;
    expect_fail(&b, CM_ERR_UNSUPPORTED, "version 4");

    gb_begin(&b, 3, 1ull << 40, 0);
    expect_fail(&b, CM_ERR_FORMAT, "tensor count");
    gb_begin(&b, 3, 0, 1ull << 60);
    expect_fail(&b, CM_ERR_FORMAT, "metadata count");
    gb_begin(&b, 3, 0, 1000); /* within limits but the file cannot hold them */
    gb_zeros(&b, 100);
    expect_fail(&b, CM_ERR_FORMAT, "file size");

    /* v2 files are accepted */
    gb_begin(&b, 2, 0, 1);
    gb_kv_u32(&b, "x", 1);
    wk_gguf *g = NULL;
    assert_int_equal(open_buf(&b, &g, NULL, 0), CM_OK);
    assert_int_equal(wk_gguf_version(g), 2);
    wk_gguf_close(g);
    gb_free(&b);
}

static void test_metadata_errors(void **state) {
    (void)state;
    gb b;
    /* string length far past the end */
    gb_begin(&b, 3, 0, 1);
    gb_str(&b, "key");
    gb_u32(&b, 8);
    gb_u64(&b, 1ull << 62);
    gb_zeros(&b, 16);
    expect_fail(&b, CM_ERR_FORMAT, "'key'");

    /* key length past the end */
    gb_begin(&b, 3, 0, 1);
    gb_u64(&b, 1ull << 40);
    gb_zeros(&b, 16);
    expect_fail(&b, CM_ERR_FORMAT, "key");

    /* array length past the end */
    gb_begin(&b, 3, 0, 1);
    gb_str(&b, "arr");
    gb_u32(&b, 9);
    gb_u32(&b, 4);
    gb_u64(&b, 1ull << 61);
    gb_zeros(&b, 16);
    expect_fail(&b, CM_ERR_FORMAT, "array");

    /* string array with an element overrunning */
    gb_begin(&b, 3, 0, 1);
    gb_str(&b, "sa");
    gb_u32(&b, 9);
    gb_u32(&b, 8);
    gb_u64(&b, 2);
    gb_str(&b, "ok");
    gb_u64(&b, 1000);
    gb_zeros(&b, 8);
    expect_fail(&b, CM_ERR_FORMAT, "string 1");

    /* nested array */
    gb_begin(&b, 3, 0, 1);
    gb_str(&b, "nest");
    gb_u32(&b, 9);
    gb_u32(&b, 9);
    gb_u64(&b, 1);
    gb_zeros(&b, 16);
    expect_fail(&b, CM_ERR_FORMAT, "nested");

    /* unknown value type */
    gb_begin(&b, 3, 0, 1);
    gb_str(&b, "weird");
    gb_u32(&b, 13);
    gb_zeros(&b, 16);
    expect_fail(&b, CM_ERR_FORMAT, "unknown value type 13");

    /* bool that is not 0/1 */
    gb_begin(&b, 3, 0, 1);
    gb_kv_bool(&b, "flag", 2);
    expect_fail(&b, CM_ERR_FORMAT, "'flag'");

    /* duplicate key */
    gb_begin(&b, 3, 0, 3);
    gb_kv_u32(&b, "a.b", 1);
    gb_kv_u32(&b, "c", 2);
    gb_kv_u32(&b, "a.b", 3);
    expect_fail(&b, CM_ERR_FORMAT, "duplicate metadata key 'a.b'");

    /* empty key */
    gb_begin(&b, 3, 0, 1);
    gb_kv_u32(&b, "", 1);
    expect_fail(&b, CM_ERR_FORMAT, "empty key");

    /* bad alignments */
    gb_begin(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 48);
    expect_fail(&b, CM_ERR_FORMAT, "alignment 48");
    gb_begin(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 0);
    expect_fail(&b, CM_ERR_FORMAT, "alignment 0");
    gb_begin(&b, 3, 0, 1);
    gb_kv_str(&b, "general.alignment", "32");
    expect_fail(&b, CM_ERR_FORMAT, "uint32");
}

static void test_tensor_errors(void **state) {
    (void)state;
    gb b;
    int64_t ne[4] = {32, 2, 1, 1};
    one_tensor(&b, "t.ok", 2, ne, 0, 0, 256);
    wk_gguf *g = NULL;
    assert_int_equal(open_buf(&b, &g, NULL, 0), CM_OK);
    wk_gguf_close(g);
    gb_free(&b);

    one_tensor(&b, "t.dims0", 0, ne, 0, 0, 256);
    expect_fail(&b, CM_ERR_FORMAT, "'t.dims0': 0 dims");
    one_tensor(&b, "t.dims5", 5, (int64_t[5]){1, 1, 1, 1, 1}, 0, 0, 256);
    expect_fail(&b, CM_ERR_FORMAT, "'t.dims5': 5 dims");
    one_tensor(&b, "t.zero", 2, (int64_t[2]){32, 0}, 0, 0, 256);
    expect_fail(&b, CM_ERR_FORMAT, "'t.zero': dim 1 is 0");
    one_tensor(&b, "t.huge", 3, (int64_t[3]){1ll << 40, 1ll << 30, 1ll << 10}, 0, 0, 256);
    expect_fail(&b, CM_ERR_FORMAT, "'t.huge': element count overflows");
    one_tensor(&b, "t.bytes", 2, (int64_t[2]){1ll << 40, 1ll << 22}, 0, 0, 256);
    expect_fail(&b, CM_ERR_FORMAT, "'t.bytes'");
    one_tensor(&b, "t.iq2", 2, ne, 16, 0, 256);
    expect_fail(&b, CM_ERR_UNSUPPORTED, "'t.iq2': unsupported type 16");
    /* every type of the traits table loads (Q5_0 with rows of 32, K-quants and IQ4_XS 256) */
    for (uint32_t t = 0; t < 40; t++) {
        uint32_t be = wk_dtype_block_elems((wk_dtype)t);
        if (!wk_dtype_supported(t)) {
            continue;
        }
        int64_t nt[2] = {be > 32 ? be : 32, 3};
        one_tensor(&b, "t.any", 2, nt, t, 0, wk_dtype_row_bytes((wk_dtype)t, nt[0]) * 3);
        assert_int_equal(open_buf(&b, &g, NULL, 0), CM_OK);
        const wk_gguf_tensor *gt = wk_gguf_find_tensor(g, "t.any");
        assert_non_null(gt);
        assert_int_equal(gt->type, t);
        wk_gguf_close(g);
        gb_free(&b);
    }
    one_tensor(&b, "t.type", 2, ne, 1000, 0, 256);
    expect_fail(&b, CM_ERR_UNSUPPORTED, "type 1000");
    one_tensor(&b, "t.row", 2, (int64_t[2]){33, 2}, 2, 0, 256);
    expect_fail(&b, CM_ERR_FORMAT, "'t.row': row length 33 not a multiple of Q4_0 block size 32");
    one_tensor(&b, "t.kq", 1, (int64_t[1]){128}, 12, 0, 256);
    expect_fail(&b, CM_ERR_FORMAT, "block size 256");
    one_tensor(&b, "t.misaligned", 2, ne, 0, 8, 512);
    expect_fail(&b, CM_ERR_FORMAT, "'t.misaligned': offset 8 not aligned to 32");
    one_tensor(&b, "t.past", 2, ne, 0, 256, 256);
    expect_fail(&b, CM_ERR_FORMAT, "'t.past' data ends past end of file");
    one_tensor(&b, "t.wrap", 2, ne, 0, UINT64_MAX - 31, 256);
    expect_fail(&b, CM_ERR_FORMAT, "'t.wrap'");
    one_tensor(&b, "", 2, ne, 0, 0, 256);
    expect_fail(&b, CM_ERR_FORMAT, "empty name");

    gb_begin(&b, 3, 2, 0);
    gb_tensor(&b, "same", 2, ne, 0, 0);
    gb_tensor(&b, "same", 2, ne, 0, 256);
    gb_data_start(&b, 32);
    gb_zeros(&b, 512);
    expect_fail(&b, CM_ERR_FORMAT, "duplicate tensor name 'same'");
}

/* Random byte corruption of a valid image never crashes (meaningful under ASan/UBSan). */
static void test_mutations(void **state) {
    (void)state;
    gb b;
    build_valid(&b, 0);
    uint64_t s = 12345;
    uint8_t *cp = malloc(b.len);
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(cp, b.buf, b.len);
        int flips = 1 + (int)(s % 4);
        for (int k = 0; k < flips; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(s >> 33) % b.len;
            cp[pos] = (uint8_t)(s >> 24);
        }
        wk_gguf *g = NULL;
        char err[128];
        if (wk_gguf_open_memory(cp, b.len, &g, err, sizeof(err)) == CM_OK) {
            accepted++;
            /* whatever was accepted must be safe to walk */
            for (uint64_t i = 0; i < wk_gguf_n_tensors(g); i++) {
                const wk_gguf_tensor *t = wk_gguf_tensor_at(g, i);
                volatile uint8_t sink = 0;
                for (size_t j = 0; j < t->nbytes; j++) {
                    sink ^= ((const uint8_t *)t->data)[j];
                }
                (void)sink;
            }
            wk_gguf_arr a;
            if (wk_gguf_get_arr(g, "k.strs", &a) == CM_OK && a.elem_type == WK_GGUF_STRING) {
                for (uint64_t i = 0; i < a.n; i++) {
                    wk_gguf_str str;
                    assert_int_equal(wk_gguf_arr_str(&a, i, &str), CM_OK);
                }
            }
            wk_gguf_close(g);
        } else {
            assert_null(g);
        }
    }
    assert_true(accepted > 0); /* flips inside tensor data are harmless */
    free(cp);
    gb_free(&b);
}

static void test_bundled_model(void **state) {
    (void)state;
    const char *path = getenv("SLUICE_TEST_MODEL");
    if (path == NULL) {
        skip();
    }
    wk_gguf *g = NULL;
    char err[256] = "";
    assert_int_equal(wk_gguf_open(path, &g, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_gguf_version(g), 3);
    assert_int_equal(wk_gguf_n_tensors(g), 272);
    const wk_gguf_tensor *t = wk_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, WK_DTYPE_Q8_0);
    assert_int_equal(t->ne[0], 576);
    assert_int_equal(t->ne[1], 49152);
    t = wk_gguf_find_tensor(g, "blk.0.attn_q.weight");
    assert_int_equal(t->type, WK_DTYPE_Q4_1);
    wk_gguf_arr a;
    assert_int_equal(wk_gguf_get_arr(g, "tokenizer.ggml.tokens", &a), CM_OK);
    assert_int_equal(a.n, 49152);
    wk_gguf_str s;
    assert_int_equal(wk_gguf_arr_str(&a, 49151, &s), CM_OK);
    assert_true(s.len > 0);
    wk_gguf_close(g);

    assert_int_equal(wk_gguf_open("/nonexistent/model.gguf", &g, err, sizeof(err)), CM_ERR_IO);
    assert_null(g);
    assert_non_null(strstr(err, "/nonexistent/model.gguf"));
    assert_int_equal(wk_gguf_open("/", &g, err, sizeof(err)), CM_ERR_IO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_truncation),      cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_metadata_errors), cmocka_unit_test(test_tensor_errors),
        cmocka_unit_test(test_mutations),       cmocka_unit_test(test_bundled_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
