#!/usr/bin/env python3
"""Writes quant_vectors.bin: test vectors for worker/quant.c, dequantized by the `gguf`
Python package (an independent implementation of the GGUF block formats).

Layout (little-endian), a sequence of records:
  u32 kind (0 = random blocks, 1 = bundled-model tensor row)
  kind 0: u32 ggml_type, u32 n_elems, raw block bytes, f32[n_elems] expected
  kind 1: u32 name_len, name bytes, u32 row, u32 ggml_type, u32 n_elems, f32[n_elems] expected
Regenerate: .venv/bin/python tests/unit/worker/data/gen_quant_vectors.py [model.gguf]
tests/reference/test_quant_types.py imports write_vectors() to make fresh random blocks on
every run.
"""
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import dequantize

rng = np.random.default_rng(20261127)
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", "..", "..", ".."))
model = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    root, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

# f16 scale fields (byte offsets inside a block) that must hold finite, moderate values
SCALES = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q8_0: [0], T.Q4_K: [0, 2], T.Q5_K: [0, 2],
          T.Q6_K: [208], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q2_K: [80, 82], T.Q3_K: [108],
          T.IQ4_NL: [0], T.IQ4_XS: [0]}
TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K, T.Q5_0, T.Q5_1,
         T.Q2_K, T.Q3_K, T.IQ4_NL, T.IQ4_XS]


def f16_bytes(v):
    return np.array([v], dtype=np.float16).tobytes()


def random_records(rng) -> bytes:
    """Kind-0 records: random blocks of every type in TYPES and their gguf dequantization."""
    out = bytearray()
    for qt in TYPES:
        block_elems, block_bytes = GGML_QUANT_SIZES[qt]
        n_blocks = 8 if block_elems == 256 else 24
        n = n_blocks * block_elems if block_elems > 1 else 256
        if qt == T.F32:
            raw = rng.standard_normal(n).astype(np.float32).tobytes()
        elif qt == T.F16:
            raw = (rng.standard_normal(n) * 3).astype(np.float16).tobytes()
        elif qt == T.BF16:
            f = (rng.standard_normal(n) * 3).astype(np.float32)
            raw = (f.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            raw = bytearray(rng.integers(0, 256, size=n_blocks * block_bytes, dtype=np.uint8).tobytes())
            for b in range(n_blocks):
                for off in SCALES[qt]:
                    v = float(rng.uniform(-0.05, 0.05))
                    raw[b * block_bytes + off: b * block_bytes + off + 2] = f16_bytes(v)
            raw = bytes(raw)
        data = np.frombuffer(raw, dtype=np.uint8)
        exp = dequantize(data, qt).astype(np.float32).reshape(-1)
        assert exp.size == n, (qt, exp.size, n)
        out += struct.pack("<III", 0, int(qt), n) + raw + exp.tobytes()
    return bytes(out)


def model_records(model) -> bytes:
    """Kind-1 records: rows of the bundled model's tensors dequantized by gguf."""
    out = bytearray()
    reader = GGUFReader(model)
    wanted = {"token_embd.weight": [0, 1, 504, 49151], "blk.0.attn_q.weight": [0, 7, 575],
              "blk.29.ffn_down.weight": [3, 575], "blk.5.ffn_gate.weight": [1535],
              "output_norm.weight": [0]}
    for t in reader.tensors:
        if t.name not in wanted:
            continue
        full = dequantize(t.data, t.tensor_type).astype(np.float32)
        full = full.reshape(-1, int(t.shape[0]))
        for r in wanted[t.name]:
            row = full[r]
            name = t.name.encode()
            out += struct.pack("<II", 1, len(name)) + name
            out += struct.pack("<III", r, int(t.tensor_type), row.size) + row.tobytes()
    return bytes(out)


if __name__ == "__main__":
    data = random_records(rng)
    if os.path.exists(model):
        data += model_records(model)
    with open(os.path.join(here, "quant_vectors.bin"), "wb") as f:
        f.write(data)
    print("wrote", len(data), "bytes")
