//! Kernel fixtures for state only on change: a Maglev VIP keeps no per-flow state while its
//! backends are stable, and after a change only the flows of moved ring slots meet the
//! connection table (README, "State only on change"). Frames run through the loaded program
//! with `BPF_PROG_TEST_RUN`; outputs are checked byte for byte against frames built by the
//! test's own packet code.

use std::{collections::BTreeSet, net::IpAddr, os::fd::AsFd as _};

use lb_common::{
    counters::Reason,
    limits::{DEFAULT_RING_RETENTION_SECS, NO_RING},
    maps::{FlowKey, PROTO_TCP, PROTO_UDP},
};
use lb_tests::{
    fixture::{sent_to, setup, v4, with_flags},
    harness::{
        ACK, CLIENT4, LB_MAC, Lb, SYN, VIP4, XDP_TX, backend_endpoint, backend_mac, flow_key, from_client, require_root,
        service, tcp, test_sizing, to_endpoint, udp,
    },
    packet::Frame,
};
use lb_userspace::dataplane::{Dataplane, PROGRAM, Pins, Service, table_walk};

/// Three equal backends (ids 1–3): ring A.
fn ring_a(proto: u8) -> Service {
    service(1, VIP4, 80, proto, 1, &[(v4(1), 8080, 1), (v4(2), 8080, 1), (v4(3), 8080, 1)])
}

/// Ring A with a fourth backend (id 4): ring B.
fn ring_b(proto: u8) -> Service {
    service(1, VIP4, 80, proto, 1, &[(v4(1), 8080, 1), (v4(2), 8080, 1), (v4(3), 8080, 1), (v4(4), 8080, 1)])
}

/// Ring A with backend 1 weighted three times: ring C (same backends, other slots).
fn ring_c(proto: u8) -> Service {
    service(1, VIP4, 80, proto, 1, &[(v4(1), 8080, 3), (v4(2), 8080, 1), (v4(3), 8080, 1)])
}

/// `n` TCP SYNs from the test client to the VIP, from ports 20000 on.
fn syns(n: u16) -> Vec<Frame> {
    (0..n).map(|i| from_client(CLIENT4, VIP4, tcp(20000 + i, 80, SYN))).collect()
}

/// Whether `flow`'s slot is marked moved.
fn moved(lb: &Lb, svc: &Service, flow: &Frame) -> bool {
    let key: FlowKey = flow_key(flow);
    let slot = lb_common::hash::flow_hash(&key, lb.dp.sizing().hash_seed, false) % lb.dp.sizing().ring_size;
    lb.dp.maps.is_moved(svc.id, slot)
}

/// Sends each SYN and its ACK, checking that nothing is recorded; returns their backends.
fn establish_stateless(lb: &Lb, flows: &[Frame]) -> Vec<u32> {
    flows
        .iter()
        .map(|syn| {
            let first = lb.run(&syn.bytes());
            let next = lb.run(&with_flags(syn, ACK).bytes());
            assert_eq!((first.action, next.action), (XDP_TX, XDP_TX));
            assert_eq!(sent_to(&first.out), sent_to(&next.out));
            assert_eq!(next.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)]);
            sent_to(&next.out)
        })
        .collect()
}

/// The connection table's and half-open table's entry counts, by a walk of both.
fn table_entries(lb: &Lb) -> (u64, u64) {
    let (conns, half_open) = lb.dp.maps.table_fds().unwrap();
    let counts = table_walk::count(conns.as_fd(), half_open.as_fd(), &[], 0).unwrap();
    (counts.entries, counts.half_open)
}

#[test]
fn a_syn_flood_at_a_stable_vip_inserts_nothing() {
    let svc = ring_a(PROTO_TCP);
    let lb = setup(&[&svc]);
    let mut sent = BTreeSet::new();
    for i in 0..20_000u32 {
        let client = IpAddr::V4(std::net::Ipv4Addr::from(0x6440_0000 | i));
        let syn = from_client(client, VIP4, tcp(1024 + (i % 60_000) as u16, 80, SYN));
        let run = lb.run(&syn.bytes());
        assert_eq!(run.action, XDP_TX, "SYN {i}");
        assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)], "SYN {i}");
        sent.insert(sent_to(&run.out));
    }
    assert_eq!(sent, BTreeSet::from([1, 2, 3]));
    assert_eq!(table_entries(&lb), (0, 0), "20,000 SYNs inserted no entry");
}

#[test]
fn after_a_change_old_flows_of_moved_slots_follow_the_retained_ring_and_new_ones_the_live_ring() {
    let a = ring_a(PROTO_TCP);
    let mut lb = setup(&[&a]);
    let flows = syns(400);
    let before = establish_stateless(&lb, &flows);
    assert_eq!(table_entries(&lb), (0, 0));

    let b = ring_b(PROTO_TCP);
    let meta = lb.dp.maps.apply_service(&b).unwrap();
    assert_eq!((meta.ring_half, meta.retained()), (1, Some(0)), "A is retained, B is live in the spare ring");
    assert!(meta.retained_until >= table_walk::now_secs() + DEFAULT_RING_RETENTION_SECS - 1);
    let marked = lb.dp.maps.moved_count(b.id);
    // Adding a fourth backend moves about a quarter of the slots.
    assert!((10_000..22_000).contains(&marked), "{marked} slots moved");

    let (mut in_moved, mut recorded) = (0, 0);
    for (syn, &backend) in flows.iter().zip(&before) {
        let ack = with_flags(syn, ACK);
        let run = lb.run(&ack.bytes());
        let (ip, port) = backend_endpoint(&b, backend);
        assert_eq!(run.action, XDP_TX);
        assert_eq!(run.out, to_endpoint(&ack, ip, port, backend_mac(backend), LB_MAC).bytes(), "an old flow keeps its backend");
        let entry = lb.dp.maps.conn(&flow_key(syn)).unwrap();
        if moved(&lb, &b, syn) {
            in_moved += 1;
            assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1), (Reason::RetainedRing, 1)]);
            assert_eq!(entry.map(|e| e.backend_id), Some(backend), "recorded");
            recorded += 1;
        } else {
            assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)]);
            assert_eq!(entry, None, "an unmoved slot records nothing");
        }
    }
    assert!(in_moved >= 50, "{in_moved} of 400 flows in moved slots");
    assert_eq!(table_entries(&lb), (recorded, 0));

    // A new connection in a moved slot goes to the live ring, through the half-open table.
    let syn = (30000..40000u16)
        .map(|p| from_client(CLIENT4, VIP4, tcp(p, 80, SYN)))
        .find(|f| moved(&lb, &b, f) && lb.ring_choice(&b, &flow_key(f)) == 4)
        .expect("a moved slot of the new backend");
    let run = lb.run(&syn.bytes());
    let (ip, port) = backend_endpoint(&b, 4);
    assert_eq!(run.out, to_endpoint(&syn, ip, port, backend_mac(4), LB_MAC).bytes());
    assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1)]);
    let key = flow_key(&syn);
    assert_eq!((lb.dp.maps.conn(&key).unwrap(), lb.dp.maps.half_open(&key).unwrap().map(|e| e.backend_id)), (None, Some(4)));
    let ack = with_flags(&syn, ACK);
    let run = lb.run(&ack.bytes());
    assert_eq!(run.out, to_endpoint(&ack, ip, port, backend_mac(4), LB_MAC).bytes(), "not the retained ring's backend");
    assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1)]);
    assert_eq!(lb.dp.maps.conn(&key).unwrap().map(|e| e.backend_id), Some(4), "moved to the connection table");
}

#[test]
fn a_udp_datagram_in_a_moved_slot_is_taken_as_an_old_flow() {
    let a = ring_a(PROTO_UDP);
    let mut lb = setup(&[&a]);
    let b = ring_b(PROTO_UDP);
    let flows: Vec<Frame> = (0..400u16).map(|i| from_client(CLIENT4, VIP4, udp(20000 + i, 80))).collect();
    let before: Vec<u32> = flows.iter().map(|f| sent_to(&lb.run(&f.bytes()).out)).collect();
    lb.dp.maps.apply_service(&b).unwrap();
    let mut in_moved = 0;
    for (f, &backend) in flows.iter().zip(&before) {
        let run = lb.run(&f.bytes());
        assert_eq!(sent_to(&run.out), backend);
        if moved(&lb, &b, f) {
            in_moved += 1;
            let entry = lb.dp.maps.conn(&flow_key(f)).unwrap().expect("recorded");
            assert_eq!((entry.backend_id, entry.state), (backend, lb_common::flow::FLOW_IDLE));
        }
    }
    assert!(in_moved >= 50, "{in_moved}");
}

#[test]
fn a_to_c_to_a_keeps_the_flows_of_each_ring() {
    let a = ring_a(PROTO_TCP);
    let c = ring_c(PROTO_TCP);
    let mut lb = setup(&[&a]);
    let old = syns(300);
    let old_backends = establish_stateless(&lb, &old);

    // A → C: flows that start under C in moved slots are recorded at their SYN and ACK.
    let first = lb.dp.maps.apply_service(&c).unwrap();
    let during: Vec<Frame> = (30000..30300u16).map(|p| from_client(CLIENT4, VIP4, tcp(p, 80, SYN))).collect();
    let during_backends: Vec<u32> = during
        .iter()
        .map(|syn| {
            let b = sent_to(&lb.run(&syn.bytes()).out);
            assert_eq!(sent_to(&lb.run(&with_flags(syn, ACK).bytes()).out), b);
            assert_eq!(b, lb.ring_choice(&c, &flow_key(syn)), "new flows follow the live ring");
            b
        })
        .collect();
    let marked = lb.dp.maps.moved_count(c.id);

    // C → A: the retained ring stays the first one (A), and no slot is unmarked.
    let second = lb.dp.maps.apply_service(&a).unwrap();
    assert_eq!(second.retained(), first.retained(), "the oldest ring stays retained");
    assert_ne!(second.ring_half, first.ring_half);
    assert_ne!(Some(second.ring_half), second.retained());
    assert!(second.retained_until >= first.retained_until);
    assert_eq!(lb.dp.maps.moved_count(a.id), marked, "A → C → A marks what A → C marked");

    for (syn, &backend) in old.iter().zip(&old_backends) {
        assert_eq!(sent_to(&lb.run(&with_flags(syn, ACK).bytes()).out), backend, "a flow of A");
    }
    let mut moved_c = 0;
    for (syn, &backend) in during.iter().zip(&during_backends) {
        let run = lb.run(&with_flags(syn, ACK).bytes());
        assert_eq!(sent_to(&run.out), backend, "a flow of C keeps its backend under A");
        moved_c += usize::from(backend != lb.ring_choice(&a, &flow_key(syn)));
    }
    assert!(moved_c >= 20, "{moved_c} flows of C whose backend A would not give");
}

#[test]
fn retirement_keeps_only_slots_with_divergent_live_flows() {
    let a = ring_a(PROTO_TCP);
    let c = ring_c(PROTO_TCP);
    let mut lb = setup(&[&a]);
    let flows = syns(300);
    let before = establish_stateless(&lb, &flows);
    let meta = lb.dp.maps.apply_service(&c).unwrap();
    // Old flows of moved slots send a packet: they are recorded, most on another backend
    // than C's.
    for syn in &flows {
        lb.run(&with_flags(syn, ACK).bytes());
    }
    let divergent: BTreeSet<u32> = flows
        .iter()
        .zip(&before)
        .filter(|(f, b)| moved(&lb, &c, f) && lb.ring_choice(&c, &flow_key(f)) != **b)
        .map(|(f, _)| lb_common::hash::flow_hash(&flow_key(f), lb.dp.sizing().hash_seed, false) % lb.dp.sizing().ring_size)
        .collect();
    assert!(divergent.len() >= 20, "{} divergent slots", divergent.len());

    // Not before the deadline.
    assert_eq!(lb.dp.maps.retire_rings(meta.retained_until - 1).unwrap(), vec![]);
    assert!(lb.dp.maps.moved_checks().is_empty(), "no check while a ring is retained");
    assert_eq!(lb.dp.maps.retire_rings(meta.retained_until).unwrap(), vec![c.key]);
    let retired = lb.dp.maps.vip(&c.key).unwrap().unwrap();
    assert_eq!((retired.retained_ring, retired.retained_until, retired.ring_half), (NO_RING, 0, meta.ring_half));

    // The walk finds the divergent flows' slots; every other moved slot is cleared.
    let checks = lb.dp.maps.moved_checks();
    assert_eq!(checks.len(), 1);
    let (conns, half_open) = lb.dp.maps.table_fds().unwrap();
    let counts = table_walk::count(conns.as_fd(), half_open.as_fd(), &checks, lb.dp.sizing().hash_seed).unwrap();
    let (vip, version, needed) = counts.moved[0].clone();
    assert_eq!((vip, &needed), (c.id, &divergent));
    lb.dp.maps.keep_moved(vip, version, &needed).unwrap();
    assert_eq!(lb.dp.maps.moved_count(c.id), divergent.len() as u32);

    // Every old flow still reaches its backend: the divergent ones by their entries, the
    // others by the live ring, now without state.
    for (syn, &backend) in flows.iter().zip(&before) {
        let run = lb.run(&with_flags(syn, ACK).bytes());
        assert_eq!(sent_to(&run.out), backend);
        let stateless = !moved(&lb, &c, syn);
        assert_eq!(run.counted.contains(&(Reason::Stateless, 1)), stateless);
    }

    // Without divergent flows (they ended: their entries are gone), a walk clears the rest.
    let tracked: Vec<FlowKey> = flows.iter().map(flow_key).filter(|k| lb.dp.maps.conn(k).unwrap().is_some()).collect();
    for key in &tracked {
        lb.dp.maps.forget_conn(key).unwrap();
    }
    let checks = lb.dp.maps.moved_checks();
    let counts = table_walk::count(conns.as_fd(), half_open.as_fd(), &checks, lb.dp.sizing().hash_seed).unwrap();
    let (vip, version, needed) = counts.moved[0].clone();
    assert!(needed.is_empty());
    // A walk made before a later change is not applied.
    assert_eq!(lb.dp.maps.keep_moved(vip, version + 1, &needed).unwrap(), 0);
    lb.dp.maps.keep_moved(vip, version, &needed).unwrap();
    assert_eq!(lb.dp.maps.moved_count(c.id), 0);
    for syn in flows.iter().take(50) {
        let run = lb.run(&with_flags(syn, ACK).bytes());
        assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)]);
    }
}

#[test]
fn a_second_instance_that_applies_the_change_later_sends_every_flow_alike() {
    let a = ring_a(PROTO_TCP);
    let b = ring_b(PROTO_TCP);
    let (mut one, mut two) = (setup(&[&a]), setup(&[&a]));
    let flows = syns(300);
    let backends = establish_stateless(&one, &flows);
    assert_eq!(establish_stateless(&two, &flows), backends, "same configuration, same choice");

    one.dp.maps.apply_service(&b).unwrap();
    // Between the two changes each flow's packets may reach either node (ECMP).
    for (syn, &backend) in flows.iter().zip(&backends) {
        let ack = with_flags(syn, ACK).bytes();
        assert_eq!((sent_to(&one.run(&ack).out), sent_to(&two.run(&ack).out)), (backend, backend));
    }
    two.dp.maps.apply_service(&b).unwrap();
    // The second node saw no packet of these flows since its change: its retained ring
    // gives the same backends.
    for (syn, &backend) in flows.iter().zip(&backends).rev() {
        let ack = with_flags(syn, ACK).bytes();
        assert_eq!((sent_to(&two.run(&ack).out), sent_to(&one.run(&ack).out)), (backend, backend));
    }
    // New connections after both changes: the same backend on both nodes.
    let client = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 9));
    for port in 40000..40200 {
        let syn = from_client(client, VIP4, tcp(port, 80, SYN)).bytes();
        assert_eq!(sent_to(&one.run(&syn).out), sent_to(&two.run(&syn).out), "port {port}");
    }
}

/// Removes an instance's pins when dropped.
struct RemovePins(Pins);

impl Drop for RemovePins {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

#[test]
fn an_agent_adopting_the_maps_during_a_retention_keeps_its_history() {
    require_root();
    let sizing = test_sizing(11);
    let pins = RemovePins(Pins::of_instance(&format!("test-history-{}", std::process::id())));
    let a = ring_a(PROTO_TCP);
    let b = ring_b(PROTO_TCP);
    let flows = syns(300);
    let (meta, marked, backends) = {
        let (dp, adopted) = Dataplane::open(&sizing, &pins.0, None, PROGRAM).expect("data path");
        assert!(!adopted);
        let mut lb = Lb::from_dataplane(dp);
        lb.dp.maps.apply_service(&a).unwrap();
        let backends = establish_stateless(&lb, &flows);
        let meta = lb.dp.maps.apply_service(&b).unwrap();
        (meta, lb.dp.maps.moved_count(b.id), backends)
    };
    let (dp, adopted) = Dataplane::open(&sizing, &pins.0, None, PROGRAM).expect("adopting");
    assert!(adopted);
    let mut lb = Lb::from_dataplane(dp);
    assert_eq!(lb.dp.maps.moved_count(b.id), marked, "the moved bits are read back");
    // The new agent writes the same configuration: nothing of the history changes.
    assert_eq!(lb.dp.maps.apply_service(&b).unwrap(), meta);
    assert_eq!(lb.dp.maps.moved_count(b.id), marked);
    for (syn, &backend) in flows.iter().zip(&backends) {
        assert_eq!(sent_to(&lb.run(&with_flags(syn, ACK).bytes()).out), backend);
    }
    // A changed file during the retention: B → C keeps A retained and adds C's moves.
    let c = ring_c(PROTO_TCP);
    let next = lb.dp.maps.apply_service(&c).unwrap();
    assert_eq!(next.retained(), meta.retained());
    assert!(lb.dp.maps.moved_count(c.id) >= marked);
    for (syn, &backend) in flows.iter().zip(&backends) {
        assert_eq!(sent_to(&lb.run(&with_flags(syn, ACK).bytes()).out), backend);
    }
}
