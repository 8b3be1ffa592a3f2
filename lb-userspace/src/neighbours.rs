//! Next-hop MAC addresses from the kernel's routing and neighbour tables, resolved off the
//! packet path and stored with each backend, so the data path needs no FIB lookup per packet;
//! and the 802.1Q devices on the interfaces the program runs on. Both are asked over the
//! agent's rtnetlink connection ([`crate::netlink`]).

use std::{net::IpAddr, time::Duration};

use futures_util::{StreamExt as _, TryStreamExt as _};
use lb_common::maps::NextHop;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute},
    },
};
use tokio::sync::{mpsc, watch};

/// Looks up next hops over one rtnetlink connection.
#[derive(Clone)]
pub struct Resolver {
    handle: Handle,
}

impl Resolver {
    /// Requests go through `handle`.
    pub fn new(handle: Handle) -> Resolver {
        Resolver { handle }
    }

    /// The next hop towards `addr` (egress interface, its MAC and the neighbour's MAC: the
    /// address itself or its gateway) and what the route says of the path. The hop is `None`
    /// while the kernel has no usable neighbour entry, and the lookup then makes the kernel
    /// resolve it ([`nudge`]); everything is `None` without a route.
    ///
    /// Asks the kernel for the route to `addr` (`RTM_GETROUTE`), the one neighbour entry of its
    /// gateway or of `addr` on the egress interface (`RTM_GETNEIGH` with a destination), and
    /// that interface's MAC and MTU (`RTM_GETLINK`).
    pub async fn resolve(&self, addr: IpAddr) -> Resolution {
        match self.lookup(addr).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "next hop lookup failed");
                Resolution::default()
            }
        }
    }

    /// The egress interface and gateway of the kernel's route to `addr` (`None`: no route).
    pub async fn route_to(&self, addr: IpAddr) -> Result<Option<(Option<u32>, Option<IpAddr>)>, rtnetlink::Error> {
        Ok(self.route(addr).await?.map(|r| (r.oif, r.gateway)))
    }

    async fn route(&self, addr: IpAddr) -> Result<Option<RouteTarget>, rtnetlink::Error> {
        let query = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(addr, if addr.is_ipv4() { 32 } else { 128 })
            .map_err(|e| rtnetlink::Error::InvalidNla(format!("{e:?}")))?
            .build();
        match self.handle.route().get(query).execute().try_next().await {
            Ok(route) => Ok(route.map(|r| route_target(&r.attributes))),
            Err(e) if matches!(crate::netlink::errno(&e), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The name of interface `ifindex`.
    pub async fn link_name(&self, ifindex: u32) -> Result<Option<String>, rtnetlink::Error> {
        let link = self.handle.link().get().match_index(ifindex).execute().try_next().await?;
        Ok(link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            })
        }))
    }

    async fn lookup(&self, addr: IpAddr) -> Result<Resolution, rtnetlink::Error> {
        let Some(route) = self.route(addr).await? else {
            return Ok(Resolution::default());
        };
        let Some(ifindex) = route.oif else {
            return Ok(Resolution::default());
        };
        let link = self.handle.link().get().match_index(ifindex).execute().try_next().await?;
        let src_mac = link.as_ref().and_then(|l| link_mac(&l.attributes));
        let mtu = link.as_ref().and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        });
        let path = PathInfo { source: route.source, mtu: mtu.unwrap_or(0) };
        let dst_mac = self.neighbour(ifindex, route.gateway.unwrap_or(addr)).await?;
        if dst_mac.is_none() {
            nudge(addr);
        }
        let hop = dst_mac.zip(src_mac).map(|(dst_mac, src_mac)| NextHop { ifindex, dst_mac, src_mac });
        Ok(Resolution { hop, path })
    }

    /// The usable MAC of neighbour `addr` on `ifindex`, asked for as one entry (the crate's
    /// neighbour request only dumps the whole table, which costs per backend what the table
    /// holds; this builds the single-entry request with the crate's message types).
    async fn neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>, rtnetlink::Error> {
        let mut message = NeighbourMessage::default();
        message.header.family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        message.header.ifindex = ifindex;
        message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::from(addr)));
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(message));
        request.header.flags = NLM_F_REQUEST;
        let mut answers = self.handle.clone().request(request)?;
        let mut found = None;
        while let Some(answer) = answers.next().await {
            match answer.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => found = usable_mac(&n),
                // No entry.
                NetlinkPayload::Error(e) if e.to_io().raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                NetlinkPayload::Error(e) => return Err(rtnetlink::Error::NetlinkError(e)),
                _ => {}
            }
        }
        Ok(found)
    }

    /// The 802.1Q devices whose parent is one of `parents` (by name).
    pub async fn vlan_devices(&self, parents: &[String]) -> Result<Vec<VlanDevice>, rtnetlink::Error> {
        let links: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        Ok(vlans_in(&links, parents))
    }
}

/// The discard port (RFC 863): where the datagram that makes the kernel resolve a neighbour
/// goes.
const DISCARD_PORT: u16 = 9;

/// Makes the kernel resolve the next hop towards `addr` (ARP or neighbour discovery), which
/// the next resolution then finds: an empty UDP datagram to its discard port. A NAT backend's
/// first packets reach the kernel, which resolves it then; a direct server return backend's
/// are dropped until its hop is known (`drop_dsr_no_path`), and with no health checks nothing
/// else sends the kernel anything towards it. Best effort: a failure shows as the hop still
/// missing at the next resolution.
pub fn nudge(addr: IpAddr) {
    use socket2::{Domain, Protocol, Socket, Type};
    let to = std::net::SocketAddr::new(addr, DISCARD_PORT);
    if let Ok(socket) = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP)) {
        let _ = socket.set_nonblocking(true).and_then(|()| socket.send_to(&[], &to.into()));
    }
}

/// What a route lookup answered.
#[derive(Clone, Copy, Debug, Default)]
struct RouteTarget {
    oif: Option<u32>,
    gateway: Option<IpAddr>,
    source: Option<IpAddr>,
}

/// The egress interface, gateway and preferred source of a route.
fn route_target(attributes: &[RouteAttribute]) -> RouteTarget {
    let mut t = RouteTarget::default();
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(g) => Some(IpAddr::V4(*g)),
        RouteAddress::Inet6(g) => Some(IpAddr::V6(*g)),
        _ => None,
    };
    for a in attributes {
        match a {
            RouteAttribute::Oif(i) => t.oif = Some(*i),
            RouteAttribute::Gateway(g) => t.gateway = ip(g),
            RouteAttribute::PrefSource(s) => t.source = ip(s),
            _ => {}
        }
    }
    t
}

/// What the route to a backend says of the path beyond its next hop: what an outer header
/// needs in the tunnel modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathInfo {
    /// The source address the kernel picks towards the backend (the node's address on the
    /// egress interface).
    pub source: Option<IpAddr>,
    /// The egress interface's MTU (0: unknown).
    pub mtu: u32,
}

/// A backend address's next hop, once its neighbour is known, and its path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Egress interface and MACs.
    pub hop: Option<NextHop>,
    /// Source and MTU.
    pub path: PathInfo,
}

/// A link's 6-byte MAC.
fn link_mac(attributes: &[LinkAttribute]) -> Option<[u8; 6]> {
    attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    })
}

/// The neighbour's MAC, if the entry is usable: permanent, noarp, reachable, stale, delay or
/// probe (not failed, incomplete or none), with a 6-byte link-layer address that is not all
/// zero (the no-ARP entries of `lo` carry zeroes).
fn usable_mac(n: &NeighbourMessage) -> Option<[u8; 6]> {
    use NeighbourState::{Delay, Noarp, Permanent, Probe, Reachable, Stale};
    if !matches!(n.header.state, Permanent | Noarp | Reachable | Stale | Delay | Probe) {
        return None;
    }
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
        _ => None,
    })?;
    (mac != [0; 6]).then_some(mac)
}

/// Resolves the next hop of every backend address `wanted` holds, every `every`, and sends
/// what it found to `found` as (backend id, address, resolution): the agent writes it to the
/// maps. Runs until `found` is closed.
pub fn spawn(
    resolver: Resolver,
    mut wanted: watch::Receiver<Vec<(u32, IpAddr)>>,
    found: mpsc::UnboundedSender<Vec<(u32, IpAddr, Resolution)>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = wanted.changed() => if changed.is_err() { return },
            }
            let backends = wanted.borrow_and_update().clone();
            let mut hops = Vec::with_capacity(backends.len());
            for (id, addr) in backends {
                let resolution = resolver.resolve(addr).await;
                if resolution.hop.is_some() || resolution.path.source.is_some() {
                    hops.push((id, addr, resolution));
                }
            }
            if found.send(hops).is_err() {
                return;
            }
        }
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

/// The 802.1Q devices on `parents` among `links`.
fn vlans_in(links: &[LinkMessage], parents: &[String]) -> Vec<VlanDevice> {
    let name_of = |l: &LinkMessage| {
        l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
    };
    let parent_indices: Vec<u32> = links
        .iter()
        .filter(|l| name_of(l).is_some_and(|n| parents.contains(&n)))
        .map(|l| l.header.index)
        .collect();
    links
        .iter()
        .filter_map(|l| {
            let parent = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Link(p) => Some(*p),
                _ => None,
            })?;
            if !parent_indices.contains(&parent) {
                return None;
            }
            let infos = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })?;
            if !infos.contains(&LinkInfo::Kind(InfoKind::Vlan)) {
                return None;
            }
            let vlan_id = infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vlan(v)) => v.iter().find_map(|v| match v {
                    InfoVlan::Id(id) => Some(*id),
                    _ => None,
                }),
                _ => None,
            })?;
            Some(VlanDevice { ifindex: l.header.index, parent, vlan_id })
        })
        .collect()
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

    fn link(index: u32, name: &str, parent: Option<u32>, info: Vec<LinkInfo>) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if let Some(p) = parent {
            l.attributes.push(LinkAttribute::Link(p));
        }
        if !info.is_empty() {
            l.attributes.push(LinkAttribute::LinkInfo(info));
        }
        l
    }

    fn vlan(id: u16) -> Vec<LinkInfo> {
        vec![LinkInfo::Kind(InfoKind::Vlan), LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)]))]
    }

    #[test]
    fn finds_vlan_devices_on_the_given_parents() {
        let links = vec![
            link(1, "lo", None, vec![]),
            link(2, "eth0", None, vec![]),
            link(3, "eth1", None, vec![]),
            link(7, "eth0.100", Some(2), vlan(100)),
            link(5000, "eth1.200", Some(3), vlan(200)),
            link(9, "mv0", Some(3), vec![LinkInfo::Kind(InfoKind::MacVlan)]),
            // A veth's IFLA_LINK is its peer, not a parent.
            link(10, "veth0", Some(2), vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        assert_eq!(vlans_in(&links, &["eth0".to_owned()]), vec![VlanDevice { ifindex: 7, parent: 2, vlan_id: 100 }]);
        assert_eq!(
            vlans_in(&links, &["eth0".to_owned(), "eth1".to_owned()]),
            vec![VlanDevice { ifindex: 7, parent: 2, vlan_id: 100 }, VlanDevice { ifindex: 5000, parent: 3, vlan_id: 200 }]
        );
        assert!(vlans_in(&links, &["eth2".to_owned()]).is_empty());
    }

    fn neighbour(state: NeighbourState, mac: &[u8]) -> NeighbourMessage {
        let mut n = NeighbourMessage::default();
        n.header.state = state;
        n.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        n
    }

    #[test]
    fn only_usable_neighbour_entries_give_a_mac() {
        let mac = [2, 0, 0, 0, 0, 1];
        for state in [NeighbourState::Reachable, NeighbourState::Stale, NeighbourState::Delay, NeighbourState::Probe, NeighbourState::Permanent, NeighbourState::Noarp] {
            assert_eq!(usable_mac(&neighbour(state, &mac)), Some(mac), "{state:?}");
        }
        for state in [NeighbourState::Failed, NeighbourState::Incomplete, NeighbourState::None] {
            assert_eq!(usable_mac(&neighbour(state, &mac)), None, "{state:?}");
        }
        assert_eq!(usable_mac(&neighbour(NeighbourState::Noarp, &[0; 6])), None, "lo's zero MAC");
        assert_eq!(usable_mac(&neighbour(NeighbourState::Reachable, &[1, 2, 3])), None, "not a MAC");
    }

    #[test]
    fn parses_macs() {
        assert_eq!(parse_mac("02:1b:00:0a:ff:01"), Some([2, 0x1b, 0, 0x0a, 0xff, 1]));
        assert_eq!(parse_mac("02:1b:00:0a:ff"), None);
        assert_eq!(parse_mac("02:1b:00:0a:ff:01:02"), None);
        assert_eq!(parse_mac("zz:1b:00:0a:ff:01"), None);
    }
}
