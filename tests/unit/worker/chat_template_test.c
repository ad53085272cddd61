/*
 * Tests for worker/chat_template.c: detection from real template texts, rendering of each
 * family against the output of its reference Jinja template, role errors and bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "chat_template.h"
#include "gguf.h"

/* SmolLM2-135M-Instruct's tokenizer.chat_template, as stored in its GGUF. */
static const char smollm2_tpl[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

/* Start of Qwen2.5's template: the first "system" literal is an expression, the second is
 * the default prompt (escapes written as \n in the literal). */
static const char qwen_tpl[] =
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- endif %}{%- else %}{%- if messages[0]['role'] == "
    "'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}";

static const char llama3_tpl[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' "
    "}}";

static const char llama2_tpl[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}...{{ bos_token + '[INST] ' + "
    "content.strip() + ' [/INST]' }}";

static const char gemma_tpl[] = "{{ bos_token }}{% for message in messages %}{{ "
                                "'<start_of_turn>' + role + '\n' + message['content'] | trim + "
                                "'<end_of_turn>\n' }}{% endfor %}";

/* Phi-3-mini-4k-instruct's template (the system-aware revision). */
static const char phi3_tpl[] =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

static wk_chat_template detect_ok(const char *tpl, const char *override, wk_chat_family want) {
    wk_chat_template t;
    char err[256] = "";
    cm_err rv = wk_chat_template_detect(tpl, override, &t, err, sizeof err);
    if (rv != CM_OK) {
        fprintf(stderr, "detect: %s\n", err);
    }
    assert_int_equal(rv, CM_OK);
    assert_int_equal(t.family, want);
    return t;
}

static void render_eq(const wk_chat_template *t, const wk_chat_message *m, size_t n, int gen,
                      const char *want) {
    char out[4096];
    char err[256] = "";
    size_t w = 0;
    cm_err rv = wk_chat_render(t, m, n, gen, out, sizeof out, &w, err, sizeof err);
    if (rv != CM_OK) {
        fprintf(stderr, "render: %s\n", err);
    }
    assert_int_equal(rv, CM_OK);
    assert_string_equal(out, want);
    assert_int_equal(w, strlen(want));
}

static void test_detect(void **state) {
    (void)state;
    wk_chat_template t = detect_ok(smollm2_tpl, NULL, WK_CHAT_CHATML);
    assert_string_equal(t.default_system,
                        "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    t = detect_ok(qwen_tpl, NULL, WK_CHAT_CHATML);
    assert_string_equal(t.default_system,
                        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    t = detect_ok("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + "
                  "'<|im_end|>\n'}}{% endfor %}",
                  NULL, WK_CHAT_CHATML);
    assert_string_equal(t.default_system, "");
    t = detect_ok(llama3_tpl, NULL, WK_CHAT_LLAMA3);
    assert_string_equal(t.bos_text, "<|begin_of_text|>");
    detect_ok(llama2_tpl, NULL, WK_CHAT_LLAMA2);
    detect_ok(gemma_tpl, NULL, WK_CHAT_GEMMA);
    detect_ok(phi3_tpl, NULL, WK_CHAT_PHI3);
    detect_ok(NULL, "phi3", WK_CHAT_PHI3);
    assert_string_equal(wk_chat_family_name(WK_CHAT_PHI3), "phi3");
    /* Override wins, also without any template text. */
    detect_ok(smollm2_tpl, "gemma", WK_CHAT_GEMMA);
    detect_ok(NULL, "mistral", WK_CHAT_LLAMA2);
    assert_string_equal(wk_chat_family_name(WK_CHAT_LLAMA3), "llama3");

    wk_chat_template u;
    char err[256] = "";
    assert_int_equal(wk_chat_template_detect("{{ messages | my_custom_format }} and more text "
                                             "that goes on for quite a while longer",
                                             NULL, &u, err, sizeof err),
                     CM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "{{ messages | my_custom_format }}"));
    assert_non_null(strstr(err, "chatml"));
    assert_int_equal(wk_chat_template_detect(NULL, NULL, &u, err, sizeof err), CM_ERR_UNSUPPORTED);
    assert_int_equal(wk_chat_template_detect(smollm2_tpl, "vicuna", &u, err, sizeof err),
                     CM_ERR_CONFIG);
    assert_non_null(strstr(err, "vicuna"));
}

static void test_chatml(void **state) {
    (void)state;
    wk_chat_template t = detect_ok(smollm2_tpl, NULL, WK_CHAT_CHATML);
    wk_chat_message m1[] = {{"user", "Hi there", NULL, 0}};
    render_eq(&t, m1, 1, 1,
              "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
              "Hugging Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
              "<|im_start|>assistant\n");
    wk_chat_message m2[] = {{"system", "Be brief.", NULL, 0},
                            {"user", " q ", NULL, 0},
                            {"assistant", "a", NULL, 0},
                            {"tool", "{\"x\":1}", NULL, 0}};
    render_eq(&t, m2, 4, 0,
              "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n q <|im_end|>\n"
              "<|im_start|>assistant\na<|im_end|>\n<|im_start|>tool\n{\"x\":1}<|im_end|>\n");
}

static void test_llama3(void **state) {
    (void)state;
    wk_chat_template t = detect_ok(llama3_tpl, NULL, WK_CHAT_LLAMA3);
    wk_chat_message m[] = {
        {"system", "Sys", NULL, 0}, {"user", "  Hello\n", NULL, 0}, {"tool", "42", NULL, 0}};
    render_eq(&t, m, 3, 1,
              "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
              "<|start_header_id|>ipython<|end_header_id|>\n\n42<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void test_llama2(void **state) {
    (void)state;
    wk_chat_template t = detect_ok(llama2_tpl, NULL, WK_CHAT_LLAMA2);
    wk_chat_message m[] = {{"system", "Be nice.", NULL, 0},
                           {"user", "Hi ", NULL, 0},
                           {"assistant", "Hello!", NULL, 0},
                           {"user", "Bye", NULL, 0}};
    render_eq(&t, m, 4, 1,
              "<s>[INST] <<SYS>>\nBe nice.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye "
              "[/INST]");
    wk_chat_message m2[] = {{"user", "Q", NULL, 0}};
    render_eq(&t, m2, 1, 1, "<s>[INST] Q [/INST]");
}

static void test_gemma(void **state) {
    (void)state;
    wk_chat_template t = detect_ok(gemma_tpl, NULL, WK_CHAT_GEMMA);
    wk_chat_message m[] = {
        {"system", "Sys", NULL, 0}, {"user", "Hi", NULL, 0}, {"assistant", "Yo ", NULL, 0}};
    render_eq(&t, m, 3, 1,
              "<bos><start_of_turn>user\nSys\n\nHi<end_of_turn>\n<start_of_turn>model\nYo"
              "<end_of_turn>\n<start_of_turn>model\n");
}

static void test_phi3(void **state) {
    (void)state;
    wk_chat_template t = detect_ok(phi3_tpl, NULL, WK_CHAT_PHI3);
    wk_chat_message m[] = {
        {"system", "Sys", NULL, 0}, {"user", "Hi", NULL, 0}, {"assistant", "Yo", NULL, 0}};
    render_eq(&t, m, 3, 1,
              "<|system|>\nSys<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nYo<|end|>\n"
              "<|assistant|>\n");
    wk_chat_message q[] = {{"user", "Q", NULL, 0}};
    render_eq(&t, q, 1, 0, "<|user|>\nQ<|end|>\n");
    /* a raw tool turn has no phi3 form (the tools renderer turns it into a user turn) */
    char out[128], err[128];
    size_t w;
    wk_chat_message tool[] = {{"user", "Q", NULL, 0}, {"tool", "42", NULL, 0}};
    assert_int_equal(wk_chat_render(&t, tool, 2, 1, out, sizeof out, &w, err, sizeof err),
                     CM_ERR_INVALID);
    assert_non_null(strstr(err, "phi3"));
    wk_chat_tool fn = {"get", NULL, NULL};
    char big[2048];
    assert_int_equal(
        wk_chat_render_tools(&t, tool, 2, &fn, 1, 1, big, sizeof big, &w, err, sizeof err), CM_OK);
    assert_non_null(strstr(big, "<|user|>\n<tool_response>\n42\n</tool_response><|end|>\n"));
}

static void test_role_errors(void **state) {
    (void)state;
    char out[256], err[256];
    size_t w;
    wk_chat_template chatml = detect_ok(smollm2_tpl, NULL, WK_CHAT_CHATML);
    wk_chat_template gemma = detect_ok(gemma_tpl, NULL, WK_CHAT_GEMMA);
    wk_chat_template llama2 = detect_ok(llama2_tpl, NULL, WK_CHAT_LLAMA2);

    wk_chat_message bad[] = {{"wizard", "x", NULL, 0}};
    assert_int_equal(wk_chat_render(&chatml, bad, 1, 1, out, sizeof out, &w, err, sizeof err),
                     CM_ERR_INVALID);
    assert_non_null(strstr(err, "wizard"));
    wk_chat_message nul[] = {{"user", NULL, NULL, 0}};
    assert_int_equal(wk_chat_render(&chatml, nul, 1, 1, out, sizeof out, &w, err, sizeof err),
                     CM_ERR_INVALID);

    wk_chat_message tool[] = {{"user", "x", NULL, 0}, {"tool", "y", NULL, 0}};
    assert_int_equal(wk_chat_render(&gemma, tool, 2, 1, out, sizeof out, &w, err, sizeof err),
                     CM_ERR_INVALID);
    assert_non_null(strstr(err, "tool"));
    assert_non_null(strstr(err, "gemma"));
    assert_int_equal(wk_chat_render(&llama2, tool, 2, 1, out, sizeof out, &w, err, sizeof err),
                     CM_ERR_INVALID);

    wk_chat_message twice[] = {{"user", "a", NULL, 0}, {"user", "b", NULL, 0}};
    assert_int_equal(wk_chat_render(&llama2, twice, 2, 1, out, sizeof out, &w, err, sizeof err),
                     CM_ERR_INVALID);
    assert_non_null(strstr(err, "alternating"));
    wk_chat_message late_sys[] = {{"user", "a", NULL, 0}, {"system", "b", NULL, 0}};
    assert_int_equal(wk_chat_render(&gemma, late_sys, 2, 1, out, sizeof out, &w, err, sizeof err),
                     CM_ERR_INVALID);
    /* ChatML and Llama 3 accept any order. */
    assert_int_equal(wk_chat_render(&chatml, twice, 2, 1, out, sizeof out, &w, err, sizeof err),
                     CM_OK);
}

static void test_limit(void **state) {
    (void)state;
    wk_chat_template t = detect_ok(smollm2_tpl, NULL, WK_CHAT_CHATML);
    wk_chat_message m[] = {{"user", "Hello", NULL, 0}};
    char out[200];
    char err[256];
    size_t w = 7;
    /* The default system block alone is about 100 bytes: 40 cannot hold it. */
    assert_int_equal(wk_chat_render(&t, m, 1, 1, out, 40, &w, err, sizeof err), CM_ERR_LIMIT);
    assert_int_equal(w, 0);
    assert_string_equal(out, "");
    /* Exactly enough (length + NUL) works; one byte less does not. */
    assert_int_equal(wk_chat_render(&t, m, 1, 1, out, sizeof out, &w, err, sizeof err), CM_OK);
    size_t need = w + 1;
    assert_int_equal(wk_chat_render(&t, m, 1, 1, out, need, &w, err, sizeof err), CM_OK);
    assert_int_equal(wk_chat_render(&t, m, 1, 1, out, need - 1, &w, err, sizeof err), CM_ERR_LIMIT);
}

static void test_model_template(void **state) {
    (void)state;
    const char *path = getenv("SLUICE_TEST_MODEL");
    if (path == NULL) {
        skip();
    }
    wk_gguf *g = NULL;
    char err[256] = "";
    assert_int_equal(wk_gguf_open(path, &g, err, sizeof err), CM_OK);
    wk_gguf_str s;
    assert_int_equal(wk_gguf_get_str(g, "tokenizer.chat_template", &s), CM_OK);
    char *tpl = malloc(s.len + 1);
    assert_non_null(tpl);
    memcpy(tpl, s.ptr, s.len);
    tpl[s.len] = '\0';
    wk_chat_template t = detect_ok(tpl, NULL, WK_CHAT_CHATML);
    assert_string_equal(t.default_system,
                        "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    free(tpl);
    wk_gguf_close(g);
}

static void test_tools(void **state) {
    (void)state;
    wk_chat_template t = detect_ok(smollm2_tpl, NULL, WK_CHAT_CHATML);
    wk_chat_tool tools[] = {{"get_weather", "Weather \"now\"\n", "{\"type\":\"object\"}"},
                            {"ping", NULL, NULL}};
    wk_chat_tool_call calls[] = {{"get_weather", "{\"city\": \"Paris\"}"}, {"ping", "{}"}};
    wk_chat_message m[] = {{"user", "Weather?", NULL, 0},
                           {"assistant", "", calls, 2},
                           {"tool", "sunny", NULL, 0},
                           {"tool", "pong", NULL, 0}};
    char out[8192], err[256];
    size_t w = 0;
    assert_int_equal(
        wk_chat_render_tools(&t, m, 4, tools, 2, 1, out, sizeof out, &w, err, sizeof err), CM_OK);
    assert_int_equal(strlen(out), w);
    /* The default system prompt, then the tools section, in one system turn. */
    const char *sys = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained "
                      "by Hugging Face\n\n# Tools\n";
    assert_memory_equal(out, sys, strlen(sys));
    assert_non_null(strstr(out,
                           "<tools>\n{\"type\": \"function\", \"function\": {\"name\": "
                           "\"get_weather\", \"description\": \"Weather \\\"now\\\"\\n\", "
                           "\"parameters\": {\"type\":\"object\"}}}\n{\"type\": \"function\", "
                           "\"function\": {\"name\": \"ping\", \"parameters\": {}}}\n</tools>"));
    assert_non_null(strstr(out,
                           "<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n"
                           "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", "
                           "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>"
                           "\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call><|im_end|>\n"
                           "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>"
                           "<|im_end|>\n<|im_start|>user\n<tool_response>\npong\n"
                           "</tool_response><|im_end|>\n<|im_start|>assistant\n"));
    assert_null(strstr(out, "<|im_start|>tool"));
    /* Only one system turn: an explicit system message takes the section. */
    wk_chat_message m2[] = {{"system", "Be brief.", NULL, 0}, {"user", "x", NULL, 0}};
    assert_int_equal(
        wk_chat_render_tools(&t, m2, 2, tools, 1, 1, out, sizeof out, &w, err, sizeof err), CM_OK);
    assert_memory_equal(out, "<|im_start|>system\nBe brief.\n\n# Tools", 36);
    assert_null(strstr(out, "SmolLM"));
    /* No tools and no tool history: exactly wk_chat_render. */
    char plain[1024];
    size_t pw = 0;
    assert_int_equal(wk_chat_render(&t, m2, 2, 1, plain, sizeof plain, &pw, err, sizeof err),
                     CM_OK);
    assert_int_equal(
        wk_chat_render_tools(&t, m2, 2, NULL, 0, 1, out, sizeof out, &w, err, sizeof err), CM_OK);
    assert_string_equal(out, plain);
    /* Too small an output buffer is a limit error, not an overflow. */
    assert_int_equal(wk_chat_render_tools(&t, m, 4, tools, 2, 1, out, 64, &w, err, sizeof err),
                     CM_ERR_LIMIT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),         cmocka_unit_test(test_chatml),
        cmocka_unit_test(test_llama3),         cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_gemma),          cmocka_unit_test(test_phi3),
        cmocka_unit_test(test_role_errors),    cmocka_unit_test(test_limit),
        cmocka_unit_test(test_model_template), cmocka_unit_test(test_tools),
    };
    return cmocka_run_group_tests_name("chat_template", tests, NULL, NULL);
}
