/*
 * wk_registry: the heartbeat thread (see registry.h).
 */
#include "registry.h"

#include <hiredis.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm_clock.h"
#include "cm_log.h"
#include "wire.h"

#define REFRESH_MS 1000
#define TTL_MS 5000
#define IO_TIMEOUT_MS 500
#define BACKOFF_MAX_MS 5000

struct wk_registry {
    char host[256];
    int port;
    char key[320];
    char instance_id[256];
    char model[256];
    char address[256];
    uint32_t capacity;
    wk_service *svc;

    pthread_t thread;
    pthread_mutex_t mtx; /* guards ctx use and the flags */
    pthread_cond_t cond;
    bool stop;
    bool withdrawn;
    redisContext *ctx;
    bool was_up; /* for one log line per state change */
};

void wk_registry_key(const char *instance_id, char *out, size_t cap) {
    snprintf(out, cap, "sluice:worker:%s", instance_id);
}

/* Appends s as a JSON string (quotes included). */
static size_t json_str(char *out, size_t cap, size_t pos, const char *s) {
    if (pos < cap)
        out[pos] = '"';
    pos++;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        char tmp[8];
        const char *piece = tmp;
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            tmp[2] = '\0';
        } else if (*p < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *p);
        } else {
            tmp[0] = (char)*p;
            tmp[1] = '\0';
        }
        for (; *piece != '\0'; piece++, pos++)
            if (pos < cap)
                out[pos] = *piece;
    }
    if (pos < cap)
        out[pos] = '"';
    pos++;
    return pos;
}

static void build_value(wk_registry *r, char *out, size_t cap) {
    wk_service_status st;
    wk_service_get_status(r->svc, &st);
    double kv_free = st.kv_blocks_total
                         ? (double)(st.kv_blocks_total - st.kv_blocks_used) / st.kv_blocks_total
                         : 1.0;
    size_t pos = 0;
    pos += (size_t)snprintf(out, cap, "{\"instance_id\":");
    pos = json_str(out, cap, pos, r->instance_id);
    pos +=
        (size_t)snprintf(out + (pos < cap ? pos : cap), pos < cap ? cap - pos : 0, ",\"model\":");
    pos = json_str(out, cap, pos, r->model);
    pos +=
        (size_t)snprintf(out + (pos < cap ? pos : cap), pos < cap ? cap - pos : 0, ",\"address\":");
    pos = json_str(out, cap, pos, r->address);
    snprintf(out + (pos < cap ? pos : cap), pos < cap ? cap - pos : 0,
             ",\"capacity\":%u,\"waiting\":%u,\"running\":%u,\"kv_free_ratio\":%.4f,"
             "\"draining\":%s,\"protocol_version\":%u}",
             r->capacity, st.waiting, st.running, kv_free, st.draining ? "true" : "false",
             WK_WIRE_PROTOCOL_VERSION);
    out[cap - 1] = '\0';
}

/* Frees the context and logs the loss once. why may point into r->ctx (its errstr): it is
 * copied before the context is freed, never read after. */
static void drop_ctx(wk_registry *r, const char *why) {
    char reason[128];
    snprintf(reason, sizeof reason, "%s", why != NULL ? why : "?");
    if (r->ctx != NULL) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }
    if (r->was_up) {
        cm_logf(CM_LOG_WARN, NULL, "registry: lost redis %s:%d: %s", r->host, r->port, reason);
        r->was_up = false;
    }
}

/* Connects if needed; mutex held. Returns true when a context is usable. */
static bool ensure_ctx(wk_registry *r) {
    if (r->ctx != NULL)
        return true;
    struct timeval tv = {.tv_sec = 0, .tv_usec = IO_TIMEOUT_MS * 1000};
    redisContext *c = redisConnectWithTimeout(r->host, r->port, tv);
    if (c == NULL || c->err) {
        if (c != NULL)
            redisFree(c);
        return false;
    }
    redisSetTimeout(c, tv);
    r->ctx = c;
    if (!r->was_up) {
        cm_logf(CM_LOG_INFO, NULL, "registry: connected to redis %s:%d as %s", r->host, r->port,
                r->key);
        r->was_up = true;
    }
    return true;
}

static bool command_ok(wk_registry *r, redisReply *rep) {
    if (rep == NULL) {
        drop_ctx(r, r->ctx != NULL && r->ctx->errstr[0] ? r->ctx->errstr : "no reply");
        return false;
    }
    bool ok = rep->type != REDIS_REPLY_ERROR;
    if (!ok)
        cm_logf(CM_LOG_WARN, NULL, "registry: redis error: %s", rep->str);
    freeReplyObject(rep);
    return ok;
}

static bool announce(wk_registry *r) {
    char value[2048];
    build_value(r, value, sizeof value);
    if (!ensure_ctx(r))
        return false;
    redisReply *rep = redisCommand(r->ctx, "SET %s %s PX %d", r->key, value, TTL_MS);
    return command_ok(r, rep);
}

static void withdraw_locked(wk_registry *r) {
    if (r->withdrawn)
        return;
    r->withdrawn = true;
    if (!ensure_ctx(r))
        return; /* the TTL removes it within 5 s */
    redisReply *rep = redisCommand(r->ctx, "DEL %s", r->key);
    if (command_ok(r, rep))
        cm_logf(CM_LOG_INFO, NULL, "registry: removed %s", r->key);
}

static void wait_ms(wk_registry *r, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (!r->stop) {
        if (pthread_cond_timedwait(&r->cond, &r->mtx, &ts) != 0)
            break;
    }
}

static void *registry_main(void *arg) {
    wk_registry *r = arg;
    int backoff_ms = REFRESH_MS;
    pthread_mutex_lock(&r->mtx);
    while (!r->stop) {
        wk_service_status st;
        wk_service_get_status(r->svc, &st);
        if (st.draining)
            withdraw_locked(r);
        int next = REFRESH_MS;
        if (!r->withdrawn) {
            if (announce(r)) {
                backoff_ms = REFRESH_MS;
            } else {
                next = backoff_ms;
                backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
            }
        }
        wait_ms(r, next);
    }
    pthread_mutex_unlock(&r->mtx);
    return NULL;
}

cm_err wk_registry_start(const wk_registry_info *info, wk_service *svc, wk_registry **out,
                         char *err, size_t errlen) {
    *out = NULL;
    const char *u = info->url;
    if (strncmp(u, "redis://", 8) != 0) {
        snprintf(err, errlen, "--registry must be redis://HOST:PORT, got '%s'", u);
        return CM_ERR_CONFIG;
    }
    u += 8;
    const char *colon = strrchr(u, ':');
    const char *slash = strchr(u, '/');
    size_t host_len =
        colon != NULL ? (size_t)(colon - u) : (slash ? (size_t)(slash - u) : strlen(u));
    int port = 6379;
    if (colon != NULL) {
        char *end = NULL;
        long p = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || (*end != '\0' && *end != '/') || p <= 0 || p > 65535) {
            snprintf(err, errlen, "--registry: bad port in '%s'", info->url);
            return CM_ERR_CONFIG;
        }
        port = (int)p;
    }
    wk_registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return CM_ERR_NOMEM;
    if (host_len == 0 || host_len >= sizeof r->host) {
        free(r);
        snprintf(err, errlen, "--registry: bad host in '%s'", info->url);
        return CM_ERR_CONFIG;
    }
    memcpy(r->host, u, host_len);
    r->host[host_len] = '\0';
    r->port = port;
    snprintf(r->instance_id, sizeof r->instance_id, "%s", info->instance_id);
    snprintf(r->model, sizeof r->model, "%s", info->model);
    snprintf(r->address, sizeof r->address, "%s", info->address);
    wk_registry_key(info->instance_id, r->key, sizeof r->key);
    r->capacity = info->capacity;
    r->svc = svc;
    pthread_mutex_init(&r->mtx, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&r->thread, NULL, registry_main, r) != 0) {
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->mtx);
        free(r);
        snprintf(err, errlen, "registry: cannot start thread");
        return CM_ERR_NOMEM;
    }
    *out = r;
    return CM_OK;
}

void wk_registry_withdraw(wk_registry *r) {
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mtx);
    withdraw_locked(r);
    pthread_mutex_unlock(&r->mtx);
}

void wk_registry_stop(wk_registry *r) {
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mtx);
    withdraw_locked(r);
    r->stop = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mtx);
    pthread_join(r->thread, NULL);
    if (r->ctx != NULL)
        redisFree(r->ctx);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mtx);
    free(r);
}
