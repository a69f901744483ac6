"""What every part of the benchmark shares: the scenarios, the files the backends serve, the cores, log(),
durations, StartError and median().

Kept in one module so that the others take these facts from one place and none imports another just for a constant:
the backends write the files whose paths and sizes the scenarios request, and the report prints the cores and the
memory scenarios' quiet wait that the runs use, so both sides must read the same values.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from dataclasses import dataclass

BIG_SIZE = 1 << 20  # the static file: 1 MiB
BIG_PATH = "/static/1m.bin"
SLOW_SIZE = 50 * BIG_SIZE  # the slowread scenario's file: 50 MiB (the 1 MiB block 50 times: cheap to write)
SLOW_PATH = "/static/50m.bin"
HUGE_SIZE = 1 << 30  # tcp_stream's file: 1 GiB, sparse (written only when tcp_stream runs; reads as zeros)
HUGE_PATH = "/static/1g.bin"
SLOW_RCVBUF = 4096  # slowread clients' SO_RCVBUF, set before connect (the kernel doubles it: 8 KiB)
MEMORY_SCENARIOS = ("burst", "slowread")  # measure memory: a short quiet wait, no repeats for noise
MEM_QUIET_WAIT = 5.0  # at most this long (s) to wait for a quiet machine before a memory scenario
PROXY_CORE = "0"
LOAD_CORE = "1"  # wrk, the idle client, the backends (and this script)
TARGETS = ("lb", "haproxy", "nginx", "direct")
PROXIES = ("lb", "haproxy", "nginx")


@dataclass
class Scenario:
    name: str
    title: str
    path: str = "/"
    conns: int = 0
    close: bool = False
    scheme: str = "http"  # wrk's URL scheme: https for tls_keepalive


SCENARIOS = {
    "small": Scenario("small", "64 keep-alive connections, tiny responses (`GET /`, 12-byte body), wrk -t1 -c64", "/", 64),
    "latency": Scenario("latency", "1 keep-alive connection, tiny responses, wrk -t1 -c1", "/", 1),
    "big": Scenario("big", f"16 keep-alive connections, 1 MiB static file (`GET {BIG_PATH}`), wrk -t1 -c16", BIG_PATH, 16),
    "close": Scenario(
        "close",
        "a new connection per request (`Connection: close`), 64 connections, tiny responses, wrk -t1 -c64",
        "/",
        64,
        close=True,
    ),
    "idle": Scenario("idle", "N keep-alive client connections, each made one request and now waits"),
    "burst": Scenario("burst", "N connections opened first, then one `GET /` on all of them at once; then idle; then closed"),
    "slowread": Scenario("slowread", f"N clients ask for a 50 MiB file (`GET {SLOW_PATH}`) and never read"),
    "reload": Scenario("reload", "N keep-alive connections of steady load while the proxy is reloaded every 0.5 s"),
    # the protocol scenarios (issue 10): run by name, alone or as the groups tls, h2, tcp (PROTOCOL_GROUPS)
    "tls_keepalive": Scenario(
        "tls_keepalive",
        "TLS 1.3 (HTTP/1.1 over TLS), 64 keep-alive connections, tiny responses, wrk -t1 -c64 https://",
        "/",
        64,
        scheme="https",
    ),
    "tls_handshake": Scenario(
        "tls_handshake",
        "a new TLS 1.3 connection per request (full handshake, no resumption), 16 parallel `openssl s_time -new`",
        "/",
        16,
    ),
    "h2_tls": Scenario("h2_tls", "HTTP/2 over TLS 1.3 (ALPN h2), 4 connections × 16 streams, tiny responses, "
                                 "h2load -c4 -m16 https://", "/", 4),
    "h2c": Scenario("h2c", "HTTP/2 cleartext (prior knowledge), 4 connections × 16 streams, tiny responses, "
                           "h2load -c4 -m16 http://", "/", 4),
    "tcp_stream": Scenario("tcp_stream", f"TCP mode (L4): 1 GiB downloads (`GET {HUGE_PATH}`), one at a time, "
                                         "through the proxy", HUGE_PATH, 1),
    "tcp_connect": Scenario(
        "tcp_connect",
        "TCP mode (L4): a new connection per request (`Connection: close`, `GET /`), 64 connections, wrk -t1 -c64",
        "/",
        64,
        close=True,
    ),
}
# what runs without BENCH_SCENARIOS: reload is left out (it counts failures rather than measuring speed, and a round
# of it adds ~40 s per proxy); ask for it by name
DEFAULT_SCENARIOS = ("small", "latency", "big", "close", "idle", "burst", "slowread")
RELOAD_SCENARIOS = ("reload",)  # proxies only (no `direct`); a short quiet wait, no repeats for noise
# issue 10: the names BENCH_SCENARIOS takes for the protocol scenarios, each a group of two tables
PROTOCOL_GROUPS = {
    "tls": ("tls_keepalive", "tls_handshake"),
    "h2": ("h2_tls", "h2c"),
    "tcp": ("tcp_stream", "tcp_connect"),
}
PROTOCOL_SCENARIOS = tuple(s for group in PROTOCOL_GROUPS.values() for s in group)
# `direct` (straight to backend 1, plain HTTP/1.1) is a ceiling only where the client speaks what the backend does:
# the TCP-mode scenarios (the same bytes, no proxy); the backends speak neither TLS nor HTTP/2
DIRECT_PROTOCOL_SCENARIOS = ("tcp_stream", "tcp_connect")


def expand_scenarios(names: list[str]) -> list[str]:
    """BENCH_SCENARIOS with the protocol groups (tls, h2, tcp) replaced by their scenarios, duplicates dropped."""
    out: list[str] = []
    for n in names:
        for s in PROTOCOL_GROUPS.get(n, (n,)):
            if s not in out:
                out.append(s)
    return out


class Skip(Exception):
    """A target that cannot run a scenario (lb without the feature yet): the run is recorded as skipped, with why."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise SystemExit(f"bench: bad duration {text!r} (e.g. 10s, 500ms, 1m)")
    value = float(m.group(1))
    return value * {"ms": 0.001, None: 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def wrk_duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


class StartError(Exception):
    pass


def median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
