//! End to end, the data path outlives its agent (README: "Stopping, restarting and
//! upgrading"): under steady load (keep-alive clients and a new connection per request, both at
//! once), the agent is killed with SIGKILL and started 5 s later, stopped and started as systemd
//! restarts it, and replaced by an agent running a different build of the program (the
//! `upgrade-probe` build, one counter more); no request may fail and every keep-alive connection
//! must keep its backend. Then: a backend that dies while the agent is dead is taken out soon
//! after the agent is back; a data path of another layout is refused and left as it was;
//! `lb teardown` leaves nothing behind. Real agent, real backends, driver-mode XDP on veths,
//! all in network namespaces. Needs root. The tests take turns (one lab at a time) and print
//! their figures; run them with `--nocapture` to see them.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuArray};
use lb_common::maps::{MAP_REASONS, UPGRADE_PROBE_SLOT};
use lb_tests::{
    agent::{Agent, all_in_state, backends, in_netns, lab_with_agent},
    lab_config::{LabConfig, Vip},
    topology::{HttpSession, Lab, http_get, in_namespace},
};
use serde_json::Value;

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The `upgrade-probe` build of the program (`tests/build.rs`).
const NEXT_PROGRAM: &str = concat!(env!("OUT_DIR"), "/lb-xdp");

/// The agent's configuration: VIP web on the three backends, the lab's fast HTTP checks
/// ([`Vip`]), 65536 connections.
fn config() -> String {
    LabConfig::new()
        .conn_capacity(65536)
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"]))
        .render()
}

/// `fall × interval` of the health check in [`config`].
const FALL_TIME: Duration = Duration::from_millis(2 * 200);
const KEEPALIVE_CLIENTS: usize = 6;
const NEW_CONNECTION_CLIENTS: usize = 2;
/// Bounds every client loop.
const LOAD_LIMIT: Duration = Duration::from_secs(90);

fn web() -> SocketAddr {
    "10.0.0.10:80".parse().unwrap()
}

fn backend_bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_lb-test-backend").as_ref()
}

/// Requests that succeeded and failed in each phase of the test.
#[derive(Debug, Default, Clone)]
struct Tally {
    ok: [u32; PHASES.len()],
    failed: [u32; PHASES.len()],
    errors: Vec<String>,
}

impl Tally {
    fn record(&mut self, phase: usize, result: Result<(), String>) {
        match result {
            Ok(()) => self.ok[phase] += 1,
            Err(e) => {
                self.failed[phase] += 1;
                if self.errors.len() < 5 {
                    self.errors.push(format!("{}: {e}", PHASES[phase]));
                }
            }
        }
    }

    fn add(&mut self, other: &Tally) {
        for (mine, theirs) in self.ok.iter_mut().zip(other.ok) {
            *mine += theirs;
        }
        for (mine, theirs) in self.failed.iter_mut().zip(other.failed) {
            *mine += theirs;
        }
        self.errors.extend(other.errors.iter().take(5 - self.errors.len().min(5)).cloned());
    }
}

const PHASES: [&str; 5] = ["steady", "SIGKILL + 5 s + start", "SIGTERM + 1 s + start", "upgrade to another build", "after"];

/// Keep-alive and new-connection clients through the VIP until `stop` (at most [`LOAD_LIMIT`]).
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    clients: Vec<thread::JoinHandle<Tally>>,
}

impl Load {
    fn start(lab: &Lab) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU8::new(0));
        let mut clients = Vec::new();
        for _ in 0..KEEPALIVE_CLIENTS {
            let session = HttpSession::open(&lab.client_ns, web(), Duration::from_secs(5)).expect("connect");
            let (status, owner) = session.get("/").expect("first request");
            assert_eq!(status, 200);
            let (stop, phase) = (stop.clone(), phase.clone());
            clients.push(thread::spawn(move || {
                let mut tally = Tally::default();
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < LOAD_LIMIT {
                    let p = phase.load(Ordering::SeqCst) as usize;
                    let result = match session.get("/") {
                        Ok((200, body)) if body == owner => Ok(()),
                        other => Err(format!("keep-alive (backend {owner}): {other:?}")),
                    };
                    tally.record(p, result);
                    thread::sleep(Duration::from_millis(20));
                }
                tally
            }));
        }
        for _ in 0..NEW_CONNECTION_CLIENTS {
            let (stop, phase, ns) = (stop.clone(), phase.clone(), lab.client_ns.clone());
            clients.push(thread::spawn(move || {
                in_namespace(&ns, move || {
                    let mut tally = Tally::default();
                    let started = Instant::now();
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < LOAD_LIMIT {
                        let p = phase.load(Ordering::SeqCst) as usize;
                        let result = match http_get(web(), "/", Duration::from_secs(2)) {
                            Ok((200, _)) => Ok(()),
                            other => Err(format!("new connection: {other:?}")),
                        };
                        tally.record(p, result);
                        thread::sleep(Duration::from_millis(10));
                    }
                    tally
                })
                .expect("client namespace")
            }));
        }
        Load { stop, phase, clients }
    }

    fn phase(&self, p: usize) {
        self.phase.store(p as u8, Ordering::SeqCst);
    }

    fn finish(mut self) -> (Tally, Tally) {
        self.stop.store(true, Ordering::SeqCst);
        let mut keepalive = Tally::default();
        let mut fresh = Tally::default();
        for (i, c) in std::mem::take(&mut self.clients).into_iter().enumerate() {
            let t = c.join().expect("client thread");
            if i < KEEPALIVE_CLIENTS { keepalive.add(&t) } else { fresh.add(&t) }
        }
        (keepalive, fresh)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The XDP program id on `iface` in the load balancer's namespace (`None`: nothing attached).
fn attached_program(lab: &Lab, iface: &str) -> Option<u64> {
    let out = in_netns(&lab.lb_ns, &["ip", "-j", "-d", "link", "show", "dev", iface]).output().ok()?;
    let links: Value = serde_json::from_slice(&out.stdout).ok()?;
    links[0]["xdp"]["prog"]["id"].as_u64()
}

fn vip_addresses(lab: &Lab) -> String {
    let out = in_netns(&lab.lb_ns, &["ip", "-o", "addr", "show", "to", "10.0.0.10"]).output().expect("ip addr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packets counted in `REASONS` slot `slot` of the pinned data path, over all CPUs.
fn pinned_counter(agent: &Agent, slot: u32) -> u64 {
    let map = MapData::from_pin(agent.pin_dir.join("maps").join(MAP_REASONS)).expect("pinned REASONS");
    let reasons: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(map)).expect("per-CPU array");
    reasons.get(&slot, 0).expect("slot").iter().sum()
}

fn forwarded(agent: &Agent) -> u64 {
    let stats = agent.json(&["stats"]).expect("stats");
    stats["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r[0] == "forward_to_backend")
        .and_then(|r| r[1].as_u64())
        .unwrap_or_else(|| panic!("no forward_to_backend in {stats:#}"))
}

fn status(agent: &Agent) -> Value {
    agent.json(&["status"]).expect("status")
}

/// Kill -9 and a start 5 s later, a clean stop and start as systemd's `Restart=always` with
/// `RestartSec=1` does it, and an upgrade to another build of the program, all under load:
/// no request fails, the keep-alive connections keep their backends, the counters and the
/// connection table carry on. Then `lb teardown` removes the program, the pins and the VIP
/// address.
#[test]
fn restarts_and_an_upgrade_fail_no_request() {
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (lab, mut agent) = lab_with_agent(backend_bin(), 3, &config(), "web").expect("a lab whose backends pass their checks");
    let first = status(&agent);
    assert_eq!(first["data_path"]["adopted"], false, "{first:#}");
    let program = attached_program(&lab, "lbc").expect("a program on lbc");

    let load = Load::start(&lab);
    thread::sleep(Duration::from_secs(1));

    // SIGKILL: the program and the VIP address stay; traffic goes on while no agent runs.
    load.phase(1);
    let before_kill = forwarded(&agent);
    agent.stop(libc::SIGKILL);
    let dead_from = pinned_counter(&agent, 0);
    thread::sleep(Duration::from_secs(5));
    assert_eq!(attached_program(&lab, "lbc"), Some(program), "the program stayed attached");
    assert!(vip_addresses(&lab).contains("10.0.0.10"), "the VIP address stayed");
    let forwarded_while_dead = pinned_counter(&agent, 0) - dead_from;
    agent.spawn().expect("restart after SIGKILL");
    let adopted = status(&agent);
    assert_eq!(adopted["data_path"]["adopted"], true, "{adopted:#}");
    assert!(all_in_state(&adopted, "web", "up"), "health was adopted: {adopted:#}");
    assert!(forwarded(&agent) >= before_kill, "the counters carried on");
    thread::sleep(Duration::from_secs(2));

    // SIGTERM, then a start a second later.
    load.phase(2);
    agent.stop(libc::SIGTERM);
    thread::sleep(Duration::from_secs(1));
    assert!(attached_program(&lab, "lbc").is_some(), "a clean stop does not detach");
    agent.spawn().expect("restart after SIGTERM");
    thread::sleep(Duration::from_secs(2));

    // Upgrade: an agent with another build replaces the program on the same links.
    load.phase(3);
    let old_build = status(&agent)["data_path"].clone();
    let probe_before = pinned_counter(&agent, UPGRADE_PROBE_SLOT);
    agent.stop(libc::SIGTERM);
    agent.spawn_with(&["--program", NEXT_PROGRAM]).expect("start with the upgrade-probe build");
    let new_build = status(&agent)["data_path"].clone();
    thread::sleep(Duration::from_secs(2));
    let probe_after = pinned_counter(&agent, UPGRADE_PROBE_SLOT);

    load.phase(4);
    thread::sleep(Duration::from_secs(1));
    let conns = agent.json(&["stats"]).expect("stats")["connection_entries"].clone();
    let (keepalive, fresh) = load.finish();

    eprintln!(
        "requests per phase {PHASES:?}:\n  keep-alive ok {:?} failed {:?}\n  new connection ok {:?} failed {:?}\n  \
         {forwarded_while_dead} packets forwarded while no agent ran; program {} ({}) replaced by {} ({}); \
         upgrade-probe counter {probe_before} -> {probe_after}; connection table {conns}",
        keepalive.ok, keepalive.failed, fresh.ok, fresh.failed, old_build["program_id"], old_build["program_hash"],
        new_build["program_id"], new_build["program_hash"],
    );
    assert!(forwarded_while_dead > 0, "the data path forwarded while the agent was dead");
    for (p, name) in PHASES.iter().enumerate().skip(1) {
        assert!(keepalive.ok[p] > 0 && fresh.ok[p] > 0, "traffic in phase {name}");
    }
    assert_eq!(keepalive.failed.iter().sum::<u32>(), 0, "keep-alive failures: {:?}", keepalive.errors);
    assert_eq!(fresh.failed.iter().sum::<u32>(), 0, "new-connection failures: {:?}", fresh.errors);
    assert_ne!(new_build["program_hash"], old_build["program_hash"], "another build runs");
    assert_ne!(new_build["program_id"], old_build["program_id"]);
    assert_eq!(attached_program(&lab, "lbc"), new_build["program_id"].as_u64(), "on the same link");
    assert_eq!(probe_before, 0, "the default build never counts in the probe slot");
    assert!(probe_after > 0, "the upgrade-probe build counts every packet");

    // Teardown removes everything, and the agent with it.
    let out = agent.teardown();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for iface in ["lbc", "lbb1", "lbb2", "lbb3"] {
        assert_eq!(attached_program(&lab, iface), None, "{iface} still has a program");
    }
    assert!(!agent.pin_dir.exists(), "{} is left", agent.pin_dir.display());
    assert_eq!(vip_addresses(&lab), "", "the VIP address is left");
    assert!(http_get_from(&lab, web()).is_err(), "the VIP no longer answers");
    agent.stop(libc::SIGTERM);
}

fn http_get_from(lab: &Lab, addr: SocketAddr) -> Result<(u16, String), String> {
    in_namespace(&lab.client_ns, move || http_get(addr, "/", Duration::from_secs(1)).map_err(|e| e.to_string()))
        .map_err(|e| e.to_string())?
}

/// A backend killed while no agent runs is taken out within `fall × interval + 1 s` of the
/// agent's start, and gets no new connection after that. A configuration of other sizes is
/// then refused without touching the pinned data path.
#[test]
fn a_backend_that_died_with_the_agent_down_is_taken_out_and_a_mismatch_is_refused() {
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (mut lab, mut agent) = lab_with_agent(backend_bin(), 3, &config(), "web").expect("a lab whose backends pass their checks");
    agent.stop(libc::SIGKILL);
    lab.kill_backend(0);
    thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    agent.spawn().expect("restart");
    let down = agent
        .wait_status(Duration::from_secs(10), |s| {
            backends(s, "web").iter().any(|b| b["address"] == "10.0.11.2" && b["state"] == "down")
        })
        .expect("the dead backend is taken out");
    let taken_out = started.elapsed();
    let new_flows = |s: &Value| {
        backends(s, "web").iter().find(|b| b["address"] == "10.0.11.2").and_then(|b| b["traffic"]["new_flows"].as_u64())
    };
    let before = new_flows(&down);
    let answers: Vec<String> = in_namespace(&lab.client_ns, || {
        (0..60).map(|_| http_get(web(), "/", Duration::from_secs(2)).map_or_else(|e| e.to_string(), |(_, b)| b)).collect()
    })
    .expect("client namespace");
    let after = new_flows(&status(&agent));
    eprintln!("backend killed while the agent was dead: down {taken_out:?} after the agent's start; 60 requests answered by {answers:?}");
    assert!(taken_out <= FALL_TIME + Duration::from_secs(1), "took {taken_out:?}");
    assert!(answers.iter().all(|a| a == "b2" || a == "b3"), "{answers:?}");
    assert_eq!(before, after, "new flows reached the dead backend");

    // Another conn_capacity: refused, and the pinned data path is the same afterwards.
    agent.stop(libc::SIGTERM);
    let program = attached_program(&lab, "lbc").expect("still attached");
    let original = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(&agent.config, original.replace("conn_capacity: 65536", "conn_capacity: 131072")).expect("config");
    let refused = agent.spawn();
    let message = format!("{refused:?}");
    assert!(refused.is_err() && message.contains("does not match") && message.contains("CONNS"), "{message}");
    assert_eq!(attached_program(&lab, "lbc"), Some(program), "the refusal changed the program");
    std::fs::write(&agent.config, original).expect("config");
    agent.stop(libc::SIGKILL);
    agent.spawn().expect("the original configuration is adopted");
    let s = status(&agent);
    assert_eq!(s["data_path"]["adopted"], true, "{s:#}");
}

#[test]
fn the_labs_pin_root_is_the_agents() {
    assert_eq!(lb_tests::topology::BPFFS_ROOT, lb_userspace::dataplane::pins::BPFFS_ROOT);
}

/// Removes a test's pinned data path also when the test fails.
struct RemovePins(lb_userspace::dataplane::Pins);

impl Drop for RemovePins {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

/// Pinned maps of another layout version are refused before anything is loaded or written;
/// maps of this one are adopted.
#[test]
fn another_layout_version_is_refused_and_left_alone() {
    use aya::maps::Array;
    use lb_common::maps::{LAYOUT_VERSION, MAP_META, META_LAYOUT};
    use lb_userspace::dataplane::{Dataplane, PROGRAM, Pins, Sizing};

    let sizing = Sizing { conn_capacity: 1024, half_open_capacity: 1024, ..Sizing::default() };
    let pins = RemovePins(Pins::of_instance(&format!("test-layout-{}", std::process::id())));
    let (dp, adopted) = Dataplane::open(&sizing, &pins.0, None, PROGRAM).expect("a new data path");
    assert!(!adopted);
    drop(dp);
    let meta = || -> Array<MapData, u64> {
        Array::try_from(Map::Array(MapData::from_pin(pins.0.map(MAP_META)).expect("META"))).expect("array")
    };
    assert_eq!(meta().get(&META_LAYOUT, 0).unwrap(), LAYOUT_VERSION);
    let (dp, adopted) = Dataplane::open(&sizing, &pins.0, None, PROGRAM).expect("the same layout is adopted");
    assert!(adopted);
    drop(dp);

    meta().set(META_LAYOUT, LAYOUT_VERSION + 98, 0).unwrap();
    let refused = Dataplane::open(&sizing, &pins.0, None, PROGRAM).map(|_| ()).expect_err("another layout");
    let message = format!("{refused:#}");
    assert!(message.contains(&format!("layout version is {}", LAYOUT_VERSION + 98)) && message.contains("lb teardown"), "{message}");
    assert_eq!(meta().get(&META_LAYOUT, 0).unwrap(), LAYOUT_VERSION + 98, "the refusal wrote nothing");
}
