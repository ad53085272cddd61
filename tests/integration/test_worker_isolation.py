"""Long-prompt isolation (issue 13, item 1): prompts far over the context must not stall the
streams running on the same worker.

Before the preparation pool, the worker's engine thread templated and tokenized every prompt
itself, with a quadratic pre-tokenizer: a 250,000-character prompt froze every stream on the
worker for ~25 s before being refused, and a few at once made /health answer 503 "engine
stalled". Here a real worker (bundled model, CPU) and gateway serve one stream while four
clients send two 250,000-character chat prompts each, through the official openai client.

Timing is asserted only as ratios within the run (the machine is shared and noisy):
  - every long prompt is answered 400 context_length_exceeded within 100 median token gaps of
    the stream (~2 s here; on the old code 9-25 s, over 500 gaps; with the fix typically
    50 ms, 0.5 s at worst under load);
  - the stream keeps at least a third of its token rate while the long prompts arrive (old
    code: ~0, it is frozen);
  - its worst gap stays under 30x its median gap: a generous bound, since on the 2-vCPU
    development machine, shared by other jobs, quiet phases alone showed worst gaps of 11x
    and bursts up to 17x (the old code: over 500x);
  - the worker's /health answers 200 all along (polled every 100 ms).
"""
import statistics
import threading
import time

import openai
import pytest

from conftest import MODEL, http_get

NO_EOS = {"0": -100, "2": -100}
LONG_CHARS = 250_000
LONG_CLIENTS = 4
LONG_PER_CLIENT = 2


def long_text():
    # Prose without digits, as most long prompts are: the old SmolLM pre-tokenizer rescanned
    # ahead to the next digit at every piece, so a digit-free prompt was its quadratic case.
    base = ("The quarterly report lists many items, each with notes (see appendix B); the "
            "reviewers, a na\u00efve caf\u00e9 crowd, flagged several of them - mostly formatting. ")
    return (base * (LONG_CHARS // len(base) + 1))[:LONG_CHARS]


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


@pytest.fixture
def gw(worker, gateway_factory):
    g = gateway_factory(workers=[worker])
    g.wait_ready()
    return g


def test_long_prompts_do_not_stall_streams(worker, gw):
    arrivals = []
    stop = threading.Event()
    stream_error = []

    def stream():
        try:
            s = gw.client().completions.create(model=MODEL, prompt="Once upon a time",
                                               max_tokens=1500, stream=True, logit_bias=NO_EOS,
                                               temperature=0.8)
            for _ in s:
                arrivals.append(time.monotonic())
                if stop.is_set():
                    s.close()
                    return
        except Exception as e:  # reported by the assertions below
            stream_error.append(e)

    st = threading.Thread(target=stream, daemon=True)
    st.start()
    # A steady state first: the median gap is measured on the stream alone.
    wait_until(lambda: len(arrivals) >= 40 or stream_error, 120, "40 tokens of the stream")
    assert not stream_error, stream_error
    quiet = [b - a for a, b in zip(arrivals, arrivals[1:])]
    quiet_rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])

    health = []
    burst_done = threading.Event()

    def poll_health():
        while not burst_done.is_set():
            health.append(http_get(f"http://{worker.http}/health", timeout=10)[0])
            time.sleep(0.1)

    results = []
    lock = threading.Lock()
    text = long_text()

    def send_long():
        c = gw.client(timeout=60)
        for _ in range(LONG_PER_CLIENT):
            t0 = time.monotonic()
            try:
                c.chat.completions.create(model=MODEL, max_tokens=16,
                                          messages=[{"role": "user", "content": text}])
                outcome = (200, None, "")
            except openai.APIStatusError as e:
                outcome = (e.status_code, e.code, str(e))
            except openai.APIError as e:  # a timeout: the old worker's freeze
                outcome = (0, type(e).__name__, str(e))
            with lock:
                results.append((time.monotonic() - t0,) + outcome)

    hp = threading.Thread(target=poll_health, daemon=True)
    hp.start()
    t_start = time.monotonic()
    n_before = len(arrivals)
    senders = [threading.Thread(target=send_long, daemon=True) for _ in range(LONG_CLIENTS)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(timeout=150)
    t_end = time.monotonic()
    n_during = len(arrivals) - n_before
    burst_done.set()
    hp.join(timeout=15)
    # A few more tokens, so a gap that spans the end of the burst is seen whole.
    n_after = len(arrivals)
    wait_until(lambda: len(arrivals) >= n_after + 5 or not st.is_alive(), 60, "tokens after")
    stop.set()
    st.join(timeout=30)
    assert not stream_error, stream_error

    median_gap = statistics.median(quiet)
    assert len(results) == LONG_CLIENTS * LONG_PER_CLIENT
    for latency, status, code, msg in results:
        assert status == 400 and code == "context_length_exceeded", (status, code, msg)
        assert "maximum context length" in msg
        assert latency < 100 * median_gap, (latency, median_gap)

    gaps = [b - a for a, b in zip(arrivals, arrivals[1:]) if b >= t_start and a <= t_end]
    burst_s = t_end - t_start
    rate = n_during / burst_s
    print(f"median gap {median_gap * 1e3:.1f} ms, worst gap in burst "
          f"{max(gaps) * 1e3:.1f} ms, rate {rate:.1f}/s vs {quiet_rate:.1f}/s quiet, "
          f"long prompts answered in {max(r[0] for r in results) * 1e3:.0f} ms at most, "
          f"burst {burst_s:.2f} s, health {sorted(set(health))}")
    assert max(gaps) < 30 * median_gap, (max(gaps), median_gap)
    # Only meaningful when the burst lasts several gaps; on the fixed code it may be short.
    if burst_s > 20 * median_gap:
        assert rate > quiet_rate / 3, (rate, quiet_rate)
    assert health and all(h == 200 for h in health), health
