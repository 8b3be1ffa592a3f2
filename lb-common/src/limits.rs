//! Every size and bound of the load balancer, defined once.
//!
//! Map capacities are *defaults*: the agent sizes each map at load time
//! (`EbpfLoader::set_max_entries`) from the configuration, within the bounds below.

/// Default number of VIPs the maps are sized for.
pub const DEFAULT_VIP_CAPACITY: u32 = 64;
/// Upper bound on the VIP capacity accepted at load time.
pub const MAX_VIP_CAPACITY: u32 = 4096;

/// Slots of `VIP_INDEX` (`crate::maps::MAP_VIP_INDEX`), a power of two: 64 KiB. With the
/// default 64 VIPs the chance that any two share a slot (and are then looked up in `VIPS`) is
/// about one in eight.
pub const VIP_INDEX_SLOTS: u32 = 1 << 14;
const _: () = assert!(VIP_INDEX_SLOTS.is_power_of_two() && VIP_INDEX_SLOTS >= 4 * DEFAULT_VIP_CAPACITY);

/// Entries of `VIP_ENTRIES` (`crate::maps::MAP_VIP_ENTRIES`) for `vip_capacity` VIPs: two each.
pub const fn vip_entries(vip_capacity: u32) -> u32 {
    2 * vip_capacity
}

/// The `VIP_ENTRIES` entry `which` (0 or 1) of VIP `id`.
#[inline(always)]
pub const fn vip_entry(id: u32, which: u32) -> u32 {
    2 * id + (which & 1)
}

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
/// Each VIP owns three rings: the live one, the retained one (the oldest ring of a recent
/// change, which flows older than the change follow) and the one the agent writes before
/// flipping.
pub const RINGS_PER_VIP: u32 = 3;
/// `VipMeta::retained_ring` of a VIP that retains no ring.
pub const NO_RING: u16 = u16::MAX;
/// Default of `global.ring_retention_secs`: how long after a Maglev VIP's last ring change the
/// previous ring is kept for flows older than the change that have not sent a packet since.
pub const DEFAULT_RING_RETENTION_SECS: u32 = 300;
/// Largest `global.ring_retention_secs` accepted (a day).
pub const MAX_RING_RETENTION_SECS: u32 = 86_400;

/// Default capacity of the connection table (entries, one per flow).
pub const DEFAULT_CONN_CAPACITY: u32 = 262_144;
/// The connection table keeps one LRU list per CPU (`BPF_F_NO_COMMON_LRU`): a CPU evicts
/// from its own share, `conn_capacity / possible CPUs` entries, when that share is full, however
/// empty the others are. The agent raises `conn_capacity` so that no CPU's share is below this
/// many entries ([`crate::sizing::Sizing::with_cpu_floor`]).
pub const MIN_CONNS_PER_CPU: u32 = 4096;
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

/// Entries of `EGRESS` and `TX_PORTS`: the interfaces the program runs on and the VLAN devices
/// on them, whatever their interface indices.
pub const EGRESS_CAPACITY: u32 = 1024;

/// Bytes the kernel reserves before an XDP frame (`XDP_PACKET_HEADROOM`).
pub const XDP_HEADROOM: u32 = 256;
/// Bytes the kernel reserves after a one-buffer frame for its shared info
/// (`SKB_DATA_ALIGN(sizeof(struct skb_shared_info))` on 64-bit hosts).
pub const XDP_SHARED_INFO: u32 = 320;
/// An Ethernet header, which the MTU does not count.
pub const ETHERNET_HEADER: u32 = 14;
/// An IPv4 header without options (an IPIP outer header).
pub const IPV4_HEADER: u32 = 20;
/// An IPv6 header without extension headers (an IPv6 outer header).
pub const IPV6_HEADER: u32 = 40;
/// A UDP header (GUE's outer header on top of the IP one).
pub const UDP_HEADER: u32 = 8;
/// A TCP header without options: the MSS is the path MTU less it and the IP header.
pub const TCP_HEADER: u32 = 20;

/// The largest MTU at which a driver without multi-buffer XDP takes an XDP program, on pages of
/// `page_size` bytes: a frame must then fit one page less [`XDP_HEADROOM`] and
/// [`XDP_SHARED_INFO`] (veth's limit, 3,506 on 4 KiB pages; other drivers' lie within a few
/// bytes of it). The load balancer's program is frags-aware, so only a driver without
/// multi-buffer support holds it to this.
pub const fn single_buffer_xdp_mtu(page_size: u32) -> u32 {
    page_size.saturating_sub(XDP_HEADROOM + XDP_SHARED_INFO + ETHERNET_HEADER)
}


/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 65535;

/// A health probe that times out while the agent's loop ran this many milliseconds late (or
/// more) is the agent's fault, not the backend's: it counts as a local error.
pub const PROBE_LOOP_LAG_LOCAL_MS: u64 = 100;

/// Backend ids per element of the `RING` map: ids are 16 bits (backend slots are fewer than
/// 65,536) and a BPF array element is 8 bytes, so a ring takes a quarter of the memory and
/// of the cache lines that one id per element would.
pub const RING_IDS_PER_ELEMENT: u32 = 4;
const _: () = assert!(MAX_BACKEND_CAPACITY - 1 <= u16::MAX as u32);

/// Id positions one ring takes in the `RING` map: its slots rounded up to whole elements.
#[inline(always)]
pub const fn ring_stride(ring_size: u32) -> u32 {
    ring_size.div_ceil(RING_IDS_PER_ELEMENT) * RING_IDS_PER_ELEMENT
}

/// Number of entries (8-byte elements) of the `RING` map for a given VIP capacity and ring
/// size.
pub const fn ring_map_entries(vip_capacity: u32, ring_size: u32) -> u32 {
    vip_capacity * RINGS_PER_VIP * (ring_stride(ring_size) / RING_IDS_PER_ELEMENT)
}

/// Position of `slot` of ring `half` of VIP `vip_id` among the `RING` map's 16-bit ids: the id
/// is in element `index / RING_IDS_PER_ELEMENT`, bits `16 × (index % RING_IDS_PER_ELEMENT)`
/// up (the little-endian id at byte `2 × index` of the map's memory).
#[inline(always)]
pub const fn ring_index(vip_id: u32, half: u32, ring_size: u32, slot: u32) -> u32 {
    (vip_id * RINGS_PER_VIP + half) * ring_stride(ring_size) + slot
}

/// Words (`u64`) of one VIP's moved-slot bitmap in the `MOVED` map: one bit per ring slot.
#[inline(always)]
pub const fn moved_words(ring_size: u32) -> u32 {
    ring_size.div_ceil(64)
}

/// Number of entries of the `MOVED` map for a given VIP capacity and ring size.
pub const fn moved_map_entries(vip_capacity: u32, ring_size: u32) -> u32 {
    vip_capacity * moved_words(ring_size)
}

/// The `MOVED` word and bit of `slot` of VIP `vip_id`.
#[inline(always)]
pub const fn moved_bit(vip_id: u32, ring_size: u32, slot: u32) -> (u32, u64) {
    (vip_id * moved_words(ring_size) + slot / 64, 1u64 << (slot % 64))
}

/// The backend id at id position `index` ([`ring_index`]) in `element`, the `RING` map's
/// element `index / RING_IDS_PER_ELEMENT`.
#[inline(always)]
pub const fn ring_id_in(element: u64, index: u32) -> u32 {
    ((element >> (16 * (index % RING_IDS_PER_ELEMENT))) & 0xFFFF) as u32
}

/// Bytes of the `FLOW_SYNC` ring buffer (a power of two and a multiple of the page size): room
/// for about 4,000 records ([`crate::maps::SyncRecord`] and the kernel's 8-byte header) between
/// two reads of the agent; a record that finds it full is dropped and counted
/// (`flow_sync_dropped`).
pub const FLOW_SYNC_RING_BYTES: u32 = 256 * 1024;
/// Flow sync: records in one datagram at most (the datagram then stays below 1,280 bytes, so
/// it is never fragmented).
pub const FLOW_SYNC_MAX_RECORDS: usize = 16;
/// Flow sync: a datagram whose timestamp is further than this from the receiver's clock (either
/// way) is dropped as stale: a captured datagram cannot be replayed later than this.
pub const FLOW_SYNC_WINDOW_MS: u64 = 10_000;
/// Flow sync: peers a node sends to at most.
pub const FLOW_SYNC_MAX_PEERS: usize = 32;
/// Flow sync: bytes of the shared key at least (a longer key file is used whole, up to
/// [`FLOW_SYNC_MAX_KEY_BYTES`]).
pub const FLOW_SYNC_MIN_KEY_BYTES: usize = 32;
/// Flow sync: bytes of the shared key at most.
pub const FLOW_SYNC_MAX_KEY_BYTES: usize = 1024;
/// Flow sync: how long the receiver keeps its index of local backends (address and port to
/// slot) before a record that misses it reads the backend map again.
pub const FLOW_SYNC_INDEX_MS: u64 = 1_000;

/// Ring slots the data path tries for a new flow when the chosen backend is not up (only
/// between a backend failing and the agent swapping in a ring without it).
pub const MAX_RING_PROBES: u32 = 4;

/// The agent retries a failed change to the host (adding or removing a VIP address or an
/// announcement route) after this many milliseconds, doubling with each failure...
pub const HOST_RETRY_FIRST_MS: u64 = 500;
/// ...up to this many. An address or route that another program owns is tried again at this
/// pace too, in case it goes away.
pub const HOST_RETRY_MAX_MS: u64 = 30_000;

/// How long `lb check` trusts a pinned data path whose agent is away (restarting, upgraded,
/// stopped or stuck), from the agent's last heartbeat (`lb_common::maps::META_HEARTBEAT`): the
/// program, rings and backend states go on serving, but nothing checks the backends' health
/// meanwhile. An agent restart takes about a second.
pub const CHECK_GRACE_MS: u64 = 10_000;

/// How long `lb check` waits for the agent's answer before it reads the pinned data path
/// instead: well within keepalived's usual script timeout of 1 s.
pub const CHECK_AGENT_TIMEOUT_MS: u64 = 400;

/// Capacity of the decapsulation program's `DECAP_ADDRS` (the backend's own tunnel endpoint
/// addresses).
pub const DECAP_ADDR_CAPACITY: u32 = 64;
/// Capacity of the decapsulation program's `DECAP_VIPS` (the VIP addresses a backend serves).
pub const DECAP_VIP_CAPACITY: u32 = MAX_VIP_CAPACITY;
/// Slots of the decapsulation program's `DECAP_STATS` (one per `encap::DecapReason`, with room
/// for later ones).
pub const DECAP_REASON_SLOTS: u32 = 16;

/// Most bits of a tunnel's outer source taken from the flow hash (`tunnel_source` prefixes
/// of up to 65,536 addresses).
pub const MAX_TUNNEL_SOURCE_HOST_BITS: u8 = 16;
/// Smallest `tunnel_mtu`: IPv6's minimum MTU (1280) and the largest outer header (GUE over
/// IPv6, 48 bytes), so that every inner packet of the minimum size still fits.
pub const MIN_TUNNEL_MTU: u32 = 1280 + 48;
/// Largest `tunnel_mtu` (the largest IP packet).
pub const MAX_TUNNEL_MTU: u32 = 65535;
/// ICMP "fragmentation needed" / "packet too big" errors the data path sends per CPU and
/// second, for packets that would exceed the tunnel MTU once encapsulated; the rest are
/// dropped (counted).
pub const TOO_BIG_PER_CPU_PER_SEC: u64 = 100;
/// Bytes of the client's packet an ICMP "fragmentation needed" or "packet too big" quotes
/// after the quoted IP header: the transport header's first 8 bytes (ports, TCP sequence),
/// what the client's stack needs to find the connection (RFC 792; Linux reads no more).
pub const TOO_BIG_QUOTE: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_positions_pack_four_ids_per_element_without_overlap() {
        let size = 13; // stride 16: 4 elements per ring
        assert_eq!(ring_stride(size), 16);
        assert_eq!(ring_map_entries(3, size), 3 * RINGS_PER_VIP * 4);
        let last_of_half0 = ring_index(1, 0, size, size - 1);
        let first_of_half1 = ring_index(1, 1, size, 0);
        assert!(last_of_half0 < first_of_half1, "halves overlap");
        assert_eq!(first_of_half1 % RING_IDS_PER_ELEMENT, 0, "a ring starts on an element");
        assert!(ring_index(2, 1, size, size - 1) / RING_IDS_PER_ELEMENT < ring_map_entries(3, size));
        // The agent writes id positions as little-endian u16s at byte 2 × index; the data path
        // reads u64 elements.
        let mut bytes = [0u8; 16];
        for (i, id) in [(4u32, 0x1234u16), (5, 0xFFFF), (7, 1), (6, 0x0A0B)] {
            bytes[2 * i as usize..2 * i as usize + 2].copy_from_slice(&id.to_le_bytes());
        }
        let element = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        assert_eq!([4, 5, 6, 7].map(|i| ring_id_in(element, i)), [0x1234, 0xFFFF, 0x0A0B, 1]);
    }

    #[test]
    fn single_buffer_xdp_mtu_is_veths_limit() {
        // veth: SKB_WITH_OVERHEAD(PAGE_SIZE - XDP_PACKET_HEADROOM) - ETH_HLEN.
        assert_eq!(single_buffer_xdp_mtu(4096), 3506);
        assert_eq!(single_buffer_xdp_mtu(65536), 64946);
        assert_eq!(single_buffer_xdp_mtu(100), 0);
    }
}


