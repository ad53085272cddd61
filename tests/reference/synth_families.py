"""Synthetic GGUF files of each supported model family, for the oracle tests (test_families.py).

Each file has the family's architecture name, metadata keys and tensor names and shapes as
llama.cpp's converter writes them (names from the gguf package's constants), small dimensions,
random float32 weights (or Q8_0/Q4_0 quantized by the gguf package), and a small byte-level BPE
tokenizer of its own (256 byte tokens, a few merges, ChatML's control tokens), so that
sluice-generate can tokenize prompts for it and the output head stays small. Norm weights are
random around 1 so that a norm applied to the wrong vector, or not at all, shows.

Usage as a tool:
    python synth_families.py FAMILY OUT.gguf [F32|Q8_0|Q4_0]
"""
from __future__ import annotations

import sys

import numpy as np
import gguf
import gguf.quants

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
    # gemma3: 5 local layers (window 7, base 10000, unscaled) to 1 global (base 1e6, linear
    # scaling by 8 as in the 4B and larger files), q/k norms
    "gemma3": dict(head_dim=64, n_layer=6, gemma=True, qk_norm=True,
                   kv={"attention.sliding_window": 7, "rope.freq_base": 1000000.0,
                       "rope.scaling.type": "linear", "rope.scaling.factor": 8.0}),
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


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-character table: the 256 base tokens of a byte-level BPE."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


# A few merges so that prompts tokenize into a mix of merged and single-byte tokens.
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"),
          ("Ġ", "w"), ("Ġ", "o"), ("r", "e")]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + "
          "'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}"
          "{% endif %}")


def _tiny_tokenizer(w: gguf.GGUFWriter) -> int:
    """A small byte-level BPE ("gpt2" model, gpt2 pre-tokenizer): the 256 byte tokens, MERGES
    and three control tokens, ChatML template. Returns the vocabulary size."""
    tokens = _byte_chars() + [a + b for a, b in MERGES]
    types = [gguf.TokenType.NORMAL] * len(tokens)
    tokens += SPECIALS
    types += [gguf.TokenType.CONTROL] * len(SPECIALS)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    eos = tokens.index("<|endoftext|>")
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    return len(tokens)


def write(family: str, out: str, seed: int = 1, wtype: str = "F32") -> None:
    """Writes family's file to out; wtype "Q8_0" or "Q4_0" quantizes the matrices (with the
    gguf package) except the expert router, kept f32 as llama.cpp's quantizer keeps it."""
    spec = FAMILIES[family]
    qtype = None if wtype == "F32" else gguf.GGMLQuantizationType[wtype]
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
        if isinstance(v, str):
            w.add_string(key, v)
        elif isinstance(v, float):
            w.add_float32(key, v)
        else:
            w.add_uint32(key, v)
    n_vocab = _tiny_tokenizer(w)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return rng.uniform(0.5, 1.5, n).astype(np.float32)

    T = gguf.TENSOR_NAMES
    M = gguf.MODEL_TENSOR

    def add(nm: str, a: np.ndarray) -> None:
        if qtype is None or a.ndim < 2 or "ffn_gate_inp" in nm:
            w.add_tensor(nm, a)
        else:
            w.add_tensor(nm, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    def name(t, bid=None) -> str:
        return (T[t].format(bid=bid) if bid is not None else T[t]) + ".weight"

    # Gemma scales the embeddings up by sqrt(n_embd) and ties the head to them: smaller values
    # keep the residual stream from drowning the layers' contributions.
    emb_std = 0.1 if spec.get("gemma") else 1.0
    add(name(M.TOKEN_EMBD), (emb_std * rng.standard_normal((n_vocab, N_EMBD))).astype(np.float32))
    add(name(M.OUTPUT_NORM), norm(N_EMBD))
    if not spec.get("gemma"):  # gemma files tie the head to the embeddings
        add(name(M.OUTPUT), mat(n_vocab, N_EMBD))
    for l in range(n_layer):
        add(name(M.ATTN_NORM, l), norm(N_EMBD))
        if spec.get("fused"):
            add(name(M.ATTN_QKV, l), mat(q_dim + 2 * kv_dim, N_EMBD))
        else:
            add(name(M.ATTN_Q, l), mat(q_dim, N_EMBD))
            add(name(M.ATTN_K, l), mat(kv_dim, N_EMBD))
            add(name(M.ATTN_V, l), mat(kv_dim, N_EMBD))
        if spec.get("biases"):
            add(T[M.ATTN_Q].format(bid=l) + ".bias", rng.standard_normal(q_dim).astype(np.float32) * 0.1)
            add(T[M.ATTN_K].format(bid=l) + ".bias", rng.standard_normal(kv_dim).astype(np.float32) * 0.1)
            add(T[M.ATTN_V].format(bid=l) + ".bias", rng.standard_normal(kv_dim).astype(np.float32) * 0.1)
        if spec.get("qk_norm"):
            add(name(M.ATTN_Q_NORM, l), norm(hd))
            add(name(M.ATTN_K_NORM, l), norm(hd))
        add(name(M.ATTN_OUT, l), mat(N_EMBD, q_dim))
        add(name(M.FFN_NORM, l), norm(N_EMBD))
        if spec.get("gemma"):
            add(name(M.ATTN_POST_NORM, l), norm(N_EMBD))
            add(name(M.FFN_POST_NORM, l), norm(N_EMBD))
        if spec.get("experts"):
            n_exp, _, ff_exp, ff_sh = spec["experts"]
            add(name(M.FFN_GATE_INP, l), mat(n_exp, N_EMBD))
            add(name(M.FFN_GATE_EXP, l), np.stack([mat(ff_exp, N_EMBD) for _ in range(n_exp)]))
            add(name(M.FFN_UP_EXP, l), np.stack([mat(ff_exp, N_EMBD) for _ in range(n_exp)]))
            add(name(M.FFN_DOWN_EXP, l), np.stack([mat(N_EMBD, ff_exp) for _ in range(n_exp)]))
            if ff_sh:
                add(name(M.FFN_GATE_INP_SHEXP, l), mat(1, N_EMBD)[0])
                add(name(M.FFN_GATE_SHEXP, l), mat(ff_sh, N_EMBD))
                add(name(M.FFN_UP_SHEXP, l), mat(ff_sh, N_EMBD))
                add(name(M.FFN_DOWN_SHEXP, l), mat(N_EMBD, ff_sh))
            continue
        if spec.get("fused"):
            add(name(M.FFN_UP, l), mat(2 * N_FF, N_EMBD))
        else:
            add(name(M.FFN_GATE, l), mat(N_FF, N_EMBD))
            add(name(M.FFN_UP, l), mat(N_FF, N_EMBD))
        add(name(M.FFN_DOWN, l), mat(N_EMBD, N_FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] not in FAMILIES:
        print(__doc__, file=sys.stderr)
        print("families:", ", ".join(FAMILIES), file=sys.stderr)
        return 2
    write(sys.argv[1], sys.argv[2], wtype=sys.argv[3] if len(sys.argv) > 3 else "F32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
