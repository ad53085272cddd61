/* sample_cases: see sample_cases.h. */
#include "sample_cases.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_HIST 240

void sc_case_params(int c, wk_sampling_params *p) {
    wk_sampling_defaults(p);
    switch (c % 12) {
    case 0: /* greedy with logprobs */
        p->temperature = 0.0f;
        p->logprobs = true;
        p->top_logprobs = 5;
        break;
    case 1:
        p->temperature = 0.7f;
        p->top_k = 40;
        break;
    case 2:
        p->top_p = 0.9f;
        p->logprobs = true;
        break;
    case 3:
        p->temperature = 0.8f;
        p->min_p = 0.05f;
        break;
    case 4: /* everything at once */
        p->temperature = 0.7f;
        p->top_k = 50;
        p->top_p = 0.95f;
        p->min_p = 0.02f;
        p->repetition_penalty = 1.3f;
        p->presence_penalty = 0.4f;
        p->frequency_penalty = 0.3f;
        p->logprobs = true;
        p->top_logprobs = 3;
        break;
    case 5: /* plain temperature over the whole vocabulary */
        p->temperature = 1.0f;
        break;
    case 6:
        p->temperature = 1.2f;
        p->top_k = WK_CUDA_SAMPLE_MAX_TOP_K;
        p->top_p = 0.8f;
        break;
    case 7: /* top-p over flat logits: a large edge bucket */
        p->top_p = 0.5f;
        break;
    case 8: /* greedy over ties, NaN and -inf */
        p->temperature = 0.0f;
        p->top_logprobs = 4;
        break;
    case 9:
        p->temperature = 0.9f;
        p->top_k = 1;
        break;
    case 10: /* logit_bias, the same token twice, and 20 alternatives */
        p->temperature = 0.9f;
        p->n_logit_bias = 4;
        p->logit_bias[0] = (wk_logit_bias){7, 5.0f};
        p->logit_bias[1] = (wk_logit_bias){7, 2.5f};
        p->logit_bias[2] = (wk_logit_bias){11, -100.0f};
        p->logit_bias[3] = (wk_logit_bias){3, 8.0f};
        p->top_logprobs = 20;
        break;
    default:
        p->top_p = 0.95f;
        p->min_p = 0.1f;
        p->repetition_penalty = 1.5f;
        break;
    }
}

static void case_logits(gu_rng *r, int c, float *row, int n_vocab) {
    if (c % 12 == 7) { /* flat: most tokens equal, a few above */
        for (int i = 0; i < n_vocab; i++) {
            row[i] = (gu_next(r) % 64) == 0 ? 1.0f + gu_uniform(r, 0.0f, 0.01f) : 0.0f;
        }
        return;
    }
    for (int i = 0; i < n_vocab; i++) {
        row[i] = gu_normal(r) * 2.5f;
    }
    for (int k = 0; k < 8; k++) { /* a few likely tokens, as real logits have */
        row[gu_next(r) % (uint64_t)n_vocab] += 8.0f + (float)k;
    }
    if (c % 12 == 8) {
        row[100] = row[101] = row[102] = 40.0f; /* ties: the lowest id wins */
        row[5] = NAN;
        row[6] = -INFINITY;
    }
}

void sc_cases_make(gu_rng *r, int n, int n_vocab, sc_cases *out) {
    memset(out, 0, sizeof(*out));
    out->n = n;
    out->n_vocab = n_vocab;
    out->logits = gu_xmalloc((size_t)n * n_vocab * 4);
    out->seqs = gu_xmalloc(sizeof(*out->seqs) * n);
    out->bias = gu_xmalloc(sizeof(*out->bias) * n * WK_MAX_LOGIT_BIAS);
    out->pen = gu_xmalloc(sizeof(*out->pen) * n * SAMPLE_HIST);
    out->ref = gu_xmalloc(sizeof(*out->ref) * n);
    float *row = gu_xmalloc((size_t)n_vocab * 4);
    wk_penalty_entry plist[SAMPLE_HIST];
    int32_t hist[SAMPLE_HIST];
    wk_sampler *smp = NULL;
    if (wk_sampler_create((uint32_t)n_vocab, &smp) != CM_OK) {
        fprintf(stderr, "sample_cases: wk_sampler_create failed\n");
        exit(1);
    }
    uint32_t nb = 0, np = 0;
    for (int c = 0; c < n; c++) {
        wk_sampling_params p;
        sc_case_params(c, &p);
        wk_cuda_sample_seq *q = &out->seqs[c];
        memset(q, 0, sizeof(*q));
        q->row = n - 1 - c; /* rows in another order than the descriptors */
        float *lr = out->logits + (size_t)q->row * n_vocab;
        case_logits(r, c, lr, n_vocab);
        for (int i = 0; i < SAMPLE_HIST; i++) {
            hist[i] = (int32_t)(gu_next(r) % 300); /* repeats, and the biased ids */
        }
        size_t n_pen = 0;
        (void)wk_sampler_penalties(smp, hist, SAMPLE_HIST, 80, plist, SAMPLE_HIST, &n_pen);
        /* u is what wk_sampler_sample draws from the same rng */
        wk_rng rng, ucopy;
        wk_rng_seed(&rng, 1000 + (uint64_t)c);
        ucopy = rng;
        double u = wk_sampling_draws(&p) ? wk_rng_uniform(&ucopy) : 0.0;
        memcpy(row, lr, (size_t)n_vocab * 4);
        if (wk_sampler_sample(smp, &p, row, hist, SAMPLE_HIST, 80, &rng, &out->ref[c]) != CM_OK) {
            out->ref[c].token_id = -1;
        }
        q->top_k = p.top_k;
        q->temperature = p.temperature;
        q->top_p = p.top_p;
        q->min_p = p.min_p;
        q->repetition_penalty = p.repetition_penalty;
        q->presence_penalty = p.presence_penalty;
        q->frequency_penalty = p.frequency_penalty;
        q->bias_off = nb;
        q->n_bias = p.n_logit_bias;
        for (uint32_t i = 0; i < p.n_logit_bias; i++, nb++) {
            out->bias[nb].token_id = p.logit_bias[i].token_id;
            out->bias[nb].bias = p.logit_bias[i].bias;
        }
        q->pen_off = np;
        q->n_pen = wk_sampling_has_penalties(&p) ? (uint32_t)n_pen : 0;
        for (uint32_t i = 0; i < q->n_pen; i++, np++) {
            out->pen[np].token_id = plist[i].token_id;
            out->pen[np].n_generated = plist[i].n_generated;
            out->pen[np].in_prompt = plist[i].in_prompt;
        }
        q->n_top = p.top_logprobs;
        q->want_logprob = p.logprobs;
        q->u = u;
    }
    out->n_bias = nb;
    out->n_pen = np;
    wk_sampler_destroy(smp);
    free(row);
}

void sc_cases_free(sc_cases *c) {
    free(c->logits);
    free(c->seqs);
    free(c->bias);
    free(c->pen);
    free(c->ref);
    memset(c, 0, sizeof(*c));
}

int sc_cases_check(const sc_cases *c, const wk_cuda_sample_out *got, int max_drawn_diff,
                   char *detail, size_t detail_len) {
    int exact_bad = 0, drawn_diff = 0, lp_bad = 0, top_bad = 0;
    double lp_worst = 0.0;
    for (int i = 0; i < c->n; i++) {
        const wk_sample_result *a = &c->ref[i];
        const wk_cuda_sample_out *b = &got[i];
        const wk_cuda_sample_seq *q = &c->seqs[i];
        if (a->token_id != b->token_id) {
            if (q->temperature <= 0.0f || a->token_id < 0 || b->token_id < 0) {
                exact_bad++;
            } else {
                drawn_diff++;
            }
            continue;
        }
        if (q->want_logprob || q->n_top > 0) {
            double d = fabs((double)a->logprob - (double)b->logprob);
            lp_worst = d > lp_worst ? d : lp_worst;
            lp_bad += !(d <= 1e-4);
        }
        if (a->n_top != b->n_top) {
            top_bad++;
            continue;
        }
        for (uint32_t k = 0; k < a->n_top; k++) {
            double d = fabs((double)a->top[k].logprob - (double)b->top_logprob[k]);
            lp_worst = d > lp_worst ? d : lp_worst;
            top_bad += a->top[k].token_id != b->top_id[k] || !(d <= 1e-4);
        }
    }
    snprintf(detail, detail_len,
             "%d cases: greedy/failed diff %d, drawn diff %d, logprob bad %d (worst %.1e), "
             "top bad %d",
             c->n, exact_bad, drawn_diff, lp_bad, lp_worst, top_bad);
    return exact_bad == 0 && drawn_diff <= max_drawn_diff && lp_bad == 0 && top_bad == 0;
}
