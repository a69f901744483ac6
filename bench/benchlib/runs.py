"""Runs and rounds: one measured run of a scenario on a target, repeated while the machine was noisy, and the
rounds of every scenario on every target.

Why so: every run starts a fresh target and stops it in a `finally` (a proxy's state must not carry over from one
run to the next), and checks that no client socket was left open here. A run that fails (the target would not
start, died, or the load failed) is recorded with its reason, not fatal: the tables show it as FAILED (a target
that lacks what a protocol scenario needs, lb while it gains TLS, HTTP/2 and TCP mode, as skipped); only the
backends dying (raised here, caught in main) ends the benchmark. A CPU run noisier than BENCH_MAX_OTHER_LOAD is
repeated up to BENCH_RETRIES times and the quietest attempt kept; the memory scenarios are not repeated (memory
hardly moves with CPU noise). The order of the targets rotates every round, so that no target always runs first or
right after another.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from .common import MEMORY_SCENARIOS, PROTOCOL_SCENARIOS, RELOAD_SCENARIOS, SCENARIOS, Scenario, Skip, StartError, log
from .h2load import run_h2
from .handshake import run_handshakes
from .load import run_load
from .memory import run_burst, run_idle, run_slowread, wait_settled
from .procfs import socket_inodes
from .procs import Procs
from .protocols import make_proto_target
from .reload import make_reload_target, run_reload
from .report import fmt_conns, fmt_num, fmt_us
from .targets import Backends, make_target, tail
from .transfer import run_stream


def one_run(name: str, sc: Scenario, procs: Procs, tmp: Path, backends: Backends, args) -> dict:
    """One measured run; repeated (up to BENCH_RETRIES times) while other processes used more than
    BENCH_MAX_OTHER_LOAD of a core during it. The quietest attempt is kept."""
    best = None
    # memory hardly moves with CPU noise; reload counts failures
    retries = 0 if sc.name in MEMORY_SCENARIOS + RELOAD_SCENARIOS else args.retries
    for attempt in range(1, retries + 2):
        r = one_attempt(name, sc, procs, tmp, backends, args)
        r["attempts"] = attempt
        if "failed" in r or "skipped" in r:
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
    if sc.name in RELOAD_SCENARIOS:
        target = make_reload_target(name, procs, tmp, backends, args.lb, args.haproxy_reload)
    elif sc.name in PROTOCOL_SCENARIOS:
        target = make_proto_target(name, sc.name, procs, tmp, backends, args.lb)
    else:
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
        if sc.name == "reload":
            return run_reload(target, backends, args)
        if sc.name == "tls_handshake":
            r = run_handshakes(target, backends, sc, args)
        elif sc.name in ("h2_tls", "h2c"):
            r = run_h2(target, backends, sc, args)
        elif sc.name == "tcp_stream":
            r = run_stream(target, backends, sc, args)
        else:
            r = run_load(target, backends, sc, args)  # and tls_keepalive (https), tcp_connect (close, via L4)
        if getattr(target, "negotiated", None):
            r["negotiated"] = target.negotiated
        return r
    except Skip as e:
        log(f"SKIPPED {name}/{sc.name}: {e}")
        return {"skipped": str(e)}
    except (StartError, RuntimeError, ValueError, subprocess.TimeoutExpired, asyncio.TimeoutError, OSError) as e:
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, StartError) else str(e)
        log(f"FAILED {name}/{sc.name}: {msg}")
        return {"failed": msg.replace("; log tail:", "")}
    finally:
        target.stop()
        left = len(socket_inodes([os.getpid()])) - own_sockets
        if left > 0:  # the clients close theirs in a `with`: this would be a bug here
            log(f"WARNING: {name}/{sc.name} left {left} socket(s) open in the benchmark process")


def run_rounds(results: dict, scenarios: list[str], targets: list[str], procs: Procs, backends: Backends,
               args) -> None:
    """args.rounds rounds of every scenario on every target; each run appended to results[scenario][target]."""
    n_runs = args.rounds * sum(len(results[s]) for s in scenarios)
    i = 0
    for rnd in range(args.rounds):
        # rotate the order each round so that no proxy always runs first or right after another
        order = targets[rnd % len(targets):] + targets[: rnd % len(targets)]
        for sname in scenarios:
            sc = SCENARIOS[sname]
            for t in order:
                if t not in results[sname]:  # direct in reload: nothing to reload
                    continue
                i += 1
                log(f"[{i}/{n_runs}] round {rnd + 1}/{args.rounds} {sname:7} {t}")
                if backends.p.poll() is not None:
                    raise StartError(f"backend nginx died:\n{tail(backends.logfile)}")
                r = one_run(t, sc, procs, args.tmp, backends, args)
                r["round"] = rnd + 1
                results[sname][t].append(r)
                if "failed" not in r and "skipped" not in r:
                    log_run(sname, r)


def log_run(sname: str, r: dict) -> None:
    """A run's figures on stderr, as it ends (a failed run logged its reason already)."""
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
    elif sname == "reload":
        log(f"    {r['reloads']}/{r['reload_attempts']} reloads (median {fmt_num(r['reload_ms'], 1)} ms), "
            f"{r['requests']:,} requests ({r['rps']:,.0f}/s), {r['failed_requests']} failed ({r['reset_mid']} reset "
            f"mid-request), {r['closed_idle']} closed between requests ({r['closed_announced']} announced), "
            f"split {r['split']}: {r['kinds'] or 'nothing else'}; other load {r['other_load_pct']:.0f}%")
    elif sname == "tcp_stream":
        log(f"    {r['transfers']} transfers of 1 GiB, {fmt_num(r['mib_s'])} MiB/s, CPU {fmt_num(r['cpu_ms_per_gib'])} "
            f"ms/GiB, RSS {r['rss_kib']} KiB, errors {r['errors'] or 0}, other load {r['other_load_pct']:.0f}%")
    elif sname == "idle":
        log(f"    {r['idle_conns']} idle, RSS {r['rss_before_kib']} -> {r['rss_kib']} KiB, "
            f"{fmt_num(r['kib_per_conn'], 2)} KiB/conn, errors {r['errors'] or 0}, "
            f"other load {r['other_load_pct']:.0f}%")
    else:
        log(f"    {r['rps']:,.0f} req/s, p50 {fmt_us(r['p50_us'])}, p99 {fmt_us(r['p99_us'])}, "
            f"CPU {fmt_num(r['cpu_us_per_req'], 1)} µs/req, RSS {r['rss_kib']} KiB, "
            f"errors {r['errors'] or 0}, split {r['backend_split']}, "
            f"other load {r['other_load_pct']:.0f}%")
