/*
 * wk_worker_config: defaults -> YAML file (--config) -> flags, then derived values and
 * validation. One table (opts[]) describes every setting for both the command line and the
 * YAML schema, so the two cannot drift apart.
 */
#include "worker_config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SLUICE_HAVE_CM_CONFIG
#include "cm_config.h"
#endif

typedef enum opt_type { OPT_STR, OPT_U32, OPT_U64, OPT_INT, OPT_BOOL } opt_type;

typedef struct opt_desc {
    const char *flag; /* --flag; YAML key is the same with '-' -> '_' */
    opt_type type;
    size_t offset; /* in wk_worker_config */
    size_t size;   /* for strings: capacity */
    uint64_t max;  /* numeric upper bound (inclusive) */
} opt_desc;

#define F(m) offsetof(wk_worker_config, m), sizeof(((wk_worker_config *)0)->m)

static const opt_desc opts[] = {
    {"model", OPT_STR, F(model_path), 0},
    {"model-name", OPT_STR, F(model_name), 0},
    {"listen", OPT_STR, F(listen), 0},
    {"advertise", OPT_STR, F(advertise), 0},
    {"http", OPT_STR, F(http), 0},
    {"backend", OPT_STR, F(backend), 0},
    {"registry", OPT_STR, F(registry), 0},
    {"chat-template", OPT_STR, F(chat_template), 0},
    {"log-level", OPT_STR, F(log_level), 0},
    {"log-json", OPT_BOOL, F(log_json), 1},
    {"kv-cache-bytes", OPT_U64, F(kv_cache_bytes), (uint64_t)1 << 50},
    {"max-batch-tokens", OPT_U32, F(max_batch_tokens), 1u << 20},
    {"max-running", OPT_U32, F(max_running), 1u << 16},
    {"max-waiting", OPT_U32, F(max_waiting), 1u << 20},
    {"threads", OPT_INT, F(threads), 1024},
    {"drain-timeout-ms", OPT_U32, F(drain_timeout_ms), 3600u * 1000u},
    {"stall-timeout-ms", OPT_U32, F(stall_timeout_ms), 3600u * 1000u},
    {"warmup-tokens", OPT_U32, F(warmup_tokens), 64},
    {"send-queue-messages", OPT_U32, F(send_queue_messages), 1u << 20},
    {"max-connections", OPT_U32, F(max_connections), 65536},
    {"max-message-bytes", OPT_U32, F(max_message_bytes), 256u << 20},
    {"max-prompt-bytes", OPT_U32, F(max_prompt_bytes), 64u << 20},
    {"prep-threads", OPT_U32, F(prep_threads), 64},
    {"handshake-timeout-ms", OPT_U32, F(handshake_timeout_ms), 3600u * 1000u},
    {"send-stall-timeout-ms", OPT_U32, F(send_stall_timeout_ms), 3600u * 1000u},
    {"frame-timeout-ms", OPT_U32, F(frame_timeout_ms), 3600u * 1000u},
    {"max-partial-frame-bytes", OPT_U32, F(max_partial_frame_bytes), 0xffffffffu},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

void wk_worker_config_defaults(wk_worker_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "tcp://0.0.0.0:5555");
    snprintf(c->http, sizeof c->http, "127.0.0.1:9100");
    snprintf(c->backend, sizeof c->backend, "cpu");
    snprintf(c->log_level, sizeof c->log_level, "info");
    c->drain_timeout_ms = 30000;
    c->stall_timeout_ms = 30000;
    c->warmup_tokens = 4;
    c->send_queue_messages = 4096;
    c->max_connections = 256;
    c->max_message_bytes = 4u << 20;
    c->max_prompt_bytes = 1u << 20;
    c->prep_threads = 2;
    c->handshake_timeout_ms = 10000;
    c->send_stall_timeout_ms = 60000;
    c->frame_timeout_ms = 30000;
    c->max_partial_frame_bytes = 32u << 20;
}

const char *wk_worker_config_usage(void) {
    return "usage: sluice-worker --model PATH [options]\n"
           "  --model PATH              GGUF model file (required)\n"
           "  --model-name NAME         served name (default: file name without .gguf)\n"
           "  --listen ADDR             nng address (default tcp://0.0.0.0:5555; ipc:// too)\n"
           "  --advertise ADDR          address put in the registry (default: listen address,\n"
           "                            0.0.0.0 replaced by $POD_IP or 127.0.0.1)\n"
           "  --http HOST:PORT          /health /ready /metrics (default 127.0.0.1:9100)\n"
           "  --backend cpu|cuda        compute backend (default cpu)\n"
           "  --kv-cache-bytes N        KV cache budget in bytes\n"
           "  --max-batch-tokens N      tokens per engine step\n"
           "  --max-running N           sequences decoding at once\n"
           "  --max-waiting N           waiting-queue bound (beyond: OVERLOADED)\n"
           "  --registry redis://H:P    announce in Redis (optional)\n"
           "  --config FILE             YAML with the same keys ('_' for '-'); flags win\n"
           "  --threads N               CPU threads (0 = all cores)\n"
           "  --drain-timeout-ms N      SIGTERM: time for running requests (default 30000)\n"
           "  --chat-template NAME      chatml|llama3|llama2|mistral|gemma override\n"
           "  --stall-timeout-ms N      /health fails after N ms without engine progress\n"
           "  --warmup-tokens N         tokens generated before ready (default 4)\n"
           "  --send-queue-messages N   per-gateway send queue bound (default 4096)\n"
           "  --max-connections N       gateway connections (default 256)\n"
           "  --max-message-bytes N     inbound message bound (default 4 MiB)\n"
           "  --max-prompt-bytes N      prompt text bound (default 1 MiB)\n"
           "  --prep-threads N          threads that template and tokenize prompts off the\n"
           "                            engine thread (1..64, default 2)\n"
           "  --handshake-timeout-ms N  a new connection must finish the SP handshake and send\n"
           "                            its first message (a gateway's Hello) in N ms, else it\n"
           "                            is closed; when all slots are taken the oldest such\n"
           "                            silent one makes room (default 10000)\n"
           "  --send-stall-timeout-ms N close a connection that takes none of its pending\n"
           "                            bytes for N ms (default 60000)\n"
           "  --frame-timeout-ms N      an inbound message must arrive whole within N ms of\n"
           "                            its first byte (default 30000)\n"
           "  --max-partial-frame-bytes N  memory for partly received messages, all\n"
           "                            connections together (default 32 MiB; >= a message)\n"
           "  --log-level L             debug|info|warn|error; --log-json true|false\n";
}

/* Sets one option from text; `where` names the source for messages. */
static cm_err set_opt(wk_worker_config *c, const opt_desc *o, const char *val, const char *where,
                      char *err, size_t errlen) {
    char *dst = (char *)c + o->offset;
    switch (o->type) {
    case OPT_STR:
        if (strlen(val) >= o->size)
            return cm_errf(CM_ERR_CONFIG, err, errlen, "%s: '%s' is longer than %zu bytes", where,
                           o->flag, o->size - 1);
        memcpy(dst, val, strlen(val) + 1);
        return CM_OK;
    case OPT_BOOL:
        if (strcmp(val, "true") == 0 || strcmp(val, "1") == 0)
            *(bool *)dst = true;
        else if (strcmp(val, "false") == 0 || strcmp(val, "0") == 0)
            *(bool *)dst = false;
        else
            return cm_errf(CM_ERR_CONFIG, err, errlen, "%s: '%s' must be true or false, got '%s'",
                           where, o->flag, val);
        return CM_OK;
    default: {
        errno = 0;
        char *end = NULL;
        if (val[0] == '-' || val[0] == '\0')
            return cm_errf(CM_ERR_CONFIG, err, errlen,
                           "%s: '%s' must be a non-negative integer, got '%s'", where, o->flag,
                           val);
        unsigned long long v = strtoull(val, &end, 10);
        if (errno != 0 || end == val || *end != '\0')
            return cm_errf(CM_ERR_CONFIG, err, errlen,
                           "%s: '%s' must be a non-negative integer, got '%s'", where, o->flag,
                           val);
        if (v > o->max)
            return cm_errf(CM_ERR_CONFIG, err, errlen, "%s: '%s' must be at most %" PRIu64, where,
                           o->flag, o->max);
        if (o->type == OPT_U32)
            *(uint32_t *)dst = (uint32_t)v;
        else if (o->type == OPT_U64)
            *(uint64_t *)dst = (uint64_t)v;
        else
            *(int *)dst = (int)v;
        return CM_OK;
    }
    }
    return CM_ERR_INTERNAL;
}

#ifdef SLUICE_HAVE_CM_CONFIG
/* The YAML image of the settings: every key optional, strings as pointers. */
typedef struct yaml_cfg {
    char *model, *model_name, *listen, *advertise, *http, *backend, *registry, *chat_template;
    char *log_level;
    bool log_json;
    uint64_t kv_cache_bytes;
    uint32_t max_batch_tokens, max_running, max_waiting, threads, drain_timeout_ms;
    uint32_t stall_timeout_ms, warmup_tokens, send_queue_messages, max_connections;
    uint32_t max_message_bytes, max_prompt_bytes, prep_threads;
    uint32_t handshake_timeout_ms, send_stall_timeout_ms, frame_timeout_ms;
    uint32_t max_partial_frame_bytes;
} yaml_cfg;

#define YS(k, m)                                                                                   \
    CYAML_FIELD_STRING_PTR(k, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, yaml_cfg, m, 0, WK_CFG_PATH)
#define YU(k, m) CYAML_FIELD_UINT(k, CYAML_FLAG_OPTIONAL, yaml_cfg, m)

static const cyaml_schema_field_t yaml_fields[] = {
    YS("model", model),
    YS("model_name", model_name),
    YS("listen", listen),
    YS("advertise", advertise),
    YS("http", http),
    YS("backend", backend),
    YS("registry", registry),
    YS("chat_template", chat_template),
    YS("log_level", log_level),
    CYAML_FIELD_BOOL("log_json", CYAML_FLAG_OPTIONAL, yaml_cfg, log_json),
    YU("kv_cache_bytes", kv_cache_bytes),
    YU("max_batch_tokens", max_batch_tokens),
    YU("max_running", max_running),
    YU("max_waiting", max_waiting),
    YU("threads", threads),
    YU("drain_timeout_ms", drain_timeout_ms),
    YU("stall_timeout_ms", stall_timeout_ms),
    YU("warmup_tokens", warmup_tokens),
    YU("send_queue_messages", send_queue_messages),
    YU("max_connections", max_connections),
    YU("max_message_bytes", max_message_bytes),
    YU("max_prompt_bytes", max_prompt_bytes),
    YU("prep_threads", prep_threads),
    YU("handshake_timeout_ms", handshake_timeout_ms),
    YU("send_stall_timeout_ms", send_stall_timeout_ms),
    YU("frame_timeout_ms", frame_timeout_ms),
    YU("max_partial_frame_bytes", max_partial_frame_bytes),
    CYAML_FIELD_END};

static const cyaml_schema_value_t yaml_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, yaml_cfg, yaml_fields)};

static cm_err copy_yaml_str(wk_worker_config *c, const char *flag, const char *v, const char *path,
                            char *err, size_t errlen) {
    if (v == NULL)
        return CM_OK;
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].flag, flag) == 0)
            return set_opt(c, &opts[i], v, path, err, errlen);
    return CM_ERR_INTERNAL;
}

static cm_err load_yaml(const char *path, wk_worker_config *c, char *err, size_t errlen) {
    yaml_cfg *y = NULL;
    cm_err rv = cm_config_load(path, &yaml_schema, NULL, (void **)&y, err, errlen);
    if (rv != CM_OK)
        return rv;
    struct {
        const char *flag;
        const char *v;
    } strs[] = {{"model", y->model},        {"model-name", y->model_name},
                {"listen", y->listen},      {"advertise", y->advertise},
                {"http", y->http},          {"backend", y->backend},
                {"registry", y->registry},  {"chat-template", y->chat_template},
                {"log-level", y->log_level}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0] && rv == CM_OK; i++)
        rv = copy_yaml_str(c, strs[i].flag, strs[i].v, path, err, errlen);
    if (rv == CM_OK) {
        /* Absent numeric keys read as 0 = "not set": keep the defaults then. */
        c->log_json = y->log_json;
        if (y->kv_cache_bytes)
            c->kv_cache_bytes = y->kv_cache_bytes;
#define KEEP(m)                                                                                    \
    if (y->m)                                                                                      \
        c->m = y->m;
        KEEP(max_batch_tokens)
        KEEP(max_running)
        KEEP(max_waiting)
        KEEP(drain_timeout_ms)
        KEEP(stall_timeout_ms)
        KEEP(warmup_tokens)
        KEEP(send_queue_messages)
        KEEP(max_connections)
        KEEP(max_message_bytes)
        KEEP(max_prompt_bytes)
        KEEP(prep_threads)
        KEEP(handshake_timeout_ms)
        KEEP(send_stall_timeout_ms)
        KEEP(frame_timeout_ms)
        KEEP(max_partial_frame_bytes)
#undef KEEP
        if (y->threads)
            c->threads = (int)y->threads;
    }
    cm_config_free(&yaml_schema, y);
    return rv;
}
#endif

static void derive(wk_worker_config *c) {
    if (c->model_name[0] == '\0') {
        const char *base = strrchr(c->model_path, '/');
        base = base != NULL ? base + 1 : c->model_path;
        size_t n = strlen(base);
        if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
            n -= 5;
        if (n >= sizeof c->model_name)
            n = sizeof c->model_name - 1;
        memcpy(c->model_name, base, n);
        c->model_name[n] = '\0';
    }
    if (c->advertise[0] == '\0') {
        const char *any = strstr(c->listen, "0.0.0.0");
        if (any == NULL) {
            snprintf(c->advertise, sizeof c->advertise, "%s", c->listen);
        } else {
            const char *pod = getenv("POD_IP");
            const char *host = pod != NULL && pod[0] != '\0' ? pod : "127.0.0.1";
            snprintf(c->advertise, sizeof c->advertise, "%.*s%s%s", (int)(any - c->listen),
                     c->listen, host, any + 7);
        }
    }
}

static cm_err validate(const wk_worker_config *c, char *err, size_t errlen) {
    if (c->model_path[0] == '\0')
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--model PATH is required");
    if (strcmp(c->backend, "cpu") != 0 && strcmp(c->backend, "cuda") != 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--backend must be cpu or cuda, got '%s'",
                       c->backend);
    if (strncmp(c->listen, "tcp://", 6) != 0 && strncmp(c->listen, "ipc://", 6) != 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "--listen must be tcp://HOST:PORT or ipc://PATH");
    if (c->registry[0] != '\0' && strncmp(c->registry, "redis://", 8) != 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--registry must be redis://HOST:PORT");
    if (strchr(c->http, ':') == NULL)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--http must be HOST:PORT, got '%s'", c->http);
    if (c->model_name[0] == '\0')
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--model-name must not be empty");
    if (c->prep_threads == 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--prep-threads must be 1..64");
    if (c->send_queue_messages < 16)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--send-queue-messages must be at least 16");
    if (c->max_connections == 0 || c->max_message_bytes < 1024 || c->max_prompt_bytes == 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "--max-connections, --max-message-bytes (>= 1024) and --max-prompt-bytes "
                       "must be positive");
    if (c->handshake_timeout_ms == 0 || c->send_stall_timeout_ms == 0 || c->frame_timeout_ms == 0)
        return cm_errf(
            CM_ERR_CONFIG, err, errlen,
            "--handshake-timeout-ms, --send-stall-timeout-ms and --frame-timeout-ms must "
            "be positive");
    if ((uint64_t)c->max_partial_frame_bytes < (uint64_t)c->max_message_bytes + 4)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "--max-partial-frame-bytes (%u) must hold at least one largest message "
                       "(--max-message-bytes %u + 4)",
                       c->max_partial_frame_bytes, c->max_message_bytes);
    if (strcmp(c->log_level, "debug") != 0 && strcmp(c->log_level, "info") != 0 &&
        strcmp(c->log_level, "warn") != 0 && strcmp(c->log_level, "error") != 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--log-level must be debug|info|warn|error");
    return CM_OK;
}

cm_err wk_worker_config_parse(int argc, char **argv, wk_worker_config *out, bool *help_out,
                              char *err, size_t errlen) {
    *help_out = false;
    wk_worker_config_defaults(out);
    struct option lopts[N_OPTS + 3];
    for (size_t i = 0; i < N_OPTS; i++)
        lopts[i] = (struct option){opts[i].flag, required_argument, NULL, (int)(i + 1000)};
    lopts[N_OPTS] = (struct option){"config", required_argument, NULL, 'c'};
    lopts[N_OPTS + 1] = (struct option){"help", no_argument, NULL, 'h'};
    lopts[N_OPTS + 2] = (struct option){NULL, 0, NULL, 0};

    /* Pass 1: --config and --help only; flags are applied after the file (flags win). */
    optind = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        if (ch == 'h') {
            *help_out = true;
            return CM_OK;
        }
        if (ch == '?' || ch == ':')
            return cm_errf(CM_ERR_CONFIG, err, errlen,
                           "unknown or incomplete option '%s' (see --help)",
                           argv[optind - 1 < argc ? optind - 1 : argc - 1]);
        if (ch == 'c')
            snprintf(out->config_path, sizeof out->config_path, "%s", optarg);
    }
    if (optind < argc)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "unexpected argument '%s'", argv[optind]);
    if (out->config_path[0] != '\0') {
#ifdef SLUICE_HAVE_CM_CONFIG
        cm_err rv = load_yaml(out->config_path, out, err, errlen);
        if (rv != CM_OK)
            return rv;
#else
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "built without YAML support");
#endif
    }
    optind = 0;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        if (ch < 1000)
            continue;
        const opt_desc *o = &opts[ch - 1000];
        char where[64];
        snprintf(where, sizeof where, "--%s", o->flag);
        cm_err rv = set_opt(out, o, optarg, where, err, errlen);
        if (rv != CM_OK)
            return rv;
    }
    optind = 0;
    derive(out);
    return validate(out, err, errlen);
}
