//! The `RING` map mapped into the agent's memory (the map is created `BPF_F_MMAPABLE`):
//! writing a 65,537-slot ring is a memory copy instead of one syscall per slot, and reading
//! one (`lb check` without an agent) a memory read.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::MapData;
use lb_common::limits::RING_IDS_PER_ELEMENT;

/// Bytes per element of the map (`u64`, four 16-bit backend ids).
const ELEMENT: usize = 8;

/// The ring map's memory, shared with the kernel.
pub struct RingMemory {
    base: NonNull<u8>,
    len: usize,
    /// Id positions: `RING_IDS_PER_ELEMENT` per element.
    ids: u32,
    writable: bool,
    _map: MapData,
}

// SAFETY: the mapping is owned by this value alone in this process (no other handle to it is
// made), so moving it to another thread moves the only accessor.
unsafe impl Send for RingMemory {}

impl RingMemory {
    /// Maps the `entries` 8-byte elements of `map` read-write.
    pub fn new(map: MapData, entries: u32) -> io::Result<Self> {
        Self::map(map, entries, true)
    }

    /// Maps the `entries` 8-byte elements of `map` read-only: [`RingMemory::set`] refuses.
    pub fn read_only(map: MapData, entries: u32) -> io::Result<Self> {
        Self::map(map, entries, false)
    }

    fn map(map: MapData, entries: u32, writable: bool) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = (entries as usize * ELEMENT).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd, of the size the kernel allows for an
        // array of `entries` elements; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ },
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(RingMemory { base, len, ids: entries * RING_IDS_PER_ELEMENT, writable, _map: map })
    }

    /// The id at position `index` (`lb_common::limits::ring_index`): the little-endian 16
    /// bits at byte `2 × index`, which is where the data path's `ring_id_in` finds them.
    fn slot(&self, index: u32) -> Option<*mut u16> {
        // SAFETY: index < ids keeps the offset inside the mapping (len >= ids × 2).
        (index < self.ids).then(|| unsafe { self.base.as_ptr().add(index as usize * 2).cast::<u16>() })
    }

    /// The backend id at `index`.
    pub fn get(&self, index: u32) -> Option<u32> {
        // SAFETY: an in-bounds, aligned u16 of the mapping; it is written only through such
        // mappings (the data path only reads the ring), with aligned 16-bit stores, so a read
        // sees the old id or the new one (a read-only mapping may race the agent's writes).
        self.slot(index).map(|p| u16::from_le(unsafe { p.read_volatile() }) as u32)
    }

    /// Writes the backend id at `index`; `false` if out of range, if `id` does not fit the
    /// 16 bits of a ring position, or if the memory is mapped read-only.
    pub fn set(&mut self, index: u32, id: u32) -> bool {
        let (true, Some(p), Ok(id)) = (self.writable, self.slot(index), u16::try_from(id)) else {
            return false;
        };
        // SAFETY: as in `get`; packets only read the other half of the VIP's rings while the
        // agent writes this one.
        unsafe { p.write_volatile(id.to_le()) };
        true
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which nothing else references.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
