"""Tensor parallelism under mpirun (CPU backend, MPI all-reduce): a model split across N ranks
gives the same logits (f32 tolerance) and the same greedy tokens as N = 1, for the golden
models and the default model; a rank that fails makes every rank stop with its reason."""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

from tsr_paths import tessera_bin, default_model

FIX = pathlib.Path(__file__).resolve().parent.parent / "golden" / "fixtures"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", TESSERA_THREADS="1")


def mpirun(n, args, timeout=300, **kw):
    cmd = ["mpirun", "-np", str(n), "--oversubscribe", "--bind-to", "none", tessera_bin()] + args
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout, **kw)


def logits(model, ids, n, tmp_path):
    out = tmp_path / f"logits_{n}.f32"
    r = mpirun(n, ["logits", str(model), "--ids", ",".join(map(str, ids)), "--all", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)


def heads(model):
    c = json.loads((model / "config.json").read_text())
    return c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])


GOLDEN = sorted(p for p in FIX.iterdir() if (p / "config.json").exists())


@pytest.mark.parametrize("model", GOLDEN, ids=[p.name for p in GOLDEN])
def test_golden_models_tp_equals_tp1(model, tmp_path):
    ids = json.loads((model / "expected.json").read_text())["prompts"][0]["ids"] \
        if "prompts" in json.loads((model / "expected.json").read_text()) else list(range(1, 21))
    ref = logits(model, ids, 1, tmp_path)
    n_head, _ = heads(model)
    for n in (2, 3, 4):
        if n > n_head:
            continue
        got = logits(model, ids, n, tmp_path)
        scale = max(1.0, float(np.abs(ref).max()))
        err = float(np.abs(got - ref).max())
        assert err <= 1e-4 * scale, f"TP={n}: max |diff| {err} (scale {scale})"
        assert (got.argmax(-1) == ref.argmax(-1)).all(), f"TP={n}: greedy tokens differ"


def test_default_model_tp_equals_tp1(tmp_path):
    model = default_model()
    ids = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3714, 314, 1345, 1073, 30, 2, 198]
    ref = logits(model, ids, 1, tmp_path)
    for n in (2, 3, 4):
        got = logits(model, ids, n, tmp_path)
        scale = max(1.0, float(np.abs(ref).max()))
        err = float(np.abs(got - ref).max())
        assert err <= 1e-4 * scale, f"TP={n}: max |diff| {err} (scale {scale})"
        assert (got.argmax(-1) == ref.argmax(-1)).all(), f"TP={n}: greedy tokens differ"


def test_tp_size_mismatch_is_a_clear_error():
    r = mpirun(2, ["logits", str(GOLDEN[0]), "--ids", "1,2", "--tp", "4"])
    assert r.returncode != 0
    assert "--tp 4" in r.stderr and "mpirun -np 4" in r.stderr


def test_rank_that_cannot_load_stops_every_rank(tmp_path):
    """Rank 1 runs under a 300 MB data-segment limit (RLIMIT_DATA: private anonymous memory,
    not the mapped libraries), so allocating the default model's ~540 MB of f32 weights fails
    there (out of memory); every rank must exit promptly and the message names rank 1."""
    model = default_model()
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none",
           "-np", "1", tessera_bin(), "logits", str(model), "--ids", "1,2,3", ":",
           "-np", "1", "bash", "-c", f'ulimit -d 300000; exec "{tessera_bin()}" "$@"', "x",
           "logits", str(model), "--ids", "1,2,3"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "rank 1" in r.stderr and "out of" in r.stderr and "memory" in r.stderr, r.stderr[-2000:]
