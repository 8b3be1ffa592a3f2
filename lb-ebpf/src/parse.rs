//! Parsing: Ethernet (at most one 802.1Q/802.1ad tag), IPv4 or IPv6 without extension
//! headers, then TCP, UDP, or an ICMP/ICMPv6 error quoting a TCP or UDP packet. Anything else
//! is a [`Reason`] to pass the packet to the kernel untouched. IPv4 fragments and IPv4 headers
//! with options are parsed as far as their addresses ([`Kind::Fragment`],
//! [`Kind::Ipv4Options`]): the caller decides.

use aya_ebpf::{helpers::generated::bpf_xdp_get_buff_len, programs::XdpContext};
use core::mem::{MaybeUninit, size_of};
use lb_common::{
    counters::Reason,
    maps::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
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
/// IPv4 "more fragments" flag.
const IPV4_MF: u16 = 0x2000;
/// Offset of the data offset byte in the TCP header (the flags byte follows).
const TCP_DOFF: usize = 12;
/// ICMP and ICMPv6 headers up to the quoted packet.
const ICMP_HDR_LEN: usize = 8;

/// What a parsed packet is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP or UDP: `key` is its 5-tuple.
    Transport,
    /// An IPv4 fragment after the first: `key` has its addresses and protocol, no ports.
    Fragment,
    /// The first fragment of an IPv4 datagram (MF set, offset 0): `key` has its ports too when
    /// the transport header is there (0 otherwise).
    FirstFragment,
    /// An IPv4 header with options (not balanced: its transport header would lie at a
    /// variable offset): `key` has its addresses and protocol, no ports.
    Ipv4Options,
    /// ICMP or ICMPv6: `key` has the outer addresses and protocol, no ports, `l4` is the ICMP
    /// header. [`quoted`] parses it further.
    Icmp,
    /// An ICMP or ICMPv6 error whose quoted packet is TCP or UDP (from [`quoted`]): `key` is
    /// the 5-tuple of the client's flow the quote belongs to, client → VIP or client → backend
    /// (`key.dst`:`key.dport` is what the rewrite replaces); `inner_l3` and `l4` are the quoted
    /// IP and transport headers, `l3` the outer IP header.
    IcmpError,
}

/// A packet the data path can balance: where its headers are and its 5-tuple.
pub struct Packet {
    /// Offset of the (outer) IP header.
    pub l3: usize,
    /// Offset of the TCP or UDP header (for an ICMP error, the quoted one).
    pub l4: usize,
    /// Offset of the quoted IP header of an ICMP error (0 otherwise).
    pub inner_l3: usize,
    /// Addresses, ports, protocol and family as on the wire.
    pub key: FlowKey,
    /// Frame length in bytes. [`parse`] stores the first buffer's (free to read); every path
    /// that checks or counts it first stores the whole frame's ([`frame_len`]: with XDP frags
    /// a frame can span several buffers), so that traffic for no VIP skips the helper call.
    pub len: u64,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// The TCP header's data offset byte (words in its high nibble; 0 for UDP).
    pub tcp_doff: u8,
    /// What the packet is.
    pub kind: Kind,
    /// For an ICMP error: whether the outer destination is the quoted source (an error about
    /// a packet the load balancer sent, towards a VIP), rather than the outer source being the
    /// quoted destination (an error a backend sends about a packet it received).
    pub icmp_to_sender: bool,
    /// For an ICMP packet: whether its outer source is martian or a VIP address (set by the
    /// ICMP path while `key` holds the outer addresses; [`quoted`] keeps it). False otherwise.
    pub icmp_martian_source: bool,
}

impl Packet {
    /// A TCP SYN without ACK: the first packet of a new connection (possibly on a 5-tuple the
    /// client used before).
    #[inline(always)]
    pub fn syn(&self) -> bool {
        self.tcp_flags & (lb_common::flow::TCP_SYN | lb_common::flow::TCP_ACK) == lb_common::flow::TCP_SYN
    }

    /// Whether the packet is TCP.
    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.key.proto == PROTO_TCP
    }
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

/// Whether the IPv4 header of `pkt` has options (IHL above 5; [`parse`] stops a fragment's
/// parse before it looks). A header it cannot read counts as one with options.
#[inline(always)]
pub fn has_ipv4_options(ctx: &XdpContext, pkt: &Packet) -> bool {
    match ptr_at::<u8>(ctx, pkt.l3) {
        // SAFETY: bounds checked by `ptr_at`.
        Ok(vihl) => (unsafe { *vihl } & 0x0F) != 5,
        Err(_) => true,
    }
}

/// The length of the whole frame: with XDP frags, `data..data_end` is only its first buffer.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> u64 {
    // SAFETY: a helper call on this program's context, which it only reads.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) }
}

/// The addresses, protocol, family and transport offset of an IP header at `l3`; whether it
/// is a fragment.
#[derive(Clone, Copy)]
struct Ip {
    family: u8,
    proto: u8,
    src: [u64; 2],
    dst: [u64; 2],
    l4: usize,
    /// What the header stops the parse at, if anything.
    stop: Option<Kind>,
}

/// Parses the IP header of family `ether_type` at `l3`.
#[inline(always)]
fn ip(ctx: &XdpContext, ether_type: u16, l3: usize) -> Result<Ip, Reason> {
    match ether_type {
        ETH_P_IP => {
            let ip = ptr_at::<Ipv4Hdr>(ctx, l3)?;
            // SAFETY: `ptr_at` checked that the header lies inside the frame.
            let ip = unsafe { &*ip };
            let ihl = (ip.vihl & 0x0F) as usize;
            if ip.vihl >> 4 != 4 || ihl < 5 {
                return Err(Reason::PassMalformed);
            }
            let frags = u16::from_be_bytes(ip.frags) & IPV4_MF_AND_OFFSET;
            let stop = if frags == IPV4_MF {
                Some(Kind::FirstFragment)
            } else if frags != 0 {
                Some(Kind::Fragment)
            } else if ihl != 5 {
                Some(Kind::Ipv4Options)
            } else {
                None
            };
            Ok(Ip {
                family: FAMILY_V4,
                proto: ip.proto,
                src: v4_words(&ip.src_addr),
                dst: v4_words(&ip.dst_addr),
                l4: l3 + Ipv4Hdr::LEN,
                stop,
            })
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
            Ok(Ip {
                family: FAMILY_V6,
                proto: ip.next_hdr,
                src: v6_words(&ip.src_addr),
                dst: v6_words(&ip.dst_addr),
                l4: l3 + Ipv6Hdr::LEN,
                stop: None,
            })
        }
        _ => Err(Reason::PassNotIp),
    }
}

/// Source port, destination port, TCP flags and data offset byte of the transport header at
/// `l4`.
#[inline(always)]
fn ports(ctx: &XdpContext, proto: u8, l4: usize) -> Result<(u16, u16, u8, u8), Reason> {
    match proto {
        PROTO_TCP => {
            let tcp = ptr_at::<TcpHdr>(ctx, l4)?;
            // SAFETY: bounds checked by `ptr_at`.
            let tcp = unsafe { &*tcp };
            // SAFETY: both bytes lie inside the header checked above.
            let [doff, flags] = unsafe { *((tcp as *const TcpHdr as *const u8).add(TCP_DOFF) as *const [u8; 2]) };
            Ok((u16::from_be_bytes(tcp.source), u16::from_be_bytes(tcp.dest), flags, doff))
        }
        PROTO_UDP => {
            let udp = ptr_at::<UdpHdr>(ctx, l4)?;
            // SAFETY: bounds checked by `ptr_at`.
            let udp = unsafe { &*udp };
            Ok((u16::from_be_bytes(udp.src), u16::from_be_bytes(udp.dst), 0, 0))
        }
        _ => Err(Reason::PassNotTcpUdp),
    }
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
pub fn parse<'a>(ctx: &XdpContext, out: &'a mut MaybeUninit<Packet>) -> Result<&'a mut Packet, Reason> {
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
    let outer = ip(ctx, ether_type, l3)?;
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(kind) = outer.stop {
        // Only a fragment's first piece has ports (when its transport header is whole).
        let l4 = if kind == Kind::FirstFragment { ports(ctx, outer.proto, outer.l4).unwrap_or((0, 0, 0, 0)) } else { (0, 0, 0, 0) };
        return Ok(out.write(packet(l3, outer.l4, 0, &outer, l4, len, kind, false, false)));
    }
    // ICMP of the header's own family only: IPv4 with protocol 58 is not ICMPv6 (nor IPv6
    // with next header 1 ICMP), and is passed as any protocol the data path does not know.
    let icmp = if outer.family == FAMILY_V4 { PROTO_ICMP } else { PROTO_ICMPV6 };
    if outer.proto == icmp {
        return Ok(out.write(packet(l3, outer.l4, 0, &outer, (0, 0, 0, 0), len, Kind::Icmp, false, false)));
    }
    let l4 = ports(ctx, outer.proto, outer.l4)?;
    Ok(out.write(packet(l3, outer.l4, 0, &outer, l4, len, Kind::Transport, false, false)))
}

/// Turns the [`Kind::Icmp`] packet `icmp` into a [`Kind::IcmpError`] packet, if it is an ICMP
/// (type 3, 11, 12) or ICMPv6 (type 1 to 4) error quoting a TCP or UDP packet whose source
/// is the outer destination or whose destination is the outer source. Anything else with an
/// ICMP header (echo, neighbour discovery, errors about other traffic) is
/// [`Reason::PassNotTcpUdp`], and `icmp` is left as it was.
///
/// An error to the quoted source matches both cases when it is a client's own error about a
/// reply; one from a backend to a client is told apart by the caller (see `xdp::icmp_error`).
///
/// Called from the ICMP path's own frame, not from [`parse`], to keep the common path's
/// stack small; it rewrites the packet in place and returns no reference, because a
/// BPF-to-BPF call may not leave a pointer to the stack in its caller's frame.
#[inline(always)]
pub fn quoted(ctx: &XdpContext, icmp: &mut Packet) -> Result<(), Reason> {
    let icmp_type = ptr_at::<u8>(ctx, icmp.l4).map_err(|_| Reason::PassNotTcpUdp)?;
    // SAFETY: bounds checked by `ptr_at`.
    let icmp_type = unsafe { *icmp_type };
    let v4 = icmp.key.family == FAMILY_V4;
    let error = if v4 { matches!(icmp_type, 3 | 11 | 12) } else { (1..=4).contains(&icmp_type) };
    if !error {
        return Err(Reason::PassNotTcpUdp);
    }
    let inner_l3 = icmp.l4 + ICMP_HDR_LEN;
    let inner = ip(ctx, if v4 { ETH_P_IP } else { ETH_P_IPV6 }, inner_l3).map_err(|_| Reason::PassNotTcpUdp)?;
    if inner.stop.is_some() || (inner.proto != PROTO_TCP && inner.proto != PROTO_UDP) {
        return Err(Reason::PassNotTcpUdp);
    }
    // Only the quoted ports are needed (8 bytes, always quoted); not the whole header.
    let quoted = ptr_at::<[u8; 4]>(ctx, inner.l4).map_err(|_| Reason::PassNotTcpUdp)?;
    // SAFETY: bounds checked by `ptr_at`.
    let quoted = unsafe { *quoted };
    let (sport, dport) = (u16::from_be_bytes([quoted[0], quoted[1]]), u16::from_be_bytes([quoted[2], quoted[3]]));
    if icmp.key.dst == addr_from_words(inner.src) {
        // The quote went VIP → client: the flow is its reverse.
        let flow = Ip { src: inner.dst, dst: inner.src, ..inner };
        *icmp = packet(icmp.l3, inner.l4, inner_l3, &flow, (dport, sport, 0, 0), icmp.len, Kind::IcmpError, true, icmp.icmp_martian_source);
        return Ok(());
    }
    if icmp.key.src != addr_from_words(inner.dst) {
        return Err(Reason::PassNotTcpUdp);
    }
    *icmp = packet(icmp.l3, inner.l4, inner_l3, &inner, (sport, dport, 0, 0), icmp.len, Kind::IcmpError, false, icmp.icmp_martian_source);
    Ok(())
}

#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "every field of Packet, written once")]
fn packet(
    l3: usize,
    l4: usize,
    inner_l3: usize,
    ip: &Ip,
    (sport, dport, tcp_flags, tcp_doff): (u16, u16, u8, u8),
    len: u64,
    kind: Kind,
    icmp_to_sender: bool,
    icmp_martian_source: bool,
) -> Packet {
    Packet {
        l3,
        l4,
        inner_l3,
        key: FlowKey {
            src: addr_from_words(ip.src),
            dst: addr_from_words(ip.dst),
            sport,
            dport,
            proto: ip.proto,
            family: ip.family,
            pad: [0; 2],
        },
        len,
        tcp_flags,
        tcp_doff,
        kind,
        icmp_to_sender,
        icmp_martian_source,
    }
}

/// An IPv4 address in the packet as the two little-endian words of its
/// [`lb_common::maps::Addr`] layout.
///
/// Read as 16-bit halves: IP headers are 2-byte aligned in the frame (behind a 14- or 18-byte
/// Ethernet header, see `sanity::check`), and LLVM's BPF backend reads a byte array with one
/// load, shift and or per byte.
#[inline(always)]
fn v4_words(a: &[u8; 4]) -> [u64; 2] {
    // SAFETY: `a` lies inside the frame (the caller's header was bounds-checked) and is 2-byte
    // aligned (see above).
    let h = unsafe { *(a as *const [u8; 4]).cast::<[u16; 2]>() };
    [(h[0] as u64) | ((h[1] as u64) << 16), 0]
}

/// An IPv6 address in the packet as two little-endian words, read as 16-bit halves (see
/// [`v4_words`]).
#[inline(always)]
fn v6_words(a: &[u8; 16]) -> [u64; 2] {
    // SAFETY: as in `v4_words`.
    let h = unsafe { *(a as *const [u8; 16]).cast::<[u16; 8]>() };
    let word = |k: usize| (h[k] as u64) | ((h[k + 1] as u64) << 16) | ((h[k + 2] as u64) << 32) | ((h[k + 3] as u64) << 48);
    [word(0), word(4)]
}

/// The [`lb_common::maps::Addr`] of two little-endian words.
///
/// Built from one 128-bit integer: from sixteen bytes, LLVM's BPF backend stored an address
/// with a shift and a byte store per byte (about 100 instructions per packet for the two
/// addresses); from one integer it stores two 64-bit words.
#[inline(always)]
fn addr_from_words(w: [u64; 2]) -> lb_common::maps::Addr {
    (((w[1] as u128) << 64) | w[0] as u128).to_le_bytes()
}

/// IPv6 extension headers (RFC 8200 and the IANA list) that may precede TCP/UDP.
#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}
