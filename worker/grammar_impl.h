/*
 * Grammar internals shared by grammar.c (text -> compiled rules), grammar_vocab.c (token bytes,
 * trie, walkers), grammar_walk.c (trie walks and per-position token tables), grammar_state.c
 * (per-sequence parse stacks, mask, accept) and grammar_cache.c.
 *
 * Compiled form: every rule is a list of alternatives; an alternative is a run of elements in
 * one flat array ending with an END element. Elements are byte sets (one input byte from the
 * set), calls of another rule, or END. Character classes and literals are already UTF-8 byte
 * sequences (multi-byte classes are helper rules whose alternatives are byte-set sequences).
 *
 * A parse position ("pos") is an element index; after closure every live position is a BYTES
 * element (the next byte must come from its set) or POS_ACCEPT (the start rule has ended with
 * an empty stack: the output is a sentence). A call pushes the position after it (unless that
 * is END: a tail call pushes nothing, so right recursion and x* loops use no stack) and
 * continues at each alternative of the callee; END pops.
 */
#ifndef WK_GRAMMAR_IMPL_H
#define WK_GRAMMAR_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdbool.h>

#include "grammar.h"

enum { GEL_BYTES = 1, GEL_CALL = 2, GEL_END = 3 };

#define POS_ACCEPT UINT32_MAX

typedef struct gel {
    uint32_t kind; /* GEL_* */
    uint32_t arg;  /* BYTES: byte-set index; CALL: callee rule; END: owning rule */
} gel;

typedef struct gbytes {
    uint64_t w[4];
} gbytes;

static inline bool gbytes_has(const gbytes *s, uint8_t b) {
    return (s->w[b >> 6] >> (b & 63)) & 1u;
}

/* Tables are keyed by a position and the top GRAMMAR_CTX_FRAMES return positions of the stack
 * under it: a token that ends the position's rule goes on through those frames, so only what
 * leaves all of them (rare: a string's content, closing quote and the punctuation after it
 * fit) needs the rest of the stack. */
#define GRAMMAR_CTX_FRAMES 4u

/* Token table of one (position, context) for one vocabulary (grammar_walk.c). */
typedef struct gptab {
    uint32_t n_accepted;      /* tokens accepted whatever the stack below the context */
    uint32_t *sparse;         /* (n_accepted) sorted ids when few, else NULL */
    uint64_t *dense;          /* (n_vocab bits) when many, else NULL */
    uint32_t n_frames;        /* context frames: an exit has popped all of them */
    uint32_t n_exits;         /* trie nodes where the context is left with bytes to go */
    uint32_t *exits;          /* (n_exits) */
    uint32_t max_local_depth; /* deepest push on any path, over the context */
    bool truncated;           /* a walk bound cut paths: table is conservative */
} gptab;

typedef struct gtkey {
    uint32_t pos;
    uint32_t n_frames; /* frames[0..n_frames) bottom to top */
    uint32_t complete; /* the frames are the whole stack */
    uint32_t frames[GRAMMAR_CTX_FRAMES];
} gtkey;

typedef struct gtentry {
    gtkey key;
    gptab *tab; /* NULL = empty slot */
} gtentry;

/* All tables of one grammar for one vocabulary (created on first mask). */
typedef struct gtables {
    struct gtables *next;
    uint64_t vocab_serial;
    gtentry *slots; /* open addressing, (mask + 1) */
    uint32_t mask;
    uint32_t n_used;
    size_t bytes;       /* memory held, bounded by GRAMMAR_TABLE_BYTES */
    pthread_mutex_t mu; /* guards slots and serializes computing tables */
} gtables;

/* Bytes of tables one grammar may keep per vocabulary; beyond, positions are walked exactly
 * at every step instead (slower, same result). */
#define GRAMMAR_TABLE_BYTES (64u << 20)

struct wk_grammar {
    atomic_uint refs;
    uint32_t n_rules;
    uint32_t *alt_off;   /* (n_rules + 1) into alt_first */
    uint32_t *alt_first; /* first element of each alternative */
    uint32_t n_el;
    gel *el;
    uint32_t n_sets;
    gbytes *sets;
    uint32_t root;
    pthread_mutex_t tables_mu; /* guards the tables list */
    gtables *tables;
};

/* ---- vocabulary ---- */

/* Trie nodes in depth-first preorder: a node's first child is the next node, a subtree is the
 * range [node, end), the next sibling of c is c's end; children come in byte order. A walk
 * therefore reads the array forward. */
typedef struct gtrie_node {
    uint32_t end;  /* one past the last node of this subtree */
    int32_t token; /* a token ending here (first of a chain through tok_next), -1 */
    uint8_t byte;  /* the edge byte leading here */
} gtrie_node;

typedef struct gwalker gwalker;

struct wk_vocab_index {
    uint64_t serial; /* unique per index for the grammar's table key */
    uint32_t n_vocab;
    uint32_t words; /* bitset words: (n_vocab + 63) / 64 */
    uint8_t *bytes; /* token bytes, concatenated */
    uint32_t *off;  /* (n_vocab + 1) */
    uint8_t *eog;   /* (n_vocab) */
    uint32_t n_eog;
    int32_t *eog_ids;  /* (n_eog) */
    int32_t *tok_next; /* (n_vocab) next token with the same bytes, -1 */
    uint32_t n_nodes;  /* node 0 is the root */
    gtrie_node *nodes; /* (n_nodes) preorder */
    uint32_t max_len;  /* longest token in the trie */
    pthread_mutex_t walkers_mu;
    gwalker *free_walkers;
};

/* ---- walks (grammar_walk.c) ---- */

/* A walker: scratch for one trie walk, pooled per vocabulary index. */
gwalker *gwalker_acquire(const wk_vocab_index *v);
void gwalker_release(const wk_vocab_index *v, gwalker *w);
void gwalker_free(gwalker *w);

/* gwalk_table computes the table of key (the stack below its frames unknown unless
 * key->complete). */
cm_err gwalk_table(const wk_grammar *g, const wk_vocab_index *v, gwalker *w, const gtkey *key,
                   gptab **out);
void gptab_free(gptab *t);

/* gwalk_exact ORs into allowed every token accepted from (pos, stack[0..depth)), walking the
 * trie from node start (trie depth start_depth), pos being where the head is after those
 * bytes; if pop_first, the head is the position's rule just ended: continue by popping.
 * Returns true when some walk bound cut paths. */
bool gwalk_exact(const wk_grammar *g, const wk_vocab_index *v, gwalker *w, uint32_t pos,
                 bool pop_first, const uint32_t *stack, uint32_t depth, uint32_t start_node,
                 uint64_t *allowed);

/* gtables_get returns g's tables for v, creating them (NULL on allocation failure). */
gtables *gtables_get(wk_grammar *g, const wk_vocab_index *v);
/* gtables_find returns the table of (pos, top frames of stack[0..depth)), computing it on
 * first use; NULL when memory or the budget says no (the caller walks exactly instead). */
gptab *gtables_find(const wk_grammar *g, gtables *t, const wk_vocab_index *v, uint32_t pos,
                    const uint32_t *stack, uint32_t depth);
void gtables_free_all(gtables *t);

#endif /* WK_GRAMMAR_IMPL_H */
