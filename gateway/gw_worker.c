#include "gw_worker.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "cm_clock.h"
#include "cm_log.h"
#include "sluice.pb-c.h"

/* A worker and its connection: the public part first (what gw_worker_* hand out), the nng
 * handles only in this file. Allocated and freed here as a whole. */
typedef struct worker_conn {
    gw_worker super;
    nng_socket sock;
    nng_dialer dialer;
    nng_aio *rx_aio;
} worker_conn;

static worker_conn *conn_of(gw_worker *w) {
    return (worker_conn *)w;
}

/* send_env packs env into one nng message and sends it without blocking. */
static cm_err send_env(gw_worker *w, const Sluice__Envelope *env) {
    nng_msg *msg;
    if (nng_msg_alloc(&msg, sluice__envelope__get_packed_size(env)) != 0)
        return CM_ERR_NOMEM;
    sluice__envelope__pack(env, nng_msg_body(msg));
    if (nng_sendmsg(conn_of(w)->sock, msg, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(msg);
        return CM_ERR_OVERLOADED;
    }
    return CM_OK;
}

static void send_hello(gw_worker *w) {
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    Sluice__Hello hello = SLUICE__HELLO__INIT;
    hello.protocol_version = SLUICE__PROTOCOL_VERSION__PROTOCOL_VERSION;
    hello.role = "gateway";
    hello.instance_id = w->pool->instance_id;
    env.msg_case = SLUICE__ENVELOPE__MSG_HELLO;
    env.hello = &hello;
    (void)send_env(w, &env);
}

static void on_pipe(nng_pipe pipe, nng_pipe_ev ev, void *arg) {
    gw_worker *w = arg;
    (void)pipe;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        /* hello_ok is not reset here: the worker's Hello can be received before this
         * callback runs (nng delivers on other threads); REM_POST clears it. */
        atomic_fetch_add(&w->epoch, 1);
        atomic_store(&w->connected, 1);
        send_hello(w);
        cm_log(CM_LOG_INFO, NULL, "worker connected", "address", w->address, "model", w->model,
               NULL);
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        uint32_t epoch = atomic_load(&w->epoch);
        atomic_store(&w->connected, 0);
        atomic_store(&w->hello_ok, 0);
        atomic_store(&w->inflight, 0);
        cm_log(CM_LOG_WARN, NULL, "worker disconnected", "address", w->address, "model", w->model,
               NULL);
        if (w->pool->on_lost != NULL)
            w->pool->on_lost(w->pool->cb_arg, w, epoch);
    }
}

static void handle_hello(gw_worker *w, const Sluice__Hello *h) {
    char ver[16];
    if (h->protocol_version != SLUICE__PROTOCOL_VERSION__PROTOCOL_VERSION) {
        snprintf(ver, sizeof ver, "%u", h->protocol_version);
        cm_log(CM_LOG_ERROR, NULL, "worker speaks an incompatible protocol; not routing to it",
               "address", w->address, "worker_version", ver, "gateway_version", "1", NULL);
        atomic_store(&w->hello_ok, 0);
        return;
    }
    pthread_mutex_lock(&w->pool->mu);
    if (h->model != NULL && h->model[0] != '\0')
        snprintf(w->served_model, sizeof w->served_model, "%s", h->model);
    pthread_mutex_unlock(&w->pool->mu);
    atomic_store(&w->draining, h->has_draining && h->draining);
    atomic_store(&w->hello_ok, 1);
}

static void on_recv(void *arg) {
    gw_worker *w = arg;
    worker_conn *wc = conn_of(w);
    nng_msg *msg;
    Sluice__Envelope *env;
    int rv = nng_aio_result(wc->rx_aio);
    if (rv != 0) {
        if (rv == NNG_ECLOSED)
            return;
        nng_recv_aio(wc->sock, wc->rx_aio);
        return;
    }
    msg = nng_aio_get_msg(wc->rx_aio);
    env = sluice__envelope__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
    nng_msg_free(msg);
    if (env == NULL) {
        cm_log(CM_LOG_WARN, NULL, "undecodable message from worker", "address", w->address, NULL);
    } else {
        atomic_store(&w->last_rx_ms, cm_clock_mono_ms());
        switch (env->msg_case) {
        case SLUICE__ENVELOPE__MSG_HELLO:
            if (env->hello != NULL)
                handle_hello(w, env->hello);
            break;
        case SLUICE__ENVELOPE__MSG_STATS:
            if (env->stats != NULL) {
                atomic_store(&w->waiting, env->stats->waiting);
                atomic_store(&w->running, env->stats->running);
                atomic_store(&w->kv_free, env->stats->kv_blocks_free);
                atomic_store(&w->kv_total, env->stats->kv_blocks_total);
                if (env->stats->has_draining)
                    atomic_store(&w->draining, env->stats->draining);
                atomic_store(&w->last_stats_ms, cm_clock_mono_ms());
            }
            break;
        case SLUICE__ENVELOPE__MSG_DRAIN:
            atomic_store(&w->draining, 1);
            cm_log(CM_LOG_INFO, NULL, "worker draining", "address", w->address, NULL);
            break;
        case SLUICE__ENVELOPE__MSG_EVENT:
            if (env->event != NULL && w->pool->on_event != NULL) {
                w->pool->on_event(w->pool->cb_arg, w, env);
                env = NULL; /* handed over */
            }
            break;
        default:
            /* Garbage can unpack; anything else from a worker is ignored. */
            break;
        }
        if (env != NULL)
            sluice__envelope__free_unpacked(env, NULL);
    }
    nng_recv_aio(wc->sock, wc->rx_aio);
}

cm_err gw_pool_init(gw_pool *p, const char *instance_id, gw_event_fn on_event, gw_lost_fn on_lost,
                    void *cb_arg) {
    memset(p, 0, sizeof *p);
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        return CM_ERR_INTERNAL;
    p->on_event = on_event;
    p->on_lost = on_lost;
    p->cb_arg = cb_arg;
    p->model_memory_ms = 600000;
    snprintf(p->instance_id, sizeof p->instance_id, "%s", instance_id ? instance_id : "");
    return CM_OK; /* p->aliases: zeroed, an empty table until gw_pool_set_aliases */
}

void gw_pool_fini(gw_pool *p) {
    int n = atomic_load(&p->n_workers);
    gw_alias_table_fini(&p->aliases);
    for (int i = 0; i < n; i++) {
        gw_worker *w = p->workers[i];
        worker_conn *wc = conn_of(w);
        nng_aio_stop(wc->rx_aio);
        nng_close(wc->sock);
        nng_aio_free(wc->rx_aio);
        free(wc);
    }
    atomic_store(&p->n_workers, 0);
    pthread_mutex_destroy(&p->mu);
}

static cm_err start_dial(gw_worker *w) {
    int rv = nng_dial(conn_of(w)->sock, w->address, &conn_of(w)->dialer, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        cm_log(CM_LOG_ERROR, NULL, "cannot dial worker", "address", w->address, "error",
               nng_strerror(rv), NULL);
        return CM_ERR_INVALID;
    }
    w->dialing = 1;
    return CM_OK;
}

/* 1 when an alias called `model` routes elsewhere: clients asking for `model` never reach a
 * worker routed by that name (only aliases listing it as a target do). */
static int alias_shadows(gw_pool *p, const char *model) {
    const gw_alias *a = gw_alias_find(&p->aliases, model);
    for (unsigned i = 0; a != NULL && i < a->n_targets; i++)
        if (strcmp(a->targets[i].model, model) == 0)
            return 0;
    return a != NULL;
}

cm_err gw_pool_add(gw_pool *p, const char *model, const char *address, int is_static,
                   gw_worker **out) {
    gw_worker *w = NULL;
    worker_conn *wc;
    cm_err rv = CM_OK;
    int n, nrv;
    if (model == NULL || address == NULL || model[0] == '\0' || strlen(model) >= GW_NAME_MAX ||
        strlen(address) >= GW_ADDR_MAX)
        return CM_ERR_INVALID;
    pthread_mutex_lock(&p->mu);
    n = atomic_load(&p->n_workers);
    for (int i = 0; i < n; i++) {
        if (strcmp(p->workers[i]->address, address) == 0) {
            w = p->workers[i];
            break;
        }
    }
    if (w != NULL) {
        if (atomic_load(&w->gone)) {
            snprintf(w->model, sizeof w->model, "%s", model);
            atomic_store(&w->gone, 0);
            if (!w->dialing)
                rv = start_dial(w);
        }
        w->is_static |= is_static;
        goto done;
    }
    if (n >= GW_POOL_MAX_WORKERS) {
        rv = CM_ERR_LIMIT;
        goto done;
    }
    wc = calloc(1, sizeof *wc);
    if (wc == NULL) {
        rv = CM_ERR_NOMEM;
        goto done;
    }
    w = &wc->super;
    w->pool = p;
    w->index = n;
    w->is_static = is_static;
    snprintf(w->model, sizeof w->model, "%s", model);
    snprintf(w->served_model, sizeof w->served_model, "%s", model);
    snprintf(w->address, sizeof w->address, "%s", address);
    if ((nrv = nng_pair1_open(&wc->sock)) != 0) {
        rv = CM_ERR_IO;
        goto fail_free;
    }
    /* Small buffers: a full one means the worker is not keeping up (503, try another). */
    nng_socket_set_int(wc->sock, NNG_OPT_SENDBUF, 512);
    nng_socket_set_int(wc->sock, NNG_OPT_RECVBUF, 1024);
    nng_socket_set_size(wc->sock, NNG_OPT_RECVMAXSZ, GW_MAX_MSG_BYTES);
    /* Small messages both ways (Submit, one Event per token): Nagle would hold them back
     * behind delayed ACKs (~40 ms per request on loopback). */
    nng_socket_set_bool(wc->sock, NNG_OPT_TCP_NODELAY, true);
    nng_socket_set_ms(wc->sock, NNG_OPT_RECONNMINT, 100);
    nng_socket_set_ms(wc->sock, NNG_OPT_RECONNMAXT, 2000);
    nng_pipe_notify(wc->sock, NNG_PIPE_EV_ADD_POST, on_pipe, w);
    nng_pipe_notify(wc->sock, NNG_PIPE_EV_REM_POST, on_pipe, w);
    if ((nrv = nng_aio_alloc(&wc->rx_aio, on_recv, w)) != 0) {
        rv = CM_ERR_NOMEM;
        goto fail_close;
    }
    nng_recv_aio(wc->sock, wc->rx_aio);
    if ((rv = start_dial(w)) != CM_OK)
        goto fail_aio;
    p->workers[n] = w;
    atomic_store(&p->n_workers, n + 1);
    cm_log(CM_LOG_INFO, NULL, "worker added", "model", model, "address", address, NULL);
    if (alias_shadows(p, model))
        cm_log(CM_LOG_WARN, NULL,
               "an alias has this worker's model name and does not list it as a target: "
               "requests for the name go to the alias's targets",
               "model", model, "address", address, NULL);
    goto done;
fail_aio:
    nng_aio_stop(wc->rx_aio);
fail_close:
    nng_close(wc->sock);
    if (wc->rx_aio != NULL)
        nng_aio_free(wc->rx_aio);
fail_free:
    free(wc);
    w = NULL;
done:
    pthread_mutex_unlock(&p->mu);
    if (out != NULL)
        *out = w;
    return rv;
}

void gw_pool_mark_gone(gw_pool *p, gw_worker *w) {
    pthread_mutex_lock(&p->mu);
    if (!w->is_static && !atomic_load(&w->gone)) {
        atomic_store(&w->gone_ms, cm_clock_mono_ms());
        atomic_store(&w->gone, 1);
        if (w->dialing) {
            nng_dialer_close(conn_of(w)->dialer);
            w->dialing = 0;
        }
        cm_log(CM_LOG_INFO, NULL, "worker left the registry", "address", w->address, NULL);
    }
    pthread_mutex_unlock(&p->mu);
}

int gw_worker_usable(const gw_worker *w) {
    return atomic_load(&w->connected) && atomic_load(&w->hello_ok) && !atomic_load(&w->draining) &&
           !atomic_load(&w->gone);
}

int gw_worker_answering(const gw_worker *w, int64_t now_ms) {
    int64_t last = atomic_load(&w->last_rx_ms);
    return atomic_load(&w->connected) && atomic_load(&w->hello_ok) && last > 0 &&
           now_ms - last < GW_WORKER_SILENT_MS;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Load in "requests": what this gateway has in flight plus what the worker reports. */
static double load_of(const gw_worker *w) {
    double load = atomic_load(&w->inflight) + atomic_load(&w->waiting);
    uint32_t total = atomic_load(&w->kv_total);
    if (total > 0) {
        double used = 1.0 - (double)atomic_load(&w->kv_free) / total;
        /* A nearly full KV cache means preemptions: weigh it like two queued requests. */
        load += 2.0 * used;
    }
    return load;
}

cm_err gw_pool_pick(gw_pool *p, const char *model, uint64_t affinity, const gw_worker *exclude,
                    gw_worker **out, char *served) {
    int n = atomic_load(&p->n_workers);
    int any = 0, busy = 0;
    double best = 1e18;
    gw_worker *chosen = NULL;
    uint64_t best_hash = 0;
    /* The lock only guards the names (a revived worker may be renamed); it is held for a scan
     * of at most GW_POOL_MAX_WORKERS entries, never across I/O. */
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < n; i++) {
        gw_worker *w = p->workers[i];
        if (atomic_load(&w->gone) || strcmp(w->model, model) != 0)
            continue;
        any = 1;
        if (!gw_worker_usable(w))
            continue;
        if (w == exclude) {
            busy = 1; /* it just refused this request (full) */
            continue;
        }
        if (load_of(w) < best)
            best = load_of(w);
    }
    for (int i = 0; i < n && any; i++) {
        gw_worker *w = p->workers[i];
        uint64_t h;
        if (atomic_load(&w->gone) || w == exclude || !gw_worker_usable(w) ||
            strcmp(w->model, model) != 0)
            continue;
        /* Load is "even" within one request: then prefix affinity decides, so a shared
         * system prompt keeps landing on the worker whose prefix cache holds it. */
        if (load_of(w) > best + 1.0)
            continue;
        h = mix64(affinity ^ mix64((uint64_t)w->index + 0x9e3779b97f4a7c15ULL));
        if (chosen == NULL || h > best_hash) {
            chosen = w;
            best_hash = h;
        }
    }
    if (chosen != NULL)
        snprintf(served, GW_NAME_MAX, "%s", chosen->served_model);
    pthread_mutex_unlock(&p->mu);
    if (!any)
        return CM_ERR_NOT_FOUND;
    if (chosen == NULL)
        return busy ? CM_ERR_OVERLOADED : CM_ERR_CLOSED;
    *out = chosen;
    return CM_OK;
}

cm_err gw_pool_set_aliases(gw_pool *p, const gw_alias_cfg *aliases, unsigned n) {
    gw_alias_table_fini(&p->aliases);
    return gw_alias_table_init(&p->aliases, aliases, n);
}

cm_err gw_pool_route(gw_pool *p, const char *model, uint64_t affinity, const gw_worker *exclude,
                     gw_worker **out, char *served, char *target) {
    gw_alias *a = gw_alias_find(&p->aliases, model);
    unsigned order[GW_ALIAS_MAX_TARGETS], n;
    int busy = 0, closed = 0;
    if (a == NULL) {
        if (target != NULL)
            snprintf(target, GW_NAME_MAX, "%s", model);
        return gw_pool_pick(p, model, affinity, exclude, out, served);
    }
    n = gw_alias_order(&p->aliases, a, order);
    for (unsigned i = 0; i < n; i++) {
        const char *t = a->targets[order[i]].model;
        cm_err rv = gw_pool_pick(p, t, affinity, exclude, out, served);
        if (rv == CM_OK) {
            if (target != NULL)
                snprintf(target, GW_NAME_MAX, "%s", t);
            return CM_OK;
        }
        busy |= rv == CM_ERR_OVERLOADED;
        closed |= rv == CM_ERR_CLOSED;
    }
    if (target != NULL)
        target[0] = '\0';
    return busy ? CM_ERR_OVERLOADED : closed ? CM_ERR_CLOSED : CM_ERR_NOT_FOUND;
}

cm_err gw_pool_add_known(gw_pool *p, const char *model) {
    cm_err rv = CM_OK;
    if (model == NULL || model[0] == '\0' || strlen(model) >= GW_NAME_MAX)
        return CM_ERR_INVALID;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n_known; i++)
        if (strcmp(p->known[i], model) == 0)
            goto done;
    if (p->n_known >= GW_POOL_MAX_KNOWN) {
        rv = CM_ERR_LIMIT;
        goto done;
    }
    snprintf(p->known[p->n_known++], GW_NAME_MAX, "%s", model);
done:
    pthread_mutex_unlock(&p->mu);
    return rv;
}

/* 1 when w makes its model known now (pool->mu held). */
static int worker_knows(const gw_pool *p, const gw_worker *w, int64_t now_ms) {
    if (!atomic_load(&w->gone))
        return 1;
    return now_ms - atomic_load(&w->gone_ms) < p->model_memory_ms;
}

int gw_pool_has_model(gw_pool *p, const char *model) {
    int n = atomic_load(&p->n_workers), found = 0;
    int64_t now = cm_clock_mono_ms();
    if (gw_alias_find(&p->aliases, model) != NULL)
        return 1; /* configured: known with or without a live target (503, not 404) */
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n_known && !found; i++)
        found = strcmp(p->known[i], model) == 0;
    for (int i = 0; i < n && !found; i++)
        found = strcmp(p->workers[i]->model, model) == 0 && worker_knows(p, p->workers[i], now);
    pthread_mutex_unlock(&p->mu);
    return found;
}

static size_t add_name(char (*names)[GW_NAME_MAX], size_t count, size_t max, const char *name) {
    for (size_t j = 0; j < count; j++)
        if (strcmp(names[j], name) == 0)
            return count;
    if (count < max)
        snprintf(names[count++], GW_NAME_MAX, "%s", name);
    return count;
}

size_t gw_pool_known_models(gw_pool *p, char (*names)[GW_NAME_MAX], size_t max) {
    int n = atomic_load(&p->n_workers);
    int64_t now = cm_clock_mono_ms();
    size_t count = 0;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n_known; i++)
        count = add_name(names, count, max, p->known[i]);
    for (int i = 0; i < n; i++)
        if (worker_knows(p, p->workers[i], now))
            count = add_name(names, count, max, p->workers[i]->model);
    pthread_mutex_unlock(&p->mu);
    return count;
}

size_t gw_pool_models(gw_pool *p, char (*names)[GW_NAME_MAX], size_t max) {
    int n = atomic_load(&p->n_workers);
    size_t count = 0, served;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < n && count < max; i++) {
        gw_worker *w = p->workers[i];
        size_t j;
        if (!gw_worker_usable(w))
            continue;
        for (j = 0; j < count; j++)
            if (strcmp(names[j], w->model) == 0)
                break;
        if (j == count)
            snprintf(names[count++], GW_NAME_MAX, "%s", w->model);
    }
    pthread_mutex_unlock(&p->mu);
    /* Aliases after the served names, listed while one of their targets is live (the
     * served names are what the list holds so far, so this is a lookup in it). */
    served = count;
    for (unsigned i = 0; i < p->aliases.n && count < max; i++) {
        const gw_alias *a = &p->aliases.aliases[i];
        int live = 0;
        for (unsigned k = 0; k < a->n_targets && !live; k++)
            for (size_t j = 0; j < served && !live; j++)
                live = strcmp(names[j], a->targets[k].model) == 0;
        if (live)
            count = add_name(names, count, max, a->name);
    }
    return count;
}

int gw_pool_usable_count(gw_pool *p) {
    int n = atomic_load(&p->n_workers), c = 0;
    for (int i = 0; i < n; i++)
        c += gw_worker_usable(p->workers[i]);
    return c;
}

cm_err gw_worker_send(gw_worker *w, const Sluice__Envelope *env) {
    if (!atomic_load(&w->connected))
        return CM_ERR_OVERLOADED;
    return send_env(w, env);
}

void gw_worker_cancel(gw_worker *w, uint64_t request_id) {
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    Sluice__Cancel cancel = SLUICE__CANCEL__INIT;
    cancel.request_id = request_id;
    env.msg_case = SLUICE__ENVELOPE__MSG_CANCEL;
    env.cancel = &cancel;
    if (gw_worker_send(w, &env) != CM_OK)
        cm_log(CM_LOG_WARN, NULL, "could not send Cancel to worker", "address", w->address, NULL);
}
