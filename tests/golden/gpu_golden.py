#!/usr/bin/env python3
"""Golden comparison on the GPU host (issue 5): random-weight HF models made here with
transformers, in bf16 and fp16, against `tessera logits --backend cuda` (TESSERA_DTYPE picks
the GPU's compute type), and TP = 2 (TP = 4) against TP = 1 where there are GPUs for it.

For every model x dtype x prompt: the prompt plus 24 greedy tokens of HF in float32 (no cache,
so the sequence is HF's own continuation) is fed to both sides in one forward; then
  - logits: tessera (dtype) vs HF float32 and vs HF in the same dtype on the GPU, as relative
    errors |a - b| / rms(b) per element: max and mean;
  - greedy agreement against HF float32 (the reference), tie-aware, as is usual for low
    precision: a position counts only where the reference's top-1/top-2 logit margin exceeds
    what the dtype alone can move a logit, tau = 2 x the mean |HF-dtype - HF-f32| logit error
    of this model, measured here over the continuation rows on the 8 largest f32 logits of each
    (the candidates of the pick: rounding error grows with the logit, so the all-vocab mean,
    also reported, understates it; tau uses the larger of the two); random models
    have many near-ties, where any bf16 implementation (HF's own included) flips picks.
    Beside it, unfiltered ("raw"): tessera vs HF f32, HF-in-dtype vs HF f32 (the reference's
    own noise: what the dtype alone flips) and tessera vs HF-in-dtype.
    The random lm_head has log-normal row norms so that the top-1 margin is realistic.
Pass: filtered agreement >= 99%, raw agreement >= (HF-dtype vs f32 raw) - 0.02, mean relative
error under a per-dtype bound, and TP=N == TP=1 on >= 99% of positions.  Writes
OUT/golden.json and OUT/golden.md (a table); exit 1 on any failure.

Usage: python3 tests/golden/gpu_golden.py --bin build-gpu/tools/tessera --out DIR [--quick]
Needs torch + transformers + safetensors (the GPU host has them); no network."""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

MEAN_REL_BOUND = {"bfloat16": 3e-2, "float16": 6e-3}
AGREE_BOUND = 0.99
RAW_SLACK = 0.03     # raw agreement may trail HF-dtype's own raw agreement with f32 by this much (96 positions: one is 0.0104)
TAU_FACTOR = 2.0     # margin threshold = TAU_FACTOR x mean |HF-dtype - HF-f32| logit error
N_GREEDY = 32

BASE = dict(vocab_size=2000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0)

# name, architecture, overrides, tied: one per architecture / RoPE variant the CPU backend has,
# with head sizes 64 (tensor-core prefill), 128 and 32 (the generic attention kernel).
MODELS = [
    dict(name="llama_gqa_hd64", arch="LlamaForCausalLM", cfg={}, tie=False),
    dict(name="llama_hd128_mha", arch="LlamaForCausalLM",
         cfg=dict(hidden_size=512, num_attention_heads=4, num_key_value_heads=4), tie=True),
    dict(name="llama_mqa_hd32", arch="LlamaForCausalLM", cfg=dict(num_attention_heads=16, num_key_value_heads=1),
         tie=False),
    dict(name="mistral_gqa", arch="MistralForCausalLM", cfg=dict(rope_theta=1000000.0, sliding_window=None), tie=False),
    dict(name="qwen2_bias", arch="Qwen2ForCausalLM",
         cfg=dict(rope_theta=1000000.0, sliding_window=None, use_sliding_window=False, max_window_layers=4), tie=True),
    dict(name="llama3_rope", arch="LlamaForCausalLM",
         cfg=dict(rope_theta=500000.0, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                          high_freq_factor=4.0, original_max_position_embeddings=128)),
         tie=False),
    dict(name="llama_linear_rope", arch="LlamaForCausalLM", cfg=dict(rope_scaling=dict(type="linear", factor=4.0)),
         tie=False),
    dict(name="llama_dynamic_ntk", arch="LlamaForCausalLM",
         cfg=dict(max_position_embeddings=128, rope_scaling=dict(type="dynamic", factor=2.0)), tie=False),
]
# InternLM2 is left out: transformers has no built-in class for it (remote code only).


def config_json(spec, dtype):
    c = dict(BASE)
    c.update(spec["cfg"])
    mt = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}[spec["arch"]]
    out = {"architectures": [spec["arch"]], "model_type": mt, "hidden_act": "silu", "tie_word_embeddings": spec["tie"],
           "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": dtype, "initializer_range": 0.02, "use_cache": True,
           "rope_scaling": c.get("rope_scaling")}
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta"):
        out[k] = c[k]
    if mt == "llama":
        out.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
    if mt in ("mistral", "qwen2"):
        out["sliding_window"] = c.get("sliding_window")
    if mt == "qwen2":
        out["use_sliding_window"] = c["use_sliding_window"]
        out["max_window_layers"] = c["max_window_layers"]
    return out


def make_model(spec, dtype, outdir, seed):
    """Random weights with the spread of a trained model (logits of a few units, attention far
    from uniform), stored in `dtype`; HF loads them back from the directory."""
    os.makedirs(outdir, exist_ok=True)
    cfg = config_json(spec, dtype)
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    from transformers import AutoConfig
    hf_cfg = AutoConfig.from_pretrained(outdir)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(hf_cfg)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if "norm" in k:
            t = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        elif "embed_tokens" in k:
            t = 0.5 * torch.randn(v.shape, generator=g)
        elif k.endswith(".bias"):
            t = 0.2 * torch.randn(v.shape, generator=g)
        elif k == "lm_head.weight":
            # Gaussian rows of one norm make the logits Gaussian: the top-1/top-2 gap is then a
            # small fixed fraction of their spread and bf16 rounding alone flips ~3% of greedy
            # picks (HF bf16 vs HF f32 agreed only 0.96-0.99 on the first H100 run).  Row norms
            # spread log-normally (as trained heads' are) give the maximum a realistic margin.
            t = torch.randn(v.shape, generator=g) * (3.0 / math.sqrt(v.shape[1]))
            t = t * torch.exp(0.7 * torch.randn(v.shape[0], 1, generator=g))
        else:
            gain = 1.5 if ("q_proj" in k or "k_proj" in k) else 1.0
            t = torch.randn(v.shape, generator=g) * (gain / math.sqrt(v.shape[1]))
        sd[k] = t
    if spec["tie"]:
        sd.pop("lm_head.weight", None)
    tdt = getattr(torch, dtype)
    save_file({k: v.to(tdt).contiguous() for k, v in sd.items()}, os.path.join(outdir, "model.safetensors"),
              metadata={"format": "pt"})


def load_hf(d, dtype, device):
    m = AutoModelForCausalLM.from_pretrained(d, dtype=getattr(torch, dtype), attn_implementation="eager")
    return m.to(device).eval()


@torch.no_grad()
def hf_logits(d, dtype, device, ids):
    m = load_hf(d, dtype, device)  # fresh: dynamic NTK caches state in the rotary module
    return m(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()


@torch.no_grad()
def hf_greedy_f32(d, device, ids, n):
    m = load_hf(d, "float32", device)
    seq = list(ids)
    for _ in range(n):
        logits = m(input_ids=torch.tensor([seq], device=device)).logits[0, -1]
        seq.append(int(torch.argmax(logits)))
    return seq


def tessera_logits(binary, d, ids, dtype, vocab, tp=1, extra_env=None):
    out = tempfile.NamedTemporaryFile(suffix=".f32", delete=False).name
    env = dict(os.environ)
    env["TESSERA_DTYPE"] = {"bfloat16": "bf16", "float16": "f16"}[dtype]
    env.update(extra_env or {})
    cmd = [binary, "logits", d, "--ids", ",".join(map(str, ids)), "--all", "--out", out, "--backend", "cuda"]
    if tp > 1:
        cmd = ["mpirun", "-np", str(tp), "--oversubscribe"] + cmd + ["--tp", str(tp)]
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({r.returncode}): {r.stderr[-2000:]}")
    a = np.fromfile(out, dtype="<f4")
    os.unlink(out)
    return a.reshape(len(ids), vocab)


def rel_err(a, ref):
    scale = np.sqrt(np.mean(ref.astype(np.float64) ** 2, axis=-1, keepdims=True)) + 1e-12
    e = np.abs(a.astype(np.float64) - ref) / scale
    return float(e.max()), float(e.mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="two models, one prompt")
    ap.add_argument("--tp", type=int, default=0, help="also TP=N vs TP=1 (default: 2 when 2+ GPUs, 4 when 4+)")
    # A fixed seed by default, so that the lane is repeatable: with fresh random models every run,
    # the per-model raw-agreement bound (near-tie positions flip either way in bf16) failed one
    # run in a few with no change to the code.  --seed 0 draws from the clock, for exploring.
    ap.add_argument("--seed", type=int, default=20261202, help="seed of the random models (0: from the clock)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_gpu = torch.cuda.device_count()
    tps = [a.tp] if a.tp else [t for t in (2, 4) if n_gpu >= t]
    seed = a.seed or int(time.time())
    print(f"gpu_golden: models from seed {seed}", flush=True)
    rng = np.random.default_rng(seed)
    work = tempfile.mkdtemp(prefix="tsr_gpu_golden_")
    models = MODELS[:2] if a.quick else MODELS
    prompt_lens = [40] if a.quick else [17, 150, 301]
    rows, failures = [], 0
    # pooled over every model and prompt of a dtype: the issue's "at least 99% of positions over
    # a set of prompts"; one model's 70-odd positions are too few for a 0.99 bar on their own
    pooled = {}
    for spec in models:
        for dtype in ("bfloat16", "float16"):
            d = os.path.join(work, f"{spec['name']}_{dtype}")
            make_model(spec, dtype, d, seed=int(rng.integers(1 << 30)))
            V = BASE["vocab_size"]
            agg = dict(model=spec["name"], dtype=dtype, n_pos=0, agree=0, agree_f32=0, agree_hf_dtype=0, max_rel=0.0,
                       mean_rel=[], max_rel_hfdt=0.0, mean_rel_hfdt=[], tp={})
            # per continuation position, for the tie-aware count once tau is known
            margins, arg_t, arg_32, arg_dt, abs_err_sum, abs_err_n, top_err_sum, top_err_n = [], [], [], [], 0.0, 0, 0.0, 0
            arg_tp = {}
            for L in prompt_lens:
                ids = [int(x) for x in rng.integers(3, V, size=L)]
                seq = hf_greedy_f32(d, device, ids, N_GREEDY)
                ref32 = hf_logits(d, "float32", device, seq)
                refdt = hf_logits(d, dtype, device, seq)
                t0 = time.time()
                try:
                    got = tessera_logits(a.bin, d, seq, dtype, V)
                except Exception as e:  # noqa: BLE001
                    agg["error"] = str(e)[-1500:]
                    print(f"  {spec['name']} {dtype}: {agg['error']}", file=sys.stderr)
                    break
                cont = slice(L - 1, len(seq) - 1)  # positions whose argmax is a continuation token
                agg["n_pos"] += len(seq) - L
                # primary: tessera vs HF in the same dtype (the same function, rounded the same
                # way); information: vs HF f32, and HF-dtype vs HF f32 (what the dtype alone flips)
                agg["agree"] += int((got[cont].argmax(-1) == refdt[cont].argmax(-1)).sum())
                agg["agree_f32"] += int((got[cont].argmax(-1) == ref32[cont].argmax(-1)).sum())
                agg["agree_hf_dtype"] += int((refdt[cont].argmax(-1) == ref32[cont].argmax(-1)).sum())
                top2 = np.sort(ref32[cont], axis=-1)[:, -2:]
                margins.extend((top2[:, 1] - top2[:, 0]).tolist())
                arg_t.extend(got[cont].argmax(-1).tolist())
                arg_32.extend(ref32[cont].argmax(-1).tolist())
                arg_dt.extend(refdt[cont].argmax(-1).tolist())
                err = np.abs(refdt[cont].astype(np.float64) - ref32[cont])
                abs_err_sum += float(err.sum())
                abs_err_n += err.size
                top8 = np.argsort(ref32[cont], axis=-1)[:, -8:]
                top_err_sum += float(np.take_along_axis(err, top8, axis=-1).sum())
                top_err_n += top8.size
                mx, mn = rel_err(got, ref32)
                agg["max_rel"] = max(agg["max_rel"], mx)
                agg["mean_rel"].append(mn)
                mx2, mn2 = rel_err(got, refdt)
                agg["max_rel_hfdt"] = max(agg["max_rel_hfdt"], mx2)
                agg["mean_rel_hfdt"].append(mn2)
                for tp in tps:
                    try:
                        gtp = tessera_logits(a.bin, d, seq, dtype, V, tp=tp)
                        t = agg["tp"].setdefault(str(tp), dict(n=0, agree=0, max_rel=0.0))
                        t["n"] += len(seq)
                        t["agree"] += int((gtp.argmax(-1) == got.argmax(-1)).sum())
                        arg_tp.setdefault(str(tp), []).extend(gtp[cont].argmax(-1).tolist())
                        t["max_rel"] = max(t["max_rel"], rel_err(gtp, got)[0])
                    except Exception as e:  # noqa: BLE001
                        agg["tp"][str(tp)] = dict(error=str(e)[-500:])
                print(f"  {spec['name']} {dtype} L={L}: tessera {time.time() - t0:.1f}s, mean rel {mn:.2e}",
                      file=sys.stderr)
            if "error" in agg or agg["n_pos"] == 0:
                agg.update(mean_rel=float("nan"), mean_rel_hfdt=float("nan"), agree_frac=0.0, agree_hf_dtype_frac=0.0,
                           agree_f32_frac=0.0, agree_clear_frac=0.0, agree_clear_hf_dtype_frac=0.0, n_clear=0,
                           tau=float("nan"), pass_=False)
                agg["pass"] = False
                agg.pop("pass_")
                failures += 1
                rows.append(agg)
                write_tables(a.out, rows)
                continue
            agg["mean_rel"] = float(np.mean(agg["mean_rel"]))
            agg["mean_rel_hfdt"] = float(np.mean(agg["mean_rel_hfdt"]))
            agg["agree_frac"] = agg["agree"] / agg["n_pos"]
            agg["agree_hf_dtype_frac"] = agg["agree_hf_dtype"] / agg["n_pos"]
            agg["agree_f32_frac"] = agg["agree_f32"] / agg["n_pos"]
            # tie-aware: positions where the f32 reference's pick is clear of the dtype's noise
            agg["hf_dtype_abs_err_all"] = abs_err_sum / max(abs_err_n, 1)
            agg["hf_dtype_abs_err_top8"] = top_err_sum / max(top_err_n, 1)
            tau = TAU_FACTOR * max(agg["hf_dtype_abs_err_all"], agg["hf_dtype_abs_err_top8"])
            keep = np.array(margins) > tau
            at, a32, adt = np.array(arg_t), np.array(arg_32), np.array(arg_dt)
            agg["tau"] = tau
            agg["n_clear"] = int(keep.sum())
            agg["agree_clear_frac"] = float((at[keep] == a32[keep]).mean()) if keep.any() else 0.0
            agg["agree_clear_hf_dtype_frac"] = float((adt[keep] == a32[keep]).mean()) if keep.any() else 0.0
            ok = (agg["n_clear"] > 0
                  and agg["agree_f32_frac"] >= agg["agree_hf_dtype_frac"] - RAW_SLACK
                  and agg["mean_rel"] <= MEAN_REL_BOUND[dtype])
            pool = pooled.setdefault(dtype, dict(n=0, agree=0, hf=0, tp={}))
            pool["n"] += int(keep.sum())
            pool["agree"] += int((at[keep] == a32[keep]).sum())
            pool["hf"] += int((adt[keep] == a32[keep]).sum())
            for k, t in agg["tp"].items():
                if "error" in t:
                    ok = False
                    continue
                tpa = np.array(arg_tp.get(k, []))
                if len(tpa) == len(at):
                    t["clear_agree"] = float((tpa[keep] == at[keep]).mean()) if keep.any() else 0.0
                    pt = pool["tp"].setdefault(k, dict(n=0, agree=0))
                    pt["n"] += int(keep.sum())
                    pt["agree"] += int((tpa[keep] == at[keep]).sum())
            agg["pass"] = ok
            failures += not ok
            rows.append(agg)
            print(f"{spec['name']:20s} {dtype:9s} agree vs HF f32 on clear positions {agg['agree_clear_frac']:.3f} "
                  f"({agg['n_clear']}/{agg['n_pos']} with margin > tau {tau:.3f}; HF {dtype} there "
                  f"{agg['agree_clear_hf_dtype_frac']:.3f}), raw vs HF f32 {agg['agree_f32_frac']:.3f} "
                  f"(HF {dtype} vs f32 {agg['agree_hf_dtype_frac']:.3f}), vs HF {dtype} {agg['agree_frac']:.3f} "
                  f"rel vs f32 max {agg['max_rel']:.2e} mean {agg['mean_rel']:.2e} | vs HF {dtype} max "
                  f"{agg['max_rel_hfdt']:.2e} mean {agg['mean_rel_hfdt']:.2e} tp {agg['tp']} {'PASS' if ok else 'FAIL'}",
                  flush=True)
            write_tables(a.out, rows)  # after every case: a time limit still leaves the table
    shutil.rmtree(work, ignore_errors=True)
    lines = ["", "Pooled over all models and prompts (clear positions; the pass criterion for greedy agreement):", "",
             "| dtype | tessera vs HF f32 | HF dtype vs HF f32 | TP=N vs TP=1 | result |", "|---|---|---|---|---|"]
    for dtype, pool in pooled.items():
        frac = pool["agree"] / max(pool["n"], 1)
        tp_txt, ok = [], frac >= AGREE_BOUND and pool["n"] > 0
        for k, pt in pool["tp"].items():
            f = pt["agree"] / max(pt["n"], 1)
            tp_txt.append(f"TP{k}: {f:.4f} ({pt['agree']}/{pt['n']})")
            ok = ok and f >= AGREE_BOUND
        failures += not ok
        lines.append(f"| {dtype} | {frac:.4f} ({pool['agree']}/{pool['n']}) | {pool['hf'] / max(pool['n'], 1):.4f} | "
                     f"{'; '.join(tp_txt) or '-'} | {'PASS' if ok else 'FAIL'} |")
    with open(os.path.join(a.out, "golden.md"), "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"gpu_golden: {failures} failed (model/dtype rows and pooled checks)")
    return 1 if failures else 0


def write_tables(out, rows):
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(out, "golden.md"), "w") as f:
        f.write(f"Greedy agreement vs HF f32 on clear positions: top-1/top-2 margin of HF f32 > tau = {TAU_FACTOR:g} x "
                f"mean abs logit error of HF-dtype vs HF-f32 on each position's 8 largest logits (or over the whole "
                f"vocab if larger) (PASS: >= {AGREE_BOUND}); raw: every position (PASS: >= "
                f"HF-dtype's own raw agreement with f32 - {RAW_SLACK}).\n\n")
        f.write("| model | dtype | agree vs HF f32, clear positions (kept/all, tau; HF dtype there) | raw vs HF f32 "
                "(HF dtype vs f32) | raw vs HF same dtype | rel err vs HF f32 max / mean | vs HF same dtype "
                "max / mean | TP=N agree with TP=1 | result |\n|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            tp = ", ".join(f"TP{k}: " + (f"{v['agree'] / max(v['n'], 1):.3f} (max rel {v['max_rel']:.1e})" if "error" not in v
                                         else "ERROR") for k, v in r["tp"].items()) or "-"
            f.write(f"| {r['model']} | {r['dtype']} | {r['agree_clear_frac']:.3f} ({r['n_clear']}/{r['n_pos']}, "
                    f"{r['tau']:.3f}; {r['agree_clear_hf_dtype_frac']:.3f}) | {r['agree_f32_frac']:.3f} "
                    f"({r['agree_hf_dtype_frac']:.3f}) | {r['agree_frac']:.3f} | "
                    f"{r['max_rel']:.2e} / {r['mean_rel']:.2e} | {r['max_rel_hfdt']:.2e} / {r['mean_rel_hfdt']:.2e} | "
                    f"{tp} | {'PASS' if r['pass'] else 'FAIL' + (' (tessera failed: golden.json)' if 'error' in r else '')} |\n")


if __name__ == "__main__":
    sys.exit(main())
