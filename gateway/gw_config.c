/*
 * gw_config: defaults -> YAML file (--config) -> flags, then the checks between settings. Every
 * setting is one row of opts[] (cm_opt): its flag and/or YAML key, bounds (the same for both),
 * default and help; --help and the options table in docs/gateway.md come from it
 * (tests/unit/config/gateway_options_test.c keeps the docs in step). Lists (tenants, workers,
 * models, aliases, API keys) are custom rows: their flags append to what the file gave.
 */
#include "gw_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_opt.h"

/* ---- YAML schemas of the list settings ---- */

static const cyaml_schema_field_t tenant_fields[] = {
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_POINTER, gw_tenant_cfg, name, 1, 63),
    CYAML_FIELD_STRING_PTR("key_sha256", CYAML_FLAG_POINTER, gw_tenant_cfg, key_sha256, 64, 64),
    CYAML_FIELD_UINT("rpm", CYAML_FLAG_OPTIONAL, gw_tenant_cfg, rpm),
    CYAML_FIELD_UINT("tpm", CYAML_FLAG_OPTIONAL, gw_tenant_cfg, tpm),
    CYAML_FIELD_UINT("max_concurrency", CYAML_FLAG_OPTIONAL, gw_tenant_cfg, max_concurrency),
    CYAML_FIELD_END};
static const cyaml_schema_value_t tenant_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, gw_tenant_cfg, tenant_fields)};
static const cyaml_schema_value_t tenants_value = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, gw_tenant_cfg, &tenant_schema, 0, 10000)};

static const cyaml_schema_field_t worker_fields[] = {
    CYAML_FIELD_STRING_PTR("model", CYAML_FLAG_POINTER, gw_worker_cfg, model, 1, 127),
    CYAML_FIELD_STRING_PTR("address", CYAML_FLAG_POINTER, gw_worker_cfg, address, 1, 255),
    CYAML_FIELD_END};
static const cyaml_schema_value_t worker_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, gw_worker_cfg, worker_fields)};
static const cyaml_schema_value_t workers_value = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, gw_worker_cfg, &worker_schema, 0, 256)};

static const cyaml_schema_value_t model_name_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, 127)};
static const cyaml_schema_value_t models_value = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, char *, &model_name_schema, 0, 64)};

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
static const cyaml_schema_value_t aliases_value = {
    CYAML_VALUE_SEQUENCE(CYAML_FLAG_POINTER, gw_alias_cfg, &alias_schema, 0, GW_ALIAS_MAX)};

/* ---- the list rows' callbacks ---- */

/* Grows *arr (count entries of size bytes) by one zeroed entry; NULL when out of memory. */
static void *append(void *arr_ptr, unsigned *count, size_t size) {
    void **arr = arr_ptr;
    char *grown = realloc(*arr, (*count + 1) * size);
    if (grown == NULL)
        return NULL;
    *arr = grown;
    memset(grown + *count * size, 0, size);
    return grown + (*count)++ * size;
}

/* The file is read before the flags, so the lists are empty when YAML hands them over. */
static cm_err take_tenants(void *cfg, const cm_opt *o, void **value, unsigned count,
                           cm_config_check *chk) {
    gw_config *c = cfg;
    (void)o, (void)chk;
    c->tenants = *value;
    c->tenants_count = count;
    *value = NULL;
    return CM_OK;
}

static cm_err take_workers(void *cfg, const cm_opt *o, void **value, unsigned count,
                           cm_config_check *chk) {
    gw_config *c = cfg;
    (void)o, (void)chk;
    c->workers = *value;
    c->workers_count = count;
    *value = NULL;
    return CM_OK;
}

static cm_err take_models(void *cfg, const cm_opt *o, void **value, unsigned count,
                          cm_config_check *chk) {
    gw_config *c = cfg;
    (void)o, (void)chk;
    c->models = *value;
    c->models_count = count;
    *value = NULL;
    return CM_OK;
}

static cm_err take_aliases(void *cfg, const cm_opt *o, void **value, unsigned count,
                           cm_config_check *chk) {
    gw_config *c = cfg;
    char key[96], msg[512];
    (void)o;
    if (gw_alias_check(*value, count, key, sizeof key, msg, sizeof msg) != CM_OK)
        return cm_config_reject(chk, key, "%s", msg);
    c->aliases = *value;
    c->aliases_count = count;
    *value = NULL;
    return CM_OK;
}

static cm_err add_worker(void *cfg, const cm_opt *o, const char *name, const char *value, char *err,
                         size_t errlen) {
    gw_config *c = cfg;
    const char *eq = strchr(value, '=');
    (void)o;
    if (eq == NULL || eq == value || eq[1] == '\0' || eq - value > 127 || strlen(eq + 1) > 255)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "%s '%.64s' must be MODEL=NNG_ADDR", name,
                       value);
    gw_worker_cfg *w = append(&c->workers, &c->workers_count, sizeof *w);
    if (w == NULL || (w->model = strndup(value, (size_t)(eq - value))) == NULL ||
        (w->address = strdup(eq + 1)) == NULL)
        return CM_ERR_NOMEM;
    return CM_OK;
}

static cm_err add_model(void *cfg, const cm_opt *o, const char *name, const char *value, char *err,
                        size_t errlen) {
    gw_config *c = cfg;
    size_t len = strlen(value);
    (void)o;
    if (len == 0 || len >= 128 || c->models_count >= 64)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "%s '%.64s': names are 1..127 bytes, at most 64 models", name, value);
    char **m = append(&c->models, &c->models_count, sizeof *m);
    if (m == NULL || (*m = strdup(value)) == NULL)
        return CM_ERR_NOMEM;
    return CM_OK;
}

static cm_err add_alias(void *cfg, const cm_opt *o, const char *name, const char *value, char *err,
                        size_t errlen) {
    gw_config *c = cfg;
    gw_alias_cfg a;
    (void)o, (void)name;
    cm_err rv = gw_alias_parse_flag(value, &a, err, errlen);
    if (rv != CM_OK)
        return rv;
    gw_alias_cfg *slot = append(&c->aliases, &c->aliases_count, sizeof *slot);
    if (slot == NULL) {
        gw_alias_cfg_fini(&a);
        return CM_ERR_NOMEM;
    }
    *slot = a;
    return CM_OK;
}

static cm_err add_key(void *cfg, const cm_opt *o, const char *name, const char *value, char *err,
                      size_t errlen) {
    gw_config *c = cfg;
    (void)o;
    if (value[0] == '\0')
        return cm_errf(CM_ERR_CONFIG, err, errlen, "%s must not be empty", name);
    char **k = append(&c->cli_keys, &c->cli_keys_count, sizeof *k);
    if (k == NULL || (*k = strdup(value)) == NULL)
        return CM_ERR_NOMEM;
    return CM_OK;
}

/* ---- the table ---- */

#define G(m) offsetof(gw_config, m), sizeof(((gw_config *)0)->m)
#define LIM(m) offsetof(gw_config, limits.m), sizeof(((gw_config *)0)->limits.m)
#define LIST(m) CM_OPT_CUSTOM, G(m), 0, 0 /* offset: the list field (for reading) */
#define MAX_MS (24u * 3600u * 1000u)      /* a day: beyond it a timeout is a mistake */
/* gw_limits' byte bounds are size_t, read as CM_OPT_U64 rows. */
_Static_assert(sizeof(size_t) == sizeof(uint64_t), "size_t limits are CM_OPT_U64 rows");

/*
 * Rows in --help order. Where 0 used to mean "use the default" (and so never reached the
 * runtime) the range starts at 1: an explicit 0 is refused instead of silently replaced.
 */
static const cm_opt opts[] = {
    {"listen", "listen", CM_OPT_STRP, G(listen), 1, 255, .def = "127.0.0.1:8000",
     .arg = "HOST:PORT", .help = "public HTTP listener (OpenAI API)"},
    {"metrics-listen", "metrics_listen", CM_OPT_STRP, G(metrics_listen), 1, 255, .arg = "HOST:PORT",
     .help = "admin listener for /metrics, /health, /ready; never the public port (metrics "
             "name tenants and worker addresses)",
     .def_doc = "none: /metrics served nowhere"},
    {"threads", "threads", CM_OPT_U32, G(threads), 0, 64, .def = "0", .arg = "N",
     .help = "event-loop threads (0 = number of CPUs)"},
    {NULL, "tls_cert", CM_OPT_STRP, G(tls_cert), 1, 4095,
     .help = "TLS certificate chain, PEM file (with tls_key)"},
    {NULL, "tls_key", CM_OPT_STRP, G(tls_key), 1, 4095,
     .help = "TLS private key, PEM file (with tls_cert)"},
    {"no-auth", "no_auth", CM_OPT_BOOL, G(no_auth), 0, 1, .def = "false", .set_to = "true",
     .help = "accept requests without an API key (local use)"},
    {"api-key", NULL, LIST(cli_keys), .arg = "KEY", .flag_fn = add_key,
     .help = "a plain API key of the default tenant (repeatable)"},
    {"max-inflight", "max_inflight", CM_OPT_U32, G(max_inflight), 1, UINT32_MAX, .def = "4096",
     .arg = "N", .help = "requests in flight per gateway; beyond: 503"},
    {NULL, "deadline_ms", CM_OPT_U32, G(deadline_ms), 1, MAX_MS, .def = "120000",
     .help = "default per-request deadline"},
    {NULL, "max_deadline_ms", CM_OPT_U32, G(max_deadline_ms), 1, MAX_MS, .def = "600000",
     .help = "largest x-sluice-timeout-ms accepted"},
    {NULL, "drain_timeout_ms", CM_OPT_U32, G(drain_timeout_ms), 1, MAX_MS, .def = "10000",
     .help = "on SIGTERM: time given to requests in flight"},
    {NULL, "max_header_bytes", CM_OPT_U32, G(max_header_bytes), 1024, 262144, .def = "32768",
     .help = "request line + headers; larger: 431"},
    {NULL, "limits.max_body_bytes", CM_OPT_U64, LIM(max_body_bytes), 1, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_BODY_BYTES), .help = "request body size; larger: 413"},
    {NULL, "limits.max_messages", CM_OPT_U32, LIM(max_messages), 1, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_MESSAGES), .help = "chat messages per request"},
    {NULL, "limits.max_prompt_chars", CM_OPT_U64, LIM(max_prompt_chars), 1, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_PROMPT_CHARS),
     .help = "bytes of prompt text (sum of message contents, or prompt)"},
    {NULL, "limits.max_tokens", CM_OPT_U32, LIM(max_tokens), 1, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_TOKENS),
     .help = "largest max_tokens / max_completion_tokens accepted"},
    {NULL, "limits.default_max_tokens", CM_OPT_U32, LIM(default_max_tokens), 0, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_DEFAULT_MAX_TOKENS),
     .help = "chat requests without max_tokens (0 = up to the remaining context)"},
    {NULL, "limits.max_n", CM_OPT_U32, LIM(max_n), 1, 64, .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_N),
     .help = "choices per request (n)"},
    {NULL, "limits.max_stop", CM_OPT_U32, LIM(max_stop), 1, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_STOP), .help = "stop strings per request"},
    {NULL, "limits.max_stop_chars", CM_OPT_U32, LIM(max_stop_chars), 1, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_STOP_CHARS), .help = "bytes per stop string"},
    {NULL, "limits.max_logit_bias", CM_OPT_U32, LIM(max_logit_bias), 1, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_LOGIT_BIAS), .help = "logit_bias entries"},
    {NULL, "limits.max_prompt_token_ids", CM_OPT_U32, LIM(max_prompt_token_ids), 1, UINT32_MAX,
     .def = CM_OPT_DEF(GW_LIMIT_DEF_MAX_PROMPT_TOKEN_IDS),
     .help = "length of a pre-tokenized completions prompt"},
    {"redis", "redis", CM_OPT_STRP, G(redis_url), 1, 255, .arg = "redis://HOST:PORT",
     .help = "Redis for rate limits, API keys and discovery"},
    {NULL, "redis_timeout_ms", CM_OPT_U32, G(redis_timeout_ms), 1, MAX_MS, .def = "200",
     .help = "Redis connect and command timeout"},
    {"fail-open", "ratelimit_fail_open", CM_OPT_BOOL, G(ratelimit_fail_open), 0, 1, .def = "false",
     .set_to = "true", .help = "Redis down: admit requests"},
    {"fail-closed", NULL, CM_OPT_BOOL, G(ratelimit_fail_open), 0, 1, .set_to = "false",
     .help = "Redis down: answer 503 (the default)"},
    {NULL, "lease_ttl_ms", CM_OPT_U32, G(lease_ttl_ms), 3000, MAX_MS, .def = "15000",
     .help = "a concurrency lease expires unless renewed (every third of it)"},
    {"redis-keys", "redis_keys", CM_OPT_BOOL, G(redis_keys), 0, 1, .def = "false", .set_to = "true",
     .help = "look API keys up in Redis too"},
    {"discovery", "discovery", CM_OPT_BOOL, G(discovery), 0, 1, .def = "false", .set_to = "true",
     .help = "SCAN the Redis worker registry for workers"},
    {NULL, "discovery_interval_ms", CM_OPT_U32, G(discovery_interval_ms), 1, MAX_MS, .def = "1000",
     .help = "time between registry scans"},
    {"default-rpm", "default_rpm", CM_OPT_U32, G(default_rpm), 0, UINT32_MAX, .def = "0",
     .arg = "N", .help = "requests per minute of the --api-key tenant (0 = unlimited)"},
    {"default-tpm", "default_tpm", CM_OPT_U32, G(default_tpm), 0, UINT32_MAX, .def = "0",
     .arg = "N", .help = "tokens per minute of the --api-key tenant (0 = unlimited)"},
    {"default-concurrency", "default_max_concurrency", CM_OPT_U32, G(default_max_concurrency), 0,
     UINT32_MAX, .def = "0", .arg = "N",
     .help = "concurrent requests of the --api-key tenant (0 = unlimited)"},
    {NULL, "tenants", LIST(tenants), .yaml_fn = take_tenants, .yaml = &tenants_value,
     .help = "tenants: name, key_sha256 (of the API key), rpm, tpm, max_concurrency"},
    {"worker", "workers", LIST(workers), .arg = "MODEL=NNG_ADDR", .flag_fn = add_worker,
     .yaml_fn = take_workers, .yaml = &workers_value,
     .help = "static workers (YAML: model, address); the flag repeats and adds to the file's"},
    {"model", "models", LIST(models), .arg = "NAME", .flag_fn = add_model, .yaml_fn = take_models,
     .yaml = &models_value,
     .help = "models known with no live worker (scale from zero); the flag repeats"},
    {"alias", "aliases", LIST(aliases), .arg = "NAME=MODEL:WEIGHT[,MODEL:WEIGHT...]",
     .flag_fn = add_alias, .yaml_fn = take_aliases, .yaml = &aliases_value,
     .help = "public names served by weighted served names (YAML: name, targets: model, "
             "weight); the flag repeats"},
    {"cold-start-wait-ms", "cold_start_wait_ms", CM_OPT_U32, G(cold_start_wait_ms), 0, 600000,
     .def = "0", .arg = "N", .help = "known model, no live worker: wait this long (0 = 503 now)"},
    {NULL, "model_memory_ms", CM_OPT_U32, G(model_memory_ms), 1, UINT32_MAX, .def = "600000",
     .help = "a registry model stays known this long after its last worker left"},
    /* Its form (http://, host, port) is checked where it is used: one message for both. */
    {"otlp-endpoint", "otlp_endpoint", CM_OPT_STRP, G(otlp_endpoint), 1, 255, .arg = "URL",
     .help = "OTLP/HTTP collector for spans, http://HOST[:PORT][/PATH] (none: no spans)"},
    {NULL, "log_level", CM_OPT_STRP, G(log_level), 1, 15, .def = "info", .help = "log level",
     .choices = "debug|info|warn|error"},
    {NULL, "log_json", CM_OPT_BOOL, G(log_json), 0, 1, .def = "false",
     .help = "JSON lines instead of logfmt"},
    {NULL, "log_prompts", CM_OPT_BOOL, G(log_prompts), 0, 1, .def = "false",
     .help = "add the first 256 bytes of the (last) prompt to the request log line"},
};

static const cm_opt_table table = {"sluice-gateway", "[--config FILE] [options]", opts,
                                   sizeof opts / sizeof opts[0]};

const struct cm_opt_table *gw_config_table(void) {
    return &table;
}

cm_err gw_config_defaults(gw_config **out) {
    gw_config *c = calloc(1, sizeof *c);
    *out = NULL;
    if (c == NULL)
        return CM_ERR_NOMEM;
    cm_err rv = cm_opt_defaults(&table, c, NULL, 0);
    if (rv != CM_OK) {
        gw_config_free(c);
        return rv;
    }
    *out = c;
    return CM_OK;
}

/* The checks between settings (each one alone is bounded by its row). */
static cm_err validate(const gw_config *c, char *err, size_t errlen) {
    char key[96], msg[512];
    if ((c->tls_cert == NULL) != (c->tls_key == NULL))
        return cm_errf(CM_ERR_CONFIG, err, errlen, "tls_cert and tls_key must be given together");
    if (c->metrics_listen != NULL && strcmp(c->metrics_listen, c->listen) == 0)
        /* Both would bind with SO_REUSEPORT and split connections between them. */
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "--metrics-listen must differ from --listen (%s)", c->listen);
    /* Again over YAML and flags together (duplicates across both, the count). */
    if (gw_alias_check(c->aliases, c->aliases_count, key, sizeof key, msg, sizeof msg) != CM_OK)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "%s", msg);
    if (!c->no_auth && c->tenants_count == 0 && c->cli_keys_count == 0 && !c->redis_keys)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "no API keys configured: give --api-key KEY, tenants in the "
                       "config, redis_keys: true, or --no-auth for local use");
    if ((c->redis_keys || c->discovery) && c->redis_url == NULL)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "redis_keys and discovery need a Redis: give --redis or 'redis:'");
    if (c->workers_count == 0 && !(c->discovery && c->redis_url != NULL))
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "no workers: give --worker MODEL=ADDR, workers in the config, "
                       "or --redis with --discovery");
    return CM_OK;
}

cm_err gw_config_load(int argc, char **argv, gw_config **out, char *err, size_t errlen) {
    cm_opt_result res;
    cm_err rv;
    *out = NULL;
    err[0] = '\0';
    gw_config *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CM_ERR_NOMEM;
    rv = cm_opt_parse(&table, argc, argv, c, &res, err, errlen);
    if (rv != CM_OK)
        goto fail;
    if (res.help) {
        cm_opt_print_help(&table, stdout);
        rv = CM_ERR_CANCELLED;
        goto fail;
    }
    rv = validate(c, err, errlen);
    if (rv != CM_OK)
        goto fail;
    *out = c;
    return CM_OK;
fail:
    if (rv == CM_ERR_NOMEM && err[0] == '\0')
        cm_errf(rv, err, errlen, "out of memory");
    gw_config_free(c);
    return rv;
}

void gw_config_free(gw_config *c) {
    if (c == NULL)
        return;
    cm_opt_free(&table, c);
    for (unsigned i = 0; i < c->tenants_count; i++) {
        free(c->tenants[i].name);
        free(c->tenants[i].key_sha256);
    }
    free(c->tenants);
    for (unsigned i = 0; i < c->workers_count; i++) {
        free(c->workers[i].model);
        free(c->workers[i].address);
    }
    free(c->workers);
    for (unsigned i = 0; i < c->models_count; i++)
        free(c->models[i]);
    free(c->models);
    for (unsigned i = 0; i < c->aliases_count; i++)
        gw_alias_cfg_fini(&c->aliases[i]);
    free(c->aliases);
    for (unsigned i = 0; i < c->cli_keys_count; i++)
        free(c->cli_keys[i]);
    free(c->cli_keys);
    free(c);
}
