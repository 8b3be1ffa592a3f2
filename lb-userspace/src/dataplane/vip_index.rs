//! What the agent knows of `VIP_INDEX` and `VIP_ENTRIES` (`lb_common::maps::MAP_VIP_INDEX`),
//! the array copy of `VIPS` the data path reads instead of hashing a VIP key: which keys hash
//! to each index slot, and which of its two entries each VIP's index value names.
//!
//! A write never touches an entry the index names: a VIP's new value goes to its other entry,
//! and only then is the index pointed at it. The plan is computed first and recorded only
//! once the maps took it ([`VipIndex::published`], [`VipIndex::removed`]), so a failed write
//! leaves the bookkeeping as the maps are.

use std::collections::HashMap;

use lb_common::{
    hash::vip_slot,
    limits::vip_entry,
    maps::{VIP_INDEX_NONE, VIP_INDEX_SHARED, VipEntry, VipKey, VipMeta},
};

/// The writes that publish or remove a VIP, in order: `entry` (number, value) if any, then
/// `VIP_INDEX[slot] = value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexWrite {
    /// The `VIP_ENTRIES` entry to write first.
    pub entry: Option<(u32, VipEntry)>,
    /// The `VIP_INDEX` slot.
    pub slot: u32,
    /// Its new value.
    pub value: u32,
    /// Which of the VIP's two entries is current afterwards.
    which: u32,
}

/// Index slots and current entries, as written.
#[derive(Debug, Default)]
pub struct VipIndex {
    /// The VIP keys hashed to each slot in use.
    slots: HashMap<u32, Vec<VipKey>>,
    /// Each VIP's id and current entry (0 or 1): the one its index value names, or would name
    /// if its slot were not shared.
    current: HashMap<VipKey, (u32, u32)>,
}

impl VipIndex {
    /// The index value of `slot` if it held `keys`, with `key`'s current entry `(id, which)`.
    fn value_of(&self, keys: &[VipKey], key: &VipKey, id: u32, which: u32) -> u32 {
        match keys {
            [] => VIP_INDEX_NONE,
            [only] if only == key => vip_entry(id, which) + 1,
            [only] => self.current.get(only).map_or(VIP_INDEX_NONE, |&(id, which)| vip_entry(id, which) + 1),
            _ => VIP_INDEX_SHARED,
        }
    }

    /// The writes that publish `meta` for `key`: its entry that the index does not name, then
    /// the slot's value (the new entry, or shared).
    pub fn publish(&self, key: &VipKey, meta: &VipMeta) -> IndexWrite {
        let slot = vip_slot(key);
        let which = match self.current.get(key) {
            Some(&(id, which)) if id == meta.id => 1 - which,
            _ => 0,
        };
        let mut keys = self.slots.get(&slot).cloned().unwrap_or_default();
        if !keys.contains(key) {
            keys.push(*key);
        }
        IndexWrite {
            entry: Some((vip_entry(meta.id, which), VipEntry { key: *key, meta: *meta })),
            slot,
            value: self.value_of(&keys, key, meta.id, which),
            which,
        }
    }

    /// Records that `write`, from [`VipIndex::publish`] for `key` and VIP `id`, is in the maps.
    pub fn published(&mut self, key: &VipKey, id: u32, write: &IndexWrite) {
        let keys = self.slots.entry(write.slot).or_default();
        if !keys.contains(key) {
            keys.push(*key);
        }
        self.current.insert(*key, (id, write.which));
    }

    /// The write that takes `key` out of its slot (`None`: not in the index).
    pub fn remove(&self, key: &VipKey) -> Option<IndexWrite> {
        let &(id, which) = self.current.get(key)?;
        let slot = vip_slot(key);
        let keys: Vec<VipKey> = self.slots.get(&slot)?.iter().filter(|k| *k != key).copied().collect();
        Some(IndexWrite { entry: None, slot, value: self.value_of(&keys, key, id, which), which })
    }

    /// Records that `key` left the index.
    pub fn removed(&mut self, key: &VipKey) {
        self.current.remove(key);
        let slot = vip_slot(key);
        if let Some(keys) = self.slots.get_mut(&slot) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.slots.remove(&slot);
            }
        }
    }

    /// Records a VIP of adopted maps, whose index slot holds `value`: the entry it names is
    /// current (if it names neither of the VIP's, the next write may take either).
    pub fn adopt(&mut self, key: &VipKey, id: u32, value: u32) {
        let which = u32::from(value == vip_entry(id, 1) + 1);
        self.slots.entry(vip_slot(key)).or_default().push(*key);
        self.current.insert(*key, (id, which));
    }
}

#[cfg(test)]
mod tests {
    use lb_common::maps::{FAMILY_V4, PROTO_TCP, PROTO_UDP, v4_addr};

    use super::*;

    fn key(last: u8, port: u16) -> VipKey {
        VipKey { addr: v4_addr([10, 0, 0, last]), port, proto: PROTO_TCP, family: FAMILY_V4 }
    }

    fn meta(id: u32) -> VipMeta {
        VipMeta { id, ..VipMeta::default() }
    }

    /// Two keys of different slots, and one that shares the first's slot.
    fn keys() -> (VipKey, VipKey, VipKey) {
        let a = key(1, 80);
        let b = key(1, 443);
        assert_ne!(vip_slot(&a), vip_slot(&b));
        let c = (0..=u16::MAX)
            .map(|port| VipKey { port, proto: PROTO_UDP, ..a })
            .find(|k| vip_slot(k) == vip_slot(&a))
            .expect("a UDP port of the address shares the slot");
        (a, b, c)
    }

    fn apply(index: &mut VipIndex, key: &VipKey, id: u32) -> IndexWrite {
        let w = index.publish(key, &meta(id));
        index.published(key, id, &w);
        w
    }

    #[test]
    fn a_write_alternates_entries_and_never_rewrites_the_named_one() {
        let (a, b, _) = keys();
        let mut index = VipIndex::default();
        let mut named = VIP_INDEX_NONE;
        for round in 0..4u32 {
            let w = apply(&mut index, &a, 3);
            let (number, entry) = w.entry.expect("an entry is written");
            assert_eq!(number, vip_entry(3, round % 2));
            assert_ne!(number + 1, named, "round {round}: the named entry is never written");
            assert_eq!((entry.key, entry.meta.id), (a, 3));
            assert_eq!((w.slot, w.value), (vip_slot(&a), number + 1));
            named = w.value;
        }
        let w = apply(&mut index, &b, 4);
        assert_eq!((w.slot, w.value), (vip_slot(&b), vip_entry(4, 0) + 1));
    }

    #[test]
    fn a_shared_slot_is_looked_up_by_hash_until_one_key_is_left() {
        let (a, _, c) = keys();
        let mut index = VipIndex::default();
        apply(&mut index, &a, 1);
        let w = apply(&mut index, &c, 2);
        assert_eq!(w.value, VIP_INDEX_SHARED, "both keys in one slot");
        // Entries are still written while shared, so each is current when the slot is single again.
        let a_again = apply(&mut index, &a, 1);
        assert_eq!((a_again.entry.map(|e| e.0), a_again.value), (Some(vip_entry(1, 1)), VIP_INDEX_SHARED));
        let gone = index.remove(&c).expect("c is indexed");
        assert_eq!((gone.slot, gone.value, gone.entry), (vip_slot(&a), vip_entry(1, 1) + 1, None));
        index.removed(&c);
        let last = index.remove(&a).expect("a is indexed");
        assert_eq!(last.value, VIP_INDEX_NONE);
        index.removed(&a);
        assert!(index.remove(&a).is_none());
    }

    #[test]
    fn an_unrecorded_write_changes_nothing() {
        let (a, _, _) = keys();
        let mut index = VipIndex::default();
        apply(&mut index, &a, 1);
        let failed = index.publish(&a, &meta(1));
        let retried = index.publish(&a, &meta(1));
        assert_eq!(failed, retried, "a plan that did not reach the maps is made again alike");
    }

    #[test]
    fn an_adopted_vip_writes_the_entry_its_index_does_not_name() {
        let (a, b, _) = keys();
        let mut index = VipIndex::default();
        index.adopt(&a, 5, vip_entry(5, 1) + 1);
        index.adopt(&b, 6, vip_entry(6, 0) + 1);
        assert_eq!(index.publish(&a, &meta(5)).entry.map(|e| e.0), Some(vip_entry(5, 0)));
        assert_eq!(index.publish(&b, &meta(6)).entry.map(|e| e.0), Some(vip_entry(6, 1)));
    }

    #[test]
    fn a_vip_with_a_new_id_starts_at_its_first_entry() {
        let (a, _, _) = keys();
        let mut index = VipIndex::default();
        apply(&mut index, &a, 1);
        let w = index.publish(&a, &meta(9));
        assert_eq!((w.entry.map(|e| e.0), w.value), (Some(vip_entry(9, 0)), vip_entry(9, 0) + 1));
    }
}
