#!/usr/bin/env python3
"""Side-by-side benchmark of lb, HAProxy and nginx (as a proxy), driven by bench/run.

Python 3.11 stdlib only. bench/run installs the tools, builds lb, raises the fd limit, makes the temp dir and runs
this file pinned to core 1; this file starts the backends and the proxies, runs the load, measures and prints.

Every process started here is recorded in TMP/pids (so that bench/run's EXIT trap can kill whatever is left if this
process dies) and stopped here in a `finally`, also on SIGTERM/SIGINT. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_SIZE = 1 << 20  # the static file: 1 MiB
BIG_PATH = "/static/1m.bin"
PROXY_CORE = "0"
LOAD_CORE = "1"  # wrk, the idle client, the backends (and this script)
TARGETS = ("lb", "haproxy", "nginx", "direct")
PROXIES = ("lb", "haproxy", "nginx")
PIDFILE: Path | None = None  # set in main(): TMP/pids
NOFILE = 20000  # set in main(): the open-files limit this process and its children have


@dataclass
class Scenario:
    name: str
    title: str
    path: str = "/"
    conns: int = 0
    close: bool = False


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
}


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


# ---------------------------------------------------------------------------------------------------------------------
# Processes


LIVE_PIDS: set[int] = set()


def _write_pids() -> None:
    """TMP/pids lists the processes started here that are running now (rewritten whole, so no stale pid stays)."""
    if PIDFILE:
        tmp = PIDFILE.with_suffix(".new")
        tmp.write_text("".join(f"{pid}\n" for pid in sorted(LIVE_PIDS)))
        tmp.replace(PIDFILE)


def record_pid(pid: int) -> None:
    LIVE_PIDS.add(pid)
    _write_pids()


def forget_pid(pid: int) -> None:
    LIVE_PIDS.discard(pid)
    _write_pids()


class Procs:
    """Every process this benchmark starts: started in their own session, their pids appended to TMP/pids."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.live: list[subprocess.Popen] = []
        self.started: dict[str, int] = {}

    def start(self, name: str, argv: list[str], core: str) -> tuple[subprocess.Popen, Path]:
        n = self.started[name] = self.started.get(name, 0) + 1
        logfile = self.tmp / (f"{name}.log" if n == 1 else f"{name}.{n}.log")
        out = open(logfile, "wb")
        p = subprocess.Popen(
            ["taskset", "-c", core, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.live.append(p)
        record_pid(p.pid)
        return p, logfile

    def stop(self, p: subprocess.Popen, grace: float = 5.0) -> None:
        if p.poll() is None:
            pids = proc_tree(p.pid)
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                p.wait(5)
            # a child (nginx worker) left behind by a parent that died
            for pid in pids[1:]:
                if Path(f"/proc/{pid}").exists():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if p in self.live:
            self.live.remove(p)
        forget_pid(p.pid)

    def stop_all(self) -> None:
        for p in list(reversed(self.live)):
            try:
                self.stop(p, grace=3.0)
            except Exception as e:  # keep stopping the others
                log(f"could not stop pid {p.pid}: {e}")


def proc_tree(root: int) -> list[int]:
    """root and all its descendants (nginx: master + worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime (all threads) of each process, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def system_busy_ticks() -> tuple[int, int]:
    """(busy, steal) ticks of all cores from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
    # irq/softirq left out: loopback networking runs there and is charged to no process
    return user + nice + system + steal, steal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class StartError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------------
# Backends: one nginx process, three server blocks


class Backends:
    def __init__(self, procs: Procs, tmp: Path):
        self.procs = procs
        self.dir = tmp / "backends"
        self.ports = [free_port() for _ in range(3)]
        self.p: subprocess.Popen | None = None
        self.logfile = tmp / "backends.log"

    def start(self) -> None:
        d = self.dir
        for sub in ("www/static", "logs", "temp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "www/static/1m.bin").write_bytes(os.urandom(BIG_SIZE))
        servers = "\n".join(
            f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        access_log {d}/logs/b{i}.log one buffer=256k flush=1s;
        location / {{ return 200 "hello from {i}"; }}
        location /static/ {{ root {d}/www; }}
    }}"""
            for i, port in enumerate(self.ports, 1)
        )
        conf = f"""# the three backends: one nginx process (no master), pinned to core {LOAD_CORE}
daemon off;
master_process off;
worker_rlimit_nofile {NOFILE};
pid {d}/nginx.pid;
error_log stderr error;
events {{ worker_connections 20000; }}
http {{
    default_type text/plain;
    sendfile on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    # one 2-byte line per request, buffered: only to count each backend's share
    log_format one "x";
{servers}
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
}}
"""
        (d / "nginx.conf").write_text(conf)
        self.p, self.logfile = self.procs.start(
            "backends", ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", "stderr"], LOAD_CORE
        )
        deadline = time.monotonic() + 15
        for i, port in enumerate(self.ports, 1):
            while True:
                if self.p.poll() is not None:
                    raise StartError(f"backend nginx exited with {self.p.returncode}:\n{tail(self.logfile)}")
                try:
                    status, body = http_get(port)
                    if status == 200 and body == f"hello from {i}".encode():
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise StartError(f"backend {i} on port {port} not ready:\n{tail(self.logfile)}")
                time.sleep(0.05)
            status, body = http_get(port, BIG_PATH)
            if status != 200 or len(body) != BIG_SIZE:
                raise StartError(f"backend {i}: {BIG_PATH} answered {status} with {len(body)} bytes")

    def pids(self) -> list[int]:
        return [self.p.pid] if self.p else []

    def counts(self) -> list[int]:
        """Requests logged by each backend so far (2 bytes a line; buffered up to 1 s)."""
        out = []
        for i in range(1, 4):
            try:
                out.append((self.dir / f"logs/b{i}.log").stat().st_size // 2)
            except OSError:
                out.append(0)
        return out


# ---------------------------------------------------------------------------------------------------------------------
# The proxies under test (and `direct`)


class Target:
    name = ""

    def __init__(self, procs: Procs, tmp: Path, backends: Backends):
        self.procs, self.tmp, self.backends = procs, tmp, backends
        self.p: subprocess.Popen | None = None
        self.logfile: Path | None = None
        self.port = 0

    def start(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return proc_tree(self.p.pid) if self.p and self.p.poll() is None else []

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def died(self) -> str:
        return f"{self.name} exited with status {self.p.returncode}; log tail:\n{tail(self.logfile)}"

    def stop(self) -> None:
        if self.p:
            self.procs.stop(self.p)
            self.p = None

    def wait_ready(self, timeout: float = 20.0) -> None:
        """A real request through the proxy must answer 200 `hello from N`; then three more must reach 3 backends."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if not self.alive():
                raise StartError(self.died())
            try:
                status, body = http_get(self.port)
                if status == 200 and body.startswith(b"hello from "):
                    break
                last = f"answered {status} {body[:80]!r}"
            except OSError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} not ready on port {self.port} after {timeout:.0f}s ({last}); log:\n"
                                 f"{tail(self.logfile)}")
            time.sleep(0.05)
        seen = set()
        for _ in range(6):
            status, body = http_get(self.port)
            if status != 200:
                raise StartError(f"{self.name}: readiness request answered {status} {body[:80]!r}")
            seen.add(body)
        if len(seen) != 3 and self.name != "direct":
            log(f"WARNING: {self.name}: 6 sequential requests reached {sorted(seen)} (expected 3 backends)")


class Direct(Target):
    """The load generator straight to backend 1: the ceiling. Its CPU and RSS are the backend nginx's."""

    name = "direct"

    def start(self) -> None:
        self.port = self.backends.ports[0]
        self.logfile = self.backends.logfile

    def pids(self) -> list[int]:
        return self.backends.pids()

    def alive(self) -> bool:
        return self.backends.p is not None and self.backends.p.poll() is None

    def died(self) -> str:
        return f"backend nginx exited; log tail:\n{tail(self.logfile)}"

    def stop(self) -> None:
        pass


class Lb(Target):
    name = "lb"

    def __init__(self, *a, binary: Path):
        super().__init__(*a)
        self.binary = binary

    def start(self) -> None:
        self.port = free_port()
        cfg = self.tmp / "lb.json"
        cfg.write_text(json.dumps(
            [{"id": i, "host": "127.0.0.1", "port": port} for i, port in enumerate(self.backends.ports, 1)]
        ))
        argv = [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port), "--config", str(cfg),
                "--workers", "1", "--interval", "5"]
        self.p, self.logfile = self.procs.start("lb", argv, PROXY_CORE)
        # lb says it is ready: wait for its startup line, then for a real request (Target.wait_ready)
        needle = f"listening on 127.0.0.1:{self.port} "
        deadline = time.monotonic() + 20
        while needle not in self.logfile.read_text(errors="replace"):
            if not self.alive():
                raise StartError(self.died())
            if time.monotonic() > deadline:
                raise StartError(f"lb did not log {needle!r} within 20s; log:\n{tail(self.logfile)}")
            time.sleep(0.02)


def haproxy_maxconn() -> int:
    """20000, unless the open-files limit is lower: HAProxy wants 2 fds per connection and refuses to start
    when it cannot raise its limit to that (e.g. in a container whose hard limit is 20000 and that cannot raise it)."""
    return min(20000, (NOFILE - 200) // 2)


class HAProxy(Target):
    name = "haproxy"

    def start(self) -> None:
        self.port = free_port()
        servers = "\n".join(
            f"    server b{i} 127.0.0.1:{port} check inter 5s" for i, port in enumerate(self.backends.ports, 1)
        )
        conf = f"""# HAProxy under test: one thread, pinned to core {PROXY_CORE}, no logs
global
    nbthread 1
    maxconn {haproxy_maxconn()}

defaults
    mode http
    maxconn {haproxy_maxconn()}
    option http-keep-alive
    http-reuse always
    # lb sends X-Forwarded-For/-Proto/-Host too: the same work here (the other two headers: in the frontend)
    option forwardfor
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:{self.port}
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend be

backend be
    balance roundrobin
{servers}
"""
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(conf)
        self.p, self.logfile = self.procs.start("haproxy", ["haproxy", "-db", "-f", str(cfg)], PROXY_CORE)


class Nginx(Target):
    name = "nginx"

    def start(self) -> None:
        self.port = free_port()
        d = self.tmp / "nginx-proxy"
        (d / "temp").mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"        server 127.0.0.1:{port};" for port in self.backends.ports)
        conf = f"""# nginx as a proxy under test: master + one worker, pinned to core {PROXY_CORE}, no access log
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {NOFILE};
pid {d}/nginx.pid;
error_log stderr error;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    upstream be {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # lb sends X-Forwarded-For/-Proto/-Host too: the same work here
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            # stream large responses through memory, never spool them to a temp file
            proxy_max_temp_file_size 0;
        }}
    }}
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
}}
"""
        (d / "nginx.conf").write_text(conf)
        self.p, self.logfile = self.procs.start(
            "nginx-proxy", ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", "stderr"], PROXY_CORE
        )


# ---------------------------------------------------------------------------------------------------------------------
# Load: wrk, and the idle-connection client


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
    argv.append(f"http://127.0.0.1:{port}{sc.path}")
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


async def idle_client(port: int, n: int, parallel: int, timeout: float) -> dict:
    """Open n connections, each sends one GET / and reads the whole response, then stays open and idle."""
    sem = asyncio.Semaphore(parallel)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    errors: dict[str, int] = {}
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-idle\r\n\r\n"

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def one() -> None:
        async with sem:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                err("connect")
                return
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m:
                    await reader.readexactly(int(m.group(1)))
                elif re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
                    await reader.readuntil(b"0\r\n\r\n")
                else:
                    err("no length")
                    writer.close()
                    return
                if re.search(rb"(?im)^connection:\s*close", head):
                    err("closed by proxy")
                if not 200 <= status < 300:
                    err("non-2xx")
                conns.append((reader, writer))
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
                err("read")
                writer.close()

    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), timeout)
    return {"conns": conns, "errors": errors, "open_s": time.monotonic() - t0}


# ---------------------------------------------------------------------------------------------------------------------
# One measured run


def make_target(name: str, procs: Procs, tmp: Path, backends: Backends, lb_binary: Path) -> Target:
    if name == "lb":
        return Lb(procs, tmp, backends, binary=lb_binary)
    return {"haproxy": HAProxy, "nginx": Nginx, "direct": Direct}[name](procs, tmp, backends)


def other_load(t0: dict, t1: dict, ours_ticks: float) -> float:
    """CPU used on the machine by processes that are not part of this run, in % of one core."""
    elapsed = t1["wall"] - t0["wall"]
    busy = t1["busy"] - t0["busy"]
    return max(0.0, (busy - ours_ticks) / CLK_TCK / elapsed * 100) if elapsed > 0 else 0.0


def ksoftirqd_pids() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().startswith("ksoftirqd/"):
                    out.append(int(entry))
            except OSError:
                pass
    return out


KSOFTIRQD: list[int] = []


def snapshot(target: Target, backends: Backends) -> dict:
    busy, steal = system_busy_ticks()
    ru_c = resource.getrusage(resource.RUSAGE_CHILDREN)
    ru_s = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.monotonic(),
        "busy": busy,
        "steal": steal,
        "proxy": cpu_ticks(target.pids()),
        # the kernel's network work for this benchmark's traffic, when deferred to ksoftirqd
        "backends": cpu_ticks(backends.pids()) + cpu_ticks(KSOFTIRQD),
        "rusage": (ru_c.ru_utime + ru_c.ru_stime + ru_s.ru_utime + ru_s.ru_stime) * CLK_TCK,
    }


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


def wait_quiet(target: Target, backends: Backends, args) -> float:
    """Sample the machine for 1.2 s at a time until the CPU used outside this benchmark is at most
    BENCH_MAX_OTHER_LOAD (% of one core), for at most BENCH_QUIET_WAIT seconds; the last sample's load."""
    deadline = time.monotonic() + args.quiet_wait
    waited = False
    while True:
        s0 = snapshot(target, backends)
        time.sleep(1.2)
        s1 = snapshot(target, backends)
        ours = (s1["proxy"] - s0["proxy"]) + (s1["backends"] - s0["backends"]) + (s1["rusage"] - s0["rusage"])
        load = other_load(s0, s1, ours)
        if load <= args.max_other_load:
            if waited:
                log(f"    machine quiet again ({load:.0f}%)")
            return load
        if time.monotonic() > deadline:
            log(f"    machine still busy ({load:.0f}% of a core used by other processes): running anyway")
            return load
        if not waited:
            log(f"    machine busy ({load:.0f}% of a core used by other processes): waiting up to "
                f"{args.quiet_wait:.0f}s")
            waited = True


def run_idle(target: Target, backends: Backends, args) -> dict:
    # warm up (unmeasured), like the other scenarios: the small scenario's load for BENCH_WARMUP, so that what a
    # proxy allocates once (buffers, backend connections, allocator arenas) is not counted per idle connection
    if args.warmup > 0:
        run_wrk(target.port, SCENARIOS["small"], args.warmup)
    wait_quiet(target, backends, args)
    pids = target.pids()
    before = rss_kib(pids)
    s0 = snapshot(target, backends)
    r = asyncio.run(_idle(target, args, pids, before))
    s1 = snapshot(target, backends)
    ours = (s1["backends"] - s0["backends"]) + (s1["rusage"] - s0["rusage"])
    if target.name != "direct":  # direct: the proxy is the backend process, counted once
        ours += s1["proxy"] - s0["proxy"]
    r["other_load_pct"] = other_load(s0, s1, ours)
    if not target.alive():
        r["errors"]["proxy died"] = 1
        r["note"] = target.died()
    return r


async def _idle(target: Target, args, pids: list[int], before: int) -> dict:
    n = args.idle_conns
    res = await idle_client(target.port, n, parallel=100, timeout=120)
    conns, errors = res["conns"], dict(res["errors"])
    await asyncio.sleep(1.0)  # all idle now; let the proxy settle
    after = rss_kib(target.pids())
    await asyncio.sleep(0.5)
    closed = sum(1 for reader, _ in conns if reader.at_eof())
    if closed:
        errors["closed while idle"] = closed
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(0.2)
    idle_ok = len(conns) - closed
    return {
        "rss_before_kib": before,
        "rss_kib": after,
        "idle_conns": idle_ok,
        "kib_per_conn": (after - before) / idle_ok if idle_ok else None,
        "open_s": res["open_s"],
        "errors": errors,
        "requests": len(conns),
    }


def one_run(name: str, sc: Scenario, procs: Procs, tmp: Path, backends: Backends, args) -> dict:
    """One measured run; repeated (up to BENCH_RETRIES times) while other processes used more than
    BENCH_MAX_OTHER_LOAD of a core during it. The quietest attempt is kept."""
    best = None
    for attempt in range(1, args.retries + 2):
        r = one_attempt(name, sc, procs, tmp, backends, args)
        r["attempts"] = attempt
        if "failed" in r:
            return r
        if best is None or r["other_load_pct"] < best["other_load_pct"]:
            best = r
        if r["other_load_pct"] <= args.max_other_load:
            break
        if attempt <= args.retries:
            log(f"    noisy run: other processes used {r['other_load_pct']:.0f}% of a core; again")
    best["attempts"] = attempt
    return best


def one_attempt(name: str, sc: Scenario, procs: Procs, tmp: Path, backends: Backends, args) -> dict:
    target = make_target(name, procs, tmp, backends, args.lb)
    try:
        target.start()
        target.wait_ready()
        if sc.name == "idle":
            return run_idle(target, backends, args)
        return run_load(target, backends, sc, args)
    except (StartError, RuntimeError, ValueError, subprocess.TimeoutExpired, asyncio.TimeoutError, OSError) as e:
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, StartError) else str(e)
        log(f"FAILED {name}/{sc.name}: {msg}")
        return {"failed": msg.replace("; log tail:", "")}
    finally:
        target.stop()


# ---------------------------------------------------------------------------------------------------------------------
# Report


def fmt_us(us: float | None) -> str:
    if us is None:
        return "–"
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def fmt_kib(kib: float | None) -> str:
    if kib is None:
        return "–"
    return f"{kib / 1024:.1f} MiB" if kib >= 10240 else f"{kib:,.0f} KiB"


def fmt_num(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "–"


def errors_text(runs: list[dict]) -> str:
    total: dict[str, int] = {}
    for r in runs:
        for k, v in r.get("errors", {}).items():
            total[k] = total.get(k, 0) + v
    failed = sum(1 for r in runs if "failed" in r)
    parts = [f"{k} {v:,}" for k, v in total.items()]
    if failed:
        parts.insert(0, f"**{failed} run(s) failed**")
    return ", ".join(parts) if parts else "0"


def split_text(runs: list[dict]) -> str:
    tot = [0, 0, 0]
    for r in runs:
        for i, c in enumerate(r.get("backend_split", [])):
            tot[i] += c
    s = sum(tot)
    return "/".join(f"{100 * c / s:.0f}" for c in tot) if s else "–"


def summarize(results: dict, args) -> dict:
    summary: dict = {}
    for sname, per_target in results.items():
        summary[sname] = {}
        for t, runs in per_target.items():
            ok = [r for r in runs if "failed" not in r]
            summary[sname][t] = {
                "runs": len(runs),
                "ok": len(ok),
                "rps": median([r.get("rps") for r in ok]),
                "rps_min": min((r["rps"] for r in ok if "rps" in r), default=None),
                "rps_max": max((r["rps"] for r in ok if "rps" in r), default=None),
                "p50_us": median([r.get("p50_us") for r in ok]),
                "p99_us": median([r.get("p99_us") for r in ok]),
                "cpu_us_per_req": median([r.get("cpu_us_per_req") for r in ok]),
                "rss_kib": median([r.get("rss_kib") for r in ok]),
                "rss_before_kib": median([r.get("rss_before_kib") for r in ok]),
                "kib_per_conn": median([r.get("kib_per_conn") for r in ok]),
                "open_s": median([r.get("open_s") for r in ok]),
                "requests": sum(r.get("requests", 0) for r in ok),
                "errors": errors_text(runs),
                "split": split_text(ok),
                "failures": [r["failed"] for r in runs if "failed" in r],
                "other": median([r.get("other_load_pct") for r in ok]),
            }
    return summary


def render(summary: dict, meta: dict, args) -> str:
    lines = []
    w = lines.append
    w(f"# lb vs HAProxy vs nginx — {meta['date']}")
    w("")
    w(f"- machine: {meta['machine']}")
    w(f"- versions: {meta['versions']}")
    w(f"- lb: {meta['lb_commit']}")
    w(f"- mode: {meta['mode']}: {args.rounds} round(s), {wrk_duration(args.duration)} per run "
      f"(+{args.warmup:g}s unmeasured warm-up), idle: {args.idle_conns:,} connections; medians over rounds")
    w(f"- proxies pinned to core {PROXY_CORE}; wrk, the idle client and the backends (one nginx) to core {LOAD_CORE}")
    w(f"- wall time: {meta['wall']}")
    w(f"- other load on the machine during the measured runs (CPU not used by the proxy, backends or wrk, "
      f"% of one core): median {meta['other_load_median']:.0f}%, max {meta['other_load_max']:.0f}%"
      f"; steal: max {meta['steal_max']:.0f}%")
    w(f"- noise control: each run waits (up to {args.quiet_wait:.0f} s) for the machine to be quiet (other processes "
      f"≤ {args.max_other_load:g}% of a core) and is repeated up to {args.retries} time(s) if it was not, keeping the "
      f"quietest attempt: {meta['reruns']} repeat(s); {meta['noisy']} kept run(s) still above the threshold")
    w("")
    w("Columns: req/s is the median over rounds (range min–max in brackets); p50/p99 are wrk's latency percentiles "
      "(medians over rounds); CPU µs/req is the proxy's user+sys time over the run divided by the requests completed; "
      "RSS is the proxy's resident memory after the run (nginx: master + worker); errors are wrk's socket errors and "
      "non-2xx responses summed over all rounds; split is the share of requests each backend logged (%); "
      "other load is the CPU that processes outside the benchmark used during the runs (median, % of one core). "
      "`direct` is wrk straight to backend 1 (its CPU and RSS are the backend nginx's): the ceiling.")
    for sname, per_target in summary.items():
        sc = SCENARIOS[sname]
        w("")
        if sname == "idle":
            w(f"## idle — {args.idle_conns:,} keep-alive client connections, each made one request and now waits")
            w("")
            w("| target | RSS before | RSS with all idle | KiB per idle conn | open+request time | idle conns | errors "
              "| other load |")
            w("|---|---:|---:|---:|---:|---:|---|---:|")
            for t, s in per_target.items():
                if not s["ok"]:
                    w(f"| {t} | FAILED | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} | |")
                    continue
                w(f"| {t} | {fmt_kib(s['rss_before_kib'])} | {fmt_kib(s['rss_kib'])} | {fmt_num(s['kib_per_conn'], 2)} "
                  f"| {fmt_num(s['open_s'], 2)} s | {s['requests'] // max(1, s['ok']):,} | {s['errors']} "
                  f"| {fmt_num(s['other'])}% |")
            lbk = per_target.get("lb", {}).get("kib_per_conn")
            ratios = []
            for other in ("haproxy", "nginx"):
                if other in per_target:
                    ratios.append(f"lb/{other}: KiB per idle connection ×{ratio(lbk, per_target[other]['kib_per_conn'])}")
            if ratios:
                w("")
                w("; ".join(ratios) + "  ")
            w("(direct: the backend nginx's own growth)")
            continue
        w(f"## {sname} — {sc.title}")
        w("")
        w("| target | req/s | p50 | p99 | CPU µs/req | RSS | errors | split | other load |")
        w("|---|---:|---:|---:|---:|---:|---|---|---:|")
        for t, s in per_target.items():
            if not s["ok"]:
                w(f"| {t} | FAILED | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} | | |")
                continue
            rng = f" ({fmt_num(s['rps_min'])}–{fmt_num(s['rps_max'])})" if s["ok"] > 1 else ""
            w(f"| {t} | {fmt_num(s['rps'])}{rng} | {fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} "
              f"| {fmt_num(s['cpu_us_per_req'], 1)} | {fmt_kib(s['rss_kib'])} | {s['errors']} | {s['split']} "
              f"| {fmt_num(s['other'])}% |")
        ratios = []
        lb = per_target.get("lb")
        for other in ("haproxy", "nginx"):
            if lb and other in per_target:
                o = per_target[other]
                ratios.append(f"lb/{other}: req/s ×{ratio(lb['rps'], o['rps'])}, "
                              f"CPU µs/req ×{ratio(lb['cpu_us_per_req'], o['cpu_us_per_req'])}")
        if ratios:
            w("")
            w("; ".join(ratios))
    failures = [(sname, t, f) for sname, pt in summary.items() for t, s in pt.items() for f in s["failures"]]
    if failures:
        w("")
        w("## Failures")
        for sname, t, f in failures:
            w("")
            w(f"- {t} / {sname}:")
            w("```")
            w(f)
            w("```")
    return "\n".join(lines) + "\n"


def versions(lb: Path) -> tuple[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    hap = first_line(["haproxy", "-v"]).split(" - ")[0]
    ngx = first_line(["nginx", "-v"]).replace("nginx version: ", "")
    wrk = first_line(["wrk", "-v"]).split(" Copyright")[0]
    rustc = first_line(["rustc", "--version"])
    repo = lb.parent.parent.parent
    commit = first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    lbv = first_line([str(lb), "--version"])
    return (f"{hap}; {ngx}; {wrk}; Python {platform.python_version()}; {rustc}",
            f"{lbv}, commit {commit}{' + uncommitted changes in src/' if dirty else ''}")


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return (f"{os.cpu_count()} cores ({model}), {int(mem) / 1024 / 1024:.0f} GiB, Linux {platform.release()}; "
            "a shared, noisy VM")


# ---------------------------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tmp", type=Path, required=True)
    ap.add_argument("--lb", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    env = os.environ
    if args.quick:
        args.duration = parse_duration(env.get("BENCH_DURATION", "3s"))
        args.rounds = int(env.get("BENCH_ROUNDS", "1"))
        args.warmup = parse_duration(env.get("BENCH_WARMUP", "1s"))
    else:
        args.duration = parse_duration(env.get("BENCH_DURATION", "10s"))
        args.rounds = int(env.get("BENCH_ROUNDS", "3"))
        args.warmup = parse_duration(env.get("BENCH_WARMUP", "2s"))
    args.idle_conns = int(env.get("BENCH_IDLE_CONNS", "5000"))
    args.max_other_load = float(env.get("BENCH_MAX_OTHER_LOAD", "10"))
    args.quiet_wait = parse_duration(env.get("BENCH_QUIET_WAIT", "10s" if args.quick else "30s"))
    args.retries = int(env.get("BENCH_RETRIES", "0" if args.quick else "2"))
    scenarios = [s.strip() for s in env.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",") if s.strip()]
    targets = [t.strip() for t in env.get("BENCH_TARGETS", ",".join(TARGETS)).split(",") if t.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"bench: unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    for t in targets:
        if t not in TARGETS:
            raise SystemExit(f"bench: unknown target {t!r} (known: {', '.join(TARGETS)})")
    if args.rounds < 1 or args.duration < 1:
        raise SystemExit("bench: BENCH_ROUNDS must be >= 1 and BENCH_DURATION >= 1s")

    # 5,000 idle client sockets live in this process; the proxies inherit the limit too
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(65536, 2 * args.idle_conns + 1024)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    global NOFILE
    NOFILE = nofile
    log(f"open files limit: {nofile}; HAProxy maxconn {haproxy_maxconn()}")
    if nofile < args.idle_conns + 512:
        log(f"WARNING: RLIMIT_NOFILE is {nofile}: the idle scenario will run out of file descriptors")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = time.monotonic()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    procs = Procs(args.tmp)
    KSOFTIRQD.extend(ksoftirqd_pids())
    global PIDFILE
    PIDFILE = args.tmp / "pids"
    results: dict = {s: {t: [] for t in targets} for s in scenarios}
    try:
        backends = Backends(procs, args.tmp)
        backends.start()
        log(f"backends (one nginx, pid {backends.p.pid}) on ports {backends.ports}")
        n_runs = args.rounds * len(scenarios) * len(targets)
        i = 0
        for rnd in range(args.rounds):
            # rotate the order each round so that no proxy always runs first or right after another
            order = targets[rnd % len(targets):] + targets[: rnd % len(targets)]
            for sname in scenarios:
                sc = SCENARIOS[sname]
                for t in order:
                    i += 1
                    log(f"[{i}/{n_runs}] round {rnd + 1}/{args.rounds} {sname:7} {t}")
                    if backends.p.poll() is not None:
                        raise StartError(f"backend nginx died:\n{tail(backends.logfile)}")
                    r = one_run(t, sc, procs, args.tmp, backends, args)
                    r["round"] = rnd + 1
                    results[sname][t].append(r)
                    if "failed" not in r:
                        if sname == "idle":
                            log(f"    {r['idle_conns']} idle, RSS {r['rss_before_kib']} -> {r['rss_kib']} KiB, "
                                f"{fmt_num(r['kib_per_conn'], 2)} KiB/conn, errors {r['errors'] or 0}, "
                                f"other load {r['other_load_pct']:.0f}%")
                        else:
                            log(f"    {r['rps']:,.0f} req/s, p50 {fmt_us(r['p50_us'])}, p99 {fmt_us(r['p99_us'])}, "
                                f"CPU {fmt_num(r['cpu_us_per_req'], 1)} µs/req, RSS {r['rss_kib']} KiB, "
                                f"errors {r['errors'] or 0}, split {r['backend_split']}, "
                                f"other load {r['other_load_pct']:.0f}%")
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}): stopping everything")
        procs.stop_all()
        return 130
    except StartError as e:
        log(f"FATAL: {e}")
        procs.stop_all()
        return 1
    finally:
        procs.stop_all()

    wall = time.monotonic() - started
    loads = [r["other_load_pct"] for pt in results.values() for runs in pt.values() for r in runs
             if "other_load_pct" in r]
    steals = [r["steal_pct"] for pt in results.values() for runs in pt.values() for r in runs if "steal_pct" in r]
    vers, lbv = versions(args.lb)
    meta = {
        "date": date,
        "machine": machine(),
        "versions": vers,
        "lb_commit": lbv,
        "mode": "quick" if args.quick else "full",
        "wall": f"{int(wall // 60)} min {int(wall % 60)} s",
        "other_load_median": median(loads) or 0.0,
        "other_load_max": max(loads, default=0.0),
        "steal_max": max(steals, default=0.0),
        "reruns": sum(r.get("attempts", 1) - 1 for pt in results.values() for runs in pt.values() for r in runs),
        "noisy": sum(1 for pt in results.values() for runs in pt.values() for r in runs
                     if r.get("other_load_pct", 0) > args.max_other_load),
    }
    summary = summarize(results, args)
    report = render(summary, meta, args)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        raw = args.out.with_suffix(".json")
        raw.write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=1, default=str))
        log(f"wrote {args.out} and {raw}")
    failed = any(s["failures"] for pt in summary.values() for s in pt.values())
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
