//! The choice of a new flow's backend from a VIP's live ring, defined once: the data path runs
//! it on its maps, and the agent (`lb explain`) on the same maps read from userspace, so both
//! give the same answer.
//!
//! - maglev: the slot the flow's hash selects (the same on every node);
//! - least-conn: of the backends of two slots the flow's hash selects, the one with fewer
//!   tracked flows ("power of two choices");
//! - round-robin: a per-CPU cursor, which only the data path knows (see `lb-ebpf`).
//!
//! From its slot, each walks forward to the first `Up` backend (at most [`MAX_RING_PROBES`]
//! slots: only while the agent has not yet swapped in a ring without a failed backend).

use crate::{
    counters::Reason,
    hash::{flow_hash, second_choice},
    limits::MAX_RING_PROBES,
    maglev::NO_BACKEND,
    flow::{FLOW_IDLE, FLOW_OPEN},
    maps::{BackendState, FlowKey, VIP_FLAG_HASH_SRC_ONLY, VIP_FLAG_LEAST_CONN},
};

/// What a scheduler reads: one VIP's live ring, the backends' states, least-conn's counts.
pub trait RingView {
    /// The backend id in `slot` of the live ring (`None`: beyond the map).
    fn slot(&self, slot: u32) -> Option<u32>;
    /// Backend `id`'s [`BackendState`] as `u8` (`None`: beyond the map).
    fn state(&self, id: u32) -> Option<u8>;
    /// Whether backend `id` takes new flows (`None`: beyond the map).
    #[inline(always)]
    fn is_up(&self, id: u32) -> Option<bool> {
        self.state(id).map(|s| s == BackendState::Up as u8)
    }
    /// Least-conn's count of flows of backend `id`.
    fn active(&self, id: u32) -> u64;
}

/// A backend chosen for a new flow, and where in the ring it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// The backend's slot id.
    pub id: u32,
    /// The ring slot the flow's hash selected.
    pub slot: u32,
    /// The slot the backend was found in (after `slot` when `slot`'s backend is not up).
    pub found: u32,
}

/// The first backend that is up from ring `slot` on, in a ring of `size` slots.
#[inline(always)]
pub fn first_up<V: RingView>(view: &V, slot: u32, size: u32) -> Result<Chosen, Reason> {
    let mut at = slot;
    for _ in 0..MAX_RING_PROBES {
        let id = view.slot(at).ok_or(Reason::DropMapMiss)?;
        if id == NO_BACKEND {
            return Err(Reason::DropNoBackend);
        }
        if view.is_up(id).ok_or(Reason::DropMapMiss)? {
            return Ok(Chosen { id, slot, found: at });
        }
        at += 1;
        if at == size {
            at = 0;
        }
    }
    Err(Reason::DropNoBackend)
}

/// The state a packet's flow is taken to be in when the packet has no entry to say so: `None`
/// for a new connection (a TCP SYN), an open connection for other TCP packets, an idle flow for
/// UDP.
#[inline(always)]
pub const fn flow_state_of(tcp: bool, syn: bool) -> Option<u8> {
    match (tcp, syn) {
        (true, true) => None,
        (true, false) => Some(FLOW_OPEN),
        (false, _) => Some(FLOW_IDLE),
    }
}

/// The backend a packet without an entry gets from ring `view` (of `size` slots) at `slot`: a
/// packet of an existing flow (`flow_state`, [`flow_state_of`]) stays with the slot's backend
/// while that backend keeps such flows (up or draining; failed too for TCP), exactly as if the
/// flow had an entry for it; a new connection, or a flow whose slot backend is down or gone,
/// takes the first backend up from the slot.
#[inline(always)]
pub fn follow<V: RingView>(view: &V, slot: u32, size: u32, flow_state: Option<u8>) -> Result<Chosen, Reason> {
    if let Some(flow_state) = flow_state {
        let id = view.slot(slot).ok_or(Reason::DropMapMiss)?;
        if id != NO_BACKEND && BackendState::from_u8(view.state(id).ok_or(Reason::DropMapMiss)?).keeps_flow(flow_state) {
            return Ok(Chosen { id, slot, found: slot });
        }
    }
    first_up(view, slot, size)
}

/// The backend of a packet in a moved slot of a Maglev VIP that has neither an entry nor a
/// SYN, taken as a flow older than the change: the `retained` ring's backend at `slot` while
/// it keeps a flow in `flow_state` (so failed keeps TCP, draining keeps both), else, as for a
/// flow whose backend is down or gone, the first backend up from `slot` of the `live` ring.
/// The second value says whether the retained ring decided.
#[inline(always)]
pub fn follow_retained<V: RingView>(retained: &V, live: &V, slot: u32, size: u32, flow_state: u8) -> Result<(Chosen, bool), Reason> {
    let id = retained.slot(slot).ok_or(Reason::DropMapMiss)?;
    if id != NO_BACKEND && retained.state(id).is_some_and(|s| BackendState::from_u8(s).keeps_flow(flow_state)) {
        return Ok((Chosen { id, slot, found: slot }, true));
    }
    Ok((first_up(live, slot, size)?, false))
}

/// The hash a VIP with `flags` selects its ring slot by: `hash` (the flow's full 5-tuple hash
/// under `seed`), or the client address's alone with source affinity.
#[inline(always)]
pub fn vip_hash(flags: u32, key: &FlowKey, seed: u32, hash: u32) -> u32 {
    if flags & VIP_FLAG_HASH_SRC_ONLY != 0 { flow_hash(key, seed, true) } else { hash }
}

/// The backend of a new flow of a Maglev or least-conn VIP with `flags`, from the flow's
/// `hash` ([`vip_hash`]) over a ring of `size` slots (non-zero).
#[inline(always)]
pub fn choose_hashed<V: RingView>(view: &V, flags: u32, hash: u32, size: u32) -> Result<Chosen, Reason> {
    let first = first_up(view, hash % size, size);
    if flags & VIP_FLAG_LEAST_CONN == 0 {
        return first;
    }
    // Either candidate serves when the other finds no backend up within its probes.
    match (first, first_up(view, second_choice(hash) % size, size)) {
        (Ok(first), Ok(second)) => Ok(if view.active(second.id) < view.active(first.id) { second } else { first }),
        (Ok(chosen), Err(_)) | (Err(_), Ok(chosen)) => Ok(chosen),
        (Err(reason), Err(_)) => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::VIP_FLAG_LEAST_CONN;

    struct View {
        ring: [u32; 7],
        up: [bool; 4],
        active: [u64; 4],
    }

    impl RingView for View {
        fn slot(&self, slot: u32) -> Option<u32> {
            self.ring.get(slot as usize).copied()
        }
        fn state(&self, id: u32) -> Option<u8> {
            self.up.get(id as usize).map(|&up| if up { BackendState::Up as u8 } else { BackendState::Failed as u8 })
        }
        fn active(&self, id: u32) -> u64 {
            self.active[id as usize]
        }
    }

    fn view() -> View {
        View { ring: [1, 2, 3, 1, 2, 3, 1], up: [false, true, true, true], active: [0; 4] }
    }

    #[test]
    fn walks_past_backends_that_are_not_up() {
        let mut v = view();
        assert_eq!(first_up(&v, 4, 7), Ok(Chosen { id: 2, slot: 4, found: 4 }));
        v.up[2] = false;
        assert_eq!(first_up(&v, 4, 7), Ok(Chosen { id: 3, slot: 4, found: 5 }));
        v.up = [false; 4];
        assert_eq!(first_up(&v, 6, 7), Err(Reason::DropNoBackend));
        v.ring[0] = NO_BACKEND;
        v.up[1] = false;
        assert_eq!(first_up(&v, 0, 7), Err(Reason::DropNoBackend));
        assert_eq!(first_up(&View { ring: [9; 7], up: [true; 4], active: [0; 4] }, 0, 7), Err(Reason::DropMapMiss));
    }

    #[test]
    fn an_existing_flow_follows_its_slot_while_the_backend_keeps_it() {
        let mut v = view();
        v.up[2] = false; // Failed.
        let tcp = flow_state_of(true, false);
        let udp = flow_state_of(false, false);
        assert_eq!(follow(&v, 1, 7, tcp), Ok(Chosen { id: 2, slot: 1, found: 1 }), "a failed backend keeps TCP");
        assert_eq!(follow(&v, 1, 7, udp), Ok(Chosen { id: 3, slot: 1, found: 2 }), "UDP moves");
        assert_eq!(follow(&v, 1, 7, flow_state_of(true, true)), Ok(Chosen { id: 3, slot: 1, found: 2 }), "a SYN is new");
        assert_eq!(follow(&v, 0, 7, tcp), Ok(Chosen { id: 1, slot: 0, found: 0 }));
        v.ring[0] = NO_BACKEND;
        assert_eq!(follow(&v, 0, 7, tcp), Err(Reason::DropNoBackend));
    }

    #[test]
    fn an_old_flow_follows_the_retained_ring_while_its_backend_keeps_it() {
        let live = view();
        let mut old = view();
        old.ring = [3, 3, 3, 1, 1, 1, 2];
        assert_eq!(follow_retained(&old, &live, 0, 7, FLOW_OPEN), Ok((Chosen { id: 3, slot: 0, found: 0 }, true)));
        old.up[3] = false; // Failed: keeps TCP, not UDP.
        assert_eq!(follow_retained(&old, &live, 0, 7, FLOW_OPEN), Ok((Chosen { id: 3, slot: 0, found: 0 }, true)));
        assert_eq!(follow_retained(&old, &live, 0, 7, FLOW_IDLE), Ok((Chosen { id: 1, slot: 0, found: 0 }, false)));
        old.ring[0] = NO_BACKEND;
        assert_eq!(follow_retained(&old, &live, 0, 7, FLOW_OPEN), Ok((Chosen { id: 1, slot: 0, found: 0 }, false)));
    }

    #[test]
    fn least_conn_takes_the_less_loaded_of_two_candidates() {
        let mut v = view();
        // Find a hash whose two candidates differ.
        let hash = (0..1000u32).find(|h| v.ring[(h % 7) as usize] != v.ring[(second_choice(*h) % 7) as usize]).unwrap();
        let first = v.ring[(hash % 7) as usize];
        let second = v.ring[(second_choice(hash) % 7) as usize];
        assert_eq!(choose_hashed(&v, 0, hash, 7).unwrap().id, first, "maglev: the first");
        v.active[first as usize] = 5;
        assert_eq!(choose_hashed(&v, VIP_FLAG_LEAST_CONN, hash, 7).unwrap().id, second);
        v.active[second as usize] = 5;
        assert_eq!(choose_hashed(&v, VIP_FLAG_LEAST_CONN, hash, 7).unwrap().id, first, "a tie keeps the first");
        // The first candidate's backends are all down within reach: the second serves.
        v.up = [false; 4];
        v.up[second as usize] = true;
        assert_eq!(choose_hashed(&v, 0, hash, 7).map(|c| c.id), if first_up(&v, hash % 7, 7).is_ok() { Ok(second) } else { Err(Reason::DropNoBackend) });
        assert_eq!(choose_hashed(&v, VIP_FLAG_LEAST_CONN, hash, 7).unwrap().id, second);
    }
}
