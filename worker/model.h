/*
 * wk_model: a llama-family decoder described by its hyperparameters and weight tensors.
 *
 * Built from GGUF metadata (wk_model_load: SmolLM2, Llama 2/3, Mistral, Mixtral, Qwen2, Qwen3,
 * Qwen2-MoE, Qwen3-MoE, Phi-3, Gemma 2 and Gemma 3 files, chosen by metadata, never by name) or
 * synthetically (wk_model_synthetic: random weights of a given shape, for tests and GPU benchmarks
 * at big-model shapes). Tensors are views: into the GGUF mapping for loaded models, into buffers
 * owned by the model for synthetic ones. Backends read them at create time and build their own
 * representation.
 *
 * Weight layout follows GGUF/ggml: a 2-D weight W has ne[0] = in_features (contiguous) and
 * ne[1] = out_features, so row r of W is output feature r and y = W x is one dot product
 * per row.
 */
#ifndef WK_MODEL_H
#define WK_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "cm_err.h"
#include "quant.h"

struct wk_gguf;

typedef enum wk_rope_style {
    WK_ROPE_NORM = 0, /* rotate adjacent pairs (x[2i], x[2i+1]): GGUF "llama" files */
    WK_ROPE_NEOX = 1, /* rotate halves (x[i], x[i + d/2]): qwen2 and friends */
} wk_rope_style;

typedef enum wk_rope_scaling {
    WK_ROPE_SCALING_NONE = 0,
    WK_ROPE_SCALING_LINEAR = 1, /* positions divided by factor */
    WK_ROPE_SCALING_LLAMA3 = 2, /* Llama 3.1 frequency-dependent scaling */
} wk_rope_scaling;

typedef enum wk_ffn_act {
    WK_FFN_SILU = 0,      /* silu(gate) * up: llama, qwen, phi3 */
    WK_FFN_GELU_TANH = 1, /* gelu_tanh(gate) * up: gemma */
} wk_ffn_act;

typedef struct wk_hparams {
    uint32_t n_vocab;
    uint32_t n_ctx_train; /* context length the model was trained for */
    uint32_t n_embd;      /* model width */
    uint32_t n_layer;
    uint32_t n_head;    /* query heads */
    uint32_t n_head_kv; /* key/value heads (GQA: n_head % n_head_kv == 0) */
    uint32_t head_dim;  /* usually n_embd / n_head */
    uint32_t n_rot;     /* rotated dims per head (== head_dim for all supported files) */
    uint32_t n_ff;      /* MLP hidden width */
    float rms_eps;
    float rope_freq_base;
    wk_rope_style rope_style;
    wk_rope_scaling rope_scaling;
    float rope_scaling_factor;          /* linear/llama3 factor; 1 = none */
    float rope_llama3_low_freq_factor;  /* llama3 scaling only */
    float rope_llama3_high_freq_factor; /* llama3 scaling only */
    uint32_t rope_llama3_orig_ctx;      /* llama3 scaling only */
    bool tied_embeddings;               /* output head shares tok_embd */

    /* Family features beyond the llama graph; all zero/false = plain llama (synthetic models,
     * llama, mistral, qwen2). */
    bool qk_norm;             /* per-head RMSNorm of q and k (attn_q_norm/attn_k_norm) before
                                 RoPE: qwen3, gemma3 */
    bool post_norms;          /* RMSNorm of the attention and FFN outputs before the residual
                                 add (post_attention_norm, post_ffw_norm): gemma2/3 */
    wk_ffn_act ffn_act;       /* gated FFN activation */
    float embd_scale;         /* embeddings multiplied by this; 0 = 1 (gemma: sqrt(n_embd)) */
    float attn_scale;         /* q.k multiplier; 0 = 1/sqrt(head_dim) */
    float attn_softcap;       /* scores = c * tanh(scores / c); 0 = none (gemma2) */
    float final_softcap;      /* logits = c * tanh(logits / c); 0 = none (gemma2) */
    uint32_t swa_window;      /* sliding-window layers see the last swa_window positions; 0 =
                                 every layer global */
    uint32_t swa_pattern;     /* with swa_window: layer l slides when l % swa_pattern !=
                                 swa_pattern - 1 (gemma2: 2, gemma3: 6); 1 = every layer */
    float rope_freq_base_swa; /* sliding layers' RoPE base, unscaled; 0 = as global layers */

    /* Mixture of experts (Mixtral = llama with experts, qwen2moe, qwen3moe): every layer's
     * FFN is n_expert SwiGLU experts of width n_ff_exp, of which each token runs the
     * n_expert_used with the largest router softmax probabilities, weighted by those
     * (renormalized to sum 1 when expert_norm); plus, with n_ff_shexp, a shared expert
     * scaled by sigmoid(gate_inp_shexp . x). n_expert == 0: dense FFN (n_ff). */
    uint32_t n_expert;
    uint32_t n_expert_used;
    uint32_t n_ff_exp;
    uint32_t n_ff_shexp;
    bool expert_norm;
} wk_hparams;

/* wk_hparams_layer_swa: true when layer l of hp attends over a sliding window. */
static inline bool wk_hparams_layer_swa(const wk_hparams *hp, uint32_t l) {
    return hp->swa_window > 0 &&
           (hp->swa_pattern <= 1 || l % hp->swa_pattern != hp->swa_pattern - 1);
}

/* A weight view. data == NULL means "absent" (optional tensors: biases, and the family tensors
 * a model's hparams do not call for). */
typedef struct wk_tensor {
    const void *data;
    wk_dtype type;
    int64_t ne[4]; /* ne[0] contiguous; unused dims are 1 */
    size_t nbytes;
} wk_tensor;

typedef struct wk_layer {
    wk_tensor attn_norm; /* (n_embd) f32 */
    wk_tensor wq;        /* (n_head*head_dim rows, n_embd cols) */
    wk_tensor wk;        /* (n_head_kv*head_dim rows, n_embd cols) */
    wk_tensor wv;        /* (n_head_kv*head_dim rows, n_embd cols) */
    wk_tensor wo;        /* (n_embd rows, n_head*head_dim cols) */
    wk_tensor bq;        /* optional (n_head*head_dim) f32: qwen2 */
    wk_tensor bk;        /* optional (n_head_kv*head_dim) f32 */
    wk_tensor bv;        /* optional (n_head_kv*head_dim) f32 */
    wk_tensor ffn_norm;  /* (n_embd) f32 */
    wk_tensor w_gate;    /* (n_ff rows, n_embd cols); absent with experts */
    wk_tensor w_up;      /* (n_ff rows, n_embd cols); absent with experts */
    wk_tensor w_down;    /* (n_embd rows, n_ff cols); absent with experts */

    /* family tensors (wk_hparams' family fields say which are present) */
    wk_tensor q_norm;         /* qk_norm: (head_dim) f32, shared by every q head */
    wk_tensor k_norm;         /* qk_norm: (head_dim) f32 */
    wk_tensor attn_post_norm; /* post_norms: (n_embd) f32 */
    wk_tensor ffn_post_norm;  /* post_norms: (n_embd) f32 */
    wk_tensor gate_inp;       /* n_expert > 0: (n_expert rows, n_embd cols), router logits */
    wk_tensor gate_exps;      /* n_expert > 0: (n_expert, n_ff_exp rows, n_embd cols) */
    wk_tensor up_exps;        /* n_expert > 0: (n_expert, n_ff_exp rows, n_embd cols) */
    wk_tensor down_exps;      /* n_expert > 0: (n_expert, n_embd rows, n_ff_exp cols) */
    wk_tensor gate_inp_shexp; /* n_ff_shexp > 0: (n_embd) f32, the shared expert's gate */
    wk_tensor gate_shexp;     /* n_ff_shexp > 0: (n_ff_shexp rows, n_embd cols) */
    wk_tensor up_shexp;       /* n_ff_shexp > 0: (n_ff_shexp rows, n_embd cols) */
    wk_tensor down_shexp;     /* n_ff_shexp > 0: (n_embd rows, n_ff_shexp cols) */
} wk_layer;

/* wk_expert_view: expert e's 2-D matrix within a 3-D expert tensor (a view, no copy). */
static inline wk_tensor wk_expert_view(const wk_tensor *exps, uint32_t e) {
    wk_tensor v = *exps;
    size_t bytes = exps->nbytes / (size_t)exps->ne[2];
    v.data = (const uint8_t *)exps->data + (size_t)e * bytes;
    v.ne[2] = 1;
    v.nbytes = bytes;
    return v;
}

typedef struct wk_model {
    wk_hparams hp;
    char arch[32];         /* general.architecture, e.g. "llama", "qwen2" */
    char name[128];        /* general.name or file stem; informational */
    wk_tensor tok_embd;    /* (n_vocab rows, n_embd cols) */
    wk_tensor output_norm; /* (n_embd) f32 */
    wk_tensor output;      /* (n_vocab rows, n_embd cols); equals tok_embd when tied */
    wk_layer *layers;      /* (n_layer), owned */
    size_t weight_bytes;   /* sum of nbytes of all weights (tied output counted once) */
    struct wk_gguf *gguf;  /* owner of the mapping; NULL for synthetic models */
    void *owned;           /* synthetic weight storage; NULL for loaded models */
} wk_model;

/* wk_model_load builds a model from an open GGUF. The model borrows g (g must outlive it; it
 * does not close g). Checks the architecture family, every required tensor's presence, type
 * and shape against the hyperparameters; on failure returns CM_ERR_FORMAT/UNSUPPORTED with a
 * one-line message in err naming the tensor or key, and *out is untouched. */
cm_err wk_model_load(struct wk_gguf *g, wk_model *out, char *err, size_t errlen);

/* wk_model_synthetic makes a model of shape hp whose matrices have type wtype (F32, F16 or a
 * quantized type) filled with deterministic pseudo-random values from seed, scaled so that
 * activations stay O(1) through the layers; norms are 1. Memory owned by the model. */
cm_err wk_model_synthetic(const wk_hparams *hp, wk_dtype wtype, uint64_t seed, wk_model *out);

/* wk_model_extra_feature names the first feature of m beyond the plain llama graph (q/k norm,
 * post-norms, GELU FFN, embedding scale, attention scale, soft-capping, sliding window, experts)
 * as a short phrase for a backend's refusal ("q/k norm (qwen3, gemma3)"), or NULL when m has
 * none (phi3's fused tensors are plain once split into views). The string is static. */
const char *wk_model_extra_feature(const wk_model *m);

/* wk_model_fini frees what the model owns (not the GGUF); safe on a zeroed model. */
void wk_model_fini(wk_model *m);

/* wk_rope_inv_freq writes the head_dim/2 rotary frequencies (radians per position) of hp, its
 * scaling applied (linear: / factor; llama3: per wavelength band), into inv_freq: (head_dim/2).
 * Computed in double and rounded once, so that every backend rotates with the same values. */
void wk_rope_inv_freq(const wk_hparams *hp, int head_dim, float *inv_freq);

/* wk_kv_bytes_per_token: 2 * n_layer * n_head_kv * head_dim * bytes(kv dtype). */
size_t wk_kv_bytes_per_token(const wk_hparams *hp, wk_dtype kv_dtype);

#endif /* WK_MODEL_H */
