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
//! the quoted TCP/UDP checksum when it was quoted, and the ICMP checksum, which covers all the
//! quoted bytes (and for ICMPv6 the outer addresses).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    csum::CsumDelta,
    maps::{Addr, FAMILY_V4, PROTO_TCP},
};

use crate::{
    nat::{IPV4_CHECK, IPV4_DST, IPV4_SRC, IPV6_DST, IPV6_SRC, TCP_CHECK, UDP_CHECK},
    parse::{Packet, ptr_at},
};
/// Offset of the checksum in the ICMP header, which starts 8 bytes before the quoted packet.
const ICMP_CHECK_FROM_QUOTE: usize = 6;

/// Rewrites an ICMP error: for an error to a VIP (`pkt.icmp_to_sender`) the outer destination
/// and the quoted source become `addr`:`port`; for an error from a backend the outer source
/// and the quoted destination do.
#[inline(never)]
pub fn rewrite(ctx: &XdpContext, pkt: &Packet, addr: &Addr, port: u16) -> Result<(), Reason> {
    let to_sender = pkt.icmp_to_sender;
    // The flow's destination is the quote's source in an error to a VIP, its destination in
    // an error from a backend.
    let (old_addr, old_port, port_off) = (&pkt.key.dst, pkt.key.dport, if to_sender { 0 } else { 2 });
    let v4 = pkt.key.family == FAMILY_V4;
    // What the address change does to any sum over it (the IPv4 headers, the pseudo-headers).
    let mut addr_delta = CsumDelta::new();
    // What the ICMP checksum sees change.
    let mut icmp_delta = CsumDelta::new();
    if v4 {
        let (old4, new4) = ([old_addr[0], old_addr[1], old_addr[2], old_addr[3]], [addr[0], addr[1], addr[2], addr[3]]);
        addr_delta.replace_bytes(&old4, &new4);
        let outer = ptr_at::<[u8; 4]>(ctx, pkt.l3 + if to_sender { IPV4_DST } else { IPV4_SRC })?;
        let outer_check = ptr_at::<[u8; 2]>(ctx, pkt.l3 + IPV4_CHECK)?;
        let inner = ptr_at::<[u8; 4]>(ctx, pkt.inner_l3 + if to_sender { IPV4_SRC } else { IPV4_DST })?;
        let inner_check = ptr_at::<[u8; 2]>(ctx, pkt.inner_l3 + IPV4_CHECK)?;
        // SAFETY: every pointer was bounds-checked by `ptr_at`.
        unsafe {
            *outer = new4;
            *outer_check = addr_delta.apply(u16::from_be_bytes(*outer_check)).to_be_bytes();
            *inner = new4;
            let old = u16::from_be_bytes(*inner_check);
            let new = addr_delta.apply(old);
            *inner_check = new.to_be_bytes();
            icmp_delta.replace_u16(old, new);
        }
        icmp_delta.merge(addr_delta);
    } else {
        addr_delta.replace_bytes(old_addr, addr);
        let outer = ptr_at::<Addr>(ctx, pkt.l3 + if to_sender { IPV6_DST } else { IPV6_SRC })?;
        let inner = ptr_at::<Addr>(ctx, pkt.inner_l3 + if to_sender { IPV6_SRC } else { IPV6_DST })?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe {
            *outer = *addr;
            *inner = *addr;
        }
        // The ICMPv6 checksum covers the outer address (pseudo-header) and the quoted one.
        icmp_delta.merge(addr_delta);
        icmp_delta.merge(addr_delta);
    }
    let port_ptr = ptr_at::<[u8; 2]>(ctx, pkt.l4 + port_off)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *port_ptr = port.to_be_bytes() };
    icmp_delta.replace_u16(old_port, port);
    let mut l4_delta = addr_delta;
    l4_delta.replace_u16(old_port, port);
    // The quoted transport checksum, when the error quotes that far.
    let tcp = pkt.key.proto == PROTO_TCP;
    if let Ok(check) = ptr_at::<[u8; 2]>(ctx, pkt.l4 + if tcp { TCP_CHECK } else { UDP_CHECK }) {
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe {
            let old = u16::from_be_bytes(*check);
            let new = if tcp { l4_delta.apply(old) } else { l4_delta.apply_udp(old) };
            *check = new.to_be_bytes();
            icmp_delta.replace_u16(old, new);
        }
    }
    let check = ptr_at::<[u8; 2]>(ctx, pkt.inner_l3 - ICMP_CHECK_FROM_QUOTE)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *check = icmp_delta.apply(u16::from_be_bytes(*check)).to_be_bytes() };
    Ok(())
}
