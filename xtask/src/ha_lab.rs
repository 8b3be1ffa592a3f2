//! `cargo xtask lab --ha [--nodes N]`: no single point of failure across hosts, told with live
//! output on the HA lab (`tests/src/ha.rs`): a router with BIRD (ECMP, BFD), N load balancer
//! nodes each with its own agent, BIRD and keepalived, backends behind a VRRP gateway, a client
//! behind the router. Under load (long-lived connections and new connections, IPv4 and IPv6)
//! one node is killed, rejoins, is frozen, thawed, drained and brought back; each time the
//! router's convergence, the failed requests and the surviving connections are printed.
//! With `--dsr [--mode M]` the VIPs use direct server return (`HaLab::create_dsr`): the
//! backends answer through the router's port on their segment, and the story shows what the
//! VRRP gateway still carries.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::ha::{HaLab, Load, LoadReport, ROUTER_SEGMENT_IFACE, VIP4, VIP6};

fn step(n: u32, title: &str) {
    println!("\n\x1b[1m== {n}. {title}\x1b[0m");
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Long-lived connections per VIP.
const SESSIONS: usize = 30;

fn outcome(r: &LoadReport, t0: Instant, converged: Instant) -> String {
    let (during, failed_during) = r.fresh_between(t0, converged);
    let (after, failed_after) = r.fresh_between(converged, converged + Duration::from_secs(3600));
    format!(
        "long-lived {}/{} survived ({} answered by another backend); new connections: {failed_during}/{during} failed until convergence, {failed_after}/{after} after",
        r.sessions.len() - r.broken(),
        r.sessions.len(),
        r.moved()
    )
}

/// What the node holding the backends' gateway carried, and the router's port on the
/// backends' segment (DSR only).
struct GatewayCounters {
    holder: usize,
    /// Datagrams its kernel forwarded.
    forwarded: u64,
    /// Bytes received on its segment interface `bk`.
    bk_rx: u64,
    /// Bytes the router received on `rs` (DSR: the backends' replies).
    rs_rx: u64,
}

fn gateway_counters(lab: &HaLab) -> anyhow::Result<GatewayCounters> {
    let holder = lab.gateway_holder().context("no node holds the backends' gateway")?;
    let ns = &lab.nodes[holder - 1].ns;
    let rs_rx = if lab.dsr.is_some() { crate::dsr::iface_bytes(&lab.router_ns, ROUTER_SEGMENT_IFACE)?.rx } else { 0 };
    Ok(GatewayCounters { holder, forwarded: lab.kernel_forwarded(holder - 1)?, bk_rx: crate::dsr::iface_bytes(ns, "bk")?.rx, rs_rx })
}

impl GatewayCounters {
    fn since(&self, before: &GatewayCounters) -> GatewayCounters {
        GatewayCounters {
            holder: self.holder,
            forwarded: self.forwarded.saturating_sub(before.forwarded),
            bk_rx: self.bk_rx.saturating_sub(before.bk_rx),
            rs_rx: self.rs_rx.saturating_sub(before.rs_rx),
        }
    }

    fn describe(&self, dsr: bool) -> String {
        let holder = format!("gateway holder n{}: received {} bytes on bk, its kernel forwarded {} datagrams", self.holder, self.bk_rx, self.forwarded);
        if dsr {
            format!("{holder} (no reply: health-check answers, VRRP adverts); the router received {} bytes of replies straight from the backends", self.rs_rx)
        } else {
            format!("{holder} (the replies, translated by its data path)")
        }
    }
}

fn hops(lab: &HaLab) -> String {
    format!("router next hops: {} → {:?}, {} → {:?}", VIP4, lab.router_next_hops(VIP4.into()), VIP6, lab.router_next_hops(VIP6.into()))
}

/// Runs the story with `nodes` nodes, in NAT mode or, with `dsr`, in that direct server return
/// mode; the victim is the last node.
pub fn run(root: &Path, nodes: usize, dsr: Option<&str>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    let interrupted = || stop.load(Ordering::SeqCst);
    let mut summary: Vec<(String, String)> = Vec::new();

    let backend_bin = root.join("target/debug/lb-test-backend");
    let started = Instant::now();
    let mut lab = match dsr {
        None => {
            step(1, &format!("The set-up: a router (BIRD, ECMP, BFD), {nodes} load balancer nodes, 3 backends behind a VRRP gateway"));
            HaLab::create(nodes, 3, &backend_bin)?
        }
        Some(mode) => {
            step(1, &format!("The set-up in direct server return ({mode} mode): a router (BIRD, ECMP, BFD), {nodes} load balancer nodes, 3 backends answering through the router"));
            summary.push(("forwarding mode".into(), format!("{mode} (direct server return)")));
            HaLab::create_dsr(nodes, 3, &backend_bin, mode)?
        }
    };
    println!("   ready in {}: every node announces {VIP4} and {VIP6}; {}", ms(started.elapsed()), hops(&lab));
    println!("   backends' gateway held by node n{}", lab.gateway_holder().unwrap_or(0));
    let victim = nodes - 1;
    let name = lab.nodes[victim].name.clone();

    step(2, "Both families' traffic spreads over every node");
    let before: Vec<u64> = (0..nodes).map(|i| lab.forwarded(i).unwrap_or(0)).collect();
    let load = Load::start(&lab, SESSIONS, Duration::from_millis(100), 1)?;
    let gateway = gateway_counters(&lab)?;
    thread::sleep(Duration::from_secs(2));
    let gateway = gateway_counters(&lab)?.since(&gateway);
    let after: Vec<u64> = (0..nodes).map(|i| lab.forwarded(i).unwrap_or(0)).collect();
    let r = load.finish();
    for i in 0..nodes {
        println!("   n{}: {} long-lived connections, {} packets forwarded to backends in 2 s", i + 1, r.on_node(i + 1), after[i] - before[i]);
    }
    summary.push(("spread".into(), (1..=nodes).map(|k| format!("n{k}: {}", r.on_node(k))).collect::<Vec<_>>().join(", ")));
    let line = gateway.describe(lab.dsr.is_some());
    println!("   {line}");
    summary.push(("gateway (2 s)".into(), line));

    let phases: [(&str, u32); 3] = [("killed (kill -9 of agent, BIRD, keepalived; backend link down)", 3), ("frozen (SIGSTOP of BIRD and agent)", 5), ("drained (BIRD stopped cleanly)", 7)];
    for (what, n) in phases {
        if interrupted() {
            break;
        }
        step(n, &format!("Node {name} is {what}"));
        let load = Load::start(&lab, SESSIONS, Duration::from_millis(100), 1)?;
        thread::sleep(Duration::from_secs(1));
        let t0 = match n {
            3 => lab.crash(victim),
            5 => lab.freeze(victim),
            _ => lab.drain(victim),
        };
        let fib = lab.monitor().wait_both(t0, Duration::from_secs(10));
        println!("   {}", hops(&lab));
        thread::sleep(Duration::from_secs(2));
        let r = load.finish();
        let fib = fib.context("the router's FIB did not change within 10 s")?;
        let line = format!("router FIB changed {} after; {}", ms(fib), outcome(&r, t0, t0 + fib));
        println!("   {line}");
        summary.push((format!("{name} {}", what.split(' ').next().unwrap_or(what)), line));

        step(n + 1, &format!("Node {name} rejoins"));
        let load = Load::start(&lab, SESSIONS, Duration::from_millis(100), 1)?;
        thread::sleep(Duration::from_secs(1));
        let t1 = lab.rejoin(victim)?;
        lab.wait_ready(Duration::from_secs(30))?;
        let back = lab.monitor().wait_both(t1, Duration::from_secs(1)).unwrap_or_default();
        lab.wait_stable(Duration::from_secs(3), Duration::from_secs(30))?;
        let settled = t1.elapsed();
        let r = load.finish();
        println!("   {}", hops(&lab));
        let line = format!(
            "back in the router's FIB {} after; settled {}; {}",
            ms(back),
            ms(settled.saturating_sub(Duration::from_secs(3))),
            outcome(&r, t1, t1 + back)
        );
        println!("   {line}");
        summary.push((format!("{name} rejoins"), line));
    }

    println!("\n\x1b[1m== Summary\x1b[0m");
    for (k, v) in &summary {
        println!("   {k:<18} {v}");
    }
    println!("\nCleaning up (daemons, pinned data paths, namespaces).");
    drop(lab);
    Ok(())
}
