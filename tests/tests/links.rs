//! End to end, interfaces as they really are (README: "Interfaces"): an interface the program
//! runs on is deleted and created again (another index, no program), as a driver reload or a
//! reconfigured host does. The running agent sees the link change, attaches the program again,
//! says so (`lb status`, log), and the backend behind it is served through the program again.
//! Real agent, real backends, driver-mode XDP on veths. Needs root.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{all_in_state, lab_with_agent},
    lab_config::{LabConfig, Vip},
    topology::{Lab, http_get, in_namespace},
};

fn backend_bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_lb-test-backend").as_ref()
}

/// Deletes backend 3's link (`lbb3` ─ `eth0`) and makes it again as the lab makes it.
fn recreate_backend_link(lab: &Lab) {
    let (lb, b3) = (lab.lb_ns.as_str(), lab.backends[2].ns.as_str());
    let run = |ns: &str, args: &[&str]| lab.ns_run(ns, args).unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
    run(lb, &["ip", "link", "del", "lbb3"]);
    run(lb, &["ip", "link", "add", "lbb3", "numtxqueues", "2", "numrxqueues", "2", "type", "veth", "peer", "name", "eth0", "netns", b3, "numtxqueues", "2", "numrxqueues", "2"]);
    run(lb, &["ip", "addr", "add", "10.0.13.1/24", "dev", "lbb3"]);
    run(lb, &["ip", "addr", "add", "fd00:13::1/64", "dev", "lbb3", "nodad"]);
    run(lb, &["ip", "link", "set", "lbb3", "up"]);
    run(lb, &["ethtool", "-K", "lbb3", "tx", "off"]);
    run(b3, &["ip", "addr", "add", "10.0.13.2/24", "dev", "eth0"]);
    run(b3, &["ip", "addr", "add", "fd00:13::2/64", "dev", "eth0", "nodad"]);
    run(b3, &["ip", "link", "set", "eth0", "up"]);
    run(b3, &["ethtool", "-K", "eth0", "gro", "on", "tx", "off"]);
    run(b3, &["ip", "route", "add", "default", "via", "10.0.13.1"]);
    run(b3, &["ip", "-6", "route", "add", "default", "via", "fd00:13::1"]);
}

/// Which backends answered `n` new connections to the VIP.
fn spread(lab: &Lab, n: usize) -> BTreeMap<String, usize> {
    in_namespace(&lab.client_ns, move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let who = match http_get("10.0.0.10:80".parse().unwrap(), "/", Duration::from_secs(2)) {
                Ok((200, body)) => body,
                other => format!("failed: {other:?}"),
            };
            *seen.entry(who).or_insert(0) += 1;
        }
        seen
    })
    .expect("client namespace")
}

#[test]
fn a_re_created_interface_gets_the_program_again() {
    lb_tests::harness::require_root();
    let config = LabConfig::new().vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"])).render();
    let (lab, agent) = lab_with_agent(backend_bin(), 3, &config, "web").expect("lab");
    let before = spread(&lab, 60);
    assert_eq!(before.keys().cloned().collect::<Vec<_>>(), ["b1", "b2", "b3"], "{before:?}");
    let old_index = lab.ns_run(&lab.lb_ns, &["cat", "/sys/class/net/lbb3/ifindex"]).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());

    recreate_backend_link(&lab);
    let recreated = Instant::now();
    let status = agent
        .wait_status(Duration::from_secs(10), |s| s["data_path"]["links_reattached"].as_u64().unwrap_or(0) >= 1)
        .expect("the program attached again");
    let took = recreated.elapsed();
    let link = String::from_utf8_lossy(&lab.ns_run(&lab.lb_ns, &["ip", "-o", "link", "show", "lbb3"]).unwrap().stdout).into_owned();
    println!("re-attached within {took:?} (lbb3 was index {old_index:?}): {}", link.trim());
    assert!(link.contains("prog/xdp"), "lbb3 runs no XDP program: {link}");
    assert!(agent.log().contains("XDP program attached again"), "no log line");
    assert_eq!(status["data_path"]["links_reattached"], 1);
    // b3 comes back (its checks failed while its link was gone) and is served through the
    // program: its answers are translated back to the VIP.
    agent.wait_status(Duration::from_secs(15), |s| all_in_state(s, "web", "up")).expect("b3 up again");
    let after = spread(&lab, 60);
    println!("before: {before:?}, after: {after:?}");
    assert!(after.get("b3").is_some_and(|&n| n > 0), "b3 is not served after its link came back: {after:?}");
    assert!(after.keys().all(|k| !k.starts_with("failed")), "requests failed: {after:?}");
    let human = String::from_utf8(agent.cli(&["check"]).stdout).unwrap();
    assert!(agent.cli(&["check"]).status.success(), "lb check fails after the re-attach: {human}");
    drop(agent);
}
