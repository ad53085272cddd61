/*
 * gw_worker: the gateway's connections to workers, and the pool that routes among them.
 *
 * Each worker is one nng pair1 socket (private to gw_worker.c) dialed non-blocking (so nng keeps
 * reconnecting after a worker restarts). Received envelopes are unpacked on nng's threads: Hello,
 * Stats and Drain update the worker's load figures (atomics); the router reads them under the
 * pool's mutex, held only for a scan of the list, never across I/O; Events and pipe losses go to
 * the callbacks given to gw_pool_init, which must hand them to the owning loop thread and return at
 * once (they run on nng threads: never block).
 *
 * Workers are never freed while the pool lives: a worker that leaves the registry is marked
 * gone and its dialer closed (gw_discovery keeps a connected, answering worker that is absent
 * from the registry until its connection fails); the pool is bounded by GW_POOL_MAX_WORKERS.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "gw_alias.h"

struct Sluice__Envelope; /* sluice.pb-c.h: only gw_worker.c and the event handler read it */

#define GW_POOL_MAX_WORKERS 256
#define GW_NAME_MAX 128
#define GW_ADDR_MAX 256
#define GW_MAX_MSG_BYTES (4u << 20) /* largest envelope accepted from a worker */
#define GW_POOL_MAX_KNOWN 64        /* models declared in the config (models:, --model) */
#define GW_WORKER_SILENT_MS 5000    /* no Stats for this long: the worker is not answering */

typedef struct gw_pool gw_pool;

typedef struct gw_worker {
    gw_pool *pool;
    int index;                      /* position in the pool, stable */
    char model[GW_NAME_MAX];        /* routing name (config or registry) */
    char served_model[GW_NAME_MAX]; /* name from the worker's Hello; guarded by pool->mu */
    char address[GW_ADDR_MAX];      /* nng address */
    int is_static;                  /* from config/flags: never marked gone by discovery */
    int dialing;                    /* dialer open; guarded by pool->mu */
    _Atomic int connected;          /* a pipe is up */
    _Atomic int hello_ok;           /* the worker's Hello arrived with a compatible version */
    _Atomic int draining;
    _Atomic int gone;       /* left the registry */
    _Atomic uint32_t epoch; /* bumped on every new pipe */
    _Atomic uint32_t waiting, running, kv_free, kv_total, capacity;
    _Atomic int inflight; /* Submits from this gateway without a final event */
    _Atomic int64_t last_stats_ms;
    _Atomic int64_t last_rx_ms; /* cm_clock_mono_ms() of the last message from it (any kind) */
    _Atomic int64_t gone_ms;    /* cm_clock_mono_ms() when it left the registry */
    int unlisted;               /* absent from the registry but kept (discovery thread only) */
} gw_worker;

/* Called on an nng thread for each Event envelope; takes ownership of env (free with
 * sluice__envelope__free_unpacked(env, NULL)). Must not block. */
typedef void (*gw_event_fn)(void *arg, gw_worker *w, struct Sluice__Envelope *env);
/* Called on an nng thread when w's pipe of epoch `epoch` is lost. Must not block. */
typedef void (*gw_lost_fn)(void *arg, gw_worker *w, uint32_t epoch);

struct gw_pool {
    pthread_mutex_t mu; /* guards the list and the string fields; never held across I/O */
    gw_worker *workers[GW_POOL_MAX_WORKERS];
    _Atomic int n_workers;
    gw_event_fn on_event;
    gw_lost_fn on_lost;
    void *cb_arg;
    char instance_id[GW_NAME_MAX]; /* sent in our Hello */
    /* Models known without a live worker (scale from zero); guarded by mu. */
    char known[GW_POOL_MAX_KNOWN][GW_NAME_MAX];
    int n_known;
    int64_t model_memory_ms; /* a model stays known this long after its last worker left */
    gw_alias_table aliases;  /* public names routed to weighted targets; fixed after start */
};

_Static_assert(GW_ALIAS_NAME_MAX == GW_NAME_MAX, "alias targets are pool routing names");

/* gw_pool_init prepares an empty pool. Callbacks may be NULL (events are dropped). */
cm_err gw_pool_init(gw_pool *p, const char *instance_id, gw_event_fn on_event, gw_lost_fn on_lost,
                    void *cb_arg);
/* gw_pool_fini closes every socket (waiting for nng callbacks to finish) and frees workers.
 * Call after the loop threads stopped using the pool. */
void gw_pool_fini(gw_pool *p);

/*
 * gw_pool_add finds the worker with this address or creates it and starts dialing
 * (non-blocking). A gone worker that comes back is revived with its routing name updated.
 * *out (may be NULL) is borrowed: valid until gw_pool_fini. CM_ERR_LIMIT when full,
 * CM_ERR_INVALID for a bad address or name.
 */
cm_err gw_pool_add(gw_pool *p, const char *model, const char *address, int is_static,
                   gw_worker **out);
/* gw_pool_mark_gone stops dialing a non-static worker that left the registry; its pipe loss
 * is then reported through on_lost. */
void gw_pool_mark_gone(gw_pool *p, gw_worker *w);

/* gw_worker_usable: connected, greeted, not draining, not gone. */
int gw_worker_usable(const gw_worker *w);

/* gw_worker_answering: connected, greeted, and its last message (Hello, Stats every ~250 ms,
 * events) came less than GW_WORKER_SILENT_MS before now_ms (cm_clock_mono_ms()); draining or
 * not. */
int gw_worker_answering(const gw_worker *w, int64_t now_ms);

/*
 * gw_pool_pick chooses a usable worker of `model`, excluding `exclude` (may be NULL): the
 * least loaded one (in-flight from this gateway + waiting + running share + KV pressure),
 * and among those within one request of the least loaded, the one chosen by rendezvous hashing
 * of affinity (prefix affinity; 0 = none). served (GW_NAME_MAX bytes) receives the model name
 * to put in the Submit. CM_ERR_NOT_FOUND when no worker of the model exists at all,
 * CM_ERR_OVERLOADED when the only usable ones are `exclude` (busy: it refused this request),
 * CM_ERR_CLOSED when some exist but none is usable (not connected, draining, not greeted).
 */
cm_err gw_pool_pick(gw_pool *p, const char *model, uint64_t affinity, const gw_worker *exclude,
                    gw_worker **out, char *served);

/*
 * gw_pool_add_known declares a model that is known even with no worker at all (config
 * `models:` or --model). Call before the loop threads start. CM_ERR_LIMIT past
 * GW_POOL_MAX_KNOWN, CM_ERR_INVALID for an empty or too long name.
 */
cm_err gw_pool_add_known(gw_pool *p, const char *model);

/*
 * gw_pool_set_aliases installs n aliases that passed gw_alias_check (copied). Call once,
 * before the loop threads start. CM_ERR_INVALID for unchecked ones, CM_ERR_NOMEM.
 */
cm_err gw_pool_set_aliases(gw_pool *p, const gw_alias_cfg *aliases, unsigned n);

/*
 * gw_pool_route is gw_pool_pick for a public name: an alias picks a target by weight
 * (gw_alias_order) and falls back to its other targets, in order, when the pick has no usable
 * worker other than `exclude`; any other name is routed as itself. target (GW_NAME_MAX bytes,
 * or NULL) receives the routing name chosen (the model itself when it is no alias). Results as
 * gw_pool_pick: for an alias, CM_ERR_OVERLOADED when some target's only usable worker is
 * `exclude`, else CM_ERR_CLOSED when some target has workers, else CM_ERR_NOT_FOUND.
 */
cm_err gw_pool_route(gw_pool *p, const char *model, uint64_t affinity, const gw_worker *exclude,
                     gw_worker **out, char *served, char *target);

/* gw_pool_has_model: 1 when `model` is an alias or is known: declared with gw_pool_add_known,
 * routed by at least one non-gone worker (usable or not), or routed by a worker that left the
 * registry less than model_memory_ms ago. */
int gw_pool_has_model(gw_pool *p, const char *model);

/* gw_pool_known_models writes every known model name (as gw_pool_has_model) into names (max
 * entries of GW_NAME_MAX bytes), each once, and returns how many. */
size_t gw_pool_known_models(gw_pool *p, char (*names)[GW_NAME_MAX], size_t max);

/*
 * gw_pool_models writes the distinct model names that have a usable worker, then the aliases
 * with at least one such target, into names (max entries of GW_NAME_MAX bytes) and returns
 * how many.
 */
size_t gw_pool_models(gw_pool *p, char (*names)[GW_NAME_MAX], size_t max);

/* gw_pool_usable_count: usable workers of any model. */
int gw_pool_usable_count(gw_pool *p);

/*
 * gw_worker_send packs env straight into one nng message and sends it without blocking.
 * CM_ERR_OVERLOADED when the socket's send buffer is full or not connected, CM_ERR_NOMEM.
 * Thread-safe.
 */
cm_err gw_worker_send(gw_worker *w, const struct Sluice__Envelope *env);
/* gw_worker_cancel sends Cancel{request_id}, best effort. Thread-safe. */
void gw_worker_cancel(gw_worker *w, uint64_t request_id);

#endif /* GW_WORKER_H */
