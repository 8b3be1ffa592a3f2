//! The agent's heartbeat in a pinned data path (`META_HEARTBEAT`): when an agent last refreshed
//! it, on a clock every process of the host shares and that never jumps.

use anyhow::Context as _;
use lb_common::maps::META_HEARTBEAT;

use super::Maps;

/// `CLOCK_MONOTONIC` in milliseconds: the time base of the heartbeat, the same for the agent and
/// `lb check` (one host, one time namespace), unmoved by changes of the wall clock.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid buffer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl Maps {
    /// Records that the agent is alive and refreshing this data path, now.
    pub fn heartbeat(&mut self) -> anyhow::Result<()> {
        self.set_meta(META_HEARTBEAT, now_ms()).context("writing the heartbeat")
    }
}
