//! Map declarations and load-time globals. Names are the ones in `lb_common::maps`; sizes are
//! the defaults from `lb_common::limits`, resized by the agent at load time.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU},
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    limits::{
        CLIENT_HOP_CAPACITY, DEFAULT_BACKEND_CAPACITY, DEFAULT_CONN_CAPACITY, DEFAULT_HALF_OPEN_CAPACITY, DEFAULT_RING_SIZE,
        DEFAULT_VIP_CAPACITY, EGRESS_CAPACITY, VIP_INDEX_SLOTS, moved_map_entries, ring_map_entries, vip_entries,
    },
    maps::{
        Addr, Backend, BackendKey, CachedHop, Egress, VipAddress, ENDPOINT_FILTER_WORDS, FILTER_VIP_ADDRESS, Flow, FlowKey, META_SLOTS, REASON_SLOTS,
        ReplyTarget, Traffic, VIP_INDEX_NONE, VIP_INDEX_SHARED, VipEntry, VipKey, VipMeta,
    },
};

/// VIP address, port and protocol → VIP id, flags and live ring.
#[map]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(DEFAULT_VIP_CAPACITY, 0);

/// `lb_common::hash::vip_slot` of a VIP key → its `VIP_ENTRIES` entry + 1, none or shared
/// (`lb_common::maps::MAP_VIP_INDEX`).
#[map]
pub static VIP_INDEX: Array<u32> = Array::with_max_entries(VIP_INDEX_SLOTS, 0);

/// Two entries per VIP id, the key with its `VIPS` value (`lb_common::maps::MAP_VIP_ENTRIES`).
#[map]
pub static VIP_ENTRIES: Array<VipEntry> = Array::with_max_entries(vip_entries(DEFAULT_VIP_CAPACITY), 0);

/// The VIP of `key`, if any: by `VIP_INDEX` and `VIP_ENTRIES`, or by `VIPS` where several
/// VIPs share the key's index slot.
#[inline(always)]
pub fn find_vip(key: &VipKey) -> Option<VipMeta> {
    let index = *VIP_INDEX.get(lb_common::hash::vip_slot(key))?;
    if index == VIP_INDEX_SHARED {
        // SAFETY: pointer from a successful lookup, copied at once; the agent replaces `VIPS`
        // values whole.
        return VIPS.get_ptr(key).map(|v| unsafe { *v });
    }
    if index == VIP_INDEX_NONE {
        return None;
    }
    let entry = VIP_ENTRIES.get(index - 1)?;
    entry.key.same(key).then_some(entry.meta)
}

/// Backend id → backend. Id 0 is never used.
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(DEFAULT_BACKEND_CAPACITY, 0);

/// One bit per ring slot of each VIP (`lb_common::maps::MAP_MOVED`): set where a Maglev VIP's
/// flows may be on another backend than the live ring's.
#[map]
pub static MOVED: Array<u64> = Array::with_max_entries(moved_map_entries(DEFAULT_VIP_CAPACITY, DEFAULT_RING_SIZE), 0);

/// Three Maglev rings per VIP (live, retained, spare), each `LB_RING_SIZE` 16-bit backend ids, four to an element
/// (`lb_common::limits::ring_index`). Memory-mappable, so the agent writes rings as memory.
#[map]
pub static RING: Array<u64> = Array::with_max_entries(
    ring_map_entries(DEFAULT_VIP_CAPACITY, DEFAULT_RING_SIZE),
    BPF_F_MMAPABLE,
);

/// One entry per flow (client → VIP). One hash table that every CPU reads, with an LRU list
/// per CPU (BPF_F_NO_COMMON_LRU): an insert into a full table evicts from its own CPU's list
/// without the shared list's lock, about 145 ns faster per insert here (BENCHMARKS.md); each
/// CPU's list holds capacity ÷ CPUs entries.
#[map]
pub static CONNS: LruHashMap<FlowKey, Flow> =
    LruHashMap::with_max_entries(DEFAULT_CONN_CAPACITY, BPF_F_NO_COMMON_LRU);

/// Round-robin and least-conn flows between their SYN and their next packet.
#[map]
pub static HALF_OPEN: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(DEFAULT_HALF_OPEN_CAPACITY, 0);

/// Backend endpoint → the VIP its replies are translated to.
#[map]
pub static REPLIES: HashMap<BackendKey, ReplyTarget> = HashMap::with_max_entries(DEFAULT_BACKEND_CAPACITY, 0);

/// Client address → the FIB's next hop towards it, for a second (`lb_common::maps::MAP_CLIENT_HOPS`).
#[map]
pub static CLIENT_HOPS: LruHashMap<VipKey, CachedHop> = LruHashMap::with_max_entries(CLIENT_HOP_CAPACITY, 0);

/// Interface index → how a packet leaves by it (`lb_common::maps::MAP_EGRESS`).
#[map]
pub static EGRESS: HashMap<u32, Egress> = HashMap::with_max_entries(EGRESS_CAPACITY, 0);

/// Frames the kernel dropped after a redirect (`lb_common::maps::MAP_REDIRECT_DROPS`).
#[map]
pub static REDIRECT_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's ICMP "too big" budget (`lb_common::maps::MAP_TOO_BIG`).
#[map]
pub static TOO_BIG: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The interfaces the program runs on, for `bpf_redirect_map` (`lb_common::maps::MAP_TX_PORTS`).
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(EGRESS_CAPACITY, 0);

/// VIP addresses (port and protocol 0): sources no client can have, and which VIP takes their
/// fragments.
#[map]
pub static VIP_ADDRS: HashMap<VipKey, VipAddress> = HashMap::with_max_entries(DEFAULT_VIP_CAPACITY, 0);

/// Next ring slot per round-robin VIP, per CPU.
#[map]
pub static RR_CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(DEFAULT_VIP_CAPACITY, 0);

/// Tracked flows per backend, for least-conn.
#[map]
pub static ACTIVE_CONNS: Array<u64> = Array::with_max_entries(DEFAULT_BACKEND_CAPACITY, 0);

/// One packet counter per verdict reason (`Reason` index), with room for later ones.
#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_SLOTS, 0);

/// Traffic per VIP id.
#[map]
pub static VIP_STATS: PerCpuArray<Traffic> = PerCpuArray::with_max_entries(DEFAULT_VIP_CAPACITY, 0);

/// Traffic per backend id.
#[map]
pub static BACKEND_STATS: PerCpuArray<Traffic> =
    PerCpuArray::with_max_entries(DEFAULT_BACKEND_CAPACITY, 0);

/// One bit per VIP and backend endpoint hash (`lb_common::maps::MAP_ENDPOINT_FILTER`).
#[map]
pub static ENDPOINT_FILTER: Array<u64> = Array::with_max_entries(ENDPOINT_FILTER_WORDS, 0);

/// What the pinned maps were built and loaded with (`lb_common::maps::MAP_META`); written and
/// read by the agent only.
#[map]
pub static META: Array<u64> = Array::with_max_entries(META_SLOTS, 0);

/// Whether the source (`source`) or destination address of `key` is the address of a VIP
/// (the endpoint filter answers most addresses that are not without the `VIP_ADDRS` lookup).
///
/// Not inlined: its key in a caller's frame put the new-flow call chain over the verifier's
/// 512 bytes of stack. It takes the whole (8-byte aligned) `FlowKey`: from a bare `&Addr`
/// LLVM reads the address a byte at a time.
#[inline(never)]
pub fn is_vip_address(key: &FlowKey, source: bool) -> bool {
    vip_address(key, source).is_some()
}

/// What the source (`source`) or destination address of `key` says about fragments, if it is
/// a VIP address.
#[inline(always)]
pub fn vip_address(key: &FlowKey, source: bool) -> Option<VipAddress> {
    let addr = if source { &key.src } else { &key.dst };
    if !maybe_endpoint(addr, 0, FILTER_VIP_ADDRESS) {
        return None;
    }
    let key = VipKey { addr: *addr, port: 0, proto: 0, family: key.family };
    // SAFETY: pointer from a successful lookup, copied at once; the agent replaces values whole.
    VIP_ADDRS.get_ptr(&key).map(|v| unsafe { *v })
}

/// Whether `addr`:`port` may be an endpoint of kind `salt` (`FILTER_VIP`, `FILTER_BACKEND`, `FILTER_VIP_ADDRESS` with port 0):
/// false means it certainly is not. An inlined array access, no helper call.
#[inline(always)]
pub fn maybe_endpoint(addr: &Addr, port: u16, salt: u64) -> bool {
    let bit = lb_common::hash::endpoint_bit(addr, port, salt);
    match ENDPOINT_FILTER.get(bit >> 6) {
        Some(word) => *word & (1u64 << (bit & 63)) != 0,
        None => true,
    }
}

/// Slots per Maglev ring; set by the agent at load time (`lb_common::maps::GLOBAL_RING_SIZE`).
#[unsafe(no_mangle)]
static LB_RING_SIZE: u32 = DEFAULT_RING_SIZE;

/// Flow hash seed; set by the agent at load time (`lb_common::maps::GLOBAL_HASH_SEED`).
#[unsafe(no_mangle)]
static LB_HASH_SEED: u32 = 0;

/// The ring size this program was loaded with.
#[inline(always)]
pub fn ring_size() -> u32 {
    // SAFETY: a plain read of a read-only global; volatile so the compiler does not fold the
    // compile-time default into the code (the loader rewrites it).
    unsafe { core::ptr::read_volatile(&LB_RING_SIZE) }
}

/// The hash seed this program was loaded with.
#[inline(always)]
pub fn hash_seed() -> u32 {
    // SAFETY: as in `ring_size`.
    unsafe { core::ptr::read_volatile(&LB_HASH_SEED) }
}
