//! What the agent has added to the host, and the plan that brings the host to what the
//! configuration wants. Pure: no I/O but reading and writing the record file.
//!
//! The record is the only source of ownership. An address or route that is on the host but
//! not in the record belongs to someone else (an operator, keepalived, another instance, a
//! version of the agent before the record existed) and is never changed or removed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lb_common::limits::{HOST_RETRY_FIRST_MS, HOST_RETRY_MAX_MS};
use serde::{Deserialize, Serialize};

/// `proto` of the announcement routes the agent adds, so that they are told from any other.
pub const ROUTE_PROTOCOL: u8 = 250;

/// One thing the agent adds to the host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    /// A VIP address as a /32 or /128 on an interface (the host answers ARP/NDP for it).
    Address {
        /// The interface, by name.
        interface: String,
        /// The address.
        address: IpAddr,
    },
    /// An announcement route `ADDRESS/32|128 dev lo table TABLE proto 250`, which a routing
    /// daemon exports.
    Route {
        /// The kernel routing table.
        table: u32,
        /// The VIP address.
        address: IpAddr,
    },
}

/// Length of a host prefix of `addr`'s family.
pub fn host_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Address { interface, address } => write!(f, "address {address}/{} on {interface}", host_prefix(*address)),
            Item::Route { table, address } => {
                write!(f, "route {address}/{} dev lo table {table} proto {ROUTE_PROTOCOL}", host_prefix(*address))
            }
        }
    }
}

/// The record file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version.
    pub version: u32,
    /// What the agent added and has not removed yet (or is adding: an item is recorded
    /// before it is added, so that an agent killed in between still knows it).
    pub items: BTreeSet<Item>,
}

/// The record format this build writes and reads.
pub const RECORD_VERSION: u32 = 1;

impl Record {
    /// Reads the record at `path`; none there is an empty record.
    pub fn load(path: &Path) -> anyhow::Result<Record> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Record { version: RECORD_VERSION, ..Record::default() }),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let record: Record = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            record.version == RECORD_VERSION,
            "{} has format version {}, this agent reads {RECORD_VERSION}",
            path.display(),
            record.version
        );
        Ok(record)
    }

    /// Writes the record to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }
}

/// What to change on the host: remove what the record holds that is not wanted, add what is
/// wanted that the record does not hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Recorded items no longer wanted.
    pub remove: Vec<Item>,
    /// Wanted items not recorded.
    pub add: Vec<Item>,
}

/// The plan from `recorded` to `wanted`.
pub fn plan(recorded: &BTreeSet<Item>, wanted: &BTreeSet<Item>) -> Plan {
    Plan { remove: recorded.difference(wanted).cloned().collect(), add: wanted.difference(recorded).cloned().collect() }
}

/// The state of an item the agent could not bring where it wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Failures in a row.
    pub failures: u32,
    /// When to try again.
    pub at: Instant,
    /// The last error, in words.
    pub error: String,
    /// Whether the item is on the host but not the agent's (another program added it).
    pub foreign: bool,
}

/// The delay before the next try after `failures` failures in a row: doubling from
/// [`HOST_RETRY_FIRST_MS`] up to [`HOST_RETRY_MAX_MS`].
pub fn retry_delay(failures: u32) -> Duration {
    let ms = HOST_RETRY_FIRST_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    Duration::from_millis(ms.min(HOST_RETRY_MAX_MS))
}

/// Items waiting for another try, with their backoff.
#[derive(Clone, Debug, Default)]
pub struct Retries {
    items: BTreeMap<Item, Retry>,
}

impl Retries {
    /// Records a failure of `item` at `now`.
    pub fn fail(&mut self, item: &Item, now: Instant, error: String, foreign: bool) -> &Retry {
        let failures = self.items.get(item).map_or(0, |r| r.failures) + 1;
        let at = now + if foreign { Duration::from_millis(HOST_RETRY_MAX_MS) } else { retry_delay(failures) };
        self.items.insert(item.clone(), Retry { failures, at, error, foreign });
        &self.items[item]
    }

    /// Forgets `item` (it succeeded, or is no longer part of any plan).
    pub fn clear(&mut self, item: &Item) {
        self.items.remove(item);
    }

    /// Whether `item` may be tried at `now`.
    pub fn due(&self, item: &Item, now: Instant) -> bool {
        self.items.get(item).is_none_or(|r| r.at <= now)
    }

    /// Keeps only the items of `plan`.
    pub fn retain_plan(&mut self, plan: &Plan) {
        self.items.retain(|item, _| plan.add.contains(item) || plan.remove.contains(item));
    }

    /// The earliest next try.
    pub fn next(&self) -> Option<Instant> {
        self.items.values().map(|r| r.at).min()
    }

    /// Every item waiting, with its state.
    pub fn iter(&self) -> impl Iterator<Item = (&Item, &Retry)> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(a: &str) -> Item {
        Item::Address { interface: "eth0".into(), address: a.parse().unwrap() }
    }

    fn route(table: u32, a: &str) -> Item {
        Item::Route { table, address: a.parse().unwrap() }
    }

    #[test]
    fn the_plan_removes_only_recorded_items_and_adds_only_unrecorded_ones() {
        let recorded: BTreeSet<Item> = [addr("10.0.0.1"), addr("10.0.0.2"), route(100, "10.0.0.2")].into();
        let wanted: BTreeSet<Item> = [addr("10.0.0.1"), addr("2001:db8::1"), route(101, "10.0.0.2")].into();
        assert_eq!(
            plan(&recorded, &wanted),
            Plan { remove: vec![addr("10.0.0.2"), route(100, "10.0.0.2")], add: vec![addr("2001:db8::1"), route(101, "10.0.0.2")] }
        );
        // Nothing recorded: nothing is removed, whatever is on the host.
        assert!(plan(&BTreeSet::new(), &wanted).remove.is_empty());
        // Nothing wanted (teardown, or every VIP gone): everything recorded goes.
        assert_eq!(plan(&recorded, &BTreeSet::new()).remove.len(), 3);
        assert_eq!(plan(&wanted, &wanted), Plan::default());
    }

    #[test]
    fn the_record_round_trips_and_names_its_items() {
        let dir = std::env::temp_dir().join(format!("lb-record-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("host-state.json");
        assert_eq!(Record::load(&path).unwrap().items.len(), 0, "no file is an empty record");
        let record = Record { version: RECORD_VERSION, items: [addr("10.0.0.1"), route(100, "fd00::10")].into() };
        record.save(&path).unwrap();
        assert_eq!(Record::load(&path).unwrap(), record);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"kind\": \"address\"") && text.contains("\"table\": 100"), "{text}");
        std::fs::write(&path, r#"{"version": 9, "items": []}"#).unwrap();
        assert!(Record::load(&path).unwrap_err().to_string().contains("format version 9"));
        std::fs::write(&path, "{").unwrap();
        assert!(Record::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(addr("10.0.0.1").to_string(), "address 10.0.0.1/32 on eth0");
        assert_eq!(route(100, "fd00::10").to_string(), "route fd00::10/128 dev lo table 100 proto 250");
    }

    #[test]
    fn retries_back_off_and_forget_items_outside_the_plan() {
        assert_eq!(retry_delay(1), Duration::from_millis(HOST_RETRY_FIRST_MS));
        assert_eq!(retry_delay(2), Duration::from_millis(2 * HOST_RETRY_FIRST_MS));
        assert_eq!(retry_delay(40), Duration::from_millis(HOST_RETRY_MAX_MS));
        let now = Instant::now();
        let mut r = Retries::default();
        let a = addr("10.0.0.1");
        assert!(r.due(&a, now));
        r.fail(&a, now, "no such device".into(), false);
        assert!(!r.due(&a, now));
        assert!(r.due(&a, now + retry_delay(1)));
        assert_eq!(r.fail(&a, now, "again".into(), false).failures, 2);
        assert_eq!(r.next(), Some(now + retry_delay(2)));
        let foreign = addr("10.0.0.2");
        assert_eq!(r.fail(&foreign, now, "exists".into(), true).at, now + Duration::from_millis(HOST_RETRY_MAX_MS));
        r.retain_plan(&Plan { remove: vec![], add: vec![foreign.clone()] });
        assert!(r.due(&a, now), "an item no longer planned is forgotten");
        assert!(!r.due(&foreign, now));
        r.clear(&foreign);
        assert_eq!(r.next(), None);
    }
}
