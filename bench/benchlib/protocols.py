"""The targets of the protocol scenarios (issue 10): lb, HAProxy and nginx with a TLS listener (HTTP/1.1 and HTTP/2 by
ALPN), with an h2c listener (HTTP/2 in clear, prior knowledge), or in TCP mode (L4), and `direct` for TCP mode.

Why so: each is the plain target of targets.py with its listener changed and nothing else, so that what a table
compares is the protocol, not a different setup: the same backends (HTTP/1.1, kept alive), the same round robin,
health checks, headers and single worker. The listener per scenario:

- tls_keepalive, tls_handshake, h2_tls: TLS 1.3 with the benchmark's certificate (certs.py), ALPN `h2,http/1.1`.
  HAProxy: `bind ... ssl crt PEM alpn h2,http/1.1 ssl-min-ver TLSv1.3`; nginx: `listen ... ssl http2` with
  `ssl_protocols TLSv1.3`; lb: `[tls] cert, key` in its TOML. Every proxy keeps its defaults otherwise (session
  tickets, caches): the handshake client never resumes (handshake.py), and keep-alive connections handshake once.
- h2c: HAProxy `bind ... proto h2`; nginx 1.22 `listen ... http2` without `ssl` (prior knowledge only; its
  `http2 on` directive is 1.25.1+); lb: its plain listener (the connection preface tells HTTP/2 from HTTP/1.1).
- tcp_stream, tcp_connect: HAProxy `mode tcp` (connect checks every 5 s), nginx `stream {}` (the dynamic module
  from Debian's libnginx-mod-stream, loaded with `load_module`; nginx has no active checks), lb `mode = "tcp"` (its
  checks are then connect-only). Buffers at each proxy's defaults. An HTTP request still passes through unchanged,
  so readiness and the backends' request counts work as in the other scenarios.

lb gains these features in parallel with this benchmark: an lb that refuses the config (its TOML parser rejects
unknown fields, so an lb without `[tls]` or `mode` exits at once), or that does not speak HTTP/2, is *skipped*
(Skip, with its own words), not failed. Readiness over TLS is an HTTPS/1.1 `GET /` from Python (certificate not
checked) plus `openssl s_client` for what was negotiated; over HTTP/2 it is `nghttp` (nghttp2-client), whose
`:status` and body are read back.
"""

from __future__ import annotations

import http.client
import re
import ssl
import subprocess
import time
from pathlib import Path

from .certs import Cert, make_cert, negotiated
from .common import PROXY_CORE, Skip, StartError
from .procs import Procs
from . import targets
from .targets import BACKEND_IDS, Backends, Direct, HAProxy, Lb, Nginx, Target, haproxy_maxconn, tail, write_atomic

# what each protocol scenario needs of a target's listener
KIND = {
    "tls_keepalive": "tls",
    "tls_handshake": "tls",
    "h2_tls": "tls",
    "h2c": "h2c",
    "tcp_stream": "tcp",
    "tcp_connect": "tcp",
}

STREAM_MODULES = ("/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so")


def tls_client_context() -> ssl.SSLContext:
    """TLS 1.3, certificate not checked (it is self-signed; the point is the work, not the trust)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def https_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls_client_context())
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def h2_get(port: int, tls: bool, timeout: float = 5.0) -> tuple[int, bytes]:
    """`GET /` over HTTP/2 with nghttp (h2c by prior knowledge for http://, ALPN h2 for https://): (status, body);
    status 0 and nghttp's words when no answer came."""
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    try:
        p = subprocess.run(["nghttp", "-v", "-t", str(round(timeout)), url], capture_output=True, text=True,
                           timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return 0, b"nghttp timed out"
    out = p.stdout + p.stderr
    m = re.search(r":status: (\d+)", out)
    body = re.search(r"^(hello from \d+)", out, re.M)
    if not m:
        errs = [ln.split("[ERROR]", 1)[1].strip() for ln in out.splitlines() if "[ERROR]" in ln]
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        return 0, (errs[0] if errs else " / ".join(lines[-2:]) or f"nghttp exited with {p.returncode}").encode()
    return int(m.group(1)), body.group(1).encode() if body else b""


class ProtoMixin:
    """What every protocol target adds: its scenario, the certificate, a `get` in the scenario's protocol, and the
    negotiated TLS parameters once ready."""

    scenario = ""
    cert: Cert | None = None
    negotiated: dict | None = None

    def setup(self, scenario: str) -> None:
        self.scenario = scenario
        self.kind = KIND[scenario]
        self.cert = make_cert(self.tmp) if self.kind == "tls" else None

    def get(self) -> tuple[int, bytes]:
        if self.scenario == "h2_tls":
            return h2_get(self.port, tls=True)
        if self.kind == "tls":
            return https_get(self.port)
        if self.kind == "h2c":
            return h2_get(self.port, tls=False)
        return Target.get(self)

    def wait_ready(self, timeout: float = 20.0) -> None:
        Target.wait_ready(self, timeout)
        if self.kind == "tls":
            self.negotiated = negotiated(self.port, "h2,http/1.1" if self.scenario == "h2_tls" else "http/1.1")
            if self.negotiated["version"] != "TLSv1.3":
                raise StartError(f"{self.name} negotiated {self.negotiated['version']}, not TLSv1.3")
            if self.scenario == "h2_tls" and self.negotiated["alpn"] != "h2":
                raise StartError(f"{self.name} did not choose h2 by ALPN (chose {self.negotiated['alpn']})")


# ---------------------------------------------------------------------------------------------------------------------
# lb


class ProtoLb(ProtoMixin, Lb):
    """lb with the full-form TOML: `[tls]` (cert, key) or `mode = "tcp"`; h2c on its plain listener."""

    def write_config(self) -> Path:
        cfg = self.tmp / f"lb-{self.kind}.toml"
        top = ""
        if self.kind == "tcp":
            top = 'mode = "tcp"\n'
        if self.kind == "tls":
            top = f'[tls]\ncert = "{self.cert.cert}"\nkey = "{self.cert.key}"\n'
        blocks = "".join(f'\n[[backends]]\nid = {i}\nhost = "127.0.0.1"\nport = {self.backends.ports[i - 1]}\n'
                         for i in BACKEND_IDS)
        write_atomic(cfg, f"# lb under test, scenario {self.scenario} ({self.kind})\n{top}{blocks}")
        return cfg

    def start(self) -> None:
        try:
            super().start()
        except StartError as e:
            said = tail(self.logfile, 40) if self.logfile else ""
            if self.p is not None and not self.alive() and re.search(r"unknown field|unknown variant", said):
                feature = {"tls": "`[tls]`", "tcp": '`mode = "tcp"`'}.get(self.kind, self.kind)
                line = next((ln for ln in said.splitlines() if "unknown" in ln), said.splitlines()[-1])
                raise Skip(f"this lb does not take {feature} yet (it refused the config: {line.strip()})") from e
            raise

    def not_served(self) -> str | None:
        """What an lb that takes the config but does not serve such a listener yet logs per connection."""
        for line in reversed(tail(self.logfile, 40).splitlines()):
            m = re.search(r"(\S+ listener in \S+ mode: not served yet)", line)
            if m:
                return m.group(1)
        return None

    def wait_ready(self, timeout: float = 20.0) -> None:
        try:
            self.ready(timeout)
        except StartError as e:
            said = self.not_served()
            if said and self.alive():
                raise Skip(f"this lb takes the config but does not serve it yet (its log: {said})") from e
            raise

    def ready(self, timeout: float) -> None:
        # lb gains HTTP/2 in parallel with this benchmark: tell `no HTTP/2 yet` (skipped) from a broken listener
        if self.kind == "h2c":
            wait_answer(self, lambda: Target.get(self), timeout)  # its plain listener must answer HTTP/1.1
            status, body = h2_get(self.port, tls=False)
            if status == 0 and self.alive():
                raise Skip("this lb does not speak HTTP/2 by prior knowledge on its plain listener yet (nghttp: "
                           f"{body.decode(errors='replace')[:200]})")
        elif self.scenario == "h2_tls":
            wait_answer(self, lambda: https_get(self.port), timeout, self.not_served)  # TLS must work
            alpn = negotiated(self.port, "h2,http/1.1")["alpn"]
            if alpn != "h2" and self.alive():
                raise Skip(f"this lb does not choose h2 by ALPN yet (it chose {alpn})")
        else:
            wait_answer(self, self.get, timeout, self.not_served)
        ProtoMixin.wait_ready(self, timeout)


def wait_answer(t: Target, get, timeout: float, give_up=None) -> None:
    """Call get() until it answers 200 `hello from N`; StartError if the target dies, the time is up, or give_up()
    says why no answer will come."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if not t.alive():
            raise StartError(t.died())
        if give_up and give_up():
            raise StartError(f"{t.name}: {give_up()}")
        try:
            status, body = get()
            if status == 200 and body.startswith(b"hello from "):
                return
            last = f"answered {status} {body[:80]!r}"
        except OSError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise StartError(f"{t.name} not ready on port {t.port} after {timeout:.0f}s ({last}); log:\n"
                             f"{tail(t.logfile)}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------------------
# HAProxy


class ProtoHAProxy(ProtoMixin, HAProxy):
    """HAProxy: the same frontend with a TLS or h2c `bind`, or the whole config in `mode tcp`."""

    @property
    def forwarded_proto(self) -> str:
        return "https" if self.kind == "tls" else "http"

    def bind_options(self) -> str:
        if self.kind == "tls":
            return f" ssl crt {self.cert.combined} alpn h2,http/1.1 ssl-min-ver TLSv1.3"
        if self.kind == "h2c":
            return " proto h2"
        return ""

    def config_text(self, ids: tuple[int, ...] = BACKEND_IDS) -> str:
        if self.kind != "tcp":
            return super().config_text(ids)
        servers = "\n".join(f"    server b{i} 127.0.0.1:{self.backends.ports[i - 1]} check inter 5s" for i in ids)
        return f"""# HAProxy under test in TCP mode (L4): one thread, pinned to core {PROXY_CORE}, no logs
global
    nbthread 1
    maxconn {haproxy_maxconn()}

defaults
    mode tcp
    maxconn {haproxy_maxconn()}
    timeout connect 3s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:{self.port}
    default_backend be

backend be
    balance roundrobin
{servers}
"""


# ---------------------------------------------------------------------------------------------------------------------
# nginx


def stream_module() -> str:
    """The `load_module` line nginx needs for `stream {}` ('' when it is built in); StartError if it has none."""
    try:
        v = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StartError(f"nginx -V: {e}") from e
    if re.search(r"--with-stream(?=\s|$)", v):
        return ""
    for path in STREAM_MODULES:
        if Path(path).exists():
            return f"load_module {path};\n"
    raise StartError("nginx has no stream module (Debian: apt-get install libnginx-mod-stream)")


class ProtoNginx(ProtoMixin, Nginx):
    """nginx: the same server block with a TLS or h2c `listen`, or a `stream {}` config for TCP mode."""

    def listen_options(self) -> str:
        return {"tls": " ssl http2", "h2c": " http2"}.get(self.kind, "")

    def server_extra(self) -> str:
        if self.kind != "tls":
            return ""
        return (f"\n        ssl_certificate {self.cert.cert};"
                f"\n        ssl_certificate_key {self.cert.key};"
                "\n        ssl_protocols TLSv1.3;")

    def config_text(self, ids: tuple[int, ...] = BACKEND_IDS) -> str:
        if self.kind != "tcp":
            return super().config_text(ids)
        d = self.tmp / "nginx-proxy"
        servers = "\n".join(f"        server 127.0.0.1:{self.backends.ports[i - 1]};" for i in ids)
        return f"""# nginx under test in TCP mode (L4, stream module): master + one worker, pinned to core {PROXY_CORE}
{stream_module()}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {targets.NOFILE};
pid {d}/nginx.pid;
error_log stderr error;
events {{ worker_connections 20000; }}
stream {{
    upstream be {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        proxy_pass be;
        proxy_connect_timeout 3s;
        proxy_timeout 60s;
    }}
}}
"""


class ProtoDirect(ProtoMixin, Direct):
    """`direct` for the TCP-mode scenarios: the client straight to backend 1."""


def make_proto_target(name: str, scenario: str, procs: Procs, tmp: Path, backends: Backends,
                      lb_binary: Path) -> Target:
    if name == "lb":
        t = ProtoLb(procs, tmp, backends, binary=lb_binary)
    else:
        t = {"haproxy": ProtoHAProxy, "nginx": ProtoNginx, "direct": ProtoDirect}[name](procs, tmp, backends)
    t.setup(scenario)
    return t
