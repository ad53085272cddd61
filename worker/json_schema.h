/*
 * wk_json_schema: JSON Schema (the subset OpenAI's structured outputs accept in strict mode)
 * and "any JSON object" compiled to wk_grammar rule text (see grammar.h for the syntax).
 *
 * Output format (what the grammar lets the model write): compact JSON with at most one space
 * after ':' and after ',' and nothing else between tokens: no newlines, no indentation, no
 * leading or trailing whitespace. Bounded whitespace keeps a model from looping on spaces;
 * the single optional space keeps the "a": 1, "b": 2 style most models were trained on.
 * Object members come in the order the schema declares them. Strings are valid JSON strings
 * of valid UTF-8: no raw control characters; escapes \" \\ \/ \b \f \n \r \t and \uXXXX
 * (surrogates only as a high-low pair). Numbers: at most 16 integer digits, 16 fraction
 * digits and a 3-digit exponent (a model cannot run away with digits).
 *
 * Supported schema keywords (anything else is CM_ERR_UNSUPPORTED naming the keyword and its
 * JSON pointer: "unsupported JSON Schema keyword 'patternProperties' at /properties/a"):
 *   type            a name or a list of names (["string","null"] = nullable);
 *                   no type and no other constraint = any JSON value
 *   object          properties (declared order), required (the others may be omitted),
 *                   additionalProperties (false, true, absent or a schema: the output has
 *                   only the declared properties, which satisfies all of them); an object
 *                   with no "properties" = any JSON object ({} only with
 *                   additionalProperties: false)
 *   array           items (absent = any values), minItems, maxItems (each <= 1000)
 *   string          enum, const, pattern (subset below), format: date, time, date-time,
 *                   uuid, email (a simple local@domain form), ipv4; minLength, maxLength
 *                   (<= 1000, in characters); one of pattern / format / lengths at a time
 *   integer         minimum, maximum, exclusiveMinimum, exclusiveMaximum: enforced exactly
 *                   (digit-range rules) for bounds within +-10^15
 *   number          minimum, maximum, exclusiveMinimum, exclusiveMaximum: enforced exactly
 *                   for integer bounds; a non-integer bound is rounded inward to an integer
 *                   (the output stays in range; values between the bound and that integer
 *                   cannot be written). A bounded number is written without an exponent.
 *   boolean, null
 *   anyOf           alternatives (allOf, oneOf, not: unsupported)
 *   enum, const     of any JSON values (written in compact form)
 *   $ref            local references "#", "#/$defs/x", "#/definitions/x" and other local
 *                   JSON pointers, recursion included; $defs / definitions
 *   ignored         description, title, default, examples, $schema, $id, $comment,
 *                   deprecated, readOnly, writeOnly
 *
 * Pattern subset (ECMAScript syntax): literal characters, escapes \\ \. \- \/ \n \t \d \w \s
 * \D \W \S \uXXXX, classes [a-z...] and [^...], ., * + ? {m} {m,} {m,n} (n <= 1000),
 * groups (...) and (?:...), alternation |, and the anchors ^ at the start and $ at the end.
 * JSON Schema patterns are unanchored: without ^ the string may start with anything, without
 * $ it may end with anything. Backreferences, lookaround, lazy quantifiers, \b, named groups:
 * CM_ERR_UNSUPPORTED naming the construct.
 *
 * Bounds: schema text WK_JSON_SCHEMA_MAX_BYTES, nesting WK_JSON_SCHEMA_MAX_DEPTH, generated
 * rules WK_JSON_SCHEMA_MAX_RULES (CM_ERR_LIMIT beyond them).
 *
 * Threads: pure functions; any thread.
 */
#ifndef WK_JSON_SCHEMA_H
#define WK_JSON_SCHEMA_H

#include <stddef.h>

#include "cm_err.h"

#define WK_JSON_SCHEMA_MAX_BYTES (1u << 20)
#define WK_JSON_SCHEMA_MAX_DEPTH 64u
#define WK_JSON_SCHEMA_MAX_RULES 8192u
#define WK_JSON_SCHEMA_MAX_PREFIX 64u

/*
 * wk_json_schema_to_grammar compiles a JSON Schema (len bytes of JSON text) into grammar rule
 * text whose start rule is <prefix>root; every other rule is prefixed with <prefix> too, so
 * several schemas can share one grammar (prefix: [a-zA-Z0-9_-]*, at most
 * WK_JSON_SCHEMA_MAX_PREFIX bytes; NULL = ""). Errors (err holds one line, errlen bytes):
 * CM_ERR_UNSUPPORTED (a keyword or construct outside the subset, named with its JSON
 * pointer), CM_ERR_INVALID (not JSON, not a schema, a bad value: "minItems must be a
 * non-negative integer at /properties/tags", an unresolvable $ref, an empty enum, an integer
 * range with no integer in it), CM_ERR_LIMIT, CM_ERR_NOMEM. On success *rules_out is malloc'd
 * and NUL-terminated (caller frees); on failure it is NULL.
 */
cm_err wk_json_schema_to_grammar(const char *schema_json, size_t len, const char *prefix,
                                 char **rules_out, char *err, size_t errlen);

/* wk_json_object_grammar: rules for any JSON object (response_format json_object), start rule
 * <prefix>root, in the output format above. Nesting depth is bounded by the matcher's stack
 * (WK_GRAMMAR_MAX_STACK, at least 64 levels). *rules_out malloc'd (caller frees).
 * CM_ERR_INVALID for a bad prefix, CM_ERR_NOMEM. */
cm_err wk_json_object_grammar(const char *prefix, char **rules_out);

#endif /* WK_JSON_SCHEMA_H */
