//! Makes the host answer ARP/NDP for its VIPs: each VIP address is added to the first
//! configured interface (as a /32 or /128) while a VIP uses it, and removed when the last
//! VIP with that address goes or the agent stops. Addresses that were already there are left
//! alone.

use std::{collections::BTreeSet, net::IpAddr, process::Command};

/// The VIP addresses the agent added to an interface.
pub struct VipAddresses {
    interface: String,
    added: BTreeSet<IpAddr>,
}

impl VipAddresses {
    /// Manages addresses on `interface`.
    pub fn new(interface: String) -> Self {
        VipAddresses { interface, added: BTreeSet::new() }
    }

    /// Adds missing addresses of `wanted` and removes those the agent added that are no
    /// longer wanted.
    pub fn sync(&mut self, wanted: impl Iterator<Item = IpAddr>) {
        let wanted: BTreeSet<IpAddr> = wanted.collect();
        for addr in self.added.difference(&wanted).copied().collect::<Vec<_>>() {
            self.del(addr);
        }
        for addr in wanted {
            if self.added.contains(&addr) || self.present(addr) {
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
                    self.added.insert(addr);
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
        self.added.remove(&addr);
        tracing::info!(%addr, interface = %self.interface, "VIP address removed");
    }

    /// Removes every address the agent added.
    pub fn clear(&mut self) {
        self.sync(std::iter::empty());
    }
}
