#!/usr/bin/env python3
"""Makes the golden fixtures of tests/golden: what HF transformers (not us) computes.

Role in the plan (DESIGN.md, "tests against something nobody here wrote"): the CPU engine is
the oracle every later backend is tested against, so it is itself checked against HF
transformers in float32.  This script needs torch + transformers + gguf (+ accelerate for
the GGUF part); CI has none of them, so its outputs are committed and tests/golden/
test_golden.py only reads them.

Two kinds of fixture:

1. Tiny random-weight models, one per architecture or feature the engine claims (Llama
   MHA/GQA/MQA, Mistral, Qwen2 q/k/v biases, InternLM2 packed wqkv, tied and untied
   embeddings, rope_scaling linear / llama3 / dynamic NTK past the trained length), each
   written as an HF directory (config.json in the classic transformers-4 layout that real
   checkpoints use, model.safetensors; one sharded with an index, some bf16/f16 on disk)
   plus expected.json and logits_<seq>.npy: the f32 logits of every position of two fixed
   token sequences and 16-token greedy continuations.  The reference is always computed
   from the files as written (reloaded with from_pretrained), so bf16/f16 rounding and the
   config parsing are part of what is pinned down.

   transformers has no InternLM2 class; InternLM2Ref below follows the published
   modeling_internlm2.py (wqkv rows grouped per KV head as [q heads of the group.., k, v],
   rotate_half RoPE, SwiGLU w1/w3/w2), and is cross-checked against LlamaForCausalLM run on
   the unpacked weights.

2. The default model (SmolLM2-135M-Instruct Q4_1 GGUF): a few chat prompts rendered with the
   GGUF's own chat template by transformers, the prompt ids, 32 greedy tokens of transformers
   loading that GGUF (it dequantizes to f32), and the top logits at each generated position,
   in fixtures/smollm2_gguf.json.

Greedy ties: a continuation is only a fair test if the top-1 logit beats the top-2 by far
more than the logit tolerance, so for the tiny models the prompt seed is advanced until every
greedy step has margin >= MARGIN_MIN * max(1, max|logit|); the margins are stored either way.

Usage (see README.md):  /tmp/torchvenv/bin/python tests/golden/make_fixtures.py [--only NAME..]
                        [--skip-gguf] [--skip-tiny] [--gguf PATH]
"""
import argparse
import json
import math
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")

SHORT_LEN = 20          # the short sequence
LONG_LEN = 100          # the long one: past max_position_embeddings=64 of the dynamic-NTK model
N_GREEDY = 16           # greedy continuation length (tiny models)
N_GREEDY_GGUF = 32      # greedy continuation length (default model)
MARGIN_MIN = 2e-3       # required top1-top2 gap, relative to max(1, max|logit|): 20x the test tolerance
TOPK_GGUF = 10

# Base sizes of the tiny models; each spec overrides what it exercises.
BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
            rms_norm_eps=1e-5, rope_theta=10000.0)

# name, HF class, config overrides, tie, dtype on disk, shards, what it is for.
SPECS = [
    dict(name="llama_mha", arch="LlamaForCausalLM", cfg={}, tie=False, dtype="float32", shards=1,
         what="Llama, multi-head attention (4 heads, 4 KV heads), untied LM head, f32"),
    dict(name="llama_gqa_tied_sharded", arch="LlamaForCausalLM",
         cfg=dict(num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6), tie=True,
         dtype="float32", shards=2,
         what="Llama GQA (4 heads, 2 KV heads), tied embeddings (no lm_head.weight), "
              "2 safetensors shards + model.safetensors.index.json"),
    dict(name="llama_mqa_bf16", arch="LlamaForCausalLM",
         cfg=dict(num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=3), tie=False,
         dtype="bfloat16", shards=1,
         what="Llama MQA (4 heads, 1 KV head), 3 layers, weights bf16 on disk (reference: "
              "the bf16 values upcast to f32)"),
    dict(name="mistral_f16", arch="MistralForCausalLM",
         cfg=dict(num_attention_heads=8, num_key_value_heads=2, rope_theta=1000000.0, sliding_window=None),
         tie=False, dtype="float16", shards=1,
         what="Mistral, GQA 8 heads (head_dim 8) / 2 KV heads, rope_theta 1e6, weights f16 on disk"),
    dict(name="qwen2_bias_tied", arch="Qwen2ForCausalLM",
         cfg=dict(vocab_size=320, num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=4096, max_window_layers=2),
         tie=True, dtype="float32", shards=1,
         what="Qwen2: biases on q/k/v (none on o), GQA 4/2, tied embeddings, vocab 320"),
    dict(name="internlm2_packed", arch="InternLM2ForCausalLM",
         cfg=dict(num_attention_heads=8, num_key_value_heads=2, rope_theta=1000000.0), tie=False,
         dtype="float32", shards=1,
         what="InternLM2: packed attention.wqkv ([q x4, k, v] per KV group, 8 heads / 2 KV "
              "heads), InternLM2 weight names, untied output.weight"),
    dict(name="llama3_rope", arch="LlamaForCausalLM",
         cfg=dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0, max_position_embeddings=512,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=64)),
         tie=False, dtype="bfloat16", shards=1,
         what="Llama 3 rope_scaling (factor 8, low 1, high 4, original 64): head_dim 16 has "
              "frequencies in all three bands"),
    dict(name="llama_linear_rope", arch="LlamaForCausalLM",
         cfg=dict(num_attention_heads=4, num_key_value_heads=2, rope_scaling=dict(type="linear", factor=4.0)),
         tie=False, dtype="bfloat16", shards=1,
         what="Llama rope_scaling linear factor 4 (old 'type' key)"),
    dict(name="llama_dynamic_ntk", arch="LlamaForCausalLM",
         cfg=dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rope_scaling=dict(type="dynamic", factor=2.0)),
         tie=False, dtype="float32", shards=1,
         what="Llama dynamic NTK (factor 2, max_position_embeddings 64): the long sequence "
              "(100 tokens) runs past the trained length, so the base is rescaled for it"),
    # issue 16, "Models": sliding windows and the yarn / longrope RoPE types
    dict(name="mistral_swa", arch="MistralForCausalLM",
         cfg=dict(num_attention_heads=8, num_key_value_heads=2, sliding_window=4),
         tie=False, dtype="float32", shards=1,
         alts=[("sliding_window null (full attention)", dict(sliding_window=None))],
         what="Mistral sliding_window 4 on every layer: a query at p sees keys p-3..p"),
    dict(name="qwen2_swa", arch="Qwen2ForCausalLM",
         cfg=dict(num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, use_sliding_window=True, sliding_window=6, max_window_layers=1),
         tie=False, dtype="float32", shards=1,
         alts=[("use_sliding_window false", dict(use_sliding_window=False)),
               ("window on every layer (max_window_layers 0)", dict(max_window_layers=0))],
         what="Qwen2 use_sliding_window, sliding_window 6, max_window_layers 1 of 3 layers: layer 0 "
              "full attention, layers 1-2 windowed"),
    dict(name="llama_yarn", arch="LlamaForCausalLM",
         cfg=dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                  rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=2048)),
         tie=False, dtype="float32", shards=1,
         what="Llama rope_scaling yarn (factor 4, original 2048; head_dim 16: the ramp spans dims 2..6, "
              "attention factor 0.1 ln 4 + 1 on cos/sin)"),
    dict(name="llama_longrope", arch="LlamaForCausalLM",
         cfg=dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  original_max_position_embeddings=64,
                  rope_scaling=dict(type="longrope",
                                    short_factor=[1.0, 1.02, 1.05, 1.1, 1.2, 1.35, 1.5, 1.8],
                                    long_factor=[1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 12.0, 16.0])),
         tie=False, dtype="float32", shards=1,
         alts=[("rope_scaling removed", dict(rope_scaling=None, original_max_position_embeddings=None)),
               ("long_factor := short_factor",
                dict(rope_scaling=dict(type="longrope", short_factor=[1.0, 1.02, 1.05, 1.1, 1.2, 1.35, 1.5, 1.8],
                                       long_factor=[1.0, 1.02, 1.05, 1.1, 1.2, 1.35, 1.5, 1.8])))],
         extra_seqs=dict(cross=56),
         what="Llama rope_scaling longrope, Phi-3 style (original_max_position_embeddings 64 at top level, "
              "max 256: attention factor sqrt(1 + ln 4 / ln 64)): the 20-token sequence uses short_factor, "
              "the 100-token one long_factor, the 56-token one crosses 64 while generating (with the KV "
              "cache the keys written before keep short_factor's rotation)"),
]


def versions():
    import gguf  # noqa: F401
    from importlib.metadata import version
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}
    for pkg in ("gguf", "safetensors", "tokenizers", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - optional
            out[pkg] = None
    return out


# --------------------------------------------------------------------------------------------
# Weights: a non-trivial random init so logits have a scale of a few units, attention is not
# uniform and RoPE matters (scores of std ~2), and norm weights are not all ones.
# --------------------------------------------------------------------------------------------

def init_llama_like(model, seed):
    g = torch.Generator().manual_seed(seed)

    def rnd(shape, std):
        return torch.randn(shape, generator=g) * std

    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        if k.endswith("norm.weight") or "layernorm" in k:
            new[k] = 1.0 + rnd(v.shape, 0.1)
        elif "embed_tokens" in k:
            new[k] = rnd(v.shape, 0.5)
        elif k.endswith(".bias"):
            new[k] = rnd(v.shape, 0.2)
        elif k == "lm_head.weight":
            new[k] = rnd(v.shape, 2.0 / math.sqrt(v.shape[1]))
        elif k.endswith(".weight"):
            gain = 1.5 if ("q_proj" in k or "k_proj" in k) else 1.0
            new[k] = rnd(v.shape, gain / math.sqrt(v.shape[1]))
        else:
            raise RuntimeError(f"unexpected tensor {k}")
    if model.config.tie_word_embeddings:
        new["lm_head.weight"] = new["model.embed_tokens.weight"]
    model.load_state_dict(new, strict=True)


def hf_config_dict(spec):
    """config.json in the classic transformers-4 layout (rope_theta / rope_scaling at top
    level) that real checkpoints carry; transformers 5 reads it and would itself write
    `rope_parameters` instead."""
    c = dict(BASE)
    c.update(spec["cfg"])
    arch = spec["arch"]
    model_type = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                  "Qwen2ForCausalLM": "qwen2", "InternLM2ForCausalLM": "internlm2"}[arch]
    out = {"architectures": [arch], "model_type": model_type}
    out.update({k: c[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                                  "rms_norm_eps", "rope_theta")})
    out["hidden_act"] = "silu"
    out["rope_scaling"] = c.get("rope_scaling")
    out["tie_word_embeddings"] = spec["tie"]
    out["bos_token_id"] = 1
    out["eos_token_id"] = 2
    out["torch_dtype"] = spec["dtype"]
    out["initializer_range"] = 0.02
    out["use_cache"] = True
    if model_type == "llama":
        out["attention_bias"] = False
        out["mlp_bias"] = False
        out["pretraining_tp"] = 1
    if c.get("original_max_position_embeddings") is not None:
        out["original_max_position_embeddings"] = c["original_max_position_embeddings"]   # Phi-3 style
    if model_type in ("mistral", "qwen2"):
        out["sliding_window"] = c.get("sliding_window")
    if model_type == "qwen2":
        out["use_sliding_window"] = c["use_sliding_window"]
        out["max_window_layers"] = c["max_window_layers"]
    if model_type == "internlm2":
        out["bias"] = False
        out["pad_token_id"] = 2
        out["attn_implementation"] = "eager"
    out["transformers_version"] = transformers.__version__
    return out


def write_checkpoint(outdir, tensors, dtype, shards):
    """tensors: name -> f32 tensor, in HF order.  Writes model.safetensors, or `shards`
    files model-0000i-of-0000n.safetensors plus model.safetensors.index.json."""
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    tensors = {k: v.detach().to(tdt).contiguous() for k, v in tensors.items()}
    meta = {"format": "pt"}
    if shards == 1:
        save_file(tensors, os.path.join(outdir, "model.safetensors"), metadata=meta)
        return
    names = list(tensors)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    per = math.ceil(len(names) / shards)
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in names[i * per:(i + 1) * per]}
        save_file(part, os.path.join(outdir, fname), metadata=meta)
        for k in part:
            weight_map[k] = fname
    with open(os.path.join(outdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)


def load_checkpoint_f32(outdir):
    from safetensors.torch import load_file
    out = {}
    for fn in sorted(os.listdir(outdir)):
        if fn.endswith(".safetensors"):
            out.update({k: v.float() for k, v in load_file(os.path.join(outdir, fn)).items()})
    return out


# --------------------------------------------------------------------------------------------
# InternLM2 reference, after the published modeling_internlm2.py (internlm/internlm2-*).
# --------------------------------------------------------------------------------------------

def pack_internlm2(llama_sd, cfg):
    """HF Llama names/layout -> InternLM2 names with wqkv packed per KV group."""
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // nh
    grp = nh // nkv
    out = {"model.tok_embeddings.weight": llama_sd["model.embed_tokens.weight"]}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        q = llama_sd[p + "self_attn.q_proj.weight"].view(nkv, grp, hd, -1)
        k = llama_sd[p + "self_attn.k_proj.weight"].view(nkv, 1, hd, -1)
        v = llama_sd[p + "self_attn.v_proj.weight"].view(nkv, 1, hd, -1)
        out[p + "attention.wqkv.weight"] = torch.cat([q, k, v], dim=1).reshape(nkv * (grp + 2) * hd, -1)
        out[p + "attention.wo.weight"] = llama_sd[p + "self_attn.o_proj.weight"]
        out[p + "feed_forward.w1.weight"] = llama_sd[p + "mlp.gate_proj.weight"]
        out[p + "feed_forward.w3.weight"] = llama_sd[p + "mlp.up_proj.weight"]
        out[p + "feed_forward.w2.weight"] = llama_sd[p + "mlp.down_proj.weight"]
        out[p + "attention_norm.weight"] = llama_sd[p + "input_layernorm.weight"]
        out[p + "ffn_norm.weight"] = llama_sd[p + "post_attention_layernorm.weight"]
    out["model.norm.weight"] = llama_sd["model.norm.weight"]
    out["output.weight"] = llama_sd["lm_head.weight"]
    return out


class InternLM2Ref:
    """Forward of InternLM2ForCausalLM (no KV cache: the full sequence each call), f32."""

    def __init__(self, cfg, sd):
        self.cfg, self.sd = cfg, sd
        self.nh, self.nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.hd = cfg["hidden_size"] // self.nh
        assert cfg.get("rope_scaling") is None, "only default RoPE is mirrored here"
        base = cfg["rope_theta"]
        self.inv_freq = 1.0 / (base ** (torch.arange(0, self.hd, 2).float() / self.hd))

    def _rms(self, x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + self.cfg["rms_norm_eps"]))

    @staticmethod
    def _rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def logits(self, ids):
        sd, nh, nkv, hd = self.sd, self.nh, self.nkv, self.hd
        gs = 2 + nh // nkv                        # rows per KV group in wqkv: q.., k, v
        T = len(ids)
        x = sd["model.tok_embeddings.weight"][torch.tensor(ids)]          # [T, D]
        t = torch.arange(T).float()
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]             # [T, 1, hd]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = self._rms(x, sd[p + "attention_norm.weight"])
            qkv = (h @ sd[p + "attention.wqkv.weight"].T).view(T, nkv, gs, hd)  # "b q (h gs d)"
            q = qkv[:, :, : gs - 2, :].reshape(T, nh, hd)                    # "(h gs) d"
            k = qkv[:, :, -2, :]
            v = qkv[:, :, -1, :]
            q = q * cos + self._rotate_half(q) * sin
            k = k * cos + self._rotate_half(k) * sin
            k = k.repeat_interleave(nh // nkv, dim=1)                        # repeat_kv
            v = v.repeat_interleave(nh // nkv, dim=1)
            s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd) + mask
            a = torch.einsum("hqk,khd->qhd", torch.softmax(s, dim=-1), v).reshape(T, nh * hd)
            x = x + a @ sd[p + "attention.wo.weight"].T
            h = self._rms(x, sd[p + "ffn_norm.weight"])
            f = torch.nn.functional.silu(h @ sd[p + "feed_forward.w1.weight"].T) * (h @ sd[p + "feed_forward.w3.weight"].T)
            x = x + f @ sd[p + "feed_forward.w2.weight"].T
        x = self._rms(x, sd["model.norm.weight"])
        return x @ sd["output.weight"].T                                   # [T, V]


# --------------------------------------------------------------------------------------------
# Reference computations
# --------------------------------------------------------------------------------------------

def load_hf(outdir):
    # A fresh model per computation: dynamic NTK keeps state (the cached max length) in the
    # rotary module, which must not leak from one sequence into the next.
    m = AutoModelForCausalLM.from_pretrained(outdir, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


@torch.no_grad()
def hf_logits(outdir, ids):
    m = load_hf(outdir)
    return m(input_ids=torch.tensor([ids])).logits[0].float()


def margin_of(row):
    top2 = torch.topk(row, 2).values
    return float(top2[0] - top2[1])


@torch.no_grad()
def hf_greedy_cached(outdir, ids, n):
    """Greedy with the KV cache, i.e. how transformers generates: for dynamic NTK the keys
    of earlier positions keep the rotation of the step that wrote them."""
    m = load_hf(outdir)
    out = m(input_ids=torch.tensor([ids]), use_cache=True)
    toks, margins = [], []
    for _ in range(n):
        row = out.logits[0, -1]
        nxt = int(torch.argmax(row))
        toks.append(nxt)
        margins.append(margin_of(row))
        out = m(input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
    return toks, margins


def greedy_nocache(logits_fn, ids, n):
    """Greedy by recomputing the whole sequence each step (what repeated `tessera logits`
    calls, or one teacher-forced call, reproduce)."""
    seq, toks, margins = list(ids), [], []
    for _ in range(n):
        row = logits_fn(seq)[-1]
        nxt = int(torch.argmax(row))
        toks.append(nxt)
        margins.append(margin_of(row))
        seq.append(nxt)
    return toks, margins


def make_tiny(spec, vers):
    name = spec["name"]
    outdir = os.path.join(FIXTURES, name)
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    cfgd = hf_config_dict(spec)
    seed = 1000 + SPECS.index(spec)

    # Build the weights on an HF Llama-family module (InternLM2: on a Llama with the same
    # shapes, then packed).
    if spec["arch"] == "InternLM2ForCausalLM":
        lcfg = {k: v for k, v in cfgd.items() if k not in ("architectures", "model_type", "bias", "attn_implementation")}
        lcfg.update(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False, mlp_bias=False)
        hf = LlamaForCausalLM(LlamaConfig(**lcfg))
        init_llama_like(hf, seed)
        packed = pack_internlm2(hf.state_dict(), cfgd)
        write_checkpoint(outdir, packed, spec["dtype"], spec["shards"])
        with open(os.path.join(outdir, "config.json"), "w") as f:
            json.dump(cfgd, f, indent=2)
        ref = InternLM2Ref(cfgd, load_checkpoint_f32(outdir))
        logits_fn = ref.logits
        # Cross-check the reference against transformers' Llama on the unpacked weights.
        lldir = os.path.join(outdir, "_llama_check")
        os.makedirs(lldir)
        hf.save_pretrained(lldir)
        probe = list(range(3, 3 + 30))
        d = float((logits_fn(probe) - hf_logits(lldir, probe)).abs().max())
        shutil.rmtree(lldir)
        assert d < 1e-4, f"InternLM2Ref disagrees with LlamaForCausalLM on unpacked weights: {d}"
        print(f"  internlm2 reference vs HF Llama (unpacked): max|diff| = {d:.2e}")
    else:
        cls = getattr(transformers, spec["arch"])
        ccls = getattr(transformers, spec["arch"].replace("ForCausalLM", "Config"))
        hf = cls(ccls(**{k: v for k, v in cfgd.items() if k != "architectures"}))
        init_llama_like(hf, seed)
        sd = hf.state_dict()
        if spec["tie"]:
            sd.pop("lm_head.weight")
        write_checkpoint(outdir, sd, spec["dtype"], spec["shards"])
        with open(os.path.join(outdir, "config.json"), "w") as f:
            json.dump(cfgd, f, indent=2)
        # The config as transformers reads it back must mean what we wrote.
        rc = load_hf(outdir).config
        want = cfgd.get("rope_scaling") or {}
        got = rc.rope_parameters
        for k2, v2 in want.items():
            key = "rope_type" if k2 == "type" else k2
            assert got.get(key) == v2, (name, k2, got)
        assert float(got["rope_theta"]) == cfgd["rope_theta"], (name, got)
        assert rc.tie_word_embeddings == spec["tie"]
        logits_fn = lambda ids: hf_logits(outdir, ids)  # noqa: E731

    vocab = cfgd["vocab_size"]
    sensitivity = {}
    for attempt in range(50):
        g = np.random.default_rng(7000 + attempt)
        seqs = {"short": [int(x) for x in g.integers(3, vocab, SHORT_LEN)],
                "long": [int(x) for x in g.integers(3, vocab, LONG_LEN)]}
        for xname, xlen in (spec.get("extra_seqs") or {}).items():
            seqs[xname] = [int(x) for x in g.integers(3, vocab, xlen)]
        rec, ok = [], True
        for sname, ids in seqs.items():
            lg = logits_fn(ids)
            scale = max(1.0, float(lg.abs().max()))
            nc, ncm = greedy_nocache(logits_fn, ids, N_GREEDY)
            if spec["arch"] == "InternLM2ForCausalLM":
                ca, cam = nc, ncm     # default RoPE: cached == recomputed; the mirror has no cache
            else:
                ca, cam = hf_greedy_cached(outdir, ids, N_GREEDY)
            # Where the rotation depends on the length of the sequence in the forward call:
            # dynamic NTK past the trained length, longrope crossing original_max_position_embeddings.
            rtype = (cfgd.get("rope_scaling") or {}).get("type")
            lendep = (rtype == "dynamic" and len(ids) + N_GREEDY > cfgd["max_position_embeddings"]) or \
                (rtype == "longrope" and len(ids) <= cfgd["original_max_position_embeddings"] < len(ids) + N_GREEDY)
            if not lendep:
                assert ca == nc, f"{name}/{sname}: cached and recomputed greedy differ {ca} vs {nc}"
            mm = min(ncm + cam)
            if mm < MARGIN_MIN * scale:
                ok = False
                print(f"  {name}: attempt {attempt}: {sname} greedy margin {mm:.2e} too small, next seed")
                break
            # One forward over prompt + greedy tokens reproduces step-by-step greedy unless
            # the rotary base depends on the sequence length (dynamic NTK past the trained length).
            tf_ok = not lendep
            rec.append(dict(name=sname, ids=ids, logits_file=f"logits_{sname}.npy", teacher_forcing_valid=tf_ok,
                            logits_shape=list(lg.shape), max_abs_logit=float(lg.abs().max()),
                            greedy_cached=ca, greedy_cached_margins=[round(x, 6) for x in cam],
                            greedy_nocache=nc, greedy_nocache_margins=[round(x, 6) for x in ncm],
                            min_greedy_margin=mm, _logits=lg))
        if ok:
            break
    else:
        raise RuntimeError(f"{name}: no prompt seed with clear greedy margins")

    # How far the logits move without the feature under test: proof the fixture can fail.
    if spec.get("alts") or cfgd.get("rope_scaling") or spec["arch"] == "InternLM2ForCausalLM":
        alt = os.path.join(outdir, "_alt")
        shutil.copytree(outdir, alt)
        if spec["arch"] == "InternLM2ForCausalLM":
            # A loader that split wqkv as [all q; all k; all v] instead of per KV group.
            sd2 = dict(ref.sd)
            nh, nkv, hd = cfgd["num_attention_heads"], cfgd["num_key_value_heads"], ref.hd
            for i in range(cfgd["num_hidden_layers"]):
                w = sd2[f"model.layers.{i}.attention.wqkv.weight"]
                q, k, v = w[: nh * hd], w[nh * hd: (nh + nkv) * hd], w[(nh + nkv) * hd:]
                sd2[f"model.layers.{i}.attention.wqkv.weight"] = torch.cat(
                    [q.view(nkv, -1, hd, w.shape[1]), k.view(nkv, 1, hd, -1), v.view(nkv, 1, hd, -1)], 1
                ).reshape(w.shape)
            alt_fn, label = InternLM2Ref(cfgd, sd2).logits, "naive [q;k;v] split of wqkv"
        else:
            for label, over in spec.get("alts") or [("rope_scaling removed", dict(rope_scaling=None))]:
                c2 = {k: v for k, v in dict(cfgd, **over).items()
                      if v is not None or k != "original_max_position_embeddings"}
                with open(os.path.join(alt, "config.json"), "w") as f:
                    json.dump(c2, f)
                d = {r["name"]: round(float((hf_logits(alt, r["ids"]) - r["_logits"]).abs().max()), 5) for r in rec}
                if not sensitivity:
                    sensitivity = {"change": label, "max_abs_logit_diff": d}
                else:
                    sensitivity.setdefault("more", []).append({"change": label, "max_abs_logit_diff": d})
                print(f"  {name}: sensitivity ({label}): {d}")
        if spec["arch"] == "InternLM2ForCausalLM":
            sensitivity = {"change": label, "max_abs_logit_diff": {
                r["name"]: round(float((alt_fn(r["ids"]) - r["_logits"]).abs().max()), 5) for r in rec}}
            print(f"  {name}: sensitivity ({label}): {sensitivity['max_abs_logit_diff']}")
        shutil.rmtree(alt)

    for r in rec:
        np.save(os.path.join(outdir, r["logits_file"]), r.pop("_logits").numpy().astype("<f4"))
    exp = dict(
        name=name, description=spec["what"], architecture=spec["arch"],
        dtype_on_disk=spec["dtype"], shards=spec["shards"], tied_embeddings=spec["tie"],
        vocab_size=vocab, prompt_seed_attempt=attempt, model_seed=seed,
        reference=("InternLM2Ref in make_fixtures.py (mirrors modeling_internlm2.py; checked against "
                   "LlamaForCausalLM on the unpacked weights)") if spec["arch"] == "InternLM2ForCausalLM"
        else f"transformers {spec['arch']}, float32, eager attention, loaded from this directory",
        notes=("greedy_cached: generation with the KV cache (the prompt prefilled at once, then one "
               "token per step; cached keys keep their rotation). greedy_nocache: the whole sequence "
               "recomputed every step. They differ only where the rotation depends on the length: dynamic "
               "NTK past max_position_embeddings, longrope crossing original_max_position_embeddings."),
        sensitivity=sensitivity, sequences=rec, versions=vers, generator="tests/golden/make_fixtures.py")
    with open(os.path.join(outdir, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    diff = [r["greedy_cached"] != r["greedy_nocache"] for r in rec]
    print(f"  {name}: seed attempt {attempt}, max|logit| {[round(r['max_abs_logit'], 2) for r in rec]}, "
          f"min margin {[round(r['min_greedy_margin'], 4) for r in rec]}, cached!=nocache {diff}")


# --------------------------------------------------------------------------------------------
# The default model through transformers' GGUF loader
# --------------------------------------------------------------------------------------------

GGUF_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "List three prime numbers and explain why they are prime."}],
    [{"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
     {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Hi! Who are you?"},
     {"role": "assistant", "content": "I am SmolLM, a small language model. How can I help?"},
     {"role": "user", "content": "Translate 'good morning' into Spanish and German."}],
]


@torch.no_grad()
def make_gguf(path, vers):
    from transformers import AutoTokenizer
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cases = []
    for msgs in GGUF_PROMPTS:
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids2 = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        ids2 = ids2["input_ids"] if isinstance(ids2, dict) or hasattr(ids2, "keys") else ids2
        assert list(ids) == list(ids2), "rendered-then-encoded ids differ from apply_chat_template ids"
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
        toks, margins, tops = [], [], []
        for _ in range(N_GREEDY_GGUF):
            row = out.logits[0, -1].float()
            tv, ti = torch.topk(row, TOPK_GGUF)
            tops.append(dict(ids=[int(x) for x in ti], logits=[float(x) for x in tv]))
            nxt = int(ti[0])
            toks.append(nxt)
            margins.append(float(tv[0] - tv[1]))
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
        eos = tok.eos_token_id
        first_eos = toks.index(eos) if eos in toks else None
        cases.append(dict(messages=msgs, rendered=text, prompt_ids=list(ids), greedy=toks,
                          greedy_margins=[round(x, 6) for x in margins], first_eos_index=first_eos,
                          completion_text=tok.decode(toks[:first_eos] if first_eos is not None else toks),
                          top_logits=tops))
        print(f"  gguf prompt {len(cases)}: {len(ids)} prompt ids, min margin {min(margins):.4f}, "
              f"eos at {first_eos}: {cases[-1]['completion_text']!r}")
    outp = os.path.join(FIXTURES, "smollm2_gguf.json")
    with open(outp, "w") as fo:
        json.dump(dict(
            model_file=os.path.basename(path), model_size_bytes=os.path.getsize(path),
            reference="transformers AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32) "
                      "(dequantized to f32), eager attention, greedy with the KV cache, EOS not stopping; "
                      "tokenizer and chat template from the same GGUF via AutoTokenizer(gguf_file=...)",
            eos_token_id=tok.eos_token_id, n_greedy=N_GREEDY_GGUF, topk=TOPK_GGUF,
            top_logits_note="top_logits[i]: the top-k (ids, logits) of the position that predicts greedy[i]",
            cases=cases, versions=vers, generator="tests/golden/make_fixtures.py"), fo, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="tiny fixture names to (re)make")
    ap.add_argument("--skip-gguf", action="store_true")
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--gguf", default=os.path.join(os.environ.get("TESSERA_HOME", os.path.expanduser("~/.cache/tessera")),
                                                   "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    vers = versions()
    os.makedirs(FIXTURES, exist_ok=True)
    if not a.skip_tiny:
        for spec in SPECS:
            if a.only and spec["name"] not in a.only:
                continue
            print(f"{spec['name']}: {spec['what']}")
            make_tiny(spec, vers)
    if not a.skip_gguf:
        print(f"default model: {a.gguf}")
        make_gguf(a.gguf, vers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
