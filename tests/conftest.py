"""Shared pytest fixtures: the real `tessera` binary and the default model.

Tests run the binary the way users do (subprocess, real files).  TESSERA_BIN defaults to
build/tools/tessera; TESSERA_HOME to ~/.cache/tessera (where ci/fetch-model.sh puts the
default model)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tessera_bin() -> str:
    return os.environ.get("TESSERA_BIN", str(ROOT / "build" / "tools" / "tessera"))


def default_model() -> pathlib.Path:
    home = os.environ.get("TESSERA_HOME", os.path.expanduser("~/.cache/tessera"))
    return pathlib.Path(home) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def tessera():
    b = tessera_bin()
    if not os.access(b, os.X_OK):
        pytest.fail(f"tessera binary not found at {b}: build first (bash ci/setup.sh)")
    return b


@pytest.fixture(scope="session")
def smollm2():
    p = default_model()
    if not p.exists():
        pytest.fail(f"default model missing at {p}: run bash ci/fetch-model.sh")
    return p
