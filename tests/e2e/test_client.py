"""`tessera client` against the shared server: two user turns piped into it over HTTP and over
gRPC (grpc://, the server-streaming ChatStream RPC; and --generate, the streaming Generate RPC).  Each turn's
answer must come out on its own line, and over the streaming paths the first answer must arrive
in pieces (the client prints deltas as they come, not the whole answer at the end)."""
import os
import selectors
import subprocess
import time

from serve_util import API_KEY, tessera_bin


def run_client(url, turns, *extra, timeout=180):
    """Runs the client with turns on stdin; returns (rc, stdout, stderr, reads): reads are the
    (time, bytes) pieces of stdout as they arrived."""
    p = subprocess.Popen([tessera_bin(), "client", url, "--api-key", API_KEY, "--temperature", "0", *extra],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write("".join(t + "\n" for t in turns).encode())
    p.stdin.close()
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    reads, deadline = [], time.time() + timeout
    while time.time() < deadline:
        if not sel.select(timeout=1):
            continue
        b = os.read(p.stdout.fileno(), 65536)
        if not b:
            break
        reads.append((time.time(), b))
    try:
        p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    err = p.stderr.read().decode(errors="replace")
    out = b"".join(b for _, b in reads).decode(errors="replace")
    return p.returncode, out, err, reads


def pieces_before_first_newline(reads):
    n = 0
    for _, b in reads:
        n += 1
        if b"\n" in b:
            break
    return n


TURNS = ["Hello! Please introduce yourself in a few sentences.", "Now say it again, shorter."]


def test_http_client_two_turns_stream(server):
    rc, out, err, reads = run_client(server.base, TURNS, "--max-tokens", "40")
    assert rc == 0, err
    answers = [l for l in out.split("\n") if l.strip()]
    assert len(answers) >= 2, out
    assert "HTTP" not in err and "cannot connect" not in err, err
    assert pieces_before_first_newline(reads) >= 3, reads[:5]   # streamed, not printed at the end


def test_grpc_client_chat_two_turns(server):
    rc, out, err, reads = run_client(f"grpc://127.0.0.1:{server.grpc_port}", TURNS, "--max-tokens", "16")
    assert rc == 0, err
    assert "gRPC status" not in err and "cannot connect" not in err, err
    answers = [l for l in out.split("\n") if l.strip()]
    assert len(answers) >= 2, out
    assert pieces_before_first_newline(reads) >= 3, reads[:5]   # streamed over ChatStream


def test_grpc_client_generate_streams(server):
    rc, out, err, reads = run_client(f"grpc://127.0.0.1:{server.grpc_port}",
                                     ["The capital of France is", "Once upon a time"], "--generate",
                                     "--max-tokens", "40")
    assert rc == 0, err
    assert "gRPC status" not in err, err
    assert out.count("\n") >= 2 and out.strip(), out
    assert pieces_before_first_newline(reads) >= 3, reads[:5]


def test_grpc_client_reports_status(server):
    # a wrong key: the server's UNAUTHENTICATED status is reported, the client goes on to EOF
    p = subprocess.run([tessera_bin(), "client", f"grpc://127.0.0.1:{server.grpc_port}", "--api-key", "wrong"],
                       input="hi\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert "gRPC status 16" in p.stderr, p.stderr
