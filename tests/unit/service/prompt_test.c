/*
 * wk_prompt on the bundled model's tokenizer and chat template: the three prompt forms,
 * special tokens parsed only for the template, vocabulary and UTF-8 checks, and the
 * context-length message.
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
#include "prompt.h"

static svc_model g_m;
static wk_prompt_ctx g_ctx;

static int setup(void **state) {
    (void)state;
    if (svc_model_open(&g_m, NULL) != 0)
        return -1;
    g_ctx = (wk_prompt_ctx){
        .tok = g_m.tok, .tmpl = &g_m.tmpl, .max_context = 64, .max_prompt_bytes = 4096};
    return 0;
}

static int teardown(void **state) {
    (void)state;
    svc_model_close(&g_m);
    return 0;
}

static void test_raw_prompt(void **state) {
    (void)state;
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    s.prompt = (char *)"Hello world";
    int32_t *ids;
    uint32_t n;
    char err[512];
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_OK);
    int32_t want[16];
    size_t wn;
    assert_int_equal(wk_tokenizer_encode(g_m.tok, "Hello world", 11, false, false, want, 16, &wn),
                     CM_OK);
    assert_int_equal(n, wn);
    assert_memory_equal(ids, want, wn * sizeof(int32_t));
    free(ids);
    /* Control-token text in a raw prompt stays text: it is not <|im_start|> (id 1). */
    s.prompt = (char *)"<|im_start|>";
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_OK);
    assert_true(n > 1);
    for (uint32_t i = 0; i < n; i++)
        assert_int_not_equal(ids[i], 1);
    free(ids);
}

static void test_chat_uses_special_tokens(void **state) {
    (void)state;
    Sluice__ChatMessage m = SLUICE__CHAT_MESSAGE__INIT;
    m.role = (char *)"user";
    m.content = (char *)"Hi";
    Sluice__ChatMessage *mp = &m;
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    s.n_messages = 1;
    s.messages = &mp;
    wk_prompt_ctx big = g_ctx;
    big.max_context = 8192;
    int32_t *ids;
    uint32_t n;
    char err[512];
    assert_int_equal(wk_prompt_build(&big, &s, &ids, &n, err, sizeof err), CM_OK);
    /* ChatML: starts with <|im_start|> (id 1) and contains several of them. */
    assert_int_equal(ids[0], 1);
    int starts = 0;
    for (uint32_t i = 0; i < n; i++)
        starts += ids[i] == 1;
    assert_true(starts >= 2);
    free(ids);
    m.role = (char *)"wizard";
    assert_int_equal(wk_prompt_build(&big, &s, &ids, &n, err, sizeof err), CM_ERR_INVALID);
    assert_null(ids);
    wk_prompt_ctx none = big;
    none.tmpl = NULL;
    m.role = (char *)"user";
    assert_int_equal(wk_prompt_build(&none, &s, &ids, &n, err, sizeof err), CM_ERR_UNSUPPORTED);
}

static void test_ids_and_utf8(void **state) {
    (void)state;
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    int32_t ok_ids[] = {1, 2, 3};
    s.n_prompt_token_ids = 3;
    s.prompt_token_ids = ok_ids;
    int32_t *ids;
    uint32_t n;
    char err[512];
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(ids, ok_ids, sizeof ok_ids);
    free(ids);
    int32_t bad[] = {1, 49152};
    s.n_prompt_token_ids = 2;
    s.prompt_token_ids = bad;
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_ERR_INVALID);
    assert_non_null(strstr(err, "49152"));
    int32_t neg[] = {-1};
    s.n_prompt_token_ids = 1;
    s.prompt_token_ids = neg;
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_ERR_INVALID);
    s.n_prompt_token_ids = 0;
    s.prompt = (char *)"caf\xc3";
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_ERR_UTF8);
    s.prompt = (char *)"";
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_ERR_INVALID);
}

static void test_context_length(void **state) {
    (void)state;
    int32_t many[60];
    for (int i = 0; i < 60; i++)
        many[i] = 100 + i;
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    s.n_prompt_token_ids = 60;
    s.prompt_token_ids = many;
    s.has_max_tokens = true;
    s.max_tokens = 10;
    int32_t *ids;
    uint32_t n;
    char err[512];
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_ERR_CONTEXT_LENGTH);
    assert_string_equal(err, "This model's maximum context length is 64 tokens. However, you "
                             "requested 70 tokens (60 in the messages, 10 in the completion). "
                             "Please reduce the length of the messages or completion.");
    s.max_tokens = 4;
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_OK);
    free(ids);
    /* Without max_tokens the prompt must leave room for one token. */
    s.has_max_tokens = false;
    s.n_prompt_token_ids = 64;
    int32_t full[64] = {0};
    s.prompt_token_ids = full;
    assert_int_equal(wk_prompt_build(&g_ctx, &s, &ids, &n, err, sizeof err), CM_ERR_CONTEXT_LENGTH);
    /* The byte bound on raw text. */
    wk_prompt_ctx small = g_ctx;
    small.max_prompt_bytes = 4;
    s.n_prompt_token_ids = 0;
    s.prompt = (char *)"hello";
    assert_int_equal(wk_prompt_build(&small, &s, &ids, &n, err, sizeof err), CM_ERR_LIMIT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_prompt),
        cmocka_unit_test(test_chat_uses_special_tokens),
        cmocka_unit_test(test_ids_and_utf8),
        cmocka_unit_test(test_context_length),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
