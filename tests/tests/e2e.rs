//! End to end: real clients (HTTP over TCP, UDP), the real agent with the shipped lab
//! configuration (`examples/lab.yaml`), driver-mode XDP on veths, real backend servers, all in
//! network namespaces. Needs root. The tests take turns (one lab at a time) so that timing
//! bounds are not skewed by each other on a small machine.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_common::{
    maglev::{MaglevBackend, build_table},
    maps::v4_addr,
};
use lb_tests::{
    agent::{Agent, all_in_state, backends},
    topology::{HttpSession, Lab, http_get, in_namespace, in_ns},
};

const LAB_CONFIG: &str = include_str!("../../examples/lab.yaml");
/// From the lab configuration: interval 500 ms, fall 2, rise 2.
const INTERVAL: Duration = Duration::from_millis(500);
const FALL: u32 = 2;
const RISE: u32 = 2;

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

fn web() -> SocketAddr {
    "10.0.0.10:80".parse().unwrap()
}

fn images() -> SocketAddr {
    "10.0.0.10:8081".parse().unwrap()
}

struct Running {
    lab: Lab,
    agent: Agent,
    _turn: std::sync::MutexGuard<'static, ()>,
}

fn running() -> Running {
    let turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::create(3, env!("CARGO_BIN_EXE_lb-test-backend").as_ref()).expect("lab");
    for k in 0..3 {
        lab.start_backend(k).expect("backend");
    }
    lab.start_server(2, "img3", 9090).expect("image server");
    let agent = Agent::start(&lab, &LAB_CONFIG.replace("/run/lb/lab.sock", "{socket}")).expect("agent");
    agent
        .wait_status(Duration::from_secs(15), |s| ["web", "images", "web6", "echo"].iter().all(|v| all_in_state(s, v, "up")))
        .expect("every backend passes its health checks");
    Running { lab, agent, _turn: turn }
}

/// New connections every 10 ms until `stop`: when each started and who answered.
fn steady_load(lab: &Lab, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<(Instant, Option<String>)>> {
    let ns = lab.client_ns.clone();
    thread::spawn(move || {
        in_namespace(&ns, move || {
            let mut log = Vec::new();
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                let at = Instant::now();
                log.push((at, http_get(web(), "/", Duration::from_millis(500)).ok().map(|(_, b)| b)));
                thread::sleep(Duration::from_millis(10));
            }
            log
        })
        .unwrap()
    })
}

/// `n` long-lived connections to the web VIP, each with the backend that answered it.
fn sessions(lab: &Lab, n: usize) -> Vec<(HttpSession, String)> {
    (0..n)
        .map(|_| {
            let s = HttpSession::open(&lab.client_ns, web(), Duration::from_secs(2)).unwrap();
            let (_, owner) = s.get("/").unwrap();
            (s, owner)
        })
        .collect()
}

fn backend_state(agent: &Agent, vip: &str, ip: &str) -> (String, String) {
    let status = agent.json(&["status"]).unwrap();
    let b = backends(&status, vip).into_iter().find(|b| b["address"] == ip).unwrap().clone();
    (b["health"].as_str().unwrap().to_owned(), b["state"].as_str().unwrap().to_owned())
}

#[test]
fn distribution_of_3000_connections_follows_the_ring() {
    let r = running();
    let (seen, failed) = r.lab.spread(web(), 3000);
    assert_eq!(failed, 0);
    let pool: Vec<MaglevBackend> = (1..=3u8)
        .map(|k| MaglevBackend { id: k as u32, addr: v4_addr([10, 0, 10 + k, 2]), port: 8080, weight: 1 })
        .collect();
    let ring = build_table(&pool, 65537, 42);
    for k in 1..=3u32 {
        let share = ring.iter().filter(|&&id| id == k).count() as f64 / ring.len() as f64;
        let want = 3000.0 * share;
        let sigma = (3000.0 * share * (1.0 - share)).sqrt();
        let got = seen.get(&format!("b{k}")).copied().unwrap_or(0) as f64;
        println!("b{k}: {got} connections (ring share {:.2} %, expected {want:.0} ± {:.0})", share * 100.0, 4.0 * sigma);
        assert!((got - want).abs() <= 4.0 * sigma, "b{k}: {got} vs {want:.0} ± {:.0}", 4.0 * sigma);
    }
}

#[test]
fn failure_under_load_then_recovery() {
    let mut r = running();
    // Long-lived connections; those on healthy backends must not notice anything.
    let sessions = sessions(&r.lab, 6);
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&r.lab, stop.clone());
    thread::sleep(Duration::from_millis(500));

    let killed = Instant::now();
    r.lab.kill_backend(1);
    let bound = INTERVAL * FALL + Duration::from_secs(1);
    while backend_state(&r.agent, "web", "10.0.12.2").1 != "down" {
        assert!(killed.elapsed() < bound * 3, "b2 never marked down");
        thread::sleep(Duration::from_millis(5));
    }
    let detected = killed.elapsed();
    println!("detection: {} ms (bound {} ms)", detected.as_millis(), bound.as_millis());
    assert!(detected <= bound, "detected after {detected:?}, bound {bound:?}");
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let log = load.join().unwrap();

    let down_at = killed + detected;
    let window: Vec<_> = log.iter().filter(|(at, _)| *at >= killed && *at <= down_at).collect();
    let failed_in_window = window.iter().filter(|(_, a)| a.is_none()).count();
    let after: Vec<_> = log.iter().filter(|(at, _)| *at > down_at).collect();
    println!("detection window: {failed_in_window} of {} requests failed; after: {} requests", window.len(), after.len());
    assert!(after.len() >= 30, "load kept going after detection");
    assert!(after.iter().all(|(_, a)| a.as_deref().is_some_and(|b| b != "b2")), "a request failed or reached b2 after detection");
    // Only the dead server's share of the window can fail (a third, expected), never more
    // than 60 % (four standard deviations above a third for this window).
    assert!(failed_in_window as f64 <= 0.6 * window.len().max(1) as f64, "{failed_in_window} of {}", window.len());
    for (s, owner) in &sessions {
        if owner != "b2" {
            for _ in 0..5 {
                assert_eq!(s.get("/").unwrap().1, *owner, "a connection on a healthy backend broke");
            }
        }
    }

    let restarted = Instant::now();
    r.lab.start_backend(1).unwrap();
    while backend_state(&r.agent, "web", "10.0.12.2").1 != "up" {
        assert!(restarted.elapsed() < Duration::from_secs(10), "b2 never came back");
        thread::sleep(Duration::from_millis(5));
    }
    let back = restarted.elapsed();
    let bound = INTERVAL * RISE + Duration::from_secs(1);
    println!("recovery: {} ms (bound {} ms)", back.as_millis(), bound.as_millis());
    assert!(back <= bound, "back after {back:?}, bound {bound:?}");
    let (seen, failed) = r.lab.spread(web(), 300);
    assert_eq!(failed, 0);
    assert!(seen.get("b2").copied().unwrap_or(0) > 60, "b2 takes its share again: {seen:?}");
}

#[test]
fn drain_keeps_a_long_lived_connection() {
    let r = running();
    let session = HttpSession::open(&r.lab.client_ns, web(), Duration::from_secs(2)).unwrap();
    let (_, owner) = session.get("/").unwrap();
    let ip = r.lab.backends.iter().find(|b| b.name == owner).unwrap().v4;
    let out = r.agent.cli(&["backend", "drain", "web", &format!("{ip}:8080")]);
    assert!(out.status.success());
    let (seen, failed) = r.lab.spread(web(), 200);
    assert_eq!(failed, 0);
    assert!(!seen.contains_key(&owner), "new connections avoid the drained backend: {seen:?}");
    for _ in 0..20 {
        assert_eq!(session.get("/").unwrap().1, owner, "the long-lived connection stays");
    }
}

#[test]
fn udp_and_ipv6_vips() {
    let r = running();
    let answers = in_namespace(&r.lab.client_ns, || {
        let mut answers = BTreeMap::new();
        for i in 0..60 {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            socket.send_to(format!("ping{i}").as_bytes(), "10.0.0.10:53").unwrap();
            let mut buf = [0u8; 128];
            let (n, from) = socket.recv_from(&mut buf).expect("UDP reply");
            assert_eq!(from, "10.0.0.10:53".parse().unwrap(), "the reply comes from the VIP");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (name, payload) = text.split_once(':').unwrap();
            assert_eq!(payload, format!("ping{i}"));
            *answers.entry(name.to_owned()).or_insert(0) += 1;
        }
        answers
    })
    .unwrap();
    assert_eq!(answers.keys().collect::<Vec<_>>(), vec!["b1", "b2"], "both echo backends answer: {answers:?}");

    let (seen, failed) = r.lab.spread("[fd00::10]:80".parse().unwrap(), 60);
    assert_eq!(failed, 0);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["b1", "b2"], "the IPv6 pool: {seen:?}");
}

#[test]
fn traffic_not_for_a_vip_is_unaffected() {
    let mut r = running();
    for target in ["10.0.1.1", "10.0.0.10", "fd00:1::1"] {
        let out = in_ns(&r.lab.client_ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", target]).output().unwrap();
        assert!(out.status.success(), "ping {target}: {}", String::from_utf8_lossy(&out.stdout));
    }
    let lb_ns = r.lab.lb_ns.clone();
    let bin = env!("CARGO_BIN_EXE_lb-test-backend");
    r.lab.spawn(&lb_ns, &[bin, "lbhost", "0.0.0.0:9000"]).unwrap();
    let answer = in_namespace(&r.lab.client_ns, || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match http_get("10.0.1.1:9000".parse().unwrap(), "/", Duration::from_secs(1)) {
                Ok(a) => return a,
                Err(e) if Instant::now() > deadline => panic!("the load balancer's own service: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    })
    .unwrap();
    assert_eq!(answer, (200, "lbhost".to_owned()));
    let stats = r.agent.json(&["stats"]).unwrap();
    let count = |name: &str| stats["reasons"].as_array().unwrap().iter().find(|r| r[0] == name).unwrap()[1].as_u64().unwrap();
    assert!(count("pass_not_tcp_udp") >= 9, "pings passed to the kernel and counted");
    assert!(count("pass_not_vip") > 0, "the service's traffic passed and counted");
}

#[test]
fn reload_under_load_breaks_no_connection() {
    let mut r = running();
    r.lab.start_server(1, "img2", 9090).unwrap();
    let sessions = sessions(&r.lab, 6);
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&r.lab, stop.clone());
    thread::sleep(Duration::from_millis(300));

    let changed = std::fs::read_to_string(&r.agent.config)
        .unwrap()
        .replacen("      - address: 10.0.11.2\n        port: 8080\n", "      - address: 10.0.11.2\n        port: 8080\n        weight: 3\n", 1)
        .replacen("      - address: 10.0.13.2\n        port: 9090\n", "      - address: 10.0.13.2\n        port: 9090\n      - address: 10.0.12.2\n        port: 9090\n", 1);
    std::fs::write(&r.agent.config, changed).unwrap();
    let out = r.agent.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    r.agent
        .wait_status(Duration::from_secs(10), |s| backends(s, "images").len() == 2 && all_in_state(s, "images", "up"))
        .expect("the added backend comes up");
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let log = load.join().unwrap();
    assert!(log.len() > 50);
    assert!(log.iter().all(|(_, a)| a.is_some()), "a new connection failed during the reload");
    for (s, owner) in &sessions {
        for _ in 0..3 {
            assert_eq!(s.get("/").unwrap().1, *owner, "an established connection broke");
        }
    }
    let status = r.agent.json(&["status"]).unwrap();
    assert_eq!(backends(&status, "web").iter().find(|b| b["address"] == "10.0.11.2").unwrap()["weight"], 3);
    let (seen, _) = r.lab.spread(images(), 60);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["img2", "img3"], "{seen:?}");
}

#[test]
fn two_pools_reach_only_their_own_backends() {
    let r = running();
    let (web_seen, failed) = r.lab.spread(web(), 150);
    assert_eq!(failed, 0);
    assert_eq!(web_seen.keys().collect::<Vec<_>>(), vec!["b1", "b2", "b3"]);
    let (img_seen, failed) = r.lab.spread(images(), 50);
    assert_eq!(failed, 0);
    assert_eq!(img_seen.keys().collect::<Vec<_>>(), vec!["img3"]);
}
