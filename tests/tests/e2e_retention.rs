//! End to end, state only on change (README, "State only on change"): thousands of long-lived
//! connections to a Maglev VIP and new connections throughout, while a fourth backend is added,
//! fails, recovers and is removed, five times over. No long-lived connection may break, no new
//! connection may fail outside the windows in which the failed backend was not yet detected
//! (or the removed one was being removed),
//! the connection table may hold only flows of moved ring slots, and once the retention has
//! ended and the table walk has run, no slot stays moved. Real agent, real backends,
//! driver-mode XDP on veths, all in network namespaces. Needs root.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Agent, all_in_state, backends},
    topology::{HttpSession, Lab, http_get, in_namespace},
};
use serde_json::Value;

/// Long-lived connections.
const SESSIONS: usize = 2000;
/// Add, fail, recover, remove: this many times.
const CYCLES: usize = 5;
/// The configuration's `ring_retention_secs`.
const RETENTION_SECS: u64 = 3;

const CONFIG: &str = "\
global:
  interfaces: [lbc, lbb1, lbb2, lbb3, lbb4]
  xdp_mode: driver
  hash_seed: 42
  vip_capacity: 8
  backend_capacity: 64
  ring_retention_secs: 3
  admin_socket: {socket}
vips:
  - name: web
    address: 10.0.0.10
    port: 80
    health_check:
      type: http
      path: /health
      interval: 500ms
      fast_interval: 100ms
      timeout: 250ms
      rise: 2
      fall: 2
    backends:
      - address: 10.0.11.2
        port: 8080
      - address: 10.0.12.2
        port: 8080
      - address: 10.0.13.2
        port: 8080
";

const FOURTH: &str = "10.0.14.2:8080";

fn web() -> SocketAddr {
    "10.0.0.10:80".parse().unwrap()
}

/// Raises this process's open-file limit to its hard limit (a socket per session).
fn raise_open_files() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write one rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(lim.rlim_cur as usize > SESSIONS * 2 + 256, "open-file limit {} too low for {SESSIONS} sessions", lim.rlim_cur);
}

/// New connections every 10 ms until `stop`: when each started and whether it was answered.
fn steady_load(ns: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<(Instant, Result<String, String>)>> {
    thread::spawn(move || {
        in_namespace(&ns, move || {
            let mut log = Vec::new();
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(300) {
                let at = Instant::now();
                log.push((at, http_get(web(), "/", Duration::from_secs(2)).map(|(_, b)| b).map_err(|e| e.to_string())));
                thread::sleep(Duration::from_millis(10));
            }
            log
        })
        .unwrap()
    })
}

fn web_status(status: &Value) -> &Value {
    status["vips"].as_array().and_then(|v| v.iter().find(|v| v["name"] == "web")).expect("web in the status")
}

fn fourth_in(status: &Value, state: &str) -> bool {
    backends(status, "web").iter().any(|b| b["address"] == "10.0.14.2" && b["state"] == state)
}

/// The connection table's entries for the VIP `web`, read from the
/// agent's pinned maps once the traffic stopped.
#[derive(Debug, Default)]
struct Census {
    /// Entries in moved ring slots.
    moved: usize,
    /// Entries outside moved slots that name the live ring's backend of their slot, a backend
    /// that no longer takes them (`Flow::kept_by`: removed, reused, down), or a flow that ended
    /// (FIN, RST, expired): left behind where the table walk cleared a slot, never followed.
    idle: usize,
    /// Any other entry outside moved slots: one that would send its flow elsewhere than the
    /// live ring.
    divergent: Vec<String>,
}

fn census(agent: &Agent) -> Census {
    use aya::maps::{Array, HashMap, Map, MapData};
    use lb_common::{
        flow::Flow,
        hash::flow_hash,
        limits::{RING_IDS_PER_ELEMENT, moved_bit, ring_id_in, ring_index},
        maps::*,
        schedule::vip_hash,
    };
    let pins = lb_userspace::dataplane::Pins::at(&agent.pin_dir);
    let open = |name: &str| MapData::from_pin(pins.map(name)).unwrap_or_else(|e| panic!("pinned {name}: {e}"));
    let meta = pins.meta().expect("META");
    let (ring_size, seed) = (meta[META_RING_SIZE as usize] as u32, meta[META_HASH_SEED as usize] as u32);
    let vips: HashMap<MapData, VipKey, VipMeta> = HashMap::try_from(Map::HashMap(open(MAP_VIPS))).unwrap();
    let (vip_key, vip) = vips.iter().filter_map(Result::ok).find(|(k, _)| k.port == web().port()).expect("web in VIPS");
    let conns: HashMap<MapData, FlowKey, Flow> = HashMap::try_from(Map::LruHashMap(open(MAP_CONNS))).unwrap();
    let moved: Array<MapData, u64> = Array::try_from(Map::Array(open(MAP_MOVED))).unwrap();
    let ring: Array<MapData, u64> = Array::try_from(Map::Array(open(MAP_RING))).unwrap();
    let backends: Array<MapData, Backend> = Array::try_from(Map::Array(open(MAP_BACKENDS))).unwrap();
    let mut census = Census::default();
    for (key, flow) in conns.iter().filter_map(Result::ok).filter(|(k, _)| k.dst == vip_key.addr && k.dport == vip_key.port) {
        let slot = vip_hash(vip.flags, &key, seed, flow_hash(&key, seed, false)) % ring_size;
        let (word, bit) = moved_bit(vip.id, ring_size, slot);
        if moved.get(&word, 0).unwrap() & bit != 0 {
            census.moved += 1;
            continue;
        }
        let index = ring_index(vip.id, vip.ring_half, ring_size, slot);
        let live = ring_id_in(ring.get(&(index / RING_IDS_PER_ELEMENT), 0).unwrap(), index);
        let backend = backends.get(&flow.backend_id, 0).unwrap();
        let ended = !lb_userspace::dataplane::table_walk::is_live(&flow, lb_userspace::dataplane::table_walk::now_secs());
        if ended || flow.backend_id == live || !flow.kept_by(&backend) {
            census.idle += 1;
        } else {
            census.divergent.push(format!("{key:?} slot {slot}: entry backend {} (live ring {live})", flow.backend_id));
        }
    }
    census
}

/// The `stateless` event's count.
fn stateless(agent: &Agent) -> u64 {
    let stats = agent.json(&["stats"]).unwrap();
    stats["reasons"].as_array().into_iter().flatten().find(|r| r[0] == "stateless").and_then(|r| r[1].as_u64()).unwrap_or(0)
}

fn run_ok(agent: &Agent, args: &[&str]) {
    let out = agent.cli(args);
    assert!(out.status.success(), "lb {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Every session still answered by the backend that answered it first; the broken ones.
fn broken(sessions: &[(HttpSession, String)]) -> Vec<String> {
    sessions
        .iter()
        .enumerate()
        .filter_map(|(i, (s, owner))| match s.get("/") {
            Ok((200, body)) if body == *owner => None,
            other => Some(format!("session {i} ({owner}): {other:?}")),
        })
        .collect()
}

#[test]
fn long_lived_connections_survive_five_rounds_of_backend_changes() {
    raise_open_files();
    let mut lab = Lab::create(4, env!("CARGO_BIN_EXE_lb-test-backend").as_ref()).expect("lab");
    for k in 0..4 {
        lab.start_backend(k).expect("backend");
    }
    let agent = Agent::start(&lab, CONFIG).expect("agent");
    agent.wait_status(Duration::from_secs(15), |s| all_in_state(s, "web", "up")).expect("every backend passes its health checks");
    // The backends coming up one by one were ring changes too: their retention ends first.
    agent
        .wait_status(Duration::from_secs(RETENTION_SECS + 10), |s| web_status(s)["moved_slots"] == 0)
        .expect("the start's moved slots cleared after the retention");

    let opened = Instant::now();
    let sessions: Vec<(HttpSession, String)> = (0..SESSIONS)
        .map(|i| {
            let s = HttpSession::open(&lab.client_ns, web(), Duration::from_secs(3)).unwrap_or_else(|e| panic!("session {i}: {e:#}"));
            let (_, owner) = s.get("/").unwrap_or_else(|e| panic!("session {i}: {e}"));
            (s, owner)
        })
        .collect();
    println!("{SESSIONS} long-lived connections opened in {:.1} s", opened.elapsed().as_secs_f64());
    let status = agent.json(&["status"]).unwrap();
    assert_eq!(status["connection_table"]["entries"], 0, "stable backends: no entry for {SESSIONS} connections");
    assert_eq!(web_status(&status)["moved_slots"], 0);

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(lab.client_ns.clone(), stop.clone());
    // Windows in which new connections to the fourth backend may fail: from its kill to the
    // agent marking it down, and around its removal.
    let mut undetected: Vec<(Instant, Instant)> = Vec::new();
    let mut events: Vec<(&str, Instant)> = Vec::new();
    let wait = Duration::from_secs(15);
    let mut in_moved_slots = 0;
    for cycle in 0..CYCLES {
        events.push(("add", Instant::now()));
        run_ok(&agent, &["backend", "add", "web", FOURTH]);
        agent.wait_status(wait, |s| fourth_in(s, "up")).unwrap_or_else(|e| panic!("cycle {cycle}: the fourth backend comes up: {e:#}"));
        let status = agent.json(&["status"]).unwrap();
        assert!(web_status(&status)["moved_slots"].as_u64().unwrap() > 0, "cycle {cycle}: adding a backend moves slots");
        assert!(web_status(&status)["retained_ring_seconds"].is_u64(), "cycle {cycle}: a ring is retained");
        thread::sleep(Duration::from_millis(300));
        let c = census(&agent);
        assert!(c.divergent.is_empty(), "cycle {cycle}: entries outside moved slots that disagree with the live ring: {:?}", &c.divergent[..c.divergent.len().min(5)]);
        in_moved_slots += c.moved;

        let killed = Instant::now();
        lab.kill_backend(3);
        agent.wait_status(wait, |s| fourth_in(s, "down")).unwrap_or_else(|e| panic!("cycle {cycle}: the killed backend is detected: {e:#}"));
        undetected.push((killed, Instant::now()));
        thread::sleep(Duration::from_millis(300));

        events.push(("restart", Instant::now()));
        lab.start_backend(3).expect("restarting the fourth backend");
        agent.wait_status(wait, |s| fourth_in(s, "up")).unwrap_or_else(|e| panic!("cycle {cycle}: the fourth backend recovers: {e:#}"));
        thread::sleep(Duration::from_millis(300));

        let removing = Instant::now();
        events.push(("remove", removing));
        run_ok(&agent, &["backend", "remove", "web", FOURTH]);
        // A connection in flight on the removed backend (its SYN sent there before the removal)
        // is given another backend, as a removed backend's flows are, and reset by it.
        undetected.push((removing - Duration::from_secs(2), Instant::now()));
        agent
            .wait_status(wait, |s| backends(s, "web").len() == 3)
            .unwrap_or_else(|e| panic!("cycle {cycle}: the fourth backend is removed: {e:#}"));
        let lost = broken(&sessions[cycle * 100..cycle * 100 + 100]);
        assert!(lost.is_empty(), "cycle {cycle}: {lost:?}");
    }
    stop.store(true, Ordering::SeqCst);
    let log = load.join().expect("load thread");

    let lost = broken(&sessions);
    let failed_outside: Vec<String> = log
        .iter()
        .filter(|(at, r)| r.is_err() && !undetected.iter().any(|(from, to)| *at + Duration::from_millis(600) >= *from && *at <= *to))
        .map(|(at, r)| format!("{:.3} s: {r:?}; events {:?}", at.duration_since(log[0].0).as_secs_f64(), events.iter().map(|(what, t)| format!("{what} {:.3}", t.duration_since(log[0].0).as_secs_f64())).collect::<Vec<_>>()))
        .collect();
    let failed = log.iter().filter(|(_, r)| r.is_err()).count();
    let status = agent.json(&["status"]).unwrap();
    let entries = status["connection_table"]["entries"].as_u64().unwrap();
    let moved = web_status(&status)["moved_slots"].as_u64().unwrap();
    println!(
        "{CYCLES} cycles: {} new connections, {failed} failed ({} outside the detection windows); {} of {SESSIONS} long-lived connections broken; {entries} entries, {moved} moved slots",
        log.len(),
        failed_outside.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "long-lived connections broken: {lost:?}");
    assert!(log.len() > 500, "the load made only {} connections", log.len());
    assert!(failed_outside.is_empty(), "new connections failed after health detection: at {failed_outside:?}");

    // The table holds only flows of moved slots (and entries left where the walk cleared a
    // slot, which agree with the live ring and are never read).
    // Read after each addition (while slots were moved and the load ran) and here.
    let c = census(&agent);
    println!(
        "connection table: {in_moved_slots} entries in moved slots after the additions; at the end {} in moved slots, {} idle outside them, {} divergent outside them",
        c.moved,
        c.idle,
        c.divergent.len()
    );
    assert!(in_moved_slots > 0, "the changes recorded flows in moved slots");
    assert!(c.divergent.is_empty(), "entries outside moved slots that disagree with the live ring: {:?}", &c.divergent[..c.divergent.len().min(5)]);
    let mut tracked = 0;
    for (i, (s, _)) in sessions.iter().enumerate().step_by(10) {
        let told = agent.json(&["explain", &s.local_addr().to_string(), &web().to_string(), "tcp"]).unwrap();
        if told["tracked"] == true {
            tracked += 1;
            assert_eq!(told["path"], "moved slot", "session {i}: tracked but {told}");
        }
    }
    println!("{tracked} of {} sampled sessions tracked, all in moved slots", SESSIONS / 10);

    // After the retention and a table walk, no flow differs from the live ring (the ring is
    // the first one again): every slot is clear, and the packets are stateless again.
    let cleared = agent
        .wait_status(Duration::from_secs(RETENTION_SECS + 10), |s| {
            web_status(s)["moved_slots"] == 0 && web_status(s)["retained_ring_seconds"].is_null()
        })
        .expect("every moved slot cleared after the retention");
    println!("moved slots cleared; {} entries left", cleared["connection_table"]["entries"]);
    let before = stateless(&agent);
    let lost = broken(&sessions);
    assert!(lost.is_empty(), "after the retention: {lost:?}");
    let after = stateless(&agent);
    assert!(after - before >= SESSIONS as u64, "every session's packets are stateless again: {} of {SESSIONS}", after - before);
}
