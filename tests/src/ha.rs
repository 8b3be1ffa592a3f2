//! The multi-node high-availability lab (issue 10), shared by `tests/tests/ha.rs` and
//! `cargo xtask lab --ha`: a router running BIRD 2 with ECMP and BFD, N load balancer nodes
//! (each its own namespace with its own `lb run` agent, BIRD speaking eBGP to the router, and
//! keepalived holding the backends' gateway by VRRP), backends on a shared segment, and a
//! client behind the router.
//!
//! ```text
//!  client ns          router ns (BIRD)                node k ns (lb, BIRD, keepalived)       segment ns       backend j ns
//!  c0 10.0.2.2 ─── rc 10.0.2.1   rn<k> 10.1.<k>.1 ─── rt 10.1.<k>.2      bk 10.0.10.<k+1> ─── sn<k> ┐
//!     fd00:2::2       fd00:2::1        fd01:<k>::1       fd01:<k>::2        fd00:10::<k+1>          br0 ── sb<j> ─── eth0 10.0.10.<10+j>
//!                                                     VIPs 10.0.0.10, fd00::10 (on rt)   gateway 10.0.10.1,          fd00:10::<10+j>
//!                                                                                         fd00:10::1 (VRRP)  (default via the gateway)
//! ```
//!
//! Each agent runs with `global.announce_table: 100`: it keeps a route per VIP in table 100
//! while it should attract the VIP; its BIRD learns that table (`examples/ha/bird-node.conf`)
//! and announces the VIPs to the router (`examples/ha/bird-router.conf`), which installs one
//! ECMP route per VIP with a next hop per announcing node and hashes flows on their 5-tuple.
//! The backends' default gateway is a VRRP address (`examples/ha/keepalived.conf`); every node
//! translates any flow's replies, so it does not matter which node holds it.
//!
//! [`HaLab::create_vrrp`] builds the other topology, "VRRP for the VIPs themselves" (no BGP):
//! the router's `rf` (10.0.0.1, fd00::1) and every node's `rt` (10.0.0.<k+1>, fd00::<k+1>)
//! share a bridge (`br1` in the segment namespace); the agents run with
//! `global.vip_addresses: external` and no announcement table, and a second keepalived per node
//! (`examples/ha/keepalived-vips.conf`, its track script `lb check --config`) puts the VIPs on the VRRP
//! master's `rt`, which the router reaches on link. The backends' side is the same.
//!
//! [`HaLab::create_dsr`] is the BGP topology with direct server return VIPs: the router also
//! has a port on the backends' segment (`rs`, 10.0.10.254, fd00:10::fe), which is the
//! backends' default route, so that they answer clients from the VIPs straight to it; each
//! backend is set up by `lb backend-setup` (its segment interface is then named
//! `dxb<pid>h<n>b<j>`, unique on the host, as the decapsulation program is pinned by interface
//! name). The VRRP gateway still runs, and carries no VIP traffic.
//!
//! Names are unique per run (`lbh-<pid>-<n>-...`); dropping the [`HaLab`] kills every daemon,
//! removes each agent's pinned data path and deletes the namespaces, also when a test fails.
//! Every wait is bounded in time.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    agent::{Agent, in_netns},
    topology::{http_get, in_namespace},
};

/// The IPv4 VIP.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// The IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10);
/// The VIPs' port.
pub const VIP_PORT: u16 = 80;
/// The client's addresses (behind the router).
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 2);
/// The backends' gateway (VRRP).
pub const GATEWAY4: &str = "10.0.10.1";
/// The backends' IPv6 gateway (VRRP).
pub const GATEWAY6: &str = "fd00:10::1";
/// The agents' announcement table.
pub const ANNOUNCE_TABLE: u32 = 100;
/// The router's AS and the nodes' (shared) AS.
pub const ROUTER_AS: u32 = 65000;
/// The nodes' AS.
pub const NODE_AS: u32 = 65001;
/// BFD detection time of the examples (100 ms × 3).
pub const BFD_DETECTION: Duration = Duration::from_millis(300);
/// `fall × interval + timeout` of the nodes' health checks ([`node_config`]), the agent's
/// detection time of a dead backend at most.
pub const HEALTH_DETECTION: Duration = Duration::from_millis(200 + 2 * 150 + 100);

const BIRD_NODE: &str = include_str!("../../examples/ha/bird-node.conf");
const BIRD_ROUTER: &str = include_str!("../../examples/ha/bird-router.conf");
const KEEPALIVED: &str = include_str!("../../examples/ha/keepalived.conf");
const KEEPALIVED_VIPS: &str = include_str!("../../examples/ha/keepalived-vips.conf");

/// The router's address on the backends' segment in [`HaLab::create_dsr`]: their default route.
pub const ROUTER_SEGMENT4: &str = "10.0.10.254";
/// The router's IPv6 address on the backends' segment in [`HaLab::create_dsr`].
pub const ROUTER_SEGMENT6: &str = "fd00:10::fe";
/// The router's interface on the backends' segment in [`HaLab::create_dsr`].
pub const ROUTER_SEGMENT_IFACE: &str = "rs";

/// The router's address on the shared client-side segment of the VRRP topology.
pub const ROUTER_FRONT4: &str = "10.0.0.1";
/// The router's IPv6 address on that segment.
pub const ROUTER_FRONT6: &str = "fd00::1";

/// How the client side reaches the VIPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Each node on its own link to the router, which learns the VIPs by BGP (ECMP, BFD).
    Bgp,
    /// Every node's client-facing interface on one L2 segment with the router; keepalived
    /// (`examples/ha/keepalived-vips.conf`) puts the VIP addresses on the VRRP master only, and
    /// the router reaches them on link (ARP / neighbour discovery). No BGP.
    Vrrp,
}

/// The router's `fib_multipath_hash_fields`: source and destination address (0x1, 0x2), IP
/// protocol (0x4), source and destination port (0x10, 0x20).
pub const ECMP_HASH_FIELDS: u32 = 0x37;

/// Longest any lab command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

static LABS: AtomicU32 = AtomicU32::new(0);
/// How long a VRRP lab must look ready without a break before it is: keepalived's track
/// script (`lb check` every 1 s, rise 2, timeout 1 s) may still count a node as failing for
/// up to about 3 s after its agent serves, and a node whose script recovers first takes the
/// VIPs from the master meanwhile.
const VRRP_SETTLE: Duration = Duration::from_millis(3500);

/// Fills `@KEY@` placeholders of an example configuration.
/// Comment lines (starting with `#`) are left as they are.
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    for line in template.lines() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            let mut line = line.to_owned();
            for (key, value) in values {
                line = line.replace(&format!("@{key}@"), value);
            }
            out.push_str(&line);
        }
        out.push('\n');
    }
    out
}

/// Fails with a hint when BIRD 2 or keepalived is not installed.
pub fn check_tools() -> anyhow::Result<()> {
    for tool in ["bird", "birdc", "keepalived"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
        if !found {
            bail!("`{tool}` is not installed: run scripts/setup.sh (it installs bird2 and keepalived)");
        }
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} took longer than {COMMAND_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// Runs `args` in namespace `ns` and fails unless it succeeds.
pub fn ns_run(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&run(&mut in_netns(ns, args))?.stdout).into_owned())
}

/// A daemon (BIRD, keepalived) started in a namespace; killed when dropped.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    /// Pid files of processes it forked (keepalived's VRRP process).
    pid_files: Vec<PathBuf>,
}

impl Daemon {
    fn spawn(ns: &str, args: &[&str], log: &Path, name: &str, pid_files: Vec<PathBuf>) -> anyhow::Result<Daemon> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = in_netns(ns, args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {args:?} in {ns}"))?;
        Ok(Daemon { name: name.to_owned(), child: Some(child), pid_files })
    }

    fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.child.iter().map(|c| c.id() as i32).collect();
        for f in &self.pid_files {
            if let Some(pid) = std::fs::read_to_string(f).ok().and_then(|s| s.trim().parse().ok()) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Sends `signal` to the daemon and the processes it forked.
    pub fn signal(&self, signal: i32) {
        for pid in self.pids() {
            // SAFETY: kill(2) on the daemon's own processes (our child and its pid files').
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Whether the main process still runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL (a crash), reaped.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        for f in &self.pid_files {
            let _ = std::fs::remove_file(f);
        }
    }

    /// SIGTERM (a clean stop), waits at most 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.running() {
            thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Daemon({}, {:?})", self.name, self.child.as_ref().map(Child::id))
    }
}

/// One load balancer node.
pub struct Node {
    /// `n1`, `n2`, ...
    pub name: String,
    /// Its namespace (also its agent's instance name).
    pub ns: String,
    /// 1-based.
    pub index: usize,
    /// Its agent (`None` while crashed).
    pub agent: Option<Agent>,
    bird: Option<Daemon>,
    keepalived: Option<Daemon>,
    /// keepalived holding the VIPs ([`Topology::Vrrp`] only).
    keepalived_vips: Option<Daemon>,
    /// The MAC address of its client-facing interface `rt`.
    mac: String,
    frozen: bool,
    dir: PathBuf,
}

impl Node {
    /// Its address on the router link.
    pub fn up4(&self) -> String {
        format!("10.1.{}.2", self.index)
    }

    /// Its IPv6 address on the router link.
    pub fn up6(&self) -> String {
        format!("fd01:{}::2", self.index)
    }

    /// Its address on the shared client-side segment ([`Topology::Vrrp`]).
    pub fn front4(&self) -> String {
        format!("10.0.0.{}", self.index + 1)
    }

    /// Its IPv6 address on the shared client-side segment ([`Topology::Vrrp`]).
    pub fn front6(&self) -> String {
        format!("fd00::{}", self.index + 1)
    }

    /// Its own address on the backends' segment.
    pub fn segment4(&self) -> String {
        format!("10.0.10.{}", self.index + 1)
    }

    /// Its own IPv6 address on the backends' segment.
    pub fn segment6(&self) -> String {
        format!("fd00:10::{}", self.index + 1)
    }

    /// The router's interface towards it.
    pub fn router_iface(&self) -> String {
        format!("rn{}", self.index)
    }

    /// Its agent (panics while it is crashed).
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the node's agent runs")
    }

    /// BIRD's control socket.
    pub fn bird_socket(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }
}

/// One backend host on the shared segment.
pub struct HaBackend {
    /// `b1`, `b2`, ... (its server answers `/` with it).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its IPv4 address.
    pub v4: String,
    /// Its IPv6 address.
    pub v6: String,
    /// Its interface on the segment (`eth0`; unique on the host with DSR).
    pub iface: String,
    server: Option<Child>,
}

/// The router's FIB changes, as `ip monitor route` reports them, with the time each line was
/// read.
pub struct RouteMonitor {
    child: Child,
    events: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl RouteMonitor {
    fn start(ns: &str) -> anyhow::Result<RouteMonitor> {
        let mut child = in_netns(ns, &["ip", "monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ip monitor route")?;
        let stdout = child.stdout.take().expect("piped");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                let mut events = sink.lock().unwrap_or_else(|p| p.into_inner());
                if events.len() < 100_000 {
                    events.push((now, line));
                }
            }
        });
        Ok(RouteMonitor { child, events })
    }

    /// The first change of `prefix`'s route (`10.0.0.10` or `fd00::10`) at or after `since`.
    pub fn change_after(&self, prefix: &str, since: Instant) -> Option<Instant> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|(t, _)| *t >= since)
            .find(|(_, line)| {
                let line = line.strip_prefix("Deleted ").unwrap_or(line);
                line.split_whitespace().next().is_some_and(|dst| dst == prefix || dst.strip_suffix("/128").or(dst.strip_suffix("/32")) == Some(prefix))
            })
            .map(|(t, _)| *t)
    }

    /// Changes of either VIP's route at or after `since`.
    pub fn changes_after(&self, since: Instant) -> usize {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let vips = [VIP4.to_string(), VIP6.to_string()];
        events
            .iter()
            .filter(|(t, line)| *t >= since && vips.iter().any(|v| line.strip_prefix("Deleted ").unwrap_or(line).starts_with(&format!("{v} "))))
            .count()
    }

    /// The last change of any route.
    pub fn last_change(&self) -> Option<Instant> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).last().map(|(t, _)| *t)
    }

    /// Waits (at most `limit`) for a change of both VIPs' routes at or after `since`: the time
    /// from `since` to the later of the two.
    pub fn wait_both(&self, since: Instant, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            let v4 = self.change_after(&VIP4.to_string(), since);
            let v6 = self.change_after(&VIP6.to_string(), since);
            if let (Some(a), Some(b)) = (v4, v6) {
                return Some(a.max(b) - since);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running HA lab.
pub struct HaLab {
    /// `lbh-<pid>-<n>`: the prefix of every namespace of this lab.
    pub id: String,
    /// The client's namespace.
    pub client_ns: String,
    /// The router's namespace.
    pub router_ns: String,
    /// The segment (bridge) namespace.
    pub segment_ns: String,
    /// The load balancer nodes.
    pub nodes: Vec<Node>,
    /// The backends.
    pub backends: Vec<HaBackend>,
    /// The router's FIB changes ([`Topology::Bgp`] only).
    pub monitor: Option<RouteMonitor>,
    /// How the router reaches the VIPs.
    pub topology: Topology,
    /// The VIPs' direct server return mode ([`HaLab::create_dsr`]), or `None` (NAT).
    pub dsr: Option<String>,
    /// Backends set up by `lb backend-setup`: namespace and state file (undone on drop).
    setups: Vec<(String, PathBuf)>,
    router_bird: Option<Daemon>,
    namespaces: Vec<String>,
    dir: PathBuf,
    backend_bin: PathBuf,
    /// The agents' configuration when not the topology's default ([`HaLab::create_configured`],
    /// [`HaLab::reconfigure`]).
    node_yaml: Option<String>,
    /// The flow sync key file every agent's `global.flow_sync` names, when the nodes sync flows
    /// ([`HaLab::create_configured`]).
    flow_sync_key: Option<PathBuf>,
}

/// Makes every node's agent configuration from the lab's backends.
pub type NodeConfig = fn(&[HaBackend]) -> String;

/// The UDP port the nodes' agents sync flows on (on the backends' segment).
pub const FLOW_SYNC_PORT: u16 = 7946;

/// The agent configuration of every node: the same VIPs, backends and hash seed everywhere.
pub fn node_config(backends: &[HaBackend]) -> String {
    let pool = |v6: bool| {
        backends
            .iter()
            .map(|b| format!("      - address: {}\n        port: 8080\n", if v6 { &b.v6 } else { &b.v4 }))
            .collect::<String>()
    };
    let check = "    health_check:\n      type: http\n      path: /health\n      interval: 200ms\n      fast_interval: 100ms\n      timeout: 150ms\n      rise: 2\n      fall: 2\n";
    format!(
        "global:\n  interfaces: [rt, bk]\n  xdp_mode: driver\n  hash_seed: 42\n  vip_capacity: 8\n  backend_capacity: 64\n  \
         conn_capacity: 65536\n  announce_table: {ANNOUNCE_TABLE}\n  admin_socket: \"{{socket}}\"\nvips:\n  \
         - name: web\n    address: {VIP4}\n    port: {VIP_PORT}\n    protocol: tcp\n{check}    backends:\n{}  \
         - name: web6\n    address: {VIP6}\n    port: {VIP_PORT}\n    protocol: tcp\n{check}    backends:\n{}",
        pool(false),
        pool(true)
    )
}

/// `yaml` (an agent configuration) with `global.ring_retention_secs: secs`.
pub fn with_ring_retention(yaml: &str, secs: u32) -> String {
    yaml.replacen("global:\n", &format!("global:\n  ring_retention_secs: {secs}\n"), 1)
}

/// The agent configuration of every node in [`HaLab::create_dsr`]: as [`node_config`], with
/// the VIPs in direct server return `mode`, the backends on the VIPs' port and TCP health
/// checks through the VIPs (the default target of DSR VIPs).
pub fn dsr_node_config(backends: &[HaBackend], mode: &str) -> String {
    let check = "    health_check:\n      type: http\n      path: /health\n";
    node_config(backends)
        .replace("        port: 8080\n", &format!("        port: {VIP_PORT}\n"))
        .replace(check, &format!("    forwarding: {mode}\n    health_check:\n      type: tcp\n"))
}

/// The agent configuration of every node in the VRRP topology: as [`node_config`], with
/// `global.vip_addresses: external` (keepalived owns the VIP addresses) and no
/// `announce_table`.
pub fn vrrp_node_config(backends: &[HaBackend]) -> String {
    node_config(backends).replace(&format!("  announce_table: {ANNOUNCE_TABLE}\n"), "  vip_addresses: external\n")
}

impl HaLab {
    /// Builds the lab with `nodes` load balancer nodes and `backends` backends, starts every
    /// daemon, and waits (bounded) until the router has a next hop per node for both VIPs, a
    /// node holds the gateway and both VIPs answer. `backend_bin` is `lb-test-backend`.
    pub fn create(nodes: usize, backends: usize, backend_bin: &Path) -> anyhow::Result<HaLab> {
        HaLab::build(nodes, backends, backend_bin, Topology::Bgp, None, None)
    }

    /// As [`HaLab::create`], with the VIPs in direct server return `mode` (`tunnel`, `gue`,
    /// `direct`): the backends set up for it by `lb backend-setup`, serving the VIPs' port,
    /// their default route the router's port on their segment (see the module documentation).
    pub fn create_dsr(nodes: usize, backends: usize, backend_bin: &Path, mode: &str) -> anyhow::Result<HaLab> {
        HaLab::build(nodes, backends, backend_bin, Topology::Bgp, Some(mode), None)
    }

    /// As [`HaLab::create`], with every agent running `config(backends)` instead of
    /// [`node_config`] (for instance a pool of some of the backends only, the others to be
    /// added by [`HaLab::reconfigure`]); with `flow_sync`, each agent also syncs flows with the
    /// others (`global.flow_sync` on its backends' segment address, [`FLOW_SYNC_PORT`], one key).
    pub fn create_configured(
        nodes: usize,
        backends: usize,
        backend_bin: &Path,
        config: NodeConfig,
        flow_sync: bool,
    ) -> anyhow::Result<HaLab> {
        HaLab::build(nodes, backends, backend_bin, Topology::Bgp, None, Some((config, flow_sync)))
    }

    /// The "VRRP for the VIPs themselves" variant: the nodes' client-facing interfaces `rt`
    /// (10.0.0.<k+1>/24, fd00::<k+1>/64) and the router's `rf` (10.0.0.1, fd00::1) share a
    /// bridge (`br1` in the segment namespace); no BGP. Every agent runs
    /// [`vrrp_node_config`]; each node runs a second keepalived from
    /// `examples/ha/keepalived-vips.conf` (node 1 has the highest priority, the track script
    /// runs `lb check --config <its agent's configuration>`), with `arp_ignore=1`, `arp_announce=2`.
    /// The backends' gateway is as in [`HaLab::create`]. Waits (bounded) until every agent
    /// serves, node 1 holds the VIPs and the gateway, and both VIPs answer.
    pub fn create_vrrp(nodes: usize, backends: usize, backend_bin: &Path) -> anyhow::Result<HaLab> {
        HaLab::build(nodes, backends, backend_bin, Topology::Vrrp, None, None)
    }

    fn build(
        nodes: usize,
        backends: usize,
        backend_bin: &Path,
        topology: Topology,
        dsr: Option<&str>,
        config: Option<(NodeConfig, bool)>,
    ) -> anyhow::Result<HaLab> {
        check_tools()?;
        crate::orphans::sweep_orphans_once();
        anyhow::ensure!((2..=8).contains(&nodes), "2 to 8 nodes");
        anyhow::ensure!((1..=40).contains(&backends), "1 to 40 backends");
        let lab_number = LABS.fetch_add(1, Ordering::Relaxed);
        let id = format!("lbh-{}-{lab_number}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir)?;
        let mut lab = HaLab {
            client_ns: format!("{id}-c"),
            router_ns: format!("{id}-r"),
            segment_ns: format!("{id}-s"),
            id: id.clone(),
            nodes: Vec::new(),
            backends: Vec::new(),
            monitor: None,
            topology,
            dsr: dsr.map(str::to_owned),
            setups: Vec::new(),
            router_bird: None,
            namespaces: Vec::new(),
            dir,
            backend_bin: backend_bin.to_owned(),
            node_yaml: None,
            flow_sync_key: None,
        };
        for ns in [lab.client_ns.clone(), lab.router_ns.clone(), lab.segment_ns.clone()] {
            lab.add_ns(&ns)?;
        }
        let (client, router, segment) = (lab.client_ns.clone(), lab.router_ns.clone(), lab.segment_ns.clone());
        // ECMP by the 5-tuple alone, as a router on its own box does: policy 1 (L4) would take
        // the hash the client's socket put on the packet (`skb->hash`, kept across veths),
        // which is random per socket and drawn again at every retransmission timeout, so that
        // flows changed node at random and `node_of_flow` (`ip route get`) guessed wrong.
        // Policy 3 with these fields hashes source and destination address, protocol and ports,
        // so each flow always takes the same node.
        ns_run(&router, &[
            "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.fib_multipath_hash_policy=3", "net.ipv6.fib_multipath_hash_policy=3",
            &format!("net.ipv4.fib_multipath_hash_fields={ECMP_HASH_FIELDS:#x}"),
            &format!("net.ipv6.fib_multipath_hash_fields={ECMP_HASH_FIELDS:#x}"),
        ])?;
        ns_run(&segment, &["ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        ns_run(&segment, &["ip", "link", "set", "br0", "up"])?;

        // Client ── router.
        veth(&router, "rc", &client, "c0")?;
        addr(&router, "rc", "10.0.2.1/24", "fd00:2::1/64")?;
        addr(&client, "c0", &format!("{CLIENT4}/24"), &format!("{CLIENT6}/64"))?;
        ns_run(&client, &["ip", "route", "add", "default", "via", "10.0.2.1"])?;
        ns_run(&client, &["ip", "-6", "route", "add", "default", "via", "fd00:2::1"])?;
        if dsr.is_some() {
            // Router ── the backends' segment: the backends' way back to the clients.
            veth(&router, ROUTER_SEGMENT_IFACE, &segment, "sr")?;
            ns_run(&segment, &["ip", "link", "set", "sr", "master", "br0"])?;
            addr(&router, ROUTER_SEGMENT_IFACE, &format!("{ROUTER_SEGMENT4}/24"), &format!("{ROUTER_SEGMENT6}/64"))?;
            // Replies from the VIPs enter on `rs` while the router routes the VIPs to the nodes.
            ns_run(&router, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", &format!("net.ipv4.conf.{ROUTER_SEGMENT_IFACE}.rp_filter=0")])?;
        }
        if topology == Topology::Vrrp {
            // Router ── the shared client-side segment (bridge br1).
            ns_run(&segment, &["ip", "link", "add", "br1", "type", "bridge", "mcast_snooping", "0"])?;
            ns_run(&segment, &["ip", "link", "set", "br1", "up"])?;
            veth(&router, "rf", &segment, "fr")?;
            ns_run(&segment, &["ip", "link", "set", "fr", "master", "br1"])?;
            ns_run(&router, &["ethtool", "-K", "rf", "gro", "on"])?;
            addr(&router, "rf", &format!("{ROUTER_FRONT4}/24"), &format!("{ROUTER_FRONT6}/64"))?;
        }

        for k in 1..=nodes {
            let ns = format!("{id}-n{k}");
            lab.add_ns(&ns)?;
            ns_run(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])?;
            let node_dir = lab.dir.join(format!("n{k}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut node = Node {
                name: format!("n{k}"),
                ns: ns.clone(),
                index: k,
                agent: None,
                bird: None,
                keepalived: None,
                keepalived_vips: None,
                mac: String::new(),
                frozen: false,
                dir: node_dir,
            };
            match topology {
                Topology::Bgp => {
                    // Router ── node: the node's XDP program redirects replies to `rt`, so the
                    // router's end gets GRO (NAPI) to receive them.
                    veth(&router, &node.router_iface(), &ns, "rt")?;
                    addr(&router, &node.router_iface(), &format!("10.1.{k}.1/24"), &format!("fd01:{k}::1/64"))?;
                    addr(&ns, "rt", &format!("{}/24", node.up4()), &format!("{}/64", node.up6()))?;
                    ns_run(&router, &["ethtool", "-K", &node.router_iface(), "gro", "on"])?;
                    ns_run(&ns, &["ip", "route", "add", "default", "via", &format!("10.1.{k}.1")])?;
                    ns_run(&ns, &["ip", "-6", "route", "add", "default", "via", &format!("fd01:{k}::1")])?;
                }
                Topology::Vrrp => {
                    // Node ── shared client-side segment: replies are redirected to `rt`; its
                    // bridge port gets GRO. Only the holder of an address answers ARP for it.
                    let port = format!("fn{k}");
                    veth(&segment, &port, &ns, "rt")?;
                    ns_run(&segment, &["ip", "link", "set", &port, "master", "br1"])?;
                    ns_run(&segment, &["ethtool", "-K", &port, "gro", "on"])?;
                    ns_run(&ns, &["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"])?;
                    addr(&ns, "rt", &format!("{}/24", node.front4()), &format!("{}/64", node.front6()))?;
                    node_default_routes(&node)?;
                }
            }
            let link: Value = serde_json::from_str(&ns_run(&ns, &["ip", "-j", "link", "show", "rt"])?)?;
            node.mac = link[0]["address"].as_str().context("rt's MAC address")?.to_owned();
            // Node ── segment: client packets are redirected to `bk`; its bridge port gets GRO.
            let port = format!("sn{k}");
            veth(&segment, &port, &ns, "bk")?;
            ns_run(&segment, &["ip", "link", "set", &port, "master", "br0"])?;
            ns_run(&segment, &["ethtool", "-K", &port, "gro", "on"])?;
            addr(&ns, "bk", &format!("{}/24", node.segment4()), &format!("{}/64", node.segment6()))?;
            lab.nodes.push(node);
        }
        for j in 1..=backends {
            let ns = format!("{id}-b{j}");
            lab.add_ns(&ns)?;
            let port = format!("sb{j}");
            let iface = if dsr.is_some() { format!("dxb{}h{lab_number}b{j}", std::process::id()) } else { "eth0".to_owned() };
            veth(&segment, &port, &ns, &iface)?;
            ns_run(&segment, &["ip", "link", "set", &port, "master", "br0"])?;
            let (v4, v6) = (format!("10.0.10.{}", 10 + j), format!("fd00:10::{}", 10 + j));
            addr(&ns, &iface, &format!("{v4}/24"), &format!("{v6}/64"))?;
            let (gw4, gw6) = if dsr.is_some() { (ROUTER_SEGMENT4, ROUTER_SEGMENT6) } else { (GATEWAY4, GATEWAY6) };
            ns_run(&ns, &["ip", "route", "add", "default", "via", gw4])?;
            ns_run(&ns, &["ip", "-6", "route", "add", "default", "via", gw6])?;
            // Redirected frames (direct mode, tunnels) are received by a peer with GRO.
            ns_run(&ns, &["ethtool", "-K", &iface, "gro", "on"])?;
            lab.backends.push(HaBackend { name: format!("b{j}"), ns, v4, v6, iface, server: None });
        }
        for j in 0..backends {
            if let Some(mode) = dsr {
                lab.backend_setup(j, mode)?;
            }
            lab.start_backend(j)?;
        }

        lab.node_yaml = config.map(|(c, _)| c(&lab.backends));
        if config.is_some_and(|(_, sync)| sync) {
            let key = lab.dir.join("flow-sync.key");
            let mut secret = [0u8; 48];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut secret)?;
            std::fs::write(&key, secret)?;
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            lab.flow_sync_key = Some(key);
        }
        if topology == Topology::Bgp {
            lab.monitor = Some(RouteMonitor::start(&router)?);
            lab.start_router_bird()?;
        }
        for i in 0..nodes {
            lab.start_keepalived(i)?;
            lab.start_agent(i)?;
            match topology {
                Topology::Bgp => lab.start_bird(i)?,
                Topology::Vrrp => lab.start_keepalived_vips(i)?,
            }
        }
        lab.wait_ready(Duration::from_secs(30))?;
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        run(Command::new("ip").args(["netns", "add", ns]))?;
        self.namespaces.push(ns.to_owned());
        ns_run(ns, &["ip", "link", "set", "lo", "up"])?;
        // No duplicate address detection: addresses (and VRRP's) are usable at once.
        // IPv6 addresses survive a link taken down (a crashed node's segment link comes back
        // with them, as a rebooted host's configuration would).
        ns_run(ns, &[
            "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.keep_addr_on_down=1", "net.ipv6.conf.default.keep_addr_on_down=1",
        ])?;
        Ok(())
    }

    /// `lb backend-setup --mode MODE --vip VIP4 --vip VIP6 --interface IF` on backend `j`,
    /// with a state file of its own (undone when the lab is dropped).
    fn backend_setup(&mut self, j: usize, mode: &str) -> anyhow::Result<()> {
        let b = &self.backends[j];
        let state = self.dir.join(format!("{}-backend-setup.json", b.name));
        let (lb, state_arg, vip4, vip6) = (crate::agent::lb_binary().display().to_string(), state.display().to_string(), VIP4.to_string(), VIP6.to_string());
        let ns = b.ns.clone();
        self.setups.push((ns.clone(), state));
        ns_run(&ns, &[&lb, "backend-setup", "--mode", mode, "--vip", &vip4, "--vip", &vip6, "--interface", &b.iface, "--state", &state_arg])?;
        Ok(())
    }

    /// The TCP port the backends' servers listen on: the VIPs' with DSR, else 8080.
    fn backend_port(&self) -> u16 {
        if self.dsr.is_some() { VIP_PORT } else { 8080 }
    }

    fn start_backend(&mut self, j: usize) -> anyhow::Result<()> {
        let port = self.backend_port();
        let b = &self.backends[j];
        let bin = self.backend_bin.display().to_string();
        let child = in_netns(&b.ns, &[&bin, &b.name, &format!("[::]:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        self.backends[j].server = Some(child);
        let b = &self.backends[j];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let up = in_namespace(&b.ns, move || TcpStream::connect_timeout(&local, Duration::from_millis(200)).is_ok())?;
            if up {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("backend {} did not start listening", b.name)
    }

    fn start_router_bird(&mut self) -> anyhow::Result<()> {
        let sessions: String = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "protocol bgp {0}_v4 from lb_node4 {{ neighbor {1} as {NODE_AS}; }}\nprotocol bgp {0}_v6 from lb_node6 {{ neighbor {2} as {NODE_AS}; }}\n",
                    n.name,
                    n.up4(),
                    n.up6()
                )
            })
            .collect();
        let conf = fill(BIRD_ROUTER, &[("ROUTER_ID", "10.0.2.1".into()), ("LOCAL_AS", ROUTER_AS.to_string()), ("NODES", sessions)]);
        let dir = self.dir.join("router");
        std::fs::create_dir_all(&dir)?;
        self.router_bird = Some(start_bird(&self.router_ns, &dir, &conf, "router")?);
        Ok(())
    }

    /// Starts node `i`'s BIRD (0-based).
    pub fn start_bird(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        let conf = fill(BIRD_NODE, &[
            ("ROUTER_ID", n.up4()),
            ("TABLE", ANNOUNCE_TABLE.to_string()),
            ("LOCAL_AS", NODE_AS.to_string()),
            ("PEER_AS", ROUTER_AS.to_string()),
            ("LOCAL4", n.up4()),
            ("PEER4", format!("10.1.{}.1", n.index)),
            ("LOCAL6", n.up6()),
            ("PEER6", format!("fd01:{}::1", n.index)),
            ("VIPS4", format!("{VIP4}/32")),
            ("VIPS6", format!("{VIP6}/128")),
        ]);
        let bird = start_bird(&n.ns, &n.dir, &conf, &n.name)?;
        self.nodes[i].bird = Some(bird);
        Ok(())
    }

    /// Starts node `i`'s keepalived: node 1 has the highest priority.
    pub fn start_keepalived(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        let conf = fill(KEEPALIVED, &[
            ("NODE", n.name.clone()),
            ("IFACE", "bk".into()),
            ("PRIORITY", (200 - n.index).to_string()),
            ("GW4", format!("{GATEWAY4}/24")),
            ("GW6", format!("{GATEWAY6}/64")),
        ]);
        let path = n.dir.join("keepalived.conf");
        std::fs::write(&path, conf)?;
        let (pid, vrrp_pid) = (n.dir.join("keepalived.pid"), n.dir.join("vrrp.pid"));
        let daemon = Daemon::spawn(
            &n.ns,
            &["keepalived", "-n", "-l", "-D", "-P", "-f", &path.display().to_string(), "-p", &pid.display().to_string(), "-r", &vrrp_pid.display().to_string()],
            &n.dir.join("keepalived.log"),
            &format!("keepalived {}", n.name),
            vec![vrrp_pid],
        )?;
        self.nodes[i].keepalived = Some(daemon);
        Ok(())
    }

    /// The admin socket of node `i`'s agent (where [`Agent::start_in`] puts it).
    pub fn agent_socket(&self, i: usize) -> PathBuf {
        std::env::temp_dir().join(format!("{}-agent", self.nodes[i].ns)).join("lb.sock")
    }

    /// The configuration file of node `i`'s agent (where [`Agent::start_in`] writes it).
    pub fn agent_config(&self, i: usize) -> PathBuf {
        std::env::temp_dir().join(format!("{}-agent", self.nodes[i].ns)).join("lb.yaml")
    }

    /// What node `i`'s keepalived for the VIPs ([`Topology::Vrrp`]) logged so far.
    pub fn keepalived_vips_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("keepalived-vips.log")).unwrap_or_default()
    }

    /// Starts node `i`'s keepalived for the VIPs ([`Topology::Vrrp`]): node 1 has the highest
    /// priority; the track script runs `lb check --config <configuration>` for its agent (the
    /// agent answers, or its pinned data path while the agent restarts).
    pub fn start_keepalived_vips(&mut self, i: usize) -> anyhow::Result<()> {
        let check = format!("{} check --config {}", crate::agent::lb_binary().display(), self.agent_config(i).display());
        let n = &self.nodes[i];
        let conf = fill(KEEPALIVED_VIPS, &[
            ("NODE", n.name.clone()),
            ("IFACE", "rt".into()),
            ("PRIORITY", (200 - n.index).to_string()),
            ("VIP4", format!("{VIP4}/32")),
            ("VIP6", format!("{VIP6}/128")),
            ("LB_CHECK", check),
        ]);
        let path = n.dir.join("keepalived-vips.conf");
        std::fs::write(&path, conf)?;
        let (pid, vrrp_pid) = (n.dir.join("keepalived-vips.pid"), n.dir.join("vrrp-vips.pid"));
        let daemon = Daemon::spawn(
            &n.ns,
            &["keepalived", "-n", "-l", "-D", "-P", "-f", &path.display().to_string(), "-p", &pid.display().to_string(), "-r", &vrrp_pid.display().to_string()],
            &n.dir.join("keepalived-vips.log"),
            &format!("keepalived-vips {}", n.name),
            vec![vrrp_pid],
        )?;
        self.nodes[i].keepalived_vips = Some(daemon);
        Ok(())
    }

    /// The node (1-based) holding the IPv4 VIP address ([`Topology::Vrrp`]).
    pub fn vip_holder(&self) -> Option<usize> {
        self.vip_holders().first().copied()
    }

    /// Every node holding the IPv4 VIP address on `rt`.
    pub fn vip_holders(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| ns_run(&n.ns, &["ip", "-o", "-4", "addr", "show", "dev", "rt"]).is_ok_and(|o| o.contains(&format!("{VIP4}/"))))
            .map(|n| n.index)
            .collect()
    }

    /// The node (1-based) whose MAC the router's neighbour entry for `vip` holds
    /// ([`Topology::Vrrp`]).
    pub fn router_neighbour(&self, vip: IpAddr) -> Option<usize> {
        let out = ns_run(&self.router_ns, &["ip", "-j", "neigh", "show", "to", &vip.to_string(), "dev", "rf"]).ok()?;
        let entries: Value = serde_json::from_str(&out).ok()?;
        let mac = entries.as_array()?.iter().find_map(|e| e["lladdr"].as_str())?.to_owned();
        self.nodes.iter().find(|n| n.mac == mac).map(|n| n.index)
    }

    /// Waits (at most `limit`) until the router's neighbour entries of both VIPs point at node
    /// `node` (1-based): the times from `since` (IPv4, IPv6).
    pub fn wait_router_neighbour(&self, node: usize, since: Instant, limit: Duration) -> Option<(Duration, Duration)> {
        let deadline = Instant::now() + limit;
        let (mut v4, mut v6) = (None, None);
        while Instant::now() < deadline {
            if v4.is_none() && self.router_neighbour(IpAddr::V4(VIP4)) == Some(node) {
                v4 = Some(since.elapsed());
            }
            if v6.is_none() && self.router_neighbour(IpAddr::V6(VIP6)) == Some(node) {
                v6 = Some(since.elapsed());
            }
            if let (Some(a), Some(b)) = (v4, v6) {
                return Some((a, b));
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Waits (at most `limit`) until node `node` (1-based) holds both VIP addresses and no
    /// other node holds the IPv4 one: the time from `since`.
    pub fn wait_vip_on(&self, node: usize, since: Instant, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        let n = &self.nodes[node - 1];
        while Instant::now() < deadline {
            let mine = ns_run(&n.ns, &["ip", "-o", "addr", "show", "dev", "rt"])
                .is_ok_and(|o| o.contains(&format!("{VIP4}/")) && o.contains(&format!("{VIP6}/")));
            if mine && self.vip_holders() == [node] {
                return Some(since.elapsed());
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Starts (or adopts the pinned data path with) node `i`'s agent.
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let yaml = match (self.topology, &self.dsr, &self.node_yaml) {
            (_, _, Some(yaml)) => yaml.clone(),
            (Topology::Bgp, Some(mode), None) => dsr_node_config(&self.backends, mode),
            (Topology::Bgp, None, None) => node_config(&self.backends),
            (Topology::Vrrp, _, None) => vrrp_node_config(&self.backends),
        };
        let yaml = self.for_node(i, &yaml);
        let n = &mut self.nodes[i];
        match n.agent.as_mut() {
            Some(agent) if agent.pid().is_some() => {}
            Some(agent) => agent.spawn()?,
            None => n.agent = Some(Agent::start_in(&n.ns, &n.ns, &yaml)?),
        }
        Ok(())
    }

    /// Gives every node's agent configuration `yaml` (the same on every node, as
    /// [`node_config`]'s): rewrites each agent's file, crashed ones too (a rejoin starts with
    /// it), and runs `lb reload` on each running agent, one after the other.
    pub fn reconfigure(&mut self, yaml: &str) -> anyhow::Result<()> {
        self.node_yaml = Some(yaml.to_owned());
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(agent) = n.agent.as_ref() else { continue };
            agent.rewrite_config(&self.for_node(i, yaml)).with_context(|| format!("writing {}'s configuration", n.name))?;
            if agent.pid().is_some() {
                let out = agent.cli(&["reload"]);
                anyhow::ensure!(out.status.success(), "lb reload on {}: {}", n.name, String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        Ok(())
    }

    /// The configuration `yaml` as node `i` (0-based) runs it: with its `global.flow_sync`
    /// (its own segment address, the others' as peers) when the lab's nodes sync flows.
    fn for_node(&self, i: usize, yaml: &str) -> String {
        let Some(key) = &self.flow_sync_key else { return yaml.to_owned() };
        let peers: Vec<String> = self.nodes.iter().filter(|n| n.index != i + 1).map(|n| format!("{}:{FLOW_SYNC_PORT}", n.segment4())).collect();
        let block = format!(
            "global:\n  flow_sync:\n    listen: {}:{FLOW_SYNC_PORT}\n    peers: [{}]\n    key_file: {}\n",
            self.nodes[i].segment4(),
            peers.join(", "),
            key.display()
        );
        yaml.replacen("global:\n", &block, 1)
    }

    /// `lb explain` on node `i` (0-based) for the client's TCP flow from `sport` to `vip`'s
    /// port: which path (`stateless` or `moved slot`) and backend its next packet takes there.
    pub fn explain(&self, i: usize, vip: IpAddr, sport: u16) -> anyhow::Result<Value> {
        let client = if vip.is_ipv4() { IpAddr::V4(CLIENT4) } else { IpAddr::V6(CLIENT6) };
        let (src, dst) = (SocketAddr::new(client, sport).to_string(), SocketAddr::new(vip, VIP_PORT).to_string());
        self.nodes[i].agent().json(&["explain", &src, &dst, "tcp"])
    }

    /// Waits until every running node announces both VIPs, the router has one next hop per
    /// such node, a node holds the gateway, and both VIPs answer.
    ///
    /// [`Topology::Vrrp`]: until every running agent passes `lb check`, the running node with
    /// the highest priority (the lowest index) holds the VIPs, a node holds the gateway, and
    /// both VIPs answer.
    pub fn wait_ready(&self, limit: Duration) -> anyhow::Result<Duration> {
        if self.topology == Topology::Vrrp {
            return self.wait_ready_vrrp(limit);
        }
        let started = Instant::now();
        let deadline = started + limit;
        let expected: Vec<usize> = self.nodes.iter().filter(|n| n.bird.is_some() && n.agent.is_some()).map(|n| n.index).collect();
        loop {
            let mut hops4 = self.router_next_hops(IpAddr::V4(VIP4));
            let mut hops6 = self.router_next_hops(IpAddr::V6(VIP6));
            hops4.sort_unstable();
            hops6.sort_unstable();
            let ok = hops4 == expected && hops6 == expected && self.gateway_holder().is_some() && {
                let client = self.client_ns.clone();
                in_namespace(&client, || {
                    [SocketAddr::new(IpAddr::V4(VIP4), VIP_PORT), SocketAddr::new(IpAddr::V6(VIP6), VIP_PORT)]
                        .iter()
                        .all(|a| matches!(http_get(*a, "/", Duration::from_millis(500)), Ok((200, _))))
                })
                .unwrap_or(false)
            };
            if ok {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                bail!(
                    "the HA lab was not ready within {limit:?}: router next hops v4 {hops4:?} v6 {hops6:?} (want {expected:?}), \
                     gateway holder {:?}\nrouter BIRD: {}\n{}",
                    self.gateway_holder(),
                    self.birdc(None, &["show", "protocols"]),
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn vips_answer(&self) -> bool {
        in_namespace(&self.client_ns, || {
            [SocketAddr::new(IpAddr::V4(VIP4), VIP_PORT), SocketAddr::new(IpAddr::V6(VIP6), VIP_PORT)]
                .iter()
                .all(|a| matches!(http_get(*a, "/", Duration::from_millis(500)), Ok((200, _))))
        })
        .unwrap_or(false)
    }

    /// [`HaLab::wait_ready`] for [`Topology::Vrrp`]: every running agent serves (`lb check`),
    /// the first running node alone holds the VIPs, the gateway is held and the VIPs answer,
    /// all of it unbroken for [`VRRP_SETTLE`].
    fn wait_ready_vrrp(&self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let deadline = started + limit;
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.agent.as_ref().is_some_and(|a| a.pid().is_some()) && n.keepalived_vips.is_some()).collect();
        let want = running.first().map(|n| n.index);
        let mut settled_since = None;
        loop {
            let serving = running.iter().all(|n| n.agent().cli(&["check"]).status.success());
            let holders = self.vip_holders();
            let ok = serving && want.is_some() && holders == want.into_iter().collect::<Vec<_>>() && self.gateway_holder().is_some() && self.vips_answer();
            match (ok, settled_since) {
                (false, _) => settled_since = None,
                (true, None) => settled_since = Some(Instant::now()),
                (true, Some(since)) if since.elapsed() >= VRRP_SETTLE => return Ok(started.elapsed()),
                (true, Some(_)) => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "the VRRP lab was not ready within {limit:?}: agents serving {serving}, VIP holders {holders:?} (want {want:?}), gateway holder {:?}\n{}",
                    self.gateway_holder(),
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// As [`HaLab::wait_ready`], and then until the router's FIB has not changed for `quiet`
    /// (a node back from a freeze can flap: BFD sessions with stale discriminators on one side
    /// go down once more before both sides agree).
    pub fn wait_stable(&self, quiet: Duration, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let deadline = started + limit;
        loop {
            self.wait_ready(deadline.saturating_duration_since(Instant::now()))?;
            let last = self.monitor().last_change().unwrap_or(started);
            if last.elapsed() >= quiet {
                self.wait_ready(Duration::from_secs(1))?;
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                bail!("the router's FIB did not settle within {limit:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `birdc` on the router (`None`) or node `i`.
    pub fn birdc(&self, node: Option<usize>, args: &[&str]) -> String {
        let socket = match node {
            Some(i) => self.nodes[i].bird_socket(),
            None => self.dir.join("router").join("bird.ctl"),
        };
        let mut cmd = Command::new("birdc");
        cmd.arg("-s").arg(socket).args(args);
        run(&mut cmd).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_else(|e| e.to_string())
    }

    /// The tails of the daemons' logs (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files = vec![self.dir.join("router").join("bird.log")];
        for n in &self.nodes {
            files.push(n.dir.join("bird.log"));
            files.push(n.dir.join("keepalived.log"));
            if self.topology == Topology::Vrrp {
                files.push(n.dir.join("keepalived-vips.log"));
            }
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            out.push_str(&format!("--- {}\n{}\n", f.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        for n in &self.nodes {
            if let Some(a) = &n.agent {
                let log = a.log();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                out.push_str(&format!("--- agent {}\n{}\n", n.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
            }
        }
        out
    }

    /// The nodes (1-based) the router's route to `vip` leads to.
    pub fn router_next_hops(&self, vip: IpAddr) -> Vec<usize> {
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let Ok(out) = ns_run(&self.router_ns, &["ip", family, "-j", "route", "show", "exact", &vip.to_string()]) else {
            return Vec::new();
        };
        let routes: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let mut devs = Vec::new();
        for r in routes.as_array().into_iter().flatten() {
            match r["nexthops"].as_array() {
                Some(hops) => devs.extend(hops.iter().filter_map(|h| h["dev"].as_str().map(str::to_owned))),
                None => devs.extend(r["dev"].as_str().map(str::to_owned)),
            }
        }
        devs.iter().filter_map(|d| d.strip_prefix("rn").and_then(|k| k.parse().ok())).collect()
    }

    /// The node (1-based) the router sends a TCP flow from the client's `sport` to `vip` to,
    /// by `ip route get`: exact for IPv4; for IPv6 the kernel (6.18) answers otherwise than it
    /// forwards for about half of the flows (each flow is still always forwarded the same way),
    /// so it is a guess there. [`Topology::Vrrp`]: the node holding the VIPs.
    pub fn node_of_flow(&self, vip: IpAddr, sport: u16) -> Option<usize> {
        if self.topology == Topology::Vrrp {
            return self.vip_holder();
        }
        let (family, from) = if vip.is_ipv4() { ("-4", CLIENT4.to_string()) } else { ("-6", CLIENT6.to_string()) };
        let out = ns_run(&self.router_ns, &[
            "ip", family, "-j", "route", "get", &vip.to_string(), "from", &from, "iif", "rc", "ipproto", "tcp", "sport",
            &sport.to_string(), "dport", &VIP_PORT.to_string(),
        ])
        .ok()?;
        let routes: Value = serde_json::from_str(&out).ok()?;
        routes[0]["dev"].as_str()?.strip_prefix("rn")?.parse().ok()
    }

    /// The node (1-based) that holds the backends' IPv4 gateway address.
    pub fn gateway_holder(&self) -> Option<usize> {
        self.nodes
            .iter()
            .find(|n| ns_run(&n.ns, &["ip", "-o", "-4", "addr", "show", "dev", "bk"]).is_ok_and(|o| o.contains(&format!("{GATEWAY4}/"))))
            .map(|n| n.index)
    }

    /// Waits (at most `limit`) until a node other than `not` holds the gateway (IPv4 and IPv6):
    /// the time from `since`.
    pub fn wait_gateway_moved(&self, not: usize, since: Instant, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            for n in self.nodes.iter().filter(|n| n.index != not) {
                let Ok(out) = ns_run(&n.ns, &["ip", "-o", "addr", "show", "dev", "bk"]) else { continue };
                if out.contains(&format!("{GATEWAY4}/")) && out.contains(&format!("{GATEWAY6}/")) {
                    return Some(since.elapsed());
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The FIB change monitor.
    pub fn monitor(&self) -> &RouteMonitor {
        self.monitor.as_ref().expect("the route monitor runs")
    }

    /// A node crash: kill -9 of its BIRD, agent and keepalived, and its link to the backends'
    /// segment down (the host is gone: it neither holds the gateway nor translates replies).
    /// Its link to the router stays up, so the router learns of it from the BGP session the
    /// kernel closes. Returns the moment of the first kill.
    ///
    /// [`Topology::Vrrp`]: also kill -9 of its VIPs' keepalived, and its client-facing link
    /// `rt` down too; the addresses keepalived had put on it (VIPs, gateway) are removed, as a
    /// rebooted host would not have them.
    pub fn crash(&mut self, i: usize) -> Instant {
        let t0 = Instant::now();
        let n = &mut self.nodes[i];
        if let Some(b) = n.bird.as_mut() {
            b.kill();
        }
        n.bird = None;
        if let Some(a) = n.agent.as_mut() {
            a.stop(libc::SIGKILL);
        }
        if let Some(k) = n.keepalived.as_mut() {
            k.kill();
        }
        n.keepalived = None;
        if let Some(k) = n.keepalived_vips.as_mut() {
            k.kill();
        }
        n.keepalived_vips = None;
        let _ = ns_run(&n.ns, &["ip", "link", "set", "bk", "down"]);
        if self.topology == Topology::Vrrp {
            let _ = ns_run(&n.ns, &["ip", "link", "set", "rt", "down"]);
            for (addr, dev) in [(format!("{VIP4}/32"), "rt"), (format!("{VIP6}/128"), "rt"), (format!("{GATEWAY4}/24"), "bk"), (format!("{GATEWAY6}/64"), "bk")] {
                let _ = ns_run(&n.ns, &["ip", "addr", "del", &addr, "dev", dev]);
            }
        }
        t0
    }

    /// A frozen node: SIGSTOP to its BIRD and its agent (its data path, in the kernel, and its
    /// keepalived go on). Returns the moment of the signals.
    pub fn freeze(&mut self, i: usize) -> Instant {
        let t0 = Instant::now();
        let n = &mut self.nodes[i];
        if let Some(b) = &n.bird {
            b.signal(libc::SIGSTOP);
        }
        if let Some(pid) = n.agent.as_ref().and_then(Agent::pid) {
            // SAFETY: kill(2) on the agent, our own child.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        }
        n.frozen = true;
        t0
    }

    /// SIGCONT to a frozen node's BIRD and agent.
    pub fn thaw(&mut self, i: usize) -> Instant {
        let t0 = Instant::now();
        let n = &mut self.nodes[i];
        if let Some(b) = &n.bird {
            b.signal(libc::SIGCONT);
        }
        if let Some(pid) = n.agent.as_ref().and_then(Agent::pid) {
            // SAFETY: kill(2) on the agent, our own child.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
        n.frozen = false;
        t0
    }

    /// A graceful drain: BIRD stopped cleanly (its sessions close with a Cease, the router
    /// withdraws the node's routes); the agent and its data path go on, so flows still on their
    /// way through it are served. Returns the moment of the signal.
    pub fn drain(&mut self, i: usize) -> Instant {
        let t0 = Instant::now();
        if let Some(mut b) = self.nodes[i].bird.take() {
            b.stop();
        }
        t0
    }

    /// Brings node `i` back: its segment link up, keepalived, the agent (which adopts its
    /// pinned data path) and then BIRD, each only if not running; thaws it if frozen.
    pub fn rejoin(&mut self, i: usize) -> anyhow::Result<Instant> {
        let t0 = Instant::now();
        if self.nodes[i].frozen {
            self.thaw(i);
            return Ok(t0);
        }
        ns_run(&self.nodes[i].ns, &["ip", "link", "set", "bk", "up"])?;
        if self.topology == Topology::Vrrp {
            ns_run(&self.nodes[i].ns, &["ip", "link", "set", "rt", "up"])?;
            node_default_routes(&self.nodes[i])?;
        }
        if self.nodes[i].keepalived.is_none() {
            self.start_keepalived(i)?;
        }
        if self.topology == Topology::Vrrp && self.nodes[i].keepalived_vips.is_none() {
            self.start_keepalived_vips(i)?;
        }
        self.start_agent(i)?;
        if self.topology == Topology::Bgp && self.nodes[i].bird.is_none() {
            self.start_bird(i)?;
        }
        Ok(t0)
    }

    /// Adds (`true`) or removes blackhole routes towards node `i`'s segment addresses in every
    /// backend: the node's health probes get no answer, while its clients' flows are unaffected.
    pub fn cut_health_checks(&self, i: usize, cut: bool) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        let verb = if cut { "add" } else { "del" };
        for b in &self.backends {
            ns_run(&b.ns, &["ip", "route", verb, "blackhole", &format!("{}/32", n.segment4())])?;
            ns_run(&b.ns, &["ip", "-6", "route", verb, "blackhole", &format!("{}/128", n.segment6())])?;
        }
        Ok(())
    }

    /// Datagrams node `i`'s kernel forwarded so far (IPv4 `ForwDatagrams` plus IPv6
    /// `Ip6OutForwDatagrams`): what its routing carried, such as the backends' packets to the
    /// gateway it holds (the data path's own forwarding is not counted there).
    pub fn kernel_forwarded(&self, i: usize) -> anyhow::Result<u64> {
        let snmp = ns_run(&self.nodes[i].ns, &["cat", "/proc/net/snmp", "/proc/net/snmp6"])?;
        let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
        let v4 = match (ip.next(), ip.next()) {
            (Some(names), Some(values)) => names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == "ForwDatagrams").and_then(|(_, v)| v.parse::<u64>().ok()),
            _ => None,
        };
        let v6 = snmp.lines().find_map(|l| l.strip_prefix("Ip6OutForwDatagrams")).and_then(|v| v.trim().parse::<u64>().ok());
        match (v4, v6) {
            (Some(a), Some(b)) => Ok(a + b),
            _ => bail!("no forwarding counters in /proc/net/snmp and snmp6 of {}", self.nodes[i].ns),
        }
    }

    /// `forward_to_backend` packets of node `i`'s data path so far (`None` without an agent).
    pub fn forwarded(&self, i: usize) -> Option<u64> {
        let agent = self.nodes[i].agent.as_ref()?;
        agent.pid()?;
        let stats = agent.json(&["stats"]).ok()?;
        stats["reasons"].as_array()?.iter().find(|r| r[0] == "forward_to_backend").and_then(|r| r[1].as_u64())
    }
}

fn start_bird(ns: &str, dir: &Path, conf: &str, name: &str) -> anyhow::Result<Daemon> {
    let path = dir.join("bird.conf");
    std::fs::write(&path, conf)?;
    let (socket, pid) = (dir.join("bird.ctl"), dir.join("bird.pid"));
    let _ = std::fs::remove_file(&socket);
    let daemon = Daemon::spawn(
        ns,
        &["bird", "-f", "-c", &path.display().to_string(), "-s", &socket.display().to_string(), "-P", &pid.display().to_string()],
        &dir.join("bird.log"),
        &format!("bird {name}"),
        Vec::new(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!("BIRD in {ns} did not start: {}", std::fs::read_to_string(dir.join("bird.log")).unwrap_or_default());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(daemon)
}

/// A veth pair `a` (in `ns_a`) ── `b` (in `ns_b`), two queues each way, both up, checksum
/// offload off on both ends (TCP through redirected frames needs full checksums).
fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) -> anyhow::Result<()> {
    ns_run(ns_a, &[
        "ip", "link", "add", a, "numtxqueues", "2", "numrxqueues", "2", "type", "veth", "peer", "name", b, "netns", ns_b,
        "numtxqueues", "2", "numrxqueues", "2",
    ])?;
    ns_run(ns_a, &["ip", "link", "set", a, "up"])?;
    ns_run(ns_b, &["ip", "link", "set", b, "up"])?;
    ns_run(ns_a, &["ethtool", "-K", a, "tx", "off"])?;
    ns_run(ns_b, &["ethtool", "-K", b, "tx", "off"])?;
    Ok(())
}

/// A [`Topology::Vrrp`] node's default routes, via the router on the shared segment (again
/// after its link was down, which removed them), and a ping of the router, as a real host's own
/// traffic would: a backup must know the router's MAC before it takes the VIPs. Its data path
/// sends replies towards the client by the kernel's FIB and neighbour table; without a
/// neighbour entry it hands them to the kernel, which drops them (their source, the VIP, is now
/// a local address), and the kernel learns the router's MAC only when the router probes it
/// (about 5 s, `delay_first_probe_time`): IPv4 established connections stalled that long.
/// A stale entry is enough (the kernel's FIB lookup takes it) and stays while the table is small.
fn node_default_routes(n: &Node) -> anyhow::Result<()> {
    ns_run(&n.ns, &["ip", "route", "replace", "default", "via", ROUTER_FRONT4, "dev", "rt"])?;
    ns_run(&n.ns, &["ip", "-6", "route", "replace", "default", "via", ROUTER_FRONT6, "dev", "rt"])?;
    ns_run(&n.ns, &["ping", "-q", "-c", "1", "-W", "2", ROUTER_FRONT4])?;
    ns_run(&n.ns, &["ping", "-q", "-6", "-c", "1", "-W", "2", ROUTER_FRONT6])?;
    Ok(())
}

fn addr(ns: &str, dev: &str, v4: &str, v6: &str) -> anyhow::Result<()> {
    ns_run(ns, &["ip", "addr", "add", v4, "dev", dev])?;
    ns_run(ns, &["ip", "addr", "add", v6, "dev", dev, "nodad"])?;
    Ok(())
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(b) = n.bird.as_mut() {
                b.kill();
            }
            if let Some(k) = n.keepalived.as_mut() {
                k.kill();
            }
            if let Some(k) = n.keepalived_vips.as_mut() {
                k.kill();
            }
            if let Some(pid) = n.agent.as_ref().and_then(Agent::pid) {
                // SAFETY: kill(2) on our own child (a frozen agent must run to stop).
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
            // Stops the agent and removes its pinned data path (`lb teardown`).
            drop(n.agent.take());
        }
        if let Some(b) = self.router_bird.as_mut() {
            b.kill();
        }
        self.monitor = None;
        for b in &mut self.backends {
            if let Some(mut c) = b.server.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Backend set-ups, then (should an undo fail) the decapsulation programs' pins.
        let lb = crate::agent::lb_binary().display().to_string();
        for (ns, state) in std::mem::take(&mut self.setups) {
            if let Err(e) = ns_run(&ns, &[&lb, "backend-setup", "--undo", "--state", &state.display().to_string()]) {
                eprintln!("undoing the backend set-up in {ns}: {e:#}");
            }
        }
        for b in self.backends.iter().filter(|b| b.iface != "eth0") {
            let _ = std::fs::remove_dir_all(Path::new(crate::topology::DECAP_PIN_ROOT).join(&b.iface));
        }
        for n in &self.nodes {
            let _ = std::fs::remove_dir_all(Path::new(crate::topology::BPFFS_ROOT).join(&n.ns));
            let _ = std::fs::remove_dir_all(Path::new(crate::topology::RUN_ROOT).join(&n.ns));
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Load: long-lived keep-alive connections and new connections, both families.

/// Bounds every load loop.
pub const LOAD_LIMIT: Duration = Duration::from_secs(120);

/// A long-lived keep-alive connection through a VIP.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The VIP it goes to.
    pub vip: IpAddr,
    /// The client's port.
    pub sport: u16,
    /// The backend that answered its first request.
    pub backend: String,
    /// The node the router sent it to when it opened.
    pub node: Option<usize>,
}

/// What happened to a long-lived connection.
#[derive(Clone, Debug, Default)]
pub struct SessionOutcome {
    /// Requests answered by its backend.
    pub ok: u32,
    /// Requests answered by another backend (the flow moved).
    pub moved: u32,
    /// The error that ended it, and when.
    pub broken: Option<(Instant, String)>,
}

/// One new connection's request: when it started, and its error if it failed.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// When it started.
    pub at: Instant,
    /// IPv6 VIP.
    pub v6: bool,
    /// Why it failed.
    pub error: Option<String>,
}

/// Keep-alive sessions and new-connection clients running until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    sessions: Vec<(SessionInfo, thread::JoinHandle<SessionOutcome>)>,
    fresh: Vec<thread::JoinHandle<Vec<Attempt>>>,
}

/// A finished load's results.
pub struct LoadReport {
    /// Every long-lived connection and its outcome.
    pub sessions: Vec<(SessionInfo, SessionOutcome)>,
    /// Every new connection's request.
    pub fresh: Vec<Attempt>,
}

fn get(writer: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    writer.write_all(b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")?;
    crate::topology::read_response(reader)
}

impl Load {
    /// Opens `per_family` long-lived connections to each VIP (one request every `interval`
    /// on each, 5 s timeout) and starts `new_clients` clients per family that open a new
    /// connection per request (2 s timeout, one every 20 ms).
    pub fn start(lab: &HaLab, per_family: usize, interval: Duration, new_clients: usize) -> anyhow::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut sessions = Vec::new();
        for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
            for _ in 0..per_family {
                let addr = SocketAddr::new(vip, VIP_PORT);
                let stream = in_namespace(&lab.client_ns, move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))??;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_write_timeout(Some(Duration::from_secs(5)))?;
                let sport = stream.local_addr()?.port();
                let mut writer = stream.try_clone()?;
                let mut reader = BufReader::new(stream);
                let (status, backend) = get(&mut writer, &mut reader).context("first request of a long-lived connection")?;
                anyhow::ensure!(status == 200, "status {status}");
                let info = SessionInfo { vip, sport, backend: backend.clone(), node: lab.node_of_flow(vip, sport) };
                let stop = stop.clone();
                let handle = thread::spawn(move || {
                    let mut outcome = SessionOutcome::default();
                    let started = Instant::now();
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < LOAD_LIMIT {
                        match get(&mut writer, &mut reader) {
                            Ok((200, body)) if body == backend => outcome.ok += 1,
                            Ok((200, _)) => outcome.moved += 1,
                            Ok((status, body)) => {
                                outcome.broken = Some((Instant::now(), format!("status {status}: {body}")));
                                break;
                            }
                            Err(e) => {
                                outcome.broken = Some((Instant::now(), e.to_string()));
                                break;
                            }
                        }
                        thread::sleep(interval);
                    }
                    outcome
                });
                sessions.push((info, handle));
            }
        }
        let mut fresh = Vec::new();
        for v6 in [false, true] {
            for _ in 0..new_clients {
                let (stop, ns) = (stop.clone(), lab.client_ns.clone());
                let addr = SocketAddr::new(if v6 { IpAddr::V6(VIP6) } else { IpAddr::V4(VIP4) }, VIP_PORT);
                fresh.push(thread::spawn(move || {
                    in_namespace(&ns, move || {
                        let mut attempts = Vec::new();
                        let started = Instant::now();
                        while !stop.load(Ordering::SeqCst) && started.elapsed() < LOAD_LIMIT {
                            let at = Instant::now();
                            let error = match http_get(addr, "/", Duration::from_secs(2)) {
                                Ok((200, _)) => None,
                                other => Some(format!("{other:?}")),
                            };
                            attempts.push(Attempt { at, v6, error });
                            thread::sleep(Duration::from_millis(20));
                        }
                        attempts
                    })
                    .unwrap_or_default()
                }));
            }
        }
        Ok(Load { stop, sessions, fresh })
    }

    /// The long-lived connections.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions.iter().map(|(i, _)| i.clone()).collect()
    }

    /// Stops every client and collects the results.
    pub fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let sessions = std::mem::take(&mut self.sessions)
            .into_iter()
            .map(|(info, h)| (info, h.join().unwrap_or_default()))
            .collect();
        let fresh = std::mem::take(&mut self.fresh).into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
        LoadReport { sessions, fresh }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl LoadReport {
    /// Share of the long-lived connections that did not break.
    pub fn survival(&self) -> f64 {
        (self.sessions.len() - self.broken()) as f64 / self.sessions.len().max(1) as f64
    }

    /// New connections that failed from `at` on.
    pub fn failed_after(&self, at: Instant) -> usize {
        self.fresh_between(at, at + Duration::from_secs(3600)).1
    }

    /// Prints a phase's figures: long-lived connections (per node of `nodes` they started on),
    /// broken, moved to another backend; new connections before and after `changed` (the
    /// router's convergence, or the VIPs' move), with the first errors.
    pub fn print(&self, phase: &str, t0: Instant, changed: Instant, nodes: usize) {
        let per_node: Vec<String> = (1..=nodes).map(|k| format!("n{k}: {}", self.on_node(k))).collect();
        let v6 = self.sessions.iter().filter(|(i, _)| i.vip.is_ipv6()).count();
        let (before, failed_before) = self.fresh_between(t0, changed);
        let (after, failed_after) = self.fresh_between(changed, changed + Duration::from_secs(3600));
        eprintln!(
            "[{phase}] long-lived connections {} ({} IPv4, {v6} IPv6; started on {}): survived {}, broken {}, \
             answered by another backend {}; new connections until the change {before} ({failed_before} failed), after {after} ({failed_after} failed)",
            self.sessions.len(),
            self.sessions.len() - v6,
            per_node.join(", "),
            self.sessions.len() - self.broken(),
            self.broken(),
            self.moved(),
        );
        for e in self.errors(5) {
            eprintln!("[{phase}]   {e}");
        }
    }

    /// Long-lived connections that broke (an error ended them).
    pub fn broken(&self) -> usize {
        self.sessions.iter().filter(|(_, o)| o.broken.is_some()).count()
    }

    /// Long-lived connections answered by another backend at least once.
    pub fn moved(&self) -> usize {
        self.sessions.iter().filter(|(_, o)| o.moved > 0).count()
    }

    /// Long-lived connections that the router first sent to node `index` (1-based).
    pub fn on_node(&self, index: usize) -> usize {
        self.sessions.iter().filter(|(i, _)| i.node == Some(index)).count()
    }

    /// New connections that started in `[from, to)` and how many of them failed.
    pub fn fresh_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let window: Vec<&Attempt> = self.fresh.iter().filter(|a| a.at >= from && a.at < to).collect();
        (window.len(), window.iter().filter(|a| a.error.is_some()).count())
    }

    /// Up to `n` error messages of broken connections and failed requests.
    pub fn errors(&self, n: usize) -> Vec<String> {
        self.sessions
            .iter()
            .filter_map(|(i, o)| o.broken.as_ref().map(|(_, e)| format!("long-lived {}:{} via n{:?}: {e}", i.vip, i.sport, i.node)))
            .chain(self.fresh.iter().filter_map(|a| a.error.clone().map(|e| format!("new (v6 {}): {e}", a.v6))))
            .take(n)
            .collect()
    }
}
