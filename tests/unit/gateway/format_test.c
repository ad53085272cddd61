/* gw_error / gw_format: OpenAI JSON shapes, escaping, invalid UTF-8, SSE framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "gw_error.h"
#include "gw_format.h"

static json_t *parse_or_fail(const char *s, size_t len) {
    json_error_t e;
    json_t *j = json_loadb(s, len, 0, &e);
    if (j == NULL)
        fail_msg("not JSON (%s): %.*s", e.text, (int)len, s);
    return j;
}

static void test_error_json(void **state) {
    gw_error e;
    char out[1024];
    json_t *j, *err;
    (void)state;
    assert_int_equal(gw_error_set(&e, 400, GW_ERRT_INVALID, "invalid_value", "messages[0]",
                                  "bad \"quote\" and \\ and \n"),
                     CM_ERR_INVALID);
    j = parse_or_fail(out, gw_error_json(&e, out, sizeof out));
    err = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(err, "message")),
                        "bad \"quote\" and \\ and \n");
    assert_string_equal(json_string_value(json_object_get(err, "param")), "messages[0]");
    assert_string_equal(json_string_value(json_object_get(err, "type")), GW_ERRT_INVALID);
    json_decref(j);
    gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, NULL, NULL, "x");
    j = parse_or_fail(out, gw_error_json(&e, out, sizeof out));
    assert_true(json_is_null(json_object_get(json_object_get(j, "error"), "param")));
    assert_true(json_is_null(json_object_get(json_object_get(j, "error"), "code")));
    json_decref(j);
    /* Truncation still yields a terminated string within the buffer. */
    assert_true(gw_error_json(&e, out, 10) < 10);
    assert_int_equal(out[strlen(out)], '\0');
}

static void test_worker_codes(void **state) {
    gw_error e;
    (void)state;
    gw_error_from_worker(&e, CM_ERR_OVERLOADED, "full");
    assert_int_equal(e.status, 503);
    assert_true(e.retry_after_s > 0);
    gw_error_from_worker(&e, CM_ERR_TIMEOUT, "late");
    assert_int_equal(e.status, 504);
    gw_error_from_worker(&e, CM_ERR_CONTEXT_LENGTH, "long");
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, "context_length_exceeded");
    gw_error_from_worker(&e, CM_ERR_NOT_FOUND, NULL);
    assert_int_equal(e.status, 404);
    assert_true(strlen(e.message) > 0);
    gw_error_from_worker(&e, CM_ERR_BACKEND, "gpu");
    assert_int_equal(e.status, 500);
}

static void test_escape_invalid_utf8(void **state) {
    char out[64];
    size_t pos = 0;
    const char in[] = {'a', (char)0xC3, (char)0xA9, (char)0xFF, '\x01', 'b', (char)0xE2};
    (void)state;
    assert_int_equal(gw_json_escape(in, sizeof in, out, sizeof out, &pos), 0);
    assert_string_equal(out, "a\xC3\xA9\\ufffd\\u0001b\\ufffd");
    pos = 0;
    assert_int_equal(gw_json_escape("abcdef", 6, out, 4, &pos), -1);
    assert_true(pos < 4);
}

static void test_response_and_chunks(void **state) {
    cm_buf b;
    json_t *j;
    gw_choice_out ch[2] = {{"he\"llo", 6, "stop", NULL, NULL, 0},
                           {"x", 1, "length", NULL, NULL, 0}};
    gw_usage_out u = {10, 4, 3};
    (void)state;
    cm_buf_init(&b, 1 << 20);
    assert_int_equal(gw_format_response(&b, GW_API_CHAT, "chatcmpl-1", 123, "m", ch, 2, &u), CM_OK);
    j = parse_or_fail(b.data, b.len);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 123);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"),
            "content")),
        "he\"llo");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")), 14);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(j, "usage"), "prompt_tokens_details"),
                         "cached_tokens")),
                     3);
    json_decref(j);

    cm_buf_reset(&b);
    assert_int_equal(gw_format_chunk(&b, GW_API_CHAT, "id", 1, "m", 1, 1, "hi", 2, NULL, NULL, 1),
                     CM_OK);
    assert_true(b.len > 8 && memcmp(b.data, "data: ", 6) == 0);
    assert_true(memcmp(b.data + b.len - 2, "\n\n", 2) == 0);
    j = parse_or_fail(b.data + 6, b.len - 8);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta"), "role")),
        "assistant");
    assert_true(json_is_null(json_object_get(j, "usage")));
    json_decref(j);

    cm_buf_reset(&b);
    gw_format_usage_chunk(&b, GW_API_COMPLETIONS, "id", 1, "m", &u);
    j = parse_or_fail(b.data + 6, b.len - 8);
    assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
    json_decref(j);
    cm_buf_fini(&b);
}

static void test_logprobs(void **state) {
    Sluice__Tokens t = SLUICE__TOKENS__INIT;
    Sluice__TokenLogprob lp = SLUICE__TOKEN_LOGPROB__INIT;
    Sluice__TopLogprob top = SLUICE__TOP_LOGPROB__INIT, *tops[1] = {&top};
    Sluice__TokenLogprob *lps[1] = {&lp};
    gw_logprobs_acc acc;
    cm_buf b;
    json_t *j, *item;
    (void)state;
    lp.token_id = 5;
    lp.logprob = -0.25f;
    lp.has_text = 1;
    lp.text.data = (uint8_t *)"Hi";
    lp.text.len = 2;
    lp.n_top = 1;
    lp.top = tops;
    top.logprob = -1.0f / 0.0f; /* -inf must still be valid JSON */
    t.n_logprobs = 1;
    t.logprobs = lps;
    gw_logprobs_init(&acc, 1 << 20);
    cm_buf_init(&b, 1 << 20);
    assert_int_equal(gw_logprobs_add(&acc, GW_API_CHAT, &t), CM_OK);
    assert_int_equal(gw_logprobs_add(&acc, GW_API_CHAT, &t), CM_OK);
    assert_int_equal(gw_logprobs_render(&acc, GW_API_CHAT, &b), CM_OK);
    j = parse_or_fail(b.data, b.len);
    assert_int_equal(json_array_size(json_object_get(j, "content")), 2);
    item = json_array_get(json_object_get(j, "content"), 1);
    assert_string_equal(json_string_value(json_object_get(item, "token")), "Hi");
    assert_float_equal(json_number_value(json_object_get(item, "logprob")), -0.25, 1e-6);
    assert_int_equal(json_array_size(json_object_get(item, "bytes")), 2);
    assert_float_equal(json_number_value(json_object_get(
                           json_array_get(json_object_get(item, "top_logprobs"), 0), "logprob")),
                       -9999.0, 1e-6);
    json_decref(j);
    gw_logprobs_fini(&acc);

    gw_logprobs_init(&acc, 1 << 20);
    cm_buf_reset(&b);
    gw_logprobs_add(&acc, GW_API_COMPLETIONS, &t);
    gw_logprobs_add(&acc, GW_API_COMPLETIONS, &t);
    gw_logprobs_render(&acc, GW_API_COMPLETIONS, &b);
    j = parse_or_fail(b.data, b.len);
    assert_int_equal(json_array_size(json_object_get(j, "tokens")), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "text_offset"), 1)), 2);
    json_decref(j);
    gw_logprobs_fini(&acc);
    cm_buf_fini(&b);
}

static void test_duration(void **state) {
    char b[32];
    (void)state;
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {{0, "0s"},
                 {-5, "0s"},
                 {17, "17ms"},
                 {999, "999ms"},
                 {1000, "1s"},
                 {1500, "1.5s"},
                 {1250, "1.25s"},
                 {59999, "59.999s"},
                 {60000, "1m0s"},
                 {360000, "6m0s"},
                 {61500, "1m1.5s"},
                 {3600000, "1h0m0s"},
                 {3723004, "1h2m3.004s"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = gw_format_duration(cases[i].ms, b, sizeof b);
        assert_string_equal(b, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
    /* Truncates like snprintf. */
    assert_int_equal(gw_format_duration(360000, b, 3), 2);
    assert_string_equal(b, "6m");
}

static json_t *first_choice(json_t *j) {
    return json_array_get(json_object_get(j, "choices"), 0);
}

static void test_tool_calls(void **state) {
    cm_buf b;
    json_t *j, *msg, *tc, *d;
    gw_tool_call_out calls[2] = {{"call_a", "get_weather", "{\"city\": \"Paris\"}", 17},
                                 {"call_b", "f", "{\"x\":", 5}};
    gw_choice_out ch = {"", 0, "tool_calls", NULL, calls, 2};
    gw_usage_out u = {10, 4, 0};
    Sluice__ToolCallDelta first = SLUICE__TOOL_CALL_DELTA__INIT,
                          more = SLUICE__TOOL_CALL_DELTA__INIT;
    (void)state;
    cm_buf_init(&b, 1 << 20);
    assert_int_equal(gw_format_response(&b, GW_API_CHAT, "c", 1, "m", &ch, 1, &u), CM_OK);
    j = parse_or_fail(b.data, b.len);
    msg = json_object_get(first_choice(j), "message");
    assert_true(json_is_null(json_object_get(msg, "content")));
    tc = json_object_get(msg, "tool_calls");
    assert_int_equal(json_array_size(tc), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tc, 0), "id")), "call_a");
    assert_string_equal(json_string_value(json_object_get(json_array_get(tc, 0), "type")),
                        "function");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(tc, 0), "function"), "arguments")),
                        "{\"city\": \"Paris\"}");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(tc, 1), "function"), "name")),
                        "f");
    assert_string_equal(json_string_value(json_object_get(first_choice(j), "finish_reason")),
                        "tool_calls");
    json_decref(j);

    /* Streaming: the first delta names the call, the next ones carry argument fragments. */
    first.index = 1;
    first.id = "call_b";
    first.name = "f";
    first.arguments = "";
    cm_buf_reset(&b);
    assert_int_equal(gw_format_tool_chunk(&b, "c", 1, "m", 0, 1, &first, 0), CM_OK);
    j = parse_or_fail(b.data + 6, b.len - 8);
    d = json_object_get(first_choice(j), "delta");
    assert_string_equal(json_string_value(json_object_get(d, "role")), "assistant");
    assert_true(json_is_null(json_object_get(d, "content")));
    tc = json_array_get(json_object_get(d, "tool_calls"), 0);
    assert_int_equal(json_integer_value(json_object_get(tc, "index")), 1);
    assert_string_equal(json_string_value(json_object_get(tc, "id")), "call_b");
    assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");
    assert_string_equal(json_string_value(json_object_get(json_object_get(tc, "function"), "name")),
                        "f");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")), "");
    assert_true(json_is_null(json_object_get(first_choice(j), "finish_reason")));
    json_decref(j);
    more.index = 1;
    more.arguments = "{\"q\": \"a\\\"";
    cm_buf_reset(&b);
    assert_int_equal(gw_format_tool_chunk(&b, "c", 1, "m", 0, 0, &more, 1), CM_OK);
    j = parse_or_fail(b.data + 6, b.len - 8);
    d = json_object_get(first_choice(j), "delta");
    assert_null(json_object_get(d, "role"));
    tc = json_array_get(json_object_get(d, "tool_calls"), 0);
    assert_null(json_object_get(tc, "id"));
    assert_null(json_object_get(json_object_get(tc, "function"), "name"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
        "{\"q\": \"a\\\"");
    assert_true(json_is_null(json_object_get(j, "usage")));
    json_decref(j);
    cm_buf_fini(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_worker_codes),
        cmocka_unit_test(test_escape_invalid_utf8),
        cmocka_unit_test(test_response_and_chunks),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_tool_calls),
        cmocka_unit_test(test_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
