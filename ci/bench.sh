#!/usr/bin/env bash
# Benchmarks anyone can run (DESIGN.md: performance claims come with a command): builds the
# release binary if needed and prints the figures on the default model.  Extra arguments go to
# `bench generate` (e.g. --prompt-len 512 --runs 5).  Not a test: nothing here fails on a
# slow machine.
#
# `bash ci/bench.sh --typed` instead measures the default model's quantized weights as Tessera
# runs them (the GGUF's Q4_1/Q8_0 blocks, `--load-format auto`) side by side with the f32 copy
# (`--load-format dequantized`) in one run: bench generate (prefill of 256 tokens, decode after
# 0 and 256 tokens of context, 3 runs each), bench batch (1, 8, 32 concurrent requests), peak
# RSS, resident weights and time to a ready model, with the ratios (issue 12's figures).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x build/tools/tessera ]; then
  cmake -S . -B build -G Ninja -DTESSERA_CUDA=OFF >/dev/null
  cmake --build build -j"$(nproc)"
fi
T=build/tools/tessera
if [ "${1:-}" != "--typed" ]; then
  echo "== tessera bench generate --backend cpu ==" >&2
  exec $T bench generate --backend cpu "$@"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for lf in auto dequantized; do
  echo "== $lf: bench generate, bench batch ==" >&2
  $T bench generate --backend cpu --prompt-len 256 --depth 0,256 --gen-len 64 --runs 3 --load-format $lf --json \
    > "$tmp/gen_$lf.json"
  $T bench batch --backend cpu --concurrency 1,8,32 --load-format $lf > "$tmp/batch_$lf.txt"
done
python3 - "$tmp" <<'PY'
import json, re, sys
d = sys.argv[1]
gen = {lf: json.load(open(f"{d}/gen_{lf}.json")) for lf in ("auto", "dequantized")}
bat = {}
for lf in ("auto", "dequantized"):
    bat[lf] = {int(m.group(1)): float(m.group(2))
               for m in re.finditer(r"^\s*(\d+)\s+([\d.]+)\s", open(f"{d}/batch_{lf}.txt").read(), re.M)}
q, f = gen["auto"], gen["dequantized"]
print("| figure | quantized (as stored) | f32 copy (dequantized) | ratio |")
print("|---|---|---|---|")
for cq, cf in zip(q["cases"], f["cases"]):
    for key, what in (("prefill_tok_s", f"prefill tok/s, {cq['prompt_len']}-token prompt"),
                      ("decode_tok_s", f"decode tok/s after {max(cq['depth'], 1)} tokens")):
        if key == "prefill_tok_s" and cq["depth"] != q["cases"][0]["depth"]:
            continue
        a, b = cq[key + "_mean"], cf[key + "_mean"]
        print(f"| {what} | {a:.1f} +- {cq[key + '_std']:.1f} | {b:.1f} +- {cf[key + '_std']:.1f} | {a / b:.2f}x |")
for c in sorted(bat["auto"]):
    a, b = bat["auto"][c], bat["dequantized"].get(c, float("nan"))
    print(f"| bench batch decode tok/s, {c} concurrent | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
mib = lambda x: f"{x / 1048576:.1f} MiB" if x else "-"
print(f"| resident weights | {mib(q['weight_bytes'])} | {mib(f['weight_bytes'])} | {q['weight_bytes'] / f['weight_bytes']:.2f}x |")
print(f"| peak RSS (bench generate process) | {mib(q['peak_rss_bytes'])} | {mib(f['peak_rss_bytes'])} | "
      f"{q['peak_rss_bytes'] / f['peak_rss_bytes']:.2f}x |")
print(f"| model ready after process start | {q['ready_s']:.2f} s | {f['ready_s']:.2f} s | |")
print(f"host load average (1 min): {q['loadavg_1m_start']:.2f} .. {f['loadavg_1m_end']:.2f}")
PY
