//! Following the configured interfaces: a task that learns each interface's current index and
//! the XDP program attached to it over rtnetlink, when the kernel announces a link change
//! (`RTMGRP_LINK`) and at least every refresh of the agent, and tells the agent whenever that
//! changes (an interface deleted, re-created with another index, or left without the program
//! by a defunct link). The agent attaches the program again.

use std::{collections::BTreeMap, time::Duration};

use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    packet_route::link::{LinkAttribute, LinkMessage, LinkXdp},
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::sync::mpsc;

use crate::netlink::Handle;

/// An interface as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkNow {
    /// Its index.
    pub index: u32,
    /// The id of the XDP program attached to it, if any.
    pub xdp_program: Option<u32>,
}

/// Interface name → how it is now (`None`: no such interface).
pub type Indices = BTreeMap<String, Option<LinkNow>>;

/// The index and XDP program of a link message.
fn link_now(link: &LinkMessage) -> LinkNow {
    let xdp_program = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
            LinkXdp::ProgId(id) if *id != 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    });
    LinkNow { index: link.header.index, xdp_program }
}

/// `name` as it is now.
async fn query(handle: &Handle, name: &str) -> Result<Option<LinkNow>, rtnetlink::Error> {
    match handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(link) => Ok(link.as_ref().map(link_now)),
        Err(e) if crate::netlink::errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends the indices of `names` to `out` at start and after every change, until `out` closes.
pub fn spawn(handle: Handle, names: Vec<String>, every: Duration, out: mpsc::UnboundedSender<Indices>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    // A socket of its own that the kernel sends link events to.
    let (mut connection, _, mut events) = rtnetlink::new_connection()?;
    connection.socket_mut().socket_mut().bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))?;
    let events_connection = tokio::spawn(connection);
    Ok(tokio::spawn(async move {
        let mut last: Option<Indices> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                event = events.next() => if event.is_none() { break },
            }
            let mut now = Indices::new();
            for name in &names {
                match query(&handle, name).await {
                    Ok(link) => {
                        now.insert(name.clone(), link);
                    }
                    Err(e) => tracing::debug!(interface = %name, error = %e, "looking up an interface failed"),
                }
            }
            if now.len() == names.len() && last.as_ref() != Some(&now) {
                if out.send(now.clone()).is_err() {
                    break;
                }
                last = Some(now);
            }
        }
        events_connection.abort();
    }))
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::XdpAttached;

    use super::*;

    #[test]
    fn reads_the_index_and_the_attached_program() {
        let mut link = LinkMessage::default();
        link.header.index = 5000;
        assert_eq!(link_now(&link), LinkNow { index: 5000, xdp_program: None });
        link.attributes.push(LinkAttribute::Xdp(vec![LinkXdp::Attached(XdpAttached::Driver), LinkXdp::ProgId(42)]));
        assert_eq!(link_now(&link), LinkNow { index: 5000, xdp_program: Some(42) });
        link.attributes = vec![LinkAttribute::Xdp(vec![LinkXdp::Attached(XdpAttached::None), LinkXdp::ProgId(0)])];
        assert_eq!(link_now(&link).xdp_program, None);
    }
}
