"""The pieces of bench/bench.py, one concept per module (bench.py itself is the command line and main()).

    common     the scenarios, fixed sizes, paths and cores; log(); durations; StartError; median()
    procs      the processes started here: TMP/pids, start in their own session, stop = the whole tree gone
    procfs     readings from /proc: CPU ticks, RSS, TCP sockets by state, kernel TCP memory, machine busy ticks
    targets    the backends (one nginx) and the targets: lb, HAProxy, nginx (their configs), direct
    noise      noise control: the CPU other processes use, and waiting for a quiet machine
    load       the CPU scenarios: wrk, its output, the measured run around it
    clients    the memory scenarios' clients: asyncio for idle, plain sockets and epoll for burst and slowread
    memory     the memory scenarios: idle, burst, slowread, and what they wait for before they start
    reload     the reload scenario: reloadable targets, the load client that tells a reset from an error, the reloads
    certs      the protocol scenarios' certificate (one for all proxies) and what a TLS listener negotiates
    protocols  the protocol scenarios' targets: TLS listeners, h2c listeners, TCP mode; lb skipped where it lacks one
    handshake  tls_handshake: full TLS handshakes per second with parallel `openssl s_time -new`
    h2load     h2_tls and h2c: h2load, its output and its per-request log
    transfer   tcp_stream: 1 GiB transfers through a proxy in TCP mode, our own client
    report     the summary and the Markdown tables
    runs       one run (fresh target, repeated while noisy), and the rounds

Each module imports only modules listed above it, so there are no import cycles. The only state set at start-up
lives in procs (the pid file), targets (the open-files limit) and noise (the ksoftirqd pids), set by main() before
anything starts.
"""
