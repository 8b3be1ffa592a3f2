//! A VIP with its backends as the agent wants it in the data path, and how it is written:
//! backends first, then the spare ring, then the VIP entry that flips to it.

use lb_common::{
    maglev::{MaglevBackend, build_round_robin, build_table},
    maps::{Backend, BackendState, VIP_FLAG_ROUND_ROBIN, VipKey, VipMeta},
};

use super::Maps;

/// One backend of a [`Service`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceBackend {
    /// Backend slot id (unique across all services, never 0).
    pub id: u32,
    /// Address, port, state, generation and next hop.
    pub backend: Backend,
    /// Share of new flows relative to the other backends.
    pub weight: u32,
}

/// A VIP and its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Address, port and protocol.
    pub key: VipKey,
    /// VIP id (below the VIP capacity).
    pub id: u32,
    /// `VIP_FLAG_*` bits.
    pub flags: u32,
    /// Idle timeout of UDP flows, in seconds.
    pub udp_idle_secs: u16,
    /// The pool.
    pub backends: Vec<ServiceBackend>,
}

impl Service {
    /// The ring for the backends that take new flows (up, weight above zero): a Maglev table,
    /// or for round-robin VIPs a smooth weighted round-robin sequence.
    pub fn ring(&self, ring_size: u32, seed: u32) -> Vec<u32> {
        let live = self.maglev_backends();
        if self.flags & VIP_FLAG_ROUND_ROBIN != 0 {
            build_round_robin(&live, ring_size)
        } else {
            build_table(&live, ring_size, seed)
        }
    }

    fn maglev_backends(&self) -> Vec<MaglevBackend> {
        self.backends
            .iter()
            .filter(|b| b.backend.state == BackendState::Up as u8)
            .map(|b| MaglevBackend {
                id: b.id,
                addr: b.backend.addr,
                port: b.backend.port,
                weight: b.weight,
            })
            .collect()
    }

    /// The backend with slot `id`, mutably.
    pub fn backend_mut(&mut self, id: u32) -> Option<&mut ServiceBackend> {
        self.backends.iter_mut().find(|b| b.id == id)
    }
}

impl Maps {
    /// Makes the data path serve `svc`: backend slots (so a backend that went down is seen as
    /// down by its flows at once), then the new ring in the spare half, then the VIP entry.
    pub fn apply_service(&mut self, svc: &Service) -> anyhow::Result<VipMeta> {
        for b in &svc.backends {
            // A direct server return backend answers clients itself: its packets are never
            // translated.
            if lb_common::encap::is_dsr(b.backend.forwarding) {
                self.forget_replies(b.id)?;
            } else {
                self.set_replies(b.id, &b.backend, &svc.key, svc.id)?;
            }
            // The VIP id is what the data path checks before it follows a retained ring's slot.
            self.set_backend(b.id, &Backend { vip_id: svc.id as u16, ..b.backend })?;
        }
        let ring = svc.ring(self.ring_size(), self.hash_seed());
        let meta = VipMeta {
            id: svc.id,
            flags: svc.flags,
            ring_half: 0,
            backend_count: svc.maglev_backends().iter().filter(|b| b.weight > 0).count() as u32,
            udp_idle_secs: svc.udp_idle_secs,
            ..VipMeta::default()
        };
        self.publish_ring(&svc.key, meta, &ring)
    }
}
