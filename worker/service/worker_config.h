/*
 * wk_worker_config: sluice-worker's settings from flags and an optional YAML file (the same
 * keys as the flags, with '_' for '-'). Every setting is one row of a cm_opt table in
 * worker_config.c, which gives its flag, YAML key, bounds (the same for both), default and help;
 * the options table in docs/worker.md is generated from it. Defaults, then the file's keys (an
 * explicit 0 applies), then the flags: flags win. Parsing and validation live here; the runtime
 * gets a plain, validated struct and never changes it (read-only from every thread after start).
 */
#ifndef WK_WORKER_CONFIG_H
#define WK_WORKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

#define WK_CFG_STR 256
#define WK_CFG_PATH 1024

typedef struct wk_worker_config {
    char model_path[WK_CFG_PATH];
    char model_name[WK_CFG_STR];   /* default: file name without .gguf */
    char listen[WK_CFG_STR];       /* default tcp://0.0.0.0:5555 */
    char advertise[WK_CFG_STR];    /* default: listen with 0.0.0.0 -> $POD_IP or 127.0.0.1 */
    char http[WK_CFG_STR];         /* HOST:PORT; default 127.0.0.1:9100 */
    char backend[16];              /* cpu | cuda */
    char registry[WK_CFG_STR];     /* redis://HOST:PORT or "" */
    char chat_template[32];        /* family override or "" */
    char config_path[WK_CFG_PATH]; /* "" when none */
    char log_level[16];            /* debug | info | warn | error */
    bool log_json;
    uint64_t kv_cache_bytes;      /* 0 = engine default */
    uint32_t max_batch_tokens;    /* 0 = engine default */
    uint32_t max_running;         /* 0 = engine default */
    uint32_t max_waiting;         /* 0 = engine default */
    int threads;                  /* 0 = all cores */
    uint32_t drain_timeout_ms;    /* default 30000 */
    uint32_t stall_timeout_ms;    /* /health fails past this without engine progress; 30000 */
    uint32_t warmup_tokens;       /* default 4 */
    uint32_t send_queue_messages; /* per gateway connection; default 4096 */
    uint32_t max_connections;     /* default 256 */
    uint32_t max_message_bytes;   /* inbound envelope bound; default 4 MiB */
    uint32_t max_prompt_bytes;    /* prompt / messages text bound; default 1 MiB */
    uint32_t prep_threads;        /* preparation pool (template, tokenize); default 2 */
    /* Connection hygiene (see transport.h): */
    uint32_t handshake_timeout_ms;    /* accept -> handshake + first message; default 10000 */
    uint32_t send_stall_timeout_ms;   /* no send progress on a connection; default 60000 */
    uint32_t frame_timeout_ms;        /* an inbound frame's first byte -> last; default 30000 */
    uint32_t max_partial_frame_bytes; /* all connections' receive buffers; default 32 MiB */
} wk_worker_config;

/* wk_worker_config_defaults fills every default (model_path empty). */
void wk_worker_config_defaults(wk_worker_config *c);

/*
 * wk_worker_config_parse reads argv (flags, see wk_worker_config_usage), loads --config FILE
 * if given, applies flags over it, fills derived defaults (model_name, advertise) and
 * validates. On failure err holds one line (file:line:col for YAML problems). *help_out is
 * set (and CM_OK returned) for --help. Never exits.
 */
cm_err wk_worker_config_parse(int argc, char **argv, wk_worker_config *out, bool *help_out,
                              char *err, size_t errlen);

/* wk_worker_config_usage: the --help text (a static buffer filled on the first call; call it
 * from one thread, before others start). */
const char *wk_worker_config_usage(void);

/* wk_worker_config_table: the option descriptors (for the docs test and tools); static. */
struct cm_opt_table;
const struct cm_opt_table *wk_worker_config_table(void);

#endif /* WK_WORKER_CONFIG_H */
