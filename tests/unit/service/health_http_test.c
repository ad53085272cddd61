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

#include "health_http.h"

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static int get(int port, const char *path, char *body, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    char req[128];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    static char buf[1 << 18];
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = '\0';
    int status = -1;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    const char *b = strstr(buf, "\r\n\r\n");
    snprintf(body, cap, "%s", b != NULL ? b + 4 : "");
    return status;
}

static void test_loading_phase(void **state) {
    (void)state;
    wk_svc_metrics m;
    assert_int_equal(wk_svc_metrics_init(&m, "tiny-model"), CM_OK);
    cm_series_set(m.model_load_seconds, 1.25);
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    wk_health_http *h = NULL;
    char err[256];
    assert_int_equal(wk_health_http_start(addr, 1000, &m, &h, err, sizeof err), CM_OK);
    static char body[1 << 18];
    assert_int_equal(get(port, "/health", body, sizeof body), 200);
    assert_int_equal(get(port, "/ready", body, sizeof body), 503);
    assert_non_null(strstr(body, "loading"));
    wk_health_http_set_phase(h, WK_PHASE_WARMING);
    assert_int_equal(get(port, "/ready", body, sizeof body), 503);
    assert_non_null(strstr(body, "warming"));
    /* READY without a running service is still not ready. */
    wk_health_http_set_phase(h, WK_PHASE_READY);
    assert_int_equal(get(port, "/ready", body, sizeof body), 503);
    assert_int_equal(get(port, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "sluice_worker_model_load_seconds{model=\"tiny-model\"} 1.25"));
    assert_non_null(strstr(body, "# TYPE sluice_worker_time_to_first_token_seconds histogram"));
    assert_non_null(strstr(body, "sluice_worker_requests_total{model=\"tiny-model\","
                                 "finish_reason=\"stop\"} 0"));
    assert_int_equal(get(port, "/nope", body, sizeof body), 404);
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
