/*
 * gw_ratelimit: per-tenant limits in Redis, checked asynchronously on a loop thread's libuv
 * loop (hiredis async + its libuv adapter). One connection per loop thread.
 *
 * Admission runs ONE Lua script atomically (loaded with SCRIPT LOAD, called with EVALSHA,
 * reloaded on NOSCRIPT): a sliding one-minute window of requests (RPM), a one-minute window
 * of reserved tokens (TPM: prompt estimate + max_tokens, corrected at the end by the real
 * usage), and a set of expiring leases keyed by a unique lease id (a sorted set scored by
 * expiry; its size is the tenant's concurrency). State lives only in Redis: the limits hold
 * across any number of gateway replicas.
 *
 * Leases and timeouts: an admission whose reply does not come within redis_timeout_ms is
 * decided by fail-open/closed, but the script may still run later (a stalled Redis runs its
 * queued commands when it resumes). So every admission sent is released by its id, whatever
 * the reply: the release removes the lease and reconciles tokens when the admission ran, and
 * otherwise leaves a short-lived tombstone that makes a late admission record nothing. Leases
 * of running requests are renewed (lease_ttl_ms / 3), so lease_ttl_ms can be short: it only
 * matters when a gateway stops without releasing (crash).
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
#include "gw_error.h"
#include "gw_metrics.h"

typedef struct gw_ratelimit gw_ratelimit;
/* One admission sent to Redis; owned by gw_ratelimit, handed back with gw_ratelimit_release. */
typedef struct gw_rl_lease gw_rl_lease;

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
 * verdict first (they may release their leases then; no lease may be released after destroy
 * returns). rl is freed when the loop runs afterwards (uv_run once); at exit it is left. */
void gw_ratelimit_destroy(gw_ratelimit *rl);

/*
 * gw_ratelimit_admit checks and, when allowed, records one request of `tokens` reserved
 * tokens for tenant t, holding a lease whose id is made of request_id (shown in Redis, need
 * not be unique) and a unique suffix. *lease receives the admission (set before cb can run),
 * or NULL when Redis was not asked (not connected: cb has run with the failure verdict). A
 * non-NULL *lease must be handed to gw_ratelimit_release exactly once, whatever the verdict
 * (also after a timeout or a refusal), after cb ran.
 */
void gw_ratelimit_admit(gw_ratelimit *rl, const gw_tenant *t, uint32_t tokens,
                        const char *request_id, gw_rl_cb cb, void *arg, gw_rl_lease **lease);

/*
 * gw_ratelimit_release ends an admission: when Redis recorded it, the lease is removed and the
 * token window corrected by token_correction (actual - reserved; negative gives tokens back);
 * refund = 1 also removes the request from the RPM window (the gateway refused it after all,
 * e.g. 503). An admission refused by the script costs nothing and sends nothing. Fire and
 * forget: failures only count a metric (the lease then expires within lease_ttl_ms). Frees
 * the lease (possibly later, once Redis replied); it must not be used afterwards.
 */
void gw_ratelimit_release(gw_ratelimit *rl, gw_rl_lease *lease, int64_t token_correction,
                          int refund);

/*
 * gw_ratelimit_lookup_key reads the hash sluice:apikey:<sha256_hex> (fields tenant, rpm, tpm,
 * max_concurrency) within redis_timeout_ms. The digest is copied into the tenant found.
 */
void gw_ratelimit_lookup_key(gw_ratelimit *rl, const uint8_t digest[CM_SHA256_LEN], gw_rl_key_cb cb,
                             void *arg);

/* gw_ratelimit_refusal fills e with the answer to a refused verdict v (allowed == 0) for the
 * tenant named tenant: 503 when Redis failed (fail-closed), else 429 naming the limit, both
 * with Retry-After. */
void gw_ratelimit_refusal(const gw_rl_verdict *v, const char *tenant, gw_error *e);

/* gw_ratelimit_connected: 1 while the connection is up. */
int gw_ratelimit_connected(const gw_ratelimit *rl);

#endif /* GW_RATELIMIT_H */
