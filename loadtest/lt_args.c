#include "lt_args.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: sluice-load --url URL --model NAME [options]\n"
    "\n"
    "Target\n"
    "  --url URL               server base URL (http://HOST:PORT) or a full /v1/... endpoint\n"
    "  --api-key KEY           bearer key (default: $SLUICE_API_KEY, then $OPENAI_API_KEY)\n"
    "  --model NAME            model name sent in every request\n"
    "  --endpoint chat|completions   API to drive (default chat)\n"
    "Load\n"
    "  --concurrency LIST      closed loop, one run per level, e.g. 1,10,50 (default 1)\n"
    "  --rate R[,R...]         open loop: Poisson arrivals at R requests/s, one run per rate\n"
    "  --max-inflight N        open loop: cap on requests in flight (default 1024)\n"
    "  --requests N            requests per run (default 100 unless --duration is given)\n"
    "  --duration S            stop starting requests after S seconds per run\n"
    "  --warmup N              unmeasured requests before each run (default 0)\n"
    "  --timeout S             per-request timeout in seconds (default 600)\n"
    "Requests\n"
    "  --input-tokens N|A:B    prompt length in tokens, fixed or uniform range (default 128)\n"
    "  --output-tokens N|A:B   max_tokens, fixed or uniform range (default 128)\n"
    "  --prompts FILE.jsonl    prompts from a file: {\"prompt\":...} or {\"messages\":[...]},\n"
    "                          optional \"max_tokens\" per line\n"
    "  --shared-prefix RATIO   fraction 0..1 of each generated prompt shared by all requests\n"
    "  --no-stream             non-streaming requests (TTFT = E2E)\n"
    "  --ignore-eos            send \"ignore_eos\": true (vLLM extension) for fixed lengths\n"
    "  --temperature T         send this temperature (default: not sent)\n"
    "  --seed N                seed of the prompt generator and arrivals (default 0)\n"
    "Report\n"
    "  --slo ttft=MS,tpot=MS,e2e=MS   objectives for goodput (any subset)\n"
    "  --json FILE  --csv FILE  --plot FILE.png   machine-readable output and a gnuplot PNG\n"
    "  --quiet                 no progress line\n"
    "Cold start\n"
    "  --cold-start CMD        run CMD (sh -c) that starts a server, time the first token,\n"
    "                          then a warm request; CMD is stopped (SIGTERM) at the end\n"
    "  --cold-start-timeout S  give up after S seconds (default 600)\n";

const char *lt_args_usage(void) {
    return usage_text;
}

/* parse_u32 accepts a whole decimal string in [lo, hi]. */
static cm_err parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out) {
    if (s == NULL || *s == '\0' || *s == '-' || *s == '+') {
        return CM_ERR_INVALID;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return CM_ERR_INVALID;
    }
    *out = (uint32_t)v;
    return CM_OK;
}

/* parse_double accepts a whole finite number in [lo, hi]. */
static cm_err parse_double(const char *s, double lo, double hi, double *out) {
    if (s == NULL || *s == '\0') {
        return CM_ERR_INVALID;
    }
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        return CM_ERR_INVALID;
    }
    *out = v;
    return CM_OK;
}

cm_err lt_args_parse_levels(const char *s, int *levels, size_t max_levels, size_t *n_out) {
    char buf[512];
    if (s == NULL || strlen(s) >= sizeof(buf) || *s == '\0') {
        return CM_ERR_INVALID;
    }
    memcpy(buf, s, strlen(s) + 1);
    size_t n = 0;
    /* strtok_r would skip empty items ("1,,2"); those are errors, so scan by hand. */
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        uint32_t v = 0;
        if (n == max_levels || parse_u32(p, 1, LT_MAX_CONCURRENCY, &v) != CM_OK) {
            return CM_ERR_INVALID;
        }
        levels[n++] = (int)v;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *n_out = n;
    return CM_OK;
}

cm_err lt_args_parse_rates(const char *s, double *rates, size_t max_rates, size_t *n_out) {
    char buf[512];
    if (s == NULL || *s == '\0' || strlen(s) >= sizeof(buf)) {
        return CM_ERR_INVALID;
    }
    memcpy(buf, s, strlen(s) + 1);
    size_t n = 0;
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        if (n == max_rates || parse_double(p, 1e-6, LT_MAX_RATE, &rates[n]) != CM_OK) {
            return CM_ERR_INVALID;
        }
        n++;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *n_out = n;
    return CM_OK;
}

cm_err lt_args_parse_range(const char *s, uint32_t lo_bound, uint32_t hi_bound, uint32_t *min_out,
                           uint32_t *max_out) {
    char buf[64];
    if (s == NULL || strlen(s) >= sizeof(buf)) {
        return CM_ERR_INVALID;
    }
    memcpy(buf, s, strlen(s) + 1);
    char *colon = strchr(buf, ':');
    uint32_t lo = 0, hi = 0;
    if (colon == NULL) {
        if (parse_u32(buf, lo_bound, hi_bound, &lo) != CM_OK) {
            return CM_ERR_INVALID;
        }
        hi = lo;
    } else {
        *colon = '\0';
        if (parse_u32(buf, lo_bound, hi_bound, &lo) != CM_OK ||
            parse_u32(colon + 1, lo_bound, hi_bound, &hi) != CM_OK || hi < lo) {
            return CM_ERR_INVALID;
        }
    }
    *min_out = lo;
    *max_out = hi;
    return CM_OK;
}

cm_err lt_args_parse_slo(const char *s, lt_slo *out) {
    char buf[256];
    if (s == NULL || *s == '\0' || strlen(s) >= sizeof(buf)) {
        return CM_ERR_INVALID;
    }
    memcpy(buf, s, strlen(s) + 1);
    lt_slo slo = {0};
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        char *eq = strchr(p, '=');
        if (eq == NULL) {
            return CM_ERR_INVALID;
        }
        *eq = '\0';
        double v = 0;
        /* an objective of 0 ms or less could never be met: reject it */
        if (parse_double(eq + 1, 1e-3, 1e9, &v) != CM_OK) {
            return CM_ERR_INVALID;
        }
        if (strcmp(p, "ttft") == 0) {
            slo.ttft_ms = v;
        } else if (strcmp(p, "tpot") == 0) {
            slo.tpot_ms = v;
        } else if (strcmp(p, "e2e") == 0) {
            slo.e2e_ms = v;
        } else {
            return CM_ERR_INVALID;
        }
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *out = slo;
    return CM_OK;
}

cm_err lt_args_endpoint(const char *url, lt_api api, char *out, size_t out_len) {
    if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        return CM_ERR_INVALID;
    }
    size_t len = strlen(url);
    while (len > 0 && url[len - 1] == '/') {
        len--;
    }
    const char *path = api == LT_API_CHAT ? "/v1/chat/completions" : "/v1/completions";
    int n;
    if (strstr(url + 8, "/v1/") != NULL) {
        n = snprintf(out, out_len, "%.*s", (int)len, url);
    } else if (len >= 3 && strncmp(url + len - 3, "/v1", 3) == 0) {
        n = snprintf(out, out_len, "%.*s%s", (int)len, url, path + 3);
    } else {
        n = snprintf(out, out_len, "%.*s%s", (int)len, url, path);
    }
    if (n < 0 || (size_t)n >= out_len) {
        return CM_ERR_LIMIT;
    }
    return CM_OK;
}

enum {
    OPT_URL = 256,
    OPT_API_KEY,
    OPT_MODEL,
    OPT_ENDPOINT,
    OPT_CONCURRENCY,
    OPT_RATE,
    OPT_MAX_INFLIGHT,
    OPT_REQUESTS,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_TIMEOUT,
    OPT_INPUT,
    OPT_OUTPUT,
    OPT_PROMPTS,
    OPT_SHARED,
    OPT_NO_STREAM,
    OPT_IGNORE_EOS,
    OPT_TEMPERATURE,
    OPT_SEED,
    OPT_SLO,
    OPT_JSON,
    OPT_CSV,
    OPT_PLOT,
    OPT_QUIET,
    OPT_COLD,
    OPT_COLD_TIMEOUT,
    OPT_HELP,
};

static const struct option long_opts[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"api-key", required_argument, NULL, OPT_API_KEY},
    {"model", required_argument, NULL, OPT_MODEL},
    {"endpoint", required_argument, NULL, OPT_ENDPOINT},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"rate", required_argument, NULL, OPT_RATE},
    {"max-inflight", required_argument, NULL, OPT_MAX_INFLIGHT},
    {"requests", required_argument, NULL, OPT_REQUESTS},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"input-tokens", required_argument, NULL, OPT_INPUT},
    {"output-tokens", required_argument, NULL, OPT_OUTPUT},
    {"prompts", required_argument, NULL, OPT_PROMPTS},
    {"shared-prefix", required_argument, NULL, OPT_SHARED},
    {"no-stream", no_argument, NULL, OPT_NO_STREAM},
    {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
    {"temperature", required_argument, NULL, OPT_TEMPERATURE},
    {"seed", required_argument, NULL, OPT_SEED},
    {"slo", required_argument, NULL, OPT_SLO},
    {"json", required_argument, NULL, OPT_JSON},
    {"csv", required_argument, NULL, OPT_CSV},
    {"plot", required_argument, NULL, OPT_PLOT},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"cold-start", required_argument, NULL, OPT_COLD},
    {"cold-start-timeout", required_argument, NULL, OPT_COLD_TIMEOUT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

cm_err lt_args_parse(lt_args *out, int argc, char **argv, int *help_out, char *err,
                     size_t err_len) {
    lt_args a;
    memset(&a, 0, sizeof(a));
    a.api = LT_API_CHAT;
    a.stream = 1;
    a.input_min = a.input_max = 128;
    a.output_min = a.output_max = 128;
    a.max_inflight = 1024;
    a.timeout_s = 600;
    a.temperature = -1;
    a.cold_start_timeout_s = 600;
    a.api_key = getenv("SLUICE_API_KEY");
    if (a.api_key == NULL) {
        a.api_key = getenv("OPENAI_API_KEY");
    }
    const char *levels_arg = NULL;
    *help_out = 0;
    err[0] = '\0';

    /* getopt keeps global state: reset it so the parser can be called more than once. */
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        const char *v = optarg;
        uint32_t u = 0;
        switch (c) {
        case OPT_URL:
            a.url = v;
            break;
        case OPT_API_KEY:
            a.api_key = v;
            break;
        case OPT_MODEL:
            if (*v == '\0' || strlen(v) > 256) {
                return cm_errf(CM_ERR_INVALID, err, err_len, "--model must be 1..256 characters");
            }
            a.model = v;
            break;
        case OPT_ENDPOINT:
            if (strcmp(v, "chat") == 0) {
                a.api = LT_API_CHAT;
            } else if (strcmp(v, "completions") == 0) {
                a.api = LT_API_COMPLETIONS;
            } else {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--endpoint must be chat or completions");
            }
            break;
        case OPT_CONCURRENCY:
            levels_arg = v;
            break;
        case OPT_RATE:
            if (lt_args_parse_rates(v, a.rates, LT_MAX_LEVELS, &a.n_rates) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--rate must be a comma list of at most %d rates in (0, %g]",
                               LT_MAX_LEVELS, LT_MAX_RATE);
            }
            break;
        case OPT_MAX_INFLIGHT:
            if (parse_u32(v, 1, LT_MAX_CONCURRENCY, &a.max_inflight) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len, "--max-inflight must be 1..%d",
                               LT_MAX_CONCURRENCY);
            }
            break;
        case OPT_REQUESTS:
            if (parse_u32(v, 1, LT_MAX_REQUESTS, &a.requests) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len, "--requests must be 1..%u",
                               LT_MAX_REQUESTS);
            }
            break;
        case OPT_DURATION:
            if (parse_double(v, 0.001, LT_MAX_DURATION_S, &a.duration_s) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--duration must be seconds in (0, %g]", LT_MAX_DURATION_S);
            }
            break;
        case OPT_WARMUP:
            if (parse_u32(v, 0, 100000, &a.warmup) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len, "--warmup must be 0..100000");
            }
            break;
        case OPT_TIMEOUT:
            if (parse_double(v, 0.001, 86400, &a.timeout_s) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--timeout must be seconds in (0, 86400]");
            }
            break;
        case OPT_INPUT:
            if (lt_args_parse_range(v, 1, LT_MAX_TOKENS, &a.input_min, &a.input_max) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--input-tokens must be N or MIN:MAX within 1..%u", LT_MAX_TOKENS);
            }
            break;
        case OPT_OUTPUT:
            if (lt_args_parse_range(v, 1, LT_MAX_TOKENS, &a.output_min, &a.output_max) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--output-tokens must be N or MIN:MAX within 1..%u", LT_MAX_TOKENS);
            }
            break;
        case OPT_PROMPTS:
            a.prompts_path = v;
            break;
        case OPT_SHARED:
            if (parse_double(v, 0, 1, &a.shared_prefix) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--shared-prefix must be a ratio in [0, 1]");
            }
            break;
        case OPT_NO_STREAM:
            a.stream = 0;
            break;
        case OPT_IGNORE_EOS:
            a.ignore_eos = 1;
            break;
        case OPT_TEMPERATURE:
            if (parse_double(v, 0, 2, &a.temperature) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len, "--temperature must be in [0, 2]");
            }
            break;
        case OPT_SEED:
            if (parse_u32(v, 0, UINT32_MAX, &u) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len, "--seed must be 0..%u", UINT32_MAX);
            }
            a.seed = u;
            break;
        case OPT_SLO:
            if (lt_args_parse_slo(v, &a.slo) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--slo must look like ttft=MS,tpot=MS,e2e=MS (positive numbers)");
            }
            break;
        case OPT_JSON:
            a.json_path = v;
            break;
        case OPT_CSV:
            a.csv_path = v;
            break;
        case OPT_PLOT:
            a.plot_path = v;
            break;
        case OPT_QUIET:
            a.quiet = 1;
            break;
        case OPT_COLD:
            if (*v == '\0') {
                return cm_errf(CM_ERR_INVALID, err, err_len, "--cold-start needs a command");
            }
            a.cold_start_cmd = v;
            break;
        case OPT_COLD_TIMEOUT:
            if (parse_double(v, 1, 86400, &a.cold_start_timeout_s) != CM_OK) {
                return cm_errf(CM_ERR_INVALID, err, err_len,
                               "--cold-start-timeout must be seconds in [1, 86400]");
            }
            break;
        case OPT_HELP:
        case 'h':
            *help_out = 1;
            return CM_OK;
        default:
            return cm_errf(CM_ERR_INVALID, err, err_len,
                           "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        return cm_errf(CM_ERR_INVALID, err, err_len, "unexpected argument '%s'", argv[optind]);
    }
    if (a.url == NULL) {
        return cm_errf(CM_ERR_INVALID, err, err_len, "--url is required");
    }
    if (a.api_key != NULL) {
        /* it goes into a header line: printable ASCII only, no spaces, bounded */
        size_t len = strlen(a.api_key);
        int ok = len > 0 && len <= 512;
        for (size_t i = 0; ok && i < len; i++) {
            ok = a.api_key[i] > 0x20 && a.api_key[i] < 0x7f;
        }
        if (!ok) {
            return cm_errf(CM_ERR_INVALID, err, err_len,
                           "the API key must be 1..512 printable ASCII characters, no spaces");
        }
    }
    if (a.model == NULL) {
        return cm_errf(CM_ERR_INVALID, err, err_len, "--model is required");
    }
    cm_err rv = lt_args_endpoint(a.url, a.api, a.endpoint_url, sizeof(a.endpoint_url));
    if (rv != CM_OK) {
        return cm_errf(CM_ERR_INVALID, err, err_len,
                       "--url must be an http:// or https:// URL under %d bytes", LT_MAX_URL_BYTES);
    }
    if (levels_arg != NULL && a.n_rates > 0) {
        return cm_errf(CM_ERR_INVALID, err, err_len, "--concurrency and --rate are exclusive");
    }
    if (a.cold_start_cmd != NULL && (levels_arg != NULL || a.n_rates > 0)) {
        return cm_errf(CM_ERR_INVALID, err, err_len,
                       "--cold-start runs alone (no --concurrency/--rate)");
    }
    if (a.cold_start_cmd != NULL) {
        a.mode = LT_MODE_COLD_START;
    } else if (a.n_rates > 0) {
        a.mode = LT_MODE_OPEN_LOOP;
    } else {
        a.mode = LT_MODE_CLOSED_LOOP;
        if (levels_arg == NULL) {
            levels_arg = "1";
        }
        if (lt_args_parse_levels(levels_arg, a.concurrency, LT_MAX_LEVELS, &a.n_levels) != CM_OK) {
            return cm_errf(CM_ERR_INVALID, err, err_len,
                           "--concurrency must be a comma list of at most %d levels in 1..%d",
                           LT_MAX_LEVELS, LT_MAX_CONCURRENCY);
        }
    }
    if (a.requests == 0 && a.duration_s == 0) {
        a.requests = 100; /* bounded always: the default run is 100 requests */
    }
    if (a.prompts_path != NULL && a.shared_prefix > 0) {
        return cm_errf(CM_ERR_INVALID, err, err_len,
                       "--shared-prefix applies to generated prompts, not --prompts");
    }
    *out = a;
    return CM_OK;
}
