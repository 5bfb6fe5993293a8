"""deploy/mpirun-serve.sh forwards to every rank (-x) only the variables that are set: mpirun
warns on stderr about each -x of an unset one ("could not find environment variable"), noise at
every launch.  Checked with the real mpirun (one local slot) starting a stand-in `tessera` that
prints what it got, and with a stand-in `mpirun` that prints its arguments."""
import os
import shutil
import subprocess

import pytest

from tsr_paths import ROOT

SCRIPT = ROOT / "deploy" / "mpirun-serve.sh"
FORWARDED = ["TESSERA_HOME", "TESSERA_COMM_TIMEOUT", "NCCL_DEBUG", "NCCL_SOCKET_IFNAME", "NCCL_NVLS_ENABLE"]


def stand_in(bindir, name, body):
    bindir.mkdir(exist_ok=True)
    p = bindir / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)


def launch(tmp_path, bindir, **env):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=1\n")
    e = {k: v for k, v in os.environ.items() if k not in FORWARDED and k != "TESSERA_IFACE"}
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PATH=f"{bindir}:{os.environ['PATH']}", **env)
    return subprocess.run(["bash", str(SCRIPT), str(hostfile), "m.gguf", "--port", "1"], env=e,
                          capture_output=True, text=True, timeout=120)


def test_real_mpirun_gets_no_unset_variable_to_forward(tmp_path):
    if not shutil.which("mpirun"):
        pytest.fail("mpirun is not installed")
    bindir = tmp_path / "bin"
    stand_in(bindir, "tessera", 'echo "home=$TESSERA_HOME args=$*"')
    r = launch(tmp_path, bindir, TESSERA_HOME=str(tmp_path / "home"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"home={tmp_path / 'home'} args=serve m.gguf --tp 1 --port 1", r.stdout
    assert "could not find environment variable" not in r.stderr, r.stderr
    assert "Warning" not in r.stderr, r.stderr


def test_forwards_exactly_the_set_variables(tmp_path):
    bindir = tmp_path / "bin"
    stand_in(bindir, "mpirun", 'for a in "$@"; do echo "$a"; done')
    r = launch(tmp_path, bindir, TESSERA_HOME="/h", NCCL_DEBUG="INFO", TESSERA_IFACE="eth9")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    args = r.stdout.split("\n")
    xs = [args[i + 1] for i, a in enumerate(args) if a == "-x"]
    assert sorted(xs) == ["NCCL_DEBUG", "NCCL_SOCKET_IFNAME", "TESSERA_HOME"], args   # IFNAME from TESSERA_IFACE
    r = launch(tmp_path, bindir)
    assert r.returncode == 0 and "-x" not in r.stdout.split("\n"), r.stdout
