"""TESSERA_NATIVE: a Release build tuned to the building machine (-march=native) is the local
default; -DTESSERA_NATIVE=OFF, which deploy/container's recipe passes, leaves it out so the
image runs on older CPUs.  Checked on what the compiler is really given: compile_commands.json
of a fresh configure."""
import json
import shutil
import subprocess

import pytest

from tsr_paths import ROOT


def configure(build, *opts):
    if not shutil.which("cmake"):
        pytest.fail("cmake is not installed")
    p = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DTESSERA_CUDA=OFF", *opts], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    cmds = json.loads((build / "compile_commands.json").read_text())
    return [c.get("command") or " ".join(c["arguments"]) for c in cmds if c["file"].endswith(".c")]


def test_native_off_leaves_out_march_native(tmp_path):
    off = configure(tmp_path / "off", "-DTESSERA_NATIVE=OFF")
    assert off, "no C sources in compile_commands.json"
    assert not [c for c in off if "-march=native" in c.split()], "-march=native with TESSERA_NATIVE=OFF"
    assert all("-O3" in c.split() for c in off)   # still a Release build
    on = configure(tmp_path / "on")               # the local default keeps it
    assert all("-march=native" in c.split() for c in on)


def test_container_recipe_builds_portable():
    recipe = (ROOT / "deploy" / "container" / "Dockerfile").read_text()
    assert "-DTESSERA_NATIVE=OFF" in recipe
