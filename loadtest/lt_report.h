/*
 * lt_report: what sluice-load shows and writes: the progress line while running, a block
 * per run (vLLM-style: throughput, goodput, mean/p50/p90/p95/p99 of TTFT, TPOT, ITL, E2E,
 * errors by status), the final one-line-per-level table, and the --json, --csv and --plot
 * (gnuplot PNG: latency vs concurrency or rate, and a TTFT histogram) outputs.
 *
 * File outputs return CM_ERR_IO with err set when a file cannot be written or gnuplot fails.
 */
#ifndef LT_REPORT_H
#define LT_REPORT_H

#include <stdio.h>

#include "cm_err.h"
#include "lt_args.h"
#include "lt_coldstart.h"
#include "lt_stats.h"

/*
 * lt_report_progress prints one progress line; on a terminal it is redrawn in place, else
 * only the final line of each phase is printed. total 0 = unknown (duration-bounded).
 */
void lt_report_progress(FILE *f, const char *label, const char *phase, uint64_t done,
                        uint64_t total, uint64_t ok, uint64_t failed, size_t inflight,
                        double elapsed_s, int final);
/* lt_report_run prints the detailed block of one run. */
void lt_report_run(FILE *f, const lt_args *a, const lt_summary *s);
/* lt_report_table prints the summary table, one line per run. */
void lt_report_table(FILE *f, const lt_args *a, const lt_summary *runs, size_t n);
/* lt_report_coldstart prints the cold-start result. */
void lt_report_coldstart(FILE *f, const lt_coldstart_result *c);

/* lt_report_json writes every run (and the cold-start result when cold != NULL) as JSON. */
cm_err lt_report_json(const char *path, const lt_args *a, const lt_summary *runs, size_t n,
                      const lt_coldstart_result *cold, char *err, size_t err_len);
/* lt_report_csv writes a header and one line per run. */
cm_err lt_report_csv(const char *path, const lt_args *a, const lt_summary *runs, size_t n,
                     char *err, size_t err_len);
/* lt_report_plot renders a PNG with gnuplot (must be on PATH). */
cm_err lt_report_plot(const char *path, const lt_args *a, const lt_summary *runs, size_t n,
                      char *err, size_t err_len);

/*
 * lt_report_histogram counts n values into nbins equal bins over [lo, hi); values outside
 * are clamped into the first/last bin. counts must hold nbins entries.
 */
void lt_report_histogram(const double *values, size_t n, double lo, double hi, size_t nbins,
                         size_t *counts);

#endif /* LT_REPORT_H */
