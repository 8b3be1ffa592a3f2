//! The host state the agent owns: the VIP addresses on the first interface (the host answers
//! ARP/NDP for them) and the announcement routes a routing daemon exports. Every change to the
//! host's addresses and routes goes through here.
//!
//! The agent says what it wants ([`HostState::set_addresses`], [`HostState::set_routes`]);
//! one task brings the host there, off the agent's loop, through one rtnetlink socket:
//! - It records an item in the instance's record file ([`record::Record`], in
//!   `/run/lb/<instance>/`) before adding it, and drops it from the record once removed, so a
//!   restarted agent, or `lb teardown` without one, knows everything the agent added.
//! - An item the record does not hold is never removed: an address or route that is already on
//!   the host when the agent wants it belongs to someone else and is left alone (reported as
//!   foreign, and tried again slowly in case it goes).
//! - A failed change is retried with backoff ([`record::retry_delay`]) and reported as pending,
//!   never as done.
//! - Recorded items that are still wanted are checked every [`VERIFY_EVERY`] (and at start)
//!   and put back if something removed them.
//!
//! A stopping agent leaves everything in place, as it leaves the data path; only
//! [`HostState::teardown`] (or [`teardown_recorded`]) removes it.

pub mod record;
mod rtnl;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{HostPending, HostStatus};
pub use record::{Item, ROUTE_PROTOCOL};
use record::{Record, Retries, plan};
pub use rtnl::{HostError, Rtnl};

/// How often recorded items that are still wanted are checked, and restored if gone.
pub const VERIFY_EVERY: Duration = Duration::from_secs(10);

/// What the agent wants on the host, in two parts that it sets separately.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Wanted {
    addresses: BTreeSet<Item>,
    routes: BTreeSet<Item>,
}

impl Wanted {
    fn all(&self) -> BTreeSet<Item> {
        self.addresses.union(&self.routes).cloned().collect()
    }
}

/// The agent's handle on the host-state task.
pub struct HostState {
    wanted: watch::Sender<Wanted>,
    report: Arc<Mutex<HostStatus>>,
    teardown: mpsc::Sender<oneshot::Sender<Result<Vec<Item>, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostState {
    /// Reads the record at `record_path` and starts the task that keeps the host as wanted,
    /// through `netlink` (nothing is wanted until the agent says so, and nothing is changed
    /// before).
    pub fn start(record_path: PathBuf, netlink: crate::netlink::Handle) -> anyhow::Result<HostState> {
        let record = Record::load(&record_path).with_context(|| {
            format!(
                "the record of what the agent added to the host is unreadable; check {} against the host and remove it",
                record_path.display()
            )
        })?;
        let rtnl = Rtnl::new(netlink);
        let (wanted, wanted_rx) = watch::channel(Wanted::default());
        let report = Arc::new(Mutex::new(HostStatus { record: record_path.display().to_string(), ..HostStatus::default() }));
        let (teardown, teardown_rx) = mpsc::channel(1);
        let task = Reconciler { rtnl, record, record_path, retries: Retries::default(), report: report.clone(), started: false };
        let task = tokio::spawn(task.run(wanted_rx, teardown_rx));
        Ok(HostState { wanted, report, teardown, task })
    }

    /// Wants exactly `addresses` on `interface` (empty: none).
    pub fn set_addresses(&self, interface: &str, addresses: impl IntoIterator<Item = IpAddr>) {
        let items: BTreeSet<Item> = addresses.into_iter().map(|address| Item::Address { interface: interface.to_owned(), address }).collect();
        self.wanted.send_modify(|w| w.addresses = items);
    }

    /// Wants exactly the announcement routes of `addresses` in `table` (`None`: none).
    pub fn set_routes(&self, table: Option<u32>, addresses: impl IntoIterator<Item = IpAddr>) {
        let items: BTreeSet<Item> = match table {
            Some(table) => addresses.into_iter().map(|address| Item::Route { table, address }).collect(),
            None => BTreeSet::new(),
        };
        self.wanted.send_modify(|w| w.routes = items);
    }

    /// What the agent owns on the host, and what it is still trying to change.
    pub fn report(&self) -> HostStatus {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Removes every recorded item and the record; the task stops. Returns what was removed,
    /// or what could not be (then still recorded).
    pub async fn teardown(&self) -> Result<Vec<Item>, String> {
        let (tx, rx) = oneshot::channel();
        self.teardown.send(tx).await.map_err(|_| "the host-state task has stopped".to_owned())?;
        rx.await.map_err(|_| "the host-state task has stopped".to_owned())?
    }
}

/// Removes every item recorded at `record_path` and the record (`lb teardown` without an
/// agent; the caller holds the instance lock). Returns what was removed.
pub async fn teardown_recorded(record_path: &Path) -> anyhow::Result<Vec<Item>> {
    let record = Record::load(record_path)?;
    let netlink = crate::netlink::Netlink::open().context("opening a netlink socket")?;
    let mut reconciler = Reconciler {
        rtnl: Rtnl::new(netlink.handle()),
        record,
        record_path: record_path.to_owned(),
        retries: Retries::default(),
        report: Arc::default(),
        started: true,
    };
    reconciler.remove_all().await.map_err(|e| anyhow::anyhow!(e))
}

/// The task that owns the record and the netlink socket.
struct Reconciler {
    rtnl: Rtnl,
    record: Record,
    record_path: PathBuf,
    retries: Retries,
    report: Arc<Mutex<HostStatus>>,
    /// Whether the agent has said what it wants yet (nothing is changed before).
    started: bool,
}

impl Reconciler {
    async fn run(mut self, mut wanted: watch::Receiver<Wanted>, mut teardown: mpsc::Receiver<oneshot::Sender<Result<Vec<Item>, String>>>) {
        let mut next_verify = Instant::now();
        loop {
            let now = Instant::now();
            if self.started {
                let want = wanted.borrow_and_update().all();
                if now >= next_verify {
                    self.verify(&want).await;
                    next_verify = now + VERIFY_EVERY;
                }
                self.reconcile(&want).await;
            }
            let wake = self.retries.next().map_or(next_verify, |r| r.min(next_verify));
            tokio::select! {
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return; // The agent is stopping: everything stays.
                    }
                    self.started = true;
                }
                _ = tokio::time::sleep_until(wake.into()), if self.started => {}
                Some(reply) = teardown.recv() => {
                    let _ = reply.send(self.remove_all().await);
                    return;
                }
            }
        }
    }

    fn save(&self) -> Result<(), String> {
        self.record.save(&self.record_path).map_err(|e| format!("{e:#}"))
    }

    /// One pass of the plan from the record to `want`: each item due is tried once.
    async fn reconcile(&mut self, want: &BTreeSet<Item>) {
        let plan = plan(&self.record.items, want);
        self.retries.retain_plan(&plan);
        let now = Instant::now();
        let due: Vec<Item> = plan.remove.iter().filter(|i| self.retries.due(i, now)).cloned().collect();
        for item in &due {
            match self.rtnl.remove(item).await {
                Ok(()) => {
                    self.record.items.remove(item);
                    match self.save() {
                        Ok(()) => {
                            self.retries.clear(item);
                            tracing::info!(%item, "removed from the host");
                        }
                        Err(e) => {
                            self.record.items.insert(item.clone());
                            self.retries.fail(item, now, e, false);
                        }
                    }
                }
                Err(e) => {
                    let r = self.retries.fail(item, now, e.to_string(), false);
                    tracing::warn!(%item, error = %e, failures = r.failures, "removing from the host failed; will retry");
                }
            }
        }
        let due: Vec<Item> = plan.add.iter().filter(|i| self.retries.due(i, now)).cloned().collect();
        for item in &due {
            // Recorded before it is added: an agent killed in between still knows it.
            self.record.items.insert(item.clone());
            if let Err(e) = self.save() {
                self.record.items.remove(item);
                let r = self.retries.fail(item, now, e.clone(), false);
                tracing::warn!(%item, error = %e, failures = r.failures, "cannot record an addition; not adding it, will retry");
                continue;
            }
            let result = self.rtnl.add(item).await;
            if result.is_ok() {
                self.retries.clear(item);
                tracing::info!(%item, "added to the host");
                continue;
            }
            self.record.items.remove(item);
            if let Err(e) = self.save() {
                tracing::error!(%item, error = %e, "cannot update the record after a failed addition");
            }
            match result {
                Err(HostError::Exists) => {
                    let first = self.retries.iter().all(|(i, _)| i != item);
                    self.retries.fail(item, now, "on the host, but not added by the agent: left alone".into(), true);
                    if first {
                        tracing::warn!(%item, "already on the host but not added by this agent: it is left alone and not removed later");
                    }
                }
                Err(e) => {
                    let r = self.retries.fail(item, now, e.to_string(), false);
                    tracing::warn!(%item, error = %e, failures = r.failures, "adding to the host failed; will retry");
                }
                Ok(()) => unreachable!("handled above"),
            }
        }
        self.publish(want);
    }

    /// Puts back recorded items that are still wanted but were removed behind the agent's back.
    async fn verify(&mut self, want: &BTreeSet<Item>) {
        for item in self.record.items.intersection(want) {
            match self.rtnl.add(item).await {
                Ok(()) => tracing::warn!(%item, "was missing from the host although the agent had added it; restored"),
                Err(HostError::Exists) => {}
                Err(e) => tracing::warn!(%item, error = %e, "checking an item the agent added failed"),
            }
        }
    }

    /// Removes everything recorded (a few quick tries each) and then the record.
    async fn remove_all(&mut self) -> Result<Vec<Item>, String> {
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        for item in self.record.items.clone() {
            let mut result = self.rtnl.remove(&item).await;
            for _ in 0..2 {
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                result = self.rtnl.remove(&item).await;
            }
            match result {
                Ok(()) => {
                    self.record.items.remove(&item);
                    tracing::info!(%item, "removed from the host");
                    removed.push(item);
                }
                Err(e) => errors.push(format!("{item}: {e}")),
            }
        }
        if !errors.is_empty() {
            self.save()?;
            return Err(format!("could not remove {} (still recorded in {})", errors.join("; "), self.record_path.display()));
        }
        match std::fs::remove_file(&self.record_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("removing {}: {e}", self.record_path.display())),
            _ => {}
        }
        Ok(removed)
    }

    fn publish(&self, want: &BTreeSet<Item>) {
        let now = Instant::now();
        let mut report = HostStatus { record: self.record_path.display().to_string(), ..HostStatus::default() };
        let waiting: BTreeSet<&Item> = self.retries.iter().map(|(i, _)| i).collect();
        report.owned = self.record.items.iter().filter(|i| !waiting.contains(i)).map(Item::to_string).collect();
        for (item, r) in self.retries.iter() {
            if r.foreign {
                report.foreign.push(item.to_string());
            } else {
                report.pending.push(HostPending {
                    item: item.to_string(),
                    action: if want.contains(item) { "add" } else { "remove" }.into(),
                    error: r.error.clone(),
                    failures: r.failures,
                    retry_in_ms: r.at.saturating_duration_since(now).as_millis() as u64,
                });
            }
        }
        if let Ok(mut shared) = self.report.lock() {
            *shared = report;
        }
    }
}
