//! `lb top` against a running agent in a lab: on a pseudo-terminal the full-screen view puts
//! the terminal back as it found it on every way out (keys, signals, `--count`); without a
//! terminal, or with `--plain`, it prints plain blocks. Needs root.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::OwnedFd,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, channel},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Agent, lb_binary},
    lab_config::{LabConfig, Vip},
    topology::Lab,
};
use nix::{
    pty::{Winsize, openpty},
    sys::termios::{LocalFlags, Termios, tcgetattr},
};

/// Leaves the alternate screen / enters it / shows the cursor.
const LEAVE: &[u8] = b"\x1b[?1049l";
const ENTER: &[u8] = b"\x1b[?1049h";
const SHOW_CURSOR: &[u8] = b"\x1b[?25h";

fn lab_with_agent() -> (Lab, Agent) {
    let yaml = LabConfig::new().vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"])).render();
    lb_tests::agent::lab_with_agent(env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), 3, &yaml, "web").expect("a lab whose backends pass their checks")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// `lb top` running on a new pseudo-terminal (140×40) as its controlling terminal, with
/// everything it writes collected. Dropping it kills `lb top` if it still runs.
struct OnPty {
    child: Child,
    slave: Option<OwnedFd>,
    master: File,
    chunks: Receiver<Vec<u8>>,
    reader: Option<JoinHandle<()>>,
    output: Vec<u8>,
}

impl OnPty {
    fn start(agent: &Agent, args: &[&str]) -> OnPty {
        let size = Winsize { ws_row: 40, ws_col: 140, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = openpty(&size, None).expect("openpty");
        let io = || Stdio::from(pty.slave.try_clone().expect("dup of the pty"));
        // `setsid --ctty`: a session of its own with the pty as its controlling terminal, so
        // /dev/tty is this pty and not the terminal the tests run from.
        let child = Command::new("setsid")
            .arg("--ctty")
            .arg(lb_binary())
            .arg("--socket")
            .arg(&agent.socket)
            .arg("top")
            .args(args)
            .stdin(io())
            .stdout(io())
            .stderr(io())
            .spawn()
            .expect("starting lb top");
        let master = File::from(pty.master);
        let mut reading = master.try_clone().expect("dup of the pty master");
        let (tx, chunks) = channel();
        // Ends when every descriptor of the pty's other side is closed (read fails with EIO).
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reading.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OnPty { child, slave: Some(pty.slave), master, chunks, reader: Some(reader), output: Vec::new() }
    }

    /// Collects output until it holds `needle` (at most `limit`).
    fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while find(&self.output, needle.as_bytes()).is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(chunk) => self.output.extend(chunk),
                Err(_) if left.is_zero() => return false,
                Err(_) => {}
            }
        }
        true
    }

    fn termios(&self) -> Termios {
        tcgetattr(self.slave.as_ref().expect("the pty is open")).expect("tcgetattr on the pty")
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("writing to the pty");
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits (at most `limit`) for `lb top` to exit.
    fn exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything `lb top` wrote, once it has exited.
    fn output(mut self) -> Vec<u8> {
        self.slave = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        while let Ok(chunk) = self.chunks.try_recv() {
            self.output.extend(chunk);
        }
        std::mem::take(&mut self.output)
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What ends the full-screen view.
#[derive(Clone, Copy, Debug)]
enum WayOut {
    Key(&'static [u8]),
    Signal(i32),
    /// `--count 1`: one refresh, then it ends by itself.
    Count,
}

#[test]
fn full_screen_restores_the_terminal_on_every_way_out() {
    let (_lab, agent) = lab_with_agent();
    let ways = [
        WayOut::Key(b"q"),
        WayOut::Key(b"\x03"),
        WayOut::Key(b"\x1b"),
        WayOut::Signal(libc::SIGTERM),
        WayOut::Signal(libc::SIGINT),
        WayOut::Signal(libc::SIGHUP),
        WayOut::Count,
    ];
    for way in ways {
        let args: &[&str] = if matches!(way, WayOut::Count) { &["--count", "1"] } else { &[] };
        let mut top = OnPty::start(&agent, args);
        let before = top.termios();
        assert!(before.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO), "a new pty is cooked");
        assert!(top.wait_for("rates from the next refresh", Duration::from_secs(10)), "{way:?}: no first frame: {:?}", String::from_utf8_lossy(&top.output));
        assert!(top.wait_for("web 10.0.0.10:80/tcp", Duration::from_secs(5)), "{way:?}: {:?}", String::from_utf8_lossy(&top.output));
        let raw = top.termios();
        match way {
            WayOut::Key(key) => top.send(key),
            WayOut::Signal(s) => top.signal(s),
            WayOut::Count => {}
        }
        let status = top.exit(Duration::from_secs(10)).unwrap_or_else(|| panic!("{way:?}: lb top still runs"));
        let after = top.termios();
        let output = top.output();
        let text = String::from_utf8_lossy(&output);
        assert_eq!(status.code(), Some(0), "{way:?}: {text:?}");
        // While it ran the terminal was raw; afterwards every flag is as before.
        assert!(!raw.local_flags.intersects(LocalFlags::ICANON | LocalFlags::ECHO), "{way:?}: raw mode while running");
        assert_eq!(
            (after.input_flags, after.output_flags, after.control_flags, after.local_flags),
            (before.input_flags, before.output_flags, before.control_flags, before.local_flags),
            "{way:?}: the terminal's settings after lb top"
        );
        let entered = rfind(&output, ENTER).unwrap_or_else(|| panic!("{way:?}: no alternate screen: {text:?}"));
        let left = rfind(&output, LEAVE).unwrap_or_else(|| panic!("{way:?}: the alternate screen was not left: {text:?}"));
        assert!(entered < left, "{way:?}: left before entering: {text:?}");
        assert!(find(&output[entered..], SHOW_CURSOR).is_some(), "{way:?}: the cursor was not shown again: {text:?}");
        if matches!(way, WayOut::Count) {
            // The refresh redraws only what changed: "from the next refresh" becomes "over 1.00 s".
            assert!(find(&output, b"over").is_some(), "--count 1 draws one refresh: {text:?}");
        }
    }
}

#[test]
fn plain_blocks_without_a_terminal_or_with_plain() {
    let (_lab, agent) = lab_with_agent();
    // stdout a pipe: plain blocks, no escape sequence.
    let out = agent.cli(&["top", "--count", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains('\x1b'), "{text:?}");
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.len(), 2, "{text}");
    for block in blocks {
        let lines: Vec<&str> = block.lines().collect();
        assert!(lines[0].starts_with("lb top  ") && lines[0].contains("rates over "), "{block}");
        assert!(lines[1].starts_with("connection table: "), "{block}");
        assert!(lines[2].starts_with("VIP / BACKEND "), "{block}");
        // Right after the start the VIP's line also names its moved ring slots (the backends
        // coming up changed its ring).
        assert!(lines[3].starts_with("web 10.0.0.10:80/tcp") && lines[3].contains("  3/3 up  3/3 healthy"), "{block}");
        assert!(lines[4..7].iter().all(|l| l.starts_with("  10.0.1")), "{block}");
    }
    // On a terminal, --plain prints the same blocks and leaves the terminal alone.
    let mut top = OnPty::start(&agent, &["--plain", "--count", "1"]);
    let before = top.termios();
    let status = top.exit(Duration::from_secs(10)).expect("lb top --plain --count 1 ends");
    assert_eq!(top.termios().local_flags, before.local_flags);
    let output = top.output();
    let text = String::from_utf8_lossy(&output);
    assert_eq!(status.code(), Some(0), "{text:?}");
    assert!(find(&output, ENTER).is_none() && text.contains("VIP / BACKEND "), "{text:?}");
}
