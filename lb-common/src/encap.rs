//! The encapsulations of direct server return, defined once: the load balancer wraps a
//! client's packet in them (a later step) and the backend's decapsulation program
//! (`lb-ebpf/src/bin/decap.rs`) strips them.
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
    fn a_decap_address_has_no_padding() {
        assert_eq!(core::mem::size_of::<DecapAddr>(), 20);
        assert_eq!(DecapAddr::v4([10, 0, 0, 1]).addr[..5], [10, 0, 0, 1, 0]);
    }
}
