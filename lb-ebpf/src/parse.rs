//! Parsing: Ethernet (at most one 802.1Q/802.1ad tag), IPv4 without options or fragments,
//! IPv6 without extension headers, then TCP or UDP. Anything else is a [`Reason`] to pass the
//! packet to the kernel untouched.

use aya_ebpf::programs::XdpContext;
use core::mem::{MaybeUninit, size_of};
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

/// Parses the headers of the frame in `ctx`.
///
/// Every field of the returned packet is written exactly once, addresses as 64-bit words:
/// zero-filling a `Packet` first (`Default`) compiled to a call of a byte-by-byte `memset`
/// loop on every packet, about 25 ns (see BENCHMARKS.md).
///
/// The packet is written into `out` in place (a returned `Packet` would be copied through the
/// stack, which is only 512 bytes for the whole call chain).
#[inline(always)]
pub fn parse<'a>(ctx: &XdpContext, out: &'a mut MaybeUninit<Packet>) -> Result<&'a Packet, Reason> {
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

    let (family, proto, src, dst, l4) = match ether_type {
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
            (FAMILY_V4, ip.proto, v4_words(&ip.src_addr), v4_words(&ip.dst_addr), l3 + Ipv4Hdr::LEN)
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
            (FAMILY_V6, ip.next_hdr, v6_words(&ip.src_addr), v6_words(&ip.dst_addr), l3 + Ipv6Hdr::LEN)
        }
        _ => return Err(Reason::PassNotIp),
    };

    let (sport, dport, syn) = match proto {
        PROTO_TCP => {
            let tcp = ptr_at::<TcpHdr>(ctx, l4)?;
            // SAFETY: bounds checked by `ptr_at`.
            let tcp = unsafe { &*tcp };
            (u16::from_be_bytes(tcp.source), u16::from_be_bytes(tcp.dest), tcp.syn() != 0 && tcp.ack() == 0)
        }
        PROTO_UDP => {
            let udp = ptr_at::<UdpHdr>(ctx, l4)?;
            // SAFETY: bounds checked by `ptr_at`.
            let udp = unsafe { &*udp };
            (u16::from_be_bytes(udp.src), u16::from_be_bytes(udp.dst), false)
        }
        _ => return Err(Reason::PassNotTcpUdp),
    };

    Ok(out.write(Packet {
        l3,
        l4,
        key: FlowKey {
            src: addr_from_words(src),
            dst: addr_from_words(dst),
            sport,
            dport,
            proto,
            family,
            pad: [0; 2],
        },
        len: (ctx.data_end() - ctx.data()) as u64,
        syn,
    }))
}

/// An IPv4 address as the two little-endian words of its [`lb_common::maps::Addr`] layout.
#[inline(always)]
fn v4_words(a: &[u8; 4]) -> [u64; 2] {
    [u32::from_le_bytes(*a) as u64, 0]
}

/// An IPv6 address as two little-endian words.
#[inline(always)]
fn v6_words(a: &[u8; 16]) -> [u64; 2] {
    [
        u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
}

#[inline(always)]
fn addr_from_words(w: [u64; 2]) -> lb_common::maps::Addr {
    let (a, b) = (w[0].to_le_bytes(), w[1].to_le_bytes());
    [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// IPv6 extension headers (RFC 8200 and the IANA list) that may precede TCP/UDP.
#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}
