//! Probes every backend concurrently, one Tokio task per backend, and reports health flips.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::dsr::{self, Route, ViaVip};
use super::lag::{self, LoopLag};
use super::probe::{ProbeKind, ProbeOutcome, ProbeSpec, probe};
use super::state::{Health, HealthState};

/// Shortest wait between two probes of one target, whatever its configured intervals.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Probes the agent could not make, over all targets since the process started.
static LOCAL_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Probes that failed for a reason of the agent's own (see [`super::probe::is_local`]: no
/// route, a local firewall, no descriptors, memory or local port; or a timeout while the
/// agent's loop lagged), over all targets, removed ones included, since the process started.
/// These count against no backend.
pub fn local_errors_total() -> u64 {
    LOCAL_ERRORS.load(Ordering::Relaxed)
}

/// A backend to probe and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Backend slot id, echoed in transitions and snapshots.
    pub id: u32,
    /// Address the probes connect to (the backend's endpoint for a probe through the VIP).
    pub addr: SocketAddr,
    /// The probe.
    pub spec: ProbeSpec,
    /// A probe through the VIP (`health_check.target: vip` of a direct server return VIP): a
    /// TCP handshake with the VIP on the backend, carried as the VIP's packets are
    /// ([`dsr`]); `None` for a probe of `addr` itself.
    pub via: Option<ViaVip>,
    /// The path to the backend when the target is added ([`Checker::set_route`] follows it).
    pub route: Route,
    /// Time between the starts of two probes while the health is settled.
    pub interval: Duration,
    /// Time between the starts of two probes while a flip is in progress.
    pub fast_interval: Duration,
    /// Consecutive successes that bring a down target up.
    pub rise: u32,
    /// Consecutive failures that bring an up target down.
    pub fall: u32,
    /// Health assumed before the first probe.
    pub initial: Health,
}

/// A target whose health flipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The target's id.
    pub id: u32,
    /// The generation the target was added with: a transition still queued when its target
    /// is replaced by another one with the same id is told apart by it.
    pub generation: u32,
    /// Its new health.
    pub health: Health,
    /// Detail of the probe that caused the flip.
    pub detail: String,
    /// When the probe that caused the flip started.
    pub failed_probe_at: Instant,
}

/// Health and probe counters of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    /// The target's id.
    pub id: u32,
    /// Address the probes connect to.
    pub addr: SocketAddr,
    /// Current health.
    pub health: Health,
    /// Detail of the latest probe (`not probed yet` before the first one ends).
    pub detail: String,
    /// Successful probes in a row, up to the latest one.
    pub consecutive_ok: u32,
    /// Failed probes in a row, up to the latest one.
    pub consecutive_fail: u32,
    /// Probes completed since the target was added.
    pub probes: u64,
    /// Failed probes since the target was added.
    pub failures: u64,
    /// Probes that failed on the agent's side since the target was added (no route, a local
    /// firewall, no descriptors or memory, a timeout while the agent lagged); counted neither
    /// as probes nor as failures.
    pub local_errors: u64,
}

/// A running target: its probing task stops when this is dropped.
#[derive(Debug)]
struct Running {
    status: Arc<Mutex<TargetStatus>>,
    route: Arc<Mutex<Route>>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Probes a changing set of targets and sends their health flips on a channel.
///
/// Dropping the checker stops every probe. A transition already sent stays in the channel
/// after its target is removed.
#[derive(Debug)]
pub struct Checker {
    events: UnboundedSender<Transition>,
    targets: HashMap<u32, Running>,
    lag: Arc<LoopLag>,
    /// The loop-lag monitor, started with the first target.
    monitor: Option<Monitor>,
}

/// The loop-lag monitor's task, stopped when dropped.
#[derive(Debug)]
struct Monitor(JoinHandle<()>);

impl Drop for Monitor {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checker {
    /// Starts with no targets; transitions are sent on `events`.
    pub fn new(events: UnboundedSender<Transition>) -> Self {
        Self {
            events,
            targets: HashMap::new(),
            lag: Arc::default(),
            monitor: None,
        }
    }

    /// Starts probing a target (replacing any existing target with the same id); the first
    /// probe runs at once. Its transitions carry `generation` (for a backend, its slot's
    /// generation), so that those sent before a replacement can be recognised and ignored.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn add(&mut self, target: Target, generation: u32) {
        let state = HealthState::new(target.initial, target.rise, target.fall);
        let status = Arc::new(Mutex::new(TargetStatus {
            id: target.id,
            addr: target.addr,
            health: state.health(),
            detail: "not probed yet".to_owned(),
            consecutive_ok: 0,
            consecutive_fail: 0,
            probes: 0,
            failures: 0,
            local_errors: 0,
        }));
        if self.monitor.is_none() {
            self.monitor = Some(Monitor(lag::spawn_monitor(self.lag.clone())));
        }
        let route = Arc::new(Mutex::new(target.route));
        let task = tokio::spawn(run(
            target.clone(),
            generation,
            state,
            Shared { status: status.clone(), route: route.clone() },
            self.events.clone(),
            self.lag.clone(),
        ));
        // Replacing the entry drops the old one, which aborts its task.
        self.targets.insert(target.id, Running { status, route, task });
    }

    /// Records a new path to target `id`'s backend, for its next probes through the VIP; does
    /// nothing for an unknown id.
    pub fn set_route(&mut self, id: u32, route: Route) {
        if let Some(r) = self.targets.get(&id) {
            *r.route.lock().unwrap_or_else(|p| p.into_inner()) = route;
        }
    }

    /// Stops probing a target; does nothing for an unknown id.
    pub fn remove(&mut self, id: u32) {
        self.targets.remove(&id);
    }

    /// Current health of every target, sorted by id.
    pub fn snapshot(&self) -> Vec<TargetStatus> {
        let mut all: Vec<_> = self
            .targets
            .values()
            .map(|r| lock(&r.status).clone())
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }
}

fn lock(status: &Mutex<TargetStatus>) -> MutexGuard<'_, TargetStatus> {
    // The data stays consistent even if a holder panicked: every update is a plain store.
    status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a probing task shares with the checker.
struct Shared {
    status: Arc<Mutex<TargetStatus>>,
    route: Arc<Mutex<Route>>,
}

/// Probes `target` once, at its address or through the VIP.
async fn probe_once(target: &Target, route: &Mutex<Route>) -> ProbeOutcome {
    match target.via {
        None => probe(target.addr, &target.spec).await,
        Some(via) => {
            let route = *route.lock().unwrap_or_else(|p| p.into_inner());
            dsr::probe(target.addr.ip(), via, route, target.spec.timeout).await
        }
    }
}

impl Target {
    /// How the target is probed, for operators: `tcp via tunnel to VIP 10.0.0.10:80`, or
    /// `http GET /health to address 10.0.11.2:8080`. `dsr` says the backend's VIP is a direct
    /// server return one: a probe of its address is then marked as not showing that the
    /// backend serves the VIP.
    pub fn describe(&self, dsr: bool) -> String {
        if let Some(via) = self.via {
            return format!("tcp via {} to VIP {}", via.carrier, via.vip);
        }
        let what = match &self.spec.kind {
            ProbeKind::Tcp => "tcp".to_owned(),
            ProbeKind::Http { method, path, .. } => format!("http {method} {path}"),
        };
        let plain = if dsr { " (plain: does not show the VIP is served)" } else { "" };
        format!("{what} to address {}{plain}", self.addr)
    }
}

async fn run(target: Target, generation: u32, mut state: HealthState, shared: Shared, events: UnboundedSender<Transition>, lag: Arc<LoopLag>) {
    let Shared { status, route } = shared;
    let mut local_streak = 0u32;
    loop {
        let started = Instant::now();
        let mut outcome = probe_once(&target, &route).await;
        blame_lag(&mut outcome, target.spec.timeout, lag.since(started));
        let flip = judge(&target, &mut state, &status, &outcome, &mut local_streak);
        if let Some(health) = flip {
            tracing::info!(
                backend = target.id,
                addr = %target.addr,
                health = %health,
                detail = %outcome.detail,
                "backend health changed"
            );
            // A closed receiver only means nobody listens any more; the snapshot stays live.
            let _ = events.send(Transition {
                id: target.id,
                generation,
                health,
                detail: outcome.detail,
                failed_probe_at: started,
            });
        }
        let wait = if state.is_changing() {
            target.fast_interval
        } else {
            target.interval
        };
        let next = started + wait.max(MIN_INTERVAL);
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
    }
}

/// Makes a timed-out probe local when the agent ran late while it ran: its own timer fired
/// late (its latency beyond `timeout`), or the loop was `seen` late ([`lag::starved`]).
fn blame_lag(outcome: &mut ProbeOutcome, timeout: Duration, seen: Option<Duration>) {
    if !outcome.timed_out || outcome.local {
        return;
    }
    let own = outcome.latency.saturating_sub(timeout);
    if let Some(late) = lag::starved(own, seen) {
        outcome.local = true;
        outcome.detail = format!(
            "agent could not probe: {} while the agent's loop ran {} ms late",
            outcome.detail,
            late.as_millis()
        );
    }
}

/// Records one probe outcome; returns the target's new health if it flipped. A probe the
/// agent could not make (`outcome.local`) counts against the agent, never against the target.
fn judge(
    target: &Target,
    state: &mut HealthState,
    status: &Mutex<TargetStatus>,
    outcome: &ProbeOutcome,
    local_streak: &mut u32,
) -> Option<Health> {
    if outcome.local {
        local_error(target, status, outcome, local_streak);
        return None;
    }
    if *local_streak > 0 {
        tracing::info!(backend = target.id, addr = %target.addr, failed = *local_streak, "probing again after local errors");
        *local_streak = 0;
    }
    observe(target, state, status, outcome)
}

/// Counts a probe result against the target; returns its new health if it flipped.
fn observe(
    target: &Target,
    state: &mut HealthState,
    status: &Mutex<TargetStatus>,
    outcome: &ProbeOutcome,
) -> Option<Health> {
    let flip = state.observe(outcome.ok);
    {
        let mut s = lock(status);
        s.health = state.health();
        s.detail.clone_from(&outcome.detail);
        s.consecutive_ok = state.consecutive_ok();
        s.consecutive_fail = state.consecutive_fail();
        s.probes += 1;
        s.failures += u64::from(!outcome.ok);
    }
    if !outcome.ok {
        tracing::debug!(
            backend = target.id,
            addr = %target.addr,
            detail = %outcome.detail,
            consecutive_fail = state.consecutive_fail(),
            "health probe failed"
        );
    }
    flip
}

/// Records a probe that failed on the agent's side: the agent's fault, not the target's, so its
/// health and consecutive counts stay as they were. Logged as a warning once per streak.
fn local_error(
    target: &Target,
    status: &Mutex<TargetStatus>,
    outcome: &ProbeOutcome,
    streak: &mut u32,
) {
    LOCAL_ERRORS.fetch_add(1, Ordering::Relaxed);
    {
        let mut s = lock(status);
        s.detail.clone_from(&outcome.detail);
        s.local_errors += 1;
    }
    if *streak == 0 {
        tracing::warn!(
            backend = target.id,
            addr = %target.addr,
            detail = %outcome.detail,
            "health probe failed on the agent's side (a local error, not the backend's): the backend keeps its health"
        );
    } else {
        tracing::debug!(backend = target.id, addr = %target.addr, detail = %outcome.detail, "health probe failed on the agent's side");
    }
    *streak = streak.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    use super::*;
    use crate::health::probe::ProbeKind;
    use crate::health::test_support::{TestServer, http_server, silent_server};

    const BOUND: Duration = Duration::from_secs(2);

    async fn switchable_server() -> (TestServer, Arc<AtomicBool>) {
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let server = http_server(move |_, _| {
            let status = if flag.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "500 Oops"
            };
            vec![format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").into_bytes()]
        })
        .await;
        (server, healthy)
    }

    fn http_target(id: u32, addr: SocketAddr, initial: Health) -> Target {
        Target {
            id,
            addr,
            spec: ProbeSpec {
                kind: ProbeKind::Http {
                    method: "GET",
                    path: "/health".to_owned(),
                    host: None,
                    expect_status: vec![200],
                },
                timeout: Duration::from_millis(100),
            },
            via: None,
            route: Route::default(),
            interval: Duration::from_millis(100),
            fast_interval: Duration::from_millis(50),
            rise: 2,
            fall: 3,
            initial,
        }
    }

    async fn next_event(rx: &mut UnboundedReceiver<Transition>) -> Transition {
        tokio::time::timeout(BOUND, rx.recv())
            .await
            .expect("no transition within the bound")
            .expect("channel closed")
    }

    /// Waits, bounded, until `cond` holds.
    async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cond()
    }

    #[tokio::test]
    async fn goes_down_and_up_again_and_stops_when_removed() {
        let (server, healthy) = switchable_server().await;
        let (tx, mut rx) = unbounded_channel();
        let mut checker = Checker::new(tx);
        checker.add(http_target(7, server.addr, Health::Up), 1);

        assert!(eventually(|| checker.snapshot()[0].probes >= 2).await);
        assert!(
            rx.try_recv().is_err(),
            "a healthy target that starts up does not flip"
        );
        let s = &checker.snapshot()[0];
        assert_eq!((s.id, s.addr, s.health), (7, server.addr, Health::Up));

        healthy.store(false, Ordering::SeqCst);
        let switched = Instant::now();
        let down = next_event(&mut rx).await;
        assert_eq!((down.id, down.health), (7, Health::Down));
        // On a loaded machine the last probe may hit its 100 ms timeout instead.
        assert!(
            down.detail == "HTTP 500 (expected 200)" || down.detail.starts_with("timed out"),
            "{down:?}"
        );
        assert!(down.failed_probe_at >= switched && down.failed_probe_at <= Instant::now());
        assert!(switched.elapsed() < BOUND);
        let s = &checker.snapshot()[0];
        assert_eq!(s.health, Health::Down);
        assert!(s.consecutive_fail >= 3 && s.failures >= 3, "{s:?}");

        healthy.store(true, Ordering::SeqCst);
        let switched = Instant::now();
        let up = next_event(&mut rx).await;
        assert_eq!(
            (up.id, up.health, up.detail.as_str()),
            (7, Health::Up, "HTTP 200")
        );
        assert!(switched.elapsed() < BOUND);
        assert_eq!(checker.snapshot()[0].health, Health::Up);

        checker.remove(7);
        assert!(checker.snapshot().is_empty());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = server.requests();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(server.requests(), seen, "probes continued after remove()");
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn initially_down_target_rises() {
        let server = silent_server().await;
        let (tx, mut rx) = unbounded_channel();
        let mut checker = Checker::new(tx);
        let mut target = http_target(3, server.addr, Health::Down);
        target.spec.kind = ProbeKind::Tcp;
        checker.add(target, 5);
        assert_eq!(checker.snapshot()[0].health, Health::Down);
        let up = next_event(&mut rx).await;
        assert_eq!(
            (up.id, up.generation, up.health, up.detail.as_str()),
            (3, 5, Health::Up, "TCP connect"),
            "the transition carries the generation the target was added with"
        );
        let s = &checker.snapshot()[0];
        assert!(s.consecutive_ok >= 2 && s.probes >= 2, "{s:?}");
    }

    #[tokio::test]
    async fn first_probe_runs_at_once_then_waits_for_the_interval() {
        let (server, _) = switchable_server().await;
        let (tx, _rx) = unbounded_channel();
        let mut checker = Checker::new(tx);
        let mut target = http_target(1, server.addr, Health::Up);
        target.interval = Duration::from_secs(3600);
        checker.add(target, 1);
        assert!(eventually(|| server.requests() == 1).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(server.requests(), 1);
        assert_eq!(checker.snapshot()[0].probes, 1);
    }

    #[tokio::test]
    async fn add_replaces_and_drop_stops_everything() {
        let (server, _) = switchable_server().await;
        let (other, _) = switchable_server().await;
        let (tx, _rx) = unbounded_channel();
        let mut checker = Checker::new(tx);
        checker.add(http_target(1, server.addr, Health::Up), 1);
        checker.add(http_target(2, server.addr, Health::Up), 1);
        checker.add(http_target(1, other.addr, Health::Up), 2);
        let snapshot = checker.snapshot();
        assert_eq!(
            snapshot.iter().map(|s| (s.id, s.addr)).collect::<Vec<_>>(),
            [(1, other.addr), (2, server.addr)]
        );
        assert!(eventually(|| other.requests() >= 2).await);

        drop(checker);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = (server.requests(), other.requests());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            (server.requests(), other.requests()),
            seen,
            "probes continued after drop"
        );
    }

    #[test]
    fn local_errors_never_take_a_backend_down() {
        let mut target = http_target(9, "10.0.0.9:80".parse().unwrap(), Health::Up);
        target.fall = 1;
        let mut state = HealthState::new(Health::Up, target.rise, target.fall);
        let status = Mutex::new(TargetStatus {
            id: 9,
            addr: target.addr,
            health: Health::Up,
            detail: String::new(),
            consecutive_ok: 0,
            consecutive_fail: 0,
            probes: 0,
            failures: 0,
            local_errors: 0,
        });
        let outcome = |ok, local, detail: &str| ProbeOutcome {
            ok,
            local,
            timed_out: false,
            detail: detail.to_owned(),
            latency: Duration::ZERO,
        };
        let before = local_errors_total();
        let mut streak = 0;
        let emfile = outcome(
            false,
            true,
            "agent could not probe: connect: too many open files",
        );
        for _ in 0..10 {
            assert_eq!(
                judge(&target, &mut state, &status, &emfile, &mut streak),
                None,
                "no fall step"
            );
        }
        let s = lock(&status).clone();
        assert_eq!(
            (
                s.health,
                s.consecutive_fail,
                s.failures,
                s.probes,
                s.local_errors
            ),
            (Health::Up, 0, 0, 0, 10)
        );
        assert_eq!(s.detail, emfile.detail);
        assert!(
            local_errors_total() >= before + 10,
            "the process-wide counter counts them"
        );
        assert_eq!((state.health(), state.consecutive_fail()), (Health::Up, 0));
        let refused = outcome(false, false, "connect: connection refused");
        assert_eq!(
            judge(&target, &mut state, &status, &refused, &mut streak),
            Some(Health::Down),
            "a real failure still counts"
        );
        assert_eq!((streak, lock(&status).failures), (0, 1));
    }

    /// One probe (the interval is an hour) of a server that never answers, on a one-thread
    /// runtime whose thread is blocked for `block` from 30 ms after the probe started (as
    /// a starved agent or a synchronous call on its loop would be): the target's status after
    /// that probe, and the transitions sent.
    fn one_timeout(timeout: Duration, block: Option<Duration>) -> (TargetStatus, Vec<Transition>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let server = silent_server().await;
            let (tx, mut rx) = unbounded_channel();
            let mut checker = Checker::new(tx);
            let mut target = http_target(5, server.addr, Health::Up);
            target.spec.timeout = timeout;
            target.interval = Duration::from_secs(3600);
            target.fall = 1;
            checker.add(target, 1);
            if let Some(block) = block {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    std::thread::sleep(block);
                });
            }
            let done = |s: &TargetStatus| s.probes + s.local_errors >= 1;
            let mut status = checker.snapshot()[0].clone();
            for _ in 0..300 {
                if done(&status) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                status = checker.snapshot()[0].clone();
            }
            assert!(done(&status), "no probe ended within 3 s: {status:?}");
            let mut sent = Vec::new();
            while let Ok(t) = rx.try_recv() {
                sent.push(t);
            }
            (status, sent)
        })
    }

    #[test]
    fn a_timeout_while_the_loop_was_blocked_is_a_local_error() {
        let block = Duration::from_millis(400);
        // The probe's own timer fires 300 ms late.
        let (s, sent) = one_timeout(Duration::from_millis(100), Some(block));
        assert_eq!((s.health, s.probes, s.failures, s.local_errors), (Health::Up, 0, 0, 1), "{s:?}");
        assert!(s.detail.starts_with("agent could not probe: timed out after 100ms while the agent's loop ran "), "{s:?}");
        assert!(sent.is_empty(), "{sent:?}");
        // The loop was blocked, then caught up before the probe's deadline: the monitor saw it.
        let (s, sent) = one_timeout(Duration::from_millis(900), Some(block));
        assert_eq!((s.health, s.probes, s.failures, s.local_errors), (Health::Up, 0, 0, 1), "{s:?}");
        assert!(s.detail.starts_with("agent could not probe: timed out after 900ms while the agent's loop ran "), "{s:?}");
        assert!(sent.is_empty(), "{sent:?}");
    }

    #[test]
    fn a_timeout_of_a_loop_on_time_is_the_backends() {
        let (s, sent) = one_timeout(Duration::from_millis(100), None);
        assert_eq!((s.health, s.probes, s.failures, s.local_errors), (Health::Down, 1, 1, 0), "{s:?}");
        assert_eq!(s.detail, "timed out after 100ms");
        assert_eq!(sent.iter().map(|t| t.health).collect::<Vec<_>>(), [Health::Down]);
    }

    #[test]
    fn blame_lag_only_touches_timeouts() {
        let outcome = |timed_out, latency| ProbeOutcome {
            ok: false,
            local: false,
            timed_out,
            detail: "x".to_owned(),
            latency,
        };
        let timeout = Duration::from_millis(200);
        let late = Some(Duration::from_millis(500));
        let mut refused = outcome(false, Duration::from_millis(1));
        blame_lag(&mut refused, timeout, late);
        assert!(!refused.local, "a refusal stays the backend's whatever the lag");
        let mut on_time = outcome(true, timeout + Duration::from_millis(2));
        blame_lag(&mut on_time, timeout, None);
        assert!(!on_time.local);
        let mut seen_late = outcome(true, timeout);
        blame_lag(&mut seen_late, timeout, late);
        assert!(seen_late.local);
        assert_eq!(seen_late.detail, "agent could not probe: x while the agent's loop ran 500 ms late");
        let mut fired_late = outcome(true, timeout + lag::LOCAL_LAG);
        blame_lag(&mut fired_late, timeout, None);
        assert!(fired_late.local);
    }

    #[test]
    fn status_serializes() {
        let status = TargetStatus {
            id: 4,
            addr: "10.0.0.4:80".parse().unwrap(),
            health: Health::Down,
            detail: "HTTP 500 (expected 200)".to_owned(),
            consecutive_ok: 0,
            consecutive_fail: 3,
            probes: 10,
            failures: 3,
            local_errors: 2,
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 4,
                "addr": "10.0.0.4:80",
                "health": "down",
                "detail": "HTTP 500 (expected 200)",
                "consecutive_ok": 0,
                "consecutive_fail": 3,
                "probes": 10,
                "failures": 3,
                "local_errors": 2,
            })
        );
    }
}
