//! The Debian package, built as `cargo xtask package` builds it but from the debug binaries the
//! suite builds (`cargo xtask package` packages the release build): its exact file list, modes
//! and control files; unpacked into a scratch root with `dpkg-deb -x` (no maintainer script
//! runs and nothing is installed on the host), where `systemd-analyze verify` checks the unit,
//! `lb --version` names the commit and the configuration serves nothing; and lintian reports
//! only the tags accepted below.

#[path = "../../xtask/src/package.rs"]
#[allow(dead_code, reason = "shared with the xtask, which uses all of it")]
mod package;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The lintian tags the package keeps, each with the reason it is accepted.
const ACCEPTED_LINTIAN_TAGS: [(&str, &str); 4] = [
    (
        "embedded-library",
        "libyaml: serde_yaml parses YAML with unsafe-libyaml, a Rust translation of libyaml \
         linked into lb; there is no system library to link instead",
    ),
    (
        "hardening-no-fortify-functions",
        "Rust code does not call glibc's unchecked string functions, so there is nothing for \
         _FORTIFY_SOURCE to replace",
    ),
    (
        "package-supports-alternative-init-but-no-init.d-script",
        "lb runs under systemd only: lb.service; the agent needs bpffs at /sys/fs/bpf, which \
         systemd mounts",
    ),
    (
        "spelling-error-in-binary",
        "the release build (`cargo xtask package`) only: bytes of compiled code that read as \
         \"wTH with\", not a message of lb",
    ),
];

/// Every file of the package (directories aside) and its mode.
const FILES: [(&str, &str); 30] = [
    ("etc/lb/lb.yaml", "-rw-r--r--"),
    ("lib/systemd/system/lb.service", "-rw-r--r--"),
    ("usr/bin/lb", "-rwxr-xr-x"),
    ("usr/share/bash-completion/completions/lb", "-rw-r--r--"),
    ("usr/share/doc/lb/changelog.gz", "-rw-r--r--"),
    ("usr/share/doc/lb/copyright", "-rw-r--r--"),
    ("usr/share/fish/vendor_completions.d/lb.fish", "-rw-r--r--"),
    ("usr/share/man/man1/lb-backend-add.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-backend-drain.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-backend-remove.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-backend-setup.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-backend-undrain.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-backend-weight.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-backend.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-check.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-config-check.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-config-show.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-config.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-explain.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-reload.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-run.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-stats.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-status.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-teardown.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-top.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-vip-add.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-vip-remove.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb-vip.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/lb.1.gz", "-rw-r--r--"),
    ("usr/share/zsh/vendor-completions/_lb", "-rw-r--r--"),
];

/// The host's files the unit names or depends on, copied into the scratch root for
/// `systemd-analyze verify --root` (which looks for everything under the root).
const HOST_FILES: [&str; 7] = [
    "/bin/kill",
    "/usr/sbin/sysctl",
    "/lib/systemd/system/sysinit.target",
    "/lib/systemd/system/basic.target",
    "/lib/systemd/system/shutdown.target",
    "/lib/systemd/system/network-online.target",
    "/lib/systemd/system/multi-user.target",
];

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the test crate lives in the workspace").to_owned()
}

/// Runs `cmd`; panics unless it succeeds; returns its output.
fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(ok(cmd).stdout).expect("UTF-8 output")
}

#[test]
fn package_installs_verifies_and_names_the_commit() {
    let bin_dir = lb_tests::agent::lb_binary().parent().expect("target directory").to_owned();
    assert!(bin_dir.join("lb-docs").exists(), "no lb-docs next to {}: build it first (`cargo build --bins`)", bin_dir.display());
    let scratch = Scratch(std::env::temp_dir().join(format!("lb-package-test-{}", std::process::id())));
    let (out, root, control) = (scratch.0.join("out"), scratch.0.join("root"), scratch.0.join("control"));
    std::fs::create_dir_all(&out).unwrap();
    let deb = package::build(&workspace(), &bin_dir, &out).expect("building the package");
    assert_eq!(deb.parent(), Some(out.as_path()));

    // The file list, exactly, owned by root with the modes above; directories 0755.
    let mut files = BTreeMap::new();
    for line in stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb)).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (fields[0], fields[1], fields[fields.len() - 1]);
        assert_eq!(owner, "root/root", "{line}");
        match mode.strip_prefix('d') {
            Some(dir_mode) => assert_eq!(dir_mode, "rwxr-xr-x", "{line}"),
            None => assert!(files.insert(path.trim_start_matches("./").to_owned(), mode.to_owned()).is_none(), "{line}"),
        }
    }
    let expected: BTreeMap<String, String> = FILES.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
    assert_eq!(files, expected);

    // Control data: the configuration is a conffile; installing neither enables nor starts lb.
    let fields = stdout(Command::new("dpkg-deb").arg("--field").arg(&deb).args(["Package", "Version", "Architecture", "Depends"]));
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    assert!(fields.starts_with(&format!("Package: lb\nVersion: {}\nArchitecture: {}\nDepends: libc6 (>= ", env!("CARGO_PKG_VERSION"), arch.trim())), "{fields}");
    assert!(fields.trim_end().ends_with(", procps"), "{fields}");
    ok(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&control));
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap(), "/etc/lb/lb.yaml\n");
    for script in ["postinst", "prerm", "postrm"] {
        ok(Command::new("sh").arg("-n").arg(control.join(script)));
        let text = std::fs::read_to_string(control.join(script)).unwrap();
        let commands = text.lines().filter(|l| !l.trim_start().starts_with('#'));
        let words: Vec<&str> = commands.flat_map(str::split_whitespace).collect();
        assert!(!words.contains(&"enable") && !words.contains(&"start"), "{script} neither enables nor starts lb:\n{text}");
    }

    // Unpacked into the scratch root.
    ok(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(&root));
    let lb = root.join("usr/bin/lb");
    let commit = stdout(Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(workspace()));
    assert_eq!(
        stdout(Command::new(&lb).arg("--version")),
        format!("lb {} ({})\n", env!("CARGO_PKG_VERSION"), commit.trim()),
        "lb --version names the commit (a stale build? `cargo build --bins`)"
    );
    let check = stdout(Command::new(&lb).args(["config", "check"]).arg(root.join("etc/lb/lb.yaml")));
    assert!(check.contains("valid (0 VIPs, 0 backends)"), "the shipped configuration serves nothing: {check}");

    // The unit, with the host's targets and the tools it runs beside it in the scratch root; the
    // manual pages it names are looked up in the package.
    for file in HOST_FILES {
        let to = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file, &to).unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }
    let verify = ok(Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no"])
        .arg(format!("--root={}", root.display()))
        .arg("lb.service")
        .env("MANPATH", root.join("usr/share/man")));
    assert!(verify.stdout.is_empty() && verify.stderr.is_empty(), "systemd-analyze verify: {}", String::from_utf8_lossy(&verify.stderr));
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/lb.service")).unwrap();
    for line in ["ExecStart=/usr/bin/lb run --config /etc/lb/lb.yaml", "Restart=always", "LimitNOFILE=65536", "WantedBy=multi-user.target"] {
        assert!(unit.lines().any(|l| l == line), "{line} in the unit");
    }

    // The manual page renders and names the version; bash loads the completion.
    let page = stdout(Command::new("man").args(["-l", "-P", "cat"]).arg(root.join("usr/share/man/man1/lb-run.1.gz")).env("MANWIDTH", "100"));
    assert!(page.contains("--config") && page.contains(&format!("{} ({})", env!("CARGO_PKG_VERSION"), commit.trim())), "{page}");
    let bash = format!("source {} && complete -p lb", root.join("usr/share/bash-completion/completions/lb").display());
    assert!(stdout(Command::new("bash").args(["-c", &bash])).contains(" lb\n"), "bash completes lb");

    // Lintian: nothing but the accepted tags (errors, warnings, pedantic and information).
    let lintian = ok(Command::new("lintian").args(["--fail-on", "none", "--display-info", "--pedantic"]).arg(&deb));
    let report = String::from_utf8_lossy(&lintian.stdout);
    let tags: Vec<&str> = report.lines().filter_map(|l| l.split_whitespace().nth(2).filter(|_| l.starts_with(['E', 'W', 'I', 'P']))).collect();
    println!("lintian:\n{report}");
    for tag in &tags {
        assert!(ACCEPTED_LINTIAN_TAGS.iter().any(|(t, _)| t == tag), "lintian tag {tag} is not accepted:\n{report}");
    }
}
