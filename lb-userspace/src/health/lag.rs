//! How late the agent's loop runs, so that a probe that timed out while the agent itself was
//! starved (no CPU, a blocked worker) is not blamed on the backend.
//!
//! A monitor task ([`spawn_monitor`]) wakes every [`TICK`] and records by how much its wake-up
//! was late; a probe's timeout is local ([`starved`]) when the loop was seen late by
//! [`PROBE_LOOP_LAG_LOCAL_MS`] or more while the probe ran, or when the probe's own timer
//! fired that late.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb_common::limits::PROBE_LOOP_LAG_LOCAL_MS;
use tokio::task::JoinHandle;

/// Period of the monitor's timer.
pub const TICK: Duration = Duration::from_millis(20);

/// The lag at or above which a timed-out probe is the agent's fault.
pub const LOCAL_LAG: Duration = Duration::from_millis(PROBE_LOOP_LAG_LOCAL_MS);

/// The latest lag of the loop at or above [`LOCAL_LAG`]: when it ended and how long it was.
#[derive(Debug, Default)]
pub struct LoopLag {
    latest: Mutex<Option<(Instant, Duration)>>,
}

impl LoopLag {
    /// Records a wake-up at `now` that came `late` after its time.
    pub fn record(&self, now: Instant, late: Duration) {
        if late >= LOCAL_LAG {
            *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, late));
        }
    }

    /// The latest lag at or above [`LOCAL_LAG`] that ended at or after `since`.
    pub fn since(&self, since: Instant) -> Option<Duration> {
        let latest = *self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.filter(|(ended, _)| *ended >= since).map(|(_, lag)| lag)
    }
}

/// Starts the monitor on the current Tokio runtime; it runs until the handle is aborted.
pub fn spawn_monitor(lag: Arc<LoopLag>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let due = Instant::now() + TICK;
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            let now = Instant::now();
            lag.record(now, now.saturating_duration_since(due));
        }
    })
}

/// Whether a probe that timed out did so because the agent ran late: `own` is how late its
/// timer fired (its run time less its timeout), `seen` a lag the monitor saw while it ran.
/// Returns the lag to report when it is at or above [`LOCAL_LAG`].
pub fn starved(own: Duration, seen: Option<Duration>) -> Option<Duration> {
    let lag = own.max(seen.unwrap_or_default());
    (lag >= LOCAL_LAG).then_some(lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lags_at_or_above_the_threshold_make_a_timeout_local() {
        let ms = Duration::from_millis;
        assert_eq!(starved(Duration::ZERO, None), None);
        assert_eq!(starved(LOCAL_LAG - ms(1), None), None);
        assert_eq!(starved(LOCAL_LAG - ms(1), Some(LOCAL_LAG - ms(1))), None);
        assert_eq!(starved(LOCAL_LAG, None), Some(LOCAL_LAG));
        assert_eq!(starved(ms(3), Some(ms(450))), Some(ms(450)));
        assert_eq!(starved(ms(700), Some(ms(450))), Some(ms(700)));
    }

    #[test]
    fn a_lag_counts_for_the_probes_running_when_it_ended() {
        let lag = LoopLag::default();
        let t0 = Instant::now();
        lag.record(t0, LOCAL_LAG / 2);
        assert_eq!(lag.since(t0), None, "small lags are not recorded");
        lag.record(t0 + Duration::from_millis(500), Duration::from_millis(300));
        assert_eq!(lag.since(t0), Some(Duration::from_millis(300)));
        assert_eq!(lag.since(t0 + Duration::from_millis(500)), Some(Duration::from_millis(300)));
        assert_eq!(lag.since(t0 + Duration::from_millis(501)), None, "over before the probe started");
    }

    /// A worker thread blocked for 400 ms (as a synchronous call on the loop would) is seen
    /// by the monitor.
    #[test]
    fn the_monitor_sees_a_blocked_loop() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let lag = Arc::new(LoopLag::default());
        let seen = runtime.block_on(async {
            let monitor = spawn_monitor(lag.clone());
            tokio::time::sleep(TICK * 3).await;
            let start = Instant::now();
            std::thread::sleep(Duration::from_millis(400));
            tokio::time::sleep(TICK * 3).await;
            monitor.abort();
            lag.since(start)
        });
        let seen = seen.expect("the lag was recorded");
        assert!(seen >= Duration::from_millis(400) - TICK, "{seen:?}");
    }
}
