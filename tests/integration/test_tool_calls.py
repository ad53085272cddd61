"""Tool calling end to end through the gateway and a real CPU worker on the bundled model, with
the official openai client: required and named tool_choice, streaming deltas shaped as OpenAI
sends them, arguments that parse and validate, a follow-up turn with the tool result, and the
400s for invalid tool definitions and unsupported parameter schemas."""
import json

import jsonschema
import openai
import pytest

from conftest import MODEL

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                      "parameters": TIME}},
]
SCHEMA_OF = {"get_weather": WEATHER, "get_time": TIME}
MSG = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
MAX_TOKENS = 200


@pytest.fixture(scope="module")
def gw(worker, procs, logdir):
    from conftest import Gateway
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    yield g
    g.proc.stop()


def create(gw, **kw):
    kw.setdefault("messages", MSG)
    kw.setdefault("max_tokens", MAX_TOKENS)
    return gw.client().chat.completions.create(model=MODEL, tools=TOOLS, **kw)


def check_calls(calls, only=None):
    assert calls
    for tc in calls:
        assert tc.type == "function"
        assert tc.id.startswith("call_") and len(tc.id) > 8
        assert tc.function.name in SCHEMA_OF
        if only is not None:
            assert tc.function.name == only
        jsonschema.validate(json.loads(tc.function.arguments), SCHEMA_OF[tc.function.name])
    assert len({tc.id for tc in calls}) == len(calls)


def test_required_non_streaming(gw):
    r = create(gw, tool_choice="required", n=3, seed=11, temperature=1.0)
    for c in r.choices:
        assert c.finish_reason == "tool_calls"
        assert c.message.content is None
        check_calls(c.message.tool_calls)
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_named_tool_choice(gw):
    r = create(gw, tool_choice={"type": "function", "function": {"name": "get_time"}}, n=2,
               seed=5, temperature=1.0)
    for c in r.choices:
        assert c.finish_reason == "tool_calls"
        check_calls(c.message.tool_calls, only="get_time")


def test_not_parallel_gives_one_call(gw):
    r = create(gw, tool_choice="required", parallel_tool_calls=False, seed=3, temperature=1.0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert len(c.message.tool_calls) == 1
    check_calls(c.message.tool_calls)


def test_streaming_deltas(gw):
    stream = create(gw, tool_choice="required", seed=21, temperature=1.0, stream=True,
                    stream_options={"include_usage": True})
    calls, finish, usage, first = {}, None, None, True
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if first:
                assert c.delta.role == "assistant"
                first = False
            assert not c.delta.content
            for d in c.delta.tool_calls or []:
                if d.index not in calls:
                    # A call's first delta: id, type, name and empty arguments, as OpenAI.
                    assert d.id.startswith("call_") and d.type == "function"
                    assert d.function.name in SCHEMA_OF and d.function.arguments == ""
                    calls[d.index] = {"id": d.id, "name": d.function.name, "args": ""}
                else:
                    assert d.id is None and d.function.name is None
                    calls[d.index]["args"] += d.function.arguments
            finish = c.finish_reason or finish
    assert finish == "tool_calls"
    assert sorted(calls) == list(range(len(calls))) and calls
    for c in calls.values():
        jsonschema.validate(json.loads(c["args"]), SCHEMA_OF[c["name"]])
    assert usage is not None and usage.completion_tokens > 0


def test_follow_up_with_tool_result(gw):
    first = create(gw, tool_choice={"type": "function", "function": {"name": "get_weather"}},
                   temperature=0)
    msg = first.choices[0].message
    check_calls(msg.tool_calls, only="get_weather")
    # Replay as agent frameworks do: the SDK's own message object, then one tool result per
    # call (role tool + tool_call_id).
    history = MSG + [msg] + [
        {"role": "tool", "tool_call_id": tc.id, "content": json.dumps({"temp_c": 21})}
        for tc in msg.tool_calls]
    r = create(gw, messages=history, max_tokens=24, temperature=0)
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length", "tool_calls")
    if c.finish_reason == "tool_calls":
        check_calls(c.message.tool_calls)
    elif c.message.tool_calls:  # the small model may call again; cut short by max_tokens
        assert c.finish_reason == "length"
        assert c.message.tool_calls[0].function.name in SCHEMA_OF
    else:
        assert isinstance(c.message.content, str) and c.message.content
    # The same history without tools (tool_choice none): plain text.
    r = gw.client().chat.completions.create(model=MODEL, messages=history, tools=TOOLS,
                                            tool_choice="none", max_tokens=16, temperature=0)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content
    # The calls and results reached the prompt: longer than the question alone (and tools
    # with tool_choice none are not rendered at all).
    base = gw.client().chat.completions.create(model=MODEL, messages=MSG, tools=TOOLS,
                                               tool_choice="none", max_tokens=1, temperature=0)
    assert base.usage.prompt_tokens < first.usage.prompt_tokens
    assert r.usage.prompt_tokens > base.usage.prompt_tokens + 30


def test_auto_gives_text_or_valid_calls(gw):
    r = create(gw, n=3, seed=2, temperature=1.0, max_tokens=64)
    for c in r.choices:
        if c.finish_reason == "tool_calls":
            check_calls(c.message.tool_calls)
        else:
            assert c.message.tool_calls is None
            assert not c.message.content.startswith("<")


def test_max_tokens_cut_tool_call(gw):
    r = create(gw, tool_choice="required", max_tokens=12, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 12
    # What was written of the call is returned as is: a name, and arguments cut short.
    if c.message.tool_calls:
        args = c.message.tool_calls[0].function.arguments
        with pytest.raises(json.JSONDecodeError):
            json.loads(args)


@pytest.mark.parametrize("tools,param", [
    ([{"type": "function", "function": {"name": "bad name"}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "x" * 65}}], "tools[0].function.name"),
    ([{"type": "function"}], "tools[0].function"),
    ([{"type": "retrieval", "function": {"name": "a"}}], "tools[0].type"),
    ([{"type": "function", "function": {"name": "a", "parameters": []}}],
     "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "a"}}, {"type": "function",
                                                         "function": {"name": "a"}}],
     "tools[1].function.name"),
])
def test_invalid_tool_definitions_are_400(gw, tools, param):
    with pytest.raises(openai.BadRequestError) as e:
        gw.client().chat.completions.create(model=MODEL, messages=MSG, tools=tools,
                                            max_tokens=4)
    assert e.value.body["param"] == param
    assert e.value.body["type"] == "invalid_request_error"


def test_unknown_tool_choice_is_400(gw):
    with pytest.raises(openai.BadRequestError) as e:
        create(gw, tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice.function.name"
    with pytest.raises(openai.BadRequestError) as e:
        gw.client().chat.completions.create(model=MODEL, messages=MSG, tool_choice="required",
                                            max_tokens=4)
    assert e.value.body["param"] == "tool_choice"


def test_unsupported_parameters_schema_is_400(gw):
    tools = [TOOLS[0], {"type": "function", "function": {
        "name": "f", "parameters": {"type": "object",
                                    "properties": {"a": {"not": {"type": "string"}}}}}}]
    with pytest.raises(openai.BadRequestError) as e:
        gw.client().chat.completions.create(model=MODEL, messages=MSG, tools=tools,
                                            max_tokens=4)
    assert e.value.body["param"] == "tools[1].function.parameters"
    assert "'not'" in e.value.body["message"]
