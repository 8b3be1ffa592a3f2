//! End to end, egress only where XDP can send (README: "Running on a real host"): a client
//! whose route from the load balancer leaves by an interface the program does not run on (a
//! veth whose peer has no NAPI, as a management NIC or a bond would be) is still served. The
//! data path rewrites the replies and hands them to the kernel, which forwards them, instead
//! of redirecting them where they would be dropped unseen; each is counted as
//! `pass_not_xdp_egress`. A backend behind such an interface is refused by `lb config check`
//! and `lb reload`: its replies would never pass the program. Real agent, real backends, driver-mode XDP on veths. Needs root.

use std::{process::Stdio, time::Duration};

use lb_tests::{
    agent::{in_netns, lab_with_agent, lb_binary},
    lab_config::{LabConfig, Vip},
    topology::in_ns,
};

fn backend_bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_lb-test-backend").as_ref()
}

/// `pass_not_xdp_egress` in `lb stats`.
fn passed_to_kernel(stats: &serde_json::Value) -> u64 {
    stats["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r[0] == "pass_not_xdp_egress")
        .and_then(|r| r[1].as_u64())
        .expect("pass_not_xdp_egress in lb stats")
}

#[test]
fn replies_routed_through_an_interface_without_the_program_go_through_the_kernel() {
    lb_tests::harness::require_root();
    let config = LabConfig::new().vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"])).render();
    let (lab, agent) = lab_with_agent(backend_bin(), 3, &config, "web").expect("lab");
    // A second link between the client and the load balancer that the program does not run
    // on, with no NAPI on the client's end (no GRO, no XDP): a frame redirected there would be
    // dropped. The client's second address is reached only through it.
    let (lb, client) = (lab.lb_ns.clone(), lab.client_ns.clone());
    lab.ns_run(&lb, &["ip", "link", "add", "lbm", "type", "veth", "peer", "name", "cm", "netns", &client]).unwrap();
    lab.ns_run(&lb, &["ip", "addr", "add", "10.0.9.1/24", "dev", "lbm"]).unwrap();
    lab.ns_run(&lb, &["ip", "link", "set", "lbm", "up"]).unwrap();
    lab.ns_run(&client, &["ip", "addr", "add", "10.0.9.2/24", "dev", "cm"]).unwrap();
    lab.ns_run(&client, &["ip", "link", "set", "cm", "up"]).unwrap();
    lab.ns_run(&client, &["ethtool", "-K", "cm", "gro", "off"]).unwrap();
    // The kernel forwards a packet whose source (the VIP) is its own address only with
    // accept_local on the interface it arrived on (the backends' side).
    lab.ns_run(&lb, &["sysctl", "-qw", "net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.all.rp_filter=0"]).unwrap();
    for b in &lab.backends {
        lab.ns_run(&lb, &["sysctl", "-qw", &format!("net.ipv4.conf.{}.accept_local=1", b.lb_iface), &format!("net.ipv4.conf.{}.rp_filter=0", b.lb_iface)])
            .unwrap();
    }
    lab.ns_run(&lb, &["ping", "-c", "1", "-W", "2", "10.0.9.2"]).unwrap();

    let before = passed_to_kernel(&agent.json(&["stats"]).unwrap());
    let mut served = Vec::new();
    for _ in 0..20 {
        // From the second address: requests go out by c0 as before, replies come back by cm.
        let out = in_ns(&client, &["curl", "-s", "-m", "3", "--interface", "10.0.9.2", "http://10.0.0.10/"])
            .stderr(Stdio::null())
            .output()
            .expect("curl");
        served.push(if out.status.success() { String::from_utf8_lossy(&out.stdout).trim().to_owned() } else { format!("failed: {}", out.status) });
    }
    let passed = passed_to_kernel(&agent.json(&["stats"]).unwrap()) - before;
    println!("answers: {served:?}; {passed} replies handed to the kernel (pass_not_xdp_egress)");
    assert!(served.iter().all(|s| ["b1", "b2", "b3"].contains(&s.as_str())), "requests failed: {served:?}");
    assert!(passed >= 20 * 2, "replies were not counted as handed to the kernel: {passed}");
    // The client's usual address is still answered by XDP alone.
    let out = in_ns(&client, &["curl", "-s", "-m", "3", "http://10.0.0.10/"]).output().expect("curl");
    assert!(out.status.success());

    // A backend behind that interface: its replies would never reach the program to be
    // translated, so `lb config check` (on this host) and `lb reload` refuse it.
    let with_hidden_backend = LabConfig::new()
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"]))
        .vip(Vip::tcp("mgmt", "10.0.0.30", 80).backends(&["10.0.9.2:8080"]))
        .render();
    agent.rewrite_config(&with_hidden_backend).unwrap();
    let config = agent.config.display().to_string();
    let check = in_netns(&lb, &[&lb_binary().display().to_string(), "config", "check", &config]).output().expect("lb config check");
    let message = String::from_utf8_lossy(&check.stderr);
    println!("lb config check: {}", message.trim());
    assert!(!check.status.success(), "config check passed a backend behind lbm");
    assert!(message.contains("VIP mgmt: backend 10.0.9.2:8080: its route leaves by lbm, which the XDP program does not run on"), "{message}");
    let reload = agent.cli(&["reload"]);
    let message = String::from_utf8_lossy(&reload.stderr);
    assert!(!reload.status.success() && message.contains("its route leaves by lbm"), "reload: {message}");
    let status = agent.json(&["status"]).unwrap();
    assert_eq!(status["vips"].as_array().unwrap().len(), 1, "the refused reload changed the VIPs");
    std::thread::sleep(Duration::from_millis(100));
    drop(agent);
}

#[test]
fn frames_a_redirect_target_cannot_take_are_counted() {
    // A peer that cannot take redirected frames: b2's end of its link loses NAPI (GRO off, no
    // XDP program). The data path redirects the flows it gives b2 to lbb2 all the same (it runs
    // the program there), and the kernel refuses them after the program returned: only the
    // `xdp` tracepoints see that, and the agent counts it.
    lb_tests::harness::require_root();
    let config = LabConfig::new().vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"])).render();
    let (lab, agent) = lab_with_agent(backend_bin(), 3, &config, "web").expect("lab");
    lab.ns_run(&lab.backends[1].ns, &["ethtool", "-K", "eth0", "gro", "off"]).unwrap();
    let before = agent.json(&["stats"]).unwrap()["redirect_drops"].as_u64().expect("redirect_drops in lb stats");
    let mut failed = 0;
    for _ in 0..20 {
        let out = in_ns(&lab.client_ns, &["curl", "-s", "-m", "1", "http://10.0.0.10/"]).stderr(Stdio::null()).output().expect("curl");
        failed += usize::from(!out.status.success());
    }
    let drops = agent.json(&["stats"]).unwrap()["redirect_drops"].as_u64().unwrap() - before;
    println!("{failed} of 20 requests failed; {drops} frames dropped after a redirect");
    assert!(failed > 0, "no flow went to b2: the test shows nothing");
    assert!(drops > 0, "the drops after the redirect were not counted");
    drop(agent);
}
