//! The agent's model of what the data path should hold: VIPs and backends with their slot ids,
//! administrative state, weight and health. Pure: every operation returns what changed and the
//! caller writes it to the maps and the health checker.

use std::net::{IpAddr, SocketAddr};

use lb_common::{
    encap::{TUNNEL_FLAG_MSS_CLAMP, Tunnel},
    maps::{
        Backend, BackendState, FAMILY_V4, FAMILY_V6, NextHop, VIP_FLAG_HASH_SRC_ONLY,
        VIP_FLAG_LEAST_CONN, VIP_FLAG_ROUND_ROBIN, VipKey, addr_of,
    },
};

use crate::{
    neighbours::PathInfo,
    config::{
        AdminState, BackendConfig, BackendEndpoint, CheckKind, Config, ONE_VIP_PER_ENDPOINT, Protocol, Scheduler, Vip, port_problem,
        shared_endpoints, weight_problem,
    },
    dataplane::{PinnedBackend, PinnedState, Service, ServiceBackend},
    health::Health,
};

/// A backend as the agent tracks it.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendRuntime {
    /// Slot id in the `BACKENDS` map.
    pub id: u32,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Share of new flows.
    pub weight: u32,
    /// What the operator asked for.
    pub admin: AdminState,
    /// What the health checks say.
    pub health: Health,
    /// Slot generation (bumped when a slot is reused).
    pub generation: u32,
    /// Next hop, once resolved.
    pub hop: NextHop,
    /// Source and MTU of the route to it, once resolved (outer headers of the tunnel modes).
    pub path: PathInfo,
}

impl BackendRuntime {
    /// The state the data path sees: down if the operator or the health checks say so,
    /// draining if the operator drains it, up otherwise.
    pub fn effective(&self) -> BackendState {
        match (self.admin, self.health) {
            (AdminState::Down, _) => BackendState::Down,
            (_, Health::Down) => BackendState::Failed,
            (AdminState::Draining, Health::Up) => BackendState::Draining,
            (AdminState::Up, Health::Up) => BackendState::Up,
        }
    }

    /// Address and port.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// A VIP as the agent tracks it.
#[derive(Clone, Debug, PartialEq)]
pub struct VipRuntime {
    /// Its configuration (the backends list there is not used: see `backends`).
    pub config: Vip,
    /// VIP id (index of its rings and counters).
    pub id: u32,
    /// The pool, in configuration order.
    pub backends: Vec<BackendRuntime>,
}

fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// The path an adopted backend's pinned value records: its outer source when that was the
/// route's (no source prefix), and its MTU. The resolver refreshes both within a second.
fn adopted_path(b: &Backend) -> PathInfo {
    let source = (b.tunnel.src != [0; 16] && b.tunnel.src_host_bits == 0).then(|| lb_common::maps::ip_of(&b.tunnel.src, b.family));
    PathInfo { source, mtu: b.tunnel.mtu.into() }
}

/// The data path key of a configured VIP.
pub fn vip_key(v: &Vip) -> VipKey {
    VipKey {
        addr: addr_of(v.address),
        port: v.port,
        proto: v.protocol.number(),
        family: family(v.address),
    }
}

impl VipRuntime {
    /// The data path key.
    pub fn key(&self) -> VipKey {
        vip_key(&self.config)
    }

    /// `VIP_FLAG_*` bits for its options and scheduler.
    pub fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.config.source_affinity {
            flags |= VIP_FLAG_HASH_SRC_ONLY;
        }
        flags |= match self.config.scheduler {
            Scheduler::Maglev => 0,
            Scheduler::RoundRobin => VIP_FLAG_ROUND_ROBIN,
            Scheduler::LeastConn => VIP_FLAG_LEAST_CONN,
        };
        flags
    }

    /// What the data path should hold for this VIP.
    pub fn service(&self) -> Service {
        Service {
            key: self.key(),
            id: self.id,
            flags: self.flags(),
            udp_idle_secs: self.config.udp_idle_timeout.as_secs().min(lb_common::limits::MAX_UDP_IDLE_SECS.into()) as u16,
            backends: self
                .backends
                .iter()
                .map(|b| ServiceBackend {
                    id: b.id,
                    weight: b.weight,
                    backend: Backend {
                        addr: addr_of(b.address),
                        port: b.port,
                        family: family(b.address),
                        state: b.effective() as u8,
                        generation: b.generation,
                        hop: b.hop,
                        forwarding: self.config.forwarding.code(),
                        pad: 0,
                        vip_id: self.id as u16,
                        tunnel: self.tunnel(b),
                    },
                })
                .collect(),
        }
    }

    /// The outer header's parameters for backend `b` in the tunnel and GUE modes (all zero in
    /// the others): the configured source prefix, else the route's source (zero until resolved:
    /// the data path then drops, counted, rather than send an outer header without a source).
    pub fn tunnel(&self, b: &BackendRuntime) -> Tunnel {
        if !self.config.forwarding.is_encapsulated() {
            return Tunnel::default();
        }
        let dsr = &self.config.dsr;
        let (src, src_host_bits) = match (dsr.tunnel_source, b.path.source) {
            (Some((prefix, len)), _) => (addr_of(prefix), (if prefix.is_ipv4() { 32 } else { 128 } - len as u32) as u8),
            (None, Some(source)) if source.is_ipv4() == b.address.is_ipv4() => (addr_of(source), 0),
            _ => ([0; 16], 0),
        };
        Tunnel {
            src,
            gue_port: dsr.gue_port,
            src_host_bits,
            flags: if dsr.mss_clamp { TUNNEL_FLAG_MSS_CLAMP } else { 0 },
            mtu: match (b.path.mtu.min(u16::MAX.into()) as u16, dsr.tunnel_mtu) {
                (0, Some(configured)) => configured,
                (egress, Some(configured)) => egress.min(configured),
                (egress, None) => egress,
            },
            pad: 0,
        }
    }

    /// The backend at `endpoint`.
    pub fn backend(&self, endpoint: SocketAddr) -> Option<&BackendRuntime> {
        self.backends.iter().find(|b| b.endpoint() == endpoint)
    }

    /// Whether its backends are health-checked.
    pub fn checked(&self) -> bool {
        !matches!(self.config.health_check.kind, CheckKind::None)
    }
}

/// Something the operator asked for that cannot be done.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpError {
    /// No VIP of that name.
    #[error("no VIP named {0:?} (see `lb status`)")]
    NoSuchVip(String),
    /// No such backend in the VIP.
    #[error("VIP {vip:?} has no backend {endpoint} (see `lb status`)")]
    NoSuchBackend {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        endpoint: SocketAddr,
    },
    /// The backend is already in the VIP.
    #[error("VIP {vip:?} already has backend {endpoint}")]
    DuplicateBackend {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        endpoint: SocketAddr,
    },
    /// The backend endpoint serves another VIP, and replies from it would be ambiguous.
    #[error("backend {endpoint} already serves VIP {vip:?}; {ONE_VIP_PER_ENDPOINT}")]
    SharedBackend {
        /// Backend address, port and protocol.
        endpoint: BackendEndpoint,
        /// The VIP it serves.
        vip: String,
    },
    /// A VIP with that name or address, port and protocol exists.
    #[error("a VIP named {0:?} or with the same address, port and protocol already exists")]
    DuplicateVip(String),
    /// Address family differs from the VIP's.
    #[error("backend {endpoint} is not of the same address family as VIP {vip:?}")]
    FamilyMismatch {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        endpoint: SocketAddr,
    },
    /// A value the configuration file would refuse too (port, weight), with the file's words.
    #[error("{0}")]
    Invalid(String),
    /// The change would leave the VIP without a backend that takes new flows.
    #[error(
        "{endpoint} is the last backend of VIP {vip:?} that takes new flows: without it every new connection \
         to the VIP fails. Add or undrain another backend first, or repeat with --force"
    )]
    LastBackend {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        endpoint: SocketAddr,
    },
    /// No free slot.
    #[error("no free {0} slot: raise global.{0}_capacity in the configuration (needs a restart)")]
    Full(&'static str),
    /// The ring is too small for this many backends.
    #[error("VIP {vip:?} would have {backends} backends; ring_size {ring} needs at most {max}")]
    RingTooSmall {
        /// VIP name.
        vip: String,
        /// Backends it would have.
        backends: usize,
        /// Ring size.
        ring: u32,
        /// Most backends the ring supports.
        max: u32,
    },
}

/// What an operation changed, for the caller to apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// VIP ids whose service must be written again.
    pub vips: Vec<u32>,
    /// VIPs removed from the data path (key and id), with their backend slots.
    pub removed_vips: Vec<(VipKey, u32, Vec<u32>)>,
    /// Backend slots freed (their flows are re-chosen).
    pub removed_backends: Vec<u32>,
    /// Backend slots that need a health checker (new or with a changed check).
    pub probe: Vec<u32>,
    /// VIP slots taken by a VIP that did not have them: their counters are zeroed
    /// ([`super::transaction::fresh_slots`]).
    pub fresh_vips: Vec<u32>,
    /// Backend slots taken by a backend that did not have them (zeroed likewise).
    pub fresh_backends: Vec<u32>,
}

impl Changes {
    fn touch(&mut self, vip: u32) {
        if !self.vips.contains(&vip) {
            self.vips.push(vip);
        }
    }
}

/// Free slot ids with their generations.
#[derive(Clone, Debug, PartialEq)]
struct Slots {
    generation: Vec<u32>,
    used: Vec<bool>,
    first: u32,
}

impl Slots {
    fn new(capacity: u32, first: u32) -> Self {
        Slots {
            generation: vec![0; capacity as usize],
            used: vec![false; capacity as usize],
            first,
        }
    }

    fn take(&mut self) -> Option<(u32, u32)> {
        let i = (self.first as usize..self.used.len()).find(|&i| !self.used[i])?;
        self.used[i] = true;
        self.generation[i] = self.generation[i].wrapping_add(1).max(1);
        Some((i as u32, self.generation[i]))
    }

    fn free(&mut self, id: u32) {
        self.used[id as usize] = false;
    }

    /// Marks slot `id` used at `generation` (a slot adopted from a pinned data path). False if
    /// it is beyond the capacity.
    fn reserve(&mut self, id: u32, generation: u32) -> bool {
        let Some(used) = self.used.get_mut(id as usize) else {
            return false;
        };
        *used = true;
        self.generation[id as usize] = generation;
        true
    }

    /// Takes `other`'s generation of every slot where it is ahead.
    fn keep_newer_generations(&mut self, other: &Slots) {
        for (mine, theirs) in self.generation.iter_mut().zip(&other.generation) {
            *mine = (*mine).max(*theirs);
        }
    }
}

/// Every VIP and backend the agent manages.
#[derive(Clone, Debug, PartialEq)]
pub struct Runtime {
    /// VIPs in configuration order.
    pub vips: Vec<VipRuntime>,
    vip_slots: Slots,
    backend_slots: Slots,
    ring_size: u32,
}

impl Runtime {
    /// No VIP yet, with the slots and ring size of `config`, whose pools must not share a
    /// backend endpoint.
    fn empty(config: &Config) -> Result<Runtime, OpError> {
        refuse_shared(config_pools(config))?;
        Ok(Runtime {
            vips: Vec::new(),
            vip_slots: Slots::new(config.global.vip_capacity, 0),
            backend_slots: Slots::new(config.global.backend_capacity, 1),
            ring_size: config.global.ring_size,
        })
    }

    /// The runtime for a validated configuration. Health-checked backends start down until
    /// their first `rise` probes succeed: no flow is sent to a server not yet seen alive.
    pub fn new(config: &Config) -> Result<(Runtime, Changes), OpError> {
        let mut rt = Runtime::empty(config)?;
        let mut changes = Changes::default();
        for vip in &config.vips {
            rt.place_vip(vip, &mut changes)?;
        }
        Ok((rt, changes))
    }

    /// The runtime for a validated configuration over a pinned data path that already serves
    /// (some of) it. A VIP whose key the maps hold keeps its id, and each of its backends whose
    /// endpoint the maps hold under that VIP keeps its slot, generation, next hop and health
    /// (up if the data path had it up or draining; checks go on from there): its flows, ring
    /// and counters carry on. Everything else is placed as in [`Runtime::new`]; what the maps
    /// hold beyond the configuration is removed. Every VIP is written again (the same ring, so
    /// no flow moves) and every backend re-probed.
    pub fn adopt(config: &Config, pinned: &PinnedState) -> Result<(Runtime, Changes), OpError> {
        let mut rt = Runtime::empty(config)?;
        // Generations go on from the pinned ones, so that a reused slot's old flows are told
        // apart from the new backend's.
        for b in &pinned.backends {
            if let Some(g) = rt.backend_slots.generation.get_mut(b.id as usize) {
                *g = b.backend.generation;
            }
        }
        // Every kept id is reserved before any new one is taken.
        let mut kept: Vec<KeptVip> = Vec::new();
        for (i, vip) in config.vips.iter().enumerate() {
            let key = vip_key(vip);
            let Some((_, meta)) = pinned.vips.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            if !rt.vip_slots.reserve(meta.id, 0) {
                continue;
            }
            let mut backends = Vec::new();
            for (j, b) in vip.backends.iter().enumerate() {
                let found = pinned.backends.iter().find(|p| {
                    p.vip_id == Some(meta.id) && p.backend.addr == addr_of(b.address) && p.backend.port == b.port
                });
                if let Some(p) = found.filter(|p| rt.backend_slots.reserve(p.id, p.backend.generation)) {
                    backends.push((j, p));
                }
            }
            kept.push(KeptVip { index: i, id: meta.id, backends });
        }
        let mut changes = Changes::default();
        for (i, vip) in config.vips.iter().enumerate() {
            match kept.iter().find(|k| k.index == i) {
                Some(k) => rt.place_adopted_vip(vip, k.id, &k.backends, &mut changes)?,
                None => rt.place_vip(vip, &mut changes)?,
            }
        }
        let kept_slot = |id: u32| kept.iter().any(|k| k.backends.iter().any(|(_, p)| p.id == id));
        for (key, meta) in &pinned.vips {
            if !kept.iter().any(|k| k.id == meta.id) {
                let slots = pinned.backends.iter().filter(|p| p.vip_id == Some(meta.id)).map(|p| p.id).collect();
                changes.removed_vips.push((*key, meta.id, slots));
            }
        }
        let removed_with_vip = |p: &PinnedBackend| changes.removed_vips.iter().any(|(_, id, _)| Some(*id) == p.vip_id);
        let stale: Vec<u32> = pinned.backends.iter().filter(|p| !kept_slot(p.id) && !removed_with_vip(p)).map(|p| p.id).collect();
        changes.removed_backends.extend(stale);
        Ok((rt, changes))
    }

    /// Places `vip` under its pinned id `id`, its backends `adopted` (configuration index and
    /// pinned slot, already reserved) where they were and the others in new slots.
    fn place_adopted_vip(&mut self, vip: &Vip, id: u32, adopted: &[(usize, &PinnedBackend)], changes: &mut Changes) -> Result<(), OpError> {
        let checked = !matches!(vip.health_check.kind, CheckKind::None);
        let mut backends = Vec::with_capacity(vip.backends.len());
        for (j, b) in vip.backends.iter().enumerate() {
            let backend = match adopted.iter().find(|(k, _)| *k == j) {
                Some((_, p)) => BackendRuntime {
                    id: p.id,
                    address: b.address,
                    port: b.port,
                    weight: b.weight,
                    admin: b.state,
                    health: adopted_health(p.backend.state, checked),
                    generation: p.backend.generation,
                    hop: p.backend.hop,
                    path: adopted_path(&p.backend),
                },
                None => self.new_backend(vip, b)?,
            };
            backends.push(backend);
        }
        changes.probe.extend(backends.iter().map(|b| b.id));
        self.vips.push(VipRuntime { config: vip.clone(), id, backends });
        changes.touch(id);
        Ok(())
    }

    /// The VIP named `name`.
    pub fn vip(&self, name: &str) -> Result<&VipRuntime, OpError> {
        self.vips
            .iter()
            .find(|v| v.config.name == name)
            .ok_or_else(|| OpError::NoSuchVip(name.to_owned()))
    }

    fn vip_mut(&mut self, name: &str) -> Result<&mut VipRuntime, OpError> {
        self.vips
            .iter_mut()
            .find(|v| v.config.name == name)
            .ok_or_else(|| OpError::NoSuchVip(name.to_owned()))
    }

    /// The VIP with id `id`.
    pub fn vip_by_id(&self, id: u32) -> Option<&VipRuntime> {
        self.vips.iter().find(|v| v.id == id)
    }

    /// The VIP and backend with slot `id`.
    pub fn backend_by_id(&self, id: u32) -> Option<(&VipRuntime, &BackendRuntime)> {
        self.vips
            .iter()
            .find_map(|v| v.backends.iter().find(|b| b.id == id).map(|b| (v, b)))
    }

    fn backend_mut(&mut self, vip: &str, endpoint: SocketAddr) -> Result<(u32, &mut BackendRuntime), OpError> {
        let v = self.vip_mut(vip)?;
        let id = v.id;
        let name = v.config.name.clone();
        v.backends
            .iter_mut()
            .find(|b| b.endpoint() == endpoint)
            .map(|b| (id, b))
            .ok_or(OpError::NoSuchBackend { vip: name, endpoint })
    }

    fn max_backends_per_vip(&self) -> u32 {
        self.ring_size / lb_common::limits::RING_SLOTS_PER_BACKEND
    }

    fn new_backend(&mut self, vip: &Vip, b: &BackendConfig) -> Result<BackendRuntime, OpError> {
        let (id, generation) = self.backend_slots.take().ok_or(OpError::Full("backend"))?;
        let checked = !matches!(vip.health_check.kind, CheckKind::None);
        Ok(BackendRuntime {
            id,
            address: b.address,
            port: b.port,
            weight: b.weight,
            admin: b.state,
            health: if checked { Health::Down } else { Health::Up },
            generation,
            hop: NextHop::default(),
            path: PathInfo::default(),
        })
    }

    /// Refuses `backends` for VIP `vip` of `protocol` if another VIP already serves one of them.
    /// Only NAT VIPs count: a direct server return backend's packets are never translated.
    fn refuse_shared_with_running(&self, vip: &Vip, backends: Vec<SocketAddr>) -> Result<(), OpError> {
        if vip.forwarding.is_dsr() {
            return Ok(());
        }
        let running = self
            .vips
            .iter()
            .filter(|v| !v.config.forwarding.is_dsr())
            .map(|v| (v.config.name.as_str(), v.config.protocol, v.backends.iter().map(BackendRuntime::endpoint).collect()));
        refuse_shared(running.chain([(vip.name.as_str(), vip.protocol, backends)]))
    }

    /// Adds a VIP with its backends.
    pub fn add_vip(&mut self, vip: &Vip, changes: &mut Changes) -> Result<(), OpError> {
        self.refuse_shared_with_running(vip, vip.backends.iter().map(BackendConfig::endpoint).collect())?;
        self.place_vip(vip, changes)
    }

    /// Adds a VIP with its backends, which no other VIP serves.
    fn place_vip(&mut self, vip: &Vip, changes: &mut Changes) -> Result<(), OpError> {
        let key = vip_key(vip);
        if self.vips.iter().any(|v| v.config.name == vip.name || v.key() == key) {
            return Err(OpError::DuplicateVip(vip.name.clone()));
        }
        if vip.backends.len() as u32 > self.max_backends_per_vip() {
            return Err(OpError::RingTooSmall {
                vip: vip.name.clone(),
                backends: vip.backends.len(),
                ring: self.ring_size,
                max: self.max_backends_per_vip(),
            });
        }
        let (id, _) = self.vip_slots.take().ok_or(OpError::Full("vip"))?;
        let mut backends = Vec::with_capacity(vip.backends.len());
        for b in &vip.backends {
            match self.new_backend(vip, b) {
                Ok(b) => backends.push(b),
                Err(e) => {
                    backends.iter().for_each(|b: &BackendRuntime| self.backend_slots.free(b.id));
                    self.vip_slots.free(id);
                    return Err(e);
                }
            }
        }
        changes.probe.extend(backends.iter().map(|b| b.id));
        self.vips.push(VipRuntime {
            config: vip.clone(),
            id,
            backends,
        });
        changes.touch(id);
        Ok(())
    }

    /// Removes a VIP: its traffic goes to the kernel again, its backends' slots are freed.
    pub fn remove_vip(&mut self, name: &str, changes: &mut Changes) -> Result<(), OpError> {
        let pos = self
            .vips
            .iter()
            .position(|v| v.config.name == name)
            .ok_or_else(|| OpError::NoSuchVip(name.to_owned()))?;
        let vip = self.vips.remove(pos);
        let ids: Vec<u32> = vip.backends.iter().map(|b| b.id).collect();
        ids.iter().for_each(|&id| self.backend_slots.free(id));
        self.vip_slots.free(vip.id);
        changes.vips.retain(|&v| v != vip.id);
        changes.removed_vips.push((vip.key(), vip.id, ids));
        Ok(())
    }

    /// Adds a backend to a VIP.
    pub fn add_backend(&mut self, vip: &str, b: &BackendConfig, changes: &mut Changes) -> Result<u32, OpError> {
        let config = self.vip(vip)?.config.clone();
        self.refuse_shared_with_running(&config, vec![b.endpoint()])?;
        self.place_backend(vip, b, changes)
    }

    /// Adds a backend, which no other VIP serves, to a VIP.
    fn place_backend(&mut self, vip: &str, b: &BackendConfig, changes: &mut Changes) -> Result<u32, OpError> {
        let endpoint = SocketAddr::new(b.address, b.port);
        if let Some(problem) = port_problem(b.port.into()).or_else(|| weight_problem(b.weight)) {
            return Err(OpError::Invalid(format!("backend {endpoint}: {problem}")));
        }
        let max = self.max_backends_per_vip();
        let ring = self.ring_size;
        let v = self.vip(vip)?;
        if v.config.address.is_ipv4() != b.address.is_ipv4() {
            return Err(OpError::FamilyMismatch { vip: vip.to_owned(), endpoint });
        }
        if v.backend(endpoint).is_some() {
            return Err(OpError::DuplicateBackend { vip: vip.to_owned(), endpoint });
        }
        if v.backends.len() as u32 + 1 > max {
            return Err(OpError::RingTooSmall { vip: vip.to_owned(), backends: v.backends.len() + 1, ring, max });
        }
        let config = v.config.clone();
        let backend = self.new_backend(&config, b)?;
        let id = backend.id;
        let v = self.vip_mut(vip)?;
        v.backends.push(backend);
        changes.touch(v.id);
        changes.probe.push(id);
        Ok(id)
    }

    /// Removes a backend: its flows are given other backends at their next packet.
    pub fn remove_backend(&mut self, vip: &str, endpoint: SocketAddr, force: bool, changes: &mut Changes) -> Result<u32, OpError> {
        self.refuse_stranding(vip, endpoint, force, |_| None)?;
        let (vip_id, id) = {
            let (vip_id, b) = self.backend_mut(vip, endpoint)?;
            (vip_id, b.id)
        };
        let v = self.vip_mut(vip)?;
        v.backends.retain(|b| b.id != id);
        self.backend_slots.free(id);
        changes.touch(vip_id);
        changes.removed_backends.push(id);
        Ok(id)
    }

    /// Sets a backend's administrative state (drain, undrain, down). Draining or downing the
    /// VIP's last backend that takes new flows is refused unless `force`.
    pub fn set_admin(&mut self, vip: &str, endpoint: SocketAddr, state: AdminState, force: bool, changes: &mut Changes) -> Result<(), OpError> {
        self.refuse_stranding(vip, endpoint, force, |b| Some(BackendRuntime { admin: state, ..b.clone() }))?;
        let (vip_id, b) = self.backend_mut(vip, endpoint)?;
        if b.admin != state {
            b.admin = state;
            changes.touch(vip_id);
        }
        Ok(())
    }

    /// Sets a backend's weight. Weight 0 on the VIP's last backend that takes new flows is
    /// refused unless `force`.
    pub fn set_weight(&mut self, vip: &str, endpoint: SocketAddr, weight: u32, force: bool, changes: &mut Changes) -> Result<(), OpError> {
        if let Some(problem) = weight_problem(weight) {
            return Err(OpError::Invalid(format!("weight {problem}")));
        }
        self.refuse_stranding(vip, endpoint, force, |b| Some(BackendRuntime { weight, ..b.clone() }))?;
        let (vip_id, b) = self.backend_mut(vip, endpoint)?;
        if b.weight != weight {
            b.weight = weight;
            changes.touch(vip_id);
        }
        Ok(())
    }

    /// Refuses (unless `force`) a change of backend `endpoint` of `vip` (`change`: what it
    /// becomes, `None` for removed) that leaves a VIP with backends taking new flows without
    /// any. A VIP that had none already is not refused: the change breaks nothing more.
    fn refuse_stranding(
        &self,
        vip: &str,
        endpoint: SocketAddr,
        force: bool,
        change: impl Fn(&BackendRuntime) -> Option<BackendRuntime>,
    ) -> Result<(), OpError> {
        let v = self.vip(vip)?;
        let target = v.backend(endpoint).ok_or_else(|| OpError::NoSuchBackend { vip: vip.to_owned(), endpoint })?;
        let takes = |b: &BackendRuntime| lb_common::serving::takes_new_flows(b.effective(), b.weight);
        let before = v.backends.iter().filter(|b| takes(b)).count();
        let after = v.backends.iter().filter(|b| b.id != target.id && takes(b)).count() + change(target).is_some_and(|b| takes(&b)) as usize;
        if before > 0 && after == 0 && !force {
            return Err(OpError::LastBackend { vip: vip.to_owned(), endpoint });
        }
        Ok(())
    }

    /// Applies `update` to backend slot `id` (ignored if the backend is gone) and marks its VIP
    /// for writing if `update` reports a change.
    fn update_backend(&mut self, id: u32, changes: &mut Changes, update: impl FnOnce(&mut BackendRuntime) -> bool) {
        for v in &mut self.vips {
            if let Some(b) = v.backends.iter_mut().find(|b| b.id == id) {
                if update(b) {
                    changes.touch(v.id);
                }
                return;
            }
        }
    }

    /// Records a health transition of the backend in slot `id` with generation `generation`.
    /// Returns false, changing nothing, when that backend is gone: its slot is free or holds
    /// another backend (a newer generation), and the transition was queued before it left.
    pub fn set_health(&mut self, id: u32, generation: u32, health: Health, changes: &mut Changes) -> bool {
        let mut current = false;
        self.update_backend(id, changes, |b| {
            current = b.generation == generation;
            current && std::mem::replace(&mut b.health, health) != health
        });
        current
    }

    /// Records the next hop of backend slot `id`.
    pub fn set_hop(&mut self, id: u32, hop: NextHop, changes: &mut Changes) {
        self.update_backend(id, changes, |b| std::mem::replace(&mut b.hop, hop) != hop);
    }

    /// Records the path (source, MTU) of the route to backend slot `id`.
    pub fn set_path(&mut self, id: u32, path: PathInfo, changes: &mut Changes) {
        self.update_backend(id, changes, |b| std::mem::replace(&mut b.path, path) != path);
    }

    /// Moves to a new configuration, all or nothing: see [`Runtime::reconfigured`]. A refused
    /// configuration leaves `self` as it was.
    pub fn reconfigure(&mut self, config: &Config) -> Result<Changes, OpError> {
        let (next, changes) = self.reconfigured(config)?;
        *self = next;
        Ok(changes)
    }

    /// The runtime for a new configuration and what differs from `self`, built on a copy:
    /// `self` is not changed, so a refused configuration changes nothing and the caller
    /// decides when the new runtime takes over (after the maps were written).
    ///
    /// Slot ids, health and next hops of VIPs and backends that stay (matched by VIP name,
    /// address, port and protocol, and backend address and port) are kept, so their flows are
    /// not disturbed. Everything that goes is removed before anything is added: a
    /// configuration that fits the capacities never runs out of slots halfway. A backend
    /// endpoint may move from one VIP to another.
    pub fn reconfigured(&self, config: &Config) -> Result<(Runtime, Changes), OpError> {
        refuse_shared(config_pools(config))?;
        let mut next = self.clone();
        let mut changes = Changes::default();
        next.remove_what_goes(config, &mut changes)?;
        for vip in &config.vips {
            next.update_vip(vip, &mut changes)?;
        }
        Ok((next, changes))
    }

    /// Removes the VIPs `config` does not have (by name and key) and the backends that left
    /// the pools of the others.
    fn remove_what_goes(&mut self, config: &Config, changes: &mut Changes) -> Result<(), OpError> {
        let stays = |v: &VipRuntime| config.vips.iter().find(|n| n.name == v.config.name && vip_key(n) == v.key());
        let gone: Vec<String> = self.vips.iter().filter(|v| stays(v).is_none()).map(|v| v.config.name.clone()).collect();
        for name in gone {
            self.remove_vip(&name, changes)?;
        }
        let left: Vec<(String, SocketAddr)> = self
            .vips
            .iter()
            .filter_map(|v| stays(v).map(|new| (v, new)))
            .flat_map(|(v, new)| {
                let kept = |e: SocketAddr| new.backends.iter().any(|b| b.endpoint() == e);
                v.backends.iter().map(BackendRuntime::endpoint).filter(move |&e| !kept(e)).map(|e| (v.config.name.clone(), e))
            })
            .collect();
        for (vip, endpoint) in left {
            self.remove_backend(&vip, endpoint, true, changes)?;
        }
        Ok(())
    }

    /// Brings the VIP named like `new` to `new`: placed if it is new, otherwise its new
    /// backends added, its kept backends' weight and state set and its configuration replaced.
    /// Backends that left its pool are already removed.
    fn update_vip(&mut self, new: &Vip, changes: &mut Changes) -> Result<(), OpError> {
        if self.vip(&new.name).is_err() {
            return self.place_vip(new, changes);
        }
        for b in &new.backends {
            if self.vip(&new.name)?.backend(b.endpoint()).is_none() {
                self.place_backend(&new.name, b, changes)?;
            } else {
                self.set_weight(&new.name, b.endpoint(), b.weight, true, changes)?;
                self.set_admin(&new.name, b.endpoint(), b.state, true, changes)?;
            }
        }
        let v = self.vip_mut(&new.name)?;
        let check_changed = v.config.health_check != new.health_check;
        if matches!(new.health_check.kind, CheckKind::None) {
            for b in &mut v.backends {
                b.health = Health::Up;
            }
        }
        if v.config != *new {
            v.config = new.clone();
            changes.touch(v.id);
        }
        if check_changed {
            changes.probe.extend(v.backends.iter().map(|b| b.id));
        }
        Ok(())
    }

    /// What writes `self` back to the maps and the health checker after `forward`, the changes
    /// from `self` to `failed`, were applied in part (a map write failed midway): the VIPs and
    /// backend slots `failed` holds and `self` does not are removed, every VIP of `self` is
    /// written again and the probes `forward` touched are restored.
    ///
    /// Also advances `self`'s slot generations to `failed`'s, so that a slot taken later never
    /// carries a generation the data path may have seen on another backend.
    pub fn rollback(&mut self, failed: &Runtime, forward: &Changes) -> Changes {
        self.backend_slots.keep_newer_generations(&failed.backend_slots);
        let mut undo = Changes::default();
        for v in &failed.vips {
            let foreign: Vec<u32> = v.backends.iter().filter(|b| !self.holds(b)).map(|b| b.id).collect();
            if self.vips.iter().any(|o| o.key() == v.key()) {
                undo.removed_backends.extend(foreign);
            } else {
                undo.removed_vips.push((v.key(), v.id, foreign));
            }
        }
        undo.vips = self.vips.iter().map(|v| v.id).collect();
        let removed = forward.removed_vips.iter().flat_map(|(_, _, ids)| ids);
        for &id in forward.probe.iter().chain(&forward.removed_backends).chain(removed) {
            if self.backend_by_id(id).is_some() && !undo.probe.contains(&id) {
                undo.probe.push(id);
            }
        }
        undo
    }

    /// Whether `b` (slot and generation) is one of this runtime's backends.
    fn holds(&self, b: &BackendRuntime) -> bool {
        self.backend_by_id(b.id).is_some_and(|(_, own)| own.generation == b.generation)
    }
}

/// Each VIP of `config` with its protocol and backends, for [`shared_endpoints`].
/// A configured VIP found in a pinned data path: its index in the configuration, its pinned id,
/// and its backends found there (configuration index, pinned slot).
struct KeptVip<'a> {
    index: usize,
    id: u32,
    backends: Vec<(usize, &'a PinnedBackend)>,
}

/// The health a backend the data path had in `state` is adopted with: up if it took or kept
/// flows, down otherwise; always up when not checked.
fn adopted_health(state: u8, checked: bool) -> Health {
    match BackendState::from_u8(state) {
        _ if !checked => Health::Up,
        BackendState::Up | BackendState::Draining => Health::Up,
        BackendState::Down | BackendState::Failed | BackendState::Unused => Health::Down,
    }
}

/// The pools of `config`'s NAT VIPs (direct server return backends need no reply translation).
fn config_pools(config: &Config) -> impl Iterator<Item = (&str, Protocol, impl Iterator<Item = SocketAddr> + '_)> {
    config.vips.iter().filter(|v| !v.forwarding.is_dsr()).map(|v| (v.name.as_str(), v.protocol, v.backends.iter().map(BackendConfig::endpoint)))
}

/// Refuses the first backend endpoint of `pools` that serves a second VIP.
fn refuse_shared<'a, B: IntoIterator<Item = SocketAddr>>(pools: impl IntoIterator<Item = (&'a str, Protocol, B)>) -> Result<(), OpError> {
    match shared_endpoints(pools).into_iter().next() {
        Some(s) => Err(OpError::SharedBackend { endpoint: s.endpoint, vip: s.first.to_owned() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const YAML: &str = "\
global:
  interfaces: [eth0]
  backend_capacity: 6
  vip_capacity: 2
  ring_size: 307
vips:
  - name: web
    address: 10.0.0.1
    port: 80
    backends:
      - address: 10.1.0.1
      - address: 10.1.0.2
        state: draining
  - name: dns
    address: 10.0.0.1
    port: 53
    protocol: udp
    health_check:
      type: none
    backends:
      - address: 10.2.0.1
";

    fn runtime() -> Runtime {
        Runtime::new(&config::parse("t", YAML).unwrap()).unwrap().0
    }

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn slots_and_initial_health() {
        let rt = runtime();
        let web = rt.vip("web").unwrap();
        let dns = rt.vip("dns").unwrap();
        assert_eq!((web.id, dns.id), (0, 1));
        let ids: Vec<u32> = rt.vips.iter().flat_map(|v| v.backends.iter().map(|b| b.id)).collect();
        assert_eq!(ids, vec![1, 2, 3], "slot 0 is never used");
        // Checked backends start down until their probes pass; unchecked ones are up.
        assert_eq!(web.backends[0].health, Health::Down);
        assert_eq!(dns.backends[0].health, Health::Up);
        assert_eq!(dns.backends[0].effective(), BackendState::Up);
        assert_eq!(web.backends[1].admin, AdminState::Draining);
    }

    #[test]
    fn effective_state_combines_admin_and_health() {
        let mut b = runtime().vip("web").unwrap().backends[0].clone();
        for (admin, health, want) in [
            (AdminState::Up, Health::Up, BackendState::Up),
            (AdminState::Draining, Health::Up, BackendState::Draining),
            (AdminState::Down, Health::Up, BackendState::Down),
            (AdminState::Up, Health::Down, BackendState::Failed),
            (AdminState::Draining, Health::Down, BackendState::Failed),
        ] {
            b.admin = admin;
            b.health = health;
            assert_eq!(b.effective(), want, "{admin:?} {health:?}");
        }
    }

    #[test]
    fn operations_report_what_changed() {
        let mut rt = runtime();
        let mut ch = Changes::default();
        rt.set_health(1, 1, Health::Up, &mut ch);
        assert_eq!(ch.vips, vec![0]);
        let mut ch = Changes::default();
        rt.set_health(1, 1, Health::Up, &mut ch);
        rt.set_weight("web", ep("10.1.0.1:80"), 1, false, &mut ch).unwrap();
        assert_eq!(ch, Changes::default(), "no change, nothing to write");
        rt.set_admin("web", ep("10.1.0.2:80"), AdminState::Up, false, &mut ch).unwrap();
        assert_eq!(ch.vips, vec![0]);
        assert_eq!(rt.vip("web").unwrap().service().backends[1].backend.state, BackendState::Failed as u8, "still unproven");
    }

    #[test]
    fn refused_operations_change_nothing() {
        let mut rt = runtime();
        let mut ch = Changes::default();
        let b = |a: &str| BackendConfig { address: a.parse().unwrap(), port: 80, weight: 1, state: AdminState::Up };
        assert_eq!(rt.add_backend("nope", &b("10.1.0.9"), &mut ch), Err(OpError::NoSuchVip("nope".into())));
        assert!(matches!(rt.add_backend("web", &b("10.1.0.1"), &mut ch), Err(OpError::DuplicateBackend { .. })));
        assert!(matches!(rt.add_backend("web", &b("2001:db8::1"), &mut ch), Err(OpError::FamilyMismatch { .. })));
        assert_eq!(
            rt.set_weight("web", ep("10.1.0.1:80"), 70_000, false, &mut ch),
            Err(OpError::Invalid("weight 70000 is above the maximum weight 65535".into()))
        );
        assert!(matches!(rt.remove_backend("web", ep("10.9.9.9:80"), true, &mut ch), Err(OpError::NoSuchBackend { .. })));
        assert_eq!(ch, Changes::default());
        // Six slots, slot 0 reserved, three used: two more fit, the third does not.
        rt.add_backend("web", &b("10.1.0.3"), &mut ch).unwrap();
        rt.add_backend("dns", &BackendConfig { port: 53, ..b("10.2.0.2") }, &mut ch).unwrap();
        let third = BackendConfig { port: 53, ..b("10.2.0.3") };
        assert_eq!(rt.add_backend("dns", &third, &mut ch), Err(OpError::Full("backend")));
        // The ring (307 slots) holds at most three backends per VIP.
        let mut rt = runtime();
        rt.add_backend("web", &b("10.1.0.3"), &mut ch).unwrap();
        assert!(matches!(rt.add_backend("web", &b("10.1.0.4"), &mut ch), Err(OpError::RingTooSmall { max: 3, .. })));
    }

    fn tcp(endpoint: &str) -> BackendEndpoint {
        BackendEndpoint { addr: ep(endpoint), protocol: Protocol::Tcp }
    }

    fn shared(endpoint: &str, vip: &str) -> Result<(), OpError> {
        Err(OpError::SharedBackend { endpoint: tcp(endpoint), vip: vip.into() })
    }

    #[test]
    fn a_backend_endpoint_serves_one_vip() {
        let mut rt = runtime();
        let mut ch = Changes::default();
        rt.remove_vip("dns", &mut ch).unwrap();
        let b = |a: &str| BackendConfig { address: ep(a).ip(), port: ep(a).port(), weight: 1, state: AdminState::Up };
        let img = |backends: &[&str]| Vip { name: "img".into(), port: 81, backends: backends.iter().map(|a| b(a)).collect(), ..rt.vip("web").unwrap().config.clone() };
        let (before, img_taken, img_shared) = (rt.vips.clone(), img(&["10.1.0.1:8080"]), img(&["10.1.0.5:80", "10.1.0.2:80"]));
        let mut ch = Changes::default();
        assert_eq!(rt.add_vip(&img_shared, &mut ch), shared("10.1.0.2:80", "web"));
        assert_eq!(
            rt.add_vip(&img_shared, &mut ch).unwrap_err().to_string(),
            "backend 10.1.0.2:80/tcp already serves VIP \"web\"; replies from one backend endpoint must map to one VIP"
        );
        assert_eq!((&rt.vips, &ch), (&before, &Changes::default()), "a refused VIP changes nothing");
        rt.add_vip(&img_taken, &mut ch).unwrap();
        let (before, mut ch) = (rt.vips.clone(), Changes::default());
        assert_eq!(rt.add_backend("img", &b("10.1.0.1:80"), &mut ch).map(|_| ()), shared("10.1.0.1:80", "web"));
        assert_eq!(rt.add_backend("web", &b("10.1.0.1:8080"), &mut ch).map(|_| ()), shared("10.1.0.1:8080", "img"));
        assert_eq!((&rt.vips, &ch), (&before, &Changes::default()), "a refused backend changes nothing");
        rt.add_backend("img", &b("10.1.0.1:81"), &mut ch).expect("another port of the same address");
    }

    #[test]
    fn a_backend_endpoint_may_serve_another_protocol() {
        let mut rt = runtime();
        let mut ch = Changes::default();
        let web_backend = BackendConfig { address: "10.1.0.1".parse().unwrap(), port: 80, weight: 1, state: AdminState::Up };
        let id = rt.add_backend("dns", &web_backend, &mut ch).expect("10.1.0.1:80 serves web over tcp, dns over udp");
        assert_eq!(rt.backend_by_id(id).unwrap().0.config.name, "dns");
    }

    #[test]
    fn reconfigure_refuses_a_shared_backend_endpoint_and_changes_nothing() {
        let mut rt = runtime();
        let before = rt.vips.clone();
        let mut new = config::parse("t", YAML).unwrap();
        new.vips[1].protocol = Protocol::Tcp;
        new.vips[1].backends.push(BackendConfig { address: "10.1.0.2".parse().unwrap(), port: 80, weight: 1, state: AdminState::Up });
        assert_eq!(rt.reconfigure(&new).map(|_| ()), shared("10.1.0.2:80", "web"));
        assert_eq!(rt.vips, before);
        assert_eq!(Runtime::new(&new).map(|_| ()).unwrap_err(), OpError::SharedBackend { endpoint: tcp("10.1.0.2:80"), vip: "web".into() });
    }

    #[test]
    fn reconfigure_may_move_a_backend_endpoint_to_an_earlier_vip() {
        let mut rt = runtime();
        let img = "  - name: img\n    address: 10.0.0.1\n    port: 81\n    backends:\n      - address: 10.1.0.2\n        port: 80\n";
        let moved = YAML
            .replace("      - address: 10.1.0.2\n        state: draining\n", "")
            .replace("vips:\n", &format!("vips:\n{img}"))
            .replace("  - name: dns\n    address: 10.0.0.1\n    port: 53\n    protocol: udp\n    health_check:\n      type: none\n    backends:\n      - address: 10.2.0.1\n", "");
        rt.reconfigure(&config::parse("t", &moved).unwrap()).expect("the endpoint leaves web as it joins img");
        let endpoints = |vip: &str| rt.vip(vip).unwrap().backends.iter().map(BackendRuntime::endpoint).collect::<Vec<_>>();
        assert_eq!((endpoints("img"), endpoints("web")), (vec![ep("10.1.0.2:80")], vec![ep("10.1.0.1:80")]));
    }

    #[test]
    fn reused_slots_get_a_new_generation() {
        let mut rt = runtime();
        let mut ch = Changes::default();
        let old = rt.vip("web").unwrap().backends[0].clone();
        assert_eq!(rt.remove_backend("web", old.endpoint(), true, &mut ch), Ok(old.id));
        assert_eq!(ch.removed_backends, vec![old.id]);
        let b = BackendConfig { address: "10.1.0.7".parse().unwrap(), port: 80, weight: 1, state: AdminState::Up };
        let id = rt.add_backend("web", &b, &mut ch).unwrap();
        let new = rt.backend_by_id(id).unwrap().1;
        assert_eq!(id, old.id, "the freed slot is reused");
        assert_ne!(new.generation, old.generation, "so stale flows are recognised");
    }

    /// Web with two backends, dns with three: all five usable slots of capacity 6 are taken.
    fn full_runtime() -> Runtime {
        let yaml = YAML.replace("      - address: 10.2.0.1\n", "      - address: 10.2.0.1\n      - address: 10.2.0.2\n      - address: 10.2.0.3\n");
        Runtime::new(&config::parse("t", &yaml).unwrap()).unwrap().0
    }

    /// `full_runtime`'s configuration with web's backends `web` and dns's `dns`.
    fn pools(web: &[&str], dns: &[&str]) -> Config {
        let mut c = config::parse("t", YAML).unwrap();
        let b = |a: &str| BackendConfig { address: ep(a).ip(), port: ep(a).port(), weight: 1, state: AdminState::Up };
        c.vips[0].backends = web.iter().map(|a| b(a)).collect();
        c.vips[1].backends = dns.iter().map(|a| b(a)).collect();
        c
    }

    fn endpoints(rt: &Runtime, vip: &str) -> Vec<SocketAddr> {
        rt.vip(vip).unwrap().backends.iter().map(BackendRuntime::endpoint).collect()
    }

    #[test]
    fn reconfigure_frees_slots_before_taking_new_ones() {
        // Measured on main: web grows while dns shrinks, five backends in all (capacity 6).
        // Web was handled first and ran out of slots after it had replaced a backend.
        let mut rt = full_runtime();
        let new = pools(&["10.1.0.1:80", "10.1.0.3:80", "10.1.0.4:80"], &["10.2.0.1:53", "10.2.0.2:53"]);
        let ch = rt.reconfigure(&new).expect("a valid configuration fits once dns's backend is gone");
        assert_eq!(endpoints(&rt, "web"), [ep("10.1.0.1:80"), ep("10.1.0.3:80"), ep("10.1.0.4:80")]);
        assert_eq!(endpoints(&rt, "dns"), [ep("10.2.0.1:53"), ep("10.2.0.2:53")]);
        let mut removed = ch.removed_backends.clone();
        removed.sort_unstable();
        assert_eq!(removed, [2, 5], "10.1.0.2 and 10.2.0.3");
    }

    #[test]
    fn a_refused_reconfigure_changes_nothing() {
        // Six backends for five slots: refused after web has replaced a backend.
        let mut rt = full_runtime();
        let new = pools(&["10.1.0.1:80", "10.1.0.3:80", "10.1.0.4:80"], &["10.2.0.1:53", "10.2.0.2:53", "10.2.0.3:53"]);
        assert_eq!(rt.reconfigure(&new), Err(OpError::Full("backend")));
        assert_eq!(rt, full_runtime(), "VIPs, backends, free slots and generations as before");
    }

    #[test]
    fn a_transition_of_a_removed_backend_is_ignored() {
        let mut rt = runtime();
        let mut ch = Changes::default();
        let old = rt.vip("web").unwrap().backends[0].clone();
        rt.remove_backend("web", old.endpoint(), true, &mut ch).unwrap();
        let b = BackendConfig { address: "10.1.0.7".parse().unwrap(), port: 80, weight: 1, state: AdminState::Up };
        let id = rt.add_backend("web", &b, &mut ch).unwrap();
        let new = rt.backend_by_id(id).unwrap().1.clone();
        assert_eq!((new.id, new.health), (old.id, Health::Down), "the slot is reused by an unproven backend");
        // The old backend's checker had queued "up" before it was removed.
        let mut ch = Changes::default();
        assert!(!rt.set_health(old.id, old.generation, Health::Up, &mut ch), "stale");
        assert_eq!((rt.backend_by_id(id).unwrap().1.health, &ch), (Health::Down, &Changes::default()));
        assert!(rt.set_health(new.id, new.generation, Health::Up, &mut ch), "its own checker's transition lands");
        assert_eq!((rt.backend_by_id(id).unwrap().1.health, &ch.vips), (Health::Up, &vec![0]));
        // A slot left free ignores transitions too.
        rt.remove_backend("web", new.endpoint(), true, &mut ch).unwrap();
        assert!(!rt.set_health(new.id, new.generation, Health::Down, &mut ch));
    }

    /// The maps (VIPs and backend slots) and the health checker's targets, as `Agent::apply`
    /// writes them, failing after `budget` map writes.
    #[derive(Debug)]
    struct FakeMaps {
        vips: std::collections::HashMap<VipKey, Service>,
        backends: std::collections::BTreeMap<u32, Backend>,
        probes: std::collections::BTreeMap<u32, u32>,
        budget: usize,
    }

    impl FakeMaps {
        /// What the maps hold for `rt`.
        fn of(rt: &Runtime) -> FakeMaps {
            let mut maps = FakeMaps { vips: Default::default(), backends: Default::default(), probes: Default::default(), budget: usize::MAX };
            let ids = rt.vips.iter().flat_map(|v| v.backends.iter().map(|b| b.id)).collect();
            maps.apply(rt, &Changes { vips: rt.vips.iter().map(|v| v.id).collect(), probe: ids, ..Changes::default() }).unwrap();
            maps
        }

        /// What the maps and the checker hold (not the budget).
        fn held(&self) -> impl PartialEq + std::fmt::Debug + '_ {
            (&self.vips, &self.backends, &self.probes)
        }

        fn write(&mut self) -> Result<(), ()> {
            self.budget = self.budget.checked_sub(1).ok_or(())?;
            Ok(())
        }

        fn free(&mut self, id: u32) -> Result<(), ()> {
            self.write()?;
            self.backends.remove(&id);
            self.probes.remove(&id);
            Ok(())
        }

        /// `Agent::apply`, in the same order.
        fn apply(&mut self, rt: &Runtime, changes: &Changes) -> Result<(), ()> {
            for (key, _, ids) in &changes.removed_vips {
                self.write()?;
                self.vips.remove(key);
                ids.iter().try_for_each(|&id| self.free(id))?;
            }
            changes.removed_backends.iter().try_for_each(|&id| self.free(id))?;
            for v in changes.vips.iter().filter_map(|&id| rt.vip_by_id(id)) {
                self.write()?;
                let svc = v.service();
                self.backends.extend(svc.backends.iter().map(|b| (b.id, b.backend)));
                self.vips.insert(svc.key, svc);
            }
            for (v, b) in changes.probe.iter().filter_map(|&id| rt.backend_by_id(id)) {
                if v.checked() { self.probes.insert(b.id, b.generation) } else { self.probes.remove(&b.id) };
            }
            Ok(())
        }
    }

    #[test]
    fn rollback_writes_the_running_runtime_back_after_any_failed_write() {
        let b = |a: &str| BackendConfig { address: ep(a).ip(), port: ep(a).port(), weight: 1, state: AdminState::Up };
        let mut moved = pools(&["10.1.0.1:80", "10.1.0.3:80", "10.1.0.4:80"], &[]);
        moved.vips[0].health_check.kind = CheckKind::Tcp;
        moved.vips[1] = Vip { name: "img".into(), address: "10.0.0.2".parse().unwrap(), backends: vec![b("10.2.0.1:53")], ..moved.vips[0].clone() };
        let grown = pools(&["10.1.0.1:80", "10.1.0.3:80", "10.1.0.4:80"], &["10.2.0.1:53", "10.2.0.2:53"]);
        // A new VIP written before a failing write of web.
        let mut prepended = pools(&["10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"], &[]);
        prepended.vips[1] = Vip { name: "img".into(), address: "10.0.0.2".parse().unwrap(), backends: vec![b("10.3.0.1:80"), b("10.3.0.2:80")], ..prepended.vips[0].clone() };
        prepended.vips.reverse();
        // From five backends to others, and from three (slots 4 and 5 free) to others.
        for running in [full_runtime(), runtime()] {
            for new in [&moved, &grown, &prepended] {
                rolls_back_after_any_failed_write(&running, new);
            }
        }
    }

    /// Fails the write of `running`'s reconfiguration to `new` after every number of writes
    /// and checks that the rollback writes `running` back.
    fn rolls_back_after_any_failed_write(running: &Runtime, new: &Config) {
        let (next, forward) = running.reconfigured(new).unwrap();
        let mut maps = FakeMaps::of(running);
        maps.apply(&next, &forward).unwrap();
        let (want, undone) = (FakeMaps::of(&next), FakeMaps::of(running));
        assert_eq!(maps.held(), want.held(), "the forward changes write the new runtime");
        for budget in 0.. {
            let mut maps = FakeMaps { budget, ..FakeMaps::of(running) };
            if maps.apply(&next, &forward).is_ok() {
                break;
            }
            let mut kept = running.clone();
            let undo = kept.rollback(&next, &forward);
            maps.budget = usize::MAX;
            maps.apply(&kept, &undo).unwrap();
            assert_eq!(maps.held(), undone.held(), "failed after {budget} writes");
            assert_eq!(kept.vips, running.vips);
        }
    }

    #[test]
    fn after_a_rollback_reused_slots_get_generations_never_written() {
        let mut running = full_runtime();
        let (next, forward) = running.reconfigured(&pools(&["10.1.0.1:80", "10.1.0.3:80"], &["10.2.0.1:53"])).unwrap();
        let tried = next.vip("web").unwrap().backends[1].clone();
        running.rollback(&next, &forward);
        let mut ch = Changes::default();
        running.remove_backend("web", ep("10.1.0.2:80"), true, &mut ch).unwrap();
        let id = running.add_backend("web", &BackendConfig { address: "10.1.0.9".parse().unwrap(), port: 80, weight: 1, state: AdminState::Up }, &mut ch).unwrap();
        let reused = running.backend_by_id(id).unwrap().1;
        assert_eq!(id, tried.id);
        assert!(reused.generation > tried.generation, "{} after {}", reused.generation, tried.generation);
    }

    #[test]
    fn reconfigure_keeps_what_stays() {
        let mut rt = runtime();
        let mut ch = Changes::default();
        rt.set_health(1, 1, Health::Up, &mut ch);
        let changed = YAML
            .replace("      - address: 10.1.0.2\n        state: draining\n", "      - address: 10.1.0.3\n        weight: 4\n")
            .replace("  - name: dns\n    address: 10.0.0.1\n    port: 53\n    protocol: udp\n    health_check:\n      type: none\n    backends:\n      - address: 10.2.0.1\n", "");
        let ch = rt.reconfigure(&config::parse("t", &changed).unwrap()).unwrap();
        let web = rt.vip("web").unwrap();
        assert_eq!(web.backends[0].id, 1, "the kept backend keeps its slot");
        assert_eq!(web.backends[0].health, Health::Up, "and its health");
        assert_eq!((web.backends[1].address, web.backends[1].weight), ("10.1.0.3".parse().unwrap(), 4));
        assert_eq!(ch.removed_backends, vec![2]);
        assert_eq!(ch.removed_vips.len(), 1, "dns removed");
        assert!(rt.vip("dns").is_err());
        assert_eq!(ch.vips, vec![0]);
    }

    /// What the maps hold after `rt` was written to them.
    fn pinned_from(rt: &Runtime) -> PinnedState {
        let mut pinned = PinnedState::default();
        for v in &rt.vips {
            let svc = v.service();
            let meta = lb_common::maps::VipMeta { id: v.id, flags: svc.flags, ..Default::default() };
            pinned.vips.push((svc.key, meta));
            for b in svc.backends {
                pinned.backends.push(PinnedBackend { id: b.id, vip_id: Some(v.id), backend: b.backend });
            }
        }
        pinned
    }

    #[test]
    fn adopting_the_same_configuration_changes_no_flow() {
        let config = config::parse("t", YAML).unwrap();
        let mut rt = runtime();
        let mut ch = Changes::default();
        let up = rt.vip("web").unwrap().backends[0].clone();
        assert!(rt.set_health(up.id, up.generation, Health::Up, &mut ch));
        let hop = NextHop { ifindex: 7, dst_mac: [2, 0, 0, 0, 0, 1], src_mac: [2, 0, 0, 0, 0, 2] };
        rt.set_hop(up.id, hop, &mut ch);

        let (adopted, changes) = Runtime::adopt(&config, &pinned_from(&rt)).unwrap();
        assert_eq!(adopted.vips, rt.vips, "ids, slots, generations, next hops and health carry on");
        for v in &rt.vips {
            assert_eq!(adopted.vip(&v.config.name).unwrap().service(), v.service(), "same service, so the same ring");
        }
        let web = adopted.vip("web").unwrap();
        assert_eq!((web.backends[0].health, web.backends[0].hop), (Health::Up, hop));
        assert_eq!(web.backends[1].health, Health::Down, "a backend the data path had down stays down until its checks pass");
        assert_eq!(adopted.vip("dns").unwrap().backends[0].health, Health::Up, "unchecked");
        assert!(changes.removed_vips.is_empty() && changes.removed_backends.is_empty(), "{changes:?}");
        assert_eq!(changes.vips, vec![0, 1], "every VIP is written again");
        assert_eq!(changes.probe, vec![1, 2, 3], "every backend is probed again");
    }

    const DSR_YAML: &str = "\
global:
  interfaces: [eth0]
  backend_capacity: 6
  vip_capacity: 2
  ring_size: 307
vips:
  - name: web
    address: 10.0.0.1
    port: 80
    forwarding: gue
    tunnel_mtu: 1400
    health_check:
      type: tcp
    backends:
      - address: 10.1.0.1
  - name: api
    address: 10.0.0.2
    port: 443
    forwarding: tunnel
    tunnel_source: 2001:db8:5::/124
    health_check:
      type: tcp
      target: address
    backends:
      - address: 2001:db8::1
";

    #[test]
    fn dsr_backends_carry_their_mode_vip_and_tunnel_from_the_route_and_the_file() {
        use lb_common::encap::{DEFAULT_GUE_PORT, FORWARD_GUE, FORWARD_TUNNEL};
        let config = config::parse("t", DSR_YAML).unwrap();
        let mut rt = Runtime::new(&config).unwrap().0;
        let web = rt.vip("web").unwrap().service();
        let b = web.backends[0].backend;
        assert_eq!((b.forwarding, b.vip_id as u32, b.tunnel.gue_port), (FORWARD_GUE, web.id, DEFAULT_GUE_PORT));
        assert_eq!((b.tunnel.src, b.tunnel.mtu), ([0; 16], 1400), "no source before the route is known");
        let mut ch = Changes::default();
        let id = web.backends[0].id;
        rt.set_path(id, PathInfo { source: Some("10.1.0.254".parse().unwrap()), mtu: 9000 }, &mut ch);
        let b = rt.vip("web").unwrap().service().backends[0].backend;
        assert_eq!((b.tunnel.src, b.tunnel.src_host_bits, b.tunnel.mtu), (addr_of("10.1.0.254".parse().unwrap()), 0, 1400), "the lower MTU wins");
        rt.set_path(id, PathInfo { source: Some("10.1.0.254".parse().unwrap()), mtu: 1350 }, &mut ch);
        assert_eq!(rt.vip("web").unwrap().service().backends[0].backend.tunnel.mtu, 1350);
        // A prefix is used whatever the route says; an IPv4 VIP over an IPv6 backend.
        let api = rt.vip("api").unwrap().service();
        let b = api.backends[0].backend;
        assert_eq!((b.forwarding, b.family, b.tunnel.src_host_bits), (FORWARD_TUNNEL, FAMILY_V6, 4));
        assert_eq!(b.tunnel.src, addr_of("2001:db8:5::".parse().unwrap()));
        // An agent adopting the maps starts from the path they record.
        let (adopted, _) = Runtime::adopt(&config, &pinned_from(&rt)).unwrap();
        assert_eq!(adopted.vip("web").unwrap().backends[0].path, PathInfo { source: Some("10.1.0.254".parse().unwrap()), mtu: 1350 });
        assert_eq!(adopted.vip("web").unwrap().service(), rt.vip("web").unwrap().service());
    }

    #[test]
    fn a_dsr_vip_may_share_a_backend_endpoint_a_nat_vip_may_not() {
        let mut rt = Runtime::new(&config::parse("t", &DSR_YAML.replace("vip_capacity: 2", "vip_capacity: 6")).unwrap()).unwrap().0;
        let with = |mode: &str| {
            let text = DSR_YAML.replace("forwarding: gue", &format!("forwarding: {mode}")).replace("    tunnel_mtu: 1400\n", "").replace("name: web", "name: web2").replace("10.0.0.1", "10.0.0.3");
            let mut vip = config::parse("t", &text).unwrap().vips[0].clone();
            vip.health_check.target = crate::config::ProbeTarget::Address;
            vip
        };
        let mut ch = Changes::default();
        rt.add_vip(&with("direct"), &mut ch).expect("a second DSR VIP on web's backend endpoint");
        assert_eq!(rt.vip("web2").unwrap().backends[0].endpoint(), rt.vip("web").unwrap().backends[0].endpoint());
        // Among NAT VIPs the rule stands.
        let mut nat = with("nat");
        nat.name = "web3".into();
        nat.address = "10.0.0.4".parse().unwrap();
        rt.add_vip(&nat, &mut ch).expect("web is DSR: its endpoint is no NAT VIP's");
        let mut second = nat.clone();
        second.name = "web4".into();
        second.address = "10.0.0.6".parse().unwrap();
        assert!(matches!(rt.add_vip(&second, &mut ch), Err(OpError::SharedBackend { .. })));
    }

    #[test]
    fn adopting_keeps_a_draining_backend_healthy() {
        let config = config::parse("t", YAML).unwrap();
        let mut rt = runtime();
        let mut ch = Changes::default();
        let draining = rt.vip("web").unwrap().backends[1].clone();
        assert_eq!(draining.admin, AdminState::Draining);
        assert!(rt.set_health(draining.id, draining.generation, Health::Up, &mut ch));
        assert_eq!(rt.vip("web").unwrap().backends[1].effective(), BackendState::Draining);
        let (adopted, _) = Runtime::adopt(&config, &pinned_from(&rt)).unwrap();
        assert_eq!(adopted.vip("web").unwrap().backends[1].health, Health::Up);
    }

    #[test]
    fn adopting_another_configuration_removes_what_went_and_keeps_what_stayed() {
        let rt = full_runtime();
        let mut pinned = pinned_from(&rt);
        // Slot 5 (dns's 10.2.0.2) had been reused four times.
        pinned.backends.iter_mut().filter(|b| b.id == 5).for_each(|b| b.backend.generation = 4);
        let mut config = pools(&["10.1.0.1:80", "10.1.0.9:80"], &[]);
        config.vips.truncate(1);

        let (adopted, changes) = Runtime::adopt(&config, &pinned).unwrap();
        let web = adopted.vip("web").unwrap();
        assert_eq!(web.id, 0);
        assert_eq!((web.backends[0].id, web.backends[0].generation), (1, 1), "10.1.0.1 kept its slot");
        let dns_key = pinned.vips[1].0;
        assert_eq!(changes.removed_vips, vec![(dns_key, 1, vec![3, 4, 5])]);
        assert_eq!(changes.removed_backends, vec![2], "10.1.0.2 went");
        // The new backend takes a slot no kept backend holds, at a generation above the one
        // the maps had, so the old slot's flows are told apart.
        let new = &web.backends[1];
        assert_eq!(endpoints(&adopted, "web"), vec![ep("10.1.0.1:80"), ep("10.1.0.9:80")]);
        assert_eq!((new.id, new.generation), (2, 2));
        assert_eq!(new.health, Health::Down, "a new checked backend starts down");
        let (again, _) = Runtime::adopt(&pools(&["10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"], &["10.2.0.1:53"]), &pinned).unwrap();
        let reused = again.vip("dns").unwrap();
        assert_eq!(reused.backends.len(), 1);
        let slots: Vec<(u32, u32)> = again.vips.iter().flat_map(|v| v.backends.iter().map(|b| (b.id, b.generation))).collect();
        assert_eq!(slots, vec![(1, 1), (2, 1), (4, 2), (3, 1)], "10.1.0.3 is new: the first free slot (4, 10.2.0.2's) at its next generation");
        let (third, _) =
            Runtime::adopt(&pools(&["10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80", "10.1.0.4:80"], &["10.2.0.1:53"]), &pinned).unwrap();
        let fourth = &third.vip("web").unwrap().backends[3];
        assert_eq!((fourth.id, fourth.generation), (5, 5), "slot 5 goes on from its pinned generation 4");
    }

    #[test]
    fn the_last_backend_taking_flows_is_kept_unless_forced() {
        let mut rt = runtime();
        let before = rt.clone();
        let mut ch = Changes::default();
        let last = ep("10.2.0.1:53");
        let refused = Err(OpError::LastBackend { vip: "dns".into(), endpoint: last });
        assert_eq!(rt.remove_backend("dns", last, false, &mut ch).map(|_| ()), refused);
        assert_eq!(rt.set_admin("dns", last, AdminState::Draining, false, &mut ch), refused);
        assert_eq!(rt.set_admin("dns", last, AdminState::Down, false, &mut ch), refused);
        assert_eq!(rt.set_weight("dns", last, 0, false, &mut ch), refused);
        assert_eq!((&rt, &ch), (&before, &Changes::default()), "refusals change nothing");
        // Web's backends take no flows yet (checked, not yet up): nothing more to lose.
        rt.set_admin("web", ep("10.1.0.1:80"), AdminState::Down, false, &mut ch).unwrap();
        // With another backend taking flows, or with --force, it goes.
        rt.add_backend("dns", &BackendConfig { address: ep("10.2.0.2:53").ip(), port: 53, weight: 1, state: AdminState::Up }, &mut ch).unwrap();
        rt.set_weight("dns", last, 0, false, &mut ch).unwrap();
        assert_eq!(rt.remove_backend("dns", ep("10.2.0.2:53"), false, &mut ch).map(|_| ()), Err(OpError::LastBackend { vip: "dns".into(), endpoint: ep("10.2.0.2:53") }));
        rt.remove_backend("dns", ep("10.2.0.2:53"), true, &mut ch).unwrap();
    }

    #[test]
    fn runtime_values_are_checked_as_the_file_is() {
        let mut rt = runtime();
        let mut ch = Changes::default();
        let port0 = BackendConfig { address: ep("10.1.0.9:80").ip(), port: 0, weight: 1, state: AdminState::Up };
        assert_eq!(rt.add_backend("web", &port0, &mut ch), Err(OpError::Invalid("backend 10.1.0.9:0: 0 is not a port: use 1-65535".into())));
        let heavy = BackendConfig { port: 80, weight: 70_000, ..port0 };
        assert_eq!(
            rt.add_backend("web", &heavy, &mut ch),
            Err(OpError::Invalid("backend 10.1.0.9:80: 70000 is above the maximum weight 65535".into()))
        );
        assert_eq!(rt, runtime());
    }
}
