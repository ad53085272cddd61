/*
 * Tests for worker/grammar*.c: parse errors, acceptance of byte strings, runtime bounds, the
 * compile cache, and the token mask checked against brute force (a token is allowed iff
 * feeding its bytes keeps a valid prefix) on a small synthetic vocabulary and, when
 * SLUICE_TEST_MODEL is set, on the bundled model's 49k-token vocabulary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#include <cmocka.h>

#include "grammar.h"
#include "gguf.h"
#ifdef SLUICE_HAVE_JANSSON
#include "json_schema.h"
#endif
#include "tokenizer.h"
#include "tokenizer_impl.h"
#include "cm_rng.h"

/* A JSON grammar written for these tests (the schema compiler has its own tests). */
static const char *JSON_GBNF =
    "root   ::= object\n"
    "value  ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n"
    "object ::= \"{\" ( member ( \",\" ws member )* )? \"}\"\n"
    "member ::= string \":\" ws value\n"
    "array  ::= \"[\" ( value ( \",\" ws value )* )? \"]\"\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x00-\\x1f] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" hex{4} ) )* "
    "\"\\\"\"\n"
    "hex    ::= [0-9a-fA-F]\n"
    "number ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,15} ) ( \".\" [0-9]{1,16} )?\n"
    "ws     ::= \" \"?\n";

static wk_grammar *compile_ok(const char *text) {
    wk_grammar *g = NULL;
    char err[256];
    cm_err rv = wk_grammar_compile(text, strlen(text), NULL, &g, err, sizeof(err));
    if (rv != CM_OK)
        fprintf(stderr, "compile failed: %s\n", err);
    assert_int_equal(rv, CM_OK);
    return g;
}

static cm_err compile_err(const char *text, char *err, size_t errlen) {
    wk_grammar *g = NULL;
    cm_err rv = wk_grammar_compile(text, strlen(text), NULL, &g, err, errlen);
    assert_null(g);
    return rv;
}

/* match: 1 = complete sentence, 0 = valid prefix only, -1 = rejected. */
static int match(wk_grammar *g, const char *s, size_t len) {
    wk_grammar_state *st = NULL;
    assert_int_equal(wk_grammar_state_create(g, NULL, &st), CM_OK);
    cm_err rv = wk_grammar_accept_bytes(st, (const uint8_t *)s, len);
    int r = rv != CM_OK ? -1 : wk_grammar_complete(st) ? 1 : 0;
    wk_grammar_state_free(st);
    return r;
}

static int matchs(wk_grammar *g, const char *s) {
    return match(g, s, strlen(s));
}

/* ---- parse errors ------------------------------------------------------------------------ */

static void test_parse_errors(void **state) {
    (void)state;
    char err[256];
    static const struct {
        const char *text;
        cm_err rv;
        const char *needle;
    } cases[] = {
        {"root ::= foo", CM_ERR_INVALID, "undefined rule 'foo'"},
        {"start ::= \"a\"", CM_ERR_INVALID, "no start rule 'root'"},
        {"root ::= \"a", CM_ERR_INVALID, "unterminated literal"},
        {"root ::= \"\\q\"", CM_ERR_INVALID, "unknown escape"},
        {"root ::= [b-a]", CM_ERR_INVALID, "out of order"},
        {"root ::= [^\\x00-\\U0010FFFF]", CM_ERR_INVALID, "empty character class"},
        {"root ::= root \"a\" | \"b\"", CM_ERR_INVALID, "left recursion"},
        {"root ::= a\na ::= b? a \"x\" | \"y\"\nb ::= \"z\"", CM_ERR_INVALID, "left recursion"},
        {"root ::= (\"\")*", CM_ERR_INVALID, "left recursion"},
        {"root ::= \"a\" root", CM_ERR_INVALID, "can never finish"},
        {"root ::= \"a\"\nroot ::= \"b\"", CM_ERR_INVALID, "defined twice"},
        {"root ::= \"a\"{2000}", CM_ERR_LIMIT, "repetition count"},
        {"root ::= \"a\"{3,2}", CM_ERR_INVALID, "n < m"},
        {"root ::= (\"a\"", CM_ERR_INVALID, "unclosed"},
        {"root ::= \"a\" @", CM_ERR_INVALID, "unexpected"},
        {"root = \"a\"", CM_ERR_INVALID, "expected 'name ::='"},
        {"root ::= \"\\uD800\"", CM_ERR_INVALID, "scalar"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        err[0] = '\0';
        cm_err rv = compile_err(cases[k].text, err, sizeof(err));
        if (rv != cases[k].rv || strstr(err, cases[k].needle) == NULL)
            fail_msg("case %zu (%s): rv %d err '%s'", k, cases[k].text, rv, err);
    }
    /* Line and column in syntax errors. */
    compile_err("root ::= \"a\"\n  x ::= \"b\" )", err, sizeof(err));
    assert_non_null(strstr(err, "line 2"));
    /* Deep parentheses are bounded. */
    char deep[400];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof(deep), "root ::= ");
    for (int k = 0; k < 100; k++)
        deep[n++] = '(';
    deep[n++] = '"';
    deep[n++] = 'a';
    deep[n++] = '"';
    for (int k = 0; k < 100; k++)
        deep[n++] = ')';
    deep[n] = '\0';
    assert_int_equal(compile_err(deep, err, sizeof(err)), CM_ERR_LIMIT);
    /* Custom start rule. */
    wk_grammar *g = NULL;
    const char *t = "a ::= \"x\" b\nb ::= \"y\"";
    assert_int_equal(wk_grammar_compile(t, strlen(t), "a", &g, err, sizeof(err)), CM_OK);
    assert_int_equal(matchs(g, "xy"), 1);
    wk_grammar_unref(g);
}

/* ---- acceptance --------------------------------------------------------------------------- */

static void test_accept_basics(void **state) {
    (void)state;
    wk_grammar *g = compile_ok("root ::= \"ab\" [c-e]+ x? | \"z\"{2,3}\nx ::= \"!\" # comment\n");
    assert_int_equal(matchs(g, ""), 0);
    assert_int_equal(matchs(g, "a"), 0);
    assert_int_equal(matchs(g, "abc"), 1);
    assert_int_equal(matchs(g, "abcde!"), 1);
    assert_int_equal(matchs(g, "abcde!!"), -1);
    assert_int_equal(matchs(g, "abf"), -1);
    assert_int_equal(matchs(g, "ab"), 0);
    assert_int_equal(matchs(g, "z"), 0);
    assert_int_equal(matchs(g, "zz"), 1);
    assert_int_equal(matchs(g, "zzz"), 1);
    assert_int_equal(matchs(g, "zzzz"), -1);
    wk_grammar_unref(g);

    /* Classes are over code points, matched as UTF-8. */
    g = compile_ok("root ::= [a-zé€-₿😀] [^a]");
    assert_int_equal(matchs(g, "éb"), 1);
    assert_int_equal(matchs(g, "€\xe2\x82\xac"), 1); /* second char is € too */
    assert_int_equal(matchs(g, "😀ü"), 1);
    assert_int_equal(matchs(g, "ü"), -1);
    assert_int_equal(matchs(g, "aa"), -1);
    assert_int_equal(matchs(g, "a\xc3"), 0);              /* half a character: still a prefix */
    assert_int_equal(matchs(g, "a\xc3\x28"), -1);         /* invalid UTF-8 */
    assert_int_equal(matchs(g, "a\xed\xa0\x80"), -1);     /* a surrogate */
    assert_int_equal(matchs(g, "a\xc0\x80"), -1);         /* overlong */
    assert_int_equal(matchs(g, "a\xf4\x90\x80\x80"), -1); /* above U+10FFFF */
    assert_int_equal(matchs(g, "a\xf4\x8f\xbf\xbf"), 1);  /* U+10FFFF */
    wk_grammar_unref(g);

    /* Dot, escapes in literals, nested groups and {m,} */
    g = compile_ok("root ::= . \"\\n\\t\\x41\\u00e9\" ((\"a\" | \"b\") \"c\"){2,}");
    assert_int_equal(matchs(g, "\xf0\x9f\x98\x80\n\tA\xc3\xa9"
                               "acbc"),
                     1);
    assert_int_equal(matchs(g, "x\n\tAé"
                               "acbcac"),
                     1);
    assert_int_equal(matchs(g, "x\n\tAé"
                               "ac"),
                     0);
    assert_int_equal(matchs(g, "x\n\tAé"
                               "acc"),
                     -1);
    wk_grammar_unref(g);
}

static void test_recursion_and_bounds(void **state) {
    (void)state;
    /* Balanced parentheses: real nesting uses the stack. */
    wk_grammar *g = compile_ok("root ::= p\np ::= \"(\" p* \")\"");
    assert_int_equal(matchs(g, "(()(()))"), 1);
    assert_int_equal(matchs(g, "(()"), 0);
    assert_int_equal(matchs(g, "())"), -1);
    char *deep = malloc(2 * 1000 + 1);
    for (int k = 0; k < 1000; k++) {
        deep[k] = '(';
        deep[1000 + k] = ')';
    }
    /* Up to the stack bound nesting works; beyond it the path is cut (rejected). */
    size_t ok_depth = WK_GRAMMAR_MAX_STACK / 2;
    assert_int_equal(match(g, deep, ok_depth), 0);
    assert_int_equal(match(g, deep, 1000), -1);
    wk_grammar_unref(g);

    /* Loops (x*, right recursion) use no stack: long inputs are fine. */
    g = compile_ok("root ::= \"[\" item* \"]\"\nitem ::= \"a\" | \"bc\"\n");
    size_t n = 100000;
    char *lng = malloc(n + 2);
    lng[0] = '[';
    memset(lng + 1, 'a', n - 1);
    lng[n] = ']';
    assert_int_equal(match(g, lng, n + 1), 1);
    wk_grammar_unref(g);
    g = compile_ok("root ::= \"x\" rest\nrest ::= \"a\" rest | \"\"\n");
    lng[0] = 'x';
    assert_int_equal(match(g, lng, n), 1);
    wk_grammar_unref(g);
    free(lng);
    free(deep);

    /* Identical heads merge: (a|a|...)* stays small. */
    g = compile_ok("root ::= x*\nx ::= \"a\" | \"a\" \"a\"? | \"a\" \"a\"? \"a\"?\n");
    lng = malloc(1000);
    memset(lng, 'a', 1000);
    assert_int_equal(match(g, lng, 1000), 1);
    free(lng);
    wk_grammar_unref(g);
    /* Ambiguity is bounded: after n a's this grammar has n + 1 distinct stacks (how many b's
     * are still owed); beyond WK_GRAMMAR_MAX_HEADS the state fails with CM_ERR_LIMIT. */
    g = compile_ok("root ::= s\ns ::= \"a\" s \"b\" | \"a\" s | \"\"\n");
    wk_grammar_state *st = NULL;
    assert_int_equal(wk_grammar_state_create(g, NULL, &st), CM_OK);
    cm_err rv = CM_OK;
    for (int k = 0; k < 100 && rv == CM_OK; k++)
        rv = wk_grammar_accept_bytes(st, (const uint8_t *)"a", 1);
    assert_int_equal(rv, CM_ERR_LIMIT);
    assert_non_null(strstr(wk_grammar_state_error(st), "parallel"));
    assert_int_equal(wk_grammar_accept_bytes(st, (const uint8_t *)"a", 1), CM_ERR_STATE);
    wk_grammar_state_reset(st);
    assert_int_equal(wk_grammar_accept_bytes(st, (const uint8_t *)"a", 1), CM_OK);
    wk_grammar_state_free(st);
    wk_grammar_unref(g);
}

static void test_json_grammar_bytes(void **state) {
    (void)state;
    wk_grammar *g = compile_ok(JSON_GBNF);
    assert_int_equal(matchs(g, "{}"), 1);
    assert_int_equal(matchs(g, "{\"a\": [1, -2.5, \"x\\n\\u00e9\"], \"b\":{\"c\":null}}"), 1);
    assert_int_equal(matchs(g, "{\"a\":01}"), -1);
    assert_int_equal(matchs(g, "{\"a\":  1}"), -1); /* at most one space */
    assert_int_equal(matchs(g, "{\"a\":\"\x01\"}"), -1);
    assert_int_equal(matchs(g, "{\"a\":\"\xff\"}"), -1);
    assert_int_equal(matchs(g, "{\"a\":1"), 0);
    assert_int_equal(matchs(g, "[1]"), -1);
    /* finished: complete and nothing may follow */
    wk_grammar_state *st = NULL;
    assert_int_equal(wk_grammar_state_create(g, NULL, &st), CM_OK);
    assert_false(wk_grammar_complete(st));
    assert_int_equal(wk_grammar_accept_bytes(st, (const uint8_t *)"{}", 2), CM_OK);
    assert_true(wk_grammar_complete(st));
    assert_true(wk_grammar_finished(st));
    assert_int_equal(wk_grammar_accept_bytes(st, (const uint8_t *)" ", 1), CM_ERR_INVALID);
    assert_true(wk_grammar_finished(st)); /* unchanged by the rejected byte */
    wk_grammar_state_free(st);
    wk_grammar_unref(g);

    /* complete but not finished: a number may grow */
    g = compile_ok("root ::= [0-9]+");
    assert_int_equal(wk_grammar_state_create(g, NULL, &st), CM_OK);
    assert_int_equal(wk_grammar_accept_bytes(st, (const uint8_t *)"12", 2), CM_OK);
    assert_true(wk_grammar_complete(st));
    assert_false(wk_grammar_finished(st));
    wk_grammar_state_free(st);
    wk_grammar_unref(g);
}

/* ---- cache ------------------------------------------------------------------------------ */

typedef struct cache_arg {
    wk_grammar_cache *c;
    int ok;
} cache_arg;

static void *cache_thread(void *p) {
    cache_arg *a = p;
    for (int k = 0; k < 200; k++) {
        char text[64];
        snprintf(text, sizeof(text), "root ::= \"%d\"", k % 13);
        wk_grammar *g = NULL;
        if (wk_grammar_cache_get(a->c, text, strlen(text), NULL, &g, NULL, 0) != CM_OK)
            return NULL;
        char want[8];
        snprintf(want, sizeof(want), "%d", k % 13);
        if (matchs(g, want) == 1)
            a->ok++;
        wk_grammar_unref(g);
    }
    return NULL;
}

static void test_cache(void **state) {
    (void)state;
    wk_grammar_cache *c = NULL;
    assert_int_equal(wk_grammar_cache_create(0, &c), CM_ERR_INVALID);
    assert_int_equal(wk_grammar_cache_create(4, &c), CM_OK);
    wk_grammar *a = NULL, *b = NULL;
    const char *t = "root ::= \"a\"";
    assert_int_equal(wk_grammar_cache_get(c, t, strlen(t), NULL, &a, NULL, 0), CM_OK);
    assert_int_equal(wk_grammar_cache_get(c, t, strlen(t), "root", &b, NULL, 0), CM_OK);
    assert_ptr_equal(a, b); /* same compiled grammar */
    wk_grammar_unref(b);
    /* Another root is another key. */
    const char *t2 = "root ::= \"a\"\nx ::= \"b\"";
    assert_int_equal(wk_grammar_cache_get(c, t2, strlen(t2), "x", &b, NULL, 0), CM_OK);
    assert_int_equal(matchs(b, "b"), 1);
    wk_grammar_unref(b);
    /* Errors are reported and not cached. */
    char err[128];
    assert_int_equal(wk_grammar_cache_get(c, "root ::= y", 10, NULL, &b, err, sizeof(err)),
                     CM_ERR_INVALID);
    assert_non_null(strstr(err, "undefined"));
    wk_grammar_cache_stats s;
    wk_grammar_cache_get_stats(c, &s);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 3);
    assert_int_equal(s.entries, 2);
    /* Bounded: many different grammars keep at most 4 entries; evicted grammars still held
     * elsewhere stay valid. */
    for (int k = 0; k < 20; k++) {
        char text[32];
        snprintf(text, sizeof(text), "root ::= \"%d\"", k);
        assert_int_equal(wk_grammar_cache_get(c, text, strlen(text), NULL, &b, NULL, 0), CM_OK);
        wk_grammar_unref(b);
    }
    wk_grammar_cache_get_stats(c, &s);
    assert_int_equal(s.entries, 4);
    assert_int_equal(matchs(a, "a"), 1);
    wk_grammar_unref(a);
    /* Threads: concurrent gets of overlapping keys. */
    pthread_t th[4];
    cache_arg args[4];
    for (int k = 0; k < 4; k++) {
        args[k].c = c;
        args[k].ok = 0;
        pthread_create(&th[k], NULL, cache_thread, &args[k]);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(args[k].ok, 200);
    }
    wk_grammar_cache_destroy(c);
}

/* ---- masks against brute force ----------------------------------------------------------- */

/* check_mask: the mask must equal {t : wk_grammar_allowed(t)} (which feeds t's bytes through
 * the parse stacks, independent of the trie walks); then a random allowed token is accepted.
 * Runs `steps` steps or until finished. Returns the number of steps done. */
static int check_mask_walk(wk_grammar *g, const wk_vocab_index *v, uint64_t seed, int steps,
                           bool prefer_long) {
    uint32_t n = wk_vocab_index_n_vocab(v);
    float *logits = malloc((size_t)(n + 7) * sizeof(float));
    int32_t *allowed = malloc((size_t)n * sizeof(int32_t));
    wk_grammar_state *st = NULL;
    assert_int_equal(wk_grammar_state_create(g, v, &st), CM_OK);
    cm_rng rng;
    cm_rng_seed(&rng, seed);
    int k = 0;
    for (; k < steps && !wk_grammar_finished(st); k++) {
        for (uint32_t t = 0; t < n + 7; t++)
            logits[t] = 0.0f;
        cm_err rv = wk_grammar_mask(st, logits, n + 7);
        assert_int_equal(rv, CM_OK);
        uint32_t n_allowed = 0;
        for (uint32_t t = 0; t < n; t++) {
            bool want = wk_grammar_allowed(st, (int32_t)t);
            bool got = logits[t] == 0.0f;
            if (want != got) {
                uint32_t len;
                const uint8_t *b = wk_vocab_index_bytes(v, (int32_t)t, &len);
                fail_msg("step %d token %u '%.*s': mask %d, brute force %d", k, t, (int)len,
                         (const char *)b, got, want);
            }
            if (want)
                allowed[n_allowed++] = (int32_t)t;
        }
        for (uint32_t t = n; t < n + 7; t++)
            assert_true(isinf(logits[t]) && logits[t] < 0);
        assert_true(n_allowed > 0);
        int32_t pick = allowed[cm_rng_next(&rng) % n_allowed];
        if (prefer_long) {
            /* Longer tokens exercise the trie walks more: pick the longest of a few. */
            for (int j = 0; j < 3; j++) {
                int32_t c = allowed[cm_rng_next(&rng) % n_allowed];
                uint32_t lc, lp;
                (void)wk_vocab_index_bytes(v, c, &lc);
                (void)wk_vocab_index_bytes(v, pick, &lp);
                if (lc > lp)
                    pick = c;
            }
        }
        if (wk_vocab_index_is_eog(v, pick))
            break;
        assert_int_equal(wk_grammar_accept(st, pick), CM_OK);
    }
    wk_grammar_state_free(st);
    free(logits);
    free(allowed);
    return k;
}

/* A small SentencePiece-style vocabulary: pieces, byte tokens, control tokens. */
static wk_tokenizer *small_tokenizer(void) {
    static const char *pieces[] = {
        "<unk>", "<s>",    "</s>",   "{",      "}",      "\"",       "\":", "\",",    "\"}",
        ",",     ":",      "[",      "]",      "[]",     "{}",       "{\"", "\u2581", "\u2581\"",
        "a",     "b",      "ab",     "abc",    "key",    "\"key\":", "1",   "12",     "0",
        "-",     ".",      "5.",     "true",   "false",  "null",     "nu",  "ll",     "\\",
        "\\n",   "\\u",    "00",     "e9",     "é",      "\u2581a",  "x\"", "\"]",    "]}",
        "}}",    "<0x0A>", "<0xC3>", "<0xA9>", "<0xFF>", "<|user|>",
    };
    static wk_tokenizer_spec spec;
    static uint32_t lens[64];
    static int32_t types[64];
    uint32_t n = sizeof(pieces) / sizeof(pieces[0]);
    for (uint32_t k = 0; k < n; k++) {
        lens[k] = (uint32_t)strlen(pieces[k]);
        types[k] = WK_TOKTYPE_NORMAL;
        if (pieces[k][0] == '<' && pieces[k][1] == '0')
            types[k] = WK_TOKTYPE_BYTE;
    }
    types[0] = WK_TOKTYPE_UNKNOWN;
    types[1] = WK_TOKTYPE_CONTROL;
    types[2] = WK_TOKTYPE_CONTROL;
    types[n - 1] = WK_TOKTYPE_USER_DEFINED;
    memset(&spec, 0, sizeof(spec));
    spec.model = WK_TOK_MODEL_SPM;
    spec.n_vocab = n;
    spec.tokens = pieces;
    spec.token_lens = lens;
    spec.token_types = types;
    spec.bos = 1;
    spec.eos = 2;
    spec.eot = -1;
    spec.eom = -1;
    spec.unk = 0;
    wk_tokenizer *t = NULL;
    char err[128];
    assert_int_equal(wk_tokenizer_from_spec(&spec, &t, err, sizeof(err)), CM_OK);
    return t;
}

static void test_mask_small_vocab(void **state) {
    (void)state;
    wk_tokenizer *tok = small_tokenizer();
    wk_vocab_index *v = NULL;
    char err[128];
    assert_int_equal(wk_vocab_index_create(tok, &v, err, sizeof(err)), CM_OK);
    /* Bytes as the grammar sees them. */
    uint32_t len;
    const uint8_t *b = wk_vocab_index_bytes(v, 17, &len); /* "▁\"" */
    assert_int_equal(len, 2);
    assert_memory_equal(b, " \"", 2);
    b = wk_vocab_index_bytes(v, 46, &len); /* <0x0A> */
    assert_int_equal(len, 1);
    assert_int_equal(b[0], '\n');
    (void)wk_vocab_index_bytes(v, 50, &len); /* user-defined: never allowed */
    assert_int_equal(len, 0);
    assert_true(wk_vocab_index_is_eog(v, 2));

    wk_grammar *g = compile_ok(JSON_GBNF);
    for (uint64_t seed = 1; seed <= 40; seed++)
        check_mask_walk(g, v, seed, 60, seed % 2 == 0);
    /* EOG only at completion; control tokens never. */
    wk_grammar_state *st = NULL;
    assert_int_equal(wk_grammar_state_create(g, v, &st), CM_OK);
    float logits[64];
    for (int k = 0; k < 64; k++)
        logits[k] = 1.0f;
    assert_int_equal(wk_grammar_mask(st, logits, 51), CM_OK);
    assert_true(isinf(logits[2]) && isinf(logits[1]) && isinf(logits[50]));
    assert_false(isinf(logits[3]));  /* { */
    assert_false(isinf(logits[15])); /* {" */
    assert_true(isinf(logits[16]));  /* ▁ (a space first is not allowed) */
    assert_int_equal(wk_grammar_accept(st, 2), CM_ERR_INVALID);
    assert_int_equal(wk_grammar_accept(st, 50), CM_ERR_INVALID);
    assert_int_equal(wk_grammar_accept(st, 14), CM_OK); /* {} */
    for (int k = 0; k < 64; k++)
        logits[k] = 1.0f;
    assert_int_equal(wk_grammar_mask(st, logits, 51), CM_OK);
    for (int k = 0; k < 51; k++)
        assert_true(k == 2 ? logits[k] == 1.0f : isinf(logits[k]));
    assert_int_equal(wk_grammar_accept(st, 2), CM_OK);
    assert_true(wk_grammar_finished(st));
    wk_grammar_state_free(st);
    wk_grammar_unref(g);

    /* Deep nesting near the stack bound: tables must not allow what the bound forbids. */
    g = compile_ok("root ::= p\np ::= \"[\" p? \"]\"");
    for (uint64_t seed = 1; seed <= 4; seed++)
        check_mask_walk(g, v, seed, 300, true);
    wk_grammar_unref(g);
    wk_vocab_index_free(v);
    wk_tokenizer_free(tok);
}

/* ---- the bundled model's vocabulary ---------------------------------------------------- */

static void test_mask_real_vocab(void **state) {
    (void)state;
    const char *path = getenv("SLUICE_TEST_MODEL");
    if (path == NULL || path[0] == '\0')
        skip();
    wk_gguf *gg = NULL;
    wk_tokenizer *tok = NULL;
    char err[256];
    assert_int_equal(wk_gguf_open(path, &gg, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_tokenizer_load(gg, &tok, err, sizeof(err)), CM_OK);
    wk_vocab_index *v = NULL;
    assert_int_equal(wk_vocab_index_create(tok, &v, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_vocab_index_n_vocab(v), wk_tokenizer_n_vocab(tok));
    /* Byte-level BPE: "Ġ" pieces are spaces, "Ċ" newlines. */
    int32_t ids[8];
    size_t n_ids = 0;
    assert_int_equal(wk_tokenizer_encode(tok, " {\"", 3, false, false, ids, 8, &n_ids), CM_OK);
    uint32_t len;
    const uint8_t *b = wk_vocab_index_bytes(v, ids[0], &len);
    assert_true(len >= 1 && b[0] == ' ');

    wk_grammar *g = compile_ok(JSON_GBNF);
    for (uint64_t seed = 1; seed <= 6; seed++)
        check_mask_walk(g, v, seed, 25, seed % 3 != 2);
    wk_grammar_unref(g);
#ifdef SLUICE_HAVE_JANSSON
    /* A schema grammar: integer ranges, enums, patterns, nested and optional members, nullable,
     * recursion: deep contexts and many exits. */
    const char *schema =
        "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":"
        "\"integer\",\"minimum\":-40,\"maximum\":1234},\"tag\":{\"enum\":[\"red\","
        "\"green\",null,3]},\"code\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}[0-9]+$\"},"
        "\"note\":{\"type\":[\"string\",\"null\"]},\"kids\":{\"type\":\"array\","
        "\"items\":{\"$ref\":\"#/$defs/n\"},\"maxItems\":3}},\"required\":[\"id\","
        "\"kids\"]}},\"$ref\":\"#/$defs/n\"}";
    char *rules = NULL;
    assert_int_equal(
        wk_json_schema_to_grammar(schema, strlen(schema), "", &rules, err, sizeof(err)), CM_OK);
    g = compile_ok(rules);
    free(rules);
    for (uint64_t seed = 1; seed <= 4; seed++)
        check_mask_walk(g, v, seed, 30, seed % 2 == 1);
    wk_grammar_unref(g);
#endif
    /* A grammar with non-ASCII classes and alternatives sharing prefixes. */
    g = compile_ok("root ::= (\"Hello\" | \"Help\" | \"hé\" [à-ÿ]+ | [0-9]{2,4} \" \")+ \".\"");
    for (uint64_t seed = 1; seed <= 3; seed++)
        check_mask_walk(g, v, seed, 20, true);
    wk_grammar_unref(g);
    wk_vocab_index_free(v);
    wk_tokenizer_free(tok);
    wk_gguf_close(gg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_accept_basics),
        cmocka_unit_test(test_recursion_and_bounds),
        cmocka_unit_test(test_json_grammar_bytes),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_mask_small_vocab),
        cmocka_unit_test(test_mask_real_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
