"""Errors under mpirun are printed once per group, by rank 0, not once per rank: every rank
reaches the same status (the library's design), so a bad path, a bad flag or an unknown command
under `mpirun -np 2` must show its message once.  A rank that fails alone (rank 0 went on) still
says why, naming itself."""
import os
import subprocess

from tsr_paths import default_model, tessera_bin

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", TESSERA_THREADS="1")
LAUNCH = ["mpirun", "--oversubscribe", "--bind-to", "none"]


def mpirun2(*args):
    r = subprocess.run(LAUNCH + ["-np", "2", tessera_bin(), *args], env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0, r.stderr
    return r.stderr


def test_bad_model_path_error_once(tmp_path):
    err = mpirun2("generate", str(tmp_path / "missing.gguf"), "--prompt", "hi")
    assert err.count("does not exist") == 1, err
    assert err.count("tessera generate:") == 1, err


def test_bad_flag_error_once():
    err = mpirun2("generate", "--no-such-flag")
    assert err.count("unknown option '--no-such-flag'") == 1, err


def test_unknown_command_error_once():
    err = mpirun2("no-such-command")
    assert err.count("unknown command 'no-such-command'") == 1, err
    assert err.count("usage: tessera") == 1, err


def test_rank_failing_alone_still_says_why():
    model = default_model()
    cmd = LAUNCH + ["-np", "1", tessera_bin(), "generate", str(model), "--prompt", "hi", ":",
                    "-np", "1", tessera_bin(), "generate", "--no-such-flag"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.count("[rank 1] tessera generate: unknown option '--no-such-flag'") == 1, r.stderr
