"""The memory scenarios: idle, burst and slowread (the proxy's RSS, its backend connections, the kernel's TCP
buffers).

Why so: each starts with the same unmeasured warm-up as the small scenario (what a proxy allocates once is not
counted per connection), then only a short wait for a quiet machine (memory hardly moves with CPU noise; runs does
not repeat them). Before their target starts, the previous one must be gone: the backends hold none of its
connections and the kernel's TCP buffers have drained (wait_settled), or e.g. the previous target's stalled
downloads, still being reset, would count here. burst sends its requests while the target is frozen (SIGSTOP), so
that it finds them all waiting when it resumes, and resumes it in a `finally`. The readings are taken at fixed
delays (3 s and 8 s after the requests, 5 s after the answers, 5 s after the close), the same for every target.
"""

from __future__ import annotations

import asyncio
import signal
import time

from .clients import Clients, idle_client
from .common import MEM_QUIET_WAIT, SCENARIOS, SLOW_PATH, SLOW_RCVBUF, StartError, log
from .load import run_wrk
from .noise import other_load, snapshot, wait_quiet
from .procfs import CLK_TCK, accept_queue, cpu_ticks, kernel_tcp_mem_kib, rss_kib, sockets_by_state, tcp_memory_pressure
from .procs import signal_all, wait_stopped
from .targets import Backends, Target, http_get

SETTLE_TIMEOUT = 15.0  # at most this long (s) to wait for the previous target's connections to be gone


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
