"""sluice-bench's `--only decode`: single-stream decode, its floor and ceilings, nothing after;
the last-level-cache note exactly when the weights fit in that cache; a bad value refused."""
import os
import re
import subprocess

from conftest import BUILD

BENCH = os.path.join(BUILD, "worker", "sluice-bench")
ARGS = ["--synthetic", "tiny", "--concurrency", "1", "--threads", "2", "--decode-tokens", "4"]


def llc_bytes():
    r = subprocess.run(["getconf", "LEVEL3_CACHE_SIZE"], capture_output=True, text=True)
    try:
        return int(r.stdout.strip())
    except ValueError:
        return 0


def test_only_decode_stops_after_decode():
    r = subprocess.run([BENCH, *ARGS, "--only", "decode"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^decode \(single stream, \d+ tokens\): [\d.]+ tokens/s", out, re.M), out
    assert re.search(r"^decode bandwidth floor: [\d.]+ tokens/s", out, re.M), out
    assert "decode compute ceiling" in out and "decode time by phase" in out, out
    # the prefill, sweep, prefix-cache and KV figures are not run
    for skipped in ("prefill (", "concurrency ", "shared prefix", "KV bytes per token",
                    "batching gain"):
        assert skipped not in out, (skipped, out)
    weights = float(re.search(r"weight bytes per token ([\d.]+) MB", out).group(1)) * 1e6
    llc = llc_bytes()
    has_note = "fit in the" in out and "last-level cache" in out
    assert has_note == (0 < weights <= llc), (weights, llc, out)


def test_only_takes_decode_alone():
    r = subprocess.run([BENCH, *ARGS, "--only", "prefill"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "bad value for --only: 'prefill'" in r.stderr, r.stderr
    assert r.stdout == ""
