/*
 * Test-side helper for the service tests that need the bundled model's tokenizer and chat
 * template (prompt, prep, tokenize): opens SLUICE_TEST_MODEL (the test exits 77, skipped,
 * when it is unset or unreadable), loads the tokenizer and detects the template. Header-only,
 * not part of the product.
 */
#ifndef SVC_MODEL_H
#define SVC_MODEL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "gguf.h"
#include "tokenizer.h"

typedef struct svc_model {
    wk_gguf *gguf;
    wk_tokenizer *tok;
    wk_chat_template tmpl;
} svc_model;

/* svc_model_open fills m; the template is the GGUF's own, or template_name ("chatml") when
 * not NULL. Returns 0, or -1 after printing why (a cmocka setup failure). */
static inline int svc_model_open(svc_model *m, const char *template_name) {
    const char *path = getenv("SLUICE_TEST_MODEL");
    char err[256];
    char *text = NULL;
    wk_gguf_str s;
    cm_err rv;
    memset(m, 0, sizeof *m);
    if (path == NULL || access(path, R_OK) != 0) {
        fprintf(stderr, "SLUICE_TEST_MODEL not set: skipping\n");
        exit(77);
    }
    if (wk_gguf_open(path, &m->gguf, err, sizeof err) != CM_OK ||
        wk_tokenizer_load(m->gguf, &m->tok, err, sizeof err) != CM_OK) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (template_name == NULL && wk_gguf_get_str(m->gguf, "tokenizer.chat_template", &s) == CM_OK) {
        text = calloc(1, s.len + 1);
        if (text == NULL)
            return -1;
        memcpy(text, s.ptr, s.len);
    }
    rv = wk_chat_template_detect(text, template_name, &m->tmpl, err, sizeof err);
    free(text);
    if (rv != CM_OK) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static inline void svc_model_close(svc_model *m) {
    wk_tokenizer_free(m->tok);
    wk_gguf_close(m->gguf);
    memset(m, 0, sizeof *m);
}

#endif /* SVC_MODEL_H */
