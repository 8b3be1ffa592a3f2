//! The rule that a backend endpoint serves one VIP: the data path maps a backend's replies back
//! to their VIP by the backend's address, port and protocol alone. The configuration check and
//! the agent's runtime both apply it through [`shared_endpoints`].

use std::{collections::HashMap, fmt, net::SocketAddr};

use super::model::Protocol;

/// Why a backend endpoint may serve only one VIP; ends every message that refuses a second one.
pub const ONE_VIP_PER_ENDPOINT: &str = "replies from one backend endpoint must map to one VIP";

/// A backend as its replies identify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendEndpoint {
    /// Address and port.
    pub addr: SocketAddr,
    /// The protocol of the VIP it serves.
    pub protocol: Protocol,
}

impl fmt::Display for BackendEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// A backend endpoint listed by a VIP after another VIP already listed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedEndpoint<K> {
    /// The endpoint.
    pub endpoint: BackendEndpoint,
    /// The VIP that listed it first.
    pub first: K,
    /// The VIP that lists it again.
    pub vip: K,
    /// Its index in the backends of `vip`'s pool.
    pub backend: usize,
}

/// Every backend endpoint that serves a second VIP. `pools` holds, in order, each VIP's label,
/// protocol and backend addresses; pools with equal labels are one VIP, whose repeats are not
/// reported here.
pub fn shared_endpoints<K, B>(pools: impl IntoIterator<Item = (K, Protocol, B)>) -> Vec<SharedEndpoint<K>>
where
    K: Copy + Eq,
    B: IntoIterator<Item = SocketAddr>,
{
    let mut owners = HashMap::new();
    let mut shared = Vec::new();
    for (vip, protocol, backends) in pools {
        for (backend, addr) in backends.into_iter().enumerate() {
            let endpoint = BackendEndpoint { addr, protocol };
            let first = *owners.entry(endpoint).or_insert(vip);
            if first != vip {
                shared.push(SharedEndpoint { endpoint, first, vip, backend });
            }
        }
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn reports_each_later_vip_against_the_first() {
        let pools = [
            ("a", Protocol::Tcp, addrs(&["10.0.0.1:80", "10.0.0.1:80"])),
            ("b", Protocol::Tcp, addrs(&["10.0.0.2:80", "10.0.0.1:80"])),
            ("c", Protocol::Tcp, addrs(&["10.0.0.1:80"])),
        ];
        let endpoint = BackendEndpoint { addr: "10.0.0.1:80".parse().unwrap(), protocol: Protocol::Tcp };
        assert_eq!(
            shared_endpoints(pools),
            vec![
                SharedEndpoint { endpoint, first: "a", vip: "b", backend: 1 },
                SharedEndpoint { endpoint, first: "a", vip: "c", backend: 0 },
            ]
        );
    }

    #[test]
    fn protocol_and_port_tell_endpoints_apart() {
        let pools = [
            ("a", Protocol::Tcp, addrs(&["[2001:db8::1]:80"])),
            ("b", Protocol::Udp, addrs(&["[2001:db8::1]:80"])),
            ("c", Protocol::Tcp, addrs(&["[2001:db8::1]:81"])),
            ("a", Protocol::Tcp, addrs(&["[2001:db8::1]:80"])),
        ];
        assert_eq!(shared_endpoints(pools), vec![]);
    }

    #[test]
    fn displays_address_port_and_protocol() {
        let e = BackendEndpoint { addr: "[2001:db8::1]:8080".parse().unwrap(), protocol: Protocol::Udp };
        assert_eq!(e.to_string(), "[2001:db8::1]:8080/udp");
    }
}
