"""The soak of issue 10: `tessera bench serve` at twice what the server can hold (CPU backend),
with 30% of the clients hanging up at a random point of their stream.  What the bounded queue
(--max-queue) cannot hold is answered 429 (503 is also load shedding); nothing else: no other
4xx, no 5xx, no connection the server resets or stream it breaks.  Afterwards every KV block is
free (cached prefix blocks count as free), nothing runs or waits, the connection count is back
to its baseline, and the server's RSS drifted under 5% from the end of a warm-up to the end.

CI runs it for about a minute; `bash ci/soak.sh [SECONDS]` runs the same soak longer (this file
is also a script: `python tests/e2e/test_soak.py SECONDS` prints the figures)."""
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from serve_util import Server, metrics, tessera_bin  # noqa: E402

MAX_BATCH, MAX_QUEUE = 4, 4
CLIENTS = 2 * (MAX_BATCH + MAX_QUEUE)   # twice what the server holds (running + queued)
RSS_DRIFT = 0.05
# a KV pool small enough that the warm-up touches every block (4 running sequences of 40 tokens
# need 4 blocks of 64), so the RSS after it is the steady state
SERVE_ARGS = ["--max-batch-size", str(MAX_BATCH), "--max-queue", str(MAX_QUEUE), "--cache-max-entry-count", "16"]
BENCH_ARGS = ["--concurrency", str(CLIENTS), "--disconnect-fraction", "0.3", "--prompt-len", "16", "--max-tokens", "24"]


def rss_kb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def settled(server, baseline_conns, timeout=30):
    """/metrics once nothing runs, waits or holds a KV block and the connections are back to
    the baseline (the server notices hung-up clients at its next write), or the last seen."""
    deadline = time.time() + timeout
    while True:
        m = metrics(server)
        if (m["tessera_requests_running"] == 0 and m["tessera_requests_waiting"] == 0
                and m["tessera_kv_blocks_used"] == 0 and m["tessera_connections"] <= baseline_conns) \
                or time.time() > deadline:
            return m
        time.sleep(0.5)


def bench(server, seconds, out_dir, name):
    path = pathlib.Path(out_dir) / f"{name}.json"
    p = subprocess.run([tessera_bin(), "bench", "serve", "--url", server.base, "--wait", "30",
                        "--duration", str(seconds), "--json", str(path)] + BENCH_ARGS,
                       capture_output=True, text=True, timeout=seconds + 240)
    res = json.loads(path.read_text()) if path.exists() else {}
    return p, res


def soak(seconds, warmup, log=lambda s: None):
    """Runs warm-up then soak against a fresh server; returns the figures (a dict)."""
    server = Server(SERVE_ARGS, log_name="soak_server")
    peak = {"running": 0, "waiting": 0}
    stop = threading.Event()
    fig = {}

    def watch():   # the bounds hold during the load, not only at the end
        while not stop.wait(1.0):
            try:
                m = metrics(server)
            except Exception:   # noqa: BLE001 (a failed scrape shows up in the counts)
                continue
            peak["running"] = max(peak["running"], m["tessera_requests_running"])
            peak["waiting"] = max(peak["waiting"], m["tessera_requests_waiting"])

    try:
        base = metrics(server)["tessera_connections"]
        with tempfile.TemporaryDirectory() as td:
            log(f"warm-up: {warmup:.0f} s, {CLIENTS} clients against --max-batch-size {MAX_BATCH} "
                f"--max-queue {MAX_QUEUE}")
            wp, wres = bench(server, warmup, td, "warmup")
            settled(server, base)
            rss0 = rss_kb(server.proc.pid)
            log(f"after warm-up: VmRSS {rss0} kB; soak: {seconds:.0f} s")
            t = threading.Thread(target=watch, daemon=True)
            t.start()
            p, res = bench(server, seconds, td, "soak")
            stop.set()
            t.join()
            m = settled(server, base)
            rss1 = rss_kb(server.proc.pid)
        fig.update(rc=p.returncode, warmup_rc=wp.returncode,
                   warmup_429=wres.get("counts", {}).get("429"), queue_refused_total=m["tessera_queue_refused_total"], counts=res.get("counts", {}), requests=res.get("requests"),
                   wall_s=res.get("wall_s"), requests_per_s=res.get("requests_per_s"),
                   output_tok_per_s=res.get("output_tok_per_s"), ttft_ms=res.get("ttft_ms"),
                   first_error=res.get("first_error"), peak=peak, connections_baseline=base,
                   after={k[len("tessera_"):]: v for k, v in m.items()
                          if k in ("tessera_kv_blocks_used", "tessera_kv_blocks_free", "tessera_kv_blocks_total",
                                   "tessera_kv_blocks_cached", "tessera_requests_running",
                                   "tessera_requests_waiting", "tessera_connections")},
                   rss_kb=[rss0, rss1], rss_drift=(rss1 - rss0) / rss0, bench_output=p.stdout + p.stderr[-3000:])
    finally:
        stop.set()
        fig_rc = server.stop()
    fig["server_exit"] = fig_rc
    return fig


def problems(f):
    """What the soak must show, as a list of failures (empty: passed)."""
    c, out = f["counts"], []
    if f["rc"] != 0:
        out.append(f"bench serve exited {f['rc']}")
    if not c:
        out.append("no --json counts")
        return out
    for k in ("5xx", "other_4xx", "other_status", "connection_errors", "broken_streams", "stream_errors"):
        if c[k]:
            out.append(f"{c[k]} answers counted as {k} (first error: {f['first_error']})")
    if c["2xx"] + c["429"] + c["503"] != f["requests"] - c["connection_errors"]:
        out.append(f"statuses other than 2xx/429/503: {c}")
    if f["queue_refused_total"] != c["429"] + (f["warmup_429"] or 0):
        out.append(f"the server counted {f['queue_refused_total']:.0f} queue refusals, the clients saw "
                   f"{c['429']} + {f['warmup_429']} 429s")
    if not (c["completed"] and c["hung_up"] and c["429"]):
        out.append(f"the soak did not complete, hang up and overflow the queue (429) all at once: {c}")
    if f["peak"]["waiting"] > MAX_QUEUE or f["peak"]["running"] > MAX_BATCH:
        out.append(f"bounds exceeded during the load: {f['peak']}")
    a = f["after"]
    if a["kv_blocks_used"] or a["requests_running"] or a["requests_waiting"]:
        out.append(f"not idle after the load: {a}")
    if a["connections"] > f["connections_baseline"]:
        out.append(f"connections {a['connections']} after the load, {f['connections_baseline']} before")
    if abs(f["rss_drift"]) >= RSS_DRIFT:
        out.append(f"RSS drifted {100 * f['rss_drift']:.1f}% ({f['rss_kb'][0]} -> {f['rss_kb'][1]} kB)")
    if f["server_exit"] != 0:
        out.append(f"server exit status {f['server_exit']}")
    return out


def test_soak_twice_saturation_with_disconnects(tessera, smollm2):
    f = soak(40, 10)
    assert not problems(f), (problems(f), {k: v for k, v in f.items() if k != "bench_output"}, f["bench_output"])


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 600
    fig = soak(secs, min(60.0, max(10.0, secs / 10)), log=lambda s: print(s, flush=True))
    print(fig.pop("bench_output"))
    print(json.dumps(fig, indent=1))
    bad = problems(fig)
    print("soak: " + ("PASS" if not bad else "FAIL\n  " + "\n  ".join(bad)))
    sys.exit(1 if bad else 0)
