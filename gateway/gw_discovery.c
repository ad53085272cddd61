#include "gw_discovery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "cm_clock.h"
#include "cm_log.h"
#include "gw_server.h"

#define MAX_VALUE_BYTES 8192

cm_err gw_discovery_parse(const char *json, size_t len, char *model, char *address, int *draining) {
    json_t *root, *m, *a, *v, *d;
    cm_err rv = CM_ERR_FORMAT;
    if (len > MAX_VALUE_BYTES)
        return CM_ERR_FORMAT;
    root = json_loadb(json, len, 0, NULL);
    if (root == NULL)
        return CM_ERR_FORMAT;
    m = json_object_get(root, "model");
    a = json_object_get(root, "address");
    v = json_object_get(root, "protocol_version");
    d = json_object_get(root, "draining");
    if (json_is_string(m) && json_is_string(a) && json_string_length(m) > 0 &&
        json_string_length(m) < GW_NAME_MAX && json_string_length(a) > 0 &&
        json_string_length(a) < GW_ADDR_MAX &&
        (v == NULL || (json_is_integer(v) && json_integer_value(v) == 1))) {
        snprintf(model, GW_NAME_MAX, "%s", json_string_value(m));
        snprintf(address, GW_ADDR_MAX, "%s", json_string_value(a));
        *draining = json_is_true(d);
        rv = CM_OK;
    }
    json_decref(root);
    return rv;
}

int gw_discovery_keep_unlisted(const gw_worker *w, int64_t now_ms) {
    return w->is_static || gw_worker_answering(w, now_ms);
}

static int parse_url(const char *url, char *host, size_t cap, int *port) {
    const char *p = strncmp(url, "redis://", 8) == 0 ? url + 8 : url;
    const char *colon = strrchr(p, ':');
    size_t hl = colon ? (size_t)(colon - p) : strlen(p);
    *port = colon ? atoi(colon + 1) : 6379;
    if (hl == 0 || hl >= cap || *port <= 0 || *port > 65535)
        return -1;
    memcpy(host, p, hl);
    host[hl] = '\0';
    return 0;
}

/* One SCAN pass: adds/refreshes workers seen, returns their count or -1 on a Redis error. */
static int scan_once(gw_server *s, redisContext *rc, uint8_t *seen) {
    char cursor[32] = "0";
    int found = 0, rounds = 0;
    do {
        redisReply *r = redisCommand(rc, "SCAN %s MATCH sluice:worker:* COUNT 100", cursor);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r != NULL)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str ? r->element[0]->str : "0");
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            redisReply *key = r->element[1]->element[i];
            redisReply *val;
            char model[GW_NAME_MAX], addr[GW_ADDR_MAX];
            int draining = 0;
            gw_worker *w = NULL;
            if (key->type != REDIS_REPLY_STRING)
                continue;
            val = redisCommand(rc, "GET %b", key->str, (size_t)key->len);
            if (val == NULL) {
                freeReplyObject(r);
                return -1;
            }
            if (val->type == REDIS_REPLY_STRING &&
                gw_discovery_parse(val->str, val->len, model, addr, &draining) == CM_OK &&
                gw_pool_add(&s->pool, model, addr, 0, &w) == CM_OK && w != NULL) {
                seen[w->index] = 1;
                w->unlisted = 0;
                if (draining)
                    atomic_store(&w->draining, 1);
                found++;
            }
            freeReplyObject(val);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0 && ++rounds < 10000);
    return found;
}

static void *discovery_main(void *arg) {
    gw_server *s = arg;
    char host[256];
    int port;
    redisContext *rc = NULL;
    struct timeval tv;
    int64_t last_log = 0;
    if (parse_url(s->cfg->redis_url, host, sizeof host, &port) != 0) {
        cm_log(CM_LOG_ERROR, NULL, "discovery: bad redis url", "url", s->cfg->redis_url, NULL);
        return NULL;
    }
    tv.tv_sec = s->cfg->redis_timeout_ms * 5 / 1000;
    tv.tv_usec = (s->cfg->redis_timeout_ms * 5 % 1000) * 1000;
    while (!atomic_load(&s->stopping)) {
        uint8_t seen[GW_POOL_MAX_WORKERS] = {0};
        int n;
        if (rc == NULL) {
            rc = redisConnectWithTimeout(host, port, tv);
            if (rc != NULL && !rc->err)
                redisSetTimeout(rc, tv);
        }
        n = (rc != NULL && !rc->err) ? scan_once(s, rc, seen) : -1;
        if (n < 0) {
            int64_t now = cm_clock_mono_ms();
            cm_series_inc(s->metrics.redis_errors);
            if (now - last_log > 5000) {
                last_log = now;
                cm_log(CM_LOG_WARN, NULL, "discovery: redis unavailable; keeping known workers",
                       "host", host, NULL);
            }
            if (rc != NULL)
                redisFree(rc);
            rc = NULL;
        } else {
            int total = atomic_load(&s->pool.n_workers);
            int64_t now = cm_clock_mono_ms();
            for (int i = 0; i < total; i++) {
                gw_worker *w = s->pool.workers[i];
                if (seen[i] || atomic_load(&w->gone))
                    continue;
                if (!gw_discovery_keep_unlisted(w, now)) {
                    gw_pool_mark_gone(&s->pool, w);
                } else if (!w->unlisted) {
                    /* Closing its dialer would kill its streams: keep it while it answers. */
                    w->unlisted = 1;
                    cm_log(CM_LOG_INFO, NULL,
                           "worker absent from the registry; kept while connected", "address",
                           w->address, NULL);
                }
            }
        }
        for (uint32_t slept = 0;
             slept < s->cfg->discovery_interval_ms && !atomic_load(&s->stopping); slept += 50)
            cm_clock_sleep_ms(50);
    }
    if (rc != NULL)
        redisFree(rc);
    return NULL;
}

cm_err gw_discovery_start(gw_server *s) {
    if (pthread_create(&s->discovery_tid, NULL, discovery_main, s) != 0)
        return CM_ERR_INTERNAL;
    return CM_OK;
}

void gw_discovery_stop(gw_server *s) {
    atomic_store(&s->stopping, 1);
    pthread_join(s->discovery_tid, NULL);
}
