"""`tessera env` and the top-level help, run as a user runs them.

Versions the binary reports are checked against what the system's own tools say where they
exist (pkg-config for the libraries, `mpirun --version` for Open MPI), the JSON form against
the text form, and the binding plan for shape (disjoint shares that cover every PU)."""
import json
import os
import re
import shutil
import subprocess

import pytest

DEPS = ["MPI", "libuv", "nghttp2", "protobuf-c", "hwloc", "cJSON", "OpenBLAS", "http-parser",
        "CUDA runtime", "CUDA driver", "cuBLAS", "NCCL"]
CUDA_DEPS = {"CUDA runtime", "CUDA driver", "cuBLAS", "NCCL"}
VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")


def run(*args, timeout=120, check=True):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{args} exited {p.returncode}: {p.stderr}"
    return p


@pytest.fixture(scope="module")
def env_json(tessera):
    return json.loads(run(tessera, "env", "--json").stdout)


@pytest.fixture(scope="module")
def env_text(tessera):
    return run(tessera, "env").stdout


def test_top_level_help_lists_env(tessera):
    out = run(tessera, "--help").stdout
    assert re.search(r"^\s+env\s+\S", out, re.M), out
    assert "usage: tessera" in out


def test_env_help_lists_options(tessera):
    out = run(tessera, "env", "--help").stdout
    for opt in ("--json", "--ranks", "--help"):
        assert opt in out, out


def test_env_bad_options(tessera):
    p = run(tessera, "env", "--bogus", check=False)
    assert p.returncode == 1 and "--bogus" in p.stderr
    p = run(tessera, "env", "--ranks", "-1", check=False)
    assert p.returncode == 1 and "--ranks" in p.stderr
    p = run(tessera, "env", "extra", check=False)
    assert p.returncode == 1


def test_every_dependency_listed_with_a_version(env_text, env_json):
    cuda_built = env_json["tessera"]["cuda_backend"]
    assert env_text.startswith("tessera ")
    for name in DEPS:
        m = re.search(r"^\s+" + re.escape(name) + r"\s{2,}(.+?)\s{2,}", env_text, re.M)
        assert m, f"{name} missing from:\n{env_text}"
        ver = m.group(1).strip()
        if name in CUDA_DEPS and not cuda_built:
            assert ver == "not built", (name, ver)
        elif name in ("CUDA driver",) and cuda_built:
            assert VERSION.match(ver) or ver == "none", (name, ver)  # a build host may have no driver
        else:
            assert VERSION.match(ver), (name, ver)
    # the JSON lists the same names with the same versions
    by_name = {d["name"]: d for d in env_json["dependencies"]}
    assert set(DEPS) <= set(by_name), sorted(by_name)
    for name in DEPS:
        assert re.search(r"^\s+" + re.escape(name) + r"\s+" + re.escape(by_name[name]["version"]) + r"\s",
                         env_text, re.M), name


def _pkg_config(module):
    if not shutil.which("pkg-config"):
        return None
    p = subprocess.run(["pkg-config", "--modversion", module], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


@pytest.mark.parametrize("name,module", [("libuv", "libuv"), ("nghttp2", "libnghttp2"),
                                         ("protobuf-c", "libprotobuf-c"), ("cJSON", "libcjson"),
                                         ("hwloc", "hwloc")])
def test_versions_match_pkg_config(env_json, name, module):
    want = _pkg_config(module)
    if want is None:
        pytest.skip(f"pkg-config does not know {module} here")
    got = {d["name"]: d["version"] for d in env_json["dependencies"]}[name]
    assert got == want, f"{name}: tessera says {got}, pkg-config says {want}"


def test_mpi_version_matches_mpirun(env_json):
    if not shutil.which("mpirun"):
        pytest.skip("no mpirun on PATH")
    out = run("mpirun", "--version").stdout + run("mpirun", "--version").stderr
    m = re.search(r"(\d+\.\d+\.\d+)", out)
    assert m, out
    mpi = {d["name"]: d for d in env_json["dependencies"]}["MPI"]
    assert mpi["version"] == m.group(1), (mpi, out)


def test_devices_and_topology(env_json, env_text):
    cuda = env_json["devices"]["cuda"]
    if not env_json["tessera"]["cuda_backend"]:
        assert cuda["count"] == 0 and "without CUDA" in cuda["why_none"]
    if cuda["count"] == 0:
        assert cuda["why_none"] and "CUDA: no devices: " in env_text
    assert len(cuda["devices"]) == cuda["count"]
    for g in cuda["devices"]:
        assert g["total_mem"] > 0 and g["pci_bus_id"] and re.match(r"^\d+\.\d+$", g["compute_capability"])
    topo = env_json["topology"]
    assert topo["packages"] >= 1 and topo["cores"] >= 1 and topo["pus"] >= topo["cores"]
    assert topo["numa_nodes"], topo
    assert sum(n["pus"] for n in topo["numa_nodes"]) == topo["pus"]
    assert sum(n["cores"] for n in topo["numa_nodes"]) == topo["cores"]
    for n in topo["numa_nodes"]:
        assert f"NUMA node {n['os_index']}:" in env_text
    numa_ids = {n["os_index"] for n in topo["numa_nodes"]}
    for d in topo["pci"]:
        assert re.match(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$", d["busid"]), d
        assert d["numa_node"] == -1 or d["numa_node"] in numa_ids
        assert f"PCI {d['busid']}" in env_text
    assert topo["description"] in env_text


def _cpus(lst):
    out = []
    for part in lst.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def test_binding_plan_splits_the_host(tessera, env_json):
    pus = env_json["topology"]["pus"]
    for n in (1, 2, 3):
        j = json.loads(run(tessera, "env", "--json", "--ranks", str(n)).stdout)
        plan = j["binding"]
        assert [b["local_rank"] for b in plan] == list(range(n))
        sets = [_cpus(b["cpus"]) for b in plan]
        assert all(sets), plan
        flat = sorted(c for s in sets for c in s)
        assert all(0 <= c for c in flat)
        if env_json["devices"]["cuda"]["count"] == 0 and n <= env_json["topology"]["cores"]:
            # the CPU backend's split: disjoint shares that together are the whole host
            assert len(flat) == len(set(flat)), f"shares overlap: {plan}"
            assert len(flat) == pus, f"shares do not cover the host: {plan}"


def test_under_mpirun_each_rank_reports_itself(tessera):
    if not shutil.which("mpirun"):
        pytest.skip("no mpirun on PATH")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    p = subprocess.run(["mpirun", "--oversubscribe", "-np", "2", tessera, "env"], capture_output=True,
                       text=True, timeout=180, env=env)
    assert p.returncode == 0, p.stderr
    for r in (0, 1):
        assert f"local rank {r} of 2" in p.stdout, p.stdout
