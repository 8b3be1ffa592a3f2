//! Human output of the read commands, with units (see [`super::units`]).

use serde_json::Value;

use super::{
    Command,
    table::{Align, table_aligned},
    top::{StatsRates, connection_capacity},
    units,
};
use crate::api::{ExplainReport, StatsReport, StatusReport};

/// Renders the answer to `command` for a person; falls back to pretty JSON.
pub fn human(command: &Command, value: &Value) -> String {
    let rendered = match command {
        Command::Status => serde_json::from_value(value.clone()).ok().map(status),
        Command::Stats { .. } => serde_json::from_value(value.clone()).ok().map(|s| stats_report(&s, connection_capacity(value))),
        Command::Explain { .. } => serde_json::from_value(value.clone()).ok().map(explain),
        _ => None,
    };
    rendered.unwrap_or_else(|| serde_json::to_string_pretty(value).unwrap_or_default() + "\n")
}

/// "1 flow", "12 flows", "1.2k flows".
fn counted(n: u64, singular: &str) -> String {
    units::plural(n, singular)
}

fn status(s: StatusReport) -> String {
    let ifaces: Vec<String> = s.interfaces.iter().map(|(i, m)| format!("{i} ({m})")).collect();
    let mut out = format!("config {}  up {}  interfaces {}\n", s.config_file, units::uptime(s.uptime_seconds), ifaces.join(", "));
    let d = &s.data_path;
    out += &format!(
        "data path {} ({})  program id {} tag {} build {} (lb {})  layout {}\n",
        d.pin_dir,
        if d.adopted { "adopted from an earlier agent" } else { "created by this agent" },
        d.program_id,
        d.program_tag,
        d.program_hash,
        d.agent_version,
        d.layout
    );
    out += &host(&s.host);
    out += &connection_table_cpus(&s.connection_table);
    if let Some(sync) = &s.flow_sync {
        out += &flow_sync(sync);
    }
    for v in &s.vips {
        // What the data path's ring holds, and what of it takes new flows (state up and a
        // weight): a ring of weight-0 backends takes none.
        let taking = v.backends.iter().filter(|b| b.state == "up" && b.weight > 0).count() as u64;
        out += &format!(
            "\nVIP {} {}/{}  scheduler {}{}{}  {} in the ring, {taking} taking new flows  {}  {}  {}{}\n  {}\n",
            v.name,
            std::net::SocketAddr::new(v.address, v.port),
            v.protocol,
            v.scheduler,
            if v.forwarding == "nat" { String::new() } else { format!("  forwarding {} (direct server return)", v.forwarding) },
            ring_history(v),
            counted(v.ring_backends.into(), "backend"),
            units::pps(v.traffic.packets_per_second),
            counted(v.traffic.new_flows, "flow"),
            units::bytes(v.traffic.bytes),
            if v.traffic.dropped > 0 { format!("  {} dropped (no backend)", units::count(v.traffic.dropped)) } else { String::new() },
            v.announce_reason
        );
        let rows: Vec<Vec<String>> = v
            .backends
            .iter()
            .map(|b| {
                vec![
                    format!("{}", std::net::SocketAddr::new(b.address, b.port)),
                    b.state.clone(),
                    b.health.clone(),
                    b.admin.clone(),
                    b.weight.to_string(),
                    units::count(b.active_connections),
                    units::pps(b.traffic.packets_per_second),
                    units::count(b.traffic.new_flows),
                    units::bytes(b.traffic.bytes),
                ]
            })
            .collect();
        let align = [Align::Left, Align::Left, Align::Left, Align::Left, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right];
        out += &table_aligned(&["BACKEND", "STATE", "HEALTH", "ADMIN", "WEIGHT", "CONNS", "RATE", "FLOWS", "BYTES"], &align, &rows);
        for b in &v.backends {
            if let Some(probe) = &b.probe {
                out += &format!(
                    "  {}: probe: {probe}; latest: {}\n",
                    std::net::SocketAddr::new(b.address, b.port),
                    b.last_probe.as_deref().unwrap_or("-")
                );
            }
        }
        for b in v.backends.iter().filter(|b| b.probe_local_errors > 0) {
            out += &format!(
                "  {}: {} failed on the agent's side, not counted against it; latest probe: {}\n",
                std::net::SocketAddr::new(b.address, b.port),
                counted(b.probe_local_errors, "probe"),
                b.last_probe.as_deref().unwrap_or("-")
            );
        }
    }
    out
}

/// The connection table's line: entries, and the capacity with the fill when known.
fn connection_table(entries: u64, capacity: Option<u64>) -> String {
    let e = units::plural_with(entries, "entry", "entries");
    match capacity {
        Some(c) if c > 0 => format!("connection table: {e} of {} ({} full)\n", units::count(c), units::percent(entries as f64 / c as f64)),
        _ => format!("connection table: {e}\n"),
    }
}

/// `lb stats`: packets per reason, health figures, the connection table.
pub fn stats_report(s: &StatsReport, capacity: Option<u64>) -> String {
    let rows: Vec<Vec<String>> = s.reasons.iter().map(|(r, n)| vec![r.clone(), units::count(*n)]).collect();
    let mut out = table_aligned(&["REASON", "PACKETS"], &[Align::Left, Align::Right], &rows);
    let h = &s.health;
    out += &format!(
        "\nhealth: {}, {} failed, {} failed on the agent's side, {}, {}\nprobe to swapped ring: last {}, max {}\nlast ring write: {}\n",
        counted(h.probes, "probe"),
        units::count(h.failures),
        units::count(h.local_errors),
        counted(h.transitions, "transition"),
        counted(h.swaps, "ring swap"),
        units::millis_or_dash(h.last_probe_to_swap_ms),
        units::millis_or_dash(h.max_probe_to_swap_ms),
        units::millis_or_dash(h.last_table_write_ms)
    );
    out + &connection_table(s.connection_entries, capacity)
}

/// `lb stats --rate`: the same figures per second.
pub fn stats_rates(r: &StatsRates) -> String {
    let rows: Vec<Vec<String>> = r.reasons_per_second.iter().map(|(n, v)| vec![n.clone(), units::per_second(*v)]).collect();
    let mut out = table_aligned(&["REASON", "PER SECOND"], &[Align::Left, Align::Right], &rows);
    let h = &r.health_per_second;
    out += &format!(
        "\nover {}: drops {}\nhealth: probes {}, failed {}, transitions {}, ring swaps {}\nprobe to swapped ring: last {}\n",
        units::millis(r.interval_seconds * 1000.0),
        units::pps(r.drops_per_second),
        units::per_second(h.probes),
        units::per_second(h.failures),
        units::per_second(h.transitions),
        units::per_second(h.swaps),
        units::millis_or_dash(r.last_probe_to_swap_ms)
    );
    out + &connection_table(r.connection_entries, r.connection_capacity)
}

/// A Maglev VIP's moved slots and retained ring, when it has either.
fn ring_history(v: &crate::api::VipStatus) -> String {
    match v.retained_ring_seconds {
        Some(secs) => format!("  {} moved, ring retained {secs}s more", counted(v.moved_slots.into(), "slot")),
        None if v.moved_slots > 0 => format!("  {} moved", counted(v.moved_slots.into(), "slot")),
        None => String::new(),
    }
}

fn explain(e: ExplainReport) -> String {
    let mut out = format!("verdict: {}\n", e.verdict);
    if let Some(v) = &e.vip {
        out += &format!("vip:     {v}\n");
    }
    if let Some(b) = e.backend {
        out += &format!("backend: {b}\n");
    }
    if let Some(how) = &e.encapsulation {
        out += &format!("carried: {how}\n");
    }
    if let (Some(h), Some(s)) = (e.hash, e.slot) {
        out += &format!("hash:    {h:#010x} (slot {s})\n");
    }
    if let Some(path) = &e.path {
        out += &format!("path:    {path}\n");
    }
    out += &format!("tracked: {}\nwhy:     {}\n", e.tracked, e.reason);
    out
}

/// The connection table's fill per CPU (each CPU evicts from its own share); nothing before
/// the first count.
fn connection_table_cpus(t: &crate::api::ConnTableStatus) -> String {
    if t.capacity == 0 || t.per_cpu.is_empty() {
        return String::new();
    }
    let share = t.per_cpu_capacity.max(1) as f64;
    let cpus: Vec<String> = t.per_cpu.iter().enumerate().map(|(i, n)| format!("cpu{i} {} ({})", units::count(*n), units::percent(*n as f64 / share))).collect();
    format!(
        "connection table {} of {}, {} per CPU: {}\n",
        units::count(t.entries),
        units::count(t.capacity),
        units::count(t.per_cpu_capacity),
        cpus.join(", ")
    )
}

/// Flow sync's counters: what was sent, what was received and what became of it.
fn flow_sync(f: &crate::api::FlowSyncStatus) -> String {
    let rejected: Vec<String> = f.rejected.iter().filter(|(_, n)| *n > 0).map(|(why, n)| format!("{why} {}", units::count(*n))).collect();
    format!(
        "flow sync: sent {} (send errors {}, unsendable {}, dropped at the ring buffer {})  received {}: inserted {}, existing {}  rejected {}\n",
        units::count(f.sent),
        units::count(f.send_errors),
        units::count(f.unsendable),
        units::count(f.ring_dropped),
        units::count(f.received),
        units::count(f.inserted),
        units::count(f.existing),
        if rejected.is_empty() { "none".to_owned() } else { rejected.join(", ") }
    )
}

/// What the agent owns on the host, a line per kind; nothing when it owns and wants nothing.
fn host(h: &crate::api::HostStatus) -> String {
    let mut out = String::new();
    if !h.owned.is_empty() {
        out += &format!("host: added by the agent {}\n", h.owned.join(", "));
    }
    for p in &h.pending {
        out += &format!(
            "host: cannot {} {} ({}; {}, next try in {})\n",
            p.action,
            p.item,
            p.error,
            counted(p.failures.into(), "failure"),
            units::millis(p.retry_in_ms as f64)
        );
    }
    if !h.foreign.is_empty() {
        out += &format!("host: already there, not the agent's (left alone) {}\n", h.foreign.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status_json(ring: u32, weights: &[u32], flows: u64) -> Value {
        let backends: Vec<Value> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                json!({"id": i + 1, "address": format!("10.1.0.{}", i + 1), "port": 8080, "weight": w, "admin": "up",
                       "health": "up", "state": "up", "active_connections": 1_234, "next_hop": null,
                       "traffic": {"packets": 10, "bytes": 1_536, "new_flows": 1, "packets_per_second": 2_500.0}})
            })
            .collect();
        json!({"config_file": "/etc/lb/lb.yaml", "interfaces": [["eth0", "driver"]], "uptime_seconds": 3_725,
               "data_path": {"pin_dir": "/sys/fs/bpf/lb/default", "adopted": true, "layout": 3, "program_hash": "abc",
                             "program_id": 7, "program_tag": "t", "agent_version": "0.1.0"},
               "vips": [{"name": "web", "address": "10.0.0.10", "port": 80, "protocol": "tcp", "scheduler": "maglev",
                         "ring_backends": ring, "announced": false, "announce_reason": "announce_table not set",
                         "traffic": {"packets": 10, "bytes": 2_000_000, "new_flows": flows, "packets_per_second": 1_234_567.0},
                         "backends": backends}]})
    }

    #[test]
    fn status_with_units_and_plurals() {
        let out = human(&Command::Status, &status_json(1, &[0], 1));
        assert_eq!(
            out,
            "config /etc/lb/lb.yaml  up 1 h 02 min  interfaces eth0 (driver)
data path /sys/fs/bpf/lb/default (adopted from an earlier agent)  program id 7 tag t build abc (lb 0.1.0)  layout 3

VIP web 10.0.0.10:80/tcp  scheduler maglev  1 backend in the ring, 0 taking new flows  1.2M pkt/s  1 flow  1.9 MiB
  announce_table not set
BACKEND        STATE  HEALTH  ADMIN  WEIGHT  CONNS        RATE  FLOWS    BYTES
10.1.0.1:8080  up     up      up          0   1.2k  2.5k pkt/s      1  1.5 KiB
"
        );
        let out = human(&Command::Status, &status_json(2, &[1, 3], 12_345));
        assert!(out.contains("  2 backends in the ring, 2 taking new flows  1.2M pkt/s  12.3k flows  1.9 MiB\n"), "{out}");
        let mut v6 = status_json(1, &[1], 0);
        v6["vips"][0]["address"] = json!("fd00::10");
        assert!(human(&Command::Status, &v6).contains("\nVIP web [fd00::10]:80/tcp  scheduler"));
        let mut gue = status_json(1, &[1], 0);
        gue["vips"][0]["forwarding"] = json!("gue");
        assert!(human(&Command::Status, &gue).contains("\nVIP web 10.0.0.10:80/tcp  scheduler maglev  forwarding gue (direct server return)  1 backend"));
    }

    #[test]
    fn status_shows_each_cpus_share_of_the_connection_table() {
        let mut s = status_json(1, &[1], 0);
        s["connection_table"] = json!({"entries": 70_000, "capacity": 262_144, "per_cpu_capacity": 131_072, "per_cpu": [65_536, 4_464]});
        let out = human(&Command::Status, &s);
        assert!(out.contains("layout 3\nconnection table 70.0k of 262.1k, 131.1k per CPU: cpu0 65.5k (50.0%), cpu1 4.5k (3.4%)\n"), "{out}");
        assert!(!human(&Command::Status, &status_json(1, &[1], 0)).contains("connection table"), "no line before the first count");
    }

    #[test]
    fn status_shows_flow_sync_counters_when_it_is_on() {
        let mut s = status_json(1, &[1], 0);
        assert!(!human(&Command::Status, &s).contains("flow sync"));
        s["flow_sync"] = json!({"sent": 12, "send_errors": 0, "unsendable": 1, "ring_dropped": 0, "received": 7, "inserted": 6,
                                "existing": 1, "rejected": [["malformed", 0], ["bad_mac", 3], ["stale", 0], ["unknown_vip", 0], ["unknown_backend", 0]]});
        let out = human(&Command::Status, &s);
        assert!(
            out.contains("flow sync: sent 12 (send errors 0, unsendable 1, dropped at the ring buffer 0)  received 7: inserted 6, existing 1  rejected bad_mac 3\n"),
            "{out}"
        );
    }

    #[test]
    fn status_lists_what_the_agent_owns_on_the_host() {
        let mut s = status_json(1, &[1], 0);
        s["host"] = json!({"record": "/run/lb/default/host-state.json",
                           "owned": ["address 10.0.0.10/32 on eth0", "route 10.0.0.10/32 dev lo table 100 proto 250"],
                           "pending": [{"item": "address fd00::10/128 on eth0", "action": "add", "error": "no interface eth0",
                                        "failures": 3, "retry_in_ms": 2000}],
                           "foreign": ["address 10.0.0.11/32 on eth0"]});
        let out = human(&Command::Status, &s);
        assert!(
            out.contains(
                "layout 3\nhost: added by the agent address 10.0.0.10/32 on eth0, route 10.0.0.10/32 dev lo table 100 proto 250\n\
                 host: cannot add address fd00::10/128 on eth0 (no interface eth0; 3 failures, next try in 2.00 s)\n\
                 host: already there, not the agent's (left alone) address 10.0.0.11/32 on eth0\n\nVIP web"
            ),
            "{out}"
        );
    }

    #[test]
    fn status_says_how_the_backends_of_a_dsr_vip_are_probed() {
        let mut s = status_json(2, &[1, 1], 0);
        let plain = human(&Command::Status, &s);
        assert!(!plain.contains("probe:"), "nothing for NAT VIPs: {plain}");
        s["vips"][0]["backends"][0]["probe"] = json!("tcp via tunnel to VIP 10.0.0.10:80");
        s["vips"][0]["backends"][0]["last_probe"] = json!("TCP handshake with VIP 10.0.0.10:80 via tunnel");
        s["vips"][0]["backends"][1]["probe"] = json!("tcp to address 10.1.0.2:8080 (plain: does not show the VIP is served)");
        let out = human(&Command::Status, &s);
        assert!(
            out.ends_with(
                "  10.1.0.1:8080: probe: tcp via tunnel to VIP 10.0.0.10:80; latest: TCP handshake with VIP 10.0.0.10:80 via tunnel\n  \
                 10.1.0.2:8080: probe: tcp to address 10.1.0.2:8080 (plain: does not show the VIP is served); latest: -\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn status_shows_probes_that_failed_on_the_agents_side() {
        let mut s = status_json(2, &[1, 1], 0);
        s["vips"][0]["backends"][1]["probe_local_errors"] = json!(3);
        s["vips"][0]["backends"][1]["last_probe"] = json!("agent could not probe: connect: network is unreachable");
        s["vips"][0]["backends"][0]["last_probe"] = json!("HTTP 200");
        let out = human(&Command::Status, &s);
        assert!(
            out.ends_with("  10.1.0.2:8080: 3 probes failed on the agent's side, not counted against it; latest probe: agent could not probe: connect: network is unreachable\n"),
            "{out}"
        );
        assert!(!out.contains("10.1.0.1:8080: "), "{out}");
    }

    #[test]
    fn stats_with_units_and_capacity() {
        let stats = json!({"reasons": [["forward_to_backend", 1_023_370], ["drop_no_backend", 0]],
                           "health": {"probes": 1, "failures": 0, "transitions": 2, "swaps": 1,
                                      "last_probe_to_swap_ms": 9.5, "max_probe_to_swap_ms": 1_500.0, "last_table_write_ms": 0.25},
                           "connection_entries": 1});
        let out = human(&Command::Stats { watch: false, rate: false, count: None }, &stats);
        assert_eq!(
            out,
            "REASON              PACKETS
forward_to_backend     1.0M
drop_no_backend           0

health: 1 probe, 0 failed, 0 failed on the agent's side, 2 transitions, 1 ring swap
probe to swapped ring: last 9.5 ms, max 1.50 s
last ring write: 0.25 ms
connection table: 1 entry
"
        );
        let mut with_capacity = stats.clone();
        with_capacity["connection_entries"] = json!(250_000);
        with_capacity["connection_capacity"] = json!(1_000_000);
        let out = human(&Command::Stats { watch: false, rate: false, count: None }, &with_capacity);
        assert!(out.ends_with("connection table: 250.0k entries of 1.0M (25.0% full)\n"), "{out}");
    }

    #[test]
    fn stats_rates_with_units() {
        let r = StatsRates {
            unix_time: 0,
            interval_seconds: 0.998,
            reasons_per_second: vec![("forward_to_backend".into(), 12_345.6), ("drop_no_backend".into(), 2.5)],
            drops_per_second: 2.5,
            health_per_second: crate::cli::top::HealthRates { probes: 12.0, failures: 0.0, transitions: 0.0, swaps: 0.0 },
            connection_entries: 1_092,
            connection_capacity: Some(65_536),
            last_probe_to_swap_ms: Some(17.887),
        };
        assert_eq!(
            stats_rates(&r),
            "REASON              PER SECOND
forward_to_backend     12.3k/s
drop_no_backend          2.5/s

over 998.0 ms: drops 2.5 pkt/s
health: probes 12/s, failed 0/s, transitions 0/s, ring swaps 0/s
probe to swapped ring: last 17.9 ms
connection table: 1.1k entries of 65.5k (1.7% full)
"
        );
    }
}
