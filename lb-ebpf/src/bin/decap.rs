//! The backend's decapsulation program (`lb_decap`): strips the outer headers of direct server
//! return (`lb_common::encap`: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6, GUE over IPv4 or
//! IPv6) from a frame whose outer destination is one of the backend's tunnel endpoints
//! (`DECAP_ADDRS`) and whose inner destination is a VIP it serves (`DECAP_VIPS`), writes the
//! Ethernet header back in front of the inner packet with the inner EtherType and passes it to
//! the kernel. Every other frame passes untouched. Each frame is counted once in `DECAP_STATS`
//! under its `DecapReason`.
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::needless_borrows_for_generic_args,
        reason = "map keys go to aya's `impl Borrow` arguments by reference, so that no copy of them is made on the 512-byte BPF stack"
    )
)]
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

/// The crate only means something for the BPF target; on the host it is an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::xdp_action,
        helpers::generated::bpf_xdp_adjust_head,
        macros::{map, xdp},
        maps::{HashMap, PerCpuArray},
        programs::XdpContext,
    };
    use core::mem::size_of;
    use lb_common::{
        encap::{
            Carrier, DEFAULT_GUE_PORT, DecapAddr, DecapReason, ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, UDP_HLEN, carrier,
            inner_ether_type, inner_min_len, outer_len,
        },
        limits::{DECAP_ADDR_CAPACITY, DECAP_REASON_SLOTS, DECAP_VIP_CAPACITY},
    };
    use network_types::{
        eth::EthHdr,
        ip::{Ipv4Hdr, Ipv6Hdr},
        udp::UdpHdr,
    };

    const ETH_P_8021Q: u16 = 0x8100;
    const ETH_P_8021AD: u16 = 0x88A8;
    /// IPv4 "more fragments" flag and fragment offset bits of the `frags` field.
    const IPV4_MF_AND_OFFSET: u16 = 0x3FFF;

    /// The GUE destination port (`lb_common::encap::GLOBAL_DECAP_GUE_PORT`), set at load time.
    #[unsafe(no_mangle)]
    static DECAP_GUE_PORT: u16 = DEFAULT_GUE_PORT;

    /// The backend's own tunnel endpoint addresses (`lb_common::encap::MAP_DECAP_ADDRS`).
    #[map]
    static DECAP_ADDRS: HashMap<DecapAddr, u8> = HashMap::with_max_entries(DECAP_ADDR_CAPACITY, 0);

    /// The VIP addresses the backend serves (`lb_common::encap::MAP_DECAP_VIPS`).
    #[map]
    static DECAP_VIPS: HashMap<DecapAddr, u8> = HashMap::with_max_entries(DECAP_VIP_CAPACITY, 0);

    /// One counter per `DecapReason` (`lb_common::encap::MAP_DECAP_STATS`).
    #[map]
    static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DECAP_REASON_SLOTS, 0);

    /// Strips the outer headers of an encapsulated frame for this backend (see the crate's doc).
    #[xdp(frags)]
    pub fn lb_decap(ctx: XdpContext) -> u32 {
        let reason = decap(&ctx);
        if let Some(c) = DECAP_STATS.get_ptr_mut(reason as u32) {
            // SAFETY: per-CPU slot: no other program instance writes it concurrently.
            unsafe { *c += 1 };
        }
        xdp_action::XDP_PASS
    }

    /// A bounds-checked pointer to a `T` at `offset` bytes into the frame.
    #[inline(always)]
    fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, DecapReason> {
        let start = ctx.data();
        if start + offset + size_of::<T>() > ctx.data_end() {
            return Err(DecapReason::Malformed);
        }
        Ok((start + offset) as *mut T)
    }

    /// The outer header: where its payload starts, how it is carried, its destination.
    struct Outer {
        v6: bool,
        payload: usize,
        carrier: Carrier,
        dst: DecapAddr,
    }

    /// Decapsulates the frame if it is for this backend; what was done.
    #[inline(always)]
    fn decap(ctx: &XdpContext) -> DecapReason {
        match try_decap(ctx) {
            Ok(()) => DecapReason::Decapsulated,
            Err(reason) => reason,
        }
    }

    #[inline(always)]
    fn try_decap(ctx: &XdpContext) -> Result<(), DecapReason> {
        let eth = ptr_at::<EthHdr>(ctx, 0)?;
        // SAFETY: bounds checked by `ptr_at`; the header is copied out before the frame moves.
        let eth = unsafe { *eth };
        let outer = match u16::from_be(eth.ether_type) {
            ETH_P_IPV4 => outer_v4(ctx)?,
            ETH_P_IPV6 => outer_v6(ctx)?,
            ETH_P_8021Q | ETH_P_8021AD => return Err(DecapReason::Vlan),
            _ => return Err(DecapReason::NotEncapsulated),
        };
        let gue = outer.carrier == Carrier::Udp;
        let mut inner = outer.payload;
        if gue {
            let udp = ptr_at::<UdpHdr>(ctx, inner)?;
            // SAFETY: bounds checked by `ptr_at`.
            let port = u16::from_be_bytes(unsafe { (*udp).dst });
            // SAFETY: a load-time constant the program only reads.
            if port != unsafe { core::ptr::read_volatile(&DECAP_GUE_PORT) } {
                return Err(DecapReason::NotEncapsulated);
            }
            inner += UDP_HLEN;
        }
        if DECAP_ADDRS.get_ptr(&outer.dst).is_none() {
            return Err(DecapReason::NotForUs);
        }
        let first = ptr_at::<u8>(ctx, inner)?;
        // SAFETY: bounds checked by `ptr_at`.
        let first = unsafe { *first };
        let ether_type = inner_ether_type(first).ok_or(DecapReason::Malformed)?;
        if let Carrier::Ip { version } = outer.carrier
            && first >> 4 != version
        {
            return Err(DecapReason::Malformed);
        }
        // An IPv4 header length below five words is no header.
        inner_min_len(first).ok_or(DecapReason::Malformed)?;
        let vip = if ether_type == ETH_P_IPV4 {
            let ip = ptr_at::<Ipv4Hdr>(ctx, inner)?;
            // SAFETY: bounds checked by `ptr_at`.
            DecapAddr::v4(unsafe { (*ip).dst_addr })
        } else {
            let ip = ptr_at::<Ipv6Hdr>(ctx, inner)?;
            // SAFETY: bounds checked by `ptr_at`.
            DecapAddr::v6(unsafe { (*ip).dst_addr })
        };
        if DECAP_VIPS.get_ptr(&vip).is_none() {
            return Err(DecapReason::NotServed);
        }
        let strip = outer_len(outer.v6, gue) as i32;
        // SAFETY: a helper call on this program's context; every pointer into the frame is
        // taken again after it.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, strip) } != 0 {
            return Err(DecapReason::AdjustFailed);
        }
        // The inner header (checked above) lies behind the new Ethernet header's place.
        let new = ptr_at::<EthHdr>(ctx, 0).map_err(|_| DecapReason::AdjustFailed)?;
        // SAFETY: bounds checked by `ptr_at`, after the adjustment.
        unsafe { *new = EthHdr { dst_addr: eth.dst_addr, src_addr: eth.src_addr, ether_type: ether_type.to_be() } };
        Ok(())
    }

    /// The outer IPv4 header, if it may carry an encapsulated packet.
    #[inline(always)]
    fn outer_v4(ctx: &XdpContext) -> Result<Outer, DecapReason> {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by `ptr_at`.
        let ip = unsafe { &*ip };
        if ip.vihl >> 4 != 4 || ip.vihl & 0x0F < 5 {
            return Err(DecapReason::Malformed);
        }
        let carrier = carrier(ip.proto).ok_or(DecapReason::NotEncapsulated)?;
        if ip.vihl & 0x0F != 5 {
            return Err(DecapReason::Ipv4Options);
        }
        if u16::from_be_bytes(ip.frags) & IPV4_MF_AND_OFFSET != 0 {
            return Err(DecapReason::Fragment);
        }
        Ok(Outer { v6: false, payload: ETH_HLEN + outer_len(false, false), carrier, dst: DecapAddr::v4(ip.dst_addr) })
    }

    /// The outer IPv6 header, if it may carry an encapsulated packet (extension headers are
    /// not looked through: the load balancer sends none).
    #[inline(always)]
    fn outer_v6(ctx: &XdpContext) -> Result<Outer, DecapReason> {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by `ptr_at`.
        let ip = unsafe { &*ip };
        if ip.vcf[0] >> 4 != 6 {
            return Err(DecapReason::Malformed);
        }
        let carrier = carrier(ip.next_hdr).ok_or(DecapReason::NotEncapsulated)?;
        Ok(Outer { v6: true, payload: ETH_HLEN + outer_len(true, false), carrier, dst: DecapAddr::v6(ip.dst_addr) })
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // The verifier rejects any path that could reach here; nothing calls it at run time.
        loop {}
    }

    /// Dual-licensed like the data path.
    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}
