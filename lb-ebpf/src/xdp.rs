//! The entry point: parse → sanity → VIP lookup → connection table → scheduler → rewrite →
//! forward. Replies are translated from `REPLIES`; fragments and ICMP errors have their own
//! short paths.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
// Debug logs only on rare paths (failures, rescheduling): off unless the agent runs at debug
// level, and then one global read and branch per log statement reached.
use aya_log_ebpf::debug;
use lb_common::{
    counters::Reason,
    encap::is_dsr,
    hash::flow_hash,
    martian::is_martian,
    maps::{Backend, BackendKey, BackendState, FILTER_BACKEND, FILTER_VIP, Flow, FlowKey, PROTO_TCP, PROTO_UDP, ReplyTarget, VipKey, VipMeta},
    schedule::{Chosen, flow_state_of, follow, follow_retained, vip_hash},
};

use crate::{
    choose::{LiveRing, choose, is_moved},
    conntrack::{self, Tracked},
    dsr, forward, icmp,
    maps::{BACKENDS, REPLIES, find_vip, hash_seed, is_vip_address, maybe_endpoint, ring_size, vip_address},
    nat::{self, Endpoint},
    parse::{self, Kind, Packet, frame_len, parse},
    sanity,
    stats::{count, count_traffic},
};

/// The XDP program attached to the load balancer's interfaces.
///
/// Declared frags-aware (`xdp.frags`, BPF_F_XDP_HAS_FRAGS), so that drivers take it at an MTU
/// above a page (jumbo frames): the headers are read from the frame's first buffer, the only
/// part `data..data_end` covers, and a larger packet is forwarded whole, its other buffers
/// untouched. (The `single-buffer` feature builds it without frags, for the tests only.)
#[cfg_attr(not(feature = "single-buffer"), xdp(frags))]
#[cfg_attr(feature = "single-buffer", xdp)]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let mut slot = core::mem::MaybeUninit::uninit();
    let pkt = match parse(&ctx, &mut slot) {
        Ok(pkt) => pkt,
        Err(reason) => return verdict(xdp_action::XDP_PASS, reason),
    };
    match pkt.kind {
        Kind::Transport => {}
        Kind::Fragment | Kind::FirstFragment => {
            pkt.len = frame_len(&ctx);
            return fragment(&ctx, pkt);
        }
        Kind::Ipv4Options => return unbalanced(pkt, Reason::PassIpv4Options, Reason::DropIpv4Options),
        Kind::Icmp | Kind::IcmpError => return icmp_error(&ctx, pkt),
    }
    // The endpoint filter's clear bits let traffic for no VIP and from no backend (the host's
    // own) skip both hash lookups.
    if maybe_endpoint(&pkt.key.dst, pkt.key.dport, FILTER_VIP) {
        pkt.len = frame_len(&ctx);
        if let Err(reason) = sanity::check(&ctx, pkt) {
            return verdict(xdp_action::XDP_DROP, reason);
        }
        // Not zeroed: LLVM zeroes a 24-byte value with a call to a byte-wise `memset` loop,
        // which took 5 % of an established packet's time (bench/results/profile-194f8b2.md).
        // `to_vip` fills it.
        let mut vip = core::mem::MaybeUninit::<VipMeta>::uninit();
        // `maglev` and `moved_slot` are called from here rather than from their callers, so
        // that no two of the three frames are on the stack together (the verifier allows 512
        // bytes for the whole chain).
        let action = match to_vip(&ctx, pkt, &mut vip) {
            // SAFETY: `to_vip` returns `MAGLEV` only after writing `vip`.
            Some(MAGLEV) => maglev(&ctx, pkt, unsafe { vip.assume_init_ref() }),
            other => other,
        };
        match action {
            // SAFETY: `maglev` returns `IN_MOVED_SLOT`, so `to_vip` returned `MAGLEV` and wrote `vip`.
            Some(IN_MOVED_SLOT) => return moved_slot(&ctx, pkt, unsafe { vip.assume_init_ref() }),
            Some(action) => return action,
            None => {}
        }
    }
    if maybe_endpoint(&pkt.key.src, pkt.key.sport, FILTER_BACKEND) {
        pkt.len = frame_len(&ctx);
        if let Some(action) = to_client(&ctx, pkt) {
            return action;
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

/// The VIP a backend endpoint's packets are translated to, if it is one.
#[inline(always)]
fn reply_target(addr: &lb_common::maps::Addr, port: u16, proto: u8, family: u8) -> Option<ReplyTarget> {
    let key = BackendKey { addr: *addr, port, proto, family };
    // SAFETY: pointer from a successful lookup, copied at once; the agent replaces values whole.
    REPLIES.get_ptr(&key).map(|t| unsafe { *t })
}

/// What `to_vip` returns (instead of an XDP action) for a Maglev VIP's packet: the caller
/// hands it to `maglev`.
const MAGLEV: u32 = u32::MAX - 1;
/// What `maglev` returns (instead of an XDP action) for a packet in a moved slot: the caller
/// hands it to `moved_slot`.
const IN_MOVED_SLOT: u32 = u32::MAX;

/// A client's packet for a VIP (`None`: no VIP at its destination): [`MAGLEV`] for a Maglev
/// VIP, with the VIP copied to `vip`, else sent with the connection table.
///
/// Not inlined, like `to_client`, and the lookups are made here rather than in `lb_xdp`:
/// with their keys and values in one frame LLVM's stack exceeds the verifier's 512 bytes for
/// the whole call chain.
#[inline(never)]
fn to_vip(ctx: &XdpContext, pkt: &Packet, vip: &mut core::mem::MaybeUninit<VipMeta>) -> Option<u32> {
    let vip_key = VipKey { addr: pkt.key.dst, port: pkt.key.dport, proto: pkt.key.proto, family: pkt.key.family };
    let vip = vip.write(find_vip(&vip_key)?);
    if vip.is_maglev() {
        return Some(MAGLEV);
    }
    let tracked = conntrack::tracked(&pkt.key, pkt.tcp_flags);
    Some(to_backend(ctx, pkt, vip, &tracked))
}

/// The ring slot of `key` in a Maglev `vip`'s rings of `size` (non-zero) slots.
#[inline(always)]
fn slot_of(vip: &VipMeta, key: &FlowKey, size: u32) -> u32 {
    vip_hash(vip.flags, key, hash_seed(), flow_hash(key, hash_seed(), false)) % size
}

/// A client's packet for a Maglev VIP. In a slot that has not moved, the live ring decides
/// (`schedule::follow`) and nothing per flow is read or written; in a moved slot
/// ([`IN_MOVED_SLOT`]), the connection table does (`moved_slot`).
#[inline(never)]
fn maglev(ctx: &XdpContext, pkt: &Packet, vip: &VipMeta) -> Option<u32> {
    Some(stateless(ctx, pkt, vip))
}

/// `maglev`'s work, returning the action or [`IN_MOVED_SLOT`].
#[inline(always)]
fn stateless(ctx: &XdpContext, pkt: &Packet, vip: &VipMeta) -> u32 {
    let size = ring_size();
    if size == 0 {
        // Never loaded like this (the agent checks sizes); the test removes the division by
        // zero, which the verifier would reject.
        return verdict(xdp_action::XDP_DROP, Reason::DropMapMiss);
    }
    let slot = slot_of(vip, &pkt.key, size);
    if is_moved(vip.id, slot, size) {
        return IN_MOVED_SLOT;
    }
    // Every packet here is checked as a new flow's would be: no entry vouches for it.
    if let Err(reason) = sanity::client_source_ok(&pkt.key) {
        return verdict(xdp_action::XDP_DROP, reason);
    }
    count(Reason::Stateless);
    let existing = flow_state_of(pkt.is_tcp(), pkt.syn());
    let chosen = match follow(&LiveRing::of(vip, vip.ring_half, size), slot, size, existing) {
        Ok(chosen) => chosen,
        Err(reason) => return no_backend(ctx, vip, reason),
    };
    if existing.is_some() && chosen.found != slot {
        count(Reason::Rescheduled);
    }
    let Some(backend) = BACKENDS.get(chosen.id) else {
        return verdict(xdp_action::XDP_DROP, Reason::DropMapMiss);
    };
    forward_to(ctx, pkt, vip.id, chosen.id, backend, pkt.syn())
}

/// A client's packet in a moved slot of a Maglev VIP: its entry when it has a live one, else
/// a backend chosen and recorded by `pick_moved`.
#[inline(never)]
fn moved_slot(ctx: &XdpContext, pkt: &Packet, vip: &VipMeta) -> u32 {
    count(Reason::MovedSlot);
    let tracked = conntrack::tracked(&pkt.key, pkt.tcp_flags);
    if let Tracked::Live(id, backend, _) = tracked
        && !pkt.syn()
    {
        return forward_to(ctx, pkt, vip.id, id, backend, false);
    }
    if let Err(reason) = sanity::client_source_ok(&pkt.key) {
        return verdict(xdp_action::XDP_DROP, reason);
    }
    to_picked(ctx, pkt, vip, pick_moved(pkt, vip, &tracked))
}

/// The backend of a packet in a moved slot without a live entry (or a SYN), and what it
/// records:
/// - a SYN: the live ring's choice, recorded in `HALF_OPEN` (a SYN flood evicts no
///   established flow), and a reused 5-tuple's old entry replaced;
/// - the packet after a SYN this node saw: the half-open entry's backend, moved to `CONNS`
///   and handed to flow sync (`sync::connection_started`);
/// - any other packet (TCP without SYN, UDP): a flow older than the change, sent by the
///   retained ring while that backend keeps it, else by the live ring; recorded in `CONNS`;
/// - a flow whose entry's backend is down or gone: the live ring's choice, recorded.
#[inline(never)]
fn pick_moved(pkt: &Packet, vip: &VipMeta, tracked: &Tracked) -> Result<u32, Reason> {
    let syn = pkt.syn();
    let size = ring_size();
    if size == 0 {
        return Err(Reason::DropMapMiss);
    }
    let slot = slot_of(vip, &pkt.key, size);
    if let Some(id) = from_half_open(pkt) {
        if !syn {
            // A connection of this node's live ring that peers would take for an old flow.
            crate::sync::connection_started(&pkt.key, vip.id, id);
        }
        return Ok(id);
    }
    let live = LiveRing::of(vip, vip.ring_half, size);
    let stale = matches!(tracked, Tracked::Stale);
    let chosen = match (flow_state_of(pkt.is_tcp(), syn), vip.retained()) {
        (Some(state), Some(half)) if !stale => {
            let (chosen, retained) = follow_retained(&LiveRing::of(vip, half, size), &live, slot, size, state)?;
            count(if retained { Reason::RetainedRing } else { Reason::Rescheduled });
            chosen
        }
        (state, _) => {
            if stale {
                count(Reason::Rescheduled);
            } else if state == Some(lb_common::flow::FLOW_OPEN) {
                count(Reason::FlowResumedWithoutEntry);
            }
            follow(&live, slot, size, if stale { None } else { state })?
        }
    };
    let flow = new_flow(pkt, vip, chosen.id, BACKENDS.get(chosen.id).ok_or(Reason::DropMapMiss)?);
    if syn {
        // A reused 5-tuple: its old entry must not catch the new connection's next packet.
        if !matches!(tracked, Tracked::Miss) {
            record(&pkt.key, &flow, false);
        }
        record(&pkt.key, &flow, true);
        return Ok(chosen.id);
    }
    record(&pkt.key, &flow, false);
    Ok(chosen.id)
}

/// A packet for `vip` for which no backend could be chosen: dropped, counted under `reason`
/// and against the VIP.
#[inline(always)]
fn no_backend(ctx: &XdpContext, vip: &VipMeta, reason: Reason) -> u32 {
    debug!(ctx, "VIP {}: no backend for a new flow (reason {})", vip.id, reason as u32);
    crate::stats::count_vip_drop(vip.id);
    verdict(xdp_action::XDP_DROP, reason)
}

/// A client's packet for a round-robin or least-conn `vip`: to the flow's backend, or to a
/// newly chosen one.
#[inline(always)]
fn to_backend(ctx: &XdpContext, pkt: &Packet, vip: &VipMeta, tracked: &Tracked) -> u32 {
    if let Tracked::Live(id, backend, _) = *tracked {
        // A SYN on a tracked 5-tuple starts a new connection; draining keeps existing ones only.
        if !pkt.syn() {
            return forward_to(ctx, pkt, vip.id, id, backend, false);
        }
    }
    if let Err(reason) = sanity::client_source_ok(&pkt.key) {
        return verdict(xdp_action::XDP_DROP, reason);
    }
    if matches!(tracked, Tracked::Stale) {
        count(Reason::Rescheduled);
        debug!(ctx, "VIP {}: a flow's backend is down or gone; choosing again", vip.id);
    }
    to_picked(ctx, pkt, vip, pick(pkt, vip, tracked))
}

/// Sends `pkt` to the backend `picked` names for a flow without a live entry, or drops it
/// when no backend could be chosen. New flows are counted at their SYN (TCP) or at their
/// entry's insert (UDP).
#[inline(always)]
fn to_picked(ctx: &XdpContext, pkt: &Packet, vip: &VipMeta, picked: Result<u32, Reason>) -> u32 {
    let id = match picked {
        Ok(id) => id,
        Err(reason) => return no_backend(ctx, vip, reason),
    };
    let Some(backend) = BACKENDS.get(id) else {
        return verdict(xdp_action::XDP_DROP, Reason::DropMapMiss);
    };
    forward_to(ctx, pkt, vip.id, id, backend, pkt.syn() || !pkt.is_tcp())
}

/// Chooses the backend of a round-robin or least-conn VIP's packet that has no live entry (or
/// is a SYN), and records what the flow needs: a half-open entry for a SYN, a
/// connection-table entry for the flow's first packet after its SYN. Returns the backend's id.
///
/// Not inlined (its own frame keeps the chain below 512 bytes of stack); it returns the id
/// alone because a BPF-to-BPF call may not write a map pointer into its caller's frame.
#[inline(never)]
fn pick(pkt: &Packet, vip: &VipMeta, tracked: &Tracked) -> Result<u32, Reason> {
    let syn = pkt.syn();
    if let Some(id) = from_half_open(pkt) {
        return Ok(id);
    }
    let (id, backend) = choose(vip, &pkt.key, flow_hash(&pkt.key, hash_seed(), false))?;
    let flow = new_flow(pkt, vip, id, backend);
    if syn {
        // A reused 5-tuple: its old entry must not catch the new connection's next packet.
        if !matches!(tracked, Tracked::Miss) {
            record(&pkt.key, &flow, false);
        }
        record(&pkt.key, &flow, true);
        return Ok(id);
    }
    if pkt.is_tcp() && !matches!(tracked, Tracked::Stale) {
        count(Reason::FlowResumedWithoutEntry);
    }
    record(&pkt.key, &flow, false);
    Ok(id)
}

/// The backend a TCP flow's half-open entry gives `pkt`: the packet after the SYN moves the
/// flow to the connection table; a retransmitted SYN keeps the backend while it takes new
/// flows.
#[inline(always)]
fn from_half_open(pkt: &Packet) -> Option<u32> {
    if !pkt.is_tcp() {
        return None;
    }
    let Tracked::Live(id, backend, flow) = conntrack::half_open(&pkt.key) else {
        return None;
    };
    if !pkt.syn() {
        record(&pkt.key, &flow, false);
        return Some(id);
    }
    (backend.state == BackendState::Up as u8).then_some(id)
}

/// The entry of `pkt`'s flow, given backend `id` of `vip` by this CPU now.
#[inline(always)]
fn new_flow(pkt: &Packet, vip: &VipMeta, id: u32, backend: &Backend) -> Flow {
    let udp = pkt.key.proto == PROTO_UDP;
    let now = if udp { conntrack::now() } else { 0 };
    // SAFETY: a helper call without arguments.
    let cpu = unsafe { aya_ebpf::helpers::generated::bpf_get_smp_processor_id() };
    Flow::new(id, backend.generation, vip.id, udp, vip.udp_idle_secs, now, cpu)
}

/// Records `flow` for `key` (`conntrack::track`); a failed insert is counted, and the packet
/// is still forwarded. Counted here rather than in `track`, whose frame would otherwise
/// hold the counter's key: it is the fourth call of the deepest chain (lb_xdp → to_vip →
/// pick → track), whose frames add up to the verifier's 512-byte limit.
#[inline(always)]
fn record(key: &FlowKey, flow: &Flow, half_open: bool) {
    if !conntrack::track(key, flow, half_open) {
        count(Reason::ConnInsertFailed);
    }
}

/// Rewrites `pkt` to backend `id` (or, for a direct server return backend, carries it there
/// unchanged), counts it and sends it on.
#[inline(always)]
fn forward_to(ctx: &XdpContext, pkt: &Packet, vip_id: u32, id: u32, backend: &Backend, new_flow: bool) -> u32 {
    if is_dsr(backend.forwarding) {
        return to_dsr_backend(ctx, pkt, vip_id, id, backend, new_flow, Reason::ForwardToBackend);
    }
    if let Err(reason) = nat::rewrite(ctx, pkt, Endpoint::Destination, &backend.addr, backend.port) {
        return verdict(xdp_action::XDP_PASS, reason);
    }
    count_traffic(vip_id, id, pkt.len, new_flow);
    match forward::send(ctx, pkt, &backend.hop, &pkt.key.src, &backend.addr) {
        Ok(action) => verdict(action, Reason::ForwardToBackend),
        Err(reason) => verdict(xdp_action::XDP_PASS, reason),
    }
}

/// Carries `pkt` to direct server return backend `id` ([`dsr::forward`]) and counts it under
/// `sent`, with the VIP's and the backend's traffic.
#[inline(always)]
fn to_dsr_backend(ctx: &XdpContext, pkt: &Packet, vip_id: u32, id: u32, backend: &Backend, new_flow: bool, sent: Reason) -> u32 {
    match dsr::forward(ctx, pkt, backend) {
        Ok(action) => {
            count_traffic(vip_id, id, pkt.len, new_flow);
            verdict(action, sent)
        }
        Err(reason) => verdict(dsr::action_of(reason), reason),
    }
}

/// A backend's reply: back to the VIP's address and port, towards the client by the FIB
/// (`None`: not from a backend endpoint). Translated from the backend endpoint alone, so any
/// node with the same configuration translates it, whichever node saw the flow's first packet.
#[inline(never)]
fn to_client(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let target = reply_target(&pkt.key.src, pkt.key.sport, pkt.key.proto, pkt.key.family)?;
    Some(reply(ctx, pkt, &target))
}

/// Translates a backend's reply to `target`'s VIP and sends it towards the client.
#[inline(always)]
fn reply(ctx: &XdpContext, pkt: &Packet, target: &ReplyTarget) -> u32 {
    if let Err(reason) = sanity::check(ctx, pkt) {
        return verdict(xdp_action::XDP_DROP, reason);
    }
    if is_martian(&pkt.key.dst, pkt.key.family) {
        return verdict(xdp_action::XDP_DROP, Reason::DropMartian);
    }
    let hop = match forward::towards_client(ctx, pkt, &target.vip.addr, &pkt.key.dst) {
        Ok(hop) => hop,
        Err(reason) => return verdict(xdp_action::XDP_PASS, reason),
    };
    if let Err(reason) = nat::rewrite(ctx, pkt, Endpoint::Source, &target.vip.addr, target.vip.port) {
        return verdict(xdp_action::XDP_PASS, reason);
    }
    count_traffic(target.vip_id, target.backend_id, pkt.len, false);
    match forward::send_to(ctx, &hop) {
        Ok(action) => verdict(action, Reason::ReplyToClient),
        Err(reason) => verdict(xdp_action::XDP_PASS, reason),
    }
}

/// An IPv4 header with options, which the data path does not balance: dropped when addressed
/// to a VIP address (its host would answer it with a reset or port unreachable, as the VIP
/// address is its own), passed otherwise.
#[inline(never)]
fn unbalanced(pkt: &Packet, pass: Reason, drop: Reason) -> u32 {
    if is_vip_address(&pkt.key, false) {
        return verdict(xdp_action::XDP_DROP, drop);
    }
    verdict(xdp_action::XDP_PASS, pass)
}

/// An IPv4 fragment. To a VIP address whose only VIP of its protocol hashes on the source
/// alone (`VipAddress`): sent to the backend the client's address selects, like every other
/// fragment of its datagram (the first also has its port rewritten). To any other VIP
/// address: dropped, as a later fragment carries no port to tell its VIP by. Otherwise passed.
#[inline(never)]
fn fragment(ctx: &XdpContext, pkt: &Packet) -> u32 {
    // A fragment with IPv4 options has its transport header (if any) at a variable offset:
    // not balanced, as any header with options. Told here rather than by `parse`, where the
    // test grew the common path's stack.
    if parse::has_ipv4_options(ctx, pkt) {
        return unbalanced(pkt, Reason::PassIpv4Options, Reason::DropIpv4Options);
    }
    let Some(address) = vip_address(&pkt.key, false) else {
        return verdict(xdp_action::XDP_PASS, Reason::PassFragment);
    };
    let port = address.fragments_port(pkt.key.proto);
    let first = pkt.kind == Kind::FirstFragment;
    if port == 0 || (first && pkt.key.dport != port) {
        return verdict(xdp_action::XDP_DROP, Reason::DropFragment);
    }
    let sane = if first { sanity::first_fragment(ctx, pkt) } else { sanity::check(ctx, pkt) };
    if let Err(reason) = sane.and_then(|()| sanity::client_source_ok(&pkt.key)) {
        return verdict(xdp_action::XDP_DROP, reason);
    }
    let vip_key = VipKey { addr: pkt.key.dst, port, proto: pkt.key.proto, family: pkt.key.family };
    let Some(vip) = find_vip(&vip_key) else {
        return verdict(xdp_action::XDP_DROP, Reason::DropFragment);
    };
    // A source-affinity VIP's choice hashes the source address alone: the hash passed for the
    // 5-tuple is not used.
    let (id, backend) = match choose(&vip, &pkt.key, 0) {
        Ok(chosen) => chosen,
        Err(reason) => return verdict(xdp_action::XDP_DROP, reason),
    };
    if is_dsr(backend.forwarding) {
        return to_dsr_backend(ctx, pkt, vip.id, id, backend, false, Reason::ForwardToBackend);
    }
    let rewritten = if first {
        nat::rewrite(ctx, pkt, Endpoint::Destination, &backend.addr, backend.port)
    } else {
        nat::rewrite_fragment_destination(ctx, pkt, &backend.addr)
    };
    if let Err(reason) = rewritten {
        return verdict(xdp_action::XDP_PASS, reason);
    }
    count_traffic(vip.id, id, pkt.len, false);
    match forward::send(ctx, pkt, &backend.hop, &pkt.key.src, &backend.addr) {
        Ok(action) => verdict(action, Reason::ForwardToBackend),
        Err(reason) => verdict(xdp_action::XDP_PASS, reason),
    }
}

/// An ICMP or ICMPv6 packet: an error quoting a VIP flow's packet follows its flow (see
/// `icmp`); anything else passes.
///
/// An error about a VIP's flow is dropped as martian when its outer source is martian or a VIP
/// address (no host sends errors from those; a forged one would reach a backend or a client in
/// the VIP's name), as a new flow from such a source is. The source is judged here, while
/// `pkt.key` still holds the outer addresses, and only acted on once the error is known to be
/// about a VIP's flow: other ICMP traffic from such a source passes as before.
#[inline(never)]
fn icmp_error(ctx: &XdpContext, pkt: &mut Packet) -> u32 {
    pkt.icmp_martian_source = is_martian(&pkt.key.src, pkt.key.family) || is_vip_address(&pkt.key, true);
    if let Err(reason) = parse::quoted(ctx, pkt) {
        return verdict(xdp_action::XDP_PASS, reason);
    }
    pkt.len = frame_len(ctx);
    // An error goes to the quoted packet's source: to a VIP about a reply the load balancer
    // sent (the error belongs to the client's flow), or to a client about a packet a backend
    // received. `quoted` took every error to the quoted source for the first; the endpoint
    // filter finds the second (a client's own error about a reply stays the first).
    let k = &mut pkt.key;
    if pkt.icmp_to_sender && !maybe_endpoint(&k.dst, k.dport, FILTER_VIP) && maybe_endpoint(&k.src, k.sport, FILTER_BACKEND) {
        core::mem::swap(&mut k.src, &mut k.dst);
        core::mem::swap(&mut k.sport, &mut k.dport);
        pkt.icmp_to_sender = false;
    }
    let pkt = &*pkt;
    if pkt.icmp_to_sender {
        return icmp_to_backend(ctx, pkt);
    }
    icmp_to_client(ctx, pkt)
}

/// The checks of an ICMP error about a VIP's flow before it is rewritten: `sanity::icmp_error`
/// (lengths), its source (`pkt.icmp_martian_source`) and, for one towards a client, the
/// client's address (the quoted source).
#[inline(always)]
fn icmp_sane(ctx: &XdpContext, pkt: &Packet) -> Result<(), Reason> {
    sanity::icmp_error(ctx, pkt)?;
    if pkt.icmp_martian_source || (!pkt.icmp_to_sender && is_martian(&pkt.key.src, pkt.key.family)) {
        return Err(Reason::DropMartian);
    }
    Ok(())
}

/// An error from the backend side about a client's packet: to the client, from the VIP. Its
/// outer source is the backend, or a router on the way to it; either is replaced by the VIP.
#[inline(never)]
fn icmp_to_client(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let q = &pkt.key;
    let Some(target) = reply_target(&q.dst, q.dport, q.proto, q.family) else {
        return verdict(xdp_action::XDP_PASS, Reason::PassNotTcpUdp);
    };
    if let Err(reason) = icmp_sane(ctx, pkt) {
        return verdict(xdp_action::XDP_DROP, reason);
    }
    let hop = match forward::towards_client(ctx, pkt, &target.vip.addr, &q.src) {
        Ok(hop) => hop,
        Err(reason) => return verdict(xdp_action::XDP_PASS, reason),
    };
    // Read here rather than kept from `icmp_sane`: held across the FIB lookup, LLVM spilled a
    // pointer into a 32-bit stack slot, which the verifier refuses.
    let rewritten = sanity::ip_end(ctx, pkt).and_then(|end| icmp::rewrite(ctx, pkt, end, &target.vip.addr, target.vip.port));
    if let Err(reason) = rewritten {
        return verdict(xdp_action::XDP_PASS, reason);
    }
    count_traffic(target.vip_id, target.backend_id, pkt.len, false);
    match forward::send_to(ctx, &hop) {
        Ok(action) => verdict(action, Reason::IcmpToClient),
        Err(reason) => verdict(xdp_action::XDP_PASS, reason),
    }
}

/// An error about a packet the load balancer sent for a VIP's flow: to that flow's backend
/// (`flow_backend`; nothing is inserted). Through the
/// backend's resolved next hop, or else by the kernel's routing (no FIB lookup here).
#[inline(never)]
fn icmp_to_backend(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let q = &pkt.key;
    let vip_key = VipKey { addr: q.dst, port: q.dport, proto: q.proto, family: q.family };
    let Some(vip) = &find_vip(&vip_key) else {
        return verdict(xdp_action::XDP_PASS, Reason::PassNotTcpUdp);
    };
    if let Err(reason) = icmp_sane(ctx, pkt) {
        return verdict(xdp_action::XDP_DROP, reason);
    }
    let id = match flow_backend(vip, &pkt.key) {
        Ok(id) => id,
        Err(reason) => return verdict(xdp_action::XDP_DROP, reason),
    };
    let Some(backend) = BACKENDS.get(id) else {
        return verdict(xdp_action::XDP_DROP, Reason::DropMapMiss);
    };
    // A direct server return backend holds the VIP: the error reaches it unchanged.
    if is_dsr(backend.forwarding) {
        return to_dsr_backend(ctx, pkt, vip.id, id, backend, false, Reason::IcmpToBackend);
    }
    let rewritten = sanity::ip_end(ctx, pkt).and_then(|end| icmp::rewrite(ctx, pkt, end, &backend.addr, backend.port));
    if let Err(reason) = rewritten {
        return verdict(xdp_action::XDP_PASS, reason);
    }
    count_traffic(vip.id, id, pkt.len, false);
    match forward::send_resolved(ctx, &backend.hop) {
        Ok(action) => verdict(action, Reason::IcmpToBackend),
        Err(reason) => verdict(xdp_action::XDP_PASS, reason),
    }
}

/// The backend of an existing flow `key` of `vip`, as its next packet without a SYN would
/// find it, without recording anything: a Maglev VIP's live ring in a slot that has not moved;
/// else the flow's live entry, or without one the retained ring (Maglev) or the scheduler.
#[inline(never)]
fn flow_backend(vip: &VipMeta, key: &FlowKey) -> Result<u32, Reason> {
    let size = ring_size();
    if size == 0 {
        return Err(Reason::DropMapMiss);
    }
    let slot = slot_of(vip, key, size);
    let maglev = vip.is_maglev();
    if !maglev || is_moved(vip.id, slot, size) {
        if let Tracked::Live(id, ..) = conntrack::tracked(key, 0) {
            return Ok(id);
        }
        if !maglev {
            return choose(vip, key, flow_hash(key, hash_seed(), false)).map(|(id, _)| id);
        }
    }
    let live = LiveRing::of(vip, vip.ring_half, size);
    let state = flow_state_of(key.proto == PROTO_TCP, false);
    let chosen: Chosen = match (vip.retained(), state) {
        (Some(half), Some(state)) if is_moved(vip.id, slot, size) => follow_retained(&LiveRing::of(vip, half, size), &live, slot, size, state)?.0,
        _ => follow(&live, slot, size, state)?,
    };
    Ok(chosen.id)
}
