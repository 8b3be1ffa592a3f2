//! `cargo xtask bench`: the benchmarks of issue 5.
//!
//! 1. [`datapath`]: cost per packet of every data path case with BPF_PROG_TEST_RUN, against
//!    floor programs measured in the same run;
//! 2. [`throughput`]: packets per second through the lab (kernel pktgen where it exists, else
//!    a live-frames generator), next to a bare forwarder;
//! 3. [`proxy`]: HTTP load through HAProxy `mode tcp` and through the load balancer, CPU per
//!    1,000 requests;
//! 4. [`control`]: Maglev build time, ring write and swap time, probe-to-swap time.
//!
//! Benchmarks report figures and ratios; they only fail when a path gives a wrong verdict or
//! wrong bytes, never on timing. Everything is printed as tables and written to
//! `bench/results/` (JSON and an SVG chart); the figure tables of `BENCHMARKS.md` and of the
//! README's "Benchmarks" section are then generated from that JSON ([`report::generate`]).
//! Results are written only from a tree without uncommitted changes to the measured code
//! ([`MEASURED_PATHS`]), or marked unpublishable (`LB_BENCH_UNPUBLISHABLE=1`, which
//! `cargo xtask bench --unpublishable` sets).

pub mod control;
pub mod datapath;
pub mod dsr;
pub mod proxy;
pub mod report;
pub mod stats;
pub mod throughput;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

/// Pins the calling thread to `cpu` (sched_setaffinity).
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only
    // touch that set and the calling thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!("sched_setaffinity(cpu {cpu}): {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Number of online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The workspace root (the tests crate lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// The machine the benchmarks ran on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Online CPUs (`nproc`).
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// Whether it looks like a virtual machine (`hypervisor` CPU flag).
    pub virtual_machine: bool,
    /// When the run started (UTC).
    pub date: String,
    /// The commit the run was built from (full hash).
    pub commit: String,
    /// Whether tracked files under [`MEASURED_PATHS`] had uncommitted changes (`None`: git
    /// could not tell).
    pub dirty: Option<bool>,
    /// Whether the run was explicitly marked unpublishable ([`UNPUBLISHABLE_ENV`]).
    pub unpublishable: bool,
}

/// The paths whose uncommitted changes make a run's figures unreproducible from its commit.
pub const MEASURED_PATHS: &[&str] = &["lb-common", "lb-ebpf", "lb-userspace", "tests", "xtask", "Cargo.toml", "Cargo.lock"];

/// Set to `1` to write results from a dirty tree, marked unpublishable in the JSON and in
/// every generated table (`cargo xtask bench --unpublishable`).
pub const UNPUBLISHABLE_ENV: &str = "LB_BENCH_UNPUBLISHABLE";

/// Uncommitted changes to tracked files under [`MEASURED_PATHS`], as `git status --porcelain`
/// lines; an error when git cannot tell.
pub fn measured_changes() -> anyhow::Result<Vec<String>> {
    let out = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no", "--"])
        .args(MEASURED_PATHS)
        .current_dir(root())
        .output()
        .map_err(|e| anyhow::anyhow!("running git status: {e}"))?;
    anyhow::ensure!(out.status.success(), "git status failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).current_dir(root()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Machine {
    /// Reads the machine's description.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let commit = command_line("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = measured_changes().ok().map(|c| !c.is_empty());
        Machine {
            nproc: cpus(),
            cpu_model: field("model name").unwrap_or_else(|| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            virtual_machine: field("flags").is_some_and(|f| f.split_whitespace().any(|w| w == "hypervisor")),
            date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            commit,
            dirty,
            unpublishable: std::env::var(UNPUBLISHABLE_ENV).is_ok_and(|v| v == "1"),
        }
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "nproc": self.nproc,
            "cpu_model": self.cpu_model,
            "kernel": self.kernel,
            "memory_gib": self.memory_gib,
            "virtual_machine": self.virtual_machine,
            "date": self.date,
            "commit": self.commit,
            "uncommitted_changes": self.dirty,
            "unpublishable": self.unpublishable,
        })
    }

    /// One line for the reports.
    pub fn describe(&self) -> String {
        format!(
            "{} CPUs ({}{}), {} GiB, kernel {}; commit {}, {}",
            self.nproc,
            self.cpu_model,
            if self.virtual_machine { ", virtual machine" } else { "" },
            self.memory_gib,
            self.kernel,
            if self.dirty == Some(false) { self.commit.clone() } else { format!("{}+dirty", self.commit) },
            self.date
        )
    }
}

/// Polls `done` every `step` until it returns true or `limit` has passed; whether it did.
pub fn wait_until(limit: Duration, step: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// Binaries of this workspace built next to the running benchmark (`target/release`).
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.to_owned(), dir.parent()?.to_owned()].into_iter().map(|d| d.join(name)).find(|p| p.exists())
}
