"""Scale from zero: models known with no live worker (config `models:`, --model, the registry's
recent past), cold_start_wait_ms, and sluice_gateway_pending_requests{model}. Fake workers
registered in Redis by the test (the fake worker has no registry client of its own)."""
import json
import threading
import time

import pytest

from conftest import MODEL, http_request, metric_sum, wait_for


def post(g, model=MODEL, max_tokens=2, headers=None):
    h = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    h.update(headers or {})
    return http_request(g.base, "POST", "/v1/chat/completions",
                        json.dumps({"model": model, "max_tokens": max_tokens,
                                    "messages": [{"role": "user", "content": "hi"}]}), h,
                        timeout=60)


def register(redis, w, model=MODEL, ttl_ms=60000):
    key = f"sluice:worker:test:{w.address}"
    redis.command("SET", key, json.dumps({
        "instance_id": f"test:{w.address}", "model": model, "address": w.address,
        "capacity": 8, "waiting": 0, "running": 0, "kv_free_ratio": 1.0, "draining": False,
        "protocol_version": 1}), "PX", ttl_ms)
    return key


def pending(g, model=MODEL):
    return metric_sum(http_request(g.metrics_base, "GET", "/metrics").text,
                      "sluice_gateway_pending_requests", f'model="{model}"')


def has_series(g, model):
    return f'sluice_gateway_pending_requests{{model="{model}"}}' in \
        http_request(g.metrics_base, "GET", "/metrics").text


def check_503(r):
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers.get("x-request-id")
    assert r.json()["error"]["code"] == "no_capacity"


def zero_gateway(gateway_factory, redis, wait_ms=0, config=None, models=(MODEL,)):
    extra = ["--discovery"]
    for m in models:
        extra += ["--model", m]
    if wait_ms:
        extra += ["--cold-start-wait-ms", str(wait_ms)]
    return gateway_factory(workers=(), redis=redis, config=config, extra=extra)


def test_known_model_without_worker_503_at_once_unknown_404(redis, gateway_factory):
    g = zero_gateway(gateway_factory, redis)
    assert has_series(g, MODEL)  # exported at 0 before any request: autoscalers read it
    assert pending(g) == 0
    t0 = time.monotonic()
    check_503(post(g))
    assert time.monotonic() - t0 < 5.0  # answered at once, not after some wait
    r = post(g, model="no-such-model")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "model_not_found"
    assert not has_series(g, "no-such-model")  # unknown names make no series
    # Without a cold-start wait, a gateway with no worker is not ready (nothing to serve).
    assert http_request(g.base, "GET", "/ready").status_code == 503


def test_models_key_in_config(redis, gateway_factory):
    g = zero_gateway(gateway_factory, redis, models=(),
                     config="models:\n  - %s\n  - other-model\n" % MODEL)
    assert has_series(g, MODEL) and has_series(g, "other-model")
    check_503(post(g, model="other-model"))
    assert post(g, model="nope").status_code == 404


def test_cold_start_waits_for_a_worker(redis, gateway_factory, fake_worker_factory):
    g = zero_gateway(gateway_factory, redis, wait_ms=30000)
    # With a cold-start wait the gateway takes traffic while no worker runs.
    g.wait_ready()
    result = {}

    def call():
        result["r"] = post(g, max_tokens=3)
    t = threading.Thread(target=call)
    t.start()
    try:
        # The request waits (counted as pending) instead of failing...
        wait_for(lambda: pending(g) == 1, what="request pending")
        assert t.is_alive()
        # ...until a worker appears in the registry: discovery picks it up, the request runs.
        w = fake_worker_factory()
        register(redis, w)
        t.join(timeout=60)
        assert not t.is_alive()
    finally:
        t.join(timeout=60)
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 3
    wait_for(lambda: pending(g) == 0, what="pending back to 0")


def test_cold_start_wait_is_bounded(redis, gateway_factory):
    g = zero_gateway(gateway_factory, redis, wait_ms=800)
    t0 = time.monotonic()
    r = post(g)
    elapsed = time.monotonic() - t0
    check_503(r)
    assert "in time" in r.json()["error"]["message"]
    assert elapsed >= 0.75, elapsed  # it did wait
    assert elapsed < 15, elapsed
    # The request deadline bounds the wait too (504 from the deadline, well before 800 ms
    # would matter here: the wait is 30 s in this gateway).
    g2 = zero_gateway(gateway_factory, redis, wait_ms=30000)
    t0 = time.monotonic()
    r = post(g2, headers={"x-sluice-timeout-ms": "500"})
    assert r.status_code == 504, r.text
    assert time.monotonic() - t0 < 15
    wait_for(lambda: pending(g2) == 0, what="pending back to 0")


def test_cold_waiters_count_against_inflight_cap_and_end_on_drain(redis, gateway_factory):
    g = gateway_factory(workers=(), redis=redis,
                        extra=["--discovery", "--model", MODEL, "--cold-start-wait-ms", "30000",
                               "--max-inflight", "1", "--threads", "1"])
    result = {}

    def first():
        try:
            result["r"] = post(g)
        except Exception as e:  # reported by the assertions below
            result["r"] = e
    t = threading.Thread(target=first)
    t.start()
    try:
        wait_for(lambda: pending(g) == 1, what="first request waiting")
        r = post(g)
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded", r.text
        # SIGTERM: the waiting request is answered at once (503, retry elsewhere), so the
        # drain does not wait for its 30 s.
        t0 = time.monotonic()
        g.proc.p.send_signal(15)
        t.join(timeout=60)
        assert time.monotonic() - t0 < 8
        check_503(result["r"])
    finally:
        t.join(timeout=60)


def test_registry_model_stays_known_after_its_worker_left(redis, gateway_factory,
                                                         fake_worker_factory):
    w = fake_worker_factory()
    key = register(redis, w, model="reg-model")
    g = gateway_factory(workers=(), redis=redis, extra=["--discovery"])
    g.wait_ready()
    assert post(g, model="reg-model").status_code == 200
    # Gone from the registry and disconnected (a connected worker absent from the registry
    # stays: test_gateway_discovery.py).
    redis.command("DEL", key)
    w.proc.stop()
    wait_for(lambda: http_request(g.base, "GET", "/ready").status_code == 503,
             what="worker dropped")
    # Seen recently: still known, so 503 (retry later), not 404.
    check_503(post(g, model="reg-model"))
    assert post(g, model="never-seen").status_code == 404


def test_pending_counts_requests_in_flight(redis, fake_worker_factory, gateway_factory):
    from conftest import sse_events
    w = fake_worker_factory(token_delay_us=100000)
    g = gateway_factory(workers=[w])
    g.wait_ready()
    done = {}

    def stream():
        done["r"] = sse_events(g.base, "/v1/chat/completions",
                               json.dumps({"model": MODEL, "max_tokens": 10, "stream": True,
                                           "messages": [{"role": "user", "content": "x"}]}),
                               {"Authorization": "Bearer sk-test"}, timeout=60)
    t = threading.Thread(target=stream)
    t.start()
    wait_for(lambda: pending(g) == 1, what="stream pending")
    t.join(timeout=60)
    assert done["r"][0] == 200 and done["r"][1][-1] == "[DONE]"
    wait_for(lambda: pending(g) == 0, what="pending back to 0")
