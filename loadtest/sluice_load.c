/*
 * sluice-load: load test for any OpenAI-compatible endpoint (Sluice or another server).
 * See lt_args.h for the command line and lt_stats.h for what is measured.
 *
 * Exit status: 0 when every run had at least one successful request, 1 when a run had none,
 * 2 on a usage error, 3 when the run could not be carried out, 130 when interrupted.
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_args.h"
#include "lt_coldstart.h"
#include "lt_prompt.h"
#include "lt_report.h"
#include "lt_run.h"
#include "lt_stats.h"

#define MAX_ITL_VALUES 20000000u

/* Process-wide and written only by the signal handler: the one global the tool needs. */
static volatile sig_atomic_t g_stop;

static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
}

static cm_err open_prompts(const lt_args *a, lt_prompt_source *src, char *err, size_t err_len) {
    if (a->prompts_path != NULL) {
        return lt_prompt_source_init_file(src, a->prompts_path, a->api, a->output_min,
                                          a->output_max, a->seed, err, err_len);
    }
    cm_err rv = lt_prompt_source_init_generated(src, a->input_min, a->input_max, a->output_min,
                                                a->output_max, a->shared_prefix, a->seed);
    if (rv != CM_OK) {
        snprintf(err, err_len, "cannot set up the prompt generator: %s", cm_strerror(rv));
    }
    return rv;
}

static int run_cold_start(const lt_args *a) {
    char err[512] = "";
    lt_prompt_source prompts;
    if (open_prompts(a, &prompts, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, "sluice-load: %s\n", err);
        return 3;
    }
    lt_coldstart_result cold;
    cm_err rv = lt_coldstart_run(a, &prompts, &cold, err, sizeof(err));
    lt_prompt_source_fini(&prompts);
    if (rv != CM_OK) {
        fprintf(stderr, "sluice-load: cold start: %s\n", err);
        return 1;
    }
    lt_report_coldstart(stdout, &cold);
    if (a->json_path != NULL &&
        lt_report_json(a->json_path, a, NULL, 0, &cold, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, "sluice-load: %s\n", err);
        return 3;
    }
    return 0;
}

static int run_levels(const lt_args *a) {
    size_t n_runs = a->mode == LT_MODE_OPEN_LOOP ? a->n_rates : a->n_levels;
    lt_summary *runs = calloc(n_runs, sizeof(*runs));
    lt_stats stats;
    lt_prompt_source prompts;
    memset(&prompts, 0, sizeof(prompts));
    char err[512] = "";
    int exit_code = 0;
    size_t done_runs = 0;
    if (runs == NULL || lt_stats_init(&stats, a->requests ? a->requests : LT_MAX_REQUESTS,
                                      MAX_ITL_VALUES) != CM_OK) {
        fprintf(stderr, "sluice-load: out of memory\n");
        free(runs);
        return 3;
    }
    for (size_t i = 0; i < n_runs && !g_stop; i++) {
        /* every level gets the same prompt sequence, so levels differ only in load */
        if (open_prompts(a, &prompts, err, sizeof(err)) != CM_OK) {
            fprintf(stderr, "sluice-load: %s\n", err);
            exit_code = 3;
            break;
        }
        char label[64];
        lt_run_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.args = a;
        cfg.requests = a->requests;
        cfg.duration_s = a->duration_s;
        cfg.warmup = a->warmup;
        cfg.seed = a->seed;
        cfg.progress = !a->quiet;
        cfg.stop = &g_stop;
        cfg.max_inflight = a->max_inflight;
        if (a->mode == LT_MODE_OPEN_LOOP) {
            cfg.rate_rps = a->rates[i];
            snprintf(label, sizeof(label), "rate %.3g/s", a->rates[i]);
        } else {
            cfg.concurrency = a->concurrency[i];
            snprintf(label, sizeof(label), "concurrency %d", a->concurrency[i]);
        }
        cfg.label = label;
        lt_stats_clear(&stats);
        double duration = 0;
        cm_err rv = lt_run(&cfg, &prompts, &stats, &duration, err, sizeof(err));
        lt_prompt_source_fini(&prompts);
        if (rv != CM_OK) {
            fprintf(stderr, "sluice-load: %s\n", err);
            exit_code = 3;
            break;
        }
        rv = lt_stats_summarize(&stats, duration, &a->slo, &runs[i]);
        if (rv != CM_OK) {
            fprintf(stderr, "sluice-load: cannot summarise: %s\n", cm_strerror(rv));
            exit_code = 3;
            break;
        }
        runs[i].concurrency = cfg.concurrency;
        runs[i].rate_rps = cfg.rate_rps;
        done_runs = i + 1;
        lt_report_run(stdout, a, &runs[i]);
        fflush(stdout);
        if (runs[i].completed == 0) {
            exit_code = exit_code ? exit_code : 1;
        }
    }
    if (done_runs > 0) {
        lt_report_table(stdout, a, runs, done_runs);
        if (a->json_path != NULL &&
            lt_report_json(a->json_path, a, runs, done_runs, NULL, err, sizeof(err)) != CM_OK) {
            fprintf(stderr, "sluice-load: %s\n", err);
            exit_code = 3;
        }
        if (a->csv_path != NULL &&
            lt_report_csv(a->csv_path, a, runs, done_runs, err, sizeof(err)) != CM_OK) {
            fprintf(stderr, "sluice-load: %s\n", err);
            exit_code = 3;
        }
        if (a->plot_path != NULL) {
            if (lt_report_plot(a->plot_path, a, runs, done_runs, err, sizeof(err)) != CM_OK) {
                fprintf(stderr, "sluice-load: %s\n", err);
                exit_code = 3;
            } else {
                printf("plot written to %s\n", a->plot_path);
            }
        }
    }
    for (size_t i = 0; i < n_runs; i++) {
        lt_summary_fini(&runs[i]);
    }
    free(runs);
    lt_stats_fini(&stats);
    if (g_stop) {
        fprintf(stderr, "sluice-load: interrupted\n");
        return 130;
    }
    return exit_code;
}

int main(int argc, char **argv) {
    lt_args a;
    int help = 0;
    char err[512];
    if (lt_args_parse(&a, argc, argv, &help, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, "sluice-load: %s\n", err);
        return 2;
    }
    if (help) {
        fputs(lt_args_usage(), stdout);
        return 0;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "sluice-load: curl_global_init failed\n");
        return 3;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = a.mode == LT_MODE_COLD_START ? run_cold_start(&a) : run_levels(&a);
    curl_global_cleanup();
    return rc;
}
