//! Flow sync (`global.flow_sync`): a Maglev VIP's flows are derived alike by every node from the
//! configuration, except the connections that start in a moved ring slot during a retention
//! (they follow the live ring, where the retained ring would send their later packets on a node
//! that never saw them). The data path writes each such connection to `FLOW_SYNC` when its
//! first packet after the SYN moves it to the connection table; the agent sends them to its
//! peers in authenticated UDP datagrams ([`message`]), and inserts its peers' into its own
//! connection table with its own backend slots ([`local`]), unless the flow has an entry.

pub mod local;
pub mod message;
mod peer;

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use lb_common::limits::{FLOW_SYNC_MAX_KEY_BYTES, FLOW_SYNC_MIN_KEY_BYTES};

pub use local::{Applied, LocalMaps};
pub use peer::{Source, spawn, spawn_on};

/// Reads the shared key from `path`: its bytes less a trailing newline. Refused (with the
/// reason, for the operator) when it is unreadable, readable or writable by others than its
/// owner and group, or of fewer than [`FLOW_SYNC_MIN_KEY_BYTES`] or more than
/// [`FLOW_SYNC_MAX_KEY_BYTES`] bytes.
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.mode() & 0o007 != 0 {
        return Err(format!(
            "{} is open to other users (mode {:o}): the key authenticates flows to the peers; chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    if meta.len() > FLOW_SYNC_MAX_KEY_BYTES as u64 + 2 {
        return Err(format!("{}: {} bytes; a key has at most {FLOW_SYNC_MAX_KEY_BYTES}", path.display(), meta.len()));
    }
    let mut key = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for end in [b'\n', b'\r'] {
        if key.last() == Some(&end) {
            key.pop();
        }
    }
    if !(FLOW_SYNC_MIN_KEY_BYTES..=FLOW_SYNC_MAX_KEY_BYTES).contains(&key.len()) {
        return Err(format!(
            "{}: {} bytes; a key has {FLOW_SYNC_MIN_KEY_BYTES} to {FLOW_SYNC_MAX_KEY_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

/// Why a received datagram or record was not used, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// A datagram not of the layout (length, magic, version, fields).
    Malformed,
    /// A datagram whose MAC does not match.
    BadMac,
    /// A datagram whose timestamp is outside the window.
    Stale,
    /// A record for a VIP this node does not have as a Maglev VIP.
    UnknownVip,
    /// A record whose backend this node does not have for the VIP.
    UnknownBackend,
}

impl Rejected {
    /// Every reason, in counter order.
    pub const ALL: [Rejected; 5] = [Rejected::Malformed, Rejected::BadMac, Rejected::Stale, Rejected::UnknownVip, Rejected::UnknownBackend];

    /// Stable snake_case name, used in metrics and `lb status`.
    pub const fn name(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::BadMac => "bad_mac",
            Rejected::Stale => "stale",
            Rejected::UnknownVip => "unknown_vip",
            Rejected::UnknownBackend => "unknown_backend",
        }
    }
}

impl From<message::Refused> for Rejected {
    fn from(r: message::Refused) -> Self {
        match r {
            message::Refused::Malformed => Rejected::Malformed,
            message::Refused::BadMac => Rejected::BadMac,
            message::Refused::Stale => Rejected::Stale,
        }
    }
}

/// What flow sync did since the agent started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records sent (once per record, whatever the number of peers).
    pub sent: AtomicU64,
    /// Datagrams a peer's address refused (the kernel's send error).
    pub send_errors: AtomicU64,
    /// Records of this node's data path it could not send: their backend slot changed before
    /// the agent read them.
    pub unsendable: AtomicU64,
    /// Records received in authenticated datagrams.
    pub received: AtomicU64,
    /// Records inserted into the connection table.
    pub inserted: AtomicU64,
    /// Records whose flow had an entry already (left as it is).
    pub existing: AtomicU64,
    /// Datagrams (malformed, bad MAC, stale) and records (unknown VIP or backend) not used,
    /// by [`Rejected::ALL`] index.
    pub rejected: [AtomicU64; Rejected::ALL.len()],
}

impl Stats {
    /// Counts one `reason`.
    pub fn reject(&self, reason: Rejected) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of `reason`.
    pub fn rejected(&self, reason: Rejected) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_key_file_open_to_others_or_too_short_is_refused() {
        let dir = std::env::temp_dir().join(format!("lb-flow-sync-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, format!("{}\n", "k".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key(&path).unwrap(), "k".repeat(32).into_bytes(), "the newline is not part of the key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key(&path).unwrap_err().contains("open to other users (mode 644)"));
        std::fs::write(&path, "short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_key(&path).unwrap_err().contains("5 bytes"));
        assert!(read_key(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
