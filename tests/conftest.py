"""Shared pytest fixtures: the real `tessera` binary and the default model.

Tests run the binary the way users do (subprocess, real files).  TESSERA_BIN defaults to
build/tools/tessera; TESSERA_HOME to ~/.cache/tessera (where ci/fetch-model.sh puts the
default model)."""
import os
import sys
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from tsr_paths import ROOT, default_model, tessera_bin  # noqa: E402,F401


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
