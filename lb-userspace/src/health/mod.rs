//! Health checks: the rise/fall state machine and the HTTP/TCP probes.
//!
//! - [`state`]: [`HealthState`], which flips a backend down after `fall` consecutive failed
//!   probes and up after `rise` consecutive successful ones (HAProxy's `rise`/`fall`).
//! - [`probe`](mod@probe): one bounded probe, a TCP connect or a minimal HTTP/1.1 request
//!   whose status code is checked.
//! - [`request`]: the probe's HTTP request, and the rules for its `path` and `host` that
//!   `lb config check` applies too.
//! - [`dsr`]: the probe of a direct server return VIP through the VIP: a TCP handshake with
//!   the VIP on the backend, carried in the tunnel, in GUE or to its MAC as the VIP's packets are.
//! - [`lag`]: how late the agent's loop runs; a probe timing out while it lagged is local.
//! - [`checker`]: [`Checker`], one Tokio task per backend probing at its interval (or its
//!   fast interval while a flip is in progress) and sending each flip as a [`Transition`].

pub mod checker;
pub mod dsr;
pub mod lag;
pub mod probe;
pub mod request;
pub mod state;

#[cfg(test)]
mod test_support;

pub use checker::{Checker, Target, TargetStatus, Transition};
pub use probe::{ProbeKind, ProbeOutcome, ProbeSpec, probe};
pub use state::{Health, HealthState};
