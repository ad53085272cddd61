/*
 * wk_constraint: the grammar each request shape gets, compiled and run byte by byte: what it
 * accepts (complete or not) and what it refuses; errors name the request parameter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "constraint.h"

static wk_grammar_cache *cache;

static int setup(void **state) {
    (void)state;
    return wk_grammar_cache_create(16, &cache) == CM_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    wk_grammar_cache_destroy(cache);
    return 0;
}

#define WEATHER                                                                                    \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"enum\":[\"Paris\","      \
    "\"Oslo\"]}},\"required\":[\"city\"],\"additionalProperties\":false}"

typedef struct shape {
    Sluice__Submit s;
    Sluice__Tool tools[2];
    Sluice__Tool *tool_ptrs[2];
    Sluice__ToolChoice tc;
    Sluice__ResponseFormat rf;
} shape;

static void shape_init(shape *x, size_t n_tools) {
    sluice__submit__init(&x->s);
    sluice__tool_choice__init(&x->tc);
    sluice__response_format__init(&x->rf);
    for (size_t i = 0; i < 2; i++) {
        sluice__tool__init(&x->tools[i]);
        x->tool_ptrs[i] = &x->tools[i];
    }
    x->tools[0].name = "get_weather";
    x->tools[0].parameters_json = WEATHER;
    x->tools[1].name = "ping"; /* no parameters: any object */
    x->s.n_tools = n_tools;
    x->s.tools = x->tool_ptrs;
}

static void set_choice(shape *x, Sluice__ToolChoice__Mode mode, const char *name) {
    x->tc.has_mode = 1;
    x->tc.mode = mode;
    x->tc.name = (char *)name;
    x->s.tool_choice = &x->tc;
}

/* 1 = accepted and complete, 0 = accepted as a prefix only, -1 = refused. */
static int run(const wk_constraint *c, const char *text) {
    wk_grammar_state *st = NULL;
    int rv;
    assert_int_equal(wk_grammar_state_create(c->grammar, NULL, &st), CM_OK);
    if (wk_grammar_accept_bytes(st, (const uint8_t *)text, strlen(text)) != CM_OK)
        rv = -1;
    else
        rv = wk_grammar_complete(st) ? 1 : 0;
    wk_grammar_state_free(st);
    return rv;
}

#define CALL_W                                                                                     \
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
#define CALL_P "<tool_call>\n{\"name\": \"ping\", \"arguments\": {\"x\": [1, 2]}}\n</tool_call>"

static void build(shape *x, wk_constraint *c) {
    char err[256] = "";
    cm_err rv = wk_constraint_build(cache, &x->s, c, err, sizeof err);
    if (rv != CM_OK)
        fail_msg("build: %s (%s)", cm_strerror(rv), err);
}

static void test_required_and_parallel(void **state) {
    (void)state;
    shape x;
    wk_constraint c;
    shape_init(&x, 2);
    set_choice(&x, SLUICE__TOOL_CHOICE__MODE__MODE_REQUIRED, NULL);
    build(&x, &c);
    assert_non_null(c.grammar);
    assert_true(c.tool_calls && c.calls_only);
    assert_int_equal(run(&c, CALL_W), 1);
    assert_int_equal(run(&c, CALL_W "\n" CALL_P), 1);
    assert_int_equal(run(&c, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {"), 0);
    /* Arguments must follow the tool's schema; names must be tools; no text. */
    assert_int_equal(
        run(&c, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}"),
        -1);
    assert_int_equal(run(&c, "<tool_call>\n{\"name\": \"nope\""), -1);
    assert_int_equal(run(&c, "Hello"), -1);
    assert_int_equal(run(&c, ""), 0);
    wk_constraint_fini(&c);
    /* Not parallel: exactly one call. */
    x.s.has_parallel_tool_calls = 1;
    x.s.parallel_tool_calls = 0;
    build(&x, &c);
    assert_int_equal(run(&c, CALL_W), 1);
    assert_int_equal(run(&c, CALL_W "\n"), -1);
    wk_constraint_fini(&c);
}

static void test_named_and_auto(void **state) {
    (void)state;
    shape x;
    wk_constraint c;
    shape_init(&x, 2);
    set_choice(&x, SLUICE__TOOL_CHOICE__MODE__MODE_FUNCTION, "ping");
    build(&x, &c);
    assert_int_equal(run(&c, CALL_P), 1);
    assert_int_equal(run(&c, CALL_W), -1);
    wk_constraint_fini(&c);

    x.s.tool_choice = NULL; /* auto */
    build(&x, &c);
    assert_true(c.tool_calls && !c.calls_only);
    assert_int_equal(run(&c, CALL_W), 1);
    assert_int_equal(run(&c, "It is sunny in Paris."), 1);
    assert_int_equal(run(&c, ""), 1);
    assert_int_equal(run(&c, "<b>bold</b>"), -1); /* '<' only opens a call */
    wk_constraint_fini(&c);

    /* auto + json_schema: calls or the schema's JSON. */
    x.rf.has_type = 1;
    x.rf.type = SLUICE__RESPONSE_FORMAT__TYPE__TYPE_JSON_SCHEMA;
    x.rf.schema_json = WEATHER;
    x.s.response_format = &x.rf;
    build(&x, &c);
    assert_int_equal(run(&c, "{\"city\": \"Oslo\"}"), 1);
    assert_int_equal(run(&c, CALL_P), 1);
    assert_int_equal(run(&c, "Sunny"), -1);
    wk_constraint_fini(&c);

    /* none: tools off; the response format alone. */
    set_choice(&x, SLUICE__TOOL_CHOICE__MODE__MODE_NONE, NULL);
    build(&x, &c);
    assert_false(c.tool_calls);
    assert_int_equal(run(&c, "{\"city\": \"Oslo\"}"), 1);
    assert_int_equal(run(&c, CALL_P), -1);
    wk_constraint_fini(&c);
}

static void test_formats(void **state) {
    (void)state;
    shape x;
    wk_constraint c;
    shape_init(&x, 0);
    build(&x, &c);
    assert_null(c.grammar); /* nothing asked: unconstrained */
    x.rf.has_type = 1;
    x.rf.type = SLUICE__RESPONSE_FORMAT__TYPE__TYPE_JSON_OBJECT;
    x.s.response_format = &x.rf;
    build(&x, &c);
    assert_int_equal(run(&c, "{\"a\": [1, {\"b\": null}]}"), 1);
    assert_int_equal(run(&c, "[1]"), -1);
    wk_constraint_fini(&c);
    /* A repeated request hits the cache. */
    wk_grammar_cache_stats before, after;
    wk_grammar_cache_get_stats(cache, &before);
    build(&x, &c);
    wk_constraint_fini(&c);
    wk_grammar_cache_get_stats(cache, &after);
    assert_int_equal(after.hits, before.hits + 1);
    assert_int_equal(after.misses, before.misses);
}

static void test_errors_name_param(void **state) {
    (void)state;
    shape x;
    wk_constraint c;
    char err[256];
    shape_init(&x, 2);
    x.tools[1].parameters_json =
        "{\"type\":\"object\",\"patternProperties\":{\"^a\":{\"type\":\"string\"}}}";
    assert_int_equal(wk_constraint_build(cache, &x.s, &c, err, sizeof err), CM_ERR_UNSUPPORTED);
    assert_null(c.grammar);
    assert_memory_equal(err, "tools[1].function.parameters: ", 30);
    assert_non_null(strstr(err, "patternProperties"));
    shape_init(&x, 0);
    x.rf.has_type = 1;
    x.rf.type = SLUICE__RESPONSE_FORMAT__TYPE__TYPE_JSON_SCHEMA;
    x.rf.schema_json = "{\"allOf\":[]}";
    x.s.response_format = &x.rf;
    assert_int_equal(wk_constraint_build(cache, &x.s, &c, err, sizeof err), CM_ERR_UNSUPPORTED);
    assert_memory_equal(err, "response_format.json_schema.schema: ", 36);
    shape_init(&x, 2);
    set_choice(&x, SLUICE__TOOL_CHOICE__MODE__MODE_FUNCTION, "absent");
    assert_int_equal(wk_constraint_build(cache, &x.s, &c, err, sizeof err), CM_ERR_INVALID);
    assert_memory_equal(err, "tool_choice.function.name: ", 27);
    shape_init(&x, 1);
    x.tools[0].name = "bad\"name";
    assert_int_equal(wk_constraint_build(cache, &x.s, &c, err, sizeof err), CM_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_required_and_parallel),
        cmocka_unit_test(test_named_and_auto),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_errors_name_param),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
