/*
 * gw_ratelimit: per-tenant limits in Redis, checked asynchronously on a loop thread's libuv
 * loop (hiredis async + its libuv adapter). One connection per loop thread.
 *
 * Admission runs ONE Lua script atomically (loaded with SCRIPT LOAD, called with EVALSHA,
 * reloaded on NOSCRIPT): a sliding one-minute window of requests (RPM), a one-minute window
 * of reserved tokens (TPM: prompt estimate + max_tokens, corrected at the end by the real
 * usage), and a concurrency set of expiring leases (a sorted set scored by expiry), so a
 * crashed gateway's slots free themselves after lease_ttl_ms. State lives only in Redis: the
 * limits hold across any number of gateway replicas.
 *
 * Redis down or slow: every check answers within redis_timeout_ms with the configured
 * fail-open (admit) or fail-closed (503) verdict, counts a metric and logs (rate-limited).
 * The connection is re-established with exponential backoff by our own timers, because
 * hiredis 0.14's libuv adapter never reports a refused connect and has no timeouts.
 *
 * Thread contract: everything is called on the owning loop thread only.
 */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stdint.h>

#include <uv.h>

#include "cm_err.h"
#include "gw_auth.h"
#include "gw_config.h"
#include "gw_metrics.h"

typedef struct gw_ratelimit gw_ratelimit;

typedef struct gw_rl_verdict {
    int allowed;       /* 1: go on */
    int redis_failed;  /* Redis did not answer: allowed reflects fail-open/closed */
    const char *limit; /* when refused: "requests", "tokens" or "concurrency" */
    int retry_after_s; /* when refused */
    int64_t limit_requests, remaining_requests; /* -1 = unlimited/unknown */
    int64_t limit_tokens, remaining_tokens;
    /* ms until the oldest request / token bucket counted in the one-minute window leaves it
     * (the remaining figure grows again); -1 = unlimited/unknown */
    int64_t reset_requests_ms, reset_tokens_ms;
} gw_rl_verdict;

/* Called exactly once per gw_ratelimit_admit, on the loop thread (possibly before
 * gw_ratelimit_admit returns). */
typedef void (*gw_rl_cb)(void *arg, const gw_rl_verdict *v);

/* Called once per gw_ratelimit_lookup_key: found = 1 with the tenant, 0 when the key is
 * unknown, -1 when Redis did not answer (t is NULL then). On the loop thread. */
typedef void (*gw_rl_key_cb)(void *arg, int found, const gw_tenant *t);

/* gw_ratelimit_create connects (asynchronously) to cfg->redis_url on loop. */
cm_err gw_ratelimit_create(uv_loop_t *loop, const gw_config *cfg, gw_metrics *metrics,
                           _Atomic int *redis_ok, gw_ratelimit **out);
/* gw_ratelimit_destroy drops the connection; pending callbacks are called with a failure
 * verdict first. The loop must run afterwards to close the handles (uv_run once). */
void gw_ratelimit_destroy(gw_ratelimit *rl);

/*
 * gw_ratelimit_admit checks and, when allowed, records one request of `tokens` reserved
 * tokens for tenant t, taking the concurrency lease `lease` (unique, e.g. the request id).
 * A tenant with no limits is allowed without asking Redis.
 */
void gw_ratelimit_admit(gw_ratelimit *rl, const gw_tenant *t, uint32_t tokens, const char *lease,
                        gw_rl_cb cb, void *arg);

/*
 * gw_ratelimit_finish releases the lease and corrects the token window by actual - reserved
 * (negative gives tokens back). Fire and forget: failures only count a metric.
 */
void gw_ratelimit_finish(gw_ratelimit *rl, const gw_tenant *t, const char *lease,
                         int64_t token_correction);

/*
 * gw_ratelimit_lookup_key reads the hash sluice:apikey:<sha256_hex> (fields tenant, rpm, tpm,
 * max_concurrency) within redis_timeout_ms. The digest is copied into the tenant found.
 */
void gw_ratelimit_lookup_key(gw_ratelimit *rl, const uint8_t digest[CM_SHA256_LEN], gw_rl_key_cb cb,
                             void *arg);

/* gw_ratelimit_connected: 1 while the connection is up. */
int gw_ratelimit_connected(const gw_ratelimit *rl);

#endif /* GW_RATELIMIT_H */
