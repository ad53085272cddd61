"""Fixtures for the gateway integration tests: real processes on free ports.

redis-server, sluice-worker (the bundled model on the CPU), sluice-fake-worker (protocol-speaking
fake, for tests about the gateway alone: errors, auth, rate limits) and sluice-gateway. Every
process is started with bounded waits and killed by its fixture's finalizer, also on failure.
The build directory comes from $SLUICE_BUILD_DIR (default: <repo>/build).
"""
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("SLUICE_BUILD_DIR", os.path.join(REPO, "build"))
MODEL_PATH = os.environ.get(
    "SLUICE_TEST_MODEL", os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
MODEL = "smollm2-135m-instruct"
GATEWAY_BIN = os.path.join(BUILD, "gateway", "sluice-gateway")
WORKER_BIN = os.path.join(BUILD, "worker", "service", "sluice-worker")
FAKE_BIN = os.path.join(BUILD, "loadtest", "sluice-fake-worker")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def metric_sum(text, name, having=""):
    """Sum of the Prometheus metric `name` over the series in text whose line contains
    `having` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and having in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def sha256_hex(key):
    return hashlib.sha256(key.encode()).hexdigest()


# Every wait below polls a condition with a generous bound: the 2-core CI machine can be
# loaded by parallel builds, so a wait ends as soon as its condition holds and only fails
# after WAIT_S (never sleep-and-hope).
WAIT_S = float(os.environ.get("SLUICE_IT_WAIT_S", "30"))


def http_get(url, timeout=5.0):
    """(status, body) of a GET; (0, '') when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (OSError, urllib.error.URLError):
        return 0, ""


def wait_for(cond, timeout=None, what="condition"):
    """Polls cond every 50 ms until it holds; TimeoutError after timeout s (default WAIT_S)."""
    timeout = WAIT_S if timeout is None else max(timeout, WAIT_S)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Proc:
    """A child process with a log file; stop() is idempotent (TERM, then KILL)."""

    def __init__(self, name, argv, logdir):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(logdir, f"{name}-{free_port()}.log")
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self.log.close()

    def kill(self):
        self.stop(signal.SIGKILL)

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture(scope="session")
def logdir():
    d = tempfile.mkdtemp(prefix="sluice-it-")
    yield d


@pytest.fixture(scope="session")
def procs():
    """Registry of every process started; all are stopped at the end of the session."""
    started = []
    yield started
    for p in reversed(started):
        p.stop()


def _need(path, what):
    if not os.path.exists(path):
        pytest.skip(f"{what} not built: {path} (build it first)")


class Redis:
    def __init__(self, procs, logdir):
        _need("/usr/bin/redis-server", "redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.procs = procs
        self.logdir = logdir
        self.proc = None
        self.start()

    def start(self):
        self.proc = Proc("redis", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no"], self.logdir)
        self.procs.append(self.proc)
        wait_for(self.ping, what="redis")

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args):
        """Runs one command with redis-cli; returns its stdout."""
        out = subprocess.run(["redis-cli", "-p", str(self.port)] + [str(a) for a in args],
                             capture_output=True, timeout=WAIT_S)
        return out.stdout.decode().strip()

    def stop(self):
        self.proc.stop()

    def pause(self):
        """Stalls Redis (SIGSTOP): connections stay open, nothing is answered."""
        self.proc.p.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.p.send_signal(signal.SIGCONT)

    def restart_empty(self):
        """Kills Redis and starts an empty one on the same port (a restart or failover)."""
        self.proc.p.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.start()


@pytest.fixture
def redis(procs, logdir):
    r = Redis(procs, logdir)
    yield r
    r.stop()


class FakeWorker:
    def __init__(self, procs, logdir, token_delay_us=0, extra=()):
        _need(FAKE_BIN, "sluice-fake-worker")
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.proc = Proc("fake-worker", [FAKE_BIN, "--listen", self.address, "--model", MODEL,
                                         "--token-delay-us", str(token_delay_us)] + list(extra),
                         logdir)
        procs.append(self.proc)
        port = int(self.address.rsplit(":", 1)[1])
        wait_for(lambda: not self.proc.alive() or port_open(port), what="fake worker listening")
        if not self.proc.alive():
            raise RuntimeError("fake worker exited:\n" + self.proc.output()[-2000:])


@pytest.fixture
def fake_worker_factory(procs, logdir):
    made = []

    def make(token_delay_us=0, extra=()):
        w = FakeWorker(procs, logdir, token_delay_us, extra)
        made.append(w)
        return w
    yield make
    for w in made:
        w.proc.stop()


class Worker:
    def __init__(self, procs, logdir, registry=None, extra=()):
        _need(WORKER_BIN, "sluice-worker")
        _need(MODEL_PATH, "the bundled model")
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        argv = [WORKER_BIN, "--model", MODEL_PATH, "--model-name", MODEL, "--listen",
                self.address, "--http", self.http, "--threads", "2"]
        if registry:
            argv += ["--registry", registry]
        argv += list(extra)
        self.proc = Proc("worker", argv, logdir)
        procs.append(self.proc)
        try:
            wait_for(lambda: not self.proc.alive() or
                     http_get(f"http://{self.http}/ready")[0] == 200, 120, "worker /ready")
        except TimeoutError:
            self.proc.stop()
            raise
        if not self.proc.alive():
            raise RuntimeError("worker exited:\n" + self.proc.output()[-3000:])

    def metric(self, name, having=""):
        """Sum of the worker's metric `name` over its series whose line contains `having`
        (0 when absent)."""
        return metric_sum(http_get(f"http://{self.http}/metrics")[1], name, having)


@pytest.fixture(scope="module")
def worker(procs, logdir):
    w = Worker(procs, logdir)
    yield w
    w.proc.stop()


@pytest.fixture
def own_worker(procs, logdir):
    """A worker for one test (tests that kill it)."""
    w = Worker(procs, logdir)
    yield w
    w.proc.stop()


class Gateway:
    def __init__(self, procs, logdir, workers=(), keys=("sk-test",), redis=None, config=None,
                 extra=(), admin=True):
        _need(GATEWAY_BIN, "sluice-gateway")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # /metrics is served only on the admin listener, never on the public port.
        self.metrics_port = free_port()
        self.metrics_base = f"http://127.0.0.1:{self.metrics_port}"
        argv = [GATEWAY_BIN, "--listen", f"127.0.0.1:{self.port}", "--threads", "2"]
        if admin:
            argv += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        for w in workers:
            argv += ["--worker", f"{MODEL}={w.address}"]
        for k in keys:
            argv += ["--api-key", k]
        if redis is not None:
            argv += ["--redis", redis.url]
        if config is not None:
            path = os.path.join(logdir, f"gateway-{self.port}.yaml")
            with open(path, "w") as f:
                f.write(config)
            argv += ["--config", path]
        argv += list(extra)
        self.proc = Proc("gateway", argv, logdir)
        procs.append(self.proc)
        wait_for(lambda: not self.proc.alive() or http_get(self.base + "/health")[0] == 200,
                 what="gateway /health")
        if not self.proc.alive():
            raise RuntimeError("gateway exited:\n" + self.proc.output()[-3000:])

    def wait_ready(self, timeout=None):
        try:
            wait_for(lambda: http_get(self.base + "/ready")[0] == 200, timeout, "gateway /ready")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; gateway log:\n{self.proc.output()[-2000:]}") from None

    def client(self, key="sk-test", **kw):
        import openai
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0,
                             timeout=kw.pop("timeout", 60), **kw)


@pytest.fixture
def gateway_factory(procs, logdir):
    made = []

    def make(**kw):
        g = Gateway(procs, logdir, **kw)
        made.append(g)
        return g
    yield make
    for g in made:
        g.proc.stop()


class Resp:
    """A complete HTTP response (status_code, headers with lower-case names, text, json())."""

    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = {k.lower(): v for k, v in headers}
        self.text = body.decode(errors="replace")

    def json(self):
        import json
        return json.loads(self.text)


def http_request(base, method, path, body=None, headers=None, timeout=30):
    """One request over http.client (no extra dependency); returns a Resp."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def sse_events(base, path, body, headers, timeout=30, stop_after=None):
    """POSTs and reads SSE `data:` lines; returns (status, [data strings]). stop_after=k closes
    the connection after k events (a client disconnect)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    events = []
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        if r.status != 200:
            return r.status, [r.read().decode()]
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if line.startswith("data: "):
                events.append(line[6:])
                if stop_after is not None and len(events) >= stop_after:
                    break
        return r.status, events
    finally:
        conn.close()
