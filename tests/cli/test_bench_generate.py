"""`tessera bench generate` (issue 12, "Fast and small"): comma lists of prompt lengths, decode
depths and generation lengths, --runs with mean and standard deviation, --json, the process's
peak RSS and time to a ready model; every bad value refused.  Runs the real binary on the
default model with tiny sizes, so the file takes seconds."""
import itertools
import json
import math
import os
import re
import subprocess

import pytest

ENV = dict(os.environ, TESSERA_LOG="warn")


def run(tessera, *args, timeout=300):
    return subprocess.run([tessera, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_json_one_case_per_combination_with_mean_and_std(tessera, smollm2):
    prompts, depths, gens = (16, 32), (0, 16), (4,)
    p = run(tessera, "bench", "generate", smollm2, "--backend", "cpu", "--threads", 2, "--prompt-len", "16,32",
            "--depth", "0,16", "--gen-len", 4, "--runs", 2, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)   # the whole of stdout is one JSON document
    assert doc["runs"] == 2
    assert doc["peak_rss_bytes"] > 0
    assert doc["weight_bytes"] > 0
    assert doc["ready_s"] >= 0
    assert doc["host_cpus"] >= 1 and doc["loadavg_1m_end"] >= 0   # how busy the machine was
    cases = doc["cases"]
    assert len(cases) == len(prompts) * len(depths) * len(gens)
    assert {(c["prompt_len"], c["depth"], c["gen_len"]) for c in cases} == set(itertools.product(prompts, depths, gens))
    for c in cases:
        assert c["runs"] == 2
        for what in ("prefill_tok_s", "decode_tok_s"):
            samples = c[what]
            assert len(samples) == 2 and all(s > 0 for s in samples), c
            mean = sum(samples) / 2
            std = math.sqrt(sum((s - mean) ** 2 for s in samples))   # sample std, n - 1 = 1
            assert c[what + "_mean"] == pytest.approx(mean, rel=1e-9)
            assert c[what + "_std"] >= 0
            assert c[what + "_std"] == pytest.approx(std, rel=1e-6, abs=1e-9)


def test_table_rows_memory_and_startup(tessera, smollm2):
    p = run(tessera, "bench", "generate", smollm2, "--backend", "cpu", "--threads", 2, "--prompt-len", 16,
            "--depth", "0,8", "--gen-len", "4,6")
    assert p.returncode == 0, p.stderr
    rows = re.findall(r"^\|\s+(\d+) \|\s+(\d+) \|\s+(\d+) \|\s+([\d.]+) \+- ([\d.]+) \|\s+([\d.]+) \+- ([\d.]+) \|",
                      p.stdout, re.M)
    assert {(int(r[0]), int(r[1]), int(r[2])) for r in rows} == {(16, 0, 4), (16, 0, 6), (16, 8, 4), (16, 8, 6)}
    assert len(rows) == 4
    for r in rows:
        assert float(r[3]) > 0 and float(r[5]) > 0
        assert float(r[4]) == 0 and float(r[6]) == 0   # one run (the default): no spread
    # the line `bench sweep` reads, one per case
    assert len(re.findall(r"^bench-generate: prompt_len=16 depth=\d+ gen_len=\d+ decode_tok_s=[\d.]+ "
                          r"prefill_tok_s=[\d.]+$", p.stdout, re.M)) == 4
    rss = re.search(r"^peak RSS: ([\d.]+) MiB", p.stdout, re.M)
    assert rss and float(rss.group(1)) > 0, p.stdout
    assert re.search(r"^model ready [\d.]+ s after process start$", p.stdout, re.M), p.stdout


@pytest.mark.parametrize("args,message", [
    (("--prompt-len", "16,,32"), "--prompt-len '16,,32': item 2 is empty"),
    (("--prompt-len", "16,"), "--prompt-len '16,': item 2 is empty"),
    (("--prompt-len", ""), "--prompt-len is empty"),
    (("--depth", "0, 16"), "--depth '0, 16': item 2 is not a whole number"),
    (("--gen-len", "-4"), "--gen-len '-4': item 1 is not a whole number"),
    (("--prompt-len", "0"), "--prompt-len '0': item 1 (0) is out of range"),
    (("--gen-len", "4,0"), "--gen-len '4,0': item 2 (0) is out of range"),
    (("--prompt-len", "99999999999999999999999"), "is out of range"),
    (("--depth", ",".join(map(str, range(17)))), "more than 16 items"),
    (("--runs", "0"), "--runs 0 is out of range"),
    (("--runs", "-2"), "--runs -2 is out of range"),
    (("--runs", "1000000"), "--runs 1000000 is out of range"),
    (("--threads", "-1"), "--threads -1 is out of range"),
    (("--session-len", "0"), "--session-len 0 is out of range"),
    # SmolLM2's context is 8192 tokens: a depth and decode past it, a prompt past it
    (("--depth", "0,8190", "--gen-len", "4"), "--depth 8190 + --gen-len 4 need 8195 tokens"),
    (("--prompt-len", "8192"), "--prompt-len 8192 and its first token need 8193 tokens"),
    (("--session-len", "64", "--prompt-len", "16", "--depth", "48", "--gen-len", "32"),
     "--depth 48 + --gen-len 32 need 81 tokens (context, first token, decode steps), more than --session-len, 64"),
    (("--batch", "8"), "--batch, --ctx and --dtype go with --dummy-config"),
    (("--dummy-config", "llama3-8b", "--runs", "2"), "--dummy-config takes no MODEL, --depth, --runs, --json"),
    (("--dummy-config", "llama3-8b", "--threads", "2"), "--dummy-config takes no MODEL, --depth, --runs, --json"),
    (("--dummy-config", "llama3-8b", "--backend", "cpu"), "--dummy-config runs on the GPU"),
    (("--dummy-config", "llama3-8b", "--prompt-len", "128,512"), "--prompt-len '128,512': more than 1 item"),
])
def test_bad_values_refused(tessera, smollm2, args, message):
    model = () if "--dummy-config" in args else (smollm2,)
    backend = () if "--dummy-config" in args else ("--backend", "cpu")
    p = run(tessera, "bench", "generate", *model, *backend, *args, timeout=60)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
    assert p.stdout == ""


@pytest.mark.parametrize("conc,message", [
    ("8,32,", "--concurrency '8,32,': item 3 is empty"),
    ("8,,32", "--concurrency '8,,32': item 2 is empty"),
    ("0,8", "--concurrency '0,8': item 1 (0) is out of range"),
    ("8,1000000000000", "item 2 (1000000000000) is out of range"),
])
def test_bench_batch_concurrency_list_refused(tessera, smollm2, conc, message):
    p = run(tessera, "bench", "batch", smollm2, "--backend", "cpu", "--concurrency", conc, timeout=60)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
    assert p.stdout == ""
