/*
 * sluice-grammar-bench: what constrained decoding costs, printed as text.
 *
 *   sluice-grammar-bench --model PATH [--batch 1,32] [--tokens N] [--threads N]
 *
 * Prints:
 *  - the vocabulary index build time;
 *  - compile time of a new 20-property JSON Schema (schema -> rules -> compiled grammar) and
 *    of the same schema through the compile cache;
 *  - per batch size B: the engine's decode step time without constraints (median over steps
 *    where all B sequences decode), then for json_object and for the 20-property schema:
 *    the constrained run's median step time, and the masking work measured directly by
 *    replaying the generated tokens through fresh grammar states (wk_grammar_mask +
 *    wk_grammar_accept per token, B sequences per step), both as a fraction of the
 *    unconstrained step; "cold" is the first sequence of a grammar never masked before
 *    (its shared per-position tables are built during it), "warm" the steady state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_clock.h"
#include "engine.h"
#include "gguf.h"
#include "grammar.h"
#include "json_schema.h"
#include "model.h"
#include "tokenizer.h"

#define PROG "sluice-grammar-bench"
#define MAX_BATCH 64
#define MAX_STEPS 4096

typedef struct options {
    const char *model;
    uint32_t batch[8];
    uint32_t n_batch;
    uint32_t tokens;
    int threads;
} options;

typedef struct seq_out {
    int32_t toks[1024];
    uint32_t n;
    bool done;
    bool failed;
    wk_finish_reason reason;
} seq_out;

static void on_event(const wk_event *ev, void *arg) {
    seq_out *o = arg;
    if (ev->kind == WK_EVENT_TOKENS) {
        for (uint32_t k = 0; k < ev->n_tokens && o->n < 1024; k++)
            o->toks[o->n++] = ev->token_ids[k];
    } else if (ev->kind == WK_EVENT_FINISHED) {
        o->done = true;
        o->reason = ev->finish_reason;
    } else {
        o->done = true;
        o->failed = true;
        fprintf(stderr, PROG ": request failed: %s\n", ev->message);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, uint32_t n) {
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(double), cmp_double);
    return v[n / 2];
}

/* A 20-property schema; salt changes the property names (a new schema for the cache). */
static char *schema20(int salt) {
    static const char *const types[] = {
        "{\"type\":\"string\"}",
        "{\"type\":\"integer\",\"minimum\":0,\"maximum\":1000}",
        "{\"type\":\"boolean\"}",
        "{\"type\":\"number\"}",
        "{\"enum\":[\"low\",\"medium\",\"high\"]}",
        "{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":4}",
        "{\"type\":[\"string\",\"null\"]}",
        "{\"type\":\"string\",\"format\":\"date\"}",
        "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"},\"y\":{\"type\":"
        "\"integer\"}},\"required\":[\"x\",\"y\"],\"additionalProperties\":false}",
        "{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}-[0-9]{2,4}$\"}",
    };
    static const char *const names[] = {"name",   "age",     "active", "score",  "level",
                                        "tags",   "nick",    "born",   "pos",    "code",
                                        "title",  "count",   "valid",  "weight", "priority",
                                        "labels", "comment", "due",    "origin", "ref"};
    size_t cap = 8192;
    char *s = malloc(cap);
    size_t n = (size_t)snprintf(s, cap, "{\"type\":\"object\",\"properties\":{");
    for (int k = 0; k < 20; k++)
        n += (size_t)snprintf(s + n, cap - n, "%s\"%s%d\":%s", k ? "," : "", names[k], salt,
                              types[k % 10]);
    n += (size_t)snprintf(s + n, cap - n, "},\"required\":[");
    for (int k = 0; k < 20; k++)
        n += (size_t)snprintf(s + n, cap - n, "%s\"%s%d\"", k ? "," : "", names[k], salt);
    snprintf(s + n, cap - n, "],\"additionalProperties\":false}");
    return s;
}

static wk_grammar *compile_schema(const char *schema, double *ms) {
    int64_t t0 = cm_clock_mono_ns();
    char *rules = NULL;
    char err[256];
    if (wk_json_schema_to_grammar(schema, strlen(schema), "", &rules, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, PROG ": schema: %s\n", err);
        return NULL;
    }
    wk_grammar *g = NULL;
    if (wk_grammar_compile(rules, strlen(rules), NULL, &g, err, sizeof(err)) != CM_OK)
        fprintf(stderr, PROG ": compile: %s\n", err);
    free(rules);
    *ms = (double)(cm_clock_mono_ns() - t0) / 1e6;
    return g;
}

/* run_batch runs B requests (grammar g or none) to completion and returns the median step
 * time over steps where all B decode; *gfrac (may be NULL) gets the share of those steps'
 * time the engine spent in grammar masking and advancing. outs receives the tokens. */
static double run_batch(wk_engine *e, const int32_t *prompt, uint32_t n_prompt, uint32_t B,
                        uint32_t tokens, wk_grammar *g, seq_out *outs, uint64_t *next_id,
                        double *gfrac) {
    static double steps[MAX_STEPS];
    uint32_t n_steps = 0;
    double total_ms = 0, grammar_ms = 0;
    memset(outs, 0, sizeof(seq_out) * B);
    for (uint32_t k = 0; k < B; k++) {
        wk_request req;
        memset(&req, 0, sizeof(req));
        req.id = ++*next_id;
        req.prompt = prompt;
        req.n_prompt = n_prompt;
        req.max_tokens = tokens;
        wk_sampling_defaults(&req.sampling);
        req.sampling.temperature = 1.0f;
        req.sampling.seed = 1000 + k;
        req.ignore_eos = g == NULL; /* unconstrained: keep all B decoding */
        req.grammar = g;
        req.cb = on_event;
        req.cb_arg = &outs[k];
        char err[256];
        if (wk_engine_submit(e, &req, err, sizeof(err)) != CM_OK) {
            fprintf(stderr, PROG ": submit: %s\n", err);
            return -1;
        }
    }
    while (wk_engine_has_work(e)) {
        wk_engine_stats st;
        wk_engine_get_stats(e, &st);
        bool all_decoding = st.running == B && st.waiting == 0;
        for (uint32_t k = 0; k < B && all_decoding; k++)
            all_decoding = outs[k].n > 0 && !outs[k].done;
        uint64_t gns = st.grammar_ns;
        int64_t t0 = cm_clock_mono_ns();
        bool did = false;
        if (wk_engine_step(e, &did) != CM_OK)
            return -1;
        double ms = (double)(cm_clock_mono_ns() - t0) / 1e6;
        wk_engine_get_stats(e, &st);
        if (all_decoding && st.running == B && n_steps < MAX_STEPS) {
            steps[n_steps++] = ms;
            total_ms += ms;
            grammar_ms += (double)(st.grammar_ns - gns) / 1e6;
        }
    }
    if (gfrac != NULL)
        *gfrac = total_ms > 0 ? grammar_ms / total_ms : 0;
    return median(steps, n_steps);
}

/* replay: mean mask + accept time (us) per token, replaying the sequences' tokens through
 * fresh states of g (whose shared tables may or may not be built yet). */
static double replay(wk_grammar *g, const wk_vocab_index *v, uint32_t n_vocab, const seq_out *outs,
                     uint32_t B, float *logits) {
    double total_ms = 0;
    uint64_t n_tok = 0;
    for (uint32_t k = 0; k < B; k++) {
        wk_grammar_state *st = NULL;
        if (wk_grammar_state_create(g, v, &st) != CM_OK)
            return -1;
        for (uint32_t t = 0; t < outs[k].n; t++) {
            for (uint32_t i = 0; i < n_vocab; i++)
                logits[i] = 0.0f;
            int64_t t0 = cm_clock_mono_ns();
            if (wk_grammar_mask(st, logits, n_vocab) != CM_OK ||
                wk_grammar_accept(st, outs[k].toks[t]) != CM_OK) {
                fprintf(stderr, PROG ": replay failed at token %u\n", t);
                wk_grammar_state_free(st);
                return -1;
            }
            total_ms += (double)(cm_clock_mono_ns() - t0) / 1e6;
            n_tok++;
        }
        wk_grammar_state_free(st);
    }
    return n_tok > 0 ? total_ms * 1000.0 / (double)n_tok : 0;
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof(*o));
    o->batch[0] = 1;
    o->batch[1] = 32;
    o->n_batch = 2;
    o->tokens = 96;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            o->model = argv[++i];
        } else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
            o->tokens = (uint32_t)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            o->threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            o->n_batch = 0;
            for (char *p = argv[++i]; *p != '\0' && o->n_batch < 8;) {
                long b = strtol(p, &p, 10);
                if (b < 1 || b > MAX_BATCH)
                    return 2;
                o->batch[o->n_batch++] = (uint32_t)b;
                if (*p == ',')
                    p++;
            }
        } else {
            fprintf(stderr,
                    "usage: " PROG " --model PATH [--batch 1,32] [--tokens N] [--threads N]\n");
            return 2;
        }
    }
    if (o->model == NULL || o->tokens == 0 || o->tokens > 1000) {
        fprintf(stderr, PROG ": --model is required (and --tokens in 1..1000)\n");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    char err[512];
    wk_gguf *gg = NULL;
    wk_model model;
    memset(&model, 0, sizeof(model));
    wk_tokenizer *tok = NULL;
    wk_vocab_index *v = NULL;
    wk_engine *e = NULL;
    wk_grammar *gobj = NULL, *gschema = NULL;
    float *logits = NULL;
    seq_out *outs = calloc(MAX_BATCH, sizeof(seq_out));
    rc = 1;
    if (wk_gguf_open(o.model, &gg, err, sizeof(err)) != CM_OK ||
        wk_model_load(gg, &model, err, sizeof(err)) != CM_OK ||
        wk_tokenizer_load(gg, &tok, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, PROG ": cannot load %s: %s\n", o.model, err);
        goto out;
    }
    int64_t t0 = cm_clock_mono_ns();
    if (wk_vocab_index_create(tok, &v, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, PROG ": vocab index: %s\n", err);
        goto out;
    }
    printf("vocab index: %u tokens, built in %.1f ms\n", wk_vocab_index_n_vocab(v),
           (double)(cm_clock_mono_ns() - t0) / 1e6);

    /* Compile times: new schemas (distinct names each time) and the cache. */
    double c_ms[9];
    for (int k = 0; k < 9; k++) {
        char *s = schema20(k);
        wk_grammar *g = compile_schema(s, &c_ms[k]);
        free(s);
        if (g == NULL)
            goto out;
        wk_grammar_unref(g);
    }
    wk_grammar_cache *cache = NULL;
    (void)wk_grammar_cache_create(64, &cache);
    char *s20 = schema20(100);
    char *rules = NULL;
    (void)wk_json_schema_to_grammar(s20, strlen(s20), "", &rules, err, sizeof(err));
    wk_grammar *cg = NULL;
    (void)wk_grammar_cache_get(cache, rules, strlen(rules), NULL, &cg, err, sizeof(err));
    wk_grammar_unref(cg);
    t0 = cm_clock_mono_ns();
    for (int k = 0; k < 1000; k++) {
        (void)wk_grammar_cache_get(cache, rules, strlen(rules), NULL, &cg, err, sizeof(err));
        wk_grammar_unref(cg);
    }
    double cached_us = (double)(cm_clock_mono_ns() - t0) / 1e3 / 1000;
    printf("20-property schema: compile (schema -> rules -> grammar) median %.2f ms; cached "
           "lookup %.1f us (sha256 of %zu bytes of rules)\n",
           median(c_ms, 9), cached_us, strlen(rules));
    free(rules);
    free(s20);
    wk_grammar_cache_destroy(cache);

    uint32_t maxb = 1;
    for (uint32_t k = 0; k < o.n_batch; k++)
        maxb = o.batch[k] > maxb ? o.batch[k] : maxb;
    wk_engine_config cfg;
    wk_engine_config_defaults(&cfg);
    cfg.max_running = maxb;
    cfg.max_batch_tokens = 512;
    cfg.max_context = 1024;
    cfg.n_threads = o.threads;
    cfg.prefix_cache = true;
    cfg.vocab = v;
    if (wk_engine_create(&model, tok, &cfg, &e, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, PROG ": engine: %s\n", err);
        goto out;
    }
    const char *chat = "<|im_start|>user\nDescribe a made-up product as JSON.<|im_end|>\n"
                       "<|im_start|>assistant\n";
    int32_t prompt[128];
    size_t n_prompt = 0;
    if (wk_tokenizer_encode(tok, chat, strlen(chat), false, true, prompt, 128, &n_prompt) != CM_OK)
        goto out;
    uint32_t n_vocab = model.hp.n_vocab;
    logits = malloc((size_t)n_vocab * sizeof(float));
    uint64_t next_id = 0;
    for (uint32_t bi = 0; bi < o.n_batch; bi++) {
        uint32_t B = o.batch[bi];
        /* The machine may be shared: every step figure is the best median of a few runs,
         * unconstrained and constrained interleaved. */
        double base =
            run_batch(e, prompt, (uint32_t)n_prompt, B, o.tokens, NULL, outs, &next_id, NULL);
        printf("batch %u: unconstrained decode step %.2f ms\n", B, base);
        for (int which = 0; which < 2; which++) {
            /* A fresh grammar each time: the first replay is cold. */
            double cms = 0;
            char *text = NULL;
            wk_grammar *g = NULL;
            if (which == 0) {
                (void)wk_json_object_grammar("", &text);
                (void)wk_grammar_compile(text, strlen(text), NULL, &g, err, sizeof(err));
                free(text);
            } else {
                char *s = schema20(200 + (int)bi);
                g = compile_schema(s, &cms);
                free(s);
            }
            if (g == NULL)
                goto out;
            /* First run: the grammar's tables are built as it goes (cold); the second run
             * (same seeds, so the same tokens) finds them (warm). */
            double cold_frac = 0, warm_frac = 1;
            double cold = run_batch(e, prompt, (uint32_t)n_prompt, B, o.tokens, g, outs, &next_id,
                                    &cold_frac);
            double con = 1e30;
            for (int rep = 0; rep < 2; rep++) {
                double b2 = run_batch(e, prompt, (uint32_t)n_prompt, B, o.tokens, NULL, outs,
                                      &next_id, NULL);
                base = b2 < base ? b2 : base;
                double f2 = 0;
                double c2 =
                    run_batch(e, prompt, (uint32_t)n_prompt, B, o.tokens, g, outs, &next_id, &f2);
                con = c2 < con ? c2 : con;
                warm_frac = f2 < warm_frac ? f2 : warm_frac;
            }
            uint32_t n_stop = 0, n_tok = 0;
            for (uint32_t k = 0; k < B; k++) {
                n_stop += outs[k].reason == WK_FINISH_STOP;
                n_tok += outs[k].n;
            }
            /* Replay on a fresh grammar (cold, then warm) for the direct mask cost. */
            wk_grammar *g2 = NULL;
            if (which == 0) {
                (void)wk_json_object_grammar("", &text);
                (void)wk_grammar_compile(text, strlen(text), NULL, &g2, err, sizeof(err));
                free(text);
            } else {
                /* The same text as the run (so its tokens replay), with empty tables. */
                char *s2 = schema20(200 + (int)bi);
                g2 = compile_schema(s2, &cms);
                free(s2);
            }
            if (g2 == NULL)
                goto out;
            int64_t tc = cm_clock_mono_ns();
            double cold_us = replay(g2, v, n_vocab, outs, B, logits);
            double cold_ms = (double)(cm_clock_mono_ns() - tc) / 1e6;
            double warm_us = replay(g2, v, n_vocab, outs, B, logits);
            double frac = base > 0 ? (double)B * warm_us / 1000.0 / base : 0;
            printf("batch %u %-12s: in-engine grammar time %.1f%% of the step warm, %.1f%% cold; "
                   "%u/%u finished (STOP), %u tokens; constrained step %.2f ms "
                   "warm (%+.1f%% vs unconstrained), %.2f ms cold (%+.1f%%); replayed "
                   "mask+accept %.1f us/token warm -> %.1f%% of the unconstrained step at batch "
                   "%u; cold (fresh grammar) %.1f ms for all %u sequences (%.0f us/token)\n",
                   B, which == 0 ? "json_object" : "20-prop", warm_frac * 100.0, cold_frac * 100.0,
                   n_stop, B, n_tok, con, base > 0 ? (con - base) / base * 100.0 : 0, cold,
                   base > 0 ? (cold - base) / base * 100.0 : 0, warm_us, frac * 100.0, B, cold_ms,
                   B, cold_us);
            wk_grammar_unref(g2);
            wk_grammar_unref(g);
        }
    }
    rc = 0;
out:
    free(logits);
    free(outs);
    wk_engine_destroy(e);
    wk_grammar_unref(gobj);
    wk_grammar_unref(gschema);
    wk_vocab_index_free(v);
    wk_tokenizer_free(tok);
    wk_model_fini(&model);
    wk_gguf_close(gg);
    return rc;
}
