/*
 * lt_coldstart: the cold-start measurement. Starts a server command (for instance a worker,
 * or scripts/serve), polls the endpoint with one streaming request at a time until one
 * succeeds, and reports the time from the command's start to that request's first token;
 * then sends one warm request for comparison, and stops the command (SIGTERM to its process
 * group, SIGKILL after 10 s).
 *
 * Bounded: gives up after timeout_s, or as soon as the command exits on its own.
 * Thread contract: one thread; forks a child (call before starting threads of your own).
 */
#ifndef LT_COLDSTART_H
#define LT_COLDSTART_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "lt_args.h"
#include "lt_prompt.h"

typedef struct lt_coldstart_result {
    double ready_ms;     /* command start -> first token of the first successful request */
    double cold_ttft_ms; /* TTFT of that first successful request itself */
    double cold_e2e_ms;
    double warm_ttft_ms; /* TTFT of the next request, once everything is warm */
    double warm_e2e_ms;
    uint32_t attempts; /* requests sent until one succeeded */
} lt_coldstart_result;

/* lt_coldstart_run performs the measurement described above. err says why on failure. */
cm_err lt_coldstart_run(const lt_args *a, lt_prompt_source *prompts, lt_coldstart_result *out,
                        char *err, size_t err_len);

#endif /* LT_COLDSTART_H */
