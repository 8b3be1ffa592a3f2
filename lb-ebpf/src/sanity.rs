//! Sanity before state: a packet the data path would rewrite and send on (for a VIP, from a
//! backend, an ICMP error of a VIP's flow) must have a correct IPv4 header checksum, IP
//! lengths that fit the frame and hold its headers (for an ICMP error: the quoted IP header
//! and the first 8 bytes of the quoted transport header) and a TCP data offset of at least
//! five words; a new flow and an ICMP error must not come from a martian source (for ICMP
//! errors, see `xdp::icmp_error`).
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
/// Bytes of the quoted transport header an ICMP error carries at least (RFC 792, RFC 4443):
/// the ports and, for TCP, the sequence number.
pub const QUOTED_TRANSPORT_MIN: usize = 8;

/// Checks the IP header (and for TCP/UDP the transport header) of `pkt`.
///
/// Inlined and reading the IPv4 header as ten 16-bit words (the IP header is 2-byte aligned
/// behind a 14- or 18-byte Ethernet header): it runs for every packet of every flow.
#[inline(always)]
pub fn check(ctx: &XdpContext, pkt: &Packet) -> Result<(), Reason> {
    if pkt.key.family == FAMILY_V4 {
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
    }
    let ip_end = ip_end(ctx, pkt)?;
    if ip_end > pkt.len as usize {
        return Err(Reason::DropBadLength);
    }
    // The IP length must hold the IP header (a fragment's `l4` is where it ends; an ICMP
    // error's is the quoted transport header, see `icmp_error`), and TCP or UDP's header (for
    // a first fragment see `first_fragment`).
    if pkt.kind != Kind::Transport {
        if ip_end < pkt.l4 {
            return Err(Reason::DropBadLength);
        }
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

/// [`check`] for a first fragment, whose IP length must also hold its TCP or UDP header: its
/// port and transport checksum are rewritten (RFC 1858: a first fragment too small for its
/// transport header is an attack, not a datagram).
#[inline(always)]
pub fn first_fragment(ctx: &XdpContext, pkt: &Packet) -> Result<(), Reason> {
    check(ctx, pkt)?;
    let header = if pkt.is_tcp() { TCP_MIN_LEN } else { UDP_LEN };
    if ip_end(ctx, pkt)? < pkt.l4 + header {
        return Err(Reason::DropBadLength);
    }
    Ok(())
}

/// Where the IP packet of `pkt` ends, by its IP length field: bytes after it (Ethernet
/// padding, junk) are not the packet's.
#[inline(always)]
pub fn ip_end(ctx: &XdpContext, pkt: &Packet) -> Result<usize, Reason> {
    if pkt.key.family == FAMILY_V4 {
        return Ok(pkt.l3 + be16(ctx, pkt.l3 + IPV4_TOT_LEN)? as usize);
    }
    Ok(pkt.l3 + Ipv6Hdr::LEN + be16(ctx, pkt.l3 + IPV6_PAYLOAD_LEN)? as usize)
}

/// Whether a new flow's source may be a client: not martian, not a VIP address.
#[inline(always)]
pub fn client_source_ok(key: &FlowKey) -> Result<(), Reason> {
    if is_martian(&key.src, key.family) || is_vip_address(key, true) {
        return Err(Reason::DropMartian);
    }
    Ok(())
}

/// [`check`] for an ICMP error about a VIP's flow, whose IP length must also hold the quote up
/// to its first transport bytes.
#[inline(always)]
pub fn icmp_error(ctx: &XdpContext, pkt: &Packet) -> Result<(), Reason> {
    check(ctx, pkt)?;
    if ip_end(ctx, pkt)? < pkt.l4 + QUOTED_TRANSPORT_MIN {
        return Err(Reason::DropBadLength);
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
