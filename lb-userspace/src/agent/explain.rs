//! `lb explain`: which backend a flow goes to and why, read from the loaded program's maps. A
//! new flow's backend is chosen by `lb_common::schedule`, the code the data path runs, on the
//! same maps (`Maps::choose`; tested to agree with the data path flow by flow); round-robin
//! alone has no per-flow answer (a per-CPU cursor).

use std::net::SocketAddr;

use lb_common::{
    encap::{FORWARD_DIRECT, FORWARD_GUE, FORWARD_TUNNEL, gue_source_port, outer_source},
    hash::flow_hash,
    maps::*,
    schedule::vip_hash,
};

use super::state::Runtime;
use crate::{
    api::{ExplainReport, server::ApiError},
    dataplane::Dataplane,
};

fn endpoint(b: &Backend) -> SocketAddr {
    SocketAddr::new(ip_of(&b.addr, b.family), b.port)
}

fn serves(b: &Backend, flow: &Flow) -> bool {
    b.generation as u16 == flow.backend_gen && BackendState::from_u8(b.state).keeps_flow(flow.state)
}

/// How the data path carries flow `key` to direct server return backend `b`, in words: the
/// outer header with the source and GUE source port the data path derives from the flow hash
/// (`lb_common::encap`, the code it runs), or the MAC of `direct` mode. `None` in NAT mode.
pub fn encapsulation(b: &Backend, key: &FlowKey, seed: u32) -> Option<String> {
    let hash = flow_hash(key, seed, false);
    let outer = |name: &str| {
        let src = outer_source(&b.tunnel.src, b.family, b.tunnel.src_host_bits, hash);
        let inner = if key.family == FAMILY_V4 { "IPv4" } else { "IPv6" };
        let outer_family = if b.family == FAMILY_V4 { "IPv4" } else { "IPv6" };
        format!("{name}: {inner}-in-{outer_family} from {} to {}", ip_of(&src, b.family), ip_of(&b.addr, b.family))
    };
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    match b.forwarding {
        FORWARD_TUNNEL => Some(outer("tunnel")),
        FORWARD_GUE => Some(format!("{}, in UDP from port {} to port {}", outer("gue"), gue_source_port(hash), b.tunnel.gue_port)),
        FORWARD_DIRECT if b.hop.is_resolved() => Some(format!("direct: unchanged, to MAC {}", mac(b.hop.dst_mac))),
        FORWARD_DIRECT => Some("direct: unchanged, to the backend's MAC (not resolved yet: dropped as drop_dsr_no_path)".into()),
        _ => None,
    }
}

/// Explains what the data path does with the next packet from `src` to `dst`.
pub fn explain(rt: &Runtime, dp: &Dataplane, src: SocketAddr, dst: SocketAddr, protocol: &str) -> Result<ExplainReport, ApiError> {
    let internal = |e: anyhow::Error| ApiError::internal(format!("{e:#}"));
    let proto = match protocol {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        other => return Err(ApiError::bad_request(format!("unknown protocol {other:?}: use tcp or udp"))),
    };
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(ApiError::bad_request("source and destination must be of the same address family"));
    }
    let family = if src.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
    let key = FlowKey { src: addr_of(src.ip()), dst: addr_of(dst.ip()), sport: src.port(), dport: dst.port(), proto, family, pad: [0; 2] };
    let vip_key = VipKey { addr: key.dst, port: key.dport, proto, family };
    let mut report =
        ExplainReport { vip: None, verdict: "pass".into(), backend: None, reason: String::new(), hash: None, slot: None, tracked: false, path: None, encapsulation: None };
    let conn = dp.maps.conn(&key).map_err(internal)?;

    let Some(meta) = dp.maps.vip(&vip_key).map_err(internal)? else {
        let backend_key = BackendKey { addr: key.src, port: key.sport, proto, family };
        if let Some(t) = dp.maps.reply_target(&backend_key).map_err(internal)? {
            report.verdict = "reply".into();
            report.vip = rt.vip_by_id(t.vip_id).map(|v| v.config.name.clone());
            report.reason = format!(
                "from a backend endpoint: a reply, its source becomes the VIP port {} (towards the client by the FIB; untouched if {dst} is this host)",
                t.vip.port
            );
        } else {
            report.reason = format!("no VIP at {dst}/{protocol} and not from a backend endpoint: passed to the kernel untouched");
        }
        return Ok(report);
    };
    report.vip = rt.vip_by_id(meta.id).map(|v| v.config.name.clone());
    let seed = dp.sizing().hash_seed;
    let slot = vip_hash(meta.flags, &key, seed, flow_hash(&key, seed, false)) % dp.sizing().ring_size;
    if meta.is_maglev() {
        if !dp.maps.is_moved(meta.id, slot) {
            report.path = Some("stateless".into());
            report.reason = format!("ring slot {slot} has not moved: the live ring decides every packet and nothing is recorded; ");
            return new_flow(dp, &meta, &key, report).map_err(internal);
        }
        report.path = Some("moved slot".into());
        report.reason = match meta.retained() {
            Some(_) => format!("ring slot {slot} moved in a change of the last {}s: the connection table decides; ", dp.maps.ring_retention()),
            None => format!("ring slot {slot} holds flows from before a change: the connection table decides; "),
        };
    }

    if let Some(c) = conn.filter(|_| !meta.is_maglev() || dp.maps.is_moved(meta.id, slot)) {
        report.tracked = true;
        let b = dp.maps.backend(c.backend_id).map_err(internal)?;
        if serves(&b, &c) {
            report.verdict = "forward".into();
            report.backend = Some(endpoint(&b));
            report.encapsulation = encapsulation(&b, &key, dp.sizing().hash_seed);
            let why = match BackendState::from_u8(b.state) {
                BackendState::Up => "up",
                BackendState::Draining => "draining",
                _ => "failed its health checks here; an established TCP flow stays",
            };
            report.reason = format!("tracked flow: stays on its backend ({why})");
            return Ok(report);
        }
        report.reason += "tracked flow whose backend is down, removed, or failed (UDP): it is given a new backend; ";
    } else if let Some(half) = meta.retained() {
        let old = dp.maps.ring_slot(&VipMeta { ring_half: half, ..meta }, slot).map_err(internal)?;
        if let Ok(b) = dp.maps.backend(old)
            && b.vip_id as u32 == meta.id
            && b.state != BackendState::Unused as u8
        {
            report.reason += &format!("without an entry, a packet other than a SYN is taken as a flow older than the change and follows the retained ring to {}; ", endpoint(&b));
        }
    }

    if meta.flags & VIP_FLAG_ROUND_ROBIN != 0 {
        report.verdict = "forward".into();
        report.reason += "round-robin: a new flow takes the next slot of its CPU's turn through the ring; no per-flow answer";
        return Ok(report);
    }
    new_flow(dp, &meta, &key, report).map_err(internal)
}

/// Completes `report` with the backend the scheduler gives a new flow `key` of `meta`.
fn new_flow(dp: &Dataplane, meta: &VipMeta, key: &FlowKey, mut report: ExplainReport) -> anyhow::Result<ExplainReport> {
    let hash = vip_hash(meta.flags, key, dp.sizing().hash_seed, flow_hash(key, dp.sizing().hash_seed, false));
    report.hash = Some(hash);
    report.slot = Some(hash % dp.sizing().ring_size);
    match dp.maps.choose(meta, key) {
        Some(Ok(chosen)) => {
            let b = dp.maps.backend(chosen.id)?;
            report.verdict = "forward".into();
            report.backend = Some(endpoint(&b));
            report.encapsulation = encapsulation(&b, key, dp.sizing().hash_seed);
            let how = if meta.flags & VIP_FLAG_LEAST_CONN != 0 {
                "least-conn: the less loaded of the backends its two candidate slots select, now; "
            } else {
                ""
            };
            report.reason += &format!(
                "{how}new flow: hash {hash:#010x} selects ring slot {}{}",
                chosen.slot,
                if chosen.found != chosen.slot {
                    format!("; its backend is not up, slot {} is the first with an up backend", chosen.found)
                } else {
                    String::new()
                }
            );
            return Ok(report);
        }
        Some(Err(reason)) if reason != lb_common::counters::Reason::DropNoBackend => {
            anyhow::bail!("the maps are incomplete ({})", reason.name());
        }
        _ => {}
    }
    report.verdict = "drop".into();
    report.reason += "no backend of this VIP is up: the packet is dropped and counted (drop_no_backend)";
    Ok(report)
}
