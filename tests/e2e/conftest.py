"""e2e fixtures: one shared `tessera serve` for the session (see serve_util.Server)."""
import subprocess

import pytest

from serve_util import API_KEY, Server, tessera_bin


@pytest.fixture(scope="session")
def serve_built(tessera):
    out = subprocess.run([tessera_bin(), "--help"], capture_output=True, text=True).stdout
    if "serve" not in out.split("commands:")[-1]:
        pytest.skip("this tessera binary has no `serve` command (built without the engine)")


@pytest.fixture(scope="session")
def server(serve_built, smollm2):
    s = Server(["--api-key", API_KEY, "--api-key", "second-key", "--max-body-bytes", "65536",
                "--read-timeout", "2", "--idle-timeout", "4"], log_name="server")
    yield s
    rc = s.stop()
    assert rc == 0, f"server exit {rc}: {s.log_text()}"


