/*
 * wk_tokenizer: text <-> token ids from GGUF metadata (tokenizer.ggml.*).
 *
 * Two models: byte-level BPE ("gpt2": SmolLM2, Llama 3, Qwen2; pre-tokenizer chosen from
 * tokenizer.ggml.pre) and SentencePiece-style ("llama": Llama 2, Mistral; scores, byte
 * fallback <0xNN>, leading-space prefix). Special/control tokens are recognized in text only
 * when the caller asks (chat templates do; raw user text does not by default).
 *
 * Immutable after load: encode/decode are safe from many threads at once.
 */
#ifndef WK_TOKENIZER_H
#define WK_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "cm_err.h"

struct wk_gguf;
typedef struct wk_tokenizer wk_tokenizer;

/* wk_tokenizer_load reads vocab, merges/scores, token types and special ids from g. The
 * tokenizer copies what it needs (g may be closed afterwards). On failure err names the
 * missing or malformed key. Caller frees with wk_tokenizer_free. */
cm_err wk_tokenizer_load(const struct wk_gguf *g, wk_tokenizer **out, char *err, size_t errlen);
void wk_tokenizer_free(wk_tokenizer *t);

uint32_t wk_tokenizer_n_vocab(const wk_tokenizer *t);
int32_t wk_tokenizer_bos(const wk_tokenizer *t);  /* -1 if none */
int32_t wk_tokenizer_eos(const wk_tokenizer *t);  /* -1 if none */
bool wk_tokenizer_add_bos(const wk_tokenizer *t); /* tokenizer.ggml.add_bos_token */

/* wk_tokenizer_is_eog: true for tokens that end generation (eos, eot, <|im_end|>,
 * <|eot_id|>, <end_of_turn>, ... as the vocabulary marks them). */
bool wk_tokenizer_is_eog(const wk_tokenizer *t, int32_t id);

/* wk_tokenizer_find returns the id of the token whose text is exactly s, or -1. */
int32_t wk_tokenizer_find(const wk_tokenizer *t, const char *s, size_t len);

/*
 * wk_tokenizer_encode tokenizes len bytes of text into out (capacity cap).
 * add_bos: prepend BOS when the model wants one. parse_special: text like "<|im_start|>"
 * becomes its special token; otherwise it is tokenized as plain text.
 * Invalid UTF-8 in text: CM_ERR_UTF8 (callers validate earlier; this is the last guard).
 * More than cap tokens: CM_ERR_LIMIT with *n_out = cap (the caller's prompt bound).
 */
cm_err wk_tokenizer_encode(const wk_tokenizer *t, const char *text, size_t len, bool add_bos,
                           bool parse_special, int32_t *out, size_t cap, size_t *n_out);

/*
 * wk_tokenizer_min_tokens: a proven lower bound on the number of tokens wk_tokenizer_encode
 * produces for text[0..len) (BOS not counted), with either parse_special, from one pass over
 * the bytes and no tokenizing: every token covers at most the longest token's byte length,
 * and only bytes the vocabulary can express yield tokens at all (bytes it lacks are dropped).
 * Lets a caller refuse a prompt that cannot fit a context before paying for encoding it.
 */
size_t wk_tokenizer_min_tokens(const wk_tokenizer *t, const char *text, size_t len);

/* wk_tokenizer_piece returns the raw bytes token id decodes to (byte-level BPE mapping undone,
 * SentencePiece '▁' turned into ' ', <0xNN> into the byte). Control tokens give their text
 * when render_special, else empty. Pointer valid for the tokenizer's lifetime. */
const char *wk_tokenizer_piece(const wk_tokenizer *t, int32_t id, bool render_special, size_t *len);

/*
 * Streaming detokenizer: feed ids one at a time, get back only complete UTF-8 characters.
 * Bytes of a character split across tokens are held until complete; a byte sequence that can
 * never become valid is replaced by U+FFFD. One per sequence; no allocation after init.
 */
typedef struct wk_detok {
    const wk_tokenizer *tok;
    bool first;         /* SentencePiece: strip the leading space of the first piece */
    uint8_t pending[8]; /* incomplete UTF-8 tail */
    uint32_t n_pending;
} wk_detok;

void wk_detok_init(wk_detok *d, const wk_tokenizer *t);

/* wk_detok_push appends the complete characters produced by token id to out (capacity cap,
 * at least 64 + longest piece; returns CM_ERR_LIMIT otherwise) and sets *n_written.
 * Special tokens render as their text only if render_special. */
cm_err wk_detok_push(wk_detok *d, int32_t id, bool render_special, char *out, size_t cap,
                     size_t *n_written);

/* wk_detok_flush emits whatever is pending (as U+FFFD replacements) at end of stream. */
size_t wk_detok_flush(wk_detok *d, char *out, size_t cap);

/* wk_utf8_valid: true when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
bool wk_utf8_valid(const char *s, size_t len);

#endif /* WK_TOKENIZER_H */
