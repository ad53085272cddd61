/*
 * wk_registry: announces the worker in Redis for gateways to find (--registry).
 *
 * Key sluice:worker:<instance_id>, SET with PX 5000 every second, value JSON
 *   {"instance_id":..,"model":..,"address":..,"capacity":N,"waiting":N,"running":N,
 *    "kv_free_ratio":F,"draining":false,"protocol_version":1}
 * so a crashed worker disappears within 5 s. On drain the key is deleted at once.
 *
 * A synchronous hiredis context on the registry's own thread: connect and command timeouts
 * of 500 ms, reconnect with backoff (1 s doubling to 5 s) and one log line per state change.
 * It never touches the engine; Redis down only means gateways do not discover this worker
 * (static gateway configs still reach it).
 */
#ifndef WK_REGISTRY_H
#define WK_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "service.h"

typedef struct wk_registry wk_registry;

typedef struct wk_registry_info {
    const char *url;         /* redis://HOST:PORT */
    const char *instance_id; /* host:pid:start_ms */
    const char *model;
    const char *address; /* advertised nng address */
    uint32_t capacity;   /* max running requests */
} wk_registry_info;

/* wk_registry_start parses the URL and starts the thread (strings copied). svc is borrowed
 * for load figures and must outlive the registry. CM_ERR_CONFIG for a bad URL. */
cm_err wk_registry_start(const wk_registry_info *info, wk_service *svc, wk_registry **out,
                         char *err, size_t errlen);

/* wk_registry_withdraw deletes the key now (drain) and stops refreshing it. Any thread;
 * returns after one attempt (bounded by the timeouts). */
void wk_registry_withdraw(wk_registry *r);

/* wk_registry_stop withdraws, joins the thread and frees; r may be NULL. */
void wk_registry_stop(wk_registry *r);

/* wk_registry_key writes the Redis key for instance_id into out. */
void wk_registry_key(const char *instance_id, char *out, size_t cap);

#endif /* WK_REGISTRY_H */
