"""An independent numpy implementation of the llama-family forward pass (the C engine's oracle).

It reads a GGUF file with the `gguf` package, dequantizes every weight with
`gguf.quants.dequantize` (not with Sluice's kernels) and runs the decoder in float32:
RMSNorm, RoPE (adjacent-pair "norm" style for llama files, half-split "neox" for the others),
grouped-query causal attention, SwiGLU MLP, output head (tied to the embeddings when the file
has no output.weight). A plain KV cache (float32) makes greedy decoding cheap.

Families beyond llama/mistral/qwen2, each feature taken from the file as llama.cpp reads it:
  * qwen3: per-head RMSNorm of q and k (attn_q_norm/attn_k_norm) before RoPE;
  * phi3: fused attn_qkv (q, k, v rows) and ffn_up (gate rows, then up rows);
  * gemma2/gemma3: embeddings times sqrt(n_embd); GELU(tanh) gated FFN; post_attention_norm
    and post_ffw_norm on the branch outputs; query scale 1/sqrt(head_dim) (1/sqrt(n_embd /
    n_head) for the 27B layer counts); attention and final logit soft-capping; sliding-window
    attention on the layers the pattern marks (gemma2: even layers, gemma3: 5 of every 6),
    gemma3's local layers rotating with rope.freq_base_swa (default 10000). Norm weights are
    used as stored: llama.cpp's converter already added Gemma's +1;
  * mixture of experts (llama files with expert_count = Mixtral, qwen2moe, qwen3moe): the
    router's softmax over ffn_gate_inp, each token's expert_used_count most probable experts
    (ffn_{gate,up,down}_exps, 3-D) weighted by their probabilities, renormalized to sum 1
    except for qwen2moe (expert_weights_norm overrides), plus qwen2moe's shared expert
    (ffn_*_shexp) scaled by sigmoid(ffn_gate_inp_shexp . x).

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
    gemma: bool = False
    attn_scale: float = 0.0
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    swa_window: int = 0
    swa_pattern: int = 1
    rope_base_swa: float = 0.0
    n_expert: int = 0
    n_expert_used: int = 0
    expert_norm: bool = True

    def layer_swa(self, l: int) -> bool:
        return self.swa_window > 0 and (self.swa_pattern <= 1 or l % self.swa_pattern != self.swa_pattern - 1)


FAMILIES = ("llama", "qwen2", "mistral", "qwen3", "phi3", "gemma2", "gemma3", "qwen2moe", "qwen3moe")


class Oracle:
    """Dequantized float32 weights of one GGUF model, and a forward pass over them."""

    def __init__(self, path: str):
        t0 = time.time()
        r = gguf.GGUFReader(path)
        arch = _field_scalar(r, "general.architecture")
        if arch not in FAMILIES:
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
            neox=arch not in ("llama", "mistral"),
        )
        hp = self.hp
        hp.n_expert = int(_field_scalar(r, p + "expert_count", 0))
        if hp.n_expert:
            hp.n_expert_used = int(_field_scalar(r, p + "expert_used_count"))
            hp.expert_norm = bool(_field_scalar(r, p + "expert_weights_norm", arch != "qwen2moe"))
        if arch == "phi3":
            q_dim, kv_dim = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
            for l in range(hp.n_layer):
                p_ = f"blk.{l}."
                qkv = self.tensors.pop(p_ + "attn_qkv.weight")
                self.tensors[p_ + "attn_q.weight"] = qkv[:q_dim]
                self.tensors[p_ + "attn_k.weight"] = qkv[q_dim:q_dim + kv_dim]
                self.tensors[p_ + "attn_v.weight"] = qkv[q_dim + kv_dim:]
                gu = self.tensors.pop(p_ + "ffn_up.weight")
                self.tensors[p_ + "ffn_gate.weight"] = gu[:hp.n_ff]
                self.tensors[p_ + "ffn_up.weight"] = gu[hp.n_ff:]
        if arch in ("gemma2", "gemma3"):
            hp.gemma = True
            big = 62 if arch == "gemma3" else 46
            dflt = 1.0 / np.sqrt(n_embd // n_head) if hp.n_layer == big else 1.0 / np.sqrt(hp.head_dim)
            hp.attn_scale = float(_field_scalar(r, p + "attention.scale", dflt))
            hp.attn_softcap = float(_field_scalar(r, p + "attn_logit_softcapping", 0.0))
            hp.final_softcap = float(_field_scalar(r, p + "final_logit_softcapping", 0.0))
            hp.swa_window = int(_field_scalar(r, p + "attention.sliding_window", 0))
            hp.swa_pattern = int(_field_scalar(r, p + "attention.sliding_window_pattern",
                                               6 if arch == "gemma3" else 2))
            hp.rope_base_swa = float(_field_scalar(r, p + "rope.freq_base_swa",
                                                   10000.0 if arch == "gemma3" else hp.rope_base))
        self.output = self.tensors.get("output.weight", emb)
        hd = self.hp.head_dim
        self.inv_freq = (1.0 / (self.hp.rope_base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))).astype(
            np.float64
        )
        scaling = _field_scalar(r, p + "rope.scaling.type", "none")
        if scaling == "linear":  # positions divided by the factor (gemma3's global layers)
            self.inv_freq /= float(_field_scalar(r, p + "rope.scaling.factor"))
        elif scaling != "none":
            raise ValueError(f"rope scaling {scaling!r} not supported by the oracle")
        base_swa = hp.rope_base_swa or hp.rope_base
        self.inv_freq_swa = 1.0 / (base_swa ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        self.load_s = time.time() - t0

    # -- building blocks --------------------------------------------------------------------
    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(ms + self.hp.rms_eps)) * w

    def _rope(self, x: np.ndarray, pos: np.ndarray, inv_freq: np.ndarray | None = None) -> np.ndarray:
        """x: (T, heads, head_dim); rotates by position."""
        inv_freq = self.inv_freq if inv_freq is None else inv_freq
        ang = np.outer(pos.astype(np.float64), inv_freq)  # (T, hd/2)
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

    def _ffn(self, h: np.ndarray, wg: np.ndarray, wu: np.ndarray, wd: np.ndarray) -> np.ndarray:
        g = h @ wg.T
        u = h @ wu.T
        if self.hp.gemma:
            act = 0.5 * g * (1.0 + np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (g + 0.044715 * g ** 3)))
        else:
            act = g / (1.0 + np.exp(-g))
        return (act * u) @ wd.T

    def _moe(self, h: np.ndarray, p: str) -> np.ndarray:
        hp = self.hp
        z = h @ self.tensors[p + "ffn_gate_inp.weight"].T  # (T, n_expert)
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        probs = z / z.sum(axis=-1, keepdims=True)
        wg, wu, wd = (self.tensors[p + f"ffn_{n}_exps.weight"] for n in ("gate", "up", "down"))
        out = np.zeros_like(h)
        for t in range(h.shape[0]):
            top = np.argsort(-probs[t], kind="stable")[:hp.n_expert_used]
            w = probs[t, top]
            if hp.expert_norm:
                w = w / w.sum()
            for e, we in zip(top, w):
                out[t] += we * self._ffn(h[t:t + 1], wg[e], wu[e], wd[e])[0]
        if p + "ffn_gate_inp_shexp.weight" in self.tensors:
            s = self._ffn(h, self.tensors[p + "ffn_gate_shexp.weight"], self.tensors[p + "ffn_up_shexp.weight"],
                          self.tensors[p + "ffn_down_shexp.weight"])
            gate = 1.0 / (1.0 + np.exp(-(h @ self.tensors[p + "ffn_gate_inp_shexp.weight"].reshape(-1))))
            out += gate[:, None] * s
        return out

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
        if hp.gemma:
            x = x * np.float32(np.sqrt(hp.n_embd))
        group = hp.n_head // hp.n_head_kv
        # float32 scalars throughout: a numpy float64 one would turn the activations into float64
        scale = np.float32(hp.attn_scale or 1.0 / np.sqrt(hp.head_dim))
        for l in range(hp.n_layer):
            p = f"blk.{l}."
            h = self._rms(x, self.tensors[p + "attn_norm.weight"])
            q = self._lin(h, p + "attn_q").reshape(T, hp.n_head, hp.head_dim)
            k = self._lin(h, p + "attn_k").reshape(T, hp.n_head_kv, hp.head_dim)
            v = self._lin(h, p + "attn_v").reshape(T, hp.n_head_kv, hp.head_dim)
            if p + "attn_q_norm.weight" in self.tensors:
                q = self._rms(q, self.tensors[p + "attn_q_norm.weight"])
                k = self._rms(k, self.tensors[p + "attn_k_norm.weight"])
            swa = hp.layer_swa(l)
            inv = self.inv_freq_swa if swa else self.inv_freq
            q = self._rope(q, pos, inv)
            k = self._rope(k, pos, inv)
            if cache is not None:
                if cache[l][0] is not None:
                    k = np.concatenate([cache[l][0], k], axis=0)
                    v = np.concatenate([cache[l][1], v], axis=0)
                cache[l][0], cache[l][1] = k, v
            S = k.shape[0]
            kk = np.repeat(k, group, axis=1)  # (S, n_head, hd)
            vv = np.repeat(v, group, axis=1)
            att = np.einsum("thd,shd->hts", q, kk) * scale  # (n_head, T, S)
            if hp.attn_softcap:
                att = hp.attn_softcap * np.tanh(att / hp.attn_softcap)
            # causal: query t (absolute start + t) sees keys at absolute positions <= it, and
            # on a sliding-window layer only the last swa_window of them
            qpos = np.arange(start, start + T)[:, None]
            kpos = np.arange(S)[None, :]
            visible = kpos <= qpos
            if swa:
                visible &= kpos > qpos - hp.swa_window
            att = np.where(visible, att, -np.inf)
            att = att - att.max(axis=-1, keepdims=True)
            att = np.exp(att)
            att /= att.sum(axis=-1, keepdims=True)
            o = np.einsum("hts,shd->thd", att, vv).reshape(T, hp.n_head * hp.head_dim)
            o = self._lin(o, p + "attn_output")
            if p + "post_attention_norm.weight" in self.tensors:
                o = self._rms(o, self.tensors[p + "post_attention_norm.weight"])
            x = x + o
            h = self._rms(x, self.tensors[p + "ffn_norm.weight"])
            if hp.n_expert:
                f = self._moe(h, p)
            else:
                f = self._ffn(h, self.tensors[p + "ffn_gate.weight"], self.tensors[p + "ffn_up.weight"],
                              self.tensors[p + "ffn_down.weight"])
            if p + "post_ffw_norm.weight" in self.tensors:
                f = self._rms(f, self.tensors[p + "post_ffw_norm.weight"])
            x = x + f
        x = self._rms(x[-1:], self.tensors["output_norm.weight"])
        logits = (x @ self.output.T)[0]
        if hp.final_softcap:
            logits = hp.final_softcap * np.tanh(logits / hp.final_softcap)
        return logits.astype(np.float32)

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
