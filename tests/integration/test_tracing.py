"""W3C Trace Context through gateway and worker: a client's traceparent continues into the
gateway's and the worker's log lines for that request and comes back (with the gateway's span)
in the response's traceparent; without one (or with a malformed one) the gateway starts a
trace."""
import json
import re

from conftest import MODEL, Gateway, http_request, wait_for

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def chat_body(**kw):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4}
    body.update(kw)
    return json.dumps(body)


def headers(**extra):
    h = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    h.update(extra)
    return h


def log_lines_with(proc, needle):
    return [line for line in proc.output().splitlines() if needle in line]


def test_client_traceparent_reaches_worker_log(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    # Through the official client (extra headers), streamed.
    stream = g.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4,
        stream=True, extra_headers={"traceparent": f"00-{TRACE}-{PARENT}-01",
                                    "tracestate": "congo=t61rcWkgMzE"})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    # The worker logs the request at info level with the client's trace id.
    wait_for(lambda: log_lines_with(worker.proc, f"trace_id={TRACE}"),
             what="the worker's log line with the client's trace id")
    line = log_lines_with(worker.proc, f"trace_id={TRACE}")[-1]
    assert "level=info" in line and "request done" in line, line
    # So does the gateway's request line.
    wait_for(lambda: log_lines_with(g.proc, f"trace_id={TRACE}"),
             what="the gateway's log line with the client's trace id")
    assert 'msg=request ' in log_lines_with(g.proc, f"trace_id={TRACE}")[-1]

    # The response carries the trace with the gateway's own span as the parent.
    r = http_request(g.base, "POST", "/v1/chat/completions", chat_body(),
                     headers(traceparent=f"00-{TRACE}-{PARENT}-01"))
    assert r.status_code == 200
    m = TP_RE.match(r.headers["traceparent"])
    assert m and m.group(1) == TRACE and m.group(2) not in (PARENT, "0" * 16), r.headers
    assert m.group(3) == "01"


def test_trace_started_when_absent_or_invalid(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    seen = set()
    for tp in (None, "00-xyz", f"00-{'0' * 32}-{PARENT}-01", f"ff-{TRACE}-{PARENT}-01",
               f"00-{TRACE.upper()}-{PARENT}-01"):
        h = headers() if tp is None else headers(traceparent=tp, tracestate="a=b")
        r = http_request(g.base, "POST", "/v1/chat/completions", chat_body(), h)
        assert r.status_code == 200, (tp, r.text)
        m = TP_RE.match(r.headers["traceparent"])
        assert m, (tp, r.headers)
        assert m.group(1) not in (TRACE, TRACE.upper(), "0" * 32)
        seen.add(m.group(1))
        # The new trace id is what the worker logged for this request.
        wait_for(lambda: log_lines_with(worker.proc, f"trace_id={m.group(1)}"),
                 what=f"worker log line for the trace started for {tp!r}")
    assert len(seen) == 5  # a new trace each time


def test_refused_request_still_returns_and_logs_trace(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    r = http_request(g.base, "POST", "/v1/chat/completions", b"{not json",
                     headers(traceparent=f"00-{TRACE}-{PARENT}-00"))
    assert r.status_code == 400
    m = TP_RE.match(r.headers["traceparent"])
    assert m and m.group(1) == TRACE and m.group(3) == "00"
    wait_for(lambda: [l for l in log_lines_with(g.proc, f"trace_id={TRACE}")
                      if "request refused" in l], what="refusal logged with the trace id")


def test_streamed_response_header(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", chat_body(stream=True),
                 headers(traceparent=f"00-{TRACE}-{PARENT}-01"))
    resp = conn.getresponse()
    assert resp.status == 200
    assert TP_RE.match(resp.getheader("traceparent")).group(1) == TRACE
    resp.read()
    conn.close()


def test_refused_request_logs_trace_id_on_worker(procs, logdir, worker):
    """A request the worker refuses (here an unsupported JSON Schema keyword, found when it
    prepares the request) is logged there at info level with its trace id too."""
    trace = "6cf92f3577b34da6a3ce929d0e0e4738"
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    schema = {"type": "object", "patternProperties": {"^a": {"type": "string"}}}
    r = http_request(g.base, "POST", "/v1/chat/completions",
                     chat_body(response_format={"type": "json_schema", "json_schema": {
                         "name": "x", "schema": schema}}),
                     headers(traceparent=f"00-{trace}-{PARENT}-01"))
    assert r.status_code == 400, r.text
    wait_for(lambda: log_lines_with(worker.proc, f"trace_id={trace}"),
             what="the worker's refusal line with the trace id")
    line = log_lines_with(worker.proc, f"trace_id={trace}")[-1]
    assert "level=info" in line and "request refused" in line, line
