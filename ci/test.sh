#!/usr/bin/env bash
# The README's second command: set up (as the first command does, plus the test venv and the
# sanitizer build), then run every test: C unit tests in the release build and under
# ASan + UBSan (clang, float-cast-overflow included, no recovery), every libFuzzer harness for
# 15 s (ci/fuzz.sh), then the Python suites (parity, golden, CLI, TP, e2e) against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh --test
export TESSERA_BIN="$PWD/build/tools/tessera"
export TESSERA_HOME="${TESSERA_HOME:-$HOME/.cache/tessera}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start=$(date +%s)
echo "== layering: no dependency cycles, no upward includes or calls (ci/check_deps.py) ==" >&2
.venv/bin/python ci/check_deps.py build
echo "== files over 800 lines must say why in their opening comment (ci/check_sizes.sh) ==" >&2
bash ci/check_sizes.sh
echo "== unit tests (release) ==" >&2
ctest --test-dir build -L unit --output-on-failure -j2
echo "== unit tests (ASan + UBSan) ==" >&2
ctest --test-dir build-asan -L unit --output-on-failure -j2
echo "== fuzzing (every harness in tests/fuzz, 15 s each) ==" >&2
bash ci/fuzz.sh 15
echo "== python suites ==" >&2
.venv/bin/python -m pytest -q -rs --durations=20 tests "$@"
echo "all tests passed in $(( $(date +%s) - start )) s" >&2
