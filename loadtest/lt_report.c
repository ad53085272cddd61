#include "lt_report.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void lt_report_progress(FILE *f, const char *label, const char *phase, uint64_t done,
                        uint64_t total, uint64_t ok, uint64_t failed, size_t inflight,
                        double elapsed_s, int final) {
    int tty = isatty(fileno(f));
    if (!tty && !final) {
        return; /* a log file gets one line per phase, not a line every half second */
    }
    char total_s[32] = "?";
    if (total > 0) {
        snprintf(total_s, sizeof(total_s), "%llu", (unsigned long long)total);
    }
    fprintf(f, "%s[%s] %s %llu/%s done, %llu ok, %llu failed, %zu in flight, %.1f s%s%s",
            tty ? "\r\033[K" : "", label ? label : "run", phase, (unsigned long long)done, total_s,
            (unsigned long long)ok, (unsigned long long)failed, inflight, elapsed_s,
            final ? "" : "   ", final ? "\n" : "");
    fflush(f);
}

static const char *run_title(const lt_summary *s, char *buf, size_t len) {
    if (s->concurrency > 0) {
        snprintf(buf, len, "concurrency %d", s->concurrency);
    } else {
        snprintf(buf, len, "rate %.3g req/s (Poisson)", s->rate_rps);
    }
    return buf;
}

static void dist_row(FILE *f, const char *name, const lt_dist *d) {
    fprintf(f, "  %-10s %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, d->mean, d->p50, d->p90,
            d->p95, d->p99, d->max);
}

void lt_report_run(FILE *f, const lt_args *a, const lt_summary *s) {
    char title[64];
    fprintf(f, "\n==== %s ", run_title(s, title, sizeof(title)));
    for (size_t i = strlen(title); i < 60; i++) {
        fputc('=', f);
    }
    fputc('\n', f);
    fprintf(f, "  %-34s %zu / %zu\n", "requests ok / failed", s->completed, s->failed);
    fprintf(f, "  %-34s %.2f\n", "duration (s)", s->duration_s);
    fprintf(f, "  %-34s %llu / %llu\n", "prompt / output tokens",
            (unsigned long long)s->prompt_tokens, (unsigned long long)s->output_tokens);
    fprintf(f, "  %-34s %.2f\n", "request throughput (req/s)", s->request_throughput);
    fprintf(f, "  %-34s %.2f\n", "output throughput (tok/s)", s->output_throughput);
    if (s->slo_set) {
        fprintf(f, "  %-34s %.2f (%zu of %zu ok requests within", "goodput (req/s)", s->goodput,
                s->good, s->completed);
        if (a->slo.ttft_ms > 0) {
            fprintf(f, " ttft<=%gms", a->slo.ttft_ms);
        }
        if (a->slo.tpot_ms > 0) {
            fprintf(f, " tpot<=%gms", a->slo.tpot_ms);
        }
        if (a->slo.e2e_ms > 0) {
            fprintf(f, " e2e<=%gms", a->slo.e2e_ms);
        }
        fprintf(f, ")\n");
    }
    fprintf(f, "  %-10s %10s %10s %10s %10s %10s %10s\n", "(ms)", "mean", "p50", "p90", "p95",
            "p99", "max");
    dist_row(f, "TTFT", &s->ttft_ms);
    dist_row(f, "TPOT", &s->tpot_ms);
    dist_row(f, "ITL", &s->itl_ms);
    dist_row(f, "E2E", &s->e2e_ms);
    if (!a->stream) {
        fprintf(f, "  (--no-stream: TTFT equals E2E, ITL is not measured)\n");
    }
    if (s->itl_truncated) {
        fprintf(f, "  (ITL sample cap reached: ITL covers the first values only)\n");
    }
    for (size_t i = 0; i < s->n_error_kinds; i++) {
        const lt_error_count *e = &s->errors[i];
        char status[16];
        snprintf(status, sizeof(status), "%d", e->http_status);
        fprintf(f, "  errors %-8s x%-6llu e.g. \"%s\"\n",
                e->http_status == 0 ? "transport" : status, (unsigned long long)e->count,
                e->example);
    }
    if (s->errors_other > 0) {
        fprintf(f, "  errors (other statuses) x%llu\n", (unsigned long long)s->errors_other);
    }
}

void lt_report_table(FILE *f, const lt_args *a, const lt_summary *runs, size_t n) {
    const char *level = a->mode == LT_MODE_OPEN_LOOP ? "rate" : "conc";
    fprintf(f, "\n%6s %6s %5s %8s %9s %9s %9s %9s %9s %9s %9s %9s %9s", level, "ok", "err", "req/s",
            "out tok/s", "TTFT p50", "TTFT p95", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p50",
            "ITL p99", "E2E p50");
    fprintf(f, "%s\n", runs != NULL && n > 0 && runs[0].slo_set ? " goodput" : "");
    for (size_t i = 0; i < n; i++) {
        const lt_summary *s = &runs[i];
        if (a->mode == LT_MODE_OPEN_LOOP) {
            fprintf(f, "%6.3g", s->rate_rps);
        } else {
            fprintf(f, "%6d", s->concurrency);
        }
        fprintf(f, " %6zu %5zu %8.2f %9.1f %9.1f %9.1f %9.1f %9.2f %9.2f %9.2f %9.2f %9.1f",
                s->completed, s->failed, s->request_throughput, s->output_throughput,
                s->ttft_ms.p50, s->ttft_ms.p95, s->ttft_ms.p99, s->tpot_ms.p50, s->tpot_ms.p99,
                s->itl_ms.p50, s->itl_ms.p99, s->e2e_ms.p50);
        if (s->slo_set) {
            fprintf(f, " %7.2f", s->goodput);
        }
        fputc('\n', f);
    }
    fprintf(f, "(latencies in ms, client side; %s requests, %s)\n",
            a->stream ? "streamed" : "non-streamed", a->endpoint_url);
}

void lt_report_coldstart(FILE *f, const lt_coldstart_result *c) {
    fprintf(f, "\n==== cold start ==============================================\n");
    fprintf(f, "  %-44s %10.1f\n", "command start -> first token (ms)", c->ready_ms);
    fprintf(f, "  %-44s %10u\n", "requests sent until the first success", c->attempts);
    fprintf(f, "  %-44s %10.1f / %.1f\n", "first successful request TTFT / E2E (ms)",
            c->cold_ttft_ms, c->cold_e2e_ms);
    fprintf(f, "  %-44s %10.1f / %.1f\n", "warm request TTFT / E2E (ms)", c->warm_ttft_ms,
            c->warm_e2e_ms);
}

static json_t *dist_json(const lt_dist *d) {
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)d->n, "mean",
                     d->mean, "p50", d->p50, "p90", d->p90, "p95", d->p95, "p99", d->p99, "min",
                     d->min, "max", d->max);
}

static json_t *run_json(const lt_summary *s) {
    json_t *errors = json_array();
    for (size_t i = 0; errors != NULL && i < s->n_error_kinds; i++) {
        json_array_append_new(
            errors, json_pack("{s:i, s:I, s:s}", "http_status", s->errors[i].http_status, "count",
                              (json_int_t)s->errors[i].count, "example", s->errors[i].example));
    }
    json_t *o = json_pack(
        "{s:i, s:f, s:I, s:I, s:f, s:I, s:I, s:f, s:f, s:o, s:o, s:o, s:o, s:o, s:b, s:I}",
        "concurrency", s->concurrency, "rate_rps", s->rate_rps, "completed",
        (json_int_t)s->completed, "failed", (json_int_t)s->failed, "duration_s", s->duration_s,
        "prompt_tokens", (json_int_t)s->prompt_tokens, "output_tokens",
        (json_int_t)s->output_tokens, "request_throughput", s->request_throughput,
        "output_throughput", s->output_throughput, "ttft_ms", dist_json(&s->ttft_ms), "tpot_ms",
        dist_json(&s->tpot_ms), "itl_ms", dist_json(&s->itl_ms), "e2e_ms", dist_json(&s->e2e_ms),
        "errors", errors, "itl_truncated", s->itl_truncated, "errors_other",
        (json_int_t)s->errors_other);
    if (o != NULL && s->slo_set) {
        json_object_set_new(o, "goodput", json_real(s->goodput));
        json_object_set_new(o, "good", json_integer((json_int_t)s->good));
    }
    return o;
}

cm_err lt_report_json(const char *path, const lt_args *a, const lt_summary *runs, size_t n,
                      const lt_coldstart_result *cold, char *err, size_t err_len) {
    json_t *root =
        json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:i, s:i, s:i, s:f, s:{s:f, s:f, s:f}}", "tool",
                  "sluice-load", "endpoint", a->endpoint_url, "model", a->model, "mode",
                  a->mode == LT_MODE_OPEN_LOOP    ? "open-loop"
                  : a->mode == LT_MODE_COLD_START ? "cold-start"
                                                  : "closed-loop",
                  "stream", a->stream, "input_tokens_min", (int)a->input_min, "input_tokens_max",
                  (int)a->input_max, "output_tokens_min", (int)a->output_min, "output_tokens_max",
                  (int)a->output_max, "shared_prefix", a->shared_prefix, "slo", "ttft_ms",
                  a->slo.ttft_ms, "tpot_ms", a->slo.tpot_ms, "e2e_ms", a->slo.e2e_ms);
    json_t *arr = json_array();
    cm_err rv = CM_ERR_NOMEM;
    if (root == NULL || arr == NULL) {
        json_decref(arr);
        goto done;
    }
    json_object_set_new(root, "runs", arr);
    for (size_t i = 0; i < n; i++) {
        if (json_array_append_new(arr, run_json(&runs[i])) != 0) {
            goto done;
        }
    }
    if (cold != NULL) {
        json_object_set_new(root, "cold_start",
                            json_pack("{s:f, s:f, s:f, s:f, s:f, s:i}", "ready_ms", cold->ready_ms,
                                      "cold_ttft_ms", cold->cold_ttft_ms, "cold_e2e_ms",
                                      cold->cold_e2e_ms, "warm_ttft_ms", cold->warm_ttft_ms,
                                      "warm_e2e_ms", cold->warm_e2e_ms, "attempts",
                                      (int)cold->attempts));
    }
    if (json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) != 0) {
        snprintf(err, err_len, "cannot write %s", path);
        rv = CM_ERR_IO;
        goto done;
    }
    rv = CM_OK;
done:
    if (rv == CM_ERR_NOMEM) {
        snprintf(err, err_len, "out of memory building the JSON report");
    }
    json_decref(root);
    return rv;
}

cm_err lt_report_csv(const char *path, const lt_args *a, const lt_summary *runs, size_t n,
                     char *err, size_t err_len) {
    (void)a;
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        snprintf(err, err_len, "cannot write %s: %s", path, strerror(errno));
        return CM_ERR_IO;
    }
    fprintf(f, "concurrency,rate_rps,completed,failed,duration_s,prompt_tokens,output_tokens,"
               "request_throughput,output_throughput,goodput");
    const char *names[] = {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"};
    const char *stats[] = {"mean", "p50", "p90", "p95", "p99"};
    for (size_t m = 0; m < 4; m++) {
        for (size_t k = 0; k < 5; k++) {
            fprintf(f, ",%s_%s", names[m], stats[k]);
        }
    }
    fputc('\n', f);
    for (size_t i = 0; i < n; i++) {
        const lt_summary *s = &runs[i];
        fprintf(f, "%d,%.6g,%zu,%zu,%.6f,%llu,%llu,%.6f,%.6f,", s->concurrency, s->rate_rps,
                s->completed, s->failed, s->duration_s, (unsigned long long)s->prompt_tokens,
                (unsigned long long)s->output_tokens, s->request_throughput, s->output_throughput);
        if (s->slo_set) {
            fprintf(f, "%.6f", s->goodput);
        }
        const lt_dist *d[] = {&s->ttft_ms, &s->tpot_ms, &s->itl_ms, &s->e2e_ms};
        for (size_t m = 0; m < 4; m++) {
            fprintf(f, ",%.4f,%.4f,%.4f,%.4f,%.4f", d[m]->mean, d[m]->p50, d[m]->p90, d[m]->p95,
                    d[m]->p99);
        }
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        snprintf(err, err_len, "cannot write %s", path);
        return CM_ERR_IO;
    }
    return CM_OK;
}

void lt_report_histogram(const double *values, size_t n, double lo, double hi, size_t nbins,
                         size_t *counts) {
    memset(counts, 0, nbins * sizeof(*counts));
    if (nbins == 0) {
        return;
    }
    double width = (hi - lo) / (double)nbins;
    for (size_t i = 0; i < n; i++) {
        size_t b = 0;
        if (width > 0 && values[i] > lo) {
            double pos = (values[i] - lo) / width;
            b = pos >= (double)nbins ? nbins - 1 : (size_t)pos;
        }
        counts[b]++;
    }
}

#define PLOT_BINS 30

/* write_plot_script writes the gnuplot program with its data inline (datablocks). */
static void write_plot_script(FILE *g, const char *png, const lt_args *a, const lt_summary *runs,
                              size_t n) {
    int open_loop = a->mode == LT_MODE_OPEN_LOOP;
    fprintf(g, "set terminal pngcairo size 1400,600 noenhanced font 'sans,10'\n");
    /* the path goes into a gnuplot string: single quotes cannot be escaped there */
    fprintf(g, "set output '%s'\n", png);
    fprintf(g, "$lat << EOD\n");
    for (size_t i = 0; i < n; i++) {
        const lt_summary *s = &runs[i];
        fprintf(g, "%g %g %g %g %g %g %g\n", open_loop ? s->rate_rps : (double)s->concurrency,
                s->ttft_ms.p50, s->ttft_ms.p95, s->tpot_ms.p50, s->itl_ms.p95, s->e2e_ms.p50,
                s->e2e_ms.p95);
    }
    fprintf(g, "EOD\n");
    double hi = 0;
    for (size_t i = 0; i < n; i++) {
        hi = runs[i].ttft_ms.p99 > hi ? runs[i].ttft_ms.p99 : hi;
    }
    hi = hi > 0 ? hi * 1.05 : 1;
    for (size_t i = 0; i < n; i++) {
        size_t counts[PLOT_BINS];
        lt_report_histogram(runs[i].ttft_values, runs[i].n_ttft_values, 0, hi, PLOT_BINS, counts);
        fprintf(g, "$h%zu << EOD\n", i);
        for (size_t b = 0; b < PLOT_BINS; b++) {
            fprintf(g, "%g %zu\n", ((double)b + 0.5) * hi / PLOT_BINS, counts[b]);
        }
        fprintf(g, "EOD\n");
    }
    fprintf(g,
            "set multiplot layout 1,2 title 'sluice-load: %s, model %s, %u-%u in / %u-%u out "
            "tokens%s'\n",
            open_loop ? "open loop" : "closed loop", a->model, a->input_min, a->input_max,
            a->output_min, a->output_max, a->stream ? "" : ", not streamed");
    fprintf(
        g, "set grid\nset key outside below horizontal maxrows 2\nset bmargin 7\nset logscale y\n");
    fprintf(g, "set xlabel '%s'\nset ylabel 'latency (ms, log scale)'\n",
            open_loop ? "request rate (req/s)" : "concurrency (requests in flight)");
    /* x range and tics at the measured levels, with a margin, so the points are readable */
    double xmin = 0, xmax = 0;
    for (size_t i = 0; i < n; i++) {
        double x = open_loop ? runs[i].rate_rps : (double)runs[i].concurrency;
        xmin = i == 0 || x < xmin ? x : xmin;
        xmax = i == 0 || x > xmax ? x : xmax;
    }
    if (!open_loop && n > 1 && xmax > xmin) {
        fprintf(g, "set logscale x 10\nset xrange [%g:%g]\n", xmin / 1.5, xmax * 1.5);
    } else {
        fprintf(g, "set xrange [%g:%g]\n", xmin * 0.5, xmax * 1.5 + 1e-9);
    }
    fprintf(g, "set xtics (");
    for (size_t i = 0; i < n; i++) {
        fprintf(g, "%s%g", i ? ", " : "",
                open_loop ? runs[i].rate_rps : (double)runs[i].concurrency);
    }
    fprintf(g, ")\n\n");
    fprintf(g, "set title 'latency vs %s'\n", open_loop ? "rate" : "concurrency");
    fprintf(g, "plot $lat using 1:2 with linespoints lw 2 title 'TTFT p50', "
               "$lat using 1:3 with linespoints lw 2 title 'TTFT p95', "
               "$lat using 1:4 with linespoints lw 2 title 'TPOT p50', "
               "$lat using 1:5 with linespoints lw 2 title 'ITL p95', "
               "$lat using 1:6 with linespoints lw 2 title 'E2E p50', "
               "$lat using 1:7 with linespoints lw 2 title 'E2E p95'\n");
    fprintf(g, "unset logscale\nset xtics autofreq\nset xrange [0:%g]\n", hi);
    fprintf(g, "set key inside top right vertical opaque box\nset title 'TTFT histogram'\n");
    fprintf(g, "set xlabel 'time to first token (ms)'\nset ylabel 'requests'\n");
    fprintf(g, "set style fill transparent solid 0.35 border\nset boxwidth %g absolute\n",
            hi / PLOT_BINS);
    fprintf(g, "plot ");
    for (size_t i = 0; i < n; i++) {
        char title[64];
        fprintf(g, "%s$h%zu using 1:2 with boxes title '%s'", i ? ", " : "", i,
                run_title(&runs[i], title, sizeof(title)));
    }
    fprintf(g, "\nunset multiplot\n");
}

cm_err lt_report_plot(const char *path, const lt_args *a, const lt_summary *runs, size_t n,
                      char *err, size_t err_len) {
    if (n == 0) {
        snprintf(err, err_len, "nothing to plot");
        return CM_ERR_INVALID;
    }
    if (strchr(path, '\'') != NULL || strchr(path, '\n') != NULL ||
        strchr(a->model, '\'') != NULL || strchr(a->model, '\n') != NULL) {
        snprintf(err, err_len, "--plot path and model name must not contain quotes or newlines");
        return CM_ERR_INVALID;
    }
    /* popen is fine here: the command is a constant, the data goes through the pipe */
    FILE *g = popen("gnuplot 2>&1", "w");
    if (g == NULL) {
        snprintf(err, err_len, "cannot run gnuplot: %s", strerror(errno));
        return CM_ERR_IO;
    }
    write_plot_script(g, path, a, runs, n);
    int status = pclose(g);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(err, err_len,
                 "gnuplot failed (exit %d): is it installed (apt-get install gnuplot-nox)?",
                 status == -1 || !WIFEXITED(status) ? -1 : WEXITSTATUS(status));
        return CM_ERR_IO;
    }
    if (access(path, F_OK) != 0) {
        snprintf(err, err_len, "gnuplot did not write %s", path);
        return CM_ERR_IO;
    }
    return CM_OK;
}
