//! `lb-docs DIR`: writes `lb`'s manual pages and shell completions into DIR (what the Debian
//! package installs; `cargo xtask package` runs it).

use std::{path::PathBuf, process::ExitCode};

use clap::Parser as _;

/// Writes lb's manual pages (DIR/man) and bash, zsh and fish completions (DIR/completions).
#[derive(clap::Parser)]
#[command(name = "lb-docs", version = lb_userspace::cli::VERSION)]
struct Args {
    /// The directory to write into.
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match lb_userspace::cli::docs::generate(&args.out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-docs: writing into {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}
