"""Raw HTTP with curl (and a bare socket where curl cannot misbehave enough): keep-alive,
chunked uploads, and each way a client can get a request wrong -- every one answered with a
4xx and OpenAI's error object, after which the server still answers /health."""
import json
import socket
import subprocess
import time

import pytest

from serve_util import API_KEY, metrics

AUTH = ["-H", f"Authorization: Bearer {API_KEY}"]


def curl(server, path, *args, data=None, auth=True, timeout=120):
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    cmd += (AUTH if auth else []) + list(args)
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    r = subprocess.run(cmd + [server.base + path], input=data if isinstance(data, (bytes, type(None))) else data.encode(),
                       capture_output=True, timeout=timeout + 10)
    body, _, code = r.stdout.decode(errors="replace").rpartition("\n")
    return int(code), body


def error_of(body):
    e = json.loads(body)["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert e["message"]
    return e


@pytest.fixture(autouse=True)
def still_healthy(server):
    yield
    code, body = curl(server, "/health", auth=False)
    assert code == 200 and json.loads(body)["status"] == "ok"


CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}


def test_keep_alive(server):
    r = subprocess.run(["curl", "-sv"] + AUTH + [server.base + "/v1/models", server.base + "/v1/models", "--next"]
                       + AUTH + ["-H", "Content-Type: application/json", "--data-binary", json.dumps(CHAT),
                                 server.base + "/v1/chat/completions"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("Re-using existing connection") + r.stderr.count("Reusing existing connection") >= 2, r.stderr
    assert r.stdout.count('"object":"list"') == 2 and "chat.completion" in r.stdout


def test_chunked_upload(server):
    code, body = curl(server, "/v1/chat/completions", "-H", "Transfer-Encoding: chunked", data=json.dumps(CHAT))
    assert code == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] is not None


def test_sse_stream_ends_with_done(server):
    code, body = curl(server, "/v1/chat/completions", "-N", data=json.dumps(dict(CHAT, stream=True)))
    assert code == 200
    events = [l[6:] for l in body.splitlines() if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")


def test_malformed_json(server):
    code, body = curl(server, "/v1/chat/completions", data='{"messages": [')
    assert code == 400 and error_of(body)["code"] == "invalid_json"


def test_wrong_types(server):
    for bad, param in ((dict(CHAT, max_tokens="3"), "max_tokens"), (dict(CHAT, messages="hi"), "messages"),
                       (dict(CHAT, stop=5), "stop"), (dict(CHAT, stream="yes"), "stream")):
        code, body = curl(server, "/v1/chat/completions", data=json.dumps(bad))
        assert code == 400, body
        assert error_of(body)["param"] == param


def test_unknown_model(server):
    code, body = curl(server, "/v1/chat/completions", data=json.dumps(dict(CHAT, model="gpt-17")))
    assert code == 404 and error_of(body)["code"] == "model_not_found"


def test_out_of_range(server):
    for k, v in (("temperature", -1), ("top_p", 0), ("top_p", 1.5), ("max_tokens", 0), ("n", 99),
                 ("presence_penalty", 3), ("top_logprobs", 50)):
        code, body = curl(server, "/v1/chat/completions", data=json.dumps(dict(CHAT, **{k: v}, logprobs=True)))
        assert code == 400, (k, v, body)
        assert error_of(body)["param"] == k


def test_prompt_longer_than_session(server):
    code, body = curl(server, "/v1/completions", data=json.dumps({"prompt": "hello " * 4000, "max_tokens": 4}))
    assert code == 400, body
    error_of(body)


def test_invalid_utf8(server):
    code, body = curl(server, "/v1/completions", data=b'{"prompt": "caf\xc3\x28 \xff", "max_tokens": 2}')
    assert code == 400 and error_of(body)["code"] == "invalid_utf8"


def test_oversized_body(server):
    code, body = curl(server, "/v1/completions", data=json.dumps({"prompt": "x" * 100_000, "max_tokens": 1}))
    assert code == 413 and error_of(body)["code"] == "request_too_large"


def test_oversized_body_chunked(server):
    code, body = curl(server, "/v1/completions", "-H", "Transfer-Encoding: chunked",
                      data=json.dumps({"prompt": "x" * 100_000, "max_tokens": 1}))
    assert code == 413


def test_oversized_headers(server):
    code, body = curl(server, "/v1/models", "-H", "X-Big: " + "a" * 40_000)
    assert code == 431
    error_of(body)


def test_unknown_route_and_method(server):
    code, body = curl(server, "/v1/nothing")
    assert code == 404 and error_of(body)
    code, body = curl(server, "/v1/chat/completions")   # GET
    assert code == 405 and error_of(body)


def test_api_key_required(server):
    code, body = curl(server, "/v1/models", auth=False)
    assert code == 401 and error_of(body)["type"] == "authentication_error"
    code, body = curl(server, "/v1/models", "-H", "Authorization: Bearer wrong", auth=False)
    assert code == 401
    code, body = curl(server, "/v1/models", "-H", "Authorization: Bearer second-key", auth=False)
    assert code == 200
    code, _ = curl(server, "/metrics", auth=False)
    assert code == 401
    code, _ = curl(server, "/health", auth=False)
    assert code == 200


def test_garbage_request_line(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 400")


def test_slow_request_times_out(server):
    # a request that starts but never finishes (slow-loris) gets 408 after --read-timeout
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
        t0 = time.time()
        data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 408"), data
        assert time.time() - t0 < 10
        assert s.recv(4096) == b""   # and the connection is closed


def test_idle_connection_closed(server):
    # half-open / idle: nothing sent, the server closes it after --idle-timeout
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        t0 = time.time()
        assert s.recv(4096) == b""
        assert time.time() - t0 < 15


def test_interactive_session(server):
    turn = {"prompt": "My name is Ada.", "session_id": 7, "interactive_mode": True, "request_output_len": 6,
            "temperature": 0}
    code, body = curl(server, "/v1/chat/interactive", data=json.dumps(turn))
    assert code == 200, body
    r = json.loads(body)
    assert r["finish_reason"] in ("stop", "length") and r["tokens"] >= 1
    code, body = curl(server, "/v1/chat/interactive", data=json.dumps(dict(turn, prompt="What is my name?", stream=True)))
    assert code == 200
    lines = [json.loads(l) for l in body.splitlines() if l.strip()]
    assert lines[-1]["finish_reason"] in ("stop", "length")
    code, body = curl(server, "/v1/chat/interactive", data=json.dumps({"prompt": "", "session_id": 7,
                                                                         "interactive_mode": False}))
    assert code == 200


def test_metrics_text(server):
    m = metrics(server)
    for name in ("tessera_requests_running", "tessera_requests_waiting", "tessera_kv_blocks_free",
                 "tessera_kv_blocks_used", "tessera_prefix_cache_hit_tokens_total", "tessera_prompt_tokens_total",
                 "tessera_generation_tokens_total", "tessera_time_to_first_token_seconds_count",
                 "tessera_time_per_output_token_seconds_count"):
        assert name in m, name
    assert m["tessera_time_to_first_token_seconds_count"] >= 1
