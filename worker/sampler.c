/*
 * wk_sampler: logit_bias, penalties, logprobs, greedy / temperature / top-k / top-p / min-p.
 *
 * Cost per call is O(n_vocab) plus a sort of the candidates that survive: top-k and top-p
 * use quickselect on (logit, id) pairs and sort only the prefix they need, growing it
 * geometrically for top-p, so a 152k vocabulary is never fully sorted.
 */
#include "sampler.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float logit; /* after temperature */
    int32_t id;
} cand;

struct wk_sampler {
    uint32_t n_vocab;
    cand *cands;      /* (n_vocab) candidate scratch */
    uint32_t *counts; /* (n_vocab) occurrences in history; all zero between calls */
    int32_t *touched; /* (n_vocab) ids whose count is non-zero, to reset them */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void wk_sampling_defaults(wk_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
}

cm_err wk_sampling_validate(const wk_sampling_params *p, uint32_t n_vocab, char *err,
                            size_t errlen) {
    if (!isfinite(p->temperature) || p->temperature < 0.0f || p->temperature > 100.0f) {
        set_err(err, errlen, "temperature must be in [0, 100]");
        return CM_ERR_INVALID;
    }
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
        set_err(err, errlen, "top_p must be in (0, 1]");
        return CM_ERR_INVALID;
    }
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) {
        set_err(err, errlen, "min_p must be in [0, 1]");
        return CM_ERR_INVALID;
    }
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 10.0f)) {
        set_err(err, errlen, "repetition_penalty must be in (0, 10]");
        return CM_ERR_INVALID;
    }
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f)) {
        set_err(err, errlen, "presence_penalty must be in [-2, 2]");
        return CM_ERR_INVALID;
    }
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f)) {
        set_err(err, errlen, "frequency_penalty must be in [-2, 2]");
        return CM_ERR_INVALID;
    }
    if (p->n_logit_bias > WK_MAX_LOGIT_BIAS) {
        set_err(err, errlen, "logit_bias has %u entries (limit %d)", p->n_logit_bias,
                WK_MAX_LOGIT_BIAS);
        return CM_ERR_INVALID;
    }
    for (uint32_t i = 0; i < p->n_logit_bias; i++) {
        const wk_logit_bias *b = &p->logit_bias[i];
        if (b->token_id < 0 || (uint32_t)b->token_id >= n_vocab) {
            set_err(err, errlen, "logit_bias token %d is not in the vocabulary", b->token_id);
            return CM_ERR_INVALID;
        }
        if (!(b->bias >= -100.0f && b->bias <= 100.0f)) {
            set_err(err, errlen, "logit_bias for token %d must be in [-100, 100]", b->token_id);
            return CM_ERR_INVALID;
        }
    }
    if (p->top_logprobs > WK_MAX_TOP_LOGPROBS) {
        set_err(err, errlen, "top_logprobs must be at most %d", WK_MAX_TOP_LOGPROBS);
        return CM_ERR_INVALID;
    }
    return CM_OK;
}

/* ---- RNG: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void wk_rng_seed(wk_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        r->s[i] = splitmix64(&x);
    }
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(wk_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double wk_rng_uniform(wk_rng *r) {
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- sampler ---- */

cm_err wk_sampler_create(uint32_t n_vocab, wk_sampler **out) {
    *out = NULL;
    if (n_vocab == 0) {
        return CM_ERR_INVALID;
    }
    wk_sampler *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return CM_ERR_NOMEM;
    }
    s->n_vocab = n_vocab;
    s->cands = malloc(sizeof(cand) * n_vocab);
    s->counts = calloc(n_vocab, sizeof(uint32_t));
    s->touched = malloc(sizeof(int32_t) * n_vocab);
    if (s->cands == NULL || s->counts == NULL || s->touched == NULL) {
        wk_sampler_destroy(s);
        return CM_ERR_NOMEM;
    }
    *out = s;
    return CM_OK;
}

void wk_sampler_destroy(wk_sampler *s) {
    if (s == NULL) {
        return;
    }
    free(s->cands);
    free(s->counts);
    free(s->touched);
    free(s);
}

/* Candidate order: higher logit first, lower id first among equals (a total order, so the
 * result never depends on how the selection happened to permute the array). */
static bool cand_before(const cand *a, const cand *b) {
    if (a->logit != b->logit) {
        return a->logit > b->logit;
    }
    return a->id < b->id;
}

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (cand_before(x, y)) {
        return -1;
    }
    return cand_before(y, x) ? 1 : 0;
}

/* Rearranges c[0..n) so that its first k entries are the k best (in no particular order). */
static void select_top(cand *c, size_t n, size_t k) {
    size_t lo = 0, hi = n; /* the k-th best lies in [lo, hi) */
    while (hi - lo > 1) {
        /* Median of three as pivot, moved to the end. */
        size_t mid = lo + (hi - lo) / 2;
        size_t last = hi - 1;
        if (cand_before(&c[mid], &c[lo])) {
            cand t = c[mid];
            c[mid] = c[lo];
            c[lo] = t;
        }
        if (cand_before(&c[last], &c[lo])) {
            cand t = c[last];
            c[last] = c[lo];
            c[lo] = t;
        }
        if (cand_before(&c[mid], &c[last])) {
            cand t = c[mid];
            c[mid] = c[last];
            c[last] = t;
        }
        cand pivot = c[last];
        size_t store = lo;
        for (size_t i = lo; i < last; i++) {
            if (cand_before(&c[i], &pivot)) {
                cand t = c[i];
                c[i] = c[store];
                c[store] = t;
                store++;
            }
        }
        c[last] = c[store];
        c[store] = pivot;
        if (store == k - 1 || store == k) {
            return;
        }
        if (store < k) {
            lo = store + 1;
        } else {
            hi = store;
        }
    }
}

static float sanitize(float x) {
    return isnan(x) ? -INFINITY : x;
}

static cm_err apply_penalties(wk_sampler *s, const wk_sampling_params *p, float *logits,
                              const int32_t *history, size_t n_history, size_t n_prompt) {
    size_t n_touched = 0;
    cm_err rv = CM_OK;
    for (size_t i = 0; i < n_history; i++) {
        if (history[i] < 0 || (uint32_t)history[i] >= s->n_vocab) {
            rv = CM_ERR_INVALID;
            goto reset;
        }
    }
    if (p->repetition_penalty != 1.0f) {
        /* Each distinct token of prompt + output once: divide positive logits, multiply
         * negative ones, so the penalty always lowers the token's probability. */
        for (size_t i = 0; i < n_history; i++) {
            int32_t id = history[i];
            if (s->counts[id]++ == 0) {
                s->touched[n_touched++] = id;
                float l = logits[id];
                logits[id] = l > 0.0f ? l / p->repetition_penalty : l * p->repetition_penalty;
            }
        }
        for (size_t i = 0; i < n_touched; i++) {
            s->counts[s->touched[i]] = 0;
        }
        n_touched = 0;
    }
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        for (size_t i = n_prompt; i < n_history; i++) {
            int32_t id = history[i];
            if (s->counts[id]++ == 0) {
                s->touched[n_touched++] = id;
            }
        }
        for (size_t i = 0; i < n_touched; i++) {
            int32_t id = s->touched[i];
            logits[id] -= p->presence_penalty + p->frequency_penalty * (float)s->counts[id];
        }
    }
reset:
    for (size_t i = 0; i < n_touched; i++) {
        s->counts[s->touched[i]] = 0;
    }
    return rv;
}

/* log-sum-exp of the logits (the log-softmax normalizer). */
static double log_normalizer(const float *logits, uint32_t n, float max) {
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        float l = sanitize(logits[i]);
        if (l != -INFINITY) {
            sum += exp((double)(l - max));
        }
    }
    return (double)max + log(sum);
}

/* The top n (<= WK_MAX_TOP_LOGPROBS) logits by insertion into a small sorted array. */
static uint32_t top_n(const float *logits, uint32_t n_vocab, uint32_t n, wk_logprob_entry *top) {
    uint32_t have = 0;
    for (uint32_t i = 0; i < n_vocab; i++) {
        float l = sanitize(logits[i]);
        if (have == n && !(l > top[have - 1].logprob)) {
            continue;
        }
        uint32_t j = have < n ? have++ : n - 1;
        while (j > 0 && l > top[j - 1].logprob) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].token_id = (int32_t)i;
        top[j].logprob = l;
    }
    return have;
}

cm_err wk_sampler_sample(wk_sampler *s, const wk_sampling_params *p, float *logits,
                         const int32_t *history, size_t n_history, size_t n_prompt, wk_rng *rng,
                         wk_sample_result *out) {
    const uint32_t n = s->n_vocab;
    memset(out, 0, sizeof *out);
    out->token_id = -1;
    if (n_prompt > n_history || (history == NULL && n_history > 0) ||
        p->n_logit_bias > WK_MAX_LOGIT_BIAS || p->top_logprobs > WK_MAX_TOP_LOGPROBS) {
        return CM_ERR_INVALID;
    }
    for (uint32_t i = 0; i < p->n_logit_bias; i++) {
        int32_t id = p->logit_bias[i].token_id;
        if (id < 0 || (uint32_t)id >= n) {
            return CM_ERR_INVALID;
        }
        logits[id] += p->logit_bias[i].bias;
    }
    cm_err rv = apply_penalties(s, p, logits, history, n_history, n_prompt);
    if (rv != CM_OK) {
        return rv;
    }

    /* Greedy pick and the maximum in one pass; ties go to the lowest id. */
    float max = -INFINITY;
    int32_t best = 0;
    for (uint32_t i = 0; i < n; i++) {
        float l = sanitize(logits[i]);
        if (l > max) {
            max = l;
            best = (int32_t)i;
        }
    }
    if (max == -INFINITY) {
        return CM_ERR_INVALID; /* no token is possible: every logit is -inf or NaN */
    }

    int32_t chosen;
    if (p->temperature <= 0.0f) {
        chosen = best;
    } else {
        const float inv_t = 1.0f / p->temperature;
        cand *c = s->cands;
        size_t nc = 0;
        for (uint32_t i = 0; i < n; i++) {
            float l = sanitize(logits[i]);
            if (l != -INFINITY) {
                c[nc].logit = (l - max) * inv_t; /* <= 0; the best is exactly 0 */
                c[nc].id = (int32_t)i;
                nc++;
            }
        }
        if (p->top_k > 0 && (size_t)p->top_k < nc) {
            select_top(c, nc, (size_t)p->top_k);
            nc = (size_t)p->top_k;
        }
        if (p->top_p < 1.0f) {
            double total = 0.0;
            for (size_t i = 0; i < nc; i++) {
                total += exp((double)c[i].logit);
            }
            double target = (double)p->top_p * total;
            /* Sort a growing prefix until it holds top_p of the mass. */
            size_t m = nc < 64 ? nc : 64;
            for (;;) {
                select_top(c, nc, m);
                qsort(c, m, sizeof *c, cand_cmp);
                double cum = 0.0;
                size_t keep = 0;
                while (keep < m) {
                    cum += exp((double)c[keep].logit);
                    keep++;
                    if (cum >= target) {
                        break;
                    }
                }
                if (cum >= target || m == nc) {
                    nc = keep;
                    break;
                }
                m = m * 8 < nc ? m * 8 : nc;
            }
        }
        if (p->min_p > 0.0f) {
            /* p_i / p_max = exp(logit_i) since the best candidate's logit is 0. */
            float floor_logit = logf(p->min_p);
            size_t k = 0;
            for (size_t i = 0; i < nc; i++) {
                if (c[i].logit >= floor_logit) {
                    c[k++] = c[i];
                }
            }
            nc = k;
        }
        /* The draw walks the candidates in the order the (deterministic) selection left
         * them, so the same logits and seed always give the same token. */
        double total = 0.0;
        for (size_t i = 0; i < nc; i++) {
            total += exp((double)c[i].logit);
        }
        double u = wk_rng_uniform(rng) * total;
        chosen = c[nc - 1].id;
        double cum = 0.0;
        for (size_t i = 0; i < nc; i++) {
            cum += exp((double)c[i].logit);
            if (u < cum) {
                chosen = c[i].id;
                break;
            }
        }
    }
    out->token_id = chosen;

    if (p->logprobs || p->top_logprobs > 0) {
        double lse = log_normalizer(logits, n, max);
        out->logprob = (float)((double)sanitize(logits[chosen]) - lse);
        if (p->top_logprobs > 0) {
            out->n_top = top_n(logits, n, p->top_logprobs, out->top);
            for (uint32_t i = 0; i < out->n_top; i++) {
                out->top[i].logprob = (float)((double)out->top[i].logprob - lse);
            }
        }
    }
    return CM_OK;
}
