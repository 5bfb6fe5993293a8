#!/usr/bin/env python3
"""Makes the int4 checkpoints of tests/golden/quant_fixtures (issue 13) and what transformers
computes on them.  Needs torch, transformers and llmcompressor (CPU is enough); CI has none of
them, so the outputs are committed and tests/golden/test_quant.py only reads them.

1. A tiny random-weight Llama (GQA, untied head; init as make_fixtures.py) is quantized by
   llmcompressor (a real quantizer from PyPI: QuantizationModifier, round-to-nearest int4 in
   groups along `in`, f16 scales) and saved by it as compressed-tensors pack-quantized:
     ct_asym_g32  asymmetric (zero points), groups of 32 -- the model TP=2 splits;
     ct_sym_g64   symmetric, groups of 64 -- o_proj's 64 inputs cannot split in 2 at group edges.
2. The same integers, scales and zero points of ct_asym_g32 repacked by this script, from the
   formats' documentation, as
     awq_g32      AutoAWQ GEMM (qweight [in, out/8] in AWQ's order 0,2,4,6,1,3,5,7; qzeros; scales)
     gptq_g32     GPTQ, checkpoint_format "gptq" (qweight [in/8, out], qzeros stored z - 1, g_idx)
   (autoawq and gptqmodel need CUDA to quantize; transformers' loaders for these formats need
   their CUDA kernels too, so the script checks its own unpacking reproduces ct_asym_g32's
   dequantized weights exactly, and the reference is ct_asym_g32's).
3. gptq_desc_act: GPTQ with desc_act (g_idx a permutation of groups), quantized here by
   round-to-nearest; reference: transformers' Llama run on the numpy dequantization.
Each directory holds config.json, model.safetensors, expected.json (ids, HF greedy
continuation, margins) and logits_<seq>.npy (f32, every position) from transformers in f32,
loading the checkpoint as written (compressed-tensors decompresses it at load).

Usage: python tests/golden/make_quant_fixtures.py   (in a venv with torch + llmcompressor)
"""
import json
import math
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "quant_fixtures")
CFG = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
           tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
SEQS = {"short": 20, "long": 32}
N_GREEDY = 12
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]   # nibble p of an AutoAWQ word holds output 8j + AWQ_ORDER[p]


def tiny_model(seed):
    torch.manual_seed(seed)
    m = LlamaForCausalLM(LlamaConfig(**CFG)).float().eval()
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in m.state_dict().items():   # make_fixtures.py's init: logits of a few units
        if "norm" in k:
            sd[k] = 1.0 + torch.randn(v.shape, generator=g) * 0.1
        elif "embed_tokens" in k:
            sd[k] = torch.randn(v.shape, generator=g) * 0.5
        elif k == "lm_head.weight":
            sd[k] = torch.randn(v.shape, generator=g) * 2.0 / math.sqrt(v.shape[1])
        else:
            gain = 1.5 if ("q_proj" in k or "k_proj" in k) else 1.0
            sd[k] = torch.randn(v.shape, generator=g) * gain / math.sqrt(v.shape[1])
    m.load_state_dict(sd)
    return m


def quantize_llmcompressor(model, outdir, symmetric, group):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    args = QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy="group", group_size=group,
                            scale_dtype=torch.float16)
    recipe = QuantizationModifier(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
                                  ignore=["lm_head"])
    dense_dir = outdir + ".dense"   # llmcompressor reads the model's config back from its path
    model.save_pretrained(dense_dir)
    model.config._name_or_path = model.name_or_path = dense_dir
    oneshot(model=model, recipe=recipe)
    model.save_pretrained(outdir, save_compressed=True)
    shutil.rmtree(dense_dir)
    # embedding and LM head as f16 on disk: the fixtures stay under 1 MB (the reference is
    # computed from the file as written)
    f = os.path.join(outdir, "model.safetensors")
    sd = load_file(f)
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        sd[k] = sd[k].astype(np.float16)
    save_file(sd, f, metadata={"format": "pt"})
    for fn in os.listdir(outdir):
        if fn not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(outdir, fn))


def unpack_rows(words, n):
    """int32 [..., k] -> uint8 [..., 8k]: nibble i of word j is element 8j + i."""
    w = words.astype(np.uint32)
    out = np.stack([(w >> (4 * i)) & 15 for i in range(8)], axis=-1)
    return out.reshape(*w.shape[:-1], -1)[..., :n].astype(np.int32)


def pack_rows(vals):
    """uint [..., 8k] -> int32 [..., k], element 8j + i in nibble i of word j."""
    v = vals.astype(np.uint32).reshape(*vals.shape[:-1], -1, 8)
    w = np.zeros(v.shape[:-1], np.uint32)
    for i in range(8):
        w |= (v[..., i] & 15) << (4 * i)
    return w.view(np.int32)


def ct_layers(sd, group):
    """{prefix: (u [out, in], z [out, groups], s f16 [out, groups])} of a compressed-tensors file."""
    out = {}
    for k in sd:
        if not k.endswith(".weight_packed"):
            continue
        p = k[:-len(".weight_packed")]
        rows, cols = (int(x) for x in sd[p + ".weight_shape"])
        u = unpack_rows(sd[k], cols)
        s = sd[p + ".weight_scale"]
        if p + ".weight_zero_point" in sd:
            z = unpack_rows(sd[p + ".weight_zero_point"].T, rows).T   # packed along `out`
        else:
            z = np.full(s.shape, 8, np.int32)
        # scale_dtype float16: the scales are f16 values (saved as the model's f32), so the f16
        # scales of AWQ/GPTQ and of Tessera's INT4G hold them exactly
        assert s.shape == (rows, cols // group) and np.array_equal(s.astype(np.float16).astype(s.dtype), s)
        out[p] = (u, z, s.astype(np.float16))
    return out


def dequant(u, z, s, group):
    gi = np.arange(u.shape[1]) // group
    return ((u - z[:, gi]).astype(np.float32) * s[:, gi].astype(np.float32))


def write_awq(src_dir, outdir, group):
    sd = load_file(os.path.join(src_dir, "model.safetensors"))
    new = {k: v for k, v in sd.items() if not k.split(".")[-1].startswith("weight_")}
    for p, (u, z, s) in ct_layers(sd, group).items():
        def awq_pack(m):   # m [n, out] -> [n, out/8] with AWQ's interleave
            m = m.reshape(m.shape[0], -1, 8)[:, :, AWQ_ORDER].reshape(m.shape[0], -1)
            return pack_rows(m)
        new[p + ".qweight"] = awq_pack(u.T)
        new[p + ".qzeros"] = awq_pack(z.T)
        new[p + ".scales"] = np.ascontiguousarray(s.T)
        # check: AutoAWQ's documented unpacking gives back the same integers
        back = unpack_rows(new[p + ".qweight"], u.shape[0])
        back = back.reshape(back.shape[0], -1, 8)[:, :, np.argsort(AWQ_ORDER)].reshape(back.shape[0], -1)
        assert (back == u.T).all()
    save(outdir, new, {"quant_method": "awq", "version": "gemm", "bits": 4, "group_size": group,
                       "zero_point": True, "modules_to_not_convert": None})


def write_gptq(src_dir, outdir, group):
    sd = load_file(os.path.join(src_dir, "model.safetensors"))
    new = {k: v for k, v in sd.items() if not k.split(".")[-1].startswith("weight_")}
    for p, (u, z, s) in ct_layers(sd, group).items():
        new[p + ".qweight"] = pack_rows(u).T.copy()                                          # [in/8, out]
        new[p + ".qzeros"] = pack_rows(((z - 1) & 15).T)                                     # v1: z - 1
        new[p + ".scales"] = np.ascontiguousarray(s.T)
        new[p + ".g_idx"] = (np.arange(u.shape[1]) // group).astype(np.int32)
    save(outdir, new, {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False, "sym": False,
                       "checkpoint_format": "gptq"})


def write_gptq_desc_act(dense, outdir, group, seed):
    """Round-to-nearest asymmetric int4 with g_idx a random assignment of input channels to
    groups of `group` (what desc_act produces: groups follow activation order, not position)."""
    rng = np.random.default_rng(seed)
    new, deq = {}, {}
    for k, v in dense.items():
        p = k[:-len(".weight")]
        if not any(p.endswith(n) for n in LINEARS):
            new[k] = v
            continue
        w = v.astype(np.float32)   # [out, in]
        cols = w.shape[1]
        g_idx = (rng.permutation(cols) // group).astype(np.int32)
        ng = cols // group
        u = np.zeros(w.shape, np.int32)
        z = np.zeros((w.shape[0], ng), np.int32)
        s = np.zeros((w.shape[0], ng), np.float16)
        for g in range(ng):
            idx = np.nonzero(g_idx == g)[0]
            lo, hi = np.minimum(w[:, idx].min(1), 0), np.maximum(w[:, idx].max(1), 0)
            sc = ((hi - lo) / 15).astype(np.float16)
            zz = np.clip(np.round(-lo / sc.astype(np.float32)), 0, 15).astype(np.int32)
            u[:, idx] = np.clip(np.round(w[:, idx] / sc.astype(np.float32)[:, None]) + zz[:, None], 0, 15)
            z[:, g], s[:, g] = zz, sc
        deq[k] = (u - z[:, g_idx]).astype(np.float32) * s[:, g_idx].astype(np.float32)
        new[p + ".qweight"] = pack_rows(u).T.copy()
        new[p + ".qzeros"] = pack_rows(((z - 1) & 15).T)
        new[p + ".scales"] = np.ascontiguousarray(s.T)
        new[p + ".g_idx"] = g_idx
    save(outdir, new, {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": True, "sym": False,
                       "checkpoint_format": "gptq"})
    return deq


def save(outdir, tensors, qc):
    os.makedirs(outdir, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(outdir, "model.safetensors"),
              metadata={"format": "pt"})
    cfg = json.load(open(os.path.join(OUT, "ct_asym_g32", "config.json")))
    cfg["quantization_config"] = qc
    json.dump(cfg, open(os.path.join(outdir, "config.json"), "w"), indent=2)


@torch.no_grad()
def reference(model, outdir, what):
    seqs = {}
    g = torch.Generator().manual_seed(7)
    for name, n in SEQS.items():
        ids = [1] + torch.randint(3, CFG["vocab_size"], (n - 1,), generator=g).tolist()
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        np.save(os.path.join(outdir, f"logits_{name}.npy"), logits.numpy().astype(np.float32))
        seq, toks, margins = list(ids), [], []
        for _ in range(N_GREEDY):
            row = model(input_ids=torch.tensor([seq])).logits[0, -1]
            top = torch.topk(row, 2)
            toks.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            seq.append(toks[-1])
        seqs[name] = dict(ids=ids, greedy=toks, greedy_margins=margins)
    exp = dict(what=what, transformers=transformers.__version__, torch=torch.__version__,
               sequences=[dict(name=k, **v) for k, v in seqs.items()])
    json.dump(exp, open(os.path.join(outdir, "expected.json"), "w"), indent=1)


def load_hf(d):
    """transformers loading a compressed-tensors checkpoint, decompressed to f32 weights at load."""
    from transformers.utils.quantization_config import CompressedTensorsConfig
    return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                quantization_config=CompressedTensorsConfig(run_compressed=False)).eval()


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    import llmcompressor
    ver = f"llmcompressor {llmcompressor.__version__}"
    for name, sym, group, seed in (("ct_asym_g32", False, 32, 11), ("ct_sym_g64", True, 64, 12)):
        d = os.path.join(OUT, name)
        quantize_llmcompressor(tiny_model(seed), d, sym, group)
        m = load_hf(d)
        # transformers' decompression equals the documented formula on the file's integers
        sd = load_file(os.path.join(d, "model.safetensors"))
        hf_sd = m.state_dict()
        for p, (u, z, s) in ct_layers(sd, group).items():
            assert np.array_equal(hf_sd[p + ".weight"].numpy(), dequant(u, z, s, group)), p
        reference(m, d, f"{ver}, compressed-tensors pack-quantized, {'sym' if sym else 'asym'}, group {group}")
    src = os.path.join(OUT, "ct_asym_g32")
    ref_model = load_hf(src)
    for name, fn in (("awq_g32", write_awq), ("gptq_g32", write_gptq)):
        d = os.path.join(OUT, name)
        fn(src, d, 32)
        reference(ref_model, d, f"{ver} integers of ct_asym_g32 repacked as {name} by this script")
    d = os.path.join(OUT, "gptq_desc_act")
    base = tiny_model(13)
    dense = {k: v.numpy() for k, v in base.state_dict().items()}
    deq = write_gptq_desc_act(dense, d, 32, 13)
    sd = base.state_dict()
    for k, v in deq.items():
        sd[k] = torch.from_numpy(v)
    base.load_state_dict(sd)
    reference(base, d, "GPTQ desc_act layout, round-to-nearest by this script; reference on numpy dequantization")
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
