/*
 * Internals shared by json_schema.c (schema -> rules) and json_schema_regex.c (ECMAScript
 * pattern subset and integer ranges -> grammar expressions).
 */
#ifndef WK_JSON_SCHEMA_IMPL_H
#define WK_JSON_SCHEMA_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json_schema.h"

#define JS_TEXT_MAX (8u << 20) /* generated grammar text */
#define JS_MAX_REFS 1024
#define JS_PTR_MAX 512 /* JSON pointers in messages and $ref keys */
#define JS_NAME_MAX 96 /* generated rule names */

/* A growable text buffer with a cap (JS_TEXT_MAX); failed is sticky, limit says why. */
typedef struct js_buf {
    char *p;
    size_t n, cap;
    bool failed;
    bool limit;
} js_buf;

void js_buf_add(js_buf *b, const char *s, size_t n);
void js_buf_str(js_buf *b, const char *s);
void js_buf_fmt(js_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* js_buf_literal writes n bytes as a grammar literal "...". */
void js_buf_literal(js_buf *b, const char *s, size_t n);

typedef struct js_ref {
    char *ref; /* the $ref string */
    char rule[JS_NAME_MAX];
} js_ref;

typedef struct js_gen {
    const char *prefix;
    const void *root; /* json_t * of the whole schema */
    js_buf out;       /* rules written so far */
    uint32_t n_rules;
    js_ref refs[JS_MAX_REFS];
    uint32_t n_refs;
    uint32_t depth;
    cm_err rv;
    char *err;
    size_t errlen;
} js_gen;

/* js_fail records the first error (later ones are dropped). */
void js_fail(js_gen *g, cm_err rv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* js_regex_to_grammar appends an expression matching the JSON-encoded contents (between the
 * quotes) of every string the ECMAScript pattern matches (search semantics: unanchored ends
 * may hold anything). ptr names the schema for messages. Errors through js_fail. */
void js_regex_to_grammar(js_gen *g, const char *pattern, const char *ptr, js_buf *expr);

/* js_integer_range appends an expression matching exactly the integers in [lo, hi] (written
 * without leading zeros, "-" for negatives, never "-0"); |lo|, |hi| < 10^17. */
void js_integer_range(js_gen *g, long long lo, long long hi, js_buf *expr);

/* A bound of a number range: present, value (an integer within +-(10^16 - 1)), exclusive. */
typedef struct js_bound {
    bool has;
    bool exclusive;
    long long v;
} js_bound;

/* js_number_range appends an expression matching exactly the decimal numbers (no exponent,
 * at most 16 integer and 16 fraction digits, never "-0...") between lo and hi. */
void js_number_range(js_bound lo, js_bound hi, js_buf *expr);

#endif /* WK_JSON_SCHEMA_IMPL_H */
