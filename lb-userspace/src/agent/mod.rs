//! The agent (`lb run`): loads and attaches the data path, keeps its maps in step with the
//! configuration, the health checks and the operator's commands, and serves the admin API and
//! the metrics. One loop owns all state; everything else talks to it through channels.

mod announce;
pub mod explain;
mod report;
pub mod state;
mod transaction;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::programs::links::{FdLink, PinnedLink};
use lb_common::maps::{META_LAYOUT, META_PROGRAM_HASH};
use serde_json::Value;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    api::{
        DataPathStatus, HealthStats, Request,
        server::{self, ApiError, Call},
    },
    config::{self, AdminState, Config, VipAddressOwner, XdpMode},
    dataplane::{
        Attached, Dataplane, Pins,
        table_walk::{self, TableCounts},
    },
    health::{Checker, Transition},
    host::HostState,
    instance::{InstanceDir, InstanceLock},
    metrics,
    neighbours::{self, Resolver},
    netlink::Netlink,
};
use state::{Changes, OpError, Runtime};

/// How often next hops are re-resolved and packet rates sampled.
const REFRESH: Duration = Duration::from_secs(1);

/// Options of `lb run`.
pub struct Options {
    /// The configuration file.
    pub config_path: PathBuf,
    /// Overrides `global.xdp_mode`.
    pub mode: Option<XdpMode>,
    /// An XDP object to run instead of the one built into `lb`.
    pub program: Option<PathBuf>,
}

struct Agent {
    config_path: PathBuf,
    config: Config,
    runtime: Runtime,
    dp: Dataplane,
    pins: Pins,
    data_path: DataPathStatus,
    /// The last count of the connection tables ([`table_walk`]).
    tables: TableCounts,
    /// The moved slots the next table walk checks ([`crate::dataplane::ring_history`]).
    moved_checks: table_walk::Checks,
    announcer: announce::Announcer,
    checker: Checker,
    /// The VIP addresses and announcement routes the agent adds to the host.
    host: HostState,
    /// Health transitions the maps refused, tried again at the next refresh.
    unapplied_health: Vec<Transition>,
    /// The backends whose next hops the resolver task looks up.
    hop_targets: tokio::sync::watch::Sender<Vec<(u32, std::net::IpAddr)>>,
    /// The agent's rtnetlink connection, shared by the host state, the resolver and reload.
    netlink: Netlink,
    interfaces: Vec<(String, String)>,
    started: Instant,
    /// Possible CPUs: each has its own share of the connection table.
    cpus: u32,
    /// The XDP mode the program was attached in (to attach it again).
    mode: XdpMode,
    /// The configured interfaces' current indices, as [`crate::links`] last reported them.
    link_indices: crate::links::Indices,
    health: HealthStats,
    rates: report::Rates,
    /// Flow sync's counters, when `global.flow_sync` is set.
    flow_sync: Option<std::sync::Arc<crate::flow_sync::Stats>>,
}

/// Runs the agent until SIGTERM, SIGINT or `lb teardown`.
///
/// It first takes the instance's lock ([`InstanceDir::try_lock`]): while another agent runs the
/// instance, this one stops at once, having changed nothing.
///
/// The data path lives in bpffs (`global.instance`, [`Pins`]): a pinned data path of the same
/// layout and sizes is adopted (its connection table, rings, backends, health and counters
/// carry on, and this build's program replaces the running one on the same links), otherwise a
/// new one is created and pinned. Stopping leaves it forwarding with the last maps, VIP
/// addresses included; only [`Request::Teardown`] (or [`teardown`] without an agent) removes it.
pub async fn run(config: Config, opts: Options) -> anyhow::Result<()> {
    // Before anything on the host is touched: refuse a host the data path cannot work on.
    crate::sysctls::check(&config)?;
    let instance = InstanceDir::of_instance(&config.global.instance);
    let mut lock = instance.try_lock()?;
    lock.record_holder(&config.global.admin_socket)?;
    let pins = Pins::of_instance(&config.global.instance);
    // No data path pinned and nothing recorded: whatever this start adds is its own.
    let first_start = pins.is_empty() && !instance.host_record().exists();
    let result = run_locked(config, opts, &instance, &pins).await;
    match result {
        Ok(RunEnd::TornDown) => lock.remove_dir(),
        Ok(RunEnd::Stopped) => Ok(()),
        // A first start that fails takes back what it added (addresses and routes, the program,
        // the pins, the runtime directory): nothing is left half set up. A failed restart
        // leaves the running data path alone.
        Err(e) if first_start => {
            tracing::info!(error = %format!("{e:#}"), "removing what this failed first start added");
            if let Err(undo) = crate::host::teardown_recorded(&instance.host_record()).await {
                tracing::error!(error = %format!("{undo:#}"), "removing the addresses and routes this start added failed");
            }
            if let Err(undo) = pins.remove() {
                tracing::error!(error = %format!("{undo:#}"), "removing the data path this start pinned failed");
            }
            let _ = lock.remove_dir();
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// How [`run_locked`] ended.
enum RunEnd {
    /// Stopped by a signal: the data path and the host state stay.
    Stopped,
    /// `lb teardown`: everything is removed but the runtime directory.
    TornDown,
}

/// [`run`] once the instance's lock is held.
async fn run_locked(config: Config, opts: Options, instance: &InstanceDir, pins: &Pins) -> anyhow::Result<RunEnd> {
    let pins = pins.clone();
    let netlink = Netlink::open().context("opening a netlink socket")?;
    let resolver = Resolver::new(netlink.handle());
    // The program's own debug logs (rare events) only when the agent logs at debug level.
    let logger = tracing::enabled!(tracing::Level::DEBUG).then(log::logger);
    let object = match &opts.program {
        Some(path) => std::borrow::Cow::Owned(std::fs::read(path).with_context(|| format!("reading the XDP object {}", path.display()))?),
        None => std::borrow::Cow::Borrowed(crate::dataplane::PROGRAM),
    };
    // The connection table keeps one LRU list per possible CPU: no CPU's share below the floor.
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("counting the possible CPUs ({what}): {e}"))? as u32;
    let (sizing, raised) = config.sizing().with_cpu_floor(cpus);
    if raised {
        tracing::warn!(
            configured = config.global.conn_capacity,
            used = sizing.conn_capacity,
            cpus,
            per_cpu = lb_common::limits::MIN_CONNS_PER_CPU,
            "global.conn_capacity raised: each CPU evicts from its own share of the connection table, and no share may be below the floor"
        );
    }
    let (mut dp, adopted) = Dataplane::open_with_sync(&sizing, &pins, logger, &object, config.global.flow_sync.is_some())?;
    if adopted {
        tracing::info!(pin_dir = %pins.dir().display(), "adopting the pinned data path: its connection table, rings, backends and counters carry on");
    } else {
        tracing::info!(pin_dir = %pins.dir().display(), "new data path pinned");
    }
    let ebpf_logs = match dp.take_debug_logs() {
        Some(logs) => Some(read_ebpf_logs(logs)?),
        None => None,
    };
    // The interfaces the program may send through: those it runs on, and the VLAN devices on
    // them (XDP sends through a VLAN device's parent and tags the frame). Any other next hop
    // is left to the kernel.
    let ports = crate::egress::ports(&netlink.handle(), &config).await?;
    for name in &config.global.interfaces {
        if let Some((&ifindex, _)) = ports.iter().find(|(_, n)| *n == name) {
            dp.maps.add_port(ifindex)?;
        }
    }
    for vlan in resolver.vlan_devices(&config.global.interfaces).await.context("listing the interfaces' VLAN devices")? {
        dp.maps.add_vlan_port(vlan.ifindex, vlan.parent, vlan.vlan_id)?;
        tracing::info!(ifindex = vlan.ifindex, parent = vlan.parent, vlan = vlan.vlan_id, "VLAN device on an XDP interface");
    }
    for problem in crate::egress::backends_behind_other_interfaces(&netlink.handle(), &config).await? {
        tracing::warn!("{problem}");
    }
    let ports: Vec<u32> = ports.into_keys().collect();
    dp.maps.retain_ports(&ports)?;
    let (runtime, changes) = if adopted {
        Runtime::adopt(&config, &dp.maps.pinned_state()?)
    } else {
        Runtime::new(&config)
    }
    .map_err(|e| anyhow!("{e}"))?;
    let (health_tx, mut health_rx) = mpsc::unbounded_channel();
    // The tables are counted off this loop, from their pins.
    let (counts_tx, mut counts_rx) = mpsc::unbounded_channel();
    let stop_counting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let moved_checks = table_walk::Checks::default();
    let counter = table_walk::spawn_counter(dp.maps.table_fds()?, REFRESH, stop_counting.clone(), moved_checks.clone(), counts_tx)?;
    dp.maps.set_ring_retention(config.global.ring_retention_secs);
    let host = HostState::start(instance.host_record(), netlink.handle())?;
    let (hop_targets, hop_targets_rx) = tokio::sync::watch::channel(Vec::new());
    let (hops_tx, mut hops_rx) = mpsc::unbounded_channel();
    let resolving = neighbours::spawn(resolver, hop_targets_rx, hops_tx, REFRESH);
    let mut agent = Agent {
        config_path: opts.config_path,
        runtime,
        dp,
        pins,
        data_path: DataPathStatus::default(),
        tables: TableCounts::default(),
        moved_checks,
        announcer: announce::Announcer::new(config.global.announce_table),
        checker: Checker::new(health_tx),
        host,
        unapplied_health: Vec::new(),
        hop_targets,
        netlink,
        interfaces: Vec::new(),
        started: Instant::now(),
        cpus,
        mode: XdpMode::Auto,
        link_indices: crate::links::Indices::new(),
        health: HealthStats::default(),
        rates: report::Rates::default(),
        flow_sync: None,
        config,
    };
    // The maps first: a new program starts with them filled.
    agent.apply(changes).context("installing the configuration")?;
    agent.attach(opts.mode)?;
    if let Err(e) = agent.dp.count_redirect_drops() {
        tracing::warn!(error = %format!("{e:#}"), "frames the kernel drops after a redirect are not counted");
    }
    agent.announce();
    let syncing = start_flow_sync(&mut agent)?;
    // From now on, an interface that stops running the program gets it again.
    let (links_tx, mut links_rx) = mpsc::unbounded_channel();
    let following = crate::links::spawn(agent.netlink.handle(), agent.config.global.interfaces.clone(), REFRESH, links_tx)
        .context("following link changes")?;
    agent.dp.maps.heartbeat()?;

    let (calls_tx, mut calls) = mpsc::channel::<Call>(64);
    let api = server::serve(&agent.config.global.admin_socket, calls_tx.clone()).await?;
    tracing::info!(socket = %agent.config.global.admin_socket.display(), "admin API listening");
    let metrics = match agent.config.global.metrics_address {
        Some(addr) => {
            let task = metrics::serve(addr, calls_tx.clone()).await?;
            tracing::info!(%addr, "metrics listening on /metrics");
            Some(task)
        }
        None => None,
    };

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(REFRESH);
    let torn_down = loop {
        tokio::select! {
            Some(t) = health_rx.recv() => {
                // Transitions that arrived together (several backends flipping at once) are
                // applied together: each VIP's ring is rebuilt and written once.
                let mut batch = vec![t];
                while let Ok(t) = health_rx.try_recv() {
                    batch.push(t);
                }
                agent.on_health(batch);
            }
            Some(call) = calls.recv() => {
                if call.request == Request::Teardown {
                    let answer = agent.teardown().await;
                    let done = answer.is_ok();
                    let _ = call.reply.send(answer);
                    if done {
                        break true;
                    }
                    continue;
                }
                let answer = agent.handle(call.request);
                let _ = call.reply.send(answer);
            }
            Some(counts) = counts_rx.recv() => agent.on_table_counts(counts),
            Some(hops) = hops_rx.recv() => agent.on_hops(hops),
            Some(indices) = links_rx.recv() => agent.on_link_indices(indices),
            _ = tick.tick() => agent.refresh(),
            _ = hup.recv() => {
                if let Err(e) = agent.reload() {
                    tracing::error!(error = %e.message, "reload refused; the running configuration is unchanged");
                }
            }
            _ = term.recv() => break false,
            _ = int.recv() => break false,
        }
    };
    if !torn_down {
        tracing::info!(
            pin_dir = %agent.pins.dir().display(),
            "stopping; the data path keeps forwarding with the last maps and the VIP addresses stay (`lb teardown` removes them)"
        );
    }
    stop_counting.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(counts_rx);
    let _ = counter.join();
    api.abort();
    for task in [metrics, ebpf_logs, syncing, Some(resolving), Some(following)].into_iter().flatten() {
        task.abort();
    }
    let _ = std::fs::remove_file(&agent.config.global.admin_socket);
    Ok(if torn_down { RunEnd::TornDown } else { RunEnd::Stopped })
}

/// Starts flow sync when `global.flow_sync` is set: its task, and its counters in `agent`.
fn start_flow_sync(agent: &mut Agent) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(config) = agent.config.global.flow_sync.clone() else {
        return Ok(None);
    };
    let key = crate::flow_sync::read_key(&config.key_file).map_err(|e| anyhow!("global.flow_sync.key_file: {e}"))?;
    let source = agent.dp.take_flow_sync().context("the data path was loaded without flow sync")?;
    let stats = std::sync::Arc::new(crate::flow_sync::Stats::default());
    let task = crate::flow_sync::spawn(&config, key, source, stats.clone())?;
    tracing::info!(listen = %config.listen, peers = ?config.peers, "flow sync: connections of moved slots go to the peers");
    agent.flow_sync = Some(stats);
    Ok(Some(task))
}

/// What [`teardown`] removed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Removed {
    /// The bpffs directory.
    pub pin_dir: String,
    /// Interfaces the program was detached from.
    pub detached: Vec<String>,
    /// The VIP addresses and announcement routes the agent had added.
    pub host: Vec<String>,
}

/// Removes the data path of `config`'s instance without an agent (the caller holds the
/// instance's `lock`): every address and route recorded as the agent's, then every pinned
/// link (the program is detached) and map, then the instance's runtime directory. Nothing
/// there is not an error.
pub fn teardown(config: &Config, lock: InstanceLock) -> anyhow::Result<Removed> {
    let pins = Pins::of_instance(&config.global.instance);
    let record = lock.dir().host_record();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting an async runtime")?;
    let host = runtime.block_on(crate::host::teardown_recorded(&record))?;
    let detached = pins.remove()?;
    lock.remove_dir()?;
    Ok(Removed { pin_dir: pins.dir().display().to_string(), detached, host: host.iter().map(ToString::to_string).collect() })
}

impl Agent {
    /// Attaches the program to every configured interface through its pinned link (replacing
    /// the running program where there is one), detaches it from interfaces no longer
    /// configured, and records what runs for `lb status`.
    fn attach(&mut self, mode: Option<XdpMode>) -> anyhow::Result<()> {
        let mode = mode.unwrap_or(self.config.global.xdp_mode);
        self.mode = mode;
        for iface in self.config.global.interfaces.clone() {
            let used = match self.dp.attach_pinned(&iface, mode, &self.pins)? {
                Attached::New(used) => {
                    tracing::info!(interface = %iface, mode = %used, "XDP program attached (link pinned)");
                    used.to_string()
                }
                Attached::Replaced => {
                    tracing::info!(interface = %iface, "XDP program replaced on the pinned link");
                    crate::dataplane::attached_mode(&iface).map_or_else(|| "pinned".to_owned(), |m| m.to_string())
                }
            };
            self.interfaces.push((iface, used));
        }
        for iface in self.pins.linked_interfaces() {
            if !self.config.global.interfaces.contains(&iface) {
                std::fs::remove_file(self.pins.link(&iface)).with_context(|| format!("unpinning the link of {iface}"))?;
                tracing::info!(interface = %iface, "XDP program detached from an interface no longer configured");
            }
        }
        let (program_id, tag) = self.dp.program_info()?;
        self.data_path = DataPathStatus {
            pin_dir: self.pins.dir().display().to_string(),
            adopted: self.dp.adopted(),
            layout: self.dp.maps.meta(META_LAYOUT)?,
            program_hash: format!("{:016x}", self.dp.maps.meta(META_PROGRAM_HASH)?),
            program_id,
            program_tag: format!("{tag:016x}"),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            links_reattached: 0,
        };
        Ok(())
    }

    /// Removes the recorded host state and the data path ([`Request::Teardown`]); the agent
    /// stops after answering.
    async fn teardown(&mut self) -> Result<Value, ApiError> {
        let host = self.host.teardown().await.map_err(ApiError::internal)?;
        let detached = self.pins.remove().map_err(|e| ApiError::internal(format!("{e:#}")))?;
        self.dp.release_links();
        let host: Vec<String> = host.iter().map(ToString::to_string).collect();
        tracing::info!(pin_dir = %self.pins.dir().display(), ?detached, ?host, "data path removed (program detached, maps unpinned, VIP addresses and routes removed); stopping");
        Ok(serde_json::json!({ "ok": true, "pin_dir": self.pins.dir().display().to_string(), "detached": detached, "host": host }))
    }

    /// Writes what `changes` says to the maps for the running runtime (at start), then to the
    /// VIP addresses and the health checker.
    fn apply(&mut self, changes: Changes) -> anyhow::Result<()> {
        let took = transaction::write_maps(&mut self.dp.maps, &self.runtime, &changes)?;
        self.after_write(&changes, took);
        Ok(())
    }

    /// What follows a map write of `changes`: the health checker's targets, the VIP addresses
    /// and the announcement. A probe's counters are kept when its target stops or restarts
    /// (`lb stats` counts only up).
    fn after_write(&mut self, changes: &Changes, took: Option<Duration>) {
        if let Some(took) = took {
            self.health.last_table_write_ms = Some(took.as_secs_f64() * 1000.0);
        }
        let removed = changes.removed_vips.iter().flat_map(|(_, _, ids)| ids).chain(&changes.removed_backends);
        for &id in removed {
            self.stop_probe(id);
        }
        let addresses = match self.config.global.vip_addresses {
            VipAddressOwner::Agent => self.runtime.vips.iter().map(|v| v.config.address).collect(),
            VipAddressOwner::External => Vec::new(),
        };
        self.host.set_addresses(&self.config.global.interfaces[0], addresses);
        for &id in &changes.probe {
            let target = self.runtime.backend_by_id(id).map(|(vip, b)| (report::probe_target(vip, b), b.generation));
            self.stop_probe(id);
            if let Some((Some(target), generation)) = target {
                self.checker.add(target, generation);
            }
        }
        for b in self.runtime.vips.iter().flat_map(|v| &v.backends) {
            self.checker.set_route(b.id, report::probe_route(b));
        }
        if !self.interfaces.is_empty() {
            self.announce();
        }
    }

    /// Stops probing backend `id`, adding what its probes counted to the agent's totals.
    fn stop_probe(&mut self, id: u32) {
        if let Some(t) = self.checker.snapshot().into_iter().find(|t| t.id == id) {
            self.health.probes += t.probes;
            self.health.failures += t.failures;
        }
        self.checker.remove(id);
    }

    /// Checks that the program runs on every interface: each pinned link exists and runs this
    /// agent's program.
    fn self_check(&self) -> Result<(), String> {
        for (iface, _) in &self.interfaces {
            let link = PinnedLink::from_pin(self.pins.link(iface)).map_err(|_| format!("no pinned link on {iface}"))?;
            let program = FdLink::from(link).info().map_err(|e| format!("link of {iface}: {e}"))?.program_id();
            if program != self.data_path.program_id {
                return Err(format!("{iface} runs program {program}, not this agent's {}", self.data_path.program_id));
            }
            match self.link_indices.get(iface) {
                Some(None) => return Err(format!("interface {iface} is gone")),
                Some(Some(now)) if now.xdp_program != Some(program) => {
                    return Err(format!("interface {iface} (index {}) does not run the program: its link is defunct", now.index));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes the interfaces' current state ([`crate::links`]) and attaches the program again
    /// to each interface that does not run it (re-created with another index, or its link went
    /// defunct).
    fn on_link_indices(&mut self, indices: crate::links::Indices) {
        let before = std::mem::replace(&mut self.link_indices, indices);
        for iface in self.config.global.interfaces.clone() {
            let was = before.get(&iface).copied().flatten();
            let Some(now) = self.link_indices.get(&iface).copied().flatten() else {
                if was.is_some() {
                    tracing::warn!(interface = %iface, "interface gone: the program is attached again when it comes back");
                }
                continue;
            };
            if now.xdp_program == Some(self.data_path.program_id) {
                continue;
            }
            match self.dp.attach_pinned(&iface, self.mode, &self.pins) {
                Ok(_) => {
                    if let Err(e) = self.dp.maps.add_port(now.index) {
                        tracing::error!(interface = %iface, error = %format!("{e:#}"), "registering the interface for redirects failed");
                    }
                    if let Some(old) = was.map(|w| w.index).filter(|&old| old != now.index) {
                        let _ = self.dp.maps.remove_port(old);
                    }
                    self.data_path.links_reattached += 1;
                    let program = self.data_path.program_id;
                    self.link_indices.insert(iface.clone(), Some(crate::links::LinkNow { xdp_program: Some(program), ..now }));
                    tracing::info!(interface = %iface, ifindex = now.index, was = ?was.map(|w| w.index), "XDP program attached again: the interface was re-created or its link went defunct");
                }
                Err(e) => tracing::error!(interface = %iface, error = %format!("{e:#}"), "attaching the program again failed; tried again at the next link change or refresh"),
            }
        }
        self.announce();
    }

    /// Publishes the announcement decision of every VIP address.
    fn announce(&mut self) {
        let attached = self.self_check();
        let decisions = announce::decide(&self.runtime.vips, attached.as_ref().map(|_| ()).map_err(String::as_str));
        let announced = self.announcer.apply(decisions);
        self.host.set_routes(self.announcer.table(), announced);
    }

    /// Moves to `next`, whose differences from the running runtime are `changes`, keeping it
    /// only if the maps took every write ([`transaction::commit`]); otherwise the running
    /// runtime, written back, stays and the error is returned.
    fn switch_to(&mut self, next: Runtime, changes: Changes) -> anyhow::Result<()> {
        match transaction::commit(&mut self.dp.maps, &mut self.runtime, next, changes) {
            Ok((applied, took)) => {
                self.after_write(&applied, took);
                Ok(())
            }
            Err(failed) => {
                self.after_write(&failed.undo, None);
                Err(failed.error)
            }
        }
    }

    /// Runs `op` on a copy of the running runtime and switches to it ([`Agent::switch_to`]):
    /// a refused operation or a failed map write changes nothing.
    fn transact(&mut self, op: impl FnOnce(&mut Runtime, &mut Changes) -> Result<(), OpError>) -> Result<Value, ApiError> {
        let mut next = self.runtime.clone();
        let mut changes = Changes::default();
        op(&mut next, &mut changes).map_err(refused)?;
        self.switch_to(next, changes)
            .map_err(|e| ApiError::internal(format!("writing the maps failed; nothing was changed: {e:#}")))?;
        Ok(serde_json::json!({ "ok": true }))
    }

    /// Records a batch of health transitions and writes the VIPs they change, all or nothing.
    /// A transition of a backend that is gone (removed, or its slot reused: another
    /// generation) is ignored. A batch the maps refused is kept and tried again at the next
    /// refresh: the health checker sends a transition once.
    fn on_health(&mut self, batch: Vec<Transition>) {
        let mut next = self.runtime.clone();
        let mut changes = Changes::default();
        let batch: Vec<Transition> = batch
            .into_iter()
            .filter(|t| {
                let current = next.set_health(t.id, t.generation, t.health, &mut changes);
                if !current {
                    tracing::debug!(backend = t.id, generation = t.generation, health = %t.health, "transition of a removed backend ignored");
                }
                current
            })
            .collect();
        let swapped = !changes.vips.is_empty();
        if let Err(e) = self.switch_to(next, changes) {
            tracing::error!(error = %format!("{e:#}"), "writing the maps after a health change failed; the health stays as it was and the change is tried again");
            self.unapplied_health.extend(batch);
            return;
        }
        self.health.transitions += batch.len() as u64;
        if !swapped {
            return;
        }
        self.health.swaps += 1;
        for t in &batch {
            let ms = t.failed_probe_at.elapsed().as_secs_f64() * 1000.0;
            self.health.last_probe_to_swap_ms = Some(ms);
            self.health.max_probe_to_swap_ms = Some(self.health.max_probe_to_swap_ms.map_or(ms, |m| m.max(ms)));
            tracing::info!(backend = t.id, health = %t.health, probe_to_swap_ms = ms, detail = %t.detail, "ring swapped after a health change");
        }
    }

    /// Tells the resolver which backends to look up, re-checks the announcement and samples
    /// packet rates.
    fn refresh(&mut self) {
        let targets: Vec<(u32, std::net::IpAddr)> = self
            .runtime
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| (b.id, b.address)))
            .collect();
        self.hop_targets.send_if_modified(|t| std::mem::replace(t, targets.clone()) != targets);
        if !self.unapplied_health.is_empty() {
            let batch = std::mem::take(&mut self.unapplied_health);
            self.on_health(batch);
        }
        self.announce();
        if let Err(e) = self.dp.maps.heartbeat() {
            tracing::error!(error = %format!("{e:#}"), "writing the heartbeat failed: lb check will not answer from the data path");
        }
        self.rates.sample(&self.runtime, &self.dp.maps);
    }

    /// Writes the next hops the resolver found ([`neighbours::spawn`]) for backends that still
    /// have the address it looked up (a slot may have been reused meanwhile).
    fn on_hops(&mut self, hops: Vec<(u32, std::net::IpAddr, neighbours::Resolution)>) {
        let mut next = self.runtime.clone();
        let mut changes = Changes::default();
        for (id, addr, found) in hops {
            if next.backend_by_id(id).is_some_and(|(_, b)| b.address == addr) {
                if let Some(hop) = found.hop {
                    next.set_hop(id, hop, &mut changes);
                }
                next.set_path(id, found.path, &mut changes);
            }
        }
        if changes.vips.is_empty() {
            return;
        }
        if let Err(e) = self.switch_to(next, changes) {
            tracing::error!(error = %format!("{e:#}"), "writing next hops failed; they are tried again with the next resolution");
        }
    }

    /// Keeps a new count of the connection tables for `lb status` and the metrics, and writes
    /// least-conn's per-backend flow counts from it: flows that ended since the last count
    /// (FIN, RST, expiry, eviction) stop counting, and the increments the data path made for
    /// new flows are replaced by the count.
    fn on_table_counts(&mut self, counts: TableCounts) {
        let least_conn: Vec<u32> = self
            .runtime
            .vips
            .iter()
            .filter(|v| v.config.scheduler == config::Scheduler::LeastConn)
            .flat_map(|v| v.backends.iter().map(|b| b.id))
            .collect();
        if let Err(e) = self.dp.maps.set_active_connections(least_conn.into_iter(), &counts.live) {
            tracing::error!(error = %e, "writing least-conn's flow counts failed");
        }
        self.update_ring_history(&counts);
        self.tables = counts;
    }

    /// Clears the moved slots the walk in `counts` found without divergent flows, drops the
    /// retained rings whose retention ended, and gives the next walk its checks.
    fn update_ring_history(&mut self, counts: &TableCounts) {
        for (vip, version, needed) in &counts.moved {
            match self.dp.maps.keep_moved(*vip, *version, needed) {
                Ok(0) => {}
                Ok(cleared) => tracing::info!(vip, cleared, kept = needed.len(), "moved ring slots without divergent flows cleared"),
                Err(e) => tracing::error!(error = %format!("{e:#}"), vip, "clearing moved ring slots failed"),
            }
        }
        match self.dp.maps.retire_rings(table_walk::now_secs()) {
            Ok(retired) => {
                for key in retired {
                    tracing::info!(vip = ?key, "retained ring dropped: its retention ended");
                }
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "dropping retained rings failed"),
        }
        if let Ok(mut checks) = self.moved_checks.lock() {
            *checks = (self.dp.maps.moved_checks(), self.dp.maps.hash_seed());
        }
    }

    /// Reloads the configuration file, all or nothing. The new runtime is built on a copy
    /// ([`Runtime::reconfigured`]) and written with [`Agent::switch_to`]: a refused
    /// configuration or a failed map write leaves the running configuration, runtime, maps and
    /// health checks as they were.
    fn reload(&mut self) -> Result<Value, ApiError> {
        let new = config::load(&self.config_path).map_err(|e| ApiError::refused(format!("the configuration is invalid, nothing was changed:\n{e}")))?;
        let diff = config::diff(&self.config, &new);
        if diff.needs_program_reload() {
            return Err(ApiError::refused(format!(
                "changing {} needs a restart of the agent; nothing was changed",
                diff.global_changed.join(", ")
            )));
        }
        let handle = self.netlink.handle();
        // Route lookups are a few netlink round trips; the reload waits for them.
        let problems = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(crate::egress::backends_behind_other_interfaces(&handle, &new))
        })
        .map_err(|e| ApiError::internal(format!("checking the backends' routes: {e:#}; nothing was changed")))?;
        if !problems.is_empty() {
            return Err(ApiError::refused(format!("nothing was changed:\n{}", problems.join("\n"))));
        }
        let (next, changes) = self.runtime.reconfigured(&new).map_err(ApiError::refused)?;
        self.switch_to(next, changes)
            .map_err(|e| ApiError::internal(format!("writing the maps failed, the running configuration is kept: {e:#}")))?;
        tracing::info!(added = ?diff.vips_added, removed = ?diff.vips_removed, changed = ?diff.vips_changed, "configuration reloaded");
        self.dp.maps.set_ring_retention(new.global.ring_retention_secs);
        self.config = new;
        Ok(serde_json::json!({ "ok": true, "added": diff.vips_added, "removed": diff.vips_removed, "changed": diff.vips_changed }))
    }

    fn handle(&mut self, request: Request) -> Result<Value, ApiError> {
        match request {
            Request::Status => to_json(&report::status(self)),
            Request::Stats => to_json(&report::stats(self)),
            Request::Config => to_json(&self.config),
            Request::Explain { src, dst, protocol } => to_json(&explain::explain(&self.runtime, &self.dp, src, dst, &protocol)?),
            Request::Reload => self.reload(),
            Request::Teardown => Err(ApiError::internal("teardown is handled by the agent loop")),
            Request::BackendAdd { vip, backend, weight } => {
                let b = config::BackendConfig { address: backend.ip(), port: backend.port(), weight, state: AdminState::Up };
                self.transact(|rt, ch| rt.add_backend(&vip, &b, ch).map(|_| ()))
            }
            Request::BackendRemove { vip, backend, force } => self.transact(|rt, ch| rt.remove_backend(&vip, backend, force, ch).map(|_| ())),
            Request::BackendState { vip, backend, state, force } => {
                let state = match state.as_str() {
                    "up" => AdminState::Up,
                    "draining" => AdminState::Draining,
                    "down" => AdminState::Down,
                    other => return Err(ApiError::bad_request(format!("unknown state {other:?}: use up, draining or down"))),
                };
                self.transact(|rt, ch| rt.set_admin(&vip, backend, state, force, ch))
            }
            Request::BackendWeight { vip, backend, weight, force } => self.transact(|rt, ch| rt.set_weight(&vip, backend, weight, force, ch)),
            Request::VipAdd { yaml } => {
                let vip = report::parse_vip(&self.config, &yaml)?;
                self.transact(|rt, ch| rt.add_vip(&vip, ch))
            }
            Request::VipRemove { name } => self.transact(|rt, ch| rt.remove_vip(&name, ch)),
        }
    }
}

fn refused(e: OpError) -> ApiError {
    ApiError::refused(e)
}

/// Forwards the program's debug log records to the log (and so tracing) output as they come.
fn read_ebpf_logs(logs: crate::dataplane::EbpfLogs) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // SAFETY: `EbpfLogs` owns the log ring buffer's fd, which stays open and is the one
    // `as_raw_fd` returns for as long as the `AsyncFd` owns the value.
    let mut fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logs, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("watching the program's log buffer: {e}"))?;
    Ok(tokio::spawn(async move {
        while let Ok(mut ready) = fd.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    }))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(ApiError::internal)
}
