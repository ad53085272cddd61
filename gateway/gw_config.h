/*
 * gw_config: the gateway's configuration: YAML file (optional) + command-line flags, flags
 * winning. Every setting is one row of a cm_opt table in gw_config.c (flag and/or YAML key,
 * bounds shared by both, default, help); --help and the options table in docs/gateway.md come
 * from it. Loading and validation live in gw_config.c; the runtime reads the plain,
 * already-validated gw_config and never changes it after start (read-only across threads).
 * Every key is also shown in gateway/sluice-gateway.example.yaml.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "gw_alias.h"
#include "gw_limits.h"

typedef struct gw_tenant_cfg {
    char *name;
    char *key_sha256;         /* 64 hex digits of sha256(api key) */
    uint32_t rpm;             /* requests per minute; 0 = unlimited */
    uint32_t tpm;             /* tokens per minute; 0 = unlimited */
    uint32_t max_concurrency; /* concurrent requests; 0 = unlimited */
} gw_tenant_cfg;

typedef struct gw_worker_cfg {
    char *model;
    char *address;
} gw_worker_cfg;

typedef struct gw_config {
    char *listen;              /* HOST:PORT */
    char *metrics_listen;      /* HOST:PORT of the admin listener (/metrics, /health, /ready);
                                  NULL = /metrics is served nowhere. Never the public port:
                                  metrics name tenants and worker addresses. */
    uint32_t threads;          /* loop threads; 0 = number of CPUs */
    char *tls_cert, *tls_key;  /* PEM files; both or neither */
    bool no_auth;              /* explicit: accept requests without an API key */
    uint32_t max_inflight;     /* requests in flight per gateway; beyond: 503 */
    uint32_t deadline_ms;      /* default per-request deadline */
    uint32_t max_deadline_ms;  /* largest x-sluice-timeout-ms accepted */
    uint32_t drain_timeout_ms; /* on SIGTERM: time given to requests in flight */
    uint32_t max_header_bytes; /* request line + headers; larger: 431 */
    gw_limits limits;

    char *redis_url;           /* redis://HOST:PORT or NULL */
    uint32_t redis_timeout_ms; /* connect and command timeout */
    bool ratelimit_fail_open;  /* Redis down: admit (true) or 503 (false) */
    uint32_t lease_ttl_ms;     /* lease expiry unless renewed (every third of it) */
    bool redis_keys;           /* look API keys up in Redis too */
    bool discovery;            /* SCAN the Redis worker registry */
    uint32_t discovery_interval_ms;

    uint32_t default_rpm, default_tpm, default_max_concurrency; /* --api-key tenant */
    gw_tenant_cfg *tenants;
    unsigned tenants_count;
    gw_worker_cfg *workers;
    unsigned workers_count;
    char **models; /* known with zero live workers (scale from zero); also --model NAME */
    unsigned models_count;
    gw_alias_cfg *aliases; /* public names -> weighted served names; also --alias (gw_alias.h) */
    unsigned aliases_count;
    uint32_t cold_start_wait_ms; /* known model, no live worker: wait this long (0 = 503 now) */
    uint32_t model_memory_ms;    /* a registry model stays known this long after its last
                                    worker left */

    char *otlp_endpoint; /* http://HOST[:PORT][/PATH] of an OTLP/HTTP collector; NULL = no spans */

    char *log_level; /* debug|info|warn|error */
    bool log_json;
    bool log_prompts; /* log prompt text (off: never logged) */

    /* From the command line only (not YAML): plain keys of the default tenant. */
    char **cli_keys;
    unsigned cli_keys_count;
} gw_config;

/*
 * gw_config_load builds a config from argv (and the YAML file named by --config, if any).
 * On CM_OK *out owns a config: free with gw_config_free. On failure err holds one line
 * (file:line:col for YAML problems) and *out is NULL. --help prints usage and returns
 * CM_ERR_CANCELLED.
 */
cm_err gw_config_load(int argc, char **argv, gw_config **out, char *err, size_t errlen);

/* gw_config_defaults returns a config with every default and nothing else (tests). */
cm_err gw_config_defaults(gw_config **out);

/* gw_config_free frees cfg and everything it holds; cfg may be NULL. */
void gw_config_free(gw_config *cfg);

/* gw_config_table: the option descriptors (for the docs test and tools); static. */
struct cm_opt_table;
const struct cm_opt_table *gw_config_table(void);

#endif /* GW_CONFIG_H */
