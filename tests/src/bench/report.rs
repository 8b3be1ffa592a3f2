//! The benchmarks' output: tables on the terminal, `bench/results/latest.{json,md,svg}`, and
//! the figure tables of `BENCHMARKS.md` and of the README's "Benchmarks" section.
//!
//! Every published figure table is generated from `bench/results/latest.json` by [`generate`]
//! and sits between `<!-- generated: NAME begin -->` and `<!-- generated: NAME end -->`;
//! [`write_generated`] rewrites exactly those regions, and `tests/tests/published_figures.rs`
//! fails when the committed files differ from what it would write.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use super::{
    Machine,
    datapath::{TARGET_MANY_OVER_ONE_NS, TARGET_NEW_OVER_TWO_ESTABLISHED_NS, TARGET_STATELESS_ESTABLISHED_NS},
};

/// A table of results.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Heading.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    /// A table with these columns.
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table { title: title.into(), header: header.iter().map(|s| s.to_string()).collect(), ..Table::default() }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    /// Fixed-width text.
    pub fn text(&self) -> String {
        let w = self.widths();
        let line = |cells: &[String]| {
            let mut s = String::from("  ");
            for (i, c) in cells.iter().enumerate() {
                let pad = w.get(i).copied().unwrap_or(0).saturating_sub(c.chars().count());
                if i == 0 {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                } else {
                    s.push_str("  ");
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                }
            }
            s.trim_end().to_owned()
        };
        let mut out = format!("\n== {}\n", self.title);
        out.push_str(&line(&self.header));
        out.push('\n');
        out.push_str(&format!("  {}\n", "-".repeat(w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1))));
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(&format!("  * {n}\n"));
        }
        out
    }

    /// A Markdown table, under a `###` heading unless the title is empty.
    pub fn markdown(&self) -> String {
        let mut out = if self.title.is_empty() { String::new() } else { format!("### {}\n\n", self.title) };
        let _ = write!(out, "| {} |\n|", self.header.join(" | "));
        for (i, _) in self.header.iter().enumerate() {
            out.push_str(if i == 0 { " --- |" } else { " ---: |" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out.push('\n');
        out
    }
}

/// One bar of a chart: a median and its spread.
#[derive(Clone, Debug)]
pub struct Bar {
    /// Label left of the bar.
    pub label: String,
    /// Bar length.
    pub value: f64,
    /// Whisker from `lo` to `hi` (the spread).
    pub lo: f64,
    /// See `lo`.
    pub hi: f64,
    /// Fill colour.
    pub color: &'static str,
}

/// A horizontal bar chart panel.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Heading.
    pub title: String,
    /// Unit of the values.
    pub unit: String,
    /// Bars, top to bottom.
    pub bars: Vec<Bar>,
    /// Vertical target lines: value and label.
    pub targets: Vec<(f64, String)>,
}

/// Colours of the charts.
pub const OURS: &str = "#2b6cb0";
/// Floors, bare forwarder, baseline.
pub const REFERENCE: &str = "#a0aec0";
/// The other proxy.
pub const OTHER: &str = "#dd6b20";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The charts as one SVG document, panels stacked.
pub fn svg(charts: &[Chart], subtitle: &str) -> String {
    const WIDTH: f64 = 860.0;
    const LABEL: f64 = 250.0;
    const PLOT: f64 = 480.0;
    const BAR: f64 = 18.0;
    const GAP: f64 = 8.0;
    let mut body = String::new();
    let mut y = 66.0;
    // In the order of the parts (1, 2, 3, 4), whatever order they ran in.
    let mut charts: Vec<&Chart> = charts.iter().collect();
    charts.sort_by_key(|c| c.title.chars().next().and_then(|d| d.to_digit(10)).unwrap_or(9));
    for chart in charts {
        let max = chart
            .bars
            .iter()
            .map(|b| b.hi.max(b.value))
            .chain(chart.targets.iter().map(|t| t.0))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.12;
        let x = |v: f64| LABEL + (v.max(0.0) / max) * PLOT;
        let _ = writeln!(body, r#"<text x="10" y="{:.1}" font-size="15" font-weight="bold">{} ({})</text>"#, y, escape(&chart.title), escape(&chart.unit));
        y += 12.0;
        let top = y;
        for bar in &chart.bars {
            let v = if bar.value.is_finite() { bar.value } else { 0.0 };
            let _ = writeln!(body, r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#, LABEL - 8.0, y + BAR * 0.75, escape(&bar.label));
            let _ = writeln!(body, r#"<rect x="{LABEL:.1}" y="{y:.1}" width="{:.1}" height="{BAR:.1}" fill="{}"/>"#, x(v) - LABEL, bar.color);
            if bar.lo.is_finite() && bar.hi.is_finite() && bar.hi > bar.lo {
                let mid = y + BAR / 2.0;
                let _ = writeln!(
                    body,
                    r##"<path d="M{:.1} {mid:.1} H{:.1} M{:.1} {:.1} V{:.1} M{:.1} {:.1} V{:.1}" stroke="#1a202c" stroke-width="1.2" fill="none"/>"##,
                    x(bar.lo), x(bar.hi), x(bar.lo), mid - 4.0, mid + 4.0, x(bar.hi), mid - 4.0, mid + 4.0
                );
            }
            let shown = if bar.value.is_finite() { format_value(bar.value) } else { "n/a".into() };
            let _ = writeln!(body, r#"<text x="{:.1}" y="{:.1}" font-size="12">{shown}</text>"#, x(v.max(bar.hi.min(max))) + 6.0, y + BAR * 0.75);
            y += BAR + GAP;
        }
        for (i, (value, label)) in chart.targets.iter().enumerate() {
            let tx = x(*value);
            let _ = writeln!(body, r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#c53030" stroke-width="1.5" stroke-dasharray="5,4"/>"##, top - 4.0, y - GAP + 4.0);
            let _ = writeln!(body, r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#c53030">{}</text>"##, tx + 4.0, y + 8.0 + 13.0 * i as f64, escape(label));
        }
        y += 30.0 + 13.0 * chart.targets.len() as f64;
    }
    let mut out = String::new();
    let _ = writeln!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{:.0}" viewBox="0 0 {WIDTH} {:.0}" font-family="sans-serif">"#, y, y);
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="10" y="22" font-size="17" font-weight="bold">lb benchmarks: medians, whiskers from the 25th to the 75th percentile</text>"#);
    let _ = writeln!(out, r##"<text x="10" y="38" font-size="11" fill="#4a5568">{}</text>"##, escape(subtitle));
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Everything one run of the benchmarks produced.
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Arguments it ran with.
    pub args: Vec<String>,
    /// Printed tables, in order.
    pub tables: Vec<Table>,
    /// Chart panels.
    pub charts: Vec<Chart>,
    /// Machine-readable results per part.
    pub json: Map<String, Value>,
    /// Targets: what, measured, verdict.
    pub targets: Vec<(String, String, String)>,
}

impl Report {
    /// An empty report.
    pub fn new(machine: Machine, args: Vec<String>) -> Report {
        Report { machine, args, tables: Vec::new(), charts: Vec::new(), json: Map::new(), targets: Vec::new() }
    }

    /// Prints `table` and keeps it.
    pub fn table(&mut self, table: Table) {
        print!("{}", table.text());
        self.tables.push(table);
    }

    /// Records a target and whether it is met.
    pub fn target(&mut self, what: &str, measured: String, verdict: String) {
        self.targets.push((what.into(), measured, verdict));
    }

    /// The targets as a table (the terminal's view; the published one is [`generate`]d).
    pub fn targets_table(&self) -> Table {
        let mut t = Table::new(TARGETS_TITLE, &["target", "measured (median)", "verdict"]);
        for (what, measured, verdict) in &self.targets {
            t.row(vec![what.clone(), measured.clone(), verdict.clone()]);
        }
        t
    }

    /// Refuses to publish from a tree with uncommitted changes to the measured code, unless
    /// the run is marked unpublishable.
    pub fn check_publishable(&self) -> anyhow::Result<()> {
        if self.machine.unpublishable {
            return Ok(());
        }
        match self.machine.dirty {
            Some(false) => Ok(()),
            Some(true) => {
                let changes = super::measured_changes().unwrap_or_default();
                anyhow::bail!(
                    "refusing to write bench/results and the generated tables: uncommitted changes to the measured code ({}), so no commit reproduces these figures; commit first, or run with --unpublishable ({}=1) to write them marked unpublishable, or with --no-write",
                    changes.iter().map(|c| c.trim()).collect::<Vec<_>>().join(", "),
                    super::UNPUBLISHABLE_ENV
                )
            }
            None => anyhow::bail!(
                "refusing to write bench/results: git cannot tell whether the measured code has uncommitted changes; run with --unpublishable ({}=1) or --no-write",
                super::UNPUBLISHABLE_ENV
            ),
        }
    }

    /// The JSON written to `bench/results/latest.json`.
    pub fn to_json(&self) -> Value {
        json!({
            "machine": self.machine.to_json(),
            "args": self.args,
            "targets": self.targets.iter().map(|(w, m, v)| json!({"target": w, "measured": m, "verdict": v})).collect::<Vec<_>>(),
            "results": Value::Object(self.json.clone()),
        })
    }

    /// Writes `bench/results/latest.{json,svg}` under `root`, then generates `latest.md` and
    /// the figure tables of `README.md` and `BENCHMARKS.md` from that JSON. Refuses from a
    /// dirty tree unless the run is marked unpublishable ([`Report::check_publishable`]).
    pub fn write(&self, root: &Path) -> anyhow::Result<()> {
        self.check_publishable()?;
        let dir = root.join("bench/results");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = self.to_json();
        write_atomic(&dir.join("latest.json"), &serde_json::to_string_pretty(&json)?)?;
        let mut subtitle = self.machine.describe();
        if let Some(mark) = Provenance::of(&json).mark {
            subtitle = format!("UNPUBLISHABLE ({mark}): {subtitle}");
        }
        write_atomic(&dir.join("latest.svg"), &svg(&self.charts, &subtitle))?;
        write_generated(root, &json)
    }
}

/// The start marker of the generated region `name`.
pub fn begin_marker(name: &str) -> String {
    format!("<!-- generated: {name} begin -->")
}

/// The end marker of the generated region `name`.
pub fn end_marker(name: &str) -> String {
    format!("<!-- generated: {name} end -->")
}

/// One generated region: the file it lives in (relative to the workspace root), its name and
/// what the generator writes between its markers.
#[derive(Clone, Debug)]
pub struct Region {
    /// `README.md` or `BENCHMARKS.md`.
    pub file: &'static str,
    /// The name in its markers.
    pub name: &'static str,
    /// The text between the markers, exactly.
    pub text: String,
}

/// The text between the markers of region `name` in `text`; an error if a marker is missing,
/// repeated, or the end comes first.
pub fn region<'a>(text: &'a str, name: &str) -> anyhow::Result<&'a str> {
    let (begin, end) = (begin_marker(name), end_marker(name));
    let b = text.find(&begin).with_context(|| format!("no {begin} marker"))?;
    let e = text.find(&end).with_context(|| format!("no {end} marker"))?;
    anyhow::ensure!(text.matches(&begin).count() == 1, "{begin} appears more than once");
    anyhow::ensure!(text.matches(&end).count() == 1, "{end} appears more than once");
    anyhow::ensure!(b + begin.len() <= e, "{end} comes before {begin}");
    Ok(&text[b + begin.len()..e])
}

/// `text` with region `name` replaced by `inner`.
pub fn replace_region(text: &str, name: &str, inner: &str) -> anyhow::Result<String> {
    let old = region(text, name)?;
    let start = old.as_ptr() as usize - text.as_ptr() as usize;
    Ok(format!("{}{inner}{}", &text[..start], &text[start + old.len()..]))
}

/// Generates `bench/results/latest.md` and every region of `README.md` and `BENCHMARKS.md`
/// under `root` from `json` (the contents of `latest.json`). A missing marker is an error.
pub fn write_generated(root: &Path, json: &Value) -> anyhow::Result<()> {
    let regions = generate(json)?;
    write_atomic(&root.join("bench/results/latest.md"), &results_markdown(json)?)?;
    for file in ["README.md", "BENCHMARKS.md"] {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut new = text.clone();
        for r in regions.iter().filter(|r| r.file == file) {
            new = replace_region(&new, r.name, &r.text).with_context(|| format!("in {file}"))?;
        }
        if new != text {
            write_atomic(&path, &new)?;
        }
    }
    Ok(())
}

/// The contents of `bench/results/latest.md`: every table generated from `json`.
pub fn results_markdown(json: &Value) -> anyhow::Result<String> {
    let p = Provenance::of(json);
    let results = json.get("results").and_then(Value::as_object).context("latest.json has no results object")?;
    Ok(format!("# lb benchmark results\n\n{}", results_section(&p, json, results)))
}

/// Every generated region, from the contents of `latest.json`.
pub fn generate(json: &Value) -> anyhow::Result<Vec<Region>> {
    let p = Provenance::of(json);
    let results = json.get("results").and_then(Value::as_object).context("latest.json has no results object")?;
    let wrap = |s: String| format!("\n\n{}\n\n", s.trim_end());
    Ok(vec![
        Region { file: "README.md", name: "summary", text: wrap(summary_section(&p, results)) },
        Region { file: "BENCHMARKS.md", name: "results", text: wrap(results_section(&p, json, results)) },
    ])
}

/// Where the figures come from, and whether they may be published.
struct Provenance {
    /// The commit as the JSON holds it, without a `+dirty` suffix.
    commit: String,
    /// One line: machine, kernel, commit, date.
    describe: String,
    /// Why the figures are unpublishable, if they are.
    mark: Option<String>,
}

impl Provenance {
    fn of(json: &Value) -> Provenance {
        let m = &json["machine"];
        let raw = m["commit"].as_str().unwrap_or("unknown");
        let (commit, suffix_dirty) = match raw.strip_suffix("+dirty") {
            Some(c) => (c.to_owned(), true),
            None => (raw.to_owned(), false),
        };
        // Older files mark a dirty tree with "+dirty" only, or with "dirty"; null means git
        // could not tell.
        let dirty = match m.get("uncommitted_changes").or_else(|| m.get("dirty")) {
            Some(Value::Bool(b)) => *b,
            Some(_) => true,
            None => suffix_dirty,
        };
        let flagged = m["unpublishable"].as_bool().unwrap_or(false);
        let mark = if dirty {
            Some("built from a tree with uncommitted changes to the measured code, which no commit reproduces".to_owned())
        } else if flagged {
            Some("run with --unpublishable".to_owned())
        } else if commit == "unknown" {
            Some("the commit is unknown".to_owned())
        } else {
            None
        };
        let shown: String = commit.chars().take(12).collect();
        let describe = format!(
            "{} CPUs ({}{}), {} GiB, kernel {}; commit {}{}, {}",
            m["nproc"].as_u64().unwrap_or(0),
            m["cpu_model"].as_str().unwrap_or("unknown"),
            if m["virtual_machine"].as_bool().unwrap_or(false) { ", virtual machine" } else { "" },
            m["memory_gib"].as_f64().map(|g| g.to_string()).unwrap_or_else(|| "?".into()),
            m["kernel"].as_str().unwrap_or("unknown"),
            shown,
            if dirty { "+dirty" } else { "" },
            m["date"].as_str().unwrap_or("unknown date"),
        );
        Provenance { commit: shown, describe, mark }
    }

    /// `table` as Markdown, with the unpublishable mark as its first row when there is one.
    fn table(&self, mut table: Table) -> String {
        if let Some(mark) = &self.mark {
            let mut row = vec!["**UNPUBLISHABLE**".to_owned(), mark.clone()];
            row.resize(table.header.len().max(2), String::new());
            table.rows.insert(0, row);
        }
        table.markdown()
    }
}

/// A summary of repeated measurements as `latest.json` holds it.
#[derive(Clone, Copy, Debug)]
struct Stat {
    n: u64,
    median: f64,
    p25: f64,
    p75: f64,
    min: f64,
    max: f64,
}

fn stat(v: &Value) -> Option<Stat> {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    Some(Stat { n: v.get("n")?.as_u64()?, median: f("median")?, p25: f("p25")?, p75: f("p75")?, min: f("min")?, max: f("max")? })
}

impl Stat {
    /// `median ±half IQR`.
    fn show(&self, digits: usize) -> String {
        format!("{:.*} ±{:.*}", digits, self.median, digits, (self.p75 - self.p25) / 2.0)
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn path<'a>(results: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    array(results.get("datapath")?, "paths").iter().find(|p| p["name"] == name)
}

/// A data path's median per packet, or per flow for a new TCP flow.
fn path_ns(results: &Map<String, Value>, name: &str) -> Option<f64> {
    let p = path(results, name)?;
    stat(&p["ns_per_packet"]).or_else(|| stat(&p["ns_per_flow"])).map(|s| s.median)
}

fn path_over(results: &Map<String, Value>, name: &str) -> Option<Stat> {
    stat(&path(results, name)?["ns_over_floor"])
}

/// The verdict on a figure `over` its floor against a `target`, both in ns.
pub(crate) fn ns_verdict(over: f64, target: f64) -> String {
    if over <= target {
        format!("met ({:.0} ns to spare)", target - over)
    } else {
        format!("missed by {:.1} ns ({:.0} %)", over - target, 100.0 * (over - target) / target)
    }
}

/// Title of the targets table, in the terminal and in the published results.
const TARGETS_TITLE: &str = "Targets (issues 5, 8 and 20; the HAProxy and scaling rows as issue 11 asks)";
/// Target of issue 5: the Maglev build for 1,000 backends.
const TARGET_BUILD_MS: f64 = 2.0;
/// Target of issue 5: the load balancer's share of the bare forwarder's rate.
const TARGET_SHARE: f64 = 0.9;
/// Target of issue 5: HAProxy's CPU per request over lb's.
const TARGET_RATIO: f64 = 5.0;
/// Runs per point issue 11 asks for before the HAProxy comparison names a verdict.
const WANTED_PROXY_RUNS: u64 = 5;

fn build_ms(results: &Map<String, Value>, backends: u64) -> Option<Stat> {
    array(results.get("control")?, "builds").iter().find(|b| b["backends"] == backends).and_then(|b| stat(&b["ms"]))
}

fn throughput_point(results: &Map<String, Value>, forwarder: &str, cores: u64) -> Option<Stat> {
    array(results.get("throughput")?, "points")
        .iter()
        .find(|p| p["forwarder"] == forwarder && p["cores"] == cores)
        .and_then(|p| stat(&p["received_mpps"]))
}

/// Scaling from 1 to 2 cores of lb and of the bare forwarder in the same run.
fn scaling(results: &Map<String, Value>) -> Option<(f64, f64)> {
    let s = |f: &str| Some(throughput_point(results, f, 2)?.median / throughput_point(results, f, 1)?.median);
    Some((s("lb")?, s("bare")?))
}

fn proxy_point<'a>(results: &'a Map<String, Value>, setup: &str, load: &str) -> Option<&'a Value> {
    array(results.get("proxy")?, "points").iter().find(|p| p["setup"].as_str().is_some_and(|s| s.starts_with(setup)) && p["load"] == load)
}

/// Whole-machine CPU per 1,000 requests over kernel routing: median (set-up's median minus
/// routing's) and the range from the runs' extremes (set-up's min minus routing's max, max
/// minus min), and the runs per point.
#[derive(Clone, Copy, Debug)]
struct OverRouting {
    median: f64,
    lo: f64,
    hi: f64,
    n: u64,
}

fn over_routing(results: &Map<String, Value>, setup: &str, load: &str) -> Option<OverRouting> {
    let m = stat(&proxy_point(results, setup, load)?["machine_cpu_ms_per_1k"])?;
    let base = stat(&proxy_point(results, "kernel routing", load)?["machine_cpu_ms_per_1k"])?;
    Some(OverRouting { median: m.median - base.median, lo: m.min - base.max, hi: m.max - base.min, n: m.n.min(base.n) })
}

impl OverRouting {
    fn show(&self) -> String {
        format!("{:+.1} ({:+.1} to {:+.1})", self.median, self.lo, self.hi)
    }
}

/// HAProxy over lb, whole-machine CPU per request: the ratio of medians, the least ratio the
/// runs' extremes allow, and the verdict on the target.
fn proxy_ratio(h: OverRouting, l: OverRouting) -> (String, String) {
    let median = h.median / l.median;
    let least = (l.hi > 0.0).then(|| h.lo / l.hi);
    let n = h.n.min(l.n);
    // lb's median at or below routing's: its cost is within the noise and a ratio means nothing.
    if l.median <= 0.0 && h.median > 0.0 {
        let shown = format!("lb's median is at or below plain routing's ({:+.1} ms): within the noise, no ratio", l.median);
        return (shown, format!("met on medians, not across the runs' spread ({n} runs per point)"));
    }
    let shown = match least {
        Some(least) => format!("{median:.1} × on medians, at least {least:.1} × across the runs"),
        None => format!("{median:.1} × on medians; lb's range reaches 0, so no bound across the runs"),
    };
    let verdict = match least {
        _ if median.is_nan() || median < TARGET_RATIO => format!("missed ({median:.1} ×)"),
        Some(least) if least >= TARGET_RATIO && n >= WANTED_PROXY_RUNS => "met".to_owned(),
        Some(least) if least >= TARGET_RATIO => format!("met on {n} runs per point, provisional ({WANTED_PROXY_RUNS} wanted)"),
        _ => format!("met on medians only, not across the runs' spread ({n} runs per point)"),
    };
    (shown, verdict)
}

const LOADS: [&str; 2] = ["keep-alive", "new connection per request"];

/// The README's summary table.
fn summary_section(p: &Provenance, results: &Map<String, Value>) -> String {
    let mut t = Table::new("", &["what", "result", "target"]);
    let missed_or_met = |over: f64, target: f64| if over <= target { "met" } else { "**missed**" };
    if let (Some(e), Some(f), Some(est)) = (path_over(results, "tcp_new"), path_over(results, "tcp_new_full"), path_over(results, "tcp_established")) {
        let target = 2.0 * est.median + TARGET_NEW_OVER_TWO_ESTABLISHED_NS;
        t.row(vec![
            "new TCP flow, SYN + first ACK, stateless (Maglev, stable backends), over floor_tx per packet".into(),
            format!("{:.0} ns (empty table), {:.0} ns (beside a full table)", e.median, f.median),
            format!("≤ 2 × established + 20 ns ({target:.0} ns): {}", missed_or_met(e.median.max(f.median), target)),
        ]);
    }
    for (name, what) in [
        ("tcp_established", "established TCP flow, one hot flow (over an XDP_TX floor, per 64-byte packet)"),
        ("tcp_established_many", "established TCP flow, 4,096 flows in turn (stateless)"),
        ("tcp_established_1m", "established TCP flow, 1,000,000 flows in turn (stateless)"),
        ("udp_established", "established UDP flow"),
        ("tcp_reply", "backend reply (`REPLIES`, cached FIB answer)"),
        ("not_vip", "traffic for no VIP (over an XDP_PASS floor)"),
    ] {
        let Some(o) = path_over(results, name) else { continue };
        let target = path(results, name).and_then(|p| p["target_ns_over_floor"].as_f64());
        let shown = match (target, path_over(results, "tcp_established")) {
            (Some(target), _) => format!("≤ {target:.0} ns: {}", missed_or_met(o.median, target)),
            (None, Some(est)) => {
                let target = est.median + TARGET_MANY_OVER_ONE_NS;
                format!("≤ one hot flow + 30 ns ({target:.0} ns): {}", missed_or_met(o.median, target))
            }
            (None, None) => String::new(),
        };
        t.row(vec![what.into(), format!("{} ns", o.show(1)), shown]);
    }
    let dsr = |prefix: &str| -> Option<Vec<Stat>> { ["tunnel", "gue", "direct"].iter().map(|m| path_over(results, &format!("{prefix}_{m}"))).collect() };
    for (prefix, what) in [
        ("tcp_established", "direct server return, established TCP flow, one hot flow: tunnel / gue / direct (over the XDP_TX floor, as NAT's)"),
        ("tcp_new", "direct server return, new TCP flow, stateless: tunnel / gue / direct (over the same floor as NAT's)"),
    ] {
        let (Some(d), Some(nat)) = (dsr(prefix), path_over(results, prefix)) else { continue };
        t.row(vec![
            what.into(),
            format!("{:.0} / {:.0} / {:.0} ns (NAT: {:.0} ns)", d[0].median, d[1].median, d[2].median, nat.median),
            "(no target; table 1c of BENCHMARKS.md)".into(),
        ]);
    }
    if let (Some(shared), Some(percpu)) = (path_ns(results, "floor_insert_full"), path_ns(results, "floor_insert_percpu_full")) {
        let d = percpu - shared;
        t.row(vec![
            "one insert, full table: per-CPU LRU lists against the shared LRU".into(),
            format!("{:.0} ns {}", d.abs(), if d <= 0.0 { "less" } else { "more" }),
            "(per-CPU lists chosen for `CONNS`)".into(),
        ]);
    }
    let builds: Vec<Stat> = [10, 100, 1000].iter().filter_map(|&n| build_ms(results, n)).collect();
    if builds.len() == 3 {
        t.row(vec![
            "Maglev build, 65,537 slots, 10 / 100 / 1,000 backends".into(),
            format!("{:.2} / {:.2} / {:.2} ms", builds[0].median, builds[1].median, builds[2].median),
            format!("≤ 2 ms for 1,000: {}", missed_or_met(builds[2].median, TARGET_BUILD_MS)),
        ]);
    }
    if let Some(s) = results.get("control").and_then(|c| array(c, "swaps").iter().find(|s| s["backends"] == 1000)).and_then(|s| stat(&s["swap_ms"])) {
        t.row(vec!["ring swap after a backend change (build and write), 1,000 backends".into(), format!("{} ms", s.show(2)), String::new()]);
    }
    let probe = results.get("control").map(|c| &c["probe_to_swap"]);
    if let Some((d, u)) = probe.and_then(|p| Some((stat(&p["down_ms"])?, stat(&p["up_ms"])?))) {
        t.row(vec![
            "health probe to swapped ring (release agent)".into(),
            format!("{:.2} ms (backend down), {:.2} ms (back up)", d.median, u.median),
            String::new(),
        ]);
    }
    let share = |cores| Some(throughput_point(results, "lb", cores)?.median / throughput_point(results, "bare", cores)?.median);
    if let (Some(s1), Some(s2)) = (share(1), share(2)) {
        t.row(vec![
            "forwarded through the lab, live-frames generator, 1 / 2 cores".into(),
            format!("{:.1} % / {:.1} % of a bare redirect forwarder", 100.0 * s1, 100.0 * s2),
            format!("≥ 90 %: {}", if s1.min(s2) >= TARGET_SHARE { "met" } else { "**missed**" }),
        ]);
    }
    if let Some((lb, bare)) = scaling(results) {
        t.row(vec![
            "2 cores against 1, as a share of the bare forwarder's scaling in the same run".into(),
            format!("{:.2} (lb {lb:.2} ×, bare forwarder {bare:.2} ×)", lb / bare),
            "none (a 2-core/1-core ratio alone measures the lab)".into(),
        ]);
    }
    for load in LOADS {
        let (Some(h), Some(l)) = (over_routing(results, "HAProxy", load), over_routing(results, "lb", load)) else { continue };
        let (ratio, verdict) = proxy_ratio(h, l);
        t.row(vec![
            format!("whole-machine CPU (all CPUs, softirq included) per 1,000 HTTP requests over kernel routing, {load}: lb vs HAProxy `mode tcp`, median (range over {} runs)", h.n.min(l.n)),
            format!("{} vs {} ms", l.show(), h.show()),
            format!("HAProxy ≥ 5 × lb: {ratio}; {verdict}"),
        ]);
    }
    let mut out = format!(
        "Figures of commit `{}` from `bench/results/latest.json`, generated by the bench's report code (do not edit by hand): {}.{}\n\n",
        p.commit,
        p.describe,
        p.mark.as_ref().map(|m| format!(" **UNPUBLISHABLE: {m}.**")).unwrap_or_default()
    );
    out.push_str(&p.table(t));
    out.push_str("Data path figures are ns over the floor measured in the same sets, median ± half the interquartile range.\n");
    out
}

/// Every table of the results section of BENCHMARKS.md (and of latest.md).
fn results_section(p: &Provenance, json: &Value, results: &Map<String, Value>) -> String {
    let args: String = array(json, "args").iter().filter_map(Value::as_str).map(|a| format!(" {a}")).collect();
    let mut md = format!(
        "Latest run: `cargo xtask bench{args}` on {}.{}\n\n![charts](bench/results/latest.svg)\n\n",
        p.describe,
        p.mark.as_ref().map(|m| format!(" **UNPUBLISHABLE: {m}.**")).unwrap_or_default()
    );
    md.push_str(&p.table(targets_table(results)));
    if let Some(dp) = results.get("datapath") {
        md.push_str(&p.table(datapath_table(dp)));
        md.push_str(&p.table(breakdown_table(results)));
        let dsr = dsr_table(dp);
        if !dsr.rows.is_empty() {
            md.push_str(&p.table(dsr));
        }
    }
    if let Some(c) = results.get("control") {
        md.push_str(&p.table(control_table(c)));
    }
    if let Some(t) = results.get("throughput") {
        md.push_str(&p.table(throughput_table(results, t)));
    }
    if let Some(x) = results.get("proxy") {
        md.push_str(&p.table(proxy_table(results, x)));
    }
    md
}

/// The targets of issue 20 ("State only on change"), from each row's median ns over its floor
/// (`over`): what, measured, verdict. A target whose rows were not measured is left out.
pub(crate) fn relative_targets(over: &dyn Fn(&str) -> Option<f64>) -> Vec<(String, String, String)> {
    let mut targets = Vec::new();
    let Some(est) = over("tcp_established") else { return targets };
    let mut add = |what: String, measured: f64, target: f64, shown: String| {
        targets.push((what, format!("{measured:.1} ns{shown}"), ns_verdict(measured, target)));
    };
    for new in ["tcp_new", "tcp_new_full"] {
        if let Some(n) = over(new) {
            let target = 2.0 * est + TARGET_NEW_OVER_TWO_ESTABLISHED_NS;
            let what = format!("1. {new} ≤ 2 × tcp_established + {TARGET_NEW_OVER_TWO_ESTABLISHED_NS:.0} ns (over floor_tx per packet)");
            add(what, n, target, format!(" (target {target:.1} ns)"));
        }
    }
    for many in ["tcp_established_many", "tcp_established_1m"] {
        if let Some(m) = over(many) {
            let target = est + TARGET_MANY_OVER_ONE_NS;
            let what = format!("1. {many} ≤ tcp_established + {TARGET_MANY_OVER_ONE_NS:.0} ns (over floor_tx)");
            add(what, m, target, format!(" (target {target:.1} ns)"));
        }
    }
    let what = format!("1. tcp_established ≤ {TARGET_STATELESS_ESTABLISHED_NS:.0} ns over floor_tx (Maglev, stateless)");
    add(what, est, TARGET_STATELESS_ESTABLISHED_NS, String::new());
    targets
}

fn targets_table(results: &Map<String, Value>) -> Table {
    let mut t = Table::new(TARGETS_TITLE, &["target", "measured (median)", "verdict"]);
    if let Some(dp) = results.get("datapath") {
        for path in array(dp, "paths") {
            let (Some(target), Some(o)) = (path["target_ns_over_floor"].as_f64(), stat(&path["ns_over_floor"])) else { continue };
            let floor = path["floor"].as_str().unwrap_or("?");
            t.row(vec![
                format!("1. {} ≤ {target:.0} ns over {floor}", path["name"].as_str().unwrap_or("?")),
                format!("{:.1} ns over {floor}", o.median),
                ns_verdict(o.median, target),
            ]);
        }
        for (what, measured, verdict) in relative_targets(&|name| path_over(results, name).map(|o| o.median)) {
            t.row(vec![what, measured, verdict]);
        }
    }
    if let Some(b) = build_ms(results, 1000) {
        let verdict = if b.median <= TARGET_BUILD_MS {
            format!("met ({:.2} ms to spare)", TARGET_BUILD_MS - b.median)
        } else {
            format!("missed by {:.2} ms", b.median - TARGET_BUILD_MS)
        };
        t.row(vec!["4. Maglev build, 1,000 backends ≤ 2 ms".into(), format!("{:.3} ms", b.median), verdict]);
    }
    for cores in [1u64, 2] {
        let (Some(lb), Some(bare)) = (throughput_point(results, "lb", cores), throughput_point(results, "bare", cores)) else { continue };
        let share = lb.median / bare.median;
        let verdict = if share >= TARGET_SHARE { "met".to_owned() } else { format!("missed by {:.1} points", 100.0 * (TARGET_SHARE - share)) };
        t.row(vec![format!("2. ≥ 90 % of the bare forwarder, {cores} core{}", if cores > 1 { "s" } else { "" }), format!("{:.1} %", 100.0 * share), verdict]);
    }
    if let Some((lb, bare)) = scaling(results) {
        t.row(vec![
            "2. 2 cores against 1, as a share of the bare forwarder's scaling in the same run".into(),
            format!("{:.2} (lb {lb:.2} ×, bare forwarder {bare:.2} ×)", lb / bare),
            "no target: issue 5's 2 cores ≥ 1.8 × one core holds for the bare forwarder too, so it measures the lab".into(),
        ]);
    }
    for load in LOADS {
        let (Some(h), Some(l)) = (over_routing(results, "HAProxy", load), over_routing(results, "lb", load)) else { continue };
        let (ratio, verdict) = proxy_ratio(h, l);
        t.row(vec![
            format!("3. HAProxy ≥ 5 × lb's whole-machine CPU per request over routing ({load})"),
            format!("HAProxy {} vs lb {} ms / 1k req: {ratio}", h.show(), l.show()),
            verdict,
        ]);
    }
    t
}

/// The data path's table (part 1) from its results.
pub(crate) fn datapath_table(dp: &Value) -> Table {
    let u = |k: &str| dp[k].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    let mut t = Table::new(
        &format!(
            "1. Data path cost per 64-byte packet, new flows per flow (BPF_PROG_TEST_RUN, CPU {}, {} sets × {} single runs or flows, median ±half IQR over sets)",
            u("cpu"),
            u("sets"),
            u("runs_per_set")
        ),
        &["path", "ns (per packet or flow)", "M/s (1 core)", "floor", "ns over floor", "ns over floor_tx × packets", "target", "verdict"],
    );
    for path in array(dp, "paths") {
        let abs = stat(&path["ns_per_packet"]).or_else(|| stat(&path["ns_per_flow"]));
        let over = stat(&path["ns_over_floor"]);
        let target = path["target_ns_over_floor"].as_f64();
        t.row(vec![
            path["what"].as_str().unwrap_or("?").into(),
            abs.map(|a| a.show(1)).unwrap_or_else(|| "-".into()),
            path["mpps"].as_f64().map(|m| format!("{m:.2}")).unwrap_or_else(|| "-".into()),
            path["floor"].as_str().unwrap_or("-").into(),
            over.map(|o| o.show(1)).unwrap_or_else(|| "-".into()),
            stat(&path["ns_over_floor_tx_per_packet"]).map(|o| o.show(1)).unwrap_or_else(|| "-".into()),
            target.map(|t| format!("≤ {t:.0} ns")).unwrap_or_default(),
            match (over, target) {
                (Some(o), Some(t)) => ns_verdict(o.median, t),
                _ => String::new(),
            },
        ]);
    }
    t.note("ns is the kernel-reported run time (timer reads and test-run set-up included), per packet, or per flow for a new TCP flow (its SYN and its first ACK, two runs); \"ns over floor\" subtracts the floor measured in the same set, which is the figure to compare across machines");
    t.note("a Maglev VIP with stable backends keeps no per-flow state: its new flows (SYN and first ACK), UDP first datagrams and established packets are sent by the live ring with no connection-table lookup or insert (counted as stateless, checked: the empty table gains only the new flows of moved slots), so a new TCP flow's floor is floor_tx for each of its two packets; the floor_insert rows stay as the cost an insert would add");
    t.note(format!(
        "retention rows: a second Maglev VIP whose ring changed before timing (a ninth backend added to 8: {} of {} slots moved, the previous ring retained); tcp_new_moved: a fresh flow in a moved slot (its SYN recorded in HALF_OPEN, its first ACK inserted into CONNS); tcp_established_moved: a flow of a moved slot that hits its CONNS entry; tcp_established_unmoved: a flow of an unmoved slot of that VIP, stateless; tcp_established_1m: {} distinct flows in turn, each set's frames built before it is timed",
        u("moved_slots"),
        u("ring_slots"),
        u("million_flows"),
    ));
    t.note(format!(
        "new flows: a fresh 5-tuple every flow{}; empty table: {} entries, none evicted (checked); full table: {} entries, filled before timing with {} SYN + ACK flows of a round-robin VIP (a stateless flow inserts nothing), unchanged by the timed flows (checked), and the insert floors' tables with the same number of inserts ({} and {} entries after filling); one hot flow: the same frame every run, as in the usual test-run micro-benchmarks; \"in turn\": {}each run hashes another flow to another ring slot; replies leave by XDP_REDIRECT after a FIB lookup in the benchmark's namespace; configuration: 1 VIP address, TCP and UDP services with 8 backends each, 65,537-slot Maglev rings, resolved next hops{}",
        dp["new_flows"].as_u64().map(|n| format!(" ({n} new flows in all)")).unwrap_or_default(),
        u("conn_capacity_empty"),
        u("conn_capacity_full"),
        u("full_prefill_flows"),
        u("full_entries_after_prefill"),
        u("floor_full_entries_after_prefill"),
        dp["pool_flows"].as_u64().map(|n| format!("{n} tracked flows, so ")).unwrap_or_default(),
        if array(dp, "paths").iter().any(|p| p["name"] == "tcp_established_tunnel") {
            "; and one TCP VIP per direct server return mode (tunnel, gue, direct) over the same backends (table 1c)"
        } else {
            ""
        },
    ));
    if let (Some(cpus), Some(empty), Some(full)) = (dp["possible_cpus"].as_u64(), dp["conn_capacity_empty"].as_u64(), dp["conn_capacity_full"].as_u64()) {
        t.note(format!(
            "per-CPU LRU lists (BPF_F_NO_COMMON_LRU, {cpus} possible CPUs): the tables have the same capacities, but the kernel splits the entries between the CPUs' free lists and an insert takes from and evicts within its own CPU's list, so the timing thread, pinned to one CPU, has {} entries of the empty table and evicts in the full one from {} entries on ({} entries after the same inserts)",
            empty.div_ceil(cpus.max(1)),
            full.div_ceil(cpus.max(1)),
            u("floor_percpu_full_entries_after_prefill"),
        ));
    }
    t
}

/// Where the data path's time goes (part 1b): differences of medians from the results.
pub(crate) fn breakdown_table(results: &Map<String, Value>) -> Table {
    let get = |name: &str| path_ns(results, name).unwrap_or(f64::NAN);
    let mut t = Table::new("1b. Where the time goes (differences of medians, ns)", &["step", "ns"]);
    for (step, value) in [
        ("program entry, Ethernet parse, REASONS counter (ARP − floor_pass)", get("not_ip") - get("floor_pass")),
        ("IPv4 parse (ICMP − ARP)", get("not_tcp_udp") - get("not_ip")),
        ("L4 parse, endpoint filter: two bit tests instead of the VIPS and CONNS lookups (not_vip − ICMP)", get("not_vip") - get("not_tcp_udp")),
        ("VIPS, flow hash, MOVED bit, RING, BACKENDS, NAT, counters, MACs: the stateless path (tcp_established − not_vip)", get("tcp_established") - get("not_vip")),
        ("one LRU insert, empty table (floor_insert − floor_tx)", get("floor_insert") - get("floor_tx")),
        ("one LRU insert, full evicting table (floor_insert_full − floor_tx)", get("floor_insert_full") - get("floor_tx")),
        ("per-CPU LRU − shared LRU, empty (floor_insert_percpu − floor_insert)", get("floor_insert_percpu") - get("floor_insert")),
        ("per-CPU LRU − shared LRU, full (floor_insert_percpu_full − floor_insert_full)", get("floor_insert_percpu_full") - get("floor_insert_full")),
        ("new TCP flow beyond two established packets: a fresh flow's cold hash and ring slots, nothing inserted (tcp_new − 2 × tcp_established)", get("tcp_new") - 2.0 * get("tcp_established")),
        ("a new flow's SYN over one hot established packet: the stateless path for a SYN (tcp_syn − tcp_established)", get("tcp_syn") - get("tcp_established")),
        ("a new flow's first ACK after its SYN, stateless (tcp_new − tcp_syn)", get("tcp_new") - get("tcp_syn")),
        ("full table of other flows vs empty, stateless new TCP flow: untouched (tcp_new_full − tcp_new)", get("tcp_new_full") - get("tcp_new")),
        ("a new flow in a moved slot vs a stateless one: HALF_OPEN and CONNS lookups, the half-open record, the CONNS insert (tcp_new_moved − tcp_new)", get("tcp_new_moved") - get("tcp_new")),
        ("an established packet in a moved slot vs stateless: the CONNS hit (tcp_established_moved − tcp_established)", get("tcp_established_moved") - get("tcp_established")),
        ("an unmoved slot of a VIP with a retained ring vs a stable VIP (tcp_established_unmoved − tcp_established)", get("tcp_established_unmoved") - get("tcp_established")),
        ("reply vs established: REPLIES and FIB lookup instead of CONNS (tcp_reply − tcp_established)", get("tcp_reply") - get("tcp_established")),
        ("many flows in turn vs one, stateless: other ring slots and hashes (tcp_established_many − tcp_established)", get("tcp_established_many") - get("tcp_established")),
        ("1,000,000 flows in turn vs one, stateless (tcp_established_1m − tcp_established)", get("tcp_established_1m") - get("tcp_established")),
        ("floor_tx − floor_pass (MAC swap)", get("floor_tx") - get("floor_pass")),
        ("pushing a 20-byte outer IPv4 header instead of swapping MACs (floor_encap − floor_tx)", get("floor_encap") - get("floor_tx")),
        ("pushing a 28-byte outer IPv4 + UDP header instead of swapping MACs (floor_encap_gue − floor_tx)", get("floor_encap_gue") - get("floor_tx")),
        ("DSR tunnel vs NAT, established: the outer header instead of NAT (tcp_established_tunnel − tcp_established)", get("tcp_established_tunnel") - get("tcp_established")),
        ("DSR gue vs NAT, established (tcp_established_gue − tcp_established)", get("tcp_established_gue") - get("tcp_established")),
        ("DSR direct vs NAT, established: a MAC rewrite instead of NAT (tcp_established_direct − tcp_established)", get("tcp_established_direct") - get("tcp_established")),
    ] {
        if value.is_finite() {
            t.row(vec![step.into(), format!("{value:.1}")]);
        }
    }
    t
}

/// Direct server return next to NAT (part 1c): each mode's established and new-flow cost over
/// the floors of NAT's rows, as a multiple of NAT's, and over the encapsulation floors.
pub(crate) fn dsr_table(dp: &Value) -> Table {
    let find = |name: &str| array(dp, "paths").iter().find(|p| p["name"] == name);
    let over = |name: &str, key: &str| find(name).and_then(|p| stat(&p[key]));
    let mut t = Table::new(
        "1c. Direct server return next to NAT (ns over floor, median ±half IQR over sets; × NAT: ratio of the medians)",
        &["mode", "established, over floor_tx", "× NAT", "established, over its encapsulation floor", "new flow, over floor_tx × 2", "× NAT", "new flow, over its encapsulation floor × 2"],
    );
    let nat = (over("tcp_established", "ns_over_floor"), over("tcp_new", "ns_over_floor"));
    let times = |o: &Option<Stat>, base: &Option<Stat>| match (o, base) {
        (Some(o), Some(b)) if b.median > 0.0 => format!("{:.2} ×", o.median / b.median),
        _ => "-".into(),
    };
    let show = |o: &Option<Stat>| o.as_ref().map(|o| o.show(1)).unwrap_or_else(|| "-".into());
    for (mode, suffix, encap) in [
        ("tunnel (IPIP, 20 bytes pushed)", "_tunnel", "floor_encap"),
        ("gue (IPv4 + UDP, 28 bytes pushed)", "_gue", "floor_encap_gue"),
        ("direct (L2, destination MAC rewritten)", "_direct", "-"),
    ] {
        let (est, new) = (format!("tcp_established{suffix}"), format!("tcp_new{suffix}"));
        if find(&est).is_none() && find(&new).is_none() {
            continue;
        }
        let (e, n) = (over(&est, "ns_over_floor"), over(&new, "ns_over_floor"));
        let with_floor = |name: &str| {
            over(name, "ns_over_encap_floor").map(|o| format!("{} (over {encap})", o.show(1))).unwrap_or_else(|| "-".into())
        };
        t.row(vec![mode.into(), show(&e), times(&e, &nat.0), with_floor(&est), show(&n), times(&n, &nat.1), with_floor(&new)]);
    }
    if !t.rows.is_empty() {
        t.row(vec!["NAT (for comparison)".into(), show(&nat.0), "1 ×".into(), "-".into(), show(&nat.1), "1 ×".into(), "-".into()]);
        t.note("one TCP VIP per mode over the same 8 backends as NAT's, measured in the same sets as NAT's rows and the floors, each path's exact output checked once before timing; each mode's new flows run in a data path of their own with the same configuration (stateless: nothing inserted, checked); the encapsulated rows are also given over the floor that only pushes their outer header and transmits (floor_encap: a fixed 20-byte IPv4 header with its checksum; floor_encap_gue: the same plus a fixed UDP header), so the rest is what the load balancer adds: the flow lookup, the backend choice, the outer source and the copied TTL and TOS, and for gue the source port from the flow hash");
    }
    t
}

fn control_table(c: &Value) -> Table {
    let ring = c["ring_size"].as_u64().map(|r| r.to_string()).unwrap_or_else(|| "?".into());
    let mut t = Table::new(&format!("4. Control plane ({ring}-slot rings, median ±half IQR)"), &["what", "backends", "ms", "min ms", "max ms", "runs", "note"]);
    for b in array(c, "builds") {
        let Some(s) = stat(&b["ms"]) else { continue };
        t.row(vec![
            "Maglev table build (build_table)".into(),
            b["backends"].to_string(),
            s.show(3),
            format!("{:.3}", s.min),
            format!("{:.3}", s.max),
            s.n.to_string(),
            String::new(),
        ]);
    }
    for s in array(c, "swaps") {
        if let Some(first) = s["first_write_ms"].as_f64() {
            t.row(vec![
                "first write of a VIP's ring (apply_service)".into(),
                s["backends"].to_string(),
                format!("{first:.1}"),
                String::new(),
                String::new(),
                "1".into(),
                format!("backend slots + {ring} ring slots (memory-mapped RING) + VIP entry"),
            ]);
        }
        let (Some(swap), Some(build), Some(changed)) = (stat(&s["swap_ms"]), stat(&s["build_ms_within_swap"]), stat(&s["changed_slots"])) else { continue };
        t.row(vec![
            "swap: a backend down, then up (apply_service)".into(),
            s["backends"].to_string(),
            swap.show(2),
            format!("{:.2}", swap.min),
            format!("{:.2}", swap.max),
            swap.n.to_string(),
            format!("of which build {:.2} ms; {:.0} slots change", build.median, changed.median),
        ]);
    }
    let probe = &c["probe_to_swap"];
    for (key, what, note) in [
        ("down_ms", "probe to swapped ring (agent, backend killed)", "lb stats: health.last_probe_to_swap_ms"),
        ("up_ms", "probe to swapped ring (agent, backend back)", "same, on recovery"),
    ] {
        if let Some(s) = stat(&probe[key]) {
            t.row(vec![what.into(), "2".into(), s.show(2), format!("{:.2}", s.min), format!("{:.2}", s.max), s.n.to_string(), note.into()]);
        }
    }
    if let Some(why) = probe["skipped"].as_str() {
        t.note(format!("probe-to-swap not measured: {why}"));
    } else if probe.is_null() {
        t.note("probe-to-swap not measured (--no-agent)");
    }
    t.note("a swap (Maps::apply_service) writes the backend slots (one syscall each), builds the ring, copies it into the spare half of the memory-mapped RING map, then replaces the VIP entry (one syscall), which flips the data path to the new ring");
    t
}

fn throughput_table(results: &Map<String, Value>, tp: &Value) -> Table {
    let mut t = Table::new(
        &format!(
            "2. Packets per second through the lab (live-frames generator, 64-byte UDP frames, {} flows, {} × {} s per point, median ±half IQR)",
            tp["flows"].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
            tp["repeats"].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
            tp["seconds"].as_f64().map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into()),
        ),
        &["forwarder on lbc", "cores", "generated Mpps", "LB forwarded Mpps", "received Mpps", "share of bare", "vs 1 core"],
    );
    for point in array(tp, "points") {
        let (Some(fwd), Some(cores)) = (point["forwarder"].as_str(), point["cores"].as_u64()) else { continue };
        let rx = stat(&point["received_mpps"]);
        let bare = throughput_point(results, "bare", cores);
        let one = throughput_point(results, fwd, 1);
        let show = |v: &Value| stat(v).map(|s| s.show(2)).unwrap_or_else(|| "-".into());
        t.row(vec![
            if fwd == "lb" { "load balancer (lb_xdp)".into() } else { "bare forwarder (bpf_redirect only)".into() },
            cores.to_string(),
            show(&point["generated_mpps"]),
            show(&point["lb_forwarded_mpps"]),
            show(&point["received_mpps"]),
            match (rx, bare) {
                (Some(r), Some(b)) => format!("{:.1} %", 100.0 * r.median / b.median),
                _ => "-".into(),
            },
            match (rx, one) {
                (Some(r), Some(o)) => format!("{:.2} ×", r.median / o.median),
                _ => "-".into(),
            },
        ]);
    }
    t.note("one generator thread per core, pinned; with one thread the generator, the forwarder and the receiver share that CPU (veth hands frames on in softirq on the sending CPU), so the absolute rates are the whole lab's, and the ratio to the bare forwarder measured in the same run is the figure that tells the load balancer's cost");
    t.note("\"LB forwarded\" is the load balancer's own forward_to_backend counter; \"received\" is counted by an XDP program on the backends' veths");
    for cores in [1u64, 2] {
        let (Some(lb), Some(bare)) = (throughput_point(results, "lb", cores), throughput_point(results, "bare", cores)) else { continue };
        t.note(format!(
            "{cores} core{}: the load balancer costs {:.0} ns of CPU per packet more than the bare forwarder (1,000 × cores / Mpps, lb − bare), compare part 1's UDP established path over its floor",
            if cores > 1 { "s" } else { "" },
            1000.0 * cores as f64 / lb.median - 1000.0 * cores as f64 / bare.median
        ));
    }
    if let Some((lb, bare)) = scaling(results) {
        t.note(format!(
            "scaling from 1 to 2 cores: lb {lb:.2} ×, the bare forwarder {bare:.2} × in the same run, so lb keeps {:.2} of the lab's scaling; the 2-core/1-core ratio alone is the lab's (the single-thread rate appears limited by the generator, forwarder and receiver taking turns on one CPU)",
            lb / bare
        ));
    }
    t
}

fn proxy_table(results: &Map<String, Value>, px: &Value) -> Table {
    let u = |k: &str| px[k].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    let mut t = Table::new(
        &format!(
            "3. HTTP through the load balancer vs HAProxy (wrk, 1 thread, {} connections, {} × {} s per point, medians; ranges are min to max over the runs)",
            u("connections"),
            u("repeats"),
            px["seconds"].as_f64().map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into()),
        ),
        &[
            "set-up",
            "load",
            "requests/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "errors",
            "machine CPU ms / 1k req (range)",
            "over routing ms / 1k req (range)",
            "process or XDP program time ms / 1k req",
        ],
    );
    for point in array(px, "points") {
        let setup = point["setup"].as_str().unwrap_or("?");
        let load = point["load"].as_str().unwrap_or("?");
        let routing = setup.starts_with("kernel routing");
        let lat = |k: &str| stat(&point["latency_ms"][k]).map(|s| format!("{:.2}", s.median)).unwrap_or_else(|| "-".into());
        let machine = stat(&point["machine_cpu_ms_per_1k"]);
        let over = if routing { None } else { over_routing(results, setup.split(',').next().unwrap_or(setup).split(' ').next().unwrap_or(setup), load) };
        t.row(vec![
            setup.into(),
            load.into(),
            stat(&point["requests_per_s"]).map(|s| format!("{:.0}", s.median)).unwrap_or_else(|| "-".into()),
            lat("p50"),
            lat("p90"),
            lat("p99"),
            point["errors"].to_string(),
            machine.map(|m| format!("{:.1} ({:.1} to {:.1})", m.median, m.min, m.max)).unwrap_or_else(|| "-".into()),
            over.map(|o| o.show()).unwrap_or_else(|| "-".into()),
            if routing { "-".into() } else { stat(&point["direct_cpu_ms_per_1k"]).map(|d| format!("{:.3}", d.median)).unwrap_or_else(|| "-".into()) },
        ]);
    }
    for load in LOADS {
        let (Some(h), Some(l)) = (over_routing(results, "HAProxy", load), over_routing(results, "lb", load)) else { continue };
        let (ratio, verdict) = proxy_ratio(h, l);
        t.note(format!("{load}: whole-machine CPU over routing, HAProxy / lb: {ratio} (target ≥ 5 ×: {verdict})"));
    }
    for r in array(px, "ratios") {
        if let (Some(load), Some(direct)) = (r["load"].as_str(), r["direct_ratio"].as_f64()) {
            t.note(format!(
                "{load}: HAProxy's process time ÷ the XDP program's own run time = {direct:.0} ×; not a CPU-per-request ratio: the XDP run time leaves out the redirect, transmit and NAPI work lb causes, and HAProxy's leaves out its sockets' softirq work"
            ));
        }
    }
    t.note("machine CPU: busy time of all CPUs (/proc/stat) per request, all of softirq included; \"over routing\" subtracts the same figure with plain kernel routing in the middle (client to one backend directly): median minus median, the range from the set-up's lowest run minus routing's highest to its highest minus routing's lowest. The machine is shared, so these figures carry the noise of other work");
    t.note("routing and lb are limited by the 2 cores shared by wrk, the servers and the load balancer, so requests/s compare the set-ups' total cost; CPU per request compares the load balancing itself");
    t
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}
