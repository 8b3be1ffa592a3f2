//! Whether a VIP is served, defined once: the agent decides it from its model (`lb status`,
//! `lb check`, the announcement of VIP addresses), and `lb check` decides it from the maps of a
//! pinned data path while the agent is away. Both count the same thing with the same rule.

use crate::{limits::CHECK_GRACE_MS, maps::BackendState};

/// Whether a backend in `state` with `weight` takes new flows: up, with a share of them. The
/// agent passes a backend's configured weight; a reader of the maps passes the slots the
/// backend holds in its VIP's live ring (a backend of weight 0 holds none).
pub const fn takes_new_flows(state: BackendState, weight: u32) -> bool {
    matches!(state, BackendState::Up) && weight > 0
}

/// How many of `backends` (state, weight as in [`takes_new_flows`]) take new flows. A VIP is
/// served while this is above zero (and its program runs on every interface).
pub fn backends_taking_new_flows(backends: impl IntoIterator<Item = (BackendState, u32)>) -> u32 {
    backends.into_iter().filter(|&(state, weight)| takes_new_flows(state, weight)).count() as u32
}

/// What the agent's heartbeat (`crate::maps::META_HEARTBEAT`) says about a pinned data path
/// whose agent does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// No agent ever wrote one (0): an older build's data path, or one whose first agent
    /// stopped before its first refresh.
    Never,
    /// Written `age_ms` ago, within [`CHECK_GRACE_MS`]: the data path may be trusted.
    Fresh {
        /// Milliseconds since the heartbeat.
        age_ms: u64,
    },
    /// Written `age_ms` ago, beyond [`CHECK_GRACE_MS`]: the agent has been away too long.
    Stale {
        /// Milliseconds since the heartbeat.
        age_ms: u64,
    },
    /// Ahead of the reader's clock: written in another time namespace; not trusted.
    Ahead,
}

impl Heartbeat {
    /// The heartbeat `written_ms` read when the same clock reads `now_ms`.
    pub const fn at(written_ms: u64, now_ms: u64) -> Heartbeat {
        if written_ms == 0 {
            Heartbeat::Never
        } else if written_ms > now_ms {
            Heartbeat::Ahead
        } else if now_ms - written_ms <= CHECK_GRACE_MS {
            Heartbeat::Fresh { age_ms: now_ms - written_ms }
        } else {
            Heartbeat::Stale { age_ms: now_ms - written_ms }
        }
    }

    /// Whether `lb check` may answer from the data path.
    pub const fn trusted(self) -> bool {
        matches!(self, Heartbeat::Fresh { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_up_backend_with_a_share_takes_new_flows() {
        assert!(takes_new_flows(BackendState::Up, 1));
        assert!(!takes_new_flows(BackendState::Up, 0), "weight 0");
        for state in [BackendState::Draining, BackendState::Down, BackendState::Failed, BackendState::Unused] {
            assert!(!takes_new_flows(state, 100), "{state:?}");
        }
        let pool = [(BackendState::Up, 3), (BackendState::Up, 0), (BackendState::Failed, 5), (BackendState::Up, 1), (BackendState::Draining, 1)];
        assert_eq!(backends_taking_new_flows(pool), 2);
        assert_eq!(backends_taking_new_flows([]), 0);
    }

    #[test]
    fn the_data_path_is_trusted_only_within_the_grace_period_of_the_last_heartbeat() {
        let now = 5_000_000;
        assert_eq!(Heartbeat::at(0, now), Heartbeat::Never);
        assert_eq!(Heartbeat::at(now, now), Heartbeat::Fresh { age_ms: 0 });
        assert_eq!(Heartbeat::at(now - CHECK_GRACE_MS, now), Heartbeat::Fresh { age_ms: CHECK_GRACE_MS });
        assert_eq!(Heartbeat::at(now - CHECK_GRACE_MS - 1, now), Heartbeat::Stale { age_ms: CHECK_GRACE_MS + 1 });
        assert_eq!(Heartbeat::at(now + 1, now), Heartbeat::Ahead);
        assert!(Heartbeat::at(now - 1_500, now).trusted());
        for h in [Heartbeat::Never, Heartbeat::Ahead, Heartbeat::at(1, now)] {
            assert!(!h.trusted(), "{h:?}");
        }
    }
}
