//! The agent and its CLI against real backends in a lab (network namespaces, driver-mode XDP
//! on veths). Needs root.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_common::{
    hash::flow_hash,
    maglev::{MaglevBackend, build_table},
    maps::{FAMILY_V4, FlowKey, PROTO_TCP, v4_addr},
};
use lb_tests::{
    agent::{Agent, all_in_state, backends},
    lab_config::{LabConfig, Vip},
    topology::{Lab, http_get, in_namespace},
};
use serde_json::Value;

const SEED: u32 = 7;
const RING: u32 = 65537;

/// The agent's configuration: VIP web on the three backends (the first with weight `b1_weight`),
/// the lab's fast HTTP checks ([`Vip`]), seed and ring size fixed, metrics on 127.0.0.1:9100.
fn config(b1_weight: u32) -> String {
    LabConfig::new()
        .global(&format!("hash_seed: {SEED}"))
        .global(&format!("ring_size: {RING}"))
        .global("metrics_address: 127.0.0.1:9100")
        .vip(Vip::tcp("web", "10.0.0.10", 80).weighted_backend("10.0.11.2:8080", b1_weight).backends(&["10.0.12.2:8080", "10.0.13.2:8080"]))
        .render()
}

fn lab_with_agent(yaml: &str) -> (Lab, Agent) {
    lb_tests::agent::lab_with_agent(env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), 3, yaml, "web").expect("a lab whose backends pass their checks")
}

/// Sends `n` requests from the client to `vip` and counts the answering backends.
fn spread(lab: &Lab, vip: SocketAddr, n: usize) -> HashMap<String, usize> {
    in_namespace(&lab.client_ns, move || {
        let mut seen = HashMap::new();
        for _ in 0..n {
            let (status, body) = http_get(vip, "/", Duration::from_secs(3)).unwrap_or_else(|e| panic!("GET {vip}: {e}"));
            assert_eq!(status, 200);
            *seen.entry(body.trim().to_owned()).or_insert(0) += 1;
        }
        seen
    })
    .unwrap()
}

fn web() -> SocketAddr {
    "10.0.0.10:80".parse().unwrap()
}

fn ok(agent: &Agent, args: &[&str]) -> String {
    let out = agent.cli(args);
    assert!(out.status.success(), "lb {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must be refused with `code` and a message containing `needle`.
fn refused(agent: &Agent, args: &[&str], code: i32, needle: &str) {
    let out = agent.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "lb {args:?}: {stderr}");
    assert!(stderr.contains(needle), "lb {args:?}: {stderr:?} should mention {needle:?}");
}

fn backend<'a>(status: &'a Value, endpoint: &str) -> &'a Value {
    let (ip, port) = endpoint.rsplit_once(':').unwrap();
    backends(status, "web")
        .into_iter()
        .find(|b| b["address"] == ip && b["port"] == port.parse::<u16>().unwrap())
        .unwrap_or_else(|| panic!("no backend {endpoint} in {status:#}"))
}

#[test]
fn cli_manages_a_running_agent() {
    let (mut lab, agent) = lab_with_agent(&config(1));

    let seen = spread(&lab, web(), 60);
    assert_eq!(seen.len(), 3, "all three backends answer: {seen:?}");
    let human = ok(&agent, &["status"]);
    assert!(human.contains("VIP web 10.0.0.10:80/tcp") && human.contains("10.0.12.2:8080"), "{human}");
    let stats = agent.json(&["stats"]).unwrap();
    let forwarded = stats["reasons"].as_array().unwrap().iter().find(|r| r[0] == "forward_to_backend").unwrap()[1].as_u64().unwrap();
    assert!(forwarded >= 60 * 3, "forwarded packets counted: {forwarded}");

    // Drain: new connections avoid the backend; undrain brings it back.
    ok(&agent, &["backend", "drain", "web", "10.0.12.2:8080"]);
    let status = agent.json(&["status"]).unwrap();
    assert_eq!(backend(&status, "10.0.12.2:8080")["state"], "draining");
    assert!(!spread(&lab, web(), 40).contains_key("b2"), "a drained backend gets no new connections");
    ok(&agent, &["backend", "undrain", "web", "10.0.12.2:8080"]);
    assert_eq!(backend(&agent.json(&["status"]).unwrap(), "10.0.12.2:8080")["state"], "up");

    // Weight 0 takes no new flows.
    ok(&agent, &["backend", "weight", "web", "10.0.11.2:8080", "0"]);
    assert_eq!(backend(&agent.json(&["status"]).unwrap(), "10.0.11.2:8080")["weight"], 0);
    assert!(!spread(&lab, web(), 40).contains_key("b1"));
    ok(&agent, &["backend", "weight", "web", "10.0.11.2:8080", "1"]);

    // Remove and add back (health-checked: it comes back once its checks pass).
    ok(&agent, &["backend", "remove", "web", "10.0.13.2:8080"]);
    assert_eq!(backends(&agent.json(&["status"]).unwrap(), "web").len(), 2);
    assert!(!spread(&lab, web(), 30).contains_key("b3"));
    ok(&agent, &["backend", "add", "web", "10.0.13.2:8080", "--weight", "2"]);
    agent.wait_status(Duration::from_secs(10), |s| all_in_state(s, "web", "up") && backends(s, "web").len() == 3).unwrap();

    // A second VIP:port with its own pool: another port of b3's host, since a backend endpoint
    // serves one VIP.
    lab.start_server(2, "img3", 9090).expect("image server");
    refused(&agent, &["vip", "add", "img", "10.0.0.10:8081", "--backend", "10.0.13.2:8080"], 1, "already serves VIP \"web\"");
    ok(&agent, &["vip", "add", "img", "10.0.0.10:8081", "--check", "tcp", "--backend", "10.0.13.2:9090"]);
    agent.wait_status(Duration::from_secs(10), |s| all_in_state(s, "img", "up")).unwrap();
    let img: SocketAddr = "10.0.0.10:8081".parse().unwrap();
    assert_eq!(spread(&lab, img, 10).keys().collect::<Vec<_>>(), vec!["img3"]);
    refused(&agent, &["backend", "add", "img", "10.0.11.2:8080"], 1, "already serves VIP \"web\"");
    ok(&agent, &["vip", "remove", "img"]);
    assert!(backends(&agent.json(&["status"]).unwrap(), "img").is_empty());

    // Explain answers from the data path's maps.
    let e = agent.json(&["explain", "10.0.1.2:40000", "10.0.0.10:80", "tcp"]).unwrap();
    assert_eq!(e["verdict"], "forward");
    assert_eq!(e["vip"], "web");
    let e = agent.json(&["explain", "10.0.1.2:40000", "10.0.0.99:80", "tcp"]).unwrap();
    assert_eq!(e["verdict"], "pass");

    // Bad input is refused with a clear error and changes nothing.
    let before = agent.json(&["status"]).unwrap();
    refused(&agent, &["backend", "drain", "nosuch", "10.0.11.2:8080"], 1, "no VIP named \"nosuch\"");
    refused(&agent, &["backend", "drain", "web", "10.9.9.9:8080"], 1, "has no backend 10.9.9.9:8080");
    refused(&agent, &["backend", "weight", "web", "10.0.11.2:8080", "70000"], 1, "maximum");
    refused(&agent, &["backend", "add", "web", "10.0.11.2:8080"], 1, "already has backend");
    refused(&agent, &["backend", "add", "web", "[fd00::1]:8080"], 1, "address family");
    refused(&agent, &["vip", "add", "web", "10.0.0.11:80", "--backend", "10.0.11.2:8080"], 1, "already exists");
    refused(&agent, &["explain", "10.0.1.2:1", "10.0.0.10:80", "sctp"], 2, "invalid value 'sctp'");
    refused(&agent, &["backend", "add", "web", "10.0.11.9:0"], 1, "backend 10.0.11.9:0: 0 is not a port: use 1-65535");
    // The last backend taking new flows is kept unless --force.
    ok(&agent, &["backend", "drain", "web", "10.0.11.2:8080"]);
    ok(&agent, &["backend", "weight", "web", "10.0.12.2:8080", "0"]);
    let last = "is the last backend of VIP \"web\" that takes new flows";
    refused(&agent, &["backend", "remove", "web", "10.0.13.2:8080"], 1, last);
    refused(&agent, &["backend", "drain", "web", "10.0.13.2:8080"], 1, last);
    refused(&agent, &["backend", "weight", "web", "10.0.13.2:8080", "0"], 1, last);
    let status = agent.json(&["status"]).unwrap();
    assert_eq!(status["vips"][0]["ring_backends"], 1, "weight 0 is not in the ring: {status:#}");
    ok(&agent, &["backend", "undrain", "web", "10.0.11.2:8080"]);
    ok(&agent, &["backend", "weight", "web", "10.0.12.2:8080", "1"]);
    refused(&agent, &["backend", "drain", "web", "not-an-address"], 2, "invalid value");
    let after = agent.json(&["status"]).unwrap();
    for (b, a) in backends(&before, "web").iter().zip(backends(&after, "web")) {
        assert_eq!((&b["address"], &b["state"], &b["weight"]), (&a["address"], &a["state"], &a["weight"]));
    }
    let out = std::process::Command::new(lb_tests::agent::lb_binary())
        .args(["--socket", "/nonexistent/lb.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "unreachable agent");
    // Not root: the message says so, not "is lb run running?".
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(lb_tests::agent::lb_binary())
        .arg("--socket")
        .arg(&agent.socket)
        .arg("status")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied") && stderr.contains("root only"), "{stderr}");
    // A file that is not a configuration is named, not reprinted.
    let out = agent.cli(&["config", "check", "/etc/passwd"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("not a load balancer configuration") && stderr.len() < 300, "{stderr}");
    assert!(ok(&agent, &["config", "show"]).starts_with("global:\n"), "config show prints YAML");

    // Configuration check, reload, and a reload of an invalid file that changes nothing.
    ok(&agent, &["config", "check", agent.config.to_str().unwrap()]);
    agent.rewrite_config(&config(5)).unwrap();
    assert_eq!(ok(&agent, &["reload"]), "reloaded: changed web\n");
    assert_eq!(backend(&agent.json(&["status"]).unwrap(), "10.0.11.2:8080")["weight"], 5);
    agent.rewrite_config(&config(70000)).unwrap();
    refused(&agent, &["config", "check", agent.config.to_str().unwrap()], 1, "weight");
    refused(&agent, &["reload"], 1, "weight");
    assert_eq!(backend(&agent.json(&["status"]).unwrap(), "10.0.11.2:8080")["weight"], 5);

    // Prometheus metrics on the configured address.
    let metrics = in_namespace(&lab.lb_ns, || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9100").unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .unwrap();
    let body = metrics.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let families = lb_tests::prometheus::parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let sample = |name: &str, labels: &[(&str, &str)]| {
        let key: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        families.get(name).and_then(|f| f.samples.get(&key).copied()).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{body}"))
    };
    assert!(sample("lb_vip_packets_total", &[("vip", "web")]) > 0.0);
    assert_eq!(sample("lb_backend_healthy", &[("backend", "10.0.12.2:8080"), ("vip", "web")]), 1.0);
    assert_eq!(sample("lb_connection_table_capacity", &[]), 262_144.0);
    assert_eq!(sample("lb_vip_announced", &[("vip", "web")]), 0.0, "no announce_table here");
    let build = &families["lb_build_info"];
    assert!(build.samples.len() == 1 && build.samples.iter().all(|(labels, v)| *v == 1.0 && labels.iter().any(|(k, _)| k == "program_tag")));
    let reasons = |family: &str| -> Vec<String> {
        families[family].samples.keys().flat_map(|l| l.iter().map(|(_, v)| v.clone())).collect()
    };
    assert!(!reasons("lb_packets_total").contains(&"rescheduled".to_owned()), "events are not packet verdicts");
    assert!(reasons("lb_events_total").contains(&"rescheduled".to_owned()));
}

/// The backend the Maglev builder puts in the slot of `src`'s flow to the web VIP.
fn expected(pool: &[(u32, IpAddr)], src: SocketAddr) -> SocketAddr {
    let backends: Vec<MaglevBackend> = pool
        .iter()
        .map(|&(id, ip)| MaglevBackend { id, addr: v4_addr(match ip { IpAddr::V4(a) => a.octets(), _ => unreachable!() }), port: 8080, weight: 1 })
        .collect();
    let ring = build_table(&backends, RING, SEED);
    let IpAddr::V4(client) = src.ip() else { unreachable!() };
    let key = FlowKey { src: v4_addr(client.octets()), dst: v4_addr([10, 0, 0, 10]), sport: src.port(), dport: 80, proto: PROTO_TCP, family: FAMILY_V4, pad: [0; 2] };
    let id = ring[(flow_hash(&key, SEED, false) % RING) as usize];
    let ip = pool.iter().find(|(i, _)| *i == id).unwrap().1;
    SocketAddr::new(ip, 8080)
}

/// Asserts that for `n` new flows the data path's choice (via `lb explain`) is the Maglev
/// builder's for `pool`.
fn ring_matches_builder(agent: &Agent, pool: &[(u32, IpAddr)], n: u16) {
    for port in 0..n {
        let src: SocketAddr = format!("10.0.1.2:{}", 20000 + port * 7).parse().unwrap();
        let e = agent.json(&["explain", &src.to_string(), "10.0.0.10:80", "tcp"]).unwrap();
        assert_eq!(e["verdict"], "forward", "{e:#}");
        assert_eq!(e["backend"], expected(pool, src).to_string(), "flow from {src}: {e:#}");
    }
}

#[test]
fn health_failure_and_recovery_swap_the_ring() {
    let (mut lab, agent) = lab_with_agent(&config(1));
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let all = [(1, ip("10.0.11.2")), (2, ip("10.0.12.2")), (3, ip("10.0.13.2"))];
    ring_matches_builder(&agent, &all, 150);

    lab.kill_backend(1);
    let down = agent
        .wait_status(Duration::from_secs(5), |s| backend(s, "10.0.12.2:8080")["health"] == "down")
        .expect("the killed backend is marked down");
    assert_eq!(backend(&down, "10.0.12.2:8080")["state"], "down");
    let stats = agent.json(&["stats"]).unwrap();
    let swap_ms = stats["health"]["last_probe_to_swap_ms"].as_f64().expect("probe-to-swap time measured");
    println!("probe to swapped ring: {swap_ms:.2} ms");
    assert!(swap_ms < 1000.0, "{swap_ms} ms");
    ring_matches_builder(&agent, &[all[0], all[2]], 150);
    let seen = spread(&lab, web(), 30);
    assert!(!seen.contains_key("b2"), "no new connection goes to the dead backend: {seen:?}");

    lab.start_backend(1).unwrap();
    agent
        .wait_status(Duration::from_secs(5), |s| backend(s, "10.0.12.2:8080")["state"] == "up")
        .expect("the backend comes back");
    ring_matches_builder(&agent, &all, 150);
    assert!(spread(&lab, web(), 60).contains_key("b2"), "it takes its share again");
}

/// The sum of `active_connections` over `web`'s backends in a status report.
fn live_flows(status: &Value) -> u64 {
    backends(status, "web").iter().filter_map(|b| b["active_connections"].as_u64()).sum()
}

/// Least-conn's counts are live flows: they rise with open connections and fall back to zero
/// when the connections close (FIN), from the agent's batched recount of the connection table
/// (once a second, off its loop), which also rewrites the counts least-conn chooses by.
#[test]
fn least_conn_counts_follow_flows_that_end() {
    let yaml = config(1).replace("    protocol: tcp\n", "    protocol: tcp\n    scheduler: least-conn\n");
    let (lab, agent) = lab_with_agent(&yaml);
    // Each backend answers `/` with its name, b1 to b3, which serve 10.0.11.2 to 10.0.13.2.
    let mut served: HashMap<String, u64> = HashMap::new();
    let sessions: Vec<_> = (0..6)
        .map(|_| {
            let s = lb_tests::topology::HttpSession::open(&lab.client_ns, web(), Duration::from_secs(5)).expect("connect");
            let (status, body) = s.get("/").expect("request");
            assert_eq!(status, 200);
            let k: u8 = body.trim().strip_prefix('b').and_then(|k| k.parse().ok()).expect("a backend's name");
            *served.entry(format!("10.0.{}.2", 10 + k)).or_default() += 1;
            s
        })
        .collect();
    let open = agent.wait_status(Duration::from_secs(5), |s| live_flows(s) == 6).expect("six live flows counted");
    let counted: HashMap<String, u64> = backends(&open, "web")
        .iter()
        .map(|b| (b["address"].as_str().unwrap_or("?").to_owned(), b["active_connections"].as_u64().unwrap_or(u64::MAX)))
        .filter(|&(_, n)| n > 0)
        .collect();
    drop(sessions);
    let closed = agent.wait_status(Duration::from_secs(5), |s| live_flows(s) == 0);
    eprintln!("least-conn live flows per backend with 6 connections open: {counted:?}");
    closed.expect("the counts fall back to zero once the connections close");
    // Power of two choices spreads the flows by chance (two ring slots may even name one
    // backend), so the spread is not asserted: each backend's count is its open connections.
    assert_eq!(counted, served, "each backend's count is the connections it serves");
}

/// The routes `ip route show table 100` lists in the load balancer's namespace.
fn announced_routes(lab: &Lab) -> String {
    let out = lb_tests::agent::in_netns(&lab.lb_ns, &["ip", "route", "show", "table", "100"]).output().expect("ip route");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn announced(status: &Value) -> (bool, String) {
    let vip = &status["vips"][0];
    (vip["announced"].as_bool().unwrap_or(false), vip["announce_reason"].as_str().unwrap_or("").to_owned())
}

/// Health-gated announcement: the VIP's route is in the announcement table while a backend
/// takes new flows, leaves it when every backend is down, comes back with them, and is removed
/// by `lb teardown`.
#[test]
fn the_vip_is_announced_only_while_a_backend_takes_flows() {
    let yaml = config(1).replace("  metrics_address: 127.0.0.1:9100\n", "  announce_table: 100\n");
    let (mut lab, agent) = lab_with_agent(&yaml);
    let up = agent.wait_status(Duration::from_secs(5), |s| announced(s).0).expect("announced");
    assert_eq!(announced(&up).1, "announced: 3 backends take new flows");
    assert_eq!(announced_routes(&lab), "10.0.0.10 dev lo proto 250 scope link");
    for k in 0..3 {
        lab.kill_backend(k);
    }
    let started = std::time::Instant::now();
    let down = agent.wait_status(Duration::from_secs(5), |s| !announced(s).0).expect("withdrawn");
    let withdrawn_after = started.elapsed();
    assert_eq!(announced(&down).1, "withdrawn: no backend takes new flows");
    let check = agent.cli(&["check", "web"]);
    assert_eq!(check.status.code(), Some(1), "lb check fails while nothing serves: {check:?}");
    // A VIP without a backend drops, and says so per VIP.
    let refused = in_namespace(&lab.client_ns, || http_get(web(), "/", Duration::from_millis(300)).is_err()).unwrap();
    assert!(refused, "no backend: the request fails");
    let dropped = agent.json(&["status"]).unwrap()["vips"][0]["traffic"]["dropped"].as_u64();
    assert!(dropped.is_some_and(|d| d > 0), "dropped counted per VIP: {dropped:?}");
    assert_eq!(announced_routes(&lab), "", "the route left the table");
    for k in 0..3 {
        lab.start_backend(k).expect("backend");
    }
    agent.wait_status(Duration::from_secs(5), |s| announced(s).0).expect("announced again");
    agent.wait_status(Duration::from_secs(5), |s| all_in_state(s, "web", "up")).expect("every backend back");
    assert_eq!(ok(&agent, &["check"]), format!("answered by the agent at {}\nweb: serving (3 backends take new flows)\n", agent.socket.display()));
    assert_eq!(announced_routes(&lab), "10.0.0.10 dev lo proto 250 scope link");
    eprintln!("announcement: withdrawn {withdrawn_after:?} after the last backend was killed (fall 2 × fast_interval 100 ms)");
    let out = agent.teardown();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(announced_routes(&lab), "", "teardown withdraws");
}

fn vip_address_lines(lab: &Lab) -> String {
    let out = lb_tests::agent::in_netns(&lab.lb_ns, &["ip", "-o", "addr", "show", "to", "10.0.0.10"]).output().expect("ip addr");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `global.vip_addresses: external` (keepalived moves the VIP addresses): the agent neither
/// adds a VIP address nor removes one, also on `lb teardown`; `lb check` still says whether
/// this node serves its VIPs (for keepalived's track script).
#[test]
fn external_vip_addresses_are_left_to_their_owner() {
    let yaml = config(1).replace("  metrics_address: 127.0.0.1:9100\n", "  vip_addresses: external\n");
    let (lab, agent) = lab_with_agent(&yaml);
    assert_eq!(vip_address_lines(&lab), "", "the agent added no address");
    assert_eq!(ok(&agent, &["check"]), format!("answered by the agent at {}\nweb: serving (3 backends take new flows)\n", agent.socket.display()));
    let add = lb_tests::agent::in_netns(&lab.lb_ns, &["ip", "addr", "add", "10.0.0.10/32", "dev", "lbc"]).status().expect("ip");
    assert!(add.success());
    let out = agent.teardown();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(vip_address_lines(&lab).contains("10.0.0.10/32"), "teardown left keepalived's address alone");
}
