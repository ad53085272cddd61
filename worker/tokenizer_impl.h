/*
 * Tokenizer internals shared by tokenizer.c, tokenizer_unicode.c and the unit tests.
 *
 * wk_tokenizer_from_spec builds a tokenizer from plain arrays (what wk_tokenizer_load reads
 * out of GGUF metadata), so tests can build small vocabularies in memory.
 */
#ifndef WK_TOKENIZER_IMPL_H
#define WK_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "tokenizer.h"

/* Bounds on what a vocabulary may hold; beyond them loading fails with CM_ERR_LIMIT. */
#define WK_TOK_MAX_VOCAB (1u << 22)
#define WK_TOK_MAX_MERGES (1u << 23)
#define WK_TOK_MAX_TOKEN_BYTES 4096u

/* GGUF tokenizer.ggml.token_type values. */
enum {
    WK_TOKTYPE_NORMAL = 1,
    WK_TOKTYPE_UNKNOWN = 2,
    WK_TOKTYPE_CONTROL = 3,
    WK_TOKTYPE_USER_DEFINED = 4,
    WK_TOKTYPE_UNUSED = 5,
    WK_TOKTYPE_BYTE = 6,
};

typedef enum wk_tok_model {
    WK_TOK_MODEL_BPE = 1, /* "gpt2": byte-level BPE with merges */
    WK_TOK_MODEL_SPM = 2, /* "llama": SentencePiece-style, scores + byte fallback */
} wk_tok_model;

/* Byte-level BPE pre-tokenizers (the split regex each family uses, implemented by hand). */
typedef enum wk_tok_pre {
    WK_TOK_PRE_GPT2 = 1,   /* 's|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    WK_TOK_PRE_SMOLLM = 2, /* every \p{N} alone first, then the GPT-2 regex */
    WK_TOK_PRE_LLAMA3 = 3, /* case-insensitive contractions, \p{N}{1,3}, newline handling */
    WK_TOK_PRE_QWEN2 = 4,  /* as LLAMA3 with single digits */
} wk_tok_pre;

typedef struct wk_tokenizer_spec {
    wk_tok_model model;
    wk_tok_pre pre; /* BPE only */
    uint32_t n_vocab;
    const char *const *tokens;  /* (n_vocab) token texts as stored in GGUF, not NUL-terminated */
    const uint32_t *token_lens; /* (n_vocab) byte lengths */
    const int32_t *token_types; /* (n_vocab) WK_TOKTYPE_*; NULL = all normal */
    const float *scores;        /* (n_vocab) SPM merge scores; NULL = all 0 */
    uint32_t n_merges;          /* BPE: merges in rank order, "left right" */
    const char *const *merges;
    const uint32_t *merge_lens;
    int32_t bos, eos, eot, eom, unk; /* -1 = none */
    bool add_bos;
    bool add_space_prefix; /* SPM: prepend a space to the text */
} wk_tokenizer_spec;

/* wk_tokenizer_from_spec copies everything it needs out of spec (borrowed for the call only).
 * Errors: CM_ERR_INVALID/FORMAT/LIMIT with err naming the problem; *out NULL then. */
cm_err wk_tokenizer_from_spec(const wk_tokenizer_spec *spec, wk_tokenizer **out, char *err,
                              size_t errlen);

/* wk_tokenizer_pre_from_name maps tokenizer.ggml.pre ("smollm", "gpt2", "llama-bpe", "qwen2",
 * ...; NULL or "default" -> GPT2). Returns 0 for a name it does not know. */
int wk_tokenizer_pre_from_name(const char *name, size_t len);

/* wk_tokenizer_pretokenize splits len bytes of valid UTF-8 text the way pre does, writing the
 * byte length of each piece into piece_lens (capacity cap, >= number of code points suffices)
 * and their count into *n_pieces. Exposed for tests. CM_ERR_UTF8 on invalid input. */
cm_err wk_tokenizer_pretokenize(wk_tok_pre pre, const char *text, size_t len, uint32_t *piece_lens,
                                size_t cap, size_t *n_pieces);

/* Unicode classes used by the pre-tokenizers (tokenizer_unicode.c, generated tables). */
bool wk_ucp_is_letter(uint32_t cp); /* general category L* */
bool wk_ucp_is_number(uint32_t cp); /* general category N* */
bool wk_ucp_is_space(uint32_t cp);  /* White_Space */

/* wk_utf8_decode decodes one well-formed character at s[0..len) into *cp and returns its byte
 * length, or 0 when the bytes there are not a complete well-formed character. */
size_t wk_utf8_decode(const uint8_t *s, size_t len, uint32_t *cp);

/* wk_hex_digit: the value of one hex digit (either case), or -1 (grammar and regex escapes). */
static inline int wk_hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- the tokenizer's representation, shared by tokenizer.c (construction, lookups),
 * tokenizer_encode.c (pre-tokenizers, BPE/SPM merging) and tokenizer_detok.c (UTF-8,
 * streaming detokenizer) ---- */

enum {
    WK_TOKFLAG_EOG = 1,
};

#define WK_GPT2_CP_LIMIT (256 + 68)

/* The tokenizer itself (immutable after wk_tokenizer_from_spec). */
struct wk_tokenizer {
    wk_tok_model model;
    wk_tok_pre pre;
    uint32_t n_vocab;
    char *text;          /* token texts, each NUL-terminated */
    uint32_t *text_off;  /* (n_vocab + 1) */
    char *piece;         /* decoded bytes of each token */
    uint32_t *piece_off; /* (n_vocab + 1) */
    uint8_t *type;       /* (n_vocab) WK_TOKTYPE_* */
    uint8_t *flags;      /* (n_vocab) WK_TOKFLAG_* */
    float *score;        /* (n_vocab) SPM scores */
    int32_t *vocab_slot; /* (vocab_mask + 1) token id or -1 */
    uint32_t vocab_mask;
    uint64_t *merge_key; /* (merge_mask + 1) left << 32 | right, UINT64_MAX = empty */
    uint32_t *merge_rank;
    int32_t *merge_result;
    uint32_t merge_mask;
    int32_t byte_tok[256];  /* token for each raw byte (BPE char / SPM <0xNN>), -1 if none */
    uint32_t n_special;     /* control + user-defined tokens with non-empty text */
    uint16_t *special_lens; /* (n_special_lens) their distinct text lengths, longest first */
    uint32_t n_special_lens;
    bool special_first[256];
    int32_t bos, eos, eot, eom, unk;
    bool add_bos;
    bool add_space_prefix;
    uint32_t max_piece;
    /* (256) for each byte value, 65536 / the byte length of the longest token that can cover
     * it (its decoded piece, or its text for special tokens); 0 when no token covers it.
     * Summed over a text's bytes and divided by 65536 it bounds the token count from below
     * (wk_tokenizer_min_tokens). */
    uint32_t byte_weight[256];
    uint16_t byte_cp[256];             /* GPT-2 mapping: byte -> code point */
    int16_t cp_byte[WK_GPT2_CP_LIMIT]; /* and back, -1 for code points that are not bytes */
};

/* wk_tok_text returns token id's text (NUL-terminated) and its length; id must be valid. */
const char *wk_tok_text(const wk_tokenizer *t, int32_t id, size_t *len);

/* wk_tok_is_special: control or user-defined (matched in text only with parse_special). */
bool wk_tok_is_special(const wk_tokenizer *t, int32_t id);

/* wk_tok_lookup returns the id whose text is exactly s[0..len), or -1. */
int32_t wk_tok_lookup(const wk_tokenizer *t, const char *s, size_t len);

/* wk_tok_merge_lookup finds the BPE merge of (left, right): its rank and resulting id. */
bool wk_tok_merge_lookup(const wk_tokenizer *t, int32_t left, int32_t right, uint32_t *rank,
                         int32_t *result);

/* wk_utf8_encode writes cp (<= U+10FFFF) as UTF-8 into out (room for 4) and returns its
 * length. */
size_t wk_utf8_encode(uint32_t cp, char *out);

#endif /* WK_TOKENIZER_IMPL_H */
