//! The MSS clamp of tunnel and GUE VIPs that ask for it (`mss_clamp`): a client's SYN whose
//! MSS option would let segments exceed the tunnel MTU once encapsulated gets the largest MSS
//! that fits, and its TCP checksum is updated. A SYN without the option is left alone (the
//! defaults, 536 and 1220 bytes, fit any tunnel MTU).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    csum::CsumDelta,
    encap::{clamped_mss, inner_mtu},
    maps::FAMILY_V6,
};

use crate::{
    nat::TCP_CHECK,
    parse::{Packet, ptr_at},
    stats::count,
};

/// Smallest TCP header; options follow it.
const TCP_MIN_LEN: usize = 20;
/// TCP option "maximum segment size" and its length.
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: u8 = 4;

/// Lowers the MSS option of SYN `pkt` to fit a tunnel MTU of `mtu` with `outer` bytes of
/// outer headers. Only an MSS option that comes first is read, where Linux, Windows, macOS
/// and the BSDs put it: a walk over every option, with its offset differing on each path,
/// costs the verifier more states than the program may have. A SYN with its MSS elsewhere is
/// forwarded unclamped, and its oversized segments get the ICMP error (`too_big`). A header
/// cut short leaves the SYN as it is (`Err`, which the caller ignores).
#[inline(never)]
pub fn clamp(ctx: &XdpContext, pkt: &Packet, mtu: u16, outer: u16) -> Result<(), Reason> {
    let v6 = pkt.key.family == FAMILY_V6;
    let limit = clamped_mss(inner_mtu(mtu, outer as usize, v6), v6);
    let at = pkt.l4 + TCP_MIN_LEN;
    if ((pkt.tcp_doff >> 4) as usize) * 4 < TCP_MIN_LEN + OPT_MSS_LEN as usize {
        return Ok(());
    }
    let opt = ptr_at::<[u8; 4]>(ctx, at)?;
    // SAFETY: bounds-checked by `ptr_at`.
    let o = unsafe { *opt };
    let mss = u16::from_be_bytes([o[2], o[3]]);
    if o[0] != OPT_MSS || o[1] != OPT_MSS_LEN || mss <= limit {
        return Ok(());
    }
    let check = ptr_at::<[u8; 2]>(ctx, pkt.l4 + TCP_CHECK)?;
    let mut delta = CsumDelta::new();
    delta.replace_u16(mss, limit);
    let new = limit.to_be_bytes();
    // SAFETY: both bounds-checked by `ptr_at`.
    unsafe {
        *check = delta.apply(u16::from_be_bytes(*check)).to_be_bytes();
        *opt = [o[0], o[1], new[0], new[1]];
    }
    count(Reason::MssClamped);
    Ok(())
}
