/* cm_sha256: FIPS 180-4 / NIST test vectors, streaming == one-shot at every split, hex
 * round trip, constant-time compare. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm_sha256.h"

static void expect_hex(const void *data, size_t n, const char *want) {
    uint8_t d[CM_SHA256_LEN];
    char hex[CM_SHA256_HEX_LEN + 1];
    cm_sha256(data, n, d);
    cm_sha256_hex(d, hex);
    assert_string_equal(hex, want);
}

static void test_vectors(void **state) {
    (void)state;
    expect_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_hex(two, strlen(two),
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* One million 'a': many blocks. */
    size_t n = 1000000;
    char *a = malloc(n);
    assert_non_null(a);
    memset(a, 'a', n);
    expect_hex(a, n, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

static void test_streaming_matches_oneshot(void **state) {
    (void)state;
    uint8_t data[200];
    for (size_t i = 0; i < sizeof data; i++) {
        data[i] = (uint8_t)(i * 7 + 3);
    }
    /* Lengths around the 55/56/64-byte padding edges, each split at every point. */
    size_t lens[] = {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 200};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t len = lens[li];
        uint8_t want[CM_SHA256_LEN];
        cm_sha256(data, len, want);
        for (size_t cut = 0; cut <= len; cut++) {
            cm_sha256_ctx ctx;
            uint8_t got[CM_SHA256_LEN];
            cm_sha256_init(&ctx);
            cm_sha256_update(&ctx, data, cut);
            cm_sha256_update(&ctx, data + cut, len - cut);
            cm_sha256_final(&ctx, got);
            assert_memory_equal(got, want, CM_SHA256_LEN);
        }
    }
}

static void test_hex_round_trip(void **state) {
    (void)state;
    uint8_t d[CM_SHA256_LEN], back[CM_SHA256_LEN];
    char hex[CM_SHA256_HEX_LEN + 1];
    cm_sha256("sk-sluice-local", 15, d);
    cm_sha256_hex(d, hex);
    assert_int_equal(cm_sha256_from_hex(hex, back), CM_OK);
    assert_memory_equal(d, back, CM_SHA256_LEN);
    /* Upper case accepted. */
    for (char *p = hex; *p; p++) {
        if (*p >= 'a' && *p <= 'f') {
            *p = (char)(*p - 'a' + 'A');
        }
    }
    memset(back, 0, sizeof back);
    assert_int_equal(cm_sha256_from_hex(hex, back), CM_OK);
    assert_memory_equal(d, back, CM_SHA256_LEN);
    /* Bad inputs leave out untouched. */
    uint8_t untouched[CM_SHA256_LEN];
    memset(untouched, 0xAA, sizeof untouched);
    memcpy(back, untouched, sizeof back);
    assert_int_equal(cm_sha256_from_hex("abc", back), CM_ERR_INVALID);
    hex[10] = 'g';
    assert_int_equal(cm_sha256_from_hex(hex, back), CM_ERR_INVALID);
    char longer[CM_SHA256_HEX_LEN + 2];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_int_equal(cm_sha256_from_hex(longer, back), CM_ERR_INVALID);
    assert_int_equal(cm_sha256_from_hex(NULL, back), CM_ERR_INVALID);
    assert_memory_equal(back, untouched, CM_SHA256_LEN);
}

static void test_ct_equal(void **state) {
    (void)state;
    uint8_t a[32], b[32];
    memset(a, 5, sizeof a);
    memcpy(b, a, sizeof b);
    assert_true(cm_ct_equal(a, b, sizeof a));
    for (size_t i = 0; i < sizeof a; i++) {
        b[i] ^= 0x80;
        assert_false(cm_ct_equal(a, b, sizeof a));
        b[i] ^= 0x80;
    }
    assert_true(cm_ct_equal(a, b, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_streaming_matches_oneshot),
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_ct_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
