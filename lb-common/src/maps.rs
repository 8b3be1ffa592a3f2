//! Keys and values of every BPF map, and the names both sides use for maps and globals.
//!
//! All types are `#[repr(C)]` without implicit padding, so their bytes mean the same in the
//! kernel and in the agent. Ports are stored in host byte order; addresses as the 16 bytes of
//! the IPv6 address or the 4 bytes of the IPv4 address followed by 12 zero bytes.

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "lb_xdp";

/// `VIPS`: hash map [`VipKey`] → [`VipMeta`].
pub const MAP_VIPS: &str = "VIPS";
/// `BACKENDS`: array backend id → [`Backend`].
pub const MAP_BACKENDS: &str = "BACKENDS";
/// `RING`: array of backend ids, [`crate::limits::RINGS_PER_VIP`] Maglev rings per VIP.
pub const MAP_RING: &str = "RING";
/// `MOVED`: array of `u64`, one bit per ring slot of each VIP ([`crate::limits::moved_bit`]):
/// set for the slots of a Maglev VIP where a retained ring differs from the live one, or
/// where live connection-table entries differ from it. Packets in a clear slot are sent by
/// the live ring alone; packets in a set slot use the connection table.
pub const MAP_MOVED: &str = "MOVED";
/// `CONNS`: shared LRU hash [`FlowKey`] → [`Flow`], one entry per flow (client → VIP),
/// inserted with the flow's first packet after its SYN (a SYN alone inserts nothing).
pub const MAP_CONNS: &str = "CONNS";
/// `HALF_OPEN`: shared LRU hash [`FlowKey`] → [`Flow`]: the backend a round-robin or
/// least-conn VIP gave a SYN, until the flow's next packet moves it to `CONNS`.
pub const MAP_HALF_OPEN: &str = "HALF_OPEN";
/// `REPLIES`: hash [`BackendKey`] → [`ReplyTarget`], one per backend endpoint.
pub const MAP_REPLIES: &str = "REPLIES";
/// `VIP_ADDRS`: hash [`VipKey`] with port and protocol 0 → [`VipAddress`], one per VIP
/// address: packets from a VIP address are martians, and fragments to it are dropped unless
/// a source-affinity VIP takes them.
pub const MAP_VIP_ADDRS: &str = "VIP_ADDRS";
/// `CLIENT_HOPS`: LRU hash [`VipKey`] with port and protocol 0 (a client's address) →
/// [`CachedHop`]: the FIB's answer for replies to that client, reused for
/// [`crate::limits::CLIENT_HOP_TTL_SECS`] so that a reply costs a hash lookup, not a FIB
/// lookup. State per client address, not per flow, and rebuilt from the FIB by any node.
pub const MAP_CLIENT_HOPS: &str = "CLIENT_HOPS";
/// `EGRESS`: hash interface index → [`Egress`], the interfaces a rewritten packet may leave
/// by from XDP: each interface the program runs on (sent out of itself, untagged) and each
/// 802.1Q device on one of them (sent out of its parent with that tag). So a reply carries
/// the client side's tag whatever tag it arrived with. A next hop through any other interface
/// is handed to the kernel (`PassNotXdpEgress`).
pub const MAP_EGRESS: &str = "EGRESS";
/// `REDIRECT_DROPS`: per-CPU array of one counter, frames the kernel dropped after the program
/// redirected them to one of its interfaces (the interface refused them: a veth peer without
/// NAPI, a full TX ring), counted by [`DROP_COUNTERS`] from the `xdp` tracepoints. The XDP
/// program itself cannot see these drops.
pub const MAP_REDIRECT_DROPS: &str = "REDIRECT_DROPS";
/// The tracepoint programs that count [`MAP_REDIRECT_DROPS`], with their tracepoints.
pub const DROP_COUNTERS: [(&str, &str); 2] = [("lb_xdp_xmit", "xdp_devmap_xmit"), ("lb_xdp_redirect_err", "xdp_redirect_err")];
/// `TX_PORTS`: device map (hash) of the interfaces the program runs on, through which it
/// redirects (`bpf_redirect_map`).
pub const MAP_TX_PORTS: &str = "TX_PORTS";
/// `TOO_BIG`: per-CPU array of one `u64`, the ICMP "fragmentation needed" / "packet too big"
/// budget of the current second: the second (coarse monotonic clock) in the high 32 bits, the
/// errors sent in it in the low 32 ([`crate::limits::TOO_BIG_PER_CPU_PER_SEC`]).
pub const MAP_TOO_BIG: &str = "TOO_BIG";
/// `REASONS`: per-CPU array [`crate::counters::Reason`] → packet count.
pub const MAP_REASONS: &str = "REASONS";
/// `VIP_STATS`: per-CPU array VIP id → [`Traffic`].
pub const MAP_VIP_STATS: &str = "VIP_STATS";
/// `BACKEND_STATS`: per-CPU array backend id → [`Traffic`].
pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
/// `RR_CURSORS`: per-CPU array VIP id → next ring slot of a round-robin VIP.
pub const MAP_RR_CURSORS: &str = "RR_CURSORS";
/// `ACTIVE_CONNS`: array backend id → flows tracked for it (`u64`, least-conn), recounted by the
/// agent every second and incremented by the data path for each new flow in between.
pub const MAP_ACTIVE_CONNS: &str = "ACTIVE_CONNS";

/// `ENDPOINT_FILTER`: array of [`ENDPOINT_FILTER_WORDS`] 64-bit words, one bit per hash of a
/// VIP or backend endpoint or of a VIP address ([`crate::hash::endpoint_bit`]). A clear bit
/// proves that a packet is for no VIP (destination) or from no backend (source), so traffic
/// that is neither skips the `VIPS` and `CONNS` lookups, or that an address is no VIP's.
/// The agent sets a bit before it writes the VIP, backend or VIP address and never clears
/// one (a stale bit only costs a lookup).
pub const MAP_ENDPOINT_FILTER: &str = "ENDPOINT_FILTER";
/// Words of `ENDPOINT_FILTER` (65,536 bits, 8 KiB).
pub const ENDPOINT_FILTER_WORDS: u32 = 1024;
/// Salt of VIP endpoints (address, port) in `ENDPOINT_FILTER`.
pub const FILTER_VIP: u64 = 0x7669_7000;
/// Salt of backend endpoints (address, port) in `ENDPOINT_FILTER`.
pub const FILTER_BACKEND: u64 = 0x6265_6b00;
/// Salt of VIP addresses (port 0) in `ENDPOINT_FILTER`: a clear bit proves that a source
/// address is no VIP's, so a new flow's martian check skips the `VIP_ADDRS` lookup.
pub const FILTER_VIP_ADDRESS: u64 = 0x7661_6400;


/// `VIP_INDEX`: array of [`crate::limits::VIP_INDEX_SLOTS`] `u32`, indexed by
/// [`crate::hash::vip_slot`] of a VIP key: [`VIP_INDEX_NONE`] (no VIP hashes there),
/// [`VIP_INDEX_SHARED`] (several do: the data path looks the key up in `VIPS`), or entry
/// number + 1 of the one VIP there in `VIP_ENTRIES`. Two inlined array reads and a key
/// comparison in place of the `VIPS` hash lookup (jhash of the 20-byte key, bucket walk,
/// memcmp), which with the key and the copy took a fifth of an established packet's time
/// (bench/results/profile-194f8b2.md).
pub const MAP_VIP_INDEX: &str = "VIP_INDEX";
/// `VIP_INDEX` value: no VIP's key hashes to the slot.
pub const VIP_INDEX_NONE: u32 = 0;
/// `VIP_INDEX` value: several VIPs' keys hash to the slot; `VIPS` decides.
pub const VIP_INDEX_SHARED: u32 = u32::MAX;
/// `VIP_ENTRIES`: array of [`VipEntry`], two per VIP id ([`crate::limits::vip_entry`]). Array
/// values are written in place, so a reader could see half of an update: the agent writes the
/// VIP's entry that `VIP_INDEX` does not name, then points `VIP_INDEX` at it (one aligned
/// 32-bit store), as it does with rings. A packet sees the old entry or the new one.
pub const MAP_VIP_ENTRIES: &str = "VIP_ENTRIES";

/// A `VIP_ENTRIES` value: a VIP's key (to tell it from another key of the same index slot)
/// and the same [`VipMeta`] as its `VIPS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipEntry {
    /// The VIP.
    pub key: VipKey,
    /// What the data path knows about it.
    pub meta: VipMeta,
}
const _: () = assert!(core::mem::size_of::<VipEntry>() == 44);

/// `FLOW_SYNC`: ring buffer of [`SyncRecord`]s, one per connection that started in a moved slot
/// of a Maglev VIP, written when its first packet after the SYN moves it to `CONNS`: the only
/// flows another node cannot derive from its rings. The agent sends them to its peers
/// (`global.flow_sync`). Not pinned: each load of the program makes its own, read by the
/// agent that loaded it.
pub const MAP_FLOW_SYNC: &str = "FLOW_SYNC";
/// Read-only global: non-zero when the agent reads `FLOW_SYNC` (`global.flow_sync` is set);
/// otherwise the program writes nothing to it.
pub const GLOBAL_FLOW_SYNC: &str = "LB_FLOW_SYNC";

/// A `FLOW_SYNC` record: a connection in a moved slot and the backend this node gave it.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncRecord {
    /// The flow (client → VIP).
    pub key: FlowKey,
    /// Its VIP's id.
    pub vip_id: u32,
    /// Its backend's slot (of this node: a peer finds its own by the backend's address).
    pub backend_id: u32,
}

/// `META`: array of [`META_SLOTS`] `u64`, indexed by the `META_*` constants: what a pinned data
/// path was built and loaded with. The program never reads it; an agent reads it before it
/// adopts pinned maps, and refuses them unless it matches.
pub const MAP_META: &str = "META";
/// Entries of `META`.
pub const META_SLOTS: u32 = 8;
/// `META` index: the [`LAYOUT_VERSION`] of the maps (0 while the first agent is still
/// creating them).
pub const META_LAYOUT: u32 = 0;
/// `META` index: the ring size the rings were written for.
pub const META_RING_SIZE: u32 = 1;
/// `META` index: the flow hash seed the rings and the connection table were built with.
pub const META_HASH_SEED: u32 = 2;
/// `META` index: a hash of the program object running on the pinned links.
pub const META_PROGRAM_HASH: u32 = 3;
/// `META` index: when that program was loaded (seconds since the Unix epoch).
pub const META_PROGRAM_LOADED_AT: u32 = 4;
/// `META` index: the agent's heartbeat, the `CLOCK_MONOTONIC` time in milliseconds at which an
/// agent last refreshed this data path (every second while it runs; 0: never, as a data path an
/// older build made). `lb check` answers from the pinned maps while the agent is away only
/// while the heartbeat is younger than [`crate::limits::CHECK_GRACE_MS`]. Taking this spare
/// slot is no layout change: an agent that does not write it leaves it 0, and older builds
/// never read it.
pub const META_HEARTBEAT: u32 = 5;
const _: () = assert!(META_HEARTBEAT < META_SLOTS);

/// Version of the layout of the pinned maps: their set, names, types, keys, values and the
/// meaning of their entries. Bump it with any such change: an agent adopts pinned maps only
/// of its own layout version (`lb_common::maps::MAP_META`). Adding a counter at the end of
/// [`crate::counters::Reason`] is not a layout change (`REASONS` has [`REASON_SLOTS`] entries),
/// nor is a new `META` entry in a spare slot that reads 0 until written ([`META_HEARTBEAT`]).
pub const LAYOUT_VERSION: u64 = 9;

/// Entries of `REASONS`: room for counters added by later builds without a layout change.
pub const REASON_SLOTS: u32 = 64;
const _: () = assert!(crate::counters::Reason::COUNT < REASON_SLOTS);
/// The `REASONS` slot the `upgrade-probe` build of the program counts every verdict and event in
/// (so every packet; the default build never touches it): how the tests tell which build runs.
pub const UPGRADE_PROBE_SLOT: u32 = REASON_SLOTS - 1;

/// Every map a running data path keeps in bpffs (all but the program's private `.rodata`,
/// `.bss` and log buffer), so that it outlives the agent.
pub const PINNED_MAPS: [&str; 22] = [
    MAP_VIPS,
    MAP_VIP_INDEX,
    MAP_VIP_ENTRIES,
    MAP_BACKENDS,
    MAP_RING,
    MAP_MOVED,
    MAP_CONNS,
    MAP_HALF_OPEN,
    MAP_REPLIES,
    MAP_VIP_ADDRS,
    MAP_CLIENT_HOPS,
    MAP_EGRESS,
    MAP_TX_PORTS,
    MAP_REDIRECT_DROPS,
    MAP_REASONS,
    MAP_VIP_STATS,
    MAP_BACKEND_STATS,
    MAP_RR_CURSORS,
    MAP_ACTIVE_CONNS,
    MAP_ENDPOINT_FILTER,
    MAP_META,
    MAP_TOO_BIG,
];

/// Read-only global: number of slots of one Maglev ring (prime).
pub const GLOBAL_RING_SIZE: &str = "LB_RING_SIZE";
/// Read-only global: the flow hash seed (same on every node of a cluster).
pub const GLOBAL_HASH_SEED: &str = "LB_HASH_SEED";

/// Address family tag for IPv4.
pub const FAMILY_V4: u8 = 4;
/// Address family tag for IPv6.
pub const FAMILY_V6: u8 = 6;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// An IPv4 or IPv6 address as stored in map keys and values.
pub type Addr = [u8; 16];

/// Stores an IPv4 address in the [`Addr`] layout.
pub const fn v4_addr(octets: [u8; 4]) -> Addr {
    let mut a = [0u8; 16];
    a[0] = octets[0];
    a[1] = octets[1];
    a[2] = octets[2];
    a[3] = octets[3];
    a
}

/// An IP address in the [`Addr`] layout.
pub const fn addr_of(ip: core::net::IpAddr) -> Addr {
    match ip {
        core::net::IpAddr::V4(a) => v4_addr(a.octets()),
        core::net::IpAddr::V6(a) => a.octets(),
    }
}

/// The IP address `addr` of family `family` ([`FAMILY_V4`] or [`FAMILY_V6`]) holds.
pub const fn ip_of(addr: &Addr, family: u8) -> core::net::IpAddr {
    if family == FAMILY_V4 {
        core::net::IpAddr::V4(core::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        core::net::IpAddr::V6(core::net::Ipv6Addr::from_octets(*addr))
    }
}

/// A virtual service: the address, port and protocol clients connect to.
///
/// 4-byte aligned (its size, 20, is unchanged): the data path then builds keys with 32-bit
/// copies of the address instead of sixteen byte loads and stores.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// VIP address.
    pub addr: Addr,
    /// VIP port (host order).
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
}

impl VipKey {
    /// Whether `self` and `other` are the same key, compared a word at a time (no `bcmp`
    /// call on BPF, where the derived comparison may become one).
    #[inline(always)]
    pub fn same(&self, other: &VipKey) -> bool {
        let (a, b) = (&self.addr, &other.addr);
        let word = |x: &Addr, i: usize| u32::from_ne_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
        word(a, 0) == word(b, 0)
            && word(a, 4) == word(b, 4)
            && word(a, 8) == word(b, 8)
            && word(a, 12) == word(b, 12)
            && self.port == other.port
            && self.proto == other.proto
            && self.family == other.family
    }
}

/// Hash only the client's address: every flow of one client goes to one backend
/// (the lesson's "sticky sessions").
pub const VIP_FLAG_HASH_SRC_ONLY: u32 = 1;

/// Scheduler: weighted round robin over the VIP's ring, per CPU, per new flow.
pub const VIP_FLAG_ROUND_ROBIN: u32 = 2;
/// Scheduler: least connections between two candidate backends of the ring
/// ("power of two choices").
pub const VIP_FLAG_LEAST_CONN: u32 = 4;

/// What the data path knows about a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    /// Index of the VIP's rings and counters, below the VIP capacity.
    pub id: u32,
    /// `VIP_FLAG_*` bits.
    pub flags: u32,
    /// Which of the VIP's [`crate::limits::RINGS_PER_VIP`] rings is live. The agent fills a
    /// spare ring, then replaces this value: a packet sees the old ring or the new one, never
    /// a mix.
    pub ring_half: u32,
    /// Number of backends in the live ring (informational).
    pub backend_count: u32,
    /// Idle timeout of the VIP's UDP flows, in seconds.
    pub udp_idle_secs: u16,
    /// The ring a Maglev VIP retains after a change (the live ring before its first change of
    /// the retention), or [`crate::limits::NO_RING`]: a packet in a moved slot without an
    /// entry and without a SYN follows it.
    pub retained_ring: u16,
    /// Until when (second of the coarse monotonic clock) the retained ring is kept; 0 when
    /// none is. Kept here so that an agent adopting the maps keeps the same deadline.
    pub retained_until: u32,
}

impl VipMeta {
    /// Whether the VIP is scheduled by Maglev alone (neither round-robin nor least-conn): its
    /// flows keep no state while their ring slot has not moved.
    #[inline(always)]
    pub const fn is_maglev(&self) -> bool {
        self.flags & (VIP_FLAG_ROUND_ROBIN | VIP_FLAG_LEAST_CONN) == 0
    }

    /// The retained ring, if any.
    #[inline(always)]
    pub const fn retained(&self) -> Option<u32> {
        if self.retained_ring == crate::limits::NO_RING { None } else { Some(self.retained_ring as u32) }
    }
}

/// Where to send a rewritten packet at layer 2.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface; 0 means the interface the packet arrived on (XDP_TX).
    pub ifindex: u32,
    /// Next hop's MAC; all zero means "not resolved": the FIB or the kernel decides.
    pub dst_mac: [u8; 6],
    /// Egress interface's own MAC.
    pub src_mac: [u8; 6],
}

impl NextHop {
    /// Whether the MAC addresses are known.
    #[inline(always)]
    pub fn is_resolved(&self) -> bool {
        self.dst_mac != [0; 6]
    }
}

/// Lifecycle of a backend slot.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Free slot.
    #[default]
    Unused = 0,
    /// Takes new flows and keeps its flows.
    Up = 1,
    /// Keeps its flows, takes no new ones (operator drain).
    Draining = 2,
    /// Taken out by the operator: its flows are given a new backend at their next packet.
    Down = 3,
    /// Failed its health checks (as this node sees them): takes no new flows; its established
    /// TCP flows stay (a TCP flow given another backend mid-stream is only reset, and a check
    /// that fails on one node alone says little about the backend), its UDP flows move.
    Failed = 4,
}

impl BackendState {
    /// Decodes the byte stored in [`Backend::state`].
    pub const fn from_u8(v: u8) -> BackendState {
        match v {
            1 => BackendState::Up,
            2 => BackendState::Draining,
            3 => BackendState::Down,
            4 => BackendState::Failed,
            _ => BackendState::Unused,
        }
    }

    /// Whether a tracked flow in lifecycle state `flow_state` (`crate::flow::FLOW_*`) stays
    /// with a backend in this state: the one rule the data path and `lb explain` share.
    pub const fn keeps_flow(self, flow_state: u8) -> bool {
        match self {
            BackendState::Up | BackendState::Draining => true,
            BackendState::Failed => flow_state != crate::flow::FLOW_IDLE,
            BackendState::Down | BackendState::Unused => false,
        }
    }
}

/// A real server behind a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Backend address (same family as its VIP).
    pub addr: Addr,
    /// Backend port (host order).
    pub port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// A [`BackendState`] as `u8`.
    pub state: u8,
    /// Bumped each time the slot is given to another backend, so stale connection entries
    /// are recognised.
    pub generation: u32,
    /// How to reach it.
    pub hop: NextHop,
    /// How its VIP's packets reach it: `crate::encap::FORWARD_*` (NAT: 0).
    pub forwarding: u8,
    /// Always zero.
    pub pad: u8,
    /// Its VIP's id (read back by an agent adopting the maps; a NAT backend's `REPLIES` entry
    /// names it too, a direct server return backend has none).
    pub vip_id: u16,
    /// The outer header's parameters in a tunnel or GUE mode (all zero otherwise).
    pub tunnel: crate::encap::Tunnel,
}

const _: () = assert!(crate::limits::MAX_VIP_CAPACITY <= u16::MAX as u32 + 1, "Backend::vip_id is 16 bits");

/// The 5-tuple of a packet as seen on the wire: the connection table's key.
///
/// 8-byte aligned (its size, 40, is unchanged): the data path then builds and copies keys
/// with 64-bit stores instead of byte loops.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Source port (host order).
    pub sport: u16,
    /// Destination port (host order).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Address family.
    pub family: u8,
    /// Always zero.
    pub pad: [u8; 2],
}

/// The connection table's value (one entry per flow, client → VIP).
pub use crate::flow::Flow;

/// A backend's address, port, protocol and family: the key of `REPLIES` (the same layout as a
/// VIP's key).
pub type BackendKey = VipKey;

/// `REPLIES` value: what a backend's packets from its service endpoint are translated to.
/// The agent writes one per backend endpoint; an endpoint serves one VIP only (the
/// configuration refuses two), so a reply is translated without per-flow state and any node
/// with the same configuration translates it the same way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyTarget {
    /// The VIP the backend serves: its address and port become the reply's source.
    pub vip: VipKey,
    /// The VIP's id (counters).
    pub vip_id: u32,
    /// The backend's slot (counters).
    pub backend_id: u32,
}

/// `VIP_ADDRS` value: for each protocol, the port of the VIP that takes the fragments sent to
/// this address, or 0: their fragments are dropped.
///
/// A later fragment carries no port, so it can follow its first fragment only to a backend
/// chosen from its source address alone: when the address has exactly one VIP of that
/// protocol, and that VIP is a Maglev VIP with source affinity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipAddress {
    /// Port of the TCP VIP that takes fragments.
    pub tcp_fragments_port: u16,
    /// Port of the UDP VIP that takes fragments.
    pub udp_fragments_port: u16,
}

impl VipAddress {
    /// The value for an address whose VIPs are `vips`, as (port, protocol, `VIP_FLAG_*`).
    pub fn of<I: Iterator<Item = (u16, u8, u32)> + Clone>(vips: I) -> VipAddress {
        let port_for = |proto: u8| {
            let mut of_proto = vips.clone().filter(|v| v.1 == proto);
            match (of_proto.next(), of_proto.next()) {
                (Some((port, _, flags)), None)
                    if flags & VIP_FLAG_HASH_SRC_ONLY != 0
                        && flags & (VIP_FLAG_ROUND_ROBIN | VIP_FLAG_LEAST_CONN) == 0 =>
                {
                    port
                }
                _ => 0,
            }
        };
        VipAddress { tcp_fragments_port: port_for(PROTO_TCP), udp_fragments_port: port_for(PROTO_UDP) }
    }

    /// The port of the VIP that takes fragments of protocol `proto`, or 0.
    #[inline(always)]
    pub fn fragments_port(&self, proto: u8) -> u16 {
        match proto {
            PROTO_TCP => self.tcp_fragments_port,
            PROTO_UDP => self.udp_fragments_port,
            _ => 0,
        }
    }
}

/// `CLIENT_HOPS` value: a next hop towards a client and the last second it may be used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedHop {
    /// Egress interface and MACs, as the FIB answered.
    pub hop: NextHop,
    /// Last second (coarse monotonic clock) the answer is used.
    pub until: u32,
    /// Always zero.
    pub pad: u32,
}

/// `EGRESS` value: how a packet leaves by an interface from XDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    /// The interface the frame is sent out of: the interface itself, or a VLAN device's
    /// parent (XDP can only send through the parent).
    pub out: u32,
    /// The 802.1Q tag to carry (12 bits), when [`Egress::tagged`].
    pub vlan_id: u16,
    /// 1: tagged with `vlan_id`; 0: untagged.
    pub tagged: u16,
}

/// Packet and byte counters of a VIP or a backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (whole frames).
    pub bytes: u64,
    /// New flows assigned.
    pub new_flows: u64,
    /// Packets for the VIP dropped because no backend could take them (VIPs only).
    pub dropped: u64,
}

impl Traffic {
    /// Adds another CPU's counters.
    pub fn add(&mut self, o: &Traffic) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_flows += o.new_flows;
        self.dropped += o.dropped;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is #[repr(C)], Copy, made of integers and byte arrays with no
    // implicit padding, so any bit pattern is valid.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipMeta {}
    // SAFETY: as above (a key of 20 bytes and a value of 24, both 4-byte aligned: no padding).
    unsafe impl aya::Pod for super::VipEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Flow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReplyTarget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CachedHop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Egress {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipAddress {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Traffic {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<VipMeta>(), 24);
        assert_eq!(size_of::<NextHop>(), 16);
        assert_eq!(size_of::<Backend>(), 68);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<Flow>(), 16);
        assert_eq!(size_of::<ReplyTarget>(), 28);
        assert_eq!(size_of::<CachedHop>(), 24);
        assert_eq!(size_of::<Egress>(), 8);
        assert_eq!(size_of::<VipAddress>(), 4);
        assert_eq!(size_of::<Traffic>(), 32);
    }

    #[test]
    fn fragments_go_to_the_only_source_affinity_vip_of_their_protocol() {
        let src = VIP_FLAG_HASH_SRC_ONLY;
        let a = VipAddress::of([(80, PROTO_TCP, src), (53, PROTO_UDP, 0)].into_iter());
        assert_eq!((a.fragments_port(PROTO_TCP), a.fragments_port(PROTO_UDP), a.fragments_port(1)), (80, 0, 0));
        let two = VipAddress::of([(80, PROTO_TCP, src), (81, PROTO_TCP, src)].into_iter());
        assert_eq!(two.fragments_port(PROTO_TCP), 0, "a later fragment could belong to either");
        let rr = VipAddress::of([(53, PROTO_UDP, src | VIP_FLAG_ROUND_ROBIN)].into_iter());
        assert_eq!(rr.fragments_port(PROTO_UDP), 0, "round robin does not hash the source");
        assert_eq!(VipAddress::of(core::iter::empty()), VipAddress::default());
    }

    #[test]
    fn a_failed_backend_keeps_its_tcp_flows_only() {
        use crate::flow::{FLOW_CLOSING, FLOW_IDLE, FLOW_OPEN, FLOW_RESET};
        for tcp in [FLOW_OPEN, FLOW_CLOSING, FLOW_RESET] {
            assert!(BackendState::Failed.keeps_flow(tcp) && BackendState::Draining.keeps_flow(tcp));
            assert!(!BackendState::Down.keeps_flow(tcp) && !BackendState::Unused.keeps_flow(tcp));
        }
        assert!(!BackendState::Failed.keeps_flow(FLOW_IDLE), "UDP moves");
        assert!(BackendState::Up.keeps_flow(FLOW_IDLE));
    }

    #[test]
    fn backend_state_round_trips() {
        for s in [BackendState::Unused, BackendState::Up, BackendState::Draining, BackendState::Down, BackendState::Failed] {
            assert_eq!(BackendState::from_u8(s as u8), s);
        }
        assert_eq!(BackendState::from_u8(200), BackendState::Unused);
    }
}
