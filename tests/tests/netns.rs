//! The tests' private namespaces: what a killed test process leaves behind is removed by the
//! next one. Needs root.

use std::process::Command;

use lb_tests::netns::sweep_orphans;

/// Deletes a namespace on drop, so the test removes what it made also when it fails.
struct Made(String);

impl Made {
    fn add(name: String) -> Made {
        let status = Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add");
        assert!(status.success(), "ip netns add {name}");
        Made(name)
    }

    fn exists(&self) -> bool {
        std::path::Path::new("/var/run/netns").join(&self.0).exists()
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn namespaces_of_killed_test_processes_are_swept_and_live_ones_kept() {
    // A process that has exited: the owner of a namespace nobody deleted.
    let mut child = Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    let orphan = Made::add(format!("lbt-orphan-{dead}-0"));
    let own = Made::add(format!("lbt-live-{}-9999", std::process::id()));
    let foreign = Made::add(format!("lbt-{dead}"));

    let deleted = sweep_orphans();

    assert!(deleted.contains(&orphan.0), "{deleted:?}");
    assert!(!orphan.exists(), "the orphan is gone");
    assert!(own.exists(), "a live process's namespace is kept");
    assert!(foreign.exists(), "a name not of the form lbt-<tag>-<pid>-<n> is not touched");
}
