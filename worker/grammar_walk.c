/*
 * Trie walks: which tokens may follow a parse position.
 *
 * A walk runs the grammar over the vocabulary trie depth first: at each trie node it holds the
 * parse heads alive after that node's bytes, and a subtree is skipped as soon as no head is
 * left, so the cost is the number of trie nodes that are valid prefixes, not the vocabulary
 * size. Heads carry a local stack (pushed inside the walk) above the "real" stack:
 *
 *  - table mode: the real stack is a context (the top frames of a sequence's stack) with more
 *    below it unknown; a token that leaves the context exactly at its last byte is accepted
 *    (any caller can continue: every rule is productive), one that leaves it earlier is
 *    recorded as an "exit" trie node, to be finished against the sequence's real stack.
 *    These tables are computed once per (grammar, vocabulary, context) and shared.
 *  - exact mode: the whole real stack is given; popping past the local stack pops it.
 *
 * The walk is a lazily built DFA: local stack nodes and head sets are interned, so a head set
 * is a state id and "state + byte -> state" is computed once per walk and then looked up.
 * Inside a JSON string nearly every byte leads back to the same state, which is what makes a
 * walk over ~100k trie nodes take ~2 ms.
 *
 * Bounds: WALK_HEADS heads per state, WALK_NODES local nodes, WALK_STATES states per walk, the
 * grammar's WK_GRAMMAR_MAX_STACK. A walk that hits one drops the paths concerned and says so
 * (the mask is then conservative: it may forbid a valid token, never allow an invalid one).
 */
#include "grammar.h"
#include "grammar_impl.h"

#include <stdlib.h>
#include <string.h>

#define WALK_HEADS 64u        /* heads in one state */
#define WALK_NODES (1u << 16) /* distinct local stack nodes per walk */
#define WALK_STATES 8192u     /* distinct head sets per walk */
#define WALK_POOL (1u << 17)  /* heads of all states of a walk */
#define WALK_TRANS (1u << 16) /* memoized transitions (slots, a power of two) */
#define NODE_SLOTS (2 * WALK_NODES)
#define STATE_SLOTS (2 * WALK_STATES)
#define NO_NODE UINT32_MAX
#define NO_STATE UINT32_MAX
#define SPARSE_MAX_DIV 32u /* a table is sparse when n_accepted < n_vocab / SPARSE_MAX_DIV */

enum { LV_ACCEPT = 1, LV_EXIT = 2 };

typedef struct whead {
    uint32_t pos;
    uint32_t local; /* local stack top (interned node) or NO_NODE */
    uint32_t real;  /* real stack depth below the local stack */
} whead;

typedef struct wnode {
    uint32_t ret;
    uint32_t parent;
    uint32_t depth; /* local depth including this node */
} wnode;

/* Hash slots are valid when their gen equals the walker's: a new walk just bumps gen. */
typedef struct nslot {
    uint32_t gen, ret, parent, node;
} nslot;

typedef struct wstate {
    uint32_t off, n; /* heads in pool[off..off+n), sorted */
    uint64_t hash;
} wstate;

typedef struct sslot {
    uint32_t gen, state;
} sslot;

typedef struct tslot {
    uint32_t gen, state;
    uint32_t next; /* NO_STATE = no head survives */
    uint16_t byte;
    uint8_t flags; /* LV_* */
} tslot;

struct gwalker {
    gwalker *next; /* first member: the pool's free list */
    uint32_t levels;
    uint32_t *lstate; /* (levels) state of each trie level */
    uint32_t *cursor; /* (levels) next child (trie node) of the level's node */
    uint32_t *tend;   /* (levels) end of the level's node's subtree */
    wnode *nodes;     /* (WALK_NODES) interned local stack nodes */
    nslot *nslots;    /* (NODE_SLOTS) */
    uint32_t n_nodes;
    wstate *states; /* (WALK_STATES) interned head sets */
    sslot *sslots;  /* (STATE_SLOTS) */
    whead *pool;    /* (WALK_POOL) */
    uint32_t n_states, n_pool;
    tslot *tslots; /* (WALK_TRANS) */
    uint32_t n_trans;
    whead tmp[WALK_HEADS]; /* the set being computed */
    uint32_t n_tmp;
    uint8_t tmp_flags;
    uint32_t gen;
    uint64_t *bits; /* (words) table mode: accepted tokens */
    uint32_t *exits;
    uint32_t n_exits, cap_exits;
    /* per walk */
    const wk_grammar *g;
    const uint32_t *real_stack; /* the known part of the stack (bottom first) */
    bool unknown_below;         /* table mode: more stack below real_stack */
    uint32_t max_local;
    bool truncated;
    bool nomem;
};

/* ---- pool ------------------------------------------------------------------------------- */

void gwalker_free(gwalker *w) {
    if (w == NULL)
        return;
    free(w->lstate);
    free(w->cursor);
    free(w->tend);
    free(w->nodes);
    free(w->nslots);
    free(w->states);
    free(w->sslots);
    free(w->pool);
    free(w->tslots);
    free(w->bits);
    free(w->exits);
    free(w);
}

gwalker *gwalker_acquire(const wk_vocab_index *cv) {
    wk_vocab_index *v = (wk_vocab_index *)cv; /* the pool is the index's only mutable part */
    pthread_mutex_lock(&v->walkers_mu);
    gwalker *w = v->free_walkers;
    if (w != NULL)
        v->free_walkers = w->next;
    pthread_mutex_unlock(&v->walkers_mu);
    if (w != NULL)
        return w;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->levels = v->max_len + 2;
    w->lstate = calloc(w->levels, sizeof(uint32_t));
    w->cursor = calloc(w->levels, sizeof(uint32_t));
    w->tend = calloc(w->levels, sizeof(uint32_t));
    w->nodes = malloc(WALK_NODES * sizeof(wnode));
    w->nslots = calloc(NODE_SLOTS, sizeof(nslot));
    w->states = malloc(WALK_STATES * sizeof(wstate));
    w->sslots = calloc(STATE_SLOTS, sizeof(sslot));
    w->pool = malloc(WALK_POOL * sizeof(whead));
    w->tslots = calloc(WALK_TRANS, sizeof(tslot));
    w->bits = calloc(v->words ? v->words : 1, sizeof(uint64_t));
    if (w->lstate == NULL || w->cursor == NULL || w->tend == NULL || w->nodes == NULL ||
        w->nslots == NULL || w->states == NULL || w->sslots == NULL || w->pool == NULL ||
        w->tslots == NULL || w->bits == NULL) {
        gwalker_free(w);
        return NULL;
    }
    return w;
}

void gwalker_release(const wk_vocab_index *cv, gwalker *w) {
    wk_vocab_index *v = (wk_vocab_index *)cv;
    if (w == NULL)
        return;
    pthread_mutex_lock(&v->walkers_mu);
    w->next = v->free_walkers;
    v->free_walkers = w;
    pthread_mutex_unlock(&v->walkers_mu);
}

/* ---- interning ---------------------------------------------------------------------------- */

static uint32_t mix32(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return (uint32_t)(x >> 32);
}

/* push_node returns the interned node (ret, parent), NO_NODE when the walk's bound is hit. */
static uint32_t push_node(gwalker *w, uint32_t ret, uint32_t parent) {
    uint32_t i = mix32(((uint64_t)ret << 32) | parent) & (NODE_SLOTS - 1);
    for (;; i = (i + 1) & (NODE_SLOTS - 1)) {
        nslot *sl = &w->nslots[i];
        if (sl->gen != w->gen)
            break;
        if (sl->ret == ret && sl->parent == parent)
            return sl->node;
    }
    if (w->n_nodes >= WALK_NODES) {
        w->truncated = true;
        return NO_NODE;
    }
    uint32_t id = w->n_nodes++;
    w->nodes[id].ret = ret;
    w->nodes[id].parent = parent;
    w->nodes[id].depth = parent == NO_NODE ? 1 : w->nodes[parent].depth + 1;
    if (w->nodes[id].depth > w->max_local)
        w->max_local = w->nodes[id].depth;
    nslot *sl = &w->nslots[i];
    sl->gen = w->gen;
    sl->ret = ret;
    sl->parent = parent;
    sl->node = id;
    return id;
}

static bool head_less(const whead *a, const whead *b) {
    if (a->pos != b->pos)
        return a->pos < b->pos;
    if (a->local != b->local)
        return a->local < b->local;
    return a->real < b->real;
}

/* intern_tmp returns the state holding the heads in tmp (sorted first), NO_STATE when empty
 * or a bound is hit. */
static uint32_t intern_tmp(gwalker *w) {
    uint32_t n = w->n_tmp;
    if (n == 0)
        return NO_STATE;
    whead *h = w->tmp;
    for (uint32_t i = 1; i < n; i++) {
        whead x = h[i];
        uint32_t j = i;
        while (j > 0 && head_less(&x, &h[j - 1])) {
            h[j] = h[j - 1];
            j--;
        }
        h[j] = x;
    }
    uint64_t hash = 0x9e3779b97f4a7c15ull ^ n;
    for (uint32_t k = 0; k < n; k++) {
        hash ^= ((uint64_t)h[k].pos << 40) ^ ((uint64_t)h[k].local << 20) ^ h[k].real;
        hash *= 0xff51afd7ed558ccdull;
        hash ^= hash >> 31;
    }
    uint32_t i = mix32(hash) & (STATE_SLOTS - 1);
    for (;; i = (i + 1) & (STATE_SLOTS - 1)) {
        sslot *sl = &w->sslots[i];
        if (sl->gen != w->gen)
            break;
        const wstate *st = &w->states[sl->state];
        if (st->hash == hash && st->n == n && memcmp(&w->pool[st->off], h, n * sizeof(whead)) == 0)
            return sl->state;
    }
    if (w->n_states >= WALK_STATES || w->n_pool + n > WALK_POOL) {
        w->truncated = true;
        return NO_STATE;
    }
    uint32_t id = w->n_states++;
    w->states[id].off = w->n_pool;
    w->states[id].n = n;
    w->states[id].hash = hash;
    memcpy(&w->pool[w->n_pool], h, n * sizeof(whead));
    w->n_pool += n;
    w->sslots[i].gen = w->gen;
    w->sslots[i].state = id;
    return id;
}

/* ---- closure ---------------------------------------------------------------------------- */

static void add_head(gwalker *w, uint32_t pos, uint32_t local, uint32_t real) {
    for (uint32_t k = 0; k < w->n_tmp; k++)
        if (w->tmp[k].pos == pos && w->tmp[k].local == local && w->tmp[k].real == real)
            return;
    if (w->n_tmp >= WALK_HEADS) {
        w->truncated = true;
        return;
    }
    w->tmp[w->n_tmp].pos = pos;
    w->tmp[w->n_tmp].local = local;
    w->tmp[w->n_tmp].real = real;
    w->n_tmp++;
}

/* closure expands position pos (with its stacks) into tmp: calls push (or not: tail calls),
 * END pops the local stack, then the real one. */
static void closure(gwalker *w, uint32_t pos, uint32_t local, uint32_t real) {
    const wk_grammar *g = w->g;
    const gel *e = &g->el[pos];
    if (e->kind == GEL_BYTES) {
        add_head(w, pos, local, real);
        return;
    }
    if (e->kind == GEL_CALL) {
        const uint32_t r = e->arg;
        uint32_t inner = local;
        if (g->el[pos + 1].kind != GEL_END) {
            uint32_t d = local == NO_NODE ? 1 : w->nodes[local].depth + 1;
            if (d + real > WK_GRAMMAR_MAX_STACK) {
                w->truncated = true;
                return;
            }
            inner = push_node(w, pos + 1, local);
            if (inner == NO_NODE)
                return;
        }
        for (uint32_t a = g->alt_off[r]; a < g->alt_off[r + 1]; a++)
            closure(w, g->alt_first[a], inner, real);
        return;
    }
    /* END */
    if (local != NO_NODE) {
        const wnode *nd = &w->nodes[local];
        closure(w, nd->ret, nd->parent, real);
    } else if (real == 0) {
        w->tmp_flags |= w->unknown_below ? LV_EXIT : LV_ACCEPT;
    } else {
        closure(w, w->real_stack[real - 1], NO_NODE, real - 1);
    }
}

/* transition: the state after byte from state s (memoized), with its LV_* flags. */
static uint32_t transition(gwalker *w, uint32_t s, uint8_t byte, uint8_t *flags) {
    uint32_t i = mix32(((uint64_t)s << 8) | byte) & (WALK_TRANS - 1);
    for (;; i = (i + 1) & (WALK_TRANS - 1)) {
        tslot *sl = &w->tslots[i];
        if (sl->gen != w->gen)
            break;
        if (sl->state == s && sl->byte == byte) {
            *flags = sl->flags;
            return sl->next;
        }
    }
    const wk_grammar *g = w->g;
    w->n_tmp = 0;
    w->tmp_flags = 0;
    const wstate *st = &w->states[s];
    for (uint32_t k = 0; k < st->n; k++) {
        const whead h = w->pool[st->off + k]; /* a copy: closure may grow the pool */
        if (gbytes_has(&g->sets[g->el[h.pos].arg], byte))
            closure(w, h.pos + 1, h.local, h.real);
    }
    uint8_t f = w->tmp_flags;
    uint32_t next = intern_tmp(w);
    *flags = f;
    if (w->n_trans * 4 < WALK_TRANS * 3) {
        tslot *sl = &w->tslots[i];
        sl->gen = w->gen;
        sl->state = s;
        sl->byte = byte;
        sl->next = next;
        sl->flags = f;
        w->n_trans++;
    }
    return next;
}

static void mark_tokens(const wk_vocab_index *v, const gtrie_node *nd, uint64_t *bits) {
    for (int32_t id = nd->token; id >= 0; id = v->tok_next[id])
        bits[(uint32_t)id >> 6] |= 1ull << ((uint32_t)id & 63);
}

static void add_exit(gwalker *w, uint32_t node) {
    if (w->n_exits >= w->cap_exits) {
        uint32_t nc = w->cap_exits ? w->cap_exits * 2 : 64;
        uint32_t *p = realloc(w->exits, nc * sizeof(uint32_t));
        if (p == NULL) {
            w->nomem = true;
            return;
        }
        w->exits = p;
        w->cap_exits = nc;
    }
    w->exits[w->n_exits++] = node;
}

/* walk runs the DFS below trie node start from state s0. */
static void walk(gwalker *w, const wk_vocab_index *v, uint32_t start, uint32_t s0, uint64_t *bits) {
    uint32_t sp = 0;
    w->lstate[0] = s0;
    w->cursor[0] = start + 1;
    w->tend[0] = v->nodes[start].end;
    for (;;) {
        if (w->cursor[sp] >= w->tend[sp]) {
            if (sp == 0)
                break;
            sp--;
            continue;
        }
        const uint32_t c = w->cursor[sp];
        const gtrie_node *cn = &v->nodes[c];
        w->cursor[sp] = cn->end; /* the next sibling */
        uint8_t flags;
        uint32_t next = transition(w, w->lstate[sp], cn->byte, &flags);
        if (next == NO_STATE && flags == 0)
            continue;
        if (cn->token >= 0)
            mark_tokens(v, cn, bits);
        const bool has_children = cn->end > c + 1;
        if ((flags & LV_EXIT) && has_children)
            add_exit(w, c);
        if (next != NO_STATE && has_children && sp + 2 < w->levels) {
            sp++;
            w->lstate[sp] = next;
            w->cursor[sp] = c + 1;
            w->tend[sp] = cn->end;
        }
    }
}

static void begin(gwalker *w, const wk_grammar *g, const uint32_t *real_stack, bool unknown_below) {
    w->g = g;
    w->real_stack = real_stack;
    w->unknown_below = unknown_below;
    if (++w->gen == 0) {
        /* 2^32 walks: clear the slots once rather than mistake old entries for new. */
        memset(w->nslots, 0, NODE_SLOTS * sizeof(nslot));
        memset(w->sslots, 0, STATE_SLOTS * sizeof(sslot));
        memset(w->tslots, 0, WALK_TRANS * sizeof(tslot));
        w->gen = 1;
    }
    w->n_nodes = 0;
    w->n_states = 0;
    w->n_pool = 0;
    w->n_trans = 0;
    w->n_tmp = 0;
    w->tmp_flags = 0;
    w->max_local = 0;
    w->truncated = false;
    w->nomem = false;
    w->n_exits = 0;
}

/* ---- tables ----------------------------------------------------------------------------- */

void gptab_free(gptab *t) {
    if (t == NULL)
        return;
    free(t->sparse);
    free(t->dense);
    free(t->exits);
    free(t);
}

cm_err gwalk_table(const wk_grammar *g, const wk_vocab_index *v, gwalker *w, const gtkey *key,
                   gptab **out) {
    *out = NULL;
    begin(w, g, key->frames, !key->complete);
    memset(w->bits, 0, (size_t)v->words * sizeof(uint64_t));
    add_head(w, key->pos, NO_NODE, key->n_frames);
    uint32_t s0 = intern_tmp(w);
    if (s0 != NO_STATE)
        walk(w, v, 0, s0, w->bits);
    if (w->nomem)
        return CM_ERR_NOMEM;
    gptab *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return CM_ERR_NOMEM;
    uint32_t count = 0;
    for (uint32_t k = 0; k < v->words; k++)
        count += (uint32_t)__builtin_popcountll(w->bits[k]);
    t->n_accepted = count;
    t->n_frames = key->n_frames;
    t->max_local_depth = w->max_local;
    t->truncated = w->truncated;
    if (count < v->n_vocab / SPARSE_MAX_DIV) {
        t->sparse = malloc((count ? count : 1) * sizeof(uint32_t));
        if (t->sparse == NULL)
            goto nomem;
        uint32_t j = 0;
        for (uint32_t k = 0; k < v->words; k++)
            for (uint64_t m = w->bits[k]; m != 0; m &= m - 1)
                t->sparse[j++] = k * 64 + (uint32_t)__builtin_ctzll(m);
    } else {
        t->dense = malloc((size_t)v->words * sizeof(uint64_t));
        if (t->dense == NULL)
            goto nomem;
        memcpy(t->dense, w->bits, (size_t)v->words * sizeof(uint64_t));
    }
    t->n_exits = w->n_exits;
    if (w->n_exits > 0) {
        t->exits = malloc(w->n_exits * sizeof(uint32_t));
        if (t->exits == NULL)
            goto nomem;
        memcpy(t->exits, w->exits, w->n_exits * sizeof(uint32_t));
    }
    *out = t;
    return CM_OK;
nomem:
    gptab_free(t);
    return CM_ERR_NOMEM;
}

bool gwalk_exact(const wk_grammar *g, const wk_vocab_index *v, gwalker *w, uint32_t pos,
                 bool pop_first, const uint32_t *stack, uint32_t depth, uint32_t start_node,
                 uint64_t *allowed) {
    begin(w, g, stack, false);
    if (pop_first) {
        if (depth == 0)
            return false; /* the sentence is complete: nothing may follow */
        closure(w, stack[depth - 1], NO_NODE, depth - 1);
    } else {
        add_head(w, pos, NO_NODE, depth);
    }
    uint32_t s0 = intern_tmp(w);
    if (s0 != NO_STATE)
        walk(w, v, start_node, s0, allowed);
    return w->truncated;
}

/* ---- the shared tables of a grammar ----------------------------------------------------- */

#define GTABLES_MAX_ENTRIES (1u << 16)

gtables *gtables_get(wk_grammar *g, const wk_vocab_index *v) {
    pthread_mutex_lock(&g->tables_mu);
    gtables *t = g->tables;
    while (t != NULL && t->vocab_serial != v->serial)
        t = t->next;
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t != NULL) {
            t->mask = 63;
            t->slots = calloc(t->mask + 1, sizeof(gtentry));
            if (t->slots == NULL) {
                free(t);
                t = NULL;
            } else {
                t->vocab_serial = v->serial;
                pthread_mutex_init(&t->mu, NULL);
                t->next = g->tables;
                g->tables = t;
            }
        }
    }
    pthread_mutex_unlock(&g->tables_mu);
    return t;
}

static size_t gptab_bytes(const gptab *p, const wk_vocab_index *v) {
    size_t b = sizeof(*p) + (size_t)p->n_exits * sizeof(uint32_t);
    b += p->sparse != NULL ? (size_t)p->n_accepted * sizeof(uint32_t)
                           : (size_t)v->words * sizeof(uint64_t);
    return b;
}

static uint32_t key_hash(const gtkey *k) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ k->pos ^ ((uint64_t)k->n_frames << 32) ^
                 ((uint64_t)k->complete << 40);
    for (uint32_t i = 0; i < k->n_frames; i++) {
        h ^= k->frames[i];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 29;
    }
    h *= 0xc4ceb9fe1a85ec53ull;
    return (uint32_t)(h >> 32);
}

static bool key_equal(const gtkey *a, const gtkey *b) {
    return a->pos == b->pos && a->n_frames == b->n_frames && a->complete == b->complete &&
           memcmp(a->frames, b->frames, a->n_frames * sizeof(uint32_t)) == 0;
}

/* slot_of finds key's slot: the entry holding it or the empty one where it would go. */
static gtentry *slot_of(gtentry *slots, uint32_t mask, const gtkey *key) {
    uint32_t i = key_hash(key) & mask;
    while (slots[i].tab != NULL && !key_equal(&slots[i].key, key))
        i = (i + 1) & mask;
    return &slots[i];
}

static bool grow_slots(gtables *t) {
    uint32_t nm = t->mask * 2 + 1;
    gtentry *ns = calloc((size_t)nm + 1, sizeof(gtentry));
    if (ns == NULL)
        return false;
    for (uint32_t i = 0; i <= t->mask; i++)
        if (t->slots[i].tab != NULL)
            *slot_of(ns, nm, &t->slots[i].key) = t->slots[i];
    free(t->slots);
    t->slots = ns;
    t->mask = nm;
    return true;
}

gptab *gtables_find(const wk_grammar *g, gtables *t, const wk_vocab_index *v, uint32_t pos,
                    const uint32_t *stack, uint32_t depth) {
    gtkey key;
    memset(&key, 0, sizeof(key));
    key.pos = pos;
    key.n_frames = depth < GRAMMAR_CTX_FRAMES ? depth : GRAMMAR_CTX_FRAMES;
    key.complete = depth <= GRAMMAR_CTX_FRAMES;
    memcpy(key.frames, stack + depth - key.n_frames, key.n_frames * sizeof(uint32_t));
    pthread_mutex_lock(&t->mu);
    gptab *p = slot_of(t->slots, t->mask, &key)->tab;
    if (p == NULL && t->bytes < GRAMMAR_TABLE_BYTES && t->n_used < GTABLES_MAX_ENTRIES &&
        ((t->n_used + 1) * 2 <= t->mask || grow_slots(t))) {
        gwalker *w = gwalker_acquire(v);
        if (w != NULL && gwalk_table(g, v, w, &key, &p) == CM_OK) {
            gtentry *e = slot_of(t->slots, t->mask, &key);
            e->key = key;
            e->tab = p;
            t->n_used++;
            t->bytes += gptab_bytes(p, v);
        }
        gwalker_release(v, w);
    }
    pthread_mutex_unlock(&t->mu);
    return p;
}

void gtables_free_all(gtables *t) {
    while (t != NULL) {
        gtables *next = t->next;
        for (uint32_t k = 0; k <= t->mask; k++)
            gptab_free(t->slots[k].tab);
        pthread_mutex_destroy(&t->mu);
        free(t->slots);
        free(t);
        t = next;
    }
}
