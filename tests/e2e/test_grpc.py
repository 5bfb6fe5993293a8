"""A stock gRPC client (Python grpcio) with stubs generated at test time from proto/tessera.proto
by grpcio-tools: Generate (server streaming), Chat, Tokenize, Health, ListModels, the status
codes of the failure cases, and the same parameter rules (and messages) as the HTTP API's."""
import importlib
import pathlib
import sys

import grpc
import pytest
from grpc_tools import protoc

from serve_util import API_KEY, http

PROTO_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "proto"


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
                      str(PROTO_DIR / "tessera.proto")])
    assert rc == 0
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("tessera_pb2"), importlib.import_module("tessera_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def stub(server, pb):
    ch = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    grpc.channel_ready_future(ch).result(timeout=30)
    yield pb[1].TesseraStub(ch)
    ch.close()


MD = (("authorization", f"Bearer {API_KEY}"),)


def test_health_and_models(stub, pb):
    assert stub.Health(pb[0].HealthRequest(), timeout=30).status == pb[0].HealthResponse.SERVING
    models = stub.ListModels(pb[0].ListModelsRequest(), metadata=MD, timeout=30).models
    assert len(models) == 1 and models[0].id and models[0].max_context > 0


def test_tokenize(stub, pb, server):
    r = stub.Tokenize(pb[0].TokenizeRequest(text="Hello world", add_special_tokens=False), metadata=MD, timeout=30)
    assert len(r.ids) >= 2
    # the same ids the HTTP side prefills: Generate with these ids echoes prompt_tokens == len(ids)
    last = list(stub.Generate(pb[0].GenerateRequest(prompt_ids=list(r.ids), params=pb[0].SamplingParams(max_tokens=1)),
                              metadata=MD, timeout=60))[-1]
    assert last.prompt_tokens == len(r.ids)


def test_generate_streaming(stub, pb, server):
    p = pb[0].SamplingParams(max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    msgs = list(stub.Generate(pb[0].GenerateRequest(prompt="The capital of France is", params=p), metadata=MD, timeout=120))
    assert len(msgs) >= 2
    tokens = [m for m in msgs if m.ids]
    assert 1 <= len(tokens) <= 8
    assert msgs[-1].finish_reason in ("stop", "length")
    assert msgs[-1].completion_tokens == len(tokens)
    text = "".join(m.text for m in msgs)
    assert "Paris" in text
    for m in tokens:
        assert m.logprobs[0].id == m.ids[0] and m.logprobs[0].logprob <= 0
    # the same greedy text as the OpenAI completions endpoint
    import json
    import urllib.request
    req = urllib.request.Request(server.base + "/v1/completions", method="POST", data=json.dumps(
        {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert json.loads(r.read())["choices"][0]["text"] == text


def test_chat(stub, pb):
    r = stub.Chat(pb[0].ChatRequest(messages=[pb[0].ChatMessage(role="user", content="Say hello.")],
                                    params=pb[0].SamplingParams(max_tokens=6, temperature=0)), metadata=MD, timeout=120)
    assert r.message.role == "assistant" and r.message.content
    assert r.finish_reason in ("stop", "length") and 1 <= r.completion_tokens <= 6 and r.prompt_tokens > 5


def test_chat_stream(stub, pb):
    msgs = [pb[0].ChatMessage(role="user", content="Say hello.")]
    parts = list(stub.ChatStream(pb[0].ChatRequest(messages=msgs, params=pb[0].SamplingParams(max_tokens=6, temperature=0)),
                                 metadata=MD, timeout=120))
    assert len(parts) >= 2 and parts[-1].finish_reason in ("stop", "length")
    text = "".join(p.text for p in parts)
    whole = stub.Chat(pb[0].ChatRequest(messages=msgs, params=pb[0].SamplingParams(max_tokens=6, temperature=0)),
                      metadata=MD, timeout=120)
    assert text == whole.message.content


def test_status_codes(stub, pb):
    def code_of(fn, *a, **kw):
        with pytest.raises(grpc.RpcError) as e:
            r = fn(*a, timeout=60, **kw)
            if hasattr(r, "__iter__") and not hasattr(r, "ListFields"):
                list(r)
        return e.value.code(), e.value.details()

    c, d = code_of(stub.ListModels, pb[0].ListModelsRequest())
    assert c == grpc.StatusCode.UNAUTHENTICATED and "key" in d
    c, d = code_of(stub.Generate, pb[0].GenerateRequest(prompt="x", params=pb[0].SamplingParams(temperature=-1)),
                   metadata=MD)
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "temperature" in d
    c, _ = code_of(stub.Generate, pb[0].GenerateRequest(prompt=""), metadata=MD)
    assert c == grpc.StatusCode.INVALID_ARGUMENT
    c, _ = code_of(stub.Chat, pb[0].ChatRequest(model="nope", messages=[pb[0].ChatMessage(role="user", content="x")]),
                   metadata=MD)
    assert c == grpc.StatusCode.NOT_FOUND
    c, _ = code_of(stub.Generate, pb[0].GenerateRequest(prompt="hello " * 4000), metadata=MD)
    assert c == grpc.StatusCode.INVALID_ARGUMENT


def test_same_rules_as_http(stub, pb, server):
    # gRPC and HTTP refuse the same parameters with the same words (one validator, openai.c)
    cases = [({"temperature": 3}, {"temperature": 3}), ({"top_k": 2 ** 30 + 1}, {"top_k": 2 ** 30 + 1}),
             ({"max_tokens": 2 ** 24 + 1}, {"max_tokens": 2 ** 24 + 1}), ({"stop": ["x" * 513]}, {"stop": ["x" * 513]})]
    for body, params in cases:
        st, j = http(server, "POST", "/v1/completions", {"prompt": "x", **body})
        assert st == 400, (body, j)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(pb[0].GenerateRequest(prompt="x", params=pb[0].SamplingParams(**params)),
                               metadata=MD, timeout=60))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (params, e.value.details())
        assert e.value.details() == j["error"]["message"], params
    # and accept the same: OpenAI's "developer" role is the system prompt on both
    msgs = [pb[0].ChatMessage(role="developer", content="Answer briefly."), pb[0].ChatMessage(role="user", content="Hi")]
    r = stub.Chat(pb[0].ChatRequest(messages=msgs, params=pb[0].SamplingParams(max_tokens=2)), metadata=MD, timeout=60)
    assert r.completion_tokens >= 1


def test_cancel_mid_stream(stub, pb, server):
    call = stub.Generate(pb[0].GenerateRequest(prompt="Count to one hundred:", params=pb[0].SamplingParams(
        max_tokens=200, temperature=0)), metadata=MD, timeout=120)
    first = next(call)
    assert first is not None
    call.cancel()
    # the server goes on answering
    assert stub.Health(pb[0].HealthRequest(), timeout=30).status == pb[0].HealthResponse.SERVING
