"""Re-quantized variants of the bundled model (scripts/make-quant-variants) through the C worker
(sluice-generate) against the numpy oracle on the same file.

Each variant is the bundled SmolLM2-135M re-quantized by llama.cpp's llama-quantize: mixed
K-quant files as users download them (Q4_K_M puts Q5_0 and Q8_0 into the tensors whose rows
are not a multiple of 256), single types and the IQ4 grids. The oracle dequantizes the very
same file with the `gguf` package, so as in test_forward.py the differences are arithmetic:
8-bit activations, f16 KV, summation order, plus what the CPU panels change in the weights
(worker/backend/cpu/cpu_panel.h): nothing for Q4_0/Q8_0/Q5_0/IQ4_NL/Q3_K, f16-rounded
sub-block scales for Q4_K/IQ4_XS, 8-bit requantization for Q5_K/Q6_K/Q5_1/Q2_K. The last one
adds noise of the order of the activations' own; the bound (COS_MIN below) is a little looser
than test_forward.py's 0.998 for every quantized file, because lower-bit files alone move
the 8-bit activations' noise past it (Q4_0, whose panels keep every value, measured 0.9978).

Skips with the command to run when a variant is absent (the files are ~100-540 MB each and
llama-quantize takes ~6 min to build, so CI does not make them; the C unit tests cover every
type with synthetic tensors).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import ROOT, Generate, assert_greedy_near_oracle, checked_logits, generate_bin
from oracle import Oracle

VARIANTS_DIR = Path(os.environ.get("SLUICE_VARIANTS_DIR", ROOT / ".cache" / "variants"))
BASE = "SmolLM2-135M-Instruct"

# type -> minimum cosine of the centered final-position logits against the oracle. Measured
# on 2026-12-02 (AVX-512 level): 0.9974 (Q2_K_FFN) .. 0.9994 (IQ4_NL), the 8-bit activations
# dominating (Q4_0's exact panels: 0.9978); F32 weights take the f32 row path: 1.000000.
COS_MIN = {t: 0.996 for t in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "Q2_K_FFN",
                              "Q5_0", "Q5_1", "Q4_0", "IQ4_NL", "IQ4_XS")}
COS_MIN["F32"] = 0.9999
# largest |C - oracle| of the centered logits over the oracle's range: measured <= 3.5%
REL_MAX = 0.06
# Greedy text: every C token within FLIP_TOL logits of the oracle's argmax at its position,
# the oracle fed the C tokens (test_forward.py's rule; near-ties may flip either way).
FLIP_TOL = 0.75
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    "]


def variant(qtype: str) -> Path:
    p = VARIANTS_DIR / f"{BASE}.{qtype}.gguf"
    if not p.exists():
        pytest.skip(f"variant {p.name} absent: run scripts/make-quant-variants {qtype}")
    return p


@pytest.fixture(scope="module")
def gen_bin() -> Path:
    b = generate_bin()
    if not b.exists():
        pytest.skip(f"{b} not built (set SLUICE_BUILD_DIR)")
    return b


@pytest.mark.parametrize("qtype", list(COS_MIN))
def test_variant_logits_and_text(gen_bin, tmp_path, qtype):
    path = variant(qtype)
    gen = Generate(gen_bin, path)
    oracle = Oracle(str(path))
    for prompt in PROMPTS:
        d, info = checked_logits(gen, oracle, prompt, tmp_path, COS_MIN[qtype], REL_MAX,
                                 f"{qtype} {prompt[:16]!r}")
        assert d.top5_shared() >= 3, info
    out = gen.greedy(PROMPTS[0], 12)
    print(f"{qtype} greedy: {out['text']!r}")
    assert out["token_ids"], out
    assert_greedy_near_oracle(oracle, gen.tokenize(PROMPTS[0]), out["token_ids"], FLIP_TOL, qtype)
