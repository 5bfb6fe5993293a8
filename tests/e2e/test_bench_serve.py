"""`tessera bench serve` stays runnable: a tiny run against the shared server (the figures
themselves are the benchmark's business, not a test's; here only that every request completes
and every figure is printed and positive)."""
import re
import subprocess

from serve_util import API_KEY, tessera_bin


def test_bench_serve_small_run(server):
    p = subprocess.run([tessera_bin(), "bench", "serve", "--url", server.base, "--api-key", API_KEY,
                        "--concurrency", "3", "--requests", "4", "--prompt-len", "16", "--max-tokens", "5"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert re.search(r"completed:\s+4 / 4 requests", out), out
    assert re.search(r"output tok/s:\s+[0-9.]+\s+\(20 tokens\)", out), out
    for label in ("requests/s:", "TTFT p50 / p99:", "ITL  p50 / p99:"):
        m = re.search(re.escape(label) + r"\s+([0-9.]+)", out)
        assert m and float(m.group(1)) > 0, (label, out)
    assert "requests 4/4 100%" in p.stderr   # progress
    # the engine's steps from /metrics: busy (forward + sampling) within wall, overhead shown
    m = re.search(r"engine steps:\s+(\d+), busy ([0-9.]+) / wall ([0-9.]+) ms per step", out)
    assert m and int(m.group(1)) >= 5 and 0 < float(m.group(2)) <= float(m.group(3)), out


def test_bench_serve_reports_a_dead_url():
    p = subprocess.run([tessera_bin(), "bench", "serve", "--url", "http://127.0.0.1:1", "--requests", "1",
                        "--wait", "0.5"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "did not answer" in p.stderr, p.stderr
