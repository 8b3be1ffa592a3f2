//! What a pinned data path serves, read from its maps without an agent (`lb check` while the
//! agent restarts or does not answer): the agent's heartbeat, whether a pinned link runs a
//! program on each interface, and for each VIP how many backends of its live ring take new
//! flows ([`lb_common::serving`], the rule the agent decides by).

use std::collections::HashMap;

use anyhow::{Context as _, anyhow};
use aya::{
    maps::{Array, Map, MapData, MapInfo},
    programs::links::{FdLink, PinnedLink},
};
use lb_common::{
    limits::ring_index,
    maglev::NO_BACKEND,
    maps::{Backend, BackendState, LAYOUT_VERSION, MAP_BACKENDS, MAP_RING, MAP_VIPS, META_HEARTBEAT, META_LAYOUT, META_RING_SIZE, VipKey, VipMeta},
    serving::{Heartbeat, backends_taking_new_flows},
};

use super::{Pins, ring_memory::RingMemory};

/// A pinned data path as `lb check` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedServing {
    /// The agent's last heartbeat.
    pub heartbeat: Heartbeat,
    /// Why the program may not run on an interface, for each interface it may not run on.
    pub unattached: Vec<String>,
    /// For each VIP asked about, in order: the backends of its live ring that take new flows,
    /// or `None` when the maps hold no such VIP.
    pub vips: Vec<Option<u32>>,
}

/// Reads what the data path pinned in `pins` serves: attachment on each of `interfaces`, and
/// each VIP of `vips`. `now_ms` is [`super::heartbeat::now_ms`]. An error means that there is
/// no data path to read (nothing pinned, a map missing, a layout this build cannot read).
pub fn read(pins: &Pins, interfaces: &[String], vips: &[VipKey], now_ms: u64) -> anyhow::Result<PinnedServing> {
    let dir = pins.dir().display();
    anyhow::ensure!(!pins.is_empty(), "no data path is pinned at {dir}");
    let meta = pins.meta()?;
    let layout = meta[META_LAYOUT as usize];
    anyhow::ensure!(layout == LAYOUT_VERSION, "the data path pinned at {dir} has map layout {layout}; this lb reads layout {LAYOUT_VERSION}");
    let ring_size = u32::try_from(meta[META_RING_SIZE as usize]).context("META's ring size")?;
    let unattached = interfaces.iter().filter_map(|iface| attachment(pins, iface).err()).collect();
    let open = |name: &str| MapData::from_pin(pins.map(name)).with_context(|| format!("opening {}", pins.map(name).display()));
    let vip_map: aya::maps::HashMap<MapData, VipKey, VipMeta> = aya::maps::HashMap::try_from(Map::HashMap(open(MAP_VIPS)?))?;
    let backends: Array<MapData, Backend> = Array::try_from(Map::Array(open(MAP_BACKENDS)?))?;
    let ring_entries = MapInfo::from_pin(pins.map(MAP_RING))?.max_entries();
    let ring = RingMemory::read_only(open(MAP_RING)?, ring_entries).context("mapping the pinned RING map")?;
    let mut out = Vec::with_capacity(vips.len());
    for key in vips {
        let meta = match vip_map.get(key, 0) {
            Ok(meta) => meta,
            Err(aya::maps::MapError::KeyNotFound) => {
                out.push(None);
                continue;
            }
            Err(e) => return Err(e).context("reading VIPS"),
        };
        // Each backend of the live ring, with its slots there as its weight.
        let mut slots: HashMap<u32, u32> = HashMap::new();
        for slot in 0..ring_size {
            let index = ring_index(meta.id, meta.ring_half, ring_size, slot);
            let id = ring.get(index).ok_or_else(|| anyhow!("ring slot {slot} of VIP {} is beyond the pinned RING map", meta.id))?;
            if id != NO_BACKEND {
                *slots.entry(id).or_default() += 1;
            }
        }
        let mut pool = Vec::with_capacity(slots.len());
        for (id, weight) in slots {
            let backend = backends.get(&id, 0).with_context(|| format!("reading backend slot {id}"))?;
            pool.push((BackendState::from_u8(backend.state), weight));
        }
        out.push(Some(backends_taking_new_flows(pool)));
    }
    Ok(PinnedServing { heartbeat: Heartbeat::at(meta[META_HEARTBEAT as usize], now_ms), unattached, vips: out })
}

/// Whether a pinned link on `iface` runs a program (else why not).
fn attachment(pins: &Pins, iface: &str) -> Result<(), String> {
    let link = PinnedLink::from_pin(pins.link(iface)).map_err(|_| format!("no pinned link on {iface}"))?;
    let info = FdLink::from(link).info().map_err(|e| format!("the link of {iface}: {e}"))?;
    if info.program_id() == 0 { Err(format!("the link of {iface} runs no program")) } else { Ok(()) }
}
