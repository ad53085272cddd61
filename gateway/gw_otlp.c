#include "gw_otlp.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cm_clock.h"
#include "cm_log.h"

#define POST_TIMEOUT_S 2
#define FLUSH_INTERVAL_MS 1000
#define WARN_INTERVAL_MS 10000

struct gw_otlp {
    char host[256];
    char port[8];
    char path[256];
    char service[64];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gw_span *ring; /* (GW_OTLP_QUEUE) */
    size_t head, count;
    int stopping;
    gw_span batch[GW_OTLP_BATCH]; /* exporter thread only */
    _Atomic uint64_t dropped;
    int64_t last_warn_ms;
};

/* ---- encoding ---- */

static void add_attr_str(json_t *attrs, const char *key, const char *v) {
    if (v == NULL || v[0] == '\0')
        return;
    json_array_append_new(attrs,
                          json_pack("{s:s, s:{s:s}}", "key", key, "value", "stringValue", v));
}

static json_t *span_json(const gw_span *sp) {
    char start[24], end[24], status[16];
    json_t *attrs = json_array();
    json_t *o;
    /* OTLP/JSON: 64-bit integers are decimal strings, ids lower-case hex. */
    snprintf(start, sizeof start, "%" PRId64, sp->start_unix_ns);
    snprintf(end, sizeof end, "%" PRId64, sp->end_unix_ns);
    add_attr_str(attrs, "http.route", sp->route);
    add_attr_str(attrs, "sluice.model", sp->model);
    add_attr_str(attrs, "sluice.request_id", sp->request_id);
    add_attr_str(attrs, "sluice.served_model", sp->served_model);
    add_attr_str(attrs, "sluice.worker.address", sp->worker);
    if (sp->http_status > 0) {
        snprintf(status, sizeof status, "%d", sp->http_status);
        json_array_append_new(attrs, json_pack("{s:s, s:{s:s}}", "key", "http.response.status_code",
                                               "value", "intValue", status));
    }
    o = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:o}", "traceId", sp->trace_id, "spanId",
                  sp->span_id, "name", sp->name, "kind", (int)sp->kind, "startTimeUnixNano", start,
                  "endTimeUnixNano", end, "attributes", attrs);
    if (o == NULL)
        return NULL;
    if (sp->parent_id[0] != '\0')
        json_object_set_new(o, "parentSpanId", json_string(sp->parent_id));
    if (sp->http_status >= 500)
        json_object_set_new(o, "status", json_pack("{s:i}", "code", 2)); /* STATUS_CODE_ERROR */
    return o;
}

char *gw_otlp_encode(const char *service_name, const gw_span *spans, size_t n) {
    json_t *arr = json_array(), *root;
    char *out;
    for (size_t i = 0; i < n; i++) {
        json_t *s = span_json(&spans[i]);
        if (s != NULL)
            json_array_append_new(arr, s);
    }
    root = json_pack("{s:[{s:{s:[{s:s, s:{s:s}}]}, s:[{s:{s:s}, s:o}]}]}", "resourceSpans",
                     "resource", "attributes", "key", "service.name", "value", "stringValue",
                     service_name, "scopeSpans", "scope", "name", "sluice-gateway", "spans", arr);
    if (root == NULL)
        return NULL;
    out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

/* ---- HTTP/1.1 POST ---- */

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* post: one request on a fresh connection; returns the HTTP status, or -1 (with why). */
static int post(gw_otlp *x, const char *body, size_t len, const char **why) {
    struct addrinfo hints = {0}, *res = NULL;
    struct timeval tv = {.tv_sec = POST_TIMEOUT_S};
    char head[768], resp[256];
    int fd = -1, status = -1, n;
    size_t got = 0;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(x->host, x->port, &hints, &res) != 0 || res == NULL) {
        *why = "cannot resolve the collector";
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* SO_SNDTIMEO also bounds connect(2) on Linux. */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        *why = "cannot connect to the collector";
        goto done;
    }
    n = snprintf(head, sizeof head,
                 "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 x->path, x->host, x->port, len);
    if (n < 0 || (size_t)n >= sizeof head || write_all(fd, head, (size_t)n) != 0 ||
        write_all(fd, body, len) != 0) {
        *why = "sending to the collector failed";
        goto done;
    }
    /* Only the status line matters ("HTTP/1.1 200 OK"). */
    while (got < sizeof resp - 1) {
        ssize_t r = recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (memchr(resp, '\n', got) != NULL)
            break;
    }
    resp[got] = '\0';
    if (got < 12 || strncmp(resp, "HTTP/1.", 7) != 0 || sscanf(resp + 9, "%3d", &status) != 1) {
        *why = "no HTTP answer from the collector";
        status = -1;
    }
done:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return status;
}

/* ---- exporter thread ---- */

/* export_batch posts x->batch[0..n); false when the collector did not take it (counted). */
static bool export_batch(gw_otlp *x, size_t n) {
    const char *why = NULL;
    char *body = gw_otlp_encode(x->service, x->batch, n);
    int status = body != NULL ? post(x, body, strlen(body), &why) : -1;
    free(body);
    if (status >= 200 && status < 300)
        return true;
    atomic_fetch_add(&x->dropped, n);
    if (cm_clock_mono_ms() - x->last_warn_ms >= WARN_INTERVAL_MS) {
        x->last_warn_ms = cm_clock_mono_ms();
        cm_logf(CM_LOG_WARN, NULL, "otlp: %zu span(s) not exported to http://%s:%s%s: %s", n,
                x->host, x->port, x->path,
                why != NULL  ? why
                : status > 0 ? "collector refused them"
                             : "out of memory");
    }
    return false;
}

static void *exporter_main(void *arg) {
    gw_otlp *x = arg;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        struct timespec until;
        size_t n;
        bool ok;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)FLUSH_INTERVAL_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        /* A batch goes when it is full, a second has passed, or at the end. */
        while (!x->stopping && x->count < GW_OTLP_BATCH)
            if (pthread_cond_timedwait(&x->cv, &x->mu, &until) == ETIMEDOUT)
                break;
        if (x->count == 0) {
            if (x->stopping)
                break;
            continue;
        }
        n = x->count < GW_OTLP_BATCH ? x->count : GW_OTLP_BATCH;
        for (size_t i = 0; i < n; i++)
            x->batch[i] = x->ring[(x->head + i) % GW_OTLP_QUEUE];
        x->head = (x->head + n) % GW_OTLP_QUEUE;
        x->count -= n;
        pthread_mutex_unlock(&x->mu); /* no lock across I/O */
        ok = export_batch(x, n);
        pthread_mutex_lock(&x->mu);
        if (!ok && x->stopping) {
            /* Shutting down and the collector is not taking spans: one try is enough, so a
             * dead collector cannot hold the gateway's exit (2 s per batch otherwise). */
            atomic_fetch_add(&x->dropped, x->count);
            x->count = 0;
        }
    }
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

/* ---- lifecycle ---- */

static cm_err parse_endpoint(gw_otlp *x, const char *ep, char *err, size_t errlen) {
    const char *p = ep + strlen("http://"), *slash, *colon;
    size_t host_len, path_len;
    if (strncmp(ep, "http://", 7) != 0)
        goto bad;
    slash = strchr(p, '/');
    if (slash == NULL)
        slash = p + strlen(p);
    colon = memchr(p, ':', (size_t)(slash - p));
    host_len = (size_t)((colon != NULL ? colon : slash) - p);
    if (host_len == 0 || host_len >= sizeof x->host)
        goto bad;
    memcpy(x->host, p, host_len);
    x->host[host_len] = '\0';
    if (colon != NULL) {
        size_t plen = (size_t)(slash - colon - 1);
        char *end;
        unsigned long port;
        if (plen == 0 || plen >= sizeof x->port)
            goto bad;
        memcpy(x->port, colon + 1, plen);
        x->port[plen] = '\0';
        port = strtoul(x->port, &end, 10);
        if (*end != '\0' || port == 0 || port > 65535)
            goto bad;
    } else {
        snprintf(x->port, sizeof x->port, "4318"); /* OTLP/HTTP's port */
    }
    path_len = strlen(slash);
    while (path_len > 0 && slash[path_len - 1] == '/')
        path_len--;
    if (path_len + sizeof "/v1/traces" > sizeof x->path)
        goto bad;
    memcpy(x->path, slash, path_len);
    x->path[path_len] = '\0';
    if (path_len < 10 || strcmp(x->path + path_len - 10, "/v1/traces") != 0)
        strcat(x->path, "/v1/traces");
    return CM_OK;
bad:
    snprintf(err, errlen, "otlp endpoint '%.200s' must be http://HOST[:PORT][/PATH]", ep);
    return CM_ERR_CONFIG;
}

cm_err gw_otlp_create(const char *endpoint, const char *service_name, gw_otlp **out, char *err,
                      size_t errlen) {
    gw_otlp *x = calloc(1, sizeof *x);
    cm_err rv;
    *out = NULL;
    if (x == NULL || (x->ring = calloc(GW_OTLP_QUEUE, sizeof *x->ring)) == NULL) {
        free(x);
        return CM_ERR_NOMEM;
    }
    if ((rv = parse_endpoint(x, endpoint, err, errlen)) != CM_OK) {
        free(x->ring);
        free(x);
        return rv;
    }
    snprintf(x->service, sizeof x->service, "%s", service_name);
    x->last_warn_ms = -WARN_INTERVAL_MS;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    if (pthread_create(&x->thread, NULL, exporter_main, x) != 0) {
        pthread_cond_destroy(&x->cv);
        pthread_mutex_destroy(&x->mu);
        free(x->ring);
        free(x);
        snprintf(err, errlen, "otlp: cannot start the exporter thread");
        return CM_ERR_NOMEM;
    }
    *out = x;
    return CM_OK;
}

void gw_otlp_emit(gw_otlp *x, const gw_span *span) {
    int wake;
    pthread_mutex_lock(&x->mu);
    if (x->count >= GW_OTLP_QUEUE) {
        pthread_mutex_unlock(&x->mu);
        atomic_fetch_add(&x->dropped, 1);
        return;
    }
    x->ring[(x->head + x->count) % GW_OTLP_QUEUE] = *span;
    x->count++;
    wake = x->count == GW_OTLP_BATCH;
    pthread_mutex_unlock(&x->mu);
    if (wake)
        pthread_cond_signal(&x->cv);
}

uint64_t gw_otlp_dropped(gw_otlp *x) {
    return atomic_load(&x->dropped);
}

void gw_otlp_destroy(gw_otlp *x) {
    if (x == NULL)
        return;
    pthread_mutex_lock(&x->mu);
    x->stopping = 1;
    pthread_mutex_unlock(&x->mu);
    pthread_cond_signal(&x->cv);
    pthread_join(x->thread, NULL);
    pthread_cond_destroy(&x->cv);
    pthread_mutex_destroy(&x->mu);
    free(x->ring);
    free(x);
}
