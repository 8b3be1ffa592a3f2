//! The start-time check of the kernel settings the data path needs: read from `/proc/sys`
//! (no subprocess) and judged by [`rules`]. Runs before the agent touches anything on the
//! host, so that a host that cannot work is refused with the command that fixes it, instead of
//! every backend being marked down.

pub mod rules;

use std::{io, path::Path};

use anyhow::bail;

use crate::config::Config;
use rules::{Key, Needs, Reading};

/// Where the kernel's settings are.
const PROC_SYS: &str = "/proc/sys";

/// Checks the settings `config` needs: logs each warning, and fails with every error (each
/// naming the setting and the `sysctl -w` that fixes it).
pub fn check(config: &Config) -> anyhow::Result<()> {
    check_in(Path::new(PROC_SYS), &Needs::of(config))
}

fn check_in(root: &Path, needs: &Needs) -> anyhow::Result<()> {
    let findings = rules::judge(needs, |key| read(root, key));
    for warning in &findings.warnings {
        tracing::warn!("{warning}");
    }
    if !findings.errors.is_empty() {
        let list: String = findings.errors.iter().map(|e| format!("\n  - {e}")).collect();
        bail!("the host's settings do not let the data path work; nothing was changed on the host:{list}");
    }
    tracing::info!(interfaces = ?needs.interfaces, "kernel settings checked: forwarding is on where the data path needs it");
    Ok(())
}

/// One setting under `root`.
fn read(root: &Path, key: &Key) -> Reading {
    match std::fs::read_to_string(root.join(key.path())) {
        Ok(text) => match text.trim().parse() {
            Ok(v) => Reading::Value(v),
            Err(_) => Reading::Unreadable(format!("{:?} is not a number", text.trim())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Reading::Missing,
        Err(e) => Reading::Unreadable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A fake `/proc/sys`, removed when dropped.
    struct Tree(PathBuf);

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!("lb-sysctls-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Tree(dir)
        }

        fn set(&self, path: &str, text: &str) {
            let file = self.0.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
    }

    #[test]
    fn reads_values_and_tells_missing_from_unreadable() {
        let tree = Tree::new("read");
        tree.set("net/ipv4/conf/eth0.100/forwarding", "1\n");
        tree.set("net/ipv4/conf/lbb1/forwarding", "on\n");
        let key = |scope: &str| Key { family: rules::Family::V4, scope: scope.into(), name: "forwarding" };
        assert_eq!(read(&tree.0, &key("eth0.100")), Reading::Value(1));
        assert_eq!(read(&tree.0, &key("lbb1")), Reading::Unreadable("\"on\" is not a number".into()));
        assert_eq!(read(&tree.0, &key("nope")), Reading::Missing);
    }

    #[test]
    fn errors_stop_with_every_fix_listed() {
        let tree = Tree::new("check");
        for (iface, on) in [("lbc", "1"), ("lbb1", "0"), ("lbb2", "0")] {
            tree.set(&format!("net/ipv4/conf/{iface}/forwarding"), on);
        }
        let needs = Needs { interfaces: vec!["lbc".into(), "lbb1".into(), "lbb2".into()], v4: true, v6: false };
        let e = check_in(&tree.0, &needs).unwrap_err().to_string();
        assert!(e.starts_with("the host's settings do not let the data path work; nothing was changed on the host:\n  - net.ipv4.conf.lbb1.forwarding is 0: "), "{e}");
        assert!(e.contains("sysctl -w net.ipv4.conf.lbb1.forwarding=1\n  - net.ipv4.conf.lbb2.forwarding is 0: "), "{e}");
        assert!(e.ends_with("sysctl -w net.ipv4.conf.lbb2.forwarding=1"), "{e}");
        tree.set("net/ipv4/conf/lbb1/forwarding", "1");
        tree.set("net/ipv4/conf/lbb2/forwarding", "1");
        check_in(&tree.0, &needs).unwrap();
    }

    /// This host's own `/proc/sys` can be read, whatever it holds.
    #[test]
    fn the_real_proc_sys_is_readable() {
        let key = Key { family: rules::Family::V4, scope: "lo".into(), name: "forwarding" };
        assert!(matches!(read(Path::new(PROC_SYS), &key), Reading::Value(0 | 1)));
    }
}
