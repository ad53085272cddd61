/*
 * gw_auth: API key -> tenant. Keys come from the config (stored as sha256 hex, never in
 * clear) and from --api-key flags (hashed at start, the "default" tenant). A presented key
 * is hashed and compared against every configured digest in constant time, so timing
 * reveals neither which key matched nor how much of it. Keys added in Redis
 * (sluice:apikey:SHA256HEX) are looked up by the rate limiter's connection (gw_ratelimit).
 *
 * The table is built once at start and read-only afterwards: safe from any thread.
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "cm_sha256.h"
#include "gw_config.h"

#define GW_TENANT_NAME_MAX 64

typedef struct gw_tenant {
    char name[GW_TENANT_NAME_MAX];
    uint8_t digest[CM_SHA256_LEN];
    uint32_t rpm, tpm, max_concurrency; /* 0 = unlimited */
} gw_tenant;

typedef struct gw_auth {
    int disabled;        /* --no-auth: every request is the "anonymous" tenant */
    gw_tenant anonymous; /* used when disabled */
    gw_tenant *tenants;  /* (n_tenants) */
    size_t n_tenants;
} gw_auth;

/* gw_auth_init builds the table from cfg. CM_ERR_CONFIG for a malformed key_sha256. */
cm_err gw_auth_init(gw_auth *a, const gw_config *cfg, char *err, size_t errlen);
void gw_auth_fini(gw_auth *a);

/*
 * gw_auth_bearer extracts the key from an Authorization header value ("Bearer KEY", the
 * scheme case-insensitive). Returns 0 and sets *key and *key_len (pointing into value), or -1.
 */
int gw_auth_bearer(const char *value, size_t len, const char **key, size_t *key_len);

/*
 * gw_auth_lookup finds the tenant of key (key_len bytes) among the configured ones, in time
 * independent of which entry matches. digest_out (may be NULL) receives sha256(key), for a
 * Redis lookup when this returns NULL. The result is borrowed from a.
 */
const gw_tenant *gw_auth_lookup(const gw_auth *a, const char *key, size_t key_len,
                                uint8_t digest_out[CM_SHA256_LEN]);

#endif /* GW_AUTH_H */
