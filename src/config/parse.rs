//! Reading a file's text into the file layer ([`FileConfig`]), TOML or JSON, and rendering what the parser refuses
//! as one line: `<file>:<line>:<col>: <key path>: <problem>`.

use serde_path_to_error::Segment;

use super::file::{ArrayForm, FileConfig};

/// Parses `text`, the contents of the file called `name`, as TOML (always the full form) or JSON. JSON picks the form
/// by its first non-whitespace character rather than by an untagged enum, which would replace every precise error
/// with "data did not match any variant". The error is the whole line shown to the user.
pub(super) fn parse(name: &str, text: &str, toml: bool) -> Result<FileConfig, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(format!(
            "{name}: file is empty (expected a list of backends)"
        ));
    }
    if toml {
        let de = toml::Deserializer::new(text);
        return serde_path_to_error::deserialize(de).map_err(|e| {
            let span = e.inner().span();
            let at = span.clone().map(|span| line_col(text, span.start));
            // The toml crate says nothing (an empty message) when the file ends right after `key =`: what a
            // reload reads while an editor is still writing the file.
            let at_end = span.is_some_and(|span| span.start >= text.trim_end().len());
            let message = match e.inner().message() {
                "" if at_end => "unexpected end of file: a value is missing",
                "" => "syntax error",
                message => message,
            };
            one_line(name, at, &key_path(e.path()), message)
        });
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let config = if text.trim_start().starts_with('[') {
        serde_path_to_error::deserialize(&mut *de).map(|backends: ArrayForm| backends.into())
    } else {
        serde_path_to_error::deserialize(&mut *de)
    };
    let config = config.map_err(|e| json_error(name, &key_path(e.path()), e.inner()))?;
    de.end().map_err(|e| json_error(name, "", &e))?;
    Ok(config)
}

fn json_error(name: &str, path: &str, e: &serde_json::Error) -> String {
    let message = e.to_string();
    if e.line() == 0 {
        return one_line(name, None, path, &printable(&message));
    }
    // serde_json appends the position to its message; we print it in front instead.
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message);
    // serde_json's messages are one line but for what they quote from the file: escape that before the split.
    one_line(
        name,
        Some((e.line(), e.column().max(1))),
        path,
        &printable(message),
    )
}

/// The key path as the user wrote it: `backends[1].port`. Unlike `Path`'s `Display`, it leaves out the `?` that
/// stands for a key not read yet (e.g. after a trailing comma), which would only puzzle the reader.
fn key_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// `<file>:<line>:<col>: <key path>: <problem>`, leaving out the parts that are unknown; always one line (TOML's
/// syntax errors span several).
fn one_line(name: &str, at: Option<(usize, usize)>, path: &str, message: &str) -> String {
    let mut out = name.to_string();
    if let Some((line, col)) = at {
        out.push_str(&format!(":{line}:{col}"));
    }
    out.push_str(": ");
    if !path.is_empty() {
        out.push_str(&printable(path));
        out.push_str(": ");
    }
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    out.push_str(&printable(&lines.join("; ")));
    out
}

/// `text` with control characters escaped (`\n`, `\u{1b}`): a key or a value quoted in a message may hold any, and
/// the message must stay one line that cannot move the terminal's cursor.
fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_debug().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}
