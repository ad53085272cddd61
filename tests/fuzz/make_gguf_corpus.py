#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_gguf (tests/fuzz/corpus/gguf/) with the `gguf` Python
package's writer: small valid files that reach every part of the reader and the model loader.
Run: .venv/bin/python tests/fuzz/make_gguf_corpus.py
"""
import os

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType as Q
from gguf.quants import quantize

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)


def write(name, arch, fill, alignment=None):
    path = os.path.join(out, name)
    w = GGUFWriter(path, arch)
    if alignment:
        w.add_custom_alignment(alignment)
    fill(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tiny_llama(w, arch="llama", embd=32, ff=64, heads=2, kv=1, layers=1, vocab=8, bias=False,
               qtype=None):
    w.add_context_length(64)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    hd = embd // heads

    def mat(name, rows, cols):
        a = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        if qtype is not None and cols % 32 == 0:
            w.add_tensor(name, quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a)

    mat("token_embd.weight", vocab, embd)
    w.add_tensor("output_norm.weight", np.ones(embd, dtype=np.float32))
    for l in range(layers):
        w.add_tensor(f"blk.{l}.attn_norm.weight", np.ones(embd, dtype=np.float32))
        mat(f"blk.{l}.attn_q.weight", heads * hd, embd)
        mat(f"blk.{l}.attn_k.weight", kv * hd, embd)
        mat(f"blk.{l}.attn_v.weight", kv * hd, embd)
        mat(f"blk.{l}.attn_output.weight", embd, heads * hd)
        if bias:
            w.add_tensor(f"blk.{l}.attn_q.bias", np.zeros(heads * hd, dtype=np.float32))
            w.add_tensor(f"blk.{l}.attn_k.bias", np.zeros(kv * hd, dtype=np.float32))
            w.add_tensor(f"blk.{l}.attn_v.bias", np.zeros(kv * hd, dtype=np.float32))
        w.add_tensor(f"blk.{l}.ffn_norm.weight", np.ones(embd, dtype=np.float32))
        mat(f"blk.{l}.ffn_gate.weight", ff, embd)
        mat(f"blk.{l}.ffn_up.weight", ff, embd)
        mat(f"blk.{l}.ffn_down.weight", embd, ff)


def kv_zoo(w):
    w.add_uint8("k.u8", 200)
    w.add_int8("k.i8", -3)
    w.add_uint16("k.u16", 60000)
    w.add_int16("k.i16", -30000)
    w.add_uint32("k.u32", 4000000000)
    w.add_int32("k.i32", -7)
    w.add_float32("k.f32", 0.5)
    w.add_bool("k.bool", True)
    w.add_string("k.str", "héllo")
    w.add_uint64("k.u64", 1 << 40)
    w.add_int64("k.i64", -(1 << 40))
    w.add_float64("k.f64", 0.25)
    w.add_array("k.arr_i32", [1, -2, 3])
    w.add_array("k.arr_str", ["a", "", "ccc"])
    w.add_array("tokenizer.ggml.merges", ["a b", "c d"])
    w.add_tensor("f16", rng.standard_normal((2, 8)).astype(np.float16))
    w.add_tensor("f32", rng.standard_normal(4).astype(np.float32))


def quant_zoo(w):
    for qt in (Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.BF16):
        a = rng.standard_normal((2, 64)).astype(np.float32)
        w.add_tensor(f"t.{qt.name}", quantize(a, qt), raw_dtype=qt)
    # K-quants: raw blocks (the package may not quantize them); 1 row of 256
    for qt, nbytes in ((Q.Q4_K, 144), (Q.Q5_K, 176), (Q.Q6_K, 210)):
        raw = rng.integers(0, 256, size=(1, nbytes), dtype=np.uint8)
        raw[:, :4] = 0
        w.add_tensor(f"t.{qt.name}", raw, raw_dtype=qt)


write("empty.gguf", "llama", lambda w: None)
write("kv_zoo.gguf", "llama", kv_zoo)
write("kv_zoo_align64.gguf", "llama", kv_zoo, alignment=64)
write("quant_zoo.gguf", "llama", quant_zoo)
write("tiny_llama_f32.gguf", "llama", lambda w: tiny_llama(w))
write("tiny_llama_q8.gguf", "llama", lambda w: tiny_llama(w, qtype=Q.Q8_0))
write("tiny_qwen2_bias.gguf", "qwen2", lambda w: tiny_llama(w, arch="qwen2", bias=True))
write("tiny_mistral_tied.gguf", "mistral", lambda w: tiny_llama(w, layers=2, kv=2))
for f in sorted(os.listdir(out)):
    print(f, os.path.getsize(os.path.join(out, f)))
