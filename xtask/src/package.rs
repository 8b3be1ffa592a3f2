//! The Debian package: `lb` (stripped), its systemd unit, the configuration as a conffile, and
//! the manual pages and completions that `lb-docs` generates, staged in a directory and built
//! with `dpkg-deb`. Shared by `cargo xtask package` and the package test
//! (`tests/tests/package.rs`), which builds it from the debug binaries.

use std::{
    fs::{self, File},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The package's name.
pub const NAME: &str = "lb";
/// The package's maintainer (also in `packaging/changelog`).
const MAINTAINER: &str = "lb maintainers <maintainers@users.noreply.b-seed-058dbf8f.example>";
/// The package's description: a synopsis line and the extended description.
const DESCRIPTION: &str = "XDP layer-4 load balancer
 lb balances TCP and UDP flows over backend servers from an eBPF/XDP program
 on the host's network interfaces: Maglev consistent hashing, health checks,
 NAT or direct server return (IP-in-IP, GUE or direct), and a connection
 table that outlives restarts and upgrades of the agent. The agent (lb run,
 run by lb.service) and the CLI that manages it are one binary.";
/// Packages the maintainer scripts and the unit run besides `lb`'s shared libraries: procps
/// for sysctl (the unit's ExecStartPre).
const DEPENDS: &str = "procps";
/// Files taken from the source tree: (source, path in the package, mode).
const SOURCES: [(&str, &str, u32); 4] = [
    ("examples/lb.service", "lib/systemd/system/lb.service", 0o644),
    ("packaging/lb.yaml", "etc/lb/lb.yaml", 0o644),
    ("packaging/copyright", "usr/share/doc/lb/copyright", 0o644),
    ("packaging/changelog", "usr/share/doc/lb/changelog.gz", 0o644),
];
/// The completions `lb-docs` writes, and where each shell looks for them.
const COMPLETIONS: [(&str, &str); 3] = [
    ("lb.bash", "usr/share/bash-completion/completions/lb"),
    ("_lb", "usr/share/zsh/vendor-completions/_lb"),
    ("lb.fish", "usr/share/fish/vendor_completions.d/lb.fish"),
];
/// The configuration files dpkg keeps an operator's changes to.
const CONFFILES: [&str; 1] = ["/etc/lb/lb.yaml"];
/// The maintainer scripts in `packaging/`.
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// Builds `out_dir/lb_<version>_<arch>.deb` from `lb` and `lb-docs` in `bin_dir` and the
/// files of the source tree at `root`; returns its path. The staging directory is removed.
pub fn build(root: &Path, bin_dir: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let base = format!("{NAME}_{}_{arch}", env!("CARGO_PKG_VERSION"));
    let stage = out_dir.join(&base);
    let docs = out_dir.join(format!("{base}.docs"));
    let deb = out_dir.join(format!("{base}.deb"));
    for dir in [&stage, &docs] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let result = stage_tree(root, bin_dir, &stage, &docs, &arch).and_then(|()| {
        run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&stage).arg(&deb))
    });
    for dir in [&stage, &docs] {
        let _ = fs::remove_dir_all(dir);
    }
    result.map(|()| deb)
}

/// Fills `stage` with the package's files and its DEBIAN control directory.
fn stage_tree(root: &Path, bin_dir: &Path, stage: &Path, docs: &Path, arch: &str) -> anyhow::Result<()> {
    let lb = bin_dir.join("lb");
    let bin = place(stage, "usr/bin/lb")?;
    run(Command::new("strip").args(["--remove-section=.comment", "--remove-section=.note", "--strip-unneeded", "-o"]).arg(&bin).arg(&lb))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    for (from, to, mode) in SOURCES {
        copy(&root.join(from), stage, to, mode)?;
    }
    run(Command::new(bin_dir.join("lb-docs")).arg(docs))?;
    for (from, to) in COMPLETIONS {
        copy(&docs.join("completions").join(from), stage, to, 0o644)?;
    }
    let mut pages: Vec<PathBuf> = fs::read_dir(docs.join("man"))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    pages.sort();
    for page in pages {
        let name = page.file_name().and_then(|n| n.to_str()).context("manual page name")?;
        copy(&page, stage, &format!("usr/share/man/man1/{name}.gz"), 0o644)?;
    }
    let installed_kib: u64 = files(stage)?.iter().map(|f| Ok::<_, std::io::Error>(fs::metadata(stage.join(f))?.len().div_ceil(1024))).sum::<Result<_, _>>()?;
    let md5sums = md5sums(stage)?;
    let shlibs = shlib_depends(&bin, stage)?;
    let control = format!(
        "Package: {NAME}\nVersion: {}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\nInstalled-Size: {installed_kib}\n\
         Depends: {shlibs}, {DEPENDS}\nSection: net\nPriority: optional\nDescription: {DESCRIPTION}\n",
        env!("CARGO_PKG_VERSION")
    );
    write(stage, "DEBIAN/control", &control, 0o644)?;
    write(stage, "DEBIAN/conffiles", &CONFFILES.map(|c| format!("{c}\n")).concat(), 0o644)?;
    write(stage, "DEBIAN/md5sums", &md5sums, 0o644)?;
    for script in SCRIPTS {
        copy(&root.join("packaging").join(script), stage, &format!("DEBIAN/{script}"), 0o755)?;
    }
    Ok(())
}

/// Creates the parent directories (mode 0755) of `rel` under `stage`; returns its full path.
fn place(stage: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let path = stage.join(rel);
    let mut dir = stage.to_owned();
    for part in Path::new(rel).parent().into_iter().flat_map(Path::components) {
        dir.push(part);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    Ok(path)
}

/// Copies `from` to `rel` under `stage` with `mode`, compressed with `gzip -9n` when `rel`
/// ends in `.gz` and `from` does not (no name or time stamp in the header: reproducible).
fn copy(from: &Path, stage: &Path, rel: &str, mode: u32) -> anyhow::Result<()> {
    let to = place(stage, rel)?;
    if rel.ends_with(".gz") && from.extension().is_none_or(|e| e != "gz") {
        let file = File::create(&to).with_context(|| format!("creating {}", to.display()))?;
        run(Command::new("gzip").args(["-9", "-n", "-c"]).arg(from).stdout(file))?;
    } else {
        fs::copy(from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    fs::set_permissions(&to, fs::Permissions::from_mode(mode)).with_context(|| format!("setting the mode of {}", to.display()))
}

/// Writes `text` to `rel` under `stage` with `mode`.
fn write(stage: &Path, rel: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    let to = place(stage, rel)?;
    fs::write(&to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The files under `stage` outside DEBIAN, relative to it, sorted.
fn files(stage: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![stage.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                if path != stage.join("DEBIAN") {
                    dirs.push(path);
                }
            } else {
                found.push(path.strip_prefix(stage)?.to_owned());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// DEBIAN/md5sums: `md5sum` of every file but the conffiles (dpkg records theirs itself).
fn md5sums(stage: &Path) -> anyhow::Result<String> {
    let listed: Vec<PathBuf> = files(stage)?
        .into_iter()
        .filter(|f| !CONFFILES.iter().any(|c| Path::new(c).strip_prefix("/").is_ok_and(|c| c == f)))
        .collect();
    output(Command::new("md5sum").args(&listed).current_dir(stage)).map(|s| s + "\n")
}

/// The `Depends` of `lb`'s shared libraries, from `dpkg-shlibdeps` (which wants a
/// `debian/control` in its working directory: a scratch one next to the stage).
fn shlib_depends(bin: &Path, stage: &Path) -> anyhow::Result<String> {
    let mut work = stage.as_os_str().to_owned();
    work.push(".shlibdeps");
    let work = PathBuf::from(work);
    fs::create_dir_all(work.join("debian"))?;
    fs::write(work.join("debian/control"), format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n"))?;
    let out = output(Command::new("dpkg-shlibdeps").arg("-O").arg(bin).current_dir(&work).stderr(Stdio::null()));
    let _ = fs::remove_dir_all(&work);
    let out = out?;
    out.strip_prefix("shlibs:Depends=").map(str::to_owned).with_context(|| format!("dpkg-shlibdeps printed {out:?}"))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// A command's standard output, trimmed.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout).context("output is not UTF-8")?.trim().to_owned())
}
