/*
 * wk_transport: the worker's listening side of the nng pair1 wire, with flow control.
 *
 * Gateways dial the worker with ordinary nng pair1 sockets (tcp:// or ipc://). The worker
 * does not use an nng pair1 *socket* for this: nng's polyamorous pair1 hands each pipe a
 * 2-message queue and silently DROPS what does not fit (measured: 2.5% of 100-byte messages
 * and 60% of 10 KB messages lost in a tight send loop on loopback). A lost Finished event
 * would hang a client forever. So the worker speaks the SP pair1 wire format itself over
 * nng streams (nng_stream_listener): the 8-byte SP handshake ({0,'S','P',0, 0x00,0x11, 0,0}),
 * then frames of [ipc: 1 type byte][8-byte big-endian length][4-byte pair1 hop count]
 * [payload]. That gives one connection object per gateway with a send queue the worker
 * owns and bounds, and a send completion that means "the kernel took the bytes".
 *
 * Bounded everything: max connections, max inbound message bytes (a bigger frame closes the
 * connection: its stream position is lost), per-connection send queue (messages and bytes).
 * What happens when a send queue is full is the caller's choice through wk_send_class (see
 * there); the worker cancels the slow gateway's request.
 *
 * Silent and stuck peers (a slot must not be held forever by something that is not a gateway):
 *  - a connection is *silent* until its first complete inbound message (a gateway sends its
 *    Hello at once); a silent connection is closed handshake_timeout_ms after accept, whether
 *    it stopped in the SP handshake or after it;
 *  - when every slot is taken, a new connection evicts the oldest silent one instead of being
 *    refused, so a fresh gateway can always connect while slots are held by silent peers; only
 *    when all max_connections slots hold peers that spoke is a new one refused;
 *  - a peer that has spoken may then stay idle for any time (gateways with no traffic do):
 *    its liveness is the send side, since the worker sends Stats to every connection every
 *    250 ms: a connection whose pending bytes the peer has not taken for
 *    send_stall_timeout_ms is closed;
 *  - a frame once begun must be complete within frame_timeout_ms (a peer that trickles a
 *    frame cannot hold its buffer forever).
 * Memory held by partially received frames is bounded across all connections: a body buffer
 * grows with the bytes that actually arrived (a header's length alone reserves nothing), and
 * a growth that would take the total past max_partial_frame_bytes closes that connection
 * (logged with the figures, counted in budget_refused_total). The default, 32 MiB, is eight
 * largest (4 MiB) messages arriving at the same instant; real Submits are far smaller and a
 * frame is complete within milliseconds on a gateway's link.
 *
 * Threads: callbacks run on nng's threads, one at a time per connection for on_message, and
 * must not block (push into a queue and return). Every function is thread-safe except
 * destroy, which must not be called from a callback.
 */
#ifndef WK_TRANSPORT_H
#define WK_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

typedef struct wk_transport wk_transport;

typedef struct wk_transport_callbacks {
    /* A peer finished the SP handshake as a pair1 peer; conn_id is new (never reused). */
    void (*on_open)(void *arg, uint32_t conn_id);
    /* One complete message (the pair1 header removed). data valid only during the call. */
    void (*on_message)(void *arg, uint32_t conn_id, const uint8_t *data, size_t len);
    /* The connection is gone (peer closed, error, or wk_transport_close_conn). Called once
     * for every conn_id that on_open announced, after its last on_message. */
    void (*on_close)(void *arg, uint32_t conn_id);
} wk_transport_callbacks;

typedef struct wk_transport_config {
    uint32_t max_connections;       /* default 256 */
    size_t max_message_bytes;       /* inbound payload bound; default 4 MiB */
    uint32_t send_queue_messages;   /* per connection; default 4096 */
    size_t send_queue_bytes;        /* per connection; default 16 MiB */
    int handshake_timeout_ms;       /* accept -> SP handshake and first message; default 10000 */
    int send_stall_timeout_ms;      /* pending bytes not taken by the peer; default 60000 */
    int frame_timeout_ms;           /* first byte of a frame -> its last; default 30000 */
    size_t max_partial_frame_bytes; /* all connections' receive buffers; default 32 MiB */
} wk_transport_config;

/* wk_transport_config_defaults fills the defaults above. */
void wk_transport_config_defaults(wk_transport_config *c);

/* How a send treats a full queue. */
typedef enum wk_send_class {
    /* Fails with CM_ERR_OVERLOADED when the queue is at its message or byte cap. */
    WK_SEND_NORMAL = 0,
    /* Periodic information (Stats): refused already at half the cap, so it never takes the
     * room of events. */
    WK_SEND_DROPPABLE = 1,
    /* The last message of a request (Finished, Error): may exceed the cap by up to the cap
     * again, so a request refused for a full queue can still be told so. */
    WK_SEND_FINAL = 2,
} wk_send_class;

typedef struct wk_transport_stats {
    uint32_t connections;        /* open now (handshake done) */
    uint64_t accepted_total;     /* streams accepted */
    uint64_t rejected_total;     /* closed at accept (too many) or bad handshake */
    uint64_t oversize_total;     /* connections closed for an inbound frame over the bound */
    uint64_t send_refused_total; /* sends refused because a queue was full */
    uint64_t messages_in_total;
    uint64_t messages_out_total;   /* written to the kernel */
    uint32_t queued_messages;      /* in all send queues now */
    uint32_t silent;               /* open or handshaking, no complete message yet (now) */
    uint64_t silent_closed_total;  /* closed: no handshake + first message in time */
    uint64_t evicted_total;        /* silent ones closed to make room for a new connection */
    uint64_t stalled_closed_total; /* closed: send stall or frame timeout */
    uint64_t budget_refused_total; /* closed: partial frames over max_partial_frame_bytes */
    size_t partial_frame_bytes;    /* held by receive buffers now */
} wk_transport_stats;

/*
 * wk_transport_create listens on url (tcp://HOST:PORT or ipc:///path) and starts accepting.
 * cb and arg are kept (cb copied). *out is set before the first callback can run, so
 * callbacks may use the pointer stored there. On failure err holds one line and *out is NULL.
 * Free with wk_transport_destroy.
 */
cm_err wk_transport_create(const char *url, const wk_transport_config *cfg,
                           const wk_transport_callbacks *cb, void *arg, wk_transport **out,
                           char *err, size_t errlen);

/* wk_transport_bound_port: the TCP port actually bound (useful with port 0); 0 for ipc. */
int wk_transport_bound_port(const wk_transport *t);

/*
 * A message written straight into a connection's send buffer: exactly len bytes, produced by
 * write(arg, dst) at dst. Each connection appends frames to one reused buffer (swapped with
 * the one being written out), so queueing a message copies nothing else and allocates only
 * while the buffer grows to the connection's traffic. write runs under the transport's lock:
 * it must be quick, must not block and must not call wk_transport.
 */
typedef struct wk_transport_payload {
    size_t len;
    void (*write)(const void *arg, uint8_t *dst);
    const void *arg;
} wk_transport_payload;

/* wk_transport_send_payload queues p's message for conn_id (p->write is called once, before
 * this returns, or not at all on failure). CM_ERR_NOT_FOUND: no such connection (closed);
 * CM_ERR_OVERLOADED: refused by the queue bound (see wk_send_class); CM_ERR_NOMEM. Messages
 * to one connection go out in the order they were queued. */
cm_err wk_transport_send_payload(wk_transport *t, uint32_t conn_id, const wk_transport_payload *p,
                                 wk_send_class cls);

/* wk_transport_send is wk_transport_send_payload for len bytes at data (copied). */
cm_err wk_transport_send(wk_transport *t, uint32_t conn_id, const void *data, size_t len,
                         wk_send_class cls);

/* wk_transport_broadcast queues data for every open connection with cls; returns how many
 * accepted it. */
uint32_t wk_transport_broadcast(wk_transport *t, const void *data, size_t len, wk_send_class cls);

/* wk_transport_close_conn closes a connection (its queue is dropped); on_close follows. */
void wk_transport_close_conn(wk_transport *t, uint32_t conn_id);

void wk_transport_get_stats(wk_transport *t, wk_transport_stats *out);

/* wk_transport_flush waits up to timeout_ms for every send queue to empty; true if it did. */
bool wk_transport_flush(wk_transport *t, int timeout_ms);

/* wk_transport_destroy stops accepting, closes every connection (on_close is called for each
 * open one), waits for nng's callbacks to finish, and frees everything. t may be NULL. */
void wk_transport_destroy(wk_transport *t);

#endif /* WK_TRANSPORT_H */
