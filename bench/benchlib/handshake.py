"""The tls_handshake scenario (issue 10): new TLS 1.3 connections per second through the proxy, each a full
handshake, one `GET /` and a close; and the proxy's CPU per handshake.

Why so: wrk cannot measure this. With `-H 'Connection: close'` it does open a new connection per request, but it
keeps the TLS session of the last one (its close is SSL_shutdown + SSL_clear, which keeps the session) and resumes
it: against HAProxy, `show info` said SslFrontendSessionReuse_pct 100 and a key rate of 0 during such a run. h2load
--h1 with `Connection: close` does the same. A proxy's own setting cannot fix that for all three: HAProxy and nginx
can be told to refuse resumption, lb keeps what its TLS library does. So the client is `openssl s_time -new -www /`:
every connection a new SSL object without a session (a full handshake: HAProxy's reuse counter stayed at 0 % and its
key rate equal to the connection rate), then `GET / HTTP/1.0` (no Host: what s_time sends) and a read to the close.
It is OpenSSL's C code, as fast a client as wrk's, but sequential: the scenario runs 16 of them at once (the scenario's
conns), pinned to the load core, each for BENCH_DURATION, and the rate is all their connections over the wall time
from the first start to the last exit (s_time's own `real seconds` is whole seconds only). Its `connections/user
sec` gives the client's CPU per handshake too. s_time does not check the answers: before the load one request of
exactly that shape must answer 200 `hello from N`, and the bytes read per connection (every answer the same size
through a given proxy) are in the table and the JSON.

On this VM an OpenSSL 3.0 client spends about 1 ms of CPU per full handshake (X25519, verifying an ECDSA signature,
and OpenSSL 3's per-connection set-up), so with 16 clients and the backends on core 1 the rate is bounded by the
load core as much as by the proxy: the robust figure is the proxy's CPU per handshake, as elsewhere.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time

from .common import LOAD_CORE, StartError
from .noise import other_load, snapshot, wait_quiet
from .procfs import CLK_TCK, rss_kib
from .procs import forget_pid, record_pid
from .protocols import tls_client_context
from .targets import Backends, Target

REQUEST = b"GET / HTTP/1.0\r\n\r\n"  # what `openssl s_time -www /` sends


def s_time_request(port: int, timeout: float = 5.0) -> tuple[int, bytes, int]:
    """s_time's request, over TLS 1.3 from Python: (status, body, bytes of the whole answer)."""
    ctx = tls_client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(REQUEST)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, body, len(data)


def run_s_time(port: int, clients: int, seconds: float) -> tuple[list[dict], float, list[str]]:
    """`clients` parallel `openssl s_time -new -www /` for `seconds` (whole seconds, at least 1): each one's
    figures, the wall time from the first start to the last exit, and what the failed ones said."""
    argv = ["taskset", "-c", LOAD_CORE, "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
            "-time", str(max(1, round(seconds))), "-www", "/"]
    procs: list[subprocess.Popen] = []
    t0 = time.monotonic()
    try:
        for _ in range(clients):
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            record_pid(p.pid)
            procs.append(p)
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=max(0.0, t0 + seconds + 30 - time.monotonic()))
            outs.append((p.returncode, out.decode(errors="replace")))
        wall = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            forget_pid(p.pid)
    runs, failed = [], []
    for rc, out in outs:
        m = re.search(r"(\d+) connections in ([\d.]+)s; [\d.]+ connections/user sec, bytes read (\d+)", out)
        if rc != 0 or not m:
            failed.append(out.replace("*", "").strip()[-300:] or f"exit status {rc}")
            continue
        runs.append({"conns": int(m.group(1)), "user_s": float(m.group(2)), "bytes": int(m.group(3))})
    return runs, wall, failed


def run_handshakes(target: Target, backends: Backends, sc, args) -> dict:
    status, body, size = s_time_request(target.port)
    if status != 200 or not body.startswith(b"hello from "):
        raise StartError(f"{target.name} answered s_time's request (`GET / HTTP/1.0`, no Host) with {status} "
                         f"{body[:80]!r}")
    if args.warmup > 0:  # unmeasured, the same load
        run_s_time(target.port, sc.conns, args.warmup)
    if not target.alive():
        raise StartError(target.died())
    wait_quiet(target, backends, args)
    counts0 = backends.counts()
    s0 = snapshot(target, backends)
    runs, wall, failed = run_s_time(target.port, sc.conns, args.duration)
    s1 = snapshot(target, backends)
    conns = sum(r["conns"] for r in runs)
    res: dict = {"requests": conns, "clients": len(runs), "wall_s": wall, "answer_bytes": size}
    res["rps"] = conns / wall if wall > 0 else 0.0
    res["p50_us"] = res["p99_us"] = None  # s_time times none of its connections
    res["errors"] = {"s_time failed": len(failed)} if failed else {}
    if failed:
        res["s_time_failures"] = failed
    if conns:
        per_conn = sum(r["bytes"] for r in runs) / conns
        res["bytes_per_conn"] = per_conn
        if abs(per_conn - size) > 1:  # every answer through one proxy is the same size
            res["errors"]["answers of another size"] = 1
        res["client_cpu_us_per_conn"] = sum(r["user_s"] for r in runs) / conns * 1e6
    if not target.alive():
        res["errors"]["proxy died"] = 1
        res["note"] = target.died()
    res["rss_kib"] = rss_kib(target.pids())
    proxy_ticks = s1["proxy"] - s0["proxy"]
    ours = proxy_ticks + (s1["backends"] - s0["backends"]) + (s1["rusage"] - s0["rusage"])
    res["cpu_us_per_req"] = proxy_ticks / CLK_TCK * 1e6 / conns if conns else None
    res["other_load_pct"] = other_load(s0, s1, ours)
    res["steal_pct"] = (s1["steal"] - s0["steal"]) / CLK_TCK / (s1["wall"] - s0["wall"]) * 100
    time.sleep(1.2)  # the backends' access-log buffers
    res["backend_split"] = [b - a for a, b in zip(counts0, backends.counts())]
    return res
