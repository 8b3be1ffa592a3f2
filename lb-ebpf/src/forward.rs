//! Sending a rewritten packet on: MACs from the next hop the agent resolved (towards a
//! backend) or the FIB's answer, cached per client address for a second (towards a client),
//! XDP_TX out of the ingress interface or XDP_REDIRECT (through the `TX_PORTS` device map) to
//! another interface the program runs on; `bpf_fib_lookup` when the hop is not resolved; the
//! kernel when the FIB has no neighbour either, or when the hop leaves by an interface the
//! program does not run on (`EGRESS` has no entry for it).

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use core::mem::size_of;
use lb_common::{
    counters::Reason,
    limits::CLIENT_HOP_TTL_SECS,
    maps::{Addr, CachedHop, FAMILY_V4, NextHop, VipKey},
};

use crate::{
    conntrack::now,
    maps::{CLIENT_HOPS, EGRESS, TX_PORTS},
    parse::{Packet, ptr_at},
};

/// Offset of the EtherType (or of an 802.1Q tag's TPID) in the Ethernet header.
const ETH_TYPE: usize = 12;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Size of an 802.1Q tag.
const VLAN_TAG_LEN: i32 = 4;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
/// The destination is not forwarded: an address of this host (or broadcast, multicast).
const BPF_FIB_LKUP_RET_NOT_FWDED: i64 = 4;

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
        return emit(ctx, hop);
    }
    let resolved = fib(ctx, pkt, src, dst).map_err(|_| Reason::PassToKernelRoute)?;
    emit(ctx, &resolved)
}

/// Sends `pkt` towards `hop` when the agent resolved it, else hands it to the kernel
/// (`PassToKernelRoute`), which routes it: [`send`] without its FIB lookup, for the ICMP path,
/// whose call chain has no room left for the lookup's 96 bytes of stack.
#[inline(always)]
pub fn send_resolved(ctx: &XdpContext, hop: &NextHop) -> Result<u32, Reason> {
    if !hop.is_resolved() {
        return Err(Reason::PassToKernelRoute);
    }
    emit(ctx, hop)
}

/// Where a packet from `src` to a client at `dst` goes, by the kernel's FIB (routes and
/// neighbours: state that is the same for every flow and, with the same network
/// configuration, on every node). `Ok(None)`: rewrite it and let the kernel forward it (no
/// neighbour entry yet, or no route). `Err(PassNotVip)`: it is addressed to this host itself
/// (a health probe's answer, the host's own connection): leave it untouched.
///
/// A FIB lookup costs about 200 ns here, so its answer is cached per client address in
/// `CLIENT_HOPS` for [`CLIENT_HOP_TTL_SECS`]: a route or neighbour change reaches replies
/// within that time.
#[inline(always)]
pub fn towards_client(ctx: &XdpContext, pkt: &Packet, src: &Addr, dst: &Addr) -> Result<Option<NextHop>, Reason> {
    let key = VipKey { addr: *dst, port: 0, proto: 0, family: pkt.key.family };
    let now = now();
    if let Some(cached) = CLIENT_HOPS.get_ptr(&key) {
        // SAFETY: pointer from a successful lookup, copied at once (a recycled node gives
        // another client's answer only if its key matched, which the kernel checks).
        let cached = unsafe { *cached };
        if now <= cached.until {
            return Ok(Some(cached.hop));
        }
    }
    match fib(ctx, pkt, src, dst) {
        Ok(hop) => {
            let _ = CLIENT_HOPS.insert(&key, &CachedHop { hop, until: now + CLIENT_HOP_TTL_SECS, pad: 0 }, 0);
            Ok(Some(hop))
        }
        Err(BPF_FIB_LKUP_RET_NOT_FWDED) => Err(Reason::PassNotVip),
        Err(_) => Ok(None),
    }
}

/// Sends `pkt` to `hop`, or to the kernel when there is none (`PassToKernelRoute`).
#[inline(always)]
pub fn send_to(ctx: &XdpContext, hop: &Option<NextHop>) -> Result<u32, Reason> {
    let Some(hop) = hop else {
        return Err(Reason::PassToKernelRoute);
    };
    emit(ctx, hop)
}

/// The last step of every forward: the interface the frame leaves by (`EGRESS`), its VLAN
/// tag, the MACs, and the verdict. An interface index of 0 (the ingress interface, unresolved)
/// keeps the frame's tag and leaves by XDP_TX. A hop through an interface without an `EGRESS`
/// entry is left to the kernel before anything of the frame's Ethernet header changes
/// (`PassNotXdpEgress`), so the kernel receives a frame addressed to this host.
///
/// A BPF function of its own: inlined into each caller, LLVM spilled a pointer into a 32-bit
/// stack slot on the reply path, which the verifier refuses ("invalid size of register spill").
#[inline(never)]
fn emit(ctx: &XdpContext, hop: &NextHop) -> Result<u32, Reason> {
    let mut out_ifindex = 0;
    if hop.ifindex != 0 {
        let egress = EGRESS.get_ptr(&hop.ifindex).ok_or(Reason::PassNotXdpEgress)?;
        // SAFETY: pointer from a successful lookup, copied at once.
        let egress = unsafe { *egress };
        set_vlan(ctx, if egress.tagged != 0 { Some(egress.vlan_id) } else { None })?;
        out_ifindex = egress.out;
    }
    set_macs(ctx, hop)?;
    out(ctx, out_ifindex)
}

/// Gives the frame the 802.1Q tag `vlan_id`, or none: rewrites, pushes or pops the tag. The
/// MAC addresses are left for `set_macs` to write (a push or pop moves the frame's start).
#[inline(always)]
fn set_vlan(ctx: &XdpContext, vlan_id: Option<u16>) -> Result<(), Reason> {
    let tpid = ptr_at::<[u8; 2]>(ctx, ETH_TYPE)?;
    // SAFETY: bounds-checked by `ptr_at`.
    let tagged = matches!(u16::from_be_bytes(unsafe { *tpid }), ETH_P_8021Q | ETH_P_8021AD);
    match (tagged, vlan_id) {
        (false, None) => return Ok(()),
        (true, None) => {
            // SAFETY: a helper call on this program's context; every packet pointer is
            // re-derived from the context afterwards.
            if unsafe { bpf_xdp_adjust_head(ctx.ctx, VLAN_TAG_LEN) } != 0 {
                return Err(Reason::PassToKernelRoute);
            }
            return Ok(());
        }
        (false, Some(_)) => {
            // SAFETY: as above.
            if unsafe { bpf_xdp_adjust_head(ctx.ctx, -VLAN_TAG_LEN) } != 0 {
                return Err(Reason::PassToKernelRoute);
            }
        }
        (true, Some(_)) => {}
    }
    let tag = ptr_at::<[u8; 4]>(ctx, ETH_TYPE)?;
    let id = vlan_id.unwrap_or(0) & 0x0FFF;
    // SAFETY: bounds-checked by `ptr_at`. A rewritten tag keeps its priority bits; a pushed one
    // (whose bytes were the MAC addresses' tail) gets priority 0.
    unsafe {
        let old = if tagged { u16::from_be_bytes([(*tag)[2], (*tag)[3]]) & 0xF000 } else { 0 };
        let tci = (old | id).to_be_bytes();
        *tag = [0x81, 0x00, tci[0], tci[1]];
    }
    Ok(())
}

/// XDP_TX out of the ingress interface, else XDP_REDIRECT through `TX_PORTS`. The agent adds
/// an interface to `TX_PORTS` before `EGRESS` names it and removes it after, so the redirect
/// only misses while an interface is being removed: that frame (its MACs already rewritten)
/// is counted as a map miss and dropped by the kernel.
#[inline(always)]
fn out(ctx: &XdpContext, ifindex: u32) -> Result<u32, Reason> {
    if ifindex == 0 || ifindex == ctx.ingress_ifindex() as u32 {
        Ok(xdp_action::XDP_TX)
    } else {
        TX_PORTS.redirect(ifindex, 0).map_err(|_| Reason::DropMapMiss)
    }
}

/// Writes the destination and source MACs as six 16-bit stores (LLVM copies a `[u8; 6]` a
/// byte at a time).
#[inline(always)]
fn set_macs(ctx: &XdpContext, hop: &NextHop) -> Result<(), Reason> {
    let eth = ptr_at::<[u16; 6]>(ctx, 0)?;
    // SAFETY: bounds-checked by `ptr_at`; the frame starts 2-byte aligned (see
    // `sanity::check`). `NextHop` is 4-byte aligned with its MACs at offsets 4 and 10, so
    // both reads are aligned.
    unsafe {
        let dst = *hop.dst_mac.as_ptr().cast::<[u16; 3]>();
        let src = *hop.src_mac.as_ptr().cast::<[u16; 3]>();
        *eth = [dst[0], dst[1], dst[2], src[0], src[1], src[2]];
    }
    Ok(())
}

/// Asks the kernel's FIB for the next hop of `dst`; `Err` is the helper's return code.
#[inline(never)]
fn fib(ctx: &XdpContext, pkt: &Packet, src: &Addr, dst: &Addr) -> Result<NextHop, i64> {
    let mut params = core::mem::MaybeUninit::uninit();
    let p = zeroed_fib_params(&mut params);
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
        fib_lookup(ctx.ctx.cast(), p, size_of::<bpf_fib_lookup>() as i32, 0)
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        return Err(rc);
    }
    Ok(NextHop {
        ifindex: p.ifindex,
        dst_mac: p.dmac,
        src_mac: p.smac,
    })
}

/// `p` zeroed a word at a time, in place: `mem::zeroed` (and zeroing elsewhere, then moving)
/// became a call to a byte-wise `memset` loop of up to 64 rounds (profiled on the reply path).
#[inline(always)]
fn zeroed_fib_params(p: &mut core::mem::MaybeUninit<bpf_fib_lookup>) -> &mut bpf_fib_lookup {
    const WORDS: usize = size_of::<bpf_fib_lookup>() / 4;
    let w = p.as_mut_ptr().cast::<u32>();
    let mut i = 0;
    while i < WORDS {
        // SAFETY: `i < WORDS` words lie within `p`, which is 4-byte aligned (u32 fields);
        // volatile, so that LLVM keeps the stores rather than merging them into `memset`.
        unsafe { w.add(i).write_volatile(0) };
        i += 1;
    }
    // SAFETY: every byte was written above; all zeroes is a valid bpf_fib_lookup (a C struct).
    unsafe { p.assume_init_mut() }
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
