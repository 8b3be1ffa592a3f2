//! Failing inputs as pcap files (Ethernet link type), written and read with `pcap-file`.

use std::{fs::File, path::Path, time::Duration};

use anyhow::Context as _;
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

/// Writes `frames` to a new pcap file at `path` (its directory is created).
pub fn write(path: &Path, frames: &[&[u8]]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = PcapWriter::new(file).with_context(|| format!("writing {}", path.display()))?;
    for f in frames {
        w.write_packet(&PcapPacket::new(Duration::ZERO, f.len() as u32, f))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Every frame of the pcap file at `path`.
pub fn read(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = PcapReader::new(file).with_context(|| format!("{}: not a pcap file", path.display()))?;
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet() {
        frames.push(p.with_context(|| format!("reading {}", path.display()))?.data.into_owned());
    }
    Ok(frames)
}
