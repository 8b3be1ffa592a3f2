//! The scheduler: a new flow's backend from the VIP's live Maglev ring.

use lb_common::{
    counters::Reason,
    hash::flow_hash,
    limits::{MAX_RING_PROBES, ring_index},
    maglev::NO_BACKEND,
    maps::{Backend, BackendState, FlowKey, VIP_FLAG_HASH_SRC_ONLY, VipMeta},
};

use crate::maps::{BACKENDS, RING, hash_seed, ring_size};

/// Picks the backend for a new flow of `vip`: the ring slot its hash selects or, while the
/// agent has not yet swapped in a ring without a failed backend, the next slots with an `Up`
/// backend (at most [`MAX_RING_PROBES`]; every node probes the same way).
#[inline(always)]
pub fn choose(vip: &VipMeta, key: &FlowKey) -> Result<(u32, &'static Backend), Reason> {
    let size = ring_size();
    if size == 0 {
        // Never loaded like this (the agent checks sizes); the test also removes the
        // division-by-zero panic path, which the verifier would reject.
        return Err(Reason::DropMapMiss);
    }
    let hash = flow_hash(key, hash_seed(), vip.flags & VIP_FLAG_HASH_SRC_ONLY != 0);
    let half = vip.ring_half & 1;
    let mut slot = hash % size;
    for _ in 0..MAX_RING_PROBES {
        let id = *RING
            .get(ring_index(vip.id, half, size, slot))
            .ok_or(Reason::DropMapMiss)?;
        if id == NO_BACKEND {
            return Err(Reason::DropNoBackend);
        }
        let backend = BACKENDS.get(id).ok_or(Reason::DropMapMiss)?;
        if backend.state == BackendState::Up as u8 {
            return Ok((id, backend));
        }
        slot += 1;
        if slot == size {
            slot = 0;
        }
    }
    Err(Reason::DropNoBackend)
}
