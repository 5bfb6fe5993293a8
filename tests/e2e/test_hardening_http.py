"""Hostile HTTP clients against a real `tessera serve` (issue 10, the HTTP half): a pipelined
flood in one write, the connection cap, a slow reader that never reads its stream, Origin and
Host checks with CORS preflights, trailing bytes after a JSON body, standard reason phrases,
floats given for integer parameters, and the bounded request queue.  Raw sockets where the
bytes matter; every check is against the server's answer, its /metrics and its log."""
import json
import socket
import threading
import time

import pytest

from serve_util import Server, http, metrics

ORIGIN_OK = "http://good.example"


@pytest.fixture(scope="module")
def hserver(serve_built, smollm2):
    s = Server(["--max-unsent-bytes", "16384", "--allowed-origins", f"{ORIGIN_OK},https://b.example",
                "--idle-timeout", "20"], log_name="hardening")
    yield s
    rc = s.stop()
    assert rc == 0, f"server exit {rc}: {s.log_text()}"


@pytest.fixture(scope="module")
def small(serve_built, smollm2):
    s = Server(["--max-connections", "6", "--max-queue", "1", "--max-batch-size", "1", "--max-held-bytes", "65536"],
               log_name="hardening_small")
    yield s
    rc = s.stop()
    assert rc == 0, f"server exit {rc}: {s.log_text()}"


def raw(server, data: bytes, read_until_close=True, timeout=30.0) -> bytes:
    """Sends data on a fresh connection and returns what comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        if not read_until_close:
            return s.recv(65536)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b


def status_line(resp: bytes) -> bytes:
    return resp.split(b"\r\n", 1)[0]


def post(server, path, body, headers=None, key=None):
    return http(server, "POST", path, body, headers=headers, key=key)


# ---------------------------------------------------------------- pipelined flood

def test_pipelined_flood_does_not_crash(hserver):
    # short requests, so one 64 KiB read holds thousands (the old code answered each from inside
    # the previous answer and overflowed its stack)
    n = 5000
    req = b"GET /x HTTP/1.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", hserver.port), timeout=60) as s:
        s.sendall(req * n + b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
        got = b""
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += b
    assert got.count(b"HTTP/1.1 404 Not Found\r\n") == n + 1   # every one answered, in one piece
    assert hserver.proc.poll() is None
    assert http(hserver, "GET", "/health", key=None)[0] == 200


def test_pipelined_flood_with_foreign_host(hserver):
    # the reproducer: a foreign Host is refused (421) and the connection closed
    resp = raw(hserver, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" * 5000)
    assert status_line(resp) == b"HTTP/1.1 421 Misdirected Request"
    assert resp.count(b"HTTP/1.1") == 1
    assert hserver.proc.poll() is None
    assert http(hserver, "GET", "/health", key=None)[0] == 200


# ---------------------------------------------------------------- reason phrases, trailing bytes

def test_uri_too_long_reason_phrase(hserver):
    resp = raw(hserver, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status_line(resp) == b"HTTP/1.1 414 URI Too Long"
    body = json.loads(resp.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "uri_too_long"


@pytest.mark.parametrize("tail", [b" x", b"{}", b"\n\n]", b"\x00"])
def test_trailing_garbage_is_400(hserver, tail):
    body = json.dumps({"model": "x", "prompt": "hi", "max_tokens": 1}).encode()
    st, j = post(hserver, "/v1/completions", body + tail)
    assert st == 400, j
    assert j["error"]["code"] == "invalid_json"


def test_trailing_whitespace_is_fine(hserver):
    body = json.dumps({"prompt": "hi", "max_tokens": 1}).encode() + b" \r\n\t\n"
    st, j = post(hserver, "/v1/completions", body)
    assert st == 200, j


# ---------------------------------------------------------------- floats for integers

INT_PARAMS = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]},
             ["max_tokens", "max_completion_tokens", "n", "seed", "top_k", "top_logprobs"]),
    "completion": ("/v1/completions", {"prompt": "hi"},
                   ["max_tokens", "max_completion_tokens", "n", "seed", "top_k", "logprobs"]),
    "interactive": ("/v1/chat/interactive", {"prompt": "hi"},
                    ["session_id", "request_output_len", "max_tokens", "n", "seed", "top_k"]),
}
CASES = [(api, param, v) for api, (_, _, params) in INT_PARAMS.items() for param in params
         for v in ("1e300", "-1e300", "1e20", "1.5", "1e999")]


@pytest.mark.parametrize("api,param,value", CASES)
def test_integer_params_out_of_range(hserver, api, param, value):
    path, base, _ = INT_PARAMS[api]
    extra = {"logprobs": True} if param == "top_logprobs" else {}
    doc = json.dumps({**base, **extra})[:-1] + f', "{param}": {value}}}'
    st, j = post(hserver, path, doc.encode())
    assert st == 400, (param, value, j)
    assert j["error"]["param"] == param, j
    # out of range is said as such (checked before any conversion); a fraction is the wrong type
    assert j["error"]["code"] == ("invalid_type" if value == "1.5" else "invalid_value"), j
    assert hserver.proc.poll() is None


# ---------------------------------------------------------------- Origin and Host

def test_foreign_origin_refused(hserver):
    st, j = post(hserver, "/v1/completions", b'{"prompt":"hi","max_tokens":1}',
                 headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert st == 403 and j["error"]["code"] == "origin_not_allowed"
    assert metrics(hserver)["tessera_origin_refused_total"] >= 1


def test_own_and_allowed_origins(hserver):
    for origin in (f"http://127.0.0.1:{hserver.port}", f"http://localhost:{hserver.port}", ORIGIN_OK):
        req = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{hserver.port}\r\nOrigin: {origin}\r\n"
               f"Content-Type: application/json\r\nContent-Length: 30\r\nConnection: close\r\n\r\n"
               '{"prompt":"hi","max_tokens":1}').encode()
        resp = raw(hserver, req)
        assert status_line(resp) == b"HTTP/1.1 200 OK", resp
        assert f"Access-Control-Allow-Origin: {origin}\r\n".encode() in resp
    # another port on localhost is another origin
    st, _ = http(hserver, "GET", "/v1/models", headers={"Origin": "http://localhost:1"}, key=None)
    assert st == 403


def test_cors_preflight(hserver):
    def preflight(origin):
        return raw(hserver, (f"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{hserver.port}\r\n"
                             f"Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n"
                             "Access-Control-Request-Headers: content-type, authorization\r\n"
                             "Connection: close\r\n\r\n").encode())
    ok = preflight("https://b.example")
    assert status_line(ok) == b"HTTP/1.1 200 OK"
    head = ok.split(b"\r\n\r\n")[0].decode()
    assert "Access-Control-Allow-Origin: https://b.example" in head
    assert "Access-Control-Allow-Methods: GET, POST, OPTIONS" in head
    assert "Access-Control-Allow-Headers: content-type, authorization" in head
    bad = preflight("https://evil.example")
    assert status_line(bad) == b"HTTP/1.1 403 Forbidden"
    assert b"Access-Control-Allow-Origin" not in bad


@pytest.mark.parametrize("host", ["evil.example", "evil.example:1234", "127.0.0.2", "[::2]:5"])
def test_foreign_host_refused(hserver, host):
    resp = raw(hserver, f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert status_line(resp) == b"HTTP/1.1 421 Misdirected Request"
    assert json.loads(resp.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:80", "127.0.0.1", "[::1]:9"])
def test_loopback_hosts_accepted(hserver, host):
    resp = raw(hserver, f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert status_line(resp) == b"HTTP/1.1 200 OK"


# ---------------------------------------------------------------- backpressure

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_is_dropped(hserver):
    before = metrics(hserver)
    rss0 = rss_kib(hserver.proc.pid)
    body = json.dumps({"messages": [{"role": "user", "content": "Count to a thousand."}], "stream": True,
                       "max_tokens": 1500, "ignore_eos": True, "n": 4, "logprobs": True,
                       "top_logprobs": 20}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)   # and never read
    s.connect(("127.0.0.1", hserver.port))
    s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            # the server keeps serving others meanwhile
            st, _ = http(hserver, "GET", "/v1/models", key=None, timeout=10)
            assert st == 200
            m = metrics(hserver)
            if m["tessera_slow_client_drops_total"] > before["tessera_slow_client_drops_total"]:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the slow reader was never dropped: " + hserver.log_text())
        # its 4 requests end cancelled, not left running
        cancelled = 'tessera_requests_total{api="chat",finish_reason="cancelled"}'
        deadline = time.time() + 30
        while metrics(hserver).get(cancelled, 0) < before.get(cancelled, 0) + 4 and time.time() < deadline:
            time.sleep(0.2)
        assert metrics(hserver).get(cancelled, 0) >= before.get(cancelled, 0) + 4
        assert "unsent bytes (--max-unsent-bytes 16384)" in hserver.log_text()
        assert rss_kib(hserver.proc.pid) - rss0 < 64 * 1024
    finally:
        s.close()
    st, j = post(hserver, "/v1/completions", {"prompt": "hi", "max_tokens": 2})
    assert st == 200, j


# ---------------------------------------------------------------- connection cap and queue

def test_connection_cap(small):
    time.sleep(0.5)   # the start-up health checks' connections are closed
    held = [socket.create_connection(("127.0.0.1", small.port), timeout=10) for _ in range(6)]
    try:
        time.sleep(0.3)
        resp = raw(small, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_line(resp) == b"HTTP/1.1 503 Service Unavailable", resp
        assert b"Retry-After: 1\r\n" in resp
        assert json.loads(resp.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_many_connections"
    finally:
        for h in held:
            h.close()
    time.sleep(0.3)
    assert http(small, "GET", "/health", key=None)[0] == 200
    assert metrics(small)["tessera_connections_refused_total"] >= 1


def test_queue_full_is_429(small):
    # room for 1 running + 1 waiting: of 5 at once, some get 429 + Retry-After, none a 5xx
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 24, "ignore_eos": True}).encode()
    results = []

    def one():
        req = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        results.append(raw(small, req, timeout=120))

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(int(status_line(r).split()[1]) for r in results)
    assert len(codes) == 5
    assert codes.count(200) >= 2 and codes.count(429) >= 1 and set(codes) <= {200, 429}, codes
    r429 = next(r for r in results if status_line(r).startswith(b"HTTP/1.1 429"))
    assert status_line(r429) == b"HTTP/1.1 429 Too Many Requests"
    assert b"Retry-After: 1\r\n" in r429
    assert json.loads(r429.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "queue_full"
    st, j = post(small, "/v1/completions", {"prompt": "hi", "max_tokens": 2})
    assert st == 200, j


def test_held_bytes_bounded_globally(small):
    # one client holds 50 KB of an unfinished body; another's 30 KB would pass --max-held-bytes
    # (64 KiB over all connections): it gets 503 and the server keeps both bounded
    hold = socket.create_connection(("127.0.0.1", small.port), timeout=10)
    try:
        hold.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 60000\r\n\r\n" + b" " * 50000)
        deadline = time.time() + 10
        while metrics(small)["tessera_held_request_bytes"] < 50000 and time.time() < deadline:
            time.sleep(0.1)
        assert metrics(small)["tessera_held_request_bytes"] >= 50000
        body = b'{"prompt":"hi","max_tokens":1}' + b" " * 30000
        resp = raw(small, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert status_line(resp) == b"HTTP/1.1 503 Service Unavailable", resp[:300]
        assert json.loads(resp.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "server_busy"
        assert metrics(small)["tessera_held_refused_total"] >= 1
    finally:
        hold.close()
    deadline = time.time() + 10
    while metrics(small)["tessera_held_request_bytes"] > 0 and time.time() < deadline:
        time.sleep(0.1)
    body = b'{"prompt":"hi","max_tokens":1}' + b" " * 30000
    st, j = post(small, "/v1/completions", body)
    assert st == 200, j
