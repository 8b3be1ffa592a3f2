//! Flow sync between two real agents (`lb run`, README "Flow sync"): each in a namespace of its
//! own with its data path on a veth, the two talking over a veth pair the test creates. After
//! both add a backend, a new connection starts through node A in a moved ring slot; node B,
//! which never saw it, must send its next packet to the backend A chose, where a flow A did
//! not sync goes to B's retained ring. Frames are sent and captured on the veth's other end
//! and checked byte for byte. Needs root.

use std::{
    cell::RefCell,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::PermissionsExt as _,
    time::{Duration, Instant},
};

use lb_common::{
    hash::flow_hash,
    limits::DEFAULT_RING_SIZE,
    maglev::{MaglevBackend, build_table},
    maps::v4_addr,
};
use lb_tests::{
    agent::Agent,
    harness::{ACK, CLIENT4, SYN, VIP4, flow_key, from_client, require_root, tcp, to_endpoint},
    netns::Netns,
    packet::{Frame, Mac},
    packet_socket::PacketSocket,
};
use serde_json::Value;

/// The nodes' `hash_seed`.
const SEED: u32 = 42;
/// The port each node's flow sync listens on (its namespace's own address).
const SYNC_PORT: u16 = 7946;
/// A data packet's flags: ACK and PSH.
const DATA: u8 = ACK | 0x08;

/// Backend 10.1.0.`n`:8080's MAC (a permanent neighbour entry on each node's `x0`).
fn backend_mac(n: u8) -> Mac {
    [0x02, 0xbe, 0, 0, 0, n]
}

fn backend_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, 0, n))
}

/// A node's configuration: backends 10.1.0.1..=`backends`, flow sync to `peer` from `me`.
fn config(backends: u8, me: u8, peer: u8, key: &std::path::Path) -> String {
    let pool: String = (1..=backends).map(|n| format!("      - address: 10.1.0.{n}\n        port: 8080\n")).collect();
    format!(
        "global:\n  interfaces: [x0]\n  xdp_mode: generic\n  hash_seed: {SEED}\n  vip_capacity: 4\n  backend_capacity: 16\n  \
         admin_socket: \"{{socket}}\"\n  flow_sync:\n    listen: 192.168.77.{me}:{SYNC_PORT}\n    peers: [192.168.77.{peer}:{SYNC_PORT}]\n    \
         key_file: {}\nvips:\n  - name: web\n    address: {VIP4}\n    port: 80\n    health_check:\n      type: none\n    backends:\n{pool}",
        key.display()
    )
}

/// Backend 10.1.0.`n`'s index in a Maglev ring of backends 1..=`backends`, for `flow`.
fn ring_choice(backends: u8, flow: &Frame) -> u8 {
    let pool: Vec<MaglevBackend> =
        (1..=backends).map(|n| MaglevBackend { id: u32::from(n), addr: v4_addr([10, 1, 0, n]), port: 8080, weight: 1 }).collect();
    let ring = build_table(&pool, DEFAULT_RING_SIZE, SEED);
    ring[(flow_hash(&flow_key(flow), SEED, false) % DEFAULT_RING_SIZE) as usize] as u8
}

/// A node: its namespace with `x0` (the agent's interface) and `x1` (the test's end), the
/// backends on link through `x0`.
fn node_ns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sysctl("net.ipv4.conf.all.forwarding", "1");
    ns.exec(&["ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1"]);
    for dev in ["x0", "x1"] {
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }
    ns.exec(&["ip", "addr", "add", "10.1.0.254/24", "dev", "x0"]);
    for n in 1..=4u8 {
        let mac = backend_mac(n).map(|b| format!("{b:02x}")).join(":");
        ns.exec(&["ip", "neigh", "replace", &format!("10.1.0.{n}"), "lladdr", &mac, "dev", "x0", "nud", "permanent"]);
    }
    ns
}

/// Sends `frame` into `ns`'s `x0` (from `x1`) and returns the first frame to a backend MAC that
/// comes back out of it within a second.
fn exchange(ns: &Netns, frame: Vec<u8>) -> Option<Vec<u8>> {
    ns.run_in(move || {
        let socket = PacketSocket::bind("x1").expect("packet socket on x1");
        socket.send(&frame).expect("sending a frame");
        let got = RefCell::new(None);
        socket.each_received(Duration::from_secs(1), || got.borrow().is_some(), |f| {
            if f.len() > 14 && f[..5] == backend_mac(0)[..5] {
                *got.borrow_mut() = Some(f.to_vec());
            }
        });
        got.into_inner()
    })
}

/// `flow` as the test sends it into `ns`'s `x0`.
fn to_node(ns: &Netns, flow: &Frame) -> Frame {
    Frame { dst_mac: ns.mac("x0"), src_mac: ns.mac("x1"), ..flow.clone() }
}

/// What the node sends for `flow` to backend 10.1.0.`n`:8080.
fn to_backend(ns: &Netns, flow: &Frame, n: u8) -> Vec<u8> {
    to_endpoint(&to_node(ns, flow), backend_ip(n), 8080, backend_mac(n), ns.mac("x0")).bytes()
}

fn counter(status: &Value, name: &str) -> u64 {
    status["flow_sync"][name].as_u64().unwrap_or(0)
}

/// Waits (at most 10 s) until a packet of a fresh flow comes back from the node to a backend:
/// the agent has written the VIP and resolved the backends.
fn wait_serving(ns: &Netns, port: u16) {
    let start = Instant::now();
    let probe = from_client(CLIENT4, VIP4, tcp(port, 80, SYN));
    while exchange(ns, to_node(ns, &probe).bytes()).is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "{} does not forward", ns.name());
    }
}

#[test]
fn two_agents_sync_a_connection_of_a_moved_slot_over_a_veth_pair() {
    require_root();
    let (ns_a, ns_b) = (node_ns("fsa"), node_ns("fsb"));
    ns_a.exec(&["ip", "link", "add", "s0", "type", "veth", "peer", "name", "s0", "netns", ns_b.name()]);
    for (ns, me) in [(&ns_a, 1), (&ns_b, 2)] {
        ns.exec(&["ip", "addr", "add", &format!("192.168.77.{me}/24"), "dev", "s0"]);
        ns.exec(&["ip", "link", "set", "s0", "up"]);
    }
    let dir = std::env::temp_dir().join(format!("lb-flow-sync-agents-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let a = Agent::start_in(ns_a.name(), ns_a.name(), &config(3, 1, 2, &key)).unwrap_or_else(|e| panic!("agent A: {e:#}"));
    let b = Agent::start_in(ns_b.name(), ns_b.name(), &config(3, 2, 1, &key)).unwrap_or_else(|e| panic!("agent B: {e:#}"));
    wait_serving(&ns_a, 1000);
    wait_serving(&ns_b, 1000);
    // Both add a fourth backend: a quarter of the slots move to it.
    for (agent, me, peer) in [(&a, 1, 2), (&b, 2, 1)] {
        agent.rewrite_config(&config(4, me, peer, &key)).unwrap();
        let out = agent.cli(&["reload"]);
        assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
        agent.wait_status(Duration::from_secs(10), |s| s["vips"][0]["ring_backends"].as_u64() == Some(4)).expect("four backends");
    }
    // Two new connections whose slot moved to the new backend: one through A, one A never sees.
    let mut moved = (30000..40000u16).map(|p| from_client(CLIENT4, VIP4, tcp(p, 80, SYN))).filter(|f| ring_choice(4, f) == 4);
    let (synced, unsynced) = (moved.next().unwrap(), moved.next().unwrap());
    let old = ring_choice(3, &unsynced);

    // Without sync: B takes the unsynced flow's packet for an older flow (retained ring).
    let data = Frame { l4: tcp(flow_key(&unsynced).sport, 80, DATA), ..unsynced.clone() };
    assert_eq!(exchange(&ns_b, to_node(&ns_b, &data).bytes()), Some(to_backend(&ns_b, &data, old)), "retained ring's backend");
    assert_ne!(old, 4);

    // Through A: the SYN and the ACK go to the new backend; the ACK is synced.
    let ack = Frame { l4: tcp(flow_key(&synced).sport, 80, ACK), ..synced.clone() };
    for f in [&synced, &ack] {
        assert_eq!(exchange(&ns_a, to_node(&ns_a, f).bytes()), Some(to_backend(&ns_a, f, 4)));
    }
    let sent = Instant::now();
    let status = b.wait_status(Duration::from_secs(5), |s| counter(s, "inserted") == 1).expect("B inserts the synced flow");
    let delay = sent.elapsed();
    eprintln!("flow sync between two agents: B's status showed the entry {:.1} ms after A's ACK (status polled every 50 ms)", delay.as_secs_f64() * 1000.0);
    assert_eq!((counter(&status, "received"), counter(&status, "existing"), counter(&status, "sent")), (1, 0, 0));

    // B sends the synced flow's next packet (no SYN) to the backend A chose.
    let data = Frame { l4: tcp(flow_key(&synced).sport, 80, DATA), ..synced.clone() };
    assert_eq!(exchange(&ns_b, to_node(&ns_b, &data).bytes()), Some(to_backend(&ns_b, &data, 4)), "A's backend");
    let a_status = a.json(&["status"]).unwrap();
    assert_eq!((counter(&a_status, "sent"), counter(&a_status, "ring_dropped")), (1, 0));
    drop((a, b));
    std::fs::remove_dir_all(&dir).unwrap();
}
