/*
 * lt_prompt: where request prompts come from.
 *
 * Two sources:
 *  - generated: prompts of a fixed length or a uniform length range, in approximate tokens
 *    (one common English word with its leading space is one token for the GPT-2 style BPE
 *    tokenizers of most chat models; the chat template adds its own few tokens). With a
 *    shared-prefix ratio r, the first round(r * length) words are the same for every request
 *    (to exercise prefix caching); the rest is drawn at random per request.
 *  - a JSONL file: one object per line, {"prompt": "..."} or {"messages": [{"role": ...,
 *    "content": ...}, ...]}, optionally "max_tokens": N. Used in order, cycling.
 * max_tokens of each prompt comes from the file or is drawn from [output_min, output_max].
 *
 * Bounds: a file line is at most LT_PROMPT_MAX_LINE bytes, at most LT_PROMPT_MAX_LINES
 * prompts; messages at most LT_PROMPT_MAX_MESSAGES per line.
 * Thread contract: a source has one owner thread.
 */
#ifndef LT_PROMPT_H
#define LT_PROMPT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "lt_args.h"
#include "lt_rng.h"

#define LT_PROMPT_MAX_LINE (1u << 20)
#define LT_PROMPT_MAX_LINES 1000000u
#define LT_PROMPT_MAX_MESSAGES 256u

/* One prompt, ready to be turned into a request body. */
typedef struct lt_prompt {
    char *text;          /* owned; the completion prompt or the single user message; or NULL */
    json_t *messages;    /* owned reference; chat messages from a file; or NULL */
    uint32_t max_tokens; /* >= 1 */
    uint32_t input_tokens_est; /* generated: words in text; file: 0 (unknown) */
} lt_prompt;

typedef struct lt_prompt_source {
    lt_prompt *file_prompts; /* file mode: every line, owned */
    size_t n_file_prompts;
    size_t next_file_prompt;
    lt_rng rng;
    uint32_t input_min, input_max, output_min, output_max;
    double shared_ratio;
    char *shared_words; /* generated mode: the prefix shared by every prompt (owned) */
    uint32_t shared_words_n;
    uint64_t counter;
} lt_prompt_source;

/*
 * lt_prompt_source_init_generated prepares the built-in generator. Lengths are in tokens
 * (1..LT_MAX_TOKENS, min <= max); shared_ratio in [0, 1].
 */
cm_err lt_prompt_source_init_generated(lt_prompt_source *src, uint32_t input_min,
                                       uint32_t input_max, uint32_t output_min, uint32_t output_max,
                                       double shared_ratio, uint64_t seed);
/*
 * lt_prompt_source_init_file reads a JSONL file. For LT_API_COMPLETIONS every line needs a
 * "prompt". On failure err names the line and the problem, and src holds nothing.
 */
cm_err lt_prompt_source_init_file(lt_prompt_source *src, const char *path, lt_api api,
                                  uint32_t output_min, uint32_t output_max, uint64_t seed,
                                  char *err, size_t err_len);
/* lt_prompt_source_fini frees src; src may be zeroed. */
void lt_prompt_source_fini(lt_prompt_source *src);
/* lt_prompt_next fills out with the next prompt; free it with lt_prompt_fini. */
cm_err lt_prompt_next(lt_prompt_source *src, lt_prompt *out);
void lt_prompt_fini(lt_prompt *p);

#endif /* LT_PROMPT_H */
