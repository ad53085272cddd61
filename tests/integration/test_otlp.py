"""Span export: with --otlp-endpoint the gateway posts OTLP/HTTP JSON to a collector (a small
HTTP server here): the request's server span continues the client's trace (its parent is the
client's span, its id the one returned in traceparent), and the rate-limit check is its child.
A dead collector never fails or slows a request."""
import hashlib
import http.server
import json
import subprocess
import threading

from conftest import GATEWAY_BIN, MODEL, FakeWorker, Gateway, free_port, http_request, wait_for

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


class Collector:
    def __init__(self):
        self.bodies = []
        self.paths = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers["Content-Length"])
                outer.paths.append(self.path)
                outer.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        out = []
        for b in list(self.bodies):
            for rs in b["resourceSpans"]:
                svc = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        out.append(dict(s, service=svc["service.name"]["stringValue"]))
        return out

    def close(self):
        self.server.shutdown()


def attrs(span):
    return {a["key"]: list(a["value"].values())[0] for a in span["attributes"]}


def test_spans_exported(procs, logdir):
    col = Collector()
    w = FakeWorker(procs, logdir)
    key = "sk-otlp"
    try:
        g = Gateway(procs, logdir, workers=[w], keys=(key,),
                    extra=("--otlp-endpoint", f"http://127.0.0.1:{col.port}"))
        g.wait_ready()
        r = http_request(g.base, "POST", "/v1/chat/completions",
                         json.dumps({"model": MODEL, "max_tokens": 2,
                                     "messages": [{"role": "user", "content": "hi"}]}),
                         {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                          "traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert r.status_code == 200
        my_span = r.headers["traceparent"].split("-")[2]
        wait_for(lambda: any(s["traceId"] == TRACE for s in col.spans()),
                 what="the request's span at the collector")
        assert col.paths[0] == "/v1/traces"
        s = [s for s in col.spans() if s["traceId"] == TRACE][0]
        assert s["spanId"] == my_span
        assert s["parentSpanId"] == PARENT
        assert s["kind"] == 2 and s["name"] == "POST /v1/chat/completions"
        assert s["service"] == "sluice-gateway"
        assert int(s["endTimeUnixNano"]) > int(s["startTimeUnixNano"]) > 1.7e18
        a = attrs(s)
        assert a["http.response.status_code"] == "200" and a["sluice.model"] == MODEL
    finally:
        col.close()


def test_ratelimit_span_and_dead_collector(procs, logdir, redis):
    col = Collector()
    w = FakeWorker(procs, logdir)
    key = "sk-otlp-rl"
    cfg = ("tenants:\n  - name: acme\n    key_sha256: %s\n    rpm: 1000\n"
           % hashlib.sha256(key.encode()).hexdigest())
    g = Gateway(procs, logdir, workers=[w], keys=(), redis=redis, config=cfg,
                extra=("--otlp-endpoint", f"http://127.0.0.1:{col.port}/"))
    g.wait_ready()
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
         "traceparent": f"00-{TRACE}-{PARENT}-01"}
    body = json.dumps({"model": MODEL, "max_tokens": 2,
                       "messages": [{"role": "user", "content": "hi"}]})
    assert http_request(g.base, "POST", "/v1/chat/completions", body, h).status_code == 200
    wait_for(lambda: any(s["name"] == "ratelimit" for s in col.spans()),
             what="the ratelimit span")
    server = [s for s in col.spans() if s["kind"] == 2][0]
    rl = [s for s in col.spans() if s["name"] == "ratelimit"][0]
    assert rl["traceId"] == TRACE and rl["parentSpanId"] == server["spanId"]
    assert int(server["startTimeUnixNano"]) <= int(rl["endTimeUnixNano"]) <= \
        int(server["endTimeUnixNano"])
    col.close()

    # A collector that is gone: requests still succeed.
    dead = Gateway(procs, logdir, workers=[w], keys=("sk-test",),
                   extra=("--otlp-endpoint", f"http://127.0.0.1:{free_port()}"))
    dead.wait_ready()
    for _ in range(3):
        r = http_request(dead.base, "POST", "/v1/chat/completions", body,
                         {"Authorization": "Bearer sk-test", "Content-Type": "application/json"})
        assert r.status_code == 200
    wait_for(lambda: "otlp:" in dead.proc.output(), what="the exporter's warning")


def test_bad_endpoint_refused():
    for ep in ("https://x:4318", "http://", "http://h:99999", "collector:4318"):
        p = subprocess.run([GATEWAY_BIN, "--no-auth", "--worker", f"{MODEL}=tcp://127.0.0.1:1",
                            "--listen", f"127.0.0.1:{free_port()}", "--otlp-endpoint", ep],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "otlp endpoint" in p.stderr, (ep, p.stderr)


def test_route_and_worker_spans(procs, logdir, worker):
    """The routing span (worker choice) and the worker's queue, prefill and decode spans, built
    from the Finished.timing the real worker sends, are children of the server span, in order
    and inside it."""
    col = Collector()
    trace = "5bf92f3577b34da6a3ce929d0e0e4737"
    try:
        g = Gateway(procs, logdir, workers=[worker], keys=("sk-test",),
                    extra=("--otlp-endpoint", f"http://127.0.0.1:{col.port}"))
        g.wait_ready()
        r = http_request(g.base, "POST", "/v1/chat/completions",
                         json.dumps({"model": MODEL, "max_tokens": 8, "ignore_eos": True,
                                     "messages": [{"role": "user", "content": "Count to ten."}]}),
                         {"Authorization": "Bearer sk-test", "Content-Type": "application/json",
                          "traceparent": f"00-{trace}-{PARENT}-01"})
        assert r.status_code == 200, r.text
        names = ("route", "worker.queue", "worker.prefill", "worker.decode")

        def mine():
            return {s["name"]: s for s in col.spans() if s["traceId"] == trace}
        wait_for(lambda: set(names) | {"POST /v1/chat/completions"} <= set(mine()),
                 what="the route and worker spans")
        spans = mine()
        server = spans["POST /v1/chat/completions"]
        assert server["parentSpanId"] == PARENT
        ids = {server["spanId"]}
        t = [int(server["startTimeUnixNano"])]
        for n in names:
            s = spans[n]
            assert s["parentSpanId"] == server["spanId"], n
            assert s["kind"] == 1, n  # internal
            assert s["spanId"] not in ids, n
            ids.add(s["spanId"])
            a = attrs(s)
            assert a["sluice.served_model"] == MODEL, (n, a)
            assert a["sluice.worker.address"] == worker.address, (n, a)
            t += [int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])]
        t.append(int(server["endTimeUnixNano"]))
        # server start <= route <= queue <= prefill <= decode <= server end, each start <= end.
        assert t == sorted(t), t
        # Eight tokens were decoded and a prompt prefilled: neither span is empty.
        assert t[8] > t[7] and t[6] > t[5], t
    finally:
        col.close()
