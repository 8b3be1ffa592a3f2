//! Health checks of direct server return VIPs through the VIP (`health_check.target: vip`,
//! the default of DSR VIPs): the real agent in a "load balancer" namespace probes a backend
//! namespace, joined to it by a veth pair, set up by `lb backend-setup` for the VIP's mode.
//! The backend is up while it serves the VIP; when the VIP leaves its loopback (the host stays
//! up and its own address still answers TCP on the VIP's port: a plain probe would pass) it is
//! marked down, and up again once the VIP is back. For `tunnel`, `gue` and `direct`, an IPv4
//! and an IPv6 VIP each. Needs root and the `lb` binary (`cargo build -p lb-userspace --bins`).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Agent, backends, in_netns, lb_binary},
    harness::require_root,
    netns::Netns,
};

const VIP4: &str = "10.0.0.10";
const VIP6: &str = "2001:db8::10";
const PORT: u16 = 80;
const LB4: &str = "10.0.11.1";
const LB6: &str = "fd00:11::1";
const BACKEND4: &str = "10.0.11.2";
const BACKEND6: &str = "fd00:11::2";
/// The health check: every 300 ms (100 ms while changing), 250 ms timeout, rise 2, fall 2.
const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(250);
const FALL: u32 = 2;
/// Bound on every wait for a state: far above fall × interval + timeout, for a loaded machine.
const BOUND: Duration = Duration::from_secs(20);

/// One test at a time: the backend's interface is named after the process (the decapsulation
/// program's pin is named after the interface, and the orphan sweep knows `dxb<pid>`).
static SERIAL: Mutex<()> = Mutex::new(());

/// A load balancer and a backend namespace joined by `dxl<pid>` – `dxb<pid>`, the backend set
/// up by `lb backend-setup` for a mode and both VIPs, and TCP listeners on the backend: on each
/// VIP and on each of its own addresses, port 80. Dropping it undoes the set-up (detaching the
/// decapsulation program and removing its pin) before the namespaces go.
struct Pair {
    backend_if: String,
    dir: PathBuf,
    _listeners: Vec<TcpListener>,
    backend: Netns,
    lb: Netns,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.setup(&["--undo"]);
        let pin = std::path::Path::new(lb_userspace::decap::DECAP_PIN_ROOT).join(&self.backend_if);
        let _ = std::fs::remove_dir_all(pin);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pair {
    fn new(mode: &str) -> Pair {
        let lb = Netns::new("hcl");
        let backend = Netns::new("hcb");
        let pid = std::process::id();
        let (lb_if, backend_if) = (format!("dxl{pid}"), format!("dxb{pid}"));
        // The agent refuses to start where the kernel would refuse its program's FIB lookups.
        lb.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        lb.exec(&["ip", "link", "add", &lb_if, "type", "veth", "peer", "name", &backend_if, "netns", backend.name()]);
        lb.exec(&["ip", "addr", "add", &format!("{LB4}/24"), "dev", &lb_if]);
        lb.exec(&["ip", "addr", "add", &format!("{LB6}/64"), "dev", &lb_if, "nodad"]);
        backend.exec(&["ip", "addr", "add", &format!("{BACKEND4}/24"), "dev", &backend_if]);
        backend.exec(&["ip", "addr", "add", &format!("{BACKEND6}/64"), "dev", &backend_if, "nodad"]);
        lb.exec(&["ip", "link", "set", &lb_if, "up"]);
        backend.exec(&["ip", "link", "set", &backend_if, "up"]);
        backend.exec(&["ip", "route", "add", "default", "via", LB4]);
        backend.exec(&["ip", "-6", "route", "add", "default", "via", LB6]);
        let dir = std::env::temp_dir().join(format!("lb-dsr-health-{}", backend.name()));
        std::fs::create_dir_all(&dir).expect("state directory");
        let mut pair = Pair { backend_if, dir, _listeners: Vec::new(), backend, lb };
        let out = pair.setup(&["--mode", mode, "--vip", VIP4, "--vip", VIP6, "--interface", &pair.backend_if.clone()]);
        assert!(out.status.success(), "lb backend-setup --mode {mode}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for ip in [VIP4, VIP6, BACKEND4, BACKEND6] {
            let addr = SocketAddr::new(ip.parse().unwrap(), PORT);
            let listener = pair.backend.run_in(move || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("binding {addr} on the backend: {e}"));
            pair._listeners.push(listener);
        }
        pair
    }

    /// `lb backend-setup ARGS --state FILE` in the backend namespace.
    fn setup(&self, args: &[&str]) -> std::process::Output {
        let state = self.dir.join("backend-setup.json").display().to_string();
        let lb = lb_binary().display().to_string();
        let mut all = vec![lb.as_str(), "backend-setup"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--state", &state]);
        in_netns(self.backend.name(), &all).output().expect("running lb backend-setup")
    }

    /// The agent's configuration: a VIP per family in `mode`, TCP-checked through the VIP by
    /// default, with the backend's address of that family.
    fn config(&self, mode: &str) -> String {
        let pid = std::process::id();
        let mut yaml = format!("global:\n  interfaces: [dxl{pid}]\n  xdp_mode: driver\n  vip_capacity: 4\n  backend_capacity: 16\n  admin_socket: \"{{socket}}\"\nvips:\n");
        for (name, vip, backend) in [("dsr4", VIP4, BACKEND4), ("dsr6", VIP6, BACKEND6)] {
            yaml += &format!(
                "  - name: {name}\n    address: {vip}\n    port: {PORT}\n    protocol: tcp\n    forwarding: {mode}\n    health_check:\n      type: tcp\n      interval: {}ms\n      fast_interval: 100ms\n      timeout: {}ms\n      rise: 2\n      fall: {FALL}\n    backends:\n      - address: {backend}\n        port: {PORT}\n",
                INTERVAL.as_millis(),
                TIMEOUT.as_millis()
            );
        }
        yaml
    }

    /// Whether a plain TCP connection from the load balancer to `addr` succeeds.
    fn plain_tcp(&self, addr: &str) -> bool {
        let addr = SocketAddr::new(addr.parse().unwrap(), PORT);
        self.lb.run_in(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
    }

    /// How many connections to `vip` are half-open (SYN-RECV) on the backend.
    fn half_open(&self, vip: &str) -> usize {
        let src = if vip.contains(':') { format!("[{vip}]") } else { vip.to_owned() };
        self.backend.exec(&["ss", "-Htn", "state", "syn-recv", "src", &src]).lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// Removes (`del`) or puts back (`add`) VIP `vip` on the backend's loopback.
    fn vip_on_loopback(&self, action: &str, vip: &str) {
        let prefix = if vip.contains(':') { "128" } else { "32" };
        self.backend.exec(&["ip", "addr", action, &format!("{vip}/{prefix}"), "dev", "lo"]);
    }
}

/// The state and probe fields of the one backend of VIP `vip`.
fn backend_of(status: &serde_json::Value, vip: &str) -> (String, String, String) {
    let b = backends(status, vip);
    assert_eq!(b.len(), 1, "{status:#}");
    let text = |k: &str| b[0][k].as_str().unwrap_or_default().to_owned();
    (text("state"), text("probe"), text("last_probe"))
}

fn state_of(status: &serde_json::Value, vip: &str) -> String {
    backend_of(status, vip).0
}

/// The black hole in `mode`: up while the backend serves the VIP, down once the VIP leaves its
/// loopback while its host and its own address stay up, up again when the VIP is back.
fn a_backend_that_stops_serving_the_vip_is_marked_down(mode: &str, carrier: &str) {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pair = Pair::new(mode);
    let agent = Agent::start_in(pair.lb.name(), pair.lb.name(), &pair.config(mode)).expect("starting the agent");
    let up = agent
        .wait_status(BOUND, |s| state_of(s, "dsr4") == "up" && state_of(s, "dsr6") == "up")
        .unwrap_or_else(|e| panic!("{mode}: {e}\n{}", agent.log()));
    for (vip, addr) in [("dsr4", format!("{VIP4}:{PORT}")), ("dsr6", format!("[{VIP6}]:{PORT}"))] {
        let (_, probe, last) = backend_of(&up, vip);
        assert_eq!(probe, format!("tcp via {carrier} to VIP {addr}"), "{mode}: how it is probed");
        assert_eq!(last, format!("TCP handshake with VIP {addr} via {carrier}"), "{mode}");
    }
    // The reset after each SYN-ACK frees the backend's half-open connection: without it every
    // probe would leave one in SYN-RECV for the minute of the backend's SYN-ACK retransmissions.
    let mut most = (0, 0);
    for _ in 0..6 {
        std::thread::sleep(INTERVAL);
        most = (most.0.max(pair.half_open(VIP4)), most.1.max(pair.half_open(VIP6)));
    }
    assert!(most.0 <= 1 && most.1 <= 1, "{mode}: at most the probe in flight is half-open on the backend, seen {most:?}");
    let human = String::from_utf8_lossy(&agent.cli(&["status"]).stdout).into_owned();
    assert!(human.contains(&format!("  {BACKEND4}:{PORT}: probe: tcp via {carrier} to VIP {VIP4}:{PORT}; latest: TCP handshake")), "{human}");

    for (name, vip, own) in [("dsr4", VIP4, BACKEND4), ("dsr6", VIP6, BACKEND6)] {
        let other = if name == "dsr4" { "dsr6" } else { "dsr4" };
        pair.vip_on_loopback("del", vip);
        let removed = Instant::now();
        let down = agent.wait_status(BOUND, |s| state_of(s, name) == "down").unwrap_or_else(|e| panic!("{mode} {name}: {e}\n{}", agent.log()));
        let took = removed.elapsed();
        assert!(pair.plain_tcp(own), "{mode}: the host and its own address still answer TCP on port {PORT}");
        let (_, _, last) = backend_of(&down, name);
        assert!(last.starts_with(&format!("timed out after {TIMEOUT:?}: no answer from VIP ")), "{mode} {name}: {last}");
        assert_eq!(state_of(&down, other), "up", "{mode}: the other VIP is still served");
        println!("{mode} {name}: marked down {} ms after the VIP left the backend's loopback (fall {FALL} x interval {} ms + timeout {} ms = {} ms)",
            took.as_millis(), INTERVAL.as_millis(), TIMEOUT.as_millis(), (INTERVAL * FALL + TIMEOUT).as_millis());

        pair.vip_on_loopback("add", vip);
        let back = Instant::now();
        agent.wait_status(BOUND, |s| state_of(s, name) == "up").unwrap_or_else(|e| panic!("{mode} {name}: {e}\n{}", agent.log()));
        println!("{mode} {name}: up again {} ms after the VIP was back", back.elapsed().as_millis());
    }
}

#[test]
fn tunnel_black_hole_is_marked_down() {
    a_backend_that_stops_serving_the_vip_is_marked_down("tunnel", "tunnel");
}

#[test]
fn gue_black_hole_is_marked_down() {
    a_backend_that_stops_serving_the_vip_is_marked_down("gue", "GUE (port 6080)");
}

#[test]
fn direct_black_hole_is_marked_down() {
    a_backend_that_stops_serving_the_vip_is_marked_down("direct", "direct (L2)");
}

/// Nothing listens on the VIP's port on the backend: the backend's reset through the VIP
/// fails the probe at once, with what it means.
#[test]
fn a_reset_from_the_vip_fails_the_probe() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut pair = Pair::new("tunnel");
    pair._listeners.clear();
    let agent = Agent::start_in(pair.lb.name(), pair.lb.name(), &pair.config("tunnel")).expect("starting the agent");
    let status = agent
        .wait_status(BOUND, |s| backend_of(s, "dsr4").2.starts_with("reset") && backend_of(s, "dsr6").2.starts_with("reset"))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert_eq!(backend_of(&status, "dsr4"), ("down".to_owned(), format!("tcp via tunnel to VIP {VIP4}:{PORT}"), format!("reset by VIP {VIP4}:{PORT} via tunnel: nothing listens on the VIP's port")));
    assert_eq!(backend_of(&status, "dsr6").2, format!("reset by VIP [{VIP6}]:{PORT} via tunnel: nothing listens on the VIP's port"));
}
