/* cm_trace: W3C traceparent parsing (valid, each kind of invalid), tracestate bounds, starting a
 * trace and formatting the next hop's traceparent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cm_trace.h"

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static cm_err parse(const char *s, cm_trace *t) {
    return cm_trace_parse_parent(s, strlen(s), t);
}

static void test_parse_valid(void **state) {
    (void)state;
    cm_trace t = {0};
    assert_int_equal(parse(GOOD, &t), CM_OK);
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.parent_id, "00f067aa0ba902b7");
    assert_int_equal(t.flags, 1);
    /* HTTP optional whitespace around the value. */
    cm_trace u = {0};
    assert_int_equal(parse(" \t" GOOD " ", &u), CM_OK);
    assert_string_equal(u.trace_id, t.trace_id);
    /* A later version may append fields after a '-'; flags other than 01 are kept. */
    assert_int_equal(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz", &u),
                     CM_OK);
    assert_int_equal(u.flags, 0);
}

static void test_parse_invalid(void **state) {
    (void)state;
    static const char *bad[] = {
        "",
        "00",
        GOOD "0",                                                   /* v00 too long */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* too short */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* forbidden version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper-case hex */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent id */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  /* not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",  /* flags not hex */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* v01: no '-' after */
        "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version not hex */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cm_trace t = {0};
        if (parse(bad[i], &t) != CM_ERR_INVALID)
            fail_msg("accepted: '%s'", bad[i]);
        assert_string_equal(t.trace_id, ""); /* unchanged */
    }
}

static void test_tracestate(void **state) {
    (void)state;
    cm_trace t = {0};
    char big[CM_TRACESTATE_MAX + 2];
    const char *ts = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    assert_true(cm_trace_accept_state(ts, strlen(ts), &t));
    assert_string_equal(t.tracestate, ts);
    memset(big, 'a', sizeof big);
    assert_true(cm_trace_accept_state(big, CM_TRACESTATE_MAX, &t));
    assert_int_equal(strlen(t.tracestate), CM_TRACESTATE_MAX);
    assert_false(cm_trace_accept_state(big, CM_TRACESTATE_MAX + 1, &t)); /* too long: dropped */
    assert_string_equal(t.tracestate, "");
    assert_false(cm_trace_accept_state("a=1\r\nx: y", 10, &t)); /* control characters */
    assert_string_equal(t.tracestate, "");
    char many[33 * 4 + 1] = "";
    for (int i = 0; i < 33; i++)
        strcat(many, i ? ",k=v" : "k=v");
    assert_false(cm_trace_accept_state(many, strlen(many), &t)); /* 33 members */
}

static void test_begin_and_format(void **state) {
    (void)state;
    cm_trace t = {0}, u = {0};
    char tp[CM_TRACEPARENT_LEN + 1], tp2[CM_TRACEPARENT_LEN + 1];
    /* Continue the client's trace: same trace id, a new span, flags kept. */
    assert_int_equal(parse(GOOD, &t), CM_OK);
    assert_int_equal(cm_trace_begin(&t), CM_OK);
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_int_equal(strlen(t.span_id), CM_TRACE_SPAN_HEX);
    assert_string_not_equal(t.span_id, t.parent_id);
    assert_int_equal(cm_trace_format(&t, tp, sizeof tp), CM_OK);
    assert_int_equal(strlen(tp), CM_TRACEPARENT_LEN);
    /* What we send parses back to the same trace, with our span as the parent. */
    assert_int_equal(parse(tp, &u), CM_OK);
    assert_string_equal(u.trace_id, t.trace_id);
    assert_string_equal(u.parent_id, t.span_id);
    assert_int_equal(u.flags, 1);
    /* No traceparent: a new trace, sampled, different each time. */
    cm_trace n1 = {0}, n2 = {0};
    assert_int_equal(cm_trace_begin(&n1), CM_OK);
    assert_int_equal(cm_trace_begin(&n2), CM_OK);
    assert_int_equal(strlen(n1.trace_id), CM_TRACE_ID_HEX);
    assert_string_not_equal(n1.trace_id, n2.trace_id);
    assert_string_equal(n1.parent_id, "");
    assert_int_equal(cm_trace_format(&n1, tp2, sizeof tp2), CM_OK);
    assert_int_equal(parse(tp2, &u), CM_OK);
    assert_int_equal(cm_trace_format(&n1, tp2, CM_TRACEPARENT_LEN), CM_ERR_LIMIT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_tracestate),
        cmocka_unit_test(test_begin_and_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
