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
fn backend_gauges(status: &StatusReport) -> impl Iterator<Item = Family> + '_ {
    type Get = fn(&BackendStatus) -> u64;
    let gauges: [(&str, &str, Get); 3] = [
        ("lb_backend_active_connections", "Live flows per backend (open TCP, unexpired UDP), recounted every second.", |b| b.active_connections),
        ("lb_backend_healthy", "1 if the health checks pass (or none are configured).", |b| u64::from(b.health == "up")),
        ("lb_backend_serving", "1 if the backend takes new flows (up), 0 if draining or down.", |b| u64::from(b.state == "up")),
    ];
    gauges.into_iter().map(|(name, help, get)| Family::gauge(name, help, per_backend(status, get)))
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

/// The VIPs' drops, announcements and ring history, the connection table's shares and the
/// build.
fn vips_table_and_build(status: &StatusReport) -> [Family; 7] {
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
            "lb_vip_moved_slots",
            "Ring slots of a Maglev VIP whose packets use the connection table after a change; the others keep no per-flow state.",
            per_vip(status, |v| u64::from(v.moved_slots)),
        ),
        Family::gauge(
            "lb_vip_ring_retained",
            "1 while a Maglev VIP retains its ring from before a change, for flows older than the change.",
            per_vip(status, |v| u64::from(v.retained_ring_seconds.is_some())),
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

/// Flow sync's counters (README, "Flow sync"), when it is on.
fn flow_sync(status: &StatusReport) -> Vec<Family> {
    let Some(f) = &status.flow_sync else {
        return Vec::new();
    };
    let records = [
        ("sent", f.sent),
        ("unsendable", f.unsendable),
        ("ring_dropped", f.ring_dropped),
        ("received", f.received),
        ("inserted", f.inserted),
        ("existing", f.existing),
    ];
    vec![
        Family::counter(
            "lb_flow_sync_records",
            "Flow sync records: sent to the peers, not sent (unsendable, ring_dropped), received from them, inserted, already tracked (existing).",
            records.map(|(what, n)| (vec![("what", what.to_owned())], n)),
        ),
        Family::counter(
            "lb_flow_sync_rejected",
            "Flow sync datagrams (malformed, bad_mac, stale) and records (unknown_vip, unknown_backend) not used.",
            f.rejected.iter().map(|(why, n)| (vec![("reason", why.clone())], *n)),
        ),
        Family::counter("lb_flow_sync_send_errors", "Flow sync datagrams the network refused.", [(Vec::new(), f.send_errors)]),
    ]
}

/// Renders the status and counters in the Prometheus text format.
pub fn render(status: &StatusReport, stats: &StatsReport) -> String {
    let mut families = traffic(status);
    families.extend(backend_gauges(status));
    families.extend(verdicts_and_events(stats));
    families.extend(vips_table_and_build(status));
    families.extend(health_and_totals(stats));
    families.extend(flow_sync(status));
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
    use crate::api::HealthStats;

    /// The golden files are the hand-written renderer's output for the reports in
    /// `golden/reports.json` (read as the scrapes read the agent's answers), byte for byte: the
    /// exposition did not change when prometheus-client took over writing it. The reports have
    /// a VIP name to escape, an IPv6 backend, a VIP without backends, verdicts and events, and
    /// both probe-to-swap times.
    #[test]
    fn writes_what_the_hand_written_renderer_wrote() {
        #[derive(serde::Deserialize)]
        struct Reports {
            status: StatusReport,
            stats: StatsReport,
        }
        let Reports { mut status, mut stats } = serde_json::from_str(include_str!("golden/reports.json")).unwrap();
        assert_eq!(render(&status, &stats) + &render_agent_faults(3), include_str!("golden/full.prom"));
        status.vips.clear();
        stats.health = HealthStats::default();
        assert_eq!(render(&status, &stats), include_str!("golden/no_vips.prom"));
    }

    #[test]
    fn flow_sync_counters_are_exported_when_it_is_on() {
        #[derive(serde::Deserialize)]
        struct Reports {
            status: StatusReport,
            stats: StatsReport,
        }
        let Reports { mut status, stats } = serde_json::from_str(include_str!("golden/reports.json")).unwrap();
        assert!(!render(&status, &stats).contains("lb_flow_sync"));
        status.flow_sync = Some(crate::api::FlowSyncStatus {
            sent: 4,
            inserted: 2,
            rejected: vec![("bad_mac".to_owned(), 3)],
            ..Default::default()
        });
        let out = render(&status, &stats);
        for line in ["lb_flow_sync_records_total{what=\"sent\"} 4\n", "lb_flow_sync_records_total{what=\"inserted\"} 2\n", "lb_flow_sync_rejected_total{reason=\"bad_mac\"} 3\n", "lb_flow_sync_send_errors_total 0\n"] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }
}
