//! What the agent reports (status, stats, rates) and the small conversions between the
//! configuration and the health checker.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::Instant,
};

use lb_common::{counters::Reason, maps::{BackendState, Traffic}};

use super::{Agent, state::{BackendRuntime, Runtime, VipRuntime}};
use crate::{
    api::{BackendStatus, StatsReport, StatusReport, TrafficStatus, VipStatus, server::ApiError},
    config::{self, AdminState, CheckKind, Config, Forwarding, HttpMethod, ProbeTarget, Protocol, Scheduler, Vip},
    dataplane::{Maps, table_walk::now_secs},
    health::{
        Health, ProbeKind, ProbeSpec, Target, TargetStatus,
        dsr::{Carrier, Route, ViaVip},
    },
};

/// Packet rates per VIP (`true`) and backend (`false`) id, from the last two samples.
#[derive(Default)]
pub struct Rates {
    last: HashMap<(bool, u32), (Instant, u64)>,
    rate: HashMap<(bool, u32), f64>,
}

impl Rates {
    /// Samples every VIP's and backend's packet counter.
    pub fn sample(&mut self, rt: &Runtime, maps: &Maps) {
        let now = Instant::now();
        let mut ids: Vec<(bool, u32)> = Vec::new();
        for v in &rt.vips {
            ids.push((true, v.id));
            ids.extend(v.backends.iter().map(|b| (false, b.id)));
        }
        for key in ids {
            let traffic = if key.0 { maps.vip_traffic(key.1) } else { maps.backend_traffic(key.1) };
            let Ok(t) = traffic else { continue };
            if let Some((then, packets)) = self.last.insert(key, (now, t.packets)) {
                let secs = now.duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    self.rate.insert(key, t.packets.saturating_sub(packets) as f64 / secs);
                }
            }
        }
    }

    fn get(&self, vip: bool, id: u32) -> f64 {
        self.rate.get(&(vip, id)).copied().unwrap_or(0.0)
    }
}

fn traffic(t: Traffic, pps: f64) -> TrafficStatus {
    TrafficStatus { packets: t.packets, bytes: t.bytes, new_flows: t.new_flows, dropped: t.dropped, packets_per_second: pps }
}

/// Lowercase name of an administrative state.
pub fn admin_name(s: AdminState) -> &'static str {
    match s {
        AdminState::Up => "up",
        AdminState::Draining => "draining",
        AdminState::Down => "down",
    }
}

fn state_name(s: BackendState) -> &'static str {
    match s {
        BackendState::Up => "up",
        BackendState::Draining => "draining",
        BackendState::Down | BackendState::Failed => "down",
        BackendState::Unused => "unused",
    }
}

/// Name of a protocol as in the configuration.
pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Name of a scheduler as in the configuration.
pub fn scheduler_name(s: Scheduler) -> &'static str {
    match s {
        Scheduler::Maglev => "maglev",
        Scheduler::RoundRobin => "round-robin",
        Scheduler::LeastConn => "least-conn",
    }
}

fn backend_status(agent: &Agent, v: &VipRuntime, b: &BackendRuntime, active: &HashMap<u32, u64>, probes: &HashMap<u32, TargetStatus>) -> BackendStatus {
    let probe = probes.get(&b.id);
    let hop = b.hop.is_resolved().then(|| {
        let m = b.hop.dst_mac;
        format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} (ifindex {})", m[0], m[1], m[2], m[3], m[4], m[5], b.hop.ifindex)
    });
    BackendStatus {
        id: b.id,
        address: b.address,
        port: b.port,
        weight: b.weight,
        admin: admin_name(b.admin).into(),
        health: match b.health {
            Health::Up => "up".into(),
            Health::Down => "down".into(),
        },
        state: state_name(b.effective()).into(),
        active_connections: active.get(&b.id).copied().unwrap_or(0),
        next_hop: hop,
        last_probe: probe.map(|p| p.detail.clone()),
        probe_local_errors: probe.map_or(0, |p| p.local_errors),
        probe: probe_label(v, b),
        traffic: traffic(agent.dp.maps.backend_traffic(b.id).unwrap_or_default(), agent.rates.get(false, b.id)),
    }
}

fn vip_status(agent: &Agent, v: &VipRuntime, active: &HashMap<u32, u64>, probes: &HashMap<u32, TargetStatus>, attached: Result<(), &str>) -> VipStatus {
    let announcement = agent.announcer.decision(v.config.address);
    let serving = super::announce::serving(v, attached);
    let meta = agent.dp.maps.vip(&v.key()).ok().flatten();
    VipStatus {
        serving: serving.serving,
        serving_reason: serving.reason,
        announced: announcement.announce,
        announce_reason: announcement.reason,
        name: v.config.name.clone(),
        address: v.config.address,
        port: v.config.port,
        protocol: protocol_name(v.config.protocol).into(),
        scheduler: scheduler_name(v.config.scheduler).into(),
        forwarding: v.config.forwarding.to_string(),
        ring_backends: meta.map_or(0, |m| m.backend_count),
        moved_slots: agent.dp.maps.moved_count(v.id),
        retained_ring_seconds: meta.filter(|m| m.retained().is_some()).map(|m| m.retained_until.saturating_sub(now_secs())),
        traffic: traffic(agent.dp.maps.vip_traffic(v.id).unwrap_or_default(), agent.rates.get(true, v.id)),
        backends: v.backends.iter().map(|b| backend_status(agent, v, b, active, probes)).collect(),
    }
}

/// `lb status`.
pub fn status(agent: &Agent) -> StatusReport {
    let active = &agent.tables.live;
    let probes: HashMap<u32, TargetStatus> = agent.checker.snapshot().into_iter().map(|t| (t.id, t)).collect();
    let attached = agent.self_check();
    StatusReport {
        config_file: agent.config_path.display().to_string(),
        interfaces: agent.interfaces.iter().map(|(i, m)| (i.clone(), m.to_string())).collect(),
        uptime_seconds: agent.started.elapsed().as_secs(),
        data_path: agent.data_path.clone(),
        vips: agent.runtime.vips.iter().map(|v| vip_status(agent, v, active, &probes, attached.as_ref().map(|_| ()).map_err(String::as_str))).collect(),
        host: agent.host.report(),
        connection_table: connection_table(agent),
        flow_sync: agent.flow_sync.as_deref().map(|stats| flow_sync(agent, stats)),
    }
}

fn flow_sync(agent: &Agent, stats: &crate::flow_sync::Stats) -> crate::api::FlowSyncStatus {
    use std::sync::atomic::Ordering::Relaxed;
    let reasons = agent.dp.maps.reasons().unwrap_or([0; Reason::COUNT as usize]);
    crate::api::FlowSyncStatus {
        sent: stats.sent.load(Relaxed),
        send_errors: stats.send_errors.load(Relaxed),
        unsendable: stats.unsendable.load(Relaxed),
        ring_dropped: reasons[Reason::FlowSyncDropped as usize],
        received: stats.received.load(Relaxed),
        inserted: stats.inserted.load(Relaxed),
        existing: stats.existing.load(Relaxed),
        rejected: crate::flow_sync::Rejected::ALL.iter().map(|&r| (r.name().to_owned(), stats.rejected(r))).collect(),
    }
}

fn connection_table(agent: &Agent) -> crate::api::ConnTableStatus {
    let sizing = agent.dp.sizing();
    let mut per_cpu = agent.tables.per_cpu.clone();
    per_cpu.resize(per_cpu.len().max(agent.cpus as usize), 0);
    crate::api::ConnTableStatus {
        entries: agent.tables.entries,
        capacity: u64::from(sizing.conn_capacity),
        per_cpu_capacity: u64::from(sizing.conns_per_cpu(agent.cpus)),
        per_cpu,
    }
}

/// `lb stats`.
pub fn stats(agent: &Agent) -> StatsReport {
    let counts = agent.dp.maps.reasons().unwrap_or([0; Reason::COUNT as usize]);
    let mut health = agent.health.clone();
    for t in agent.checker.snapshot() {
        health.probes += t.probes;
        health.failures += t.failures;
    }
    health.local_errors = crate::health::checker::local_errors_total();
    StatsReport {
        reasons: Reason::ALL.iter().zip(counts).map(|(r, n)| (r.name().to_owned(), n)).collect(),
        health,
        connection_entries: agent.tables.entries,
        connection_capacity: u64::from(agent.dp.sizing().conn_capacity),
        redirect_drops: agent.dp.maps.redirect_drops().unwrap_or(0),
    }
}

/// The health-check target for backend `b` of `vip`, or `None` when the VIP is not checked.
pub fn probe_target(vip: &VipRuntime, b: &BackendRuntime) -> Option<Target> {
    let hc = &vip.config.health_check;
    let kind = match &hc.kind {
        CheckKind::None => return None,
        CheckKind::Tcp => ProbeKind::Tcp,
        CheckKind::Http { method, path, expect_status, host } => ProbeKind::Http {
            method: match method {
                HttpMethod::Get => "GET",
                HttpMethod::Head => "HEAD",
            },
            path: path.clone(),
            host: host.clone(),
            expect_status: expect_status.clone(),
        },
    };
    Some(Target {
        id: b.id,
        addr: SocketAddr::new(b.address, hc.port.unwrap_or(b.port)),
        spec: ProbeSpec { kind, timeout: hc.timeout },
        via: via_vip(vip),
        route: probe_route(b),
        interval: hc.interval,
        fast_interval: hc.fast_interval,
        rise: hc.rise,
        fall: hc.fall,
        initial: b.health,
    })
}

/// How a probe through the VIP reaches the backends of `vip`: `None` unless the VIP is a
/// direct server return one whose `health_check.target` is `vip`.
fn via_vip(vip: &VipRuntime) -> Option<ViaVip> {
    if vip.config.health_check.target != ProbeTarget::Vip {
        return None;
    }
    let carrier = match vip.config.forwarding {
        Forwarding::Tunnel => Carrier::Tunnel,
        Forwarding::Gue => Carrier::Gue { port: vip.config.dsr.gue_port },
        Forwarding::Direct => Carrier::Direct,
        Forwarding::Nat | Forwarding::Unsupported(_) => return None,
    };
    Some(ViaVip { carrier, vip: SocketAddr::new(vip.config.address, vip.config.port) })
}

/// The path to backend `b` as its probes through the VIP use it.
pub fn probe_route(b: &BackendRuntime) -> Route {
    Route { source: b.path.source, hop: b.hop }
}

/// How backend `b` of `vip` is probed, for the backends of direct server return VIPs (`None`
/// for NAT VIPs and unchecked ones): through the VIP, or plainly at its address.
fn probe_label(vip: &VipRuntime, b: &BackendRuntime) -> Option<String> {
    if !vip.config.forwarding.is_dsr() {
        return None;
    }
    probe_target(vip, b).map(|t| t.describe(true))
}

/// Parses and validates the YAML of one VIP (a `vips:` entry) against the running global
/// settings, with the same validation as the configuration file.
pub fn parse_vip(running: &Config, yaml: &str) -> Result<Vip, ApiError> {
    let global = serde_yaml::to_string(&running.global).map_err(ApiError::internal)?;
    let mut doc = String::from("global:\n");
    for line in global.lines() {
        doc.push_str("  ");
        doc.push_str(line);
        doc.push('\n');
    }
    doc.push_str("vips:\n");
    // The VIP's first line is this line of `doc`.
    let first = doc.lines().count() + 1;
    for (i, line) in yaml.lines().enumerate() {
        doc.push_str(if i == 0 { "  - " } else { "    " });
        doc.push_str(line);
        doc.push('\n');
    }
    let parsed = config::parse("vip-add", &doc).map_err(|e| ApiError::bad_request(format!("invalid VIP:\n{}", in_vip_yaml(e, first))))?;
    parsed.vips.into_iter().next().ok_or_else(|| ApiError::bad_request("no VIP given"))
}

/// The errors of the document [`parse_vip`] builds, told in the VIP's own YAML: its lines
/// (the VIP's first line is line `first` of the document) and its fields (`port`, not
/// `vips[0].port`).
fn in_vip_yaml(mut errors: config::ConfigErrors, first: usize) -> config::ConfigErrors {
    for e in &mut errors.0 {
        e.line = e.line.and_then(|l| l.checked_sub(first - 1)).filter(|&l| l > 0);
        e.field = match e.field.strip_prefix("vips[0]") {
            Some(rest) => rest.trim_start_matches('.').to_owned(),
            None => e.field.clone(),
        };
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The targets and labels of the first VIP's backends in a configuration whose VIP has
    /// `forwarding` and `check` (lines of its `health_check`).
    fn probes_of(forwarding: &str, check: &str) -> Vec<(Option<Target>, Option<String>)> {
        let text = format!(
            "global:\n  interfaces: [eth0]\nvips:\n  - name: web\n    address: 10.0.0.10\n    port: 80\n    forwarding: {forwarding}\n    gue_port: 7000\n    health_check:\n{check}    backends:\n      - address: 10.0.11.2\n"
        );
        let text = if forwarding == "gue" { text } else { text.replace("    gue_port: 7000\n", "") };
        let config = config::parse("t.yaml", &text).unwrap();
        let (mut rt, _) = crate::agent::state::Runtime::new(&config).unwrap();
        let b = &mut rt.vips[0].backends[0];
        b.path.source = Some("10.0.11.1".parse().unwrap());
        b.hop.ifindex = 7;
        let v = &rt.vips[0];
        v.backends.iter().map(|b| (probe_target(v, b), probe_label(v, b))).collect()
    }

    #[test]
    fn dsr_backends_are_probed_through_the_vip_by_default_and_say_so() {
        let tcp = "      type: tcp\n";
        for (mode, carrier, label) in [
            ("tunnel", Carrier::Tunnel, "tcp via tunnel to VIP 10.0.0.10:80"),
            ("gue", Carrier::Gue { port: 7000 }, "tcp via GUE (port 7000) to VIP 10.0.0.10:80"),
            ("direct", Carrier::Direct, "tcp via direct (L2) to VIP 10.0.0.10:80"),
        ] {
            let (target, got) = probes_of(mode, tcp).remove(0);
            let target = target.unwrap();
            assert_eq!(target.via, Some(ViaVip { carrier, vip: "10.0.0.10:80".parse().unwrap() }), "{mode}");
            assert_eq!(target.addr, "10.0.11.2:80".parse().unwrap());
            assert_eq!((target.route.source, target.route.hop.ifindex), (Some("10.0.11.1".parse().unwrap()), 7), "the path the resolver found");
            assert_eq!(got.as_deref(), Some(label), "{mode}");
        }
        let (target, got) = probes_of("tunnel", "      type: http\n      target: address\n").remove(0);
        assert_eq!(target.unwrap().via, None, "a plain probe");
        assert_eq!(got.as_deref(), Some("http GET /health to address 10.0.11.2:80 (plain: does not show the VIP is served)"));
        let (target, got) = probes_of("nat", tcp).remove(0);
        assert_eq!((target.unwrap().via, got), (None, None), "NAT VIPs are probed at the address, unlabelled");
        let (target, got) = probes_of("direct", "      type: none\n").remove(0);
        assert_eq!((target, got), (None, None), "not checked");
    }

    /// Found by the admin API fuzzer: the errors of `vip-add` named lines of a document the
    /// agent builds around the VIP (its global settings first), not of the YAML sent.
    #[test]
    fn vip_add_errors_name_lines_and_fields_of_the_yaml_sent() {
        let running = config::parse("t.yaml", "global:\n  interfaces: [eth0]\nvips: []\n").unwrap();
        let yaml = "name: fz\naddress: 10.0.0.20\nport: 99999\nbackends:\n  - address: 10.0.12.2\n    port: 8081\n";
        let e = parse_vip(&running, yaml).unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (400, "invalid VIP:\nvip-add:3: port: 99999 is not a port: use 1-65535"));
        let e = parse_vip(&running, &yaml.replace("    port: 8081", "    colour: red")).unwrap_err();
        assert_eq!(
            e.message,
            "invalid VIP:\nvip-add:6: backends[0]: unknown field `colour`, expected one of `address`, `port`, `weight`, `state`"
        );
    }
}
