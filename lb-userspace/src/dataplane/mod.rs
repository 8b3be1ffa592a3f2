//! The data path as the agent sees it: the embedded XDP program, loaded with the sizes of the
//! configuration, and typed access to its maps.

mod maps;
mod ring_memory;
mod service;

pub use maps::Maps;
pub use service::{Service, ServiceBackend};
pub use lb_common::sizing::{Sizing, SizingError};

use crate::config::XdpMode;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode as AyaXdpMode},
};
use lb_common::maps::{
    GLOBAL_HASH_SEED, GLOBAL_RING_SIZE, MAP_ACTIVE_CONNS, MAP_BACKEND_STATS, MAP_BACKENDS,
    MAP_CONNS, MAP_HALF_OPEN, MAP_REPLIES, MAP_RING, MAP_RR_CURSORS, MAP_VIP_ADDRS, MAP_VIP_LIVE,
    MAP_VIP_STATS, MAP_VIPS, PROGRAM_NAME,
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
        Self::load_with(sizing, None)
    }

    /// As [`Dataplane::load`], with the program's debug logs (rare events only: no backend,
    /// rescheduled flows, failed connection-table inserts) sent to `logger` whenever
    /// [`EbpfLogs::flush`] is called.
    pub fn load_with_debug_logs(sizing: &Sizing, logger: &'static dyn log::Log) -> anyhow::Result<Self> {
        Self::load_with(sizing, Some(logger))
    }

    fn load_with(sizing: &Sizing, logger: Option<&'static dyn log::Log>) -> anyhow::Result<Self> {
        sizing.validate()?;
        let log_level = if logger.is_some() { aya_log::Level::Debug as u8 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &log_level, true)
            .override_global(GLOBAL_RING_SIZE, &sizing.ring_size, true)
            .override_global(GLOBAL_HASH_SEED, &sizing.hash_seed, true)
            .map_max_entries(MAP_VIPS, sizing.vip_capacity)
            .map_max_entries(MAP_VIP_STATS, sizing.vip_capacity)
            .map_max_entries(MAP_VIP_LIVE, sizing.vip_capacity)
            .map_max_entries(MAP_RING, sizing.ring_map_entries())
            .map_max_entries(MAP_BACKENDS, sizing.backend_capacity)
            .map_max_entries(MAP_BACKEND_STATS, sizing.backend_capacity)
            .map_max_entries(MAP_CONNS, sizing.conn_capacity)
            .map_max_entries(MAP_HALF_OPEN, sizing.half_open_capacity)
            .map_max_entries(MAP_REPLIES, sizing.backend_capacity)
            .map_max_entries(MAP_VIP_ADDRS, sizing.vip_capacity)
            .map_max_entries(MAP_RR_CURSORS, sizing.vip_capacity)
            .map_max_entries(MAP_ACTIVE_CONNS, sizing.backend_capacity)
            .load(PROGRAM)
            .context("loading the XDP object (maps)")?;
        // The logger holds the log ring buffer's fd: it must live while the program loads.
        let logs = match logger {
            Some(l) => Some(EbpfLogs(aya_log::EbpfLogger::init_with_logger(&mut ebpf, l).context("opening the program's log buffer")?)),
            None => None,
        };
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
            logs,
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
    /// mode (with a warning) when the driver has no XDP support. Returns the mode used. The
    /// program stays attached as long as this `Dataplane` lives.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> anyhow::Result<XdpMode> {
        let program = self.program_mut();
        match mode {
            XdpMode::Driver | XdpMode::Generic => {
                let xdp_mode = if mode == XdpMode::Driver { AyaXdpMode::Driver } else { AyaXdpMode::Skb };
                program
                    .attach(interface, xdp_mode)
                    .with_context(|| format!("attaching XDP to {interface} in {mode} mode"))?;
                Ok(mode)
            }
            XdpMode::Auto => match program.attach(interface, AyaXdpMode::Driver) {
                Ok(_) => Ok(XdpMode::Driver),
                Err(driver_err) => {
                    tracing::warn!(
                        interface,
                        error = %driver_err,
                        "driver-mode XDP failed, using generic mode (slower)"
                    );
                    program
                        .attach(interface, AyaXdpMode::Skb)
                        .with_context(|| format!("attaching XDP to {interface} in generic mode"))?;
                    Ok(XdpMode::Generic)
                }
            },
        }
    }

    /// The program's debug log buffer, if loaded with debug logs (to be polled by the caller).
    pub fn take_debug_logs(&mut self) -> Option<EbpfLogs> {
        self.logs.take()
    }

    /// The sizes and seed this instance was loaded with.
    pub fn sizing(&self) -> &Sizing {
        &self.sizing
    }
}
