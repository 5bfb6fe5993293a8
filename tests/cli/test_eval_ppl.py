"""`tessera eval ppl`: perplexity as llama.cpp defines it (windows of --ctx tokens from an empty
cache, the second half of each scored, ppl = exp(mean NLL)).

The figure is checked against a Python computation of that definition from logits nobody here
wrote: HF transformers' logits stored with the golden fixtures (tests/golden/make_fixtures.py).
Those are the logits of whole sequences from position 0, so the ids fed to `eval ppl` are laid
out so that every window is exactly one such sequence's prefix.  The default model runs on a
natural-language text from a Debian package (base-files' GPL-3), and under mpirun -np 2 must
give the single-rank figure."""
import json
import math
import os
import pathlib
import subprocess

import numpy as np
import pytest

from tsr_paths import tessera_bin, default_model

FIX = pathlib.Path(__file__).resolve().parent.parent / "golden" / "fixtures"
TEXT = "/usr/share/common-licenses/GPL-3"   # Debian package base-files
ENV = dict(os.environ, TESSERA_LOG="warn", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def ppl(*args, mpi=0, timeout=120):
    cmd = [tessera_bin(), "eval", "ppl", *map(str, args)]
    if mpi:
        cmd = ["mpirun", "-np", str(mpi), "--oversubscribe", "--bind-to", "none"] + cmd
    return subprocess.run(cmd, env=dict(ENV, TESSERA_THREADS="1") if mpi else ENV,
                          capture_output=True, text=True, timeout=timeout)


def ppl_json(*args, **kw):
    r = ppl(*args, "--json", **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def fixture(name):
    d = FIX / name
    exp = json.loads((d / "expected.json").read_text())
    seqs = {s["name"]: (s["ids"], np.load(d / s["logits_file"])) for s in exp["sequences"]}
    return d, seqs


def reference(windows):
    """windows: [(ids, HF logits of those ids from position 0)] -> (ppl, tokens scored)."""
    nll = []
    for ids, lg in windows:
        ctx = len(ids)
        for j in range(ctx // 2, ctx):
            row = lg[j - 1].astype(np.float64)
            m = row.max()
            nll.append(m + math.log(np.exp(row - m).sum()) - row[ids[j]])
    return math.exp(sum(nll) / len(nll)), len(nll)


@pytest.mark.parametrize("name", ["llama_mha", "qwen2_bias_tied"])
@pytest.mark.parametrize("gap", [0, 5], ids=["stride=ctx", "stride=ctx+5"])
def test_ppl_matches_hf_logits(name, gap, tmp_path):
    """ids = short + gap filler + long: with --ctx 20 and --stride 20+gap, window 0 is the
    fixture's short sequence and window 1 the first 20 ids of its long one."""
    d, seqs = fixture(name)
    short, ls = seqs["short"]
    long_, ll = seqs["long"]
    assert len(short) == 20
    ids = short + [1] * gap + long_
    f = tmp_path / "ids.txt"
    f.write_text(" ".join(map(str, ids)))
    got = ppl_json(d, "--ids", f, "--ctx", 20, "--stride", 20 + gap, "--max-windows", 2, "--backend", "cpu")
    want, n = reference([(short, ls), (long_[:20], ll[:20])])
    assert got["windows"] == 2 and got["tokens_scored"] == n == 20
    assert got["bos"] is False
    assert abs(got["ppl"] - want) <= 1e-3 * want, (got["ppl"], want)


def test_ppl_one_long_window_matches_hf(tmp_path):
    d, seqs = fixture("llama_mha")
    ids, lg = seqs["long"]
    f = tmp_path / "ids.txt"
    f.write_text(",".join(map(str, ids)))
    got = ppl_json(d, "--ids", f, "--ctx", 100, "--backend", "cpu", "--chunk", 7)
    want, n = reference([(ids, lg)])
    assert got["windows"] == 1 and got["tokens_scored"] == n == 50
    assert abs(got["ppl"] - want) <= 1e-3 * want, (got["ppl"], want)


def test_bos_starts_every_window_when_the_tokenizer_adds_it(tmp_path):
    """A tiny fixture model with a tokenizer (trained here by HF `tokenizers` on the text) whose
    post-processor adds <s>: --text must give the figure of --ids laid out as llama.cpp does,
    in Python from HF's own encoding: BOS before the stream, and the first token of every
    window replaced by BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    model = tmp_path / "m"
    model.mkdir()
    for f in ("config.json", "model.safetensors"):
        (model / f).symlink_to(FIX / "llama_mha" / f)
    text = pathlib.Path(TEXT).read_text()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=200, special_tokens=["<s>"], show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(str(model / "tokenizer.json"))
    ctx, stride, k = 32, 40, 3
    got = ppl_json(model, "--text", TEXT, "--ctx", ctx, "--stride", stride, "--max-windows", k, "--backend", "cpu")
    assert got["bos"] is True
    ids = [0] + tok.encode(text, add_special_tokens=False).ids
    assert got["tokens_in_input"] == len(ids)
    for w in range(k):
        ids[w * stride] = 0
    f = tmp_path / "ids.txt"
    f.write_text(" ".join(map(str, ids)))
    want = ppl_json(model, "--ids", f, "--ctx", ctx, "--stride", stride, "--max-windows", k, "--backend", "cpu")
    assert want["bos"] is False and want["tokens_scored"] == got["tokens_scored"] == k * ctx // 2
    assert abs(got["ppl"] - want["ppl"]) <= 1e-6 * want["ppl"], (got["ppl"], want["ppl"])


def test_default_model_on_gpl3():
    r = ppl("--text", TEXT, "--ctx", 128, "--max-windows", 2, "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    assert "ppl windows 2/2 100%" in r.stderr          # the progress meter
    assert "tokens scored 128" in r.stdout and "tok/s" in r.stdout
    got = ppl_json("--text", TEXT, "--ctx", 128, "--max-windows", 2, "--backend", "cpu")
    assert got["windows"] == 2 and got["tokens_scored"] == 2 * 64
    assert 1 < got["ppl"] < 1000 and math.isfinite(got["ppl"])
    assert got["tokens_per_second"] > 0
    assert f"ppl {got['ppl']:.4f}" in r.stdout            # text and JSON say the same


def test_default_model_mpirun_np2_equals_one_rank():
    one = ppl_json("--text", TEXT, "--ctx", 128, "--max-windows", 2, "--backend", "cpu")
    two = ppl_json("--text", TEXT, "--ctx", 128, "--max-windows", 2, "--backend", "cpu", mpi=2)
    assert two["ranks"] == 2 and two["tokens_scored"] == one["tokens_scored"]
    assert abs(two["ppl"] - one["ppl"]) <= 1e-4 * one["ppl"], (two["ppl"], one["ppl"])


def bad(args, needle):
    r = ppl(*args)
    assert r.returncode == 1, (r.returncode, r.stderr)   # an error, not a signal
    assert needle in r.stderr, r.stderr
    assert r.stdout == ""


def test_bad_inputs(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text(pathlib.Path(TEXT).read_text()[:300])
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(["3"] * 300))
    d = FIX / "llama_mha"                                  # max_position_embeddings 128
    bad(["--text", tmp_path / "missing.txt"], "missing.txt")
    bad([], "--text FILE")
    bad(["--text", TEXT, "--ctx", 1], "--ctx must be at least 2")
    bad(["--text", short, "--ctx", 512], "fewer than one window of --ctx 512")
    bad([d, "--ids", ids, "--ctx", 200, "--backend", "cpu"], "longer than the model's context (128 tokens)")
    bad(["--text", TEXT, "--bogus"], "tessera eval ppl: unknown option '--bogus'")
    ids.write_text("1 2 x")
    bad([d, "--ids", ids, "--ctx", 2], "expected non-negative token ids")
