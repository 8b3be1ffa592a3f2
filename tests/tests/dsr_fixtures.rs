//! Kernel fixtures of direct server return (`lb-ebpf/src/dsr.rs`, `too_big.rs`, `mss.rs`): the
//! real program through BPF_PROG_TEST_RUN. Every expected frame is built here from scratch
//! (outer headers by `lb_tests::packet::ip_header`, checksums by `lb_tests::packet::checksum`),
//! never by `lb_common`. Needs root.

use std::net::IpAddr;

use lb_common::{
    counters::Reason,
    encap::{DEFAULT_GUE_PORT, FORWARD_DIRECT, FORWARD_GUE, FORWARD_TUNNEL, TUNNEL_FLAG_MSS_CLAMP},
    maps::{BackendKey, PROTO_TCP, PROTO_UDP, VIP_FLAG_HASH_SRC_ONLY},
};
use lb_tests::{
    fixture::{NODE4, NODE6, dsr, setup, v4, v6, with_flags},
    harness::{ACK, CLIENT4, CLIENT6, CLIENT_MAC, LB_MAC, SYN, VIP4, VIP6, XDP_DROP, XDP_PASS, XDP_TX, addr, backend_mac, flow_key, from_client, service, tcp, udp},
    icmp_frames::{IcmpFrame, mtu32, next_hop_mtu, verify_icmp_checksums},
    packet::{Frame, IpFields, checksum, ip_header, ipv4_fragments, pseudo_header},
};
use lb_userspace::{agent::explain::encapsulation, dataplane::Service};

fn node4() -> IpAddr {
    NODE4
}
fn node6() -> IpAddr {
    NODE6
}

/// A service of `vip`:80 over `proto` with `backends` (slots from 1) in mode `forwarding`
/// with a tunnel MTU of `mtu`.
fn dsr_service(vip: IpAddr, proto: u8, backends: &[IpAddr], forwarding: u8, mtu: u16) -> Service {
    let pool: Vec<(IpAddr, u16, u32)> = backends.iter().map(|&b| (b, 80, 1)).collect();
    dsr(service(1, vip, 80, proto, 1, &pool), forwarding, mtu)
}

/// The IP packet of a frame (after its Ethernet header).
fn ip_packet(frame: &[u8]) -> Vec<u8> {
    frame[14..].to_vec()
}

/// What the program should send for client frame `inner` to backend `id` at `backend`: the
/// client's IP packet unchanged behind an outer header from `src` (with `tos` and `ttl`,
/// identification 0, DF), in UDP from `gue_sport` to the GUE port when given, from the load
/// balancer's MAC to the backend's.
fn carried(inner: &[u8], id: u32, src: IpAddr, backend: IpAddr, gue_sport: Option<u16>, tos: u8, ttl: u8) -> Vec<u8> {
    let packet = ip_packet(inner);
    let inner_v6 = packet[0] >> 4 == 6;
    let (proto, payload) = match gue_sport {
        None => (if inner_v6 { 41 } else { 4 }, packet.clone()),
        Some(sport) => {
            let mut u = Vec::new();
            u.extend_from_slice(&sport.to_be_bytes());
            u.extend_from_slice(&DEFAULT_GUE_PORT.to_be_bytes());
            u.extend_from_slice(&((8 + packet.len()) as u16).to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(&packet);
            (17, u)
        }
    };
    let mut f = Vec::new();
    f.extend_from_slice(&backend_mac(id));
    f.extend_from_slice(&LB_MAC);
    let mut header = ip_header(src, backend, proto, payload.len(), IpFields { tos, ident: 0, dont_fragment: true });
    if src.is_ipv4() {
        header[2 + 8] = ttl;
        header[2 + 10..2 + 12].copy_from_slice(&[0, 0]);
        let c = checksum(0, &header[2..22]);
        header[2 + 10..2 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        header[2] = 0x60 | (tos >> 4);
        header[3] = tos << 4;
        header[2 + 7] = ttl;
    }
    f.extend_from_slice(&header);
    f.extend_from_slice(&payload);
    f
}

/// The GUE source port of a carried frame with an outer header of `outer_v6`.
fn gue_sport(out: &[u8], outer_v6: bool) -> u16 {
    let at = 14 + if outer_v6 { 40 } else { 20 };
    u16::from_be_bytes([out[at], out[at + 1]])
}

/// One mode, family and pool: the packets of a new flow (SYN) and of the same flow once
/// established (ACK, then data) go to one backend, carried unchanged.
fn carries_flows(vip: IpAddr, client: IpAddr, backends: &[IpAddr], forwarding: u8) {
    let svc = dsr_service(vip, PROTO_TCP, backends, forwarding, 0);
    let lb = setup(&[&svc]);
    let syn = from_client(client, vip, tcp(40_000, 80, SYN));
    let key = flow_key(&syn);
    let chosen = lb.ring_choice(&svc, &key);
    let backend = backends[chosen as usize - 1];
    let outer_v6 = backend.is_ipv6();
    let node = if outer_v6 { node6() } else { node4() };
    let mut sport = None;
    for (i, frame) in [syn.clone(), with_flags(&syn, ACK), Frame { payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(), ..with_flags(&syn, ACK) }].iter().enumerate() {
        let bytes = frame.bytes();
        let run = lb.run(&bytes);
        let what = format!("mode {forwarding} {vip} over {backend}, packet {i}");
        assert_eq!(run.action, XDP_TX, "{what}");
        assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)], "{what}");
        let expected = match forwarding {
            FORWARD_DIRECT => {
                let mut e = bytes.clone();
                e[..6].copy_from_slice(&backend_mac(chosen));
                e[6..12].copy_from_slice(&LB_MAC);
                e
            }
            FORWARD_GUE => {
                let port = gue_sport(&run.out, outer_v6);
                assert!(port >= 49152, "{what}: GUE source port {port} is in the dynamic range");
                assert_eq!(*sport.get_or_insert(port), port, "{what}: one flow, one GUE source port");
                carried(&bytes, chosen, node, backend, Some(port), 0, 64)
            }
            _ => carried(&bytes, chosen, node, backend, None, 0, 64),
        };
        assert_eq!(run.out, expected, "{what}");
    }
    // Stable backends: nothing recorded, as in NAT mode.
    assert_eq!(lb.dp.maps.conn(&key).unwrap(), None);
    // `lb explain` names what the packets got.
    let b = lb.dp.maps.backend(chosen).unwrap();
    let told = encapsulation(&b, &key, lb.dp.sizing().hash_seed).expect("a DSR backend");
    let want = match forwarding {
        FORWARD_DIRECT => format!("direct: unchanged, to MAC {}", backend_mac(chosen).map(|b| format!("{b:02x}")).join(":")),
        FORWARD_GUE => format!("from {node} to {backend}, in UDP from port {} to port {DEFAULT_GUE_PORT}", sport.unwrap()),
        _ => format!("tunnel: {}-in-{} from {node} to {backend}", fam(vip), fam(backend)),
    };
    assert!(told.ends_with(&want), "{told:?} vs {want:?}");
    if forwarding == FORWARD_GUE {
        // Other flows get other source ports (RSS on the backend spreads them).
        let ports: std::collections::HashSet<u16> = (0..16u16)
            .map(|i| {
                let f = from_client(client, vip, tcp(41_000 + i, 80, SYN));
                let out = lb.run(&f.bytes()).out;
                let b = backends[sent_to(&out) as usize - 1];
                gue_sport(&out, b.is_ipv6())
            })
            .collect();
        assert!(ports.len() > 8, "{ports:?}");
    }
}

/// "IPv4" or "IPv6".
fn fam(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// The backend slot a frame was sent to (by its destination MAC).
fn sent_to(out: &[u8]) -> u32 {
    u16::from_be_bytes([out[4], out[5]]) as u32
}

#[test]
fn ipip_ipv6_in_ipv6_and_ipv4_in_ipv6_carry_new_and_established_flows_unchanged() {
    carries_flows(VIP4, CLIENT4, &[v4(1), v4(2), v4(3)], FORWARD_TUNNEL);
    carries_flows(VIP6, CLIENT6, &[v6(1), v6(2), v6(3)], FORWARD_TUNNEL);
    carries_flows(VIP4, CLIENT4, &[v6(1), v6(2), v6(3)], FORWARD_TUNNEL);
}

#[test]
fn gue_carries_new_and_established_flows_with_the_source_port_from_the_flow() {
    carries_flows(VIP4, CLIENT4, &[v4(1), v4(2), v4(3)], FORWARD_GUE);
    carries_flows(VIP6, CLIENT6, &[v6(1), v6(2), v6(3)], FORWARD_GUE);
    carries_flows(VIP4, CLIENT4, &[v6(1), v6(2)], FORWARD_GUE);
}

#[test]
fn direct_mode_only_rewrites_the_destination_mac() {
    carries_flows(VIP4, CLIENT4, &[v4(1), v4(2), v4(3)], FORWARD_DIRECT);
    carries_flows(VIP6, CLIENT6, &[v6(1), v6(2), v6(3)], FORWARD_DIRECT);
}

#[test]
fn the_outer_source_comes_from_the_prefix_by_the_flow_hash() {
    let mut svc = dsr_service(VIP4, PROTO_TCP, &[v4(1)], FORWARD_TUNNEL, 0);
    svc.backends[0].backend.tunnel.src = addr("10.9.8.0".parse().unwrap());
    svc.backends[0].backend.tunnel.src_host_bits = 4;
    let lb = setup(&[&svc]);
    let mut sources = std::collections::HashSet::new();
    for port in 40_000..40_032u16 {
        let f = from_client(CLIENT4, VIP4, tcp(port, 80, SYN)).bytes();
        let out = lb.run(&f).out;
        let src: [u8; 4] = out[26..30].try_into().unwrap();
        assert_eq!(&src[..3], &[10, 9, 8], "in the prefix");
        assert!(src[3] < 16, "4 host bits: {src:?}");
        assert_eq!(out, carried(&f, 1, IpAddr::from(src), v4(1), None, 0, 64));
        assert_eq!(lb.run(&f).out[26..30], src, "the same flow, the same source");
        sources.insert(src);
    }
    assert!(sources.len() > 8, "flows spread over the prefix: {sources:?}");
}

/// `frame` (untagged) with the TOS / traffic class `tos` and TTL / hop limit `ttl`.
fn with_tos_ttl(frame: &[u8], tos: u8, ttl: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    if f[14] >> 4 == 4 {
        f[15] = tos;
        f[22] = ttl;
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(0, &f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    } else {
        f[14] = 0x60 | (tos >> 4);
        f[15] = (tos << 4) | (f[15] & 0x0F);
        f[21] = ttl;
    }
    f
}

#[test]
fn ttl_and_dscp_ecn_are_copied_to_the_outer_header() {
    for (vip, client, backend) in [(VIP4, CLIENT4, v4(1)), (VIP6, CLIENT6, v6(1)), (VIP4, CLIENT4, v6(1))] {
        let svc = dsr_service(vip, PROTO_UDP, &[backend], FORWARD_TUNNEL, 0);
        let lb = setup(&[&svc]);
        // DSCP 46 (expedited forwarding), ECN 01.
        let f = with_tos_ttl(&from_client(client, vip, udp(5000, 80)).bytes(), 0xb9, 17);
        let run = lb.run(&f);
        assert_eq!(run.action, XDP_TX);
        let node = if backend.is_ipv4() { node4() } else { node6() };
        assert_eq!(run.out, carried(&f, 1, node, backend, None, 0xb9, 17), "{vip} over {backend}");
    }
}

/// An ICMP "fragmentation needed" (IPv4) or ICMPv6 "packet too big" from `src` to `dst`
/// carrying `mtu` and quoting `quoted`.
fn too_big_error(dst_mac: [u8; 6], src_mac: [u8; 6], src: IpAddr, dst: IpAddr, mtu: u16, quoted: Vec<u8>) -> IcmpFrame {
    IcmpFrame {
        dst_mac,
        src_mac,
        src,
        dst,
        icmp_type: if src.is_ipv4() { 3 } else { 2 },
        code: if src.is_ipv4() { 4 } else { 0 },
        rest: if src.is_ipv4() { next_hop_mtu(mtu) } else { mtu32(mtu.into()) },
        body: quoted,
    }
}

/// A TCP SYN from the client to `vip` of `len` bytes of IP packet, DF set.
fn big(client: IpAddr, vip: IpAddr, len: usize) -> Frame {
    let header = if vip.is_ipv4() { 20 } else { 40 } + 20;
    Frame { payload: vec![0x5a; len - header], ..from_client(client, vip, tcp(40_000, 80, SYN)) }
}

#[test]
fn oversized_packets_get_fragmentation_needed_or_packet_too_big_with_the_room_left() {
    // Egress MTU 1500: IPv4-in-IPv4 leaves 1480, IPv6-in-IPv6 1460, GUE over IPv4 1472.
    for (vip, client, backend, forwarding, room) in [
        (VIP4, CLIENT4, v4(1), FORWARD_TUNNEL, 1480u16),
        (VIP6, CLIENT6, v6(1), FORWARD_TUNNEL, 1460),
        (VIP4, CLIENT4, v4(1), FORWARD_GUE, 1472),
    ] {
        let svc = dsr_service(vip, PROTO_TCP, &[backend], forwarding, 1500);
        let lb = setup(&[&svc]);
        // The largest packet that fits is carried.
        let fits = big(client, vip, room as usize).bytes();
        let run = lb.run(&fits);
        assert_eq!((run.action, run.counted.clone()), (XDP_TX, vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)]), "{vip} {room}");
        assert_eq!(run.out.len(), fits.len() + 1500 - room as usize);
        // One byte more is answered from the VIP, back to the client's MAC.
        let over = big(client, vip, room as usize + 1);
        let run = lb.run(&over.bytes());
        assert_eq!((run.action, run.counted.clone()), (XDP_TX, vec![(Reason::IcmpTooBig, 1), (Reason::Stateless, 1)]), "{vip} {room}");
        let quoted = ip_packet(&over.bytes())[..if vip.is_ipv4() { 28 } else { 48 }].to_vec();
        let expected = too_big_error(CLIENT_MAC, LB_MAC, vip, client, room, quoted);
        let mut want = expected.bytes();
        if vip.is_ipv4() {
            // The error's own header: TOS 0, identification 0, DF, TTL 64 (checksum recomputed).
            want[15] = 0;
            want[18..20].copy_from_slice(&[0, 0]);
            want[20] = 0x40;
            want[24..26].copy_from_slice(&[0, 0]);
            let c = checksum(0, &want[14..34]);
            want[24..26].copy_from_slice(&c.to_be_bytes());
        }
        assert_eq!(run.out, want, "{vip} {room}");
        verify_icmp_checksums(&run.out).expect("the error's checksums");
    }
}

#[test]
fn oversized_ipv4_without_df_and_errors_over_the_budget_are_dropped() {
    let svc = dsr_service(VIP4, PROTO_TCP, &[v4(1)], FORWARD_TUNNEL, 1500);
    let lb = setup(&[&svc]);
    let mut no_df = big(CLIENT4, VIP4, 1481).bytes();
    no_df[20] = 0;
    no_df[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(0, &no_df[14..34]);
    no_df[24..26].copy_from_slice(&c.to_be_bytes());
    let run = lb.run(&no_df);
    assert_eq!((run.action, run.counted), (XDP_DROP, vec![(Reason::DropTooBig, 1), (Reason::Stateless, 1)]));
    // At most TOO_BIG_PER_CPU_PER_SEC errors a second (test runs stay on one CPU).
    let over = big(CLIENT4, VIP4, 1481).bytes();
    let started = std::time::Instant::now();
    let (mut sent, mut dropped) = (0u64, 0u64);
    for _ in 0..300 {
        match lb.run(&over).action {
            XDP_TX => sent += 1,
            XDP_DROP => dropped += 1,
            other => panic!("verdict {other}"),
        }
    }
    let seconds = started.elapsed().as_secs() + 2;
    let limit = lb_common::limits::TOO_BIG_PER_CPU_PER_SEC;
    assert!(dropped > 0 && sent <= limit * seconds, "sent {sent}, dropped {dropped} in under {seconds} s");
}

/// A SYN to `vip` whose TCP header carries the options `options` (a multiple of 4 bytes).
fn syn_with_options(client: IpAddr, vip: IpAddr, options: &[u8]) -> Vec<u8> {
    let mut f = from_client(client, vip, tcp(40_000, 80, SYN));
    f.payload.clear();
    let plain = f.bytes();
    let l4 = if vip.is_ipv4() { 34 } else { 54 };
    let mut seg = plain[l4..].to_vec();
    seg.extend_from_slice(options);
    seg[12] = (((20 + options.len()) / 4) << 4) as u8;
    seg[16..18].copy_from_slice(&[0, 0]);
    let c = checksum(pseudo_header(client, vip, 6, seg.len()), &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    let mut out = plain[..12].to_vec();
    out.extend_from_slice(&ip_header(client, vip, 6, seg.len(), IpFields { tos: 0, ident: 0x1c46, dont_fragment: true }));
    out.extend_from_slice(&seg);
    out
}

#[test]
fn the_mss_of_a_syn_is_clamped_to_fit_the_tunnel() {
    // Linux's SYN options: MSS 1460 (8960 for IPv6 jumbo), SACK permitted, timestamps, NOP,
    // window scale.
    let opts = |mss: u16| {
        let m = mss.to_be_bytes();
        vec![2, 4, m[0], m[1], 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]
    };
    for (vip, client, backend, mss, want) in [(VIP4, CLIENT4, v4(1), 1460u16, 1440u16), (VIP6, CLIENT6, v6(1), 8960, 1400), (VIP4, CLIENT4, v6(1), 1460, 1420)] {
        let mut svc = dsr_service(vip, PROTO_TCP, &[backend], FORWARD_TUNNEL, 1500);
        svc.backends[0].backend.tunnel.flags = TUNNEL_FLAG_MSS_CLAMP;
        let lb = setup(&[&svc]);
        let syn = syn_with_options(client, vip, &opts(mss));
        let run = lb.run(&syn);
        assert_eq!(run.action, XDP_TX);
        assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::MssClamped, 1), (Reason::Stateless, 1)], "{vip} over {backend}");
        let node = if backend.is_ipv4() { node4() } else { node6() };
        let clamped = syn_with_options(client, vip, &opts(want));
        assert_eq!(run.out, carried(&clamped, 1, node, backend, None, 0, 64), "{vip} over {backend}: MSS {want}, checksum recomputed");
        // An MSS that already fits, and a SYN without options, are left alone.
        let small = syn_with_options(client, vip, &opts(1200));
        let run = lb.run(&small);
        assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)]);
        assert_eq!(run.out, carried(&small, 1, node, backend, None, 0, 64));
    }
    // Without the flag nothing is clamped.
    let svc = dsr_service(VIP4, PROTO_TCP, &[v4(1)], FORWARD_TUNNEL, 1500);
    let lb = setup(&[&svc]);
    let syn = syn_with_options(CLIENT4, VIP4, &opts(1460));
    assert_eq!(lb.run(&syn).out, carried(&syn, 1, node4(), v4(1), None, 0, 64));
}

#[test]
fn fragments_to_a_dsr_vip_are_carried_to_the_sources_backend() {
    let mut svc = dsr_service(VIP4, PROTO_UDP, &[v4(1), v4(2), v4(3)], FORWARD_TUNNEL, 0);
    svc.flags = VIP_FLAG_HASH_SRC_ONLY;
    let lb = setup(&[&svc]);
    let datagram = Frame { payload: vec![7; 64], ..from_client(CLIENT4, VIP4, udp(5000, 80)) };
    let chosen = lb.ring_choice(&svc, &flow_key(&datagram));
    let (first, second) = ipv4_fragments(&datagram.bytes(), 32);
    for f in [first, second] {
        let run = lb.run(&f);
        assert_eq!((run.action, run.counted), (XDP_TX, vec![(Reason::ForwardToBackend, 1)]));
        assert_eq!(run.out, carried(&f, chosen, node4(), v4(chosen as u8), None, 0, 64));
    }
}

#[test]
fn an_icmp_error_about_a_dsr_vips_reply_reaches_the_flows_backend_unchanged() {
    for (vip, client, router, backends) in [
        (VIP4, CLIENT4, "192.0.2.254".parse::<IpAddr>().unwrap(), [v4(1), v4(2), v4(3)]),
        (VIP6, CLIENT6, "2001:db8:c::fe".parse().unwrap(), [v6(1), v6(2), v6(3)]),
    ] {
        let svc = dsr_service(vip, PROTO_TCP, &backends, FORWARD_TUNNEL, 0);
        let lb = setup(&[&svc]);
        let flow = from_client(client, vip, tcp(40_000, 80, SYN));
        let chosen = lb.ring_choice(&svc, &flow_key(&flow));
        // The backend's reply (from the VIP) met a router that sends the VIP an error about it.
        let reply = Frame { src: vip, dst: client, l4: tcp(80, 40_000, ACK), payload: vec![1; 100], ..flow.clone() };
        let quoted = ip_packet(&reply.bytes())[..if vip.is_ipv4() { 28 } else { 48 }].to_vec();
        let error = too_big_error(LB_MAC, CLIENT_MAC, router, vip, 1400, quoted).bytes();
        let run = lb.run(&error);
        assert_eq!((run.action, run.counted.clone()), (XDP_TX, vec![(Reason::IcmpToBackend, 1)]), "{vip}");
        let node = if vip.is_ipv4() { node4() } else { node6() };
        // The outer header copies the error's TOS (Linux's 0xc0, IPv4 only here).
        let tos = if vip.is_ipv4() { 0xc0 } else { 0 };
        assert_eq!(run.out, carried(&error, chosen, node, backends[chosen as usize - 1], None, tos, 64), "{vip}");
    }
}

#[test]
fn a_backend_without_a_resolved_hop_or_outer_source_is_dropped_and_counted() {
    let syn = from_client(CLIENT4, VIP4, tcp(40_000, 80, SYN)).bytes();
    let mut no_hop = dsr_service(VIP4, PROTO_TCP, &[v4(1)], FORWARD_TUNNEL, 0);
    no_hop.backends[0].backend.hop.dst_mac = [0; 6];
    let mut no_source = dsr_service(VIP4, PROTO_TCP, &[v4(1)], FORWARD_GUE, 0);
    no_source.backends[0].backend.tunnel.src = [0; 16];
    let mut direct = dsr_service(VIP4, PROTO_TCP, &[v4(1)], FORWARD_DIRECT, 0);
    direct.backends[0].backend.hop.dst_mac = [0; 6];
    for svc in [no_hop, no_source, direct] {
        let lb = setup(&[&svc]);
        let run = lb.run(&syn);
        assert_eq!((run.action, run.counted), (XDP_DROP, vec![(Reason::DropDsrNoPath, 1), (Reason::Stateless, 1)]));
    }
}

#[test]
fn dsr_backends_have_no_reply_translation() {
    let svc = dsr_service(VIP4, PROTO_TCP, &[v4(1)], FORWARD_TUNNEL, 0);
    let lb = setup(&[&svc]);
    let key = BackendKey { addr: addr(v4(1)), port: 80, proto: PROTO_TCP, family: 4 };
    assert_eq!(lb.dp.maps.reply_target(&key).unwrap(), None);
    // A packet from the backend's endpoint is not taken for a reply.
    let from_backend = Frame { src: v4(1), dst: CLIENT4, l4: tcp(80, 40_000, ACK), ..from_client(CLIENT4, VIP4, tcp(0, 0, 0)) };
    let run = lb.run(&from_backend.bytes());
    assert_eq!((run.action, run.counted), (XDP_PASS, vec![(Reason::PassNotVip, 1)]));
    assert_eq!(run.out, from_backend.bytes());
}
