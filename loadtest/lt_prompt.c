#include "lt_prompt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Common short English words: each is a single token (with its leading space) for the BPE
 * vocabularies of the usual chat models, so N words make a prompt of about N tokens.
 */
static const char *const words[] = {
    "the",     "of",     "and",    "to",     "in",      "is",      "you",       "that",    "it",
    "he",      "was",    "for",    "on",     "are",     "as",      "with",      "his",     "they",
    "at",      "be",     "this",   "have",   "from",    "or",      "one",       "had",     "by",
    "word",    "but",    "not",    "what",   "all",     "were",    "we",        "when",    "your",
    "can",     "said",   "there",  "use",    "an",      "each",    "which",     "she",     "do",
    "how",     "their",  "if",     "will",   "up",      "other",   "about",     "out",     "many",
    "then",    "them",   "these",  "so",     "some",    "her",     "would",     "make",    "like",
    "him",     "into",   "time",   "has",    "look",    "two",     "more",      "write",   "go",
    "see",     "number", "no",     "way",    "could",   "people",  "my",        "than",    "first",
    "water",   "been",   "call",   "who",    "oil",     "its",     "now",       "find",    "long",
    "down",    "day",    "did",    "get",    "come",    "made",    "may",       "part",    "over",
    "new",     "sound",  "take",   "only",   "little",  "work",    "know",      "place",   "year",
    "live",    "me",     "back",   "give",   "most",    "very",    "after",     "thing",   "our",
    "just",    "name",   "good",   "man",    "think",   "say",     "great",     "where",   "help",
    "through", "much",   "before", "line",   "right",   "too",     "mean",      "old",     "any",
    "same",    "tell",   "boy",    "follow", "came",    "want",    "show",      "also",    "around",
    "form",    "three",  "small",  "set",    "put",     "end",     "does",      "another", "well",
    "large",   "must",   "big",    "even",   "such",    "because", "turn",      "here",    "why",
    "ask",     "went",   "men",    "read",   "need",    "land",    "different", "home",    "us",
    "move",    "try",    "kind",   "hand",   "picture", "again",   "change",    "off",     "play",
};
#define N_WORDS (sizeof(words) / sizeof(words[0]))

static void prompt_zero(lt_prompt *p) {
    memset(p, 0, sizeof(*p));
}

void lt_prompt_fini(lt_prompt *p) {
    free(p->text);
    if (p->messages != NULL) {
        json_decref(p->messages);
    }
    prompt_zero(p);
}

void lt_prompt_source_fini(lt_prompt_source *src) {
    for (size_t i = 0; i < src->n_file_prompts; i++) {
        lt_prompt_fini(&src->file_prompts[i]);
    }
    free(src->file_prompts);
    free(src->shared_words);
    memset(src, 0, sizeof(*src));
}

/* append_words writes n random words (each with a leading space) at dst; returns bytes. */
static size_t append_words(lt_rng *rng, char *dst, uint32_t n) {
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *w = words[lt_rng_next(rng) % N_WORDS];
        size_t len = strlen(w);
        dst[off++] = ' ';
        memcpy(dst + off, w, len);
        off += len;
    }
    return off;
}

static size_t max_word_len(void) {
    size_t m = 0;
    for (size_t i = 0; i < N_WORDS; i++) {
        size_t len = strlen(words[i]);
        m = len > m ? len : m;
    }
    return m;
}

cm_err lt_prompt_source_init_generated(lt_prompt_source *src, uint32_t input_min,
                                       uint32_t input_max, uint32_t output_min, uint32_t output_max,
                                       double shared_ratio, uint64_t seed) {
    memset(src, 0, sizeof(*src));
    if (input_min < 1 || input_max < input_min || input_max > LT_MAX_TOKENS || output_min < 1 ||
        output_max < output_min || output_max > LT_MAX_TOKENS || !(shared_ratio >= 0) ||
        shared_ratio > 1) {
        return CM_ERR_INVALID;
    }
    src->input_min = input_min;
    src->input_max = input_max;
    src->output_min = output_min;
    src->output_max = output_max;
    src->shared_ratio = shared_ratio;
    lt_rng_seed(&src->rng, seed);
    /* The shared prefix is sized for the longest prompt; shorter ones use a part of it. */
    uint32_t shared_n = (uint32_t)(shared_ratio * input_max + 0.5);
    if (shared_n > 0) {
        lt_rng prefix_rng;
        lt_rng_seed(&prefix_rng, seed ^ 0x5eed5eed5eedULL);
        src->shared_words = malloc((size_t)shared_n * (max_word_len() + 1) + 1);
        if (src->shared_words == NULL) {
            return CM_ERR_NOMEM;
        }
        size_t len = append_words(&prefix_rng, src->shared_words, shared_n);
        src->shared_words[len] = '\0';
        src->shared_words_n = shared_n;
    }
    return CM_OK;
}

/* The byte offset just after the n-th word of a " w1 w2 ..." string. */
static size_t prefix_bytes(const char *s, uint32_t n) {
    size_t off = 0;
    for (uint32_t i = 0; i < n && s[off] != '\0'; i++) {
        off++; /* the space */
        while (s[off] != '\0' && s[off] != ' ') {
            off++;
        }
    }
    return off;
}

static cm_err next_generated(lt_prompt_source *src, lt_prompt *out) {
    uint32_t n = lt_rng_range(&src->rng, src->input_min, src->input_max);
    uint32_t shared = (uint32_t)(src->shared_ratio * n + 0.5);
    if (shared > src->shared_words_n) {
        shared = src->shared_words_n;
    }
    uint32_t own = n - shared;
    size_t shared_len = shared > 0 ? prefix_bytes(src->shared_words, shared) : 0;
    char *text = malloc(shared_len + (size_t)own * (max_word_len() + 1) + 1);
    if (text == NULL) {
        return CM_ERR_NOMEM;
    }
    memcpy(text, src->shared_words != NULL ? src->shared_words : "", shared_len);
    size_t len = shared_len + append_words(&src->rng, text + shared_len, own);
    text[len] = '\0';
    /* Drop the leading space: the text is a whole message, not a continuation. */
    if (len > 0 && text[0] == ' ') {
        memmove(text, text + 1, len);
    }
    out->text = text;
    out->input_tokens_est = n;
    out->max_tokens = lt_rng_range(&src->rng, src->output_min, src->output_max);
    return CM_OK;
}

cm_err lt_prompt_next(lt_prompt_source *src, lt_prompt *out) {
    prompt_zero(out);
    src->counter++;
    if (src->n_file_prompts == 0) {
        return next_generated(src, out);
    }
    const lt_prompt *p = &src->file_prompts[src->next_file_prompt];
    src->next_file_prompt = (src->next_file_prompt + 1) % src->n_file_prompts;
    if (p->text != NULL) {
        out->text = strdup(p->text);
        if (out->text == NULL) {
            return CM_ERR_NOMEM;
        }
    }
    if (p->messages != NULL) {
        out->messages = json_incref(p->messages);
    }
    out->max_tokens = p->max_tokens != 0
                          ? p->max_tokens
                          : lt_rng_range(&src->rng, src->output_min, src->output_max);
    return CM_OK;
}

static cm_err line_fail(char *err, size_t err_len, size_t line_no, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static cm_err line_fail(char *err, size_t err_len, size_t line_no, const char *fmt, ...) {
    int n = snprintf(err, err_len, "line %zu: ", line_no);
    if (n > 0 && (size_t)n < err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return CM_ERR_FORMAT;
}

/* check_messages validates a chat messages array: objects with string role and content. */
static int check_messages(json_t *msgs) {
    if (!json_is_array(msgs) || json_array_size(msgs) == 0 ||
        json_array_size(msgs) > LT_PROMPT_MAX_MESSAGES) {
        return 0;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role")) ||
            !json_is_string(json_object_get(m, "content"))) {
            return 0;
        }
    }
    return 1;
}

/* parse_line turns one JSON line into dst; CM_ERR_FORMAT with err on any problem. */
static cm_err parse_line(const char *line, size_t len, size_t line_no, lt_api api, lt_prompt *dst,
                         char *err, size_t err_len) {
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    cm_err rv = CM_ERR_FORMAT;
    if (obj == NULL) {
        return line_fail(err, err_len, line_no, "invalid JSON: %s", jerr.text);
    }
    if (!json_is_object(obj)) {
        rv = line_fail(err, err_len, line_no, "expected a JSON object");
        goto done;
    }
    json_t *prompt = json_object_get(obj, "prompt");
    json_t *msgs = json_object_get(obj, "messages");
    json_t *max_tokens = json_object_get(obj, "max_tokens");
    if (max_tokens == NULL) {
        max_tokens = json_object_get(obj, "output_tokens");
    }
    if (prompt != NULL && !json_is_string(prompt)) {
        rv = line_fail(err, err_len, line_no, "\"prompt\" must be a string");
        goto done;
    }
    if (msgs != NULL && !check_messages(msgs)) {
        rv = line_fail(err, err_len, line_no,
                       "\"messages\" must be 1..%u objects with string role and content",
                       LT_PROMPT_MAX_MESSAGES);
        goto done;
    }
    if (prompt == NULL && msgs == NULL) {
        rv = line_fail(err, err_len, line_no, "needs \"prompt\" or \"messages\"");
        goto done;
    }
    if (api == LT_API_COMPLETIONS && prompt == NULL) {
        rv = line_fail(err, err_len, line_no, "the completions endpoint needs \"prompt\"");
        goto done;
    }
    if (max_tokens != NULL) {
        if (!json_is_integer(max_tokens) || json_integer_value(max_tokens) < 1 ||
            json_integer_value(max_tokens) > (json_int_t)LT_MAX_TOKENS) {
            rv = line_fail(err, err_len, line_no, "\"max_tokens\" must be an integer 1..%u",
                           LT_MAX_TOKENS);
            goto done;
        }
        dst->max_tokens = (uint32_t)json_integer_value(max_tokens);
    }
    /* Chat requests prefer the messages; completion requests use the prompt. */
    if (api == LT_API_CHAT && msgs != NULL) {
        dst->messages = json_incref(msgs);
    } else {
        dst->text = strdup(json_string_value(prompt));
        if (dst->text == NULL) {
            rv = CM_ERR_NOMEM;
            goto done;
        }
    }
    rv = CM_OK;
done:
    json_decref(obj);
    return rv;
}

cm_err lt_prompt_source_init_file(lt_prompt_source *src, const char *path, lt_api api,
                                  uint32_t output_min, uint32_t output_max, uint64_t seed,
                                  char *err, size_t err_len) {
    memset(src, 0, sizeof(*src));
    err[0] = '\0';
    if (output_min < 1 || output_max < output_min) {
        return CM_ERR_INVALID;
    }
    src->output_min = output_min;
    src->output_max = output_max;
    lt_rng_seed(&src->rng, seed);
    cm_err rv = CM_OK;
    char *line = NULL;
    size_t line_cap = 0, cap = 0, line_no = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        return CM_ERR_IO;
    }
    /* fgets into a fixed buffer, not getline: a file without newlines must not grow memory. */
    line_cap = (size_t)LT_PROMPT_MAX_LINE + 2;
    line = malloc(line_cap);
    if (line == NULL) {
        rv = CM_ERR_NOMEM;
        goto fail;
    }
    while (fgets(line, (int)line_cap, f) != NULL) {
        line_no++;
        size_t got = strlen(line);
        if (got > LT_PROMPT_MAX_LINE) {
            rv = line_fail(err, err_len, line_no, "longer than %u bytes", LT_PROMPT_MAX_LINE);
            goto fail;
        }
        size_t len = got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' ||
                           line[len - 1] == '\t')) {
            len--;
        }
        if (len == 0) {
            continue;
        }
        if (src->n_file_prompts == LT_PROMPT_MAX_LINES) {
            rv = line_fail(err, err_len, line_no, "more than %u prompts", LT_PROMPT_MAX_LINES);
            goto fail;
        }
        if (src->n_file_prompts == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            lt_prompt *np = realloc(src->file_prompts, ncap * sizeof(*np));
            if (np == NULL) {
                rv = CM_ERR_NOMEM;
                goto fail;
            }
            src->file_prompts = np;
            cap = ncap;
        }
        lt_prompt *dst = &src->file_prompts[src->n_file_prompts];
        prompt_zero(dst);
        rv = parse_line(line, len, line_no, api, dst, err, err_len);
        if (rv != CM_OK) {
            goto fail;
        }
        src->n_file_prompts++;
    }
    if (ferror(f)) {
        snprintf(err, err_len, "read error on %s", path);
        rv = CM_ERR_IO;
        goto fail;
    }
    if (src->n_file_prompts == 0) {
        snprintf(err, err_len, "%s holds no prompts", path);
        rv = CM_ERR_FORMAT;
        goto fail;
    }
    free(line);
    fclose(f);
    return CM_OK;
fail:
    free(line);
    fclose(f);
    lt_prompt_source_fini(src);
    return rv;
}
