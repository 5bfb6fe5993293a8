"""Helpers for the model-file tests: run tessera, parse `tessera inspect` output."""
import subprocess


def run(tessera, *args, check=True):
    """Runs `tessera ARGS`; returns the CompletedProcess (text mode)."""
    p = subprocess.run([tessera, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"tessera {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


def parse_tensor_list(stdout):
    """The `tensors:` section of `tessera inspect` as {name: (type, [shape...])}."""
    out, on = {}, False
    for line in stdout.splitlines():
        if line.startswith("tensors:"):
            on = True
            continue
        if on and line.startswith("  "):
            name, ty, rest = line.split(None, 2)
            shape = [int(x) for x in rest.strip("[]").split(",") if x.strip()]
            out[name] = (ty, shape)
        elif on:
            break
    return out
