#!/usr/bin/env python3
"""A tiny OpenAI-compatible stub server for testing sluice-load (NOT a model server).

Serves POST /v1/chat/completions and /v1/completions, streamed (SSE) or not. Every answer
is `max_tokens` words; the first arrives after --ttft-ms, the next ones --itl-ms apart, so a
test can check that the load test measures what the server did. --api-key makes it answer
401 to other keys; --fail-every N answers 503 to every N-th request; --ignore-stream answers
streamed requests with one JSON body, as some servers do. Prints its port on
stdout once listening (use --port 0 for a free one).
"""
import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(opts):
    counter = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else small SSE writes bunch up behind delayed ACKs

        def log_message(self, fmt, *args):  # quiet
            pass

        def send_json(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path in ("/health", "/ready"):
                self.send_json(200, {"status": "ok"})
            else:
                self.send_json(404, {"error": {"message": "not found"}})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            chat = self.path == "/v1/chat/completions"
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                self.send_json(404, {"error": {"message": "no such path"}})
                return
            if opts.api_key and self.headers.get("Authorization") != "Bearer " + opts.api_key:
                self.send_json(401, {"error": {"message": "invalid api key"}})
                return
            with lock:
                counter["n"] += 1
                n = counter["n"]
            if opts.fail_every and n % opts.fail_every == 0:
                self.send_json(503, {"error": {"message": "stub overloaded"}})
                return
            try:
                req = json.loads(raw)
                max_tokens = int(req.get("max_tokens", 16))
                stream = bool(req.get("stream", False)) and not opts.ignore_stream
                if chat:
                    prompt = " ".join(m["content"] for m in req["messages"])
                else:
                    prompt = req["prompt"]
            except (ValueError, KeyError, TypeError):
                self.send_json(400, {"error": {"message": "bad request"}})
                return
            prompt_tokens = len(prompt.split())
            words = ["w%d" % i for i in range(max_tokens)]
            obj = "chat.completion" if chat else "text_completion"
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens,
                     "total_tokens": prompt_tokens + max_tokens}
            time.sleep(opts.ttft_ms / 1000.0)
            if not stream:
                time.sleep(opts.itl_ms * max(0, max_tokens - 1) / 1000.0)
                text = " ".join(words)
                choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                           "finish_reason": "length"} if chat else
                          {"index": 0, "text": text, "finish_reason": "length"})
                self.send_json(200, {"id": "stub", "object": obj, "model": req.get("model"),
                                     "choices": [choice], "usage": usage})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()

            def event(payload):
                self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                self.wfile.flush()

            if chat:  # role-only first chunk, like OpenAI: carries no content
                event({"id": "stub", "object": obj + ".chunk", "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""},
                     "finish_reason": None}]})
            for i, w in enumerate(words):
                if i > 0:
                    time.sleep(opts.itl_ms / 1000.0)
                last = i == len(words) - 1
                piece = (" " if i else "") + w
                choice = ({"index": 0, "delta": {"content": piece}} if chat else
                          {"index": 0, "text": piece})
                choice["finish_reason"] = "length" if last else None
                event({"id": "stub", "object": obj + ".chunk", "choices": [choice]})
            if (req.get("stream_options") or {}).get("include_usage"):
                event({"id": "stub", "object": obj + ".chunk", "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default="")
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--ignore-stream", action="store_true",
                    help="answer with one JSON body even when streaming is asked for")
    opts = ap.parse_args()
    ThreadingHTTPServer.request_queue_size = 256  # the default 5 drops SYNs under load
    srv = ThreadingHTTPServer(("127.0.0.1", opts.port), make_handler(opts))
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
