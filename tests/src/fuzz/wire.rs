//! An independent reading of a frame's bytes for the fuzzer: where its headers are, what its
//! length fields say, and whether its checksums are right, computed from scratch (RFC 1071,
//! with [`checksum`] from `packet.rs`) and never with the data path's code. Offsets are
//! reported as long as a header's bytes are in the frame, however wrong its fields are.

use std::net::IpAddr;

use crate::packet::checksum;

/// EtherType of IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q tag.
pub const ETH_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad tag.
pub const ETH_8021AD: u16 = 0x88A8;
/// IP protocol number of TCP.
pub const TCP: u8 = 6;
/// IP protocol number of UDP.
pub const UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const ICMPV6: u8 = 58;

/// The 16-bit big-endian word at `at`.
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The one's-complement sum of `data` (odd length padded with zero), folded to 16 bits.
pub fn sum(data: &[u8]) -> u32 {
    fold(data.chunks(2).map(|c| ((c[0] as u64) << 8) | c.get(1).copied().unwrap_or(0) as u64).sum())
}

/// Folds a sum to 16 bits (0xFFFF and 0 both stand for zero).
pub fn fold(mut s: u64) -> u32 {
    while s >> 16 != 0 {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u32
}

/// Whether two folded sums are equal in one's-complement arithmetic (+0 = -0).
pub fn same_sum(a: u32, b: u32) -> bool {
    a % 0xFFFF == b % 0xFFFF
}

fn addr_sum(a: IpAddr) -> u64 {
    match a {
        IpAddr::V4(a) => sum(&a.octets()) as u64,
        IpAddr::V6(a) => sum(&a.octets()) as u64,
    }
}

/// The pseudo-header sum (RFC 793 / RFC 8200 §8.1) of a segment of `len` bytes.
pub fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    fold(addr_sum(src) + addr_sum(dst) + proto as u64 + (len as u64 >> 16) + (len as u64 & 0xFFFF))
}

/// An IP header found in a frame.
#[derive(Clone, Copy, Debug)]
pub struct Ip {
    /// Offset of the IP header.
    pub l3: usize,
    /// IPv4 (else IPv6).
    pub v4: bool,
    /// Header length: IHL × 4 for IPv4, 40 for IPv6.
    pub hdr_len: usize,
    /// Protocol / next header.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Where the IP length field says the packet ends (offset in the frame).
    pub end: usize,
    /// IPv4 fragment: MF set or non-zero offset.
    pub fragment: bool,
    /// IPv4 fragment with a non-zero offset (carries no transport header).
    pub later_fragment: bool,
}

impl Ip {
    /// Offset of the transport (or ICMP) header.
    pub fn l4(&self) -> usize {
        self.l3 + self.hdr_len
    }
}

/// Offset of the IP header and the EtherType after at most two VLAN tags; `None` if the
/// frame ends first.
pub fn l3(frame: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    for _ in 0..3 {
        if frame.len() < off + 2 {
            return None;
        }
        let t = be16(frame, off);
        if t != ETH_8021Q && t != ETH_8021AD {
            return Some((off + 2, t));
        }
        off += 4;
    }
    None
}

/// Number of VLAN tags before the IP header.
pub fn vlan_tags(frame: &[u8]) -> usize {
    l3(frame).map_or(0, |(l3, _)| (l3 - 14) / 4)
}

/// The IP header at `l3` of EtherType `ether_type`, if its fixed part is in the frame and its
/// version field matches.
pub fn ip_at(b: &[u8], l3: usize, ether_type: u16) -> Option<Ip> {
    match ether_type {
        ETH_IPV4 if b.len() >= l3 + 20 && b[l3] >> 4 == 4 => {
            let s: [u8; 4] = b[l3 + 12..l3 + 16].try_into().ok()?;
            let d: [u8; 4] = b[l3 + 16..l3 + 20].try_into().ok()?;
            let frags = be16(b, l3 + 6) & 0x3FFF;
            Some(Ip {
                l3,
                v4: true,
                hdr_len: (b[l3] & 0x0F) as usize * 4,
                proto: b[l3 + 9],
                src: s.into(),
                dst: d.into(),
                end: l3 + be16(b, l3 + 2) as usize,
                fragment: frags != 0,
                later_fragment: frags & 0x1FFF != 0,
            })
        }
        ETH_IPV6 if b.len() >= l3 + 40 && b[l3] >> 4 == 6 => {
            let s: [u8; 16] = b[l3 + 8..l3 + 24].try_into().ok()?;
            let d: [u8; 16] = b[l3 + 24..l3 + 40].try_into().ok()?;
            Some(Ip {
                l3,
                v4: false,
                hdr_len: 40,
                proto: b[l3 + 6],
                src: s.into(),
                dst: d.into(),
                end: l3 + 40 + be16(b, l3 + 4) as usize,
                fragment: false,
                later_fragment: false,
            })
        }
        _ => None,
    }
}

/// The frame's outer IP header.
pub fn outer(frame: &[u8]) -> Option<Ip> {
    let (l3, t) = l3(frame)?;
    ip_at(frame, l3, t)
}

impl Ip {
    /// Whether the IPv4 header checksum is right (IPv6 has none: true). False when the header
    /// is shorter than 20 bytes or not all in the frame.
    pub fn header_checksum_ok(&self, b: &[u8]) -> bool {
        if !self.v4 {
            return true;
        }
        self.hdr_len >= 20 && b.len() >= self.l3 + self.hdr_len && checksum(0, &b[self.l3..self.l3 + self.hdr_len]) == 0
    }

    /// Whether the lengths are consistent with the frame: the IP length covers the header and
    /// ends inside the frame.
    pub fn lengths_ok(&self, b: &[u8]) -> bool {
        self.hdr_len >= 20 && self.end >= self.l4() && self.end <= b.len()
    }

    /// Whether the TCP/UDP checksum of an unfragmented packet is right over the IP payload
    /// (`None`: not checkable — lengths wrong, a fragment, or an IPv4 UDP zero checksum).
    pub fn transport_checksum_ok(&self, b: &[u8]) -> Option<bool> {
        if self.fragment || !self.lengths_ok(b) || !matches!(self.proto, TCP | UDP) {
            return None;
        }
        let seg = &b[self.l4()..self.end];
        let at = if self.proto == TCP { 16 } else { 6 };
        if seg.len() < at + 2 {
            return None;
        }
        if self.proto == UDP && self.v4 && be16(seg, 6) == 0 {
            return None;
        }
        if self.proto == UDP && be16(seg, 4) as usize != seg.len() {
            return None;
        }
        let pseudo = pseudo(self.src, self.dst, self.proto, seg.len());
        Some(checksum(pseudo, seg) == 0)
    }

    /// Whether the ICMP (ICMPv6: with the pseudo-header) checksum is right over the IP payload
    /// (`None`: lengths wrong).
    pub fn icmp_checksum_ok(&self, b: &[u8]) -> Option<bool> {
        if self.fragment || !self.lengths_ok(b) || self.end < self.l4() + 8 {
            return None;
        }
        let msg = &b[self.l4()..self.end];
        let initial = if self.v4 { 0 } else { pseudo(self.src, self.dst, ICMPV6, msg.len()) };
        Some(checksum(initial, msg) == 0)
    }

    /// The quoted IP header of an ICMP/ICMPv6 error (type 3/11/12, ICMPv6 1..=4), if it is
    /// in the frame.
    pub fn quoted(&self, b: &[u8]) -> Option<Ip> {
        let icmp = self.l4();
        if self.fragment || b.len() < icmp + 8 {
            return None;
        }
        let error = match (self.v4, self.proto, b[icmp]) {
            (true, ICMP, 3 | 11 | 12) => true,
            (false, ICMPV6, t) => (1..=4).contains(&t),
            _ => false,
        };
        if !error {
            return None;
        }
        ip_at(b, icmp + 8, if self.v4 { ETH_IPV4 } else { ETH_IPV6 })
    }
}

/// Ports of the transport header at `l4`, if its first four bytes are in the frame.
pub fn ports(b: &[u8], l4: usize) -> Option<(u16, u16)> {
    (b.len() >= l4 + 4).then(|| (be16(b, l4), be16(b, l4 + 2)))
}

/// The one's-complement sum a quoted TCP/UDP checksum must keep: pseudo-header (with the
/// length the quoted IP header gives) plus every quoted segment byte up to `limit`. `None`
/// when the checksum field is not quoted, the segment's length is unknown, or it is a zero
/// UDP checksum.
pub fn quoted_transport_sum(b: &[u8], q: &Ip, limit: usize) -> Option<u32> {
    let at = match q.proto {
        TCP => 16,
        UDP => 6,
        _ => return None,
    };
    let l4 = q.l4();
    let end = limit.min(b.len());
    if q.hdr_len < 20 || end < l4 + at + 2 || q.end < l4 + at + 2 {
        return None;
    }
    // A zero UDP checksum is "none" in IPv4 and invalid in IPv6: not right either way, so
    // nothing is required of it.
    if q.proto == UDP && be16(b, l4 + at) == 0 {
        return None;
    }
    let quoted = &b[l4..end.min(q.end)];
    Some(fold(pseudo(q.src, q.dst, q.proto, q.end - l4) as u64 + sum(quoted) as u64))
}

/// Recomputes the IPv4 header checksum at `l3` (over IHL × 4 bytes, at least 20) in place.
pub fn fix_ipv4_checksum(b: &mut [u8], l3: usize) {
    let len = (((b[l3] & 0x0F) as usize) * 4).max(20);
    if b.len() < l3 + len {
        return;
    }
    b[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let c = checksum(0, &b[l3..l3 + len]);
    b[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the outer IPv4 header checksum and the transport or ICMP checksum over what
/// the IP length fields say (as far as the frame goes), in place.
pub fn fix_checksums(b: &mut [u8]) {
    let Some(ip) = outer(b) else { return };
    if ip.v4 {
        fix_ipv4_checksum(b, ip.l3);
    }
    let l4 = ip.l4();
    let end = ip.end.min(b.len());
    if ip.fragment || end <= l4 {
        return;
    }
    let at = match ip.proto {
        TCP => 16,
        UDP => 6,
        ICMP | ICMPV6 => 2,
        _ => return,
    };
    if end < l4 + at + 2 {
        return;
    }
    b[l4 + at..l4 + at + 2].copy_from_slice(&[0, 0]);
    let initial = match ip.proto {
        ICMP => 0,
        p => pseudo(ip.src, ip.dst, p, end - l4),
    };
    let mut c = checksum(initial, &b[l4..end]);
    if c == 0 && ip.proto == UDP {
        c = 0xFFFF;
    }
    b[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        harness::{CLIENT4, SYN, VIP4, from_client, tcp},
        packet::verify_checksums,
    };

    #[test]
    fn fixing_checksums_after_an_address_change_makes_them_right() {
        let mut f = from_client(CLIENT4, VIP4, tcp(1234, 80, SYN)).bytes();
        f[29] = 77;
        assert!(verify_checksums(&f).is_err());
        fix_checksums(&mut f);
        assert_eq!(verify_checksums(&f), Ok(()));
        let ip = outer(&f).unwrap();
        assert_eq!((ip.header_checksum_ok(&f), ip.transport_checksum_ok(&f)), (true, Some(true)));
    }

    #[test]
    fn lengths_are_read_as_the_header_says() {
        let mut f = from_client(CLIENT4, VIP4, tcp(1234, 80, SYN)).bytes();
        let ip = outer(&f).unwrap();
        assert_eq!((ip.l3, ip.l4(), ip.end, ip.lengths_ok(&f)), (14, 34, f.len(), true));
        f[17] += 1;
        assert!(!outer(&f).unwrap().lengths_ok(&f), "one byte beyond the frame");
        f.splice(12..12, [0x81, 0, 0, 5]);
        assert_eq!((vlan_tags(&f), outer(&f).unwrap().l3), (1, 18));
    }

    #[test]
    fn plus_and_minus_zero_are_the_same_sum() {
        assert!(same_sum(0, 0xFFFF));
        assert!(!same_sum(1, 0xFFFF));
        assert_eq!(sum(&[0xFF, 0xFF, 0, 1]), 1);
    }
}
