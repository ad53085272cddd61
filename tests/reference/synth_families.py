"""Synthetic GGUF files of each supported model family, for the oracle tests (test_families.py).

Each file has the family's architecture name, metadata keys and tensor names and shapes as
llama.cpp's converter writes them (names from the gguf package's constants), small dimensions,
random float32 weights, and the tokenizer of a donor GGUF (the bundled model's byte-level BPE)
copied key by key, so that sluice-generate can tokenize prompts for it. Norm weights are
random around 1 so that a norm applied to the wrong vector, or not at all, shows.

Usage as a tool:
    python synth_families.py FAMILY OUT.gguf [DONOR.gguf]
"""
from __future__ import annotations

import sys

import numpy as np
import gguf

# Small shapes that still exercise GQA (4 query heads on 2 KV heads), a head dim that is not
# n_embd / n_head (qwen3, gemma), and the CPU backend's 32-element activation blocks.
N_EMBD = 128
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 256

FAMILIES = {
    # arch: extra metadata, head_dim, layers, features
    "qwen3": dict(head_dim=64, n_layer=3, qk_norm=True),
    "phi3": dict(head_dim=32, n_layer=3, fused=True),
    # gemma2: sliding window on even layers (window 5 positions), attention and final
    # soft-capping low enough to matter at these scales
    "gemma2": dict(head_dim=64, n_layer=4, gemma=True,
                   kv={"attention.sliding_window": 5, "attn_logit_softcapping": 2.0,
                       "final_logit_softcapping": 8.0}),
    # gemma3: 5 local layers (window 7, base 10000) to 1 global (base 1e6), q/k norms
    "gemma3": dict(head_dim=64, n_layer=6, gemma=True, qk_norm=True,
                   kv={"attention.sliding_window": 7, "rope.freq_base": 1000000.0}),
    # mixture of experts: Mixtral is a llama file with experts (top-2 of 4, renormalized)
    "mixtral": dict(arch="llama", head_dim=32, n_layer=2, experts=(4, 2, N_FF, 0),
                    kv={"expert_count": 4, "expert_used_count": 2}),
    # qwen2moe: top-2 of 4 narrower experts (weights not renormalized), a shared expert, biases
    "qwen2moe": dict(head_dim=32, n_layer=2, experts=(4, 2, 64, 128), biases=True,
                     kv={"expert_count": 4, "expert_used_count": 2,
                         "expert_feed_forward_length": 64,
                         "expert_shared_feed_forward_length": 128}),
    # qwen3moe: top-2 of 8, renormalized, q/k norms
    "qwen3moe": dict(head_dim=64, n_layer=2, experts=(8, 2, 96, 0), qk_norm=True,
                     kv={"expert_count": 8, "expert_used_count": 2,
                         "expert_feed_forward_length": 96}),
}


def _copy_tokenizer(w: gguf.GGUFWriter, donor: gguf.GGUFReader) -> int:
    """Copies every tokenizer.* key of donor; returns its vocabulary size."""
    n_vocab = 0
    for key, f in donor.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        val = f.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, val, vtype, sub_type=f.types[1])
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(val)
        else:
            w.add_key_value(key, val, vtype)
    if n_vocab == 0:
        raise ValueError("donor GGUF has no tokenizer.ggml.tokens")
    return n_vocab


def write(family: str, out: str, donor_path: str, seed: int = 1) -> None:
    spec = FAMILIES[family]
    rng = np.random.default_rng(seed)
    hd, n_layer = spec["head_dim"], spec["n_layer"]
    q_dim, kv_dim = N_HEAD * hd, N_HEAD_KV * hd
    arch = spec.get("arch", family)
    w = gguf.GGUFWriter(out, arch)
    w.add_name(f"synthetic-{family}")
    w.add_context_length(4096)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-6)
    for k, v in spec.get("kv", {}).items():
        key = f"{arch}.{k}"
        if isinstance(v, float):
            w.add_float32(key, v)
        else:
            w.add_uint32(key, v)
    donor = gguf.GGUFReader(donor_path)
    n_vocab = _copy_tokenizer(w, donor)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return rng.uniform(0.5, 1.5, n).astype(np.float32)

    T = gguf.TENSOR_NAMES
    M = gguf.MODEL_TENSOR

    def name(t, bid=None) -> str:
        return (T[t].format(bid=bid) if bid is not None else T[t]) + ".weight"

    # Gemma scales the embeddings up by sqrt(n_embd) and ties the head to them: smaller values
    # keep the residual stream from drowning the layers' contributions.
    emb_std = 0.1 if spec.get("gemma") else 1.0
    w.add_tensor(name(M.TOKEN_EMBD), (emb_std * rng.standard_normal((n_vocab, N_EMBD))).astype(np.float32))
    w.add_tensor(name(M.OUTPUT_NORM), norm(N_EMBD))
    if not spec.get("gemma"):  # gemma files tie the head to the embeddings
        w.add_tensor(name(M.OUTPUT), mat(n_vocab, N_EMBD))
    for l in range(n_layer):
        w.add_tensor(name(M.ATTN_NORM, l), norm(N_EMBD))
        if spec.get("fused"):
            w.add_tensor(name(M.ATTN_QKV, l), mat(q_dim + 2 * kv_dim, N_EMBD))
        else:
            w.add_tensor(name(M.ATTN_Q, l), mat(q_dim, N_EMBD))
            w.add_tensor(name(M.ATTN_K, l), mat(kv_dim, N_EMBD))
            w.add_tensor(name(M.ATTN_V, l), mat(kv_dim, N_EMBD))
        if spec.get("biases"):
            w.add_tensor(T[M.ATTN_Q].format(bid=l) + ".bias", rng.standard_normal(q_dim).astype(np.float32) * 0.1)
            w.add_tensor(T[M.ATTN_K].format(bid=l) + ".bias", rng.standard_normal(kv_dim).astype(np.float32) * 0.1)
            w.add_tensor(T[M.ATTN_V].format(bid=l) + ".bias", rng.standard_normal(kv_dim).astype(np.float32) * 0.1)
        if spec.get("qk_norm"):
            w.add_tensor(name(M.ATTN_Q_NORM, l), norm(hd))
            w.add_tensor(name(M.ATTN_K_NORM, l), norm(hd))
        w.add_tensor(name(M.ATTN_OUT, l), mat(N_EMBD, q_dim))
        w.add_tensor(name(M.FFN_NORM, l), norm(N_EMBD))
        if spec.get("gemma"):
            w.add_tensor(name(M.ATTN_POST_NORM, l), norm(N_EMBD))
            w.add_tensor(name(M.FFN_POST_NORM, l), norm(N_EMBD))
        if spec.get("experts"):
            n_exp, _, ff_exp, ff_sh = spec["experts"]
            w.add_tensor(name(M.FFN_GATE_INP, l), mat(n_exp, N_EMBD))
            w.add_tensor(name(M.FFN_GATE_EXP, l), np.stack([mat(ff_exp, N_EMBD) for _ in range(n_exp)]))
            w.add_tensor(name(M.FFN_UP_EXP, l), np.stack([mat(ff_exp, N_EMBD) for _ in range(n_exp)]))
            w.add_tensor(name(M.FFN_DOWN_EXP, l), np.stack([mat(N_EMBD, ff_exp) for _ in range(n_exp)]))
            if ff_sh:
                w.add_tensor(name(M.FFN_GATE_INP_SHEXP, l), mat(1, N_EMBD)[0])
                w.add_tensor(name(M.FFN_GATE_SHEXP, l), mat(ff_sh, N_EMBD))
                w.add_tensor(name(M.FFN_UP_SHEXP, l), mat(ff_sh, N_EMBD))
                w.add_tensor(name(M.FFN_DOWN_SHEXP, l), mat(N_EMBD, ff_sh))
            continue
        if spec.get("fused"):
            w.add_tensor(name(M.FFN_UP, l), mat(2 * N_FF, N_EMBD))
        else:
            w.add_tensor(name(M.FFN_GATE, l), mat(N_FF, N_EMBD))
            w.add_tensor(name(M.FFN_UP, l), mat(N_FF, N_EMBD))
        w.add_tensor(name(M.FFN_DOWN, l), mat(N_EMBD, N_FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] not in FAMILIES:
        print(__doc__, file=sys.stderr)
        print("families:", ", ".join(FAMILIES), file=sys.stderr)
        return 2
    donor = sys.argv[3] if len(sys.argv) > 3 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    write(sys.argv[1], sys.argv[2], donor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
