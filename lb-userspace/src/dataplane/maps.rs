//! Typed handles on every map of the loaded program. The agent is their only writer.

use std::os::fd::{AsFd as _, OwnedFd};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
};
use lb_common::{
    counters::Reason,
    hash::flow_hash,
    limits::ring_index,
    maps::*,
    schedule::{Chosen, RingView, choose_hashed, vip_hash},
};

use super::{Sizing, ring_history::History, ring_memory::RingMemory, table_walk::now_secs, vip_index::VipIndex};

/// The maps of one loaded data path.
pub struct Maps {
    pub(super) vips: HashMap<MapData, VipKey, VipMeta>,
    /// `VIP_INDEX` and `VIP_ENTRIES`, the data path's array copy of `vips`.
    vip_index: Array<MapData, u32>,
    vip_entries: Array<MapData, VipEntry>,
    /// What they hold.
    index: VipIndex,
    backends: Array<MapData, Backend>,
    pub(super) ring: RingMemory,
    conns: HashMap<MapData, FlowKey, Flow>,
    half_open: HashMap<MapData, FlowKey, Flow>,
    /// Descriptors of `CONNS` and `HALF_OPEN` for [`super::table_walk`].
    table_fds: (OwnedFd, OwnedFd),
    replies: HashMap<MapData, BackendKey, ReplyTarget>,
    vip_addrs: HashMap<MapData, VipKey, VipAddress>,
    egress: HashMap<MapData, u32, Egress>,
    tx_ports: aya::maps::DevMapHash<MapData>,
    redirect_drops: PerCpuArray<MapData, u64>,
    reasons: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, Traffic>,
    backend_stats: PerCpuArray<MapData, Traffic>,
    active_conns: Array<MapData, u64>,
    endpoint_filter: Array<MapData, u64>,
    pub(super) moved: Array<MapData, u64>,
    meta: Array<MapData, u64>,
    /// The rings' history (moved bits as written, versions, retention).
    pub(super) history: History,
    /// What `endpoint_filter` holds, so a bit is written once, without reading the map.
    filter_words: Vec<u64>,
    /// What `REPLIES` holds for each backend slot, so an unchanged entry is not written again.
    reply_keys: std::collections::HashMap<u32, (BackendKey, ReplyTarget)>,
    /// The backend slot each `REPLIES` key belongs to.
    reply_owners: std::collections::HashMap<BackendKey, u32>,
    /// The VIPs on each VIP address (`VIP_ADDRS` keys), with their `VIP_FLAG_*` bits.
    vip_addr_users: std::collections::HashMap<VipKey, std::collections::HashMap<VipKey, u32>>,
    pub(super) ring_size: u32,
    hash_seed: u32,
    /// Tests only: map writes left before every write fails ([`Maps::fail_writes_after`]).
    #[cfg(test)]
    write_budget: Option<usize>,
}

fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<Map> {
    ebpf.take_map(name).ok_or_else(|| anyhow!("the XDP object has no map {name}"))
}

/// A backend slot of a pinned data path, with the VIP its replies go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedBackend {
    /// Slot id.
    pub id: u32,
    /// Id of its VIP (from `REPLIES`); `None` for a slot no VIP's replies name.
    pub vip_id: Option<u32>,
    /// The slot as the data path holds it: endpoint, state, generation, next hop.
    pub backend: Backend,
}

/// What a pinned data path serves, read back from its maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedState {
    /// Every VIP entry.
    pub vips: Vec<(VipKey, VipMeta)>,
    /// Every backend slot in use.
    pub backends: Vec<PinnedBackend>,
}

/// A descriptor of connection-table map `name` of its own (for a walk on another thread).
fn table_fd(ebpf: &Ebpf, name: &str) -> anyhow::Result<OwnedFd> {
    match ebpf.map(name) {
        Some(Map::LruHashMap(data)) => Ok(data.fd().as_fd().try_clone_to_owned()?),
        _ => Err(anyhow!("the XDP object has no LRU hash map {name}")),
    }
}

/// A deletion, where a key that is not there is not an error: aya reports the kernel's
/// ENOENT from `bpf_map_delete_elem` as a syscall error, not as [`MapError::KeyNotFound`]
/// (a rollback deletes what a failed write may never have written).
fn removed(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// `Ok(None)` for a missing key, errors otherwise.
fn optional<T>(r: Result<T, MapError>) -> Result<Option<T>, MapError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Maps {
    /// Takes the maps out of an object loaded with `sizing`.
    pub(super) fn take(ebpf: &mut Ebpf, sizing: &Sizing) -> anyhow::Result<Self> {
        Ok(Maps {
            vips: take(ebpf, MAP_VIPS)?.try_into()?,
            vip_index: take(ebpf, MAP_VIP_INDEX)?.try_into()?,
            vip_entries: take(ebpf, MAP_VIP_ENTRIES)?.try_into()?,
            index: VipIndex::default(),
            backends: take(ebpf, MAP_BACKENDS)?.try_into()?,
            ring: match take(ebpf, MAP_RING)? {
                Map::Array(data) => RingMemory::new(data, sizing.ring_map_entries()).context("mapping the RING map into memory")?,
                _ => anyhow::bail!("the {MAP_RING} map is not an array"),
            },
            table_fds: (table_fd(ebpf, MAP_CONNS)?, table_fd(ebpf, MAP_HALF_OPEN)?),
            conns: take(ebpf, MAP_CONNS)?.try_into()?,
            half_open: take(ebpf, MAP_HALF_OPEN)?.try_into()?,
            replies: take(ebpf, MAP_REPLIES)?.try_into()?,
            vip_addrs: take(ebpf, MAP_VIP_ADDRS)?.try_into()?,
            egress: take(ebpf, MAP_EGRESS)?.try_into()?,
            tx_ports: take(ebpf, MAP_TX_PORTS)?.try_into()?,
            redirect_drops: take(ebpf, MAP_REDIRECT_DROPS)?.try_into()?,
            reasons: take(ebpf, MAP_REASONS)?.try_into()?,
            vip_stats: take(ebpf, MAP_VIP_STATS)?.try_into()?,
            backend_stats: take(ebpf, MAP_BACKEND_STATS)?.try_into()?,
            active_conns: take(ebpf, MAP_ACTIVE_CONNS)?.try_into()?,
            endpoint_filter: take(ebpf, MAP_ENDPOINT_FILTER)?.try_into()?,
            moved: take(ebpf, MAP_MOVED)?.try_into()?,
            history: History {
                bits: vec![0; sizing.moved_map_entries() as usize],
                retention_secs: lb_common::limits::DEFAULT_RING_RETENTION_SECS,
                ..History::default()
            },
            meta: take(ebpf, MAP_META)?.try_into()?,
            filter_words: vec![0; ENDPOINT_FILTER_WORDS as usize],
            reply_keys: Default::default(),
            reply_owners: Default::default(),
            vip_addr_users: Default::default(),
            ring_size: sizing.ring_size,
            hash_seed: sizing.hash_seed,
            #[cfg(test)]
            write_budget: None,
        })
    }

    /// Fills what the agent remembers of the maps (the endpoint filter's words, each slot's
    /// `REPLIES` key, the VIPs on each VIP address) from pinned maps it adopted, so that later
    /// writes change, and stale entries are removed, exactly as if this agent had made them.
    pub(super) fn read_back(&mut self) -> anyhow::Result<()> {
        for (i, word) in self.filter_words.iter_mut().enumerate() {
            *word = self.endpoint_filter.get(&(i as u32), 0)?;
        }
        for entry in self.replies.iter() {
            let (key, target) = entry?;
            self.reply_keys.insert(target.backend_id, (key, target));
            self.reply_owners.insert(key, target.backend_id);
        }
        for entry in self.vips.iter() {
            let (key, meta) = entry?;
            self.vip_addr_users.entry(address_key(&key)).or_default().insert(key, meta.flags);
            let value = self.vip_index.get(&lb_common::hash::vip_slot(&key), 0)?;
            self.index.adopt(&key, meta.id, value);
        }
        self.read_back_moved()
    }

    /// The VIPs and backend slots the maps hold.
    pub fn pinned_state(&self) -> anyhow::Result<PinnedState> {
        let vips = self.vips.iter().collect::<Result<Vec<_>, _>>()?;
        let mut backends = Vec::new();
        for id in 1..self.backends.len() {
            let backend = self.backends.get(&id, 0)?;
            if backend.state != BackendState::Unused as u8 {
                let vip_id = match self.reply_keys.get(&id) {
                    Some((_, target)) => Some(target.vip_id),
                    None if lb_common::encap::is_dsr(backend.forwarding) => Some(backend.vip_id.into()),
                    None => None,
                };
                backends.push(PinnedBackend { id, vip_id, backend });
            }
        }
        Ok(PinnedState { vips, backends })
    }

    /// Every backend slot of `BACKENDS`, by id.
    pub(super) fn backend_slots(&self) -> Vec<Backend> {
        (0..self.backends.len()).map(|id| self.backends.get(&id, 0).unwrap_or_default()).collect()
    }

    /// Writes entry `index` of `META`.
    pub(super) fn set_meta(&mut self, index: u32, value: u64) -> anyhow::Result<()> {
        self.meta.set(index, value, 0).context("writing META")
    }

    /// Entry `index` of `META`.
    pub fn meta(&self, index: u32) -> anyhow::Result<u64> {
        Ok(self.meta.get(&index, 0)?)
    }

    /// Slots per ring.
    pub fn ring_size(&self) -> u32 {
        self.ring_size
    }

    /// The flow hash seed the program was loaded with.
    pub fn hash_seed(&self) -> u32 {
        self.hash_seed
    }

    /// Sets the endpoint filter's bit for `addr`:`port` (`salt`: VIP or backend), so that the
    /// data path looks its packets up. Bits are never cleared: a stale one only costs a lookup.
    fn admit_endpoint(&mut self, addr: &Addr, port: u16, salt: u64) -> anyhow::Result<()> {
        let bit = lb_common::hash::endpoint_bit(addr, port, salt);
        let (word, mask) = ((bit >> 6) as usize, 1u64 << (bit & 63));
        if self.filter_words[word] & mask == 0 {
            self.filter_words[word] |= mask;
            self.endpoint_filter
                .set(word as u32, self.filter_words[word], 0)
                .context("writing the endpoint filter")?;
        }
        Ok(())
    }

    /// The VIP entry for `key`, if any.
    pub fn vip(&self, key: &VipKey) -> anyhow::Result<Option<VipMeta>> {
        Ok(optional(self.vips.get(key, 0))?)
    }

    /// What `VIP_INDEX` holds in `key`'s slot, and the `VIP_ENTRIES` entry it names, if any.
    pub fn vip_index_entry(&self, key: &VipKey) -> anyhow::Result<(u32, Option<VipEntry>)> {
        let value = self.vip_index.get(&lb_common::hash::vip_slot(key), 0)?;
        let entry = match value {
            VIP_INDEX_NONE | VIP_INDEX_SHARED => None,
            n => Some(self.vip_entries.get(&(n - 1), 0)?),
        };
        Ok((value, entry))
    }

    /// Removes a VIP: its traffic goes to the kernel from the next packet on.
    pub fn remove_vip(&mut self, key: &VipKey) -> anyhow::Result<()> {
        self.spend_write()?;
        let gone = self.vip(key)?;
        if let Some(write) = self.index.remove(key) {
            self.vip_index.set(write.slot, write.value, 0).context("writing VIP_INDEX")?;
            self.index.removed(key);
        }
        removed(self.vips.remove(key))?;
        if let Some(meta) = gone {
            self.forget_moved(meta.id)?;
        }
        let addr = address_key(key);
        if let Some(users) = self.vip_addr_users.get_mut(&addr) {
            users.remove(key);
        }
        self.write_vip_address(&addr)
    }

    /// Writes the `VIP_ADDRS` entry of `addr` from the VIPs on it (or removes it).
    fn write_vip_address(&mut self, addr: &VipKey) -> anyhow::Result<()> {
        match self.vip_addr_users.get(addr).filter(|users| !users.is_empty()) {
            Some(users) => {
                let value = VipAddress::of(users.iter().map(|(k, flags)| (k.port, k.proto, *flags)));
                self.admit_endpoint(&addr.addr, 0, FILTER_VIP_ADDRESS)?;
                self.vip_addrs.insert(addr, value, 0).context("writing VIP_ADDRS")?;
            }
            None => {
                self.vip_addr_users.remove(addr);
                removed(self.vip_addrs.remove(addr))?;
            }
        }
        Ok(())
    }

    /// Writes `ring` into a spare ring of the VIP, then replaces the VIP entry so that it points
    /// at it: in-flight packets see the old ring or the new one, never a mix. A new VIP gets
    /// ring 0 before it becomes visible. The ring is written through shared memory; the VIP
    /// update that follows is a syscall, which orders those writes before it. A Maglev VIP's
    /// change also marks its moved slots and retains the ring flows older than it follow
    /// ([`super::ring_history`]); an unchanged ring is not written and keeps its history.
    /// `vip`'s `ring_half`, `retained_ring` and `retained_until` are chosen here.
    pub fn publish_ring(&mut self, key: &VipKey, vip: VipMeta, ring: &[u32]) -> anyhow::Result<VipMeta> {
        let id = vip.id;
        anyhow::ensure!(
            ring.len() == self.ring_size as usize,
            "ring of {} slots, the program was loaded for {}",
            ring.len(),
            self.ring_size
        );
        let live = self.vip(key)?;
        let placement = self.place_ring(&vip, live, ring, now_secs())?;
        if placement.write {
            for (slot, &backend) in ring.iter().enumerate() {
                anyhow::ensure!(
                    self.ring.set(ring_index(id, placement.half, self.ring_size, slot as u32), backend),
                    "ring slot {slot} of VIP {id} is beyond the ring map (VIP id above the capacity?), or backend id {backend} exceeds 16 bits"
                );
            }
        }
        let (retained_ring, retained_until) = placement.retained;
        let meta = VipMeta { ring_half: placement.half, retained_ring, retained_until, ..vip };
        self.spend_write()?;
        self.admit_endpoint(&key.addr, key.port, FILTER_VIP)?;
        let addr = address_key(key);
        self.vip_addr_users.entry(addr).or_default().insert(*key, meta.flags);
        self.write_vip_address(&addr)?;
        self.spend_write()?;
        self.write_vip(key, meta).context("publishing the VIP")?;
        Ok(meta)
    }

    /// Writes `meta` for `key` into `VIPS`, then into the VIP's entry that `VIP_INDEX` does
    /// not name, then points `VIP_INDEX` at it ([`super::vip_index`]): a packet reads the old
    /// value or the new one.
    pub(super) fn write_vip(&mut self, key: &VipKey, meta: VipMeta) -> anyhow::Result<()> {
        self.vips.insert(key, meta, 0).context("writing VIPS")?;
        let write = self.index.publish(key, &meta);
        if let Some((number, entry)) = write.entry {
            self.vip_entries.set(number, entry, 0).context("writing VIP_ENTRIES")?;
        }
        self.vip_index.set(write.slot, write.value, 0).context("writing VIP_INDEX")?;
        self.index.published(key, meta.id, &write);
        Ok(())
    }

    /// Backend id in `slot` of the live ring of the VIP `meta` describes.
    pub fn ring_slot(&self, meta: &VipMeta, slot: u32) -> anyhow::Result<u32> {
        self.ring
            .get(ring_index(meta.id, meta.ring_half, self.ring_size, slot))
            .ok_or_else(|| anyhow!("ring slot {slot} of VIP {} is beyond the ring map", meta.id))
    }

    /// The backend the data path gives a new flow `key` of the Maglev or least-conn VIP
    /// `meta` (with least-conn's current counts): `lb_common::schedule`, the code the data path
    /// runs, on these maps. `None` for a round-robin VIP, whose choice is a per-CPU cursor.
    pub fn choose(&self, meta: &VipMeta, key: &FlowKey) -> Option<Result<Chosen, Reason>> {
        if meta.flags & VIP_FLAG_ROUND_ROBIN != 0 {
            return None;
        }
        let hash = vip_hash(meta.flags, key, self.hash_seed, flow_hash(key, self.hash_seed, false));
        Some(choose_hashed(&VipRing { maps: self, meta }, meta.flags, hash, self.ring_size))
    }

    /// The backend in slot `id`.
    pub fn backend(&self, id: u32) -> anyhow::Result<Backend> {
        Ok(self.backends.get(&id, 0)?)
    }

    /// Writes the backend in slot `id`. A free slot (`BackendState::Unused`) also stops the
    /// translation of the endpoint's replies.
    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> anyhow::Result<()> {
        anyhow::ensure!(id != 0, "backend slot 0 is reserved");
        self.spend_write()?;
        if backend.state == BackendState::Unused as u8 {
            self.forget_replies(id)?;
        } else {
            // Before the backend exists for the data path: its replies must not skip REPLIES.
            self.admit_endpoint(&backend.addr, backend.port, FILTER_BACKEND)?;
        }
        self.backends
            .set(id, backend, 0)
            .with_context(|| format!("writing backend slot {id}"))
    }

    /// Makes the data path translate the replies of backend slot `id` (its endpoint under
    /// `proto`) to the VIP `vip`. Refuses an endpoint that another slot's replies already use:
    /// its replies could not be told apart.
    pub fn set_replies(&mut self, id: u32, backend: &Backend, vip: &VipKey, vip_id: u32) -> anyhow::Result<()> {
        let key = BackendKey { addr: backend.addr, port: backend.port, proto: vip.proto, family: backend.family };
        if let Some(other) = self.reply_owners.get(&key).filter(|slot| **slot != id) {
            anyhow::bail!("backend endpoint of slot {id} already serves another VIP (slot {other}): replies would be ambiguous");
        }
        let target = ReplyTarget { vip: *vip, vip_id, backend_id: id };
        match self.reply_keys.get(&id) {
            Some(written) if *written == (key, target) => return Ok(()),
            Some((old, _)) if *old != key => self.forget_replies(id)?,
            _ => {}
        }
        self.admit_endpoint(&key.addr, key.port, FILTER_BACKEND)?;
        self.replies.insert(key, target, 0).with_context(|| format!("writing the replies of backend slot {id}"))?;
        self.reply_keys.insert(id, (key, target));
        self.reply_owners.insert(key, id);
        Ok(())
    }

    /// Stops the translation of backend slot `id`'s replies.
    pub fn forget_replies(&mut self, id: u32) -> anyhow::Result<()> {
        if let Some((key, _)) = self.reply_keys.remove(&id) {
            self.reply_owners.remove(&key);
            removed(self.replies.remove(&key))?;
        }
        Ok(())
    }

    /// Lets the data path send through interface `ifindex`, which the program runs on: it is
    /// added to `TX_PORTS` (redirects) before `EGRESS` names it.
    pub fn add_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| anyhow!("adding interface {ifindex} to {MAP_TX_PORTS}: {e}"))?;
        self.egress
            .insert(ifindex, Egress { out: ifindex, vlan_id: 0, tagged: 0 }, 0)
            .with_context(|| format!("adding interface {ifindex} to {MAP_EGRESS}"))
    }

    /// Lets the data path send through 802.1Q device `ifindex`: out of `parent` (an interface
    /// the program runs on, added with [`Maps::add_port`]) tagged `vlan_id`.
    pub fn add_vlan_port(&mut self, ifindex: u32, parent: u32, vlan_id: u16) -> anyhow::Result<()> {
        anyhow::ensure!(vlan_id < 4096, "VLAN id {vlan_id} is above 4095");
        self.egress
            .insert(ifindex, Egress { out: parent, vlan_id, tagged: 1 }, 0)
            .with_context(|| format!("adding VLAN device {ifindex} to {MAP_EGRESS}"))
    }

    /// Keeps only the egress interfaces in `keep`: the others (an earlier agent's, or an
    /// interface that was re-created with another index) are removed from `EGRESS` first and
    /// from `TX_PORTS` after.
    pub fn retain_ports(&mut self, keep: &[u32]) -> anyhow::Result<()> {
        let stale: Vec<u32> = self.egress.keys().filter_map(Result::ok).filter(|i| !keep.contains(i)).collect();
        for ifindex in stale {
            removed(self.egress.remove(&ifindex))?;
        }
        let stale: Vec<u32> = self.tx_ports.keys().filter_map(Result::ok).filter(|i| !keep.contains(i)).collect();
        for ifindex in stale {
            removed(self.tx_ports.remove(ifindex))?;
        }
        Ok(())
    }

    /// Stops sending through interface `ifindex` (removed from `EGRESS` first, `TX_PORTS`
    /// after).
    pub fn remove_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        removed(self.egress.remove(&ifindex))?;
        removed(self.tx_ports.remove(ifindex))?;
        Ok(())
    }

    /// The egress interfaces: index, and how packets leave by it.
    pub fn ports(&self) -> Vec<(u32, Egress)> {
        self.egress.iter().filter_map(Result::ok).collect()
    }

    /// The reply translation of a backend endpoint, if any.
    pub fn reply_target(&self, key: &BackendKey) -> anyhow::Result<Option<ReplyTarget>> {
        Ok(optional(self.replies.get(key, 0))?)
    }

    /// The connection-table entry for `key`, if any.
    pub fn conn(&self, key: &FlowKey) -> anyhow::Result<Option<Flow>> {
        Ok(optional(self.conns.get(key, 0))?)
    }

    /// The half-open entry for `key` (a round-robin or least-conn SYN), if any.
    pub fn half_open(&self, key: &FlowKey) -> anyhow::Result<Option<Flow>> {
        Ok(optional(self.half_open.get(key, 0))?)
    }

    /// Removes the connection-table entry for `key` (as the LRU would evict it).
    pub fn forget_conn(&mut self, key: &FlowKey) -> anyhow::Result<()> {
        Ok(self.conns.remove(key)?)
    }

    /// New descriptors of `CONNS` and `HALF_OPEN`, to count them off the agent's loop
    /// ([`super::table_walk::spawn_counter`]).
    pub fn table_fds(&self) -> std::io::Result<(OwnedFd, OwnedFd)> {
        Ok((self.table_fds.0.try_clone()?, self.table_fds.1.try_clone()?))
    }

    /// Overwrites least-conn's per-backend flow counts with a recount (`ids` absent from
    /// `counts` are set to zero).
    pub fn set_active_connections(
        &mut self,
        ids: impl Iterator<Item = u32>,
        counts: &std::collections::HashMap<u32, u64>,
    ) -> anyhow::Result<()> {
        for id in ids {
            self.active_conns.set(id, counts.get(&id).copied().unwrap_or(0), 0)?;
        }
        Ok(())
    }

    /// Least-conn's flow count of backend `id` as the data path sees it.
    pub fn active_connections_of(&self, id: u32) -> anyhow::Result<u64> {
        Ok(self.active_conns.get(&id, 0)?)
    }

    /// Number of entries in the connection table (walks it in batches).
    pub fn conn_count(&self) -> usize {
        super::table_walk::walk(self.table_fds.0.as_fd(), |_, _| {}).unwrap_or(0)
    }

    /// Packets counted under each reason, summed over CPUs, in [`Reason::ALL`] order.
    pub fn reasons(&self) -> anyhow::Result<[u64; Reason::COUNT as usize]> {
        let mut out = [0u64; Reason::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = self.reasons.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Zeroes the traffic counters of VIP slot `id` (`vip`) or backend slot `id`: a slot taken
    /// again starts counting from zero, not from what its last user counted.
    pub fn reset_traffic(&mut self, vip: bool, id: u32) -> anyhow::Result<()> {
        self.spend_write()?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero = aya::maps::PerCpuValues::try_from(vec![Traffic::default(); cpus])?;
        let map = if vip { &mut self.vip_stats } else { &mut self.backend_stats };
        map.set(id, zero, 0).with_context(|| format!("zeroing the counters of {} slot {id}", if vip { "VIP" } else { "backend" }))
    }

    /// Tests only: sets backend slot `id`'s per-CPU counters, as the data path counts.
    #[cfg(test)]
    pub fn backend_stats_for_tests(&mut self, id: u32, per_cpu: &[Traffic]) {
        let values = aya::maps::PerCpuValues::try_from(per_cpu.to_vec()).unwrap();
        self.backend_stats.set(id, values, 0).unwrap();
    }

    /// Tests only: after `n` more writes through the agent's write calls, the next write fails
    /// once, as a map update refused by the kernel would (`None`: none fails).
    #[cfg(test)]
    pub fn fail_writes_after(&mut self, n: Option<usize>) {
        self.write_budget = n;
    }

    /// Counts one write against the injected budget; always succeeds outside tests.
    pub(super) fn spend_write(&mut self) -> anyhow::Result<()> {
        #[cfg(test)]
        if let Some(left) = self.write_budget.as_mut() {
            if *left == 0 {
                self.write_budget = None;
                anyhow::bail!("injected map write failure");
            }
            *left -= 1;
        }
        Ok(())
    }

    /// Frames the kernel dropped after a redirect to one of the program's interfaces, summed
    /// over CPUs.
    pub fn redirect_drops(&self) -> anyhow::Result<u64> {
        Ok(self.redirect_drops.get(&0, 0)?.iter().sum())
    }

    /// Traffic of VIP `id`, summed over CPUs.
    pub fn vip_traffic(&self, id: u32) -> anyhow::Result<Traffic> {
        sum(&self.vip_stats, id)
    }

    /// Traffic of backend `id`, summed over CPUs.
    pub fn backend_traffic(&self, id: u32) -> anyhow::Result<Traffic> {
        sum(&self.backend_stats, id)
    }
}

/// One VIP's live ring on the maps, for `lb_common::schedule`.
struct VipRing<'a> {
    maps: &'a Maps,
    meta: &'a VipMeta,
}

impl RingView for VipRing<'_> {
    fn slot(&self, slot: u32) -> Option<u32> {
        self.maps.ring_slot(self.meta, slot).ok()
    }

    fn state(&self, id: u32) -> Option<u8> {
        let b = self.maps.backend(id).ok()?;
        Some(if b.vip_id as u32 == self.meta.id { b.state } else { BackendState::Unused as u8 })
    }

    fn active(&self, id: u32) -> u64 {
        self.maps.active_connections_of(id).unwrap_or(u64::MAX)
    }
}

/// The `VIP_ADDRS` key of a VIP's address.
fn address_key(vip: &VipKey) -> VipKey {
    VipKey { addr: vip.addr, port: 0, proto: 0, family: vip.family }
}

fn sum(map: &PerCpuArray<MapData, Traffic>, id: u32) -> anyhow::Result<Traffic> {
    let mut total = Traffic::default();
    for t in map.get(&id, 0)?.iter() {
        total.add(t);
    }
    Ok(total)
}
