"""Gateway behaviour that needs no model: every error status, its OpenAI JSON, x-request-id,
auth, routing to a fake worker, deadlines, /v1/models, /ready, /metrics."""
import json
import time

import openai
import pytest

from conftest import MODEL, FakeWorker, Gateway, http_request, sse_events, wait_for


def post(gw, path, body, key="sk-test", headers=None, raw=None):
    h = {"Authorization": f"Bearer {key}"} if key else {}
    h.update(headers or {})
    content = raw if raw is not None else json.dumps(body)
    h["Content-Type"] = "application/json"
    return http_request(gw.base, "POST", path, content, h)


def check_error(r, status, param=None, code=None):
    assert r.status_code == status, r.text
    assert r.headers.get("x-request-id"), "every response carries x-request-id"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.fixture(scope="module")
def gw(procs, logdir):
    w = FakeWorker(procs, logdir)
    g = Gateway(procs, logdir, workers=[w])
    g.wait_ready()
    yield g
    g.proc.stop()
    w.proc.stop()


def chat(**kw):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    body.update(kw)
    return body


def test_fake_roundtrip_with_openai_client(gw):
    c = gw.client()
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                  max_tokens=3)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == 3
    assert r.usage.total_tokens == r.usage.prompt_tokens + 3
    chunks = list(c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 3
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"


def test_request_id_echoed_and_generated(gw):
    r = post(gw, "/v1/chat/completions", chat(), headers={"x-request-id": "my-trace-123"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "my-trace-123"
    r2 = http_request(gw.base, "GET", "/health")
    assert r2.headers["x-request-id"].startswith("req-")


@pytest.mark.parametrize("body,param", [
    (chat(temperature=3), "temperature"),
    (chat(top_p=0), "top_p"),
    (chat(n=100), "n"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=10**9), "max_tokens"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat(presence_penalty=9), "presence_penalty"),
    (chat(messages=[]), "messages"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
     "messages[0].content[0]"),
    (chat(tools=[{"type": "function"}]), "tools"),
    (chat(tool_choice="auto"), "tool_choice"),
    (chat(response_format={"type": "json_schema"}), "response_format"),
    (chat(modalities=["audio"]), "modalities"),
    (chat(bogus_param=1), "bogus_param"),
    (chat(stream_options={"include_usage": True}), "stream_options"),
    (chat(top_logprobs=3), "top_logprobs"),
    (chat(logit_bias={"abc": 1}), "logit_bias"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_validation_names_param(gw, body, param):
    check_error(post(gw, "/v1/chat/completions", body), 400, param=param)


def test_completions_validation(gw):
    check_error(post(gw, "/v1/completions", {"model": MODEL}), 400, param="prompt")
    check_error(post(gw, "/v1/completions", {"model": MODEL, "prompt": "x", "echo": True}), 400,
                param="echo")
    check_error(post(gw, "/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}), 400,
                param="prompt")


def test_invalid_json(gw):
    err = check_error(post(gw, "/v1/chat/completions", None, raw="{not json"), 400,
                      code="invalid_json")
    assert "JSON" in err["message"]
    check_error(post(gw, "/v1/chat/completions", None, raw="[1,2]"), 400)


def test_body_too_large(gw):
    big = "x" * (1100 * 1024)
    check_error(post(gw, "/v1/chat/completions", chat(messages=[{"role": "user",
                                                                  "content": big}])), 413)


def test_prompt_too_long_and_too_many_messages(gw):
    check_error(post(gw, "/v1/chat/completions",
                     chat(messages=[{"role": "user", "content": "x" * 300000}])), 400,
                param="messages")
    msgs = [{"role": "user", "content": "x"}] * 300
    check_error(post(gw, "/v1/chat/completions", chat(messages=msgs)), 400, param="messages")


def test_auth(gw):
    check_error(post(gw, "/v1/chat/completions", chat(), key=None), 401, code="missing_api_key")
    check_error(post(gw, "/v1/chat/completions", chat(), key="sk-wrong"), 401,
                code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        gw.client(key="sk-nope").models.list()


def test_unknown_model_and_route(gw):
    err = check_error(post(gw, "/v1/chat/completions", chat(model="no-such-model")), 404,
                      param="model", code="model_not_found")
    assert "no-such-model" in err["message"]
    check_error(post(gw, "/v1/nothing", {}), 404)
    with pytest.raises(openai.NotFoundError):
        gw.client().chat.completions.create(model="nope", messages=[{"role": "user",
                                                                      "content": "x"}])


def test_models_lists_live_models(gw):
    models = gw.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert gw.client().models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        gw.client().models.retrieve("no-such-model")


def test_no_worker_gives_503(gateway_factory):
    # A worker that is configured but not running: the model is known, nobody serves it.
    class Dead:
        address = "tcp://127.0.0.1:1"
    g = gateway_factory(workers=[Dead()])
    r = post(g, "/v1/chat/completions", chat())
    check_error(r, 503)
    assert int(r.headers["retry-after"]) >= 1
    assert http_request(g.base, "GET", "/ready").status_code == 503
    assert http_request(g.base, "GET", "/health").status_code == 200


def test_deadline_gives_504(fake_worker_factory, gateway_factory):
    w = fake_worker_factory(token_delay_us=200000)  # 0.2 s per token
    g = gateway_factory(workers=[w])
    g.wait_ready()
    r = post(g, "/v1/chat/completions", chat(max_tokens=50),
             headers={"x-sluice-timeout-ms": "300"})
    check_error(r, 504, code="deadline_exceeded")


def test_stream_deadline_after_first_token_is_an_event(fake_worker_factory, gateway_factory):
    w = fake_worker_factory(token_delay_us=100000)
    g = gateway_factory(workers=[w])
    g.wait_ready()
    status, events = sse_events(g.base, "/v1/chat/completions",
                                json.dumps(chat(max_tokens=50, stream=True)),
                                {"Authorization": "Bearer sk-test",
                                 "x-sluice-timeout-ms": "450"})
    assert status == 200
    assert any('"delta"' in e for e in events)
    last = json.loads(events[-1])
    assert last["error"]["code"] == "deadline_exceeded"


def test_metrics_endpoint(gw):
    post(gw, "/v1/chat/completions", chat())
    body = http_request(gw.base, "GET", "/metrics").text
    assert 'sluice_gateway_requests_total{route="/v1/chat/completions",model="%s",status="200"}' \
        % MODEL in body
    assert "sluice_gateway_time_to_first_byte_seconds_bucket" in body
    assert "sluice_gateway_worker_up" in body


def test_n_choices_and_seed(gw):
    r = post(gw, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 2, "n": 3,
                                     "seed": 7})
    assert r.status_code == 200
    assert [c["index"] for c in r.json()["choices"]] == [0, 1, 2]
    assert r.json()["usage"]["completion_tokens"] == 6


def test_dead_worker_is_skipped(fake_worker_factory, gateway_factory):
    a = fake_worker_factory()
    b = fake_worker_factory()
    g = gateway_factory(workers=[a, b])
    g.wait_ready()
    wait_for(lambda: worker_up_count(g) == 2, 5, "both workers up")
    a.proc.kill()
    statuses = [post(g, "/v1/chat/completions", chat()).status_code for _ in range(10)]
    assert statuses == [200] * 10, statuses
    assert worker_up_count(g) == 1


def worker_up_count(g):
    return sum(float(l.split()[-1]) for l in http_request(g.base, "GET", "/metrics").text
               .splitlines() if l.startswith("sluice_gateway_worker_up{"))


def metric(g, name):
    return sum(float(l.split()[-1]) for l in http_request(g.base, "GET", "/metrics").text
               .splitlines() if l.startswith(name + " ") or l.startswith(name + "{"))


def test_retry_on_other_worker_before_first_token(fake_worker_factory, gateway_factory):
    # Worker a takes one request at a time (slowly) and answers OVERLOADED to the others:
    # those are retried once on worker b, before any token, and succeed.
    import concurrent.futures
    a = fake_worker_factory(token_delay_us=300000, extra=["--max-running", "1"])
    b = fake_worker_factory()
    g = gateway_factory(workers=[a, b])
    g.wait_ready()
    wait_for(lambda: worker_up_count(g) == 2, 5, "both workers up")

    def one(i):
        return post(g, "/v1/chat/completions",
                    chat(messages=[{"role": "user", "content": f"prompt {i}"}])).status_code
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        statuses = list(ex.map(one, range(12)))
    assert statuses == [200] * 12, statuses
    assert metric(g, "sluice_gateway_retries_total") >= 1


def test_sigterm_drains_in_flight_requests(fake_worker_factory, gateway_factory):
    import signal
    import threading
    w = fake_worker_factory(token_delay_us=100000)  # 10 tokens: ~1 s
    g = gateway_factory(workers=[w])
    g.wait_ready()
    result = {}

    def stream():
        result["r"] = sse_events(g.base, "/v1/chat/completions",
                                 json.dumps(chat(max_tokens=10, stream=True)),
                                 {"Authorization": "Bearer sk-test"})
    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.3)
    g.proc.p.send_signal(signal.SIGTERM)
    t.join(timeout=10)
    status, events = result["r"]
    assert status == 200
    assert events[-1] == "[DONE]", events[-3:]
    g.proc.p.wait(timeout=10)
    assert "signal 15" in g.proc.output()


def test_inflight_bound_gives_503_at_once(fake_worker_factory, gateway_factory):
    import threading
    w = fake_worker_factory(token_delay_us=200000)
    g = gateway_factory(workers=[w], extra=["--max-inflight", "1", "--threads", "1"])
    g.wait_ready()
    t = threading.Thread(target=post, args=(g, "/v1/chat/completions", chat(max_tokens=5)))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    r = post(g, "/v1/chat/completions", chat())
    assert time.monotonic() - t0 < 0.5
    check_error(r, 503, code="overloaded")
    assert int(r.headers["retry-after"]) >= 1
    t.join(timeout=10)
