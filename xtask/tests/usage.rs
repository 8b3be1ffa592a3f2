//! The xtask binary refuses what it does not know with exit status 2 and the usage, before it
//! sets anything up.

use std::process::Command;

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("running xtask")
}

#[test]
fn unknown_flags_and_tasks_exit_2_with_the_usage() {
    for args in [&["lab", "--bogus"][..], &["lab", "--ha-typo"], &["lab", "--dsr", "--mode", "bogus"], &["bogus"], &[]] {
        let out = xtask(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: cargo xtask") || stderr.contains("try '--help'"), "{args:?}: {stderr}");
        assert!(!stderr.contains("[setup]") && out.stdout.is_empty(), "{args:?} ran nothing: {stderr}");
    }
}

#[test]
fn help_lists_the_tasks() {
    let out = xtask(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    for line in ["cargo xtask lab [OPTIONS]", "cargo xtask package [OPTIONS]", "--ha ", "--nodes <N>"] {
        assert!(help.contains(line), "{line} in\n{help}");
    }
}
