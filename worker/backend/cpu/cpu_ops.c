/*
 * cpu_ops: reference ops (see cpu_ops.h).
 */
#include "cpu_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* The sum of squares in eight partial sums (element i in sum i mod 8, combined pairwise, then
 * the tail): one chain of dependent double adds through the row took ~4 cycles per element,
 * ~1% of a decode token on the bundled model (its norms are serial work between matmuls). */
void wk_cpu_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    /* eight named sums: an array of them stays in memory at -O2 */
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, s5 = 0.0, s6 = 0.0, s7 = 0.0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 += (double)x[i] * x[i];
        s1 += (double)x[i + 1] * x[i + 1];
        s2 += (double)x[i + 2] * x[i + 2];
        s3 += (double)x[i + 3] * x[i + 3];
        s4 += (double)x[i + 4] * x[i + 4];
        s5 += (double)x[i + 5] * x[i + 5];
        s6 += (double)x[i + 6] * x[i + 6];
        s7 += (double)x[i + 7] * x[i + 7];
    }
    double ss = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
    for (; i < n; i++) {
        ss += (double)x[i] * x[i];
    }
    float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (int64_t k = 0; k < n; k++) {
        out[k] = x[k] * scale * w[k];
    }
}

void wk_cpu_rope(float *x, int n_heads, int head_dim, int32_t pos, const wk_hparams *hp) {
    int half = head_dim / 2;
    float inv_freq[512];
    if (half > 512) {
        return;
    }
    wk_rope_inv_freq(hp, head_dim, inv_freq);
    for (int i = 0; i < half; i++) {
        double ang = (double)pos * inv_freq[i];
        float c = (float)cos(ang), s = (float)sin(ang);
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (int64_t)h * head_dim;
            int a = hp->rope_style == WK_ROPE_NEOX ? i : 2 * i;
            int b = hp->rope_style == WK_ROPE_NEOX ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

void wk_cpu_gelu_tanh_mul(float *out, const float *gate, const float *up, int64_t n) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = 0.5f * g * (1.0f + tanhf(k * (g + 0.044715f * g * g * g))) * up[i];
    }
}

void wk_cpu_softcap(float *x, int64_t n, float cap) {
    float inv = 1.0f / cap;
    for (int64_t i = 0; i < n; i++) {
        x[i] = cap * tanhf(x[i] * inv);
    }
}

void wk_cpu_swiglu(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void wk_cpu_softmax(float *x, int64_t n) {
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) {
        mx = x[i] > mx ? x[i] : mx;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) {
        x[i] *= inv;
    }
}

void wk_cpu_matmul_ref(const wk_tensor *w, const float *x, float *y, int n_tok) {
    int64_t in = w->ne[0], out = w->ne[1];
    size_t rb = wk_dtype_row_bytes(w->type, in);
    float *row = malloc((size_t)in * sizeof(float));
    if (row == NULL) {
        memset(y, 0, (size_t)n_tok * (size_t)out * sizeof(float));
        return;
    }
    for (int64_t r = 0; r < out; r++) {
        wk_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)r * rb, row, in);
        for (int t = 0; t < n_tok; t++) {
            const float *xt = x + (int64_t)t * in;
            double acc = 0.0;
            for (int64_t i = 0; i < in; i++) {
                acc += (double)row[i] * xt[i];
            }
            y[(int64_t)t * out + r] = (float)acc;
        }
    }
    free(row);
}

void wk_cpu_embed(const wk_tensor *tok_embd, const int32_t *ids, int n, float *out) {
    int64_t embd = tok_embd->ne[0];
    size_t rb = wk_dtype_row_bytes(tok_embd->type, embd);
    for (int i = 0; i < n; i++) {
        wk_dequantize_row(tok_embd->type, (const uint8_t *)tok_embd->data + (size_t)ids[i] * rb,
                          out + (int64_t)i * embd, embd);
    }
}
