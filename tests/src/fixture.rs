//! Pieces the kernel packet fixtures share (`tests/tests/fixtures.rs`, `flows.rs`, `icmp.rs`):
//! the standard pools, a loaded program with a client side, and the frames a flow is made of.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::maps::{FlowKey, VIP_FLAG_LEAST_CONN, VIP_FLAG_ROUND_ROBIN};
use lb_userspace::dataplane::{Service, Sizing};

use crate::{
    harness::{ACK, LB_MAC, Lb, SYN_ACK, VIP4, VIP6, XDP_TX, backend_mac, flow_key, require_root, service, tcp, test_sizing},
    packet::{Frame, L4},
};

/// Backend address 10.1.0.`last`.
pub fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, 0, last))
}

/// Backend address 2001:db8:b::`last`.
pub fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, last))
}

/// Three IPv4 backends 10.1.0.{1,2,3}:8080 (slots 1..=3) behind VIP4:80 over `proto`.
pub fn pool4(proto: u8) -> Service {
    service(1, VIP4, 80, proto, 1, &[(v4(1), 8080, 1), (v4(2), 8080, 1), (v4(3), 8080, 1)])
}

/// Three IPv6 backends on port 8443 (slots 11..=13) behind VIP6:443 over `proto`.
pub fn pool6(proto: u8) -> Service {
    service(2, VIP6, 443, proto, 11, &[(v6(1), 8443, 1), (v6(2), 8443, 1), (v6(3), 8443, 1)])
}

/// The node's IPv4 address: the outer source of [`dsr`] services' IPv4 tunnels.
pub const NODE4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1));
/// The node's IPv6 address: the outer source of [`dsr`] services' IPv6 tunnels.
pub const NODE6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 1));

/// `svc` in direct server return mode `forwarding` (`lb_common::encap::FORWARD_*`): each
/// backend with the node's address of its family as outer source, the default GUE port and a
/// tunnel MTU of `mtu` (0: unchecked). Its backends' ports should be the VIP's.
pub fn dsr(mut svc: Service, forwarding: u8, mtu: u16) -> Service {
    for b in &mut svc.backends {
        b.backend.forwarding = forwarding;
        b.backend.vip_id = svc.id as u16;
        if lb_common::encap::is_encapsulated(forwarding) {
            b.backend.tunnel.src = crate::harness::addr(if b.backend.family == lb_common::maps::FAMILY_V4 { NODE4 } else { NODE6 });
            b.backend.tunnel.gue_port = lb_common::encap::DEFAULT_GUE_PORT;
            b.backend.tunnel.mtu = mtu;
        }
    }
    svc
}

/// The program loaded with `sizing` in a namespace with a client side, serving `services`.
pub fn setup_with(sizing: &Sizing, services: &[&Service]) -> Lb {
    require_root();
    let mut lb = Lb::with_client_side(sizing);
    for svc in services {
        lb.dp.maps.apply_service(svc).expect("apply service");
    }
    lb
}

/// [`setup_with`] the test sizes.
pub fn setup(services: &[&Service]) -> Lb {
    setup_with(&test_sizing(0x5eed), services)
}

/// Source and destination port of a frame.
pub fn ports(f: &Frame) -> (u16, u16) {
    match f.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => (sport, dport),
    }
}

/// `f` with TCP flags `new` (unchanged for UDP).
pub fn with_flags(f: &Frame, new: u8) -> Frame {
    let mut f = f.clone();
    if let L4::Tcp { flags, .. } = &mut f.l4 {
        *flags = new;
    }
    f
}

/// The backend's reply to client frame `f`, sent from backend `id` at `ip`:`port`, with TCP
/// flags `flags` (ignored for UDP).
pub fn reply_of(f: &Frame, id: u32, ip: IpAddr, port: u16, flags: u8) -> Frame {
    let (csport, _) = ports(f);
    Frame {
        dst_mac: LB_MAC,
        src_mac: backend_mac(id),
        vlan: f.vlan,
        src: ip,
        dst: f.src,
        l4: match f.l4 {
            L4::Tcp { .. } => tcp(port, csport, flags),
            L4::Udp { no_checksum, .. } => L4::Udp { sport: port, dport: csport, no_checksum },
        },
        payload: b"world!".to_vec(),
    }
}

/// [`reply_of`] with SYN and ACK set.
pub fn syn_ack_of(f: &Frame, id: u32, ip: IpAddr, port: u16) -> Frame {
    reply_of(f, id, ip, port, SYN_ACK)
}

/// What the data path should make of backend reply `reply` to client frame `first`: its
/// source rewritten to the VIP, sent from the client side's MAC to the client's.
pub fn translated(reply: &Frame, first: &Frame) -> Frame {
    let mut expected = reply.clone();
    expected.src = first.dst;
    match &mut expected.l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = ports(first).1,
    }
    expected.dst_mac = crate::harness::CLIENT_MAC;
    expected.src_mac = LB_MAC;
    expected
}

/// The backend slot a forwarded frame was sent to (by its destination MAC).
pub fn sent_to(out: &[u8]) -> u32 {
    u16::from_be_bytes([out[4], out[5]]) as u32
}

/// Establishes `flow` (its SYN, then an ACK) and returns its backend. A round-robin or
/// least-conn VIP's ACK inserts the flow's entry; a Maglev VIP with stable backends records
/// nothing.
pub fn establish(lb: &Lb, svc: &Service, flow: &Frame) -> u32 {
    let key: FlowKey = flow_key(flow);
    let chosen = lb.ring_choice(svc, &key);
    assert_eq!(lb.run(&flow.bytes()).action, XDP_TX);
    assert_eq!(lb.run(&with_flags(flow, ACK).bytes()).action, XDP_TX);
    let stateful = svc.flags & (VIP_FLAG_ROUND_ROBIN | VIP_FLAG_LEAST_CONN) != 0;
    assert_eq!(lb.dp.maps.conn(&key).unwrap().map(|e| e.backend_id), stateful.then_some(chosen));
    chosen
}
