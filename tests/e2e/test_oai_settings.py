"""Settings that used to be refused, now honoured (issue 16), against the shared `tessera serve`
with real clients: logit_bias and min_tokens (OpenAI SDK and grpcio), /v1/completions echo with
the prompt's logprobs (checked against `tessera logits`) and text_offset, and gRPC server
reflection through grpcio-reflection's client (what grpcurl does: list, then describe)."""
import importlib
import pathlib
import subprocess
import sys
import threading

import grpc
import numpy as np
import openai
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_tools import protoc

from serve_util import API_KEY, default_model, http, tessera_bin

PROTO_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "proto"
PROMPT = "The capital of France is"
MD = (("authorization", f"Bearer {API_KEY}"),)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


def tokenize(server, text):
    st, r = http(server, "POST", "/tokenize", {"prompt": text})
    assert st == 200, r
    return r["tokens"]


def first_token(client, model, **kw):
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=1, temperature=0, logprobs=0, **kw)
    return r.choices[0].logprobs.tokens[0]


def test_logit_bias_bans_and_forces(client, model, server):
    greedy = first_token(client, model)
    gid = tokenize(server, greedy)
    assert len(gid) == 1, (greedy, gid)
    banned = first_token(client, model, logit_bias={str(gid[0]): -100})
    assert banned != greedy
    target = tokenize(server, " London")
    assert len(target) == 1
    assert first_token(client, model, logit_bias={str(target[0]): 100}) == " London"
    # chat too
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    base = client.chat.completions.create(model=model, messages=msgs, max_tokens=3, temperature=0)
    forced = client.chat.completions.create(model=model, messages=msgs, max_tokens=3, temperature=0,
                                            logit_bias={str(target[0]): 100})
    assert forced.choices[0].message.content == " London" * 3 != base.choices[0].message.content


def test_min_tokens_keeps_generating_past_eos(client, model, server):
    msgs = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    base = client.chat.completions.create(model=model, messages=msgs, max_tokens=40, temperature=0)
    assert base.choices[0].finish_reason == "stop" and base.usage.completion_tokens < 12, base
    longer = client.chat.completions.create(model=model, messages=msgs, max_tokens=40, temperature=0,
                                            extra_body={"min_tokens": 12})
    assert longer.usage.completion_tokens >= 12, longer
    assert longer.choices[0].message.content.startswith(base.choices[0].message.content.rstrip())
    # stop_token_ids are held back the same way
    dot = tokenize(server, ".")
    stop = dict(model=model, prompt=PROMPT, max_tokens=12, temperature=0, extra_body={"stop_token_ids": dot})
    short = client.completions.create(**stop)
    assert short.usage.completion_tokens < 6 and short.choices[0].finish_reason == "stop", short
    stop["extra_body"]["min_tokens"] = 6
    assert client.completions.create(**stop).usage.completion_tokens >= 6


@pytest.mark.parametrize("body,param", [
    ({"logit_bias": {"abc": 5}}, "logit_bias"),
    ({"logit_bias": {"-3": 5}}, "logit_bias"),
    ({"logit_bias": {"99999999": 5}}, "logit_bias"),
    ({"logit_bias": {"42": 100.5}}, "logit_bias"),
    ({"logit_bias": {"42": "x"}}, "logit_bias"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": 1.5}, "min_tokens"),
    ({"min_tokens": 20, "max_tokens": 5}, "min_tokens"),
])
def test_bad_values_are_400(server, body, param):
    for path, base in (("/v1/completions", {"prompt": "x"}), ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        st, r = http(server, "POST", path, {**base, "max_tokens": 30, **body})
        assert st == 400 and r["error"]["param"] == param, (path, body, r)


def test_still_unsupported_is_400(server):
    st, r = http(server, "POST", "/v1/completions", {"prompt": "x", "guided_regex": "a+"})
    assert st == 400 and r["error"]["param"] == "guided_regex"


def log_softmax_rows(ids, tmp_path):
    out = tmp_path / "logits.f32"
    subprocess.run([tessera_bin(), "logits", str(default_model()), "--ids", ",".join(map(str, ids)), "--all",
                    "--out", str(out), "--threads", "2"], check=True, capture_output=True, timeout=300)
    x = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1).astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def check_offsets(text, lp):
    assert len(lp.text_offset) == len(lp.tokens)
    assert lp.text_offset == sorted(lp.text_offset)
    for off, tok in zip(lp.text_offset, lp.tokens):
        assert text[off:off + len(tok)] == tok, (off, tok, text)


def test_echo_logprobs_match_the_model(client, model, server, tmp_path):
    # > 64 tokens: a first request leaves the prompt's full blocks (64 tokens) in the prefix
    # cache, which the echo request must not skip
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 9) + " " + PROMPT
    client.completions.create(model=model, prompt=prompt, max_tokens=1, temperature=0)
    ids = tokenize(server, prompt)
    assert len(ids) > 64
    r = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, echo=True, logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    n = len(ids)
    assert len(lp.tokens) == n + r.usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    lsm = log_softmax_rows(ids, tmp_path)
    got = np.array(lp.token_logprobs[1:n])
    want = np.array([lsm[i - 1, ids[i]] for i in range(1, n)])
    assert np.max(np.abs(got - want)) < 1e-3, np.max(np.abs(got - want))
    assert all(len(t) == 2 for t in lp.top_logprobs[1:n])
    assert c.text.startswith(prompt) and len(c.text) > len(prompt)
    check_offsets(c.text, lp)
    # the completion is the one a request without echo gets
    plain = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, logprobs=2)
    assert c.text == prompt + plain.choices[0].text
    # loosely: the plain request found 64 tokens in the prefix cache and prefilled the other 31 in
    # one batch, and the CPU backend's matmuls take another path below 32 rows (a few 0.01 nats)
    assert lp.token_logprobs[n:] == pytest.approx(plain.choices[0].logprobs.token_logprobs, abs=0.05)


def test_echo_streaming_and_without_logprobs(client, model, server):
    full = client.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=0, echo=True, logprobs=1)
    text, tokens, offsets, lps = "", [], [], []
    for ch in client.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=0, echo=True,
                                        logprobs=1, stream=True):
        c = ch.choices[0]
        text += c.text
        if c.logprobs:
            tokens += c.logprobs.tokens
            offsets += c.logprobs.text_offset
            lps += c.logprobs.token_logprobs
    assert text == full.choices[0].text and text.startswith(PROMPT)
    assert tokens == full.choices[0].logprobs.tokens and lps[0] is None
    assert offsets == full.choices[0].logprobs.text_offset
    no_lp = client.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=0, echo=True)
    assert no_lp.choices[0].text == full.choices[0].text and no_lp.choices[0].logprobs is None
    # a prompt of token ids is echoed as its text
    ids = tokenize(server, PROMPT)
    by_ids = client.completions.create(model=model, prompt=ids, max_tokens=5, temperature=0, echo=True)
    assert by_ids.choices[0].text == full.choices[0].text


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs_oai")
    assert protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
                        str(PROTO_DIR / "tessera.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("tessera_pb2"), importlib.import_module("tessera_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    grpc.channel_ready_future(ch).result(timeout=30)
    yield ch
    ch.close()


def test_grpc_logit_bias_and_min_tokens(channel, pb, server):
    stub = pb[1].TesseraStub(channel)

    def gen(**kw):
        p = pb[0].SamplingParams(max_tokens=3, temperature=0, **kw)
        msgs = list(stub.Generate(pb[0].GenerateRequest(prompt=PROMPT, params=p), metadata=MD, timeout=120))
        return [i for m in msgs for i in m.ids]

    base = gen()
    banned = gen(logit_bias={base[0]: -100.0})
    assert banned[0] != base[0]
    london = tokenize(server, " London")[0]
    assert gen(logit_bias={london: 100.0}) == [london] * 3
    assert len(gen(min_tokens=3)) == 3
    for kw in ({"logit_bias": {-1: 1.0}}, {"logit_bias": {99999999: 1.0}}, {"logit_bias": {5: 200.0}},
               {"min_tokens": 9}):
        with pytest.raises(grpc.RpcError) as e:
            gen(**kw)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kw


def test_grpc_reflection_lists_and_describes(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {"tessera.v1.Tessera", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= services
    pool = descriptor_pool.DescriptorPool(db)
    svc = pool.FindServiceByName("tessera.v1.Tessera")
    assert {m.name for m in svc.methods} >= {"Generate", "Chat", "ChatStream", "Tokenize", "Health", "ListModels"}
    sp = pool.FindMessageTypeByName("tessera.v1.SamplingParams")
    assert "logit_bias" in sp.fields_by_name and "min_tokens" in sp.fields_by_name
    assert pool.FindMethodByName("tessera.v1.Tessera.Generate").output_type.full_name == "tessera.v1.GenerateResponse"
    assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"]


def test_grpc_reflection_v1_one_stream_many_requests(channel):
    """grpcurl's way: one ServerReflectionInfo stream (v1), each request answered before the
    next is sent, the stream closed at the end; file_by_filename gives a parseable descriptor."""
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    answered = threading.Event()
    reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_by_filename="tessera.proto"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="tessera.v1.SamplingParams.LogitBiasEntry"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")]

    def requests():
        for q in reqs:
            answered.clear()
            yield q
            assert answered.wait(30), "no answer before the stream was closed"

    out = []
    for r in call(requests(), timeout=60):
        out.append(r)
        answered.set()
    assert len(out) == 4
    assert "tessera.v1.Tessera" in [s.name for s in out[0].list_services_response.service]
    for r in out[1:3]:
        fd = descriptor_pb2.FileDescriptorProto.FromString(r.file_descriptor_response.file_descriptor_proto[0])
        assert fd.name == "tessera.proto" and fd.package == "tessera.v1"
        assert "Tessera" in [s.name for s in fd.service]
    assert out[3].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
