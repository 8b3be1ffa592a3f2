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
