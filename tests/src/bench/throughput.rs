//! Part 2: packets per second through the lab.
//!
//! Where the kernel's pktgen exists ([`run_pktgen`]), it drives flows at a VIP the way the
//! kernel's `samples/pktgen` scripts do. Where it does not (these machines), a built-in
//! generator does the same job ([`run`]): the `gen_frames` program of `lb-ebpf/src/bin/floors.rs`
//! run with BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES) in the client's
//! namespace sends 64-byte UDP frames of many flows out of the client's veth `c0`, so they
//! arrive on the load balancer's `lbc` as from a NIC. The load balancer (XDP, driver mode, on
//! `lbc`) rewrites them and redirects them to the backends' veths, where `rx_count` (XDP)
//! counts and drops them. The same run measures a bare forwarder (`floor_redirect`: only
//! `bpf_redirect` to `lbb1`) in the load balancer's place: the ceiling of this set-up.
//!
//! With one generator thread everything (generator, load balancer, receiver) runs on that
//! thread's CPU: veth hands frames on in softirq context on the sending CPU. With two threads
//! on two CPUs, the veths' two queues spread the work.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{
    counters::Reason,
    maps::{Backend, BackendState, NextHop, PROTO_UDP, VipKey, v4_addr, FAMILY_V4},
};
use lb_userspace::dataplane::{Dataplane, FLOORS, Service, ServiceBackend, Sizing};
use serde_json::json;

use super::{
    report::{Bar, Chart, OURS, REFERENCE, Report, Table},
    stats::Summary,
};
use crate::{
    packet::{Frame, L4, Mac},
    topology::{Lab, in_ns},
};

/// The VIP the generated flows are for (UDP, the discard port).
const VIP: [u8; 4] = [10, 0, 0, 10];
const VIP_PORT: u16 = 9;
/// First UDP source port of the generated flows.
const SPORT_BASE: u32 = 10_000;
/// Frames per BPF_PROG_TEST_RUN call of the generator.
const FRAMES_PER_CALL: u32 = 100_000;

/// Target: the load balancer forwards at least this share of the bare forwarder's rate.
pub const TARGET_SHARE: f64 = 0.90;
/// Target: two cores forward at least this many times one core's rate.
pub const TARGET_SCALING: f64 = 1.8;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seconds per measurement.
    pub seconds: f64,
    /// Measurements per configuration (forwarder × cores), interleaved.
    pub repeats: usize,
    /// Flows (UDP source ports, a power of two).
    pub flows: u32,
    /// Live-frames batch size.
    pub batch: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options { seconds: 3.0, repeats: 3, flows: 1024, batch: 64 }
    }
}

/// Arguments of the kernel-pktgen variant.
#[derive(Clone, Debug, Default)]
pub struct Pktgen {
    /// Interface pktgen sends from (towards the load balancer).
    pub dev: String,
    /// VIP, optionally with `:PORT` (default 9).
    pub dst: String,
    /// Next hop's MAC (the load balancer's NIC); default: from the neighbour table.
    pub dst_mac: String,
    /// Packets per thread (0: run for `seconds`).
    pub count: u64,
    /// Flows (UDP source ports); default 1024.
    pub flows: u32,
    /// pktgen threads (one per CPU); default 1.
    pub threads: usize,
    /// Seconds to run when `count` is 0.
    pub seconds: f64,
}

/// Which program forwards on `lbc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarder {
    Bare,
    Lb,
}

impl Forwarder {
    fn name(self) -> &'static str {
        match self {
            Forwarder::Bare => "bare forwarder (bpf_redirect only)",
            Forwarder::Lb => "load balancer (lb_xdp)",
        }
    }
}

/// Joins this thread to network namespace `ns`.
fn enter_ns(ns: &str) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a scoped thread inside `ns`.
fn within<T: Send>(ns: &str, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_ns(ns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    })
}

fn read_trim(ns: &str, path: &str) -> anyhow::Result<String> {
    let out = in_ns(ns, &["cat", path]).output().with_context(|| format!("reading {path} in {ns}"))?;
    ensure!(out.status.success(), "reading {path} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn mac_of(ns: &str, dev: &str) -> anyhow::Result<Mac> {
    let s = read_trim(ns, &format!("/sys/class/net/{dev}/address"))?;
    let v: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>().with_context(|| format!("MAC {s:?}"))?;
    v.try_into().map_err(|_| anyhow::anyhow!("MAC {s:?}"))
}

fn ifindex_of(ns: &str, dev: &str) -> anyhow::Result<u32> {
    read_trim(ns, &format!("/sys/class/net/{dev}/ifindex"))?.parse().context("ifindex")
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    Ok(ebpf.program_mut(name).with_context(|| format!("no program {name}"))?.try_into()?)
}

/// The lab, the load balancer and the benchmark programs.
struct Rig {
    lab: Lab,
    dp: Dataplane,
    floors: Ebpf,
    c0_ifindex: u32,
    frame: Vec<u8>,
    attached: Option<(Forwarder, XdpLinkId)>,
}

impl Rig {
    fn build(opts: &Options) -> anyhow::Result<Rig> {
        let backend_bin = super::sibling_binary("lb-test-backend").unwrap_or_else(|| "/bin/true".into());
        let lab = Lab::create(2, &backend_bin)?;
        let lb_ns = lab.lb_ns.clone();
        let lbc_mac = mac_of(&lb_ns, "lbc")?;
        let c0_mac = mac_of(&lab.client_ns, "c0")?;
        let c0_ifindex = ifindex_of(&lab.client_ns, "c0")?;
        let lbb1 = ifindex_of(&lb_ns, &lab.backends[0].lb_iface)?;

        // The load balancer: one UDP VIP, the lab's two backends, next hops resolved.
        let mut backends = Vec::new();
        for (k, b) in lab.backends.iter().enumerate() {
            backends.push(ServiceBackend {
                id: k as u32 + 1,
                weight: 1,
                backend: Backend {
                    addr: v4_addr(b.v4.octets()),
                    port: VIP_PORT,
                    family: FAMILY_V4,
                    state: BackendState::Up as u8,
                    generation: 1,
                    hop: NextHop {
                        ifindex: ifindex_of(&lb_ns, &b.lb_iface)?,
                        dst_mac: mac_of(&b.ns, "eth0")?,
                        src_mac: mac_of(&lb_ns, &b.lb_iface)?,
                    },
                    ..Backend::default()
                },
            });
        }
        let svc = Service {
            key: VipKey { addr: v4_addr(VIP), port: VIP_PORT, proto: PROTO_UDP, family: FAMILY_V4 },
            id: 1,
            flags: 0,
            udp_idle_secs: lb_common::limits::DEFAULT_UDP_IDLE_SECS,
            backends,
        };
        let sizing = Sizing { vip_capacity: 4, backend_capacity: 16, hash_seed: 42, ..Sizing::default() };
        let mut dp = Dataplane::load(&sizing).context("loading the data path")?;
        dp.maps.apply_service(&svc)?;
        // The interfaces the program may send through, registered from inside their namespace.
        let ports: Vec<u32> = lab.lb_interfaces().iter().map(|i| ifindex_of(&lb_ns, i)).collect::<anyhow::Result<_>>()?;
        within(&lb_ns, || ports.iter().try_for_each(|&i| dp.maps.add_port(i)))?;

        let flow_mask = opts.flows.next_power_of_two().max(1) - 1;
        let mut floors = EbpfLoader::new()
            .override_global("FLOOR_IFINDEX", &lbb1, true)
            .override_global("GEN_FLOW_MASK", &flow_mask, true)
            .override_global("GEN_SPORT_BASE", &SPORT_BASE, true)
            .load(FLOORS)
            .context("loading the benchmark programs")?;
        for name in ["floor_redirect", "gen_frames", "rx_count"] {
            xdp(&mut floors, name)?.load().with_context(|| format!("loading {name}"))?;
        }
        // The template: 64 bytes, UDP without checksum (so that the generator may change the
        // source port without fixing a checksum), IPv4 header checksum correct.
        let frame = Frame {
            dst_mac: lbc_mac,
            src_mac: c0_mac,
            vlan: None,
            src: std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 2)),
            dst: std::net::IpAddr::V4(VIP.into()),
            l4: L4::Udp { sport: SPORT_BASE as u16, dport: VIP_PORT, no_checksum: true },
            payload: vec![0x5a; 22],
        }
        .bytes();
        ensure!(frame.len() == 64, "template frame of {} bytes", frame.len());
        let mut words = [0u64; 8];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u64::from_le_bytes(frame[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        let mut template: Array<_, [u64; 8]> = Array::try_from(floors.map_mut("GEN_TEMPLATE").context("GEN_TEMPLATE")?)?;
        template.set(0, words, 0)?;

        // Receivers on the backends' side: they give the veths NAPI and count.
        for b in &lab.backends {
            let ns = b.ns.clone();
            let prog = xdp(&mut floors, "rx_count")?;
            within(&ns, || {
                // The program keeps the link until the program (the rig) is dropped.
                prog.attach("eth0", XdpMode::Driver).context("attaching rx_count")?;
                Ok(())
            })?;
        }
        Ok(Rig { lab, dp, floors, c0_ifindex, frame, attached: None })
    }

    fn attach(&mut self, fwd: Forwarder) -> anyhow::Result<()> {
        if self.attached.as_ref().map(|(f, _)| *f) == Some(fwd) {
            return Ok(());
        }
        self.detach()?;
        let ns = self.lab.lb_ns.clone();
        let prog: &mut Xdp = match fwd {
            Forwarder::Lb => self.dp.program_mut(),
            Forwarder::Bare => xdp(&mut self.floors, "floor_redirect")?,
        };
        let id = within(&ns, || prog.attach("lbc", XdpMode::Driver).with_context(|| format!("attaching the {}", fwd.name())))?;
        self.attached = Some((fwd, id));
        Ok(())
    }

    fn detach(&mut self) -> anyhow::Result<()> {
        if let Some((fwd, id)) = self.attached.take() {
            let ns = self.lab.lb_ns.clone();
            let prog: &mut Xdp = match fwd {
                Forwarder::Lb => self.dp.program_mut(),
                Forwarder::Bare => xdp(&mut self.floors, "floor_redirect")?,
            };
            within(&ns, || Ok(prog.detach(id)?))?;
        }
        Ok(())
    }

    fn received(&self) -> anyhow::Result<u64> {
        let rx: PerCpuArray<_, u64> = PerCpuArray::try_from(self.floors.map("RX_COUNT").context("RX_COUNT")?)?;
        Ok(rx.get(&0, 0)?.iter().sum())
    }

    fn forwarded(&self) -> anyhow::Result<u64> {
        Ok(self.dp.maps.reasons()?[Reason::ForwardToBackend as usize])
    }

    /// Runs the generator on `cores` threads (thread k pinned to CPU k) for `seconds`; frames
    /// sent.
    fn generate(&self, cores: usize, seconds: f64, batch: u32) -> anyhow::Result<u64> {
        let prog: &Xdp = self.floors.program("gen_frames").and_then(|p| p.try_into().ok()).context("gen_frames")?;
        let ns = self.lab.client_ns.clone();
        let barrier = Arc::new(Barrier::new(cores));
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(self.frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.c0_ifindex.to_ne_bytes());
        let frame = &self.frame;
        let n_cpus = super::cpus();
        // Thread 0 on the last CPU (as part 1), thread 1 on the one before; LB_BENCH_GEN_CPU
        // moves thread 0 (profiling, checking one CPU against another).
        let first_cpu = std::env::var("LB_BENCH_GEN_CPU").ok().and_then(|v| v.parse().ok()).unwrap_or(n_cpus - 1) % n_cpus;
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..cores)
                .map(|cpu| {
                    let (ns, barrier, ctx) = (ns.clone(), barrier.clone(), ctx);
                    s.spawn(move || -> anyhow::Result<u64> {
                        enter_ns(&ns)?;
                        super::pin_to_cpu((first_cpu + n_cpus - cpu % n_cpus) % n_cpus)?;
                        barrier.wait();
                        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                        let mut sent = 0u64;
                        // Bounded in time and in calls.
                        for _ in 0..100_000 {
                            if Instant::now() >= deadline {
                                break;
                            }
                            prog.test_run(TestRunOptions {
                                data_in: Some(frame),
                                ctx_in: Some(&ctx),
                                repeat: FRAMES_PER_CALL,
                                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                                ..TestRunOptions::default()
                            })
                            .context("BPF_PROG_TEST_RUN in live-frames mode")?;
                            sent += FRAMES_PER_CALL as u64;
                        }
                        Ok(sent)
                    })
                })
                .collect();
            let mut total = 0;
            for h in handles {
                total += h.join().map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
            }
            Ok(total)
        })
    }

    /// One measurement: Mpps sent, forwarded by the load balancer (its counter) and received.
    fn measure(&mut self, fwd: Forwarder, cores: usize, opts: &Options) -> anyhow::Result<Sample> {
        self.attach(fwd)?;
        self.generate(cores, 0.3, opts.batch)?;
        let (f0, r0) = (self.forwarded()?, self.received()?);
        let t = Instant::now();
        let sent = self.generate(cores, opts.seconds, opts.batch)?;
        let secs = t.elapsed().as_secs_f64();
        let (f1, r1) = (self.forwarded()?, self.received()?);
        Ok(Sample {
            sent: sent as f64 / secs / 1e6,
            forwarded: (f1 - f0) as f64 / secs / 1e6,
            received: (r1 - r0) as f64 / secs / 1e6,
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    sent: f64,
    forwarded: f64,
    received: f64,
}

/// Runs part 2 with the built-in live-frames generator.
pub fn run(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let mut rig = Rig::build(opts)?;
    // Check once that the path works before measuring: frames reach the backends through the
    // load balancer and through the bare forwarder.
    for fwd in [Forwarder::Lb, Forwarder::Bare] {
        rig.attach(fwd)?;
        let r0 = rig.received()?;
        rig.generate(1, 0.2, opts.batch)?;
        let got = rig.received()? - r0;
        ensure!(got > 0, "no frame reached the backends through the {}", fwd.name());
    }
    let cores_list: Vec<usize> = if super::cpus() >= 2 { vec![1, 2] } else { vec![1] };
    let mut samples: Vec<(Forwarder, usize, Sample)> = Vec::new();
    for _ in 0..opts.repeats.max(1) {
        for &cores in &cores_list {
            for fwd in [Forwarder::Bare, Forwarder::Lb] {
                samples.push((fwd, cores, rig.measure(fwd, cores, opts)?));
            }
        }
    }
    rig.detach()?;
    drop(rig);

    let pick = |fwd: Forwarder, cores: usize, f: fn(&Sample) -> f64| -> Summary {
        Summary::of(&samples.iter().filter(|(a, c, _)| *a == fwd && *c == cores).map(|(_, _, s)| f(s)).collect::<Vec<_>>())
    };
    let mut table = Table::new(
        &format!(
            "2. Packets per second through the lab (live-frames generator, 64-byte UDP frames, {} flows, {} × {:.0} s per point, median ±half IQR)",
            opts.flows, opts.repeats, opts.seconds
        ),
        &["forwarder on lbc", "cores", "generated Mpps", "LB forwarded Mpps", "received Mpps", "share of bare", "vs 1 core"],
    );
    let mut chart = Chart {
        title: "2. Mpps received on the backends' side".into(),
        unit: "Mpps, 64-byte frames".into(),
        ..Chart::default()
    };
    let mut json_points = Vec::new();
    let bare1 = pick(Forwarder::Bare, 1, |s| s.received).median;
    let lb1 = pick(Forwarder::Lb, 1, |s| s.received).median;
    for &cores in &cores_list {
        let bare = pick(Forwarder::Bare, cores, |s| s.received).median;
        for fwd in [Forwarder::Bare, Forwarder::Lb] {
            let sent = pick(fwd, cores, |s| s.sent);
            let fwded = pick(fwd, cores, |s| s.forwarded);
            let rx = pick(fwd, cores, |s| s.received);
            let base1 = if fwd == Forwarder::Bare { bare1 } else { lb1 };
            table.row(vec![
                fwd.name().into(),
                cores.to_string(),
                sent.show(2),
                if fwd == Forwarder::Lb { fwded.show(2) } else { "-".into() },
                rx.show(2),
                format!("{:.1} %", 100.0 * rx.median / bare),
                format!("{:.2} ×", rx.median / base1),
            ]);
            chart.bars.push(Bar {
                label: format!("{}, {cores} core{}", if fwd == Forwarder::Lb { "lb_xdp" } else { "bare redirect" }, if cores > 1 { "s" } else { "" }),
                value: rx.median,
                lo: rx.p25,
                hi: rx.p75,
                color: if fwd == Forwarder::Lb { OURS } else { REFERENCE },
            });
            json_points.push(json!({
                "forwarder": if fwd == Forwarder::Lb { "lb" } else { "bare" },
                "cores": cores,
                "generated_mpps": sent.to_json(),
                "lb_forwarded_mpps": if fwd == Forwarder::Lb { fwded.to_json() } else { serde_json::Value::Null },
                "received_mpps": rx.to_json(),
            }));
        }
    }
    let mut share_verdicts = Vec::new();
    for &cores in &cores_list {
        let share = pick(Forwarder::Lb, cores, |s| s.received).median / pick(Forwarder::Bare, cores, |s| s.received).median;
        let verdict = if share >= TARGET_SHARE {
            "met".to_string()
        } else {
            format!("missed by {:.1} points", 100.0 * (TARGET_SHARE - share))
        };
        report.target(&format!("2. ≥ 90 % of the bare forwarder, {cores} core{}", if cores > 1 { "s" } else { "" }), format!("{:.1} %", 100.0 * share), verdict.clone());
        share_verdicts.push(json!({"cores": cores, "share": share, "verdict": verdict}));
    }
    let mut scaling_json = serde_json::Value::Null;
    if cores_list.len() > 1 {
        let scaling = pick(Forwarder::Lb, 2, |s| s.received).median / lb1;
        let bare_scaling = pick(Forwarder::Bare, 2, |s| s.received).median / bare1;
        let verdict = if scaling >= TARGET_SCALING { "met".to_string() } else { format!("missed by {:.2} (bare forwarder: {:.2} ×)", TARGET_SCALING - scaling, bare_scaling) };
        report.target("2. 2 cores ≥ 1.8 × one core", format!("{scaling:.2} ×"), verdict);
        scaling_json = json!({"lb": scaling, "bare": bare_scaling});
    }
    table.note("one generator thread per core, pinned; with one thread the generator, the forwarder and the receiver share that CPU (veth hands frames on in softirq on the sending CPU), so the absolute rates are the whole lab's, and the ratio to the bare forwarder measured in the same run is the figure that tells the load balancer's cost");
    table.note("\"LB forwarded\" is the load balancer's own forward_to_backend counter; \"received\" is counted by an XDP program on the backends' veths");
    for &cores in &cores_list {
        let bare = pick(Forwarder::Bare, cores, |s| s.received).median;
        let lb = pick(Forwarder::Lb, cores, |s| s.received).median;
        table.note(format!(
            "{cores} core{}: the load balancer costs {:.0} ns of CPU per packet more than the bare forwarder (1,000 × cores / Mpps, lb − bare), compare part 1's UDP established path over its floor",
            if cores > 1 { "s" } else { "" },
            1000.0 * cores as f64 / lb - 1000.0 * cores as f64 / bare
        ));
    }
    table.note(format!("kernel pktgen: {}", pktgen_status()));
    report.table(table);
    report.charts.push(chart);
    report.json.insert(
        "throughput".into(),
        json!({
            "generator": "BPF_PROG_TEST_RUN live frames (gen_frames), 64-byte UDP, checksum 0",
            "flows": opts.flows,
            "seconds": opts.seconds,
            "repeats": opts.repeats,
            "batch": opts.batch,
            "points": json_points,
            "share_of_bare": share_verdicts,
            "scaling_2_over_1": scaling_json,
        }),
    );
    Ok(())
}

/// Whether the kernel's pktgen is there.
fn pktgen_status() -> String {
    if std::path::Path::new("/proc/net/pktgen/pgctrl").exists() {
        "present (/proc/net/pktgen): `cargo xtask bench pktgen --dev IFACE --dst VIP` drives it".into()
    } else {
        "absent on this machine (no /proc/net/pktgen, `modprobe pktgen` fails): the built-in live-frames generator stands in".into()
    }
}

fn pg_write(path: &str, cmd: &str) -> anyhow::Result<()> {
    std::fs::write(path, format!("{cmd}\n")).with_context(|| format!("writing {cmd:?} to {path}"))
}

/// The kernel-pktgen variant: drives flows at a VIP through /proc/net/pktgen, as the kernel's
/// samples/pktgen scripts do (many UDP source ports, 64-byte frames, bursts, one thread per
/// CPU), and reports the rate pktgen sent. Falls back to the built-in generator where pktgen is
/// absent.
pub fn run_pktgen(p: &Pktgen, opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    if !std::path::Path::new("/proc/net/pktgen/pgctrl").exists() {
        let _ = std::process::Command::new("modprobe").arg("pktgen").status();
    }
    if !std::path::Path::new("/proc/net/pktgen/pgctrl").exists() {
        println!("kernel pktgen is absent on this machine (/proc/net/pktgen does not exist and `modprobe pktgen` failed):");
        println!("falling back to the built-in live-frames generator through the lab (part 2).");
        return run(opts, report);
    }
    ensure!(!p.dev.is_empty() && !p.dst.is_empty(), "pktgen needs --dev IFACE and --dst VIP[:PORT]");
    let (vip, port) = match p.dst.rsplit_once(':') {
        Some((a, b)) if !a.contains(':') || a.starts_with('[') => (a.trim_matches(['[', ']']).to_owned(), b.parse::<u16>().context("--dst port")?),
        _ => (p.dst.clone(), VIP_PORT),
    };
    let dst_mac = if p.dst_mac.is_empty() {
        let out = std::process::Command::new("ip").args(["neigh", "show", "dev", &p.dev]).output()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).map(str::to_owned))
            .context("no neighbour MAC on --dev: give --dst-mac (the load balancer's NIC)")?
    } else {
        p.dst_mac.clone()
    };
    let threads = p.threads.max(1).min(super::cpus());
    let flows = if p.flows == 0 { 1024 } else { p.flows };
    let count = p.count;
    pg_write("/proc/net/pktgen/pgctrl", "reset")?;
    for t in 0..threads {
        let thread = format!("/proc/net/pktgen/kpktgend_{t}");
        let dev = format!("{}@{t}", p.dev);
        pg_write(&thread, "rem_device_all")?;
        pg_write(&thread, &format!("add_device {dev}"))?;
        let d = format!("/proc/net/pktgen/{dev}");
        for cmd in [
            format!("count {count}"),
            "clone_skb 0".into(),
            "pkt_size 60".into(),
            "delay 0".into(),
            "burst 32".into(),
            "flag NO_TIMESTAMP".into(),
            "flag QUEUE_MAP_CPU".into(),
            format!("dst_mac {dst_mac}"),
            if vip.contains(':') { format!("dst6 {vip}") } else { format!("dst_min {vip}") },
            if vip.contains(':') { String::new() } else { format!("dst_max {vip}") },
            format!("udp_dst_min {port}"),
            format!("udp_dst_max {port}"),
            format!("udp_src_min {}", SPORT_BASE),
            format!("udp_src_max {}", SPORT_BASE + flows - 1),
            "flag UDPSRC_RND".into(),
        ] {
            if !cmd.is_empty() {
                pg_write(&d, &cmd)?;
            }
        }
    }
    println!("pktgen: {threads} thread(s) on {} → {vip}:{port} via {dst_mac}, {flows} flows", p.dev);
    let mut child = std::process::Command::new("sh").args(["-c", "echo start > /proc/net/pktgen/pgctrl"]).spawn()?;
    let started = Instant::now();
    let limit = if count == 0 { Duration::from_secs_f64(p.seconds.max(1.0)) } else { Duration::from_secs(600) };
    while started.elapsed() < limit && child.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if child.try_wait()?.is_none() {
        let _ = pg_write("/proc/net/pktgen/pgctrl", "stop");
        let _ = child.wait();
    }
    let mut table = Table::new("2. kernel pktgen", &["thread", "result"]);
    let mut total_pps = 0.0;
    for t in 0..threads {
        let text = std::fs::read_to_string(format!("/proc/net/pktgen/{}@{t}", p.dev)).unwrap_or_default();
        let result = text.lines().skip_while(|l| !l.starts_with("Result")).take(2).collect::<Vec<_>>().join(" ");
        if let Some(pps) = result.split_whitespace().find_map(|w| w.strip_suffix("pps")).and_then(|v| v.parse::<f64>().ok()) {
            total_pps += pps;
        }
        table.row(vec![t.to_string(), result]);
    }
    table.note(format!("sent {:.2} Mpps in all; read the load balancer's forwarded rate on its host from the forward_to_backend entry of `lb stats --json` or lb_packets_total{{reason=\"forward_to_backend\"}}, before and after", total_pps / 1e6));
    report.table(table);
    report.json.insert("pktgen".into(), json!({"dev": p.dev, "dst": p.dst, "threads": threads, "flows": flows, "sent_mpps": total_pps / 1e6}));
    Ok(())
}
