//! Next-hop MAC addresses from the kernel's routing and neighbour tables, resolved off the
//! packet path and stored with each backend, so the data path needs no FIB lookup per packet.

use std::{net::IpAddr, process::Command, time::Duration};

use lb_common::maps::NextHop;
use serde_json::Value;

use crate::netlink;

/// How long one netlink receive may wait for the kernel.
const NETLINK_TIMEOUT: Duration = Duration::from_millis(200);

/// The next hop towards `addr`: egress interface, its MAC and the neighbour's MAC (the
/// address itself or its gateway). `None` while the kernel has no complete neighbour entry;
/// any traffic to the address (a health probe) makes the kernel resolve it.
///
/// Asks the kernel over rtnetlink, in the calling thread's network namespace: the route to
/// `addr` (`RTM_GETROUTE`), the neighbour entry of its gateway or of `addr` on the egress
/// interface (`RTM_GETNEIGH`), and that interface's MAC (`RTM_GETLINK`).
pub fn resolve(addr: IpAddr) -> Option<NextHop> {
    match lookup(addr) {
        Ok(hop) => hop,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "next hop lookup failed");
            None
        }
    }
}

fn lookup(addr: IpAddr) -> Result<Option<NextHop>, netlink::Error> {
    let mut nl = netlink::Socket::open(NETLINK_TIMEOUT)?;
    let route = nl.route(addr)?;
    let Some(ifindex) = route.oif else {
        return Ok(None);
    };
    let via = route.gateway.unwrap_or(addr);
    let Some(dst_mac) = nl.neighbour(ifindex, via)?.and_then(|n| n.mac()) else {
        return Ok(None);
    };
    let src_mac = nl.link(ifindex)?.address.and_then(|a| <[u8; 6]>::try_from(a).ok());
    Ok(src_mac.map(|src_mac| NextHop { ifindex, dst_mac, src_mac }))
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

    /// A network namespace of its own, deleted (with its devices) when dropped, also when the
    /// test panics.
    struct Namespace(String);

    impl Namespace {
        fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("lbnl-{}-{n}", std::process::id());
            ip(&["netns", "add", &name]);
            Self(name)
        }

        /// `ip -n <ns> args...`, which must succeed.
        fn ip(&self, args: &[&str]) {
            ip(&[&["-n", &self.0], args].concat());
        }

        /// Runs `f` on a thread inside the namespace (sockets it opens live there); a panic in
        /// `f` is the caller's panic.
        fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            use std::os::fd::AsRawFd as _;
            let file = std::fs::File::open(format!("/var/run/netns/{}", self.0))
                .expect("open the namespace");
            let thread = std::thread::spawn(move || {
                // SAFETY: setns on a valid network namespace fd only changes this thread's
                // network namespace; the thread ends with `f`.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        }
    }

    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    #[test]
    fn resolves_next_hops_over_netlink_in_a_namespace() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test creates a network namespace and must run as root"
        );
        let ns = Namespace::new();
        // Both ends of the veth pair in the namespace; the peer's MAC differs from lbnl0's
        // and from every neighbour's, so a wrong interface or entry shows.
        ns.ip(&[
            "link",
            "add",
            "lbnl0",
            "address",
            "02:00:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "lbnl1",
            "address",
            "02:00:00:00:00:99",
        ]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "set", "lbnl1", "up"]);
        ns.ip(&["link", "set", "lbnl0", "up"]);
        ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "lbnl0"]);
        ns.ip(&["addr", "add", "2001:db8:99::1/64", "dev", "lbnl0", "nodad"]);
        for (addr, mac) in [
            ("10.99.0.2", "02:00:00:00:00:02"),
            ("10.99.0.254", "02:00:00:00:00:fe"),
            ("2001:db8:99::2", "02:00:00:00:06:02"),
            ("2001:db8:99::fe", "02:00:00:00:06:fe"),
            ("fe80::fe", "02:00:00:00:06:ff"),
        ] {
            ns.ip(&["neigh", "replace", addr, "lladdr", mac, "dev", "lbnl0", "nud", "permanent"]);
        }
        ns.ip(&["route", "add", "198.51.100.0/24", "via", "10.99.0.254", "dev", "lbnl0"]);
        ns.ip(&["route", "add", "203.0.113.0/24", "via", "10.99.0.253", "dev", "lbnl0"]); // no neighbour
        ns.ip(&["-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:99::fe", "dev", "lbnl0"]);
        ns.ip(&["-6", "route", "add", "2001:db8:2::/64", "via", "fe80::fe", "dev", "lbnl0"]);
        ns.ip(&["-6", "route", "add", "2001:db8:3::/64", "via", "2001:db8:99::fd", "dev", "lbnl0"]); // no neighbour

        ns.run(|| {
            let name = std::ffi::CString::new("lbnl0").unwrap();
            // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "lbnl0 exists in the namespace");
            let own = parse_mac("02:00:00:00:00:01").unwrap();
            let hop = |mac: &str| {
                Some(NextHop { ifindex, dst_mac: parse_mac(mac).unwrap(), src_mac: own })
            };
            let resolve = |a: &str| resolve(a.parse().unwrap());

            // Directly connected, and behind a gateway.
            assert_eq!(resolve("10.99.0.2"), hop("02:00:00:00:00:02"));
            assert_eq!(resolve("198.51.100.7"), hop("02:00:00:00:00:fe"));
            assert_eq!(resolve("2001:db8:99::2"), hop("02:00:00:00:06:02"));
            assert_eq!(resolve("2001:db8:1::7"), hop("02:00:00:00:06:fe"));
            assert_eq!(resolve("2001:db8:2::7"), hop("02:00:00:00:06:ff"), "a link-local gateway");

            // Routes but no neighbour entry (of the address, or of its gateway).
            assert_eq!(resolve("10.99.0.3"), None);
            assert_eq!(resolve("203.0.113.7"), None);
            assert_eq!(resolve("2001:db8:99::3"), None);
            assert_eq!(resolve("2001:db8:3::7"), None);
            // No route at all (the namespace has no default route).
            assert_eq!(resolve("192.0.2.1"), None);
            assert_eq!(resolve("2001:db8:ffff::1"), None);

            // The dump fallback for kernels before 5.0 finds the same entries.
            let mut nl = netlink::Socket::open(NETLINK_TIMEOUT).unwrap();
            for a in ["10.99.0.2", "2001:db8:99::fe", "10.99.0.3"] {
                let a: IpAddr = a.parse().unwrap();
                assert_eq!(
                    nl.neighbour_from_dump(ifindex, a).unwrap(),
                    nl.neighbour(ifindex, a).unwrap(),
                    "{a}"
                );
            }
        });

        // An entry that is not usable: a failed resolution, then one that goes stale (usable).
        ns.ip(&["neigh", "replace", "10.99.0.2", "dev", "lbnl0", "nud", "failed"]);
        ns.ip(&[
            "neigh",
            "replace",
            "10.99.0.4",
            "lladdr",
            "02:00:00:00:00:04",
            "dev",
            "lbnl0",
            "nud",
            "stale",
        ]);
        ns.run(|| {
            assert_eq!(resolve("10.99.0.2".parse().unwrap()), None, "a failed entry");
            let hop = resolve("10.99.0.4".parse().unwrap()).expect("a stale entry is usable");
            assert_eq!(hop.dst_mac, parse_mac("02:00:00:00:00:04").unwrap());
        });
    }
}
