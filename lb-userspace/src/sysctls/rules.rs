//! Which kernel settings the data path needs, judged from their values (no I/O: the values come
//! from a reader the caller passes).
//!
//! - **Forwarding** (`net.ipv4.conf.<if>.forwarding`, `net.ipv6.conf.<if>.forwarding`) on
//!   every interface the program runs on, for each family a VIP uses: the program asks the
//!   kernel's FIB (`bpf_fib_lookup`) where replies go and whether a backend's packet is for
//!   this host (a health probe's answer), and the kernel refuses that lookup on an interface
//!   with forwarding off. Off is an error: the agent does not start. Off for a family no VIP
//!   uses is a warning.
//! - **`accept_local`** and **`rp_filter`** (IPv4): a rewritten reply the program hands to the
//!   kernel (`pass_to_kernel_route`, when the client's next hop is not resolved yet) has the
//!   VIP, a local address, as its source. The kernel forwards it only with `accept_local` on
//!   the interface it arrives on (the device's value or `all`'s), and not under strict
//!   reverse-path filtering (the larger of the device's and `all`'s `rp_filter` is 1) unless
//!   it arrives on the interface that holds the VIP addresses. Both are warnings.

use std::fmt::Write as _;

use crate::config::Config;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4: `net.ipv4`.
    V4,
    /// IPv6: `net.ipv6`.
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn tree(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// One per-interface setting: `net.<family>.conf.<scope>.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// `net.ipv4` or `net.ipv6`.
    pub family: Family,
    /// An interface name, or `all`.
    pub scope: String,
    /// `forwarding`, `accept_local` or `rp_filter`.
    pub name: &'static str,
}

impl Key {
    fn new(family: Family, scope: &str, name: &'static str) -> Key {
        Key { family, scope: scope.to_owned(), name }
    }

    /// Its file under `/proc/sys`.
    pub fn path(&self) -> String {
        format!("net/{}/conf/{}/{}", self.family.tree(), self.scope, self.name)
    }

    /// Its name as `sysctl` takes it: a `.` in an interface name (a VLAN such as `eth0.100`)
    /// is written `/`.
    pub fn dotted(&self) -> String {
        format!("net.{}.conf.{}.{}", self.family.tree(), self.scope.replace('.', "/"), self.name)
    }

    /// The command that sets it to `value`.
    fn fix(&self, value: i64) -> String {
        format!("sysctl -w {}={value}", self.dotted())
    }
}

/// A setting as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Its value.
    Value(i64),
    /// No such setting: the interface does not exist, or the family is not enabled.
    Missing,
    /// It could not be read or parsed: why.
    Unreadable(String),
}

/// What the data path is about to run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// The interfaces the program will run on; the first holds the VIP addresses.
    pub interfaces: Vec<String>,
    /// Whether a VIP is IPv4.
    pub v4: bool,
    /// Whether a VIP is IPv6.
    pub v6: bool,
}

impl Needs {
    /// The needs of `config`.
    pub fn of(config: &Config) -> Needs {
        Needs {
            interfaces: config.global.interfaces.clone(),
            v4: config.vips.iter().any(|v| v.address.is_ipv4()),
            v6: config.vips.iter().any(|v| v.address.is_ipv6()),
        }
    }

    fn uses(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// What is wrong: errors stop the agent before it touches anything; warnings are logged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Settings without which the data path cannot work, with the command that fixes each.
    pub errors: Vec<String>,
    /// Settings that break a rarer path, with the command that fixes each.
    pub warnings: Vec<String>,
}

/// Judges the settings `read` returns for `needs`.
pub fn judge(needs: &Needs, read: impl Fn(&Key) -> Reading) -> Findings {
    let mut f = Findings::default();
    for family in [Family::V4, Family::V6] {
        forwarding(needs, family, &read, &mut f);
    }
    if needs.v4 {
        reply_to_kernel(needs, &read, &mut f);
    }
    f
}

/// `forwarding` on every interface, for `family`.
fn forwarding(needs: &Needs, family: Family, read: &impl Fn(&Key) -> Reading, f: &mut Findings) {
    let used = needs.uses(family);
    for iface in &needs.interfaces {
        let key = Key::new(family, iface, "forwarding");
        let consequence = format!(
            "the XDP program on {iface} asks the kernel's FIB (bpf_fib_lookup) where {} replies go and which backend packets are for this host, and the kernel refuses that lookup while forwarding is off: health-check answers would be taken for replies and every backend would look down",
            family.name()
        );
        match (read(&key), used) {
            (Reading::Value(1..), _) => {}
            (Reading::Value(v), true) => f.errors.push(format!("{} is {v}: {consequence}; fix: {}", key.dotted(), key.fix(1))),
            (Reading::Value(v), false) => f.warnings.push(format!(
                "{} is {v}: no {} VIP is configured now, but one added later would not work ({consequence}); fix: {}",
                key.dotted(),
                family.name(),
                key.fix(1)
            )),
            (Reading::Missing, true) => f.errors.push(match family {
                Family::V4 => format!("{iface} has no IPv4 settings (/proc/sys/{} is missing): is the interface there?", key.path()),
                Family::V6 => format!(
                    "{iface} has no IPv6 settings (/proc/sys/{} is missing) but an IPv6 VIP is configured: enable IPv6 on {iface} or remove the IPv6 VIPs",
                    key.path()
                ),
            }),
            (Reading::Missing, false) => {}
            (Reading::Unreadable(why), true) => f.errors.push(format!("cannot read {}: {why}", key.dotted())),
            (Reading::Unreadable(why), false) => f.warnings.push(format!("cannot read {}: {why}", key.dotted())),
        }
    }
}

/// `accept_local` and `rp_filter`, for IPv4 replies handed to the kernel.
fn reply_to_kernel(needs: &Needs, read: &impl Fn(&Key) -> Reading, f: &mut Findings) {
    let value = |scope: &str, name| match read(&Key::new(Family::V4, scope, name)) {
        Reading::Value(v) => Some(v),
        _ => None,
    };
    let (all_accept, all_rp) = (value("all", "accept_local"), value("all", "rp_filter"));
    let mut no_accept = Vec::new();
    let mut strict = Vec::new();
    for (i, iface) in needs.interfaces.iter().enumerate() {
        // The device's value or `all`'s, as the kernel combines them.
        let accept = match (value(iface, "accept_local"), all_accept) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) != 0 || b.unwrap_or(0) != 0),
        };
        if accept == Some(false) {
            no_accept.push(Key::new(Family::V4, iface, "accept_local"));
        }
        let rp = value(iface, "rp_filter").max(all_rp);
        if i > 0 && rp == Some(1) {
            strict.push(Key::new(Family::V4, iface, "rp_filter"));
        }
    }
    if !no_accept.is_empty() {
        let mut w = format!(
            "accept_local is off on {}: an IPv4 reply the data path hands to the kernel (pass_to_kernel_route: the client's next hop not resolved yet) has the VIP, a local address, as its source, and the kernel drops it as a martian unless accept_local is on where it arrives; fix:",
            names(&no_accept)
        );
        for key in &no_accept {
            let _ = write!(w, " {};", key.fix(1));
        }
        w.pop();
        f.warnings.push(w);
    }
    if !strict.is_empty() {
        let mut w = format!(
            "strict reverse-path filtering (rp_filter 1) on {}: an IPv4 reply handed to the kernel there has the VIP as its source, whose address is on {}, and fails the check even with accept_local; use loose mode:",
            names(&strict),
            needs.interfaces[0]
        );
        for key in &strict {
            let _ = write!(w, " {};", key.fix(2));
        }
        w.pop();
        f.warnings.push(w);
    }
}

fn names(keys: &[Key]) -> String {
    keys.iter().map(|k| k.scope.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn needs(interfaces: &[&str], v4: bool, v6: bool) -> Needs {
        Needs { interfaces: interfaces.iter().map(|s| s.to_string()).collect(), v4, v6 }
    }

    /// A host where every listed setting has its value, and the others are missing.
    fn host(values: &[(&str, i64)]) -> impl Fn(&Key) -> Reading {
        let map: HashMap<String, i64> = values.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        move |key: &Key| map.get(&key.dotted()).map_or(Reading::Missing, |v| Reading::Value(*v))
    }

    /// Forwarding on everywhere, accept_local on, rp_filter off: nothing to say.
    fn good(ifaces: &[&str]) -> Vec<(String, i64)> {
        let mut v = vec![("net.ipv4.conf.all.accept_local".to_owned(), 1), ("net.ipv4.conf.all.rp_filter".to_owned(), 0)];
        for i in ifaces {
            let i = i.replace('.', "/");
            for (name, value) in [("ipv4.conf.{}.forwarding", 1), ("ipv6.conf.{}.forwarding", 1), ("ipv4.conf.{}.accept_local", 0), ("ipv4.conf.{}.rp_filter", 0)] {
                v.push((format!("net.{}", name.replace("{}", &i)), value));
            }
        }
        v
    }

    fn with(base: Vec<(String, i64)>, changes: &[(&str, i64)]) -> Vec<(String, i64)> {
        let mut map: Vec<(String, i64)> = base;
        for (k, v) in changes {
            map.retain(|(key, _)| key != k);
            map.push((k.to_string(), *v));
        }
        map
    }

    fn judge_values(n: &Needs, values: &[(String, i64)]) -> Findings {
        let borrowed: Vec<(&str, i64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        judge(n, host(&borrowed))
    }

    #[test]
    fn a_well_set_host_has_nothing_to_say() {
        let n = needs(&["lbc", "lbb1", "eth0.100"], true, true);
        assert_eq!(judge_values(&n, &good(&["lbc", "lbb1", "eth0.100"])), Findings::default());
    }

    #[test]
    fn forwarding_off_where_the_program_runs_stops_the_agent_with_the_fix() {
        let n = needs(&["lbc", "lbb1", "lbb2"], true, false);
        let values = with(good(&["lbc", "lbb1", "lbb2"]), &[("net.ipv4.conf.lbb1.forwarding", 0), ("net.ipv4.conf.lbb2.forwarding", 0)]);
        let f = judge_values(&n, &values);
        assert_eq!(f.errors.len(), 2, "{f:#?}");
        assert!(f.errors[0].starts_with("net.ipv4.conf.lbb1.forwarding is 0: the XDP program on lbb1 asks the kernel's FIB (bpf_fib_lookup)"), "{f:#?}");
        assert!(f.errors[0].contains("every backend would look down"), "{f:#?}");
        assert!(f.errors[0].ends_with("; fix: sysctl -w net.ipv4.conf.lbb1.forwarding=1"), "{f:#?}");
        assert!(f.errors[1].starts_with("net.ipv4.conf.lbb2.forwarding is 0:") && f.errors[1].ends_with("sysctl -w net.ipv4.conf.lbb2.forwarding=1"));
        assert!(f.warnings.is_empty(), "{f:#?}");
    }

    #[test]
    fn a_family_no_vip_uses_only_warns() {
        let n = needs(&["lbc"], true, false);
        let f = judge_values(&n, &with(good(&["lbc"]), &[("net.ipv6.conf.lbc.forwarding", 0)]));
        assert!(f.errors.is_empty(), "{f:#?}");
        assert_eq!(f.warnings.len(), 1);
        assert!(f.warnings[0].starts_with("net.ipv6.conf.lbc.forwarding is 0: no IPv6 VIP is configured now"), "{f:#?}");
        let n = needs(&["lbc"], false, true);
        let f = judge_values(&n, &with(good(&["lbc"]), &[("net.ipv6.conf.lbc.forwarding", 0)]));
        assert_eq!(f.errors.len(), 1, "an IPv6 VIP needs it: {f:#?}");
        assert!(f.errors[0].ends_with("fix: sysctl -w net.ipv6.conf.lbc.forwarding=1"));
    }

    #[test]
    fn a_vlan_interface_is_written_with_a_slash() {
        let n = needs(&["eth0.100"], true, false);
        let f = judge_values(&n, &with(good(&["eth0.100"]), &[("net.ipv4.conf.eth0/100.forwarding", 0)]));
        assert_eq!(f.errors.len(), 1);
        assert!(f.errors[0].ends_with("sysctl -w net.ipv4.conf.eth0/100.forwarding=1"), "{f:#?}");
        let key = Key::new(Family::V4, "eth0.100", "forwarding");
        assert_eq!(key.path(), "net/ipv4/conf/eth0.100/forwarding");
    }

    #[test]
    fn missing_settings() {
        // No such interface: IPv4 has no settings for it.
        let f = judge(&needs(&["nope0"], true, false), host(&[]));
        assert_eq!(f.errors, ["nope0 has no IPv4 settings (/proc/sys/net/ipv4/conf/nope0/forwarding is missing): is the interface there?"]);
        // IPv6 off on the host: fine without IPv6 VIPs, an error with one.
        let v4_only: Vec<(String, i64)> = good(&["lbc"]).into_iter().filter(|(k, _)| !k.starts_with("net.ipv6")).collect();
        assert_eq!(judge_values(&needs(&["lbc"], true, false), &v4_only), Findings::default());
        let f = judge_values(&needs(&["lbc"], true, true), &v4_only);
        assert_eq!(f.errors.len(), 1);
        assert!(f.errors[0].starts_with("lbc has no IPv6 settings"), "{f:#?}");
        let unreadable = |_: &Key| Reading::Unreadable("permission denied".into());
        let f = judge(&needs(&["lbc"], true, false), unreadable);
        assert_eq!(f.errors, ["cannot read net.ipv4.conf.lbc.forwarding: permission denied"]);
    }

    #[test]
    fn accept_local_is_the_device_or_all() {
        let n = needs(&["lbc", "lbb1"], true, false);
        let off = with(good(&["lbc", "lbb1"]), &[("net.ipv4.conf.all.accept_local", 0)]);
        let f = judge_values(&n, &off);
        assert!(f.errors.is_empty());
        assert_eq!(f.warnings.len(), 1, "{f:#?}");
        assert!(f.warnings[0].starts_with("accept_local is off on lbc, lbb1: "), "{f:#?}");
        assert!(f.warnings[0].ends_with("fix: sysctl -w net.ipv4.conf.lbc.accept_local=1; sysctl -w net.ipv4.conf.lbb1.accept_local=1"), "{f:#?}");
        let device = with(off, &[("net.ipv4.conf.lbb1.accept_local", 1)]);
        let f = judge_values(&n, &device);
        assert!(f.warnings[0].starts_with("accept_local is off on lbc: "), "{f:#?}");
        // Only IPv4 replies have the issue.
        let f = judge_values(&needs(&["lbc", "lbb1"], false, true), &device);
        assert_eq!(f, Findings::default());
    }

    #[test]
    fn strict_rp_filter_off_the_vip_interface_warns() {
        let n = needs(&["lbc", "lbb1", "lbb2"], true, false);
        let base = good(&["lbc", "lbb1", "lbb2"]);
        // Strict on `all`: the larger value counts, so every interface is strict; the first
        // one holds the VIP addresses, where the check passes.
        let f = judge_values(&n, &with(base.clone(), &[("net.ipv4.conf.all.rp_filter", 1)]));
        assert_eq!(f.warnings.len(), 1, "{f:#?}");
        assert!(f.warnings[0].starts_with("strict reverse-path filtering (rp_filter 1) on lbb1, lbb2: "), "{f:#?}");
        assert!(f.warnings[0].contains("whose address is on lbc"), "{f:#?}");
        assert!(f.warnings[0].ends_with("use loose mode: sysctl -w net.ipv4.conf.lbb1.rp_filter=2; sysctl -w net.ipv4.conf.lbb2.rp_filter=2"), "{f:#?}");
        // Loose mode on the device wins over strict on `all` (the larger value counts).
        let loose = with(base.clone(), &[("net.ipv4.conf.all.rp_filter", 1), ("net.ipv4.conf.lbb1.rp_filter", 2), ("net.ipv4.conf.lbb2.rp_filter", 2)]);
        assert_eq!(judge_values(&n, &loose), Findings::default());
        assert_eq!(judge_values(&n, &with(base, &[("net.ipv4.conf.lbc.rp_filter", 1)])), Findings::default());
    }
}
