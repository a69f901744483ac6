"""The processes this benchmark starts (backends, proxies, wrk): their bookkeeping, stopping and signalling.

Why so: every process started here is recorded in TMP/pids, rewritten whole on every change so that no stale pid
stays, so that bench/run's EXIT trap can kill whatever is left if this Python process dies. Each runs in its own
session, pinned with taskset, its output in TMP/<name>.log. Stopped means gone: SIGTERM, then SIGKILL for the whole
tree (nginx's worker too), and a wait until none of its processes runs any more, because the next run must not start
while this one's processes still exit and close their sockets. signal_all and wait_stopped freeze and resume a
target (burst).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .common import log

PIDFILE: Path | None = None  # set in main(): TMP/pids
LIVE_PIDS: set[int] = set()


def set_pidfile(path: Path) -> None:
    """main() names TMP/pids once the temp dir is known; until then nothing is written."""
    global PIDFILE
    PIDFILE = path


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
