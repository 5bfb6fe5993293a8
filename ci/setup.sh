#!/usr/bin/env bash
# Set-up shared by the README's two commands: installs what is missing (Debian packages,
# a project venv for the Python side), builds Tessera, and fetches the default model.
# Idempotent and quick when everything is already there.
#   ci/setup.sh [--test]     --test: also the test venv packages and the sanitizer build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# ---- Debian packages ----
PKGS="build-essential cmake ninja-build pkg-config python3 python3-venv python3-pip
 libopenmpi-dev openmpi-bin libprotobuf-c-dev protobuf-c-compiler libuv1-dev libhwloc-dev
 libnghttp2-dev libhttp-parser-dev libcjson-dev libopenblas-dev libpng-dev curl"
# clang + its runtimes (libclang-rt: ASan/LSan/UBSan and libFuzzer) for the sanitizer build and ci/fuzz.sh
if [ $want_test = 1 ]; then PKGS="$PKGS clang libclang-rt-14-dev iproute2 chromium chromium-driver"; fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[setup] installing Debian packages:$missing" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >&2
fi

# ---- project venv (pinned; never torch) ----
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  python3 -m venv .venv
fi
req=ci/requirements.txt
[ $want_test = 1 ] && req="ci/requirements-test.txt"
stamp=".venv/.installed-$(cat ci/requirements.txt $req | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing Python packages from $req" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -r ci/requirements.txt $( [ $want_test = 1 ] && echo "-r ci/requirements-test.txt") >&2
  touch "$stamp"
fi

# ---- build ----
JOBS=$(nproc)
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
fi
echo "[setup] building (build/)" >&2
cmake --build build -j"$JOBS" >&2
if [ $want_test = 1 ]; then
  # built with clang: its UBSan has float-cast-overflow (GCC's does not), and no recovery
  # (CMakeLists.txt), so undefined behaviour fails the unit tests; a gcc-made cache is redone
  if [ -f build-asan/CMakeCache.txt ] && ! grep -q '^CMAKE_C_COMPILER:.*clang' build-asan/CMakeCache.txt; then
    echo "[setup] build-asan/ was configured with another compiler: reconfiguring with clang" >&2
    rm -rf build-asan
  fi
  if [ ! -f build-asan/build.ninja ]; then
    CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTESSERA_SANITIZE=ON \
      -DTESSERA_CUDA=OFF >&2
  fi
  echo "[setup] building the sanitizer build (build-asan/)" >&2
  cmake --build build-asan -j"$JOBS" >&2
fi

# ---- default model ----
PYTHON=.venv/bin/python bash ci/fetch-model.sh
