#!/usr/bin/env bash
# Fuzz what Tessera reads from files and the network: builds every libFuzzer harness
# tests/fuzz/fuzz_NAME.c with clang (every library instrumented, so coverage reaches the
# readers, with ASan + UBSan, float-cast-overflow included, and no recovery) and runs each for a
# bounded time from its committed seeds tests/fuzz/seeds/NAME (plus tests/fuzz/NAME.dict when
# there is one), several at once (one per core).  Prints libFuzzer's final stats and a one-line
# summary per harness; a crash, leak, timeout or UB report leaves its input in
# BUILD/artifacts/ and fails the run.
#   bash ci/fuzz.sh [SECONDS per harness, default 60] [NAME ...]
#   env: TSR_FUZZ_BUILD (default build-fuzz), TSR_FUZZ_JOBS (default: the number of cores)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
build="${TSR_FUZZ_BUILD:-build-fuzz}"
jobs="${TSR_FUZZ_JOBS:-$(nproc)}"
command -v clang >/dev/null || { echo "fuzz.sh: clang is required (ci/setup.sh --test installs it)" >&2; exit 1; }

names=("$@")
if [ ${#names[@]} = 0 ]; then
  for src in tests/fuzz/fuzz_*.c; do n="${src##*/fuzz_}"; names+=("${n%.c}"); done
fi
[ ${#names[@]} -gt 0 ] || { echo "fuzz.sh: no harness in tests/fuzz" >&2; exit 1; }
for n in "${names[@]}"; do
  [ -f "tests/fuzz/fuzz_$n.c" ] || { echo "fuzz.sh: no harness tests/fuzz/fuzz_$n.c" >&2; exit 1; }
  [ -d "tests/fuzz/seeds/$n" ] && [ -n "$(ls -A "tests/fuzz/seeds/$n")" ] ||
    { echo "fuzz.sh: fuzz_$n has no seeds in tests/fuzz/seeds/$n (tests/fuzz/make_seeds.py makes them)" >&2; exit 1; }
done

san="-fsanitize=fuzzer-no-link,address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DTESSERA_FUZZ=ON -DTESSERA_CUDA=OFF \
  -DTESSERA_WERROR=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$san" >/dev/null
targets=()
for n in "${names[@]}"; do targets+=("fuzz_$n"); done
echo "== building ${#targets[@]} harnesses in $build/ ==" >&2
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >&2

mkdir -p "$build/logs" "$build/artifacts"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
run_one() {   # NAME: fuzzes it for $secs, log in $build/logs/NAME.log, exit status in .rc
  local n=$1 dict=()
  [ -f "tests/fuzz/$n.dict" ] && dict=("-dict=tests/fuzz/$n.dict")
  mkdir -p "$build/corpus/$n"
  set +e
  "$build/tests/fuzz_$n" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$n-" "${dict[@]}" \
    "$build/corpus/$n" "tests/fuzz/seeds/$n" >"$build/logs/$n.log" 2>&1
  echo $? >"$build/logs/$n.rc"
}
echo "== fuzzing ${#names[@]} harnesses for ${secs}s each, $jobs at a time ==" >&2
running=0
for n in "${names[@]}"; do
  rm -f "$build/logs/$n.rc" "$build/artifacts/$n-"*
  run_one "$n" &
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

failed=0
summary=()
for n in "${names[@]}"; do
  log="$build/logs/$n.log"
  rc=$(cat "$build/logs/$n.rc" 2>/dev/null || echo 99)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=$(find "$build/artifacts" -name "$n-*" -type f | wc -l)
  corpus=$(find "$build/corpus/$n" -type f | wc -l)
  echo "-- fuzz_$n: final stats" >&2
  grep '^stat::' "$log" >&2 || true
  if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
    failed=1
    [ "$crashes" != 0 ] || crashes=1
    echo "-- fuzz_$n FAILED (exit $rc); the end of $log:" >&2
    tail -n 60 "$log" >&2
    ls "$build/artifacts/$n-"* >&2 2>/dev/null || true
  fi
  summary+=("$(printf 'fuzz_%-14s %10s executions in %ss, %s crashes, corpus %s inputs' "$n" "${execs:-?}" "$secs" "$crashes" "$corpus")")
done
echo "== fuzz summary ==" >&2
printf '%s\n' "${summary[@]}" >&2
if [ $failed = 1 ]; then echo "fuzzing FAILED: inputs are in $build/artifacts/" >&2; exit 1; fi
echo "fuzzing found nothing in ${secs}s per harness (${#names[@]} harnesses)" >&2
