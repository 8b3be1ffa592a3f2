//! Flow-state fixtures through the real XDP program (BPF_PROG_TEST_RUN): one connection-table
//! entry per flow, replies without per-flow state, two nodes agreeing, SYN floods that evict
//! no established flow, the FIN/RST/UDP-idle lifecycle, flows resumed without an entry, and
//! sanity before state (nothing malformed or martian reaches a backend or creates an entry).
//!
//! A Maglev VIP keeps entries only in moved ring slots (`ring_history.rs` tests when slots
//! move); the connection-table cases here run with every slot of their Maglev VIPs moved
//! ([`setup_tracked`]), which is how a VIP that was round-robin before is served.
//!
//! Every case states its input frames, the expected verdicts, the exact expected output bytes
//! where a frame is forwarded (built from scratch by `lb_tests::packet`), the counter changes
//! and the table contents. Needs root. Sleeps about 7 s in all (two lifecycle tests).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use lb_common::{
    counters::Reason,
    flow::{FLOW_CLOSING, FLOW_IDLE, FLOW_OPEN, FLOW_RESET},
    limits::{TCP_CLOSING_IDLE_SECS, TCP_RESET_LINGER_SECS},
    maps::*,
};
use lb_tests::{fixture::*, harness::*, packet::*};
use lb_userspace::dataplane::{Service, Sizing};

// ---------------------------------------------------------------------------------------
// Addresses and services of their own (two octets per backend), and helpers of this file.
// ---------------------------------------------------------------------------------------

/// A second IPv4 VIP address on the same node.
const VIP4B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
/// A second IPv6 VIP address on the same node.
const VIP6B: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

fn v4(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, c, d))
}

fn v6(c: u16, d: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xb, c, 0, 0, 0, d))
}

/// Three IPv4 backends 10.1.0.{1,2,3}:8080 (slots 1..=3) behind VIP4:80, Maglev.
fn pool4(proto: u8) -> Service {
    service(1, VIP4, 80, proto, 1, &[(v4(0, 1), 8080, 1), (v4(0, 2), 8080, 1), (v4(0, 3), 8080, 1)])
}

/// Three IPv6 backends (slots 11..=13) behind VIP6:443, Maglev.
fn pool6(proto: u8) -> Service {
    service(2, VIP6, 443, proto, 11, &[(v6(0, 1), 8443, 1), (v6(0, 2), 8443, 1), (v6(0, 3), 8443, 1)])
}

/// Three IPv4 backends 10.1.1.{1,2,3}:8080 (slots 21..=23) behind VIP4B:80, round robin.
fn rr4(proto: u8) -> Service {
    let mut s = service(3, VIP4B, 80, proto, 21, &[(v4(1, 1), 8080, 1), (v4(1, 2), 8080, 1), (v4(1, 3), 8080, 1)]);
    s.flags = VIP_FLAG_ROUND_ROBIN;
    s
}

/// Counters of a forwarded packet in a moved slot.
const FWD: [(Reason, u64); 2] = [(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1)];
/// Counters of a TCP packet in a moved slot without entry or SYN (and no retained ring).
const RESUMED: [(Reason, u64); 3] = [(Reason::ForwardToBackend, 1), (Reason::FlowResumedWithoutEntry, 1), (Reason::MovedSlot, 1)];

/// Loads the program with `services` (sized `sizing`) and marks every ring slot of the Maglev
/// ones moved, without a retained ring: each is first written as round-robin, then as Maglev.
fn setup_tracked_with(sizing: &Sizing, services: &[&Service]) -> Lb {
    let rr: Vec<Service> = services
        .iter()
        .map(|s| Service { flags: if s.flags & VIP_FLAG_LEAST_CONN == 0 { s.flags | VIP_FLAG_ROUND_ROBIN } else { s.flags }, ..(*s).clone() })
        .collect();
    let mut lb = setup_with(sizing, &rr.iter().collect::<Vec<_>>());
    for svc in services {
        let meta = lb.dp.maps.apply_service(svc).unwrap();
        if svc.flags & (VIP_FLAG_ROUND_ROBIN | VIP_FLAG_LEAST_CONN) == 0 {
            assert_eq!((meta.retained(), lb.dp.maps.moved_count(svc.id)), (None, lb.dp.sizing().ring_size));
        }
    }
    lb
}

/// [`setup_tracked_with`] at the test sizes.
fn setup_tracked(services: &[&Service]) -> Lb {
    setup_tracked_with(&test_sizing(1), services)
}

/// Runs backend reply `reply` to client frame `first` and checks it left translated towards
/// the client (XDP_REDIRECT out of the client side found by the FIB). Returns the output.
fn expect_reply(lb: &Lb, reply: &Frame, first: &Frame) -> Vec<u8> {
    let run = lb.run(&reply.bytes());
    assert_eq!(run.action, XDP_REDIRECT, "reply verdict");
    assert_eq!(run.out, translated(reply, first).bytes(), "reply rewritten to the VIP towards the client");
    verify_checksums(&run.out).expect("reply checksums");
    assert_eq!(run.counted, vec![(Reason::ReplyToClient, 1)]);
    run.out
}

/// `f` as the data path should send it to backend `id` of `svc`.
fn to_backend(svc: &Service, f: &Frame, id: u32) -> Vec<u8> {
    let (ip, port) = backend_endpoint(svc, id);
    to_endpoint(f, ip, port, backend_mac(id), LB_MAC).bytes()
}

/// Runs client frame `f` and expects it sent to backend `id` of `svc` (XDP_TX, exact bytes),
/// counted as `counted`. Returns the output.
fn expect_forwarded(lb: &Lb, svc: &Service, f: &Frame, id: u32, counted: &[(Reason, u64)]) -> Vec<u8> {
    let run = lb.run(&f.bytes());
    assert_eq!(run.action, XDP_TX, "verdict of {f:?}");
    assert_eq!(sent_to(&run.out), id, "backend of {f:?}");
    assert_eq!(run.out, to_backend(svc, f, id), "rewritten to backend {id}");
    verify_checksums(&run.out).expect("forwarded checksums");
    assert_eq!(run.counted, counted, "counters of {f:?}");
    run.out
}

/// Runs `frame` and expects it dropped untouched, counted once under `reason`.
fn expect_dropped(lb: &Lb, frame: &[u8], reason: Reason, what: &str) {
    let run = lb.run(frame);
    assert_eq!(run.action, XDP_DROP, "{what}: verdict");
    assert_eq!(run.out, frame, "{what}: a dropped frame is untouched");
    assert_eq!(run.counted, vec![(reason, 1)], "{what}: counters");
}

/// Establishes `syn`'s flow on a Maglev VIP in a moved slot (its SYN, recorded half-open, then
/// an ACK, which inserts its entry), checking both runs exactly; returns its backend.
fn establish(lb: &Lb, svc: &Service, syn: &Frame) -> u32 {
    let key = flow_key(syn);
    let chosen = lb.ring_choice(svc, &key);
    expect_forwarded(lb, svc, syn, chosen, &FWD);
    assert_eq!(lb.dp.maps.conn(&key).unwrap(), None, "a SYN inserts nothing into CONNS");
    assert_eq!(lb.dp.maps.half_open(&key).unwrap().map(|e| e.backend_id), Some(chosen));
    expect_forwarded(lb, svc, &with_flags(syn, ACK), chosen, &FWD);
    let entry = lb.dp.maps.conn(&key).unwrap().expect("the handshake's ACK inserts the entry");
    assert_eq!((entry.backend_id, entry.vip_id as u32, entry.state), (chosen, svc.id, FLOW_OPEN));
    chosen
}

/// Seconds of the clock the data path uses (`bpf_ktime_get_coarse_ns`: CLOCK_MONOTONIC_COARSE).
fn coarse_now() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u32
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

/// Sum of 16-bit words (RFC 1071, before folding).
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2).map(|c| ((c[0] as u32) << 8) | c.get(1).copied().unwrap_or(0) as u32).sum()
}

/// Recomputes the IPv4 header checksum of an untagged frame (header without options).
fn fix_ipv4_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let c = checksum(0, &f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the TCP checksum of an untagged IPv4/IPv6 TCP frame over the whole rest of the
/// frame (whatever its headers now say).
fn fix_tcp_checksum(f: &mut [u8]) {
    let (l4, addrs) = if f[12..14] == [0x08, 0x00] { (34, 26..34) } else { (54, 22..54) };
    f[l4 + 16] = 0;
    f[l4 + 17] = 0;
    let len = f.len() - l4;
    let pseudo = sum16(&f[addrs]) + PROTO_TCP as u32 + len as u32;
    let c = checksum(pseudo, &f[l4..]);
    f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

/// Whether `a` is a martian (computed here, independently of `lb_common::martian`).
fn martian(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            let o = a.octets()[0];
            o == 0 || o == 127 || o >= 224
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast(),
    }
}

const MARTIANS4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(255, 255, 255, 255),
    Ipv4Addr::new(224, 0, 0, 1),
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(0, 0, 0, 0),
];

const MARTIANS6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::LOCALHOST,
    Ipv6Addr::UNSPECIFIED,
];

// ---------------------------------------------------------------------------------------
// 1. Replies need no per-flow state.
// ---------------------------------------------------------------------------------------

#[test]
fn reply_without_per_flow_state() {
    let (s4, s6) = (pool4(PROTO_TCP), pool6(PROTO_TCP));
    let lb = setup(&[&s4, &s6]);
    for (svc, first) in [
        (&s4, from_client(CLIENT4, VIP4, tcp(40000, 80, SYN))),
        (&s6, from_client(CLIENT6, VIP6, tcp(50000, 443, SYN))),
    ] {
        // Nothing was established: no client packet ran at all. Every backend's SYN-ACK and
        // data segment is still translated to the VIP and sent towards the client.
        for b in &svc.backends {
            let (ip, port) = backend_endpoint(svc, b.id);
            for flags in [SYN_ACK, ACK, ACK | 0x08 /* PSH */, ACK | 0x01 /* FIN */] {
                expect_reply(&lb, &reply_of(&first, b.id, ip, port, flags), &first);
            }
        }
        assert_eq!(lb.dp.maps.conn(&flow_key(&first)).unwrap(), None);
        assert_eq!(lb.dp.maps.half_open(&flow_key(&first)).unwrap(), None);
    }
    assert_eq!(lb.dp.maps.conn_count(), 0, "replies insert nothing");
    let t = lb.dp.maps.vip_traffic(s4.id).unwrap();
    assert_eq!((t.packets, t.new_flows), (12, 0), "replies counted as VIP traffic, no new flow");
}

// ---------------------------------------------------------------------------------------
// 2. Another node with the same configuration takes over a flow without its entry.
// ---------------------------------------------------------------------------------------

#[test]
fn second_instance_translates_and_forwards_the_same() {
    let svc = pool4(PROTO_TCP);
    let a = setup_tracked(&[&svc]);
    let b = setup_tracked(&[&svc]);
    let syn = from_client(CLIENT4, VIP4, tcp(40123, 80, SYN));
    let key = flow_key(&syn);
    let backend = establish(&a, &svc, &syn);

    let ack = with_flags(&syn, ACK);
    let on_a = expect_forwarded(&a, &svc, &ack, backend, &FWD);
    assert_eq!(b.dp.maps.conn_count(), 0, "instance B starts empty");
    let on_b = expect_forwarded(&b, &svc, &ack, backend, &RESUMED);
    assert_eq!(on_b, on_a, "both nodes send the flow's packet to the same backend, byte for byte");
    let entry = b.dp.maps.conn(&key).unwrap().expect("B now tracks the flow");
    assert_eq!((entry.backend_id, entry.state), (backend, FLOW_OPEN));
    // Its next packet on B is an established flow's: no longer counted as resumed.
    let again = expect_forwarded(&b, &svc, &ack, backend, &FWD);
    assert_eq!(again, on_a);

    let (ip, port) = backend_endpoint(&svc, backend);
    for flags in [SYN_ACK, ACK] {
        let reply = reply_of(&syn, backend, ip, port, flags);
        let via_a = expect_reply(&a, &reply, &syn);
        let via_b = expect_reply(&b, &reply, &syn);
        assert_eq!(via_a, via_b, "both nodes translate the reply the same");
    }
    assert_eq!((a.dp.maps.conn_count(), b.dp.maps.conn_count()), (1, 1));
}

// ---------------------------------------------------------------------------------------
// 3. A SYN flood of ten times the table evicts no established flow.
// ---------------------------------------------------------------------------------------

#[test]
fn syn_flood_of_ten_times_the_table_evicts_no_established_flow() {
    const CAPACITY: u32 = 1024;
    const PER_VIP: u16 = 100;
    let sizing = Sizing { conn_capacity: CAPACITY, half_open_capacity: CAPACITY, ..test_sizing(0x5eed) };
    let mut maglev = pool4(PROTO_TCP);
    let rr = rr4(PROTO_TCP);
    let mut lb = setup_tracked_with(&sizing, &[&maglev, &rr]);
    let fwd = [(Reason::ForwardToBackend, 1)];

    // Established flows: (service is Maglev, SYN, backend).
    let mut established: Vec<(bool, Frame, u32)> = Vec::new();
    for i in 0..PER_VIP {
        let syn = from_client(CLIENT4, VIP4, tcp(30000 + i, 80, SYN));
        let backend = establish(&lb, &maglev, &syn);
        established.push((true, syn, backend));
    }
    for i in 0..PER_VIP {
        let syn = from_client(CLIENT4, VIP4B, tcp(31000 + i, 80, SYN));
        let key = flow_key(&syn);
        let run = lb.run(&syn.bytes());
        assert_eq!((run.action, &run.counted[..]), (XDP_TX, &fwd[..]), "round-robin SYN {i}");
        let backend = sent_to(&run.out);
        assert_eq!(run.out, to_backend(&rr, &syn, backend));
        assert_eq!(lb.dp.maps.conn(&key).unwrap(), None, "a round-robin SYN is not in CONNS");
        assert_eq!(lb.dp.maps.half_open(&key).unwrap().map(|f| f.backend_id), Some(backend));
        expect_forwarded(&lb, &rr, &with_flags(&syn, ACK), backend, &fwd);
        assert_eq!(lb.dp.maps.conn(&key).unwrap().map(|f| f.backend_id), Some(backend));
        established.push((false, syn, backend));
    }
    let flows = established.len();
    assert_eq!(lb.dp.maps.conn_count(), flows);

    // The flood: ten times the table's capacity of SYNs from distinct spoofed (non-martian)
    // sources to each VIP.
    let flood = 10 * CAPACITY;
    for i in 0..flood {
        let src = IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i)); // 100.64.0.0/10 and up
        let sport = 1024 + (i % 50_000) as u16;
        for (vip, counted) in [(VIP4, &FWD[..]), (VIP4B, &fwd[..])] {
            let run = lb.run(&from_client(src, vip, tcp(sport, 80, SYN)).bytes());
            assert_eq!((run.action, &run.counted[..]), (XDP_TX, counted), "flood SYN {i} to {vip}");
        }
    }
    assert_eq!(lb.dp.maps.conn_count(), flows, "the flood inserted nothing into CONNS");

    // A backend is added in between: the Maglev ring changes, so established flows keep their
    // backend only thanks to their entries.
    maglev.backends.push(service(1, VIP4, 80, PROTO_TCP, 4, &[(v4(0, 4), 8080, 1)]).backends[0].clone());
    lb.dp.maps.apply_service(&maglev).unwrap();
    let moved = established
        .iter()
        .filter(|(m, syn, b)| *m && lb.ring_choice(&maglev, &flow_key(syn)) != *b)
        .count();
    assert!(moved > 5, "the new ring must move some established flows ({moved} moved)");

    for (is_maglev, syn, backend) in &established {
        let svc = if *is_maglev { &maglev } else { &rr };
        let ack = with_flags(syn, ACK);
        expect_forwarded(&lb, svc, &ack, *backend, if *is_maglev { &FWD } else { &fwd });
        let (ip, port) = backend_endpoint(svc, *backend);
        expect_reply(&lb, &reply_of(syn, *backend, ip, port, ACK), syn);
    }
    assert_eq!(lb.dp.maps.conn_count(), flows, "exactly the established flows are tracked");
}

// ---------------------------------------------------------------------------------------
// 4. FIN and RST shorten an entry's life.
// ---------------------------------------------------------------------------------------

#[test]
fn fin_and_rst_shorten_an_entry() {
    let svc = pool4(PROTO_TCP);
    let lb = setup_tracked(&[&svc]);
    let syn = from_client(CLIENT4, VIP4, tcp(45000, 80, SYN));
    let key = flow_key(&syn);
    let backend = establish(&lb, &svc, &syn);
    let fwd = FWD;

    let before = coarse_now();
    expect_forwarded(&lb, &svc, &with_flags(&syn, ACK | 0x01), backend, &fwd);
    let after = coarse_now();
    let e = lb.dp.maps.conn(&key).unwrap().expect("entry after FIN");
    assert_eq!((e.state, e.backend_id), (FLOW_CLOSING, backend), "FIN: closing");
    assert!(
        (before + TCP_CLOSING_IDLE_SECS..=after + TCP_CLOSING_IDLE_SECS).contains(&e.deadline),
        "FIN: deadline {} not now + {TCP_CLOSING_IDLE_SECS} ({before}..={after})",
        e.deadline
    );

    let before = coarse_now();
    expect_forwarded(&lb, &svc, &with_flags(&syn, ACK | 0x04), backend, &fwd);
    let after = coarse_now();
    let e = lb.dp.maps.conn(&key).unwrap().expect("entry after RST");
    assert_eq!((e.state, e.backend_id), (FLOW_RESET, backend), "RST: reset");
    assert!(
        (before + TCP_RESET_LINGER_SECS..=after + TCP_RESET_LINGER_SECS).contains(&e.deadline),
        "RST: deadline {} not now + {TCP_RESET_LINGER_SECS} ({before}..={after})",
        e.deadline
    );
    let reset_deadline = e.deadline;
    // Within the linger the flow still goes to its backend and the linger is not extended.
    expect_forwarded(&lb, &svc, &with_flags(&syn, ACK), backend, &fwd);
    assert_eq!(lb.dp.maps.conn(&key).unwrap().map(|e| (e.state, e.deadline)), Some((FLOW_RESET, reset_deadline)));

    // Past the linger: the entry is a miss (bounded sleep).
    std::thread::sleep(Duration::from_millis(3500));
    assert!(coarse_now() > reset_deadline, "the clock must be past the deadline");
    // The SYN's half-open entry, still in its LRU, gives the entry back (the same backend).
    let ack = with_flags(&syn, ACK);
    let chosen = lb.ring_choice(&svc, &key);
    expect_forwarded(&lb, &svc, &ack, chosen, &FWD);
    let e = lb.dp.maps.conn(&key).unwrap().expect("the entry is re-created");
    assert_eq!((e.state, e.deadline, e.backend_id), (FLOW_OPEN, 0, chosen), "re-created open");
    assert_eq!(lb.dp.maps.conn_count(), 1);
}

// ---------------------------------------------------------------------------------------
// 5. UDP entries idle out.
// ---------------------------------------------------------------------------------------

#[test]
fn udp_entry_expires_after_its_idle_timeout() {
    pin_to_cpu0();
    let mut maglev = pool4(PROTO_UDP);
    maglev.udp_idle_secs = 2;
    let mut rr = rr4(PROTO_UDP);
    rr.udp_idle_secs = 2;
    let lb = setup_tracked(&[&maglev, &rr]);
    let fwd = [(Reason::ForwardToBackend, 1)];

    let dgram = from_client(CLIENT4, VIP4, udp(5353, 80));
    let key = flow_key(&dgram);
    let chosen = lb.ring_choice(&maglev, &key);
    let rr_dgram = from_client(CLIENT4, VIP4B, udp(5354, 80));
    let rr_key = flow_key(&rr_dgram);
    let rr_meta = lb.dp.maps.vip(&rr.key).unwrap().unwrap();
    let rr_first = lb.dp.maps.ring_slot(&rr_meta, 0).unwrap();
    let rr_second = lb.dp.maps.ring_slot(&rr_meta, 1).unwrap();
    assert_ne!(rr_first, rr_second, "consecutive round-robin slots differ with equal weights");

    let before = coarse_now();
    expect_forwarded(&lb, &maglev, &dgram, chosen, &FWD);
    expect_forwarded(&lb, &rr, &rr_dgram, rr_first, &fwd);
    let after = coarse_now();
    let e = lb.dp.maps.conn(&key).unwrap().expect("a datagram inserts its entry");
    assert_eq!((e.state, e.idle_secs, e.backend_id), (FLOW_IDLE, 2, chosen));
    assert!((before + 2..=after + 2).contains(&e.deadline), "deadline {} not now + 2 ({before}..={after})", e.deadline);
    let old_deadline = e.deadline;
    let r = lb.dp.maps.conn(&rr_key).unwrap().expect("round-robin datagram entry");
    assert_eq!((r.state, r.backend_id), (FLOW_IDLE, rr_first));
    // While it lives the flow keeps its backend (the round-robin cursor is not consulted).
    expect_forwarded(&lb, &rr, &rr_dgram, rr_first, &fwd);

    std::thread::sleep(Duration::from_millis(3500));
    assert!(coarse_now() > old_deadline.max(r.deadline), "the clock must be past the deadlines");

    let before = coarse_now();
    expect_forwarded(&lb, &maglev, &dgram, chosen, &FWD);
    let after = coarse_now();
    let e = lb.dp.maps.conn(&key).unwrap().expect("re-created");
    assert_eq!((e.state, e.backend_id), (FLOW_IDLE, chosen));
    assert!(e.deadline > old_deadline, "the new entry's deadline moved forward");
    assert!((before + 2..=after + 2).contains(&e.deadline), "new deadline {} not now + 2", e.deadline);

    // The expired round-robin flow is scheduled anew: the cursor's next slot.
    expect_forwarded(&lb, &rr, &rr_dgram, rr_second, &fwd);
    let r = lb.dp.maps.conn(&rr_key).unwrap().expect("round-robin entry re-created");
    assert_eq!((r.state, r.backend_id), (FLOW_IDLE, rr_second));
    assert_eq!(lb.dp.maps.conn_count(), 2);
}

// ---------------------------------------------------------------------------------------
// 6. A non-SYN packet without an entry is a resumed flow; the handshake's ACK is not.
// ---------------------------------------------------------------------------------------

#[test]
fn non_syn_miss_is_counted_as_resumed() {
    let (s4, s6, rr) = (pool4(PROTO_TCP), pool6(PROTO_TCP), rr4(PROTO_TCP));
    let lb = setup_tracked(&[&s4, &s6, &rr]);
    let resumed = [(Reason::ForwardToBackend, 1), (Reason::FlowResumedWithoutEntry, 1)];
    let fwd = [(Reason::ForwardToBackend, 1)];

    for (svc, ack) in [
        (&s4, from_client(CLIENT4, VIP4, tcp(46000, 80, ACK))),
        (&s6, from_client(CLIENT6, VIP6, tcp(46000, 443, ACK))),
    ] {
        let key = flow_key(&ack);
        let chosen = lb.ring_choice(svc, &key);
        expect_forwarded(&lb, svc, &ack, chosen, &RESUMED);
        let e = lb.dp.maps.conn(&key).unwrap().expect("a resumed flow is tracked");
        assert_eq!((e.backend_id, e.vip_id as u32, e.state), (chosen, svc.id, FLOW_OPEN));
        expect_forwarded(&lb, svc, &ack, chosen, &FWD);

        // A handshake: its ACK is no resumed flow.
        let syn = with_flags(&with_sport(&ack, 46001), SYN);
        establish(&lb, svc, &syn);
    }

    // Round robin: an ACK without its SYN is resumed (and tracked) ...
    let ack = from_client(CLIENT4, VIP4B, tcp(46002, 80, ACK));
    let run = lb.run(&ack.bytes());
    assert_eq!((run.action, &run.counted[..]), (XDP_TX, &resumed[..]));
    let backend = sent_to(&run.out);
    assert_eq!(run.out, to_backend(&rr, &ack, backend));
    assert_eq!(lb.dp.maps.conn(&flow_key(&ack)).unwrap().map(|e| e.backend_id), Some(backend));
    // ... and the ACK after a SYN (half-open entry) is not.
    let syn = from_client(CLIENT4, VIP4B, tcp(46003, 80, SYN));
    let run = lb.run(&syn.bytes());
    assert_eq!((run.action, &run.counted[..]), (XDP_TX, &fwd[..]));
    let backend = sent_to(&run.out);
    expect_forwarded(&lb, &rr, &with_flags(&syn, ACK), backend, &fwd);
    assert_eq!(lb.dp.maps.conn(&flow_key(&syn)).unwrap().map(|e| e.backend_id), Some(backend));
    assert_eq!(lb.dp.maps.conn_count(), 6);
}

// ---------------------------------------------------------------------------------------
// 7. Sanity before state: one test per reason.
// ---------------------------------------------------------------------------------------

/// Nothing tracked for `frames`' flows, and nothing at all in CONNS.
fn nothing_tracked(lb: &Lb, frames: &[&Frame]) {
    assert_eq!(lb.dp.maps.conn_count(), 0, "nothing inserted");
    for f in frames {
        assert_eq!(lb.dp.maps.half_open(&flow_key(f)).unwrap(), None, "no half-open entry");
    }
}

#[test]
fn bad_ipv4_header_checksum_is_dropped() {
    let (s4, rr) = (pool4(PROTO_TCP), rr4(PROTO_TCP));
    let lb = setup(&[&s4, &rr]);
    let mut frames = Vec::new();
    for f in [
        from_client(CLIENT4, VIP4, tcp(47000, 80, SYN)),
        from_client(CLIENT4, VIP4, tcp(47000, 80, ACK)),
        from_client(CLIENT4, VIP4B, tcp(47001, 80, SYN)),
        from_client(CLIENT4, VIP4B, tcp(47001, 80, ACK)),
    ] {
        for (at, xor) in [(24, 0x01), (25, 0x80), (24, 0xff)] {
            let mut bytes = f.bytes();
            bytes[at] ^= xor;
            expect_dropped(&lb, &bytes, Reason::DropBadChecksum, "bad checksum to a VIP");
        }
        frames.push(f);
    }
    // Also from a backend: its reply is not translated.
    let (ip, port) = backend_endpoint(&s4, 1);
    let mut reply = reply_of(&frames[0], 1, ip, port, SYN_ACK).bytes();
    reply[25] ^= 0x10;
    expect_dropped(&lb, &reply, Reason::DropBadChecksum, "bad checksum from a backend");
    nothing_tracked(&lb, &frames.iter().collect::<Vec<_>>());
}

#[test]
fn ipv4_total_length_out_of_the_frame_is_dropped() {
    let s4 = pool4(PROTO_TCP);
    let lb = setup(&[&s4]);
    let syn = from_client(CLIENT4, VIP4, tcp(47100, 80, SYN));
    let ack = with_flags(&syn, ACK);
    for f in [&syn, &ack] {
        let base = f.bytes();
        let ip_len = (base.len() - 14) as u16; // 45
        // Beyond the frame; below the IP + TCP headers.
        for tot in [ip_len + 1, ip_len + 100, 0xffff, 39, 20, 0] {
            let mut bytes = base.clone();
            bytes[16..18].copy_from_slice(&tot.to_be_bytes());
            fix_ipv4_checksum(&mut bytes);
            expect_dropped(&lb, &bytes, Reason::DropBadLength, &format!("IPv4 total length {tot}"));
        }
    }
    // Also from a backend.
    let (ip, port) = backend_endpoint(&s4, 2);
    let mut reply = reply_of(&syn, 2, ip, port, SYN_ACK).bytes();
    reply[16..18].copy_from_slice(&0x0400u16.to_be_bytes());
    fix_ipv4_checksum(&mut reply);
    expect_dropped(&lb, &reply, Reason::DropBadLength, "reply with total length beyond the frame");
    nothing_tracked(&lb, &[&syn]);
}

#[test]
fn ipv6_payload_length_out_of_the_frame_is_dropped() {
    let s6 = pool6(PROTO_TCP);
    let lb = setup(&[&s6]);
    let syn = from_client(CLIENT6, VIP6, tcp(47200, 443, SYN));
    let ack = with_flags(&syn, ACK);
    for f in [&syn, &ack] {
        let base = f.bytes();
        let payload = (base.len() - 54) as u16; // 25
        for plen in [payload + 1, payload + 1000, 0xffff, 19, 0] {
            let mut bytes = base.clone();
            bytes[18..20].copy_from_slice(&plen.to_be_bytes());
            expect_dropped(&lb, &bytes, Reason::DropBadLength, &format!("IPv6 payload length {plen}"));
        }
    }
    nothing_tracked(&lb, &[&syn]);
}

#[test]
fn tcp_data_offset_below_five_is_dropped() {
    let (s4, s6, rr) = (pool4(PROTO_TCP), pool6(PROTO_TCP), rr4(PROTO_TCP));
    let lb = setup(&[&s4, &s6, &rr]);
    let frames = [
        from_client(CLIENT4, VIP4, tcp(47300, 80, SYN)),
        from_client(CLIENT4, VIP4, tcp(47300, 80, ACK)),
        from_client(CLIENT6, VIP6, tcp(47300, 443, SYN)),
        from_client(CLIENT6, VIP6, tcp(47300, 443, ACK)),
        from_client(CLIENT4, VIP4B, tcp(47301, 80, SYN)),
    ];
    for f in &frames {
        let l4 = if f.src.is_ipv4() { 34 } else { 54 };
        for doff in 0..5u8 {
            let mut bytes = f.bytes();
            bytes[l4 + 12] = doff << 4;
            fix_tcp_checksum(&mut bytes);
            expect_dropped(&lb, &bytes, Reason::DropBadTcpHeader, &format!("TCP data offset {doff}"));
        }
    }
    nothing_tracked(&lb, &frames.iter().collect::<Vec<_>>());
}

#[test]
fn martian_sources_are_dropped() {
    let (s4, s6, rr) = (pool4(PROTO_TCP), pool6(PROTO_TCP), rr4(PROTO_TCP));
    let lb = setup(&[&s4, &s6, &rr]);
    let mut frames = Vec::new();
    for src in MARTIANS4.map(IpAddr::V4) {
        for vip in [VIP4, VIP4B] {
            frames.push(from_client(src, vip, tcp(47400, 80, SYN)));
        }
    }
    for src in MARTIANS6.map(IpAddr::V6) {
        frames.push(from_client(src, VIP6, tcp(47400, 443, SYN)));
    }
    for syn in &frames {
        for flags in [SYN, ACK, ACK | 0x01, 0x04] {
            let f = with_flags(syn, flags);
            let bytes = f.bytes();
            verify_checksums(&bytes).expect("built with correct checksums");
            expect_dropped(&lb, &bytes, Reason::DropMartian, &format!("{} flags {flags:#x}", f.src));
        }
    }
    nothing_tracked(&lb, &frames.iter().collect::<Vec<_>>());

    // A backend's reply to a martian destination is not translated either.
    let (ip, port) = backend_endpoint(&s4, 1);
    for dst in MARTIANS4.map(IpAddr::V4) {
        let first = from_client(dst, VIP4, tcp(47401, 80, SYN));
        let reply = reply_of(&first, 1, ip, port, SYN_ACK).bytes();
        expect_dropped(&lb, &reply, Reason::DropMartian, &format!("reply to {dst}"));
    }
    let (ip, port) = backend_endpoint(&s6, 11);
    for dst in MARTIANS6.map(IpAddr::V6) {
        let first = from_client(dst, VIP6, tcp(47401, 443, SYN));
        let reply = reply_of(&first, 11, ip, port, SYN_ACK).bytes();
        expect_dropped(&lb, &reply, Reason::DropMartian, &format!("reply to {dst}"));
    }
    assert_eq!(lb.dp.maps.conn_count(), 0);
}

#[test]
fn vip_address_as_source_is_dropped() {
    // The backend-to-backend reflection case: a packet from a VIP address to a VIP (itself or
    // another VIP of the node) must not be balanced.
    let (s4, s6, rr) = (pool4(PROTO_TCP), pool6(PROTO_TCP), rr4(PROTO_TCP));
    let other6 = service(4, VIP6B, 8443, PROTO_TCP, 31, &[(v6(1, 1), 9443, 1)]);
    let lb = setup_with(&Sizing { vip_capacity: 8, ..test_sizing(0x5eed) }, &[&s4, &s6, &rr, &other6]);
    let frames = [
        from_client(VIP4, VIP4, tcp(47500, 80, SYN)),   // itself
        from_client(VIP4B, VIP4, tcp(47500, 80, SYN)),  // another VIP of the node
        from_client(VIP4, VIP4B, tcp(47500, 80, SYN)),  // to the round-robin VIP
        from_client(VIP4B, VIP4B, tcp(47501, 80, SYN)), // round-robin, itself
        from_client(VIP6, VIP6, tcp(47500, 443, SYN)),
        from_client(VIP6B, VIP6, tcp(47500, 443, SYN)),
    ];
    for syn in &frames {
        for flags in [SYN, ACK] {
            let f = with_flags(syn, flags);
            expect_dropped(&lb, &f.bytes(), Reason::DropMartian, &format!("{} → {} flags {flags:#x}", f.src, f.dst));
        }
    }
    nothing_tracked(&lb, &frames.iter().collect::<Vec<_>>());
    // The same port from a client is balanced: only the source made those martian.
    let syn = from_client(CLIENT4, VIP4, tcp(47500, 80, SYN));
    let stateless = [(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)];
    let chosen = lb.ring_choice(&s4, &flow_key(&syn));
    expect_forwarded(&lb, &s4, &syn, chosen, &stateless);
    expect_forwarded(&lb, &s4, &with_flags(&syn, ACK), chosen, &stateless);
    assert_eq!(lb.dp.maps.conn_count(), 0);
}

// ---------------------------------------------------------------------------------------
// 8. A hostile corpus: nothing malformed reaches a backend or creates an entry.
// ---------------------------------------------------------------------------------------

/// Whether `f` (an untagged frame to a TCP VIP) is a well-formed packet the data path may
/// forward: IPv4 without options or fragmentation and with a right header checksum, or IPv6
/// without extension headers; IP length exactly the frame's; TCP with data offset ≥ 5 inside
/// the IP length; right checksums; a source that is neither martian nor a VIP address.
fn well_formed(f: &[u8], vip_addrs: &[IpAddr]) -> bool {
    if f.len() < 14 {
        return false;
    }
    let (src, l4, ip_end): (IpAddr, usize, usize) = match [f[12], f[13]] {
        [0x08, 0x00] => {
            if f.len() < 34 || f[14] != 0x45 || checksum(0, &f[14..34]) != 0 || f[23] != PROTO_TCP {
                return false;
            }
            if u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0 {
                return false;
            }
            let s: [u8; 4] = f[26..30].try_into().unwrap();
            (s.into(), 34, 14 + u16::from_be_bytes([f[16], f[17]]) as usize)
        }
        [0x86, 0xdd] => {
            if f.len() < 54 || f[14] >> 4 != 6 || f[20] != PROTO_TCP {
                return false;
            }
            let s: [u8; 16] = f[22..38].try_into().unwrap();
            (s.into(), 54, 54 + u16::from_be_bytes([f[18], f[19]]) as usize)
        }
        _ => return false,
    };
    if ip_end != f.len() || f.len() < l4 + 20 {
        return false;
    }
    let doff = (f[l4 + 12] >> 4) as usize * 4;
    if doff < 20 || l4 + doff > ip_end {
        return false;
    }
    !martian(src) && !vip_addrs.contains(&src) && verify_checksums(f).is_ok()
}

/// The source address and TCP data offset (in words) of an untagged IPv4/IPv6 TCP frame.
fn source_and_doff(f: &[u8]) -> (IpAddr, u8) {
    if f[12..14] == [0x08, 0x00] {
        let s: [u8; 4] = f[26..30].try_into().unwrap();
        (s.into(), f[34 + 12] >> 4)
    } else {
        let s: [u8; 16] = f[22..38].try_into().unwrap();
        (s.into(), f[54 + 12] >> 4)
    }
}

/// Truncations and out-of-range header fields of `base`, labelled.
fn corpus(base: &Frame, vip_sources: &[IpAddr]) -> Vec<(String, Vec<u8>)> {
    let good = base.bytes();
    let is4 = base.src.is_ipv4();
    let l4 = if is4 { 34 } else { 54 };
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut push = |label: String, bytes: Vec<u8>| out.push((label, bytes));
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };

    for len in 14..=good.len() {
        push(format!("truncated to {len}"), good[..len].to_vec());
    }
    if is4 {
        for version in [0u8, 1, 5, 6, 15] {
            push(format!("IPv4 version {version}"), mutate(&|b| b[14] = version << 4 | 5));
            push(
                format!("IPv4 version {version}, checksum fixed"),
                mutate(&|b| {
                    b[14] = version << 4 | 5;
                    fix_ipv4_checksum(b);
                }),
            );
        }
        for ihl in (0u8..=15).filter(|&i| i != 5) {
            push(format!("IHL {ihl}"), mutate(&|b| b[14] = 0x40 | ihl));
            push(
                format!("IHL {ihl}, checksum fixed"),
                mutate(&|b| {
                    b[14] = 0x40 | ihl;
                    fix_ipv4_checksum(b);
                }),
            );
        }
        let ip_len = (good.len() - 14) as u16;
        for tot in [0u16, 1, 19, 20, 21, 39, ip_len + 1, ip_len + 2, 1500, 0xffff] {
            push(format!("total length {tot}"), mutate(&|b| b[16..18].copy_from_slice(&tot.to_be_bytes())));
            push(
                format!("total length {tot}, checksum fixed"),
                mutate(&|b| {
                    b[16..18].copy_from_slice(&tot.to_be_bytes());
                    fix_ipv4_checksum(b);
                }),
            );
        }
        for (at, xor) in [(24usize, 0x01u8), (25, 0x01), (24, 0xff), (25, 0xff), (14 + 12, 0x01), (14 + 8, 0x01)] {
            push(format!("header byte {at} ^ {xor:#x}, checksum stale"), mutate(&|b| b[at] ^= xor));
        }
        for (frags, what) in [(0x2000u16, "MF"), (0x00b9, "offset"), (0x3fff, "MF and offset"), (0x8000, "reserved bit")] {
            push(
                format!("fragment field {what}"),
                mutate(&|b| {
                    b[20..22].copy_from_slice(&frags.to_be_bytes());
                    fix_ipv4_checksum(b);
                }),
            );
        }
        for proto in [0u8, 1, 17, 255] {
            push(
                format!("IPv4 protocol {proto}"),
                mutate(&|b| {
                    b[23] = proto;
                    fix_ipv4_checksum(b);
                }),
            );
        }
    } else {
        for version in [0u8, 4, 5, 7, 15] {
            push(format!("IPv6 version {version}"), mutate(&|b| b[14] = version << 4));
        }
        let payload = (good.len() - 54) as u16;
        // Too small means below the headers: a length inside the frame but short of it is
        // Ethernet padding, which the data path rightly forwards (the L4 checksum is the
        // backend's to check), so it is no hostile case here.
        for plen in [0u16, 1, 19, payload + 1, payload + 2, 1500, 0xffff] {
            push(format!("payload length {plen}"), mutate(&|b| b[18..20].copy_from_slice(&plen.to_be_bytes())));
        }
        for next in [0u8, 17, 43, 44, 58, 59, 255] {
            push(format!("next header {next}"), mutate(&|b| b[20] = next));
        }
    }
    for doff in (0u8..=15).filter(|&d| d != 5) {
        push(
            format!("TCP data offset {doff}"),
            mutate(&|b| {
                b[l4 + 12] = doff << 4;
                fix_tcp_checksum(b);
            }),
        );
        if doff < 5 {
            push(format!("TCP data offset {doff}, checksum stale"), mutate(&|b| b[l4 + 12] = doff << 4));
        }
    }
    let sources: Vec<IpAddr> = if is4 {
        MARTIANS4.iter().map(|&a| a.into()).chain([Ipv4Addr::new(127, 255, 255, 254).into(), Ipv4Addr::new(240, 0, 0, 1).into()]).collect()
    } else {
        MARTIANS6.iter().map(|&a| a.into()).chain([Ipv6Addr::new(0xff05, 0, 0, 0, 0, 0, 1, 3).into()]).collect()
    };
    for src in sources.into_iter().chain(vip_sources.iter().copied().filter(|a| a.is_ipv4() == is4)) {
        let mut f = base.clone();
        f.src = src;
        push(format!("source {src}"), f.bytes());
    }
    out
}

/// Runs `frames` through `lb` and checks each: forwarded exactly when well-formed (then with
/// right checksums, a non-martian source and a data offset ≥ 5, to a backend), untouched
/// otherwise, and counted under exactly one verdict. Returns how many were forwarded.
fn run_corpus(lb: &Lb, frames: &[(String, Vec<u8>)], vip_addrs: &[IpAddr], backend_addrs: &[IpAddr]) -> usize {
    let totals = |lb: &Lb| -> u64 {
        let r = lb.dp.maps.reasons().unwrap();
        Reason::ALL.iter().filter(|r| !r.is_event()).map(|&reason| r[reason as usize]).sum()
    };
    let verdicts_before = totals(lb);
    let mut forwarded = 0;
    for (label, bytes) in frames {
        let run = lb.run(bytes);
        let sent = run.action == XDP_TX || run.action == XDP_REDIRECT;
        assert!(
            [XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT].contains(&run.action),
            "{label}: verdict {} ({:?})",
            run.action,
            run.counted
        );
        let verdicts: Vec<_> = run.counted.iter().filter(|(r, _)| !r.is_event()).collect();
        assert_eq!(verdicts.len(), 1, "{label}: exactly one verdict counted: {:?}", run.counted);
        assert_eq!(verdicts[0].1, 1, "{label}: counted once: {:?}", run.counted);
        let ok = well_formed(bytes, vip_addrs);
        assert_eq!(sent, ok, "{label}: forwarded {sent} (verdict {}, {:?}) but well-formed {ok}", run.action, run.counted);
        if sent {
            forwarded += 1;
            verify_checksums(&run.out).unwrap_or_else(|e| panic!("{label}: forwarded with a bad {e}"));
            let (src, doff) = source_and_doff(&run.out);
            assert!(!martian(src) && !vip_addrs.contains(&src), "{label}: forwarded from {src}");
            assert!(doff >= 5, "{label}: forwarded with data offset {doff}");
            let dst: IpAddr = if run.out[12..14] == [0x08, 0x00] {
                <[u8; 4]>::try_from(&run.out[30..34]).unwrap().into()
            } else {
                <[u8; 16]>::try_from(&run.out[38..54]).unwrap().into()
            };
            assert!(backend_addrs.contains(&dst), "{label}: forwarded to {dst}, no backend");
        } else {
            assert_eq!(run.out, *bytes, "{label}: not forwarded, so untouched ({:?})", run.counted);
            assert!(
                run.counted.iter().all(|(r, _)| !r.is_event()),
                "{label}: an event beside a non-forwarding verdict: {:?}",
                run.counted
            );
        }
    }
    assert_eq!(totals(lb) - verdicts_before, frames.len() as u64, "every packet counted exactly once");
    forwarded
}

#[test]
fn hostile_corpus_creates_no_entry_and_reaches_no_backend() {
    let (s4, s6, rr) = (pool4(PROTO_TCP), pool6(PROTO_TCP), rr4(PROTO_TCP));
    let lb = setup(&[&s4, &s6, &rr]);
    let vip_addrs = [VIP4, VIP4B, VIP6];
    let backend_addrs: Vec<IpAddr> = [&s4, &s6, &rr]
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| backend_endpoint(s, b.id).0))
        .collect();

    // SYNs: even a well-formed one inserts nothing into CONNS (Maglev VIPs), so the table
    // stays empty; the round-robin VIP's half-open table holds only the well-formed SYN's.
    let syns = [
        from_client(CLIENT4, VIP4, tcp(48000, 80, SYN)),
        from_client(CLIENT6, VIP6, tcp(48000, 443, SYN)),
        from_client(CLIENT4, VIP4B, tcp(48001, 80, SYN)),
    ];
    let mut frames = Vec::new();
    for syn in &syns {
        frames.extend(corpus(syn, &vip_addrs));
    }
    let forwarded = run_corpus(&lb, &frames, &vip_addrs, &backend_addrs);
    println!("SYN corpus: {} frames, {forwarded} forwarded", frames.len());
    // Per base: the pristine frame (full length), TCP data offset 6 (options inside the
    // payload, consistent lengths) and, for IPv4, the reserved fragment-field bit set.
    assert_eq!(forwarded, 3 + 2 + 3);
    assert_eq!(lb.dp.maps.conn_count(), 0, "no SYN, well-formed or not, inserted an entry");

    // ACKs: malformed ones first, which must insert nothing; then the well-formed ones, which
    // insert exactly their flows' entries (counted as resumed) at the round-robin VIP, and
    // nothing at the Maglev VIPs, whose slots have not moved.
    let acks: Vec<Frame> = syns.iter().map(|s| with_flags(&with_sport(s, ports(s).0 + 100), ACK)).collect();
    let mut frames = Vec::new();
    for ack in &acks {
        frames.extend(corpus(ack, &vip_addrs));
    }
    let (good, bad): (Vec<_>, Vec<_>) = frames.into_iter().partition(|(_, b)| well_formed(b, &vip_addrs));
    assert_eq!(run_corpus(&lb, &bad, &vip_addrs, &backend_addrs), 0);
    assert_eq!(lb.dp.maps.conn_count(), 0, "no malformed or martian ACK inserted an entry");
    for ack in &acks {
        assert_eq!(lb.dp.maps.half_open(&flow_key(ack)).unwrap(), None);
    }
    assert_eq!(run_corpus(&lb, &good, &vip_addrs, &backend_addrs), good.len());
    assert_eq!(lb.dp.maps.conn_count(), 1, "only the well-formed ACK's flow at the round-robin VIP is tracked");
    for ack in &acks {
        assert_eq!(lb.dp.maps.conn(&flow_key(ack)).unwrap().is_some(), ack.dst == VIP4B);
    }
}
