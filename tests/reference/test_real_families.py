"""Real small GGUF files of the families beyond llama (scripts/fetch-family-models) through the C
worker (sluice-generate): tokenization against llama.cpp's, logits and greedy text against the
numpy oracle on the same file.

Today one file: Gemma 3 270M (the base model) in Q4_K_M as a user downloads it (Q5_0 / Q4_K /
Q6_K / Q8_0 tensors, a 262,144-token SentencePiece vocabulary, q/k norms, post-norms, GELU,
sliding-window layers with their own RoPE base, 256-wide heads on a 640-wide model). Its
synthetic twin in test_families.py checks every feature alone; this checks that they add up on
the real weights and tokenizer. The oracle dequantizes the very same file with the `gguf`
package, so the differences are arithmetic: 8-bit activations, f16 KV, summation order and
what the CPU panels change in the weights (test_quant_variants.py's bounds).

Skips with the command to run when the file is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import ROOT, Generate, assert_greedy_near_oracle, checked_logits, generate_bin
from oracle import Oracle

REAL_DIR = Path(os.environ.get("SLUICE_REAL_MODELS_DIR", ROOT / ".cache" / "real"))
GEMMA3 = "gemma-3-270m-q4_k_m.gguf"

# Token ids llama.cpp (b11434's llama-server /tokenize, add_special) gives for these strings on
# this file: the chat turn markers as single tokens, spaces runs, digits one by one, accents,
# CJK, an emoji and a tab.
TOKENIZED = {
    "<start_of_turn>user\nWhat is the capital of France? Answer in one sentence.<end_of_turn>\n"
    "<start_of_turn>model\n":
        [2, 105, 2364, 107, 3689, 563, 506, 5279, 529, 7001, 236881, 25685, 528, 886, 13315,
         236761, 106, 107, 105, 4368, 107],
    "  Hello,   world! 12345 café naïve 日本語 🙂 tabs\there":
        [2, 138, 9259, 236764, 139, 12392, 236888, 236743, 236770, 236778, 236800, 236812,
         236810, 33443, 120362, 33375, 238582, 57235, 42364, 255968, 8472],
}
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    "]
COS_MIN = 0.996   # centered final-position logits against the oracle
REL_MAX = 0.06    # largest |C - oracle| over the oracle's range
FLIP_TOL = 0.75   # a greedy C token within this many logits of the oracle's argmax


def real(name: str) -> Path:
    p = REAL_DIR / name
    if not p.exists():
        pytest.skip(f"{p} absent: run scripts/fetch-family-models")
    return p


@pytest.fixture(scope="module")
def gemma3() -> tuple[Generate, Oracle]:
    b = generate_bin()
    if not b.exists():
        pytest.skip(f"{b} not built (set SLUICE_BUILD_DIR)")
    path = real(GEMMA3)
    return Generate(b, path), Oracle(str(path))


def test_gemma3_tokenizer_matches_llama_cpp(gemma3):
    gen, _ = gemma3
    for text, ids in TOKENIZED.items():
        assert gen.tokenize(text) == ids, text


def test_gemma3_logits_against_oracle(gemma3, tmp_path):
    gen, oracle = gemma3
    for prompt in PROMPTS:
        d, info = checked_logits(gen, oracle, prompt, tmp_path, COS_MIN, REL_MAX, repr(prompt[:16]))
        assert d.top5_shared() >= 3, info


def test_gemma3_greedy_text(gemma3):
    """Greedy text is the oracle's, up to near-ties, and reads as code where code was begun."""
    gen, oracle = gemma3
    for prompt, n in ((PROMPTS[0], 12), (PROMPTS[1], 24)):
        out = gen.greedy(prompt, n)
        print(f"greedy {prompt[:16]!r}: {out['text']!r}")
        assert out["token_ids"], out
        assert_greedy_near_oracle(oracle, gen.tokenize(prompt), out["token_ids"], FLIP_TOL,
                                  prompt[:16])
    # the base model continues a Python function header with its body
    code = gen.greedy(PROMPTS[1], 24)["text"]
    assert "return" in code and "if n" in code, code
