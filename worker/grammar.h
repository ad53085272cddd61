/*
 * wk_grammar: constrained decoding. A context-free grammar (GBNF-like text) is compiled once
 * into an immutable, refcounted wk_grammar; each generating sequence runs its own
 * wk_grammar_state over it, which masks the logits before sampling so that only tokens keeping
 * the output a valid prefix of the grammar's language can be drawn, and advances by the token
 * drawn.
 *
 * Grammar text (one rule per definition, rules may span lines):
 *
 *     rule-name ::= alternative | alternative ...     # names: [a-zA-Z0-9_-]+
 *
 *   "literal"        bytes of a UTF-8 string; escapes \" \\ \/ \n \r \t \b \f \xHH \uXXXX
 *                    \UXXXXXXXX (code points, written as UTF-8)
 *   [a-z0-9_]        a character class over Unicode code points (ranges, single characters,
 *                    the same escapes as literals, plus \] \[ \-); [^...] negates it (over
 *                    all code points U+0000..U+10FFFF, surrogates excluded)
 *   .                any code point
 *   name             a reference to another rule (forward references and recursion are fine)
 *   ( ... )          grouping
 *   x* x+ x?         repetition (unbounded * and + compile to loops, no stack growth)
 *   x{m} x{m,} x{m,n} bounded repetition, n <= WK_GRAMMAR_MAX_REPEAT
 *   # comment        to the end of the line
 *
 * The language is over bytes: classes and literals are compiled to UTF-8 byte sequences, so the
 * engine matches a token's bytes directly and only valid UTF-8 can come out of a class (a
 * literal is whatever bytes its text holds; the parser requires the text to be UTF-8).
 *
 * Compile-time errors (CM_ERR_INVALID with err = "line L col C: what"): syntax errors, an
 * undefined rule, a missing start rule, left recursion (a rule reaching itself without
 * consuming a byte, which a top-down matcher cannot run), a rule that can never produce a
 * finite string, an empty character class. Exceeding a bound is CM_ERR_LIMIT naming it.
 *
 * Runtime: a wk_grammar_state is a set of parallel parse stacks (positions in the compiled
 * rules plus return positions), advanced byte by byte. Ambiguity is bounded by
 * WK_GRAMMAR_MAX_HEADS stacks and nesting by WK_GRAMMAR_MAX_STACK return positions: a path
 * that would exceed WK_GRAMMAR_MAX_STACK is cut (the matcher never allows a token that would
 * need it), more than WK_GRAMMAR_MAX_HEADS parallel stacks fail the state with CM_ERR_LIMIT.
 *
 * Masking (grammar_walk.c, grammar_state.c): for each parse context (a position plus the top 4
 * return positions under it) the tokens accepted whatever the rest of the stack holds are
 * computed once per (grammar, vocabulary) by a memoized walk of a byte trie of the
 * vocabulary, and shared by every sequence using the grammar (thread-safe; at most 64 MB per
 * grammar, beyond which contexts are walked exactly at each step instead); the few tokens
 * that leave the context are then checked against the sequence's real stack. A context's
 * first walk costs up to ~2 ms on a 49k vocabulary; afterwards a mask is tens of us.
 * Special/control tokens are never allowed; end-of-generation tokens only when the output is
 * complete.
 *
 * Threads: wk_grammar, wk_vocab_index and wk_grammar_cache are safe to share across threads.
 * A wk_grammar_state belongs to one thread at a time.
 */
#ifndef WK_GRAMMAR_H
#define WK_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "cm_err.h"
#include "tokenizer.h"

/* Bounds (compile errors CM_ERR_LIMIT beyond them). */
#define WK_GRAMMAR_MAX_TEXT_BYTES (4u << 20) /* grammar text */
#define WK_GRAMMAR_MAX_RULES 16384u          /* rules, including generated helper rules */
#define WK_GRAMMAR_MAX_ELEMENTS (1u << 20)   /* compiled elements (bytes sets, calls, ends) */
#define WK_GRAMMAR_MAX_REPEAT 1000u          /* n in x{m,n} */
#define WK_GRAMMAR_MAX_NESTING 64u           /* parenthesis nesting in the text */
/* Runtime bounds. */
#define WK_GRAMMAR_MAX_STACK 256u /* return positions per parse stack */
#define WK_GRAMMAR_MAX_HEADS 64u  /* parallel parse stacks (ambiguity) */

/* ---- compiled grammars ------------------------------------------------------------------ */

typedef struct wk_grammar wk_grammar; /* compiled; immutable; refcounted (atomic) */

/* wk_grammar_compile parses len bytes of grammar text and compiles it with root_rule (NULL =
 * "root") as the start rule. On success *out holds one reference (free with
 * wk_grammar_unref). On failure *out is NULL and err (errlen bytes, may be NULL) holds one
 * line: CM_ERR_INVALID (syntax, undefined rule, left recursion, unproductive rule, ...),
 * CM_ERR_LIMIT (a WK_GRAMMAR_MAX_* bound), CM_ERR_NOMEM. Any thread; takes milliseconds for
 * schema-sized grammars (never call it on the engine thread for outside input). */
cm_err wk_grammar_compile(const char *text, size_t len, const char *root_rule, wk_grammar **out,
                          char *err, size_t errlen);

/* wk_grammar_ref takes another reference and returns g; wk_grammar_unref drops one (the last
 * frees it; NULL is fine). Any thread. */
wk_grammar *wk_grammar_ref(wk_grammar *g);
void wk_grammar_unref(wk_grammar *g);

/* wk_grammar_n_rules / wk_grammar_n_elements: sizes after compilation (tests, benchmarks). */
uint32_t wk_grammar_n_rules(const wk_grammar *g);
uint32_t wk_grammar_n_elements(const wk_grammar *g);

/* ---- the compile cache ------------------------------------------------------------------ */

/* A bounded LRU of compiled grammars keyed by SHA-256 of (root rule, text): a repeated
 * schema compiles once. Thread-safe (one mutex; compiles run outside it, so a slow compile
 * never blocks lookups; two threads missing on the same text may both compile, the first to
 * finish is kept). */
typedef struct wk_grammar_cache wk_grammar_cache;

/* max_entries in [1, 65536]; CM_ERR_INVALID otherwise. Free with wk_grammar_cache_destroy
 * (entries still referenced elsewhere live on until their last unref). */
cm_err wk_grammar_cache_create(uint32_t max_entries, wk_grammar_cache **out);
void wk_grammar_cache_destroy(wk_grammar_cache *c);

/* wk_grammar_cache_get returns a new reference to the compiled (text, root_rule) grammar,
 * compiling it on a miss (errors as wk_grammar_compile; failures are not cached). */
cm_err wk_grammar_cache_get(wk_grammar_cache *c, const char *text, size_t len,
                            const char *root_rule, wk_grammar **out, char *err, size_t errlen);

/* Counters for tests and metrics. */
typedef struct wk_grammar_cache_stats {
    uint64_t hits;
    uint64_t misses;
    uint32_t entries;
} wk_grammar_cache_stats;
void wk_grammar_cache_get_stats(wk_grammar_cache *c, wk_grammar_cache_stats *out);

/* ---- the vocabulary ---------------------------------------------------------------------- */

/* Per tokenizer, built once at worker start and read-only after: every token's decoded bytes
 * (wk_tokenizer_piece without special rendering: the GPT-2 byte mapping undone for byte-level
 * BPE, '▁' -> ' ' and <0xNN> -> the byte for SentencePiece), a byte trie over them, and the
 * end-of-generation ids. Tokens with no bytes (control, unknown, unused) and special tokens
 * (control, user-defined) are left out of the trie: a grammar never allows them, except EOG
 * tokens at completion. SentencePiece note: the grammar sees a token's bytes as they are,
 * including the leading space of '▁' pieces (the detokenizer drops that space only at the very
 * start of a stream), so a grammar that allows no leading space never lets it through. */
typedef struct wk_vocab_index wk_vocab_index;

/* tok is borrowed for the call only. Errors: CM_ERR_NOMEM; CM_ERR_LIMIT when a piece exceeds
 * WK_TOK_MAX_TOKEN_BYTES (cannot happen for a loaded tokenizer). Caller frees. */
cm_err wk_vocab_index_create(const wk_tokenizer *tok, wk_vocab_index **out, char *err,
                             size_t errlen);
void wk_vocab_index_free(wk_vocab_index *v);

uint32_t wk_vocab_index_n_vocab(const wk_vocab_index *v);

/* wk_vocab_index_bytes: token id's bytes as the grammar sees them (len 0 for tokens left out
 * of the trie). Valid for the index's lifetime. */
const uint8_t *wk_vocab_index_bytes(const wk_vocab_index *v, int32_t id, uint32_t *len);

/* wk_vocab_index_is_eog: true for the tokenizer's end-of-generation tokens. */
bool wk_vocab_index_is_eog(const wk_vocab_index *v, int32_t id);

/* ---- per sequence ------------------------------------------------------------------------ */

typedef struct wk_grammar_state wk_grammar_state;

/* wk_grammar_state_create starts g's language from the empty output. The state takes its own
 * reference on g; v is borrowed and must outlive the state (NULL = byte-level use only:
 * wk_grammar_accept_bytes and the queries; mask/accept of tokens then fail with
 * CM_ERR_STATE). Everything the state needs per step is allocated here (~200 KB: three sets
 * of WK_GRAMMAR_MAX_HEADS stacks), so mask and accept allocate nothing, except the first time
 * a parse context is met by any sequence of the grammar (its shared table, see above) and
 * the first walk of a vocabulary index (a ~6 MB walk scratch, pooled). Free with
 * wk_grammar_state_free (NULL ok). */
cm_err wk_grammar_state_create(wk_grammar *g, const wk_vocab_index *v, wk_grammar_state **out);
void wk_grammar_state_free(wk_grammar_state *st);

/*
 * wk_grammar_mask sets logits[t] = -INFINITY for every token t that cannot extend the output
 * to a valid prefix of the language: special/control tokens always, end-of-generation tokens
 * unless the output is complete, ids >= the vocabulary index's size (a model head wider than
 * the tokenizer). logits has n_logits entries. Other logits are left unchanged.
 * Errors: CM_ERR_STATE (no vocabulary, or the state failed earlier), CM_ERR_LIMIT when no
 * token at all is possible because a runtime bound cut every path (wk_grammar_state_error
 * says which); the logits are then all -INFINITY.
 */
cm_err wk_grammar_mask(wk_grammar_state *st, float *logits, uint32_t n_logits);

/* wk_grammar_allowed: true when token may come next (what wk_grammar_mask would leave
 * unmasked). Slow path for tests and checks; does not change the state. */
bool wk_grammar_allowed(wk_grammar_state *st, int32_t token);

/* wk_grammar_accept advances by token. An EOG token is accepted only at completion and
 * changes nothing. CM_ERR_INVALID if the token was not allowed (the state is unchanged),
 * CM_ERR_LIMIT when a runtime bound was hit (the state is failed: later calls give
 * CM_ERR_STATE), CM_ERR_STATE without a vocabulary. */
cm_err wk_grammar_accept(wk_grammar_state *st, int32_t token);

/* wk_grammar_accept_bytes advances by len raw bytes (tests, tool-call prefixes forced by the
 * caller). Same errors as wk_grammar_accept; on CM_ERR_INVALID the state is unchanged. */
cm_err wk_grammar_accept_bytes(wk_grammar_state *st, const uint8_t *bytes, size_t len);

/* wk_grammar_complete: the output so far is a sentence of the language (EOG may come). */
bool wk_grammar_complete(const wk_grammar_state *st);

/* wk_grammar_finished: complete and no byte may follow (generation must end now). */
bool wk_grammar_finished(const wk_grammar_state *st);

/* wk_grammar_state_reset: back to the empty output (what a recomputed sequence would rebuild
 * by accepting its generated tokens again). */
void wk_grammar_state_reset(wk_grammar_state *st);

/* wk_grammar_state_error: a one-line description of the last error, "" if none. */
const char *wk_grammar_state_error(const wk_grammar_state *st);

#endif /* WK_GRAMMAR_H */
