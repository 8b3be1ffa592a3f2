//! Namespaces that killed test processes left behind, with the data paths pinned for them and
//! their agents' runtime directories. Every namespace the tests make is named after the
//! process that made it, and deleted when that process drops it; a process that is killed
//! drops nothing. The first namespace or lab a test process makes therefore first removes
//! those whose process is gone ([`sweep_orphans_once`]). Shared with `xtask` (its lab uses the
//! same topology), so it depends on nothing else in the crate.

use std::{process::Command, sync::Once};

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// Where agents pin their data path and keep their runtime directory, per instance (the
/// tests name an instance after its lab's namespace): `lb_userspace::dataplane::pins::BPFFS_ROOT`
/// and `lb_userspace::instance::RUN_ROOT`.
const INSTANCE_DIRS: [&str; 2] = ["/sys/fs/bpf/lb", "/run/lb"];
/// Where the backend decapsulation program is pinned per interface
/// (`lb_userspace::decap::DECAP_PIN_ROOT`); the tests name their interfaces `dxb<pid>`, or
/// `dxb<pid>x<lab>b<k>` (the DSR lab's backends).
const DECAP_DIR: &str = "/sys/fs/bpf/lb-decap";
/// Once per process.
static SWEEP: Once = Once::new();

/// The pid of the test process that made a namespace, from its name: the tests name theirs
/// `lbt-<tag>-<pid>-<n>` (fixtures), `lbt-<pid>-<n>-<role>` (the lab topology) and
/// `lbh-<pid>-<n>-<role>` (the HA lab); the pid is the first all-digit field followed by
/// another.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("lbt-").or_else(|| name.strip_prefix("lbh-"))?;
    let fields: Vec<&str> = rest.split('-').collect();
    let digits = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit());
    let k = fields.windows(2).position(|w| digits(w[0]) && digits(w[1]))?;
    fields[k].parse().ok()
}

/// Runs a short `ip` or `kill` command: its stdout, or why it failed.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes the namespaces the tests made in processes that no longer run, after killing
/// what still runs inside them (a lab's agents, backends, routing daemons), and the pinned
/// data paths and runtime directories of instances named like them; those of live processes,
/// this one's included, and names of any other form are left. Returns what was deleted.
pub fn sweep_orphans() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut deleted = Vec::new();
    for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        let Some(pid) = owner_pid(&name) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", &name])) {
            for p in pids.split_whitespace() {
                let _ = run(Command::new("kill").args(["-9", p]));
            }
        }
        match run(Command::new("ip").args(["netns", "del", &name])) {
            Ok(_) => deleted.push(name),
            Err(e) => eprintln!("removing the orphaned namespace {name}: {e}"),
        }
    }
    // Pinned data paths and runtime directories of instances named after such namespaces
    // (removing a link's pin detaches the program; its interface is gone anyway).
    for root in INSTANCE_DIRS {
        let Ok(entries) = std::fs::read_dir(root) else { continue };
        for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            let Some(pid) = owner_pid(&name) else { continue };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = std::path::Path::new(root).join(&name);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => deleted.push(path.display().to_string()),
                Err(e) => eprintln!("removing the orphaned {}: {e}", path.display()),
            }
        }
    }
    // Decapsulation programs pinned for the interfaces of such processes.
    if let Ok(entries) = std::fs::read_dir(DECAP_DIR) {
        for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            let pid = name.strip_prefix("dxb").and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u32>().ok());
            let Some(pid) = pid else { continue };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = std::path::Path::new(DECAP_DIR).join(&name);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => deleted.push(path.display().to_string()),
                Err(e) => eprintln!("removing the orphaned {}: {e}", path.display()),
            }
        }
    }
    deleted
}

/// [`sweep_orphans`], once per process.
pub fn sweep_orphans_once() {
    SWEEP.call_once(|| {
        sweep_orphans();
    });
}
