#!/usr/bin/env python3
"""Measures what silent and half-sent connections cost a real worker (issue 13, item 4).

  slots:  opens --max-connections silent peers (half stop before the SP handshake, half after
          it), then tries one more peer that does the handshake and sends a message (what a
          gateway does): was it served? How many silent peers are still open after --wait s?
  memory: --frames peers each announce a 4 MiB frame and send all of it but the last KiB;
          prints the worker's RSS before and with them held, and how many were refused.

Usage: .venv/bin/python tests/soak/conn_flood.py [--worker build/worker/service/sluice-worker]
Works against any worker binary (only long-standing flags are passed), so the same run can
be made on a build before and after a change. Prints figures; exits 0 (not a test).
"""
import argparse
import os
import select
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import conftest as it  # noqa: E402

SP_PAIR1 = bytes([0, ord("S"), ord("P"), 0, 0, 0x11, 0, 0])


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def peer(port, handshake):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if handshake:
        s.sendall(SP_PAIR1)
    return s


def is_closed(s, wait_s=0.0):
    s.setblocking(False)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            r = select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]
            if r:
                if not s.recv(65536):
                    return True
                continue
        except (ConnectionResetError, BrokenPipeError):
            return True
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            return False


def frame(payload):
    return struct.pack(">Q", len(payload) + 4) + b"\0\0\0\1" + payload


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", default=it.WORKER_BIN)
    ap.add_argument("--max-connections", type=int, default=256)
    ap.add_argument("--wait", type=float, default=15.0, help="s to wait for silent peers")
    ap.add_argument("--frames", type=int, default=20)
    args = ap.parse_args()
    it.WORKER_BIN = os.path.abspath(args.worker)
    logdir = f"/tmp/sluice-conn-flood-{os.getpid()}"
    os.makedirs(logdir, exist_ok=True)
    procs = []
    try:
        w = it.Worker(procs, logdir, extra=["--max-connections", str(args.max_connections)])
        port = int(w.address.rsplit(":", 1)[1])
        pid = w.proc.p.pid
        silent = [peer(port, i % 2 == 0) for i in range(args.max_connections)]
        time.sleep(1.0)
        gw = peer(port, True)
        got = b""
        gw.settimeout(5)
        try:
            while len(got) < 8:
                c = gw.recv(8 - len(got))
                if not c:
                    break
                got += c
            gw.sendall(frame(b"\x0a\x00"))  # any message: it has spoken
        except OSError:
            pass
        served = got == SP_PAIR1 and not is_closed(gw, 1.0)
        print(f"slots: {args.max_connections} silent peers open; a new speaking peer "
              f"{'was served' if served else 'was REFUSED'}")
        t0 = time.monotonic()
        open_now = sum(not is_closed(s) for s in silent)
        print(f"slots: silent peers still open at t=0: {open_now}")
        time.sleep(args.wait)
        open_later = sum(not is_closed(s) for s in silent)
        print(f"slots: silent peers still open after {time.monotonic() - t0:.0f} s: {open_later}; "
              f"worker gauge sluice_worker_connections={w.metric('sluice_worker_connections'):g}")
        for s in silent:
            s.close()
        gw.close()
        time.sleep(1.0)

        base = rss_mb(pid)
        body = os.urandom(4 << 20)
        holders = []
        for _ in range(args.frames):
            s = peer(port, True)
            try:
                s.sendall(struct.pack(">Q", len(body) + 4) + b"\0\0\0\1" + body[:-1024])
            except OSError:
                pass
            holders.append(s)
        time.sleep(2.0)
        held = rss_mb(pid)
        refused = sum(is_closed(s) for s in holders)
        print(f"memory: worker RSS {base:.1f} MB before, {held:.1f} MB with {args.frames} "
              f"partial 4 MiB frames ({held - base:+.1f} MB); {refused} of them closed by the "
              "worker")
        for s in holders:
            s.close()
    finally:
        for p in reversed(procs):
            p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
