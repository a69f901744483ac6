//! The command line: flags, their defaults and help, and the subcommands (`demo`, `check`, `completions`).
//!
//! Every flag is optional and global, so `lb demo --port 9000` works like `lb --port 9000`. A flag given here wins over
//! the config file, which is why the flags that the file can also set are `Option`s: `None` means "not given" and lets
//! the file's value, else the default, apply (see [`crate::config::load`]). Values are parsed and range-checked by
//! clap, so a bad value fails before anything else runs, with exit status 2 and one line naming the flag and the value.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use crate::config::duration::parse_duration;
use crate::config::{AccessLogFormat, Overrides};

/// An HTTP load balancer: round robin over health-checked backends, on every core.
#[derive(Debug, Parser)]
#[command(version, about, disable_help_subcommand = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on: an IP address or a name such as `localhost` [default: 127.0.0.1]
    #[arg(long, global = true, value_name = "HOST")]
    pub host: Option<String>,

    /// Port to listen on; 0 picks any free port (the startup line names it) [default: 8000]
    #[arg(
        long,
        global = true,
        value_name = "PORT",
        allow_negative_numbers = true
    )]
    pub port: Option<u16>,

    /// Health check interval: 10, 0.5, 500ms, 2s, 1m (a bare number is seconds) [default: 5]
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        value_parser = positive_duration,
        allow_negative_numbers = true
    )]
    pub interval: Option<Duration>,

    /// Backends: the spec's JSON array, or the full form (.json or .toml)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "servers/servers.json"
    )]
    pub config: PathBuf,

    /// Event loops (threads) serving clients [default: the cores this process may use]
    #[arg(
        long,
        global = true,
        value_name = "N",
        value_parser = at_least_one,
        allow_negative_numbers = true
    )]
    pub workers: Option<usize>,

    /// On shutdown, how long in-flight requests may take before lb exits anyway [default: 10s]
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        value_parser = parse_duration,
        allow_negative_numbers = true
    )]
    pub drain_timeout: Option<Duration>,

    /// Log one line per answer (lb's own too: 400, 408, 502, 503, 504...) on stdout
    #[arg(long, global = true)]
    pub access_log: bool,

    /// The access log's format: common, combined (with lb's fields after it: backend, attempts, duration_ms,
    /// upstream_ms) or json (one object per line); giving it turns the access log on [default: combined]
    #[arg(long, global = true, value_name = "FORMAT", value_parser = AccessLogFormat::from_str)]
    pub access_log_format: Option<AccessLogFormat>,

    /// The admin plane's address (metrics, status, dashboard, reload): off unless given here or as `admin` in the
    /// config. For `lb status`, `lb reload` and `lb check`: the running balancer's admin address
    /// [default for those: the config's `admin`, else 127.0.0.1:9000]
    #[arg(long, global = true, value_name = "ADDR", value_parser = crate::config::parse_admin_addr)]
    pub admin: Option<std::net::SocketAddr>,

    /// Speak TLS on the main listener with this certificate chain (PEM); needs --tls-key. Replaces the config's
    /// `[tls]` cert and key (its SNI certificates stay)
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --tls-cert
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Log level: error, warn, info, debug or trace
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        default_value = "info",
        value_parser = LogLevel::from_str
    )]
    pub log_level: LogLevel,

    /// Log format: text (for people) or json (one object a line: timestamp, level, message, fields)
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run three built-in backends on 127.0.0.1:8001-8003 and the balancer in front of them (every flag applies but
    /// --config)
    Demo,
    /// Validate the config (the file and the flags, as a start would) and print what lb would run; exit 0 or 1.
    /// With --admin: also what a reload of this file would change in the running balancer
    Check,
    /// Ask the running balancer (its admin address) to re-read its config file; prints what changed
    Reload,
    /// Print the running balancer's backends: state, since when, why, requests, in flight
    Status,
    /// Print the completion script for a shell to stdout, e.g. `lb completions bash > ~/.local/share/bash-completion/completions/lb`
    Completions {
        /// The shell the script is for
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
}

/// How the process log is written: [`LogFormat::Json`] is for log collectors (journald, Loki, Elasticsearch...), which
/// then need no pattern to split a line into its time, level, message and fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How much `lb` logs; [`LogLevel::as_str`] is the matching `tracing` filter directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err("expected error, warn, info, debug or trace".to_string()),
        }
    }
}

impl Cli {
    /// The flags that override the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            host: self.host.clone(),
            port: self.port,
            interval: self.interval,
            workers: self.workers,
            drain: self.drain_timeout,
            access_log: self.access_log,
            access_log_format: self.access_log_format,
            admin: self.admin,
            tls_cert: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::config::CertificatePaths {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
        }
    }
}

/// The completion script of `lb` for `shell`, generated from the flags and subcommands above, so it cannot go stale.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "lb", &mut script);
    script
}

/// Parses the process arguments. `--help` and `--version` print and exit 0; a usage error prints one line to stderr
/// (clap's message without its usage, e.g. `error: invalid value 'abc' for '--port <PORT>': invalid digit found in
/// string`, or `error: unexpected argument '--prot' found; tip: a similar argument exists: '--port'`) and exits 2, as
/// does `lb demo --config FILE`: the demo runs its own backends and would silently ignore the file.
pub fn parse() -> Cli {
    match try_parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(Exit::Clap(e)) => e.exit(),
        Err(Exit::Usage(line)) => {
            eprintln!("{line}");
            std::process::exit(2);
        }
    }
}

/// Why parsing did not produce a [`Cli`].
#[derive(Debug)]
enum Exit {
    /// Help or version: let clap print it and exit 0.
    Clap(clap::Error),
    /// A usage error, as the one line to print.
    Usage(String),
}

fn try_parse_from<I, T>(args: I) -> Result<Cli, Exit>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let usage = |e: clap::Error| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Clap(e),
        ErrorKind::InvalidSubcommand if !e.to_string().contains("tip:") => {
            let commands: Vec<String> = Cli::command()
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            let commands = commands.join(", ");
            let line = one_line(&e.to_string());
            Exit::Usage(format!("{line}; the commands are {commands} (lb --help)"))
        }
        _ => Exit::Usage(one_line(&e.to_string())),
    };
    let matches = Cli::command().try_get_matches_from(args).map_err(usage)?;
    let cli = Cli::from_arg_matches(&matches).map_err(usage)?;
    if matches!(cli.command, Some(Command::Demo)) && given(&matches, "config") {
        return Err(Exit::Usage(format!(
            "error: demo runs its own three backends; --config is not used by demo; run `lb --config {}` instead",
            cli.config.display()
        )));
    }
    Ok(cli)
}

/// Whether the flag with id `id` was written on the command line (rather than left at its default), before or after
/// the subcommand: a global flag given after it is recorded in the subcommand's matches.
fn given(matches: &ArgMatches, id: &str) -> bool {
    let here = matches.value_source(id) == Some(ValueSource::CommandLine);
    here || matches.subcommand().is_some_and(|(_, sub)| given(sub, id))
}

/// Clap's message as one line: the error and what clap says under it (the missing argument, the possible values, a
/// tip naming a similar flag), without the usage and the pointer to `--help`.
fn one_line(rendered: &str) -> String {
    let mut line = String::new();
    for part in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if part.starts_with("Usage:") || part.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') || part.starts_with('[') {
                " "
            } else {
                "; "
            });
        }
        line.push_str(part);
    }
    match line.is_empty() {
        true => "error: invalid arguments".to_string(),
        false => line,
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than 0".to_string()),
        d => Ok(d),
    }
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) if s.trim_start().starts_with('-') => Err("must be at least 1".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        try_parse_from(std::iter::once("lb").chain(args.iter().copied())).map_err(|e| match e {
            Exit::Clap(e) => format!("clap: {:?}", e.kind()),
            Exit::Usage(line) => line,
        })
    }

    #[test]
    fn defaults_leave_overrides_empty() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.command, None);
        assert_eq!(cli.config, PathBuf::from("servers/servers.json"));
        assert_eq!(cli.log_level, LogLevel::Info);
        let o = cli.overrides();
        assert_eq!((o.host, o.port, o.interval), (None, None, None));
        assert_eq!((o.workers, o.drain, o.access_log), (None, None, false));
    }

    #[test]
    fn flags_become_overrides() {
        let cli = parse(&[
            "--host",
            "localhost",
            "--port",
            "0",
            "--interval",
            "500ms",
            "--config",
            "lb.toml",
            "--workers",
            "3",
            "--drain-timeout",
            "0",
            "--access-log",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(cli.config, PathBuf::from("lb.toml"));
        assert_eq!(cli.log_level.as_str(), "debug");
        let o = cli.overrides();
        assert_eq!(o.host.as_deref(), Some("localhost"));
        assert_eq!(o.port, Some(0));
        assert_eq!(o.interval, Some(Duration::from_millis(500)));
        assert_eq!(o.workers, Some(3));
        assert_eq!(o.drain, Some(Duration::ZERO));
        assert!(o.access_log);
    }

    #[test]
    fn an_access_log_format_is_one_of_three() {
        let cli = parse(&["--access-log-format", "json"]).unwrap();
        assert_eq!(
            cli.overrides().access_log_format,
            Some(AccessLogFormat::Json)
        );
        assert_eq!(
            parse(&["--access-log-format", "xml"]).unwrap_err(),
            "error: invalid value 'xml' for '--access-log-format <FORMAT>': expected common, combined or json"
        );
    }

    #[test]
    fn demo_takes_the_same_flags() {
        let cli = parse(&["demo", "--port", "9000", "--interval=10"]).unwrap();
        assert_eq!(cli.command, Some(Command::Demo));
        assert_eq!(cli.port, Some(9000));
        assert_eq!(cli.interval, Some(Duration::from_secs(10)));
    }

    #[test]
    fn bad_values_give_one_line_naming_flag_and_value() {
        let cases = [
            (
                &["--port", "abc"][..],
                "error: invalid value 'abc' for '--port <PORT>': invalid digit found in string",
            ),
            (
                &["--port", "70000"],
                "error: invalid value '70000' for '--port <PORT>': 70000 is not in 0..=65535",
            ),
            (
                &["--interval", "0"],
                "error: invalid value '0' for '--interval <DURATION>': must be greater than 0",
            ),
            (
                &["--interval", "-1"],
                "error: invalid value '-1' for '--interval <DURATION>': must not be negative",
            ),
            (
                &["--interval", "5x"],
                "error: invalid value '5x' for '--interval <DURATION>': unknown unit \"x\" in \"5x\" (use ms, s, m or h)",
            ),
            (
                &["--workers", "0"],
                "error: invalid value '0' for '--workers <N>': must be at least 1",
            ),
            (
                &["--drain-timeout", "soon"],
                "error: invalid value 'soon' for '--drain-timeout <DURATION>': invalid duration \"soon\" (use e.g. 10, 0.5, 500ms, 2s, 1m)",
            ),
            (
                &["--log-level", "loud"],
                "error: invalid value 'loud' for '--log-level <LEVEL>': expected error, warn, info, debug or trace",
            ),
            (
                &["--port", "-1"],
                "error: invalid value '-1' for '--port <PORT>': -1 is not in 0..=65535",
            ),
            (&["--bogus"], "error: unexpected argument '--bogus' found"),
            (
                &["--prot", "80"],
                "error: unexpected argument '--prot' found; tip: a similar argument exists: '--port'",
            ),
            (
                &["help"],
                "error: unrecognized subcommand 'help'; the commands are demo, check, reload, status, completions (lb --help)",
            ),
            (
                &["chek"],
                "error: unrecognized subcommand 'chek'; tip: a similar subcommand exists: 'check'",
            ),
            (
                &["--log-format", "xml"],
                "error: invalid value 'xml' for '--log-format <FORMAT>' [possible values: text, json]",
            ),
            (
                &["completions"],
                "error: the following required arguments were not provided: <SHELL>",
            ),
            (
                &["--port"],
                "error: a value is required for '--port <PORT>' but none was supplied",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args).unwrap_err(), want, "{args:?}");
        }
    }

    #[test]
    fn demo_refuses_a_config_given_before_or_after_it() {
        let want = "error: demo runs its own three backends; --config is not used by demo; run `lb --config lb.toml` instead";
        for args in [
            &["demo", "--config", "lb.toml"][..],
            &["--config", "lb.toml", "demo"],
            &["demo", "--config=lb.toml"],
        ] {
            assert_eq!(parse(args).unwrap_err(), want, "{args:?}");
        }
        let check = parse(&["check", "--config", "lb.toml"]).unwrap();
        assert_eq!(check.command, Some(Command::Check));
    }

    #[test]
    fn log_format_and_completions() {
        assert_eq!(parse(&[]).unwrap().log_format, LogFormat::Text);
        let cli = parse(&["demo", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let cli = parse(&["completions", "zsh"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Completions { shell: Shell::Zsh })
        );
    }

    #[test]
    fn help_and_version_are_left_to_clap() {
        assert_eq!(parse(&["--help"]).unwrap_err(), "clap: DisplayHelp");
        assert_eq!(parse(&["--version"]).unwrap_err(), "clap: DisplayVersion");
        assert_eq!(parse(&["demo", "--help"]).unwrap_err(), "clap: DisplayHelp");
    }

    #[test]
    fn command_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
