#!/usr/bin/env bash
# The long soak of issue 10 (CI runs the same soak for about a minute in tests/e2e/test_soak.py):
#   bash ci/soak.sh [SECONDS]     (default 600)
# Starts `tessera serve` on the CPU backend with --max-batch-size 4 --max-queue 4, warms it up,
# then runs `tessera bench serve --duration SECONDS` with 16 clients (twice what it holds), 30%
# of them hanging up mid-stream, and prints the answers by status, the KV / request / connection
# gauges after the load and the server's RSS drift; exits 1 when a check fails.
# TESSERA_BIN picks the binary (default build/tools/tessera).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
export TESSERA_BIN=${TESSERA_BIN:-$PWD/build/tools/tessera}
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" tests/e2e/test_soak.py "$DURATION"
