/*
 * sluice-generate: one completion from a GGUF model through the engine, for operators and
 * tests.
 *
 *   sluice-generate --model PATH (--prompt TEXT | --chat 'user message') [--system TEXT]
 *     [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S] [--greedy]
 *     [--ignore-eos] [--json] [--dump-logits FILE] [--tokenize] [--backend cpu|cuda]
 *     [--threads N] [--kv-dtype f16|f32] [--template NAME]
 *
 * Prints the completion as tokens arrive, or with --json one object:
 *   {"text", "token_ids", "prompt_tokens", "completion_tokens", "finish_reason", "load_ms",
 *    "prefill_ms", "decode_ms", "prefill_tokens_per_s", "decode_tokens_per_s"}.
 * token_ids are the generated ids; a final end-of-generation token is not among them (nor in
 * text) but counts in completion_tokens. --tokenize prints {"token_ids":[...]} for the prompt
 * (after the chat template, if any) and exits. --dump-logits writes the logits at the last
 * prompt position (n_vocab little-endian f32). --prompt text is tokenized with special tokens
 * recognized (like "<|im_start|>").
 * Exit status: 0 ok, 1 runtime error (one line on stderr), 2 bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_clock.h"
#include "backend.h"
#include "chat_template.h"
#include "engine.h"
#include "gguf.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

#define PROG "sluice-generate"
#define MAX_PROMPT_BYTES (1u << 20)
#define MAX_TEMPLATE_BYTES (64u << 10)

typedef struct options {
    const char *model;
    const char *prompt;
    const char *chat;
    const char *system;
    const char *dump_logits;
    const char *backend;
    const char *template_name;
    uint32_t max_tokens;
    float temperature;
    float top_p;
    int32_t top_k;
    uint64_t seed;
    bool seed_set;
    bool greedy;
    bool ignore_eos;
    bool json;
    bool tokenize;
    int threads;
    wk_dtype kv_dtype;
} options;

typedef struct gen_state {
    bool stream;
    int32_t *ids; /* (cap_ids) */
    uint32_t n_ids;
    uint32_t cap_ids;
    char *text; /* (cap_text) */
    size_t text_len;
    size_t cap_text;
    bool done;
    bool failed;
    wk_finish_reason reason;
    wk_usage usage;
    wk_timing timing;
    cm_err err;
    char message[256];
} gen_state;

static void usage(FILE *f) {
    fprintf(f, "usage: " PROG " --model PATH (--prompt TEXT | --chat MESSAGE) [--system TEXT]\n"
               "         [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]\n"
               "         [--greedy] [--ignore-eos] [--json] [--dump-logits FILE] [--tokenize]\n"
               "         [--backend cpu|cuda] [--threads N] [--kv-dtype f16|f32]"
               " [--template NAME]\n");
}

static int fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, PROG ": error: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out) {
    if (s == NULL || *s == '\0' || *s == '-')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float lo, float hi, float *out) {
    if (s == NULL || *s == '\0')
        return false;
    char *end = NULL;
    errno = 0;
    float v = strtof(s, &end);
    if (errno != 0 || *end != '\0' || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

/* parse_args returns 0 ok, 2 bad usage (message printed), -1 for --help. */
static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof(*o));
    o->max_tokens = 128;
    o->temperature = 0.8f;
    o->top_p = 1.0f;
    o->backend = "cpu";
    o->kv_dtype = WK_DTYPE_F16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        uint64_t u = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return -1;
        } else if (strcmp(a, "--model") == 0) {
            o->model = v;
        } else if (strcmp(a, "--prompt") == 0) {
            o->prompt = v;
        } else if (strcmp(a, "--chat") == 0) {
            o->chat = v;
        } else if (strcmp(a, "--system") == 0) {
            o->system = v;
        } else if (strcmp(a, "--dump-logits") == 0) {
            o->dump_logits = v;
        } else if (strcmp(a, "--backend") == 0) {
            o->backend = v;
        } else if (strcmp(a, "--template") == 0) {
            o->template_name = v;
        } else if (strcmp(a, "--max-tokens") == 0) {
            if (!parse_u64(v, 1u << 20, &u) || u == 0)
                goto bad_value;
            o->max_tokens = (uint32_t)u;
        } else if (strcmp(a, "--temperature") == 0) {
            if (!parse_float(v, 0.0f, 100.0f, &o->temperature))
                goto bad_value;
        } else if (strcmp(a, "--top-p") == 0) {
            if (!parse_float(v, 0.0f, 1.0f, &o->top_p) || o->top_p == 0.0f)
                goto bad_value;
        } else if (strcmp(a, "--top-k") == 0) {
            if (!parse_u64(v, 1u << 24, &u))
                goto bad_value;
            o->top_k = (int32_t)u;
        } else if (strcmp(a, "--seed") == 0) {
            if (!parse_u64(v, UINT64_MAX, &u))
                goto bad_value;
            o->seed = u;
            o->seed_set = true;
        } else if (strcmp(a, "--threads") == 0) {
            if (!parse_u64(v, 1024, &u))
                goto bad_value;
            o->threads = (int)u;
        } else if (strcmp(a, "--kv-dtype") == 0) {
            if (v != NULL && strcmp(v, "f16") == 0)
                o->kv_dtype = WK_DTYPE_F16;
            else if (v != NULL && strcmp(v, "f32") == 0)
                o->kv_dtype = WK_DTYPE_F32;
            else
                goto bad_value;
        } else {
            takes = false;
            if (strcmp(a, "--greedy") == 0)
                o->greedy = true;
            else if (strcmp(a, "--ignore-eos") == 0)
                o->ignore_eos = true;
            else if (strcmp(a, "--json") == 0)
                o->json = true;
            else if (strcmp(a, "--tokenize") == 0)
                o->tokenize = true;
            else {
                fprintf(stderr, PROG ": unknown option '%s'\n", a);
                usage(stderr);
                return 2;
            }
        }
        if (takes) {
            if (v == NULL) {
                fprintf(stderr, PROG ": option %s needs a value\n", a);
                return 2;
            }
            i++;
        }
        continue;
    bad_value:
        fprintf(stderr, PROG ": bad value for %s: '%s'\n", a, v != NULL ? v : "");
        return 2;
    }
    if (o->model == NULL) {
        fprintf(stderr, PROG ": --model is required\n");
        usage(stderr);
        return 2;
    }
    if ((o->prompt == NULL) == (o->chat == NULL)) {
        fprintf(stderr, PROG ": give exactly one of --prompt and --chat\n");
        usage(stderr);
        return 2;
    }
    if (o->system != NULL && o->chat == NULL) {
        fprintf(stderr, PROG ": --system needs --chat\n");
        return 2;
    }
    if (o->greedy)
        o->temperature = 0.0f;
    return 0;
}

/* ---- output ----------------------------------------------------------------------------- */

static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f); /* the engine emits valid UTF-8 only */
        }
    }
    fputc('"', f);
}

static void json_ids(FILE *f, const int32_t *ids, size_t n) {
    fputc('[', f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, i > 0 ? ",%d" : "%d", ids[i]);
    fputc(']', f);
}

static const char *finish_name(wk_finish_reason r) {
    switch (r) {
    case WK_FINISH_STOP:
        return "stop";
    case WK_FINISH_LENGTH:
        return "length";
    case WK_FINISH_CANCELLED:
        return "cancelled";
    case WK_FINISH_ERROR:
        return "error";
    default:
        return "none";
    }
}

static void on_event(const wk_event *ev, void *arg) {
    gen_state *st = arg;
    if (ev->kind == WK_EVENT_TOKENS) {
        for (uint32_t i = 0; i < ev->n_tokens && st->n_ids < st->cap_ids; i++)
            st->ids[st->n_ids++] = ev->token_ids[i];
    } else if (ev->kind == WK_EVENT_FINISHED) {
        st->done = true;
        st->reason = ev->finish_reason;
        st->usage = ev->usage;
        st->timing = ev->timing;
    } else {
        st->done = true;
        st->failed = true;
        st->err = ev->err;
        snprintf(st->message, sizeof(st->message), "%s", ev->message ? ev->message : "");
    }
    if (ev->text_len > 0) {
        if (st->stream) {
            fwrite(ev->text, 1, ev->text_len, stdout);
            fflush(stdout);
        }
        size_t n = ev->text_len;
        if (n > st->cap_text - st->text_len)
            n = st->cap_text - st->text_len;
        memcpy(st->text + st->text_len, ev->text, n);
        st->text_len += n;
    }
}

/* ---- prompt ----------------------------------------------------------------------------- */

/* build_prompt_text renders --chat with the model's template or copies --prompt. *out is
 * malloc'd (caller frees). *template_bos: the text already carries the template's BOS. */
static int build_prompt_text(const options *o, const wk_gguf *g, char **out, bool *template_bos) {
    *template_bos = false;
    if (o->prompt != NULL) {
        size_t n = strlen(o->prompt);
        if (n > MAX_PROMPT_BYTES)
            return fail("prompt too long: %s bytes (the limit is 1 MiB)%s", "over 1048576", "");
        *out = strdup(o->prompt);
        return *out == NULL ? fail("out of memory%s%s", "", "") : 0;
    }
    wk_gguf_str tpl = {0};
    char *tpl_text = NULL;
    if (wk_gguf_get_str(g, "tokenizer.chat_template", &tpl) == CM_OK) {
        if (tpl.len > MAX_TEMPLATE_BYTES)
            return fail("chat template in the model is too large%s%s", "", "");
        tpl_text = malloc(tpl.len + 1);
        if (tpl_text == NULL)
            return fail("out of memory%s%s", "", "");
        memcpy(tpl_text, tpl.ptr, tpl.len);
        tpl_text[tpl.len] = '\0';
    }
    wk_chat_template t;
    char err[256];
    cm_err rv = wk_chat_template_detect(tpl_text, o->template_name, &t, err, sizeof(err));
    free(tpl_text);
    if (rv != CM_OK)
        return fail("%s%s", err, "");
    wk_chat_message msgs[2];
    size_t n = 0;
    if (o->system != NULL) {
        msgs[n].role = "system";
        msgs[n].content = o->system;
        n++;
    }
    msgs[n].role = "user";
    msgs[n].content = o->chat;
    n++;
    size_t cap = strlen(o->chat) + (o->system ? strlen(o->system) : 0) + 4096;
    if (cap > MAX_PROMPT_BYTES + 4096)
        return fail("prompt too long: over %s bytes%s", "1048576", "");
    char *buf = malloc(cap);
    if (buf == NULL)
        return fail("out of memory%s%s", "", "");
    size_t written = 0;
    rv = wk_chat_render(&t, msgs, n, 1, buf, cap, &written, err, sizeof(err));
    if (rv != CM_OK) {
        free(buf);
        return fail("chat template: %s%s", err, "");
    }
    *template_bos = t.bos_text[0] != '\0';
    *out = buf;
    return 0;
}

static int tokenize_prompt(const options *o, const wk_tokenizer *tok, const char *text,
                           bool template_bos, uint32_t max_tokens, int32_t **ids_out,
                           uint32_t *n_out) {
    size_t len = strlen(text);
    if (!wk_utf8_valid(text, len))
        return fail("prompt is not valid UTF-8%s%s", "", "");
    int32_t *ids = malloc((size_t)max_tokens * sizeof(*ids));
    if (ids == NULL)
        return fail("out of memory%s%s", "", "");
    bool add_bos = wk_tokenizer_add_bos(tok) && !template_bos;
    size_t n = 0;
    (void)o;
    cm_err rv = wk_tokenizer_encode(tok, text, len, add_bos, true, ids, max_tokens, &n);
    if (rv == CM_ERR_LIMIT) {
        free(ids);
        char lim[32];
        snprintf(lim, sizeof(lim), "%u", max_tokens);
        return fail("prompt too long: more than %s tokens (the model's context)%s", lim, "");
    }
    if (rv != CM_OK) {
        free(ids);
        return fail("cannot tokenize the prompt: %s%s", cm_strerror(rv), "");
    }
    /* The BOS we added must not double one the text already starts with; a BOS we did not
     * add is the user's (SmolLM2's BOS is <|im_start|>, which prompts may legitimately
     * repeat) and stays. */
    int32_t bos = wk_tokenizer_bos(tok);
    if (add_bos && n >= 2 && bos >= 0 && ids[0] == bos && ids[1] == bos) {
        memmove(ids, ids + 1, (n - 1) * sizeof(*ids));
        n--;
    }
    if (n == 0) {
        free(ids);
        return fail("prompt is empty after tokenization%s%s", "", "");
    }
    *ids_out = ids;
    *n_out = (uint32_t)n;
    return 0;
}

static int write_logits(const char *path, const float *logits, uint32_t n) {
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return fail("cannot write %s: %s", path, strerror(errno));
    /* Little-endian f32: the host order on every machine Sluice builds for (x86-64, arm64). */
    size_t w = fwrite(logits, sizeof(float), n, f);
    int rc = fclose(f);
    if (w != n || rc != 0)
        return fail("cannot write %s: %s", path, strerror(errno));
    return 0;
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc == -1) {
        usage(stdout);
        return 0;
    }
    if (rc != 0)
        return rc;

    int64_t t0 = cm_clock_mono_ns();
    char err[512];
    wk_gguf *g = NULL;
    wk_model model;
    memset(&model, 0, sizeof(model));
    wk_tokenizer *tok = NULL;
    wk_engine *e = NULL;
    char *text = NULL;
    int32_t *prompt = NULL;
    float *logits = NULL;
    gen_state st;
    memset(&st, 0, sizeof(st));
    rc = 1;

    const wk_backend_ops *ops =
        wk_backend_register_linked() == CM_OK ? wk_backend_find(o.backend) : NULL;
    if (ops == NULL) {
        rc = fail("backend '%s' is not built into this binary%s", o.backend, "");
        goto out;
    }
    if (wk_gguf_open(o.model, &g, err, sizeof(err)) != CM_OK) {
        rc = fail("cannot load model %s: %s", o.model, err);
        goto out;
    }
    if (wk_model_load(g, &model, err, sizeof(err)) != CM_OK) {
        rc = fail("cannot load model %s: %s", o.model, err);
        goto out;
    }
    if (wk_tokenizer_load(g, &tok, err, sizeof(err)) != CM_OK) {
        rc = fail("cannot load the tokenizer of %s: %s", o.model, err);
        goto out;
    }
    bool template_bos = false;
    if (build_prompt_text(&o, g, &text, &template_bos) != 0)
        goto out;
    uint32_t n_ctx = model.hp.n_ctx_train;
    uint32_t n_prompt = 0;
    if (tokenize_prompt(&o, tok, text, template_bos, n_ctx, &prompt, &n_prompt) != 0)
        goto out;
    if (o.tokenize) {
        printf("{\"token_ids\":");
        json_ids(stdout, prompt, n_prompt);
        printf("}\n");
        rc = 0;
        goto out;
    }

    wk_engine_config cfg;
    wk_engine_config_defaults(&cfg);
    cfg.backend = ops;
    cfg.n_threads = o.threads;
    cfg.kv_dtype = o.kv_dtype;
    cfg.max_running = 1;
    cfg.max_waiting = 1;
    /* One sequence: enough KV for all of it, a little over. */
    cfg.kv_cache_bytes =
        ((uint64_t)n_prompt + o.max_tokens + 64) * wk_kv_bytes_per_token(&model.hp, cfg.kv_dtype);
    if (wk_engine_create(&model, tok, &cfg, &e, err, sizeof(err)) != CM_OK) {
        rc = fail("cannot start the engine: %s%s", err, "");
        goto out;
    }
    double load_ms = (double)(cm_clock_mono_ns() - t0) / 1e6;

    uint32_t room = wk_engine_max_context(e) > n_prompt ? wk_engine_max_context(e) - n_prompt : 0;
    if (room == 0) {
        char lim[64];
        snprintf(lim, sizeof(lim), "%u tokens, the context holds %u", n_prompt,
                 wk_engine_max_context(e));
        rc = fail("prompt too long: %s%s", lim, "");
        goto out;
    }
    uint32_t max_tokens = o.max_tokens < room ? o.max_tokens : room;
    st.stream = !o.json;
    st.cap_ids = max_tokens + 1;
    st.ids = malloc((size_t)st.cap_ids * sizeof(*st.ids));
    st.cap_text = (size_t)max_tokens * 64 + 1024;
    st.text = malloc(st.cap_text);
    if (o.dump_logits != NULL)
        logits = malloc((size_t)model.hp.n_vocab * sizeof(*logits));
    if (st.ids == NULL || st.text == NULL || (o.dump_logits != NULL && logits == NULL)) {
        rc = fail("out of memory%s%s", "", "");
        goto out;
    }

    wk_request req;
    memset(&req, 0, sizeof(req));
    req.id = 1;
    req.priority = WK_PRIORITY_INTERACTIVE;
    req.prompt = prompt;
    req.n_prompt = n_prompt;
    req.max_tokens = max_tokens;
    wk_sampling_defaults(&req.sampling);
    req.sampling.temperature = o.temperature;
    req.sampling.top_p = o.top_p;
    req.sampling.top_k = o.top_k;
    req.sampling.seed = o.seed_set ? o.seed : (uint64_t)cm_clock_unix_ms();
    req.ignore_eos = o.ignore_eos;
    req.cb = on_event;
    req.cb_arg = &st;
    req.prompt_logits_out = logits;
    cm_err rv = wk_engine_submit(e, &req, err, sizeof(err));
    if (rv != CM_OK) {
        rc = fail("request rejected: %s%s", err, "");
        goto out;
    }
    while (!st.done) {
        bool did = false;
        rv = wk_engine_step(e, &did);
        if (rv != CM_OK && !st.done) {
            rc = fail("engine step failed: %s%s", cm_strerror(rv), "");
            goto out;
        }
    }
    if (st.failed) {
        rc = fail("generation failed: %s (%s)", st.message, cm_strerror(st.err));
        goto out;
    }
    if (o.dump_logits != NULL && write_logits(o.dump_logits, logits, model.hp.n_vocab) != 0)
        goto out;

    uint32_t computed = st.usage.prompt_tokens - st.usage.cached_prompt_tokens;
    double prefill_tps =
        st.timing.prefill_ms > 0 ? (double)computed * 1000.0 / st.timing.prefill_ms : 0.0;
    /* The first token comes out of prefill; decode produced the rest. */
    double decode_tps =
        st.timing.decode_ms > 0 && st.usage.completion_tokens > 1
            ? (double)(st.usage.completion_tokens - 1) * 1000.0 / st.timing.decode_ms
            : 0.0;
    if (o.json) {
        printf("{\"text\":");
        json_string(stdout, st.text, st.text_len);
        printf(",\"token_ids\":");
        json_ids(stdout, st.ids, st.n_ids);
        printf(",\"prompt_tokens\":%u,\"completion_tokens\":%u,\"finish_reason\":\"%s\","
               "\"load_ms\":%.1f,\"prefill_ms\":%.1f,\"decode_ms\":%.1f,"
               "\"prefill_tokens_per_s\":%.1f,\"decode_tokens_per_s\":%.1f}\n",
               st.usage.prompt_tokens, st.usage.completion_tokens, finish_name(st.reason), load_ms,
               st.timing.prefill_ms, st.timing.decode_ms, prefill_tps, decode_tps);
    } else {
        printf("\n");
        fprintf(stderr,
                "[%s] prompt %u tokens, completion %u tokens (%s); load %.0f ms, "
                "prefill %.1f tok/s, decode %.1f tok/s\n",
                PROG, st.usage.prompt_tokens, st.usage.completion_tokens, finish_name(st.reason),
                load_ms, prefill_tps, decode_tps);
    }
    rc = 0;

out:
    wk_engine_destroy(e);
    free(st.ids);
    free(st.text);
    free(logits);
    free(prompt);
    free(text);
    wk_tokenizer_free(tok);
    wk_model_fini(&model);
    wk_gguf_close(g);
    return rc;
}
