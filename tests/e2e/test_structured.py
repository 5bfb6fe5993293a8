"""Structured output and tool calls through the OpenAI SDK against `tessera serve` (default model,
greedy, short outputs): response_format json_object / json_schema outputs parse and validate
against their schema (jsonschema, not our code), tool_choice required / named gives tool_calls
whose arguments validate against the function's parameters, streaming and not, tool results in
the history are accepted, and schemas the grammar cannot honour are 400s naming the keyword; the
gRPC API's SamplingParams.json_schema likewise (stubs generated from proto/tessera.proto)."""
import importlib
import json
import sys

import grpc
import jsonschema
import openai
import pytest
from grpc_tools import protoc

from serve_util import API_KEY, ROOT


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def ask(client, content, **kw):
    return client.chat.completions.create(model="", messages=[{"role": "user", "content": content}],
                                          temperature=0, **kw)


def json_schema(schema):
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24},
    "color": {"enum": ["red", "green", "blue"]},
    "age": {"type": "integer"}},
    "required": ["name", "color", "age"], "additionalProperties": False}
INTS = {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}
NESTED = {"type": "object", "properties": {
    "user": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 16},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2}},
        "required": ["name", "tags"]},
    "active": {"type": "boolean"},
    "nick": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]}},
    "required": ["user", "active", "nick"], "additionalProperties": False}


def test_json_object_output_parses(client):
    r = ask(client, "Give a JSON object with the keys a and b set to 1 and 2.", max_tokens=40,
            response_format={"type": "json_object"})
    c = r.choices[0]
    assert c.finish_reason == "stop", c
    assert isinstance(json.loads(c.message.content), dict), c.message.content


@pytest.mark.parametrize("schema,prompt", [
    (PERSON, "Describe a person."),
    (INTS, "List some small numbers."),
    (NESTED, "Describe a user account."),
], ids=["object_required_enum", "array_max_items", "nested"])
def test_json_schema_output_validates(client, schema, prompt):
    r = ask(client, prompt, max_tokens=80, response_format=json_schema(schema))
    c = r.choices[0]
    assert c.finish_reason == "stop", c
    jsonschema.validate(json.loads(c.message.content), schema)


def test_json_schema_streamed_equals_non_streamed(client):
    full = ask(client, "Describe a person.", max_tokens=80, response_format=json_schema(PERSON))
    parts, finish = [], None
    for chunk in ask(client, "Describe a person.", max_tokens=80, response_format=json_schema(PERSON), stream=True):
        for ch in chunk.choices:
            parts.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert "".join(parts) == full.choices[0].message.content and finish == "stop"
    jsonschema.validate(json.loads("".join(parts)), PERSON)


WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 32},
    "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": "Adds two integers", "parameters": ADD}},
]
PARAMS = {"get_weather": WEATHER, "add": ADD}


def check_calls(calls):
    assert calls, calls
    for tc in calls:
        assert tc.type == "function" and tc.id
        assert tc.function.name in PARAMS
        jsonschema.validate(json.loads(tc.function.arguments), PARAMS[tc.function.name])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}],
                         ids=["required", "named"])
def test_tool_choice_gives_tool_calls(client, choice):
    r = ask(client, "What is the weather in Paris?", max_tokens=60, tools=TOOLS, tool_choice=choice)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c
    assert c.message.content is None
    check_calls(c.message.tool_calls)
    if isinstance(choice, dict):
        assert [t.function.name for t in c.message.tool_calls] == ["add"]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}],
                         ids=["required", "named"])
def test_tool_calls_streamed(client, choice):
    full = ask(client, "What is the weather in Paris?", max_tokens=60, tools=TOOLS, tool_choice=choice)
    calls, finish, content = {}, None, []
    for chunk in ask(client, "What is the weather in Paris?", max_tokens=60, tools=TOOLS, tool_choice=choice,
                     stream=True):
        for ch in chunk.choices:
            finish = ch.finish_reason or finish
            if ch.delta.content:
                content.append(ch.delta.content)
            for tc in ch.delta.tool_calls or []:
                got = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
                got["name"] += tc.function.name or ""
                got["arguments"] += tc.function.arguments or ""
    assert finish == "tool_calls" and not content
    want = full.choices[0].message.tool_calls
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [(t.function.name, t.function.arguments) for t in want]
    for c in calls.values():
        assert c["id"].startswith("call_")
        jsonschema.validate(json.loads(c["arguments"]), PARAMS[c["name"]])


def test_tool_results_in_the_history(client):
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    r = client.chat.completions.create(model="", messages=history, tools=TOOLS, max_tokens=8, temperature=0)
    short = client.chat.completions.create(model="", messages=history[:1], tools=TOOLS, max_tokens=8, temperature=0)
    # the call and its result reach the prompt
    assert r.usage.prompt_tokens > short.usage.prompt_tokens + 20, (r.usage, short.usage)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    with pytest.raises(openai.BadRequestError) as ei:   # a tool result must say which call it answers
        client.chat.completions.create(model="", messages=history[:2] + [{"role": "tool", "content": "x"}],
                                       max_tokens=2)
    assert ei.value.body["param"] == "messages"


@pytest.mark.parametrize("kw,param,word", [
    ({"response_format": json_schema({"type": "string", "pattern": "^a+$"})}, "response_format", "'pattern'"),
    ({"response_format": json_schema({"type": "object", "properties": {"d": {"type": "string", "format": "date"}}})},
     "response_format", "'format'"),
    ({"response_format": json_schema({"anyOf": [{"type": "object"}, PERSON]})}, "response_format", "anyOf"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}}}]}, "tools", "'minimum'"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"tool_choice": "required"}, "tool_choice", "tools"),
    ({"response_format": {"type": "json_object"}, "extra_body": {"ignore_eos": True}}, "response_format", "ignore_eos"),
    ({"response_format": {"type": "json_object"}, "extra_body": {"min_tokens": 2}}, "response_format", "min_tokens"),
], ids=["pattern", "format", "ambiguous_anyOf", "tool_minimum", "unknown_function", "required_without_tools",
        "ignore_eos", "min_tokens"])
def test_what_the_grammar_cannot_honour_is_refused(client, kw, param, word):
    with pytest.raises(openai.BadRequestError) as ei:
        ask(client, "Hi", max_tokens=2, **kw)
    body = ei.value.body
    assert body["param"] == param and word in body["message"], body


@pytest.fixture(scope="module")
def grpc_api(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}",
                        str(ROOT / "proto" / "tessera.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        pb, pbg = importlib.import_module("tessera_pb2"), importlib.import_module("tessera_pb2_grpc")
        ch = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        grpc.channel_ready_future(ch).result(timeout=30)
        yield pb, pbg.TesseraStub(ch)
        ch.close()
    finally:
        sys.path.remove(str(out))


def test_grpc_json_schema(grpc_api):
    pb, stub = grpc_api
    md = (("authorization", f"Bearer {API_KEY}"),)
    msgs = [pb.ChatMessage(role="user", content="Describe a person.")]
    r = stub.Chat(pb.ChatRequest(messages=msgs, params=pb.SamplingParams(
        max_tokens=80, temperature=0, json_schema=json.dumps(PERSON))), metadata=md, timeout=120)
    assert r.finish_reason == "stop", r
    jsonschema.validate(json.loads(r.message.content), PERSON)
    ab = [pb.ChatMessage(role="user", content="Give a JSON object with the keys a and b set to 1 and 2.")]
    r = stub.Chat(pb.ChatRequest(messages=ab, params=pb.SamplingParams(max_tokens=40, temperature=0, json_object=True)),
                  metadata=md, timeout=120)
    assert r.finish_reason == "stop" and isinstance(json.loads(r.message.content), dict), r
    with pytest.raises(grpc.RpcError) as ei:
        stub.Chat(pb.ChatRequest(messages=msgs, params=pb.SamplingParams(
            max_tokens=2, json_schema='{"type": "string", "pattern": "a+"}')), metadata=md, timeout=120)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'pattern'" in ei.value.details()
