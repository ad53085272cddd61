/* lt_openai: request bodies as servers expect them; chunks, responses and errors parsed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "lt_openai.h"

static lt_args base_args(void) {
    lt_args a;
    memset(&a, 0, sizeof(a));
    a.model = "smollm2-135m-instruct";
    a.api = LT_API_CHAT;
    a.stream = 1;
    a.temperature = -1;
    return a;
}

static void test_chat_body(void **state) {
    (void)state;
    lt_args a = base_args();
    lt_prompt p;
    memset(&p, 0, sizeof(p));
    p.text = "say \"hi\"";
    p.max_tokens = 32;
    char *body = NULL;
    assert_int_equal(lt_openai_request_body(&a, &p, &body), CM_OK);
    json_error_t e;
    json_t *o = json_loads(body, 0, &e);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "model")), "smollm2-135m-instruct");
    json_t *m = json_array_get(json_object_get(o, "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "role")), "user");
    assert_string_equal(json_string_value(json_object_get(m, "content")), "say \"hi\"");
    assert_int_equal(json_integer_value(json_object_get(o, "max_tokens")), 32);
    assert_true(json_is_true(json_object_get(o, "stream")));
    assert_true(
        json_is_true(json_object_get(json_object_get(o, "stream_options"), "include_usage")));
    assert_null(json_object_get(o, "temperature"));
    assert_null(json_object_get(o, "ignore_eos"));
    json_decref(o);
    free(body);

    a.api = LT_API_COMPLETIONS;
    a.stream = 0;
    a.temperature = 0;
    a.ignore_eos = 1;
    assert_int_equal(lt_openai_request_body(&a, &p, &body), CM_OK);
    o = json_loads(body, 0, &e);
    assert_string_equal(json_string_value(json_object_get(o, "prompt")), "say \"hi\"");
    assert_null(json_object_get(o, "messages"));
    assert_null(json_object_get(o, "stream"));
    assert_float_equal(json_real_value(json_object_get(o, "temperature")), 0, 1e-12);
    assert_true(json_is_true(json_object_get(o, "ignore_eos")));
    json_decref(o);
    free(body);

    /* invalid UTF-8 in a prompt is refused, not sent */
    p.text = "bad \xff byte";
    assert_int_equal(lt_openai_request_body(&a, &p, &body), CM_ERR_UTF8);
    assert_null(body);
}

static void test_file_messages_pass_through(void **state) {
    (void)state;
    lt_args a = base_args();
    lt_prompt p;
    memset(&p, 0, sizeof(p));
    json_error_t e;
    p.messages = json_loads("[{\"role\":\"system\",\"content\":\"s\"},"
                            "{\"role\":\"user\",\"content\":\"u\"}]",
                            0, &e);
    p.max_tokens = 3;
    char *body = NULL;
    assert_int_equal(lt_openai_request_body(&a, &p, &body), CM_OK);
    json_t *o = json_loads(body, 0, &e);
    assert_int_equal(json_array_size(json_object_get(o, "messages")), 2);
    json_decref(o);
    json_decref(p.messages);
    free(body);
}

static void test_chunks(void **state) {
    (void)state;
    lt_openai_chunk c;
    const char *role = "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                       "\"content\":\"\"},\"finish_reason\":null}]}";
    assert_int_equal(lt_openai_parse_chunk(role, strlen(role), &c), CM_OK);
    assert_false(c.has_content);
    assert_false(c.has_finish_reason);
    const char *tok = "{\"choices\":[{\"delta\":{\"content\":\" Hi\"},\"finish_reason\":null}]}";
    assert_int_equal(lt_openai_parse_chunk(tok, strlen(tok), &c), CM_OK);
    assert_true(c.has_content);
    const char *text = "{\"choices\":[{\"text\":\"x\",\"finish_reason\":\"length\"}]}";
    assert_int_equal(lt_openai_parse_chunk(text, strlen(text), &c), CM_OK);
    assert_true(c.has_content);
    assert_true(c.has_finish_reason);
    const char *usage =
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":32}}";
    assert_int_equal(lt_openai_parse_chunk(usage, strlen(usage), &c), CM_OK);
    assert_true(c.has_usage);
    assert_int_equal(c.prompt_tokens, 12);
    assert_int_equal(c.completion_tokens, 32);
    assert_false(c.has_content);
    assert_int_equal(lt_openai_parse_chunk("[DONE]", 6, &c), CM_OK);
    assert_true(c.done);
    const char *err = "{\"error\":{\"message\":\"worker lost\",\"type\":\"server_error\"}}";
    assert_int_equal(lt_openai_parse_chunk(err, strlen(err), &c), CM_OK);
    assert_true(c.is_error);
    assert_string_equal(c.message, "worker lost");
    const char *whole = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},"
                        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,"
                        "\"completion_tokens\":1}}";
    assert_int_equal(lt_openai_parse_chunk(whole, strlen(whole), &c), CM_OK);
    assert_true(c.has_content);
    assert_int_equal(c.completion_tokens, 1);
    assert_int_equal(lt_openai_parse_chunk("{\"choices\":", 11, &c), CM_ERR_FORMAT);
    assert_int_equal(lt_openai_parse_chunk("42", 2, &c), CM_ERR_FORMAT);
    const char *neg = "{\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":\"7\"}}";
    assert_int_equal(lt_openai_parse_chunk(neg, strlen(neg), &c), CM_OK);
    assert_int_equal(c.prompt_tokens, 0);
    assert_int_equal(c.completion_tokens, 0);
}

static void test_error_message(void **state) {
    (void)state;
    char msg[32];
    const char *body = "{\"error\":{\"message\":\"rate limit exceeded\"}}";
    lt_openai_error_message(body, strlen(body), msg, sizeof(msg));
    assert_string_equal(msg, "rate limit exceeded");
    lt_openai_error_message("Bad Gateway\n<html>", 18, msg, sizeof(msg));
    assert_string_equal(msg, "Bad Gateway <html>");
    lt_openai_error_message(NULL, 0, msg, sizeof(msg));
    assert_string_equal(msg, "");
    char tiny[8];
    lt_openai_error_message("0123456789abcdef", 16, tiny, sizeof(tiny));
    assert_string_equal(tiny, "0123456");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_body),
        cmocka_unit_test(test_file_messages_pass_through),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_error_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
