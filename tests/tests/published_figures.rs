//! The published figures are the generator's: every figure table of README.md's "Benchmarks"
//! section and of BENCHMARKS.md sits between `<!-- generated: NAME begin/end -->` markers and
//! must be exactly what `lb_tests::bench::report::generate` writes from the committed
//! `bench/results/latest.json`. Host-only, no root.
//!
//! After changing the report code on purpose, regenerate with
//! `LB_UPDATE_FIGURES=1 cargo test -p lb-tests --test published_figures` and commit the result.

use lb_tests::bench::{report, root};
use serde_json::Value;

fn latest() -> Value {
    let path = root().join("bench/results/latest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

#[test]
fn readme_and_benchmarks_hold_the_generated_tables() {
    let json = latest();
    if std::env::var_os("LB_UPDATE_FIGURES").is_some_and(|v| v == "1") {
        report::write_generated(&root(), &json).expect("regenerating the published tables");
    }
    let regions = report::generate(&json).expect("generating the tables from latest.json");
    for file in ["README.md", "BENCHMARKS.md"] {
        assert!(regions.iter().any(|r| r.file == file), "the generator writes nothing into {file}");
    }
    let mut failures = Vec::new();
    for r in &regions {
        let text = std::fs::read_to_string(root().join(r.file)).unwrap_or_else(|e| panic!("reading {}: {e}", r.file));
        match report::region(&text, r.name) {
            Err(e) => failures.push(format!("{}: region {:?}: {e:#}", r.file, r.name)),
            Ok(found) if found != r.text => {
                let line = found.lines().zip(r.text.lines()).position(|(a, b)| a != b).unwrap_or(found.lines().count().min(r.text.lines().count()));
                failures.push(format!(
                    "{}: region {:?} differs from what the generator writes from bench/results/latest.json, first at its line {}:\n  file:      {}\n  generated: {}",
                    r.file,
                    r.name,
                    line + 1,
                    found.lines().nth(line).unwrap_or("(end)"),
                    r.text.lines().nth(line).unwrap_or("(end)"),
                ));
            }
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(regenerate with LB_UPDATE_FIGURES=1 cargo test -p lb-tests --test published_figures, or run cargo xtask bench)",
        failures.join("\n")
    );
}

#[test]
fn latest_md_is_generated_from_the_same_json() {
    let expected = report::results_markdown(&latest()).expect("generating latest.md");
    let found = std::fs::read_to_string(root().join("bench/results/latest.md")).expect("reading bench/results/latest.md");
    assert!(found == expected, "bench/results/latest.md differs from what the generator writes from latest.json");
}

#[test]
fn a_missing_or_misplaced_marker_is_an_error() {
    let (b, e) = (report::begin_marker("x"), report::end_marker("x"));
    assert_eq!(report::region(&format!("a{b}inner{e}z"), "x").unwrap(), "inner");
    assert!(report::region(&format!("a{b}inner"), "x").is_err());
    assert!(report::region(&format!("a inner{e}"), "x").is_err());
    assert!(report::region(&format!("{e}inner{b}"), "x").is_err());
    assert!(report::region(&format!("{b}{e}{b}{e}"), "x").is_err());
    assert_eq!(report::replace_region(&format!("a{b}old{e}z"), "x", "new").unwrap(), format!("a{b}new{e}z"));
}

/// Every line of a Markdown table in `text`, grouped by table.
fn tables(text: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with('|') {
            if !in_table {
                out.push(Vec::new());
            }
            out.last_mut().expect("pushed").push(line);
            in_table = true;
        } else {
            in_table = false;
        }
    }
    out
}

#[test]
fn a_dirty_or_flagged_run_is_marked_in_every_table() {
    let clean = latest();
    assert!(
        report::generate(&clean).unwrap().iter().all(|r| !r.text.contains("UNPUBLISHABLE")),
        "the committed results are marked unpublishable"
    );
    for (key, value) in [("uncommitted_changes", Value::Bool(true)), ("unpublishable", Value::Bool(true)), ("uncommitted_changes", Value::Null)] {
        let mut json = clean.clone();
        json["machine"][key] = value.clone();
        let mut text = String::new();
        for r in report::generate(&json).unwrap() {
            text.push_str(&r.text);
        }
        text.push_str(&report::results_markdown(&json).unwrap());
        let tables = tables(&text);
        assert!(tables.len() >= 7, "expected the summary and every results table, found {}", tables.len());
        for t in &tables {
            assert!(t.iter().any(|l| l.contains("UNPUBLISHABLE")), "{key} = {value}: a table without the mark:\n{}", t.join("\n"));
        }
    }
}
