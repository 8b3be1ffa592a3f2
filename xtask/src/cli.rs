//! The tasks' command line: an unknown task or flag exits 2 with the usage.

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand, builder::PossibleValuesParser};

use crate::dsr_lab;

/// Project tasks: set-up, the tests, the lab, the benchmarks, the fuzzer and the Debian package.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", flatten_help = true)]
pub struct Cli {
    /// The task.
    #[command(subcommand)]
    pub task: Task,
}

/// The tasks.
#[derive(Subcommand, Debug)]
pub enum Task {
    /// Install what the machine lacks (scripts/setup.sh; idempotent).
    Setup,
    /// Set up, lint (only without arguments), build and run every test; ends with one line
    /// totalling every test binary's result.
    Test {
        /// `cargo test` arguments: test names, `-p CRATE`, `--test FILE`.
        #[arg(allow_hyphen_values = true, value_name = "CARGO TEST ARGS")]
        args: Vec<OsString>,
        /// The test binaries' arguments, e.g. `--test-threads=1` or `--nocapture`.
        #[arg(last = true, value_name = "TEST BINARY ARGS")]
        binary_args: Vec<OsString>,
    },
    /// The benchmarks (BENCHMARKS.md): release builds, then `lb-bench` with the arguments.
    Bench {
        /// Write the results from a tree with uncommitted changes, marked unpublishable.
        #[arg(long)]
        unpublishable: bool,
        /// `lb-bench` arguments: parts (datapath, control, throughput, proxy, pktgen) and
        /// `--quick`, `--sets N`, `--runs N`, `--seconds S`, `--no-agent`, `--no-write`,
        /// `--dev IF --dst VIP[:PORT] [--dst-mac MAC] [--threads N] [--flows N]` for pktgen.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "LB-BENCH ARGS")]
        args: Vec<OsString>,
    },
    /// A sampled profile of an established packet in the data path
    /// (`scripts/profile-datapath.py`; needs root, perf and bpftool): bench/results/profile.md.
    Profile {
        /// Seconds of sampling.
        #[arg(long, default_value_t = 30, value_name = "S")]
        seconds: u32,
    },
    /// The data path's mutation fuzzer (`lb-fuzz`, release build; needs root).
    Fuzz(FuzzArgs),
    /// The load balancer end to end in its own lab of network namespaces.
    Lab(LabArgs),
    /// Build the Debian package (release build of `lb`) and print its path.
    Package(PackageArgs),
}

impl Task {
    /// `cargo test`'s arguments of `test`: the cargo arguments, then `--` and the test
    /// binaries' own if any.
    pub fn cargo_test_args(args: Vec<OsString>, binary_args: Vec<OsString>) -> Vec<OsString> {
        let separator = (!binary_args.is_empty()).then(|| OsString::from("--"));
        args.into_iter().chain(separator).chain(binary_args).collect()
    }
}

/// `cargo xtask fuzz`: `lb-fuzz`'s flags, checked here before the release build.
#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// Frames of the campaign.
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
    /// The campaign's seed.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Stop the campaign after this many seconds.
    #[arg(long, value_name = "T")]
    pub seconds: Option<u64>,
    /// Failing frames written as pcap files, at most.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Replay one frame of the seed's campaign.
    #[arg(long, value_name = "I", conflicts_with = "replay")]
    pub index: Option<u64>,
    /// Replay a pcap file.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
}

impl FuzzArgs {
    /// The flags given, as `lb-fuzz` takes them.
    pub fn to_args(&self) -> Vec<OsString> {
        let numbers = [("--frames", self.frames), ("--seed", self.seed), ("--seconds", self.seconds), ("--index", self.index)];
        let mut args: Vec<OsString> = Vec::new();
        for (flag, value) in numbers.into_iter().chain([("--keep", self.keep.map(|k| k as u64))]) {
            if let Some(v) = value {
                args.extend([flag.into(), v.to_string().into()]);
            }
        }
        if let Some(file) = &self.replay {
            args.extend(["--replay".into(), file.into()]);
        }
        args
    }
}

/// `cargo xtask lab`.
#[derive(Args, Debug)]
pub struct LabArgs {
    /// Leave the lab up after its story until Ctrl-C (the single-node lab).
    #[arg(long, conflicts_with = "ha")]
    pub keep: bool,
    /// Direct server return: the backends answer the clients themselves.
    #[arg(long)]
    pub dsr: bool,
    /// How the load balancer sends the backends their packets in direct server return
    /// [default: tunnel].
    #[arg(long, requires = "dsr", value_parser = PossibleValuesParser::new(dsr_lab::MODES))]
    pub mode: Option<String>,
    /// The multi-node high-availability lab (BGP ECMP and VRRP).
    #[arg(long)]
    pub ha: bool,
    /// Load balancer nodes of the high-availability lab [default: 2].
    #[arg(long, requires = "ha", value_name = "N", value_parser = clap::value_parser!(u8).range(2..=8))]
    pub nodes: Option<u8>,
}

impl LabArgs {
    /// The DSR mode, `None` without `--dsr`.
    pub fn dsr_mode(&self) -> Option<&'static str> {
        let mode = self.mode.as_deref().unwrap_or(dsr_lab::MODES[0]);
        self.dsr.then(|| dsr_lab::MODES.into_iter().find(|m| *m == mode)).flatten()
    }
}

/// `cargo xtask package`.
#[derive(Args, Debug)]
pub struct PackageArgs {
    /// Package the debug build instead of the release build (faster; for trying the package).
    #[arg(long)]
    pub debug: bool,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _, error::ErrorKind};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cargo xtask").chain(args.iter().copied()))
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_and_tasks_are_usage_errors() {
        for args in [
            &["lab", "--bogus"][..],
            &["lab", "--ha-typo"],
            &["lab", "--nodes", "3"],
            &["lab", "--mode", "gue"],
            &["lab", "--dsr", "--mode", "tunel"],
            &["lab", "--ha", "--nodes", "9"],
            &["lab", "--ha", "--keep"],
            &["lab", "extra"],
            &["fuzz", "--frame", "10"],
            &["fuzz", "--index", "1", "--replay", "x.pcap"],
            &["package", "--release"],
            &["setup", "--force"],
            &["tests"],
            &[],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} is refused"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
            let text = err.render().to_string();
            assert!(text.contains("Usage: cargo xtask") || text.contains("try '--help'"), "{args:?} points to the usage:\n{text}");
        }
    }

    #[test]
    fn help_lists_every_task_and_its_flags() {
        let err = parse(&["--help"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayHelp);
        let help = err.render().to_string();
        for task in ["setup", "test", "bench", "fuzz", "lab", "package"] {
            assert!(help.contains(&format!("\ncargo xtask {task}:\n")), "{task} in\n{help}");
        }
        for flag in ["--keep", "--dsr", "--mode", "--ha", "--nodes", "[possible values: tunnel, gue, direct]", "--unpublishable", "--frames", "--replay", "--debug"] {
            assert!(help.contains(flag), "{flag} in\n{help}");
        }
    }

    #[test]
    fn lab_invocations_of_the_readme() {
        let lab = |args: &[&str]| match parse(args).unwrap().task {
            Task::Lab(l) => (l.keep, l.dsr_mode(), l.ha, l.nodes),
            other => panic!("{other:?}"),
        };
        assert_eq!(lab(&["lab"]), (false, None, false, None));
        assert_eq!(lab(&["lab", "--keep"]), (true, None, false, None));
        assert_eq!(lab(&["lab", "--dsr"]), (false, Some("tunnel"), false, None));
        assert_eq!(lab(&["lab", "--dsr", "--mode", "direct"]), (false, Some("direct"), false, None));
        assert_eq!(lab(&["lab", "--mode", "gue", "--dsr", "--keep"]), (true, Some("gue"), false, None));
        assert_eq!(lab(&["lab", "--ha"]), (false, None, true, None));
        assert_eq!(lab(&["lab", "--ha", "--nodes", "3", "--dsr", "--mode", "gue"]), (false, Some("gue"), true, Some(3)));
    }

    #[test]
    fn test_and_bench_pass_their_arguments_through() {
        let test = |args: &[&str]| match parse(args).unwrap().task {
            Task::Test { args, binary_args } => Task::cargo_test_args(args, binary_args),
            other => panic!("{other:?}"),
        };
        assert_eq!(test(&["test"]), os(&[]));
        assert_eq!(test(&["test", "-p", "lb-tests", "--test", "e2e", "--", "--test-threads=1", "lab"]),
            os(&["-p", "lb-tests", "--test", "e2e", "--", "--test-threads=1", "lab"]));
        assert_eq!(test(&["test", "--", "--test-threads=1"]), os(&["--", "--test-threads=1"]));
        assert_eq!(test(&["test", "restart"]), os(&["restart"]));
        let bench = |args: &[&str]| match parse(args).unwrap().task {
            Task::Bench { unpublishable, args } => (unpublishable, args),
            other => panic!("{other:?}"),
        };
        assert_eq!(bench(&["bench"]), (false, os(&[])));
        assert_eq!(bench(&["bench", "--unpublishable"]), (true, os(&[])));
        assert_eq!(bench(&["bench", "--quick", "--no-write"]), (false, os(&["--quick", "--no-write"])));
        assert_eq!(bench(&["bench", "datapath", "--sets", "31", "--runs", "50000"]),
            (false, os(&["datapath", "--sets", "31", "--runs", "50000"])));
        assert_eq!(bench(&["bench", "pktgen", "--dev", "eth1", "--dst", "10.0.0.10:9"]),
            (false, os(&["pktgen", "--dev", "eth1", "--dst", "10.0.0.10:9"])));
    }

    #[test]
    fn fuzz_flags_reach_lb_fuzz_unchanged() {
        let fuzz = |args: &[&str]| match parse(args).unwrap().task {
            Task::Fuzz(f) => f.to_args(),
            other => panic!("{other:?}"),
        };
        assert_eq!(fuzz(&["fuzz"]), os(&[]));
        assert_eq!(fuzz(&["fuzz", "--frames", "10000000", "--seed", "18"]), os(&["--frames", "10000000", "--seed", "18"]));
        assert_eq!(fuzz(&["fuzz", "--seed", "3", "--index", "7", "--keep", "5", "--seconds", "60"]),
            os(&["--seed", "3", "--seconds", "60", "--index", "7", "--keep", "5"]));
        assert_eq!(fuzz(&["fuzz", "--replay", "tests/fuzz-regressions/a.pcap"]), os(&["--replay", "tests/fuzz-regressions/a.pcap"]));
    }
}
