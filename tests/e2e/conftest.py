"""e2e fixtures: one shared `tessera serve` for the session (see serve_util.Server)."""
import re
import subprocess

import pytest

from serve_util import API_KEY, Server, tessera_bin


@pytest.fixture(scope="session")
def serve_built(tessera):
    # A binary without `serve` is a broken build, not a reason to skip the suite: fail, so that
    # a lost command cannot turn every e2e test into a quiet skip.
    p = subprocess.run([tessera_bin(), "--help"], capture_output=True, text=True)
    listed = re.findall(r"^  ([a-z][\w-]*)\s", p.stdout.split("commands:")[-1], re.M)
    if "serve" not in listed:
        pytest.fail(f"`{tessera_bin()} --help` lists no `serve` command (commands: {', '.join(listed) or 'none'}; "
                    f"exit {p.returncode}): the e2e suite needs it")


@pytest.fixture(scope="session")
def server(serve_built, smollm2):
    s = Server(["--api-key", API_KEY, "--api-key", "second-key", "--max-body-bytes", "65536",
                "--read-timeout", "2", "--idle-timeout", "4"], log_name="server")
    yield s
    rc = s.stop()
    assert rc == 0, f"server exit {rc}: {s.log_text()}"


