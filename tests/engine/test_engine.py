"""The continuous-batching engine on the default model (CPU backend), through
build/tests/engine_check (tests/engine/engine_check.c): greedy outputs identical alone, in a
batch of 32 with prefix hits, under forced preemption and with chunked prefill; sessions
prefill only new tokens and match a session-less replay; cancellations leave every block
free."""
import os
import pathlib
import re
import subprocess

import pytest

from tsr_paths import default_model, tessera_bin


def engine_check() -> str:
    b = pathlib.Path(tessera_bin()).resolve().parent.parent / "tests" / "engine_check"
    if not os.access(b, os.X_OK):
        pytest.fail(f"engine_check not built at {b} (it is part of the default build)")
    return str(b)


def run(*args, timeout=300):
    model = default_model()
    if not model.exists():
        pytest.fail(f"default model missing at {model}: run bash ci/fetch-model.sh")
    # The default model's Q4_1 blocks: every batch size takes the 8-bit integer kernels, whose
    # result for a token does not depend on what else is in its step (the f32 tile path taken
    # for batches of 32+ by default computes the same product with other rounding).
    env = dict(os.environ, TESSERA_QMM_GEMM_TOK="0")
    p = subprocess.run([engine_check(), str(model), *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"engine_check {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def outputs(text):
    reqs = {int(m.group(1)): m.group(2).split() for m in re.finditer(r"^req (\d+):(.*)$", text, re.M)}
    stats = dict(re.findall(r"(\w+) (\d+)", re.search(r"^stats:(.*)$", text, re.M).group(1)))
    return reqs, {k: int(v) for k, v in stats.items()}


def test_same_greedy_output_alone_batched_preempted_chunked():
    alone, _ = outputs(run("batch", "alone"))
    base, st = outputs(run("batch", "base"))
    assert len(base) == 32
    assert st["prefix_hit_tokens"] > 0, "the batch had no prefix-cache hits"
    pre, st_pre = outputs(run("batch", "preempt"))
    assert st_pre["preemptions"] > 0, "the tiny pool forced no preemption"
    chunk, st_chunk = outputs(run("batch", "chunked"))
    assert st_chunk["steps"] > st["steps"], "chunked prefill took no more steps than unchunked"
    for i, toks in alone.items():
        assert base[i] == toks, f"request {i}: batched output differs from alone"
    for i in base:
        assert pre[i] == base[i], f"request {i}: output differs under preemption"
        assert chunk[i] == base[i], f"request {i}: output differs with chunked prefill"
    for s in (st, st_pre, st_chunk):
        assert s["blocks_used"] == 0


def test_session_prefills_only_new_tokens_and_matches_replay():
    out = run("session")
    turns = re.findall(r"turn (\d+): prompt (\d+) tokens, cached (\d+), prefilled (\d+) \(new (\d+)\)", out)
    assert len(turns) == 5
    for t, prompt, cached, fed, new in turns:
        assert int(fed) == int(new) + (int(t) > 0), out
        if int(t) > 0:
            assert int(cached) > 0


def test_cancellations_free_every_block_and_too_long_is_refused():
    out = run("cancel")
    assert "refused:" in out and "session_len" in out
    m = re.search(r"blocks used (\d+), free (\d+) \(cached \d+\) of (\d+)", out)
    assert m and int(m.group(1)) == 0 and m.group(2) == m.group(3), out


def test_decode_goes_on_while_a_long_prompt_is_prefilled_in_chunks():
    # issue 15: each step runs every running decode plus prefill chunks within the budget
    out = run("mixed")
    m = re.search(r"A decoded (\d+) tokens meanwhile", out)
    assert m and int(m.group(1)) >= 23, out
