//! Local errors are local, in a lab (network namespaces, driver-mode XDP on veths, real
//! backends): the agent's start-time check of the host's kernel settings, and probes that this
//! host's own routes refuse. Needs root.

use std::time::Duration;

use lb_tests::{
    agent::{Agent, all_in_state, backends},
    lab_config::{LabConfig, Vip},
    topology::Lab,
};

const BACKEND_IFACES: [&str; 3] = ["lbb1", "lbb2", "lbb3"];

/// An IPv4 and an IPv6 VIP over the three backends, with the lab's fast HTTP checks.
fn config() -> String {
    LabConfig::new()
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"]))
        .vip(Vip::tcp("web6", "fd00::10", 80).backends(&["fd00:11::2:8080", "fd00:12::2:8080", "fd00:13::2:8080"]))
        .render()
}

/// `ip -o ARGS` in the load balancer's namespace.
fn ip(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["ip", "-o"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&lab.ns_run(&lab.lb_ns, &all).expect("ip").stdout).into_owned()
}

/// With forwarding off on the backend side, the agent would take every health-check answer for
/// a reply and mark every backend down. It refuses to start instead, naming each setting and
/// the command that fixes it, before touching anything: no data path pinned, no program
/// attached, no VIP address, no admin socket, no health check run. With the fixes applied the
/// same configuration starts and every backend is up.
#[test]
fn forwarding_off_on_the_backend_side_stops_the_agent_at_start_and_touches_nothing() {
    let mut lab = Lab::create(3, env!("CARGO_BIN_EXE_lb-test-backend").as_ref()).expect("lab");
    for k in 0..3 {
        lab.start_backend(k).expect("backend");
    }
    let mut off = vec!["sysctl", "-qw"];
    let settings: Vec<String> = BACKEND_IFACES
        .iter()
        .flat_map(|i| [format!("net.ipv4.conf.{i}.forwarding"), format!("net.ipv6.conf.{i}.forwarding")])
        .collect();
    let assignments: Vec<String> = settings.iter().map(|s| format!("{s}=0")).collect();
    off.extend(assignments.iter().map(String::as_str));
    lab.ns_run(&lab.lb_ns, &off).expect("forwarding off on the backend side");

    let yaml = config();
    let (agent, status) = Agent::start_expecting_exit(&lab, &yaml, Duration::from_secs(20)).expect("the agent must refuse to start");
    let log = agent.log();
    assert!(!status.success(), "{status}: {log}");
    assert!(log.contains("the host's settings do not let the data path work; nothing was changed on the host"), "{log}");
    for setting in &settings {
        assert!(log.contains(&format!("{setting} is 0: the XDP program on ")), "{setting} not named: {log}");
        assert!(log.contains(&format!("fix: sysctl -w {setting}=1")), "no fix for {setting}: {log}");
    }
    for client_side in ["net.ipv4.conf.lbc.forwarding", "net.ipv6.conf.lbc.forwarding"] {
        assert!(!log.contains(client_side), "{client_side} is on: {log}");
    }
    assert!(!log.contains("backend health changed"), "a backend was judged: {log}");
    assert!(!agent.pin_dir.exists(), "a data path was pinned at {}", agent.pin_dir.display());
    assert!(!agent.socket.exists(), "an admin socket was made");
    let addresses = ip(&lab, &["addr", "show"]);
    assert!(!addresses.contains("10.0.0.10") && !addresses.contains("fd00::10"), "a VIP address was added: {addresses}");
    let links = ip(&lab, &["link", "show"]);
    assert!(!links.contains("xdp"), "a program was attached: {links}");
    drop(agent);

    let mut on = vec!["sysctl", "-qw"];
    let fixes: Vec<String> = settings.iter().map(|s| format!("{s}=1")).collect();
    on.extend(fixes.iter().map(String::as_str));
    lab.ns_run(&lab.lb_ns, &on).expect("the fixes the agent named");
    let agent = Agent::start(&lab, &yaml).expect("the agent starts once forwarding is on");
    agent
        .wait_status(Duration::from_secs(15), |s| all_in_state(s, "web", "up") && all_in_state(s, "web6", "up"))
        .expect("every backend passes its checks");
}

/// The backend `address` of `vip` in a status report.
fn backend<'a>(status: &'a serde_json::Value, vip: &str, address: &str) -> &'a serde_json::Value {
    backends(status, vip).into_iter().find(|b| b["address"] == address).unwrap_or_else(|| panic!("no backend {address} in {status:#}"))
}

/// Each way this host's own routes refuse a backend, and what the probe reports.
const REFUSALS: [Refusal; 4] = [
    Refusal { vip: "web", backend: "10.0.11.2", add: &["route", "add", "unreachable", "10.0.11.2/32"], undo: &["route", "del", "unreachable", "10.0.11.2/32"], detail: "no route to host" },
    Refusal { vip: "web6", backend: "fd00:11::2", add: &["-6", "route", "add", "prohibit", "fd00:11::2/128"], undo: &["-6", "route", "del", "prohibit", "fd00:11::2/128"], detail: "permission denied" },
    Refusal { vip: "web", backend: "10.0.12.2", add: &["route", "add", "blackhole", "10.0.12.2/32"], undo: &["route", "del", "blackhole", "10.0.12.2/32"], detail: "invalid argument" },
    Refusal { vip: "web6", backend: "fd00:12::2", add: &["-6", "route", "del", "fd00:12::/64", "dev", "lbb2"], undo: &["-6", "route", "add", "fd00:12::/64", "dev", "lbb2"], detail: "network is unreachable" },
];

/// A route of the load balancer's host that refuses `backend` of `vip`.
struct Refusal {
    vip: &'static str,
    backend: &'static str,
    /// `ip` arguments that make the route, and that undo it.
    add: &'static [&'static str],
    undo: &'static [&'static str],
    /// The connect error the probe reports.
    detail: &'static str,
}

/// Routes of the load balancer's own host that refuse a backend (`unreachable`, `prohibit`,
/// `blackhole`, no route at all): the probe's connect fails before a packet leaves, which says
/// nothing about the backend. The backends stay up (on main they went down after `fall`
/// probes), `lb status` shows the probes that failed on the agent's side and `lb stats` counts
/// them; once the routes are gone, the probes pass again.
#[test]
fn probes_refused_by_this_hosts_routes_never_take_a_backend_down() {
    let (lab, agent) = lb_tests::agent::lab_with_agent(env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), 3, &config(), "web").expect("a lab whose backends pass their checks");
    agent.wait_status(Duration::from_secs(15), |s| all_in_state(s, "web6", "up")).expect("IPv6 backends up");
    let before = agent.log().len();
    for r in &REFUSALS {
        let mut args = vec!["ip"];
        args.extend_from_slice(r.add);
        lab.ns_run(&lab.lb_ns, &args).expect("a refusing route");
    }
    // The lab's checks: every 200 ms, fall 2. Twenty probes' worth of local errors, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        let s = agent.json(&["status"]).expect("status");
        for r in &REFUSALS {
            let b = backend(&s, r.vip, r.backend);
            assert_eq!(b["health"], "up", "a local error took {} down: {b:#}\n{}", r.backend, agent.log());
        }
        if REFUSALS.iter().all(|r| backend(&s, r.vip, r.backend)["probe_local_errors"].as_u64().unwrap_or(0) >= 20) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "20 local errors per backend were not counted within 15 s: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for r in &REFUSALS {
        assert_eq!(backend(&status, r.vip, r.backend)["last_probe"], format!("agent could not probe: connect: {}", r.detail), "{status:#}");
    }
    for (vip, addr) in [("web", "10.0.13.2"), ("web6", "fd00:13::2")] {
        assert_eq!(backend(&status, vip, addr)["probe_local_errors"], 0, "{status:#}");
    }
    let stats = agent.json(&["stats"]).expect("stats");
    assert!(stats["health"]["local_errors"].as_u64().unwrap_or(0) >= 80, "{stats:#}");
    let human = String::from_utf8_lossy(&agent.cli(&["status"]).stdout).into_owned();
    assert!(human.contains("  10.0.11.2:8080: ") && human.contains(" failed on the agent's side, not counted against it; latest probe: agent could not probe: connect: no route to host"), "{human}");

    for r in &REFUSALS {
        let mut args = vec!["ip"];
        args.extend_from_slice(r.undo);
        lab.ns_run(&lab.lb_ns, &args).expect("the route undone");
    }
    agent
        .wait_status(Duration::from_secs(10), |s| REFUSALS.iter().all(|r| backend(s, r.vip, r.backend)["last_probe"] == "HTTP 200"))
        .expect("the probes pass again");
    let log = agent.log();
    assert!(!log[before..].contains("backend health changed"), "a backend's health changed: {}", &log[before..]);
}
