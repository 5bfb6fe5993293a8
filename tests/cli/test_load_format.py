"""--load-format dummy: random weights of the model's shapes (for speed tests of models whose
files are not there); the same dummy model under TP=2 gives the TP=1 tokens, since every rank
draws its shard from the same hash of the unsplit tensor."""
import os
import pathlib
import subprocess

from tsr_paths import tessera_bin

FIX = pathlib.Path(__file__).resolve().parent.parent / "golden" / "fixtures" / "llama_gqa_tied_sharded"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", TESSERA_THREADS="1")


def gen(extra, pre=()):
    cmd = list(pre) + [tessera_bin(), "generate", str(FIX), "--prompt-ids", "1,5,9,17", "--temperature", "0",
                       "--max-new-tokens", "12", "--ignore-eos", "--print-ids"] + extra
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()


def test_dummy_weights_run_and_differ_from_the_files():
    real = gen([])
    dummy = gen(["--load-format", "dummy"])
    assert len(dummy) == 12 and all(0 <= int(t) < 256 for t in dummy)
    assert dummy != real
    assert gen(["--load-format", "dummy"]) == dummy  # the same hash every time


def test_dummy_weights_tp2_equal_tp1():
    one = gen(["--load-format", "dummy"])
    two = gen(["--load-format", "dummy"], pre=["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none"])
    assert one == two


def test_bad_load_format_is_a_clear_error():
    r = subprocess.run([tessera_bin(), "generate", str(FIX), "--prompt-ids", "1", "--load-format", "bogus"],
                       env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--load-format 'bogus'" in r.stderr
