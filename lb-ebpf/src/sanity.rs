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
/// Smallest TCP header.
const TCP_MIN_LEN: usize = 20;
/// Size of a UDP header.
const UDP_LEN: usize = 8;

/// Checks the IP header (and for TCP/UDP the transport header) of `pkt`.
///
/// Inlined and reading the IPv4 header as ten 16-bit words (the IP header is 2-byte aligned
/// behind a 14- or 18-byte Ethernet header): it runs for every packet of every flow.
#[inline(always)]
pub fn check(ctx: &XdpContext, pkt: &Packet) -> Result<(), Reason> {
    let ip_end = if pkt.key.family == FAMILY_V4 {
        let h = ptr_at::<[u16; IPV4_WORDS * 2]>(ctx, pkt.l3)?;
        // SAFETY: bounds checked by `ptr_at`; the header is 2-byte aligned (see above).
        let h = unsafe { &*h };
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < IPV4_WORDS * 2 {
            sum += h[i] as u32;
            i += 1;
        }
        // A correct header sums to all ones, in either byte order.
        if lb_common::csum::fold32(sum) != 0xFFFF {
            return Err(Reason::DropBadChecksum);
        }
        pkt.l3 + u16::from_be(h[IPV4_TOT_LEN / 2]) as usize
    } else {
        pkt.l3 + Ipv6Hdr::LEN + be16(ctx, pkt.l3 + IPV6_PAYLOAD_LEN)? as usize
    };
    if ip_end > pkt.len as usize {
        return Err(Reason::DropBadLength);
    }
    if pkt.kind != Kind::Transport {
        return Ok(());
    }
    let l4_len = if pkt.is_tcp() {
        let words = (pkt.tcp_doff >> 4) as usize;
        if words * 4 < TCP_MIN_LEN {
            return Err(Reason::DropBadTcpHeader);
        }
        words * 4
    } else {
        UDP_LEN
    };
    if ip_end < pkt.l4 + l4_len {
        return Err(Reason::DropBadLength);
    }
    Ok(())
}

/// Whether a new flow's source may be a client: not martian, not a VIP address.
#[inline(always)]
pub fn client_source_ok(key: &FlowKey) -> Result<(), Reason> {
    if is_martian(&key.src, key.family) || is_vip_address(key, true) {
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
