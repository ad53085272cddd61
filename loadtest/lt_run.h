/*
 * lt_run: drives one measured run against an OpenAI-compatible endpoint with libcurl's multi
 * interface, on the calling thread (one event loop, no worker threads).
 *
 *  - closed loop: `concurrency` requests in flight; each completion starts the next one;
 *  - open loop: requests arrive as a Poisson process at rate_rps (seeded); at most
 *    max_inflight are in flight, later arrivals wait for a free slot (their clock starts
 *    when they are sent, as in vLLM's benchmark).
 * A run stops starting requests after `requests` requests or `duration_s` seconds, whichever
 * comes first (at least one of the two is set), then waits for those in flight. Each request
 * has its own timeout. Before the measured part, `warmup` requests run unmeasured.
 *
 * Every finished request becomes one lt_sample in stats (failures too, plus an error count by
 * HTTP status); ITL values of successful requests go to stats as well.
 * Thread contract: call from one thread; curl_global_init must have been called.
 */
#ifndef LT_RUN_H
#define LT_RUN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "lt_args.h"
#include "lt_prompt.h"
#include "lt_stats.h"

#define LT_RUN_MAX_EVENT_BYTES (256u * 1024u) /* one SSE event */
#define LT_RUN_MAX_BODY_BYTES (1024u * 1024u) /* a non-streamed body or an error body */
#define LT_RUN_MAX_ITL_PER_REQUEST 1000000u

typedef struct lt_run_config {
    const lt_args *args;         /* endpoint, key, model, stream, timeout (borrowed) */
    int concurrency;             /* closed loop when > 0 */
    double rate_rps;             /* open loop when concurrency == 0 */
    uint32_t max_inflight;       /* open loop cap */
    uint32_t requests;           /* 0 = bounded by duration only */
    double duration_s;           /* 0 = bounded by requests only */
    uint32_t warmup;             /* unmeasured requests first */
    uint64_t seed;               /* arrivals */
    int progress;                /* print a progress line on stderr */
    const char *label;           /* for the progress line, e.g. "concurrency 10" */
    volatile sig_atomic_t *stop; /* optional: set non-zero (e.g. by SIGINT) to stop early */
} lt_run_config;

/*
 * lt_run performs one run, adding to stats (not cleared first). *duration_s_out is the wall
 * time from the first measured request to the last completion. Returns CM_OK even when every
 * request failed (that is a measurement); an error only when the run itself could not proceed
 * (curl setup, memory), with err set.
 */
cm_err lt_run(const lt_run_config *cfg, lt_prompt_source *prompts, lt_stats *stats,
              double *duration_s_out, char *err, size_t err_len);

#endif /* LT_RUN_H */
