//! NAT rewrite of one endpoint (address and port) of a parsed packet, with incremental updates
//! of the IPv4 header checksum and the TCP/UDP checksum.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    csum::CsumDelta,
    maps::{Addr, FAMILY_V4, PROTO_TCP},
};

use crate::parse::{Packet, ptr_at};

/// Which endpoint of the packet to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Source address and port (replies: backend → VIP).
    Source,
    /// Destination address and port (client packets: VIP → backend).
    Destination,
}

/// Offsets of the fields NAT rewrites, in the IPv4, IPv6, TCP and UDP headers.
pub const IPV4_CHECK: usize = 10;
/// IPv4 source address.
pub const IPV4_SRC: usize = 12;
/// IPv4 destination address.
pub const IPV4_DST: usize = 16;
/// IPv6 source address.
pub const IPV6_SRC: usize = 8;
/// IPv6 destination address.
pub const IPV6_DST: usize = 24;
/// TCP checksum.
pub const TCP_CHECK: usize = 16;
/// UDP checksum.
pub const UDP_CHECK: usize = 6;

/// Writes `addr`:`port` over the chosen endpoint of `pkt` and fixes the checksums. `addr`
/// must be a field of an aligned struct (see [`words`]).
///
/// Not inlined: its own frame keeps its callers' below the verifier's stack limit.
#[inline(never)]
pub fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    which: Endpoint,
    addr: &Addr,
    port: u16,
) -> Result<(), Reason> {
    let (old_port, port_off) = match which {
        Endpoint::Source => (pkt.key.sport, 0),
        Endpoint::Destination => (pkt.key.dport, 2),
    };
    let mut l4_delta = rewrite_address(ctx, pkt, which, addr)?;
    l4_delta.replace_u16(old_port, port);

    let port_ptr = ptr_at::<u16>(ctx, pkt.l4 + port_off)?;
    let check_off = if pkt.key.proto == PROTO_TCP { TCP_CHECK } else { UDP_CHECK };
    let check = ptr_at::<u16>(ctx, pkt.l4 + check_off)?;
    // SAFETY: bounds-checked by `ptr_at`; 2-byte aligned, as the packet's IP header (see
    // `sanity::check`), and the transport header is a whole number of 4-byte words behind it.
    unsafe {
        *port_ptr = port.to_be();
        let old = u16::from_be(*check);
        *check = if pkt.key.proto == PROTO_TCP { l4_delta.apply(old) } else { l4_delta.apply_udp(old) }.to_be();
    }
    Ok(())
}

/// Writes `addr` over the destination address of an IPv4 fragment without a transport
/// header (a later fragment) and fixes the IPv4 header checksum.
#[inline(never)]
pub fn rewrite_fragment_destination(ctx: &XdpContext, pkt: &Packet, addr: &Addr) -> Result<(), Reason> {
    rewrite_address(ctx, pkt, Endpoint::Destination, addr).map(|_| ())
}

/// Writes `addr` over the chosen address of `pkt`, fixing the IPv4 header checksum; returns
/// the change for the transport checksum (its pseudo-header covers the address).
#[inline(always)]
fn rewrite_address(ctx: &XdpContext, pkt: &Packet, which: Endpoint, addr: &Addr) -> Result<CsumDelta, Reason> {
    let old_addr = if which == Endpoint::Source { &pkt.key.src } else { &pkt.key.dst };
    let mut l4_delta = CsumDelta::new();
    if pkt.key.family == FAMILY_V4 {
        let new4 = words::<2>(addr);
        l4_delta.replace_be_words(&words::<2>(old_addr), &new4);
        let addr_off = if which == Endpoint::Source { IPV4_SRC } else { IPV4_DST };
        let dst = ptr_at::<[u16; 2]>(ctx, pkt.l3 + addr_off)?;
        let check = ptr_at::<u16>(ctx, pkt.l3 + IPV4_CHECK)?;
        // SAFETY: both pointers were bounds-checked by `ptr_at` and are 2-byte aligned (see
        // `rewrite`).
        unsafe {
            *dst = new4;
            *check = l4_delta.apply(u16::from_be(*check)).to_be();
        }
    } else {
        let new6 = words::<8>(addr);
        l4_delta.replace_be_words(&words::<8>(old_addr), &new6);
        let addr_off = if which == Endpoint::Source { IPV6_SRC } else { IPV6_DST };
        let dst = ptr_at::<[u16; 8]>(ctx, pkt.l3 + addr_off)?;
        // SAFETY: as above.
        unsafe { *dst = new6 };
    }
    Ok(l4_delta)
}

/// The first `N` (at most 8) 16-bit words of `addr`, as loaded from memory: one load per
/// word where LLVM reads a bare `[u8; 16]` a byte at a time.
#[inline(always)]
pub fn words<const N: usize>(addr: &Addr) -> [u16; N] {
    const { assert!(N <= 8) };
    // SAFETY: within the 16 bytes of `addr`. Every address the data path rewrites from or to
    // is a field at an even offset of a struct aligned to at least 4 (`FlowKey`, `Backend`,
    // `VipKey`), so the load is aligned.
    unsafe { *addr.as_ptr().cast::<[u16; N]>() }
}
