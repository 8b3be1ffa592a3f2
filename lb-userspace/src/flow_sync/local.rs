//! This node's side of flow sync: what its data path's records name (backend slot to address),
//! and a peer's record written into its connection table with its own backend slot.

use std::{
    collections::HashMap as Index,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Array, HashMap, Map, MapData, MapError};
use lb_common::{
    flow::Flow,
    limits::FLOW_SYNC_INDEX_MS,
    maps::{Addr, Backend, BackendState, FlowKey, SyncRecord, VipKey, VipMeta},
};

use super::{Rejected, message::SyncedFlow};

/// `BPF_NOEXIST` (linux/bpf.h): insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// What became of a peer's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Inserted into the connection table.
    Inserted,
    /// The flow has an entry already: left as it is.
    Existing,
    /// Not used.
    Rejected(Rejected),
}

/// The maps flow sync reads and writes: `VIPS`, `BACKENDS` and `CONNS` of one loaded data path.
pub struct LocalMaps {
    vips: HashMap<MapData, VipKey, VipMeta>,
    backends: Array<MapData, Backend>,
    conns: HashMap<MapData, FlowKey, Flow>,
    /// (VIP id, family, address, port) → backend slot, read from `BACKENDS`.
    index: Index<(u16, u8, Addr, u16), u32>,
    indexed_at: Option<Instant>,
}

impl LocalMaps {
    /// The maps from descriptors of `VIPS`, `BACKENDS` and `CONNS`.
    pub fn from_fds(vips: OwnedFd, backends: OwnedFd, conns: OwnedFd) -> anyhow::Result<Self> {
        let data = |fd| MapData::from_fd(fd).context("opening a map for flow sync");
        Ok(LocalMaps {
            vips: HashMap::try_from(Map::HashMap(data(vips)?))?,
            backends: Array::try_from(Map::Array(data(backends)?))?,
            conns: HashMap::try_from(Map::LruHashMap(data(conns)?))?,
            index: Index::new(),
            indexed_at: None,
        })
    }

    /// A record of this node's data path as sent to the peers: `None` when its backend slot
    /// no longer holds a backend of its VIP.
    pub fn outgoing(&self, record: &SyncRecord) -> Option<SyncedFlow> {
        let backend = self.backends.get(&record.backend_id, 0).ok()?;
        let serving = backend.state != BackendState::Unused as u8 && u32::from(backend.vip_id) == record.vip_id;
        serving.then_some(SyncedFlow { key: record.key, backend_addr: backend.addr, backend_port: backend.port })
    }

    /// Writes a peer's `flow` into the connection table, as the data path would have: the
    /// local slot of the backend with the record's address and port in the flow's VIP, at
    /// that slot's generation. A flow with an entry keeps it.
    pub fn apply(&mut self, flow: &SyncedFlow) -> anyhow::Result<Applied> {
        let k = &flow.key;
        let vip_key = VipKey { addr: k.dst, port: k.dport, proto: k.proto, family: k.family };
        let vip = match self.vips.get(&vip_key, 0) {
            Ok(vip) if vip.is_maglev() => vip,
            Ok(_) | Err(MapError::KeyNotFound) => return Ok(Applied::Rejected(Rejected::UnknownVip)),
            Err(e) => return Err(e).context("reading VIPS"),
        };
        match self.conns.get(k, 0) {
            Ok(_) => return Ok(Applied::Existing),
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("reading CONNS"),
        }
        let Some((id, backend)) = self.backend(&vip, flow)? else {
            return Ok(Applied::Rejected(Rejected::UnknownBackend));
        };
        // SAFETY: a libc call without arguments.
        let cpu = unsafe { libc::sched_getcpu() }.max(0) as u32;
        let entry = Flow::new(id, backend.generation, vip.id, false, vip.udp_idle_secs, 0, cpu);
        match self.conns.insert(k, entry, BPF_NOEXIST) {
            Ok(()) => Ok(Applied::Inserted),
            Err(e) if crate::dataplane::caused_by_errno(&e, libc::EEXIST) => Ok(Applied::Existing),
            Err(e) => Err(e).context("inserting into CONNS"),
        }
    }

    /// The local slot and backend of `flow`'s backend in `vip`, checked against `BACKENDS`;
    /// the index is read again on a miss, at most once per [`FLOW_SYNC_INDEX_MS`].
    fn backend(&mut self, vip: &VipMeta, flow: &SyncedFlow) -> anyhow::Result<Option<(u32, Backend)>> {
        let wanted = (vip.id as u16, flow.key.family, flow.backend_addr, flow.backend_port);
        if !self.index.contains_key(&wanted) && self.indexed_at.is_none_or(|at| at.elapsed() >= Duration::from_millis(FLOW_SYNC_INDEX_MS)) {
            self.reindex()?;
        }
        let Some(&id) = self.index.get(&wanted) else {
            return Ok(None);
        };
        let backend = self.backends.get(&id, 0).context("reading BACKENDS")?;
        let same = (backend.vip_id, backend.family, backend.addr, backend.port) == wanted && backend.state != BackendState::Unused as u8;
        Ok(same.then_some((id, backend)))
    }

    fn reindex(&mut self) -> anyhow::Result<()> {
        self.index.clear();
        for id in 1..self.backends.len() {
            let b = self.backends.get(&id, 0).context("reading BACKENDS")?;
            if b.state != BackendState::Unused as u8 {
                self.index.insert((b.vip_id, b.family, b.addr, b.port), id);
            }
        }
        self.indexed_at = Some(Instant::now());
        Ok(())
    }
}
