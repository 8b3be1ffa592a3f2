//! Sanity before state: a packet the data path would rewrite and send on (for a VIP, from a
//! backend) must have a correct IPv4 header checksum, IP lengths that fit the frame and a TCP
//! data offset of at least five words; a new flow must not come from a martian source.
//! Anything else is dropped and counted, before it reaches a backend or creates an entry.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    martian::is_martian,
    maps::{FAMILY_V4, FlowKey},
};
use network_types::ip::Ipv6Hdr;

use crate::{
    maps::is_vip_address,
    parse::{Kind, Packet, ptr_at},
};

/// Words of 4 bytes in an IPv4 header without options (the only ones balanced).
const IPV4_WORDS: usize = 5;
/// Offset of the total length in the IPv4 header.
const IPV4_TOT_LEN: usize = 2;
/// Offset of the payload length in the IPv6 header.
const IPV6_PAYLOAD_LEN: usize = 4;
/// Offset of the data offset byte in the TCP header.
const TCP_DOFF: usize = 12;
/// Smallest TCP header.
const TCP_MIN_LEN: usize = 20;
/// Size of a UDP header.
const UDP_LEN: usize = 8;

/// Checks the IP header (and for TCP/UDP the transport header) of `pkt`.
#[inline(never)]
pub fn check(ctx: &XdpContext, pkt: &Packet) -> Result<(), Reason> {
    let frame = pkt.len as usize;
    let ip_end = if pkt.key.family == FAMILY_V4 {
        if !ipv4_checksum_ok(ctx, pkt.l3) {
            return Err(Reason::DropBadChecksum);
        }
        pkt.l3 + be16(ctx, pkt.l3 + IPV4_TOT_LEN)? as usize
    } else {
        pkt.l3 + Ipv6Hdr::LEN + be16(ctx, pkt.l3 + IPV6_PAYLOAD_LEN)? as usize
    };
    if pkt.kind != Kind::Transport {
        return if ip_end > frame { Err(Reason::DropBadLength) } else { Ok(()) };
    }
    let l4_len = if pkt.is_tcp() {
        let doff = ptr_at::<u8>(ctx, pkt.l4 + TCP_DOFF)?;
        // SAFETY: bounds checked by `ptr_at`.
        let words = (unsafe { *doff } >> 4) as usize;
        if words * 4 < TCP_MIN_LEN {
            return Err(Reason::DropBadTcpHeader);
        }
        words * 4
    } else {
        UDP_LEN
    };
    if ip_end > frame || ip_end < pkt.l4 + l4_len {
        return Err(Reason::DropBadLength);
    }
    Ok(())
}

/// Whether a new flow's source may be a client: not martian, not a VIP address.
#[inline(always)]
pub fn client_source_ok(key: &FlowKey) -> Result<(), Reason> {
    if is_martian(&key.src, key.family) || is_vip_address(&key.src, key.family) {
        return Err(Reason::DropMartian);
    }
    Ok(())
}

/// The big-endian 16-bit field at `offset`.
#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Result<u16, Reason> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: bounds checked by `ptr_at`.
    Ok(u16::from_be_bytes(unsafe { *p }))
}

/// Whether the IPv4 header at `l3` (without options) sums to 0xFFFF (RFC 1071).
#[inline(always)]
fn ipv4_checksum_ok(ctx: &XdpContext, l3: usize) -> bool {
    let Ok(h) = ptr_at::<[u8; IPV4_WORDS * 4]>(ctx, l3) else {
        return false;
    };
    // SAFETY: bounds checked by `ptr_at`.
    let h = unsafe { &*h };
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < IPV4_WORDS * 4 {
        sum += u16::from_be_bytes([h[i], h[i + 1]]) as u32;
        i += 2;
    }
    lb_common::csum::fold32(sum) == 0xFFFF
}
