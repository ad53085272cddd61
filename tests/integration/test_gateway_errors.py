"""Gateway behaviour that needs no model: every error status, its OpenAI JSON, x-request-id,
auth, routing to a fake worker, deadlines, /v1/models, /ready, /metrics."""
import json
import time

import openai
import pytest

from conftest import (MODEL, FakeWorker, Gateway, http_request, metric_sum, sse_events,
                      wait_for)


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
    (chat(tools=[{"type": "function"}]), "tools[0].function"),
    (chat(tool_choice="auto"), "tool_choice"),
    (chat(response_format={"type": "json_schema"}), "response_format.json_schema"),
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


def raw_post(g, head_extra, body_bytes, request_id=None):
    """Sends one HTTP/1.1 POST as raw bytes in one write (so the gateway has read all of it when
    it answers) and returns a Resp. head_extra: header lines (bytes, each ending CRLF)."""
    import socket
    from conftest import Resp
    host, port = g.base[len("http://"):].split(":")
    rid = b"x-request-id: %s\r\n" % request_id.encode() if request_id else b""
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n" +
                  rid + head_extra + b"\r\n" + body_bytes)
        f = s.makefile("rb")
        status = int(f.readline().split()[1])
        headers = []
        while True:
            line = f.readline().rstrip(b"\r\n")
            if not line:
                break
            k, v = line.decode().split(":", 1)
            headers.append((k, v.strip()))
        length = int(dict((k.lower(), v) for k, v in headers)["content-length"])
        return Resp(status, headers, f.read(length))


def chunked(body, size):
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def test_body_over_limit_always_gets_openai_413(fake_worker_factory, gateway_factory):
    # Every size past max_body_bytes, by Content-Length or chunked, whether the handler or h2o
    # itself (past 2 * max_body_bytes + 64 KiB) refuses it, gets the OpenAI JSON 413 with
    # x-request-id, never h2o's plain-text 413.
    w = fake_worker_factory()
    g = gateway_factory(workers=[w], config="limits:\n  max_body_bytes: 2000\n")
    g.wait_ready()
    h2o_limit = 2 * 2000 + 65536
    ok = json.dumps(chat()).encode()
    exact = ok[:-1] + b" " * (2000 - len(ok)) + b"}"
    assert len(exact) == 2000
    r = raw_post(g, b"Content-Length: 2000\r\n", exact)
    assert r.status_code == 200, r.text
    r = raw_post(g, b"Transfer-Encoding: chunked\r\n", chunked(exact, 500))
    assert r.status_code == 200, r.text

    def check(r, rid=None):
        err = check_error(r, 413, code="request_too_large")
        assert r.headers["content-type"] == "application/json"
        assert "2000" in err["message"]
        if rid:
            assert r.headers["x-request-id"] == rid
    # Read whole by h2o, refused by the handler.
    for n in (2001, 5000, h2o_limit):
        body = exact + b" " * (n - 2000)
        check(raw_post(g, b"Content-Length: %d\r\n" % n, body, request_id=f"big-{n}"),
              f"big-{n}")
        if n < h2o_limit:
            check(raw_post(g, b"Transfer-Encoding: chunked\r\n", chunked(body, 4000)))
    # Refused by h2o on the Content-Length alone (the body is never read, so none is sent),
    # and chunked once the decoded size reaches h2o's limit (sent up to exactly there).
    for n in (h2o_limit + 1, 10**9):
        check(raw_post(g, b"Content-Length: %d\r\n" % n, b"", request_id=f"huge-{n}"),
              f"huge-{n}")
    check(raw_post(g, b"Transfer-Encoding: chunked\r\n",
                   chunked(exact + b" " * (h2o_limit - 2000), 4000)[:-5], request_id="huge-c"),
          "huge-c")
    assert metric(g, "sluice_gateway_requests_total", 'status="413"') >= 8


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
    # 100 tokens take 10 s; the 2 s deadline leaves the first tokens ample time under load.
    status, events = sse_events(g.base, "/v1/chat/completions",
                                json.dumps(chat(max_tokens=100, stream=True)),
                                {"Authorization": "Bearer sk-test",
                                 "x-sluice-timeout-ms": "2000"})
    assert status == 200
    assert any('"delta"' in e for e in events)
    last = json.loads(events[-1])
    assert last["error"]["code"] == "deadline_exceeded"


def test_metrics_endpoint(gw):
    post(gw, "/v1/chat/completions", chat())
    body = http_request(gw.metrics_base, "GET", "/metrics").text
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
    wait_for(lambda: worker_up_count(g) == 2, what="both workers up")
    a.proc.kill()
    statuses = [post(g, "/v1/chat/completions", chat()).status_code for _ in range(10)]
    assert statuses == [200] * 10, statuses
    wait_for(lambda: worker_up_count(g) == 1, what="dead worker marked down")


def worker_up_count(g):
    return sum(float(l.split()[-1]) for l in http_request(g.metrics_base, "GET", "/metrics").text
               .splitlines() if l.startswith("sluice_gateway_worker_up{"))


def metric(g, name, having=""):
    return metric_sum(http_request(g.metrics_base, "GET", "/metrics").text, name, having)


def test_retry_on_other_worker_before_first_token(fake_worker_factory, gateway_factory):
    # Worker a takes one request at a time (slowly) and answers OVERLOADED to the others:
    # those are retried once on worker b, before any token, and succeed.
    import concurrent.futures
    a = fake_worker_factory(token_delay_us=300000, extra=["--max-running", "1"])
    b = fake_worker_factory()
    g = gateway_factory(workers=[a, b])
    g.wait_ready()
    wait_for(lambda: worker_up_count(g) == 2, what="both workers up")

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
    wait_for(lambda: metric(g, "sluice_gateway_inflight") == 1, what="stream in flight")
    g.proc.p.send_signal(signal.SIGTERM)
    t.join(timeout=60)
    status, events = result["r"]
    assert status == 200
    assert events[-1] == "[DONE]", events[-3:]
    g.proc.p.wait(timeout=60)
    assert "signal 15" in g.proc.output()


def test_inflight_bound_gives_503_at_once(fake_worker_factory, gateway_factory):
    import socket
    w = fake_worker_factory(token_delay_us=200000)  # 50 tokens: 10 s, far longer than the test
    g = gateway_factory(workers=[w], extra=["--max-inflight", "1", "--threads", "1"])
    g.wait_ready()
    body = json.dumps(chat(max_tokens=50)).encode()
    host, port = g.base[len("http://"):].split(":")
    blocker = socket.create_connection((host, int(port)), timeout=30)
    try:
        blocker.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        b"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body)
        wait_for(lambda: metric(g, "sluice_gateway_inflight") == 1, what="blocker in flight")
        t0 = time.monotonic()
        r = post(g, "/v1/chat/completions", chat())
        # Refused, not queued: a queued request would get 200 after the blocker (10 s).
        check_error(r, 503, code="overloaded")
        assert int(r.headers["retry-after"]) >= 1
        assert time.monotonic() - t0 < 5.0
    finally:
        blocker.close()  # the gateway cancels it (client gone)
    wait_for(lambda: metric(g, "sluice_gateway_inflight") == 0, what="blocker cancelled")


def test_full_worker_is_overloaded_not_no_capacity(fake_worker_factory, gateway_factory):
    """Issue 13.6: a worker whose queue is full answers Error{OVERLOADED}; with no other worker
    to retry on, the client gets 503 `overloaded` + Retry-After ("busy"), not `no_capacity`
    ("no worker"), which stays for a model nobody serves."""
    import threading
    w = fake_worker_factory(token_delay_us=200000, extra=["--max-running", "1"])
    g = gateway_factory(workers=[w], extra=["--threads", "1"])
    g.wait_ready()
    result = {}

    def blocker():
        result["r"] = sse_events(g.base, "/v1/chat/completions",
                                 json.dumps(chat(max_tokens=20, stream=True)),
                                 {"Authorization": "Bearer sk-test",
                                  "Content-Type": "application/json"}, timeout=60)
    t = threading.Thread(target=blocker)
    t.start()
    try:
        wait_for(lambda: metric(g, "sluice_gateway_inflight") == 1, what="blocker running")
        time.sleep(0.3)  # its Submit reached the worker (a token arrived)
        r = post(g, "/v1/chat/completions", chat())
        check_error(r, 503, code="overloaded")
        assert int(r.headers["retry-after"]) >= 1
        assert "busy" in r.json()["error"]["message"] or "full" in r.json()["error"]["message"]
    finally:
        t.join(timeout=60)
    assert result["r"][0] == 200 and result["r"][1][-1] == "[DONE]"


def raw_exchange(g, data):
    """Sends raw bytes; returns (status, headers dict lower-case, body bytes) of the answer,
    read until the gateway closes the connection."""
    import socket
    host, port = g.base[len("http://"):].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out += d
        except ConnectionResetError:
            pass
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, v in
                   (line.split(":", 1) for line in lines[1:] if ":" in line))
    return int(lines[0].split()[1]), headers, body


HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"


@pytest.mark.parametrize("name,data,status,text", [
    ("negative content-length", HEAD + b"Content-Length: -5\r\n\r\n", 400,
     "broken content-length header"),
    ("non-numeric content-length", HEAD + b"Content-Length: 12abc\r\n\r\n", 400,
     "broken content-length header"),
    ("unknown transfer-encoding", HEAD + b"Transfer-Encoding: gzip\r\n\r\n", 400,
     "unknown transfer-encoding"),
    ("broken chunked body", HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
     "broken chunked-encoding"),
    ("unknown expectation", HEAD + b"Expect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417,
     "unknown expectation"),
], ids=["negative-content-length", "non-numeric-content-length", "unknown-transfer-encoding",
        "broken-chunked-body", "unknown-expectation"])
def test_h2o_own_errors_are_openai_json(gw, name, data, status, text):
    got, headers, body = raw_exchange(gw, data)
    assert got == status, (name, body)
    assert headers["content-type"] == "application/json", (name, headers)
    assert headers.get("x-request-id")
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] == text
    assert err["type"] == "invalid_request_error"


def test_h2o_raw_400s_that_cannot_be_changed(gw):
    """h2o 2.2.5 writes these itself, straight to the socket (docs/gateway.md): an unparsable
    request line, and a request head above its compiled-in H2O_MAX_REQLEN (417,792 bytes).
    They stay a plain 400 and close the connection; never a 5xx, never a hang."""
    got, headers, _ = raw_exchange(gw, b"GARBAGE\r\n\r\n")
    assert got == 400
    got, headers, _ = raw_exchange(gw, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " +
                                   b"a" * 500000 + b"\r\n\r\n")
    assert got == 400
    assert http_request(gw.base, "GET", "/health").status_code == 200


def test_header_size_is_bounded_with_431(gw, gateway_factory, fake_worker_factory):
    # Default max_header_bytes: 32 KiB. A 64 KB header was accepted before.
    got, headers, body = raw_exchange(gw, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " +
                                      b"a" * 65536 + b"\r\n\r\n")
    assert got == 431, body
    assert headers["content-type"] == "application/json" and headers.get("x-request-id")
    err = json.loads(body)["error"]
    assert err["code"] == "request_header_fields_too_large"
    assert "32768" in err["message"]
    # Below the bound: served.
    r = http_request(gw.base, "GET", "/health", headers={"X-Big": "a" * 16000})
    assert r.status_code == 200
    # Configurable; on API routes too (before auth).
    w = fake_worker_factory()
    g = gateway_factory(workers=[w], config="max_header_bytes: 2048\n")
    g.wait_ready()
    r = post(g, "/v1/chat/completions", chat(), headers={"X-Big": "a" * 4000})
    check_error(r, 431, code="request_header_fields_too_large")
    assert post(g, "/v1/chat/completions", chat(), headers={"X-Small": "a" * 500}).status_code \
        == 200
    assert metric(g, "sluice_gateway_requests_total", 'status="431"') == 1
