//! Builds the XDP program (`lb-ebpf`) for the BPF target so that `lb` embeds it, and names the
//! commit `lb --version` reports.

use std::process::Command;

fn main() -> anyhow::Result<()> {
    // aya-build watches lb-ebpf itself; the shared crate is compiled into the object too.
    println!("cargo:rerun-if-changed=../lb-common/src");
    commit();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

/// Sets `LB_COMMIT` for the crate: `$LB_COMMIT` when the builder sets it (a build from a
/// source archive), else the checkout's abbreviated commit, else `unknown commit`.
fn commit() {
    println!("cargo:rerun-if-env-changed=LB_COMMIT");
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
    };
    // A new commit moves HEAD or the branch it names (loose or packed): build again then.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in &watched {
        if let Some(file) = git(&["rev-parse", "--git-path", path]).filter(|f| std::path::Path::new(f).exists()) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let commit = std::env::var("LB_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!("cargo:rustc-env=LB_COMMIT={commit}");
}
