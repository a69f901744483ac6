"""The backends (one nginx process, three server blocks) and the targets under test: lb, HAProxy, nginx as a proxy,
and `direct` (the load generator straight to backend 1).

Why so: the backends are one nginx with `master_process off`, pinned to the load core, that also writes the 1 MiB
and 50 MiB files and counts each backend's share with a 2-byte buffered access-log line. Every run gets a fresh target
process pinned to the proxy core, configured alike (round robin over the same three backends, keep-alive both ways,
one worker, no access log, the same X-Forwarded-* headers: see bench/README, Equal configs); its generated config
stays in the temp dir. A target is ready only when a real request through it answers 200 `hello from N` (lb: after
its startup line). `direct` is a Target that is the backend process itself: it starts and stops nothing, and its CPU
and RSS are the backend nginx's. NOFILE is set by main() (set_nofile) before anything starts: nginx and HAProxy are
configured from it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from .common import BIG_PATH, BIG_SIZE, LOAD_CORE, PROXY_CORE, SLOW_PATH, SLOW_SIZE, StartError, log
from .procfs import sockets_by_state
from .procs import Procs, proc_tree

BACKEND_IDS = (1, 2, 3)  # the backends a target routes to (numbered from 1, as they answer `hello from N`)
NOFILE = 20000  # set in main(): the open-files limit this process and its children have


def set_nofile(n: int) -> None:
    """main() sets the open-files limit it got: the backends' and nginx's worker_rlimit_nofile, HAProxy's maxconn."""
    global NOFILE
    NOFILE = n


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


def write_atomic(path: Path, text: str) -> None:
    """Write a config file whole: a proxy that re-reads it (a reload) never sees half of it."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.replace(path)


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


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

    def get(self) -> tuple[int, bytes]:
        """One `GET /` through the target, as wait_ready sends it (over TLS or HTTP/2 for the protocol scenarios:
        protocols.py)."""
        return http_get(self.port)

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
                status, body = self.get()
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
            status, body = self.get()
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

    def write_config(self) -> Path:
        """The spec's JSON list of the three backends (the reload scenario writes the full form: reload.py); with
        BENCH_LB_BALANCE (issue 11), the full form with that `balance` algorithm."""
        cfg = self.tmp / "lb.json"
        backends = [{"id": i, "host": "127.0.0.1", "port": port} for i, port in enumerate(self.backends.ports, 1)]
        balance = os.environ.get("BENCH_LB_BALANCE")
        write_atomic(cfg, json.dumps({"balance": balance, "backends": backends} if balance else backends))
        return cfg

    def start(self) -> None:
        self.port = free_port()
        cfg = self.write_config()
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
    forwarded_proto = "http"  # https behind a TLS listener (protocols.py)

    def bind_options(self) -> str:
        """What follows the address on the `bind` line: nothing here (TLS or h2c: protocols.py)."""
        return ""

    def config_text(self, ids: tuple[int, ...] = BACKEND_IDS) -> str:
        """The config with backends `ids` (1-based; the reload scenario leaves one out every other time)."""
        servers = "\n".join(f"    server b{i} 127.0.0.1:{self.backends.ports[i - 1]} check inter 5s" for i in ids)
        return f"""# HAProxy under test: one thread, pinned to core {PROXY_CORE}, no logs
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
    bind 127.0.0.1:{self.port}{self.bind_options()}
    http-request set-header X-Forwarded-Proto {self.forwarded_proto}
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend be

backend be
    balance roundrobin
{servers}
"""

    def start(self) -> None:
        self.port = free_port()
        cfg = self.tmp / "haproxy.cfg"
        write_atomic(cfg, self.config_text())
        self.p, self.logfile = self.procs.start("haproxy", ["haproxy", "-db", "-f", str(cfg)], PROXY_CORE)


class Nginx(Target):
    name = "nginx"

    def listen_options(self) -> str:
        """What follows the address on the `listen` line: nothing here (TLS or h2c: protocols.py)."""
        return ""

    def server_extra(self) -> str:
        """More directives for the server block: none here (the certificate: protocols.py)."""
        return ""

    def config_text(self, ids: tuple[int, ...] = BACKEND_IDS) -> str:
        """The config with backends `ids` (1-based; the reload scenario leaves one out every other time)."""
        d = self.tmp / "nginx-proxy"
        servers = "\n".join(f"        server 127.0.0.1:{self.backends.ports[i - 1]};" for i in ids)
        return f"""# nginx as a proxy under test: master + one worker, pinned to core {PROXY_CORE}, no access log
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
        listen 127.0.0.1:{self.port}{self.listen_options()} backlog=4096;{self.server_extra()}
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

    def start(self) -> None:
        self.port = free_port()
        d = self.tmp / "nginx-proxy"
        (d / "temp").mkdir(parents=True, exist_ok=True)
        write_atomic(d / "nginx.conf", self.config_text())
        self.p, self.logfile = self.procs.start(
            "nginx-proxy", ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", "stderr"], PROXY_CORE
        )


def make_target(name: str, procs: Procs, tmp: Path, backends: Backends, lb_binary: Path) -> Target:
    if name == "lb":
        return Lb(procs, tmp, backends, binary=lb_binary)
    return {"haproxy": HAProxy, "nginx": Nginx, "direct": Direct}[name](procs, tmp, backends)
