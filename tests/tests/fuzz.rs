//! The data path's mutation fuzzer (issue 18): a bounded campaign with a fixed seed, every
//! frame checked against the invariants of `lb_tests::fuzz::invariants`, and the replay of
//! every regression fixture in `tests/fuzz-regressions/` (one pcap per defect class the fuzzer
//! found). Needs root (BPF, network namespaces).

use std::{path::Path, time::Duration};

use lb_tests::{
    fuzz::{
        campaign::{self, Options},
        model::Model,
        seeds::KINDS,
    },
    harness::require_root,
};

/// Frames of the campaign: about 30 s on the 2-core development machine.
const FRAMES: u64 = 200_000;
/// The campaign's fixed seed.
const SEED: u64 = 0x1b_f022;
/// The campaign stops here even if frames remain (a bound, not a speed requirement).
const TIME_LIMIT: Duration = Duration::from_secs(180);

#[test]
fn a_bounded_campaign_breaks_no_invariant() {
    require_root();
    let model = Model::standard();
    let lb = model.start();
    let opts = Options {
        seed: SEED,
        frames: FRAMES,
        time_limit: TIME_LIMIT,
        keep: 5,
        pcap_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures")),
        progress_every: 0,
    };
    let report = campaign::run(&model, &lb, &opts).expect("campaign");
    let secs = report.elapsed.as_secs_f64();
    println!("{} frames of seed {SEED:#x} in {secs:.1} s ({:.0} frames/s)", report.frames, report.frames as f64 / secs);
    if report.timed_out {
        println!("stopped by the {TIME_LIMIT:?} bound before {FRAMES} frames");
    }
    for (kind, n) in KINDS.iter().zip(&report.per_kind) {
        assert!(*n > 0, "seed kind {kind} never ran");
    }
    assert_eq!(report.verdicts[0], 0, "XDP_ABORTED");
    if report.failed_frames != 0 {
        for (class, (n, kinds, first)) in &report.classes {
            println!("{n:>8}  {class} (first at index {first}; kinds {kinds:?})");
        }
        for f in &report.failures {
            println!("{f}");
        }
        for p in &report.pcaps {
            println!("written {}", p.display());
        }
        panic!("{} of {} frames broke an invariant (replay one with `cargo xtask fuzz --seed {SEED} --index I`)", report.failed_frames, report.frames);
    }
}

#[test]
fn every_regression_fixture_keeps_the_invariants() {
    require_root();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-regressions");
    let files = campaign::pcaps_in(&dir).expect("reading tests/fuzz-regressions");
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    let model = Model::standard();
    let mut failed = Vec::new();
    for path in &files {
        // A fresh data path per fixture: a fixture's outcome must not depend on the others.
        let lb = model.start();
        for r in campaign::replay_file(&model, &lb, path).expect("replaying") {
            if !r.violations.is_empty() {
                failed.push(format!(
                    "{}: verdict {}: {:?}\n  input  {}\n  output {}",
                    path.display(),
                    r.run.action,
                    r.violations,
                    lb_tests::fuzz::wire::hex(&r.input),
                    lb_tests::fuzz::wire::hex(&r.run.out)
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{} of {} fixtures break an invariant:\n{}", failed.len(), files.len(), failed.join("\n"));
}
