"""`tessera generate` and `tessera chat` on the default model, run the way users run them.

Nothing here hard-codes a model output: each test compares the binary against itself under a
changed option (same seed, a stop string cut from its own greedy output, a chat turn against
the figures it prints), so a broken sampler, stop matcher or session shows up as a mismatch."""
import os
import re
import subprocess
import time

import pytest

# TESSERA_QMM_GEMM_TOK=0: the default model's quantized weights take the 8-bit integer kernels
# at every batch size, so a turn continued on cached KV computes what a replay prefilling the
# whole conversation does (the f32 tile path for batches of 32+ rounds differently).
ENV = dict(os.environ, TESSERA_LOG="warn", TESSERA_QMM_GEMM_TOK="0")
PROMPT = "The three most important inventions in history are"
FIGURE = re.compile(r"\[prefill (\d+) new tokens \((\d+) cached\)")


def run(tessera, *args, stdin=None, timeout=300):
    p = subprocess.run([tessera, *map(str, args)], input=stdin, capture_output=True, text=True,
                       timeout=timeout, env=ENV)
    return p


def gen(tessera, model, *args):
    p = run(tessera, "generate", model, "--prompt", PROMPT, *args)
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith("\n")
    return p.stdout[:-1], p.stderr


def test_greedy_is_deterministic(tessera, smollm2):
    a, err = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 24)
    b, _ = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 24)
    assert a == b
    assert len(a.strip()) > 0
    # timing goes to stderr, not into the completion
    assert re.search(r"prefill [\d.]+ tok/s \| decode [\d.]+ tok/s", err), err
    assert "tok/s" not in a


def test_seed_reproducible_and_different_seeds_differ(tessera, smollm2):
    args = ("--temperature", 1.0, "--top-p", 1.0, "--max-new-tokens", 24, "--print-ids", "--ignore-eos")
    a, _ = gen(tessera, smollm2, *args, "--seed", 7)
    b, _ = gen(tessera, smollm2, *args, "--seed", 7)
    assert a == b
    others = [gen(tessera, smollm2, *args, "--seed", s)[0] for s in (8, 9)]
    assert any(o != a for o in others), "three seeds gave the same 24 sampled tokens"


def test_print_ids_and_max_new_tokens(tessera, smollm2):
    short, err = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 5, "--print-ids", "--ignore-eos")
    ids = [int(x) for x in short.split()]
    assert len(ids) == 5
    assert "finish: length" in err
    long, _ = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 12, "--print-ids", "--ignore-eos")
    long_ids = [int(x) for x in long.split()]
    assert len(long_ids) == 12
    assert long_ids[:5] == ids   # greedy: a longer run extends the shorter one


def test_stop_string_truncates(tessera, smollm2):
    full, _ = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 32, "--ignore-eos")
    assert len(full) > 20, full
    # A stop string cut from the middle of the greedy output (spanning several tokens).
    k = len(full) // 2
    stop = full[k:k + 6]
    expected = full[:full.find(stop)]
    out, err = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 32, "--ignore-eos", "--stop", stop)
    assert out == expected
    assert "finish: stop" in err
    # A stop string that never appears changes nothing.
    out2, _ = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 32, "--ignore-eos",
                  "--stop", "\u2603never\u2603")
    assert out2 == full


def test_stop_id(tessera, smollm2):
    ids_s, _ = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 10, "--print-ids", "--ignore-eos")
    ids = [int(x) for x in ids_s.split()]
    # Stop at the 4th token's id: generation ends there (the stop id is the last id reported).
    stop = ids[3]
    first = ids.index(stop)
    out, err = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 10, "--print-ids", "--ignore-eos",
                   "--stop-id", stop)
    assert [int(x) for x in out.split()] == ids[:first + 1]
    assert "finish: stop" in err


def test_logprobs(tessera, smollm2):
    out, err = gen(tessera, smollm2, "--temperature", 0, "--max-new-tokens", 6, "--ignore-eos", "--logprobs", 3,
                   "--print-ids")
    ids = [int(x) for x in out.split()]
    lines = [l for l in err.splitlines() if l.startswith("[logprobs]")]
    assert len(lines) == len(ids) == 6
    for i, (line, tid) in enumerate(zip(lines, ids)):
        m = re.match(r"\[logprobs\] (\d+): (\d+) \S+ (-?[\d.]+) \| top: (.*)$", line)
        assert m, line
        assert int(m.group(1)) == i and int(m.group(2)) == tid
        chosen = float(m.group(3))
        f = m.group(4).split()
        assert len(f) % 3 == 0, line
        top = [(int(f[k]), float(f[k + 2])) for k in range(0, len(f), 3)]
        assert len(top) == 3
        # greedy picks the most likely token of the raw distribution
        assert top[0][0] == tid and abs(top[0][1] - chosen) < 1e-3
        assert all(a[1] >= b[1] for a, b in zip(top, top[1:]))
        assert sum(pow(2.718281828, lp) for _, lp in top) <= 1.0 + 1e-3
        assert chosen <= 0


def test_streams_before_exit(tessera, smollm2):
    p = subprocess.Popen([tessera, "generate", str(smollm2), "--prompt", PROMPT, "--temperature", "0",
                          "--max-new-tokens", "96", "--ignore-eos"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=ENV)
    try:
        first = p.stdout.read(1)
        running = p.poll() is None
        rest = p.stdout.read()
        assert p.wait(timeout=300) == 0
    finally:
        if p.poll() is None:
            p.kill()
    assert first and rest
    assert running, "no output came before the process ended: the completion is not streamed"


def chat(tessera, model, lines, *args):
    p = run(tessera, "chat", model, "--temperature", 0, *args, stdin="".join(l + "\n" for l in lines))
    assert p.returncode == 0, p.stderr
    figures = [(int(a), int(b)) for a, b in FIGURE.findall(p.stderr)]
    return p, figures


def test_chat_second_turn_prefills_only_new_tokens(tessera, smollm2):
    p, fig = chat(tessera, smollm2, ["What is the capital of France?", "And of Germany?"], "--max-new-tokens", 24)
    assert len(fig) == 2, p.stderr
    (new1, cached1), (new2, cached2) = fig
    assert cached1 == 0 and new1 > 10
    # turn 2 reuses turn 1's prompt and answer: it prefills only its own few tokens
    assert cached2 > new1
    assert new2 < 25, f"second turn prefilled {new2} tokens"
    # both turns produced text
    assert len([l for l in p.stdout.split("\n") if l.strip()]) >= 2


def test_chat_reset(tessera, smollm2):
    p, fig = chat(tessera, smollm2, ["Name a color.", "/reset", "Name a color."], "--max-new-tokens", 12)
    assert len(fig) == 2, p.stderr
    assert fig[0][1] == 0 and fig[1][1] == 0       # nothing cached after /reset
    assert fig[0][0] == fig[1][0]                  # the same prompt again
    answers = [a for a in p.stdout.split("\n") if a.strip()]
    assert len(answers) == 2 and answers[0] == answers[1]
    assert "[session reset]" in p.stderr


def test_chat_session_len_message_and_recovery(tessera, smollm2):
    long_turn = " ".join(["word"] * 200)
    p, fig = chat(tessera, smollm2, ["Hi", long_turn, "Bye", "/exit", "never read"],
                  "--session-len", 160, "--max-new-tokens", 8)
    assert "session_len" in p.stderr and "no room" in p.stderr, p.stderr
    assert len(fig) == 2, p.stderr      # the long turn was refused, the other two answered
    assert fig[1][1] > 0                # ... and the third turn still used the session


def test_chat_eof_ends_cleanly(tessera, smollm2):
    p, fig = chat(tessera, smollm2, [], "--max-new-tokens", 4)
    assert fig == []


@pytest.mark.parametrize("args, needle", [
    (("--max-new-tokens", "-5"), "--max-new-tokens"),
    (("--top-p", "1.5"), "--top-p"),
    (("--temperature", "-1"), "--temperature"),
    (("--logprobs", "99"), "--logprobs"),
    (("--min-p", "2"), "--min-p"),
    (("--max-new-tokens", "abc"), "--max-new-tokens"),
])
def test_bad_arguments(tessera, smollm2, args, needle):
    p = run(tessera, "generate", smollm2, "--prompt", "hi", *args)
    assert p.returncode == 1
    assert needle in p.stderr, p.stderr
    assert p.stdout == ""


def test_missing_model_and_prompt(tessera, smollm2, tmp_path):
    missing = tmp_path / "nope.gguf"
    p = run(tessera, "generate", missing, "--prompt", "hi")
    assert p.returncode == 1
    assert str(missing) in p.stderr
    p = run(tessera, "generate", smollm2)
    assert p.returncode == 1 and "--prompt" in p.stderr
    p = run(tessera, "chat", missing)
    assert p.returncode == 1 and str(missing) in p.stderr


def test_prompt_ids(tessera, smollm2):
    # --prompt-ids bypasses the tokenizer; ids past the vocabulary are refused
    p = run(tessera, "generate", smollm2, "--prompt-ids", "1,2,3", "--temperature", 0, "--max-new-tokens", 4,
            "--print-ids", "--ignore-eos")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.split()) == 4
    p = run(tessera, "generate", smollm2, "--prompt-ids", "1,99999999", "--max-new-tokens", 4)
    assert p.returncode == 1 and "vocabulary" in p.stderr


def test_chat_session_equals_replay(tessera, smollm2):
    """Turn 2 on the kept KV gives the same greedy answer as the whole conversation prefilled
    from scratch (SmolLM2's chatml spelled out here: the default model's template)."""
    q1, q2 = "What is the capital of France?", "And of Italy?"
    g = run(tessera, "generate", smollm2, "--chat", "--prompt", q1, "--temperature", 0, "--max-new-tokens", 20)
    assert g.returncode == 0, g.stderr
    a1 = g.stdout[:-1]
    p, fig = chat(tessera, smollm2, [q1, q2], "--max-new-tokens", 20)
    assert len(fig) == 2 and p.stdout.startswith(a1 + "\n"), (a1, p.stdout)
    a2 = p.stdout[len(a1) + 1:-1]
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    conv = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{q1}<|im_end|>\n"
            f"<|im_start|>assistant\n{a1}<|im_end|>\n<|im_start|>user\n{q2}<|im_end|>\n<|im_start|>assistant\n")
    r = run(tessera, "generate", smollm2, "--prompt", conv, "--temperature", 0, "--max-new-tokens", 20)
    assert r.returncode == 0, r.stderr
    assert r.stdout[:-1] == a2
    # the replay prefilled everything the session had cached plus the new turn
    m = re.search(r"\[prompt (\d+) tokens", r.stderr)
    assert m and int(m.group(1)) == fig[1][0] + fig[1][1]
