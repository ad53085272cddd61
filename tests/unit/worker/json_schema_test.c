/*
 * Tests for worker/json_schema*.c: every supported keyword with outputs the grammar must
 * accept and outputs it must reject, recursion through $ref, integer ranges checked
 * exhaustively against arithmetic, patterns, and precise errors for unsupported keywords.
 * Accepted outputs are also parsed with jansson (they must be JSON).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "grammar.h"

#ifdef SLUICE_HAVE_JANSSON
#include <jansson.h>

#include "json_schema.h"

static wk_grammar *schema_grammar(const char *schema) {
    char *rules = NULL;
    char err[256];
    cm_err rv = wk_json_schema_to_grammar(schema, strlen(schema), "", &rules, err, sizeof(err));
    if (rv != CM_OK)
        fail_msg("schema %s: %s", schema, err);
    wk_grammar *g = NULL;
    rv = wk_grammar_compile(rules, strlen(rules), "root", &g, err, sizeof(err));
    if (rv != CM_OK)
        fail_msg("grammar of %s: %s\n%s", schema, err, rules);
    free(rules);
    return g;
}

/* 1 complete, 0 prefix, -1 rejected */
static int match(wk_grammar *g, const char *s) {
    wk_grammar_state *st = NULL;
    assert_int_equal(wk_grammar_state_create(g, NULL, &st), CM_OK);
    cm_err rv = wk_grammar_accept_bytes(st, (const uint8_t *)s, strlen(s));
    int r = rv != CM_OK ? -1 : wk_grammar_complete(st) ? 1 : 0;
    wk_grammar_state_free(st);
    return r;
}

/* check: every good output is a complete sentence (and parses as JSON), no bad one is. */
static void check(const char *schema, const char *const *good, const char *const *bad) {
    wk_grammar *g = schema_grammar(schema);
    for (size_t k = 0; good[k] != NULL; k++) {
        if (match(g, good[k]) != 1)
            fail_msg("schema %s should accept %s", schema, good[k]);
        json_error_t je;
        json_t *v = json_loads(good[k], JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (v == NULL)
            fail_msg("accepted output %s is not JSON: %s", good[k], je.text);
        json_decref(v);
    }
    for (size_t k = 0; bad[k] != NULL; k++)
        if (match(g, bad[k]) == 1)
            fail_msg("schema %s should reject %s", schema, bad[k]);
    wk_grammar_unref(g);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_objects(void **state) {
    (void)state;
    const char *s = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
                    "\"age\":{\"type\":\"integer\"}},\"required\":[\"name\",\"age\"],"
                    "\"additionalProperties\":false}";
    check(s, L("{\"name\":\"Bo\",\"age\":3}", "{\"name\": \"\", \"age\": -12}"),
          L("{\"age\":3,\"name\":\"Bo\"}", "{\"name\":\"Bo\"}", "{\"name\":\"Bo\",\"age\":3.5}",
            "{\"name\":\"Bo\",\"age\":3,\"x\":1}", "{ \"name\":\"Bo\",\"age\":3}",
            "{\"name\":\"Bo\",  \"age\":3}", "{\"name\":\"Bo\",\"age\":3}\n"));
    /* Optional properties may be left out, order kept. */
    s = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
        "\"boolean\"},\"c\":{\"type\":\"null\"}},\"required\":[\"b\"]}";
    check(s,
          L("{\"b\":true}", "{\"a\":1,\"b\":false}", "{\"b\":true,\"c\":null}",
            "{\"a\":1, \"b\":false, \"c\":null}"),
          L("{}", "{\"a\":1}", "{\"c\":null,\"b\":true}", "{\"a\":1,,\"b\":true}", "{,\"b\":true}",
            "{\"b\":true,}"));
    /* All optional: the empty object too. */
    check("{\"properties\":{\"a\":{\"type\":\"string\"}}}", L("{}", "{\"a\":\"x\"}"),
          L("{\"b\":1}"));
    /* No properties: any object. */
    check("{\"type\":\"object\"}", L("{}", "{\"x\":[1,{\"y\":null}]}"), L("[]", "1"));
    /* Nested objects and arrays. */
    s = "{\"type\":\"object\",\"properties\":{\"p\":{\"type\":\"object\",\"properties\":{\"q\":"
        "{\"type\":\"array\",\"items\":{\"type\":\"number\"}}},\"required\":[\"q\"]}},"
        "\"required\":[\"p\"]}";
    check(s, L("{\"p\":{\"q\":[]}}", "{\"p\":{\"q\":[1, 2.5, -0.25, 1e5]}}"),
          L("{\"p\":{\"q\":[\"1\"]}}", "{\"p\":{}}"));
    /* Property names are JSON-escaped. */
    check("{\"type\":\"object\",\"properties\":{\"a\\\"b\":{\"type\":\"null\"}},\"required\":"
          "[\"a\\\"b\"]}",
          L("{\"a\\\"b\":null}"), L("{\"a\"b\":null}"));
}

static void test_arrays(void **state) {
    (void)state;
    check("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}",
          L("[1,2]", "[1, 2, 3]"), L("[]", "[1]", "[1,2,3,4]", "[1,\"a\"]"));
    check("{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":1}",
          L("[\"a\"]", "[\"a\",\"b\",\"c\",\"d\"]"), L("[]"));
    check("{\"type\":\"array\",\"maxItems\":0}", L("[]"), L("[1]"));
    check("{\"type\":\"array\"}", L("[]", "[1,\"a\",null,[true]]"), L("{}"));
}

static void test_strings(void **state) {
    (void)state;
    check("{\"type\":\"string\"}",
          L("\"\"", "\"héllo 😀\"", "\"a\\\"b\\\\c\\n\\u00e9\"", "\"\\ud83d\\ude00\""),
          L("\"a", "\"\x01\"", "\"\\x\"", "\"\\ud83d\"", "\"\xc3\"", "abc"));
    check("{\"enum\":[\"red\",\"green\",\"blue\"]}", L("\"red\"", "\"blue\""),
          L("\"Red\"", "\"gree\"", "red"));
    check("{\"type\":\"string\",\"const\":\"x\\\"y\"}", L("\"x\\\"y\""), L("\"x\"", "\"xy\""));
    check("{\"type\":\"string\",\"format\":\"date\"}", L("\"2024-02-29\"", "\"1999-12-31\""),
          L("\"2024-13-01\"", "\"2024-1-01\"", "\"24-01-01\""));
    check("{\"type\":\"string\",\"format\":\"time\"}", L("\"23:59:59Z\"", "\"01:02:03.5+02:00\""),
          L("\"24:00:00Z\"", "\"12:00:00\""));
    check("{\"type\":\"string\",\"format\":\"date-time\"}", L("\"2024-01-02T03:04:05Z\""),
          L("\"2024-01-02 03:04:05Z\""));
    check("{\"type\":\"string\",\"format\":\"uuid\"}",
          L("\"123e4567-e89b-12d3-a456-426614174000\""),
          L("\"123e4567e89b12d3a456426614174000\"", "\"123e4567-e89b-12d3-a456-42661417400g\""));
    check("{\"type\":\"string\",\"format\":\"ipv4\"}", L("\"192.168.0.1\"", "\"255.0.10.0\""),
          L("\"256.1.1.1\"", "\"1.2.3\"", "\"01.2.3.4\""));
    check("{\"type\":\"string\",\"format\":\"email\"}", L("\"a.b+c@example.co.uk\""),
          L("\"a@b\"", "\"@example.com\""));
    check("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", L("\"ab\"", "\"é\\nx\""),
          L("\"a\"", "\"abcd\""));
}

static void test_patterns(void **state) {
    (void)state;
    check("{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3,4}$\"}",
          L("\"AB-123\"", "\"XY-9999\""),
          L("\"AB-12\"", "\"ab-123\"", "\"AB-12345\"", "\"xAB-123\""));
    /* Unanchored ends may hold anything. */
    check("{\"type\":\"string\",\"pattern\":\"cat\"}", L("\"cat\"", "\"a cat!\"", "\"catalog\""),
          L("\"dog\"", "\"ca\""));
    check("{\"type\":\"string\",\"pattern\":\"^(foo|ba+r)?x.$\"}",
          L("\"x!\"", "\"foox\\\"\"", "\"baaarxy\""), L("\"fooy\"", "\"x\"", "\"x\\n\""));
    /* Per-alternative anchors. */
    check("{\"type\":\"string\",\"pattern\":\"^a|b$\"}", L("\"a\"", "\"axx\"", "\"xxb\""),
          L("\"xa\"", "\"bx\""));
    /* Characters that need escaping in JSON. */
    check("{\"type\":\"string\",\"pattern\":\"^[\\\"\\\\\\\\\\\\n]+$\"}",
          L("\"\\\"\"", "\"\\\\\\n\""), L("\"a\"", "\"\n\""));
    check("{\"type\":\"string\",\"pattern\":\"^\\\\S\\\\s\\\\w\\\\W$\"}", L("\"a 1-\""),
          L("\"  1-\"", "\"a a1\""));
    /* Unsupported constructs are named. */
    static const char *const unsupported[] = {"(?=a)", "(a)\\\\1", "\\\\bword", "a^b",
                                              "a$b",   "(?<n>a)",  "\\\\p{L}"};
    for (size_t k = 0; k < sizeof(unsupported) / sizeof(unsupported[0]); k++) {
        char schema[128], err[256];
        snprintf(schema, sizeof(schema), "{\"type\":\"string\",\"pattern\":\"%s\"}",
                 unsupported[k]);
        char *rules = NULL;
        cm_err rv = wk_json_schema_to_grammar(schema, strlen(schema), "", &rules, err, sizeof(err));
        if (rv != CM_ERR_UNSUPPORTED || strstr(err, "pattern") == NULL)
            fail_msg("pattern %s: rv %d err %s", unsupported[k], rv, err);
        assert_null(rules);
    }
}

static void test_numbers(void **state) {
    (void)state;
    check("{\"type\":\"number\"}", L("0", "-1.5", "1e10", "3.25E-2", "123"),
          L("01", "1.", ".5", "+1", "1e", "NaN"));
    check("{\"type\":\"number\",\"minimum\":0}", L("0", "2.5"), L("-1", "-0.5"));
    check("{\"type\":\"number\",\"exclusiveMaximum\":0}", L("-1", "-0.5"), L("0", "1", "-0"));
    check("{\"type\":\"integer\"}", L("0", "-7", "1234567890"), L("1.0", "007", "1e3"));
    check("{\"type\":\"boolean\"}", L("true", "false"), L("True", "1"));
    check("{\"type\":\"null\"}", L("null"), L("0"));
    check("{\"type\":[\"string\",\"null\"]}", L("null", "\"x\""), L("1"));
    check("{\"const\":{\"a\":[1,2.5,null]}}", L("{\"a\":[1,2.5,null]}"), L("{\"a\":[1,2.5]}"));
    check("{\"enum\":[1,\"1\",true,null,0.1]}", L("1", "\"1\"", "true", "null", "0.1"),
          L("2", "false"));
}

/* Number ranges: on a grid of quarter steps around the bounds, a canonical decimal (no
 * trailing fraction zeros) is accepted iff it is within the bounds. */
static void fmt_quarter(long long q, char *out, size_t cap) {
    long long a = q < 0 ? -q : q;
    static const char *const frac[] = {"", ".25", ".5", ".75"};
    snprintf(out, cap, "%s%lld%s", q < 0 ? "-" : "", a / 4, frac[a % 4]);
}

static void test_number_ranges(void **state) {
    (void)state;
    static const struct {
        const char *bounds;
        double lo, hi;
        bool lo_ex, hi_ex, has_lo, has_hi;
    } cases[] = {
        {"\"minimum\":0,\"maximum\":1", 0, 1, false, false, true, true},
        {"\"exclusiveMinimum\":0,\"exclusiveMaximum\":1", 0, 1, true, true, true, true},
        {"\"minimum\":-5,\"maximum\":5", -5, 5, false, false, true, true},
        {"\"exclusiveMinimum\":-3,\"maximum\":-1", -3, -1, true, false, true, true},
        {"\"minimum\":2", 2, 0, false, false, true, false},
        {"\"exclusiveMaximum\":-2", 0, -2, false, true, false, true},
        {"\"minimum\":10,\"exclusiveMaximum\":12", 10, 12, false, true, true, true},
        {"\"minimum\":-1,\"maximum\":0", -1, 0, false, false, true, true},
        {"\"exclusiveMinimum\":7,\"maximum\":7.5", 7, 7, true, false, true, true},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char schema[200];
        snprintf(schema, sizeof(schema), "{\"type\":\"number\",%s}", cases[c].bounds);
        if (c == 8) {
            /* (7, 7.5] rounds inward to (7, 7]: nothing left. */
            char err[256], *rules = NULL;
            assert_int_equal(
                wk_json_schema_to_grammar(schema, strlen(schema), "", &rules, err, sizeof(err)),
                CM_ERR_INVALID);
            continue;
        }
        wk_grammar *g = schema_grammar(schema);
        double lo = cases[c].has_lo ? cases[c].lo : cases[c].hi - 20;
        double hi = cases[c].has_hi ? cases[c].hi : cases[c].lo + 20;
        for (long long q = (long long)(lo * 4) - 12; q <= (long long)(hi * 4) + 12; q++) {
            double x = (double)q / 4;
            char txt[32];
            fmt_quarter(q, txt, sizeof(txt));
            bool in = (!cases[c].has_lo || (cases[c].lo_ex ? x > cases[c].lo : x >= cases[c].lo)) &&
                      (!cases[c].has_hi || (cases[c].hi_ex ? x < cases[c].hi : x <= cases[c].hi));
            int m = match(g, txt);
            if ((m == 1) != in)
                fail_msg("%s: %s -> %d (want %d)", schema, txt, m, in);
        }
        assert_int_not_equal(match(g, "-0"), 1); /* at most a prefix of -0.5 */
        assert_int_equal(match(g, "1e2"), -1);
        wk_grammar_unref(g);
    }
    /* Exact upper bound with zeros, and a non-integer bound rounded inward. */
    check("{\"type\":\"number\",\"maximum\":3}", L("3", "3.000", "2.999", "-7.5"), L("3.001", "4"));
    check("{\"type\":\"number\",\"minimum\":0.5,\"maximum\":2}", L("1", "1.5", "2"),
          L("0.75", "0.5", "2.5"));
}

/* Integer ranges: for many (lo, hi) pairs every integer near the edges is accepted iff it is
 * in range. */
static void test_integer_ranges(void **state) {
    (void)state;
    static const long long bounds[][2] = {
        {0, 0},      {0, 9},     {1, 10},      {5, 123},   {-5, 5},    {-123, -7},
        {10, 99},    {99, 1000}, {100, 100},   {-1, 0},    {7, 70001}, {-1000, 1000},
        {123, 4567}, {19, 21},   {0, 1000000}, {-99, -10},
    };
    for (size_t b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++) {
        long long lo = bounds[b][0], hi = bounds[b][1];
        char schema[160];
        snprintf(schema, sizeof(schema), "{\"type\":\"integer\",\"minimum\":%lld,\"maximum\":%lld}",
                 lo, hi);
        wk_grammar *g = schema_grammar(schema);
        long long from = lo - 1200, to = hi + 1200;
        for (long long v = from; v <= to; v++) {
            /* Dense near the edges, sparse in the middle. */
            if (v > lo + 1200 && v < hi - 1200 && v % 997 != 0)
                continue;
            char txt[32];
            snprintf(txt, sizeof(txt), "%lld", v);
            int m = match(g, txt);
            if ((m == 1) != (v >= lo && v <= hi))
                fail_msg("[%lld, %lld]: %lld -> %d", lo, hi, v, m);
        }
        assert_int_equal(match(g, "-0"), -1);
        assert_int_equal(match(g, "00"), -1);
        wk_grammar_unref(g);
    }
    /* Exclusive bounds and one-sided ranges. */
    check("{\"type\":\"integer\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":10}", L("1", "9"),
          L("0", "10"));
    check("{\"type\":\"integer\",\"minimum\":0}", L("0", "12345678"), L("-1"));
    check("{\"type\":\"integer\",\"maximum\":-3}", L("-3", "-100000"), L("-2", "0", "5"));
    char err[256];
    char *rules = NULL;
    const char *s = "{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}";
    assert_int_equal(wk_json_schema_to_grammar(s, strlen(s), "", &rules, err, sizeof(err)),
                     CM_ERR_INVALID);
}

static void test_anyof_refs(void **state) {
    (void)state;
    check("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"object\",\"properties\":{\"k\":"
          "{\"type\":\"string\"}},\"required\":[\"k\"]}]}",
          L("12", "{\"k\":\"v\"}"), L("\"12\"", "{}"));
    /* A recursive tree through $defs. */
    const char *tree =
        "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
        "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":"
        "[\"v\",\"kids\"],\"additionalProperties\":false}},\"$ref\":\"#/$defs/node\"}";
    check(tree,
          L("{\"v\":1,\"kids\":[]}",
            "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3,\"kids\":[]}]},"
            "{\"v\":4,\"kids\":[]}]}"),
          L("{\"v\":1,\"kids\":[{\"v\":2}]}", "{\"v\":1}"));
    /* Root recursion "#" and definitions. */
    check("{\"type\":\"object\",\"properties\":{\"next\":{\"anyOf\":[{\"$ref\":\"#\"},{\"type\":"
          "\"null\"}]}},\"required\":[\"next\"]}",
          L("{\"next\":null}", "{\"next\":{\"next\":{\"next\":null}}}"), L("{\"next\":{}}"));
    check("{\"definitions\":{\"a\":{\"type\":\"boolean\"}},\"type\":\"array\",\"items\":{\"$ref\":"
          "\"#/definitions/a\"}}",
          L("[true,false]"), L("[1]"));
    /* Annotations are ignored. */
    check("{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"title\":\"T\","
          "\"description\":\"d\",\"type\":\"string\",\"default\":\"x\",\"examples\":[\"y\"]}",
          L("\"z\""), L("1"));
}

static void test_errors(void **state) {
    (void)state;
    static const struct {
        const char *schema;
        cm_err rv;
        const char *needle;
    } cases[] = {
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"patternProperties\":{}"
         "}}}",
         CM_ERR_UNSUPPORTED, "'patternProperties' at /properties/a"},
        {"{\"allOf\":[]}", CM_ERR_UNSUPPORTED, "'allOf' at /"},
        {"{\"oneOf\":[{\"type\":\"string\"}]}", CM_ERR_UNSUPPORTED, "'oneOf'"},
        {"{\"type\":\"array\",\"items\":{\"not\":{}}}", CM_ERR_UNSUPPORTED, "'not' at /items"},
        {"{\"type\":\"array\",\"items\":{\"anyOf\":[{\"type\":\"string\",\"multipleOf\":2}]}}",
         CM_ERR_UNSUPPORTED, "'multipleOf' at /items/anyOf/0"},
        {"{\"type\":\"string\",\"format\":\"hostname\"}", CM_ERR_UNSUPPORTED, "format 'hostname'"},
        {"{\"$ref\":\"http://x/y.json\"}", CM_ERR_UNSUPPORTED, "only local"},
        {"{\"$ref\":\"#/$defs/missing\"}", CM_ERR_INVALID, "does not resolve"},
        {"{\"type\":\"strin\"}", CM_ERR_INVALID, "unknown type 'strin'"},
        {"{\"type\":\"object\",\"properties\":{},\"required\":[\"a\"]}", CM_ERR_INVALID,
         "required names 'a'"},
        {"{\"enum\":[]}", CM_ERR_INVALID, "enum"},
        {"{\"type\":\"array\",\"minItems\":-1}", CM_ERR_INVALID, "minItems"},
        {"{\"type\":\"array\",\"maxItems\":100000}", CM_ERR_LIMIT, "maxItems"},
        {"{\"type\":", CM_ERR_INVALID, "not valid JSON"},
        {"[1]", CM_ERR_INVALID, "must be an object"},
        {"{\"type\":\"integer\",\"minimum\":true}", CM_ERR_UNSUPPORTED, "draft 4"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char err[256] = "";
        char *rules = NULL;
        cm_err rv = wk_json_schema_to_grammar(cases[k].schema, strlen(cases[k].schema), "p_",
                                              &rules, err, sizeof(err));
        if (rv != cases[k].rv || strstr(err, cases[k].needle) == NULL)
            fail_msg("case %zu %s: rv %d err '%s'", k, cases[k].schema, rv, err);
        assert_null(rules);
    }
    /* Deep nesting is bounded. */
    char *deep = malloc(20000);
    size_t n = 0;
    for (int k = 0; k < 200; k++)
        n += (size_t)sprintf(deep + n, "{\"type\":\"array\",\"items\":");
    n += (size_t)sprintf(deep + n, "{\"type\":\"null\"}");
    for (int k = 0; k < 200; k++)
        deep[n++] = '}';
    deep[n] = '\0';
    char err[256];
    char *rules = NULL;
    assert_int_equal(wk_json_schema_to_grammar(deep, n, "", &rules, err, sizeof(err)),
                     CM_ERR_LIMIT);
    free(deep);
    /* Bad prefix. */
    assert_int_equal(wk_json_schema_to_grammar("{}", 2, "a b", &rules, err, sizeof(err)),
                     CM_ERR_INVALID);
}

static void test_prefix_and_json_object(void **state) {
    (void)state;
    char *a = NULL, *b = NULL, err[256];
    const char *s1 = "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}},"
                     "\"required\":[\"x\"]}";
    const char *s2 = "{\"type\":\"array\",\"items\":{\"type\":\"string\"}}";
    assert_int_equal(wk_json_schema_to_grammar(s1, strlen(s1), "t1-", &a, err, sizeof(err)), CM_OK);
    assert_int_equal(wk_json_schema_to_grammar(s2, strlen(s2), "t2-", &b, err, sizeof(err)), CM_OK);
    /* Two schemas share one grammar through prefixes. */
    size_t n = strlen(a) + strlen(b) + 64;
    char *both = malloc(n);
    snprintf(both, n, "root ::= t1-root | t2-root\n%s%s", a, b);
    wk_grammar *g = NULL;
    assert_int_equal(wk_grammar_compile(both, strlen(both), NULL, &g, err, sizeof(err)), CM_OK);
    assert_int_equal(match(g, "{\"x\":1}"), 1);
    assert_int_equal(match(g, "[\"a\"]"), 1);
    assert_int_equal(match(g, "[1]"), -1);
    wk_grammar_unref(g);
    free(both);
    free(a);
    free(b);

    char *rules = NULL;
    assert_int_equal(wk_json_object_grammar("j_", &rules), CM_OK);
    assert_int_equal(wk_grammar_compile(rules, strlen(rules), "j_root", &g, err, sizeof(err)),
                     CM_OK);
    assert_int_equal(match(g, "{\"a\": [1, {\"b\": null}], \"c\": \"d\"}"), 1);
    assert_int_equal(match(g, "[1]"), -1);
    assert_int_equal(match(g, "{\"a\":1} "), -1);
    wk_grammar_unref(g);
    free(rules);
    assert_int_equal(wk_json_object_grammar("bad prefix", &rules), CM_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects),       cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_strings),       cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_numbers),       cmocka_unit_test(test_integer_ranges),
        cmocka_unit_test(test_number_ranges), cmocka_unit_test(test_anyof_refs),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_prefix_and_json_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* no jansson: the schema compiler is not built */

int main(void) {
    return 77; /* skip */
}

#endif
