"""Every weight type's C dequantizer (worker/quant.c) against the `gguf` package's, bit for bit,
on fresh random blocks each run.

The blocks and the package's f32 results are written in the record format of
tests/unit/worker/data/gen_quant_vectors.py, and the C unit test binary worker_quant_test
reads them instead of its committed vectors (SLUICE_QUANT_VECTORS). Skips when that binary is
not built.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit" / "worker" / "data"))

import gen_quant_vectors  # noqa: E402


def quant_test_bin() -> Path:
    build = Path(os.environ.get("SLUICE_BUILD_DIR", ROOT / "build"))
    return build / "tests" / "worker_quant_test"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dequantize_matches_gguf(tmp_path, seed):
    exe = quant_test_bin()
    if not exe.exists():
        pytest.skip(f"{exe} not built")
    rng = np.random.default_rng([seed, int.from_bytes(os.urandom(4), "little")])
    path = tmp_path / "vectors.bin"
    path.write_bytes(gen_quant_vectors.random_records(rng))
    env = dict(os.environ, SLUICE_QUANT_VECTORS=str(path), SLUICE_SOURCE_DIR=str(ROOT))
    env.pop("SLUICE_TEST_MODEL", None)
    r = subprocess.run([str(exe)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "test_python_vectors" in r.stdout + r.stderr


def test_types_cover_the_traits_table():
    """The random records name every type the C table has (15), new ones included."""
    names = {t.name for t in gen_quant_vectors.TYPES}
    assert {"Q5_0", "Q5_1", "Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS"} <= names
    assert len(names) == 15
