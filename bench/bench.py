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
import fcntl
import http.client
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_SIZE = 1 << 20  # the static file: 1 MiB
BIG_PATH = "/static/1m.bin"
SLOW_SIZE = 50 * BIG_SIZE  # the slowread scenario's file: 50 MiB (the 1 MiB block 50 times: cheap to write)
SLOW_PATH = "/static/50m.bin"
SLOW_RCVBUF = 4096  # slowread clients' SO_RCVBUF, set before connect (the kernel doubles it: 8 KiB)
MEMORY_SCENARIOS = ("burst", "slowread")  # measure memory: a short quiet wait, no repeats for noise
MEM_QUIET_WAIT = 5.0  # at most this long (s) to wait for a quiet machine before a memory scenario
SETTLE_TIMEOUT = 15.0  # at most this long (s) to wait for the previous target's connections to be gone
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
    "burst": Scenario("burst", "N connections opened first, then one `GET /` on all of them at once; then idle; then closed"),
    "slowread": Scenario("slowread", f"N clients ask for a 50 MiB file (`GET {SLOW_PATH}`) and never read"),
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
            # stopped means gone: the next run must not start while this one's processes still exit (and close
            # their sockets)
            wait_gone(pids, 10.0)
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


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait until none of pids runs any more (gone, or a zombie: its sockets are closed); False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2] not in "ZX":
                running.append(pid)
        if not running:
            return True
        if time.monotonic() > deadline:
            log(f"WARNING: pids {running} still running {timeout:.0f}s after they were stopped")
            return False
        time.sleep(0.02)


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


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def tcp_table() -> dict[int, tuple[int, int, str, int]]:
    """Every TCP socket of this network namespace that has an inode (/proc/net/tcp and tcp6):
    inode -> (local port, remote port, state name, rx_queue; for a listener: its accept queue)."""
    out = {}
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(f).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            # sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
            f_ = line.split()
            inode = int(f_[9])
            if inode:
                out[inode] = (int(f_[1].rsplit(":", 1)[1], 16), int(f_[2].rsplit(":", 1)[1], 16),
                              TCP_STATES.get(f_[3], f_[3]), int(f_[4].split(":")[1], 16))
    return out


def socket_inodes(pids: list[int]) -> set[int]:
    """The inodes of the sockets the processes hold open (from /proc/<pid>/fd)."""
    out = set()
    for pid in pids:
        d = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(d)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{d}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(int(link[8:-1]))
    return out


def sockets_by_state(pids: list[int], *, remote: list[int] | None = None, local: list[int] | None = None
                     ) -> dict[str, int]:
    """Count the TCP sockets the processes hold whose remote (or local) port is one of the given ports, by state;
    listeners are left out."""
    table = tcp_table()
    counts: dict[str, int] = {}
    for inode in socket_inodes(pids):
        e = table.get(inode)
        if not e or e[2] == "LISTEN":
            continue
        if (remote is not None and e[1] in remote) or (local is not None and e[0] in local):
            counts[e[2]] = counts.get(e[2], 0) + 1
    return counts


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the listeners on 127.0.0.1:port."""
    return sum(e[3] for e in tcp_table().values() if e[0] == port and e[2] == "LISTEN")


def kernel_tcp_mem_kib() -> int:
    """Memory in TCP socket buffers, system-wide (`TCP: ... mem N` of /proc/net/sockstat, in pages)."""
    m = re.search(r"^TCP:.* mem (\d+)", Path("/proc/net/sockstat").read_text(), re.M)
    return int(m.group(1)) * os.sysconf("SC_PAGE_SIZE") // 1024 if m else 0


def tcp_mem_limits_text() -> str:
    """This machine's tcp_mem thresholds (pages) in MiB: pressure from tcp_mem[1], hard limit tcp_mem[2]."""
    try:
        lo, press, hard = (int(x) for x in Path("/proc/sys/net/ipv4/tcp_mem").read_text().split())
    except (OSError, ValueError):
        return "tcp_mem unknown"
    page = os.sysconf("SC_PAGE_SIZE")
    return f"here {press * page / 2**20:,.0f} MiB; hard limit {hard * page / 2**20:,.0f} MiB"


def tcp_memory_pressure() -> bool | None:
    """Whether the kernel's TCP is under memory pressure now (column `press` of /proc/net/protocols): its socket
    buffers passed tcp_mem[1], so it stops growing buffers and trims windows, for every TCP socket."""
    try:
        lines = Path("/proc/net/protocols").read_text().splitlines()
    except OSError:
        return None
    col = lines[0].split().index("press")
    for line in lines[1:]:
        f = line.split()
        if f and f[0] == "TCP":
            return {"yes": True, "no": False}.get(f[col])
    return None


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


def http_head(port: int, path: str, timeout: float = 2.0) -> tuple[int, int | None]:
    """(status, Content-Length) of HEAD path."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("HEAD", path, headers={"Connection": "close"})
        r = conn.getresponse()
        r.read()
        length = r.getheader("Content-Length")
        return r.status, int(length) if length and length.isdigit() else None
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
        block = os.urandom(BIG_SIZE)
        (d / "www/static/1m.bin").write_bytes(block)
        with open(d / "www/static/50m.bin", "wb") as f:  # slowread's file: the same block 50 times (~0.05 s)
            for _ in range(SLOW_SIZE // BIG_SIZE):
                f.write(block)
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
            status, length = http_head(port, SLOW_PATH)
            if status != 200 or length != SLOW_SIZE:
                raise StartError(f"backend {i}: HEAD {SLOW_PATH} answered {status}, Content-Length {length}")

    def pids(self) -> list[int]:
        return [self.p.pid] if self.p else []

    def accepted(self) -> dict[str, int]:
        """The connections the backend nginx holds on its ports (from proxies or clients), by TCP state."""
        return sockets_by_state(self.pids(), local=self.ports)

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


class Clients:
    """Plain sockets to the target for `burst` and `slowread` (no asyncio: their requests must leave in one tight
    loop). Used as a context manager: every socket is closed when the block ends, also on an exception."""

    def __init__(self, port: int):
        self.port = port
        self.socks: list[socket.socket] = []
        self.errors: dict[str, int] = {}
        self.fifo = False  # whether send_all ran SCHED_FIFO

    def __enter__(self) -> "Clients":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def err(self, kind: str, n: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n

    def close(self) -> None:
        for s in self.socks:
            s.close()  # a socket with unread data sends a RST: the proxy learns at once
        self.socks = []

    def open(self, n: int, rcvbuf: int | None = None) -> float:
        """Connect n sockets (one after another; each connect on loopback is done in the call) without sending
        anything; the seconds it took. rcvbuf: SO_RCVBUF, set before connect so that the window stays small."""
        t0 = time.monotonic()
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(10)
            try:
                s.connect(("127.0.0.1", self.port))
            except OSError:
                s.close()
                self.err("connect")
                continue
            s.setblocking(False)
            self.socks.append(s)
        return time.monotonic() - t0

    def send_all(self, request: bytes) -> float:
        """The same request on every socket, in one tight loop; the seconds from the first send to the last.
        The loop runs SCHED_FIFO (if allowed): otherwise the backends, which share this core and which the
        requests wake, preempt it after every few sends and 5,000 requests take 50-150 ms instead of ~15."""
        sends = [s.send for s in self.socks]
        failed = []
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            self.fifo = True
        except (OSError, AttributeError):
            self.fifo = False
        try:
            t0 = time.perf_counter()
            for i, send in enumerate(sends):
                try:
                    if send(request) != len(request):
                        failed.append(i)
                except OSError:
                    failed.append(i)
            spread = time.perf_counter() - t0
        finally:
            if self.fifo:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        if failed:
            self.err("write", len(failed))
            for i in reversed(failed):
                self.socks.pop(i).close()
        return spread

    def read_answers(self, timeout: float) -> int:
        """Read one whole answer on every socket (epoll); the sockets whose answer was a complete 2xx stay open
        (self.socks), the others are counted as errors and closed. Returns the number of answers."""
        ep = select.epoll()
        bufs: dict[int, bytearray] = {}
        by_fd = {s.fileno(): s for s in self.socks}
        done: list[socket.socket] = []
        try:
            for fd in by_fd:
                ep.register(fd, select.EPOLLIN)
                bufs[fd] = bytearray()
            deadline = time.monotonic() + timeout
            while bufs:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.err("no answer", len(bufs))
                    break
                for fd, _ in ep.poll(min(left, 1.0), 1024):
                    s, buf = by_fd[fd], bufs[fd]
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = None
                    if not data:  # reset or closed before the whole answer
                        self.err("read")
                        ep.unregister(fd)
                        del bufs[fd]
                        continue
                    buf += data
                    verdict = answer_complete(buf)
                    if verdict is None:
                        continue
                    ep.unregister(fd)
                    del bufs[fd]
                    if verdict:
                        self.err(verdict)
                    if verdict == "":
                        done.append(s)  # kept open: it idles now
        finally:
            ep.close()
        keep = {id(s) for s in done}
        for s in self.socks:
            if id(s) not in keep:
                s.close()
        self.socks = done
        return len(done)

    def count_closed(self) -> int:
        """Sockets the other end has closed (or reset) meanwhile; they are closed here and dropped."""
        closed, still = 0, []
        for s in self.socks:
            try:
                data = s.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                still.append(s)
                continue
            except OSError:
                data = b""
            if data:
                self.err("unexpected data")
                still.append(s)
            else:
                closed += 1
                s.close()
        self.socks = still
        return closed

    def stall_status(self) -> dict:
        """For stalled downloads: how many are still open with a 200 head in their receive queue, and the bytes
        queued (FIONREAD)."""
        stalled, queued = 0, []
        for s in self.socks:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
            state = info[0]  # tcpi_state: 1 = ESTABLISHED
            q = struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
            queued.append(q)
            try:
                head = s.recv(16, socket.MSG_PEEK)
            except BlockingIOError:
                head = b""
            except OSError:
                head = None
            if head is None or state != 1:
                self.err("closed by proxy")
            elif not head:
                self.err("no answer")
            elif not re.match(rb"HTTP/1\.[01] 200 ", head):
                self.err("non-200")
            else:
                stalled += 1
        return {"stalled": stalled, "queued_median": median(queued), "queued_max": max(queued, default=0)}


def answer_complete(buf: bytearray) -> str | None:
    """None while the answer in buf is incomplete; else "" if it is a whole 2xx answer, or what is wrong with it."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return "bad answer"
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        if len(buf) < end + 4 + int(m.group(1)):
            return None
    elif re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        if not buf.endswith(b"0\r\n\r\n"):
            return None
    else:
        return "no length"
    if not 200 <= status < 300:
        return "non-2xx"
    if re.search(rb"(?im)^connection:\s*close", head):
        return "closed by proxy"
    return ""


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


def wait_quiet(target: Target, backends: Backends, args, limit: float | None = None) -> float:
    """Sample the machine for 1.2 s at a time until the CPU used outside this benchmark is at most
    BENCH_MAX_OTHER_LOAD (% of one core), for at most BENCH_QUIET_WAIT seconds (or limit, if lower); the last
    sample's load."""
    wait = args.quiet_wait if limit is None else min(limit, args.quiet_wait)
    deadline = time.monotonic() + wait
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
                f"{wait:.0f}s")
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


def sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def wait_settled(backends: Backends) -> None:
    """Before a memory scenario: the previous target is stopped (Procs.stop waited for its processes); wait until
    the backends hold none of its connections any more either (e.g. 500 stalled 50 MiB downloads being reset), and
    until the kernel's TCP buffers have drained (below 32 MiB, or no longer falling: other sessions use TCP too)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last_mem = None
    while True:
        held = backends.accepted()
        mem = kernel_tcp_mem_kib()
        if not held and (mem < 32 * 1024 or (last_mem is not None and mem >= last_mem)):
            return
        if time.monotonic() > deadline:
            log(f"WARNING: {SETTLE_TIMEOUT:.0f}s after the last target stopped, the backends still hold connections "
                f"{held}, kernel TCP buffers {mem:,} KiB: starting anyway")
            return
        last_mem = mem
        time.sleep(0.2)


def memory_prologue(target: Target, backends: Backends, args) -> dict:
    """What burst and slowread do first: the same unmeasured warm-up as idle (the small scenario's load for
    BENCH_WARMUP), then a short wait for a quiet machine (memory is robust to CPU noise)."""
    if args.warmup > 0:
        run_wrk(target.port, SCENARIOS["small"], args.warmup)
    if not target.alive():
        raise StartError(target.died())
    return {"quiet_before_pct": wait_quiet(target, backends, args, MEM_QUIET_WAIT)}


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_stopped(pids: list[int], timeout: float = 2.0) -> bool:
    """Wait until every pid is in the stopped state (T) after a SIGSTOP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                states.append(stat[stat.rindex(")") + 2])
            except OSError:
                states.append("gone")
        if all(st in ("T", "t", "gone") for st in states):
            return True
        time.sleep(0.001)
    return False


def backend_conns(target: Target, backends: Backends) -> dict[str, int] | None:
    """The connections from the proxy's processes to the backends' ports, by TCP state (direct: None)."""
    if target.name == "direct":
        return None
    return sockets_by_state(target.pids(), remote=backends.ports)


def memory_epilogue(r: dict, target: Target, backends: Backends, s0: dict) -> dict:
    s1 = snapshot(target, backends)
    ours = (s1["backends"] - s0["backends"]) + (s1["rusage"] - s0["rusage"])
    if target.name != "direct":  # direct: the proxy is the backend process, counted once
        ours += s1["proxy"] - s0["proxy"]
    r["other_load_pct"] = other_load(s0, s1, ours)
    if not target.alive():
        r["errors"]["proxy died"] = 1
        r["note"] = target.died()
    return r


def run_burst(target: Target, backends: Backends, args) -> dict:
    """BENCH_BURST_CONNS connections opened first (nothing sent); once the proxy has accepted them all, one
    `GET /` on each in one tight loop; every answer read; then idle 5 s; then all closed, and 5 s later again."""
    r = memory_prologue(target, backends, args)
    n = args.burst_conns
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-burst\r\n\r\n"
    r["rss_before_kib"] = rss_kib(target.pids())
    r["backend_before"] = backend_conns(target, backends)
    r["tcp_mem_before_kib"] = kernel_tcp_mem_kib()
    s0 = snapshot(target, backends)
    with Clients(target.port) as c:
        r["errors"] = c.errors
        r["open_s"] = c.open(n)
        # the burst is of requests, not of connections: wait until the proxy has accepted every one
        deadline = time.monotonic() + 10
        while accept_queue(target.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        r["unaccepted"] = accept_queue(target.port)
        r["rss_opened_kib"] = rss_kib(target.pids())
        pids = target.pids()
        cpu0 = cpu_ticks(pids)
        # one loopback send costs ~10 µs here (the kernel does the receiver's TCP work and wakes the proxy within
        # it): 5,000 take ~60 ms. Frozen (SIGSTOP) meanwhile, the proxy finds all 5,000 requests waiting at once
        # when it resumes (SIGCONT), as if they had arrived in the same instant.
        r["frozen"] = False
        try:
            if args.burst_freeze:
                signal_all(pids, signal.SIGSTOP)
                r["frozen"] = wait_stopped(pids)
                if not r["frozen"]:
                    log("WARNING: the target did not stop within 2 s: sending anyway")
            t0 = time.monotonic()  # released: the first request goes out (not frozen) ...
            r["sent_s"] = c.send_all(request)
        finally:
            if args.burst_freeze:
                signal_all(pids, signal.SIGCONT)
        if args.burst_freeze:
            t0 = time.monotonic()  # ... or the proxy resumes with all of them waiting (frozen)
        r["sent_fifo"] = c.fifo
        r["answers"] = c.read_answers(timeout=60)
        t1 = time.monotonic()
        r["answered_s"] = t1 - t0
        r["rss_answered_kib"] = rss_kib(target.pids())
        r["cpu_burst_ms"] = (cpu_ticks(target.pids()) - cpu0) / CLK_TCK * 1000
        sleep_until(t1 + 5)
        r["rss_5s_kib"] = rss_kib(target.pids())
        r["backend_5s"] = backend_conns(target, backends)
        r["tcp_mem_5s_kib"] = kernel_tcp_mem_kib()
        closed = c.count_closed()
        if closed:
            c.err("closed while idle", closed)
        r["idle_conns"] = len(c.socks)
        r["kib_per_conn"] = (r["rss_5s_kib"] - r["rss_before_kib"]) / len(c.socks) if c.socks else None
    t2 = time.monotonic()  # all clients closed
    sleep_until(t2 + 5)
    r["rss_closed_kib"] = rss_kib(target.pids())
    r["rss_closed_delta_kib"] = r["rss_closed_kib"] - r["rss_before_kib"]
    r["backend_closed"] = backend_conns(target, backends)
    r["requests"] = r["answers"]
    return memory_epilogue(r, target, backends, s0)


def run_slowread(target: Target, backends: Backends, args) -> dict:
    """BENCH_SLOWREAD_CONNS clients with a 4 KiB SO_RCVBUF each ask for the 50 MiB file and never read; memory at
    3 s and 8 s, one normal `GET /` meanwhile; then all closed, and memory 5 s later."""
    r = memory_prologue(target, backends, args)
    n = args.slowread_conns
    request = f"GET {SLOW_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-slowread\r\n\r\n".encode()
    r["rss_before_kib"] = rss_kib(target.pids())
    r["backend_before"] = backend_conns(target, backends)
    r["tcp_mem_before_kib"] = kernel_tcp_mem_kib()
    s0 = snapshot(target, backends)
    with Clients(target.port) as c:
        r["errors"] = c.errors
        r["open_s"] = c.open(n, rcvbuf=SLOW_RCVBUF)
        r["clients"] = len(c.socks)
        t0 = time.monotonic()
        r["sent_s"] = c.send_all(request)
        sleep_until(t0 + 3)
        r["rss_3s_kib"] = rss_kib(target.pids())
        cpu3 = cpu_ticks(target.pids())
        sleep_until(t0 + 8)
        r["rss_8s_kib"] = rss_kib(target.pids())
        # the proxy's CPU while every download is stalled (a busy loop would show here), % of one core
        r["cpu_stall_pct"] = (cpu_ticks(target.pids()) - cpu3) / CLK_TCK / (time.monotonic() - t0 - 3) * 100
        r["backend_8s"] = backend_conns(target, backends)
        r["tcp_mem_8s_kib"] = kernel_tcp_mem_kib()
        r["tcp_pressure_8s"] = tcp_memory_pressure()
        r["kib_per_download"] = (r["rss_8s_kib"] - r["rss_before_kib"]) / r["clients"] if r["clients"] else None
        # is the proxy still answering others meanwhile? one plain request
        t = time.monotonic()
        try:
            status, body = http_get(target.port, "/", timeout=5.0)
            r["probe_ms"] = (time.monotonic() - t) * 1000
            r["probe"] = "ok" if status == 200 and body.startswith(b"hello from ") else f"{status} {body[:40]!r}"
        except OSError as e:
            r["probe_ms"] = (time.monotonic() - t) * 1000
            r["probe"] = f"{type(e).__name__}: {e}"
        r.update(c.stall_status())
    t2 = time.monotonic()  # all clients closed (reset: their receive queues held data)
    sleep_until(t2 + 5)
    r["rss_closed_kib"] = rss_kib(target.pids())
    r["rss_closed_delta_kib"] = r["rss_closed_kib"] - r["rss_before_kib"]
    r["backend_closed"] = backend_conns(target, backends)
    r["requests"] = r["clients"]
    return memory_epilogue(r, target, backends, s0)


def one_run(name: str, sc: Scenario, procs: Procs, tmp: Path, backends: Backends, args) -> dict:
    """One measured run; repeated (up to BENCH_RETRIES times) while other processes used more than
    BENCH_MAX_OTHER_LOAD of a core during it. The quietest attempt is kept."""
    best = None
    retries = 0 if sc.name in MEMORY_SCENARIOS else args.retries  # memory hardly moves with CPU noise
    for attempt in range(1, retries + 2):
        r = one_attempt(name, sc, procs, tmp, backends, args)
        r["attempts"] = attempt
        if "failed" in r:
            return r
        if best is None or r["other_load_pct"] < best["other_load_pct"]:
            best = r
        if r["other_load_pct"] <= args.max_other_load:
            break
        if attempt <= retries:
            log(f"    noisy run: other processes used {r['other_load_pct']:.0f}% of a core; again")
    best["attempts"] = attempt
    return best


def one_attempt(name: str, sc: Scenario, procs: Procs, tmp: Path, backends: Backends, args) -> dict:
    target = make_target(name, procs, tmp, backends, args.lb)
    own_sockets = len(socket_inodes([os.getpid()]))
    try:
        if sc.name in MEMORY_SCENARIOS:
            wait_settled(backends)
        target.start()
        target.wait_ready()
        if sc.name == "idle":
            return run_idle(target, backends, args)
        if sc.name == "burst":
            return run_burst(target, backends, args)
        if sc.name == "slowread":
            return run_slowread(target, backends, args)
        return run_load(target, backends, sc, args)
    except (StartError, RuntimeError, ValueError, subprocess.TimeoutExpired, asyncio.TimeoutError, OSError) as e:
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, StartError) else str(e)
        log(f"FAILED {name}/{sc.name}: {msg}")
        return {"failed": msg.replace("; log tail:", "")}
    finally:
        target.stop()
        left = len(socket_inodes([os.getpid()])) - own_sockets
        if left > 0:  # the clients close theirs in a `with`: this would be a bug here
            log(f"WARNING: {name}/{sc.name} left {left} socket(s) open in the benchmark process")


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
    return f"{kib / 1024:,.1f} MiB" if kib >= 10240 else f"{kib:,.0f} KiB"


def fmt_num(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def fmt_delta_kib(kib: float | None) -> str:
    if kib is None:
        return "–"
    return ("+" if kib >= 0 else "−") + fmt_kib(abs(kib))


def fmt_conns(c: dict | None) -> str:
    """Backend connections by state: `ESTABLISHED / CLOSE_WAIT` (+ any other state by name); direct: –."""
    if c is None:
        return "–"
    est, cw = c.get("ESTABLISHED", 0), c.get("CLOSE_WAIT", 0)
    text = f"{est:,.0f} / {cw:,.0f}"
    others = [f"{v:,.0f} {k}" for k, v in c.items() if k not in ("ESTABLISHED", "CLOSE_WAIT") and v]
    return text + (" + " + ", ".join(others) if others else "")


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


def median_conns(xs: list) -> dict[str, float] | None:
    """The median per TCP state of backend_conns() counts (a state missing from a run counts 0)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    states = sorted({k for x in xs for k in x})
    return {k: statistics.median([x.get(k, 0) for x in xs]) for k in states}


def memory_medians(ok: list[dict]) -> dict:
    """burst/slowread: the median of every number the runs recorded, and per state of every connection count."""
    out: dict = {}
    keys = {k for r in ok for k in r}
    for k in sorted(keys - {"round", "attempts"}):
        vals = [r.get(k) for r in ok]
        if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in vals):
            out[k] = median(vals)
        elif k.startswith("backend_"):
            out[k] = median_conns(vals)
    out["probes"] = [(r.get("probe"), r.get("probe_ms")) for r in ok if "probe" in r]
    out["tcp_pressure"] = [r.get("tcp_pressure_8s") for r in ok if "tcp_pressure_8s" in r]
    return out


def summarize(results: dict, args) -> dict:
    summary: dict = {}
    for sname, per_target in results.items():
        summary[sname] = {}
        for t, runs in per_target.items():
            ok = [r for r in runs if "failed" not in r]
            if sname in MEMORY_SCENARIOS:
                summary[sname][t] = {
                    "runs": len(runs),
                    "ok": len(ok),
                    **memory_medians(ok),
                    "errors": errors_text(runs),
                    "failures": [r["failed"] for r in runs if "failed" in r],
                }
                continue
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
      f"(+{args.warmup:g}s unmeasured warm-up), idle: {args.idle_conns:,} connections, burst: "
      f"{args.burst_conns:,} connections, slowread: {args.slowread_conns:,} downloads; medians over rounds")
    w(f"- proxies pinned to core {PROXY_CORE}; wrk, the idle client and the backends (one nginx) to core {LOAD_CORE}")
    w(f"- wall time: {meta['wall']}")
    cpu_scenarios = [k for k in summary if k not in MEMORY_SCENARIOS]
    mem_scenarios = [k for k in summary if k in MEMORY_SCENARIOS]
    if cpu_scenarios:
        w(f"- other load on the machine during the measured runs (CPU not used by the proxy, backends or wrk, "
          f"% of one core): median {meta['other_load_median']:.0f}%, max {meta['other_load_max']:.0f}%"
          f"; steal: max {meta['steal_max']:.0f}%")
        w(f"- noise control: each run waits (up to {args.quiet_wait:.0f} s) for the machine to be quiet (other "
          f"processes ≤ {args.max_other_load:g}% of a core) and is repeated up to {args.retries} time(s) if it was not, "
          f"keeping the quietest attempt: {meta['reruns']} repeat(s); {meta['noisy']} kept run(s) still above the "
          "threshold")
    if mem_scenarios:
        w(f"- {' and '.join(mem_scenarios)} measure memory: each waits at most {MEM_QUIET_WAIT:.0f} s for a quiet "
          f"machine and is not repeated; other load during them (% of one core): median "
          f"{meta['mem_load_median']:.0f}%, max {meta['mem_load_max']:.0f}%")
    if cpu_scenarios:
        w("")
        w("Columns: req/s is the median over rounds (range min–max in brackets); p50/p99 are wrk's latency "
          "percentiles (medians over rounds); CPU µs/req is the proxy's user+sys time over the run divided by the "
          "requests completed; RSS is the proxy's resident memory after the run (nginx: master + worker); errors are "
          "wrk's socket errors and non-2xx responses summed over all rounds; split is the share of requests each "
          "backend logged (%); other load is the CPU that processes outside the benchmark used during the runs "
          "(median, % of one core). `direct` is wrk straight to backend 1 (its CPU and RSS are the backend nginx's): "
          "the ceiling.")
    for sname, per_target in summary.items():
        sc = SCENARIOS[sname]
        w("")
        if sname == "burst":
            render_burst(w, per_target, args)
            continue
        if sname == "slowread":
            render_slowread(w, per_target, args)
            continue
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


def lb_ratios(w, per_target: dict, key: str, what: str) -> None:
    lbv = per_target.get("lb", {}).get(key)
    ratios = [f"lb/{o}: {what} ×{ratio(lbv, per_target[o].get(key))}" for o in ("haproxy", "nginx") if o in per_target]
    if ratios:
        w("")
        w("; ".join(ratios))


def render_burst(w, per_target: dict, args) -> None:
    w(f"## burst — {args.burst_conns:,} connections opened first, then one `GET /` on each at once; idle 5 s; "
      "then all closed")
    w("")
    w("RSS before: after the same warm-up as idle, before the connections open; after answers: as soon as the last "
      "answer arrived; +5 s: 5 s later, all connections idle; KiB per idle conn: (RSS +5 s − before) / connections "
      "still open; after close: 5 s after the clients closed them all (Δ to before); backend conns: the proxy's "
      "sockets to the backends, ESTABLISHED / CLOSE_WAIT, before the burst, at +5 s and 5 s after the close; "
      "sent in: first to last request sent (one tight loop)"
      + (", the target frozen (SIGSTOP) meanwhile so that it finds them all waiting when it resumes; answered in: "
         "from its resuming to the last answer read." if args.burst_freeze else
         "; answered in: from the first request sent to the last answer read."))
    w("")
    w("| target | RSS before | RSS after answers | RSS +5 s | KiB per idle conn | RSS 5 s after close | backend conns "
      "before | +5 s | after close | sent in | answered in | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for t, s in per_target.items():
        if not s["ok"]:
            w(f"| {t} | FAILED | | | | | | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} |")
            continue
        w(f"| {t} | {fmt_kib(s['rss_before_kib'])} | {fmt_kib(s['rss_answered_kib'])} | {fmt_kib(s['rss_5s_kib'])} "
          f"| {fmt_num(s['kib_per_conn'], 2)} | {fmt_kib(s['rss_closed_kib'])} "
          f"({fmt_delta_kib(s['rss_closed_delta_kib'])}) | {fmt_conns(s.get('backend_before'))} "
          f"| {fmt_conns(s.get('backend_5s'))} | {fmt_conns(s.get('backend_closed'))} "
          f"| {fmt_num(s['sent_s'] * 1000)} ms | {fmt_num(s['answered_s'], 2)} s | {s['errors']} |")
    lb_ratios(w, per_target, "kib_per_conn", "KiB per idle connection after the burst")
    w("(direct: the backend nginx's own memory; it has no backend connections)")


def render_slowread(w, per_target: dict, args) -> None:
    w(f"## slowread — {args.slowread_conns:,} clients (SO_RCVBUF {SLOW_RCVBUF // 1024} KiB) each ask for a 50 MiB "
      f"file (`GET {SLOW_PATH}`) and never read")
    w("")
    w("RSS before: after the same warm-up as idle; at 3 s / 8 s: after the requests were sent; KiB per stalled "
      "download: (RSS at 8 s − before) / clients; `GET /` meanwhile: one plain request to the proxy at 8 s; after "
      "close: 5 s after the clients closed (Δ to before); stalled: clients still open at 8 s with a 200 head in their "
      "receive queue; proxy CPU: from 3 s to 8 s, % of one core; kernel TCP buffers: growth of the memory in all TCP "
      "socket buffers of the machine from before to 8 s (`/proc/net/sockstat`: where the bodies a proxy does not "
      "hold went), *pressure* if the kernel's TCP was under memory pressure at 8 s (above tcp_mem[1], "
      f"{tcp_mem_limits_text()}: it then stops growing socket buffers and windows, which throttles the backends).")
    w("")
    w("| target | RSS before | RSS at 3 s | RSS at 8 s | KiB per stalled download | `GET /` meanwhile "
      "| RSS 5 s after close | stalled | proxy CPU | kernel TCP buffers | errors |")
    w("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    for t, s in per_target.items():
        if not s["ok"]:
            w(f"| {t} | FAILED | | | | | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} |")
            continue
        probes = s["probes"]
        good = [ms for verdict, ms in probes if verdict == "ok"]
        if len(good) == len(probes):
            probe = f"200 in {fmt_num(median(good), 1)} ms"
        else:
            bad = next(v for v, _ in probes if v != "ok")
            probe = f"{len(probes) - len(good)}/{len(probes)} failed: {bad}"
        tcp = None
        if s.get("tcp_mem_8s_kib") is not None and s.get("tcp_mem_before_kib") is not None:
            tcp = s["tcp_mem_8s_kib"] - s["tcp_mem_before_kib"]
        pressed = sum(1 for x in s["tcp_pressure"] if x)
        if pressed:
            tcp_text = f"{fmt_delta_kib(tcp)}, *pressure*" + (f" ({pressed}/{len(s['tcp_pressure'])})"
                                                               if len(s["tcp_pressure"]) > 1 else "")
        else:
            tcp_text = fmt_delta_kib(tcp)
        w(f"| {t} | {fmt_kib(s['rss_before_kib'])} | {fmt_kib(s['rss_3s_kib'])} | {fmt_kib(s['rss_8s_kib'])} "
          f"| {fmt_num(s['kib_per_download'], 1)} | {probe} | {fmt_kib(s['rss_closed_kib'])} "
          f"({fmt_delta_kib(s['rss_closed_delta_kib'])}) | {fmt_num(s['stalled'])} | {fmt_num(s['cpu_stall_pct'])}% "
          f"| {tcp_text} | {s['errors']} |")
    lb_ratios(w, per_target, "kib_per_download", "KiB per stalled download")
    w("(direct: the backend nginx itself, sending with sendfile)")


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
    if not re.fullmatch(r"[0-9a-f]{4,40}", commit):  # a prebuilt binary outside a checkout (BENCH_LB)
        return (f"{hap}; {ngx}; {wrk}; Python {platform.python_version()}; {rustc}", f"{lbv}, binary {lb}")
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
    args.burst_conns = int(env.get("BENCH_BURST_CONNS", "5000"))
    args.slowread_conns = int(env.get("BENCH_SLOWREAD_CONNS", "500"))
    args.burst_freeze = env.get("BENCH_BURST_FREEZE", "1") not in ("0", "", "no", "false")
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

    # 5,000 idle (or burst) client sockets live in this process; the proxies inherit the limit too, and hold a
    # backend connection per request in flight besides (burst: up to one per client)
    most = max(args.idle_conns, args.burst_conns, args.slowread_conns)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(65536, 2 * most + 1024)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    global NOFILE
    NOFILE = nofile
    log(f"open files limit: {nofile}; HAProxy maxconn {haproxy_maxconn()}")
    if nofile < most + 512:
        log(f"WARNING: RLIMIT_NOFILE is {nofile}: the client will run out of file descriptors ({most:,} connections)")
    elif nofile < 2 * most + 512:
        log(f"WARNING: RLIMIT_NOFILE is {nofile}: a proxy holding {most:,} client and as many backend connections "
            "may run out of file descriptors")
    if max(args.burst_conns, args.idle_conns) > haproxy_maxconn():
        log(f"WARNING: HAProxy's maxconn ({haproxy_maxconn()}) is below the idle/burst connections: it will queue")

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
                        if sname == "burst":
                            log(f"    sent in {r['sent_s'] * 1000:.0f} ms, answered in {r['answered_s']:.2f} s; RSS "
                                f"{r['rss_before_kib']} -> {r['rss_answered_kib']} -> {r['rss_5s_kib']} KiB (+5 s, "
                                f"{fmt_num(r['kib_per_conn'], 2)} KiB/conn) -> {r['rss_closed_kib']} KiB (closed "
                                f"+5 s); backend conns {fmt_conns(r['backend_before'])} -> "
                                f"{fmt_conns(r['backend_5s'])} -> {fmt_conns(r['backend_closed'])}; "
                                f"errors {r['errors'] or 0}")
                        elif sname == "slowread":
                            log(f"    {r['stalled']} stalled; RSS {r['rss_before_kib']} -> {r['rss_3s_kib']} (3 s) -> "
                                f"{r['rss_8s_kib']} KiB (8 s), {fmt_num(r['kib_per_download'], 1)} KiB/download, "
                                f"-> {r['rss_closed_kib']} KiB (closed +5 s); GET / meanwhile: {r['probe']} in "
                                f"{r['probe_ms']:.1f} ms; proxy CPU while stalled {r['cpu_stall_pct']:.0f}%; "
                                f"kernel TCP buffers {r['tcp_mem_before_kib']} -> {r['tcp_mem_8s_kib']} KiB"
                                f"{' (pressure)' if r.get('tcp_pressure_8s') else ''}; "
                                f"backend conns at 8 s {fmt_conns(r['backend_8s'])}; errors {r['errors'] or 0}")
                        elif sname == "idle":
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
    # the noise figures are those of the CPU scenarios (the memory scenarios wait less and are not repeated)
    cpu_results = {k: v for k, v in results.items() if k not in MEMORY_SCENARIOS}
    loads = [r["other_load_pct"] for pt in cpu_results.values() for runs in pt.values() for r in runs
             if "other_load_pct" in r]
    steals = [r["steal_pct"] for pt in results.values() for runs in pt.values() for r in runs if "steal_pct" in r]
    mem_loads = [r["other_load_pct"] for k, pt in results.items() if k in MEMORY_SCENARIOS for runs in pt.values()
                 for r in runs if "other_load_pct" in r]
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
        "mem_load_median": median(mem_loads) or 0.0,
        "mem_load_max": max(mem_loads, default=0.0),
        "reruns": sum(r.get("attempts", 1) - 1 for pt in results.values() for runs in pt.values() for r in runs),
        "noisy": sum(1 for pt in cpu_results.values() for runs in pt.values() for r in runs
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
