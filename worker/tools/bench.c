/*
 * sluice-bench: engine and backend throughput figures, printed as text.
 *
 *   sluice-bench (--model PATH | --synthetic llama3-8b|tiny) [--concurrency 1,4,16,64]
 *     [--backend cpu|cuda] [--threads N] [--decode-tokens N] [--wtype q4_1|q8_0|f16|...]
 *     [--only decode]
 *
 * Prints: load time; prefill tokens/s for a 512-token prompt; single-stream decode tokens/s;
 * the memory-bandwidth floor for decode measured in the same run (weight bytes read per token
 * / multi-threaded read bandwidth) and decode as a percentage of it; aggregate decode tokens/s
 * and per-step latency at each concurrency; prefill throughput without and with a 90% shared
 * prefix (prefix cache); KV bytes per token against 2 x n_layer x n_kv_heads x head_dim x
 * bytes; and last `batching gain at 16: X.XX` (aggregate decode tokens/s at 16 / at 1).
 * `--only decode` stops after single-stream decode, its two ceilings and its profile (a
 * minute or two at 8B shapes on 2 cores, where the prefill figures take several).
 *
 * Synthetic mode builds the model with wk_model_synthetic (random weights, no file, no
 * tokenizer) and feeds random token ids, so it runs on a bare GPU machine.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cm_clock.h"
#include "backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_panel.h"
#include "engine.h"
#include "gguf.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

#define PROG "sluice-bench"
#define MAX_CONC 16
#define PREFILL_TOKENS 512
#define SWEEP_PROMPT 16
/* Single-stream decode runs, each paired with a bandwidth measurement (median_of). */
#define DECODE_ROUNDS 5
#define PREFIX_REQUESTS 8

typedef struct options {
    const char *model;
    const char *synthetic;
    const char *backend;
    uint32_t conc[MAX_CONC];
    uint32_t n_conc;
    int threads;
    uint32_t decode_tokens;
    wk_dtype wtype;
    bool decode_only; /* --only decode */
} options;

/* ---- tiny request runner ---------------------------------------------------------------- */

typedef struct tracker {
    uint32_t n_done;
    uint32_t n_failed;
    wk_timing timing; /* of the last finished request */
    wk_usage usage;
    char message[160];
} tracker;

static void on_event(const wk_event *ev, void *arg) {
    tracker *t = arg;
    if (ev->kind == WK_EVENT_FINISHED) {
        t->n_done++;
        t->timing = ev->timing;
        t->usage = ev->usage;
    } else if (ev->kind == WK_EVENT_ERROR) {
        t->n_done++;
        t->n_failed++;
        snprintf(t->message, sizeof(t->message), "%s (%s)", ev->message, cm_strerror(ev->err));
    }
}

typedef struct bench {
    wk_engine *e;
    const wk_model *m;
    uint32_t vocab_lo, vocab_hi; /* random ids come from [lo, hi) */
    uint64_t rng;
    uint64_t next_id;
    int32_t *prompt; /* (PREFILL_TOKENS) scratch */
} bench;

static uint32_t rnd(bench *b) {
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return (uint32_t)(b->rng >> 16);
}

static void random_prompt(bench *b, int32_t *out, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        out[i] = (int32_t)(b->vocab_lo + rnd(b) % (b->vocab_hi - b->vocab_lo));
}

static int submit(bench *b, const int32_t *prompt, uint32_t n, uint32_t max_tokens, tracker *t) {
    wk_request req;
    memset(&req, 0, sizeof(req));
    req.id = ++b->next_id;
    req.priority = WK_PRIORITY_INTERACTIVE;
    req.prompt = prompt;
    req.n_prompt = n;
    req.max_tokens = max_tokens;
    wk_sampling_defaults(&req.sampling);
    req.sampling.temperature = 0.0f;
    req.ignore_eos = true;
    req.cb = on_event;
    req.cb_arg = t;
    char err[256];
    cm_err rv = wk_engine_submit(b->e, &req, err, sizeof(err));
    if (rv != CM_OK) {
        fprintf(stderr, PROG ": error: submit: %s\n", err);
        return 1;
    }
    return 0;
}

static int drain(bench *b) {
    while (wk_engine_has_work(b->e)) {
        bool did = false;
        cm_err rv = wk_engine_step(b->e, &did);
        if (rv != CM_OK) {
            fprintf(stderr, PROG ": error: step: %s\n", cm_strerror(rv));
            return 1;
        }
    }
    return 0;
}

/* run_one: one request to completion; returns its timing/usage in t. */
static int run_one(bench *b, const int32_t *prompt, uint32_t n, uint32_t max_tokens, tracker *t) {
    memset(t, 0, sizeof(*t));
    if (submit(b, prompt, n, max_tokens, t) != 0 || drain(b) != 0)
        return 1;
    if (t->n_failed > 0) {
        fprintf(stderr, PROG ": error: request failed: %s\n", t->message);
        return 1;
    }
    return 0;
}

/* ---- memory bandwidth ------------------------------------------------------------------- */

typedef struct bw_job {
    const uint64_t *p;
    size_t n_words;
    uint64_t sink;
} bw_job;

/* One thread's slice, read with the CPU backend's bandwidth probe (32-byte loads from the
 * AVX2 level up: about twice the portable loop's bandwidth there, and how the weight kernels
 * read). */
static void *bw_read(void *arg) {
    bw_job *j = arg;
    j->sink = wk_cpu_read_bytes(j->p, j->n_words * sizeof(uint64_t));
    return NULL;
}

/* The median of the DECODE_ROUNDS values v (an odd count). */
static double median_of(const double v[DECODE_ROUNDS]) {
    double s[DECODE_ROUNDS];
    memcpy(s, v, sizeof(s));
    for (int i = 1; i < DECODE_ROUNDS; i++) { /* insertion sort: a handful of values */
        for (int j = i; j > 0 && s[j - 1] > s[j]; j--) {
            double x = s[j];
            s[j] = s[j - 1];
            s[j - 1] = x;
        }
    }
    return s[DECODE_ROUNDS / 2];
}

/* best_compute_rate: the best of three of the backend's compute_weights runs on n_threads
 * threads, in bytes/s; 0 when the backend has none. */
static double best_compute_rate(bench *b, int n_threads) {
    double best = 0.0;
    for (int i = 0; i < 3; i++) {
        uint64_t bytes = 0;
        int64_t ns = 0;
        if (wk_engine_compute_weights(b->e, n_threads, &bytes, &ns) != CM_OK || bytes == 0 ||
            ns <= 0)
            return 0.0;
        double r = (double)bytes * 1e9 / (double)ns;
        best = r > best ? r : best;
    }
    return best;
}

/*
 * compute_ceiling prints decode's other ceiling beside the bandwidth floor: the one-token
 * matmul's arithmetic on weights already in cache (the backend's compute_weights), on all the
 * threads and on one, and where decode stands against the lower ceiling. When the arithmetic
 * cannot keep up with the memory (two vCPUs that share one core's units, say), no prefetching
 * reaches the bandwidth floor; when both are far above decode, what holds it back is how well
 * the kernels overlap the two (docs/benchmarks.md, session 8).
 */
static void compute_ceiling(bench *b, int n_threads, double bytes_per_token, double decode_tps,
                            double floor_bw) {
    double all = best_compute_rate(b, n_threads);
    double one = n_threads > 1 ? best_compute_rate(b, 1) : all;
    if (all <= 0.0 || one <= 0.0)
        return;
    double ceil_tps = all / bytes_per_token, floor_tps = floor_bw / bytes_per_token;
    bool compute_bound = ceil_tps < floor_tps;
    printf("decode compute ceiling (one-token matmul on weights in cache): %.1f GB/s on %d "
           "threads = %.1f tokens/s; %.1f GB/s on 1 (%d threads = %.2fx 1)\n",
           all / 1e9, n_threads, ceil_tps, one / 1e9, n_threads, all / one);
    printf("decode at %.0f%% of the lower ceiling (%s here: %.1f tokens/s)\n",
           100.0 * decode_tps / (compute_bound ? ceil_tps : floor_tps),
           compute_bound ? "the arithmetic" : "the bandwidth floor",
           compute_bound ? ceil_tps : floor_tps);
}

/* decode_profile runs one more single-stream decode with the backend's phase profile on and
 * prints where a token's time goes (nothing when the backend has no profile). 0 or -1. */
static int decode_profile(bench *b, uint32_t max_tokens) {
    if (wk_engine_profile(b->e, 1, NULL) != CM_OK)
        return 0;
    tracker t;
    random_prompt(b, b->prompt, SWEEP_PROMPT);
    int rv = run_one(b, b->prompt, SWEEP_PROMPT, max_tokens, &t);
    wk_phases ph;
    if (wk_engine_profile(b->e, 0, &ph) != CM_OK || rv != 0 || ph.steps == 0)
        return rv;
    int64_t total = 0;
    for (uint32_t i = 0; i < ph.n; i++)
        total += ph.ns[i];
    printf("decode time by phase (a profiled run, %.1f us/token):",
           (double)total / 1e3 / (double)ph.steps);
    for (uint32_t i = 0; i < ph.n; i++)
        printf("%s %s %.1f%%", i > 0 ? "," : "", ph.name[i],
               100.0 * (double)ph.ns[i] / (double)total);
    printf("\n");
    return 0;
}

/* cache_note: when a decode step's weight bytes fit in the last-level cache they can stay
 * there from one token to the next, and the floor (the weights' own memory, read right after
 * decode) is then that cache's bandwidth, not DRAM's: says so, with the fresh buffer's figure,
 * so that a small model's share of the floor is not read as a DRAM figure. */
static void cache_note(double bytes_per_token, double floor_bw, double fresh_bw) {
    long llc = 0; /* unknown: no note */
#if defined(_SC_LEVEL3_CACHE_SIZE)
    llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (llc > 0 && bytes_per_token <= (double)llc)
        printf("note: the weights (%.1f MB) fit in the %.1f MB last-level cache, so the floor can "
               "be that cache's (weights' memory %.1f GB/s, a fresh 256 MiB buffer %.1f GB/s); "
               "a model larger than the cache (--synthetic llama3-8b) gives decode against "
               "DRAM\n",
               bytes_per_token / 1e6, (double)llc / 1e6, floor_bw / 1e9, fresh_bw / 1e9);
}

/* read_bandwidth: best of several multi-threaded passes over a buffer much larger than the
 * last-level cache; bytes/s. */
static double read_bandwidth(int n_threads) {
    const size_t bytes = 256u << 20;
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, (size_t)2 << 20, bytes) != 0)
        return 0.0;
#if defined(MADV_HUGEPAGE)
    /* huge pages as the CPU backend's weight panels have: the floor is the best read */
    (void)madvise(buf, bytes, MADV_HUGEPAGE);
#endif
    memset(buf, 1, bytes); /* fault every page in before timing */
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > 256)
        n_threads = 256;
    pthread_t th[256];
    bw_job jobs[256];
    size_t words = bytes / sizeof(uint64_t);
    double best = 0.0;
    for (int pass = 0; pass < 6; pass++) {
        int64_t t0 = cm_clock_mono_ns();
        for (int i = 0; i < n_threads; i++) {
            /* slices start on 64-byte boundaries (aligned vector loads) */
            size_t lo = (words * (size_t)i / (size_t)n_threads) & ~(size_t)7;
            size_t hi = (words * (size_t)(i + 1) / (size_t)n_threads) & ~(size_t)7;
            jobs[i].p = buf + lo;
            jobs[i].n_words = hi - lo;
            if (pthread_create(&th[i], NULL, bw_read, &jobs[i]) != 0) {
                /* No thread: read the slice here, join nothing. */
                bw_read(&jobs[i]);
                th[i] = pthread_self();
            }
        }
        for (int i = 0; i < n_threads; i++)
            if (!pthread_equal(th[i], pthread_self()))
                pthread_join(th[i], NULL);
        double s = (double)(cm_clock_mono_ns() - t0) / 1e9;
        double bw = (double)bytes / s;
        if (bw > best)
            best = bw;
    }
    free(buf);
    return best;
}

/* ---- options ---------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f, "usage: " PROG " (--model PATH | --synthetic llama3-8b|tiny)"
               " [--concurrency 1,4,16,64]\n"
               "         [--backend cpu|cuda] [--threads N] [--decode-tokens N]"
               " [--wtype q4_1|q4_0|q8_0|q4_k|q6_k|f16|f32]\n"
               "         [--only decode]\n");
}

static bool parse_conc(const char *s, options *o) {
    o->n_conc = 0;
    while (s != NULL && *s != '\0') {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || v == 0 || v > 1024 || o->n_conc >= MAX_CONC)
            return false;
        o->conc[o->n_conc++] = (uint32_t)v;
        if (*end == ',')
            end++;
        else if (*end != '\0')
            return false;
        s = end;
    }
    return o->n_conc > 0;
}

static bool parse_wtype(const char *s, wk_dtype *out) {
    return wk_dtype_from_name(s, out);
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof(*o));
    o->backend = "cpu";
    o->decode_tokens = 32;
    o->wtype = WK_DTYPE_Q4_1;
    parse_conc("1,4,16,64", o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        if (v == NULL) {
            fprintf(stderr, PROG ": option %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--model") == 0) {
            o->model = v;
        } else if (strcmp(a, "--synthetic") == 0) {
            o->synthetic = v;
        } else if (strcmp(a, "--backend") == 0) {
            o->backend = v;
        } else if (strcmp(a, "--concurrency") == 0) {
            if (!parse_conc(v, o))
                goto bad;
        } else if (strcmp(a, "--threads") == 0) {
            char *end = NULL;
            long t = strtol(v, &end, 10);
            if (*end != '\0' || t < 0 || t > 1024)
                goto bad;
            o->threads = (int)t;
        } else if (strcmp(a, "--decode-tokens") == 0) {
            char *end = NULL;
            long t = strtol(v, &end, 10);
            if (*end != '\0' || t < 2 || t > 4096)
                goto bad;
            o->decode_tokens = (uint32_t)t;
        } else if (strcmp(a, "--wtype") == 0) {
            if (!parse_wtype(v, &o->wtype))
                goto bad;
        } else if (strcmp(a, "--only") == 0) {
            if (strcmp(v, "decode") != 0)
                goto bad;
            o->decode_only = true;
        } else {
            fprintf(stderr, PROG ": unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, PROG ": bad value for %s: '%s'\n", a, v);
        return 2;
    }
    if ((o->model == NULL) == (o->synthetic == NULL)) {
        fprintf(stderr, PROG ": give exactly one of --model and --synthetic\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

static bool synthetic_hparams(const char *name, wk_hparams *hp) {
    memset(hp, 0, sizeof(*hp));
    hp->rope_style = WK_ROPE_NORM;
    hp->rope_scaling = WK_ROPE_SCALING_NONE;
    hp->rope_scaling_factor = 1.0f;
    hp->rms_eps = 1e-5f;
    if (strcmp(name, "llama3-8b") == 0) {
        hp->n_vocab = 128256;
        hp->n_ctx_train = 8192;
        hp->n_embd = 4096;
        hp->n_layer = 32;
        hp->n_head = 32;
        hp->n_head_kv = 8;
        hp->head_dim = 128;
        hp->n_ff = 14336;
        hp->rope_freq_base = 500000.0f;
        return true;
    }
    if (strcmp(name, "tiny") == 0) {
        hp->n_vocab = 32000;
        hp->n_ctx_train = 4096;
        hp->n_embd = 512;
        hp->n_layer = 8;
        hp->n_head = 8;
        hp->n_head_kv = 4;
        hp->head_dim = 64;
        hp->n_ff = 1536;
        hp->rope_freq_base = 10000.0f;
        return true;
    }
    return false;
}

/* ---- measurements ----------------------------------------------------------------------- */

/* allocated_bytes: heap bytes in use (mmap'd chunks included), whether touched or not. 0 where
 * the C library cannot tell (the caller then reports the figure as not measurable). */
static size_t allocated_bytes(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#else
    return 0;
#endif
}

/* kv_measured: bytes the backend allocates per KV token, from two engines whose KV budgets
 * differ by 256 MiB (device free memory where the backend reports it, else the heap). */
static double kv_measured(const wk_model *m, const wk_tokenizer *tok,
                          const wk_engine_config *base) {
    const uint64_t small = 32ull << 20, big = small + (256ull << 20);
    double mem[2] = {0, 0};
    uint64_t tokens[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        wk_engine_config c = *base;
        c.kv_cache_bytes = i == 0 ? small : big;
        c.max_running = 64;
        size_t free0 = 0, free1 = 0;
        bool device =
            c.backend->free_memory != NULL && c.backend->free_memory(c.device, &free0) == CM_OK;
        size_t heap0 = allocated_bytes();
        wk_engine *e = NULL;
        char err[256];
        if (wk_engine_create(m, tok, &c, &e, err, sizeof(err)) != CM_OK)
            return 0.0;
        wk_engine_stats st;
        wk_engine_get_stats(e, &st);
        tokens[i] = (uint64_t)st.kv_blocks_total * (c.block_tokens ? c.block_tokens : 16);
        if (device && c.backend->free_memory(c.device, &free1) == CM_OK)
            mem[i] = (double)free0 - (double)free1;
        else
            mem[i] = (double)allocated_bytes() - (double)heap0;
        wk_engine_destroy(e);
    }
    if (tokens[1] <= tokens[0])
        return 0.0;
    return (mem[1] - mem[0]) / (double)(tokens[1] - tokens[0]);
}

typedef struct sweep_result {
    double tokens_per_s;
    double step_ms;
    uint32_t steps;
} sweep_result;

/* sweep: c concurrent requests; only steps where every running sequence decodes one token
 * (no prefill in the step) are timed. */
static int sweep(bench *b, uint32_t c, uint32_t decode_tokens, sweep_result *out) {
    memset(out, 0, sizeof(*out));
    tracker t;
    memset(&t, 0, sizeof(t));
    int32_t *prompts = malloc((size_t)c * SWEEP_PROMPT * sizeof(int32_t));
    if (prompts == NULL)
        return 1;
    for (uint32_t i = 0; i < c; i++) {
        random_prompt(b, prompts + (size_t)i * SWEEP_PROMPT, SWEEP_PROMPT);
        if (submit(b, prompts + (size_t)i * SWEEP_PROMPT, SWEEP_PROMPT, decode_tokens, &t) != 0) {
            free(prompts);
            return 1;
        }
    }
    double total_ns = 0.0;
    uint64_t total_tokens = 0;
    while (wk_engine_has_work(b->e)) {
        wk_engine_stats s0, s1;
        wk_engine_get_stats(b->e, &s0);
        bool did = false;
        int64_t t0 = cm_clock_mono_ns();
        cm_err rv = wk_engine_step(b->e, &did);
        int64_t dt = cm_clock_mono_ns() - t0;
        if (rv != CM_OK) {
            free(prompts);
            return 1;
        }
        wk_engine_get_stats(b->e, &s1);
        uint64_t gen = s1.generated_tokens - s0.generated_tokens;
        if (s1.prompt_tokens == s0.prompt_tokens && s0.running == c && gen == c &&
            s0.waiting == 0) {
            total_ns += (double)dt;
            total_tokens += gen;
            out->steps++;
        }
    }
    free(prompts);
    if (t.n_failed > 0) {
        fprintf(stderr, PROG ": error: %s\n", t.message);
        return 1;
    }
    if (out->steps > 0) {
        out->tokens_per_s = (double)total_tokens * 1e9 / total_ns;
        out->step_ms = total_ns / 1e6 / out->steps;
    }
    return 0;
}

/* prefix_run: PREFIX_REQUESTS prompts of PREFILL_TOKENS, one after another (max 1 token);
 * shared = tokens every prompt starts with. Prefill tokens/s counted over the prompt tokens
 * the client sent (cache hits included: that is the point). */
static int prefix_run(bench *b, uint32_t shared, double *tps, double *hit_rate) {
    int32_t *base = malloc(PREFILL_TOKENS * sizeof(int32_t));
    int32_t *p = malloc(PREFILL_TOKENS * sizeof(int32_t));
    if (base == NULL || p == NULL) {
        free(base);
        free(p);
        return 1;
    }
    random_prompt(b, base, PREFILL_TOKENS);
    wk_engine_stats s0, s1;
    wk_engine_get_stats(b->e, &s0);
    int64_t t0 = cm_clock_mono_ns();
    int rc = 0;
    for (int i = 0; i < PREFIX_REQUESTS && rc == 0; i++) {
        memcpy(p, base, shared * sizeof(int32_t));
        random_prompt(b, p + shared, PREFILL_TOKENS - shared);
        tracker t;
        rc = run_one(b, p, PREFILL_TOKENS, 1, &t);
    }
    double s = (double)(cm_clock_mono_ns() - t0) / 1e9;
    wk_engine_get_stats(b->e, &s1);
    *tps = (double)PREFIX_REQUESTS * PREFILL_TOKENS / s;
    uint64_t q = s1.prefix_queries - s0.prefix_queries;
    *hit_rate = q > 0 ? (double)(s1.prefix_hits - s0.prefix_hits) / (double)q : 0.0;
    free(base);
    free(p);
    return rc;
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc == -1)
        return 0;
    if (rc != 0)
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);

    int64_t t0 = cm_clock_mono_ns();
    char err[512];
    wk_gguf *g = NULL;
    wk_model model;
    memset(&model, 0, sizeof(model));
    wk_tokenizer *tok = NULL;
    bench b;
    memset(&b, 0, sizeof(b));
    b.rng = 0x2545f4914f6cdd1dull;
    rc = 1;

    const wk_backend_ops *ops =
        wk_backend_register_linked() == CM_OK ? wk_backend_find(o.backend) : NULL;
    if (ops == NULL) {
        fprintf(stderr, PROG ": error: backend '%s' is not built into this binary\n", o.backend);
        goto out;
    }
    if (o.synthetic != NULL) {
        wk_hparams hp;
        if (!synthetic_hparams(o.synthetic, &hp)) {
            fprintf(stderr, PROG ": error: unknown synthetic model '%s' (llama3-8b, tiny)\n",
                    o.synthetic);
            rc = 2;
            goto out;
        }
        cm_err rv = wk_model_synthetic(&hp, o.wtype, 42, &model);
        if (rv != CM_OK) {
            fprintf(stderr, PROG ": error: synthetic model: %s\n", cm_strerror(rv));
            goto out;
        }
    } else {
        if (wk_gguf_open(o.model, &g, err, sizeof(err)) != CM_OK ||
            wk_model_load(g, &model, err, sizeof(err)) != CM_OK ||
            wk_tokenizer_load(g, &tok, err, sizeof(err)) != CM_OK) {
            fprintf(stderr, PROG ": error: cannot load model %s: %s\n", o.model, err);
            goto out;
        }
    }
    uint32_t max_conc = 1;
    for (uint32_t i = 0; i < o.n_conc; i++)
        if (o.conc[i] > max_conc)
            max_conc = o.conc[i];

    wk_engine_config cfg;
    wk_engine_config_defaults(&cfg);
    cfg.backend = ops;
    cfg.n_threads = o.threads;
    cfg.max_running = max_conc > PREFIX_REQUESTS ? max_conc : PREFIX_REQUESTS;
    cfg.max_waiting = cfg.max_running + 16;
    cfg.max_batch_tokens = cfg.max_running > PREFILL_TOKENS ? cfg.max_running : PREFILL_TOKENS;
    cfg.max_context = 2048;
    /* Room for every sweep sequence plus the prefix runs' cached blocks. */
    uint64_t need_tokens = (uint64_t)max_conc * (SWEEP_PROMPT + o.decode_tokens + 32) +
                           (uint64_t)(PREFIX_REQUESTS + 2) * (PREFILL_TOKENS + 32);
    size_t per_token = wk_kv_bytes_per_token(&model.hp, cfg.kv_dtype);
    cfg.kv_cache_bytes = need_tokens * per_token;
    cfg.kv_cache_fraction = 0;
    if (wk_engine_create(&model, tok, &cfg, &b.e, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, PROG ": error: cannot start the engine: %s\n", err);
        goto out;
    }
    double load_ms = (double)(cm_clock_mono_ns() - t0) / 1e6;
    b.m = &model;
    b.vocab_lo = 3;
    b.vocab_hi = tok != NULL ? wk_tokenizer_n_vocab(tok) : model.hp.n_vocab;
    if (b.vocab_hi > model.hp.n_vocab)
        b.vocab_hi = model.hp.n_vocab;
    b.prompt = malloc(PREFILL_TOKENS * sizeof(int32_t));
    if (b.prompt == NULL)
        goto out;
    int n_threads = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);

    printf("model: %s (%s), %u layers, n_embd %u, %u heads / %u kv heads, vocab %u, "
           "weights %.1f MB\n",
           model.name, o.synthetic != NULL ? "synthetic" : o.model, model.hp.n_layer,
           model.hp.n_embd, model.hp.n_head, model.hp.n_head_kv, model.hp.n_vocab,
           (double)model.weight_bytes / 1e6);
    printf("backend: %s, threads %d, kv %s", ops->name, n_threads, wk_dtype_name(cfg.kv_dtype));
    if (ops == &wk_backend_cpu) {
        /* which CPU kernels ran: figures differ several-fold between them */
        static const char *const isa[] = {"scalar", "avx2", "avx512"};
        wk_dtype wt = model.layers[0].w_gate.type;
        printf(", kernels %s, %s weights %s", isa[wk_cpu_kernels_isa()], wk_dtype_name(wt),
               wk_cpu_panel_type(wt) ? "in 16-row panels" : "in GGUF rows");
    }
    printf("\n");
    printf("load: %.0f ms\n", load_ms);

    /* Warm-up: first touches of weights and scratch are not what we measure. */
    tracker t;
    random_prompt(&b, b.prompt, 32);
    if (run_one(&b, b.prompt, 32, 4, &t) != 0)
        goto out;

    /* Prefill: one 512-token prompt, best of 2. */
    if (!o.decode_only) {
        double prefill_tps = 0.0;
        for (int i = 0; i < 2; i++) {
            random_prompt(&b, b.prompt, PREFILL_TOKENS);
            if (run_one(&b, b.prompt, PREFILL_TOKENS, 1, &t) != 0)
                goto out;
            double tps = (double)PREFILL_TOKENS * 1000.0 / t.timing.prefill_ms;
            if (tps > prefill_tps)
                prefill_tps = tps;
        }
        printf("prefill (%d-token prompt): %.1f tokens/s\n", PREFILL_TOKENS, prefill_tps);
    }

    /* Single-stream decode against the bandwidth floor: every weight is read once per token,
     * except an untied embedding table (one row gathered). The floor's bandwidth is that of
     * reading the very memory the weights live in (the backend's read_weights: plain loads of
     * the repacked weights on its threads, best of three), where the backend has it: on a VM
     * a fresh buffer can sit on faster or slower memory than the weights (31 to 47 GB/s from
     * one process to the next on the 2-core development VM); the fresh buffer's figure is
     * printed beside it. Both drift by tens of percent within a minute on a shared machine,
     * so each of DECODE_ROUNDS rounds pairs a decode run with reads right after it, and the
     * medians are printed. */
    double bytes_per_token = (double)model.weight_bytes;
    if (!model.hp.tied_embeddings)
        bytes_per_token -= (double)model.tok_embd.nbytes;
    double round_tps[DECODE_ROUNDS], round_bw[DECODE_ROUNDS], round_wbw[DECODE_ROUNDS];
    double round_share[DECODE_ROUNDS];
    uint32_t decoded = 0;
    bool have_wbw = true;
    for (int r = 0; r < DECODE_ROUNDS; r++) {
        random_prompt(&b, b.prompt, SWEEP_PROMPT);
        if (run_one(&b, b.prompt, SWEEP_PROMPT, o.decode_tokens * 2, &t) != 0)
            goto out;
        decoded = t.usage.completion_tokens - 1;
        round_tps[r] = (double)decoded * 1000.0 / t.timing.decode_ms;
        round_wbw[r] = 0.0;
        for (int i = 0; i < 3 && have_wbw; i++) {
            uint64_t wbytes = 0;
            int64_t wns = 0;
            if (wk_engine_read_weights(b.e, &wbytes, &wns) != CM_OK || wbytes == 0 || wns <= 0) {
                have_wbw = false;
                break;
            }
            double bw = (double)wbytes * 1e9 / (double)wns;
            round_wbw[r] = bw > round_wbw[r] ? bw : round_wbw[r];
        }
        round_bw[r] = read_bandwidth(n_threads);
        double floor_bw = have_wbw ? round_wbw[r] : round_bw[r];
        round_share[r] = round_tps[r] * bytes_per_token / floor_bw;
    }
    double decode_tps = median_of(round_tps), bw = median_of(round_bw);
    double floor_bw = have_wbw ? median_of(round_wbw) : bw;
    printf("decode (single stream, %u tokens): %.1f tokens/s (%.2f ms/token)\n", decoded,
           decode_tps, 1000.0 / decode_tps);
    printf("memory read bandwidth (%d threads): %.1f GB/s", n_threads, bw / 1e9);
    if (have_wbw)
        printf("; reading the weights' own memory: %.1f GB/s", floor_bw / 1e9);
    printf("; weight bytes per token %.1f MB\n", bytes_per_token / 1e6);
    printf("decode bandwidth floor: %.1f tokens/s; decode at %.0f%% of it (rounds:",
           floor_bw / bytes_per_token, 100.0 * median_of(round_share));
    for (int r = 0; r < DECODE_ROUNDS; r++)
        printf("%s %.0f%%", r > 0 ? "," : "", 100.0 * round_share[r]);
    printf(": each decode run against the %s read right after it; medians above)\n",
           have_wbw ? "weights' memory" : "bandwidth");
    if (ops->free_memory != NULL)
        printf("note: %s weights live in device memory; the floor above uses host bandwidth\n",
               ops->name);
    else
        cache_note(bytes_per_token, floor_bw, bw);
    compute_ceiling(&b, n_threads, bytes_per_token, decode_tps, floor_bw);
    if (decode_profile(&b, o.decode_tokens * 2) != 0)
        goto out;
    if (o.decode_only) {
        rc = 0;
        goto out;
    }

    /* Concurrency sweep. */
    double tps_at_1 = 0.0, tps_at_16 = 0.0;
    for (uint32_t i = 0; i < o.n_conc; i++) {
        sweep_result r;
        if (sweep(&b, o.conc[i], o.decode_tokens, &r) != 0)
            goto out;
        printf("concurrency %3u: aggregate decode %.1f tokens/s, step latency %.2f ms "
               "(%u steps)\n",
               o.conc[i], r.tokens_per_s, r.step_ms, r.steps);
        if (o.conc[i] == 1)
            tps_at_1 = r.tokens_per_s;
        if (o.conc[i] == 16)
            tps_at_16 = r.tokens_per_s;
    }

    /* Prefix cache. */
    double cold_tps, warm_tps, cold_hits, warm_hits;
    uint32_t shared = PREFILL_TOKENS * 9 / 10;
    if (prefix_run(&b, 0, &cold_tps, &cold_hits) != 0 ||
        prefix_run(&b, shared, &warm_tps, &warm_hits) != 0)
        goto out;
    printf("prefill, %d x %d-token prompts: no shared prefix %.1f tokens/s (hit rate %.0f%%); "
           "90%% shared prefix %.1f tokens/s (hit rate %.0f%%): %.2fx\n",
           PREFIX_REQUESTS, PREFILL_TOKENS, cold_tps, 100.0 * cold_hits, warm_tps,
           100.0 * warm_hits, warm_tps / cold_tps);

    /* KV bytes per token, measured with two more engines once this one is gone (so a GPU
     * never holds more than two copies of the weights). */
    size_t engine_per_token = wk_engine_kv_bytes_per_token(b.e);
    wk_engine_destroy(b.e);
    b.e = NULL;
    size_t el = cfg.kv_dtype == WK_DTYPE_F32 ? 4 : 2;
    double theory = 2.0 * model.hp.n_layer * model.hp.n_head_kv * model.hp.head_dim * (double)el;
    double measured = kv_measured(&model, tok, &cfg);
    if (measured > 0)
        printf("KV bytes per token: %.0f measured (allocation delta), %zu engine, %.0f "
               "theoretical (2 x %u x %u x %u x %zu): %+.1f%%\n",
               measured, engine_per_token, theory, model.hp.n_layer, model.hp.n_head_kv,
               model.hp.head_dim, el, 100.0 * (measured - theory) / theory);
    else
        printf("KV bytes per token: %zu engine, %.0f theoretical (allocation not measurable)\n",
               engine_per_token, theory);

    if (tps_at_1 > 0 && tps_at_16 > 0)
        printf("batching gain at 16: %.2f\n", tps_at_16 / tps_at_1);
    else
        printf("batching gain at 16: n/a (needs 1 and 16 in --concurrency)\n");
    rc = 0;

out:
    wk_engine_destroy(b.e);
    free(b.prompt);
    wk_tokenizer_free(tok);
    wk_model_fini(&model);
    wk_gguf_close(g);
    return rc;
}
