//! What `lb backend-setup` changes, decided from the host's current state, what is wanted and
//! what an earlier run recorded; and the undo of a record. Pure: the caller reads the host and
//! carries the changes out.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use lb_common::limits::{IPV4_HEADER, IPV6_HEADER, TCP_HEADER, UDP_HEADER};

use super::state::{SetSysctl, State};
use crate::sysctls::rules::{Family, Key};

/// How the load balancer delivers a VIP's packets to this backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// IPv4-in-IPv4 or IPv6-in-IPv6 (IPv4-in-IPv6) encapsulation.
    Tunnel,
    /// The same inside UDP (GUE).
    Gue,
    /// L2: the frame is sent to this backend's MAC on a shared segment, unencapsulated.
    Direct,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Tunnel => "tunnel",
            Mode::Gue => "gue",
            Mode::Direct => "direct",
        })
    }
}

/// What the operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The mode.
    pub mode: Mode,
    /// The interface the load balancer's packets arrive on.
    pub interface: String,
    /// The VIPs this backend serves.
    pub vips: BTreeSet<IpAddr>,
}

/// A kernel setting, by its file under `/proc/sys` and its name as `sysctl` takes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Setting {
    /// Its file under `/proc/sys`, e.g. `net/ipv4/conf/all/rp_filter`.
    pub path: String,
    /// Its name, e.g. `net.ipv4.conf.all.rp_filter`.
    pub name: String,
}

impl From<Key> for Setting {
    fn from(key: Key) -> Setting {
        Setting { path: key.path(), name: key.dotted() }
    }
}

/// A kernel setting and the values that serve the mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlWant {
    /// The setting.
    pub key: Setting,
    /// Values that already serve (left as they are).
    pub accept: &'static [i64],
    /// The value set when the current one is not accepted.
    pub target: i64,
    /// Why, in words.
    pub why: &'static str,
}

/// The settings `wanted` needs. IPv6 needs none: NDP answers only for addresses of the
/// interface a solicitation arrives on (an address on `lo` is never announced or answered for
/// on another interface), and IPv6 has no reverse-path filter sysctl.
pub fn sysctls_for(wanted: &Wanted) -> Vec<SysctlWant> {
    if !wanted.vips.iter().any(IpAddr::is_ipv4) {
        return Vec::new();
    }
    let scopes = ["all", wanted.interface.as_str()];
    let key = |scope: &str, name: &'static str| Setting::from(Key { family: Family::V4, scope: scope.to_owned(), name });
    match wanted.mode {
        Mode::Direct => {
            let ignore = scopes.iter().map(|s| SysctlWant {
                key: key(s, "arp_ignore"),
                accept: &[1, 2],
                target: 1,
                why: "answer ARP only for addresses of the interface asked on, not for the VIPs on lo",
            });
            let announce = scopes.iter().map(|s| SysctlWant {
                key: key(s, "arp_announce"),
                accept: &[2],
                target: 2,
                why: "never use a VIP as the source of this host's ARP requests",
            });
            ignore.chain(announce).collect()
        }
        Mode::Tunnel | Mode::Gue => scopes
            .iter()
            .map(|s| SysctlWant {
                key: key(s, "rp_filter"),
                accept: &[0, 2],
                target: 2,
                why: "loose reverse-path filter: a decapsulated packet comes from a client the route does not point back to",
            })
            .collect(),
    }
}

/// The host as read: the addresses on `lo` and the settings' values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// Addresses on `lo`, whatever their prefix.
    pub lo_addresses: BTreeSet<IpAddr>,
    /// Settings by their `/proc/sys` path (one that is absent is not listed).
    pub sysctls: BTreeMap<String, i64>,
}

/// One change to the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the VIP as a /32 or /128 on `lo`.
    AddAddress(IpAddr),
    /// Remove an address that a set-up added from `lo`.
    RemoveAddress(IpAddr),
    /// Write a setting.
    SetSysctl {
        /// The setting.
        key: Setting,
        /// Its value now.
        from: i64,
        /// Its value after.
        to: i64,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddAddress(a) => write!(f, "add {a}/{} on lo", host_prefix(*a)),
            Change::RemoveAddress(a) => write!(f, "remove {a}/{} from lo", host_prefix(*a)),
            Change::SetSysctl { key, from, to } => write!(f, "set {} from {from} to {to}", key.name),
        }
    }
}

/// The prefix length of a single address.
pub fn host_prefix(address: IpAddr) -> u8 {
    if address.is_ipv4() { 32 } else { 128 }
}

/// Changes in order, and what was found already as wanted (in words).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// What to change.
    pub changes: Vec<Change>,
    /// What is left as it is, and why.
    pub unchanged: Vec<String>,
}

/// Why a set-up cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An earlier set-up was for another mode or interface.
    #[error(
        "this host is set up for mode {mode} on {interface} (recorded in the state file); run `lb backend-setup --undo` first to change the mode or interface"
    )]
    OtherSetup {
        /// The recorded mode.
        mode: Mode,
        /// The recorded interface.
        interface: String,
    },
    /// A setting the mode needs is not on the host.
    #[error("{0} does not exist on this host (is the interface's IPv4 enabled?)")]
    MissingSysctl(String),
    /// No VIP was given.
    #[error("give at least one --vip")]
    NoVip,
}

/// The changes that bring the host from `current` to `wanted`, given the record of earlier
/// runs. An address already on `lo` is left alone (and is not the set-up's unless recorded),
/// and a setting whose value already serves is not written.
pub fn setup_plan(wanted: &Wanted, current: &Current, recorded: Option<&State>) -> Result<Plan, PlanError> {
    if wanted.vips.is_empty() {
        return Err(PlanError::NoVip);
    }
    if let Some(state) = recorded.filter(|s| s.mode != wanted.mode || s.interface != wanted.interface) {
        return Err(PlanError::OtherSetup { mode: state.mode, interface: state.interface.clone() });
    }
    let mut plan = Plan::default();
    for vip in &wanted.vips {
        if !current.lo_addresses.contains(vip) {
            plan.changes.push(Change::AddAddress(*vip));
        } else if recorded.is_some_and(|s| s.addresses.contains(vip)) {
            plan.unchanged.push(format!("{vip}/{} on lo: already added by an earlier set-up", host_prefix(*vip)));
        } else {
            plan.unchanged.push(format!("{vip} on lo: already there, not added by lb (undo leaves it)"));
        }
    }
    for want in sysctls_for(wanted) {
        let dotted = want.key.name.clone();
        let Some(&value) = current.sysctls.get(&want.key.path) else {
            return Err(PlanError::MissingSysctl(dotted));
        };
        if want.accept.contains(&value) {
            plan.unchanged.push(format!("{dotted} is {value} already"));
        } else {
            plan.changes.push(Change::SetSysctl { key: want.key, from: value, to: want.target });
        }
    }
    Ok(plan)
}

/// The changes that put back what `state` records: the addresses it added are removed (one
/// already gone is noted), and each setting it changed gets its previous value, unless
/// something else changed it since (then it is left, and said so).
pub fn undo_plan(state: &State, current: &Current) -> Plan {
    let mut plan = Plan::default();
    for address in &state.addresses {
        if current.lo_addresses.contains(address) {
            plan.changes.push(Change::RemoveAddress(*address));
        } else {
            plan.unchanged.push(format!("{address} on lo: already gone"));
        }
    }
    for SetSysctl { key, previous, set } in &state.sysctls {
        let dotted = &key.name;
        match current.sysctls.get(&key.path) {
            Some(value) if value == set => plan.changes.push(Change::SetSysctl { key: key.clone(), from: *set, to: *previous }),
            Some(value) if value == previous => plan.unchanged.push(format!("{dotted} is {value} already")),
            Some(value) => plan.unchanged.push(format!(
                "{dotted} is {value}, changed since lb set it to {set}: left as it is (it was {previous} before the set-up)"
            )),
            None => plan.unchanged.push(format!("{dotted}: gone (its interface was removed)")),
        }
    }
    plan
}

/// The path MTU and TCP MSS that one kind of outer header leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtuAdvice {
    /// The outer headers, in words.
    pub outer: &'static str,
    /// Their bytes.
    pub overhead: u32,
    /// The largest inner packet: the link MTU less the outer headers.
    pub path_mtu: u32,
    /// The MSS to clamp IPv4 clients' SYNs to (path MTU − 40).
    pub mss_v4: u32,
    /// The MSS to clamp IPv6 clients' SYNs to (path MTU − 60).
    pub mss_v6: u32,
}

/// The figures for `mode` on a link of `link_mtu` bytes, one per outer family (the backend
/// can be reached over IPv4 or IPv6); none for `direct`, which adds no header.
pub fn mtu_advice(mode: Mode, link_mtu: u32) -> Vec<MtuAdvice> {
    let outers: &[(&'static str, u32)] = match mode {
        Mode::Direct => &[],
        Mode::Tunnel => &[("IPv4 outer header (IPIP)", IPV4_HEADER), ("IPv6 outer header", IPV6_HEADER)],
        Mode::Gue => &[
            ("IPv4 + UDP outer headers (GUE)", IPV4_HEADER + UDP_HEADER),
            ("IPv6 + UDP outer headers (GUE)", IPV6_HEADER + UDP_HEADER),
        ],
    };
    outers
        .iter()
        .map(|&(outer, overhead)| {
            let path_mtu = link_mtu.saturating_sub(overhead);
            let mss = |ip_header: u32| path_mtu.saturating_sub(ip_header + TCP_HEADER);
            MtuAdvice { outer, overhead, path_mtu, mss_v4: mss(IPV4_HEADER), mss_v6: mss(IPV6_HEADER) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    fn wanted(mode: Mode, vips: &[&str]) -> Wanted {
        Wanted { mode, interface: "eth0".into(), vips: vips.iter().map(|v| ip(v)).collect() }
    }

    fn current(lo: &[&str], sysctls: &[(&str, i64)]) -> Current {
        Current {
            lo_addresses: lo.iter().map(|a| ip(a)).collect(),
            sysctls: sysctls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    fn key(scope: &str, name: &'static str) -> Setting {
        Key { family: Family::V4, scope: scope.into(), name }.into()
    }

    const DEFAULTS: &[(&str, i64)] = &[
        ("net/ipv4/conf/all/arp_ignore", 0),
        ("net/ipv4/conf/eth0/arp_ignore", 0),
        ("net/ipv4/conf/all/arp_announce", 0),
        ("net/ipv4/conf/eth0/arp_announce", 0),
        ("net/ipv4/conf/all/rp_filter", 1),
        ("net/ipv4/conf/eth0/rp_filter", 1),
    ];

    #[test]
    fn direct_adds_the_vips_and_the_arp_settings() {
        let plan = setup_plan(&wanted(Mode::Direct, &["10.0.0.10", "2001:db8::10"]), &current(&["127.0.0.1"], DEFAULTS), None).unwrap();
        let text: Vec<String> = plan.changes.iter().map(Change::to_string).collect();
        assert_eq!(
            text,
            [
                "add 10.0.0.10/32 on lo",
                "add 2001:db8::10/128 on lo",
                "set net.ipv4.conf.all.arp_ignore from 0 to 1",
                "set net.ipv4.conf.eth0.arp_ignore from 0 to 1",
                "set net.ipv4.conf.all.arp_announce from 0 to 2",
                "set net.ipv4.conf.eth0.arp_announce from 0 to 2",
            ]
        );
        assert!(plan.unchanged.is_empty());
    }

    #[test]
    fn tunnel_loosens_rp_filter_only_where_it_is_strict() {
        let mut host = current(&[], DEFAULTS);
        host.sysctls.insert("net/ipv4/conf/all/rp_filter".into(), 0);
        let plan = setup_plan(&wanted(Mode::Gue, &["10.0.0.10"]), &host, None).unwrap();
        assert_eq!(
            plan.changes,
            [Change::AddAddress(ip("10.0.0.10")), Change::SetSysctl { key: key("eth0", "rp_filter"), from: 1, to: 2 }]
        );
        assert_eq!(plan.unchanged, ["net.ipv4.conf.all.rp_filter is 0 already"]);
    }

    #[test]
    fn ipv6_only_vips_need_no_setting() {
        let plan = setup_plan(&wanted(Mode::Direct, &["2001:db8::10"]), &current(&[], &[]), None).unwrap();
        assert_eq!(plan.changes, [Change::AddAddress(ip("2001:db8::10"))]);
    }

    #[test]
    fn a_second_run_changes_nothing_and_says_why() {
        let want = wanted(Mode::Direct, &["10.0.0.10", "10.0.0.11"]);
        let settled: Vec<(&str, i64)> = DEFAULTS.iter().map(|&(k, _)| (k, if k.ends_with("arp_announce") { 2 } else { 1 })).collect();
        let host = current(&["10.0.0.10", "10.0.0.11"], &settled);
        let state = State { addresses: [ip("10.0.0.10")].into(), ..State::new(Mode::Direct, "eth0") };
        let plan = setup_plan(&want, &host, Some(&state)).unwrap();
        assert!(plan.changes.is_empty(), "{plan:?}");
        assert_eq!(plan.unchanged[0], "10.0.0.10/32 on lo: already added by an earlier set-up");
        assert_eq!(plan.unchanged[1], "10.0.0.11 on lo: already there, not added by lb (undo leaves it)");
        assert_eq!(plan.unchanged[2], "net.ipv4.conf.all.arp_ignore is 1 already");
    }

    #[test]
    fn refuses_another_mode_a_missing_setting_and_no_vip() {
        let state = State::new(Mode::Tunnel, "eth0");
        let e = setup_plan(&wanted(Mode::Direct, &["10.0.0.10"]), &current(&[], DEFAULTS), Some(&state)).unwrap_err();
        assert_eq!(e, PlanError::OtherSetup { mode: Mode::Tunnel, interface: "eth0".into() });
        assert!(e.to_string().contains("run `lb backend-setup --undo` first"), "{e}");
        let e = setup_plan(&wanted(Mode::Direct, &["10.0.0.10"]), &current(&[], &DEFAULTS[..1]), None).unwrap_err();
        assert_eq!(e, PlanError::MissingSysctl("net.ipv4.conf.eth0.arp_ignore".into()));
        assert_eq!(setup_plan(&wanted(Mode::Direct, &[]), &Current::default(), None).unwrap_err(), PlanError::NoVip);
    }

    #[test]
    fn undo_removes_only_recorded_addresses_and_restores_unchanged_settings() {
        let state = State {
            addresses: [ip("10.0.0.10"), ip("10.0.0.12")].into(),
            sysctls: vec![
                SetSysctl { key: key("all", "arp_ignore"), previous: 0, set: 1 },
                SetSysctl { key: key("eth0", "arp_ignore"), previous: 0, set: 1 },
                SetSysctl { key: key("all", "arp_announce"), previous: 1, set: 2 },
                SetSysctl { key: key("lbgone", "arp_announce"), previous: 0, set: 2 },
            ],
            ..State::new(Mode::Direct, "eth0")
        };
        let host = current(
            &["10.0.0.10", "10.0.0.11", "127.0.0.1"],
            &[("net/ipv4/conf/all/arp_ignore", 1), ("net/ipv4/conf/eth0/arp_ignore", 0), ("net/ipv4/conf/all/arp_announce", 0)],
        );
        let plan = undo_plan(&state, &host);
        assert_eq!(
            plan.changes,
            [Change::RemoveAddress(ip("10.0.0.10")), Change::SetSysctl { key: key("all", "arp_ignore"), from: 1, to: 0 }]
        );
        assert_eq!(
            plan.unchanged,
            [
                "10.0.0.12 on lo: already gone",
                "net.ipv4.conf.eth0.arp_ignore is 0 already",
                "net.ipv4.conf.all.arp_announce is 0, changed since lb set it to 2: left as it is (it was 1 before the set-up)",
                "net.ipv4.conf.lbgone.arp_announce: gone (its interface was removed)",
            ]
        );
    }

    #[test]
    fn mtu_advice_subtracts_the_outer_headers() {
        assert!(mtu_advice(Mode::Direct, 1500).is_empty());
        let tunnel = mtu_advice(Mode::Tunnel, 1500);
        assert_eq!((tunnel[0].path_mtu, tunnel[0].mss_v4, tunnel[0].mss_v6), (1480, 1440, 1420));
        assert_eq!((tunnel[1].path_mtu, tunnel[1].mss_v4, tunnel[1].mss_v6), (1460, 1420, 1400));
        let gue = mtu_advice(Mode::Gue, 9000);
        assert_eq!((gue[0].overhead, gue[0].path_mtu), (28, 8972));
        assert_eq!((gue[1].overhead, gue[1].path_mtu, gue[1].mss_v6), (48, 8952, 8892));
    }
}
