//! Sending a probe packet to the backend the way the VIP's packets reach it: inside the IP
//! tunnel (the kernel adds the outer header to a raw socket's payload), inside UDP to the GUE
//! port, or as it is to the backend's MAC.

use std::io;
use std::net::{IpAddr, SocketAddr};

use lb_common::encap::{IPPROTO_IPIP, IPPROTO_IPV6};
use socket2::{Domain, Protocol, Socket, Type};

use super::listen::packet_address;
use super::{Carrier, Route};

/// Why a packet could not be sent: always on the agent's side.
#[derive(Debug)]
pub enum SendError {
    /// The backend's MAC is not known yet (`direct`).
    NoNextHop,
    /// A socket call failed.
    Io(&'static str, io::Error),
}

/// Sends `packet` (an IP packet whose destination is the VIP) to `backend` through `carrier`.
pub fn send(carrier: Carrier, backend: IpAddr, route: &Route, packet: &[u8]) -> Result<(), SendError> {
    let inner_v6 = packet.first().is_some_and(|b| b >> 4 == 6);
    let (socket, to) = match carrier {
        Carrier::Tunnel => {
            let proto = if inner_v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
            let socket = Socket::new(Domain::for_address(SocketAddr::new(backend, 0)), Type::RAW, Some(Protocol::from(i32::from(proto))))
                .map_err(|e| SendError::Io("raw tunnel socket", e))?;
            (socket, SocketAddr::new(backend, 0).into())
        }
        Carrier::Gue { port } => {
            let to = SocketAddr::new(backend, port);
            let socket = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP)).map_err(|e| SendError::Io("UDP socket", e))?;
            (socket, to.into())
        }
        Carrier::Direct => {
            if !route.hop.is_resolved() || route.hop.ifindex == 0 {
                crate::neighbours::nudge(backend);
                return Err(SendError::NoNextHop);
            }
            let socket = Socket::new(Domain::PACKET, Type::DGRAM, None).map_err(|e| SendError::Io("packet socket", e))?;
            let protocol = if inner_v6 { libc::ETH_P_IPV6 } else { libc::ETH_P_IP };
            (socket, packet_address(protocol as u16, route.hop.ifindex, Some(route.hop.dst_mac)))
        }
    };
    socket.set_nonblocking(true).map_err(|e| SendError::Io("socket", e))?;
    socket.send_to(packet, &to).map_err(|e| SendError::Io("send", e))?;
    Ok(())
}
