/*
 * Tests for worker/tokenizer.c: BPE and SentencePiece encoding on small in-memory
 * vocabularies (merge order, pre-tokenizer splits, byte fallback, special tokens), UTF-8
 * validation, the streaming detokenizer, and round trips on the bundled model when
 * SLUICE_TEST_MODEL is set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "gguf.h"
#include "tokenizer.h"
#include "tokenizer_impl.h"

/* ---- a tiny vocabulary builder ---- */

#define MAXTOK 600

typedef struct vocab {
    const char *tokens[MAXTOK];
    uint32_t lens[MAXTOK];
    int32_t types[MAXTOK];
    float scores[MAXTOK];
    char store[MAXTOK][16];
    uint32_t n;
    const char *merges[64];
    uint32_t merge_lens[64];
    uint32_t n_merges;
} vocab;

static int32_t add_tok(vocab *v, const char *s, size_t len, int type, float score) {
    assert_true(v->n < MAXTOK && len < sizeof v->store[0]);
    memcpy(v->store[v->n], s, len);
    v->tokens[v->n] = v->store[v->n];
    v->lens[v->n] = (uint32_t)len;
    v->types[v->n] = type;
    v->scores[v->n] = score;
    return (int32_t)v->n++;
}

static int32_t add_str(vocab *v, const char *s, int type, float score) {
    return add_tok(v, s, strlen(s), type, score);
}

static void add_merge(vocab *v, const char *m) {
    v->merges[v->n_merges] = m;
    v->merge_lens[v->n_merges] = (uint32_t)strlen(m);
    v->n_merges++;
}

/* GPT-2's byte -> code point table, written out independently of the tokenizer. */
static uint32_t byte_cp(int b) {
    int n = 0;
    for (int x = 0; x < 256; x++) {
        bool keep = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
        if (x == b) {
            return keep ? (uint32_t)x : 256u + (uint32_t)n;
        }
        if (!keep) {
            n++;
        }
    }
    return 0;
}

static size_t put_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static wk_tokenizer *build(vocab *v, wk_tok_model model, wk_tok_pre pre, int32_t bos, int32_t eos,
                           bool add_bos, bool space_prefix) {
    wk_tokenizer_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.model = model;
    spec.pre = pre;
    spec.n_vocab = v->n;
    spec.tokens = v->tokens;
    spec.token_lens = v->lens;
    spec.token_types = v->types;
    spec.scores = v->scores;
    spec.n_merges = v->n_merges;
    spec.merges = v->merges;
    spec.merge_lens = v->merge_lens;
    spec.bos = bos;
    spec.eos = eos;
    spec.eot = -1;
    spec.eom = -1;
    spec.unk = model == WK_TOK_MODEL_SPM ? 0 : -1;
    spec.add_bos = add_bos;
    spec.add_space_prefix = space_prefix;
    wk_tokenizer *t = NULL;
    char err[256] = "";
    cm_err rv = wk_tokenizer_from_spec(&spec, &t, err, sizeof err);
    if (rv != CM_OK) {
        fprintf(stderr, "build failed: %s\n", err);
    }
    assert_int_equal(rv, CM_OK);
    return t;
}

/* BPE vocabulary: 3 control tokens, the 256 byte characters (ids 3..258), then merges. */
static wk_tokenizer *small_bpe(vocab *v, wk_tok_pre pre) {
    memset(v, 0, sizeof *v);
    add_str(v, "<|endoftext|>", WK_TOKTYPE_CONTROL, 0);
    add_str(v, "<|im_start|>", WK_TOKTYPE_CONTROL, 0);
    add_str(v, "<|im_end|>", WK_TOKTYPE_CONTROL, 0);
    for (int b = 0; b < 256; b++) {
        char buf[4];
        add_tok(v, buf, put_utf8(byte_cp(b), buf), WK_TOKTYPE_NORMAL, 0);
    }
    const char *merges[] = {"b c",    "a b",        "h e", "l l", "he ll",
                            "hell o", "\xc4\xa0 w", "a a", "1 2", "12 3"};
    const char *results[] = {"bc",    "ab",        "he", "ll", "hell",
                             "hello", "\xc4\xa0w", "aa", "12", "123"};
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        add_merge(v, merges[i]);
        add_str(v, results[i], WK_TOKTYPE_NORMAL, 0);
    }
    return build(v, WK_TOK_MODEL_BPE, pre, -1, 0, false, false);
}

static int32_t id_of(const wk_tokenizer *t, const char *s) {
    int32_t id = wk_tokenizer_find(t, s, strlen(s));
    assert_true(id >= 0);
    return id;
}

static size_t enc(const wk_tokenizer *t, const char *s, bool special, int32_t *out, size_t cap) {
    size_t n = 0;
    assert_int_equal(wk_tokenizer_encode(t, s, strlen(s), true, special, out, cap, &n), CM_OK);
    return n;
}

/* Decodes ids with the streaming detokenizer into a NUL-terminated string. */
static size_t detok_all(const wk_tokenizer *t, const int32_t *ids, size_t n, bool special,
                        char *out, size_t cap) {
    wk_detok d;
    wk_detok_init(&d, t);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t w = 0;
        assert_int_equal(wk_detok_push(&d, ids[i], special, out + o, cap - o - 1, &w), CM_OK);
        o += w;
    }
    o += wk_detok_flush(&d, out + o, cap - o - 1);
    out[o] = '\0';
    return o;
}

static void test_bpe_merge_order(void **state) {
    (void)state;
    vocab v;
    wk_tokenizer *t = small_bpe(&v, WK_TOK_PRE_GPT2);
    int32_t ids[32];
    /* "b c" has the lower rank, so "abc" is a + bc even though "a b" is also a merge. */
    size_t n = enc(t, "abc", false, ids, 32);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], id_of(t, "a"));
    assert_int_equal(ids[1], id_of(t, "bc"));
    n = enc(t, "abd", false, ids, 32);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], id_of(t, "ab"));
    /* Merges chain: h e -> he, l l -> ll, he ll -> hell, hell o -> hello. */
    n = enc(t, "hello", false, ids, 32);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], id_of(t, "hello"));
    /* Equal ranks go left to right: aaa = aa + a. */
    n = enc(t, "aaa", false, ids, 32);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], id_of(t, "aa"));
    assert_int_equal(ids[1], id_of(t, "a"));
    /* A space joins the following word (Ġw). */
    n = enc(t, "hello world", false, ids, 32);
    assert_true(n >= 2);
    assert_int_equal(ids[1], id_of(t, "\xc4\xa0w"));
    wk_tokenizer_free(t);
}

static void test_bpe_long_word_is_fast(void **state) {
    (void)state;
    vocab v;
    wk_tokenizer *t = small_bpe(&v, WK_TOK_PRE_GPT2);
    /* One 200k-letter word: the heap-based merge keeps this O(n log n). */
    size_t len = 200000;
    char *s = malloc(len + 1);
    int32_t *ids = malloc(sizeof(int32_t) * len);
    assert_non_null(s);
    assert_non_null(ids);
    memset(s, 'a', len);
    s[len] = '\0';
    size_t n = 0;
    assert_int_equal(wk_tokenizer_encode(t, s, len, false, false, ids, len, &n), CM_OK);
    assert_int_equal(n, len / 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ids[i], id_of(t, "aa"));
    }
    free(s);
    free(ids);
    wk_tokenizer_free(t);
}

/* ---- linear time: a timing ratio within one run (no absolute times asserted) ---- */

/* Fills out[0..len) with mixed text: words, spaces, punctuation, newlines, 2- and 3-byte
 * characters, and numbers (ASCII and Arabic-Indic) every len/4 bytes. The stretches between
 * numbers grow with the input: that is the shape on which the SmolLM pre-tokenizer, rescanning
 * ahead for the next digit at every piece, was quadratic. */
static void mixed_text(char *out, size_t len) {
    static const char *const parts[] = {
        "Hello", " world",
        ",",     " caf\xc3\xa9",
        "  ",    "(x)",
        "\n",    " \xe6\x97\xa5\xe6\x9c\xac",
        " it's", "\t",
        " --",   " na\xc3\xafve",
        "!",     " \xd0\xbf\xd1\x80\xd0\xb8",
        ".\r\n", " ok",
    };
    static const char *const numbers[] = {" 2026", " \xd9\xa3\xd9\xa4", " 12.5%"};
    uint64_t x = 88172645463325252ULL;
    size_t o = 0, since_number = 0, k = 0;
    while (o < len) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const char *p = parts[x % (sizeof parts / sizeof parts[0])];
        if (since_number >= len / 4) {
            p = numbers[k++ % (sizeof numbers / sizeof numbers[0])];
            since_number = 0;
        }
        size_t pl = strlen(p);
        if (o + pl > len) {
            p = " ";
            pl = 1;
        }
        memcpy(out + o, p, pl);
        o += pl;
        since_number += pl;
    }
}

/* Seconds for one encode of text[0..len). */
static double encode_seconds(const wk_tokenizer *t, const char *text, size_t len, int32_t *ids,
                             size_t cap, bool special) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    size_t n = 0;
    assert_int_equal(wk_tokenizer_encode(t, text, len, false, special, ids, cap, &n), CM_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_true(n > len / 16);
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

/* 4x the input must take less than 6x the time (a quadratic pass takes ~16x). Both sizes
 * (1 MB and 4 MB of text, 18-72 MB of scratch) are past the per-core caches, so cache
 * effects do not skew the ratio, and far above timer noise. Small and big runs alternate in
 * pairs and the best pair's ratio counts, so a burst of load on a shared machine hits both
 * sides of a pair; it stops as soon as the ratio holds (a quadratic regression fails after the
 * first pair's ~16x).
 * Prints the figures (the 1 MB time is the issue-13 figure: < 0.5 s on the dev machine). */
static void check_linear(const wk_tokenizer *t, const char *what, bool special) {
    size_t big = 4u << 20, small = big / 4;
    char *text_small = malloc(small);
    char *text_big = malloc(big);
    int32_t *ids = malloc(sizeof(int32_t) * (big + 2));
    assert_non_null(text_small);
    assert_non_null(text_big);
    assert_non_null(ids);
    mixed_text(text_small, small);
    mixed_text(text_big, big);
    double t_small = 0, t_big = 0, ratio = 1e9;
    for (int attempt = 0; attempt < 5; attempt++) {
        double ts = encode_seconds(t, text_small, small, ids, big + 2, special);
        double tb = encode_seconds(t, text_big, big, ids, big + 2, special);
        if (tb / ts < ratio) {
            ratio = tb / ts;
            t_small = ts;
            t_big = tb;
        }
        if (ratio < 6.0 || ratio > 12.0) {
            break; /* linear, or so far off that retrying cannot help */
        }
    }
    printf("# tokenizer %s: %zu KB in %.4f s, %zu KB in %.4f s (ratio %.2f)\n", what, small >> 10,
           t_small, big >> 10, t_big, t_big / t_small);
    assert_true(t_big < 6.0 * t_small);
    free(text_small);
    free(text_big);
    free(ids);
}

static void test_encode_is_linear(void **state) {
    (void)state;
    static const wk_tok_pre pres[] = {WK_TOK_PRE_GPT2, WK_TOK_PRE_SMOLLM, WK_TOK_PRE_LLAMA3,
                                      WK_TOK_PRE_QWEN2};
    static const char *const names[] = {"gpt2", "smollm", "llama3", "qwen2"};
    for (size_t i = 0; i < sizeof pres / sizeof pres[0]; i++) {
        vocab v;
        wk_tokenizer *t = small_bpe(&v, pres[i]);
        check_linear(t, names[i], true);
        wk_tokenizer_free(t);
    }
}

/* wk_tokenizer_min_tokens never exceeds the real count, with or without special tokens, on
 * text that has dropped bytes, specials, spaces and non-ASCII; and is not vacuous. */
static void check_min_tokens(const wk_tokenizer *t, const char *text, size_t len) {
    size_t cap = len + 2, n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    assert_non_null(ids);
    size_t lower = wk_tokenizer_min_tokens(t, text, len);
    for (int special = 0; special < 2; special++) {
        assert_int_equal(wk_tokenizer_encode(t, text, len, false, special, ids, cap, &n), CM_OK);
        assert_true(lower <= n);
    }
    free(ids);
}

static void test_min_tokens_is_a_bound(void **state) {
    (void)state;
    const char *texts[] = {
        "",
        "a",
        "hello hello hello",
        "<|im_start|>user\nhi<|im_end|>",
        "ctl\x04\x04\x04x",
        "  spaces\t\ttabs\n\nnewlines\r\n",
        "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac 123",
    };
    vocab v;
    wk_tokenizer *t = small_bpe(&v, WK_TOK_PRE_SMOLLM);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        check_min_tokens(t, texts[i], strlen(texts[i]));
    }
    size_t len = 100000;
    char *big = malloc(len);
    assert_non_null(big);
    mixed_text(big, len);
    check_min_tokens(t, big, len);
    /* The longest token here is a 13-byte special: the bound is at least len / 13. */
    assert_true(wk_tokenizer_min_tokens(t, big, len) >= len / 13);
    free(big);
    wk_tokenizer_free(t);
}

static void test_special_tokens(void **state) {
    (void)state;
    vocab v;
    wk_tokenizer *t = small_bpe(&v, WK_TOK_PRE_GPT2);
    int32_t ids[64];
    const char *text = "<|im_start|>ab<|im_end|>";
    size_t n = enc(t, text, true, ids, 64);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], id_of(t, "ab"));
    assert_int_equal(ids[2], 2);
    /* Without parse_special the markers are plain text: no control id may appear. */
    n = enc(t, text, false, ids, 64);
    assert_true(n > 3);
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] > 2);
    }
    char out[128];
    detok_all(t, ids, n, false, out, sizeof out);
    assert_string_equal(out, text);
    /* Control tokens render only when asked. */
    int32_t ctl[2] = {1, 2};
    detok_all(t, ctl, 2, false, out, sizeof out);
    assert_string_equal(out, "");
    detok_all(t, ctl, 2, true, out, sizeof out);
    assert_string_equal(out, "<|im_start|><|im_end|>");
    /* EOG: eos (0) and <|im_end|> by its text; <|im_start|> is not. */
    assert_true(wk_tokenizer_is_eog(t, 0));
    assert_true(wk_tokenizer_is_eog(t, 2));
    assert_false(wk_tokenizer_is_eog(t, 1));
    assert_false(wk_tokenizer_is_eog(t, 100000));
    assert_false(wk_tokenizer_is_eog(t, -1));
    wk_tokenizer_free(t);
}

/* Pre-tokenizes s and joins the pieces with '|' for easy comparison. */
static void pieces(wk_tok_pre pre, const char *s, char *out) {
    uint32_t lens[256];
    size_t n = 0;
    assert_int_equal(wk_tokenizer_pretokenize(pre, s, strlen(s), lens, 256, &n), CM_OK);
    size_t pos = 0, o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            out[o++] = '|';
        }
        memcpy(out + o, s + pos, lens[i]);
        o += lens[i];
        pos += lens[i];
    }
    out[o] = '\0';
    assert_int_equal(pos, strlen(s));
}

static void test_pretokenizers(void **state) {
    (void)state;
    char out[512];
    pieces(WK_TOK_PRE_GPT2, "Hello, world! I'm 2024 ok", out);
    assert_string_equal(out, "Hello|,| world|!| I|'m| 2024| ok");
    /* Whitespace runs leave their last space to the next word; trailing runs stay whole. */
    pieces(WK_TOK_PRE_GPT2, "a   b  ", out);
    assert_string_equal(out, "a|  | b|  ");
    pieces(WK_TOK_PRE_GPT2, "x\n\ny", out);
    assert_string_equal(out, "x|\n|\n|y");
    /* GPT-2 contractions are case-sensitive; Llama 3's are not. */
    pieces(WK_TOK_PRE_GPT2, "DON'T", out);
    assert_string_equal(out, "DON|'|T");
    pieces(WK_TOK_PRE_LLAMA3, "DON'T", out);
    assert_string_equal(out, "DON|'T");
    /* smollm: every digit alone, and a space before a digit stands alone. */
    pieces(WK_TOK_PRE_SMOLLM, "in 2024!", out);
    assert_string_equal(out, "in| |2|0|2|4|!");
    /* Llama 3: digits in groups of up to three; Qwen2: one by one. */
    pieces(WK_TOK_PRE_LLAMA3, "x 1234567", out);
    assert_string_equal(out, "x| |123|456|7");
    pieces(WK_TOK_PRE_QWEN2, "12", out);
    assert_string_equal(out, "1|2");
    /* Llama 3: punctuation takes following newlines; a letter run takes one leading
     * non-letter; whitespace up to the last newline is one piece. */
    pieces(WK_TOK_PRE_LLAMA3, "end.\n\nNext  \n x", out);
    assert_string_equal(out, "end|.\n\n|Next|  \n| x");
    pieces(WK_TOK_PRE_LLAMA3, "(hello", out);
    assert_string_equal(out, "(hello");
    /* Unicode classes: CJK letters, a combining mark (not a letter), non-ASCII digits. */
    pieces(WK_TOK_PRE_GPT2, "日本 e\xcc\x81x \xd9\xa3\xd9\xa4", out);
    assert_string_equal(out, "日本| e|\xcc\x81|x| \xd9\xa3\xd9\xa4");
    /* No-break space is whitespace, not part of the word. */
    pieces(WK_TOK_PRE_GPT2,
           "a\xc2\xa0"
           "b",
           out);
    assert_string_equal(out, "a|\xc2\xa0|b");
    uint32_t lens[4];
    size_t n;
    assert_int_equal(wk_tokenizer_pretokenize(WK_TOK_PRE_GPT2, "a\xff", 2, lens, 4, &n),
                     CM_ERR_UTF8);
    assert_int_equal(wk_tokenizer_pretokenize(WK_TOK_PRE_GPT2, "a b c d e", 9, lens, 2, &n),
                     CM_ERR_LIMIT);
    assert_int_equal(wk_tokenizer_pre_from_name("smollm", 6), WK_TOK_PRE_SMOLLM);
    assert_int_equal(wk_tokenizer_pre_from_name("llama-bpe", 9), WK_TOK_PRE_LLAMA3);
    assert_int_equal(wk_tokenizer_pre_from_name("nonesuch", 8), 0);
}

static void test_encode_errors(void **state) {
    (void)state;
    vocab v;
    wk_tokenizer *t = small_bpe(&v, WK_TOK_PRE_GPT2);
    int32_t ids[8];
    size_t n = 99;
    const char *bad[] = {"\xff",     "a\xc0\xaf",        "\xed\xa0\x80",
                         "\xe6\x97", "\xf4\x90\x80\x80", "\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(wk_tokenizer_encode(t, bad[i], strlen(bad[i]), false, false, ids, 8, &n),
                         CM_ERR_UTF8);
        assert_int_equal(n, 0);
    }
    /* Too many tokens: LIMIT with the buffer filled to cap. */
    assert_int_equal(wk_tokenizer_encode(t, "x y z w v", 9, false, false, ids, 3, &n),
                     CM_ERR_LIMIT);
    assert_int_equal(n, 3);
    assert_int_equal(wk_tokenizer_encode(t, "", 0, false, false, ids, 8, &n), CM_OK);
    assert_int_equal(n, 0);
    wk_tokenizer_free(t);
}

static void test_utf8_valid(void **state) {
    (void)state;
    assert_true(wk_utf8_valid("", 0));
    assert_true(wk_utf8_valid("plain", 5));
    assert_true(wk_utf8_valid("\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80", 9));
    assert_true(wk_utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_true(wk_utf8_valid("\xef\xbf\xbd", 3));      /* U+FFFD */
    assert_true(wk_utf8_valid("a\0b", 3));              /* NUL is a character */
    assert_false(wk_utf8_valid("\xc0\x80", 2));         /* overlong NUL */
    assert_false(wk_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(wk_utf8_valid("\xf0\x80\x80\xaf", 4)); /* overlong */
    assert_false(wk_utf8_valid("\xed\xbf\xbf", 3));     /* surrogate */
    assert_false(wk_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(wk_utf8_valid("\xf8\x88\x80\x80\x80", 5));
    assert_false(wk_utf8_valid("\xe6\x97", 2)); /* truncated */
    assert_false(wk_utf8_valid("\xe6\x97"
                               "a",
                               3));
    assert_false(wk_utf8_valid("\xbf", 1));
}

static void test_detok_streaming(void **state) {
    (void)state;
    vocab v;
    wk_tokenizer *t = small_bpe(&v, WK_TOK_PRE_GPT2);
    /* "😀" is F0 9F 98 80: four byte tokens; nothing may come out until the last one. */
    const uint8_t emoji[4] = {0xF0, 0x9F, 0x98, 0x80};
    wk_detok d;
    wk_detok_init(&d, t);
    char out[256];
    size_t w;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(wk_detok_push(&d, 3 + emoji[i], false, out, sizeof out, &w), CM_OK);
        if (i < 3) {
            assert_int_equal(w, 0);
        } else {
            assert_int_equal(w, 4);
            assert_memory_equal(out, emoji, 4);
        }
    }
    /* A lead byte followed by ASCII: the lead becomes U+FFFD, the ASCII comes through. */
    assert_int_equal(wk_detok_push(&d, 3 + 0xE6, false, out, sizeof out, &w), CM_OK);
    assert_int_equal(w, 0);
    assert_int_equal(wk_detok_push(&d, 3 + 'a', false, out, sizeof out, &w), CM_OK);
    assert_int_equal(w, 4);
    assert_memory_equal(out,
                        "\xef\xbf\xbd"
                        "a",
                        4);
    /* A lone continuation byte is replaced at once. */
    assert_int_equal(wk_detok_push(&d, 3 + 0x80, false, out, sizeof out, &w), CM_OK);
    assert_int_equal(w, 3);
    /* An incomplete tail at the end of the stream is flushed as one U+FFFD (E6 97). */
    assert_int_equal(wk_detok_push(&d, 3 + 0xE6, false, out, sizeof out, &w), CM_OK);
    assert_int_equal(wk_detok_push(&d, 3 + 0x97, false, out, sizeof out, &w), CM_OK);
    assert_int_equal(w, 0);
    assert_int_equal(wk_detok_flush(&d, out, sizeof out), 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(wk_detok_flush(&d, out, sizeof out), 0);
    /* Too small an output buffer is an error, not an overflow. */
    assert_int_equal(wk_detok_push(&d, id_of(t, "hello"), false, out, 2, &w), CM_ERR_LIMIT);
    wk_tokenizer_free(t);
}

/* SentencePiece-style vocabulary: <unk>, <s>, </s>, 256 byte tokens, pieces with scores. */
static wk_tokenizer *small_spm(vocab *v) {
    memset(v, 0, sizeof *v);
    add_str(v, "<unk>", WK_TOKTYPE_UNKNOWN, 0);
    add_str(v, "<s>", WK_TOKTYPE_CONTROL, 0);
    add_str(v, "</s>", WK_TOKTYPE_CONTROL, 0);
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        add_str(v, buf, WK_TOKTYPE_BYTE, 0);
    }
    const char *singles[] = {"\xe2\x96\x81", "h", "e", "l", "o", "w", "r", "d"};
    for (size_t i = 0; i < sizeof singles / sizeof singles[0]; i++) {
        add_str(v, singles[i], WK_TOKTYPE_NORMAL, -20.0f);
    }
    const char *pieces_[] = {"he",
                             "ll",
                             "hell",
                             "hello",
                             "\xe2\x96\x81hello",
                             "\xe2\x96\x81w",
                             "or",
                             "\xe2\x96\x81wor",
                             "ld",
                             "\xe2\x96\x81world"};
    for (size_t i = 0; i < sizeof pieces_ / sizeof pieces_[0]; i++) {
        add_str(v, pieces_[i], WK_TOKTYPE_NORMAL, -1.0f - (float)i);
    }
    /* turn ends of Phi-3 and Gemma (both SentencePiece vocabularies), and a user-defined
     * token that ends nothing */
    add_str(v, "<|end|>", WK_TOKTYPE_CONTROL, 0);
    add_str(v, "<end_of_turn>", WK_TOKTYPE_USER_DEFINED, 0); /* as Gemma files have it */
    add_str(v, "<start_of_turn>", WK_TOKTYPE_USER_DEFINED, 0);
    return build(v, WK_TOK_MODEL_SPM, 0, 1, 2, true, true);
}

static void test_spm(void **state) {
    (void)state;
    vocab v;
    wk_tokenizer *t = small_spm(&v);
    int32_t ids[64];
    size_t n = enc(t, "hello world", false, ids, 64);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 1); /* BOS: add_bos */
    assert_int_equal(ids[1], id_of(t, "\xe2\x96\x81hello"));
    assert_int_equal(ids[2], id_of(t, "\xe2\x96\x81world"));
    char out[128];
    detok_all(t, ids, n, false, out, sizeof out);
    assert_string_equal(out, "hello world"); /* leading space of the first piece dropped */
    /* Byte fallback: é is not a piece, so it becomes <0xC3><0xA9>; decoding rejoins it. */
    n = enc(t, "h\xc3\xa9", false, ids, 64);
    assert_int_equal(ids[n - 2], id_of(t, "<0xC3>"));
    assert_int_equal(ids[n - 1], id_of(t, "<0xA9>"));
    detok_all(t, ids, n, false, out, sizeof out);
    assert_string_equal(out, "h\xc3\xa9");
    /* Special tokens in text only with parse_special; a space prefix follows them. */
    n = enc(t, "hello</s>world", true, ids, 64);
    assert_int_equal(n, 4);
    assert_int_equal(ids[2], 2);
    assert_int_equal(ids[3], id_of(t, "\xe2\x96\x81world"));
    n = enc(t, "hello</s>", false, ids, 64);
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] != 2);
    }
    assert_true(wk_tokenizer_is_eog(t, 2));
    assert_true(wk_tokenizer_is_eog(t, id_of(t, "<|end|>")));
    assert_true(wk_tokenizer_is_eog(t, id_of(t, "<end_of_turn>")));
    assert_false(wk_tokenizer_is_eog(t, id_of(t, "<start_of_turn>")));
    assert_false(wk_tokenizer_is_eog(t, id_of(t, "\xe2\x96\x81hello")));
    assert_int_equal(wk_tokenizer_bos(t), 1);
    assert_true(wk_tokenizer_add_bos(t));
    wk_tokenizer_free(t);
}

static void test_spec_errors(void **state) {
    (void)state;
    vocab v;
    memset(&v, 0, sizeof v);
    add_str(&v, "a", WK_TOKTYPE_NORMAL, 0);
    wk_tokenizer_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.model = WK_TOK_MODEL_SPM;
    spec.n_vocab = 1;
    spec.tokens = v.tokens;
    spec.token_lens = v.lens;
    spec.bos = 5; /* out of range */
    spec.eos = spec.eot = spec.eom = spec.unk = -1;
    wk_tokenizer *t = (wk_tokenizer *)1;
    char err[256] = "";
    assert_int_equal(wk_tokenizer_from_spec(&spec, &t, err, sizeof err), CM_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(err, "bos_token_id"));
    spec.bos = -1;
    int32_t bad_type = 9;
    spec.token_types = &bad_type;
    assert_int_equal(wk_tokenizer_from_spec(&spec, &t, err, sizeof err), CM_ERR_FORMAT);
    spec.token_types = NULL;
    spec.model = WK_TOK_MODEL_BPE;
    spec.pre = WK_TOK_PRE_GPT2;
    assert_int_equal(wk_tokenizer_from_spec(&spec, &t, err, sizeof err), CM_ERR_FORMAT);
    assert_non_null(strstr(err, "merges"));
}

/* ---- the bundled model ---- */

typedef struct model_fixture {
    wk_gguf *g;
    wk_tokenizer *t;
} model_fixture;

static int model_setup(void **state) {
    const char *path = getenv("SLUICE_TEST_MODEL");
    static model_fixture f;
    memset(&f, 0, sizeof f);
    *state = &f;
    if (path == NULL) {
        return 0;
    }
    char err[256] = "";
    if (wk_gguf_open(path, &f.g, err, sizeof err) != CM_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, err);
        return -1;
    }
    if (wk_tokenizer_load(f.g, &f.t, err, sizeof err) != CM_OK) {
        fprintf(stderr, "tokenizer load: %s\n", err);
        return -1;
    }
    return 0;
}

static int model_teardown(void **state) {
    model_fixture *f = *state;
    wk_tokenizer_free(f->t);
    wk_gguf_close(f->g);
    return 0;
}

static void test_model_round_trip(void **state) {
    model_fixture *f = *state;
    if (f->t == NULL) {
        skip();
    }
    const wk_tokenizer *t = f->t;
    assert_int_equal(wk_tokenizer_n_vocab(t), 49152);
    assert_false(wk_tokenizer_add_bos(t));
    const char *corpus[] = {
        "Hello, world! How are you doing today?",
        "Emoji: \xf0\x9f\x98\x80 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd family "
        "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7",
        "CJK: \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xe4\xb8\xad\xe6\x96\x87 "
        "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
        "Combining: e\xcc\x81 n\xcc\x83 a\xcc\x88\xcc\x81 Z\xcd\x91\xcd\x9b",
        "Arabic \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 and digits \xd9\xa3\xd9\xa4 123",
        "  spaces\t\ttabs\n\nnewlines\r\n  end  ",
        "code:\n    def f(x):\n        return x**2  # square\n",
        "control \x01\x04\x1f bytes",
    };
    int32_t ids[512];
    char out[1024];
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        size_t n = enc(t, corpus[i], false, ids, 512);
        assert_true(n > 0);
        for (size_t k = 0; k < n; k++) {
            assert_true(ids[k] >= 0 && (uint32_t)ids[k] < wk_tokenizer_n_vocab(t));
        }
        detok_all(t, ids, n, false, out, sizeof out);
        if (i == 7) {
            /* SmolLM2's vocabulary has no token for byte 0x04: it is dropped (as HF does). */
            assert_string_equal(out, "control \x01\x1f bytes");
        } else {
            assert_string_equal(out, corpus[i]);
        }
    }
}

static void test_model_specials(void **state) {
    model_fixture *f = *state;
    if (f->t == NULL) {
        skip();
    }
    const wk_tokenizer *t = f->t;
    int32_t im_start = id_of(t, "<|im_start|>");
    int32_t im_end = id_of(t, "<|im_end|>");
    assert_true(wk_tokenizer_is_eog(t, im_end));
    assert_true(wk_tokenizer_is_eog(t, wk_tokenizer_eos(t)));
    assert_true(wk_tokenizer_is_eog(t, id_of(t, "<|endoftext|>")));
    assert_false(wk_tokenizer_is_eog(t, im_start));
    int32_t ids[64];
    size_t n = enc(t, "<|im_start|>user\nHi<|im_end|>\n", true, ids, 64);
    assert_int_equal(ids[0], im_start);
    bool saw_end = false;
    for (size_t i = 0; i < n; i++) {
        saw_end |= ids[i] == im_end;
    }
    assert_true(saw_end);
    n = enc(t, "<|im_start|>user", false, ids, 64);
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] != im_start);
    }
    /* smollm splits digits: "2024" is four tokens, one digit each. */
    n = enc(t, "2024", false, ids, 64);
    assert_int_equal(n, 4);
    size_t pl;
    const char *p = wk_tokenizer_piece(t, ids[2], false, &pl);
    assert_int_equal(pl, 1);
    assert_int_equal(p[0], '2');
    /* Invalid UTF-8 is rejected by the tokenizer itself. */
    assert_int_equal(wk_tokenizer_encode(t, "ok\xff", 3, false, false, ids, 64, &n), CM_ERR_UTF8);
}

static void test_many_specials(void **state) {
    (void)state;
    /* Thousands of user-defined tokens (as Gemma has) and a control token whose text is also
     * a plain token: matching picks the longest special and prefers the special duplicate. */
    static vocab v;
    memset(&v, 0, sizeof v);
    for (int b = 0; b < 256; b++) {
        char buf[4];
        add_tok(&v, buf, put_utf8(byte_cp(b), buf), WK_TOKTYPE_NORMAL, 0);
    }
    int32_t plain = add_str(&v, "<x>", WK_TOKTYPE_NORMAL, 0);
    int32_t ctl = add_str(&v, "<x>", WK_TOKTYPE_CONTROL, 0);
    int32_t u1 = -1, u12 = -1;
    for (int i = 0; i < 300; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "<u%d>", i);
        int32_t id = add_str(&v, buf, WK_TOKTYPE_USER_DEFINED, 0);
        if (i == 1) {
            u1 = id;
        } else if (i == 12) {
            u12 = id;
        }
    }
    add_merge(&v, "a b");
    add_str(&v, "ab", WK_TOKTYPE_NORMAL, 0);
    wk_tokenizer *t = build(&v, WK_TOK_MODEL_BPE, WK_TOK_PRE_GPT2, -1, -1, false, false);
    (void)plain;
    int32_t ids[16];
    size_t n = enc(t, "<u12><u1>ab<x>", true, ids, 16);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], u12);
    assert_int_equal(ids[1], u1);
    assert_int_equal(ids[2], id_of(t, "ab"));
    assert_int_equal(ids[3], ctl);
    wk_tokenizer_free(t);
}

/* ---- loading from GGUF images built in memory ---- */

typedef struct gguf_img {
    uint8_t buf[32768];
    size_t n;
    uint64_t n_kv;
} gguf_img;

static void put_bytes(gguf_img *g, const void *p, size_t len) {
    assert_true(g->n + len <= sizeof g->buf);
    memcpy(g->buf + g->n, p, len);
    g->n += len;
}

static void put_u32(gguf_img *g, uint32_t v) {
    put_bytes(g, &v, 4);
}

static void put_u64(gguf_img *g, uint64_t v) {
    put_bytes(g, &v, 8);
}

static void put_gstr(gguf_img *g, const char *s) {
    put_u64(g, strlen(s));
    put_bytes(g, s, strlen(s));
}

static void img_begin(gguf_img *g) {
    memset(g, 0, sizeof *g);
    put_bytes(g, "GGUF", 4);
    put_u32(g, 3); /* version */
    put_u64(g, 0); /* tensors */
    put_u64(g, 0); /* kv count, patched by img_kv */
}

static void img_key(gguf_img *g, const char *key, uint32_t type) {
    g->n_kv++;
    memcpy(g->buf + 16, &g->n_kv, 8);
    put_gstr(g, key);
    put_u32(g, type);
}

static void kv_str(gguf_img *g, const char *key, const char *v) {
    img_key(g, key, 8);
    put_gstr(g, v);
}

static void kv_u32(gguf_img *g, const char *key, uint32_t v) {
    img_key(g, key, 4);
    put_u32(g, v);
}

static void kv_strs(gguf_img *g, const char *key, const char *const *v, size_t n) {
    img_key(g, key, 9);
    put_u32(g, 8);
    put_u64(g, n);
    for (size_t i = 0; i < n; i++) {
        put_gstr(g, v[i]);
    }
}

static void kv_i32s(gguf_img *g, const char *key, const int32_t *v, size_t n) {
    img_key(g, key, 9);
    put_u32(g, 5);
    put_u64(g, n);
    put_bytes(g, v, 4 * n);
}

static void kv_f32s(gguf_img *g, const char *key, const float *v, size_t n) {
    img_key(g, key, 9);
    put_u32(g, 6);
    put_u64(g, n);
    put_bytes(g, v, 4 * n);
}

static cm_err load_img(const gguf_img *g, wk_tokenizer **t, char *err, size_t errlen) {
    wk_gguf *gg = NULL;
    char gerr[256] = "";
    cm_err rv = wk_gguf_open_memory(g->buf, g->n, &gg, gerr, sizeof gerr);
    if (rv != CM_OK) {
        fprintf(stderr, "gguf: %s\n", gerr);
    }
    assert_int_equal(rv, CM_OK);
    rv = wk_tokenizer_load(gg, t, err, errlen);
    wk_gguf_close(gg); /* the tokenizer copies what it needs */
    return rv;
}

/* A SentencePiece vocabulary: <unk> <s> </s> ▁ h e l o ▁h he ll hell hello ▁hello. */
static const char *const spm_tokens[] = {"<unk>", "<s>",  "</s>",  "\xe2\x96\x81",     "h",
                                         "e",     "l",    "o",     "\xe2\x96\x81h",    "he",
                                         "ll",    "hell", "hello", "\xe2\x96\x81hello"};
static const float spm_scores[] = {0, 0, 0, -9, -9, -9, -9, -9, -5, -1, -2, -3, -4, -4.5f};
static const int32_t spm_types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

static void spm_img(gguf_img *g) {
    img_begin(g);
    kv_str(g, "tokenizer.ggml.model", "llama");
    kv_strs(g, "tokenizer.ggml.tokens", spm_tokens, 14);
    kv_f32s(g, "tokenizer.ggml.scores", spm_scores, 14);
    kv_i32s(g, "tokenizer.ggml.token_type", spm_types, 14);
    kv_u32(g, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(g, "tokenizer.ggml.eos_token_id", 2);
}

static void test_load_gguf(void **state) {
    (void)state;
    gguf_img g;
    wk_tokenizer *t = NULL;
    char err[256] = "";
    spm_img(&g);
    assert_int_equal(load_img(&g, &t, err, sizeof err), CM_OK);
    /* No add_bos_token / add_space_prefix keys: SentencePiece defaults (both on). */
    assert_true(wk_tokenizer_add_bos(t));
    int32_t ids[16];
    size_t n = enc(t, "hello hello", false, ids, 16);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 13);
    assert_int_equal(ids[2], 13);
    assert_true(wk_tokenizer_is_eog(t, 2));
    wk_tokenizer_free(t);

    /* Missing vocabulary. */
    img_begin(&g);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    assert_int_equal(load_img(&g, &t, err, sizeof err), CM_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(err, "tokenizer.ggml.tokens"));
    /* Unknown model kind, unknown pre-tokenizer: named in the message. */
    img_begin(&g);
    kv_str(&g, "tokenizer.ggml.model", "bert");
    assert_int_equal(load_img(&g, &t, err, sizeof err), CM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "bert"));
    img_begin(&g);
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_str(&g, "tokenizer.ggml.pre", "deepseek-coder");
    assert_int_equal(load_img(&g, &t, err, sizeof err), CM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "deepseek-coder"));
    /* token_type of the wrong length. */
    img_begin(&g);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", spm_tokens, 14);
    kv_f32s(&g, "tokenizer.ggml.scores", spm_scores, 14);
    kv_i32s(&g, "tokenizer.ggml.token_type", spm_types, 13);
    assert_int_equal(load_img(&g, &t, err, sizeof err), CM_ERR_FORMAT);
    assert_non_null(strstr(err, "token_type"));
    /* SentencePiece without scores. */
    img_begin(&g);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", spm_tokens, 14);
    assert_int_equal(load_img(&g, &t, err, sizeof err), CM_ERR_FORMAT);
    assert_non_null(strstr(err, "scores"));
    /* A special id outside the vocabulary. */
    spm_img(&g);
    kv_u32(&g, "tokenizer.ggml.eot_token_id", 99);
    assert_int_equal(load_img(&g, &t, err, sizeof err), CM_ERR_FORMAT);
    assert_non_null(strstr(err, "eot_token_id"));
}

static void test_llama3_ignore_merges(void **state) {
    (void)state;
    /* "abc" is a token but no merge path builds it: Llama 3 (ignore_merges) takes the word
     * whole, GPT-2 style BPE cannot reach it. */
    vocab v;
    memset(&v, 0, sizeof v);
    for (int b = 0; b < 256; b++) {
        char buf[4];
        add_tok(&v, buf, put_utf8(byte_cp(b), buf), WK_TOKTYPE_NORMAL, 0);
    }
    int32_t abc = add_str(&v, "abc", WK_TOKTYPE_NORMAL, 0);
    add_merge(&v, "a b");
    add_str(&v, "ab", WK_TOKTYPE_NORMAL, 0);
    int32_t ids[8];
    wk_tokenizer *t = build(&v, WK_TOK_MODEL_BPE, WK_TOK_PRE_LLAMA3, -1, -1, false, false);
    assert_int_equal(enc(t, "abc", false, ids, 8), 1);
    assert_int_equal(ids[0], abc);
    wk_tokenizer_free(t);
    t = build(&v, WK_TOK_MODEL_BPE, WK_TOK_PRE_GPT2, -1, -1, false, false);
    assert_int_equal(enc(t, "abc", false, ids, 8), 2);
    assert_int_equal(ids[0], id_of(t, "ab"));
    wk_tokenizer_free(t);
}

/* The bundled model (SmolLM2: the "smollm" pre-tokenizer) on 1 MB of mixed text. */
static void test_model_encode_is_linear(void **state) {
    model_fixture *f = *state;
    if (f->t == NULL) {
        skip();
    }
    check_linear(f->t, "bundled model", false);
}

/* On the bundled model the bound holds and prints how much of a long prompt it proves. */
static void test_model_min_tokens(void **state) {
    model_fixture *f = *state;
    if (f->t == NULL) {
        skip();
    }
    size_t len = 250000;
    char *text = malloc(len);
    int32_t *ids = malloc(sizeof(int32_t) * (len + 2));
    assert_non_null(text);
    assert_non_null(ids);
    mixed_text(text, len);
    size_t n = 0, lower = wk_tokenizer_min_tokens(f->t, text, len);
    assert_int_equal(wk_tokenizer_encode(f->t, text, len, false, true, ids, len + 2, &n), CM_OK);
    printf("# min_tokens on %zu bytes: %zu (encode: %zu)\n", len, lower, n);
    assert_true(lower <= n);
    assert_true(lower > 0);
    free(text);
    free(ids);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpe_merge_order),      cmocka_unit_test(test_bpe_long_word_is_fast),
        cmocka_unit_test(test_special_tokens),       cmocka_unit_test(test_pretokenizers),
        cmocka_unit_test(test_encode_errors),        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_detok_streaming),      cmocka_unit_test(test_spm),
        cmocka_unit_test(test_spec_errors),          cmocka_unit_test(test_load_gguf),
        cmocka_unit_test(test_llama3_ignore_merges), cmocka_unit_test(test_many_specials),
        cmocka_unit_test(test_encode_is_linear),     cmocka_unit_test(test_min_tokens_is_a_bound),
    };
    const struct CMUnitTest model_tests[] = {
        cmocka_unit_test(test_model_round_trip),
        cmocka_unit_test(test_model_specials),
        cmocka_unit_test(test_model_encode_is_linear),
        cmocka_unit_test(test_model_min_tokens),
    };
    int failed = cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("tokenizer_model", model_tests, model_setup, model_teardown);
    return failed;
}
