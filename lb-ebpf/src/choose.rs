//! The schedulers on the data path's maps: a new flow's backend from the VIP's live ring.
//! Maglev and least-conn are `lb_common::schedule` (the agent's `lb explain` runs the same
//! code); round-robin takes the next slot of this CPU's cursor (the agent fills round-robin
//! rings with a smooth weighted round-robin sequence). Least-conn counts the chosen backend.

use lb_common::{
    counters::Reason,
    limits::{RING_IDS_PER_ELEMENT, moved_bit, ring_id_in, ring_index},
    maps::{Backend, BackendState, FlowKey, VIP_FLAG_LEAST_CONN, VIP_FLAG_ROUND_ROBIN, VipMeta},
    schedule::{RingView, choose_hashed, first_up, vip_hash},
};

use crate::maps::{ACTIVE_CONNS, BACKENDS, MOVED, RING, RR_CURSORS, hash_seed, ring_size};

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
    let ring = LiveRing::of(vip, vip.ring_half, size);
    let chosen = if vip.flags & VIP_FLAG_ROUND_ROBIN != 0 {
        let cursor = RR_CURSORS.get_ptr_mut(vip.id).ok_or(Reason::DropMapMiss)?;
        // SAFETY: per-CPU slot: no other program instance uses it concurrently.
        let slot = unsafe { *cursor } % size;
        // SAFETY: as above.
        unsafe { *cursor = if slot + 1 == size { 0 } else { slot + 1 } };
        first_up(&ring, slot, size)?
    } else {
        choose_hashed(&ring, vip.flags, vip_hash(vip.flags, key, hash_seed(), hash), size)?
    };
    let backend = BACKENDS.get(chosen.id).ok_or(Reason::DropMapMiss)?;
    if vip.flags & VIP_FLAG_LEAST_CONN != 0
        && let Some(count) = ACTIVE_CONNS.get_ptr_mut(chosen.id)
    {
        // SAFETY: a valid pointer into the array map. Several CPUs may race on it and lose
        // an increment (the BPF target has no fetch-add in Rust's core); the agent
        // overwrites the counts with a recount every second, so a lost increment lasts at
        // most that long. Called once per flow: for a SYN, or for a flow's first packet
        // without a SYN.
        unsafe { *count += 1 };
    }
    Ok((chosen.id, backend))
}

/// Whether `slot` of VIP `vip_id` is marked moved (`MOVED`); a slot beyond the map counts as
/// moved, so the connection table decides.
#[inline(always)]
pub fn is_moved(vip_id: u32, slot: u32, size: u32) -> bool {
    let (word, bit) = moved_bit(vip_id, size, slot);
    MOVED.get(word).is_none_or(|w| *w & bit != 0)
}

/// One ring of one VIP (live or retained), on the data path's maps. A backend slot that
/// another VIP has taken since the ring was written reads as unused.
pub struct LiveRing {
    vip_id: u32,
    half: u32,
    size: u32,
}

impl LiveRing {
    /// Ring `half` of `vip`, of `size` slots.
    #[inline(always)]
    pub fn of(vip: &VipMeta, half: u32, size: u32) -> Self {
        LiveRing { vip_id: vip.id, half, size }
    }
}

impl RingView for LiveRing {
    #[inline(always)]
    fn slot(&self, slot: u32) -> Option<u32> {
        let index = ring_index(self.vip_id, self.half, self.size, slot);
        RING.get(index / RING_IDS_PER_ELEMENT).map(|element| ring_id_in(*element, index))
    }

    #[inline(always)]
    fn state(&self, id: u32) -> Option<u8> {
        BACKENDS.get(id).map(|b| if b.vip_id as u32 == self.vip_id { b.state } else { BackendState::Unused as u8 })
    }

    #[inline(always)]
    fn active(&self, id: u32) -> u64 {
        ACTIVE_CONNS.get(id).copied().unwrap_or(u64::MAX)
    }
}
