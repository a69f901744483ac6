"""The report: the runs summarized per scenario and target, and rendered as the Markdown tables.

Why so: every column is the median over the rounds, computed on its own (req/s also shows its min-max range); errors
are summed over all rounds; the ratios are those of the medians, lb against each peer. A failed run shows as a FAILED
row with its reason, and its log under Failures. burst and slowread record many figures each: their summary is the
median of every number they recorded (memory_medians), and their tables have a renderer of their own. The output
format is what bench/README and bench/results/*.md quote and compare: change it with them. summarize's result also
goes into the JSON next to the Markdown.
"""

from __future__ import annotations

import statistics

from .certs import negotiated_text
from .common import LOAD_CORE, MEM_QUIET_WAIT, MEMORY_SCENARIOS, PROTOCOL_SCENARIOS, PROXY_CORE, RELOAD_SCENARIOS
from .common import SCENARIOS, SLOW_PATH
from .common import SLOW_RCVBUF, median
from .common import wrk_duration
from .procfs import tcp_mem_limits_text


def fmt_us(us: float | None) -> str:
    if us is None:
        return "–"
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def fmt_kib(kib: float | None) -> str:
    if kib is None:
        return "–"
    return f"{kib / 1024:,.1f} MiB" if kib >= 10240 else f"{kib:,.0f} KiB"


def fmt_num(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def fmt_delta_kib(kib: float | None) -> str:
    if kib is None:
        return "–"
    return ("+" if kib >= 0 else "−") + fmt_kib(abs(kib))


def fmt_conns(c: dict | None) -> str:
    """Backend connections by state: `ESTABLISHED / CLOSE_WAIT` (+ any other state by name); direct: –."""
    if c is None:
        return "–"
    est, cw = c.get("ESTABLISHED", 0), c.get("CLOSE_WAIT", 0)
    text = f"{est:,.0f} / {cw:,.0f}"
    others = [f"{v:,.0f} {k}" for k, v in c.items() if k not in ("ESTABLISHED", "CLOSE_WAIT") and v]
    return text + (" + " + ", ".join(others) if others else "")


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "–"


def errors_text(runs: list[dict]) -> str:
    total: dict[str, int] = {}
    for r in runs:
        for k, v in r.get("errors", {}).items():
            total[k] = total.get(k, 0) + v
    failed = sum(1 for r in runs if "failed" in r)
    parts = [f"{k} {v:,}" for k, v in total.items()]
    if failed:
        parts.insert(0, f"**{failed} run(s) failed**")
    return ", ".join(parts) if parts else "0"


def split_text(runs: list[dict]) -> str:
    tot = [0, 0, 0]
    for r in runs:
        for i, c in enumerate(r.get("backend_split", [])):
            tot[i] += c
    s = sum(tot)
    return "/".join(f"{100 * c / s:.0f}" for c in tot) if s else "–"


def median_conns(xs: list) -> dict[str, float] | None:
    """The median per TCP state of backend_conns() counts (a state missing from a run counts 0)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    states = sorted({k for x in xs for k in x})
    return {k: statistics.median([x.get(k, 0) for x in xs]) for k in states}


def memory_medians(ok: list[dict]) -> dict:
    """burst/slowread: the median of every number the runs recorded, and per state of every connection count."""
    out: dict = {}
    keys = {k for r in ok for k in r}
    for k in sorted(keys - {"round", "attempts"}):
        vals = [r.get(k) for r in ok]
        if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in vals):
            out[k] = median(vals)
        elif k.startswith("backend_"):
            out[k] = median_conns(vals)
    out["probes"] = [(r.get("probe"), r.get("probe_ms")) for r in ok if "probe" in r]
    out["tcp_pressure"] = [r.get("tcp_pressure_8s") for r in ok if "tcp_pressure_8s" in r]
    return out


def summarize(results: dict, args) -> dict:
    summary: dict = {}
    for sname, per_target in results.items():
        summary[sname] = {}
        for t, runs in per_target.items():
            ok = [r for r in runs if "failed" not in r and "skipped" not in r]
            if sname in RELOAD_SCENARIOS:
                summary[sname][t] = reload_summary(runs, ok)
                continue
            if sname in MEMORY_SCENARIOS:
                summary[sname][t] = {
                    "runs": len(runs),
                    "ok": len(ok),
                    **memory_medians(ok),
                    "errors": errors_text(runs),
                    "failures": [r["failed"] for r in runs if "failed" in r],
                }
                continue
            summary[sname][t] = {
                "runs": len(runs),
                "ok": len(ok),
                "rps": median([r.get("rps") for r in ok]),
                "rps_min": min((r["rps"] for r in ok if "rps" in r), default=None),
                "rps_max": max((r["rps"] for r in ok if "rps" in r), default=None),
                "p50_us": median([r.get("p50_us") for r in ok]),
                "p99_us": median([r.get("p99_us") for r in ok]),
                "cpu_us_per_req": median([r.get("cpu_us_per_req") for r in ok]),
                "rss_kib": median([r.get("rss_kib") for r in ok]),
                "rss_before_kib": median([r.get("rss_before_kib") for r in ok]),
                "kib_per_conn": median([r.get("kib_per_conn") for r in ok]),
                "open_s": median([r.get("open_s") for r in ok]),
                "requests": sum(r.get("requests", 0) for r in ok),
                "errors": errors_text(runs),
                "split": split_text(ok),
                "failures": [r["failed"] for r in runs if "failed" in r],
                "other": median([r.get("other_load_pct") for r in ok]),
            }
            if sname in PROTOCOL_SCENARIOS:
                summary[sname][t].update(protocol_extras(runs, ok))
    return summary


def protocol_extras(runs: list[dict], ok: list[dict]) -> dict:
    """What the protocol scenarios record beyond the CPU scenarios' columns (medians over rounds), why a target was
    skipped, and what TLS it negotiated (the first run's: it is the same every round)."""
    out = {k: median([r.get(k) for r in ok])
           for k in ("mib_s", "s_per_gib", "cpu_ms_per_gib", "bytes_per_conn", "client_cpu_us_per_conn")}
    out["transfers"] = sum(r.get("transfers", 0) for r in ok)
    out["skipped"] = next((r["skipped"] for r in runs if "skipped" in r), None)
    out["negotiated"] = next((r["negotiated"] for r in ok if r.get("negotiated")), None)
    out["h2load_tls"] = next((r["h2load_tls"] for r in ok if r.get("h2load_tls")), None)
    return out


def render(summary: dict, meta: dict, args) -> str:
    lines = []
    w = lines.append
    w(f"# lb vs HAProxy vs nginx — {meta['date']}")
    w("")
    w(f"- machine: {meta['machine']}")
    w(f"- versions: {meta['versions']}")
    w(f"- lb: {meta['lb_commit']}")
    sizes = {"idle": f"idle: {args.idle_conns:,} connections", "burst": f"burst: {args.burst_conns:,} connections",
             "slowread": f"slowread: {args.slowread_conns:,} downloads"}
    sizes = "".join(f", {v}" for k, v in sizes.items() if k in summary)
    w(f"- mode: {meta['mode']}: {args.rounds} round(s), {wrk_duration(args.duration)} per run "
      f"(+{args.warmup:g}s unmeasured warm-up){sizes}; medians over rounds")
    w(f"- proxies pinned to core {PROXY_CORE}; wrk, the idle client and the backends (one nginx) to core {LOAD_CORE}")
    w(f"- wall time: {meta['wall']}")
    cpu_scenarios = [k for k in summary if k not in MEMORY_SCENARIOS + RELOAD_SCENARIOS]
    mem_scenarios = [k for k in summary if k in MEMORY_SCENARIOS]
    if cpu_scenarios:
        w(f"- other load on the machine during the measured runs (CPU not used by the proxy, backends or wrk, "
          f"% of one core): median {meta['other_load_median']:.0f}%, max {meta['other_load_max']:.0f}%"
          f"; steal: max {meta['steal_max']:.0f}%")
        w(f"- noise control: each run waits (up to {args.quiet_wait:.0f} s) for the machine to be quiet (other "
          f"processes ≤ {args.max_other_load:g}% of a core) and is repeated up to {args.retries} time(s) if it was not, "
          f"keeping the quietest attempt: {meta['reruns']} repeat(s); {meta['noisy']} kept run(s) still above the "
          "threshold")
    if mem_scenarios:
        w(f"- {' and '.join(mem_scenarios)} measure memory: each waits at most {MEM_QUIET_WAIT:.0f} s for a quiet "
          f"machine and is not repeated; other load during them (% of one core): median "
          f"{meta['mem_load_median']:.0f}%, max {meta['mem_load_max']:.0f}%")
    if "reload" in summary:
        w(f"- reload: {args.reload_conns} keep-alive connections for {args.duration:g} s per run, a reload every "
          f"{args.reload_every:g} s; it waits at most {MEM_QUIET_WAIT:.0f} s for a quiet machine and is not repeated; "
          f"other load during it (% of one core): median {meta.get('reload_load_median', 0):.0f}%, max "
          f"{meta.get('reload_load_max', 0):.0f}%")
    if cpu_scenarios:
        w("")
        w("Columns: req/s is the median over rounds (range min–max in brackets); p50/p99 are wrk's latency "
          "percentiles (medians over rounds); CPU µs/req is the proxy's user+sys time over the run divided by the "
          "requests completed; RSS is the proxy's resident memory after the run (nginx: master + worker); errors are "
          "wrk's socket errors and non-2xx responses summed over all rounds; split is the share of requests each "
          "backend logged (%); other load is the CPU that processes outside the benchmark used during the runs "
          "(median, % of one core). `direct` is wrk straight to backend 1 (its CPU and RSS are the backend nginx's): "
          "the ceiling.")
    for sname, per_target in summary.items():
        sc = SCENARIOS[sname]
        w("")
        if sname in PROTOCOL_SCENARIOS:
            render_protocol(w, sname, per_target)
            continue
        if sname == "burst":
            render_burst(w, per_target, args)
            continue
        if sname == "slowread":
            render_slowread(w, per_target, args)
            continue
        if sname == "reload":
            render_reload(w, per_target, args)
            continue
        if sname == "idle":
            w(f"## idle — {args.idle_conns:,} keep-alive client connections, each made one request and now waits")
            w("")
            w("| target | RSS before | RSS with all idle | KiB per idle conn | open+request time | idle conns | errors "
              "| other load |")
            w("|---|---:|---:|---:|---:|---:|---|---:|")
            for t, s in per_target.items():
                if not s["ok"]:
                    w(f"| {t} | FAILED | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} | |")
                    continue
                w(f"| {t} | {fmt_kib(s['rss_before_kib'])} | {fmt_kib(s['rss_kib'])} | {fmt_num(s['kib_per_conn'], 2)} "
                  f"| {fmt_num(s['open_s'], 2)} s | {s['requests'] // max(1, s['ok']):,} | {s['errors']} "
                  f"| {fmt_num(s['other'])}% |")
            lbk = per_target.get("lb", {}).get("kib_per_conn")
            ratios = []
            for other in ("haproxy", "nginx"):
                if other in per_target:
                    ratios.append(f"lb/{other}: KiB per idle connection ×{ratio(lbk, per_target[other]['kib_per_conn'])}")
            if ratios:
                w("")
                w("; ".join(ratios) + "  ")
            w("(direct: the backend nginx's own growth)")
            continue
        w(f"## {sname} — {sc.title}")
        w("")
        w("| target | req/s | p50 | p99 | CPU µs/req | RSS | errors | split | other load |")
        w("|---|---:|---:|---:|---:|---:|---|---|---:|")
        for t, s in per_target.items():
            if not s["ok"]:
                w(f"| {t} | FAILED | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} | | |")
                continue
            rng = f" ({fmt_num(s['rps_min'])}–{fmt_num(s['rps_max'])})" if s["ok"] > 1 else ""
            w(f"| {t} | {fmt_num(s['rps'])}{rng} | {fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} "
              f"| {fmt_num(s['cpu_us_per_req'], 1)} | {fmt_kib(s['rss_kib'])} | {s['errors']} | {s['split']} "
              f"| {fmt_num(s['other'])}% |")
        ratios = []
        lb = per_target.get("lb")
        for other in ("haproxy", "nginx"):
            if lb and other in per_target:
                o = per_target[other]
                ratios.append(f"lb/{other}: req/s ×{ratio(lb['rps'], o['rps'])}, "
                              f"CPU µs/req ×{ratio(lb['cpu_us_per_req'], o['cpu_us_per_req'])}")
        if ratios:
            w("")
            w("; ".join(ratios))
    failures = [(sname, t, f) for sname, pt in summary.items() for t, s in pt.items() for f in s["failures"]]
    if failures:
        w("")
        w("## Failures")
        for sname, t, f in failures:
            w("")
            w(f"- {t} / {sname}:")
            w("```")
            w(f)
            w("```")
    return "\n".join(lines) + "\n"


def lb_ratios(w, per_target: dict, key: str, what: str) -> None:
    lbv = per_target.get("lb", {}).get(key)
    ratios = [f"lb/{o}: {what} ×{ratio(lbv, per_target[o].get(key))}" for o in ("haproxy", "nginx") if o in per_target]
    if ratios:
        w("")
        w("; ".join(ratios))


def render_burst(w, per_target: dict, args) -> None:
    w(f"## burst — {args.burst_conns:,} connections opened first, then one `GET /` on each at once; idle 5 s; "
      "then all closed")
    w("")
    w("RSS before: after the same warm-up as idle, before the connections open; after answers: as soon as the last "
      "answer arrived; +5 s: 5 s later, all connections idle; KiB per idle conn: (RSS +5 s − before) / connections "
      "still open; after close: 5 s after the clients closed them all (Δ to before); backend conns: the proxy's "
      "sockets to the backends, ESTABLISHED / CLOSE_WAIT, before the burst, at +5 s and 5 s after the close; "
      "sent in: first to last request sent (one tight loop)"
      + (", the target frozen (SIGSTOP) meanwhile so that it finds them all waiting when it resumes; answered in: "
         "from its resuming to the last answer read." if args.burst_freeze else
         "; answered in: from the first request sent to the last answer read."))
    w("")
    w("| target | RSS before | RSS after answers | RSS +5 s | KiB per idle conn | RSS 5 s after close | backend conns "
      "before | +5 s | after close | sent in | answered in | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for t, s in per_target.items():
        if not s["ok"]:
            w(f"| {t} | FAILED | | | | | | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} |")
            continue
        w(f"| {t} | {fmt_kib(s['rss_before_kib'])} | {fmt_kib(s['rss_answered_kib'])} | {fmt_kib(s['rss_5s_kib'])} "
          f"| {fmt_num(s['kib_per_conn'], 2)} | {fmt_kib(s['rss_closed_kib'])} "
          f"({fmt_delta_kib(s['rss_closed_delta_kib'])}) | {fmt_conns(s.get('backend_before'))} "
          f"| {fmt_conns(s.get('backend_5s'))} | {fmt_conns(s.get('backend_closed'))} "
          f"| {fmt_num(s['sent_s'] * 1000)} ms | {fmt_num(s['answered_s'], 2)} s | {s['errors']} |")
    lb_ratios(w, per_target, "kib_per_conn", "KiB per idle connection after the burst")
    w("(direct: the backend nginx's own memory; it has no backend connections)")


def render_slowread(w, per_target: dict, args) -> None:
    w(f"## slowread — {args.slowread_conns:,} clients (SO_RCVBUF {SLOW_RCVBUF // 1024} KiB) each ask for a 50 MiB "
      f"file (`GET {SLOW_PATH}`) and never read")
    w("")
    w("RSS before: after the same warm-up as idle; at 3 s / 8 s: after the requests were sent; KiB per stalled "
      "download: (RSS at 8 s − before) / clients; `GET /` meanwhile: one plain request to the proxy at 8 s; after "
      "close: 5 s after the clients closed (Δ to before); stalled: clients still open at 8 s with a 200 head in their "
      "receive queue; proxy CPU: from 3 s to 8 s, % of one core; kernel TCP buffers: growth of the memory in all TCP "
      "socket buffers of the machine from before to 8 s (`/proc/net/sockstat`: where the bodies a proxy does not "
      "hold went), *pressure* if the kernel's TCP was under memory pressure at 8 s (above tcp_mem[1], "
      f"{tcp_mem_limits_text()}: it then stops growing socket buffers and windows, which throttles the backends).")
    w("")
    w("| target | RSS before | RSS at 3 s | RSS at 8 s | KiB per stalled download | `GET /` meanwhile "
      "| RSS 5 s after close | stalled | proxy CPU | kernel TCP buffers | errors |")
    w("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    for t, s in per_target.items():
        if not s["ok"]:
            w(f"| {t} | FAILED | | | | | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} |")
            continue
        probes = s["probes"]
        good = [ms for verdict, ms in probes if verdict == "ok"]
        if len(good) == len(probes):
            probe = f"200 in {fmt_num(median(good), 1)} ms"
        else:
            bad = next(v for v, _ in probes if v != "ok")
            probe = f"{len(probes) - len(good)}/{len(probes)} failed: {bad}"
        tcp = None
        if s.get("tcp_mem_8s_kib") is not None and s.get("tcp_mem_before_kib") is not None:
            tcp = s["tcp_mem_8s_kib"] - s["tcp_mem_before_kib"]
        pressed = sum(1 for x in s["tcp_pressure"] if x)
        if pressed:
            tcp_text = f"{fmt_delta_kib(tcp)}, *pressure*" + (f" ({pressed}/{len(s['tcp_pressure'])})"
                                                               if len(s["tcp_pressure"]) > 1 else "")
        else:
            tcp_text = fmt_delta_kib(tcp)
        w(f"| {t} | {fmt_kib(s['rss_before_kib'])} | {fmt_kib(s['rss_3s_kib'])} | {fmt_kib(s['rss_8s_kib'])} "
          f"| {fmt_num(s['kib_per_download'], 1)} | {probe} | {fmt_kib(s['rss_closed_kib'])} "
          f"({fmt_delta_kib(s['rss_closed_delta_kib'])}) | {fmt_num(s['stalled'])} | {fmt_num(s['cpu_stall_pct'])}% "
          f"| {tcp_text} | {s['errors']} |")
    lb_ratios(w, per_target, "kib_per_download", "KiB per stalled download")
    w("(direct: the backend nginx itself, sending with sendfile)")


RELOAD_COUNTS = ("requests", "failed_requests", "reset_mid", "no_answer", "non_2xx", "connect_failed", "closed_idle",
                 "closed_announced", "closed_silent", "reloads", "reload_attempts", "reloads_in_time")


def reload_summary(runs: list[dict], ok: list[dict]) -> dict:
    """reload: the counts summed over the rounds (failures are rare events: every one counts), req/s the median."""
    out: dict = {k: sum(r.get(k, 0) for r in ok) for k in RELOAD_COUNTS}
    kinds: dict[str, int] = {}
    for r in ok:
        for k, v in {**r.get("kinds", {}), **r.get("errors", {})}.items():
            kinds[k] = kinds.get(k, 0) + v
    out.update({
        "runs": len(runs),
        "ok": len(ok),
        "rps": median([r.get("rps") for r in ok]),
        "reload_ms": median([r.get("reload_ms") for r in ok]),
        "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "split": split_text([{"backend_split": r.get("split", [])} for r in ok]),
        "errors": errors_text(runs),
        "failures": [r["failed"] for r in runs if "failed" in r],
        "other": median([r.get("other_load_pct") for r in ok]),
    })
    return out


def render_reload(w, per_target: dict, args) -> None:
    w(f"## reload — {args.reload_conns} keep-alive connections of steady `GET /` for {args.duration:g} s, the proxy "
      f"reloaded every {args.reload_every:g} s (backend 3 removed, added back, ...)")
    w("")
    w("reloads: done / attempted, as the proxy counts them (its log: lb's `config reloaded` lines, nginx's new "
      "workers, HAProxy's soft-stopped processes or master reloads), and in brackets the median time from the "
      "signal (or the new process) until it was seen done; requests: 2xx answers read whole; failed: requests with no 2xx answer (non-2xx, reset "
      "mid-request, no answer in 5 s, or a refused connect); reset mid-request: of those, sent on a connection "
      "(or failed to send) that the proxy closed or reset before the answer came; closed between requests: "
      "connections the proxy closed with no request outstanding (its answer said `Connection: close`, or a peek "
      "just before the next request found the end of the stream: *silent*), after which the client reconnected; "
      "split: the answers per backend (%; backend 3 is in every other config); counts summed over rounds, req/s "
      f"the median. HAProxy: {'a new process with `-sf <old pids>` per reload' if args.haproxy_reload == 'sf' else 'master-worker mode (`-W`), SIGUSR2 to the master'}; "
      "nginx: SIGHUP to the master (`nginx -s reload`); lb: SIGHUP.")
    w("")
    w("| target | reloads | requests | failed | reset mid-request | closed between requests | req/s | split "
      "| what happened | other load |")
    w("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for t, s in per_target.items():
        if not s["ok"]:
            w(f"| {t} | FAILED | | | | | | | {s['errors']}: {s['failures'][0].splitlines()[0]} | |")
            continue
        silent = f" ({s['closed_silent']:,} silent)" if s["closed_silent"] else ""
        kinds = ", ".join(f"{k} {v:,}" for k, v in s["kinds"].items()) or "–"
        w(f"| {t} | {s['reloads']}/{s['reload_attempts']} ({fmt_num(s['reload_ms'])} ms) | {s['requests']:,} "
          f"| {s['failed_requests']:,} | {s['reset_mid']:,} | {s['closed_idle']:,}{silent} | {fmt_num(s['rps'])} "
          f"| {s['split']} | {kinds} | {fmt_num(s['other'])}% |")


def skipped_row(t: str, s: dict, columns: int) -> str | None:
    """The row of a target that was skipped or failed in every round, else None."""
    if s["ok"]:
        return None
    if s.get("skipped"):
        why = "skipped: " + s["skipped"].replace("|", "\\|")
    else:
        why = f"FAILED | {s['errors']}: " + s["failures"][0].splitlines()[0].replace("|", "\\|")
    return f"| {t} | {why} |" + " |" * (columns - (3 if why.startswith("FAILED") else 2))


def render_protocol(w, sname: str, per_target: dict) -> None:
    """The protocol scenarios (issue 10): TLS keep-alive and handshakes, HTTP/2 over TLS and in clear, TCP mode."""
    sc = SCENARIOS[sname]
    w(f"## {sname} — {sc.title}")
    w("")
    tls = sname in ("tls_keepalive", "tls_handshake", "h2_tls")
    if sname == "tls_handshake":
        w("handshakes/s: new TLS connections (full handshake, `GET / HTTP/1.0`, close) per second of wall time, all "
          "clients together; CPU µs/handshake: the proxy's user+sys time over the run divided by them (its "
          "connection to the backend included); answer: bytes read per connection (the same for every answer "
          "through one proxy); client CPU: s_time's own user time per connection.")
        w("")
        w("| target | handshakes/s | CPU µs/handshake | RSS | answer | client CPU µs/conn | errors | split "
          "| other load | negotiated |")
        w("|---|---:|---:|---:|---:|---:|---|---|---:|---|")
        for t, s in per_target.items():
            row = skipped_row(t, s, 10)
            if row:
                w(row)
                continue
            rng = f" ({fmt_num(s['rps_min'])}–{fmt_num(s['rps_max'])})" if s["ok"] > 1 else ""
            w(f"| {t} | {fmt_num(s['rps'])}{rng} | {fmt_num(s['cpu_us_per_req'], 1)} | {fmt_kib(s['rss_kib'])} "
              f"| {fmt_num(s['bytes_per_conn'])} B | {fmt_num(s['client_cpu_us_per_conn'])} | {s['errors']} "
              f"| {s['split']} | {fmt_num(s['other'])}% | {negotiated_text(s['negotiated'])} |")
        protocol_ratios(w, per_target, "rps", "handshakes/s", "cpu_us_per_req", "CPU µs/handshake")
        return
    if sname == "tcp_stream":
        w("MiB/s: all the bytes over all the transfers' time (connect to last byte); s per GiB: the median "
          "transfer; CPU ms/GiB: the proxy's user+sys time over the transfers per GiB carried; transfers: 1 GiB "
          "each, summed over rounds. `direct`: the client straight to backend 1 (its CPU is the backend nginx's).")
        w("")
        w("| target | MiB/s | s per GiB | CPU ms/GiB | RSS | transfers | errors | other load |")
        w("|---|---:|---:|---:|---:|---:|---|---:|")
        for t, s in per_target.items():
            row = skipped_row(t, s, 8)
            if row:
                w(row)
                continue
            w(f"| {t} | {fmt_num(s['mib_s'])} | {fmt_num(s['s_per_gib'], 2)} | {fmt_num(s['cpu_ms_per_gib'])} "
              f"| {fmt_kib(s['rss_kib'])} | {s['transfers']} | {s['errors']} | {fmt_num(s['other'])}% |")
        protocol_ratios(w, per_target, "mib_s", "MiB/s", "cpu_ms_per_gib", "CPU ms/GiB")
        return
    # tls_keepalive, h2_tls, h2c, tcp_connect: the CPU scenarios' columns (h2: p50/p99 from h2load's request log)
    if sname in ("h2_tls", "h2c"):
        w("p50/p99: from h2load's log of every request (time until the end of its response); CPU µs/req: the "
          "proxy's user+sys time over the run divided by the requests that succeeded.")
        w("")
    head = "| target | req/s | p50 | p99 | CPU µs/req | RSS | errors | split | other load |"
    cols = 9
    if tls:
        head += " negotiated |"
        cols += 1
    w(head)
    w("|---|---:|---:|---:|---:|---:|---|---|---:|" + ("---|" if tls else ""))
    for t, s in per_target.items():
        row = skipped_row(t, s, cols)
        if row:
            w(row)
            continue
        rng = f" ({fmt_num(s['rps_min'])}–{fmt_num(s['rps_max'])})" if s["ok"] > 1 else ""
        line = (f"| {t} | {fmt_num(s['rps'])}{rng} | {fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} "
                f"| {fmt_num(s['cpu_us_per_req'], 1)} | {fmt_kib(s['rss_kib'])} | {s['errors']} | {s['split']} "
                f"| {fmt_num(s['other'])}% |")
        if tls:
            line += f" {negotiated_text(s['negotiated'], alpn=sname == 'h2_tls')} |"
        w(line)
    protocol_ratios(w, per_target, "rps", "req/s", "cpu_us_per_req", "CPU µs/req")


def protocol_ratios(w, per_target: dict, rate: str, rate_name: str, cpu: str, cpu_name: str) -> None:
    lb = per_target.get("lb")
    if not lb or not lb.get("ok"):
        return
    ratios = [f"lb/{o}: {rate_name} ×{ratio(lb.get(rate), per_target[o].get(rate))}, "
              f"{cpu_name} ×{ratio(lb.get(cpu), per_target[o].get(cpu))}"
              for o in ("haproxy", "nginx") if o in per_target and per_target[o].get("ok")]
    if ratios:
        w("")
        w("; ".join(ratios))
