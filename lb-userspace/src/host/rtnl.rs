//! Adding and removing [`Item`]s through rtnetlink, on the agent's connection
//! ([`crate::netlink`]).

use std::{io, net::IpAddr};

use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage},
        route::{RouteProtocol, RouteScope},
    },
};

use super::record::{Item, ROUTE_PROTOCOL, host_prefix};

/// Why a change to the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The address or route is already there (so it is not the agent's).
    #[error("already on the host")]
    Exists,
    /// The interface does not exist (yet).
    #[error("no interface {0}")]
    NoInterface(String),
    /// The kernel refused.
    #[error("{0}")]
    Kernel(io::Error),
    /// The netlink connection failed.
    #[error("netlink: {0}")]
    Netlink(String),
}

impl From<rtnetlink::Error> for HostError {
    fn from(e: rtnetlink::Error) -> Self {
        match crate::netlink::errno(&e) {
            Some(libc::EEXIST) => HostError::Exists,
            Some(errno) => HostError::Kernel(io::Error::from_raw_os_error(errno)),
            None => HostError::Netlink(e.to_string()),
        }
    }
}

/// Changes to the host's addresses and routes.
pub struct Rtnl {
    handle: Handle,
}

impl Rtnl {
    /// Requests go through `handle`.
    pub fn new(handle: Handle) -> Rtnl {
        Rtnl { handle }
    }

    /// The index of interface `name`.
    pub async fn ifindex(&self, name: &str) -> Result<u32, HostError> {
        crate::netlink::ifindex(&self.handle, name).await?.ok_or_else(|| HostError::NoInterface(name.to_owned()))
    }

    /// Adds `item`; [`HostError::Exists`] when it is there already (it is then left alone).
    pub async fn add(&self, item: &Item) -> Result<(), HostError> {
        match item {
            Item::Address { interface, address } => {
                let index = self.ifindex(interface).await?;
                let mut request = self.handle.address().add(index, *address, host_prefix(*address));
                if address.is_ipv6() {
                    // No duplicate address detection: the address must answer at once.
                    let message = request.message_mut();
                    message.header.flags |= AddressHeaderFlags::Nodad;
                    message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
                }
                Ok(request.execute().await?)
            }
            Item::Route { table, address } => Ok(self.handle.route().add(self.route_message(*table, *address).await?).execute().await?),
        }
    }

    /// Removes `item`; one that is already gone is not an error.
    pub async fn remove(&self, item: &Item) -> Result<(), HostError> {
        let result = match item {
            Item::Address { interface, address } => {
                let index = match self.ifindex(interface).await {
                    Ok(i) => i,
                    // The interface and its addresses are gone.
                    Err(HostError::NoInterface(_)) => return Ok(()),
                    Err(e) => return Err(e),
                };
                self.handle.address().del(address_message(index, *address)).execute().await
            }
            Item::Route { table, address } => self.handle.route().del(self.route_message(*table, *address).await?).execute().await,
        };
        match result.map_err(HostError::from) {
            Err(HostError::Kernel(e)) if matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL | libc::ESRCH | libc::ENOENT)) => Ok(()),
            other => other,
        }
    }

    async fn route_message(&self, table: u32, address: IpAddr) -> Result<rtnetlink::packet_route::route::RouteMessage, HostError> {
        let lo = self.ifindex("lo").await?;
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(address, host_prefix(address))
            .map_err(|e| HostError::Netlink(format!("{e:?}")))?;
        Ok(builder
            .output_interface(lo)
            .table_id(table)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .scope(RouteScope::Link)
            .build())
    }
}

/// The message that names `address`/host-prefix on interface `index` (IPv4 addresses carry
/// it as both the local and the peer address, as the kernel reports them).
fn address_message(index: u32, address: IpAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = if address.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    message.header.prefix_len = host_prefix(address);
    message.header.index = index;
    if address.is_ipv4() {
        message.attributes.push(AddressAttribute::Local(address));
    }
    message.attributes.push(AddressAttribute::Address(address));
    message
}
