/*
 * Tests for worker/sampler.c: validation, RNG, greedy, bias, penalties, logprobs, and the
 * distributions that temperature / top-k / top-p / min-p sampling produce.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "sampler.h"

static void test_defaults_and_validate(void **state) {
    (void)state;
    wk_sampling_params p;
    wk_sampling_defaults(&p);
    assert_true(p.temperature == 1.0f && p.top_p == 1.0f && p.top_k <= 0 && p.min_p == 0.0f);
    assert_true(p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f);
    char err[128];
    assert_int_equal(wk_sampling_validate(&p, 100, err, sizeof err), CM_OK);

    wk_sampling_params q = p;
    q.top_p = 0.0f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    assert_non_null(strstr(err, "top_p"));
    q = p;
    q.top_p = 1.5f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    q = p;
    q.temperature = -1.0f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    assert_non_null(strstr(err, "temperature"));
    q = p;
    q.temperature = NAN;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    q = p;
    q.min_p = 2.0f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    assert_non_null(strstr(err, "min_p"));
    q = p;
    q.repetition_penalty = 0.0f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    q = p;
    q.presence_penalty = 3.0f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    q = p;
    q.frequency_penalty = -2.5f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    q = p;
    q.n_logit_bias = 1;
    q.logit_bias[0].token_id = 99999;
    q.logit_bias[0].bias = 1.0f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    assert_non_null(strstr(err, "99999"));
    q.logit_bias[0].token_id = 5;
    q.logit_bias[0].bias = 1000.0f;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    q = p;
    q.n_logit_bias = WK_MAX_LOGIT_BIAS + 1;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
    q = p;
    q.top_logprobs = WK_MAX_TOP_LOGPROBS + 1;
    assert_int_equal(wk_sampling_validate(&q, 100, err, sizeof err), CM_ERR_INVALID);
}

static void test_rng(void **state) {
    (void)state;
    wk_rng a, b, c;
    wk_rng_seed(&a, 1234);
    wk_rng_seed(&b, 1234);
    wk_rng_seed(&c, 1235);
    int same_c = 0;
    double sum = 0.0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        double x = wk_rng_uniform(&a);
        assert_true(x >= 0.0 && x < 1.0);
        assert_true(x == wk_rng_uniform(&b));
        same_c += x == wk_rng_uniform(&c);
        sum += x;
    }
    assert_true(same_c < 5);
    /* Mean of U[0,1): 0.5 with sd 0.289/sqrt(n) ~ 0.0009; allow 5 sd. */
    assert_true(fabs(sum / n - 0.5) < 0.005);
}

static wk_sampler *make(uint32_t n) {
    wk_sampler *s = NULL;
    assert_int_equal(wk_sampler_create(n, &s), CM_OK);
    return s;
}

static int32_t sample1(wk_sampler *s, const wk_sampling_params *p, const float *logits, uint32_t n,
                       wk_rng *rng, wk_sample_result *res) {
    float *l = malloc(sizeof(float) * n);
    assert_non_null(l);
    memcpy(l, logits, sizeof(float) * n);
    wk_sample_result r;
    assert_int_equal(wk_sampler_sample(s, p, l, NULL, 0, 0, rng, &r), CM_OK);
    free(l);
    if (res != NULL) {
        *res = r;
    }
    return r.token_id;
}

static void test_greedy_and_bias(void **state) {
    (void)state;
    wk_sampler *s = make(8);
    wk_sampling_params p;
    wk_sampling_defaults(&p);
    p.temperature = 0.0f;
    float logits[8] = {0.1f, 2.0f, -1.0f, 3.0f, 3.0f, NAN, 0.0f, 1.0f};
    wk_rng rng, before;
    wk_rng_seed(&rng, 7);
    before = rng;
    /* Ties go to the lowest id; NaN is never picked. */
    assert_int_equal(sample1(s, &p, logits, 8, &rng, NULL), 3);
    assert_memory_equal(&rng, &before, sizeof rng); /* greedy does not consume randomness */
    p.n_logit_bias = 1;
    p.logit_bias[0].token_id = 2;
    p.logit_bias[0].bias = 5.0f;
    assert_int_equal(sample1(s, &p, logits, 8, &rng, NULL), 2);
    p.logit_bias[0].token_id = 3;
    p.logit_bias[0].bias = -100.0f;
    assert_int_equal(sample1(s, &p, logits, 8, &rng, NULL), 4);

    /* Every logit -inf: an error, not a made-up token. */
    float dead[8];
    for (int i = 0; i < 8; i++) {
        dead[i] = -INFINITY;
    }
    wk_sample_result r;
    wk_sampling_defaults(&p);
    assert_int_equal(wk_sampler_sample(s, &p, dead, NULL, 0, 0, &rng, &r), CM_ERR_INVALID);
    wk_sampler_destroy(s);
}

static void test_penalties(void **state) {
    (void)state;
    wk_sampler *s = make(6);
    wk_sampling_params p;
    wk_sampling_defaults(&p);
    p.temperature = 0.0f;
    p.repetition_penalty = 2.0f;
    /* history: prompt {0, 1, 1}, generated {2, 2, 2} */
    const int32_t hist[6] = {0, 1, 1, 2, 2, 2};
    float l[6] = {4.0f, -1.0f, 3.0f, 1.0f, 0.5f, 0.0f};
    wk_rng rng;
    wk_rng_seed(&rng, 1);
    wk_sample_result r;
    assert_int_equal(wk_sampler_sample(s, &p, l, hist, 6, 3, &rng, &r), CM_OK);
    /* Positive logits halve, negative double, once per distinct token. */
    assert_true(l[0] == 2.0f && l[1] == -2.0f && l[2] == 1.5f);
    assert_true(l[3] == 1.0f && l[4] == 0.5f);
    assert_int_equal(r.token_id, 0);

    wk_sampling_defaults(&p);
    p.temperature = 0.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    float m[6] = {4.0f, -1.0f, 3.0f, 1.0f, 0.5f, 0.0f};
    assert_int_equal(wk_sampler_sample(s, &p, m, hist, 6, 3, &rng, &r), CM_OK);
    /* Only generated tokens count: token 2 seen 3 times -> 3 - 0.5 - 0.75. */
    assert_true(m[0] == 4.0f && m[1] == -1.0f);
    assert_true(fabsf(m[2] - 1.75f) < 1e-6f);

    /* The scratch counters are reset: a second call with no history changes nothing. */
    float k[6] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(wk_sampler_sample(s, &p, k, NULL, 0, 0, &rng, &r), CM_OK);
    for (int i = 0; i < 6; i++) {
        assert_true(k[i] == (float)(i + 1));
    }

    /* Bad history: out-of-range id or n_prompt past the end. */
    const int32_t bad[2] = {0, 6};
    assert_int_equal(wk_sampler_sample(s, &p, k, bad, 2, 0, &rng, &r), CM_ERR_INVALID);
    assert_int_equal(wk_sampler_sample(s, &p, k, hist, 2, 3, &rng, &r), CM_ERR_INVALID);
    wk_sampler_destroy(s);
}

static void test_logprobs(void **state) {
    (void)state;
    const uint32_t n = 50;
    wk_sampler *s = make(n);
    float logits[50];
    for (uint32_t i = 0; i < n; i++) {
        logits[i] = sinf((float)i * 1.7f) * 4.0f;
    }
    double mx = -1e30, sum = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        mx = fmax(mx, logits[i]);
    }
    for (uint32_t i = 0; i < n; i++) {
        sum += exp(logits[i] - mx);
    }
    double lse = mx + log(sum);
    wk_sampling_params p;
    wk_sampling_defaults(&p);
    p.temperature = 0.7f; /* logprobs are reported before temperature */
    p.logprobs = true;
    p.top_logprobs = 5;
    wk_rng rng;
    wk_rng_seed(&rng, 3);
    wk_sample_result r;
    int32_t id = sample1(s, &p, logits, n, &rng, &r);
    assert_true(fabs(r.logprob - (logits[id] - lse)) < 1e-4);
    assert_int_equal(r.n_top, 5);
    for (uint32_t i = 0; i < r.n_top; i++) {
        int32_t t = r.top[i].token_id;
        assert_true(fabs(r.top[i].logprob - (logits[t] - lse)) < 1e-4);
        if (i > 0) {
            assert_true(r.top[i].logprob <= r.top[i - 1].logprob);
        }
        /* Nothing outside the list beats its last entry. */
        for (uint32_t j = 0; j < n; j++) {
            bool listed = false;
            for (uint32_t k = 0; k < r.n_top; k++) {
                listed |= r.top[k].token_id == (int32_t)j;
            }
            if (!listed) {
                assert_true(logits[j] - lse <= r.top[r.n_top - 1].logprob + 1e-6);
            }
        }
    }
    wk_sampler_destroy(s);
}

/* Draws many samples and returns counts per token. */
static void histogram(const wk_sampling_params *p, const float *logits, uint32_t n, int draws,
                      uint64_t seed, int *counts) {
    wk_sampler *s = make(n);
    wk_rng rng;
    wk_rng_seed(&rng, seed);
    memset(counts, 0, sizeof(int) * n);
    for (int d = 0; d < draws; d++) {
        int32_t id = sample1(s, p, logits, n, &rng, NULL);
        assert_true(id >= 0 && (uint32_t)id < n);
        counts[id]++;
    }
    wk_sampler_destroy(s);
}

/* |observed - expected| within 5 standard deviations of a binomial count. */
static void assert_freq(int count, int draws, double prob) {
    double sd = sqrt(draws * prob * (1.0 - prob)) + 1.0;
    if (fabs(count - draws * prob) > 5.0 * sd) {
        fail_msg("count %d of %d, expected p=%.4f", count, draws, prob);
    }
}

static void test_distributions(void **state) {
    (void)state;
    /* probabilities 0.5, 0.3, 0.15, 0.05 */
    const double probs[4] = {0.5, 0.3, 0.15, 0.05};
    float logits[4];
    for (int i = 0; i < 4; i++) {
        logits[i] = (float)log(probs[i]) + 2.0f;
    }
    const int draws = 20000;
    int c[4];
    wk_sampling_params p;
    wk_sampling_defaults(&p);
    histogram(&p, logits, 4, draws, 11, c);
    for (int i = 0; i < 4; i++) {
        assert_freq(c[i], draws, probs[i]);
    }
    /* Temperature 2 flattens: p_i ~ sqrt(probs). */
    p.temperature = 2.0f;
    histogram(&p, logits, 4, draws, 12, c);
    double z = 0.0;
    for (int i = 0; i < 4; i++) {
        z += sqrt(probs[i]);
    }
    for (int i = 0; i < 4; i++) {
        assert_freq(c[i], draws, sqrt(probs[i]) / z);
    }
    /* top_k 2: renormalized over the two best. */
    wk_sampling_defaults(&p);
    p.top_k = 2;
    histogram(&p, logits, 4, draws, 13, c);
    assert_int_equal(c[2] + c[3], 0);
    assert_freq(c[0], draws, 0.5 / 0.8);
    /* top_p 0.7: 0.5 < 0.7 <= 0.8, so the first two remain. */
    wk_sampling_defaults(&p);
    p.top_p = 0.7f;
    histogram(&p, logits, 4, draws, 14, c);
    assert_int_equal(c[2] + c[3], 0);
    assert_freq(c[1], draws, 0.3 / 0.8);
    /* min_p 0.2: keep p >= 0.1, so token 3 (0.05) never appears. */
    wk_sampling_defaults(&p);
    p.min_p = 0.2f;
    histogram(&p, logits, 4, draws, 15, c);
    assert_int_equal(c[3], 0);
    assert_freq(c[2], draws, 0.15 / 0.95);
    /* top_k 1 is greedy whatever the temperature. */
    wk_sampling_defaults(&p);
    p.top_k = 1;
    p.temperature = 5.0f;
    histogram(&p, logits, 4, 200, 16, c);
    assert_int_equal(c[0], 200);
}

static void test_large_vocab_deterministic(void **state) {
    (void)state;
    const uint32_t n = 152064;
    float *logits = malloc(sizeof(float) * n);
    assert_non_null(logits);
    wk_rng g;
    wk_rng_seed(&g, 99);
    float max = -INFINITY;
    for (uint32_t i = 0; i < n; i++) {
        logits[i] = (float)(wk_rng_uniform(&g) * 12.0 - 6.0);
        max = fmaxf(max, logits[i]);
    }
    wk_sampler *s = make(n);
    wk_sampling_params p;
    wk_sampling_defaults(&p);
    p.temperature = 0.8f;
    p.top_p = 0.95f;
    p.top_k = 0;
    p.min_p = 0.01f;
    int32_t first[20];
    for (int run = 0; run < 2; run++) {
        wk_rng rng;
        wk_rng_seed(&rng, 2024);
        for (int i = 0; i < 20; i++) {
            int32_t id = sample1(s, &p, logits, n, &rng, NULL);
            /* min_p 0.01 at T 0.8 keeps logits within 0.8 * ln(100) = 3.68 of the best. */
            assert_true(logits[id] >= max - 3.69f);
            if (run == 0) {
                first[i] = id;
            } else {
                assert_int_equal(id, first[i]); /* same seed, same tokens */
            }
        }
    }
    p.top_k = 40;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    wk_rng rng;
    wk_rng_seed(&rng, 5);
    int above = 0;
    for (int i = 0; i < 50; i++) {
        int32_t id = sample1(s, &p, logits, n, &rng, NULL);
        int rank = 0;
        for (uint32_t j = 0; j < n; j++) {
            rank += logits[j] > logits[id];
        }
        above += rank >= 40;
    }
    assert_int_equal(above, 0);
    wk_sampler_destroy(s);
    free(logits);
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static void test_top_p_large_vocab(void **state) {
    (void)state;
    /* top_p over 50k logits must keep exactly the best-first prefix holding top_p of the
     * mass: compute that prefix's smallest logit with a full sort and check every draw. */
    const uint32_t n = 50000;
    float *logits = malloc(sizeof(float) * n);
    float *sorted = malloc(sizeof(float) * n);
    assert_non_null(logits);
    assert_non_null(sorted);
    wk_rng g;
    wk_rng_seed(&g, 7);
    for (uint32_t i = 0; i < n; i++) {
        double u = wk_rng_uniform(&g);
        logits[i] = (float)(u * u * 25.0 - 5.0);
        sorted[i] = logits[i];
    }
    qsort(sorted, n, sizeof(float), cmp_desc);
    const float top_p = 0.6f;
    double total = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        total += exp((double)sorted[i] - sorted[0]);
    }
    double cum = 0.0;
    uint32_t keep = 0;
    while (keep < n && cum < top_p * total) {
        cum += exp((double)sorted[keep] - sorted[0]);
        keep++;
    }
    float cutoff = sorted[keep - 1];
    assert_true(keep > 10 && keep < n / 2); /* the case is non-trivial */
    wk_sampler *s = make(n);
    wk_sampling_params p;
    wk_sampling_defaults(&p);
    p.top_p = top_p;
    wk_rng rng;
    wk_rng_seed(&rng, 8);
    int at_cutoff_band = 0;
    for (int d = 0; d < 400; d++) {
        int32_t id = sample1(s, &p, logits, n, &rng, NULL);
        assert_true(logits[id] >= cutoff);
        at_cutoff_band += logits[id] < sorted[keep / 2];
    }
    assert_true(at_cutoff_band > 0); /* the lower half of the kept set is reachable too */
    wk_sampler_destroy(s);
    free(logits);
    free(sorted);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_validate),
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_greedy_and_bias),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_distributions),
        cmocka_unit_test(test_large_vocab_deterministic),
        cmocka_unit_test(test_top_p_large_vocab),
    };
    return cmocka_run_group_tests_name("sampler", tests, NULL, NULL);
}
