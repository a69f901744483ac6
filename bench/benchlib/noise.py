"""Noise control on a shared machine: how much CPU processes outside this benchmark use, and waiting until they
use little.

Why so: other sessions compile and test on this machine, and req/s and latency move with them (CPU per request and
memory hardly do). The load of the others is the machine's busy ticks (/proc/stat) minus ours: the target's, the
backends', ksoftirqd's (the kernel's network work for this traffic, when deferred), and this process's and its
children's (wrk) from getrusage. Each run first waits for that to fall to BENCH_MAX_OTHER_LOAD, for at most
BENCH_QUIET_WAIT, and records it during the run; runs repeats the noisy ones.
"""

from __future__ import annotations

import resource
import time

from .common import log
from .procfs import CLK_TCK, cpu_ticks, system_busy_ticks
from .targets import Backends, Target


def other_load(t0: dict, t1: dict, ours_ticks: float) -> float:
    """CPU used on the machine by processes that are not part of this run, in % of one core."""
    elapsed = t1["wall"] - t0["wall"]
    busy = t1["busy"] - t0["busy"]
    return max(0.0, (busy - ours_ticks) / CLK_TCK / elapsed * 100) if elapsed > 0 else 0.0


KSOFTIRQD: list[int] = []  # set in main(): the ksoftirqd threads' pids


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
