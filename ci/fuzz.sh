#!/usr/bin/env bash
# Fuzz the model-file readers: builds the libFuzzer harnesses in tests/fuzz with clang (every
# library instrumented, so coverage reaches the readers, with ASan + UBSan) and runs each for a
# bounded time from the committed seeds.  A crash leaves its input in build-fuzz/ and fails.
#   bash ci/fuzz.sh [SECONDS per harness, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
build=build-fuzz
san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DTESSERA_FUZZ=ON -DTESSERA_CUDA=OFF \
  -DTESSERA_WERROR=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$san" >/dev/null
cmake --build "$build" -j2 --target fuzz_gguf fuzz_safetensors fuzz_model_config
for f in gguf safetensors model_config; do
  corpus="$build/corpus_$f"
  mkdir -p "$corpus"
  echo "== fuzz_$f for ${secs}s ==" >&2
  (cd "$build" && ./tests/fuzz_"$f" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
     -timeout=10 -print_final_stats=1 -dict=../tests/fuzz/"$f".dict "corpus_$f" ../tests/fuzz/seeds/"$f")
done
echo "fuzzing found nothing in ${secs}s per harness" >&2
