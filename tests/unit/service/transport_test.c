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
#include <signal.h>
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

/* The connection bound: when every slot holds a peer that has spoken, extra peers are closed
 * at accept. */
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
    assert_int_equal(nng_send(a, "hello", 5, 0), 0); /* a gateway says Hello at once */
    assert_true(wait_for(&r, &r.n_messages, 1, 5000));
    assert_int_equal(nng_pair1_open(&b), 0);
    nng_dial(b, url, NULL, NNG_FLAG_NONBLOCK);
    nng_msleep(500);
    assert_int_equal(get(&r, &r.n_opened), 1);
    wk_transport_stats st;
    wk_transport_get_stats(t, &st);
    assert_true(st.rejected_total >= 1);
    assert_int_equal(st.evicted_total, 0);
    nng_close(a);
    nng_close(b);
    wk_transport_destroy(t);
}

/* ---- silent and stuck peers, the partial-frame budget ---- */

static int raw_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Writes a pair1 frame header announcing len payload bytes (hop count included). */
static void raw_frame_header(int fd, size_t len) {
    uint8_t h[12];
    uint64_t n = len + 4;
    for (int i = 7; i >= 0; i--) {
        h[i] = (uint8_t)(n & 0xff);
        n >>= 8;
    }
    h[8] = h[9] = h[10] = 0;
    h[11] = 1;
    assert_int_equal(write(fd, h, sizeof h), (ssize_t)sizeof h);
}

static void raw_write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return; /* the worker closed it: the caller checks for that */
        p += w;
        n -= (size_t)w;
    }
}

/* true when the worker closed fd within timeout_ms (whatever it sent first is drained). */
static bool raw_closed_within(int fd, int timeout_ms) {
    uint8_t buf[4096];
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        while (poll(&p, 1, 0) > 0) {
            if (read(fd, buf, sizeof buf) <= 0)
                return true;
        }
        nng_msleep(10);
    }
    return false;
}

static wk_transport_stats stats_of(wk_transport *t) {
    wk_transport_stats st;
    wk_transport_get_stats(t, &st);
    return st;
}

/* A full table of silent peers does not lock a gateway out: the new connection evicts the
 * oldest silent one, and the others stay until their own deadline. */
static void test_silent_evicted_for_new_gateway(void **state) {
    (void)state;
    rec r;
    wk_transport_config cfg;
    wk_transport_config_defaults(&cfg);
    cfg.max_connections = 3;
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", &cfg);
    int port = wk_transport_bound_port(t);
    int silent[3];
    silent[0] = raw_connect(port); /* not even the SP handshake */
    for (int i = 1; i < 3; i++)
        silent[i] = raw_pair1_peer(port); /* handshake, then nothing */
    assert_true(wait_for(&r, &r.n_opened, 2, 5000));
    assert_int_equal(stats_of(t).silent, 3);

    char url[128];
    tcp_url(t, url, sizeof url);
    nng_socket g;
    dial(&g, url);
    assert_true(wait_for(&r, &r.n_opened, 3, 5000));
    assert_int_equal(nng_send(g, "hello", 5, 0), 0);
    assert_true(wait_for(&r, &r.n_messages, 1, 5000));
    assert_true(raw_closed_within(silent[0], 2000)); /* the oldest went */
    assert_false(raw_closed_within(silent[1], 200));
    assert_false(raw_closed_within(silent[2], 0));
    wk_transport_stats st = stats_of(t);
    assert_int_equal(st.evicted_total, 1);
    assert_int_equal(st.rejected_total, 0);
    assert_int_equal(st.silent, 2);

    /* Another gateway evicts the next oldest; the spoken one is never a victim. */
    nng_socket g2;
    dial(&g2, url);
    assert_true(wait_for(&r, &r.n_opened, 4, 5000));
    assert_true(raw_closed_within(silent[1], 2000));
    assert_int_equal(stats_of(t).evicted_total, 2);
    assert_int_equal(nng_send(g, "again", 5, 0), 0);
    assert_true(wait_for(&r, &r.n_messages, 2, 5000));
    for (int i = 0; i < 3; i++)
        close(silent[i]);
    nng_close(g);
    nng_close(g2);
    wk_transport_destroy(t);
}

/* Silent peers (stopped before or after the SP handshake) are closed at handshake_timeout_ms
 * after accept; a peer that spoke may stay idle past it. */
static void test_silent_timeout(void **state) {
    (void)state;
    rec r;
    wk_transport_config cfg;
    wk_transport_config_defaults(&cfg);
    cfg.handshake_timeout_ms = 400;
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", &cfg);
    int port = wk_transport_bound_port(t);
    char url[128];
    tcp_url(t, url, sizeof url);
    nng_socket g;
    dial(&g, url);
    assert_true(wait_for(&r, &r.n_opened, 1, 5000));
    assert_int_equal(nng_send(g, "hello", 5, 0), 0);
    assert_true(wait_for(&r, &r.n_messages, 1, 5000));

    int before_hs = raw_connect(port);
    int after_hs = raw_pair1_peer(port);
    /* Trickling the handshake does not restart the clock. */
    int trickle = raw_connect(port);
    const uint8_t hs[8] = {0, 'S', 'P', 0, 0, 0x11, 0, 0};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(write(trickle, hs + i, 1), 1);
        nng_msleep(100);
    }
    assert_true(raw_closed_within(before_hs, 5000));
    assert_true(raw_closed_within(after_hs, 5000));
    assert_true(raw_closed_within(trickle, 5000));
    wk_transport_stats st = stats_of(t);
    assert_int_equal(st.silent_closed_total, 3);
    assert_int_equal(st.silent, 0);
    /* The gateway, idle for several bounds now, is still connected and served. */
    nng_msleep(500);
    assert_int_equal(get(&r, &r.n_closed), 1); /* only the one silent peer that had opened */
    assert_int_equal(nng_send(g, "still", 5, 0), 0);
    assert_true(wait_for(&r, &r.n_messages, 2, 5000));
    assert_int_equal(wk_transport_send(t, r.opened[0], "ok", 2, WK_SEND_NORMAL), CM_OK);
    assert_int_equal(nng_socket_set_ms(g, NNG_OPT_RECVTIMEO, 5000), 0);
    char buf[8];
    size_t len = sizeof buf;
    assert_int_equal(nng_recv(g, buf, &len, 0), 0);
    assert_int_equal(len, 2);
    close(before_hs);
    close(after_hs);
    close(trickle);
    nng_close(g);
    wk_transport_destroy(t);
}

/* A frame begun but not finished within frame_timeout_ms closes the connection, and a peer
 * that stops taking what the worker sends is closed after send_stall_timeout_ms. */
static void test_frame_and_send_stall(void **state) {
    (void)state;
    rec r;
    wk_transport_config cfg;
    wk_transport_config_defaults(&cfg);
    cfg.frame_timeout_ms = 300;
    cfg.send_stall_timeout_ms = 300;
    cfg.send_queue_bytes = 64u << 20;
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", &cfg);
    int port = wk_transport_bound_port(t);

    int half = raw_pair1_peer(port);
    assert_true(wait_for(&r, &r.n_opened, 1, 5000));
    raw_frame_header(half, 1000);
    uint8_t some[100] = {0};
    raw_write_all(half, some, sizeof some);
    assert_true(raw_closed_within(half, 5000));
    assert_int_equal(stats_of(t).stalled_closed_total, 1);

    int deaf = raw_pair1_peer(port); /* speaks, then never reads */
    raw_frame_header(deaf, 5);
    raw_write_all(deaf, (const uint8_t *)"hello", 5);
    assert_true(wait_for(&r, &r.n_messages, 1, 5000));
    assert_true(wait_for(&r, &r.n_opened, 2, 5000));
    uint32_t id = r.opened[1];
    static uint8_t big[1u << 20];
    /* More than the kernel's socket buffers take: the send stalls. */
    for (int i = 0; i < 48; i++) {
        cm_err rv = wk_transport_send(t, id, big, sizeof big, WK_SEND_NORMAL);
        if (rv == CM_ERR_NOT_FOUND)
            break; /* already closed for the stall (a loaded machine is slow to queue) */
        assert_int_equal(rv, CM_OK);
    }
    assert_true(wait_for(&r, &r.n_closed, 2, 5000));
    assert_int_equal(stats_of(t).stalled_closed_total, 2);
    close(half);
    close(deaf);
    wk_transport_destroy(t);
}

/* Partial frames are bounded across connections: announcing a length reserves nothing, bytes
 * that arrive are charged, and a connection that would pass the budget is closed. */
static void test_partial_frame_budget(void **state) {
    (void)state;
    rec r;
    wk_transport_config cfg;
    wk_transport_config_defaults(&cfg);
    cfg.max_message_bytes = 1u << 20;
    cfg.max_partial_frame_bytes = (2u << 20) + (512u << 10); /* 2.5 MiB */
    wk_transport *t = start(&r, "tcp://127.0.0.1:0", &cfg);
    int port = wk_transport_bound_port(t);
    enum { N = 6 };
    int fd[N];
    /* Announcements alone: at most the first 64 KiB buffer each. */
    for (int i = 0; i < N; i++) {
        fd[i] = raw_pair1_peer(port);
        raw_frame_header(fd[i], 1u << 20);
    }
    nng_msleep(200);
    wk_transport_stats st = stats_of(t);
    assert_true(st.partial_frame_bytes <= (size_t)N * (64u << 10));
    assert_int_equal(st.budget_refused_total, 0);

    /* Each sends 900 KiB of its 1 MiB: a buffer doubles to the whole 1 MiB on the way, so two
     * fit in the 2.5 MiB budget and the others are closed. */
    static uint8_t chunk[900u << 10];
    for (int i = 0; i < N; i++)
        raw_write_all(fd[i], chunk, sizeof chunk);
    int closed = 0;
    for (int i = 0; i < N; i++)
        if (raw_closed_within(fd[i], i == 0 ? 2000 : 200))
            closed++;
    st = stats_of(t);
    assert_true(closed >= 2);
    assert_int_equal(st.budget_refused_total, (uint64_t)closed);
    assert_true(st.partial_frame_bytes <= cfg.max_partial_frame_bytes);
    /* The survivors finish their frames and are delivered; the budget is released. */
    int open = N - closed;
    for (int i = 0; i < N; i++)
        (void)!write(fd[i], chunk, (1u << 20) - sizeof chunk);
    assert_true(wait_for(&r, &r.n_messages, open, 5000));
    assert_int_equal(r.last_len, 1u << 20);
    nng_msleep(50);
    assert_int_equal(stats_of(t).partial_frame_bytes, 0);
    for (int i = 0; i < N; i++)
        close(fd[i]);
    wk_transport_destroy(t);
}

/* Bounds that cannot work are refused at create. */
static void test_bad_bounds(void **state) {
    (void)state;
    wk_transport_callbacks cb = {0};
    wk_transport_config cfg;
    wk_transport_config_defaults(&cfg);
    cfg.max_partial_frame_bytes = cfg.max_message_bytes - 1;
    wk_transport *t = NULL;
    char err[256];
    assert_int_equal(wk_transport_create("tcp://127.0.0.1:0", &cfg, &cb, NULL, &t, err, sizeof err),
                     CM_ERR_CONFIG);
    assert_null(t);
    assert_non_null(strstr(err, "partial-frame budget"));
    wk_transport_config_defaults(&cfg);
    cfg.handshake_timeout_ms = 0;
    assert_int_equal(wk_transport_create("tcp://127.0.0.1:0", &cfg, &cb, NULL, &t, err, sizeof err),
                     CM_ERR_CONFIG);
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
    signal(SIGPIPE, SIG_IGN); /* raw peers write to sockets the worker closed */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_tcp),
        cmocka_unit_test(test_roundtrip_ipc),
        cmocka_unit_test(test_two_peers_isolated),
        cmocka_unit_test(test_oversize_closes),
        cmocka_unit_test(test_non_pair1_refused),
        cmocka_unit_test(test_send_queue_bound),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_bad_url),
        cmocka_unit_test(test_silent_evicted_for_new_gateway),
        cmocka_unit_test(test_silent_timeout),
        cmocka_unit_test(test_frame_and_send_stall),
        cmocka_unit_test(test_partial_frame_budget),
        cmocka_unit_test(test_bad_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
