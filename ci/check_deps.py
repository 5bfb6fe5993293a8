#!/usr/bin/env python3
"""The house's dependency rules, checked over a built tree (DESIGN.md: layers, arrows down).

Two graphs over source files (a .c/.cu and its .h count as one module):
  - includes: `#include "dir/name.h"` in any project source or header;
  - calls: the symbols each object file needs (nm -u) that another object file defines.
Fails when
  - two or more modules depend on each other in a loop (a strongly connected component of
    more than one module in the union of both graphs), or
  - a module depends on a higher layer (tools -> coordinator -> worker -> kernels -> common;
    proto sits beside common, the generated gRPC code belongs to the coordinator).

    python3 ci/check_deps.py [BUILD_DIR]      (default build/)
"""
import os
import re
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"common": 0, "proto": 0, "kernels": 1, "worker": 2, "coordinator": 3, "tools": 4}
SRC_DIRS = list(LAYERS)
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(path):
    """'coordinator/frontend/server.c' -> 'coordinator/frontend/server'."""
    rel = os.path.relpath(path, ROOT)
    return os.path.splitext(rel)[0]


def layer_of(mod):
    return LAYERS.get(mod.split("/", 1)[0])


def sources():
    for d in SRC_DIRS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if f.endswith((".c", ".h", ".cu", ".cuh")):
                    yield os.path.join(dirpath, f)


def include_edges():
    edges = defaultdict(set)
    for path in sources():
        text = open(path, encoding="utf-8", errors="replace").read()
        src = module_of(path)
        for inc in INCLUDE_RE.findall(text):
            cand = [os.path.join(ROOT, inc), os.path.join(os.path.dirname(path), inc)]
            hit = next((c for c in cand if os.path.exists(c)), None)
            if hit:
                dst = module_of(hit)
                if dst != src:
                    edges[src].add(dst)
    return edges


def object_files(build):
    objs = {}
    for dirpath, _, files in os.walk(build):
        if "CMakeFiles" not in dirpath:
            continue
        for f in files:
            if not f.endswith(".o"):
                continue
            full = os.path.join(dirpath, f)
            # build/X/CMakeFiles/target.dir/sub/name.c.o -> X/sub/name
            rel = os.path.relpath(full, build)
            parts = rel.split(os.sep)
            i = parts.index("CMakeFiles")
            src = os.path.join(*(parts[:i] + parts[i + 2:]))
            src = src[:-2]  # drop .o
            if not os.path.exists(os.path.join(ROOT, src)):
                continue  # generated code (protobuf, web page) or tests
            if src.split(os.sep, 1)[0] not in LAYERS:
                continue
            objs.setdefault(module_of(os.path.join(ROOT, src)), full)
    return objs


def nm(path, defined):
    args = ["nm", "-P", "--defined-only" if defined else "--undefined-only", path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    syms = set()
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 2 and (not defined or f[1] in "TDBRVWtdbr" and f[1].isupper()):
            syms.add(f[0])
    return syms


def call_edges(build):
    objs = object_files(build)
    owner = {}
    for mod, o in objs.items():
        for s in nm(o, True):
            owner.setdefault(s, mod)
    edges = defaultdict(set)
    for mod, o in objs.items():
        for s in nm(o, False):
            dst = owner.get(s)
            if dst and dst != mod:
                edges[mod].add(dst)
    return edges, len(objs)


def sccs(nodes, edges):
    """Tarjan's algorithm, iterative."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]; counter[0] += 1
        stack.append(start); on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1
                    stack.append(w); on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    inc = include_edges()
    calls, n_objs = call_edges(build)
    if n_objs == 0:
        print(f"check_deps: no object files under {build}: build first", file=sys.stderr)
        return 2
    edges = defaultdict(set)
    why = {}
    for kind, g in (("includes", inc), ("calls", calls)):
        for a, bs in g.items():
            for b in bs:
                edges[a].add(b)
                why.setdefault((a, b), kind)
    nodes = sorted(set(edges) | {b for bs in edges.values() for b in bs})
    bad = 0
    for comp in sccs(nodes, edges):
        if len(comp) > 1:
            bad += 1
            links = [f"{a} -> {b} ({why[(a, b)]})" for a in comp for b in sorted(edges[a]) if b in comp]
            print("cycle: " + ", ".join(comp) + "\n    " + "\n    ".join(links))
    for a in nodes:
        for b in sorted(edges.get(a, ())):
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                bad += 1
                print(f"upward: {a} -> {b} ({why[(a, b)]}): layer {b.split('/')[0]} is above {a.split('/')[0]}")
    print(f"check_deps: {len(nodes)} modules, {n_objs} objects, {sum(map(len, edges.values()))} edges, "
          f"{bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
