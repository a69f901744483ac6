"""The tcp_stream scenario (issue 10): the throughput of 1 GiB transfers through a proxy in TCP mode (L4), and the
proxy's CPU per GiB.

Why so: the backend is the backends' nginx sending a 1 GiB file with sendfile (the cheapest sender there is, so the
proxy in the middle is what limits), over HTTP/1.1 because nginx speaks it; the proxy does not parse it (TCP mode),
it copies bytes. The file is sparse (made with truncate when the scenario first runs: no disk written, and it reads
as zeros, which is nothing to a proxy that does not look at the bytes). The client is ours, Python with recv_into
into one 1 MiB buffer (a few thousand system calls per GiB: the copying is the kernel's, not the interpreter's),
pinned to the load core with the backends: `GET /static/1g.bin` with `Connection: close` on a new connection, the
head parsed, then exactly Content-Length bytes read; a transfer is timed from the connect to its last byte. A run is
one unmeasured transfer (warms the page cache and the proxy), a wait for a quiet machine, then transfers one after
another until BENCH_DURATION is used up (at least one, at most MAX_TRANSFERS), with CPU snapshots around them:
MiB/s is all the bytes over all the transfers' time, the CPU per GiB the proxy's over the same span.
"""

from __future__ import annotations

import re
import socket
import time

from .common import HUGE_PATH, HUGE_SIZE, Scenario, StartError, median
from .noise import other_load, snapshot, wait_quiet
from .procfs import CLK_TCK, rss_kib
from .targets import Backends, Target

MAX_TRANSFERS = 50  # per run: at ~1 GiB/s 10 s hold ~10
READ_TIMEOUT = 10.0  # no byte for this long: the transfer failed
BUF = 1 << 20


def ensure_file(backends: Backends) -> None:
    """The backends' 1 GiB file, sparse (no disk written); made once."""
    path = backends.dir / ("www" + HUGE_PATH)
    if not path.exists() or path.stat().st_size != HUGE_SIZE:
        with open(path, "wb") as f:
            f.truncate(HUGE_SIZE)


def download(port: int, path: str = HUGE_PATH) -> dict:
    """One `GET path` with `Connection: close` on a new connection, the body read whole and thrown away:
    {seconds, bytes, status} or {error}."""
    buf = bytearray(BUF)
    view = memoryview(buf)
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                if len(head) > 65536:
                    return {"error": "no end of the head in 64 KiB"}
                n = s.recv_into(view)
                if not n:
                    return {"error": "closed before the head"}
                head += bytes(view[:n])
            head, _, rest = head.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if not m:
                return {"error": "no Content-Length", "status": status}
            want = int(m.group(1))
            got = len(rest)
            while got < want:
                n = s.recv_into(view, min(BUF, want - got))
                if not n:
                    return {"error": f"closed after {got:,} of {want:,} bytes", "status": status}
                got += n
    except (OSError, ValueError, IndexError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"seconds": time.perf_counter() - t0, "bytes": got, "status": status}


def run_stream(target: Target, backends: Backends, sc: Scenario, args) -> dict:
    ensure_file(backends)
    warm = download(target.port, sc.path)  # unmeasured: the page cache, the proxy's buffers
    if "error" in warm:
        raise StartError(f"{target.name}: the warm-up transfer failed: {warm['error']}")
    if warm["status"] != 200 or warm["bytes"] != HUGE_SIZE:
        raise StartError(f"{target.name}: the warm-up transfer answered {warm['status']} with {warm['bytes']:,} bytes")
    if not target.alive():
        raise StartError(target.died())
    wait_quiet(target, backends, args)
    errors: dict[str, int] = {}
    done: list[dict] = []
    s0 = snapshot(target, backends)
    end = time.monotonic() + args.duration
    while len(done) + sum(errors.values()) < MAX_TRANSFERS:
        r = download(target.port, sc.path)
        if "error" in r:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
        elif r["status"] != 200 or r["bytes"] != HUGE_SIZE:
            errors["non-200 or short"] = errors.get("non-200 or short", 0) + 1
        else:
            done.append(r)
        if time.monotonic() >= end or not target.alive():
            break
    s1 = snapshot(target, backends)
    total_bytes = sum(r["bytes"] for r in done)
    total_s = sum(r["seconds"] for r in done)
    res: dict = {
        "transfers": len(done),
        "requests": len(done),
        "bytes": total_bytes,
        "mib_s": total_bytes / 2**20 / total_s if total_s else None,
        "s_per_gib": median([r["seconds"] * 2**30 / r["bytes"] for r in done]),
        "transfer_s": [round(r["seconds"], 3) for r in done],
        "errors": errors,
    }
    if not target.alive():
        res["errors"]["proxy died"] = 1
        res["note"] = target.died()
    res["rss_kib"] = rss_kib(target.pids())
    proxy_ticks = s1["proxy"] - s0["proxy"]
    ours = proxy_ticks + (s1["backends"] - s0["backends"]) + (s1["rusage"] - s0["rusage"])
    if target.name == "direct":
        ours -= proxy_ticks  # the same process as the backends: counted once
    gib = total_bytes / 2**30
    res["cpu_ms_per_gib"] = proxy_ticks / CLK_TCK * 1e3 / gib if gib else None
    res["other_load_pct"] = other_load(s0, s1, ours)
    res["steal_pct"] = (s1["steal"] - s0["steal"]) / CLK_TCK / (s1["wall"] - s0["wall"]) * 100
    return res
