/*
 * wk_tokenizer: byte-level BPE and SentencePiece-style tokenization from GGUF metadata.
 *
 * This file: construction (from GGUF metadata or plain arrays), lookups and accessors.
 * Encoding is in tokenizer_encode.c, UTF-8 and the streaming detokenizer in tokenizer_detok.c.
 *
 * Layout: every token's text and its decoded bytes ("piece") live in two flat buffers with
 * offset tables; lookups go through open-addressing hash tables built at load (text -> id,
 * (left id, right id) -> merge rank). Nothing changes after construction, so one tokenizer
 * serves many threads.
 */
#include "tokenizer.h"
#include "tokenizer_impl.h"
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* ---------------------------------------------------------------------------------------- */
/* GPT-2 byte <-> unicode mapping: printable bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order, so every byte string becomes printable text. */

static bool gpt2_printable(uint32_t b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

/* Fills byte -> code point and code point -> byte (-1 = not a mapped byte) tables. */
static void gpt2_tables(uint16_t byte_cp[256], int16_t cp_byte[WK_GPT2_CP_LIMIT]) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < WK_GPT2_CP_LIMIT; i++) {
        cp_byte[i] = -1;
    }
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t cp = gpt2_printable(b) ? b : 256 + n++;
        byte_cp[b] = (uint16_t)cp;
        cp_byte[cp] = (int16_t)b;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Hash tables                                                                               */

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    key ^= key >> 33;
    return key;
}

static uint32_t table_size_for(uint64_t n) {
    uint32_t size = 16;
    while (size < n * 2) {
        size <<= 1;
    }
    return size;
}

bool wk_tok_is_special(const wk_tokenizer *t, int32_t id) {
    return t->type[id] == WK_TOKTYPE_CONTROL || t->type[id] == WK_TOKTYPE_USER_DEFINED;
}

const char *wk_tok_text(const wk_tokenizer *t, int32_t id, size_t *len) {
    *len = t->text_off[id + 1] - t->text_off[id] - 1;
    return t->text + t->text_off[id];
}

int32_t wk_tok_lookup(const wk_tokenizer *t, const char *s, size_t len) {
    uint32_t i = (uint32_t)hash_bytes(s, len) & t->vocab_mask;
    for (;;) {
        int32_t id = t->vocab_slot[i];
        if (id < 0) {
            return -1;
        }
        size_t tl;
        const char *tt = wk_tok_text(t, id, &tl);
        if (tl == len && memcmp(tt, s, len) == 0) {
            return id;
        }
        i = (i + 1) & t->vocab_mask;
    }
}

bool wk_tok_merge_lookup(const wk_tokenizer *t, int32_t left, int32_t right, uint32_t *rank,
                         int32_t *result) {
    if (t->merge_key == NULL) {
        return false;
    }
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    uint32_t i = (uint32_t)hash_pair(key) & t->merge_mask;
    for (;;) {
        uint64_t k = t->merge_key[i];
        if (k == UINT64_MAX) {
            return false;
        }
        if (k == key) {
            *rank = t->merge_rank[i];
            *result = t->merge_result[i];
            return true;
        }
        i = (i + 1) & t->merge_mask;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Construction                                                                              */

int wk_tokenizer_pre_from_name(const char *name, size_t len) {
    static const struct {
        const char *name;
        wk_tok_pre pre;
    } names[] = {
        {"default", WK_TOK_PRE_GPT2},     {"gpt2", WK_TOK_PRE_GPT2},
        {"gpt-2", WK_TOK_PRE_GPT2},       {"mpt", WK_TOK_PRE_GPT2},
        {"olmo", WK_TOK_PRE_GPT2},        {"smollm", WK_TOK_PRE_SMOLLM},
        {"starcoder", WK_TOK_PRE_SMOLLM}, {"refact", WK_TOK_PRE_SMOLLM},
        {"command-r", WK_TOK_PRE_SMOLLM}, {"codeshell", WK_TOK_PRE_SMOLLM},
        {"llama-bpe", WK_TOK_PRE_LLAMA3}, {"llama3", WK_TOK_PRE_LLAMA3},
        {"llama-v3", WK_TOK_PRE_LLAMA3},  {"qwen2", WK_TOK_PRE_QWEN2},
    };
    if (name == NULL) {
        return WK_TOK_PRE_GPT2;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) == len && memcmp(names[i].name, name, len) == 0) {
            return names[i].pre;
        }
    }
    return 0;
}

void wk_tokenizer_free(wk_tokenizer *t) {
    if (t == NULL) {
        return;
    }
    free(t->text);
    free(t->text_off);
    free(t->piece);
    free(t->piece_off);
    free(t->type);
    free(t->flags);
    free(t->score);
    free(t->vocab_slot);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_result);
    free(t->special_lens);
    free(t);
}

/* Decoded bytes of a normal token: BPE undoes the byte mapping (characters outside it stay as
 * they are), SPM turns U+2581 into a space and <0xNN> byte tokens into the byte. */
/* Fills t->byte_weight (see tokenizer_impl.h) from the pieces and special texts. */
static void byte_weights(wk_tokenizer *t) {
    uint32_t span[256] = {0};
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        for (int pass = 0; pass < 2; pass++) {
            size_t len;
            const char *s;
            if (pass == 0) {
                s = t->piece + t->piece_off[id];
                len = t->piece_off[id + 1] - t->piece_off[id];
            } else if (wk_tok_is_special(t, (int32_t)id)) {
                s = wk_tok_text(t, (int32_t)id, &len);
            } else {
                continue;
            }
            for (size_t i = 0; i < len; i++) {
                uint8_t b = (uint8_t)s[i];
                span[b] = span[b] > len ? span[b] : (uint32_t)len;
            }
        }
    }
    for (int b = 0; b < 256; b++) {
        /* SentencePiece's <unk> stands for one leftover byte of any value. */
        if (span[b] == 0 && t->model == WK_TOK_MODEL_SPM && t->unk >= 0) {
            span[b] = 1;
        }
        t->byte_weight[b] = span[b] > 0 ? 65536u / span[b] : 0;
    }
}

static size_t decode_piece(const wk_tokenizer *t, const char *s, size_t len, int type, char *out) {
    const uint8_t *p = (const uint8_t *)s;
    size_t o = 0;
    if (type == WK_TOKTYPE_CONTROL || type == WK_TOKTYPE_UNUSED || type == WK_TOKTYPE_UNKNOWN) {
        return 0;
    }
    if (type == WK_TOKTYPE_USER_DEFINED) {
        memcpy(out, s, len);
        return len;
    }
    if (t->model == WK_TOK_MODEL_SPM) {
        unsigned byte;
        if (type == WK_TOKTYPE_BYTE && len == 6 && sscanf(s, "<0x%2X>", &byte) == 1) {
            out[0] = (char)byte;
            return 1;
        }
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && p[i] == 0xE2 && p[i + 1] == 0x96 && p[i + 2] == 0x81) {
                out[o++] = ' ';
                i += 3;
            } else {
                out[o++] = s[i++];
            }
        }
        return o;
    }
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = wk_utf8_decode(p + i, len - i, &cp);
        if (n == 0) {
            out[o++] = s[i++];
            continue;
        }
        int b = cp < WK_GPT2_CP_LIMIT ? t->cp_byte[cp] : -1;
        if (b >= 0) {
            out[o++] = (char)b;
        } else {
            memcpy(out + o, s + i, n);
            o += n;
        }
        i += n;
    }
    return o;
}

static bool is_eog_text(const char *s, size_t len) {
    static const char *const eog[] = {"<|im_end|>",    "<|eot_id|>",    "<|end_of_text|>",
                                      "<end_of_turn>", "<|endoftext|>", "</s>",
                                      "<|eom_id|>",    "<|end|>"};
    for (size_t i = 0; i < sizeof eog / sizeof eog[0]; i++) {
        if (strlen(eog[i]) == len && memcmp(eog[i], s, len) == 0) {
            return true;
        }
    }
    return false;
}

static cm_err check_id(int32_t id, uint32_t n_vocab, const char *what, char *err, size_t errlen) {
    if (id < -1 || (id >= 0 && (uint32_t)id >= n_vocab)) {
        return cm_errf(CM_ERR_FORMAT, err, errlen,
                       "tokenizer: %s %d is not in the vocabulary (%u tokens)", what, id, n_vocab);
    }
    return CM_OK;
}

cm_err wk_tokenizer_from_spec(const wk_tokenizer_spec *spec, wk_tokenizer **out, char *err,
                              size_t errlen) {
    cm_err rv = CM_OK;
    wk_tokenizer *t = NULL;
    bool *len_seen = NULL; /* (WK_TOK_MAX_TOKEN_BYTES + 1) special-token lengths present */
    *out = NULL;
    if (spec->model != WK_TOK_MODEL_BPE && spec->model != WK_TOK_MODEL_SPM) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "tokenizer: unknown model kind %d",
                       (int)spec->model);
    }
    if (spec->n_vocab == 0 || spec->n_vocab > WK_TOK_MAX_VOCAB) {
        return cm_errf(spec->n_vocab == 0 ? CM_ERR_FORMAT : CM_ERR_LIMIT, err, errlen,
                       "tokenizer: vocabulary size %u out of range (1..%u)", spec->n_vocab,
                       WK_TOK_MAX_VOCAB);
    }
    if (spec->model == WK_TOK_MODEL_BPE && spec->pre != WK_TOK_PRE_GPT2 &&
        spec->pre != WK_TOK_PRE_SMOLLM && spec->pre != WK_TOK_PRE_LLAMA3 &&
        spec->pre != WK_TOK_PRE_QWEN2) {
        return cm_errf(CM_ERR_INVALID, err, errlen, "tokenizer: unknown pre-tokenizer %d",
                       (int)spec->pre);
    }
    if (spec->n_merges > WK_TOK_MAX_MERGES) {
        return cm_errf(CM_ERR_LIMIT, err, errlen, "tokenizer: %u merges exceed the limit %u",
                       spec->n_merges, WK_TOK_MAX_MERGES);
    }
    const int32_t ids[5] = {spec->bos, spec->eos, spec->eot, spec->eom, spec->unk};
    const char *id_names[5] = {"bos_token_id", "eos_token_id", "eot_token_id", "eom_token_id",
                               "unknown_token_id"};
    for (int i = 0; i < 5; i++) {
        rv = check_id(ids[i], spec->n_vocab, id_names[i], err, errlen);
        if (rv != CM_OK) {
            return rv;
        }
    }

    uint32_t n = spec->n_vocab;
    uint64_t text_bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (spec->token_lens[i] > WK_TOK_MAX_TOKEN_BYTES) {
            return cm_errf(CM_ERR_LIMIT, err, errlen,
                           "tokenizer: token %u is %u bytes long (limit %u)", i,
                           spec->token_lens[i], WK_TOK_MAX_TOKEN_BYTES);
        }
        if (spec->token_types != NULL &&
            (spec->token_types[i] < WK_TOKTYPE_NORMAL || spec->token_types[i] > WK_TOKTYPE_BYTE)) {
            return cm_errf(CM_ERR_FORMAT, err, errlen, "tokenizer: token %u has unknown type %d", i,
                           spec->token_types[i]);
        }
        text_bytes += spec->token_lens[i] + 1;
    }

    t = calloc(1, sizeof *t);
    if (t == NULL) {
        return CM_ERR_NOMEM;
    }
    t->model = spec->model;
    t->pre = spec->pre;
    t->n_vocab = n;
    t->bos = spec->bos;
    t->eos = spec->eos;
    t->eot = spec->eot;
    t->eom = spec->eom;
    t->unk = spec->unk;
    t->add_bos = spec->add_bos;
    t->add_space_prefix = spec->add_space_prefix;
    gpt2_tables(t->byte_cp, t->cp_byte);
    t->text = malloc(text_bytes);
    t->text_off = malloc(sizeof(uint32_t) * (n + 1));
    t->piece = malloc(text_bytes); /* decoding never grows a token */
    t->piece_off = malloc(sizeof(uint32_t) * (n + 1));
    t->type = malloc(n);
    t->flags = calloc(n, 1);
    t->score = calloc(n, sizeof(float));
    t->vocab_mask = table_size_for(n) - 1;
    t->vocab_slot = malloc(sizeof(int32_t) * ((size_t)t->vocab_mask + 1));
    len_seen = calloc(WK_TOK_MAX_TOKEN_BYTES + 1, 1);
    if (t->text == NULL || t->text_off == NULL || t->piece == NULL || t->piece_off == NULL ||
        t->type == NULL || t->flags == NULL || t->score == NULL || t->vocab_slot == NULL ||
        len_seen == NULL) {
        rv = CM_ERR_NOMEM;
        goto fail;
    }
    memset(t->vocab_slot, 0xFF, sizeof(int32_t) * ((size_t)t->vocab_mask + 1));

    uint32_t off = 0, poff = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = spec->token_lens[i];
        int type = spec->token_types != NULL ? spec->token_types[i] : WK_TOKTYPE_NORMAL;
        t->text_off[i] = off;
        if (len > 0) {
            memcpy(t->text + off, spec->tokens[i], len);
        }
        t->text[off + len] = '\0';
        t->type[i] = (uint8_t)type;
        t->score[i] = spec->scores != NULL ? spec->scores[i] : 0.0f;
        t->piece_off[i] = poff;
        size_t pl = decode_piece(t, t->text + off, len, type, t->piece + poff);
        poff += (uint32_t)pl;
        if (pl > t->max_piece) {
            t->max_piece = (uint32_t)pl;
        }
        if (len > t->max_piece) {
            t->max_piece = len; /* special tokens render as their text */
        }
        off += len + 1;

        /* Insert into the text table. For duplicate texts the first id wins, except that a
         * special token displaces a plain one (so special-token matching can find it). */
        bool special = (type == WK_TOKTYPE_CONTROL || type == WK_TOKTYPE_USER_DEFINED) && len > 0;
        uint32_t h = (uint32_t)hash_bytes(spec->tokens[i], len) & t->vocab_mask;
        for (;;) {
            int32_t id = t->vocab_slot[h];
            if (id < 0) {
                t->vocab_slot[h] = (int32_t)i;
                break;
            }
            size_t tl;
            const char *tt = wk_tok_text(t, id, &tl);
            if (tl == len && memcmp(tt, spec->tokens[i], len) == 0) {
                if (special && !wk_tok_is_special(t, id)) {
                    t->vocab_slot[h] = (int32_t)i;
                }
                break;
            }
            h = (h + 1) & t->vocab_mask;
        }
        if (special) {
            t->n_special++;
            t->special_first[(uint8_t)spec->tokens[i][0]] = true;
            len_seen[len] = true;
        }
        /* Gemma files mark <end_of_turn> user-defined, not control (llama.cpp overrides that
         * type too): a turn end of either kind ends generation. */
        if (special && is_eog_text(spec->tokens[i], len)) {
            t->flags[i] |= WK_TOKFLAG_EOG;
        }
    }
    t->text_off[n] = off;
    t->piece_off[n] = poff;
    /* Distinct special-token lengths, longest first: matching tries one hash lookup per
     * length at each candidate position, whatever the number of special tokens. */
    for (uint32_t l = WK_TOK_MAX_TOKEN_BYTES; l > 0; l--) {
        t->n_special_lens += len_seen[l];
    }
    t->special_lens = malloc(sizeof(uint16_t) * (t->n_special_lens + 1));
    if (t->special_lens == NULL) {
        rv = CM_ERR_NOMEM;
        goto fail;
    }
    for (uint32_t l = WK_TOK_MAX_TOKEN_BYTES, k = 0; l > 0; l--) {
        if (len_seen[l]) {
            t->special_lens[k++] = (uint16_t)l;
        }
    }
    for (int i = 1; i < 4; i++) { /* eos, eot, eom */
        if (ids[i] >= 0) {
            t->flags[ids[i]] |= WK_TOKFLAG_EOG;
        }
    }

    /* Raw byte -> token. */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        size_t bl;
        if (t->model == WK_TOK_MODEL_BPE) {
            bl = wk_utf8_encode(t->byte_cp[b], buf);
        } else {
            bl = (size_t)snprintf(buf, sizeof buf, "<0x%02X>", b);
        }
        /* Byte-level vocabularies may lack bytes that rarely occur (SmolLM2 has no token for
         * 0x04 or 0xF5..0xFF); such bytes are dropped when encoding, as HF tokenizers do. */
        t->byte_tok[b] = wk_tok_lookup(t, buf, bl);
    }

    byte_weights(t);

    if (t->model == WK_TOK_MODEL_BPE) {
        if (spec->n_merges == 0) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                         "tokenizer: byte-level BPE model without merges");
            goto fail;
        }
        t->merge_mask = table_size_for(spec->n_merges) - 1;
        size_t slots = (size_t)t->merge_mask + 1;
        t->merge_key = malloc(sizeof(uint64_t) * slots);
        t->merge_rank = malloc(sizeof(uint32_t) * slots);
        t->merge_result = malloc(sizeof(int32_t) * slots);
        if (t->merge_key == NULL || t->merge_rank == NULL || t->merge_result == NULL) {
            rv = CM_ERR_NOMEM;
            goto fail;
        }
        memset(t->merge_key, 0xFF, sizeof(uint64_t) * slots);
        char buf[2 * WK_TOK_MAX_TOKEN_BYTES + 2];
        for (uint32_t r = 0; r < spec->n_merges; r++) {
            const char *m = spec->merges[r];
            uint32_t ml = spec->merge_lens[r];
            /* Split at the first space after position 0 (parts never contain a space). */
            const char *sp = ml > 1 ? memchr(m + 1, ' ', ml - 1) : NULL;
            if (sp == NULL || ml > sizeof buf) {
                rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                             "tokenizer: merge %u is not \"left right\"", r);
                goto fail;
            }
            size_t ll = (size_t)(sp - m), rl = ml - ll - 1;
            int32_t left = wk_tok_lookup(t, m, ll);
            int32_t right = wk_tok_lookup(t, sp + 1, rl);
            memcpy(buf, m, ll);
            memcpy(buf + ll, sp + 1, rl);
            int32_t result = wk_tok_lookup(t, buf, ll + rl);
            if (left < 0 || right < 0 || result < 0) {
                continue; /* can never apply: its parts or result are not tokens */
            }
            uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
            uint32_t h = (uint32_t)hash_pair(key) & t->merge_mask;
            while (t->merge_key[h] != UINT64_MAX && t->merge_key[h] != key) {
                h = (h + 1) & t->merge_mask;
            }
            if (t->merge_key[h] == key) {
                continue; /* duplicate merge: the lower rank stays */
            }
            t->merge_key[h] = key;
            t->merge_rank[h] = r;
            t->merge_result[h] = result;
        }
    }
    free(len_seen);
    *out = t;
    return CM_OK;

fail:
    free(len_seen);
    wk_tokenizer_free(t);
    return rv;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading from GGUF                                                                         */

static cm_err gguf_opt_i32(const struct wk_gguf *g, const char *key, int32_t *v, char *err,
                           size_t errlen) {
    uint32_t u;
    cm_err rv = wk_gguf_get_u32(g, key, &u);
    if (rv == CM_ERR_NOT_FOUND) {
        int32_t s;
        rv = wk_gguf_get_i32(g, key, &s);
        if (rv == CM_ERR_NOT_FOUND) {
            *v = -1;
            return CM_OK;
        }
        if (rv == CM_OK) {
            *v = s < 0 ? -1 : s;
            return CM_OK;
        }
    }
    if (rv != CM_OK) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "tokenizer: %s has a bad type", key);
    }
    if (u > INT32_MAX) {
        *v = -1;
        return CM_OK;
    }
    *v = (int32_t)u;
    return CM_OK;
}

cm_err wk_tokenizer_load(const struct wk_gguf *g, wk_tokenizer **out, char *err, size_t errlen) {
    cm_err rv;
    wk_tokenizer_spec spec;
    const char **tokens = NULL, **merges = NULL;
    uint32_t *token_lens = NULL, *merge_lens = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    memset(&spec, 0, sizeof spec);
    *out = NULL;

    wk_gguf_str model;
    rv = wk_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rv != CM_OK) {
        return cm_errf(CM_ERR_FORMAT, err, errlen, "tokenizer: tokenizer.ggml.model is %s",
                       rv == CM_ERR_NOT_FOUND ? "missing" : "not a string");
    }
    if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0) {
        spec.model = WK_TOK_MODEL_BPE;
    } else if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0) {
        spec.model = WK_TOK_MODEL_SPM;
    } else {
        return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                       "tokenizer: model \"%.*s\" is not supported (gpt2, llama)",
                       (int)(model.len > 40 ? 40 : model.len), model.ptr);
    }
    if (spec.model == WK_TOK_MODEL_BPE) {
        wk_gguf_str pre;
        rv = wk_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
        int p = rv == CM_OK ? wk_tokenizer_pre_from_name(pre.ptr, (size_t)pre.len)
                            : (rv == CM_ERR_NOT_FOUND ? WK_TOK_PRE_GPT2 : 0);
        if (p == 0) {
            return cm_errf(CM_ERR_UNSUPPORTED, err, errlen,
                           "tokenizer: pre-tokenizer \"%.*s\" is not supported (smollm, gpt2, "
                           "llama-bpe, qwen2)",
                           rv == CM_OK ? (int)(pre.len > 40 ? 40 : pre.len) : 0,
                           rv == CM_OK ? pre.ptr : "");
        }
        spec.pre = (wk_tok_pre)p;
    }

    wk_gguf_arr toks;
    rv = wk_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks);
    if (rv != CM_OK || toks.elem_type != WK_GGUF_STRING) {
        return cm_errf(CM_ERR_FORMAT, err, errlen,
                       "tokenizer: tokenizer.ggml.tokens is missing or not strings");
    }
    if (toks.n == 0 || toks.n > WK_TOK_MAX_VOCAB) {
        return cm_errf(CM_ERR_LIMIT, err, errlen, "tokenizer: %llu tokens out of range (1..%u)",
                       (unsigned long long)toks.n, WK_TOK_MAX_VOCAB);
    }
    spec.n_vocab = (uint32_t)toks.n;
    tokens = malloc(sizeof(char *) * spec.n_vocab);
    token_lens = malloc(sizeof(uint32_t) * spec.n_vocab);
    if (tokens == NULL || token_lens == NULL) {
        rv = CM_ERR_NOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < spec.n_vocab; i++) {
        wk_gguf_str s;
        rv = wk_gguf_arr_str(&toks, i, &s);
        if (rv != CM_OK || s.len > WK_TOK_MAX_TOKEN_BYTES) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                         "tokenizer: token %u is unreadable or too long", i);
            goto fail;
        }
        tokens[i] = s.ptr;
        token_lens[i] = (uint32_t)s.len;
    }
    spec.tokens = tokens;
    spec.token_lens = token_lens;

    wk_gguf_arr arr;
    rv = wk_gguf_get_arr(g, "tokenizer.ggml.token_type", &arr);
    if (rv == CM_OK) {
        if ((arr.elem_type != WK_GGUF_INT32 && arr.elem_type != WK_GGUF_UINT32) ||
            arr.n != spec.n_vocab) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                         "tokenizer: token_type must be %u int32 values", spec.n_vocab);
            goto fail;
        }
        types = malloc(sizeof(int32_t) * spec.n_vocab);
        if (types == NULL) {
            rv = CM_ERR_NOMEM;
            goto fail;
        }
        memcpy(types, arr.data, sizeof(int32_t) * spec.n_vocab);
        spec.token_types = types;
    }
    rv = wk_gguf_get_arr(g, "tokenizer.ggml.scores", &arr);
    if (rv == CM_OK) {
        if (arr.elem_type != WK_GGUF_FLOAT32 || arr.n != spec.n_vocab) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen, "tokenizer: scores must be %u float32 values",
                         spec.n_vocab);
            goto fail;
        }
        scores = malloc(sizeof(float) * spec.n_vocab);
        if (scores == NULL) {
            rv = CM_ERR_NOMEM;
            goto fail;
        }
        memcpy(scores, arr.data, sizeof(float) * spec.n_vocab);
        spec.scores = scores;
    } else if (spec.model == WK_TOK_MODEL_SPM) {
        rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                     "tokenizer: SentencePiece model without tokenizer.ggml.scores");
        goto fail;
    }
    if (spec.model == WK_TOK_MODEL_BPE) {
        rv = wk_gguf_get_arr(g, "tokenizer.ggml.merges", &arr);
        if (rv != CM_OK || arr.elem_type != WK_GGUF_STRING) {
            rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                         "tokenizer: tokenizer.ggml.merges is missing or not strings");
            goto fail;
        }
        if (arr.n > WK_TOK_MAX_MERGES) {
            rv = cm_errf(CM_ERR_LIMIT, err, errlen, "tokenizer: %llu merges exceed the limit %u",
                         (unsigned long long)arr.n, WK_TOK_MAX_MERGES);
            goto fail;
        }
        spec.n_merges = (uint32_t)arr.n;
        merges = malloc(sizeof(char *) * (spec.n_merges + 1));
        merge_lens = malloc(sizeof(uint32_t) * (spec.n_merges + 1));
        if (merges == NULL || merge_lens == NULL) {
            rv = CM_ERR_NOMEM;
            goto fail;
        }
        for (uint32_t i = 0; i < spec.n_merges; i++) {
            wk_gguf_str s;
            rv = wk_gguf_arr_str(&arr, i, &s);
            if (rv != CM_OK || s.len > 2 * WK_TOK_MAX_TOKEN_BYTES + 1) {
                rv = cm_errf(CM_ERR_FORMAT, err, errlen,
                             "tokenizer: merge %u is unreadable or too long", i);
                goto fail;
            }
            merges[i] = s.ptr;
            merge_lens[i] = (uint32_t)s.len;
        }
        spec.merges = merges;
        spec.merge_lens = merge_lens;
    }

    struct {
        const char *key;
        int32_t *dst;
    } id_keys[] = {
        {"tokenizer.ggml.bos_token_id", &spec.bos},     {"tokenizer.ggml.eos_token_id", &spec.eos},
        {"tokenizer.ggml.eot_token_id", &spec.eot},     {"tokenizer.ggml.eom_token_id", &spec.eom},
        {"tokenizer.ggml.unknown_token_id", &spec.unk},
    };
    for (size_t i = 0; i < sizeof id_keys / sizeof id_keys[0]; i++) {
        rv = gguf_opt_i32(g, id_keys[i].key, id_keys[i].dst, err, errlen);
        if (rv != CM_OK) {
            goto fail;
        }
    }
    /* Defaults as llama.cpp applies them: SentencePiece adds BOS and a space prefix. */
    spec.add_bos = spec.model == WK_TOK_MODEL_SPM;
    spec.add_space_prefix = spec.model == WK_TOK_MODEL_SPM;
    bool b;
    if (wk_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) == CM_OK) {
        spec.add_bos = b;
    }
    if (wk_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b) == CM_OK) {
        spec.add_space_prefix = b;
    }
    if (spec.model == WK_TOK_MODEL_BPE) {
        spec.add_space_prefix = false; /* byte-level BPE never does (add_prefix_space=false) */
    }

    rv = wk_tokenizer_from_spec(&spec, out, err, errlen);

fail:
    free(tokens);
    free(token_lens);
    free(merges);
    free(merge_lens);
    free(types);
    free(scores);
    return rv;
}

/* ---------------------------------------------------------------------------------------- */
/* Accessors                                                                                 */

uint32_t wk_tokenizer_n_vocab(const wk_tokenizer *t) {
    return t->n_vocab;
}

int32_t wk_tokenizer_bos(const wk_tokenizer *t) {
    return t->bos;
}

int32_t wk_tokenizer_eos(const wk_tokenizer *t) {
    return t->eos;
}

bool wk_tokenizer_add_bos(const wk_tokenizer *t) {
    return t->add_bos && t->bos >= 0;
}

bool wk_tokenizer_is_eog(const wk_tokenizer *t, int32_t id) {
    return id >= 0 && (uint32_t)id < t->n_vocab && (t->flags[id] & WK_TOKFLAG_EOG) != 0;
}

int32_t wk_tokenizer_find(const wk_tokenizer *t, const char *s, size_t len) {
    return wk_tok_lookup(t, s, len);
}

const char *wk_tokenizer_piece(const wk_tokenizer *t, int32_t id, bool render_special,
                               size_t *len) {
    if (id < 0 || (uint32_t)id >= t->n_vocab) {
        *len = 0;
        return "";
    }
    if (t->type[id] == WK_TOKTYPE_CONTROL || t->type[id] == WK_TOKTYPE_UNKNOWN ||
        t->type[id] == WK_TOKTYPE_UNUSED) {
        if (render_special) {
            return wk_tok_text(t, id, len);
        }
        *len = 0;
        return "";
    }
    *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece + t->piece_off[id];
}
