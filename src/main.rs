//! The `lb` binary: parses the command line, loads the config, runs the balancer until a signal, and maps every
//! failure to one line on stderr and an exit code (2: bad flags, 1: bad config or cannot start, 130: second Ctrl+C).

use std::process::ExitCode;
use std::sync::Arc;

use lb::admin::{self, Admin, Reloads, Token};
use lb::cli::{self, Cli, Command, LogFormat};
use lb::config::{self, AdminConfig, BackendConfig, Config};
use lb::Reloaded;
use lb::Server;
use tokio::sync::mpsc;

mod plan;
mod remote;

/// Where `lb demo` serves its dashboard.
const DEMO_ADMIN: &str = "127.0.0.1:9000";

/// jemalloc rather than the system allocator: tokio allocates every task and every socket registration aligned to
/// 128 bytes, and glibc's aligned allocation leaves a fragment before and after each block that nothing reuses;
/// jemalloc makes an idle keep-alive connection cost less at the same CPU per request (`bench/README.md`, Design
/// figures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::parse();
    if let Some(Command::Completions { shell }) = cli.command {
        return print_completions(shell);
    }
    init_logging(&cli);
    match cli.command {
        Some(Command::Reload) => return remote::reload(&remote::Target::of(&cli)),
        Some(Command::Status) => return remote::status(&remote::Target::of(&cli)),
        _ => {}
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cli.command, Some(Command::Check)) {
        if let Err(error) = Server::check_certificates(&config) {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
        print!("{}", plan::describe(&cli.config, &config));
        if cli.admin.is_some() {
            match remote::diff(&remote::Target::of(&cli), &config) {
                Ok(diff) => print!("{diff}"),
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    log_effective_config(&cli, &config);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, config))
}

async fn run(cli: Cli, config: Config) -> ExitCode {
    let mut hangups = lb::signal::Hangups::catch();
    if matches!(cli.command, Some(Command::Demo)) {
        for backend in config.backends() {
            if let Err(error) = lb::demo::start_backend(backend.id, backend.addr).await {
                eprintln!(
                    "error: cannot start demo backend on {}: {error}",
                    backend.addr
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let admin_settings = config.admin.clone();
    let mut server = match Server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let reloads = Arc::new(Reloads::default());
    let token = Arc::new(Token::new(
        admin_settings.as_ref().and_then(|a| a.token.clone()),
    ));
    let (commands, mut asked) = mpsc::channel(4);
    let admin = match &admin_settings {
        None => None,
        Some(settings) => {
            let config_path = match cli.command {
                Some(Command::Demo) => None,
                _ => Some(cli.config.display().to_string()),
            };
            let plane = server.admin_plane(token.clone(), config_path, reloads.clone(), commands);
            match Admin::start(settings, plane) {
                Ok(admin) => {
                    tracing::info!(
                        "admin plane on http://{}/ (metrics, status, dashboard)",
                        admin.local_addr()
                    );
                    Some(admin)
                }
                Err(error) => {
                    eprintln!(
                        "error: cannot listen on the admin address {}: {error}",
                        settings.addr
                    );
                    server.shutdown().await;
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    if matches!(cli.command, Some(Command::Demo)) {
        let addr = server.local_addr();
        let dashboard = admin.as_ref().map_or_else(String::new, |admin| {
            format!("    the dashboard: http://{}/\n", admin.local_addr())
        });
        eprintln!("\ndemo running: three backends behind lb. Try:\n    curl http://{addr}/\n    (again: it rotates over backends 1, 2, 3)\n{dashboard}Ctrl+C to stop.\n");
    }
    let signal = {
        let shutdown = lb::signal::shutdown();
        tokio::pin!(shutdown);
        // A reload waits for its new backends' first check (up to the check timeout): a signal to stop ends it
        // there, before it has changed anything (it publishes nothing until every check is done).
        loop {
            tokio::select! {
                signal = &mut shutdown => break signal,
                () = hangups.next() => {
                    let why = "SIGHUP received";
                    tokio::select! {
                        signal = &mut shutdown => break abandoned(why, signal),
                        _ = reload(&cli, &mut server, &reloads, &token, why) => {}
                    }
                }
                Some(command) = asked.recv() => match command {
                    admin::Command::Reload(reply) => {
                        let why = "reload asked on the admin plane";
                        tokio::select! {
                            // The reply dropped: the admin plane answers that lb is stopping.
                            signal = &mut shutdown => break abandoned(why, signal),
                            reloaded = reload(&cli, &mut server, &reloads, &token, why) => {
                                let _ = reply.send(reloaded);
                            }
                        }
                    }
                },
            }
        }
    };
    tracing::info!("{signal} received: draining (Ctrl+C again to exit at once)");
    // The admin plane stays up during the drain (it shows it), and stops with the process; a reload asked from now
    // on is answered that lb is stopping.
    drop(asked);
    let _admin = admin;
    tokio::select! {
        drained = server.shutdown() => {
            if drained.tunnels > 0 {
                tracing::info!("drain deadline passed: {} tunnels closed", drained.tunnels);
            }
            if drained.cut > 0 {
                let requests = if drained.cut == 1 { "request" } else { "requests" };
                tracing::warn!("drain deadline passed: {} {requests} still in flight cut; stopped", drained.cut);
                return ExitCode::FAILURE;
            }
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        signal = lb::signal::shutdown() => {
            tracing::warn!("{signal} received again: exiting now");
            ExitCode::from(130)
        }
    }
}

/// Says that the reload asked for `why` stopped before it changed anything, because of `signal`; answers `signal`.
fn abandoned(why: &str, signal: &'static str) -> &'static str {
    tracing::warn!("{why}: not applied: lb is stopping ({signal} received during the reload)");
    signal
}

/// SIGHUP or the admin plane: re-reads the config file and applies it; a bad or refused one changes nothing. One log
/// line either way, starting with `why`; the answer is the diff or that line's error.
async fn reload(
    cli: &Cli,
    server: &mut Server,
    reloads: &Reloads,
    token: &Token,
    why: &str,
) -> Result<Reloaded, String> {
    if matches!(cli.command, Some(Command::Demo)) {
        tracing::info!("{why}: the demo has no config file to reload; nothing changed");
        return Err("the demo has no config file to reload; nothing changed".to_owned());
    }
    let result = match load_config(cli) {
        Ok(config) => {
            let new_token = config.admin.as_ref().and_then(|a| a.token.clone());
            let reloaded = server.reload(config).await;
            if reloaded.is_ok() {
                token.set(new_token);
            }
            reloaded
        }
        .map_err(|error| format!("reload refused, the running config stays: {error}")),
        Err(error) => Err(format!(
            "reload failed, the running config stays: {error:#}"
        )),
    };
    reloads.record(result.is_ok());
    match &result {
        Ok(reloaded) => tracing::info!(
            "{why}: config reloaded from {}, {reloaded}",
            cli.config.display()
        ),
        Err(error) => tracing::error!("{why}: {error}"),
    }
    result
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let overrides = cli.overrides();
    match cli.command {
        Some(Command::Demo) => {
            let backends = (1..=3)
                .map(|id| {
                    let port = 8000 + id as u16;
                    BackendConfig {
                        id,
                        host: "127.0.0.1".to_owned(),
                        port,
                        addr: ([127, 0, 0, 1], port).into(),
                        options: Default::default(),
                        weight: 1,
                        max_connections: None,
                        resolve: Default::default(),
                    }
                })
                .collect();
            let mut config = config::from_backends(backends, &overrides)?;
            if config.admin.is_none() {
                let addr = config::parse_admin_addr(DEMO_ADMIN).map_err(anyhow::Error::msg)?;
                config.admin = Some(AdminConfig { addr, token: None });
            }
            Ok(config)
        }
        _ => Ok(config::load(&cli.config, &overrides)?),
    }
}

fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::new(format!("lb={0},main={0}", cli.log_level));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
        // `{"timestamp":…,"level":"INFO","message":"listening on …",<fields>}`: the event's fields beside the message
        // rather than nested, so a collector reads every key at the top level.
        LogFormat::Json => log.with_ansi(false).json().flatten_event(true).init(),
    }
}

/// At `--log-level debug`, the config `lb` runs with (what the file, the flags and the defaults came to), in the
/// lines `lb check` prints: a line a fact, so that each is one log event.
fn log_effective_config(cli: &Cli, config: &Config) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let source = match cli.command {
        Some(Command::Demo) => "demo".to_owned(),
        _ => cli.config.display().to_string(),
    };
    // `lb check` lists the backends one a line under their heading; a log line takes them in one.
    let mut lines: Vec<String> = Vec::new();
    for line in plan::settings(config).lines() {
        let words = line.split_whitespace().collect::<Vec<_>>().join(" ");
        match (line.starts_with(' '), lines.last_mut()) {
            (true, Some(last)) if last.ends_with(':') => *last = format!("{last} {words}"),
            (true, Some(last)) => *last = format!("{last}, {words}"),
            _ => lines.push(words),
        }
    }
    for line in lines {
        tracing::debug!(source = %source, "config: {line}");
    }
}

/// `lb completions SHELL`: the script on stdout. Written whole from a buffer so that a closed pipe
/// (`lb completions bash | head`) is an exit status, not a panic.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use std::io::Write;
    let script = cli::completions(shell);
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write the completion script: {error}");
            ExitCode::FAILURE
        }
    }
}
