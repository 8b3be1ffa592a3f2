//! Private network namespaces for kernel tests that depend on interfaces, routes, neighbours
//! or sysctls. BPF_PROG_TEST_RUN runs an XDP program, `bpf_fib_lookup` included, in the
//! network namespace of the calling thread, with that namespace's loopback as the ingress
//! interface; [`Netns::run_in`] runs a closure on a thread that has joined the namespace.
//! The namespace is deleted when the [`Netns`] is dropped, also on panic.

use std::{
    fs::File,
    io::Read as _,
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::packet::Mac;

/// Longest any one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a closure given to [`Netns::run_in`] may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

static NAMESPACES: AtomicU32 = AtomicU32::new(0);
/// A named network namespace (`ip netns`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// Runs `cmd` to completion within [`COMMAND_TIMEOUT`]: its stdout, or why it failed.
fn run(cmd: &mut Command) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| format!("{cmd:?}: {e}"))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} timed out after {COMMAND_TIMEOUT:?}"));
            }
            None => thread::sleep(Duration::from_millis(5)),
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status}): {}", err.trim()));
    }
    Ok(out)
}

impl Netns {
    /// Creates `lbt-<tag>-<pid>-<n>` with its loopback up (the first one of a process first
    /// removes what killed test processes left: [`crate::orphans`]).
    pub fn new(tag: &str) -> Netns {
        crate::orphans::sweep_orphans_once();
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        let name = format!("lbt-{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name])).unwrap_or_else(|e| panic!("{e}"));
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `args` inside the namespace (`ip netns exec`) and returns its stdout; panics if it
    /// fails or takes too long.
    pub fn exec(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["netns", "exec", &self.name]).args(args))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// The interface index of `dev` in the namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.exec(&["cat", &format!("/sys/class/net/{dev}/ifindex")]);
        out.trim().parse().unwrap_or_else(|e| panic!("ifindex of {dev}: {out:?}: {e}"))
    }

    /// The MAC address of `dev` in the namespace.
    pub fn mac(&self, dev: &str) -> Mac {
        let out = self.exec(&["cat", &format!("/sys/class/net/{dev}/address")]);
        let bytes: Vec<u8> = out
            .trim()
            .split(':')
            .map(|b| {
                u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("MAC of {dev}: {out:?}: {e}"))
            })
            .collect();
        bytes.try_into().unwrap_or_else(|_| panic!("MAC of {dev}: {out:?}"))
    }

    /// Runs `f` on a new thread that has joined the namespace and returns its result. A panic
    /// in `f` is raised again here; `f` taking longer than two minutes is a panic too.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (tx, rx) = mpsc::channel();
        let worker = thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || {
                // SAFETY: setns with a valid namespace file descriptor changes only this
                // thread's network namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                drop(ns);
                let _ = tx.send(f());
            })
            .expect("spawning the namespace thread");
        match rx.recv_timeout(RUN_TIMEOUT) {
            Ok(result) => {
                let _ = worker.join();
                result
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the thread ended without sending its result"),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the thread in {} did not finish within {RUN_TIMEOUT:?}", self.name)
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("removing namespace {}: {e}", self.name);
        }
    }
}

/// The indices of the interfaces of the calling thread's network namespace (after `setns`).
pub fn thread_interface_indices() -> Vec<u32> {
    let links = std::fs::read_to_string("/proc/thread-self/net/dev").expect("/proc/thread-self/net/dev");
    links
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| {
            let name = std::ffi::CString::new(name.trim()).expect("an interface name");
            // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        })
        .filter(|&i| i != 0)
        .collect()
}
