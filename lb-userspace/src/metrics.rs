//! Prometheus text exposition of the agent's counters, served on the configured TCP address.
//!
//! Requests are read under [`Limits::METRICS`] (see [`http`]), and scrapes share the agent's
//! answers: at most one scrape at a time asks the agent's loop, and the scrapes that arrive
//! meanwhile take the next answer, so a flood of scrapes costs the loop no more than one.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    sync::{Mutex, mpsc},
    task::JoinHandle,
};

use crate::{
    api::{
        Request, StatsReport, StatusReport,
        http::{self, HttpRequest, Limits, Response},
        server::{Call, ask},
    },
    health::checker::local_errors_total,
};

mod exposition;
mod families;

pub use families::{render, render_agent_faults};

/// Serves `GET /metrics` on `addr` until the returned task is aborted.
pub async fn serve(addr: SocketAddr, calls: mpsc::Sender<Call>) -> anyhow::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?;
    Ok(serve_listener(listener, calls))
}

/// Serves `GET /metrics` on a bound listener until the returned task is aborted.
pub fn serve_listener(listener: TcpListener, calls: mpsc::Sender<Call>) -> JoinHandle<()> {
    let scrapes = Arc::new(Scrapes { calls, last: Mutex::new(None) });
    let handler = move |request| answer(scrapes.clone(), request);
    tokio::spawn(http::serve(listener, "metrics", Limits::METRICS, handler))
}

async fn answer(scrapes: Arc<Scrapes>, request: HttpRequest) -> Response {
    if request.method != "GET" || request.path != "/metrics" {
        return Response::text(404, "see /metrics");
    }
    match scrapes.latest().await {
        Some(text) => Response { status: 200, content_type: "text/plain; version=0.0.4", body: text.as_bytes().to_vec() },
        None => Response::text(500, "agent unavailable"),
    }
}

/// The agent's answers, shared by the scrapes.
struct Scrapes {
    calls: mpsc::Sender<Call>,
    /// When the last fetch started, and what it got (`None` when the agent did not answer).
    last: Mutex<Option<(Instant, Option<Arc<String>>)>>,
}

impl Scrapes {
    /// An exposition at least as fresh as the call: the last fetch's if it started after the
    /// call, a new one otherwise. The lock is fair, so every waiting scrape gets its turn.
    async fn latest(&self) -> Option<Arc<String>> {
        let called = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((started, text)) = &*last
            && *started >= called
        {
            return text.clone();
        }
        let started = Instant::now();
        let text = fetch(&self.calls).await.map(Arc::new);
        *last = Some((started, text.clone()));
        text
    }
}

/// Asks the agent's loop for its status and counters and renders them.
async fn fetch(calls: &mpsc::Sender<Call>) -> Option<String> {
    let status: StatusReport = serde_json::from_value(ask(calls, Request::Status).await.ok()?).ok()?;
    let stats: StatsReport = serde_json::from_value(ask(calls, Request::Stats).await.ok()?).ok()?;
    Some(render(&status, &stats) + &render_agent_faults(local_errors_total()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendStatus, HealthStats, TrafficStatus, VipStatus};

    #[test]
    fn renders_every_family_with_labels() {
        let status = StatusReport {
            config_file: "x.yaml".into(),
            interfaces: vec![],
            uptime_seconds: 1,
            data_path: Default::default(),
            host: Default::default(),
            connection_table: crate::api::ConnTableStatus { entries: 5, capacity: 16, per_cpu_capacity: 8, per_cpu: vec![3, 2] },
            flow_sync: None,
            vips: vec![VipStatus {
                name: "web".into(),
                address: "10.0.0.1".parse().unwrap(),
                port: 80,
                protocol: "tcp".into(),
                scheduler: "maglev".into(),
                forwarding: "nat".into(),
                ring_backends: 1,
                moved_slots: 0,
                retained_ring_seconds: None,
                serving: true,
                serving_reason: "1 backend takes new flows".into(),
                announced: true,
                announce_reason: "announced: 1 backend takes new flows".into(),
                traffic: TrafficStatus { packets: 10, bytes: 1000, new_flows: 2, dropped: 0, packets_per_second: 0.0 },
                backends: vec![BackendStatus {
                    id: 1,
                    address: "10.1.0.1".parse().unwrap(),
                    port: 8080,
                    weight: 1,
                    admin: "up".into(),
                    health: "up".into(),
                    state: "up".into(),
                    active_connections: 2,
                    next_hop: None,
                    traffic: TrafficStatus { packets: 10, bytes: 1000, new_flows: 2, dropped: 0, packets_per_second: 0.0 },
                    last_probe: Some("HTTP 200".into()),
                    probe_local_errors: 0,
                    probe: None,
                }],
            }],
        };
        let stats = StatsReport {
            reasons: vec![("pass_not_vip".into(), 7), ("rescheduled".into(), 3)],
            health: HealthStats { probes: 5, last_probe_to_swap_ms: Some(12.5), ..HealthStats::default() },
            connection_entries: 4,
            connection_capacity: 16,
            redirect_drops: 2,
        };
        let text = render(&status, &stats);
        for line in [
            "lb_vip_packets_total{vip=\"web\"} 10",
            "lb_backend_bytes_total{vip=\"web\",backend=\"10.1.0.1:8080\"} 1000",
            "lb_backend_active_connections{vip=\"web\",backend=\"10.1.0.1:8080\"} 2",
            "lb_backend_healthy{vip=\"web\",backend=\"10.1.0.1:8080\"} 1",
            "lb_packets_total{reason=\"pass_not_vip\"} 7",
            "lb_events_total{event=\"rescheduled\"} 3",
            "lb_vip_announced{vip=\"web\"} 1",
            "lb_health_probes_total 5",
            "lb_health_last_probe_to_swap_seconds 0.0125",
            "lb_connection_table_entries 4",
            "lb_connection_table_capacity 16",
            "lb_redirect_dropped_total 2",
            "lb_connection_table_cpu_entries{cpu=\"1\"} 2",
            "lb_connection_table_cpu_capacity 8",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("lb_health_max_probe_to_swap_seconds"), "unknown values are left out");
        assert!(!text.contains("lb_packets_total{reason=\"rescheduled\"}"), "events are not packets");
        assert!(text.lines().any(|l| l.starts_with("lb_build_info{version=\"") && l.ends_with("} 1")), "{text}");
    }

    #[test]
    fn renders_the_agents_own_faults() {
        let text = render_agent_faults(3);
        assert!(text.contains("# TYPE lb_probe_local_errors_total counter\n"), "{text}");
        assert!(text.lines().any(|l| l == "lb_probe_local_errors_total 3"), "{text}");
    }
}
