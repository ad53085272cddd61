#include "gw_server.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o/socket/uv-binding.h>

#include "cm_clock.h"
#include "cm_log.h"
#include "gw_bodylimit.h"
#include "gw_protoerror.h"
#include "gw_call.h"
#include "gw_discovery.h"
#include "gw_format.h"
#include "gw_http.h"
#include "gw_ratelimit.h"
#include "gw_route.h"
#include "gw_tokenize.h"

#define SLOTS_PER_CALL_FACTOR 2

/* A message from an nng thread to a loop thread. */
typedef struct tmsg {
    h2o_multithread_message_t super;
    gw_worker *w;
    uint32_t epoch;
    Sluice__Envelope *env; /* NULL = pipe lost */
} tmsg;

/* ---- slots: wire id = thread (8 bits) | seq (36 bits) | slot (20 bits) ---- */

int gw_thread_slot_alloc(gw_thread *t, gw_call *call, uint32_t choice, uint64_t *id_out) {
    uint32_t i = t->free_head;
    gw_slot *s;
    if (i == UINT32_MAX)
        return -1;
    s = &t->slots[i];
    t->free_head = s->next_free;
    t->seq = (t->seq + 1) & 0xFFFFFFFFu;
    if (t->seq == 0)
        t->seq = 1;
    s->id = ((uint64_t)t->index << 56) | ((uint64_t)t->seq << 20) | i;
    s->call = call;
    s->tok = NULL;
    s->choice = choice;
    *id_out = s->id;
    return 0;
}

gw_slot *gw_thread_slot_find(gw_thread *t, uint64_t id) {
    uint32_t i = (uint32_t)(id & 0xFFFFF);
    if (GW_ID_THREAD(id) != t->index || i >= t->n_slots || t->slots[i].id != id)
        return NULL;
    return &t->slots[i];
}

void gw_thread_slot_free(gw_thread *t, uint64_t id) {
    gw_slot *s = gw_thread_slot_find(t, id);
    if (s == NULL)
        return;
    s->id = 0;
    s->call = NULL;
    s->tok = NULL;
    s->next_free = t->free_head;
    t->free_head = (uint32_t)(s - t->slots);
}

/* ---- nng -> loop thread ---- */

static void on_worker_event(void *arg, gw_worker *w, Sluice__Envelope *env) {
    gw_server *s = arg;
    int ti = GW_ID_THREAD(env->event->request_id);
    tmsg *m;
    if (atomic_load(&s->loops_done) || ti < 0 || ti >= s->n_threads ||
        (m = calloc(1, sizeof *m)) == NULL) {
        sluice__envelope__free_unpacked(env, NULL);
        return;
    }
    m->w = w;
    m->env = env;
    h2o_multithread_send_message(&s->threads[ti].events, &m->super);
}

static void on_worker_lost(void *arg, gw_worker *w, uint32_t epoch) {
    gw_server *s = arg;
    if (atomic_load(&s->loops_done))
        return; /* the loops are gone: nobody would read it */
    for (int i = 0; i < s->n_threads; i++) {
        tmsg *m = calloc(1, sizeof *m);
        if (m == NULL)
            continue;
        m->w = w;
        m->epoch = epoch;
        h2o_multithread_send_message(&s->threads[i].events, &m->super);
    }
}

static void on_thread_messages(h2o_multithread_receiver_t *recv, h2o_linklist_t *messages) {
    gw_thread *t = (gw_thread *)((char *)recv - offsetof(gw_thread, events));
    while (!h2o_linklist_is_empty(messages)) {
        tmsg *m = H2O_STRUCT_FROM_MEMBER(tmsg, super.link, messages->next);
        h2o_linklist_unlink(&m->super.link);
        if (m->env != NULL) {
            gw_slot *slot = gw_thread_slot_find(t, m->env->event->request_id);
            if (slot != NULL && slot->tok != NULL)
                gw_tokenize_on_event(t, m->w, m->env);
            else
                gw_call_on_event(t, m->w, m->env);
        } else {
            gw_call_on_lost(t, m->w, m->epoch);
            gw_tokenize_on_lost(t, m->w, m->epoch);
        }
        free(m);
    }
}

/* Frees the events an nng thread queued for t after its loop's last turn (a worker answered
 * while the loop was stopping): nobody will read them. Only once the loops have ended and the
 * nng threads are gone (gw_pool_fini). */
static void free_unread_events(gw_thread *t) {
    h2o_linklist_t *q = &t->events._messages;
    if (t->queue == NULL || q->next == NULL)
        return; /* the thread was never set up */
    while (!h2o_linklist_is_empty(q)) {
        tmsg *m = H2O_STRUCT_FROM_MEMBER(tmsg, super.link, q->next);
        h2o_linklist_unlink(&m->super.link);
        if (m->env != NULL)
            sluice__envelope__free_unpacked(m->env, NULL);
        free(m);
    }
}

/* ---- HTTP helpers ---- */

void gw_http_add_header(h2o_req_t *req, const char *name, const char *value) {
    h2o_iovec_t n = h2o_strdup(&req->pool, name, strlen(name));
    h2o_iovec_t v = h2o_strdup(&req->pool, value, strlen(value));
    h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 0, NULL, v.base, v.len);
}

int gw_http_res_is_json(h2o_req_t *req) {
    ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    return i >= 0 &&
           h2o_memis(req->res.headers.entries[i].value.base, req->res.headers.entries[i].value.len,
                     H2O_STRLIT("application/json"));
}

void gw_http_send_json(h2o_req_t *req, int status, const char *request_id, const char *body,
                       size_t len) {
    static h2o_generator_t gen = {NULL, NULL};
    h2o_iovec_t buf = h2o_strdup(&req->pool, body, len);
    req->res.status = status;
    req->res.reason = status == 200 ? "OK" : "Error";
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    if (request_id != NULL)
        gw_http_add_header(req, "x-request-id", request_id);
    h2o_start_response(req, &gen);
    h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

void gw_http_send_error(h2o_req_t *req, const char *request_id, const gw_error *e) {
    char body[1024];
    size_t len = gw_error_json(e, body, sizeof body);
    if (e->retry_after_s > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", e->retry_after_s);
        gw_http_add_header(req, "retry-after", v);
    }
    gw_http_send_json(req, e->status, request_id, body, len);
}

/* ---- routes (the table is gw_route.c; these are its server-side handlers) ---- */

void gw_server_request_id(gw_server *s, h2o_req_t *req, char *out, size_t cap) {
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (v.len > 0 && v.len < cap && v.len <= CM_ID_EXTERNAL_MAX) {
            memcpy(out, v.base, v.len);
            out[v.len] = '\0';
            if (cm_id_valid(out))
                return;
        }
    }
    if (cm_id_next(&s->ids, out, cap) != CM_OK)
        snprintf(out, cap, "req-unknown");
}

static void send_simple(gw_server *s, h2o_req_t *req, const char *rid, const char *route,
                        int status, const char *body) {
    gw_http_send_json(req, status, rid, body, strlen(body));
    gw_metrics_request(&s->metrics, route, NULL, status, -1, 0);
}

static void model_json(cm_buf *b, const char *name, size_t len, int64_t now_s) {
    cm_buf_append_str(b, "{\"id\":");
    gw_buf_json_str(b, name, len);
    cm_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"sluice\"}",
                  (long long)now_s);
}

/* GET /v1/models (live models) or GET /v1/models/{id} (one of them, else 404). */
void gw_server_on_models(gw_thread *t, h2o_req_t *req, const gw_route *route, const char *rid,
                         const gw_tenant *tenant) {
    gw_server *s = t->srv;
    char names[64][GW_NAME_MAX];
    size_t n = gw_pool_models(&s->pool, names, 64), id_len;
    const char *id =
        gw_route_id_of(route, req->path_normalized.base, req->path_normalized.len, &id_len);
    cm_buf b;
    int64_t now = cm_clock_unix_ms() / 1000;
    (void)tenant;
    if (id != NULL) {
        gw_error e;
        for (size_t i = 0; i < n; i++) {
            if (strlen(names[i]) == id_len && memcmp(names[i], id, id_len) == 0) {
                cm_buf_init(&b, 4096);
                model_json(&b, names[i], id_len, now);
                gw_http_send_json(req, 200, rid, b.data, b.len);
                gw_metrics_request(&s->metrics, route->path, NULL, 200, -1, 0);
                cm_buf_fini(&b);
                return;
            }
        }
        gw_error_set(&e, 404, GW_ERRT_INVALID, "model_not_found", "model",
                     "The model '%.*s' does not exist or has no worker",
                     (int)(id_len > 200 ? 200 : id_len), id);
        gw_metrics_request(&s->metrics, route->path, NULL, 404, -1, 0);
        gw_http_send_error(req, rid, &e);
        return;
    }
    cm_buf_init(&b, 1u << 20);
    cm_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            cm_buf_append_str(&b, ",");
        model_json(&b, names[i], strlen(names[i]), now);
    }
    cm_buf_append_str(&b, "]}");
    gw_http_send_json(req, 200, rid, b.data, b.len);
    gw_metrics_request(&s->metrics, route->path, NULL, 200, -1, 0);
    cm_buf_fini(&b);
}

void gw_server_on_metrics(gw_thread *t, h2o_req_t *req, const gw_route *route, const char *rid,
                          const gw_tenant *tenant) {
    gw_server *s = t->srv;
    cm_buf b;
    static h2o_generator_t gen = {NULL, NULL};
    h2o_iovec_t body;
    (void)route;
    (void)tenant;
    cm_buf_init(&b, 16u << 20);
    gw_metrics_render(&s->metrics, &s->pool, &b);
    body = h2o_strdup(&req->pool, b.data ? b.data : "", b.len);
    cm_buf_fini(&b);
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = body.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT(CM_METRICS_CONTENT_TYPE));
    gw_http_add_header(req, "x-request-id", rid);
    h2o_start_response(req, &gen);
    h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

void gw_server_on_health(gw_thread *t, h2o_req_t *req, const gw_route *route, const char *rid,
                         const gw_tenant *tenant) {
    (void)tenant;
    send_simple(t->srv, req, rid, route->path, 200, "{\"status\":\"ok\"}");
}

static int redis_usable(gw_server *s) {
    return s->cfg->redis_url == NULL || atomic_load(&s->redis_ok) || s->cfg->ratelimit_fail_open;
}

void gw_server_on_ready(gw_thread *t, h2o_req_t *req, const gw_route *route, const char *rid,
                        const gw_tenant *tenant) {
    gw_server *s = t->srv;
    /* With cold_start_wait_ms, requests for a known model wait for a worker, so the gateway
     * takes traffic with zero workers (scale from zero). */
    int ok = redis_usable(s) &&
             (gw_pool_usable_count(&s->pool) > 0 || s->cfg->cold_start_wait_ms > 0) &&
             !atomic_load(&s->stopping);
    (void)tenant;
    send_simple(s, req, rid, route->path, ok ? 200 : 503,
                ok ? "{\"status\":\"ready\"}" : "{\"status\":\"not ready\"}");
}

static void send_401(gw_server *s, h2o_req_t *req, const char *rid, const char *route,
                     int missing) {
    gw_error e;
    if (missing)
        gw_error_set(&e, 401, GW_ERRT_INVALID, "missing_api_key", NULL,
                     "You didn't provide an API key. Provide it in the Authorization header "
                     "(Authorization: Bearer YOUR_KEY).");
    else
        gw_error_set(&e, 401, GW_ERRT_INVALID, "invalid_api_key", NULL,
                     "Incorrect API key provided.");
    gw_metrics_request(&s->metrics, route, NULL, 401, -1, 0);
    cm_log(CM_LOG_INFO, rid, "request refused", "route", route, "status", "401", NULL);
    gw_http_send_error(req, rid, &e);
}

typedef enum auth_result { AUTH_OK, AUTH_FAILED, AUTH_PENDING } auth_result;

/* A request waiting for its API key to come back from Redis. */
typedef struct key_wait {
    gw_thread *t;
    h2o_req_t *req; /* NULL once h2o freed it */
    char rid[CM_ID_EXTERNAL_MAX + 1];
    const gw_route *route;
    uint8_t digest[CM_SHA256_LEN];
    int done;
} key_wait;

static void dispatch(gw_thread *t, h2o_req_t *req, const char *rid, const gw_route *route,
                     const gw_tenant *tenant);

static void on_key_wait_dispose(void *p) {
    key_wait *kw = *(key_wait **)p;
    kw->req = NULL;
    if (kw->done)
        free(kw);
}

static void on_key_found(void *arg, int found, const gw_tenant *tenant) {
    key_wait *kw = arg;
    gw_thread *t = kw->t;
    struct gw_key_cache *ce = &t->key_cache[kw->digest[0]];
    kw->done = 1;
    if (found >= 0) {
        /* Positive answers live 10 s (operators' changes show up quickly), negative 2 s. */
        memcpy(ce->digest, kw->digest, CM_SHA256_LEN);
        ce->found = found;
        if (found)
            ce->tenant = *tenant;
        ce->expires_ms = cm_clock_mono_ms() + (found ? 10000 : 2000);
    }
    if (kw->req == NULL) {
        free(kw);
        return;
    }
    if (found > 0) {
        dispatch(t, kw->req, kw->rid, kw->route, tenant);
    } else if (found == 0) {
        send_401(t->srv, kw->req, kw->rid, kw->route->path, 0);
    } else {
        gw_error e;
        gw_error_set(&e, 503, GW_ERRT_UNAVAILABLE, "auth_unavailable", NULL,
                     "API keys cannot be checked right now; retry later");
        e.retry_after_s = 1;
        gw_metrics_request(&t->srv->metrics, kw->route->path, NULL, 503, -1, 0);
        gw_http_send_error(kw->req, kw->rid, &e);
    }
    /* kw is freed by the request pool's dispose (it still points at kw). */
}

/* Authenticates req: AUTH_OK with *tenant, AUTH_FAILED after sending 401, or AUTH_PENDING
 * when the key is being looked up in Redis (the request continues in on_key_found). */
static auth_result authenticate(gw_thread *t, h2o_req_t *req, const char *rid,
                                const gw_route *route, const gw_tenant **tenant) {
    gw_server *s = t->srv;
    ssize_t i;
    const char *key;
    size_t key_len;
    uint8_t digest[CM_SHA256_LEN];
    struct gw_key_cache *ce;
    key_wait *kw, **ref;
    if (s->auth.disabled) {
        *tenant = &s->auth.anonymous;
        return AUTH_OK;
    }
    i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i < 0 || gw_auth_bearer(req->headers.entries[i].value.base,
                                req->headers.entries[i].value.len, &key, &key_len) != 0) {
        send_401(s, req, rid, route->path, 1);
        return AUTH_FAILED;
    }
    *tenant = gw_auth_lookup(&s->auth, key, key_len, digest);
    if (*tenant != NULL)
        return AUTH_OK;
    if (!s->cfg->redis_keys || t->rl == NULL) {
        send_401(s, req, rid, route->path, 0);
        return AUTH_FAILED;
    }
    ce = &t->key_cache[digest[0]];
    if (ce->expires_ms > cm_clock_mono_ms() && cm_ct_equal(ce->digest, digest, CM_SHA256_LEN)) {
        if (ce->found) {
            *tenant = &ce->tenant;
            return AUTH_OK;
        }
        send_401(s, req, rid, route->path, 0);
        return AUTH_FAILED;
    }
    kw = calloc(1, sizeof *kw);
    ref = kw != NULL ? h2o_mem_alloc_shared(&req->pool, sizeof *ref, on_key_wait_dispose) : NULL;
    if (ref == NULL) {
        free(kw);
        send_401(s, req, rid, route->path, 0);
        return AUTH_FAILED;
    }
    *ref = kw;
    kw->t = t;
    kw->req = req;
    kw->route = route;
    memcpy(kw->digest, digest, CM_SHA256_LEN);
    snprintf(kw->rid, sizeof kw->rid, "%s", rid);
    gw_ratelimit_lookup_key(t->rl, digest, on_key_found, kw);
    return AUTH_PENDING;
}

/* Runs route's handler once the key (if any) is known; bodies are bounded first. */
static void dispatch(gw_thread *t, h2o_req_t *req, const char *rid, const gw_route *route,
                     const gw_tenant *tenant) {
    gw_server *s = t->srv;
    gw_error e;
    if (route->bounded_body && req->entity.len > s->cfg->limits.max_body_bytes) {
        gw_error_set(&e, 413, GW_ERRT_INVALID, "request_too_large", NULL,
                     "request body is %zu bytes; the limit is %zu", req->entity.len,
                     s->cfg->limits.max_body_bytes);
        gw_metrics_request(&s->metrics, route->path, NULL, 413, -1, 0);
        gw_http_send_error(req, rid, &e);
        return;
    }
    route->handler(t, req, route, rid, tenant);
}

/* One request on listener (a GW_LISTENER_* bit): header bound, then the route table decides
 * 404 / 405 / auth and runs the row's handler. The admin listener serves its rows only and
 * answers anything else, wrong methods included, with 404 (it serves nothing else). */
static int serve(h2o_req_t *req, unsigned listener) {
    gw_thread *t = (gw_thread *)req->conn->ctx;
    gw_server *s = t->srv;
    char rid[CM_ID_EXTERNAL_MAX + 1];
    const gw_route *route;
    const gw_tenant *tenant = NULL;
    int admin = listener == GW_LISTENER_ADMIN;
    gw_error e;
    gw_server_request_id(s, req, rid, sizeof rid);
    if (gw_protoerror_header_bytes(req) > s->cfg->max_header_bytes) {
        gw_error_set(&e, 431, GW_ERRT_INVALID, "request_header_fields_too_large", NULL,
                     "request line and headers are %zu bytes; the limit is %u",
                     gw_protoerror_header_bytes(req), s->cfg->max_header_bytes);
        gw_metrics_request(&s->metrics, GW_ROUTE_LABEL_OTHER, NULL, 431, -1, 0);
        req->http1_is_persistent = 0;
        gw_http_send_error(req, rid, &e);
        return 0;
    }
    route = gw_route_find(req->path_normalized.base, req->path_normalized.len, listener);
    if (route != NULL && !gw_route_allows(route, req->method.base, req->method.len) && !admin) {
        gw_error_set(&e, 405, GW_ERRT_INVALID, "method_not_allowed", NULL,
                     "Method %.*s is not allowed on %s", (int)req->method.len, req->method.base,
                     route->path);
        gw_metrics_request(&s->metrics, route->path, NULL, 405, -1, 0);
        gw_http_send_error(req, rid, &e);
        return 0;
    }
    if (route == NULL || !gw_route_allows(route, req->method.base, req->method.len)) {
        gw_error_set(&e, 404, GW_ERRT_INVALID, "unknown_url", NULL,
                     "Unknown request URL%s: %.*s %.*s", admin ? " on the admin port" : "",
                     (int)req->method.len, req->method.base, (int)req->path.len, req->path.base);
        if (!admin)
            gw_metrics_request(&s->metrics, GW_ROUTE_LABEL_OTHER, NULL, 404, -1, 0);
        gw_http_send_error(req, rid, &e);
        return 0;
    }
    if (route->needs_key && authenticate(t, req, rid, route, &tenant) != AUTH_OK)
        return 0; /* answered (401) or continues in on_key_found */
    dispatch(t, req, rid, route, tenant);
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
    (void)self;
    return serve(req, GW_LISTENER_PUBLIC);
}

/* The admin listener: its rows of the table (/metrics, probes); no API key (the listener's
 * address is what keeps it private). */
static int on_admin_req(h2o_handler_t *self, h2o_req_t *req) {
    (void)self;
    return serve(req, GW_LISTENER_ADMIN);
}

/* ---- threads ---- */

/* accept_into takes one connection from listener and hands it to h2o with actx. */
static void accept_into(uv_stream_t *listener, h2o_accept_ctx_t *actx) {
    uv_tcp_t *conn = h2o_mem_alloc(sizeof *conn);
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(conn, 1);
    h2o_accept(actx, h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free));
}

static void on_accept(uv_stream_t *listener, int status) {
    gw_thread *t = listener->data;
    if (status == 0)
        accept_into(listener, &t->accept_ctx);
}

static void on_admin_accept(uv_stream_t *listener, int status) {
    gw_server *s = listener->data;
    if (status == 0)
        accept_into(listener, &s->admin_accept);
}

/* open_listener binds addr; reuseport lets every loop thread bind the same public address
 * (the admin port does without, so a second process on it is an error, not a silent split). */
static int open_listener(const char *addr, int reuseport, char *err, size_t errlen) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    struct addrinfo hints = {0}, *res = NULL;
    int fd = -1, on = 1, rv;
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
        snprintf(err, errlen, "listen address '%s' must be HOST:PORT", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rv = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res)) != 0) {
        snprintf(err, errlen, "listen address '%s': %s", addr, gai_strerror(rv));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void on_drain_timer(uv_timer_t *timer) {
    gw_thread *t = timer->data;
    if (t->calls == 0 || cm_clock_mono_ms() >= t->drain_deadline_ms) {
        if (t->calls > 0)
            cm_logf(CM_LOG_WARN, NULL, "drain timeout: dropping %u requests", t->calls);
        uv_stop(&t->loop);
    }
}

/* Graceful stop: no new connections (the listener closes), /ready answers 503, requests in
 * flight get up to drain_timeout_ms to finish, then the loop stops. */
static void on_stop_async(uv_async_t *a) {
    gw_thread *t = a->data;
    if (t->draining)
        return;
    t->draining = 1;
    uv_close((uv_handle_t *)&t->listener, NULL);
    t->drain_deadline_ms = cm_clock_mono_ms() + t->srv->cfg->drain_timeout_ms;
    uv_timer_init(&t->loop, &t->drain_timer);
    t->drain_timer.data = t;
    uv_timer_start(&t->drain_timer, on_drain_timer, 0, 50);
    /* Requests waiting for a worker to appear get their 503 now (another replica may have
     * one), instead of holding the drain until their wait runs out. */
    if (!h2o_linklist_is_empty(&t->cold_waiters))
        gw_call_cold_tick(t);
}

static void on_probe_timer(uv_timer_t *timer) {
    gw_call_probe_disconnects(timer->data);
}

static void on_cold_timer(uv_timer_t *timer) {
    if (gw_call_cold_tick(timer->data) == 0)
        uv_timer_stop(timer);
}

void gw_thread_cold_wake(gw_thread *t) {
    if (!uv_is_active((uv_handle_t *)&t->cold_timer))
        uv_timer_start(&t->cold_timer, on_cold_timer, 50, 50);
}

static void *thread_main(void *arg) {
    gw_thread *t = arg;
    uv_run(&t->loop, UV_RUN_DEFAULT);
    return NULL;
}

static cm_err thread_init(gw_server *s, int i, h2o_hostconf_t *host, char *err, size_t errlen) {
    gw_thread *t = &s->threads[i];
    (void)host;
    t->srv = s;
    t->index = i;
    uv_loop_init(&t->loop);
    h2o_context_init(&t->ctx, &t->loop, &s->h2o);
    t->accept_ctx.ctx = &t->ctx;
    t->accept_ctx.hosts = s->public_hosts;
    t->accept_ctx.ssl_ctx = s->ssl;
    t->queue = h2o_multithread_create_queue(&t->loop);
    h2o_multithread_register_receiver(t->queue, &t->events, on_thread_messages);
    t->max_calls = (s->cfg->max_inflight + (uint32_t)s->n_threads - 1) / (uint32_t)s->n_threads;
    t->n_slots = t->max_calls * s->cfg->limits.max_n;
    if (t->n_slots > (1u << 20))
        t->n_slots = 1u << 20;
    t->slots = calloc(t->n_slots, sizeof *t->slots);
    if (t->slots == NULL)
        return CM_ERR_NOMEM;
    for (uint32_t k = 0; k < t->n_slots; k++)
        t->slots[k].next_free = k + 1 < t->n_slots ? k + 1 : UINT32_MAX;
    t->free_head = 0;
    t->listen_fd = open_listener(s->cfg->listen, 1, err, errlen);
    if (t->listen_fd < 0)
        return CM_ERR_IO;
    uv_tcp_init(&t->loop, &t->listener);
    t->listener.data = t;
    if (uv_tcp_open(&t->listener, t->listen_fd) != 0) {
        snprintf(err, errlen, "cannot listen on %s", s->cfg->listen);
        return CM_ERR_IO;
    }
    t->listen_fd = -1; /* owned by the uv handle from here on */
    if (uv_listen((uv_stream_t *)&t->listener, 4096, on_accept) != 0) {
        snprintf(err, errlen, "cannot listen on %s", s->cfg->listen);
        return CM_ERR_IO;
    }
    uv_async_init(&t->loop, &t->stop_async, on_stop_async);
    t->stop_async.data = t;
    uv_timer_init(&t->loop, &t->probe_timer);
    t->probe_timer.data = t;
    uv_timer_start(&t->probe_timer, on_probe_timer, 200, 200);
    uv_timer_init(&t->loop, &t->cold_timer);
    t->cold_timer.data = t;
    h2o_linklist_init_anchor(&t->cold_waiters);
    h2o_linklist_init_anchor(&t->tokenize_ops);
    if (s->cfg->redis_url != NULL) {
        cm_err rv = gw_ratelimit_create(&t->loop, s->cfg, &s->metrics, &s->redis_ok, &t->rl);
        if (rv != CM_OK) {
            snprintf(err, errlen, "redis '%s': %s", s->cfg->redis_url, cm_strerror(rv));
            return rv;
        }
    }
    return CM_OK;
}

/* admin_init puts the admin socket (s->admin_fd, bound by gw_server_create) on thread 0's
 * loop (plain HTTP: no TLS context). */
static cm_err admin_init(gw_server *s, char *err, size_t errlen) {
    gw_thread *t0 = &s->threads[0];
    int fd = s->admin_fd;
    s->admin_accept.ctx = &t0->ctx;
    s->admin_accept.hosts = s->admin_hosts;
    uv_tcp_init(&t0->loop, &s->admin_listener);
    s->admin_listener.data = s;
    if (uv_tcp_open(&s->admin_listener, fd) != 0) {
        snprintf(err, errlen, "cannot listen on %s", s->cfg->metrics_listen);
        return CM_ERR_IO;
    }
    s->admin_fd = -1; /* owned by the uv handle from here on */
    s->admin_open = 1;
    if (uv_listen((uv_stream_t *)&s->admin_listener, 128, on_admin_accept) != 0) {
        snprintf(err, errlen, "cannot listen on %s", s->cfg->metrics_listen);
        return CM_ERR_IO;
    }
    return CM_OK;
}

static cm_err setup_tls(gw_server *s, char *err, size_t errlen) {
    if (s->cfg->tls_cert == NULL)
        return CM_OK;
    s->ssl = SSL_CTX_new(SSLv23_server_method());
    if (s->ssl == NULL)
        return CM_ERR_NOMEM;
    SSL_CTX_set_options(s->ssl, SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3);
    if (SSL_CTX_use_certificate_chain_file(s->ssl, s->cfg->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(s->ssl, s->cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "cannot load TLS certificate '%s' / key '%s'", s->cfg->tls_cert,
                 s->cfg->tls_key);
        return CM_ERR_CONFIG;
    }
    h2o_ssl_register_alpn_protocols(s->ssl, h2o_http2_alpn_protocols);
    return CM_OK;
}

cm_err gw_server_create(const gw_config *cfg, gw_server **out, char *err, size_t errlen) {
    gw_server *s = calloc(1, sizeof *s);
    h2o_hostconf_t *host;
    h2o_pathconf_t *path;
    h2o_handler_t *handler;
    char hostname[64] = "gateway";
    cm_err rv;
    *out = NULL;
    if (s == NULL)
        return CM_ERR_NOMEM;
    s->cfg = cfg;
    s->n_threads = (int)cfg->threads;
    if (s->n_threads < 1)
        s->n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s->n_threads < 1)
        s->n_threads = 1;
    if (s->n_threads > GW_MAX_THREADS)
        s->n_threads = GW_MAX_THREADS;
    gethostname(hostname, sizeof hostname - 1);
    snprintf(s->instance_id, sizeof s->instance_id, "%s:%d:%lld", hostname, (int)getpid(),
             (long long)cm_clock_unix_ms());
    s->admin_fd = -1;
    if (cfg->metrics_listen != NULL &&
        (s->admin_fd = open_listener(cfg->metrics_listen, 0, err, errlen)) < 0) {
        rv = CM_ERR_IO;
        goto fail;
    }
    if (cfg->otlp_endpoint != NULL &&
        (rv = gw_otlp_create(cfg->otlp_endpoint, "sluice-gateway", &s->otlp, err, errlen)) != CM_OK)
        goto fail;
    if ((rv = cm_id_gen_init(&s->ids, "req")) != CM_OK)
        goto fail;
    if ((rv = gw_metrics_init(&s->metrics)) != CM_OK)
        goto fail;
    if ((rv = gw_auth_init(&s->auth, cfg, err, errlen)) != CM_OK)
        goto fail;
    if ((rv = gw_pool_init(&s->pool, s->instance_id, on_worker_event, on_worker_lost, s)) != CM_OK)
        goto fail;
    s->pool.model_memory_ms = cfg->model_memory_ms;
    if ((rv = gw_pool_set_aliases(&s->pool, cfg->aliases, cfg->aliases_count)) != CM_OK) {
        snprintf(err, errlen, "aliases: %s", cm_strerror(rv));
        goto fail;
    }
    for (unsigned i = 0; i < cfg->models_count; i++) {
        cm_series *ps;
        if ((rv = gw_pool_add_known(&s->pool, cfg->models[i])) != CM_OK) {
            snprintf(err, errlen, "model '%s': %s", cfg->models[i], cm_strerror(rv));
            goto fail;
        }
        /* The series exists (at 0) before the first request: autoscalers read it. */
        cm_metric_series(s->metrics.pending, (const char *const[]){cfg->models[i]}, &ps);
    }
    for (unsigned i = 0; i < cfg->workers_count; i++) {
        rv = gw_pool_add(&s->pool, cfg->workers[i].model, cfg->workers[i].address, 1, NULL);
        if (rv != CM_OK) {
            snprintf(err, errlen, "worker %s=%s: %s", cfg->workers[i].model,
                     cfg->workers[i].address, cm_strerror(rv));
            goto fail;
        }
    }
    if ((rv = setup_tls(s, err, errlen)) != CM_OK)
        goto fail;
    h2o_config_init(&s->h2o);
    s->h2o_inited = 1;
    s->h2o.server_name = h2o_iovec_init(H2O_STRLIT("sluice-gateway"));
    /* Bodies up to twice the limit are read whole, so the handler answers the OpenAI 413 and
     * the connection stays usable. h2o refuses larger ones itself (before reading the body,
     * so it never buffers more than this): gw_bodylimit rewrites that plain 413 into the same
     * JSON. Not max_body_bytes + 1: h2o 2.2.5 then closes the connection with the body unread
     * (no lingering close), and a client still uploading a body just over the limit would get
     * a reset instead of the answer. */
    s->h2o.max_request_entity_size = cfg->limits.max_body_bytes * 2 + 65536;
    host = h2o_config_register_host(&s->h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    gw_bodylimit_register(&host->fallback_path, s);
    gw_protoerror_register(&host->fallback_path, s);
    path = h2o_config_register_path(host, "/", 0);
    handler = h2o_create_handler(path, sizeof *handler);
    handler->on_req = on_req;
    s->public_hosts[0] = host;
    if (cfg->metrics_listen != NULL) {
        h2o_hostconf_t *admin =
            h2o_config_register_host(&s->h2o, h2o_iovec_init(H2O_STRLIT("admin")), 65535);
        path = h2o_config_register_path(admin, "/", 0);
        handler = h2o_create_handler(path, sizeof *handler);
        handler->on_req = on_admin_req;
        s->admin_hosts[0] = admin;
    }
    for (int i = 0; i < s->n_threads; i++)
        if ((rv = thread_init(s, i, host, err, errlen)) != CM_OK)
            goto fail;
    if (cfg->metrics_listen != NULL && (rv = admin_init(s, err, errlen)) != CM_OK)
        goto fail;
    *out = s;
    return CM_OK;
fail:
    if (err[0] == '\0')
        snprintf(err, errlen, "%s", cm_strerror(rv));
    gw_server_destroy(s);
    return rv;
}

cm_err gw_server_run(gw_server *s) {
    int i;
    if (s->cfg->discovery && s->cfg->redis_url != NULL)
        s->discovery_running = gw_discovery_start(s) == CM_OK;
    for (i = 0; i < s->n_threads; i++)
        pthread_create(&s->threads[i].tid, NULL, thread_main, &s->threads[i]);
    cm_logf(CM_LOG_INFO, NULL, "gateway listening on %s with %d threads%s%s", s->cfg->listen,
            s->n_threads, s->admin_open ? "; /metrics on " : "",
            s->admin_open ? s->cfg->metrics_listen : "");
    for (i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i].tid, NULL);
    atomic_store(&s->loops_done, 1);
    if (s->discovery_running)
        gw_discovery_stop(s);
    s->discovery_running = 0;
    return CM_OK;
}

void gw_server_stop(gw_server *s) {
    atomic_store(&s->stopping, 1);
    for (int i = 0; i < s->n_threads; i++)
        if (s->threads[i].stop_async.data != NULL)
            uv_async_send(&s->threads[i].stop_async);
}

void gw_server_destroy(gw_server *s) {
    if (s == NULL)
        return;
    /* Process exit follows; sockets and loops are closed by the OS. Free what tests see. */
    for (int i = 0; i < s->n_threads; i++) {
        gw_thread *t = &s->threads[i];
        if (t->rl != NULL)
            gw_ratelimit_destroy(t->rl);
        if (t->listen_fd > 0)
            close(t->listen_fd);
        free(t->slots);
    }
    if (s->admin_fd >= 0)
        close(s->admin_fd);
    gw_otlp_destroy(s->otlp); /* exports what the loops left queued */
    if (atomic_load(&s->pool.n_workers) > 0 || s->pool.on_event != NULL)
        gw_pool_fini(&s->pool);
    for (int i = 0; i < s->n_threads; i++)
        free_unread_events(&s->threads[i]);
    /* Hosts, paths, handlers and filters (the loops, which used them, have ended). */
    if (s->h2o_inited)
        h2o_config_dispose(&s->h2o);
    gw_auth_fini(&s->auth);
    gw_metrics_fini(&s->metrics);
    if (s->ssl != NULL)
        SSL_CTX_free(s->ssl);
    free(s);
}
