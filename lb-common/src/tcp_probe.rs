//! The packets of a direct server return health check, built by the agent: a TCP SYN from
//! the node to VIP:port, which the agent carries to the backend the way the VIP's packets
//! go (in the tunnel, in GUE or to the backend's MAC), the backend's answer to it, and the
//! reset that frees the backend's half-open connection afterwards.
//!
//! A SYN-ACK from VIP:port proves that the backend takes the VIP's packets and serves the
//! VIP's port; a reset proves that it takes them but nothing listens there.

use core::net::IpAddr;

use crate::csum::fold32;
use crate::encap::{IPV4_HLEN, IPV6_HLEN, ipv4_outer_header, ipv6_outer_fixed};

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// Length of the probe's SYN header: 20 bytes and the MSS option.
pub const SYN_TCP_LEN: usize = 24;
/// Length of a TCP header without options (the reset).
pub const TCP_HLEN: usize = 20;
/// The longest probe packet: an IPv6 SYN.
pub const MAX_PROBE_PACKET: usize = IPV6_HLEN + SYN_TCP_LEN;
/// TTL and hop limit of the probe's packets.
pub const PROBE_TTL: u8 = 64;
/// The MSS the SYN announces: small enough for any tunnel over a 1280-byte IPv6 path, so that
/// the backend's SYN-ACK never needs fragmenting.
pub const PROBE_MSS: u16 = 1180;
/// The window the SYN announces.
pub const PROBE_WINDOW: u16 = 64_240;
/// The lowest source port of a probe (the dynamic range 49152-65535).
pub const PROBE_PORT_BASE: u16 = 49_152;

/// TCP flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// The source port of a probe from random bits `r`: in the dynamic range.
pub const fn probe_port(r: u32) -> u16 {
    PROBE_PORT_BASE | (r as u16 & 0x3FFF)
}

/// One TCP handshake probe: from `src`:`sport` (the node) to `dst`:`dport` (the VIP), with
/// initial sequence number `isn`. Both addresses have the same family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpProbe {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    isn: u32,
}

/// A probe packet: an IP header and a TCP header, checksums filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePacket {
    bytes: [u8; MAX_PROBE_PACKET],
    len: usize,
}

impl ProbePacket {
    /// The packet, from its IP header on.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What a packet says about a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// SYN-ACK acknowledging the probe's SYN: the backend serves VIP:port.
    SynAck,
    /// Reset acknowledging the probe's SYN: the backend took it, nothing listens on the port.
    Reset,
}

impl TcpProbe {
    /// The probe from `src`:`sport` to `dst`:`dport` with initial sequence number `isn`;
    /// `None` when the addresses' families differ.
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, isn: u32) -> Option<TcpProbe> {
        (src.is_ipv4() == dst.is_ipv4()).then_some(TcpProbe { src, dst, sport, dport, isn })
    }

    /// The source port.
    pub fn sport(&self) -> u16 {
        self.sport
    }

    /// The SYN: MSS option [`PROBE_MSS`], window [`PROBE_WINDOW`], no other option.
    pub fn syn(&self) -> ProbePacket {
        let mss = PROBE_MSS.to_be_bytes();
        self.packet(self.isn, TCP_SYN, PROBE_WINDOW, &[2, 4, mss[0], mss[1]])
    }

    /// The reset that ends the backend's half-open connection after its SYN-ACK: sequence
    /// number `isn + 1`, the one the backend expects next.
    pub fn rst(&self) -> ProbePacket {
        self.packet(self.isn.wrapping_add(1), TCP_RST, 0, &[])
    }

    /// What `packet` (an IP packet, from its header on) says about this probe: `None` unless
    /// it is a TCP segment from `dst`:`dport` to `src`:`sport` (not a fragment, no IPv6
    /// extension header) acknowledging the SYN (ACK number `isn + 1`) with SYN or RST set.
    /// Its checksums are not checked: a packet looped or offloaded on this host may carry a
    /// partial one, and the addresses, ports and ACK number already tie it to the probe.
    pub fn answer(&self, packet: &[u8]) -> Option<Answer> {
        let tcp = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let ihl = usize::from(*packet.first()? & 0x0F) * 4;
                let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3FFF != 0;
                if packet[0] >> 4 != 4 || ihl < IPV4_HLEN || fragment || *packet.get(9)? != IPPROTO_TCP {
                    return None;
                }
                if packet.get(12..16)? != dst.octets() || packet.get(16..20)? != src.octets() {
                    return None;
                }
                packet.get(ihl..ihl + TCP_HLEN)?
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                if *packet.first()? >> 4 != 6 || *packet.get(6)? != IPPROTO_TCP {
                    return None;
                }
                if packet.get(8..24)? != dst.octets() || packet.get(24..40)? != src.octets() {
                    return None;
                }
                packet.get(IPV6_HLEN..IPV6_HLEN + TCP_HLEN)?
            }
            _ => return None,
        };
        let word = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        let flags = tcp[13];
        if word(0) != self.dport || word(2) != self.sport || flags & TCP_ACK == 0 || ack != self.isn.wrapping_add(1) {
            return None;
        }
        if flags & TCP_RST != 0 {
            Some(Answer::Reset)
        } else if flags & TCP_SYN != 0 {
            Some(Answer::SynAck)
        } else {
            None
        }
    }

    /// An IP packet with a TCP header of `flags`, `seq`, `window` and `options` (a multiple
    /// of 4 bytes, at most 4), ACK number 0.
    fn packet(&self, seq: u32, flags: u8, window: u16, options: &[u8]) -> ProbePacket {
        let tcp_len = TCP_HLEN + options.len();
        let mut bytes = [0u8; MAX_PROBE_PACKET];
        let ip_len = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let total = (IPV4_HLEN + tcp_len) as u16;
                bytes[..IPV4_HLEN].copy_from_slice(&ipv4_outer_header(&src.octets(), &dst.octets(), total, 0, PROBE_TTL, IPPROTO_TCP));
                IPV4_HLEN
            }
            (src, dst) => {
                bytes[..8].copy_from_slice(&ipv6_outer_fixed(0, tcp_len as u16, IPPROTO_TCP, PROBE_TTL));
                bytes[8..24].copy_from_slice(&v6_octets(src));
                bytes[24..40].copy_from_slice(&v6_octets(dst));
                IPV6_HLEN
            }
        };
        let tcp = &mut bytes[ip_len..ip_len + tcp_len];
        tcp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&window.to_be_bytes());
        tcp[TCP_HLEN..].copy_from_slice(options);
        let check = !fold32(pseudo_header_sum(self.src, self.dst, tcp_len as u16) + sum(tcp));
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        ProbePacket { bytes, len: ip_len + tcp_len }
    }
}

/// The octets of `a` as an IPv6 address (an IPv4 address never reaches here).
fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The one's complement sum of the TCP pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1), unfolded.
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, tcp_len: u16) -> u32 {
    let addresses = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(&s.octets()) + sum(&d.octets()),
        _ => sum(&v6_octets(src)) + sum(&v6_octets(dst)),
    };
    addresses + u32::from(IPPROTO_TCP) + u32::from(tcp_len)
}

/// The one's complement sum of the 16-bit words of `bytes` (an even length), unfolded.
fn sum(bytes: &[u8]) -> u32 {
    bytes.chunks_exact(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    const NODE4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 11, 1));
    const VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10));
    const NODE6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x11, 0, 0, 0, 0, 0, 1));
    const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));

    /// RFC 1071 from scratch, independent of the code above: the checksum of `data`.
    fn rfc1071(data: &[u8]) -> u16 {
        let mut s: u64 = 0;
        for (i, b) in data.iter().enumerate() {
            s += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
        }
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        !(s as u16)
    }

    /// The TCP checksum of `segment` by its pseudo-header written out byte by byte.
    fn tcp_checksum(src: &[u8], dst: &[u8], segment: &[u8]) -> u16 {
        let mut buf = std::vec::Vec::new();
        buf.extend_from_slice(src);
        buf.extend_from_slice(dst);
        if src.len() == 4 {
            buf.extend_from_slice(&[0, 6]);
            buf.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        } else {
            buf.extend_from_slice(&(segment.len() as u32).to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, 6]);
        }
        let mut seg = segment.to_vec();
        seg[16] = 0;
        seg[17] = 0;
        buf.extend_from_slice(&seg);
        rfc1071(&buf)
    }

    fn probe4() -> TcpProbe {
        TcpProbe::new(NODE4, 0xC123, VIP4, 80, 0x1234_5678).unwrap()
    }

    fn probe6() -> TcpProbe {
        TcpProbe::new(NODE6, 0xC123, VIP6, 443, 0xFFFF_FFFF).unwrap()
    }

    #[test]
    fn the_ipv4_syn_is_exactly_these_bytes() {
        let syn = probe4().syn();
        let b = syn.as_bytes();
        let mut want = std::vec![
            0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 11, 1, 10, 0, 0, 10, // IPv4
            0xC1, 0x23, 0, 80, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0x60, 0x02, 0xFA, 0xF0, 0, 0, 0, 0, // TCP
            2, 4, 0x04, 0x9C, // MSS 1180
        ];
        let ip_check = rfc1071(&want[..20]);
        want[10..12].copy_from_slice(&ip_check.to_be_bytes());
        let tcp_check = tcp_checksum(&[10, 0, 11, 1], &[10, 0, 0, 10], &want[20..]);
        want[36..38].copy_from_slice(&tcp_check.to_be_bytes());
        assert_eq!(b, &want[..]);
        assert_eq!(rfc1071(&b[..20]), 0, "the IPv4 header verifies");
    }

    #[test]
    fn the_ipv6_syn_is_exactly_these_bytes() {
        let syn = probe6().syn();
        let b = syn.as_bytes();
        let mut want = std::vec![0x60, 0, 0, 0, 0, 24, 6, 64];
        want.extend_from_slice(&v6_octets(NODE6));
        want.extend_from_slice(&v6_octets(VIP6));
        want.extend_from_slice(&[0xC1, 0x23, 0x01, 0xBB, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x60, 0x02, 0xFA, 0xF0, 0, 0, 0, 0, 2, 4, 0x04, 0x9C]);
        let tcp_check = tcp_checksum(&v6_octets(NODE6), &v6_octets(VIP6), &want[40..]);
        want[56..58].copy_from_slice(&tcp_check.to_be_bytes());
        assert_eq!(b, &want[..]);
        assert_eq!(b.len(), MAX_PROBE_PACKET);
    }

    #[test]
    fn the_reset_follows_the_syn_and_wraps() {
        let rst = probe4().rst();
        let b = rst.as_bytes();
        let mut want = std::vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 11, 1, 10, 0, 0, 10,
            0xC1, 0x23, 0, 80, 0x12, 0x34, 0x56, 0x79, 0, 0, 0, 0, 0x50, 0x04, 0, 0, 0, 0, 0, 0,
        ];
        let ip_check = rfc1071(&want[..20]);
        want[10..12].copy_from_slice(&ip_check.to_be_bytes());
        let tcp_check = tcp_checksum(&[10, 0, 11, 1], &[10, 0, 0, 10], &want[20..]);
        want[36..38].copy_from_slice(&tcp_check.to_be_bytes());
        assert_eq!(b, &want[..]);
        let rst6 = probe6().rst();
        let b6 = rst6.as_bytes();
        assert_eq!((b6.len(), &b6[44..48], b6[53]), (60, &[0u8, 0, 0, 0][..], TCP_RST), "ISN 0xffffffff + 1 wraps to 0");
        assert_eq!(tcp_checksum(&v6_octets(NODE6), &v6_octets(VIP6), &b6[40..]), u16::from_be_bytes([b6[56], b6[57]]));
    }

    #[test]
    fn families_must_match() {
        assert!(TcpProbe::new(NODE4, 1, VIP6, 80, 0).is_none());
        assert!(TcpProbe::new(NODE6, 1, VIP4, 80, 0).is_none());
    }

    /// A reply to `p` of the family of its addresses: from `from`:`sport` to `to`:`dport`.
    fn reply(v6: bool, from: &[u8], to: &[u8], sport: u16, dport: u16, ack: u32, flags: u8) -> std::vec::Vec<u8> {
        let mut tcp = std::vec::Vec::new();
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&0xAABB_CCDDu32.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.extend_from_slice(&[0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
        let mut ip = if v6 {
            let mut h = std::vec![0x60, 0, 0, 0, 0, 20, 6, 63];
            h.extend_from_slice(from);
            h.extend_from_slice(to);
            h
        } else {
            let mut h = std::vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 63, 6, 0, 0];
            h.extend_from_slice(from);
            h.extend_from_slice(to);
            h
        };
        ip.extend_from_slice(&tcp);
        ip
    }

    #[test]
    fn only_the_answer_to_this_syn_counts() {
        let p = probe4();
        let (vip, node) = ([10, 0, 0, 10], [10, 0, 11, 1]);
        let good = |flags| reply(false, &vip, &node, 80, 0xC123, 0x1234_5679, flags);
        assert_eq!(p.answer(&good(TCP_SYN | TCP_ACK)), Some(Answer::SynAck));
        assert_eq!(p.answer(&good(TCP_RST | TCP_ACK)), Some(Answer::Reset));
        assert_eq!(p.answer(&good(TCP_SYN)), None, "no ACK");
        assert_eq!(p.answer(&good(TCP_ACK)), None, "neither SYN nor RST");
        assert_eq!(p.answer(&reply(false, &vip, &node, 80, 0xC123, 0x1234_5678, TCP_SYN | TCP_ACK)), None, "another ISN");
        assert_eq!(p.answer(&reply(false, &vip, &node, 81, 0xC123, 0x1234_5679, TCP_SYN | TCP_ACK)), None, "another port");
        assert_eq!(p.answer(&reply(false, &vip, &node, 80, 0xC124, 0x1234_5679, TCP_SYN | TCP_ACK)), None, "another probe's port");
        assert_eq!(p.answer(&reply(false, &[10, 0, 11, 2], &node, 80, 0xC123, 0x1234_5679, TCP_SYN | TCP_ACK)), None, "from the backend's own address");
        assert_eq!(p.answer(&reply(false, &vip, &[10, 0, 11, 9], 80, 0xC123, 0x1234_5679, TCP_SYN | TCP_ACK)), None, "to another address");
        let mut udp = good(TCP_SYN | TCP_ACK);
        udp[9] = 17;
        assert_eq!(p.answer(&udp), None, "not TCP");
        let mut fragment = good(TCP_SYN | TCP_ACK);
        fragment[6] = 0x20;
        assert_eq!(p.answer(&fragment), None, "a fragment");
        let full = good(TCP_SYN | TCP_ACK);
        for cut in 0..full.len() {
            assert_eq!(p.answer(&full[..cut]), None, "cut at {cut}");
        }
        // An IPv4 header with options: the TCP header starts after them.
        let mut options = std::vec![0x46];
        options.extend_from_slice(&full[1..20]);
        options.extend_from_slice(&[1, 1, 1, 0]);
        options.extend_from_slice(&full[20..]);
        assert_eq!(p.answer(&options), Some(Answer::SynAck));
        assert_eq!(p.answer(&reply(true, &v6_octets(VIP6), &v6_octets(NODE6), 80, 0xC123, 0x1234_5679, TCP_SYN | TCP_ACK)), None, "another family");
    }

    #[test]
    fn ipv6_answers() {
        let p = probe6();
        let (vip, node) = (v6_octets(VIP6), v6_octets(NODE6));
        assert_eq!(p.answer(&reply(true, &vip, &node, 443, 0xC123, 0, TCP_SYN | TCP_ACK)), Some(Answer::SynAck), "ISN + 1 wraps");
        assert_eq!(p.answer(&reply(true, &vip, &node, 443, 0xC123, 0, TCP_RST | TCP_ACK)), Some(Answer::Reset));
        let mut ext = reply(true, &vip, &node, 443, 0xC123, 0, TCP_SYN | TCP_ACK);
        ext[6] = 0;
        assert_eq!(p.answer(&ext), None, "an extension header");
        assert_eq!(p.answer(&reply(true, &node, &vip, 443, 0xC123, 0, TCP_SYN | TCP_ACK)), None, "the other direction");
    }

    #[test]
    fn probe_ports_are_dynamic() {
        assert_eq!(probe_port(0), 49_152);
        assert_eq!(probe_port(u32::MAX), 65_535);
        assert_eq!(probe_port(0x1_0001), 49_153);
    }
}
