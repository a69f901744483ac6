//! The subcommands a new user meets besides a start: `lb completions SHELL` prints a script the shell accepts, `lb
//! demo` refuses a `--config` it would not use, and a mistyped command says which ones exist.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::run_lb;

#[tokio::test]
async fn completions_print_a_script_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let run = run_lb(&["completions", shell]).await;

        assert_eq!(run.code, Some(0), "{shell}: {}", run.stderr);
        assert!(run.stderr.is_empty(), "{shell}: {}", run.stderr);
        assert!(
            run.stdout.contains("config"),
            "{shell}: the script does not complete --config:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("completions") && run.stdout.contains("log-format"),
            "{shell}: the script misses a subcommand or a flag:\n{}",
            run.stdout
        );
    }
}

#[tokio::test]
async fn the_bash_completion_script_is_valid_bash() {
    let run = run_lb(&["completions", "bash"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    bash.stdin
        .take()
        .unwrap()
        .write_all(run.stdout.as_bytes())
        .unwrap();
    let checked = bash.wait_with_output().unwrap();

    let complaints = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "bash -n: {complaints}");
}

#[tokio::test]
async fn completions_without_a_shell_is_one_line_and_status_2() {
    let run = run_lb(&["completions"]).await;

    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("<SHELL>"), "{}", run.stderr);
}

#[tokio::test]
async fn demo_refuses_a_config_file_with_status_2() {
    for args in [
        &["demo", "--config", "lb.toml"][..],
        &["--config", "lb.toml", "demo"],
    ] {
        let run = run_lb(args).await;

        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr.trim(),
            "error: demo runs its own three backends; --config is not used by demo; run `lb --config lb.toml` instead",
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn an_unknown_command_names_the_commands() {
    let run = run_lb(&["help"]).await;

    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    for command in ["demo", "check", "completions"] {
        assert!(run.stderr.contains(command), "{}", run.stderr);
    }
}
