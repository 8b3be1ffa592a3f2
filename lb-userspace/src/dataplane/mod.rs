//! The data path as the agent sees it: the embedded XDP program, loaded with the sizes of the
//! configuration, and typed access to its maps.

pub mod heartbeat;
pub mod link_xdp;
mod maps;
pub mod pinned_serving;
pub mod pins;
pub mod ring_history;
mod ring_memory;
mod service;
pub mod table_walk;
mod vip_index;

pub use maps::{Maps, PinnedBackend, PinnedState};
pub use pins::{Found, MapShape, Pins};
pub use service::{Service, ServiceBackend};
pub use lb_common::sizing::{Sizing, SizingError};

use crate::config::XdpMode;

use std::collections::HashMap;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lb_common::maps::{
    GLOBAL_FLOW_SYNC, GLOBAL_HASH_SEED, GLOBAL_RING_SIZE, LAYOUT_VERSION, MAP_FLOW_SYNC, MAP_ACTIVE_CONNS, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_CONNS,
    MAP_HALF_OPEN, MAP_REPLIES, MAP_TX_PORTS, MAP_RING, MAP_RR_CURSORS, MAP_VIP_ADDRS, MAP_MOVED, MAP_VIP_ENTRIES, MAP_VIP_STATS, MAP_VIPS,
    META_HASH_SEED, META_LAYOUT, META_PROGRAM_HASH, META_PROGRAM_LOADED_AT, META_RING_SIZE, PINNED_MAPS, PROGRAM_NAME, DROP_COUNTERS,
};

/// The XDP program object, built by `build.rs` from `lb-ebpf`.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp"));
/// The benchmarks' floor programs, bare forwarder, generator and receiver (`lb-ebpf/src/bin/floors.rs`).
pub static FLOORS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-floors"));

/// A loaded instance of the data path.
pub struct Dataplane {
    ebpf: Ebpf,
    /// The program's maps.
    pub maps: Maps,
    sizing: Sizing,
    logs: Option<EbpfLogs>,
    adopted: bool,
    /// Pinned links this instance took over with [`Dataplane::attach_pinned`] (it holds a
    /// descriptor of each).
    replaced: Vec<XdpLinkId>,
    /// What flow sync reads and writes, when loaded with it, until taken.
    flow_sync: Option<crate::flow_sync::Source>,
}

/// How [`Dataplane::attach_pinned`] attached the program to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, pinned, in this mode.
    New(XdpMode),
    /// The program replaced the one running on the interface's pinned link (atomically: every
    /// packet met the old program or the new one).
    Replaced,
}

/// The maps whose entries are set at load time, with their sizes at `sizing`.
fn sized_maps(sizing: &Sizing) -> [(&'static str, u32); 13] {
    [
        (MAP_VIPS, sizing.vip_capacity),
        (MAP_VIP_ENTRIES, lb_common::limits::vip_entries(sizing.vip_capacity)),
        (MAP_VIP_STATS, sizing.vip_capacity),
        (MAP_MOVED, sizing.moved_map_entries()),
        (MAP_RING, sizing.ring_map_entries()),
        (MAP_BACKENDS, sizing.backend_capacity),
        (MAP_BACKEND_STATS, sizing.backend_capacity),
        (MAP_CONNS, sizing.conn_capacity),
        (MAP_HALF_OPEN, sizing.half_open_capacity),
        (MAP_REPLIES, sizing.backend_capacity),
        (MAP_VIP_ADDRS, sizing.vip_capacity),
        (MAP_RR_CURSORS, sizing.vip_capacity),
        (MAP_ACTIVE_CONNS, sizing.backend_capacity),
    ]
}

/// `BPF_F_RDONLY_PROG` (linux/bpf.h).
const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// The shape of every pinned map of the program object `object` loaded at `sizing`.
pub fn map_shapes(sizing: &Sizing, object: &[u8]) -> anyhow::Result<HashMap<&'static str, MapShape>> {
    let object = aya_obj::Object::parse(object).map_err(|e| anyhow!("parsing the XDP object: {e}"))?;
    let sized = sized_maps(sizing);
    PINNED_MAPS
        .iter()
        .map(|&name| {
            let map = object.maps.get(name).ok_or_else(|| anyhow!("the XDP object has no map {name}"))?;
            let max_entries = sized.iter().find(|(n, _)| *n == name).map_or(map.max_entries(), |(_, n)| *n);
            // The kernel makes every device map read-only to programs (dev_map_init_map), so
            // the pinned map reports a flag its definition does not have.
            let kernel_flags = if name == MAP_TX_PORTS { BPF_F_RDONLY_PROG } else { 0 };
            Ok((name, MapShape { key_size: map.key_size(), value_size: map.value_size(), max_entries, flags: map.map_flags() | kernel_flags }))
        })
        .collect()
}

/// The XDP mode of the program attached to `interface`, as the kernel reports it (rtnetlink).
pub fn attached_mode(interface: &str) -> Option<XdpMode> {
    link_xdp::query(interface).ok()?.attached
}

/// Whether `error`'s cause is the system error `errno`.
pub(crate) fn caused_by_errno(error: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    std::iter::successors(Some(error), |e| e.source())
        .any(|e| e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(errno))
}

/// Times a program load is tried while the kernel answers EAGAIN.
const LOAD_ATTEMPTS: u32 = 5;

/// Runs `load` again while the kernel answers EAGAIN: the verifier gives up with EAGAIN when a
/// signal is pending for the loading thread, and the load succeeds when tried again (libbpf
/// retries the same way).
pub(crate) fn load_retrying(mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>) -> Result<(), aya::programs::ProgramError> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(e) if attempt < LOAD_ATTEMPTS && caused_by_errno(&e, libc::EAGAIN) => attempt += 1,
            other => return other,
        }
    }
}

/// Flow sync's ring buffer, taken from `ebpf`, and descriptors of the maps it writes.
fn sync_source(ebpf: &mut Ebpf) -> anyhow::Result<crate::flow_sync::Source> {
    let fd = |name: &str| -> anyhow::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd as _;
        let data = match ebpf.map(name) {
            Some(aya::maps::Map::HashMap(d) | aya::maps::Map::LruHashMap(d) | aya::maps::Map::Array(d)) => d,
            _ => return Err(anyhow!("the XDP object has no map {name} of the expected kind")),
        };
        Ok(data.fd().as_fd().try_clone_to_owned()?)
    };
    let maps = crate::flow_sync::LocalMaps::from_fds(fd(MAP_VIPS)?, fd(MAP_BACKENDS)?, fd(MAP_CONNS)?)?;
    let ring = ebpf.take_map(MAP_FLOW_SYNC).ok_or_else(|| anyhow!("the XDP object has no map {MAP_FLOW_SYNC}"))?;
    Ok(crate::flow_sync::Source { ring: aya::maps::RingBuf::try_from(ring)?, maps })
}

/// A short fingerprint of a program object (FNV-1a), shown by `lb status`.
pub fn program_hash(object: &[u8]) -> u64 {
    object.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The program's debug log buffer (see [`Dataplane::load_with_debug_logs`]).
pub struct EbpfLogs(aya_log::EbpfLogger<&'static dyn log::Log>);

impl EbpfLogs {
    /// Sends every pending record to the logger.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

impl std::os::fd::AsRawFd for EbpfLogs {
    /// The log ring buffer's fd: open, and the same, for the whole life of this value.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl Dataplane {
    /// Loads the program into the kernel with maps sized by `sizing`; the verifier runs here.
    /// The program's debug logs are off.
    pub fn load(sizing: &Sizing) -> anyhow::Result<Self> {
        Self::load_with(sizing, None, None, PROGRAM, false)
    }

    /// As [`Dataplane::load`], with flow sync on: the program writes the connections that
    /// start in moved ring slots to `FLOW_SYNC` ([`Dataplane::take_flow_sync`]).
    pub fn load_syncing(sizing: &Sizing) -> anyhow::Result<Self> {
        Self::load_with(sizing, None, None, PROGRAM, true)
    }

    /// Loads the program object `object` (normally [`PROGRAM`]) with its maps pinned in `pins`: the maps already pinned there are
    /// adopted (after [`Pins::inspect`] found them to match; a mismatch is refused and nothing
    /// is changed), the others are created and pinned. Returns whether the maps were adopted.
    /// `META` then records this program; the layout version is written last, so a first start
    /// that stops midway leaves maps that the next agent refuses rather than trusts.
    pub fn open(sizing: &Sizing, pins: &Pins, logger: Option<&'static dyn log::Log>, object: &[u8]) -> anyhow::Result<(Self, bool)> {
        Self::open_with_sync(sizing, pins, logger, object, false)
    }

    /// As [`Dataplane::open`], with flow sync on when `flow_sync` (see
    /// [`Dataplane::load_syncing`]).
    pub fn open_with_sync(
        sizing: &Sizing,
        pins: &Pins,
        logger: Option<&'static dyn log::Log>,
        object: &[u8],
        flow_sync: bool,
    ) -> anyhow::Result<(Self, bool)> {
        sizing.validate()?;
        let adopted = pins.inspect(&map_shapes(sizing, object)?, sizing)? == Found::Adoptable;
        pins.create()?;
        let mut dp = Self::load_with(sizing, logger, Some(pins), object, flow_sync)?;
        if adopted {
            dp.maps.read_back().context("reading the pinned maps back")?;
            dp.adopted = true;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for (index, value) in [
            (META_RING_SIZE, u64::from(sizing.ring_size)),
            (META_HASH_SEED, u64::from(sizing.hash_seed)),
            (META_PROGRAM_HASH, program_hash(object)),
            (META_PROGRAM_LOADED_AT, now),
            (META_LAYOUT, LAYOUT_VERSION),
        ] {
            dp.maps.set_meta(index, value)?;
        }
        Ok((dp, adopted))
    }

    /// As [`Dataplane::load`], with the program's debug logs (rare events only: no backend,
    /// rescheduled flows, failed connection-table inserts) sent to `logger` whenever
    /// [`EbpfLogs::flush`] is called.
    pub fn load_with_debug_logs(sizing: &Sizing, logger: &'static dyn log::Log) -> anyhow::Result<Self> {
        Self::load_with(sizing, Some(logger), None, PROGRAM, false)
    }

    fn load_with(
        sizing: &Sizing,
        logger: Option<&'static dyn log::Log>,
        pins: Option<&Pins>,
        object: &[u8],
        flow_sync: bool,
    ) -> anyhow::Result<Self> {
        sizing.validate()?;
        let log_level = if logger.is_some() { aya_log::Level::Debug as u8 } else { 0 };
        let flow_sync_flag = u32::from(flow_sync);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(aya_log::LEVEL, &log_level, true)
            .override_global(GLOBAL_RING_SIZE, &sizing.ring_size, true)
            .override_global(GLOBAL_HASH_SEED, &sizing.hash_seed, true)
            .override_global(GLOBAL_FLOW_SYNC, &flow_sync_flag, true);
        for (name, entries) in sized_maps(sizing) {
            loader.map_max_entries(name, entries);
        }
        if let Some(pins) = pins {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader.load(object).context("loading the XDP object (maps)")?;
        // The logger holds the log ring buffer's fd: it must live while the program loads.
        let logs = match logger {
            Some(l) => Some(EbpfLogs(aya_log::EbpfLogger::init_with_logger(&mut ebpf, l).context("opening the program's log buffer")?)),
            None => None,
        };
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .context("the object has no XDP program")?
            .try_into()?;
        load_retrying(|| program.load()).context("loading the XDP program (verifier)")?;
        for (name, _) in DROP_COUNTERS {
            let counter: &mut aya::programs::TracePoint =
                ebpf.program_mut(name).with_context(|| format!("the object has no program {name}"))?.try_into()?;
            load_retrying(|| counter.load()).with_context(|| format!("loading {name} (verifier)"))?;
        }
        let flow_sync = if flow_sync { Some(sync_source(&mut ebpf)?) } else { None };
        let maps = Maps::take(&mut ebpf, sizing)?;
        Ok(Dataplane {
            ebpf,
            maps,
            sizing: sizing.clone(),
            logs,
            adopted: false,
            replaced: Vec::new(),
            flow_sync,
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

    /// Attaches the program to `interface`. `Auto` tries driver mode and falls back to generic
    /// mode when the driver refuses, logging the mode it chose and why. A refusal names the
    /// interface, its MTU and the limit a driver without multi-buffer XDP holds the program to
    /// ([`link_xdp::Refusal`]). Returns the mode used. The program stays attached as long as
    /// this `Dataplane` lives.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> anyhow::Result<XdpMode> {
        self.attach_link(interface, mode).map(|(_, used)| used)
    }

    fn attach_link(&mut self, interface: &str, mode: XdpMode) -> anyhow::Result<(XdpLinkId, XdpMode)> {
        let try_mode = |program: &mut Xdp, mode: XdpMode| {
            let aya_mode = if mode == XdpMode::Driver { AyaXdpMode::Driver } else { AyaXdpMode::Skb };
            program.attach(interface, aya_mode).map_err(|e| {
                let refusal = link_xdp::Refusal::new(interface, mode, link_xdp::query(interface).ok());
                anyhow::Error::new(e).context(refusal.to_string())
            })
        };
        let program = self.program_mut();
        match mode {
            XdpMode::Driver | XdpMode::Generic => Ok((try_mode(program, mode)?, mode)),
            XdpMode::Auto => match try_mode(program, XdpMode::Driver) {
                Ok(id) => {
                    let mtu = link_xdp::query(interface).ok().and_then(|s| s.mtu).map_or_else(|| "unknown".to_owned(), |m| m.to_string());
                    tracing::info!(interface = %interface, %mtu, "auto: XDP in driver mode (the driver took the program at this MTU)");
                    Ok((id, XdpMode::Driver))
                }
                Err(refused) => {
                    tracing::warn!(
                        interface = %interface,
                        error = format!("{refused:#}"),
                        "auto: the driver refused XDP in driver mode; using generic mode (slower: every packet becomes a socket buffer first)"
                    );
                    Ok((try_mode(program, XdpMode::Generic)?, XdpMode::Generic))
                }
            },
        }
    }

    /// Attaches the program to `interface` through a link pinned in `pins`, so that it stays
    /// attached when the agent exits. When a link is pinned there already, the program replaces
    /// the one running on it (`bpf_link_update`, keeping the link's mode); a pinned link whose
    /// interface is gone is removed and a new one made.
    pub fn attach_pinned(&mut self, interface: &str, mode: XdpMode, pins: &Pins) -> anyhow::Result<Attached> {
        let path = pins.link(interface);
        if let Ok(pinned) = PinnedLink::from_pin(&path) {
            let link = XdpLink::try_from(FdLink::from(pinned)).context("the pinned link is not an XDP link")?;
            match self.program_mut().attach_to_link(link) {
                Ok(id) => {
                    self.replaced.push(id);
                    return Ok(Attached::Replaced);
                }
                // The kernel answers ENOLINK for a link whose interface is gone.
                Err(e) if caused_by_errno(&e, libc::ENOLINK) => {
                    tracing::warn!(interface = %interface, error = %e, "the pinned link is defunct (its interface was removed); attaching anew");
                    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                }
                // Anything else (a driver refusing the program at the interface's MTU): the
                // running program stays, and so does its link.
                Err(e) => {
                    let state = link_xdp::query(interface).ok();
                    let mode = state.and_then(|s| s.attached).unwrap_or(mode);
                    let refusal = link_xdp::Refusal::new(interface, mode, state);
                    return Err(anyhow::Error::new(e)
                        .context(refusal.to_string())
                        .context(format!("replacing the program on the pinned link of {interface} (the running one stays)")));
                }
            }
        }
        let (id, used) = self.attach_link(interface, mode)?;
        let link = self.program_mut().take_link(id)?;
        let fd = FdLink::try_from(link).context("XDP was attached without a bpf_link (kernel older than 5.9?)")?;
        // The pin keeps the link; this descriptor may close.
        drop(fd.pin(&path).with_context(|| format!("pinning the XDP link at {}", path.display()))?);
        Ok(Attached::New(used))
    }

    /// Starts counting the frames the kernel drops after a redirect to one of the program's
    /// interfaces (`REDIRECT_DROPS`), from the `xdp` tracepoints, for as long as this instance
    /// lives.
    pub fn count_redirect_drops(&mut self) -> anyhow::Result<()> {
        for (name, event) in DROP_COUNTERS {
            let counter: &mut aya::programs::TracePoint =
                self.ebpf.program_mut(name).with_context(|| format!("the object has no program {name}"))?.try_into()?;
            counter.attach("xdp", event).with_context(|| format!("attaching {name} to the xdp:{event} tracepoint (is tracefs mounted?)"))?;
        }
        Ok(())
    }

    /// Closes this instance's descriptors of the links it took over. After their pins are
    /// removed ([`Pins::remove`]) this detaches the program at once, rather than when the
    /// process exits.
    pub fn release_links(&mut self) {
        for id in std::mem::take(&mut self.replaced) {
            let _ = self.program_mut().detach(id);
        }
    }

    /// The kernel's id and tag of the loaded program.
    pub fn program_info(&self) -> anyhow::Result<(u32, u64)> {
        let info = self.program().info()?;
        Ok((info.id(), info.tag()))
    }

    /// The program's debug log buffer, if loaded with debug logs (to be polled by the caller).
    pub fn take_debug_logs(&mut self) -> Option<EbpfLogs> {
        self.logs.take()
    }

    /// The ring buffer and maps flow sync uses, if loaded with flow sync (once).
    pub fn take_flow_sync(&mut self) -> Option<crate::flow_sync::Source> {
        self.flow_sync.take()
    }

    /// Whether [`Dataplane::open`] adopted pinned maps.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The sizes and seed this instance was loaded with.
    pub fn sizing(&self) -> &Sizing {
        &self.sizing
    }
}
