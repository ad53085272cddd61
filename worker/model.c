/*
 * wk_model: llama-family hyperparameters and weight views from GGUF metadata, and synthetic
 * models of any shape for tests and benchmarks.
 */
#include "model.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"

/* Bounds on hyperparameters: far above any real llama-family model. */
#define MAX_LAYERS 1024u
#define MAX_EMBD 65536u
#define MAX_HEADS 1024u
#define MAX_HEAD_DIM 1024u
#define MAX_FF (1u << 20)
#define MAX_VOCAB (1u << 22)
#define MAX_CTX (1u << 24)

typedef enum family_rope { FAM_NORM, FAM_NEOX } family_rope;

/* Family features (wk_hparams' family fields say what each does). */
#define FAM_QK_NORM 1u     /* attn_q_norm / attn_k_norm tensors */
#define FAM_FUSED 2u       /* attn_qkv and ffn_up = gate||up (phi3) */
#define FAM_GEMMA 4u       /* embedding scale, GELU FFN, post-norms, soft-capping, sliding window */
#define FAM_NO_LONGROPE 8u /* refuse rope_factors_long/short (phi3 LongRoPE) */
#define FAM_MOE_OK 16u     /* may have experts (expert_count) */
#define FAM_MOE 32u        /* must have experts */
#define FAM_SHEXP 64u      /* experts plus a gated shared expert; top-k weights not renormed */

typedef struct family {
    const char *arch;
    family_rope rope;
    unsigned features;    /* FAM_* */
    uint32_t swa_pattern; /* FAM_GEMMA: default sliding-window layer pattern */
} family;

/* Rope styles as llama.cpp assigns them per architecture (the GGUF files are converted for
 * it: q/k rows of "llama" files are permuted for the adjacent-pair style). */
static const family families[] = {
    {"llama", FAM_NORM, FAM_MOE_OK, 0}, /* with experts: Mixtral */
    {"mistral", FAM_NORM, FAM_MOE_OK, 0},
    {"qwen2", FAM_NEOX, 0, 0},
    {"qwen3", FAM_NEOX, FAM_QK_NORM, 0},
    {"phi3", FAM_NEOX, FAM_FUSED | FAM_NO_LONGROPE, 0},
    {"gemma2", FAM_NEOX, FAM_GEMMA, 2},
    {"gemma3", FAM_NEOX, FAM_GEMMA | FAM_QK_NORM, 6},
    {"qwen2moe", FAM_NEOX, FAM_MOE_OK | FAM_MOE | FAM_SHEXP, 0},
    {"qwen3moe", FAM_NEOX, FAM_MOE_OK | FAM_MOE | FAM_QK_NORM, 0},
};
#define FAMILY_NAMES "llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3, qwen2moe, qwen3moe"
#define MAX_EXPERTS 512u
#define MAX_EXPERTS_USED 32u

/* Reads "<arch>.<suffix>" as u32; missing is CM_ERR_NOT_FOUND (callers decide defaults). */
static cm_err arch_u32(const wk_gguf *g, const char *arch, const char *suffix, uint32_t *out) {
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    return wk_gguf_get_u32(g, key, out);
}

static cm_err arch_f32(const wk_gguf *g, const char *arch, const char *suffix, float *out) {
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    return wk_gguf_get_f32(g, key, out);
}

static cm_err req_u32(const wk_gguf *g, const char *arch, const char *suffix, uint32_t lo,
                      uint32_t hi, uint32_t *out, char *err, size_t errlen) {
    cm_err rv = arch_u32(g, arch, suffix, out);
    if (rv == CM_ERR_NOT_FOUND) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "missing metadata key '%s.%s'", arch, suffix);
    }
    if (rv != CM_OK) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s.%s' is not an unsigned integer",
                       arch, suffix);
    }
    if (*out < lo || *out > hi) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s.%s' = %u out of range [%u, %u]",
                       arch, suffix, *out, lo, hi);
    }
    return CM_OK;
}

static cm_err opt_u32(const wk_gguf *g, const char *arch, const char *suffix, uint32_t lo,
                      uint32_t hi, uint32_t dflt, uint32_t *out, char *err, size_t errlen) {
    cm_err rv = arch_u32(g, arch, suffix, out);
    if (rv == CM_ERR_NOT_FOUND) {
        *out = dflt;
        return CM_OK;
    }
    if (rv != CM_OK) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s.%s' is not an unsigned integer",
                       arch, suffix);
    }
    if (*out < lo || *out > hi) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s.%s' = %u out of range [%u, %u]",
                       arch, suffix, *out, lo, hi);
    }
    return CM_OK;
}

static cm_err opt_f32(const wk_gguf *g, const char *arch, const char *suffix, float lo, float hi,
                      float dflt, float *out, char *err, size_t errlen) {
    cm_err rv = arch_f32(g, arch, suffix, out);
    if (rv == CM_ERR_NOT_FOUND) {
        *out = dflt;
        return CM_OK;
    }
    if (rv != CM_OK) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s.%s' is not a float", arch, suffix);
    }
    if (!(*out >= lo && *out <= hi)) { /* also rejects NaN */
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s.%s' = %g out of range [%g, %g]",
                       arch, suffix, (double)*out, (double)lo, (double)hi);
    }
    return CM_OK;
}

/* Binds a tensor view: checks presence, type class and exact shape (ne0, ne1; ne1 = 0 means a
 * 1-D tensor). */
static cm_err bind(const wk_gguf *g, const char *name, int64_t ne0, int64_t ne1, bool f32_only,
                   bool optional, wk_tensor *t, char *err, size_t errlen) {
    const wk_gguf_tensor *gt = wk_gguf_find_tensor(g, name);
    memset(t, 0, sizeof(*t));
    if (gt == NULL) {
        if (optional) {
            return CM_OK;
        }
        return cm_errf(CM_ERR_FORMAT, err, errlen, "missing tensor '%s'", name);
    }
    int64_t want1 = ne1 == 0 ? 1 : ne1;
    if (gt->ne[0] != ne0 || gt->ne[1] != want1 || gt->ne[2] != 1 || gt->ne[3] != 1) {
        return cm_errf(CM_ERR_FORMAT, err, errlen,
                       "tensor '%s' has shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                       "], expected [%" PRId64 ", %" PRId64 "]",
                       name, gt->ne[0], gt->ne[1], gt->ne[2], gt->ne[3], ne0, want1);
    }
    if (f32_only && gt->type != WK_DTYPE_F32) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "tensor '%s' has type %s, expected F32",
                       name, wk_dtype_name(gt->type));
    }
    t->data = gt->data;
    t->type = gt->type;
    t->ne[0] = gt->ne[0];
    t->ne[1] = gt->ne[1];
    t->ne[2] = 1;
    t->ne[3] = 1;
    t->nbytes = gt->nbytes;
    return CM_OK;
}

/* Binds a 3-D expert tensor (ne0, ne1, n_expert): one (ne1 rows, ne0 cols) matrix per
 * expert, back to back. */
static cm_err bind_experts(const wk_gguf *g, const char *name, int64_t ne0, int64_t ne1,
                           int64_t n_expert, wk_tensor *t, char *err, size_t errlen) {
    const wk_gguf_tensor *gt = wk_gguf_find_tensor(g, name);
    memset(t, 0, sizeof(*t));
    if (gt == NULL) {
        return cm_errf(CM_ERR_FORMAT, err, errlen,
                       "missing tensor '%s' (files with one tensor per expert must be "
                       "re-converted)",
                       name);
    }
    if (gt->ne[0] != ne0 || gt->ne[1] != ne1 || gt->ne[2] != n_expert || gt->ne[3] != 1) {
        return cm_errf(CM_ERR_FORMAT, err, errlen,
                       "tensor '%s' has shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                       "], expected [%" PRId64 ", %" PRId64 ", %" PRId64 "]",
                       name, gt->ne[0], gt->ne[1], gt->ne[2], gt->ne[3], ne0, ne1, n_expert);
    }
    t->data = gt->data;
    t->type = gt->type;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = n_expert;
    t->ne[3] = 1;
    t->nbytes = gt->nbytes;
    return CM_OK;
}

/* Rows [row0, row0 + rows) of the 2-D weight t, as a weight of its own. */
static wk_tensor row_view(const wk_tensor *t, int64_t row0, int64_t rows) {
    size_t rb = wk_dtype_row_bytes(t->type, t->ne[0]);
    wk_tensor v = *t;
    v.data = (const uint8_t *)t->data + (size_t)row0 * rb;
    v.ne[1] = rows;
    v.nbytes = (size_t)rows * rb;
    return v;
}

/* Llama 3.1 files carry no scaling keys but a rope_freqs tensor of per-dimension divisors
 * computed from (factor 8, low 1, high 4, original context 8192). Recognize that tensor by
 * recomputing it, so the model is described by hparams alone; anything else is rejected. */
static cm_err check_rope_freqs(const wk_gguf *g, wk_hparams *hp, char *err, size_t errlen) {
    const wk_gguf_tensor *t = wk_gguf_find_tensor(g, "rope_freqs.weight");
    if (t == NULL) {
        return CM_OK;
    }
    uint32_t half = hp->n_rot / 2;
    if (t->type != WK_DTYPE_F32 || t->ne[0] != half || t->ne[1] != 1) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "tensor 'rope_freqs.weight' must be F32 [%u]",
                       half);
    }
    wk_hparams cand = *hp;
    if (cand.rope_scaling == WK_ROPE_SCALING_NONE) {
        cand.rope_scaling = WK_ROPE_SCALING_LLAMA3;
        cand.rope_scaling_factor = 8.0f;
        cand.rope_llama3_low_freq_factor = 1.0f;
        cand.rope_llama3_high_freq_factor = 4.0f;
        cand.rope_llama3_orig_ctx = 8192;
    }
    if (cand.rope_scaling != WK_ROPE_SCALING_LLAMA3) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "tensor 'rope_freqs.weight' with non-llama3 rope scaling");
    }
    const float *f = t->data;
    for (uint32_t i = 0; i < half; i++) {
        float theta = powf(cand.rope_freq_base, -2.0f * (float)i / (float)cand.n_rot);
        float wavelen = 2.0f * (float)M_PI / theta;
        float lo_wl = (float)cand.rope_llama3_orig_ctx / cand.rope_llama3_low_freq_factor;
        float hi_wl = (float)cand.rope_llama3_orig_ctx / cand.rope_llama3_high_freq_factor;
        float div;
        if (wavelen < hi_wl) {
            div = 1.0f;
        } else if (wavelen > lo_wl) {
            div = cand.rope_scaling_factor;
        } else {
            float smooth =
                ((float)cand.rope_llama3_orig_ctx / wavelen - cand.rope_llama3_low_freq_factor) /
                (cand.rope_llama3_high_freq_factor - cand.rope_llama3_low_freq_factor);
            div = 1.0f / ((1.0f - smooth) / cand.rope_scaling_factor + smooth);
        }
        float v;
        memcpy(&v, f + i, 4);
        if (!(fabsf(v - div) <= 1e-3f * div)) {
            return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                           "tensor 'rope_freqs.weight'[%u] = %g does not match llama3 scaling "
                           "(expected %g)",
                           i, (double)v, (double)div);
        }
    }
    *hp = cand;
    return CM_OK;
}

static cm_err load_hparams(const wk_gguf *g, const char *arch, const family *fam, wk_hparams *hp,
                           char *err, size_t errlen) {
    cm_err rv;
    memset(hp, 0, sizeof(*hp));
    if ((rv = req_u32(g, arch, "context_length", 1, MAX_CTX, &hp->n_ctx_train, err, errlen)) ||
        (rv = req_u32(g, arch, "embedding_length", 1, MAX_EMBD, &hp->n_embd, err, errlen)) ||
        (rv = req_u32(g, arch, "block_count", 1, MAX_LAYERS, &hp->n_layer, err, errlen)) ||
        (rv = req_u32(g, arch, "feed_forward_length", 1, MAX_FF, &hp->n_ff, err, errlen)) ||
        (rv = req_u32(g, arch, "attention.head_count", 1, MAX_HEADS, &hp->n_head, err, errlen))) {
        return rv;
    }
    if ((rv = opt_u32(g, arch, "attention.head_count_kv", 1, MAX_HEADS, hp->n_head, &hp->n_head_kv,
                      err, errlen))) {
        return rv;
    }
    if (hp->n_head % hp->n_head_kv != 0) {
        return cm_errf(CM_ERR_FORMAT, err, errlen,
                       "attention.head_count %u not a multiple of head_count_kv %u", hp->n_head,
                       hp->n_head_kv);
    }
    uint32_t dflt_hd = hp->n_embd / hp->n_head;
    if ((rv = opt_u32(g, arch, "attention.key_length", 2, MAX_HEAD_DIM, dflt_hd, &hp->head_dim, err,
                      errlen))) {
        return rv;
    }
    uint32_t vlen;
    if ((rv = opt_u32(g, arch, "attention.value_length", 2, MAX_HEAD_DIM, hp->head_dim, &vlen, err,
                      errlen))) {
        return rv;
    }
    if (vlen != hp->head_dim || hp->head_dim % 2 != 0 || hp->head_dim < 2) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "head dims key %u / value %u unsupported (must be equal and even)",
                       hp->head_dim, vlen);
    }
    if ((rv = opt_u32(g, arch, "rope.dimension_count", 2, MAX_HEAD_DIM, hp->head_dim, &hp->n_rot,
                      err, errlen))) {
        return rv;
    }
    if (hp->n_rot != hp->head_dim) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "partial rotary (rope.dimension_count %u != head dim %u) unsupported",
                       hp->n_rot, hp->head_dim);
    }
    if ((rv = opt_f32(g, arch, "attention.layer_norm_rms_epsilon", 0.0f, 1.0f, 1e-5f, &hp->rms_eps,
                      err, errlen)) ||
        (rv = opt_f32(g, arch, "rope.freq_base", 1.0f, 1e12f, 10000.0f, &hp->rope_freq_base, err,
                      errlen))) {
        return rv;
    }
    hp->rope_style = fam->rope == FAM_NEOX ? WK_ROPE_NEOX : WK_ROPE_NORM;
    hp->rope_scaling = WK_ROPE_SCALING_NONE;
    hp->rope_scaling_factor = 1.0f;

    char key[128];
    wk_gguf_str st;
    snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
    rv = wk_gguf_get_str(g, key, &st);
    if (rv == CM_OK) {
        float factor;
        if ((rv = opt_f32(g, arch, "rope.scaling.factor", 1.0f, 1024.0f, 1.0f, &factor, err,
                          errlen))) {
            return rv;
        }
        if (st.len == 4 && memcmp(st.ptr, "none", 4) == 0) {
            /* nothing */
        } else if (st.len == 6 && memcmp(st.ptr, "linear", 6) == 0) {
            hp->rope_scaling = factor != 1.0f ? WK_ROPE_SCALING_LINEAR : WK_ROPE_SCALING_NONE;
            hp->rope_scaling_factor = factor;
        } else if (st.len == 6 && memcmp(st.ptr, "llama3", 6) == 0) {
            hp->rope_scaling = WK_ROPE_SCALING_LLAMA3;
            hp->rope_scaling_factor = factor;
            if ((rv = opt_f32(g, arch, "rope.scaling.low_freq_factor", 1e-3f, 1e3f, 1.0f,
                              &hp->rope_llama3_low_freq_factor, err, errlen)) ||
                (rv = opt_f32(g, arch, "rope.scaling.high_freq_factor", 1e-3f, 1e3f, 4.0f,
                              &hp->rope_llama3_high_freq_factor, err, errlen)) ||
                (rv = opt_u32(g, arch, "rope.scaling.original_context_length", 1, MAX_CTX, 8192,
                              &hp->rope_llama3_orig_ctx, err, errlen))) {
                return rv;
            }
            if (!(hp->rope_llama3_high_freq_factor > hp->rope_llama3_low_freq_factor)) {
                return cm_errf(CM_ERR_FORMAT, err, errlen,
                               "llama3 rope scaling: high_freq_factor must exceed low_freq_factor");
            }
        } else {
            char name[32];
            size_t n = st.len < sizeof(name) - 1 ? (size_t)st.len : sizeof(name) - 1;
            for (size_t i = 0; i < n; i++) {
                name[i] = (st.ptr[i] >= 32 && st.ptr[i] < 127) ? st.ptr[i] : '?';
            }
            name[n] = '\0';
            return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "rope scaling type '%s' unsupported",
                           name);
        }
    } else if (rv != CM_ERR_NOT_FOUND) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s' is not a string", key);
    }

    /* Vocabulary size: explicit key, else the tokenizer's token list, else token_embd. */
    const wk_gguf_tensor *te = wk_gguf_find_tensor(g, "token_embd.weight");
    if (te == NULL) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "missing tensor 'token_embd.weight'");
    }
    uint32_t nv = 0;
    rv = arch_u32(g, arch, "vocab_size", &nv);
    if (rv == CM_ERR_NOT_FOUND) {
        wk_gguf_arr toks;
        if (wk_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks) == CM_OK) {
            nv = toks.n > MAX_VOCAB ? MAX_VOCAB + 1 : (uint32_t)toks.n;
        } else {
            nv = te->ne[1] > (int64_t)MAX_VOCAB ? MAX_VOCAB + 1 : (uint32_t)te->ne[1];
        }
    } else if (rv != CM_OK) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s.vocab_size' is not an integer",
                       arch);
    }
    if (nv < 1 || nv > MAX_VOCAB) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "vocabulary size %u out of range [1, %u]", nv,
                       MAX_VOCAB);
    }
    hp->n_vocab = nv;
    return CM_OK;
}

/* The mixture-of-experts part of hp (n_expert == 0 for a dense model). */
static cm_err load_expert_hparams(const wk_gguf *g, const char *arch, const family *fam,
                                  wk_hparams *hp, char *err, size_t errlen) {
    cm_err rv;
    if ((fam->features & FAM_MOE) != 0) {
        rv = req_u32(g, arch, "expert_count", 1, MAX_EXPERTS, &hp->n_expert, err, errlen);
    } else {
        rv = opt_u32(g, arch, "expert_count", 0, MAX_EXPERTS, 0, &hp->n_expert, err, errlen);
    }
    if (rv != CM_OK || hp->n_expert == 0) {
        return rv;
    }
    if ((fam->features & FAM_MOE_OK) == 0) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "mixture of experts unsupported for %s",
                       arch);
    }
    uint32_t hi = hp->n_expert < MAX_EXPERTS_USED ? hp->n_expert : MAX_EXPERTS_USED;
    uint32_t gating;
    float wscale;
    if ((rv = req_u32(g, arch, "expert_used_count", 1, hi, &hp->n_expert_used, err, errlen)) ||
        (rv = opt_u32(g, arch, "expert_feed_forward_length", 1, MAX_FF, hp->n_ff, &hp->n_ff_exp,
                      err, errlen)) ||
        (rv = opt_u32(g, arch, "expert_gating_func", 0, 1000, 1, &gating, err, errlen)) ||
        (rv = opt_f32(g, arch, "expert_weights_scale", 0.0f, 1e6f, 1.0f, &wscale, err, errlen))) {
        return rv;
    }
    if (gating != 1) { /* llama.cpp's enum: 1 softmax, 2 sigmoid */
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "expert gating function %u unsupported (softmax only)", gating);
    }
    if (wscale != 1.0f) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen, "expert_weights_scale %g unsupported",
                       (double)wscale);
    }
    hp->expert_norm = (fam->features & FAM_SHEXP) == 0;
    char key[128];
    snprintf(key, sizeof(key), "%s.expert_weights_norm", arch);
    bool norm;
    rv = wk_gguf_get_bool(g, key, &norm);
    if (rv == CM_OK) {
        hp->expert_norm = norm;
    } else if (rv != CM_ERR_NOT_FOUND) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "metadata '%s' is not a bool", key);
    }
    if ((fam->features & FAM_SHEXP) != 0 &&
        (rv = opt_u32(g, arch, "expert_shared_feed_forward_length", 1, MAX_FF, hp->n_ff,
                      &hp->n_ff_shexp, err, errlen))) {
        return rv;
    }
    return CM_OK;
}

/* The family features of hp (wk_hparams' family fields) from fam and the file's metadata. */
static cm_err load_family_hparams(const wk_gguf *g, const char *arch, const family *fam,
                                  wk_hparams *hp, char *err, size_t errlen) {
    cm_err rv;
    hp->qk_norm = (fam->features & FAM_QK_NORM) != 0;
    if ((fam->features & FAM_NO_LONGROPE) != 0 &&
        (wk_gguf_find_tensor(g, "rope_factors_long.weight") != NULL ||
         wk_gguf_find_tensor(g, "rope_factors_short.weight") != NULL)) {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "%s LongRoPE (rope_factors_long/short tensors) unsupported", arch);
    }
    if ((rv = load_expert_hparams(g, arch, fam, hp, err, errlen)) != CM_OK) {
        return rv;
    }
    if ((fam->features & FAM_GEMMA) == 0) {
        /* phi3 files may carry attention.sliding_window: llama.cpp ignores it for phi3 (its
         * converter's value is not what the model was trained with), and so do we. */
        return CM_OK;
    }
    hp->post_norms = true;
    hp->ffn_act = WK_FFN_GELU_TANH;
    hp->embd_scale = sqrtf((float)hp->n_embd);
    if ((rv = opt_f32(g, arch, "attn_logit_softcapping", 0.0f, 1e6f, 0.0f, &hp->attn_softcap, err,
                      errlen)) ||
        (rv = opt_f32(g, arch, "final_logit_softcapping", 0.0f, 1e6f, 0.0f, &hp->final_softcap, err,
                      errlen)) ||
        (rv = opt_u32(g, arch, "attention.sliding_window", 0, MAX_CTX, 0, &hp->swa_window, err,
                      errlen)) ||
        (rv = opt_u32(g, arch, "attention.sliding_window_pattern", 1, MAX_LAYERS, fam->swa_pattern,
                      &hp->swa_pattern, err, errlen))) {
        return rv;
    }
    /* Gemma 3's local layers rotate with base 10000 and no scaling (llama.cpp's default when
     * the file has no rope.freq_base_swa); Gemma 2 uses one base for every layer. */
    float dflt_base_swa = (fam->features & FAM_QK_NORM) != 0 ? 10000.0f : hp->rope_freq_base;
    if ((rv = opt_f32(g, arch, "rope.freq_base_swa", 1.0f, 1e12f, dflt_base_swa,
                      &hp->rope_freq_base_swa, err, errlen))) {
        return rv;
    }
    /* The query scale is 1/sqrt(query_pre_attn_scalar), which GGUF does not carry: as
     * llama.cpp, 1/sqrt(n_embd / n_head) for the 27B models (46 layers for gemma2, 62 for
     * gemma3, whose scalar is not the head dim), 1/sqrt(head_dim) otherwise; an explicit
     * attention.scale wins. */
    uint32_t big = (fam->features & FAM_QK_NORM) != 0 ? 62 : 46;
    float dflt_scale = hp->n_layer == big ? 1.0f / sqrtf((float)(hp->n_embd / hp->n_head))
                                          : 1.0f / sqrtf((float)hp->head_dim);
    if ((rv = opt_f32(g, arch, "attention.scale", 1e-6f, 1e6f, dflt_scale, &hp->attn_scale, err,
                      errlen))) {
        return rv;
    }
    return CM_OK;
}

cm_err wk_model_load(struct wk_gguf *g, wk_model *out, char *err, size_t errlen) {
    if (g == NULL || out == NULL) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "NULL argument");
    }
    wk_model m;
    memset(&m, 0, sizeof(m));
    cm_err rv;
    wk_gguf_str arch;
    if (wk_gguf_get_str(g, "general.architecture", &arch) != CM_OK) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "missing string 'general.architecture'");
    }
    const family *fam = NULL;
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        if (arch.len == strlen(families[i].arch) &&
            memcmp(arch.ptr, families[i].arch, arch.len) == 0) {
            fam = &families[i];
        }
    }
    if (fam == NULL) {
        char name[32];
        size_t n = arch.len < sizeof(name) - 1 ? (size_t)arch.len : sizeof(name) - 1;
        for (size_t i = 0; i < n; i++) {
            name[i] = (arch.ptr[i] >= 32 && arch.ptr[i] < 127) ? arch.ptr[i] : '?';
        }
        name[n] = '\0';
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "architecture '%s' unsupported (" FAMILY_NAMES ")", name);
    }
    snprintf(m.arch, sizeof(m.arch), "%s", fam->arch);
    wk_gguf_str nm;
    if (wk_gguf_get_str(g, "general.name", &nm) == CM_OK) {
        size_t n = nm.len < sizeof(m.name) - 1 ? (size_t)nm.len : sizeof(m.name) - 1;
        for (size_t i = 0; i < n; i++) {
            m.name[i] = (nm.ptr[i] >= 32 && nm.ptr[i] < 127) ? nm.ptr[i] : '?';
        }
        m.name[n] = '\0';
    } else {
        snprintf(m.name, sizeof(m.name), "%s", fam->arch);
    }

    if ((rv = load_hparams(g, m.arch, fam, &m.hp, err, errlen)) != CM_OK) {
        return rv;
    }
    if ((rv = check_rope_freqs(g, &m.hp, err, errlen)) != CM_OK) {
        return rv;
    }
    if ((rv = load_family_hparams(g, m.arch, fam, &m.hp, err, errlen)) != CM_OK) {
        return rv;
    }
    const wk_hparams *hp = &m.hp;
    int64_t embd = hp->n_embd, q_dim = (int64_t)hp->n_head * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;

    if ((rv = bind(g, "token_embd.weight", embd, hp->n_vocab, false, false, &m.tok_embd, err,
                   errlen)) ||
        (rv = bind(g, "output_norm.weight", embd, 0, true, false, &m.output_norm, err, errlen)) ||
        (rv = bind(g, "output.weight", embd, hp->n_vocab, false, true, &m.output, err, errlen))) {
        return rv;
    }
    m.weight_bytes = m.tok_embd.nbytes + m.output_norm.nbytes;
    if (m.output.data == NULL) {
        m.output = m.tok_embd;
        m.hp.tied_embeddings = true;
    } else {
        m.weight_bytes += m.output.nbytes;
    }

    m.layers = calloc(hp->n_layer, sizeof(wk_layer));
    if (m.layers == NULL) {
        return cm_errf(CM_ERR_NOMEM, err, errlen, "out of memory for %u layers", hp->n_layer);
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        wk_layer *L = &m.layers[l];
        char name[96];
#define BIND(field, suffix, ne0, ne1, f32, opt)                                                    \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%u.%s", l, suffix);                                      \
        rv = bind(g, name, ne0, ne1, f32, opt, &L->field, err, errlen);                            \
        if (rv != CM_OK)                                                                           \
            goto fail;                                                                             \
        m.weight_bytes += L->field.nbytes;                                                         \
    } while (0)
#define BIND_EXPS(field, suffix, ne0, ne1)                                                         \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%u.%s", l, suffix);                                      \
        rv = bind_experts(g, name, ne0, ne1, hp->n_expert, &L->field, err, errlen);                \
        if (rv != CM_OK)                                                                           \
            goto fail;                                                                             \
        m.weight_bytes += L->field.nbytes;                                                         \
    } while (0)
#define BIND_INTO(var, suffix, ne0, ne1)                                                           \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%u.%s", l, suffix);                                      \
        rv = bind(g, name, ne0, ne1, false, false, &var, err, errlen);                             \
        if (rv != CM_OK)                                                                           \
            goto fail;                                                                             \
        m.weight_bytes += var.nbytes;                                                              \
    } while (0)
        BIND(attn_norm, "attn_norm.weight", embd, 0, true, false);
        if ((fam->features & FAM_FUSED) != 0) {
            /* one (q_dim + 2 kv_dim)-row matrix: q, k, v rows in that order */
            wk_tensor qkv;
            BIND_INTO(qkv, "attn_qkv.weight", embd, q_dim + 2 * kv_dim);
            L->wq = row_view(&qkv, 0, q_dim);
            L->wk = row_view(&qkv, q_dim, kv_dim);
            L->wv = row_view(&qkv, q_dim + kv_dim, kv_dim);
        } else {
            BIND(wq, "attn_q.weight", embd, q_dim, false, false);
            BIND(wk, "attn_k.weight", embd, kv_dim, false, false);
            BIND(wv, "attn_v.weight", embd, kv_dim, false, false);
        }
        BIND(wo, "attn_output.weight", q_dim, embd, false, false);
        BIND(bq, "attn_q.bias", q_dim, 0, true, true);
        BIND(bk, "attn_k.bias", kv_dim, 0, true, true);
        BIND(bv, "attn_v.bias", kv_dim, 0, true, true);
        if (hp->qk_norm) {
            BIND(q_norm, "attn_q_norm.weight", hp->head_dim, 0, true, false);
            BIND(k_norm, "attn_k_norm.weight", hp->head_dim, 0, true, false);
        }
        if (hp->post_norms) {
            BIND(attn_post_norm, "post_attention_norm.weight", embd, 0, true, false);
            BIND(ffn_post_norm, "post_ffw_norm.weight", embd, 0, true, false);
        }
        BIND(ffn_norm, "ffn_norm.weight", embd, 0, true, false);
        if (hp->n_expert > 0) {
            int64_t ne = hp->n_expert, fe = hp->n_ff_exp, fs = hp->n_ff_shexp;
            BIND(gate_inp, "ffn_gate_inp.weight", embd, ne, false, false);
            BIND_EXPS(gate_exps, "ffn_gate_exps.weight", embd, fe);
            BIND_EXPS(up_exps, "ffn_up_exps.weight", embd, fe);
            BIND_EXPS(down_exps, "ffn_down_exps.weight", fe, embd);
            if (fs > 0) {
                BIND(gate_inp_shexp, "ffn_gate_inp_shexp.weight", embd, 0, true, false);
                BIND(gate_shexp, "ffn_gate_shexp.weight", embd, fs, false, false);
                BIND(up_shexp, "ffn_up_shexp.weight", embd, fs, false, false);
                BIND(down_shexp, "ffn_down_shexp.weight", fs, embd, false, false);
            }
        } else if ((fam->features & FAM_FUSED) != 0) {
            /* ffn_up holds gate rows then up rows (the two halves of the SwiGLU input) */
            wk_tensor gu;
            BIND_INTO(gu, "ffn_up.weight", embd, 2 * (int64_t)hp->n_ff);
            L->w_gate = row_view(&gu, 0, hp->n_ff);
            L->w_up = row_view(&gu, hp->n_ff, hp->n_ff);
        } else {
            BIND(w_gate, "ffn_gate.weight", embd, hp->n_ff, false, false);
            BIND(w_up, "ffn_up.weight", embd, hp->n_ff, false, false);
        }
        if (hp->n_expert == 0) {
            BIND(w_down, "ffn_down.weight", hp->n_ff, embd, false, false);
        }
#undef BIND
#undef BIND_INTO
#undef BIND_EXPS
    }
    m.gguf = g;
    *out = m;
    return CM_OK;
fail:
    free(m.layers);
    return rv;
}

const char *wk_model_extra_feature(const wk_model *m) {
    const wk_hparams *hp = &m->hp;
    if (hp->qk_norm) {
        return "q/k norm (qwen3, gemma3)";
    }
    if (hp->post_norms) {
        return "post-attention/post-FFN norms (gemma)";
    }
    if (hp->ffn_act != WK_FFN_SILU) {
        return "GELU FFN (gemma)";
    }
    if (hp->embd_scale != 0.0f) {
        return "embedding scale (gemma)";
    }
    if (hp->attn_scale != 0.0f) {
        return "attention query scale (gemma)";
    }
    if (hp->attn_softcap != 0.0f || hp->final_softcap != 0.0f) {
        return "logit soft-capping (gemma2)";
    }
    if (hp->swa_window != 0) {
        return "sliding-window attention (gemma)";
    }
    if (hp->n_expert != 0) {
        return "mixture of experts (mixtral, qwen2moe, qwen3moe)";
    }
    return NULL;
}

void wk_model_fini(wk_model *m) {
    if (m == NULL) {
        return;
    }
    free(m->layers);
    free(m->owned);
    memset(m, 0, sizeof(*m));
}

size_t wk_kv_bytes_per_token(const wk_hparams *hp, wk_dtype kv_dtype) {
    size_t el = kv_dtype == WK_DTYPE_F32 ? 4 : 2;
    return 2 * (size_t)hp->n_layer * hp->n_head_kv * hp->head_dim * el;
}

/* ---- synthetic models ------------------------------------------------------------------- */

typedef struct fill_job {
    wk_tensor *t;
    int64_t row0, row1;
    float scale; /* target standard deviation of the values */
    uint64_t seed;
} fill_job;

typedef struct fill_ctx {
    fill_job *jobs;
    size_t n_jobs;
    atomic_size_t next;
} fill_ctx;

static inline uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t xorshift64(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Random bytes over [p, p + n). */
static void rand_bytes(uint64_t *s, uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t r = xorshift64(s);
        memcpy(p + i, &r, 8);
    }
    if (i < n) {
        uint64_t r = xorshift64(s);
        memcpy(p + i, &r, n - i);
    }
}

/* Fills rows [row0, row1) of t with values of standard deviation ~scale. Quantized blocks get
 * random quants and scales chosen so that the values are centred: this avoids a quantizer and
 * runs at memory speed. */
static void fill_rows(const fill_job *j) {
    wk_tensor *t = j->t;
    size_t rb = wk_dtype_row_bytes(t->type, t->ne[0]);
    uint8_t *p = (uint8_t *)t->data + (size_t)j->row0 * rb;
    size_t n = (size_t)(j->row1 - j->row0) * rb;
    uint64_t s = j->seed | 1;
    float sc = j->scale;
    switch (t->type) {
    case WK_DTYPE_F32: {
        /* Random sign and mantissa with a fixed exponent: magnitudes in [base, 2 base), std
         * ~1.5 base. Pure bit operations, two values per PRNG call. */
        float base = sc * 0.66f;
        uint32_t eb;
        memcpy(&eb, &base, 4);
        uint64_t keep = 0x807FFFFF807FFFFFull, set = (uint64_t)(eb & 0x7F800000u) * 0x100000001ull;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t v = (xorshift64(&s) & keep) | set;
            memcpy(p + i, &v, 8);
        }
        for (; i < n; i += 4) {
            uint32_t v = ((uint32_t)xorshift64(&s) & 0x807FFFFFu) | (eb & 0x7F800000u);
            memcpy(p + i, &v, 4);
        }
        return;
    }
    case WK_DTYPE_F16:
    case WK_DTYPE_BF16: {
        /* Same idea on 16-bit values, four per PRNG call. */
        float base = sc * 0.66f;
        uint16_t eb = t->type == WK_DTYPE_F16 ? wk_f32_to_f16(base) : wk_f32_to_bf16(base);
        uint16_t emask = t->type == WK_DTYPE_F16 ? 0x7c00 : 0x7f80;
        uint16_t mmask = t->type == WK_DTYPE_F16 ? 0x03ff : 0x007f;
        uint64_t keep = (uint64_t)(0x8000u | mmask) * 0x0001000100010001ull;
        uint64_t set = (uint64_t)(eb & emask) * 0x0001000100010001ull;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t v = (xorshift64(&s) & keep) | set;
            memcpy(p + i, &v, 8);
        }
        for (; i < n; i += 2) {
            uint16_t v = (uint16_t)(((uint16_t)xorshift64(&s) & (0x8000u | mmask)) | (eb & emask));
            put16(p + i, v);
        }
        return;
    }
    default:
        break;
    }
    rand_bytes(&s, p, n);
    uint32_t bb = wk_dtype_block_bytes(t->type);
    size_t nb = n / bb;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *blk = p + b * bb;
        switch (t->type) {
        case WK_DTYPE_Q4_0: /* (q - 8) * d, q uniform 0..15: std ~4.6 d */
            put16(blk, wk_f32_to_f16(sc / 4.6f));
            break;
        case WK_DTYPE_Q4_1: /* q * d + m with m = -7.5 d */
            put16(blk, wk_f32_to_f16(sc / 4.6f));
            put16(blk + 2, wk_f32_to_f16(-7.5f * sc / 4.6f));
            break;
        case WK_DTYPE_Q8_0: /* q uniform -128..127: std ~74 */
            put16(blk, wk_f32_to_f16(sc / 74.0f));
            break;
        case WK_DTYPE_Q4_K:
        case WK_DTYPE_Q5_K: {
            /* scale bytes 0x11: sub-block scale == min (17 or 1); dmin = centre * d */
            float qstd = t->type == WK_DTYPE_Q4_K ? 4.6f : 9.2f;
            float centre = t->type == WK_DTYPE_Q4_K ? 7.5f : 15.5f;
            float d = sc / (qstd * 9.0f);
            put16(blk, wk_f32_to_f16(d));
            put16(blk + 2, wk_f32_to_f16(d * centre));
            memset(blk + 4, 0x11, 12);
            break;
        }
        case WK_DTYPE_Q6_K: /* d * 16 * (q - 32), q uniform 0..63: std ~18.5 * 16 */
            memset(blk + 192, 16, 16);
            put16(blk + 208, wk_f32_to_f16(sc / (18.5f * 16.0f)));
            break;
        case WK_DTYPE_Q5_0: /* (q - 16) * d, q uniform 0..31: std ~9.2 d */
            put16(blk, wk_f32_to_f16(sc / 9.2f));
            break;
        case WK_DTYPE_Q5_1: /* q * d + m with m = -15.5 d */
            put16(blk, wk_f32_to_f16(sc / 9.2f));
            put16(blk + 2, wk_f32_to_f16(-15.5f * sc / 9.2f));
            break;
        case WK_DTYPE_Q2_K: /* scale and min 1: d * q - dmin, q uniform 0..3, dmin = 1.5 d */
            memset(blk, 0x11, 16);
            put16(blk + 80, wk_f32_to_f16(sc / 1.12f));
            put16(blk + 82, wk_f32_to_f16(1.5f * sc / 1.12f));
            break;
        case WK_DTYPE_Q3_K: /* every scale 33 (1): d * (-4 .. 3), std ~2.3 d */
            memset(blk + 96, 0x11, 8);
            memset(blk + 104, 0xAA, 4);
            put16(blk + 108, wk_f32_to_f16(sc / 2.3f));
            break;
        case WK_DTYPE_IQ4_XS: /* every sub-block scale 33 (1), then as IQ4_NL */
            put16(blk + 2, 0xAAAA);
            memset(blk + 4, 0x11, 4);
            put16(blk, wk_f32_to_f16(sc / 70.0f));
            break;
        case WK_DTYPE_IQ4_NL: /* d * grid value, grid std ~70 */
            put16(blk, wk_f32_to_f16(sc / 70.0f));
            break;
        default:
            break;
        }
    }
}

static void *fill_worker(void *arg) {
    fill_ctx *c = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->n_jobs) {
            return NULL;
        }
        fill_rows(&c->jobs[i]);
    }
}

cm_err wk_model_synthetic(const wk_hparams *hp_in, wk_dtype wtype, uint64_t seed, wk_model *out) {
    if (hp_in == NULL || out == NULL || !wk_dtype_supported(wtype)) {
        return CM_ERR_INVALID;
    }
    wk_hparams hp = *hp_in;
    if (hp.n_layer == 0 || hp.n_layer > MAX_LAYERS || hp.n_embd == 0 || hp.n_embd > MAX_EMBD ||
        hp.n_head == 0 || hp.n_head > MAX_HEADS || hp.n_head_kv == 0 ||
        hp.n_head % hp.n_head_kv != 0 || hp.n_ff == 0 || hp.n_ff > MAX_FF || hp.n_vocab == 0 ||
        hp.n_vocab > MAX_VOCAB) {
        return CM_ERR_INVALID;
    }
    if (hp.head_dim == 0) {
        hp.head_dim = hp.n_embd / hp.n_head;
    }
    if (hp.n_rot == 0) {
        hp.n_rot = hp.head_dim;
    }
    if (hp.head_dim % 2 != 0 || hp.head_dim > MAX_HEAD_DIM || hp.n_rot != hp.head_dim) {
        return CM_ERR_INVALID;
    }
    if (hp.rms_eps <= 0.0f) {
        hp.rms_eps = 1e-5f;
    }
    if (hp.rope_freq_base <= 0.0f) {
        hp.rope_freq_base = 10000.0f;
    }
    if (hp.rope_scaling_factor <= 0.0f) {
        hp.rope_scaling_factor = 1.0f;
    }
    if (hp.n_ctx_train == 0) {
        hp.n_ctx_train = 4096;
    }
    uint32_t be = wk_dtype_block_elems(wtype);
    int64_t embd = hp.n_embd, q_dim = (int64_t)hp.n_head * hp.head_dim;
    int64_t kv_dim = (int64_t)hp.n_head_kv * hp.head_dim;
    if (embd % be != 0 || q_dim % be != 0 || hp.n_ff % be != 0) {
        return CM_ERR_INVALID;
    }

    wk_model m;
    memset(&m, 0, sizeof(m));
    m.hp = hp;
    snprintf(m.arch, sizeof(m.arch), "%s", hp.rope_style == WK_ROPE_NEOX ? "qwen2" : "llama");
    snprintf(m.name, sizeof(m.name), "synthetic-%s", wk_dtype_name(wtype));
    m.layers = calloc(hp.n_layer, sizeof(wk_layer));
    if (m.layers == NULL) {
        return CM_ERR_NOMEM;
    }

    /* Collect every tensor with its shape, then lay them out in one 64-byte aligned arena. */
    size_t n_tensors = 3 + 9 * (size_t)hp.n_layer;
    wk_tensor **list = calloc(n_tensors, sizeof(*list));
    float *scales = calloc(n_tensors, sizeof(*scales));
    fill_job *jobs = NULL;
    cm_err rv = CM_ERR_NOMEM;
    if (list == NULL || scales == NULL) {
        goto fail;
    }
    size_t nt = 0;
#define ADD(tp, type_, ne0, ne1, sc)                                                               \
    do {                                                                                           \
        (tp)->type = (type_);                                                                      \
        (tp)->ne[0] = (ne0);                                                                       \
        (tp)->ne[1] = (ne1);                                                                       \
        (tp)->ne[2] = 1;                                                                           \
        (tp)->ne[3] = 1;                                                                           \
        (tp)->nbytes = wk_dtype_row_bytes((type_), (ne0)) * (size_t)(ne1);                         \
        scales[nt] = (sc);                                                                         \
        list[nt++] = (tp);                                                                         \
    } while (0)
    ADD(&m.tok_embd, wtype, embd, hp.n_vocab, 1.0f);
    ADD(&m.output_norm, WK_DTYPE_F32, embd, 1, 0.0f);
    if (!hp.tied_embeddings) {
        ADD(&m.output, wtype, embd, hp.n_vocab, 1.0f / sqrtf((float)embd));
    }
    for (uint32_t l = 0; l < hp.n_layer; l++) {
        wk_layer *L = &m.layers[l];
        float s_in = 1.0f / sqrtf((float)embd);
        /* residual branches scaled down with depth so the stream stays O(1) */
        float s_res = 1.0f / sqrtf((float)(q_dim > hp.n_ff ? q_dim : hp.n_ff) * hp.n_layer);
        ADD(&L->attn_norm, WK_DTYPE_F32, embd, 1, 0.0f);
        ADD(&L->wq, wtype, embd, q_dim, s_in);
        ADD(&L->wk, wtype, embd, kv_dim, s_in);
        ADD(&L->wv, wtype, embd, kv_dim, s_in);
        ADD(&L->wo, wtype, q_dim, embd, s_res);
        ADD(&L->ffn_norm, WK_DTYPE_F32, embd, 1, 0.0f);
        ADD(&L->w_gate, wtype, embd, hp.n_ff, s_in);
        ADD(&L->w_up, wtype, embd, hp.n_ff, s_in);
        ADD(&L->w_down, wtype, hp.n_ff, embd, s_res);
    }
#undef ADD
    size_t total = 0;
    for (size_t i = 0; i < nt; i++) {
        total += (list[i]->nbytes + 63) & ~(size_t)63;
    }
    uint8_t *arena = NULL;
    if (posix_memalign((void **)&arena, 64, total) != 0) {
        goto fail;
    }
    m.owned = arena;
    size_t off = 0, n_jobs = 0;
    for (size_t i = 0; i < nt; i++) {
        list[i]->data = arena + off;
        off += (list[i]->nbytes + 63) & ~(size_t)63;
        m.weight_bytes += list[i]->nbytes;
    }
    if (hp.tied_embeddings) {
        m.output = m.tok_embd;
    }
    /* Jobs of ~4 MiB so that many threads share big tensors. */
    const size_t chunk = 4u << 20;
    for (size_t i = 0; i < nt; i++) {
        size_t rb = wk_dtype_row_bytes(list[i]->type, list[i]->ne[0]);
        int64_t rows_per = (int64_t)(chunk / rb) > 0 ? (int64_t)(chunk / rb) : 1;
        n_jobs += (size_t)((list[i]->ne[1] + rows_per - 1) / rows_per);
    }
    jobs = calloc(n_jobs, sizeof(*jobs));
    if (jobs == NULL) {
        goto fail;
    }
    size_t k = 0;
    for (size_t i = 0; i < nt; i++) {
        if (scales[i] == 0.0f) { /* norms: all ones */
            float *f = (float *)list[i]->data;
            for (int64_t e = 0; e < list[i]->ne[0]; e++) {
                f[e] = 1.0f;
            }
            continue;
        }
        size_t rb = wk_dtype_row_bytes(list[i]->type, list[i]->ne[0]);
        int64_t rows_per = (int64_t)(chunk / rb) > 0 ? (int64_t)(chunk / rb) : 1;
        for (int64_t r = 0; r < list[i]->ne[1]; r += rows_per) {
            uint64_t s = seed ^ ((uint64_t)i << 40) ^ (uint64_t)r;
            jobs[k].t = list[i];
            jobs[k].row0 = r;
            jobs[k].row1 = r + rows_per < list[i]->ne[1] ? r + rows_per : list[i]->ne[1];
            jobs[k].scale = scales[i];
            jobs[k].seed = splitmix64(&s);
            k++;
        }
    }
    fill_ctx ctx = {.jobs = jobs, .n_jobs = k};
    atomic_init(&ctx.next, 0);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nth = ncpu < 1 ? 1 : (ncpu > 64 ? 64 : (int)ncpu);
    if (total < (64u << 20)) {
        nth = 1;
    }
    pthread_t th[64];
    int started = 0;
    for (int i = 1; i < nth; i++) {
        if (pthread_create(&th[started], NULL, fill_worker, &ctx) == 0) {
            started++;
        }
    }
    fill_worker(&ctx);
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    free(jobs);
    free(list);
    free(scales);
    *out = m;
    return CM_OK;
fail:
    free(jobs);
    free(list);
    free(scales);
    wk_model_fini(&m);
    return rv;
}

void wk_rope_inv_freq(const wk_hparams *hp, int head_dim, float *inv_freq) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        /* computed in double so that every backend can match it to f32 precision */
        double freq = pow((double)hp->rope_freq_base, -2.0 * i / (double)head_dim);
        if (hp->rope_scaling == WK_ROPE_SCALING_LINEAR) {
            freq /= hp->rope_scaling_factor;
        } else if (hp->rope_scaling == WK_ROPE_SCALING_LLAMA3) {
            double factor = hp->rope_scaling_factor;
            double lo = hp->rope_llama3_low_freq_factor, hi = hp->rope_llama3_high_freq_factor;
            double orig = hp->rope_llama3_orig_ctx;
            double wavelen = 2.0 * M_PI / freq;
            if (wavelen > orig / lo) {
                freq /= factor;
            } else if (wavelen >= orig / hi) {
                double smooth = (orig / wavelen - lo) / (hi - lo);
                freq = (1.0 - smooth) * freq / factor + smooth * freq;
            }
        }
        inv_freq[i] = (float)freq;
    }
}
