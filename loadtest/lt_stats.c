#include "lt_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cm_err lt_stats_init(lt_stats *s, size_t max_samples, size_t max_itl) {
    memset(s, 0, sizeof(*s));
    if (max_samples == 0) {
        return CM_ERR_INVALID;
    }
    s->max_samples = max_samples;
    s->max_itl = max_itl;
    return CM_OK;
}

void lt_stats_fini(lt_stats *s) {
    free(s->samples);
    free(s->itl_ms);
    memset(s, 0, sizeof(*s));
}

void lt_stats_clear(lt_stats *s) {
    s->n_samples = 0;
    s->n_itl = 0;
    s->itl_truncated = 0;
    s->n_error_kinds = 0;
    s->errors_other = 0;
}

/* grow doubles the capacity of *arr (elem bytes each) up to max elements. */
static cm_err grow(void **arr, size_t *cap, size_t need, size_t max, size_t elem) {
    if (need <= *cap) {
        return CM_OK;
    }
    if (need > max) {
        return CM_ERR_LIMIT;
    }
    size_t ncap = *cap ? *cap * 2 : 256;
    if (ncap > max) {
        ncap = max;
    }
    if (ncap < need) {
        ncap = need;
    }
    void *p = realloc(*arr, ncap * elem);
    if (p == NULL) {
        return CM_ERR_NOMEM;
    }
    *arr = p;
    *cap = ncap;
    return CM_OK;
}

cm_err lt_stats_add_sample(lt_stats *s, const lt_sample *sample) {
    cm_err rv = grow((void **)&s->samples, &s->cap_samples, s->n_samples + 1, s->max_samples,
                     sizeof(*s->samples));
    if (rv != CM_OK) {
        return rv;
    }
    s->samples[s->n_samples++] = *sample;
    return CM_OK;
}

cm_err lt_stats_add_itl(lt_stats *s, double ms) {
    if (s->n_itl >= s->max_itl) {
        s->itl_truncated = 1;
        return CM_OK;
    }
    cm_err rv =
        grow((void **)&s->itl_ms, &s->cap_itl, s->n_itl + 1, s->max_itl, sizeof(*s->itl_ms));
    if (rv != CM_OK) {
        return rv;
    }
    s->itl_ms[s->n_itl++] = ms;
    return CM_OK;
}

void lt_stats_add_error(lt_stats *s, int http_status, const char *message) {
    for (size_t i = 0; i < s->n_error_kinds; i++) {
        if (s->errors[i].http_status == http_status) {
            s->errors[i].count++;
            return;
        }
    }
    if (s->n_error_kinds == LT_MAX_ERROR_KINDS) {
        s->errors_other++;
        return;
    }
    lt_error_count *e = &s->errors[s->n_error_kinds++];
    e->http_status = http_status;
    e->count = 1;
    snprintf(e->example, sizeof(e->example), "%s", message != NULL ? message : "");
}

double lt_percentile(const double *sorted, size_t n, double pct) {
    if (n == 0) {
        return 0.0;
    }
    if (pct <= 0) {
        return sorted[0];
    }
    if (pct >= 100) {
        return sorted[n - 1];
    }
    double rank = pct / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(rank);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    double frac = rank - (double)lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void lt_dist_compute(double *values, size_t n, lt_dist *out) {
    memset(out, 0, sizeof(*out));
    if (n == 0) {
        return;
    }
    qsort(values, n, sizeof(*values), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += values[i];
    }
    out->n = n;
    out->mean = sum / (double)n;
    out->min = values[0];
    out->max = values[n - 1];
    out->p50 = lt_percentile(values, n, 50);
    out->p90 = lt_percentile(values, n, 90);
    out->p95 = lt_percentile(values, n, 95);
    out->p99 = lt_percentile(values, n, 99);
}

int lt_slo_met(const lt_slo *slo, const lt_sample *sample) {
    if (!sample->ok) {
        return 0;
    }
    if (slo->ttft_ms > 0 && !(sample->ttft_ms >= 0 && sample->ttft_ms <= slo->ttft_ms)) {
        return 0;
    }
    /* A one-token answer has no TPOT; it cannot violate a TPOT objective. */
    if (slo->tpot_ms > 0 && sample->tpot_ms >= 0 && sample->tpot_ms > slo->tpot_ms) {
        return 0;
    }
    if (slo->e2e_ms > 0 && sample->e2e_ms > slo->e2e_ms) {
        return 0;
    }
    return 1;
}

void lt_summary_fini(lt_summary *out) {
    free(out->ttft_values);
    out->ttft_values = NULL;
    out->n_ttft_values = 0;
}

cm_err lt_stats_summarize(const lt_stats *s, double duration_s, const lt_slo *slo,
                          lt_summary *out) {
    memset(out, 0, sizeof(*out));
    size_t n = s->n_samples;
    double *ttft = NULL, *tpot = NULL, *e2e = NULL, *itl = NULL;
    cm_err rv = CM_ERR_NOMEM;
    /* +1 keeps malloc(0) out of the picture */
    ttft = malloc((n + 1) * sizeof(*ttft));
    tpot = malloc((n + 1) * sizeof(*tpot));
    e2e = malloc((n + 1) * sizeof(*e2e));
    itl = malloc((s->n_itl + 1) * sizeof(*itl));
    if (ttft == NULL || tpot == NULL || e2e == NULL || itl == NULL) {
        goto fail;
    }
    size_t n_ttft = 0, n_tpot = 0, n_e2e = 0;
    out->slo_set = slo != NULL && (slo->ttft_ms > 0 || slo->tpot_ms > 0 || slo->e2e_ms > 0);
    for (size_t i = 0; i < n; i++) {
        const lt_sample *x = &s->samples[i];
        if (!x->ok) {
            out->failed++;
            continue;
        }
        out->completed++;
        out->prompt_tokens += x->prompt_tokens;
        out->output_tokens += x->output_tokens;
        if (x->ttft_ms >= 0) {
            ttft[n_ttft++] = x->ttft_ms;
        }
        if (x->tpot_ms >= 0) {
            tpot[n_tpot++] = x->tpot_ms;
        }
        e2e[n_e2e++] = x->e2e_ms;
        if (out->slo_set && lt_slo_met(slo, x)) {
            out->good++;
        }
    }
    if (s->n_itl > 0) {
        memcpy(itl, s->itl_ms, s->n_itl * sizeof(*itl));
    }
    out->duration_s = duration_s;
    if (duration_s > 0) {
        out->request_throughput = (double)out->completed / duration_s;
        out->output_throughput = (double)out->output_tokens / duration_s;
        out->goodput = (double)out->good / duration_s;
    }
    lt_dist_compute(ttft, n_ttft, &out->ttft_ms);
    lt_dist_compute(tpot, n_tpot, &out->tpot_ms);
    lt_dist_compute(e2e, n_e2e, &out->e2e_ms);
    lt_dist_compute(itl, s->n_itl, &out->itl_ms);
    out->itl_truncated = s->itl_truncated;
    memcpy(out->errors, s->errors, sizeof(out->errors));
    out->n_error_kinds = s->n_error_kinds;
    out->errors_other = s->errors_other;
    out->ttft_values = ttft; /* sorted by lt_dist_compute, which the histogram does not mind */
    out->n_ttft_values = n_ttft;
    free(tpot);
    free(e2e);
    free(itl);
    return CM_OK;
fail:
    free(ttft);
    free(tpot);
    free(e2e);
    free(itl);
    memset(out, 0, sizeof(*out));
    return rv;
}
