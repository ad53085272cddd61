/*
 * wk_health_http before a service is attached (the model-loading window): /health is 200,
 * /ready is 503 and says why, /metrics serves the worker's families with the model label.
 * (The running-service paths are covered by worker_process_test.)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_http.h"
#include "health_http.h"

static void test_loading_phase(void **state) {
    (void)state;
    wk_svc_metrics m;
    assert_int_equal(wk_svc_metrics_init(&m, "tiny-model"), CM_OK);
    cm_series_set(m.model_load_seconds, 1.25);
    int port = svc_free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    wk_health_http *h = NULL;
    char err[256];
    assert_int_equal(wk_health_http_start(addr, 1000, &m, &h, err, sizeof err), CM_OK);
    static char body[1 << 18];
    assert_int_equal(svc_http_get(port, "/health", body, sizeof body), 200);
    assert_int_equal(svc_http_get(port, "/ready", body, sizeof body), 503);
    assert_non_null(strstr(body, "loading"));
    wk_health_http_set_phase(h, WK_PHASE_WARMING);
    assert_int_equal(svc_http_get(port, "/ready", body, sizeof body), 503);
    assert_non_null(strstr(body, "warming"));
    /* READY without a running service is still not ready. */
    wk_health_http_set_phase(h, WK_PHASE_READY);
    assert_int_equal(svc_http_get(port, "/ready", body, sizeof body), 503);
    assert_int_equal(svc_http_get(port, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "sluice_worker_model_load_seconds{model=\"tiny-model\"} 1.25"));
    assert_non_null(strstr(body, "# TYPE sluice_worker_time_to_first_token_seconds histogram"));
    assert_non_null(strstr(body, "sluice_worker_requests_total{model=\"tiny-model\","
                                 "finish_reason=\"stop\"} 0"));
    assert_int_equal(svc_http_get(port, "/nope", body, sizeof body), 404);
    wk_health_http_stop(h);
    wk_svc_metrics_fini(&m);
}

static void test_bad_address(void **state) {
    (void)state;
    wk_health_http *h = NULL;
    char err[256] = "";
    assert_int_not_equal(wk_health_http_start("not an address", 1000, NULL, &h, err, sizeof err),
                         CM_OK);
    assert_null(h);
    assert_true(err[0] != '\0');
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loading_phase),
        cmocka_unit_test(test_bad_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
