"""The live dashboard page: self-contained, and in headless Chromium it draws the frontier and the live point."""

import re
import struct
import subprocess
import time
import zlib

from conftest import need

from slimlm.serve.dashboard import FRONTIER_COLOUR, LIVE_COLOUR


def _png_rgb(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes) into rows of RGB(A) bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and ctype in (2, 6) and not interlace
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, bpp, rows


def _count(rows, bpp, rgb, tol=40):
    r0, g0, b0 = rgb
    n = 0
    for row in rows:
        for i in range(0, len(row), bpp):
            if abs(row[i] - r0) <= tol and abs(row[i + 1] - g0) <= tol and abs(row[i + 2] - b0) <= tol:
                n += 1
    return n


def _rgb(text):
    return tuple(int(x) for x in re.findall(r"\d+", text))


def test_dashboard_page_is_self_contained(server):
    page = server.get("/dashboard").text
    assert "Plotly.newPlot" in page and 'fetch("/metrics"' in page
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|https?://cdn", page, re.I)


def test_chromium_screenshot_shows_the_frontier_and_the_live_point(server, tmp_path):
    chromium = need("chromium")
    end = time.time() + 60  # the live point needs a canary result
    while "slimlm_canary_quality_drop_ratio NaN" in server.get("/metrics").text:
        assert time.time() < end, "no canary result"
        time.sleep(0.5)
    shot = tmp_path / "dash.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--hide-scrollbars", "--window-size=1200,700", "--virtual-time-budget=10000",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", server.url + "/dashboard"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), res.stderr[-2000:]
    _, bpp, rows = _png_rgb(shot.read_bytes())
    blue, red = _count(rows, bpp, _rgb(FRONTIER_COLOUR)), _count(rows, bpp, _rgb(LIVE_COLOUR))
    assert blue > 300, f"frontier line not drawn ({blue} pixels)"
    assert red > 300, f"live point not drawn ({red} pixels): the page did not read /metrics"
