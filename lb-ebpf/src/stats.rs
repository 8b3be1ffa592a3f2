//! Counters: one per verdict reason, traffic per VIP and per backend.

use lb_common::{counters::Reason, maps::Traffic};

use crate::maps::{BACKEND_STATS, REASONS, VIP_STATS};

/// Counts one packet under `reason` (every packet reaches exactly one `count` of a verdict
/// or an event). The `upgrade-probe` build also counts every call in `UPGRADE_PROBE_SLOT`:
/// here rather than at the program's entry, where its key grew `lb_xdp`'s frame past what
/// the deepest call chain can take.
#[inline(always)]
pub fn count(reason: Reason) {
    count_slot(reason as u32);
    #[cfg(feature = "upgrade-probe")]
    count_slot(lb_common::maps::UPGRADE_PROBE_SLOT);
}

/// Counts one packet in slot `slot` of `REASONS`.
#[inline(always)]
pub fn count_slot(slot: u32) {
    if let Some(c) = REASONS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot: no other program instance writes it concurrently.
        unsafe { *c += 1 };
    }
}

/// Counts a packet for VIP `vip_id` that no backend could take.
#[inline(always)]
pub fn count_vip_drop(vip_id: u32) {
    if let Some(t) = VIP_STATS.get_ptr_mut(vip_id) {
        // SAFETY: per-CPU slot, as in `count`.
        unsafe { (*t).dropped += 1 };
    }
}

/// Adds one packet of `bytes` (and a new flow if `new_flow`) to a VIP and a backend.
#[inline(always)]
pub fn count_traffic(vip_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    add(VIP_STATS.get_ptr_mut(vip_id), bytes, new_flow);
    add(BACKEND_STATS.get_ptr_mut(backend_id), bytes, new_flow);
}

#[inline(always)]
fn add(slot: Option<*mut Traffic>, bytes: u64, new_flow: bool) {
    if let Some(t) = slot {
        // SAFETY: per-CPU slot, as in `count`.
        let t = unsafe { &mut *t };
        t.packets += 1;
        t.bytes += bytes;
        t.new_flows += new_flow as u64;
    }
}
