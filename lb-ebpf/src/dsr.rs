//! Direct server return: a client's packet goes to its backend unchanged, inside an outer
//! header (`tunnel`: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6; `gue`: the same inside UDP) or
//! addressed to the backend's MAC on a shared segment (`direct`). The backend holds the VIP and
//! answers the client itself, so nothing is translated on the way back.
//!
//! Formats and header values are defined in `lb_common::encap`. Only the next hop the agent
//! resolved is used: handed to the kernel, an encapsulated packet whose source is this host's
//! own address would be dropped as a martian, and a packet for the VIP would be answered by
//! this host. A backend without such a hop is `DropDsrNoPath`.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    counters::Reason,
    encap::{
        ETH_P_IPV4, ETH_P_IPV6, FORWARD_GUE, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_UDP, IPV4_CHECK, IPV4_HLEN, IPV6_HLEN,
        TUNNEL_FLAG_MSS_CLAMP, gue_source_port, header_checksum, inner_mtu, ipv4_outer_fields, ipv6_outer_fixed,
        is_encapsulated, outer_len, source_tail,
    },
    hash::flow_hash,
    maps::{Addr, Backend, FAMILY_V4, FAMILY_V6},
};

use crate::{
    forward,
    maps::hash_seed,
    mss,
    parse::{Kind, Packet, ptr_at},
    too_big,
};

/// The verdict of a packet `forward` did not send: the ICMP error it answered with leaves by
/// XDP_TX; anything else is dropped (passed on, the kernel would answer a packet for the VIP
/// itself, or drop an encapsulated one from its own address).
#[inline(always)]
pub fn action_of(reason: Reason) -> u32 {
    if reason == Reason::IcmpTooBig { xdp_action::XDP_TX } else { xdp_action::XDP_DROP }
}

/// Sends `pkt` to DSR backend `backend`: checks the tunnel MTU (answering an oversized packet
/// with an ICMP error, `Err(IcmpTooBig)`), clamps a SYN's MSS if asked, adds the outer header
/// and sends it to the backend's resolved next hop. `Ok` is the XDP action.
///
/// Each step is a BPF function of its own, called from here in turn: their frames are not
/// stacked on one another, and the deepest chain (the ICMP path's) has about 130 bytes left.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, backend: &Backend) -> Result<u32, Reason> {
    if !backend.hop.is_resolved() {
        return Err(Reason::DropDsrNoPath);
    }
    if is_encapsulated(backend.forwarding) {
        fit(ctx, pkt, backend)?;
        push(ctx, pkt, backend)?;
    }
    forward::send_resolved(ctx, &backend.hop).map_err(|_| Reason::DropDsrNoPath)
}

/// Makes `pkt` fit the tunnel MTU once encapsulated: an oversized packet is answered with an
/// ICMP error (`Err(IcmpTooBig)`) or dropped (`Err(DropTooBig)`); a SYN's MSS is clamped if
/// the VIP asks for it.
#[inline(never)]
fn fit(ctx: &XdpContext, pkt: &Packet, backend: &Backend) -> Result<(), Reason> {
    let outer = outer_len(backend.family == FAMILY_V6, backend.forwarding == FORWARD_GUE);
    let mtu = backend.tunnel.mtu;
    if mtu != 0 && inner_fields(ctx, pkt)?.len + outer > mtu as usize {
        // No ICMP error answers an ICMP error.
        if pkt.kind == Kind::IcmpError {
            return Err(Reason::DropTooBig);
        }
        return Err(too_big::answer(ctx, pkt, inner_mtu(mtu, outer, pkt.key.family == FAMILY_V6)));
    }
    if pkt.syn() && backend.tunnel.flags & TUNNEL_FLAG_MSS_CLAMP != 0 && pkt.kind == Kind::Transport {
        let _ = mss::clamp(ctx, pkt, mtu, outer as u16);
    }
    Ok(())
}

/// What the outer header copies from the inner one.
struct Inner {
    /// The inner IP packet's length.
    len: usize,
    /// TOS (IPv4) or traffic class (IPv6): DSCP and ECN.
    tos: u8,
    /// TTL or hop limit.
    ttl: u8,
}

/// Reads the inner header's length, TOS/traffic class and TTL/hop limit.
#[inline(always)]
fn inner_fields(ctx: &XdpContext, pkt: &Packet) -> Result<Inner, Reason> {
    let h = ptr_at::<[u8; 8]>(ctx, pkt.l3)?;
    // SAFETY: bounds-checked by `ptr_at`.
    let h = unsafe { *h };
    if pkt.key.family == FAMILY_V4 {
        let ttl = ptr_at::<u8>(ctx, pkt.l3 + 8)?;
        // SAFETY: bounds-checked by `ptr_at`.
        let ttl = unsafe { *ttl };
        Ok(Inner { len: u16::from_be_bytes([h[2], h[3]]) as usize, tos: h[1], ttl })
    } else {
        let tclass = (h[0] << 4) | (h[1] >> 4);
        Ok(Inner { len: IPV6_HLEN + u16::from_be_bytes([h[4], h[5]]) as usize, tos: tclass, ttl: h[7] })
    }
}

/// Puts the outer header in front of the IP packet: the frame grows at its start, the
/// Ethernet header (and its 802.1Q tag) moves there, with the outer family's EtherType. The
/// MACs are written by the send that follows.
#[inline(never)]
fn push(ctx: &XdpContext, pkt: &Packet, backend: &Backend) -> Result<(), Reason> {
    let inner = inner_fields(ctx, pkt)?;
    let outer = outer_len(backend.family == FAMILY_V6, backend.forwarding == FORWARD_GUE);
    let t = &backend.tunnel;
    if t.src == [0; 16] {
        return Err(Reason::DropDsrNoPath);
    }
    let gue = backend.forwarding == FORWARD_GUE;
    let hash = if gue || t.src_host_bits != 0 { flow_hash(&pkt.key, hash_seed(), false) } else { 0 };
    // SAFETY: a helper call on this program's context; every packet pointer is re-derived
    // from the context afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        return Err(Reason::DropDsrNoPath);
    }
    // The EtherType (or tag and EtherType) moves from behind the MACs of the old start; the
    // MACs themselves are rewritten by the send.
    let l3 = pkt.l3;
    if l3 == 18 {
        move_bytes::<6>(ctx, outer + 12, 12)?;
    } else {
        move_bytes::<2>(ctx, outer + 12, 12)?;
    }
    let outer_v6 = backend.family == FAMILY_V6;
    let ether_type = ptr_at::<[u8; 2]>(ctx, l3 - 2)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *ether_type = if outer_v6 { ETH_P_IPV6 } else { ETH_P_IPV4 }.to_be_bytes() };
    let inner_proto = if pkt.key.family == FAMILY_V4 { IPPROTO_IPIP } else { IPPROTO_IPV6 };
    let proto = if gue { IPPROTO_UDP } else { inner_proto };
    // Every field is written straight into the packet: built on the stack first, the header
    // cost more stack than the deepest call chain has left.
    let (ip_len, src_at) = if outer_v6 {
        let h = ptr_at::<[u8; 8]>(ctx, l3)?;
        let addrs = ptr_at::<[Addr; 2]>(ctx, l3 + 8)?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe {
            *h = ipv6_outer_fixed(inner.tos, (outer - IPV6_HLEN + inner.len) as u16, proto, inner.ttl);
            (*addrs)[0] = t.src;
            (*addrs)[1] = backend.addr;
        }
        (IPV6_HLEN, l3 + 8 + 14)
    } else {
        let h = ptr_at::<[u8; IPV4_HLEN]>(ctx, l3)?;
        let (s, d) = (&t.src, &backend.addr);
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe {
            *h = ipv4_outer_fields(&[s[0], s[1], s[2], s[3]], &[d[0], d[1], d[2], d[3]], (outer + inner.len) as u16, inner.tos, inner.ttl, proto);
        }
        (IPV4_HLEN, l3 + 12 + 2)
    };
    if t.src_host_bits != 0 {
        let tail = ptr_at::<[u8; 2]>(ctx, src_at)?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe { *tail = source_tail(u16::from_be_bytes(*tail), t.src_host_bits, hash).to_be_bytes() };
    }
    if !outer_v6 {
        let h = ptr_at::<[u8; IPV4_HLEN]>(ctx, l3)?;
        let check = ptr_at::<[u8; 2]>(ctx, l3 + IPV4_CHECK)?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe { *check = header_checksum(&*h).to_be_bytes() };
    }
    if gue {
        let udp = ptr_at::<[u8; 8]>(ctx, l3 + ip_len)?;
        let sport = gue_source_port(hash).to_be_bytes();
        let dport = t.gue_port.to_be_bytes();
        let len = ((8 + inner.len) as u16).to_be_bytes();
        // SAFETY: bounds-checked by `ptr_at`. The UDP checksum is zero ("none"): RFC 6935
        // allows it for tunnels over IPv6 too, and the decapsulation program does not read it.
        unsafe { *udp = [sport[0], sport[1], dport[0], dport[1], len[0], len[1], 0, 0] };
    }
    Ok(())
}

/// Copies `N` bytes of the frame from offset `from` to offset `to`.
#[inline(always)]
fn move_bytes<const N: usize>(ctx: &XdpContext, from: usize, to: usize) -> Result<(), Reason> {
    let src = ptr_at::<[u8; N]>(ctx, from)?;
    let dst = ptr_at::<[u8; N]>(ctx, to)?;
    // SAFETY: both bounds-checked by `ptr_at`; the ranges do not overlap (the outer header is
    // at least 20 bytes).
    unsafe { *dst = *src };
    Ok(())
}
