//! The forwarding modes of direct server return and their encapsulations, defined once: the
//! load balancer wraps a client's packet in them (`lb-ebpf/src/encap.rs`) and the backend's
//! decapsulation program (`lb-ebpf/src/bin/decap.rs`) strips them.
//!
//! - IPv4-in-IPv4: outer IPv4, protocol [`IPPROTO_IPIP`], inner IPv4;
//! - IPv6-in-IPv6: outer IPv6, next header [`IPPROTO_IPV6`], inner IPv6;
//! - IPv4-in-IPv6: outer IPv6, next header [`IPPROTO_IPIP`], inner IPv4;
//! - GUE variant 1 (draft-ietf-intarea-gue §5): outer IPv4 or IPv6, UDP to the GUE port, then
//!   the inner IPv4 or IPv6 packet with no GUE header: the first nibble of the inner header
//!   (its IP version, 4 or 6) says which.
//!
//! The outer IPv4 header has no options and is not a fragment; the outer IPv6 header has no
//! extension headers: the load balancer never sends anything else, and the decapsulation
//! program leaves anything else to the kernel untouched.

/// Length of an Ethernet header without VLAN tag.
pub const ETH_HLEN: usize = 14;
/// Length of an IPv4 header without options (the only outer IPv4 header used).
pub const IPV4_HLEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;
/// Length of a UDP header.
pub const UDP_HLEN: usize = 8;

/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;

/// IP protocol number of an encapsulated IPv4 packet (IPv4-in-IPv4, IPv4-in-IPv6).
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of an encapsulated IPv6 packet (IPv6-in-IPv6).
pub const IPPROTO_IPV6: u8 = 41;
/// IP protocol number of UDP (GUE's carrier).
pub const IPPROTO_UDP: u8 = 17;

/// The GUE destination port by default: 6080, the port of Katran's GUE encapsulation and of
/// the backends set up for it (IANA assigns GUE no port), so that backends set up for either
/// balancer take the other's packets. The decapsulation program takes another at load time
/// ([`GLOBAL_DECAP_GUE_PORT`]).
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// Outer header bytes an encapsulation adds in front of the inner IP packet.
pub const fn outer_len(outer_v6: bool, gue: bool) -> usize {
    (if outer_v6 { IPV6_HLEN } else { IPV4_HLEN }) + if gue { UDP_HLEN } else { 0 }
}

/// The most outer header bytes an encapsulation adds (GUE over IPv6).
pub const MAX_OUTER_LEN: usize = outer_len(true, true);

/// `Backend::forwarding`: destination NAT, replies back through the load balancer.
pub const FORWARD_NAT: u8 = 0;
/// `Backend::forwarding`: direct server return on one L2 segment, the packet unchanged but
/// for its destination MAC (the backend's).
pub const FORWARD_DIRECT: u8 = 1;
/// `Backend::forwarding`: direct server return in an IP tunnel (IPv4-in-IPv4, IPv6-in-IPv6,
/// IPv4-in-IPv6: the outer family is the backend address's).
pub const FORWARD_TUNNEL: u8 = 2;
/// `Backend::forwarding`: direct server return in GUE (the tunnel inside UDP).
pub const FORWARD_GUE: u8 = 3;

/// Whether `forwarding` is one of the direct server return modes: the backend answers the
/// client itself, so its packets need no reply translation.
pub const fn is_dsr(forwarding: u8) -> bool {
    forwarding != FORWARD_NAT
}

/// Whether `forwarding` puts an outer header in front of the packet.
pub const fn is_encapsulated(forwarding: u8) -> bool {
    forwarding == FORWARD_TUNNEL || forwarding == FORWARD_GUE
}

/// [`Tunnel::flags`]: clamp the MSS option of a client's SYN so that the encapsulated
/// segments fit [`Tunnel::mtu`].
pub const TUNNEL_FLAG_MSS_CLAMP: u8 = 1;

/// How a backend in a tunnel or GUE mode is reached: the outer header's source, the GUE
/// port, and the MTU the encapsulated packet must fit. Part of the backend's `BACKENDS`
/// value, written by the agent from its route to the backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    /// Outer source: the node's address on the egress interface, or the base of a prefix
    /// whose last [`Tunnel::src_host_bits`] bits come from the flow hash. Same family as the
    /// backend; all zero while unknown (the packet is then dropped, `DropNoTunnelHop`).
    pub src: crate::maps::Addr,
    /// GUE destination port (host order).
    pub gue_port: u16,
    /// Bits of the outer source taken from the flow hash (0: the address as it is).
    pub src_host_bits: u8,
    /// `TUNNEL_FLAG_*` bits.
    pub flags: u8,
    /// MTU of the egress interface towards the backend (0: not checked).
    pub mtu: u16,
    /// Always zero.
    pub pad: u16,
}

/// The outer source of a flow with hash `hash`: `base` with its last `host_bits` bits (at
/// most [`crate::limits::MAX_TUNNEL_SOURCE_HOST_BITS`]) replaced by the hash's low bits.
#[inline(always)]
pub fn outer_source(base: &crate::maps::Addr, family: u8, host_bits: u8, hash: u32) -> crate::maps::Addr {
    let mut a = *base;
    let last = if family == crate::maps::FAMILY_V4 { 3 } else { 15 };
    let tail = source_tail(u16::from_be_bytes([a[last - 1], a[last]]), host_bits, hash);
    [a[last - 1], a[last]] = tail.to_be_bytes();
    a
}

/// The last 16 bits of an outer source whose base ends in `tail`: [`outer_source`] on the only
/// bits it changes (the data path writes the base, then these).
#[inline(always)]
pub fn source_tail(tail: u16, host_bits: u8, hash: u32) -> u16 {
    let bits = if host_bits > crate::limits::MAX_TUNNEL_SOURCE_HOST_BITS { crate::limits::MAX_TUNNEL_SOURCE_HOST_BITS } else { host_bits };
    if bits == 0 {
        return tail;
    }
    let mask = ((1u32 << bits) - 1) as u16;
    (tail & !mask) | (hash as u16 & mask)
}

/// The outer UDP source port of a GUE packet with flow hash `hash`: from the hash, so that a
/// backend's NIC spreads the flows over its queues (RSS), in the dynamic range 49152-65535.
#[inline(always)]
pub const fn gue_source_port(hash: u32) -> u16 {
    0xC000 | ((hash ^ (hash >> 16)) as u16 & 0x3FFF)
}

/// The Internet checksum of `header` (whose checksum field is zero).
#[inline(always)]
pub fn header_checksum<const N: usize>(header: &[u8; N]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([header[i], header[i + 1]]) as u32;
        i += 2;
    }
    !crate::csum::fold32(sum)
}

/// The outer IPv4 header: no options, DF set, identification 0 (an atomic datagram, RFC
/// 6864), `tos` and `ttl` copied from the inner header, and its checksum.
#[inline(always)]
pub fn ipv4_outer_header(src: &[u8; 4], dst: &[u8; 4], total_len: u16, tos: u8, ttl: u8, proto: u8) -> [u8; IPV4_HLEN] {
    let mut h = ipv4_outer_fields(src, dst, total_len, tos, ttl, proto);
    let check = header_checksum(&h).to_be_bytes();
    h[10] = check[0];
    h[11] = check[1];
    h
}

/// [`ipv4_outer_header`] with a zero checksum: the data path writes it into the packet and
/// sums it there (a checksum of a copy on the stack would cost the stack it lacks).
#[inline(always)]
pub fn ipv4_outer_fields(src: &[u8; 4], dst: &[u8; 4], total_len: u16, tos: u8, ttl: u8, proto: u8) -> [u8; IPV4_HLEN] {
    let len = total_len.to_be_bytes();
    [0x45, tos, len[0], len[1], 0, 0, 0x40, 0, ttl, proto, 0, 0, src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3]]
}

/// Offset of the checksum in an IPv4 header.
pub const IPV4_CHECK: usize = 10;

/// The first 8 bytes of the outer IPv6 header: version, traffic class `tclass` (copied from
/// the inner header), flow label 0, payload length, next header and hop limit (copied).
/// The addresses follow.
#[inline(always)]
pub const fn ipv6_outer_fixed(tclass: u8, payload_len: u16, next: u8, hop_limit: u8) -> [u8; 8] {
    let len = payload_len.to_be_bytes();
    [0x60 | (tclass >> 4), tclass << 4, 0, 0, len[0], len[1], next, hop_limit]
}

/// The MTU a client may use towards a backend behind an egress MTU of `mtu` and `outer`
/// bytes of outer headers: what an ICMP "fragmentation needed" or "packet too big" says,
/// never below the family's minimum (576 for IPv4 as the data path reports it, 1280 for
/// IPv6, whose hosts take no less).
pub const fn inner_mtu(mtu: u16, outer: usize, inner_v6: bool) -> u16 {
    let room = mtu.saturating_sub(outer as u16);
    let floor = if inner_v6 { 1280 } else { 576 };
    if room < floor { floor } else { room }
}

/// The largest TCP MSS for segments of inner family `inner_v6` that fit `inner_mtu`
/// (IP and TCP headers without options).
pub const fn clamped_mss(inner_mtu: u16, inner_v6: bool) -> u16 {
    inner_mtu.saturating_sub(if inner_v6 { IPV6_HLEN as u16 } else { IPV4_HLEN as u16 } + 20)
}

/// Name of the decapsulation program in its object.
pub const DECAP_PROGRAM_NAME: &str = "lb_decap";
/// The load-time global holding the GUE destination port (a `u16`).
pub const GLOBAL_DECAP_GUE_PORT: &str = "DECAP_GUE_PORT";
/// Map of the backend's own tunnel endpoints: an outer destination not in it is not for us.
pub const MAP_DECAP_ADDRS: &str = "DECAP_ADDRS";
/// Map of the VIPs the backend serves: an inner destination not in it is never decapsulated
/// (the backend is no open relay).
pub const MAP_DECAP_VIPS: &str = "DECAP_VIPS";
/// Per-CPU array of [`DecapReason`] counters.
pub const MAP_DECAP_STATS: &str = "DECAP_STATS";

/// How an outer header's protocol says its payload is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// The inner IP packet follows the outer IP header; its version must be `version`.
    Ip {
        /// The inner IP version the protocol number announces (4 or 6).
        version: u8,
    },
    /// UDP: GUE if the destination port is the GUE port.
    Udp,
}

/// How a payload of IP protocol `proto` is carried, if it may be an encapsulation.
pub const fn carrier(proto: u8) -> Option<Carrier> {
    match proto {
        IPPROTO_IPIP => Some(Carrier::Ip { version: 4 }),
        IPPROTO_IPV6 => Some(Carrier::Ip { version: 6 }),
        IPPROTO_UDP => Some(Carrier::Udp),
        _ => None,
    }
}

/// The EtherType of an inner packet whose first byte is `first`: IPv4 or IPv6 by its version
/// nibble; `None` for anything else (for GUE: a variant 0 GUE header, or not IP).
pub const fn inner_ether_type(first: u8) -> Option<u16> {
    match first >> 4 {
        4 => Some(ETH_P_IPV4),
        6 => Some(ETH_P_IPV6),
        _ => None,
    }
}

/// The length of the inner IP header whose first byte is `first`, as far as the program reads
/// it (the fixed header, up to and including the destination address): `None` for an IPv4
/// header length below 5 words.
pub const fn inner_min_len(first: u8) -> Option<usize> {
    match first >> 4 {
        4 if first & 0x0F >= 5 => Some(IPV4_HLEN),
        6 => Some(IPV6_HLEN),
        _ => None,
    }
}

/// An address in the decapsulation maps: family ([`crate::maps::FAMILY_V4`] or `FAMILY_V6`)
/// and address in [`crate::maps::Addr`] layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecapAddr {
    /// The address (IPv4 in the first four bytes, the rest zero).
    pub addr: crate::maps::Addr,
    /// Its family.
    pub family: u8,
    /// Zero.
    pub _pad: [u8; 3],
}

impl DecapAddr {
    /// The IPv4 address `octets`.
    pub const fn v4(octets: [u8; 4]) -> DecapAddr {
        DecapAddr { addr: crate::maps::v4_addr(octets), family: crate::maps::FAMILY_V4, _pad: [0; 3] }
    }

    /// The IPv6 address `octets`.
    pub const fn v6(octets: [u8; 16]) -> DecapAddr {
        DecapAddr { addr: octets, family: crate::maps::FAMILY_V6, _pad: [0; 3] }
    }
}

#[cfg(feature = "user")]
impl From<core::net::IpAddr> for DecapAddr {
    fn from(ip: core::net::IpAddr) -> DecapAddr {
        match ip {
            core::net::IpAddr::V4(a) => DecapAddr::v4(a.octets()),
            core::net::IpAddr::V6(a) => DecapAddr::v6(a.octets()),
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], Copy, integers and byte arrays with no implicit padding (16 + 1 + 3).
unsafe impl aya::Pod for DecapAddr {}

/// What the decapsulation program did with a frame, one counter each (`DECAP_STATS` slot =
/// the discriminant). Every frame is counted once.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapReason {
    /// Outer headers stripped, inner packet passed to the kernel.
    Decapsulated = 0,
    /// Not IPv4 or IPv6 (ARP, ...), or an IP packet of another protocol, UDP to another port,
    /// or an IPv6 header with extension headers: passed untouched.
    NotEncapsulated = 1,
    /// Outer destination not one of the backend's tunnel endpoints (`DECAP_ADDRS`): passed.
    NotForUs = 2,
    /// Inner destination not a VIP the backend serves (`DECAP_VIPS`): passed untouched, so
    /// that the backend relays nothing.
    NotServed = 3,
    /// An outer or inner header cut short, or an inner header whose version is not the one
    /// the outer header announces (not 4 or 6 for GUE): passed untouched.
    Malformed = 4,
    /// Outer IPv4 header with options: passed untouched (the load balancer sends none).
    Ipv4Options = 5,
    /// Outer IPv4 fragment: passed untouched (the kernel has no tunnel to reassemble it for).
    Fragment = 6,
    /// 802.1Q/802.1ad-tagged frame: passed untouched (attach the program to the VLAN
    /// interface instead, whose frames arrive untagged).
    Vlan = 7,
    /// `bpf_xdp_adjust_head` refused: passed untouched.
    AdjustFailed = 8,
}

impl DecapReason {
    /// Every reason, in slot order.
    pub const ALL: [DecapReason; 9] = [
        DecapReason::Decapsulated,
        DecapReason::NotEncapsulated,
        DecapReason::NotForUs,
        DecapReason::NotServed,
        DecapReason::Malformed,
        DecapReason::Ipv4Options,
        DecapReason::Fragment,
        DecapReason::Vlan,
        DecapReason::AdjustFailed,
    ];

    /// The counter's name, for operators.
    pub const fn name(self) -> &'static str {
        match self {
            DecapReason::Decapsulated => "decapsulated",
            DecapReason::NotEncapsulated => "not_encapsulated",
            DecapReason::NotForUs => "not_for_us",
            DecapReason::NotServed => "not_served",
            DecapReason::Malformed => "malformed",
            DecapReason::Ipv4Options => "ipv4_options",
            DecapReason::Fragment => "fragment",
            DecapReason::Vlan => "vlan",
            DecapReason::AdjustFailed => "adjust_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outer_lengths_are_those_of_the_headers() {
        assert_eq!(outer_len(false, false), 20);
        assert_eq!(outer_len(true, false), 40);
        assert_eq!(outer_len(false, true), 28);
        assert_eq!(MAX_OUTER_LEN, 48);
    }

    #[test]
    fn the_protocol_numbers_name_their_carriers() {
        assert_eq!(carrier(4), Some(Carrier::Ip { version: 4 }));
        assert_eq!(carrier(41), Some(Carrier::Ip { version: 6 }));
        assert_eq!(carrier(17), Some(Carrier::Udp));
        for other in [0u8, 6, 47, 50, 58, 94, 255] {
            assert_eq!(carrier(other), None, "protocol {other}");
        }
    }

    #[test]
    fn the_version_nibble_tells_the_inner_family() {
        assert_eq!(inner_ether_type(0x45), Some(ETH_P_IPV4));
        assert_eq!(inner_ether_type(0x4f), Some(ETH_P_IPV4));
        assert_eq!(inner_ether_type(0x60), Some(ETH_P_IPV6));
        // A GUE variant 0 header (first two bits 00) and other versions are not IP.
        for first in [0x00u8, 0x10, 0x20, 0x50, 0x70, 0xf0] {
            assert_eq!(inner_ether_type(first), None, "{first:#x}");
        }
    }

    #[test]
    fn an_inner_header_is_read_up_to_its_destination() {
        assert_eq!(inner_min_len(0x45), Some(20));
        assert_eq!(inner_min_len(0x46), Some(20));
        assert_eq!(inner_min_len(0x44), None);
        assert_eq!(inner_min_len(0x60), Some(40));
        assert_eq!(inner_min_len(0x00), None);
    }

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        for (i, r) in DecapReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(DecapReason::ALL[..i].iter().all(|o| o.name() != r.name()));
        }
        assert!(DecapReason::ALL.len() as u32 <= crate::limits::DECAP_REASON_SLOTS);
    }

    #[test]
    fn the_outer_source_takes_the_host_bits_from_the_hash() {
        let v4 = crate::maps::v4_addr([10, 9, 8, 0]);
        assert_eq!(outer_source(&v4, crate::maps::FAMILY_V4, 0, 0xffff_ffff), v4);
        assert_eq!(outer_source(&v4, crate::maps::FAMILY_V4, 4, 0x1234_5675)[..4], [10, 9, 8, 5]);
        assert_eq!(outer_source(&v4, crate::maps::FAMILY_V4, 12, 0xabc)[..4], [10, 9, 10, 0xbc]);
        // More bits than the limit are cut to the limit.
        assert_eq!(outer_source(&v4, crate::maps::FAMILY_V4, 40, 0xffff_ffff)[..4], [10, 9, 0xff, 0xff]);
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        v6[15] = 0x80;
        let got = outer_source(&v6, crate::maps::FAMILY_V6, 7, 0x23);
        assert_eq!((got[0], got[14], got[15]), (0xfd, 0, 0xa3));
    }

    #[test]
    fn gue_source_ports_are_dynamic_and_follow_the_hash() {
        assert_eq!(gue_source_port(0), 0xC000);
        assert_eq!(gue_source_port(0x0000_3fff), 0xffff);
        assert_ne!(gue_source_port(1), gue_source_port(2));
        assert!((0..10_000u32).all(|h| gue_source_port(h.wrapping_mul(0x9e37_79b9)) >= 49152));
    }

    #[test]
    fn the_outer_ipv4_header_carries_df_the_copied_fields_and_a_valid_checksum() {
        let h = ipv4_outer_header(&[10, 0, 11, 1], &[10, 0, 11, 2], 80, 0xb8, 63, IPPROTO_IPIP);
        // By hand: 45b8 + 0050 + 0000 + 4000 + 3f04 + 0a00 + 0b01 + 0a00 + 0b02 = 0xef0f, whose
        // complement is 0x10f0.
        assert_eq!(h, [0x45, 0xb8, 0, 80, 0, 0, 0x40, 0, 63, 4, 0x10, 0xf0, 10, 0, 11, 1, 10, 0, 11, 2]);
        assert_eq!(header_checksum(&h), 0, "a header with its checksum sums to 0xffff");
    }

    #[test]
    fn the_outer_ipv6_header_copies_the_traffic_class() {
        assert_eq!(ipv6_outer_fixed(0xb9, 60, IPPROTO_IPV6, 64), [0x6b, 0x90, 0, 0, 0, 60, 41, 64]);
    }

    #[test]
    fn the_mtu_reported_leaves_room_for_the_outer_headers() {
        assert_eq!(inner_mtu(1500, outer_len(false, false), false), 1480);
        assert_eq!(inner_mtu(1500, outer_len(true, true), true), 1452);
        assert_eq!(inner_mtu(1300, outer_len(true, false), true), 1280, "never below IPv6's minimum");
        assert_eq!(inner_mtu(9000, outer_len(false, true), false), 8972);
        assert_eq!(clamped_mss(1480, false), 1440);
        assert_eq!(clamped_mss(1452, true), 1392);
    }

    #[test]
    fn a_tunnel_has_no_padding() {
        assert_eq!(core::mem::size_of::<Tunnel>(), 24);
        assert!(is_dsr(FORWARD_DIRECT) && is_dsr(FORWARD_GUE) && !is_dsr(FORWARD_NAT));
        assert!(is_encapsulated(FORWARD_TUNNEL) && !is_encapsulated(FORWARD_DIRECT));
    }

    #[test]
    fn a_decap_address_has_no_padding() {
        assert_eq!(core::mem::size_of::<DecapAddr>(), 20);
        assert_eq!(DecapAddr::v4([10, 0, 0, 1]).addr[..5], [10, 0, 0, 1, 0]);
    }
}
