#!/usr/bin/env bash
# The README's first command: set up what is missing, build, fetch the default model
# (SmolLM2-135M-Instruct), then run the main job on it: `tessera serve` (OpenAI API, gRPC, web
# chat page) on the GPU when there is one, on the CPU otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
exec build/tools/tessera serve "$@"
