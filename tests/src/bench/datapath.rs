//! Part 1: what each data path case costs per packet, measured with BPF_PROG_TEST_RUN.
//!
//! The real program is loaded with a real configuration (a VIP with 8 backends over TCP and
//! the same address with 8 backends over UDP, full-size 65,537-slot Maglev rings) and runs on
//! 64-byte frames. Every measured run is one BPF_PROG_TEST_RUN call with `repeat = 1` on a
//! pristine copy of its input frame (the kernel copies `data_in` for each call), and the
//! kernel-reported durations are summed; a repeated run on one buffer would measure a frame
//! the program had already rewritten. The timing thread is pinned to one CPU and warmed up
//! first. Floor programs are measured in the same sets, so every figure is also given as
//! nanoseconds over its floor: the floor absorbs the test-run machinery (timer reads, context
//! set-up) that a NIC driver does not pay. The floors are XDP_PASS, a MAC swap with XDP_TX,
//! and `floor_insert`: one LRU insert of the connection table's key and value into a table of
//! the same size as `CONNS`, then the MAC swap and XDP_TX. `floor_insert_percpu` is the same
//! insert into a table of the same size with per-CPU LRU lists (BPF_F_NO_COMMON_LRU) instead
//! of one shared list: the per-CPU alternative to the shared table, measured beside it.
//!
//! A Maglev VIP whose backends are stable keeps no per-flow state (README, "State only on
//! change"): its packets, new flows' included, are sent by the live ring with no connection-table
//! lookup or insert. A new TCP flow is timed as its SYN and its first ACK together (two runs,
//! one figure per flow) against `floor_tx` twice, once beside an empty connection table and once
//! beside a full one (filled by the flows of a round-robin VIP), which a stateless flow never
//! touches. Established packets are timed for one hot flow, for a pool of flows in turn and for
//! 1,000,000 distinct flows in turn, all over `floor_tx`.
//!
//! Retention: a second Maglev VIP of the same data path has had a backend added before timing,
//! so its previous ring is retained and the slots where it differs from the live one are marked
//! moved. Its rows time a new flow whose slot moved (SYN to `HALF_OPEN`, first ACK into
//! `CONNS`), an established packet in a moved slot (a `CONNS` hit) and one in an unmoved slot
//! (stateless), all over `floor_tx`.
//!
//! Direct server return: a TCP VIP in each of the `tunnel` (IPIP), `gue` and `direct` modes
//! over the same 8 backends ([`super::dsr`]), its new flows and one hot established flow
//! measured like NAT's against the same floors (each mode's new flows in a data path of their
//! own with the same configuration; stateless like NAT's, they insert nothing, checked), and the
//! encapsulated ones also over the encapsulation floors, once per packet: `floor_encap` pushes a
//! fixed 20-byte outer IPv4 header and returns XDP_TX, `floor_encap_gue` a fixed 28-byte IPv4 +
//! UDP one.
//!
//! Everything runs in a network namespace of its own whose FIB reaches the clients: replies
//! (backend → client) are translated statelessly and sent towards the client by
//! `bpf_fib_lookup`, which BPF_PROG_TEST_RUN runs in the calling thread's namespace.
//!
//! Each path's verdict, output bytes, checksums and counters are checked once before it is
//! timed, and every timed run's verdict is checked again.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd as _,
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap as BpfHashMap,
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::{
    counters::Reason,
    encap::{FORWARD_DIRECT, FORWARD_GUE, FORWARD_TUNNEL},
    maps::{Flow, FlowKey, PROTO_TCP, PROTO_UDP},
};
use lb_userspace::dataplane::{Dataplane, FLOORS, Service, Sizing};
use serde_json::json;

use super::{
    dsr,
    report::{self, Bar, Chart, OURS, REFERENCE, Report, Table},
    stats::Summary,
};
use crate::{
    harness::{
        CLIENT_MAC, CLIENT_SIDE_DEV, LB_MAC, Lb, XDP_PASS, XDP_REDIRECT, XDP_TX, backend_endpoint, backend_mac,
        client_side_netns, flow_key, from_client, service, tcp, udp,
    },
    netns::Netns,
    packet::{Frame, IpFields, L4, ip_header, verify_checksums},
};

/// The VIP of the benchmark configuration.
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10));
/// An address that is no VIP.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99));
/// TCP flags.
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// Tracked flows the "in turn" cases cycle through (more than fit the caches of one hot
/// flow, as on a busy node).
const POOL_DEFAULT: u32 = 4096;
/// Capacity of the connection table that no flow of the run fills (the "empty table" case).
const CONN_EMPTY_DEFAULT: u32 = 1 << 21;
/// Capacity of the connection table that is filled before timing (the "full table" case).
const CONN_FULL_DEFAULT: u32 = 1 << 18;
/// The clients' range (every fresh and tracked client address of the benchmark), routed in
/// the benchmark's namespace through a gateway with a permanent neighbour entry.
const CLIENT_RANGE: &str = "100.64.0.0/10";
/// That gateway, on the client side's subnet (192.0.2.0/24); its MAC is [`CLIENT_MAC`].
const CLIENT_GATEWAY: &str = "192.0.2.254";
/// First fresh-flow number of the flows that fill the full table (no timed flow reaches it).
const PREFILL_BASE: u64 = 1 << 36;
/// Fresh-flow number of the flows checked before timing.
const CHECK_FLOW: u64 = 1 << 39;
/// Fresh-flow number of the flow of a moved slot checked before timing (beyond the timed ones,
/// small enough for [`fresh_moved_flow`]'s candidates to stay apart from other fresh flows).
const CHECK_MOVED_FLOW: u64 = 1 << 24;
/// The Maglev VIP whose ring changed before timing (a ring retained, slots moved).
const MOVED_VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 20));
/// Its VIP id.
const MOVED_VIP_ID: u32 = 6;
/// The round-robin VIP whose flows fill the full table (loaded in that data path only).
const RR_VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 30));
/// Distinct established flows of `tcp_established_1m`.
const MILLION_DEFAULT: u64 = 1_000_000;
/// Candidate 5-tuples per fresh flow of `tcp_new_moved`, of which the first in a moved slot is
/// taken (with a ninth of the slots moved, all 256 miss with a probability below 1e-13).
const MOVED_CANDIDATES: u64 = 256;

/// Target over the floor for established flows and their replies (ns).
pub const TARGET_FLOW_NS: f64 = 100.0;
/// Issue 20: a stateless new TCP flow (SYN + first ACK) costs at most this much more than
/// twice one hot established packet, both over their floors (ns).
pub const TARGET_NEW_OVER_TWO_ESTABLISHED_NS: f64 = 20.0;
/// Issue 20: established packets of many flows in turn (4,096 or 1,000,000) cost at most this
/// much more than one hot flow's, over the same floor (ns).
pub const TARGET_MANY_OVER_ONE_NS: f64 = 30.0;
/// Issue 20: an established packet of a Maglev VIP over `floor_tx` (ns).
pub const TARGET_STATELESS_ESTABLISHED_NS: f64 = 80.0;
/// Target over the floor for traffic that is for no VIP (ns).
pub const TARGET_NOT_VIP_NS: f64 = 30.0;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Repeated sets (medians and spreads are over sets).
    pub sets: usize,
    /// Single runs (new flows: flows) per path and set.
    pub runs: usize,
    /// Untimed runs per path before the first set.
    pub warmup: usize,
    /// CPU the timing thread is pinned to.
    pub cpu: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { sets: 21, runs: 20_000, warmup: 5_000, cpu: super::cpus().saturating_sub(1) }
    }
}

/// What a path's target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A floor program itself.
    Floor,
    /// A new flow (targets relative to the established rows, see [`report::relative_targets`]).
    New,
    /// An established flow or its reply (target 100 ns over floor_tx).
    Established,
    /// Not for a VIP (target 30 ns over floor_pass).
    NotVip,
    /// Established packets of a million flows in turn (target relative to one hot flow, see
    /// [`report::relative_targets`]).
    Scale,
    /// A new flow of a direct server return VIP (no target: measured next to NAT's).
    DsrNew,
    /// An established flow of a direct server return VIP (no target: measured next to NAT's).
    DsrEstablished,
    /// Extra cases that show where the time goes (no target).
    Breakdown,
}

impl Kind {
    fn target(self) -> Option<f64> {
        match self {
            Kind::Established => Some(TARGET_FLOW_NS),
            Kind::NotVip => Some(TARGET_NOT_VIP_NS),
            Kind::Floor | Kind::New | Kind::Scale | Kind::Breakdown | Kind::DsrNew | Kind::DsrEstablished => None,
        }
    }

    fn is_new(self) -> bool {
        matches!(self, Kind::New | Kind::DsrNew)
    }
}

/// Which loaded program a path runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    /// The data path with the empty connection table.
    Lb,
    /// The data path with the full connection table.
    LbFull,
    /// The data path of a DSR mode's new flows (the same configuration, an empty table of its own).
    LbDsr(u8),
    /// A floor program of the object whose insert floors' tables are as big as the empty table.
    Floor(&'static str),
    /// An insert floor of the object whose insert floors' tables are as big as the full table.
    FloorFull(&'static str),
}

/// An insert floor: its program and the table it inserts into.
#[derive(Clone, Copy, Debug)]
struct InsertFloor {
    prog: &'static str,
    map: &'static str,
}

/// One LRU insert into a table with one LRU list shared by all CPUs (as `CONNS`).
const SHARED_LRU: InsertFloor = InsertFloor { prog: "floor_insert", map: "FLOOR_CONNS" };
/// One LRU insert into a table with per-CPU LRU lists (BPF_F_NO_COMMON_LRU).
const PERCPU_LRU: InsertFloor = InsertFloor { prog: "floor_insert_percpu", map: "FLOOR_CONNS_PERCPU" };

/// Where a path's input frames come from.
enum Frames {
    /// One frame, or a pool cycled through; one run per timed unit.
    Pool(Vec<Vec<u8>>),
    /// A fresh flow for every timed unit (new flows must miss the connection table): its
    /// frames, each run once, in order, and timed together.
    Fresh(Box<dyn Fn(u64) -> Vec<Frame>>),
    /// `count` distinct flows taken in turn, one run each, a set's frames built before it is
    /// timed (a million frames are never held at once).
    Cycle(u64, fn(u64) -> Frame),
}

struct Path {
    name: &'static str,
    what: &'static str,
    kind: Kind,
    prog: Prog,
    /// The floor paths whose means, added up, are this path's floor (empty for a floor).
    floor: &'static [&'static str],
    /// For an encapsulating path, the same with the encapsulation floor in place of the
    /// MAC-swap floor (empty otherwise).
    encap_floor: &'static [&'static str],
    /// Runs per timed unit (2 for a new TCP flow: SYN and ACK).
    packets: usize,
    action: u32,
    frames: Frames,
    /// Mean ns per timed unit of each set.
    sets: Vec<f64>,
    /// Next fresh-flow number.
    next: u64,
    /// Next flow of a [`Frames::Cycle`].
    cursor: u64,
}

fn tcp_frame(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Frame {
    // 14 + 20 + 20 + 10 = 64 bytes.
    Frame { payload: vec![0x61; 10], ..from_client(src, dst, tcp(sport, dport, flags)) }
}

fn udp_frame(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Frame {
    // 14 + 20 + 8 + 22 = 64 bytes.
    Frame { payload: vec![0x62; 22], ..from_client(src, dst, udp(sport, dport)) }
}

/// Client address and port of fresh flow `n` (from 100.64.0.0, never reused in a run).
fn fresh_client(n: u64) -> (IpAddr, u16) {
    let ip = Ipv4Addr::from(0x6440_0000u32 + (n / 50_000) as u32);
    (IpAddr::V4(ip), 1024 + (n % 50_000) as u16)
}

/// Client address of tracked flow `i` (100.100.0.0/16).
fn pool_client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x6464_0000u32 + i + 1))
}

/// The SYN and the first ACK of fresh TCP flow `n`.
fn fresh_tcp_flow(n: u64) -> Vec<Frame> {
    let (src, sport) = fresh_client(n);
    vec![tcp_frame(src, sport, VIP, 80, SYN), tcp_frame(src, sport, VIP, 80, ACK)]
}

/// The SYN of fresh TCP flow `n` alone (clients apart from `fresh_tcp_flow`'s).
fn fresh_syn(n: u64) -> Vec<Frame> {
    let (src, sport) = fresh_client(n + (1 << 41));
    vec![tcp_frame(src, sport, VIP, 80, SYN)]
}

/// The SYN and the first ACK of fresh TCP flow `n` to the round-robin VIP (which records it).
fn fresh_rr_flow(n: u64) -> Vec<Frame> {
    let (src, sport) = fresh_client(n);
    vec![tcp_frame(src, sport, RR_VIP, 80, SYN), tcp_frame(src, sport, RR_VIP, 80, ACK)]
}

/// An established packet (ACK) of flow `i` of `tcp_established_1m` (100.96.0.0 on, 16 client
/// ports per address).
fn million_flow(i: u64) -> Frame {
    let ip = Ipv4Addr::from(0x6460_0000u32 + (i / 16) as u32 + 1);
    tcp_frame(IpAddr::V4(ip), 40000 + (i % 16) as u16, VIP, 80, ACK)
}

/// The moved slots of VIP `vip_id` in `lb`, one flag per ring slot.
fn moved_slots(lb: &Lb, vip_id: u32) -> Vec<bool> {
    (0..lb.dp.sizing().ring_size).map(|slot| lb.dp.maps.is_moved(vip_id, slot)).collect()
}

/// Whether frame `f`'s ring slot is marked in `moved`.
fn in_moved_slot(lb_seed: u32, moved: &[bool], f: &Frame) -> bool {
    let slot = lb_common::hash::flow_hash(&flow_key(f), lb_seed, false) % moved.len() as u32;
    moved[slot as usize]
}

/// The SYN and first ACK of fresh TCP flow `n` to [`MOVED_VIP`] whose slot is marked in
/// `moved`: the first of [`MOVED_CANDIDATES`] 5-tuples of its own that is.
fn fresh_moved_flow(seed: u32, moved: &[bool], n: u64) -> Vec<Frame> {
    let base = (1 << 42) + n * MOVED_CANDIDATES;
    (base..base + MOVED_CANDIDATES)
        .map(fresh_client)
        .map(|(src, sport)| vec![tcp_frame(src, sport, MOVED_VIP, 80, SYN), tcp_frame(src, sport, MOVED_VIP, 80, ACK)])
        .find(|flow| in_moved_slot(seed, moved, &flow[0]))
        .expect("a fresh flow in a moved slot")
}

/// The first datagram of fresh UDP flow `n`.
fn fresh_udp(n: u64) -> Vec<Frame> {
    // Never the same client port as a TCP fresh flow of the same number.
    let (src, sport) = fresh_client(n + (1 << 40));
    vec![udp_frame(src, sport, VIP, 53)]
}

/// The SYN and the first ACK of fresh TCP flow `n` to the VIP of DSR mode `MODE`.
fn fresh_dsr_flow<const MODE: u8>(n: u64) -> Vec<Frame> {
    let (src, sport) = fresh_client(n);
    vec![tcp_frame(src, sport, dsr::vip(MODE), 80, SYN), tcp_frame(src, sport, dsr::vip(MODE), 80, ACK)]
}

/// A frame of fresh flow `n` for `floor_insert` (a new key every run).
fn fresh_key(n: u64) -> Vec<Frame> {
    let (src, sport) = fresh_client(n);
    vec![tcp_frame(src, sport, VIP, 80, ACK)]
}

/// The frame `f` as the program sends it to backend `id` of `svc`.
fn to_backend(svc: &Service, id: u32, f: &Frame) -> Frame {
    let (ip, port) = backend_endpoint(svc, id);
    let mut out = f.clone();
    out.dst = ip;
    out.dst_mac = backend_mac(id);
    out.src_mac = LB_MAC;
    match &mut out.l4 {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = port,
    }
    out
}

/// The reply of backend `id` of `svc` to client frame `f`, as it arrives from the backend.
fn reply_from(svc: &Service, id: u32, f: &Frame) -> Frame {
    let (ip, port) = backend_endpoint(svc, id);
    let mut out = f.clone();
    out.src = ip;
    out.dst = f.src;
    out.src_mac = backend_mac(id);
    out.dst_mac = LB_MAC;
    out.l4 = match f.l4 {
        L4::Tcp { sport, .. } => L4::Tcp { sport: port, dport: sport, flags: ACK },
        L4::Udp { sport, no_checksum, .. } => L4::Udp { sport: port, dport: sport, no_checksum },
    };
    out
}

/// The reply `r` as the program sends it towards the client (source := VIP): out of the
/// client side (`cl0`, MAC [`LB_MAC`]) to the clients' gateway (MAC [`CLIENT_MAC`]).
fn reply_to_client(r: &Frame, vip_port: u16) -> Frame {
    let mut out = r.clone();
    out.src = VIP;
    out.dst_mac = CLIENT_MAC;
    out.src_mac = LB_MAC;
    match &mut out.l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = vip_port,
    }
    out
}

/// What a Maglev VIP's packet in an unmoved slot counts: its verdict and the stateless path.
const STATELESS: &[(Reason, u64)] = &[(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)];
/// What a Maglev VIP's packet in a moved slot counts when its flow has an entry or is new.
const MOVED: &[(Reason, u64)] = &[(Reason::ForwardToBackend, 1), (Reason::MovedSlot, 1)];

/// One checked run: verdict, exact bytes, checksums, counters (`counted`, in [`Reason::ALL`]'s
/// order).
fn check(lb: &Lb, what: &str, input: &Frame, action: u32, want: &[u8], counted: &[(Reason, u64)]) -> anyhow::Result<()> {
    check_with(lb, what, input, action, |_| Ok(want.to_vec()), counted, verify_checksums)
}

/// [`check`] with the expected bytes from `want`, given the output (a GUE source port comes
/// from the flow's hash), and its checksums checked by `verify`.
fn check_with(
    lb: &Lb,
    what: &str,
    input: &Frame,
    action: u32,
    want: impl FnOnce(&[u8]) -> anyhow::Result<Vec<u8>>,
    counted: &[(Reason, u64)],
    verify: fn(&[u8]) -> Result<(), String>,
) -> anyhow::Result<()> {
    let bytes = input.bytes();
    ensure!(bytes.len() == 64, "{what}: input frame is {} bytes, not 64", bytes.len());
    let run = lb.run(&bytes);
    ensure!(run.action == action, "{what}: verdict {} instead of {action}", run.action);
    let want = want(&run.out).with_context(|| what.to_owned())?;
    ensure!(run.out == want, "{what}: output bytes differ from the expected frame");
    if !counted.iter().any(|&(r, _)| r == Reason::PassNotIp || r == Reason::PassNotTcpUdp) {
        verify(&run.out).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    }
    ensure!(run.counted == counted, "{what}: counters {:?}, not {counted:?}", run.counted);
    Ok(())
}

/// Checks a new TCP flow of `svc` (a stable Maglev VIP) end to end: its SYN and its first ACK
/// are forwarded to the live ring's backend statelessly, and neither records anything.
fn check_new_tcp_flow(lb: &Lb, what: &str, svc: &Service, flow: &[Frame]) -> anyhow::Result<()> {
    check_new_flow_as(lb, what, svc, flow, &|id, f, _| Ok(to_backend(svc, id, f).bytes()), verify_checksums)
}

/// [`check_new_tcp_flow`] of a direct server return service, whose frames `expect` gives.
fn check_new_dsr_flow(lb: &Lb, what: &str, svc: &Service, flow: &[Frame], expect: &dsr::Expect<'_>) -> anyhow::Result<()> {
    check_new_flow_as(lb, what, svc, flow, &|id, f, out| expect.frame(id, f, out), dsr::verify)
}

/// What a path sends: the expected frame for client frame `f` to backend `id`, given the output.
type Want<'a> = dyn Fn(u32, &Frame, &[u8]) -> anyhow::Result<Vec<u8>> + 'a;

/// [`check_new_tcp_flow`] with the expected frames from `want` and checksums checked by `verify`.
fn check_new_flow_as(
    lb: &Lb,
    what: &str,
    svc: &Service,
    flow: &[Frame],
    want: &Want<'_>,
    verify: fn(&[u8]) -> Result<(), String>,
) -> anyhow::Result<()> {
    let [syn, ack] = flow else { bail!("{what}: a new TCP flow is a SYN and an ACK") };
    let key = flow_key(syn);
    let id = lb.ring_choice(svc, &key);
    check_with(lb, &format!("{what}: SYN"), syn, XDP_TX, |out| want(id, syn, out), STATELESS, verify)?;
    check_with(lb, &format!("{what}: first ACK"), ack, XDP_TX, |out| want(id, ack, out), STATELESS, verify)?;
    ensure!(lb.dp.maps.half_open(&key)?.is_none(), "{what}: a half-open entry was recorded");
    ensure!(lb.dp.maps.conn(&key)?.is_none(), "{what}: a connection-table entry was inserted");
    Ok(())
}

/// Checks a new TCP flow of `svc` in a moved slot: its SYN goes to the live ring's backend and
/// is recorded in `HALF_OPEN` only; its first ACK goes to the same backend and moves the flow
/// into `CONNS`; both count the moved slot.
fn check_new_moved_flow(lb: &Lb, what: &str, svc: &Service, flow: &[Frame]) -> anyhow::Result<()> {
    let [syn, ack] = flow else { bail!("{what}: a new TCP flow is a SYN and an ACK") };
    let key = flow_key(syn);
    let id = lb.ring_choice(svc, &key);
    check(lb, &format!("{what}: SYN"), syn, XDP_TX, &to_backend(svc, id, syn).bytes(), MOVED)?;
    let half = lb.dp.maps.half_open(&key)?.with_context(|| format!("{what}: the SYN recorded no half-open entry"))?;
    ensure!(half.backend_id == id, "{what}: half-open entry {half:?}, not backend {id}");
    ensure!(lb.dp.maps.conn(&key)?.is_none(), "{what}: the SYN inserted a connection-table entry");
    check(lb, &format!("{what}: first ACK"), ack, XDP_TX, &to_backend(svc, id, ack).bytes(), MOVED)?;
    let entry = lb.dp.maps.conn(&key)?.with_context(|| format!("{what}: the first ACK inserted no entry"))?;
    ensure!(
        (entry.backend_id, entry.vip_id as u32, entry.state) == (id, svc.id, lb_common::flow::FLOW_OPEN),
        "{what}: entry {entry:?}, not backend {id} of VIP {}",
        svc.id
    );
    Ok(())
}

/// Runs `frame` through `prog` once: verdict and output.
fn run_once(prog: &Xdp, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

/// Runs `frame` through a floor program once and checks its verdict and output: XDP_PASS
/// unchanged, or XDP_TX with the MACs swapped.
fn check_floor(prog: &Xdp, name: &str, frame: &[u8], action: u32) -> anyhow::Result<()> {
    let (verdict, out) = run_once(prog, frame)?;
    let mut want = frame.to_vec();
    if action == XDP_TX {
        want[..6].copy_from_slice(&frame[6..12]);
        want[6..12].copy_from_slice(&frame[..6]);
    }
    ensure!(verdict == action && out == want, "{name}: wrong verdict ({verdict}) or output");
    Ok(())
}

/// Outer addresses of the encapsulation floors' fixed header (`FLOOR_OUTER_SRC`,
/// `FLOOR_OUTER_DST` in floors.rs).
const FLOOR_OUTER: (IpAddr, IpAddr) = (IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 11, 2)));
/// UDP source port of `floor_encap_gue`'s fixed header (`FLOOR_GUE_SPORT` in floors.rs).
const FLOOR_GUE_SPORT: u16 = 49152;

/// Runs `frame` (an untagged IPv4 frame) through an encapsulation floor once and checks its
/// verdict (XDP_TX) and output: the MACs swapped, the EtherType kept, then the fixed outer
/// IPv4 header (TTL 64, DF, identification 0, its checksum) and, with `gue`, the fixed UDP
/// header without checksum, then the IP packet unchanged.
fn check_floor_encap(prog: &Xdp, name: &str, frame: &[u8], gue: bool) -> anyhow::Result<()> {
    let (verdict, out) = run_once(prog, frame)?;
    let packet = &frame[14..];
    let mut want = frame[6..12].to_vec();
    want.extend_from_slice(&frame[..6]);
    let fields = IpFields { tos: 0, ident: 0, dont_fragment: true };
    if gue {
        let udp_len = (8 + packet.len()) as u16;
        want.extend_from_slice(&ip_header(FLOOR_OUTER.0, FLOOR_OUTER.1, 17, udp_len as usize, fields));
        want.extend_from_slice(&FLOOR_GUE_SPORT.to_be_bytes());
        want.extend_from_slice(&lb_common::encap::DEFAULT_GUE_PORT.to_be_bytes());
        want.extend_from_slice(&udp_len.to_be_bytes());
        want.extend_from_slice(&[0, 0]);
    } else {
        want.extend_from_slice(&ip_header(FLOOR_OUTER.0, FLOOR_OUTER.1, 4, packet.len(), fields));
    }
    want.extend_from_slice(packet);
    ensure!(verdict == XDP_TX && out == want, "{name}: wrong verdict ({verdict}) or output");
    dsr::verify(&out).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

/// Checks an insert floor on a fresh key: MACs swapped, XDP_TX, and the key in its table.
fn check_floor_insert(floors: &Ebpf, floor: InsertFloor, name: &str, n: u64) -> anyhow::Result<()> {
    let frame = fresh_key(n).remove(0);
    check_floor(floor_program(floors, floor.prog)?, name, &frame.bytes(), XDP_TX)?;
    let map: BpfHashMap<_, FlowKey, Flow> =
        BpfHashMap::try_from(floors.map(floor.map).with_context(|| format!("no map {}", floor.map))?)?;
    let entry = map.get(&flow_key(&frame), 0).with_context(|| format!("{name}: the key was not inserted"))?;
    ensure!(entry.backend_id == 1, "{name}: entry {entry:?}");
    Ok(())
}

/// Entries in an insert floor's table.
fn floor_entries(floors: &Ebpf, floor: InsertFloor) -> anyhow::Result<usize> {
    let map: BpfHashMap<_, FlowKey, Flow> =
        BpfHashMap::try_from(floors.map(floor.map).with_context(|| format!("no map {}", floor.map))?)?;
    Ok(map.keys().filter(Result::is_ok).count())
}

/// Times `runs` single runs that make `units` timed units (a new TCP flow is two runs); the
/// mean of the kernel-reported durations per unit in ns. Every run's verdict must be `action`.
fn time_runs(prog: &Xdp, runs: usize, units: usize, action: u32, mut frame: impl FnMut(usize) -> Vec<u8>) -> anyhow::Result<f64> {
    let mut total: u128 = 0;
    let mut wrong = 0usize;
    for i in 0..runs {
        let f = frame(i);
        let r = prog.test_run(TestRunOptions { data_in: Some(&f), ..TestRunOptions::default() }).context("BPF_PROG_TEST_RUN")?;
        wrong += (r.return_value != action) as usize;
        total += r.duration.as_nanos();
    }
    ensure!(wrong == 0, "{wrong} of {runs} timed runs gave another verdict than {action}");
    Ok(total as f64 / units as f64)
}

/// Runs the frames of fresh flows `first..first + count` through `prog` untimed (filling a
/// table); every run's verdict must be `action`.
fn fill(prog: &Xdp, what: &str, make: fn(u64) -> Vec<Frame>, first: u64, count: u64, action: u32) -> anyhow::Result<()> {
    for n in first..first + count {
        for f in make(n) {
            let r = prog.test_run(TestRunOptions { data_in: Some(&f.bytes()), ..TestRunOptions::default() })?;
            ensure!(r.return_value == action, "{what}: flow {}: verdict {}", n - first, r.return_value);
        }
    }
    Ok(())
}

/// The loaded programs.
struct Programs {
    lb: Lb,
    full: Option<Lb>,
    dsr: Vec<(u8, Lb)>,
    floors: Ebpf,
    floors_full: Option<Ebpf>,
}

impl Programs {
    fn program(&self, path: &Path) -> anyhow::Result<&Xdp> {
        match path.prog {
            Prog::Lb => Ok(self.lb.dp.program()),
            Prog::LbFull => Ok(self.full.as_ref().context("the full-table data path is not loaded")?.dp.program()),
            Prog::LbDsr(mode) => Ok(self.dsr.iter().find(|(m, _)| *m == mode).context("a DSR mode's data path is not loaded")?.1.dp.program()),
            Prog::Floor(name) => floor_program(&self.floors, name),
            Prog::FloorFull(name) => floor_program(self.floors_full.as_ref().context("the full-table floors are not loaded")?, name),
        }
    }
}

fn floor_program<'a>(floors: &'a Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    floors.program(name).and_then(|p| p.try_into().ok()).with_context(|| format!("no program {name}"))
}

/// Loads the floor programs `names` with the insert floors' tables (shared and per-CPU LRU)
/// sized `conn_capacity`.
fn load_floors(conn_capacity: u32, names: &[&str]) -> anyhow::Result<Ebpf> {
    let mut floors = EbpfLoader::new()
        .map_max_entries(SHARED_LRU.map, conn_capacity)
        .map_max_entries(PERCPU_LRU.map, conn_capacity)
        .load(FLOORS)
        .context("loading the floor programs' object")?;
    for name in names {
        let p: &mut Xdp = floors.program_mut(name).with_context(|| format!("no program {name}"))?.try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(floors)
}

/// Creates the benchmark's namespace: the client side of the fixtures (`cl0`, MAC
/// [`LB_MAC`], 192.0.2.0/24) with [`CLIENT_RANGE`] routed through [`CLIENT_GATEWAY`], whose
/// permanent neighbour entry has [`CLIENT_MAC`]; and moves the calling thread into it.
/// BPF_PROG_TEST_RUN then runs `bpf_fib_lookup` in it, so replies to the benchmark's clients
/// leave by `cl0` (XDP_REDIRECT). The namespace is deleted when the value is dropped.
fn enter_client_side() -> anyhow::Result<Netns> {
    let ns = client_side_netns();
    let mac = CLIENT_MAC.map(|b| format!("{b:02x}")).join(":");
    ns.exec(&["ip", "neigh", "add", CLIENT_GATEWAY, "lladdr", &mac, "dev", CLIENT_SIDE_DEV, "nud", "permanent"]);
    ns.exec(&["ip", "route", "add", CLIENT_RANGE, "via", CLIENT_GATEWAY, "dev", CLIENT_SIDE_DEV]);
    let path = format!("/var/run/netns/{}", ns.name());
    let file = std::fs::File::open(&path).with_context(|| path.clone())?;
    // SAFETY: setns with a valid namespace file descriptor changes only this thread's network
    // namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(rc == 0, "setns {path}: {}", std::io::Error::last_os_error());
    Ok(ns)
}

/// Runs part 1 and adds its tables, chart, targets and JSON to `report`.
pub fn run(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let opts = opts.clone();
    // Everything on one pinned thread in the benchmark's namespace: loading, checking, timing.
    let (tables, charts, targets, json) = std::thread::spawn(move || measure(&opts))
        .join()
        .map_err(|_| anyhow::anyhow!("the data path benchmark thread panicked"))??;
    for t in tables {
        report.table(t);
    }
    report.charts.extend(charts);
    for (what, measured, verdict) in targets {
        report.target(&what, measured, verdict);
    }
    report.json.insert("datapath".into(), json);
    Ok(())
}

type Measured = (Vec<Table>, Vec<Chart>, Vec<(String, String, String)>, serde_json::Value);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn measure(opts: &Options) -> anyhow::Result<Measured> {
    let pool_size: u32 = env_or("LB_BENCH_POOL", POOL_DEFAULT);
    let conn_empty: u32 = env_or("LB_BENCH_CONN", CONN_EMPTY_DEFAULT);
    let conn_full: u32 = env_or("LB_BENCH_CONN_FULL", CONN_FULL_DEFAULT);
    let only: Option<Vec<String>> = std::env::var("LB_BENCH_ONLY").ok().map(|o| o.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let with_full = wanted("tcp_new_full");
    super::pin_to_cpu(opts.cpu)?;
    let _ns = enter_client_side()?;

    let pool8 = |port: u16| -> Vec<(IpAddr, u16, u32)> {
        (1..=8u8).map(|k| (IpAddr::V4(Ipv4Addr::new(10, 0, 10 + k, 2)), port, 1)).collect()
    };
    let tcp = service(1, VIP, 80, PROTO_TCP, 1, &pool8(8080));
    let udp = service(2, VIP, 53, PROTO_UDP, 11, &pool8(5353));
    let dsr_backends: Vec<IpAddr> = pool8(80).into_iter().map(|(ip, _, _)| ip).collect();
    // VIP ids 3.., backend slots 21.., 31.., 41..
    let dsr_services: Vec<Service> =
        dsr::MODES.iter().zip(0u32..).map(|(&mode, k)| dsr::service_of(mode, 3 + k, 21 + 10 * k, &dsr_backends)).collect();
    let load_lb = |conn_capacity: u32| -> anyhow::Result<Lb> {
        let sizing = Sizing { conn_capacity, hash_seed: 42, ..Sizing::default() };
        let dp = Dataplane::load(&sizing).context("loading the data path (needs root)")?;
        let mut lb = Lb::from_dataplane(dp);
        // This thread is in the client side's namespace: every interface there may be sent through.
        for ifindex in crate::netns::thread_interface_indices() {
            lb.dp.maps.add_port(ifindex)?;
        }
        lb.dp.maps.apply_service(&tcp)?;
        lb.dp.maps.apply_service(&udp)?;
        for svc in &dsr_services {
            lb.dp.maps.apply_service(svc)?;
        }
        Ok(lb)
    };
    let mut lb = load_lb(conn_empty)?;
    // The VIP with a retained ring: 8 backends, then a ninth added (ids 51.., port 8081, so
    // that no reply target of the other services is replaced).
    let moved_pool = |n: u8| -> Vec<(IpAddr, u16, u32)> {
        (1..=n).map(|k| (IpAddr::V4(Ipv4Addr::new(10, 0, 10 + k, 2)), 8081, 1)).collect()
    };
    lb.dp.maps.apply_service(&service(MOVED_VIP_ID, MOVED_VIP, 80, PROTO_TCP, 51, &moved_pool(8)))?;
    let moved_svc = service(MOVED_VIP_ID, MOVED_VIP, 80, PROTO_TCP, 51, &moved_pool(9));
    let meta = lb.dp.maps.apply_service(&moved_svc)?;
    ensure!(meta.retained().is_some(), "adding a backend retained no ring");
    let moved = moved_slots(&lb, MOVED_VIP_ID);
    let moved_count = moved.iter().filter(|&&m| m).count();
    ensure!(moved_count > 0 && moved_count < moved.len(), "{moved_count} of {} slots moved", moved.len());
    let seed = lb.dp.sizing().hash_seed;
    let dsr_lbs: Vec<(u8, Lb)> = dsr::MODES
        .iter()
        .filter(|&&mode| wanted(&format!("tcp_new_{}", dsr::name(mode))))
        .map(|&mode| Ok((mode, load_lb(conn_empty)?)))
        .collect::<anyhow::Result<_>>()?;
    let floors = load_floors(conn_empty, &["floor_pass", "floor_tx", "floor_encap", "floor_encap_gue", SHARED_LRU.prog, PERCPU_LRU.prog])?;

    // Check every path once, exactly, and set up the tracked flows.
    check_new_tcp_flow(&lb, "TCP new flow", &tcp, &fresh_tcp_flow(CHECK_FLOW))?;
    let dgram = fresh_udp(CHECK_FLOW).remove(0);
    let id = lb.ring_choice(&udp, &flow_key(&dgram));
    check(&lb, "UDP, new flow", &dgram, XDP_TX, &to_backend(&udp, id, &dgram).bytes(), STATELESS)?;
    ensure!(lb.dp.maps.conn(&flow_key(&dgram))?.is_none(), "UDP, new flow: an entry was inserted");
    let syn = fresh_syn(CHECK_FLOW).remove(0);
    let id = lb.ring_choice(&tcp, &flow_key(&syn));
    check(&lb, "TCP SYN", &syn, XDP_TX, &to_backend(&tcp, id, &syn).bytes(), STATELESS)?;
    ensure!(lb.dp.maps.half_open(&flow_key(&syn))?.is_none(), "TCP SYN: a half-open entry was recorded");
    let far = million_flow(MILLION_DEFAULT - 1);
    let id = lb.ring_choice(&tcp, &flow_key(&far));
    check(&lb, "TCP established, one of 1,000,000 flows", &far, XDP_TX, &to_backend(&tcp, id, &far).bytes(), STATELESS)?;

    // The VIP with a retained ring: a new flow in a moved slot; an established flow in a moved
    // slot (its entry) and one in an unmoved slot (stateless), checked once more.
    check_new_moved_flow(&lb, "TCP new flow, moved slot", &moved_svc, &fresh_moved_flow(seed, &moved, CHECK_MOVED_FLOW))?;
    let moved_client = |want_moved: bool| {
        (0..pool_size.max(1024))
            .map(|i| (tcp_frame(pool_client(i), 40001, MOVED_VIP, 80, SYN), tcp_frame(pool_client(i), 40001, MOVED_VIP, 80, ACK)))
            .find(|(syn, _)| in_moved_slot(seed, &moved, syn) == want_moved)
            .context("no tracked client in a moved (or unmoved) slot")
    };
    let (syn, est_moved) = moved_client(true)?;
    check_new_moved_flow(&lb, "TCP established flow, moved slot", &moved_svc, &[syn, est_moved.clone()])?;
    let id = lb.ring_choice(&moved_svc, &flow_key(&est_moved));
    check(&lb, "TCP established, moved slot", &est_moved, XDP_TX, &to_backend(&moved_svc, id, &est_moved).bytes(), MOVED)?;
    let (_, est_unmoved) = moved_client(false)?;
    let id = lb.ring_choice(&moved_svc, &flow_key(&est_unmoved));
    let want = to_backend(&moved_svc, id, &est_unmoved).bytes();
    check(&lb, "TCP established, unmoved slot, ring retained", &est_unmoved, XDP_TX, &want, STATELESS)?;
    ensure!(lb.dp.maps.conn(&flow_key(&est_unmoved))?.is_none(), "TCP established, unmoved slot: an entry was inserted");

    let mut tcp_est = Vec::new();
    let mut tcp_reply = Vec::new();
    let mut udp_est = Vec::new();
    for i in 0..pool_size {
        let syn = tcp_frame(pool_client(i), 40000, VIP, 80, SYN);
        let ack = tcp_frame(pool_client(i), 40000, VIP, 80, ACK);
        let d = udp_frame(pool_client(i), 40000, VIP, 53);
        let tid = lb.ring_choice(&tcp, &flow_key(&syn));
        let uid = lb.ring_choice(&udp, &flow_key(&d));
        let reply = reply_from(&tcp, tid, &ack);
        if i == 0 {
            check_new_tcp_flow(&lb, "TCP tracked flow", &tcp, &[syn.clone(), ack.clone()])?;
            check(&lb, "TCP established", &ack, XDP_TX, &to_backend(&tcp, tid, &ack).bytes(), STATELESS)?;
            check(&lb, "TCP reply", &reply, XDP_REDIRECT, &reply_to_client(&reply, 80).bytes(), &[(Reason::ReplyToClient, 1)])?;
            check(&lb, "UDP first datagram", &d, XDP_TX, &to_backend(&udp, uid, &d).bytes(), STATELESS)?;
            check(&lb, "UDP established", &d, XDP_TX, &to_backend(&udp, uid, &d).bytes(), STATELESS)?;
        } else {
            for f in [&syn, &ack, &d] {
                let r = lb.dp.program().test_run(TestRunOptions { data_in: Some(&f.bytes()), ..TestRunOptions::default() })?;
                ensure!(r.return_value == XDP_TX, "setting up tracked flow {i}: verdict {}", r.return_value);
            }
        }
        tcp_est.push(ack.bytes());
        tcp_reply.push(reply.bytes());
        udp_est.push(d.bytes());
    }
    // Direct server return: a new flow, and a tracked flow established and checked once more.
    let mut dsr_est = Vec::new();
    for svc in &dsr_services {
        let (mode, name) = (dsr::mode_of(svc), dsr::name(dsr::mode_of(svc)));
        let fresh = match mode {
            FORWARD_TUNNEL => fresh_dsr_flow::<FORWARD_TUNNEL>(CHECK_FLOW),
            FORWARD_GUE => fresh_dsr_flow::<FORWARD_GUE>(CHECK_FLOW),
            _ => fresh_dsr_flow::<FORWARD_DIRECT>(CHECK_FLOW),
        };
        let new_lb = dsr_lbs.iter().find(|(m, _)| *m == mode).map_or(&lb, |(_, l)| l);
        check_new_dsr_flow(new_lb, &format!("TCP new flow, {name}"), svc, &fresh, &dsr::Expect::new(svc))?;
        let syn = tcp_frame(pool_client(0), 40000, dsr::vip(mode), 80, SYN);
        let ack = tcp_frame(pool_client(0), 40000, dsr::vip(mode), 80, ACK);
        let expect = dsr::Expect::new(svc);
        check_new_dsr_flow(&lb, &format!("TCP tracked flow, {name}"), svc, &[syn.clone(), ack.clone()], &expect)?;
        let id = lb.ring_choice(svc, &flow_key(&ack));
        let what = format!("TCP established, {name}");
        check_with(&lb, &what, &ack, XDP_TX, |out| expect.frame(id, &ack, out), STATELESS, dsr::verify)?;
        dsr_est.push(ack.bytes());
    }
    let [est_tunnel, est_gue, est_direct] = &dsr_est[..] else { bail!("one established flow per DSR mode") };
    let not_vip = tcp_frame(pool_client(0), 40000, OTHER, 80, ACK);
    let nv = not_vip.bytes();
    check(&lb, "not for a VIP", &not_vip, XDP_PASS, &nv, &[(Reason::PassNotVip, 1)])?;
    let mut arp = vec![0u8; 64];
    arp[..6].copy_from_slice(&[0xff; 6]);
    arp[6..12].copy_from_slice(&CLIENT_MAC);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    {
        let r = lb.run(&arp);
        ensure!(r.action == XDP_PASS && r.out == arp && r.counted == vec![(Reason::PassNotIp, 1)], "ARP: {r:?}");
    }
    let mut icmp = nv.clone();
    icmp[14 + 9] = 1; // protocol ICMP; the IPv4 checksum is not checked on this path
    {
        let r = lb.run(&icmp);
        ensure!(r.action == XDP_PASS && r.out == icmp && r.counted == vec![(Reason::PassNotTcpUdp, 1)], "ICMP: {r:?}");
    }
    check_floor(floor_program(&floors, "floor_pass")?, "floor_pass", &nv, XDP_PASS)?;
    check_floor(floor_program(&floors, "floor_tx")?, "floor_tx", &tcp_est[0], XDP_TX)?;
    check_floor_encap(floor_program(&floors, "floor_encap")?, "floor_encap", &tcp_est[0], false)?;
    check_floor_encap(floor_program(&floors, "floor_encap_gue")?, "floor_encap_gue", &tcp_est[0], true)?;
    check_floor_insert(&floors, SHARED_LRU, "floor_insert", CHECK_FLOW)?;
    check_floor_insert(&floors, PERCPU_LRU, "floor_insert_percpu", CHECK_FLOW)?;

    // The full table: filled beyond its capacity (the LRU has begun to evict) by SYN + ACK
    // pairs of a round-robin VIP (a stable Maglev VIP's flows insert nothing), and the floors'
    // tables by their own inserts, before anything is timed. The
    // per-CPU LRU splits its entries between the possible CPUs' free lists and this thread
    // inserts from one CPU only, so its table evicts from capacity / CPUs entries on.
    let prefill = conn_full as u64 + conn_full as u64 / 4;
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("{path}: {e}"))?;
    let (full, floors_full, full_entries) = if with_full {
        let mut full = load_lb(conn_full)?;
        let rr = Service { flags: lb_common::maps::VIP_FLAG_ROUND_ROBIN, ..service(7, RR_VIP, 80, PROTO_TCP, 61, &pool8(8082)) };
        full.dp.maps.apply_service(&rr)?;
        fill(full.dp.program(), "filling the full table", fresh_rr_flow, PREFILL_BASE, prefill, XDP_TX)?;
        // CONNS has per-CPU LRU lists: filled from one CPU, it holds that CPU's share.
        let entries = full.dp.maps.conn_count();
        let share = (conn_full as usize).div_ceil(cpus);
        ensure!(
            entries <= conn_full as usize && entries >= share * 15 / 16,
            "the full table holds {entries} of {conn_full} entries after {prefill} flows ({share} per CPU)"
        );
        check_new_tcp_flow(&full, "TCP new flow, full table", &tcp, &fresh_tcp_flow(CHECK_FLOW))?;
        let floors_full = load_floors(conn_full, &[SHARED_LRU.prog, PERCPU_LRU.prog])?;
        for floor in [SHARED_LRU, PERCPU_LRU] {
            let what = format!("filling {}'s full table", floor.prog);
            fill(floor_program(&floors_full, floor.prog)?, &what, fresh_key, PREFILL_BASE, prefill, XDP_TX)?;
            check_floor_insert(&floors_full, floor, &format!("{}, full table", floor.prog), CHECK_FLOW)?;
        }
        let shared_entries = floor_entries(&floors_full, SHARED_LRU)?;
        ensure!(
            shared_entries <= conn_full as usize && shared_entries >= conn_full as usize * 15 / 16,
            "floor_insert's full table holds {shared_entries} of {conn_full} entries"
        );
        // One CPU's share of the (rounded-up) capacity, or more if the kernel does not split it.
        let percpu_entries = floor_entries(&floors_full, PERCPU_LRU)?;
        ensure!(
            percpu_entries <= conn_full as usize && percpu_entries >= share * 15 / 16,
            "floor_insert_percpu's full table holds {percpu_entries} of {conn_full} entries ({share} per CPU)"
        );
        (Some(full), Some(floors_full), Some((entries, shared_entries, percpu_entries)))
    } else {
        (None, None, None)
    };
    let entries_before = lb.dp.maps.conn_count();
    let dsr_entries_before: Vec<usize> = dsr_lbs.iter().map(|(_, l)| l.dp.maps.conn_count()).collect();

    let many_what: &'static str =
        Box::leak(format!("TCP established, {pool_size} flows in turn (stateless)").into_boxed_str());
    let full_what: &'static str = Box::leak(
        format!("TCP new flow, stateless, beside a full table ({conn_full} entries of other flows): SYN + first ACK").into_boxed_str(),
    );
    let empty_what: &'static str = Box::leak(
        format!("TCP new flow, stateless (nothing inserted), empty table ({conn_empty} entries): SYN + first ACK").into_boxed_str(),
    );
    let million: u64 = env_or("LB_BENCH_FLOWS", MILLION_DEFAULT);
    let million_what: &'static str =
        Box::leak(format!("TCP established, {million} distinct flows in turn (stateless)").into_boxed_str());
    let path = |name: &'static str,
                what: &'static str,
                kind: Kind,
                prog: Prog,
                floor: &'static [&'static str],
                action: u32,
                frames: Frames| {
        let packets = match &frames {
            Frames::Pool(_) | Frames::Cycle(..) => 1,
            Frames::Fresh(make) => make(0).len(),
        };
        Path { name, what, kind, prog, floor, encap_floor: &[], packets, action, frames, sets: Vec::new(), next: 0, cursor: 0 }
    };
    let over_encap = |p: Path, encap_floor: &'static [&'static str]| Path { encap_floor, ..p };
    const PASS: &[&str] = &["floor_pass"];
    const TX: &[&str] = &["floor_tx"];
    // A stateless new TCP flow is two packets that insert nothing: its floor is floor_tx twice.
    const NEW: &[&str] = &["floor_tx", "floor_tx"];
    let pool = |f: &Vec<u8>| Frames::Pool(vec![f.clone()]);
    let mut paths = vec![
        path("floor_pass", "floor: return XDP_PASS", Kind::Floor, Prog::Floor("floor_pass"), &[], XDP_PASS, pool(&nv)),
        path("floor_tx", "floor: swap MACs, XDP_TX", Kind::Floor, Prog::Floor("floor_tx"), &[], XDP_TX, pool(&tcp_est[0])),
        path("floor_insert", "floor: one LRU insert (40-byte key, 16-byte value), empty table, XDP_TX", Kind::Floor, Prog::Floor("floor_insert"), &[], XDP_TX, Frames::Fresh(Box::new(fresh_key))),
        path("floor_insert_full", "floor: one LRU insert, full evicting table, XDP_TX", Kind::Floor, Prog::FloorFull(SHARED_LRU.prog), &[], XDP_TX, Frames::Fresh(Box::new(fresh_key))),
        path("floor_insert_percpu", "floor: one LRU insert, per-CPU LRU lists, empty table, XDP_TX", Kind::Floor, Prog::Floor(PERCPU_LRU.prog), &[], XDP_TX, Frames::Fresh(Box::new(fresh_key))),
        path("floor_insert_percpu_full", "floor: one LRU insert, per-CPU LRU lists, full evicting table, XDP_TX", Kind::Floor, Prog::FloorFull(PERCPU_LRU.prog), &[], XDP_TX, Frames::Fresh(Box::new(fresh_key))),
        path("floor_encap", "floor: push a fixed 20-byte outer IPv4 header (IPIP), XDP_TX", Kind::Floor, Prog::Floor("floor_encap"), &[], XDP_TX, pool(&tcp_est[0])),
        path("floor_encap_gue", "floor: push a fixed 28-byte outer IPv4 + UDP header (GUE), XDP_TX", Kind::Floor, Prog::Floor("floor_encap_gue"), &[], XDP_TX, pool(&tcp_est[0])),
        path("tcp_new", empty_what, Kind::New, Prog::Lb, NEW, XDP_TX, Frames::Fresh(Box::new(fresh_tcp_flow))),
        path("tcp_new_full", full_what, Kind::New, Prog::LbFull, NEW, XDP_TX, Frames::Fresh(Box::new(fresh_tcp_flow))),
        path("tcp_established", "TCP established, one hot flow (stateless)", Kind::Established, Prog::Lb, TX, XDP_TX, pool(&tcp_est[0])),
        over_encap(path("tcp_new_tunnel", "DSR tunnel (IPIP): TCP new flow, stateless: SYN + first ACK", Kind::DsrNew, Prog::LbDsr(FORWARD_TUNNEL), NEW, XDP_TX, Frames::Fresh(Box::new(fresh_dsr_flow::<FORWARD_TUNNEL>))), &["floor_encap", "floor_encap"]),
        over_encap(path("tcp_established_tunnel", "DSR tunnel (IPIP): TCP established, one hot flow", Kind::DsrEstablished, Prog::Lb, TX, XDP_TX, pool(est_tunnel)), &["floor_encap"]),
        over_encap(path("tcp_new_gue", "DSR gue: TCP new flow, stateless: SYN + first ACK", Kind::DsrNew, Prog::LbDsr(FORWARD_GUE), NEW, XDP_TX, Frames::Fresh(Box::new(fresh_dsr_flow::<FORWARD_GUE>))), &["floor_encap_gue", "floor_encap_gue"]),
        over_encap(path("tcp_established_gue", "DSR gue: TCP established, one hot flow", Kind::DsrEstablished, Prog::Lb, TX, XDP_TX, pool(est_gue)), &["floor_encap_gue"]),
        path("tcp_new_direct", "DSR direct (L2): TCP new flow, stateless: SYN + first ACK", Kind::DsrNew, Prog::LbDsr(FORWARD_DIRECT), NEW, XDP_TX, Frames::Fresh(Box::new(fresh_dsr_flow::<FORWARD_DIRECT>))),
        path("tcp_established_direct", "DSR direct (L2): TCP established, one hot flow", Kind::DsrEstablished, Prog::Lb, TX, XDP_TX, pool(est_direct)),
        path("tcp_established_many", many_what, Kind::Established, Prog::Lb, TX, XDP_TX, Frames::Pool(tcp_est)),
        path("tcp_established_1m", million_what, Kind::Scale, Prog::Lb, TX, XDP_TX, Frames::Cycle(million, million_flow)),
        path("tcp_new_moved", "retention: TCP new flow in a moved slot (SYN to HALF_OPEN, first ACK inserts into CONNS): SYN + first ACK", Kind::Breakdown, Prog::Lb, NEW, XDP_TX, Frames::Fresh(Box::new({
            let moved = moved.clone();
            move |n| fresh_moved_flow(seed, &moved, n)
        }))),
        path("tcp_established_moved", "retention: TCP established, one hot flow in a moved slot (CONNS hit)", Kind::Breakdown, Prog::Lb, TX, XDP_TX, pool(&est_moved.bytes())),
        path("tcp_established_unmoved", "retention: TCP established, one hot flow in an unmoved slot of the VIP with a retained ring (stateless)", Kind::Breakdown, Prog::Lb, TX, XDP_TX, pool(&est_unmoved.bytes())),
        path("tcp_reply", "TCP reply, backend to client (REPLIES, FIB lookup, NAT back)", Kind::Established, Prog::Lb, TX, XDP_REDIRECT, pool(&tcp_reply[0])),
        path("udp_new", "UDP new flow, stateless (nothing inserted)", Kind::New, Prog::Lb, TX, XDP_TX, Frames::Fresh(Box::new(fresh_udp))),
        path("tcp_syn", "breakdown: a new TCP flow's SYN alone (stateless: nothing recorded)", Kind::Breakdown, Prog::Lb, TX, XDP_TX, Frames::Fresh(Box::new(fresh_syn))),
        path("udp_established", "UDP established, one hot flow", Kind::Established, Prog::Lb, TX, XDP_TX, pool(&udp_est[0])),
        path("tcp_reply_many", "variant: TCP reply, tracked clients in turn", Kind::Breakdown, Prog::Lb, TX, XDP_REDIRECT, Frames::Pool(tcp_reply)),
        path("not_vip", "TCP for no VIP (pass to the kernel)", Kind::NotVip, Prog::Lb, PASS, XDP_PASS, pool(&nv)),
        path("not_tcp_udp", "breakdown: ICMP (parse IP, count, pass)", Kind::Breakdown, Prog::Lb, PASS, XDP_PASS, Frames::Pool(vec![icmp])),
        path("not_ip", "breakdown: ARP (parse Ethernet, count, pass)", Kind::Breakdown, Prog::Lb, PASS, XDP_PASS, Frames::Pool(vec![arp])),
    ];
    paths.retain(|p| if p.kind == Kind::Floor { with_full || !matches!(p.prog, Prog::FloorFull(_)) } else { wanted(p.name) });
    let programs = Programs { lb, full, dsr: dsr_lbs, floors, floors_full };

    // Warm-up, then the sets, each path's runs in a block, the order rotated every set.
    for set in 0..=opts.sets {
        let n = if set == 0 { opts.warmup } else { opts.runs };
        for k in 0..paths.len() {
            let idx = (k + set) % paths.len();
            let p = &mut paths[idx];
            let prog = programs.program(p)?;
            let mean = match &p.frames {
                Frames::Pool(pool) => {
                    let offset = set * 7919;
                    time_runs(prog, n, n, p.action, |i| pool[(offset + i) % pool.len()].clone())
                }
                Frames::Fresh(make) => {
                    // Built before the timed loop: building a frame is not part of the cost.
                    let frames: Vec<Vec<u8>> = (0..n as u64).flat_map(|i| make(p.next + i)).map(|f| f.bytes()).collect();
                    p.next += n as u64;
                    time_runs(prog, frames.len(), n, p.action, |i| frames[i].clone())
                }
                Frames::Cycle(count, make) => {
                    let frames: Vec<Vec<u8>> = (0..n as u64).map(|i| make((p.cursor + i) % count).bytes()).collect();
                    p.cursor = (p.cursor + n as u64) % count;
                    time_runs(prog, n, n, p.action, |i| frames[i].clone())
                }
            }
            .with_context(|| format!("timing {}", p.name))?;
            if set > 0 {
                p.sets.push(mean);
            }
        }
    }
    let dsr_instances = programs.dsr.iter().map(|(m, l)| (dsr::name(*m), Some(l)));
    for (what, lb) in [("empty", Some(&programs.lb)), ("full", programs.full.as_ref())].into_iter().chain(dsr_instances) {
        let Some(lb) = lb else { continue };
        let reasons = lb.dp.maps.reasons()?;
        let insert_failed = reasons[Reason::ConnInsertFailed as usize];
        if insert_failed > 0 {
            bail!("{what} table: {insert_failed} connection-table inserts failed: the new-flow figures would include a failure path");
        }
        let resumed = reasons[Reason::FlowResumedWithoutEntry as usize];
        ensure!(resumed == 0, "{what} table: {resumed} ACKs were taken for flows resumed without their entry");
    }
    // No entry of the empty table was evicted: every new flow of the run is still there.
    let fresh_of = |name: &str| paths.iter().find(|p| p.name == name).map_or(0, |p| p.next as usize);
    let entries_after = programs.lb.dp.maps.conn_count();
    // Only the new flows of moved slots insert: every stateless row (new flows, SYNs, UDP's
    // first datagrams, a million established flows) inserted nothing.
    let inserted = fresh_of("tcp_new_moved");
    ensure!(
        entries_after == entries_before + inserted,
        "the empty table holds {entries_after} entries, not {entries_before} + {inserted} (the new flows of moved slots): entries were evicted, not inserted, or inserted by a stateless path"
    );
    for ((mode, l), before) in programs.dsr.iter().zip(dsr_entries_before) {
        let entries = l.dp.maps.conn_count();
        ensure!(
            entries == before,
            "the {} data path's table holds {entries} entries, not {before}: its stateless new flows inserted entries",
            dsr::name(*mode)
        );
    }
    if let (Some(full), Some((filled, _, _))) = (&programs.full, full_entries) {
        let entries = full.dp.maps.conn_count();
        ensure!(entries == filled, "the full table holds {entries} entries, not the {filled} it was filled with: stateless new flows changed it");
    }
    // Nor of the empty insert floors' tables: the checked key and every timed one are there.
    for floor in [SHARED_LRU, PERCPU_LRU] {
        let entries = floor_entries(&programs.floors, floor)?;
        let inserted = 1 + fresh_of(floor.prog);
        ensure!(
            entries == inserted,
            "{}'s empty table holds {entries} entries, not {inserted}: entries were evicted or not inserted",
            floor.prog
        );
    }

    // Results.
    let sets_of = |name: &str| paths.iter().find(|p| p.name == name).map(|p| p.sets.clone());
    let floor_sets = |names: &[&str]| -> Option<Vec<f64>> {
        let mut sum = vec![0.0; opts.sets];
        for name in names {
            for (s, v) in sum.iter_mut().zip(sets_of(name)?) {
                *s += v;
            }
        }
        Some(sum)
    };
    let tx_sets = sets_of("floor_tx").unwrap_or_default();
    let mut chart = Chart {
        title: "1. Data path: ns per packet over its floor, hot paths".into(),
        unit: "ns, median over sets".into(),
        targets: vec![(TARGET_NOT_VIP_NS, "not-VIP target 30 ns".into()), (TARGET_FLOW_NS, "established target 100 ns".into())],
        ..Chart::default()
    };
    let mut cold_chart = Chart {
        title: "1. Data path: new flows, flows in turn and moved slots (over floor_tx per packet)".into(),
        unit: "ns over floor, median over sets".into(),
        targets: vec![(TARGET_FLOW_NS, "established target 100 ns".into())],
        ..Chart::default()
    };
    let mut json_paths = Vec::new();
    let mut targets = Vec::new();
    let over_of = |p: &Path, floor: &[f64]| {
        let diffs: Vec<f64> = p.sets.iter().zip(floor).map(|(a, b)| a - b).collect();
        Summary::of(&diffs)
    };
    for p in &paths {
        let abs = Summary::of(&p.sets);
        let per_second = 1000.0 / abs.median;
        let floor_name = if p.floor.is_empty() { "-".to_owned() } else { p.floor.join(" + ") };
        let over = floor_sets(p.floor).filter(|_| !p.floor.is_empty()).map(|f| over_of(p, &f));
        let over_encap = floor_sets(p.encap_floor).filter(|_| !p.encap_floor.is_empty()).map(|f| over_of(p, &f));
        // New flows against the MAC-swap floor for each of their packets as well.
        let over_tx = (p.kind.is_new() && !tx_sets.is_empty())
            .then(|| over_of(p, &tx_sets.iter().map(|t| t * p.packets as f64).collect::<Vec<_>>()));
        let target = p.kind.target();
        let verdict = match (over, target) {
            (Some(o), Some(t)) => report::ns_verdict(o.median, t),
            _ => String::new(),
        };
        if let Some(o) = over {
            let cold = p.kind.is_new() || p.name.ends_with("_many") || p.name.ends_with("_1m") || p.name.starts_with("tcp_new_moved");
            (if cold { &mut cold_chart } else { &mut chart }).bars.push(Bar {
                label: p.name.into(),
                value: o.median,
                lo: o.p25,
                hi: o.p75,
                color: if p.kind == Kind::Breakdown { REFERENCE } else { OURS },
            });
        }
        if let (Some(o), Some(t)) = (over, target) {
            targets.push((format!("1. {} ≤ {t:.0} ns over {floor_name}", p.name), format!("{:.1} ns over {floor_name}", o.median), verdict.clone()));
        }
        json_paths.push(json!({
            "name": p.name,
            "what": p.what,
            "floor": (!p.floor.is_empty()).then(|| floor_name.clone()),
            "packets_per_unit": p.packets,
            "ns_per_packet": (p.packets == 1).then(|| abs.to_json()),
            "ns_per_flow": (p.packets > 1).then(|| abs.to_json()),
            "mpps": (per_second * 1000.0).round() / 1000.0,
            "ns_over_floor": over.map(|o| o.to_json()),
            "ns_over_floor_tx_per_packet": over_tx.map(|o| o.to_json()),
            "encap_floor": (!p.encap_floor.is_empty()).then(|| p.encap_floor.join(" + ")),
            "ns_over_encap_floor": over_encap.map(|o| o.to_json()),
            "target_ns_over_floor": target,
            "verdict": verdict,
            "sets_ns": p.sets.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>(),
        }));
    }
    let over_median = |name: &str| {
        let p = paths.iter().find(|p| p.name == name)?;
        Some(over_of(p, &floor_sets(p.floor)?).median)
    };
    targets.extend(report::relative_targets(&over_median));
    let json = json!({
        "method": "BPF_PROG_TEST_RUN, repeat=1 per run on a pristine 64-byte frame, kernel-reported durations summed; new TCP flows timed as SYN + first ACK per flow; pinned CPU; warm-up; floors in the same sets; run in a namespace whose FIB reaches the clients",
        "cpu": opts.cpu,
        "sets": opts.sets,
        "runs_per_set": opts.runs,
        "warmup_runs": opts.warmup,
        "conn_capacity_empty": conn_empty,
        "conn_capacity_full": conn_full,
        "full_prefill_flows": with_full.then_some(prefill),
        "full_entries_after_prefill": full_entries.map(|(a, _, _)| a),
        "floor_full_entries_after_prefill": full_entries.map(|(_, b, _)| b),
        "floor_percpu_full_entries_after_prefill": full_entries.map(|(_, _, c)| c),
        "possible_cpus": cpus,
        "pool_flows": pool_size,
        "million_flows": million,
        "moved_slots": moved_count,
        "ring_slots": moved.len(),
        "new_flows": paths.iter().filter(|p| p.kind != Kind::Floor).map(|p| p.next).sum::<u64>(),
        "paths": json_paths,
    });
    // The terminal shows the tables the published results are generated with.
    let results = serde_json::Map::from_iter([("datapath".to_owned(), json.clone())]);
    let tables = vec![report::datapath_table(&json), report::breakdown_table(&results), report::dsr_table(&json)];
    Ok((tables, vec![chart, cold_chart], targets, json))
}
