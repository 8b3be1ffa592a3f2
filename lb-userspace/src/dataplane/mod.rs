//! The data path as the agent sees it: the embedded XDP program, loaded with the sizes of the
//! configuration, and typed access to its maps.

mod maps;
mod service;
mod sizing;

pub use maps::Maps;
pub use service::{Service, ServiceBackend};
pub use sizing::{Sizing, SizingError};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, programs::Xdp};
use lb_common::maps::{
    GLOBAL_HASH_SEED, GLOBAL_RING_SIZE, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_CONNS, MAP_RING,
    MAP_VIP_STATS, MAP_VIPS, PROGRAM_NAME,
};

/// The XDP program object, built by `build.rs` from `lb-ebpf`.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp"));

/// A loaded (not yet attached) instance of the data path.
pub struct Dataplane {
    ebpf: Ebpf,
    /// The program's maps.
    pub maps: Maps,
    sizing: Sizing,
}

impl Dataplane {
    /// Loads the program into the kernel with maps sized by `sizing`; the verifier runs here.
    pub fn load(sizing: &Sizing) -> anyhow::Result<Self> {
        sizing.validate()?;
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_RING_SIZE, &sizing.ring_size, true)
            .override_global(GLOBAL_HASH_SEED, &sizing.hash_seed, true)
            .map_max_entries(MAP_VIPS, sizing.vip_capacity)
            .map_max_entries(MAP_VIP_STATS, sizing.vip_capacity)
            .map_max_entries(MAP_RING, sizing.ring_map_entries())
            .map_max_entries(MAP_BACKENDS, sizing.backend_capacity)
            .map_max_entries(MAP_BACKEND_STATS, sizing.backend_capacity)
            .map_max_entries(MAP_CONNS, sizing.conn_capacity)
            .load(PROGRAM)
            .context("loading the XDP object (maps)")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .context("the object has no XDP program")?
            .try_into()?;
        program.load().context("loading the XDP program (verifier)")?;
        let maps = Maps::take(&mut ebpf, sizing)?;
        Ok(Dataplane {
            ebpf,
            maps,
            sizing: sizing.clone(),
        })
    }

    /// The loaded XDP program (to attach it, or to run packets through it).
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Dataplane::load")
    }

    /// The loaded XDP program, mutably (attach and detach need it).
    pub fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Dataplane::load")
    }

    /// The sizes and seed this instance was loaded with.
    pub fn sizing(&self) -> &Sizing {
        &self.sizing
    }
}
