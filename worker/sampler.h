/*
 * wk_sampler: logits -> next token, per sequence.
 *
 * Order of operations (as llama.cpp and vLLM users expect): logit_bias, repetition penalty
 * (over prompt + generated), presence/frequency penalties (over generated), then greedy when
 * temperature == 0, else temperature, top-k, top-p, min-p and a draw from the seeded RNG.
 * Logprobs are from the model's distribution after bias and penalties, before temperature
 * and truncation (what OpenAI returns), with the top-n alternatives.
 *
 * Determinism: each sequence owns its RNG state seeded from params.seed, so the same seed and
 * request give the same tokens whatever else runs in the batch.
 *
 * A wk_sampler holds scratch for one vocabulary; one per engine thread, reused for every
 * sequence; it allocates only at init.
 */
#ifndef WK_SAMPLER_H
#define WK_SAMPLER_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "cm_err.h"
#include "cm_rng.h"

#define WK_MAX_LOGIT_BIAS 300
#define WK_MAX_TOP_LOGPROBS 20

typedef struct wk_logit_bias {
    int32_t token_id;
    float bias;
} wk_logit_bias;

typedef struct wk_sampling_params {
    float temperature; /* 0 = greedy */
    int32_t top_k;     /* <= 0 = off */
    float top_p;       /* 1 = off */
    float min_p;       /* 0 = off */
    uint64_t seed;
    float repetition_penalty; /* 1 = off */
    float presence_penalty;   /* 0 = off */
    float frequency_penalty;  /* 0 = off */
    uint32_t n_logit_bias;
    wk_logit_bias logit_bias[WK_MAX_LOGIT_BIAS];
    bool logprobs;         /* return the chosen token's logprob */
    uint32_t top_logprobs; /* alternatives, <= WK_MAX_TOP_LOGPROBS */
} wk_sampling_params;

/* wk_sampling_defaults: temperature 1, top_p 1, top_k off, min_p 0, penalties off, seed 0. */
void wk_sampling_defaults(wk_sampling_params *p);

/* wk_sampling_validate checks ranges against n_vocab; CM_ERR_INVALID with err naming the
 * parameter ("top_p must be in (0, 1]", "logit_bias token 99999 is not in the vocabulary"). */
cm_err wk_sampling_validate(const wk_sampling_params *p, uint32_t n_vocab, char *err,
                            size_t errlen);

/* Per-sequence RNG (xoshiro256** or similar), seeded by wk_rng_seed. */
typedef cm_rng wk_rng;
void wk_rng_seed(wk_rng *r, uint64_t seed);
double wk_rng_uniform(wk_rng *r); /* [0, 1) */

typedef struct wk_logprob_entry {
    int32_t token_id;
    float logprob;
} wk_logprob_entry;

typedef struct wk_sample_result {
    int32_t token_id;
    float logprob; /* valid when params.logprobs */
    uint32_t n_top;
    wk_logprob_entry top[WK_MAX_TOP_LOGPROBS]; /* sorted by logprob, descending */
} wk_sample_result;

typedef struct wk_sampler wk_sampler;

/* wk_sampler_create allocates scratch for n_vocab; free with wk_sampler_destroy. */
cm_err wk_sampler_create(uint32_t n_vocab, wk_sampler **out);
void wk_sampler_destroy(wk_sampler *s);

/*
 * wk_sampler_sample picks the next token from logits (n_vocab f32; modified in place).
 * history: prompt + generated ids so far (for penalties); n_prompt of them are the prompt.
 * rng: the sequence's own state (advanced only when sampling, not for greedy).
 */
cm_err wk_sampler_sample(wk_sampler *s, const wk_sampling_params *p, float *logits,
                         const int32_t *history, size_t n_history, size_t n_prompt, wk_rng *rng,
                         wk_sample_result *out);

/*
 * The penalty state of one sequence as a sparse list (what device sampling ships instead of the
 * whole history): one entry per distinct token of prompt + generated, in order of first
 * occurrence. Penalties depend only on this set and these counts, so the list gives the same
 * logits as the history it came from.
 */
typedef struct wk_penalty_entry {
    int32_t token_id;
    uint32_t n_generated; /* occurrences among the generated tokens */
    uint32_t in_prompt;   /* 1 when the token occurs in the prompt, else 0 */
} wk_penalty_entry;

/* wk_sampling_has_penalties: any of the repetition/presence/frequency penalties is on. */
bool wk_sampling_has_penalties(const wk_sampling_params *p);

/* wk_sampling_draws: wk_sampler_sample draws from the rng for p (temperature > 0): exactly one
 * wk_rng_uniform per successful call, else none. */
bool wk_sampling_draws(const wk_sampling_params *p);

/*
 * wk_sampler_penalties lists the distinct tokens of history (n_prompt of them the prompt) into
 * pen (capacity cap) and sets *n_pen. CM_ERR_LIMIT when there are more than cap distinct tokens
 * (pen then holds the first cap, *n_pen = cap); CM_ERR_INVALID for an id outside the vocabulary.
 */
cm_err wk_sampler_penalties(wk_sampler *s, const int32_t *history, size_t n_history,
                            size_t n_prompt, wk_penalty_entry *pen, size_t cap, size_t *n_pen);

/*
 * wk_sampler_sample_sparse is wk_sampler_sample with the penalty state as a list (see
 * wk_sampler_penalties; each token at most once) and the uniform draw given as u01 in [0, 1)
 * instead of an rng. With the list of a history and the u01 that wk_sampler_sample would have
 * drawn (wk_rng_uniform of the sequence's rng, when wk_sampling_draws), the result is the same,
 * bit for bit. It is the reference the device sampler is checked against.
 */
cm_err wk_sampler_sample_sparse(wk_sampler *s, const wk_sampling_params *p, float *logits,
                                const wk_penalty_entry *pen, size_t n_pen, double u01,
                                wk_sample_result *out);

/*
 * Stop strings over a text stream: text deltas go in, the safe part comes out. Text that could
 * be the beginning of a stop string is held back until it either completes a stop (generation
 * ends, the stop string and anything after it are dropped) or diverges (released). Matches
 * across token boundaries.
 */
#define WK_MAX_STOP_STRINGS 8
#define WK_MAX_STOP_BYTES 256

typedef struct wk_stop_matcher {
    uint32_t n_stops;
    char stops[WK_MAX_STOP_STRINGS][WK_MAX_STOP_BYTES];
    uint32_t stop_len[WK_MAX_STOP_STRINGS];
    char held[WK_MAX_STOP_BYTES]; /* text held back: a proper prefix of some stop string */
    uint32_t n_held;
} wk_stop_matcher;

/* wk_stop_init copies the stop strings; too many or too long: CM_ERR_LIMIT; empty: INVALID. */
cm_err wk_stop_init(wk_stop_matcher *m, const char *const *stops, uint32_t n);

/* wk_stop_push feeds delta (len bytes); writes releasable text into out (capacity >= len +
 * WK_MAX_STOP_BYTES) and sets *n_out; sets *stopped when a stop string completed (the text
 * before it is in out). Never splits a UTF-8 character. */
void wk_stop_push(wk_stop_matcher *m, const char *delta, size_t len, char *out, size_t *n_out,
                  bool *stopped);

/* wk_stop_flush releases held text at end of generation (when no stop matched). */
size_t wk_stop_flush(wk_stop_matcher *m, char *out);

#endif /* WK_SAMPLER_H */
