/*
 * wk_grammar: grammar text -> compiled rules (see grammar.h for the syntax, grammar_impl.h for
 * the compiled form).
 *
 * One recursive-descent pass builds rules and elements; groups, repetitions and non-ASCII
 * character classes become helper rules. A second pass checks the result: every referenced
 * rule defined, the start rule present, no left recursion (a rule reaching itself without
 * consuming a byte would make the matcher's closure loop) and every reachable rule productive
 * (can finish), which is what lets the matcher treat "a live parse position" as "a valid
 * prefix". Everything is bounded by the WK_GRAMMAR_MAX_* limits.
 */
#include "grammar.h"
#include "grammar_impl.h"
#include "tokenizer_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CLASS_RANGES 4096u
#define MAX_LEFT_CHAIN 1000u

typedef struct gvec {
    gel *v;
    uint32_t n, cap;
} gvec;

typedef struct brule {
    const char *name; /* into the text (named rules) or NULL for helpers */
    uint32_t name_len;
    uint32_t owner; /* named rule a helper belongs to (for messages) */
    bool defined;
    size_t first_ref; /* text offset of the first reference (undefined-rule messages) */
    uint32_t *alts;   /* first element of each alternative */
    uint32_t n_alts, cap_alts;
} brule;

typedef struct cp_range {
    uint32_t lo, hi;
} cp_range;

typedef struct class_memo {
    cp_range *ranges;
    uint32_t n;
    uint32_t rule;
} class_memo;

#define CLASS_MEMO 64

typedef struct gbuild {
    const char *s;
    size_t len, i;
    char *err;
    size_t errlen;
    cm_err rv;
    brule *rules;
    uint32_t n_rules, cap_rules;
    int32_t *name_slot; /* (name_mask + 1) rule ids of named rules, -1 empty */
    uint32_t name_mask;
    gvec el;
    gbytes *sets;
    uint32_t n_sets, cap_sets;
    int32_t *set_slot;
    uint32_t set_mask;
    class_memo memo[CLASS_MEMO];
    uint32_t n_memo;
    uint32_t cur_named; /* named rule being parsed */
    uint32_t nesting;
} gbuild;

static void fail_at(gbuild *b, cm_err rv, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* fail_at records the first error with its line and column. */
static void fail_at(gbuild *b, cm_err rv, size_t at, const char *fmt, ...) {
    if (b->rv != CM_OK)
        return;
    b->rv = rv;
    if (b->err == NULL || b->errlen == 0)
        return;
    uint32_t line = 1, col = 1;
    for (size_t k = 0; k < at && k < b->len; k++) {
        if (b->s[k] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    int n = snprintf(b->err, b->errlen, "grammar line %u col %u: ", line, col);
    if (n < 0 || (size_t)n >= b->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err + n, b->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static void fail_msg(gbuild *b, cm_err rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_msg(gbuild *b, cm_err rv, const char *fmt, ...) {
    if (b->rv != CM_OK)
        return;
    b->rv = rv;
    if (b->err == NULL || b->errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, b->errlen, fmt, ap);
    va_end(ap);
}

/* ---- growable arrays -------------------------------------------------------------------- */

static bool grow(void **p, uint32_t *cap, uint32_t need, size_t elem) {
    if (need <= *cap)
        return true;
    uint32_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (q == NULL)
        return false;
    *p = q;
    *cap = nc;
    return true;
}

static bool vec_push(gbuild *b, gvec *v, uint32_t kind, uint32_t arg) {
    if (b->el.n + v->n >= WK_GRAMMAR_MAX_ELEMENTS) {
        fail_at(b, CM_ERR_LIMIT, b->i, "more than %u compiled elements", WK_GRAMMAR_MAX_ELEMENTS);
        return false;
    }
    if (!grow((void **)&v->v, &v->cap, v->n + 1, sizeof(gel))) {
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
        return false;
    }
    v->v[v->n].kind = kind;
    v->v[v->n].arg = arg;
    v->n++;
    return true;
}

/* ---- rules and sets --------------------------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < n; k++) {
        h ^= s[k];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 31);
}

static int32_t new_rule(gbuild *b, const char *name, uint32_t name_len) {
    if (b->n_rules >= WK_GRAMMAR_MAX_RULES) {
        fail_at(b, CM_ERR_LIMIT, b->i, "more than %u rules (helper rules included)",
                WK_GRAMMAR_MAX_RULES);
        return -1;
    }
    if (!grow((void **)&b->rules, &b->cap_rules, b->n_rules + 1, sizeof(brule))) {
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
        return -1;
    }
    brule *r = &b->rules[b->n_rules];
    memset(r, 0, sizeof(*r));
    r->name = name;
    r->name_len = name_len;
    r->owner = name != NULL ? b->n_rules : b->cur_named;
    r->defined = name == NULL; /* helpers are defined as they are made */
    return (int32_t)b->n_rules++;
}

/* rule_by_name finds or creates (undefined) the named rule. */
static int32_t rule_by_name(gbuild *b, const char *name, uint32_t len) {
    uint32_t k = (uint32_t)hash_bytes(name, len) & b->name_mask;
    for (;;) {
        int32_t id = b->name_slot[k];
        if (id < 0)
            break;
        const brule *r = &b->rules[id];
        if (r->name_len == len && memcmp(r->name, name, len) == 0)
            return id;
        k = (k + 1) & b->name_mask;
    }
    int32_t id = new_rule(b, name, len);
    if (id < 0)
        return -1;
    b->rules[id].first_ref = b->i;
    b->name_slot[k] = id;
    return id;
}

static bool rule_add_alt(gbuild *b, uint32_t rule, gvec *seq) {
    /* The alternative's elements go to the global array, END-terminated. */
    if (!vec_push(b, seq, GEL_END, rule))
        return false;
    if (!grow((void **)&b->el.v, &b->el.cap, b->el.n + seq->n, sizeof(gel))) {
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
        return false;
    }
    brule *r = &b->rules[rule];
    if (!grow((void **)&r->alts, &r->cap_alts, r->n_alts + 1, sizeof(uint32_t))) {
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
        return false;
    }
    r->alts[r->n_alts++] = b->el.n;
    memcpy(b->el.v + b->el.n, seq->v, (size_t)seq->n * sizeof(gel));
    b->el.n += seq->n;
    return true;
}

static int32_t set_id(gbuild *b, const gbytes *set) {
    uint32_t k = (uint32_t)hash_bytes(set, sizeof(*set)) & b->set_mask;
    for (;;) {
        int32_t id = b->set_slot[k];
        if (id < 0)
            break;
        if (memcmp(&b->sets[id], set, sizeof(*set)) == 0)
            return id;
        k = (k + 1) & b->set_mask;
    }
    if (b->n_sets * 2 >= b->set_mask) {
        /* Grow the table and re-insert. */
        uint32_t nm = b->set_mask * 2 + 1;
        int32_t *ns = malloc(((size_t)nm + 1) * sizeof(int32_t));
        if (ns == NULL) {
            fail_msg(b, CM_ERR_NOMEM, "out of memory");
            return -1;
        }
        memset(ns, 0xff, ((size_t)nm + 1) * sizeof(int32_t));
        for (uint32_t s = 0; s < b->n_sets; s++) {
            uint32_t j = (uint32_t)hash_bytes(&b->sets[s], sizeof(gbytes)) & nm;
            while (ns[j] >= 0)
                j = (j + 1) & nm;
            ns[j] = (int32_t)s;
        }
        free(b->set_slot);
        b->set_slot = ns;
        b->set_mask = nm;
        k = (uint32_t)hash_bytes(set, sizeof(*set)) & b->set_mask;
        while (b->set_slot[k] >= 0)
            k = (k + 1) & b->set_mask;
    }
    if (!grow((void **)&b->sets, &b->cap_sets, b->n_sets + 1, sizeof(gbytes))) {
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
        return -1;
    }
    b->sets[b->n_sets] = *set;
    b->set_slot[k] = (int32_t)b->n_sets;
    return (int32_t)b->n_sets++;
}

static bool push_set(gbuild *b, gvec *seq, const gbytes *set) {
    int32_t id = set_id(b, set);
    return id >= 0 && vec_push(b, seq, GEL_BYTES, (uint32_t)id);
}

static bool push_byte(gbuild *b, gvec *seq, uint8_t byte) {
    gbytes s;
    memset(&s, 0, sizeof(s));
    s.w[byte >> 6] |= 1ull << (byte & 63);
    return push_set(b, seq, &s);
}

static void set_range(gbytes *s, uint32_t lo, uint32_t hi) {
    for (uint32_t c = lo; c <= hi; c++)
        s->w[c >> 6] |= 1ull << (c & 63);
}

/* ---- lexing ----------------------------------------------------------------------------- */

static void skip_space(gbuild *b) {
    while (b->i < b->len) {
        char c = b->s[b->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            b->i++;
        } else if (c == '#') {
            while (b->i < b->len && b->s[b->i] != '\n')
                b->i++;
        } else {
            break;
        }
    }
}

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static size_t name_len_at(const gbuild *b, size_t at) {
    size_t k = at;
    while (k < b->len && is_name_char(b->s[k]))
        k++;
    return k - at;
}

/* at_definition: the text at b->i is "name ::=" (a new rule starts; the current one ends). */
static bool at_definition(const gbuild *b) {
    size_t n = name_len_at(b, b->i);
    if (n == 0)
        return false;
    size_t k = b->i + n;
    while (k < b->len && (b->s[k] == ' ' || b->s[k] == '\t' || b->s[k] == '\r' || b->s[k] == '\n'))
        k++;
    return k + 3 <= b->len && memcmp(b->s + k, "::=", 3) == 0;
}

/* read_char reads one (possibly escaped) character as a code point at b->i; in_class allows
 * the class escapes. Returns false on error (recorded). */
static bool read_char(gbuild *b, bool in_class, uint32_t *cp) {
    size_t at = b->i;
    if (b->i >= b->len) {
        fail_at(b, CM_ERR_INVALID, at, "unterminated %s", in_class ? "class" : "literal");
        return false;
    }
    uint8_t c = (uint8_t)b->s[b->i];
    if (c == '\\') {
        if (b->i + 1 >= b->len) {
            fail_at(b, CM_ERR_INVALID, at, "dangling backslash");
            return false;
        }
        char e = b->s[b->i + 1];
        b->i += 2;
        int ndig = 0;
        switch (e) {
        case 'n':
            *cp = '\n';
            return true;
        case 'r':
            *cp = '\r';
            return true;
        case 't':
            *cp = '\t';
            return true;
        case 'b':
            *cp = '\b';
            return true;
        case 'f':
            *cp = '\f';
            return true;
        case '\\':
            *cp = '\\';
            return true;
        case '"':
            *cp = '"';
            return true;
        case '/':
            *cp = '/';
            return true;
        case 'x':
            ndig = 2;
            break;
        case 'u':
            ndig = 4;
            break;
        case 'U':
            ndig = 8;
            break;
        default:
            if (in_class && (e == ']' || e == '[' || e == '-' || e == '^')) {
                *cp = (uint32_t)e;
                return true;
            }
            fail_at(b, CM_ERR_INVALID, at, "unknown escape \\%c", e);
            return false;
        }
        uint32_t v = 0;
        for (int k = 0; k < ndig; k++) {
            int h = b->i < b->len ? wk_hex_digit(b->s[b->i]) : -1;
            if (h < 0) {
                fail_at(b, CM_ERR_INVALID, at, "escape \\%c needs %d hex digits", e, ndig);
                return false;
            }
            v = v * 16 + (uint32_t)h;
            b->i++;
        }
        if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
            fail_at(b, CM_ERR_INVALID, at, "escape is not a Unicode scalar value");
            return false;
        }
        *cp = v;
        return true;
    }
    if (c < 0x80) {
        *cp = c;
        b->i++;
        return true;
    }
    size_t n = wk_utf8_decode((const uint8_t *)b->s + b->i, b->len - b->i, cp);
    if (n == 0) {
        fail_at(b, CM_ERR_INVALID, at, "invalid UTF-8 in grammar text");
        return false;
    }
    b->i += n;
    return true;
}

/* ---- classes -> UTF-8 byte sequences ---------------------------------------------------- */

typedef struct bseq {
    uint8_t n;
    uint8_t lo[4], hi[4];
} bseq;

typedef struct bseqs {
    bseq *v;
    uint32_t n, cap;
    bool nomem;
} bseqs;

static void bseq_emit(bseqs *out, uint32_t lo, uint32_t hi) {
    char a[4], z[4];
    size_t n = wk_utf8_encode(lo, a);
    (void)wk_utf8_encode(hi, z);
    if (!grow((void **)&out->v, &out->cap, out->n + 1, sizeof(bseq))) {
        out->nomem = true;
        return;
    }
    bseq *s = &out->v[out->n++];
    /* wk_utf8_encode writes at most 4 bytes; the bound also tells gcc -O3, whose
     * stringop-overflow check cannot see it and fails a Release -Werror build. */
    if (n > sizeof s->lo)
        n = sizeof s->lo;
    s->n = (uint8_t)n;
    for (size_t k = 0; k < n; k++) {
        s->lo[k] = (uint8_t)a[k];
        s->hi[k] = (uint8_t)z[k];
    }
}

/* utf8_split turns the code point range [lo, hi] (no surrogates inside) into byte-range
 * sequences: first at the encoded-length boundaries, then until every continuation position
 * spans whole 6-bit blocks, so each piece is a product of byte ranges. */
static void utf8_split(bseqs *out, uint32_t lo, uint32_t hi) {
    static const uint32_t bounds[] = {0x7F, 0x7FF, 0xFFFF};
    if (lo > hi)
        return;
    for (int k = 0; k < 3; k++) {
        if (lo <= bounds[k] && hi > bounds[k]) {
            utf8_split(out, lo, bounds[k]);
            utf8_split(out, bounds[k] + 1, hi);
            return;
        }
    }
    if (hi < 0x80) {
        bseq_emit(out, lo, hi);
        return;
    }
    int n = hi < 0x800 ? 2 : hi < 0x10000 ? 3 : 4;
    for (int k = 1; k < n; k++) {
        uint32_t m = (1u << (6 * k)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0) {
                utf8_split(out, lo, lo | m);
                utf8_split(out, (lo | m) + 1, hi);
                return;
            }
            if ((hi & m) != m) {
                utf8_split(out, lo, (hi & ~m) - 1);
                utf8_split(out, hi & ~m, hi);
                return;
            }
        }
    }
    bseq_emit(out, lo, hi);
}

static int range_cmp(const void *a, const void *b) {
    const cp_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo ? 1 : 0;
}

/* normalize sorts and merges ranges, applies negation and removes surrogates. */
static uint32_t normalize_ranges(cp_range *r, uint32_t n, bool negate, cp_range *out) {
    qsort(r, n, sizeof(*r), range_cmp);
    uint32_t m = 0;
    for (uint32_t k = 0; k < n; k++) {
        if (m > 0 && r[k].lo <= out[m - 1].hi + 1) {
            if (r[k].hi > out[m - 1].hi)
                out[m - 1].hi = r[k].hi;
        } else {
            out[m++] = r[k];
        }
    }
    if (negate) {
        /* Complement in place via a copy (at most m + 1 ranges). */
        uint32_t prev = 0, nn = 0;
        cp_range tmp[MAX_CLASS_RANGES + 1];
        for (uint32_t k = 0; k < m; k++) {
            if (out[k].lo > prev)
                tmp[nn++] = (cp_range){prev, out[k].lo - 1};
            prev = out[k].hi + 1;
        }
        if (prev <= 0x10FFFF)
            tmp[nn++] = (cp_range){prev, 0x10FFFF};
        memcpy(out, tmp, nn * sizeof(*out));
        m = nn;
    }
    /* Remove surrogates (they cannot be encoded). */
    uint32_t w = 0;
    cp_range tmp2[2 * MAX_CLASS_RANGES + 2];
    for (uint32_t k = 0; k < m; k++) {
        cp_range x = out[k];
        if (x.hi < 0xD800 || x.lo > 0xDFFF) {
            tmp2[w++] = x;
            continue;
        }
        if (x.lo < 0xD800)
            tmp2[w++] = (cp_range){x.lo, 0xD7FF};
        if (x.hi > 0xDFFF)
            tmp2[w++] = (cp_range){0xE000, x.hi};
    }
    memcpy(out, tmp2, w * sizeof(*out));
    return w;
}

/* emit_class appends the elements matching one code point of ranges[0..n). */
static bool emit_class(gbuild *b, gvec *seq, const cp_range *ranges, uint32_t n, size_t at) {
    if (n == 0) {
        fail_at(b, CM_ERR_INVALID, at, "empty character class");
        return false;
    }
    if (ranges[n - 1].hi < 0x80) {
        gbytes s;
        memset(&s, 0, sizeof(s));
        for (uint32_t k = 0; k < n; k++)
            set_range(&s, ranges[k].lo, ranges[k].hi);
        return push_set(b, seq, &s);
    }
    for (uint32_t k = 0; k < b->n_memo; k++) {
        const class_memo *m = &b->memo[k];
        if (m->n == n && memcmp(m->ranges, ranges, n * sizeof(*ranges)) == 0)
            return vec_push(b, seq, GEL_CALL, m->rule);
    }
    bseqs bs = {0};
    for (uint32_t k = 0; k < n; k++)
        utf8_split(&bs, ranges[k].lo, ranges[k].hi);
    if (bs.nomem) {
        free(bs.v);
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
        return false;
    }
    /* Merge sequences that differ only in their first byte range (same length and tails). */
    bool *dead = calloc(bs.n ? bs.n : 1, sizeof(bool));
    gbytes *first = calloc(bs.n ? bs.n : 1, sizeof(gbytes));
    int32_t rule = new_rule(b, NULL, 0);
    bool ok = dead != NULL && first != NULL && rule >= 0;
    if (dead == NULL || first == NULL)
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
    for (uint32_t k = 0; ok && k < bs.n; k++) {
        set_range(&first[k], bs.v[k].lo[0], bs.v[k].hi[0]);
        for (uint32_t j = 0; j < k && !dead[k]; j++) {
            if (dead[j] || bs.v[j].n != bs.v[k].n)
                continue;
            bool same = true;
            for (int p = 1; p < bs.v[k].n; p++)
                same = same && bs.v[j].lo[p] == bs.v[k].lo[p] && bs.v[j].hi[p] == bs.v[k].hi[p];
            if (same) {
                for (int w = 0; w < 4; w++)
                    first[j].w[w] |= first[k].w[w];
                dead[k] = true;
            }
        }
    }
    gvec alt = {0};
    for (uint32_t k = 0; ok && k < bs.n; k++) {
        if (dead[k])
            continue;
        alt.n = 0;
        ok = push_set(b, &alt, &first[k]);
        for (int p = 1; ok && p < bs.v[k].n; p++) {
            gbytes s;
            memset(&s, 0, sizeof(s));
            set_range(&s, bs.v[k].lo[p], bs.v[k].hi[p]);
            ok = push_set(b, &alt, &s);
        }
        ok = ok && rule_add_alt(b, (uint32_t)rule, &alt);
    }
    free(alt.v);
    free(dead);
    free(first);
    free(bs.v);
    if (!ok)
        return false;
    if (b->n_memo < CLASS_MEMO) {
        class_memo *m = &b->memo[b->n_memo];
        m->ranges = malloc(n * sizeof(*ranges));
        if (m->ranges != NULL) {
            memcpy(m->ranges, ranges, n * sizeof(*ranges));
            m->n = n;
            m->rule = (uint32_t)rule;
            b->n_memo++;
        }
    }
    return vec_push(b, seq, GEL_CALL, (uint32_t)rule);
}

static bool parse_class(gbuild *b, gvec *seq) {
    size_t at = b->i;
    b->i++; /* [ */
    bool negate = false;
    if (b->i < b->len && b->s[b->i] == '^') {
        negate = true;
        b->i++;
    }
    cp_range *r = malloc(MAX_CLASS_RANGES * sizeof(*r));
    cp_range *norm = malloc((2 * MAX_CLASS_RANGES + 2) * sizeof(*norm));
    bool ok = r != NULL && norm != NULL;
    if (!ok)
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
    uint32_t n = 0;
    while (ok) {
        if (b->i >= b->len) {
            fail_at(b, CM_ERR_INVALID, at, "unterminated character class");
            ok = false;
            break;
        }
        if (b->s[b->i] == ']') {
            b->i++;
            break;
        }
        uint32_t lo, hi;
        ok = read_char(b, true, &lo);
        if (!ok)
            break;
        hi = lo;
        if (b->i + 1 < b->len && b->s[b->i] == '-' && b->s[b->i + 1] != ']') {
            b->i++;
            ok = read_char(b, true, &hi);
            if (!ok)
                break;
            if (hi < lo) {
                fail_at(b, CM_ERR_INVALID, at, "class range out of order");
                ok = false;
                break;
            }
        }
        if (n >= MAX_CLASS_RANGES) {
            fail_at(b, CM_ERR_LIMIT, at, "more than %u ranges in a class", MAX_CLASS_RANGES);
            ok = false;
            break;
        }
        r[n++] = (cp_range){lo, hi};
    }
    if (ok) {
        uint32_t m = normalize_ranges(r, n, negate, norm);
        ok = emit_class(b, seq, norm, m, at);
    }
    free(r);
    free(norm);
    return ok;
}

static bool parse_literal(gbuild *b, gvec *seq) {
    size_t at = b->i;
    b->i++; /* " */
    for (;;) {
        if (b->i >= b->len) {
            fail_at(b, CM_ERR_INVALID, at, "unterminated literal");
            return false;
        }
        if (b->s[b->i] == '"') {
            b->i++;
            return true;
        }
        uint32_t cp;
        if (!read_char(b, false, &cp))
            return false;
        char u[4];
        size_t n = wk_utf8_encode(cp, u);
        for (size_t k = 0; k < n; k++)
            if (!push_byte(b, seq, (uint8_t)u[k]))
                return false;
    }
}

/* ---- sequences, alternatives, repetition ------------------------------------------------ */

static bool parse_alternatives(gbuild *b, uint32_t rule, bool nested);

/* helper_of makes a helper rule with alternatives (item + tail_call?) and (empty when
 * optional); returns its id or -1. */
static int32_t helper_rule(gbuild *b, const gel *item, uint32_t n_item, int32_t tail_call,
                           bool self_tail) {
    int32_t r = new_rule(b, NULL, 0);
    if (r < 0)
        return -1;
    gvec alt = {0};
    bool ok = true;
    for (uint32_t k = 0; ok && k < n_item; k++)
        ok = vec_push(b, &alt, item[k].kind, item[k].arg);
    if (ok && self_tail)
        ok = vec_push(b, &alt, GEL_CALL, (uint32_t)r);
    else if (ok && tail_call >= 0)
        ok = vec_push(b, &alt, GEL_CALL, (uint32_t)tail_call);
    ok = ok && rule_add_alt(b, (uint32_t)r, &alt);
    alt.n = 0;
    ok = ok && rule_add_alt(b, (uint32_t)r, &alt);
    free(alt.v);
    return ok ? r : -1;
}

/* repeat rewrites seq[start..n) (the last item) as item{min,max} (max UINT32_MAX = no
 * bound). */
static bool repeat(gbuild *b, gvec *seq, uint32_t start, uint32_t min, uint32_t max) {
    uint32_t n_item = seq->n - start;
    gel *item = malloc((n_item ? n_item : 1) * sizeof(gel));
    if (item == NULL) {
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
        return false;
    }
    memcpy(item, seq->v + start, n_item * sizeof(gel));
    seq->n = start;
    bool ok = true;
    for (uint32_t k = 0; ok && k < min; k++)
        for (uint32_t j = 0; ok && j < n_item; j++)
            ok = vec_push(b, seq, item[j].kind, item[j].arg);
    if (ok && max == UINT32_MAX) {
        int32_t r = helper_rule(b, item, n_item, -1, true);
        ok = r >= 0 && vec_push(b, seq, GEL_CALL, (uint32_t)r);
    } else if (ok && max > min) {
        /* Nested optionals: opt_1 ::= item | "", opt_k ::= item opt_{k-1} | "". */
        int32_t prev = -1;
        for (uint32_t k = 0; ok && k < max - min; k++) {
            prev = helper_rule(b, item, n_item, prev, false);
            ok = prev >= 0;
        }
        ok = ok && vec_push(b, seq, GEL_CALL, (uint32_t)prev);
    }
    free(item);
    return ok;
}

static bool parse_uint(gbuild *b, uint32_t *out) {
    size_t at = b->i;
    uint64_t v = 0;
    size_t k = 0;
    while (b->i < b->len && b->s[b->i] >= '0' && b->s[b->i] <= '9' && k < 10) {
        v = v * 10 + (uint64_t)(b->s[b->i] - '0');
        b->i++;
        k++;
    }
    if (k == 0) {
        fail_at(b, CM_ERR_INVALID, at, "expected a number in {m,n}");
        return false;
    }
    if (v > WK_GRAMMAR_MAX_REPEAT) {
        fail_at(b, CM_ERR_LIMIT, at, "repetition count above %u", WK_GRAMMAR_MAX_REPEAT);
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

static bool parse_postfix(gbuild *b, gvec *seq, uint32_t start) {
    for (;;) {
        skip_space(b);
        if (b->i >= b->len)
            return true;
        char c = b->s[b->i];
        size_t at = b->i;
        if (c == '*' || c == '+' || c == '?') {
            b->i++;
            if (!repeat(b, seq, start, c == '+' ? 1 : 0, c == '?' ? 1 : UINT32_MAX))
                return false;
        } else if (c == '{') {
            b->i++;
            uint32_t min, max;
            skip_space(b);
            if (!parse_uint(b, &min))
                return false;
            skip_space(b);
            max = min;
            if (b->i < b->len && b->s[b->i] == ',') {
                b->i++;
                skip_space(b);
                max = UINT32_MAX;
                if (b->i < b->len && b->s[b->i] != '}' && !parse_uint(b, &max))
                    return false;
                skip_space(b);
            }
            if (b->i >= b->len || b->s[b->i] != '}') {
                fail_at(b, CM_ERR_INVALID, at, "expected '}' after {m,n}");
                return false;
            }
            b->i++;
            if (max < min) {
                fail_at(b, CM_ERR_INVALID, at, "{m,n} with n < m");
                return false;
            }
            if (!repeat(b, seq, start, min, max))
                return false;
        } else {
            return true;
        }
        /* A repeated item is now everything from start (e.g. x?* repeats the optional). */
    }
}

static bool parse_sequence(gbuild *b, gvec *seq, bool nested) {
    for (;;) {
        skip_space(b);
        if (b->i >= b->len)
            return true;
        char c = b->s[b->i];
        uint32_t start = seq->n;
        size_t at = b->i;
        if (c == '|' || (c == ')' && nested))
            return true;
        if (c == '"') {
            if (!parse_literal(b, seq))
                return false;
            /* A repetition applies to the last character of a literal only in regexes; here
             * it applies to the whole literal, as in GBNF. */
        } else if (c == '[') {
            if (!parse_class(b, seq))
                return false;
        } else if (c == '.') {
            b->i++;
            cp_range any = {0, 0x10FFFF};
            cp_range norm[2 * 1 + 2];
            uint32_t m = normalize_ranges(&any, 1, false, norm);
            if (!emit_class(b, seq, norm, m, at))
                return false;
        } else if (c == '(') {
            if (b->nesting >= WK_GRAMMAR_MAX_NESTING) {
                fail_at(b, CM_ERR_LIMIT, at, "parentheses nested deeper than %u",
                        WK_GRAMMAR_MAX_NESTING);
                return false;
            }
            b->i++;
            int32_t r = new_rule(b, NULL, 0);
            if (r < 0)
                return false;
            b->nesting++;
            bool ok = parse_alternatives(b, (uint32_t)r, true);
            b->nesting--;
            if (!ok)
                return false;
            if (b->i >= b->len || b->s[b->i] != ')') {
                fail_at(b, CM_ERR_INVALID, at, "unclosed '('");
                return false;
            }
            b->i++;
            b->rules[r].defined = true;
            if (!vec_push(b, seq, GEL_CALL, (uint32_t)r))
                return false;
        } else if (is_name_char(c)) {
            if (!nested && at_definition(b))
                return true;
            size_t n = name_len_at(b, b->i);
            int32_t r = rule_by_name(b, b->s + b->i, (uint32_t)n);
            if (r < 0)
                return false;
            b->i += n;
            if (!vec_push(b, seq, GEL_CALL, (uint32_t)r))
                return false;
        } else {
            fail_at(b, CM_ERR_INVALID, at, "unexpected character '%c'", c);
            return false;
        }
        if (!parse_postfix(b, seq, start))
            return false;
    }
}

static bool parse_alternatives(gbuild *b, uint32_t rule, bool nested) {
    gvec seq = {0};
    bool ok = true;
    for (;;) {
        seq.n = 0;
        ok = parse_sequence(b, &seq, nested) && rule_add_alt(b, rule, &seq);
        if (!ok)
            break;
        skip_space(b);
        if (b->i < b->len && b->s[b->i] == '|') {
            b->i++;
            continue;
        }
        break;
    }
    free(seq.v);
    return ok;
}

static bool parse_grammar(gbuild *b) {
    for (;;) {
        skip_space(b);
        if (b->i >= b->len)
            return true;
        size_t at = b->i;
        size_t n = name_len_at(b, b->i);
        if (n == 0 || !at_definition(b)) {
            fail_at(b, CM_ERR_INVALID, at, "expected 'name ::='");
            return false;
        }
        int32_t r = rule_by_name(b, b->s + b->i, (uint32_t)n);
        if (r < 0)
            return false;
        if (b->rules[r].defined) {
            fail_at(b, CM_ERR_INVALID, at, "rule '%.*s' defined twice", (int)n, b->s + b->i);
            return false;
        }
        b->rules[r].defined = true;
        b->cur_named = (uint32_t)r;
        b->i += n;
        skip_space(b);
        b->i += 3; /* ::= */
        if (!parse_alternatives(b, (uint32_t)r, false))
            return false;
        skip_space(b);
        if (b->i < b->len && !at_definition(b)) {
            fail_at(b, CM_ERR_INVALID, b->i, "unexpected '%c'", b->s[b->i]);
            return false;
        }
    }
}

/* ---- checks ----------------------------------------------------------------------------- */

static const char *rule_label(const gbuild *b, uint32_t r, uint32_t *len) {
    const brule *x = &b->rules[b->rules[r].owner];
    *len = x->name_len;
    return x->name != NULL ? x->name : "?";
}

/* check runs the reachability, productivity and left-recursion checks. */
static bool check(gbuild *b, uint32_t root) {
    uint32_t n = b->n_rules;
    uint8_t *reach = calloc(n, 1);
    uint8_t *nullable = calloc(n, 1);
    uint8_t *productive = calloc(n, 1);
    uint32_t *work = malloc((size_t)n * sizeof(uint32_t));
    uint32_t *chain = calloc(n, sizeof(uint32_t)); /* longest left-call chain from a rule */
    uint8_t *mark = calloc(n, 1);                  /* 0 new, 1 on the DFS path, 2 done */
    uint32_t *dfs = malloc((size_t)n * 2 * sizeof(uint32_t));
    bool ok = reach && nullable && productive && work && chain && mark && dfs;
    if (!ok)
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
    /* Every rule exists because it was defined or referenced: undefined = referenced only. */
    for (uint32_t r = 0; ok && r < n; r++) {
        if (!b->rules[r].defined) {
            fail_at(b, CM_ERR_INVALID, b->rules[r].first_ref, "undefined rule '%.*s'",
                    (int)b->rules[r].name_len, b->rules[r].name);
            ok = false;
        }
    }
    /* Reachability. */
    uint32_t nw = 0;
    if (ok) {
        reach[root] = 1;
        work[nw++] = root;
    }
    while (ok && nw > 0) {
        uint32_t r = work[--nw];
        const brule *x = &b->rules[r];
        for (uint32_t a = 0; a < x->n_alts; a++)
            for (uint32_t e = x->alts[a]; b->el.v[e].kind != GEL_END; e++) {
                if (b->el.v[e].kind != GEL_CALL)
                    continue;
                uint32_t c = b->el.v[e].arg;
                if (!b->rules[c].defined) {
                    fail_at(b, CM_ERR_INVALID, b->rules[c].first_ref, "undefined rule '%.*s'",
                            (int)b->rules[c].name_len, b->rules[c].name);
                    ok = false;
                    break;
                }
                if (!reach[c]) {
                    reach[c] = 1;
                    work[nw++] = c;
                }
            }
    }
    /* Nullable and productive: fixed points. */
    for (bool changed = ok; changed;) {
        changed = false;
        for (uint32_t r = 0; r < n; r++) {
            const brule *x = &b->rules[r];
            for (uint32_t a = 0; a < x->n_alts; a++) {
                bool nul = true, prod = true;
                for (uint32_t e = x->alts[a]; b->el.v[e].kind != GEL_END; e++) {
                    const gel *g = &b->el.v[e];
                    if (g->kind == GEL_BYTES) {
                        nul = false;
                    } else {
                        nul = nul && nullable[g->arg];
                        prod = prod && productive[g->arg];
                    }
                }
                if (nul && !nullable[r]) {
                    nullable[r] = 1;
                    changed = true;
                }
                if (prod && !productive[r]) {
                    productive[r] = 1;
                    changed = true;
                }
            }
        }
    }
    for (uint32_t r = 0; ok && r < n; r++) {
        if (reach[r] && !productive[r]) {
            uint32_t l;
            const char *name = rule_label(b, r, &l);
            fail_msg(b, CM_ERR_INVALID, "grammar: rule '%.*s' can never finish", (int)l, name);
            ok = false;
        }
    }
    /* Left recursion: edges r -> c for every call that can happen before r consumed a byte
     * (everything before it in the alternative is nullable); a cycle among them is left
     * recursion. The longest chain of such calls is bounded too (it is the depth of the
     * matcher's closure recursion). */
    uint32_t *edge_off = ok ? calloc((size_t)n + 1, sizeof(uint32_t)) : NULL;
    uint32_t *edges = NULL;
    uint32_t n_edges = 0, cap_edges = 0;
    if (ok && edge_off == NULL) {
        fail_msg(b, CM_ERR_NOMEM, "out of memory");
        ok = false;
    }
    for (uint32_t r = 0; ok && r < n; r++) {
        edge_off[r] = n_edges;
        const brule *x = &b->rules[r];
        for (uint32_t a = 0; ok && reach[r] && a < x->n_alts; a++) {
            for (uint32_t e = x->alts[a]; b->el.v[e].kind == GEL_CALL; e++) {
                if (!grow((void **)&edges, &cap_edges, n_edges + 1, sizeof(uint32_t))) {
                    fail_msg(b, CM_ERR_NOMEM, "out of memory");
                    ok = false;
                    break;
                }
                edges[n_edges++] = b->el.v[e].arg;
                if (!nullable[b->el.v[e].arg])
                    break;
            }
        }
    }
    if (ok)
        edge_off[n] = n_edges;
    for (uint32_t s = 0; ok && s < n; s++) {
        if (!reach[s] || mark[s] != 0)
            continue;
        uint32_t sp = 1;
        dfs[0] = s;
        dfs[1] = edge_off[s];
        mark[s] = 1;
        while (ok && sp > 0) {
            uint32_t r = dfs[(sp - 1) * 2];
            uint32_t ei = dfs[(sp - 1) * 2 + 1];
            if (ei < edge_off[r + 1]) {
                dfs[(sp - 1) * 2 + 1] = ei + 1;
                uint32_t c = edges[ei];
                if (mark[c] == 1) {
                    uint32_t l;
                    const char *name = rule_label(b, c, &l);
                    fail_msg(b, CM_ERR_INVALID,
                             "grammar: left recursion through rule '%.*s' (it can reach itself "
                             "without consuming input)",
                             (int)l, name);
                    ok = false;
                } else if (mark[c] == 0) {
                    mark[c] = 1;
                    dfs[sp * 2] = c;
                    dfs[sp * 2 + 1] = edge_off[c];
                    sp++;
                } else if (chain[r] < chain[c] + 1) {
                    chain[r] = chain[c] + 1;
                }
                continue;
            }
            mark[r] = 2;
            sp--;
            if (sp > 0) {
                uint32_t p = dfs[(sp - 1) * 2];
                if (chain[p] < chain[r] + 1)
                    chain[p] = chain[r] + 1;
            }
            if (chain[r] > MAX_LEFT_CHAIN) {
                fail_msg(b, CM_ERR_LIMIT, "grammar: calls nested more than %u deep before a byte",
                         MAX_LEFT_CHAIN);
                ok = false;
            }
        }
    }
    free(edge_off);
    free(edges);
    free(reach);
    free(nullable);
    free(productive);
    free(work);
    free(chain);
    free(mark);
    free(dfs);
    return ok;
}

/* ---- public ----------------------------------------------------------------------------- */

static void build_free(gbuild *b) {
    for (uint32_t r = 0; r < b->n_rules; r++)
        free(b->rules[r].alts);
    free(b->rules);
    free(b->name_slot);
    free(b->el.v);
    free(b->sets);
    free(b->set_slot);
    for (uint32_t k = 0; k < b->n_memo; k++)
        free(b->memo[k].ranges);
}

cm_err wk_grammar_compile(const char *text, size_t len, const char *root_rule, wk_grammar **out,
                          char *err, size_t errlen) {
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    gbuild b;
    memset(&b, 0, sizeof(b));
    b.s = text;
    b.len = len;
    b.err = err;
    b.errlen = errlen;
    if (text == NULL && len > 0) {
        fail_msg(&b, CM_ERR_INVALID, "grammar: no text");
        return b.rv;
    }
    if (len > WK_GRAMMAR_MAX_TEXT_BYTES) {
        fail_msg(&b, CM_ERR_LIMIT, "grammar: text of %zu bytes exceeds %u", len,
                 WK_GRAMMAR_MAX_TEXT_BYTES);
        return b.rv;
    }
    if (memchr(text, '\0', len) != NULL) {
        fail_msg(&b, CM_ERR_INVALID, "grammar: text contains a NUL byte");
        return b.rv;
    }
    if (root_rule == NULL)
        root_rule = "root";
    wk_grammar *g = NULL;
    b.name_mask = 1;
    while (b.name_mask < 2 * WK_GRAMMAR_MAX_RULES)
        b.name_mask <<= 1;
    b.name_mask -= 1;
    b.set_mask = 255;
    b.name_slot = malloc(((size_t)b.name_mask + 1) * sizeof(int32_t));
    b.set_slot = malloc(((size_t)b.set_mask + 1) * sizeof(int32_t));
    if (b.name_slot == NULL || b.set_slot == NULL) {
        fail_msg(&b, CM_ERR_NOMEM, "out of memory");
        goto done;
    }
    memset(b.name_slot, 0xff, ((size_t)b.name_mask + 1) * sizeof(int32_t));
    memset(b.set_slot, 0xff, ((size_t)b.set_mask + 1) * sizeof(int32_t));
    if (!parse_grammar(&b))
        goto done;
    size_t root_len = strlen(root_rule);
    int32_t root = -1;
    {
        uint32_t k = (uint32_t)hash_bytes(root_rule, root_len) & b.name_mask;
        for (; b.name_slot[k] >= 0; k = (k + 1) & b.name_mask) {
            const brule *r = &b.rules[b.name_slot[k]];
            if (r->name_len == root_len && memcmp(r->name, root_rule, root_len) == 0) {
                root = b.name_slot[k];
                break;
            }
        }
    }
    if (root < 0 || !b.rules[root].defined) {
        fail_msg(&b, CM_ERR_INVALID, "grammar: no start rule '%s'", root_rule);
        goto done;
    }
    if (!check(&b, (uint32_t)root))
        goto done;

    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        fail_msg(&b, CM_ERR_NOMEM, "out of memory");
        goto done;
    }
    atomic_init(&g->refs, 1);
    pthread_mutex_init(&g->tables_mu, NULL);
    g->n_rules = b.n_rules;
    g->root = (uint32_t)root;
    uint32_t n_alts = 0;
    for (uint32_t r = 0; r < b.n_rules; r++)
        n_alts += b.rules[r].n_alts;
    g->alt_off = malloc(((size_t)b.n_rules + 1) * sizeof(uint32_t));
    g->alt_first = malloc(((size_t)n_alts + 1) * sizeof(uint32_t));
    g->n_el = b.el.n;
    g->el = b.el.v;
    b.el.v = NULL;
    g->n_sets = b.n_sets;
    g->sets = b.sets;
    b.sets = NULL;
    if (g->alt_off == NULL || g->alt_first == NULL) {
        fail_msg(&b, CM_ERR_NOMEM, "out of memory");
        goto done;
    }
    uint32_t k = 0;
    for (uint32_t r = 0; r < b.n_rules; r++) {
        g->alt_off[r] = k;
        memcpy(g->alt_first + k, b.rules[r].alts, b.rules[r].n_alts * sizeof(uint32_t));
        k += b.rules[r].n_alts;
    }
    g->alt_off[b.n_rules] = k;

done:
    build_free(&b);
    if (b.rv != CM_OK) {
        if (g != NULL) {
            g->tables = NULL;
            wk_grammar_unref(g);
        }
        return b.rv;
    }
    *out = g;
    return CM_OK;
}

wk_grammar *wk_grammar_ref(wk_grammar *g) {
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void wk_grammar_unref(wk_grammar *g) {
    if (g == NULL)
        return;
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    gtables_free_all(g->tables);
    pthread_mutex_destroy(&g->tables_mu);
    free(g->alt_off);
    free(g->alt_first);
    free(g->el);
    free(g->sets);
    free(g);
}

uint32_t wk_grammar_n_rules(const wk_grammar *g) {
    return g->n_rules;
}

uint32_t wk_grammar_n_elements(const wk_grammar *g) {
    return g->n_el;
}
