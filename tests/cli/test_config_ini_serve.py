"""`tessera serve` honours a workspace's config.ini (issue 16): max_batch_size and
max_context_token_num are the ones in force unless a flag says otherwise (flag > config.ini >
default), printed in the engine's start-up line; the batch size also bounds the requests the
server runs at once.  TurboMind's step_length, cache_chunk_size and use_context_fmha, which no
command reads, are no longer written."""
import os
import socket
import subprocess
import time

import pytest

from test_config_ini import set_knobs  # noqa: E402  (tests/cli is on sys.path under pytest)

ENV = dict(os.environ, TESSERA_LOG="info")


@pytest.fixture(scope="module")
def ws(tessera, smollm2, tmp_path_factory):
    d = tmp_path_factory.mktemp("ini_serve") / "smollm2"
    r = subprocess.run([tessera, "convert", smollm2, "--dst", d], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return d


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_line(tessera, ws, *flags):
    """Starts serve, returns its 'engine:' line once it listens, then stops it."""
    port = free_port()
    p = subprocess.Popen([tessera, "serve", ws, "--server-port", str(port), "--grpc-port", "0", *map(str, flags)],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = p.stderr.readline()
            assert line or p.poll() is None, "serve exited before starting"
            if "engine:" in line and "max_batch_size" in line:
                return line
        raise AssertionError("no engine line")
    finally:
        p.terminate()
        p.wait(timeout=60)


def test_serve_honours_batch_and_prefill_knobs(tessera, ws):
    ini = (ws / "config.ini").read_text()
    for key in ["step_length", "cache_chunk_size", "use_context_fmha"]:
        assert f"\n{key} = " not in ini, key
    set_knobs(ws, max_batch_size=3, max_context_token_num=96)
    line = serve_line(tessera, ws)
    assert "max_batch_size 3," in line and "max_prefill_token_num 96," in line, line
    # a flag wins over config.ini
    line = serve_line(tessera, ws, "--max-batch-size", 5, "--max-prefill-token-num", 128)
    assert "max_batch_size 5," in line and "max_prefill_token_num 128," in line, line


def test_turbomind_keys_nothing_reads_are_warned_about(tessera, ws):
    # an older workspace (or a TurboMind one) may still carry them: said, not silently dropped
    ini = (ws / "config.ini").read_text()
    (ws / "config.ini").write_text(ini + "step_length = 1\nuse_context_fmha = 1\n")
    try:
        p = subprocess.run([tessera, "generate", ws, "--prompt-ids", "1,2", "--max-new-tokens", "1"], capture_output=True,
                           text=True, timeout=300, env=ENV)
    finally:
        (ws / "config.ini").write_text(ini)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stderr.count("step_length, use_context_fmha: TurboMind's, no effect in Tessera") == 1, p.stderr[-2000:]


def test_default_batch_size_follows_the_kv_pool(tessera, smollm2):
    # issue 15: neither a flag nor config.ini (a GGUF file): the pool's tokens / min(session_len,
    # 512) (a typical request; preemption covers longer ones), rounded, at least 1, at most 64 on
    # the CPU backend; a flag still wins
    small = ["--cache-block-seq-len", 16, "--session-len", 256]
    line = serve_line(tessera, smollm2, *small, "--cache-max-entry-count", 32)   # 512 tokens / 256
    assert "KV 32 blocks x 16 = 512 tokens" in line and "max_batch_size 2," in line, line
    line = serve_line(tessera, smollm2, *small, "--cache-max-entry-count", 8)    # 128 tokens: at least 1
    assert "max_batch_size 1," in line, line
    line = serve_line(tessera, smollm2, *small, "--cache-max-entry-count", 4096)  # 65536 / 256: the CPU cap
    assert "max_batch_size 64," in line, line
    line = serve_line(tessera, smollm2, *small, "--cache-max-entry-count", 32, "--max-batch-size", 7)
    assert "max_batch_size 7," in line, line
