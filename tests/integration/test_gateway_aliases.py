"""Model aliases (issue 14): a public name stands for served names with weights (a canary).

Two real workers serve the bundled model under two served names (the worker's --model-name),
both found through the Redis registry; the gateway's YAML maps `chat-default` to them 90/10.
The split is checked against a binomial bound (the gateway's smooth weighted round robin is
exact, the bound holds for any fair weighted picker), /v1/models lists the alias beside the
served names, responses carry the name asked for in `model` (as OpenAI and LiteLLM do) and the
served one in x-sluice-served-model, and adding or removing a target through the registry moves
the traffic without a failed request."""
import concurrent.futures
import json
import math
import subprocess

import openai

from conftest import GATEWAY_BIN, MODEL, Worker, free_port, http_request, metric_sum, wait_for

MAIN = "smollm2-135m"
CANARY = "smollm2-135m-canary"
ALIAS = "chat-default"
CONFIG = f"""discovery_interval_ms: 100
aliases:
  - name: {ALIAS}
    targets:
      - {{model: {MAIN}, weight: 90}}
      - {{model: {CANARY}, weight: 10}}
"""
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


def served_worker(procs, logdir, redis, name):
    return Worker(procs, logdir, registry=redis.url, extra=("--model-name", name))


def listed(g):
    r = http_request(g.base, "GET", "/v1/models", headers=HEADERS)
    assert r.status_code == 200
    return {m["id"] for m in r.json()["data"]}


def ask(client, model=ALIAS):
    """One cheap chat; returns (the response's model, the served name header)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    return raw.parse().model, raw.headers.get("x-sluice-served-model")


def ask_many(client, n, threads=4):
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return list(ex.map(lambda _: ask(client), range(n)))


def test_weighted_alias_over_discovered_workers(procs, logdir, redis, gateway_factory):
    main = served_worker(procs, logdir, redis, MAIN)
    g = gateway_factory(workers=(), redis=redis, config=CONFIG, extra=["--discovery"])
    g.wait_ready()
    client = g.client()
    wait_for(lambda: {MAIN, ALIAS} <= listed(g), what="the alias listed with its live target")
    assert CANARY not in listed(g)
    # Only one target live: every request falls back to it.
    got = ask_many(client, 20)
    assert got == [(ALIAS, MAIN)] * 20

    # The canary appears through the registry (discovery add).
    canary = served_worker(procs, logdir, redis, CANARY)
    wait_for(lambda: CANARY in listed(g), what="the canary target discovered")
    r = http_request(g.base, "GET", f"/v1/models/{ALIAS}", headers=HEADERS)
    assert r.status_code == 200 and r.json()["id"] == ALIAS
    assert r.json()["owned_by"] == "sluice"
    before = http_request(g.metrics_base, "GET", "/metrics").text
    n = 200
    got = ask_many(client, n)
    assert all(model == ALIAS for model, _ in got)  # the name the client asked for
    served = [s for _, s in got]
    assert set(served) <= {MAIN, CANARY}
    k = served.count(CANARY)
    # Binomial(200, 0.1): mean 20, sd 4.24; 4 sd either side.
    sd = math.sqrt(n * 0.1 * 0.9)
    assert abs(k - n * 0.1) <= 4 * sd, (k, served)
    # Metrics by public and served name agree with what the clients saw.
    after = http_request(g.metrics_base, "GET", "/metrics").text
    name = "sluice_gateway_routed_requests_total"

    def routed(text, target):
        return metric_sum(text, name, f'model="{ALIAS}",served_model="{target}",status="200"')
    assert routed(after, CANARY) - routed(before, CANARY) == k
    assert routed(after, MAIN) - routed(before, MAIN) == n - k
    # A served name is still reachable by itself, and streams carry the alias too.
    assert ask(client, CANARY) == (CANARY, CANARY)
    chunks = list(client.chat.completions.create(
        model=ALIAS, max_tokens=2, stream=True, messages=[{"role": "user", "content": "hi"}]))
    assert chunks and all(c.model == ALIAS for c in chunks)

    # The canary goes away (discovery remove): its share falls back to the main target with
    # no failed request, and /v1/models no longer lists it.
    canary.proc.stop()
    wait_for(lambda: CANARY not in listed(g), what="the canary target gone")
    got = ask_many(client, 20)
    assert got == [(ALIAS, MAIN)] * 20
    assert ALIAS in listed(g)

    # No target left: the alias stays known (503 no_capacity, not 404) and leaves the list.
    main.proc.stop()
    wait_for(lambda: ALIAS not in listed(g), what="the alias unlisted")
    try:
        client.chat.completions.create(model=ALIAS, max_tokens=1,
                                       messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a request with no live target succeeded")
    except openai.APIStatusError as e:
        assert e.status_code == 503, e
        assert e.body["code"] == "no_capacity", e.body


def test_alias_flag_for_static_workers(procs, logdir, fake_worker_factory, gateway_factory):
    w = fake_worker_factory()
    g = gateway_factory(workers=[w], extra=["--alias", f"public={MODEL}:1,missing:0"])
    g.wait_ready()
    wait_for(lambda: "public" in listed(g), what="the alias listed")
    model, served = ask(g.client(), "public")
    assert (model, served) == ("public", MODEL)
    r = http_request(g.base, "POST", "/v1/chat/completions",
                     json.dumps({"model": "public", "max_tokens": 1,
                                 "messages": [{"role": "user", "content": "hi"}]}), HEADERS)
    assert r.status_code == 200 and r.json()["model"] == "public"


def test_bad_aliases_refused(tmp_path):
    base = [GATEWAY_BIN, "--no-auth", "--worker", f"{MODEL}=tcp://127.0.0.1:1",
            "--listen", f"127.0.0.1:{free_port()}"]
    cases = [
        (["--alias", "a=m:1001"], "target 'm' has weight 1001 (must be 0..1000)"),
        (["--alias", "a=m:x"], "target 'm:x' must be MODEL or MODEL:WEIGHT"),
        (["--alias", "a=m:0"], "alias 'a': the weights sum to 0"),
        (["--alias", "a=m", "--alias", "a=n"], "alias 'a' is defined twice"),
        (["--alias", "a=" + ",".join(f"t{i}" for i in range(9))], "needs 1..8 targets"),
    ]
    for extra, needle in cases:
        p = subprocess.run(base + extra, capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and needle in p.stderr, (extra, p.stderr)
    cfg = tmp_path / "g.yaml"
    cfg.write_text("aliases:\n  - name: a\n    targets:\n      - {model: m, weight: 5000}\n")
    p = subprocess.run(base + ["--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0, p.stderr
    assert "g.yaml:4:" in p.stderr and "aliases.0.targets.0.weight" in p.stderr, p.stderr
