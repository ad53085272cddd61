"""Idle connection flood (issue 13, item 4): a worker's --max-connections slots filled by peers
that connect and never speak must not lock a gateway out, and the silent peers are closed at
--handshake-timeout-ms. Real worker (bundled model), real gateway, the official openai client;
the silent peers are raw TCP sockets, half of them stopped before the SP handshake and half
after it (what an nng pair1 socket that never sends looks like on the wire)."""
import select
import socket
import time

from conftest import MODEL, Worker, wait_for

SP_PAIR1 = bytes([0, ord("S"), ord("P"), 0, 0, 0x11, 0, 0])
MAX_CONNECTIONS = 256
BOUND_MS = 4000


def silent_peer(port, handshake):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if handshake:
        s.sendall(SP_PAIR1)
        got = b""
        while len(got) < 8:  # the worker's own handshake: the slot is taken now
            chunk = s.recv(8 - len(got))
            assert chunk, "worker closed a fresh connection"
            got += chunk
        assert got == SP_PAIR1
    s.setblocking(False)
    return s


def closed(s):
    """True once the worker closed s (what it sent before is drained)."""
    try:
        while select.select([s], [], [], 0)[0]:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        pass
    return False


def chat(gw):
    r = gw.client().chat.completions.create(
        model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Say hi."}])
    assert r.choices[0].message.content
    return r


def test_idle_connection_flood(procs, logdir, gateway_factory):
    w = Worker(procs, logdir, extra=["--max-connections", str(MAX_CONNECTIONS),
                                     "--handshake-timeout-ms", str(BOUND_MS)])
    try:
        port = int(w.address.rsplit(":", 1)[1])
        t_open = time.monotonic()
        peers = [silent_peer(port, handshake=i % 2 == 0) for i in range(MAX_CONNECTIONS)]
        opened_s = time.monotonic() - t_open
        # Every slot is held: the handshaken half shows in the gauge, the rest are accepted.
        wait_for(lambda: w.metric("sluice_worker_connections") == MAX_CONNECTIONS // 2,
                 what="silent peers holding the worker's slots")

        # A fresh gateway connects anyway (it evicts the oldest silent peer) and is served.
        gw = gateway_factory(workers=(w,))
        gw.wait_ready()
        chat(gw)
        early = sum(closed(p) for p in peers)
        t_chat = time.monotonic() - t_open

        # Every silent peer is closed by the bound (plus the sweep and a loaded machine).
        wait_for(lambda: all(closed(p) for p in peers), BOUND_MS / 1000 + 10,
                 "silent peers closed at --handshake-timeout-ms")
        t_all = time.monotonic() - t_open
        assert t_all >= BOUND_MS / 1000 * 0.9, "closed before the bound"
        # Before the bound only the peer(s) evicted for the gateway went (its dial may retry).
        if t_chat + opened_s < BOUND_MS / 1000 * 0.9:
            assert early <= 3, f"{early} silent peers closed before the bound"

        # The gateway, idle and well past the bound now, stays connected and served: a peer
        # that said Hello is never timed out for silence.
        time.sleep(BOUND_MS / 1000 * 0.5)
        assert w.metric("sluice_worker_connections") == 1
        chat(gw)
        assert "silent" in w.proc.output()  # the worker said what it closed, in one line
    finally:
        for p in locals().get("peers", []):
            p.close()
        w.proc.stop()
