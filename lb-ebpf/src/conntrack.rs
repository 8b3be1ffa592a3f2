//! The connection table: which backend a flow was given, and how to rewrite its replies.

use lb_common::{
    counters::Reason,
    maps::{Backend, BackendState, CONN_TO_BACKEND, CONN_TO_CLIENT, ConnEntry, FlowKey},
};

use aya_ebpf::programs::XdpContext;

use crate::{
    forward::arrived_from,
    maps::{BACKENDS, CONNS},
    parse::Packet,
    stats::count,
};

/// What the table says about a client → VIP packet.
pub enum Tracked {
    /// Not tracked: a new flow.
    Miss,
    /// Tracked, and its backend still serves it (up or draining): backend id, backend, and
    /// the VIP id the flow was assigned under.
    Live(u32, &'static Backend, u32),
    /// Tracked, but its backend is down or its slot was given to another backend.
    Stale,
}

/// Looks up the flow of a client → VIP packet.
#[inline(always)]
pub fn tracked(key: &FlowKey) -> Tracked {
    let Some(entry) = CONNS.get_ptr(key) else {
        return Tracked::Miss;
    };
    // SAFETY: the pointer comes from a successful map lookup; the fields are copied out at once
    // (a concurrent update can at worst give a stale backend id, which the checks below catch).
    let (kind, id, generation, vip_id) =
        unsafe { ((*entry).kind, (*entry).backend_id, (*entry).backend_gen, (*entry).vip_id) };
    if kind != CONN_TO_BACKEND {
        return Tracked::Miss;
    }
    match BACKENDS.get(id) {
        Some(b)
            if b.generation == generation
                && (b.state == BackendState::Up as u8 || b.state == BackendState::Draining as u8) =>
        {
            Tracked::Live(id, b, vip_id)
        }
        _ => Tracked::Stale,
    }
}

/// The reply entry for a backend → client packet, if this is one.
#[inline(always)]
pub fn reply(key: &FlowKey) -> Option<&'static ConnEntry> {
    let entry = CONNS.get_ptr(key)?;
    // SAFETY: pointer from a successful lookup, valid for this program run (RCU). The entry is
    // read in place rather than copied to keep the stack small; reply entries are written
    // once, when their flow is assigned.
    let entry = unsafe { &*entry };
    (entry.kind == CONN_TO_CLIENT).then_some(entry)
}

/// Records both directions of the flow of `pkt`, now served by backend `id`. Replies go back
/// to the hop the client's packet came from.
///
/// Not inlined: its two entries and keys would push the caller's frame past the BPF stack
/// limit (512 bytes); as a BPF-to-BPF call its frame is separate.
#[inline(never)]
pub fn track(ctx: &XdpContext, pkt: &Packet, vip_id: u32, id: u32, backend: &Backend) {
    let Ok(client_hop) = arrived_from(ctx) else {
        return;
    };
    // One entry serves both directions: the forward entry simply carries the reply fields too.
    // Building it once keeps this frame small.
    let mut entry = ConnEntry {
        kind: CONN_TO_BACKEND,
        backend_id: id,
        backend_gen: backend.generation,
        vip_id,
        vip_addr: pkt.key.dst,
        vip_port: pkt.key.dport,
        client_hop,
        ..ConnEntry::default()
    };
    let forward_ok = CONNS.insert(&pkt.key, &entry, 0).is_ok();
    entry.kind = CONN_TO_CLIENT;
    let reply_key = FlowKey {
        src: backend.addr,
        dst: pkt.key.src,
        sport: backend.port,
        dport: pkt.key.sport,
        proto: pkt.key.proto,
        family: pkt.key.family,
        pad: [0; 2],
    };
    if !forward_ok || CONNS.insert(&reply_key, &entry, 0).is_err() {
        count(Reason::ConnInsertFailed);
        aya_log_ebpf::debug!(ctx, "VIP {}: connection table insert failed", vip_id);
    }
}
