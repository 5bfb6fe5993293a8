"""`tessera bench sweep` (issue 16): one `bench generate` launch under mpirun per TP size, a
table, --json with every size's figures, and a --plot PNG that is a real, decodable, non-blank
image (checked here byte by byte: signature, IHDR size, IDAT inflating to the raw scanlines)."""
import json
import os
import struct
import subprocess
import zlib

from tsr_paths import default_model, tessera_bin

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", TESSERA_THREADS="1")


def png_pixels(data):
    """(width, height, channels, set of distinct pixels) of an 8-bit non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and interlace == 0
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    stride = 1 + w * ch
    assert len(raw) == h * stride, (len(raw), h, stride)
    # undo the scanline filters to count distinct pixels
    prev, pixels = bytearray(w * ch), set()
    for y in range(h):
        f, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
        for i in range(len(line)):
            a = line[i - ch] if i >= ch else 0
            b, c = prev[i], prev[i - ch] if i >= ch else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            else: assert f == 0, f
        pixels.update(bytes(line[x * ch:(x + 1) * ch]) for x in range(w))
        prev = line
    return w, h, ch, pixels


def test_sweep_table_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    r = subprocess.run([tessera_bin(), "bench", "sweep", default_model(), "--backend", "cpu", "--tp", "1,2",
                        "--gen-len", "8", "--prompt-len", "16", "--runs", "2",
                        "--json", str(out_json), "--plot", str(out_png)],
                       env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [l for l in r.stdout.splitlines() if l.startswith("| ") and l[2].isdigit()]
    assert [l.split("|")[1].strip() for l in rows] == ["1", "2"], r.stdout
    assert "speedup vs TP 1" in r.stdout and "1.00x" in rows[0], r.stdout
    assert "[1/2] TP 1" in r.stderr and "[2/2] TP 2" in r.stderr, r.stderr   # progress per launch
    res = json.loads(out_json.read_text())["results"]
    assert [x["tp"] for x in res] == [1, 2]
    for x in res:
        assert x["ok"] and x["decode_tok_s"] > 0 and x["prefill_tok_s"] > 0 and x["speedup"] > 0, x
    assert res[0]["speedup"] == 1
    w, h, ch, pixels = png_pixels(out_png.read_bytes())
    assert w >= 320 and h >= 200 and ch == 3
    assert len(pixels) > 2, pixels


def test_sweep_bad_tp_list_refused():
    r = subprocess.run([tessera_bin(), "bench", "sweep", "--tp", "1,x"], env=ENV, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "--tp must be a comma-separated list" in r.stderr, r.stderr


def test_sweep_failed_launch_reported(tmp_path):
    """A launch that cannot run is a failed row in the table and the JSON and a non-zero exit."""
    out_json = tmp_path / "sweep.json"
    r = subprocess.run([tessera_bin(), "bench", "sweep", default_model(), "--tp", "1",
                        "--mpirun", str(tmp_path / "no-such-mpirun"), "--json", str(out_json)],
                       env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "TP 1 failed (exit status 127)" in r.stderr, r.stderr
    assert "| 1 | 1 | failed |" in r.stdout, r.stdout
    assert json.loads(out_json.read_text())["results"][0]["ok"] is False
