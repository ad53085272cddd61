"""Discovery under registry outages (issue 13.3): Redis restarting empty must not drop workers
that are connected and answering. Their streams go on, new requests are still routed to them;
only a worker whose connection fails (and is absent from the registry) is dropped."""
import json
import threading
import time

from conftest import MODEL, Worker, http_request, sse_events, wait_for

# Scan often, so the empty registry is seen before anything re-registers.
CONFIG = "discovery_interval_ms: 100\n"
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


def register(redis, w, ttl_ms=60000):
    """Registers a fake worker (it has no registry client of its own)."""
    key = f"sluice:worker:test:{w.address}"
    redis.command("SET", key, json.dumps({
        "instance_id": f"test:{w.address}", "model": MODEL, "address": w.address,
        "capacity": 64, "waiting": 0, "running": 0, "kv_free_ratio": 1.0, "draining": False,
        "protocol_version": 1}), "PX", ttl_ms)
    return key


def stream(g, results, max_tokens, prompt="Count slowly from one to one hundred."):
    # ignore_eos: a sampled early end of sequence would end a real worker's stream before the
    # three are in flight together (seen in CI: 4, 19 and 38 tokens, all done in 0.2 s).
    results.append(sse_events(g.base, "/v1/chat/completions",
                              json.dumps({"model": MODEL, "max_tokens": max_tokens, "stream": True,
                                          "ignore_eos": True,
                                          "messages": [{"role": "user", "content": prompt}]}),
                              HEADERS, timeout=120))


def lost(results):
    """Streams that did not end with [DONE] (worker_lost, or refused)."""
    return [r for r in results if r[0] != 200 or not r[1] or r[1][-1] != "[DONE]"]


def probe_until(g, stop, codes):
    """Sends short requests until stop is set; records their statuses."""
    while not stop.is_set():
        r = http_request(g.base, "POST", "/v1/chat/completions",
                         json.dumps({"model": MODEL, "max_tokens": 1,
                                     "messages": [{"role": "user", "content": "hi"}]}),
                         HEADERS, timeout=60)
        codes.append((r.status_code, r.text[:200]))
        time.sleep(0.05)


def test_registry_restart_keeps_connected_workers(redis, fake_worker_factory, gateway_factory):
    w = fake_worker_factory(token_delay_us=50000)  # 60 tokens: 3 s streams
    register(redis, w)
    g = gateway_factory(workers=(), redis=redis, config=CONFIG, extra=["--discovery"])
    g.wait_ready()
    results, codes, stop = [], [], threading.Event()
    streams = [threading.Thread(target=stream, args=(g, results, 60)) for _ in range(4)]
    probe = threading.Thread(target=probe_until, args=(g, stop, codes))
    for t in streams:
        t.start()
    try:
        wait_for(lambda: http_request(g.metrics_base, "GET", "/metrics").text.count("\n") > 0 and
                 _inflight(g) >= 4, what="4 streams running")
        probe.start()
        redis.restart_empty()  # the registry is empty now, and stays so for 1.5 s
        time.sleep(1.5)
        ready = http_request(g.base, "GET", "/ready").status_code
        models = http_request(g.base, "GET", "/v1/models", headers=HEADERS).json()["data"]
        register(redis, w)  # the worker announces itself again
        for t in streams:
            t.join(timeout=60)
    finally:
        stop.set()
        if probe.is_alive():
            probe.join(timeout=60)
    print(f"streams lost: {len(lost(results))}/4, probes: {len(codes)}, "
          f"503s: {sum(c == 503 for c, _ in codes)}")
    assert len(results) == 4 and lost(results) == [], lost(results)
    assert codes and all(c == 200 for c, _ in codes), [c for c in codes if c[0] != 200]
    assert ready == 200
    assert [m["id"] for m in models] == [MODEL]


def _inflight(g):
    from conftest import metric_sum
    return metric_sum(http_request(g.metrics_base, "GET", "/metrics").text, "sluice_gateway_inflight")


def test_unlisted_worker_dropped_when_its_connection_fails(redis, fake_worker_factory,
                                                            gateway_factory):
    w = fake_worker_factory()
    key = register(redis, w)
    g = gateway_factory(workers=(), redis=redis, config=CONFIG, extra=["--discovery"])
    g.wait_ready()
    redis.command("DEL", key)
    time.sleep(0.5)  # several scans without it: still routed to while it answers
    r = http_request(g.base, "POST", "/v1/completions",
                     json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": 1}), HEADERS)
    assert r.status_code == 200, r.text
    w.proc.stop()
    wait_for(lambda: http_request(g.base, "GET", "/ready").status_code == 503,
             what="worker dropped once its connection failed")
    assert "kept while connected" in g.proc.output()
    # The next scan drops it (its dialer closes: no reconnecting to an unlisted address).
    wait_for(lambda: "worker left the registry" in g.proc.output(), what="worker marked gone")


def test_real_worker_streams_survive_redis_restart(redis, procs, logdir, gateway_factory):
    """The bundled model, registering itself: Redis restarts empty under streaming load."""
    w = Worker(procs, logdir, registry=redis.url)
    try:
        g = gateway_factory(workers=(), redis=redis, config=CONFIG, extra=["--discovery"])
        g.wait_ready()
        results, codes, stop = [], [], threading.Event()
        streams = [threading.Thread(target=stream, args=(g, results, 160)) for _ in range(3)]
        probe = threading.Thread(target=probe_until, args=(g, stop, codes))
        for t in streams:
            t.start()
        try:
            wait_for(lambda: _inflight(g) >= 3, what="3 streams in flight")
            probe.start()
            redis.restart_empty()
            in_flight_at_restart = 3 - len(results)
            for t in streams:
                t.join(timeout=120)
        finally:
            stop.set()
            if probe.is_alive():
                probe.join(timeout=120)
        print(f"real worker: streams lost {len(lost(results))}/3 ({in_flight_at_restart} in "
              f"flight at the restart), probes {len(codes)}, "
              f"503s {sum(c == 503 for c, _ in codes)}")
        assert len(results) == 3 and lost(results) == [], lost(results)
        assert codes and all(c == 200 for c, _ in codes), [c for c in codes if c[0] != 200]
    finally:
        w.proc.stop()
