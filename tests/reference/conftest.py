"""Shared fixtures for the reference tests: the bundled model, the numpy oracle, the
independent tokenizer and a runner for the C CLI (sluice-generate).

Environment:
  SLUICE_TEST_MODEL  GGUF to test (default: models/SmolLM2-135M-Instruct.Q4_1.gguf)
  SLUICE_BUILD_DIR   CMake build directory holding worker/sluice-generate (default: build/)
Tests that need the binary skip when it is not built (scripts/test always builds it).
"""
from __future__ import annotations

import os

# One BLAS thread: on a small shared machine OpenBLAS' spinning threads make the oracle's
# small matrix-vector products many times slower. Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from oracle import Oracle  # noqa: E402


def model_path() -> Path:
    return Path(os.environ.get("SLUICE_TEST_MODEL", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def generate_bin() -> Path:
    build = Path(os.environ.get("SLUICE_BUILD_DIR", ROOT / "build"))
    return build / "worker" / "sluice-generate"


class LogitDiff:
    """C logits against the oracle's for one prompt, both centered first (softmax is
    shift-invariant, and summation noise can shift every logit together)."""

    def __init__(self, c: np.ndarray, r: np.ndarray):
        assert c.shape == r.shape, (c.shape, r.shape)
        assert np.all(np.isfinite(c))
        self.c = c - c.mean()
        self.r = r - r.mean()
        self.cos = float(np.dot(self.c, self.r) / (np.linalg.norm(self.c) * np.linalg.norm(self.r)))
        self.range = float(self.r.max() - self.r.min())
        self.maxabs = float(np.abs(self.c - self.r).max())
        self.meanabs = float(np.abs(self.c - self.r).mean())
        self.c_top = int(np.argmax(self.c))
        self.r_top = int(np.argmax(self.r))

    def info(self) -> str:
        return (f"cos={self.cos:.7f} maxabs={self.maxabs:.4f} meanabs={self.meanabs:.4f} "
                f"range={self.range:.2f} c_top={self.c_top} o_top={self.r_top}")

    def top5_shared(self) -> int:
        """How many of the C top-5 tokens are in the oracle's top 5."""
        return len(set(np.argsort(-self.c)[:5].tolist()) & set(np.argsort(-self.r)[:5].tolist()))


def checked_logits(gen: "Generate", oracle: Oracle, prompt: str, tmp_path: Path, cos_min: float,
                   rel_max: float, label: str) -> tuple[LogitDiff, str]:
    """The C prompt logits against the oracle's on the same tokens: prints the comparison,
    asserts cosine >= cos_min and every |C - oracle| <= rel_max of the oracle's range, and
    returns the diff with its line for the caller's further checks."""
    ids = gen.tokenize(prompt)
    d = LogitDiff(gen.prompt_logits(prompt, tmp_path), oracle.forward(ids))
    info = f"{label} ({len(ids)} tokens): {d.info()}"
    print(info)
    assert d.cos >= cos_min, info
    assert d.maxabs <= rel_max * d.range, info
    return d, info


def assert_greedy_near_oracle(oracle: Oracle, prompt_ids: list[int], token_ids: list[int],
                              tol: float, label: str) -> None:
    """Each greedy C token is within tol logits of the oracle's argmax at its position, the
    oracle fed the C tokens (near-ties may flip either way)."""
    cache = oracle.new_cache()
    logits = oracle.forward(prompt_ids, cache, 0)
    pos = len(prompt_ids)
    for step, tok in enumerate(token_ids):
        gap = float(logits.max() - logits[tok])
        assert gap <= tol, f"{label} step {step}: token {tok} is {gap:.3f} below the argmax"
        logits = oracle.forward([tok], cache, pos)
        pos += 1


@pytest.fixture(scope="session")
def model() -> Path:
    p = model_path()
    if not p.exists():
        pytest.skip(f"model {p} not present")
    return p


@pytest.fixture(scope="session")
def oracle(model) -> Oracle:
    return Oracle(str(model))


@pytest.fixture(scope="session")
def ref_tok(model):
    pytest.importorskip("regex", reason="the reference tokenizer needs the regex package")
    import gguf
    from ref_tokenizer import RefBPE

    return RefBPE.from_gguf(gguf.GGUFReader(str(model)))


class Generate:
    """Runs sluice-generate; prompts are passed as bytes so invalid UTF-8 can be tested."""

    def __init__(self, binary: Path, model: Path):
        self.binary = binary
        self.model = model

    def run(self, prompt: bytes | str, *args: str, check: bool = True, timeout: int = 300):
        if isinstance(prompt, str):
            prompt = prompt.encode("utf-8")
        cmd = [os.fsencode(self.binary), b"--model", os.fsencode(self.model), b"--prompt", prompt]
        cmd += [a.encode() for a in args]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"sluice-generate failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
        return p

    def run_args(self, *args: str, timeout: int = 300):
        cmd = [os.fsencode(self.binary), b"--model", os.fsencode(self.model)]
        cmd += [a.encode() for a in args]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(f"sluice-generate failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
        return p

    def tokenize(self, prompt: bytes | str) -> list[int]:
        p = self.run(prompt, "--tokenize")
        return json.loads(p.stdout)["token_ids"]

    def greedy(self, prompt: str, n: int) -> dict:
        p = self.run(prompt, "--greedy", "--max-tokens", str(n), "--json")
        return json.loads(p.stdout)

    def prompt_logits(self, prompt: str, tmp_path: Path) -> np.ndarray:
        out = tmp_path / "logits.bin"
        self.run(prompt, "--greedy", "--max-tokens", "1", "--json", "--dump-logits", str(out))
        return np.fromfile(out, dtype="<f4")


@pytest.fixture(scope="session")
def gen(model) -> Generate:
    b = generate_bin()
    if not b.exists():
        pytest.skip(f"{b} not built (set SLUICE_BUILD_DIR)")
    return Generate(b, model)
