/*
 * wk_transport against real nng pair1 peers over tcp:// and ipc://: handshake, ordered and
 * lossless delivery in both directions (nng's polyamorous pair1 drops under load; this must
 * not), per-connection isolation, the inbound size bound, non-SP peers, and the send-queue
 * bound when a peer stops reading.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/util/platform.h>

#include "transport.h"

#define MAX_CONNS 8

typedef struct rec {
    pthread_mutex_t mtx;
    uint32_t opened[MAX_CONNS];
    int n_opened;
    int n_closed;
    int n_messages;
    uint32_t last_conn;
    uint32_t next_seq; /* messages carry a 4-byte sequence number */
    bool out_of_order;
    size_t last_len;
} rec;

static void on_open(void *arg, uint32_t id) {
    rec *r = arg;
    pthread_mutex_lock(&r->mtx);
    if (r->n_opened < MAX_CONNS)
        r->opened[r->n_opened] = id;
    r->n_opened++;
    pthread_mutex_unlock(&r->mtx);
}

static void on_close(void *arg, uint32_t id) {
    (void)id;
    rec *r = arg;
    pthread_mutex_lock(&r->mtx);
    r->n_closed++;
    pthread_mutex_unlock(&r->mtx);
}

static void on_message(void *arg, uint32_t id, const uint8_t *data, size_t len) {
    rec *r = arg;
    pthread_mutex_lock(&r->mtx);
    r->last_conn = id;
    r->last_len = len;
    if (len >= 4) {
        uint32_t seq;
        memcpy(&seq, data, 4);
        if (seq != r->next_seq)
            r->out_of_order = true;
        r->next_seq = seq + 1;
    }
    r->n_messages++;
    pthread_mutex_unlock(&r->mtx);
}

static int get(rec *r, int *field) {
    pthread_mutex_lock(&r->mtx);
    int v = *field;
    pthread_mutex_unlock(&r->mtx);
    return v;
}

static bool wait_for(rec *r, int *field, int want, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        if (get(r, field) >= want)
            return true;
        nng_msleep(10);
    }
    return get(r, field) >= want;
}

static wk_transport *start(rec *r, const char *url, const wk_transport_config *cfg) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mtx, NULL);
    wk_transport_callbacks cb = {
        .on_open = on_open, .on_message = on_message, .on_close = on_close};
    wk_transport *t = NULL;
    char err[256];
    cm_err rv = wk_transport_create(url, cfg, &cb, r, &t, err, sizeof err);
    if (rv != CM_OK)
        fprintf(stderr, "create: %s\n", err);
    assert_int_equal(rv, CM_OK);
    return t;
}

static void dial(nng_socket *s, const char *url) {
    assert_int_equal(nng_pair1_open(s), 0);
    assert_int_equal(nng_dial(*s, url, NULL, 0), 0);
}

static void tcp_url(wk_transport *t, char *out, size_t cap) {
    snprintf(out, cap, "tcp://127.0.0.1:%d", wk_transport_bound_port(t));
}

/* Many messages both ways, in order, none lost, over tcp and ipc. */
static void roundtrip(const char *listen_url, bool ipc) {
    rec r;
    wk_transport *t = start(&r, listen_url, NULL);
    char url[128];
    if (ipc)
        snprintf(url, sizeof url, "%s", listen_url);
    else
        tcp_url(t, url, sizeof url);
    nng_socket s;
    dial(&s, url);
    assert_true(wait_for(&r, &r.n_opened, 1, 5000));
    uint32_t id = r.opened[0];

    /* client -> worker */
    const int n = 2000;
    uint8_t msg[300];
    memset(msg, 0xab, sizeof msg);
    for (int i = 0; i < n; i++) {
        uint32_t seq = (uint32_t)i;
        memcpy(msg, &seq, 4);
        assert_int_equal(nng_send(s, msg, sizeof msg, 0), 0);
    }
    assert_true(wait_for(&r, &r.n_messages, n, 10000));
    assert_false(r.out_of_order);
    assert_int_equal(r.last_len, sizeof msg);
    assert_int_equal(r.last_conn, id);

    /* worker -> client: bursts of 200 10 KB messages queued in a tight loop, then read
     * (nng's polyamorous pair1 loses most of such a burst). */
    static uint8_t big[10240];
    nng_setopt_ms(s, NNG_OPT_RECVTIMEO, 5000);
    for (int burst = 0; burst < n / 200; burst++) {
        for (int i = burst * 200; i < (burst + 1) * 200; i++) {
            uint32_t seq = (uint32_t)i;
            memcpy(big, &seq, 4);
            assert_int_equal(wk_transport_send(t, id, big, sizeof big, WK_SEND_NORMAL), CM_OK);
        }
        for (int i = burst * 200; i < (burst + 1) * 200; i++) {
            void *buf = NULL;
            size_t len = 0;
            assert_int_equal(nng_recv(s, &buf, &len, NNG_FLAG_ALLOC), 0);
            assert_int_equal(len, sizeof big);
            uint32_t seq;
            memcpy(&seq, buf, 4);
            assert_int_equal(seq, (uint32_t)i);
            nng_free(buf, len);
        }
    }
    assert_true(wk_transport_flush(t, 1000));
    wk_transport_stats st;
    wk_transport_get_stats(t, &st);
    assert_int_equal(st.connections, 1);
    assert_true(st.messages_in_total >= (uint64_t)n);

    nng_close(s);
    assert_true(wait_for(&r, &r.n_closed, 1, 5000));
    assert_int_equal(wk_transport_send(t, id, "x", 1, WK_SEND_NORMAL), CM_ERR_NOT_FOUND);
    wk_transport_destroy(t);
}

static void test_roundtrip_tcp(void **state) {
    (void)state;
    roundtrip("tcp://127.0.0.1:0", false);
}

static void test_roundtrip_ipc(void **state) {
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "ipc:///tmp/sluice-transport-test-%d.ipc", (int)getpid());
    roundtrip(url, true);
    unlink(url + 6);
}

/* Two peers: each message goes only to the connection it is addressed to. */
static void test_two_peers_isolated(void **state) {
    (void)state;
    rec r;
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", NULL);
    char url[128];
    tcp_url(t, url, sizeof url);
    nng_socket a, b;
    dial(&a, url);
    assert_true(wait_for(&r, &r.n_opened, 1, 5000));
    dial(&b, url);
    assert_true(wait_for(&r, &r.n_opened, 2, 5000));
    assert_int_not_equal(r.opened[0], r.opened[1]);
    assert_int_equal(wk_transport_send(t, r.opened[0], "to-a", 4, WK_SEND_NORMAL), CM_OK);
    assert_int_equal(wk_transport_send(t, r.opened[1], "to-b", 4, WK_SEND_NORMAL), CM_OK);
    nng_setopt_ms(a, NNG_OPT_RECVTIMEO, 3000);
    nng_setopt_ms(b, NNG_OPT_RECVTIMEO, 3000);
    char buf[16];
    size_t len = sizeof buf;
    assert_int_equal(nng_recv(a, buf, &len, 0), 0);
    assert_memory_equal(buf, "to-a", 4);
    len = sizeof buf;
    assert_int_equal(nng_recv(b, buf, &len, 0), 0);
    assert_memory_equal(buf, "to-b", 4);
    /* Nothing else for either. */
    nng_setopt_ms(a, NNG_OPT_RECVTIMEO, 200);
    len = sizeof buf;
    assert_int_equal(nng_recv(a, buf, &len, 0), NNG_ETIMEDOUT);
    assert_int_equal(wk_transport_broadcast(t, "all", 3, WK_SEND_DROPPABLE), 2);
    nng_setopt_ms(a, NNG_OPT_RECVTIMEO, 3000);
    len = sizeof buf;
    assert_int_equal(nng_recv(a, buf, &len, 0), 0);
    assert_memory_equal(buf, "all", 3);
    len = sizeof buf;
    assert_int_equal(nng_recv(b, buf, &len, 0), 0);
    assert_memory_equal(buf, "all", 3);
    nng_close(a);
    nng_close(b);
    assert_true(wait_for(&r, &r.n_closed, 2, 5000));
    wk_transport_destroy(t);
}

/* An inbound frame over the bound closes that connection; others keep working. */
static void test_oversize_closes(void **state) {
    (void)state;
    rec r;
    wk_transport_config cfg;
    wk_transport_config_defaults(&cfg);
    cfg.max_message_bytes = 4096;
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", &cfg);
    char url[128];
    tcp_url(t, url, sizeof url);
    nng_socket s;
    dial(&s, url);
    assert_true(wait_for(&r, &r.n_opened, 1, 5000));
    static uint8_t big[8192];
    assert_int_equal(nng_send(s, big, sizeof big, 0), 0);
    assert_true(wait_for(&r, &r.n_closed, 1, 5000));
    wk_transport_stats st;
    wk_transport_get_stats(t, &st);
    assert_int_equal(st.oversize_total, 1);
    assert_int_equal(r.n_messages, 0);
    nng_close(s);
    wk_transport_destroy(t);
}

/* A peer that is not SP pair1 (raw bytes, or another SP protocol) is refused. */
static void test_non_pair1_refused(void **state) {
    (void)state;
    rec r;
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)wk_transport_bound_port(t)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    /* SP handshake for req0 (0x30) instead of pair1 (0x11). */
    const uint8_t hs[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};
    assert_int_equal(write(fd, hs, 8), 8);
    uint8_t buf[64];
    bool closed = false;
    for (int i = 0; i < 50 && !closed; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0 && read(fd, buf, sizeof buf) <= 0)
            closed = true;
    }
    close(fd);
    assert_true(closed);
    assert_int_equal(r.n_opened, 0);
    wk_transport_stats st;
    wk_transport_get_stats(t, &st);
    assert_true(st.rejected_total >= 1);
    wk_transport_destroy(t);
}

/* Connects a raw TCP peer that performs the SP pair1 handshake and then never reads. */
static int raw_pair1_peer(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const uint8_t hs[8] = {0, 'S', 'P', 0, 0, 0x11, 0, 0};
    assert_int_equal(write(fd, hs, 8), 8);
    return fd;
}

/* A peer that stops reading: the queue bound refuses NORMAL sends, still admits FINAL ones
 * for a while, and DROPPABLE ones stop first. */
static void test_send_queue_bound(void **state) {
    (void)state;
    rec r;
    wk_transport_config cfg;
    wk_transport_config_defaults(&cfg);
    cfg.send_queue_messages = 16;
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", &cfg);
    int fd = raw_pair1_peer(wk_transport_bound_port(t));
    assert_true(wait_for(&r, &r.n_opened, 1, 5000));
    uint32_t id = r.opened[0];
    static uint8_t big[256 * 1024];
    int accepted = 0;
    cm_err rv = CM_OK;
    for (int i = 0; i < 2000 && rv == CM_OK; i++) {
        rv = wk_transport_send(t, id, big, sizeof big, WK_SEND_NORMAL);
        if (rv == CM_OK)
            accepted++;
    }
    assert_int_equal(rv, CM_ERR_OVERLOADED);
    assert_true(accepted >= 16);
    assert_int_equal(wk_transport_send(t, id, "x", 1, WK_SEND_DROPPABLE), CM_ERR_OVERLOADED);
    assert_int_equal(wk_transport_send(t, id, "x", 1, WK_SEND_FINAL), CM_OK);
    wk_transport_stats st;
    wk_transport_get_stats(t, &st);
    assert_true(st.send_refused_total >= 2);
    assert_true(st.queued_messages <= 2 * 16 + 1);
    close(fd);
    assert_true(wait_for(&r, &r.n_closed, 1, 5000));
    wk_transport_destroy(t);
}

/* The connection bound: extra peers are closed at accept. */
static void test_max_connections(void **state) {
    (void)state;
    rec r;
    wk_transport_config cfg;
    wk_transport_config_defaults(&cfg);
    cfg.max_connections = 1;
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", &cfg);
    char url[128];
    tcp_url(t, url, sizeof url);
    nng_socket a, b;
    dial(&a, url);
    assert_true(wait_for(&r, &r.n_opened, 1, 5000));
    assert_int_equal(nng_pair1_open(&b), 0);
    nng_dial(b, url, NULL, NNG_FLAG_NONBLOCK);
    nng_msleep(500);
    assert_int_equal(get(&r, &r.n_opened), 1);
    wk_transport_stats st;
    wk_transport_get_stats(t, &st);
    assert_true(st.rejected_total >= 1);
    nng_close(a);
    nng_close(b);
    wk_transport_destroy(t);
}

static void test_bad_url(void **state) {
    (void)state;
    wk_transport_callbacks cb = {0};
    wk_transport *t = NULL;
    char err[256];
    assert_int_equal(wk_transport_create("http://x:1", NULL, &cb, NULL, &t, err, sizeof err),
                     CM_ERR_CONFIG);
    assert_null(t);
    assert_non_null(strstr(err, "tcp://"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_tcp),      cmocka_unit_test(test_roundtrip_ipc),
        cmocka_unit_test(test_two_peers_isolated), cmocka_unit_test(test_oversize_closes),
        cmocka_unit_test(test_non_pair1_refused),  cmocka_unit_test(test_send_queue_bound),
        cmocka_unit_test(test_max_connections),    cmocka_unit_test(test_bad_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
