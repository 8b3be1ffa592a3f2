//! Which interfaces the data path can send through, and whether every backend is reached
//! through one of them: a backend whose route leaves by another interface gets its packets
//! through the kernel (`pass_not_xdp_egress`), but its replies do not come back through the
//! program, so they are never translated back to the VIP.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, anyhow};

use crate::{config::Config, neighbours::Resolver, netlink::Handle};

/// The interfaces the program may send through: the configured ones (by index, as they are on
/// this host) and the 802.1Q devices on them.
pub async fn ports(handle: &Handle, config: &Config) -> anyhow::Result<BTreeMap<u32, String>> {
    let mut ports = BTreeMap::new();
    for name in &config.global.interfaces {
        let ifindex = crate::netlink::ifindex(handle, name)
            .await
            .with_context(|| format!("looking up interface {name}"))?
            .ok_or_else(|| anyhow!("there is no interface {name} (global.interfaces) on this host"))?;
        ports.insert(ifindex, name.clone());
    }
    for vlan in Resolver::new(handle.clone()).vlan_devices(&config.global.interfaces).await? {
        ports.insert(vlan.ifindex, format!("VLAN {} on {}", vlan.vlan_id, ports.get(&vlan.parent).cloned().unwrap_or_default()));
    }
    Ok(ports)
}

/// One message per backend of `config` whose route on this host leaves by an interface the
/// program does not run on (a backend without a route is not refused: its route may come later).
pub async fn backends_behind_other_interfaces(handle: &Handle, config: &Config) -> anyhow::Result<Vec<String>> {
    let ports = ports(handle, config).await?;
    let resolver = Resolver::new(handle.clone());
    let mut problems = Vec::new();
    for vip in &config.vips {
        for b in &vip.backends {
            let Some((Some(oif), _)) = resolver.route_to(b.address).await.with_context(|| format!("looking up the route to {}", b.address))? else {
                continue;
            };
            if !ports.contains_key(&oif) {
                let name = resolver.link_name(oif).await.ok().flatten().unwrap_or_else(|| format!("interface {oif}"));
                problems.push(problem(&vip.name, b.address, b.port, &name, &ports));
            }
        }
    }
    Ok(problems)
}

/// The message for backend `address:port` of VIP `vip` routed through `name`.
fn problem(vip: &str, address: IpAddr, port: u16, name: &str, ports: &BTreeMap<u32, String>) -> String {
    let ours: Vec<&str> = ports.values().map(String::as_str).collect();
    format!(
        "VIP {vip}: backend {}: its route leaves by {name}, which the XDP program does not run on, so its replies would \
         not pass the program to be translated back to the VIP; route it through {} or add {name} to global.interfaces",
        std::net::SocketAddr::new(address, port),
        ours.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_backend_the_interface_and_the_way_out() {
        let ports = BTreeMap::from([(2, "eth0".to_owned()), (3, "eth1".to_owned())]);
        let m = problem("web", "10.1.0.1".parse().unwrap(), 8080, "mgmt0", &ports);
        assert_eq!(
            m,
            "VIP web: backend 10.1.0.1:8080: its route leaves by mgmt0, which the XDP program does not run on, so its replies \
             would not pass the program to be translated back to the VIP; route it through eth0, eth1 or add mgmt0 to global.interfaces"
        );
    }
}
