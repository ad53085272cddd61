/* gw_request: validation names the parameter, limits hold, the mapping to Submit is right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gw_request.h"

static gw_limits lim;

static int setup(void **state) {
    (void)state;
    gw_limits_default(&lim);
    return 0;
}

static cm_err parse(gw_api api, const char *body, gw_request *rq, gw_error *err) {
    return gw_request_parse(body, strlen(body), api, &lim, rq, err);
}

static void expect_400(gw_api api, const char *body, const char *param) {
    gw_request rq;
    gw_error err;
    cm_err rv = parse(api, body, &rq, &err);
    if (rv == CM_OK)
        fail_msg("accepted: %s", body);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.param, param);
    assert_true(strlen(err.message) > 0);
    gw_request_fini(&rq);
}

/* The wire bytes of rq's Submit for ids (what the gateway sends), into buf. */
static size_t pack_submit(gw_request *rq, const gw_submit_ids *ids, uint8_t *buf, size_t cap) {
    Sluice__Envelope wire;
    size_t len;
    gw_request_envelope(rq, ids, &wire);
    len = sluice__envelope__get_packed_size(&wire);
    assert_true(len <= cap);
    assert_int_equal(sluice__envelope__pack(&wire, buf), len);
    return len;
}

static void test_chat_mapping(void **state) {
    gw_request rq;
    gw_error err;
    (void)state;
    const char *body =
        "{\"model\":\"m1\",\"messages\":[{\"role\":\"developer\",\"content\":\"sys\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"ab\"},"
        "{\"type\":\"text\",\"text\":\"cd\"}]}],\"temperature\":0.5,\"top_p\":0.9,"
        "\"stop\":[\"x\",\"yz\"],\"seed\":10,\"n\":3,\"max_completion_tokens\":7,"
        "\"logit_bias\":{\"12\":500},\"logprobs\":true,\"top_logprobs\":2,\"top_k\":5,"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"priority\":2}";
    assert_int_equal(parse(GW_API_CHAT, body, &rq, &err), CM_OK);
    assert_string_equal(rq.model, "m1");
    assert_int_equal(rq.submit.n_messages, 2);
    assert_string_equal(rq.submit.messages[0]->role, "system");
    assert_string_equal(rq.submit.messages[1]->content, "abcd");
    assert_int_equal(rq.n, 3);
    assert_int_equal(rq.max_tokens, 7);
    assert_true(rq.stream && rq.include_usage);
    assert_true(rq.sampling.has_temperature);
    assert_float_equal(rq.sampling.temperature, 0.5, 1e-6);
    assert_int_equal(rq.sampling.top_k, 5);
    assert_int_equal(rq.submit.n_stop, 2);
    assert_string_equal(rq.submit.stop[1], "yz");
    assert_int_equal(rq.sampling.n_logit_bias, 1);
    assert_int_equal(rq.sampling.logit_bias[0]->token_id, 12);
    assert_float_equal(rq.sampling.logit_bias[0]->bias, 100.0, 1e-6); /* clamped */
    assert_int_equal(rq.sampling.logprobs, 3);                        /* top 2 + chosen */
    assert_int_equal(rq.submit.priority, SLUICE__PRIORITY__PRIORITY_BATCH);

    /* Per-choice seed: seed + choice, and the ids land in the packed Submit. */
    for (uint32_t i = 0; i < 3; i++) {
        gw_submit_ids ids = {.request_id = 100 + i,
                             .choice = i,
                             .tenant = "t1",
                             .gateway_id = "req-1",
                             .deadline_unix_ms = 5};
        uint8_t buf[4096];
        size_t len = pack_submit(&rq, &ids, buf, sizeof buf);
        Sluice__Envelope *env;
        env = sluice__envelope__unpack(NULL, len, buf);
        assert_non_null(env);
        assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_SUBMIT);
        assert_int_equal(env->submit->request_id, 100 + i);
        assert_int_equal(env->submit->sampling->seed, 10 + i);
        assert_string_equal(env->submit->tenant, "t1");
        assert_int_equal(env->submit->deadline_unix_ms, 5);
        assert_int_equal(env->submit->max_tokens, 7);
        sluice__envelope__free_unpacked(env, NULL);
    }
    gw_request_fini(&rq);
}

static void test_completion_mapping(void **state) {
    gw_request rq;
    gw_error err;
    (void)state;
    assert_int_equal(parse(GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"hello\"}", &rq, &err),
                     CM_OK);
    assert_string_equal(rq.submit.prompt, "hello");
    assert_int_equal(rq.max_tokens, 16); /* OpenAI's default for completions */
    assert_false(rq.sampling.has_seed);
    gw_request_fini(&rq);
    assert_int_equal(parse(GW_API_COMPLETIONS,
                           "{\"model\":\"m\",\"prompt\":[5,6,7],\"logprobs\":2,\"stop\":\"s\"}",
                           &rq, &err),
                     CM_OK);
    assert_int_equal(rq.submit.n_prompt_token_ids, 3);
    assert_int_equal(rq.submit.prompt_token_ids[2], 7);
    assert_int_equal(rq.sampling.logprobs, 3);
    assert_int_equal(rq.submit.n_stop, 1);
    gw_request_fini(&rq);
}

static void test_rejections_name_param(void **state) {
    (void)state;
    expect_400(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model");
    expect_400(GW_API_CHAT, "{\"model\":\"m\"}", "messages");
    expect_400(GW_API_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages");
    expect_400(GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"x\",\"content\":\"x\"}]}",
               "messages[0].role");
    expect_400(GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}",
               "messages[0].content");
    expect_400(GW_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\","
               "\"tool_calls\":[]}]}",
               "messages[0].tool_calls");
#define CHAT(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," extra "}"
    expect_400(GW_API_CHAT, CHAT("\"temperature\":2.5"), "temperature");
    expect_400(GW_API_CHAT, CHAT("\"temperature\":\"hot\""), "temperature");
    expect_400(GW_API_CHAT, CHAT("\"top_p\":0"), "top_p");
    expect_400(GW_API_CHAT, CHAT("\"n\":9"), "n");
    expect_400(GW_API_CHAT, CHAT("\"n\":1.5"), "n");
    expect_400(GW_API_CHAT, CHAT("\"max_tokens\":4097"), "max_tokens");
    expect_400(GW_API_CHAT, CHAT("\"max_completion_tokens\":0"), "max_completion_tokens");
    expect_400(GW_API_CHAT, CHAT("\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]"), "stop");
    expect_400(GW_API_CHAT, CHAT("\"stop\":[1]"), "stop[0]");
    expect_400(GW_API_CHAT, CHAT("\"frequency_penalty\":-3"), "frequency_penalty");
    expect_400(GW_API_CHAT, CHAT("\"logit_bias\":{\"x\":1}"), "logit_bias");
    expect_400(GW_API_CHAT, CHAT("\"top_logprobs\":2"), "top_logprobs");
    expect_400(GW_API_CHAT, CHAT("\"logprobs\":true,\"top_logprobs\":21"), "top_logprobs");
    expect_400(GW_API_CHAT, CHAT("\"tools\":[]"), "tools");
    expect_400(GW_API_CHAT, CHAT("\"functions\":[]"), "functions");
    expect_400(GW_API_CHAT, CHAT("\"response_format\":{\"type\":\"xml\"}"), "response_format.type");
    expect_400(GW_API_CHAT, CHAT("\"stream_options\":{\"include_usage\":true}"), "stream_options");
    expect_400(GW_API_CHAT, CHAT("\"whatever\":1"), "whatever");
    expect_400(GW_API_CHAT, CHAT("\"prompt\":\"x\""), "prompt");
    expect_400(GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"echo\":true}", "echo");
    expect_400(GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"suffix\":\"y\"}", "suffix");
    expect_400(GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", "prompt");
    expect_400(GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":6}", "logprobs");
    expect_400(GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"messages\":[]}",
               "messages");
#undef CHAT
}

static void test_limits(void **state) {
    gw_request rq;
    gw_error err;
    char body[4096];
    (void)state;
    lim.max_body_bytes = 100;
    memset(body, ' ', 200);
    body[200] = '\0';
    assert_int_equal(parse(GW_API_CHAT, body, &rq, &err), CM_ERR_LIMIT);
    assert_int_equal(err.status, 413);
    gw_limits_default(&lim);
    lim.max_prompt_chars = 10;
    expect_400(GW_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"0123456789ab\"}]}",
               "messages");
    expect_400(GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"0123456789ab\"}", "prompt");
    gw_limits_default(&lim);
    lim.max_messages = 1;
    expect_400(GW_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
               "{\"role\":\"user\",\"content\":\"b\"}]}",
               "messages");
    gw_limits_default(&lim);
}

static void test_bad_json(void **state) {
    gw_request rq;
    gw_error err;
    (void)state;
    assert_int_equal(parse(GW_API_CHAT, "{\"model\":", &rq, &err), CM_ERR_INVALID);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.code, "invalid_json");
    assert_int_equal(parse(GW_API_CHAT, "[]", &rq, &err), CM_ERR_INVALID);
    /* Duplicate keys are ambiguous: refused. */
    assert_int_equal(parse(GW_API_CHAT, "{\"model\":\"a\",\"model\":\"b\"}", &rq, &err),
                     CM_ERR_INVALID);
    /* An embedded NUL in content is refused rather than truncated. */
    assert_int_equal(parse(GW_API_CHAT,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"a\\u0000b\"}]}",
                           &rq, &err),
                     CM_ERR_INVALID);
    assert_int_equal(err.status, 400);
}

#define TOOL_W                                                                                     \
    "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"d\","         \
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"         \
    "\"required\":[\"city\"]}}}"
#define TOOL_T "{\"type\":\"function\",\"function\":{\"name\":\"time-now_2\"}}"

static void test_tools_mapping(void **state) {
    gw_request rq;
    gw_error err;
    (void)state;
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"refusal\":null,\"tool_calls\":[{\"id\":"
        "\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
        "\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny\"}],"
        "\"tools\":[" TOOL_W "," TOOL_T "],\"tool_choice\":{\"type\":\"function\","
        "\"function\":{\"name\":\"time-now_2\"}},\"parallel_tool_calls\":false}";
    assert_int_equal(parse(GW_API_CHAT, body, &rq, &err), CM_OK);
    assert_true(rq.has_tools);
    assert_int_equal(rq.submit.n_tools, 2);
    assert_string_equal(rq.submit.tools[0]->name, "get_weather");
    assert_string_equal(rq.submit.tools[0]->description, "d");
    /* Parameters travel as compact JSON with the declared key order kept. */
    assert_string_equal(rq.submit.tools[0]->parameters_json,
                        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
                        "\"required\":[\"city\"]}");
    assert_null(rq.submit.tools[1]->parameters_json);
    assert_int_equal(rq.submit.tool_choice->mode, SLUICE__TOOL_CHOICE__MODE__MODE_FUNCTION);
    assert_string_equal(rq.submit.tool_choice->name, "time-now_2");
    assert_true(rq.submit.has_parallel_tool_calls && !rq.submit.parallel_tool_calls);
    assert_int_equal(rq.submit.messages[1]->n_tool_calls, 1);
    assert_string_equal(rq.submit.messages[1]->content, "");
    assert_string_equal(rq.submit.messages[1]->tool_calls[0]->name, "get_weather");
    assert_string_equal(rq.submit.messages[1]->tool_calls[0]->id, "call_1");
    assert_string_equal(rq.submit.messages[1]->tool_calls[0]->arguments_json,
                        "{\"city\": \"Paris\"}");
    assert_string_equal(rq.submit.messages[2]->tool_call_id, "call_1");
    {
        /* It all survives the wire. */
        gw_submit_ids ids = {.request_id = 1};
        uint8_t buf[8192];
        size_t len = pack_submit(&rq, &ids, buf, sizeof buf);
        Sluice__Envelope *env;
        env = sluice__envelope__unpack(NULL, len, buf);
        assert_non_null(env);
        assert_int_equal(env->submit->n_tools, 2);
        assert_int_equal(env->submit->messages[1]->n_tool_calls, 1);
        assert_false(env->submit->parallel_tool_calls);
        sluice__envelope__free_unpacked(env, NULL);
    }
    gw_request_fini(&rq);

    /* json_schema response format and tool_choice "none". */
    assert_int_equal(
        parse(GW_API_CHAT,
              "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"tools\":[" TOOL_T "],\"tool_choice\":\"none\",\"response_format\":{\"type\":"
              "\"json_schema\",\"json_schema\":{\"name\":\"r\",\"strict\":true,\"schema\":"
              "{\"type\":\"object\",\"properties\":{\"b\":{},\"a\":{}}}}}}",
              &rq, &err),
        CM_OK);
    assert_false(rq.has_tools);
    assert_int_equal(rq.submit.tool_choice->mode, SLUICE__TOOL_CHOICE__MODE__MODE_NONE);
    assert_int_equal(rq.submit.response_format->type,
                     SLUICE__RESPONSE_FORMAT__TYPE__TYPE_JSON_SCHEMA);
    assert_string_equal(rq.submit.response_format->schema_json,
                        "{\"type\":\"object\",\"properties\":{\"b\":{},\"a\":{}}}");
    assert_true(rq.submit.response_format->strict);
    gw_request_fini(&rq);
    /* "text" is the default: nothing on the wire. */
    assert_int_equal(parse(GW_API_CHAT,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                           "\"response_format\":{\"type\":\"text\"}}",
                           &rq, &err),
                     CM_OK);
    assert_null(rq.submit.response_format);
    assert_null(rq.submit.tool_choice);
    gw_request_fini(&rq);
}

static void test_tools_rejections(void **state) {
    (void)state;
#define CHAT(extra)                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]," extra "}"
#define TOOLS(t) "\"tools\":[" t "]"
    expect_400(GW_API_CHAT, CHAT(TOOLS("{\"type\":\"function\"}")), "tools[0].function");
    expect_400(GW_API_CHAT, CHAT(TOOLS("{\"type\":\"code\",\"function\":{\"name\":\"a\"}}")),
               "tools[0].type");
    expect_400(GW_API_CHAT,
               CHAT(TOOLS(TOOL_T ",{\"type\":\"function\",\"function\":{\"name\":"
                                 "\"bad name\"}}")),
               "tools[1].function.name");
    expect_400(
        GW_API_CHAT,
        CHAT(TOOLS("{\"type\":\"function\",\"function\":{\"name\":"
                   "\"a123456789a123456789a123456789a123456789a123456789a123456789abcde\"}}")),
        "tools[0].function.name");
    expect_400(GW_API_CHAT, CHAT(TOOLS(TOOL_T "," TOOL_T)), "tools[1].function.name");
    expect_400(
        GW_API_CHAT,
        CHAT(TOOLS("{\"type\":\"function\",\"function\":{\"name\":\"a\",\"parameters\":3}}")),
        "tools[0].function.parameters");
    expect_400(GW_API_CHAT,
               CHAT(TOOLS("{\"type\":\"function\",\"function\":{\"name\":\"a\",\"parameters\":"
                          "{\"type\":\"string\"}}}")),
               "tools[0].function.parameters");
    expect_400(GW_API_CHAT,
               CHAT(TOOLS("{\"type\":\"function\",\"function\":{\"name\":\"a\",\"x\":1}}")),
               "tools[0].function.x");
    expect_400(GW_API_CHAT, CHAT(TOOLS(TOOL_T) ",\"tool_choice\":\"maybe\""), "tool_choice");
    expect_400(GW_API_CHAT,
               CHAT(TOOLS(TOOL_T) ",\"tool_choice\":{\"type\":\"function\",\"function\":"
                                  "{\"name\":\"nope\"}}"),
               "tool_choice.function.name");
    expect_400(GW_API_CHAT, CHAT("\"tool_choice\":\"required\""), "tool_choice");
    expect_400(GW_API_CHAT, CHAT(TOOLS(TOOL_T) ",\"parallel_tool_calls\":1"),
               "parallel_tool_calls");
    expect_400(GW_API_CHAT, CHAT("\"response_format\":{\"type\":\"json_schema\"}"),
               "response_format.json_schema");
    expect_400(GW_API_CHAT,
               CHAT("\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
                    "\"n\"}}"),
               "response_format.json_schema.schema");
    expect_400(GW_API_CHAT,
               CHAT("\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":"
                    "{}}}"),
               "response_format.json_schema.name");
    expect_400(GW_API_CHAT,
               CHAT("\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
                    "\"n\",\"schema\":[]}}"),
               "response_format.json_schema.schema");
    expect_400(GW_API_CHAT,
               CHAT("\"response_format\":{\"type\":\"json_object\",\"json_schema\":{}}"),
               "response_format.json_schema");
    /* History: tool_calls only on assistant turns, well formed; tool turns need their id. */
    expect_400(GW_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":"
               "\"function\",\"function\":{\"name\":\"a\",\"arguments\":{}}}]}]}",
               "messages[0].tool_calls[0].function.arguments");
    expect_400(GW_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":"
               "\"function\",\"function\":{\"name\":\"a b\",\"arguments\":\"{}\"}}]}]}",
               "messages[0].tool_calls[0].function.name");
    expect_400(GW_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
               "messages[0].tool_call_id");
    expect_400(GW_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":\"x\","
               "\"refusal\":\"no\"}]}",
               "messages[0].refusal");
#undef TOOLS
#undef CHAT
}

static void test_tool_limits(void **state) {
    gw_request rq;
    gw_error err;
    (void)state;
    /* GW_MAX_TOOLS + 1 tools */
    char *body = malloc(64 * 1024);
    size_t n = (size_t)sprintf(body, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                     "\"content\":\"x\"}],\"tools\":[");
    for (int i = 0; i <= GW_MAX_TOOLS; i++)
        n += (size_t)sprintf(body + n, "%s{\"type\":\"function\",\"function\":{\"name\":\"f%d\"}}",
                             i ? "," : "", i);
    sprintf(body + n, "]}");
    assert_int_not_equal(parse(GW_API_CHAT, body, &rq, &err), CM_OK);
    assert_string_equal(err.param, "tools");
    free(body);
    /* A schema over GW_MAX_SCHEMA_BYTES */
    body = malloc(GW_MAX_SCHEMA_BYTES + 1024);
    n = (size_t)sprintf(body, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                              "\"x\"}],\"response_format\":{\"type\":\"json_schema\","
                              "\"json_schema\":{\"name\":\"n\",\"schema\":{\"description\":\"");
    memset(body + n, 'a', GW_MAX_SCHEMA_BYTES);
    n += GW_MAX_SCHEMA_BYTES;
    sprintf(body + n, "\"}}}}");
    assert_int_not_equal(parse(GW_API_CHAT, body, &rq, &err), CM_OK);
    assert_string_equal(err.param, "response_format.json_schema.schema");
    free(body);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_chat_mapping, setup),
        cmocka_unit_test_setup(test_completion_mapping, setup),
        cmocka_unit_test_setup(test_rejections_name_param, setup),
        cmocka_unit_test_setup(test_limits, setup),
        cmocka_unit_test_setup(test_tools_mapping, setup),
        cmocka_unit_test_setup(test_tools_rejections, setup),
        cmocka_unit_test_setup(test_tool_limits, setup),
        cmocka_unit_test_setup(test_bad_json, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
