//! Encapsulated frames of direct server return, built from scratch (literal protocol numbers,
//! checksums by `crate::packet`, never by `lb_common`): IPv4-in-IPv4, IPv6-in-IPv6,
//! IPv4-in-IPv6 and GUE variant 1 over IPv4 or IPv6.

use std::net::IpAddr;

use crate::packet::{Frame, IpFields, checksum, ip_header, pseudo_header};

/// How the inner packet is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outer {
    /// Directly after the outer IP header (protocol 4 for an inner IPv4 packet, 41 for IPv6).
    Ip,
    /// In UDP from `sport` to `dport` (GUE variant 1: no GUE header), with a UDP checksum.
    Gue {
        /// UDP source port.
        sport: u16,
        /// UDP destination port.
        dport: u16,
    },
}

/// The outer fields of the fixtures' encapsulated frames.
pub const OUTER_FIELDS: IpFields = IpFields { tos: 0, ident: 0x5a5a, dont_fragment: true };

/// The IP packet (no Ethernet header) of `inner`.
pub fn ip_packet(inner: &Frame) -> Vec<u8> {
    let l3 = if inner.vlan.is_some() { 18 } else { 14 };
    inner.bytes()[l3..].to_vec()
}

/// `inner`'s IP packet inside an outer header from `src` to `dst` carried as `how`, behind
/// `inner`'s MAC addresses (untagged).
pub fn encapsulate(inner: &Frame, src: IpAddr, dst: IpAddr, how: Outer) -> Vec<u8> {
    encapsulate_packet(inner, &ip_packet(inner), src, dst, how)
}

/// [`encapsulate`] with the inner IP packet `packet` (e.g. a damaged one) in place of
/// `inner`'s own.
pub fn encapsulate_packet(inner: &Frame, packet: &[u8], src: IpAddr, dst: IpAddr, how: Outer) -> Vec<u8> {
    let (proto, payload) = match how {
        Outer::Ip => (if packet.first().is_some_and(|b| b >> 4 == 6) { 41 } else { 4 }, packet.to_vec()),
        Outer::Gue { sport, dport } => {
            let mut udp = Vec::with_capacity(8 + packet.len());
            udp.extend_from_slice(&sport.to_be_bytes());
            udp.extend_from_slice(&dport.to_be_bytes());
            udp.extend_from_slice(&((8 + packet.len()) as u16).to_be_bytes());
            udp.extend_from_slice(&[0, 0]);
            udp.extend_from_slice(packet);
            let mut c = checksum(pseudo_header(src, dst, 17, udp.len()), &udp);
            if c == 0 {
                c = 0xFFFF;
            }
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            (17, udp)
        }
    };
    let mut f = Vec::with_capacity(14 + 48 + packet.len());
    f.extend_from_slice(&inner.dst_mac);
    f.extend_from_slice(&inner.src_mac);
    f.extend_from_slice(&ip_header(src, dst, proto, payload.len(), OUTER_FIELDS));
    f.extend_from_slice(&payload);
    f
}

/// The outer header length of `how` over an outer header of `dst`'s family (Ethernet excluded).
pub fn outer_len(dst: IpAddr, how: Outer) -> usize {
    (if dst.is_ipv4() { 20 } else { 40 }) + if matches!(how, Outer::Gue { .. }) { 8 } else { 0 }
}
