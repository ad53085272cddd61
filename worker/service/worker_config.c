/*
 * wk_worker_config: defaults -> YAML file (--config) -> flags, then derived values and the
 * checks between settings. Every setting is one row of opts[] (cm_opt): the flag, the YAML key,
 * the bounds, the default and the help text come from it, and so do --help and the options
 * table in docs/worker.md (tests/unit/config/worker_options_test.c keeps the docs in step).
 */
#include "worker_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_opt.h"

#define F(m) offsetof(wk_worker_config, m), sizeof(((wk_worker_config *)0)->m)
#define MS_HOUR (3600u * 1000u)

/* Rows in --help order. Bounds are the same for flags and YAML; 0 where it means "engine
 * default" or "none" is in range, an explicit 0 in the file applies. */
static const cm_opt opts[] = {
    {"model", "model", CM_OPT_STR, F(model_path), 0, 0, .arg = "PATH",
     .help = "GGUF model file (required)"},
    {"model-name", "model_name", CM_OPT_STR, F(model_name), 0, 0, .arg = "NAME",
     .help = "served name; Submits naming another model get NOT_FOUND",
     .def_doc = "file name without .gguf"},
    {"listen", "listen", CM_OPT_STR, F(listen), 1, 0, .def = "tcp://0.0.0.0:5555", .arg = "ADDR",
     .help = "nng address gateways dial: tcp://HOST:PORT or ipc:///path"},
    {"advertise", "advertise", CM_OPT_STR, F(advertise), 0, 0, .arg = "ADDR",
     .help = "address written to the registry",
     .def_doc = "listen address, 0.0.0.0 replaced by $POD_IP or 127.0.0.1"},
    {"http", "http", CM_OPT_STR, F(http), 1, 0, .def = "127.0.0.1:9100", .arg = "HOST:PORT",
     .help = "side port for /health, /ready, /metrics"},
    {"backend", "backend", CM_OPT_STR, F(backend), 1, 0, .def = "cpu", .arg = "NAME",
     .help = "compute backend (cuda if built in)", .choices = "cpu|cuda"},
    {"registry", "registry", CM_OPT_STR, F(registry), 0, 0, .arg = "redis://H:P",
     .help = "announce in Redis; without it the worker still serves (static gateway config)"},
    {"chat-template", "chat_template", CM_OPT_STR, F(chat_template), 0, 0, .arg = "NAME",
     .help = "chat template override: chatml, llama3, llama2, mistral, gemma, phi3",
     .def_doc = "detected from the GGUF"},
    {"kv-cache-bytes", "kv_cache_bytes", CM_OPT_U64, F(kv_cache_bytes), 0, (uint64_t)1 << 50,
     .def = "0", .arg = "N", .help = "KV cache budget in bytes (0 = engine default)"},
    {"max-batch-tokens", "max_batch_tokens", CM_OPT_U32, F(max_batch_tokens), 0, 1u << 20,
     .def = "0", .arg = "N", .help = "tokens per engine step (0 = engine default)"},
    {"max-running", "max_running", CM_OPT_U32, F(max_running), 0, 1u << 16, .def = "0", .arg = "N",
     .help = "sequences decoding at once (0 = engine default)"},
    {"max-waiting", "max_waiting", CM_OPT_U32, F(max_waiting), 0, 1u << 20, .def = "0", .arg = "N",
     .help = "waiting-queue bound, beyond it OVERLOADED (0 = engine default)"},
    {"threads", "threads", CM_OPT_INT, F(threads), 0, 1024, .def = "0", .arg = "N",
     .help = "CPU backend threads (0 = all cores)"},
    {"drain-timeout-ms", "drain_timeout_ms", CM_OPT_U32, F(drain_timeout_ms), 0, MS_HOUR,
     .def = "30000", .arg = "N", .help = "how long running requests may take after SIGTERM"},
    {"stall-timeout-ms", "stall_timeout_ms", CM_OPT_U32, F(stall_timeout_ms), 0, MS_HOUR,
     .def = "30000", .arg = "N",
     .help = "/health fails when the engine loop has not turned for this long"},
    {"warmup-tokens", "warmup_tokens", CM_OPT_U32, F(warmup_tokens), 0, 64, .def = "4", .arg = "N",
     .help = "tokens generated at start before /ready (0 = no warm-up)"},
    {"send-queue-messages", "send_queue_messages", CM_OPT_U32, F(send_queue_messages), 16, 1u << 20,
     .def = "4096", .arg = "N", .help = "per-gateway send queue bound"},
    {"max-connections", "max_connections", CM_OPT_U32, F(max_connections), 1, 65536, .def = "256",
     .arg = "N",
     .help = "connection slots; when all are taken a new connection evicts the oldest silent "
             "one, and is refused only when every slot holds a peer that has spoken"},
    {"max-message-bytes", "max_message_bytes", CM_OPT_U32, F(max_message_bytes), 1024, 256u << 20,
     .def = "4194304", .arg = "N",
     .help = "largest inbound envelope; a bigger frame closes that connection"},
    {"max-prompt-bytes", "max_prompt_bytes", CM_OPT_U32, F(max_prompt_bytes), 1, 64u << 20,
     .def = "1048576", .arg = "N", .help = "prompt text (or sum of chat message contents)"},
    {"prep-threads", "prep_threads", CM_OPT_U32, F(prep_threads), 1, 64, .def = "2", .arg = "N",
     .help = "threads that template, tokenize and check prompts off the engine thread"},
    {"handshake-timeout-ms", "handshake_timeout_ms", CM_OPT_U32, F(handshake_timeout_ms), 1,
     MS_HOUR, .def = "10000", .arg = "N",
     .help = "a new connection must finish the SP handshake and send its first message (a "
             "gateway's Hello) within this, or it is closed"},
    {"send-stall-timeout-ms", "send_stall_timeout_ms", CM_OPT_U32, F(send_stall_timeout_ms), 1,
     MS_HOUR, .def = "60000", .arg = "N",
     .help = "a connection whose pending bytes the peer takes none of for this long is closed"},
    {"frame-timeout-ms", "frame_timeout_ms", CM_OPT_U32, F(frame_timeout_ms), 1, MS_HOUR,
     .def = "30000", .arg = "N",
     .help = "an inbound message must arrive whole within this of its first byte"},
    {"max-partial-frame-bytes", "max_partial_frame_bytes", CM_OPT_U32, F(max_partial_frame_bytes),
     0, UINT32_MAX, .def = "33554432", .arg = "N",
     .help = "memory for partly received messages, all connections together (at least "
             "max-message-bytes + 4)"},
    {"log-level", "log_level", CM_OPT_STR, F(log_level), 1, 0, .def = "info", .arg = "LEVEL",
     .help = "log level", .choices = "debug|info|warn|error"},
    {"log-json", "log_json", CM_OPT_BOOL, F(log_json), 0, 1, .def = "false", .arg = "BOOL",
     .help = "JSON lines instead of logfmt on stderr"},
};

static const cm_opt_table table = {"sluice-worker", "--model PATH [options]", opts,
                                   sizeof opts / sizeof opts[0]};

const struct cm_opt_table *wk_worker_config_table(void) {
    return &table;
}

void wk_worker_config_defaults(wk_worker_config *c) {
    memset(c, 0, sizeof *c);
    /* The rows' defaults are constants checked by the unit tests: this cannot fail. */
    (void)cm_opt_defaults(&table, c, NULL, 0);
}

const char *wk_worker_config_usage(void) {
    static char text[16384];
    if (text[0] == '\0') {
        FILE *f = fmemopen(text, sizeof text - 1, "w");
        if (f == NULL)
            return "usage: sluice-worker --model PATH [options]\n";
        cm_opt_print_help(&table, f);
        fclose(f);
    }
    return text;
}

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

/* The checks between settings (each one alone is bounded by its row). */
static cm_err validate(const wk_worker_config *c, char *err, size_t errlen) {
    if (c->model_path[0] == '\0')
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--model PATH is required");
    if (strncmp(c->listen, "tcp://", 6) != 0 && strncmp(c->listen, "ipc://", 6) != 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "--listen must be tcp://HOST:PORT or ipc://PATH");
    if (c->registry[0] != '\0' && strncmp(c->registry, "redis://", 8) != 0)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--registry must be redis://HOST:PORT");
    if (strchr(c->http, ':') == NULL)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--http must be HOST:PORT, got '%s'", c->http);
    if (c->model_name[0] == '\0')
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--model-name must not be empty");
    if ((uint64_t)c->max_partial_frame_bytes < (uint64_t)c->max_message_bytes + 4)
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "--max-partial-frame-bytes (%u) must hold at least one largest message "
                       "(--max-message-bytes %u + 4)",
                       c->max_partial_frame_bytes, c->max_message_bytes);
    return CM_OK;
}

cm_err wk_worker_config_parse(int argc, char **argv, wk_worker_config *out, bool *help_out,
                              char *err, size_t errlen) {
    cm_opt_result res;
    *help_out = false;
    memset(out, 0, sizeof *out);
    cm_err rv = cm_opt_parse(&table, argc, argv, out, &res, err, errlen);
    if (rv != CM_OK)
        return rv;
    if (res.help) {
        *help_out = true;
        return CM_OK;
    }
    if (res.config_path != NULL)
        snprintf(out->config_path, sizeof out->config_path, "%s", res.config_path);
    derive(out);
    return validate(out, err, errlen);
}
