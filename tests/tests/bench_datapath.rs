//! Part 1 of `cargo xtask bench` on a short run: before anything is timed, every path of the
//! NAT and direct server return rows and the encapsulation floors gives its exact frames
//! (the bench fails otherwise), and the DSR rows are reported next to NAT's and over the
//! encapsulation floors. Needs root; writes no results (`--no-write`).

use std::process::Command;

use lb_tests::harness::require_root;

#[test]
fn the_datapath_bench_checks_and_reports_the_dsr_rows_next_to_nat() {
    require_root();
    let rows = "tcp_new,tcp_established,tcp_new_tunnel,tcp_established_tunnel,tcp_new_gue,tcp_established_gue,tcp_new_direct,tcp_established_direct";
    let out = Command::new(env!("CARGO_BIN_EXE_lb-bench"))
        .args(["datapath", "--sets", "2", "--runs", "50", "--no-write"])
        .env("LB_BENCH_ONLY", rows)
        .env("LB_BENCH_CONN", "65536")
        .env("LB_BENCH_POOL", "16")
        .output()
        .expect("running lb-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lb-bench failed:\n{stdout}\n{stderr}");
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in:\n{stdout}"))
            .to_owned()
    };
    for floor in ["floor: push a fixed 20-byte outer IPv4 header (IPIP), XDP_TX", "floor: push a fixed 28-byte outer IPv4 + UDP header (GUE), XDP_TX"] {
        line(floor);
    }
    for (mode, encap) in [("tunnel (IPIP", Some("(over floor_encap)")), ("gue (IPv4 + UDP", Some("(over floor_encap_gue)")), ("direct (L2", None)] {
        let row = line(mode);
        // Established and new flow, each as a multiple of NAT's.
        assert_eq!(row.matches(" ×").count(), 2, "{row}");
        match encap {
            Some(floor) => assert_eq!(row.matches(floor).count(), 2, "{row}"),
            None => assert!(!row.contains("(over floor_encap"), "{row}"),
        }
    }
    line("NAT (for comparison)");
    // The DSR rows have no targets of their own.
    assert!(!stdout.contains("1. tcp_established_tunnel ≤"), "{stdout}");
}

#[test]
fn the_datapath_bench_checks_the_stateless_and_retention_rows_and_reports_their_targets() {
    require_root();
    let rows = "tcp_new,tcp_syn,udp_new,tcp_established,tcp_established_many,tcp_established_1m,tcp_new_moved,tcp_established_moved,tcp_established_unmoved";
    let out = Command::new(env!("CARGO_BIN_EXE_lb-bench"))
        .args(["datapath", "--sets", "2", "--runs", "50", "--no-write"])
        .env("LB_BENCH_ONLY", rows)
        .env("LB_BENCH_CONN", "65536")
        .env("LB_BENCH_POOL", "64")
        .output()
        .expect("running lb-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Before timing, every row's verdict, bytes and counters were checked (stateless rows:
    // forwarded and counted stateless, nothing recorded; moved slots: HALF_OPEN then CONNS);
    // after it, the table holds exactly the new flows of moved slots.
    assert!(out.status.success(), "lb-bench failed:\n{stdout}\n{stderr}");
    for what in [
        "TCP established, 1000000 distinct flows in turn (stateless)",
        "retention: TCP new flow in a moved slot",
        "retention: TCP established, one hot flow in a moved slot (CONNS hit)",
        "retention: TCP established, one hot flow in an unmoved slot",
    ] {
        assert!(stdout.contains(what), "no row {what:?} in:\n{stdout}");
    }
    for target in [
        "1. tcp_new ≤ 2 × tcp_established + 20 ns",
        "1. tcp_established_many ≤ tcp_established + 30 ns",
        "1. tcp_established_1m ≤ tcp_established + 30 ns",
        "1. tcp_established ≤ 80 ns over floor_tx",
    ] {
        let line = stdout.lines().find(|l| l.contains(target)).unwrap_or_else(|| panic!("no target {target:?} in:\n{stdout}"));
        assert!(line.contains("met") || line.contains("missed"), "{line}");
    }
}

/// The published results' files, restored on drop if a run changed them.
struct Published(Vec<(std::path::PathBuf, Vec<u8>)>);

impl Published {
    fn snapshot() -> Published {
        let root = lb_tests::bench::root();
        let files = ["bench/results/latest.json", "bench/results/latest.md", "bench/results/latest.svg", "BENCHMARKS.md", "README.md"];
        Published(files.iter().map(|f| root.join(f)).map(|p| (p.clone(), std::fs::read(&p).expect("reading a published file"))).collect())
    }

    /// The files whose contents differ from the snapshot.
    fn changed(&self) -> Vec<String> {
        self.0.iter().filter(|(p, old)| std::fs::read(p).ok().as_ref() != Some(old)).map(|(p, _)| p.display().to_string()).collect()
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        for (p, old) in &self.0 {
            if std::fs::read(p).ok().as_ref() != Some(old) {
                let _ = std::fs::write(p, old);
            }
        }
    }
}

#[test]
fn a_run_whose_every_part_failed_leaves_the_published_results_alone() {
    require_root();
    let published = Published::snapshot();
    // A connection table far too small for the run's new flows of moved slots (the only ones
    // that insert): the data path part fails its "none evicted" check, after timing.
    let out = Command::new(env!("CARGO_BIN_EXE_lb-bench"))
        .args(["datapath", "--sets", "1", "--runs", "200"])
        .env("LB_BENCH_ONLY", "tcp_new_moved")
        .env("LB_BENCH_CONN", "64")
        .env("LB_BENCH_POOL", "4")
        .env(lb_tests::bench::UNPUBLISHABLE_ENV, "1")
        .output()
        .expect("running lb-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run should fail:\n{stderr}");
    assert!(stderr.contains("-- datapath FAILED"), "{stderr}");
    assert!(stderr.contains("no part produced results"), "{stderr}");
    assert_eq!(published.changed(), Vec::<String>::new(), "{stderr}");
}
