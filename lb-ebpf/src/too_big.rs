//! Path MTU with encapsulation: a client's packet that would exceed the tunnel MTU once
//! encapsulated is answered, in place, with an ICMP "fragmentation needed" (IPv4, DF set) or
//! ICMPv6 "packet too big" from the VIP, carrying the MTU that leaves room for the outer
//! headers and quoting the packet's IP header and first [`TOO_BIG_QUOTE`] transport bytes. At
//! most [`TOO_BIG_PER_CPU_PER_SEC`] errors a second per CPU; the rest are dropped.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    counters::Reason,
    csum::fold32,
    encap::{ETH_P_IPV4, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN, ipv4_outer_header, ipv6_outer_fixed},
    limits::{TOO_BIG_PER_CPU_PER_SEC, TOO_BIG_QUOTE},
    maps::{FAMILY_V4, PROTO_ICMP, PROTO_ICMPV6},
};

use crate::{
    conntrack::now,
    maps::TOO_BIG,
    parse::{Packet, frame_len, ptr_at},
};

/// ICMP and ICMPv6 header length.
const ICMP_LEN: usize = 8;
/// IPv4 "don't fragment" flag in the flags and fragment offset field.
const IPV4_DF: u8 = 0x40;
/// TTL and hop limit of the errors.
const ERROR_TTL: u8 = 64;
/// ICMP type "destination unreachable", code "fragmentation needed".
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 type "packet too big".
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// The quote of an IPv4 and of an IPv6 packet, in 16-bit words.
const QUOTE_WORDS_V4: usize = (IPV4_HLEN + TOO_BIG_QUOTE as usize) / 2;
const QUOTE_WORDS_V6: usize = (IPV6_HLEN + TOO_BIG_QUOTE as usize) / 2;

/// Answers `pkt` with the error carrying `mtu`: `IcmpTooBig` when the frame became the error
/// (to be sent with XDP_TX), `DropTooBig` when no error may be sent (IPv4 without DF, budget
/// spent) or the frame could not be reshaped.
#[inline(never)]
pub fn answer(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Reason {
    let v4 = pkt.key.family == FAMILY_V4;
    if v4 {
        match ptr_at::<u8>(ctx, pkt.l3 + 6) {
            // SAFETY: bounds-checked by `ptr_at`.
            Ok(flags) if unsafe { *flags } & IPV4_DF != 0 => {}
            _ => return Reason::DropTooBig,
        }
    }
    if !spend_budget() {
        return Reason::DropTooBig;
    }
    let built = if v4 { build_v4(ctx, pkt, mtu) } else { build_v6(ctx, pkt, mtu) };
    match built {
        Ok(()) => Reason::IcmpTooBig,
        Err(_) => Reason::DropTooBig,
    }
}

/// Takes one error from this CPU's budget for the current second.
#[inline(always)]
fn spend_budget() -> bool {
    let Some(slot) = TOO_BIG.get_ptr_mut(0) else {
        return false;
    };
    let second = now() as u64;
    // SAFETY: this CPU's slot of a per-CPU array; no other program instance writes it now.
    unsafe {
        let budget = *slot;
        let sent = if budget >> 32 == second { budget & 0xFFFF_FFFF } else { 0 };
        if sent >= TOO_BIG_PER_CPU_PER_SEC {
            return false;
        }
        *slot = (second << 32) | (sent + 1);
    }
    true
}

/// Grows the frame by `grow` bytes at its start and cuts it to `total` bytes, keeping the
/// Ethernet header (and tag) with its MACs swapped: the packet's IP header is then at
/// `pkt.l3 + grow`, right where the quote of the error begins.
#[inline(always)]
fn reshape(ctx: &XdpContext, pkt: &Packet, grow: usize, total: usize, ether_type: u16) -> Result<(), Reason> {
    // SAFETY: helper calls on this program's context; every packet pointer is re-derived from
    // the context afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return Err(Reason::DropTooBig);
    }
    let shrink = frame_len(ctx) as i64 - total as i64;
    // SAFETY: as above.
    if shrink > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(shrink as i32)) } != 0 {
        return Err(Reason::DropTooBig);
    }
    let old = ptr_at::<[u16; 6]>(ctx, grow)?;
    let new = ptr_at::<[u16; 6]>(ctx, 0)?;
    // SAFETY: bounds-checked by `ptr_at`; the frame starts 2-byte aligned. The MACs are
    // swapped: the error goes back to where the packet came from.
    unsafe {
        let m = *old;
        *new = [m[3], m[4], m[5], m[0], m[1], m[2]];
    }
    if pkt.l3 == 18 {
        let tag = ptr_at::<[u8; 4]>(ctx, grow + 12)?;
        let to = ptr_at::<[u8; 4]>(ctx, 12)?;
        // SAFETY: bounds-checked by `ptr_at`.
        unsafe { *to = *tag };
    }
    let et = ptr_at::<[u8; 2]>(ctx, pkt.l3 - 2)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *et = ether_type.to_be_bytes() };
    Ok(())
}

/// The one's complement sum of the `N` words at `offset`.
#[inline(always)]
fn sum_words<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<u32, Reason> {
    let w = ptr_at::<[u16; N]>(ctx, offset)?;
    // SAFETY: bounds-checked by `ptr_at`.
    let w = unsafe { &*w };
    let mut sum = 0u32;
    let mut i = 0;
    while i < N {
        sum += u16::from_be(w[i]) as u32;
        i += 1;
    }
    Ok(sum)
}

/// The ICMP "fragmentation needed" with next-hop MTU `mtu`, from the VIP to the client.
#[inline(always)]
fn build_v4(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Result<(), Reason> {
    let grow = IPV4_HLEN + ICMP_LEN;
    let l3 = pkt.l3;
    reshape(ctx, pkt, grow, l3 + grow + QUOTE_WORDS_V4 * 2, ETH_P_IPV4)?;
    let k = &pkt.key;
    let (vip, client) = ([k.dst[0], k.dst[1], k.dst[2], k.dst[3]], [k.src[0], k.src[1], k.src[2], k.src[3]]);
    let ip = ptr_at::<[u8; IPV4_HLEN]>(ctx, l3)?;
    let len = (grow + QUOTE_WORDS_V4 * 2) as u16;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *ip = ipv4_outer_header(&vip, &client, len, 0, ERROR_TTL, PROTO_ICMP) };
    let m = mtu.to_be_bytes();
    let sum = sum_words::<QUOTE_WORDS_V4>(ctx, l3 + grow)?
        + ((ICMP_DEST_UNREACH as u32) << 8 | ICMP_FRAG_NEEDED as u32)
        + mtu as u32;
    let check = (!fold32(sum)).to_be_bytes();
    let icmp = ptr_at::<[u8; ICMP_LEN]>(ctx, l3 + IPV4_HLEN)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *icmp = [ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, check[0], check[1], 0, 0, m[0], m[1]] };
    Ok(())
}

/// The ICMPv6 "packet too big" with MTU `mtu`, from the VIP to the client.
#[inline(always)]
fn build_v6(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Result<(), Reason> {
    let grow = IPV6_HLEN + ICMP_LEN;
    let l3 = pkt.l3;
    reshape(ctx, pkt, grow, l3 + grow + QUOTE_WORDS_V6 * 2, ETH_P_IPV6)?;
    let payload = (ICMP_LEN + QUOTE_WORDS_V6 * 2) as u16;
    let fixed = ptr_at::<[u8; 8]>(ctx, l3)?;
    let addrs = ptr_at::<[[u8; 16]; 2]>(ctx, l3 + 8)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe {
        *fixed = ipv6_outer_fixed(0, payload, PROTO_ICMPV6, ERROR_TTL);
        *addrs = [pkt.key.dst, pkt.key.src];
    }
    // The pseudo-header (both addresses, the length and the next header) and the message.
    let sum = sum_words::<16>(ctx, l3 + 8)?
        + payload as u32
        + PROTO_ICMPV6 as u32
        + sum_words::<QUOTE_WORDS_V6>(ctx, l3 + grow)?
        + ((ICMPV6_PACKET_TOO_BIG as u32) << 8)
        + mtu as u32;
    let check = (!fold32(sum)).to_be_bytes();
    let m = (mtu as u32).to_be_bytes();
    let icmp = ptr_at::<[u8; ICMP_LEN]>(ctx, l3 + IPV6_HLEN)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe { *icmp = [ICMPV6_PACKET_TOO_BIG, 0, check[0], check[1], m[0], m[1], m[2], m[3]] };
    Ok(())
}
