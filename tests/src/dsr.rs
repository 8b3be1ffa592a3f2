//! Direct server return in the lab ([`crate::topology::Lab::create_dsr`]): the byte counters of
//! interfaces, from which `cargo xtask lab --dsr` and the end-to-end tests show, with a
//! download ([`crate::download`]), that replies bypass the load balancer. Shared with `xtask`,
//! so it depends only on the topology.

use anyhow::Context as _;

use crate::topology::in_ns;

/// The size of the download that shows the bypass: 10 MiB.
pub const DOWNLOAD_BYTES: usize = 10 << 20;
/// What the load balancer's interfaces may carry in either direction during the download:
/// the client's requests and acknowledgements (encapsulated), a few percent of it, never its
/// replies.
pub const BYPASS_BOUND: u64 = 1 << 20;

/// Received and sent bytes of one interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceBytes {
    /// `rx_bytes`.
    pub rx: u64,
    /// `tx_bytes`.
    pub tx: u64,
}

/// The byte counters of `iface` in namespace `ns` (`/sys/class/net/<iface>/statistics`; on a
/// veth they include the frames XDP programs sent and received).
pub fn iface_bytes(ns: &str, iface: &str) -> anyhow::Result<IfaceBytes> {
    let path = |what: &str| format!("/sys/class/net/{iface}/statistics/{what}_bytes");
    let out = in_ns(ns, &["cat", &path("rx"), &path("tx")]).output().with_context(|| format!("reading {iface}'s counters in {ns}"))?;
    anyhow::ensure!(out.status.success(), "reading {iface}'s counters in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut values = text.split_whitespace().map(str::parse::<u64>);
    match (values.next(), values.next()) {
        (Some(Ok(rx)), Some(Ok(tx))) => Ok(IfaceBytes { rx, tx }),
        _ => anyhow::bail!("{iface}'s counters in {ns}: {text:?}"),
    }
}

/// Byte counters of a set of interfaces (namespace, interface), read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot(pub Vec<(String, String, IfaceBytes)>);

impl Snapshot {
    /// Reads the counters of `ifaces`.
    pub fn take(ifaces: &[(String, String)]) -> anyhow::Result<Snapshot> {
        ifaces.iter().map(|(ns, i)| Ok((ns.clone(), i.clone(), iface_bytes(ns, i)?))).collect::<anyhow::Result<_>>().map(Snapshot)
    }

    /// What each interface counted since `before` (same interfaces, same order).
    pub fn since(&self, before: &Snapshot) -> Vec<(String, IfaceBytes)> {
        self.0
            .iter()
            .zip(&before.0)
            .map(|((_, i, now), (_, _, then))| (i.clone(), IfaceBytes { rx: now.rx.saturating_sub(then.rx), tx: now.tx.saturating_sub(then.tx) }))
            .collect()
    }
}
