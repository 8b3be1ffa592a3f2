//! Project tasks: `cargo xtask setup` installs what a fresh machine lacks, `cargo xtask test`
//! sets up and runs every test.

use std::{
    env,
    ffi::OsString,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use cli::Task;

// The lab shares the end-to-end tests' topology and agent runner (by path: xtask must build
// before `setup` has installed the eBPF toolchain, so it cannot depend on the test crate).
#[path = "../../tests/src/agent.rs"]
#[allow(dead_code, reason = "shared with the tests, which use all of it")]
mod agent;
#[path = "../../tests/src/download.rs"]
mod download;
#[path = "../../tests/src/dsr.rs"]
mod dsr;
mod cli;
mod dsr_lab;
#[path = "../../tests/src/ha.rs"]
#[allow(dead_code, reason = "shared with the tests, which use all of it")]
mod ha;
mod ha_lab;
mod lab;
#[path = "../../tests/src/orphans.rs"]
mod orphans;
mod package;
#[path = "../../tests/src/topology.rs"]
#[allow(dead_code, reason = "shared with the tests, which use all of it")]
mod topology;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.task {
        Task::Setup => setup(),
        Task::Test { args, binary_args } => {
            let args = Task::cargo_test_args(args, binary_args);
            setup()
                .and_then(|()| if args.is_empty() { lint() } else { Ok(()) })
                .and_then(|()| build_bins())
                .and_then(|()| test(&args))
        }
        Task::Bench { unpublishable, args } => bench(unpublishable, &args),
        Task::Profile { seconds } => profile(seconds),
        Task::Fuzz(args) => setup().and_then(|()| fuzz(&args.to_args())),
        Task::Lab(args) if args.ha => setup()
            .and_then(|()| build_bins())
            .and_then(|()| ha_lab::run(&root(), args.nodes.map_or(2, usize::from), args.dsr_mode())),
        Task::Lab(args) => setup().and_then(|()| build_bins()).and_then(|()| lab::run(&root(), args.keep, args.dsr_mode())),
        Task::Package(args) => setup().and_then(|()| package(args.debug)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// PATH with cargo's bin directory, where `cargo install` put bpf-linker.
fn path_with_cargo_bin() -> String {
    let home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env::var("HOME").unwrap_or_default()).join(".cargo"));
    format!("{}:{}", home.join("bin").display(), env::var("PATH").unwrap_or_default())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .env("PATH", path_with_cargo_bin())
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Installs what the machine lacks (idempotent).
fn setup() -> anyhow::Result<()> {
    run(Command::new("bash").arg("scripts/setup.sh"))
}

/// Builds `lb` and the lab's backend server (the end-to-end tests run them; `cargo test`
/// builds only the test crate's own binaries).
fn build_bins() -> anyhow::Result<()> {
    run(Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(["build", "--quiet", "--bins"]))
}

/// The Debian package of the release build (of the debug build with `debug`), written to
/// `target/debian/`; prints its path.
fn package(debug: bool) -> anyhow::Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profile = if debug { "debug" } else { "release" };
    let mut build = Command::new(&cargo);
    build.args(["build", "--quiet", "-p", "lb-userspace", "--bin", "lb", "--bin", "lb-docs"]);
    if !debug {
        build.arg("--release");
    }
    run(&mut build)?;
    // This xtask runs from target/debug: the target directory is its parent.
    let exe = env::current_exe().context("the xtask's path")?;
    let target = exe.parent().and_then(Path::parent).context("the target directory")?;
    let out = target.join("debian");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let deb = package::build(&root(), &target.join(profile), &out)?;
    println!("{}", deb.display());
    Ok(())
}

/// The paths whose uncommitted changes make benchmark results unreproducible from their
/// commit (the same list as `lb_tests::bench::MEASURED_PATHS`, which `lb-bench` checks again
/// before it writes).
const MEASURED_PATHS: &[&str] = &["lb-common", "lb-ebpf", "lb-userspace", "tests", "xtask", "Cargo.toml", "Cargo.lock"];

/// The benchmarks (BENCHMARKS.md): set-up, release builds of `lb` and the lab's backend server
/// (the control-plane part runs the agent), then `lb-bench` with the remaining arguments, e.g.
/// `cargo xtask bench datapath --sets 21` or `cargo xtask bench pktgen --dev eth1 --dst 10.0.0.10`.
///
/// Results are written (bench/results, the generated tables of README.md and BENCHMARKS.md)
/// only from a tree without uncommitted changes under [`MEASURED_PATHS`]; `--unpublishable`
/// writes them anyway, marked unpublishable (`LB_BENCH_UNPUBLISHABLE=1` for `lb-bench`), and
/// `--no-write` only prints. The check runs before anything is built or measured.
fn bench(unpublishable: bool, args: &[OsString]) -> anyhow::Result<()> {
    // `--unpublishable` may also follow lb-bench's arguments, e.g. `bench datapath --unpublishable`.
    let unpublishable = unpublishable || args.iter().any(|a| a == "--unpublishable");
    let args: Vec<&OsString> = args.iter().filter(|a| *a != "--unpublishable").collect();
    let writes = !args.iter().any(|a| *a == "--no-write" || *a == "-h" || *a == "--help");
    if writes && !unpublishable {
        ensure_committed(MEASURED_PATHS, "run with --unpublishable (results written, marked unpublishable) or --no-write")?;
    }
    setup()?;
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).args(["build", "--quiet", "--release", "--bins"]))?;
    let mut cmd = Command::new(&cargo);
    cmd.args(["run", "--quiet", "--release", "-p", "lb-tests", "--bin", "lb-bench", "--"]).args(args);
    if unpublishable {
        cmd.env("LB_BENCH_UNPUBLISHABLE", "1");
    } else {
        cmd.env_remove("LB_BENCH_UNPUBLISHABLE");
    }
    run(&mut cmd)
}

/// Fails unless `paths` have no uncommitted changes (`otherwise` says what the operator can do
/// instead).
fn ensure_committed(paths: &[&str], otherwise: &str) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no", "--"])
        .args(paths)
        .current_dir(root())
        .output()
        .context("running git status")?;
    if !out.status.success() {
        bail!("git cannot tell whether the measured code has uncommitted changes; {otherwise}");
    }
    let changes = String::from_utf8_lossy(&out.stdout);
    if !changes.trim().is_empty() {
        bail!(
            "refusing to publish results from a dirty tree: uncommitted changes to the measured code\n{}\ncommit them, or {otherwise}",
            changes.trim_end()
        );
    }
    Ok(())
}

/// A sampled profile of the benchmark's established path (`scripts/profile-datapath.py`, on
/// the release build of `lb-bench`), written to bench/results/profile.md from a committed tree
/// (the measured code and the script).
fn profile(seconds: u32) -> anyhow::Result<()> {
    let paths: Vec<&str> = MEASURED_PATHS.iter().copied().chain(["scripts"]).collect();
    ensure_committed(&paths, "commit them first")?;
    setup()?;
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).args(["build", "--quiet", "--release", "-p", "lb-tests", "--bin", "lb-bench"]))?;
    let root = root();
    run(Command::new("python3")
        .arg(root.join("scripts/profile-datapath.py"))
        .arg(root.join("target/release/lb-bench"))
        .arg(root.join("bench/results/profile.md"))
        .arg(seconds.to_string())
        .current_dir(&root))
}

/// The data path's mutation fuzzer (`lb-fuzz`, release build): a campaign of `--frames N`
/// frames of seed `--seed S`, or the replay of one frame (`--index I`) or pcap file
/// (`--replay FILE`). Needs root. Writes `fuzz/results/<seed>-<frames>.json`.
fn fuzz(args: &[OsString]) -> anyhow::Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).args(["run", "--quiet", "--release", "-p", "lb-tests", "--bin", "lb-fuzz", "--"]).args(args))
}

/// Clippy with warnings denied, on the host crates (every target) and on the eBPF crate for
/// the BPF target (nightly, as its build): the full `cargo xtask test` fails on a warning.
fn lint() -> anyhow::Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).args(["clippy", "--workspace", "--exclude", "lb-ebpf", "--all-targets", "--", "-D", "warnings"]))
        .context("clippy on the host crates")?;
    run(Command::new("cargo").args([
        "+nightly",
        "clippy",
        "-p",
        "lb-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--bins",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy on the eBPF crate")
}

/// Every test: host unit tests and the kernel fixtures (needs root). Ends with one line
/// totalling every test binary's result.
fn test(extra: &[OsString]) -> anyhow::Result<()> {
    let mut child = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--no-fail-fast", "--workspace", "--exclude", "lb-ebpf"])
        .args(extra)
        .env("PATH", path_with_cargo_bin())
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result_line(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    println!("{passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

/// Passed and failed counts of a libtest summary line
/// (`test result: ok. 18 passed; 0 failed; 0 ignored; ...`).
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let mut words = rest.split_whitespace().skip(1);
    let passed = words.next()?.parse().ok()?;
    let failed = words.nth(1)?.parse().ok()?;
    Some((passed, failed))
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

    #[test]
    fn reads_libtest_summaries() {
        let ok = "test result: ok. 18 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.07s";
        assert_eq!(parse_result_line(ok), Some((18, 0)));
        let bad = "test result: FAILED. 19 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(parse_result_line(bad), Some((19, 1)));
        assert_eq!(parse_result_line("running 20 tests"), None);
    }
}
