//! An interface's XDP state as the kernel reports it over rtnetlink (one link get: the MTU and
//! the mode of the attached program), and the operator's account of an attach a driver refused.

use std::fmt;

use anyhow::{Context as _, anyhow};
use futures_util::TryStreamExt as _;
use lb_common::limits::single_buffer_xdp_mtu;
use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};

use crate::config::XdpMode;

/// What the kernel reports about an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Its MTU.
    pub mtu: Option<u32>,
    /// The mode of the XDP program attached to it, if one is (in driver or generic mode).
    pub attached: Option<XdpMode>,
}

impl LinkState {
    /// The state in a link message's attributes.
    pub fn from_attributes(attributes: &[LinkAttribute]) -> LinkState {
        let mut state = LinkState { mtu: None, attached: None };
        for attribute in attributes {
            match attribute {
                LinkAttribute::Mtu(mtu) => state.mtu = Some(*mtu),
                LinkAttribute::Xdp(xdp) => {
                    state.attached = xdp.iter().find_map(|x| match x {
                        LinkXdp::Attached(XdpAttached::Driver) => Some(XdpMode::Driver),
                        LinkXdp::Attached(XdpAttached::SocketBuffer) => Some(XdpMode::Generic),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        state
    }
}

/// Asks the kernel for `interface`'s state, in the calling thread's network namespace.
///
/// Called from synchronous code, some of it on the agent's async loop (attach at start): the
/// query runs on a short-lived thread with a current-thread runtime of its own (a runtime
/// cannot be entered from a thread that runs one), which inherits the caller's network
/// namespace. The caller waits for one netlink round trip, well under a millisecond, as long
/// as a blocking system call; nothing is forked.
pub fn query(interface: &str) -> anyhow::Result<LinkState> {
    let name = interface.to_owned();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().context("starting a netlink runtime")?;
                runtime.block_on(query_async(name))
            })
            .join()
            .map_err(|_| anyhow!("the netlink query thread panicked"))?
    })
    .with_context(|| format!("asking the kernel about interface {interface}"))
}

/// [`query`] on the caller's runtime: one rtnetlink connection for one link get.
pub async fn query_async(interface: String) -> anyhow::Result<LinkState> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
    let connection = tokio::spawn(connection);
    let answer = handle.link().get().match_name(interface.clone()).execute().try_next().await;
    connection.abort();
    let message = answer.context("link get")?.ok_or_else(|| anyhow!("no interface {interface}"))?;
    Ok(LinkState::from_attributes(&message.attributes))
}

/// The memory page size, which bounds a one-buffer XDP frame.
pub fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// Why attaching in `mode` to an interface with MTU `mtu` may have failed, for an operator:
/// the interface's MTU, the limit a driver without multi-buffer XDP holds an XDP program to
/// (`limit`, [`single_buffer_xdp_mtu`]) and what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// The interface.
    pub interface: &'a str,
    /// The mode that was refused.
    pub mode: XdpMode,
    /// Its MTU, if the kernel said.
    pub mtu: Option<u32>,
    /// The one-buffer MTU limit on this host.
    pub limit: u32,
}

impl<'a> Refusal<'a> {
    /// The refusal of `mode` on `interface`, with its MTU from `state` (if the query answered).
    pub fn new(interface: &'a str, mode: XdpMode, state: Option<LinkState>) -> Refusal<'a> {
        Refusal { interface, mode, mtu: state.and_then(|s| s.mtu), limit: single_buffer_xdp_mtu(page_size()) }
    }
}

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refusal { interface, mode, mtu, limit } = *self;
        write!(f, "attaching XDP to {interface} in {mode} mode")?;
        match (mode, mtu) {
            (XdpMode::Generic, Some(mtu)) => write!(f, " (MTU {mtu}; generic mode has no MTU limit)"),
            (_, Some(mtu)) if mtu > limit => write!(
                f,
                " (MTU {mtu}, above {limit}, the largest MTU a driver without multi-buffer XDP takes: the program handles \
                 multi-buffer frames, but this driver (for a veth: its peer) does not at this MTU; lower the MTU to {limit} or \
                 less, or use xdp_mode: generic)"
            ),
            (_, Some(mtu)) => write!(
                f,
                " (MTU {mtu}, within the {limit} any driver with XDP support takes: the driver has no XDP support in driver \
                 mode or refused for another reason; xdp_mode: generic works on any interface)"
            ),
            (_, None) => write!(f, " (MTU unknown; a driver without multi-buffer XDP takes at most {limit})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_state_reads_the_mtu_and_the_attached_mode() {
        let attrs = |mode| vec![LinkAttribute::Mtu(9000), LinkAttribute::Xdp(vec![LinkXdp::Attached(mode), LinkXdp::ProgId(7)])];
        assert_eq!(LinkState::from_attributes(&attrs(XdpAttached::Driver)), LinkState { mtu: Some(9000), attached: Some(XdpMode::Driver) });
        assert_eq!(LinkState::from_attributes(&attrs(XdpAttached::SocketBuffer)).attached, Some(XdpMode::Generic));
        assert_eq!(LinkState::from_attributes(&attrs(XdpAttached::None)).attached, None);
        assert_eq!(LinkState::from_attributes(&[]), LinkState { mtu: None, attached: None });
    }

    #[test]
    fn a_refusal_names_the_interface_its_mtu_and_the_limit() {
        let refusal = |mode, mtu| Refusal { interface: "l0", mode, mtu, limit: 3506 }.to_string();
        let above = refusal(XdpMode::Driver, Some(9000));
        assert!(above.starts_with("attaching XDP to l0 in driver mode (MTU 9000, above 3506,"), "{above}");
        assert!(above.contains("lower the MTU to 3506 or less, or use xdp_mode: generic"), "{above}");
        let within = refusal(XdpMode::Driver, Some(1500));
        assert!(within.starts_with("attaching XDP to l0 in driver mode (MTU 1500, within the 3506"), "{within}");
        assert_eq!(refusal(XdpMode::Generic, Some(9000)), "attaching XDP to l0 in generic mode (MTU 9000; generic mode has no MTU limit)");
        assert!(refusal(XdpMode::Driver, None).contains("MTU unknown"));
    }
}
