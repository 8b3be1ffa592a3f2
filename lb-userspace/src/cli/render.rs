//! Human output of the read commands.

use serde_json::Value;

use super::{Command, table::table};
use crate::api::{ExplainReport, StatsReport, StatusReport};

fn rate(pps: f64) -> String {
    format!("{pps:.0}")
}

/// Renders the answer to `command` for a person; falls back to pretty JSON.
pub fn human(command: &Command, value: &Value) -> String {
    let rendered = match command {
        Command::Status => serde_json::from_value(value.clone()).ok().map(status),
        Command::Stats => serde_json::from_value(value.clone()).ok().map(stats),
        Command::Explain { .. } => serde_json::from_value(value.clone()).ok().map(explain),
        _ => None,
    };
    rendered.unwrap_or_else(|| serde_json::to_string_pretty(value).unwrap_or_default() + "\n")
}

fn status(s: StatusReport) -> String {
    let ifaces: Vec<String> = s.interfaces.iter().map(|(i, m)| format!("{i} ({m})")).collect();
    let mut out = format!("config {}  up {} s  interfaces {}\n", s.config_file, s.uptime_seconds, ifaces.join(", "));
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
    for v in &s.vips {
        out += &format!(
            "\nVIP {} {}:{}/{}  scheduler {}  {} backends in the ring  {} pkt/s  {} flows\n  {}\n",
            v.name, v.address, v.port, v.protocol, v.scheduler, v.ring_backends, rate(v.traffic.packets_per_second), v.traffic.new_flows,
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
                    b.active_connections.to_string(),
                    rate(b.traffic.packets_per_second),
                    b.traffic.new_flows.to_string(),
                ]
            })
            .collect();
        out += &table(&["BACKEND", "STATE", "HEALTH", "ADMIN", "WEIGHT", "CONNS", "PKT/S", "FLOWS"], &rows);
    }
    out
}

fn stats(s: StatsReport) -> String {
    let rows: Vec<Vec<String>> = s.reasons.iter().map(|(r, n)| vec![r.clone(), n.to_string()]).collect();
    let mut out = table(&["REASON", "PACKETS"], &rows);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    let h = &s.health;
    out += &format!(
        "\nhealth: {} probes, {} failed, {} transitions, {} ring swaps\nprobe to swapped ring: last {}, max {}\nlast ring write: {}\nconnection table entries: {}\n",
        h.probes, h.failures, h.transitions, h.swaps, ms(h.last_probe_to_swap_ms), ms(h.max_probe_to_swap_ms), ms(h.last_table_write_ms), s.connection_entries
    );
    out
}

fn explain(e: ExplainReport) -> String {
    let mut out = format!("verdict: {}\n", e.verdict);
    if let Some(v) = &e.vip {
        out += &format!("vip:     {v}\n");
    }
    if let Some(b) = e.backend {
        out += &format!("backend: {b}\n");
    }
    if let (Some(h), Some(s)) = (e.hash, e.slot) {
        out += &format!("hash:    {h:#010x} (slot {s})\n");
    }
    out += &format!("tracked: {}\nwhy:     {}\n", e.tracked, e.reason);
    out
}
