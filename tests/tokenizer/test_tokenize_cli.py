"""`tessera tokenize` and `tessera bench tokenizer` as users run them: the optional MODEL
argument, --decode, --no-special, --file, and clear errors (exit code 1, a message naming the
file, never a crash) for missing, corrupt and unsupported tokenizers."""
import json
import pathlib
import signal

import pytest

import tok_util as U


def run(tessera, *args, stdin=None):
    return U.run_tessera(tessera, list(map(str, args)), stdin=stdin)


def ids_of(r):
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return [int(x) for x in r.stdout.decode().split()]


def test_model_argument_is_optional(tessera, smollm2):
    """One positional is the TEXT (default model); two are MODEL TEXT."""
    a = ids_of(run(tessera, "tokenize", "Hello world"))
    b = ids_of(run(tessera, "tokenize", smollm2, "Hello world"))
    assert a == b and len(a) >= 2
    # the decode side: one positional list of ids, or MODEL then ids
    t1 = run(tessera, "tokenize", "--decode", " ".join(map(str, a)))
    t2 = run(tessera, "tokenize", smollm2, "--decode", *map(str, a))
    assert t1.returncode == 0 and t2.returncode == 0
    assert t1.stdout.decode() == t2.stdout.decode() == "Hello world\n"


def test_special_tokens_flags(tessera, smollm2):
    text = "<|im_start|>user"
    parsed = ids_of(run(tessera, "tokenize", smollm2, text))
    plain = ids_of(run(tessera, "tokenize", smollm2, "--no-parse-special", text))
    assert len(parsed) == 2 and len(plain) > 2
    dec = run(tessera, "tokenize", smollm2, "--decode", "--skip-special", *map(str, parsed))
    assert dec.stdout.decode() == "user\n"


def test_file_input(tessera, smollm2, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("line one\nline two\n", encoding="utf-8")
    from_file = ids_of(run(tessera, "tokenize", smollm2, "--file", f))
    from_arg = ids_of(run(tessera, "tokenize", smollm2, "line one\nline two\n"))
    assert from_file == from_arg
    from_stdin = ids_of(run(tessera, "tokenize", smollm2, "--file", "-", stdin=f.read_bytes()))
    assert from_stdin == from_arg


def _no_crash(r):
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.returncode != -signal.SIGSEGV and r.returncode != -signal.SIGABRT
    return r.stderr.decode(errors="replace")


def test_missing_tokenizer(tessera, tmp_path):
    err = _no_crash(run(tessera, "tokenize", tmp_path, "hi"))
    assert "no tokenizer.json" in err and str(tmp_path) in err
    err = _no_crash(run(tessera, "tokenize", tmp_path / "nope.gguf", "hi"))
    assert "nope.gguf" in err


@pytest.mark.parametrize("content,needle", [
    ("", "not valid JSON"),
    ("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [", "not valid JSON"),
    ("[1, 2, 3]", "no 'model'"),
    ("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", "not supported"),
    ("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"zero\"}, \"merges\": []}}", "bad id"),
    ("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\"},"
     " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", "split pattern not supported"),
])
def test_corrupt_tokenizer_json(tessera, tmp_path, content, needle):
    (tmp_path / "tokenizer.json").write_text(content, encoding="utf-8")
    err = _no_crash(run(tessera, "tokenize", tmp_path, "hi"))
    assert needle in err and "tokenizer.json" in err


def test_truncated_real_tokenizer(tessera, tmp_path, smollm2):
    """Cuts of a real tokenizer.json (the default model's, as transformers converts it)."""
    hf, _ = U.gguf_reference(smollm2)
    full = hf.to_str().encode()
    for frac in (0.0001, 0.3, 0.7, 0.9999):
        (tmp_path / "tokenizer.json").write_bytes(full[: int(len(full) * frac)])
        err = _no_crash(run(tessera, "tokenize", tmp_path, "hi"))
        assert "tokenizer.json" in err


def test_bad_ids_to_decode(tessera, smollm2):
    err = _no_crash(run(tessera, "tokenize", smollm2, "--decode", "1", "999999"))
    assert "999999" in err


def test_bench_tokenizer_prints_throughput(tessera, smollm2):
    r = run(tessera, "bench", "tokenizer", smollm2, "--mb", "1", "--rounds", "1")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = r.stdout.decode()
    assert "MB/s" in out and "tokens/s" in out and "round trip exact" in out
