//! Valid seed frames for every path the data path has, built with the test crate's builders
//! (every checksum computed from scratch). A seed kind names the path; the generator picks
//! its service, client port and details.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::maps::{PROTO_TCP, PROTO_UDP};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use super::{wire, model::{DSR_MTU, ESTABLISHED_PORTS, FRAG_VIP, ISSUE18_CLIENT, ISSUE18_VIP, Model, ROUTER4, ROUTER6}};
use crate::{
    harness::{ACK, CLIENT_MAC, CLIENT4, CLIENT6, LB_MAC, SYN, SYN_ACK, VIP4, VIP6, backend_mac, from_client, tcp, udp},
    icmp_frames::{IcmpFrame, mtu32, next_hop_mtu, quote},
    packet::{Frame, L4, ipv4_fragments},
};

/// The seed kinds, one per path of the data path (the index is the kind).
pub const KINDS: &[&str] = &[
    "tcp_syn",
    "tcp_ack_established",
    "tcp_fin_rst",
    "udp",
    "vlan_client",
    "reply_tcp",
    "reply_udp",
    "icmp_to_vip_whole",
    "icmp_to_vip_548",
    "icmp_to_vip_8",
    "icmp_from_backend",
    "icmp6_from_router",
    "echo_request",
    "fragment_first",
    "fragment_later",
    "no_vip",
    "arp",
];

/// A uniform pick below `n`.
pub fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, from: &[T]) -> T {
    from[below(rng, from.len())]
}

fn services_of(model: &Model, proto: u8) -> Vec<usize> {
    (0..model.services.len())
        .filter(|&i| model.services[i].1.key.proto == proto && model.services[i].0 != "frag_udp4")
        .collect()
}

/// The client the seeds give an address's traffic.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        ISSUE18_VIP => ISSUE18_CLIENT,
        IpAddr::V4(a) if a.octets()[..2] == [10, 77] => ISSUE18_CLIENT,
        IpAddr::V4(_) => CLIENT4,
        IpAddr::V6(_) => CLIENT6,
    }
}

fn client_port(rng: &mut ChaCha8Rng, established: bool) -> u16 {
    if established {
        ESTABLISHED_PORTS.start + below(rng, ESTABLISHED_PORTS.len()) as u16
    } else {
        1024 + below(rng, 60000) as u16
    }
}

fn payload(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let mut p = vec![0u8; below(rng, max + 1)];
    rng.fill_bytes(&mut p);
    p
}

/// A client's frame to service `i` with transport header `l4`. A quarter of those to a
/// direct server return VIP are large, about its tunnel MTU (some fit once encapsulated, some
/// get the ICMP error).
fn to_service(model: &Model, i: usize, l4: L4, rng: &mut ChaCha8Rng) -> Frame {
    let vip = model.vip_ip(&model.services[i].1);
    let mut f = from_client(client_of(vip), vip, l4);
    f.payload = if model.is_dsr(i) && below(rng, 4) == 0 {
        let mut p = vec![0u8; DSR_MTU as usize - 160 + below(rng, 160)];
        rng.fill_bytes(&mut p);
        p
    } else {
        payload(rng, 64)
    };
    f
}

/// `frame` (a TCP segment) with an MSS option of `mss` after its header, every length and
/// checksum fixed: what a client's SYN carries.
fn with_mss_option(mut frame: Vec<u8>, mss: u16) -> Vec<u8> {
    let Some(ip) = wire::outer(&frame) else { return frame };
    let at = ip.l4() + 20;
    let m = mss.to_be_bytes();
    frame.splice(at..at, [2, 4, m[0], m[1]]);
    frame[ip.l4() + 12] = 6 << 4;
    let len_at = if ip.v4 { ip.l3 + 2 } else { ip.l3 + 4 };
    let len = wire::be16(&frame, len_at) + 4;
    frame[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    wire::fix_checksums(&mut frame);
    frame
}

/// The packet the load balancer sent for service `i` to the client (VIP → client), `len`
/// bytes of payload: what an error to the VIP quotes.
fn sent_by_vip(model: &Model, i: usize, cport: u16, len: usize) -> Frame {
    let svc = &model.services[i].1;
    let vip = model.vip_ip(svc);
    let l4 = if svc.key.proto == PROTO_TCP { tcp(svc.key.port, cport, ACK) } else { udp(svc.key.port, cport) };
    Frame { dst_mac: CLIENT_MAC, src_mac: LB_MAC, vlan: None, src: vip, dst: client_of(vip), l4, payload: vec![0x5a; len] }
}

/// An ICMP error from `src` to `dst` quoting `quoted` (cut to `cut` bytes): "fragmentation
/// needed" / "packet too big", or a time-exceeded.
fn error(src: IpAddr, dst: IpAddr, quoted: &Frame, cut: Option<usize>, rng: &mut ChaCha8Rng) -> IcmpFrame {
    let (icmp_type, code, rest) = match (src.is_ipv4(), below(rng, 3)) {
        (true, 0 | 1) => (3, 4, next_hop_mtu(1400)),
        (true, _) => (11, 0, [0; 4]),
        (false, 0 | 1) => (2, 0, mtu32(1280)),
        (false, _) => (3, 0, [0; 4]),
    };
    IcmpFrame { dst_mac: LB_MAC, src_mac: CLIENT_MAC, src, dst, icmp_type, code, rest, body: quote(quoted, cut) }
}


/// Seed frame of kind `kind` (an index of [`KINDS`]); half of the IPv4 ones get a random
/// identification and TTL (their header checksum recomputed), so that checksum updates meet
/// many header sums.
pub fn build(model: &Model, kind: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut f = path_frame(model, kind, rng);
    if below(rng, 2) == 0
        && let Some(ip) = wire::outer(&f).filter(|ip| ip.v4 && ip.l3 + 20 <= f.len())
    {
        let ident = rng.next_u32() as u16;
        f[ip.l3 + 4..ip.l3 + 6].copy_from_slice(&ident.to_be_bytes());
        f[ip.l3 + 8] = 1 + below(rng, 255) as u8;
        wire::fix_ipv4_checksum(&mut f, ip.l3);
    }
    f
}

/// The frame of seed kind `kind`, as its builder makes it.
fn path_frame(model: &Model, kind: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let tcp_svcs = services_of(model, PROTO_TCP);
    let udp_svcs = services_of(model, PROTO_UDP);
    match KINDS[kind] {
        "tcp_syn" => {
            let i = pick(rng, &tcp_svcs);
            let established = below(rng, 4) == 0;
            let port = client_port(rng, established);
            let syn = to_service(model, i, tcp(port, model.services[i].1.key.port, SYN), rng).bytes();
            if model.is_dsr(i) && below(rng, 2) == 0 { with_mss_option(syn, pick(rng, &[536, 1400, 1460, 8960])) } else { syn }
        }
        "tcp_ack_established" => {
            let i = pick(rng, &tcp_svcs);
            let established = below(rng, 8) != 0;
            let port = client_port(rng, established);
            to_service(model, i, tcp(port, model.services[i].1.key.port, pick(rng, &[ACK, ACK | 0x08])), rng).bytes()
        }
        "tcp_fin_rst" => {
            let i = pick(rng, &tcp_svcs);
            let port = client_port(rng, true);
            to_service(model, i, tcp(port, model.services[i].1.key.port, pick(rng, &[ACK | 0x01, 0x04, ACK | 0x04])), rng).bytes()
        }
        "udp" => {
            let i = pick(rng, &udp_svcs);
            let established = below(rng, 2) == 0;
            let port = client_port(rng, established);
            to_service(model, i, udp(port, model.services[i].1.key.port), rng).bytes()
        }
        "vlan_client" => {
            let i = pick(rng, &[tcp_svcs.as_slice(), udp_svcs.as_slice()].concat());
            let svc = &model.services[i].1;
            let port = client_port(rng, true);
            let l4 = if svc.key.proto == PROTO_TCP { tcp(port, svc.key.port, pick(rng, &[SYN, ACK])) } else { udp(port, svc.key.port) };
            let mut f = to_service(model, i, l4, rng);
            f.vlan = Some(1 + below(rng, 4094) as u16);
            f.bytes()
        }
        "reply_tcp" | "reply_udp" => {
            let i = pick(rng, if KINDS[kind] == "reply_tcp" { &tcp_svcs } else { &udp_svcs });
            let svc = &model.services[i].1;
            let (bip, bport) = pick(rng, &model.backends(i));
            let id = svc.backends[0].id;
            let cport = client_port(rng, true);
            let l4 = if svc.key.proto == PROTO_TCP { tcp(bport, cport, pick(rng, &[SYN_ACK, ACK, ACK | 0x01])) } else { udp(bport, cport) };
            let vlan = (below(rng, 4) == 0).then(|| 1 + below(rng, 4094) as u16);
            Frame { dst_mac: LB_MAC, src_mac: backend_mac(id), vlan, src: bip, dst: client_of(bip), l4, payload: payload(rng, 64) }.bytes()
        }
        "icmp_to_vip_whole" | "icmp_to_vip_548" | "icmp_to_vip_8" => {
            let i = pick(rng, &[tcp_svcs.as_slice(), udp_svcs.as_slice()].concat());
            let sent = sent_by_vip(model, i, client_port(rng, true), if KINDS[kind] == "icmp_to_vip_548" { 700 } else { below(rng, 100) });
            let hdr = if sent.src.is_ipv4() { 20 } else { 40 };
            let cut = match KINDS[kind] {
                "icmp_to_vip_548" => Some(548),
                "icmp_to_vip_8" => Some(hdr + 8),
                _ => None,
            };
            let src = if sent.src.is_ipv4() && below(rng, 2) == 0 { ROUTER4 } else { sent.dst };
            error(src, sent.src, &sent, cut, rng).bytes()
        }
        "icmp_from_backend" | "icmp6_from_router" => {
            let six = KINDS[kind] == "icmp6_from_router";
            let pool: Vec<usize> = [tcp_svcs.as_slice(), udp_svcs.as_slice()]
                .concat()
                .into_iter()
                .filter(|&i| !six || !model.vip_ip(&model.services[i].1).is_ipv4())
                .collect();
            let i = pick(rng, &pool);
            let svc = &model.services[i].1;
            let (bip, bport) = pick(rng, &model.backends(i));
            let client = client_of(bip);
            let cport = client_port(rng, true);
            let l4 = if svc.key.proto == PROTO_TCP { tcp(cport, bport, ACK) } else { udp(cport, bport) };
            let received = Frame { dst_mac: LB_MAC, src_mac: CLIENT_MAC, vlan: None, src: client, dst: bip, l4, payload: payload(rng, 64) };
            let cut = pick(rng, &[None, Some(if bip.is_ipv4() { 28 } else { 48 })]);
            let src = if six { ROUTER6 } else { bip };
            error(src, client, &received, cut, rng).bytes()
        }
        "echo_request" => {
            let (src, dst, t) = pick(rng, &[(CLIENT4, VIP4, 8u8), (CLIENT6, VIP6, 128u8)]);
            IcmpFrame { dst_mac: LB_MAC, src_mac: CLIENT_MAC, src, dst, icmp_type: t, code: 0, rest: [0, 1, 0, 1], body: payload(rng, 56) }.bytes()
        }
        "fragment_first" | "fragment_later" => {
            let mut dgram = from_client(CLIENT4, FRAG_VIP, udp(client_port(rng, false), 53));
            dgram.payload = vec![0xa5; 64 + below(rng, 200)];
            {
                let (first, later) = ipv4_fragments(&dgram.bytes(), 8 * (1 + below(rng, 8)));
                if KINDS[kind] == "fragment_first" { first } else { later }
            }
        }
        "no_vip" => {
            let dst = pick(
                rng,
                &[IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9)), VIP4, VIP6],
            );
            let l4 = if below(rng, 2) == 0 { tcp(client_port(rng, false), 8999, SYN) } else { udp(client_port(rng, false), 8999) };
            let mut f = from_client(client_of(dst), dst, l4);
            f.payload = payload(rng, 32);
            f.bytes()
        }
        "arp" => {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&CLIENT_MAC);
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&CLIENT_MAC);
            f.extend_from_slice(&[192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
            f
        }
        other => unreachable!("seed kind {other}"),
    }
}

