"""`--load-format dummy` needs only config.json and a tokenizer, as vLLM's does (issue 16): a
directory with no weight files at all runs on random weights of the config's shapes.  The
tokenizer.json is the default GGUF's, converted by transformers (tests/tokenizer/tok_util.py)."""
import json
import os
import subprocess
import sys

from tsr_paths import tessera_bin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tokenizer"))
import tok_util  # noqa: E402

SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": "bfloat16",
}


def test_dummy_needs_only_config_and_tokenizer(smollm2, tmp_path):
    d = tmp_path / "smollm2-config-only"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    backend, _ = tok_util.gguf_reference(smollm2)
    backend.save(str(d / "tokenizer.json"))
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "tokenizer.json"]
    r = subprocess.run([tessera_bin(), "generate", d, "--load-format", "dummy", "--max-new-tokens", "4", "--prompt", "hi",
                        "--ignore-eos", "--print-ids"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ids = r.stdout.split()
    assert len(ids) == 4 and all(0 <= int(t) < 49152 for t in ids), r.stdout
    assert "prompt 1 tokens" in r.stderr, r.stderr[-2000:]   # "hi" through the tokenizer: one token
