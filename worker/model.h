/*
 * wk_model: a llama-family decoder described by its hyperparameters and weight tensors.
 *
 * Built from GGUF metadata (wk_model_load: SmolLM2, Llama 2/3, Mistral, Qwen2-style files,
 * chosen by metadata, never by name) or synthetically (wk_model_synthetic: random weights of a
 * given shape, for tests and GPU benchmarks at big-model shapes). Tensors are views: into the
 * GGUF mapping for loaded models, into buffers owned by the model for synthetic ones. Backends
 * read them at create time and build their own representation.
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

#include "../common/cm_err.h"
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
} wk_hparams;

/* A weight view. data == NULL means "absent" (only allowed for optional tensors: biases). */
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
    wk_tensor w_gate;    /* (n_ff rows, n_embd cols) */
    wk_tensor w_up;      /* (n_ff rows, n_embd cols) */
    wk_tensor w_down;    /* (n_embd rows, n_ff cols) */
} wk_layer;

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

/* wk_model_fini frees what the model owns (not the GGUF); safe on a zeroed model. */
void wk_model_fini(wk_model *m);

/* wk_rope_inv_freq writes the head_dim/2 rotary frequencies (radians per position) of hp, its
 * scaling applied (linear: / factor; llama3: per wavelength band), into inv_freq: (head_dim/2).
 * Computed in double and rounded once, so that every backend rotates with the same values. */
void wk_rope_inv_freq(const wk_hparams *hp, int head_dim, float *inv_freq);

/* wk_kv_bytes_per_token: 2 * n_layer * n_head_kv * head_dim * bytes(kv dtype). */
size_t wk_kv_bytes_per_token(const wk_hparams *hp, wk_dtype kv_dtype);

#endif /* WK_MODEL_H */
