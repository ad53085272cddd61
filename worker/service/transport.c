/*
 * wk_transport: SP pair1 framing over nng streams (see transport.h for why).
 *
 * Life of a connection: accepted -> handshake frame queued + 8-byte read -> on_open ->
 * header/body reads forever. Closing (error, peer gone, close_conn, destroy) closes the
 * stream, which fails the outstanding aios; when neither aio is outstanding any more the
 * connection leaves the table, on_close runs, and the reaper thread frees it. Freeing is
 * done on the reaper because nng_aio_free waits for the aio's callback and so cannot run
 * inside it.
 *
 * One mutex (t->mtx) guards the connection table and every send queue; receive state
 * belongs to the receive callback alone (nng runs one callback per aio at a time).
 *
 * Timeouts (see transport.h for the rules) are deadlines checked by the reaper thread every
 * sweep_ms, not aio timeouts: an aio timeout restarts with every partial read, so a peer
 * trickling one byte at a time would never trip it. The reaper closes what is past a deadline
 * and logs one summary line per sweep (an attack must not turn into one log line per socket).
 */
#include "transport.h"

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_clock.h"
#include "cm_log.h"

#define SP_PROTO_PAIR1 0x11u
#define HOP_BYTES 4u
/* A body buffer starts at most this big and doubles as bytes arrive, so a frame's announced
 * length costs memory only once the bytes are there. */
#define RX_FIRST_BYTES (64u << 10)
/* A send buffer starts this big and doubles when a message does not fit; one that grew past
 * TX_KEEP_BYTES (a burst to a slow peer) is given back once it has drained, so an idle
 * connection holds at most 2 * TX_KEEP_BYTES. 16 KiB holds what one write cycle usually
 * gathers (a batch step's events for a few hundred streams, ~40 bytes each without
 * logprobs), so a steady stream never grows it. */
#define TX_FIRST_BYTES (16u << 10)
#define TX_KEEP_BYTES (256u << 10)

/* Framed messages back to back, [ipc type][8-byte length][hop count][payload] each. */
typedef struct txbuf {
    uint8_t *data;
    size_t len; /* bytes of whole frames */
    size_t cap;
    uint32_t msgs; /* frames in data */
} txbuf;

typedef enum rx_state {
    RX_HANDSHAKE = 0,
    RX_HEADER = 1,
    RX_BODY = 2,
} rx_state;

typedef struct conn {
    struct conn *next; /* in t->conns or t->dead */
    wk_transport *t;
    uint32_t id;
    nng_stream *stream;
    nng_aio *rx_aio;
    nng_aio *tx_aio;
    /* receive side: touched only by rx_cb */
    rx_state rx;
    uint8_t rx_hdr[9];
    uint8_t *rx_buf; /* where the current read lands */
    size_t rx_want;
    size_t rx_got;
    uint8_t *body;    /* current message body (malloc'd, body_cap bytes) */
    size_t body_len;  /* announced length (hop count included) */
    size_t body_cap;  /* allocated; charged to t->partial_bytes */
    size_t body_got;  /* bytes of body received */
    bool frame_begun; /* frame_start_ms was set for the current frame */
    /* under t->mtx */
    int64_t accepted_ms;
    int64_t frame_start_ms; /* first byte of the frame being received; 0 between frames */
    int64_t tx_since_ms;    /* the outstanding send started or last made progress */
    size_t rx_charged;      /* bytes charged to t->partial_bytes */
    /* Two buffers, swapped: senders append frames to fill while nng writes out, which
     * holds a pointer into it, so only fill may move (realloc). When out has gone to the
     * kernel entirely and fill is not empty, they swap: a write carries every frame queued
     * meanwhile, and neither buffer is allocated again once it has grown to the traffic. */
    txbuf fill;
    txbuf out;
    uint32_t tx_count; /* frames in fill and out */
    size_t tx_bytes;   /* bytes in fill and out */
    size_t tx_off;     /* bytes of out already written */
    bool tx_busy;      /* a send is outstanding */
    bool rx_busy;      /* a receive is outstanding */
    bool opened;       /* on_open called */
    bool active;       /* a complete message arrived: no longer silent */
    bool closing;
    bool retired; /* handed to the reaper (exactly once) */
} conn;

struct wk_transport {
    wk_transport_config cfg;
    wk_transport_callbacks cb;
    void *arg;
    bool ipc; /* ipc framing has a leading message-type byte */
    nng_stream_listener *listener;
    nng_aio *accept_aio;
    int bound_port;

    pthread_mutex_t mtx;
    pthread_cond_t cond; /* conn table changes, queues drain, dead list grows */
    conn *conns;
    uint32_t n_conns;     /* in the table, opened or not */
    uint32_t n_closing;   /* of those, closing (no longer holding a slot) */
    size_t partial_bytes; /* receive buffers of all connections */
    int sweep_ms;
    /* closed since the last summary log line */
    uint32_t log_silent, log_evicted, log_stalled, log_budget;
    uint32_t next_id;
    bool stopping;
    conn *dead; /* waiting for the reaper */
    pthread_t reaper;
    bool reaper_started;
    wk_transport_stats stats;
};

void wk_transport_config_defaults(wk_transport_config *c) {
    c->max_connections = 256;
    c->max_message_bytes = 4u << 20;
    c->send_queue_messages = 4096;
    c->send_queue_bytes = 16u << 20;
    c->handshake_timeout_ms = 10000;
    c->send_stall_timeout_ms = 60000;
    c->frame_timeout_ms = 30000;
    c->max_partial_frame_bytes = 32u << 20;
}

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ---- connection teardown ---- */

/* Called with t->mtx held once neither aio is outstanding: unlink and hand to the reaper.
 * Returns true when on_close must be called (outside the lock). */
static bool retire_locked(conn *c) {
    wk_transport *t = c->t;
    conn **pp = &t->conns;
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->next;
    if (*pp == c)
        *pp = c->next;
    t->n_conns--;
    if (c->closing)
        t->n_closing--;
    if (!c->active)
        t->stats.silent--;
    t->partial_bytes -= c->rx_charged;
    c->rx_charged = 0;
    t->stats.partial_frame_bytes = t->partial_bytes;
    bool notify = c->opened;
    if (c->opened)
        t->stats.connections--;
    t->stats.queued_messages -= c->tx_count;
    c->next = t->dead;
    t->dead = c;
    pthread_cond_broadcast(&t->cond);
    return notify;
}

/* Marks c closing (idempotent) and closes the stream so outstanding aios fail. t->mtx held. */
static void close_locked(conn *c) {
    if (!c->closing) {
        c->closing = true;
        c->t->n_closing++;
        nng_stream_close(c->stream);
    }
}

/* After an aio finished without re-arming: retire c if nothing is outstanding any more. */
static void maybe_retire(conn *c) {
    wk_transport *t = c->t;
    pthread_mutex_lock(&t->mtx);
    bool notify = false;
    bool retired = false;
    if (!c->tx_busy && !c->rx_busy && !c->retired) {
        c->retired = true;
        notify = retire_locked(c);
        retired = true;
    }
    pthread_mutex_unlock(&t->mtx);
    if (retired && notify && t->cb.on_close != NULL)
        t->cb.on_close(t->arg, c->id);
}

static void conn_free(conn *c) {
    if (c->rx_aio != NULL)
        nng_aio_free(c->rx_aio);
    if (c->tx_aio != NULL)
        nng_aio_free(c->tx_aio);
    if (c->stream != NULL)
        nng_stream_free(c->stream);
    free(c->fill.data);
    free(c->out.data);
    free(c->body);
    free(c);
}

/* Closes connections past a deadline (see transport.h). t->mtx held. */
static void sweep_locked(wk_transport *t, int64_t now) {
    const wk_transport_config *cfg = &t->cfg;
    for (conn *c = t->conns; c != NULL; c = c->next) {
        if (c->closing)
            continue;
        if (!c->active && now - c->accepted_ms >= cfg->handshake_timeout_ms) {
            t->stats.silent_closed_total++;
            t->log_silent++;
            close_locked(c);
        } else if ((c->frame_start_ms != 0 && now - c->frame_start_ms >= cfg->frame_timeout_ms) ||
                   (c->tx_busy && now - c->tx_since_ms >= cfg->send_stall_timeout_ms)) {
            t->stats.stalled_closed_total++;
            t->log_stalled++;
            close_locked(c);
        }
    }
}

/* One line for what the last sweep (and accepts since) closed; t->mtx NOT held. */
static void log_closed(wk_transport *t) {
    pthread_mutex_lock(&t->mtx);
    uint32_t silent = t->log_silent, evicted = t->log_evicted, stalled = t->log_stalled,
             budget = t->log_budget;
    t->log_silent = t->log_evicted = t->log_stalled = t->log_budget = 0;
    size_t held = t->partial_bytes;
    pthread_mutex_unlock(&t->mtx);
    if (silent + evicted + stalled + budget == 0)
        return;
    /* Only the parts that happened, in one line. */
    char line[512];
    size_t n = 0;
    if (silent > 0)
        n += (size_t)snprintf(line + n, sizeof line - n,
                              "; closed %u silent (no handshake and first message within %d ms)",
                              silent, t->cfg.handshake_timeout_ms);
    if (evicted > 0 && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n,
                              "; evicted %u silent for new connections (all %u slots taken)",
                              evicted, t->cfg.max_connections);
    if (stalled > 0 && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n,
                              "; closed %u stalled (a frame not complete within %d ms, or %d ms "
                              "without send progress)",
                              stalled, t->cfg.frame_timeout_ms, t->cfg.send_stall_timeout_ms);
    if (budget > 0 && n < sizeof line)
        snprintf(line + n, sizeof line - n,
                 "; closed %u whose frames would pass the partial-frame budget (%zu of %zu bytes "
                 "held)",
                 budget, held, t->cfg.max_partial_frame_bytes);
    cm_logf(CM_LOG_WARN, NULL, "transport: connections%s", line);
}

static void *reaper_main(void *arg) {
    wk_transport *t = arg;
    pthread_mutex_lock(&t->mtx);
    int64_t next_sweep_ms = cm_clock_mono_ms() + t->sweep_ms;
    for (;;) {
        while (t->dead == NULL && !(t->stopping && t->n_conns == 0)) {
            int64_t now = cm_clock_mono_ms();
            if (now >= next_sweep_ms) {
                sweep_locked(t, now);
                next_sweep_ms = now + t->sweep_ms;
                pthread_mutex_unlock(&t->mtx);
                log_closed(t);
                pthread_mutex_lock(&t->mtx);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t wait_ms = next_sweep_ms - now;
            ts.tv_sec += (time_t)(wait_ms / 1000);
            ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&t->cond, &t->mtx, &ts);
        }
        conn *list = t->dead;
        t->dead = NULL;
        bool done = t->stopping && t->n_conns == 0 && list == NULL;
        pthread_mutex_unlock(&t->mtx);
        while (list != NULL) {
            conn *n = list->next;
            conn_free(list);
            list = n;
        }
        if (done)
            return NULL;
        pthread_mutex_lock(&t->mtx);
    }
}

/* ---- sending ---- */

/* Starts writing if idle: what is left of out, else fill (swapped in). t->mtx held. */
static void tx_kick_locked(conn *c) {
    if (c->tx_busy || c->closing)
        return;
    if (c->tx_off == c->out.len) {
        if (c->fill.len == 0)
            return;
        txbuf drained = c->out;
        c->out = c->fill;
        c->fill = drained;
        c->fill.len = 0;
        c->fill.msgs = 0;
        c->tx_off = 0;
    }
    nng_iov iov = {.iov_buf = c->out.data + c->tx_off, .iov_len = c->out.len - c->tx_off};
    nng_aio_set_iov(c->tx_aio, 1, &iov);
    c->tx_busy = true;
    c->tx_since_ms = cm_clock_mono_ms();
    /* nng completes aios through its task queue, never inside this call, so holding the
     * mutex here cannot deadlock with tx_cb. */
    nng_stream_send(c->stream, c->tx_aio);
}

/* out has gone to the kernel: account for its frames and empty it (giving back a buffer a
 * burst made big). t->mtx held. */
static void tx_out_done_locked(conn *c) {
    wk_transport *t = c->t;
    c->tx_count -= c->out.msgs;
    c->tx_bytes -= c->out.len;
    t->stats.queued_messages -= c->out.msgs;
    t->stats.messages_out_total += c->out.msgs;
    c->out.len = 0;
    c->out.msgs = 0;
    c->tx_off = 0;
    if (c->out.cap > TX_KEEP_BYTES) {
        free(c->out.data);
        c->out.data = NULL;
        c->out.cap = 0;
    }
    if (c->fill.len == 0)
        pthread_cond_broadcast(&t->cond);
}

static void tx_cb(void *arg) {
    conn *c = arg;
    wk_transport *t = c->t;
    int rv = nng_aio_result(c->tx_aio);
    size_t n = nng_aio_count(c->tx_aio);
    pthread_mutex_lock(&t->mtx);
    c->tx_busy = false;
    if (rv != 0 || c->closing) {
        close_locked(c);
        pthread_mutex_unlock(&t->mtx);
        maybe_retire(c);
        return;
    }
    c->tx_off += n;
    if (c->tx_off >= c->out.len)
        tx_out_done_locked(c);
    tx_kick_locked(c);
    pthread_mutex_unlock(&t->mtx);
}

static size_t frame_header_bytes(const wk_transport *t) {
    return (t->ipc ? 1u : 0u) + 8u + HOP_BYTES;
}

/* Appends one frame of len payload bytes, written by p, to c's fill buffer (growing it when
 * needed) and kicks the writer. false when the buffer cannot grow (nothing queued). t->mtx
 * held. */
static bool enqueue_locked(conn *c, const wk_transport_payload *p) {
    wk_transport *t = c->t;
    size_t flen = frame_header_bytes(t) + p->len;
    txbuf *b = &c->fill;
    if (b->cap - b->len < flen) {
        size_t cap = b->cap > 0 ? b->cap : TX_FIRST_BYTES;
        while (cap - b->len < flen)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (d == NULL)
            return false;
        b->data = d;
        b->cap = cap;
    }
    uint8_t *w = b->data + b->len;
    if (t->ipc)
        *w++ = 1; /* message type: data */
    put_be64(w, HOP_BYTES + p->len);
    w += 8;
    /* pair1 header: hop count 1 (we are the first hop). */
    w[0] = w[1] = w[2] = 0;
    w[3] = 1;
    w += HOP_BYTES;
    if (p->len > 0)
        p->write(p->arg, w);
    b->len += flen;
    b->msgs++;
    c->tx_count++;
    c->tx_bytes += flen;
    t->stats.queued_messages++;
    tx_kick_locked(c);
    return true;
}

static bool queue_admits(const wk_transport *t, const conn *c, size_t flen, wk_send_class cls) {
    uint32_t cap_msgs = t->cfg.send_queue_messages;
    size_t cap_bytes = t->cfg.send_queue_bytes;
    switch (cls) {
    case WK_SEND_DROPPABLE:
        return c->tx_count < cap_msgs / 2 && c->tx_bytes + flen <= cap_bytes / 2;
    case WK_SEND_FINAL:
        return c->tx_count < 2 * cap_msgs && c->tx_bytes + flen <= 2 * cap_bytes;
    case WK_SEND_NORMAL:
    default:
        return c->tx_count < cap_msgs && c->tx_bytes + flen <= cap_bytes;
    }
}

static conn *find_locked(wk_transport *t, uint32_t id) {
    for (conn *c = t->conns; c != NULL; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

cm_err wk_transport_send_payload(wk_transport *t, uint32_t conn_id, const wk_transport_payload *p,
                                 wk_send_class cls) {
    pthread_mutex_lock(&t->mtx);
    conn *c = find_locked(t, conn_id);
    cm_err rv = CM_OK;
    if (c == NULL || c->closing || !c->opened) {
        rv = CM_ERR_NOT_FOUND;
    } else if (!queue_admits(t, c, frame_header_bytes(t) + p->len, cls)) {
        t->stats.send_refused_total++;
        rv = CM_ERR_OVERLOADED;
    } else if (!enqueue_locked(c, p)) {
        rv = CM_ERR_NOMEM;
    }
    pthread_mutex_unlock(&t->mtx);
    return rv;
}

/* The payload writer for plain bytes: arg is a bytes_arg. */
typedef struct bytes_arg {
    const void *data;
    size_t len;
} bytes_arg;

static void write_bytes(const void *arg, uint8_t *dst) {
    const bytes_arg *b = arg;
    memcpy(dst, b->data, b->len);
}

cm_err wk_transport_send(wk_transport *t, uint32_t conn_id, const void *data, size_t len,
                         wk_send_class cls) {
    bytes_arg b = {.data = data, .len = len};
    wk_transport_payload p = {.len = len, .write = write_bytes, .arg = &b};
    return wk_transport_send_payload(t, conn_id, &p, cls);
}

uint32_t wk_transport_broadcast(wk_transport *t, const void *data, size_t len, wk_send_class cls) {
    bytes_arg b = {.data = data, .len = len};
    wk_transport_payload p = {.len = len, .write = write_bytes, .arg = &b};
    size_t flen = frame_header_bytes(t) + len;
    uint32_t sent = 0;
    pthread_mutex_lock(&t->mtx);
    for (conn *c = t->conns; c != NULL; c = c->next) {
        if (c->closing || !c->opened)
            continue;
        if (!queue_admits(t, c, flen, cls)) {
            t->stats.send_refused_total++;
            continue;
        }
        if (!enqueue_locked(c, &p))
            break;
        sent++;
    }
    pthread_mutex_unlock(&t->mtx);
    return sent;
}

void wk_transport_close_conn(wk_transport *t, uint32_t conn_id) {
    pthread_mutex_lock(&t->mtx);
    conn *c = find_locked(t, conn_id);
    if (c != NULL)
        close_locked(c);
    pthread_mutex_unlock(&t->mtx);
}

/* ---- receiving ---- */

static void rx_start(conn *c, uint8_t *buf, size_t want, int timeout_ms) {
    c->rx_buf = buf;
    c->rx_want = want;
    c->rx_got = 0;
    nng_iov iov = {.iov_buf = buf, .iov_len = want};
    nng_aio_set_iov(c->rx_aio, 1, &iov);
    nng_aio_set_timeout(c->rx_aio, timeout_ms);
    nng_stream_recv(c->stream, c->rx_aio);
}

static void rx_continue(conn *c) {
    nng_iov iov = {.iov_buf = c->rx_buf + c->rx_got, .iov_len = c->rx_want - c->rx_got};
    nng_aio_set_iov(c->rx_aio, 1, &iov);
    nng_stream_recv(c->stream, c->rx_aio);
}

static size_t header_len(const wk_transport *t) {
    return t->ipc ? 9u : 8u;
}

/* Stops reading: marks rx idle, closes the connection and retires it when possible. */
static void rx_stop(conn *c) {
    wk_transport *t = c->t;
    pthread_mutex_lock(&t->mtx);
    c->rx_busy = false;
    close_locked(c);
    pthread_mutex_unlock(&t->mtx);
    maybe_retire(c);
}

/* Marks the start of a frame for frame_timeout_ms (once per frame). */
static void frame_begin(conn *c) {
    if (c->frame_begun)
        return;
    c->frame_begun = true;
    pthread_mutex_lock(&c->t->mtx);
    c->frame_start_ms = cm_clock_mono_ms();
    pthread_mutex_unlock(&c->t->mtx);
}

/* Grows c's body buffer to cap bytes, charging the growth to the partial-frame budget.
 * false (nothing changed) when the budget or malloc refuses: the caller closes c. */
static bool body_grow(conn *c, size_t cap) {
    wk_transport *t = c->t;
    size_t delta = cap - c->body_cap;
    pthread_mutex_lock(&t->mtx);
    bool ok = t->partial_bytes + delta <= t->cfg.max_partial_frame_bytes;
    if (ok) {
        t->partial_bytes += delta;
        c->rx_charged += delta;
    } else {
        t->stats.budget_refused_total++;
        t->log_budget++;
    }
    t->stats.partial_frame_bytes = t->partial_bytes;
    pthread_mutex_unlock(&t->mtx);
    if (!ok)
        return false;
    uint8_t *p = realloc(c->body, cap);
    if (p == NULL)
        return false; /* the charge goes back when c retires */
    c->body = p;
    c->body_cap = cap;
    return true;
}

static void rx_cb(void *arg) {
    conn *c = arg;
    wk_transport *t = c->t;
    if (nng_aio_result(c->rx_aio) != 0) {
        rx_stop(c);
        return;
    }
    c->rx_got += nng_aio_count(c->rx_aio);
    if (c->rx_got < c->rx_want) {
        if (c->rx == RX_HEADER)
            frame_begin(c); /* part of a header: the frame's clock starts */
        rx_continue(c);
        return;
    }
    switch (c->rx) {
    case RX_HANDSHAKE: {
        const uint8_t *h = c->rx_hdr;
        unsigned proto = ((unsigned)h[4] << 8) | h[5];
        if (h[0] != 0 || h[1] != 'S' || h[2] != 'P' || h[3] != 0 || h[6] != 0 || h[7] != 0 ||
            proto != SP_PROTO_PAIR1) {
            pthread_mutex_lock(&t->mtx);
            t->stats.rejected_total++;
            pthread_mutex_unlock(&t->mtx);
            cm_logf(CM_LOG_WARN, NULL,
                    "transport: connection %u refused: not an SP pair1 peer (protocol 0x%x)", c->id,
                    proto);
            rx_stop(c);
            return;
        }
        pthread_mutex_lock(&t->mtx);
        bool open = !c->closing;
        if (open) {
            c->opened = true;
            t->stats.connections++;
        }
        pthread_mutex_unlock(&t->mtx);
        if (!open) {
            rx_stop(c);
            return;
        }
        if (t->cb.on_open != NULL)
            t->cb.on_open(t->arg, c->id);
        /* Queue anything the handshake made wait (on_open may have queued a Hello). */
        pthread_mutex_lock(&t->mtx);
        tx_kick_locked(c);
        pthread_mutex_unlock(&t->mtx);
        c->rx = RX_HEADER;
        rx_start(c, c->rx_hdr, header_len(t), NNG_DURATION_INFINITE);
        return;
    }
    case RX_HEADER: {
        const uint8_t *p = c->rx_hdr;
        if (t->ipc) {
            if (p[0] != 1) {
                rx_stop(c);
                return;
            }
            p++;
        }
        uint64_t n = get_be64(p);
        if (n < HOP_BYTES || n - HOP_BYTES > t->cfg.max_message_bytes) {
            pthread_mutex_lock(&t->mtx);
            t->stats.oversize_total++;
            pthread_mutex_unlock(&t->mtx);
            cm_logf(CM_LOG_WARN, NULL,
                    "transport: connection %u closed: frame of %llu bytes (bound %zu)", c->id,
                    (unsigned long long)n, t->cfg.max_message_bytes);
            rx_stop(c);
            return;
        }
        frame_begin(c);
        c->body_len = (size_t)n;
        c->body_got = 0;
        if (!body_grow(c, c->body_len < RX_FIRST_BYTES ? c->body_len : RX_FIRST_BYTES)) {
            rx_stop(c);
            return;
        }
        c->rx = RX_BODY;
        rx_start(c, c->body, c->body_cap, NNG_DURATION_INFINITE);
        return;
    }
    case RX_BODY: {
        c->body_got += c->rx_want;
        if (c->body_got < c->body_len) {
            /* More announced than arrived so far: double the buffer (bounded by the length). */
            size_t cap = c->body_cap * 2 < c->body_len ? c->body_cap * 2 : c->body_len;
            if (!body_grow(c, cap)) {
                rx_stop(c);
                return;
            }
            rx_start(c, c->body + c->body_got, c->body_cap - c->body_got, NNG_DURATION_INFINITE);
            return;
        }
        /* pair1 header: hop count (big-endian u32). Peers send 1; nng drops > 0xff. */
        uint32_t hops = ((uint32_t)c->body[0] << 24) | ((uint32_t)c->body[1] << 16) |
                        ((uint32_t)c->body[2] << 8) | c->body[3];
        if (hops > 0xff) {
            rx_stop(c);
            return;
        }
        if (t->cb.on_message != NULL)
            t->cb.on_message(t->arg, c->id, c->body + HOP_BYTES, c->body_len - HOP_BYTES);
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
        c->frame_begun = false;
        pthread_mutex_lock(&t->mtx);
        t->stats.messages_in_total++;
        if (!c->active) {
            c->active = true;
            t->stats.silent--;
        }
        t->partial_bytes -= c->rx_charged;
        c->rx_charged = 0;
        t->stats.partial_frame_bytes = t->partial_bytes;
        c->frame_start_ms = 0;
        pthread_mutex_unlock(&t->mtx);
        c->rx = RX_HEADER;
        rx_start(c, c->rx_hdr, header_len(t), NNG_DURATION_INFINITE);
        return;
    }
    }
}

/* ---- accepting ---- */

static void accept_cb(void *arg) {
    wk_transport *t = arg;
    int rv = nng_aio_result(t->accept_aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv != 0) {
        /* EMFILE and friends: back off briefly instead of spinning. */
        cm_logf(CM_LOG_WARN, NULL, "transport: accept failed: %s", nng_strerror(rv));
        nng_msleep(50);
        nng_stream_listener_accept(t->listener, t->accept_aio);
        return;
    }
    nng_stream *s = nng_aio_get_output(t->accept_aio, 0);
    conn *c = calloc(1, sizeof *c);
    /* The send buffer starts with the handshake in it. */
    uint8_t *hs = malloc(TX_FIRST_BYTES);
    pthread_mutex_lock(&t->mtx);
    bool refuse = t->stopping || c == NULL || hs == NULL;
    if (!refuse && t->n_conns - t->n_closing >= t->cfg.max_connections) {
        /* Full: make room by closing the oldest silent connection (the list is newest
         * first, so the last match is the oldest), or refuse when every slot has spoken. */
        conn *victim = NULL;
        for (conn *o = t->conns; o != NULL; o = o->next)
            if (!o->active && !o->closing)
                victim = o;
        if (victim != NULL) {
            close_locked(victim);
            t->stats.evicted_total++;
            t->log_evicted++;
        } else {
            refuse = true;
        }
    }
    if (refuse)
        t->stats.rejected_total++;
    else
        t->stats.accepted_total++;
    pthread_mutex_unlock(&t->mtx);
    if (!refuse &&
        (nng_aio_alloc(&c->rx_aio, rx_cb, c) != 0 || nng_aio_alloc(&c->tx_aio, tx_cb, c) != 0))
        refuse = true;
    if (refuse) {
        nng_stream_close(s);
        nng_stream_free(s);
        if (c != NULL) {
            if (c->rx_aio != NULL)
                nng_aio_free(c->rx_aio);
            if (c->tx_aio != NULL)
                nng_aio_free(c->tx_aio);
        }
        free(c);
        free(hs);
    } else {
        c->t = t;
        c->stream = s;
        const uint8_t hello[8] = {0, 'S', 'P', 0, 0, SP_PROTO_PAIR1, 0, 0};
        memcpy(hs, hello, 8);
        pthread_mutex_lock(&t->mtx);
        c->id = ++t->next_id;
        c->accepted_ms = cm_clock_mono_ms();
        t->stats.silent++;
        c->next = t->conns;
        t->conns = c;
        t->n_conns++;
        c->rx_busy = true;
        c->rx = RX_HANDSHAKE;
        /* The handshake goes out at once, counted as one queued message. */
        c->fill = (txbuf){.data = hs, .len = 8, .cap = TX_FIRST_BYTES, .msgs = 1};
        c->tx_count = 1;
        c->tx_bytes = 8;
        t->stats.queued_messages++;
        tx_kick_locked(c);
        pthread_mutex_unlock(&t->mtx);
        /* No aio timeout: the reaper's sweep enforces handshake_timeout_ms from accept. */
        rx_start(c, c->rx_hdr, 8, NNG_DURATION_INFINITE);
    }
    nng_stream_listener_accept(t->listener, t->accept_aio);
}

cm_err wk_transport_create(const char *url, const wk_transport_config *cfg,
                           const wk_transport_callbacks *cb, void *arg, wk_transport **out,
                           char *err, size_t errlen) {
    *out = NULL;
    if (url == NULL || cb == NULL)
        return cm_errf(CM_ERR_INVALID, err, errlen, "transport: no address");
    bool ipc = strncmp(url, "ipc://", 6) == 0;
    if (!ipc && strncmp(url, "tcp://", 6) != 0 && strncmp(url, "tcp4://", 7) != 0 &&
        strncmp(url, "tcp6://", 7) != 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "listen address '%s' must start with tcp:// or ipc://", url);
    wk_transport *t = calloc(1, sizeof *t);
    if (t == NULL)
        return CM_ERR_NOMEM;
    if (cfg != NULL)
        t->cfg = *cfg;
    else
        wk_transport_config_defaults(&t->cfg);
    t->cb = *cb;
    t->arg = arg;
    t->ipc = ipc;
    const wk_transport_config *k = &t->cfg;
    if (k->max_connections == 0 || k->handshake_timeout_ms <= 0 || k->send_stall_timeout_ms <= 0 ||
        k->frame_timeout_ms <= 0 || k->max_partial_frame_bytes < k->max_message_bytes + HOP_BYTES) {
        cm_err rv = cm_errf(CM_ERR_CONFIG, err, errlen,
                            "transport: connections and timeouts must be positive and the "
                            "partial-frame budget (%zu) at least one largest message (%zu)",
                            k->max_partial_frame_bytes, k->max_message_bytes + HOP_BYTES);
        free(t);
        return rv;
    }
    /* A deadline is enforced at most a quarter of its bound late (10 ms to 500 ms). */
    int shortest = k->handshake_timeout_ms;
    if (k->frame_timeout_ms < shortest)
        shortest = k->frame_timeout_ms;
    if (k->send_stall_timeout_ms < shortest)
        shortest = k->send_stall_timeout_ms;
    t->sweep_ms = shortest / 4 < 10 ? 10 : (shortest / 4 > 500 ? 500 : shortest / 4);
    pthread_mutex_init(&t->mtx, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    cm_err rv = CM_OK;
    int nrv = nng_stream_listener_alloc(&t->listener, url);
    if (nrv != 0) {
        rv = cm_errf(CM_ERR_CONFIG, err, errlen, "listen address '%s': %s", url, nng_strerror(nrv));
        goto fail;
    }
    if (!ipc) {
        /* Every event is a small write; without TCP_NODELAY Nagle holds the second of two
         * back-to-back writes for the peer's delayed ACK (~40 ms per request). Accepted
         * streams inherit the listener's setting. */
        (void)nng_stream_listener_set_bool(t->listener, NNG_OPT_TCP_NODELAY, true);
    }
    nrv = nng_stream_listener_listen(t->listener);
    if (nrv != 0) {
        rv = cm_errf(CM_ERR_IO, err, errlen, "cannot listen on '%s': %s", url, nng_strerror(nrv));
        goto fail;
    }
    if (!ipc)
        nng_stream_listener_get_int(t->listener, NNG_OPT_TCP_BOUND_PORT, &t->bound_port);
    if (pthread_create(&t->reaper, NULL, reaper_main, t) != 0) {
        rv = cm_errf(CM_ERR_NOMEM, err, errlen, "transport: cannot start thread");
        goto fail;
    }
    t->reaper_started = true;
    if (nng_aio_alloc(&t->accept_aio, accept_cb, t) != 0) {
        rv = cm_errf(CM_ERR_NOMEM, err, errlen, "transport: out of memory");
        goto fail;
    }
    /* *out before the first accept: on_open may run at once on an nng thread and use it
     * (nng's accept hand-off orders this store before any callback). */
    *out = t;
    nng_stream_listener_accept(t->listener, t->accept_aio);
    return CM_OK;
fail:
    wk_transport_destroy(t);
    return rv;
}

int wk_transport_bound_port(const wk_transport *t) {
    return t->bound_port;
}

void wk_transport_get_stats(wk_transport *t, wk_transport_stats *out) {
    pthread_mutex_lock(&t->mtx);
    *out = t->stats;
    pthread_mutex_unlock(&t->mtx);
}

bool wk_transport_flush(wk_transport *t, int timeout_ms) {
    int64_t deadline = cm_clock_mono_ms() + timeout_ms;
    pthread_mutex_lock(&t->mtx);
    bool empty = false;
    for (;;) {
        empty = true;
        for (conn *c = t->conns; c != NULL; c = c->next)
            if (!c->closing && c->tx_count > 0)
                empty = false;
        int64_t now = cm_clock_mono_ms();
        if (empty || now >= deadline)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait_ms = deadline - now < 20 ? deadline - now : 20;
        ts.tv_nsec += (long)(wait_ms * 1000000);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&t->cond, &t->mtx, &ts);
    }
    pthread_mutex_unlock(&t->mtx);
    return empty;
}

void wk_transport_destroy(wk_transport *t) {
    if (t == NULL)
        return;
    if (t->listener != NULL)
        nng_stream_listener_close(t->listener);
    if (t->accept_aio != NULL)
        nng_aio_stop(t->accept_aio);
    pthread_mutex_lock(&t->mtx);
    t->stopping = true;
    for (conn *c = t->conns; c != NULL; c = c->next)
        close_locked(c);
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mtx);
    if (t->reaper_started) {
        pthread_join(t->reaper, NULL);
    } else {
        /* No reaper: nothing was ever accepted. */
    }
    if (t->accept_aio != NULL)
        nng_aio_free(t->accept_aio);
    if (t->listener != NULL)
        nng_stream_listener_free(t->listener);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mtx);
    free(t);
}
