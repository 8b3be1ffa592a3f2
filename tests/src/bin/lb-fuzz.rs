//! `cargo xtask fuzz`: a campaign of the data path's mutation fuzzer, or the replay of one
//! failing frame.
//!
//! ```text
//! lb-fuzz [--frames N] [--seed S] [--seconds T] [--keep N] [--index I | --replay FILE]
//!   --frames N    frames to run (default 1000000)
//!   --seed S      campaign seed (default 1)
//!   --seconds T   stop after T seconds even if frames remain (default: no limit)
//!   --index I     run frame I of seed S alone, on a freshly set-up data path
//!   --replay FILE run every frame of a pcap file (e.g. one written for a failure)
//!   --keep N      failures printed in full and written as pcap files (default 20)
//! ```
//! A campaign prints progress, frames per seed kind, the verdicts, every violation class and
//! the first failures (their inputs written to fuzz/failures/<seed>-<index>.pcap), and writes
//! fuzz/results/<seed>-<frames>.json. Exits 1 on any violation. Needs root (BPF, namespaces).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use lb_tests::fuzz::{
    campaign::{self, Options},
    invariants::Violation,
    model::Model,
    seeds::KINDS,
    wire::hex,
};

const USAGE: &str = "usage: lb-fuzz [--frames N] [--seed S] [--seconds T] [--keep N] [--index I | --replay FILE]";

/// The workspace root (results and failures are written under its `fuzz/`).
fn root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the test crate lives in the workspace").to_owned()
}

struct Args {
    frames: u64,
    seed: u64,
    seconds: Option<u64>,
    index: Option<u64>,
    replay: Option<PathBuf>,
    keep: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { frames: 1_000_000, seed: 1, seconds: None, index: None, replay: None, keep: 20 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--frames" => args.frames = value()?.parse().context("--frames needs a number")?,
            "--seed" => args.seed = value()?.parse().context("--seed needs a number")?,
            "--seconds" => args.seconds = Some(value()?.parse().context("--seconds needs a number")?),
            "--index" => args.index = Some(value()?.parse().context("--index needs a number")?),
            "--replay" => args.replay = Some(PathBuf::from(value()?)),
            "--keep" => args.keep = value()?.parse().context("--keep needs a number")?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.index.is_some() && args.replay.is_some() {
        bail!("--index and --replay exclude each other\n{USAGE}");
    }
    Ok(args)
}

fn print_run(action: u32, out: &[u8], violations: &[Violation]) {
    println!("verdict {action}, output {}", hex(out));
    if violations.is_empty() {
        println!("invariants: all hold");
    }
    for v in violations {
        println!("violation {}: {}", v.invariant, v.detail);
    }
}

/// The commit checked out and whether the tree has uncommitted changes.
fn git_state() -> (String, bool) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let clean = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| s.is_empty());
    (commit, clean)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lb-fuzz: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs what the arguments ask; `Ok(false)` when an invariant broke.
fn run() -> anyhow::Result<bool> {
    let args = parse_args()?;
    let model = Model::standard();
    let lb = model.start();
    if let Some(path) = &args.replay {
        let mut ok = true;
        for (i, r) in campaign::replay_file(&model, &lb, path)?.into_iter().enumerate() {
            println!("frame {i} of {}: input {}", path.display(), hex(&r.input));
            print_run(r.run.action, &r.run.out, &r.violations);
            ok &= r.violations.is_empty();
        }
        return Ok(ok);
    }
    if let Some(index) = args.index {
        let input = campaign::input(&model, args.seed, index);
        println!("seed {} index {index}: {} with mutations {:?}", args.seed, KINDS[input.kind], input.mutations);
        println!("input {}", hex(&input.bytes));
        let (run, violations) = campaign::run_one(&model, &lb, &input.bytes);
        print_run(run.action, &run.out, &violations);
        return Ok(violations.is_empty());
    }
    // The code measured is the code at the start: the tree may change while a long campaign runs.
    let (commit, clean) = git_state();
    let opts = Options {
        seed: args.seed,
        frames: args.frames,
        time_limit: args.seconds.map_or(Duration::MAX, Duration::from_secs),
        keep: args.keep,
        pcap_dir: Some(root().join("fuzz/failures")),
        progress_every: 100_000,
    };
    let report = campaign::run(&model, &lb, &opts)?;
    let secs = report.elapsed.as_secs_f64();
    println!("\n{} frames in {secs:.1} s ({:.0} frames/s){}", report.frames, report.frames as f64 / secs, if report.timed_out { ", stopped by --seconds" } else { "" });
    println!("frames per seed kind:");
    for (kind, n) in KINDS.iter().zip(&report.per_kind) {
        println!("  {kind:<22} {n}");
    }
    let names = ["aborted", "drop", "pass", "tx", "redirect"];
    println!("verdicts: {}", names.iter().zip(report.verdicts).map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", "));
    println!("frames breaking an invariant: {}", report.failed_frames);
    for (class, (n, kinds, first)) in &report.classes {
        println!("  {n:>8}  {class} (first at index {first}; kinds {kinds:?})");
    }
    for f in &report.failures {
        println!("{f}");
    }
    for p in &report.pcaps {
        println!("written {}", p.display());
    }
    let result = serde_json::json!({
        "seed": args.seed,
        "frames": report.frames,
        "frames_asked": args.frames,
        "violations": report.failed_frames,
        "violation_classes": report.classes.iter().map(|(c, (n, kinds, first))| serde_json::json!({"class": c, "count": n, "kinds": kinds, "first_index": first})).collect::<Vec<_>>(),
        "elapsed_secs": secs,
        "frames_per_sec": report.frames as f64 / secs,
        "per_kind": KINDS.iter().zip(&report.per_kind).map(|(k, n)| (k.to_string(), (*n).into())).collect::<serde_json::Map<String, serde_json::Value>>(),
        "verdicts": names.iter().zip(report.verdicts).map(|(k, n)| (k.to_string(), n.into())).collect::<serde_json::Map<String, serde_json::Value>>(),
        "git_commit": commit,
        "git_clean": clean,
    });
    let path = root().join(format!("fuzz/results/{}-{}.json", args.seed, args.frames));
    std::fs::create_dir_all(path.parent().expect("has a parent")).context("creating fuzz/results")?;
    std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("result written to {}", path.display());
    Ok(report.failed_frames == 0)
}
