//! The tests' private namespaces: what a killed test process leaves behind is removed by the
//! next one. Needs root.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use lb_tests::orphans::sweep_orphans;

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

/// Kills a process on drop (bounded clean-up when the test fails).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn namespaces_of_killed_test_processes_are_swept_and_live_ones_kept() {
    // A process that has exited: the owner of namespaces nobody deleted.
    let mut child = Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    let orphan = Made::add(format!("lbt-orphan-{dead}-0"));
    let lab_orphan = Made::add(format!("lbt-{dead}-3-c"));
    let ha_orphan = Made::add(format!("lbh-{dead}-0-n1"));
    let own = Made::add(format!("lbt-live-{}-9999", std::process::id()));
    let foreign = Made::add(format!("lbt-{dead}"));
    // A killed lab's agent left its pinned data path and its runtime directory behind.
    let orphan_pins = std::path::Path::new("/sys/fs/bpf/lb").join(format!("lbt-{dead}-3-lb"));
    let orphan_run = std::path::Path::new("/run/lb").join(format!("lbt-{dead}-3-lb"));
    let live_run = std::path::Path::new("/run/lb").join(format!("lbt-{}-9999-lb", std::process::id()));
    std::fs::create_dir_all(orphan_pins.join("maps")).expect("a bpffs directory");
    for dir in [&orphan_run, &live_run] {
        std::fs::create_dir_all(dir).expect("a runtime directory");
        std::fs::write(dir.join("agent.lock"), "{}").expect("a lock file");
    }
    // What a killed lab leaves running in its namespaces (an agent, a backend): killed too.
    let mut left = Running(Command::new("ip").args(["netns", "exec", &ha_orphan.0, "sleep", "60"]).spawn().expect("spawn sleep"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Command::new("ip").args(["netns", "pids", &ha_orphan.0]).output().expect("ip netns pids").stdout.is_empty() {
        assert!(Instant::now() < deadline, "the process in the orphan namespace did not start");
        thread::sleep(Duration::from_millis(20));
    }

    let deleted = sweep_orphans();

    for gone in [&orphan, &lab_orphan, &ha_orphan] {
        assert!(deleted.contains(&gone.0), "{} not in {deleted:?}", gone.0);
        assert!(!gone.exists(), "{} is gone", gone.0);
    }
    assert!(own.exists(), "a live process's namespace is kept");
    assert!(!orphan_pins.exists() && !orphan_run.exists(), "the orphaned instance's pins or runtime directory are left: {deleted:?}");
    assert!(live_run.exists(), "a live process's runtime directory is kept");
    std::fs::remove_dir_all(&live_run).expect("removing the live runtime directory");
    assert!(foreign.exists(), "a name of no test's form is not touched");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = left.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the process left in the orphan namespace still runs");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "killed, not finished: {status}");
}
