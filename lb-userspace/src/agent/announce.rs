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
use lb_common::maps::BackendState;

/// Whether an address is announced, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Announced.
    pub announce: bool,
    /// Why, in words.
    pub reason: String,
}

/// The decision for each VIP address: `vips` as the runtime holds them, `attached` whether the
/// self-check found the program on every interface (else why not).
pub fn decide<'a>(vips: impl IntoIterator<Item = &'a VipRuntime>, attached: Result<(), &str>) -> BTreeMap<IpAddr, Decision> {
    let mut up: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for v in vips {
        let n = v.backends.iter().filter(|b| b.effective() == BackendState::Up && b.weight > 0).count();
        *up.entry(v.config.address).or_insert(0) += n;
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

    /// Whether this node should serve `addr` (the decision, announced or not): what
    /// `lb check` reports to a VRRP track script.
    pub fn serving(&self, addr: IpAddr) -> bool {
        self.current.get(&addr).is_some_and(|d| d.announce)
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
    fn off_without_a_table() {
        let mut a = Announcer::new(None);
        a.apply(decide(&runtime().vips, Ok(())));
        let dns = "2001:db8::53".parse().unwrap();
        let d = a.decision(dns);
        assert!(!d.announce && d.reason.contains("announce_table unset"));
        assert!(a.serving(dns), "the decision stands for lb check");
        assert!(!a.serving("10.0.0.1".parse().unwrap()));
    }
}
