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
fn from_serde(file: &str, e: &serde_yaml::Error) -> ConfigError {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let (field, mut message) = match text.split_once(": ") {
        Some((f, m)) if !f.contains(' ') && !f.is_empty() => (f.to_owned(), m.to_owned()),
        _ => (String::new(), text),
    };
    const HINTS: [(&str, &str); 3] = [
        ("tab character", "indent with spaces, YAML does not allow tabs"),
        ("invalid IP address syntax", "write an IPv4 or IPv6 address such as 10.0.0.1 or 2001:db8::1"),
        ("invalid socket address syntax", "write IP:PORT such as 127.0.0.1:9100 or [::1]:9100"),
    ];
    if let Some((_, hint)) = HINTS.iter().find(|(what, _)| message.contains(what)) {
        message = format!("{message}: {hint}");
    }
    if field.is_empty() && message.starts_with("invalid type") {
        message = format!("{}: this is not a load balancer configuration (a YAML mapping with `global:` and `vips:`)", shorten_quotes(&message));
    }
    ConfigError { file: file.to_owned(), line: e.location().map(|l| l.line()), field, message: shorten_quotes(&message) }
}

/// Cuts every double-quoted part of `message` longer than 40 characters to its first 40 and
/// an ellipsis, so that an error never reprints a whole file.
fn shorten_quotes(message: &str) -> String {
    const KEEP: usize = 40;
    let mut out = String::with_capacity(message.len().min(512));
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('"');
        // Odd parts (0-based after the first) are inside quotes.
        if i % 2 == 0 && part.chars().count() > KEEP {
            out.extend(part.chars().take(KEEP));
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Parses and validates the text of a configuration file named `file_name`.
pub fn parse(file_name: &str, text: &str) -> Result<Config, ConfigErrors> {
    let doc: model::file::Document = serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![from_serde(file_name, &e)]))?;
    validate::validate(&doc).map_err(|problems| {
        ConfigErrors(
            problems
                .into_iter()
                .map(|(field, message)| ConfigError {
                    file: file_name.to_owned(),
                    line: locate::line_of(text, &field),
                    field,
                    message,
                })
                .collect(),
        )
    })
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError { file: name.clone(), line: None, field: String::new(), message: format!("cannot read the file: {e}") }])
    })?;
    parse(&name, &text)
}

#[cfg(test)]
mod tests;
