"""The CPU scenarios (small, latency, big, close; and tls_keepalive, tcp_connect): wrk, its output, and the
measured run around it.

Why so: wrk 4 with one thread and --latency, pinned to the load core, bounded by -d and by a timeout, its pid recorded
like the others' for bench/run. A run is: an unmeasured warm-up with the same load (fills keep-alive pools and
caches), a wait for a quiet machine (which also lets the backends' access-log buffers flush), CPU snapshots around
the measured wrk run (the proxy's CPU per request; the load of other processes), then 1.2 s more for the logs to
flush before each backend's share is counted.
"""

from __future__ import annotations

import re
import subprocess
import time

from .common import LOAD_CORE, Scenario, StartError, wrk_duration
from .noise import other_load, snapshot, wait_quiet
from .procfs import CLK_TCK, rss_kib
from .procs import forget_pid, record_pid
from .targets import Backends, Target

UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_latency_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * UNITS_US[m.group(2)]


def parse_wrk(out: str) -> dict:
    r: dict = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if not m:
        raise ValueError("no 'N requests in' line")
    r["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        r[f"p{pct}_us"] = parse_latency_us(m.group(1)) if m else None
    errors = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                errors[k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m and int(m.group(1)):
        errors["non-2xx"] = int(m.group(1))
    r["errors"] = errors
    return r


def run_wrk(port: int, sc: Scenario, seconds: float) -> tuple[dict, str]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{sc.conns}", f"-d{wrk_duration(seconds)}",
            "--timeout", "5s", "--latency"]
    if sc.close:
        argv += ["-H", "Connection: close"]
    argv.append(f"{sc.scheme}://127.0.0.1:{port}{sc.path}")  # https: tls_keepalive (wrk speaks TLS itself)
    # wrk is bounded by -d and, failing that, by this timeout; its pid is recorded like the others' for bench/run
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
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited with {p.returncode}: {out.strip()[-500:]}")
    return parse_wrk(out), out


def run_load(target: Target, backends: Backends, sc: Scenario, args) -> dict:
    # warm up (unmeasured): fills keep-alive pools and caches; then let the backends' log buffers flush
    if args.warmup > 0:
        run_wrk(target.port, sc, args.warmup)
    if not target.alive():
        raise StartError(target.died())
    wait_quiet(target, backends, args)  # also lets the backends' access-log buffers flush (1 s)
    counts0 = backends.counts()
    s0 = snapshot(target, backends)
    res, out = run_wrk(target.port, sc, args.duration)
    s1 = snapshot(target, backends)
    if not target.alive():
        res["errors"]["proxy died"] = 1
        res["note"] = target.died()
    res["rss_kib"] = rss_kib(target.pids())
    proxy_ticks = s1["proxy"] - s0["proxy"]
    ours = proxy_ticks + (s1["backends"] - s0["backends"]) + (s1["rusage"] - s0["rusage"])
    if target.name == "direct":
        ours -= proxy_ticks  # the same process as the backends: counted once
    res["cpu_us_per_req"] = proxy_ticks / CLK_TCK * 1e6 / res["requests"] if res["requests"] else None
    res["other_load_pct"] = other_load(s0, s1, ours)
    res["steal_pct"] = (s1["steal"] - s0["steal"]) / CLK_TCK / (s1["wall"] - s0["wall"]) * 100
    time.sleep(1.2)
    counts1 = backends.counts()
    res["backend_split"] = [b - a for a, b in zip(counts0, counts1)]
    res["wrk_output"] = out
    return res
