/*
 * sample_cases: the device sampler's test cases (tests/gpu): random logits rows with every
 * feature of the host sampler (greedy, temperature, top-k, top-p, min-p, penalties from a
 * history, logit_bias, logprobs and top-n, ties, NaN and -inf, flat rows), packed as the
 * kernel's descriptors (cuda_ops.h), with wk_sampler_sample's results as the reference and the
 * comparison of a kernel's output against them. Used by gpu_ops_test (the real kernel),
 * gpu_bench and sample_emu_test (the kernel on the CPU).
 */
#ifndef SAMPLE_CASES_H
#define SAMPLE_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_ops.h"
#include "gpu_util.h"
#include "sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sc_cases {
    int n, n_vocab;
    float *logits;             /* (n, n_vocab) kernel input: row seqs[c].row is case c */
    wk_cuda_sample_seq *seqs;  /* (n) rows in reverse order of the cases */
    wk_cuda_sample_bias *bias; /* (n_bias) */
    uint32_t n_bias;
    wk_cuda_sample_pen *pen; /* (n_pen) */
    uint32_t n_pen;
    wk_sample_result *ref; /* (n) wk_sampler_sample on case c's row; token -1 = failed */
} sc_cases;

/* sc_case_params: case c's sampling (c % 12 picks one of greedy with logprobs, top-k, top-p,
 * min-p, everything combined with penalties, plain temperature, top-k 1024 with top-p, top-p
 * (over a flat row in sc_cases_make), greedy (over ties, NaN and -inf), top-k 1, logit_bias
 * with 20 alternatives, top-p with min-p and repetition). Bias ids are below 12. */
void sc_case_params(int c, wk_sampling_params *p);

/* sc_cases_make draws n cases over n_vocab (>= 400) tokens; free with sc_cases_free. The
 * host sampler runs here (a few ms per case at 128k tokens). */
void sc_cases_make(gu_rng *r, int n, int n_vocab, sc_cases *out);
void sc_cases_free(sc_cases *c);

/*
 * sc_cases_check compares got (n results, case order) with the reference: greedy and failed
 * cases must agree exactly, at most max_drawn_diff drawn tokens may differ (rounding at a
 * boundary of the draw), logprobs and top-n within 1e-4 with the same ids. Writes a summary
 * into detail; returns 1 when all holds.
 */
int sc_cases_check(const sc_cases *c, const wk_cuda_sample_out *got, int max_drawn_diff,
                   char *detail, size_t detail_len);

#ifdef __cplusplus
}
#endif

#endif /* SAMPLE_CASES_H */
