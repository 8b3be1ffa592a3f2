//! The benchmarks' output: tables on the terminal, `bench/results/latest.{json,md,svg}`, and
//! the results section of `BENCHMARKS.md`.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use super::Machine;

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

    /// A Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n|", self.title, self.header.join(" | "));
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

    /// The targets as a table.
    pub fn targets_table(&self) -> Table {
        let mut t = Table::new("Targets of issue 5", &["target", "measured (median)", "verdict"]);
        for (what, measured, verdict) in &self.targets {
            t.row(vec![what.clone(), measured.clone(), verdict.clone()]);
        }
        t
    }

    /// Writes `bench/results/latest.{json,md,svg}` under `root` and the results section of
    /// `root/BENCHMARKS.md`.
    pub fn write(&self, root: &Path) -> anyhow::Result<()> {
        let dir = root.join("bench/results");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = json!({
            "machine": self.machine.to_json(),
            "args": self.args,
            "targets": self.targets.iter().map(|(w, m, v)| json!({"target": w, "measured": m, "verdict": v})).collect::<Vec<_>>(),
            "results": Value::Object(self.json.clone()),
        });
        write_atomic(&dir.join("latest.json"), &serde_json::to_string_pretty(&json)?)?;
        write_atomic(&dir.join("latest.svg"), &svg(&self.charts, &self.machine.describe()))?;
        let md = self.markdown();
        write_atomic(&dir.join("latest.md"), &md)?;
        update_benchmarks_md(&root.join("BENCHMARKS.md"), &md)?;
        Ok(())
    }

    /// The results as Markdown (machine, targets, every table).
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "Latest run: `cargo xtask bench{}` on {}.\n\n![charts](bench/results/latest.svg)\n\n",
            self.args.iter().map(|a| format!(" {a}")).collect::<String>(),
            self.machine.describe()
        );
        md.push_str(&self.targets_table().markdown());
        for t in &self.tables {
            md.push_str(&t.markdown());
        }
        md
    }
}

/// Start and end markers of the generated section of BENCHMARKS.md.
pub const BEGIN: &str = "<!-- bench-results:begin (written by `cargo xtask bench`) -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- bench-results:end -->";

fn update_benchmarks_md(path: &Path, section: &str) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        println!("  ({} not found: results only in bench/results/)", path.display());
        return Ok(());
    };
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        println!("  ({} has no results markers: left unchanged)", path.display());
        return Ok(());
    };
    if e < b {
        return Ok(());
    }
    let new = format!("{}{BEGIN}\n\n{}{}", &text[..b], section, &text[e..]);
    write_atomic(path, &new)
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}
