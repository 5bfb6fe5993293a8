"""safetensors interop with the python `safetensors` package (the reference implementation):
files it writes, Tessera reads (every dtype, shapes, metadata, sharded checkpoints with an
index); files Tessera's writer produces (`tessera inspect --to-safetensors`), it reads back
bit for bit; hostile headers are an exit code 1 naming the file."""
import json
import struct

import numpy as np
import pytest

from fmt_util import parse_tensor_list, run

import safetensors.numpy as st_np  # pinned in ci/requirements-test.txt: a missing one fails
from safetensors import safe_open  # noqa: E402

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "U8": np.uint8,
          "I16": np.int16, "I32": np.int32, "I64": np.int64, "BOOL": np.bool_}


def sample_tensors(rng):
    out = {}
    for i, (name, dt) in enumerate(DTYPES.items()):
        shape = [(2, 3), (5,), (1, 2, 2), (), (4, 1), (3,), (2, 2), (6,), (2, 3)][i]
        if dt == np.bool_:
            a = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            a = rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dt)
        else:
            a = rng.standard_normal(shape).astype(dt)
        out[f"model.{name.lower()}"] = a
    out["model.empty"] = np.zeros((0, 4), np.float32)
    return out


def dump(tessera, path, name, tmp_path):
    out = tmp_path / "t.f32"
    run(tessera, "inspect", path, "--no-tensors", "--tensor", name, "--dump", out)
    return np.fromfile(out, dtype="<f4")


def test_reads_what_python_writes(tessera, tmp_path):
    rng = np.random.default_rng(3)
    tensors = sample_tensors(rng)
    path = tmp_path / "py.safetensors"
    st_np.save_file(tensors, path, metadata={"format": "pt", "note": "written by python"})
    p = run(tessera, "inspect", path, "--metadata")
    listing = parse_tensor_list(p.stdout)
    assert set(listing) == set(tensors)
    inv = {np.dtype(v): k for k, v in DTYPES.items()}
    for name, a in tensors.items():
        assert listing[name] == (inv[a.dtype], list(a.shape)), name
        if a.size:
            np.testing.assert_array_equal(dump(tessera, path, name, tmp_path), a.astype(np.float32).reshape(-1))
    assert 'note = "written by python"' in p.stdout


def test_python_reads_what_we_write(tessera, tmp_path):
    rng = np.random.default_rng(4)
    tensors = sample_tensors(rng)
    src = tmp_path / "src.safetensors"
    st_np.save_file(tensors, src, metadata={"format": "np", "k": "v \"quoted\""})
    out = tmp_path / "ours.safetensors"
    run(tessera, "inspect", src, "--no-tensors", "--to-safetensors", out)
    back = st_np.load_file(out)
    assert set(back) == set(tensors)
    for name, a in tensors.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape, name
        np.testing.assert_array_equal(back[name], a)
    with safe_open(out, framework="np") as f:
        assert f.metadata() == {"format": "np", "k": "v \"quoted\""}
    # the header is 8-byte aligned, as the format asks
    (hlen,) = struct.unpack("<Q", out.read_bytes()[:8])
    assert hlen % 8 == 0


def raw_file(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def test_bf16(tessera, tmp_path):
    f = np.array([1.0, -2.5, 3.140625, 1e-3, 65504.0, -0.0], np.float32)
    bits = (f.view(np.uint32) >> 16).astype(np.uint16)
    path = tmp_path / "bf16.safetensors"
    raw_file(path, {"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}, bits.tobytes())
    want = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(dump(tessera, path, "w", tmp_path), want)
    # and python reads our copy of it
    out = tmp_path / "bf16_out.safetensors"
    run(tessera, "inspect", path, "--no-tensors", "--to-safetensors", out)
    with safe_open(out, framework="np") as fh:
        assert fh.keys() == ["w"]
    assert out.read_bytes()[-12:] == bits.tobytes()


def test_sharded_checkpoint_with_config(tessera, tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((8,)).astype(np.float16)
    st_np.save_file({"model.embed_tokens.weight": a}, d / "model-00001-of-00002.safetensors")
    st_np.save_file({"model.norm.weight": b}, d / "model-00002-of-00002.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": a.nbytes + b.nbytes},
        "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                       "model.norm.weight": "model-00002-of-00002.safetensors"}}))
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "vocab_size": 4, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 64, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": [2, 3],
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32}}))
    for target in (d, d / "model.safetensors.index.json"):
        p = run(tessera, "inspect", target)
        assert "2 files, 2 tensors" in p.stdout
        assert parse_tensor_list(p.stdout) == {"model.embed_tokens.weight": ("F32", [4, 8]),
                                               "model.norm.weight": ("F16", [8])}
        assert "arch llama, vocab 4, d_model 8, layers 1, heads 2, kv heads 1, head_dim 4" in p.stdout
        assert "rope llama3 (factor 8) (low 1, high 4, original max pos 32)" in p.stdout
        assert "tied embeddings yes, bos 1, eos 2 (also 3)" in p.stdout
    np.testing.assert_array_equal(dump(tessera, d, "model.norm.weight", tmp_path), b.astype(np.float32))


HOSTILE = [
    ("huge header length", lambda h, data: struct.pack("<Q", 1 << 60) + h + data, "cap"),
    ("header past the end", lambda h, data: struct.pack("<Q", len(h) + len(data) + 1) + h + data, "truncated"),
    ("truncated data", lambda h, data: struct.pack("<Q", len(h)) + h + data[:-1], "past the end"),
    ("not JSON", lambda h, data: struct.pack("<Q", len(h)) + b"{" + b"x" * (len(h) - 1) + data, "JSON"),
]


@pytest.mark.parametrize("what,mutate,msg", HOSTILE, ids=[x[0] for x in HOSTILE])
def test_hostile_files(tessera, tmp_path, what, mutate, msg):
    path = tmp_path / "good.safetensors"
    st_np.save_file({"a": np.arange(6, dtype=np.float32)}, path)
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(mutate(raw[8:8 + hlen], raw[8 + hlen:]))
    p = run(tessera, "inspect", bad, check=False)
    assert p.returncode == 1, what
    assert str(bad) in p.stderr and msg in p.stderr, p.stderr


def test_wrong_dtype_size_and_overlap(tessera, tmp_path):
    bad = tmp_path / "size.safetensors"
    raw_file(bad, {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8))
    p = run(tessera, "inspect", bad, check=False)
    assert p.returncode == 1 and "span" in p.stderr and str(bad) in p.stderr, p.stderr
    raw_file(bad, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12))
    p = run(tessera, "inspect", bad, check=False)
    assert p.returncode == 1 and "overlap" in p.stderr, p.stderr
