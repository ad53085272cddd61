/*
 * wk_tokenize on the bundled model: the wire check (forms, sizes, via wk_wire_decode), token
 * ids equal to wk_prompt_build's for the same prompt and messages, add_generation_prompt,
 * token_strs, detokenizing (round trip, special tokens rendered, vocabulary range) and the
 * context bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_model.h"
#include "tokenize.h"

static svc_model g_m;
static wk_prompt_ctx g_ctx;

static int setup(void **state) {
    (void)state;
    if (svc_model_open(&g_m, NULL) != 0)
        return -1;
    g_ctx = (wk_prompt_ctx){
        .tok = g_m.tok, .tmpl = &g_m.tmpl, .max_context = 256, .max_prompt_bytes = 8192};
    return 0;
}

static int teardown(void **state) {
    (void)state;
    svc_model_close(&g_m);
    return 0;
}

/* Runs t and unpacks the answer (NULL on failure, rv in *rv_out). */
static Sluice__Envelope *run(const Sluice__Tokenize *t, cm_err *rv_out, char *err, size_t errlen) {
    wk_wire_buf b;
    *rv_out = wk_tokenize_run(&g_ctx, t, &b, err, errlen);
    if (*rv_out != CM_OK) {
        assert_null(b.data);
        return NULL;
    }
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, b.len, b.data);
    wk_wire_buf_free(&b);
    assert_non_null(env);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_EVENT);
    assert_int_equal(env->event->request_id, t->request_id);
    assert_int_equal(env->event->kind_case, SLUICE__EVENT__KIND_TOKENIZED);
    assert_int_equal(env->event->tokenized->max_model_len, g_ctx.max_context);
    return env;
}

static void test_prompt_matches_submit(void **state) {
    (void)state;
    Sluice__Tokenize t = SLUICE__TOKENIZE__INIT;
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    char err[512];
    cm_err rv;
    int32_t *ids;
    uint32_t n;
    t.request_id = 7;
    t.prompt = s.prompt = (char *)"Hello world, and <|im_start|> stays text.";
    t.has_return_token_strs = t.return_token_strs = 1;
    Sluice__Envelope *env = run(&t, &rv, err, sizeof err);
    assert_int_equal(rv, CM_OK);
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_OK);
    const Sluice__Tokenized *tk = env->event->tokenized;
    assert_int_equal(tk->n_tokens, n);
    assert_memory_equal(tk->tokens, ids, n * sizeof *ids);
    /* token_strs: each id's bytes; together the text. */
    assert_int_equal(tk->n_token_strs, n);
    char joined[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < tk->n_token_strs; i++) {
        memcpy(joined + len, tk->token_strs[i].data, tk->token_strs[i].len);
        len += tk->token_strs[i].len;
    }
    joined[len] = '\0';
    assert_string_equal(joined, t.prompt);
    free(ids);
    sluice__envelope__free_unpacked(env, NULL);
}

static void test_messages(void **state) {
    (void)state;
    Sluice__ChatMessage m = SLUICE__CHAT_MESSAGE__INIT, *mp = &m;
    Sluice__Tokenize t = SLUICE__TOKENIZE__INIT;
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    char err[512];
    cm_err rv;
    int32_t *ids;
    uint32_t n;
    m.role = (char *)"user";
    m.content = (char *)"What is the capital of France?";
    t.n_messages = s.n_messages = 1;
    t.messages = s.messages = &mp;
    Sluice__Envelope *gen = run(&t, &rv, err, sizeof err);
    assert_int_equal(rv, CM_OK);
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_OK);
    assert_int_equal(gen->event->tokenized->n_tokens, n);
    assert_memory_equal(gen->event->tokenized->tokens, ids, n * sizeof *ids);
    assert_int_equal(gen->event->tokenized->n_token_strs, 0);
    /* Without the generation prompt: a strict prefix. */
    t.has_add_generation_prompt = 1;
    t.add_generation_prompt = 0;
    Sluice__Envelope *nogen = run(&t, &rv, err, sizeof err);
    assert_int_equal(rv, CM_OK);
    size_t k = nogen->event->tokenized->n_tokens;
    assert_true(k < n);
    assert_memory_equal(nogen->event->tokenized->tokens, ids, k * sizeof *ids);
    free(ids);
    sluice__envelope__free_unpacked(gen, NULL);
    sluice__envelope__free_unpacked(nogen, NULL);
}

static void test_detokenize(void **state) {
    (void)state;
    const char *text = "Caf\xc3\xa9 au lait \xf0\x9f\x9a\x80!";
    int32_t ids[64];
    size_t n;
    char err[512];
    cm_err rv;
    assert_int_equal(wk_tokenizer_encode(g_m.tok, text, strlen(text), false, false, ids, 64, &n),
                     CM_OK);
    Sluice__Tokenize t = SLUICE__TOKENIZE__INIT;
    t.request_id = 9;
    t.n_token_ids = n;
    t.token_ids = ids;
    Sluice__Envelope *env = run(&t, &rv, err, sizeof err);
    assert_int_equal(rv, CM_OK);
    assert_string_equal(env->event->tokenized->text, text);
    sluice__envelope__free_unpacked(env, NULL);
    /* Special tokens render as their text. */
    int32_t im_start = wk_tokenizer_find(g_m.tok, "<|im_start|>", 12);
    assert_true(im_start >= 0);
    t.n_token_ids = 1;
    t.token_ids = &im_start;
    env = run(&t, &rv, err, sizeof err);
    assert_string_equal(env->event->tokenized->text, "<|im_start|>");
    sluice__envelope__free_unpacked(env, NULL);
    /* Out of the vocabulary: refused with the index and the range. */
    int32_t bad[] = {1, (int32_t)wk_tokenizer_n_vocab(g_m.tok)};
    t.n_token_ids = 2;
    t.token_ids = bad;
    assert_null(run(&t, &rv, err, sizeof err));
    assert_int_equal(rv, CM_ERR_INVALID);
    assert_non_null(strstr(err, "tokens[1]"));
    assert_non_null(strstr(err, "vocabulary"));
}

static void test_bounds_and_check(void **state) {
    (void)state;
    char err[512];
    cm_err rv;
    Sluice__Tokenize t = SLUICE__TOKENIZE__INIT;
    wk_wire_limits lim;
    wk_wire_limits_init(&lim);
    /* No form, two forms, tools without messages: refused by the wire check. */
    assert_int_equal(wk_tokenize_check(&t, &lim, err, sizeof err), CM_ERR_INVALID);
    int32_t one = 1;
    t.prompt = (char *)"x";
    t.n_token_ids = 1;
    t.token_ids = &one;
    assert_int_equal(wk_tokenize_check(&t, &lim, err, sizeof err), CM_ERR_INVALID);
    t.n_token_ids = 0;
    Sluice__Tool tool = SLUICE__TOOL__INIT, *tp = &tool;
    tool.name = (char *)"f";
    t.n_tools = 1;
    t.tools = &tp;
    assert_int_equal(wk_tokenize_check(&t, &lim, err, sizeof err), CM_ERR_INVALID);
    t.n_tools = 0;
    assert_int_equal(wk_tokenize_check(&t, &lim, err, sizeof err), CM_OK);
    /* Through wk_wire_decode: the request id is readable and the kind is TOKENIZE. */
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_TOKENIZE;
    env.tokenize = &t;
    t.request_id = 42;
    uint8_t buf[256];
    size_t len = sluice__envelope__pack(&env, buf);
    wk_wire_in in;
    assert_int_equal(wk_wire_decode(buf, len, &lim, &in, err, sizeof err), CM_OK);
    assert_int_equal(in.kind, WK_WIRE_TOKENIZE);
    assert_int_equal(in.request_id, 42);
    wk_wire_in_free(&in);
    /* A prompt longer than the context: the chat request's message. */
    char *big = malloc(4001);
    memset(big, 'a', 4000);
    for (int i = 0; i < 4000; i += 2)
        big[i] = ' ';
    big[4000] = '\0';
    t.prompt = big;
    assert_null(run(&t, &rv, err, sizeof err));
    assert_int_equal(rv, CM_ERR_CONTEXT_LENGTH);
    assert_non_null(strstr(err, "maximum context length is 256"));
    free(big);
}

/* The fuzz corpus's Tokenize seeds (tests/fuzz/corpus/envelope) decode as Tokenize. */
static void test_corpus_seeds(void **state) {
    (void)state;
    const char *src = getenv("SLUICE_SOURCE_DIR");
    const char *names[] = {"tokenize_prompt", "tokenize_messages", "detokenize_ids"};
    if (src == NULL)
        skip();
    for (size_t i = 0; i < 3; i++) {
        char path[1024], err[256];
        uint8_t buf[4096];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/envelope/%s", src, names[i]);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        wk_wire_limits lim;
        wk_wire_limits_init(&lim);
        wk_wire_in in;
        assert_int_equal(wk_wire_decode(buf, n, &lim, &in, err, sizeof err), CM_OK);
        assert_int_equal(in.kind, WK_WIRE_TOKENIZE);
        assert_int_equal(in.request_id, 5 + i);
        wk_wire_in_free(&in);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_matches_submit),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_detokenize),
        cmocka_unit_test(test_bounds_and_check),
        cmocka_unit_test(test_corpus_seeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
