//! A mutation fuzzer for configuration files: valid files (the examples, the lab's) mutated by
//! a seeded generator (lines deleted, duplicated, swapped and re-indented, scalars replaced by
//! edge values, unknown keys, anchors and aliases, alias bombs, deep nesting, tabs, a BOM,
//! invalid UTF-8) and checked by `config::parse` in-process, a smaller share through the real
//! `lb config check`. Invariants: no panic; a rejected file gets errors that each meet
//! [`error_problem`]'s rule; an accepted file round-trips (its YAML form parses back to an
//! equal configuration).
//!
//! Replay: `LB_FUZZ_SEED=S LB_FUZZ_CASE=I cargo test -p lb-tests --test config_fuzz` runs case
//! `I` of seed `S` alone and prints it; `LB_FUZZ_CASES=N` runs more (or fewer) cases.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::lb_binary,
    fuzz::cases::Cases,
    lab_config::{LabConfig, Vip},
};
use lb_userspace::config::{self, Config, ConfigError, ConfigErrors};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

/// The seed unless `LB_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x1b_c0f1_6f22;
/// Cases run in-process unless `LB_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u64 = 10_000;
/// Cases run through `lb config check` (each a process).
const CLI_CASES: u64 = 500;
/// The run stops (and says so) after this long, whatever the count.
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// Longest error message accepted: an error never reprints a file.
const MAX_MESSAGE: usize = 600;


/// The valid files mutations start from.
fn seeds() -> Vec<String> {
    let lab = LabConfig::new()
        .global("metrics_address: 127.0.0.1:9100")
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080"]).weighted_backend("10.0.13.2:8080", 7))
        .vip(Vip::tcp("web6", "fd00::10", 443).backends(&["fd00:11::2:8080"]))
        .render()
        .replace("{socket}", "/run/lb/fuzz.sock");
    let seeds = vec![
        include_str!("../../examples/lab.yaml").to_owned(),
        include_str!("../../examples/edge.yaml").to_owned(),
        lab,
        "global:\n  interfaces: [eth0]\nvips:\n  - name: dns\n    address: 10.0.0.1\n    port: 53\n    protocol: udp\n    scheduler: round-robin\n    udp_idle_timeout: 30s\n    health_check:\n      type: none\n    backends:\n      - address: 10.1.0.1\n        port: 5353\n        state: draining\n      - address: 10.1.0.2\n        port: 5353\n        weight: 0\n".to_owned(),
    ];
    for s in &seeds {
        if let Err(e) = config::parse("seed.yaml", s) {
            panic!("a seed file is invalid: {e}\n{s}");
        }
    }
    seeds
}

/// Values put in place of a scalar.
const EDGE_VALUES: &[&str] = &[
    "", "''", "\"\"", "0", "-1", "1", "2", "4294967295", "4294967296", "18446744073709551615", "18446744073709551616",
    "-9223372036854775809", "99999999999999999999999999999", "1e400", ".nan", "NaN", ".inf", "-.inf", "0.5", "0x10", "0o17",
    "65535", "65536", "~", "null", "true", "no", "[]", "{}", "[1, [2, [3]]]", "{a: 1}", "ümlaut ✓ 😀", "\u{202e}evil",
    "\"a\\u0000b\"", "\"\\r\\nX: y\"", "10.0.0.1", "10.0.0.10", "10.0.11.2", "2001:db8::1", "fd00::10", "::", "::1",
    "0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.1", "ff02::1", "169.254.1.1", "::ffff:10.0.0.1", "10.0.0.1:80",
    "[::1]:80", "10.0.0.256", "10.0.0", "eth0", "lbc", "an-interface-name-far-too-long", "web", "images", "1ms", "0s",
    "0ms", "99999999999h", "18446744073709551615s", "-5s", "1.5s", "2 s", "*a", "&a 1", "!!binary aGVsbG8=", "!custom 1",
    "'unterminated", "\"unterminated", "a: b", "- x", "|\n  block", ">-", "%", "@", "`", "#", "tcp", "udp", "sctp",
    "maglev", "round-robin", "least-conn", "up", "down", "draining", "generic", "auto", "json", "/health", "health",
    "/a b", "65537", "1009", "4", "1000000000", "[200, 301]", "[600]", "[99]",
];

/// Characters inserted at random places.
const SPECIAL: &[char] = &[':', '-', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', ',', '?', '\t', '\n', ' ', '\r', '\u{0}', '\u{feff}', 'é'];

/// A document whose aliases expand to 10⁹ strings (the "billion laughs").
fn alias_bomb() -> String {
    let mut s = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..9 {
        let p = i - 1;
        s.push_str(&format!("a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"));
    }
    s
}

fn char_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One mutation of `text` (as lines or as bytes).
fn mutate(rng: &mut ChaCha8Rng, text: &mut Vec<u8>, seeds: &[String]) {
    let Ok(s) = std::str::from_utf8(text) else {
        // Already bytes: flip one more.
        let i = rng.gen_range(0..text.len().max(1));
        if let Some(b) = text.get_mut(i) {
            *b ^= 1 << rng.gen_range(0..8);
        }
        return;
    };
    let s = s.to_owned();
    let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let n = lines.len();
    let pick = |rng: &mut ChaCha8Rng| rng.gen_range(0..n);
    let out: String = match rng.gen_range(0..22) {
        0 => {
            lines.remove(pick(rng));
            lines.join("\n")
        }
        1 => {
            let i = pick(rng);
            let l = lines[i].clone();
            lines.insert(i, l);
            lines.join("\n")
        }
        2 => {
            let (i, j) = (pick(rng), pick(rng));
            lines.swap(i, j);
            lines.join("\n")
        }
        3 => {
            let i = pick(rng);
            let l = &mut lines[i];
            match rng.gen_range(0..4) {
                0 => l.insert(0, ' '),
                1 => l.insert_str(0, "  "),
                2 => l.insert(0, '\t'),
                _ => {
                    if l.starts_with(' ') {
                        l.remove(0);
                    }
                }
            }
            lines.join("\n")
        }
        4..=8 => {
            // A scalar after `key: ` or `- ` replaced by an edge value.
            let i = pick(rng);
            let value = EDGE_VALUES.choose(rng).copied().unwrap_or("");
            let l = &mut lines[i];
            if let Some(at) = l.find(": ") {
                l.truncate(at + 2);
                l.push_str(value);
            } else if let Some(at) = l.find("- ") {
                l.truncate(at + 2);
                l.push_str(value);
            } else {
                l.push_str(value);
            }
            lines.join("\n")
        }
        9 => {
            // A flow-mapping value (`{ address: ..., port: ... }`) replaced inside.
            let value = EDGE_VALUES.choose(rng).copied().unwrap_or("");
            let key = ["address", "port", "weight", "state", "interfaces", "name"].choose(rng).copied().unwrap_or("port");
            match s.find(&format!("{key}: ")) {
                Some(at) => {
                    let start = at + key.len() + 2;
                    let end = s[start..].find([',', '}', '\n', ']']).map_or(s.len(), |e| start + e);
                    format!("{}{value}{}", &s[..start], &s[end..])
                }
                None => s.clone(),
            }
        }
        10 => {
            // An unknown key next to a random line.
            let i = pick(rng);
            let indent: String = lines[i].chars().take_while(|c| *c == ' ').collect();
            let key = ["colour", "adress", "Port", "weight", "vips", "global", "backends", "\"\"", "? complex"].choose(rng).copied().unwrap_or("x");
            lines.insert(i, format!("{indent}{key}: red"));
            lines.join("\n")
        }
        11 => {
            let at = char_boundary(&s, rng.gen_range(0..=s.len()));
            s[..at].to_owned()
        }
        12 => {
            let at = char_boundary(&s, rng.gen_range(0..=s.len()));
            let c = *SPECIAL.choose(rng).unwrap_or(&':');
            format!("{}{c}{}", &s[..at], &s[at..])
        }
        13 => {
            let at = char_boundary(&s, rng.gen_range(0..=s.len()));
            let mut out = s.clone();
            if let Some(c) = out[at..].chars().next() {
                out.replace_range(at..at + c.len_utf8(), "");
            }
            out
        }
        14 => format!("\u{feff}{s}"),
        15 => s.replace('\n', "\r\n"),
        16 => {
            // An anchor on one value, an alias in place of another.
            let (i, j) = (pick(rng), pick(rng));
            if let Some(at) = lines[i].find(": ") {
                lines[i].insert_str(at + 2, "&x ");
            }
            if let Some(at) = lines[j].find(": ") {
                lines[j].truncate(at + 2);
                lines[j].push_str("*x");
            }
            lines.join("\n")
        }
        17 => match rng.gen_range(0..4) {
            0 => format!("{s}\n{}", alias_bomb()),
            1 => format!("{}{s}", alias_bomb()),
            2 => {
                let depth = rng.gen_range(100..3_000);
                format!("{s}\nextra: {}{}", "[".repeat(depth), "]".repeat(depth))
            }
            _ => {
                let depth = rng.gen_range(100..3_000);
                format!("{}{s}", "- ".repeat(depth))
            }
        },
        18 => match rng.gen_range(0..3) {
            0 => format!("---\n{s}\n---\n{s}"),
            1 => format!("{s}\n...\n"),
            _ => format!("%YAML 1.2\n---\n{s}"),
        },
        19 => {
            // A line from another seed.
            let other = seeds.choose(rng).map(String::as_str).unwrap_or("");
            let other: Vec<&str> = other.lines().collect();
            if let Some(l) = other.choose(rng) {
                lines.insert(pick(rng), (*l).to_owned());
            }
            lines.join("\n")
        }
        20 => {
            // A very long scalar.
            let i = pick(rng);
            let long = "x".repeat(rng.gen_range(100..200_000));
            if let Some(at) = lines[i].find(": ") {
                lines[i].truncate(at + 2);
            }
            lines[i].push_str(&long);
            lines.join("\n")
        }
        _ => {
            // Invalid UTF-8.
            let mut bytes = s.into_bytes();
            let at = rng.gen_range(0..=bytes.len());
            let bad: &[u8] = [&[0xff][..], &[0xc3], &[0xed, 0xa0, 0x80], &[0xfe, 0xfe]].choose(rng).copied().unwrap_or(&[0xff]);
            bytes.splice(at..at, bad.iter().copied());
            *text = bytes;
            return;
        }
    };
    *text = out.into_bytes();
}

/// Case `index` of `seed`: a seed file with one to four mutations, as bytes.
fn case(seed: u64, index: u64, seeds: &[String]) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let mut text = seeds.choose(&mut rng).cloned().unwrap_or_default().into_bytes();
    for _ in 0..rng.gen_range(1..=4) {
        mutate(&mut rng, &mut text, seeds);
    }
    text
}

/// The rule every error of a rejected file meets; `None` when it does, else what is missing.
///
/// - It names the file it is about (`file` is the name given).
/// - It says where: a line inside the file (1 ..= its lines + 1), or a field path (`a.b[2].c`,
///   no spaces).
/// - It says what is wrong: a message of at least three words, at most [`MAX_MESSAGE`]
///   characters (it never reprints the file), with no Rust type name in it.
fn error_problem(e: &ConfigError, file: &str, text: &[u8]) -> Option<String> {
    if e.file != file {
        return Some(format!("names file {:?}, not {file:?}", e.file));
    }
    // YAML counts `\r\n`, `\r` and `\n` each as one line break (serde_yaml's lines).
    let yaml_breaks = text.iter().enumerate().filter(|&(i, &b)| b == b'\n' || (b == b'\r' && text.get(i + 1) != Some(&b'\n'))).count();
    let lines = yaml_breaks + 1;
    match (e.line, e.field.is_empty()) {
        (None, true) => return Some("says neither the line nor the field".into()),
        (Some(l), _) if l == 0 || l > lines + 1 => return Some(format!("line {l} is outside the file ({lines} lines)")),
        _ => {}
    }
    if !e.field.is_empty() && e.field.chars().any(char::is_whitespace) {
        return Some(format!("field {:?} is not a field path", e.field));
    }
    if e.message.split_whitespace().count() < 3 {
        return Some("the message does not say what is wrong".into());
    }
    if e.message.chars().count() > MAX_MESSAGE {
        return Some(format!("the message is {} characters long", e.message.chars().count()));
    }
    const RUST_NAMES: &[&str] = &["struct ", "enum ", "Option<", "Vec<", "::", "Document", "Dur::", "Some(", "None"];
    // `::` is an IPv6 address in a message that quotes one; only the type names count.
    if let Some(name) = RUST_NAMES.iter().filter(|n| **n != "::").find(|n| e.message.contains(**n)) {
        return Some(format!("the message shows the Rust name {name:?}"));
    }
    None
}

/// What is wrong with the outcome of `text`: a panic, an error breaking the rule, an accepted
/// file that does not round-trip.
fn check(file: &str, text: &[u8], outcome: std::thread::Result<Result<Config, ConfigErrors>>) -> Option<String> {
    match outcome {
        Err(panic) => {
            let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()));
            Some(format!("panicked: {}", what.unwrap_or_default()))
        }
        Ok(Err(errors)) if errors.0.is_empty() => Some("rejected with no error".into()),
        Ok(Err(errors)) => errors.0.iter().find_map(|e| error_problem(e, file, text).map(|p| format!("error {e:?}: {p}"))),
        Ok(Ok(cfg)) => {
            let yaml = match serde_yaml::to_string(&cfg.to_file()) {
                Ok(y) => y,
                Err(e) => return Some(format!("accepted, but its YAML form cannot be written: {e}")),
            };
            match config::parse("again.yaml", &yaml) {
                Ok(again) if again == cfg => None,
                Ok(again) => Some(format!("accepted, but its YAML form parses to another configuration:\n{yaml}\n{again:?}\n{cfg:?}")),
                Err(e) => Some(format!("accepted, but its YAML form is rejected: {e}\n{yaml}")),
            }
        }
    }
}

/// Parses `text` as the file `file` in-process: through `config::parse` when it is UTF-8,
/// through `config::load` from a file otherwise.
fn run_in_process(dir: &Path, file: &str, text: &[u8]) -> (String, std::thread::Result<Result<Config, ConfigErrors>>) {
    match std::str::from_utf8(text) {
        Ok(s) => (file.to_owned(), catch_unwind(AssertUnwindSafe(|| config::parse(file, s)))),
        Err(_) => {
            let path = dir.join(file);
            std::fs::write(&path, text).expect("writing a case");
            let name = path.display().to_string();
            (name, catch_unwind(AssertUnwindSafe(|| config::load(&path))))
        }
    }
}

/// A private directory for case files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("lb-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prints a failing case (seed, index, text), keeps it as a file and fails.
fn fail(seed: u64, index: u64, text: &[u8], problem: &str) -> ! {
    let keep = std::env::temp_dir().join(format!("lb-config-fuzz-{seed:#x}-{index}.yaml"));
    let _ = std::fs::write(&keep, text);
    let shown = String::from_utf8_lossy(&text[..text.len().min(4096)]).into_owned();
    panic!(
        "config fuzz case {index} of seed {seed:#x} failed: {problem}\nreplay: LB_FUZZ_SEED={seed:#x} LB_FUZZ_CASE={index} cargo test -p lb-tests --test config_fuzz\nthe case is kept in {}\n{shown:?}",
        keep.display()
    );
}

#[test]
fn mutated_configuration_files_never_panic_and_every_error_names_what_is_wrong() {
    let seeds = seeds();
    let cases = Cases::from_env(DEFAULT_SEED, DEFAULT_CASES);
    let Cases { seed, only, count, survey } = cases;
    let dir = TempDir::new("config-fuzz");
    let started = Instant::now();
    let (mut accepted, mut rejected, mut ran) = (0u64, 0u64, 0u64);
    let mut found = std::collections::HashMap::<String, (u64, u64)>::new();
    let mut slowest = Vec::new();
    for index in cases.indices() {
        if started.elapsed() > TIME_LIMIT {
            eprintln!("config fuzz: stopped at the time limit ({TIME_LIMIT:?}) after {ran} of {count} cases");
            break;
        }
        let t0 = Instant::now();
        let text = case(seed, index, &seeds);
        if only.is_some() {
            eprintln!("case {index} of seed {seed:#x}:\n{}", String::from_utf8_lossy(&text));
        }
        let (file, outcome) = run_in_process(&dir.0, "fuzz.yaml", &text);
        match &outcome {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(e)) if only.is_some() => {
                rejected += 1;
                eprintln!("rejected:\n{e}");
            }
            _ => rejected += 1,
        }
        let problem = check(&file, &text, outcome);
        if survey {
            slowest.push((t0.elapsed(), index));
            slowest.sort_by(|a, b| b.cmp(a));
            slowest.truncate(8);
        }
        if let Some(problem) = problem {
            if !survey {
                fail(seed, index, &text, &problem);
            }
            let key: String = problem.chars().take(160).filter(|c| !c.is_ascii_digit()).collect();
            let entry = found.entry(key).or_insert((0, index));
            entry.0 += 1;
        }
        ran += 1;
    }
    let mut found: Vec<_> = found.into_iter().collect();
    found.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
    for (problem, (n, first)) in &found {
        eprintln!("{n} × (first: case {first}) {problem}");
    }
    if survey {
        eprintln!("slowest cases: {slowest:?}");
    }
    assert!(found.is_empty(), "{} kinds of failure", found.len());
    eprintln!(
        "config fuzz: seed {seed:#x}, {ran} mutated files in {:?}: {accepted} accepted (each round-trips), {rejected} rejected (every error names its line or field and the reason), 0 panics",
        started.elapsed()
    );
    assert!(ran > 0);
}

/// Whether `rest` (an error line after `FILE:`) goes on with a line number or a field path,
/// then a reason of three words or more: `12: reason`, `12: vips[0].port: reason`,
/// ` vips[0].port: reason`.
fn placed(rest: &str) -> bool {
    let (has_line, rest) = match rest.split_once(':') {
        Some((line, after)) if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) => (true, after),
        _ => (false, rest),
    };
    let reason = match rest.trim_start().split_once(": ") {
        Some((field, reason)) if !field.is_empty() && !field.contains(' ') => reason,
        _ if has_line && rest.starts_with(' ') => rest,
        _ => return false,
    };
    reason.split_whitespace().count() >= 3
}

/// The stream of the CLI cases (other indices than the in-process run's).
const CLI_STREAM: u64 = 1 << 40;

#[test]
fn mutated_configuration_files_through_lb_config_check() {
    let seeds = seeds();
    let seed = Cases::from_env(DEFAULT_SEED, CLI_CASES).seed;
    let dir = TempDir::new("config-fuzz-cli");
    let lb = lb_binary();
    let started = Instant::now();
    let (mut accepted, mut rejected, mut ran) = (0u64, 0u64, 0u64);
    for index in CLI_STREAM..CLI_STREAM + CLI_CASES {
        if started.elapsed() > TIME_LIMIT {
            eprintln!("config fuzz (CLI): stopped at the time limit after {ran} cases");
            break;
        }
        let text = case(seed, index, &seeds);
        let path = dir.0.join("fuzz.yaml");
        std::fs::write(&path, &text).expect("writing a case");
        let out = Command::new(&lb).args(["config", "check"]).arg(&path).output().expect("running lb config check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = path.display().to_string();
        let problem = match out.status.code() {
            _ if stderr.contains("panicked") => Some(format!("lb panicked: {stderr}")),
            Some(0) => {
                accepted += 1;
                None
            }
            Some(1) => {
                rejected += 1;
                // Every line names the file, then a line or a field, then the reason.
                stderr
                    .lines()
                    .find(|l| !l.strip_prefix(&format!("{name}:")).is_some_and(placed))
                    .map(|l| format!("an error line does not start with the file and a place: {l:?}\n{stderr}"))
                    .or_else(|| stderr.trim().is_empty().then(|| "refused with nothing on stderr".to_owned()))
            }
            other => Some(format!("exit status {other:?}: {stderr}")),
        };
        if let Some(problem) = problem {
            fail(seed, index, &text, &problem);
        }
        ran += 1;
    }
    eprintln!("config fuzz (CLI): seed {seed:#x}, {ran} mutated files through `lb config check` in {:?}: {accepted} accepted, {rejected} rejected, 0 panics", started.elapsed());
}
