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


# ---- `tessera serve` under faults (issue 10): a failed step ends its requests with an error and
# the server keeps serving; a rank that stops answering is detected within 10 s; a group of one
# opens no network listeners besides its own ports; MPI is called from one thread only.

import json
import socket
import textwrap
import urllib.error
import urllib.request

import openai
import pytest

MSG = [{"role": "user", "content": "Tell me a very long story about a lighthouse keeper."}]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """A real `tessera serve` (CPU backend, default model), plain or under mpirun -np N."""

    def __init__(self, tmp, np=0, env=None, mpirun_args=()):
        self.port, self.grpc_port = _free_port(), _free_port()
        cmd = [tessera_bin(), "serve", str(default_model()), "--server-name", "127.0.0.1",
               "--server-port", str(self.port), "--grpc-port", str(self.grpc_port), "--session-len", "2048"]
        if np:
            cmd = ["mpirun", "-np", str(np), "--oversubscribe", "--bind-to", "none", *mpirun_args] + cmd
        self.log_path = tmp / "serve.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=dict(ENV, **(env or {})),
                                     start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}: {self.text()}"
            if self.health()[0] == 200:
                break
            time.sleep(0.3)
        else:
            self.kill()
            pytest.fail("serve did not become healthy: " + self.text())
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key="none", max_retries=0, timeout=120)
        self.model = self.client.models.list().data[0].id

    def health(self):
        try:
            with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def text(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def pids(self):
        """The process and all its descendants."""
        out, todo = [], [self.proc.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children(p)
        return out

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if hasattr(self, "client"):
            self.client.close()   # no keep-alive connection left open at shutdown
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.proc.returncode


def _stream(srv, max_tokens):
    return srv.client.chat.completions.create(model=srv.model, messages=MSG, max_tokens=max_tokens,
                                              temperature=0, stream=True)


def _stream_until_error(srv, max_tokens):
    """Reads a stream to its end: (finish reasons seen, the APIError that ended it or None)."""
    finishes = []
    try:
        for chunk in _stream(srv, max_tokens):
            finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
    except openai.APIError as e:
        return finishes, e
    return finishes, None


def _answer(srv, max_tokens=6):
    r = srv.client.chat.completions.create(model=srv.model, messages=MSG, max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content, r.choices[0].finish_reason


def _listeners(pids):
    """(address, port) of every LISTEN TCP socket the processes hold."""
    inodes = set()
    for p in pids:
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                link = os.readlink(f"/proc/{p}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            pass
    found = []
    for name in ("tcp", "tcp6"):
        with open(f"/proc/{pids[0]}/net/{name}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:   # 0A: LISTEN
                    addr, port = cols[1].split(":")
                    found.append((addr, int(port, 16)))
    return found


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    srv = Serve(tmp_path_factory.mktemp("one"), env={"TESSERA_FAULT_INJECT": "step_alloc:3,step_alloc:5"})
    yield srv
    assert srv.stop() == 0, srv.text()


def test_single_rank_server_opens_no_wildcard_listener(one_rank):
    # only the server's own ports on 127.0.0.1 (0100007F): no MPI / ORTE listener on 0.0.0.0 or [::]
    got = _listeners(one_rank.pids())
    assert sorted(got) == sorted([("0100007F", one_rank.port), ("0100007F", one_rank.grpc_port)]), got


def test_step_allocation_failure_ends_its_request_and_the_server_goes_on(one_rank):
    # step 1 is the prefill, step 2 a decode, step 3's allocation fails (TESSERA_FAULT_INJECT)
    finishes, err = _stream_until_error(one_rank, 16)
    assert err is not None and "injected" in str(err), (finishes, err)
    assert finishes == ["error"], finishes
    assert one_rank.health()[0] == 200
    # not streamed: step 4 is the prefill, step 5 fails -> "come back later" (429), never a 500
    with pytest.raises(openai.RateLimitError) as e:
        _answer(one_rank)
    assert "injected" in str(e.value), e.value
    text, fin = _answer(one_rank)
    assert text and fin == "length"
    assert one_rank.proc.poll() is None


# A PMPI shim, preloaded into the ranks: it reports thread level FUNNELED (a library that gives
# less than MULTIPLE) and flags any MPI call made from a thread other than MPI_Init_thread's.
SHIM = textwrap.dedent("""
    #include <mpi.h>
    #include <pthread.h>
    #include <stdio.h>
    static pthread_t owner; static int have, warned;
    static void check(const char *f) {
        if (have && !pthread_equal(owner, pthread_self()) && !warned++)
            fprintf(stderr, "mpi-thread-check: %s called from a second thread\\n", f);
    }
    int MPI_Init_thread(int *c, char ***v, int req, int *prov) {
        int r = PMPI_Init_thread(c, v, req, prov);
        owner = pthread_self(); have = 1;
        if (*prov > MPI_THREAD_FUNNELED) *prov = MPI_THREAD_FUNNELED;
        return r;
    }
    #define W(name, args, call) int name args { check(#name); return P##call; }
    W(MPI_Bcast, (void *b, int n, MPI_Datatype t, int r, MPI_Comm c), MPI_Bcast(b, n, t, r, c))
    W(MPI_Ibcast, (void *b, int n, MPI_Datatype t, int r, MPI_Comm c, MPI_Request *q), MPI_Ibcast(b, n, t, r, c, q))
    W(MPI_Allreduce, (const void *s, void *d, int n, MPI_Datatype t, MPI_Op o, MPI_Comm c),
      MPI_Allreduce(s, d, n, t, o, c))
    W(MPI_Iallreduce, (const void *s, void *d, int n, MPI_Datatype t, MPI_Op o, MPI_Comm c, MPI_Request *q),
      MPI_Iallreduce(s, d, n, t, o, c, q))
    W(MPI_Test, (MPI_Request *q, int *f, MPI_Status *st), MPI_Test(q, f, st))
    W(MPI_Comm_dup, (MPI_Comm c, MPI_Comm *d), MPI_Comm_dup(c, d))
    W(MPI_Finalize, (void), MPI_Finalize())
""")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    (tmp / "shim.c").write_text(SHIM)
    subprocess.run(["mpicc", "-shared", "-fPIC", "-o", str(tmp / "shim.so"), str(tmp / "shim.c")], check=True)
    # rank 1's 3rd step and rank 0's 6th fail to allocate
    srv = Serve(tmp, np=2, env={"TESSERA_FAULT_INJECT": "step_alloc:3@1,step_alloc:6@0"},
                mpirun_args=["-x", f"LD_PRELOAD={tmp / 'shim.so'}"])
    yield srv
    srv.kill()


def test_tp_step_fails_together_when_one_rank_cannot_allocate(two_ranks):
    # rank 1 fails step 3: the group agrees before any collective, so the step fails on both
    finishes, err = _stream_until_error(two_ranks, 16)
    assert err is not None and "rank 1" in str(err) and "injected" in str(err), (finishes, err)
    # rank 0 fails step 6 (steps 4 and 5 are this request's prefill and first decode)
    finishes, err = _stream_until_error(two_ranks, 16)
    assert err is not None and "injected" in str(err), (finishes, err)
    # the ranks still run the same steps: answers are whole and the same twice
    first = _answer(two_ranks, 8)
    assert first[1] == "length" and first == _answer(two_ranks, 8)
    assert two_ranks.health()[0] == 200


def test_mpi_is_called_from_one_thread(two_ranks):
    two_ranks.stop()   # mpirun's own exit status on SIGTERM is 1, whatever the ranks did
    log = two_ranks.log_path.read_text(errors="replace")
    assert "server stopped" in log, log[-3000:]
    assert "called from a second thread" not in log, log[-3000:]


def _alive(pid):
    """Still running (a zombie or a reaped pid is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _release(srv, ranks, resume=True):
    """Ends a fault test's group: stopped ranks continued (so they can die), then killed."""
    if resume:
        for p in srv.pids()[1:] + [q for q in ranks if _alive(q)]:
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass
    srv.kill()
    srv.log.close()


def _stop_rank1_mid_stream(tmp, sig):
    srv = Serve(tmp, np=2)
    ranks = []
    try:
        stream = _stream(srv, 1900)
        it = iter(stream)
        next(it)
        next(it)   # tokens flow: the group is in its step loop
        ranks = srv.pids()[1:]
        worker = next(p for p in ranks if rank_of(p) == 1)
        os.kill(worker, sig)
        t0 = time.time()
        err = None
        try:
            for _ in it:
                pass
        except (openai.APIError, Exception) as e:   # an error event, or the connection cut
            err = e
        ended = time.time() - t0
        assert err is not None, "the stream ended without an error"
        assert ended < 10, f"the stream took {ended:.1f} s to end"
        st, body = srv.health()
        assert st in (503, None), (st, body)   # unhealthy, or already gone
        srv.proc.wait(timeout=max(1.0, 10 - (time.time() - t0)) + 5)
        gone = time.time() - t0
        time.sleep(0.5)
        left = [p for p in ranks if _alive(p)]
        return ended, gone, err, left, srv
    finally:
        _release(srv, ranks, resume=sig == signal.SIGSTOP)


def test_stopped_rank_is_detected_and_the_group_exits(tmp_path):
    ended, gone, err, left, srv = _stop_rank1_mid_stream(tmp_path, signal.SIGSTOP)
    print(f"SIGSTOP: stream ended after {ended:.1f} s, mpirun exited after {gone:.1f} s")
    assert "no answer" in str(err) or "rank" in str(err), err
    assert srv.proc.returncode != 0
    assert not left, f"processes left behind: {left}"


def test_killed_rank_is_detected_and_the_group_exits(tmp_path):
    ended, gone, err, left, srv = _stop_rank1_mid_stream(tmp_path, signal.SIGKILL)
    print(f"SIGKILL: stream ended after {ended:.1f} s, mpirun exited after {gone:.1f} s")
    assert srv.proc.returncode != 0
    assert not left, f"processes left behind: {left}"


@pytest.mark.parametrize("rank", [0, 1])
def test_idle_group_notices_a_stopped_rank(tmp_path, rank):
    # no request running: the heartbeat finds it (rank 1 stopped: rank 0 reports it on /health
    # and exits; rank 0 stopped: the worker stops hearing from it and exits) -- mpirun ends
    srv = Serve(tmp_path, np=2)
    ranks = []
    try:
        time.sleep(1.5)   # a heartbeat or two first: workers then expect them
        ranks = srv.pids()[1:]
        victim = next(p for p in ranks if rank_of(p) == rank)
        os.kill(victim, signal.SIGSTOP)
        t0 = time.time()
        unhealthy = None
        while srv.proc.poll() is None and time.time() - t0 < 20:
            st, body = srv.health() if rank == 1 else (None, "")
            if st == 503 and unhealthy is None:
                unhealthy = time.time() - t0
                assert "no answer" in body, body
            time.sleep(0.2)
        gone = time.time() - t0
        print(f"idle, rank {rank} SIGSTOPped: /health 503 after {unhealthy}, mpirun exited after {gone:.1f} s")
        assert srv.proc.poll() is not None and gone < 15, f"mpirun still running after {gone:.1f} s: {srv.text()}"
        assert srv.proc.returncode != 0
        if rank == 1:
            assert unhealthy is not None and unhealthy < 10
        time.sleep(0.5)
        left = [p for p in ranks if _alive(p)]
        assert not left, f"processes left behind: {left}"
    finally:
        _release(srv, ranks)
