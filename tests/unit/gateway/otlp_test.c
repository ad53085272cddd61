/* gw_otlp: the OTLP/JSON encoding of spans, endpoint validation, and that every span is either
 * exported or counted as dropped (a dead collector, a full queue). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm_clock.h"
#include "gw_otlp.h"

static gw_span make_span(const char *parent, int status) {
    gw_span sp;
    memset(&sp, 0, sizeof sp);
    strcpy(sp.trace_id, "0af7651916cd43dd8448eb211c80319c");
    strcpy(sp.span_id, "b7ad6b7169203331");
    strcpy(sp.parent_id, parent);
    strcpy(sp.name, "POST /v1/chat/completions");
    sp.kind = GW_SPAN_SERVER;
    sp.start_unix_ns = 1764000000000000000;
    sp.end_unix_ns = 1764000000123456789;
    sp.http_status = status;
    strcpy(sp.route, "/v1/chat/completions");
    strcpy(sp.model, "m\"1"); /* escaped in JSON */
    return sp;
}

static void test_encode(void **state) {
    (void)state;
    gw_span spans[2] = {make_span("00f067aa0ba902b7", 200), make_span("", 503)};
    char *body = gw_otlp_encode("sluice-gateway", spans, 2);
    json_error_t jerr;
    json_t *root, *rs, *ss, *s0, *s1;
    assert_non_null(body);
    root = json_loads(body, 0, &jerr);
    assert_non_null(root);
    rs = json_array_get(json_object_get(root, "resourceSpans"), 0);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(
                json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0),
                "value"),
            "stringValue")),
        "sluice-gateway");
    ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    s0 = json_array_get(json_object_get(ss, "spans"), 0);
    s1 = json_array_get(json_object_get(ss, "spans"), 1);
    assert_string_equal(json_string_value(json_object_get(s0, "traceId")),
                        "0af7651916cd43dd8448eb211c80319c");
    assert_string_equal(json_string_value(json_object_get(s0, "parentSpanId")), "00f067aa0ba902b7");
    assert_int_equal(json_integer_value(json_object_get(s0, "kind")), 2);
    /* 64-bit times as decimal strings (OTLP/JSON), exact. */
    assert_string_equal(json_string_value(json_object_get(s0, "endTimeUnixNano")),
                        "1764000000123456789");
    assert_null(json_object_get(s0, "status"));
    assert_null(json_object_get(s1, "parentSpanId")); /* root span */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s1, "status"), "code")), 2);
    assert_non_null(strstr(body, "\"m\\\"1\""));
    json_decref(root);
    free(body);
}

static void test_endpoints(void **state) {
    (void)state;
    static const char *good[] = {"http://127.0.0.1:4318", "http://collector", "http://c:1/otlp/",
                                 "http://c:4318/v1/traces"};
    static const char *bad[] = {"https://c:4318", "http://",    "http://:80", "http://c:0",
                                "http://c:65536", "http://c:x", "c:4318",     ""};
    char err[256];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        gw_otlp *x = NULL;
        assert_int_equal(gw_otlp_create(good[i], "t", &x, err, sizeof err), CM_OK);
        gw_otlp_destroy(x);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gw_otlp *x = (gw_otlp *)1;
        if (gw_otlp_create(bad[i], "t", &x, err, sizeof err) != CM_ERR_CONFIG)
            fail_msg("accepted: '%s'", bad[i]);
        assert_null(x);
        assert_non_null(strstr(err, "otlp endpoint"));
    }
}

static void test_every_span_accounted_for(void **state) {
    (void)state;
    char err[256];
    gw_otlp *x = NULL;
    gw_span sp = make_span("", 200);
    const uint64_t n = GW_OTLP_QUEUE + 100;
    /* Port 1 on loopback: nothing listens, every POST fails at once. */
    assert_int_equal(gw_otlp_create("http://127.0.0.1:1", "t", &x, err, sizeof err), CM_OK);
    for (uint64_t i = 0; i < n; i++)
        gw_otlp_emit(x, &sp);
    int64_t deadline = cm_clock_mono_ms() + 30000;
    while (gw_otlp_dropped(x) < n && cm_clock_mono_ms() < deadline)
        usleep(10000);
    assert_int_equal(gw_otlp_dropped(x), n);
    gw_otlp_destroy(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_every_span_accounted_for),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
