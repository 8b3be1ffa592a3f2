//! Packet fixtures through the real XDP program in the kernel (BPF_PROG_TEST_RUN).
//!
//! Every case states the input frame, the expected verdict, the exact expected output bytes
//! (built from scratch with checksums computed by `lb_tests::packet`, never by the data path's
//! incremental code) and the expected counter changes. Needs root.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::{counters::Reason, maps::*};
use lb_tests::{fixture::*, harness::*, packet::*};
use lb_userspace::dataplane::Service;



/// Runs backend reply `reply` to client frame `first` and checks it left translated towards
/// the client (XDP_REDIRECT out of the client side found by the FIB).
fn expect_reply(lb: &Lb, reply: &Frame, first: &Frame) {
    expect_reply_with(lb, reply, first, XDP_REDIRECT);
}

/// As [`expect_reply`] with the verdict `action`.
fn expect_reply_with(lb: &Lb, reply: &Frame, first: &Frame, action: u32) {
    let run = lb.run(&reply.bytes());
    assert_eq!(run.action, action, "reply verdict");
    assert_eq!(run.out, translated(reply, first).bytes(), "reply rewritten to the VIP towards the client");
    verify_checksums(&run.out).expect("reply checksums");
    assert_eq!(run.counted, vec![(Reason::ReplyToClient, 1)]);
}

/// First packet, a second packet of the same flow, and the backend's reply, each checked
/// byte for byte, with their counters. The VIPs are Maglev with stable backends: every packet
/// is sent by the ring alone, and nothing is recorded for the flow.
fn round_trip(lb: &Lb, svc: &Service, first: &Frame, next: &Frame) {
    round_trip_with(lb, svc, first, next, XDP_REDIRECT);
}

/// As [`round_trip`], the reply leaving with verdict `reply_action`.
fn round_trip_with(lb: &Lb, svc: &Service, first: &Frame, next: &Frame, reply_action: u32) {
    let key = flow_key(first);
    let chosen = lb.ring_choice(svc, &key);
    let (bip, bport) = backend_endpoint(svc, chosen);
    let tcp = first.proto() == PROTO_TCP;
    let stateless = vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)];

    let run = lb.run(&first.bytes());
    assert_eq!(run.action, XDP_TX, "first packet verdict");
    assert_eq!(run.out, to_endpoint(first, bip, bport, backend_mac(chosen), LB_MAC).bytes());
    verify_checksums(&run.out).expect("first packet checksums");
    assert_eq!(run.counted, stateless);
    assert_eq!(lb.dp.maps.conn(&key).unwrap(), None, "no entry");

    let run = lb.run(&next.bytes());
    assert_eq!(run.action, XDP_TX, "second packet verdict");
    assert_eq!(run.out, to_endpoint(next, bip, bport, backend_mac(chosen), LB_MAC).bytes());
    assert_eq!(run.counted, stateless, "the handshake's ACK is no resumed flow");
    assert_eq!((lb.dp.maps.conn(&key).unwrap(), lb.dp.maps.half_open(&key).unwrap()), (None, None), "still no entry");

    let reply = syn_ack_of(first, chosen, bip, bport);
    expect_reply_with(lb, &reply, first, reply_action);

    // A SYN is a new flow; a datagram without an entry cannot be told from a later one.
    let new_flows = u64::from(tcp);
    let b = lb.dp.maps.backend_traffic(chosen).unwrap();
    assert_eq!((b.packets, b.new_flows), (3, new_flows), "backend counters");
    let v = lb.dp.maps.vip_traffic(svc.id).unwrap();
    let bytes = (first.bytes().len() + next.bytes().len() + reply.bytes().len()) as u64;
    assert_eq!((v.packets, v.bytes, v.new_flows), (3, bytes, new_flows), "VIP counters");
}

#[test]
fn ipv4_tcp_syn_established_and_reply() {
    let svc = pool4(PROTO_TCP);
    let lb = setup(&[&svc]);
    let syn = from_client(CLIENT4, VIP4, tcp(40000, 80, SYN));
    round_trip(&lb, &svc, &syn, &with_flags(&syn, ACK));
}

#[test]
fn ipv6_tcp_syn_established_and_reply() {
    let svc = pool6(PROTO_TCP);
    let lb = setup(&[&svc]);
    let syn = from_client(CLIENT6, VIP6, tcp(50000, 443, SYN));
    round_trip(&lb, &svc, &syn, &with_flags(&syn, ACK));
}

#[test]
fn ipv4_udp_with_checksum() {
    let svc = pool4(PROTO_UDP);
    let lb = setup(&[&svc]);
    let dgram = from_client(CLIENT4, VIP4, udp(5353, 80));
    round_trip(&lb, &svc, &dgram, &dgram);
}

#[test]
fn ipv4_udp_without_checksum_stays_without() {
    let svc = pool4(PROTO_UDP);
    let lb = setup(&[&svc]);
    let dgram = from_client(CLIENT4, VIP4, L4::Udp { sport: 5353, dport: 80, no_checksum: true });
    round_trip(&lb, &svc, &dgram, &dgram);
    let out = lb.run(&dgram.bytes()).out;
    assert_eq!(&out[40..42], &[0, 0], "zero UDP checksum stays zero");
}

#[test]
fn ipv6_udp() {
    let svc = pool6(PROTO_UDP);
    let lb = setup(&[&svc]);
    let dgram = from_client(CLIENT6, VIP6, udp(6000, 443));
    round_trip(&lb, &svc, &dgram, &dgram);
}

#[test]
fn vlan_tagged_packet_is_balanced_with_its_tag() {
    // One-arm, the client side on VLAN 100 of the ingress NIC (in a test run the loopback,
    // index 1): the FIB's egress for the client (`cl0`) is recorded as that VLAN device.
    let svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let cl0 = lb.netns().unwrap().ifindex(CLIENT_SIDE_DEV);
    lb.dp.maps.add_vlan_port(cl0, 1, 100).unwrap();
    let mut syn = from_client(CLIENT4, VIP4, tcp(40001, 80, SYN));
    syn.vlan = Some(100);
    round_trip_with(&lb, &svc, &syn, &with_flags(&syn, ACK), XDP_TX);
}

#[test]
fn vlan_on_both_arms() {
    // Two-arm: clients on VLAN 100 (the FIB's egress `cl0` recorded as VLAN 100 on the
    // ingress NIC), backends on VLAN 200 of another NIC (their hop is a VLAN device, index
    // 77, on `cl0` standing in for that NIC). Every frame leaves with the tag of the side it
    // goes to, whatever tag it came with: rewritten, pushed or popped.
    let mut svc = pool4(PROTO_TCP);
    for b in &mut svc.backends {
        b.backend.hop.ifindex = 77;
    }
    let mut lb = setup(&[&svc]);
    let cl0 = lb.netns().unwrap().ifindex(CLIENT_SIDE_DEV);
    lb.dp.maps.add_vlan_port(77, cl0, 200).unwrap();
    for (client_tag, client_side) in [(Some(100), Some(100)), (None, None), (Some(100), None), (None, Some(100))] {
        match client_side {
            Some(id) => lb.dp.maps.add_vlan_port(cl0, 1, id).unwrap(),
            None => lb.add_port(cl0),
        }
        let mut syn = from_client(CLIENT4, VIP4, tcp(40100 + client_tag.unwrap_or(0), 80, SYN));
        syn.vlan = client_tag;
        let chosen = lb.ring_choice(&svc, &flow_key(&syn));
        let (bip, bport) = backend_endpoint(&svc, chosen);
        let run = lb.run(&syn.bytes());
        let mut want = to_endpoint(&syn, bip, bport, backend_mac(chosen), LB_MAC);
        want.vlan = Some(200);
        assert_eq!(run.action, XDP_REDIRECT, "to the backends' NIC");
        assert_eq!(run.out, want.bytes(), "client tag {client_tag:?}: the backend side's tag 200");
        verify_checksums(&run.out).unwrap();

        let mut reply = syn_ack_of(&syn, chosen, bip, bport);
        reply.vlan = Some(200);
        let run = lb.run(&reply.bytes());
        let mut want = translated(&reply, &syn);
        want.vlan = client_side;
        let action = if client_side.is_some() { XDP_TX } else { XDP_REDIRECT };
        assert_eq!(run.action, action, "client side {client_side:?}");
        assert_eq!(run.out, want.bytes(), "client side {client_side:?}: the reply carries its tag");
        verify_checksums(&run.out).unwrap();
        assert_eq!(run.counted, vec![(Reason::ReplyToClient, 1)]);
    }
}

/// Runs `frame` and expects it passed to the kernel unchanged, counted once under `reason`.
fn expect_passed(lb: &Lb, frame: &[u8], reason: Reason) {
    let run = lb.run(frame);
    assert_eq!(run.action, XDP_PASS, "{reason:?}: verdict");
    assert_eq!(run.out, frame, "{reason:?}: frame must be untouched");
    assert_eq!(run.counted, vec![(reason, 1)], "{reason:?}: counters");
}

#[test]
fn traffic_not_for_a_vip_passes_untouched() {
    let lb = setup(&[&pool4(PROTO_TCP), &pool6(PROTO_TCP)]);
    // Right address, wrong port; right port, wrong address; right tuple, wrong protocol.
    expect_passed(&lb, &from_client(CLIENT4, VIP4, tcp(40000, 81, SYN)).bytes(), Reason::PassNotVip);
    expect_passed(&lb, &from_client(CLIENT4, v4(200), tcp(40000, 80, SYN)).bytes(), Reason::PassNotVip);
    expect_passed(&lb, &from_client(CLIENT4, VIP4, udp(40000, 80)).bytes(), Reason::PassNotVip);
    expect_passed(&lb, &from_client(CLIENT6, VIP6, tcp(40000, 22, SYN)).bytes(), Reason::PassNotVip);
}

#[test]
fn arp_passes_untouched() {
    let lb = setup(&[&pool4(PROTO_TCP)]);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
    expect_passed(&lb, &arp, Reason::PassNotIp);
}

#[test]
fn ipv6_neighbour_solicitation_passes_untouched() {
    let lb = setup(&[&pool6(PROTO_TCP)]);
    let mut ns = vec![0x33, 0x33, 0xff, 0, 0, 1];
    ns.extend_from_slice(&CLIENT_MAC);
    ns.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 24, 58, 255]);
    ns.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    ns.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1]);
    ns.extend_from_slice(&[135, 0, 0x12, 0x34, 0, 0, 0, 0]);
    if let IpAddr::V6(t) = VIP6 {
        ns.extend_from_slice(&t.octets());
    }
    expect_passed(&lb, &ns, Reason::PassNotTcpUdp);
}

#[test]
fn truncated_at_every_header_boundary_passes() {
    let lb = setup(&[&pool4(PROTO_TCP), &pool6(PROTO_UDP)]);
    let tcp4 = from_client(CLIENT4, VIP4, tcp(40000, 80, SYN)).bytes();
    // Ethernet only; inside IPv4; IPv4 without TCP; inside TCP.
    for len in [14, 15, 33, 34, 35, 53] {
        expect_passed(&lb, &tcp4[..len], Reason::PassTruncated);
    }
    let mut tagged = from_client(CLIENT4, VIP4, tcp(40000, 80, SYN));
    tagged.vlan = Some(7);
    let tagged = tagged.bytes();
    // Inside the VLAN tag; after the tag.
    for len in [16, 17, 18, 37] {
        expect_passed(&lb, &tagged[..len], Reason::PassTruncated);
    }
    let udp6 = from_client(CLIENT6, VIP6, udp(6000, 443)).bytes();
    // Inside IPv6; IPv6 without UDP; inside UDP.
    for len in [20, 53, 54, 61] {
        expect_passed(&lb, &udp6[..len], Reason::PassTruncated);
    }
}

#[test]
fn malformed_options_fragments_and_extension_headers_pass() {
    let lb = setup(&[&pool4(PROTO_TCP), &pool6(PROTO_TCP)]);
    let base = from_client(CLIENT4, VIP4, tcp(40000, 80, SYN)).bytes();

    let mut bad_ihl = base.clone();
    bad_ihl[14] = 0x44;
    expect_passed(&lb, &bad_ihl, Reason::PassMalformed);

    let mut bad_version = base.clone();
    bad_version[14] = 0x55;
    expect_passed(&lb, &bad_version, Reason::PassMalformed);

    // Fragments and IPv4 options are not balanced: for a VIP address they are dropped (the
    // host owns the address and would answer with a reset), for any other address passed.
    let not_for_a_vip = from_client(CLIENT4, v4(200), tcp(40000, 80, SYN)).bytes();
    let mut more_fragments = base.clone();
    more_fragments[20] = 0x20; // MF, offset 0
    let mut later_fragment = base.clone();
    later_fragment[20] = 0x00;
    later_fragment[21] = 0xb9; // offset 185 × 8 bytes
    let mut options = base.clone();
    options[14] = 0x46;
    options.splice(34..34, [1, 1, 1, 0]); // NOP NOP NOP EOL
    for (frame, pass, drop) in [
        (more_fragments, Reason::PassFragment, Reason::DropFragment),
        (later_fragment, Reason::PassFragment, Reason::DropFragment),
        (options, Reason::PassIpv4Options, Reason::DropIpv4Options),
    ] {
        let run = lb.run(&frame);
        assert_eq!((run.action, run.counted), (XDP_DROP, vec![(drop, 1)]), "{drop:?}");
        let mut other = frame.clone();
        other[..not_for_a_vip.len().min(34)].copy_from_slice(&not_for_a_vip[..34]);
        other[14] = frame[14];
        other[20..22].copy_from_slice(&frame[20..22]);
        expect_passed(&lb, &other, pass);
    }
    assert_eq!(lb.dp.maps.conn_count(), 0, "nothing tracked");

    let mut ext = from_client(CLIENT6, VIP6, tcp(40000, 443, SYN)).bytes();
    ext[20] = 0; // hop-by-hop options header first
    expect_passed(&lb, &ext, Reason::PassIpv6ExtHeader);

    let mut stacked = from_client(CLIENT4, VIP4, tcp(40000, 80, SYN));
    stacked.vlan = Some(5);
    let mut stacked = stacked.bytes();
    stacked.splice(16..16, [0x81, 0x00, 0x00, 0x06]);
    expect_passed(&lb, &stacked, Reason::PassVlanStacked);
}

#[test]
fn draining_backend_keeps_its_flow_and_gets_no_new_ones() {
    let mut svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(41000, 80, SYN));
    let drained = establish(&lb, &svc, &flow);
    svc.backend_mut(drained).unwrap().backend.state = BackendState::Draining as u8;
    lb.dp.maps.apply_service(&svc).unwrap();

    let run = lb.run(&with_flags(&flow, ACK).bytes());
    assert_eq!(run.action, XDP_TX);
    assert_eq!(sent_to(&run.out), drained, "the established flow stays");
    assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1), (Reason::RetainedRing, 1)]);

    for port in 1..=300 {
        let run = lb.run(&with_sport(&flow, 20000 + port).bytes());
        assert_eq!(run.action, XDP_TX);
        assert_ne!(sent_to(&run.out), drained, "new flow {port} sent to the drained backend");
    }

    // A new connection reusing the drained flow's 5-tuple (a SYN) is a new flow.
    let run = lb.run(&flow.bytes());
    assert_eq!(run.action, XDP_TX);
    let now = sent_to(&run.out);
    assert_ne!(now, drained, "a SYN on a reused 5-tuple must not go to the drained backend");
    assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1)]);
    assert_eq!(lb.dp.maps.conn(&flow_key(&flow)).unwrap().unwrap().backend_id, now);
    assert_eq!(sent_to(&lb.run(&with_flags(&flow, ACK).bytes()).out), now, "and its next packets follow");
}

#[test]
fn down_backends_flow_moves_to_a_live_one() {
    let mut svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(42000, 80, SYN));
    let failed = establish(&lb, &svc, &flow);
    svc.backend_mut(failed).unwrap().backend.state = BackendState::Down as u8;
    lb.dp.maps.apply_service(&svc).unwrap();

    let next = with_flags(&flow, ACK);
    let run = lb.run(&next.bytes());
    let now = lb.ring_choice(&svc, &flow_key(&flow));
    assert_ne!(now, failed);
    let (ip, port) = backend_endpoint(&svc, now);
    assert_eq!(run.action, XDP_TX);
    assert_eq!(run.out, to_endpoint(&next, ip, port, backend_mac(now), LB_MAC).bytes());
    assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Rescheduled, 1), (Reason::MovedSlot, 1)]);
    let entry = lb.dp.maps.conn(&flow_key(&flow)).unwrap().unwrap();
    assert_eq!(entry.backend_id, now, "the connection table follows the move");
}

#[test]
fn a_failed_backend_keeps_its_tcp_flows_and_takes_no_new_ones() {
    // Failed health checks (on this node): the established TCP flow stays, byte for byte as
    // before; a SYN on the same 5-tuple and new flows go elsewhere.
    let mut svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(42000, 80, SYN));
    let failed = establish(&lb, &svc, &flow);
    svc.backend_mut(failed).unwrap().backend.state = BackendState::Failed as u8;
    lb.dp.maps.apply_service(&svc).unwrap();

    let next = with_flags(&flow, ACK);
    let run = lb.run(&next.bytes());
    let (ip, port) = backend_endpoint(&svc, failed);
    assert_eq!(run.action, XDP_TX);
    assert_eq!(run.out, to_endpoint(&next, ip, port, backend_mac(failed), LB_MAC).bytes());
    assert_eq!(
        run.counted,
        vec![(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1), (Reason::RetainedRing, 1)],
        "not rescheduled: the retained ring decides and the flow is recorded"
    );
    assert_eq!(lb.dp.maps.conn(&flow_key(&flow)).unwrap().unwrap().backend_id, failed);
    let syn = lb.run(&flow.bytes());
    assert_ne!(sent_to(&syn.out), failed, "a new connection on the 5-tuple avoids it");
    for port in 1..=200 {
        assert_ne!(sent_to(&lb.run(&with_sport(&flow, 20000 + port).bytes()).out), failed, "new flow {port}");
    }
}

#[test]
fn a_failed_backends_udp_flow_moves() {
    let mut svc = pool4(PROTO_UDP);
    let mut lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, udp(42000, 80));
    let first = lb.run(&flow.bytes());
    let failed = sent_to(&first.out);
    svc.backend_mut(failed).unwrap().backend.state = BackendState::Failed as u8;
    lb.dp.maps.apply_service(&svc).unwrap();
    let run = lb.run(&flow.bytes());
    assert_ne!(sent_to(&run.out), failed);
    assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Rescheduled, 1), (Reason::MovedSlot, 1)]);
}

#[test]
fn down_backend_is_skipped_before_the_ring_is_rebuilt() {
    // The agent marks a backend down before it swaps the ring; in between, new flows that
    // hash to it must still avoid it.
    let mut svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let failed = svc.backends[0].id;
    let mut down = svc.backends[0].backend;
    down.state = BackendState::Down as u8;
    lb.dp.maps.set_backend(failed, &down).unwrap();
    let base = from_client(CLIENT4, VIP4, tcp(1, 80, SYN));
    let mut hit_failed_slot = 0;
    for port in 1..=300 {
        let f = with_sport(&base, 30000 + port);
        if lb.ring_choice(&svc, &flow_key(&f)) == failed {
            hit_failed_slot += 1;
        }
        let run = lb.run(&f.bytes());
        assert_eq!(run.action, XDP_TX);
        assert_ne!(sent_to(&run.out), failed);
    }
    assert!(hit_failed_slot > 50, "the test must exercise the failed backend's slots");
    svc.backends[0].backend = down;
}

#[test]
fn all_backends_down_drops_and_counts() {
    let mut svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(43000, 80, SYN));
    establish(&lb, &svc, &flow);
    for b in &mut svc.backends {
        b.backend.state = BackendState::Down as u8;
    }
    lb.dp.maps.apply_service(&svc).unwrap();

    // Every slot moved: both packets meet the table, and no backend is left.
    let run = lb.run(&with_flags(&flow, ACK).bytes());
    assert_eq!(run.action, XDP_DROP);
    assert_eq!(run.counted, vec![(Reason::DropNoBackend, 1), (Reason::MovedSlot, 1)]);
    let run = lb.run(&with_sport(&flow, 43001).bytes());
    assert_eq!(run.action, XDP_DROP);
    assert_eq!(run.counted, vec![(Reason::DropNoBackend, 1), (Reason::MovedSlot, 1)]);
}

/// A deterministic stream of client addresses and ports.
struct Flows(u64);

impl Flows {
    fn next(&mut self) -> (IpAddr, u16) {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let x = self.0;
        let ip = IpAddr::V4(Ipv4Addr::from(0x6400_0000 | (x as u32 & 0x00FF_FFFF)));
        (ip, 1024 + (x >> 40) as u16 % 60000)
    }
}

/// Sends `n` new flows and returns the backend each went to.
fn choices(lb: &Lb, n: usize, seed: u64) -> Vec<u32> {
    let mut flows = Flows(seed);
    (0..n)
        .map(|_| {
            let (ip, port) = flows.next();
            let run = lb.run(&from_client(ip, VIP4, tcp(port, 80, SYN)).bytes());
            assert_eq!(run.action, XDP_TX);
            sent_to(&run.out)
        })
        .collect()
}

#[test]
fn weighted_distribution_of_100k_flows() {
    let svc = service(1, VIP4, 80, PROTO_TCP, 1, &[(v4(1), 80, 1), (v4(2), 80, 2), (v4(3), 80, 3)]);
    let lb = setup(&[&svc]);
    let sent = choices(&lb, 100_000, 0x1234_5678);
    for (id, weight) in [(1u32, 1.0), (2, 2.0), (3, 3.0)] {
        let share = sent.iter().filter(|&&b| b == id).count() as f64 / sent.len() as f64;
        let want = weight / 6.0;
        println!("backend {id} (weight {weight}): {:.2} % (target {:.2} %)", share * 100.0, want * 100.0);
        assert!((share - want).abs() <= 0.01, "backend {id}: {share:.4} vs {want:.4}");
    }
}

#[test]
fn removing_one_of_n_backends_moves_few_flows() {
    require_root();
    for n in [3u32, 10, 100] {
        let pool: Vec<(IpAddr, u16, u32)> = (1..=n).map(|i| (v4(i as u8).to_owned(), 80, 1)).collect();
        let pool: Vec<_> = pool
            .iter()
            .enumerate()
            .map(|(i, &(_, p, w))| (IpAddr::V4(Ipv4Addr::new(10, 2, (i / 250) as u8, (i % 250) as u8 + 1)), p, w))
            .collect();
        let full = service(1, VIP4, 80, PROTO_TCP, 1, &pool);
        let mut less = full.clone();
        less.backends.remove((n / 2) as usize);
        // Two nodes: one still has every backend, one has lost one. Each sees the flows new.
        let a = setup(&[&full]);
        let b = setup(&[&less]);
        let (ca, cb) = (choices(&a, 20_000, 99), choices(&b, 20_000, 99));
        let moved = ca.iter().zip(&cb).filter(|(x, y)| x != y).count() as f64 / ca.len() as f64;
        let bound = 1.0 / n as f64 + 0.01;
        println!("N = {n}: {:.2} % of flows moved (bound {:.2} %)", moved * 100.0, bound * 100.0);
        assert!(moved <= bound, "N = {n}: moved {moved:.4} > {bound:.4}");
    }
}

#[test]
fn two_instances_with_the_same_configuration_agree() {
    let svc = service(1, VIP4, 80, PROTO_TCP, 1, &[(v4(1), 80, 1), (v4(2), 80, 2), (v4(3), 80, 1), (v4(4), 80, 5)]);
    let a = setup(&[&svc]);
    let b = setup(&[&svc]);
    let (ca, cb) = (choices(&a, 10_000, 7), choices(&b, 10_000, 7));
    assert_eq!(ca, cb, "both nodes choose the same backend for every flow");
    assert!([1, 2, 3, 4].iter().all(|id| ca.contains(id)), "every backend is used");
}

#[test]
fn source_affinity_sends_a_clients_flows_to_one_backend() {
    let mut svc = pool4(PROTO_TCP);
    svc.flags = VIP_FLAG_HASH_SRC_ONLY;
    let lb = setup(&[&svc]);
    for client in 1..=20u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, client));
        let first = sent_to(&lb.run(&from_client(ip, VIP4, tcp(1000, 80, SYN)).bytes()).out);
        for port in 1001..1020 {
            let out = lb.run(&from_client(ip, VIP4, tcp(port, 80, SYN)).bytes()).out;
            assert_eq!(sent_to(&out), first, "client {ip} port {port}");
        }
    }
}

#[test]
fn ring_swap_flips_to_the_spare_ring() {
    let mut svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let before = lb.dp.maps.vip(&svc.key).unwrap().unwrap();
    assert_eq!((before.ring_half, before.backend_count), (0, 3));
    svc.backends.pop();
    let after = lb.dp.maps.apply_service(&svc).unwrap();
    assert_eq!((after.ring_half, after.backend_count), (1, 2));
    let live = lb.dp.maps.vip(&svc.key).unwrap().unwrap();
    assert_eq!(live, after);
    // The new live ring is exactly what the Maglev builder says.
    let want = svc.ring(lb.dp.sizing().ring_size, lb.dp.sizing().hash_seed);
    for slot in (0..want.len() as u32).step_by(97) {
        assert_eq!(lb.dp.maps.ring_slot(&live, slot).unwrap(), want[slot as usize]);
    }
    // The old ring is left intact for packets still reading it.
    for slot in (0..want.len() as u32).step_by(997) {
        let old = lb.dp.maps.ring_slot(&before, slot).unwrap();
        assert!((1..=3).contains(&old));
    }
    // After more swaps (each writing only the slots that differ from the spare ring), every
    // slot of the live ring is still exactly the builder's.
    let full = pool4(PROTO_TCP);
    for svc in [full.clone(), { let mut s = full.clone(); s.backends.remove(0); s }, full] {
        let live = lb.dp.maps.apply_service(&svc).unwrap();
        let want = svc.ring(lb.dp.sizing().ring_size, lb.dp.sizing().hash_seed);
        for (slot, id) in want.iter().enumerate() {
            assert_eq!(lb.dp.maps.ring_slot(&live, slot as u32).unwrap(), *id, "slot {slot}");
        }
    }
}

/// Two VIPs whose keys share a `VIP_INDEX` slot are both served (looked up in `VIPS`); once one
/// is removed, the other is served from its `VIP_ENTRIES` entry, which every update replaces by
/// the VIP's other entry before the index names it.
#[test]
fn vips_sharing_an_index_slot_are_served_and_every_update_reaches_the_packets() {
    let a = pool4(PROTO_TCP);
    let slot = lb_common::hash::vip_slot(&a.key);
    let port = (1..=u16::MAX)
        .find(|&p| p != a.key.port && lb_common::hash::vip_slot(&VipKey { port: p, ..a.key }) == slot)
        .expect("a port of VIP4 shares the slot");
    let b = service(3, VIP4, port, PROTO_TCP, 21, &[(v4(21), 8080, 1), (v4(22), 8080, 1)]);
    let mut lb = setup(&[&a, &b]);
    let syn = |svc: &Service, sport: u16| from_client(CLIENT4, VIP4, tcp(sport, svc.key.port, SYN));
    let sent = |lb: &Lb, svc: &Service, f: &Frame| {
        let chosen = lb.ring_choice(svc, &flow_key(f));
        let (ip, bport) = backend_endpoint(svc, chosen);
        let run = lb.run(&f.bytes());
        assert_eq!(run.action, XDP_TX, "VIP {}", svc.id);
        assert_eq!(run.out, to_endpoint(f, ip, bport, backend_mac(chosen), LB_MAC).bytes(), "VIP {}", svc.id);
        chosen
    };

    assert_eq!(lb.dp.maps.vip_index_entry(&a.key).unwrap(), (VIP_INDEX_SHARED, None));
    for sport in [40000, 40001, 40002] {
        sent(&lb, &a, &syn(&a, sport));
        sent(&lb, &b, &syn(&b, sport));
    }

    lb.dp.maps.remove_vip(&b.key).unwrap();
    let (value, entry) = lb.dp.maps.vip_index_entry(&a.key).unwrap();
    let entry = entry.expect("the slot names a's entry");
    assert_eq!((entry.key, entry.meta), (a.key, lb.dp.maps.vip(&a.key).unwrap().unwrap()));
    sent(&lb, &a, &syn(&a, 40003));
    let run = lb.run(&syn(&b, 40003).bytes());
    assert_eq!((run.action, run.counted), (XDP_PASS, vec![(Reason::PassNotVip, 1)]), "b is gone");

    // New backends for a: its SYNs go to them, by the entry the index names now.
    let moved = service(1, VIP4, 80, PROTO_TCP, 4, &[(v4(4), 8080, 1), (v4(5), 8080, 1)]);
    lb.dp.maps.apply_service(&moved).unwrap();
    let (after, entry) = lb.dp.maps.vip_index_entry(&a.key).unwrap();
    assert_ne!(after, value, "the other entry was written and named");
    assert_eq!(entry.map(|e| e.meta), lb.dp.maps.vip(&a.key).unwrap());
    for sport in [40004, 40005, 40006, 40007] {
        assert!([4, 5].contains(&sent(&lb, &moved, &syn(&moved, sport))));
    }
}

/// Pins the calling thread to CPU 0, so per-CPU state (round-robin cursors) is one sequence.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

#[test]
fn round_robin_visits_backends_in_weighted_turns() {
    pin_to_cpu0();
    let mut svc = service(1, VIP4, 80, PROTO_TCP, 1, &[(v4(1), 80, 1), (v4(2), 80, 2), (v4(3), 80, 3)]);
    svc.flags = VIP_FLAG_ROUND_ROBIN;
    let lb = setup(&[&svc]);
    let sent = choices(&lb, 600, 11);
    // Smooth weighted round robin over weights 1, 2, 3: the same six-flow turn, repeated.
    assert_eq!(&sent[..6], &[3, 2, 1, 3, 2, 3]);
    for turn in sent.chunks(6) {
        assert_eq!(turn, &sent[..6]);
    }
}

#[test]
fn least_conn_prefers_the_less_loaded_candidate() {
    let svc = {
        let mut s = service(1, VIP4, 80, PROTO_TCP, 1, &[(v4(1), 80, 1), (v4(2), 80, 1)]);
        s.flags = VIP_FLAG_LEAST_CONN;
        s
    };
    let mut lb = setup(&[&svc]);
    let loaded: std::collections::HashMap<u32, u64> = [(1, 1000), (2, 0)].into();
    lb.dp.maps.set_active_connections([1, 2].into_iter(), &loaded).unwrap();
    // Fewer new flows than the loaded backend's head start, so the idle one stays less loaded.
    let sent = choices(&lb, 900, 21);
    let to_idle = sent.iter().filter(|&&b| b == 2).count();
    // A flow stays on the loaded backend only when both of its candidate slots hold it:
    // one time in four with two equal backends.
    let share = to_idle as f64 / sent.len() as f64;
    println!("least-conn: {:.1} % of new flows to the idle backend", share * 100.0);
    assert!((0.68..=0.82).contains(&share), "share to the idle backend {share:.3}");
    assert_eq!(lb.dp.maps.active_connections_of(2).unwrap(), to_idle as u64, "each new flow counted");
    assert_eq!(lb.dp.maps.active_connections_of(1).unwrap(), 1000 + (sent.len() - to_idle) as u64);
}

/// Collects the program's log records.
struct Collected(std::sync::Mutex<Vec<String>>);

impl log::Log for Collected {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

static COLLECTED: Collected = Collected(std::sync::Mutex::new(Vec::new()));

#[test]
fn debug_logs_report_rare_events() {
    require_root();
    let mut svc = pool4(PROTO_TCP);
    for b in &mut svc.backends {
        b.backend.state = BackendState::Down as u8;
    }
    let mut lb = Lb::from_dataplane(lb_userspace::dataplane::Dataplane::load_with_debug_logs(&test_sizing(1), &COLLECTED).unwrap());
    lb.dp.maps.apply_service(&svc).unwrap();
    let mut logs = lb.dp.take_debug_logs().expect("loaded with logs");
    assert_eq!(lb.run(&from_client(CLIENT4, VIP4, tcp(1234, 80, SYN)).bytes()).action, XDP_DROP);
    logs.flush();
    let records = COLLECTED.0.lock().unwrap().clone();
    assert!(
        records.iter().any(|r| r == "DEBUG VIP 1: no backend for a new flow (reason 13)"),
        "{records:?}"
    );
    assert_eq!(Reason::DropNoBackend as u32, 13);
}

#[test]
fn removed_vip_sends_its_established_flows_to_the_kernel() {
    // Removing the VIP must send its flows' packets to the kernel at once, and adding it back
    // must resume balancing them on the same backends.
    let svc = pool4(PROTO_TCP);
    let mut lb = setup(&[&svc]);
    let flow = from_client(CLIENT4, VIP4, tcp(44000, 80, SYN));
    let backend = establish(&lb, &svc, &flow);
    let next = with_flags(&flow, ACK).bytes();
    assert_eq!(sent_to(&lb.run(&next).out), backend);

    lb.dp.maps.remove_vip(&svc.key).unwrap();
    expect_passed(&lb, &next, Reason::PassNotVip);

    lb.dp.maps.apply_service(&svc).unwrap();
    let run = lb.run(&next);
    assert_eq!(run.action, XDP_TX);
    assert_eq!(sent_to(&run.out), backend, "the tracked flow resumes on its backend");
}

#[test]
fn host_traffic_from_a_backend_port_on_another_address_passes() {
    // The endpoint filter lets traffic that is neither for a VIP nor from a backend skip both
    // lookups; traffic that matches a backend's port but not its address still passes.
    let lb = setup(&[&pool4(PROTO_TCP)]);
    let host = from_client(v4(200), CLIENT4, tcp(8080, 40000, ACK)).bytes();
    expect_passed(&lb, &host, Reason::PassNotVip);
}

#[test]
fn reply_hop_follows_a_neighbour_change_within_its_ttl() {
    // Replies reuse the FIB's answer for a client for `CLIENT_HOP_TTL_SECS`; a changed
    // neighbour (a router's failover, a client's new MAC) must reach them after that.
    let svc = pool4(PROTO_TCP);
    let lb = setup(&[&svc]);
    let syn = from_client(CLIENT4, VIP4, tcp(45000, 80, SYN));
    let chosen = lb.ring_choice(&svc, &flow_key(&syn));
    let (bip, bport) = backend_endpoint(&svc, chosen);
    let reply = syn_ack_of(&syn, chosen, bip, bport);
    expect_reply(&lb, &reply, &syn);
    let new_mac: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x99];
    let ns = lb.netns().expect("its own namespace");
    ns.exec(&["ip", "neigh", "replace", &CLIENT4.to_string(), "lladdr", "02:c1:00:00:00:99", "dev", CLIENT_SIDE_DEV, "nud", "permanent"]);
    let changed = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(lb_common::limits::CLIENT_HOP_TTL_SECS as u64 + 1);
    let mut last = Vec::new();
    while changed.elapsed() <= limit + std::time::Duration::from_millis(500) {
        let run = lb.run(&reply.bytes());
        assert_eq!(run.action, XDP_REDIRECT);
        last = run.out;
        if last[..6] == new_mac {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let took = changed.elapsed();
    let mut want = translated(&reply, &syn);
    want.dst_mac = new_mac;
    assert_eq!(last, want.bytes(), "the reply must go to the new MAC within {limit:?}");
    println!("neighbour change reached replies after {took:?} (bound {limit:?})");
    assert!(took <= limit + std::time::Duration::from_millis(200), "took {took:?}");
}


#[test]
fn fragments_of_a_source_affinity_vip_follow_their_client() {
    // The address's only UDP VIP hashes on the client address alone, so every fragment of a
    // datagram (the later ones have no port) goes to the client's backend.
    let mut svc = pool4(PROTO_UDP);
    svc.flags = VIP_FLAG_HASH_SRC_ONLY;
    let mut lb = setup(&[&svc]);
    let mut dgram = from_client(CLIENT4, VIP4, udp(5353, 80));
    dgram.payload = (0..100u8).collect();
    let chosen = lb.ring_choice(&svc, &flow_key(&dgram));
    let (bip, bport) = backend_endpoint(&svc, chosen);
    let (first, later) = ipv4_fragments(&dgram.bytes(), 64);
    let want = to_endpoint(&dgram, bip, bport, backend_mac(chosen), LB_MAC).bytes();
    let (want_first, want_later) = ipv4_fragments(&want, 64);
    for (what, input, expected) in [("first", &first, &want_first), ("later", &later, &want_later)] {
        let run = lb.run(input);
        assert_eq!(run.action, XDP_TX, "{what} fragment");
        assert_eq!(&run.out, expected, "{what} fragment: address (and, first, port and UDP checksum) rewritten");
        assert_eq!(checksum(0, &run.out[14..34]), 0, "{what} fragment: IPv4 header checksum");
        assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1)]);
    }
    assert_eq!(lb.dp.maps.conn_count(), 0, "fragments create no entry");

    // A second UDP VIP on the address: a later fragment could belong to either, so both drop.
    let other = service(3, VIP4, 81, PROTO_UDP, 21, &[(v4(21), 8081, 1)]);
    lb.dp.maps.apply_service(&other).unwrap();
    for input in [&first, &later] {
        let run = lb.run(input);
        assert_eq!((run.action, run.counted), (XDP_DROP, vec![(Reason::DropFragment, 1)]));
    }
    // Removing it gives the fragments back to the source-affinity VIP.
    lb.dp.maps.remove_vip(&other.key).unwrap();
    assert_eq!(lb.run(&later).out, want_later);
}

#[test]
fn the_agents_choice_equals_the_data_paths_for_every_flow() {
    // `lb explain` answers with `Maps::choose`: the same scheduler code on the same maps. For
    // 1,000 new flows per case it must name the backend the data path sends each to.
    let base = service(1, VIP4, 80, PROTO_TCP, 1, &[(v4(1), 80, 1), (v4(2), 80, 2), (v4(3), 80, 1), (v4(4), 80, 3)]);
    // Name, service, and a backend slot to set to a state before the flows.
    type Case = (&'static str, Service, Option<(u32, BackendState)>);
    let mut cases: Vec<Case> = Vec::new();
    cases.push(("maglev", base.clone(), None));
    let mut src_only = base.clone();
    src_only.flags = VIP_FLAG_HASH_SRC_ONLY;
    cases.push(("source affinity", src_only, None));
    let mut least = base.clone();
    least.flags = VIP_FLAG_LEAST_CONN;
    cases.push(("least-conn", least.clone(), None));
    cases.push(("maglev, a backend down before the ring swap", base.clone(), Some((2, BackendState::Down))));
    cases.push(("least-conn, a backend draining before the ring swap", least, Some((4, BackendState::Draining))));
    for (what, svc, changed) in cases {
        let mut lb = setup(&[&svc]);
        if svc.flags & VIP_FLAG_LEAST_CONN != 0 {
            let counts: std::collections::HashMap<u32, u64> = [(1, 40), (2, 0), (3, 25), (4, 7)].into();
            lb.dp.maps.set_active_connections([1, 2, 3, 4].into_iter(), &counts).unwrap();
        }
        if let Some((id, state)) = changed {
            let mut b = svc.backends.iter().find(|b| b.id == id).unwrap().backend;
            b.state = state as u8;
            lb.dp.maps.set_backend(id, &b).unwrap();
        }
        let meta = lb.dp.maps.vip(&svc.key).unwrap().unwrap();
        let mut flows = Flows(0xfeed ^ svc.flags as u64);
        let (mut seen, mut dropped) = (std::collections::HashSet::new(), 0);
        for n in 0..1000 {
            let (ip, port) = flows.next();
            let syn = from_client(ip, VIP4, tcp(port, 80, SYN));
            let told = lb.dp.maps.choose(&meta, &flow_key(&syn)).expect("not round robin");
            let run = lb.run(&syn.bytes());
            match told {
                Ok(chosen) => {
                    assert_eq!(run.action, XDP_TX, "{what}: flow {n}");
                    assert_eq!(sent_to(&run.out), chosen.id, "{what}: flow {n} ({ip}:{port})");
                    seen.insert(chosen.id);
                }
                // Every slot within reach of the flow's holds the backend that is not up.
                Err(reason) => {
                    let mut counted = vec![(reason, 1)];
                    if svc.flags & VIP_FLAG_LEAST_CONN == 0 {
                        counted.push((Reason::Stateless, 1));
                    }
                    assert_eq!((run.action, run.counted), (XDP_DROP, counted), "{what}: flow {n}");
                    dropped += 1;
                }
            }
        }
        println!("{what}: {} backends, {dropped} of 1000 flows dropped by both", seen.len());
        assert!(dropped <= 50, "{what}: {dropped} of 1000 dropped");
        if let Some((id, _)) = changed {
            assert!(!seen.contains(&id), "{what}: no new flow to backend {id}");
        }
        assert!(seen.len() >= 3, "{what}: the flows must reach several backends: {seen:?}");
    }
}
