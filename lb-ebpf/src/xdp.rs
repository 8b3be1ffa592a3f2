//! The entry point: parse → VIP lookup → connection table → scheduler → rewrite → forward.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
// Debug logs only on rare paths (failures, rescheduling): off unless the agent runs at debug
// level, and then one global read and branch per log statement reached.
use aya_log_ebpf::debug;
use lb_common::{
    counters::Reason,
    maps::{Backend, BackendState, ConnEntry, FILTER_BACKEND, FILTER_VIP, VipKey, VipMeta},
};

use crate::{
    choose::choose,
    conntrack::{self, Tracked},
    forward,
    maps::{VIPS, maybe_endpoint, vip_is_live},
    nat::{self, Endpoint},
    parse::{Packet, parse},
    stats::{count, count_traffic},
};

/// The XDP program attached to the load balancer's interfaces.
#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let mut slot = core::mem::MaybeUninit::uninit();
    let pkt = match parse(&ctx, &mut slot) {
        Ok(pkt) => pkt,
        Err(reason) => return verdict(xdp_action::XDP_PASS, reason),
    };
    // The endpoint filter's clear bits let traffic for no VIP and from no backend (the host's
    // own) skip both hash lookups.
    if maybe_endpoint(&pkt.key.dst, pkt.key.dport, FILTER_VIP) {
        // Established flows first: their connection-table entry has everything needed, so
        // while their VIP id still serves their VIP they skip the VIPS lookup.
        let tracked = conntrack::tracked(&pkt.key);
        if let Tracked::Live(id, backend, vip_id) = tracked {
            if !(pkt.syn && backend.state == BackendState::Draining as u8) && vip_is_live(vip_id, &pkt.key) {
                return established(&ctx, pkt, vip_id, id, backend);
            }
        }
        let vip_key = VipKey {
            addr: pkt.key.dst,
            port: pkt.key.dport,
            proto: pkt.key.proto,
            family: pkt.key.family,
        };
        if let Some(vip) = VIPS.get_ptr(&vip_key) {
            // SAFETY: pointer from a successful lookup; the agent replaces VIP values whole, so
            // the copy is either the old or the new value.
            let vip = unsafe { *vip };
            return to_backend(&ctx, pkt, &vip, &tracked);
        }
    }
    if maybe_endpoint(&pkt.key.src, pkt.key.sport, FILTER_BACKEND) {
        if let Some(conn) = conntrack::reply(&pkt.key) {
            return to_client(&ctx, pkt, conn);
        }
    }
    verdict(xdp_action::XDP_PASS, Reason::PassNotVip)
}

/// Counts the packet under `reason` and returns `action`. Every path ends here, so every
/// packet is counted exactly once.
#[inline(always)]
fn verdict(action: u32, reason: Reason) -> u32 {
    count(reason);
    action
}

/// A client's packet for a VIP: to the flow's backend, or to a newly chosen one.
///
/// Not inlined, like `to_client`: with everything in one frame LLVM's stack exceeds the
/// verifier's 512 bytes for the whole call chain.
#[inline(never)]
fn to_backend(ctx: &XdpContext, pkt: &Packet, vip: &VipMeta, tracked: &Tracked) -> u32 {
    let (id, backend, new_flow) = match *tracked {
        // A new connection that reuses the 5-tuple of a flow on a draining backend is a new
        // flow: draining keeps existing connections only.
        Tracked::Live(id, backend, _) if !(pkt.syn && backend.state == BackendState::Draining as u8) => {
            (id, backend, false)
        }
        ref tracked => {
            if matches!(tracked, Tracked::Stale) {
                count(Reason::Rescheduled);
                debug!(ctx, "VIP {}: a flow's backend is down or gone; choosing again", vip.id);
            }
            let (id, backend) = match choose(vip, &pkt.key) {
                Ok(chosen) => chosen,
                Err(reason) => {
                    debug!(ctx, "VIP {}: no backend for a new flow (reason {})", vip.id, reason as u32);
                    return verdict(xdp_action::XDP_DROP, reason);
                }
            };
            conntrack::track(ctx, pkt, vip.id, id, backend);
            (id, backend, true)
        }
    };
    forward_to(ctx, pkt, vip.id, id, backend, new_flow)
}

/// A packet of an established flow whose VIP id still serves its VIP: to its backend.
#[inline(never)]
fn established(ctx: &XdpContext, pkt: &Packet, vip_id: u32, id: u32, backend: &Backend) -> u32 {
    forward_to(ctx, pkt, vip_id, id, backend, false)
}

/// Rewrites `pkt` to backend `id`, counts it and sends it on.
#[inline(always)]
fn forward_to(ctx: &XdpContext, pkt: &Packet, vip_id: u32, id: u32, backend: &Backend, new_flow: bool) -> u32 {
    if let Err(reason) = nat::rewrite(ctx, pkt, Endpoint::Destination, &backend.addr, backend.port) {
        return verdict(xdp_action::XDP_PASS, reason);
    }
    count_traffic(vip_id, id, pkt.len, new_flow);
    match forward::send(ctx, pkt, &backend.hop, &pkt.key.src, &backend.addr) {
        Ok(action) => verdict(action, Reason::ForwardToBackend),
        Err(reason) => verdict(xdp_action::XDP_PASS, reason),
    }
}

/// A backend's reply: back to the VIP's address and port, towards the client.
#[inline(never)]
fn to_client(ctx: &XdpContext, pkt: &Packet, conn: &ConnEntry) -> u32 {
    if let Err(reason) = nat::rewrite(ctx, pkt, Endpoint::Source, &conn.vip_addr, conn.vip_port) {
        return verdict(xdp_action::XDP_PASS, reason);
    }
    count_traffic(conn.vip_id, conn.backend_id, pkt.len, false);
    match forward::send(ctx, pkt, &conn.client_hop, &conn.vip_addr, &pkt.key.dst) {
        Ok(action) => verdict(action, Reason::ReplyToClient),
        Err(reason) => verdict(xdp_action::XDP_PASS, reason),
    }
}
