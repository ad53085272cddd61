"""An independent numpy implementation of the llama-family forward pass (the C engine's oracle).

It reads a GGUF file with the `gguf` package, dequantizes every weight with
`gguf.quants.dequantize` (not with Sluice's kernels) and runs the decoder in float32:
RMSNorm, RoPE (adjacent-pair "norm" style for llama files, half-split "neox" for qwen2),
grouped-query causal attention, SwiGLU MLP, output head (tied to the embeddings when the file
has no output.weight). A plain KV cache (float32) makes greedy decoding cheap.

Usage as a tool:
    python oracle.py MODEL.gguf --ids 1,2,3 [--generate 32]
prints the final-position top-5 logits (and a greedy continuation).
"""
from __future__ import annotations

import os

# One BLAS thread (before numpy loads): spinning OpenBLAS threads on a loaded 2-core machine
# made the small matrix-vector products several times slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import gguf
from gguf.quants import dequantize


def _field_scalar(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


@dataclass
class HParams:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    rms_eps: float
    rope_base: float
    neox: bool


class Oracle:
    """Dequantized float32 weights of one GGUF model, and a forward pass over them."""

    def __init__(self, path: str):
        t0 = time.time()
        r = gguf.GGUFReader(path)
        arch = _field_scalar(r, "general.architecture")
        if arch not in ("llama", "qwen2", "mistral"):
            raise ValueError(f"architecture {arch!r} not supported by the oracle")
        p = arch + "."
        n_embd = int(_field_scalar(r, p + "embedding_length"))
        n_head = int(_field_scalar(r, p + "attention.head_count"))
        self.tensors: dict[str, np.ndarray] = {}
        for t in r.tensors:
            w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            # GGUF dims are (ne0 = contiguous, ne1, ...); numpy shape is the reverse.
            shape = tuple(int(d) for d in reversed(t.shape))
            self.tensors[t.name] = np.ascontiguousarray(w.reshape(shape))
        emb = self.tensors["token_embd.weight"]
        head_dim = int(_field_scalar(r, p + "attention.key_length", n_embd // n_head))
        self.hp = HParams(
            arch=arch,
            n_vocab=emb.shape[0],
            n_embd=n_embd,
            n_layer=int(_field_scalar(r, p + "block_count")),
            n_head=n_head,
            n_head_kv=int(_field_scalar(r, p + "attention.head_count_kv", n_head)),
            head_dim=head_dim,
            n_ff=int(_field_scalar(r, p + "feed_forward_length")),
            rms_eps=float(_field_scalar(r, p + "attention.layer_norm_rms_epsilon", 1e-5)),
            rope_base=float(_field_scalar(r, p + "rope.freq_base", 10000.0)),
            neox=arch == "qwen2",
        )
        self.output = self.tensors.get("output.weight", emb)
        hd = self.hp.head_dim
        self.inv_freq = (1.0 / (self.hp.rope_base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))).astype(
            np.float64
        )
        self.load_s = time.time() - t0

    # -- building blocks --------------------------------------------------------------------
    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(ms + self.hp.rms_eps)) * w

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x: (T, heads, head_dim); rotates by position."""
        ang = np.outer(pos.astype(np.float64), self.inv_freq)  # (T, hd/2)
        cos = np.cos(ang).astype(np.float32)[:, None, :]
        sin = np.sin(ang).astype(np.float32)[:, None, :]
        out = np.empty_like(x)
        if self.hp.neox:
            h = x.shape[-1] // 2
            a, b = x[..., :h], x[..., h:]
            out[..., :h] = a * cos - b * sin
            out[..., h:] = a * sin + b * cos
        else:
            a, b = x[..., 0::2], x[..., 1::2]
            out[..., 0::2] = a * cos - b * sin
            out[..., 1::2] = a * sin + b * cos
        return out

    def _lin(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.tensors[name + ".weight"].T
        b = self.tensors.get(name + ".bias")
        return y + b if b is not None else y

    # -- forward ----------------------------------------------------------------------------
    def new_cache(self) -> list:
        return [[None, None] for _ in range(self.hp.n_layer)]

    def forward(self, ids: list[int], cache: list | None = None, start: int = 0) -> np.ndarray:
        """Runs ids at positions start.. (cache holds positions < start); returns logits of
        the last position, (n_vocab,) float32."""
        hp = self.hp
        T = len(ids)
        pos = np.arange(start, start + T)
        x = self.tensors["token_embd.weight"][np.asarray(ids)]  # (T, n_embd)
        group = hp.n_head // hp.n_head_kv
        scale = 1.0 / np.sqrt(hp.head_dim)
        for l in range(hp.n_layer):
            p = f"blk.{l}."
            h = self._rms(x, self.tensors[p + "attn_norm.weight"])
            q = self._lin(h, p + "attn_q").reshape(T, hp.n_head, hp.head_dim)
            k = self._lin(h, p + "attn_k").reshape(T, hp.n_head_kv, hp.head_dim)
            v = self._lin(h, p + "attn_v").reshape(T, hp.n_head_kv, hp.head_dim)
            q = self._rope(q, pos)
            k = self._rope(k, pos)
            if cache is not None:
                if cache[l][0] is not None:
                    k = np.concatenate([cache[l][0], k], axis=0)
                    v = np.concatenate([cache[l][1], v], axis=0)
                cache[l][0], cache[l][1] = k, v
            S = k.shape[0]
            kk = np.repeat(k, group, axis=1)  # (S, n_head, hd)
            vv = np.repeat(v, group, axis=1)
            att = np.einsum("thd,shd->hts", q, kk) * scale  # (n_head, T, S)
            # causal: query t (absolute start + t) sees keys at absolute positions <= it
            qpos = np.arange(start, start + T)[:, None]
            kpos = np.arange(S)[None, :]
            att = np.where(kpos <= qpos, att, -np.inf)
            att = att - att.max(axis=-1, keepdims=True)
            att = np.exp(att)
            att /= att.sum(axis=-1, keepdims=True)
            o = np.einsum("hts,shd->thd", att, vv).reshape(T, hp.n_head * hp.head_dim)
            x = x + self._lin(o, p + "attn_output")
            h = self._rms(x, self.tensors[p + "ffn_norm.weight"])
            g = self._lin(h, p + "ffn_gate")
            u = self._lin(h, p + "ffn_up")
            x = x + self._lin((g / (1.0 + np.exp(-g))) * u, p + "ffn_down")
        x = self._rms(x[-1:], self.tensors["output_norm.weight"])
        return (x @ self.output.T)[0].astype(np.float32)

    def greedy(self, ids: list[int], n: int, stop_ids: set[int] = frozenset()) -> list[int]:
        """Greedy continuation of n tokens (stops early at a stop id, which is included)."""
        cache = self.new_cache()
        logits = self.forward(ids, cache, 0)
        out: list[int] = []
        pos = len(ids)
        for _ in range(n):
            t = int(np.argmax(logits))
            out.append(t)
            if t in stop_ids:
                break
            logits = self.forward([t], cache, pos)
            pos += 1
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ids", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--generate", type=int, default=0)
    a = ap.parse_args()
    o = Oracle(a.model)
    ids = [int(x) for x in a.ids.split(",")]
    t0 = time.time()
    logits = o.forward(ids)
    top = np.argsort(-logits)[:5]
    print(f"load {o.load_s:.1f}s forward {time.time() - t0:.2f}s")
    print("top5:", [(int(i), float(logits[i])) for i in top])
    if a.generate:
        print("greedy:", o.greedy(ids, a.generate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
