//! The config file's parse and validation (`config::from_text`, host names not resolved), as TOML: never panics,
//! and an error is one printable line naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lb::fuzzing::check_config(data, true));
