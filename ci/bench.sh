#!/usr/bin/env bash
# Benchmarks anyone can run (DESIGN.md: performance claims come with a command): builds the
# release binary if needed and prints the figures on the default model.  Extra arguments go to
# `bench generate` (e.g. --prompt-len 512 --runs 5).  Not a test: nothing here fails on a
# slow machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x build/tools/tessera ]; then
  cmake -S . -B build -G Ninja -DTESSERA_CUDA=OFF >/dev/null
  cmake --build build -j"$(nproc)"
fi
echo "== tessera bench generate --backend cpu ==" >&2
build/tools/tessera bench generate --backend cpu "$@"
