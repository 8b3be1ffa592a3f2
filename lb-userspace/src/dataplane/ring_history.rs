//! A Maglev VIP's ring history: the ring it retains after a change and the moved-slot bits
//! (`MOVED`) that tell the data path where flows may be on another backend than the live
//! ring's. Everywhere else the data path keeps no per-flow state.
//!
//! The rules (README, "State only on change"):
//! - A change of a Maglev VIP's ring sets the bit of every slot where the new ring differs from
//!   the live ring or from the retained ring, and keeps every bit already set. The retained
//!   ring is the live ring before the first change of the retention (kept over later changes),
//!   and the retention ends `ring_retention_secs` after the last change.
//! - When the retention ends, the retained ring is dropped first; then each table walk clears
//!   the bits of slots that hold no live entry whose backend differs from the live ring's.
//! - The ring, the retained ring and the deadline live in `VIPS` and the bits in `MOVED`, so an
//!   agent that adopts the maps carries on with the same history.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use anyhow::Context as _;
use lb_common::{
    hash::flow_hash,
    limits::{NO_RING, RINGS_PER_VIP, moved_bit, moved_words, ring_index},
    maps::{Backend, Flow, FlowKey, VipKey, VipMeta},
    schedule::vip_hash,
};

use super::{Maps, table_walk::is_live};

/// Sets in `bits` (one bit per slot) every slot where `new` differs from `live` or from
/// `retained`; returns how many bits it set.
pub fn mark_moved(new: &[u32], live: &[u32], retained: Option<&[u32]>, bits: &mut [u64]) -> u32 {
    let mut marked = 0;
    for (slot, &id) in new.iter().enumerate() {
        let moved = live.get(slot) != Some(&id) || retained.is_some_and(|r| r.get(slot) != Some(&id));
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if moved && bits[word] & bit == 0 {
            bits[word] |= bit;
            marked += 1;
        }
    }
    marked
}

/// What a table walk needs to tell which moved slots of a VIP without a retained ring still
/// hold flows that differ from its live ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedCheck {
    /// VIP id.
    pub vip_id: u32,
    /// `VIP_FLAG_*` bits (source affinity hashes the client address alone).
    pub flags: u32,
    /// The VIP's ring version when the check was made; a result for an older version is
    /// dropped.
    pub version: u64,
    /// The live ring.
    pub ring: Vec<u32>,
    /// Every backend slot, by id, as the check was made (shared by the checks of one walk).
    pub backends: Arc<Vec<Backend>>,
}

impl MovedCheck {
    /// Notes in `needed` the slot of `key`'s entry `flow` when the entry is live at `now`, its
    /// backend still takes it (`Flow::kept_by`: an entry whose backend was removed, reused or
    /// downed is rescheduled by the live ring anyway), and that backend differs from the live
    /// ring's for the slot.
    pub fn note(&self, key: &FlowKey, flow: &Flow, now: u32, seed: u32, needed: &mut BTreeSet<u32>) {
        if flow.vip_id as u32 != self.vip_id || !is_live(flow, now) || self.ring.is_empty() {
            return;
        }
        if !self.backends.get(flow.backend_id as usize).is_some_and(|b| flow.kept_by(b)) {
            return;
        }
        let slot = vip_hash(self.flags, key, seed, flow_hash(key, seed, false)) % self.ring.len() as u32;
        if self.ring[slot as usize] != flow.backend_id {
            needed.insert(slot);
        }
    }
}

/// What the agent keeps of every VIP's history beside the maps.
#[derive(Debug, Default)]
pub(super) struct History {
    /// The `MOVED` map's words as last written, `moved_words(ring size)` per VIP id.
    pub bits: Vec<u64>,
    /// Ring version per VIP id, bumped at every change of its live or retained ring.
    pub versions: HashMap<u32, u64>,
    /// `global.ring_retention_secs`.
    pub retention_secs: u32,
}

/// Where a VIP's new ring goes and what it retains.
pub(super) struct Placement {
    /// The ring position to write the new ring to.
    pub half: u32,
    /// Whether the ring must be written (it differs from the live one).
    pub write: bool,
    /// `VipMeta::retained_ring` and `retained_until` after the change.
    pub retained: (u16, u32),
}

impl Maps {
    /// Words of one VIP's bits.
    fn words(&self) -> usize {
        moved_words(self.ring_size) as usize
    }

    /// Reads ring `half` of VIP `id`.
    pub(super) fn read_ring(&self, id: u32, half: u32) -> Vec<u32> {
        (0..self.ring_size).map(|slot| self.ring.get(ring_index(id, half, self.ring_size, slot)).unwrap_or(0)).collect()
    }

    /// Decides where `ring` of VIP `vip` goes given the `live` entry, and sets the moved bits
    /// of the change before the VIP entry flips (a packet in a newly marked slot meanwhile uses
    /// the table with the old rings, which is what it would have done before).
    pub(super) fn place_ring(&mut self, vip: &VipMeta, live: Option<VipMeta>, ring: &[u32], now: u32) -> anyhow::Result<Placement> {
        let Some(live) = live.filter(|l| l.id == vip.id) else {
            // A new VIP id: no history.
            self.write_moved(vip.id, &vec![0; self.words()])?;
            self.bump_version(vip.id);
            return Ok(Placement { half: 0, write: true, retained: (NO_RING, 0) });
        };
        let current = self.read_ring(live.id, live.ring_half);
        let same_scheduler = live.is_maglev() == vip.is_maglev();
        if current == ring && same_scheduler {
            return Ok(Placement { half: live.ring_half, write: false, retained: (live.retained_ring, live.retained_until) });
        }
        let half = (0..RINGS_PER_VIP).find(|&h| h != live.ring_half && Some(h) != live.retained()).unwrap_or(0);
        self.bump_version(vip.id);
        if !vip.is_maglev() {
            self.write_moved(vip.id, &vec![0; self.words()])?;
            return Ok(Placement { half, write: true, retained: (NO_RING, 0) });
        }
        let start = vip.id as usize * self.words();
        let mut bits = self.history.bits[start..start + self.words()].to_vec();
        if same_scheduler {
            let retained = live.retained().map(|h| self.read_ring(live.id, h));
            mark_moved(ring, &current, retained.as_deref(), &mut bits);
        } else {
            // From round-robin or least-conn: every flow has an entry, which must be followed,
            // and no ring to retain (theirs is no Maglev table).
            bits = vec![0; self.words()];
            let all: Vec<u32> = vec![u32::MAX; self.ring_size as usize];
            mark_moved(&all, ring, None, &mut bits);
            self.write_moved(vip.id, &bits)?;
            return Ok(Placement { half, write: true, retained: (NO_RING, 0) });
        }
        self.write_moved(vip.id, &bits)?;
        let retained = live.retained().unwrap_or(live.ring_half) as u16;
        Ok(Placement { half, write: true, retained: (retained, now.saturating_add(self.history.retention_secs)) })
    }

    fn bump_version(&mut self, id: u32) {
        *self.history.versions.entry(id).or_default() += 1;
    }

    /// Writes VIP `id`'s bits where they differ from what was last written.
    fn write_moved(&mut self, id: u32, bits: &[u64]) -> anyhow::Result<()> {
        let start = id as usize * self.words();
        for (i, &word) in bits.iter().enumerate() {
            if self.history.bits.get(start + i) != Some(&word) {
                self.moved.set((start + i) as u32, word, 0).with_context(|| format!("writing the moved slots of VIP {id}"))?;
                self.history.bits[start + i] = word;
            }
        }
        Ok(())
    }

    /// Clears a removed VIP's bits.
    pub(super) fn forget_moved(&mut self, id: u32) -> anyhow::Result<()> {
        self.bump_version(id);
        self.write_moved(id, &vec![0; self.words()])
    }

    /// Reads every VIP's bits back from adopted maps.
    pub(super) fn read_back_moved(&mut self) -> anyhow::Result<()> {
        let ids: Vec<u32> = self.vips.iter().filter_map(Result::ok).map(|(_, m)| m.id).collect();
        for id in ids {
            let start = id as usize * self.words();
            for i in start..start + self.words() {
                self.history.bits[i] = self.moved.get(&(i as u32), 0)?;
            }
        }
        Ok(())
    }

    /// Sets `global.ring_retention_secs` for later changes.
    pub fn set_ring_retention(&mut self, secs: u32) {
        self.history.retention_secs = secs;
    }

    /// `global.ring_retention_secs`.
    pub fn ring_retention(&self) -> u32 {
        self.history.retention_secs
    }

    /// Drops the retained ring of every VIP whose retention ended by `now` (coarse monotonic
    /// seconds); returns their keys. Their moved bits stay until a table walk shows which
    /// slots no longer hold divergent flows ([`Maps::keep_moved`]).
    pub fn retire_rings(&mut self, now: u32) -> anyhow::Result<Vec<VipKey>> {
        let due: Vec<(VipKey, VipMeta)> = self
            .vips
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, m)| m.retained().is_some() && now >= m.retained_until)
            .collect();
        for (key, meta) in &due {
            self.spend_write()?;
            self.write_vip(key, VipMeta { retained_ring: NO_RING, retained_until: 0, ..*meta }).context("retiring a ring")?;
            self.bump_version(meta.id);
        }
        Ok(due.into_iter().map(|(k, _)| k).collect())
    }

    /// The checks for the next table walk: every Maglev VIP with moved slots and no retained
    /// ring.
    pub fn moved_checks(&self) -> Vec<MovedCheck> {
        let due: Vec<VipMeta> = self
            .vips
            .iter()
            .filter_map(Result::ok)
            .map(|(_, m)| m)
            .filter(|m| m.is_maglev() && m.retained().is_none() && self.moved_count(m.id) > 0)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let backends = Arc::new(self.backend_slots());
        due.into_iter()
            .map(|m| MovedCheck {
                vip_id: m.id,
                flags: m.flags,
                version: self.history.versions.get(&m.id).copied().unwrap_or(0),
                ring: self.read_ring(m.id, m.ring_half),
                backends: backends.clone(),
            })
            .collect()
    }

    /// Keeps only the `needed` moved slots of VIP `vip_id`, if its ring is still at `version`
    /// and it retains no ring; returns how many slots were cleared.
    pub fn keep_moved(&mut self, vip_id: u32, version: u64, needed: &BTreeSet<u32>) -> anyhow::Result<u32> {
        if self.history.versions.get(&vip_id).copied().unwrap_or(0) != version {
            return Ok(0);
        }
        let start = vip_id as usize * self.words();
        let mut bits = self.history.bits[start..start + self.words()].to_vec();
        let mut cleared = 0;
        for (i, word) in bits.iter_mut().enumerate() {
            for b in 0..64 {
                let slot = (i * 64 + b) as u32;
                if *word & (1 << b) != 0 && !needed.contains(&slot) {
                    *word &= !(1 << b);
                    cleared += 1;
                }
            }
        }
        self.write_moved(vip_id, &bits)?;
        Ok(cleared)
    }

    /// How many slots of VIP `vip_id` are marked moved.
    pub fn moved_count(&self, vip_id: u32) -> u32 {
        let start = vip_id as usize * self.words();
        self.history.bits.get(start..start + self.words()).map_or(0, |w| w.iter().map(|w| w.count_ones()).sum())
    }

    /// Whether `slot` of VIP `vip_id` is marked moved.
    pub fn is_moved(&self, vip_id: u32, slot: u32) -> bool {
        let (word, bit) = moved_bit(vip_id, self.ring_size, slot);
        self.history.bits.get(word as usize).is_some_and(|w| w & bit != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::maps::BackendState;

    #[test]
    fn a_change_marks_slots_that_differ_from_the_live_or_the_retained_ring() {
        let a = [1, 1, 2, 2, 3, 3, 1];
        let b = [1, 1, 2, 2, 2, 2, 1];
        let c = [1, 3, 2, 2, 2, 2, 1];
        let mut bits = [0u64];
        assert_eq!(mark_moved(&b, &a, None, &mut bits), 2);
        assert_eq!(bits[0], 0b011_0000);
        // B → C while A is retained: slot 1 differs from both.
        assert_eq!(mark_moved(&c, &b, Some(&a), &mut bits), 1);
        assert_eq!(bits[0], 0b011_0010);
        // C → A (back) while A is retained: slots 1, 4 and 5 differ from C; all were marked.
        assert_eq!(mark_moved(&a, &c, Some(&a), &mut bits), 0);
        assert_eq!(bits[0], 0b011_0010);
        let mut fresh = [0u64];
        assert_eq!(mark_moved(&a, &a, Some(&a), &mut fresh), 0, "no change marks nothing");
    }

    #[test]
    fn a_walk_needs_the_slots_of_live_entries_that_differ_from_the_live_ring() {
        let up = Backend { state: BackendState::Up as u8, ..Backend::default() };
        let mut backends = vec![up; 10];
        backends[5] = Backend { generation: 1, ..up };
        backends[6] = Backend { state: BackendState::Down as u8, ..up };
        let check = MovedCheck { vip_id: 3, flags: 0, version: 1, ring: vec![1, 2, 1, 2, 1, 2, 1], backends: Arc::new(backends) };
        let seed = 7;
        let key = |port: u16| FlowKey { sport: port, dport: 80, proto: 6, family: 4, ..FlowKey::default() };
        let slot_of = |k: &FlowKey| flow_hash(k, seed, false) % 7;
        let (k1, k2) = ((1000..).map(key).find(|k| check.ring[slot_of(k) as usize] == 1).unwrap(), key(4242));
        let mut needed = BTreeSet::new();
        let on = |backend_id, vip_id, state| Flow { backend_id, vip_id, state, ..Flow::default() };
        check.note(&k1, &on(1, 3, lb_common::flow::FLOW_OPEN), 0, seed, &mut needed);
        assert!(needed.is_empty(), "the same backend as the ring");
        check.note(&k1, &on(2, 4, lb_common::flow::FLOW_OPEN), 0, seed, &mut needed);
        assert!(needed.is_empty(), "another VIP");
        check.note(&k1, &on(2, 3, lb_common::flow::FLOW_CLOSING), 0, seed, &mut needed);
        assert!(needed.is_empty(), "not live");
        check.note(&k1, &on(5, 3, lb_common::flow::FLOW_OPEN), 0, seed, &mut needed);
        assert!(needed.is_empty(), "its backend slot was reused (another generation): rescheduled anyway");
        check.note(&k1, &on(6, 3, lb_common::flow::FLOW_OPEN), 0, seed, &mut needed);
        assert!(needed.is_empty(), "its backend is down: rescheduled anyway");
        check.note(&k1, &on(12, 3, lb_common::flow::FLOW_OPEN), 0, seed, &mut needed);
        assert!(needed.is_empty(), "its backend slot is beyond the table");
        check.note(&k1, &on(2, 3, lb_common::flow::FLOW_OPEN), 0, seed, &mut needed);
        check.note(&k2, &on(9, 3, lb_common::flow::FLOW_OPEN), 0, seed, &mut needed);
        assert_eq!(needed, BTreeSet::from([slot_of(&k1), slot_of(&k2)]));
    }
}
