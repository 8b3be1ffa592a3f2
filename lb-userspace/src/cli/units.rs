//! Units for the CLI's human output: counts (1.0k, 1.0M, 1.0G), rates (pkt/s, bit/s), bytes
//! (B, KiB, MiB, GiB), durations (ms, s) and plural forms. JSON output keeps raw numbers.

/// A value with a decimal prefix: below 1,000 as it is (one decimal if it is fractional and
/// below 10), from 1,000 on with one decimal and k, M, G, T, P. A value that rounds to 1000.0
/// of a prefix takes the next one (999,960 is "1.0M", not "1000.0k").
pub fn si(value: f64) -> String {
    let v = if value.is_finite() && value > 0.0 { value } else { 0.0 };
    if v < 999.5 {
        // Whole numbers (counts) print exactly; fractions below 10 keep a decimal.
        if v.fract() == 0.0 || v >= 9.95 {
            return format!("{v:.0}");
        }
        return format!("{v:.1}");
    }
    let mut scaled = v;
    for prefix in ["k", "M", "G", "T", "P"] {
        scaled /= 1000.0;
        if scaled < 999.95 || prefix == "P" {
            return format!("{scaled:.1}{prefix}");
        }
    }
    unreachable!("the loop returns at P")
}

/// A count: 999, 1.0k, 1.0M, 1.0G.
pub fn count(n: u64) -> String {
    si(n as f64)
}

/// A packet rate: "0 pkt/s", "1.2k pkt/s".
pub fn pps(per_second: f64) -> String {
    format!("{} pkt/s", si(per_second))
}

/// A bit rate from bytes per second: "8.0k bit/s" for 1,000 B/s.
pub fn bps_from_bytes(bytes_per_second: f64) -> String {
    format!("{} bit/s", si(bytes_per_second * 8.0))
}

/// A rate of events: "3.5/s", "12/s", "1.0k/s".
pub fn per_second(per_second: f64) -> String {
    format!("{}/s", si(per_second))
}

/// Bytes with binary prefixes: "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "2.0 GiB".
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut scaled = n as f64;
    for prefix in ["KiB", "MiB", "GiB", "TiB", "PiB"] {
        scaled /= 1024.0;
        if scaled < 1023.95 || prefix == "PiB" {
            return format!("{scaled:.1} {prefix}");
        }
    }
    unreachable!("the loop returns at PiB")
}

/// A duration given in milliseconds: "0.35 ms" below 1 ms, "9.5 ms" below 1 s, "1.50 s" from
/// 1 s on.
pub fn millis(ms: f64) -> String {
    let ms = if ms.is_finite() && ms > 0.0 { ms } else { 0.0 };
    if ms == 0.0 {
        "0 ms".to_owned()
    } else if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 999.95 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// An optional duration in milliseconds; "-" when there is none.
pub fn millis_or_dash(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), millis)
}

/// Whole seconds as "42 s", "5 min 03 s", "2 h 05 min", "3 d 04 h".
pub fn uptime(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    if seconds < 60 {
        format!("{s} s")
    } else if seconds < 3600 {
        format!("{m} min {s:02} s")
    } else if seconds < 86_400 {
        format!("{h} h {m:02} min")
    } else {
        format!("{d} d {h:02} h")
    }
}

/// A share as a percentage with one decimal: "62.5%".
pub fn percent(fraction: f64) -> String {
    let f = if fraction.is_finite() { fraction } else { 0.0 };
    format!("{:.1}%", f * 100.0)
}

/// `n` (as a [`count`]) and a noun in the right number: "1 backend", "2 backends",
/// "1.2k backends".
pub fn plural(n: u64, singular: &str) -> String {
    plural_with(n, singular, &format!("{singular}s"))
}

/// `n` (as a [`count`]) and a noun with an irregular plural: "1 entry", "3 entries".
pub fn plural_with(n: u64, singular: &str, plural: &str) -> String {
    format!("{} {}", count(n), if n == 1 { singular } else { plural })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_at_the_prefix_edges() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1), "1");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1.0k");
        assert_eq!(count(1049), "1.0k");
        assert_eq!(count(1050), "1.1k");
        assert_eq!(count(999_949), "999.9k");
        // Rounds up into the next prefix instead of printing 1000.0k.
        assert_eq!(count(999_950), "1.0M");
        assert_eq!(count(1_023_370), "1.0M");
        assert_eq!(count(1_000_000_000), "1.0G");
        assert_eq!(count(2_500_000_000_000), "2.5T");
        assert_eq!(count(u64::MAX), "18446.7P");
    }

    #[test]
    fn fractional_and_odd_rates() {
        assert_eq!(si(0.5), "0.5");
        assert_eq!(si(9.94), "9.9");
        assert_eq!(si(9.96), "10");
        assert_eq!(si(12.4), "12");
        assert_eq!(si(999.4), "999");
        assert_eq!(si(999.5), "1.0k");
        assert_eq!(si(1e9), "1.0G");
        assert_eq!(si(f64::NAN), "0");
        assert_eq!(si(-3.0), "0");
        assert_eq!(pps(0.0), "0 pkt/s");
        assert_eq!(pps(1234.0), "1.2k pkt/s");
        assert_eq!(bps_from_bytes(125.0), "1.0k bit/s");
        assert_eq!(bps_from_bytes(1.25e8), "1.0G bit/s");
        assert_eq!(bps_from_bytes(0.5), "4 bit/s");
        assert_eq!(per_second(2.5), "2.5/s");
        assert_eq!(per_second(3.0), "3/s");
    }

    #[test]
    fn bytes_with_binary_prefixes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(bytes(1_000_000_000), "953.7 MiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn durations_carry_their_unit() {
        assert_eq!(millis(0.0), "0 ms");
        assert_eq!(millis(0.35), "0.35 ms");
        assert_eq!(millis(9.5), "9.5 ms");
        assert_eq!(millis(999.9), "999.9 ms");
        assert_eq!(millis(999.96), "1.00 s");
        assert_eq!(millis(1500.0), "1.50 s");
        assert_eq!(millis_or_dash(None), "-");
        assert_eq!(uptime(0), "0 s");
        assert_eq!(uptime(59), "59 s");
        assert_eq!(uptime(60), "1 min 00 s");
        assert_eq!(uptime(3599), "59 min 59 s");
        assert_eq!(uptime(3600 + 5 * 60), "1 h 05 min");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600), "3 d 04 h");
    }

    #[test]
    fn plurals_and_shares() {
        assert_eq!(plural(0, "backend"), "0 backends");
        assert_eq!(plural(1, "backend"), "1 backend");
        assert_eq!(plural(2, "backend"), "2 backends");
        assert_eq!(plural_with(1, "entry", "entries"), "1 entry");
        assert_eq!(plural_with(3, "entry", "entries"), "3 entries");
        assert_eq!(plural_with(1_480, "entry", "entries"), "1.5k entries");
        assert_eq!(percent(0.625), "62.5%");
        assert_eq!(percent(0.0), "0.0%");
        assert_eq!(percent(f64::NAN), "0.0%");
    }
}
