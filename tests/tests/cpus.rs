//! End to end, the connection table on several CPUs (README: "Running on a real host"): the
//! table keeps one LRU list per CPU, so `lb status` shows each CPU's share and fill. Clients
//! pinned to each CPU open flows through a multi-queue veth; every entry is counted on the CPU
//! that created it, and the counts add up to the table's. Real agent, driver-mode XDP on
//! veths. Needs root and at least two CPUs.

use std::time::Duration;

use lb_tests::{
    agent::lab_with_agent,
    lab_config::{LabConfig, Vip},
    topology::in_ns,
};

fn backend_bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_lb-test-backend").as_ref()
}

/// Requests per CPU.
const REQUESTS: u64 = 12;

#[test]
fn each_cpu_counts_the_flows_it_created_in_its_share_of_the_table() {
    lb_tests::harness::require_root();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(cpus >= 2, "this test needs two CPUs, the machine has {cpus}");
    // Round-robin: every flow has an entry (a Maglev VIP with stable backends keeps none).
    let config = LabConfig::new()
        .vip(Vip::tcp("web", "10.0.0.10", 80).scheduler("round-robin").backends(&["10.0.11.2:8080", "10.0.12.2:8080"]))
        .render();
    let (lab, agent) = lab_with_agent(backend_bin(), 3, &config, "web").expect("lab");
    for cpu in [0, 1] {
        for _ in 0..REQUESTS {
            // A new connection each: a new entry, created on the CPU the client sends from
            // (a veth's receive runs on the sender's CPU).
            let out = in_ns(&lab.client_ns, &["taskset", "-c", &cpu.to_string(), "curl", "-s", "-m", "3", "http://10.0.0.10/"])
                .output()
                .expect("curl");
            assert!(out.status.success(), "a request from CPU {cpu} failed");
        }
    }
    let status = agent
        .wait_status(Duration::from_secs(5), |s| s["connection_table"]["entries"].as_u64().unwrap_or(0) >= 2 * REQUESTS)
        .expect("the table counted");
    let table = &status["connection_table"];
    println!("connection table: {table}");
    let per_cpu: Vec<u64> = table["per_cpu"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert!(per_cpu.len() >= cpus, "one count per possible CPU: {per_cpu:?}");
    assert!(per_cpu[0] >= REQUESTS && per_cpu[1] >= REQUESTS, "flows from both CPUs are counted on each: {per_cpu:?}");
    assert_eq!(per_cpu.iter().sum::<u64>(), table["entries"].as_u64().unwrap(), "the per-CPU counts add up to the table's");
    let capacity = table["capacity"].as_u64().unwrap();
    assert_eq!(table["per_cpu_capacity"].as_u64().unwrap(), capacity / per_cpu.len() as u64, "each CPU's share");
    let human = String::from_utf8(agent.cli(&["status"]).stdout).unwrap();
    assert!(human.contains(" per CPU: cpu0 "), "{human}");
    drop(agent);
}
