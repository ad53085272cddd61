#include "gw_config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_config.h"
#include "cm_log.h"

/* ---- YAML schema (every key is in sluice-gateway.example.yaml) ---- */

static const cyaml_schema_field_t limits_fields[] = {
    CYAML_FIELD_UINT("max_body_bytes", CYAML_FLAG_OPTIONAL, gw_limits, max_body_bytes),
    CYAML_FIELD_UINT("max_messages", CYAML_FLAG_OPTIONAL, gw_limits, max_messages),
    CYAML_FIELD_UINT("max_prompt_chars", CYAML_FLAG_OPTIONAL, gw_limits, max_prompt_chars),
    CYAML_FIELD_UINT("max_tokens", CYAML_FLAG_OPTIONAL, gw_limits, max_tokens),
    CYAML_FIELD_UINT("default_max_tokens", CYAML_FLAG_OPTIONAL, gw_limits, default_max_tokens),
    CYAML_FIELD_UINT("max_n", CYAML_FLAG_OPTIONAL, gw_limits, max_n),
    CYAML_FIELD_UINT("max_stop", CYAML_FLAG_OPTIONAL, gw_limits, max_stop),
    CYAML_FIELD_UINT("max_stop_chars", CYAML_FLAG_OPTIONAL, gw_limits, max_stop_chars),
    CYAML_FIELD_UINT("max_logit_bias", CYAML_FLAG_OPTIONAL, gw_limits, max_logit_bias),
    CYAML_FIELD_UINT("max_prompt_token_ids", CYAML_FLAG_OPTIONAL, gw_limits, max_prompt_token_ids),
    CYAML_FIELD_END};

static const cyaml_schema_field_t tenant_fields[] = {
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_POINTER, gw_tenant_cfg, name, 1, 63),
    CYAML_FIELD_STRING_PTR("key_sha256", CYAML_FLAG_POINTER, gw_tenant_cfg, key_sha256, 64, 64),
    CYAML_FIELD_UINT("rpm", CYAML_FLAG_OPTIONAL, gw_tenant_cfg, rpm),
    CYAML_FIELD_UINT("tpm", CYAML_FLAG_OPTIONAL, gw_tenant_cfg, tpm),
    CYAML_FIELD_UINT("max_concurrency", CYAML_FLAG_OPTIONAL, gw_tenant_cfg, max_concurrency),
    CYAML_FIELD_END};
static const cyaml_schema_value_t tenant_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, gw_tenant_cfg, tenant_fields)};

static const cyaml_schema_field_t worker_fields[] = {
    CYAML_FIELD_STRING_PTR("model", CYAML_FLAG_POINTER, gw_worker_cfg, model, 1, 127),
    CYAML_FIELD_STRING_PTR("address", CYAML_FLAG_POINTER, gw_worker_cfg, address, 1, 255),
    CYAML_FIELD_END};
static const cyaml_schema_value_t worker_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, gw_worker_cfg, worker_fields)};

static const cyaml_schema_value_t model_name_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, 127)};

static const cyaml_schema_field_t alias_target_fields[] = {
    CYAML_FIELD_STRING_PTR("model", CYAML_FLAG_POINTER, gw_alias_target_cfg, model, 1, 127),
    CYAML_FIELD_UINT("weight", CYAML_FLAG_DEFAULT, gw_alias_target_cfg, weight), CYAML_FIELD_END};
static const cyaml_schema_value_t alias_target_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, gw_alias_target_cfg, alias_target_fields)};
static const cyaml_schema_field_t alias_fields[] = {
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_POINTER, gw_alias_cfg, name, 1, 127),
    CYAML_FIELD_SEQUENCE("targets", CYAML_FLAG_POINTER, gw_alias_cfg, targets, &alias_target_schema,
                         1, GW_ALIAS_MAX_TARGETS),
    CYAML_FIELD_END};
static const cyaml_schema_value_t alias_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, gw_alias_cfg, alias_fields)};

static const cyaml_schema_field_t top_fields[] = {
    CYAML_FIELD_STRING_PTR("listen", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config, listen, 1,
                           255),
    CYAML_FIELD_STRING_PTR("metrics_listen", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config,
                           metrics_listen, 1, 255),
    CYAML_FIELD_UINT("threads", CYAML_FLAG_OPTIONAL, gw_config, threads),
    CYAML_FIELD_STRING_PTR("tls_cert", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config,
                           tls_cert, 1, 4095),
    CYAML_FIELD_STRING_PTR("tls_key", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config, tls_key,
                           1, 4095),
    CYAML_FIELD_BOOL("no_auth", CYAML_FLAG_OPTIONAL, gw_config, no_auth),
    CYAML_FIELD_UINT("max_inflight", CYAML_FLAG_OPTIONAL, gw_config, max_inflight),
    CYAML_FIELD_UINT("deadline_ms", CYAML_FLAG_OPTIONAL, gw_config, deadline_ms),
    CYAML_FIELD_UINT("max_deadline_ms", CYAML_FLAG_OPTIONAL, gw_config, max_deadline_ms),
    CYAML_FIELD_UINT("drain_timeout_ms", CYAML_FLAG_OPTIONAL, gw_config, drain_timeout_ms),
    CYAML_FIELD_UINT("max_header_bytes", CYAML_FLAG_OPTIONAL, gw_config, max_header_bytes),
    CYAML_FIELD_MAPPING("limits", CYAML_FLAG_OPTIONAL, gw_config, limits, limits_fields),
    CYAML_FIELD_STRING_PTR("redis", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config, redis_url,
                           1, 255),
    CYAML_FIELD_UINT("redis_timeout_ms", CYAML_FLAG_OPTIONAL, gw_config, redis_timeout_ms),
    CYAML_FIELD_BOOL("ratelimit_fail_open", CYAML_FLAG_OPTIONAL, gw_config, ratelimit_fail_open),
    CYAML_FIELD_UINT("lease_ttl_ms", CYAML_FLAG_OPTIONAL, gw_config, lease_ttl_ms),
    CYAML_FIELD_BOOL("redis_keys", CYAML_FLAG_OPTIONAL, gw_config, redis_keys),
    CYAML_FIELD_BOOL("discovery", CYAML_FLAG_OPTIONAL, gw_config, discovery),
    CYAML_FIELD_UINT("discovery_interval_ms", CYAML_FLAG_OPTIONAL, gw_config,
                     discovery_interval_ms),
    CYAML_FIELD_UINT("default_rpm", CYAML_FLAG_OPTIONAL, gw_config, default_rpm),
    CYAML_FIELD_UINT("default_tpm", CYAML_FLAG_OPTIONAL, gw_config, default_tpm),
    CYAML_FIELD_UINT("default_max_concurrency", CYAML_FLAG_OPTIONAL, gw_config,
                     default_max_concurrency),
    CYAML_FIELD_SEQUENCE("tenants", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config, tenants,
                         &tenant_schema, 0, 10000),
    CYAML_FIELD_SEQUENCE("workers", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config, workers,
                         &worker_schema, 0, 256),
    CYAML_FIELD_SEQUENCE("models", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config, models,
                         &model_name_schema, 0, 64),
    CYAML_FIELD_SEQUENCE("aliases", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config, aliases,
                         &alias_schema, 0, GW_ALIAS_MAX),
    CYAML_FIELD_UINT("cold_start_wait_ms", CYAML_FLAG_OPTIONAL, gw_config, cold_start_wait_ms),
    CYAML_FIELD_UINT("model_memory_ms", CYAML_FLAG_OPTIONAL, gw_config, model_memory_ms),
    CYAML_FIELD_STRING_PTR("otlp_endpoint", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config,
                           otlp_endpoint, 8, 255),
    CYAML_FIELD_STRING_PTR("log_level", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, gw_config,
                           log_level, 1, 15),
    CYAML_FIELD_BOOL("log_json", CYAML_FLAG_OPTIONAL, gw_config, log_json),
    CYAML_FIELD_BOOL("log_prompts", CYAML_FLAG_OPTIONAL, gw_config, log_prompts),
    CYAML_FIELD_END};
static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, gw_config, top_fields)};

/* Runtime-only fields (cli keys) are freed by hand; the rest by cm_config_free. */
static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static void fill_defaults(gw_config *c) {
    gw_limits def;
    gw_limits_default(&def);
#define DEF(field, v)                                                                              \
    do {                                                                                           \
        if (c->field == 0)                                                                         \
            c->field = v;                                                                          \
    } while (0)
    DEF(limits.max_body_bytes, def.max_body_bytes);
    DEF(limits.max_messages, def.max_messages);
    DEF(limits.max_prompt_chars, def.max_prompt_chars);
    DEF(limits.max_tokens, def.max_tokens);
    DEF(limits.default_max_tokens, def.default_max_tokens);
    DEF(limits.max_n, def.max_n);
    DEF(limits.max_stop, def.max_stop);
    DEF(limits.max_stop_chars, def.max_stop_chars);
    DEF(limits.max_logit_bias, def.max_logit_bias);
    DEF(limits.max_prompt_token_ids, def.max_prompt_token_ids);
    DEF(max_inflight, 4096);
    DEF(deadline_ms, 120000);
    DEF(max_deadline_ms, 600000);
    DEF(drain_timeout_ms, 10000);
    DEF(redis_timeout_ms, 200);
    DEF(lease_ttl_ms, 15000);
    DEF(max_header_bytes, 32768);
    DEF(discovery_interval_ms, 1000);
    DEF(model_memory_ms, 600000);
#undef DEF
}

static cm_err validate(void *data, cm_config_check *chk, void *arg) {
    gw_config *c = data;
    char key[96], msg[512];
    (void)arg;
    if (gw_alias_check(c->aliases, c->aliases_count, key, sizeof key, msg, sizeof msg) != CM_OK)
        return cm_config_reject(chk, key, "%s", msg);
    if ((c->tls_cert == NULL) != (c->tls_key == NULL))
        return cm_config_reject(chk, "tls_cert", "and tls_key must be given together");
    if (c->limits.max_n > 64)
        return cm_config_reject(chk, "limits.max_n", "must be at most 64");
    if (c->threads > 64)
        return cm_config_reject(chk, "threads", "must be at most 64");
    if (c->lease_ttl_ms != 0 && c->lease_ttl_ms < 3000)
        return cm_config_reject(chk, "lease_ttl_ms", "must be at least 3000 (renewed every third)");
    if (c->max_header_bytes != 0 && (c->max_header_bytes < 1024 || c->max_header_bytes > 262144))
        return cm_config_reject(chk, "max_header_bytes", "must be between 1024 and 262144");
    if (c->cold_start_wait_ms > 600000)
        return cm_config_reject(chk, "cold_start_wait_ms", "must be at most 600000");
    if (c->log_level != NULL && cm_log_parse_level(c->log_level) < 0)
        return cm_config_reject(chk, "log_level", "must be debug, info, warn or error");
    return CM_OK;
}

static void usage(FILE *f) {
    fprintf(f, "usage: sluice-gateway [--config FILE] [--listen HOST:PORT] "
               "[--redis redis://HOST:PORT]\n"
               "                      [--worker MODEL=NNG_ADDR]... [--api-key KEY]... "
               "[--threads N] [--no-auth]\n"
               "                      [--fail-open | --fail-closed] [--discovery] "
               "[--max-inflight N]\n"
               "                      [--default-rpm N] [--default-tpm N] "
               "[--default-concurrency N]\n"
               "                      [--model NAME]... [--cold-start-wait-ms N]\n"
               "                      [--alias NAME=MODEL:WEIGHT[,MODEL:WEIGHT...]]...\n"
               "                      [--metrics-listen HOST:PORT]   (admin port: /metrics)\n"
               "                      [--otlp-endpoint http://HOST:PORT]   (span export)\n");
}

static int parse_u32(const char *s, uint32_t *out) {
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

cm_err gw_config_defaults(gw_config **out) {
    gw_config *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CM_ERR_NOMEM;
    fill_defaults(c);
    c->listen = dup_str("127.0.0.1:8000");
    *out = c;
    return CM_OK;
}

enum {
    OPT_NO_AUTH = 256,
    OPT_FAIL_OPEN,
    OPT_FAIL_CLOSED,
    OPT_DISCOVERY,
    OPT_MAX_INFLIGHT,
    OPT_RPM,
    OPT_TPM,
    OPT_CONC,
    OPT_METRICS,
    OPT_REDIS_KEYS,
    OPT_MODEL,
    OPT_COLD_WAIT,
    OPT_OTLP,
    OPT_ALIAS
};

cm_err gw_config_load(int argc, char **argv, gw_config **out, char *err, size_t errlen) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"redis", required_argument, NULL, 'r'},
        {"worker", required_argument, NULL, 'w'},
        {"api-key", required_argument, NULL, 'k'},
        {"threads", required_argument, NULL, 't'},
        {"no-auth", no_argument, NULL, OPT_NO_AUTH},
        {"fail-open", no_argument, NULL, OPT_FAIL_OPEN},
        {"fail-closed", no_argument, NULL, OPT_FAIL_CLOSED},
        {"discovery", no_argument, NULL, OPT_DISCOVERY},
        {"redis-keys", no_argument, NULL, OPT_REDIS_KEYS},
        {"max-inflight", required_argument, NULL, OPT_MAX_INFLIGHT},
        {"default-rpm", required_argument, NULL, OPT_RPM},
        {"default-tpm", required_argument, NULL, OPT_TPM},
        {"default-concurrency", required_argument, NULL, OPT_CONC},
        {"metrics-listen", required_argument, NULL, OPT_METRICS},
        {"otlp-endpoint", required_argument, NULL, OPT_OTLP},
        {"model", required_argument, NULL, OPT_MODEL},
        {"alias", required_argument, NULL, OPT_ALIAS},
        {"cold-start-wait-ms", required_argument, NULL, OPT_COLD_WAIT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    gw_config *c = NULL;
    const char *path = NULL;
    int o;
    cm_err rv;
    *out = NULL;
    err[0] = '\0';
    /* First pass: find --config. */
    optind = 0; /* 0: glibc fully re-initializes getopt (the function may run twice) */
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 'c')
            path = optarg;
        if (o == 'h') {
            usage(stdout);
            return CM_ERR_CANCELLED;
        }
        if (o == '?') {
            snprintf(err, errlen, "unknown or incomplete option '%s' (see --help)",
                     argv[optind - 1]);
            return CM_ERR_CONFIG;
        }
    }
    if (path != NULL) {
        cm_config_opts copts = {.validate = validate};
        rv = cm_config_load(path, &top_schema, &copts, (void **)&c, err, errlen);
        if (rv != CM_OK)
            return rv;
    } else {
        c = calloc(1, sizeof *c);
        if (c == NULL)
            return CM_ERR_NOMEM;
    }
    optind = 0; /* 0: glibc fully re-initializes getopt (the function may run twice) */
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        uint32_t v;
        switch (o) {
        case 'l':
            free(c->listen);
            c->listen = dup_str(optarg);
            break;
        case OPT_METRICS:
            free(c->metrics_listen);
            c->metrics_listen = dup_str(optarg);
            break;
        case OPT_OTLP:
            free(c->otlp_endpoint);
            c->otlp_endpoint = dup_str(optarg);
            break;
        case 'r':
            free(c->redis_url);
            c->redis_url = dup_str(optarg);
            break;
        case 'w': {
            const char *eq = strchr(optarg, '=');
            gw_worker_cfg *nw;
            if (eq == NULL || eq == optarg || eq[1] == '\0') {
                snprintf(err, errlen, "--worker '%s' must be MODEL=NNG_ADDR", optarg);
                rv = CM_ERR_CONFIG;
                goto fail;
            }
            nw = realloc(c->workers, (c->workers_count + 1) * sizeof *nw);
            if (nw == NULL) {
                rv = CM_ERR_NOMEM;
                goto fail;
            }
            c->workers = nw;
            nw[c->workers_count].model = strndup(optarg, (size_t)(eq - optarg));
            nw[c->workers_count].address = dup_str(eq + 1);
            c->workers_count++;
            break;
        }
        case OPT_MODEL: {
            char **nm;
            size_t len = strlen(optarg);
            if (len == 0 || len >= 128 || c->models_count >= 64) {
                snprintf(err, errlen, "--model '%.64s': names are 1..127 bytes, at most 64 models",
                         optarg);
                rv = CM_ERR_CONFIG;
                goto fail;
            }
            nm = realloc(c->models, (c->models_count + 1) * sizeof *nm);
            if (nm == NULL) {
                rv = CM_ERR_NOMEM;
                goto fail;
            }
            c->models = nm;
            if ((c->models[c->models_count] = dup_str(optarg)) == NULL) {
                rv = CM_ERR_NOMEM;
                goto fail;
            }
            c->models_count++;
            break;
        }
        case OPT_ALIAS: {
            gw_alias_cfg a, *na;
            if ((rv = gw_alias_parse_flag(optarg, &a, err, errlen)) != CM_OK)
                goto fail;
            na = realloc(c->aliases, (c->aliases_count + 1) * sizeof *na);
            if (na == NULL) {
                gw_alias_cfg_fini(&a);
                rv = CM_ERR_NOMEM;
                goto fail;
            }
            c->aliases = na;
            c->aliases[c->aliases_count++] = a;
            break;
        }
        case 'k': {
            char **nk = realloc(c->cli_keys, (c->cli_keys_count + 1) * sizeof *nk);
            if (nk == NULL || optarg[0] == '\0') {
                snprintf(err, errlen, "--api-key must not be empty");
                if (nk != NULL)
                    c->cli_keys = nk;
                rv = CM_ERR_CONFIG;
                goto fail;
            }
            c->cli_keys = nk;
            c->cli_keys[c->cli_keys_count++] = dup_str(optarg);
            break;
        }
        case 't':
        case OPT_MAX_INFLIGHT:
        case OPT_RPM:
        case OPT_TPM:
        case OPT_CONC:
        case OPT_COLD_WAIT:
            if (parse_u32(optarg, &v) != 0) {
                snprintf(err, errlen, "option '%s' needs a non-negative integer, got '%s'",
                         argv[optind - 2 >= 0 ? optind - 2 : 0], optarg);
                rv = CM_ERR_CONFIG;
                goto fail;
            }
            if (o == 't')
                c->threads = v > 64 ? 64 : v;
            else if (o == OPT_MAX_INFLIGHT)
                c->max_inflight = v;
            else if (o == OPT_RPM)
                c->default_rpm = v;
            else if (o == OPT_TPM)
                c->default_tpm = v;
            else if (o == OPT_COLD_WAIT)
                c->cold_start_wait_ms = v > 600000 ? 600000 : v;
            else
                c->default_max_concurrency = v;
            break;
        case OPT_NO_AUTH:
            c->no_auth = true;
            break;
        case OPT_FAIL_OPEN:
            c->ratelimit_fail_open = true;
            break;
        case OPT_FAIL_CLOSED:
            c->ratelimit_fail_open = false;
            break;
        case OPT_DISCOVERY:
            c->discovery = true;
            break;
        case OPT_REDIS_KEYS:
            c->redis_keys = true;
            break;
        default:
            break;
        }
    }
    if (c->listen == NULL)
        c->listen = dup_str("127.0.0.1:8000");
    fill_defaults(c);
    if (c->metrics_listen != NULL && strcmp(c->metrics_listen, c->listen) == 0) {
        /* Both would bind with SO_REUSEPORT and split connections between them. */
        snprintf(err, errlen, "--metrics-listen must differ from --listen (%s)", c->listen);
        rv = CM_ERR_CONFIG;
        goto fail;
    }
    {
        /* Again over YAML and flags together (duplicates across both, the count). */
        char key[96], msg[512];
        if (gw_alias_check(c->aliases, c->aliases_count, key, sizeof key, msg, sizeof msg) !=
            CM_OK) {
            snprintf(err, errlen, "%s", msg);
            rv = CM_ERR_CONFIG;
            goto fail;
        }
    }
    if (!c->no_auth && c->tenants_count == 0 && c->cli_keys_count == 0 && !c->redis_keys) {
        snprintf(err, errlen,
                 "no API keys configured: give --api-key KEY, tenants in the "
                 "config, redis_keys: true, or --no-auth for local use");
        rv = CM_ERR_CONFIG;
        goto fail;
    }
    if ((c->redis_keys || c->discovery) && c->redis_url == NULL) {
        snprintf(err, errlen, "redis_keys and discovery need a Redis: give --redis or 'redis:'");
        rv = CM_ERR_CONFIG;
        goto fail;
    }
    if (c->workers_count == 0 && !(c->discovery && c->redis_url != NULL)) {
        snprintf(err, errlen,
                 "no workers: give --worker MODEL=ADDR, workers in the config, "
                 "or --redis with --discovery");
        rv = CM_ERR_CONFIG;
        goto fail;
    }
    *out = c;
    return CM_OK;
fail:
    gw_config_free(c);
    return rv;
}

void gw_config_free(gw_config *c) {
    if (c == NULL)
        return;
    for (unsigned i = 0; i < c->cli_keys_count; i++)
        free(c->cli_keys[i]);
    free(c->cli_keys);
    c->cli_keys = NULL;
    c->cli_keys_count = 0;
    /* Everything else was allocated with malloc in the shapes cyaml frees. */
    cm_config_free(&top_schema, c);
}
