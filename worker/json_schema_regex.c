/*
 * JSON Schema "pattern" (an ECMAScript regex subset, see json_schema.h) and integer ranges as
 * grammar expressions.
 *
 * A pattern constrains the decoded string, while the grammar writes its JSON encoding, so
 * every character set becomes "the JSON encodings of these characters": raw characters for
 * everything but '"', '\' and controls, which become their escapes (\" \\ \n \t \r \b \f,
 * \u00XX for the other controls). The output is one canonical encoding per string.
 */
#include "json_schema_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h" /* wk_utf8_decode */

#define RX_MAX_RANGES 512
#define RX_MAX_NESTING 32
#define RX_MAX_REPEAT 1000

typedef struct rx_range {
    uint32_t lo, hi;
} rx_range;

typedef struct rx_set {
    rx_range r[RX_MAX_RANGES];
    uint32_t n;
} rx_set;

typedef struct rx {
    js_gen *g;
    const char *s;
    size_t len, i;
    const char *ptr;
    uint32_t nesting;
    const char *anychar; /* "<prefix>char" */
} rx;

static bool rx_fail(rx *x, cm_err rv, const char *what) {
    js_fail(x->g, rv, "%s JSON Schema pattern at %s: %s (offset %zu)",
            rv == CM_ERR_UNSUPPORTED ? "unsupported" : "invalid", x->ptr[0] ? x->ptr : "/", what,
            x->i);
    return false;
}

static bool set_add(rx *x, rx_set *s, uint32_t lo, uint32_t hi) {
    if (s->n >= RX_MAX_RANGES)
        return rx_fail(x, CM_ERR_LIMIT, "character class too large");
    s->r[s->n].lo = lo;
    s->r[s->n].hi = hi;
    s->n++;
    return true;
}

static int rcmp(const void *a, const void *b) {
    const rx_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo ? 1 : 0;
}

static void set_normalize(rx_set *s) {
    qsort(s->r, s->n, sizeof(rx_range), rcmp);
    uint32_t m = 0;
    for (uint32_t k = 0; k < s->n; k++) {
        if (m > 0 && s->r[k].lo <= s->r[m - 1].hi + 1) {
            if (s->r[k].hi > s->r[m - 1].hi)
                s->r[m - 1].hi = s->r[k].hi;
        } else {
            s->r[m++] = s->r[k];
        }
    }
    s->n = m;
}

static bool set_negate(rx *x, rx_set *s) {
    set_normalize(s);
    rx_set out;
    out.n = 0;
    uint32_t prev = 0;
    for (uint32_t k = 0; k < s->n; k++) {
        if (s->r[k].lo > prev && !set_add(x, &out, prev, s->r[k].lo - 1))
            return false;
        prev = s->r[k].hi + 1;
    }
    if (prev <= 0x10FFFF && !set_add(x, &out, prev, 0x10FFFF))
        return false;
    *s = out;
    return true;
}

/* ECMAScript's \s: WhiteSpace and LineTerminator. */
static const rx_range SPACE[] = {
    {0x09, 0x0D},     {0x20, 0x20},     {0xA0, 0xA0},     {0x1680, 0x1680}, {0x2000, 0x200A},
    {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
static const rx_range DIGIT[] = {{'0', '9'}};
static const rx_range WORD[] = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};

static bool add_class_escape(rx *x, rx_set *s, char e) {
    const rx_range *r;
    size_t n;
    switch (e) {
    case 'd':
    case 'D':
        r = DIGIT;
        n = 1;
        break;
    case 'w':
    case 'W':
        r = WORD;
        n = 4;
        break;
    default:
        r = SPACE;
        n = sizeof(SPACE) / sizeof(SPACE[0]);
        break;
    }
    if (e >= 'a') {
        for (size_t k = 0; k < n; k++)
            if (!set_add(x, s, r[k].lo, r[k].hi))
                return false;
        return true;
    }
    rx_set tmp;
    tmp.n = 0;
    for (size_t k = 0; k < n; k++)
        if (!set_add(x, &tmp, r[k].lo, r[k].hi))
            return false;
    if (!set_negate(x, &tmp))
        return false;
    for (uint32_t k = 0; k < tmp.n; k++)
        if (!set_add(x, s, tmp.r[k].lo, tmp.r[k].hi))
            return false;
    return true;
}

/* read_cp reads one literal character (escape or UTF-8) into *cp; *cls is set instead (and
 * *cp untouched) for \d \w \s \D \W \S. */
static bool read_cp(rx *x, uint32_t *cp, char *cls) {
    *cls = 0;
    if (x->i >= x->len)
        return rx_fail(x, CM_ERR_INVALID, "unexpected end");
    unsigned char c = (unsigned char)x->s[x->i];
    if (c != '\\') {
        size_t n = c < 0x80 ? 1 : wk_utf8_decode((const uint8_t *)x->s + x->i, x->len - x->i, cp);
        if (n == 0)
            return rx_fail(x, CM_ERR_INVALID, "invalid UTF-8");
        if (c < 0x80)
            *cp = c;
        x->i += n;
        return true;
    }
    if (x->i + 1 >= x->len)
        return rx_fail(x, CM_ERR_INVALID, "dangling backslash");
    char e = x->s[x->i + 1];
    x->i += 2;
    switch (e) {
    case 'd':
    case 'w':
    case 's':
    case 'D':
    case 'W':
    case 'S':
        *cls = e;
        return true;
    case 'n':
        *cp = '\n';
        return true;
    case 't':
        *cp = '\t';
        return true;
    case 'r':
        *cp = '\r';
        return true;
    case 'f':
        *cp = '\f';
        return true;
    case 'v':
        *cp = '\v';
        return true;
    case '0':
        *cp = 0;
        return true;
    case 'x':
    case 'u': {
        int nd = e == 'x' ? 2 : 4;
        uint32_t v = 0;
        for (int k = 0; k < nd; k++) {
            int h = x->i < x->len ? wk_hex_digit(x->s[x->i]) : -1;
            if (h < 0)
                return rx_fail(x, CM_ERR_INVALID, "bad \\x or \\u escape");
            v = v * 16 + (uint32_t)h;
            x->i++;
        }
        if (v >= 0xD800 && v <= 0xDFFF)
            return rx_fail(x, CM_ERR_UNSUPPORTED, "surrogate escapes");
        *cp = v;
        return true;
    }
    case 'b':
    case 'B':
        return rx_fail(x, CM_ERR_UNSUPPORTED, "word boundaries \\b \\B");
    default:
        if (e >= '1' && e <= '9')
            return rx_fail(x, CM_ERR_UNSUPPORTED, "backreferences");
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z'))
            return rx_fail(x, CM_ERR_UNSUPPORTED, "this escape (\\p, \\k, \\c, ...)");
        *cp = (unsigned char)e; /* an escaped punctuation character is itself */
        return true;
    }
}

/* emit_set writes the JSON encodings of one character of s as a grammar expression. */
static void emit_set(rx *x, rx_set *s, js_buf *out) {
    set_normalize(s);
    js_buf_str(out, "( ");
    bool first = true;
    /* Raw characters: the set minus controls, '"' and '\' (and surrogates). */
    static const rx_range holes[] = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}, {0xD800, 0xDFFF}};
    js_buf cls = {0};
    bool any_raw = false;
    for (uint32_t k = 0; k < s->n; k++) {
        uint32_t lo = s->r[k].lo, hi = s->r[k].hi;
        /* Cut the holes out of [lo, hi]. */
        uint32_t at = lo;
        for (size_t h = 0; h < sizeof(holes) / sizeof(holes[0]) && at <= hi; h++) {
            if (holes[h].hi < at || holes[h].lo > hi)
                continue;
            if (holes[h].lo > at) {
                js_buf_fmt(&cls, "\\U%08X-\\U%08X", at, holes[h].lo - 1);
                any_raw = true;
            }
            at = holes[h].hi + 1;
        }
        if (at <= hi) {
            js_buf_fmt(&cls, "\\U%08X-\\U%08X", at, hi);
            any_raw = true;
        }
    }
    if (any_raw) {
        js_buf_str(out, "[");
        js_buf_add(out, cls.p, cls.n);
        js_buf_str(out, "]");
        first = false;
    }
    if (cls.failed)
        out->failed = true;
    free(cls.p);
    /* Escaped characters. */
    for (uint32_t k = 0; k < s->n; k++) {
        for (uint32_t c = s->r[k].lo; c <= s->r[k].hi && c <= '\\'; c++) {
            const char *esc = NULL;
            char tmp[16];
            if (c == '"')
                esc = "\\\\\\\""; /* grammar literal for the two bytes \" */
            else if (c == '\\')
                esc = "\\\\\\\\";
            else if (c == '\n')
                esc = "\\\\n";
            else if (c == '\t')
                esc = "\\\\t";
            else if (c == '\r')
                esc = "\\\\r";
            else if (c == '\b')
                esc = "\\\\b";
            else if (c == '\f')
                esc = "\\\\f";
            else if (c < 0x20) {
                snprintf(tmp, sizeof(tmp), "\\\\u%04x", c);
                esc = tmp;
            }
            if (esc == NULL)
                continue;
            if (!first)
                js_buf_str(out, " | ");
            js_buf_fmt(out, "\"%s\"", esc);
            first = false;
        }
    }
    if (first) {
        /* Only surrogates: nothing can be written. */
        js_buf_str(out, "[^\\x00-\\U0010FFFF]"); /* an empty class: a compile error later */
        rx_fail(x, CM_ERR_INVALID, "a character class that matches nothing");
    }
    js_buf_str(out, " )");
}

static bool parse_alts(rx *x, js_buf *out, bool top);

static bool parse_class(rx *x, js_buf *out) {
    x->i++; /* [ */
    rx_set s;
    s.n = 0;
    bool neg = false;
    if (x->i < x->len && x->s[x->i] == '^') {
        neg = true;
        x->i++;
    }
    bool first = true;
    for (;;) {
        if (x->i >= x->len)
            return rx_fail(x, CM_ERR_INVALID, "unterminated class");
        if (x->s[x->i] == ']' && !first) {
            x->i++;
            break;
        }
        if (x->s[x->i] == ']' && first) {
            /* "[]" matches nothing in ECMAScript; "[^]" anything. */
            x->i++;
            if (!neg)
                return rx_fail(x, CM_ERR_INVALID, "empty class []");
            break;
        }
        first = false;
        uint32_t lo, hi;
        char cls;
        if (!read_cp(x, &lo, &cls))
            return false;
        if (cls != 0) {
            if (!add_class_escape(x, &s, cls))
                return false;
            continue;
        }
        hi = lo;
        if (x->i + 1 < x->len && x->s[x->i] == '-' && x->s[x->i + 1] != ']') {
            x->i++;
            if (!read_cp(x, &hi, &cls))
                return false;
            if (cls != 0)
                return rx_fail(x, CM_ERR_UNSUPPORTED, "a class escape as a range end");
            if (hi < lo)
                return rx_fail(x, CM_ERR_INVALID, "range out of order");
        }
        if (!set_add(x, &s, lo, hi))
            return false;
    }
    if (neg && !set_negate(x, &s))
        return false;
    emit_set(x, &s, out);
    return true;
}

static bool parse_count(rx *x, uint32_t *out) {
    uint64_t v = 0;
    size_t k = 0;
    while (x->i < x->len && x->s[x->i] >= '0' && x->s[x->i] <= '9' && k < 10) {
        v = v * 10 + (uint64_t)(x->s[x->i] - '0');
        x->i++;
        k++;
    }
    if (k == 0)
        return false;
    if (v > RX_MAX_REPEAT)
        return rx_fail(x, CM_ERR_LIMIT, "repetition count above 1000");
    *out = (uint32_t)v;
    return true;
}

/* is_quantifier_brace: x->i at '{' starting {m}, {m,} or {m,n}. */
static bool is_quantifier_brace(const rx *x) {
    size_t k = x->i + 1;
    size_t d = 0;
    while (k < x->len && x->s[k] >= '0' && x->s[k] <= '9') {
        k++;
        d++;
    }
    if (d == 0)
        return false;
    if (k < x->len && x->s[k] == '}')
        return true;
    if (k >= x->len || x->s[k] != ',')
        return false;
    k++;
    while (k < x->len && x->s[k] >= '0' && x->s[k] <= '9')
        k++;
    return k < x->len && x->s[k] == '}';
}

static bool parse_quantifier(rx *x, js_buf *out) {
    if (x->i >= x->len)
        return true;
    char c = x->s[x->i];
    if (c == '*' || c == '+' || c == '?') {
        js_buf_add(out, &c, 1);
        x->i++;
    } else if (c == '{' && is_quantifier_brace(x)) {
        x->i++;
        uint32_t m, n = 0;
        if (!parse_count(x, &m))
            return false;
        bool open = false, has_n = false;
        if (x->s[x->i] == ',') {
            x->i++;
            if (x->s[x->i] != '}') {
                if (!parse_count(x, &n))
                    return false;
                has_n = true;
            } else {
                open = true;
            }
        } else {
            n = m;
            has_n = true;
        }
        x->i++; /* } */
        if (has_n && n < m)
            return rx_fail(x, CM_ERR_INVALID, "{m,n} with n < m");
        if (open)
            js_buf_fmt(out, "{%u,}", m);
        else
            js_buf_fmt(out, "{%u,%u}", m, n);
    } else {
        return true;
    }
    /* A lazy quantifier matches the same set of whole strings: the '?' changes nothing. */
    if (x->i < x->len && x->s[x->i] == '?')
        x->i++;
    if (x->i < x->len &&
        (x->s[x->i] == '*' || x->s[x->i] == '+' || (x->s[x->i] == '{' && is_quantifier_brace(x))))
        return rx_fail(x, CM_ERR_INVALID, "nothing to repeat");
    return true;
}

static bool parse_seq(rx *x, js_buf *out, bool top, bool *anchored_end) {
    *anchored_end = false;
    js_buf_str(out, "( \"\"");
    for (;;) {
        if (x->i >= x->len)
            break;
        char c = x->s[x->i];
        if (c == '|' || c == ')')
            break;
        if (c == '$') {
            x->i++;
            if (!top || !(x->i >= x->len || x->s[x->i] == '|'))
                return rx_fail(x, CM_ERR_UNSUPPORTED, "'$' other than at the end of the pattern");
            *anchored_end = true;
            break;
        }
        if (c == '^')
            return rx_fail(x, CM_ERR_UNSUPPORTED, "'^' other than at the start of the pattern");
        if (c == '*' || c == '+' || c == '?')
            return rx_fail(x, CM_ERR_INVALID, "nothing to repeat");
        js_buf_str(out, " ");
        if (c == '(') {
            x->i++;
            if (x->i < x->len && x->s[x->i] == '?') {
                if (x->i + 1 < x->len && x->s[x->i + 1] == ':')
                    x->i += 2;
                else
                    return rx_fail(x, CM_ERR_UNSUPPORTED, "lookaround and named groups");
            }
            if (x->nesting >= RX_MAX_NESTING)
                return rx_fail(x, CM_ERR_LIMIT, "groups nested too deep");
            x->nesting++;
            js_buf_str(out, "( ");
            if (!parse_alts(x, out, false))
                return false;
            x->nesting--;
            if (x->i >= x->len || x->s[x->i] != ')')
                return rx_fail(x, CM_ERR_INVALID, "unclosed group");
            x->i++;
            js_buf_str(out, " )");
        } else if (c == '[') {
            if (!parse_class(x, out))
                return false;
        } else if (c == '.') {
            x->i++;
            rx_set s;
            s.n = 0;
            set_add(x, &s, '\n', '\n');
            set_add(x, &s, '\r', '\r');
            set_add(x, &s, 0x2028, 0x2029);
            if (!set_negate(x, &s))
                return false;
            emit_set(x, &s, out);
        } else {
            uint32_t cp;
            char cls;
            if (!read_cp(x, &cp, &cls))
                return false;
            rx_set s;
            s.n = 0;
            if (cls != 0) {
                if (!add_class_escape(x, &s, cls))
                    return false;
            } else {
                set_add(x, &s, cp, cp);
            }
            emit_set(x, &s, out);
        }
        if (!parse_quantifier(x, out))
            return false;
    }
    js_buf_str(out, " )");
    return true;
}

/* parse_alts: alternatives; at the top level each one is anchored on its own (^ at its start,
 * $ at its end) and otherwise padded with "any characters". */
static bool parse_alts(rx *x, js_buf *out, bool top) {
    bool first = true;
    for (;;) {
        if (!first)
            js_buf_str(out, " | ");
        first = false;
        bool start_anchor = false, end_anchor = false;
        if (top && x->i < x->len && x->s[x->i] == '^') {
            start_anchor = true;
            x->i++;
        }
        if (top)
            js_buf_str(out, "( ");
        if (top && !start_anchor)
            js_buf_fmt(out, "%s* ", x->anychar);
        if (!parse_seq(x, out, top, &end_anchor))
            return false;
        if (top && !end_anchor)
            js_buf_fmt(out, " %s*", x->anychar);
        if (top)
            js_buf_str(out, " )");
        if (x->i < x->len && x->s[x->i] == '|') {
            x->i++;
            continue;
        }
        break;
    }
    if (top && x->i < x->len)
        return rx_fail(x, CM_ERR_INVALID, "unbalanced ')'");
    return true;
}

void js_regex_to_grammar(js_gen *g, const char *pattern, const char *ptr, js_buf *expr) {
    rx x;
    memset(&x, 0, sizeof(x));
    x.g = g;
    x.s = pattern;
    x.len = strlen(pattern);
    x.ptr = ptr;
    char anychar[JS_NAME_MAX];
    snprintf(anychar, sizeof(anychar), "%schar", g->prefix);
    x.anychar = anychar;
    js_buf_str(expr, "( ");
    (void)parse_alts(&x, expr, true);
    js_buf_str(expr, " )");
}

/* ---- integer ranges --------------------------------------------------------------------- */

/* same_len: digit strings of n digits between lo and hi (equal lengths, lo <= hi). */
static void same_len(js_buf *b, const char *lo, const char *hi, int n) {
    if (n == 0) {
        js_buf_str(b, "\"\"");
        return;
    }
    if (n == 1) {
        js_buf_fmt(b, "[%c-%c]", lo[0], hi[0]);
        return;
    }
    if (lo[0] == hi[0]) {
        js_buf_fmt(b, "\"%c\" ", lo[0]);
        same_len(b, lo + 1, hi + 1, n - 1);
        return;
    }
    bool lo_zero = true, hi_nine = true;
    for (int k = 1; k < n; k++) {
        lo_zero = lo_zero && lo[k] == '0';
        hi_nine = hi_nine && hi[k] == '9';
    }
    char nines[20], zeros[20];
    memset(nines, '9', sizeof(nines));
    memset(zeros, '0', sizeof(zeros));
    char a = lo[0], z = hi[0];
    char from = lo_zero ? a : (char)(a + 1), to = hi_nine ? z : (char)(z - 1);
    bool first = true;
    js_buf_str(b, "( ");
    if (!lo_zero) {
        js_buf_fmt(b, "\"%c\" ", a);
        same_len(b, lo + 1, nines, n - 1);
        first = false;
    }
    if (from <= to) {
        if (!first)
            js_buf_str(b, " | ");
        js_buf_fmt(b, "[%c-%c] [0-9]{%d}", from, to, n - 1);
        first = false;
    }
    if (!hi_nine) {
        if (!first)
            js_buf_str(b, " | ");
        js_buf_fmt(b, "\"%c\" ", z);
        same_len(b, zeros, hi + 1, n - 1);
    }
    js_buf_str(b, " )");
}

static void nonneg_range(js_buf *b, long long lo, long long hi) {
    char a[24], z[24];
    int la = snprintf(a, sizeof(a), "%lld", lo);
    int lz = snprintf(z, sizeof(z), "%lld", hi);
    js_buf_str(b, "( ");
    for (int len = la; len <= lz; len++) {
        char from[24], to[24];
        if (len == la) {
            memcpy(from, a, (size_t)la + 1);
        } else {
            from[0] = '1';
            memset(from + 1, '0', (size_t)len - 1);
            from[len] = '\0';
        }
        if (len == lz) {
            memcpy(to, z, (size_t)lz + 1);
        } else {
            memset(to, '9', (size_t)len);
            to[len] = '\0';
        }
        if (len > la)
            js_buf_str(b, " | ");
        same_len(b, from, to, len);
    }
    js_buf_str(b, " )");
}

void js_integer_range(js_gen *g, long long lo, long long hi, js_buf *expr) {
    (void)g;
    js_buf_str(expr, "( ");
    bool first = true;
    if (lo < 0) {
        long long nh = hi < 0 ? hi : -1;
        js_buf_str(expr, "\"-\" ");
        nonneg_range(expr, -nh, -lo);
        first = false;
    }
    if (hi >= 0) {
        if (!first)
            js_buf_str(expr, " | ");
        nonneg_range(expr, lo > 0 ? lo : 0, hi);
    }
    js_buf_str(expr, " )");
}

/* ---- number ranges ---------------------------------------------------------------------- */

#define FRAC_ANY "( \".\" [0-9]{1,16} )?"
#define FRAC_NONZERO "\".\" [0-9]{0,15} [1-9]"
#define FRAC_ZERO "( \".\" \"0\"{1,16} )?"
#define MAGNITUDE_MAX 9999999999999999LL

/* magnitude appends alternatives (each prefixed by " | " after the first, *first tracks it)
 * for the decimal strings i(.f) whose value m lies between lo and hi (hi_inf: no upper
 * bound); zero_ok false excludes m == 0. */
static void magnitude(js_buf *b, long long lo, bool lo_ex, long long hi, bool hi_ex, bool hi_inf,
                      bool zero_ok, bool *first) {
#define ALT()                                                                                      \
    do {                                                                                           \
        if (!*first)                                                                               \
            js_buf_str(b, " | ");                                                                  \
        *first = false;                                                                            \
    } while (0)
    if (!hi_inf && (hi < lo || (hi == lo && (lo_ex || hi_ex || (lo == 0 && !zero_ok)))))
        return;
    if (!hi_inf && lo == hi) {
        ALT();
        js_buf_fmt(b, "\"%lld\" " FRAC_ZERO, lo);
        return;
    }
    /* Integer part lo: the fraction must be non-zero when lo itself is excluded. */
    ALT();
    if (lo_ex || (lo == 0 && !zero_ok))
        js_buf_fmt(b, "\"%lld\" " FRAC_NONZERO, lo);
    else
        js_buf_fmt(b, "\"%lld\" " FRAC_ANY, lo);
    /* Integer parts strictly inside: any fraction. */
    long long top = hi_inf ? MAGNITUDE_MAX : hi - 1;
    if (lo + 1 <= top) {
        ALT();
        nonneg_range(b, lo + 1, top);
        js_buf_str(b, " " FRAC_ANY);
    }
    /* Integer part hi: only hi itself (a zero fraction). */
    if (!hi_inf && !hi_ex) {
        ALT();
        js_buf_fmt(b, "\"%lld\" " FRAC_ZERO, hi);
    }
#undef ALT
}

void js_number_range(js_bound lo, js_bound hi, js_buf *expr) {
    bool first = true;
    js_buf_str(expr, "( ");
    /* x >= 0 part. */
    if (!hi.has || hi.v > 0 || (hi.v == 0 && !hi.exclusive)) {
        long long l = lo.has && lo.v > 0 ? lo.v : 0;
        bool l_ex = lo.has && lo.v >= 0 && lo.exclusive;
        magnitude(expr, l, l_ex, hi.has ? hi.v : 0, hi.exclusive, !hi.has, true, &first);
    }
    /* x < 0 part, as "-" and the magnitude (never -0). */
    if (!lo.has || lo.v < 0) {
        long long mlo = hi.has && hi.v < 0 ? -hi.v : 0;
        bool mlo_ex = hi.has && hi.v <= 0 && hi.exclusive;
        js_buf neg = {0};
        bool nfirst = true;
        magnitude(&neg, mlo, mlo_ex, lo.has ? -lo.v : 0, lo.exclusive, !lo.has, false, &nfirst);
        if (!nfirst) {
            if (!first)
                js_buf_str(expr, " | ");
            first = false;
            js_buf_str(expr, "\"-\" ( ");
            js_buf_add(expr, neg.p, neg.n);
            js_buf_str(expr, " )");
        }
        if (neg.failed)
            expr->failed = true;
        free(neg.p);
    }
    if (first)
        js_buf_str(expr, "[^\\x00-\\U0010FFFF]"); /* empty: the caller checked for this */
    js_buf_str(expr, " )");
}
