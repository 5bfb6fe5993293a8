"""Where the tests find the real `tessera` binary and the default model (shared by every
suite; a module of its own so that no suite imports another suite's conftest).

TESSERA_BIN defaults to build/tools/tessera; TESSERA_HOME to ~/.cache/tessera, where
ci/fetch-model.sh puts the default model."""
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tessera_bin() -> str:
    return os.environ.get("TESSERA_BIN", str(ROOT / "build" / "tools" / "tessera"))


def default_model() -> pathlib.Path:
    home = os.environ.get("TESSERA_HOME", os.path.expanduser("~/.cache/tessera"))
    return pathlib.Path(home) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
