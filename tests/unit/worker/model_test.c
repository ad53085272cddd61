/*
 * model_test: llama-family model loading from GGUF metadata (tiny hand-built files and the
 * bundled model), rejection of wrong files with messages naming the problem, and synthetic
 * models.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gguf.h"
#include "gguf_builder.h"
#include "model.h"

#define EMBD 64
#define HEADS 4
#define KV_HEADS 2
#define HEAD_DIM 16
#define FF 96
#define LAYERS 2
#define VOCAB 40

/* Knobs for the tiny file; zero = default. */
typedef struct tiny_opts {
    const char *arch;        /* default "llama" */
    const char *skip_tensor; /* leave this tensor out */
    const char *bad_tensor;  /* give this tensor a wrong shape */
    const char *f16_tensor;  /* store this tensor as F16 */
    const char *skip_key;    /* leave this "<arch>." key suffix out */
    uint32_t head_count_kv;  /* default KV_HEADS */
    bool with_output;
    bool with_biases;
    const char *rope_scaling; /* rope.scaling.type */
    float rope_factor;
    bool rope_freqs;       /* add a llama3 rope_freqs tensor */
    float rope_freqs_bias; /* added to its values (to make it mismatch) */
    bool longrope;         /* add phi3 rope_factors_long/short tensors */
    float attn_softcap;    /* gemma2's attn_logit_softcapping (default 50) */
    uint32_t n_expert;     /* expert_count key and 3-D expert tensors instead of the FFN */
    uint32_t n_expert_used;
    uint32_t gating; /* expert_gating_func key when nonzero */
} tiny_opts;

typedef struct tdesc {
    char name[64];
    int64_t ne0, ne1; /* ne1 = 0: 1-D */
    int64_t ne2;      /* 0: at most 2-D */
    uint32_t type;
    float val; /* fill value for F32 tensors (norms 1, weights small) */
} tdesc;

/* llama3 rope_freqs divisors for (factor 8, low 1, high 4, orig 8192), base 10000. */
static void llama3_divisors(float *out, int half, float base) {
    for (int i = 0; i < half; i++) {
        double freq = pow(base, -2.0 * i / (2.0 * half));
        double wavelen = 2.0 * M_PI / freq;
        double div;
        if (wavelen < 8192.0 / 4.0) {
            div = 1.0;
        } else if (wavelen > 8192.0) {
            div = 8.0;
        } else {
            double smooth = (8192.0 / wavelen - 1.0) / 3.0;
            div = 1.0 / ((1.0 - smooth) / 8.0 + smooth);
        }
        out[i] = (float)div;
    }
}

static void build_tiny(gb *b, const tiny_opts *o) {
    const char *arch = o->arch ? o->arch : "llama";
    /* family tensors as llama.cpp's converter names them */
    bool fused = strcmp(arch, "phi3") == 0;
    bool gemma = strncmp(arch, "gemma", 5) == 0;
    bool qk_norm = strncmp(arch, "qwen3", 5) == 0 || strcmp(arch, "gemma3") == 0;
    tdesc t[64];
    int nt = 0;
#define T(nm, a, c, v)                                                                             \
    do {                                                                                           \
        snprintf(t[nt].name, sizeof(t[nt].name), "%s", nm);                                        \
        t[nt].ne0 = (a);                                                                           \
        t[nt].ne1 = (c);                                                                           \
        t[nt].ne2 = 0;                                                                             \
        t[nt].type = 0;                                                                            \
        t[nt].val = (v);                                                                           \
        nt++;                                                                                      \
    } while (0)
    T("token_embd.weight", EMBD, VOCAB, 0.01f);
    T("output_norm.weight", EMBD, 0, 1.0f);
    if (o->with_output) {
        T("output.weight", EMBD, VOCAB, 0.02f);
    }
    if (o->rope_freqs) {
        T("rope_freqs.weight", HEAD_DIM / 2, 0, -1.0f);
    }
    if (o->longrope) {
        T("rope_factors_long.weight", HEAD_DIM / 2, 0, 1.0f);
        T("rope_factors_short.weight", HEAD_DIM / 2, 0, 1.0f);
    }
    uint32_t hkv = o->head_count_kv ? o->head_count_kv : KV_HEADS;
    for (int l = 0; l < LAYERS; l++) {
        char n[64];
#define L(suffix, a, c, v)                                                                         \
    do {                                                                                           \
        snprintf(n, sizeof(n), "blk.%d.%s", l, suffix);                                            \
        T(n, a, c, v);                                                                             \
    } while (0)
        L("attn_norm.weight", EMBD, 0, 1.0f);
        if (fused) {
            L("attn_qkv.weight", EMBD, (HEADS + 2 * KV_HEADS) * HEAD_DIM, 0.01f);
        } else {
            L("attn_q.weight", EMBD, HEADS * HEAD_DIM, 0.01f);
            L("attn_k.weight", EMBD, KV_HEADS * HEAD_DIM, 0.01f);
            L("attn_v.weight", EMBD, KV_HEADS * HEAD_DIM, 0.01f);
        }
        if (qk_norm) {
            L("attn_q_norm.weight", HEAD_DIM, 0, 1.0f);
            L("attn_k_norm.weight", HEAD_DIM, 0, 1.0f);
        }
        if (gemma) {
            L("post_attention_norm.weight", EMBD, 0, 1.0f);
            L("post_ffw_norm.weight", EMBD, 0, 1.0f);
        }
        L("attn_output.weight", HEADS * HEAD_DIM, EMBD, 0.01f);
        if (o->with_biases) {
            L("attn_q.bias", HEADS * HEAD_DIM, 0, 0.1f);
            L("attn_k.bias", KV_HEADS * HEAD_DIM, 0, 0.1f);
            L("attn_v.bias", KV_HEADS * HEAD_DIM, 0, 0.1f);
        }
        L("ffn_norm.weight", EMBD, 0, 1.0f);
        if (o->n_expert > 0) {
            L("ffn_gate_inp.weight", EMBD, o->n_expert, 0.01f);
            L("ffn_gate_exps.weight", EMBD, FF, 0.01f);
            t[nt - 1].ne2 = o->n_expert;
            L("ffn_up_exps.weight", EMBD, FF, 0.01f);
            t[nt - 1].ne2 = o->n_expert;
            L("ffn_down_exps.weight", FF, EMBD, 0.01f);
            t[nt - 1].ne2 = o->n_expert;
            continue;
        }
        if (fused) {
            L("ffn_up.weight", EMBD, 2 * FF, 0.01f);
        } else {
            L("ffn_gate.weight", EMBD, FF, 0.01f);
            L("ffn_up.weight", EMBD, FF, 0.01f);
        }
        L("ffn_down.weight", FF, EMBD, 0.01f);
#undef L
    }
#undef T
    int kept = 0;
    for (int i = 0; i < nt; i++) {
        if (o->bad_tensor && strcmp(t[i].name, o->bad_tensor) == 0) {
            t[i].ne0 += 32;
        }
        if (o->f16_tensor && strcmp(t[i].name, o->f16_tensor) == 0) {
            t[i].type = 1;
        }
        if (!(o->skip_tensor && strcmp(t[i].name, o->skip_tensor) == 0)) {
            t[kept++] = t[i];
        }
    }
    nt = kept;

    struct {
        const char *suffix;
        uint32_t v;
    } keys[] = {{"context_length", 2048},        {"embedding_length", EMBD},
                {"block_count", LAYERS},         {"feed_forward_length", FF},
                {"attention.head_count", HEADS}, {"attention.head_count_kv", hkv}};
    int nk = 0;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        nk += !(o->skip_key && strcmp(o->skip_key, keys[i].suffix) == 0);
    }
    bool gemma2 = strcmp(arch, "gemma2") == 0;
    int n_kv = 2 + nk + 2 + (o->rope_scaling ? 2 : 0) +
               (gemma2  ? 3
                : gemma ? 1
                        : 0) +
               (o->n_expert ? 1 : 0) + (o->n_expert_used ? 1 : 0) + (o->gating ? 1 : 0);
    gb_begin(b, 3, (uint64_t)nt, (uint64_t)n_kv);
    gb_kv_str(b, "general.architecture", arch);
    gb_kv_str(b, "general.name", "tiny test model");
    char key[128];
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (o->skip_key && strcmp(o->skip_key, keys[i].suffix) == 0) {
            continue;
        }
        snprintf(key, sizeof(key), "%s.%s", arch, keys[i].suffix);
        gb_kv_u32(b, key, keys[i].v);
    }
    snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon", arch);
    gb_kv_f32(b, key, 1e-6f);
    snprintf(key, sizeof(key), "%s.rope.freq_base", arch);
    gb_kv_f32(b, key, 10000.0f);
    if (o->rope_scaling) {
        snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
        gb_kv_str(b, key, o->rope_scaling);
        snprintf(key, sizeof(key), "%s.rope.scaling.factor", arch);
        gb_kv_f32(b, key, o->rope_factor);
    }
    if (o->n_expert) {
        snprintf(key, sizeof(key), "%s.expert_count", arch);
        gb_kv_u32(b, key, o->n_expert);
    }
    if (o->n_expert_used) {
        snprintf(key, sizeof(key), "%s.expert_used_count", arch);
        gb_kv_u32(b, key, o->n_expert_used);
    }
    if (o->gating) {
        snprintf(key, sizeof(key), "%s.expert_gating_func", arch);
        gb_kv_u32(b, key, o->gating);
    }
    if (gemma) {
        snprintf(key, sizeof(key), "%s.attention.sliding_window", arch);
        gb_kv_u32(b, key, gemma2 ? 4096 : 512);
    }
    if (gemma2) {
        snprintf(key, sizeof(key), "%s.attn_logit_softcapping", arch);
        gb_kv_f32(b, key, o->attn_softcap != 0.0f ? o->attn_softcap : 50.0f);
        snprintf(key, sizeof(key), "%s.final_logit_softcapping", arch);
        gb_kv_f32(b, key, 30.0f);
    }
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        int64_t ne[3] = {t[i].ne0, t[i].ne1, t[i].ne2};
        size_t bytes = (size_t)t[i].ne0 * (size_t)(t[i].ne1 ? t[i].ne1 : 1) *
                       (size_t)(t[i].ne2 ? t[i].ne2 : 1) * (t[i].type ? 2 : 4);
        gb_tensor(b, t[i].name, t[i].ne2 ? 3 : t[i].ne1 ? 2 : 1, ne, t[i].type, off);
        off += (bytes + 31) / 32 * 32;
    }
    gb_data_start(b, 32);
    for (int i = 0; i < nt; i++) {
        size_t n = (size_t)t[i].ne0 * (size_t)(t[i].ne1 ? t[i].ne1 : 1) *
                   (size_t)(t[i].ne2 ? t[i].ne2 : 1);
        size_t bytes = n * (t[i].type ? 2 : 4);
        float div[HEAD_DIM / 2];
        if (t[i].val < 0) {
            llama3_divisors(div, HEAD_DIM / 2, 10000.0f);
        }
        for (size_t k = 0; k < n; k++) {
            float v =
                t[i].val < 0 ? div[k] + o->rope_freqs_bias : t[i].val * (float)((int)(k % 7) - 3);
            if (t[i].val == 1.0f) {
                v = 1.0f;
            }
            if (t[i].type == 1) {
                uint16_t h = 0x3C00;
                gb_bytes(b, &h, 2);
            } else {
                gb_bytes(b, &v, 4);
            }
        }
        gb_zeros(b, (bytes + 31) / 32 * 32 - bytes);
    }
}

/* Builds, opens and loads; returns the load result, keeps the message in err. */
static cm_err load_tiny(const tiny_opts *o, wk_model *m, char *err, size_t errlen, gb *b,
                        wk_gguf **g) {
    build_tiny(b, o);
    char gerr[256] = "";
    cm_err rv = wk_gguf_open_memory(b->buf, b->len, g, gerr, sizeof(gerr));
    if (rv != CM_OK) {
        fail_msg("tiny gguf rejected: %s", gerr);
    }
    return wk_model_load(*g, m, err, errlen);
}

static void expect_load_fail(const tiny_opts *o, cm_err want, const char *needle) {
    gb b;
    wk_gguf *g = NULL;
    wk_model m;
    memset(&m, 0x5a, sizeof(m)); /* must stay untouched */
    wk_model before = m;
    char err[256] = "";
    cm_err rv = load_tiny(o, &m, err, sizeof(err), &b, &g);
    if (rv != want || strstr(err, needle) == NULL) {
        fail_msg("want %d containing '%s', got %d '%s'", want, needle, rv, err);
    }
    assert_memory_equal(&m, &before, sizeof(m));
    wk_gguf_close(g);
    gb_free(&b);
}

static void test_tiny_llama(void **state) {
    (void)state;
    gb b;
    wk_gguf *g = NULL;
    wk_model m;
    char err[256] = "";
    tiny_opts o = {0};
    assert_int_equal(load_tiny(&o, &m, err, sizeof(err), &b, &g), CM_OK);
    assert_string_equal(m.arch, "llama");
    assert_string_equal(m.name, "tiny test model");
    assert_int_equal(m.hp.n_vocab, VOCAB);
    assert_int_equal(m.hp.n_embd, EMBD);
    assert_int_equal(m.hp.n_layer, LAYERS);
    assert_int_equal(m.hp.n_head, HEADS);
    assert_int_equal(m.hp.n_head_kv, KV_HEADS);
    assert_int_equal(m.hp.head_dim, HEAD_DIM);
    assert_int_equal(m.hp.n_rot, HEAD_DIM);
    assert_int_equal(m.hp.n_ff, FF);
    assert_int_equal(m.hp.n_ctx_train, 2048);
    assert_true(m.hp.rms_eps == 1e-6f);
    assert_true(m.hp.rope_freq_base == 10000.0f);
    assert_int_equal(m.hp.rope_style, WK_ROPE_NORM);
    assert_int_equal(m.hp.rope_scaling, WK_ROPE_SCALING_NONE);
    assert_true(m.hp.tied_embeddings);
    assert_ptr_equal(m.output.data, m.tok_embd.data);
    assert_null(m.layers[0].bq.data);
    assert_int_equal(m.layers[1].wk.ne[1], KV_HEADS * HEAD_DIM);
    assert_int_equal(m.layers[1].w_down.ne[0], FF);
    size_t want = 4 * (size_t)(EMBD * VOCAB + EMBD +
                               LAYERS * (2 * EMBD + 2 * EMBD * HEADS * HEAD_DIM +
                                         2 * EMBD * KV_HEADS * HEAD_DIM + 3 * EMBD * FF));
    assert_int_equal(m.weight_bytes, want);
    assert_ptr_equal(m.gguf, g);
    wk_model_fini(&m);
    wk_model_fini(&m); /* safe twice (zeroed) */
    wk_gguf_close(g);
    gb_free(&b);

    o.with_output = true;
    assert_int_equal(load_tiny(&o, &m, err, sizeof(err), &b, &g), CM_OK);
    assert_false(m.hp.tied_embeddings);
    assert_ptr_not_equal(m.output.data, m.tok_embd.data);
    wk_model_fini(&m);
    wk_gguf_close(g);
    gb_free(&b);
}

static void test_families(void **state) {
    (void)state;
    gb b;
    wk_gguf *g = NULL;
    wk_model m;
    char err[256] = "";
    tiny_opts o = {.arch = "qwen2", .with_biases = true, .with_output = true};
    assert_int_equal(load_tiny(&o, &m, err, sizeof(err), &b, &g), CM_OK);
    assert_string_equal(m.arch, "qwen2");
    assert_int_equal(m.hp.rope_style, WK_ROPE_NEOX);
    assert_non_null(m.layers[1].bk.data);
    assert_int_equal(m.layers[1].bk.ne[0], KV_HEADS * HEAD_DIM);
    wk_model_fini(&m);
    wk_gguf_close(g);
    gb_free(&b);

    tiny_opts mi = {.arch = "mistral"};
    assert_int_equal(load_tiny(&mi, &m, err, sizeof(err), &b, &g), CM_OK);
    assert_int_equal(m.hp.rope_style, WK_ROPE_NORM);
    wk_model_fini(&m);
    wk_gguf_close(g);
    gb_free(&b);

    tiny_opts gpt = {.arch = "gpt2"};
    expect_load_fail(&gpt, CM_ERR_UNSUPPORTED, "architecture 'gpt2'");
}

/* Loads o's tiny file (failing the test with the loader's message); release with unload. */
static void load_ok(const tiny_opts *o, wk_model *m, gb *b, wk_gguf **g) {
    char err[256] = "";
    cm_err rv = load_tiny(o, m, err, sizeof(err), b, g);
    if (rv != CM_OK) {
        fail_msg("%s: %s", o->arch, err);
    }
}

static void unload(wk_model *m, gb *b, wk_gguf *g) {
    wk_model_fini(m);
    wk_gguf_close(g);
    gb_free(b);
}

static void test_more_families(void **state) {
    (void)state;
    gb b;
    wk_gguf *g = NULL;
    wk_model m;

    tiny_opts q3 = {.arch = "qwen3", .with_output = true};
    load_ok(&q3, &m, &b, &g);
    assert_int_equal(m.hp.rope_style, WK_ROPE_NEOX);
    assert_true(m.hp.qk_norm);
    assert_false(m.hp.post_norms);
    assert_int_equal(m.layers[1].k_norm.ne[0], HEAD_DIM);
    assert_string_equal(wk_model_extra_feature(&m), "q/k norm (qwen3, gemma3)");
    unload(&m, &b, g);
    tiny_opts q3m = {.arch = "qwen3", .skip_tensor = "blk.1.attn_k_norm.weight"};
    expect_load_fail(&q3m, CM_ERR_FORMAT, "missing tensor 'blk.1.attn_k_norm.weight'");

    /* phi3: q, k, v and gate, up are row ranges of the fused tensors */
    tiny_opts p3 = {.arch = "phi3", .with_output = true};
    load_ok(&p3, &m, &b, &g);
    assert_int_equal(m.hp.rope_style, WK_ROPE_NEOX);
    const wk_layer *L = &m.layers[1];
    size_t row = 4 * EMBD;
    assert_int_equal(L->wq.ne[1], HEADS * HEAD_DIM);
    assert_int_equal(L->wk.ne[1], KV_HEADS * HEAD_DIM);
    assert_ptr_equal(L->wk.data, (const uint8_t *)L->wq.data + HEADS * HEAD_DIM * row);
    assert_ptr_equal(L->wv.data, (const uint8_t *)L->wk.data + KV_HEADS * HEAD_DIM * row);
    assert_int_equal(L->wv.nbytes, KV_HEADS * HEAD_DIM * row);
    assert_int_equal(L->w_up.ne[1], FF);
    assert_ptr_equal(L->w_up.data, (const uint8_t *)L->w_gate.data + FF * row);
    assert_null(wk_model_extra_feature(&m)); /* a llama graph once split */
    unload(&m, &b, g);
    tiny_opts p3l = {.arch = "phi3", .longrope = true};
    expect_load_fail(&p3l, CM_ERR_UNSUPPORTED, "LongRoPE");
    tiny_opts p3b = {.arch = "phi3", .bad_tensor = "blk.0.attn_qkv.weight"};
    expect_load_fail(&p3b, CM_ERR_FORMAT, "'blk.0.attn_qkv.weight' has shape");

    tiny_opts g2 = {.arch = "gemma2"};
    load_ok(&g2, &m, &b, &g);
    assert_true(m.hp.tied_embeddings);
    assert_true(m.hp.post_norms);
    assert_false(m.hp.qk_norm);
    assert_int_equal(m.hp.ffn_act, WK_FFN_GELU_TANH);
    assert_true(fabsf(m.hp.embd_scale - 8.0f) < 1e-6f);  /* sqrt(64) */
    assert_true(fabsf(m.hp.attn_scale - 0.25f) < 1e-6f); /* 1/sqrt(head_dim 16) */
    assert_true(m.hp.attn_softcap == 50.0f && m.hp.final_softcap == 30.0f);
    assert_int_equal(m.hp.swa_window, 4096);
    assert_int_equal(m.hp.swa_pattern, 2);
    assert_true(wk_hparams_layer_swa(&m.hp, 0));
    assert_false(wk_hparams_layer_swa(&m.hp, 1));
    assert_true(m.hp.rope_freq_base_swa == m.hp.rope_freq_base);
    assert_non_null(m.layers[0].ffn_post_norm.data);
    unload(&m, &b, g);
    tiny_opts g2n = {.arch = "gemma2", .skip_tensor = "blk.0.post_ffw_norm.weight"};
    expect_load_fail(&g2n, CM_ERR_FORMAT, "missing tensor 'blk.0.post_ffw_norm.weight'");
    tiny_opts g2c = {.arch = "gemma2", .attn_softcap = -1.0f};
    expect_load_fail(&g2c, CM_ERR_FORMAT, "gemma2.attn_logit_softcapping");

    tiny_opts g3 = {.arch = "gemma3"};
    load_ok(&g3, &m, &b, &g);
    assert_true(m.hp.qk_norm && m.hp.post_norms);
    assert_true(m.hp.attn_softcap == 0.0f && m.hp.final_softcap == 0.0f);
    assert_int_equal(m.hp.swa_window, 512);
    assert_int_equal(m.hp.swa_pattern, 6);
    assert_true(m.hp.rope_freq_base_swa == 10000.0f);
    for (uint32_t l = 0; l < 12; l++) { /* 5 local layers, then a global one */
        assert_int_equal(wk_hparams_layer_swa(&m.hp, l), l % 6 != 5);
    }
    unload(&m, &b, g);
}

static void test_experts(void **state) {
    (void)state;
    gb b;
    wk_gguf *g = NULL;
    wk_model m;

    /* Mixtral: a llama file with experts */
    tiny_opts mx = {.n_expert = 4, .n_expert_used = 2};
    load_ok(&mx, &m, &b, &g);
    assert_int_equal(m.hp.n_expert, 4);
    assert_int_equal(m.hp.n_expert_used, 2);
    assert_int_equal(m.hp.n_ff_exp, FF);
    assert_int_equal(m.hp.n_ff_shexp, 0);
    assert_true(m.hp.expert_norm);
    assert_null(m.layers[0].w_gate.data);
    assert_int_equal(m.layers[1].down_exps.ne[2], 4);
    wk_tensor e3 = wk_expert_view(&m.layers[1].up_exps, 3);
    assert_int_equal(e3.ne[1], FF);
    assert_int_equal(e3.nbytes, 4 * EMBD * FF);
    assert_ptr_equal(e3.data, (const uint8_t *)m.layers[1].up_exps.data + 3 * 4 * EMBD * FF);
    assert_string_equal(wk_model_extra_feature(&m),
                        "mixture of experts (mixtral, qwen2moe, qwen3moe)");
    unload(&m, &b, g);

    tiny_opts q3 = {.arch = "qwen3moe", .n_expert = 8, .n_expert_used = 2};
    load_ok(&q3, &m, &b, &g);
    assert_true(m.hp.qk_norm && m.hp.expert_norm);
    unload(&m, &b, g);

    tiny_opts none = {.arch = "qwen3moe"};
    expect_load_fail(&none, CM_ERR_FORMAT, "missing metadata key 'qwen3moe.expert_count'");
    tiny_opts too_many = {.n_expert = 4, .n_expert_used = 5};
    expect_load_fail(&too_many, CM_ERR_FORMAT, "'llama.expert_used_count' = 5 out of range");
    tiny_opts unused = {.n_expert = 4};
    expect_load_fail(&unused, CM_ERR_FORMAT, "missing metadata key 'llama.expert_used_count'");
    tiny_opts sigmoid = {.n_expert = 4, .n_expert_used = 2, .gating = 2};
    expect_load_fail(&sigmoid, CM_ERR_UNSUPPORTED, "expert gating function 2");
    tiny_opts missing = {
        .n_expert = 4, .n_expert_used = 2, .skip_tensor = "blk.1.ffn_down_exps.weight"};
    expect_load_fail(&missing, CM_ERR_FORMAT, "missing tensor 'blk.1.ffn_down_exps.weight'");
    tiny_opts phi = {.arch = "phi3", .n_expert = 4, .n_expert_used = 2};
    expect_load_fail(&phi, CM_ERR_UNSUPPORTED, "mixture of experts unsupported for phi3");
}

static void test_rope_scaling(void **state) {
    (void)state;
    gb b;
    wk_gguf *g = NULL;
    wk_model m;
    char err[256] = "";
    tiny_opts o = {.rope_scaling = "linear", .rope_factor = 4.0f};
    assert_int_equal(load_tiny(&o, &m, err, sizeof(err), &b, &g), CM_OK);
    assert_int_equal(m.hp.rope_scaling, WK_ROPE_SCALING_LINEAR);
    assert_true(m.hp.rope_scaling_factor == 4.0f);
    wk_model_fini(&m);
    wk_gguf_close(g);
    gb_free(&b);

    tiny_opts l3 = {.rope_freqs = true};
    assert_int_equal(load_tiny(&l3, &m, err, sizeof(err), &b, &g), CM_OK);
    assert_int_equal(m.hp.rope_scaling, WK_ROPE_SCALING_LLAMA3);
    assert_true(m.hp.rope_scaling_factor == 8.0f);
    assert_int_equal(m.hp.rope_llama3_orig_ctx, 8192);
    wk_model_fini(&m);
    wk_gguf_close(g);
    gb_free(&b);

    tiny_opts bad = {.rope_freqs = true, .rope_freqs_bias = 0.5f};
    expect_load_fail(&bad, CM_ERR_UNSUPPORTED, "rope_freqs.weight");
    tiny_opts yarn = {.rope_scaling = "yarn", .rope_factor = 4.0f};
    expect_load_fail(&yarn, CM_ERR_UNSUPPORTED, "rope scaling type 'yarn'");
    tiny_opts neg = {.rope_scaling = "linear", .rope_factor = -1.0f};
    expect_load_fail(&neg, CM_ERR_FORMAT, "rope.scaling.factor");
}

static void test_rejections(void **state) {
    (void)state;
    tiny_opts o1 = {.skip_tensor = "blk.1.ffn_up.weight"};
    expect_load_fail(&o1, CM_ERR_FORMAT, "missing tensor 'blk.1.ffn_up.weight'");
    tiny_opts o2 = {.bad_tensor = "blk.0.attn_k.weight"};
    expect_load_fail(&o2, CM_ERR_FORMAT, "tensor 'blk.0.attn_k.weight' has shape [96, 32");
    tiny_opts o3 = {.f16_tensor = "blk.0.ffn_norm.weight"};
    expect_load_fail(&o3, CM_ERR_UNSUPPORTED, "'blk.0.ffn_norm.weight' has type F16");
    tiny_opts o4 = {.skip_key = "block_count"};
    expect_load_fail(&o4, CM_ERR_FORMAT, "missing metadata key 'llama.block_count'");
    tiny_opts o5 = {.head_count_kv = 3};
    expect_load_fail(&o5, CM_ERR_FORMAT, "head_count_kv 3");
    tiny_opts o6 = {.skip_tensor = "token_embd.weight"};
    expect_load_fail(&o6, CM_ERR_FORMAT, "token_embd.weight");
    tiny_opts o7 = {.bad_tensor = "output_norm.weight"};
    expect_load_fail(&o7, CM_ERR_FORMAT, "output_norm.weight");

    /* F16 matrices are fine */
    gb b;
    wk_gguf *g = NULL;
    wk_model m;
    char err[256] = "";
    tiny_opts ok = {.f16_tensor = "blk.0.attn_q.weight"};
    assert_int_equal(load_tiny(&ok, &m, err, sizeof(err), &b, &g), CM_OK);
    assert_int_equal(m.layers[0].wq.type, WK_DTYPE_F16);
    wk_model_fini(&m);
    wk_gguf_close(g);
    gb_free(&b);

    /* a GGUF with no architecture at all */
    gb_begin(&b, 3, 0, 0);
    assert_int_equal(wk_gguf_open_memory(b.buf, b.len, &g, NULL, 0), CM_OK);
    assert_int_equal(wk_model_load(g, &m, err, sizeof(err)), CM_ERR_FORMAT);
    assert_non_null(strstr(err, "general.architecture"));
    wk_gguf_close(g);
    gb_free(&b);
}

static void test_bundled(void **state) {
    (void)state;
    const char *path = getenv("SLUICE_TEST_MODEL");
    if (path == NULL) {
        skip();
    }
    wk_gguf *g = NULL;
    wk_model m;
    char err[256] = "";
    assert_int_equal(wk_gguf_open(path, &g, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_model_load(g, &m, err, sizeof(err)), CM_OK);
    assert_string_equal(m.arch, "llama");
    assert_int_equal(m.hp.n_layer, 30);
    assert_int_equal(m.hp.n_embd, 576);
    assert_int_equal(m.hp.n_head, 9);
    assert_int_equal(m.hp.n_head_kv, 3);
    assert_int_equal(m.hp.head_dim, 64);
    assert_int_equal(m.hp.n_ff, 1536);
    assert_int_equal(m.hp.n_vocab, 49152);
    assert_true(m.hp.rope_freq_base == 100000.0f);
    assert_true(m.hp.tied_embeddings);
    assert_int_equal(m.tok_embd.type, WK_DTYPE_Q8_0);
    assert_int_equal(m.layers[0].wq.type, WK_DTYPE_Q4_1);
    assert_int_equal(m.output_norm.type, WK_DTYPE_F32);
    /* sum of all tensors in the file (tied head counted once) */
    size_t sum = 0;
    for (uint64_t i = 0; i < wk_gguf_n_tensors(g); i++) {
        sum += wk_gguf_tensor_at(g, i)->nbytes;
    }
    assert_int_equal(m.weight_bytes, sum);
    assert_int_equal(wk_kv_bytes_per_token(&m.hp, WK_DTYPE_F16), 2 * 30 * 3 * 64 * 2);
    assert_int_equal(wk_kv_bytes_per_token(&m.hp, WK_DTYPE_F32), 2 * 30 * 3 * 64 * 4);
    wk_model_fini(&m);
    wk_gguf_close(g);
}

static void test_synthetic(void **state) {
    (void)state;
    wk_hparams hp = {.n_vocab = 512,
                     .n_embd = 256,
                     .n_layer = 3,
                     .n_head = 4,
                     .n_head_kv = 2,
                     .n_ff = 512,
                     .rms_eps = 1e-5f,
                     .rope_freq_base = 10000.0f};
    const wk_dtype types[] = {WK_DTYPE_F32,  WK_DTYPE_F16,  WK_DTYPE_BF16,
                              WK_DTYPE_Q4_0, WK_DTYPE_Q4_1, WK_DTYPE_Q8_0,
                              WK_DTYPE_Q4_K, WK_DTYPE_Q5_K, WK_DTYPE_Q6_K};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        wk_model a, b2, c;
        assert_int_equal(wk_model_synthetic(&hp, types[i], 7, &a), CM_OK);
        assert_int_equal(wk_model_synthetic(&hp, types[i], 7, &b2), CM_OK);
        assert_int_equal(wk_model_synthetic(&hp, types[i], 8, &c), CM_OK);
        assert_int_equal(a.hp.head_dim, 64);
        assert_true(a.hp.tied_embeddings == false);
        assert_int_equal(a.layers[2].wq.type, types[i]);
        assert_int_equal(a.layers[2].wq.nbytes, wk_dtype_row_bytes(types[i], 256) * 256);
        assert_memory_equal(a.layers[2].w_up.data, b2.layers[2].w_up.data, a.layers[2].w_up.nbytes);
        assert_memory_not_equal(a.layers[2].w_up.data, c.layers[2].w_up.data,
                                a.layers[2].w_up.nbytes);
        /* values finite, centred, with a spread near 1/sqrt(n_embd) */
        float row[256];
        double s1 = 0, s2 = 0;
        size_t rb = wk_dtype_row_bytes(types[i], 256);
        for (int r = 0; r < 64; r++) {
            wk_dequantize_row(types[i], (const uint8_t *)a.layers[1].wq.data + rb * (size_t)r, row,
                              256);
            for (int k = 0; k < 256; k++) {
                assert_true(isfinite(row[k]));
                s1 += row[k];
                s2 += (double)row[k] * row[k];
            }
        }
        double n = 64.0 * 256, mean = s1 / n, sd = sqrt(s2 / n - mean * mean);
        if (!(fabs(mean) < 0.3 * sd && sd > 0.25 / 16.0 && sd < 4.0 / 16.0)) {
            fail_msg("%s: mean %g sd %g", wk_dtype_name(types[i]), mean, sd);
        }
        assert_true(((const float *)a.output_norm.data)[5] == 1.0f);
        wk_model_fini(&a);
        wk_model_fini(&b2);
        wk_model_fini(&c);
    }
    wk_hparams tied = hp;
    tied.tied_embeddings = true;
    wk_model t;
    assert_int_equal(wk_model_synthetic(&tied, WK_DTYPE_Q8_0, 1, &t), CM_OK);
    assert_ptr_equal(t.output.data, t.tok_embd.data);
    wk_model_fini(&t);
    wk_hparams bad = hp;
    bad.n_embd = 100; /* not a multiple of the Q4_0 block */
    assert_int_equal(wk_model_synthetic(&bad, WK_DTYPE_Q4_0, 1, &t), CM_ERR_INVALID);
    bad = hp;
    bad.n_head_kv = 3;
    assert_int_equal(wk_model_synthetic(&bad, WK_DTYPE_F32, 1, &t), CM_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_llama),    cmocka_unit_test(test_families),
        cmocka_unit_test(test_more_families), cmocka_unit_test(test_experts),
        cmocka_unit_test(test_rope_scaling),  cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_bundled),       cmocka_unit_test(test_synthetic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
