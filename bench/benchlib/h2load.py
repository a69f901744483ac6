"""The HTTP/2 scenarios (issue 10): h2_tls (h2 over TLS 1.3, chosen by ALPN) and h2c (HTTP/2 in clear, prior
knowledge), with h2load from nghttp2-client; the backends stay HTTP/1.1.

Why so: h2load is to HTTP/2 what wrk is to HTTP/1.1 (C, one thread, event loop): `-c4 -m16` is 4 connections of 16
concurrent streams each, 64 requests in flight as in `small`, so the figures compare with `small` and
`tls_keepalive`. It runs like wrk does in load.py: pinned to the load core, an unmeasured warm-up with the same load,
a wait for a quiet machine, then `-D BENCH_DURATION` measured with CPU snapshots around it, bounded by a timeout too,
its pid recorded for bench/run. h2load prints no percentiles, only a mean and deviation per request, so it writes
every request to a log (`--log-file`: start, status, µs until the end of its response), from which p50 and p99 are
taken here (the file is removed afterwards). Its TLS lines (protocol, ciphersuite, group, ALPN protocol) go into the
run's figures: the report prints them.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from .common import LOAD_CORE, Scenario, StartError
from .noise import other_load, snapshot, wait_quiet
from .procfs import CLK_TCK, rss_kib
from .procs import forget_pid, record_pid
from .targets import Backends, Target

STREAMS = 16  # per connection (-m); the scenario's conns are the connections (-c)


def percentile(sorted_xs: list[int], pct: float) -> float | None:
    """The nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, round(pct / 100 * len(sorted_xs) + 0.5) - 1))
    return float(sorted_xs[k])


def parse_h2load(out: str) -> dict:
    r: dict = {}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                  r"(\d+) timeout", out)
    if not m:
        raise ValueError("no 'requests:' line in h2load's output")
    total, _started, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
    r["requests"] = ok
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    errors = {}
    for k, v in (("failed", failed), ("errored", errored), ("timeout", timeout)):
        if v:
            errors[k] = v
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m and int(m.group(3)) + int(m.group(4)):
        errors["non-2xx"] = int(m.group(3)) + int(m.group(4))
    r["errors"] = errors
    tls = {}
    for key, pat in (("version", r"TLS Protocol: (\S+)"), ("cipher", r"Cipher: (\S+)"),
                     ("group", r"Server Temp Key: (\S+)"), ("alpn", r"Application protocol: (\S+)")):
        m = re.search(pat, out)
        if m:
            tls[key] = m.group(1)
    if tls:
        r["h2load_tls"] = tls
    m = re.search(r"Application protocol: (\S+)", out)
    if m and m.group(1) not in ("h2", "h2c"):
        errors[f"spoke {m.group(1)}"] = 1
    return r


def run_h2load(url: str, conns: int, seconds: float, log_file: Path | None = None) -> tuple[dict, str]:
    argv = ["taskset", "-c", LOAD_CORE, "h2load", "-t1", f"-c{conns}", f"-m{STREAMS}",
            "-D", str(max(1, round(seconds)))]
    if log_file:
        argv.append(f"--log-file={log_file}")
    argv.append(url)
    # bounded by -D and, failing that, by this timeout; its pid is recorded like the others' for bench/run
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    record_pid(p.pid)
    try:
        out, _ = p.communicate(timeout=seconds + 30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        forget_pid(p.pid)
    # drop the progress lines
    out = "\n".join(ln for ln in out.splitlines() if not ln.startswith("progress:"))
    if p.returncode != 0:
        raise RuntimeError(f"h2load exited with {p.returncode}: {out.strip()[-500:]}")
    return parse_h2load(out), out


def latencies_us(log_file: Path) -> list[int]:
    """Every 2xx request's time until the end of its response (µs), ascending, from h2load's --log-file."""
    out = []
    with open(log_file) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):
                out.append(int(parts[2]))
    out.sort()
    return out


def run_h2(target: Target, backends: Backends, sc: Scenario, args) -> dict:
    url = f"{'https' if sc.name == 'h2_tls' else 'http'}://127.0.0.1:{target.port}{sc.path}"
    if args.warmup > 0:
        run_h2load(url, sc.conns, args.warmup)
    if not target.alive():
        raise StartError(target.died())
    wait_quiet(target, backends, args)
    log_file = args.tmp / "h2load.tsv"
    counts0 = backends.counts()
    s0 = snapshot(target, backends)
    try:
        res, out = run_h2load(url, sc.conns, args.duration, log_file)
        s1 = snapshot(target, backends)
        lat = latencies_us(log_file)
    finally:
        log_file.unlink(missing_ok=True)
    res["p50_us"] = percentile(lat, 50)
    res["p99_us"] = percentile(lat, 99)
    if not target.alive():
        res["errors"]["proxy died"] = 1
        res["note"] = target.died()
    res["rss_kib"] = rss_kib(target.pids())
    proxy_ticks = s1["proxy"] - s0["proxy"]
    ours = proxy_ticks + (s1["backends"] - s0["backends"]) + (s1["rusage"] - s0["rusage"])
    res["cpu_us_per_req"] = proxy_ticks / CLK_TCK * 1e6 / res["requests"] if res["requests"] else None
    res["other_load_pct"] = other_load(s0, s1, ours)
    res["steal_pct"] = (s1["steal"] - s0["steal"]) / CLK_TCK / (s1["wall"] - s0["wall"]) * 100
    time.sleep(1.2)
    res["backend_split"] = [b - a for a, b in zip(counts0, backends.counts())]
    res["h2load_output"] = out
    return res
