/*
 * sluice-wire-bench: events per second on the worker's per-token path, old and new side by
 * side in one run.
 *
 *   sluice-wire-bench [--events N] [--logprobs K] [--rounds R]
 *
 * Two measures, each for the one-shot path (wk_wire_encode_event: the message packed into a
 * malloc'd buffer, then wk_transport_send copies it into the connection's queue) and for the
 * encoder path (wk_wire_enc_event + wk_transport_send_payload: packed straight into the
 * connection's send buffer):
 *   encode  - building and packing N Tokens events (into a buffer the bench owns);
 *   queue   - encode + queue to a real tcp connection, flushing after every 50 events (a
 *             batch step's worth), so the figure includes getting the bytes to the kernel.
 *             The peer speaks the SP pair1 handshake itself and reads the bytes in 64 KiB
 *             gulps on another thread, so its own cost (an nng socket's is ~2 us a message)
 *             does not set the pace.
 * Rounds alternate the paths (ABAB...) so a noisy neighbour hits both alike; the best round of
 * each is printed. Build with -DWIRE_BENCH_OLD_API against a tree from before wk_wire_enc to
 * measure the code that was there (only the one-shot lines print then).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cm_clock.h"
#include "transport.h"
#include "wire.h"

#define FLUSH_EVERY 50

typedef struct bench_event {
    int32_t id;
    char text[16];
    wk_sample_result lp;
    wk_event ev;
} bench_event;

static void make_event(bench_event *e, uint32_t i, uint32_t n_top) {
    memset(e, 0, sizeof *e);
    e->id = (int32_t)(i % 49152);
    int n = snprintf(e->text, sizeof e->text, " tok%u", i % 1000);
    e->ev = (wk_event){.kind = WK_EVENT_TOKENS,
                       .token_ids = &e->id,
                       .n_tokens = 1,
                       .text = e->text,
                       .text_len = (size_t)n};
    if (n_top > 0) {
        e->lp.token_id = e->id;
        e->lp.logprob = -0.25f;
        e->lp.n_top = n_top;
        for (uint32_t k = 0; k < n_top; k++)
            e->lp.top[k] = (wk_logprob_entry){(int32_t)(i + k), -1.0f - (float)k};
        e->ev.logprobs = &e->lp;
    }
}

static double rate(uint32_t n, int64_t t0_ns) {
    return n / ((double)(cm_clock_mono_ns() - t0_ns) / 1e9);
}

static volatile size_t g_sink; /* keeps the packed bytes observable */

static double encode_oneshot(uint32_t n, uint32_t n_top) {
    bench_event e;
    int64_t t0 = cm_clock_mono_ns();
    for (uint32_t i = 0; i < n; i++) {
        make_event(&e, i, n_top);
        wk_wire_buf b;
        if (wk_wire_encode_event(&e.ev, 7, NULL, &b) != CM_OK)
            return 0;
        g_sink += b.data[b.len - 1];
        wk_wire_buf_free(&b);
    }
    return rate(n, t0);
}

#ifndef WIRE_BENCH_OLD_API
static double encode_enc(uint32_t n, uint32_t n_top) {
    static uint8_t out[8192];
    bench_event e;
    wk_wire_enc enc;
    wk_wire_enc_init(&enc);
    int64_t t0 = cm_clock_mono_ns();
    for (uint32_t i = 0; i < n; i++) {
        make_event(&e, i, n_top);
        if (wk_wire_enc_event(&enc, &e.ev, 7, NULL, NULL, 0, false) != CM_OK ||
            wk_wire_enc_len(&enc) > sizeof out)
            return 0;
        wk_wire_enc_write(&enc, out);
        g_sink += out[wk_wire_enc_len(&enc) - 1];
    }
    double r = rate(n, t0);
    wk_wire_enc_fini(&enc);
    return r;
}
#endif

/* ---- through a real connection ---- */

typedef struct peer {
    int fd;
    pthread_mutex_t mtx;
    uint32_t conn_id;
    uint64_t received_bytes;
} peer;

static void on_open(void *arg, uint32_t id) {
    peer *p = arg;
    pthread_mutex_lock(&p->mtx);
    p->conn_id = id;
    pthread_mutex_unlock(&p->mtx);
}

static void on_message(void *arg, uint32_t id, const uint8_t *data, size_t len) {
    (void)arg, (void)id, (void)data, (void)len;
}

static void on_close(void *arg, uint32_t id) {
    (void)arg, (void)id;
}

/* Reads and drops everything until the worker side closes. */
static void *read_main(void *arg) {
    peer *p = arg;
    static uint8_t buf[64 << 10];
    for (;;) {
        ssize_t n = read(p->fd, buf, sizeof buf);
        if (n <= 0)
            return NULL;
        pthread_mutex_lock(&p->mtx);
        p->received_bytes += (uint64_t)n;
        pthread_mutex_unlock(&p->mtx);
    }
}

/* A pair1 peer by hand: the SP handshake, then one message (a peer that never speaks is
 * closed as silent after 10 s). */
static bool dial(peer *p, int port) {
    p->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (p->fd < 0 || connect(p->fd, (struct sockaddr *)&a, sizeof a) != 0)
        return false;
    const uint8_t hello[] = {0, 'S', 'P', 0, 0,   0x11, 0,   0, /* handshake */
                             0, 0,   0,   0, 0,   0,    0,   9, /* length: hop count + 5 */
                             0, 0,   0,   1, 'h', 'e',  'l', 'l', 'o'};
    return write(p->fd, hello, sizeof hello) == (ssize_t)sizeof hello;
}

static double queue_oneshot(wk_transport *t, uint32_t conn, uint32_t n, uint32_t n_top) {
    bench_event e;
    int64_t t0 = cm_clock_mono_ns();
    for (uint32_t i = 0; i < n; i++) {
        make_event(&e, i, n_top);
        wk_wire_buf b;
        if (wk_wire_encode_event(&e.ev, 7, NULL, &b) != CM_OK)
            return 0;
        cm_err rv = wk_transport_send(t, conn, b.data, b.len, WK_SEND_NORMAL);
        wk_wire_buf_free(&b);
        if (rv != CM_OK)
            return 0;
        if (i % FLUSH_EVERY == FLUSH_EVERY - 1 && !wk_transport_flush(t, 10000))
            return 0;
    }
    if (!wk_transport_flush(t, 10000))
        return 0;
    return rate(n, t0);
}

#ifndef WIRE_BENCH_OLD_API
static double queue_enc(wk_transport *t, uint32_t conn, uint32_t n, uint32_t n_top) {
    bench_event e;
    wk_wire_enc enc;
    wk_wire_enc_init(&enc);
    int64_t t0 = cm_clock_mono_ns();
    for (uint32_t i = 0; i < n; i++) {
        make_event(&e, i, n_top);
        if (wk_wire_enc_event(&enc, &e.ev, 7, NULL, NULL, 0, false) != CM_OK)
            return 0;
        wk_transport_payload p = {
            .len = wk_wire_enc_len(&enc), .write = wk_wire_enc_write, .arg = &enc};
        if (wk_transport_send_payload(t, conn, &p, WK_SEND_NORMAL) != CM_OK)
            return 0;
        if (i % FLUSH_EVERY == FLUSH_EVERY - 1 && !wk_transport_flush(t, 10000))
            return 0;
    }
    if (!wk_transport_flush(t, 10000))
        return 0;
    double r = rate(n, t0);
    wk_wire_enc_fini(&enc);
    return r;
}
#endif

static double max_d(double a, double b) {
    return a > b ? a : b;
}

int main(int argc, char **argv) {
    uint32_t n = 200000, n_top = 0, rounds = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--events") == 0)
            n = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--logprobs") == 0)
            n_top = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--events N] [--logprobs K] [--rounds R]\n", argv[0]);
            return 2;
        }
    }
    if (n == 0 || rounds == 0 || n_top > WK_MAX_TOP_LOGPROBS) {
        fprintf(stderr, "events and rounds must be positive, logprobs at most %d\n",
                WK_MAX_TOP_LOGPROBS);
        return 2;
    }
    peer p = {.fd = -1};
    pthread_mutex_init(&p.mtx, NULL);
    wk_transport_callbacks cb = {
        .on_open = on_open, .on_message = on_message, .on_close = on_close};
    wk_transport *t = NULL;
    char err[256];
    if (wk_transport_create("tcp://127.0.0.1:0", NULL, &cb, &p, &t, err, sizeof err) != CM_OK) {
        fprintf(stderr, "transport: %s\n", err);
        return 1;
    }
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", wk_transport_bound_port(t));
    if (!dial(&p, wk_transport_bound_port(t))) {
        fprintf(stderr, "cannot dial %s\n", url);
        return 1;
    }
    uint32_t conn = 0;
    for (int waited = 0; conn == 0 && waited < 5000; waited += 5) {
        usleep(5000);
        pthread_mutex_lock(&p.mtx);
        conn = p.conn_id;
        pthread_mutex_unlock(&p.mtx);
    }
    pthread_t th;
    if (conn == 0 || pthread_create(&th, NULL, read_main, &p) != 0) {
        fprintf(stderr, "no connection\n");
        return 1;
    }
    double enc_old = 0, q_old = 0;
#ifndef WIRE_BENCH_OLD_API
    double enc_new = 0, q_new = 0;
#endif
    for (uint32_t r = 0; r < rounds; r++) {
        enc_old = max_d(enc_old, encode_oneshot(n, n_top));
#ifndef WIRE_BENCH_OLD_API
        enc_new = max_d(enc_new, encode_enc(n, n_top));
#endif
        q_old = max_d(q_old, queue_oneshot(t, conn, n / 4, n_top));
#ifndef WIRE_BENCH_OLD_API
        q_new = max_d(q_new, queue_enc(t, conn, n / 4, n_top));
#endif
    }
    printf("events: %u per encode round, %u per queue round, %u rounds, %u top logprobs\n", n,
           n / 4, rounds, n_top);
    printf("encode  one-shot (malloc'd bytes)     %12.0f events/s\n", enc_old);
#ifndef WIRE_BENCH_OLD_API
    printf("encode  wk_wire_enc (reused scratch)  %12.0f events/s  (x%.2f)\n", enc_new,
           enc_new / enc_old);
#endif
    printf("queue   one-shot + wk_transport_send  %12.0f events/s\n", q_old);
#ifndef WIRE_BENCH_OLD_API
    printf("queue   wk_wire_enc + send_payload    %12.0f events/s  (x%.2f)\n", q_new,
           q_new / q_old);
#endif
    fflush(stdout);
    wk_transport_destroy(t); /* closes the connection: the reader sees EOF */
    pthread_join(th, NULL);
    close(p.fd);
    pthread_mutex_destroy(&p.mtx);
    return 0;
}
