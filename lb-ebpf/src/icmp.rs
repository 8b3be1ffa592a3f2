//! ICMP and ICMPv6 errors that follow their flow.
//!
//! - An error addressed to a VIP quotes a packet the load balancer sent (a backend's reply,
//!   VIP → client): it goes to that flow's backend, with the outer destination and the quoted
//!   source rewritten to the backend, so the backend's stack matches it to its socket (path
//!   MTU discovery through the load balancer).
//! - An error a backend sends quotes a client's packet (client → backend): it goes to the
//!   client with the outer source and the quoted destination rewritten to the VIP.
//!
//! Every checksum is updated incrementally: the outer IPv4 header, the quoted IPv4 header,
//! the quoted TCP/UDP checksum when it was quoted (it lies inside the outer IP packet), and
//! the ICMP checksum, which covers all the quoted bytes (and for ICMPv6 the outer addresses).
//! `sanity::icmp_error` and the martian checks of `xdp::icmp_error` have passed the error
//! first: its lengths hold the quote, and neither its source nor the client is martian.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    csum::CsumDelta,
    maps::{Addr, FAMILY_V4, PROTO_TCP},
};

use crate::{
    nat::{IPV4_CHECK, IPV4_DST, IPV4_SRC, IPV6_DST, IPV6_SRC, TCP_CHECK, UDP_CHECK, words},
    parse::{Packet, ptr_at},
    sanity,
};
/// Offset of the checksum in the ICMP header, which starts 8 bytes before the quoted packet.
const ICMP_CHECK_FROM_QUOTE: usize = 6;
/// The quoted transport bytes every error carries (`sanity::icmp_error` checked them).
const QUOTED_TRANSPORT_MIN: usize = sanity::QUOTED_TRANSPORT_MIN;

/// Rewrites an ICMP error: for an error to a VIP (`pkt.icmp_to_sender`) the outer destination
/// and the quoted source become `addr`:`port`; for an error from the backend side the outer
/// source and the quoted destination do. `ip_end` is where the outer IP packet ends
/// (`sanity::ip_end`): only bytes before it are the error's, so a quoted transport checksum at
/// or beyond it (an error that quotes 8 bytes of TCP, followed by Ethernet padding) is left
/// alone. An `Err` leaves the frame untouched: the farthest bytes written are checked first.
///
/// The old outer address is read from the packet, not taken from the quote: an error from a
/// router on the backend side has the router's address there, not the backend's.
///
/// The steps run one after the other, each with its own pointers: holding every pointer at
/// once took 160 bytes of stack, more than the ICMP path's call chain has left of the
/// verifier's 512.
#[inline(never)]
pub fn rewrite(ctx: &XdpContext, pkt: &Packet, ip_end: usize, addr: &Addr, port: u16) -> Result<(), Reason> {
    let to_sender = pkt.icmp_to_sender;
    let v4 = pkt.key.family == FAMILY_V4;
    let tcp = pkt.key.proto == PROTO_TCP;
    // The quote up to its first transport bytes is in the frame's first buffer: no pointer
    // below can fail after a write (the transport checksum is checked before any).
    ptr_at::<[u8; QUOTED_TRANSPORT_MIN]>(ctx, pkt.l4)?;
    // The flow's destination is the quote's source in an error to a VIP, its destination in
    // an error from a backend: what the quoted address and port change does to sums over
    // them (the quoted IPv4 header, the quoted transport checksum with its pseudo-header).
    let mut quote_delta = CsumDelta::new();
    if v4 {
        quote_delta.replace_be_words(&words::<2>(&pkt.key.dst), &words::<2>(addr));
    } else {
        quote_delta.replace_be_words(&words::<8>(&pkt.key.dst), &words::<8>(addr));
    }
    let addr_delta = quote_delta;
    quote_delta.replace_u16(pkt.key.dport, port);
    // What the ICMP checksum sees change: all of the quote's changes (and for ICMPv6 the
    // outer address, in its pseudo-header).
    let mut icmp_delta = quote_delta;
    let check_off = pkt.l4 + if tcp { TCP_CHECK } else { UDP_CHECK };
    if check_off + 2 <= ip_end {
        let check = ptr_at::<[u8; 2]>(ctx, check_off)?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe {
            let old = u16::from_be_bytes(*check);
            let new = if tcp { quote_delta.apply(old) } else { quote_delta.apply_udp(old) };
            *check = new.to_be_bytes();
            icmp_delta.replace_u16(old, new);
        }
    }
    let port_ptr = ptr_at::<[u8; 2]>(ctx, pkt.l4 + if to_sender { 0 } else { 2 })?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *port_ptr = port.to_be_bytes() };
    // Addresses as 16-bit words, one load each (see `nat::words`); the IP headers are 2-byte
    // aligned (see `sanity::check`).
    if v4 {
        let new4 = words::<2>(addr);
        let inner = ptr_at::<[u16; 2]>(ctx, pkt.inner_l3 + if to_sender { IPV4_SRC } else { IPV4_DST })?;
        let inner_check = ptr_at::<[u8; 2]>(ctx, pkt.inner_l3 + IPV4_CHECK)?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe {
            *inner = new4;
            let old = u16::from_be_bytes(*inner_check);
            let new = addr_delta.apply(old);
            *inner_check = new.to_be_bytes();
            icmp_delta.replace_u16(old, new);
        }
        let outer = ptr_at::<[u16; 2]>(ctx, pkt.l3 + if to_sender { IPV4_DST } else { IPV4_SRC })?;
        let outer_check = ptr_at::<[u8; 2]>(ctx, pkt.l3 + IPV4_CHECK)?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe {
            let mut outer_delta = CsumDelta::new();
            outer_delta.replace_be_words(&*outer, &new4);
            *outer = new4;
            *outer_check = outer_delta.apply(u16::from_be_bytes(*outer_check)).to_be_bytes();
        }
    } else {
        let new6 = words::<8>(addr);
        let inner = ptr_at::<[u16; 8]>(ctx, pkt.inner_l3 + if to_sender { IPV6_SRC } else { IPV6_DST })?;
        let outer = ptr_at::<[u16; 8]>(ctx, pkt.l3 + if to_sender { IPV6_DST } else { IPV6_SRC })?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe {
            *inner = new6;
            icmp_delta.replace_be_words(&*outer, &new6);
            *outer = new6;
        }
    }
    let check = ptr_at::<[u8; 2]>(ctx, pkt.inner_l3 - ICMP_CHECK_FROM_QUOTE)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *check = icmp_delta.apply(u16::from_be_bytes(*check)).to_be_bytes() };
    Ok(())
}
