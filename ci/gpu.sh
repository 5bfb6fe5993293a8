#!/usr/bin/env bash
# The GPU lane: the one script the GPU host runs (see ../shared/gpu-host/README.md).
#   bash ci/gpu.sh OUTDIR
# Builds for sm_90 with the CUDA backend in build-gpu, then runs every stage even when an
# earlier one failed (a failed build skips the stages that need its binaries):
#   1 build         cmake + ninja, -DCMAKE_CUDA_ARCHITECTURES=90 -DTESSERA_CUDA=ON
#   2 kernel tests  build-gpu/tests/test_cuda_ops: every CUDA op vs its CPU twin (nmse), bf16+f16,
#                   and a whole forward pass with CUDA graphs vs the CPU
#   2b sampling    build-gpu/tests/test_cuda_sampling: the device sampler vs worker/sampling.c
#   3 unit tests    ctest -L unit (the CPU tests, built by the same tree)
#   4 golden        tests/golden/gpu_golden.py: random HF models (bf16, fp16) vs tessera --backend
#                   cuda; TP=2/TP=4 vs TP=1 when the host has the GPUs
#   5 bench         tessera bench generate --dummy-config llama3-8b (tools/bench_forward.c):
#                   Llama-3-8B-shaped dummy weights, batch-1 and batch-64 decode, TTFT(2048) with
#                   MFU, against measured ceilings; with 2 GPUs also TP=2 vs TP=1 batch-1 decode;
#                   the per-op time of a batch-1 step (TESSERA_PROFILE=1) and graph replay counts
# Logs go to OUTDIR/<stage>.log, the summary table to OUTDIR/summary.md (also printed last).
# Each stage has a time limit, so the whole run stays under ~9 minutes.
# Exit status: 0 only when every stage that ran passed and no required stage was left out (a
# golden stage that did not run, for time or for want of a binary, fails the lane); the verdict
# is the last line of the summary.  It is decided from the stages' exit codes, never by grepping
# the summary's text (which holds "0 FAIL lines" on a good run).
set -u
OUT=${1:?usage: ci/gpu.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
T_START=$(date +%s)

if [ -d .deps ]; then
  eval "$(bash .deps/unpack-deps.sh .deps /opt/deps)"
  # some .pc files (cJSON's) name libdir/includedir without a prefix= line: point them too
  find /opt/deps -name '*.pc' -exec sed -i -E 's#^(libdir|includedir)=/usr#\1=/opt/deps/usr#' {} +
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# --- lane bookkeeping (functions only; ci/gpu.sh's final check is verdict)
SUMMARY=()
FAILED=()
# stage NAME LIMIT_S CMD...: runs CMD with a time limit, logs to OUT/NAME.log, records the result
stage() {
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  echo "=== $name (limit ${limit}s): $*" | tee "$OUT/$name.log"
  timeout --kill-after=10 "$limit" "$@" >>"$OUT/$name.log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local res=PASS
  [ $rc -ne 0 ] && res="FAIL (rc $rc)"
  [ $rc -eq 124 ] && res="TIMEOUT (${limit}s)"
  SUMMARY+=("| $name | $res | ${dt}s |")
  [ $rc -ne 0 ] && FAILED+=("$name")
  echo "=== $name: $res in ${dt}s"
  return $rc
}
# skip NAME WHY: a stage this host cannot run (e.g. TP=2 on one GPU); the lane can still pass
skip() { SUMMARY+=("| $1 | SKIPPED ($2) | - |"); echo "=== $1: skipped ($2)"; }
# missed NAME WHY: a stage that had to run and did not: the lane fails
missed() { SUMMARY+=("| $1 | NOT RUN ($2) | - |"); FAILED+=("$1 (not run: $2)"); echo "=== $1: NOT RUN ($2)"; }
# fail_check NAME WHY: a stage exited 0 but its output says otherwise
fail_check() { FAILED+=("$1 ($2)"); echo "=== $1: $2"; }
# verdict: the summary's last line, and the exit status of the lane
verdict() {
  if [ ${#FAILED[@]} -eq 0 ]; then
    echo "lane: PASS"
    return 0
  fi
  local list
  printf -v list '%s; ' "${FAILED[@]}"
  echo "lane: FAIL: ${list%; }"
  return 1
}
# --- end lane bookkeeping

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) files changed"
  nvidia-smi --query-gpu=index,name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1
  nvcc --version 2>&1 | tail -1
  nproc
} >"$OUT/env.log" 2>&1
N_GPU=$(nvidia-smi -L 2>/dev/null | wc -l)

# 1. build
BUILD_OK=0
if stage build 300 bash -c "cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DTESSERA_CUDA=ON && cmake --build build-gpu -j\$(nproc)"; then
  BUILD_OK=1
fi
BIN=build-gpu/tools/tessera

# 2. kernel tests
if [ $BUILD_OK = 1 ] || [ -x build-gpu/tests/test_cuda_ops ]; then
  stage kernel_tests 150 build-gpu/tests/test_cuda_ops
  grep -E "FAIL|failed" "$OUT/kernel_tests.log" | head -20 >"$OUT/kernel_failures.txt" || true
  KFAIL=$(grep -c 'FAIL$' "$OUT/kernel_tests.log")
  [ "$KFAIL" -gt 0 ] && fail_check kernel_tests "$KFAIL FAIL lines"
  # the device sampler vs worker/sampling.c (ids, draw agreement, logprobs; ms/step saved)
  stage sampling_test 150 build-gpu/tests/test_cuda_sampling
  grep -E "^FAIL|^summary|^bench" "$OUT/sampling_test.log" >"$OUT/sampling_summary.txt" || true
  SFAIL=$(grep -c '^FAIL' "$OUT/sampling_test.log")
  [ "$SFAIL" -gt 0 ] && fail_check sampling_test "$SFAIL FAIL lines"
else
  missed kernel_tests "no build"
  missed sampling_test "no build"
fi

# 3. unit tests (CPU), quick
if [ $BUILD_OK = 1 ]; then
  stage unit_tests 120 ctest --test-dir build-gpu -L unit -j8 --output-on-failure --timeout 60
else
  missed unit_tests "no build"
fi

# 4. bench (before golden: the figures matter most and it has a fixed cost), through the CLI:
#    tessera bench generate --backend cuda --dummy-config llama3-8b (tools/bench_forward.c)
if [ -x "$BIN" ]; then
  # TESSERA_PROFILE=1: after the measured decode, 16 eager batch-1 steps with every op timed
  # (cudaEvent pairs): the per-op table lands in bench.md beside the graph replay counts
  stage bench 180 env TESSERA_PROFILE=1 "$BIN" bench generate --backend cuda --dummy-config llama3-8b --dtype bf16 --batch 64 --ctx 512 --prompt-len 2048
  sed -n '/^## bench_cuda_forward/,$p' "$OUT/bench.log" | grep -v '^bench-forward:' >"$OUT/bench.md"
  TESSERA_NO_GRAPHS=1 stage bench_nographs 150 "$BIN" bench generate --dummy-config llama3-8b --gen-len 64 --prompt-len 512 --batch 8
  # TP = 2 batch-1 decode speedup over TP = 1 (same dummy model, same host)
  if [ "$N_GPU" -ge 2 ] && command -v mpirun >/dev/null; then
    stage bench_tp2 150 mpirun -np 2 --bind-to none "$BIN" bench generate --dummy-config llama3-8b --tp 2 --batch 0 --prompt-len 0 --gen-len 64
    T1=$(sed -n 's/^bench-forward: tp=1 batch1_tok_s=//p' "$OUT/bench.log" | tail -1)
    T2=$(sed -n 's/^bench-forward: tp=2 batch1_tok_s=//p' "$OUT/bench_tp2.log" | tail -1)
    if [ -n "$T1" ] && [ -n "$T2" ]; then
      awk -v a="$T1" -v b="$T2" 'BEGIN { printf "TP=2 batch-1 decode: %.1f tok/s vs TP=1 %.1f tok/s: speedup %.2fx\n", b, a, b / a }' >"$OUT/tp_speedup.txt"
    fi
  else
    skip bench_tp2 "needs 2 GPUs and mpirun"
  fi
else
  missed bench "no build"
fi

# 5. golden
if [ -x "$BIN" ]; then
  LEFT=$(( ${TSR_GPU_BUDGET:-520} - ($(date +%s) - T_START) ))   # TSR_GPU_BUDGET: the whole lane's seconds
  if [ $LEFT -lt 60 ]; then
    missed golden "out of time: ${LEFT}s left"
  else
    GOLDEN_ARGS=()
    [ $LEFT -lt 200 ] && GOLDEN_ARGS+=(--quick)
    # an exit 0 without the pooled table (the verdict gpu_golden.py writes last) is no pass
    stage golden "$LEFT" python3 tests/golden/gpu_golden.py --bin "$BIN" --out "$OUT" ${GOLDEN_ARGS[@]+"${GOLDEN_ARGS[@]}"} &&
      { grep -q '^Pooled over all models' "$OUT/golden.md" 2>/dev/null || fail_check golden "no pooled table in golden.md"; }
  fi
else
  missed golden "no tessera binary"
fi

{
  echo "# ci/gpu.sh summary"
  echo
  echo "GPUs: $N_GPU ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)); total $(( $(date +%s) - T_START ))s"
  echo
  echo "| stage | result | time |"
  echo "|---|---|---|"
  printf '%s\n' "${SUMMARY[@]}"
  echo
  if [ -s "$OUT/kernel_tests.log" ]; then
    echo "kernel tests: $(grep -c PASS "$OUT/kernel_tests.log") PASS lines, $(grep -c 'FAIL$' "$OUT/kernel_tests.log") FAIL lines"
    grep -E 'FAIL$|NON-FINITE' "$OUT/kernel_tests.log" | head -15 | sed 's/^/    /'
    echo
  fi
  if [ -s "$OUT/sampling_summary.txt" ]; then
    echo "device sampler vs worker/sampling.c (tests/kernel/test_cuda_sampling.c):"
    sed 's/^/    /' "$OUT/sampling_summary.txt"
    echo
  fi
  [ -s "$OUT/bench.md" ] && cat "$OUT/bench.md" && echo
  [ -s "$OUT/tp_speedup.txt" ] && cat "$OUT/tp_speedup.txt" && echo
  if grep -q '^bench gemv' "$OUT/kernel_tests.log" 2>/dev/null; then
    echo "decode GEMV vs cuBLAS (weight bytes read per second; copy bandwidth above is read + write):"
    grep '^bench gemv' "$OUT/kernel_tests.log" | sed 's/^/    /'
    echo
  fi
  if [ -s "$OUT/bench_nographs.log" ]; then
    echo "without CUDA graphs (TESSERA_NO_GRAPHS=1, batch 8, prompt 512):"
    grep '^|' "$OUT/bench_nographs.log" | sed 's/^/    /'
    echo
  fi
  [ -s "$OUT/golden.md" ] && echo "## golden (tessera --backend cuda vs HF transformers)" && echo && cat "$OUT/golden.md" && echo
  verdict
} >"$OUT/summary.md"
cat "$OUT/summary.md"
verdict >/dev/null
