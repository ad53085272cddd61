/*
 * fuzz_grammar: libFuzzer driver for the grammar compiler, the parse state and the JSON Schema
 * compiler.
 *
 * Input: one mode byte, then text. Mode even: the text up to the first NUL byte is grammar
 * text, the rest is fed to a parse state byte by byte. Mode odd: the text is a JSON Schema;
 * if it compiles, its rules must compile as a grammar (anything else is a bug in the schema
 * compiler) and the rest after a NUL is fed to it. Every failure must come with a message.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#ifdef SLUICE_HAVE_JANSSON
#include "json_schema.h"
#endif

#define MAX_INPUT (64 << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void feed(wk_grammar *g, const uint8_t *p, size_t n) {
    wk_grammar_state *st = NULL;
    if (wk_grammar_state_create(g, NULL, &st) != CM_OK)
        abort();
    for (size_t k = 0; k < n; k++) {
        cm_err rv = wk_grammar_accept_bytes(st, p + k, 1);
        if (rv == CM_ERR_LIMIT || rv == CM_ERR_STATE)
            break;
        if (rv != CM_OK && rv != CM_ERR_INVALID)
            abort();
        /* finished implies complete */
        if (wk_grammar_finished(st) && !wk_grammar_complete(st))
            abort();
    }
    wk_grammar_state_free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > MAX_INPUT)
        return 0;
    const uint8_t mode = data[0];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    const char *nul = memchr(text, '\0', n);
    size_t text_len = nul != NULL ? (size_t)(nul - text) : n;
    const uint8_t *rest = nul != NULL ? (const uint8_t *)nul + 1 : NULL;
    size_t rest_len = nul != NULL ? n - text_len - 1 : 0;
    char err[256];
    err[0] = '\0';
    wk_grammar *g = NULL;
    if (mode % 2 == 0) {
        if (wk_grammar_compile(text, text_len, NULL, &g, err, sizeof(err)) != CM_OK) {
            if (g != NULL || err[0] == '\0')
                abort();
            return 0;
        }
    } else {
#ifdef SLUICE_HAVE_JANSSON
        char *rules = NULL;
        if (wk_json_schema_to_grammar(text, text_len, "f-", &rules, err, sizeof(err)) != CM_OK) {
            if (rules != NULL || err[0] == '\0')
                abort();
            return 0;
        }
        if (wk_grammar_compile(rules, strlen(rules), "f-root", &g, err, sizeof(err)) != CM_OK)
            abort(); /* the schema compiler wrote a grammar the grammar compiler rejects */
        free(rules);
#else
        return 0;
#endif
    }
    feed(g, rest, rest_len);
    wk_grammar_unref(g);
    return 0;
}
