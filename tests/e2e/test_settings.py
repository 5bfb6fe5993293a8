"""Every setting honoured or refused (issue 16), against a real `tessera serve`:
- OpenAI fields Tessera does not implement are a 400 naming the field (OpenAI SDK), unless
  their value asks for nothing; vLLM's stop_token_ids and best_of are honoured;
- the served id defaults to the model path's file name, --model-name gives aliases, and
  GET /v1/models/{id} answers each (%-escapes decoded);
- vLLM's /tokenize, /detokenize and /version, checked against HF `tokenizers`;
- out-of-range numeric flags of `serve` are errors naming the flag;
- gRPC: grpc.health.v1.Health (grpcio's health stub), 415 for a request that is not gRPC,
  INVALID_ARGUMENT for strings that are not UTF-8."""
import signal
import time
import subprocess
import sys
import urllib.parse

import grpc
import h2.connection
import h2.events
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # pinned: grpcio-health-checking

from serve_util import API_KEY, ROOT, Server, default_model, free_port, http, tessera_bin

sys.path.insert(0, str(ROOT / "tests" / "tokenizer"))
import tok_util  # noqa: E402  (the HF reference tokenizer of the default model)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


MSG = [{"role": "user", "content": "Hi"}]

# (field, a value that asks for something Tessera does not do)
REFUSED = [
    # response_format, tools and tool_choice are honoured now (test_structured.py)
    ("functions", [{"name": "f", "parameters": {"type": "object"}}]),
    ("function_call", {"name": "f"}),
    ("guided_json", {"type": "object"}),
    ("guided_regex", "a+"),
    ("use_beam_search", True),
    ("prompt_logprobs", 1),
    ("echo", True),   # chat: echo is for /v1/completions (test_oai_settings.py)
]


@pytest.mark.parametrize("field,value", REFUSED, ids=[f for f, _ in REFUSED])
def test_unsupported_field_is_refused(client, field, value):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="", messages=MSG, max_tokens=2, extra_body={field: value})
    body = ei.value.body
    assert body["param"] == field and body["code"] == "unsupported_parameter", body
    assert field in body["message"]


def test_best_of_answers_the_best_mean_logprob(server):
    body = {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 1.0, "seed": 7, "ignore_eos": True}
    # the same seeds run as n=4 with logprobs: choice i of both requests is the same sample
    st, all4 = http(server, "POST", "/v1/completions", {**body, "n": 4, "logprobs": 0})
    assert st == 200, all4
    mean = [sum(c["logprobs"]["token_logprobs"]) / len(c["logprobs"]["token_logprobs"]) for c in all4["choices"]]
    order = sorted(range(4), key=lambda i: (-mean[i], i))
    texts = [c["text"] for c in all4["choices"]]
    assert len(set(texts)) > 1, texts
    st, j = http(server, "POST", "/v1/completions", {**body, "n": 2, "best_of": 4})
    assert st == 200, j
    assert [c["text"] for c in j["choices"]] == [texts[order[0]], texts[order[1]]], (j, mean)
    assert [c["index"] for c in j["choices"]] == [0, 1]
    assert all(c.get("logprobs") is None for c in j["choices"]), j   # ranked by logprobs, not shown
    assert j["usage"]["completion_tokens"] == 4 * 6
    for bad, code in (({"best_of": 1, "n": 2}, "invalid_value"), ({"best_of": 3, "stream": True}, "unsupported_parameter")):
        st, e = http(server, "POST", "/v1/completions", {**body, **bad})
        assert st == 400 and e["error"]["param"] == "best_of" and e["error"]["code"] == code, e


def test_stop_token_ids_end_the_output(server):
    body = {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    st, full = http(server, "POST", "/v1/completions", body)
    assert st == 200, full
    text = full["choices"][0]["text"]
    st, t = http(server, "POST", "/tokenize", {"prompt": text, "add_special_tokens": False})
    ids = t["tokens"]
    k = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i])   # the first new id past two tokens
    st, j = http(server, "POST", "/v1/completions", {**body, "stop_token_ids": [ids[k]]})
    assert st == 200, j
    c = j["choices"][0]
    assert c["finish_reason"] == "stop" and j["usage"]["completion_tokens"] in (k, k + 1), j
    st, head = http(server, "POST", "/detokenize", {"tokens": ids[:k]})
    assert c["text"].startswith(head["prompt"]) and len(c["text"]) < len(text), (c["text"], text)
    st, j = http(server, "POST", "/v1/completions", {**body, "stop_token_ids": [10_000_000]})
    assert st == 400 and j["error"]["param"] == "stop_token_ids", j


def test_refused_on_completions_too_and_harmless_values_accepted(server, client):
    st, j = http(server, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 2, "guided_regex": "a+"})
    assert st == 400 and j["error"]["param"] == "guided_regex", j
    # values that ask for nothing (SDK defaults) still work
    r = client.chat.completions.create(
        model="", messages=MSG, max_tokens=2, temperature=0, n=2, response_format={"type": "text"}, tools=[],
        tool_choice="none", logit_bias={}, extra_body={"best_of": 2, "stop_token_ids": [], "min_tokens": 0})
    assert len(r.choices) == 2


def test_default_served_id_is_the_file_name(client, server):
    ids = [m.id for m in client.models.list().data]
    assert ids == [default_model().stem]
    st, j = http(server, "GET", "/v1/models/" + urllib.parse.quote(ids[0]))
    assert st == 200 and j["id"] == ids[0] and j["object"] == "model"
    st, _ = http(server, "GET", "/v1/models/nope")
    assert st == 404


def test_model_name_aliases():
    s = Server(["--model-name", "my model/v1", "--model-name", "alias-2"], log_name="settings-names")
    try:
        c = openai.OpenAI(base_url=s.base + "/v1", api_key="none", max_retries=0, timeout=120)
        assert [m.id for m in c.models.list().data] == ["my model/v1", "alias-2"]
        for name in ("my model/v1", "alias-2"):
            r = c.completions.create(model=name, prompt="a", max_tokens=1)
            assert r.choices[0].text is not None
            st, j = http(s, "GET", "/v1/models/" + urllib.parse.quote(name, safe=""))
            assert st == 200 and j["id"] == name, j
        with pytest.raises(openai.NotFoundError):
            c.completions.create(model="other", prompt="a", max_tokens=1)
        st, _ = http(s, "GET", "/v1/models/my%2", key=None)
        assert st == 404
        # gRPC lists the aliases too and accepts them as model
        with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
            lm = ch.unary_unary("/tessera.v1.Tessera/ListModels")(b"", timeout=30)
            assert b"my model/v1" in lm and b"alias-2" in lm
            tok = ch.unary_unary("/tessera.v1.Tessera/Tokenize")
            assert len(tok(b"\x0a\x07alias-2\x12\x02hi", timeout=30)) > 0   # model "alias-2", text "hi"
            with pytest.raises(grpc.RpcError) as ei:
                tok(b"\x0a\x05other\x12\x02hi", timeout=30)
            assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        # draining (SIGTERM with a request running): gRPC health says NOT_SERVING
        stream = c.completions.create(model="alias-2", prompt="Once upon a time", max_tokens=256, stream=True,
                                      extra_body={"ignore_eos": True})
        next(iter(stream))
        s.proc.send_signal(signal.SIGTERM)
        # the signal reaches the server's loop asynchronously: ask until it has been seen (or 10 s pass)
        deadline, statuses = time.monotonic() + 10, []
        with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as ch:
            while time.monotonic() < deadline:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
                statuses.append(r.status)
                if r.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                time.sleep(0.05)
        assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, statuses
        assert sum(1 for _ in stream) > 0
    finally:
        assert s.stop() == 0, s.log_text()


@pytest.fixture(scope="module")
def reference():
    hf, prefix = tok_util.gguf_reference(default_model())
    return hf, prefix


def test_tokenize_detokenize_match_hf(server, reference):
    hf, prefix = reference
    text = "Hello, world! Ünïcode 日本語 and  spaces."
    want = hf.encode(text, add_special_tokens=False).ids
    st, j = http(server, "POST", "/tokenize", {"prompt": text, "add_special_tokens": False})
    assert st == 200, j
    assert j["tokens"] == want and j["count"] == len(want) and j["max_model_len"] == 2048
    st, j = http(server, "POST", "/tokenize", {"prompt": text})
    assert st == 200 and j["tokens"] == prefix + want, j
    st, j = http(server, "POST", "/detokenize", {"tokens": want})
    assert st == 200 and j["prompt"] == hf.decode(want, skip_special_tokens=False) == text, j
    st, j = http(server, "POST", "/detokenize", {"tokens": [-1]})
    assert st == 400 and j["error"]["param"] == "tokens"


def test_tokenize_messages(server, reference):
    hf, _ = reference
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    st, j = http(server, "POST", "/tokenize", {"messages": msgs, "add_generation_prompt": True})
    assert st == 200, j
    text = hf.decode(j["tokens"], skip_special_tokens=False)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHi<|im_end|>" in text
    # the same count the engine bills for that conversation
    r = openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0).chat.completions.create(
        model="", messages=msgs, max_tokens=1)
    assert r.usage.prompt_tokens == j["count"]


def test_version(server):
    st, j = http(server, "GET", "/version")
    assert st == 200 and j["version"] and j["version"] != "unknown", j


@pytest.mark.parametrize("flag,value", [("--cache-max-entry-count", "-3"), ("--cache-max-entry-count", "0"),
                                        ("--cache-max-entry-count", "nan"), ("--session-len", "-5"),
                                        ("--cache-block-seq-len", "-1"), ("--session-ttl", "-1")])
def test_out_of_range_flag_is_an_error(flag, value):
    try:
        p = subprocess.run([tessera_bin(), "serve", str(default_model()), "--server-port", str(free_port()), "--grpc-port", "0",
                            flag, value], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`serve {flag} {value}` started instead of refusing the value")
    assert p.returncode != 0 and flag in p.stderr, p.stderr


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


def test_grpc_health_check(channel):
    h = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tessera.v1.Tessera"):
        r = h.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as ei:
        h.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=30)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as ei:
        next(h.Watch(health_pb2.HealthCheckRequest(), timeout=30))
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_invalid_utf8_is_invalid_argument(channel):
    # TokenizeRequest{text = b"\xff\xfe"} packed by hand: protobuf's Python refuses to build it
    raw = channel.unary_unary("/tessera.v1.Tessera/Tokenize")
    with pytest.raises(grpc.RpcError) as ei:
        raw(b"\x12\x02\xff\xfe", metadata=[("authorization", f"Bearer {API_KEY}")], timeout=30)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in ei.value.details()
    ok = raw("\x12\x02hi".encode(), metadata=[("authorization", f"Bearer {API_KEY}")], timeout=30)
    assert len(ok) > 0


def test_grpc_top_logprobs_without_logprobs_is_refused(channel):
    # GenerateRequest{prompt "a", params{max_tokens 1, top_logprobs 2}}, as HTTP refuses it
    params = b"\x08\x01" + b"\x60\x02"
    req = b"\x12\x01a" + b"\x22" + bytes([len(params)]) + params
    gen = channel.unary_stream("/tessera.v1.Tessera/Generate")
    with pytest.raises(grpc.RpcError) as ei:
        list(gen(req, metadata=[("authorization", f"Bearer {API_KEY}")], timeout=60))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_logprobs" in ei.value.details()


def test_grpc_wrong_content_type_is_415(server):
    import socket
    sock = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/tessera.v1.Tessera/Health"),
                          (":authority", "127.0.0.1"), ("content-type", "application/json")], end_stream=True)
    sock.sendall(conn.data_to_send())
    status = None
    while status is None:
        data = sock.recv(65536)
        assert data, "the server closed the connection without answering"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"]
        sock.sendall(conn.data_to_send())
    sock.close()
    assert status == b"415"
