/*
 * Tests for worker/stop.c: stop strings matched across deltas, held prefixes, UTF-8 safety,
 * and a randomized comparison against a whole-text reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sampler.h"
#include "tokenizer.h"

static char out[4096 + WK_MAX_STOP_BYTES];

static void push_eq(wk_stop_matcher *m, const char *delta, const char *want, bool want_stop) {
    size_t n = 99;
    bool stopped = !want_stop;
    wk_stop_push(m, delta, strlen(delta), out, &n, &stopped);
    out[n] = '\0';
    assert_string_equal(out, want);
    assert_int_equal(stopped, want_stop);
}

static void test_init_errors(void **state) {
    (void)state;
    wk_stop_matcher m;
    const char *nine[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    assert_int_equal(wk_stop_init(&m, nine, 9), CM_ERR_LIMIT);
    assert_int_equal(wk_stop_init(&m, nine, 8), CM_OK);
    const char *empty[1] = {""};
    assert_int_equal(wk_stop_init(&m, empty, 1), CM_ERR_INVALID);
    char longstop[WK_MAX_STOP_BYTES + 1];
    memset(longstop, 'x', sizeof longstop - 1);
    longstop[sizeof longstop - 1] = '\0';
    const char *lp[1] = {longstop};
    assert_int_equal(wk_stop_init(&m, lp, 1), CM_ERR_LIMIT);
    const char *bad[1] = {"\xff"};
    assert_int_equal(wk_stop_init(&m, bad, 1), CM_ERR_UTF8);
    assert_int_equal(m.n_stops, 0);
}

static void test_basic(void **state) {
    (void)state;
    wk_stop_matcher m;
    const char *stops[] = {"END", "\n\n"};
    assert_int_equal(wk_stop_init(&m, stops, 2), CM_OK);
    push_eq(&m, "abcEN", "abc", false); /* "EN" could start "END": held */
    push_eq(&m, "X", "ENX", false);     /* diverged: released */
    push_eq(&m, "E", "", false);
    push_eq(&m, "N", "", false);
    push_eq(&m, "D and more", "", true); /* the stop and what follows are dropped */

    assert_int_equal(wk_stop_init(&m, stops, 2), CM_OK);
    push_eq(&m, "line\n", "line", false);
    push_eq(&m, "\nnext", "", true);

    /* A stop inside one delta, with text before it. */
    assert_int_equal(wk_stop_init(&m, stops, 2), CM_OK);
    push_eq(&m, "xyENDzzz", "xy", true);

    /* The earliest match wins among overlapping stops. */
    const char *two[] = {"bc", "ab"};
    assert_int_equal(wk_stop_init(&m, two, 2), CM_OK);
    push_eq(&m, "xa", "x", false);
    push_eq(&m, "bc", "", true);

    /* Flush releases what is held when generation ends without a stop. */
    assert_int_equal(wk_stop_init(&m, stops, 2), CM_OK);
    push_eq(&m, "tail E", "tail ", false);
    assert_int_equal(wk_stop_flush(&m, out), 1);
    assert_int_equal(out[0], 'E');
    assert_int_equal(wk_stop_flush(&m, out), 0);

    /* No stops: everything passes through. */
    assert_int_equal(wk_stop_init(&m, NULL, 0), CM_OK);
    push_eq(&m, "anything END", "anything END", false);
}

static void test_utf8(void **state) {
    (void)state;
    wk_stop_matcher m;
    const char *stops[] = {"\xc3\xa9!"}; /* "é!" */
    assert_int_equal(wk_stop_init(&m, stops, 1), CM_OK);
    push_eq(&m, "caf\xc3\xa9", "caf", false); /* "é" held: it starts the stop */
    push_eq(&m, "?", "\xc3\xa9?", false);
    /* A delta that ends inside a character: the partial character is held, never split. */
    push_eq(&m, "ab\xe6\x97", "ab", false);
    push_eq(&m, "\xa5", "\xe6\x97\xa5", false);
    push_eq(&m, "\xc3\xa9!", "", true);
}

/* Reference: the output is the text before the earliest stop occurrence. */
static size_t reference(const char *text, size_t len, const char *const *stops, int n,
                        bool *stopped) {
    size_t first = len;
    for (int i = 0; i < n; i++) {
        const char *hit = memmem(text, len, stops[i], strlen(stops[i]));
        if (hit != NULL && (size_t)(hit - text) < first) {
            first = (size_t)(hit - text);
        }
    }
    *stopped = first < len;
    return first;
}

static void test_randomized(void **state) {
    (void)state;
    const char *alphabet[] = {"a", "b", "c", "\xc3\xa9", "\xf0\x9f\x98\x80", " "};
    const int n_alpha = 6;
    wk_rng rng;
    wk_rng_seed(&rng, 42);
    for (int iter = 0; iter < 3000; iter++) {
        char text[512];
        size_t len = 0;
        int n_chars = (int)(wk_rng_uniform(&rng) * 60);
        for (int i = 0; i < n_chars; i++) {
            const char *c = alphabet[(int)(wk_rng_uniform(&rng) * n_alpha)];
            memcpy(text + len, c, strlen(c));
            len += strlen(c);
        }
        char stop_store[3][32];
        const char *stops[3];
        int n_stops = 1 + (int)(wk_rng_uniform(&rng) * 3);
        for (int s = 0; s < n_stops; s++) {
            size_t sl = 0;
            int k = 1 + (int)(wk_rng_uniform(&rng) * 4);
            for (int i = 0; i < k; i++) {
                const char *c = alphabet[(int)(wk_rng_uniform(&rng) * n_alpha)];
                memcpy(stop_store[s] + sl, c, strlen(c));
                sl += strlen(c);
            }
            stop_store[s][sl] = '\0';
            stops[s] = stop_store[s];
        }
        wk_stop_matcher m;
        assert_int_equal(wk_stop_init(&m, stops, (uint32_t)n_stops), CM_OK);
        char got[1024];
        size_t got_len = 0;
        bool stopped = false;
        size_t pos = 0;
        /* Random delta sizes, byte-granular, so characters get split too. */
        while (pos < len && !stopped) {
            size_t d = 1 + (size_t)(wk_rng_uniform(&rng) * 6);
            if (d > len - pos) {
                d = len - pos;
            }
            size_t n;
            wk_stop_push(&m, text + pos, d, out, &n, &stopped);
            assert_true(wk_utf8_valid(out, n));
            memcpy(got + got_len, out, n);
            got_len += n;
            pos += d;
        }
        if (!stopped) {
            got_len += wk_stop_flush(&m, got + got_len);
        }
        bool want_stop;
        size_t want = reference(text, len, stops, n_stops, &want_stop);
        assert_int_equal(stopped, want_stop);
        assert_int_equal(got_len, want);
        assert_memory_equal(got, text, want);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_errors),
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_randomized),
    };
    return cmocka_run_group_tests_name("stop", tests, NULL, NULL);
}
