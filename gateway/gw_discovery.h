/*
 * gw_discovery: watches the Redis worker registry (keys sluice:worker:*, JSON values, TTL
 * 5 s) with SCAN MATCH/COUNT every discovery_interval_ms on its own thread with a blocking
 * hiredis connection (connect and command timeouts set), adds new workers to the pool and
 * marks vanished ones gone. Redis errors are logged (rate-limited), counted, and retried at
 * the next interval. Values are bounded (8 KiB) and parsed with jansson.
 *
 * The registry only says where to connect; the connection says who is alive. A worker absent
 * from the registry (Redis restarted empty, failed over, or was unreachable past the 5 s key
 * TTL) that is connected and answering stays in the pool, routed to unless draining, until its
 * connection fails or it stops answering; only then is it marked gone. So a registry outage
 * never drops a healthy worker or its streams; it only delays finding new ones.
 */
#ifndef GW_DISCOVERY_H
#define GW_DISCOVERY_H

#include <stddef.h>

#include "cm_err.h"
#include "gw_worker.h"

struct gw_server;

/* gw_discovery_start starts the watcher thread for s (s->cfg->redis_url must be set). */
cm_err gw_discovery_start(struct gw_server *s);
/* gw_discovery_stop stops it and waits (at most one interval plus the Redis timeout). */
void gw_discovery_stop(struct gw_server *s);

/*
 * gw_discovery_parse parses one registry value (len bytes) into model and address
 * (GW_NAME_MAX / GW_ADDR_MAX bytes) and draining. CM_ERR_FORMAT when it is not a valid entry
 * or carries another protocol_version.
 */
cm_err gw_discovery_parse(const char *json, size_t len, char *model, char *address, int *draining);

/* gw_discovery_keep_unlisted: 1 when w, absent from a successful registry scan at now_ms
 * (cm_clock_mono_ms()), stays in the pool: static, or connected and answering. */
int gw_discovery_keep_unlisted(const gw_worker *w, int64_t now_ms);

#endif /* GW_DISCOVERY_H */
