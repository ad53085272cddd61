#!/usr/bin/env python3
"""Inter-token latency of running streams while clients send prompts far over the context.

Issue 13, item 1: one long prompt used to freeze every stream on its worker. This starts a real
sluice-worker (bundled model, CPU) and sluice-gateway from a build directory, runs N streams
(completions, stream=True, EOS suppressed) and measures the gaps between their chunks in two
phases of --seconds each:

  quiet   the streams alone
  long    the same streams while --long-clients clients each send --long-chars-character chat
          prompts in a loop (each must be answered 400 context_length_exceeded)

It prints, per phase, the inter-token latency p50/p99/max over all streams, how many long
prompts were answered and their latency, and how often the worker's /health was not 200 (it
is polled every 200 ms). Exit 0 unless a process failed to start.

    .venv/bin/python tests/soak/long_prompt_itl.py --build build
    .venv/bin/python tests/soak/long_prompt_itl.py --build /tmp/build-before   # another tree

Not a test (no pass/fail on timings): the figures go into docs/benchmarks.md. The integration
test tests/integration/test_worker_isolation.py asserts the property on ratios.
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = "smollm2-135m-instruct"
NO_EOS = {"0": -100, "2": -100}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_status(url, want, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if http_status(url) == want:
            return True
        time.sleep(0.1)
    return False


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[k]


def long_text(chars):
    """Prose with punctuation and non-ASCII letters, `chars` characters."""
    # Prose without digits, as most long prompts are: the old SmolLM pre-tokenizer rescanned
    # ahead to the next digit at every piece, so a digit-free prompt was its quadratic case.
    base = ("The quarterly report lists many items, each with notes (see appendix B); the "
            "reviewers, a na\u00efve caf\u00e9 crowd, flagged several of them - mostly formatting. ")
    return (base * (chars // len(base) + 1))[:chars]


class Phase:
    def __init__(self):
        self.gaps = []
        self.lock = threading.Lock()
        self.long_latencies = []
        self.long_codes = {}
        self.health_bad = 0
        self.health_polls = 0


def stream_worker(client, phase, stop, idx):
    """One stream: restarts when it ends, records gaps between chunks until stop."""
    while not stop.is_set():
        s = client.completions.create(model=MODEL, prompt=f"Story {idx}: Once upon a time",
                                      max_tokens=4000, stream=True, logit_bias=NO_EOS,
                                      temperature=0.8)
        last = None
        for _ in s:
            now = time.monotonic()
            if last is not None:
                with phase.lock:
                    phase.gaps.append(now - last)
            last = now
            if stop.is_set():
                s.close()
                break


def long_worker(client, phase, stop, text):
    import openai
    while not stop.is_set():
        t0 = time.monotonic()
        code = "ok"
        try:
            client.chat.completions.create(model=MODEL, max_tokens=16,
                                           messages=[{"role": "user", "content": text}])
        except openai.BadRequestError as e:
            code = (e.body or {}).get("code") if isinstance(e.body, dict) else str(e)
        except Exception as e:  # a timeout or 5xx is a figure too
            code = type(e).__name__
        with phase.lock:
            phase.long_latencies.append(time.monotonic() - t0)
            phase.long_codes[code] = phase.long_codes.get(code, 0) + 1


def health_poller(url, phase, stop):
    while not stop.is_set():
        st = http_status(url, timeout=5.0)
        with phase.lock:
            phase.health_polls += 1
            phase.health_bad += st != 200
        time.sleep(0.2)


def run_phase(client_factory, health_url, streams, long_clients, text, seconds):
    phase = Phase()
    stop = threading.Event()
    threads = [threading.Thread(target=stream_worker, args=(client_factory(), phase, stop, i),
                                daemon=True) for i in range(streams)]
    threads.append(threading.Thread(target=health_poller, args=(health_url, phase, stop),
                                    daemon=True))
    for t in threads:
        t.start()
    time.sleep(2.0)  # the streams reach their steady state first
    with phase.lock:
        phase.gaps.clear()
    longs = [threading.Thread(target=long_worker, args=(client_factory(), phase, stop, text),
                              daemon=True) for _ in range(long_clients)]
    for t in longs:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads + longs:
        t.join(timeout=120)
    return phase


def report(name, ph):
    g = ph.gaps
    line = (f"{name:6s} gaps={len(g):5d} itl_p50_ms={percentile(g, 50) * 1e3:8.1f} "
            f"itl_p99_ms={percentile(g, 99) * 1e3:8.1f} itl_max_ms={max(g) * 1e3 if g else 0:8.1f}"
            f" health_not_200={ph.health_bad}/{ph.health_polls}")
    if ph.long_latencies:
        line += (f" long_prompts={len(ph.long_latencies)} codes={ph.long_codes} "
                 f"long_p50_ms={statistics.median(ph.long_latencies) * 1e3:.1f} "
                 f"long_max_ms={max(ph.long_latencies) * 1e3:.1f}")
    print(line, flush=True)
    return percentile(g, 99)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--model", default=os.path.join(REPO, "models",
                                                     "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--long-clients", type=int, default=3)
    ap.add_argument("--long-chars", type=int, default=250000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", default="2", help="worker --threads")
    args = ap.parse_args()

    import openai
    logdir = tempfile.mkdtemp(prefix="long-prompt-itl-")
    addr = f"tcp://127.0.0.1:{free_port()}"
    whttp = f"127.0.0.1:{free_port()}"
    gport = free_port()
    procs = []
    try:
        wlog = open(os.path.join(logdir, "worker.log"), "w")
        w = subprocess.Popen([os.path.join(args.build, "worker", "service", "sluice-worker"),
                              "--model", args.model, "--model-name", MODEL, "--listen", addr,
                              "--http", whttp, "--threads", args.threads],
                             stdout=wlog, stderr=subprocess.STDOUT)
        procs.append(w)
        if not wait_status(f"http://{whttp}/ready", 200, 180, w):
            print(f"worker did not become ready; log in {logdir}", file=sys.stderr)
            return 1
        glog = open(os.path.join(logdir, "gateway.log"), "w")
        g = subprocess.Popen([os.path.join(args.build, "gateway", "sluice-gateway"), "--listen",
                              f"127.0.0.1:{gport}", "--threads", "2", "--worker",
                              f"{MODEL}={addr}", "--api-key", "sk-bench"],
                             stdout=glog, stderr=subprocess.STDOUT)
        procs.append(g)
        if not wait_status(f"http://127.0.0.1:{gport}/ready", 200, 60, g):
            print(f"gateway did not become ready; log in {logdir}", file=sys.stderr)
            return 1

        def client():
            return openai.OpenAI(base_url=f"http://127.0.0.1:{gport}/v1", api_key="sk-bench",
                                 max_retries=0, timeout=300)

        text = long_text(args.long_chars)
        health = f"http://{whttp}/health"
        print(f"build={args.build} streams={args.streams} long_clients={args.long_clients} "
              f"long_chars={args.long_chars} seconds={args.seconds} cpus={os.cpu_count()}",
              flush=True)
        quiet = report("quiet", run_phase(client, health, args.streams, 0, text, args.seconds))
        loud = report("long", run_phase(client, health, args.streams, args.long_clients, text,
                                        args.seconds))
        print(f"itl_p99 long/quiet = {loud / quiet:.2f}", flush=True)
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=35)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
