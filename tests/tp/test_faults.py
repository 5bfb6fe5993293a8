"""A worker killed mid-generation: rank 0 (or mpirun for it) notices within a bounded time and
the command exits with an error naming the lost rank, instead of hanging."""
import os
import signal
import subprocess
import time

from tsr_paths import tessera_bin, default_model

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", TESSERA_THREADS="1")


def rank_of(pid):
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for kv in env:
        if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
            return int(kv.split(b"=", 1)[1])
    return None


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killed_worker_is_noticed_and_the_command_exits():
    cmd = ["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", tessera_bin(), "generate",
           str(default_model()), "--prompt", "Tell me a very long story about a lighthouse.",
           "--temperature", "0", "--ignore-eos", "--max-new-tokens", "3000"]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # wait until tokens stream (the group is in its step loop)
        first = p.stdout.read(20)
        assert first, "no output before the kill"
        worker = None
        for _ in range(50):
            worker = next((c for c in children(p.pid) if rank_of(c) == 1), None)
            if worker:
                break
            time.sleep(0.1)
        assert worker, "could not find rank 1"
        os.kill(worker, signal.SIGKILL)
        t0 = time.time()
        out, err = p.communicate(timeout=30)
        noticed = time.time() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    assert noticed < 10, f"took {noticed:.1f} s to notice"
    # mpirun names the process that died (rank 1) and the signal
    assert "rank 1" in err or "[[" in err and ",1]" in err, err[-2000:]
