/*
 * wk_constraint: see constraint.h.
 */
#include "constraint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "cm_buf.h"
#include "json_schema.h"

#define GRAMMAR_TEXT_MAX_BYTES WK_GRAMMAR_MAX_TEXT_BYTES

bool wk_constraint_tools_active(const Sluice__Submit *s) {
    return s->n_tools > 0 && !(s->tool_choice != NULL && s->tool_choice->has_mode &&
                               s->tool_choice->mode == SLUICE__TOOL_CHOICE__MODE__MODE_NONE);
}

/* The response_format's rules (start rule "rf-root"); *have = false for text. */
static cm_err format_rules(const Sluice__Submit *s, cm_buf *g, bool *have, char *err,
                           size_t errlen) {
    const Sluice__ResponseFormat *f = s->response_format;
    char *rules = NULL;
    char e[256] = "";
    cm_err rv;
    *have = false;
    if (f == NULL || !f->has_type || f->type == SLUICE__RESPONSE_FORMAT__TYPE__TYPE_TEXT)
        return CM_OK;
    if (f->type == SLUICE__RESPONSE_FORMAT__TYPE__TYPE_JSON_OBJECT) {
        rv = wk_json_object_grammar("rf-", &rules);
    } else if (f->type == SLUICE__RESPONSE_FORMAT__TYPE__TYPE_JSON_SCHEMA) {
        if (f->schema_json == NULL)
            return cm_errf(CM_ERR_INVALID, err, errlen,
                           "response_format.json_schema.schema: a schema is required");
        rv = wk_json_schema_to_grammar(f->schema_json, strlen(f->schema_json), "rf-", &rules, e,
                                       sizeof e);
    } else {
        return cm_errf(CM_ERR_INVALID, err, errlen, "response_format.type: unknown type %d",
                       (int)f->type);
    }
    if (rv != CM_OK)
        return cm_errf(rv, err, errlen, "response_format.json_schema.schema: %s",
                       e[0] ? e : cm_strerror(rv));
    rv = cm_buf_append_str(g, rules);
    if (rv == CM_OK)
        rv = cm_buf_append_byte(g, '\n');
    free(rules);
    *have = true;
    return rv;
}

/* One tool's call alternative, with its parameters' rules appended to defs. */
static cm_err tool_alternative(const Sluice__Tool *t, size_t i, cm_buf *alts, cm_buf *defs,
                               char *err, size_t errlen) {
    char prefix[32], e[256] = "";
    char *rules = NULL;
    cm_err rv;
    snprintf(prefix, sizeof prefix, "t%zu-", i);
    /* Names are [a-zA-Z0-9_-] (gateway-checked); anything else would break the literal. */
    for (const char *p = t->name; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return cm_errf(CM_ERR_INVALID, err, errlen,
                           "tools[%zu].function.name: must match ^[a-zA-Z0-9_-]{1,64}$", i);
    if (t->parameters_json != NULL)
        rv = wk_json_schema_to_grammar(t->parameters_json, strlen(t->parameters_json), prefix,
                                       &rules, e, sizeof e);
    else
        rv = wk_json_object_grammar(prefix, &rules);
    if (rv != CM_OK)
        return cm_errf(rv, err, errlen, "tools[%zu].function.parameters: %s", i,
                       e[0] ? e : cm_strerror(rv));
    rv = cm_buf_printf(alts,
                       "%s\"<tool_call>\\n{\\\"name\\\": \\\"%s\\\", \\\"arguments\\\": \" %sroot "
                       "\"}\\n</tool_call>\"",
                       alts->len ? " | " : "tool-call ::= ", t->name, prefix);
    if (rv == CM_OK)
        rv = cm_buf_append_str(defs, rules);
    if (rv == CM_OK)
        rv = cm_buf_append_byte(defs, '\n');
    free(rules);
    return rv;
}

cm_err wk_constraint_grammar_text(const Sluice__Submit *s, char **text_out, char *err,
                                  size_t errlen) {
    cm_buf g, alts, defs;
    bool have_format = false;
    cm_err rv;
    *text_out = NULL;
    cm_buf_init(&g, GRAMMAR_TEXT_MAX_BYTES);
    cm_buf_init(&alts, GRAMMAR_TEXT_MAX_BYTES);
    cm_buf_init(&defs, GRAMMAR_TEXT_MAX_BYTES);
    rv = format_rules(s, &defs, &have_format, err, errlen);
    if (rv != CM_OK)
        goto done;
    if (!wk_constraint_tools_active(s)) {
        if (have_format)
            rv = cm_buf_append_str(&g, "root ::= rf-root\n");
        goto assemble;
    }
    {
        const Sluice__ToolChoice *tc = s->tool_choice;
        int mode =
            tc != NULL && tc->has_mode ? (int)tc->mode : SLUICE__TOOL_CHOICE__MODE__MODE_AUTO;
        bool found = false;
        bool parallel = !s->has_parallel_tool_calls || s->parallel_tool_calls;
        for (size_t i = 0; i < s->n_tools && rv == CM_OK; i++) {
            if (mode == SLUICE__TOOL_CHOICE__MODE__MODE_FUNCTION &&
                (tc->name == NULL || strcmp(tc->name, s->tools[i]->name) != 0))
                continue;
            found = true;
            rv = tool_alternative(s->tools[i], i, &alts, &defs, err, errlen);
        }
        if (rv != CM_OK)
            goto done;
        if (!found) {
            rv = cm_errf(CM_ERR_INVALID, err, errlen,
                         "tool_choice.function.name: '%.64s' is not one of the tools",
                         tc != NULL && tc->name ? tc->name : "");
            goto done;
        }
        rv = cm_buf_append_str(&g, parallel ? "tool-calls ::= tool-call (\"\\n\" tool-call)*\n"
                                            : "tool-calls ::= tool-call\n");
        if (rv != CM_OK)
            goto done;
        if (mode == SLUICE__TOOL_CHOICE__MODE__MODE_AUTO)
            /* The first character decides: '<' can only open a tool call. */
            rv = cm_buf_append_str(&g, have_format ? "root ::= tool-calls | rf-root\n"
                                                   : "root ::= tool-calls | ([^<] .*)?\n");
        else
            rv = cm_buf_append_str(&g, "root ::= tool-calls\n");
    }
assemble:
    if (rv == CM_OK && g.len > 0) {
        if (alts.len > 0)
            rv = cm_buf_append(&g, alts.data, alts.len);
        if (rv == CM_OK && alts.len > 0)
            rv = cm_buf_append_byte(&g, '\n');
        if (rv == CM_OK && defs.len > 0)
            rv = cm_buf_append(&g, defs.data, defs.len);
        if (rv == CM_OK)
            *text_out = cm_buf_detach(&g, NULL);
        if (rv == CM_OK && *text_out == NULL)
            rv = CM_ERR_NOMEM;
    }
    if (rv == CM_ERR_LIMIT && (err == NULL || errlen == 0 || err[0] == '\0'))
        cm_errf(rv, err, errlen, "tools: the tool schemas make a grammar larger than %u bytes",
                GRAMMAR_TEXT_MAX_BYTES);
done:
    cm_buf_fini(&g);
    cm_buf_fini(&alts);
    cm_buf_fini(&defs);
    return rv;
}

cm_err wk_constraint_build(wk_grammar_cache *cache, const Sluice__Submit *s, wk_constraint *out,
                           char *err, size_t errlen) {
    char *text = NULL;
    char e[256] = "";
    memset(out, 0, sizeof *out);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    cm_err rv = wk_constraint_grammar_text(s, &text, err, errlen);
    if (rv != CM_OK)
        return rv;
    out->tool_calls = wk_constraint_tools_active(s);
    out->calls_only = out->tool_calls && s->tool_choice != NULL && s->tool_choice->has_mode &&
                      (s->tool_choice->mode == SLUICE__TOOL_CHOICE__MODE__MODE_REQUIRED ||
                       s->tool_choice->mode == SLUICE__TOOL_CHOICE__MODE__MODE_FUNCTION);
    if (text == NULL)
        return CM_OK;
    rv = wk_grammar_cache_get(cache, text, strlen(text), "root", &out->grammar, e, sizeof e);
    free(text);
    if (rv != CM_OK) {
        memset(out, 0, sizeof *out);
        return cm_errf(rv, err, errlen, "%s: cannot compile the constraint: %s",
                       s->n_tools > 0 ? "tools" : "response_format", e[0] ? e : cm_strerror(rv));
    }
    return CM_OK;
}

void wk_constraint_fini(wk_constraint *c) {
    wk_grammar_unref(c->grammar);
    memset(c, 0, sizeof *c);
}
