"""The reload scenario (issue 9): steady keep-alive load through a proxy that is reloaded every 0.5 s, alternating two
configs (A: backends 1, 2, 3; B: 1, 2: backend 3 removed, then added back), and what the clients saw.

Why so: wrk counts a closed connection and a late answer alike ("read" errors), so the client is our own: one thread,
non-blocking sockets and epoll, 50 connections each sending `GET /` again as soon as its answer is in. It tells apart
a request whose connection was closed or reset before its answer came (failed: *reset mid-request*), an answer that
was not 2xx, and a connection the proxy closed while no request was outstanding (*closed between requests*: the
answer said `Connection: close`, or a peek just before the next request found the end of the stream), and reconnects
after every close so that the load stays at 50 connections. The reloads run in a thread of their own, every 0.5 s
from the start of the load (one that comes due while the previous one is not seen done yet waits for it, at most
0.45 s); each is seen done by what the proxy does (lb: its `config reloaded ... generation N` line; nginx and HAProxy
in master-worker mode: a new worker process; HAProxy `-sf`: the old process logs its soft stop, which the new one
asks for once it is ready), and the count of reloads done is the proxy's own, from its log at the end. Nothing here
reads /proc/net/tcp during the load: with the machine's other sessions it takes ~60 ms, and slowed the reloads it
was meant to time. Each mechanism is the one its operators use:

- lb: the full-form TOML rewritten (whole: written aside, then renamed), then SIGHUP to the process.
- HAProxy (default, BENCH_HAPROXY_RELOAD=sf): a new `haproxy -f CFG -sf <old pids>` per reload, the classic reload:
  the new process binds, then tells the old ones to stop softly (SIGUSR1: stop listening, finish what they hold).
  BENCH_HAPROXY_RELOAD=master: master-worker mode (`-W`) and SIGUSR2 to the master (what Debian's systemd unit does):
  the master re-executes itself on the new config, forks a new worker, and soft-stops the old one the same way.
- nginx: the config rewritten, then SIGHUP to the master (what `nginx -s reload` sends): new workers on the new
  config, the old ones shut down gracefully.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from .common import MEM_QUIET_WAIT, PROXY_CORE, log, median
from .noise import other_load, snapshot, wait_quiet
from .procs import proc_tree
from .targets import BACKEND_IDS, Backends, HAProxy, Lb, Nginx, Target, free_port, tail, write_atomic

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-reload\r\n\r\n"
ANSWER_TIMEOUT = 5.0  # a request with no answer after this long is a failure (its connection closed, a new one made)
RECONNECT_PAUSE = 0.01  # after a refused connect
CONFIG_B = tuple(i for i in BACKEND_IDS if i != 3)  # every other reload: backend 3 removed


# ---------------------------------------------------------------------------------------------------------------------
# The load client

CONNECTING, WAITING = 1, 2


class Conn:
    __slots__ = ("sock", "state", "buf", "sent_at", "served")

    def __init__(self, sock: socket.socket):
        self.sock, self.state, self.buf, self.sent_at, self.served = sock, CONNECTING, bytearray(), 0.0, 0


def parse_answer(buf: bytearray, eof: bool = False) -> tuple[int, bool, bytes, int] | None:
    """(status, Connection: close, body, bytes beyond the answer) once buf holds a whole answer, else None. An answer
    with neither a length nor chunked coding ends at the end of the stream (eof)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return (0, True, b"", 0)
    close = re.search(rb"(?im)^connection:[^\r\n]*\bclose\b", head) is not None
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        stop = end + 4 + int(m.group(1))
        if len(buf) < stop:
            return None
        return status, close, bytes(buf[end + 4:stop]), len(buf) - stop
    if re.search(rb"(?im)^transfer-encoding:[^\r\n]*chunked", head):
        stop = buf.find(b"\r\n0\r\n\r\n", end)
        if stop < 0:
            return None
        return status, close, bytes(buf[end + 4:stop]), len(buf) - stop - 7
    return (status, True, bytes(buf[end + 4:]), 0) if eof else None


class LoadClient:
    """`conns` keep-alive connections, each sending `GET /` again as soon as its answer is in, until `end`; then the
    answers still due are awaited (at most ANSWER_TIMEOUT). Every socket is closed when run() returns."""

    def __init__(self, port: int, conns: int):
        self.port, self.n = port, conns
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.pending = 0  # connections to open again after a refused connect (at retry_at)
        self.retry_at = 0.0
        self.sending = True
        self.c = {"requests": 0, "non_2xx": 0, "no_answer": 0, "reset_mid": 0, "connect_failed": 0,
                  "closed_idle": 0, "closed_announced": 0, "closed_silent": 0, "connects": 0}
        self.fresh: set[int] = set()  # fds opened while handling the current batch of events (see run)
        self.kinds: dict[str, int] = {}  # what happened, in words, for the JSON and the details column
        self.split = [0] * len(BACKEND_IDS)

    def kind(self, text: str) -> None:
        self.kinds[text] = self.kinds.get(text, 0) + 1

    # connections

    def open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rc = s.connect_ex(("127.0.0.1", self.port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self.connect_failed(rc)
            return
        self.conns[s.fileno()] = Conn(s)
        self.fresh.add(s.fileno())
        self.ep.register(s.fileno(), select.EPOLLOUT)

    def connect_failed(self, rc: int) -> None:
        # the request this connection was to carry could not be sent: a failed request, not a reset one
        self.c["connect_failed"] += 1
        self.kind(f"connect failed ({errno.errorcode.get(rc, rc)})")
        self.pending += 1
        self.retry_at = time.monotonic() + RECONNECT_PAUSE

    def drop(self, conn: Conn, again: bool = True) -> None:
        fd = conn.sock.fileno()
        self.ep.unregister(fd)
        del self.conns[fd]
        conn.sock.close()
        if again and self.sending:
            self.open()

    # requests and answers

    def send(self, conn: Conn) -> None:
        s = conn.sock
        if conn.served:
            # kept alive: did the proxy close it since its last answer? (then no request is lost: reconnect)
            try:
                peek = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                peek = None
            except OSError as e:
                peek = b""
                self.kind(f"closed between requests ({errno.errorcode.get(e.errno, e.errno)})")
            if peek is not None:
                if peek:
                    self.kind("data before the request")
                self.c["closed_idle"] += 1
                self.c["closed_silent"] += 1
                self.drop(conn)
                return
        try:
            sent = s.send(REQUEST)
        except OSError as e:
            sent = -e.errno
        if sent != len(REQUEST):
            self.fail_mid(conn, f"send failed ({errno.errorcode.get(-sent, sent)})")
            return
        conn.state, conn.sent_at = WAITING, time.monotonic()
        conn.buf.clear()
        self.ep.modify(s.fileno(), select.EPOLLIN)

    def fail_mid(self, conn: Conn, how: str) -> None:
        """The request was sent (or its send failed) and its connection was closed or reset before the answer."""
        self.c["no_answer"] += 1
        self.c["reset_mid"] += 1
        self.kind(how + (" on a new connection" if not conn.served else ""))
        self.drop(conn)

    def on_event(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is None or fd in self.fresh:  # gone, or a new socket that reuses a closed one's fd: not its event
            return
        s = conn.sock
        if conn.state == CONNECTING:
            rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if rc:
                self.drop(conn, again=False)
                self.connect_failed(rc)
                return
            self.c["connects"] += 1
            if not self.sending:
                self.drop(conn)
                return
            self.send(conn)
            return
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail_mid(conn, f"reset {'mid-answer' if conn.buf else 'before the answer'} "
                                f"({errno.errorcode.get(e.errno, e.errno)})")
            return
        if data:
            conn.buf += data
        answer = parse_answer(conn.buf, eof=not data)
        if answer is None:
            if not data:
                self.fail_mid(conn, f"closed {'mid-answer' if conn.buf else 'before the answer'}")
            return
        status, close, body, extra = answer
        conn.served += 1
        if 200 <= status < 300:
            self.c["requests"] += 1
            m = re.fullmatch(rb"hello from (\d+)", body)
            if m and 1 <= int(m.group(1)) <= len(self.split):
                self.split[int(m.group(1)) - 1] += 1
        else:
            self.c["non_2xx"] += 1
            self.kind(f"status {status}")
        if extra:
            self.kind("bytes after the answer")
        if close or extra or not data:
            # the proxy said so (Connection: close) or ended the stream after a whole answer: between requests
            self.c["closed_idle"] += 1
            self.c["closed_announced"] += 1
            self.drop(conn)
        elif self.sending:
            self.send(conn)
        else:
            self.drop(conn)

    def run(self, t0: float, end: float) -> dict:
        """Load from t0 (now) until end, then the answers still due; the counts."""
        try:
            for _ in range(self.n):
                self.open()
            last_sweep = t0
            drain_until = None
            while True:
                now = time.monotonic()
                if self.sending and now >= end:
                    self.sending = False
                    drain_until = now + ANSWER_TIMEOUT
                    for conn in [c for c in self.conns.values() if c.state != WAITING]:
                        self.drop(conn)
                if not self.sending and (not self.conns or now > drain_until):
                    break
                self.fresh.clear()
                for fd, _ in self.ep.poll(0.02, 256):
                    self.on_event(fd)
                now = time.monotonic()
                if self.pending and now >= self.retry_at and self.sending:
                    n, self.pending = self.pending, 0
                    for _ in range(n):
                        self.open()
                if now - last_sweep >= 0.1:
                    last_sweep = now
                    for conn in [c for c in self.conns.values()
                                 if c.state == WAITING and now - c.sent_at > ANSWER_TIMEOUT]:
                        self.c["no_answer"] += 1
                        self.kind(f"no answer in {ANSWER_TIMEOUT:g} s")
                        self.drop(conn)
            finished = time.monotonic()
            for conn in list(self.conns.values()):  # only after the drain deadline: no answer
                self.c["no_answer"] += 1
                self.kind("no answer by the end")
                self.drop(conn, again=False)
        finally:
            for conn in list(self.conns.values()):
                conn.sock.close()
            self.conns.clear()
            self.ep.close()
        c = self.c
        return {
            **c,
            "failed_requests": c["non_2xx"] + c["no_answer"] + c["connect_failed"],
            "load_s": finished - t0,
            "rps": c["requests"] / (finished - t0),
            "split": self.split,
            "kinds": dict(sorted(self.kinds.items(), key=lambda kv: -kv[1])),
        }


# ---------------------------------------------------------------------------------------------------------------------
# The targets, reloadable: reload(ids, deadline) applies the config with backends `ids` and says whether the proxy
# took it before the deadline: (done, what it said or why not)


def wait_for(check, deadline: float) -> bool:
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def children(pid: int) -> set[int]:
    """The processes pid started (nginx's and HAProxy's master: their workers)."""
    try:
        return {int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: the whole /proc
        return set(proc_tree(pid)[1:])


class LogReader:
    """New lines of a log file since the last read."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        return data[:cut].decode(errors="replace").splitlines()


class ReloadLb(Lb):
    """lb with the full-form TOML; a reload rewrites it and sends SIGHUP (lb re-reads the same file)."""

    def write_config(self, ids: tuple[int, ...] = BACKEND_IDS) -> Path:
        cfg = self.tmp / "lb-reload.toml"
        blocks = "".join(f'\n[[backends]]\nid = {i}\nhost = "127.0.0.1"\nport = {self.backends.ports[i - 1]}\n'
                         for i in ids)
        write_atomic(cfg, f"# lb under test, reload scenario: backends {list(ids)}\n{blocks}")
        return cfg

    def start(self) -> None:
        super().start()
        self.reader = LogReader(self.logfile)
        self.reader.lines()  # the startup line
        self.generation = 1
        self.said: list[str] = []  # every line lb logged since

    def reload(self, ids: tuple[int, ...], deadline: float) -> tuple[bool, str]:
        self.write_config(ids)
        os.kill(self.p.pid, signal.SIGHUP)
        answer: list[tuple[bool, str]] = []

        def answered() -> bool:
            for line in self.reader.lines():
                self.said.append(line)
                m = re.search(r"config reloaded from .*generation (\d+)", line)
                if m and int(m.group(1)) > self.generation and not answer:
                    self.generation = int(m.group(1))
                    answer.append((True, line.split("SIGHUP received: ", 1)[-1]))
                elif ("reload failed" in line or "reload refused" in line) and not answer:
                    answer.append((False, line))
            return bool(answer)

        wait_for(answered, deadline)
        return answer[0] if answer else (False, "no reload line in lb's log yet")

    def done_count(self) -> int:
        """lb's own count: its `config reloaded ... generation N` lines."""
        self.said += self.reader.lines()
        return sum(1 for ln in self.said if "config reloaded from" in ln)

    def log_lines(self) -> list[str]:
        self.said += self.reader.lines()
        return [ln for ln in self.said if "config reloaded from" not in ln]


class ReloadNginx(Nginx):
    """nginx: the config rewritten, SIGHUP to the master (`nginx -s reload`); done once a new worker runs."""

    def start(self) -> None:
        super().start()
        self.seen: set[int] = set()
        wait_for(lambda: bool(children(self.p.pid)), time.monotonic() + 5)
        self.seen = children(self.p.pid)

    def config_text(self, ids: tuple[int, ...] = BACKEND_IDS) -> str:
        # notice: the master then logs each worker it starts (done_count); no other line per request or connection
        return super().config_text(ids).replace("error_log stderr error;", "error_log stderr notice;")

    def reload(self, ids: tuple[int, ...], deadline: float) -> tuple[bool, str]:
        write_atomic(self.tmp / "nginx-proxy" / "nginx.conf", self.config_text(ids))
        os.kill(self.p.pid, signal.SIGHUP)
        return new_worker(self, deadline)

    def done_count(self) -> int:
        """nginx's own count: the workers its master started (`start worker process N`), less the first."""
        return max(0, sum(1 for ln in read_lines(self.logfile) if re.search(r"start worker process \d+", ln)) - 1)

    def log_lines(self) -> list[str]:
        return read_lines(self.logfile)


def new_worker(target, deadline: float) -> tuple[bool, str]:
    """Done once the master has a worker it did not have before (its old ones may still be finishing)."""
    fresh: set[int] = set()

    def check() -> bool:
        fresh.update(children(target.p.pid) - target.seen)
        return bool(fresh)

    if wait_for(check, deadline):
        target.seen |= fresh
        return True, f"new worker {sorted(fresh)}"
    return False, f"no new worker{'' if target.alive() else ' (master exited)'}"


def read_lines(path: Path | None) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines() if path else []
    except OSError:
        return []


def soft_stopped(log: Path) -> bool:
    """An HAProxy process logs `Proxy fe stopped` when it stops listening (soft stop: -sf, or a reload's old worker)."""
    return any("Proxy fe stopped" in ln for ln in read_lines(log))


class ReloadHAProxy(HAProxy):
    """HAProxy, reloaded the classic way (a new process with `-sf <old pids>`, BENCH_HAPROXY_RELOAD=sf) or in
    master-worker mode (SIGUSR2 to the master, =master). Every process started is stopped at the end."""

    def __init__(self, *a, mode: str = "sf"):
        super().__init__(*a)
        self.mode = mode
        self.all = []  # every haproxy process started (sf: one per reload)
        self.logs: list[Path] = []
        self.seen: set[int] = set()

    def start(self) -> None:
        self.port = free_port()
        write_atomic(self.tmp / "haproxy.cfg", self.config_text())
        self.p, self.logfile = self.procs.start("haproxy", self.argv(), PROXY_CORE)
        self.all, self.logs = [self.p], [self.logfile]
        if self.mode == "master":  # the master's worker(s) so far: a reload is done once a new one runs
            wait_for(lambda: bool(children(self.p.pid)), time.monotonic() + 5)
            self.seen = children(self.p.pid)

    def argv(self) -> list[str]:
        return ["haproxy", *(["-W"] if self.mode == "master" else []), "-db", "-f", str(self.tmp / "haproxy.cfg")]

    def pids(self) -> list[int]:
        return [pid for p in self.all if p.poll() is None for pid in proc_tree(p.pid)]

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def stop(self) -> None:
        for p in reversed(self.all):
            self.procs.stop(p)
        self.all, self.p = [], None

    def reload(self, ids: tuple[int, ...], deadline: float) -> tuple[bool, str]:
        write_atomic(self.tmp / "haproxy.cfg", self.config_text(ids))
        if self.mode == "master":
            os.kill(self.p.pid, signal.SIGUSR2)
            return new_worker(self, deadline)
        t0 = time.monotonic()
        old = [p for p in self.all if p.poll() is None]
        serving = self.logfile  # the process the new one takes over from
        p, logfile = self.procs.start("haproxy", self.argv() + ["-sf", *(str(o.pid) for o in old)], PROXY_CORE)
        self.all.append(p)
        self.logs.append(logfile)
        self.p, self.logfile = p, logfile
        # the new process signals the old ones once it is ready (bound); the one that served logs its soft stop
        # (read from its log: cheap, where /proc/net/tcp takes ~60 ms to read on this shared machine)
        if wait_for(lambda: p.poll() is not None or soft_stopped(serving), deadline) and p.poll() is None:
            return True, f"pid {p.pid} took over from {[o.pid for o in old]}"
        if p.poll() is not None:
            return False, f"new haproxy exited with {p.returncode}: {tail(logfile, 3)}"
        return False, f"pid {p.pid}: the old process has not stopped yet"

    def done_count(self) -> int:
        """HAProxy's own count. Master-worker: its master's `Loading success.` lines, less the start. -sf: the
        processes a newer one stopped (each logs `Proxy fe stopped` on its soft stop), i.e. all but the last that
        ran (read before the end of the run stops the last)."""
        if self.mode == "master":
            return max(0, sum(1 for ln in read_lines(self.logs[0]) if "Loading success" in ln) - 1)
        return sum(1 for path in self.logs[:-1] if soft_stopped(path))

    def log_lines(self) -> list[str]:
        return [ln for path in self.logs for ln in read_lines(path)]


def make_reload_target(name: str, procs, tmp: Path, backends: Backends, lb_binary: Path, haproxy_mode: str) -> Target:
    if name == "lb":
        return ReloadLb(procs, tmp, backends, binary=lb_binary)
    if name == "haproxy":
        return ReloadHAProxy(procs, tmp, backends, mode=haproxy_mode)
    if name == "nginx":
        return ReloadNginx(procs, tmp, backends)
    raise ValueError(f"the reload scenario has no target {name!r} (only the proxies)")


# ---------------------------------------------------------------------------------------------------------------------
# The run


def reloader(target, t0: float, end: float, every: float, stop: threading.Event, out: list[dict]) -> None:
    """Reload at t0 + every, t0 + 2 every, ... before end: config B (backend 3 removed) first, then A, and so on."""
    k = 0
    while True:
        k += 1
        at = t0 + every * k
        if at > end - 0.001 or stop.wait(max(0.0, at - time.monotonic())):
            return
        ids = CONFIG_B if k % 2 else BACKEND_IDS
        t = time.monotonic()
        try:
            done, said = target.reload(ids, t + every * 0.9)
        except Exception as e:  # noqa: BLE001 - recorded, and the load goes on
            done, said = False, f"{type(e).__name__}: {e}"
        out.append({"at_s": round(t - t0, 3), "backends": list(ids), "done": done,
                    "ms": round((time.monotonic() - t) * 1000, 1), "said": said})


def summarize_log(lines: list[str], limit: int = 12) -> list[str]:
    """The log lines, the same message once with its count (pids, numbers and times folded), most frequent first."""
    counts: dict[str, tuple[int, str]] = {}
    for ln in lines:
        if not ln.strip():
            continue
        key = re.sub(r"\d+", "N", ln)
        n, first = counts.get(key, (0, ln))
        counts[key] = (n + 1, first)
    top = sorted(counts.values(), key=lambda x: -x[0])[:limit]
    return [f"{n}× {first}" if n > 1 else first for n, first in top]


def run_reload(target: Target, backends: Backends, args) -> dict:
    conns, every = args.reload_conns, args.reload_every
    if args.warmup > 0:  # unmeasured: the same load without reloads (fills the backend pools)
        t = time.monotonic()
        LoadClient(target.port, conns).run(t, t + args.warmup)
    quiet = wait_quiet(target, backends, args, MEM_QUIET_WAIT)
    if not target.alive():
        raise RuntimeError(target.died())
    reloads: list[dict] = []
    stop = threading.Event()
    s0 = snapshot(target, backends)
    t0 = time.monotonic()
    thread = threading.Thread(target=reloader, args=(target, t0, t0 + args.duration, every, stop, reloads),
                              name="reloader", daemon=True)
    # the client thread is busy all along: let the reloader have the GIL within 0.5 ms when it wants it (the default
    # 5 ms switch interval delays each of its steps, and so the signal and the times it sees)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    thread.start()
    try:
        r = LoadClient(target.port, conns).run(t0, t0 + args.duration)
    finally:
        stop.set()
        thread.join(10)
        sys.setswitchinterval(switch)
    s1 = snapshot(target, backends)
    r["quiet_before_pct"] = quiet
    r["other_load_pct"] = other_load(s0, s1, (s1["proxy"] - s0["proxy"]) + (s1["backends"] - s0["backends"])
                                     + (s1["rusage"] - s0["rusage"]))
    time.sleep(0.2)  # the last reload's lines
    r["reloads"] = target.done_count()
    r["reload_attempts"] = len(reloads)
    r["reloads_in_time"] = sum(1 for x in reloads if x["done"])
    r["reload_ms"] = median([x["ms"] for x in reloads if x["done"]])
    r["reload_log"] = reloads
    r["errors"] = {}
    if not target.alive():
        r["errors"]["proxy died"] = 1
        r["note"] = target.died()
    if r["reloads"] < len(reloads):
        r["errors"]["reloads not done"] = len(reloads) - r["reloads"]
    if r["reloads_in_time"] < r["reloads"]:
        r["errors"][f"reloads done later than {every * 0.9:g} s"] = r["reloads"] - r["reloads_in_time"]
    r["proxy_log"] = summarize_log(target.log_lines())
    if target.name == "lb" and (r["failed_requests"] or r["reset_mid"]):
        log(f"    lb: {r['failed_requests']} failed, {r['reset_mid']} reset mid-request: {r['kinds']}")
        for ln in r["proxy_log"]:
            log(f"      lb log: {ln}")
    return r
