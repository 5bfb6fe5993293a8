"""Tessera as a library: install the build to a temporary prefix, compile
tests/embed/embed_example.c against it with pkg-config alone, run one request on the default
model."""
import os
import pathlib
import shutil
import subprocess

import pytest

from tsr_paths import ROOT, default_model, tessera_bin


def test_embed_example_builds_against_installed_library(tmp_path):
    build = pathlib.Path(tessera_bin()).resolve().parent.parent
    if not (build / "CMakeCache.txt").exists():
        pytest.fail(f"no CMake build at {build}")
    model = default_model()
    if not model.exists():
        pytest.fail(f"default model missing at {model}: run bash ci/fetch-model.sh")
    for tool in ("cmake", "pkg-config", "cc"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed")
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--build", str(build), "--target", "tessera_shared"], check=True, capture_output=True)
    subprocess.run(["cmake", "--install", str(build), "--prefix", str(prefix)], check=True, capture_output=True)
    assert (prefix / "include" / "tessera" / "engine.h").exists()
    pcdirs = list(prefix.glob("lib*/pkgconfig"))
    assert pcdirs, "no pkgconfig directory installed"
    # the installed tessera.pc as it is (relocatable: its prefix comes from its own place, not
    # the configure-time CMAKE_INSTALL_PREFIX), so every -I / -L / rpath it gives is in `prefix`
    env = dict(os.environ, PKG_CONFIG_PATH=str(pcdirs[0]))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "tessera"],
                           env=env, check=True, capture_output=True, text=True).stdout.split()
    dirs = [f[2:] for f in flags if f.startswith(("-I", "-L"))] + [f.split(",")[-1] for f in flags if "-rpath," in f]
    assert len(dirs) >= 3, flags
    for d in dirs:
        assert pathlib.Path(d).resolve().is_relative_to(prefix.resolve()), f"{d} is outside the install prefix: {flags}"
    exe = tmp_path / "embed_example"
    subprocess.run(["cc", str(ROOT / "tests" / "embed" / "embed_example.c"), *flags, "-o", str(exe)],
                   check=True, env=env)
    p = subprocess.run([str(exe), str(model), "The capital of France is"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "[done: length, 12 tokens" in p.stdout, p.stdout
    assert "Paris" in p.stdout, p.stdout
