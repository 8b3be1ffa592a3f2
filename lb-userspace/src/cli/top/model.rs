//! What `lb top` shows, as data: snapshots of the agent, the rates between two of them, the
//! rows of each view and their order. No text and no terminal here.

use std::net::SocketAddr;

use serde::Serialize;
use serde_json::Value;

use crate::api::{StatsReport, StatusReport, TrafficStatus};

/// One look at the agent: its status and stats, and when they were taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Seconds on a monotonic clock (only differences count).
    pub at: f64,
    /// Unix time in seconds, for display.
    pub wall: u64,
    /// `GET /v1/status`.
    pub status: StatusReport,
    /// `GET /v1/stats`.
    pub stats: StatsReport,
    /// Capacity of the connection table, when the agent reports it.
    pub capacity: Option<u64>,
}

impl Snapshot {
    /// A snapshot from the two JSON answers.
    pub fn from_values(at: f64, wall: u64, status: &Value, stats: &Value) -> Result<Self, String> {
        Ok(Snapshot {
            at,
            wall,
            status: serde_json::from_value(status.clone()).map_err(|e| format!("status: {e}"))?,
            stats: serde_json::from_value(stats.clone()).map_err(|e| format!("stats: {e}"))?,
            capacity: connection_capacity(stats),
        })
    }
}

/// The connection table's capacity in a stats answer, if the agent sends one.
pub fn connection_capacity(stats: &Value) -> Option<u64> {
    ["connection_capacity", "connection_table_capacity", "conn_capacity"].iter().find_map(|k| stats.get(k)?.as_u64())
}

/// Per-second rates of one traffic counter set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Packets per second.
    pub packets: f64,
    /// Bits per second.
    pub bits: f64,
    /// New flows per second.
    pub new_flows: f64,
}

/// `(cur - prev) / seconds`; a counter that went back (a re-created slot) counts as 0.
fn delta(prev: u64, cur: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { cur.saturating_sub(prev) as f64 / seconds } else { 0.0 }
}

/// Rates between two readings of the same counters, `seconds` apart.
pub fn traffic_rates(prev: &TrafficStatus, cur: &TrafficStatus, seconds: f64) -> Rates {
    Rates {
        packets: delta(prev.packets, cur.packets, seconds),
        bits: delta(prev.bytes, cur.bytes, seconds) * 8.0,
        new_flows: delta(prev.new_flows, cur.new_flows, seconds),
    }
}

/// Seconds between two snapshots.
pub fn window(prev: &Snapshot, cur: &Snapshot) -> f64 {
    cur.at - prev.at
}

/// A backend line of the VIP view.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendRow {
    /// Address and port.
    pub endpoint: SocketAddr,
    /// What the data path does with it: up, draining, down.
    pub state: String,
    /// up or down.
    pub health: String,
    /// Weight.
    pub weight: u32,
    /// Live flows.
    pub connections: u64,
    /// Rates; none without an earlier snapshot holding the backend.
    pub rates: Option<Rates>,
    /// Its part of the VIP's backends' packets/s.
    pub share: Option<f64>,
}

/// A VIP line of the VIP view, with its backends.
#[derive(Clone, Debug, PartialEq)]
pub struct VipRow {
    /// Name.
    pub name: String,
    /// `address:port/protocol`.
    pub endpoint: String,
    /// Backends the data path sends new flows to (state up).
    pub serving: usize,
    /// Backends whose health is up.
    pub healthy: usize,
    /// Rates; none without an earlier snapshot holding the VIP.
    pub rates: Option<Rates>,
    /// Its part of all VIPs' packets/s.
    pub share: Option<f64>,
    /// A Maglev VIP's moved ring slots and whether it retains a ring (`None`: neither).
    pub ring_history: Option<(u32, bool)>,
    /// Backends.
    pub backends: Vec<BackendRow>,
}

fn shares(rates: &[Option<Rates>]) -> Vec<Option<f64>> {
    let total: f64 = rates.iter().flatten().map(|r| r.packets).sum();
    rates.iter().map(|r| r.map(|r| if total > 0.0 { r.packets / total } else { 0.0 })).collect()
}

/// The VIP view's rows, in the status report's order.
pub fn vip_rows(prev: Option<&Snapshot>, cur: &Snapshot) -> Vec<VipRow> {
    let seconds = prev.map_or(0.0, |p| window(p, cur));
    let mut rows: Vec<VipRow> = cur
        .status
        .vips
        .iter()
        .map(|v| {
            let before = prev.and_then(|p| p.status.vips.iter().find(|o| o.name == v.name));
            let mut backends: Vec<BackendRow> = v
                .backends
                .iter()
                .map(|b| {
                    let was = before.and_then(|o| o.backends.iter().find(|ob| ob.address == b.address && ob.port == b.port));
                    BackendRow {
                        endpoint: SocketAddr::new(b.address, b.port),
                        state: b.state.clone(),
                        health: b.health.clone(),
                        weight: b.weight,
                        connections: b.active_connections,
                        rates: was.map(|o| traffic_rates(&o.traffic, &b.traffic, seconds)),
                        share: None,
                    }
                })
                .collect();
            let backend_shares = shares(&backends.iter().map(|b| b.rates).collect::<Vec<_>>());
            for (b, s) in backends.iter_mut().zip(backend_shares) {
                b.share = s;
            }
            VipRow {
                name: v.name.clone(),
                endpoint: format!("{}/{}", SocketAddr::new(v.address, v.port), v.protocol),
                serving: v.backends.iter().filter(|b| b.state == "up").count(),
                healthy: v.backends.iter().filter(|b| b.health == "up").count(),
                rates: before.map(|o| traffic_rates(&o.traffic, &v.traffic, seconds)),
                share: None,
                ring_history: (v.moved_slots > 0 || v.retained_ring_seconds.is_some()).then_some((v.moved_slots, v.retained_ring_seconds.is_some())),
                backends,
            }
        })
        .collect();
    let vip_shares = shares(&rows.iter().map(|v| v.rates).collect::<Vec<_>>());
    for (v, s) in rows.iter_mut().zip(vip_shares) {
        v.share = s;
    }
    rows
}

/// A verdict reason with its rate.
#[derive(Clone, Debug, PartialEq)]
pub struct ReasonRow {
    /// The reason's name.
    pub name: String,
    /// Its counter.
    pub total: u64,
    /// Per second; none without an earlier snapshot.
    pub per_second: Option<f64>,
}

impl ReasonRow {
    /// Whether the reason is a drop (`drop_...`).
    pub fn is_drop(&self) -> bool {
        self.name.starts_with("drop_")
    }
}

/// Every verdict reason with its rate, in the data path's order.
pub fn reason_rows(prev: Option<&Snapshot>, cur: &Snapshot) -> Vec<ReasonRow> {
    cur.stats
        .reasons
        .iter()
        .map(|(name, total)| ReasonRow {
            name: name.clone(),
            total: *total,
            per_second: prev.map(|p| {
                let before = p.stats.reasons.iter().find(|(n, _)| n == name).map_or(*total, |(_, v)| *v);
                delta(before, *total, window(p, cur))
            }),
        })
        .collect()
}

/// Drops per second over all `drop_` reasons.
pub fn drops_per_second(reasons: &[ReasonRow]) -> Option<f64> {
    reasons.iter().filter(|r| r.is_drop()).map(|r| r.per_second).sum()
}

/// Which view `lb top` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// VIPs and their backends.
    Vips,
    /// Verdict reasons: drops and the others.
    Reasons,
}

/// The column `lb top` sorts by (largest first; names in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Packets per second (reasons: their rate).
    Packets,
    /// Bits per second (VIP view only).
    Bits,
    /// New flows per second (VIP view only).
    Flows,
    /// Name (backends: address).
    Name,
}

/// Orders VIPs, and each VIP's backends, by a column: rates largest first (no rate last),
/// names in order; ties by name.
pub fn sort_rows(rows: &mut [VipRow], sort: Sort) {
    let key = |r: Option<Rates>| -> f64 {
        r.map_or(-1.0, |r| match sort {
            Sort::Packets | Sort::Name => r.packets,
            Sort::Bits => r.bits,
            Sort::Flows => r.new_flows,
        })
    };
    if sort == Sort::Name {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    } else {
        rows.sort_by(|a, b| key(b.rates).total_cmp(&key(a.rates)).then_with(|| a.name.cmp(&b.name)));
    }
    for v in rows {
        if sort == Sort::Name {
            v.backends.sort_by_key(|b| b.endpoint);
        } else {
            v.backends.sort_by(|a, b| key(b.rates).total_cmp(&key(a.rates)).then_with(|| a.endpoint.cmp(&b.endpoint)));
        }
    }
}

/// Orders reasons by rate (largest first, ties by name) or by name.
pub fn sort_reasons(rows: &mut [ReasonRow], sort: Sort) {
    if sort == Sort::Name {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    } else {
        rows.sort_by(|a, b| b.per_second.unwrap_or(-1.0).total_cmp(&a.per_second.unwrap_or(-1.0)).then_with(|| a.name.cmp(&b.name)));
    }
}

/// Health figures per second.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HealthRates {
    /// Probes sent.
    pub probes: f64,
    /// Probes failed.
    pub failures: f64,
    /// Health flips.
    pub transitions: f64,
    /// Ring swaps.
    pub swaps: f64,
}

/// `lb stats --rate`: the stats report's counters per second between two snapshots.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsRates {
    /// Unix time of the later snapshot.
    pub unix_time: u64,
    /// Seconds between the snapshots.
    pub interval_seconds: f64,
    /// Per verdict reason, in the data path's order.
    pub reasons_per_second: Vec<(String, f64)>,
    /// Sum over the `drop_` reasons.
    pub drops_per_second: f64,
    /// Health checks and swaps.
    pub health_per_second: HealthRates,
    /// Entries in the connection table (a level, not a rate).
    pub connection_entries: u64,
    /// The table's capacity, when the agent reports it.
    pub connection_capacity: Option<u64>,
    /// Probe to swapped ring of the last health change, in milliseconds.
    pub last_probe_to_swap_ms: Option<f64>,
}

/// Rounds a rate to thousandths, so JSON shows 12.5 and not 12.499999999.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The stats counters per second from `prev` to `cur` (both the stats part of snapshots).
pub fn stats_rates(prev: &Snapshot, cur: &Snapshot) -> StatsRates {
    let s = window(prev, cur);
    let reasons = reason_rows(Some(prev), cur);
    let (p, c) = (&prev.stats.health, &cur.stats.health);
    StatsRates {
        unix_time: cur.wall,
        interval_seconds: round3(s),
        reasons_per_second: reasons.iter().map(|r| (r.name.clone(), round3(r.per_second.unwrap_or(0.0)))).collect(),
        drops_per_second: round3(drops_per_second(&reasons).unwrap_or(0.0)),
        health_per_second: HealthRates {
            probes: round3(delta(p.probes, c.probes, s)),
            failures: round3(delta(p.failures, c.failures, s)),
            transitions: round3(delta(p.transitions, c.transitions, s)),
            swaps: round3(delta(p.swaps, c.swaps, s)),
        },
        connection_entries: cur.stats.connection_entries,
        connection_capacity: cur.capacity,
        last_probe_to_swap_ms: cur.stats.health.last_probe_to_swap_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::fixtures::series;

    #[test]
    fn rates_are_deltas_over_the_window() {
        let s = series();
        let rows = vip_rows(Some(&s[0]), &s[1]);
        let web = rows.iter().find(|v| v.name == "web").unwrap();
        assert_eq!(web.rates, Some(Rates { packets: 4_000.0, bits: 4_000_000.0, new_flows: 40.0 }));
        assert_eq!(web.backends[0].rates, Some(Rates { packets: 3_000.0, bits: 3_000_000.0, new_flows: 30.0 }));
        assert_eq!(web.backends[0].share, Some(0.75));
        assert_eq!(web.backends[1].share, Some(0.25));
        // The half-second window doubles the deltas.
        let rows = vip_rows(Some(&s[1]), &s[2]);
        let web = rows.iter().find(|v| v.name == "web").unwrap();
        assert_eq!(web.backends[0].rates, Some(Rates { packets: 3_000.0, bits: 3_000_000.0, new_flows: 40.0 }));
        assert_eq!(web.backends[1].rates, Some(Rates::default()));
        assert_eq!((web.serving, web.healthy), (1, 1));
        let reasons = reason_rows(Some(&s[1]), &s[2]);
        assert_eq!(reasons.iter().find(|r| r.name == "drop_no_backend").unwrap().per_second, Some(200.0));
        assert_eq!(drops_per_second(&reasons), Some(204.0));
        // Without an earlier snapshot there is no rate, and a counter that went back counts 0.
        assert!(vip_rows(None, &s[0]).iter().all(|v| v.rates.is_none() && v.share.is_none()));
        assert_eq!(delta(10, 4, 1.0), 0.0);
    }


    #[test]
    fn sorting_by_each_column() {
        let s = series();
        // Window 1→2 gives web's 10.1.0.1 3.0k pkt/s, 3.0 Mbit/s, 40 flows/s. Give 10.1.0.2 fewer
        // packets but more bits and flows, and api more bits than web, so every column orders
        // differently.
        let mut rows = vip_rows(Some(&s[1]), &s[2]);
        let web = rows.iter_mut().find(|v| v.name == "web").unwrap();
        web.backends[1].rates = Some(Rates { packets: 10.0, bits: 9e9, new_flows: 99.0 });
        let api = rows.iter_mut().find(|v| v.name == "api").unwrap();
        api.rates = Some(Rates { packets: 1.0, bits: 9e9, new_flows: 0.0 });
        let order = |rows: &[VipRow]| -> Vec<String> {
            rows.iter().flat_map(|v| std::iter::once(v.name.clone()).chain(v.backends.iter().map(|b| b.endpoint.to_string()))).collect()
        };
        sort_rows(&mut rows, Sort::Packets);
        assert_eq!(order(&rows), ["web", "10.1.0.1:8080", "10.1.0.2:8080", "api", "10.1.0.3:8080"]);
        sort_rows(&mut rows, Sort::Bits);
        assert_eq!(order(&rows), ["api", "10.1.0.3:8080", "web", "10.1.0.2:8080", "10.1.0.1:8080"]);
        sort_rows(&mut rows, Sort::Flows);
        assert_eq!(order(&rows), ["web", "10.1.0.2:8080", "10.1.0.1:8080", "api", "10.1.0.3:8080"]);
        sort_rows(&mut rows, Sort::Name);
        assert_eq!(order(&rows), ["api", "10.1.0.3:8080", "web", "10.1.0.1:8080", "10.1.0.2:8080"]);
        // Rows without a rate (new since the last snapshot) go last.
        let mut rows = vip_rows(Some(&s[1]), &s[2]);
        rows.iter_mut().find(|v| v.name == "web").unwrap().rates = None;
        sort_rows(&mut rows, Sort::Packets);
        assert_eq!(rows[0].name, "api");
    }


    #[test]
    fn stats_rates_for_scripts() {
        let s = series();
        let r = stats_rates(&s[1], &s[2]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"unix_time":1767225611,"interval_seconds":0.5,"reasons_per_second":[["forward_to_backend",1500.0],["reply_to_client",1500.0],["pass_not_vip",0.0],["drop_no_backend",200.0],["drop_martian",4.0]],"drops_per_second":204.0,"health_per_second":{"probes":10.0,"failures":0.0,"transitions":0.0,"swaps":0.0},"connection_entries":1480,"connection_capacity":null,"last_probe_to_swap_ms":12.25}"#
        );
    }
}
