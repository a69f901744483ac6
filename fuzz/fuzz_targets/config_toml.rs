//! The config file's parse and validation (`config::from_text`, host names not resolved), as TOML: never panics,
//! and an error is one printable line naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(lb::fuzzing::config(text, true));
});

fn check(result: Result<lb::fuzzing::Config, lb::fuzzing::ConfigError>) {
    match result {
        Ok(config) => {
            assert!(!config.backends.is_empty());
            assert!(config.workers >= 1);
            assert!(!config.health.statuses.is_empty());
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("lb.toml"), "{line}");
            // One line, nothing that moves a terminal's cursor.
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }
}
