//! Finds the line of a field path such as `vips[1].backends[0].weight` in block-style YAML
//! text, by indentation and `- ` list items. Used for the line numbers of semantic errors
//! (serde_yaml keeps no spans). Falls back to the nearest enclosing item it finds.

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Splits `a.b[2].c` into segments.
pub fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Segment::Key(rest[..i].to_owned()));
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse() {
                    out.push(Segment::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else {
            out.push(Segment::Key(rest.to_owned()));
        }
    }
    out
}

#[derive(Debug)]
struct Entry {
    line: usize,
    indent: usize,
    /// `None` for a `- ` list item marker, the key otherwise.
    key: Option<String>,
}

fn entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("");
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            continue;
        }
        let mut indent = line.len() - trimmed.len();
        let mut content = trimmed;
        while let Some(rest) = content.strip_prefix("- ").or_else(|| (content == "-").then_some("")) {
            out.push(Entry { line: i + 1, indent, key: None });
            indent += 2 + (rest.len() - rest.trim_start().len());
            content = rest.trim_start();
        }
        if let Some((key, _)) = content.split_once(':') {
            let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
            out.push(Entry { line: i + 1, indent, key: Some(key.to_owned()) });
        }
    }
    out
}

/// The 1-based line of `path` in `text`, or of its nearest enclosing item found.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let entries = entries(text);
    let (mut start, mut end) = (0, entries.len());
    let mut found = None;
    for seg in segments(path) {
        if start >= end {
            break;
        }
        let indent = entries[start].indent;
        let hit = match &seg {
            Segment::Key(k) => (start..end).find(|&j| entries[j].indent == indent && entries[j].key.as_deref() == Some(k)),
            Segment::Index(n) => (start..end)
                .filter(|&j| entries[j].indent == indent && entries[j].key.is_none())
                .nth(*n),
        };
        let Some(j) = hit else { break };
        found = Some(entries[j].line);
        start = j + 1;
        // A key's block ends at the next entry as far left as the key, except that list items
        // may sit at the key's own indentation ("compact" sequences).
        let compact = matches!(seg, Segment::Key(_)) && entries.get(start).is_some_and(|e| e.indent == indent && e.key.is_none());
        end = (start..end)
            .find(|&m| entries[m].indent < indent || (entries[m].indent == indent && !(compact && entries[m].key.is_none())))
            .unwrap_or(end);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "global:\n  interfaces: [eth0]\nvips:\n  - name: web\n    port: 80\n    backends:\n      - address: 10.0.0.1\n        weight: 1\n      - address: 10.0.0.2 # second\n        weight: 9\n  - name: img\n    backends:\n    - address: 10.0.0.3\n";

    #[test]
    fn splits_paths() {
        assert_eq!(
            segments("vips[1].backends[0].weight"),
            vec![Segment::Key("vips".into()), Segment::Index(1), Segment::Key("backends".into()), Segment::Index(0), Segment::Key("weight".into())]
        );
    }

    #[test]
    fn finds_nested_list_items() {
        assert_eq!(line_of(DOC, "global.interfaces"), Some(2));
        assert_eq!(line_of(DOC, "vips[0].name"), Some(4));
        assert_eq!(line_of(DOC, "vips[0].port"), Some(5));
        assert_eq!(line_of(DOC, "vips[0].backends[1].weight"), Some(10));
        assert_eq!(line_of(DOC, "vips[0].backends[1]"), Some(9));
        assert_eq!(line_of(DOC, "vips[1].backends[0].address"), Some(13));
    }

    #[test]
    fn falls_back_to_the_enclosing_item() {
        assert_eq!(line_of(DOC, "vips[1].protocol"), Some(11));
        assert_eq!(line_of(DOC, "vips[0].backends[1].port"), Some(9));
        assert_eq!(line_of(DOC, "nothing"), None);
    }
}
