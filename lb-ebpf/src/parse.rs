//! Parsing: Ethernet (at most one 802.1Q/802.1ad tag), IPv4 without options or fragments,
//! IPv6 without extension headers, then TCP or UDP. Anything else is a [`Reason`] to pass the
//! packet to the kernel untouched.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lb_common::{
    counters::Reason,
    maps::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP},
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// IPv4 "more fragments" flag and fragment offset bits of the `frags` field.
const IPV4_MF_AND_OFFSET: u16 = 0x3FFF;

/// A packet the data path can balance: where its headers are and its 5-tuple.
#[derive(Default)]
pub struct Packet {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP or UDP header.
    pub l4: usize,
    /// Addresses, ports, protocol and family as on the wire.
    pub key: FlowKey,
    /// Frame length in bytes.
    pub len: u64,
    /// A TCP SYN without ACK: the first packet of a new connection (possibly on a 5-tuple the
    /// client used before).
    pub syn: bool,
}

/// A bounds-checked pointer to a `T` at `offset` bytes into the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Reason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Reason::PassTruncated);
    }
    Ok((start + offset) as *mut T)
}

/// Parses the headers of the frame in `ctx` into `pkt` (filled in place: a returned `Packet`
/// would be copied through the stack, which is only 512 bytes).
#[inline(always)]
pub fn parse(ctx: &XdpContext, pkt: &mut Packet) -> Result<(), Reason> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: `ptr_at` checked that the header lies inside the frame.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3 = EthHdr::LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan = ptr_at::<VlanHdr>(ctx, EthHdr::LEN)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            return Err(Reason::PassVlanStacked);
        }
        l3 += VlanHdr::LEN;
    }

    let key = &mut pkt.key;
    let l4 = match ether_type {
        ETH_P_IP => {
            let ip = ptr_at::<Ipv4Hdr>(ctx, l3)?;
            // SAFETY: bounds checked by `ptr_at`.
            let ip = unsafe { &*ip };
            if ip.vihl >> 4 != 4 || ip.vihl & 0x0F < 5 {
                return Err(Reason::PassMalformed);
            }
            if ip.vihl & 0x0F != 5 {
                return Err(Reason::PassIpv4Options);
            }
            if u16::from_be_bytes(ip.frags) & IPV4_MF_AND_OFFSET != 0 {
                return Err(Reason::PassFragment);
            }
            key.family = FAMILY_V4;
            key.proto = ip.proto;
            key.src[..4].copy_from_slice(&ip.src_addr);
            key.dst[..4].copy_from_slice(&ip.dst_addr);
            l3 + Ipv4Hdr::LEN
        }
        ETH_P_IPV6 => {
            let ip = ptr_at::<Ipv6Hdr>(ctx, l3)?;
            // SAFETY: bounds checked by `ptr_at`.
            let ip = unsafe { &*ip };
            if ip.vcf[0] >> 4 != 6 {
                return Err(Reason::PassMalformed);
            }
            if is_ipv6_extension(ip.next_hdr) {
                return Err(Reason::PassIpv6ExtHeader);
            }
            key.family = FAMILY_V6;
            key.proto = ip.next_hdr;
            key.src = ip.src_addr;
            key.dst = ip.dst_addr;
            l3 + Ipv6Hdr::LEN
        }
        _ => return Err(Reason::PassNotIp),
    };

    match key.proto {
        PROTO_TCP => {
            let tcp = ptr_at::<TcpHdr>(ctx, l4)?;
            // SAFETY: bounds checked by `ptr_at`.
            let tcp = unsafe { &*tcp };
            key.sport = u16::from_be_bytes(tcp.source);
            key.dport = u16::from_be_bytes(tcp.dest);
            pkt.syn = tcp.syn() != 0 && tcp.ack() == 0;
        }
        PROTO_UDP => {
            let udp = ptr_at::<UdpHdr>(ctx, l4)?;
            // SAFETY: bounds checked by `ptr_at`.
            let udp = unsafe { &*udp };
            key.sport = u16::from_be_bytes(udp.src);
            key.dport = u16::from_be_bytes(udp.dst);
        }
        _ => return Err(Reason::PassNotTcpUdp),
    }

    pkt.l3 = l3;
    pkt.l4 = l4;
    pkt.len = (ctx.data_end() - ctx.data()) as u64;
    Ok(())
}

/// IPv6 extension headers (RFC 8200 and the IANA list) that may precede TCP/UDP.
#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}
