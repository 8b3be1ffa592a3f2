//! Part 4: the control plane. How long the agent takes to build a Maglev table
//! (`lb_common::maglev::build_table`), to write it into the kernel and swap it in
//! (`Maps::apply_service`), and, with a running agent, from a backend's failing probe to the
//! swapped ring (`lb stats --json`, `health.last_probe_to_swap_ms`).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lb_common::{
    maglev::{MaglevBackend, build_table},
    maps::{BackendState, PROTO_TCP, v4_addr},
};
use lb_userspace::dataplane::{Dataplane, Service, Sizing};
use serde_json::json;

use super::{
    report::{Bar, Chart, OURS, Report, Table},
    stats::Summary,
};
use crate::harness::service;

/// Slots of the rings measured (the default ring size).
pub const RING: u32 = 65_537;
/// Target for building the table of 1,000 backends (the Maglev paper's 1.8 ms, rounded).
pub const TARGET_BUILD_MS: f64 = 2.0;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Builds timed per pool size.
    pub builds: usize,
    /// Swaps timed per pool size.
    pub swaps: usize,
    /// CPU to pin to.
    pub cpu: usize,
    /// Also measure probe-to-swap with a running agent in a lab.
    pub agent: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { builds: 31, swaps: 10, cpu: super::cpus().saturating_sub(1), agent: true }
    }
}

fn backend_addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8))
}

fn maglev_pool(n: u32) -> Vec<MaglevBackend> {
    (1..=n).map(|i| MaglevBackend { id: i, addr: v4_addr([10, 1, (i >> 8) as u8, i as u8]), port: 8080, weight: 1 }).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs part 4 and adds its results to `report`.
pub fn run(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let o = opts.clone();
    let (builds, swaps) = std::thread::spawn(move || -> anyhow::Result<_> {
        super::pin_to_cpu(o.cpu)?;
        Ok((measure_builds(&o), measure_swaps(&o)?))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the control plane benchmark thread panicked"))??;

    let mut table = Table::new(
        &format!("4. Control plane ({RING}-slot rings, CPU {}, median ±half IQR)", opts.cpu),
        &["what", "backends", "ms", "min ms", "max ms", "runs", "note"],
    );
    let mut chart = Chart {
        title: "4. Maglev table build".into(),
        unit: "ms, 65,537 slots".into(),
        targets: vec![(TARGET_BUILD_MS, "target 2 ms for 1,000 backends".into())],
        ..Chart::default()
    };
    let mut json_builds = Vec::new();
    for (n, s) in &builds {
        table.row(vec!["Maglev table build (build_table)".into(), n.to_string(), s.show(3), format!("{:.3}", s.min), format!("{:.3}", s.max), s.n.to_string(), String::new()]);
        chart.bars.push(Bar { label: format!("{n} backends"), value: s.median, lo: s.p25, hi: s.p75, color: OURS });
        json_builds.push(json!({"backends": n, "ms": s.to_json()}));
    }
    let build_1000 = builds.iter().find(|(n, _)| *n == 1000).map(|(_, s)| s.median).unwrap_or(f64::NAN);
    let verdict = if build_1000 <= TARGET_BUILD_MS {
        format!("met ({:.2} ms to spare)", TARGET_BUILD_MS - build_1000)
    } else {
        format!("missed by {:.2} ms", build_1000 - TARGET_BUILD_MS)
    };
    report.target("4. Maglev build, 1,000 backends ≤ 2 ms", format!("{build_1000:.3} ms"), verdict);

    let mut json_swaps = Vec::new();
    for s in &swaps {
        table.row(vec![
            "first write of a VIP's ring (apply_service)".into(),
            s.backends.to_string(),
            format!("{:.1}", s.first_ms),
            String::new(),
            String::new(),
            "1".into(),
            format!("backend slots + {RING} ring slots (memory-mapped RING) + VIP entry"),
        ]);
        table.row(vec![
            "swap: a backend down, then up (apply_service)".into(),
            s.backends.to_string(),
            s.swap.show(2),
            format!("{:.2}", s.swap.min),
            format!("{:.2}", s.swap.max),
            s.swap.n.to_string(),
            format!("of which build {:.2} ms; {:.0} slots change", s.build.median, s.changed.median),
        ]);
        json_swaps.push(json!({
            "backends": s.backends,
            "first_write_ms": (s.first_ms * 1000.0).round() / 1000.0,
            "swap_ms": s.swap.to_json(),
            "build_ms_within_swap": s.build.to_json(),
            "changed_slots": s.changed.to_json(),
        }));
    }

    let mut json_probe = json!(null);
    if opts.agent {
        match probe_to_swap() {
            Ok((down, up)) => {
                table.row(vec!["probe to swapped ring (agent, backend killed)".into(), "2".into(), down.show(2), format!("{:.2}", down.min), format!("{:.2}", down.max), down.n.to_string(), "lb stats: health.last_probe_to_swap_ms".into()]);
                table.row(vec!["probe to swapped ring (agent, backend back)".into(), "2".into(), up.show(2), format!("{:.2}", up.min), format!("{:.2}", up.max), up.n.to_string(), "same, on recovery".into()]);
                json_probe = json!({"down_ms": down.to_json(), "up_ms": up.to_json()});
            }
            Err(e) => {
                table.note(format!("probe-to-swap not measured: {e:#}"));
                json_probe = json!({"skipped": format!("{e:#}")});
            }
        }
    } else {
        table.note("probe-to-swap not measured (--no-agent)");
    }
    table.note("a swap (Maps::apply_service) writes the backend slots (one syscall each), builds the ring, copies it into the spare half of the memory-mapped RING map, then replaces the VIP entry (one syscall), which flips the data path to the new ring");
    report.table(table);
    report.charts.push(chart);
    report.json.insert(
        "control".into(),
        json!({"ring_size": RING, "builds": json_builds, "swaps": json_swaps, "probe_to_swap": json_probe}),
    );
    Ok(())
}

fn measure_builds(o: &Options) -> Vec<(u32, Summary)> {
    [10u32, 100, 1000]
        .into_iter()
        .map(|n| {
            let pool = maglev_pool(n);
            for _ in 0..2 {
                std::hint::black_box(build_table(&pool, RING, 42));
            }
            let times: Vec<f64> = (0..o.builds)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(build_table(std::hint::black_box(&pool), RING, 42));
                    ms(t.elapsed())
                })
                .collect();
            (n, Summary::of(&times))
        })
        .collect()
}

struct Swaps {
    backends: u32,
    first_ms: f64,
    swap: Summary,
    build: Summary,
    changed: Summary,
}

fn measure_swaps(o: &Options) -> anyhow::Result<Vec<Swaps>> {
    let sizing = Sizing { hash_seed: 42, ..Sizing::default() };
    let mut dp = Dataplane::load(&sizing).context("loading the data path (needs root)")?;
    let mut out = Vec::new();
    let mut first_id = 1u32;
    for (vip_id, n) in [(1u32, 8u32), (2, 100), (3, 1000)] {
        // A port per VIP: a backend endpoint serves one VIP.
        let pool: Vec<(IpAddr, u16, u32)> = (1..=n).map(|i| (backend_addr(i), 8080 + vip_id as u16, 1)).collect();
        let vip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, vip_id as u8));
        let mut svc: Service = service(vip_id, vip, 80, PROTO_TCP, first_id, &pool);
        first_id += n;
        let t = Instant::now();
        dp.maps.apply_service(&svc)?;
        let first_ms = ms(t.elapsed());
        // One full write of the spare half too, so that every measured swap writes only
        // changed slots (as in a running agent).
        let victim = svc.backends[n as usize / 2].id;
        let mut ring = svc.ring(RING, 42);
        let (mut swaps, mut builds, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..o.swaps + 2 {
            let state = if k % 2 == 0 { BackendState::Down } else { BackendState::Up };
            svc.backend_mut(victim).expect("victim").backend.state = state as u8;
            let t = Instant::now();
            let new_ring = svc.ring(RING, 42);
            let build = ms(t.elapsed());
            let diff = ring.iter().zip(&new_ring).filter(|(a, b)| a != b).count();
            ring = new_ring;
            let t = Instant::now();
            dp.maps.apply_service(&svc)?;
            let total = ms(t.elapsed());
            if k >= 2 {
                swaps.push(total);
                builds.push(build);
                changed.push(diff as f64);
            }
        }
        out.push(Swaps { backends: n, first_ms, swap: Summary::of(&swaps), build: Summary::of(&builds), changed: Summary::of(&changed) });
    }
    Ok(out)
}

/// Probe-to-swap with the real agent: a lab with two backends, one killed and restarted three
/// times; after each flip, `lb stats --json` gives `health.last_probe_to_swap_ms`.
fn probe_to_swap() -> anyhow::Result<(Summary, Summary)> {
    use crate::{agent::Agent, topology::Lab};
    let lb = super::sibling_binary("lb").context("no `lb` binary next to lb-bench (cargo build --release --bins)")?;
    let backend = super::sibling_binary("lb-test-backend").context("no `lb-test-backend` binary next to lb-bench")?;
    let _ = lb;
    let mut lab = Lab::create(2, &backend)?;
    lab.start_backend(0)?;
    lab.start_backend(1)?;
    let yaml = format!(
        "global:\n  interfaces: [lbc, lbb1, lbb2]\n  xdp_mode: driver\n  hash_seed: 42\n  vip_capacity: 4\n  backend_capacity: 16\n  admin_socket: {{socket}}\nvips:\n  - name: web\n    address: 10.0.0.10\n    port: 80\n    protocol: tcp\n    health_check:\n      type: http\n      path: /health\n      interval: 200ms\n      fast_interval: 50ms\n      timeout: 100ms\n      rise: 2\n      fall: 2\n    backends:\n      - address: {}\n        port: 8080\n      - address: {}\n        port: 8080\n",
        lab.backends[0].v4, lab.backends[1].v4
    );
    let agent = Agent::start(&lab, &yaml)?;
    agent.wait_status(Duration::from_secs(15), |s| crate::agent::all_in_state(s, "web", "up"))?;
    let victim = lab.backends[1].v4.to_string();
    let field = |agent: &Agent, f: &str| -> String {
        agent
            .json(&["status"])
            .ok()
            .and_then(|s| {
                crate::agent::backends(&s, "web")
                    .into_iter()
                    .find(|b| b["address"].as_str() == Some(victim.as_str()))
                    .and_then(|b| b[f].as_str().map(str::to_owned))
            })
            .unwrap_or_default()
    };
    let last = |agent: &Agent| agent.json(&["stats"]).ok().and_then(|s| s["health"]["last_probe_to_swap_ms"].as_f64());
    let (mut down, mut up) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        lab.kill_backend(1);
        anyhow::ensure!(super::wait_until(Duration::from_secs(10), Duration::from_millis(10), || field(&agent, "health") == "down"), "the killed backend was not marked down within 10 s");
        down.extend(last(&agent));
        lab.start_backend(1)?;
        anyhow::ensure!(super::wait_until(Duration::from_secs(10), Duration::from_millis(10), || field(&agent, "state") == "up"), "the restarted backend did not come back within 10 s");
        up.extend(last(&agent));
    }
    anyhow::ensure!(!down.is_empty(), "the agent reported no health.last_probe_to_swap_ms");
    Ok((Summary::of(&down), Summary::of(&up)))
}
