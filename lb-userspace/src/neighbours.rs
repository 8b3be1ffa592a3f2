//! Next-hop MAC addresses from the kernel's routing and neighbour tables, resolved off the
//! packet path and stored with each backend, so the data path needs no FIB lookup per packet.

use std::{net::IpAddr, process::Command};

use lb_common::maps::NextHop;
use serde_json::Value;

/// The next hop towards `addr`: egress interface, its MAC and the neighbour's MAC (the
/// address itself or its gateway). `None` while the kernel has no complete neighbour entry;
/// any traffic to the address (a health probe) makes the kernel resolve it.
pub fn resolve(addr: IpAddr) -> Option<NextHop> {
    let route = ip_json(&["route", "get", &addr.to_string()])?;
    let route = route.get(0)?;
    let dev = route.get("dev")?.as_str()?;
    let via = route
        .get("gateway")
        .and_then(Value::as_str)
        .unwrap_or(&addr.to_string())
        .to_owned();
    let neigh = ip_json(&["neigh", "show", "to", &via, "dev", dev])?;
    let lladdr = neigh.as_array()?.iter().find_map(|n| {
        let failed = n
            .get("state")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| s == "FAILED" || s == "INCOMPLETE"));
        if failed { None } else { n.get("lladdr")?.as_str().map(str::to_owned) }
    })?;
    Some(NextHop {
        ifindex: sysfs(dev, "ifindex")?.parse().ok()?,
        dst_mac: parse_mac(&lladdr)?,
        src_mac: parse_mac(&sysfs(dev, "address")?)?,
    })
}

/// An 802.1Q device: its index, its parent's index and its VLAN id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanDevice {
    /// The VLAN device's interface index.
    pub ifindex: u32,
    /// Its parent's interface index.
    pub parent: u32,
    /// The VLAN id.
    pub vlan_id: u16,
}

/// The 802.1Q devices whose parent is one of `parents` (by name), from `ip -d -j link show`.
pub fn vlan_devices(parents: &[String]) -> Vec<VlanDevice> {
    ip_json(&["-d", "link", "show"]).map(|links| vlans_in(&links, parents)).unwrap_or_default()
}

/// The 802.1Q devices on `parents` in `ip -d -j link show` output.
fn vlans_in(links: &Value, parents: &[String]) -> Vec<VlanDevice> {
    let Some(links) = links.as_array() else {
        return Vec::new();
    };
    let index_of = |name: &str| {
        links
            .iter()
            .find(|l| l.get("ifname").and_then(Value::as_str) == Some(name))
            .and_then(|l| l.get("ifindex")?.as_u64())
    };
    links
        .iter()
        .filter_map(|l| {
            let info = l.get("linkinfo")?;
            if info.get("info_kind")?.as_str()? != "vlan" {
                return None;
            }
            let parent = l.get("link")?.as_str()?;
            if !parents.iter().any(|p| p == parent) {
                return None;
            }
            Some(VlanDevice {
                ifindex: u32::try_from(l.get("ifindex")?.as_u64()?).ok()?,
                parent: u32::try_from(index_of(parent)?).ok()?,
                vlan_id: u16::try_from(info.get("info_data")?.get("id")?.as_u64()?).ok()?,
            })
        })
        .collect()
}

fn ip_json(args: &[&str]) -> Option<Value> {
    let out = Command::new("ip").arg("-j").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn sysfs(dev: &str, what: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/{what}"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_vlan_devices_on_the_given_parents() {
        // The shape `ip -d -j link show` prints (iproute2 6.1), trimmed.
        let links: Value = serde_json::from_str(
            r#"[
              {"ifindex":1,"ifname":"lo","linkinfo":null},
              {"ifindex":2,"ifname":"eth0"},
              {"ifindex":3,"ifname":"eth1"},
              {"ifindex":7,"link":"eth0","ifname":"eth0.100","linkinfo":{"info_kind":"vlan","info_data":{"protocol":"802.1Q","id":100,"flags":["REORDER_HDR"]}}},
              {"ifindex":8,"link":"eth1","ifname":"eth1.200","linkinfo":{"info_kind":"vlan","info_data":{"protocol":"802.1Q","id":200}}},
              {"ifindex":9,"link":"eth1","ifname":"mv0","linkinfo":{"info_kind":"macvlan","info_data":{"mode":"bridge"}}}
            ]"#,
        )
        .unwrap();
        assert_eq!(
            vlans_in(&links, &["eth0".to_owned()]),
            vec![VlanDevice { ifindex: 7, parent: 2, vlan_id: 100 }]
        );
        assert_eq!(vlans_in(&links, &["eth0".to_owned(), "eth1".to_owned()]).len(), 2);
        assert!(vlans_in(&links, &["eth2".to_owned()]).is_empty());
    }

    #[test]
    fn parses_macs() {
        assert_eq!(parse_mac("02:1b:00:0a:ff:01"), Some([2, 0x1b, 0, 0x0a, 0xff, 1]));
        assert_eq!(parse_mac("02:1b:00:0a:ff"), None);
        assert_eq!(parse_mac("02:1b:00:0a:ff:01:02"), None);
        assert_eq!(parse_mac("zz:1b:00:0a:ff:01"), None);
    }

    #[test]
    fn loopback_has_a_route_but_no_neighbour() {
        // 127.0.0.1 routes via lo, which has no neighbour entries: not resolvable.
        assert_eq!(resolve("127.0.0.1".parse().unwrap()), None);
    }
}
