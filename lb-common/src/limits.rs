//! Every size and bound of the load balancer, defined once.
//!
//! Map capacities are *defaults*: the agent sizes each map at load time
//! (`EbpfLoader::set_max_entries`) from the configuration, within the bounds below.

/// Default number of VIPs the maps are sized for.
pub const DEFAULT_VIP_CAPACITY: u32 = 64;
/// Upper bound on the VIP capacity accepted at load time.
pub const MAX_VIP_CAPACITY: u32 = 4096;

/// Default number of backend slots (all VIPs together). Slot 0 is reserved: a zero-filled
/// ring slot means "no backend".
pub const DEFAULT_BACKEND_CAPACITY: u32 = 4096;
/// Upper bound on the backend capacity accepted at load time.
pub const MAX_BACKEND_CAPACITY: u32 = 65536;

/// Default Maglev ring size per VIP: prime, as in the Maglev paper and Katran.
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Smallest ring size accepted (must also be prime).
pub const MIN_RING_SIZE: u32 = 7;
/// Largest ring size accepted (must also be prime).
pub const MAX_RING_SIZE: u32 = 1_048_573;
/// The ring must hold at least this many slots per backend to keep the imbalance near 1 %.
pub const RING_SLOTS_PER_BACKEND: u32 = 100;
/// Each VIP owns two rings: the live one and the one the agent writes before flipping.
pub const RINGS_PER_VIP: u32 = 2;

/// Default capacity of the connection table (entries, one per flow).
pub const DEFAULT_CONN_CAPACITY: u32 = 262_144;
/// Upper bound on the connection table capacity accepted at load time.
pub const MAX_CONN_CAPACITY: u32 = 16 * 1024 * 1024;

/// Default capacity of the half-open table: round-robin and least-conn flows between their
/// SYN and their first packet after it (a SYN flood evicts only these).
pub const DEFAULT_HALF_OPEN_CAPACITY: u32 = half_open_capacity(DEFAULT_CONN_CAPACITY);
/// Upper bound on the half-open table capacity accepted at load time.
pub const MAX_HALF_OPEN_CAPACITY: u32 = 1024 * 1024;

/// The half-open table's capacity for a connection table of `conn_capacity` entries: a
/// sixteenth of it, within 1,024 and [`MAX_HALF_OPEN_CAPACITY`].
pub const fn half_open_capacity(conn_capacity: u32) -> u32 {
    let c = conn_capacity / 16;
    if c < 1024 {
        1024
    } else if c > MAX_HALF_OPEN_CAPACITY {
        MAX_HALF_OPEN_CAPACITY
    } else {
        c
    }
}

/// A TCP flow whose client sent FIN expires after this many seconds without a packet.
pub const TCP_CLOSING_IDLE_SECS: u32 = 30;
/// A TCP flow whose client sent RST expires this many seconds later.
pub const TCP_RESET_LINGER_SECS: u32 = 2;
/// Default idle timeout of a UDP flow, in seconds (per VIP in the configuration).
pub const DEFAULT_UDP_IDLE_SECS: u16 = 30;
/// Longest UDP idle timeout accepted, in seconds.
pub const MAX_UDP_IDLE_SECS: u16 = u16::MAX;

/// Capacity of the `CLIENT_HOPS` cache (entries, one per client address or router-facing
/// destination a reply was sent to).
pub const CLIENT_HOP_CAPACITY: u32 = 65_536;
/// Seconds a cached FIB answer for a client is used before the FIB is asked again.
pub const CLIENT_HOP_TTL_SECS: u32 = 1;

/// Entries of `IFACE_VLANS`: interfaces with an index below this can be VLAN devices the data
/// path sends through (others are taken as untagged).
pub const IFACE_VLAN_CAPACITY: u32 = 4096;

/// Words of the `SYN_SEEN` bitmap (one bit per flow-hash bucket): 262,144 bits, 32 KiB.
pub const SYN_SEEN_WORDS: u32 = 4096;

/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 65535;

/// Number of entries of the `RING` map for a given VIP capacity and ring size.
pub const fn ring_map_entries(vip_capacity: u32, ring_size: u32) -> u32 {
    vip_capacity * RINGS_PER_VIP * ring_size
}

/// Index in the `RING` map of `slot` in ring `half` of VIP `vip_id`.
#[inline(always)]
pub const fn ring_index(vip_id: u32, half: u32, ring_size: u32, slot: u32) -> u32 {
    (vip_id * RINGS_PER_VIP + half) * ring_size + slot
}

/// Ring slots the data path tries for a new flow when the chosen backend is not up (only
/// between a backend failing and the agent swapping in a ring without it).
pub const MAX_RING_PROBES: u32 = 4;
