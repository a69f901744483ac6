"""Readings from /proc: the CPU ticks and RSS of processes, their TCP sockets by state, the kernel's TCP memory and
pressure, and the machine's busy ticks.

Why so: standard library only, so /proc is read directly. A target's figures are summed over its process tree
(nginx: master + worker; all threads). Sockets are matched by inode, from /proc/<pid>/fd against /proc/net/tcp and
tcp6, which gives their ports and state without ss(8); a socket a process has closed has no inode and is not counted.
Loopback networking runs in softirq and is charged to no process: system_busy_ticks leaves irq/softirq out, and
ksoftirqd's own time is counted with the backends (see noise).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
