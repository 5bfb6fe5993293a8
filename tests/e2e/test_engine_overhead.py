"""The engine's throughput items of issue 15 that a CPU shows, against a real `tessera serve`:
a huge prompt is tokenized off the libuv loop (a worker thread), so /health and other clients
are answered meanwhile, and clients that leave during that cost nothing; /metrics reports the
time of engine steps inside the forward pass (busy) beside their wall time."""
import json
import random
import socket
import threading
import time

import pytest

from serve_util import Server, http, metrics


@pytest.fixture(scope="module")
def tserver(serve_built, smollm2):
    s = Server([], log_name="engine_overhead")
    yield s
    rc = s.stop()
    assert rc == 0, f"server exit {rc}: {s.log_text()}"


def huge_prompt(n_chars=4_000_000):
    # random words: the tokenizer's word cache cannot shortcut them (0.1-0.5 s per million
    # characters on the CI machine, far longer than a /health answer may take)
    rnd = random.Random(15)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words, n = [], 0
    while n < n_chars:
        w = "".join(rnd.choice(letters) for _ in range(rnd.randint(2, 9)))
        words.append(w)
        n += len(w) + 1
    return " ".join(words)


def post_raw(server, body: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=120)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    return s


def test_health_answers_while_a_huge_prompt_is_tokenized(tserver):
    body = json.dumps({"prompt": huge_prompt(), "max_tokens": 1}).encode()
    out = {}

    def big():
        t = time.time()
        out["answer"] = http(tserver, "POST", "/v1/completions", body, timeout=300)
        out["s"] = time.time() - t

    th = threading.Thread(target=big)
    th.start()
    lat = []
    while th.is_alive():
        t = time.time()
        st, _ = http(tserver, "GET", "/health", timeout=30)
        lat.append(time.time() - t)
        assert st == 200
        time.sleep(0.01)
    th.join()
    st, ans = out["answer"]
    # ~2.2M tokens: tokenized, then refused for session_len with the numbers
    assert st == 400 and ans["error"]["code"] == "context_length_exceeded", (st, ans)
    assert "session_len 2048" in ans["error"]["message"], ans
    assert max(lat) < 0.2, f"/health took up to {max(lat):.3f} s while a prompt was tokenized ({out['s']:.2f} s)"
    # the probes overlapped it (how long tokenizing takes depends on the machine: count the probes
    # that ran while the request was open, not seconds)
    assert len(lat) >= 5, (out["s"], len(lat))
    # clients gone while their prompts are tokenized: the calls end when the workers are done
    body = json.dumps({"prompt": huge_prompt(1_000_000), "max_tokens": 4, "stream": True}).encode()
    socks = [post_raw(tserver, body) for _ in range(3)]
    time.sleep(0.05)
    for s in socks:
        s.close()
    deadline = time.time() + 60
    while time.time() < deadline and metrics(tserver)["tessera_requests_running"] > 0:
        time.sleep(0.2)
    # the server goes on serving generations, and every KV block is free again
    st, ans = http(tserver, "POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 2})
    assert st == 200 and ans["usage"]["completion_tokens"] == 2, ans
    st, ans = http(tserver, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert st == 200 and ans["usage"]["completion_tokens"] == 2, ans
    assert metrics(tserver)["tessera_kv_blocks_used"] == 0


def test_metrics_report_step_busy_and_wall_time(tserver):
    m0 = metrics(tserver)
    st, ans = http(tserver, "POST", "/v1/completions", {"prompt": "One two three", "max_tokens": 6, "ignore_eos": True})
    assert st == 200, ans
    m1 = metrics(tserver)
    steps = m1["tessera_engine_steps_total"] - m0["tessera_engine_steps_total"]
    busy = m1["tessera_step_busy_seconds_total"] - m0["tessera_step_busy_seconds_total"]
    wall = m1["tessera_step_wall_seconds_total"] - m0["tessera_step_wall_seconds_total"]
    assert steps >= 6, (m0, m1)
    assert 0 < busy <= wall, (busy, wall)
    assert wall < ans["usage"]["completion_tokens"] * 60, wall   # seconds, not a unit mix-up
