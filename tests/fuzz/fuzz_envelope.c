/*
 * libFuzzer target: wk_wire_decode on arbitrary bytes, the first thing every inbound gateway
 * message meets. Whatever the bytes, decode must return an error or an envelope whose
 * checked invariants hold; accepted Submits also go through the sampling conversion, and
 * accepted Tokenize messages (/tokenize, /detokenize) carry exactly one form.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    wk_wire_limits lim;
    wk_wire_limits_init(&lim);
    lim.max_prompt_ids = 8192;
    wk_wire_in in;
    char err[256];
    if (wk_wire_decode(data, size, &lim, &in, err, sizeof err) != CM_OK)
        return 0;
    if (in.kind == WK_WIRE_SUBMIT) {
        const Sluice__Submit *s = in.env->submit;
        int forms = (s->n_messages > 0) + (s->prompt != NULL) + (s->n_prompt_token_ids > 0);
        if (forms != 1 || s->n_stop > WK_MAX_STOP_STRINGS || s->n_prompt_token_ids > 8192)
            abort();
        wk_sampling_params p;
        (void)wk_wire_sampling(s->sampling, 1, &p, err, sizeof err);
        if (p.n_logit_bias > WK_MAX_LOGIT_BIAS)
            abort();
    }
    if (in.kind == WK_WIRE_TOKENIZE) {
        const Sluice__Tokenize *t = in.env->tokenize;
        int forms = (t->n_messages > 0) + (t->prompt != NULL) + (t->n_token_ids > 0);
        if (forms != 1 || t->n_token_ids > 8192 || (t->n_tools > 0 && t->n_messages == 0))
            abort();
    }
    wk_wire_in_free(&in);
    return 0;
}
