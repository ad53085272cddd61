"""Every model family beyond llama/mistral/qwen2 (qwen3, phi3, gemma2, gemma3, and the
mixture-of-experts files: Mixtral, qwen2moe, qwen3moe) on a synthetic
GGUF of its own (synth_families.py: the family's metadata, tensor names and shapes, random
float32 weights) through sluice-generate, against the numpy oracle on the same file.

Float32 weights take the CPU backend's f32 row path (no 8-bit activations), so what separates
the two sides is the f16 KV cache and summation order: the centered final-position logits must
agree to cosine >= COS_MIN and max |C - oracle| <= REL_MAX of the oracle's logit range, and a
greedy run must follow the oracle's argmax at every step (the oracle fed the C tokens), parting
only at a near-tie (top-2 margin < FLIP_TOL). The prompts are longer than the gemma files'
sliding windows (5 and 7 positions) and the greedy runs cross a 16-token KV block, so the
window masks, including a window starting inside a block, are exercised.
"""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest

from conftest import Generate, LogitDiff, checked_logits, generate_bin
from oracle import Oracle
import synth_families

COS_MIN = 0.9995
REL_MAX = 0.02
FLIP_TOL = 0.05
N_GREEDY = 24
PROMPTS = ["Once upon a time, in a small village, there lived an old baker who",
           "def fibonacci(n):\n    "]


@pytest.fixture(scope="module", params=sorted(synth_families.FAMILIES))
def family(request, tmp_path_factory):
    b = generate_bin()
    if not b.exists():
        pytest.skip(f"{b} not built (set SLUICE_BUILD_DIR)")
    path = tmp_path_factory.mktemp("fam") / f"{request.param}.gguf"
    synth_families.write(request.param, str(path))
    return request.param, Generate(b, path), Oracle(str(path))


@pytest.mark.parametrize("prompt", PROMPTS, ids=["story", "code"])
def test_family_logits(family, tmp_path, prompt):
    name, gen, oracle = family
    d, info = checked_logits(gen, oracle, prompt, tmp_path, COS_MIN, REL_MAX, name)
    assert d.r.max() - d.r[d.c_top] <= FLIP_TOL, info


@pytest.mark.parametrize("prompt", PROMPTS, ids=["story", "code"])
def test_family_greedy(family, prompt):
    name, gen, oracle = family
    ids = gen.tokenize(prompt)
    p = gen.run(prompt, "--greedy", "--ignore-eos", "--max-tokens", str(N_GREEDY), "--json")
    c_ids = json.loads(p.stdout)["token_ids"]
    assert len(c_ids) == N_GREEDY
    cache = oracle.new_cache()
    logits = oracle.forward(ids, cache, 0)
    pos = len(ids)
    report = []
    for step, tok in enumerate(c_ids):
        order = np.argsort(-logits)
        o_top = int(order[0])
        gap = float(logits[o_top] - logits[tok])
        report.append((step, tok, o_top, round(gap, 4)))
        assert gap <= FLIP_TOL, f"{name}: C token far from the oracle's argmax: {report}"
        logits = oracle.forward([tok], cache, pos)
        pos += 1
    distinct = len(set(c_ids))
    print(f"{name}: {N_GREEDY} greedy tokens follow the oracle ({distinct} distinct), "
          f"{len(ids)}-token prompt")


def _without(o: Oracle, hp_changes: dict | None = None, drop: tuple[str, ...] = ()) -> Oracle:
    """A copy of o with hyperparameters changed and tensors whose names contain drop removed."""
    m = copy.copy(o)
    m.hp = dataclasses.replace(o.hp, **(hp_changes or {}))
    m.tensors = {k: v for k, v in o.tensors.items() if not any(d in k for d in drop)}
    return m


# Each family feature, switched off in the oracle: the synthetic file must be one where that
# changes the logits past the tolerances above, or the tests would not notice it missing.
MUTATIONS = {
    "qwen3": {"q/k norm": dict(drop=("attn_q_norm", "attn_k_norm"))},
    "phi3": {"gate/up halves swapped": "swap"},
    "gemma2": {"sliding window": dict(hp_changes={"swa_window": 0}),
               "attention soft-cap": dict(hp_changes={"attn_softcap": 0.0}),
               "final soft-cap": dict(hp_changes={"final_softcap": 0.0}),
               "post-norms": dict(drop=("post_attention_norm", "post_ffw_norm"))},
    "gemma3": {"sliding window": dict(hp_changes={"swa_window": 0}),
               "local layers' own rope": dict(hp_changes={"rope_base_swa": 1000000.0}),
               "global rope scaling": "unscale",
               "q/k norm": dict(drop=("attn_q_norm", "attn_k_norm")),
               "gemma graph (scale, gelu)": dict(hp_changes={"gemma": False})},
    "mixtral": {"top-2 routing": dict(hp_changes={"n_expert_used": 1}),
                "renormalized weights": dict(hp_changes={"expert_norm": False})},
    "qwen2moe": {"shared expert": dict(drop=("shexp",)),
                 "unnormalized weights": dict(hp_changes={"expert_norm": True})},
    "qwen3moe": {"top-2 routing": dict(hp_changes={"n_expert_used": 3}),
                 "q/k norm": dict(drop=("attn_q_norm", "attn_k_norm"))},
}


def test_family_features_matter(family, tmp_path):
    name, gen, oracle = family
    prompt = PROMPTS[0]
    ids = gen.tokenize(prompt)
    c = gen.prompt_logits(prompt, tmp_path)
    for label, how in MUTATIONS[name].items():
        if how == "unscale":
            m = _without(oracle)
            m.inv_freq = oracle.inv_freq * 8.0
        elif how == "swap":
            m = _without(oracle)
            for l in range(m.hp.n_layer):
                p = f"blk.{l}."
                m.tensors[p + "ffn_gate.weight"], m.tensors[p + "ffn_up.weight"] = (
                    oracle.tensors[p + "ffn_up.weight"], oracle.tensors[p + "ffn_gate.weight"])
        else:
            m = _without(oracle, **how)
        if label == "local layers' own rope":
            m.inv_freq_swa = m.inv_freq
        d = LogitDiff(c, m.forward(ids))
        print(f"{name} without {label}: {d.info()}")
        assert d.cos < COS_MIN or d.maxabs > REL_MAX * d.range, (
            f"{name}: the file does not exercise {label}")


# Quantized matrices (the gguf package's Q8_0 and Q4_0; the router stays f32) take the 8-bit
# activation kernels, panels included (phi3's fused tensors as row views, the experts as
# per-expert panels): the noise is test_forward.py's kind at a smaller depth. Measured on
# 2026-12-03 (AVX-512 level): cos >= 0.99965, max |C - oracle| <= 1.6% of the logit range.
COS_MIN_Q = 0.999
REL_MAX_Q = 0.03
FLIP_TOL_Q = 0.3


@pytest.mark.parametrize("wtype", ["Q8_0", "Q4_0"])
@pytest.mark.parametrize("name", sorted(synth_families.FAMILIES))
def test_family_quantized_logits(name, wtype, tmp_path):
    b = generate_bin()
    if not b.exists():
        pytest.skip(f"{b} not built (set SLUICE_BUILD_DIR)")
    path = tmp_path / f"{name}.{wtype}.gguf"
    synth_families.write(name, str(path), wtype=wtype)
    gen, oracle = Generate(b, path), Oracle(str(path))
    prompt = PROMPTS[0]
    d, info = checked_logits(gen, oracle, prompt, tmp_path, COS_MIN_Q, REL_MAX_Q, f"{name} {wtype}")
    assert d.r.max() - d.r[d.c_top] <= FLIP_TOL_Q, info
