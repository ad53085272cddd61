/*
 * gw_call's lifecycle, end to end inside one process: a real gateway (gw_server, one loop
 * thread, no auth, no Redis) routes to a fake worker that speaks the worker's side of the
 * protocol on the worker's own transport (wk_transport), and plain HTTP/1.1 clients on
 * sockets. The test plays the worker: it sees each Submit and Cancel and chooses the events.
 *
 * Cases: finish (JSON and SSE), client gone before the first token (JSON and SSE) and after
 * it (JSON and mid-stream SSE), worker Error and Finished{ERROR}, Error{CLOSED} before the
 * first token (one retry elsewhere; none here: 503), deadline. Each one ends with the call
 * freed: the loop thread's call count is back at 0, late events for the request are dropped,
 * and under ASan a double free, a use after free or a leaked call fails the run.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_http.h"

#include "cm_clock.h"
#include "cm_metrics.h"
#include "gw_config.h"
#include "gw_server.h"
#include "transport.h"
#include "wire.h"

#define WAIT_MS 10000
#define MAX_SEEN 64

/*
 * Under LeakSanitizer: the gateway leaves its loop thread's state (uv loop, h2o context,
 * recycled h2o buffers, connections open at exit) to process exit on purpose, like
 * .ci/lsan.supp says for sluice-gateway. Those are suppressed by the functions that allocate
 * them, never by module, so a call that was not freed (allocated in gw_call_start, whose stack
 * passes through libh2o) is still reported.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:gw_server_create\n"
           "leak:on_accept\n"
           "leak:h2o_mem_alloc_recycle\n"
           "leak:h2o_mem_alloc_shared\n"
           "leak:h2o_context_init\n"
           "leak:h2o_filecache_create\n"
           "leak:h2o_multithread_create_queue\n"
           "leak:h2o_vector__expand\n"
           "leak:uv_loop_init\n"
           "leak:libuv.so\n";
}

/* ---- the fake worker ---- */

typedef struct fake_worker {
    wk_transport *t;
    pthread_mutex_t mtx;
    uint32_t conn; /* the gateway's connection; 0 before it opened */
    uint64_t submits[MAX_SEEN];
    int n_submits;
    uint64_t cancels[MAX_SEEN];
    int n_cancels;
} fake_worker;

static void fw_on_open(void *arg, uint32_t conn_id) {
    fake_worker *f = arg;
    wk_wire_hello_info hi = {.model = "m",
                             .backend = "test",
                             .instance_id = "call-test",
                             .max_context_tokens = 2048,
                             .max_batch_tokens = 256,
                             .max_waiting = 64};
    wk_wire_buf b;
    pthread_mutex_lock(&f->mtx);
    f->conn = conn_id;
    pthread_mutex_unlock(&f->mtx);
    if (wk_wire_encode_hello(&hi, &b) == CM_OK) {
        wk_transport_send(f->t, conn_id, b.data, b.len, WK_SEND_FINAL);
        wk_wire_buf_free(&b);
    }
}

static void fw_on_message(void *arg, uint32_t conn_id, const uint8_t *data, size_t len) {
    fake_worker *f = arg;
    (void)conn_id;
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, len, data);
    if (env == NULL)
        return;
    pthread_mutex_lock(&f->mtx);
    if (env->msg_case == SLUICE__ENVELOPE__MSG_SUBMIT && f->n_submits < MAX_SEEN)
        f->submits[f->n_submits++] = env->submit->request_id;
    else if (env->msg_case == SLUICE__ENVELOPE__MSG_CANCEL && f->n_cancels < MAX_SEEN)
        f->cancels[f->n_cancels++] = env->cancel->request_id;
    pthread_mutex_unlock(&f->mtx);
    sluice__envelope__free_unpacked(env, NULL);
}

static void fw_on_close(void *arg, uint32_t conn_id) {
    (void)arg;
    (void)conn_id;
}

static int fw_count(fake_worker *f, const int *field) {
    pthread_mutex_lock(&f->mtx);
    int n = *field;
    pthread_mutex_unlock(&f->mtx);
    return n;
}

/* The wire id of the n-th Submit (0-based), waiting for it. */
static uint64_t wait_submit(fake_worker *f, int n) {
    for (int64_t t0 = cm_clock_mono_ms(); cm_clock_mono_ms() - t0 < WAIT_MS;) {
        if (fw_count(f, &f->n_submits) > n) {
            pthread_mutex_lock(&f->mtx);
            uint64_t id = f->submits[n];
            pthread_mutex_unlock(&f->mtx);
            return id;
        }
        cm_clock_sleep_ms(2);
    }
    fail_msg("no Submit #%d within %d ms", n, WAIT_MS);
    return 0;
}

static bool cancelled(fake_worker *f, uint64_t id) {
    bool seen = false;
    pthread_mutex_lock(&f->mtx);
    for (int i = 0; i < f->n_cancels; i++)
        seen |= f->cancels[i] == id;
    pthread_mutex_unlock(&f->mtx);
    return seen;
}

/* Waits for the gateway's Cancel of id (it travels apart from the HTTP answer). */
static void wait_cancel(fake_worker *f, uint64_t id) {
    for (int64_t t0 = cm_clock_mono_ms(); !cancelled(f, id); cm_clock_sleep_ms(5))
        if (cm_clock_mono_ms() - t0 > WAIT_MS)
            fail_msg("no Cancel for request %llu", (unsigned long long)id);
}

static void send_event(fake_worker *f, const wk_event *ev, uint64_t id) {
    wk_wire_buf b;
    assert_int_equal(wk_wire_encode_event(ev, id, NULL, &b), CM_OK);
    pthread_mutex_lock(&f->mtx);
    uint32_t conn = f->conn;
    pthread_mutex_unlock(&f->mtx);
    assert_int_equal(wk_transport_send(f->t, conn, b.data, b.len, WK_SEND_FINAL), CM_OK);
    wk_wire_buf_free(&b);
}

static void send_tokens(fake_worker *f, uint64_t id, const char *text) {
    int32_t tok = 7;
    wk_event ev = {.kind = WK_EVENT_TOKENS,
                   .token_ids = &tok,
                   .n_tokens = 1,
                   .text = text,
                   .text_len = strlen(text)};
    send_event(f, &ev, id);
}

static void send_finished(fake_worker *f, uint64_t id, wk_finish_reason reason) {
    wk_event ev = {.kind = WK_EVENT_FINISHED,
                   .finish_reason = reason,
                   .usage = {.prompt_tokens = 3, .completion_tokens = 2},
                   .text = "",
                   .text_len = 0};
    send_event(f, &ev, id);
}

static void send_error(fake_worker *f, uint64_t id, cm_err code, const char *msg) {
    wk_event ev = {.kind = WK_EVENT_ERROR, .err = code, .message = msg, .text = ""};
    send_event(f, &ev, id);
}

/* ---- the gateway ---- */

typedef struct fixture {
    fake_worker fw;
    gw_config *cfg;
    gw_server *srv;
    pthread_t run_tid;
    int port;
} fixture;

static void *run_main(void *arg) {
    fixture *x = arg;
    gw_server_run(x->srv);
    return NULL;
}

/* Calls alive: the gateway's in-flight gauge, which moves with the loop thread's call count
 * (up in gw_call_start, down where the call is handed to its last close callback). */
static uint32_t calls_alive(fixture *x) {
    return (uint32_t)cm_series_value(x->srv->metrics.inflight);
}

static void wait_calls_freed(fixture *x) {
    for (int64_t t0 = cm_clock_mono_ms(); cm_clock_mono_ms() - t0 < WAIT_MS;) {
        if (calls_alive(x) == 0)
            return;
        cm_clock_sleep_ms(5);
    }
    fail_msg("%u call(s) still alive after %d ms", calls_alive(x), WAIT_MS);
}

/* ---- HTTP/1.1 by hand ---- */

static int http_send(fixture *x, const char *method, const char *path, const char *body,
                     const char *extra_headers) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)x->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
                     method, path, body != NULL ? strlen(body) : 0,
                     extra_headers != NULL ? extra_headers : "", body != NULL ? body : "");
    assert_true(n > 0 && (size_t)n < sizeof req);
    assert_int_equal(write(fd, req, (size_t)n), n);
    return fd;
}

/* Reads into buf (NUL-terminated) until needle appears (NULL: until EOF); false on timeout. */
static bool http_read(int fd, char *buf, size_t cap, size_t *len, const char *needle) {
    for (int64_t t0 = cm_clock_mono_ms(); cm_clock_mono_ms() - t0 < WAIT_MS;) {
        buf[*len] = '\0';
        if (needle != NULL && strstr(buf, needle) != NULL)
            return true;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t n = read(fd, buf + *len, cap - 1 - *len);
        if (n <= 0) {
            buf[*len] = '\0';
            return needle == NULL || strstr(buf, needle) != NULL;
        }
        *len += (size_t)n;
    }
    return false;
}

static const char *chat_body(bool stream) {
    return stream ? "{\"model\":\"m\",\"max_tokens\":8,\"stream\":true,"
                    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
                  : "{\"model\":\"m\",\"max_tokens\":8,"
                    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
}

static int group_setup(void **state) {
    fixture *x = calloc(1, sizeof *x);
    assert_non_null(x);
    /* As sluice-gateway's main does: a write to a client that left fails with EPIPE. */
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&x->fw.mtx, NULL);
    wk_transport_callbacks cb = {
        .on_open = fw_on_open, .on_message = fw_on_message, .on_close = fw_on_close};
    char err[256];
    assert_int_equal(
        wk_transport_create("tcp://127.0.0.1:0", NULL, &cb, &x->fw, &x->fw.t, err, sizeof err),
        CM_OK);
    x->port = svc_free_port();
    char listen[64], worker[96];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", x->port);
    snprintf(worker, sizeof worker, "m=tcp://127.0.0.1:%d", wk_transport_bound_port(x->fw.t));
    char *argv[] = {"call_test", "--listen", listen,      "--threads", "1",
                    "--worker",  worker,     "--no-auth", NULL};
    cm_err rv = gw_config_load(8, argv, &x->cfg, err, sizeof err);
    if (rv != CM_OK)
        fail_msg("config: %s", err);
    rv = gw_server_create(x->cfg, &x->srv, err, sizeof err);
    if (rv != CM_OK)
        fail_msg("server: %s", err);
    assert_int_equal(pthread_create(&x->run_tid, NULL, run_main, x), 0);
    /* Ready when /v1/models lists the worker's model (dialed, Hello received). */
    bool ready = false;
    for (int64_t t0 = cm_clock_mono_ms(); !ready && cm_clock_mono_ms() - t0 < WAIT_MS;) {
        char buf[4096];
        size_t len = 0;
        int fd = http_send(x, "GET", "/v1/models", NULL, NULL);
        ready = http_read(fd, buf, sizeof buf, &len, NULL) && strstr(buf, "\"id\":\"m\"") != NULL;
        close(fd);
        if (!ready)
            cm_clock_sleep_ms(20);
    }
    assert_true(ready);
    *state = x;
    return 0;
}

static int group_teardown(void **state) {
    fixture *x = *state;
    gw_server_stop(x->srv);
    pthread_join(x->run_tid, NULL);
    gw_server_destroy(x->srv);
    gw_config_free(x->cfg);
    wk_transport_destroy(x->fw.t);
    pthread_mutex_destroy(&x->fw.mtx);
    free(x);
    return 0;
}

/* ---- cases ---- */

static void test_finish_json(void **state) {
    fixture *x = *state;
    int n0 = fw_count(&x->fw, &x->fw.n_submits);
    int fd = http_send(x, "POST", "/v1/chat/completions", chat_body(false), NULL);
    uint64_t id = wait_submit(&x->fw, n0);
    send_tokens(&x->fw, id, "Hello");
    send_tokens(&x->fw, id, " world");
    send_finished(&x->fw, id, WK_FINISH_STOP);
    char buf[8192];
    size_t len = 0;
    assert_true(http_read(fd, buf, sizeof buf, &len, NULL));
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "\"content\":\"Hello world\""));
    assert_non_null(strstr(buf, "\"finish_reason\":\"stop\""));
    wait_calls_freed(x);
    /* A late event for the finished request is dropped. */
    send_tokens(&x->fw, id, "late");
    assert_false(cancelled(&x->fw, id));
}

static void test_finish_stream(void **state) {
    fixture *x = *state;
    int n0 = fw_count(&x->fw, &x->fw.n_submits);
    int fd = http_send(x, "POST", "/v1/chat/completions", chat_body(true), NULL);
    uint64_t id = wait_submit(&x->fw, n0);
    send_tokens(&x->fw, id, "Hel");
    send_tokens(&x->fw, id, "lo");
    send_finished(&x->fw, id, WK_FINISH_LENGTH);
    char buf[16384];
    size_t len = 0;
    assert_true(http_read(fd, buf, sizeof buf, &len, "data: [DONE]"));
    close(fd);
    assert_non_null(strstr(buf, "text/event-stream"));
    assert_non_null(strstr(buf, "\"content\":\"Hel\""));
    assert_non_null(strstr(buf, "\"finish_reason\":\"length\""));
    wait_calls_freed(x);
}

/* The client leaves while its request waits for the worker; started: a token came first. */
static void client_gone_waiting(fixture *x, bool stream, bool started) {
    int n0 = fw_count(&x->fw, &x->fw.n_submits);
    int fd = http_send(x, "POST", "/v1/chat/completions", chat_body(stream), NULL);
    uint64_t id = wait_submit(&x->fw, n0);
    if (started) {
        send_tokens(&x->fw, id, "tok");
        cm_clock_sleep_ms(50); /* taken by the gateway before the client leaves */
    }
    close(fd);
    /* The gateway notices (HTTP/1 peer probe) and tells the worker. */
    wait_cancel(&x->fw, id);
    /* What a worker sends after a Cancel: dropped, the call is already over. */
    send_finished(&x->fw, id, WK_FINISH_CANCELLED);
    wait_calls_freed(x);
}

static void test_gone_before_first_token_json(void **state) {
    client_gone_waiting(*state, false, false);
}

static void test_gone_before_first_token_stream(void **state) {
    client_gone_waiting(*state, true, false);
}

static void test_gone_after_first_token_json(void **state) {
    client_gone_waiting(*state, false, true);
}

/* A streaming client reads its first chunk and leaves: the gateway learns it when a write
 * fails (the worker keeps sending), then cancels at the worker. */
static void test_gone_mid_stream(void **state) {
    fixture *x = *state;
    int n0 = fw_count(&x->fw, &x->fw.n_submits);
    int fd = http_send(x, "POST", "/v1/chat/completions", chat_body(true), NULL);
    uint64_t id = wait_submit(&x->fw, n0);
    send_tokens(&x->fw, id, "first");
    char buf[16384];
    size_t len = 0;
    assert_true(http_read(fd, buf, sizeof buf, &len, "\"content\":\"first\""));
    close(fd);
    int sent = 0;
    for (int64_t t0 = cm_clock_mono_ms(); !cancelled(&x->fw, id);) {
        if (cm_clock_mono_ms() - t0 > WAIT_MS)
            fail_msg("no Cancel for request %llu after %d more tokens", (unsigned long long)id,
                     sent);
        send_tokens(&x->fw, id, "more");
        sent++;
        cm_clock_sleep_ms(10);
    }
    send_finished(&x->fw, id, WK_FINISH_CANCELLED);
    wait_calls_freed(x);
}

static void test_worker_error(void **state) {
    fixture *x = *state;
    int n0 = fw_count(&x->fw, &x->fw.n_submits);
    int fd = http_send(x, "POST", "/v1/chat/completions", chat_body(false), NULL);
    uint64_t id = wait_submit(&x->fw, n0);
    send_error(&x->fw, id, CM_ERR_INVALID, "the prompt is not what I expected");
    char buf[8192];
    size_t len = 0;
    assert_true(http_read(fd, buf, sizeof buf, &len, NULL));
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 400"));
    assert_non_null(strstr(buf, "the prompt is not what I expected"));
    wait_calls_freed(x);
    assert_false(cancelled(&x->fw, id)); /* the worker ended it itself */

    /* Mid-stream: Finished{ERROR} after a token ends the SSE stream with an error event. */
    n0 = fw_count(&x->fw, &x->fw.n_submits);
    fd = http_send(x, "POST", "/v1/chat/completions", chat_body(true), NULL);
    id = wait_submit(&x->fw, n0);
    send_tokens(&x->fw, id, "part");
    send_finished(&x->fw, id, WK_FINISH_ERROR);
    len = 0;
    assert_true(http_read(fd, buf, sizeof buf, &len, NULL));
    close(fd);
    assert_non_null(strstr(buf, "\"content\":\"part\""));
    assert_non_null(strstr(buf, "worker_error"));
    wait_calls_freed(x);
}

/* Error{CLOSED} (draining) before the first token: one retry on another worker; with none
 * left, 503. The retry must not leak or double-free the call. */
static void test_closed_before_first_token(void **state) {
    fixture *x = *state;
    int n0 = fw_count(&x->fw, &x->fw.n_submits);
    int fd = http_send(x, "POST", "/v1/chat/completions", chat_body(false), NULL);
    uint64_t id = wait_submit(&x->fw, n0);
    send_error(&x->fw, id, CM_ERR_CLOSED, "draining");
    char buf[8192];
    size_t len = 0;
    assert_true(http_read(fd, buf, sizeof buf, &len, NULL));
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 503"));
    wait_calls_freed(x);
}

/* The deadline passes while the worker is silent: 504, and the worker is told to stop. */
static void test_deadline(void **state) {
    fixture *x = *state;
    int n0 = fw_count(&x->fw, &x->fw.n_submits);
    int fd = http_send(x, "POST", "/v1/chat/completions", chat_body(false),
                       "x-sluice-timeout-ms: 300\r\n");
    uint64_t id = wait_submit(&x->fw, n0);
    char buf[8192];
    size_t len = 0;
    assert_true(http_read(fd, buf, sizeof buf, &len, NULL));
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 504"));
    wait_cancel(&x->fw, id);
    send_finished(&x->fw, id, WK_FINISH_CANCELLED);
    wait_calls_freed(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finish_json),
        cmocka_unit_test(test_finish_stream),
        cmocka_unit_test(test_gone_before_first_token_json),
        cmocka_unit_test(test_gone_before_first_token_stream),
        cmocka_unit_test(test_gone_after_first_token_json),
        cmocka_unit_test(test_gone_mid_stream),
        cmocka_unit_test(test_worker_error),
        cmocka_unit_test(test_closed_before_first_token),
        cmocka_unit_test(test_deadline),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
