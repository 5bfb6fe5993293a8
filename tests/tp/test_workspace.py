"""`tessera convert` workspaces: split once, loaded without splitting; TP=N from a workspace
gives the TP=1 answer; config.ini knobs take effect; mismatches and missing shards are clear
errors that stop every rank."""
import json
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

from tsr_paths import tessera_bin, default_model

FIX = pathlib.Path(__file__).resolve().parent.parent / "golden" / "fixtures"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", TESSERA_THREADS="1")
IDS = "1,9690,198,2683,359,253,5356,5646,11173"


def run(args, n=1, timeout=300):
    pre = [] if n == 1 else ["mpirun", "-np", str(n), "--oversubscribe", "--bind-to", "none"]
    return subprocess.run(pre + [tessera_bin()] + args, env=ENV, capture_output=True, text=True, timeout=timeout)


def logits(model, ids, n, out, load_format=None):
    extra = ["--load-format", load_format] if load_format else []
    r = run(["logits", str(model), "--ids", ids, "--all", "--out", str(out)] + extra, n)
    assert r.returncode == 0, r.stderr[-3000:]
    return np.fromfile(out, dtype=np.float32)


def close(a, b):
    scale = max(1.0, float(np.abs(a).max()))
    return float(np.abs(a - b).max()) <= 1e-4 * scale


@pytest.fixture(scope="module")
def ws_gguf(tmp_path_factory):
    d = tmp_path_factory.mktemp("ws") / "smollm2-tp2"
    r = run(["convert", str(default_model()), "--dst", str(d), "--tp", "2"])
    assert r.returncode == 0, r.stderr
    return d


def test_workspace_layout(ws_gguf):
    names = sorted(p.name for p in ws_gguf.iterdir())
    assert names == ["config.ini", "rank0.safetensors", "rank1.safetensors", "tokenizer.gguf"]
    ini = (ws_gguf / "config.ini").read_text()
    for key in ["model_name", "tensor_para_size", "head_num", "kv_head_num", "vocab_size", "num_layer", "inter_size",
                "norm_eps", "attn_bias", "start_id", "end_id", "session_len", "weight_type", "group_size",
                "rotary_embedding", "rope_theta", "size_per_head", "max_batch_size", "max_context_token_num",
                "cache_max_entry_count", "cache_block_seq_len", "quant_policy", "max_position_embeddings", "rope_scaling_factor", "use_logn_attn"]:
        assert f"\n{key} = " in ini, key
    # TurboMind keys no command reads are not written (issue 16)
    for key in ["step_length", "cache_chunk_size", "use_context_fmha"]:
        assert f"\n{key} = " not in ini, key
    assert "tensor_para_size = 2" in ini and "head_num = 9" in ini
    # each rank file holds only its share: together about one model, each well under it
    sizes = [(ws_gguf / f"rank{r}.safetensors").stat().st_size for r in range(2)]
    assert max(sizes) < 0.6 * sum(sizes)
    # the tokenizer travels with the workspace
    r = run(["tokenize", str(ws_gguf), "Hello world"])
    assert r.returncode == 0 and r.stdout.split() == ["19556", "905"], r.stdout + r.stderr


def test_workspace_tp2_equals_tp1(ws_gguf, tmp_path):
    # the workspace keeps the GGUF's Q4_1/Q8_0 blocks (rows put back in HF order): dequantized,
    # its two ranks compute what the whole GGUF does, to f32 rounding
    ref = logits(default_model(), IDS, 1, tmp_path / "a.f32", "dequantized")
    got = logits(ws_gguf, IDS, 2, tmp_path / "b.f32", "dequantized")
    assert close(ref, got)
    assert (ref.reshape(9, -1).argmax(-1) == got.reshape(9, -1).argmax(-1)).all()
    # as stored (8-bit activations) it agrees with the GGUF as stored on most greedy tokens
    # (a 1e-6 change moves such logits by ~1: tests/tp/test_tp.py)
    q = logits(default_model(), IDS, 1, tmp_path / "c.f32").reshape(9, -1)
    got_q = logits(ws_gguf, IDS, 2, tmp_path / "d.f32").reshape(9, -1)
    assert (q.argmax(-1) == got_q.argmax(-1)).mean() >= 0.75


def test_workspace_keeps_quantized_blocks(ws_gguf):
    """convert keeps a GGUF's block types (issue 12): the rank files hold about the GGUF's bytes,
    not an f32 copy, and inspect names each matrix's type and logical shape."""
    total = sum((ws_gguf / f"rank{r}.safetensors").stat().st_size for r in range(2))
    gguf_size = default_model().stat().st_size
    assert total < 1.1 * gguf_size, (total, gguf_size)
    r = run(["inspect", str(ws_gguf / "rank0.safetensors")])
    assert r.returncode == 0, r.stderr
    assert re.search(r"layers\.0\.q\s+Q4_1\s+\[\d+, 576\]", r.stdout), r.stdout[:3000]
    assert re.search(r"tok_embd\s+Q8_0\s+\[24576, 576\]", r.stdout), r.stdout[:3000]
    # row-parallel o_proj: rank 0 holds its heads' columns, cut at a Q4_1 block edge
    assert re.search(r"layers\.0\.o\s+Q4_1\s+\[576, \d+\]", r.stdout), r.stdout[:3000]
    # --dequantize stores them as --dtype
    r = run(["convert", str(default_model()), "--dst", str(ws_gguf.parent / "deq"), "--dequantize", "--dtype", "bf16"])
    assert r.returncode == 0, r.stderr
    assert (ws_gguf.parent / "deq" / "rank0.safetensors").stat().st_size > 2.5 * gguf_size


@pytest.mark.parametrize("name,tp", [("internlm2_packed", 4), ("qwen2_bias_tied", 3), ("llama_mha", 2),
                                     ("mistral_swa", 2), ("qwen2_swa", 2), ("llama_longrope", 2)])
def test_hf_workspace_equals_hf_dir(name, tp, tmp_path):
    src = FIX / name
    d = tmp_path / "ws"
    r = run(["convert", str(src), "--dst", str(d), "--tp", str(tp), "--dtype", "f32"])
    assert r.returncode == 0, r.stderr
    assert (d / "tokenizer.json").exists() or not (src / "tokenizer.json").exists()
    ids = "1,5,9,17,33,65,129,200,7,3"
    ref = logits(src, ids, 1, tmp_path / "a.f32")
    got = logits(d, ids, tp, tmp_path / "b.f32")
    assert close(ref, got)


def test_wrong_group_size_is_refused_with_advice(ws_gguf):
    r = run(["logits", str(ws_gguf), "--ids", "1,2"], n=1)
    assert r.returncode != 0
    assert "tensor_para_size 2" in r.stderr and "mpirun -np 2" in r.stderr and "--tp 1" in r.stderr


def test_config_ini_model_field_mismatch_is_clear(ws_gguf, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(ws_gguf, d)
    ini = (d / "config.ini").read_text().replace("inter_size = 1536", "inter_size = 1024")
    (d / "config.ini").write_text(ini)
    r = run(["logits", str(d), "--ids", "1,2"], n=2)
    assert r.returncode != 0
    assert "config.ini" in r.stderr and "disagree" in r.stderr


def test_config_ini_quant_policy_knob_is_read(ws_gguf, tmp_path):
    d = tmp_path / "knob"
    shutil.copytree(ws_gguf, d)
    ini = (d / "config.ini").read_text().replace("quant_policy = 0", "quant_policy = 3")
    (d / "config.ini").write_text(ini)
    r = run(["logits", str(d), "--ids", "1,2"], n=2)
    # 0, 8 (int8 KV) and 4 (int4 KV) run (tests/cli/test_kv_quant.py); anything else is refused
    assert r.returncode != 0 and "quant_policy 3" in r.stderr and "config.ini" in r.stderr


def test_missing_rank_file_stops_every_rank_naming_it(ws_gguf, tmp_path):
    d = tmp_path / "missing"
    shutil.copytree(ws_gguf, d)
    (d / "rank1.safetensors").unlink()
    r = run(["logits", str(d), "--ids", "1,2"], n=2, timeout=60)
    assert r.returncode != 0
    assert "rank 1" in r.stderr and "rank1.safetensors" in r.stderr, r.stderr[-2000:]
