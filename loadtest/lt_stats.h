/*
 * lt_stats: per-request measurements and their summary, defined as vLLM's serving benchmark
 * defines them (client side):
 *   TTFT  time from sending the request to the first content token;
 *   ITL   every gap between two consecutive content chunks, pooled over all requests;
 *   TPOT  per request (E2E - TTFT) / (output_tokens - 1), for requests with >= 2 tokens;
 *   E2E   time from sending the request to the end of the response;
 *   request throughput = successful requests / wall time of the run,
 *   output throughput  = output tokens of successful requests / wall time,
 *   goodput            = successful requests meeting every SLO given / wall time.
 * Distributions report mean, p50, p90, p95, p99 (linear interpolation between closest ranks,
 * like numpy.percentile), min and max. Failed requests count only in the error table.
 *
 * Memory is bounded: lt_stats_init takes the maximum number of samples and ITL values; extra
 * ITL values are dropped and flagged (itl_truncated), extra samples are an error.
 * Thread contract: an lt_stats has one owner thread.
 */
#ifndef LT_STATS_H
#define LT_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

#define LT_MAX_ERROR_KINDS 16
#define LT_ERROR_EXAMPLE_BYTES 160

/* Service-level objectives for goodput; a value <= 0 means "not set". */
typedef struct lt_slo {
    double ttft_ms;
    double tpot_ms;
    double e2e_ms;
} lt_slo;

/* One finished request. Times in milliseconds. */
typedef struct lt_sample {
    double ttft_ms; /* < 0 when no content token arrived */
    double e2e_ms;
    double tpot_ms;         /* < 0 when fewer than 2 output tokens */
    uint32_t output_tokens; /* usage.completion_tokens when reported, else content chunks */
    uint32_t prompt_tokens; /* usage.prompt_tokens when reported, else the generator's estimate */
    int http_status;        /* 0 = no HTTP answer (connection failure, timeout) */
    int ok;                 /* 2xx and a complete, well-formed response */
} lt_sample;

typedef struct lt_dist {
    size_t n;
    double mean, p50, p90, p95, p99, min, max; /* all 0 when n == 0 */
} lt_dist;

/* Failed requests grouped by HTTP status (0 = transport), with one example message. */
typedef struct lt_error_count {
    int http_status;
    uint64_t count;
    char example[LT_ERROR_EXAMPLE_BYTES];
} lt_error_count;

typedef struct lt_stats {
    lt_sample *samples;
    size_t n_samples, cap_samples, max_samples;
    double *itl_ms;
    size_t n_itl, cap_itl, max_itl;
    int itl_truncated;
    lt_error_count errors[LT_MAX_ERROR_KINDS];
    size_t n_error_kinds;
    uint64_t errors_other; /* failures beyond LT_MAX_ERROR_KINDS distinct statuses */
} lt_stats;

/* The summary of one run (one concurrency level or one rate). */
typedef struct lt_summary {
    int concurrency;  /* closed loop level; 0 in open-loop mode */
    double rate_rps;  /* open-loop target rate; 0 in closed-loop mode */
    size_t completed; /* ok requests */
    size_t failed;
    double duration_s;
    uint64_t prompt_tokens, output_tokens; /* sums over ok requests */
    double request_throughput;             /* req/s */
    double output_throughput;              /* tokens/s */
    int slo_set;                           /* any SLO given */
    size_t good;                           /* ok requests meeting every SLO */
    double goodput;                        /* good req/s */
    lt_dist ttft_ms, tpot_ms, itl_ms, e2e_ms;
    int itl_truncated;
    lt_error_count errors[LT_MAX_ERROR_KINDS];
    size_t n_error_kinds;
    uint64_t errors_other;
    double *ttft_values; /* TTFT of every ok request (ms), owned, for the histogram */
    size_t n_ttft_values;
} lt_summary;

/* lt_stats_init prepares s for at most max_samples requests and max_itl ITL values. */
cm_err lt_stats_init(lt_stats *s, size_t max_samples, size_t max_itl);
/* lt_stats_fini frees s's arrays; s may be zeroed. */
void lt_stats_fini(lt_stats *s);
/* lt_stats_clear forgets every sample and error but keeps the buffers, for the next run. */
void lt_stats_clear(lt_stats *s);
/* lt_stats_add_sample records one finished request; CM_ERR_LIMIT beyond max_samples. */
cm_err lt_stats_add_sample(lt_stats *s, const lt_sample *sample);
/* lt_stats_add_itl records one inter-token gap; beyond max_itl it is dropped (flagged). */
cm_err lt_stats_add_itl(lt_stats *s, double ms);
/* lt_stats_add_error counts one failure under http_status; message is copied (truncated). */
void lt_stats_add_error(lt_stats *s, int http_status, const char *message);

/*
 * lt_percentile returns the pct-th percentile (0..100) of n sorted values with linear
 * interpolation; 0 when n == 0.
 */
double lt_percentile(const double *sorted, size_t n, double pct);
/* lt_dist_compute fills out from n values (the array is sorted in place). */
void lt_dist_compute(double *values, size_t n, lt_dist *out);
/* lt_slo_met tells whether an ok sample meets every SLO set in slo. */
int lt_slo_met(const lt_slo *slo, const lt_sample *sample);

/*
 * lt_stats_summarize computes out from s for a run of duration_s seconds. out owns
 * ttft_values afterwards: free with lt_summary_fini (also on failure, out is then empty).
 */
cm_err lt_stats_summarize(const lt_stats *s, double duration_s, const lt_slo *slo, lt_summary *out);
void lt_summary_fini(lt_summary *out);

#endif /* LT_STATS_H */
