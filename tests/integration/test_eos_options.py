"""vLLM's benchmark extensions through gateway and worker: `ignore_eos` (every answer runs to
max_tokens), `min_tokens` (no end-of-generation stop before it), and their validation."""
import json

from conftest import MODEL, Gateway, http_request

MSG = [{"role": "user", "content": "Reply with the single word OK."}]


def chat(g, **extra):
    r = http_request(g.base, "POST", "/v1/chat/completions",
                     json.dumps({"model": MODEL, "messages": MSG, "temperature": 0, **extra}),
                     {"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
                     timeout=120)
    return r


def test_ignore_eos_and_min_tokens(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    c = g.client()
    plain = c.chat.completions.create(model=MODEL, messages=MSG, temperature=0, max_tokens=48)
    # The short answer stops on its own well before 48 tokens...
    assert plain.choices[0].finish_reason == "stop", plain
    natural = plain.usage.completion_tokens
    assert natural < 40, natural
    # ...ignore_eos runs it to max_tokens (as load generators need)...
    full = c.chat.completions.create(model=MODEL, messages=MSG, temperature=0, max_tokens=48,
                                     extra_body={"ignore_eos": True})
    assert full.usage.completion_tokens == 48
    assert full.choices[0].finish_reason == "length"
    # ...and min_tokens holds the end back until that many tokens exist.
    want = natural + 5
    held = c.chat.completions.create(model=MODEL, messages=MSG, temperature=0, max_tokens=48,
                                     extra_body={"min_tokens": want})
    assert held.usage.completion_tokens >= want, held.usage
    # Completions accept both too.
    r = http_request(g.base, "POST", "/v1/completions",
                     json.dumps({"model": MODEL, "prompt": "Hi", "max_tokens": 12,
                                 "ignore_eos": True, "min_tokens": 3}),
                     {"Authorization": "Bearer sk-test", "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 12


def test_eos_options_validation(procs, logdir, worker):
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    for extra, param in (({"ignore_eos": "yes"}, "ignore_eos"),
                         ({"min_tokens": -1}, "min_tokens"),
                         ({"min_tokens": 1.5}, "min_tokens"),
                         ({"min_tokens": 20, "max_tokens": 10}, "min_tokens")):
        r = chat(g, **extra)
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"] == param, (extra, r.text)
