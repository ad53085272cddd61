"""Structured outputs end to end: response_format json_object / json_schema through the gateway
and a real CPU worker on the bundled model, with the official openai client. Sampling at
temperature 1.0 with seeds (n choices per request: seed + choice), so the constraint, not the
model's manners, is what makes every output valid."""
import json

import jsonschema
import openai
import pytest

from conftest import MODEL

N = 3  # seeded generations per schema (one request, n choices batched together)
MAX_TOKENS = 160

SYSTEM = "You answer with JSON only."

SCHEMAS = {
    "nested_object": (
        "Describe a person with a short name and an address.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z]{1,10}$"},
                "address": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                        "zip": {"type": "integer", "minimum": 1000, "maximum": 99999},
                    },
                    "required": ["city", "zip"],
                    "additionalProperties": False,
                },
            },
            "required": ["name", "address"],
            "additionalProperties": False,
        },
    ),
    "array_bounds": (
        "List a few tags.",
        {
            "type": "object",
            "properties": {
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["red", "green", "blue"]},
                    "minItems": 2,
                    "maxItems": 4,
                },
                "count": {"type": "integer", "minimum": 0, "maximum": 9},
            },
            "required": ["tags", "count"],
            "additionalProperties": False,
        },
    ),
    "enum_anyof": (
        "Pick an animal and a value.",
        {
            "type": "object",
            "properties": {
                "kind": {"enum": ["cat", "dog", "owl"]},
                "value": {"anyOf": [{"type": "integer", "minimum": -5, "maximum": 5},
                                    {"type": "boolean"},
                                    {"type": "null"}]},
            },
            "required": ["kind", "value"],
            "additionalProperties": False,
        },
    ),
    "recursive_ref": (
        "Write an arithmetic expression as a tree, like {\"op\": \"+\", \"a\": 1, \"b\": 2}.",
        {
            "$defs": {
                "expr": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                                   {"$ref": "#/$defs/node"}]},
                "node": {
                    "type": "object",
                    "properties": {
                        "op": {"enum": ["+", "-", "*"]},
                        "a": {"$ref": "#/$defs/expr"},
                        "b": {"$ref": "#/$defs/expr"},
                    },
                    "required": ["op", "a", "b"],
                    "additionalProperties": False,
                },
            },
            "$ref": "#/$defs/node",
        },
    ),
    "nullable_types": (
        "Give a nickname (or null) and an age (or null).",
        {
            "type": "object",
            "properties": {
                "nick": {"type": ["string", "null"], "pattern": "^[a-z]{1,8}$"},
                "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 120},
                "ok": {"type": "boolean"},
            },
            "required": ["nick", "age", "ok"],
            "additionalProperties": False,
        },
    ),
}


@pytest.fixture(scope="module")
def gw(worker, procs, logdir):
    from conftest import Gateway
    g = Gateway(procs, logdir, workers=[worker])
    g.wait_ready()
    yield g
    g.proc.stop()


def ask(gw, prompt, **kw):
    return gw.client().chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": SYSTEM},
                               {"role": "user", "content": prompt}], **kw)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_outputs_validate(gw, name):
    prompt, schema = SCHEMAS[name]
    r = ask(gw, prompt, n=N, seed=1234, temperature=1.0, max_tokens=MAX_TOKENS,
            response_format={"type": "json_schema",
                             "json_schema": {"name": name, "schema": schema, "strict": True}})
    assert len(r.choices) == N
    for c in r.choices:
        assert c.finish_reason == "stop", (c.finish_reason, c.message.content)
        assert c.message.tool_calls is None
        value = json.loads(c.message.content)
        jsonschema.validate(value, schema)
    assert r.usage.completion_tokens > 0


def test_json_schema_streaming(gw):
    prompt, schema = SCHEMAS["nested_object"]
    stream = ask(gw, prompt, seed=7, temperature=1.0, max_tokens=MAX_TOKENS, stream=True,
                 response_format={"type": "json_schema",
                                  "json_schema": {"name": "p", "schema": schema}})
    text, finish = "", None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), schema)


def test_json_object_outputs_are_objects(gw):
    r = ask(gw, "Give a JSON object describing a cat, with two short fields.", n=N, seed=99,
            temperature=1.0, max_tokens=MAX_TOKENS, response_format={"type": "json_object"})
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        assert isinstance(json.loads(c.message.content), dict)


def test_repeated_schema_same_output(gw):
    """Greedy + the same schema twice: the second request (compiled grammar from the cache)
    gives the same output as the first."""
    prompt, schema = SCHEMAS["enum_anyof"]
    fmt = {"type": "json_schema", "json_schema": {"name": "e", "schema": schema}}
    a = ask(gw, prompt, temperature=0, max_tokens=MAX_TOKENS, response_format=fmt)
    b = ask(gw, prompt, temperature=0, max_tokens=MAX_TOKENS, response_format=fmt)
    assert a.choices[0].message.content == b.choices[0].message.content
    jsonschema.validate(json.loads(a.choices[0].message.content), schema)


def test_max_tokens_cut_is_length_and_partial(gw):
    prompt, schema = SCHEMAS["nested_object"]
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    full = ask(gw, prompt, temperature=0, max_tokens=MAX_TOKENS, response_format=fmt)
    cut = ask(gw, prompt, temperature=0, max_tokens=4, response_format=fmt)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 4
    partial = cut.choices[0].message.content
    # The partial output as generated (a prefix of the full one), never a repaired document.
    assert partial and full.choices[0].message.content.startswith(partial)
    with pytest.raises(json.JSONDecodeError):
        json.loads(partial)


@pytest.mark.parametrize("schema,keyword", [
    ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
    ({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}}, "allOf"),
])
def test_unsupported_schema_keyword_is_400(gw, schema, keyword):
    with pytest.raises(openai.BadRequestError) as e:
        ask(gw, "x", max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    err = e.value.body
    assert e.value.status_code == 400
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "response_format.json_schema.schema"
    assert keyword in err["message"]


@pytest.mark.parametrize("fmt,param", [
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}},
     "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "a", "schema": "{}"}},
     "response_format.json_schema.schema"),
])
def test_bad_response_format_is_400(gw, fmt, param):
    with pytest.raises(openai.BadRequestError) as e:
        ask(gw, "x", max_tokens=4, response_format=fmt)
    assert e.value.body["param"] == param
