"""The gateway's admin listener (--metrics-listen): /metrics names tenants and worker addresses,
so it is served there and never on the public port; the admin port serves nothing else."""
import subprocess

from conftest import (GATEWAY_BIN, MODEL, FakeWorker, Gateway, free_port, http_request,
                      metric_sum)


def test_metrics_only_on_the_admin_port(procs, logdir):
    w = FakeWorker(procs, logdir)
    g = Gateway(procs, logdir, workers=[w], keys=("sk-admin-test",))
    g.wait_ready()
    r = g.client(key="sk-admin-test").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.choices[0].message.content

    public = http_request(g.base, "GET", "/metrics")
    assert public.status_code == 404, public.text
    assert public.json()["error"]["code"] == "unknown_url"
    assert "sluice_gateway_" not in public.text
    # Not under another spelling either.
    for path in ("/metrics/", "//metrics", "/metrics?x=1"):
        assert "sluice_gateway_" not in http_request(g.base, "GET", path).text, path

    admin = http_request(g.metrics_base, "GET", "/metrics")
    assert admin.status_code == 200
    assert admin.headers["content-type"].startswith("text/plain")
    assert metric_sum(admin.text, "sluice_gateway_requests_total",
                      'route="/v1/chat/completions"') >= 1
    assert w.address in admin.text  # what must not leak on the public port

    # Probes work on both; the API is not served on the admin port.
    assert http_request(g.metrics_base, "GET", "/health").status_code == 200
    assert http_request(g.metrics_base, "GET", "/ready").status_code == 200
    api = http_request(g.metrics_base, "GET", "/v1/models",
                       headers={"Authorization": "Bearer sk-admin-test"})
    assert api.status_code == 404
    assert http_request(g.metrics_base, "POST", "/metrics", body=b"").status_code == 404


def test_no_metrics_anywhere_without_admin_listener(procs, logdir):
    w = FakeWorker(procs, logdir)
    g = Gateway(procs, logdir, workers=[w], admin=False)
    g.wait_ready()
    assert http_request(g.base, "GET", "/metrics").status_code == 404
    assert "/metrics on" not in g.proc.output()


def test_admin_address_must_differ_from_listen():
    addr = f"127.0.0.1:{free_port()}"
    p = subprocess.run([GATEWAY_BIN, "--listen", addr, "--metrics-listen", addr, "--no-auth",
                        "--worker", f"{MODEL}=tcp://127.0.0.1:1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "--metrics-listen must differ from --listen" in p.stderr


def test_admin_port_taken_is_an_error(procs, logdir):
    w = FakeWorker(procs, logdir)
    g = Gateway(procs, logdir, workers=[w])
    p = subprocess.run([GATEWAY_BIN, "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen",
                        f"127.0.0.1:{g.metrics_port}", "--no-auth", "--worker",
                        f"{MODEL}={w.address}"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert f"cannot listen on 127.0.0.1:{g.metrics_port}" in p.stderr
