//! YAML configuration: model, validation with file/line/field errors, differences.
//!
//! `parse` reads and checks a whole file before anything is applied; every error names the
//! file, the line and the field, and says what is wrong.

mod diff;
pub mod duration;
mod endpoints;
mod locate;
mod model;
mod validate;

pub use diff::{ConfigDiff, diff};
pub use endpoints::{BackendEndpoint, ONE_VIP_PER_ENDPOINT, SharedEndpoint, shared_endpoints};
pub use validate::{port_problem, weight_problem};
pub use model::*;

use std::{fmt, path::Path};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (as given).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path such as `vips[1].backends[0].weight` (empty for syntax errors).
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Splits serde_yaml's "path: message at line L column C" into field and message.
fn from_serde(file: &str, source: &str, e: &serde_yaml::Error) -> ConfigError {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let (field, mut message) = match text.split_once(": ") {
        Some((f, m)) if !f.contains(' ') && !f.is_empty() => (f.to_owned(), m.to_owned()),
        _ => (String::new(), text),
    };
    const HINTS: [(&str, &str); 5] = [
        ("tab character", "indent with spaces, YAML does not allow tabs"),
        ("invalid IP address syntax", "write an IPv4 or IPv6 address such as 10.0.0.1 or 2001:db8::1"),
        ("invalid socket address syntax", "write IP:PORT such as 127.0.0.1:9100 or [::1]:9100"),
        ("unknown anchor", "an alias (`*name`) refers to no anchor (`&name`) written before it"),
        ("more than one document", "the file holds a second YAML document (after `---` or `...`, or where a line is indented less than the first key, or a byte order mark): keep one, its top-level keys at the same indentation"),
    ];
    if let Some((_, hint)) = HINTS.iter().find(|(what, _)| message.contains(what)) {
        message = format!("{message}: {hint}");
    }
    message = name_mappings(&message);
    if field.is_empty() && message.starts_with("invalid type") {
        message = format!("{}: this is not a load balancer configuration (a YAML mapping with `global:` and `vips:`)", shorten_quotes(&message));
    }
    let line = e.location().map(|l| l.line()).or_else(|| if message.contains("more than one document") { second_document(source) } else { None });
    ConfigError { file: file.to_owned(), line, field, message: shorten_quotes(&message) }
}

/// The 1-based line where a second YAML document starts: `---` or `...` after content, or
/// content indented less than the first key (which ends the first document), or a byte
/// order mark after the start.
fn second_document(text: &str) -> Option<usize> {
    let mut first_indent = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        let marker = line == "---" || line.starts_with("--- ") || line == "...";
        if marker && first_indent.is_some() {
            return Some(i + 1);
        }
        let trimmed = line.trim_start();
        if marker || trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('%') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        match first_indent {
            None => first_indent = Some(indent),
            Some(first) if indent < first => return Some(i + 1),
            Some(_) => {}
        }
    }
    // A byte order mark after the start starts a document too.
    text.lines().position(|l| l.contains('\u{feff}')).map(|i| i + 1)
}

/// serde's "expected struct Global" names a Rust type; the file has a mapping there.
fn name_mappings(message: &str) -> String {
    const MAPPINGS: [(&str, &str); 5] = [
        ("expected struct Document", "expected the mapping of the whole file"),
        ("expected struct Global", "expected the mapping of the `global` settings (`key: value` lines)"),
        ("expected struct Vip", "expected the mapping of one VIP (`name:`, `address:`, `port:`, ...)"),
        ("expected struct HealthCheck", "expected the mapping of a health check (`type:`, `path:`, ...)"),
        ("expected struct Backend", "expected the mapping of one backend (`address:`, `port:`, ...)"),
    ];
    MAPPINGS.iter().fold(message.to_owned(), |m, (from, to)| m.replace(from, to))
}

/// Cuts every part of `message` quoted in `"` or `` ` `` longer than 40 characters to its first
/// 40 and an ellipsis, and the whole to 400, so that an error never reprints a whole file.
fn shorten_quotes(message: &str) -> String {
    const KEEP: usize = 40;
    const MAX_MESSAGE: usize = 400;
    let mut out = String::with_capacity(message.len().min(512));
    let mut quote = None;
    let mut inside = 0;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
            }
            Some(_) => {
                inside += 1;
                match inside.cmp(&(KEEP + 1)) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        out.push('…');
                        continue;
                    }
                    std::cmp::Ordering::Greater => continue,
                }
            }
            None if c == '"' || c == '`' => {
                quote = Some(c);
                inside = 0;
            }
            None => {}
        }
        out.push(c);
    }
    // A quote inside a quoted value ends the scan early: the whole is capped as well.
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE).chain(std::iter::once('…')).collect();
    }
    out
}

/// Parses and validates the text of a configuration file named `file_name`.
pub fn parse(file_name: &str, text: &str) -> Result<Config, ConfigErrors> {
    // A byte order mark (editors on Windows write one) makes serde_yaml read a file of several
    // keys as several documents; YAML allows it at the start and it means nothing there.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: model::file::Document = serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![from_serde(file_name, text, &e)]))?;
    validate::validate(&doc).map_err(|problems| {
        ConfigErrors(
            problems
                .into_iter()
                .map(|(field, message)| ConfigError {
                    file: file_name.to_owned(),
                    line: locate::line_of(text, &field),
                    field,
                    message: shorten_quotes(&message),
                })
                .collect(),
        )
    })
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigErrors(vec![ConfigError { file: name.clone(), line: None, field: String::new(), message: format!("cannot read the file: {e}") }])
    })?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigErrors(vec![not_utf8(&name, e.as_bytes(), e.utf8_error())]))?;
    parse(&name, &text)
}

/// The error for a file that is not UTF-8: the line and column of its first bad byte.
fn not_utf8(file: &str, bytes: &[u8], e: std::str::Utf8Error) -> ConfigError {
    let good = &bytes[..e.valid_up_to()];
    let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = good.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    let byte = bytes[e.valid_up_to()];
    ConfigError {
        file: file.to_owned(),
        line: Some(line),
        field: String::new(),
        message: format!("byte 0x{byte:02x} is not UTF-8 (byte {column} of the line): save the file as UTF-8"),
    }
}

#[cfg(test)]
mod tests;
