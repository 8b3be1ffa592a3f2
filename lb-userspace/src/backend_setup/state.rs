//! The state file of `lb backend-setup`: what it added and changed on this host, with the
//! values it replaced, so that `--undo` puts back exactly that. Written before each change
//! (as the agent's record, [`crate::host::record`]), so that a run stopped half-way still knows
//! what it did.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::plan::{Mode, Setting};

/// Where the state is kept unless `--state` says otherwise.
pub const DEFAULT_STATE_FILE: &str = "/run/lb/backend-setup.json";

/// The state format this build writes and reads.
pub const STATE_VERSION: u32 = 1;

/// A setting the set-up changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSysctl {
    /// The setting.
    pub key: Setting,
    /// Its value before the first set-up that changed it.
    pub previous: i64,
    /// The value the set-up wrote.
    pub set: i64,
}

/// What the set-up did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// The mode set up.
    pub mode: Mode,
    /// The interface the load balancer's packets arrive on.
    pub interface: String,
    /// The addresses the set-up added on `lo` (never one that was there before).
    pub addresses: BTreeSet<IpAddr>,
    /// The settings it changed, in the order changed.
    pub sysctls: Vec<SetSysctl>,
    /// Whether it attached the decapsulation program to `interface` (`tunnel`, `gue`).
    #[serde(default)]
    pub decapsulation: bool,
}

impl State {
    /// Nothing done yet, for `mode` on `interface`.
    pub fn new(mode: Mode, interface: &str) -> State {
        State { version: STATE_VERSION, mode, interface: interface.to_owned(), addresses: BTreeSet::new(), sysctls: Vec::new(), decapsulation: false }
    }

    /// Records that `key` was changed from `previous` to `set`; a setting already recorded
    /// keeps its first previous value.
    pub fn record_sysctl(&mut self, key: &Setting, previous: i64, set: i64) {
        match self.sysctls.iter_mut().find(|s| s.key == *key) {
            Some(s) => s.set = set,
            None => self.sysctls.push(SetSysctl { key: key.clone(), previous, set }),
        }
    }

    /// Reads the state at `path`; `None` when there is none.
    pub fn load(path: &Path) -> anyhow::Result<Option<State>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state: State = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            state.version == STATE_VERSION,
            "{} has format version {}, this lb reads {STATE_VERSION}",
            path.display(),
            state.version
        );
        Ok(Some(state))
    }

    /// Writes the state to `path` atomically (a temporary file renamed over it), creating its
    /// directory.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_first_previous_value() {
        let dir = std::env::temp_dir().join(format!("lb-backend-setup-state-{}", std::process::id()));
        let path = dir.join("sub").join("backend-setup.json");
        assert_eq!(State::load(&path).unwrap(), None);
        let mut state = State::new(Mode::Gue, "eth0");
        state.addresses.insert("10.0.0.10".parse().unwrap());
        let key = Setting { path: "net/ipv4/conf/all/rp_filter".into(), name: "net.ipv4.conf.all.rp_filter".into() };
        state.record_sysctl(&key, 1, 2);
        state.record_sysctl(&key, 2, 0);
        assert_eq!(state.sysctls, [SetSysctl { key, previous: 1, set: 0 }]);
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(state));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"mode\": \"gue\"") && text.contains("\"previous\": 1"), "{text}");
        std::fs::write(&path, text.replace("\"version\": 1", "\"version\": 7")).unwrap();
        assert!(State::load(&path).unwrap_err().to_string().contains("format version 7"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
