//! The subcommands that talk to a running balancer over its admin plane: `lb reload`, `lb status` and the diff of
//! `lb check --admin`. Each is one request; the answer is printed for a person, and the exit code says whether it
//! worked (0), or not (1, with one line on stderr).

use std::net::SocketAddr;
use std::process::ExitCode;

use lb::admin::client::{self, Reply};
use lb::cli::Cli;
use lb::config::{self, Config};

/// Where the running balancer's admin plane is and its token: `--admin`, else the config's `admin`, else
/// 127.0.0.1:9000; the token from `LB_ADMIN_TOKEN`, else the config's `admin_token`.
pub struct Target {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Target {
    pub fn of(cli: &Cli) -> Target {
        // The file for its admin settings only: --admin here names the balancer to ask, not a listener to check.
        let overrides = config::Overrides {
            admin: None,
            ..cli.overrides()
        };
        let config = config::load(&cli.config, &overrides).ok();
        let admin = config.as_ref().and_then(|c| c.admin.clone());
        let addr = cli
            .admin
            .or(admin.as_ref().map(|a| a.addr))
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9000)));
        let token = std::env::var("LB_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or(admin.and_then(|a| a.token));
        Target { addr, token }
    }

    fn call(&self, method: &str, path: &str) -> Result<Reply, String> {
        client::call(self.addr, method, path, self.token.as_deref())
    }
}

fn fail(line: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {line}");
    ExitCode::FAILURE
}

/// `lb reload`: prints the diff (`generation 4: added [5], removed [2], changed [3]`) or the error.
pub fn reload(target: &Target) -> ExitCode {
    let reply = match target.call("POST", "/api/reload") {
        Ok(reply) => reply,
        Err(error) => return fail(error),
    };
    if reply.status != 200 {
        return fail(format!(
            "reload failed, the running config stays: {}",
            reply.error()
        ));
    }
    let Ok(diff) = serde_json::from_str::<serde_json::Value>(&reply.body) else {
        return fail(format!("unexpected answer: {}", reply.body.trim()));
    };
    let ids = |key: &str| {
        diff[key].as_array().map_or_else(Vec::new, |a| {
            a.iter().filter_map(|v| v.as_u64()).collect::<Vec<_>>()
        })
    };
    println!(
        "reloaded: generation {}: added {:?}, removed {:?}, changed {:?}",
        diff["generation"],
        ids("added"),
        ids("removed"),
        ids("changed")
    );
    ExitCode::SUCCESS
}

/// `lb status`: the running balancer's backends as a table.
pub fn status(target: &Target) -> ExitCode {
    let reply = match target.call("GET", "/api/status") {
        Ok(reply) => reply,
        Err(error) => return fail(error),
    };
    if reply.status != 200 {
        return fail(format!("status: {}", reply.error()));
    }
    println!("{}", reply.body.trim());
    ExitCode::SUCCESS
}

/// `lb check --admin`: what a reload of `config` would change in the running balancer, by backend id (the same
/// words as the reload's answer). Backends are the same when id and address match.
pub fn diff(target: &Target, config: &Config) -> Result<String, String> {
    let reply = target.call("GET", "/api/status")?;
    if reply.status != 200 {
        return Err(format!("status: {}", reply.error()));
    }
    let status: serde_json::Value =
        serde_json::from_str(&reply.body).map_err(|e| format!("status: not JSON: {e}"))?;
    let running: Vec<(u64, String)> = status["backends"]
        .as_array()
        .map(|backends| {
            backends
                .iter()
                .filter_map(|b| Some((b["id"].as_u64()?, b["address"].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    for backend in &config.backends {
        match running.iter().find(|(id, _)| *id == backend.id) {
            None => added.push(backend.id),
            Some((_, address)) if *address != backend.authority() => changed.push(backend.id),
            Some(_) => {}
        }
    }
    for (id, _) in &running {
        if !config.backends.iter().any(|b| b.id == *id) {
            removed.push(*id);
        }
    }
    let generation = status["generation"].as_u64().unwrap_or(0);
    Ok(format!(
        "against the running lb at {} (generation {generation}): a reload would add {added:?}, remove {removed:?}, change {changed:?}\n",
        target.addr
    ))
}
