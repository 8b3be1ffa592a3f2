//! A recorded series of snapshots the tests of `lb top` share.

use serde_json::{Value, json};

use super::model::Snapshot;

/// A recorded series: three snapshots one second apart (the second window 0.5 s), two VIPs,
/// three backends, one backend going down in the third snapshot.
pub fn series() -> Vec<Snapshot> {
    let vip = |name: &str, addr: &str, pkts: u64, bytes: u64, flows: u64, backends: Value| {
        json!({"name": name, "address": addr, "port": 80, "protocol": "tcp", "scheduler": "maglev",
               "ring_backends": 2, "announced": false, "announce_reason": "announce_table not set",
               "traffic": {"packets": pkts, "bytes": bytes, "new_flows": flows, "packets_per_second": 0.0},
               "backends": backends})
    };
    let backend = |id: u32, addr: &str, state: &str, health: &str, conns: u64, pkts: u64, bytes: u64, flows: u64| {
        json!({"id": id, "address": addr, "port": 8080, "weight": 1, "admin": "up", "health": health, "state": state,
               "active_connections": conns, "next_hop": null,
               "traffic": {"packets": pkts, "bytes": bytes, "new_flows": flows, "packets_per_second": 0.0}})
    };
    let status = |uptime: u64, web: [(u64, u64, u64); 2], b2_state: &str, api: (u64, u64, u64)| {
        let (w1, w2) = (web[0], web[1]);
        json!({"config_file": "/etc/lb/lb.yaml", "interfaces": [["eth0", "driver"]], "uptime_seconds": uptime,
               "data_path": {"pin_dir": "/sys/fs/bpf/lb/default", "adopted": false, "layout": 3, "program_hash": "abc",
                             "program_id": 7, "program_tag": "t", "agent_version": "0.1.0"},
               "vips": [
                   vip("api", "10.0.0.11", api.0, api.1, api.2,
                       json!([backend(3, "10.1.0.3", "up", "up", 2, api.0, api.1, api.2)])),
                   vip("web", "10.0.0.10", w1.0 + w2.0, w1.1 + w2.1, w1.2 + w2.2,
                       json!([backend(1, "10.1.0.1", "up", "up", 40, w1.0, w1.1, w1.2),
                              backend(2, "10.1.0.2", b2_state, b2_state, 10, w2.0, w2.1, w2.2)])),
               ]})
    };
    let stats = |fwd: u64, reply: u64, no_backend: u64, martian: u64, probes: u64, entries: u64, swap: Option<f64>| {
        json!({"reasons": [["forward_to_backend", fwd], ["reply_to_client", reply], ["pass_not_vip", 5],
                           ["drop_no_backend", no_backend], ["drop_martian", martian]],
               "health": {"probes": probes, "failures": 0, "transitions": 0, "swaps": 0,
                          "last_probe_to_swap_ms": swap, "max_probe_to_swap_ms": swap, "last_table_write_ms": 0.2},
               "connection_entries": entries})
    };
    let snap = |at: f64, status: Value, stats: Value| Snapshot::from_values(at, 1_767_225_600 + at as u64, &status, &stats).unwrap();
    vec![
        snap(10.0, status(100, [(1_000, 100_000, 10), (500, 50_000, 5)], "up", (10, 1_000, 1)), stats(1_000, 505, 0, 0, 20, 57, None)),
        // +1 s: web b1 +3000 pkt 375 kB (3 Mbit/s) 30 flows; b2 +1000 pkt 125 kB 10 flows; api +1 pkt.
        snap(
            11.0,
            status(101, [(4_000, 475_000, 40), (1_500, 175_000, 15)], "up", (11, 1_100, 1)),
            stats(3_001, 2_505, 0, 0, 30, 1_500, Some(9.5)),
        ),
        // +0.5 s: b2 down (no packets); b1 +1500 pkt; drops 100 no_backend, 2 martian.
        snap(
            11.5,
            status(101, [(5_500, 662_500, 60), (1_500, 175_000, 15)], "down", (11, 1_100, 1)),
            stats(3_751, 3_255, 100, 2, 35, 1_480, Some(12.25)),
        ),
    ]
}
