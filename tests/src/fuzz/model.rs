//! The configuration the fuzzer runs the data path with, and what it implies, told from the
//! services alone (never read back from the data path): which VIP a destination is, which
//! VIP a backend endpoint answers for, which sources are martian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    encap::{FORWARD_DIRECT, FORWARD_GUE, FORWARD_TUNNEL, TUNNEL_FLAG_MSS_CLAMP},
    maps::{PROTO_TCP, PROTO_UDP, VIP_FLAG_HASH_SRC_ONLY, VIP_FLAG_ROUND_ROBIN},
};
use lb_userspace::dataplane::Service;

use crate::{
    fixture::{dsr, establish, setup_with, v4, v6},
    harness::{ACK, CLIENT4, CLIENT6, Lb, VIP4, VIP6, XDP_TX, backend_endpoint, from_client, service, tcp, test_sizing},
    packet::Frame,
};

/// The fragments VIP's address: its only UDP VIP hashes on the source alone.
pub const FRAG_VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
/// Client ports whose flows are established before the campaign (to every TCP VIP).
pub const ESTABLISHED_PORTS: std::ops::Range<u16> = 40000..40004;
/// A router on the backends' side (sends ICMPv6 errors about clients' packets).
pub const ROUTER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0xfe));
/// The client of the issue 18 report's first defect (10.77.1.2), served by [`ISSUE18_VIP`].
pub const ISSUE18_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 2));
/// The VIP of the issue 18 report's first defect: a backend's ICMP error to
/// [`ISSUE18_CLIENT`], rewritten to it, came out with a wrong IPv4 header checksum.
pub const ISSUE18_VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 10));
/// A router on the clients' side (sends ICMPv4 errors about replies).
pub const ROUTER4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254));

/// The IPv4 address of the direct server return VIPs.
pub const DSR_VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
/// The IPv6 address of the direct server return VIPs.
pub const DSR_VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5));
/// The tunnel MTU of the encapsulating DSR services: packets above it minus the outer header
/// are answered with an ICMP error.
pub const DSR_MTU: u16 = 1500;

/// The services, what each is, and the state set up before the campaign.
pub struct Model {
    /// Every service configured, with a short name.
    pub services: Vec<(&'static str, Service)>,
}

/// The address of a map-layout service address.
fn ip_of(a: &lb_common::maps::Addr, family: u8) -> IpAddr {
    if family == lb_common::maps::FAMILY_V4 {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    } else {
        IpAddr::from(*a)
    }
}

impl Model {
    /// The standard configuration: Maglev TCP over both families, round-robin TCP over both,
    /// UDP over both, a source-affinity UDP VIP that takes fragments, the addresses of the
    /// issue 18 report (a Maglev TCP VIP whose client is [`ISSUE18_CLIENT`]), and direct server
    /// return VIPs in every mode.
    pub fn standard() -> Model {
        let mut rr4 = service(3, VIP4, 81, PROTO_TCP, 21, &[(v4(21), 8081, 1), (v4(22), 8081, 2)]);
        rr4.flags = VIP_FLAG_ROUND_ROBIN;
        let mut rr6 = service(4, VIP6, 444, PROTO_TCP, 31, &[(v6(31), 8444, 1), (v6(32), 8444, 1)]);
        rr6.flags = VIP_FLAG_ROUND_ROBIN;
        let mut frag = service(7, FRAG_VIP, 53, PROTO_UDP, 61, &[(v4(61), 5353, 1), (v4(62), 5353, 1)]);
        frag.flags = VIP_FLAG_HASH_SRC_ONLY;
        // Direct server return: IPIP with the MSS clamp, GUE over IPv6, IPv4 over IPv6 (UDP),
        // and direct.
        let mut tunnel4 = dsr(service(9, DSR_VIP4, 80, PROTO_TCP, 81, &[(v4(81), 80, 1), (v4(82), 80, 1)]), FORWARD_TUNNEL, DSR_MTU);
        for b in &mut tunnel4.backends {
            b.backend.tunnel.flags = TUNNEL_FLAG_MSS_CLAMP;
        }
        Model {
            services: vec![
                ("maglev_tcp4", service(1, VIP4, 80, PROTO_TCP, 1, &[(v4(1), 8080, 1), (v4(2), 8080, 1), (v4(3), 8080, 1)])),
                ("maglev_tcp6", service(2, VIP6, 443, PROTO_TCP, 11, &[(v6(1), 8443, 1), (v6(2), 8443, 1), (v6(3), 8443, 1)])),
                ("rr_tcp4", rr4),
                ("rr_tcp6", rr6),
                ("udp4", service(5, VIP4, 53, PROTO_UDP, 41, &[(v4(41), 5353, 1), (v4(42), 5353, 1)])),
                ("udp6", service(6, VIP6, 53, PROTO_UDP, 51, &[(v6(51), 5353, 1), (v6(52), 5353, 1)])),
                ("frag_udp4", frag),
                ("issue18_tcp4", service(8, ISSUE18_VIP, 80, PROTO_TCP, 71, &[(IpAddr::V4(Ipv4Addr::new(10, 77, 11, 2)), 80, 1)])),
                ("dsr_tunnel_tcp4", tunnel4),
                ("dsr_gue_tcp6", dsr(service(10, DSR_VIP6, 80, PROTO_TCP, 91, &[(v6(91), 80, 1), (v6(92), 80, 1)]), FORWARD_GUE, DSR_MTU)),
                ("dsr_4in6_udp4", dsr(service(11, DSR_VIP4, 53, PROTO_UDP, 101, &[(v6(101), 53, 1), (v6(102), 53, 1)]), FORWARD_TUNNEL, DSR_MTU)),
                ("dsr_direct_tcp6", dsr(service(12, DSR_VIP6, 443, PROTO_TCP, 111, &[(v6(111), 443, 1), (v6(112), 443, 1)]), FORWARD_DIRECT, 0)),
            ],
        }
    }

    /// The data path loaded (with a client side), serving every service, with the flows of
    /// [`ESTABLISHED_PORTS`] established (SYN, ACK) to every TCP VIP.
    pub fn start(&self) -> Lb {
        let mut sizing = test_sizing(0xf022);
        sizing.vip_capacity = 16;
        let services: Vec<&Service> = self.services.iter().map(|(_, s)| s).collect();
        let lb = setup_with(&sizing, &services);
        for (_, svc) in &self.services {
            if svc.key.proto != PROTO_TCP {
                continue;
            }
            let vip = self.vip_ip(svc);
            let client = if vip == ISSUE18_VIP {
                ISSUE18_CLIENT
            } else if vip.is_ipv4() {
                CLIENT4
            } else {
                CLIENT6
            };
            for port in ESTABLISHED_PORTS {
                let syn = from_client(client, vip, tcp(port, svc.key.port, crate::harness::SYN));
                if svc.flags & VIP_FLAG_ROUND_ROBIN != 0 {
                    assert_eq!(lb.run(&syn.bytes()).action, XDP_TX);
                    let ack: Frame = crate::fixture::with_flags(&syn, ACK);
                    assert_eq!(lb.run(&ack.bytes()).action, XDP_TX);
                } else {
                    establish(&lb, svc, &syn);
                }
            }
        }
        lb
    }

    /// The VIP address of `svc`.
    pub fn vip_ip(&self, svc: &Service) -> IpAddr {
        ip_of(&svc.key.addr, svc.key.family)
    }

    /// Index of the service at `addr`:`port` over `proto`.
    pub fn vip(&self, addr: IpAddr, port: u16, proto: u8) -> Option<usize> {
        self.services
            .iter()
            .position(|(_, s)| self.vip_ip(s) == addr && s.key.port == port && s.key.proto == proto)
    }

    /// Whether `addr` is the address of any VIP.
    pub fn is_vip_address(&self, addr: IpAddr) -> bool {
        self.services.iter().any(|(_, s)| self.vip_ip(s) == addr)
    }

    /// The forwarding mode of service `i` (`lb_common::encap::FORWARD_*`).
    pub fn forwarding(&self, i: usize) -> u8 {
        self.services[i].1.backends.first().map_or(0, |b| b.backend.forwarding)
    }

    /// Whether service `i` is a direct server return VIP.
    pub fn is_dsr(&self, i: usize) -> bool {
        lb_common::encap::is_dsr(self.forwarding(i))
    }

    /// The backends (slot, address) of service `i`.
    pub fn backend_slots(&self, i: usize) -> Vec<(u32, IpAddr)> {
        self.services[i].1.backends.iter().map(|b| (b.id, ip_of(&b.backend.addr, b.backend.family))).collect()
    }

    /// The backends (address, port) of service `i`.
    pub fn backends(&self, i: usize) -> Vec<(IpAddr, u16)> {
        let svc = &self.services[i].1;
        svc.backends.iter().map(|b| backend_endpoint(svc, b.id)).collect()
    }

    /// The service whose backend endpoint `addr`:`port` over `proto` is.
    pub fn backend_of(&self, addr: IpAddr, port: u16, proto: u8) -> Option<usize> {
        (0..self.services.len())
            .find(|&i| self.services[i].1.key.proto == proto && self.backends(i).contains(&(addr, port)))
    }

    /// The services a fragment to `addr` over `proto` may belong to: the address's only VIP
    /// of that protocol, when it hashes on the source alone.
    pub fn fragment_vip(&self, addr: IpAddr, proto: u8) -> Option<usize> {
        let at: Vec<usize> = (0..self.services.len())
            .filter(|&i| self.vip_ip(&self.services[i].1) == addr && self.services[i].1.key.proto == proto)
            .collect();
        match at.as_slice() {
            [i] if self.services[*i].1.flags & VIP_FLAG_HASH_SRC_ONLY != 0 => Some(*i),
            _ => None,
        }
    }

    /// Whether `addr` may not be the source of a new flow or an ICMP error: unspecified,
    /// loopback, multicast, reserved, broadcast, or a VIP address.
    pub fn bad_source(&self, addr: IpAddr) -> bool {
        is_martian(addr) || self.is_vip_address(addr)
    }
}

/// Whether `addr` is never a unicast host on the internet side (std::net's reading, kept
/// apart from `lb_common::martian`): IPv4 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/3; IPv6 `::`,
/// `::1`, multicast.
pub fn is_martian(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets()[0] == 0 || a.is_loopback() || a.is_multicast() || a.octets()[0] >= 240,
        IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast(),
    }
}
