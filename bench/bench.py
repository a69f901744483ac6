#!/usr/bin/env python3
"""Side-by-side benchmark of lb, HAProxy and nginx (as a proxy), driven by bench/run.

Python 3.11 stdlib only. bench/run installs the tools, builds lb, raises the fd limit, makes the temp dir and runs
this file pinned to core 1; this file starts the backends and the proxies, runs the load, measures and prints.

Every process started here is recorded in TMP/pids (so that bench/run's EXIT trap can kill whatever is left if this
process dies) and stopped here in a `finally`, also on SIGTERM/SIGINT. All traffic goes to 127.0.0.1.

The work is done by the modules of bench/benchlib (see its __init__): this file is the command line and main(): the
settings from the environment, the open-files limit, signals, then the backends, the rounds, and the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchlib.common import DEFAULT_SCENARIOS, DIRECT_PROTOCOL_SCENARIOS, MEMORY_SCENARIOS, PROTOCOL_GROUPS
from benchlib.common import PROTOCOL_SCENARIOS, RELOAD_SCENARIOS, SCENARIOS, TARGETS, StartError, expand_scenarios
from benchlib.common import log, median, parse_duration
from benchlib.noise import KSOFTIRQD
from benchlib.procfs import ksoftirqd_pids
from benchlib.procs import Procs, set_pidfile
from benchlib.report import render, summarize
from benchlib.runs import run_rounds
from benchlib.targets import Backends, haproxy_maxconn, set_nofile


def versions(lb: Path, protocols: bool = False) -> tuple[str, str]:
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
    if protocols:  # the protocol scenarios' clients (and TLS library of wrk, s_time and h2load)
        wrk += f"; h2load {first_line(['h2load', '--version']).split()[-1]}; {first_line(['openssl', 'version'])}"
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
    args.reload_conns = int(env.get("BENCH_RELOAD_CONNS", "50"))
    args.reload_every = parse_duration(env.get("BENCH_RELOAD_EVERY", "0.5s"))
    args.haproxy_reload = env.get("BENCH_HAPROXY_RELOAD", "sf")
    if args.haproxy_reload not in ("sf", "master"):
        raise SystemExit(f"bench: BENCH_HAPROXY_RELOAD must be sf or master, not {args.haproxy_reload!r}")
    args.burst_freeze = env.get("BENCH_BURST_FREEZE", "1") not in ("0", "", "no", "false")
    args.max_other_load = float(env.get("BENCH_MAX_OTHER_LOAD", "10"))
    args.quiet_wait = parse_duration(env.get("BENCH_QUIET_WAIT", "10s" if args.quick else "30s"))
    args.retries = int(env.get("BENCH_RETRIES", "0" if args.quick else "2"))
    scenarios = [s.strip() for s in env.get("BENCH_SCENARIOS", ",".join(DEFAULT_SCENARIOS)).split(",") if s.strip()]
    scenarios = expand_scenarios(scenarios)  # tls, h2, tcp: two tables each
    targets = [t.strip() for t in env.get("BENCH_TARGETS", ",".join(TARGETS)).split(",") if t.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"bench: unknown scenario {s!r} (known: {', '.join(SCENARIOS)}; groups: "
                             f"{', '.join(PROTOCOL_GROUPS)})")
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
    set_nofile(nofile)
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
    set_pidfile(args.tmp / "pids")
    # the reload scenario reloads proxies: `direct` has nothing to reload; the backends speak neither TLS nor HTTP/2
    no_direct = RELOAD_SCENARIOS + tuple(x for x in PROTOCOL_SCENARIOS if x not in DIRECT_PROTOCOL_SCENARIOS)
    results: dict = {s: {t: [] for t in targets if not (s in no_direct and t == "direct")} for s in scenarios}
    try:
        backends = Backends(procs, args.tmp)
        backends.start()
        log(f"backends (one nginx, pid {backends.p.pid}) on ports {backends.ports}")
        run_rounds(results, scenarios, targets, procs, backends, args)
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
    cpu_results = {k: v for k, v in results.items() if k not in MEMORY_SCENARIOS + RELOAD_SCENARIOS}
    loads = [r["other_load_pct"] for pt in cpu_results.values() for runs in pt.values() for r in runs
             if "other_load_pct" in r]
    steals = [r["steal_pct"] for pt in results.values() for runs in pt.values() for r in runs if "steal_pct" in r]
    mem_loads = [r["other_load_pct"] for k, pt in results.items() if k in MEMORY_SCENARIOS for runs in pt.values()
                 for r in runs if "other_load_pct" in r]
    reload_loads = [r["other_load_pct"] for k, pt in results.items() if k in RELOAD_SCENARIOS
                    for runs in pt.values() for r in runs if "other_load_pct" in r]
    vers, lbv = versions(args.lb, protocols=any(s in PROTOCOL_SCENARIOS for s in scenarios))
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
        "reload_load_median": median(reload_loads) or 0.0,
        "reload_load_max": max(reload_loads, default=0.0),
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
    failed = any(s["failures"] for pt in summary.values() for s in pt.values())  # skipped runs are not failures
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
