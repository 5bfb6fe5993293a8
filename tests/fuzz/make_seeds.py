"""Makes the small seed inputs under tests/fuzz/seeds (committed; run again only to change
them): valid GGUF and safetensors files that reach every branch of the readers' happy paths,
written by the reference python packages, for libFuzzer to mutate."""
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
import safetensors.numpy as st_np

HERE = Path(__file__).resolve().parent / "seeds"
rng = np.random.default_rng(0)


def gguf_seed(path, types, align=None):
    w = gguf.GGUFWriter(path, "llama")
    if align:
        w.add_custom_alignment(align)
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_context_length(128)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_bool("t.flag", True)
    w.add_int8("t.i8", -3)
    w.add_uint64("t.u64", 1 << 40)
    w.add_float64("t.f64", 0.5)
    w.add_token_list(["<s>", "</s>", "a", "b"])
    w.add_token_scores([0.0, -1.0, -2.0, -3.0])
    w.add_token_types([3, 3, 1, 1])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    for qt in types:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        if qt == Q.F32:
            w.add_tensor(f"t.{qt.name}", rng.standard_normal((2, 8)).astype(np.float32))
        elif qt == Q.F16:
            w.add_tensor(f"t.{qt.name}", rng.standard_normal((2, 8)).astype(np.float16))
        else:
            raw = rng.integers(0, 256, size=(2, size), dtype=np.uint8)
            w.add_tensor(f"t.{qt.name}", raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


gguf_seed(HERE / "gguf" / "legacy.gguf", [Q.F32, Q.F16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.BF16])
gguf_seed(HERE / "gguf" / "kquants.gguf", [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K], align=64)
gguf_seed(HERE / "gguf" / "meta_only.gguf", [])

st_np.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.int8),
                 "c": np.zeros((2, 2), np.float16)}, HERE / "safetensors" / "small.safetensors",
                metadata={"format": "pt"})
st_np.save_file({"x": np.array(3.5, np.float64), "e": np.zeros((0, 3), np.int64),
                 "m": np.ones((1, 1, 2, 1), np.bool_)}, HERE / "safetensors" / "odd.safetensors")
