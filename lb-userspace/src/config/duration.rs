//! Durations as written in the configuration: `250ms`, `2s`, `1m`, or a bare number of seconds.

use std::time::Duration;

/// Parses `"<n>ms"`, `"<n>s"`, `"<n>m"` or `"<n>"` (seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], t[i..].trim()),
        None => (t, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write it like 500ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?} is not a duration: write it like 500ms, 2s or 1m")),
    }
}

/// Writes a duration so that [`parse`] reads it back.
pub fn format(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert!(parse("2 parsecs").is_err());
        assert!(parse("s").is_err());
        assert!(parse("-1s").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for d in [Duration::from_millis(250), Duration::from_secs(2), Duration::from_millis(1500), Duration::ZERO] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
