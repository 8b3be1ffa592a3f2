//! The HA lab (`lb_tests::ha`) with direct server return VIPs (`HaLab::create_dsr`, issue 19
//! item 8): two nodes announce the VIPs to the router (BGP, ECMP, BFD) and tunnel the clients'
//! packets to the backends, which answer through the router's port on their segment. Under
//! long-lived connections (IPv4 and IPv6) the node holding the backends' VRRP gateway crashes:
//! the connections it carried go on through the other node (which chooses the same backends),
//! and the gateway, though it moves, carried none of the replies. Needs root, bird2 and
//! keepalived. Run with `--nocapture` to see the figures.

use std::{thread, time::Duration};

use lb_tests::{
    dsr::iface_bytes,
    ha::{HaLab, Load, ROUTER_SEGMENT_IFACE, VIP4, VIP6},
};

/// Long-lived connections per VIP.
const SESSIONS: usize = 20;
/// A request on each long-lived connection every...
const INTERVAL: Duration = Duration::from_millis(100);

fn backend_bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_lb-test-backend").as_ref()
}

/// Over `window` of load: datagrams the gateway holder forwarded, bytes it received on its
/// segment interface `bk`, and bytes the router received on `rs` (the backends' replies).
fn gateway_over(lab: &HaLab, holder: usize, window: Duration) -> (u64, u64, u64) {
    let node = &lab.nodes[holder - 1].ns;
    let read = || {
        (lab.kernel_forwarded(holder - 1).expect("forwarded datagrams"), iface_bytes(node, "bk").expect("bk counters").rx, iface_bytes(&lab.router_ns, ROUTER_SEGMENT_IFACE).expect("rs counters").rx)
    };
    let before = read();
    thread::sleep(window);
    let after = read();
    (after.0 - before.0, after.1 - before.1, after.2 - before.2)
}

#[test]
fn tunnel_vips_keep_long_lived_connections_across_a_node_crash_and_the_gateway_carries_no_reply() {
    let mut lab = HaLab::create_dsr(2, 3, backend_bin(), "tunnel").unwrap_or_else(|e| panic!("HA lab with DSR: {e:#}"));
    let holder = lab.gateway_holder().expect("a node holds the gateway");
    let load = Load::start(&lab, SESSIONS, INTERVAL, 1).unwrap_or_else(|e| panic!("load: {e:#}"));
    thread::sleep(Duration::from_millis(500));
    let (gateway_forwarded, gateway_rx, replies_rx) = gateway_over(&lab, holder, Duration::from_secs(2));
    eprintln!(
        "[steady] over 2 s of load: the router received {replies_rx} bytes of replies from the backends on {ROUTER_SEGMENT_IFACE}; \
         the gateway holder n{holder} forwarded {gateway_forwarded} datagrams and received {gateway_rx} bytes on bk \
         (the answers to its own health checks, VRRP adverts, neighbour discovery)"
    );
    let t0 = lab.crash(holder - 1);
    let fib = lab.monitor().wait_both(t0, Duration::from_secs(10));
    let moved = lab.wait_gateway_moved(holder, t0, Duration::from_secs(10));
    let hops = (lab.router_next_hops(VIP4.into()), lab.router_next_hops(VIP6.into()));
    thread::sleep(Duration::from_secs(3));
    let r = load.finish();
    let fib = fib.unwrap_or_else(|| panic!("the router's FIB did not change within 10 s\n{}", lab.logs()));
    let converged = t0 + fib;
    eprintln!("[crash] router FIB changed {fib:?} after the kill of n{holder} (next hops v4 {:?} v6 {:?}); gateway moved after {moved:?}", hops.0, hops.1);
    r.print("crash", t0, converged, 2);
    let survivor = 3 - holder;
    assert_eq!(hops, (vec![survivor], vec![survivor]), "only the other node is left in the router's FIB");
    assert!(r.on_node(holder) > 0 && r.on_node(survivor) > 0, "long-lived connections on both nodes");
    assert!(replies_rx > 0, "the backends' replies reach the router on its segment port");
    assert!(gateway_forwarded <= 10, "the gateway forwarded {gateway_forwarded} datagrams: replies went through it");
    assert!(gateway_rx * 10 < replies_rx, "the gateway holder received {gateway_rx} bytes on bk against {replies_rx} of replies");
    assert!(r.survival() >= 0.99, "survival {:.1} %: {:?}", 100.0 * r.survival(), r.errors(5));
    assert_eq!(r.moved(), 0, "no connection moved to another backend");
    assert_eq!(r.failed_after(converged), 0, "failed new connections after convergence: {:?}", r.errors(5));
}
