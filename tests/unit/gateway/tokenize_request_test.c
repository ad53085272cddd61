/* gw_tokenize_parse: vLLM's /tokenize and /detokenize bodies mapped to the wire Tokenize, and
 * every refusal naming its parameter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gw_request.h"

static gw_limits lim;

static int setup(void **state) {
    (void)state;
    gw_limits_default(&lim);
    lim.max_prompt_token_ids = 4;
    return 0;
}

static cm_err parse(gw_api api, const char *body, gw_tokenize_request *t, gw_error *err) {
    return gw_tokenize_parse(body, strlen(body), api, &lim, t, err);
}

static void expect_400(gw_api api, const char *body, const char *param) {
    gw_tokenize_request t;
    gw_error err;
    if (parse(api, body, &t, &err) == CM_OK)
        fail_msg("accepted: %s", body);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.param, param);
    assert_true(strlen(err.message) > 0);
    gw_tokenize_request_fini(&t);
}

static void test_prompt(void **state) {
    gw_tokenize_request t;
    gw_error err;
    (void)state;
    assert_int_equal(parse(GW_API_TOKENIZE,
                           "{\"model\":\"m\",\"prompt\":\"hello\",\"return_token_strs\":true}", &t,
                           &err),
                     CM_OK);
    assert_string_equal(t.model, "m");
    assert_string_equal(t.msg.model, "m");
    assert_string_equal(t.msg.prompt, "hello");
    assert_int_equal(t.msg.n_messages, 0);
    assert_true(t.msg.has_return_token_strs && t.msg.return_token_strs);
    assert_false(t.msg.has_add_special_tokens); /* absent: the worker's default */
    assert_false(t.msg.has_add_generation_prompt);
    gw_tokenize_request_fini(&t);
    assert_int_equal(parse(GW_API_TOKENIZE,
                           "{\"model\":\"m\",\"prompt\":\"x\",\"add_special_tokens\":false}", &t,
                           &err),
                     CM_OK);
    assert_true(t.msg.has_add_special_tokens);
    assert_false(t.msg.add_special_tokens);
    gw_tokenize_request_fini(&t);
}

static void test_messages(void **state) {
    gw_tokenize_request t;
    gw_error err;
    (void)state;
    assert_int_equal(
        parse(GW_API_TOKENIZE,
              "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
              "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],\"add_generation_prompt\":"
              "false,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
              &t, &err),
        CM_OK);
    assert_int_equal(t.msg.n_messages, 1);
    assert_string_equal(t.msg.messages[0]->role, "user");
    assert_string_equal(t.msg.messages[0]->content, "ab");
    assert_true(t.msg.has_add_generation_prompt);
    assert_false(t.msg.add_generation_prompt);
    assert_int_equal(t.msg.n_tools, 1);
    assert_string_equal(t.msg.tools[0]->name, "f");
    assert_null(t.msg.prompt);
    gw_tokenize_request_fini(&t);
}

static void test_detokenize(void **state) {
    gw_tokenize_request t;
    gw_error err;
    (void)state;
    assert_int_equal(
        parse(GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":[0,5,2147483647]}", &t, &err), CM_OK);
    assert_int_equal(t.msg.n_token_ids, 3);
    assert_int_equal(t.msg.token_ids[1], 5);
    assert_int_equal(t.msg.token_ids[2], 2147483647);
    gw_tokenize_request_fini(&t);
}

static void test_refusals(void **state) {
    (void)state;
    expect_400(GW_API_TOKENIZE, "{\"prompt\":\"x\"}", "model");
    expect_400(GW_API_TOKENIZE, "{\"model\":\"m\"}", "messages");
    expect_400(GW_API_TOKENIZE,
               "{\"model\":\"m\",\"prompt\":\"x\",\"messages\":[{\"role\":\"user\","
               "\"content\":\"y\"}]}",
               "prompt");
    expect_400(GW_API_TOKENIZE, "{\"model\":\"m\",\"prompt\":[1,2]}", "prompt");
    expect_400(GW_API_TOKENIZE, "{\"model\":\"m\",\"prompt\":\"x\",\"add_generation_prompt\":true}",
               "add_generation_prompt");
    expect_400(GW_API_TOKENIZE, "{\"model\":\"m\",\"prompt\":\"x\",\"add_special_tokens\":1}",
               "add_special_tokens");
    expect_400(GW_API_TOKENIZE, "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":1}",
               "max_tokens");
    expect_400(GW_API_TOKENIZE,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"bot\",\"content\":\"y\"}]}",
               "messages[0].role");
    expect_400(GW_API_DETOKENIZE, "{\"model\":\"m\"}", "tokens");
    expect_400(GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":[]}", "tokens");
    expect_400(GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":[1,2,3,4,5]}", "tokens");
    expect_400(GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":[1,-2]}", "tokens[1]");
    expect_400(GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":[1,2147483648]}", "tokens[1]");
    expect_400(GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":[1.5]}", "tokens[0]");
    expect_400(GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":[1],\"prompt\":\"x\"}", "prompt");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_detokenize),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
