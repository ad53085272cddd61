"""sluice-load against the real stack (Redis-free gateway + a real CPU worker on the bundled
model): the load generator's own tests use a stub server whose timings are known; this checks
that it drives and measures a real OpenAI-compatible endpoint end to end."""
import json
import os
import subprocess

import pytest

from conftest import BUILD, MODEL

LOAD = os.path.join(BUILD, "loadtest", "sluice-load")


@pytest.fixture(scope="module")
def gw(worker, procs, logdir):
    from conftest import Gateway
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    yield g
    g.proc.stop()


@pytest.mark.parametrize("stream", [True, False])
def test_sluice_load_measures_real_worker(gw, tmp_path, stream):
    out = tmp_path / "report.json"
    cmd = [LOAD, "--url", gw.base, "--api-key", "sk-test", "--model", MODEL,
           "--concurrency", "1,2", "--requests", "4", "--input-tokens", "16",
           "--output-tokens", "4", "--quiet", "--json", str(out)]
    if not stream:
        cmd.append("--no-stream")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert [run["concurrency"] for run in runs] == [1, 2]
    for run in runs:
        assert run["completed"] == 4 and run["failed"] == 0, run
        # the worker really generated: usage reported by the server, at most max_tokens each
        assert 4 <= run["output_tokens"] <= 16, run
        assert run["prompt_tokens"] > 0
        assert run["ttft_ms"]["p50"] > 0
        assert run["e2e_ms"]["p50"] >= run["ttft_ms"]["p50"]
