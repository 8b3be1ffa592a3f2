//! The batched walk of the connection tables (`lb_userspace::dataplane::table_walk`) against a
//! real loaded map: every entry seen exactly once across many batches, live flows told from
//! ended ones. Needs root and bpffs.

use std::collections::HashSet;

use aya::maps::{HashMap, Map, MapData};
use lb_common::{
    flow::{FLOW_CLOSING, FLOW_OPEN, Flow},
    maps::{FlowKey, MAP_CONNS, PROTO_TCP, FAMILY_V4, v4_addr},
};
use lb_userspace::dataplane::{Dataplane, PROGRAM, Pins, Sizing, table_walk};

/// Removes the test's pinned data path also when the test fails.
struct RemovePins(Pins);

impl Drop for RemovePins {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

fn key(i: u32) -> FlowKey {
    let [a, b, c, d] = i.to_be_bytes();
    FlowKey {
        src: v4_addr([10, b, c, d]),
        dst: v4_addr([10, 0, 0, 10]),
        sport: 1024 + u16::from(a),
        dport: 80,
        proto: PROTO_TCP,
        family: FAMILY_V4,
        pad: [0; 2],
    }
}

#[test]
fn every_entry_is_seen_once_across_batches() {
    const FLOWS: u32 = 10_000;
    // Per-CPU LRU lists hold capacity ÷ CPUs each: room for every insert from one CPU.
    let sizing = Sizing { conn_capacity: 131_072, half_open_capacity: 8192, ..Sizing::default() };
    let pins = RemovePins(Pins::of_instance(&format!("test-walk-{}", std::process::id())));
    let (dp, _) = Dataplane::open(&sizing, &pins.0, None, PROGRAM).expect("data path");
    let mut conns: HashMap<MapData, FlowKey, Flow> =
        HashMap::try_from(Map::LruHashMap(MapData::from_pin(pins.0.map(MAP_CONNS)).expect("CONNS"))).expect("hash map");
    for i in 0..FLOWS {
        // Every tenth flow has seen a FIN: an entry, but no longer a live flow.
        let state = if i % 10 == 0 { FLOW_CLOSING } else { FLOW_OPEN };
        let deadline = if state == FLOW_CLOSING { u32::MAX } else { 0 };
        let flow = Flow { backend_id: 1 + i % 3, state, deadline, ..Flow::default() };
        conns.insert(key(i), flow, 0).expect("insert");
    }
    assert_eq!(dp.maps.conn_count(), FLOWS as usize);

    let (conns_fd, half_open_fd) = dp.maps.table_fds().expect("descriptors");
    let mut seen = HashSet::new();
    let walked = table_walk::walk(std::os::fd::AsFd::as_fd(&conns_fd), |k, _| assert!(seen.insert(*k), "{k:?} seen twice")).expect("walk");
    assert_eq!((walked, seen.len()), (FLOWS as usize, FLOWS as usize));
    assert!(seen.contains(&key(0)) && seen.contains(&key(FLOWS - 1)));

    let counts = table_walk::count(std::os::fd::AsFd::as_fd(&conns_fd), std::os::fd::AsFd::as_fd(&half_open_fd), &[], 0).expect("count");
    assert_eq!((counts.entries, counts.half_open), (u64::from(FLOWS), 0));
    let live = |b: u32| (0..FLOWS).filter(|i| 1 + i % 3 == b && i % 10 != 0).count() as u64;
    for b in 1..=3 {
        assert_eq!(counts.live.get(&b).copied(), Some(live(b)), "backend {b}");
    }
    eprintln!("{FLOWS} entries counted in {:?}", counts.took);
}
