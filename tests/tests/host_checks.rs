//! The agent's start-time check of the host's kernel settings, in a lab (network namespaces,
//! driver-mode XDP on veths, real backends). Needs root.

use std::time::Duration;

use lb_tests::{
    agent::{Agent, all_in_state},
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
