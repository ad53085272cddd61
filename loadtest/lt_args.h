/*
 * lt_args: the sluice-load command line, parsed and validated into a plain struct.
 *
 *   sluice-load --url URL [--api-key KEY] --model NAME
 *               [--concurrency 1,10,50 | --rate R[,R...]] [--requests N | --duration S]
 *               [--input-tokens N|MIN:MAX] [--output-tokens N|MIN:MAX]
 *               [--prompts FILE.jsonl] [--shared-prefix RATIO] [--slo ttft=MS,tpot=MS,e2e=MS]
 *               [--no-stream] [--json FILE] [--csv FILE] [--plot FILE.png] ...
 *
 * Every value is bounded (LT_MAX_* below); anything out of range is an error with a message,
 * never a clamp. The strings in lt_args point into argv (or the environment) and live as long
 * as they do.
 */
#ifndef LT_ARGS_H
#define LT_ARGS_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "lt_stats.h"

#define LT_MAX_LEVELS 32
#define LT_MAX_CONCURRENCY 4096
#define LT_MAX_REQUESTS 10000000u
#define LT_MAX_TOKENS 1000000u
#define LT_MAX_DURATION_S (7.0 * 24 * 3600)
#define LT_MAX_RATE 100000.0
#define LT_MAX_URL_BYTES 2048

typedef enum lt_api {
    LT_API_CHAT = 0,        /* POST /v1/chat/completions */
    LT_API_COMPLETIONS = 1, /* POST /v1/completions */
} lt_api;

typedef enum lt_mode {
    LT_MODE_CLOSED_LOOP = 0, /* fixed concurrency, one run per level in concurrency[] */
    LT_MODE_OPEN_LOOP = 1,   /* Poisson arrivals, one run per rate in rates[] */
    LT_MODE_COLD_START = 2,  /* start cold_start_cmd, time the first token, then a warm one */
} lt_mode;

typedef struct lt_args {
    char endpoint_url[LT_MAX_URL_BYTES]; /* full URL of the endpoint that is POSTed to */
    const char *url;                     /* as given */
    const char *api_key;                 /* NULL: no Authorization header */
    const char *model;
    lt_api api;
    lt_mode mode;
    int concurrency[LT_MAX_LEVELS];
    size_t n_levels;
    double rates[LT_MAX_LEVELS]; /* requests/s */
    size_t n_rates;
    uint32_t max_inflight; /* open loop: requests in flight at most (arrivals beyond wait) */
    uint32_t requests;     /* per level; 0 = bounded by duration only */
    double duration_s;     /* per level; 0 = bounded by requests only */
    uint32_t input_min, input_max;   /* prompt length in (approximate) tokens */
    uint32_t output_min, output_max; /* max_tokens asked for */
    const char *prompts_path;        /* JSONL prompts; NULL = built-in generator */
    double shared_prefix;            /* 0..1: fraction of each prompt shared by all requests */
    lt_slo slo;
    int stream;
    int ignore_eos;     /* send "ignore_eos": true (a vLLM extension) */
    double temperature; /* < 0: not sent */
    uint32_t warmup;    /* unmeasured requests before each level */
    double timeout_s;   /* per request */
    uint64_t seed;
    const char *json_path, *csv_path, *plot_path;
    int quiet; /* no progress line */
    const char *cold_start_cmd;
    double cold_start_timeout_s;
} lt_args;

/*
 * lt_args_parse fills out from argv. On CM_ERR_INVALID err holds a one-line message. When
 * --help was asked for, returns CM_OK with *help_out = 1 and fills nothing else.
 */
cm_err lt_args_parse(lt_args *out, int argc, char **argv, int *help_out, char *err, size_t err_len);
/* lt_args_usage returns the --help text (static). */
const char *lt_args_usage(void);

/* Helpers, exposed for the tests. Each returns CM_ERR_INVALID on malformed input. */
cm_err lt_args_parse_levels(const char *s, int *levels, size_t max_levels, size_t *n_out);
cm_err lt_args_parse_range(const char *s, uint32_t lo_bound, uint32_t hi_bound, uint32_t *min_out,
                           uint32_t *max_out);
cm_err lt_args_parse_slo(const char *s, lt_slo *out);
/* lt_args_parse_rates parses "2.5" or "1,2,4" (each in (0, LT_MAX_RATE]). */
cm_err lt_args_parse_rates(const char *s, double *rates, size_t max_rates, size_t *n_out);
/* lt_args_endpoint builds the POST URL: url as is when it names /v1/..., else url + path. */
cm_err lt_args_endpoint(const char *url, lt_api api, char *out, size_t out_len);

#endif /* LT_ARGS_H */
