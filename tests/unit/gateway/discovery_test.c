/* gw_discovery_parse: registry values from workers, and what is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw_discovery.h"
#include "gw_worker.h"

static cm_err parse(const char *json, char *model, char *addr, int *draining) {
    return gw_discovery_parse(json, strlen(json), model, addr, draining);
}

static void test_parse(void **state) {
    char model[GW_NAME_MAX], addr[GW_ADDR_MAX];
    int draining = -1;
    char big[10000];
    (void)state;
    assert_int_equal(parse("{\"instance_id\":\"h:1:2\",\"model\":\"m\",\"address\":\"tcp://a:1\","
                           "\"capacity\":4,\"waiting\":0,\"running\":1,\"kv_free_ratio\":0.5,"
                           "\"draining\":false,\"protocol_version\":1}",
                           model, addr, &draining),
                     CM_OK);
    assert_string_equal(model, "m");
    assert_string_equal(addr, "tcp://a:1");
    assert_int_equal(draining, 0);
    assert_int_equal(parse("{\"model\":\"m\",\"address\":\"tcp://a:1\",\"draining\":true}", model,
                           addr, &draining),
                     CM_OK);
    assert_int_equal(draining, 1);
    /* Other protocol versions, missing fields, wrong types, garbage, oversize: refused. */
    assert_int_equal(
        parse("{\"model\":\"m\",\"address\":\"a\",\"protocol_version\":2}", model, addr, &draining),
        CM_ERR_FORMAT);
    assert_int_equal(parse("{\"model\":\"m\"}", model, addr, &draining), CM_ERR_FORMAT);
    assert_int_equal(parse("{\"model\":5,\"address\":\"a\"}", model, addr, &draining),
                     CM_ERR_FORMAT);
    assert_int_equal(parse("{\"model\":\"\",\"address\":\"a\"}", model, addr, &draining),
                     CM_ERR_FORMAT);
    assert_int_equal(parse("not json", model, addr, &draining), CM_ERR_FORMAT);
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "{\"model\":\"m\",\"address\":\"a\"}", 27);
    assert_int_equal(parse(big, model, addr, &draining), CM_ERR_FORMAT);
}

/* Absent from a registry scan: only a worker that is not connected or not answering goes. */
static void test_keep_unlisted(void **state) {
    gw_worker w;
    int64_t now = 1000000;
    (void)state;
    memset(&w, 0, sizeof w);
    atomic_store(&w.connected, 1);
    atomic_store(&w.hello_ok, 1);
    atomic_store(&w.last_rx_ms, now - 250);
    assert_true(gw_discovery_keep_unlisted(&w, now));
    atomic_store(&w.draining, 1); /* finishing its streams: kept until its pipe closes */
    assert_true(gw_discovery_keep_unlisted(&w, now));
    atomic_store(&w.last_rx_ms, now - GW_WORKER_SILENT_MS); /* silent: not answering */
    assert_false(gw_discovery_keep_unlisted(&w, now));
    atomic_store(&w.last_rx_ms, now - 250);
    atomic_store(&w.connected, 0); /* connection failed */
    assert_false(gw_discovery_keep_unlisted(&w, now));
    atomic_store(&w.connected, 1);
    atomic_store(&w.hello_ok, 0); /* connected, never greeted (or incompatible) */
    assert_false(gw_discovery_keep_unlisted(&w, now));
    atomic_store(&w.last_rx_ms, 0);
    assert_false(gw_discovery_keep_unlisted(&w, now));
    w.is_static = 1; /* configured workers never leave */
    assert_true(gw_discovery_keep_unlisted(&w, now));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse),
                                       cmocka_unit_test(test_keep_unlisted)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
