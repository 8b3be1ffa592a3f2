//! The agent (`lb run`): loads and attaches the data path, keeps its maps in step with the
//! configuration, the health checks and the operator's commands, and serves the admin API and
//! the metrics. One loop owns all state; everything else talks to it through channels.

mod announce;
mod explain;
mod report;
pub mod state;
mod vip_addresses;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::programs::links::{FdLink, PinnedLink};
use lb_common::maps::{Backend, META_LAYOUT, META_PROGRAM_HASH};
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
    metrics, neighbours,
};
use state::{Changes, OpError, Runtime};
use vip_addresses::VipAddresses;

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
    announcer: announce::Announcer,
    checker: Checker,
    addresses: VipAddresses,
    interfaces: Vec<(String, String)>,
    started: Instant,
    health: HealthStats,
    rates: report::Rates,
}

/// Runs the agent until SIGTERM, SIGINT or `lb teardown`.
///
/// The data path lives in bpffs (`global.instance`, [`Pins`]): a pinned data path of the same
/// layout and sizes is adopted (its connection table, rings, backends, health and counters
/// carry on, and this build's program replaces the running one on the same links), otherwise a
/// new one is created and pinned. Stopping leaves it forwarding with the last maps, VIP
/// addresses included; only [`Request::Teardown`] (or [`teardown`] without an agent) removes it.
pub async fn run(config: Config, opts: Options) -> anyhow::Result<()> {
    let pins = Pins::of_instance(&config.global.instance);
    // The program's own debug logs (rare events) only when the agent logs at debug level.
    let logger = tracing::enabled!(tracing::Level::DEBUG).then(log::logger);
    let object = match &opts.program {
        Some(path) => std::borrow::Cow::Owned(std::fs::read(path).with_context(|| format!("reading the XDP object {}", path.display()))?),
        None => std::borrow::Cow::Borrowed(crate::dataplane::PROGRAM),
    };
    let (mut dp, adopted) = Dataplane::open(&config.sizing(), &pins, logger, &object)?;
    if adopted {
        tracing::info!(pin_dir = %pins.dir().display(), "adopting the pinned data path: its connection table, rings, backends and counters carry on");
    } else {
        tracing::info!(pin_dir = %pins.dir().display(), "new data path pinned");
    }
    let ebpf_logs = match dp.take_debug_logs() {
        Some(logs) => Some(read_ebpf_logs(logs)?),
        None => None,
    };
    // XDP sends through a VLAN device's parent: the data path tags frames for it.
    for vlan in neighbours::vlan_devices(&config.global.interfaces) {
        dp.maps.set_vlan_egress(vlan.ifindex, vlan.parent, vlan.vlan_id)?;
        tracing::info!(ifindex = vlan.ifindex, parent = vlan.parent, vlan = vlan.vlan_id, "VLAN device on an XDP interface");
    }
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
    let counter = table_walk::spawn_counter(dp.maps.table_fds()?, REFRESH, stop_counting.clone(), counts_tx)?;
    let announce_on = config.global.interfaces[0].clone();
    let mut agent = Agent {
        config_path: opts.config_path,
        runtime,
        dp,
        pins,
        data_path: DataPathStatus::default(),
        tables: TableCounts::default(),
        announcer: announce::Announcer::new(config.global.announce_table),
        checker: Checker::new(health_tx),
        addresses: match config.global.vip_addresses {
            VipAddressOwner::Agent => VipAddresses::new(announce_on),
            VipAddressOwner::External => VipAddresses::external(announce_on),
        },
        interfaces: Vec::new(),
        started: Instant::now(),
        health: HealthStats::default(),
        rates: report::Rates::default(),
        config,
    };
    // The maps first: a new program starts with them filled.
    agent.apply(changes).context("installing the configuration")?;
    agent.attach(opts.mode)?;
    agent.announce();
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
                    let answer = agent.teardown();
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
    for task in [metrics, ebpf_logs].into_iter().flatten() {
        task.abort();
    }
    let _ = std::fs::remove_file(&agent.config.global.admin_socket);
    Ok(())
}

/// What [`teardown`] removed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Removed {
    /// The bpffs directory.
    pub pin_dir: String,
    /// Interfaces the program was detached from.
    pub detached: Vec<String>,
    /// VIP addresses removed from the first interface.
    pub addresses: Vec<std::net::IpAddr>,
}

/// Removes the data path of `config`'s instance without an agent: the VIP addresses its maps
/// and the configuration name (from the first interface), then every pinned link (the program
/// is detached) and map. Nothing pinned is not an error.
pub fn teardown(config: &Config) -> anyhow::Result<Removed> {
    let pins = Pins::of_instance(&config.global.instance);
    let mut addresses: Vec<std::net::IpAddr> = pins.vip_addresses();
    addresses.extend(config.vips.iter().map(|v| v.address));
    addresses.sort();
    addresses.dedup();
    if let Some(table) = config.global.announce_table {
        announce::flush(table);
    }
    if config.global.vip_addresses == VipAddressOwner::External {
        addresses.clear();
    }
    VipAddresses::owning(config.global.interfaces[0].clone(), addresses.iter().copied()).clear();
    let detached = pins.remove()?;
    Ok(Removed { pin_dir: pins.dir().display().to_string(), detached, addresses })
}

impl Agent {
    /// Attaches the program to every configured interface through its pinned link (replacing
    /// the running program where there is one), detaches it from interfaces no longer
    /// configured, and records what runs for `lb status`.
    fn attach(&mut self, mode: Option<XdpMode>) -> anyhow::Result<()> {
        let mode = mode.unwrap_or(self.config.global.xdp_mode);
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
        };
        Ok(())
    }

    /// Removes the data path and the VIP addresses ([`Request::Teardown`]); the agent stops
    /// after answering.
    fn teardown(&mut self) -> Result<Value, ApiError> {
        self.announcer.withdraw_all();
        self.addresses.clear();
        let detached = self.pins.remove().map_err(|e| ApiError::internal(format!("{e:#}")))?;
        self.dp.release_links();
        tracing::info!(pin_dir = %self.pins.dir().display(), ?detached, "data path removed (program detached, maps unpinned, VIP addresses removed); stopping");
        Ok(serde_json::json!({ "ok": true, "pin_dir": self.pins.dir().display().to_string(), "detached": detached }))
    }

    /// Writes what `changes` says to the maps, the VIP addresses and the health checker.
    fn apply(&mut self, changes: Changes) -> anyhow::Result<()> {
        for (key, _, backends) in &changes.removed_vips {
            self.dp.maps.remove_vip(key)?;
            for &id in backends {
                self.dp.maps.set_backend(id, &Backend::default())?;
                self.checker.remove(id);
            }
        }
        for &id in &changes.removed_backends {
            self.dp.maps.set_backend(id, &Backend::default())?;
            self.checker.remove(id);
        }
        for &vip_id in &changes.vips {
            let Some(vip) = self.runtime.vip_by_id(vip_id) else {
                continue;
            };
            let started = Instant::now();
            self.dp.maps.apply_service(&vip.service())?;
            self.health.last_table_write_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        self.addresses.sync(self.runtime.vips.iter().map(|v| v.config.address));
        for &id in &changes.probe {
            let Some((vip, b)) = self.runtime.backend_by_id(id) else {
                continue;
            };
            match report::probe_target(vip, b) {
                Some(target) => self.checker.add(target, b.generation),
                None => self.checker.remove(id),
            }
        }
        if !self.interfaces.is_empty() {
            self.announce();
        }
        Ok(())
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
        }
        Ok(())
    }

    /// Publishes the announcement decision of every VIP address.
    fn announce(&mut self) {
        let attached = self.self_check();
        let decisions = announce::decide(&self.runtime.vips, attached.as_ref().map(|_| ()).map_err(String::as_str));
        self.announcer.apply(decisions);
    }

    /// Moves to `next`, whose differences from the running runtime are `changes`, keeping it
    /// only if the maps took every write.
    ///
    /// Map writes are not transactional. When one fails midway, the running runtime is kept
    /// and written back over what was already written ([`Runtime::rollback`]: the VIPs and
    /// backend slots `next` added are removed, every running VIP is written again, the probes
    /// that were touched are restarted) and the error is returned. Should writing back fail
    /// too, that is logged: the maps may then differ from the runtime until its VIPs are
    /// written again.
    fn switch_to(&mut self, next: Runtime, changes: Changes) -> anyhow::Result<()> {
        let mut kept = std::mem::replace(&mut self.runtime, next);
        let Err(e) = self.apply(changes.clone()) else {
            return Ok(());
        };
        let undo = kept.rollback(&self.runtime, &changes);
        self.runtime = kept;
        if let Err(undo_error) = self.apply(undo) {
            tracing::error!(error = %format!("{undo_error:#}"), "writing the running configuration back to the maps failed; they may differ from it");
        }
        Err(e)
    }

    /// Applies `changes` and answers the caller.
    fn commit(&mut self, changes: Changes) -> Result<Value, ApiError> {
        self.apply(changes).map_err(|e| ApiError::internal(format!("{e:#}")))?;
        Ok(serde_json::json!({ "ok": true }))
    }

    /// Records a batch of health transitions and writes the VIPs they change. A transition of
    /// a backend that is gone (removed, or its slot reused: another generation) is ignored.
    fn on_health(&mut self, batch: Vec<Transition>) {
        let mut changes = Changes::default();
        let batch: Vec<Transition> = batch
            .into_iter()
            .filter(|t| {
                let current = self.runtime.set_health(t.id, t.generation, t.health, &mut changes);
                if !current {
                    tracing::debug!(backend = t.id, generation = t.generation, health = %t.health, "transition of a removed backend ignored");
                }
                current
            })
            .collect();
        self.health.transitions += batch.len() as u64;
        let swapped = !changes.vips.is_empty();
        if let Err(e) = self.apply(changes) {
            tracing::error!(error = %e, "writing the maps after a health change failed");
            return;
        }
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

    fn refresh(&mut self) {
        let mut changes = Changes::default();
        let ids: Vec<(u32, std::net::IpAddr)> = self
            .runtime
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| (b.id, b.address)))
            .collect();
        for (id, addr) in ids {
            if let Some(hop) = neighbours::resolve(addr) {
                self.runtime.set_hop(id, hop, &mut changes);
            }
        }
        if let Err(e) = self.apply(changes) {
            tracing::error!(error = %e, "writing next hops failed");
        }
        self.announce();
        if let Err(e) = self.dp.maps.heartbeat() {
            tracing::error!(error = %format!("{e:#}"), "writing the heartbeat failed: lb check will not answer from the data path");
        }
        self.rates.sample(&self.runtime, &self.dp.maps);
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
        self.tables = counts;
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
        let (next, changes) = self.runtime.reconfigured(&new).map_err(ApiError::refused)?;
        self.switch_to(next, changes)
            .map_err(|e| ApiError::internal(format!("writing the maps failed, the running configuration is kept: {e:#}")))?;
        tracing::info!(added = ?diff.vips_added, removed = ?diff.vips_removed, changed = ?diff.vips_changed, "configuration reloaded");
        self.config = new;
        Ok(serde_json::json!({ "ok": true, "added": diff.vips_added, "removed": diff.vips_removed, "changed": diff.vips_changed }))
    }

    fn handle(&mut self, request: Request) -> Result<Value, ApiError> {
        let mut changes = Changes::default();
        match request {
            Request::Status => to_json(&report::status(self)),
            Request::Stats => to_json(&report::stats(self)),
            Request::Config => to_json(&self.config),
            Request::Explain { src, dst, protocol } => to_json(&explain::explain(&self.runtime, &self.dp, src, dst, &protocol)?),
            Request::Reload => self.reload(),
            Request::Teardown => Err(ApiError::internal("teardown is handled by the agent loop")),
            Request::BackendAdd { vip, backend, weight } => {
                let b = config::BackendConfig { address: backend.ip(), port: backend.port(), weight, state: AdminState::Up };
                self.runtime.add_backend(&vip, &b, &mut changes).map_err(refused)?;
                self.commit(changes)
            }
            Request::BackendRemove { vip, backend, force } => {
                self.runtime.remove_backend(&vip, backend, force, &mut changes).map_err(refused)?;
                self.commit(changes)
            }
            Request::BackendState { vip, backend, state, force } => {
                let state = match state.as_str() {
                    "up" => AdminState::Up,
                    "draining" => AdminState::Draining,
                    "down" => AdminState::Down,
                    other => return Err(ApiError::bad_request(format!("unknown state {other:?}: use up, draining or down"))),
                };
                self.runtime.set_admin(&vip, backend, state, force, &mut changes).map_err(refused)?;
                self.commit(changes)
            }
            Request::BackendWeight { vip, backend, weight, force } => {
                self.runtime.set_weight(&vip, backend, weight, force, &mut changes).map_err(refused)?;
                self.commit(changes)
            }
            Request::VipAdd { yaml } => {
                let vip = report::parse_vip(&self.config, &yaml)?;
                self.runtime.add_vip(&vip, &mut changes).map_err(refused)?;
                self.commit(changes)
            }
            Request::VipRemove { name } => {
                self.runtime.remove_vip(&name, &mut changes).map_err(refused)?;
                self.commit(changes)
            }
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
