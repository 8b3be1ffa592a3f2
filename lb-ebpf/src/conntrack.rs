//! The connection table: one entry per flow (client → VIP), which backend it was given.
//!
//! - A Maglev VIP's flows have an entry only in moved ring slots (`xdp::maglev`): elsewhere the
//!   live ring alone decides.
//! - A SYN inserts nothing into `CONNS`: it goes to the small `HALF_OPEN` table, and the flow's
//!   next packet inserts its entry. A SYN flood therefore never evicts an established flow.
//! - Entries are copied out of the map whole; the only in-place write is an entry's
//!   deadline and state (FIN, RST, idle refresh), at most once a second per flow.
//! - Replies have no entry: `REPLIES` translates them (see `xdp::to_client`).

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::{
    flow::{Flow, clock_secs},
    maps::{Backend, FlowKey},
};

use crate::maps::{BACKENDS, CONNS, HALF_OPEN};

/// What a table says about a client → VIP packet.
pub enum Tracked {
    /// Not tracked (or expired): a new flow.
    Miss,
    /// Tracked, and its backend still serves it (up or draining): backend id, backend, and
    /// the entry.
    Live(u32, &'static Backend, Flow),
    /// Tracked, but its backend is down or its slot was given to another backend.
    Stale,
}

/// Seconds of the coarse monotonic clock.
#[inline(always)]
pub fn now() -> u32 {
    // SAFETY: a helper without arguments.
    clock_secs(unsafe { bpf_ktime_get_coarse_ns() })
}

/// Looks up the flow of a client → VIP packet with `tcp_flags` in `CONNS`, and applies the
/// packet to a live entry's lifecycle (FIN, RST, idle refresh).
#[inline(always)]
pub fn tracked(key: &FlowKey, tcp_flags: u8) -> Tracked {
    let Some(ptr) = CONNS.get_ptr_mut(key) else {
        return Tracked::Miss;
    };
    // SAFETY: the pointer comes from a successful lookup and is valid for this run (RCU); the
    // entry is copied at once. A node the LRU recycles meanwhile gives another flow's entry,
    // whose backend checks below still hold.
    let flow = unsafe { *ptr };
    if flow.needs_clock(tcp_flags) {
        let now = now();
        if flow.expired(now) {
            return Tracked::Miss;
        }
        if let Some(update) = flow.after_packet(tcp_flags, now) {
            // SAFETY: as above; two aligned stores into the value. On a recycled node they
            // change another flow's deadline, which at worst expires it early (its next packet
            // is then scheduled again, counted as resumed).
            unsafe {
                (*ptr).deadline = update.deadline;
                (*ptr).state = update.state;
            }
        }
    }
    live(flow)
}

/// Looks up a round-robin or least-conn flow between its SYN and its next packet.
#[inline(always)]
pub fn half_open(key: &FlowKey) -> Tracked {
    match HALF_OPEN.get_ptr(key) {
        // SAFETY: as in `tracked`: copied at once.
        Some(ptr) => live(unsafe { *ptr }),
        None => Tracked::Miss,
    }
}

/// Whether `flow`'s backend still serves it.
#[inline(always)]
fn live(flow: Flow) -> Tracked {
    match BACKENDS.get(flow.backend_id) {
        Some(b) if flow.kept_by(b) => {
            Tracked::Live(flow.backend_id, b, flow)
        }
        _ => Tracked::Stale,
    }
}

/// Records `flow` for `key` in `CONNS` (or `HALF_OPEN` for a round-robin or least-conn SYN);
/// whether the insert succeeded.
///
/// Not inlined: its key and value would push the caller's frame past the BPF stack limit
/// (512 bytes); as a BPF-to-BPF call its frame is separate, and it uses no stack of its own.
#[inline(never)]
pub fn track(key: &FlowKey, flow: &Flow, half_open: bool) -> bool {
    let inserted = if half_open { HALF_OPEN.insert(key, flow, 0) } else { CONNS.insert(key, flow, 0) };
    inserted.is_ok()
}
