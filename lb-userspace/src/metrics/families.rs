//! What the agent exports: its status and counters read into metric families at scrape time.
//! The Grafana dashboard (examples/grafana) queries these names.

use std::net::SocketAddr;

use lb_common::counters::Reason;

use super::exposition::{Family, Labels, encode};
use crate::api::{BackendStatus, StatsReport, StatusReport, TrafficStatus, VipStatus};

fn vip_labels(v: &VipStatus) -> Labels {
    vec![("vip", v.name.clone())]
}

fn backend_labels(v: &VipStatus, b: &BackendStatus) -> Labels {
    vec![("vip", v.name.clone()), ("backend", SocketAddr::new(b.address, b.port).to_string())]
}

/// Each backend's samples of `get`, labelled with its VIP and address.
fn per_backend(status: &StatusReport, get: impl Fn(&BackendStatus) -> u64) -> Vec<(Labels, u64)> {
    status.vips.iter().flat_map(|v| v.backends.iter().map(|b| (backend_labels(v, b), get(b)))).collect()
}

/// Each VIP's samples of `get`.
fn per_vip(status: &StatusReport, get: impl Fn(&VipStatus) -> u64) -> Vec<(Labels, u64)> {
    status.vips.iter().map(|v| (vip_labels(v), get(v))).collect()
}

/// The traffic counters, per VIP and per backend.
fn traffic(status: &StatusReport) -> Vec<Family> {
    type Field = fn(&TrafficStatus) -> u64;
    let fields: [(&str, &str, &str, Field); 3] = [
        ("lb_vip_packets", "lb_backend_packets", "Packets in both directions.", |t| t.packets),
        ("lb_vip_bytes", "lb_backend_bytes", "Bytes in both directions.", |t| t.bytes),
        ("lb_vip_new_flows", "lb_backend_new_flows", "New flows assigned.", |t| t.new_flows),
    ];
    fields
        .into_iter()
        .flat_map(|(vip, backend, help, get)| {
            [
                Family::counter(vip, help, per_vip(status, |v| get(&v.traffic))),
                Family::counter(backend, help, per_backend(status, |b| get(&b.traffic))),
            ]
        })
        .collect()
}

/// The backends' state.
fn backend_gauges(status: &StatusReport) -> [Family; 3] {
    [
        Family::gauge(
            "lb_backend_active_connections",
            "Live flows per backend (open TCP, unexpired UDP), recounted every second.",
            per_backend(status, |b| b.active_connections),
        ),
        Family::gauge(
            "lb_backend_healthy",
            "1 if the health checks pass (or none are configured).",
            per_backend(status, |b| u64::from(b.health == "up")),
        ),
        Family::gauge(
            "lb_backend_serving",
            "1 if the backend takes new flows (up), 0 if draining or down.",
            per_backend(status, |b| u64::from(b.state == "up")),
        ),
    ]
}

/// The data path's verdicts, which add up to the packets it saw, and its events, counted beside
/// a verdict.
fn verdicts_and_events(stats: &StatsReport) -> [Family; 2] {
    let is_event = |name: &str| Reason::ALL.iter().any(|r| r.name() == name && r.is_event());
    let counts = |event: bool, label: &'static str| {
        let chosen = stats.reasons.iter().filter(move |(r, _)| is_event(r) == event);
        chosen.map(move |(r, n)| (vec![(label, r.clone())], *n))
    };
    [
        Family::counter("lb_packets", "Packets by data path verdict (each packet has exactly one).", counts(false, "reason")),
        Family::counter(
            "lb_events",
            "Data path events counted beside a packet's verdict (failed inserts, rescheduled and resumed flows).",
            counts(true, "event"),
        ),
    ]
}

/// The VIPs' drops and announcements, the connection table's shares and the build.
fn vips_table_and_build(status: &StatusReport) -> [Family; 5] {
    let t = &status.connection_table;
    let d = &status.data_path;
    let build = vec![
        ("version", d.agent_version.clone()),
        ("program_hash", d.program_hash.clone()),
        ("program_tag", d.program_tag.clone()),
        ("layout", d.layout.to_string()),
    ];
    [
        Family::counter(
            "lb_vip_dropped",
            "Packets for the VIP dropped because no backend could take them.",
            per_vip(status, |v| v.traffic.dropped),
        ),
        Family::gauge(
            "lb_vip_announced",
            "1 while this node announces the VIP's address (global.announce_table).",
            per_vip(status, |v| u64::from(v.announced)),
        ),
        Family::gauge(
            "lb_connection_table_cpu_entries",
            "Connection table entries each CPU created; a CPU evicts from its own share (lb_connection_table_cpu_capacity) when it is full.",
            t.per_cpu.iter().enumerate().map(|(cpu, n)| (vec![("cpu", cpu.to_string())], *n)),
        ),
        Family::gauge("lb_connection_table_cpu_capacity", "Each CPU's share of the connection table.", [(vec![], t.per_cpu_capacity)]),
        Family::gauge(
            "lb_build_info",
            "The agent's version and the program running in the data path (always 1).",
            [(build, 1)],
        ),
    ]
}

/// The health checker's counters and probe-to-swap times (left out until known), and the
/// connection table's and redirects' totals.
fn health_and_totals(stats: &StatsReport) -> Vec<Family> {
    let h = &stats.health;
    let one = |n: u64| [(Vec::new(), n)];
    let seconds = |name, help, ms: Option<f64>| ms.map(|ms| Family::fraction_gauge(name, help, [(Vec::new(), ms / 1000.0)]));
    [
        Some(Family::counter("lb_health_probes", "Health probes sent.", one(h.probes))),
        Some(Family::counter("lb_health_probe_failures", "Health probes failed.", one(h.failures))),
        Some(Family::counter("lb_health_transitions", "Backend health flips.", one(h.transitions))),
        Some(Family::counter("lb_health_swaps", "Ring swaps caused by health flips.", one(h.swaps))),
        seconds(
            "lb_health_last_probe_to_swap_seconds",
            "From the probe that flipped a backend to its VIP's swapped ring.",
            h.last_probe_to_swap_ms,
        ),
        seconds("lb_health_max_probe_to_swap_seconds", "Largest probe-to-swap time seen.", h.max_probe_to_swap_ms),
        Some(Family::gauge(
            "lb_connection_table_entries",
            "Entries in the connection table (one per flow), counted every second.",
            one(stats.connection_entries),
        )),
        Some(Family::gauge(
            "lb_connection_table_capacity",
            "Entries the connection table holds at most.",
            one(stats.connection_capacity),
        )),
        Some(Family::counter(
            "lb_redirect_dropped",
            "Frames the kernel dropped after the program redirected them to one of its interfaces (the target could not take them).",
            one(stats.redirect_drops),
        )),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Renders the status and counters in the Prometheus text format.
pub fn render(status: &StatusReport, stats: &StatsReport) -> String {
    let mut families = traffic(status);
    families.extend(backend_gauges(status));
    families.extend(verdicts_and_events(stats));
    families.extend(vips_table_and_build(status));
    families.extend(health_and_totals(stats));
    encode(families)
}

/// The counters of the agent's own faults, which no report carries: probes it could not make
/// (no descriptors, no memory).
pub fn render_agent_faults(probe_local_errors: u64) -> String {
    encode(vec![Family::counter(
        "lb_probe_local_errors",
        "Health probes the agent could not make (no descriptors, no memory); not counted against any backend.",
        [(Vec::new(), probe_local_errors)],
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConnTableStatus, DataPathStatus, HealthStats};

    fn flows(packets: u64) -> TrafficStatus {
        TrafficStatus { packets, bytes: packets * 100, new_flows: packets / 5, dropped: packets / 10, packets_per_second: 1.5 }
    }

    fn backend(address: &str, port: u16, health: &str, state: &str, packets: u64) -> BackendStatus {
        BackendStatus {
            id: 1,
            address: address.parse().unwrap(),
            port,
            weight: 1,
            admin: state.into(),
            health: health.into(),
            state: state.into(),
            active_connections: packets / 2,
            next_hop: None,
            traffic: flows(packets),
            last_probe: None,
            probe_local_errors: 0,
            probe: None,
        }
    }

    fn vip(name: &str, announced: bool, packets: u64, backends: Vec<BackendStatus>) -> VipStatus {
        VipStatus {
            name: name.into(),
            address: "10.0.0.1".parse().unwrap(),
            port: 80,
            protocol: "tcp".into(),
            scheduler: "maglev".into(),
            forwarding: "nat".into(),
            ring_backends: 1,
            serving: true,
            serving_reason: String::new(),
            announced,
            announce_reason: String::new(),
            traffic: flows(packets),
            backends,
        }
    }

    fn status(vips: Vec<VipStatus>) -> StatusReport {
        StatusReport {
            config_file: "x.yaml".into(),
            interfaces: vec![],
            uptime_seconds: 1,
            data_path: DataPathStatus {
                layout: 7,
                program_hash: "abc123".into(),
                program_tag: "0011aabb".into(),
                agent_version: "0.1.0 (3f2e1d0)".into(),
                ..Default::default()
            },
            host: Default::default(),
            connection_table: ConnTableStatus { entries: 5, capacity: 16, per_cpu_capacity: 8, per_cpu: vec![3, 2] },
            vips,
        }
    }

    fn stats(health: HealthStats) -> StatsReport {
        StatsReport {
            reasons: vec![
                ("forward_to_backend".into(), 40),
                ("pass_not_vip".into(), 7),
                ("conn_insert_failed".into(), 0),
                ("rescheduled".into(), 3),
            ],
            health,
            connection_entries: 4,
            connection_capacity: 16,
            redirect_drops: 2,
        }
    }

    /// The golden files are the hand-written renderer's output for these reports, byte for
    /// byte: the exposition did not change when prometheus-client took over writing it.
    #[test]
    fn writes_what_the_hand_written_renderer_wrote() {
        let s = status(vec![
            vip(
                "web \"edge\"\\a\nb",
                true,
                100,
                vec![backend("10.1.0.1", 8080, "up", "up", 60), backend("fd00::2", 443, "down", "draining", 40)],
            ),
            vip("empty", false, 0, vec![]),
        ]);
        let health = HealthStats {
            probes: 5,
            failures: 1,
            transitions: 2,
            swaps: 1,
            last_probe_to_swap_ms: Some(12.5),
            max_probe_to_swap_ms: Some(250.0),
            ..HealthStats::default()
        };
        assert_eq!(render(&s, &stats(health)) + &render_agent_faults(3), include_str!("golden/full.prom"));
        assert_eq!(render(&status(vec![]), &stats(HealthStats::default())), include_str!("golden/no_vips.prom"));
    }
}
