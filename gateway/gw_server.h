/*
 * gw_server: the running gateway. N loop threads, each with its own libuv loop, h2o context,
 * listening socket (SO_REUSEPORT), Redis connection and table of in-flight worker requests.
 * A request lives entirely on the thread that accepted it; nng events reach that thread
 * through its h2o multithread queue (the thread index is in the top bits of the wire
 * request_id), so no lock is held across I/O and no call state is shared between threads.
 *
 * Lifecycle: gw_server_create -> gw_server_run (blocks until gw_server_stop) ->
 * gw_server_destroy. gw_server_stop is async-signal-unsafe; call it from a normal thread
 * (main uses a signal-watching thread).
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <pthread.h>
#include <stdatomic.h>

#include <h2o.h>
#include <uv.h>

#include "cm_err.h"
#include "cm_id.h"
#include "gw_auth.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_otlp.h"
#include "gw_worker.h"

#define GW_MAX_THREADS 64

typedef struct gw_server gw_server;
typedef struct gw_call gw_call;
typedef struct gw_ratelimit gw_ratelimit;

/* One in-flight Submit on this thread: wire id -> call and choice. */
typedef struct gw_slot {
    uint64_t id; /* 0 = free */
    gw_call *call;
    struct gw_tok_op *tok; /* a /tokenize or /detokenize op (gw_tokenize.c) instead; else NULL */
    uint32_t choice;
    uint32_t next_free;
} gw_slot;

typedef struct gw_thread {
    h2o_context_t ctx; /* first: req->conn->ctx points here */
    gw_server *srv;
    int index;
    pthread_t tid;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop_async;
    uv_timer_t probe_timer; /* gw_call_probe_disconnects, every 200 ms */
    uv_timer_t drain_timer; /* while stopping: ends the loop when calls == 0 or at the deadline */
    uv_timer_t cold_timer;  /* gw_call_cold_tick every 50 ms while cold_waiters is not empty */
    h2o_linklist_t cold_waiters; /* calls waiting for a worker of a known model to appear */
    h2o_linklist_t tokenize_ops; /* gw_tokenize ops waiting for their worker's answer */
    int draining;
    int64_t drain_deadline_ms;
    h2o_accept_ctx_t accept_ctx;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t events; /* worker events and pipe losses */
    gw_slot *slots;                    /* (n_slots) */
    uint32_t n_slots;
    uint32_t free_head; /* UINT32_MAX = none */
    uint32_t seq;
    uint32_t calls;     /* calls alive on this thread */
    uint32_t max_calls; /* this thread's share of max_inflight */
    gw_ratelimit *rl;   /* NULL without Redis */
    /* Keys found (or not) in Redis, direct-mapped by digest[0]; entries expire. */
    struct gw_key_cache {
        uint8_t digest[CM_SHA256_LEN];
        int64_t expires_ms; /* 0 = empty */
        int found;
        gw_tenant tenant;
    } key_cache[256];
    int listen_fd;
} gw_thread;

struct gw_server {
    const gw_config *cfg; /* borrowed, read-only */
    h2o_globalconf_t h2o;
    int h2o_inited; /* h2o_config_init ran: gw_server_destroy disposes it */
    gw_pool pool;
    gw_auth auth;
    gw_metrics metrics;
    cm_id_gen ids;
    gw_thread threads[GW_MAX_THREADS];
    int n_threads;
    SSL_CTX *ssl;
    _Atomic int redis_ok; /* any thread's Redis connection is up */
    char instance_id[GW_NAME_MAX];
    pthread_t discovery_tid;
    int discovery_running;
    /* Admin listener (cfg->metrics_listen), on thread 0's loop: its own hostconf, so the
     * public listener never routes to /metrics and the admin one serves nothing else. */
    h2o_hostconf_t *public_hosts[2]; /* NULL-terminated, for every public accept_ctx */
    h2o_hostconf_t *admin_hosts[2];
    h2o_accept_ctx_t admin_accept;
    uv_tcp_t admin_listener;
    gw_otlp *otlp; /* span exporter (cfg->otlp_endpoint) or NULL */
    int admin_fd;  /* bound first, so a taken port fails before anything starts; -1 once the
                     uv handle owns it */
    int admin_open;
    _Atomic int stopping;   /* draining: /ready 503, no new connections */
    _Atomic int loops_done; /* loop threads ended: nng callbacks drop what they get */
};

/* gw_server_create builds the server from cfg (borrowed: must outlive the server) and binds
 * the listening sockets. On failure err holds one line. */
cm_err gw_server_create(const gw_config *cfg, gw_server **out, char *err, size_t errlen);
/* gw_server_run runs the loop threads and returns when they all stopped. */
cm_err gw_server_run(gw_server *s);
/* gw_server_stop asks every loop to stop; returns at once. Thread-safe. */
void gw_server_stop(gw_server *s);
void gw_server_destroy(gw_server *s);

/* gw_server_request_id writes req's x-request-id when it is valid, else a new id. */
void gw_server_request_id(gw_server *s, h2o_req_t *req, char *out, size_t cap);

/* The server's handlers in gw_route's table (gw_route_fn; loop thread t only): the probes,
 * /metrics and /v1/models. */
struct gw_route;
void gw_server_on_health(gw_thread *t, h2o_req_t *req, const struct gw_route *route,
                         const char *rid, const gw_tenant *tenant);
void gw_server_on_ready(gw_thread *t, h2o_req_t *req, const struct gw_route *route, const char *rid,
                        const gw_tenant *tenant);
void gw_server_on_metrics(gw_thread *t, h2o_req_t *req, const struct gw_route *route,
                          const char *rid, const gw_tenant *tenant);
void gw_server_on_models(gw_thread *t, h2o_req_t *req, const struct gw_route *route,
                         const char *rid, const gw_tenant *tenant);

/* Internal, for gw_call.c and gw_http.c (loop thread only). */
int gw_thread_slot_alloc(gw_thread *t, gw_call *call, uint32_t choice, uint64_t *id_out);
void gw_thread_slot_free(gw_thread *t, uint64_t id);
gw_slot *gw_thread_slot_find(gw_thread *t, uint64_t id);
/* gw_thread_cold_wake starts t's cold_timer (gw_call_cold_tick) unless it runs already. */
void gw_thread_cold_wake(gw_thread *t);
/* Thread index carried in a wire request id. */
#define GW_ID_THREAD(id) ((int)((id) >> 56))

#endif /* GW_SERVER_H */
