#!/usr/bin/env python3
"""Write a synthetic llama-architecture GGUF (random weights, a small real BPE tokenizer).

For the GPU machine's whole-stack check (scripts/gpu-check): a Llama-3-8B-shaped model in Q4_1,
Q4_K or F16 that the worker loads like any file, with a tokenizer in which every word of
sluice-load's prompt generator (loadtest/lt_prompt.c) with its leading space is one token, so a
"128-token" prompt is about 128 tokens here too. The rest of the 128,256-entry vocabulary is
reserved control tokens. Needs only numpy.

    synth_gguf.py OUT.gguf --type q4_k [--shape 8b|tiny] [--words loadtest/lt_prompt.c]

Weights are random blocks with scales that keep activations O(1); a block pattern is repeated
(the content does not change any timing). Writing is streamed: memory stays ~100 MB for a 16 GB
file.
"""
import argparse
import re
import struct
import sys

import numpy as np

SHAPES = {
    # n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, ctx
    "8b": (32, 4096, 14336, 32, 8, 128256, 8192),
    "tiny": (2, 256, 512, 4, 2, 2048, 2048),
}
GGML_F32, GGML_F16, GGML_Q4_1, GGML_Q4_K = 0, 1, 3, 12
TYPES = {"f16": GGML_F16, "q4_1": GGML_Q4_1, "q4_k": GGML_Q4_K}
# (elements, bytes) per block
BLOCK = {GGML_F32: (1, 4), GGML_F16: (1, 2), GGML_Q4_1: (32, 20), GGML_Q4_K: (256, 144)}
ALIGN = 32
GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STR, GGUF_ARR = 4, 5, 6, 7, 8, 9


def byte_unicode():
    """GPT-2's byte -> printable code point table (byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def vocab(words, n_vocab):
    """Tokens, token types and merges: the 256 byte tokens, then for each ' word' the chain of
    merges that builds it left to right (each prefix a token), then reserved tokens."""
    bu = byte_unicode()
    tokens = [bu[b] for b in range(256)]
    seen = set(tokens)
    merges = []
    for w in words:
        s = "".join(bu[b] for b in (" " + w).encode())
        for i in range(2, len(s) + 1):
            if s[:i] not in seen:
                merges.append(s[: i - 1] + " " + s[i - 1])
                tokens.append(s[:i])
                seen.add(s[:i])
    types = [1] * len(tokens)
    if len(tokens) + 2 > n_vocab:
        sys.exit("synth_gguf: vocabulary too small for the word list")
    while len(tokens) < n_vocab:
        tokens.append("<|reserved_special_token_%d|>" % (len(tokens)))
        types.append(3)
    return tokens, types, merges


def words_from(path):
    src = open(path, encoding="utf-8").read()
    body = src[src.index("words[] = {") : src.index("};", src.index("words[] = {"))]
    return re.findall(r'"([^"]+)"', body)


class Writer:
    def __init__(self, f):
        self.f = f

    def raw(self, b):
        self.f.write(b)

    def str_(self, s):
        b = s.encode()
        self.raw(struct.pack("<Q", len(b)) + b)

    def kv(self, key, typ, val):
        self.str_(key)
        self.raw(struct.pack("<I", typ))
        if typ == GGUF_U32:
            self.raw(struct.pack("<I", val))
        elif typ == GGUF_F32:
            self.raw(struct.pack("<f", val))
        elif typ == GGUF_BOOL:
            self.raw(struct.pack("<B", 1 if val else 0))
        elif typ == GGUF_STR:
            self.str_(val)

    def kv_arr(self, key, elem, vals):
        self.str_(key)
        self.raw(struct.pack("<IIQ", GGUF_ARR, elem, len(vals)))
        if elem == GGUF_STR:
            for v in vals:
                self.str_(v)
        else:
            self.raw(np.asarray(vals, dtype="<i4").tobytes())


def f16_bits(x):
    return np.asarray(x, dtype="<f2").view("<u2")


def pattern(gtype, cols, rng, nbytes):
    """nbytes (whole rows of cols elements) of valid random blocks, |w| ~ 1/sqrt(cols)."""
    amp = 1.0 / np.sqrt(cols)
    if gtype == GGML_F16:
        return rng.uniform(-amp, amp, nbytes // 2).astype("<f2").tobytes()
    if gtype == GGML_F32:
        return np.ones(nbytes // 4, dtype="<f4").tobytes()
    elems, bsz = BLOCK[gtype]
    nblk = nbytes // bsz
    raw = rng.integers(0, 256, size=(nblk, bsz), dtype=np.uint8)
    if gtype == GGML_Q4_1:  # x = q d + m, q in 0..15
        d = f16_bits(rng.uniform(0.8, 1.2, nblk) * 2 * amp / 15)
        m = f16_bits(-rng.uniform(0.8, 1.2, nblk) * amp)
        raw[:, 0:2] = d.view(np.uint8).reshape(nblk, 2)
        raw[:, 2:4] = m.view(np.uint8).reshape(nblk, 2)
    else:  # Q4_K: x = d sc q - dmin mn, sc and mn 6-bit (random bytes), q in 0..15
        d = f16_bits(rng.uniform(0.8, 1.2, nblk) * 2 * amp / (15 * 32))
        dmin = f16_bits(rng.uniform(0.8, 1.2, nblk) * amp / 32)
        raw[:, 0:2] = d.view(np.uint8).reshape(nblk, 2)
        raw[:, 2:4] = dmin.view(np.uint8).reshape(nblk, 2)
    return raw.tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--type", choices=sorted(TYPES), required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    ap.add_argument("--words", default="loadtest/lt_prompt.c")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    n_layer, n_embd, n_ff, n_head, n_kv, n_vocab, ctx = SHAPES[a.shape]
    hd = n_embd // n_head
    wt = TYPES[a.type]
    rng = np.random.default_rng(a.seed)

    tensors = [("token_embd.weight", (n_embd, n_vocab), wt)]
    for i in range(n_layer):
        p = "blk.%d." % i
        tensors += [
            (p + "attn_norm.weight", (n_embd,), GGML_F32),
            (p + "attn_q.weight", (n_embd, n_head * hd), wt),
            (p + "attn_k.weight", (n_embd, n_kv * hd), wt),
            (p + "attn_v.weight", (n_embd, n_kv * hd), wt),
            (p + "attn_output.weight", (n_head * hd, n_embd), wt),
            (p + "ffn_norm.weight", (n_embd,), GGML_F32),
            (p + "ffn_gate.weight", (n_embd, n_ff), wt),
            (p + "ffn_up.weight", (n_embd, n_ff), wt),
            (p + "ffn_down.weight", (n_ff, n_embd), wt),
        ]
    tensors += [("output_norm.weight", (n_embd,), GGML_F32), ("output.weight", (n_embd, n_vocab), wt)]

    def nbytes(dims, t):
        elems, bsz = BLOCK[t]
        n = 1
        for d in dims:
            n *= d
        return n // elems * bsz

    tokens, types, merges = vocab(words_from(a.words), n_vocab)
    eos = len(tokens) - 1
    with open(a.out, "wb") as f:
        w = Writer(f)
        kvs = 21
        w.raw(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), kvs))
        w.kv("general.architecture", GGUF_STR, "llama")
        w.kv("general.name", GGUF_STR, "synthetic-llama-%s-%s" % (a.shape, a.type))
        w.kv("general.alignment", GGUF_U32, ALIGN)
        w.kv("llama.block_count", GGUF_U32, n_layer)
        w.kv("llama.context_length", GGUF_U32, ctx)
        w.kv("llama.embedding_length", GGUF_U32, n_embd)
        w.kv("llama.feed_forward_length", GGUF_U32, n_ff)
        w.kv("llama.attention.head_count", GGUF_U32, n_head)
        w.kv("llama.attention.head_count_kv", GGUF_U32, n_kv)
        w.kv("llama.rope.freq_base", GGUF_F32, 500000.0)
        w.kv("llama.rope.dimension_count", GGUF_U32, hd)
        w.kv("llama.attention.layer_norm_rms_epsilon", GGUF_F32, 1e-5)
        w.kv("llama.vocab_size", GGUF_U32, n_vocab)
        w.kv("tokenizer.ggml.model", GGUF_STR, "gpt2")
        w.kv("tokenizer.ggml.pre", GGUF_STR, "llama-bpe")
        w.kv_arr("tokenizer.ggml.tokens", GGUF_STR, tokens)
        w.kv_arr("tokenizer.ggml.token_type", GGUF_I32, types)
        w.kv_arr("tokenizer.ggml.merges", GGUF_STR, merges)
        w.kv("tokenizer.ggml.bos_token_id", GGUF_U32, eos - 1)
        w.kv("tokenizer.ggml.eos_token_id", GGUF_U32, eos)
        w.kv("tokenizer.ggml.add_bos_token", GGUF_BOOL, False)
        off = 0
        for name, dims, t in tensors:
            w.str_(name)
            w.raw(struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims))
            w.raw(struct.pack("<IQ", t, off))
            off += (nbytes(dims, t) + ALIGN - 1) // ALIGN * ALIGN
        f.write(b"\0" * ((-f.tell()) % ALIGN))
        pats = {}
        for name, dims, t in tensors:
            n = nbytes(dims, t)
            cols = dims[0]
            row = nbytes((cols,), t)
            key = (t, cols)
            if key not in pats:
                rows = max(1, (16 << 20) // row)
                pats[key] = pattern(t, cols, rng, rows * row)
            pat = pats[key]
            left = n
            while left > 0:
                k = min(left, len(pat))
                f.write(pat[:k])
                left -= k
            f.write(b"\0" * ((-n) % ALIGN))
    print("synth_gguf: %s (%s, %s): %.2f GiB, vocab %d (%d merges)"
          % (a.out, a.shape, a.type, off / 2**30, n_vocab, len(merges)))


if __name__ == "__main__":
    main()
