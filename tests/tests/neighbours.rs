//! Next hops over rtnetlink (`lb_userspace::neighbours::Resolver`) in a namespace of their own:
//! directly connected addresses and addresses behind a gateway (one link-local), routes
//! without a neighbour entry, no route at all, and neighbour entries that are failed or stale.
//! Needs root.

use std::net::IpAddr;

use lb_common::maps::NextHop;
use lb_tests::{harness::require_root, netns::Netns};
use lb_userspace::{
    neighbours::{PathInfo, Resolution, Resolver, parse_mac},
    netlink::Netlink,
};

/// Resolves `addrs` on a new connection in the calling thread's network namespace.
fn resolve_all(addrs: &[&str]) -> Vec<Option<NextHop>> {
    resolutions(addrs).into_iter().map(|r| r.hop).collect()
}

/// The resolver's whole answers for `addrs`, next hops and paths.
fn resolutions(addrs: &[&str]) -> Vec<Resolution> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let netlink = Netlink::open().unwrap();
        let resolver = Resolver::new(netlink.handle());
        let mut out = Vec::new();
        for a in addrs {
            out.push(resolver.resolve(a.parse::<IpAddr>().unwrap()).await);
        }
        out
    })
}

#[test]
fn loopback_has_a_route_but_no_neighbour() {
    require_root();
    let ns = Netns::new("nh");
    // 127.0.0.1 routes via lo, which has no neighbour entries: not resolvable.
    assert_eq!(ns.run_in(|| resolve_all(&["127.0.0.1"])), vec![None]);
}

#[test]
fn resolves_next_hops_over_netlink_in_a_namespace() {
    require_root();
    let ns = Netns::new("nh");
    // Both ends of the veth pair in the namespace; the peer's MAC differs from lbnl0's and
    // from every neighbour's, so a wrong interface or entry shows.
    ns.exec(&["ip", "link", "add", "lbnl0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "lbnl1", "address", "02:00:00:00:00:99"]);
    ns.exec(&["ip", "link", "set", "lbnl1", "up"]);
    ns.exec(&["ip", "link", "set", "lbnl0", "up"]);
    ns.exec(&["ip", "addr", "add", "10.99.0.1/24", "dev", "lbnl0"]);
    ns.exec(&["ip", "addr", "add", "2001:db8:99::1/64", "dev", "lbnl0", "nodad"]);
    for (addr, mac) in [
        ("10.99.0.2", "02:00:00:00:00:02"),
        ("10.99.0.254", "02:00:00:00:00:fe"),
        ("2001:db8:99::2", "02:00:00:00:06:02"),
        ("2001:db8:99::fe", "02:00:00:00:06:fe"),
        ("fe80::fe", "02:00:00:00:06:ff"),
    ] {
        ns.exec(&["ip", "neigh", "replace", addr, "lladdr", mac, "dev", "lbnl0", "nud", "permanent"]);
    }
    ns.exec(&["ip", "route", "add", "198.51.100.0/24", "via", "10.99.0.254", "dev", "lbnl0"]);
    ns.exec(&["ip", "route", "add", "203.0.113.0/24", "via", "10.99.0.253", "dev", "lbnl0"]); // no neighbour
    ns.exec(&["ip", "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:99::fe", "dev", "lbnl0"]);
    ns.exec(&["ip", "-6", "route", "add", "2001:db8:2::/64", "via", "fe80::fe", "dev", "lbnl0"]);
    ns.exec(&["ip", "-6", "route", "add", "2001:db8:3::/64", "via", "2001:db8:99::fd", "dev", "lbnl0"]); // no neighbour
    let ifindex = ns.ifindex("lbnl0");
    let own = parse_mac("02:00:00:00:00:01").unwrap();
    let hop = |mac: &str| Some(NextHop { ifindex, dst_mac: parse_mac(mac).unwrap(), src_mac: own });

    let found = ns.run_in(|| {
        resolve_all(&[
            // Directly connected, and behind a gateway (the last one link-local).
            "10.99.0.2",
            "198.51.100.7",
            "2001:db8:99::2",
            "2001:db8:1::7",
            "2001:db8:2::7",
            // Routes but no neighbour entry (of the address, or of its gateway).
            "10.99.0.3",
            "203.0.113.7",
            "2001:db8:99::3",
            "2001:db8:3::7",
            // No route at all (the namespace has no default route).
            "192.0.2.1",
            "2001:db8:ffff::1",
        ])
    });
    assert_eq!(
        found,
        vec![
            hop("02:00:00:00:00:02"),
            hop("02:00:00:00:00:fe"),
            hop("02:00:00:00:06:02"),
            hop("02:00:00:00:06:fe"),
            hop("02:00:00:00:06:ff"),
            None,
            None,
            None,
            None,
            None,
            None,
        ]
    );
    // The path: the route's source (the outer source of the tunnel modes) and the egress MTU,
    // also while the neighbour is unknown; nothing without a route.
    ns.exec(&["ip", "link", "set", "lbnl0", "mtu", "9000"]);
    let paths: Vec<PathInfo> = ns.run_in(|| resolutions(&["10.99.0.2", "203.0.113.7", "2001:db8:99::3", "192.0.2.1"])).into_iter().map(|r| r.path).collect();
    let path = |src: &str| PathInfo { source: Some(src.parse().unwrap()), mtu: 9000 };
    assert_eq!(paths, vec![path("10.99.0.1"), path("10.99.0.1"), path("2001:db8:99::1"), PathInfo::default()]);

    // An entry that is not usable: a failed resolution, then one that goes stale (usable).
    ns.exec(&["ip", "neigh", "replace", "10.99.0.2", "dev", "lbnl0", "nud", "failed"]);
    ns.exec(&["ip", "neigh", "replace", "10.99.0.4", "lladdr", "02:00:00:00:00:04", "dev", "lbnl0", "nud", "stale"]);
    let found = ns.run_in(|| resolve_all(&["10.99.0.2", "10.99.0.4"]));
    assert_eq!(found[0], None, "a failed entry");
    assert_eq!(found[1].expect("a stale entry is usable").dst_mac, parse_mac("02:00:00:00:00:04").unwrap());
}

#[test]
fn an_unresolved_next_hop_is_resolved_by_the_next_lookups() {
    require_root();
    let ns = Netns::new("nh");
    let peer = Netns::new("nhp");
    ns.exec(&["ip", "link", "add", "lbnl0", "type", "veth", "peer", "name", "lbnl1", "netns", peer.name()]);
    ns.exec(&["ip", "addr", "add", "10.98.0.1/24", "dev", "lbnl0"]);
    ns.exec(&["ip", "link", "set", "lbnl0", "up"]);
    peer.exec(&["ip", "addr", "add", "10.98.0.2/24", "dev", "lbnl1"]);
    peer.exec(&["ip", "link", "set", "lbnl1", "up"]);
    let peer_mac = peer.mac("lbnl1");
    // Nothing was sent to the peer: no neighbour entry, so the first lookup finds no hop, but
    // makes the kernel resolve it (a direct server return backend's packets never reach the
    // kernel, which would otherwise); a later lookup finds it.
    let found = ns.run_in(move || {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let hop = resolve_all(&["10.98.0.2"])[0];
            seen.push(hop.map(|h| h.dst_mac));
            if hop.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        seen
    });
    assert_eq!(found[0], None, "{found:?}");
    assert_eq!(found.last().copied().flatten(), Some(peer_mac), "{found:?}");
}
