//! End to end, what the agent does to the host (README: "Running on a real host"):
//! - one agent per instance: a second `lb run` of the instance, under load and with a
//!   configuration that lacks a VIP, exits at once saying who runs the instance, and changes
//!   nothing (no request fails on any VIP, the first agent's program and VIPs stay);
//! - host state owned and reconciled: the agent records the VIP addresses and announcement
//!   routes it adds; after a restart with a VIP removed from the file, that VIP's address and
//!   route are gone; an address someone else put on the interface is never taken over or
//!   removed; an addition the kernel refuses is retried until it succeeds and is reported as
//!   pending meanwhile; `lb teardown` refuses while another process holds the instance and
//!   otherwise leaves no address, route, program, pin or runtime directory.
//!
//! Real agent, real backends, driver-mode XDP on veths, in network namespaces. Needs root.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Agent, all_in_state, in_netns, lab_with_agent, lb_binary},
    lab_config::{LabConfig, Vip},
    topology::{LB_CLIENT_IFACE, Lab, http_get, in_namespace},
};
use serde_json::Value;

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Where instances keep their runtime directory (`lb_userspace::instance::RUN_ROOT`).
const RUN_ROOT: &str = "/run/lb";
/// The announcement table of [`config`].
const TABLE: &str = "100";
/// Bounds every client loop.
const LOAD_LIMIT: Duration = Duration::from_secs(60);

fn backend_bin() -> &'static Path {
    env!("CARGO_BIN_EXE_lb-test-backend").as_ref()
}

/// VIPs `web` (10.0.0.10:80 on b1 and b2) and `other` (10.0.0.20:80 on b3), announced in
/// [`TABLE`]; with `six`, also `six` ([fd00::10]:80 on b3's IPv6 address).
fn config(with_other: bool, six: bool) -> String {
    let mut c = LabConfig::new()
        .global(&format!("announce_table: {TABLE}"))
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080"]));
    if with_other {
        c = c.vip(Vip::tcp("other", "10.0.0.20", 80).backends(&["10.0.13.2:8080"]));
    }
    if six {
        c = c.vip(Vip::tcp("six", "fd00::10", 80).backends(&["fd00:13::2:8080"]));
    }
    c.render()
}

/// The lab with its three backends' servers running, and no agent yet.
fn lab_with_servers() -> Lab {
    let mut lab = Lab::create(3, backend_bin()).expect("lab");
    for k in 0..3 {
        lab.start_backend(k).expect("backend");
    }
    lab
}

/// `ip -o addr show dev lbc` in the load balancer's namespace.
fn addresses(lab: &Lab) -> String {
    String::from_utf8_lossy(&lab.ns_run(&lab.lb_ns, &["ip", "-o", "addr", "show", "dev", LB_CLIENT_IFACE]).expect("ip addr").stdout).into_owned()
}

/// The routes of [`TABLE`] (both families) in the load balancer's namespace (none when the
/// table was never made).
fn routes(lab: &Lab) -> String {
    let mut out = String::new();
    for family in ["-4", "-6"] {
        let o = lb_tests::topology::in_ns(&lab.lb_ns, &["ip", family, "route", "show", "table", TABLE]).output().expect("ip route");
        out += &String::from_utf8_lossy(&o.stdout);
    }
    out
}

fn has_address(lab: &Lab, addr: &str) -> bool {
    addresses(lab).split_whitespace().any(|w| w.split('/').next() == Some(addr))
}

fn has_route(lab: &Lab, addr: &str) -> bool {
    routes(lab).lines().any(|l| l.split_whitespace().next() == Some(addr))
}

/// The XDP program ids attached to the load balancer's interfaces.
fn attached_programs(lab: &Lab) -> Vec<String> {
    let out = lab.ns_run(&lab.lb_ns, &["ip", "-o", "link", "show"]).expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("prog/xdp id ").nth(1).map(|r| r.split_whitespace().next().unwrap_or("").to_owned()))
        .collect()
}

/// Waits (at most `limit`) until `pred` holds.
fn wait_for(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn host(status: &Value, key: &str) -> Vec<String> {
    status["host"][key].as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or("").to_owned()).collect()
}

/// New-connection requests to every VIP of `vips` in turn until stopped (at most
/// [`LOAD_LIMIT`]); counts what succeeded and failed per VIP.
struct Load {
    stop: Arc<AtomicBool>,
    client: thread::JoinHandle<Vec<(u32, u32, Vec<String>)>>,
}

impl Load {
    fn start(lab: &Lab, vips: Vec<SocketAddr>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ns = lab.client_ns.clone();
        let flag = stop.clone();
        let client = thread::spawn(move || {
            in_namespace(&ns, move || {
                let mut tally = vec![(0u32, 0u32, Vec::new()); vips.len()];
                let started = Instant::now();
                while !flag.load(Ordering::SeqCst) && started.elapsed() < LOAD_LIMIT {
                    for (i, vip) in vips.iter().enumerate() {
                        match http_get(*vip, "/", Duration::from_secs(2)) {
                            Ok((200, _)) => tally[i].0 += 1,
                            other => {
                                tally[i].1 += 1;
                                if tally[i].2.len() < 3 {
                                    tally[i].2.push(format!("{other:?}"));
                                }
                            }
                        }
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                tally
            })
            .expect("client namespace")
        });
        Load { stop, client }
    }

    fn finish(self) -> Vec<(u32, u32, Vec<String>)> {
        self.stop.store(true, Ordering::SeqCst);
        self.client.join().expect("client thread")
    }
}

#[test]
fn a_second_agent_of_the_instance_exits_at_once_and_changes_nothing() {
    lb_tests::harness::require_root();
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, agent) = lab_with_agent(backend_bin(), 3, &config(true, false), "web").expect("lab");
    agent.wait_status(Duration::from_secs(15), |s| all_in_state(s, "other", "up")).expect("other up");
    let before = agent.json(&["status"]).expect("status");
    let vips: Vec<SocketAddr> = vec!["10.0.0.10:80".parse().unwrap(), "10.0.0.20:80".parse().unwrap()];
    let load = Load::start(&lab, vips);
    thread::sleep(Duration::from_secs(1));

    // The same instance, another admin socket, and VIP `other` missing.
    let dir = std::env::temp_dir().join(format!("{}-second", lab.lb_ns));
    std::fs::create_dir_all(&dir).unwrap();
    let second_socket = dir.join("second.sock");
    let second_config = dir.join("second.yaml");
    let yaml = config(false, false)
        .replace("{socket}", &second_socket.display().to_string())
        .replacen("global:\n", &format!("global:\n  instance: {}\n", lab.lb_ns), 1);
    std::fs::write(&second_config, yaml).unwrap();
    let started = Instant::now();
    let mut second = in_netns(&lab.lb_ns, &[&lb_binary().display().to_string(), "run", "--config", &second_config.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second lb run");
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(second.try_wait(), Ok(None)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let exited = second.try_wait().expect("wait").is_some();
    if !exited {
        let _ = second.kill();
    }
    let out = second.wait_with_output().expect("second agent's output");
    let took = started.elapsed();
    thread::sleep(Duration::from_secs(2));
    let tally = load.finish();
    let _ = std::fs::remove_dir_all(&dir);

    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("second agent: exited with {} after {took:?}: {}", out.status, stderr.trim());
    assert!(exited, "the second agent was still running after 10 s");
    assert!(!out.status.success(), "the second agent exited with success");
    let pid = agent.pid().expect("first agent's pid");
    assert!(stderr.contains(&format!("already run by process {pid}")), "the message does not name the holder: {stderr}");
    assert!(stderr.contains(&agent.socket.display().to_string()), "the message does not name the holder's socket: {stderr}");
    assert!(!second_socket.exists(), "the second agent bound its admin socket");
    for ((ok, failed, errors), vip) in tally.iter().zip(["web", "other"]) {
        println!("{vip}: {ok} requests succeeded, {failed} failed {errors:?}");
        assert!(*ok > 20, "too few requests to {vip}: {ok}");
        assert_eq!(*failed, 0, "requests to {vip} failed while a second agent started: {errors:?}");
    }
    let after = agent.json(&["status"]).expect("status");
    assert_eq!(after["data_path"]["program_id"], before["data_path"]["program_id"], "the running program was replaced");
    let names = |s: &Value| s["vips"].as_array().unwrap().iter().map(|v| v["name"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before));
    assert!(agent.cli(&["check"]).status.success(), "the first agent's lb check fails: {}", String::from_utf8_lossy(&agent.cli(&["check"]).stdout));
    assert!(has_address(&lab, "10.0.0.20"), "the second agent removed VIP other's address");
    drop(agent);
}

#[test]
fn host_state_is_recorded_reconciled_after_a_restart_and_torn_down() {
    lb_tests::harness::require_root();
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab_with_servers();
    // An operator's address on the interface, the same as VIP web's: not the agent's.
    lab.ns_run(&lab.lb_ns, &["ip", "addr", "add", "10.0.0.10/32", "dev", LB_CLIENT_IFACE]).unwrap();
    // IPv6 is off on the interface: adding VIP six's address fails until it is back on.
    lab.ns_run(&lab.lb_ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{LB_CLIENT_IFACE}.disable_ipv6=1")]).unwrap();
    let mut agent = Agent::start(&lab, &config(true, true)).expect("agent");
    let runtime_dir = Path::new(RUN_ROOT).join(&lab.lb_ns);

    let status = agent
        .wait_status(Duration::from_secs(15), |s| {
            host(s, "owned").iter().any(|i| i == "route 10.0.0.20/32 dev lo table 100 proto 250")
                && host(s, "owned").iter().any(|i| i == "route 10.0.0.10/32 dev lo table 100 proto 250")
                && !s["host"]["pending"].as_array().is_none_or(Vec::is_empty)
        })
        .expect("routes announced and the IPv6 address pending");
    println!("host state: {:#}", status["host"]);
    assert!(host(&status, "owned").contains(&"address 10.0.0.20/32 on lbc".to_owned()));
    assert_eq!(host(&status, "foreign"), vec!["address 10.0.0.10/32 on lbc".to_owned()], "the operator's address is not reported as foreign");
    assert!(!host(&status, "owned").iter().any(|i| i.starts_with("address 10.0.0.10/")), "the agent took the operator's address");
    let pending = &status["host"]["pending"][0];
    assert_eq!(pending["item"], "address fd00::10/128 on lbc");
    assert_eq!(pending["action"], "add");
    assert!(!has_address(&lab, "fd00::10"));
    let record: Value = serde_json::from_str(&std::fs::read_to_string(runtime_dir.join("host-state.json")).expect("the record")).unwrap();
    let recorded: Vec<String> = record["items"].as_array().unwrap().iter().map(|i| format!("{} {}", i["kind"].as_str().unwrap(), i["address"].as_str().unwrap())).collect();
    assert!(recorded.contains(&"address 10.0.0.20".to_owned()), "{recorded:?}");
    assert!(!recorded.contains(&"address 10.0.0.10".to_owned()), "the operator's address is recorded as the agent's: {recorded:?}");

    // IPv6 back on: the retry adds the address.
    lab.ns_run(&lab.lb_ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{LB_CLIENT_IFACE}.disable_ipv6=0")]).unwrap();
    let retried = Instant::now();
    agent
        .wait_status(Duration::from_secs(40), |s| host(s, "owned").contains(&"address fd00::10/128 on lbc".to_owned()))
        .expect("the IPv6 address added on a retry");
    println!("IPv6 address added {:?} after the interface took addresses again", retried.elapsed());
    assert!(has_address(&lab, "fd00::10"));

    // Stopped, VIP `other` and `six` removed from the file, started again.
    agent.stop(libc::SIGTERM);
    assert!(has_address(&lab, "10.0.0.20") && has_route(&lab, "10.0.0.20"), "a stopping agent keeps what it added");
    agent.rewrite_config(&config(false, false)).unwrap();
    agent.spawn().expect("restart");
    wait_for(Duration::from_secs(10), "removal of VIP other's address and route", || {
        !has_address(&lab, "10.0.0.20") && !has_route(&lab, "10.0.0.20") && !has_address(&lab, "fd00::10")
    });
    wait_for(Duration::from_secs(10), "VIP web announced again", || has_route(&lab, "10.0.0.10"));
    assert!(has_address(&lab, "10.0.0.10"), "the operator's address was removed");
    agent.stop(libc::SIGTERM);

    // Another process holds the instance: teardown refuses and removes nothing.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(runtime_dir.join("agent.lock"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1)");
    thread::sleep(Duration::from_millis(300));
    let refused = agent.teardown();
    let _ = holder.kill();
    let _ = holder.wait();
    let message = String::from_utf8_lossy(&refused.stderr);
    println!("teardown while held: {}", message.trim());
    assert!(!refused.status.success(), "teardown went ahead while another process held the instance");
    assert!(message.contains("Nothing was removed"), "{message}");
    assert!(agent.pin_dir.exists() && has_route(&lab, "10.0.0.10"), "a refused teardown removed something");

    let out = agent.teardown();
    println!("teardown: {}", String::from_utf8_lossy(&out.stdout).trim());
    assert!(out.status.success(), "teardown failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(routes(&lab).trim(), "", "announcement routes left behind");
    assert!(!has_address(&lab, "10.0.0.20") && !has_address(&lab, "fd00::10"), "VIP addresses left behind: {}", addresses(&lab));
    assert!(has_address(&lab, "10.0.0.10"), "teardown removed the operator's address");
    assert!(attached_programs(&lab).is_empty(), "XDP programs left attached: {:?}", attached_programs(&lab));
    assert!(!agent.pin_dir.exists(), "pins left behind");
    assert!(!runtime_dir.exists(), "the runtime directory was left behind");
    drop(agent);
}

#[test]
fn a_first_start_that_fails_takes_back_what_it_added() {
    // The admin socket's path holds a regular file: the agent refuses it after it has pinned
    // the data path, attached the program and started adding the VIP addresses. A first start
    // that fails leaves nothing behind.
    lb_tests::harness::require_root();
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab_with_servers();
    let socket = std::env::temp_dir().join(format!("{}-not-a-socket", lab.lb_ns));
    std::fs::write(&socket, "an operator's file").unwrap();
    let yaml = config(true, false).replace("\"{socket}\"", &format!("\"{}\"", socket.display()));
    let (agent, status) = lb_tests::agent::Agent::start_expecting_exit(&lab, &yaml, Duration::from_secs(20)).expect("the agent exits");
    let log = agent.log();
    assert!(!status.success(), "the agent started: {log}");
    assert!(log.contains("removing what this failed first start added"), "{log}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "an operator's file", "the file at the socket path was touched");
    assert!(!agent.pin_dir.exists(), "pins left behind");
    assert!(!Path::new(RUN_ROOT).join(&lab.lb_ns).exists(), "the runtime directory was left behind");
    assert!(!has_address(&lab, "10.0.0.10") && !has_address(&lab, "10.0.0.20"), "VIP addresses left behind: {}", addresses(&lab));
    assert_eq!(routes(&lab).trim(), "", "routes left behind");
    assert!(attached_programs(&lab).is_empty(), "XDP programs left attached: {:?}", attached_programs(&lab));
    let _ = std::fs::remove_file(&socket);
    drop(agent);
}
