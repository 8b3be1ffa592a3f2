//! The rise/fall state machine of one backend, without I/O or clocks.

use std::fmt;

use serde::Serialize;

/// Health of a backend as seen by its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The backend receives new connections.
    Up,
    /// The backend receives no new connections.
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// Current health of a backend and the consecutive probe results that may flip it, as in
/// HAProxy's `rise`/`fall` and keepalived's `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    health: Health,
    consecutive_ok: u32,
    consecutive_fail: u32,
    rise: u32,
    fall: u32,
}

impl HealthState {
    /// A backend in state `initial` that goes up after `rise` consecutive successful probes
    /// and down after `fall` consecutive failed ones (0 counts as 1).
    pub fn new(initial: Health, rise: u32, fall: u32) -> Self {
        Self {
            health: initial,
            consecutive_ok: 0,
            consecutive_fail: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Records one probe result; returns Some(new) when the health flips.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_fail = 0;
            if self.health == Health::Down && self.consecutive_ok >= self.rise {
                self.health = Health::Up;
                return Some(Health::Up);
            }
        } else {
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            self.consecutive_ok = 0;
            if self.health == Health::Up && self.consecutive_fail >= self.fall {
                self.health = Health::Down;
                return Some(Health::Down);
            }
        }
        None
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// True while a flip is in progress (some but not yet enough consecutive results against
    /// the current state): the checker then probes at the fast interval.
    pub fn is_changing(&self) -> bool {
        match self.health {
            Health::Up => self.consecutive_fail > 0,
            Health::Down => self.consecutive_ok > 0,
        }
    }

    /// Number of successful probes in a row, up to the latest one.
    pub fn consecutive_ok(&self) -> u32 {
        self.consecutive_ok
    }

    /// Number of failed probes in a row, up to the latest one.
    pub fn consecutive_fail(&self) -> u32 {
        self.consecutive_fail
    }

    /// Consecutive successes needed to go up.
    pub fn rise(&self) -> u32 {
        self.rise
    }

    /// Consecutive failures needed to go down.
    pub fn fall(&self) -> u32 {
        self.fall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(state: &mut HealthState, results: &[bool]) -> Vec<Option<Health>> {
        results.iter().map(|&ok| state.observe(ok)).collect()
    }

    #[test]
    fn falls_after_fall_consecutive_failures() {
        let mut s = HealthState::new(Health::Up, 2, 3);
        assert_eq!(feed(&mut s, &[false, false]), [None, None]);
        assert_eq!(s.health(), Health::Up);
        assert_eq!(s.observe(false), Some(Health::Down));
        assert_eq!(s.health(), Health::Down);
        assert_eq!(s.observe(false), None, "already down: no second transition");
    }

    #[test]
    fn rises_after_rise_consecutive_successes() {
        let mut s = HealthState::new(Health::Down, 2, 3);
        assert_eq!(s.observe(true), None);
        assert_eq!(s.observe(true), Some(Health::Up));
        assert_eq!(s.health(), Health::Up);
        assert_eq!(s.observe(true), None);
    }

    #[test]
    fn success_while_up_resets_the_failure_count() {
        let mut s = HealthState::new(Health::Up, 2, 3);
        assert_eq!(feed(&mut s, &[false, false, true, false, false]), [None; 5]);
        assert_eq!(s.health(), Health::Up);
        assert_eq!(s.observe(false), Some(Health::Down));
    }

    #[test]
    fn failure_while_down_resets_the_success_count() {
        let mut s = HealthState::new(Health::Down, 3, 2);
        assert_eq!(feed(&mut s, &[true, true, false, true, true]), [None; 5]);
        assert_eq!(s.health(), Health::Down);
        assert_eq!(s.observe(true), Some(Health::Up));
    }

    #[test]
    fn flapping_never_flips() {
        for initial in [Health::Up, Health::Down] {
            let mut s = HealthState::new(initial, 2, 2);
            for i in 0..100 {
                assert_eq!(s.observe(i % 2 == 0), None);
            }
            assert_eq!(s.health(), initial);
        }
    }

    #[test]
    fn rise_one_fall_one_follows_every_result() {
        let mut s = HealthState::new(Health::Up, 1, 1);
        assert_eq!(s.observe(true), None);
        assert_eq!(s.observe(false), Some(Health::Down));
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(true), Some(Health::Up));
        assert_eq!(s.observe(false), Some(Health::Down));
        assert!(!s.is_changing());
    }

    #[test]
    fn zero_thresholds_count_as_one() {
        let mut s = HealthState::new(Health::Up, 0, 0);
        assert_eq!((s.rise(), s.fall()), (1, 1));
        assert_eq!(s.observe(false), Some(Health::Down));
        assert_eq!(s.observe(true), Some(Health::Up));
    }

    #[test]
    fn is_changing_while_a_flip_is_in_progress() {
        let mut s = HealthState::new(Health::Up, 2, 3);
        assert!(!s.is_changing());
        s.observe(true);
        assert!(!s.is_changing(), "success while up is no change");
        s.observe(false);
        assert!(s.is_changing());
        s.observe(false);
        assert!(s.is_changing());
        s.observe(true);
        assert!(!s.is_changing(), "a success cancels the fall");
        feed(&mut s, &[false, false, false]);
        assert_eq!(s.health(), Health::Down);
        assert!(!s.is_changing(), "the flip is complete");
        s.observe(true);
        assert!(s.is_changing());
        s.observe(true);
        assert_eq!(s.health(), Health::Up);
        assert!(!s.is_changing());
    }

    #[test]
    fn counters_report_the_current_streak() {
        let mut s = HealthState::new(Health::Up, 2, 3);
        feed(&mut s, &[true, true, false]);
        assert_eq!((s.consecutive_ok(), s.consecutive_fail()), (0, 1));
        feed(&mut s, &[false, false, false]);
        assert_eq!((s.consecutive_ok(), s.consecutive_fail()), (0, 4));
        s.observe(true);
        assert_eq!((s.consecutive_ok(), s.consecutive_fail()), (1, 0));
    }

    #[test]
    fn health_serializes_lowercase() {
        assert_eq!(serde_json::to_string(&Health::Up).unwrap(), "\"up\"");
        assert_eq!(serde_json::to_string(&Health::Down).unwrap(), "\"down\"");
        assert_eq!(Health::Down.to_string(), "down");
    }
}
