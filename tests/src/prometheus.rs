//! A strict parser of the Prometheus text exposition format (version 0.0.4), written from the
//! format's documentation rather than from the agent's code, for the metrics tests: every family
//! has one `# HELP` and one `# TYPE` before its samples, names and labels follow the grammar,
//! values are numbers, counters end in `_total`, and no series appears twice.

use std::collections::{BTreeMap, BTreeSet};

/// A sample's labels, sorted by name.
pub type Labels = Vec<(String, String)>;

/// One family: its type, help and samples (label set → value).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Family {
    /// counter, gauge, histogram, summary or untyped.
    pub kind: String,
    /// The help text.
    pub help: String,
    /// Samples: sorted `name="value"` labels → value.
    pub samples: BTreeMap<Labels, f64>,
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `{a="x",b="y"}` (escapes `\\`, `\"`, `\n`); returns the labels and the rest.
fn labels(text: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = text.strip_prefix('{') else {
        return Ok((Vec::new(), text));
    };
    let mut out = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after));
        }
        let eq = rest.find('=').ok_or("a label without '='")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        out.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses a whole exposition into its families, or says what breaks the format.
pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut typed = BTreeSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or_else(|| at("HELP without text".into()))?;
            if !valid_metric_name(name) || families.get(name).is_some_and(|f| !f.help.is_empty()) {
                return Err(at(format!("bad or repeated HELP for {name}")));
            }
            families.entry(name.to_owned()).or_default().help = help.to_owned();
            current = Some(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE without a type".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) || !typed.insert(name.to_owned()) {
                return Err(at(format!("bad or repeated TYPE for {name}")));
            }
            if families.get(name).is_some_and(|f| !f.samples.is_empty()) {
                return Err(at(format!("TYPE of {name} after its samples")));
            }
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
            current = Some(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        if current.as_deref() != Some(name) {
            return Err(at(format!("sample of {name} outside its family's block")));
        }
        let (mut labels, rest) = labels(&line[name_end..]).map_err(at)?;
        let value = rest.trim_start().split(' ').next().unwrap_or("");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at(format!("bad value {v:?}")))?,
        };
        labels.sort();
        let family = families.get_mut(name).ok_or_else(|| at("no family".into()))?;
        if family.help.is_empty() || family.kind.is_empty() {
            return Err(at(format!("{name} has no HELP or no TYPE")));
        }
        if family.samples.insert(labels, value).is_some() {
            return Err(at(format!("a repeated series of {name}")));
        }
    }
    for (name, family) in &families {
        if family.kind == "counter" && !name.ends_with("_total") {
            return Err(format!("counter {name} does not end in _total"));
        }
        if family.kind == "counter" && family.samples.values().any(|v| *v < 0.0) {
            return Err(format!("counter {name} is negative"));
        }
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_format_and_refuses_its_breaches() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\na_total 4\n# HELP g G.\n# TYPE g gauge\ng 0.5\n";
        let f = parse(good).unwrap();
        assert_eq!(f["a_total"].samples.len(), 2);
        assert_eq!(f["a_total"].samples[&vec![("x".into(), "1".into()), ("y".into(), "q\"".into())]], 3.0);
        for bad in [
            "a_total 1\n",                                                   // no HELP/TYPE
            "# HELP a A.\n# TYPE a counter\na 1\n",                         // counter without _total
            "# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n",                      // repeated series
            "# HELP g G.\n# TYPE g gauge\ng{1x=\"a\"} 1\n",                 // bad label name
            "# HELP g G.\n# TYPE g gauge\ng one\n",                         // bad value
            "# HELP g G.\n# TYPE g gauge\n# HELP h H.\n# TYPE h gauge\ng 1\n", // outside its block
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
