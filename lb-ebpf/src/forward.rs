//! Sending a rewritten packet on: MACs from the next hop the agent resolved (or that the
//! client's packet came from), XDP_TX out of the ingress interface or XDP_REDIRECT to another;
//! `bpf_fib_lookup` only when the hop is not resolved; the kernel when the FIB has no
//! neighbour either.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::{bpf_redirect, generated::bpf_fib_lookup as fib_lookup},
    programs::XdpContext,
};
use core::mem::{size_of, zeroed};
use lb_common::{
    counters::Reason,
    maps::{Addr, FAMILY_V4, NextHop},
};
use network_types::eth::EthHdr;

use crate::parse::{Packet, ptr_at};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;

/// Sends `pkt` (already rewritten to travel `src` → `dst`) towards `hop`. `Err` means "hand it
/// to the kernel" with the reason to count.
#[inline(always)]
pub fn send(
    ctx: &XdpContext,
    pkt: &Packet,
    hop: &NextHop,
    src: &Addr,
    dst: &Addr,
) -> Result<u32, Reason> {
    if hop.is_resolved() {
        set_macs(ctx, &hop.dst_mac, &hop.src_mac)?;
        return Ok(out(ctx, hop.ifindex));
    }
    let resolved = fib(ctx, pkt, src, dst)?;
    set_macs(ctx, &resolved.dst_mac, &resolved.src_mac)?;
    Ok(out(ctx, resolved.ifindex))
}

/// The hop the frame in `ctx` arrived from: replies to it go back the same way.
#[inline(always)]
pub fn arrived_from(ctx: &XdpContext) -> Result<NextHop, Reason> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds-checked by `ptr_at`.
    let eth = unsafe { &*eth };
    Ok(NextHop {
        ifindex: ctx.ingress_ifindex() as u32,
        dst_mac: eth.src_addr,
        src_mac: eth.dst_addr,
    })
}

#[inline(always)]
fn out(ctx: &XdpContext, ifindex: u32) -> u32 {
    if ifindex == 0 || ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        // SAFETY: a helper call with plain integer arguments.
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }
}

#[inline(always)]
fn set_macs(ctx: &XdpContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), Reason> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds-checked by `ptr_at`.
    unsafe {
        (*eth).dst_addr = *dst;
        (*eth).src_addr = *src;
    }
    Ok(())
}

/// The slow path: asks the kernel's FIB for the next hop of `dst`.
#[inline(never)]
fn fib(ctx: &XdpContext, pkt: &Packet, src: &Addr, dst: &Addr) -> Result<NextHop, Reason> {
    // SAFETY: bpf_fib_lookup is a plain C struct for which all zeroes is a valid value.
    let mut p: bpf_fib_lookup = unsafe { zeroed() };
    p.l4_protocol = pkt.key.proto;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_1.tot_len = (pkt.len as usize - pkt.l3) as u16;
    if pkt.key.family == FAMILY_V4 {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([src[0], src[1], src[2], src[3]]);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]);
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = words(src);
        p.__bindgen_anon_4.ipv6_dst = words(dst);
    }
    // SAFETY: `p` is a valid, initialised bpf_fib_lookup of the size passed.
    let rc = unsafe {
        fib_lookup(ctx.ctx.cast(), &mut p, size_of::<bpf_fib_lookup>() as i32, 0)
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        return Err(Reason::PassToKernelRoute);
    }
    Ok(NextHop {
        ifindex: p.ifindex,
        dst_mac: p.dmac,
        src_mac: p.smac,
    })
}

#[inline(always)]
fn words(a: &Addr) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
