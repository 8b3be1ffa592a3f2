//! Flow sync: the connections another node cannot derive from its rings (those that started in
//! a moved slot of a Maglev VIP after a change) are written to `FLOW_SYNC`, which the agent
//! sends to its peers (`lb_common::maps::MAP_FLOW_SYNC`).

use aya_ebpf::{macros::map, maps::RingBuf};
use lb_common::{
    counters::Reason,
    limits::FLOW_SYNC_RING_BYTES,
    maps::{FlowKey, SyncRecord},
};

use crate::stats::count;

/// Records for the agent to send to its peers (`lb_common::maps::MAP_FLOW_SYNC`).
#[map]
pub static FLOW_SYNC: RingBuf = RingBuf::with_byte_size(FLOW_SYNC_RING_BYTES, 0);

/// Non-zero when the agent reads `FLOW_SYNC`; set at load time (`lb_common::maps::GLOBAL_FLOW_SYNC`).
#[unsafe(no_mangle)]
static LB_FLOW_SYNC: u32 = 0;

/// Writes a record of flow `key`, given backend `backend_id` of VIP `vip_id`, for the agent to
/// send (nothing when flow sync is off); a full ring buffer drops it, counted.
///
/// Not inlined: its record is built in the ring buffer, not in the caller's frame, which is on
/// the verifier's 512-byte chain.
#[inline(never)]
pub fn connection_started(key: &FlowKey, vip_id: u32, backend_id: u32) {
    // SAFETY: a plain read of a read-only global, volatile as in `maps::ring_size`.
    if unsafe { core::ptr::read_volatile(&LB_FLOW_SYNC) } == 0 {
        return;
    }
    let Some(mut entry) = FLOW_SYNC.reserve::<SyncRecord>(0) else {
        count(Reason::FlowSyncDropped);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `reserve` returned room for one `SyncRecord`, which these writes fill field by
    // field before it is submitted.
    unsafe {
        (*record).key = *key;
        (*record).vip_id = vip_id;
        (*record).backend_id = backend_id;
    }
    entry.submit(0);
}
