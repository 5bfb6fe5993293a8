"""GGUF reading and dequantization checked against python `gguf` (llama.cpp's own reader and
numpy dequantizers), which nobody here wrote: the real default model's directory and tensors,
and random blocks of every quantized type Tessera dequantizes.  `tessera inspect --tensor NAME
--dump FILE` writes a tensor as raw little-endian f32."""
import numpy as np
import pytest

from fmt_util import parse_tensor_list, run

import gguf  # pinned in ci/requirements-test.txt: a missing one fails
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


@pytest.fixture(scope="module")
def smollm2_reader(smollm2):
    return gguf.GGUFReader(smollm2)


def dump(tessera, model, name, tmp_path):
    out = tmp_path / (name.replace("/", "_") + ".f32")
    run(tessera, "inspect", model, "--no-tensors", "--tensor", name, "--dump", out)
    return np.fromfile(out, dtype="<f4")


def test_smollm2_directory(tessera, smollm2, smollm2_reader):
    p = run(tessera, "inspect", smollm2)
    ours = parse_tensor_list(p.stdout)
    reader = smollm2_reader
    assert len(ours) == len(reader.tensors) == 272
    for t in reader.tensors:
        ty, shape = ours[t.name]
        assert ty == t.tensor_type.name, t.name
        assert shape == [int(x) for x in reversed(t.shape)], t.name  # ours: outermost first
    counts = {}
    for ty, _ in ours.values():
        counts[ty] = counts.get(ty, 0) + 1
    assert counts == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert "GGUF v3" in p.stdout
    assert "arch llama, vocab 49152, d_model 576, layers 30, heads 9, kv heads 3, head_dim 64, d_ff 1536" in p.stdout
    assert "tied embeddings yes, bos 1, eos 2" in p.stdout


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.29.ffn_down.weight", "token_embd.weight",
                                  "blk.3.attn_norm.weight", "output_norm.weight"])
def test_smollm2_dequant_matches_gguf_py(tessera, smollm2, smollm2_reader, tmp_path, name):
    reader = smollm2_reader
    t = next(t for t in reader.tensors if t.name == name)
    want = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
    got = dump(tessera, smollm2, name, tmp_path)
    assert got.shape == want.shape
    # the same arithmetic, up to fused multiply-add rounding
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert np.abs(want).max() > 0


def random_blocks(qtype, n_rows, row_len, rng):
    """Random bytes for n_rows x row_len elements of qtype, with the f16 scale fields set to
    finite values (random bits would make NaNs and infinities on both sides)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = n_rows * row_len // block
    raw = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)

    def half_at(off):
        raw[:, off:off + 2] = rng.uniform(-0.5, 0.5, size=nb).astype(np.float16).view(np.uint8).reshape(nb, 2)

    scale_fields = {
        Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
        Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
    }
    if qtype == Q.F32:
        return rng.standard_normal(n_rows * row_len).astype(np.float32).view(np.uint8).reshape(n_rows, -1)
    if qtype == Q.F16:
        return rng.standard_normal(n_rows * row_len).astype(np.float16).view(np.uint8).reshape(n_rows, -1)
    if qtype == Q.BF16:
        f = rng.standard_normal(n_rows * row_len).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(n_rows, -1)
    for off in scale_fields[qtype]:
        half_at(off)
    return raw.reshape(n_rows, -1)


QTYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]


def test_random_blocks_every_type(tessera, tmp_path):
    rng = np.random.default_rng(1234)
    path = tmp_path / "types.gguf"
    w = gguf.GGUFWriter(path, "llama")
    rows, row_len = 6, 512
    data = {}
    for qt in QTYPES:
        raw = random_blocks(qt, rows, row_len, rng)
        data[qt] = raw
        w.add_tensor(f"t.{qt.name}", raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    listing = parse_tensor_list(run(tessera, "inspect", path).stdout)
    for qt in QTYPES:
        assert listing[f"t.{qt.name}"] == (qt.name, [rows, row_len])
        want = dequantize(data[qt].reshape(-1), qt).astype(np.float32).reshape(-1)
        got = dump(tessera, path, f"t.{qt.name}", tmp_path)
        assert got.shape == want.shape, qt.name
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=qt.name)
        assert np.isfinite(want).all() and np.abs(want).max() > 0, qt.name


def test_gguf_v2_reads_like_v3(tessera, tmp_path):
    """v2 and v3 differ only in what v3 allows (big-endian files): the same bytes under either
    version number read the same."""
    rng = np.random.default_rng(11)
    path = tmp_path / "v3.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_string("t.s", "hello")
    w.add_array("t.arr", ["a", "bc"])
    raw = random_blocks(Q.Q6_K, 2, 256, rng)
    w.add_tensor("w", raw, raw_dtype=Q.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    v2 = tmp_path / "v2.gguf"
    b = bytearray(path.read_bytes())
    assert b[4:8] == (3).to_bytes(4, "little")
    b[4:8] = (2).to_bytes(4, "little")
    v2.write_bytes(b)
    p3 = run(tessera, "inspect", path, "--metadata").stdout
    p2 = run(tessera, "inspect", v2, "--metadata").stdout
    assert "GGUF v2" in p2 and "GGUF v3" in p3
    assert p2.split("\n", 2)[2].replace(str(v2), "F") == p3.split("\n", 2)[2].replace(str(path), "F")
    assert 't.arr = [string x 2] "a" "bc"' in p2
    np.testing.assert_array_equal(dump(tessera, v2, "w", tmp_path), dump(tessera, path, "w", tmp_path))
    b[4:8] = (1).to_bytes(4, "little")
    v2.write_bytes(b)
    p = run(tessera, "inspect", v2, check=False)
    assert p.returncode == 1 and "version 1" in p.stderr


def test_gguf_to_safetensors_export(tessera, tmp_path):
    """GGUF -> our safetensors writer -> python safetensors reads the dequantized tensors."""
    import safetensors.numpy as st_np
    rng = np.random.default_rng(7)
    path = tmp_path / "small.gguf"
    w = gguf.GGUFWriter(path, "llama")
    raw = random_blocks(Q.Q4_K, 3, 256, rng)
    w.add_tensor("blk.0.w", raw, raw_dtype=Q.Q4_K)
    f = rng.standard_normal((2, 4, 8)).astype(np.float32)
    w.add_tensor("norm", f)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = tmp_path / "out.safetensors"
    run(tessera, "inspect", path, "--no-tensors", "--to-safetensors", out)
    got = st_np.load_file(out)
    assert set(got) == {"blk.0.w", "norm"}
    np.testing.assert_allclose(got["blk.0.w"], dequantize(raw.reshape(-1), Q.Q4_K).reshape(3, 256), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["norm"], f)


def test_corrupt_gguf_is_a_clear_error(tessera, tmp_path, smollm2):
    # a truncated copy of the real model: the header is intact, the last tensors are cut
    cut = tmp_path / "cut.gguf"
    with open(smollm2, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(50_000_000))
    p = run(tessera, "inspect", cut, check=False)
    assert p.returncode == 1
    assert str(cut) in p.stderr and "past the end" in p.stderr, p.stderr
    # cut inside the metadata
    with open(smollm2, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(100_000))
    p = run(tessera, "inspect", cut, check=False)
    assert p.returncode == 1 and str(cut) in p.stderr and "truncated" in p.stderr, p.stderr
    # a hostile tensor count
    with open(smollm2, "rb") as src:
        head = bytearray(src.read(4096))
    head[8:16] = (1 << 62).to_bytes(8, "little")
    bad = tmp_path / "count.gguf"
    bad.write_bytes(head)
    p = run(tessera, "inspect", bad, check=False)
    assert p.returncode == 1 and str(bad) in p.stderr and "tensor count" in p.stderr, p.stderr
    # bad magic
    bad.write_bytes(b"GGUX" + bytes(head[4:]))
    p = run(tessera, "inspect", bad, check=False)
    assert p.returncode == 1 and "bad magic" in p.stderr, p.stderr
    # missing file
    p = run(tessera, "inspect", tmp_path / "nope.gguf", check=False)
    assert p.returncode == 1 and "nope.gguf" in p.stderr


def test_unknown_tensor_name(tessera, smollm2, tmp_path):
    p = run(tessera, "inspect", smollm2, "--no-tensors", "--tensor", "no.such.tensor", "--dump",
            tmp_path / "x", check=False)
    assert p.returncode == 1 and "no.such.tensor" in p.stderr


def test_inspect_help_lists_options(tessera):
    p = run(tessera, "inspect", "--help")
    for opt in ("--tensor", "--dump", "--metadata", "--no-tensors", "--to-safetensors"):
        assert opt in p.stdout


@pytest.mark.parametrize("qt", [Q.IQ4_NL, Q.IQ4_XS, Q.IQ2_XXS, Q.IQ3_S, Q.TQ2_0, Q.IQ1_M])
def test_unsupported_ggml_type_is_named(tessera, tmp_path, qt):
    # a type Tessera does not read is refused by its name, not by its number alone
    block, size = gguf.GGML_QUANT_SIZES[qt]
    path = tmp_path / f"{qt.name}.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_tensor("w", np.zeros((2, 256 // block * size), dtype=np.uint8), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    p = run(tessera, "inspect", path, check=False)
    assert p.returncode == 1 and f"ggml type {qt.name} ({qt.value})" in p.stderr and "'w'" in p.stderr, p.stderr


@pytest.mark.parametrize("arch", ["qwen2", "internlm2"])
def test_gguf_architecture_the_loader_cannot_take_is_refused_at_the_config(tessera, tmp_path, arch):
    # a qwen2 GGUF passed the config check and then failed in the weight loader (issue 16):
    # now the config check itself refuses it, naming the architecture
    path = tmp_path / f"tiny-{arch}.gguf"
    w = gguf.GGUFWriter(path, arch)
    for add, v in [(w.add_context_length, 128), (w.add_embedding_length, 64), (w.add_block_count, 1),
                   (w.add_feed_forward_length, 128), (w.add_head_count, 4), (w.add_head_count_kv, 2)]:
        add(v)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tensor("token_embd.weight", np.zeros((256, 64), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.bias", np.zeros(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    want = f"GGUF architecture '{arch}' is not supported (GGUF files of architecture llama are"
    p = run(tessera, "inspect", path, "--no-tensors")
    assert want in p.stdout, p.stdout
    p = run(tessera, "generate", path, "--prompt-ids", "1,2", "--max-new-tokens", 1, check=False)
    assert p.returncode == 1 and want in p.stderr, p.stderr
