//! `cargo xtask lab --dsr`: the lab's set-up in direct server return, and the last step of its
//! story, which shows from counters on both sides that the replies of a 10 MiB download
//! bypassed the load balancer, and writes the figures to `lab/results/dsr-<mode>.json`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    agent::{Agent, backends},
    download::download,
    dsr::{BYPASS_BOUND, DOWNLOAD_BYTES, IfaceBytes, Snapshot},
    topology::Lab,
};

/// The DSR modes, the first the default.
pub const MODES: [&str; 3] = ["tunnel", "gue", "direct"];
/// The lab's DSR configuration shipped in the repository (its VIP in `tunnel` mode).
pub const CONFIG: &str = "examples/lab-dsr.yaml";
/// The VIP's address, which `lb backend-setup` puts on every backend's loopback.
const VIP: &str = "10.0.0.10";
/// The VIP's port, which the backends serve.
pub const PORT: u16 = 80;
/// Where the figures are written.
const RESULTS: &str = "lab/results";
/// Longest the download may take.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(60);

/// The DSR lab with its three backends set up for `mode` and serving, and the agent running
/// the shipped configuration in `mode`.
pub fn set_up(root: &Path, mode: &str, backend_bin: &Path, shipped_socket: &str) -> anyhow::Result<(Lab, Agent)> {
    let yaml = std::fs::read_to_string(root.join(CONFIG)).with_context(|| format!("reading {CONFIG}"))?;
    let mut lab = Lab::create_dsr(3, backend_bin, PORT)?;
    for k in 0..3 {
        let out = lab.backend_setup(k, mode, &[VIP])?;
        let b = &lab.backends[k];
        println!("   {}: lb backend-setup --mode {mode} --vip {VIP} --interface {}", b.name, b.iface);
        for line in out.lines().filter(|l| l.starts_with("  ")) {
            println!("     {}", line.trim());
        }
        lab.start_backend(k)?;
    }
    let router = lab.router_ns.clone().unwrap_or_default();
    println!("   client {} → router {router} → load balancer {} ({mode} mode, XDP on {}) → backends {}",
        lab.client_ns, lab.lb_ns, lab.lb_interfaces().join(", "),
        lab.backends.iter().map(|b| format!("{} {}", b.name, b.v4)).collect::<Vec<_>>().join(", "));
    println!("   every backend answers clients from {VIP} through the router (rb1..rb3), not through the load balancer");
    let yaml = yaml.replace("forwarding: tunnel", &format!("forwarding: {mode}")).replace(shipped_socket, "{socket}");
    let agent = Agent::start(&lab, &yaml)?;
    println!("   agent started with {CONFIG} in {mode} mode; waiting for the health checks to pass");
    Ok((lab, agent))
}

/// The agent's byte counters: the web VIP's, and each backend's by address.
fn agent_bytes(agent: &Agent) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    let status = agent.json(&["status"])?;
    let vip = status["vips"].as_array().into_iter().flatten().find(|v| v["name"] == "web").context("no VIP web in the status")?;
    let per_backend = backends(&status, "web")
        .iter()
        .map(|b| (b["address"].as_str().unwrap_or("?").to_owned(), b["traffic"]["bytes"].as_u64().unwrap_or(0)))
        .collect();
    Ok((vip["traffic"]["bytes"].as_u64().unwrap_or(0), per_backend))
}

/// The commit the lab ran from, `-dirty` if the tree has changes.
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| Command::new("git").args(args).current_dir(root).output().ok().filter(|o| o.status.success());
    let head = git(&["rev-parse", "--short", "HEAD"]).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// Downloads 10 MiB through the VIP and shows, from the agent's counters, the load balancer's
/// interfaces and the client's and router's, that its replies bypassed the load balancer;
/// writes the figures to `lab/results/dsr-<mode>.json`. Fails if they did not.
pub fn prove_bypass(root: &Path, lab: &Lab, agent: &Agent, mode: &str) -> anyhow::Result<(Vec<(String, String)>, PathBuf)> {
    let router = lab.router_ns.clone().context("the DSR lab has a router")?;
    let mut ifaces: Vec<(String, String)> = lab.lb_interfaces().into_iter().map(|i| (lab.lb_ns.clone(), i)).collect();
    ifaces.extend((1..=lab.backends.len()).map(|k| (router.clone(), format!("rb{k}"))));
    ifaces.push((lab.client_ns.clone(), "c0".to_owned()));
    let before = Snapshot::take(&ifaces)?;
    let (vip_before, backends_before) = agent_bytes(agent)?;
    let vip = std::net::SocketAddr::new(VIP.parse()?, PORT);
    let got = download(&lab.client_ns, vip, DOWNLOAD_BYTES, 0, DOWNLOAD_LIMIT)?;
    let deltas = Snapshot::take(&ifaces)?.since(&before);
    let (vip_after, backends_after) = agent_bytes(agent)?;
    if !got.complete(DOWNLOAD_BYTES) {
        bail!("the download through {vip} did not complete: {got:?}");
    }
    let of = |name: &str| deltas.iter().find(|(i, _)| i == name).map(|(_, b)| *b).unwrap_or_default();
    let sum = |prefix: &str, f: fn(&IfaceBytes) -> u64| deltas.iter().filter(|(i, _)| i.starts_with(prefix)).map(|(_, b)| f(b)).sum::<u64>();
    let forwarded = vip_after.saturating_sub(vip_before);
    let served_by: Vec<(String, u64)> = backends_after
        .iter()
        .zip(&backends_before)
        .map(|((a, now), (_, then))| (a.clone(), now.saturating_sub(*then)))
        .filter(|(_, d)| *d > 0)
        .collect();
    let client = of("c0");
    let (lbc, lbb_rx, lbb_tx) = (of("lbc"), sum("lbb", |b| b.rx), sum("lbb", |b| b.tx));
    let via_router = sum("rb", |b| b.rx);

    println!("   a {} MiB download through {vip}: {} body bytes, intact, in {:.2} s", DOWNLOAD_BYTES >> 20, got.received, got.elapsed.as_secs_f64());
    println!("   {:<66} {:>12}", "where", "bytes");
    println!("   {:<66} {:>12}", "client received (c0 rx)", client.rx);
    println!("   {:<66} {:>12}", "router received from the backends (rb1..rb3 rx)", via_router);
    println!("   {:<66} {:>12}", "load balancer forwarded to backends (agent, VIP web)", forwarded);
    for (address, bytes) in &served_by {
        println!("   {:<66} {:>12}", format!("  of which to backend {address} (agent)"), bytes);
    }
    println!("   {:<66} {:>12}", "load balancer, client side: lbc rx (client's packets)", lbc.rx);
    println!("   {:<66} {:>12}", "load balancer, client side: lbc tx (replies would leave here)", lbc.tx);
    println!("   {:<66} {:>12}", "load balancer, backend side: lbb1..3 tx (to the backends)", lbb_tx);
    println!("   {:<66} {:>12}", "load balancer, backend side: lbb1..3 rx (replies would enter here)", lbb_rx);
    let share = 100.0 * forwarded as f64 / client.rx.max(1) as f64;
    println!("   the load balancer forwarded {share:.1} % of the bytes the client received; {} of the download crossed it", mb(lbc.tx.max(lbb_rx)));

    let results = root.join(RESULTS);
    std::fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
    let file = results.join(format!("dsr-{mode}.json"));
    let iface_json = |(i, b): &(String, IfaceBytes)| (i.clone(), json!({"rx_bytes": b.rx, "tx_bytes": b.tx}));
    let figures: Value = json!({
        "mode": mode,
        "commit": commit(root),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "vip": vip.to_string(),
        "download_bytes": DOWNLOAD_BYTES,
        "download_seconds": got.elapsed.as_secs_f64(),
        "client_received_bytes": client.rx,
        "router_from_backends_bytes": via_router,
        "lb_forwarded_bytes": forwarded,
        "lb_forwarded_per_backend_bytes": served_by.iter().map(|(a, b)| (a.clone(), json!(b))).collect::<serde_json::Map<_, _>>(),
        "lb_forwarded_share_percent": share,
        "interfaces": deltas.iter().map(iface_json).collect::<serde_json::Map<_, _>>(),
        "bypass_bound_bytes": BYPASS_BOUND,
    });
    std::fs::write(&file, format!("{}\n", serde_json::to_string_pretty(&figures)?)).with_context(|| format!("writing {}", file.display()))?;
    println!("   figures written to {}", file.strip_prefix(root).unwrap_or(&file).display());

    if lbc.tx >= BYPASS_BOUND || lbb_rx >= BYPASS_BOUND || via_router < DOWNLOAD_BYTES as u64 {
        bail!("the replies crossed the load balancer: lbc tx {}, lbb rx {}, router from backends {}", mb(lbc.tx), mb(lbb_rx), mb(via_router));
    }
    let summary = vec![
        ("bypass (10 MiB download)".to_owned(), format!("client received {}, load balancer forwarded {} ({share:.1} %)", mb(client.rx), mb(forwarded))),
        ("load balancer interfaces during it".to_owned(), format!("lbc tx {}, lbb* rx {}, lbb* tx {}", mb(lbc.tx), mb(lbb_rx), mb(lbb_tx))),
    ];
    Ok((summary, file))
}
