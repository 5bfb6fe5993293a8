"""Raw HTTP with curl (and a bare socket where curl cannot misbehave enough): keep-alive,
chunked uploads, and each way a client can get a request wrong -- every one answered with a
4xx and OpenAI's error object, after which the server still answers /health."""
import json
import os
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


@pytest.mark.parametrize("bad,param", [
    ({"max_tokens": "3"}, "max_tokens"), ({"messages": "hi"}, "messages"), ({"stop": 5}, "stop"),
    ({"stream": "yes"}, "stream"), ({"temperature": "hot"}, "temperature"), ({"seed": 1.5}, "seed"),
    ({"n": [2]}, "n"), ({"messages": [{"role": "user", "content": 5}]}, "messages"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_wrong_types(server, bad, param):
    code, body = curl(server, "/v1/chat/completions", data=json.dumps(dict(CHAT, **bad)))
    assert code == 400, body
    assert error_of(body)["param"] == param


def test_body_not_an_object(server):
    code, body = curl(server, "/v1/chat/completions", data="[1, 2, 3]")
    assert code == 400 and error_of(body)["code"] == "invalid_json"


def test_unknown_model(server):
    code, body = curl(server, "/v1/chat/completions", data=json.dumps(dict(CHAT, model="gpt-17")))
    assert code == 404 and error_of(body)["code"] == "model_not_found"


@pytest.mark.parametrize("k,v", [("temperature", -1), ("temperature", 2.5), ("top_p", 0), ("top_p", 1.5),
                                 ("top_k", -2), ("min_p", 1.5), ("repetition_penalty", 0), ("max_tokens", 0),
                                 ("n", 99), ("presence_penalty", 3), ("frequency_penalty", -3),
                                 ("top_logprobs", 50)])
def test_out_of_range(server, k, v):
    code, body = curl(server, "/v1/chat/completions", data=json.dumps(dict(CHAT, **{k: v}, logprobs=True)))
    assert code == 400, (k, v, body)
    assert error_of(body)["param"] == k


def test_prompt_longer_than_session(server):
    code, body = curl(server, "/v1/completions", data=json.dumps({"prompt": "hello " * 4000, "max_tokens": 4}))
    assert code == 400, body
    error_of(body)
    code, body = curl(server, "/v1/chat/completions",
                      data=json.dumps(dict(CHAT, messages=[{"role": "user", "content": "hello " * 4000}], stream=True)))
    assert code == 400, body   # rejected before the stream starts, not as an event inside it
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


def test_head_has_no_body(server):
    # HEAD gets GET's status and headers (Content-Length included) but no body: a second request
    # on the same connection must find its answer right after the first one's headers
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 15" in head, data
    assert rest.startswith(b"HTTP/1.1 200"), data
    assert rest.endswith(b'{"status":"ok"}'), data
    code, body = curl(server, "/v1/models", "-I")
    assert code == 200 and "object" not in body


def test_n_choices_streaming_shape(server):
    req = dict(CHAT, n=2, max_tokens=4, stream=True, stream_options={"include_usage": True})
    code, body = curl(server, "/v1/chat/completions", "-N", data=json.dumps(req))
    assert code == 200, body
    events = [l[6:] for l in body.splitlines() if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage = [c for c in chunks if c.get("usage")]
    assert len(usage) == 1 and usage[0] is chunks[-1] and usage[0]["choices"] == []
    assert usage[0]["usage"]["completion_tokens"] >= 2
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1
    for i in (0, 1):
        mine = [c["choices"][0] for c in chunks[:-1] if c["choices"] and c["choices"][0]["index"] == i]
        assert mine, f"no chunks for choice {i}"
        assert all(len(c["choices"]) == 1 for c in chunks[:-1])
        assert mine[0]["delta"].get("role") == "assistant"
        assert all("role" not in m["delta"] for m in mine[1:])
        finishes = [m["finish_reason"] for m in mine if m["finish_reason"]]
        assert finishes == [mine[-1]["finish_reason"]] and finishes[0] in ("stop", "length")
    texts = ["".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"]
                     and c["choices"][0]["index"] == i) for i in (0, 1)]
    assert texts[0] == texts[1]   # greedy: both choices agree


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
        t0, data = time.time(), b""
        while True:   # the answer may come in several segments; the server then closes
            b = s.recv(4096)
            if not b:
                break
            data += b
        assert data.startswith(b"HTTP/1.1 408"), data
        assert data.endswith(b"}") and error_of(data.partition(b"\r\n\r\n")[2])["code"]
        assert time.time() - t0 < 10


def test_trickled_request_times_out(server):
    # slow-loris that keeps sending a byte now and then: the whole request must still arrive
    # within --read-timeout, so trickling does not keep the connection (and its buffer) alive
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        t0, data = time.time(), b""
        s.settimeout(0.5)
        while time.time() - t0 < 12 and not data:
            try:
                s.sendall(b"X-Slow: y\r\n")
                data = s.recv(4096)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert data.startswith(b"HTTP/1.1 408"), data
        assert time.time() - t0 < 10


def test_half_open_connection(server):
    # the client sends half a request and shuts its sending side: the server answers (400: the
    # request can never complete) or closes, and does not hold the connection open
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"prompt\"")
        s.shutdown(socket.SHUT_WR)
        t0, data = time.time(), b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        assert time.time() - t0 < 10
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_disconnect_mid_body(server):
    # a client that goes away in the middle of its body leaves nothing behind: no request, and
    # no connection (by the server's gauge and by its open file descriptors).  Checked well
    # within --read-timeout (2 s), so that the timeout cannot hide a connection kept after EOF.
    base, base_fds = metrics(server)["tessera_connections"], open_fds(server.proc.pid)
    t0 = time.time()
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mess")
        s.close()
    while True:
        m, fds = metrics(server), open_fds(server.proc.pid)
        if (m["tessera_connections"] <= base and fds <= base_fds) or time.time() - t0 > 1.0:
            break
        time.sleep(0.05)
    assert time.time() - t0 < 1.9, "too slow to tell a leak from the read timeout"
    assert m["tessera_connections"] <= base, (m["tessera_connections"], base)
    assert fds <= base_fds, (fds, base_fds)
    assert m["tessera_requests_running"] == 0 and m["tessera_requests_waiting"] == 0


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
