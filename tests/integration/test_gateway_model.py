"""End to end through a real CPU worker on the bundled model, with the official openai client."""
import json
import time

import openai
import pytest

from conftest import MODEL, sse_events, wait_for

MSG = [{"role": "user", "content": "Name three colors."}]
# Long generations for the disconnect/kill tests: EOS (id 2) and <|endoftext|> (id 0) banned,
# so the model cannot finish early by chance.
NO_EOS = {"0": -100, "2": -100}


@pytest.fixture(scope="module")
def gw(worker, procs, logdir):
    from conftest import Gateway
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    yield g
    g.proc.stop()


def test_chat_non_streaming(gw):
    r = gw.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=8,
                                            temperature=0)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert r.created > 1_600_000_000
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant" and c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_streaming_matches_non_streaming(gw):
    c = gw.client()
    full = c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=8, temperature=0)
    chunks = list(c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=8,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == \
        full.usage.completion_tokens


def test_completions_both_ways(gw):
    c = gw.client()
    r = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                             temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    s = list(c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                  temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in s) == r.choices[0].text
    assert s[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_max_tokens_gives_length(gw):
    r = gw.client().completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=3,
                                       temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_stop_string(gw):
    c = gw.client()
    base = c.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=12,
                                temperature=0).choices[0].text
    # Stop at the second comma of the greedy continuation (present in it by construction).
    assert "," in base
    stopped = c.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=12,
                                   temperature=0, stop=[","]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == base.split(",")[0]


def test_seed_determinism_and_n(gw):
    c = gw.client()
    kw = dict(model=MODEL, messages=MSG, max_tokens=8, temperature=1.0, seed=1234)
    a = c.chat.completions.create(**kw).choices[0].message.content
    b = c.chat.completions.create(**kw).choices[0].message.content
    assert a == b
    r = c.chat.completions.create(n=2, **kw)
    assert [ch.index for ch in r.choices] == [0, 1]
    # choice i runs with seed + i: choice 0 repeats the single request.
    assert r.choices[0].message.content == a
    assert all(ch.message.content for ch in r.choices)
    assert r.usage.completion_tokens >= 2  # summed over both choices


def test_logprobs(gw):
    r = gw.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=4,
                                            temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 2
        # Greedy: the chosen token is the most likely one.
        assert item.logprob >= max(t.logprob for t in item.top_logprobs) - 1e-4
    assert "".join(i.token for i in content) == r.choices[0].message.content


def test_context_length_error(gw):
    with pytest.raises(openai.BadRequestError) as e:
        gw.client().completions.create(model=MODEL, prompt=list(range(1, 9000)), max_tokens=4)
    assert e.value.status_code == 400


def cancelled(worker):
    return worker.metric("sluice_worker_requests_total", 'finish_reason="cancelled"')


def wait_cancelled(worker, before):
    """Waits until the worker is idle with one more cancelled request: cancelled, not run to
    its max_tokens (that would count as finish_reason="length")."""
    wait_for(lambda: worker.metric("sluice_worker_requests_running") == 0 and
             worker.metric("sluice_worker_kv_cache_blocks_used") == 0 and
             cancelled(worker) >= before + 1, what="worker idle after the cancel")


def test_client_disconnect_cancels(gw, worker):
    before = cancelled(worker)
    body = json.dumps({"model": MODEL, "prompt": "Write a long story about a dragon.",
                       "max_tokens": 400, "stream": True, "logit_bias": NO_EOS})
    status, events = sse_events(gw.base, "/v1/completions", body,
                                {"Authorization": "Bearer sk-test",
                                 "Content-Type": "application/json"}, stop_after=2)
    assert status == 200 and len(events) == 2
    # The gateway sends Cancel at once: the worker ends the sequence as cancelled and frees
    # its KV blocks.
    wait_cancelled(worker, before)


def test_worker_killed_mid_stream(own_worker, gateway_factory):
    g = gateway_factory(workers=[own_worker])
    g.wait_ready()
    c = g.client()
    stream = c.completions.create(model=MODEL, prompt="Write a long story about a dragon.",
                                  max_tokens=400, stream=True, logit_bias=NO_EOS)
    got = 0
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got += 1
            if got == 2:
                own_worker.proc.kill()
    assert got >= 2
    # No worker left: a new request is refused with 503, not hung.
    with pytest.raises(openai.APIStatusError) as e:
        c.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    assert e.value.status_code == 503


def test_client_disconnect_cancels_non_streaming(gw, worker):
    import socket
    body = json.dumps({"model": MODEL, "prompt": "Write a long story about a dragon.",
                       "max_tokens": 400, "logit_bias": NO_EOS}).encode()
    before = cancelled(worker)
    host, port = gw.base[len("http://"):].split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    wait_for(lambda: worker.metric("sluice_worker_requests_running") >= 1, what="request running")
    s.close()
    wait_cancelled(worker, before)


def test_discovery_from_redis_registry(redis, procs, logdir, gateway_factory):
    from conftest import Worker
    w = Worker(procs, logdir, registry=redis.url)
    try:
        g = gateway_factory(workers=(), redis=redis, extra=["--discovery"])
        g.wait_ready()
        assert [m.id for m in g.client().models.list().data] == [MODEL]
        r = g.client().completions.create(model=MODEL, prompt="Hello", max_tokens=2)
        assert r.usage.completion_tokens >= 1
    finally:
        w.proc.stop()
    # The worker deleted (or let expire) its registry key: the gateway drops it.
    wait_for(lambda: g.client().models.list().data == [], what="worker dropped")
