"""The clients of the memory scenarios: asyncio for idle, plain sockets and epoll for burst and slowread.

Why so: idle only needs its connections to exist, each after one whole request and answer, so asyncio opens them
100 at a time. burst and slowread need their requests to leave in one tight loop (run SCHED_FIFO, so that the
backends sharing this core do not preempt it), so they use plain non-blocking sockets, read back with epoll. Clients
is a context manager: every socket is closed when the scenario ends, also on an exception (a socket with unread data
sends a reset, so the proxy learns at once).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import select
import socket
import struct
import termios
import time

from .common import median


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
