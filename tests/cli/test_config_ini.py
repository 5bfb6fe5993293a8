"""`tessera generate` and `tessera chat` honour a workspace's config.ini (issue 11): its
session_len, cache_max_entry_count and cache_block_seq_len are the ones in force (printed on
stderr at start), a prompt that leaves no room is refused naming session_len, and generation
stops where the session or the KV pool is full.  Both commands run on the engine, which reads
the knobs; the single-sequence loop they used before ignored them."""
import os
import re
import subprocess

import pytest

ENV = dict(os.environ, TESSERA_LOG="info")
PROMPT = "The three most important inventions in history are"


def run(tessera, *args, stdin=None):
    return subprocess.run([tessera, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=300,
                          env=ENV)


@pytest.fixture(scope="module")
def ws(tessera, smollm2, tmp_path_factory):
    d = tmp_path_factory.mktemp("ini") / "smollm2"
    r = run(tessera, "convert", smollm2, "--dst", d)
    assert r.returncode == 0, r.stderr
    return d


def set_knobs(ws, **knobs):
    ini = (ws / "config.ini").read_text()
    for k, v in knobs.items():
        ini, n = re.subn(rf"^{k} = .*$", f"{k} = {v}", ini, flags=re.M)
        assert n == 1, k
    (ws / "config.ini").write_text(ini)


def generate(tessera, ws, *args):
    return run(tessera, "generate", ws, "--temperature", 0, "--ignore-eos", "--print-ids", *args)


def finished(p):
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.search(r"\[prompt (\d+) tokens .* (\d+) tokens generated, finish: (\w+)\]", p.stderr)
    assert m, p.stderr[-2000:]
    assert len(p.stdout.split()) == int(m.group(2))
    return int(m.group(1)), int(m.group(2)), m.group(3)


def test_generate_honours_session_len_and_kv_knobs(tessera, ws):
    set_knobs(ws, session_len=64, cache_block_seq_len=16, cache_max_entry_count=8)
    p = generate(tessera, ws, "--prompt", PROMPT, "--max-new-tokens", 200)
    n_prompt, n_gen, finish = finished(p)
    # the knobs in force, as the engine prints them
    assert "KV 8 blocks x 16 = 128 tokens" in p.stderr and "session_len 64" in p.stderr, p.stderr[-2000:]
    # stopped where the session is full, not at --max-new-tokens
    assert n_prompt + n_gen == 64 and finish == "length"
    # a prompt that fills the session is refused, naming the knob
    p = generate(tessera, ws, "--prompt-ids", ",".join(["1000"] * 64), "--max-new-tokens", 4)
    assert p.returncode == 1 and "session_len 64" in p.stderr, p.stderr[-2000:]
    # a pool smaller than the session: generation ends where the KV cache is full
    set_knobs(ws, session_len=4096, cache_block_seq_len=16, cache_max_entry_count=3)
    p = generate(tessera, ws, "--prompt", PROMPT, "--max-new-tokens", 200)
    n_prompt, n_gen, finish = finished(p)
    assert "KV 3 blocks x 16 = 48 tokens" in p.stderr and "session_len 4096" in p.stderr, p.stderr[-2000:]
    assert n_prompt + n_gen == 48 and finish == "length"


def test_chat_honours_session_len(tessera, ws):
    set_knobs(ws, session_len=80, cache_block_seq_len=16, cache_max_entry_count=5)
    long_turn = " ".join(["word"] * 60)
    p = run(tessera, "chat", ws, "--temperature", 0, "--max-new-tokens", 512, stdin=f"Hi\n{long_turn}\n")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "KV 5 blocks x 16 = 80 tokens" in p.stderr and "session_len 80" in p.stderr, p.stderr[-2000:]
    turns = re.findall(r"finish (\w+) \| session (\d+)/(\d+)\]", p.stderr)
    # the first turn answered within the session; the long one was refused for lack of room
    assert len(turns) == 1 and turns[0][2] == "80" and int(turns[0][1]) <= 80, p.stderr[-2000:]
    assert "no room" in p.stderr and "session_len 80" in p.stderr


@pytest.mark.parametrize("rope", ["proportional", "su"])
def test_unimplemented_rope_scaling_type_is_refused_by_name(tessera, ws, rope):
    # issue 16: a RoPE scaling Tessera does not implement is refused by name, listing what is
    # (yarn and longrope are implemented now: tests/golden's llama_yarn and llama_longrope)
    set_knobs(ws, rope_scaling_type=rope)
    try:
        p = generate(tessera, ws, "--prompt", PROMPT, "--max-new-tokens", 2)
    finally:
        set_knobs(ws, rope_scaling_type="default")
    assert p.returncode == 1, p.stderr[-2000:]
    assert (f"rope_scaling_type '{rope}' is not supported (default, linear, dynamic, llama3, yarn, longrope are)"
            in p.stderr), p.stderr
