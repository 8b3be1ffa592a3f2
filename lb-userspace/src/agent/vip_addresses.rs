//! Makes the host answer ARP/NDP for its VIPs: each VIP address is on the first configured
//! interface (as a /32 or /128) while a VIP uses it. The agent owns every VIP address it finds
//! there, also one an earlier agent added before it was killed: it removes it when the last VIP
//! with that address goes, and on `lb teardown`. A stopping agent leaves them, as it leaves the
//! data path: traffic to the VIPs goes on.

use std::{collections::BTreeSet, net::IpAddr, process::Command};

/// The VIP addresses the agent owns on an interface.
pub struct VipAddresses {
    interface: String,
    owned: BTreeSet<IpAddr>,
    /// False when another program owns the addresses (`global.vip_addresses: external`).
    managed: bool,
}

impl VipAddresses {
    /// Manages addresses on `interface`.
    pub fn new(interface: String) -> Self {
        VipAddresses { interface, owned: BTreeSet::new(), managed: true }
    }

    /// Leaves every address alone (another program owns them).
    pub fn external(interface: String) -> Self {
        VipAddresses { interface, owned: BTreeSet::new(), managed: false }
    }

    /// Manages `addresses` on `interface` as if this agent had added them (to remove them).
    pub fn owning(interface: String, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        VipAddresses { interface, owned: addresses.into_iter().collect(), managed: true }
    }

    /// Adds missing addresses of `wanted`, takes those already there as its own, and removes
    /// those it owns that are no longer wanted.
    pub fn sync(&mut self, wanted: impl Iterator<Item = IpAddr>) {
        if !self.managed {
            return;
        }
        let wanted: BTreeSet<IpAddr> = wanted.collect();
        for addr in self.owned.difference(&wanted).copied().collect::<Vec<_>>() {
            self.del(addr);
        }
        for addr in wanted {
            if self.owned.contains(&addr) {
                continue;
            }
            if self.present(addr) {
                tracing::info!(%addr, interface = %self.interface, "VIP address found on the interface; the agent owns it");
                self.owned.insert(addr);
                continue;
            }
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            let mut cmd = Command::new("ip");
            cmd.args(["addr", "add", &format!("{addr}/{prefix}"), "dev", &self.interface]);
            if addr.is_ipv6() {
                cmd.arg("nodad");
            }
            match cmd.output() {
                Ok(out) if out.status.success() => {
                    tracing::info!(%addr, interface = %self.interface, "VIP address added (the host answers ARP/NDP for it)");
                    self.owned.insert(addr);
                }
                Ok(out) => tracing::warn!(%addr, error = %String::from_utf8_lossy(&out.stderr).trim(), "could not add the VIP address"),
                Err(e) => tracing::warn!(%addr, error = %e, "could not run ip"),
            }
        }
    }

    fn present(&self, addr: IpAddr) -> bool {
        Command::new("ip")
            .args(["-o", "addr", "show", "dev", &self.interface, "to", &addr.to_string()])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    }

    fn del(&mut self, addr: IpAddr) {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{addr}/{prefix}"), "dev", &self.interface])
            .output();
        self.owned.remove(&addr);
        tracing::info!(%addr, interface = %self.interface, "VIP address removed");
    }

    /// Removes every address the agent owns.
    pub fn clear(&mut self) {
        self.sync(std::iter::empty());
    }
}
