//! What a config file that failed to parse looks like, so that its error can say what went wrong when the format is
//! the problem rather than a typo.
//!
//! `lb` picks the parser by the file's extension (`.toml` is TOML, anything else JSON), never by its contents: a
//! guess that read a broken TOML file as JSON would turn a precise TOML error into a puzzling JSON one. So the guess
//! is made only after the parser has refused the file, and it only adds to the message: a TOML body in `lb.json`
//! fails at `[[backends]]` with "invalid type: sequence", which says nothing about the extension; the hint does.
//!
//! The guess is line-based and strict enough for that use: a TOML table header (`[backends]`, `[[backends]]`) or a
//! `key = value` line is TOML; a `key: value` line with a bare key (`host: 127.0.0.1`, `- id: 1`) is YAML; a text that
//! is valid JSON (of the wrong shape), starts with `{`, or starts with `[` and has no TOML line, is JSON.

use std::path::Path;

/// A format a config file's text looks written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looks {
    Json,
    Toml,
    Yaml,
}

/// The format `text` looks written in, if any is plain.
pub fn looks_like(text: &str) -> Option<Looks> {
    let text = text.trim_start_matches('\u{feff}').trim_start();
    let lines = || {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
    };
    let valid_json = || serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    if text.starts_with('{') || valid_json() {
        return Some(Looks::Json);
    }
    if lines().any(|l| is_table_header(l) || is_toml_pair(l)) {
        return Some(Looks::Toml);
    }
    if text.starts_with('[') {
        return Some(Looks::Json);
    }
    if lines().any(|l| l == "---" || is_yaml_pair(l)) {
        return Some(Looks::Yaml);
    }
    None
}

/// What to add to the error of a file called `name` that `lb` read as JSON (`as_toml` false) or TOML, given what its
/// `text` looks like: nothing when it looks like what it was read as.
pub fn hint(name: &str, text: &str, as_toml: bool) -> Option<String> {
    if text.trim().is_empty() {
        return None;
    }
    let looks = looks_like(text);
    let extension = Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase());
    let why = match (as_toml, extension.as_deref()) {
        (true, _) => "read as TOML because of the .toml extension".to_string(),
        (false, Some("json")) => "read as JSON because of the .json extension".to_string(),
        (false, _) => "read as JSON (only a .toml file is read as TOML)".to_string(),
    };
    let renamed = |ext: &str| {
        let file = Path::new(name).with_extension(ext);
        let file = file.file_name().map(|f| f.to_string_lossy().into_owned());
        file.unwrap_or_else(|| format!("a .{ext} file"))
    };
    match (as_toml, looks) {
        (false, Some(Looks::Json)) | (true, Some(Looks::Toml)) => None,
        (false, Some(Looks::Toml)) => Some(format!(
            "{why}, but it looks like TOML: rename it to {}",
            renamed("toml")
        )),
        (true, Some(Looks::Json)) => Some(format!(
            "{why}, but it looks like JSON: rename it to {}",
            renamed("json")
        )),
        (_, Some(Looks::Yaml)) => Some(format!(
            "{why}, but it looks like YAML: lb reads JSON or TOML"
        )),
        (false, None) => Some(why),
        (true, None) => None,
    }
}

/// `[table]` or `[[array.of.tables]]`, with an optional comment after it.
fn is_table_header(line: &str) -> bool {
    let line = line.split('#').next().unwrap_or("").trim_end();
    let inner = match line.strip_prefix("[[") {
        Some(rest) => rest.strip_suffix("]]"),
        None => line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']')),
    };
    inner.is_some_and(|name| {
        let name = name.trim();
        !name.is_empty() && name.split('.').all(|part| is_bare_key(part.trim()))
    })
}

/// `key = value`, `dotted.key = value`.
fn is_toml_pair(line: &str) -> bool {
    line.split_once('=').is_some_and(|(key, _)| {
        let key = key.trim();
        !key.is_empty() && key.split('.').all(|part| is_bare_key(part.trim()))
    })
}

/// `key: value`, `key:`, `- key: value`: a bare key, then a colon that ends the line or is followed by a space (a
/// JSON key is quoted, and `127.0.0.1:8001` has no space after its colon).
fn is_yaml_pair(line: &str) -> bool {
    let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
    line.split_once(':').is_some_and(|(key, rest)| {
        is_bare_key(key.trim_end()) && (rest.is_empty() || rest.starts_with([' ', '\t']))
    })
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart() {
        let cases = [
            (
                r#"[{"id": 1, "host": "127.0.0.1", "port": 8001}]"#,
                Some(Looks::Json),
            ),
            ("[\n  {\"id\": 1 \"host\": \"x\"}\n]", Some(Looks::Json)),
            ("{\"backends\": []}", Some(Looks::Json)),
            ("\"backends\"", Some(Looks::Json)),
            ("42", Some(Looks::Json)),
            ("[[backends]]\nid = 1\n", Some(Looks::Toml)),
            (
                "# lb\n[health_check] # checks\ninterval = \"1s\"\n",
                Some(Looks::Toml),
            ),
            ("workers = 2\n", Some(Looks::Toml)),
            ("health_check.interval = \"1s\"\n", Some(Looks::Toml)),
            (
                "backends:\n  - id: 1\n    host: 127.0.0.1\n",
                Some(Looks::Yaml),
            ),
            (
                "- id: 1\n  host: localhost\n  port: 8001\n",
                Some(Looks::Yaml),
            ),
            ("---\n", Some(Looks::Yaml)),
            ("hello\n", None),
            ("127.0.0.1:8001\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(looks_like(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_hint_says_why_and_what_to_do() {
        let toml = "[[backends]]\nid = 1\n";
        assert_eq!(
            hint("/etc/lb/lb.json", toml, false).unwrap(),
            "read as JSON because of the .json extension, but it looks like TOML: rename it to lb.toml"
        );
        assert_eq!(
            hint("lb.conf", toml, false).unwrap(),
            "read as JSON (only a .toml file is read as TOML), but it looks like TOML: rename it to lb.toml"
        );
        assert_eq!(
            hint("lb.json", "backends:\n  - id: 1\n", false).unwrap(),
            "read as JSON because of the .json extension, but it looks like YAML: lb reads JSON or TOML"
        );
        assert_eq!(
            hint("lb.toml", "[{\"id\": 1}]", true).unwrap(),
            "read as TOML because of the .toml extension, but it looks like JSON: rename it to lb.json"
        );
        assert_eq!(
            hint("lb.json", "hello", false).unwrap(),
            "read as JSON because of the .json extension"
        );
        assert_eq!(hint("lb.json", "[{\"id\": 1,}]", false), None);
        assert_eq!(hint("lb.toml", "port = = 1", true), None);
        assert_eq!(hint("lb.json", " \n", false), None);
    }
}
