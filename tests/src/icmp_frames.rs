//! ICMP and ICMPv6 frames (errors quoting a TCP/UDP packet, echo requests) with every
//! checksum computed from scratch (RFC 1071, RFC 4443 pseudo-header) — never with
//! `lb_common::csum` — and an independent checker for every checksum of such a frame,
//! including those of the quoted packet.

use std::net::IpAddr;

use crate::packet::{Frame, IpFields, Mac, checksum, ip_header};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// An ICMP or ICMPv6 message in an Ethernet frame (the family follows the addresses).
#[derive(Clone, Debug)]
pub struct IcmpFrame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// Outer IP source.
    pub src: IpAddr,
    /// Outer IP destination.
    pub dst: IpAddr,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Bytes 4..8 of the ICMP header (unused, next-hop MTU, MTU, pointer, id/sequence).
    pub rest: [u8; 4],
    /// Everything after the 8-byte ICMP header: for an error, the quoted IP packet (possibly
    /// cut short, as routers quote only its beginning).
    pub body: Vec<u8>,
}

/// Bytes 4..8 of an ICMPv4 "fragmentation needed" (type 3 code 4): unused, next-hop MTU.
pub fn next_hop_mtu(mtu: u16) -> [u8; 4] {
    let m = mtu.to_be_bytes();
    [0, 0, m[0], m[1]]
}

/// Bytes 4..8 of an ICMPv6 "packet too big" (type 2): the 32-bit MTU.
pub fn mtu32(mtu: u32) -> [u8; 4] {
    mtu.to_be_bytes()
}

/// The IP packet of `f` (its frame without the Ethernet header and tag), cut to at most
/// `len` bytes when given: what an ICMP error quotes.
pub fn quote(f: &Frame, len: Option<usize>) -> Vec<u8> {
    let l3 = if f.vlan.is_some() { 18 } else { 14 };
    let mut ip = f.bytes()[l3..].to_vec();
    if let Some(len) = len {
        ip.truncate(len);
    }
    ip
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn sum_words(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| ((c[0] as u32) << 8) | c.get(1).copied().unwrap_or(0) as u32)
        .sum()
}

/// The RFC 8200 §8.1 pseudo-header sum (addresses, upper-layer length, next header).
fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    sum_words(&addr_bytes(src)) + sum_words(&addr_bytes(dst)) + (len as u32 >> 16) + (len as u32 & 0xFFFF) + proto as u32
}

impl IcmpFrame {
    /// Whether the message is IPv4 (ICMP) rather than IPv6 (ICMPv6).
    pub fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// The ICMP message (header and body) with its checksum.
    pub fn message(&self) -> Vec<u8> {
        let mut m = vec![self.icmp_type, self.code, 0, 0];
        m.extend_from_slice(&self.rest);
        m.extend_from_slice(&self.body);
        let initial = if self.is_v4() { 0 } else { pseudo_sum(self.src, self.dst, PROTO_ICMPV6, m.len()) };
        let c = checksum(initial, &m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let msg = self.message();
        let mut f = Vec::with_capacity(14 + 40 + msg.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        let proto = if self.src.is_ipv4() { PROTO_ICMP } else { PROTO_ICMPV6 };
        // Linux sends ICMP errors with precedence "internetwork control".
        f.extend_from_slice(&ip_header(self.src, self.dst, proto, msg.len(), IpFields { tos: 0xc0, ident: 0x4d2e, dont_fragment: false }));
        f.extend_from_slice(&msg);
        f
    }
}

/// What [`verify_icmp_checksums`] found checkable in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The quoted IPv4 header's checksum was checked (always, for an IPv4 error).
    pub quoted_ip_header: bool,
    /// The quoted TCP/UDP checksum was checked: the whole segment was quoted.
    pub quoted_transport: bool,
}

/// Checks every checksum of an untagged ICMP/ICMPv6 error frame from scratch: the outer
/// IPv4 header, the ICMP (ICMPv6 with its pseudo-header over the outer addresses) checksum,
/// the quoted IPv4 header and, when the quoted TCP/UDP segment is whole (quoted up to the
/// quoted IP length), its checksum with the quoted addresses' pseudo-header. `Err` says which
/// is wrong.
pub fn verify_icmp_checksums(frame: &[u8]) -> Result<Checked, String> {
    let ether_type = u16::from_be_bytes([frame[12], frame[13]]);
    let l3 = 14;
    let (v4, l4) = match ether_type {
        0x0800 => {
            if checksum(0, &frame[l3..l3 + 20]) != 0 {
                return Err("outer IPv4 header checksum".into());
            }
            if frame[l3 + 9] != PROTO_ICMP {
                return Err(format!("outer protocol {}", frame[l3 + 9]));
            }
            (true, l3 + 20)
        }
        0x86DD => {
            if frame[l3 + 6] != PROTO_ICMPV6 {
                return Err(format!("outer next header {}", frame[l3 + 6]));
            }
            (false, l3 + 40)
        }
        t => return Err(format!("ether type {t:#x}")),
    };
    let msg = &frame[l4..];
    let initial = if v4 {
        0
    } else {
        let s: [u8; 16] = frame[l3 + 8..l3 + 24].try_into().unwrap();
        let d: [u8; 16] = frame[l3 + 24..l3 + 40].try_into().unwrap();
        pseudo_sum(s.into(), d.into(), PROTO_ICMPV6, msg.len())
    };
    if checksum(initial, msg) != 0 {
        return Err(if v4 { "ICMP checksum" } else { "ICMPv6 checksum" }.into());
    }
    let q = &msg[8..];
    let (src, dst, proto, seg, ip_len): (IpAddr, IpAddr, u8, &[u8], usize) = if v4 {
        if q.len() < 20 {
            return Err("quoted IPv4 header cut short".into());
        }
        if checksum(0, &q[..20]) != 0 {
            return Err("quoted IPv4 header checksum".into());
        }
        let s: [u8; 4] = q[12..16].try_into().unwrap();
        let d: [u8; 4] = q[16..20].try_into().unwrap();
        (s.into(), d.into(), q[9], &q[20..], u16::from_be_bytes([q[2], q[3]]) as usize - 20)
    } else {
        if q.len() < 40 {
            return Err("quoted IPv6 header cut short".into());
        }
        let s: [u8; 16] = q[8..24].try_into().unwrap();
        let d: [u8; 16] = q[24..40].try_into().unwrap();
        (s.into(), d.into(), q[6], &q[40..], u16::from_be_bytes([q[4], q[5]]) as usize)
    };
    let whole = seg.len() == ip_len;
    if whole {
        let zero_udp4 = proto == 17 && v4 && seg[6..8] == [0, 0];
        if !zero_udp4 && checksum(pseudo_sum(src, dst, proto, seg.len()), seg) != 0 {
            return Err(format!("quoted L4 (protocol {proto}) checksum"));
        }
    }
    Ok(Checked { quoted_ip_header: v4, quoted_transport: whole })
}
