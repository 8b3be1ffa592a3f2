//! The data path's home in bpffs, so that it outlives the agent: one directory per instance
//! (`/sys/fs/bpf/lb/<instance>`) with every map under `maps/` and one XDP link per interface
//! under `links/`. A pinned link keeps the program attached after the agent exits; the pinned
//! maps keep the connection table, the rings, the backends and the counters.
//!
//! An agent adopts pinned maps only when their shapes (key, value, entries, flags) are those
//! of its own program at its configured sizes, and `META` says the same layout version, ring
//! size and hash seed ([`Pins::inspect`]).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use aya::{
    maps::{Array, MapData, MapInfo},
    programs::links::PinnedLink,
};
use lb_common::maps::{LAYOUT_VERSION, MAP_META, META_HASH_SEED, META_LAYOUT, META_RING_SIZE, META_SLOTS, PINNED_MAPS};

use super::Sizing;

/// Where instances live in bpffs.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/lb";

/// Whether `path` is on a bpffs.
fn on_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: u32 = 0xcafe_4a11;
    let Ok(c_path) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())) else {
        return false;
    };
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the size statfs(2) writes.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), fs.as_mut_ptr()) };
    // SAFETY: statfs filled the buffer when it returned 0.
    rc == 0 && unsafe { fs.assume_init() }.f_type as u32 == BPF_FS_MAGIC
}

/// The bpffs directory of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pins {
    dir: PathBuf,
}

/// The shape of a map as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Entries.
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    pub flags: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-byte keys, {}-byte values, {} entries, flags {:#x}",
            self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// What an instance's directory holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No pinned data path: a new one is created.
    Nothing,
    /// A pinned data path this agent can adopt.
    Adoptable,
}

impl Pins {
    /// The directory of instance `instance` under [`BPFFS_ROOT`].
    pub fn of_instance(instance: &str) -> Self {
        Pins::at(Path::new(BPFFS_ROOT).join(instance))
    }

    /// An instance directory at `dir` (which must be on a bpffs).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Pins { dir: dir.into() }
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    /// Where the XDP link of `interface` is pinned.
    pub fn link(&self, interface: &str) -> PathBuf {
        self.dir.join("links").join(interface)
    }

    /// Creates the directories, on a bpffs (or fails saying so).
    pub fn create(&self) -> anyhow::Result<()> {
        let mut existing = self.dir.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        anyhow::ensure!(
            on_bpffs(existing),
            "{} is not on a bpffs in this mount namespace, so the data path could not outlive the agent. \
             Mount one (`mount -t bpf bpf /sys/fs/bpf`); inside `ip netns exec`, which mounts a private /sys, \
             run the agent with `nsenter --net=/var/run/netns/NAME` instead",
            existing.display()
        );
        for sub in ["maps", "links"] {
            let path = self.dir.join(sub);
            std::fs::create_dir_all(&path).with_context(|| {
                format!("creating {} (is a bpffs mounted? `mount -t bpf bpf /sys/fs/bpf`)", path.display())
            })?;
        }
        Ok(())
    }

    /// The interfaces with a pinned link.
    pub fn linked_interfaces(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("links")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
        names.sort();
        names
    }

    /// Whether anything is pinned for this instance.
    pub fn is_empty(&self) -> bool {
        self.linked_interfaces().is_empty() && PINNED_MAPS.iter().all(|name| !self.map(name).exists())
    }

    /// Checks a pinned data path against what this agent would create: every map of
    /// [`PINNED_MAPS`] with the shape `expected` gives it, and `META` with this build's layout
    /// version and `sizing`'s ring size and hash seed. A refusal says what differs and what
    /// to do; nothing is changed either way.
    pub fn inspect(&self, expected: &HashMap<&str, MapShape>, sizing: &Sizing) -> anyhow::Result<Found> {
        if self.is_empty() {
            return Ok(Found::Nothing);
        }
        let refuse = |what: String| {
            anyhow!(
                "the data path pinned at {} does not match this agent: {what}. Nothing was changed. \
                 Start the agent with the configuration and build that created it, or remove it with \
                 `lb teardown --config FILE` (this drops every tracked connection) and start again",
                self.dir.display()
            )
        };
        let mut differences = Vec::new();
        for name in PINNED_MAPS {
            let want = expected.get(name).ok_or_else(|| anyhow!("the program has no map {name}"))?;
            match MapInfo::from_pin(self.map(name)) {
                Ok(info) => {
                    let found = MapShape {
                        key_size: info.key_size(),
                        value_size: info.value_size(),
                        max_entries: info.max_entries(),
                        flags: info.map_flags(),
                    };
                    if found != *want {
                        differences.push(format!("map {name} has {found}, this agent wants {want}"));
                    }
                }
                Err(_) => differences.push(format!("map {name} is missing")),
            }
        }
        if !differences.is_empty() {
            return Err(refuse(differences.join("; ")));
        }
        let meta = self.meta()?;
        if meta[META_LAYOUT as usize] != LAYOUT_VERSION {
            return Err(refuse(format!(
                "its layout version is {} (0: its first agent stopped before finishing), this agent's is {LAYOUT_VERSION}",
                meta[META_LAYOUT as usize]
            )));
        }
        for (index, what, want) in [
            (META_RING_SIZE, "ring_size", sizing.ring_size),
            (META_HASH_SEED, "hash_seed", sizing.hash_seed),
        ] {
            if meta[index as usize] != u64::from(want) {
                return Err(refuse(format!("it was built with {what} {}, the configuration says {want}", meta[index as usize])));
            }
        }
        Ok(Found::Adoptable)
    }

    /// The pinned `META` entries.
    pub fn meta(&self) -> anyhow::Result<[u64; META_SLOTS as usize]> {
        let map = MapData::from_pin(self.map(MAP_META)).with_context(|| format!("opening {}", self.map(MAP_META).display()))?;
        let array: Array<MapData, u64> = Array::try_from(aya::maps::Map::Array(map))?;
        let mut out = [0u64; META_SLOTS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = array.get(&(i as u32), 0)?;
        }
        Ok(out)
    }

    /// Removes the data path: unpins every link (which detaches the program from its
    /// interface), every map and the directories. Returns the interfaces it was detached from.
    /// Safe to run when nothing is pinned.
    pub fn remove(&self) -> anyhow::Result<Vec<String>> {
        let interfaces = self.linked_interfaces();
        for interface in &interfaces {
            let path = self.link(interface);
            match PinnedLink::from_pin(&path) {
                // Dropping the last descriptor of an unpinned link detaches it.
                Ok(link) => drop(link.unpin().with_context(|| format!("unpinning {}", path.display()))?),
                Err(_) => std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?,
            }
        }
        for name in PINNED_MAPS {
            match std::fs::remove_file(self.map(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", self.map(name).display())),
            }
        }
        for sub in [self.dir.join("links"), self.dir.join("maps"), self.dir.clone()] {
            match std::fs::remove_dir(&sub) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {} (something else is pinned there?)", sub.display())),
            }
        }
        Ok(interfaces)
    }
}

