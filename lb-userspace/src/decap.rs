//! The backend's decapsulation program (`lb-ebpf/src/bin/decap.rs`, formats in
//! `lb_common::encap`): loading it, attaching it to an interface and pinning it under
//! `/sys/fs/bpf/lb-decap/<interface>/` so that it outlives the process, reading its counters,
//! and removing it again.
//!
//! The API `lb backend-setup` calls: [`attach`], [`detach`], [`status`]. In the pin
//! directory: `link` (the XDP link: the program stays attached while it is pinned) and the
//! maps `DECAP_ADDRS`, `DECAP_VIPS` and `DECAP_STATS`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData, PerCpuArray},
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{
    encap::{DECAP_PROGRAM_NAME, DecapAddr, DecapReason, GLOBAL_DECAP_GUE_PORT, MAP_DECAP_ADDRS, MAP_DECAP_STATS, MAP_DECAP_VIPS},
    limits::{DECAP_ADDR_CAPACITY, DECAP_VIP_CAPACITY},
};

use crate::{
    config::XdpMode,
    dataplane::{caused_by_errno, link_xdp, load_retrying},
};

/// The decapsulation program object, built by `build.rs` from `lb-ebpf`'s `lb-decap` binary.
pub static DECAP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-decap"));

/// Where attached decapsulation programs are pinned, one directory per interface.
pub const DECAP_PIN_ROOT: &str = "/sys/fs/bpf/lb-decap";
/// The pinned XDP link in an interface's directory.
const LINK_PIN: &str = "link";
/// The maps pinned next to the link.
const PINNED_MAPS: [&str; 3] = [MAP_DECAP_ADDRS, MAP_DECAP_VIPS, MAP_DECAP_STATS];

/// The pin directory of the program attached to `interface`.
pub fn pin_dir(interface: &str) -> PathBuf {
    Path::new(DECAP_PIN_ROOT).join(interface)
}

/// The decapsulation program's counters, summed over the CPUs: one per [`DecapReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapCounters {
    counts: [u64; DecapReason::ALL.len()],
}

impl DecapCounters {
    /// Frames counted under `reason`.
    pub fn get(&self, reason: DecapReason) -> u64 {
        self.counts[reason as usize]
    }

    /// Every counter with its name, in slot order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DecapReason::ALL.iter().map(|r| (r.name(), self.get(*r)))
    }

    /// The counters in the per-CPU array `map`.
    fn read(map: &PerCpuArray<&MapData, u64>) -> anyhow::Result<DecapCounters> {
        let mut counters = DecapCounters::default();
        for reason in DecapReason::ALL {
            let per_cpu = map.get(&(reason as u32), 0).with_context(|| format!("reading counter {}", reason.name()))?;
            counters.counts[reason as usize] = per_cpu.iter().sum();
        }
        Ok(counters)
    }
}

/// The decapsulation program, loaded (verified) with its maps filled, not attached.
pub struct DecapProgram {
    ebpf: Ebpf,
}

impl DecapProgram {
    /// Loads the program for GUE port `gue_port`, decapsulating packets to `addrs` (the
    /// backend's tunnel endpoints) whose inner destination is one of `vips`.
    pub fn load(addrs: &[IpAddr], vips: &[IpAddr], gue_port: u16) -> anyhow::Result<DecapProgram> {
        if addrs.is_empty() {
            bail!("no tunnel endpoint address: the program would decapsulate nothing");
        }
        if vips.is_empty() {
            bail!("no VIP: the program would decapsulate nothing");
        }
        if gue_port == 0 {
            bail!("GUE port 0 is no UDP port");
        }
        check_capacity("tunnel endpoint addresses", addrs.len(), DECAP_ADDR_CAPACITY)?;
        check_capacity("VIPs", vips.len(), DECAP_VIP_CAPACITY)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_DECAP_GUE_PORT, &gue_port, true)
            .load(DECAP)
            .context("loading the decapsulation object (maps)")?;
        for (name, list) in [(MAP_DECAP_ADDRS, addrs), (MAP_DECAP_VIPS, vips)] {
            let mut map: HashMap<&mut MapData, DecapAddr, u8> =
                HashMap::try_from(ebpf.map_mut(name).with_context(|| format!("the object has no map {name}"))?)?;
            for ip in list {
                map.insert(DecapAddr::from(*ip), 1, 0).with_context(|| format!("adding {ip} to {name}"))?;
            }
        }
        let program: &mut Xdp = ebpf.program_mut(DECAP_PROGRAM_NAME).context("the object has no decapsulation program")?.try_into()?;
        load_retrying(|| program.load()).context("loading the decapsulation program (verifier)")?;
        Ok(DecapProgram { ebpf })
    }

    /// The loaded program (to attach it, or to run frames through it).
    pub fn program(&self) -> &Xdp {
        self.ebpf.program(DECAP_PROGRAM_NAME).and_then(|p| p.try_into().ok()).expect("loaded in DecapProgram::load")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf.program_mut(DECAP_PROGRAM_NAME).and_then(|p| p.try_into().ok()).expect("loaded in DecapProgram::load")
    }

    /// The program's counters.
    pub fn counters(&self) -> anyhow::Result<DecapCounters> {
        let map = self.ebpf.map(MAP_DECAP_STATS).with_context(|| format!("the object has no map {MAP_DECAP_STATS}"))?;
        DecapCounters::read(&PerCpuArray::try_from(map)?)
    }

    /// Pins the maps in `dir`, replacing pins left there by an earlier program.
    fn pin_maps(&self, dir: &Path) -> anyhow::Result<()> {
        for name in PINNED_MAPS {
            let path = dir.join(name);
            remove_if_present(&path)?;
            let map = self.ebpf.map(name).with_context(|| format!("the object has no map {name}"))?;
            map.pin(&path).with_context(|| format!("pinning {name} at {}", path.display()))?;
        }
        Ok(())
    }
}

/// How [`attach`] attached the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapAttached {
    /// A new link in this mode (driver, or generic where the driver refused).
    New(XdpMode),
    /// The program replaced the one on the interface's pinned link, atomically (every frame
    /// met the old program or the new one); the counters start again from zero.
    Replaced,
}

/// Loads the decapsulation program for `addrs`, `vips` and GUE port `gue_port` (see
/// [`DecapProgram::load`]) and attaches it to `interface` in the calling thread's network
/// namespace, in driver mode or, where the driver refuses, generic mode; pins its link and
/// maps under [`pin_dir`]`(interface)`. Attaching again replaces the program (new addresses,
/// VIPs or port) without a gap.
pub fn attach(interface: &str, addrs: &[IpAddr], vips: &[IpAddr], gue_port: u16) -> anyhow::Result<DecapAttached> {
    let mut decap = DecapProgram::load(addrs, vips, gue_port)?;
    let name = std::ffi::CString::new(interface).with_context(|| format!("interface name {interface:?}"))?;
    // SAFETY: a valid NUL-terminated name.
    if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
        bail!("no interface {interface} in this network namespace");
    }
    let dir = pin_dir(interface);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating {} (is the BPF filesystem mounted at /sys/fs/bpf?)", dir.display()))?;
    let link_path = dir.join(LINK_PIN);
    if let Ok(pinned) = PinnedLink::from_pin(&link_path) {
        let link = XdpLink::try_from(FdLink::from(pinned)).context("the pinned link is not an XDP link")?;
        match decap.program_mut().attach_to_link(link) {
            Ok(_) => {
                decap.pin_maps(&dir)?;
                return Ok(DecapAttached::Replaced);
            }
            // The kernel answers ENOLINK for a link whose interface is gone.
            Err(e) if caused_by_errno(&e, libc::ENOLINK) => remove_if_present(&link_path)?,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("replacing the decapsulation program on {interface} (the running one stays)"))),
        }
    }
    let attached = attach_new(&mut decap, interface, &dir, &link_path);
    if attached.is_err() {
        // Nothing was attached: no pins stay behind.
        let _ = detach(interface);
    }
    attached.map(DecapAttached::New)
}

/// Attaches `decap` to `interface` on a new link (driver mode, else generic) pinned at
/// `link_path`, its maps pinned in `dir`; the mode used.
fn attach_new(decap: &mut DecapProgram, interface: &str, dir: &Path, link_path: &Path) -> anyhow::Result<XdpMode> {
    let program = decap.program_mut();
    let (id, mode) = match program.attach(interface, aya::programs::XdpMode::Driver) {
        Ok(id) => (id, XdpMode::Driver),
        Err(driver) => match program.attach(interface, aya::programs::XdpMode::Skb) {
            Ok(id) => {
                tracing::warn!(interface = %interface, error = %driver, "the driver refused XDP in driver mode; decapsulating in generic mode");
                (id, XdpMode::Generic)
            }
            Err(e) => {
                let refusal = link_xdp::Refusal::new(interface, XdpMode::Generic, link_xdp::query(interface).ok());
                return Err(anyhow::Error::new(e).context(refusal.to_string()).context(format!("attaching the decapsulation program to {interface}")));
            }
        },
    };
    let link = FdLink::try_from(program.take_link(id)?).context("XDP was attached without a bpf_link (kernel older than 5.9?)")?;
    decap.pin_maps(dir)?;
    // The pin keeps the link; this descriptor may close.
    drop(link.pin(link_path).with_context(|| format!("pinning the XDP link at {}", link_path.display()))?);
    Ok(mode)
}

/// Detaches the decapsulation program from `interface` and removes its pins (the link's pin
/// was the last reference: the kernel detaches the program when it goes), and
/// [`DECAP_PIN_ROOT`] if no other interface has one. Whether one was
/// attached; detaching where none is succeeds.
pub fn detach(interface: &str) -> anyhow::Result<bool> {
    let dir = pin_dir(interface);
    let link_path = dir.join(LINK_PIN);
    let attached = link_path.exists();
    if attached {
        let link = PinnedLink::from_pin(&link_path).with_context(|| format!("opening {}", link_path.display()))?;
        drop(link.unpin().with_context(|| format!("removing {}", link_path.display()))?);
    }
    for name in PINNED_MAPS {
        remove_if_present(&dir.join(name))?;
    }
    match std::fs::remove_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(anyhow::Error::new(e).context(format!("removing {}", dir.display()))),
        _ => {}
    }
    // The root goes with its last interface (it stays while another interface has one).
    let _ = std::fs::remove_dir(DECAP_PIN_ROOT);
    Ok(attached)
}

/// The counters of the decapsulation program attached to `interface`, or `None` if none is.
pub fn status(interface: &str) -> anyhow::Result<Option<DecapCounters>> {
    let path = pin_dir(interface).join(MAP_DECAP_STATS);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map = Map::PerCpuArray(data);
    DecapCounters::read(&PerCpuArray::try_from(&map)?).map(Some)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow::Error::new(e).context(format!("removing {}", path.display()))),
        _ => Ok(()),
    }
}

/// Refuses more than `capacity` entries of `what`.
fn check_capacity(what: &str, n: usize, capacity: u32) -> anyhow::Result<()> {
    if n > capacity as usize {
        bail!("{n} {what}: the decapsulation program takes at most {capacity}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_in_slot_order() {
        let mut c = DecapCounters::default();
        c.counts[DecapReason::NotServed as usize] = 3;
        assert_eq!(c.get(DecapReason::NotServed), 3);
        let named: Vec<_> = c.named().collect();
        assert_eq!(named[0], ("decapsulated", 0));
        assert_eq!(named[DecapReason::NotServed as usize], ("not_served", 3));
        assert_eq!(named.len(), DecapReason::ALL.len());
    }

    #[test]
    fn too_many_entries_are_refused_with_the_limit() {
        assert!(check_capacity("VIPs", 4096, 4096).is_ok());
        let e = check_capacity("VIPs", 4097, 4096).unwrap_err().to_string();
        assert_eq!(e, "4097 VIPs: the decapsulation program takes at most 4096");
    }
}
