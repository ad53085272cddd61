/* wk_tool_parser: tool calls and content split out of generated text fed in any chunking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tool_parse.h"

typedef struct collected {
    char content[4096];
    char args[8][1024];
    char names[8][80];
    char ids[8][40];
    uint32_t n_calls;
    int first_has_empty_args[8];
} collected;

static void take(wk_tool_parser *p, collected *c) {
    strncat(c->content, cm_buf_cstr(&p->content), sizeof c->content - strlen(c->content) - 1);
    for (size_t i = 0; i < p->n_deltas; i++) {
        const wk_wire_tool_delta *d = &p->deltas[i];
        assert_true(d->index < 8);
        if (d->id != NULL) {
            assert_int_equal(d->index, c->n_calls); /* calls open in order */
            snprintf(c->ids[d->index], sizeof c->ids[0], "%s", d->id);
            snprintf(c->names[d->index], sizeof c->names[0], "%s", d->name);
            c->first_has_empty_args[d->index] = d->arguments_len == 0;
            c->n_calls++;
        } else {
            assert_true(d->index + 1 == c->n_calls); /* fragments go to the open call */
        }
        strncat(c->args[d->index], d->arguments, d->arguments_len);
    }
}

/* Feeds text in chunks of `step` bytes (0 = random 1..7), then finishes. */
static void run(const char *text, size_t step, bool finish, collected *c, uint32_t *n_calls) {
    wk_tool_parser p;
    size_t len = strlen(text), at = 0;
    memset(c, 0, sizeof *c);
    wk_tool_parser_init(&p, 42);
    while (at < len) {
        size_t n = step ? step : 1 + (size_t)(rand() % 7);
        if (n > len - at)
            n = len - at;
        assert_int_equal(wk_tool_parser_feed(&p, text + at, n), CM_OK);
        take(&p, c);
        at += n;
    }
    if (finish) {
        assert_int_equal(wk_tool_parser_finish(&p), CM_OK);
        assert_int_equal(p.n_deltas, 0);
        take(&p, c);
    }
    *n_calls = wk_tool_parser_n_calls(&p);
    wk_tool_parser_fini(&p);
}

static void test_calls_any_chunking(void **state) {
    (void)state;
    const char *text =
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa}ris \\\"x\\\"\","
        " \"days\": [1, {\"a\": 2}]}}\n</tool_call>\n<tool_call>\n{\"name\": \"ping\", "
        "\"arguments\": {}}\n</tool_call>";
    size_t steps[] = {1, 2, 3, 5, 1000, 0, 0, 0};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        collected c;
        uint32_t n;
        run(text, steps[s], true, &c, &n);
        assert_int_equal(n, 2);
        assert_int_equal(c.n_calls, 2);
        assert_string_equal(c.content, "");
        assert_string_equal(c.names[0], "get_weather");
        assert_string_equal(c.names[1], "ping");
        assert_string_equal(c.args[0],
                            "{\"city\": \"Pa}ris \\\"x\\\"\", \"days\": [1, {\"a\": 2}]}");
        assert_string_equal(c.args[1], "{}");
        assert_true(c.first_has_empty_args[0] && c.first_has_empty_args[1]);
        assert_int_equal(strlen(c.ids[0]), 29);
        assert_memory_equal(c.ids[0], "call_", 5);
        assert_string_not_equal(c.ids[0], c.ids[1]);
    }
}

static void test_content(void **state) {
    (void)state;
    collected c;
    uint32_t n;
    run("Hello <tool_call> is text here", 1, true, &c, &n);
    assert_int_equal(n, 0);
    assert_string_equal(c.content, "Hello <tool_call> is text here");
    run("<toolbox>", 1, true, &c, &n);
    assert_int_equal(n, 0);
    assert_string_equal(c.content, "<toolbox>");
    /* Held back while it could still open a call; given back at the end. */
    run("<tool_c", 1, true, &c, &n);
    assert_string_equal(c.content, "<tool_c");
    run("{\"a\": 1}", 3, true, &c, &n);
    assert_string_equal(c.content, "{\"a\": 1}");
}

static void test_cut_short(void **state) {
    (void)state;
    collected c;
    uint32_t n;
    /* Cut before the name: the raw text comes back as content, no call. */
    run("<tool_call>\n{\"na", 2, true, &c, &n);
    assert_int_equal(n, 0);
    assert_string_equal(c.content, "<tool_call>\n{\"na");
    /* Cut inside the arguments: a call with the partial arguments as written. */
    run("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": \"ab", 4, true, &c, &n);
    assert_int_equal(n, 1);
    assert_string_equal(c.names[0], "f");
    assert_string_equal(c.args[0], "{\"x\": \"ab");
    assert_string_equal(c.content, "");
}

static void test_bounds(void **state) {
    (void)state;
    collected c;
    uint32_t n;
    /* A head that never reaches its arguments is content, not a stuck parser. */
    char text[2048];
    snprintf(text, sizeof text, "<tool_call>\n%0900d", 0);
    run(text, 16, true, &c, &n);
    assert_int_equal(n, 0);
    assert_string_equal(c.content, text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_any_chunking),
        cmocka_unit_test(test_content),
        cmocka_unit_test(test_cut_short),
        cmocka_unit_test(test_bounds),
    };
    srand(7);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
