//! Flow sync between two data paths (README, "Flow sync"): a connection that starts in a moved
//! ring slot on node A reaches node B's connection table, so that its next packet on B goes to
//! the backend A gave it, where without sync B's retained ring would send it elsewhere; and
//! what B refuses. Frames run through each loaded program with `BPF_PROG_TEST_RUN` and are
//! checked byte for byte; the two agents' flow sync tasks talk over the loopback.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lb_common::{
    counters::Reason,
    limits::FLOW_SYNC_WINDOW_MS,
    maps::{FlowKey, PROTO_TCP},
};
use lb_tests::{
    fixture::{sent_to, v4, with_flags},
    harness::{ACK, CLIENT4, LB_MAC, Lb, SYN, VIP4, XDP_TX, addr, backend_mac, flow_key, from_client, require_root, service, tcp, test_sizing, to_endpoint},
};
use lb_userspace::{
    dataplane::{Dataplane, Service},
    flow_sync::{
        Rejected, Stats,
        message::{SyncedFlow, encode},
        spawn_on,
    },
};

const SEED: u32 = 0x5eed;
const KEY: &[u8] = b"a key both nodes share, 32 bytes";
const BACKEND4: (u8, u16) = (4, 8080);

/// Three equal backends behind VIP4:80 as VIP `vip_id`, in slots `first..`: ring A.
fn ring_a(vip_id: u32, first: u32) -> Service {
    service(vip_id, VIP4, 80, PROTO_TCP, first, &[(v4(1), 8080, 1), (v4(2), 8080, 1), (v4(3), 8080, 1)])
}

/// Ring A and a fourth backend, 10.1.0.4:8080 (slot `first + 3`): ring B.
fn ring_b(vip_id: u32, first: u32) -> Service {
    service(vip_id, VIP4, 80, PROTO_TCP, first, &[(v4(1), 8080, 1), (v4(2), 8080, 1), (v4(3), 8080, 1), (v4(BACKEND4.0), BACKEND4.1, 1)])
}

/// A data path (flow sync on when `syncing`) that served ring A and then changed to ring B.
fn node(syncing: bool, vip_id: u32, first: u32) -> (Lb, Service) {
    let sizing = test_sizing(SEED);
    let dp = if syncing { Dataplane::load_syncing(&sizing) } else { Dataplane::load(&sizing) }.expect("loading the program");
    let mut lb = Lb::from_dataplane(dp);
    lb.dp.maps.apply_service(&ring_a(vip_id, first)).unwrap();
    let b = ring_b(vip_id, first);
    lb.dp.maps.apply_service(&b).unwrap();
    (lb, b)
}

/// Whether `flow`'s ring slot is marked moved on `lb`.
fn moved(lb: &Lb, svc: &Service, flow: &FlowKey) -> bool {
    let slot = lb_common::hash::flow_hash(flow, SEED, false) % lb.dp.sizing().ring_size;
    lb.dp.maps.is_moved(svc.id, slot)
}

/// Starts `lb`'s flow sync on `socket`, sending to `peer`.
fn start_sync(rt: &tokio::runtime::Runtime, lb: &mut Lb, socket: UdpSocket, peer: SocketAddr) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let source = lb.dp.take_flow_sync().expect("loaded with flow sync");
    let _guard = rt.enter();
    spawn_on(socket, vec![peer], KEY.to_vec(), source, stats.clone()).expect("starting flow sync");
    stats
}

/// Waits (at most 5 s, in 1 ms steps) until `done`; returns how long it took.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}: not within 5 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn a_connection_of_a_moved_slot_reaches_the_peer_which_sends_its_next_packet_to_the_same_backend() {
    require_root();
    // B numbers its VIP and backend slots differently from A: a record names the backend by
    // its address, and B writes its own slot.
    let (mut a, svc_a) = node(true, 1, 1);
    let (mut b, svc_b) = node(true, 2, 11);
    let (plain, _) = node(false, 1, 1);
    let (sock_a, sock_b) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
    let (addr_a, addr_b) = (sock_a.local_addr().unwrap(), sock_b.local_addr().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let stats_a = start_sync(&rt, &mut a, sock_a, addr_b);
    let stats_b = start_sync(&rt, &mut b, sock_b, addr_a);

    // A new connection in a moved slot whose live-ring backend is the new one (10.1.0.4).
    let syn = (30000..40000u16)
        .map(|p| from_client(CLIENT4, VIP4, tcp(p, 80, SYN)))
        .find(|f| moved(&a, &svc_a, &flow_key(f)) && a.ring_choice(&svc_a, &flow_key(f)) == 4)
        .expect("a moved slot of the new backend");
    let key = flow_key(&syn);
    assert!(moved(&b, &svc_b, &key), "the same slot moved on B");
    let ack = with_flags(&syn, ACK);
    let backend_ip = IpAddr::V4(Ipv4Addr::new(10, 1, 0, BACKEND4.0));

    // Without sync a node that did not see the SYN sends the next packet by its retained
    // ring: to one of the three old backends.
    let run = plain.run(&ack.bytes());
    let retained = sent_to(&run.out);
    assert!((1..=3).contains(&retained), "retained ring's backend {retained}");
    assert!(run.counted.contains(&(Reason::RetainedRing, 1)));
    assert_eq!(plain.dp.maps.conn(&key).unwrap().map(|e| e.backend_id), Some(retained));

    // On A: the SYN, then its ACK, which moves the flow to A's connection table and syncs it.
    for f in [&syn, &ack] {
        let run = a.run(&f.bytes());
        assert_eq!(run.action, XDP_TX);
        assert_eq!(run.out, to_endpoint(f, backend_ip, BACKEND4.1, backend_mac(4), LB_MAC).bytes());
    }
    let delay = wait_until("B records the synced flow", || b.dp.maps.conn(&key).unwrap().is_some());
    eprintln!("flow sync delay, A's ACK to B's entry: {:.3} ms", delay.as_secs_f64() * 1000.0);
    let entry = b.dp.maps.conn(&key).unwrap().unwrap();
    assert_eq!((entry.backend_id, entry.vip_id, entry.state), (14, 2, lb_common::flow::FLOW_OPEN), "B's own slot and VIP id");

    // B sends the flow's next packet (no SYN) to the backend A chose, not its retained ring's.
    let data = with_flags(&syn, ACK | 0x08);
    let run = b.run(&data.bytes());
    assert_eq!(run.action, XDP_TX);
    assert_eq!(run.out, to_endpoint(&data, backend_ip, BACKEND4.1, backend_mac(14), LB_MAC).bytes());
    assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1)]);

    // The task counts right after its insert.
    wait_until("B counts its insert", || stats_b.inserted.load(Ordering::Relaxed) == 1);
    assert_eq!(stats_a.sent.load(Ordering::Relaxed), 1);
    assert_eq!(stats_b.received.load(Ordering::Relaxed), 1);
    // A's own retransmitted ACK and B's later packets are no new connections: nothing more is sent.
    a.run(&ack.bytes());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(stats_a.sent.load(Ordering::Relaxed), 1);
    assert_eq!(stats_b.sent.load(Ordering::Relaxed), 0, "B synced nothing of a flow it did not start");
    assert_eq!(a.dp.maps.reasons().unwrap()[Reason::FlowSyncDropped as usize], 0);

    // What B refuses: each datagram is counted and inserts nothing.
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flow = |port: u16, vip_port: u16, backend: (u8, u16)| {
        let key = FlowKey { sport: port, dport: vip_port, ..key };
        SyncedFlow { key, backend_addr: addr(v4(backend.0)), backend_port: backend.1 }
    };
    let refused = [
        (encode(&[flow(50001, 80, BACKEND4)], now_ms(), b"another key, also thirty-two byt"), Rejected::BadMac),
        (encode(&[flow(50002, 80, BACKEND4)], now_ms() - FLOW_SYNC_WINDOW_MS - 5_000, KEY), Rejected::Stale),
        (b"junk that is no datagram of flow sync".to_vec(), Rejected::Malformed),
        (vec![0u8; 1500], Rejected::Malformed),
        (encode(&[flow(50003, 81, BACKEND4)], now_ms(), KEY), Rejected::UnknownVip),
        (encode(&[flow(50004, 80, (9, 8080))], now_ms(), KEY), Rejected::UnknownBackend),
    ];
    for (datagram, _) in &refused {
        attacker.send_to(datagram, addr_b).unwrap();
    }
    let expected = |r: Rejected| refused.iter().filter(|(_, why)| *why == r).count() as u64;
    wait_until("B counts every refused datagram", || Rejected::ALL.iter().all(|&r| stats_b.rejected(r) == expected(r)));
    for port in 50001..=50004 {
        for vip_port in [80, 81] {
            assert_eq!(b.dp.maps.conn(&FlowKey { sport: port, dport: vip_port, ..key }).unwrap(), None, "port {port}");
        }
    }
    assert_eq!((stats_b.received.load(Ordering::Relaxed), stats_b.inserted.load(Ordering::Relaxed)), (3, 1));

    // A valid record for a flow B has an entry for leaves the entry as it is.
    attacker.send_to(&encode(&[flow(key.sport, 80, (1, 8080))], now_ms(), KEY), addr_b).unwrap();
    wait_until("B counts the existing flow", || stats_b.existing.load(Ordering::Relaxed) == 1);
    assert_eq!(b.dp.maps.conn(&key).unwrap().map(|e| e.backend_id), Some(14));

    // A flood of junk neither stops B nor grows anything: a valid record sent after it is used.
    for i in 0..20_000u32 {
        let _ = attacker.send_to(&i.to_be_bytes().repeat(1 + (i % 300) as usize), addr_b);
    }
    // (sent again until used: the flood may overflow the socket's buffer, which drops it.)
    let late = flow(50005, 80, BACKEND4);
    let mut tries = 0u32;
    wait_until("B inserts a record sent after the flood", || {
        tries += 1;
        if tries % 10 == 1 {
            attacker.send_to(&encode(&[late], now_ms(), KEY), addr_b).unwrap();
        }
        b.dp.maps.conn(&late.key).unwrap().is_some()
    });
    assert!(stats_b.rejected(Rejected::Malformed) + stats_b.rejected(Rejected::BadMac) > 1_000, "junk counted");
    wait_until("B counts its insert", || stats_b.inserted.load(Ordering::Relaxed) == 2);
    rt.shutdown_background();
}
