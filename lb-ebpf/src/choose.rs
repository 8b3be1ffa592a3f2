//! The schedulers: a new flow's backend from the VIP's live ring.
//!
//! - maglev: the slot the flow's hash selects (the same on every node);
//! - round-robin: the next slot of this CPU's cursor (the agent fills round-robin rings with
//!   a smooth weighted round-robin sequence);
//! - least-conn: of the backends of two slots the flow's hash selects, the one with fewer
//!   tracked flows ("power of two choices").
//!
//! From its slot, each walks forward to the first `Up` backend (at most [`MAX_RING_PROBES`]
//! slots: only while the agent has not yet swapped in a ring without a failed backend).

use lb_common::{
    counters::Reason,
    hash::{flow_hash, second_choice},
    limits::{MAX_RING_PROBES, ring_index},
    maglev::NO_BACKEND,
    maps::{
        Backend, BackendState, FlowKey, VIP_FLAG_HASH_SRC_ONLY, VIP_FLAG_LEAST_CONN,
        VIP_FLAG_ROUND_ROBIN, VipMeta,
    },
};

use crate::maps::{ACTIVE_CONNS, BACKENDS, RING, RR_CURSORS, hash_seed, ring_size};

/// A chosen backend: its slot id and its entry.
type Chosen = (u32, &'static Backend);

/// Picks the backend for a new flow of `vip`; `hash` is the flow's full 5-tuple hash
/// (`flow_hash(key, seed, false)`), computed once by the caller.
#[inline(always)]
pub fn choose(vip: &VipMeta, key: &FlowKey, hash: u32) -> Result<Chosen, Reason> {
    let size = ring_size();
    if size == 0 {
        // Never loaded like this (the agent checks sizes); the test also removes the
        // division-by-zero panic path, which the verifier would reject.
        return Err(Reason::DropMapMiss);
    }
    let rings = Rings { vip_id: vip.id, half: vip.ring_half & 1, size };
    if vip.flags & VIP_FLAG_ROUND_ROBIN != 0 {
        let cursor = RR_CURSORS.get_ptr_mut(vip.id).ok_or(Reason::DropMapMiss)?;
        // SAFETY: per-CPU slot: no other program instance uses it concurrently.
        let slot = unsafe { *cursor } % size;
        // SAFETY: as above.
        unsafe { *cursor = if slot + 1 == size { 0 } else { slot + 1 } };
        return rings.first_up(slot);
    }
    let hash = if vip.flags & VIP_FLAG_HASH_SRC_ONLY != 0 { flow_hash(key, hash_seed(), true) } else { hash };
    let first = rings.first_up(hash % size)?;
    if vip.flags & VIP_FLAG_LEAST_CONN == 0 {
        return Ok(first);
    }
    let chosen = match rings.first_up(second_choice(hash) % size) {
        Ok(second) if active(second.0) < active(first.0) => second,
        _ => first,
    };
    if let Some(count) = ACTIVE_CONNS.get_ptr_mut(chosen.0) {
        // SAFETY: a valid pointer into the array map. Several CPUs may race on it and lose an
        // increment (the BPF target has no fetch-add in Rust's core); the agent overwrites the
        // counts with a recount every second, so a lost increment lasts at most that long.
        // Called once per flow: for a SYN, or for a flow's first packet without a SYN.
        unsafe { *count += 1 };
    }
    Ok(chosen)
}

#[inline(always)]
fn active(id: u32) -> u64 {
    ACTIVE_CONNS.get(id).copied().unwrap_or(u64::MAX)
}

/// The live ring of one VIP.
struct Rings {
    vip_id: u32,
    half: u32,
    size: u32,
}

impl Rings {
    /// The first `Up` backend from `slot` on.
    #[inline(always)]
    fn first_up(&self, mut slot: u32) -> Result<Chosen, Reason> {
        for _ in 0..MAX_RING_PROBES {
            let id = *RING
                .get(ring_index(self.vip_id, self.half, self.size, slot))
                .ok_or(Reason::DropMapMiss)?;
            if id == NO_BACKEND {
                return Err(Reason::DropNoBackend);
            }
            let backend = BACKENDS.get(id).ok_or(Reason::DropMapMiss)?;
            if backend.state == BackendState::Up as u8 {
                return Ok((id, backend));
            }
            slot += 1;
            if slot == self.size {
                slot = 0;
            }
        }
        Err(Reason::DropNoBackend)
    }
}
