//! Part 1: what each data path case costs per packet, measured with BPF_PROG_TEST_RUN.
//!
//! The real program is loaded with a real configuration (a VIP with 8 backends over TCP and
//! the same address with 8 backends over UDP, full-size 65,537-slot Maglev rings) and runs on
//! 64-byte frames. Every measured run is one BPF_PROG_TEST_RUN call with `repeat = 1` on a
//! pristine copy of its input frame (the kernel copies `data_in` for each call), and the
//! kernel-reported durations are summed; a repeated run on one buffer would measure a frame
//! the program had already rewritten. The timing thread is pinned to one CPU and warmed up
//! first. Floor programs (XDP_PASS; MAC swap + XDP_TX) are measured in the same sets, so every
//! figure is also given as nanoseconds over its floor: the floor absorbs the test-run
//! machinery (timer reads, context set-up) that a NIC driver does not pay.
//!
//! Each path's verdict, output bytes, checksums and counters are checked once before it is
//! timed, and every timed run's verdict is checked again.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::{
    counters::Reason,
    maps::{PROTO_TCP, PROTO_UDP},
};
use lb_userspace::dataplane::{Dataplane, FLOORS, Service, Sizing};
use serde_json::json;

use super::{
    report::{Bar, Chart, OURS, REFERENCE, Report, Table},
    stats::Summary,
};
use crate::{
    harness::{
        CLIENT_MAC, LB_MAC, Lb, XDP_PASS, XDP_TX, backend_endpoint, backend_mac, flow_key, from_client, service, tcp,
        udp,
    },
    packet::{Frame, L4, verify_checksums},
};

/// The VIP of the benchmark configuration.
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10));
/// An address that is no VIP.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99));
/// TCP flags.
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// Tracked flows the established and reply cases cycle through (more than fit the caches of
/// one hot flow, as on a busy node).
const POOL_DEFAULT: u32 = 4096;

/// Target over the floor for new and established flows (ns), from issue 5.
pub const TARGET_FLOW_NS: f64 = 100.0;
/// Target over the floor for traffic that is for no VIP (ns).
pub const TARGET_NOT_VIP_NS: f64 = 30.0;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Repeated sets (medians and spreads are over sets).
    pub sets: usize,
    /// Single runs per path and set.
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

/// The floor a path is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Floor {
    /// XDP_PASS.
    Pass,
    /// MAC swap and XDP_TX.
    Tx,
}

impl Floor {
    fn name(self) -> &'static str {
        match self {
            Floor::Pass => "floor_pass",
            Floor::Tx => "floor_tx",
        }
    }
}

/// What a path's target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A floor program itself.
    Floor,
    /// A new flow (target 100 ns over floor).
    New,
    /// An established flow or its reply (target 100 ns).
    Established,
    /// Not for a VIP (target 30 ns).
    NotVip,
    /// Extra cases that show where the time goes (no target).
    Breakdown,
}

/// Where a path's input frames come from.
enum Frames {
    /// One frame, or a pool cycled through.
    Pool(Vec<Vec<u8>>),
    /// A fresh flow for every run: new flows must miss the connection table.
    Fresh(fn(u64) -> Frame),
}

struct Path {
    name: &'static str,
    what: &'static str,
    kind: Kind,
    floor: Option<Floor>,
    action: u32,
    frames: Frames,
    /// Mean ns per run of each set.
    sets: Vec<f64>,
    /// Next fresh-flow number.
    next: u64,
}

fn tcp_frame(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Frame {
    // 14 + 20 + 20 + 10 = 64 bytes.
    Frame { payload: vec![0x61; 10], ..from_client(src, dst, tcp(sport, dport, flags)) }
}

fn udp_frame(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Frame {
    // 14 + 20 + 8 + 22 = 64 bytes.
    Frame { payload: vec![0x62; 22], ..from_client(src, dst, udp(sport, dport)) }
}

/// Client address and port of fresh flow `n` (100.64.0.0/16, never reused in a run).
fn fresh_client(n: u64) -> (IpAddr, u16) {
    let ip = Ipv4Addr::from(0x6440_0000u32 + (n / 50_000) as u32);
    (IpAddr::V4(ip), 1024 + (n % 50_000) as u16)
}

/// Client address of tracked flow `i` (100.100.0.0/16).
fn pool_client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x6464_0000u32 + i + 1))
}

fn fresh_syn(n: u64) -> Frame {
    let (src, sport) = fresh_client(n);
    tcp_frame(src, sport, VIP, 80, SYN)
}

fn fresh_udp(n: u64) -> Frame {
    // Odd numbers: never the same client port as a TCP fresh flow of the same number.
    let (src, sport) = fresh_client(n + (1 << 40));
    udp_frame(src, sport, VIP, 53)
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

/// The reply `r` as the program sends it back to the client (source := VIP).
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

/// One checked run: verdict, exact bytes, checksums, counters.
fn check(lb: &Lb, what: &str, input: &Frame, action: u32, want: &[u8], reason: Reason) -> anyhow::Result<()> {
    let bytes = input.bytes();
    ensure!(bytes.len() == 64, "{what}: input frame is {} bytes, not 64", bytes.len());
    let run = lb.run(&bytes);
    ensure!(run.action == action, "{what}: verdict {} instead of {action}", run.action);
    ensure!(run.out == want, "{what}: output bytes differ from the expected frame");
    if reason != Reason::PassNotIp && reason != Reason::PassNotTcpUdp {
        verify_checksums(&run.out).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    }
    ensure!(run.counted == vec![(reason, 1)], "{what}: counters {:?}", run.counted);
    Ok(())
}

/// Runs `frame` through a floor program once and checks its verdict and output.
fn check_floor(prog: &Xdp, floor: Floor, frame: &[u8]) -> anyhow::Result<()> {
    let mut out = vec![0u8; frame.len() + 64];
    let r = prog.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })?;
    out.truncate(r.data_size_out as usize);
    let mut want = frame.to_vec();
    let action = match floor {
        Floor::Pass => XDP_PASS,
        Floor::Tx => {
            want[..6].copy_from_slice(&frame[6..12]);
            want[6..12].copy_from_slice(&frame[..6]);
            XDP_TX
        }
    };
    ensure!(r.return_value == action && out == want, "{}: wrong verdict or output", floor.name());
    Ok(())
}

/// Times `n` single runs; the mean of the kernel-reported durations in ns. Every run's verdict
/// must be `action`.
fn time_runs(prog: &Xdp, n: usize, action: u32, mut frame: impl FnMut(usize) -> Vec<u8>) -> anyhow::Result<f64> {
    let mut total: u128 = 0;
    let mut wrong = 0usize;
    for i in 0..n {
        let f = frame(i);
        let r = prog.test_run(TestRunOptions { data_in: Some(&f), ..TestRunOptions::default() }).context("BPF_PROG_TEST_RUN")?;
        wrong += (r.return_value != action) as usize;
        total += r.duration.as_nanos();
    }
    ensure!(wrong == 0, "{wrong} of {n} timed runs gave another verdict than {action}");
    Ok(total as f64 / n as f64)
}

/// The loaded programs.
struct Programs {
    lb: Lb,
    floors: Ebpf,
}

impl Programs {
    fn program(&self, path: &Path) -> &Xdp {
        if path.kind == Kind::Floor {
            self.floors.program(path.name).and_then(|p| p.try_into().ok()).expect("loaded floor")
        } else {
            self.lb.dp.program()
        }
    }
}

fn load_floors() -> anyhow::Result<Ebpf> {
    let mut floors = Ebpf::load(FLOORS).context("loading the floor programs' object")?;
    for name in ["floor_pass", "floor_tx"] {
        let p: &mut Xdp = floors.program_mut(name).with_context(|| format!("no program {name}"))?.try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(floors)
}

/// Runs part 1 and adds its tables, chart, targets and JSON to `report`.
pub fn run(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let opts = opts.clone();
    // Everything on one pinned thread: loading, checking and timing.
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

fn measure(opts: &Options) -> anyhow::Result<Measured> {
    let pool_size: u32 = std::env::var("LB_BENCH_POOL").ok().and_then(|v| v.parse().ok()).unwrap_or(POOL_DEFAULT);
    super::pin_to_cpu(opts.cpu)?;
    let sizing = Sizing {
        // Room for every new flow of the run without LRU eviction (two entries per flow).
        conn_capacity: std::env::var("LB_BENCH_CONN").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 21),
        hash_seed: 42,
        ..Sizing::default()
    };
    let dp = Dataplane::load(&sizing).context("loading the data path (needs root)")?;
    let mut lb = Lb::from_dataplane(dp);
    let pool8 = |port: u16| -> Vec<(IpAddr, u16, u32)> {
        (1..=8u8).map(|k| (IpAddr::V4(Ipv4Addr::new(10, 0, 10 + k, 2)), port, 1)).collect()
    };
    let tcp = service(1, VIP, 80, PROTO_TCP, 1, &pool8(8080));
    let udp = service(2, VIP, 53, PROTO_UDP, 11, &pool8(5353));
    lb.dp.maps.apply_service(&tcp)?;
    lb.dp.maps.apply_service(&udp)?;
    let floors = load_floors()?;

    // Check every path once, exactly, and set up the tracked flows.
    let syn = fresh_syn(1 << 39);
    let id = lb.ring_choice(&tcp, &flow_key(&syn));
    check(&lb, "TCP SYN, new flow", &syn, XDP_TX, &to_backend(&tcp, id, &syn).bytes(), Reason::ForwardToBackend)?;
    let dgram = fresh_udp(1 << 39);
    let id = lb.ring_choice(&udp, &flow_key(&dgram));
    check(&lb, "UDP, new flow", &dgram, XDP_TX, &to_backend(&udp, id, &dgram).bytes(), Reason::ForwardToBackend)?;

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
            check(&lb, "TCP SYN of a tracked flow", &syn, XDP_TX, &to_backend(&tcp, tid, &syn).bytes(), Reason::ForwardToBackend)?;
            check(&lb, "TCP established", &ack, XDP_TX, &to_backend(&tcp, tid, &ack).bytes(), Reason::ForwardToBackend)?;
            check(&lb, "TCP reply", &reply, XDP_TX, &reply_to_client(&reply, 80).bytes(), Reason::ReplyToClient)?;
            check(&lb, "UDP first datagram", &d, XDP_TX, &to_backend(&udp, uid, &d).bytes(), Reason::ForwardToBackend)?;
            check(&lb, "UDP established", &d, XDP_TX, &to_backend(&udp, uid, &d).bytes(), Reason::ForwardToBackend)?;
        } else {
            for f in [&syn, &d] {
                let r = lb.dp.program().test_run(TestRunOptions { data_in: Some(&f.bytes()), ..TestRunOptions::default() })?;
                ensure!(r.return_value == XDP_TX, "setting up tracked flow {i}: verdict {}", r.return_value);
            }
        }
        tcp_est.push(ack.bytes());
        tcp_reply.push(reply.bytes());
        udp_est.push(d.bytes());
    }
    let not_vip = tcp_frame(pool_client(0), 40000, OTHER, 80, ACK);
    let nv = not_vip.bytes();
    check(&lb, "not for a VIP", &not_vip, XDP_PASS, &nv, Reason::PassNotVip)?;
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
    let tx_floor: &Xdp = floors.program("floor_tx").and_then(|p| p.try_into().ok()).context("floor_tx")?;
    let pass_floor: &Xdp = floors.program("floor_pass").and_then(|p| p.try_into().ok()).context("floor_pass")?;
    check_floor(pass_floor, Floor::Pass, &nv)?;
    check_floor(tx_floor, Floor::Tx, &tcp_est[0])?;

    let many_what: &'static str = Box::leak(format!("variant: TCP established, {pool_size} tracked flows in turn").into_boxed_str());
    let path = |name, what, kind, floor, action, frames| Path { name, what, kind, floor, action, frames, sets: Vec::new(), next: 0 };
    let mut paths = vec![
        path("floor_pass", "floor: return XDP_PASS", Kind::Floor, None, XDP_PASS, Frames::Pool(vec![nv.clone()])),
        path("floor_tx", "floor: swap MACs, XDP_TX", Kind::Floor, None, XDP_TX, Frames::Pool(vec![tcp_est[0].clone()])),
        path("tcp_new", "TCP SYN, new flow (hash, ring, 2 inserts, NAT)", Kind::New, Some(Floor::Tx), XDP_TX, Frames::Fresh(fresh_syn)),
        path("tcp_established", "TCP established (connection-table hit, NAT)", Kind::Established, Some(Floor::Tx), XDP_TX, Frames::Pool(vec![tcp_est[0].clone()])),
        path("tcp_reply", "TCP reply, backend to client (NAT back)", Kind::Established, Some(Floor::Tx), XDP_TX, Frames::Pool(vec![tcp_reply[0].clone()])),
        path("udp_new", "UDP, new flow", Kind::New, Some(Floor::Tx), XDP_TX, Frames::Fresh(fresh_udp)),
        path("udp_established", "UDP, established flow", Kind::Established, Some(Floor::Tx), XDP_TX, Frames::Pool(vec![udp_est[0].clone()])),
        path("tcp_established_many", many_what, Kind::Breakdown, Some(Floor::Tx), XDP_TX, Frames::Pool(tcp_est)),
        path("tcp_reply_many", "variant: TCP reply, tracked flows in turn", Kind::Breakdown, Some(Floor::Tx), XDP_TX, Frames::Pool(tcp_reply)),
        path("not_vip", "TCP for no VIP (pass to the kernel)", Kind::NotVip, Some(Floor::Pass), XDP_PASS, Frames::Pool(vec![nv.clone()])),
        path("not_tcp_udp", "breakdown: ICMP (parse IP, count, pass)", Kind::Breakdown, Some(Floor::Pass), XDP_PASS, Frames::Pool(vec![icmp])),
        path("not_ip", "breakdown: ARP (parse Ethernet, count, pass)", Kind::Breakdown, Some(Floor::Pass), XDP_PASS, Frames::Pool(vec![arp])),
    ];
    if let Ok(only) = std::env::var("LB_BENCH_ONLY") {
        paths.retain(|p| p.kind == Kind::Floor || only.split(',').any(|o| o == p.name));
    }
    let programs = Programs { lb, floors };

    // Warm-up, then the sets, each path's runs in a block, the order rotated every set.
    for set in 0..=opts.sets {
        let n = if set == 0 { opts.warmup } else { opts.runs };
        for k in 0..paths.len() {
            let idx = (k + set) % paths.len();
            let p = &mut paths[idx];
            let prog = programs.program(p);
            let mean = match &p.frames {
                Frames::Pool(pool) => {
                    let offset = set * 7919;
                    time_runs(prog, n, p.action, |i| pool[(offset + i) % pool.len()].clone())
                }
                Frames::Fresh(make) => {
                    // Built before the timed loop: building a frame is not part of the cost.
                    let frames: Vec<Vec<u8>> = (0..n as u64).map(|i| make(p.next + i).bytes()).collect();
                    p.next += n as u64;
                    time_runs(prog, n, p.action, |i| frames[i].clone())
                }
            }
            .with_context(|| format!("timing {}", p.name))?;
            if set > 0 {
                p.sets.push(mean);
            }
        }
    }
    let reasons = programs.lb.dp.maps.reasons()?;
    let insert_failed = reasons[Reason::ConnInsertFailed as usize];
    if insert_failed > 0 {
        bail!("{insert_failed} connection-table inserts failed: the new-flow figures would include a failure path");
    }

    // Results.
    let floor_sets = |f: Floor| paths.iter().find(|p| p.name == f.name()).map(|p| p.sets.clone()).unwrap_or_default();
    let (pass_sets, tx_sets) = (floor_sets(Floor::Pass), floor_sets(Floor::Tx));
    let mut table = Table::new(
        &format!(
            "1. Data path cost per 64-byte packet (BPF_PROG_TEST_RUN, CPU {}, {} sets × {} single runs, median ±half IQR over sets)",
            opts.cpu, opts.sets, opts.runs
        ),
        &["path", "ns/packet", "Mpps (1 core)", "floor", "ns over floor", "target", "verdict"],
    );
    let mut chart = Chart {
        title: "1. Data path: ns per packet over its floor, hot paths".into(),
        unit: "ns, median over sets".into(),
        targets: vec![(TARGET_NOT_VIP_NS, "not-VIP target 30 ns".into()), (TARGET_FLOW_NS, "flow target 100 ns".into())],
        ..Chart::default()
    };
    let mut cold_chart = Chart {
        title: "1. Data path: new flows and cold connection-table entries".into(),
        unit: "ns over floor, median over sets".into(),
        targets: vec![(TARGET_FLOW_NS, "flow target 100 ns".into())],
        ..Chart::default()
    };
    let mut json_paths = Vec::new();
    let mut targets = Vec::new();
    for p in &paths {
        let abs = Summary::of(&p.sets);
        let mpps = 1000.0 / abs.median;
        let (over, floor_name) = match p.floor {
            Some(f) => {
                let fs = if f == Floor::Pass { &pass_sets } else { &tx_sets };
                let diffs: Vec<f64> = p.sets.iter().zip(fs).map(|(a, b)| a - b).collect();
                (Some(Summary::of(&diffs)), f.name())
            }
            None => (None, "-"),
        };
        let target = match p.kind {
            Kind::New | Kind::Established => Some(TARGET_FLOW_NS),
            Kind::NotVip => Some(TARGET_NOT_VIP_NS),
            _ => None,
        };
        let verdict = match (over, target) {
            (Some(o), Some(t)) if o.median <= t => format!("met ({:.0} ns to spare)", t - o.median),
            (Some(o), Some(t)) => format!("missed by {:.1} ns ({:.0} %)", o.median - t, 100.0 * (o.median - t) / t),
            _ => String::new(),
        };
        table.row(vec![
            p.what.into(),
            abs.show(1),
            format!("{mpps:.2}"),
            floor_name.into(),
            over.map(|o| o.show(1)).unwrap_or_else(|| "-".into()),
            target.map(|t| format!("≤ {t:.0} ns")).unwrap_or_default(),
            verdict.clone(),
        ]);
        if let Some(o) = over {
            let cold = p.kind == Kind::New || p.name.ends_with("_many");
            (if cold { &mut cold_chart } else { &mut chart }).bars.push(Bar {
                label: p.name.into(),
                value: o.median,
                lo: o.p25,
                hi: o.p75,
                color: if p.kind == Kind::Breakdown { REFERENCE } else { OURS },
            });
        }
        if let (Some(o), Some(t)) = (over, target) {
            targets.push((format!("1. {} ≤ {t:.0} ns over floor", p.name), format!("{:.1} ns over {}", o.median, floor_name), verdict.clone()));
        }
        json_paths.push(json!({
            "name": p.name,
            "what": p.what,
            "floor": p.floor.map(Floor::name),
            "ns_per_packet": abs.to_json(),
            "mpps": (mpps * 1000.0).round() / 1000.0,
            "ns_over_floor": over.map(|o| o.to_json()),
            "target_ns_over_floor": target,
            "verdict": verdict,
            "sets_ns": p.sets.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>(),
        }));
    }
    table.note("ns/packet is the kernel-reported run time (timer reads and test-run set-up included); \"ns over floor\" subtracts the floor measured in the same set, which is the figure to compare across machines");
    table.note(format!(
        "new flows: a fresh 5-tuple every run ({} new flows in all, none evicted); established, reply and UDP established: one tracked flow (its entries stay in the caches, as in the usual test-run micro-benchmarks); the \"_many\" variants cycle through {pool_size} tracked flows, so each run touches connection-table entries other runs have pushed out of the caches and TLB; configuration: 1 VIP address, TCP and UDP services with 8 backends each, 65,537-slot Maglev rings, resolved next hops",
        paths.iter().map(|p| p.next).sum::<u64>()
    ));
    let get = |name: &str| paths.iter().find(|p| p.name == name).map(|p| Summary::of(&p.sets).median).unwrap_or(f64::NAN);
    let mut breakdown = Table::new("1b. Where the time goes (differences of medians, ns)", &["step", "ns"]);
    for (step, a, b) in [
        ("program entry, Ethernet parse, REASONS counter (ARP − floor_pass)", "not_ip", "floor_pass"),
        ("IPv4 parse (ICMP − ARP)", "not_tcp_udp", "not_ip"),
        ("L4 parse, endpoint filter: two bit tests instead of the VIPS and CONNS lookups (not_vip − ICMP)", "not_vip", "not_tcp_udp"),
        ("CONNS hit, BACKENDS, VIP_LIVE, NAT, counters, MACs (tcp_established − not_vip)", "tcp_established", "not_vip"),
        ("new flow extra: CONNS miss, VIPS, hash, RING, BACKENDS, 2 LRU inserts (tcp_new − tcp_established)", "tcp_new", "tcp_established"),
        ("reply vs established (tcp_reply − tcp_established)", "tcp_reply", "tcp_established"),
        ("cold connection-table entries: 4096 tracked flows in turn vs one (tcp_established_many − tcp_established)", "tcp_established_many", "tcp_established"),
        ("floor_tx − floor_pass (MAC swap)", "floor_tx", "floor_pass"),
    ] {
        breakdown.row(vec![step.into(), format!("{:.1}", get(a) - get(b))]);
    }
    let json = json!({
        "method": "BPF_PROG_TEST_RUN, repeat=1 per run on a pristine 64-byte frame, kernel-reported durations summed; pinned CPU; warm-up; floors in the same sets",
        "cpu": opts.cpu,
        "sets": opts.sets,
        "runs_per_set": opts.runs,
        "warmup_runs": opts.warmup,
        "paths": json_paths,
    });
    Ok((vec![table, breakdown], vec![chart, cold_chart], targets, json))
}
