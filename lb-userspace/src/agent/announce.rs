//! Health-gated announcement: the agent decides, per VIP address, whether this node should
//! attract its traffic, and publishes the decision as a route in a kernel routing table
//! (`global.announce_table`) that a routing daemon exports (BIRD's kernel protocol with
//! `learn`, FRR's `redistribute table`, GoBGP's zebra import...). The agent speaks no routing
//! protocol itself, and the routes themselves are added and removed by [`crate::host`], which
//! records them.
//!
//! An address is announced while the data path is attached on every interface and at least one
//! VIP on it has a backend that takes new flows; it is withdrawn when that stops, and on
//! `lb teardown`. A stopping agent leaves its routes: the data path goes on forwarding.

use std::{collections::BTreeMap, net::IpAddr};

use super::state::VipRuntime;
use lb_common::serving::backends_taking_new_flows;

/// Whether an address is announced, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Announced.
    pub announce: bool,
    /// Why, in words.
    pub reason: String,
}

/// The backends of `v` that take new flows ([`lb_common::serving`]).
pub fn taking_new_flows(v: &VipRuntime) -> u32 {
    backends_taking_new_flows(v.backends.iter().map(|b| (b.effective(), b.weight)))
}

/// Whether this node serves a VIP, and why: what `lb check` reports for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    /// Served.
    pub serving: bool,
    /// Why, in words.
    pub reason: String,
}

/// Whether this node serves VIP `v`: its program runs on every interface (`attached`, else why
/// not) and one of its own backends takes new flows.
pub fn serving(v: &VipRuntime, attached: Result<(), &str>) -> Serving {
    match (attached, taking_new_flows(v)) {
        (Err(why), _) => Serving { serving: false, reason: why.to_owned() },
        (Ok(()), 0) => Serving { serving: false, reason: "no backend takes new flows".into() },
        (Ok(()), 1) => Serving { serving: true, reason: "1 backend takes new flows".into() },
        (Ok(()), n) => Serving { serving: true, reason: format!("{n} backends take new flows") },
    }
}

/// The decision for each VIP address: `vips` as the runtime holds them, `attached` whether the
/// self-check found the program on every interface (else why not).
pub fn decide<'a>(vips: impl IntoIterator<Item = &'a VipRuntime>, attached: Result<(), &str>) -> BTreeMap<IpAddr, Decision> {
    let mut up: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for v in vips {
        *up.entry(v.config.address).or_insert(0) += taking_new_flows(v);
    }
    up.into_iter()
        .map(|(addr, n)| {
            let decision = match (&attached, n) {
                (Err(why), _) => Decision { announce: false, reason: format!("withdrawn: {why}") },
                (Ok(()), 0) => Decision { announce: false, reason: "withdrawn: no backend takes new flows".into() },
                (Ok(()), 1) => Decision { announce: true, reason: "announced: 1 backend takes new flows".into() },
                (Ok(()), n) => Decision { announce: true, reason: format!("announced: {n} backends take new flows") },
            };
            (addr, decision)
        })
        .collect()
}

/// The decisions in force, and the announcement table.
pub struct Announcer {
    table: Option<u32>,
    current: BTreeMap<IpAddr, Decision>,
}

impl Announcer {
    /// Publishes into `table` (`None`: announcement off, every decision says so).
    pub fn new(table: Option<u32>) -> Self {
        Announcer { table, current: BTreeMap::new() }
    }

    /// The decision in force for `addr`.
    pub fn decision(&self, addr: IpAddr) -> Decision {
        match (self.table, self.current.get(&addr)) {
            (None, _) => Decision { announce: false, reason: "announcement off (global.announce_table unset)".into() },
            (Some(_), Some(d)) => d.clone(),
            (Some(_), None) => Decision { announce: false, reason: "withdrawn: not decided yet".into() },
        }
    }

    /// Takes `decisions`, logs each change, and returns the addresses to announce (the routes
    /// [`crate::host::HostState::set_routes`] keeps).
    pub fn apply(&mut self, decisions: BTreeMap<IpAddr, Decision>) -> Vec<IpAddr> {
        if let Some(table) = self.table {
            for (addr, old) in &self.current {
                if old.announce && !decisions.get(addr).is_some_and(|d| d.announce) {
                    tracing::info!(%addr, table, reason = %decisions.get(addr).map_or("the VIP was removed", |d| &d.reason), "VIP withdrawn");
                }
            }
            for (addr, new) in &decisions {
                if new.announce && !self.current.get(addr).is_some_and(|d| d.announce) {
                    tracing::info!(%addr, table, reason = %new.reason, "VIP announced");
                }
            }
        }
        self.current = decisions;
        self.current.iter().filter(|(_, d)| d.announce).map(|(a, _)| *a).collect()
    }

    /// The announcement table (`None`: announcement off).
    pub fn table(&self) -> Option<u32> {
        self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{agent::state::Runtime, config, health::Health};

    const YAML: &str = "\
global:
  interfaces: [eth0]
  ring_size: 307
vips:
  - name: web
    address: 10.0.0.1
    port: 80
    backends:
      - address: 10.1.0.1
      - address: 10.1.0.2
  - name: web-tls
    address: 10.0.0.1
    port: 443
    health_check:
      type: none
    backends:
      - address: 10.1.0.3
        weight: 0
  - name: dns
    address: 2001:db8::53
    port: 53
    protocol: udp
    health_check:
      type: none
    backends:
      - address: 2001:db8:1::1
";

    fn runtime() -> Runtime {
        Runtime::new(&config::parse("t", YAML).unwrap()).unwrap().0
    }

    #[test]
    fn an_address_is_announced_while_one_of_its_vips_has_a_backend_taking_flows() {
        let mut rt = runtime();
        let web: IpAddr = "10.0.0.1".parse().unwrap();
        let dns: IpAddr = "2001:db8::53".parse().unwrap();
        let d = decide(&rt.vips, Ok(()));
        // web's backends start down until checked; web-tls's only backend has weight 0.
        assert_eq!(d[&web], Decision { announce: false, reason: "withdrawn: no backend takes new flows".into() });
        assert_eq!(d[&dns], Decision { announce: true, reason: "announced: 1 backend takes new flows".into() });
        let b = rt.vip("web").unwrap().backends[0].clone();
        rt.set_health(b.id, b.generation, Health::Up, &mut Default::default());
        assert!(decide(&rt.vips, Ok(()))[&web].announce);
        let detached = decide(&rt.vips, Err("no program on eth0"));
        assert!(detached.values().all(|d| !d.announce && d.reason == "withdrawn: no program on eth0"));
    }

    #[test]
    fn a_vip_is_served_by_its_own_backends_not_by_those_of_its_address() {
        let mut rt = runtime();
        let said = |rt: &Runtime, name: &str| serving(rt.vip(name).unwrap(), Ok(()));
        assert_eq!(said(&rt, "dns"), Serving { serving: true, reason: "1 backend takes new flows".into() });
        assert_eq!(said(&rt, "web").reason, "no backend takes new flows", "checked backends start down");
        let b = rt.vip("web").unwrap().backends[0].clone();
        rt.set_health(b.id, b.generation, Health::Up, &mut Default::default());
        assert!(decide(&rt.vips, Ok(()))[&"10.0.0.1".parse().unwrap()].announce, "the address is announced for web");
        assert!(said(&rt, "web").serving);
        // web-tls shares web's address, but its only backend has weight 0.
        assert_eq!(said(&rt, "web-tls"), Serving { serving: false, reason: "no backend takes new flows".into() });
        assert_eq!(serving(rt.vip("dns").unwrap(), Err("no pinned link on eth0")).reason, "no pinned link on eth0");
    }

    #[test]
    fn off_without_a_table() {
        let mut a = Announcer::new(None);
        a.apply(decide(&runtime().vips, Ok(())));
        let dns = "2001:db8::53".parse().unwrap();
        let d = a.decision(dns);
        assert!(!d.announce && d.reason.contains("announce_table unset"));
    }
}
