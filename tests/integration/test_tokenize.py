"""/tokenize and /detokenize through the gateway (vLLM's shapes) with the real worker and model:
text -> ids -> text round trips, counts equal to the prompt_tokens that chat and completion
requests report through the official client, auth, and precise errors."""
import json
import time

from conftest import MODEL, Gateway, http_request, metric_sum, wait_for

KEY = "sk-test"
HDRS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
MSGS = [{"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name three colours of the rainbow."}]


def post(g, path, body, headers=HDRS, timeout=60):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http_request(g.base, "POST", path, data, headers, timeout=timeout)


def ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def err(r, status, param=None, code=None):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    if param is not None:
        assert e["param"] == param, e
    if code is not None:
        assert e["code"] == code, e
    return e


def test_round_trip_and_counts(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    text = "Hello world! Tokenizers split text into pieces: ünïcödé, 日本語 and emoji 🚀."
    t = ok(post(g, "/tokenize", {"model": MODEL, "prompt": text}))
    assert t["count"] == len(t["tokens"]) > 5
    assert t["max_model_len"] >= 1024
    assert "token_strs" not in t
    # Served under /v1 as well, with the same answer.
    assert ok(post(g, "/v1/tokenize", {"model": MODEL, "prompt": text})) == t
    back = ok(post(g, "/detokenize", {"model": MODEL, "tokens": t["tokens"]}))
    assert back == {"prompt": text}
    assert ok(post(g, "/v1/detokenize", {"model": MODEL, "tokens": t["tokens"]})) == back

    # token_strs: one string per id; for ASCII text they join back into the text.
    ascii_text = "The quick brown fox jumps over the lazy dog."
    s = ok(post(g, "/tokenize", {"model": MODEL, "prompt": ascii_text,
                                 "return_token_strs": True}))
    assert len(s["token_strs"]) == s["count"]
    assert "".join(s["token_strs"]) == ascii_text

    c = g.client()
    # A completion prompt counts what /v1/completions reports as prompt_tokens...
    comp = c.completions.create(model=MODEL, prompt=ascii_text, max_tokens=1)
    assert s["count"] == comp.usage.prompt_tokens
    # ...and chat messages what /v1/chat/completions reports, tools included.
    chat = c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=1)
    m = ok(post(g, "/tokenize", {"model": MODEL, "messages": MSGS}))
    assert m["count"] == chat.usage.prompt_tokens, (m, chat.usage)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    chat_t = c.chat.completions.create(model=MODEL, messages=MSGS, tools=tools, max_tokens=1)
    mt = ok(post(g, "/tokenize", {"model": MODEL, "messages": MSGS, "tools": tools}))
    assert mt["count"] == chat_t.usage.prompt_tokens > m["count"]
    # Without the assistant turn's opener the prompt is shorter and a prefix of it.
    nogen = ok(post(g, "/tokenize", {"model": MODEL, "messages": MSGS,
                                     "add_generation_prompt": False}))
    assert nogen["count"] < m["count"]
    assert m["tokens"][:nogen["count"]] == nogen["tokens"]
    # The rendered template comes back through /detokenize with its markers.
    rendered = ok(post(g, "/detokenize", {"model": MODEL, "tokens": m["tokens"]}))["prompt"]
    assert MSGS[1]["content"] in rendered and "<|im_start|>" in rendered
    # add_special_tokens is accepted in both forms (this model adds no BOS: same ids).
    same = ok(post(g, "/tokenize", {"model": MODEL, "prompt": ascii_text,
                                    "add_special_tokens": False}))
    assert same["tokens"] == s["tokens"]

    # Both spellings are one route: one metrics label, the /v1 path.
    text_m = http_request(g.metrics_base, "GET", "/metrics").text
    assert metric_sum(text_m, "sluice_gateway_requests_total",
                      'route="/v1/tokenize"') >= 7, text_m
    assert metric_sum(text_m, "sluice_gateway_requests_total", 'route="/v1/detokenize"') >= 3
    assert 'route="/tokenize"' not in text_m


def test_auth_and_errors(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    body = {"model": MODEL, "prompt": "hi"}
    err(post(g, "/tokenize", body, headers={"Content-Type": "application/json"}), 401,
        code="missing_api_key")
    err(post(g, "/detokenize", {"model": MODEL, "tokens": [1]},
             headers={**HDRS, "Authorization": "Bearer sk-wrong"}), 401, code="invalid_api_key")
    err(http_request(g.base, "GET", "/tokenize", headers=HDRS), 405, code="method_not_allowed")

    err(post(g, "/tokenize", {"model": "no-such-model", "prompt": "hi"}), 404, "model",
        "model_not_found")
    err(post(g, "/tokenize", {"prompt": "hi"}), 400, "model")
    err(post(g, "/tokenize", {"model": MODEL}), 400, "messages")
    err(post(g, "/tokenize", {"model": MODEL, "prompt": "a", "messages": MSGS}), 400)
    err(post(g, "/tokenize", {"model": MODEL, "prompt": ["a"]}), 400, "prompt", "invalid_type")
    err(post(g, "/tokenize", {"model": MODEL, "prompt": "a", "tools": []}), 400, "tools")
    err(post(g, "/tokenize", {"model": MODEL, "prompt": "a", "return_token_strs": "yes"}), 400,
        "return_token_strs")
    err(post(g, "/tokenize", {"model": MODEL, "prompt": "a", "temperature": 1}), 400,
        "temperature", "unrecognized_parameter")
    err(post(g, "/tokenize", {"model": MODEL, "messages": [{"role": "wizard",
                                                            "content": "x"}]}), 400)
    # Invalid UTF-8 never reaches the worker: the body is not JSON.
    err(post(g, "/tokenize", b'{"model": "%s", "prompt": "caf\xe9"}' % MODEL.encode()), 400,
        code="invalid_json")
    # Too long: past the gateway's prompt bound, and past the model's context at the worker.
    err(post(g, "/tokenize", {"model": MODEL, "prompt": "x" * (300 * 1024)}), 400, "prompt",
        "prompt_too_long")
    long_text = "word " * 40000
    e = err(post(g, "/tokenize", {"model": MODEL, "prompt": long_text}), 400, "prompt",
            "context_length_exceeded")
    assert "maximum context length" in e["message"]

    # Detokenize: ids out of the vocabulary, negative, too many, empty, not a list.
    e = err(post(g, "/detokenize", {"model": MODEL, "tokens": [1, 2, 10_000_000]}), 400,
            "tokens")
    assert "tokens[2]" in e["message"] and "vocabulary" in e["message"]
    err(post(g, "/detokenize", {"model": MODEL, "tokens": [5, -1]}), 400, "tokens[1]")
    err(post(g, "/detokenize", {"model": MODEL, "tokens": [1] * 40000}), 400, "tokens",
        "too_many_tokens")
    err(post(g, "/detokenize", {"model": MODEL, "tokens": []}), 400, "tokens")
    err(post(g, "/detokenize", {"model": MODEL, "tokens": "1 2 3"}), 400, "tokens")
    # The gateway is still serving.
    assert ok(post(g, "/tokenize", body))["count"] >= 1


def test_rate_limited_as_requests(procs, logdir, worker, redis):
    g = Gateway(procs, logdir, workers=[worker], keys=(), redis=redis,
                config=f"tenants:\n  - name: tok\n    key_sha256: "
                       f"{__import__('hashlib').sha256(KEY.encode()).hexdigest()}\n"
                       f"    rpm: 2\n")
    g.wait_ready()
    body = {"model": MODEL, "prompt": "hi"}
    assert post(g, "/tokenize", body).status_code == 200
    assert post(g, "/detokenize", {"model": MODEL, "tokens": [1]}).status_code == 200
    r = post(g, "/tokenize", body)
    e = err(r, 429, code="rate_limit_exceeded")
    assert "requests" in e["message"]
    assert int(r.headers["retry-after"]) >= 1


def test_old_worker_gets_a_bounded_wait(procs, logdir, fake_worker_factory):
    """The fake worker predates Tokenize and drops it: the client gets 504 at the deadline."""
    w = fake_worker_factory()
    g = Gateway(procs, logdir, workers=[w], config="deadline_ms: 1500\n")
    g.wait_ready()
    t0 = time.monotonic()
    err(post(g, "/tokenize", {"model": MODEL, "prompt": "hi"}), 504, code="deadline_exceeded")
    assert time.monotonic() - t0 < 10
    # Chat still works on it.
    assert g.client().chat.completions.create(
        model=MODEL, messages=MSGS, max_tokens=2).choices[0].message.content is not None


def test_trace_reaches_the_worker(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = post(g, "/tokenize", {"model": MODEL, "prompt": "trace me"},
             headers={**HDRS, "traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    ok(r)
    assert r.headers["traceparent"].split("-")[1] == trace
    assert r.headers["x-request-id"]
    # Both sides log the request with the client's trace id.
    wait_for(lambda: f"trace_id={trace}" in worker.proc.output(), what="worker log line")
    line = [ln for ln in worker.proc.output().splitlines() if f"trace_id={trace}" in ln]
    assert line and "tokenize done" in line[-1], line
    assert f"trace_id={trace}" in g.proc.output()
