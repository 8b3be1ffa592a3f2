//! The agent's one rtnetlink connection (the `rtnetlink` crate): a netlink socket opened
//! once, in the agent's network namespace, whose requests are multiplexed by cloned
//! [`Handle`]s. The host state ([`crate::host`]) and the next-hop resolver
//! ([`crate::neighbours`]) share it.

use std::io;

pub use rtnetlink::Handle;

/// The connection: its socket is served by a task on the current tokio runtime until this is
/// dropped.
pub struct Netlink {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// Opens the socket and starts serving it on the current tokio runtime.
    pub fn open() -> io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        Ok(Netlink { handle, connection: tokio::spawn(connection) })
    }

    /// A handle for requests on the connection.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

/// The index of interface `name`, or `None` when there is no such interface.
pub async fn ifindex(handle: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    use futures_util::TryStreamExt as _;
    match handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The errno a netlink error carries, if the kernel answered with one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}
