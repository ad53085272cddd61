#!/usr/bin/env python3
"""Soak: N minutes of load on a real gateway + worker (bundled model), RSS every 30 s.

Not in CI (10 minutes by default). Starts redis-server, sluice-worker (--registry, the bundled
model on the CPU) and sluice-gateway (static --worker and --redis, so admission runs through
Redis) on free ports, then keeps them busy with:
  - sluice-load, closed loop at --concurrency streams (varied prompt and output lengths,
    prefix sharing), for the whole run;
  - a side thread that every 0.5 s does one of: a stream cut after 2 events (client
    disconnect -> Cancel on the worker), an invalid request (400), a non-streamed chat.
Every --interval s it prints the RSS (VmRSS) of gateway and worker and their growth since the
end of the warm-up.

Pass/fail, for each process, after --warmup s:
  - growth over the whole post-warm-up window <= --max-growth-mb (default 12 MB over 8 min);
  - growth over the LAST HALF of that window <= --max-late-growth-mb (default 2.5 MB, i.e.
    0.6 MB/min over 4 min).
Why two bounds: a flat worker still grows for minutes after start, decelerating, as requests
touch KV-cache pages and prefix-cache blocks for the first time (measured on the bundled model:
+1.0 MB and +3.6 MB over the 8 minutes after warm-up in two runs, then +0.1 and +0.5 MB in
their last 4 minutes; the total RSS ends at the same ~413-415 MB). A leak is linear instead:
the +1.4 MB/min once suspected would give +5.6 MB in the last 4 minutes, twice the late bound,
and +11 MB overall. The least-squares slope over the post-warm-up samples is printed too.

Usage: .venv/bin/python tests/soak/soak.py [--minutes 10] [--build-dir build]
Exit status: 0 pass, 1 growth over the bound or a process died, 2 setup failure.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("SLUICE_IT_WAIT_S", "120")

import conftest as it  # noqa: E402  (process helpers shared with the integration tests)


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slope_mb_per_min(samples):
    """Least-squares slope of (t_s, rss_kb) in MB/min; 0 with fewer than 2 samples."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return 0.0
    num = sum((t - mt) * (r - mr) for t, r in samples)
    return num / den * 60.0 / 1024.0


def side_traffic(base, stop, counts):
    """Disconnects, invalid requests and plain chats, one every 0.5 s."""
    h = {"Authorization": "Bearer sk-soak", "Content-Type": "application/json"}
    rng = random.Random(7)
    while not stop.is_set():
        kind = rng.choice(("cut", "bad", "chat"))
        try:
            if kind == "cut":
                body = json.dumps({"model": it.MODEL, "stream": True, "max_tokens": 64,
                                   "messages": [{"role": "user",
                                                 "content": f"Count to {rng.randint(5, 50)}."}]})
                it.sse_events(base, "/v1/chat/completions", body, h, timeout=60, stop_after=2)
            elif kind == "bad":
                it.http_request(base, "POST", "/v1/chat/completions",
                                json.dumps({"model": it.MODEL, "messages": "nope"}), h)
            else:
                it.http_request(base, "POST", "/v1/chat/completions",
                                json.dumps({"model": it.MODEL, "max_tokens": 8,
                                            "messages": [{"role": "user", "content": "hi"}]}),
                                h, timeout=60)
            counts[kind] = counts.get(kind, 0) + 1
        except OSError:
            counts["error"] = counts.get("error", 0) + 1
        stop.wait(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between RSS lines")
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds before the baseline")
    ap.add_argument("--max-growth-mb", type=float, default=12.0,
                    help="allowed RSS growth of each process after the warm-up")
    ap.add_argument("--max-late-growth-mb", type=float, default=2.5,
                    help="allowed RSS growth in the last half of the post-warm-up window")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--build-dir", default=os.environ.get("SLUICE_BUILD_DIR", it.BUILD))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    load_bin = os.path.join(build, "loadtest", "sluice-load")
    it.WORKER_BIN = os.path.join(build, "worker", "service", "sluice-worker")
    it.GATEWAY_BIN = os.path.join(build, "gateway", "sluice-gateway")
    for p in (load_bin, it.WORKER_BIN, it.GATEWAY_BIN, it.MODEL_PATH):
        if not os.path.exists(p):
            print(f"soak: missing {p} (build first)", file=sys.stderr)
            return 2
    duration = args.minutes * 60.0
    if duration <= args.warmup + args.interval:
        print("soak: the run must last longer than warm-up + one interval", file=sys.stderr)
        return 2

    logdir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sluice-soak-{os.getpid()}")
    os.makedirs(logdir, exist_ok=True)
    procs = []
    load = None
    stop = threading.Event()
    rc = 0
    try:
        redis = it.Redis(procs, logdir)
        worker = it.Worker(procs, logdir, registry=redis.url)
        gw = it.Gateway(procs, logdir, workers=(worker,), keys=("sk-soak",), redis=redis)
        gw.wait_ready()
        load = subprocess.Popen(
            [load_bin, "--url", gw.base, "--api-key", "sk-soak", "--model", it.MODEL,
             "--concurrency", str(args.concurrency), "--duration", str(int(duration) + 60),
             "--input-tokens", "16:400", "--output-tokens", "8:96", "--shared-prefix", "0.3",
             "--timeout", "120", "--quiet"],
            stdout=open(os.path.join(logdir, "load.log"), "wb"), stderr=subprocess.STDOUT)
        counts = {}
        side = threading.Thread(target=side_traffic, args=(gw.base, stop, counts), daemon=True)
        side.start()
        print(f"soak: {args.minutes:g} min, logs in {logdir}; worker pid {worker.proc.p.pid}, "
              f"gateway pid {gw.proc.p.pid}", flush=True)
        print(f"{'t_s':>6} {'worker_MB':>10} {'gateway_MB':>11} {'worker_growth':>14} "
              f"{'gateway_growth':>15}  side-requests", flush=True)
        t0 = time.monotonic()
        base = None
        post = {"worker": [], "gateway": []}
        next_t = 0.0
        while True:
            now = time.monotonic() - t0
            if now >= next_t:
                w, g = rss_kb(worker.proc.p.pid), rss_kb(gw.proc.p.pid)
                if w is None or g is None or not worker.proc.alive() or not gw.proc.alive():
                    print("soak: FAIL: a process died", flush=True)
                    rc = 1
                    break
                if base is None and now >= args.warmup:
                    base = (w, g)
                if base is not None:
                    post["worker"].append((now, w))
                    post["gateway"].append((now, g))
                gw_s = f"{(w - base[0]) / 1024:+14.1f} {(g - base[1]) / 1024:+15.1f}" \
                    if base else f"{'(warm-up)':>14} {'':>15}"
                print(f"{now:6.0f} {w / 1024:10.1f} {g / 1024:11.1f} {gw_s}  {dict(counts)}",
                      flush=True)
                next_t += args.interval
            if now >= duration:
                break
            time.sleep(0.5)
        if rc == 0:
            late_t = args.warmup + (duration - args.warmup) / 2
            for name, samples in post.items():
                growth = (samples[-1][1] - samples[0][1]) / 1024.0
                peak = (max(r for _, r in samples) - samples[0][1]) / 1024.0
                late = [r for t, r in samples if t >= late_t]
                late_growth = (late[-1] - late[0]) / 1024.0 if len(late) >= 2 else 0.0
                slope = slope_mb_per_min(samples)
                verdict = "ok" if (growth <= args.max_growth_mb and
                                   late_growth <= args.max_late_growth_mb) else "FAIL"
                print(f"soak: {name}: growth after warm-up {growth:+.1f} MB (peak {peak:+.1f}, "
                      f"bound {args.max_growth_mb:g}), in the last half {late_growth:+.1f} MB "
                      f"(bound {args.max_late_growth_mb:g}), slope {slope:+.2f} MB/min: "
                      f"{verdict}", flush=True)
                if verdict != "ok":
                    rc = 1
    except Exception as e:  # setup failures: say what, keep the logs
        print(f"soak: setup failed: {e}", file=sys.stderr)
        rc = 2
    finally:
        stop.set()
        if load is not None and load.poll() is None:
            load.terminate()
            try:
                load.wait(timeout=10)
            except subprocess.TimeoutExpired:
                load.kill()
        for p in reversed(procs):
            p.stop()
    if load is not None:
        with open(os.path.join(logdir, "load.log"), "rb") as f:
            tail = f.read().decode(errors="replace").strip().splitlines()[-12:]
        print("soak: sluice-load report (tail):\n  " + "\n  ".join(tail))
    return rc


if __name__ == "__main__":
    sys.exit(main())
