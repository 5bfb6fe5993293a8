"""e2e helpers: a real `tessera serve` on real loopback ports (CPU backend, default model),
started once per session the way users start it, and helpers to start more (SIGTERM, mpirun).

The shared server runs with an API key, a small body limit and short timeouts so the error
tests can reach every limit quickly; generations are kept short (the CPU decodes ~20 tok/s)."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def tessera_bin() -> str:
    return os.environ.get("TESSERA_BIN", str(ROOT / "build" / "tools" / "tessera"))


def default_model() -> pathlib.Path:
    home = os.environ.get("TESSERA_HOME", os.path.expanduser("~/.cache/tessera"))
    return pathlib.Path(home) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

API_KEY = "e2e-secret-key"
ARTIFACTS = pathlib.Path(__file__).resolve().parent / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args, mpi_np=0, env=None, log_name="server"):
        self.port = free_port()
        self.grpc_port = free_port()
        cmd = [tessera_bin(), "serve", str(default_model()), "--server-port", str(self.port),
               "--grpc-port", str(self.grpc_port), "--session-len", "2048"] + list(args)
        if mpi_np:
            cmd = ["mpirun", "-np", str(mpi_np), "--oversubscribe", "--bind-to", "none"] + cmd
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{log_name}.log"
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
        if env:
            e.update(env)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=e,
                                     start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tessera serve exited with {self.proc.returncode}: {self.log_text()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("tessera serve did not become healthy in 180 s: " + self.log_text())

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig=signal.SIGTERM, timeout=120):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def http(server, method, path, body=None, headers=None, key=API_KEY, timeout=120):
    """(status, parsed JSON or text) with urllib; errors are returned, not raised."""
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    h.update(headers or {})
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(server.base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def metrics(server):
    st, text = http(server, "GET", "/metrics")
    assert st == 200
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            out[name] = float(v)
    return out
