//! ICMP and ICMPv6 errors through the real XDP program in the kernel (BPF_PROG_TEST_RUN).
//!
//! - An error addressed to a VIP that quotes a reply the load balancer sent (VIP → client)
//!   goes to that flow's backend, its outer destination and the quoted source rewritten to
//!   the backend.
//! - An error a backend sends about a client's packet (client → backend) goes to the client,
//!   its outer source and the quoted destination rewritten to the VIP.
//! - Anything else with an ICMP header passes untouched.
//!
//! Every expected frame is built from scratch (`lb_tests::packet` for the quoted packet,
//! `lb_tests::icmp_frames` for the ICMP wrapper; checksums by RFC 1071, never by the data
//! path's incremental code) and compared whole; every checksum of every output, the quoted
//! ones included, is also checked on its own. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{counters::Reason, maps::*};
use lb_tests::{
    fixture::*,
    harness::*,
    icmp_frames::{Checked, IcmpFrame, PROTO_ICMP, PROTO_ICMPV6, mtu32, next_hop_mtu, quote, verify_icmp_checksums},
    packet::*,
};
use lb_userspace::dataplane::Service;

/// A router on the client side that sends errors about the load balancer's replies.
const ROUTER4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const ROUTER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1));

/// An IP packet (the MACs do not matter: only its IP packet is quoted).
fn ip_packet(src: IpAddr, dst: IpAddr, l4: L4, payload: &[u8]) -> Frame {
    Frame { dst_mac: CLIENT_MAC, src_mac: LB_MAC, vlan: None, src, dst, l4, payload: payload.to_vec() }
}

/// `f` with its source rewritten to `ip`:`port`.
fn with_source(f: &Frame, ip: IpAddr, port: u16) -> Frame {
    let mut f = f.clone();
    f.src = ip;
    match &mut f.l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
    }
    f
}

/// `f` with its destination rewritten to `ip`:`port`.
fn with_destination(f: &Frame, ip: IpAddr, port: u16) -> Frame {
    to_endpoint(f, ip, port, f.dst_mac, f.src_mac)
}

/// A payload of `n` bytes that is not all zeroes.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// An ICMP(v6) error arriving at the load balancer from the client side.
fn error_from_client_side(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, rest: [u8; 4], body: Vec<u8>) -> IcmpFrame {
    IcmpFrame { dst_mac: LB_MAC, src_mac: CLIENT_MAC, src, dst, icmp_type, code, rest, body }
}

/// Panics with the offsets where `got` and `want` differ, unless they are equal.
fn assert_frame_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let diffs: Vec<String> = (0..got.len().max(want.len()))
        .filter(|&i| got.get(i) != want.get(i))
        .take(24)
        .map(|i| format!("[{i}] got {:02x?} want {:02x?}", got.get(i), want.get(i)))
        .collect();
    panic!(
        "{what}: output differs from the expected frame (lengths {} / {}): {}\n got  {:02x?}\n want {:02x?}",
        got.len(),
        want.len(),
        diffs.join(", "),
        got,
        want
    );
}

/// Runs `input` and expects `expected`'s exact bytes with `action`, counted once under
/// `reason`, and every checksum of the output right (`whole`: the quoted TCP/UDP segment is
/// whole, so its checksum is checked on its own too).
fn expect_sent(lb: &Lb, input: &IcmpFrame, action: u32, expected: &IcmpFrame, reason: Reason, whole: bool, what: &str) {
    // The builder itself: the input's own checksums are right.
    verify_icmp_checksums(&input.bytes()).unwrap_or_else(|e| panic!("{what}: input built wrong: {e}"));
    let checked = expect_sent_with_trailer(lb, input, &[], action, expected, reason, what);
    assert_eq!(checked, Checked { quoted_ip_header: expected.is_v4(), quoted_transport: whole }, "{what}: checksums checked");
}

/// Runs `frame` and expects it passed to the kernel unchanged, counted once under `reason`.
fn expect_passed(lb: &Lb, frame: &[u8], reason: Reason, what: &str) {
    let run = lb.run(frame);
    assert_eq!(run.action, XDP_PASS, "{what}: verdict (counted {:?})", run.counted);
    assert_frame_eq(&run.out, frame, &format!("{what}: frame must be untouched"));
    assert_eq!(run.counted, vec![(reason, 1)], "{what}: counters");
}

/// Checks that `id`'s and `svc`'s traffic counters moved by one packet of `len` bytes and no
/// new flow since `before`.
fn expect_traffic(lb: &Lb, svc: &Service, id: u32, before: (Traffic, Traffic), len: usize) {
    let (b, v) = (lb.dp.maps.backend_traffic(id).unwrap(), lb.dp.maps.vip_traffic(svc.id).unwrap());
    let moved = |now: Traffic, was: Traffic| (now.packets - was.packets, now.bytes - was.bytes, now.new_flows - was.new_flows);
    assert_eq!(moved(b, before.0), (1, len as u64, 0), "backend {id} traffic");
    assert_eq!(moved(v, before.1), (1, len as u64, 0), "VIP {} traffic", svc.id);
}

fn traffic(lb: &Lb, svc: &Service, id: u32) -> (Traffic, Traffic) {
    (lb.dp.maps.backend_traffic(id).unwrap(), lb.dp.maps.vip_traffic(svc.id).unwrap())
}

/// What the load balancer makes of error `err` to a VIP about the translated reply `sent`
/// (quoted in `quote_len` bytes, all when `None`): the same error to backend `id`, about the
/// backend's own reply.
fn to_backend(err: &IcmpFrame, sent: &Frame, quote_len: Option<usize>, svc: &Service, id: u32) -> IcmpFrame {
    let (bip, bport) = backend_endpoint(svc, id);
    IcmpFrame {
        dst_mac: backend_mac(id),
        src_mac: LB_MAC,
        dst: bip,
        body: quote(&with_source(sent, bip, bport), quote_len),
        ..err.clone()
    }
}

/// An ICMPv4 "fragmentation needed" (MTU 1280) from [`ROUTER4`] to VIP4 about a 4-tuple's
/// reply, with its TCP segment quoted to `quote_len` bytes of IP packet; checks it reaches
/// the flow's backend `id` with exact bytes.
fn frag_needed_reaches_backend(lb: &Lb, svc: &Service, id: u32, sent: &Frame, quote_len: Option<usize>, whole: bool, what: &str) {
    let err = error_from_client_side(ROUTER4, VIP4, 3, 4, next_hop_mtu(1280), quote(sent, quote_len));
    let before = traffic(lb, svc, id);
    let expected = to_backend(&err, sent, quote_len, svc, id);
    expect_sent(lb, &err, XDP_TX, &expected, Reason::IcmpToBackend, whole, what);
    expect_traffic(lb, svc, id, before, err.bytes().len());
}

#[test]
fn ipv4_fragmentation_needed_to_a_vip_reaches_the_flows_backend() {
    let svc = pool4(PROTO_TCP);
    let lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(40000, 80, SYN));
    let id = establish(&lb, &svc, &flow);
    // The reply the load balancer sent the client (VIP4:80 → CLIENT4:40000), quoted whole:
    // header, 20-byte TCP header and its payload.
    let sent = ip_packet(VIP4, CLIENT4, tcp(80, 40000, ACK), &payload(24));
    frag_needed_reaches_backend(&lb, &svc, id, &sent, None, true, "IPv4 frag needed, whole segment quoted");
    assert_eq!(lb.dp.maps.conn(&flow_key(&flow)).unwrap(), None, "the error recorded nothing");
}

#[test]
fn ipv4_fragmentation_needed_quoting_576_bytes_of_a_large_segment() {
    // Linux quotes as much of the packet as fits a 576-byte error: 548 bytes of a 1420-byte
    // packet. The quoted TCP checksum (of the whole segment) is present but the segment is
    // not: the expected frame's comes from the backend's whole segment, built from scratch.
    let svc = pool4(PROTO_TCP);
    let lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(40002, 80, SYN));
    let id = establish(&lb, &svc, &flow);
    let sent = ip_packet(VIP4, CLIENT4, tcp(80, 40002, ACK), &payload(1380));
    frag_needed_reaches_backend(&lb, &svc, id, &sent, Some(576 - 20 - 8), false, "IPv4 frag needed, 548 bytes quoted");
}

#[test]
fn ipv4_fragmentation_needed_quoting_8_bytes_of_tcp_reaches_the_flows_backend() {
    // RFC 792's minimum: the IP header and the first 8 bytes of TCP (ports and sequence
    // number); the TCP checksum is not quoted, every other checksum is still updated.
    let svc = pool4(PROTO_TCP);
    let lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(40001, 80, SYN));
    let id = establish(&lb, &svc, &flow);
    let sent = ip_packet(VIP4, CLIENT4, tcp(80, 40001, ACK), &payload(1380));
    frag_needed_reaches_backend(&lb, &svc, id, &sent, Some(20 + 8), false, "IPv4 frag needed, 8 bytes of TCP quoted");
}

#[test]
fn ipv6_packet_too_big_to_a_vip_reaches_the_flows_backend() {
    let svc = pool6(PROTO_TCP);
    let lb = setup(&[&svc]);
    let flow = from_client(CLIENT6, VIP6, tcp(50000, 443, SYN));
    let id = establish(&lb, &svc, &flow);
    let sent = ip_packet(VIP6, CLIENT6, tcp(443, 50000, ACK), &payload(40));
    let err = error_from_client_side(ROUTER6, VIP6, 2, 0, mtu32(1280), quote(&sent, None));
    let before = traffic(&lb, &svc, id);
    let expected = to_backend(&err, &sent, None, &svc, id);
    expect_sent(&lb, &err, XDP_TX, &expected, Reason::IcmpToBackend, true, "ICMPv6 packet too big");
    expect_traffic(&lb, &svc, id, before, err.bytes().len());

    // A 1280-byte error quoting the start of a large segment (ICMPv6 quotes up to the
    // minimum MTU): the quoted checksum comes from the backend's whole segment.
    let big = ip_packet(VIP6, CLIENT6, tcp(443, 50000, ACK), &payload(1400));
    let len = Some(1280 - 40 - 8);
    let err = error_from_client_side(ROUTER6, VIP6, 2, 0, mtu32(1280), quote(&big, len));
    let expected = to_backend(&err, &big, len, &svc, id);
    expect_sent(&lb, &err, XDP_TX, &expected, Reason::IcmpToBackend, false, "ICMPv6 packet too big, 1232 bytes quoted");
}

#[test]
fn error_follows_the_entry_not_the_ring() {
    // Flows established, then the ring changes (new weights) while their backends stay up:
    // an error about a flow whose ring slot now holds another backend still goes to the
    // flow's own backend.
    let svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let flows: Vec<(Frame, u32)> = (0..40)
        .map(|i| {
            let f = from_client(CLIENT4, VIP4, tcp(45000 + i, 80, SYN));
            let id = establish(&lb, &svc, &f);
            (f, id)
        })
        .collect();
    let mut reweighted = svc.clone();
    for (b, w) in reweighted.backends.iter_mut().zip([1, 1, 20]) {
        b.weight = w;
    }
    lb.dp.maps.apply_service(&reweighted).unwrap();
    let (flow, id) = flows
        .iter()
        .find(|(f, id)| lb.ring_choice(&reweighted, &flow_key(f)) != *id)
        .expect("some flow's ring slot moved");
    let cport = match flow.l4 {
        L4::Tcp { sport, .. } => sport,
        L4::Udp { .. } => unreachable!(),
    };
    let sent = ip_packet(VIP4, CLIENT4, tcp(80, cport, ACK), &payload(10));
    frag_needed_reaches_backend(&lb, &reweighted, *id, &sent, None, true, "error of a flow whose slot moved");
}

#[test]
fn flow_without_entry_gets_the_rings_backend() {
    for v6 in [false, true] {
        let svc = if v6 { pool6(PROTO_TCP) } else { pool4(PROTO_TCP) };
        let (vip, vport, client, router) =
            if v6 { (VIP6, 443, CLIENT6, ROUTER6) } else { (VIP4, 80, CLIENT4, ROUTER4) };
        let lb = setup(&[&svc]);
        let mut chosen = std::collections::BTreeSet::new();
        for cport in 33000..33016u16 {
            // The flow the error belongs to: client:cport → VIP:vport, never seen here.
            let key = flow_key(&from_client(client, vip, tcp(cport, vport, SYN)));
            let id = lb.ring_choice(&svc, &key);
            chosen.insert(id);
            let sent = ip_packet(vip, client, tcp(vport, cport, ACK), &payload(12));
            let err = if v6 {
                error_from_client_side(router, vip, 2, 0, mtu32(1280), quote(&sent, None))
            } else {
                error_from_client_side(router, vip, 3, 4, next_hop_mtu(1280), quote(&sent, None))
            };
            let before = traffic(&lb, &svc, id);
            let expected = to_backend(&err, &sent, None, &svc, id);
            let what = format!("IPv{} error for untracked flow port {cport}", if v6 { 6 } else { 4 });
            expect_sent(&lb, &err, XDP_TX, &expected, Reason::IcmpToBackend, true, &what);
            expect_traffic(&lb, &svc, id, before, err.bytes().len());
            assert_eq!(lb.dp.maps.conn(&key).unwrap(), None, "{what}: no entry inserted");
            assert_eq!(lb.dp.maps.half_open(&key).unwrap(), None, "{what}: no half-open entry");
        }
        assert_eq!(lb.dp.maps.conn_count(), 0, "nothing tracked");
        assert!(chosen.len() > 1, "the flows must exercise several backends: {chosen:?}");
    }
}

/// What the load balancer makes of backend `id`'s error `err` about client packet `client`
/// (as the client sent it, to the VIP): the same error from the VIP, towards the client.
fn to_client(err: &IcmpFrame, client: &Frame, quote_len: Option<usize>) -> IcmpFrame {
    IcmpFrame { dst_mac: CLIENT_MAC, src_mac: LB_MAC, src: client.dst, body: quote(client, quote_len), ..err.clone() }
}

/// A backend's error (`icmp_type`/`code`/`rest`) about client packet `first` (to the VIP),
/// quoted as the backend received it; checks it reaches the client from the VIP.
#[expect(clippy::too_many_arguments, reason = "one case: the flow, the error and its quote")]
fn backend_error_reaches_client(
    lb: &Lb,
    svc: &Service,
    id: u32,
    first: &Frame,
    (icmp_type, code, rest): (u8, u8, [u8; 4]),
    quote_len: Option<usize>,
    whole: bool,
    what: &str,
) {
    let (bip, bport) = backend_endpoint(svc, id);
    let received = with_destination(first, bip, bport);
    let err = IcmpFrame {
        dst_mac: LB_MAC,
        src_mac: backend_mac(id),
        src: bip,
        dst: first.src,
        icmp_type,
        code,
        rest,
        body: quote(&received, quote_len),
    };
    let before = traffic(lb, svc, id);
    let expected = to_client(&err, first, quote_len);
    expect_sent(lb, &err, XDP_REDIRECT, &expected, Reason::IcmpToClient, whole, what);
    expect_traffic(lb, svc, id, before, err.bytes().len());
}

#[test]
fn backends_error_reaches_the_client_from_the_vip() {
    // IPv4: port unreachable about a client's datagram.
    let svc = pool4(PROTO_UDP);
    let lb = setup(&[&svc]);
    let dgram = from_client(CLIENT4, VIP4, udp(5353, 80));
    let id = lb.ring_choice(&svc, &flow_key(&dgram));
    assert_eq!(lb.run(&dgram.bytes()).action, XDP_TX);
    backend_error_reaches_client(&lb, &svc, id, &dgram, (3, 3, [0; 4]), None, true, "IPv4 port unreachable (UDP)");
}

#[test]
fn backends_error_reaches_the_client_from_the_vip_ipv6() {
    // IPv6: port unreachable about a client's datagram.
    let svc = pool6(PROTO_UDP);
    let lb = setup(&[&svc]);
    let dgram = from_client(CLIENT6, VIP6, udp(6000, 443));
    let id = lb.ring_choice(&svc, &flow_key(&dgram));
    assert_eq!(lb.run(&dgram.bytes()).action, XDP_TX);
    backend_error_reaches_client(&lb, &svc, id, &dgram, (1, 4, [0; 4]), None, true, "ICMPv6 port unreachable (UDP)");
}

#[test]
fn backends_fragmentation_needed_about_a_clients_segment_reaches_the_client() {
    // IPv4: fragmentation needed about a client's TCP segment, quoted whole and quoted to 8
    // bytes of TCP.
    let svc = pool4(PROTO_TCP);
    let lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(40000, 80, SYN));
    let id = establish(&lb, &svc, &flow);
    let mut data = with_flags(&flow, ACK);
    data.payload = payload(100);
    let frag = (3, 4, next_hop_mtu(1280));
    backend_error_reaches_client(&lb, &svc, id, &data, frag, None, true, "IPv4 frag needed from a backend (TCP)");
    backend_error_reaches_client(&lb, &svc, id, &data, frag, Some(28), false, "IPv4 frag needed from a backend, 8 bytes of TCP");
}

#[test]
fn clients_own_error_about_a_reply_reaches_the_backend() {
    // The client itself answers a reply with an error (port unreachable: its socket is
    // gone). Both the outer destination is the quoted source (the VIP) and the outer source
    // the quoted destination (the client): it is still an error about the VIP's reply, for
    // the flow's backend.
    for v6 in [false, true] {
        let svc = if v6 { pool6(PROTO_UDP) } else { pool4(PROTO_UDP) };
        let (vip, vport, client) = if v6 { (VIP6, 443, CLIENT6) } else { (VIP4, 80, CLIENT4) };
        let lb = setup(&[&svc]);
        let dgram = from_client(client, vip, udp(5353, vport));
        let id = lb.ring_choice(&svc, &flow_key(&dgram));
        assert_eq!(lb.run(&dgram.bytes()).action, XDP_TX);
        let sent = ip_packet(vip, client, udp(vport, 5353), &payload(20));
        let (icmp_type, code) = if v6 { (1, 4) } else { (3, 3) };
        let err = error_from_client_side(client, vip, icmp_type, code, [0; 4], quote(&sent, None));
        let before = traffic(&lb, &svc, id);
        let expected = to_backend(&err, &sent, None, &svc, id);
        let what = format!("IPv{} port unreachable from the client", if v6 { 6 } else { 4 });
        expect_sent(&lb, &err, XDP_TX, &expected, Reason::IcmpToBackend, true, &what);
        expect_traffic(&lb, &svc, id, before, err.bytes().len());
    }
}

#[test]
fn echo_and_unrelated_errors_pass() {
    let lb = setup(&[&pool4(PROTO_TCP), &pool6(PROTO_TCP)]);
    let flow = from_client(CLIENT4, VIP4, tcp(40000, 80, SYN));
    establish(&lb, &pool4(PROTO_TCP), &flow);

    let echo4 = error_from_client_side(CLIENT4, VIP4, 8, 0, [0x12, 0x34, 0, 1], b"ping ping ping".to_vec());
    expect_passed(&lb, &echo4.bytes(), Reason::PassNotTcpUdp, "ICMP echo request to VIP4");
    let echo6 = error_from_client_side(CLIENT6, VIP6, 128, 0, [0x12, 0x34, 0, 1], b"ping ping ping".to_vec());
    expect_passed(&lb, &echo6.bytes(), Reason::PassNotTcpUdp, "ICMPv6 echo request to VIP6");

    let frag = |src, dst, quoted: &Frame| error_from_client_side(src, dst, 3, 4, next_hop_mtu(1280), quote(quoted, None));
    // An error to a VIP address about a reply from a port of no VIP.
    let other_port = ip_packet(VIP4, CLIENT4, tcp(81, 40000, ACK), &payload(8));
    expect_passed(&lb, &frag(ROUTER4, VIP4, &other_port).bytes(), Reason::PassNotTcpUdp, "error about VIP4:81");
    // ... about a reply of the VIP's port in another protocol.
    let other_proto = ip_packet(VIP4, CLIENT4, udp(80, 40000), &payload(8));
    expect_passed(&lb, &frag(ROUTER4, VIP4, &other_proto).bytes(), Reason::PassNotTcpUdp, "error about UDP VIP4:80");
    // An error between two hosts about their own traffic.
    let host = v4(200);
    let theirs = ip_packet(host, CLIENT4, tcp(80, 40000, ACK), &payload(8));
    expect_passed(&lb, &frag(ROUTER4, host, &theirs).bytes(), Reason::PassNotTcpUdp, "error to a host");
    let theirs = ip_packet(CLIENT4, host, tcp(40000, 22, ACK), &payload(8));
    expect_passed(&lb, &frag(host, CLIENT4, &theirs).bytes(), Reason::PassNotTcpUdp, "error from a host");
    // An error from a backend's address about a port that is not a backend's.
    let (bip, _) = backend_endpoint(&pool4(PROTO_TCP), 1);
    let not_backend = ip_packet(CLIENT4, bip, tcp(40000, 9999, ACK), &payload(8));
    expect_passed(&lb, &frag(bip, CLIENT4, &not_backend).bytes(), Reason::PassNotTcpUdp, "error from backend port 9999");
    // An ICMP message that is not an error (a redirect, type 5) quoting a VIP's reply.
    let reply = ip_packet(VIP4, CLIENT4, tcp(80, 40000, ACK), &payload(8));
    let redirect = error_from_client_side(ROUTER4, VIP4, 5, 1, [198, 51, 100, 2], quote(&reply, None));
    expect_passed(&lb, &redirect.bytes(), Reason::PassNotTcpUdp, "ICMP redirect");

    // ICMPv6 errors whose outer source and destination match neither quoted address: a
    // client's packet to the VIP, quoted in an error to the VIP; a VIP's reply, quoted in an
    // error to another address.
    let to_vip = ip_packet(CLIENT6, VIP6, tcp(50000, 443, ACK), &payload(8));
    let err = error_from_client_side(ROUTER6, VIP6, 1, 0, [0; 4], quote(&to_vip, None));
    expect_passed(&lb, &err.bytes(), Reason::PassNotTcpUdp, "ICMPv6 error matching neither quoted address");
    let reply6 = ip_packet(VIP6, CLIENT6, tcp(443, 50000, ACK), &payload(8));
    let err = error_from_client_side(ROUTER6, v6(200), 2, 0, mtu32(1280), quote(&reply6, None));
    expect_passed(&lb, &err.bytes(), Reason::PassNotTcpUdp, "ICMPv6 error to another address about a VIP's reply");

    assert_eq!(lb.dp.maps.conn_count(), 0, "nothing is tracked: the flow is stateless and no error recorded one");
}

#[test]
fn truncated_icmp_errors_pass_untouched() {
    let svc4 = pool4(PROTO_TCP);
    let svc6 = pool6(PROTO_TCP);
    let lb = setup(&[&svc4, &svc6]);
    establish(&lb, &svc4, &from_client(CLIENT4, VIP4, tcp(40000, 80, SYN)));
    establish(&lb, &svc6, &from_client(CLIENT6, VIP6, tcp(50000, 443, SYN)));

    // Errors the data path would forward, were they whole.
    let sent4 = ip_packet(VIP4, CLIENT4, tcp(80, 40000, ACK), &payload(16));
    let err4 = error_from_client_side(ROUTER4, VIP4, 3, 4, next_hop_mtu(1280), quote(&sent4, None)).bytes();
    let sent6 = ip_packet(VIP6, CLIENT6, tcp(443, 50000, ACK), &payload(16));
    let err6 = error_from_client_side(ROUTER6, VIP6, 2, 0, mtu32(1280), quote(&sent6, None)).bytes();

    // Frames cut short: at the ICMP header, inside it, right after it, inside the quoted IP
    // header, right after it (no ports), inside the ports.
    let (icmp4, quote4) = (14 + 20, 14 + 20 + 8);
    for len in [icmp4, icmp4 + 1, icmp4 + 4, quote4, quote4 + 1, quote4 + 10, quote4 + 19, quote4 + 20, quote4 + 23] {
        expect_passed(&lb, &err4[..len], Reason::PassNotTcpUdp, &format!("IPv4 error cut to {len} bytes"));
    }
    let (icmp6, quote6) = (14 + 40, 14 + 40 + 8);
    for len in [icmp6, icmp6 + 4, quote6, quote6 + 20, quote6 + 39, quote6 + 40, quote6 + 43] {
        expect_passed(&lb, &err6[..len], Reason::PassNotTcpUdp, &format!("ICMPv6 error cut to {len} bytes"));
    }
    // Cut inside the outer header: a truncated frame like any other.
    expect_passed(&lb, &err4[..14 + 12], Reason::PassTruncated, "IPv4 error cut inside its own header");

    // Errors whose own lengths are consistent but whose quote stops inside the quoted IP
    // header.
    for (v6, len) in [(false, 10), (false, 19), (true, 20), (true, 39)] {
        let err = if v6 {
            error_from_client_side(ROUTER6, VIP6, 2, 0, mtu32(1280), quote(&sent6, Some(len)))
        } else {
            error_from_client_side(ROUTER4, VIP4, 3, 4, next_hop_mtu(1280), quote(&sent4, Some(len)))
        };
        expect_passed(&lb, &err.bytes(), Reason::PassNotTcpUdp, &format!("quote of {len} bytes (v6: {v6})"));
    }

    // Cut after the quoted ports: the quote is complete enough to rewrite, but the outer
    // IPv4 length no longer fits the frame: dropped by the sanity checks, untouched.
    let run = lb.run(&err4[..quote4 + 24]);
    assert_eq!((run.action, run.counted), (XDP_DROP, vec![(Reason::DropBadLength, 1)]), "cut after the quoted ports");
}

#[test]
fn checksum_checker_catches_every_wrong_checksum() {
    // The independent checker must see each checksum it claims to check (no data path here).
    let sent4 = ip_packet(VIP4, CLIENT4, tcp(80, 40000, ACK), &payload(16));
    let err4 = error_from_client_side(ROUTER4, VIP4, 3, 4, next_hop_mtu(1280), quote(&sent4, None)).bytes();
    assert_eq!(verify_icmp_checksums(&err4), Ok(Checked { quoted_ip_header: true, quoted_transport: true }));
    let (l4, q) = (14 + 20, 14 + 20 + 8);
    for (at, what) in [
        (14 + 10, "outer IPv4 header checksum"),
        (l4 + 2, "ICMP checksum"),
        (q + 12, "ICMP checksum"),
        (q + 10, "ICMP checksum"),
    ] {
        let mut bad = err4.clone();
        bad[at] ^= 0x40;
        assert_eq!(verify_icmp_checksums(&bad), Err(what.to_string()), "byte {at}");
    }
    // A quoted header or segment changed with the ICMP checksum fixed up: only the quoted
    // checksum is wrong.
    let refix = |mut f: Vec<u8>, l4: usize| {
        f[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
        let c = checksum(0, &f[l4..]);
        f[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        f
    };
    let mut bad = err4.clone();
    bad[q + 12] ^= 0x40; // quoted source address
    assert_eq!(verify_icmp_checksums(&refix(bad, l4)), Err("quoted IPv4 header checksum".into()));
    let mut bad = err4.clone();
    bad[q + 20] ^= 0x40; // quoted source port
    assert_eq!(verify_icmp_checksums(&refix(bad, l4)), Err("quoted L4 (protocol 6) checksum".into()));

    let sent6 = ip_packet(VIP6, CLIENT6, udp(443, 50000), &payload(16));
    let err6 = error_from_client_side(ROUTER6, VIP6, 1, 4, [0; 4], quote(&sent6, None)).bytes();
    assert_eq!(verify_icmp_checksums(&err6), Ok(Checked { quoted_ip_header: false, quoted_transport: true }));
    // The ICMPv6 checksum covers the outer addresses (pseudo-header).
    let mut bad = err6.clone();
    bad[14 + 24 + 15] ^= 1;
    assert_eq!(verify_icmp_checksums(&bad), Err("ICMPv6 checksum".into()));
    let cut = error_from_client_side(ROUTER6, VIP6, 1, 4, [0; 4], quote(&sent6, Some(40 + 4))).bytes();
    assert_eq!(verify_icmp_checksums(&cut), Ok(Checked { quoted_ip_header: false, quoted_transport: false }));
}

// Issue 18: the five ICMP defects a mutation fuzzer found, each with its own fixture. Every
// expected frame is built from scratch and every checksum checked independently.

/// The lab addresses (VIP, client, the flow's backend, another backend that acts as a
/// router on the backend side), the standard fixtures' and a third set.
fn address_sets() -> Vec<(IpAddr, IpAddr, IpAddr, IpAddr)> {
    let a = |s: &str| -> IpAddr { s.parse().unwrap() };
    vec![
        (a("10.77.0.10"), a("10.77.1.2"), a("10.77.12.2"), a("10.77.11.2")),
        (a("10.77.0.10"), a("10.77.1.2"), a("10.77.11.2"), a("10.77.12.2")),
        (VIP4, CLIENT4, v4(2), v4(3)),
        (a("203.0.113.7"), a("198.51.100.77"), a("172.16.254.3"), a("172.16.0.1")),
        (VIP6, CLIENT6, v6(2), v6(3)),
        (a("2001:db8:77::10"), a("2001:db8:77:1::2"), a("fd00:77:12::2"), a("fd00:77:11::2")),
    ]
}

/// Makes the client side's FIB reach `client` through `cl0` ([`CLIENT_MAC`]), as for the
/// standard clients.
fn route_client(lb: &Lb, client: IpAddr) {
    let ns = lb.netns().expect("own namespace");
    let (family, prefix) = if client.is_ipv4() { ("-4", "/32") } else { ("-6", "/128") };
    let dst = format!("{client}{prefix}");
    ns.exec(&["ip", family, "route", "replace", &dst, "dev", CLIENT_SIDE_DEV]);
    ns.exec(&["ip", family, "neigh", "replace", &client.to_string(), "lladdr", "02:c1:00:00:00:01", "dev", CLIENT_SIDE_DEV, "nud", "permanent"]);
}

/// A one-backend TCP service `vip`:80 → `backend`:8080, with its client routed.
fn lab_service(vip: IpAddr, client: IpAddr, backend: IpAddr) -> (Service, Lb) {
    let svc = service(1, vip, 80, PROTO_TCP, 1, &[(backend, 8080, 1)]);
    let lb = setup(&[&svc]);
    route_client(&lb, client);
    (svc, lb)
}

#[test]
fn errors_from_the_backend_side_leave_with_every_checksum_right_for_many_address_pairs() {
    // Defects 1 and 2: a backend's error about a client's packet, sent from the backend
    // itself or from a router on the backend side (another address than the quoted
    // destination), leaves from the VIP with the outer IPv4 header checksum, the ICMP(v6)
    // checksum and every quoted checksum right. Before the fix, an error from another address
    // than the quoted destination left with the outer IPv4 header checksum off by the
    // difference of the two addresses (0x100 for 10.77.11.2 against 10.77.12.2: the issue's
    // 0x661f for 0x651f), and ICMPv6 with a wrong checksum.
    for (vip, client, backend, router) in address_sets() {
        let (_svc, lb) = lab_service(vip, client, backend);
        let first = from_client(client, vip, tcp(40000, 80, ACK));
        let received = with_destination(&first, backend, 8080);
        let (icmp_type, code, rest) = if vip.is_ipv4() { (3, 4, next_hop_mtu(1400)) } else { (2, 0, mtu32(1400)) };
        for from in [backend, router] {
            for quote_len in [None, Some(if vip.is_ipv4() { 28 } else { 48 })] {
                let err = IcmpFrame {
                    dst_mac: LB_MAC,
                    src_mac: backend_mac(1),
                    src: from,
                    dst: client,
                    icmp_type,
                    code,
                    rest,
                    body: quote(&received, quote_len),
                };
                let what = format!("{vip} client {client} backend {backend} error from {from}, quote {quote_len:?}");
                let expected = to_client(&err, &first, quote_len);
                expect_sent(&lb, &err, XDP_REDIRECT, &expected, Reason::IcmpToClient, quote_len.is_none(), &what);
                if vip.is_ipv4() {
                    let want = expected.bytes();
                    assert_eq!(checksum(0, &want[14..34]), 0, "{what}: expected frame built wrong");
                }
            }
        }
    }
}

#[test]
fn errors_to_a_vip_from_any_router_reach_the_backend_with_every_checksum_right() {
    // The other direction over the same address sets: an error to the VIP about its reply,
    // from a router on the client side, reaches the flow's backend.
    for (vip, client, backend, router) in address_sets() {
        let (svc, lb) = lab_service(vip, client, backend);
        let sent = ip_packet(vip, client, tcp(80, 40000, ACK), &payload(24));
        let (icmp_type, code, rest) = if vip.is_ipv4() { (3, 4, next_hop_mtu(1280)) } else { (2, 0, mtu32(1280)) };
        for quote_len in [None, Some(if vip.is_ipv4() { 28 } else { 48 })] {
            let err = error_from_client_side(router, vip, icmp_type, code, rest, quote(&sent, quote_len));
            let expected = to_backend(&err, &sent, quote_len, &svc, 1);
            let what = format!("{vip} error from {router} about its reply to {client}, quote {quote_len:?}");
            expect_sent(&lb, &err, XDP_TX, &expected, Reason::IcmpToBackend, quote_len.is_none(), &what);
        }
    }
}

/// `frame` (an untagged IPv4 frame) with its outer total length set to `len` and its header
/// checksum recomputed, so that only the length is wrong.
fn with_ipv4_total_length(frame: &[u8], len: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[16..18].copy_from_slice(&len.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(0, &f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn icmp_errors_whose_lengths_do_not_hold_the_quote_are_dropped() {
    // Defect 3: ICMPv4 errors to a VIP with an outer total length of 0 or 19 (below its own
    // header) were sent on to a backend; so were lengths that end inside the quote. Dropped
    // as `drop_bad_length`, as TCP and UDP with such lengths are; no entry is created.
    let svc4 = pool4(PROTO_TCP);
    let svc6 = pool6(PROTO_TCP);
    let lb = setup(&[&svc4, &svc6]);
    let sent4 = ip_packet(VIP4, CLIENT4, tcp(80, 40000, ACK), &payload(16));
    let err4 = error_from_client_side(ROUTER4, VIP4, 3, 4, next_hop_mtu(1280), quote(&sent4, None)).bytes();
    // Below the header, inside the ICMP header, inside the quoted IP header, inside the
    // quoted transport's first 8 bytes.
    for len in [0u16, 19, 20, 27, 28 + 19, 28 + 20 + 7] {
        let bad = with_ipv4_total_length(&err4, len);
        let run = lb.run(&bad);
        assert_eq!((run.action, run.counted.clone()), (XDP_DROP, vec![(Reason::DropBadLength, 1)]), "IPv4 total length {len}");
    }
    // The shortest length that holds the quote's first 8 transport bytes is accepted (the
    // rest of the frame is then padding, left alone).
    let ok = with_ipv4_total_length(&err4, 20 + 8 + 20 + 8);
    assert_eq!(lb.run(&ok).action, XDP_TX, "IPv4 total length 56");
    // IPv6: payload lengths that end inside the ICMPv6 header, the quoted header or the
    // quote's first 8 transport bytes.
    let sent6 = ip_packet(VIP6, CLIENT6, tcp(443, 50000, ACK), &payload(16));
    let err6 = error_from_client_side(ROUTER6, VIP6, 2, 0, mtu32(1280), quote(&sent6, None)).bytes();
    for len in [0u16, 7, 8 + 39, 8 + 40 + 7] {
        let mut bad = err6.clone();
        bad[18..20].copy_from_slice(&len.to_be_bytes());
        let run = lb.run(&bad);
        assert_eq!((run.action, run.counted.clone()), (XDP_DROP, vec![(Reason::DropBadLength, 1)]), "IPv6 payload length {len}");
    }
    // From a backend, towards a client: the same rule.
    let (bip, bport) = backend_endpoint(&svc4, 1);
    let first = from_client(CLIENT4, VIP4, tcp(40001, 80, ACK));
    let back = IcmpFrame { dst_mac: LB_MAC, src_mac: backend_mac(1), src: bip, dst: CLIENT4, icmp_type: 3, code: 4, rest: next_hop_mtu(1400), body: quote(&with_destination(&first, bip, bport), None) };
    for len in [0u16, 19, 28 + 19] {
        let run = lb.run(&with_ipv4_total_length(&back.bytes(), len));
        assert_eq!((run.action, run.counted.clone()), (XDP_DROP, vec![(Reason::DropBadLength, 1)]), "backend's error, total length {len}");
    }
    assert_eq!(lb.dp.maps.conn_count(), 0, "nothing tracked");
}

#[test]
fn icmp_errors_from_martian_sources_or_a_vip_are_dropped() {
    // Defect 4: ICMP errors from ::1, ::, ff02::1, 224.0.0.1, 255.255.255.255 or a VIP itself
    // were sent on. Dropped as `drop_martian`, as new TCP and UDP flows from them are.
    let svc4 = pool4(PROTO_TCP);
    let svc6 = pool6(PROTO_TCP);
    let lb = setup(&[&svc4, &svc6]);
    let a = |s: &str| -> IpAddr { s.parse().unwrap() };
    let sent4 = ip_packet(VIP4, CLIENT4, tcp(80, 40000, ACK), &payload(16));
    for src in [a("0.0.0.0"), a("127.0.0.1"), a("224.0.0.1"), a("239.1.2.3"), a("255.255.255.255"), a("240.0.0.1"), VIP4] {
        let err = error_from_client_side(src, VIP4, 3, 4, next_hop_mtu(1280), quote(&sent4, None));
        let run = lb.run(&err.bytes());
        assert_eq!((run.action, run.counted.clone()), (XDP_DROP, vec![(Reason::DropMartian, 1)]), "error to VIP4 from {src}");
    }
    let sent6 = ip_packet(VIP6, CLIENT6, tcp(443, 50000, ACK), &payload(16));
    for src in [a("::"), a("::1"), a("ff02::1"), a("ff05::1:3"), VIP6] {
        let err = error_from_client_side(src, VIP6, 2, 0, mtu32(1280), quote(&sent6, None));
        let run = lb.run(&err.bytes());
        assert_eq!((run.action, run.counted.clone()), (XDP_DROP, vec![(Reason::DropMartian, 1)]), "error to VIP6 from {src}");
    }
    // From the backend side: a martian or VIP outer source, or a martian client (the quoted
    // packet's source, the error's destination).
    for (family_v6, src, client) in [
        (false, a("127.0.0.1"), CLIENT4),
        (false, a("255.255.255.255"), CLIENT4),
        (false, VIP4, CLIENT4),
        (false, backend_endpoint(&svc4, 1).0, a("224.0.0.1")),
        (false, backend_endpoint(&svc4, 1).0, a("127.0.0.2")),
        (true, a("::1"), CLIENT6),
        (true, VIP6, CLIENT6),
        (true, backend_endpoint(&svc6, 11).0, a("ff02::1")),
    ] {
        let (svc, id, vip, vport) = if family_v6 { (&svc6, 11, VIP6, 443) } else { (&svc4, 1, VIP4, 80) };
        let (bip, bport) = backend_endpoint(svc, id);
        let first = from_client(client, vip, tcp(40002, vport, ACK));
        let (icmp_type, code, rest) = if family_v6 { (2, 0, mtu32(1400)) } else { (3, 4, next_hop_mtu(1400)) };
        let err = IcmpFrame { dst_mac: LB_MAC, src_mac: backend_mac(id), src, dst: client, icmp_type, code, rest, body: quote(&with_destination(&first, bip, bport), None) };
        let run = lb.run(&err.bytes());
        assert_eq!((run.action, run.counted.clone()), (XDP_DROP, vec![(Reason::DropMartian, 1)]), "backend side error from {src} to {client}");
    }
    // ICMP that is no error of a VIP's flow still passes from such sources (echo requests).
    let echo = error_from_client_side(a("0.0.0.0"), VIP4, 8, 0, [0, 1, 0, 1], b"ping".to_vec());
    expect_passed(&lb, &echo.bytes(), Reason::PassNotTcpUdp, "echo request from 0.0.0.0");
    assert_eq!(lb.dp.maps.conn_count(), 0, "nothing tracked");
}

#[test]
fn an_error_quoting_8_bytes_of_tcp_before_trailing_bytes_leaves_those_bytes_alone() {
    // Defect 5: an error that quotes only 8 bytes of TCP, in a frame with bytes after its IP
    // packet (Ethernet padding to 60 bytes cannot apply here, so junk and zero padding): the
    // rewrite changed the "quoted TCP checksum" in the trailing bytes and folded that into
    // the ICMP checksum. Now the trailing bytes are untouched and the ICMP checksum, over the
    // IP packet only, is right. Both directions, both families.
    let svc4 = pool4(PROTO_TCP);
    let svc6 = pool6(PROTO_TCP);
    let lb = setup(&[&svc4, &svc6]);
    for trailer in [vec![0u8; 12], (0..30).map(|i| (i * 37 + 11) as u8).collect::<Vec<u8>>()] {
        for v6 in [false, true] {
            let (svc, vip, vport, client, router, quoted) = if v6 {
                (&svc6, VIP6, 443, CLIENT6, ROUTER6, 40 + 8)
            } else {
                (&svc4, VIP4, 80, CLIENT4, ROUTER4, 20 + 8)
            };
            let (icmp_type, code, rest) = if v6 { (2, 0, mtu32(1280)) } else { (3, 4, next_hop_mtu(1280)) };
            // To the VIP, about its reply: to the ring's backend (no entry).
            let sent = ip_packet(vip, client, tcp(vport, 41000, ACK), &payload(100));
            let key = flow_key(&from_client(client, vip, tcp(41000, vport, SYN)));
            let id = lb.ring_choice(svc, &key);
            let err = error_from_client_side(router, vip, icmp_type, code, rest, quote(&sent, Some(quoted)));
            let expected = to_backend(&err, &sent, Some(quoted), svc, id);
            expect_sent_with_trailer(&lb, &err, &trailer, XDP_TX, &expected, Reason::IcmpToBackend, &format!("to VIP, v6 {v6}, trailer {}", trailer.len()));
            // From the backend, about the client's packet: to the client.
            let (bip, bport) = backend_endpoint(svc, id);
            let first = from_client(client, vip, tcp(41000, vport, ACK));
            let back = IcmpFrame { dst_mac: LB_MAC, src_mac: backend_mac(id), src: bip, dst: client, icmp_type, code, rest, body: quote(&with_destination(&first, bip, bport), Some(quoted)) };
            let expected = to_client(&back, &first, Some(quoted));
            expect_sent_with_trailer(&lb, &back, &trailer, XDP_REDIRECT, &expected, Reason::IcmpToClient, &format!("from backend, v6 {v6}, trailer {}", trailer.len()));
        }
    }
}

/// Runs `input` followed by `trailer` (bytes after its IP packet) and expects `expected`'s
/// exact bytes followed by the same trailer, with `action`, counted once under `reason`, and
/// every checksum of the output right over its IP packet alone; returns what was checked.
fn expect_sent_with_trailer(lb: &Lb, input: &IcmpFrame, trailer: &[u8], action: u32, expected: &IcmpFrame, reason: Reason, what: &str) -> Checked {
    let mut frame = input.bytes();
    let ip_frame_len = frame.len();
    frame.extend_from_slice(trailer);
    let run = lb.run(&frame);
    assert_eq!(run.action, action, "{what}: verdict (counted {:?})", run.counted);
    let mut want = expected.bytes();
    want.extend_from_slice(trailer);
    assert_frame_eq(&run.out, &want, what);
    let checked = verify_icmp_checksums(&run.out[..ip_frame_len]).unwrap_or_else(|e| panic!("{what}: {e} wrong in the output"));
    assert_eq!(run.counted, vec![(reason, 1)], "{what}: counters");
    checked
}

#[test]
fn icmp_of_the_other_family_is_no_icmp() {
    // Found by the fuzzer (seed 18, frame 872526): an IPv4 header with protocol 58 (ICMPv6)
    // carrying what reads as an ICMPv4 error about a VIP's reply was rewritten and sent to a
    // backend. IPv4's ICMP is protocol 1 and IPv6's next header 58: anything else passes.
    let svc4 = pool4(PROTO_TCP);
    let svc6 = pool6(PROTO_TCP);
    let lb = setup(&[&svc4, &svc6]);
    let sent4 = ip_packet(VIP4, CLIENT4, tcp(80, 40000, ACK), &payload(16));
    let mut err4 = error_from_client_side(ROUTER4, VIP4, 3, 4, next_hop_mtu(1280), quote(&sent4, None)).bytes();
    err4[14 + 9] = PROTO_ICMPV6;
    err4[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(0, &err4[14..34]);
    err4[24..26].copy_from_slice(&c.to_be_bytes());
    expect_passed(&lb, &err4, Reason::PassNotTcpUdp, "IPv4 with protocol 58");
    let sent6 = ip_packet(VIP6, CLIENT6, tcp(443, 50000, ACK), &payload(16));
    let mut err6 = error_from_client_side(ROUTER6, VIP6, 1, 4, [0; 4], quote(&sent6, None)).bytes();
    err6[14 + 6] = PROTO_ICMP;
    expect_passed(&lb, &err6, Reason::PassNotTcpUdp, "IPv6 with next header 1");
}
